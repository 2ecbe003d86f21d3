//! One error type for the whole runtime: every failure a user can cause
//! (bad file, bad shape, bad prompt) maps to a variant with a message that
//! names the problem, never a panic.

use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum HearthError {
    /// The message carries the OS error; it is not also the `source`, so an
    /// error chain (`{:#}`) says it once.
    #[error("I/O error on {path}: {error}")]
    Io {
        path: String,
        error: std::sync::Arc<std::io::Error>,
    },
    /// A model file that is malformed: truncated, bad magic, offsets out of bounds.
    #[error("invalid model file: {0}")]
    InvalidFile(String),
    /// A well-formed file whose content this runtime does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("shape mismatch for `{name}`: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("invalid config: {0}")]
    Config(String),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("chat template error: {0}")]
    Template(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    /// A request the engine cannot serve: empty prompt, prompt over the context, bad sampling option.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// One field of a [`crate::engine::Request`] is out of range.
    #[error("invalid request: {field}: {message}")]
    InvalidField { field: String, message: String },
    /// The prompt plus `max_tokens` do not fit in the model's context.
    #[error(
        "the prompt has {prompt} tokens and {completion} more are to be generated, \
         the model's context is {context} (the prompt must leave room for at least one)"
    )]
    ContextLength {
        prompt: usize,
        completion: usize,
        context: usize,
    },
    /// The engine holds as many sequences as it was configured to; retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// The engine is shutting down, or its thread has stopped.
    #[error("the engine has stopped: {0}")]
    Stopped(String),
    #[error("out of KV cache memory: {0}")]
    OutOfKvMemory(String),
}

pub type Result<T, E = HearthError> = std::result::Result<T, E>;

impl HearthError {
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        HearthError::Io {
            path: path.into(),
            error: std::sync::Arc::new(source),
        }
    }
}

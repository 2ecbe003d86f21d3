//! One error type for the whole runtime: every failure a user can cause
//! (bad file, bad shape, bad prompt) maps to a variant with a message that
//! names the problem, never a panic.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum HearthError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
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
    #[error("out of KV cache memory: {0}")]
    OutOfKvMemory(String),
}

pub type Result<T, E = HearthError> = std::result::Result<T, E>;

impl HearthError {
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        HearthError::Io {
            path: path.into(),
            source,
        }
    }
}

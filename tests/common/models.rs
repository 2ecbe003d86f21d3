//! Models for the tests: the tiny random GGUF model
//! ([`gguf_writer::tiny_model`]) parsed, on the GPU and in an [`Engine`];
//! and the real files the tests read (SmolLM2, llama.cpp's vocabularies),
//! which must be present: a silently skipped test proves nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth::engine::scheduler::SchedulerOptions;
use hearth::gpu::GpuContext;
use hearth::model::forward::{ForwardOptions, GpuModel};
use hearth::model::gguf::{GgufFile, GgufModel};
use hearth::text::vocab::TokenizerSpec;
use hearth::text::Tokenizer;
use hearth::{Engine, EngineConfig};

use super::gguf_writer;

/// The tiny random model of `arch` (untied output) as a parsed GGUF.
pub fn tiny_file(arch: &str) -> GgufModel {
    GgufModel::from_bytes(gguf_writer::tiny_model(arch, false).build()).unwrap()
}

/// The tokenizer in a parsed GGUF's metadata.
pub fn tokenizer_of(file: &GgufModel) -> Tokenizer {
    Tokenizer::from_spec(&TokenizerSpec::Gguf(file.vocab().unwrap())).unwrap()
}

/// The tokenizer of the GGUF file at `path` (header only).
pub fn gguf_file_tokenizer(path: &Path) -> Tokenizer {
    let vocab = GgufFile::open(path).unwrap().vocab().unwrap();
    Tokenizer::from_spec(&TokenizerSpec::Gguf(vocab)).unwrap()
}

/// `file` uploaded to `ctx`.
pub fn gpu_model(ctx: Arc<GpuContext>, file: &GgufModel, opts: ForwardOptions) -> GpuModel {
    GpuModel::load(ctx, file, opts, &mut |_| {}).unwrap()
}

/// The tiny model of `arch` on `ctx`.
pub fn tiny_gpu_model(arch: &str, ctx: Arc<GpuContext>, opts: ForwardOptions) -> GpuModel {
    gpu_model(ctx, &tiny_file(arch), opts)
}

/// An engine over `model` (no chat template), default configuration.
pub fn engine(model: GpuModel, tok: Tokenizer) -> Engine {
    Engine::new(model, tok, None, String::new(), EngineConfig::default())
}

/// An engine without prefix caching: each request computes its whole
/// prompt, a sequence alone from scratch (the oracle of batching, caching
/// and drafting tests).
pub fn uncached_engine(model: GpuModel, tok: Tokenizer) -> Engine {
    let cfg = EngineConfig {
        scheduler: SchedulerOptions {
            prefix_caching: false,
            ..Default::default()
        },
        ..Default::default()
    };
    Engine::new(model, tok, None, String::new(), cfg)
}

/// A file the tests need: fails (does not skip) when it is missing.
fn required(p: PathBuf, fetch: &str) -> PathBuf {
    assert!(p.exists(), "{} is missing: run {fetch}", p.display());
    p
}

/// The default model, SmolLM2-135M-Instruct Q4_1 (`hearth fetch`; scripts/test.sh fetches it).
pub fn smollm2_path() -> PathBuf {
    required(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "`bash scripts/hearth.sh fetch` (it fetches into models/; scripts/test.sh does)",
    )
}

/// The directory of llama.cpp's vocabulary test files.
pub fn vocab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/vocab")
}

/// One of llama.cpp's vocabulary test files (`ggml-vocab-*.gguf[.inp|.out]`).
pub fn vocab_fixture(name: &str) -> PathBuf {
    required(
        vocab_dir().join(name),
        "scripts/fetch-vocab-fixtures.sh (scripts/test.sh does)",
    )
}

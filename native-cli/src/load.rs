//! The model flags every command shares ([`ModelArgs`]) and loading the
//! model, and the draft model of speculative decoding, that they name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use hearth::gpu::GpuOptions;
use hearth::kv::KvDtype;
use hearth::model::forward::ForwardOptions;
use hearth::model::DType;
use hearth::{EngineOptions, Hearth};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{fetch, hub, spec_args};

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// GGUF file (of a split GGUF, any shard), Hugging Face model directory, or hub name (ORG/REPO,
    /// ORG/REPO:QUANT, ORG/REPO/FILE.gguf; downloaded into the Hugging Face
    /// cache if missing). Default: SmolLM2-135M-Instruct, fetched if missing.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Weight form on the GPU: f32, f16, q8_0, q4_0, q4_1, q4_k, q6_k. Float
    /// matrices take any; quantized ones only f32/f16 (dequantized). K-quants
    /// fall back to q4_1 / q8_0 for rows that are not whole 256-element
    /// super-blocks; default: as stored.
    #[arg(long)]
    pub dtype: Option<String>,
    /// KV cache memory budget, e.g. 256MiB, 1GiB.
    #[arg(long, default_value = "256MiB")]
    pub kv_memory: String,
    /// KV cache element type: f16, f32, q8 or q4. q8/q4 quantize per 32
    /// elements of a head (0.53x/0.31x the memory of f16, so that many more
    /// tokens per --kv-memory) and need a head_dim that is a multiple of 32.
    #[arg(long, default_value = "f16")]
    pub kv_dtype: String,
    /// Adapter index (see `hearth info`) or part of its name.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Don't use shader-f16 even if the adapter has it.
    #[arg(long)]
    pub no_f16: bool,
    /// Don't use subgroup operations even if the adapter has them.
    #[arg(long)]
    pub no_subgroups: bool,
    /// Random weights in the model's shapes and formats instead of its data,
    /// for benchmarking (the text is meaningless). The GGUF may be cut off
    /// after its tensor table, e.g. `head -c 8M model.gguf > skeleton.gguf`.
    #[arg(long)]
    pub dummy_weights: bool,
}

/// A size such as `256MiB`, `1GiB` or `4M` in bytes (binary multiples but
/// for `GB`/`MB`).
pub fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("invalid size `{s}` (e.g. 256MiB)"))?;
    Ok((v * mult as f64) as u64)
}

/// `--pooling`: mean, cls or last.
pub fn parse_pooling(s: &str) -> std::result::Result<hearth::PoolingType, String> {
    hearth::PoolingType::parse(s)
        .map_err(|_| format!("`{s}` is not a pooling type (mean, cls or last)"))
}

/// `--kv-memory` in bytes and `--kv-dtype`.
fn kv_options(args: &ModelArgs) -> Result<(u64, KvDtype)> {
    let dtype = KvDtype::parse(&args.kv_dtype).map_err(|e| anyhow::anyhow!("--kv-dtype: {e}"))?;
    Ok((parse_bytes(&args.kv_memory)?, dtype))
}

/// The tensor-upload progress bar of a model load (hidden when `quiet`).
fn load_bar(quiet: bool, message: String) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tensors groups ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// The local path of a `--model` value: a path as it is, a hub name after
/// its download, and without one the default model (fetched if missing).
pub fn model_path(value: Option<&Path>) -> Result<PathBuf> {
    match value {
        Some(v) => hub::resolve(v),
        None => fetch::ensure_default_model(),
    }
}

/// Loads the model for steps of up to `max_step_tokens` rows, `max_seqs`
/// sequence parts and `logit_rows` rows with logits (at least `max_seqs`).
pub fn load(
    args: &ModelArgs,
    max_step_tokens: u32,
    max_seqs: u32,
    logit_rows: u32,
    quiet: bool,
) -> Result<Hearth> {
    // Options first: a typo should not wait for a download or a load.
    let (kv_memory, kv_dtype) = kv_options(args)?;
    let dtype = args.dtype.as_deref().map(DType::parse).transpose()?;
    let path = model_path(args.model.as_deref())?;
    if !path.exists() {
        anyhow::bail!(
            "{}: No such file or directory (--model takes a GGUF file, a Hugging Face model \
             folder or a hub name ORG/REPO)",
            path.display()
        );
    }
    let opts = EngineOptions {
        gpu: GpuOptions {
            adapter: args.adapter.clone(),
            no_f16: args.no_f16,
            no_subgroups: args.no_subgroups,
            ..GpuOptions::from_env()
        },
        forward: ForwardOptions {
            dtype,
            kv_memory,
            kv_dtype,
            max_step_tokens,
            max_seqs,
            max_logit_rows: logit_rows,
            ..ForwardOptions::default()
        },
        dummy_weights: args.dummy_weights,
    };
    let bar = load_bar(quiet, format!("loading {}", path.display()));
    let h = Hearth::open(&path, &opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    })
    .with_context(|| format!("loading {}", path.display()))?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "hearth: {} on {}",
            h.source_desc,
            h.model.ctx.adapter_name()
        );
    }
    Ok(h)
}

/// Loads `--draft-model` (when given) beside `h`'s model, on its adapter,
/// with a KV cache of the same budget and element type, and checks that the
/// tokenizers match.
pub fn load_draft(
    h: &mut Hearth,
    args: &ModelArgs,
    spec: &spec_args::SpecArgs,
    quiet: bool,
) -> Result<()> {
    let Some(value) = &spec.draft_model else {
        return Ok(());
    };
    let path = &hub::resolve(value).context("--draft-model")?;
    let (kv_memory, _) = kv_options(args)?;
    let opts = h.draft_forward_options(kv_memory);
    let what = || format!("loading the draft model {}", path.display());
    let bar = load_bar(quiet, what());
    let loaded = hearth::model::load::open(path).with_context(what)?;
    let draft = Hearth::from_loaded(h.model.ctx.clone(), loaded, opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    })
    .with_context(what)?;
    bar.finish_and_clear();
    let desc = draft.source_desc.clone();
    h.attach_draft(draft)
        .with_context(|| format!("--draft-model {}", path.display()))?;
    if !quiet {
        eprintln!("hearth: draft model {desc}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_take_binary_and_decimal_suffixes() {
        assert_eq!(parse_bytes("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_bytes(" 1GiB ").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("4M").unwrap(), 4 << 20);
        assert_eq!(parse_bytes("2MB").unwrap(), 2_000_000);
        assert_eq!(parse_bytes("1.5K").unwrap(), 1536);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("lots").is_err());
    }
}

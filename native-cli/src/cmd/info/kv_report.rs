//! KV cache bytes per token (K and V of every layer, scales included) for
//! `hearth info --model`: what `--kv-dtype` buys in tokens per `--kv-memory`.

use std::path::Path;

use anyhow::Result;
use hearth::kv::{KvDtype, KvLayout, DEFAULT_BLOCK_SIZE};
use hearth::model::ModelConfig;

pub fn layout(c: &ModelConfig) -> Result<KvLayout> {
    // The loaders bound these far below u32; a value that still does not
    // fit is an error, never a silently truncated count.
    let fit = |what: &str, v: usize| {
        u32::try_from(v).map_err(|_| anyhow::anyhow!("{what} = {v} does not fit in 32 bits"))
    };
    Ok(KvLayout {
        n_layers: fit("num_layers", c.num_layers)?,
        n_kv_heads: fit("num_kv_heads", c.num_kv_heads)?,
        head_dim: fit("head_dim", c.head_dim)?,
        block_size: DEFAULT_BLOCK_SIZE,
    })
}

/// Bytes per token of `dtype` and their ratio to f16's; None where the
/// model's head_dim rules the dtype out.
pub fn per_token(l: &KvLayout, dtype: KvDtype) -> Option<(u64, f64)> {
    dtype.check_head_dim(l.head_dim).ok()?;
    let b = l.bytes_per_token(dtype);
    Some((b, b as f64 / l.bytes_per_token(KvDtype::F16) as f64))
}

/// `hearth info --model`: the model's KV shape and bytes per token of every dtype.
pub fn model_info(path: &Path, json: bool) -> Result<serde_json::Value> {
    let m = hearth::model::load::open(path)?;
    let l = layout(m.weights.config())?;
    let mut per = serde_json::Map::new();
    for d in KvDtype::ALL {
        per.insert(
            d.name().into(),
            per_token(&l, d).map_or(serde_json::Value::Null, |(b, _)| b.into()),
        );
    }
    let c = m.weights.config();
    let params = hearth::model::moe::parameter_counts(
        c,
        &hearth::model::load::expected_tensors(&*m.weights),
    );
    let experts = c.moe.as_ref().map(|e| {
        serde_json::json!({
            "count": e.num_experts,
            "per_token": e.experts_per_token,
            "expert_width": e.expert_intermediate_size,
            "shared_expert_width": e.shared_expert_intermediate_size,
            "sparse_layers": e.sparse_layers.iter().filter(|s| **s).count(),
            "renormalized": e.norm_topk_prob,
        })
    });
    let v = serde_json::json!({
        "path": path.display().to_string(),
        "source": m.source_desc,
        "parameters": params.total,
        "active_parameters": params.active,
        "experts": experts,
        "layers": l.n_layers,
        "kv_heads": l.n_kv_heads,
        "head_dim": l.head_dim,
        "kv_bytes_per_token": per,
    });
    if !json {
        println!("model: {}", m.source_desc);
        match &c.moe {
            Some(e) => println!(
                "    parameters: {} total, {} active per token ({} of {} experts in {} of {} layers{})",
                count(params.total),
                count(params.active),
                e.experts_per_token,
                e.num_experts,
                e.sparse_layers.iter().filter(|s| **s).count(),
                l.n_layers,
                e.shared_expert_intermediate_size
                    .map_or(String::new(), |w| format!(", a shared expert of width {w}"))
            ),
            None => println!("    parameters: {}", count(params.total)),
        }
        println!(
            "    KV cache per token (K+V, {} layers x {} KV heads x {}):",
            l.n_layers, l.n_kv_heads, l.head_dim
        );
        for d in KvDtype::ALL {
            match per_token(&l, d) {
                Some((b, r)) => println!(
                    "      --kv-dtype {:<3} {b:>8} bytes ({r:.3}x f16), {:.0} tokens per GiB",
                    d.name(),
                    (1u64 << 30) as f64 / b as f64
                ),
                None => println!(
                    "      --kv-dtype {:<3} unsupported (head_dim {} is not a multiple of 32)",
                    d.name(),
                    l.head_dim
                ),
            }
        }
    }
    Ok(v)
}

/// 135.0M, 30.53B: a parameter count as people say it.
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

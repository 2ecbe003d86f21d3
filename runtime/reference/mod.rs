//! The plain f32 CPU forward pass: the oracle that GPU results are compared
//! against. Deliberately simple (contiguous KV, no fusion) so that it is easy
//! to check by reading; speed only matters enough to keep tests short.

mod moe;
mod ops;

pub use moe::route_ref;

pub use ops::matmul_ref_rows;

use crate::gpu::kernels::rmsnorm::rmsnorm_ref;
use crate::gpu::kernels::rope::rope_ref;
use crate::kv::quant::round_rows;
use crate::kv::reference::causal_attention_ref;
use crate::kv::KvDtype;

use crate::model::config::names;
use crate::model::{ModelConfig, WeightSource};
use crate::{HearthError, Result};

struct Layer {
    attn_norm: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Vec<f32>,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
}

enum Ffn {
    Dense {
        gate: Vec<f32>,
        up: Vec<f32>,
        down: Vec<f32>,
    },
    Moe(Box<moe::MoeFfn>),
}

/// All weights dequantized to f32.
pub struct RefModel {
    pub config: ModelConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// `None` when tied to `embed`.
    lm_head: Option<Vec<f32>>,
    inv_freq: Vec<f32>,
}

/// Contiguous per-layer K/V history of one sequence, each head row rounded
/// the way the GPU cache of `dtype` stores it (default f32: exact).
#[derive(Clone)]
pub struct RefKvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    dtype: KvDtype,
}

impl Default for RefKvCache {
    fn default() -> Self {
        Self::new(KvDtype::F32)
    }
}

impl RefKvCache {
    pub fn new(dtype: KvDtype) -> Self {
        RefKvCache {
            k: Vec::new(),
            v: Vec::new(),
            dtype,
        }
    }

    pub fn len(&self, kv_dim: usize) -> usize {
        self.k.first().map_or(0, |k| k.len() / kv_dim.max(1))
    }

    pub fn is_empty(&self) -> bool {
        self.k.first().is_none_or(|k| k.is_empty())
    }
}

fn load(src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = src.tensor(name)?;
    t.expect_shape(shape)?;
    t.to_f32()
}

fn load_opt(src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
    if src.has_tensor(name) {
        load(src, name, shape).map(Some)
    } else {
        Ok(None)
    }
}

impl RefModel {
    pub fn load(src: &dyn WeightSource) -> Result<RefModel> {
        let c = src.config().clone();
        let (h, q, kv, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let n = |w: &str| names::blk(i, w);
            let bias = |w: &str, d: usize| -> Result<Option<Vec<f32>>> {
                if c.attention_bias {
                    load(src, &n(w), &[d]).map(Some)
                } else {
                    load_opt(src, &n(w), &[d])
                }
            };
            let norm = |w: &str| -> Result<Option<Vec<f32>>> {
                if c.qk_norm {
                    load(src, &n(w), &[c.head_dim]).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: load(src, &n("attn_norm.weight"), &[h])?,
                wq: load(src, &n("attn_q.weight"), &[q, h])?,
                wk: load(src, &n("attn_k.weight"), &[kv, h])?,
                wv: load(src, &n("attn_v.weight"), &[kv, h])?,
                bq: bias("attn_q.bias", q)?,
                bk: bias("attn_k.bias", kv)?,
                bv: bias("attn_v.bias", kv)?,
                q_norm: norm("attn_q_norm.weight")?,
                k_norm: norm("attn_k_norm.weight")?,
                wo: load(src, &n("attn_output.weight"), &[h, q])?,
                ffn_norm: load(src, &n("ffn_norm.weight"), &[h])?,
                ffn: match &c.moe {
                    Some(moe) if moe.is_sparse(i) => {
                        Ffn::Moe(Box::new(moe::MoeFfn::load(src, i, moe, h)?))
                    }
                    _ => Ffn::Dense {
                        gate: load(src, &n("ffn_gate.weight"), &[f, h])?,
                        up: load(src, &n("ffn_up.weight"), &[f, h])?,
                        down: load(src, &n("ffn_down.weight"), &[h, f])?,
                    },
                },
            });
        }
        let lm_head = if src.has_tensor(names::OUTPUT) {
            Some(load(src, names::OUTPUT, &[c.vocab_size, h])?)
        } else if c.tie_word_embeddings {
            None
        } else {
            return Err(HearthError::MissingTensor(names::OUTPUT.into()));
        };
        Ok(RefModel {
            embed: load(src, names::TOKEN_EMBD, &[c.vocab_size, h])?,
            norm: load(src, names::OUTPUT_NORM, &[h])?,
            lm_head,
            layers,
            inv_freq: c.rope_inv_freqs(),
            config: c,
        })
    }

    /// Runs `tokens` (appended after what `cache` holds) and returns the
    /// logits of every row, `[tokens.len(), vocab]`.
    pub fn forward(&self, tokens: &[u32], cache: &mut RefKvCache) -> Result<Vec<f32>> {
        let xn = self.hidden_states(tokens, cache)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(matmul_ref_rows(
            head,
            self.config.vocab_size,
            self.config.hidden_size,
            &xn,
        ))
    }

    /// [`RefModel::forward`] up to the final norm: every row's hidden state
    /// `[tokens.len(), hidden]`, what embeddings pool.
    pub fn hidden_states(&self, tokens: &[u32], cache: &mut RefKvCache) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let n = tokens.len();
        if cache.k.is_empty() {
            cache.k = vec![Vec::new(); c.num_layers];
            cache.v = vec![Vec::new(); c.num_layers];
        }
        let pos0 = cache.len(kvd);
        let mut x = Vec::with_capacity(n * h);
        for &t in tokens {
            let t = t as usize;
            if t >= c.vocab_size {
                return Err(HearthError::InvalidRequest(format!(
                    "token id {t} out of range (vocab {})",
                    c.vocab_size
                )));
            }
            x.extend_from_slice(&self.embed[t * h..(t + 1) * h]);
        }
        let positions: Vec<u32> = (pos0..pos0 + n).map(|p| p as u32).collect();
        for (li, l) in self.layers.iter().enumerate() {
            let xn = norm_rows(&x, &l.attn_norm, c.rms_norm_eps);
            let mut q = matmul_ref_rows(&l.wq, qd, h, &xn);
            let mut k = matmul_ref_rows(&l.wk, kvd, h, &xn);
            let mut v = matmul_ref_rows(&l.wv, kvd, h, &xn);
            for (y, b) in [(&mut q, &l.bq), (&mut k, &l.bk), (&mut v, &l.bv)] {
                if let Some(b) = b {
                    y.chunks_mut(b.len())
                        .for_each(|r| r.iter_mut().zip(b).for_each(|(a, b)| *a += b));
                }
            }
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                q = norm_rows(&q, qn, c.rms_norm_eps);
                k = norm_rows(&k, kn, c.rms_norm_eps);
            }
            let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
            rope_ref(
                &mut q,
                &positions,
                &self.inv_freq,
                nh,
                hd,
                qd,
                c.rope_layout,
            );
            rope_ref(
                &mut k,
                &positions,
                &self.inv_freq,
                nkv,
                hd,
                kvd,
                c.rope_layout,
            );
            let (kr, vr) = round_rows(cache.dtype, &k, &v, hd);
            cache.k[li].extend(kr);
            cache.v[li].extend(vr);
            // Row t sees the cache up to its own position (causal).
            let attn: Vec<f32> = q
                .chunks(qd)
                .zip(&positions)
                .flat_map(|(qt, &p)| {
                    causal_attention_ref(
                        qt,
                        &cache.k[li],
                        &cache.v[li],
                        nh,
                        nkv,
                        hd,
                        p as usize + 1,
                    )
                })
                .collect();
            let o = matmul_ref_rows(&l.wo, h, qd, &attn);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xn = norm_rows(&x, &l.ffn_norm, c.rms_norm_eps);
            let d = match &l.ffn {
                Ffn::Dense { gate, up, down } => {
                    let g = matmul_ref_rows(gate, f, h, &xn);
                    let u = matmul_ref_rows(up, f, h, &xn);
                    matmul_ref_rows(down, h, f, &silu_mul(&g, &u))
                }
                Ffn::Moe(m) => m.forward(&xn),
            };
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        Ok(norm_rows(&x, &self.norm, c.rms_norm_eps))
    }

    /// Greedy generation: the ids the GPU engine must reproduce.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        max_new: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>> {
        let vocab = self.config.vocab_size;
        let mut cache = RefKvCache::default();
        let mut logits = self.forward(prompt, &mut cache)?;
        let mut out = Vec::new();
        for _ in 0..max_new {
            let last = &logits[logits.len() - vocab..];
            let next = argmax(last);
            out.push(next);
            if stop.contains(&next) {
                break;
            }
            logits = self.forward(&[next], &mut cache)?;
        }
        Ok(out)
    }
}

/// SwiGLU's `silu(g) * u`, elementwise.
fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.iter()
        .zip(u)
        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
        .collect()
}

/// RMSNorm of each `w.len()`-wide row of `x`.
fn norm_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(w.len())
        .flat_map(|r| rmsnorm_ref(r, w, eps))
        .collect()
}

/// Index of the largest value (lowest index on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

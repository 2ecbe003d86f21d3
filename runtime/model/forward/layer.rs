//! One transformer layer on the GPU: its weights, its kernels wired to the
//! shared activation buffers, and the order it records them in.

use super::activations::Activations;
use super::experts::ExpertFfn;
use super::load::f32_buffer;
use super::record::OpVisitor;
use crate::gpu::kernels::attention::{Attention, AttnScratch, AttnShape};
use crate::gpu::kernels::batch::BatchBuffers;
use crate::gpu::kernels::elementwise::{Elementwise, Op};
use crate::gpu::kernels::kv_write::KvWrite;
use crate::gpu::kernels::rmsnorm::RmsNorm;
use crate::gpu::kernels::rope::Rope;
use crate::gpu::GpuContext;
use crate::kv::KvBuffers;
use crate::model::config::names;
use crate::model::projection::{Projection, ProjectionIo};
use crate::model::{ModelConfig, WeightSource};
use crate::types::{DType, HostTensor};
use crate::{HearthError, Result};

/// What every layer's kernels are bound to besides its own weights.
pub(super) struct LayerWiring<'a> {
    pub ctx: &'a GpuContext,
    pub config: &'a ModelConfig,
    /// `ForwardOptions::dtype`.
    pub dtype: Option<DType>,
    pub batch: &'a BatchBuffers,
    /// Step uniforms of the matmuls' generated-token rows and prompt rows.
    pub mm_steps: &'a [wgpu::Buffer; 2],
    pub act: &'a Activations,
    pub kv: &'a KvBuffers,
    pub attn_shape: &'a AttnShape,
    pub attn_scratch: &'a AttnScratch,
    pub inv_freqs: &'a [f32],
}

/// A layer's f32 vectors. Only bind groups read them after loading; the
/// layer holds them so they live as long as it does.
struct LayerVectors {
    attn_norm: wgpu::Buffer,
    ffn_norm: wgpu::Buffer,
    /// Q, K and V biases end to end, as the fused QKV projection's output.
    qkv_bias: Option<wgpu::Buffer>,
    /// Per-head RMSNorm weights of Q and K (Qwen3).
    qk_norm: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

pub(super) struct Layer {
    _vectors: LayerVectors,
    attn_norm: RmsNorm,
    qkv: Projection,
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    rope: Rope,
    kv_write: KvWrite,
    attn: Attention,
    wo: Projection,
    ffn_norm: RmsNorm,
    ffn: Ffn,
}

/// A layer's feed-forward block.
enum Ffn {
    Dense {
        gate_up: Projection,
        /// None when the down projection applies SwiGLU itself (no `actv` buffer).
        silu: Option<Elementwise>,
        down: Projection,
    },
    /// A mixture-of-experts layer.
    Experts(Box<ExpertFfn>),
}

impl LayerVectors {
    fn load(w: &LayerWiring, src: &dyn WeightSource, i: usize) -> Result<Self> {
        let c = w.config;
        let n = |name: &str| names::blk(i, name);
        let f32s = |name: &str| src.tensor(&n(name))?.to_f32();
        let attn_norm = f32_buffer(w.ctx, src, &n("attn_norm.weight"), c.hidden_size)?;
        let ffn_norm = f32_buffer(w.ctx, src, &n("ffn_norm.weight"), c.hidden_size)?;
        let qkv_bias = if src.has_tensor(&n("attn_q.bias")) {
            let qkv_w = c.q_dim() + 2 * c.kv_dim();
            let mut b = f32s("attn_q.bias")?;
            b.extend(f32s("attn_k.bias")?);
            b.extend(f32s("attn_v.bias")?);
            if b.len() != qkv_w {
                return Err(HearthError::ShapeMismatch {
                    name: n("attn_qkv.bias"),
                    expected: vec![qkv_w],
                    found: vec![b.len()],
                });
            }
            Some(w.ctx.buffer_from("qkv.bias", &b))
        } else {
            None
        };
        let qk_norm = if c.qk_norm {
            let q = f32_buffer(w.ctx, src, &n("attn_q_norm.weight"), c.head_dim)?;
            let k = f32_buffer(w.ctx, src, &n("attn_k_norm.weight"), c.head_dim)?;
            Some((q, k))
        } else {
            None
        };
        Ok(LayerVectors {
            attn_norm,
            ffn_norm,
            qkv_bias,
            qk_norm,
        })
    }
}

impl Layer {
    /// Uploads layer `i` of `src` and builds its kernels.
    pub fn load(w: &LayerWiring, src: &dyn WeightSource, i: usize) -> Result<Layer> {
        let (ctx, c, act) = (w.ctx, w.config, w.act);
        let step = &w.batch.step;
        let h = c.hidden_size as u32;
        let qkv_w = (c.q_dim() + 2 * c.kv_dim()) as u32;
        let t = |name: &str| src.tensor(&names::blk(i, name));
        let vectors = LayerVectors::load(w, src, i)?;
        let proj = |name: &str, parts: Vec<HostTensor>, io: ProjectionIo| {
            Projection::new(ctx, &names::blk(i, name), parts, w.dtype, &io)
        };
        let io = |x, y| ProjectionIo {
            matvec_step: &w.mm_steps[0],
            tiled_step: &w.mm_steps[1],
            x,
            y,
            bias: None,
            accumulate: false,
            silu_x: false,
        };
        let qkv = proj(
            "attn_qkv",
            vec![
                t("attn_q.weight")?,
                t("attn_k.weight")?,
                t("attn_v.weight")?,
            ],
            ProjectionIo {
                bias: vectors.qkv_bias.as_ref(),
                ..io(&act.xn, &act.qkv)
            },
        )?;
        let wo = proj(
            "attn_output",
            vec![t("attn_output.weight")?],
            ProjectionIo {
                accumulate: true,
                ..io(&act.attn_out, &act.x)
            },
        )?;
        let sparse = c.moe.as_ref().is_some_and(|m| m.is_sparse(i));
        let ffn = if sparse {
            Ffn::Experts(Box::new(ExpertFfn::load(w, src, i)?))
        } else {
            let gate_up = proj(
                "ffn_gate_up",
                vec![t("ffn_gate.weight")?, t("ffn_up.weight")?],
                io(&act.xn, &act.gate_up),
            )?;
            let down = proj(
                "ffn_down",
                vec![t("ffn_down.weight")?],
                ProjectionIo {
                    accumulate: true,
                    silu_x: act.actv.is_none(),
                    ..io(act.actv.as_ref().unwrap_or(&act.gate_up), &act.x)
                },
            )?;
            Ffn::Dense {
                gate_up,
                silu: act.actv.as_ref().map(|a| {
                    Elementwise::new(
                        ctx,
                        Op::SiluMul,
                        step,
                        a,
                        &act.gate_up,
                        c.intermediate_size as u32,
                    )
                }),
                down,
            }
        };
        let (hd, nh, nkv) = (c.head_dim as u32, c.num_heads as u32, c.num_kv_heads as u32);
        let eps = c.rms_norm_eps;
        let head_norm = |weight, first_head, n_heads| {
            RmsNorm::heads(
                ctx, step, &act.qkv, weight, hd, first_head, n_heads, qkv_w, eps,
            )
        };
        let (k_cache, v_cache) = (&w.kv.k[i], &w.kv.v[i]);
        Ok(Layer {
            attn_norm: RmsNorm::new(ctx, step, &act.x, &vectors.attn_norm, &act.xn, h, eps),
            qkv,
            qk_norm: vectors
                .qk_norm
                .as_ref()
                .map(|(q, k)| (head_norm(q, 0, nh), head_norm(k, nh, nkv))),
            rope: Rope::new(
                ctx,
                step,
                &w.batch.positions,
                &act.qkv,
                w.inv_freqs,
                nh,
                nkv,
                hd,
                qkv_w,
                c.rope_layout,
            ),
            kv_write: KvWrite::new(ctx, w.attn_shape, w.batch, &act.qkv, k_cache, v_cache)?,
            attn: Attention::new(
                ctx,
                w.attn_shape,
                w.batch,
                Some([&w.mm_steps[0], &w.mm_steps[1]]),
                w.attn_scratch,
                &act.qkv,
                k_cache,
                v_cache,
                &act.attn_out,
            )?,
            wo,
            ffn_norm: RmsNorm::new(ctx, step, &act.x, &vectors.ffn_norm, &act.xn, h, eps),
            ffn,
            _vectors: vectors,
        })
    }

    /// Bytes of weights one generated token reads in this layer (in a
    /// sparse layer, only its `k` experts').
    pub fn weight_bytes(&self) -> u64 {
        let attn = self.qkv.gpu_bytes() + self.wo.gpu_bytes();
        attn + match &self.ffn {
            Ffn::Dense { gate_up, down, .. } => gate_up.gpu_bytes() + down.gpu_bytes(),
            Ffn::Experts(x) => x.active_weight_bytes(),
        }
    }

    /// Bytes of all this layer's weights on the GPU.
    pub fn total_weight_bytes(&self) -> u64 {
        match &self.ffn {
            Ffn::Experts(x) => self.qkv.gpu_bytes() + self.wo.gpu_bytes() + x.total_weight_bytes(),
            Ffn::Dense { .. } => self.weight_bytes(),
        }
    }

    /// Calls `f(kernel kind, record)` for every dispatch of the layer, in order.
    /// `n`: rows; `g`: leading rows that are generated tokens; `max_kv`: their longest context.
    pub fn for_each_op(&self, n: u32, g: u32, max_kv: u32, f: &mut OpVisitor) {
        f("rmsnorm", &|p| self.attn_norm.record(p, n));
        f("matmul.qkv", &|p| self.qkv.record(p, g, n));
        if let Some((qn, kn)) = &self.qk_norm {
            f("rmsnorm.qk", &|p| {
                qn.record(p, n);
                kn.record(p, n)
            });
        }
        f("rope", &|p| self.rope.record(p, n));
        f("kv_write", &|p| self.kv_write.record(p, n));
        f("attention", &|p| self.attn.record_rows(p, g, n, max_kv));
        f("matmul.o", &|p| self.wo.record(p, g, n));
        f("rmsnorm", &|p| self.ffn_norm.record(p, n));
        match &self.ffn {
            Ffn::Dense {
                gate_up,
                silu,
                down,
            } => {
                f("matmul.gate_up", &|p| gate_up.record(p, g, n));
                if let Some(silu) = silu {
                    f("silu_mul", &|p| silu.record(p, n));
                }
                f("matmul.down", &|p| down.record(p, g, n));
            }
            Ffn::Experts(x) => x.for_each_op(n, g, f),
        }
    }
}

//! `GpuModel::load`: sizes the step buffers, streams the weights to the GPU
//! and builds every kernel's bind group once, then warms the pipelines up.

use std::sync::Arc;

use super::activations::Activations;
use super::layer::{Layer, LayerWiring};
use super::{ForwardOptions, GpuModel, LoadProgress, SeqStep};
use crate::gpu::kernels::attention::{AttnScratch, AttnShape};
use crate::gpu::kernels::batch::BatchBuffers;
use crate::gpu::kernels::embed::Embed;
use crate::gpu::kernels::logit_mask::LogitMask;
use crate::gpu::kernels::matmul::{MatMul, MatMulOpts};
use crate::gpu::kernels::pool::PoolRows;
use crate::gpu::kernels::rmsnorm::RmsNorm;
use crate::gpu::kernels::topk::{Penalties, TopK};
use crate::gpu::kernels::StepInfo;
use crate::gpu::weights::GpuMatrix;
use crate::gpu::GpuContext;
use crate::kv::{KvBuffers, KvLayout, KvPool};
use crate::model::config::names;
use crate::model::projection::stored_form;
use crate::model::WeightSource;
use crate::types::{DType, MAX_CANDIDATES};
use crate::{HearthError, Result};

/// A vector of `len` floats, uploaded as f32.
pub(super) fn f32_buffer(
    ctx: &GpuContext,
    src: &dyn WeightSource,
    name: &str,
    len: usize,
) -> Result<wgpu::Buffer> {
    let t = src.tensor(name)?;
    t.expect_shape(&[len])?;
    Ok(ctx.buffer_from(name, &t.to_f32()?))
}

/// One matrix in the form `--dtype` gives it (see [`stored_form`]).
fn upload_one(
    ctx: &GpuContext,
    src: &dyn WeightSource,
    name: &str,
    dtype: Option<DType>,
) -> Result<GpuMatrix> {
    let t = src.tensor(name)?;
    let form = stored_form(t.dtype, dtype);
    GpuMatrix::upload(ctx, name, &[t], Some(form))
}

impl GpuModel {
    /// Streams the weights of `src` to the GPU tensor by tensor.
    pub fn load(
        ctx: Arc<GpuContext>,
        src: &dyn WeightSource,
        opts: ForwardOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<GpuModel> {
        let c = src.config().clone();
        c.validate()?;
        crate::model::load::check_shapes(src)?;
        let h = c.hidden_size;
        let t_max = opts.max_step_tokens.max(1);
        let seqs_max = opts.max_seqs.max(1);
        // Extra logit rows are a wish (capped by what one binding holds);
        // one per sequence is a must.
        let row_bytes = c.vocab_size as u64 * 4;
        let fit = (ctx.caps.max_binding / row_bytes).min(u32::MAX as u64) as u32;
        if seqs_max > fit {
            return Err(HearthError::Config(format!(
                "{seqs_max} sequences need {seqs_max} logit rows of {} tokens, one storage binding ({} bytes) holds {fit}; lower max_seqs",
                c.vocab_size, ctx.caps.max_binding
            )));
        }
        let rows_max = opts.max_logit_rows.clamp(seqs_max, fit);
        let total = c.num_layers + 2;
        let mut done = 0;
        progress(LoadProgress { done, total });

        let pool = KvPool::new(
            KvLayout {
                n_layers: c.num_layers as u32,
                n_kv_heads: c.num_kv_heads as u32,
                head_dim: c.head_dim as u32,
                block_size: opts.block_size,
            },
            opts.kv_dtype,
            opts.kv_memory,
            ctx.caps.max_binding,
        )?;
        let kv = KvBuffers::new(&ctx, &pool)?;
        // Each part of a step carries its sequence's whole block table, and
        // prefix-cached blocks appear in many tables at once.
        let per_seq = pool
            .num_blocks()
            .min(c.max_position_embeddings.div_ceil(opts.block_size as usize) as u32);
        let max_blocks = seqs_max.saturating_mul(per_seq).max(1);
        let batch = BatchBuffers::new(&ctx, t_max, seqs_max, max_blocks, opts.block_size);
        let mm_steps = [
            ctx.uniform("matvec_step", &StepInfo::default()),
            ctx.uniform("tiled_step", &StepInfo::default()),
        ];
        let act = Activations::new(&ctx, &c, t_max, rows_max, seqs_max)?;
        let logit_step = ctx.uniform("logit_step", &StepInfo::default());
        let attn_shape = AttnShape {
            n_heads: c.num_heads as u32,
            n_kv_heads: c.num_kv_heads as u32,
            head_dim: c.head_dim as u32,
            block_size: opts.block_size,
            kv_dtype: opts.kv_dtype,
            max_tokens: t_max,
        };
        let attn_scratch = AttnScratch::new(&ctx, &attn_shape);

        let embed_w = upload_one(&ctx, src, names::TOKEN_EMBD, opts.dtype)?;
        let embed = Embed::new(&ctx, &batch.step, &embed_w, &batch.tokens, &act.x);
        done += 1;
        progress(LoadProgress { done, total });

        let wiring = LayerWiring {
            ctx: &ctx,
            config: &c,
            dtype: opts.dtype,
            batch: &batch,
            mm_steps: &mm_steps,
            act: &act,
            kv: &kv,
            attn_shape: &attn_shape,
            attn_scratch: &attn_scratch,
            inv_freqs: &c.rope_inv_freqs(),
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            layers.push(Layer::load(&wiring, src, i)?);
            done += 1;
            progress(LoadProgress { done, total });
        }

        let final_norm_w = f32_buffer(&ctx, src, names::OUTPUT_NORM, h)?;
        let final_norm = RmsNorm::new(
            &ctx,
            &logit_step,
            &act.hid,
            &final_norm_w,
            &act.hid_norm,
            h as u32,
            c.rms_norm_eps,
        );
        let pool_norm_step = ctx.uniform("pool_norm_step", &StepInfo::default());
        let pool_norm = RmsNorm::new(
            &ctx,
            &pool_norm_step,
            &act.x,
            &final_norm_w,
            &act.xn,
            h as u32,
            c.rms_norm_eps,
        );
        let pool_rows = PoolRows::new(&ctx, &act.xn, &act.pooled, h as u32, seqs_max);
        let pool_staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pooled.staging"),
            size: seqs_max as u64 * h as u64 * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let lm_head_w = if src.has_tensor(names::OUTPUT) {
            Some(upload_one(&ctx, src, names::OUTPUT, opts.dtype)?)
        } else {
            None
        };
        let head = lm_head_w.as_ref().unwrap_or(&embed_w);
        let weight_bytes = layers.iter().map(Layer::weight_bytes).sum::<u64>() + head.gpu_bytes();
        let total_weight_bytes = layers.iter().map(Layer::total_weight_bytes).sum::<u64>()
            + head.gpu_bytes()
            + lm_head_w.as_ref().map_or(0, |_| embed_w.gpu_bytes());
        let lm_head = MatMul::new_split(
            &ctx,
            &logit_step,
            &logit_step,
            head,
            &act.hid_norm,
            &act.logits,
            MatMulOpts::default(),
        );
        let vocab = c.vocab_size as u32;
        let penalties = Penalties::new(&ctx, &act.logits, rows_max, vocab);
        let logit_mask = LogitMask::new(&ctx, &act.logits, rows_max, vocab);
        let topk = TopK::new(&ctx, &act.logits, rows_max, vocab, MAX_CANDIDATES as u32);
        let topk_out = topk.output().clone();
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("topk.staging"),
            size: topk.output_bytes(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        done += 1;
        progress(LoadProgress { done, total });
        let mut model = GpuModel {
            config: c,
            kv_shape: pool,
            opts: ForwardOptions {
                max_logit_rows: rows_max,
                ..opts
            },
            batch,
            _kv: kv,
            _embed_w: embed_w,
            _lm_head_w: lm_head_w,
            _final_norm_w: final_norm_w,
            act,
            embed,
            layers,
            final_norm,
            pool_norm,
            pool_norm_step,
            pool: pool_rows,
            pool_staging,
            lm_head,
            penalties,
            logit_mask,
            topk,
            logit_step,
            mm_steps,
            topk_out,
            staging,
            weight_bytes,
            total_weight_bytes,
            profiler: Default::default(),
            ctx,
        };
        model.warm_up()?;
        Ok(model)
    }

    /// Runs a prefill-sized and a decode-sized step on scratch blocks, so that
    /// drivers which compile pipelines on first use (llvmpipe) do it during
    /// loading instead of inside the first request's timing. The blocks are
    /// returned; their contents are never read (attention reads only
    /// positions a sequence has written).
    fn warm_up(&mut self) -> Result<()> {
        let n = (crate::gpu::kernels::matmul::MATVEC_MAX_TOKENS + 1).min(self.opts.max_step_tokens);
        let mut pool = self.new_kv_pool();
        let blocks = pool.allocate(n.div_ceil(pool.block_size()) as usize)?;
        let tokens = vec![0u32; n as usize];
        let mut result = Ok(());
        // A prompt-sized step (tiled kernels), then a generated token (matrix-vector kernels).
        for len in [n, 1] {
            let part = SeqStep {
                generated: len == 1,
                ..SeqStep::new(&tokens[..len as usize], 0, &blocks)
            };
            if let Err(e) = self.submit_step(&[part], 1, None) {
                result = Err(e);
                break;
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        if result.is_ok() {
            result = self.ctx.wait().and_then(|_| self.ctx.check_errors());
        }
        result
    }
}

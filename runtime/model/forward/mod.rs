//! The GPU forward pass: weights uploaded once, activation buffers sized once
//! for the largest step, every kernel's bind group built once. A step writes
//! its batch metadata, records the whole pass into one command encoder, copies
//! the top-K candidates into a mappable buffer in the same submission, and
//! reads back only those few bytes.
//!
//! [`GpuModel`] and its queries are here; `load` builds it (per layer in
//! `layer`, buffers in `activations`), `plan` works a step out from its
//! [`SeqStep`]s without the GPU, `record` writes and records it, and
//! `profile` times its kernels.

mod activations;
mod experts;
mod layer;
mod load;
mod options;
mod plan;
mod profile;
mod record;

use std::sync::Arc;

use activations::Activations;
use layer::Layer;
pub use options::{ForwardOptions, LoadProgress};
pub use plan::SeqStep;
pub use profile::{KernelProfile, ProfileSteps};
use profile::{Profiler, LOGITS_WALL};
pub use record::LateMasks;
use record::StepSubmitted;

/// What [`GpuModel::step_pooled`] returns.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// The top-K candidates of every logit row, as [`GpuModel::step`] returns them.
    pub candidates: Vec<Candidates>,
    /// One summed row per part with `pool_rows`, in part order.
    pub pooled: Vec<Vec<f32>>,
}

use crate::gpu::kernels::batch::BatchBuffers;
use crate::gpu::kernels::embed::Embed;
use crate::gpu::kernels::logit_mask::{LogitMask, MASKED_LOGIT};
use crate::gpu::kernels::matmul::MatMul;
use crate::gpu::kernels::pool::PoolRows;
use crate::gpu::kernels::rmsnorm::RmsNorm;
use crate::gpu::kernels::topk::{Penalties, TopK};
use crate::gpu::weights::GpuMatrix;
use crate::gpu::GpuContext;
use crate::kv::{KvBuffers, KvPool};
use crate::model::ModelConfig;
use crate::types::{Candidates, MAX_CANDIDATES};
use crate::Result;

pub struct GpuModel {
    pub ctx: Arc<GpuContext>,
    pub config: ModelConfig,
    /// The KV buffers' shape: layout, dtype and block count. Allocation,
    /// reference counts and the prefix cache live in the scheduler's pool
    /// ([`GpuModel::new_kv_pool`]), not here.
    kv_shape: KvPool,
    opts: ForwardOptions,
    batch: BatchBuffers,
    // Read only through bind groups; held so they live as long as the model.
    _kv: KvBuffers,
    _embed_w: GpuMatrix,
    _lm_head_w: Option<GpuMatrix>,
    _final_norm_w: wgpu::Buffer,
    act: Activations,
    embed: Embed,
    layers: Vec<Layer>,
    final_norm: RmsNorm,
    /// Embeddings: the final norm over a step's rows (into `act.xn`), with
    /// its own `StepInfo`, and the pooling of parts' rows.
    pool_norm: RmsNorm,
    pool_norm_step: wgpu::Buffer,
    pool: PoolRows,
    pool_staging: wgpu::Buffer,
    lm_head: MatMul,
    penalties: Penalties,
    /// Constrained decoding's allowed-token masks (buffer sized at load).
    logit_mask: LogitMask,
    topk: TopK,
    logit_step: wgpu::Buffer,
    /// `StepInfo` of the matmuls' generated-token rows and prompt rows.
    mm_steps: [wgpu::Buffer; 2],
    topk_out: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// Bytes of weights read per decode token (for bandwidth figures): in
    /// a mixture-of-experts model, only the experts a token is routed to.
    pub weight_bytes: u64,
    /// Bytes of all the weights on the GPU.
    pub total_weight_bytes: u64,
    profiler: Profiler,
}

impl GpuModel {
    /// A block manager for this model's KV buffers: every block free, an
    /// empty prefix cache. Whoever schedules sequences on the model owns it.
    pub fn new_kv_pool(&self) -> KvPool {
        self.kv_shape.empty_like()
    }

    pub fn kv_dtype(&self) -> crate::kv::KvDtype {
        self.kv_shape.dtype()
    }

    pub fn kv_layout(&self) -> &crate::kv::KvLayout {
        self.kv_shape.layout()
    }

    pub fn kv_blocks(&self) -> u32 {
        self.kv_shape.num_blocks()
    }

    pub fn kv_block_size(&self) -> u32 {
        self.kv_shape.block_size()
    }

    pub fn max_step_tokens(&self) -> u32 {
        self.opts.max_step_tokens
    }

    pub fn max_seqs(&self) -> u32 {
        self.opts.max_seqs
    }

    /// Most rows of one step that can get logits.
    pub fn logit_capacity(&self) -> u32 {
        // `load` stores the clamped count (at least max_seqs, at least 1).
        self.opts.max_logit_rows
    }

    /// Runs one step and returns the top-`k` candidates of every logit row (see
    /// [`SeqStep::logit_rows`]), in `seqs` order and row order within a part.
    /// A row with a mask ([`SeqStep::logit_masks`]) gets only allowed tokens,
    /// so fewer than `k` when its mask allows fewer.
    pub async fn step(&mut self, seqs: &[SeqStep<'_>], k: usize) -> Result<Vec<Candidates>> {
        self.step_with(seqs, k, None).await
    }

    /// [`Self::step`] with the logit masks worked out by `late` while the GPU
    /// runs the layers (structured output computes them on the CPU): one
    /// entry per part of `seqs`, whose own `logit_masks` are then ignored.
    pub async fn step_with(
        &mut self,
        seqs: &[SeqStep<'_>],
        k: usize,
        late: Option<LateMasks<'_>>,
    ) -> Result<Vec<Candidates>> {
        Ok(self.step_pooled(seqs, k, late).await?.candidates)
    }

    /// [`Self::step_with`] that also returns, for every part with
    /// [`SeqStep::pool_rows`] (in `seqs` order), the sum of those rows'
    /// hidden states after the final norm (`hidden_size` floats): what an
    /// embedding pools, summed so that chunks of one prompt add up.
    pub async fn step_pooled(
        &mut self,
        seqs: &[SeqStep<'_>],
        k: usize,
        late: Option<LateMasks<'_>>,
    ) -> Result<StepOutput> {
        let k = k.clamp(1, MAX_CANDIDATES);
        let sub = self.submit_step(seqs, k, late)?;
        let pooled = if sub.n_pooled > 0 {
            let h = self.config.hidden_size;
            let bytes = (sub.n_pooled as usize * h * 4) as u64;
            let data = self.ctx.map_read(&self.pool_staging, bytes).await?;
            self.ctx.check_errors()?;
            let floats: Vec<f32> = bytemuck::pod_collect_to_vec(&data);
            floats.chunks_exact(h).map(<[f32]>::to_vec).collect()
        } else {
            Vec::new()
        };
        let candidates = self.read_candidates(sub, k).await?;
        Ok(StepOutput { candidates, pooled })
    }

    async fn read_candidates(&mut self, sub: StepSubmitted, k: usize) -> Result<Vec<Candidates>> {
        let StepSubmitted {
            n_rows,
            t_logits,
            timed,
            ..
        } = sub;
        if n_rows == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.topk.output_bytes_for(n_rows, k as u32);
        let data = self.ctx.map_read(&self.staging, bytes).await?;
        self.ctx.check_errors()?;
        if let Some(timer) = self.profiler.timer.as_mut() {
            let spans = timer.read(&self.ctx).await?;
            self.profiler.add(spans);
        } else if timed {
            self.profiler
                .add([(LOGITS_WALL, t_logits.elapsed().as_secs_f64())]);
        }
        let mut out = self.topk.parse_output(&data, n_rows, k as u32);
        // A masked row has only as many candidates as its mask allows tokens.
        for &r in self.logit_mask.rows() {
            if let Some(c) = out.get_mut(r as usize) {
                let n = c.logits.iter().take_while(|&&l| l != MASKED_LOGIT).count();
                c.ids.truncate(n);
                c.logits.truncate(n);
            }
        }
        Ok(out)
    }

    /// Full logits of the rows of the last step (tests and debugging; a readback of vocab floats per row).
    pub async fn last_logits(&self, n_rows: usize) -> Result<Vec<f32>> {
        let bytes = self
            .ctx
            .read_bytes(
                &self.act.logits,
                0,
                (n_rows * self.config.vocab_size * 4) as u64,
            )
            .await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

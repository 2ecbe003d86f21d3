//! The GPU forward pass: weights uploaded once, activation buffers sized once
//! for the largest step, every kernel's bind group built once. A step writes
//! its batch metadata, records the whole pass into one command encoder, copies
//! the top-K candidates into a mappable buffer in the same submission, and
//! reads back only those few bytes.

use std::sync::Arc;

use crate::gpu::kernels::attention::{Attention, AttnScratch, AttnShape};
use crate::gpu::kernels::batch::{BatchBuffers, StepMeta};
use crate::gpu::kernels::elementwise::{Elementwise, Op};
use crate::gpu::kernels::embed::Embed;
use crate::gpu::kernels::kv_write::KvWrite;
use crate::gpu::kernels::matmul::{MatMul, MatMulOpts};
use crate::gpu::kernels::rmsnorm::RmsNorm;
use crate::gpu::kernels::rope::Rope;
use crate::gpu::kernels::topk::{Penalties, TopK};
use crate::gpu::kernels::StepInfo;
use crate::gpu::timer::PassTimer;
use crate::gpu::weights::GpuMatrix;
use crate::gpu::GpuContext;
use crate::kv::{KvBuffers, KvDtype, KvLayout, KvPool};
use crate::model::config::names;
use crate::model::projection::{stored_form, Projection, ProjectionIo};
use crate::model::{ModelConfig, WeightSource};
use crate::types::{Candidates, DType, HostTensor, MAX_CANDIDATES};
use crate::{HearthError, Result};

/// How the model is laid out on the GPU.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Weight form on the GPU (`None`: as stored in the file; BF16 becomes F16).
    pub dtype: Option<DType>,
    /// Bytes reserved for the paged KV cache.
    pub kv_memory: u64,
    pub kv_dtype: KvDtype,
    pub block_size: u32,
    /// Most token rows in one step (longer prompts are prefilled in chunks).
    pub max_step_tokens: u32,
    /// Most sequences in one step.
    pub max_seqs: u32,
    /// Most rows of one step that get logits (at least `max_seqs`): speculative
    /// verification and perplexity want logits for several rows of one sequence.
    pub max_logit_rows: u32,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            dtype: None,
            kv_memory: 256 << 20,
            kv_dtype: KvDtype::F16,
            block_size: crate::kv::DEFAULT_BLOCK_SIZE,
            max_step_tokens: 128,
            max_seqs: 1,
            // One token and 7 drafts (SpecOptions' default) per step.
            max_logit_rows: 8,
        }
    }
}

/// Progress while weights stream to the GPU.
#[derive(Debug, Clone, Copy)]
pub struct LoadProgress {
    pub done: usize,
    pub total: usize,
}

/// Seconds and dispatch count per kernel kind.
pub type KernelProfile = std::collections::BTreeMap<&'static str, (f64, u64)>;

/// Which steps `--profile` times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProfileSteps {
    #[default]
    All,
    /// Steps with prompt rows (prefill chunks, possibly beside decode rows).
    Prefill,
    /// Steps of generated tokens only.
    Decode,
}

impl ProfileSteps {
    fn includes(self, has_prompt_rows: bool) -> bool {
        match self {
            ProfileSteps::All => true,
            ProfileSteps::Prefill => has_prompt_rows,
            ProfileSteps::Decode => !has_prompt_rows,
        }
    }
}

/// Profile entry of the final norm, lm_head and top-K pass (GPU time).
const LOGITS: &str = "logits (norm+lm_head+top-k)";
/// The same stage timed on the host, readback included (no timestamps).
const LOGITS_WALL: &str = "logits (norm+lm_head+top-k+readback)";

/// Receives each dispatch of a step with its kernel kind.
type OpVisitor<'a> = dyn FnMut(&'static str, &dyn Fn(&mut wgpu::ComputePass)) + 'a;

/// A logit row, its penalty counts and the part it belongs to.
type PenaltyCounts<'a, 'b> = (u32, std::borrow::Cow<'a, [(u32, u32)]>, &'a SeqStep<'b>);

/// One sequence's part of a step.
pub struct SeqStep<'a> {
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`.
    pub start: u32,
    /// The sequence's whole block table (covering `start + tokens.len()` positions).
    pub blocks: &'a [u32],
    /// Return candidates for the last `logit_rows` tokens of this part (0: none).
    /// `penalty_counts` are those of the first such row; each later row also
    /// counts the part's tokens after the first one up to itself, as if
    /// they had been generated one at a time (speculative verification).
    pub logit_rows: u32,
    /// The tokens were generated (sampled), not part of a prompt: their rows
    /// go through the matrix-vector kernels, prompt rows through the tiled
    /// ones, whatever else is in the step, so a sequence's results do not
    /// depend on its batch. Generated parts must come first in a step.
    pub generated: bool,
    /// `(token id, count)` of tokens to penalise (empty: no penalties).
    pub penalty_counts: &'a [(u32, u32)],
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
}

impl<'a> SeqStep<'a> {
    /// `tokens` at `start` of a sequence stored in `blocks`, wanting logits, no penalties.
    pub fn new(tokens: &'a [u32], start: u32, blocks: &'a [u32]) -> Self {
        SeqStep {
            tokens,
            start,
            blocks,
            logit_rows: 1,
            generated: false,
            penalty_counts: &[],
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

struct Layer {
    _bufs: Vec<wgpu::Buffer>,
    attn_norm: RmsNorm,
    qkv: Projection,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    rope: Rope,
    kv_write: KvWrite,
    attn: Attention,
    wo: Projection,
    ffn_norm: RmsNorm,
    gate_up: Projection,
    /// None when the down projection applies SwiGLU itself (no `actv` buffer).
    silu: Option<Elementwise>,
    down: Projection,
}

pub struct GpuModel {
    pub ctx: Arc<GpuContext>,
    pub config: ModelConfig,
    /// The KV buffers' shape: layout, dtype and block count. Allocation,
    /// reference counts and the prefix cache live in the scheduler's pool
    /// ([`GpuModel::new_kv_pool`]), not here.
    kv_shape: KvPool,
    opts: ForwardOptions,
    batch: BatchBuffers,
    _kv: KvBuffers,
    _embed_w: GpuMatrix,
    _lm_head_w: Option<GpuMatrix>,
    _misc: Vec<wgpu::Buffer>,
    embed: Embed,
    layers: Vec<Layer>,
    final_norm: RmsNorm,
    lm_head: MatMul,
    penalties: Penalties,
    topk: TopK,
    /// The residual stream `[max_step_tokens, hidden]`.
    x: wgpu::Buffer,
    /// Rows of the final hidden state that need logits: `[max_seqs, hidden]`.
    hid: wgpu::Buffer,
    logits: wgpu::Buffer,
    logit_step: wgpu::Buffer,
    /// `StepInfo` of the matmuls' generated-token rows and prompt rows.
    mm_steps: [wgpu::Buffer; 2],
    topk_out: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// Bytes of weights read per decode token (for bandwidth figures).
    pub weight_bytes: u64,
    profile: Option<KernelProfile>,
    /// Profiling through timestamp queries, when the adapter has them.
    timer: Option<PassTimer>,
    profile_steps: ProfileSteps,
}

fn f32_buffer(
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
        let (h, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let qkv_w = qd + 2 * kvd;
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
        let logit_bytes = rows_max as u64 * row_bytes;
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
        let step = &batch.step;
        let mm_steps = [
            ctx.uniform("matvec_step", &StepInfo::default()),
            ctx.uniform("tiled_step", &StepInfo::default()),
        ];

        let act = |label: &str, width: usize| {
            ctx.buffer_zeroed(label, (t_max as usize * width * 4) as u64)
        };
        let x = act("x", h);
        let xn = act("xn", h);
        let qkv = act("qkv", qkv_w);
        let attn_out = act("attn", qd);
        let gu = act("gate_up", 2 * f);
        // SwiGLU is fused into the down projection's x loads when its rows
        // are whole vec4s; otherwise a separate silu_mul pass writes `actv`.
        let actv = (!f.is_multiple_of(4)).then(|| act("act", f));
        let hid = ctx.buffer_zeroed("hid", (rows_max as usize * h * 4) as u64);
        let hidn = ctx.buffer_zeroed("hid_norm", (rows_max as usize * h * 4) as u64);
        let logits = ctx.buffer_zeroed("logits", logit_bytes);
        let logit_step = ctx.uniform("logit_step", &StepInfo::default());
        let inv_freqs = c.rope_inv_freqs();
        let shape = AttnShape {
            n_heads: c.num_heads as u32,
            n_kv_heads: c.num_kv_heads as u32,
            head_dim: c.head_dim as u32,
            block_size: opts.block_size,
            kv_dtype: opts.kv_dtype,
            max_tokens: t_max,
        };
        let attn_scratch = AttnScratch::new(&ctx, &shape);

        let embed_w = upload_one(&ctx, src, names::TOKEN_EMBD, opts.dtype)?;
        let mut weight_bytes = 0u64;
        let embed = Embed::new(&ctx, step, &embed_w, &batch.tokens, &x);
        done += 1;
        progress(LoadProgress { done, total });

        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let n = |w: &str| names::blk(i, w);
            let t = |w: &str| src.tensor(&n(w));
            let attn_norm_w = f32_buffer(&ctx, src, &n("attn_norm.weight"), h)?;
            let ffn_norm_w = f32_buffer(&ctx, src, &n("ffn_norm.weight"), h)?;
            let mut bufs = vec![];
            let bias = if src.has_tensor(&n("attn_q.bias")) {
                let mut b = t("attn_q.bias")?.to_f32()?;
                b.extend(t("attn_k.bias")?.to_f32()?);
                b.extend(t("attn_v.bias")?.to_f32()?);
                if b.len() != qkv_w {
                    return Err(HearthError::ShapeMismatch {
                        name: n("attn_qkv.bias"),
                        expected: vec![qkv_w],
                        found: vec![b.len()],
                    });
                }
                Some(ctx.buffer_from("qkv.bias", &b))
            } else {
                None
            };
            let proj = |name: &str,
                        parts: Vec<HostTensor>,
                        x: &wgpu::Buffer,
                        y: &wgpu::Buffer,
                        bias: Option<&wgpu::Buffer>,
                        accumulate: bool,
                        silu_x: bool| {
                Projection::new(
                    &ctx,
                    &n(name),
                    parts,
                    opts.dtype,
                    &ProjectionIo {
                        matvec_step: &mm_steps[0],
                        tiled_step: &mm_steps[1],
                        x,
                        y,
                        bias,
                        accumulate,
                        silu_x,
                    },
                )
            };
            let qkv_p = proj(
                "attn_qkv",
                vec![
                    t("attn_q.weight")?,
                    t("attn_k.weight")?,
                    t("attn_v.weight")?,
                ],
                &xn,
                &qkv,
                bias.as_ref(),
                false,
                false,
            )?;
            let wo_p = proj(
                "attn_output",
                vec![t("attn_output.weight")?],
                &attn_out,
                &x,
                None,
                true,
                false,
            )?;
            let gu_p = proj(
                "ffn_gate_up",
                vec![t("ffn_gate.weight")?, t("ffn_up.weight")?],
                &xn,
                &gu,
                None,
                false,
                false,
            )?;
            let down_p = proj(
                "ffn_down",
                vec![t("ffn_down.weight")?],
                actv.as_ref().unwrap_or(&gu),
                &x,
                None,
                true,
                actv.is_none(),
            )?;
            weight_bytes +=
                qkv_p.gpu_bytes() + wo_p.gpu_bytes() + gu_p.gpu_bytes() + down_p.gpu_bytes();
            let (q_norm, k_norm) = if c.qk_norm {
                let qn = f32_buffer(&ctx, src, &n("attn_q_norm.weight"), c.head_dim)?;
                let kn = f32_buffer(&ctx, src, &n("attn_k_norm.weight"), c.head_dim)?;
                let (hd, nh, nkv) = (c.head_dim as u32, c.num_heads as u32, c.num_kv_heads as u32);
                let qk = (
                    Some(RmsNorm::heads(
                        &ctx,
                        step,
                        &qkv,
                        &qn,
                        hd,
                        0,
                        nh,
                        qkv_w as u32,
                        c.rms_norm_eps,
                    )),
                    Some(RmsNorm::heads(
                        &ctx,
                        step,
                        &qkv,
                        &kn,
                        hd,
                        nh,
                        nkv,
                        qkv_w as u32,
                        c.rms_norm_eps,
                    )),
                );
                bufs.push(qn);
                bufs.push(kn);
                qk
            } else {
                (None, None)
            };
            let layer = Layer {
                attn_norm: RmsNorm::new(
                    &ctx,
                    step,
                    &x,
                    &attn_norm_w,
                    &xn,
                    h as u32,
                    c.rms_norm_eps,
                ),
                qkv: qkv_p,
                q_norm,
                k_norm,
                rope: Rope::new(
                    &ctx,
                    step,
                    &batch.positions,
                    &qkv,
                    &inv_freqs,
                    c.num_heads as u32,
                    c.num_kv_heads as u32,
                    c.head_dim as u32,
                    qkv_w as u32,
                    c.rope_layout,
                ),
                kv_write: KvWrite::new(&ctx, &shape, &batch, &qkv, &kv.k[i], &kv.v[i])?,
                attn: Attention::new(
                    &ctx,
                    &shape,
                    &batch,
                    Some([&mm_steps[0], &mm_steps[1]]),
                    &attn_scratch,
                    &qkv,
                    &kv.k[i],
                    &kv.v[i],
                    &attn_out,
                )?,
                wo: wo_p,
                ffn_norm: RmsNorm::new(&ctx, step, &x, &ffn_norm_w, &xn, h as u32, c.rms_norm_eps),
                gate_up: gu_p,
                silu: actv
                    .as_ref()
                    .map(|a| Elementwise::new(&ctx, Op::SiluMul, step, a, &gu, f as u32)),
                down: down_p,
                _bufs: {
                    bufs.extend([attn_norm_w, ffn_norm_w]);
                    bufs.extend(bias);
                    bufs
                },
            };
            layers.push(layer);
            done += 1;
            progress(LoadProgress { done, total });
        }

        let norm_w = f32_buffer(&ctx, src, names::OUTPUT_NORM, h)?;
        let final_norm = RmsNorm::new(
            &ctx,
            &logit_step,
            &hid,
            &norm_w,
            &hidn,
            h as u32,
            c.rms_norm_eps,
        );
        let lm_head_w = if src.has_tensor(names::OUTPUT) {
            Some(upload_one(&ctx, src, names::OUTPUT, opts.dtype)?)
        } else {
            None
        };
        let head = lm_head_w.as_ref().unwrap_or(&embed_w);
        weight_bytes += head.gpu_bytes();
        let lm_head = MatMul::new_split(
            &ctx,
            &logit_step,
            &logit_step,
            head,
            &hidn,
            &logits,
            MatMulOpts::default(),
        );
        let penalties = Penalties::new(&ctx, &logits, rows_max, c.vocab_size as u32);
        let topk = TopK::new(
            &ctx,
            &logits,
            rows_max,
            c.vocab_size as u32,
            MAX_CANDIDATES as u32,
        );
        let out_bytes = topk.output_bytes();
        let topk_out = topk.output().clone();
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("topk.staging"),
            size: out_bytes,
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
            _misc: [xn, qkv, attn_out, gu, hidn, norm_w]
                .into_iter()
                .chain(actv)
                .collect(),
            embed,
            layers,
            final_norm,
            lm_head,
            penalties,
            topk,
            x,
            hid,
            logits,
            logit_step,
            mm_steps,
            topk_out,
            staging,
            weight_bytes,
            profile: None,
            timer: None,
            profile_steps: ProfileSteps::All,
            ctx,
        };
        model.warm_up()?;
        Ok(model)
    }

    /// A block manager for this model's KV buffers: every block free, an
    /// empty prefix cache. Whoever schedules sequences on the model owns it.
    pub fn new_kv_pool(&self) -> KvPool {
        let p = &self.kv_shape;
        KvPool::with_blocks(*p.layout(), p.dtype(), p.num_blocks())
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
    pub async fn step(&mut self, seqs: &[SeqStep<'_>], k: usize) -> Result<Vec<Candidates>> {
        let k = k.clamp(1, MAX_CANDIDATES);
        let (n_rows, t_logits, timed) = self.submit_step(seqs, k)?;
        if n_rows == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.topk.output_bytes_for(n_rows, k as u32);
        let data = self.ctx.map_read(&self.staging, bytes).await?;
        self.ctx.check_errors()?;
        if let Some(timer) = self.timer.as_mut() {
            let spans = timer.read(&self.ctx).await?;
            self.add_to_profile(spans);
        } else if timed {
            self.add_to_profile([(LOGITS_WALL, t_logits.elapsed().as_secs_f64())]);
        }
        Ok(self.topk.parse_output(&data, n_rows, k as u32))
    }

    /// Records and submits one step; returns the number of logit rows, when
    /// the submission was made and whether the profile times this step.
    fn submit_step(
        &mut self,
        seqs: &[SeqStep<'_>],
        k: usize,
    ) -> Result<(u32, web_time::Instant, bool)> {
        let mut meta = StepMeta::new();
        let n_gen: u32 = seqs
            .iter()
            .take_while(|s| s.generated)
            .map(|s| s.tokens.len() as u32)
            .sum();
        if seqs.iter().skip_while(|s| s.generated).any(|s| s.generated) {
            return Err(HearthError::InvalidRequest(
                "generated-token parts must come before prompt parts in a step".into(),
            ));
        }
        for s in seqs {
            if s.tokens.is_empty() {
                return Err(HearthError::InvalidRequest("empty step".into()));
            }
            for &t in s.tokens {
                if t as usize >= self.config.vocab_size {
                    return Err(HearthError::InvalidRequest(format!(
                        "token id {t} out of range (vocab {})",
                        self.config.vocab_size
                    )));
                }
            }
            meta.push_seq(s.tokens, s.start, s.blocks);
        }
        let n_tokens = meta.n_tokens();
        if n_tokens > self.opts.max_step_tokens {
            return Err(HearthError::InvalidRequest(format!(
                "step of {n_tokens} tokens exceeds max_step_tokens {}",
                self.opts.max_step_tokens
            )));
        }
        self.batch.write(&self.ctx.queue, &meta)?;
        let mm_infos = [
            StepInfo {
                n_tokens: n_gen,
                ..Default::default()
            },
            StepInfo {
                n_tokens,
                first_row: n_gen,
                ..Default::default()
            },
        ];
        for (buf, info) in self.mm_steps.iter().zip(&mm_infos) {
            self.ctx
                .queue
                .write_buffer(buf, 0, bytemuck::bytes_of(info));
        }
        // Rows whose hidden state feeds the lm_head, and each one's penalty counts.
        let mut logit_rows = Vec::new();
        let mut pen_counts: Vec<PenaltyCounts> = Vec::new();
        let mut row = 0u32;
        for s in seqs {
            let n = s.tokens.len() as u32;
            if s.logit_rows > n {
                return Err(HearthError::InvalidRequest(format!(
                    "logits wanted for {} rows of a {n}-token part",
                    s.logit_rows
                )));
            }
            let first = n - s.logit_rows;
            for j in first..n {
                if !s.penalty_counts.is_empty() {
                    let mut counts = std::borrow::Cow::Borrowed(s.penalty_counts);
                    if j > first {
                        let extra = &s.tokens[first as usize + 1..=j as usize];
                        counts.to_mut().extend(extra.iter().map(|&t| (t, 1)));
                    }
                    pen_counts.push((logit_rows.len() as u32, counts, s));
                }
                logit_rows.push(row + j);
            }
            row += n;
        }
        let n_rows = logit_rows.len() as u32;
        if n_rows > self.logit_capacity() {
            return Err(HearthError::InvalidRequest(format!(
                "a step wants logits for {n_rows} rows, the model was loaded for {} (max_logit_rows)",
                self.logit_capacity()
            )));
        }
        self.ctx.queue.write_buffer(
            &self.logit_step,
            0,
            bytemuck::bytes_of(&StepInfo {
                n_tokens: n_rows,
                n_seqs: n_rows,
                ..Default::default()
            }),
        );
        let any_pen = !pen_counts.is_empty();
        if any_pen {
            let rows: Vec<_> = pen_counts
                .iter()
                .map(|(r, counts, s)| {
                    (
                        *r,
                        &counts[..],
                        s.repetition_penalty,
                        s.presence_penalty,
                        s.frequency_penalty,
                    )
                })
                .collect();
            self.penalties.write(&self.ctx.queue, &rows)?;
        }
        // Attention splits the generated rows' context by the longest of them.
        let max_gen_kv = seqs
            .iter()
            .take_while(|s| s.generated)
            .map(|s| s.start + s.tokens.len() as u32)
            .max()
            .unwrap_or(0);
        let h = self.config.hidden_size as u64 * 4;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        let timed = self.profile.is_some() && self.profile_steps.includes(n_gen < n_tokens);
        // Taken out for the step so the ops (which borrow self) can use it.
        let mut timer = if timed { self.timer.take() } else { None };
        if let Some(t) = timer.as_mut() {
            // One pass per kernel, each bracketed by timestamps, one submission.
            self.for_each_op(n_tokens, n_gen, max_gen_kv, &mut |name, op| {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(name),
                    timestamp_writes: t.pass(name),
                });
                op(&mut pass);
            });
        } else if timed {
            self.profile_ops(n_tokens, n_gen, max_gen_kv)?;
        } else {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.for_each_op(n_tokens, n_gen, max_gen_kv, &mut |_, op| op(&mut pass));
        }
        if n_rows > 0 {
            for (i, &r) in logit_rows.iter().enumerate() {
                enc.copy_buffer_to_buffer(&self.x, r as u64 * h, &self.hid, i as u64 * h, h);
            }
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(LOGITS),
                    timestamp_writes: timer.as_mut().and_then(|t| t.pass(LOGITS)),
                });
                self.final_norm.record(&mut pass, n_rows);
                self.lm_head.record_rows(&mut pass, n_rows, n_rows);
                if any_pen {
                    self.penalties.record(&mut pass, n_rows);
                }
                self.topk.record(&mut pass, n_rows, k as u32);
            }
            enc.copy_buffer_to_buffer(
                &self.topk_out,
                0,
                &self.staging,
                0,
                self.topk.output_bytes_for(n_rows, k as u32),
            );
        }
        if let Some(t) = timer {
            t.resolve(&mut enc);
            self.timer = Some(t);
        }
        let t_logits = web_time::Instant::now();
        self.ctx.queue.submit(Some(enc.finish()));
        Ok((n_rows, t_logits, timed))
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
            if let Err(e) = self.submit_step(&[part], 1) {
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

    /// Calls `f(kernel kind, record)` for every dispatch of the layers, in order.
    /// `g`: leading rows that are generated tokens; `max_kv`: their longest context.
    fn for_each_op(&self, n: u32, g: u32, max_kv: u32, f: &mut OpVisitor) {
        f("embed", &|p| self.embed.record(p, n));
        for l in &self.layers {
            f("rmsnorm", &|p| l.attn_norm.record(p, n));
            f("matmul.qkv", &|p| l.qkv.record(p, g, n));
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                f("rmsnorm.qk", &|p| {
                    qn.record(p, n);
                    kn.record(p, n)
                });
            }
            f("rope", &|p| l.rope.record(p, n));
            f("kv_write", &|p| l.kv_write.record(p, n));
            f("attention", &|p| l.attn.record_rows(p, g, n, max_kv));
            f("matmul.o", &|p| l.wo.record(p, g, n));
            f("rmsnorm", &|p| l.ffn_norm.record(p, n));
            f("matmul.gate_up", &|p| l.gate_up.record(p, g, n));
            if let Some(silu) = &l.silu {
                f("silu_mul", &|p| silu.record(p, n));
            }
            f("matmul.down", &|p| l.down.record(p, g, n));
        }
    }

    /// Profiling mode: every kernel is its own submission, timed to completion
    /// (slower overall, but shows where a step's time goes on any adapter).
    #[cfg(not(target_arch = "wasm32"))]
    fn profile_ops(&mut self, n: u32, g: u32, max_kv: u32) -> Result<()> {
        let mut times: Vec<(&'static str, f64)> = Vec::new();
        let ctx = self.ctx.clone();
        let mut err = None;
        self.for_each_op(n, g, max_kv, &mut |name, op| {
            let t = web_time::Instant::now();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                op(&mut pass);
            }
            ctx.queue.submit(Some(enc.finish()));
            if let Err(e) = ctx.wait() {
                err = Some(e);
            }
            times.push((name, t.elapsed().as_secs_f64()));
        });
        if let Some(e) = err {
            return Err(e);
        }
        self.add_to_profile(times);
        Ok(())
    }

    #[cfg(target_arch = "wasm32")]
    fn profile_ops(&mut self, _n: u32, _g: u32, _max_kv: u32) -> Result<()> {
        Err(HearthError::Gpu(
            "profiling needs a blocking device wait (native only)".into(),
        ))
    }

    /// Turns per-kernel timing on (and clears it) or off; see [`GpuModel::profile`].
    /// With timestamp queries (when the adapter has them) a step runs as
    /// usual, one pass per kernel in one submission; without, every kernel is
    /// submitted and waited for alone.
    pub fn set_profiling(&mut self, steps: Option<ProfileSteps>) {
        let on = steps.is_some();
        self.profile_steps = steps.unwrap_or_default();
        self.profile = on.then(Default::default);
        self.timer = if on {
            // Every op of a step, plus the logits pass.
            let mut passes = 1;
            self.for_each_op(1, 0, 0, &mut |_, _| passes += 1);
            PassTimer::new(&self.ctx, passes)
        } else {
            None
        };
    }

    /// Adds kernel times (seconds) to the profile, one call each.
    fn add_to_profile(&mut self, times: impl IntoIterator<Item = (&'static str, f64)>) {
        let Some(p) = self.profile.as_mut() else {
            return;
        };
        for (name, t) in times {
            let e = p.entry(name).or_default();
            e.0 += t;
            e.1 += 1;
        }
    }

    /// Whether the profile comes from GPU timestamps (else from timing each
    /// kernel's own submission on the host).
    pub fn profile_uses_timestamps(&self) -> bool {
        self.timer.is_some()
    }

    /// Seconds and dispatch count per kernel kind since profiling was turned on
    /// (the lm_head and top-K stage is timed as "logits").
    pub fn profile(&self) -> Option<&KernelProfile> {
        self.profile.as_ref()
    }

    /// Full logits of the rows of the last step (tests and debugging; a readback of vocab floats per row).
    pub async fn last_logits(&self, n_rows: usize) -> Result<Vec<f32>> {
        let bytes = self
            .ctx
            .read_bytes(
                &self.logits,
                0,
                (n_rows * self.config.vocab_size * 4) as u64,
            )
            .await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

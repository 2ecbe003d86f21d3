//! The buffers a step's kernels pass between each other, sized once for the
//! largest step so a step allocates nothing.

use crate::gpu::kernels::moe_group::RouteLayout;
use crate::gpu::GpuContext;
use crate::model::ModelConfig;
use crate::Result;

/// Activation buffers; every kernel's bind group points into these. Rows are
/// f32; "rows" is `max_step_tokens` unless said otherwise.
pub(super) struct Activations {
    /// The residual stream `[rows, hidden]`.
    pub x: wgpu::Buffer,
    /// The normed residual, input of the QKV and gate/up projections.
    pub xn: wgpu::Buffer,
    /// Fused Q, K and V `[rows, q_dim + 2 * kv_dim]`, RoPE applied in place.
    pub qkv: wgpu::Buffer,
    /// Attention output `[rows, q_dim]`, input of the O projection.
    pub attn_out: wgpu::Buffer,
    /// Fused gate and up `[rows, 2 * intermediate]`.
    pub gate_up: wgpu::Buffer,
    /// silu(gate) * up `[rows, intermediate]`. SwiGLU is fused into the down
    /// projection's x loads when its rows are whole vec4s; only otherwise
    /// does a separate pass write this.
    pub actv: Option<wgpu::Buffer>,
    /// Rows of the final hidden state that need logits `[logit rows, hidden]`.
    pub hid: wgpu::Buffer,
    /// `hid` after the final norm, input of the lm_head.
    pub hid_norm: wgpu::Buffer,
    /// `[logit rows, vocab]`, penalised in place before the top-K pass.
    pub logits: wgpu::Buffer,
    /// Embeddings: one summed row of final-normed hidden states per pooled
    /// part `[max_seqs, hidden]`.
    pub pooled: wgpu::Buffer,
    /// A mixture-of-experts model's routing and expert buffers.
    pub moe: Option<MoeActivations>,
}

/// Buffers of the sparse layers; "assignments" are `rows * k` (each row's
/// `k` experts), indexed by grouped position where said.
pub(super) struct MoeActivations {
    /// The router's picks `[rows, k]` (u32) and their weights (f32).
    pub ids: wgpu::Buffer,
    pub weights: wgpu::Buffer,
    /// The grouping of assignments by expert (see `moe_group.wgsl`).
    pub route: wgpu::Buffer,
    pub layout: RouteLayout,
    /// Each assignment's expert gate/up `[assignments, 2 * expert width]`.
    pub gate_up: wgpu::Buffer,
    /// Each assignment's expert output `[assignments, hidden]`.
    pub down: wgpu::Buffer,
    /// Qwen2-MoE's shared expert output `[rows, hidden]`.
    pub shared_out: Option<wgpu::Buffer>,
}

impl Activations {
    pub fn new(
        ctx: &GpuContext,
        c: &ModelConfig,
        rows: u32,
        logit_rows: u32,
        seqs: u32,
    ) -> Result<Self> {
        let h = c.hidden_size;
        // Dense layers' MLP width, or the shared expert's where wider.
        let shared = c
            .moe
            .as_ref()
            .and_then(|m| m.shared_expert_intermediate_size);
        let f = c.intermediate_size.max(shared.unwrap_or(0));
        let act = |label: &str, width: usize| {
            ctx.buffer_zeroed(label, (rows as usize * width * 4) as u64)
        };
        let per_logit_row = |label: &str, width: usize| {
            ctx.buffer_zeroed(label, logit_rows as u64 * width as u64 * 4)
        };
        Ok(Activations {
            moe: super::experts::moe_activations(ctx, c, rows)?,
            x: act("x", h),
            xn: act("xn", h),
            qkv: act("qkv", c.q_dim() + 2 * c.kv_dim()),
            attn_out: act("attn", c.q_dim()),
            gate_up: act("gate_up", 2 * f),
            actv: (!c.intermediate_size.is_multiple_of(4)).then(|| act("act", c.intermediate_size)),
            hid: per_logit_row("hid", h),
            hid_norm: per_logit_row("hid_norm", h),
            logits: per_logit_row("logits", c.vocab_size),
            pooled: ctx.buffer_zeroed("pooled", seqs as u64 * h as u64 * 4),
        })
    }
}

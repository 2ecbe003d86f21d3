//! Paged attention launcher for prefill and decode rows, with the key range
//! split across workgroups for long contexts (flash-decoding) and a reduce pass.

use bytemuck::{Pod, Zeroable};

use super::batch::BatchBuffers;
use super::grid;
use crate::gpu::{GpuContext, ShaderSpec};
use crate::kv::quant::rotation_block;
use crate::kv::KvDtype;
use crate::{HearthError, Result};

const SRC: &str = concat!(
    include_str!("../../../shaders/paged_kv.wgsl"),
    include_str!("../../../shaders/attention.wgsl")
);
const SRC_REDUCE: &str = include_str!("../../../shaders/attention_reduce.wgsl");
/// Invocations per workgroup; each owns 2 element pairs, so head_dim <= 4 * WG.
const WG: u32 = 64;
/// Keys per split below which splitting is not worth a second pass.
const MIN_CHUNK: u32 = 128;
/// Workgroups that keep a GPU busy; splits stop once rows × heads × splits reach it.
const TARGET_GROUPS: u32 = 256;
const MAX_SPLITS: u32 = 64;
/// Most query heads (of one KV head) a workgroup serves; they share every K/V read.
const MAX_GB: u32 = 8;
/// Keys per tile of the online softmax; splits are multiples of it.
const KT: u32 = 64;
/// Scratch for split partials (further capped by the max binding).
const SCRATCH_BYTES: u64 = 32 << 20;

/// Static shape of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub block_size: u32,
    pub kv_dtype: KvDtype,
    /// Largest `n_tokens` of a step.
    pub max_tokens: u32,
}

impl AttnShape {
    /// The shape of a model's attention over the cache of `pool`.
    pub fn from_pool(pool: &crate::kv::KvPool, n_heads: u32, max_tokens: u32) -> Self {
        let l = pool.layout();
        AttnShape {
            n_heads,
            n_kv_heads: l.n_kv_heads,
            head_dim: l.head_dim,
            block_size: l.block_size,
            kv_dtype: pool.dtype(),
            max_tokens,
        }
    }

    /// Length of a fused QKV row.
    pub fn row_stride(&self) -> u32 {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }

    pub fn validate(&self) -> Result<()> {
        self.kv_dtype.check_head_dim(self.head_dim)?;
        let ok = self.n_heads > 0
            && self.n_kv_heads > 0
            && self.n_heads.is_multiple_of(self.n_kv_heads)
            && self.head_dim > 0
            && self.head_dim.is_multiple_of(2)
            && self.head_dim <= 4 * WG
            && self.block_size > 0
            && self.max_tokens > 0
            && self.max_tokens <= 65535;
        if ok {
            Ok(())
        } else {
            Err(HearthError::Unsupported(format!(
                "attention shape {self:?} (needs n_heads % n_kv_heads == 0, even head_dim <= {}, 1..=65535 tokens per step)",
                4 * WG
            )))
        }
    }
}

/// (Row, head group) slots per workgroup (QR in attention.wgsl): the most
/// (up to `max_slots`, a power of two) whose workgroup memory fits
/// `storage_limit` bytes (and WebGPU's guaranteed 16 KiB).
fn query_slots(shape: &AttnShape, gb: u32, max_slots: u32, storage_limit: u32) -> u32 {
    let half = shape.head_dim / 2;
    let limit = storage_limit.min(16 << 10);
    let bytes = |qr: u32| {
        let q4 = if shape.kv_dtype == KvDtype::Q4 {
            qr * gb * 8 * 4
        } else {
            0
        };
        qr * gb * half * 8 + qr * KT * gb * 4 + 2 * gb * WG * 4 + qr * 8 + 8 + q4
    };
    let mut qr = max_slots.next_power_of_two().min(WG);
    while qr > 1 && bytes(qr) > limit {
        qr /= 2;
    }
    qr
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    block_size: u32,
    row_stride: u32,
    group: u32,
    scale: f32,
    max_splits: u32,
}

/// Partial results of split-K attention, shared by every layer: the layers'
/// attention passes run one after another within a step, and each reduces
/// its partials before the next starts.
pub struct AttnScratch {
    buf: wgpu::Buffer,
    /// Partial entries (row × head × split) the buffer holds.
    entries: u32,
    /// Splits every row may use at once within `entries`: a constant of the
    /// model, so a row's split boundaries never depend on its batch.
    max_splits: u32,
}

impl AttnScratch {
    pub fn new(ctx: &GpuContext, shape: &AttnShape) -> Self {
        let entry_bytes = (shape.head_dim as u64 + 2) * 4;
        let scratch_bytes = SCRATCH_BYTES.min(ctx.caps.max_binding);
        let entries = ((scratch_bytes - 16) / entry_bytes)
            .min((shape.max_tokens * shape.n_heads * MAX_SPLITS) as u64)
            as u32;
        let buf = ctx.buffer_zeroed("attention.scratch", 16 + entries as u64 * entry_bytes);
        let max_splits = (entries / (shape.max_tokens * shape.n_heads).max(1)).clamp(1, MAX_SPLITS);
        AttnScratch {
            buf,
            entries,
            max_splits,
        }
    }
}

/// Bind groups of the three pipelines for one step uniform.
struct Binds {
    direct: wgpu::BindGroup,
    partial: wgpu::BindGroup,
    reduce: wgpu::BindGroup,
}

pub struct Attention {
    direct: std::sync::Arc<wgpu::ComputePipeline>,
    partial: std::sync::Arc<wgpu::ComputePipeline>,
    reduce: std::sync::Arc<wgpu::ComputePipeline>,
    /// Over all rows of the step (`batch.step`).
    all: Binds,
    /// Over the generated rows and the prompt rows (see [`Attention::record_rows`]).
    rows: Option<[Binds; 2]>,
    max_splits: u32,
    shape: AttnShape,
    /// Query heads per workgroup.
    heads_per_group: u32,
    /// (Row, head group) slots per workgroup.
    slots_per_group: u32,
    /// Workgroups per grid dimension.
    max_dim: u32,
    /// Partial entries (row × head × split) the scratch buffer holds.
    scratch_entries: u32,
}

impl Attention {
    /// Reads queries from `qkv` (fused rows, q heads first), K/V from one layer's
    /// cache buffers, writes `out` `[n_tokens, n_heads * head_dim]` f32.
    /// `scratch` must come from the same `shape` (head_dim, heads, max_tokens).
    /// `row_steps`: the step uniforms of the generated and the prompt rows,
    /// for [`Attention::record_rows`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        shape: &AttnShape,
        batch: &BatchBuffers,
        row_steps: Option<[&wgpu::Buffer; 2]>,
        scratch: &AttnScratch,
        qkv: &wgpu::Buffer,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<Self> {
        shape.validate()?;
        let group = shape.n_heads / shape.n_kv_heads;
        let heads_per_group = (1..=MAX_GB)
            .rev()
            .find(|b| group.is_multiple_of(*b))
            .unwrap_or(1);
        let cpu = ctx.info.device_type == wgpu::DeviceType::Cpu;
        let slots_per_group = query_slots(
            shape,
            heads_per_group,
            if cpu { 8 } else { 4 },
            ctx.caps.max_workgroup_storage,
        );
        let lanes_per_slot = WG / slots_per_group;
        let half = shape.head_dim / 2;
        let spec = ShaderSpec::new("attention", SRC)
            .flag("KV_F16", shape.kv_dtype == KvDtype::F16)
            .flag("KV_QUANT", shape.kv_dtype.is_quantized())
            .flag("KV_Q8", shape.kv_dtype == KvDtype::Q8)
            .flag("KV_Q4", shape.kv_dtype == KvDtype::Q4)
            .constant("WG", WG)
            .constant("MIN_CHUNK", MIN_CHUNK)
            .constant("GB", heads_per_group)
            .constant("QR", slots_per_group)
            .constant("LPR", lanes_per_slot)
            .constant("KT", KT)
            .constant("KPL", KT / lanes_per_slot)
            .constant("HALF", half)
            .constant("PPL", half.div_ceil(lanes_per_slot))
            .constant("ROT", rotation_block(shape.head_dim as usize) as u32);
        let direct = ctx.pipeline(&spec.clone().flag("DIRECT", true));
        let partial = ctx.pipeline(&spec);
        let reduce =
            ctx.pipeline(&ShaderSpec::new("attention_reduce", SRC_REDUCE).constant("WG", WG));
        let params = Params {
            n_heads: shape.n_heads,
            n_kv_heads: shape.n_kv_heads,
            head_dim: shape.head_dim,
            block_size: shape.block_size,
            row_stride: shape.row_stride(),
            group: shape.n_heads / shape.n_kv_heads,
            scale: 1.0 / (shape.head_dim as f32).sqrt(),
            max_splits: scratch.max_splits,
        };
        let params = ctx.uniform("attention.params", &params);
        let scratch_entries = scratch.entries;
        let binds = |step: &wgpu::Buffer| {
            let common = |dst: &wgpu::Buffer, p: &wgpu::ComputePipeline| {
                ctx.bind_group(
                    p,
                    &[
                        step,
                        &params,
                        &batch.positions,
                        &batch.row_seq,
                        &batch.seqs,
                        &batch.block_table,
                        qkv,
                        k,
                        v,
                        dst,
                    ],
                )
            };
            Binds {
                direct: common(out, &direct),
                partial: common(&scratch.buf, &partial),
                reduce: ctx.bind_group(&reduce, &[step, &params, &scratch.buf, out]),
            }
        };
        let all = binds(&batch.step);
        let rows = row_steps.map(|[g, p]| [binds(g), binds(p)]);
        Ok(Attention {
            direct,
            partial,
            reduce,
            all,
            rows,
            max_splits: scratch.max_splits,
            shape: *shape,
            heads_per_group,
            slots_per_group,
            max_dim: ctx.caps.max_workgroups_per_dim,
            scratch_entries,
        })
    }

    /// Splits of the key range for a step: enough workgroups to fill the GPU,
    /// at least `MIN_CHUNK` keys each, within the scratch buffer.
    pub fn splits_for(&self, n_tokens: u32, max_kv_len: u32) -> u32 {
        let rows = (n_tokens * self.shape.n_heads).max(1);
        let groups = (rows / self.heads_per_group)
            .div_ceil(self.slots_per_group)
            .max(1);
        max_kv_len
            .div_ceil(MIN_CHUNK)
            .min(TARGET_GROUPS.div_ceil(groups))
            .min(self.scratch_entries / rows)
            .clamp(1, MAX_SPLITS)
    }

    /// `max_kv_len`: the longest sequence's KV length in this step.
    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32, max_kv_len: u32) {
        self.record_splits(pass, n_tokens, self.splits_for(n_tokens, max_kv_len));
    }

    /// Like [`Attention::record`] with an explicit split count (clamped to what fits).
    pub fn record_splits(&self, pass: &mut wgpu::ComputePass, n_tokens: u32, n_splits: u32) {
        let rows = n_tokens * self.shape.n_heads;
        let n_splits = n_splits.min(self.scratch_entries / rows.max(1)).max(1);
        self.dispatch(pass, &self.all, n_tokens, n_splits);
    }

    /// Batch-invariant recording: the first `n_gen` rows are generated tokens
    /// (decode), split over their context by their own length
    /// (`max_gen_kv`: the longest of them); the other rows up to `n_tokens`
    /// are prompt rows, each in one pass. Either way a row's result does not
    /// depend on the rest of the step. Needs `row_steps` at construction,
    /// saying `{n_tokens: n_gen}` and `{n_tokens, first_row: n_gen}`.
    pub fn record_rows(
        &self,
        pass: &mut wgpu::ComputePass,
        n_gen: u32,
        n_tokens: u32,
        max_gen_kv: u32,
    ) {
        let Some([gen, prompt]) = &self.rows else {
            return self.record(pass, n_tokens, max_gen_kv);
        };
        self.dispatch(pass, prompt, n_tokens.saturating_sub(n_gen), 1);
        let splits = max_gen_kv.div_ceil(MIN_CHUNK).clamp(1, self.max_splits);
        self.dispatch(pass, gen, n_gen, splits);
    }

    fn dispatch(&self, pass: &mut wgpu::ComputePass, b: &Binds, rows: u32, n_splits: u32) {
        if rows == 0 {
            return;
        }
        let slots = rows * (self.shape.n_heads / self.heads_per_group);
        let (x, y) = grid(slots.div_ceil(self.slots_per_group), self.max_dim);
        if n_splits == 1 {
            pass.set_pipeline(&self.direct);
            pass.set_bind_group(0, &b.direct, &[]);
            pass.dispatch_workgroups(x, y, 1);
            return;
        }
        pass.set_pipeline(&self.partial);
        pass.set_bind_group(0, &b.partial, &[]);
        pass.dispatch_workgroups(x, y, n_splits);
        pass.set_pipeline(&self.reduce);
        pass.set_bind_group(0, &b.reduce, &[]);
        pass.dispatch_workgroups(self.shape.n_heads, rows, 1);
    }
}

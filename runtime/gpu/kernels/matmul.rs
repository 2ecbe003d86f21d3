//! `y = W x (+ bias) (+ y)` for a [`GpuMatrix`] in any format: a
//! matrix-vector kernel for decode-sized batches and a tiled matrix-matrix
//! kernel above [`MATVEC_MAX_TOKENS`]. Both dequantize in registers and
//! accumulate in f32; each row chunk of the matrix is its own dispatch.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::grid;
use crate::gpu::weights::GpuMatrix;
use crate::gpu::{GpuContext, ShaderSpec};
use crate::types::DType;

const MATVEC_SRC: &str = concat!(
    include_str!("../../../shaders/weight_formats.wgsl"),
    include_str!("../../../shaders/matmul_x.wgsl"),
    include_str!("../../../shaders/matvec.wgsl")
);
const TILED_SRC: &str = concat!(
    include_str!("../../../shaders/weight_formats.wgsl"),
    include_str!("../../../shaders/matmul_x.wgsl"),
    include_str!("../../../shaders/matmul_tiled.wgsl")
);

/// Token counts up to this use the matrix-vector kernel (each workgroup applies
/// its weights to this many tokens per read).
pub const MATVEC_MAX_TOKENS: u32 = 8;
/// Tokens per workgroup of the multi-token lane-rows build. With broadcast x
/// loads (see matvec.wgsl) a token costs little beside the weight loads and
/// unpacking it shares, so eight share them (the kernel is written out for
/// at most eight); with per-lane x loads each token's 32 loaded values stay
/// live and more than two spill on llvmpipe.
const LANE_MAX_TOKENS: u32 = 8;
const LANE_MAX_TOKENS_NO_BCAST: u32 = 2;
const _: () = assert!(LANE_MAX_TOKENS <= 8);
const MATVEC_WG: u32 = 256;
/// Invocations per row in the matrix-vector kernel without subgroups.
const MATVEC_TPR: u32 = 16;
/// Tile of the matrix-matrix kernel (must match matmul_tiled.wgsl).
const TILE_TOKENS: u32 = 32;
const TILE_ROWS: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    row_offset: u32,
    y_stride: u32,
    row_words: u32,
    /// Expert matrices: the chunk's first expert and expert count, the
    /// route words where the tile list and the source rows start.
    e_first: u32,
    e_count: u32,
    tiles: u32,
    src: u32,
    _p: [u32; 3],
}

/// A stack of expert matrices (each `rows_per_expert` rows, whole experts
/// per chunk) applied to the grouped rows of a mixture-of-experts step:
/// the workgroups walk the tile lists of [`crate::gpu::kernels::moe_group`]
/// and each reads only its expert's rows. Output row = grouped position.
#[derive(Clone, Copy)]
pub struct ExpertOpts<'a> {
    pub route: &'a wgpu::Buffer,
    pub layout: crate::gpu::kernels::moe_group::RouteLayout,
    pub rows_per_expert: u32,
    pub experts: u32,
    /// x rows are token rows, found through the route's source rows (the
    /// gate/up projection); else x rows are grouped positions (down).
    pub gather_x: bool,
}

#[derive(Clone, Copy, Default)]
pub struct MatMulOpts<'a> {
    /// f32 `[rows]`, added to every token's output.
    pub bias: Option<&'a wgpu::Buffer>,
    /// `y += W x` instead of `y = W x` (fuses the residual add).
    pub accumulate: bool,
    /// First output column this matrix writes (a part of a wider output,
    /// e.g. the V rows of a QKV projection stored in another format).
    pub out_offset: u32,
    /// Columns of one output row; `None`: the matrix's row count.
    pub out_stride: Option<u32>,
    /// x is a fused gate/up output (`[n_tokens, 2 * cols]`, gate then up)
    /// and the matrix multiplies silu(gate) * up (SwiGLU fused into the x
    /// loads). Needs cols % 4 == 0.
    pub silu_x: bool,
    /// The matrix stacks experts (see [`ExpertOpts`]); record with
    /// [`MatMul::record_experts`].
    pub experts: Option<ExpertOpts<'a>>,
}

/// Which kernel [`MatMul::record_with`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatMulKernel {
    /// Matrix-vector up to [`MATVEC_MAX_TOKENS`] tokens (the lane-rows form on
    /// CPU adapters, the cooperative form elsewhere), tiled above.
    Auto,
    /// Matrix-vector, several invocations per row reduced with subgroup
    /// operations or workgroup memory: the GPU form.
    MatVec,
    /// Matrix-vector, one row per invocation: the CPU-adapter form.
    MatVecLaneRows,
    /// The tiled kernel in f32.
    Tiled,
    /// The tiled kernel with f16 multiply-adds (needs `shader-f16`; falls
    /// back to [`MatMulKernel::Tiled`] without it). [`MatMulKernel::Auto`]
    /// picks it where [`crate::gpu::Caps::tiled_f16`].
    TiledF16,
}

/// Pipelines of one MatMul: (cooperative, lane rows) × (1 token, up to 8),
/// tiled, and the multi-token lane-rows build bound to the prompt rows' step.
const COOP1: usize = 0;
const COOP: usize = 1;
const LANE1: usize = 2;
const LANE: usize = 3;
const TILED: usize = 4;
const LANE_PROMPT: usize = 5;
/// Lane-rows builds for 2 and for 3-4 tokens: llvmpipe predicates the token
/// slots of a build rather than branching past them, so a 2-row step in the
/// 8-token build paid for 8 (`cargo bench --bench matmul`: x2 cost as
/// much as x8, ~2.3x one token). Every build sums a row the same way.
const LANE2: usize = 6;
const LANE4: usize = 7;
const TILED_F16: usize = 8;
/// Invocations per workgroup of the lane-rows matrix-vector kernel.
const LANE_WG: u32 = 64;

/// Rows per workgroup of the lane-rows kernel: four per invocation for
/// quantized weights (see matvec.wgsl), one otherwise.
fn lane_rows_per_wg(dtype: DType) -> u32 {
    if dtype.is_quantized() {
        4 * LANE_WG
    } else {
        LANE_WG
    }
}

/// Whether the quantized lane-rows kernel assembles x blocks with subgroup
/// broadcasts: that needs one known subgroup size of 4 or at least 8
/// (lavapipe: 8 or 16, SwiftShader: 4).
fn lane_bcast(caps: &crate::gpu::Caps, dtype: DType) -> bool {
    let (min, max) = (caps.subgroup_min_size, caps.subgroup_max_size);
    caps.subgroups && dtype.is_quantized() && min == max && (min == 4 || min >= 8)
}

struct Chunk {
    rows: u32,
    binds: Vec<Option<wgpu::BindGroup>>,
}

pub struct MatMul {
    /// Only the kernels this MatMul may use are built (pipeline compiles are
    /// slow on CPU adapters); see [`MatMul::new_all_kernels`].
    pipelines: Vec<Option<Arc<wgpu::ComputePipeline>>>,
    chunks: Vec<Chunk>,
    coop_rows: u32,
    lane_rows: u32,
    /// Tokens per workgroup of the multi-token lane-rows build.
    lane_tokens: u32,
    cpu_adapter: bool,
    /// The tiled build that prompt rows take: TILED or TILED_F16.
    tiled: usize,
    max_dim: u32,
    experts: Option<u32>,
}

/// The `#if` flag naming a weight format in weight_formats.wgsl, plus its family flags.
pub(crate) fn format_flags(spec: ShaderSpec, dtype: DType) -> ShaderSpec {
    let q4 = matches!(dtype, DType::Q4_0 | DType::Q4_1 | DType::Q4_K);
    let q5 = matches!(dtype, DType::Q5_0 | DType::Q5_1 | DType::Q5_K);
    spec.flag("W_F32", dtype == DType::F32)
        .flag("W_F16", matches!(dtype, DType::F16 | DType::BF16))
        .flag("W_Q8_0", dtype == DType::Q8_0)
        .flag("W_Q4_0", dtype == DType::Q4_0)
        .flag("W_Q4_1", dtype == DType::Q4_1)
        .flag("W_Q4_K", dtype == DType::Q4_K)
        .flag("W_Q6_K", dtype == DType::Q6_K)
        .flag("W_Q5_0", dtype == DType::Q5_0)
        .flag("W_Q5_1", dtype == DType::Q5_1)
        .flag("W_Q5_K", dtype == DType::Q5_K)
        .flag("W_Q5", q5)
        // Values carry their sign and offset: a block is d · (q · x).
        .flag(
            "W_SCALED",
            matches!(dtype, DType::Q8_0 | DType::Q6_K | DType::Q5_0),
        )
        // Which scale array layout (see weight_formats.wgsl).
        .flag("W_SCALE_WORDS", q5 || dtype == DType::Q6_K)
        .flag("W_KSCALES", matches!(dtype, DType::Q4_K | DType::Q5_K))
        .flag(
            "W_OLD_SCALES",
            matches!(dtype, DType::Q8_0 | DType::Q4_0 | DType::Q4_1),
        )
        .flag("W_Q4", q4)
        // The Q4 nibble layout within each 32-element block (Q6_K keeps its low four bits so).
        .flag("W_NIBBLES", q4 || q5 || dtype == DType::Q6_K)
        .flag("W_QUANT", dtype.is_quantized())
        .flag("W_FLOAT", !dtype.is_quantized())
}

/// A bind group with explicit binding numbers (optional bindings leave gaps).
pub(crate) fn bind_numbered(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    entries: &[(u32, &wgpu::Buffer)],
) -> wgpu::BindGroup {
    let layout = pipeline.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry> = entries
        .iter()
        .map(|&(binding, b)| wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        })
        .collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &entries,
    })
}

impl MatMul {
    /// `x` is f32 `[n_tokens, w.cols()]`, `y` is f32 `[n_tokens, w.rows()]`.
    /// Builds the kernels [`MatMulKernel::Auto`] picks on this adapter.
    pub fn new(
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        w: &GpuMatrix,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        opts: MatMulOpts,
    ) -> MatMul {
        Self::build(ctx, [step, step], w, x, y, opts, false)
    }

    /// For [`MatMul::record_rows`]: the matrix-vector kernel reads its rows
    /// from `matvec_step`, the tiled kernel from `tiled_step` (whose
    /// `first_row` says where its rows start).
    pub fn new_split(
        ctx: &GpuContext,
        matvec_step: &wgpu::Buffer,
        tiled_step: &wgpu::Buffer,
        w: &GpuMatrix,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        opts: MatMulOpts,
    ) -> MatMul {
        Self::build(ctx, [matvec_step, tiled_step], w, x, y, opts, false)
    }

    /// [`MatMul::new`] with every kernel built, so [`MatMul::record_with`] can
    /// force any of them (tests, benchmarks).
    pub fn new_all_kernels(
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        w: &GpuMatrix,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        opts: MatMulOpts,
    ) -> MatMul {
        Self::build(ctx, [step, step], w, x, y, opts, true)
    }

    fn build(
        ctx: &GpuContext,
        steps: [&wgpu::Buffer; 2],
        w: &GpuMatrix,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        opts: MatMulOpts,
        all: bool,
    ) -> MatMul {
        debug_assert!(!opts.silu_x || w.cols().is_multiple_of(4));
        let cpu_adapter = ctx.info.device_type == wgpu::DeviceType::Cpu;
        // One row per subgroup; the smallest subgroup size gives the most rows a
        // workgroup can cover (larger subgroups loop over several rows).
        let coop_rows = if ctx.caps.subgroups {
            MATVEC_WG / ctx.caps.subgroup_min_size.clamp(4, MATVEC_WG)
        } else {
            MATVEC_WG / MATVEC_TPR
        };
        let flags = |spec: ShaderSpec| {
            format_flags(spec, w.dtype())
                .flag("BIAS", opts.bias.is_some())
                .flag("ACCUMULATE", opts.accumulate)
                .flag("X_SILU", opts.silu_x)
                .flag("MOE", opts.experts.is_some())
                .flag("X_GATHER", opts.experts.is_some_and(|e| e.gather_x))
        };
        let lane_rows = lane_rows_per_wg(w.dtype());
        let bcast = lane_bcast(&ctx.caps, w.dtype());
        let lane_tokens = if bcast {
            LANE_MAX_TOKENS
        } else {
            LANE_MAX_TOKENS_NO_BCAST
        };
        let matvec_spec = |max_t: u32, lane_form: bool| {
            let (wg, rows) = if lane_form {
                (LANE_WG, lane_rows)
            } else {
                (MATVEC_WG, coop_rows)
            };
            flags(ShaderSpec::new("matvec", MATVEC_SRC))
                .flag("X_VEC4", w.cols().is_multiple_of(4))
                .flag("LANE_ROWS", lane_form)
                .flag("LANE_BCAST", lane_form && bcast)
                .flag("LANE_SG4", ctx.caps.subgroup_min_size == 4)
                .constant("WG", wg)
                .constant("ROWS", rows)
                .constant("TPR", MATVEC_TPR)
                .constant("MAX_T", max_t)
        };
        let (coop, lane) = (all || !cpu_adapter, all || cpu_adapter);
        // On CPU adapters the multi-token lane-rows build beats the tiled
        // kernel for quantized weights at any batch (`cargo bench --bench
        // matmul`: ~11 against ~3.3 GFLOP/s on llvmpipe at 128 tokens, whose
        // workgroup-memory tiles cost a per-lane loop per load), so prompt
        // rows take it too. `bcast` implies quantized weights: float weights
        // stay tiled (the lane form is 3-4x slower there).
        let lane_prompts = cpu_adapter && bcast;
        let tiled_f16 = ctx.caps.tiled_f16;
        let tiled_spec = |f16_math: bool| {
            flags(ShaderSpec::new("matmul_tiled", TILED_SRC))
                .flag("X_VEC4", w.cols().is_multiple_of(4))
                .flag("TILE_F16", f16_math)
        };
        let pipelines = vec![
            coop.then(|| ctx.pipeline(&matvec_spec(1, false))),
            coop.then(|| ctx.pipeline(&matvec_spec(MATVEC_MAX_TOKENS, false))),
            lane.then(|| ctx.pipeline(&matvec_spec(1, true))),
            lane.then(|| ctx.pipeline(&matvec_spec(lane_tokens, true))),
            (all || !(lane_prompts || tiled_f16)).then(|| ctx.pipeline(&tiled_spec(false))),
            lane_prompts.then(|| ctx.pipeline(&matvec_spec(lane_tokens, true))),
            (lane && lane_tokens > 2).then(|| ctx.pipeline(&matvec_spec(2, true))),
            (lane && lane_tokens > 4).then(|| ctx.pipeline(&matvec_spec(4, true))),
            (ctx.caps.f16 && (all || (tiled_f16 && !lane_prompts)))
                .then(|| ctx.pipeline(&tiled_spec(true))),
        ];
        let chunks = w
            .chunks()
            .iter()
            .map(|c| {
                let base = Params {
                    rows: c.rows,
                    cols: w.cols() as u32,
                    row_offset: opts.out_offset + c.row_start,
                    y_stride: opts.out_stride.unwrap_or(w.rows() as u32),
                    row_words: w.row_words() as u32,
                    e_first: 0,
                    e_count: 0,
                    tiles: 0,
                    src: 0,
                    _p: [0; 3],
                };
                // [generated rows, prompt rows]: expert matrices read their
                // class's tile list; other matrices share one uniform.
                let params = match opts.experts {
                    Some(e) => {
                        let rpe = e.rows_per_expert;
                        debug_assert!(c.row_start % rpe == 0 && c.rows % rpe == 0);
                        let p = |tiles| Params {
                            rows: rpe,
                            row_offset: opts.out_offset,
                            y_stride: opts.out_stride.unwrap_or(rpe),
                            e_first: c.row_start / rpe,
                            e_count: c.rows / rpe,
                            tiles,
                            src: e.layout.src,
                            ..base
                        };
                        [
                            ctx.uniform("matmul.params", &p(e.layout.gen_tiles)),
                            ctx.uniform("matmul.params", &p(e.layout.prompt_tiles)),
                        ]
                    }
                    None => {
                        let p = ctx.uniform("matmul.params", &base);
                        [p.clone(), p]
                    }
                };
                let mut entries = vec![(0, steps[0]), (1, &params[0]), (2, x), (3, y), (5, &c.qs)];
                if let Some(b) = opts.bias {
                    entries.push((4, b));
                }
                if let Some(s) = &c.scales {
                    entries.push((6, s));
                }
                if let Some(e) = &opts.experts {
                    entries.push((7, e.route));
                }
                let binds = pipelines
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        p.as_ref().map(|p| {
                            let prompt_rows =
                                usize::from(matches!(i, TILED | TILED_F16 | LANE_PROMPT));
                            entries[0].1 = steps[prompt_rows];
                            entries[1].1 = &params[prompt_rows];
                            // Expert kernels take their rows from the route, not the step.
                            let skip = usize::from(opts.experts.is_some());
                            bind_numbered(ctx, p, &entries[skip..])
                        })
                    })
                    .collect();
                Chunk {
                    rows: match opts.experts {
                        Some(e) => e.rows_per_expert,
                        None => c.rows,
                    },
                    binds,
                }
            })
            .collect();
        MatMul {
            pipelines,
            chunks,
            coop_rows,
            lane_rows,
            lane_tokens,
            cpu_adapter,
            tiled: if tiled_f16 { TILED_F16 } else { TILED },
            max_dim: ctx.caps.max_workgroups_per_dim,
            experts: opts.experts.map(|e| e.experts),
        }
    }

    /// The tile heights (grouped positions per workgroup) the expert
    /// kernels take for generated rows and for prompt rows: what
    /// [`crate::gpu::kernels::moe_group::MoeGroup`] must cut tiles to (at
    /// most; smaller tiles are fine).
    pub fn expert_tiles(&self) -> (u32, u32) {
        self.expert_forms(MatMulKernel::Auto, false).2
    }

    /// [`MatMul::expert_tiles`] of the forms [`MatMul::record_experts_with`] takes for `kernel`.
    pub fn expert_tiles_for(&self, kernel: MatMulKernel) -> (u32, u32) {
        self.expert_forms(kernel, false).2
    }

    /// (generated rows' pipeline and rows per workgroup, prompt rows'
    /// pipeline and rows per workgroup, their tile heights) for `kernel`:
    /// `Auto` is the adapter's pair; `MatVec`/`Tiled`/`TiledF16` the GPU
    /// forms (cooperative matrix-vector and that tiled build);
    /// `MatVecLaneRows` the CPU-adapter forms.
    fn expert_forms(
        &self,
        kernel: MatMulKernel,
        one_gen: bool,
    ) -> ((usize, u32), (usize, u32), (u32, u32)) {
        let lane_gen = match kernel {
            MatMulKernel::Auto => self.cpu_adapter,
            MatMulKernel::MatVecLaneRows => true,
            _ => false,
        };
        let gen = match (lane_gen, one_gen) {
            (true, true) => (LANE1, self.lane_rows),
            (true, false) => (LANE, self.lane_rows),
            (false, true) => (COOP1, self.coop_rows),
            (false, false) => (COOP, self.coop_rows),
        };
        let prompt = match kernel {
            MatMulKernel::Auto | MatMulKernel::MatVecLaneRows if self.lane_prompts() => {
                (LANE_PROMPT, self.lane_rows)
            }
            MatMulKernel::Auto => (self.tiled, TILE_ROWS),
            MatMulKernel::TiledF16 if self.pipelines[TILED_F16].is_some() => (TILED_F16, TILE_ROWS),
            _ if self.pipelines[TILED].is_some() => (TILED, TILE_ROWS),
            _ => (TILED_F16, TILE_ROWS),
        };
        let gen_t = if lane_gen {
            self.lane_tokens
        } else {
            MATVEC_MAX_TOKENS
        };
        let prompt_t = if prompt.0 == LANE_PROMPT {
            self.lane_tokens
        } else {
            TILE_TOKENS
        };
        (gen, prompt, (gen_t, prompt_t))
    }

    /// Records an expert matrix (built with [`MatMulOpts::experts`]) over a
    /// step's grouped assignments: `gen` generated rows and `prompt` prompt
    /// rows, `k` experts each, tiles cut to `tiles` (see
    /// [`MatMul::expert_tiles`]). Generated rows take the matrix-vector
    /// kernel and prompt rows the prompt kernel, as in
    /// [`MatMul::record_rows`], so a row's sums never depend on the batch.
    pub fn record_experts(
        &self,
        pass: &mut wgpu::ComputePass,
        gen: u32,
        prompt: u32,
        k: u32,
        tiles: (u32, u32),
    ) {
        self.record_experts_with(pass, gen, prompt, k, tiles, MatMulKernel::Auto);
    }

    /// [`MatMul::record_experts`] with the forms of `kernel` (tests and
    /// benchmarks; build with [`MatMul::new_all_kernels`] and cut tiles
    /// to [`MatMul::expert_tiles_for`]).
    pub fn record_experts_with(
        &self,
        pass: &mut wgpu::ComputePass,
        gen: u32,
        prompt: u32,
        k: u32,
        tiles: (u32, u32),
        kernel: MatMulKernel,
    ) {
        use crate::gpu::kernels::moe_group::tile_bound;
        let experts = self.experts.expect("record_experts on an expert matrix");
        // One generated row meets each expert once: the 1-token builds.
        let (g, p, _) = self.expert_forms(kernel, gen == 1);
        self.dispatch(pass, g.0, g.1, tile_bound(gen * k, tiles.0, experts));
        self.dispatch(pass, p.0, p.1, tile_bound(prompt * k, tiles.1, experts));
    }

    /// Whether this matrix takes the CPU adapters' forms (one row per lane).
    pub fn cpu_adapter(&self) -> bool {
        self.cpu_adapter
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32) {
        self.record_with(pass, n_tokens, MatMulKernel::Auto);
    }

    /// Batch-invariant recording for a step whose first `n_matvec` rows are
    /// generated tokens and whose other rows (up to `n_tokens`) are prompt
    /// tokens: the former always go through the matrix-vector kernel, the
    /// latter through the tiled one (through the lane-rows one where
    /// [`MatMul::lane_prompts`]), whatever else is in the step, so each
    /// row's sums are computed in the same order whether its sequence runs
    /// alone or in a batch. A lone generated row takes the 1-token build of
    /// the kernel (the multi-token build is slower for one row on llvmpipe);
    /// both accumulate each row in the same order, which
    /// tests/batch_invariance.rs checks bit for bit. Built with [`MatMul::new_split`];
    /// the steps must say `{n_tokens: n_matvec}` and
    /// `{n_tokens, first_row: n_matvec}`.
    pub fn record_rows(&self, pass: &mut wgpu::ComputePass, n_matvec: u32, n_tokens: u32) {
        let (form, rows_per_wg, tokens_per_wg) = match (self.cpu_adapter, n_matvec == 1) {
            (true, _) => {
                let (form, tokens) = self.lane_build(n_matvec);
                (form, self.lane_rows, tokens)
            }
            (false, true) => (COOP1, self.coop_rows, 1),
            (false, false) => (COOP, self.coop_rows, MATVEC_MAX_TOKENS),
        };
        self.dispatch(pass, form, rows_per_wg, n_matvec.div_ceil(tokens_per_wg));
        let prompt = n_tokens.saturating_sub(n_matvec);
        if self.pipelines[LANE_PROMPT].is_some() {
            let z = prompt.div_ceil(self.lane_tokens);
            self.dispatch(pass, LANE_PROMPT, self.lane_rows, z);
        } else {
            self.dispatch(pass, self.tiled, TILE_ROWS, prompt.div_ceil(TILE_TOKENS));
        }
    }

    /// The lane-rows build for `n` tokens and the tokens each workgroup takes.
    fn lane_build(&self, n: u32) -> (usize, u32) {
        let has = |i: usize| self.pipelines[i].is_some();
        match n {
            0 | 1 => (LANE1, 1),
            2 if has(LANE2) => (LANE2, 2),
            3 | 4 if has(LANE4) => (LANE4, 4),
            _ => (LANE, self.lane_tokens),
        }
    }

    /// Whether prompt rows go through the lane-rows kernel (CPU adapters,
    /// quantized weights) rather than the tiled one.
    pub fn lane_prompts(&self) -> bool {
        self.pipelines[LANE_PROMPT].is_some()
    }

    fn dispatch(&self, pass: &mut wgpu::ComputePass, which: usize, rows_per_wg: u32, z: u32) {
        if z == 0 {
            return;
        }
        let Some(pipeline) = &self.pipelines[which] else {
            return;
        };
        pass.set_pipeline(pipeline);
        let z = z.min(self.max_dim);
        for c in &self.chunks {
            let (x, y) = grid(c.rows.div_ceil(rows_per_wg), self.max_dim);
            if let Some(bind) = &c.binds[which] {
                pass.set_bind_group(0, bind, &[]);
                pass.dispatch_workgroups(x, y, z);
            }
        }
    }

    /// [`MatMul::record`] with the kernel choice forced (tests and benchmarks); a
    /// form that was not built (see [`MatMul::new_all_kernels`]; the f16
    /// tiled form needs shader-f16) falls back to its sibling that was.
    pub fn record_with(&self, pass: &mut wgpu::ComputePass, n_tokens: u32, kernel: MatMulKernel) {
        if n_tokens == 0 {
            return;
        }
        let built = |i: usize| self.pipelines[i].is_some();
        // The adapter's matrix-vector form (the other is built only for tests).
        let matvec = if self.cpu_adapter {
            MatMulKernel::MatVecLaneRows
        } else {
            MatMulKernel::MatVec
        };
        let kernel = match kernel {
            MatMulKernel::Auto if n_tokens > MATVEC_MAX_TOKENS && !self.lane_prompts() => {
                if self.tiled == TILED_F16 {
                    MatMulKernel::TiledF16
                } else {
                    MatMulKernel::Tiled
                }
            }
            MatMulKernel::Auto => matvec,
            MatMulKernel::MatVec if !built(COOP) => MatMulKernel::MatVecLaneRows,
            MatMulKernel::MatVecLaneRows if !built(LANE) => MatMulKernel::MatVec,
            MatMulKernel::TiledF16 if !built(TILED_F16) && built(TILED) => MatMulKernel::Tiled,
            MatMulKernel::Tiled if !built(TILED) && built(TILED_F16) => MatMulKernel::TiledF16,
            MatMulKernel::Tiled | MatMulKernel::TiledF16 if !built(TILED) && !built(TILED_F16) => {
                matvec
            }
            k => k,
        };
        let one = n_tokens == 1;
        let (which, rows_per_wg, tokens_per_wg) = match kernel {
            MatMulKernel::Tiled => (TILED, TILE_ROWS, TILE_TOKENS),
            MatMulKernel::TiledF16 => (TILED_F16, TILE_ROWS, TILE_TOKENS),
            MatMulKernel::MatVecLaneRows => {
                let (form, tokens) = self.lane_build(n_tokens);
                (form, self.lane_rows, tokens)
            }
            _ if one => (COOP1, self.coop_rows, 1),
            _ => (COOP, self.coop_rows, MATVEC_MAX_TOKENS),
        };
        self.dispatch(pass, which, rows_per_wg, n_tokens.div_ceil(tokens_per_wg));
    }
}

/// CPU reference: `y[t, r] = sum_k w[r, k] x[t, k]` for row-major `w` `[rows, cols]`
/// and `x` `[n_tokens, cols]`; `y` is `[n_tokens, rows]`.
pub fn matmul_ref(w: &[f32], rows: usize, cols: usize, x: &[f32], n_tokens: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n_tokens * rows];
    for t in 0..n_tokens {
        let xt = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            y[t * rows + r] = wr
                .iter()
                .zip(xt)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum::<f64>() as f32;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::shader::render;

    /// Every lane-rows variant parses and validates, including the 4-lane
    /// broadcast form that no adapter here runs (SwiftShader's subgroup size).
    #[test]
    fn lane_rows_variants_validate() {
        for dtype in [
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q4_K,
            DType::F16,
        ] {
            for (bcast, sg4) in [(false, false), (true, false), (true, true)] {
                if bcast && !dtype.is_quantized() {
                    continue;
                }
                for max_t in [1, LANE_MAX_TOKENS] {
                    let spec = format_flags(ShaderSpec::new("matvec", MATVEC_SRC), dtype)
                        .flag("X_VEC4", true)
                        .flag("LANE_ROWS", true)
                        .flag("LANE_BCAST", bcast)
                        .flag("LANE_SG4", sg4)
                        .constant("WG", LANE_WG)
                        .constant("ROWS", lane_rows_per_wg(dtype))
                        .constant("TPR", MATVEC_TPR)
                        .constant("MAX_T", max_t);
                    let src = render(&spec, false, true);
                    let what = format!("{dtype:?} bcast={bcast} sg4={sg4} max_t={max_t}");
                    let module = naga::front::wgsl::parse_str(&src)
                        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
                    naga::valid::Validator::new(
                        naga::valid::ValidationFlags::all(),
                        naga::valid::Capabilities::all(),
                    )
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{what}: {e:?}"));
                }
            }
        }
    }
}

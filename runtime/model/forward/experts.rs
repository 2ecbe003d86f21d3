//! A sparse (mixture-of-experts) feed-forward block on the GPU: the router
//! picks each row's experts, the grouping sorts the step's assignments by
//! expert, the stacked expert matrices run over those groups (each selected
//! expert's weights read once per step, unselected ones not at all), and
//! the combine adds the weighted results, and Qwen2-MoE's gated shared
//! expert, to the residual. No routing decision goes back to the CPU.

use std::borrow::Cow;

use super::activations::MoeActivations;
use super::layer::LayerWiring;
use super::load::f32_buffer;
use super::record::OpVisitor;
use crate::gpu::kernels::matmul::{ExpertOpts, MatMul, MatMulOpts};
use crate::gpu::kernels::moe_combine::{MoeCombine, SharedExpertIo};
use crate::gpu::kernels::moe_group::MoeGroup;
use crate::gpu::kernels::moe_router::MoeRouter;
use crate::gpu::weights::GpuMatrix;
use crate::model::config::names;
use crate::model::projection::{stored_form, Projection, ProjectionIo};
use crate::model::WeightSource;
use crate::types::HostTensor;
use crate::{HearthError, Result};

/// Qwen2-MoE's always-on expert.
struct SharedExpert {
    gate_up: Projection,
    down: Projection,
    /// `[hidden]`: the gate whose sigmoid scales the shared expert's output.
    gate: wgpu::Buffer,
}

pub(super) struct ExpertFfn {
    _router_w: wgpu::Buffer,
    router: MoeRouter,
    group: MoeGroup,
    gate_up_w: GpuMatrix,
    gate_up: MatMul,
    down_w: GpuMatrix,
    down: MatMul,
    shared: Option<SharedExpert>,
    combine: MoeCombine,
    experts: u32,
    k: u32,
    /// Tile heights of the generated and the prompt rows' groups.
    tiles: (u32, u32),
}

/// Expert `x`'s rows of a stacked `[experts, rows, cols]` tensor.
fn expert_slices<'a>(t: &'a HostTensor, experts: usize) -> Result<Vec<HostTensor<'a>>> {
    let (rows, cols) = t.rows_cols();
    let per = rows / experts;
    let row_bytes = t.dtype.bytes_for(cols)?;
    if t.data.len() < rows * row_bytes {
        return Err(HearthError::InvalidFile(format!(
            "`{}`: {} bytes of data, {} needed for {:?} {}",
            t.name,
            t.data.len(),
            rows * row_bytes,
            t.shape,
            t.dtype.name()
        )));
    }
    Ok((0..experts)
        .map(|x| HostTensor {
            name: format!("{}[{x}]", t.name),
            dtype: t.dtype,
            shape: vec![per, cols],
            data: Cow::Borrowed(&t.data[x * per * row_bytes..(x + 1) * per * row_bytes]),
        })
        .collect())
}

impl ExpertFfn {
    pub fn load(w: &LayerWiring, src: &dyn WeightSource, i: usize) -> Result<ExpertFfn> {
        let (ctx, c, act) = (w.ctx, w.config, w.act);
        let m = c.moe.as_ref().expect("a sparse layer of a MoE model");
        let acts: &MoeActivations = act.moe.as_ref().expect("MoE activations");
        let (e, k, f, h) = (
            m.num_experts,
            m.experts_per_token,
            m.expert_intermediate_size,
            c.hidden_size,
        );
        let n = |s: &str| names::blk(i, s);
        // SwiGLU is fused into the down projections' x loads, which read whole vec4s.
        for (what, width) in [
            ("expert", Some(f)),
            ("shared expert", m.shared_expert_intermediate_size),
        ] {
            if let Some(width) = width.filter(|w| !w.is_multiple_of(4)) {
                return Err(HearthError::Unsupported(format!(
                    "MoE {what} width {width} on the GPU (it must be a multiple of 4)"
                )));
            }
        }
        let router_t = src.tensor(&n("ffn_gate_inp.weight"))?;
        router_t.expect_shape(&[e, h])?;
        let router_w = ctx.buffer_from(&router_t.name, &router_t.to_f32()?);
        drop(router_t);
        let router = MoeRouter::new(
            ctx,
            &w.batch.step,
            &act.xn,
            &router_w,
            &acts.ids,
            &acts.weights,
            h as u32,
            e as u32,
            k as u32,
            m.norm_topk_prob,
        )?;

        let gate = src.tensor(&n("ffn_gate_exps.weight"))?;
        let up = src.tensor(&n("ffn_up_exps.weight"))?;
        gate.expect_shape(&[e, f, h])?;
        up.expect_shape(&[e, f, h])?;
        let form = stored_form(gate.dtype, w.dtype);
        if stored_form(up.dtype, w.dtype) != form {
            return Err(HearthError::Unsupported(format!(
                "layer {i}: gate experts stored as {} and up experts as {} (the GPU fuses them per expert, so they need one form)",
                gate.dtype.name(),
                up.dtype.name()
            )));
        }
        // Expert x's gate rows then its up rows, expert after expert.
        let parts: Vec<HostTensor> = expert_slices(&gate, e)?
            .into_iter()
            .zip(expert_slices(&up, e)?)
            .flat_map(|(g, u)| [g, u])
            .collect();
        let gate_up_w =
            GpuMatrix::upload_grouped(ctx, &n("ffn_gate_up_exps"), &parts, Some(form), 2 * f)?;
        drop(parts);
        drop((gate, up));
        let down_t = src.tensor(&n("ffn_down_exps.weight"))?;
        down_t.expect_shape(&[e, h, f])?;
        let down_form = stored_form(down_t.dtype, w.dtype);
        let down_w = GpuMatrix::upload_grouped(
            ctx,
            &n("ffn_down_exps.weight"),
            &[down_t],
            Some(down_form),
            h,
        )?;

        let ex = |rows_per_expert: usize, gather_x: bool| ExpertOpts {
            route: &acts.route,
            layout: acts.layout,
            rows_per_expert: rows_per_expert as u32,
            experts: e as u32,
            gather_x,
        };
        let [mv_step, tiled_step] = w.mm_steps;
        let gate_up = MatMul::new_split(
            ctx,
            mv_step,
            tiled_step,
            &gate_up_w,
            &act.xn,
            &acts.gate_up,
            MatMulOpts {
                experts: Some(ex(2 * f, true)),
                ..Default::default()
            },
        );
        let down = MatMul::new_split(
            ctx,
            mv_step,
            tiled_step,
            &down_w,
            &acts.gate_up,
            &acts.down,
            MatMulOpts {
                silu_x: true,
                experts: Some(ex(h, false)),
                ..Default::default()
            },
        );
        let (a, b) = (gate_up.expert_tiles(), down.expert_tiles());
        let tiles = (a.0.min(b.0), a.1.min(b.1));
        let group = MoeGroup::new(
            ctx,
            &w.batch.step,
            mv_step,
            &acts.ids,
            &acts.route,
            acts.layout,
            e as u32,
            k as u32,
            tiles,
        )?;
        let shared = match (m.shared_expert_intermediate_size, &acts.shared_out) {
            (Some(_), Some(out)) => Some(Self::load_shared(w, src, i, out)?),
            _ => None,
        };
        let combine = MoeCombine::new(
            ctx,
            &w.batch.step,
            &act.x,
            &acts.route,
            acts.layout,
            &acts.weights,
            &acts.down,
            shared.as_ref().map(|s| SharedExpertIo {
                xn: &act.xn,
                gate: &s.gate,
                out: acts.shared_out.as_ref().expect("shared expert output"),
            }),
            h as u32,
            k as u32,
        );
        Ok(ExpertFfn {
            _router_w: router_w,
            router,
            group,
            gate_up_w,
            gate_up,
            down_w,
            down,
            shared,
            combine,
            experts: e as u32,
            k: k as u32,
            tiles,
        })
    }

    fn load_shared(
        w: &LayerWiring,
        src: &dyn WeightSource,
        i: usize,
        out: &wgpu::Buffer,
    ) -> Result<SharedExpert> {
        let (ctx, act) = (w.ctx, w.act);
        let t = |s: &str| src.tensor(&names::blk(i, s));
        let io = |x, y, silu_x| ProjectionIo {
            matvec_step: &w.mm_steps[0],
            tiled_step: &w.mm_steps[1],
            x,
            y,
            bias: None,
            accumulate: false,
            silu_x,
        };
        let gate_up = Projection::new(
            ctx,
            &names::blk(i, "ffn_gate_up_shexp"),
            vec![t("ffn_gate_shexp.weight")?, t("ffn_up_shexp.weight")?],
            w.dtype,
            &io(&act.xn, &act.gate_up, false),
        )?;
        let down = Projection::new(
            ctx,
            &names::blk(i, "ffn_down_shexp"),
            vec![t("ffn_down_shexp.weight")?],
            w.dtype,
            &io(&act.gate_up, out, true),
        )?;
        let h = w.config.hidden_size;
        let gate = f32_buffer(ctx, src, &names::blk(i, "ffn_gate_inp_shexp.weight"), h)?;
        Ok(SharedExpert {
            gate_up,
            down,
            gate,
        })
    }

    /// Bytes every token reads: the router (f32), the shared expert and its gate.
    fn always_read_bytes(&self) -> u64 {
        let hidden = self.gate_up_w.cols() as u64;
        let shared = self.shared.as_ref().map_or(0, |s| {
            s.gate_up.gpu_bytes() + s.down.gpu_bytes() + hidden * 4
        });
        self.experts as u64 * hidden * 4 + shared
    }

    /// Bytes of weights one decoded token reads: [`Self::always_read_bytes`]
    /// and `k` of the experts.
    pub fn active_weight_bytes(&self) -> u64 {
        let per_expert =
            (self.gate_up_w.gpu_bytes() + self.down_w.gpu_bytes()) / self.experts as u64;
        self.always_read_bytes() + self.k as u64 * per_expert
    }

    /// Bytes of all the block's weights.
    pub fn total_weight_bytes(&self) -> u64 {
        self.always_read_bytes() + self.gate_up_w.gpu_bytes() + self.down_w.gpu_bytes()
    }

    /// The block's dispatches: `n` rows, the first `g` generated tokens.
    pub fn for_each_op(&self, n: u32, g: u32, f: &mut OpVisitor) {
        let (k, tiles) = (self.k, self.tiles);
        f("moe.router", &|p| self.router.record(p, n));
        f("moe.group", &|p| self.group.record(p, n));
        f("matmul.experts_gate_up", &|p| {
            self.gate_up.record_experts(p, g, n - g, k, tiles)
        });
        f("matmul.experts_down", &|p| {
            self.down.record_experts(p, g, n - g, k, tiles)
        });
        if let Some(s) = &self.shared {
            f("matmul.shared_gate_up", &|p| s.gate_up.record(p, g, n));
            f("matmul.shared_down", &|p| s.down.record(p, g, n));
        }
        f("moe.combine", &|p| self.combine.record(p, n));
    }
}

/// Activation widths a MoE model adds (see [`MoeActivations`]).
pub(super) fn moe_activations(
    ctx: &crate::gpu::GpuContext,
    c: &crate::model::ModelConfig,
    rows: u32,
) -> Result<Option<MoeActivations>> {
    let Some(m) = &c.moe else {
        return Ok(None);
    };
    let k = m.experts_per_token as u32;
    let layout = crate::gpu::kernels::moe_group::RouteLayout::new(rows, k, m.num_experts as u32)?;
    let a = rows as u64 * k as u64;
    // Each of these is one binding: the widest must fit the adapter's limit.
    let widest = a * (2 * m.expert_intermediate_size).max(c.hidden_size) as u64 * 4;
    if widest > ctx.caps.max_binding {
        return Err(HearthError::Config(format!(
            "{rows} rows per step × {k} experts need {widest} bytes of expert activations in one binding, more than the adapter's {} (lower max_step_tokens)",
            ctx.caps.max_binding
        )));
    }
    let f32s = |label: &str, n: u64| ctx.buffer_zeroed(label, n.max(1) * 4);
    Ok(Some(MoeActivations {
        ids: f32s("moe.ids", a),
        weights: f32s("moe.weights", a),
        route: f32s("moe.route", layout.words as u64),
        layout,
        gate_up: f32s("moe.gate_up", a * 2 * m.expert_intermediate_size as u64),
        down: f32s("moe.down", a * c.hidden_size as u64),
        shared_out: m
            .shared_expert_intermediate_size
            .map(|_| f32s("moe.shared", rows as u64 * c.hidden_size as u64)),
    }))
}

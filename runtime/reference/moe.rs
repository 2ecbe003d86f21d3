//! The reference's mixture-of-experts feed-forward block, written as
//! transformers' Mixtral/Qwen2-MoE/Qwen3-MoE blocks compute it: a softmax
//! over all experts' router logits, the top-k experts per row, optionally
//! renormalised, each selected expert's SwiGLU MLP weighted by its
//! probability and summed; Qwen2-MoE adds a shared expert scaled by
//! `sigmoid(gate · x)`.

use super::ops::matmul_ref_rows;
use super::{load, silu_mul};
use crate::model::config::names;
use crate::model::moe::MoeConfig;
use crate::model::WeightSource;
use crate::Result;

/// The experts a row is routed to, best first, with their weights: the
/// softmax over all experts' logits, the top `k`, renormalised to sum to
/// one when `norm_topk_prob`.
///
/// Experts are ranked by logit (the softmax keeps the order) and exact ties
/// go to the lower expert index. transformers leaves tie order to
/// `torch.topk`, whose CPU kernel does not define it (eight equal
/// probabilities come back as experts 6 and 5); a fixed rule keeps routing
/// deterministic and independent of the batch, and the GPU router
/// (`shaders/moe_router.wgsl`) follows the same one.
pub fn route_ref(router_logits: &[f32], k: usize, norm_topk_prob: bool) -> Vec<(usize, f32)> {
    let max = router_logits
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = router_logits.iter().map(|&l| (l - max).exp()).sum();
    let mut order: Vec<usize> = (0..router_logits.len()).collect();
    order.sort_by(|&a, &b| {
        router_logits[b]
            .total_cmp(&router_logits[a])
            .then(a.cmp(&b))
    });
    let mut ranked: Vec<(usize, f32)> = order
        .into_iter()
        .take(k)
        .map(|e| (e, (router_logits[e] - max).exp() / z))
        .collect();
    if norm_topk_prob {
        let s: f32 = ranked.iter().map(|r| r.1).sum();
        ranked.iter_mut().for_each(|r| r.1 /= s);
    }
    ranked
}

struct SharedExpert {
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
    /// `[hidden]`: the row of the `[1, hidden]` gate that scales its output.
    gate_inp: Vec<f32>,
    width: usize,
}

/// One sparse layer's weights, all dequantized to f32.
pub(super) struct MoeFfn {
    router: Vec<f32>,
    /// Stacked `[experts, ffn, hidden]` (gate, up) and `[experts, hidden, ffn]` (down).
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
    shared: Option<SharedExpert>,
    cfg: MoeConfig,
    hidden: usize,
}

impl MoeFfn {
    pub(super) fn load(
        src: &dyn WeightSource,
        l: usize,
        moe: &MoeConfig,
        h: usize,
    ) -> Result<Self> {
        let (e, f) = (moe.num_experts, moe.expert_intermediate_size);
        let n = |w: &str| names::blk(l, w);
        let shared = match moe.shared_expert_intermediate_size {
            Some(s) => Some(SharedExpert {
                gate: load(src, &n("ffn_gate_shexp.weight"), &[s, h])?,
                up: load(src, &n("ffn_up_shexp.weight"), &[s, h])?,
                down: load(src, &n("ffn_down_shexp.weight"), &[h, s])?,
                gate_inp: load(src, &n("ffn_gate_inp_shexp.weight"), &[h])?,
                width: s,
            }),
            None => None,
        };
        Ok(MoeFfn {
            router: load(src, &n("ffn_gate_inp.weight"), &[e, h])?,
            gate: load(src, &n("ffn_gate_exps.weight"), &[e, f, h])?,
            up: load(src, &n("ffn_up_exps.weight"), &[e, f, h])?,
            down: load(src, &n("ffn_down_exps.weight"), &[e, h, f])?,
            shared,
            cfg: moe.clone(),
            hidden: h,
        })
    }

    /// The block's output for every `hidden`-wide row of `xn` (the
    /// post-attention-normed activations); the caller adds it to the residual.
    pub(super) fn forward(&self, xn: &[f32]) -> Vec<f32> {
        let (h, f, e) = (
            self.hidden,
            self.cfg.expert_intermediate_size,
            self.cfg.num_experts,
        );
        let logits = matmul_ref_rows(&self.router, e, h, xn);
        let mut out = vec![0f32; xn.len()];
        for ((x, lg), y) in xn.chunks(h).zip(logits.chunks(e)).zip(out.chunks_mut(h)) {
            let mut picks = route_ref(lg, self.cfg.experts_per_token, self.cfg.norm_topk_prob);
            // transformers adds the experts' outputs in expert order.
            picks.sort_by_key(|p| p.0);
            for (ex, w) in picks {
                let m = f * h;
                let d = mlp(
                    &self.gate[ex * m..(ex + 1) * m],
                    &self.up[ex * m..(ex + 1) * m],
                    &self.down[ex * m..(ex + 1) * m],
                    f,
                    h,
                    x,
                );
                y.iter_mut().zip(&d).for_each(|(a, b)| *a += w * b);
            }
            if let Some(s) = &self.shared {
                let d = mlp(&s.gate, &s.up, &s.down, s.width, h, x);
                let g: f32 = s.gate_inp.iter().zip(x).map(|(a, b)| a * b).sum();
                let g = 1.0 / (1.0 + (-g).exp());
                y.iter_mut().zip(&d).for_each(|(a, b)| *a += g * b);
            }
        }
        out
    }
}

/// `down · (silu(gate · x) * (up · x))` for the rows of `x`.
fn mlp(gate: &[f32], up: &[f32], down: &[f32], f: usize, h: usize, x: &[f32]) -> Vec<f32> {
    let g = matmul_ref_rows(gate, f, h, x);
    let u = matmul_ref_rows(up, f, h, x);
    matmul_ref_rows(down, h, f, &silu_mul(&g, &u))
}

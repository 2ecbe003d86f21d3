//! Groups a step's expert assignments by expert on the GPU
//! (`shaders/moe_group.wgsl`): the positions, source rows and tiles that
//! the expert matmuls ([`crate::gpu::kernels::matmul::ExpertOpts`]) and the
//! combine ([`crate::gpu::kernels::moe_combine`]) read. Its CPU oracle is
//! [`group_ref`].

use bytemuck::{Pod, Zeroable};

use super::moe_router::MAX_ROUTER_EXPERTS;
use crate::gpu::{GpuContext, ShaderSpec};
use crate::{HearthError, Result};

const SRC: &str = include_str!("../../../shaders/moe_group.wgsl");

/// Where each part of the route buffer starts, in u32 words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLayout {
    /// Generated rows' tile list: its count, 3 spare words, then 4 words a tile.
    pub gen_tiles: u32,
    pub prompt_tiles: u32,
    /// The row of the assignment at each grouped position.
    pub src: u32,
    /// The grouped position of each assignment `t * k + j`.
    pub pos: u32,
    pub words: u32,
}

impl RouteLayout {
    /// For steps of up to `max_rows` rows, `k` experts each, out of `experts`.
    pub fn new(max_rows: u32, k: u32, experts: u32) -> Result<RouteLayout> {
        let a = max_rows as u64 * k as u64;
        // A tile holds at least one assignment, and all but one tile per
        // expert are full: at most a / t + min(experts, a) tiles for any t.
        let cap = a + a.min(experts as u64);
        let list = 4 + 4 * cap;
        let words = 2 * list + 2 * a;
        if words > (u32::MAX / 4) as u64 {
            return Err(HearthError::Config(format!(
                "{max_rows} rows × {k} experts per token is too many for one step's expert routing"
            )));
        }
        Ok(RouteLayout {
            gen_tiles: 0,
            prompt_tiles: list as u32,
            src: 2 * list as u32,
            pos: (2 * list + a) as u32,
            words: words as u32,
        })
    }
}

/// The most tiles `assignments` can make with tiles of height `t` over
/// `experts` experts (what a dispatch over a tile list must cover).
pub fn tile_bound(assignments: u32, t: u32, experts: u32) -> u32 {
    (assignments / t.max(1) + assignments.min(experts)).min(assignments)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    experts: u32,
    k: u32,
    t_gen: u32,
    t_prompt: u32,
}

pub struct MoeGroup {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
}

impl MoeGroup {
    /// Groups `ids` (`[rows, k]`, the router's picks) into `route` (laid
    /// out as `layout`). `step` holds the step's rows, `gen_step` the
    /// generated rows among them (they come first); generated rows make
    /// tiles of `t_gen` positions, prompt rows of `t_prompt`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        gen_step: &wgpu::Buffer,
        ids: &wgpu::Buffer,
        route: &wgpu::Buffer,
        layout: RouteLayout,
        experts: u32,
        k: u32,
        tiles: (u32, u32),
    ) -> Result<MoeGroup> {
        if experts == 0 || experts > MAX_ROUTER_EXPERTS || k == 0 || k > experts {
            return Err(HearthError::Unsupported(format!(
                "expert grouping of top-{k} of {experts} experts (up to {MAX_ROUTER_EXPERTS})"
            )));
        }
        let wg = experts.next_power_of_two().max(32);
        let spec = ShaderSpec::new("moe_group", SRC)
            .constant("WG", wg)
            .constant("GEN_TILES", layout.gen_tiles)
            .constant("PROMPT_TILES", layout.prompt_tiles)
            .constant("SRC", layout.src)
            .constant("POS", layout.pos);
        let pipeline = ctx.pipeline(&spec);
        let params = ctx.uniform(
            "moe_group.params",
            &Params {
                experts,
                k,
                t_gen: tiles.0.max(1),
                t_prompt: tiles.1.max(1),
            },
        );
        let bind = ctx.bind_group(&pipeline, &[step, gen_step, &params, ids, route]);
        Ok(MoeGroup { pipeline, bind })
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass, n_tokens: u32) {
        if n_tokens == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
}

/// What [`group_ref`] computes: the route buffer's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// Source row of each grouped position.
    pub src: Vec<u32>,
    /// Grouped position of each assignment.
    pub pos: Vec<u32>,
    /// `(expert, first position, rows)` per tile.
    pub gen_tiles: Vec<[u32; 3]>,
    pub prompt_tiles: Vec<[u32; 3]>,
}

/// CPU reference of the grouping: assignments of the first `n_gen` rows,
/// then of the others, each ordered by expert and then by row, cut into
/// tiles of `t_gen` and `t_prompt` positions.
pub fn group_ref(ids: &[u32], k: usize, n_gen: usize, tiles: (u32, u32)) -> Grouping {
    let n = ids.len() / k;
    let mut g = Grouping {
        src: vec![0; ids.len()],
        pos: vec![0; ids.len()],
        gen_tiles: Vec::new(),
        prompt_tiles: Vec::new(),
    };
    let mut p = 0usize;
    for (class, (lo, hi, t)) in [(0, n_gen.min(n), tiles.0), (n_gen.min(n), n, tiles.1)]
        .into_iter()
        .enumerate()
    {
        let mut order: Vec<usize> = (lo * k..hi * k).collect();
        order.sort_by_key(|&a| (ids[a], a));
        let start = p;
        for &a in &order {
            g.src[p] = (a / k) as u32;
            g.pos[a] = p as u32;
            p += 1;
        }
        let list = if class == 0 {
            &mut g.gen_tiles
        } else {
            &mut g.prompt_tiles
        };
        let mut i = start;
        while i < p {
            let e = ids[order[i - start]];
            let mut j = i;
            while j < p && j - i < t.max(1) as usize && ids[order[j - start]] == e {
                j += 1;
            }
            list.push([e, i as u32, (j - i) as u32]);
            i = j;
        }
    }
    g
}

//! Per-kernel timing of steps (`--profile`). With timestamp queries (when the
//! adapter has them) a step runs as usual, one pass per kernel in one
//! submission; without, every kernel is submitted and waited for alone.

use super::GpuModel;
use crate::gpu::timer::PassTimer;
use crate::Result;

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
pub(super) const LOGITS: &str = "logits (norm+lm_head+top-k)";
/// The same stage timed on the host, readback included (no timestamps).
pub(super) const LOGITS_WALL: &str = "logits (norm+lm_head+top-k+readback)";

/// A model's profiling state; everything off until [`GpuModel::set_profiling`].
#[derive(Default)]
pub(super) struct Profiler {
    profile: Option<KernelProfile>,
    /// Timestamp queries, when the adapter has them. A step takes it out
    /// while recording, because the ops it records borrow the model.
    pub timer: Option<PassTimer>,
    steps: ProfileSteps,
}

impl Profiler {
    /// Whether a step with (or without) prompt rows is timed.
    pub fn times(&self, has_prompt_rows: bool) -> bool {
        self.profile.is_some() && self.steps.includes(has_prompt_rows)
    }

    /// Adds kernel times (seconds) to the profile, one call each.
    pub fn add(&mut self, times: impl IntoIterator<Item = (&'static str, f64)>) {
        let Some(p) = self.profile.as_mut() else {
            return;
        };
        for (name, t) in times {
            let e = p.entry(name).or_default();
            e.0 += t;
            e.1 += 1;
        }
    }
}

impl GpuModel {
    /// Turns per-kernel timing on (and clears it) or off; see [`GpuModel::profile`].
    pub fn set_profiling(&mut self, steps: Option<ProfileSteps>) {
        let on = steps.is_some();
        self.profiler.steps = steps.unwrap_or_default();
        self.profiler.profile = on.then(Default::default);
        self.profiler.timer = if on {
            // Every op of a step, plus the logits pass.
            let mut passes = 1;
            self.for_each_op(1, 0, 0, &mut |_, _| passes += 1);
            PassTimer::new(&self.ctx, passes)
        } else {
            None
        };
    }

    /// Whether the profile comes from GPU timestamps (else from timing each
    /// kernel's own submission on the host).
    pub fn profile_uses_timestamps(&self) -> bool {
        self.profiler.timer.is_some()
    }

    /// Seconds and dispatch count per kernel kind since profiling was turned on
    /// (the lm_head and top-K stage is timed as "logits").
    pub fn profile(&self) -> Option<&KernelProfile> {
        self.profiler.profile.as_ref()
    }

    /// Profiling without timestamps: every kernel is its own submission,
    /// timed to completion (slower overall, but shows where a step's time
    /// goes on any adapter).
    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn profile_ops(&mut self, n: u32, g: u32, max_kv: u32) -> Result<()> {
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
        self.profiler.add(times);
        Ok(())
    }

    #[cfg(target_arch = "wasm32")]
    pub(super) fn profile_ops(&mut self, _n: u32, _g: u32, _max_kv: u32) -> Result<()> {
        Err(crate::HearthError::Gpu(
            "profiling needs a blocking device wait (native only)".into(),
        ))
    }
}

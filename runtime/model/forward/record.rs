//! Writing a step's plan to the GPU and recording its passes: the layers,
//! then the final norm, lm_head, penalties, logit masks and top-K over the logit rows,
//! and the copy of the candidates into the mappable buffer; for embeddings,
//! the final norm of the rows and their pooling into one vector per part.

use super::plan::{SeqStep, StepLimits, StepPlan};
use super::profile::LOGITS;
use super::GpuModel;
use crate::gpu::kernels::pool::Segment;
use crate::gpu::kernels::StepInfo;
use crate::Result;

/// What [`GpuModel::submit_step`] submitted.
pub(super) struct StepSubmitted {
    pub n_rows: u32,
    pub n_pooled: u32,
    pub t_logits: web_time::Instant,
    pub timed: bool,
}

/// Receives each dispatch of a step with its kernel kind.
pub(super) type OpVisitor<'a> = dyn FnMut(&'static str, &dyn Fn(&mut wgpu::ComputePass)) + 'a;

/// Works out the logit masks of a step's parts (one entry per part, as
/// [`SeqStep::logit_masks`] would hold them) while the GPU runs its layers.
pub type LateMasks<'a> = &'a mut (dyn FnMut() -> Vec<Option<Vec<u32>>> + Send);

impl GpuModel {
    /// Records and submits one step; returns the number of logit rows and of
    /// pooled vectors, when the submission was made and whether the profile
    /// times this step.
    /// With `late`, the parts' masks come from it instead of `seqs`: the
    /// layers are submitted first and `late` runs while the GPU works on
    /// them, then the logits are submitted with its masks.
    pub(super) fn submit_step(
        &mut self,
        seqs: &[SeqStep<'_>],
        k: usize,
        mut late: Option<LateMasks<'_>>,
    ) -> Result<StepSubmitted> {
        let limits = StepLimits {
            vocab_size: self.config.vocab_size,
            max_step_tokens: self.opts.max_step_tokens,
            max_logit_rows: self.logit_capacity(),
            max_pooled: self.opts.max_seqs.max(1),
        };
        let plan = StepPlan::new(seqs, &limits)?;
        let queue = &self.ctx.queue;
        self.batch.write(queue, &plan.meta)?;
        for (buf, info) in self.mm_steps.iter().zip(&plan.matmul_steps()) {
            queue.write_buffer(buf, 0, bytemuck::bytes_of(info));
        }
        queue.write_buffer(&self.logit_step, 0, bytemuck::bytes_of(&plan.logit_step()));
        let any_pen = !plan.penalties.is_empty();
        if any_pen {
            self.penalties.write(queue, &plan.penalty_rows())?;
        }
        let (n_tokens, n_gen, max_gen_kv) = (plan.n_tokens(), plan.n_gen, plan.max_gen_kv);
        let n_rows = plan.n_logit_rows();
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        let timed = self.profiler.times(plan.has_prompt_rows());
        let mut timer = if timed {
            self.profiler.timer.take()
        } else {
            None
        };
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
        let late_masks = match late.as_mut() {
            Some(f) if n_rows > 0 => {
                if timer.is_none() {
                    // Timed steps keep one submission (their timestamps are in it).
                    self.ctx.queue.submit(Some(enc.finish()));
                    enc = self.ctx.device.create_command_encoder(&Default::default());
                }
                Some(f())
            }
            _ => None,
        };
        let any_mask = match &late_masks {
            Some(parts) => {
                let with_masks: Vec<SeqStep> = seqs
                    .iter()
                    .zip(parts)
                    .map(|(s, m)| SeqStep {
                        logit_masks: m.as_deref(),
                        ..*s
                    })
                    .collect();
                let masks = StepPlan::new(&with_masks, &limits)?.masks;
                self.write_masks(&masks)?
            }
            None => self.write_masks(&plan.masks)?,
        };
        if n_rows > 0 {
            let h = self.config.hidden_size as u64 * 4;
            for (i, &r) in plan.logit_rows.iter().enumerate() {
                enc.copy_buffer_to_buffer(
                    &self.act.x,
                    r as u64 * h,
                    &self.act.hid,
                    i as u64 * h,
                    h,
                );
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
                if any_mask {
                    self.logit_mask.record(&mut pass);
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
        let n_pooled = plan.pool_segs.len() as u32;
        if n_pooled > 0 {
            self.record_pooling(&mut enc, &plan.pool_segs)?;
        }
        if let Some(t) = timer {
            t.resolve(&mut enc);
            self.profiler.timer = Some(t);
        }
        let t_logits = web_time::Instant::now();
        self.ctx.queue.submit(Some(enc.finish()));
        Ok(StepSubmitted {
            n_rows,
            n_pooled,
            t_logits,
            timed,
        })
    }

    /// The final norm of the rows up to the last pooled one (into `xn`,
    /// free once the layers are done), the sums of each segment's rows, and
    /// their copy into the mappable buffer.
    fn record_pooling(&self, enc: &mut wgpu::CommandEncoder, segs: &[Segment]) -> Result<()> {
        let queue = &self.ctx.queue;
        self.pool.write(queue, segs)?;
        let rows = segs.iter().map(|&[a, n]| a + n).max().unwrap_or(0);
        let info = StepInfo {
            n_tokens: rows,
            n_seqs: rows,
            ..Default::default()
        };
        queue.write_buffer(&self.pool_norm_step, 0, bytemuck::bytes_of(&info));
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("pool"),
                timestamp_writes: None,
            });
            self.pool_norm.record(&mut pass, rows);
            self.pool.record(&mut pass, segs.len() as u32);
        }
        let bytes = (segs.len() * self.config.hidden_size * 4) as u64;
        enc.copy_buffer_to_buffer(&self.act.pooled, 0, &self.pool_staging, 0, bytes);
        Ok(())
    }

    /// Uploads the step's masks; whether any row has one.
    fn write_masks(
        &mut self,
        masks: &[crate::gpu::kernels::logit_mask::MaskRow<'_>],
    ) -> Result<bool> {
        if masks.is_empty() {
            self.logit_mask.clear();
            return Ok(false);
        }
        self.logit_mask.write(&self.ctx.queue, masks)?;
        Ok(true)
    }

    /// Calls `f(kernel kind, record)` for every dispatch of the layers, in order.
    /// `g`: leading rows that are generated tokens; `max_kv`: their longest context.
    pub(super) fn for_each_op(&self, n: u32, g: u32, max_kv: u32, f: &mut OpVisitor) {
        f("embed", &|p| self.embed.record(p, n));
        for l in &self.layers {
            l.for_each_op(n, g, max_kv, f);
        }
    }
}

//! Speculative-decoding options shared by `run`, `bench` and `serve`.

use anyhow::Result;
use clap::Args;
use hearth::engine::{Drafting, SpecOptions};

#[derive(Args, Clone, Debug)]
pub struct SpecArgs {
    /// Speculative decoding: `ngram` drafts tokens by prompt lookup in the
    /// sequence's own text (helps when the answer repeats its input), `off`
    /// decodes one token per step.
    #[arg(long, default_value = "off")]
    pub draft: String,
    /// Most tokens drafted per step (the draft length adapts below it).
    #[arg(long, default_value_t = 7)]
    pub max_draft: usize,
}

impl SpecArgs {
    pub fn options(&self) -> Result<SpecOptions> {
        let drafting = Drafting::parse(&self.draft).ok_or_else(|| {
            anyhow::anyhow!("unknown --draft `{}` (expected ngram or off)", self.draft)
        })?;
        anyhow::ensure!(
            (1..=32).contains(&self.max_draft),
            "--max-draft must be 1..=32, got {}",
            self.max_draft
        );
        Ok(SpecOptions {
            drafting,
            max_draft: self.max_draft,
            ..SpecOptions::default()
        })
    }

    /// Logit rows one sequence may need in a step.
    pub fn rows_per_seq(&self) -> u32 {
        1 + self.max_draft.min(32) as u32
    }

    /// Logit rows for steps of `parts` sequence parts from up to `seqs`
    /// sequences: one per part, plus drafts for up to 16 sequences at once
    /// (the scheduler shortens drafts when rows run out).
    pub fn batch_logit_rows(&self, parts: u32, seqs: usize) -> u32 {
        parts + seqs.min(16) as u32 * (self.rows_per_seq() - 1)
    }
}

/// "acceptance 83% (120 of 145 drafted tokens)" or "no tokens drafted".
pub fn describe(s: &hearth::engine::SpecStats) -> String {
    match s.acceptance_rate() {
        Some(r) => format!(
            "acceptance {:.0}% ({} of {} drafted tokens, {} verification steps)",
            100.0 * r,
            s.accepted,
            s.drafted,
            s.steps
        ),
        None => "no tokens drafted".into(),
    }
}

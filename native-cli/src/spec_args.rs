//! Speculative-decoding options shared by `run`, `bench` and `serve`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hearth::engine::{Drafting, SpecOptions};

#[derive(Args, Clone, Debug)]
pub struct SpecArgs {
    /// Speculative decoding: `ngram` drafts tokens by prompt lookup in the
    /// sequence's own text (helps when the answer repeats its input), `model`
    /// with the --draft-model, `off` decodes one token per step (default:
    /// `model` when --draft-model is given, else `off`).
    #[arg(long)]
    pub draft: Option<String>,
    /// A smaller model with the same tokenizer that drafts tokens for this
    /// one (GGUF file, Hugging Face directory or hub name such as
    /// ORG/REPO:QUANT, as for --model; loaded on the same adapter
    /// with its own KV cache of the same --kv-memory and --kv-dtype).
    #[arg(long)]
    pub draft_model: Option<PathBuf>,
    /// Most tokens drafted per step (the draft length adapts below it).
    #[arg(long, default_value_t = 7)]
    pub max_draft: usize,
}

impl SpecArgs {
    /// The `--draft` choice as it is spelt (for messages).
    pub fn draft_name(&self) -> &str {
        match (&self.draft, &self.draft_model) {
            (Some(d), _) => d,
            (None, Some(_)) => "model",
            (None, None) => "off",
        }
    }

    pub fn options(&self) -> Result<SpecOptions> {
        let name = self.draft_name();
        let drafting = Drafting::parse(name).ok_or_else(|| {
            anyhow::anyhow!("unknown --draft `{name}` (expected ngram, model or off)")
        })?;
        anyhow::ensure!(
            drafting != Drafting::Model || self.draft_model.is_some(),
            "--draft model needs --draft-model PATH"
        );
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

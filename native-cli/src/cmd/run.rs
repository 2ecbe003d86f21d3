//! `hearth run`: one prompt through the engine, streamed to stdout (or one
//! JSON object with `--json`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use hearth::engine::Generation;
use hearth::structured::{gbnf_to_lark, Constraint};
use hearth::text::ChatMessage;
use hearth::{EngineConfig, Prompt, Request};

use crate::load::{load, load_draft, ModelArgs};
use crate::sampling_args::SamplingArgs;
use crate::spec_args;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Raw prompt text (special-token markup is parsed).
    #[arg(long, short, conflicts_with = "chat")]
    prompt: Option<String>,
    /// A user message, sent through the model's chat template.
    #[arg(long, short)]
    chat: Option<String>,
    /// System message for --chat (default: the template's own).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// A whole conversation, sent through the model's chat template: a JSON
    /// array of `{"role": ..., "content": ...}` messages (OpenAI's shape).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "chat"])]
    messages: Option<PathBuf>,
    #[arg(long, default_value_t = hearth::engine::DEFAULT_MAX_TOKENS)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when the output contains this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long)]
    ignore_eos: bool,
    /// Report the top-K log-probabilities of each generated token (with --json).
    #[arg(long, default_value_t = 0)]
    logprobs: usize,
    /// Constrain the output to the JSON Schema in FILE.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["grammar", "regex"])]
    json_schema: Option<PathBuf>,
    /// Constrain the output to the grammar in FILE: llama.cpp's GBNF (start
    /// rule `root`), or llguidance's Lark (start rule `start`) when FILE
    /// ends in `.lark`.
    #[arg(long, value_name = "FILE", conflicts_with = "regex")]
    grammar: Option<PathBuf>,
    /// Constrain the whole output to match this regular expression.
    #[arg(long, value_name = "RE")]
    regex: Option<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    spec: spec_args::SpecArgs,
}

impl RunArgs {
    fn prompt(&self) -> Result<Prompt> {
        if let Some(path) = &self.messages {
            return read_messages(path).map(Prompt::Chat);
        }
        Ok(match (&self.prompt, &self.chat) {
            (Some(p), None) => Prompt::Text(p.clone()),
            (None, Some(c)) => {
                let mut m = Vec::new();
                if let Some(s) = &self.system {
                    m.push(ChatMessage::new("system", s));
                }
                m.push(ChatMessage::new("user", c));
                Prompt::Chat(m)
            }
            _ => anyhow::bail!("give a prompt with --prompt TEXT, --chat TEXT or --messages FILE"),
        })
    }

    /// `--json-schema`, `--grammar` or `--regex`. Files are read and a
    /// GBNF grammar is parsed here, before the model loads; whether the
    /// constraint compiles is the engine's to say.
    fn constraint(&self) -> Result<Option<Constraint>> {
        fn read(flag: &str, path: &Path) -> Result<String> {
            std::fs::read_to_string(path)
                .with_context(|| format!("{flag}: cannot read {}", path.display()))
        }
        if let Some(p) = &self.json_schema {
            let text = read("--json-schema", p)?;
            let schema: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("--json-schema: {} is not valid JSON", p.display()))?;
            return Ok(Some(Constraint::JsonSchema(schema)));
        }
        if let Some(p) = &self.grammar {
            let text = read("--grammar", p)?;
            if p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("lark"))
            {
                return Ok(Some(Constraint::Lark(text)));
            }
            gbnf_to_lark(&text).map_err(|e| match e {
                hearth::HearthError::InvalidField { message, .. } => {
                    anyhow::anyhow!("--grammar {}: {message}", p.display())
                }
                e => e.into(),
            })?;
            return Ok(Some(Constraint::Gbnf(text)));
        }
        Ok(self.regex.clone().map(Constraint::Regex))
    }
}

/// `--messages FILE`: a non-empty JSON array of chat messages.
fn read_messages(path: &Path) -> Result<Vec<ChatMessage>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--messages: cannot read {}", path.display()))?;
    let messages: Vec<ChatMessage> = serde_json::from_str(&text).with_context(|| {
        format!(
            "--messages: {} is not a JSON array of {{\"role\", \"content\"}} messages",
            path.display()
        )
    })?;
    if messages.is_empty() {
        anyhow::bail!("--messages: {} holds no messages", path.display());
    }
    Ok(messages)
}

pub fn run(args: RunArgs) -> Result<()> {
    let spec = args.spec.options()?;
    let constraint = args.constraint()?;
    let prompt = args.prompt()?;
    args.sampling.params().validate()?;
    let mut h = load(&args.model, 128, 1, args.spec.rows_per_seq(), args.json)?;
    load_draft(&mut h, &args.model, &args.spec, args.json)?;
    let req = Request {
        prompt,
        max_tokens: Some(args.max_tokens),
        sampling: args.sampling.params(),
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        logprobs: args.logprobs,
        n: 1,
        draft: Some(spec.drafting),
        constraint,
        ..Default::default()
    };
    h.set_config(EngineConfig {
        speculative: spec,
        ..Default::default()
    })?;
    let json = args.json;
    let mut out = std::io::stdout().lock();
    let g = h.generate_request_blocking(req, &mut |ev| {
        if !json {
            let _ = out.write_all(ev.text.as_bytes());
            let _ = out.flush();
        }
        true
    })?;
    if json {
        writeln!(out, "{}", json_report(&g, args.logprobs > 0))?;
    } else {
        writeln!(out)?;
        eprintln!(
            "hearth: prompt {} tokens, {:.1} tok/s prefill; generated {} tokens, {:.1} tok/s decode ({:?})",
            g.prompt_ids.len(),
            g.prefill_tok_s(),
            g.ids.len(),
            g.decode_tok_s(),
            g.finish_reason
        );
        if spec.enabled() {
            eprintln!(
                "hearth: speculative decoding ({}): {}",
                args.spec.draft_name(),
                spec_args::describe(&g.spec)
            );
        }
    }
    Ok(())
}

/// `--json`'s object; `top_logprobs` only when `--logprobs` asked for them.
fn json_report(g: &Generation, logprobs: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "prompt_ids": g.prompt_ids,
        "ids": g.ids,
        "text": g.text,
        "finish_reason": g.finish_reason,
        "prefill_tok_s": g.prefill_tok_s(),
        "decode_tok_s": g.decode_tok_s(),
        "spec": g.spec,
    });
    if logprobs {
        let top: Vec<Vec<serde_json::Value>> = g
            .top_logprobs
            .iter()
            .map(|row| {
                row.iter()
                    .map(|(id, lp)| serde_json::json!({"id": id, "logprob": lp}))
                    .collect()
            })
            .collect();
        v["top_logprobs"] = serde_json::Value::from(top);
    }
    v
}

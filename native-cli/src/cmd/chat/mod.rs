//! `hearth chat`: a multi-turn conversation in the terminal. Each turn sends
//! the whole conversation through the model's chat template; the engine's
//! prefix cache holds the KV blocks of the earlier turns' prompts, so a turn
//! prefills little more than the last answer and the new message (each
//! turn's stats line shows how much). Answers stream to stdout, everything
//! else goes to stderr, so piped input gives a clean transcript.

mod commands;
mod input;
mod interrupt;
mod settings;

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use hearth::engine::Drafting;
use hearth::text::ChatMessage;
use hearth::{EngineConfig, EngineHandle, Event, FinishReason, HearthError, Prompt, Request};

use crate::load::{load, load_draft, ModelArgs};
use crate::sampling_args::SamplingArgs;
use crate::spec_args;
use commands::Line;
use input::{Input, Read};
use interrupt::Interrupts;
use settings::Settings;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// System message (default: the template's own); `/system` changes it.
    #[arg(long)]
    system: Option<String>,
    /// Tokens per answer at most (`/set max_tokens` changes it).
    #[arg(long, default_value_t = hearth::engine::DEFAULT_MAX_TOKENS)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    spec: spec_args::SpecArgs,
}

/// The conversation so far: the system message and the finished turns.
struct Conversation {
    /// `None`: the template's own.
    system: Option<String>,
    turns: Vec<ChatMessage>,
}

impl Conversation {
    /// The messages of a turn that asks `user`.
    fn asking(&self, user: &str) -> Vec<ChatMessage> {
        let system = self.system.iter().map(|s| ChatMessage::new("system", s));
        system
            .chain(self.turns.iter().cloned())
            .chain([ChatMessage::new("user", user)])
            .collect()
    }
}

/// The session's parts that each turn uses.
struct Session {
    handle: EngineHandle,
    interrupts: Interrupts,
    settings: Settings,
    drafting: Drafting,
    convo: Conversation,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let spec = args.spec.options()?;
    let settings = Settings::new(args.sampling.params(), Some(args.max_tokens))
        .map_err(|e| anyhow::anyhow!("--{}", e.replacen('_', "-", 1)))?;
    let mut h = load(&args.model, 128, 1, args.spec.rows_per_seq(), false)?;
    load_draft(&mut h, &args.model, &args.spec, false)?;
    // Said now rather than at the first message.
    h.prompt_ids(&Prompt::chat_user("hi"))
        .context("this model cannot chat")?;
    h.set_config(EngineConfig {
        speculative: spec,
        ..Default::default()
    })?;
    let engine = h.spawn().context("starting the engine thread")?;
    let mut s = Session {
        handle: engine.handle(),
        interrupts: Interrupts::install(engine.handle())?,
        settings,
        drafting: spec.drafting,
        convo: Conversation {
            system: args.system,
            turns: Vec::new(),
        },
    };
    let mut input = Input::open()?;
    if input.is_terminal() {
        eprintln!("hearth: chat; /help lists the commands, Ctrl-D quits");
    }
    while let Some(line) = read_entry(&mut input)? {
        match commands::parse(&line) {
            Err(e) => eprintln!("hearth: {e}"),
            Ok(Line::Empty) => {}
            Ok(Line::Exit) => break,
            Ok(Line::Help) => eprintln!("{}", commands::HELP),
            Ok(Line::Message(m)) => s.turn(m),
            Ok(Line::Reset) => {
                s.convo.turns.clear();
                eprintln!("hearth: new conversation");
            }
            Ok(Line::System(text)) => {
                match &text {
                    Some(t) => eprintln!("hearth: system message: {t}"),
                    None => eprintln!("hearth: system message: the template's own"),
                }
                s.convo.system = text;
            }
            Ok(Line::Set { key, value }) => match s.settings.set(&key, &value) {
                Ok(()) => eprintln!("hearth: {key} {value}"),
                Err(e) => eprintln!("hearth: {e}"),
            },
            Ok(Line::Show) => s.show(),
        }
    }
    engine.shutdown();
    Ok(())
}

/// The next entry, its `\`-ended lines joined; `None` at the end of input.
fn read_entry(input: &mut Input) -> Result<Option<String>> {
    let mut entry = String::new();
    loop {
        let prompt = if entry.is_empty() { ">>> " } else { "... " };
        match input.read(prompt)? {
            Read::Eof if entry.is_empty() => return Ok(None),
            Read::Eof => break,
            Read::Interrupted => {
                eprintln!("{}", interrupt::HINT);
                entry.clear();
            }
            Read::Line(l) => match l.strip_suffix('\\') {
                Some(part) => {
                    entry.push_str(part);
                    entry.push('\n');
                }
                None => {
                    entry.push_str(&l);
                    break;
                }
            },
        }
    }
    if !entry.trim().is_empty() {
        input.remember(&entry);
    }
    Ok(Some(entry))
}

/// One answer as it ended.
struct Answer {
    text: String,
    reason: FinishReason,
    prompt_tokens: usize,
    cached_tokens: usize,
    tokens: usize,
}

impl Session {
    /// Asks `user`, streams the answer and keeps the turn. Errors are
    /// reported and forget the message; the session goes on.
    fn turn(&mut self, user: String) {
        let out = self.answer(&user);
        self.interrupts.idle();
        match out {
            Ok(a) => {
                // An answer stopped before its first token leaves nothing to keep.
                if a.reason != FinishReason::Cancelled || a.tokens > 0 {
                    self.convo.turns.push(ChatMessage::new("user", user));
                    self.convo.turns.push(ChatMessage::new("assistant", a.text));
                }
            }
            Err(e) => eprintln!("hearth: {e}"),
        }
    }

    fn request(&self, user: &str, max_tokens: Option<usize>) -> Request {
        Request {
            prompt: Prompt::Chat(self.convo.asking(user)),
            max_tokens,
            sampling: self.settings.sampling.clone(),
            draft: Some(self.drafting),
            ..Default::default()
        }
    }

    fn answer(&mut self, user: &str) -> Result<Answer, String> {
        let t0 = Instant::now();
        self.interrupts.submitting();
        let submitted = match self
            .handle
            .submit_blocking(self.request(user, self.settings.max_tokens))
        {
            // Near the end of the context: the answer gets what is left.
            Err(HearthError::ContextLength {
                prompt, context, ..
            }) if prompt < context => self
                .handle
                .submit_blocking(self.request(user, Some(context - prompt))),
            r => r,
        };
        let mut stream = submitted.map_err(|e| match e {
            HearthError::ContextLength {
                prompt, context, ..
            } => format!(
                "the conversation is {prompt} tokens, the model's context {context}; \
                 /reset starts a new one"
            ),
            e => e.to_string(),
        })?;
        self.interrupts.answering(stream.id);
        let mut out = std::io::stdout().lock();
        let mut text = String::new();
        let mut first = None;
        while let Some(ev) = stream.next_blocking() {
            match ev {
                Event::Token { token, .. } => {
                    first.get_or_insert_with(Instant::now);
                    let _ = out.write_all(token.text.as_bytes());
                    let _ = out.flush();
                    text.push_str(&token.text);
                }
                Event::Finished { finish, .. } => {
                    let _ = writeln!(out);
                    let _ = out.flush();
                    let a = Answer {
                        text,
                        reason: finish.reason,
                        prompt_tokens: finish.prompt_tokens,
                        cached_tokens: finish.cached_tokens,
                        tokens: finish.completion_tokens,
                    };
                    report(&a, t0, first);
                    return Ok(a);
                }
                Event::Failed(e) => {
                    let _ = writeln!(out);
                    return Err(e.to_string());
                }
                // A chat request never asks for one.
                Event::Embedding(_) => {}
            }
        }
        Err("the engine stopped".into())
    }

    fn show(&self) {
        let system = self.convo.system.as_deref().unwrap_or("the template's own");
        eprintln!(
            "{}\nsystem {system}\nturns {}",
            self.settings.describe(),
            self.convo.turns.len() / 2
        );
    }
}

/// The turn's stats line (stderr): how much of the prompt the prefix cache
/// served and how much was prefilled, then the answer's length and speed.
fn report(a: &Answer, t0: Instant, first: Option<Instant>) {
    let end = Instant::now();
    let first = first.unwrap_or(end);
    let decode_s = (end - first).as_secs_f64().max(1e-9);
    let how = match a.reason {
        FinishReason::Cancelled => "stopped by Ctrl-C",
        r => r.as_str(),
    };
    eprintln!(
        "hearth: prompt {} tokens ({} cached, {} prefilled in {:.2} s); {} tokens, {:.1} tok/s ({how})",
        a.prompt_tokens,
        a.cached_tokens,
        a.prompt_tokens - a.cached_tokens,
        (first - t0).as_secs_f64(),
        a.tokens,
        a.tokens.saturating_sub(1) as f64 / decode_s,
    );
}

//! Chat templates: the Jinja templates that models ship (GGUF
//! `tokenizer.chat_template`, tokenizer_config.json `chat_template`),
//! rendered with minijinja the way Hugging Face transformers renders them:
//! `trim_blocks` and `lstrip_blocks` on, Python string methods (`.strip()`,
//! `.startswith()`, ...) through minijinja-contrib's pycompat, and the
//! `raise_exception` / `strftime_now` helpers that templates call.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use super::chat_limits::{fuel_spent, render_bounded, RenderLimits, RECURSION_LIMIT};
use super::tokenizer::Tokenizer;
use crate::structured::tools::{template_message, template_tools, Tool, ToolCall, ToolFormat};
use crate::{HearthError, Result};

/// Used when a model has no template of its own: ChatML (`<|im_start|>role\n
/// content<|im_end|>\n`), the most common format among small open models.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// `null` (an assistant message with only calls) reads as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// An assistant message's calls (OpenAI's shape on the wire).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A `tool` message: the function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    /// An assistant message that calls tools.
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        ChatMessage {
            tool_calls: calls,
            ..ChatMessage::new("assistant", content)
        }
    }

    /// A tool's result, answering call `id`.
    pub fn tool_result(id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            tool_call_id: Some(id.into()),
            ..ChatMessage::new("tool", content)
        }
    }

    /// Whether the message uses any of the tool-calling fields.
    pub fn has_tool_fields(&self) -> bool {
        !self.tool_calls.is_empty() || self.tool_call_id.is_some() || self.name.is_some()
    }
}

const TEMPLATE_NAME: &str = "chat";
/// Marks "no fixed clock": `strftime_now` reads the system clock.
const SYSTEM_CLOCK: i64 = i64::MIN;

#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    now: Arc<AtomicI64>,
    tool_format: ToolFormat,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("tool_format", &self.tool_format)
            .finish_non_exhaustive()
    }
}

pub(crate) fn template_err(e: minijinja::Error) -> HearthError {
    // `{:#}` adds minijinja's excerpt of the template around the error (a
    // syntax error carries one), with a caret line under the error's span.
    // That renderer subtracts the span's columns unchecked, so an inverted
    // span (the empty target of `{% for in messages %}` has one) panics in
    // it: such an error gets the plain form (kind, detail, line).
    let inverted = e.range().is_some_and(|r| r.start > r.end);
    HearthError::Template(if inverted {
        e.to_string()
    } else {
        format!("{e:#}")
    })
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is `HearthError::Template`.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<ChatTemplate> {
        let now = Arc::new(AtomicI64::new(SYSTEM_CLOCK));
        let mut env = Environment::new();
        // minijinja's default follows the build (on with debug assertions):
        // off, a render error is the same in every build, and never carries
        // a dump of the variables the template touched (the conversation).
        env.set_debug(false);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        let clock = now.clone();
        env.add_function("strftime_now", move |fmt: String| -> String {
            let fixed = clock.load(Ordering::Relaxed);
            let secs = if fixed == SYSTEM_CLOCK {
                system_now()
            } else {
                fixed
            };
            strftime(&fmt, secs)
        });
        // transformers' `tojson` is Python's json.dumps: `", "` and `": "`,
        // keys in their order, nothing HTML-escaped (minijinja's escapes `<`).
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(template_err)?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
            now,
            tool_format: ToolFormat::detect(source),
        })
    }

    /// The tokenizer's own template, or ChatML when it has none.
    pub fn for_tokenizer(tok: &Tokenizer) -> Result<ChatTemplate> {
        let source = tok.chat_template().unwrap_or(CHATML_TEMPLATE);
        ChatTemplate::new(
            source,
            &tok.special_text(tok.bos_id()),
            &tok.special_text(tok.eos_id()),
        )
    }

    /// Fixes the time `strftime_now` reports (seconds since the Unix epoch,
    /// UTC): for reproducible prompts, and in the browser, where the runtime
    /// has no clock of its own (it reports the epoch there otherwise).
    pub fn set_now(&self, unix_seconds: i64) {
        self.now.store(unix_seconds, Ordering::Relaxed);
    }

    /// How the model writes tool calls, from the template's source.
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_limited(messages, &[], add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with `tools` passed as transformers passes
    /// them (`[{"type": "function", "function": {...}}]`; none: undefined).
    /// See `hearth::structured::tools::render_chat` for templates that
    /// know no tools.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_limited(messages, tools, add_generation_prompt)
    }

    /// The limits a render of `messages` and `tools` runs under.
    pub fn limits_for(messages: &[ChatMessage], tools: &[Tool]) -> RenderLimits {
        let message_bytes: usize = messages
            .iter()
            .map(|m| {
                m.content.len()
                    + m.tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len())
                        .sum::<usize>()
            })
            .sum();
        let tool_bytes: usize = tools
            .iter()
            .map(|t| {
                t.name.len()
                    + t.description.as_ref().map_or(0, String::len)
                    + t.parameters.to_string().len()
            })
            .sum();
        RenderLimits::for_input(messages.len() + tools.len(), message_bytes + tool_bytes)
    }

    /// The template's context: `tools` undefined when there are none.
    fn context(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_generation_prompt: bool,
    ) -> minijinja::Value {
        let messages: Vec<serde_json::Value> = messages.iter().map(template_message).collect();
        let base = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        };
        if tools.is_empty() {
            base
        } else {
            context! { tools => template_tools(tools), ..base }
        }
    }

    fn render_limited(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let limits = ChatTemplate::limits_for(messages, tools);
        // The fuel lives in the environment: a clone (a few maps of
        // reference-counted entries) carries this render's budget.
        let mut env = self.env.clone();
        env.set_fuel(Some(limits.fuel));
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(template_err)?;
        render_bounded(
            &tmpl,
            self.context(messages, tools, add_generation_prompt),
            limits,
        )
    }

    /// The instructions a render spends, without limits: for measuring
    /// templates against the budget ([`RenderLimits`]).
    #[doc(hidden)]
    pub fn fuel_spent(&self, messages: &[ChatMessage], tools: &[Tool]) -> Result<u64> {
        let mut env = self.env.clone();
        env.set_fuel(Some(i64::MAX as u64 / 2));
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(template_err)?;
        fuel_spent(&tmpl, self.context(messages, tools, true))
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// The `tojson` filter: Python's `json.dumps(v, ensure_ascii=False, indent=indent)`.
fn tojson(
    v: minijinja::Value,
    indent: Option<minijinja::Value>,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<minijinja::Value, minijinja::Error> {
    let indent = match indent.or(kwargs.get::<Option<minijinja::Value>>("indent")?) {
        Some(i) if !i.is_none() => Some(usize::try_from(i)?),
        _ => None,
    };
    // Accepted and ignored, as the templates that pass them want the defaults.
    for k in ["ensure_ascii", "sort_keys", "separators"] {
        let _: Option<minijinja::Value> = kwargs.get(k)?;
    }
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&v)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    Ok(minijinja::Value::from_safe_string(
        crate::structured::tools::py_json(&json, indent),
    ))
}

/// web-time reads `Date.now()` in the browser, where std's clock panics.
fn system_now() -> i64 {
    web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01
/// (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// The subset of C's strftime that chat templates use (UTC).
pub fn strftime(fmt: &str, unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[m as usize - 1] + d + u32::from(m > 2 && is_leap(y));
    let month = MONTHS[m as usize - 1];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o);
                }
                None => out.push_str("%-"),
            },
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hh + 11) % 12 + 1)),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('b') | Some('h') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

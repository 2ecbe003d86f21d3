//! The model's output back into content and calls, whole
//! ([`parse_tool_calls`]) or as it streams ([`ToolParser`]), with the
//! deltas OpenAI streams: a call's first delta carries its index, id, name
//! and the arguments so far; later ones carry more arguments.
//!
//! Both run one function over the text so far, [`parse_prefix`], which
//! holds back whatever could still turn out to be part of a call (a partial
//! marker, whitespace before one, an object whose name has not arrived)
//! and is monotone: what it reports for a prefix is a prefix of what it
//! reports for the whole. The stream sends the difference at each chunk,
//! so its deltas add up to the one-shot parse however the text is cut.
//! Arguments are the model's own JSON text.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::{call_id, ToolCall, ToolFormat};

/// A piece of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDelta {
    Content(String),
    Call(ToolCallDelta),
}

/// OpenAI's `delta.tool_calls[]` entry: `id` and `name` on a call's first delta only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    pub index: usize,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Default, PartialEq)]
struct Parsed {
    content: String,
    /// (name, arguments so far)
    calls: Vec<(String, String)>,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";

static CALLS: AtomicU64 = AtomicU64::new(0);

/// Parses tool calls out of `text` in `format`: the text outside the calls
/// (whitespace around calls dropped) and the calls.
pub fn parse_tool_calls(format: ToolFormat, text: &str) -> (String, Vec<ToolCall>) {
    let mut p = ToolParser::new(format, 0);
    let mut deltas = p.feed(text);
    deltas.extend(p.finish());
    let mut content = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    for d in deltas {
        match d {
            ToolDelta::Content(c) => content.push_str(&c),
            ToolDelta::Call(c) => c.merge_into(&mut calls),
        }
    }
    (content, calls)
}

impl ToolCallDelta {
    /// Adds this piece to the calls streamed so far (a new call, or more
    /// arguments of one).
    pub fn merge_into(self, calls: &mut Vec<ToolCall>) {
        match calls.get_mut(self.index) {
            Some(call) => call.arguments.push_str(&self.arguments),
            None => calls.push(ToolCall {
                id: self.id.unwrap_or_default(),
                name: self.name.unwrap_or_default(),
                arguments: self.arguments,
            }),
        }
    }
}

/// The streaming parser of one choice's output.
#[derive(Debug, Clone)]
pub struct ToolParser {
    format: ToolFormat,
    seed: u64,
    text: String,
    content_sent: usize,
    /// Argument bytes sent, per call.
    args_sent: Vec<usize>,
    finished: bool,
}

impl ToolParser {
    /// `seed` varies the call ids (with a process-wide counter).
    pub fn new(format: ToolFormat, seed: u64) -> ToolParser {
        ToolParser {
            format,
            seed,
            text: String::new(),
            content_sent: 0,
            args_sent: Vec::new(),
            finished: false,
        }
    }

    /// The deltas `chunk` makes final.
    pub fn feed(&mut self, chunk: &str) -> Vec<ToolDelta> {
        self.text.push_str(chunk);
        let p = parse_prefix(self.format, &self.text, false);
        self.diff(p)
    }

    /// The output ended: whatever was held back.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        let p = parse_prefix(self.format, &self.text, true);
        self.diff(p)
    }

    /// Calls begun so far.
    pub fn calls(&self) -> usize {
        self.args_sent.len()
    }

    fn diff(&mut self, p: Parsed) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        debug_assert!(p.content.len() >= self.content_sent, "content shrank");
        if p.content.len() > self.content_sent {
            out.push(ToolDelta::Content(
                p.content[self.content_sent..].to_string(),
            ));
            self.content_sent = p.content.len();
        }
        for (i, (name, args)) in p.calls.into_iter().enumerate() {
            match self.args_sent.get(i).copied() {
                None => {
                    let n = CALLS.fetch_add(1, Ordering::Relaxed);
                    self.args_sent.push(args.len());
                    out.push(ToolDelta::Call(ToolCallDelta {
                        index: i,
                        id: Some(call_id(self.format, self.seed ^ n.rotate_left(32), i)),
                        name: Some(name),
                        arguments: args,
                    }));
                }
                Some(sent) if args.len() > sent => {
                    self.args_sent[i] = args.len();
                    out.push(ToolDelta::Call(ToolCallDelta {
                        index: i,
                        id: None,
                        name: None,
                        arguments: args[sent..].to_string(),
                    }));
                }
                Some(_) => {}
            }
        }
        out
    }
}

fn skip_ws(t: &str, i: usize) -> usize {
    i + (t.len() - i - t[i..].trim_start().len())
}

/// Length of the longest suffix of `t` that is a proper prefix of `m`.
fn partial_suffix(t: &str, m: &str) -> usize {
    (1..m.len().min(t.len() + 1))
        .rev()
        .find(|&k| t.is_char_boundary(t.len() - k) && t.ends_with(&m[..k]))
        .unwrap_or(0)
}

/// Whether `t` is a proper prefix of `m` (so more text may complete it).
fn could_become(t: &str, m: &str) -> bool {
    t.len() < m.len() && m.starts_with(t)
}

/// The end of the JSON value starting at `i` (exclusive); `None` while
/// incomplete. A bare number or literal ends at a delimiter, or at the end
/// of the text when `fin`.
fn scan_value(t: &str, i: usize, fin: bool) -> Option<usize> {
    let b = t.as_bytes();
    match b.get(i)? {
        b'{' | b'[' => {
            let (mut depth, mut in_str, mut esc) = (0usize, false, false);
            for (k, &c) in b.iter().enumerate().skip(i) {
                if in_str {
                    match (esc, c) {
                        (true, _) => esc = false,
                        (false, b'\\') => esc = true,
                        (false, b'"') => in_str = false,
                        _ => {}
                    }
                    continue;
                }
                match c {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(k + 1);
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        b'"' => {
            let mut esc = false;
            for (k, &c) in b.iter().enumerate().skip(i + 1) {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, b'\\') => esc = true,
                    (false, b'"') => return Some(k + 1),
                    _ => {}
                }
            }
            None
        }
        _ => match b[i..].iter().position(|c| b",}] \t\r\n".contains(c)) {
            Some(k) => Some(i + k),
            None => fin.then_some(t.len()),
        },
    }
}

enum Obj {
    /// Nothing decided yet.
    NeedMore,
    /// Not a call.
    Invalid,
    /// A call whose arguments are still arriving.
    Streaming(String, String),
    /// A complete call ending before byte `.2`.
    Done(String, String, usize),
}

enum Header {
    Partial,
    NoMatch,
    /// The name and where the arguments' value starts.
    Match(String, usize),
}

/// `{"name": "...", "arguments": ` (or `"parameters"`) from `i`, up to the
/// first byte of the value.
fn header(t: &str, i: usize) -> Header {
    let mut k = i;
    let lits: [&[&str]; 5] = [&["{"], &["\"name\""], &[":"], &[], &[","]];
    for (step, alts) in lits.iter().enumerate() {
        k = skip_ws(t, k);
        if step == 3 {
            // The name: a JSON string.
            if k >= t.len() {
                return Header::Partial;
            }
            if t.as_bytes()[k] != b'"' {
                return Header::NoMatch;
            }
            match scan_value(t, k, false) {
                None => return Header::Partial,
                Some(e) => k = e,
            }
            continue;
        }
        let rest = &t[k..];
        if let Some(a) = alts.iter().find(|a| rest.starts_with(**a)) {
            k += a.len();
        } else if alts.iter().any(|a| could_become(rest, a)) {
            return Header::Partial;
        } else {
            return Header::NoMatch;
        }
    }
    let name_at = {
        // Re-find the name: after `{`, `"name"` and `:`.
        let a = skip_ws(t, i) + 1;
        let a = skip_ws(t, a) + "\"name\"".len();
        skip_ws(t, skip_ws(t, a) + 1)
    };
    let name_end = scan_value(t, name_at, false).expect("scanned");
    let Ok(name) = serde_json::from_str::<String>(&t[name_at..name_end]) else {
        return Header::NoMatch;
    };
    k = skip_ws(t, k);
    let rest = &t[k..];
    let keys = ["\"arguments\"", "\"parameters\""];
    match keys.iter().find(|key| rest.starts_with(**key)) {
        Some(key) => k += key.len(),
        None if keys.iter().any(|key| could_become(rest, key)) => return Header::Partial,
        None => return Header::NoMatch,
    }
    k = skip_ws(t, k);
    match t[k..].chars().next() {
        None => return Header::Partial,
        Some(':') => k += 1,
        Some(_) => return Header::NoMatch,
    }
    k = skip_ws(t, k);
    if k >= t.len() {
        return Header::Partial;
    }
    Header::Match(name, k)
}

/// A call object starting at `i` (a `{`).
fn parse_object(t: &str, i: usize, fin: bool) -> Obj {
    match header(t, i) {
        Header::Match(name, v) => {
            let Some(ve) = scan_value(t, v, fin) else {
                return Obj::Streaming(name, t[v..].to_string());
            };
            let args = t[v..ve].to_string();
            let j = skip_ws(t, ve);
            if t[j..].starts_with('}') {
                return Obj::Done(name, args, j + 1);
            }
            // More keys after the arguments: the object ends where it ends.
            match scan_value(t, i, fin) {
                Some(end) => Obj::Done(name, args, end),
                None if fin => Obj::Done(name, args, t.len()),
                None => Obj::Streaming(name, args),
            }
        }
        Header::Partial if !fin => Obj::NeedMore,
        Header::Partial => Obj::Invalid,
        Header::NoMatch => {
            // Keys in another order: the call comes whole once it parses.
            let Some(end) = scan_value(t, i, fin) else {
                return if fin { Obj::Invalid } else { Obj::NeedMore };
            };
            let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&t[i..end]) else {
                return Obj::Invalid;
            };
            let name = o.get("name").and_then(Value::as_str);
            let args = o.get("arguments").or_else(|| o.get("parameters"));
            match (name, args) {
                (Some(n), Some(a)) => Obj::Done(n.to_string(), a.to_string(), end),
                _ => Obj::Invalid,
            }
        }
    }
}

/// Content and calls of `t`, holding back what is undecided unless `fin`.
fn parse_prefix(format: ToolFormat, t: &str, fin: bool) -> Parsed {
    match format {
        ToolFormat::Hermes | ToolFormat::Generic => parse_tagged(t, fin),
        ToolFormat::Llama3 => parse_anchored(t, fin, "<|python_tag|>", false),
        ToolFormat::Mistral => parse_anchored(t, fin, "[TOOL_CALLS]", true),
    }
}

fn push_content(p: &mut Parsed, piece: &str, trim_start: bool) {
    p.content.push_str(if trim_start {
        piece.trim_start()
    } else {
        piece
    });
}

/// Hermes syntax: calls in `<tool_call>` tags anywhere in the text.
fn parse_tagged(t: &str, fin: bool) -> Parsed {
    let mut p = Parsed::default();
    let (mut i, mut after_call) = (0, false);
    loop {
        let rest = &t[i..];
        let Some(j) = rest.find(HERMES_OPEN) else {
            let mut piece = rest;
            if !fin {
                piece = &piece[..piece.len() - partial_suffix(piece, HERMES_OPEN)];
                piece = piece.trim_end();
            }
            push_content(&mut p, piece, after_call);
            return p;
        };
        push_content(&mut p, rest[..j].trim_end(), after_call);
        let open_end = i + j + HERMES_OPEN.len();
        let k = skip_ws(t, open_end);
        if k == t.len() && !fin {
            return p;
        }
        let obj = if t[k..].starts_with('{') {
            parse_object(t, k, fin)
        } else {
            Obj::Invalid
        };
        match obj {
            Obj::NeedMore => return p,
            Obj::Streaming(name, args) => {
                p.calls.push((name, args));
                return p;
            }
            Obj::Invalid => {
                p.content.push_str(HERMES_OPEN);
                (i, after_call) = (open_end, false);
            }
            Obj::Done(name, args, end) => {
                p.calls.push((name, args));
                let j = skip_ws(t, end);
                let rest = &t[j..];
                if rest.starts_with(HERMES_CLOSE) {
                    i = j + HERMES_CLOSE.len();
                } else if rest.is_empty() || could_become(rest, HERMES_CLOSE) {
                    // The closing tag (or what arrived of it) ends the text.
                    return p;
                } else {
                    i = j;
                }
                after_call = true;
            }
        }
    }
}

/// Llama 3 and Mistral: calls only at the start of the output, after an
/// optional marker; Mistral's in a JSON list.
fn parse_anchored(t: &str, fin: bool, marker: &str, list: bool) -> Parsed {
    let mut p = Parsed::default();
    let all_content = |p: &mut Parsed| {
        p.content = t.to_string();
        std::mem::take(p)
    };
    let mut k = skip_ws(t, 0);
    if !fin && (k == t.len() || could_become(&t[k..], marker)) {
        return p;
    }
    if t[k..].starts_with(marker) {
        k = skip_ws(t, k + marker.len());
    }
    if k == t.len() {
        return if fin { all_content(&mut p) } else { p };
    }
    let in_list = list && t[k..].starts_with('[');
    if in_list {
        k = skip_ws(t, k + 1);
        if k == t.len() {
            return if fin { all_content(&mut p) } else { p };
        }
    }
    if !t[k..].starts_with('{') {
        return all_content(&mut p);
    }
    loop {
        match parse_object(t, k, fin) {
            Obj::NeedMore => return p,
            Obj::Invalid if p.calls.is_empty() => return all_content(&mut p),
            Obj::Invalid => {
                push_content(&mut p, &t[k..], true);
                return p;
            }
            Obj::Streaming(name, args) => {
                p.calls.push((name, args));
                return p;
            }
            Obj::Done(name, args, end) => {
                p.calls.push((name, args));
                let j = skip_ws(t, end);
                let sep = if in_list { ',' } else { ';' };
                let rest = &t[j..];
                if rest.starts_with(sep) {
                    k = skip_ws(t, j + 1);
                    if k == t.len() && !fin {
                        return p;
                    }
                    if t[k..].starts_with('{') {
                        continue;
                    }
                    push_content(&mut p, &t[k..], true);
                    return p;
                }
                let j = if in_list && rest.starts_with(']') {
                    j + 1
                } else {
                    j
                };
                push_content(&mut p, &t[j..], true);
                return p;
            }
        }
    }
}

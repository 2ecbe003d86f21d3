//! llama.cpp's GBNF grammars, translated to llguidance's Lark syntax.
//!
//! GBNF as llama.cpp reads it (`grammars/README.md` there): rules
//! `name ::= alternatives` with names of `[a-zA-Z0-9-]`, `root` the start
//! rule; sequences, `|`, groups `( )`, the postfixes `*` `+` `?` `{m}`
//! `{m,}` `{m,n}`; string literals and character classes (`[a-z]`,
//! negated `[^"\\]`) with the escapes `\n \r \t \\ \" \[ \] \xHH \uHHHH
//! \UHHHHHHHH`; `.` for any character; `#` comments. A rule may span lines:
//! it ends where the next `name ::=` begins.
//!
//! The Lark written here keeps to what llguidance's parser takes: one rule a
//! line, `start: root`, literals as JSON strings, each character class as a
//! one-character regex with every non-alphanumeric character written
//! `\x{HH}` (so no `/`, class operator or newline ever reaches the regex),
//! repetition on the grammar level. GBNF names map to unique lowercase Lark
//! names: a lowercase name stays as it is, any other becomes `x_` plus the
//! name with each capital `C` written `_c` (GBNF names never contain `_`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::{HearthError, Result};

/// One element of a sequence.
#[derive(Debug, Clone)]
enum Node {
    Literal(String),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Any,
    Ref {
        name: String,
        at: usize,
    },
    Group(Vec<Vec<Node>>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

struct Rule {
    name: String,
    at: usize,
    alts: Vec<Vec<Node>>,
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// Most repetitions one `{m,n}` may ask for (llguidance expands them).
const MAX_REPEAT: u32 = 10_000;

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            chars: src.char_indices().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn peek_at(&self, i: usize) -> Option<char> {
        self.chars.get(i).map(|&(_, c)| c)
    }

    /// Line and column (1-based, in characters) of char index `at`.
    fn line_col(&self, at: usize) -> (usize, usize) {
        let byte = self.chars.get(at).map_or(self.src.len(), |&(b, _)| b);
        let before = &self.src[..byte];
        let line = before.matches('\n').count() + 1;
        let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
            .chars()
            .count()
            + 1;
        (line, col)
    }

    fn err_at(&self, at: usize, message: impl std::fmt::Display) -> HearthError {
        let (line, col) = self.line_col(at);
        grammar_err(format!("GBNF line {line}, column {col}: {message}"))
    }

    fn err(&self, message: impl std::fmt::Display) -> HearthError {
        self.err_at(self.pos, message)
    }

    /// What is at the cursor, for messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the grammar".into(),
            Some('\n') => "a line break".into(),
            Some(c) => format!("`{c}`"),
        }
    }

    /// Skips spaces, line breaks and comments (`newlines` false: stops at a
    /// line break). Returns whether it crossed a line break.
    fn skip_space(&mut self, newlines: bool) -> bool {
        let mut crossed = false;
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => {
                    crossed = true;
                    self.pos += 1;
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        crossed
    }

    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        (self.pos > start).then(|| self.chars[start..self.pos].iter().map(|p| p.1).collect())
    }

    /// Whether a `name ::=` (the next rule) starts at the cursor.
    fn at_rule_start(&self) -> bool {
        let mut i = self.pos;
        while self.peek_at(i).is_some_and(is_name_char) {
            i += 1;
        }
        if i == self.pos {
            return false;
        }
        while matches!(self.peek_at(i), Some(' ' | '\t')) {
            i += 1;
        }
        self.peek_at(i) == Some(':') && self.peek_at(i + 1) == Some(':')
    }

    fn grammar(&mut self) -> Result<Vec<Rule>> {
        let mut rules = Vec::new();
        loop {
            self.skip_space(true);
            if self.peek().is_none() {
                return Ok(rules);
            }
            rules.push(self.rule()?);
        }
    }

    fn rule(&mut self) -> Result<Rule> {
        let at = self.pos;
        let name = self.name().ok_or_else(|| {
            self.err(format!(
                "expected a rule name (letters, digits, `-`), found {}",
                self.found()
            ))
        })?;
        self.skip_space(false);
        if !self.src[self.chars.get(self.pos).map_or(self.src.len(), |p| p.0)..].starts_with("::=")
        {
            return Err(self.err(format!(
                "expected `::=` after the rule name `{name}`, found {}",
                self.found()
            )));
        }
        self.pos += 3;
        let alts = self.alternatives(None)?;
        Ok(Rule { name, at, alts })
    }

    /// `seq | seq | ...`; `group` is where the enclosing `(` is, if any.
    fn alternatives(&mut self, group: Option<usize>) -> Result<Vec<Vec<Node>>> {
        let mut alts = vec![self.sequence(group)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alts.push(self.sequence(group)?);
        }
        Ok(alts)
    }

    fn sequence(&mut self, group: Option<usize>) -> Result<Vec<Node>> {
        let mut items: Vec<Node> = Vec::new();
        loop {
            let crossed = self.skip_space(true);
            let Some(c) = self.peek() else {
                if let Some(open) = group {
                    let (l, c) = self.line_col(open);
                    return Err(self.err(format!(
                        "expected `)` to close the group opened at line {l}, column {c}, \
                         found the end of the grammar"
                    )));
                }
                return Ok(items);
            };
            match c {
                '|' => return Ok(items),
                ')' if group.is_some() => return Ok(items),
                ')' => return Err(self.err("this `)` closes no group")),
                _ if group.is_none() && self.at_rule_start() => {
                    if !crossed {
                        return Err(self.err("expected a line break before the next rule"));
                    }
                    return Ok(items);
                }
                '*' | '+' | '?' | '{' => {
                    let node = items.pop().ok_or_else(|| {
                        self.err(format!("`{c}` must follow the element it repeats"))
                    })?;
                    let (min, max) = self.postfix()?;
                    items.push(Node::Repeat {
                        node: Box::new(node),
                        min,
                        max,
                    });
                }
                _ => items.push(self.element()?),
            }
        }
    }

    /// `*`, `+`, `?` or `{m}`, `{m,}`, `{m,n}` at the cursor.
    fn postfix(&mut self) -> Result<(u32, Option<u32>)> {
        let c = self.peek().unwrap_or(' ');
        self.pos += 1;
        match c {
            '*' => return Ok((0, None)),
            '+' => return Ok((1, None)),
            '?' => return Ok((0, Some(1))),
            _ => {}
        }
        let open = self.pos - 1;
        self.skip_space(false);
        let min = self.number("the least count in `{m,n}`")?;
        self.skip_space(false);
        let max = match self.peek() {
            Some('}') => Some(min),
            Some(',') => {
                self.pos += 1;
                self.skip_space(false);
                if self.peek() == Some('}') {
                    None
                } else {
                    Some(self.number("the most count in `{m,n}`")?)
                }
            }
            _ => {
                return Err(self.err(format!(
                    "expected `,` or `}}` in the repetition, found {}",
                    self.found()
                )))
            }
        };
        self.skip_space(false);
        if self.peek() != Some('}') {
            return Err(self.err(format!(
                "expected `}}` to close the repetition, found {}",
                self.found()
            )));
        }
        self.pos += 1;
        if let Some(max) = max {
            if max < min {
                return Err(self.err_at(
                    open,
                    format!("the repetition {{{min},{max}}} has its most below its least"),
                ));
            }
        }
        if max.unwrap_or(min) > MAX_REPEAT {
            return Err(self.err_at(
                open,
                format!("repetition counts are limited to {MAX_REPEAT}"),
            ));
        }
        Ok((min, max))
    }

    fn number(&mut self, what: &str) -> Result<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits: String = self.chars[start..self.pos].iter().map(|p| p.1).collect();
        if digits.is_empty() {
            return Err(self.err(format!("expected {what}, found {}", self.found())));
        }
        digits
            .parse()
            .map_err(|_| self.err_at(start, format!("{what} is too large")))
    }

    fn element(&mut self) -> Result<Node> {
        let start = self.pos;
        match self.peek() {
            Some('"') => self.literal(),
            Some('[') => self.class(),
            Some('.') => {
                self.pos += 1;
                Ok(Node::Any)
            }
            Some('(') => {
                self.pos += 1;
                let alts = self.alternatives(Some(start))?;
                // `alternatives` stops only at `)` (or fails) inside a group.
                self.pos += 1;
                Ok(Node::Group(alts))
            }
            Some(c) if is_name_char(c) => {
                let name = self.name().unwrap_or_default();
                Ok(Node::Ref { name, at: start })
            }
            _ => Err(self.err(format!(
                "expected a string, a character class, `.`, `(` or a rule name, found {}",
                self.found()
            ))),
        }
    }

    fn literal(&mut self) -> Result<Node> {
        let open = self.pos;
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.err_at(open, "this string is not closed (no matching `\"`)"))
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(Node::Literal(s));
                }
                Some('\\') => s.push(self.escape()?),
                Some(c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// The escape at the cursor (which is at its `\`).
    fn escape(&mut self) -> Result<char> {
        let at = self.pos;
        self.pos += 1;
        let c = self
            .peek()
            .ok_or_else(|| self.err_at(at, "`\\` at the end of the grammar"))?;
        self.pos += 1;
        let digits = match c {
            'n' => return Ok('\n'),
            'r' => return Ok('\r'),
            't' => return Ok('\t'),
            '\\' | '"' | '[' | ']' => return Ok(c),
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => {
                return Err(self.err_at(
                    at,
                    format!(
                        "unknown escape `\\{c}`; expected one of \\n \\r \\t \\\\ \\\" \\[ \\] \
                         \\xHH \\uHHHH \\UHHHHHHHH"
                    ),
                ))
            }
        };
        let start = self.pos;
        for _ in 0..digits {
            if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                return Err(self.err(format!(
                    "expected {digits} hex digits after `\\{c}`, found {}",
                    self.found()
                )));
            }
            self.pos += 1;
        }
        let hex: String = self.chars[start..self.pos].iter().map(|p| p.1).collect();
        u32::from_str_radix(&hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| self.err_at(at, format!("`\\{c}{hex}` is not a Unicode character")))
    }

    fn class(&mut self) -> Result<Node> {
        let open = self.pos;
        self.pos += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            let lo = match self.peek() {
                None => {
                    return Err(
                        self.err_at(open, "this character class is not closed (no matching `]`)")
                    )
                }
                Some(']') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => self.class_char()?,
            };
            let hi =
                if self.peek() == Some('-') && !matches!(self.peek_at(self.pos + 1), Some(']')) {
                    let dash = self.pos;
                    self.pos += 1;
                    if self.peek().is_none() {
                        return Err(self
                            .err_at(open, "this character class is not closed (no matching `]`)"));
                    }
                    let hi = self.class_char()?;
                    if hi < lo {
                        return Err(self.err_at(
                            dash,
                            format!("the range {lo:?}-{hi:?} ends before it starts"),
                        ));
                    }
                    hi
                } else {
                    lo
                };
            ranges.push((lo, hi));
        }
        if ranges.is_empty() {
            return if negated {
                Ok(Node::Any)
            } else {
                Err(self.err_at(open, "an empty character class `[]` matches nothing"))
            };
        }
        Ok(Node::Class { negated, ranges })
    }

    fn class_char(&mut self) -> Result<char> {
        match self.peek() {
            Some('\\') => self.escape(),
            Some(c) => {
                self.pos += 1;
                Ok(c)
            }
            None => Err(self.err("unexpected end of the grammar")),
        }
    }
}

fn grammar_err(message: String) -> HearthError {
    HearthError::InvalidField {
        field: "grammar".into(),
        message,
    }
}

/// The Lark name of GBNF rule `name`: unique, lowercase, never `start`.
fn lark_name(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name != "start";
    if plain {
        return name.to_string();
    }
    let mut out = String::from("x_");
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A Lark string: JSON's syntax, with every control character (and DEL,
/// which Lark's lexer also refuses raw) escaped.
fn lark_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn class_char(c: char, out: &mut String) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else {
        let _ = write!(out, "\\x{{{:x}}}", c as u32);
    }
}

fn emit_seq(seq: &[Node], out: &mut String) {
    if seq.is_empty() {
        out.push_str("\"\"");
        return;
    }
    for (i, n) in seq.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        emit(n, out);
    }
}

fn emit_alts(alts: &[Vec<Node>], out: &mut String) {
    for (i, seq) in alts.iter().enumerate() {
        if i > 0 {
            out.push_str(" | ");
        }
        emit_seq(seq, out);
    }
}

fn emit(n: &Node, out: &mut String) {
    match n {
        Node::Literal(s) => lark_string(s, out),
        Node::Class { negated, ranges } => {
            out.push_str("/[");
            if *negated {
                out.push('^');
            }
            for &(lo, hi) in ranges {
                class_char(lo, out);
                if hi != lo {
                    out.push('-');
                    class_char(hi, out);
                }
            }
            out.push_str("]/");
        }
        Node::Any => out.push_str("/(?s:.)/"),
        Node::Ref { name, .. } => out.push_str(&lark_name(name)),
        Node::Group(alts) => {
            out.push('(');
            emit_alts(alts, out);
            out.push(')');
        }
        Node::Repeat { node, min, max } => {
            if *max == Some(0) {
                // Lark refuses `{0}`: nothing, then.
                out.push_str("\"\"");
                return;
            }
            if matches!(**node, Node::Repeat { .. }) {
                out.push('(');
                emit(node, out);
                out.push(')');
            } else {
                emit(node, out);
            }
            match (*min, *max) {
                (0, None) => out.push('*'),
                (1, None) => out.push('+'),
                (0, Some(1)) => out.push('?'),
                (m, None) => {
                    let _ = write!(out, "{{{m},}}");
                }
                (m, Some(x)) if m == x => {
                    let _ = write!(out, "{{{m}}}");
                }
                (m, Some(x)) => {
                    let _ = write!(out, "{{{m},{x}}}");
                }
            }
        }
    }
}

/// Every rule reference in `nodes`, with where it is.
fn refs<'n>(nodes: &'n [Node], found: &mut Vec<(&'n str, usize)>) {
    for n in nodes {
        match n {
            Node::Ref { name, at } => found.push((name, *at)),
            Node::Group(alts) => alts.iter().for_each(|s| refs(s, found)),
            Node::Repeat { node, .. } => refs(std::slice::from_ref(node), found),
            _ => {}
        }
    }
}

/// Translates a GBNF grammar (llama.cpp's) to llguidance's Lark syntax.
/// A grammar that does not parse, a rule defined twice, a reference to an
/// undefined rule or a missing `root` is
/// `InvalidField { field: "grammar" }` with the line, column and what was
/// expected.
pub fn gbnf_to_lark(gbnf: &str) -> Result<String> {
    let mut p = Parser::new(gbnf);
    let rules = p.grammar()?;
    let mut defined: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rules {
        if let Some(&first) = defined.get(r.name.as_str()) {
            let (l, c) = p.line_col(first);
            return Err(p.err_at(
                r.at,
                format!(
                    "the rule `{}` is already defined at line {l}, column {c}",
                    r.name
                ),
            ));
        }
        defined.insert(&r.name, r.at);
    }
    if !defined.contains_key("root") {
        return Err(grammar_err(
            "the GBNF grammar has no `root` rule (its start rule)".into(),
        ));
    }
    let mut used = Vec::new();
    for r in &rules {
        r.alts.iter().for_each(|s| refs(s, &mut used));
    }
    if let Some((name, at)) = used
        .into_iter()
        .find(|(name, _)| !defined.contains_key(name))
    {
        return Err(p.err_at(at, format!("the rule `{name}` is used but not defined")));
    }
    let mut out = format!("start: {}\n", lark_name("root"));
    for r in &rules {
        out.push_str(&lark_name(&r.name));
        out.push_str(": ");
        emit_alts(&r.alts, &mut out);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::OnceLock;

    use super::super::compiler::mask_allows;
    use super::*;
    use crate::model::gguf::GgufFile;
    use crate::structured::{Constraint, ConstraintCompiler, ConstraintState};
    use crate::text::vocab::TokenizerSpec;
    use crate::text::Tokenizer;

    /// The default model's tokenizer (byte-level BPE, 49152 tokens) and a
    /// compiler over it. The file must be there (`hearth fetch`).
    fn smollm2() -> &'static (Tokenizer, ConstraintCompiler) {
        static T: OnceLock<(Tokenizer, ConstraintCompiler)> = OnceLock::new();
        T.get_or_init(|| {
            let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
            assert!(p.exists(), "{} is missing: run `hearth fetch`", p.display());
            let vocab = GgufFile::open(&p).unwrap().vocab().unwrap();
            let tok = Tokenizer::from_spec(&TokenizerSpec::Gguf(vocab)).unwrap();
            let c = ConstraintCompiler::new(&tok, tok.vocab_size()).unwrap();
            (tok, c)
        })
    }

    /// Every token's bytes (special tokens start with a marker byte no
    /// text has).
    fn token_bytes() -> &'static Vec<Vec<u8>> {
        static B: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        B.get_or_init(|| {
            let tok = &smollm2().0;
            let env = super::super::tok_env::tok_env(tok, tok.vocab_size()).unwrap();
            let trie = env.tok_trie();
            (0..tok.vocab_size() as u32)
                .map(|t| trie.token(t).to_vec())
                .collect()
        })
    }

    /// Whether some sequence of tokens, each allowed by the mask before
    /// it, spells `text[at..]` and leaves the output complete. (llguidance
    /// allows only the canonical tokens of bytes the grammar forces, so
    /// no one fixed tokenization of `text` will do.) Longest tokens
    /// first; a position once found a dead end stays one.
    fn spells(st: ConstraintState, text: &[u8], at: usize, dead: &mut HashSet<usize>) -> bool {
        let mut st = st;
        let mask = st.mask().unwrap();
        if at == text.len() {
            let eos = smollm2().0.eos_ids();
            return st.is_finished() || eos.iter().any(|&e| mask_allows(&mask, e));
        }
        if dead.contains(&at) {
            return false;
        }
        let bytes = token_bytes();
        let mut next: Vec<(usize, u32)> = (0..bytes.len() as u32)
            .filter(|&t| mask_allows(&mask, t))
            .filter(|&t| {
                let b = &bytes[t as usize];
                !b.is_empty() && text[at..].starts_with(b)
            })
            .map(|t| (bytes[t as usize].len(), t))
            .collect();
        next.sort_unstable_by(|a, b| b.cmp(a));
        for (len, t) in next {
            let mut s = st.clone();
            s.consume(t).unwrap();
            if spells(s, text, at + len, dead) {
                return true;
            }
        }
        dead.insert(at);
        false
    }

    /// Whether the constraint lets the model write exactly `text`.
    fn matches(c: &Constraint, text: &str) -> bool {
        let st = smollm2().1.compile(c).unwrap();
        spells(st, text.as_bytes(), 0, &mut HashSet::new())
    }

    fn check(gbnf: &str, accepted: &[&str], rejected: &[&str]) {
        gbnf_to_lark(gbnf).unwrap_or_else(|e| panic!("{e}\n{gbnf}"));
        let c = Constraint::Gbnf(gbnf.to_string());
        for s in accepted {
            assert!(
                matches(&c, s),
                "should accept {s:?}\n{}",
                gbnf_to_lark(gbnf).unwrap()
            );
        }
        for s in rejected {
            assert!(
                !matches(&c, s),
                "should reject {s:?}\n{}",
                gbnf_to_lark(gbnf).unwrap()
            );
        }
    }

    /// llama.cpp's grammars/json.gbnf.
    const JSON: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
"#;

    #[test]
    fn json_grammar() {
        check(
            JSON,
            &[
                "{}",
                "{\"a\": 1}",
                "{\"a\": [1, 2.5, -3e1, true, null], \"b\": {\"c\": \"x\\\"y\\n\\u00e9\"}}",
                "{\n  \"k\": \"é ü 日本\"\n}",
                "{ \"list\": [] , \"o\": {} }",
            ],
            &[
                "",
                "{",
                "[1, 2]",
                "{\"a\": }",
                "{\"a\": 01}",
                "{'a': 1}",
                "{\"a\": tru}",
                "{\"a\" 1}",
                "{\"a\": \"tab\there\"}",
                "{\"a\": \"\\q\"}",
                "{} {}",
            ],
        );
    }

    #[test]
    fn arithmetic_grammar() {
        let g = r#"root  ::= (expr "=" ws term "\n")+
expr  ::= term ([-+*/] term)*
term  ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num   ::= [0-9]+ ws
ws    ::= [ \t\n]*
"#;
        check(
            g,
            &["1+2=3\n", "(a +b_1)*c = 42\n", "x=1\ny/2=z\n", "((1))=2\n"],
            &[
                "1+=3\n",
                "1+2=3",
                "A=1\n",
                "(1=2\n",
                "1+2\n",
                "=1\n",
                "a + b=1\n",
            ],
        );
    }

    #[test]
    fn list_grammar_with_comments_and_bounded_repeats() {
        let g = "# a bulleted list of one to three items\n\
                 root ::= item{1,3}   # one to three\n\
                 item ::= \"- \" [A-Za-z ]+ \"\\n\" # text, then a line break\n";
        check(
            g,
            &["- apples\n", "- a\n- b c\n- D\n"],
            &["", "- a\n- b\n- c\n- d\n", "* a\n", "- a", "- \n", "- a1\n"],
        );
    }

    #[test]
    fn char_classes_escapes_and_negation() {
        let g = r#"root ::= "\"" [^"\\\n]* "\"" sp [\x41-\x43\u00E9] [\[\]] [-x] [y-] [\t] . "\U0001F600"
sp ::= " "
"#;
        check(
            g,
            &[
                "\"ab c\" A[-y\t!😀",
                "\"\" é]xy\t\n😀",
                "\"/ x\" C]--\t\"😀",
            ],
            &[
                "\"a\"b\" A[-y\t!😀",
                "\"a\\\" A[-y\t!😀",
                "\"a\nb\" A[-y\t!😀",
                "\"ab\" D[-y\t!😀",
                "\"ab\" A[ay\t!😀",
                "\"ab\" A[-y !😀",
                "\"ab\" A[-y\t!",
                "\"ab\" A[-y\t😀",
            ],
        );
    }

    #[test]
    fn repeats() {
        let g = r#"root ::= "a"{2} "b"{2,} "c"{1,3} "d"{0,2} ("e" | "f"){0} "g"? (("h" "i"?)+)* "."
"#;
        check(
            g,
            &[
                "aabbc.",
                "aabbbbbcccdd.",
                "aabbcg.",
                "aabbchhih.",
                "aabbcdghi.",
            ],
            &[
                "abbc.",
                "aaabbc.",
                "aabc.",
                "aabbccccd.",
                "aabbcddd.",
                "aabbce.",
                "aabbci.",
                "aabbc",
            ],
        );
    }

    #[test]
    fn multi_line_rules_and_names() {
        let g = "root ::=\n    Greeting   # a comment\n    | \"bye\" # another\n\
                 start ::= \"never\"\n\
                 Greeting ::= ( \"hello\"\n  | \"hi\" ) \" \" name-2\n\
                 name-2 ::= [a-z]+\n\
                 9lives ::= \"unused\" | \n";
        let accepted = ["hello bob", "hi x", "bye"];
        let rejected = ["never", "hello", "Hi bob", "hello bob bye", "unused"];
        check(g, &accepted, &rejected);
        check(&g.replace('\n', "\r\n"), &accepted, &rejected);
    }

    #[test]
    fn lark_output() {
        let g = "root ::= Foo \"a\\\"\\x7f\\\\\" [^/\\]a-z] . ws?\nFoo ::= \"\" | start\nstart ::= \"s\"{0}\nws ::= [ ]{1,}\n";
        assert_eq!(
            gbnf_to_lark(g).unwrap(),
            "start: root\n\
             root: x__foo \"a\\\"\\u007f\\\\\" /[^\\x{2f}\\x{5d}a-z]/ /(?s:.)/ ws?\n\
             x__foo: \"\" | x_start\n\
             x_start: \"\"\n\
             ws: /[\\x{20}]/+\n"
        );
    }

    fn error(gbnf: &str) -> String {
        match gbnf_to_lark(gbnf) {
            Err(HearthError::InvalidField { field, message }) => {
                assert_eq!(field, "grammar");
                message
            }
            other => panic!("{gbnf:?}: {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_place_and_what_was_expected() {
        let cases = [
            ("a ::= \"x\"\n", "no `root` rule"),
            (
                "root ::= a\n",
                "line 1, column 10: the rule `a` is used but not defined",
            ),
            (
                "root ::= \"a\"\n  b\n",
                "line 2, column 3: the rule `b` is used",
            ),
            (
                "root ::= \"\\q\"",
                "line 1, column 11: unknown escape `\\q`",
            ),
            ("root ::= \"\\x4\"", "expected 2 hex digits after `\\x`"),
            (
                "root ::= \"abc",
                "line 1, column 10: this string is not closed",
            ),
            (
                "root ::= [abc",
                "line 1, column 10: this character class is not closed",
            ),
            (
                "root ::= [z-a]",
                "line 1, column 12: the range 'z'-'a' ends before it starts",
            ),
            ("root ::= []", "empty character class"),
            (
                "root ::= (\"a\" | \"b\"\n",
                "expected `)` to close the group opened at line 1, column 10",
            ),
            (
                "root ::= \"a\")",
                "line 1, column 13: this `)` closes no group",
            ),
            (
                "root = \"a\"",
                "line 1, column 6: expected `::=` after the rule name `root`, found `=`",
            ),
            ("::= \"a\"", "line 1, column 1: expected a rule name"),
            (
                "root ::= \"a\"{x}",
                "line 1, column 14: expected the least count",
            ),
            ("root ::= \"a\"{3,1}", "has its most below its least"),
            ("root ::= \"a\"{2", "expected `,` or `}`"),
            (
                "root ::= * \"a\"",
                "line 1, column 10: `*` must follow the element",
            ),
            (
                "root ::= \"a\" b ::= \"c\"",
                "line 1, column 14: expected a line break before the next rule",
            ),
            (
                "root ::= \"a\"\nroot ::= \"b\"",
                "line 2, column 1: the rule `root` is already defined at line 1, column 1",
            ),
            (
                "root ::= \"a\" ; \"b\"",
                "line 1, column 14: expected a string, a character class",
            ),
        ];
        for (g, want) in cases {
            let got = error(g);
            assert!(got.contains(want), "{g:?}: {got:?} should contain {want:?}");
        }
    }

    #[test]
    fn a_bad_grammar_is_an_invalid_grammar_field_from_the_compiler() {
        let e = smollm2()
            .1
            .compile(&Constraint::Gbnf("root ::= \"a\" |\nx ::= y".into()))
            .unwrap_err();
        assert!(
            matches!(&e, HearthError::InvalidField { field, message }
                if field == "grammar" && message.contains("`y` is used but not defined")),
            "{e:?}"
        );
    }
}

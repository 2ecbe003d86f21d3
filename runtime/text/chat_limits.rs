//! Limits on rendering a chat template. A template comes with the model
//! file, so it is code nobody reviewed: without limits two nested
//! `range(100000)` loops run for hours and a loop printing long strings
//! allocates gigabytes. Every render gets an instruction budget (minijinja's
//! fuel) that grows with the conversation, a recursion limit, and an output
//! cap; breaking one is a `HearthError::Template` naming the limit.
//!
//! Measured (`tests/chat_template_limits.rs`): Qwen2.5's template with two
//! tools spends about 80 instructions on a one-message chat and about 50 per
//! further message; the budgets below leave 50x headroom or more, and the
//! largest takes minijinja well under a second.

use std::cell::Cell;
use std::io;

use minijinja::{ErrorKind, Template};
use serde::Serialize;

use crate::HearthError;

/// Instructions any render may spend.
pub const FUEL_BASE: u64 = 1_000_000;
/// Further instructions per message and per tool.
pub const FUEL_PER_ITEM: u64 = 5_000;
/// The most instructions a render may spend however long the conversation.
pub const FUEL_MAX: u64 = 10_000_000;
/// Macro and loop nesting (minijinja counts a macro call as several levels).
pub const RECURSION_LIMIT: usize = 200;
/// Output any render may produce.
pub const OUTPUT_BASE: usize = 16 << 20;
/// Further output allowed per byte of input (message contents, tool calls
/// and tool definitions), for templates that repeat the conversation.
pub const OUTPUT_PER_INPUT_BYTE: usize = 4;

/// The limits of one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    pub fuel: u64,
    pub max_output: usize,
}

impl RenderLimits {
    /// The limits for `items` messages and tools holding `input_bytes` of text.
    pub fn for_input(items: usize, input_bytes: usize) -> RenderLimits {
        RenderLimits {
            fuel: FUEL_BASE
                .saturating_add(FUEL_PER_ITEM.saturating_mul(items as u64))
                .min(FUEL_MAX),
            max_output: OUTPUT_BASE
                .saturating_add(input_bytes.saturating_mul(OUTPUT_PER_INPUT_BYTE)),
        }
    }
}

/// A writer that refuses to hold more than `cap` bytes.
struct BoundedWriter {
    out: Vec<u8>,
    cap: usize,
    overflowed: Cell<bool>,
}

impl io::Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len().saturating_add(buf.len()) > self.cap {
            self.overflowed.set(true);
            return Err(io::Error::other("chat template output too large"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Renders `tmpl` (its environment carries the fuel) into at most
/// `max_output` bytes.
pub(crate) fn render_bounded<S: Serialize>(
    tmpl: &Template<'_, '_>,
    ctx: S,
    limits: RenderLimits,
) -> crate::Result<String> {
    let mut w = BoundedWriter {
        out: Vec::new(),
        cap: limits.max_output,
        overflowed: Cell::new(false),
    };
    let result = tmpl.render_captured_to(ctx, &mut w).map(drop);
    if w.overflowed.get() {
        return Err(HearthError::Template(format!(
            "the chat template's output exceeds {} bytes (its limit for this conversation)",
            limits.max_output
        )));
    }
    if let Err(e) = result {
        return Err(match e.kind() {
            ErrorKind::OutOfFuel => HearthError::Template(format!(
                "the chat template ran out of its instruction budget ({} instructions for this \
                 conversation)",
                limits.fuel
            )),
            _ => super::chat::template_err(e),
        });
    }
    String::from_utf8(w.out)
        .map_err(|_| HearthError::Template("the chat template wrote invalid UTF-8".into()))
}

/// How much fuel `tmpl` spends rendering `ctx` (no limits), for measuring
/// real templates.
pub(crate) fn fuel_spent<S: Serialize>(tmpl: &Template<'_, '_>, ctx: S) -> crate::Result<u64> {
    let captured = tmpl
        .render_captured_to(ctx, io::sink())
        .map_err(super::chat::template_err)?;
    Ok(captured.state().fuel_levels().map_or(0, |(used, _)| used))
}

//! Chat templates run under limits (`hearth::text::chat_limits`): hostile
//! templates fail with a clear `HearthError::Template`, quickly and without
//! allocating gigabytes, while real templates stay far inside the budget.

use std::time::{Duration, Instant};

use hearth::structured::tools::{Tool, ToolCall};
use hearth::text::chat_limits::{RenderLimits, FUEL_BASE, FUEL_PER_ITEM, OUTPUT_BASE};
use hearth::text::{ChatMessage, ChatTemplate};
use hearth::HearthError;
use serde_json::json;

const QWEN25: &str = include_str!("../runtime/structured/tools/qwen2_5.jinja");

/// Two nested loops of 10^10 iterations in all: hours without a budget.
const NESTED_LOOPS: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}";

/// 100,000 strings of 100 kB each: 10 GB of output.
const HUGE_OUTPUT: &str = "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}";

fn user(text: &str) -> ChatMessage {
    ChatMessage::new("user", text)
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "get_weather",
            Some("The weather in a city"),
            json!({"type": "object", "properties": {"city": {"type": "string"},
                   "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}),
        ),
        Tool::new(
            "search",
            Some("Searches the web"),
            json!({"type": "object", "properties": {"q": {"type": "string"}}}),
        ),
    ]
}

/// A conversation of `turns` user/assistant pairs, with tool calls and results.
fn conversation(turns: usize) -> Vec<ChatMessage> {
    let mut m = vec![ChatMessage::new("system", "You are helpful.")];
    for i in 0..turns {
        m.push(user(&format!(
            "Question {i}: what is the weather in Paris?"
        )));
        m.push(ChatMessage::assistant_calls(
            "",
            vec![ToolCall {
                id: format!("call_{i}"),
                name: "get_weather".into(),
                arguments: r#"{"city": "Paris"}"#.into(),
            }],
        ));
        m.push(ChatMessage::tool_result(format!("call_{i}"), "sunny, 21 C"));
        m.push(ChatMessage::new("assistant", "It is sunny."));
    }
    m
}

fn template_error(r: hearth::Result<String>) -> String {
    match r {
        Err(HearthError::Template(m)) => m,
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn real_templates_spend_a_small_part_of_their_budget() {
    let t = ChatTemplate::new(QWEN25, "", "<|im_end|>").unwrap();
    for turns in [0, 1, 10, 100, 1000] {
        let messages = conversation(turns);
        let spent = t.fuel_spent(&messages, &tools()).unwrap();
        let budget = ChatTemplate::limits_for(&messages, &tools()).fuel;
        eprintln!(
            "qwen2.5 with tools, {} messages: {spent} instructions of {budget}",
            messages.len()
        );
        assert!(
            spent * 20 < budget,
            "{spent} instructions is too close to the budget {budget}"
        );
        // And it renders under the limits.
        t.render_with_tools(&messages, &tools(), true).unwrap();
    }
}

#[test]
fn nested_range_loops_run_out_of_instructions_quickly() {
    let t = ChatTemplate::new(NESTED_LOOPS, "", "").unwrap();
    let t0 = Instant::now();
    let m = template_error(t.render(&[user("hi")], true));
    assert!(m.contains("instruction budget"), "{m}");
    // The tools path has the same budget.
    let m = template_error(t.render_with_tools(&[user("hi")], &tools(), true));
    assert!(m.contains("instruction budget"), "{m}");
    // The longest budget, that of a long conversation.
    let long = conversation(3000);
    assert_eq!(
        ChatTemplate::limits_for(&long, &[]).fuel,
        hearth::text::chat_limits::FUEL_MAX
    );
    let t1 = Instant::now();
    let m = template_error(t.render(&long, true));
    assert!(m.contains("instruction budget"), "{m}");
    eprintln!("the largest budget ran out in {:?}", t1.elapsed());
    // A hang guard, not a speed claim: unlimited, this takes hours.
    assert!(t0.elapsed() < Duration::from_secs(60));
}

#[test]
fn huge_output_is_refused_at_its_cap() {
    let t = ChatTemplate::new(HUGE_OUTPUT, "", "").unwrap();
    let m = template_error(t.render(&[user("hi")], true));
    assert!(m.contains("output exceeds"), "{m}");
    assert!(
        m.contains(&OUTPUT_BASE.to_string()) || m.contains("bytes"),
        "{m}"
    );
    // One expression's worth: minijinja caps a repeated string at 100 MB.
    let t = ChatTemplate::new("{{ 'x' * 10**9 }}", "", "").unwrap();
    template_error(t.render(&[user("hi")], true));
}

#[test]
fn deep_recursion_is_an_error_not_a_stack_overflow() {
    let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    // On a thread with the default 2 MiB stack, as the server's workers have.
    let r = std::thread::spawn(move || t.render(&[user("hi")], true))
        .join()
        .expect("no stack overflow");
    template_error(r);
}

#[test]
fn budgets_grow_with_the_conversation_up_to_a_cap() {
    let one = ChatTemplate::limits_for(&[user("hi")], &[]);
    assert_eq!(one.fuel, FUEL_BASE + FUEL_PER_ITEM);
    let many = ChatTemplate::limits_for(&conversation(10), &tools());
    assert!(many.fuel > one.fuel);
    let huge = RenderLimits::for_input(usize::MAX, usize::MAX);
    assert_eq!(huge.fuel, hearth::text::chat_limits::FUEL_MAX);
    assert_eq!(huge.max_output, usize::MAX);
}

//! Tool calling through `hearth serve` on a tiny random model with the
//! Qwen2.5 template and a byte-level vocabulary: a forced call (`required`,
//! a named function) comes back as `message.tool_calls` whose arguments
//! satisfy the tool's schema (the grammar makes a random model's output a
//! valid call), streamed deltas add up to the same call, and a conversation
//! with calls and results renders and answers.

mod serve_common;

use serde_json::{json, Value};
use serve_common::tools_model::tool_model_bytes;
use serve_common::*;

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 8},
            "unit": {"enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["city", "unit", "days"], "additionalProperties": false}}})
}

fn time_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {
            "zone": {"enum": ["utc", "cet"]}}, "required": ["zone"], "additionalProperties": false}}})
}

/// The schema checks of the two tools, by hand.
fn check_args(name: &str, args: &str) {
    let v: Value = serde_json::from_str(args).unwrap_or_else(|e| panic!("{e}: {args}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {args}"));
    match name {
        "get_weather" => {
            assert_eq!(o.len(), 3, "{args}");
            assert!(o["city"].as_str().unwrap().chars().count() <= 8, "{args}");
            assert!(["c", "f"].contains(&o["unit"].as_str().unwrap()), "{args}");
            assert!((1..=5).contains(&o["days"].as_i64().unwrap()), "{args}");
        }
        "get_time" => {
            assert_eq!(o.len(), 1, "{args}");
            assert!(
                ["utc", "cet"].contains(&o["zone"].as_str().unwrap()),
                "{args}"
            );
        }
        other => panic!("unknown tool {other}"),
    }
}

fn body(tool_choice: Value, extra: Value) -> Value {
    let mut b = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [weather_tool(), time_tool()],
        "tool_choice": tool_choice,
        "max_tokens": 200,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// The one call of a non-streamed response, checked.
fn the_call(v: &Value) -> (String, String) {
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    assert!(c["message"]["content"].is_null(), "{v}");
    let calls = c["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{v}");
    let call = &calls[0];
    assert_eq!(call["type"], "function");
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("call_") && id.len() == 29, "{id}");
    let name = call["function"]["name"].as_str().unwrap().to_string();
    let args = call["function"]["arguments"].as_str().unwrap().to_string();
    check_args(&name, &args);
    (name, args)
}

#[tokio::test]
async fn forced_calls_are_valid_and_stream_the_same() {
    let server = Server::start_with_model(tool_model_bytes(), &[]);
    let c = client();
    let url = server.url("/v1/chat/completions");

    let r = post(
        &c,
        &url,
        &body(json!("required"), json!({"parallel_tool_calls": false})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    the_call(&v);

    let named = json!({"type": "function", "function": {"name": "get_time"}});
    let r = post(&c, &url, &body(named.clone(), json!({}))).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let (name, args) = the_call(&v);
    assert_eq!(name, "get_time");

    // Streamed: the deltas as OpenAI sends them add up to the same call.
    let r = post(&c, &url, &body(named, json!({"stream": true}))).await;
    let payloads = SseReader::new(r).rest().await;
    let s = assemble(&payloads, "chat.completion.chunk", 1);
    assert_eq!(s.finish[0].as_deref(), Some("tool_calls"));
    assert_eq!(s.text[0], "", "no content besides the call");
    let (mut sname, mut sargs, mut firsts) = (String::new(), String::new(), 0);
    for ch in &s.chunks {
        for tc in ch["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(tc["index"], 0);
            if let Some(id) = tc["id"].as_str() {
                firsts += 1;
                assert!(id.starts_with("call_"));
                assert_eq!(tc["type"], "function");
                sname = tc["function"]["name"].as_str().unwrap().to_string();
            } else {
                assert!(tc["function"].get("name").is_none(), "{tc}");
            }
            sargs.push_str(tc["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(firsts, 1);
    assert_eq!((sname, sargs), (name, args));
    wait_idle(&c, &server).await;
}

#[tokio::test]
async fn a_conversation_with_calls_and_results_renders() {
    let server = Server::start_with_model(tool_model_bytes(), &[]);
    let c = client();
    let url = server.url("/v1/chat/completions");
    let b = json!({
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\", \"days\": 1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
        ],
        "tools": [weather_tool()],
        "max_tokens": 4,
        "temperature": 0,
    });
    let r = post(&c, &url, &b).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Its prompt is the template's rendering: the usage counts its bytes
    // (one token each, the tags and ChatML markers one token each).
    let v: Value = r.json().await.unwrap();
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        prompt > 600,
        "the tools and the call are in the prompt: {v}"
    );
    // tool_choice none: the tools stay out, the history stays in.
    let mut none = b.clone();
    none["tool_choice"] = json!("none");
    let v: Value = post(&c, &url, &none).await.json().await.unwrap();
    let fewer = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(fewer < prompt - 300, "{fewer} vs {prompt}");
    assert!(
        v["choices"][0]["message"].get("tool_calls").is_none(),
        "{v}"
    );
}

#[tokio::test]
async fn bad_tools_are_400s_naming_the_field() {
    let server = Server::start_with_model(tool_model_bytes(), &[]);
    let c = client();
    let url = server.url("/v1/chat/completions");
    let bad_schema = json!([{"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {"a": {"type": "strin"}}}}}]);
    let cases = [
        (
            json!({"tools": bad_schema, "tool_choice": "required"}),
            "tools",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
    ];
    for (extra, param) in cases {
        let r = post(&c, &url, &body(json!("auto"), extra.clone())).await;
        let e = expect_error(r, 400).await;
        assert_eq!(e["param"], param, "{extra}: {e}");
    }
    let r = post(
        &c,
        &server.url("/v1/completions"),
        &completion_body("hi", 2, json!({"tools": [weather_tool()]})),
    )
    .await;
    assert_eq!(expect_error(r, 400).await["param"], "tools");
}

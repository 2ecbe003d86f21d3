use serde_json::{json, Value};

use super::*;
use crate::text::vocab::{GgufVocab, TokenizerSpec};
use crate::text::ChatMessage;

const QWEN25: &str = include_str!("qwen2_5.jinja");

fn qwen() -> ChatTemplate {
    ChatTemplate::new(QWEN25, "", "<|im_end|>").unwrap()
}

fn weather() -> Tool {
    Tool::new(
        "get_weather",
        Some("Get the weather"),
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    )
}

fn call(name: &str, args: &str) -> ToolCall {
    ToolCall {
        id: "call_1".into(),
        name: name.into(),
        arguments: args.into(),
    }
}

/// GPT-2's printable character for every byte.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from_u32(b as u32).unwrap();
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// A byte-level vocabulary (every byte a token) with ChatML's control
/// tokens and Qwen's `<tool_call>` tags as user-defined tokens.
pub(crate) fn byte_tokenizer() -> Tokenizer {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut types = vec![1; 256];
    for (t, ty) in [
        ("<|im_start|>", 3),
        ("<|im_end|>", 3),
        ("<tool_call>", 4),
        ("</tool_call>", 4),
        ("[TOOL_CALLS]", 3),
    ] {
        tokens.push(t.into());
        types.push(ty);
    }
    let v = GgufVocab {
        model: "gpt2".into(),
        pre: Some("qwen2".into()),
        token_types: Some(types),
        merges: Some(vec![]),
        eos_token_id: Some(257),
        add_bos_token: Some(false),
        chat_template: Some(QWEN25.into()),
        tokens,
        ..Default::default()
    };
    Tokenizer::from_spec(&TokenizerSpec::Gguf(v)).unwrap()
}

#[test]
fn formats_are_detected_from_templates() {
    assert_eq!(ToolFormat::detect(QWEN25), ToolFormat::Hermes);
    assert_eq!(
        ToolFormat::detect(crate::text::chat::CHATML_TEMPLATE),
        ToolFormat::Generic
    );
    assert_eq!(
        ToolFormat::detect("{{ '[AVAILABLE_TOOLS]' }}{{ '[TOOL_CALLS]' }}"),
        ToolFormat::Mistral
    );
    assert_eq!(
        ToolFormat::detect("{% if tools %}<|start_header_id|>ipython{% endif %}"),
        ToolFormat::Llama3
    );
    assert_eq!(qwen().tool_format(), ToolFormat::Hermes);
}

#[test]
fn qwen25_renders_tools_calls_and_results_as_transformers() {
    let msgs = vec![
        ChatMessage::new("user", "What's the weather in Paris?"),
        ChatMessage::assistant_calls("", vec![call("get_weather", r#"{"city":"Paris"}"#)]),
        ChatMessage::tool_result("call_1", r#"{"temperature": 21}"#),
    ];
    let got = render_chat(&qwen(), &msgs, &[weather()], &ToolChoice::Auto).unwrap();
    let want = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n\
# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather\", \
\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}\n\
</tools>\n\nFor each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n\
</tool_call><|im_end|>\n\
<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n\
<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n\
<|im_start|>user\n<tool_response>\n{\"temperature\": 21}\n</tool_response><|im_end|>\n\
<|im_start|>assistant\n";
    assert_eq!(got, want);
    // tool_choice none: no tools in the prompt (the calls in the history stay).
    let none = render_chat(&qwen(), &msgs[..1], &[weather()], &ToolChoice::None).unwrap();
    assert_eq!(
        none,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Unparsable arguments reach the template as the string.
    let odd = vec![ChatMessage::assistant_calls("ok", vec![call("f", "{bad")])];
    let got = qwen().render(&odd, false).unwrap();
    assert!(
        got.ends_with("<|im_start|>assistant\nok\n<tool_call>\n{\"name\": \"f\", \"arguments\": \"{bad\"}\n</tool_call><|im_end|>\n"),
        "{got}"
    );
}

#[test]
fn generic_format_instructs_in_the_system_message() {
    let chatml = ChatTemplate::new(crate::text::chat::CHATML_TEMPLATE, "", "").unwrap();
    let msgs = vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Weather?"),
        ChatMessage::assistant_calls("", vec![call("get_weather", r#"{"city":"Oslo"}"#)]),
        ChatMessage::tool_result("call_1", "cold"),
    ];
    let got = render_chat(&chatml, &msgs, &[weather()], &ToolChoice::Auto).unwrap();
    let want = format!(
        "<|im_start|>system\nBe brief.\n\n{}<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n\
<|im_start|>assistant\n<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Oslo\"}}}}\n</tool_call><|im_end|>\n\
<|im_start|>user\n<tool_response>\ncold\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
        generic_instruction(&[weather()])
    );
    assert_eq!(got, want);
    assert!(generic_instruction(&[weather()]).contains(
        "\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather\""
    ));
    // The generic format's calls parse back with the Hermes parser.
    let (content, calls) = parse_tool_calls(
        ToolFormat::Generic,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
    );
    assert_eq!(content, "");
    assert_eq!(calls[0].arguments, r#"{"city": "Oslo"}"#);
}

#[test]
fn one_shot_parses_in_every_format() {
    let (c, calls) = parse_tool_calls(
        ToolFormat::Hermes,
        "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n\
<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>",
    );
    assert_eq!(c, "Let me look.");
    let got: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.name.as_str(), c.arguments.as_str()))
        .collect();
    assert_eq!(
        got,
        [("get_weather", r#"{"city": "Paris"}"#), ("get_time", "{}")]
    );
    assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29);
    assert_ne!(calls[0].id, calls[1].id);

    let (c, calls) = parse_tool_calls(
        ToolFormat::Llama3,
        "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}",
    );
    assert_eq!((c.as_str(), calls[0].name.as_str()), ("", "get_weather"));
    assert_eq!(calls[0].arguments, r#"{"city": "Rome"}"#);
    let (c, calls) = parse_tool_calls(ToolFormat::Llama3, "{\"answer\": 4}");
    assert_eq!((c.as_str(), calls.len()), ("{\"answer\": 4}", 0));

    let (c, calls) = parse_tool_calls(
        ToolFormat::Mistral,
        "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"arguments\": {\"y\": [2]}, \"name\": \"b\"}]",
    );
    assert_eq!(c, "");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].id.len(), 9);
    assert_eq!(
        (calls[1].name.as_str(), calls[1].arguments.as_str()),
        ("b", r#"{"y":[2]}"#)
    );

    // An output cut inside the closing tag (max_tokens) keeps the call.
    let (c, calls) = parse_tool_calls(
        ToolFormat::Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_c",
    );
    assert_eq!((c.as_str(), calls.len()), ("", 1));

    // Not calls: text stays text.
    for (f, t) in [
        (ToolFormat::Hermes, "a <tool_call> b"),
        (ToolFormat::Hermes, "x < y and <tool_cal"),
        (ToolFormat::Hermes, "<tool_call>{\"no\": 1}</tool_call>"),
        (ToolFormat::Mistral, "Plain [answer]."),
    ] {
        let (c, calls) = parse_tool_calls(f, t);
        assert!(calls.is_empty(), "{t}");
        assert!(
            c.starts_with(&t[..1]) && c.len() <= t.len() + 1,
            "{t} -> {c}"
        );
    }
    assert_eq!(
        parse_tool_calls(ToolFormat::Hermes, "x < y and <tool_cal").0,
        "x < y and <tool_cal"
    );
}

fn stream(format: ToolFormat, chunks: &[&str]) -> (String, Vec<ToolCall>, Vec<ToolDelta>) {
    let mut p = ToolParser::new(format, 3);
    let mut deltas = Vec::new();
    for c in chunks {
        deltas.extend(p.feed(c));
    }
    deltas.extend(p.finish());
    let mut content = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    for d in &deltas {
        match d {
            ToolDelta::Content(c) => content.push_str(c),
            ToolDelta::Call(d) => {
                if d.index == calls.len() {
                    assert!(d.id.is_some() && d.name.is_some(), "first delta: {d:?}");
                    calls.push(ToolCall {
                        id: String::new(),
                        name: d.name.clone().unwrap(),
                        arguments: String::new(),
                    });
                } else {
                    assert!(d.id.is_none() && d.name.is_none(), "later delta: {d:?}");
                }
                calls[d.index].arguments.push_str(&d.arguments);
            }
        }
    }
    (content, calls, deltas)
}

fn strip_ids(calls: &[ToolCall]) -> Vec<(String, String)> {
    calls
        .iter()
        .map(|c| (c.name.clone(), c.arguments.clone()))
        .collect()
}

#[test]
fn streaming_equals_one_shot_at_every_cut() {
    let samples = [
        (ToolFormat::Hermes, "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa\\\"ris}\", \"n\": [1, {\"a\": 2}]}}\n</tool_call>\n<tool_call>\n{\"name\": \"t\", \"arguments\": {}}\n</tool_call> bye <tool_ca"),
        (ToolFormat::Hermes, "no calls < here <tool_cal <tool_callx> done"),
        (ToolFormat::Generic, "<tool_call>{\"arguments\": {\"k\": 1}, \"name\": \"late\"}</tool_call>"),
        (ToolFormat::Llama3, "  <|python_tag|>{\"name\": \"f\", \"parameters\": {\"q\": \"é\"}}; {\"name\": \"g\", \"parameters\": {}}"),
        (ToolFormat::Llama3, "Just text {\"name\": 1}"),
        (ToolFormat::Mistral, "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"x\": true}}, {\"name\": \"b\", \"arguments\": {\"y\": null}}] tail"),
        (ToolFormat::Mistral, "[{\"name\": \"a\", \"arguments\": {\"s\": \"]}\"}}]"),
    ];
    for (format, text) in samples {
        let (c1, calls1) = parse_tool_calls(format, text);
        let one = strip_ids(&calls1);
        let cuts: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &i in &cuts {
            for &j in cuts.iter().filter(|&&j| j >= i) {
                let (c, calls, _) = stream(format, &[&text[..i], &text[i..j], &text[j..]]);
                assert_eq!(
                    (&c, &strip_ids(&calls)),
                    (&c1, &one),
                    "{format:?} cut at {i},{j}: {text}"
                );
            }
        }
        // Character by character, too.
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        let (c, calls, deltas) = stream(format, &refs);
        assert_eq!((&c, &strip_ids(&calls)), (&c1, &one), "{text}");
        if !one.is_empty() && format != ToolFormat::Generic {
            // Arguments arrive in pieces as they are generated.
            let pieces = deltas
                .iter()
                .filter(|d| matches!(d, ToolDelta::Call(c) if c.index == 0))
                .count();
            assert!(pieces > 2, "{text}: {deltas:?}");
        }
    }
    let (c, calls) = parse_tool_calls(samples[0].0, samples[0].1);
    assert_eq!(c, "Sure.bye <tool_ca"); // whitespace around calls is dropped
    assert_eq!(calls.len(), 2);
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].arguments).unwrap(),
        json!({"city": "Pa\"ris}", "n": [1, {"a": 2}]})
    );
}

#[test]
fn rendered_calls_parse_back() {
    // parse(render(call)) == call: the template's own writing of a call is
    // what the parser reads.
    let calls = vec![
        call("get_weather", r#"{"city": "Paris", "days": [1, 2]}"#),
        call("get_time", r#"{"tz": "UTC"}"#),
    ];
    let rendered = qwen()
        .render(
            &[ChatMessage::assistant_calls("Checking.", calls.clone())],
            false,
        )
        .unwrap();
    let body = rendered
        .strip_prefix("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>assistant\n")
        .and_then(|s| s.strip_suffix("<|im_end|>\n"))
        .unwrap();
    let (content, parsed) = parse_tool_calls(ToolFormat::Hermes, body);
    assert_eq!(content, "Checking.");
    assert_eq!(strip_ids(&parsed), strip_ids(&calls));
}

#[test]
fn bad_tools_name_the_field() {
    let bad = |tools: Vec<Tool>, choice: ToolChoice| match validate(&tools, &choice) {
        Err(HearthError::InvalidField { field, message }) => (field, message),
        other => panic!("{other:?}"),
    };
    let t = weather();
    assert_eq!(
        bad(vec![Tool::new("", None, json!({}))], ToolChoice::Auto).0,
        "tools"
    );
    let (f, m) = bad(vec![t.clone(), t.clone()], ToolChoice::Auto);
    assert_eq!(f, "tools");
    assert!(m.contains("used twice"), "{m}");
    let (f, m) = bad(vec![Tool::new("f", None, json!("x"))], ToolChoice::Auto);
    assert_eq!(f, "tools");
    assert!(m.contains("parameters"), "{m}");
    assert_eq!(
        bad(vec![t.clone()], ToolChoice::Function("nope".into())).0,
        "tool_choice"
    );
    assert_eq!(bad(vec![], ToolChoice::Required).0, "tool_choice");
    validate(
        std::slice::from_ref(&t),
        &ToolChoice::Function("get_weather".into()),
    )
    .unwrap();

    let mut r = Request::chat("hi");
    r.tools = vec![t];
    r.tool_choice = ToolChoice::Required;
    r.validate().unwrap();
    r.constraint = Some(Constraint::JsonObject);
    match r.validate() {
        Err(HearthError::InvalidField { field, .. }) => assert_eq!(field, "tool_choice"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn grammars_compile_and_bad_schemas_are_caught() {
    let tok = byte_tokenizer();
    let comp = ConstraintCompiler::new(&tok, tok.vocab_size()).unwrap();
    let time = Tool::new(
        "get_time",
        None,
        json!({"type": "object", "properties": {}}),
    );
    let tools = [weather(), time];
    for format in [
        ToolFormat::Hermes,
        ToolFormat::Llama3,
        ToolFormat::Mistral,
        ToolFormat::Generic,
    ] {
        for (choice, parallel) in [
            (ToolChoice::Required, true),
            (ToolChoice::Required, false),
            (ToolChoice::Function("get_time".into()), true),
        ] {
            let c = tool_grammar(format, &tools, &choice, parallel, Some(&tok));
            comp.compile(&c)
                .unwrap_or_else(|e| panic!("{format:?} {choice:?}: {e}\n{c:?}"));
        }
    }
    let Constraint::Lark(src) = tool_grammar(
        ToolFormat::Hermes,
        &tools,
        &ToolChoice::Function("get_time".into()),
        true,
        Some(&tok),
    ) else {
        panic!()
    };
    assert!(
        src.contains("start: call\n") && !src.contains("call_0"),
        "{src}"
    );
    // Mistral's marker is a special token: named by id.
    let Constraint::Lark(src) = tool_grammar(
        ToolFormat::Mistral,
        &tools,
        &ToolChoice::Required,
        true,
        Some(&tok),
    ) else {
        panic!()
    };
    assert!(
        src.starts_with("start: <[260]> \"[\" call (\", \" call)* \"]\""),
        "{src}"
    );

    // A schema llguidance refuses surfaces at prepare time, naming `tools`.
    let mut r = Request::chat("hi");
    r.tools = vec![Tool::new(
        "f",
        None,
        json!({"type": "object", "properties": {"a": {"type": "strin"}}}),
    )];
    r.tool_choice = ToolChoice::Required;
    let tpl = qwen();
    match prepare_request(&mut r, &tok, Some(&tpl), Some(&comp)) {
        Err(HearthError::InvalidField { field, message }) => {
            assert_eq!(field, "tools");
            assert!(message.contains("do not compile"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// Walks the grammar greedily with a tiny "model" that always picks the
/// lowest allowed token: the output must parse back as one call whose
/// arguments satisfy the schema.
#[test]
fn forced_output_parses_as_a_valid_call() {
    let tok = byte_tokenizer();
    let comp = ConstraintCompiler::new(&tok, tok.vocab_size()).unwrap();
    let tool = Tool::new(
        "set_mode",
        None,
        json!({"type": "object", "properties": {"mode": {"enum": ["fast", "slow"]},
               "level": {"type": "integer", "minimum": 1, "maximum": 3}},
               "required": ["mode", "level"], "additionalProperties": false}),
    );
    for format in [ToolFormat::Hermes, ToolFormat::Llama3, ToolFormat::Mistral] {
        let mut r = Request::chat("go");
        r.tools = vec![weather(), tool.clone()];
        r.tool_choice = ToolChoice::Function("set_mode".into());
        let tpl = ChatTemplate::new(
            match format {
                ToolFormat::Hermes => QWEN25,
                ToolFormat::Llama3 => {
                    "<|start_header_id|>{% if tools %}tools{% endif %}{{ messages[0].content }}"
                }
                _ => "[TOOL_CALLS]{{ messages[0].content }}",
            },
            "",
            "",
        )
        .unwrap();
        prepare_request(&mut r, &tok, Some(&tpl), Some(&comp)).unwrap();
        assert_eq!(r.tool_choice, ToolChoice::Auto);
        let mut st = comp.compile(r.constraint.as_ref().unwrap()).unwrap();
        let mut ids = Vec::new();
        while !st.is_finished() && ids.len() < 400 {
            let m = st.mask().unwrap();
            let t = (0..tok.vocab_size() as u32)
                .find(|&t| crate::structured::compiler::mask_allows(&m, t))
                .unwrap();
            if tok.is_eos(t) {
                break;
            }
            st.consume(t).unwrap();
            ids.push(t);
        }
        let text = tok.decode(&ids, true).unwrap();
        let (content, calls) = parse_tool_calls(format, &text);
        assert_eq!(
            (content.as_str(), calls.len()),
            ("", 1),
            "{format:?}: {text}"
        );
        assert_eq!(calls[0].name, "set_mode");
        let args: Value = serde_json::from_str(&calls[0].arguments).unwrap();
        assert!(
            ["fast", "slow"].contains(&args["mode"].as_str().unwrap()),
            "{args}"
        );
        assert!((1..=3).contains(&args["level"].as_i64().unwrap()), "{args}");
        assert_eq!(args.as_object().unwrap().len(), 2);
    }
}

#[test]
fn tool_calls_serialize_in_openai_shape() {
    let m = ChatMessage::assistant_calls("", vec![call("f", "{}")]);
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(
        v,
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
    );
    let back: ChatMessage = serde_json::from_value(v).unwrap();
    assert_eq!(back, m);
    let null: ChatMessage =
        serde_json::from_value(json!({"role": "assistant", "content": null})).unwrap();
    assert_eq!(null, ChatMessage::new("assistant", ""));
    assert_eq!(
        serde_json::to_value(ChatMessage::new("user", "x")).unwrap(),
        json!({"role": "user", "content": "x"})
    );
}

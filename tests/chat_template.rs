//! Chat templates of real model families rendered with minijinja, against the
//! strings Hugging Face transformers' `apply_chat_template` produces for them.

use hearth::text::chat::{strftime, CHATML_TEMPLATE};
use hearth::text::{ChatMessage, ChatTemplate};
use hearth::HearthError;

/// SmolLM2-135M-Instruct's template (as stored in its GGUF).
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Meta-Llama-3-8B-Instruct's template.
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Qwen2-Instruct's template (default system prompt when none is given).
const QWEN2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn user(text: &str) -> ChatMessage {
    ChatMessage::new("user", text)
}

#[test]
fn smollm2_chatml_inserts_default_system_prompt() {
    let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
    assert_eq!(
        t.render(&[user("Which ocean is the largest?")], true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhich ocean is the largest?<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = [
        ChatMessage::new("system", "Be brief."),
        user("Hi"),
        ChatMessage::new("assistant", "Hello!"),
    ];
    assert_eq!(
        t.render(&with_system, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    );
}

#[test]
fn llama3_template_writes_bos_and_trims_content() {
    let t = ChatTemplate::new(LLAMA3, "<|begin_of_text|>", "<|eot_id|>").unwrap();
    let msgs = [
        ChatMessage::new("system", "You are terse."),
        user("  What is 2+2? \n"),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn qwen2_template_default_system() {
    let t = ChatTemplate::new(QWEN2, "", "<|im_end|>").unwrap();
    assert_eq!(
        t.render(&[user("Hello")], true).unwrap(),
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn chatml_default_template() {
    let t = ChatTemplate::new(CHATML_TEMPLATE, "", "").unwrap();
    assert_eq!(
        t.render(&[user("Hi")], true).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

/// Jinja2 as transformers configures it: trim_blocks + lstrip_blocks, Python
/// string methods, raise_exception.
#[test]
fn python_compat_and_block_trimming() {
    let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content.strip().upper() }}]\n    {% endif %}\n{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(
        t.render(&[user("  hi "), user("yo")], false).unwrap(),
        "[HI]\n[YO]\n"
    );

    let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(t.render(&[user("x")], false).unwrap(), "ok");
    match t.render(&[ChatMessage::new("assistant", "x")], false) {
        Err(HearthError::Template(msg)) => {
            assert!(msg.contains("Conversation must start with user"), "{msg}")
        }
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_are_template_errors() {
    match ChatTemplate::new("{% for m in messages %}{{ m.content }", "", "") {
        Err(HearthError::Template(_)) => {}
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn strftime_now_uses_the_fixed_clock() {
    let t = ChatTemplate::new("Today is {{ strftime_now('%d %b %Y') }}.", "", "").unwrap();
    t.set_now(1_721_952_000); // 2024-07-26 00:00:00 UTC
    assert_eq!(t.render(&[], false).unwrap(), "Today is 26 Jul 2024.");
    // Against values from Python's time.strftime(fmt, time.gmtime(secs)).
    assert_eq!(
        strftime("%Y-%m-%d %H:%M:%S %A %j", 951_782_400),
        "2000-02-29 00:00:00 Tuesday 060"
    );
    assert_eq!(strftime("%B %-d, %Y %I %p", 0), "January 1, 1970 12 AM");
    assert_eq!(strftime("%a %e %y %%", 1_735_689_599), "Tue 31 24 %");
}

//! The Hugging Face path (`tokenizer.json` + `tokenizer_config.json` +
//! `generation_config.json`): a small hand-written tokenizer.json whose ids
//! are worked out by hand, and the GGUF-built tokenizers serialized to
//! tokenizer.json, reloaded, and checked against llama.cpp's vectors again.

mod common;

use common::{gguf_file_tokenizer, vocab_fixture};
use hearth::text::vocab::TokenizerSpec;
use hearth::text::{ChatMessage, ChatTemplate, Tokenizer};

fn hf(json: &str, config: Option<&str>, generation: Option<&str>) -> hearth::Result<Tokenizer> {
    Tokenizer::from_spec(&TokenizerSpec::HfJson {
        tokenizer_json: json.to_string(),
        tokenizer_config_json: config.map(str::to_string),
        generation_config_json: generation.map(str::to_string),
    })
}

/// A word-level BPE over a tiny vocabulary, with a post-processor that
/// prepends `<s>` (as Llama's tokenizer.json does).
const TINY: &str = r#"{
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 3, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}
  },
  "decoder": null,
  "model": {
    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
    "vocab": {"<s>": 0, "</s>": 1, "<|im_end|>": 2, "<|endoftext|>": 3, "h": 4, "i": 5, "hi": 6, "t": 7, "he": 8, "e": 9, "the": 10},
    "merges": ["h i", "h e", "t he"]
  }
}"#;

#[test]
fn tiny_tokenizer_json_with_config() {
    let config = r#"{
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "chat_template": [
            {"name": "tool_use", "template": "unused"},
            {"name": "default", "template": "{% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}"}
        ]
    }"#;
    let generation = r#"{"eos_token_id": [1, 3]}"#;
    let tok = hf(TINY, Some(config), Some(generation)).unwrap();
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.eos_id(), Some(1));
    // add_bos_token is absent: inferred from the post-processor.
    assert!(tok.add_bos());
    assert_eq!(tok.encode("hi the", false).unwrap(), [6, 10]);
    assert_eq!(tok.encode("hi the", true).unwrap(), [0, 6, 10]);
    assert_eq!(
        tok.encode("<s>hi", true).unwrap(),
        [0, 6],
        "BOS already in the text is not doubled"
    );
    assert_eq!(tok.encode("hi<|im_end|>the", false).unwrap(), [6, 2, 10]);
    // eos, then generation_config's list, then <|im_end|> because the template writes it
    // (<|endoftext|> is there through generation_config).
    assert_eq!(tok.eos_ids(), [1, 3, 2]);
    assert_eq!(tok.vocab_size(), 11);
    assert_eq!(tok.token_str(8).as_deref(), Some("he"));
    assert!(tok.decode(&[99], false).is_err());

    let tmpl = ChatTemplate::for_tokenizer(&tok).unwrap();
    assert_eq!(
        tmpl.render(&[ChatMessage::new("user", "hi")], true)
            .unwrap(),
        "hi<|im_end|>"
    );

    // add_bos_token: false wins over the post-processor.
    let tok = hf(
        TINY,
        Some(r#"{"bos_token": "<s>", "add_bos_token": false}"#),
        None,
    )
    .unwrap();
    assert_eq!(tok.encode("hi", true).unwrap(), [6]);
    // No template: ChatML is the fallback, so <|im_end|> ends generation.
    assert_eq!(tok.chat_template(), None);
    assert!(tok.is_eos(2) && !tok.is_eos(3));
}

#[test]
fn malformed_hf_files_are_errors() {
    assert!(hf("{not json", None, None).is_err());
    assert!(hf(TINY, Some("[1, 2"), None).is_err());
    assert!(hf(TINY, None, Some(r#"{"eos_token_id": 12345}"#)).is_err());
}

/// A GGUF-built tokenizer, written as tokenizer.json and read back through
/// the HF path, still tokenizes llama.cpp's vectors exactly.
#[test]
fn gguf_tokenizers_survive_a_tokenizer_json_round_trip() {
    for name in ["llama-spm", "qwen2"] {
        let gguf = gguf_file_tokenizer(&vocab_fixture(&format!("ggml-vocab-{name}.gguf")));
        let json = gguf.hf().to_string(false).unwrap();
        let reloaded = hf(&json, None, None).unwrap();
        let inp =
            std::fs::read_to_string(vocab_fixture(&format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
        let out =
            std::fs::read_to_string(vocab_fixture(&format!("ggml-vocab-{name}.gguf.out"))).unwrap();
        for (text, line) in inp.split("\n__ggml_vocab_test__\n").zip(out.lines()) {
            let want: Vec<u32> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            assert_eq!(
                reloaded.encode_with(text, false, false).unwrap(),
                want,
                "{name}: {text:?}"
            );
            assert_eq!(
                reloaded.decode(&want, false).unwrap(),
                gguf.decode(&want, false).unwrap()
            );
        }
        let special = "<|im_start|>user\nhi<|im_end|>";
        assert_eq!(
            reloaded.encode(special, false).unwrap(),
            gguf.encode(special, false).unwrap()
        );
    }
}

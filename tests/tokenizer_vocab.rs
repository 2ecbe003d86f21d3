//! Tokenization against llama.cpp's own test vectors: the `ggml-vocab-*.gguf`
//! vocabularies with their `.inp`/`.out` files from the llama-cpp-python
//! 0.3.36 sdist (`scripts/fetch-vocab-fixtures.sh` puts them in
//! `.cache/vocab/`). llama.cpp's `test-tokenizer-0` calls
//! `common_tokenize(ctx, text, add_special = false, parse_special = false)`,
//! so these tests do the same. Then the real SmolLM2 GGUF against the ids the
//! issue gives.

mod common;

use common::{gguf_file_tokenizer, smollm2_path, vocab_fixture as fixture};
use hearth::model::gguf::GgufFile;
use hearth::text::vocab::TokenizerSpec;
use hearth::text::{ChatMessage, ChatTemplate, StreamDecoder, Tokenizer};

/// The test cases of one vocabulary, split the way test-tokenizer-0 splits them.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(fixture(&format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(fixture(&format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if texts.last() == Some(&"") {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: .inp and .out disagree on the number of cases"
    );
    assert!(texts.len() > 40, "{name}: too few cases");
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

fn check_vocab(name: &str) {
    let tok = gguf_file_tokenizer(&fixture(&format!("ggml-vocab-{name}.gguf")));
    let mut failures = Vec::new();
    for (text, want) in cases(name) {
        let got = tok.encode_with(&text, false, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

macro_rules! vocab_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test]
        fn $test() {
            check_vocab($name);
        })*
    };
}

vocab_tests! {
    vocab_llama_spm => "llama-spm",
    vocab_llama_bpe => "llama-bpe",
    vocab_qwen2 => "qwen2",
    vocab_gpt_2 => "gpt-2",
    vocab_phi_3 => "phi-3",
    vocab_deepseek_llm => "deepseek-llm",
    vocab_deepseek_coder => "deepseek-coder",
    vocab_starcoder => "starcoder",
    vocab_falcon => "falcon",
    vocab_refact => "refact",
    vocab_command_r => "command-r",
    vocab_mpt => "mpt",
    vocab_qwen35 => "qwen35",
}

/// Decoding the ids of a case gives its text back (byte-level BPE is lossless;
/// the SentencePiece decoder strips the one space its normalizer prepended),
/// and streaming the ids one by one gives the same text.
#[test]
fn decode_and_stream_round_trip() {
    for name in ["llama-spm", "llama-bpe", "qwen2"] {
        let tok = gguf_file_tokenizer(&fixture(&format!("ggml-vocab-{name}.gguf")));
        for (text, ids) in cases(name) {
            let decoded = tok.decode(&ids, false).unwrap();
            assert_eq!(decoded, text, "{name}: decode({ids:?})");
            let mut stream = StreamDecoder::new(false);
            let mut streamed = String::new();
            for &id in &ids {
                let chunk = stream.push(&tok, id).unwrap();
                assert!(
                    !chunk.contains('\u{FFFD}') || text.contains('\u{FFFD}'),
                    "{name}: split character in {chunk:?}"
                );
                streamed.push_str(&chunk);
            }
            streamed.push_str(&stream.finish(&tok).unwrap());
            assert_eq!(streamed, decoded, "{name}: streamed {ids:?}");
        }
    }
}

#[test]
fn special_tokens_in_text_are_parsed_unless_asked_not_to() {
    let tok = gguf_file_tokenizer(&fixture("ggml-vocab-llama-bpe.gguf"));
    let eot = tok.token_id("<|eot_id|>").unwrap();
    let ids = tok.encode("hi<|eot_id|>", false).unwrap();
    assert_eq!(ids.last(), Some(&eot));
    let literal = tok.encode_with("hi<|eot_id|>", false, false).unwrap();
    assert!(!literal.contains(&eot) && literal.len() > 2);
    // Llama-3 adds BOS by default, once.
    let bos = tok.bos_id().unwrap();
    assert_eq!(tok.encode("hi", true).unwrap()[0], bos);
    let with_bos = tok.encode("<|begin_of_text|>hi", true).unwrap();
    assert_eq!(with_bos.iter().filter(|&&i| i == bos).count(), 1);
    assert!(tok.eos_ids().contains(&tok.eos_id().unwrap()));
    // decode keeps control tokens unless asked to skip them.
    assert_eq!(tok.decode(&ids, false).unwrap(), "hi<|eot_id|>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "hi");
    assert!(tok.decode(&[u32::MAX], false).is_err());

    let spm = gguf_file_tokenizer(&fixture("ggml-vocab-llama-spm.gguf"));
    assert_eq!(spm.encode("Hello", true).unwrap()[0], 1);
    assert_eq!(spm.encode("</s>", false).unwrap(), vec![2]);
}

#[test]
fn unknown_pre_tokenizer_is_a_clear_error() {
    let mut vocab = GgufFile::open(&fixture("ggml-vocab-gpt-2.gguf"))
        .unwrap()
        .vocab()
        .unwrap();
    vocab.pre = Some("no-such-pre".into());
    let err = Tokenizer::from_spec(&TokenizerSpec::Gguf(vocab))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-pre"), "{err}");
}

// --- SmolLM2-135M-Instruct (the default model) ---

fn smollm2() -> Tokenizer {
    gguf_file_tokenizer(&smollm2_path())
}

#[test]
fn smollm2_raw_chatml_prompt() {
    let tok = smollm2();
    let text =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let want = [
        1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
    ];
    assert_eq!(tok.encode(text, true).unwrap(), want);
    assert_eq!(
        tok.encode("Once upon a time", true).unwrap(),
        [6403, 1980, 253, 655]
    );
    let answer = tok
        .decode(&[504, 3575, 282, 4649, 314, 7042, 30, 2], false)
        .unwrap();
    assert!(
        answer.contains("The capital of France is Paris."),
        "{answer:?}"
    );
    assert_eq!(
        tok.decode(&[504, 3575, 282, 4649, 314, 7042, 30, 2], true)
            .unwrap(),
        "The capital of France is Paris."
    );
    assert!(tok.is_eos(2), "<|im_end|> ends generation");
}

#[test]
fn smollm2_chat_template_prompt() {
    let tok = smollm2();
    let tmpl = ChatTemplate::for_tokenizer(&tok).unwrap();
    let text = tmpl
        .render(
            &[ChatMessage::new("user", "Which ocean is the largest?")],
            true,
        )
        .unwrap();
    let want = [
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
        407, 19712, 8182, 2, 198, 1, 4093, 198, 14413, 5065, 314, 260, 3995, 47, 2, 198, 1, 520,
        9531, 198,
    ];
    assert_eq!(tok.encode(&text, true).unwrap(), want, "rendered: {text:?}");
}

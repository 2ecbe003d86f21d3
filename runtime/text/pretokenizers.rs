//! Pre-tokenizer regexes for GGUF `gpt2`-style vocabularies, chosen by
//! `tokenizer.ggml.pre`. The names and regex lists follow llama.cpp's
//! `llama-vocab.cpp` (which is the reference the `.inp`/`.out` vectors come
//! from). llama.cpp applies its regexes one after another, each splitting the
//! pieces left by the previous one and keeping unmatched text as pieces of
//! its own; that is exactly a sequence of `Split(regex, Isolated)`
//! pre-tokenizers, so that is how they are built here. Where llama.cpp uses
//! an "adapted" regex only because `std::regex` lacks a feature (case-
//! insensitive groups, `\p{Lu}` classes), the original Hugging Face regex is
//! used instead: fancy-regex supports it.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use crate::{HearthError, Result};

const GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const PORO: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
const DEEPSEEK_LLM: &[&str] = &[
    r"[\r\n]",
    r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
    r"\s+$",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}+",
];
const DEEPSEEK_CODER: &[&str] = &[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}",
];
const DEEPSEEK3: &[&str] = &[
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];
const FALCON: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|`]+",
    GPT2,
    r"[0-9][0-9][0-9]",
];
const STARCODER: &[&str] = &[r"\p{N}", GPT2];
/// llama.cpp's fallback for a missing or "default" pre-tokenizer name.
const DEFAULT: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|]+",
    GPT2,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// How one `tokenizer.ggml.pre` value tokenizes.
#[derive(Debug, Clone, Copy)]
pub struct PreTokenizerRecipe {
    /// Applied in order; each splits the pieces of the previous one.
    pub regexes: &'static [&'static str],
    /// A whole pre-token that is itself in the vocabulary is emitted as is,
    /// without running merges (Llama-3 style; `ignore_merges` in tokenizer.json).
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos` when the GGUF does not say.
    pub add_bos_default: bool,
}

const fn recipe(regexes: &'static [&'static str]) -> PreTokenizerRecipe {
    PreTokenizerRecipe {
        regexes,
        ignore_merges: false,
        add_bos_default: false,
    }
}

/// The recipe for a `tokenizer.ggml.pre` name. A missing name or "default"
/// gets llama.cpp's default regexes with a warning (that is what llama.cpp
/// does); an unknown name is an error, since guessing silently produces
/// wrong token ids.
pub fn recipe_for(pre: Option<&str>) -> Result<PreTokenizerRecipe> {
    let name = pre.unwrap_or("");
    let r = match name {
        "" | "default" => {
            tracing::warn!(
                "GGUF has no tokenizer.ggml.pre (or \"default\"): using llama.cpp's default pre-tokenizer; \
                 tokenization may differ from the original model"
            );
            recipe(DEFAULT)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreTokenizerRecipe {
            regexes: &[LLAMA3],
            ignore_merges: true,
            add_bos_default: true,
        },
        "dbrx" | "smaug-bpe" | "chatglm-bpe" => recipe(&[LLAMA3]),
        "glm4" | "glm5" => PreTokenizerRecipe {
            regexes: &[LLAMA3],
            ignore_merges: true,
            add_bos_default: false,
        },
        "deepseek-llm" => recipe(DEEPSEEK_LLM),
        "deepseek-coder" => recipe(DEEPSEEK_CODER),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => recipe(DEEPSEEK3),
        "falcon" => recipe(FALCON),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => recipe(STARCODER),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais" | "trillion"
        | "granite-docling" | "exaone4" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => {
            recipe(&[GPT2])
        }
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "megrez" | "hunyuan"
        | "solar-open" => recipe(&[QWEN2]),
        "qwen35" => recipe(&[QWEN35]),
        "poro-chat" | "bloom" | "gpt3-finnish" => recipe(&[PORO]),
        "viking" => recipe(&[PORO, r"\p{N}"]),
        "tekken" => PreTokenizerRecipe {
            regexes: &[TEKKEN],
            ignore_merges: true,
            add_bos_default: true,
        },
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => recipe(&[GPT4O]),
        other => {
            return Err(HearthError::Unsupported(format!(
                "unknown GGUF pre-tokenizer tokenizer.ggml.pre = \"{other}\""
            )))
        }
    };
    Ok(r)
}

/// The pre-tokenizer for a byte-level BPE vocabulary: the recipe's regex
/// splits, then the GPT-2 byte-to-unicode mapping (no regex of its own, no
/// prefix space).
pub fn byte_level_pre_tokenizer(r: &PreTokenizerRecipe) -> Result<PreTokenizerWrapper> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(r.regexes.len() + 1);
    for re in r.regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| HearthError::Tokenizer(format!("pre-tokenizer regex {re:?}: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(steps).into())
}

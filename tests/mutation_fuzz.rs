//! A bounded mutation test of the loaders (issue 20): a few hundred
//! deterministic mutations of the tiny GGUF and safetensors fixtures (byte
//! flips, truncations, extreme integers, floats and lengths in header fields
//! and metadata values), each loaded as the engine loads a model (config,
//! shape check, every tensor read, tokenizer built, chat template
//! rendered). Each must end in a clean error or a normal load: no panic, and
//! within a hang guard. The cargo-fuzz targets in `fuzz/` explore further
//! by hand (docs/FUZZING.md).

mod common;

use common::gguf_writer::{tiny_model, Val};
use common::hf_writer;
use hearth::model::gguf::GgufModel;
use hearth::model::hf::HfModel;
use hearth::model::load::check_shapes;
use hearth::model::WeightSource;
use hearth::text::vocab::TokenizerSpec;
use hearth::text::{ChatMessage, ChatTemplate, Tokenizer};
use serde_json::{json, Value};

/// A seeded xorshift, so every run tries the same cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const EXTREME_INTS: [u64; 10] = [
    0,
    1,
    3,
    255,
    1 << 31,
    u32::MAX as u64,
    (1 << 32) + 2,
    1 << 40,
    1 << 62,
    u64::MAX,
];

/// Changes 1..=`most` random bytes of `b[..header]`; returns how many.
fn change_bytes(rng: &mut Rng, b: &mut [u8], header: usize, most: usize) -> usize {
    let n = 1 + rng.below(most);
    for _ in 0..n {
        let p = rng.below(header);
        b[p] = rng.next() as u8;
    }
    n
}

/// Cuts `b` at a random length; returns it.
fn cut(rng: &mut Rng, b: &mut Vec<u8>) -> usize {
    let at = rng.below(b.len());
    b.truncate(at);
    at
}

fn extreme_vals() -> Vec<Val> {
    let mut v: Vec<Val> = EXTREME_INTS.iter().map(|&x| Val::U64(x)).collect();
    v.extend([
        Val::U32(0),
        Val::U32(u32::MAX),
        Val::I32(-1),
        Val::I64(i64::MIN),
        Val::F32(f32::NAN),
        Val::F32(f32::INFINITY),
        Val::F32(-1.0),
        Val::F32(0.0),
        Val::F64(1e300),
        Val::Bool(true),
        Val::str(""),
        Val::Str("x".repeat(100_000)),
        Val::Arr(8, Vec::new()),
        Val::Arr(4, vec![Val::U32(7); 3]),
        Val::strs(&["a b"; 5]),
    ]);
    v
}

/// Loads a GGUF as the engine would, short of the GPU.
fn load_gguf(bytes: Vec<u8>) -> hearth::Result<()> {
    let m = GgufModel::from_bytes(bytes)?;
    check_shapes(&m)?;
    for t in m.file().tensor_infos() {
        m.tensor(&t.name)?.to_f32()?;
    }
    let tok = Tokenizer::from_spec(&TokenizerSpec::Gguf(m.vocab()?))?;
    let ids = tok.encode("t1 t0 hello", true)?;
    tok.decode(&ids, false)?;
    if let Some(src) = tok.chat_template() {
        let t = ChatTemplate::new(src, "<s>", "</s>")?;
        t.render(&[ChatMessage::new("user", "hi")], true)?;
    }
    Ok(())
}

fn load_hf(config: String, shard: Vec<u8>) -> hearth::Result<()> {
    let m = HfModel::from_parts(&config, vec![("model.safetensors".into(), shard)])?;
    check_shapes(&m)?;
    for name in m.tensor_names() {
        m.tensor(name)?.to_f32()?;
    }
    Ok(())
}

/// Runs one case under `catch_unwind` and the hang guard; a panic or a hang
/// is recorded (with the case's description) rather than stopping the run.
fn run_case(
    what: String,
    f: impl FnOnce() -> hearth::Result<()> + Send + 'static,
    failures: &mut Vec<String>,
    loaded: &mut usize,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(Ok(Ok(()))) => *loaded += 1,
        Ok(Ok(Err(_))) => {}
        Ok(Err(p)) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{what}: panicked: {msg}"));
        }
        Err(_) => failures.push(format!("{what}: still running after 20 s")),
    }
}

#[test]
fn mutated_gguf_files_fail_cleanly() {
    let mut rng = Rng(0x5eed_0001);
    let (mut failures, mut loaded, mut cases) = (Vec::new(), 0, 0);
    let vals = extreme_vals();
    for arch in ["llama", "qwen2", "qwen3"] {
        let w = tiny_model(arch, arch == "qwen3");
        let (base, layout) = w.build_with_layout();
        // The unmutated file loads: the mutations are what break it.
        let before = loaded;
        run_case(
            format!("{arch} base"),
            {
                let b = base.clone();
                move || load_gguf(b)
            },
            &mut failures,
            &mut loaded,
        );
        assert_eq!(loaded, before + 1, "the unmutated file loads: {failures:?}");
        cases += 1;
        for i in 0..110 {
            let mut b = base.clone();
            let header = layout.data_start;
            let what = match i % 5 {
                // Random bytes in the header, metadata and tensor table.
                0 | 1 => {
                    let n = change_bytes(&mut rng, &mut b, header, 4);
                    format!("{arch} #{i}: {n} header bytes changed")
                }
                // A cut anywhere.
                2 => format!("{arch} #{i}: cut at {}", cut(&mut rng, &mut b)),
                // An extreme integer written over any 4 or 8 header bytes.
                3 => {
                    let p = rng.below(header - 8);
                    let x = *rng.pick(&EXTREME_INTS);
                    if rng.next() & 1 == 0 {
                        b[p..p + 8].copy_from_slice(&x.to_le_bytes());
                    } else {
                        b[p..p + 4].copy_from_slice(&(x as u32).to_le_bytes());
                    }
                    format!("{arch} #{i}: {x} written at byte {p}")
                }
                // A metadata value or a tensor's shape or type replaced.
                _ => {
                    let mut w2 = tiny_model(arch, arch == "qwen3");
                    let what = if rng.next().is_multiple_of(3) {
                        let t = rng.below(w2.tensors.len());
                        let d = rng.below(w2.tensors[t].shape.len());
                        let x = *rng.pick(&EXTREME_INTS);
                        if rng.next() & 1 == 0 {
                            w2.tensors[t].shape[d] = x;
                        } else {
                            w2.tensors[t].type_id = x as u32;
                        }
                        format!("tensor `{}` given {x}", w2.tensors[t].name)
                    } else {
                        let k = rng.below(w2.kvs.len());
                        let v = rng.pick(&vals).clone();
                        let what = format!("`{}` = {:?}", w2.kvs[k].0, abbreviated(&v));
                        w2.kvs[k].1 = v;
                        what
                    };
                    b = w2.build();
                    format!("{arch} #{i}: {what}")
                }
            };
            run_case(what, move || load_gguf(b), &mut failures, &mut loaded);
            cases += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{cases} GGUF cases, {loaded} loaded, the rest clean errors");
}

fn abbreviated(v: &Val) -> String {
    let s = format!("{v:?}");
    if s.len() > 60 {
        format!("{}…", &s[..60])
    } else {
        s
    }
}

#[test]
fn mutated_safetensors_and_configs_fail_cleanly() {
    let mut rng = Rng(0x5eed_0002);
    let (mut failures, mut loaded, mut cases) = (Vec::new(), 0, 0);
    let extremes: Vec<Value> = vec![
        json!(0),
        json!(-1),
        json!(1e300),
        json!(-1e300),
        json!(1u64 << 31),
        json!(1u64 << 40),
        json!(1u64 << 62),
        json!(u64::MAX),
        json!(0.0),
        json!(-4.0),
        json!("x"),
        json!(null),
        json!([]),
        json!({}),
        json!({"rope_type": "linear", "factor": 0.0}),
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
               "high_freq_factor": 1.0, "original_max_position_embeddings": 0}),
    ];
    for class in ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"] {
        let ts = hf_writer::tensors(class, 16, true, |_| safetensors::Dtype::F32);
        let shard = hf_writer::serialize(&ts);
        let config = hf_writer::config(class, json!({}));
        let header = 8 + u64::from_le_bytes(shard[..8].try_into().unwrap()) as usize;
        let before = loaded;
        run_case(
            format!("{class} base"),
            {
                let (c, s) = (config.to_string(), shard.clone());
                move || load_hf(c, s)
            },
            &mut failures,
            &mut loaded,
        );
        assert_eq!(loaded, before + 1, "the unmutated file loads: {failures:?}");
        cases += 1;
        for i in 0..50 {
            let (mut c, mut s) = (config.clone(), shard.clone());
            let what = match i % 4 {
                0 => {
                    let n = change_bytes(&mut rng, &mut s, header, 3);
                    format!("{class} #{i}: {n} header bytes changed")
                }
                1 => format!("{class} #{i}: cut at {}", cut(&mut rng, &mut s)),
                _ => {
                    let keys: Vec<String> = c.as_object().unwrap().keys().cloned().collect();
                    let k = rng
                        .pick(&[keys, vec!["rope_scaling".into(), "head_dim".into()]].concat())
                        .clone();
                    let v = rng.pick(&extremes).clone();
                    let what = format!("{class} #{i}: `{k}` = {v}");
                    c[&k] = v;
                    what
                }
            };
            let c = c.to_string();
            run_case(what, move || load_hf(c, s), &mut failures, &mut loaded);
            cases += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{cases} safetensors cases, {loaded} loaded, the rest clean errors");
}

/// Seed corpora for the cargo-fuzz targets (docs/FUZZING.md), written under
/// `fuzz/corpus/<target>/`: tiny GGUF models (gpt2 and SentencePiece
/// vocabularies), tiny safetensors shards of the fuzz target's config, the
/// `tests/fixtures/hf` configs, index and chat templates, and llama.cpp's
/// small vocabulary files when `.cache/vocab/` has them. Not a check: run by
/// hand with `--ignored`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand (docs/FUZZING.md)"]
fn write_fuzz_seed_corpora() {
    use common::gguf_writer::tiny_char_model;
    use std::path::Path;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("fuzz/corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };

    // GGUF: every architecture, tied or not, gpt2 BPE or SentencePiece vocabulary.
    for arch in ["llama", "qwen2", "qwen3"] {
        for tied in [false, true] {
            let name = format!("tiny-{arch}{}.gguf", if tied { "-tied" } else { "" });
            let b = tiny_model(arch, tied).build();
            load_gguf(b.clone()).unwrap();
            put("gguf_header", &name, &b);
        }
        let b = tiny_char_model(arch, false).build();
        put("gguf_header", &format!("tiny-{arch}-chars.gguf"), &b);
        put("gguf_tokenizer", &format!("tiny-{arch}-chars.gguf"), &b);
    }
    put(
        "gguf_tokenizer",
        "tiny-gpt2.gguf",
        &tiny_model("llama", false).build(),
    );
    let mut spm = tiny_model("llama", false);
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>", "▁", "▁H", "ll", "▁w", "or"]
        .into_iter()
        .chain(["H", "e", "l", "o", "w", "r", "d"])
        .map(String::from)
        .collect();
    tokens.extend((0..25u8).map(|b| format!("<0x{b:02X}>")));
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| match i {
            0 => 2,
            1 | 2 => 3,
            i if i >= 15 => 6,
            _ => 1,
        })
        .collect();
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    spm.kv("tokenizer.ggml.model", Val::str("llama"));
    spm.kv("tokenizer.ggml.tokens", Val::strs(&tokens));
    spm.kv("tokenizer.ggml.token_type", Val::i32s(&types));
    spm.kv("tokenizer.ggml.scores", Val::f32s(&scores));
    spm.kv("tokenizer.ggml.add_bos_token", Val::Bool(true));
    let spm = spm.build();
    let vocab = GgufModel::from_bytes(spm.clone()).unwrap().vocab().unwrap();
    let tok = Tokenizer::from_spec(&TokenizerSpec::Gguf(vocab)).unwrap();
    assert_eq!(
        tok.encode("Hello world", true).unwrap(),
        [1, 4, 9, 5, 11, 6, 7, 10, 14]
    );
    put("gguf_tokenizer", "tiny-spm.gguf", &spm);
    // The real vocabularies under a MiB (libFuzzer's default input limit).
    if let Ok(dir) = std::fs::read_dir(common::models::vocab_dir()) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let small = e.metadata().is_ok_and(|m| m.len() < 1 << 20);
            if name.ends_with(".gguf") && small {
                put("gguf_tokenizer", &name, &std::fs::read(e.path()).unwrap());
            }
        }
    }

    // Safetensors shards of the fuzz target's fixed LlamaForCausalLM config.
    for (name, dtype) in [
        ("f32", safetensors::Dtype::F32),
        ("f16", safetensors::Dtype::F16),
        ("bf16", safetensors::Dtype::BF16),
    ] {
        for lm_head in [false, true] {
            let ts = hf_writer::tensors("LlamaForCausalLM", 16, lm_head, |_| dtype);
            let file = format!(
                "tiny-llama-{name}{}.safetensors",
                ["", "-lm-head"][lm_head as usize]
            );
            put("safetensors_header", &file, &hf_writer::serialize(&ts));
        }
    }

    // Configs, the sharded index and chat templates of the HF fixtures.
    let hf = root.join("tests/fixtures/hf");
    for e in std::fs::read_dir(&hf).unwrap().flatten() {
        let model = e.file_name().to_string_lossy().into_owned();
        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).ok();
        if let Some(c) = read("config.json") {
            put("hf_index", &format!("{model}-config.json"), c.as_bytes());
        }
        if let Some(i) = read("model.safetensors.index.json") {
            put("hf_index", &format!("{model}-index.json"), i.as_bytes());
        }
        let template = read("tokenizer_config.json")
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|t| t["chat_template"].as_str().map(String::from));
        if let Some(t) = template {
            put("chat_template", &format!("{model}.jinja"), t.as_bytes());
        }
    }
    put(
        "chat_template",
        "chatml.jinja",
        hearth::text::chat::CHATML_TEMPLATE.as_bytes(),
    );
    put("chat_template", "gguf-fixture.jinja", b"{{ messages }}");
}

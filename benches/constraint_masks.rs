//! The CPU side of structured output on SmolLM2's 49152-token vocabulary:
//! building the token trie (once per engine), compiling a schema (once per
//! request) and computing one mask (once per constrained row per step),
//! which the engine does while the GPU runs the step's layers.
//! `cargo bench --bench constraint_masks` (needs the default model: `bash scripts/hearth.sh fetch`).

use std::path::Path;
use std::time::Instant;

use hearth::model::gguf::GgufFile;
use hearth::structured::{mask_allows, Constraint, ConstraintCompiler};
use hearth::text::vocab::TokenizerSpec;
use hearth::text::Tokenizer;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const SCHEMA: &str = "benches/schemas/records.json";
/// Text the schema accepts: the masks are those of a real walk through it.
const TEXT: &str = r#"[{"name": "Ann", "age": 31, "tags": ["red", "blue"]}, {"name": "Bob Smith", "age": 4, "tags": []}, {"name": "Cy", "age": 100, "tags": ["green"]}"#;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vocab = GgufFile::open(&root.join(MODEL))
        .and_then(|f| f.vocab())
        .expect("the default model (run `bash scripts/hearth.sh fetch`)");
    let tok = Tokenizer::from_spec(&TokenizerSpec::Gguf(vocab)).expect("tokenizer");
    let t = Instant::now();
    let compiler = ConstraintCompiler::new(&tok, tok.vocab_size()).expect("compiler");
    println!(
        "token trie ({} tokens)                   {:9.1} ms",
        tok.vocab_size(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let schema = serde_json::from_str(&std::fs::read_to_string(root.join(SCHEMA)).unwrap())
        .expect("schema JSON");
    let c = Constraint::JsonSchema(schema);
    let t = Instant::now();
    let runs = 20;
    for _ in 0..runs {
        compiler.compile(&c).expect("compiles");
    }
    println!(
        "compile {SCHEMA}   {:9.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / runs as f64
    );
    let ids = tok.encode(TEXT, false).unwrap();
    let (mut masks, mut secs) = (0u32, 0.0);
    for _ in 0..5 {
        let mut st = compiler.compile(&c).unwrap();
        for &id in &ids {
            let t = Instant::now();
            let m = st.mask().unwrap();
            secs += t.elapsed().as_secs_f64();
            masks += 1;
            assert!(mask_allows(&m, id), "the schema accepts the text");
            st.consume(id).unwrap();
        }
    }
    println!(
        "one mask (mean of {masks} along the text)          {:9.1} µs",
        secs / masks as f64 * 1e6
    );
}

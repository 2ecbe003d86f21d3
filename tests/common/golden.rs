//! Golden logits from Hugging Face transformers (see tests/golden/README.md)
//! and the check of a backend against them, shared by `hf_golden` (dense
//! models) and `moe_reference` (mixture-of-experts models).

use std::path::Path;

use hearth::model::load::{open, LoadedModel};
use hearth::reference::{RefKvCache, RefModel};
use hearth::text::{ChatMessage, ChatTemplate, Tokenizer};
use serde_json::Value;

/// What transformers recorded for one case (see make_golden.py).
pub struct Golden {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub prompt_ids_no_special: Vec<u32>,
    pub chat_messages: Vec<ChatMessage>,
    /// `apply_chat_template(chat_messages, add_generation_prompt=True)`.
    pub chat_text: String,
    pub chat_ids: Vec<u32>,
    pub vocab: usize,
    pub last_logits: Vec<f32>,
    pub logit_scale: f32,
    pub top_ids: Vec<Vec<u32>>,
    pub top_logits: Vec<Vec<f32>>,
    /// The (k+1)-th logit per position: an upper bound on every id outside the top k.
    pub top_next_logits: Vec<f32>,
    pub greedy_ids: Vec<u32>,
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key)
        .unwrap_or_else(|| panic!("golden.json has no `{key}`"))
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("id")).expect("id fits u32"))
        .collect()
}

fn rows<T>(v: &Value, f: fn(&Value) -> Vec<T>) -> Vec<Vec<T>> {
    v.as_array().expect("array of rows").iter().map(f).collect()
}

impl Golden {
    pub fn read(dir: &Path) -> Golden {
        let p = dir.join("golden.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let v: Value = serde_json::from_str(&text).expect("golden.json parses");
        Golden {
            prompt: field(&v, "prompt").as_str().expect("prompt").to_owned(),
            prompt_ids: u32s(field(&v, "prompt_ids")),
            prompt_ids_no_special: u32s(field(&v, "prompt_ids_no_special")),
            chat_messages: serde_json::from_value(field(&v, "chat_messages").clone())
                .expect("chat_messages"),
            chat_text: field(&v, "chat_text")
                .as_str()
                .expect("chat_text")
                .to_owned(),
            chat_ids: u32s(field(&v, "chat_ids")),
            vocab: field(&v, "vocab_size").as_u64().expect("vocab_size") as usize,
            last_logits: f32s(field(&v, "last_logits")),
            logit_scale: field(&v, "logit_scale").as_f64().expect("logit_scale") as f32,
            top_ids: rows(field(&v, "top_ids"), u32s),
            top_logits: rows(field(&v, "top_logits"), f32s),
            top_next_logits: f32s(field(&v, "top_next_logits")),
            greedy_ids: u32s(field(&v, "greedy_ids")),
        }
    }
}

/// What a backend produces for one prompt.
pub struct BackendOutput {
    /// Logits of every prompt position, `[prompt.len(), vocab]`.
    pub logits: Vec<f32>,
    /// `n_new` greedy ids with no stop tokens.
    pub greedy: Vec<u32>,
}

/// Indices of the `k` largest values, best first (lowest index on ties).
fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Compares one position's top-k with transformers'. Ranks may differ only
/// between ids whose golden logits are within `2 * tol` of each other (a tie
/// at this tolerance); an id outside the golden top-k is bounded above by
/// the golden (k+1)-th logit. Returns how many ranks were such ties.
fn check_top_k(
    what: &str,
    p: usize,
    row: &[f32],
    ids: &[u32],
    vals: &[f32],
    next: f32,
    tol: f32,
) -> usize {
    let mut ties = 0;
    for (rank, (&got, &want)) in top_k(row, ids.len()).iter().zip(ids).enumerate() {
        if got == want {
            continue;
        }
        // The golden logit of `got` (or an upper bound when it is outside the top k).
        let golden_of_got = ids.iter().position(|&i| i == got).map_or(next, |j| vals[j]);
        assert!(
            (vals[rank] - golden_of_got).abs() <= 2.0 * tol,
            "{what}: position {p} rank {rank}: got id {got}, want {want} \
             (golden logits {} vs {golden_of_got}, tol {tol})",
            vals[rank]
        );
        ties += 1;
    }
    ties
}

/// Loads `case`, checks its tokenizer, runs `backend` and compares its
/// logits (within `rtol` of the case's logit scale), top-k ids at every
/// prompt position and greedy ids with the goldens. Returns the largest
/// logit error as a fraction of the scale.
pub fn check_case_dir(
    dir: &Path,
    case: &str,
    backend_name: &str,
    rtol: f32,
    backend: impl Fn(&LoadedModel, &[u32], usize) -> hearth::Result<BackendOutput>,
) -> f32 {
    let g = Golden::read(dir);
    let what = format!("{case} [{backend_name}]");
    let loaded = open(dir).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    assert_eq!(
        loaded.weights.config().vocab_size,
        g.vocab,
        "{what}: vocab size"
    );

    let tok = Tokenizer::from_spec(&loaded.tokenizer).unwrap_or_else(|e| panic!("{what}: {e}"));
    let ids = tok.encode(&g.prompt, true).expect("encode");
    assert_eq!(ids, g.prompt_ids, "{what}: prompt ids (add_special=true)");
    let ids_plain = tok.encode(&g.prompt, false).expect("encode");
    assert_eq!(
        ids_plain, g.prompt_ids_no_special,
        "{what}: prompt ids (add_special=false)"
    );
    assert_eq!(
        tok.decode(&ids_plain, false).expect("decode"),
        g.prompt,
        "{what}: decode"
    );

    let chat = ChatTemplate::for_tokenizer(&tok).unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = chat.render(&g.chat_messages, true).expect("render");
    assert_eq!(text, g.chat_text, "{what}: chat template");
    // The rendered text carries its own BOS, so no special tokens are added.
    assert_eq!(
        tok.encode(&text, false).expect("encode"),
        g.chat_ids,
        "{what}: chat ids"
    );

    let n = g.prompt_ids.len();
    assert_eq!(
        g.top_ids.len(),
        n,
        "{what}: golden has top-k for every position"
    );
    assert_eq!(
        g.top_next_logits.len(),
        n,
        "{what}: golden has next logits for every position"
    );
    let tol = rtol * g.logit_scale;
    let out = backend(&loaded, &g.prompt_ids, g.greedy_ids.len())
        .unwrap_or_else(|e| panic!("{what}: backend: {e}"));
    assert_eq!(out.logits.len(), n * g.vocab, "{what}: logits shape");
    assert!(
        out.logits.iter().all(|x| x.is_finite()),
        "{what}: non-finite logits"
    );

    let last = &out.logits[(n - 1) * g.vocab..];
    let mut worst = 0f32;
    for (i, (&got, &want)) in last.iter().zip(&g.last_logits).enumerate() {
        let d = (got - want).abs();
        worst = worst.max(d);
        assert!(
            d <= tol,
            "{what}: last-position logit {i}: got {got}, want {want} (tol {tol})"
        );
    }
    let mut ties = 0;
    for p in 0..n {
        let row = &out.logits[p * g.vocab..(p + 1) * g.vocab];
        let (ids, vals) = (&g.top_ids[p], &g.top_logits[p]);
        for (&id, &want) in ids.iter().zip(vals) {
            let got = row[id as usize];
            let d = (got - want).abs();
            worst = worst.max(d);
            assert!(
                d <= tol,
                "{what}: position {p} logit of id {id}: got {got}, want {want} (tol {tol})"
            );
        }
        ties += check_top_k(&what, p, row, ids, vals, g.top_next_logits[p], tol);
    }
    assert_eq!(out.greedy, g.greedy_ids, "{what}: greedy ids");
    let rel = worst / g.logit_scale;
    eprintln!(
        "{what}: max |logit error| {worst:.2e} ({rel:.2e} of scale {}); top-k ranks swapped within tolerance: {ties}",
        g.logit_scale
    );
    rel
}

/// The CPU reference forward pass (f32 on the converted weights).
pub fn reference(
    loaded: &LoadedModel,
    prompt: &[u32],
    n_new: usize,
) -> hearth::Result<BackendOutput> {
    let model = RefModel::load(&*loaded.weights)?;
    let logits = model.forward(prompt, &mut RefKvCache::default())?;
    let greedy = model.generate_greedy(prompt, n_new, &[])?;
    Ok(BackendOutput { logits, greedy })
}

/// The GPU forward pass may differ from transformers by this fraction of the
/// logit scale: f32 everywhere (f32 KV cache here), but a different summation
/// order in tiled matmuls and attention; observed errors are ~1e-6 of scale.
pub const GPU_RTOL: f32 = 1e-4;

pub fn gpu_model(
    loaded: &LoadedModel,
    dtype: Option<hearth::model::DType>,
    max_seqs: u32,
) -> hearth::Result<hearth::model::forward::GpuModel> {
    hearth::model::forward::GpuModel::load(
        super::gpu(),
        &*loaded.weights,
        hearth::model::forward::ForwardOptions {
            dtype,
            kv_memory: 4 << 20,
            kv_dtype: hearth::kv::KvDtype::F32,
            max_step_tokens: 64,
            max_seqs,
            ..Default::default()
        },
        &mut |_| {},
    )
}

/// Logits of every prompt position in ONE step: each position is its own
/// one-token part sharing the sequence's block table, so the step also
/// exercises multi-part batches (KV written by earlier rows of the same step).
pub fn gpu_backend_with(
    dtype: Option<hearth::model::DType>,
) -> impl Fn(&LoadedModel, &[u32], usize) -> hearth::Result<BackendOutput> {
    move |loaded, prompt, n_new| {
        use hearth::engine::{GenerateOptions, SamplingParams};
        use hearth::model::forward::SeqStep;
        let n = prompt.len();
        let mut m = gpu_model(loaded, dtype, n as u32)?;
        let mut pool = m.new_kv_pool();
        let blocks = pool.allocate(n.div_ceil(pool.block_size() as usize))?;
        let parts: Vec<SeqStep> = (0..n)
            .map(|i| SeqStep::new(&prompt[i..i + 1], i as u32, &blocks))
            .collect();
        pollster::block_on(m.step(&parts, 1))?;
        let logits = pollster::block_on(m.last_logits(n))?;
        pool.free(&blocks)?;
        let mut e = super::engine(m, Tokenizer::from_spec(&loaded.tokenizer)?);
        let opts = GenerateOptions {
            sampling: SamplingParams::greedy(),
            max_tokens: n_new,
            ignore_eos: true,
            ..Default::default()
        };
        let g = e.generate_blocking(prompt, &opts, &mut |_| true)?;
        Ok(BackendOutput {
            logits,
            greedy: g.ids,
        })
    }
}

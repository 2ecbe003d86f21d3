//! Structured output through the engine on the real SmolLM2-135M-Instruct:
//! JSON Schema, regex and grammar constraints. Oracles: the schema itself
//! (the output must parse and satisfy it), the unconstrained model (the
//! constrained token is the best allowed one of the unconstrained
//! distribution), solo runs (batching, drafting and a neighbour's failure
//! change nothing), and the constraint's own accept/refuse decisions.

mod common;

use common::{gguf_file_tokenizer, smollm2_path};
use hearth::engine::sequence::SeqOutput;
use hearth::engine::{Draft, GenerateOptions};
use hearth::engine::{Drafting, Output};
use hearth::model::forward::ForwardOptions;
use hearth::structured::Constraint;
use hearth::structured::{mask_allows, ConstraintCompiler};
use hearth::{
    EngineOptions, FinishReason, Generation, Hearth, HearthError, Prompt, Request, SamplingParams,
};
use serde_json::{json, Value};

fn open() -> Hearth {
    let opts = EngineOptions {
        forward: ForwardOptions {
            kv_memory: 48 << 20,
            max_seqs: 8,
            max_logit_rows: 24,
            ..Default::default()
        },
        ..Default::default()
    };
    Hearth::open(&smollm2_path(), &opts, &mut |_| {}).expect("load SmolLM2")
}

fn request(user: &str, c: Option<Constraint>, max_tokens: usize) -> Request {
    let mut r = Request::chat(user);
    r.max_tokens = Some(max_tokens);
    r.constraint = c;
    r
}

fn run(h: &mut Hearth, r: Request) -> Generation {
    h.generate_request_blocking(r, &mut |_| true)
        .expect("generate")
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "role": {"enum": ["admin", "user", "guest"]}
        },
        "required": ["name", "age", "role"],
        "additionalProperties": false
    })
}

#[test]
fn json_schema_output_parses_and_satisfies_the_schema() {
    let mut h = open();
    let g = run(
        &mut h,
        request(
            "Describe a user called Ann as JSON.",
            Some(Constraint::JsonSchema(person_schema())),
            80,
        ),
    );
    assert_eq!(g.finish_reason, FinishReason::Stop, "{:?}", g.text);
    check_person(&g.text);
    // Complete JSON ends the output at once: no end-of-sequence token.
    assert!(!h.tokenizer.is_eos(*g.ids.last().unwrap()));
}

fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let o = v.as_object().expect("an object");
    assert_eq!(o.len(), 3, "{v}");
    assert!(o["name"].as_str().is_some_and(|s| s.chars().count() <= 20));
    assert!(
        o["age"].as_i64().is_some_and(|a| (0..=120).contains(&a)),
        "{v}"
    );
    assert!(["admin", "user", "guest"].contains(&o["role"].as_str().unwrap()));
}

#[test]
fn sampled_output_satisfies_the_schema_too() {
    let mut h = open();
    for seed in 0..3 {
        let mut r = request(
            "Describe a user as JSON.",
            Some(Constraint::JsonSchema(person_schema())),
            80,
        );
        r.sampling = SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let g = run(&mut h, r);
        assert_eq!(g.finish_reason, FinishReason::Stop, "{:?}", g.text);
        check_person(&g.text);
    }
}

/// Top candidates of the unconstrained model after `ids`, best first.
fn unconstrained_top(h: &mut Hearth, ids: &[u32], k: usize) -> Vec<(u32, f32)> {
    let mut r = Request::new(Prompt::Ids(ids.to_vec()));
    r.max_tokens = Some(1);
    r.logprobs = k;
    r.ignore_eos = true;
    run(h, r).top_logprobs.remove(0)
}

#[test]
fn constrained_token_is_the_best_allowed_one_of_the_unconstrained_model() {
    let mut h = open();
    // No lowercase "e": a constraint that bites often in English.
    let mut r = request(
        "Write one sentence about the sea.",
        Some(Constraint::Regex("[^e]*".into())),
        24,
    );
    r.logprobs = 8;
    let g = run(&mut h, r);
    assert!(!g.text.contains('e'), "{:?}", g.text);
    let (mut refused, mut allowed) = (0, 0);
    for (i, &y) in g.ids.iter().enumerate() {
        let ctx = [&g.prompt_ids[..], &g.ids[..i]].concat();
        let top = unconstrained_top(&mut h, &ctx, 32);
        let ok = |t: u32| {
            h.tokenizer.is_eos(t) || {
                let plain = h.tokenizer.decode(&[t], true).unwrap();
                !plain.is_empty() && !plain.contains('e')
            }
        };
        let Some(best) = top.iter().map(|c| c.0).find(|&t| ok(t)) else {
            continue;
        };
        assert_eq!(y, best, "position {i}: {:?}", g.text);
        if top[0].0 == y {
            allowed += 1;
        } else {
            refused += 1;
        }
        // The mask leaves allowed logits alone: log-probability differences
        // between allowed tokens are the unconstrained ones.
        let lp_u = |t: u32| top.iter().find(|c| c.0 == t).map(|c| c.1);
        let cands = &g.top_logprobs[i];
        for w in cands.windows(2) {
            if let (Some(a), Some(b)) = (lp_u(w[0].0), lp_u(w[1].0)) {
                let (dc, du) = (w[0].1 - w[1].1, a - b);
                assert!((dc - du).abs() < 1e-3, "position {i}: {dc} vs {du}");
            }
        }
    }
    assert!(
        refused > 0 && allowed > 0,
        "refused {refused}, allowed {allowed}"
    );
}

#[test]
fn output_where_the_unconstrained_greedy_token_is_always_allowed_is_unchanged() {
    let mut h = open();
    let free = run(&mut h, request("Name three fruits.", None, 24));
    // Any text at all: every token but special ones stays allowed.
    let any = run(
        &mut h,
        request(
            "Name three fruits.",
            Some(Constraint::Regex("(?s:.*)".into())),
            24,
        ),
    );
    assert_eq!(free.ids, any.ids);
    assert_eq!(free.finish_reason, any.finish_reason);
}

fn colors_schema() -> Value {
    json!({
        "type": "array",
        "items": {"enum": ["red", "green", "blue"]},
        "minItems": 6,
        "maxItems": 6
    })
}

#[test]
fn drafts_are_checked_against_the_constraint_and_change_nothing() {
    let mut h = open();
    let ask = "List red, green, blue, red, green, blue as a JSON array.";
    let plain = run(
        &mut h,
        request(ask, Some(Constraint::JsonSchema(colors_schema())), 60),
    );
    let mut r = request(ask, Some(Constraint::JsonSchema(colors_schema())), 60);
    r.draft = Some(Drafting::Ngram);
    let drafted = run(&mut h, r);
    assert_eq!(plain.ids, drafted.ids, "{:?}", plain.text);
    assert!(drafted.spec.drafted > 0, "no drafts were made");
    let v: Value = serde_json::from_str(&drafted.text).expect("JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(6), "{v}");
}

#[test]
fn a_constraint_that_cannot_finish_ends_with_length() {
    let mut h = open();
    let g = run(
        &mut h,
        request(
            "List colors.",
            Some(Constraint::JsonSchema(json!({
                "type": "array", "items": {"enum": ["red", "green"]}, "minItems": 40
            }))),
            8,
        ),
    );
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert_eq!(g.ids.len(), 8);
    assert!(g.text.starts_with('['), "{:?}", g.text);
}

fn constraint_error(h: &mut Hearth, c: Constraint) -> String {
    match h.add_request(request("hi", Some(c.clone()), 4)) {
        Err(HearthError::InvalidField { field, message }) => {
            assert_eq!(field, "constraint");
            message
        }
        other => panic!("{c:?}: expected an invalid constraint, got {other:?}"),
    }
}

#[test]
fn bad_constraints_are_refused_with_the_problem_named() {
    let mut h = open();
    let m = constraint_error(&mut h, Constraint::Regex("(ab".into()));
    assert!(m.contains("regex"), "{m}");
    let m = constraint_error(&mut h, Constraint::JsonSchema(json!({"type": "strin"})));
    assert!(m.contains("JSON schema") && m.contains("strin"), "{m}");
    let m = constraint_error(
        &mut h,
        Constraint::JsonSchema(json!(["not", "a", "schema"])),
    );
    assert!(m.contains("JSON object"), "{m}");
    let m = constraint_error(&mut h, Constraint::Lark("start: missing_rule".into()));
    assert!(m.contains("missing_rule"), "{m}");
    let m = constraint_error(
        &mut h,
        Constraint::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
    );
    assert!(!m.is_empty());
    // The engine is unharmed.
    let g = run(&mut h, request("hi", Some(Constraint::JsonObject), 40));
    assert!(serde_json::from_str::<Value>(&g.text).is_ok_and(|v| v.is_object()));
}

/// Runs `reqs` together on the engine's core; returns each one's ids, or its error.
fn batch(
    h: &mut Hearth,
    reqs: Vec<Request>,
    break_one: Option<usize>,
) -> Vec<Result<Vec<u32>, String>> {
    let ids: Vec<_> = reqs
        .into_iter()
        .map(|r| h.add_request(r).expect("admitted").0)
        .collect();
    if let Some(i) = break_one {
        h.debug_break_constraint(ids[i]);
    }
    let mut out: Vec<Result<Vec<u32>, String>> = vec![Ok(Vec::new()); ids.len()];
    let mut open = ids.len();
    while open > 0 {
        for o in h.step_blocking() {
            match o {
                Output::Token { request, token, .. } => {
                    let i = ids.iter().position(|&r| r == request).unwrap();
                    if let Ok(v) = &mut out[i] {
                        v.push(token.id);
                    }
                }
                Output::Finished { .. } => open -= 1,
                Output::Failed { request, error } => {
                    let i = ids.iter().position(|&r| r == request).unwrap();
                    out[i] = Err(error.to_string());
                    open -= 1;
                }
                Output::Embedding { .. } => panic!("a generation returned an embedding"),
            }
        }
    }
    out
}

#[test]
fn each_request_keeps_its_own_constraint_in_a_batch_and_fails_alone() {
    let mut h = open();
    let reqs = vec![
        request(
            "Describe a user called Bob as JSON.",
            Some(Constraint::JsonSchema(person_schema())),
            60,
        ),
        request("Say hello.", None, 12),
        request(
            "Count to five.",
            Some(Constraint::Regex("[0-9, ]+".into())),
            12,
        ),
        request("Give me a JSON object.", Some(Constraint::JsonObject), 30),
    ];
    let solo: Vec<Vec<u32>> = reqs.iter().map(|r| run(&mut h, r.clone()).ids).collect();
    let together = batch(&mut h, reqs.clone(), None);
    for (i, (s, t)) in solo.iter().zip(&together).enumerate() {
        assert_eq!(Some(s), t.as_ref().ok(), "request {i}");
    }
    // A constraint that breaks mid-way fails its request; the rest go on.
    let broken = batch(&mut h, reqs, Some(0));
    let err = broken[0].as_ref().expect_err("the broken request fails");
    assert!(err.contains("constrained decoding failed"), "{err}");
    for i in 1..4 {
        assert_eq!(Some(&solo[i]), broken[i].as_ref().ok(), "request {i}");
    }
    assert_eq!(h.kv_pool().used_blocks(), 0, "blocks leaked");
}

#[test]
fn a_draft_token_the_constraint_refuses_ends_the_draft_and_each_row_has_its_mask() {
    let tok = gguf_file_tokenizer(&smollm2_path());
    let compiler = ConstraintCompiler::new(&tok, tok.vocab_size()).unwrap();
    let id = |s: &str| {
        let ids = tok.encode(s, false).unwrap();
        assert_eq!(ids.len(), 1, "{s:?} is one token");
        ids[0]
    };
    let (a, b, c, x) = (id("a"), id("b"), id("c"), id("x"));
    let state = compiler
        .compile(&Constraint::Regex("ab[cd]".into()))
        .unwrap();
    let mut fresh = state.clone();
    let first = fresh.mask().unwrap();
    let mut out = SeqOutput::new(&[1], &GenerateOptions::default(), 16)
        .unwrap()
        .with_constraint(Some(state));
    let words = compiler.mask_words();
    // "a b" are allowed, "x" is refused: the draft ends before it.
    let mut d = Draft {
        tokens: vec![a, b, x, c],
        q: Vec::new(),
    };
    out.check_drafts(&mut d).unwrap();
    assert_eq!(d.tokens, vec![a, b]);
    let masks = out.constraint_masks(&d).unwrap().unwrap();
    assert_eq!(masks.len(), 3 * words);
    // Row j's mask is the state after the drafts before it.
    assert!(mask_allows(&masks, a) && !mask_allows(&masks, b));
    assert!(mask_allows(&masks[words..], b) && !mask_allows(&masks[words..], a));
    assert!(mask_allows(&masks[2 * words..], c) && !mask_allows(&masks[2 * words..], x));
    // Checking drafts leaves the sequence where it was.
    assert_eq!(
        out.constraint_masks(&Draft::default()).unwrap().unwrap(),
        first
    );
    // Past the end of the output, drafts are dropped too.
    let mut d = Draft {
        tokens: vec![a, b, c, a],
        q: Vec::new(),
    };
    out.check_drafts(&mut d).unwrap();
    assert_eq!(d.tokens, vec![a, b, c]);
    let masks = out.constraint_masks(&d).unwrap().unwrap();
    assert_eq!(masks.len(), 4 * words);
}

#[test]
fn json_whitespace_is_bounded() {
    let tok = gguf_file_tokenizer(&smollm2_path());
    let compiler = ConstraintCompiler::new(&tok, tok.vocab_size()).unwrap();
    let one = |s: &str| {
        let ids = tok.encode(s, false).unwrap();
        assert_eq!(ids.len(), 1, "{s:?} is one token");
        ids[0]
    };
    let mut st = compiler.compile(&Constraint::JsonObject).unwrap();
    st.consume(one("{")).unwrap();
    let m = st.mask().unwrap();
    // One space, or a newline and an indent; never blank lines.
    assert!(mask_allows(&m, one("\n")) && mask_allows(&m, one(" ")));
    assert!(mask_allows(&m, one("\"")) && mask_allows(&m, one("}")));
    assert!(!mask_allows(&m, one("\n\n")));
    assert!(!mask_allows(&m, one("\n\n\n")));
    // A schema that sets llguidance's own layout keeps it.
    let loose = json!({"type": "object", "x-guidance": {"whitespace_flexible": true}});
    let mut st = compiler.compile(&Constraint::JsonSchema(loose)).unwrap();
    st.consume(one("{")).unwrap();
    assert!(mask_allows(&st.mask().unwrap(), one("\n\n")));
}

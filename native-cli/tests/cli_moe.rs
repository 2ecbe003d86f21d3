//! Mixture-of-experts models through the CLI: `hearth info` reports the
//! experts and the parameters a token uses (against a count made from the
//! safetensors header itself), `hearth run` greedy-decodes the ids
//! transformers did, and `hearth bench` reports the bytes of the routed
//! experts only.

mod serve_common;

use std::path::PathBuf;

use serve_common::hearth_cmd;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/moe")
        .join(case)
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = hearth_cmd().args(args).output().expect("run hearth");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hearth {args:?}: {err}");
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Elements of every tensor in a safetensors file, from its JSON header.
fn safetensors_numel(path: &std::path::Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, t)| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum()
}

#[test]
fn info_reports_experts_and_active_parameters() {
    let dir = fixture("mixtral_f32");
    let v = json(&["info", "--json", "--model", dir.to_str().unwrap()]);
    let m = &v["model"];
    let total = safetensors_numel(&dir.join("model.safetensors"));
    assert_eq!(m["parameters"], total, "{m}");
    // 2 layers of 8 experts (gate, up, down: 3 x 64 x 32 each), 2 used per token.
    let unused = 2 * (8 - 2) * 3 * 64 * 32;
    assert_eq!(m["active_parameters"], total - unused, "{m}");
    let e = &m["experts"];
    assert_eq!(
        (e["count"].as_u64(), e["per_token"].as_u64()),
        (Some(8), Some(2)),
        "{e}"
    );
    assert_eq!(e["sparse_layers"], 2);
    assert_eq!(e["shared_expert_width"], serde_json::Value::Null);
    let e = &json(&[
        "info",
        "--json",
        "--model",
        fixture("qwen2moe_shared_bf16").to_str().unwrap(),
    ])["model"]["experts"];
    assert_eq!(e["shared_expert_width"], 64, "{e}");
    let dense = json(&[
        "info",
        "--json",
        "--model",
        fixture("../hf/llama_f32").to_str().unwrap(),
    ]);
    let d = &dense["model"];
    assert_eq!(
        d["parameters"], d["active_parameters"],
        "a dense model uses all of itself"
    );
    assert!(d["experts"].is_null());
}

#[test]
fn run_decodes_the_golden_ids_and_bench_counts_routed_experts() {
    let dir = fixture("qwen3moe_mlp_only_tied");
    let g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("golden.json")).unwrap()).unwrap();
    let want: Vec<u64> = g["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let prompt = g["prompt"].as_str().unwrap();
    let n = want.len().to_string();
    let v = json(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-tokens",
        &n,
        "--ignore-eos",
        "--json",
    ]);
    let got: Vec<u64> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(got, want, "greedy ids against transformers");

    let b = json(&[
        "bench",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "4",
        "--json",
    ]);
    let (per_token, total) = (
        b["weight_bytes_per_token"].as_u64().unwrap(),
        b["weight_bytes_total"].as_u64().unwrap(),
    );
    // f32 experts: 2 sparse layers x (8 - 3) unused experts x 3 x 64 x 32 floats.
    let unused = 2 * 5 * 3 * 64 * 32 * 4;
    assert!(per_token + unused <= total, "{per_token} of {total}");
}

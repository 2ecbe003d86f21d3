//! Split GGUF models (llama.cpp's `gguf-split`): the tiny model cut into
//! shards by the fixture splitter loads from any shard's path as it does from
//! the one file (the oracle: that file, tensor for tensor and greedy token
//! for token), and every broken set is refused naming what is wrong.

mod common;

use std::path::{Path, PathBuf};

use common::gguf_writer::{split_name, tiny_model, write_split, GgufWriter, Val};
use hearth::engine::{GenerateOptions, SamplingParams};
use hearth::kv::KvDtype;
use hearth::model::forward::ForwardOptions;
use hearth::model::gguf::{GgufFile, GgufModel};
use hearth::model::load::{self, LoadedModel};
use hearth::reference::RefModel;
use hearth::{Engine, HearthError};

const PREFIX: &str = "tiny";

/// The tiny model whole in `dir`/whole.gguf and in `count` shards beside it.
fn write_both(dir: &Path, count: usize) -> (PathBuf, Vec<PathBuf>) {
    let w = tiny_model("llama", false);
    let whole = dir.join("whole.gguf");
    std::fs::write(&whole, w.build()).unwrap();
    (whole, write_split(dir, PREFIX, &w.split(count)))
}

fn assert_same_model(whole: &GgufFile, split: &GgufFile, count: usize) {
    assert_eq!(split.file_count(), count);
    let names =
        |f: &GgufFile| -> Vec<String> { f.tensor_infos().iter().map(|t| t.name.clone()).collect() };
    assert_eq!(names(split), names(whole), "tensors, in the same order");
    for t in whole.tensor_infos() {
        let (a, b) = (
            whole.tensor(&t.name).unwrap(),
            split.tensor(&t.name).unwrap(),
        );
        assert_eq!((a.dtype, &a.shape), (b.dtype, &b.shape), "{}", t.name);
        assert!(a.data == b.data, "{}: data differs", t.name);
    }
    let shards: Vec<usize> = split.tensor_infos().iter().map(|t| t.shard).collect();
    assert_eq!(
        shards.last(),
        Some(&(count - 1)),
        "the data comes from every shard"
    );
    // The model's metadata is the whole file's plus the three split keys.
    for (k, v) in whole.metadata() {
        assert_eq!(split.get(k), Some(v), "metadata `{k}`");
    }
    assert_eq!(split.metadata().len(), whole.metadata().len() + 3);
    assert_eq!(split.config().unwrap(), whole.config().unwrap());
}

#[test]
fn two_and_three_shards_read_bit_identical_to_the_whole_file_from_any_shard() {
    for count in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let (whole, shards) = write_both(dir.path(), count);
        let whole = GgufFile::open(&whole).unwrap();
        for shard in &shards {
            let split = GgufFile::open(shard).unwrap();
            assert_same_model(&whole, &split, count);
        }
        let loaded = load::open(&shards[0]).unwrap();
        assert!(
            loaded.source_desc.contains(&format!("in {count} files")),
            "{}",
            loaded.source_desc
        );
    }
}

/// The same shards from memory, in any order (how a browser would hand them over).
#[test]
fn shards_join_in_memory_in_any_order() {
    let w = tiny_model("llama", false);
    let whole = GgufFile::from_bytes(w.build()).unwrap();
    let mut shards: Vec<(String, GgufFile)> = w
        .split(3)
        .iter()
        .enumerate()
        .map(|(no, s)| {
            (
                split_name(PREFIX, no, 3),
                GgufFile::from_bytes(s.build()).unwrap(),
            )
        })
        .collect();
    shards.rotate_left(1);
    assert_same_model(&whole, &GgufFile::join(shards).unwrap(), 3);
}

/// `$HEARTH_PYTHON` (scripts/test.sh sets it to its venv) or `python3`
/// when it can import gguf-py; `None` (the caller skips) when `python3`
/// cannot and `$HEARTH_PYTHON` is unset. A set `$HEARTH_PYTHON` without
/// it fails the test.
fn python_with_gguf() -> Option<String> {
    let py = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import gguf"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    assert!(
        std::env::var_os("HEARTH_PYTHON").is_none(),
        "HEARTH_PYTHON={py} cannot import gguf (pip install gguf==0.19.0; scripts/test.sh does)"
    );
    eprintln!("skipped: {py} cannot import gguf");
    None
}

/// Shards that gguf-py wrote (llama.cpp's Python GGUF writer, a second
/// implementation of the format) read as the file they came from.
#[test]
fn shards_written_by_gguf_py_read_as_the_whole_file() {
    let Some(py) = python_with_gguf() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.gguf");
    std::fs::write(&whole, tiny_model("llama", false).build()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_py_split.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .arg(&whole)
        .arg(dir.path().join("py.gguf"))
        .arg("8")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 21 tensors, 8 to a shard.
    let first = dir.path().join(split_name("py", 0, 3));
    let whole = GgufFile::open(&whole).unwrap();
    assert_same_model(&whole, &GgufFile::open(&first).unwrap(), 3);
}

/// A model's greedy tokens: on the GPU, and from the CPU reference.
fn greedy(loaded: LoadedModel, prompt: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let reference = RefModel::load(&*loaded.weights)
        .unwrap()
        .generate_greedy(prompt, 12, &[])
        .unwrap();
    let opts = ForwardOptions {
        kv_memory: 1 << 20,
        kv_dtype: KvDtype::F32,
        ..Default::default()
    };
    let mut e = Engine::from_loaded(common::gpu(), loaded, opts, &mut |_| {}).unwrap();
    let opts = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: 12,
        ignore_eos: true,
        ..Default::default()
    };
    let g = e.generate_blocking(prompt, &opts, &mut |_| true).unwrap();
    (g.ids, reference)
}

#[test]
fn first_shard_generates_the_whole_files_greedy_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, shards) = write_both(dir.path(), 3);
    let prompt: Vec<u32> = (0..23).map(|i| (i * 7 + 3) % 40).collect();
    let want = greedy(load::open(&whole).unwrap(), &prompt);
    let got = greedy(load::open(&shards[0]).unwrap(), &prompt);
    assert_eq!(got, want, "(GPU ids, reference ids)");
    // Benchmarks open split models too (header only, random weights).
    let dummy = load::open_dummy(&shards[0]).unwrap();
    assert_eq!(
        dummy.weights.config(),
        load::open(&whole).unwrap().weights.config()
    );
}

/// The error of opening the first of `shards` (after `edit` broke them) by path.
fn open_err(shards: Vec<GgufWriter>, edit: impl FnOnce(&Path, &[PathBuf])) -> String {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_split(dir.path(), PREFIX, &shards);
    edit(dir.path(), &paths);
    let e = load::open(&paths[0]).expect_err("a broken split model loaded");
    assert!(
        matches!(e, HearthError::InvalidFile(_)),
        "not an InvalidFile error: {e}"
    );
    e.to_string()
}

fn assert_says(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "`{p}` not in: {err}");
    }
}

#[test]
fn a_missing_shard_is_named() {
    let err = open_err(tiny_model("llama", false).split(3), |_, p| {
        std::fs::remove_file(&p[1]).unwrap()
    });
    assert_says(
        &err,
        &["shard 2 of 3 is missing", "tiny-00002-of-00003.gguf"],
    );
}

#[test]
fn a_tensor_in_two_shards_is_named() {
    let mut shards = tiny_model("llama", false).split(3);
    let t = shards[0].tensors[0].clone();
    shards[2].tensors.push(t);
    let err = open_err(shards, |_, _| {});
    assert_says(
        &err,
        &[
            "tensor `token_embd.weight` is in both",
            "tiny-00001-of-00003.gguf and",
            "tiny-00003-of-00003.gguf",
        ],
    );
}

#[test]
fn a_shard_with_another_split_count_is_named() {
    let mut shards = tiny_model("llama", false).split(3);
    shards[1].kv("split.count", Val::U16(4));
    let err = open_err(shards, |_, _| {});
    assert_says(
        &err,
        &["tiny-00002-of-00003.gguf says split.count = 4", "says 3"],
    );
}

#[test]
fn a_tensor_count_that_disagrees_with_the_shards_is_named() {
    let w = tiny_model("llama", false);
    let n = w.tensors.len();
    let mut shards = w.split(2);
    for s in &mut shards {
        s.kv("split.tensors.count", Val::I32(n as i32 + 1));
    }
    let err = open_err(shards, |_, _| {});
    assert_says(
        &err,
        &[&format!(
            "split.tensors.count = {}, but the 2 shards hold {n} tensors",
            n + 1
        )],
    );
    // A shard that disagrees with the first about the count.
    let mut shards = w.split(2);
    shards[1].kv("split.tensors.count", Val::I32(n as i32 - 1));
    let err = open_err(shards, |_, _| {});
    assert_says(&err, &["tiny-00002-of-00002.gguf says split.tensors.count"]);
}

#[test]
fn a_shard_whose_name_and_number_disagree_is_named() {
    let err = open_err(tiny_model("llama", false).split(3), |dir, p| {
        // Shards 2 and 3 swap names.
        let tmp = dir.join("swap");
        std::fs::rename(&p[1], &tmp).unwrap();
        std::fs::rename(&p[2], &p[1]).unwrap();
        std::fs::rename(&tmp, &p[2]).unwrap();
    });
    assert_says(
        &err,
        &[
            "tiny-00002-of-00003.gguf is named shard 2 of 3",
            "split.no = 2 says shard 3",
        ],
    );
}

#[test]
fn a_renamed_shard_cannot_find_its_siblings_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_split(dir.path(), PREFIX, &tiny_model("llama", false).split(2));
    let renamed = dir.path().join("renamed.gguf");
    std::fs::rename(&p[0], &renamed).unwrap();
    let e = load::open(&renamed).unwrap_err().to_string();
    assert_says(
        &e,
        &["shard 1 of 2", "does not end in `-00001-of-00002.gguf`"],
    );
}

/// One shard from memory is not mistaken for a model that lacks tensors.
#[test]
fn a_lone_shard_from_memory_says_it_is_one_of_several() {
    let shards = tiny_model("llama", false).split(3);
    let e = GgufModel::from_bytes(shards[0].build()).unwrap_err();
    assert_says(&e.to_string(), &["shard 1 of 3 of a split GGUF"]);
    let e = GgufFile::join(vec![(
        "only".into(),
        GgufFile::from_bytes(shards[0].build()).unwrap(),
    )])
    .unwrap_err();
    assert_says(&e.to_string(), &["shard 2 of 3", "is missing"]);
}

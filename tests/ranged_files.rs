//! Model files read in slices (the browser's Blob path): the same tensors as
//! from memory, the header parsed from a prefix that grows only as needed,
//! and no more of the file read than the header plus the tensors asked for.

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::gguf_writer::{tiny_model, GgufWriter, Val};
use common::hf_writer;
use hearth::model::gguf::{GgufFile, GgufModel};
use hearth::model::hf::HfModel;
use hearth::model::load::{check_shapes, FileBytes, RangeRead};
use hearth::model::WeightSource;
use hearth::{HearthError, Result};

/// A file in memory that only hands out copies of slices, counting bytes read.
struct Slices {
    bytes: Vec<u8>,
    read: Rc<Cell<u64>>,
}

impl RangeRead for Slices {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read(&self, start: u64, len: usize) -> Result<Vec<u8>> {
        self.read.set(self.read.get() + len as u64);
        Ok(self.bytes[start as usize..start as usize + len].to_vec())
    }
}

fn ranged(bytes: Vec<u8>) -> (FileBytes, Rc<Cell<u64>>) {
    let read = Rc::new(Cell::new(0));
    let r = Slices {
        bytes,
        read: read.clone(),
    };
    (FileBytes::Ranged(Box::new(r)), read)
}

fn assert_same_tensors(a: &dyn WeightSource, b: &dyn WeightSource, names: &[String]) {
    for name in names {
        let (x, y) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
        assert_eq!((x.dtype, &x.shape), (y.dtype, &y.shape), "{name}");
        assert_eq!(x.data, y.data, "{name}");
        assert_eq!(b.tensor_meta(name).unwrap(), (y.dtype, y.shape.clone()));
    }
}

#[test]
fn gguf_read_in_slices_matches_memory_and_reads_only_what_is_asked() {
    let bytes = tiny_model("llama", false).build();
    let whole = GgufModel::from_bytes(bytes.clone()).unwrap();
    let (fb, read) = ranged(bytes.clone());
    let sliced = GgufModel::new(GgufFile::parse(fb).unwrap()).unwrap();
    // The tiny file is smaller than the first prefix, so parsing read it once.
    assert_eq!(read.get(), bytes.len() as u64);
    read.set(0);
    check_shapes(&sliced).unwrap();
    assert_eq!(read.get(), 0, "the shape check must not read tensor data");
    let names: Vec<String> = whole
        .file()
        .tensor_infos()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_same_tensors(&whole, &sliced, &names);
    let data: u64 = names
        .iter()
        .map(|n| whole.tensor(n).unwrap().data.len() as u64)
        .sum();
    assert_eq!(read.get(), data);
}

#[test]
fn gguf_metadata_larger_than_the_first_prefix_is_read_by_growing_it() {
    let mut w: GgufWriter = tiny_model("qwen2", true);
    // ~3 MiB of metadata pushes the tensor table past the first 1 MiB prefix.
    let big: Vec<String> = (0..300_000).map(|i| format!("filler{i}")).collect();
    w.kv("test.filler", Val::strs(&big));
    let bytes = w.build();
    assert!(bytes.len() > 3 << 20);
    let (fb, read) = ranged(bytes.clone());
    let sliced = GgufFile::parse(fb).unwrap();
    let whole = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(sliced.data_offset(), whole.data_offset());
    assert_eq!(sliced.metadata().len(), whole.metadata().len());
    // 1 MiB, then 4 MiB capped at the file: less than twice the file in all.
    assert!(read.get() < 2 * bytes.len() as u64, "read {}", read.get());
}

#[test]
fn truncated_gguf_read_in_slices_is_an_error_not_a_retry_loop() {
    let bytes = tiny_model("llama", false).build();
    for cut in [3, 20, 200, bytes.len() - 1] {
        let (fb, _) = ranged(bytes[..cut].to_vec());
        let e = GgufFile::parse(fb).unwrap_err();
        assert!(matches!(e, HearthError::InvalidFile(_)), "cut {cut}: {e}");
    }
}

#[test]
fn safetensors_read_in_slices_matches_memory() {
    use hf_writer::*;
    let ts = tensors("LlamaForCausalLM", 16, true, |_| safetensors::Dtype::F16);
    let cfg = config("LlamaForCausalLM", serde_json::json!({})).to_string();
    let bytes = serialize(&ts);
    let whole =
        HfModel::from_parts(&cfg, vec![("model.safetensors".into(), bytes.clone())]).unwrap();
    let (fb, read) = ranged(bytes.clone());
    let sliced = HfModel::from_files(&cfg, vec![("model.safetensors".into(), fb)]).unwrap();
    let header = read.get();
    assert!(header < bytes.len() as u64 / 2, "header read {header}");
    check_shapes(&sliced).unwrap();
    assert_eq!(
        read.get(),
        header,
        "the shape check must not read tensor data"
    );
    let names: Vec<String> = whole.tensor_names().iter().map(|s| s.to_string()).collect();
    assert_same_tensors(&whole, &sliced, &names);

    // A file whose data ends early is refused from the header alone.
    let (short, _) = ranged(bytes[..bytes.len() - 2].to_vec());
    let e = HfModel::from_files(&cfg, vec![("model.safetensors".into(), short)]).unwrap_err();
    assert!(e.to_string().contains("header describes"), "{e}");
}

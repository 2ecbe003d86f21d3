//! Opening a model from a path (a `.gguf` file or a Hugging Face directory),
//! the bytes a loader reads (a memory map natively, a Blob read in slices in
//! the browser, or a Vec in tests), and
//! the shape check every loader's output goes through before the forward pass.

use std::borrow::Cow;

use super::config::names;
use super::WeightSource;
use crate::text::vocab::TokenizerSpec;
use crate::{HearthError, Result};

/// Random access to a model file that can be neither mapped nor held whole:
/// in the browser, a `Blob` read slice by slice, so the wasm heap only ever
/// holds the header and one tensor.
pub trait RangeRead {
    fn size(&self) -> u64;
    /// Exactly `len` bytes starting at `start` (the caller bounds-checks).
    fn read(&self, start: u64, len: usize) -> Result<Vec<u8>>;
}

/// The bytes of one model file.
pub enum FileBytes {
    Owned(Vec<u8>),
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Ranged(Box<dyn RangeRead>),
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBytes({} bytes)", self.len())
    }
}

impl FileBytes {
    /// Maps a file read-only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn map(path: &std::path::Path) -> Result<Self> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| HearthError::io(&shown, e))?;
        // SAFETY: the map is read-only; a model file changed underneath a
        // running process is outside what any loader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| HearthError::io(&shown, e))?;
        Ok(FileBytes::Mapped(map))
    }

    pub fn len(&self) -> u64 {
        match self {
            FileBytes::Owned(v) => v.len() as u64,
            #[cfg(not(target_arch = "wasm32"))]
            FileBytes::Mapped(m) => m.len() as u64,
            FileBytes::Ranged(r) => r.size(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether reading costs a copy (and so readers should ask for little).
    pub fn is_ranged(&self) -> bool {
        matches!(self, FileBytes::Ranged(_))
    }

    /// `len` bytes at `start`: borrowed when the file is in memory or mapped,
    /// read on demand otherwise. A range past the end is an `InvalidFile` error.
    pub fn range(&self, start: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        let end = start.checked_add(len as u64).filter(|&e| e <= self.len());
        let Some(end) = end else {
            return Err(HearthError::InvalidFile(format!(
                "read of {len} bytes at offset {start} runs past the end of the file ({} bytes)",
                self.len()
            )));
        };
        let (s, e) = (start as usize, end as usize);
        Ok(match self {
            FileBytes::Owned(v) => Cow::Borrowed(&v[s..e]),
            #[cfg(not(target_arch = "wasm32"))]
            FileBytes::Mapped(m) => Cow::Borrowed(&m[s..e]),
            FileBytes::Ranged(r) => {
                let v = r.read(start, len)?;
                if v.len() != len {
                    return Err(HearthError::io(
                        format!("bytes {start}..{end}"),
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("read returned {} of {len} bytes", v.len()),
                        ),
                    ));
                }
                Cow::Owned(v)
            }
        })
    }
}

/// A model ready to be uploaded: its weights and where its tokenizer comes from.
pub struct LoadedModel {
    pub weights: Box<dyn WeightSource>,
    pub tokenizer: TokenizerSpec,
    /// A short human-readable description ("GGUF v3 llama, 272 tensors").
    pub source_desc: String,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("config", self.weights.config())
            .field("source_desc", &self.source_desc)
            .finish()
    }
}

/// Opens a `.gguf` file (a split GGUF by any of its shards) or a Hugging
/// Face model directory (with `config.json`).
#[cfg(not(target_arch = "wasm32"))]
pub fn open(path: &std::path::Path) -> Result<LoadedModel> {
    open_with(path, false)
}

/// [`open`] with random weights in the model's shapes and formats
/// ([`super::dummy::DummyWeights`]), for benchmarks. A `.gguf` may be cut
/// off anywhere after its tensor table (its weights are never read); a
/// Hugging Face directory must be whole.
#[cfg(not(target_arch = "wasm32"))]
pub fn open_dummy(path: &std::path::Path) -> Result<LoadedModel> {
    let LoadedModel {
        weights,
        tokenizer,
        source_desc,
    } = open_with(path, true)?;
    Ok(LoadedModel {
        weights: Box::new(super::dummy::DummyWeights::new(weights)),
        tokenizer,
        source_desc: source_desc + ", dummy weights",
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn open_with(path: &std::path::Path, header_only: bool) -> Result<LoadedModel> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| HearthError::io(&shown, e))?;
    if meta.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(HearthError::InvalidFile(format!(
                "{shown} is a directory without config.json (expected a Hugging Face model directory)"
            )));
        }
        return LoadedModel::from_hf(super::hf::HfModel::open(path)?, &shown);
    }
    let is_gguf_ext = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let mut magic = [0u8; 4];
    let has_gguf_magic = {
        use std::io::Read;
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == b"GGUF"
    };
    if !is_gguf_ext && !has_gguf_magic {
        return Err(HearthError::InvalidFile(format!(
            "{shown}: expected a .gguf file or a Hugging Face model directory"
        )));
    }
    let file = if header_only {
        super::gguf::GgufFile::open_header_only(path)?
    } else {
        super::gguf::GgufFile::open(path)?
    };
    LoadedModel::from_gguf(super::gguf::GgufModel::new(file)?, &shown)
}

impl LoadedModel {
    /// `shown` names where the file came from (a path, a URL, a file name).
    pub fn from_gguf(model: super::gguf::GgufModel, shown: &str) -> Result<LoadedModel> {
        let tokenizer = TokenizerSpec::Gguf(model.vocab()?);
        let file = model.file();
        let files = match file.file_count() {
            1 => String::new(),
            n => format!(" in {n} files"),
        };
        let source_desc = format!(
            "GGUF v{} {} from {shown} ({} tensors{files})",
            file.version(),
            file.architecture()?,
            file.tensor_infos().len()
        );
        Ok(LoadedModel {
            weights: Box::new(model),
            tokenizer,
            source_desc,
        })
    }

    pub fn from_hf(hf: super::hf::HfModel, shown: &str) -> Result<LoadedModel> {
        let tokenizer = hf.tokenizer_spec()?;
        let source_desc = format!(
            "Hugging Face {:?} model from {shown} ({} tensors)",
            hf.config().arch,
            hf.tensor_names().len()
        );
        Ok(LoadedModel {
            weights: Box::new(hf),
            tokenizer,
            source_desc,
        })
    }
}

/// The tensors the forward pass needs, by canonical name, with the shapes
/// (PyTorch order) the config implies.
pub fn expected_tensors(src: &dyn WeightSource) -> Vec<(String, Vec<usize>)> {
    let c = src.config();
    let (h, q, kv, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let mut v = vec![
        (names::TOKEN_EMBD.to_string(), vec![c.vocab_size, h]),
        (names::OUTPUT_NORM.to_string(), vec![h]),
    ];
    // A tied model may still ship an output matrix; check it when it does.
    if !c.tie_word_embeddings || src.has_tensor(names::OUTPUT) {
        v.push((names::OUTPUT.to_string(), vec![c.vocab_size, h]));
    }
    for l in 0..c.num_layers {
        let mut add = |what: &str, shape: Vec<usize>| v.push((names::blk(l, what), shape));
        add("attn_norm.weight", vec![h]);
        add("attn_q.weight", vec![q, h]);
        add("attn_k.weight", vec![kv, h]);
        add("attn_v.weight", vec![kv, h]);
        add("attn_output.weight", vec![h, q]);
        if c.attention_bias {
            add("attn_q.bias", vec![q]);
            add("attn_k.bias", vec![kv]);
            add("attn_v.bias", vec![kv]);
        }
        if c.qk_norm {
            add("attn_q_norm.weight", vec![c.head_dim]);
            add("attn_k_norm.weight", vec![c.head_dim]);
        }
        add("ffn_norm.weight", vec![h]);
        match &c.moe {
            Some(moe) if moe.is_sparse(l) => v.extend(moe.layer_tensors(l, h)),
            _ => {
                add("ffn_gate.weight", vec![f, h]);
                add("ffn_up.weight", vec![f, h]);
                add("ffn_down.weight", vec![h, f]);
            }
        }
    }
    v
}

/// Verifies that every tensor the model needs exists, has a supported type
/// and the shape its config implies: `MissingTensor`, `ShapeMismatch` or
/// `Unsupported` otherwise, before anything is uploaded.
pub fn check_shapes(src: &dyn WeightSource) -> Result<()> {
    for (name, expected) in expected_tensors(src) {
        let (_, found) = src.tensor_meta(&name)?;
        if found != expected {
            return Err(HearthError::ShapeMismatch {
                name,
                expected,
                found,
            });
        }
    }
    Ok(())
}

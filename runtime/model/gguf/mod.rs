//! GGUF reader (versions 2 and 3): header, metadata, tensor infos and the
//! data section, all bounds-checked against the file before use. Tensor data
//! is borrowed straight from the file bytes (a memory map natively). A model
//! split by llama.cpp's `gguf-split` reads as one file ([`split`]).

mod config;
mod metadata;
mod moe_config;
mod reader;
pub mod split;
pub mod types;
mod weights;

use std::collections::HashMap;

pub use metadata::MetaValue;
pub use weights::GgufModel;

use self::reader::Reader;
use super::load::FileBytes;
use super::{DType, HostTensor};
use crate::{HearthError, Result};

/// "GGUF" read as a little-endian u32.
const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// How much of a Blob-backed file the header parse reads first; it grows
/// fourfold while the metadata runs past it, up to the cap.
const INITIAL_PREFIX: u64 = 1 << 20;
const MAX_HEADER_BYTES: u64 = 256 << 20;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// One entry of the tensor-info table, as stored (dims in ggml order:
/// `dims[0]` is the innermost, contiguous dimension).
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Which file of a split model holds the data (its `split.no`; 0 for
    /// a model in one file).
    pub shard: usize,
}

impl GgufTensorInfo {
    /// Shape in PyTorch order (outermost first).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn type_name(&self) -> String {
        types::ggml_type_name(self.type_id)
    }

    /// The element format, or `Unsupported` naming the tensor and its ggml type.
    pub fn dtype(&self) -> Result<DType> {
        types::dtype_from_ggml(self.type_id).ok_or_else(|| {
            HearthError::Unsupported(format!(
                "tensor `{}` has GGUF type {} (id {}); supported types are F32, F16, BF16, Q8_0, Q4_0 and Q4_1",
                self.name,
                self.type_name(),
                self.type_id
            ))
        })
    }
}

/// The bytes of one file and where its data section starts.
struct Part {
    bytes: FileBytes,
    data_offset: usize,
}

/// A parsed GGUF model that owns its bytes: one file, or the shards of a
/// split model joined (metadata of the first, tensors of all).
pub struct GgufFile {
    /// One per file, in `split.no` order; tensors name theirs by `shard`.
    parts: Vec<Part>,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("files", &self.parts.len())
            .field(
                "bytes",
                &self.parts.iter().map(|p| p.bytes.len()).sum::<u64>(),
            )
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses a GGUF file; a shard of a split model brings
    /// its siblings from the same folder ([`GgufFile::open_split`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Self::open_split(path, Self::parse(FileBytes::map(path)?)?, true)
    }

    /// Parses a GGUF file held in memory (the browser path).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(FileBytes::Owned(bytes))
    }

    /// Parses the header, metadata and tensor table. A file read in slices
    /// is parsed from a growing prefix, so only the header is ever copied.
    pub fn parse(bytes: FileBytes) -> Result<Self> {
        Self::parse_with(bytes, true)
    }

    /// [`GgufFile::parse`] of a file that may end anywhere after its tensor
    /// table (a "skeleton": the header of a model without its weights, for
    /// [`crate::model::dummy::DummyWeights`]). Tensor shapes and offsets are
    /// still checked; reading a tensor whose data is missing is an error.
    pub fn parse_header_only(bytes: FileBytes) -> Result<Self> {
        Self::parse_with(bytes, false)
    }

    /// [`GgufFile::parse_header_only`] of a file on disk (and of its
    /// siblings when it is a shard of a split model).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_header_only(path: &std::path::Path) -> Result<Self> {
        Self::open_split(path, Self::parse_header_only(FileBytes::map(path)?)?, false)
    }

    pub(crate) fn parse_with(bytes: FileBytes, need_data: bool) -> Result<Self> {
        let file_len = bytes.len();
        // Mapped and in-memory files are read from a prefix too: the header
        // has the same size cap however the file is read.
        let mut prefix_len = if bytes.is_ranged() {
            file_len.min(INITIAL_PREFIX)
        } else {
            file_len.min(MAX_HEADER_BYTES)
        };
        loop {
            let prefix = bytes.range(0, prefix_len as usize)?;
            let mut r = Reader::prefix(&prefix, file_len);
            match Self::parse_header(&mut r, file_len) {
                Ok(mut file) => {
                    file.parts[0].bytes = bytes;
                    for t in &file.tensors {
                        file.check_tensor(t, need_data)?;
                    }
                    return Ok(file);
                }
                Err(e) if !r.short => return Err(e),
                Err(e) if prefix_len >= MAX_HEADER_BYTES => {
                    return Err(HearthError::Unsupported(format!(
                        "GGUF metadata larger than {} MiB ({e})",
                        MAX_HEADER_BYTES >> 20
                    )))
                }
                Err(_) => prefix_len = (prefix_len * 4).min(file_len).min(MAX_HEADER_BYTES),
            }
        }
    }

    /// Everything up to the data section; the bytes are left empty for `parse` to fill.
    fn parse_header(r: &mut Reader<'_>, file_len: u64) -> Result<Self> {
        let magic = r.bytes(4, "magic")?;
        if magic != MAGIC {
            return Err(HearthError::InvalidFile(format!(
                "not a GGUF file: bad magic {magic:02x?} (expected \"GGUF\")"
            )));
        }
        let version = r.u32("version")?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(HearthError::Unsupported(
                    "GGUF version 1 (re-convert the model with a current llama.cpp)".into(),
                ))
            }
            v => {
                return Err(HearthError::Unsupported(format!(
                    "GGUF version {v} (supported: 2 and 3)"
                )))
            }
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // Minimal encodings: a key/value is >= 8 (key len) + 4 (type) + 1 bytes,
        // a tensor info >= 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset).
        let n_kv = r.check_count(n_kv, 13, "metadata")?;
        let mut metadata = Vec::with_capacity(n_kv);
        let mut meta_index = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let type_id = r.u32(&key)?;
            let value = metadata::read_value(r, type_id, &key, 0)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(HearthError::InvalidFile(format!(
                    "GGUF metadata key `{key}` appears twice"
                )));
            }
            metadata.push((key, value));
        }
        let n_tensors = r.check_count(n_tensors, 24, "tensor")?;
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(HearthError::InvalidFile(format!(
                    "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&name)?);
            }
            let type_id = r.u32(&name)?;
            let offset = r.u64(&name)?;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(HearthError::InvalidFile(format!(
                    "tensor `{name}` appears twice"
                )));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                type_id,
                offset,
                shard: 0,
            });
        }
        let mut file = GgufFile {
            version,
            alignment: DEFAULT_ALIGNMENT,
            metadata,
            meta_index,
            tensors,
            tensor_index,
            parts: Vec::new(),
        };
        if let Some(a) = file.get_u64("general.alignment")? {
            if a == 0 || !a.is_power_of_two() || a > 1 << 20 {
                return Err(HearthError::InvalidFile(format!(
                    "general.alignment {a} is not a power of two up to 1 MiB"
                )));
            }
            file.alignment = a;
        }
        let end_of_infos = r.pos() as u64;
        let data_offset = end_of_infos.div_ceil(file.alignment) * file.alignment;
        if data_offset > file_len && !file.tensors.is_empty() {
            return Err(HearthError::InvalidFile(format!(
                "GGUF truncated: data section starts at byte {data_offset}, file has {file_len} bytes"
            )));
        }
        file.parts.push(Part {
            bytes: FileBytes::Owned(Vec::new()),
            data_offset: data_offset as usize,
        });
        Ok(file)
    }

    /// Bounds/consistency checks for one tensor whose type is supported;
    /// unknown types are reported when the tensor is requested.
    fn check_tensor(&self, t: &GgufTensorInfo, need_data: bool) -> Result<()> {
        let part = &self.parts[t.shard];
        let bad = |m: String| {
            Err(HearthError::InvalidFile(format!(
                "tensor `{}`: {m}",
                t.name
            )))
        };
        let mut numel: u64 = 1;
        for &d in &t.dims {
            numel = match numel.checked_mul(d) {
                Some(n) if d > 0 => n,
                _ => return bad(format!("dimensions {:?} are zero or overflow", t.dims)),
            };
        }
        if !t.offset.is_multiple_of(self.alignment) {
            return bad(format!(
                "data offset {} is not a multiple of the alignment {}",
                t.offset, self.alignment
            ));
        }
        let Some(dtype) = types::dtype_from_ggml(t.type_id) else {
            return Ok(());
        };
        if !t.dims[0].is_multiple_of(dtype.block_elems() as u64) {
            return bad(format!(
                "row length {} is not a multiple of the {} block size {}",
                t.dims[0],
                dtype.name(),
                dtype.block_elems()
            ));
        }
        let size = (numel / dtype.block_elems() as u64).checked_mul(dtype.block_bytes() as u64);
        let end = size
            .and_then(|s| s.checked_add(t.offset))
            .and_then(|e| e.checked_add(part.data_offset as u64));
        match end {
            Some(e) if e <= part.bytes.len() || !need_data => Ok(()),
            _ => bad(format!(
                "data ({} {} elements at offset {}) runs past the end of the file ({} bytes)",
                numel,
                dtype.name(),
                t.offset,
                part.bytes.len()
            )),
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file (the first file of a
    /// split model).
    pub fn data_offset(&self) -> usize {
        self.parts[0].data_offset
    }

    /// How many files the model was read from: 1, or the shards of a split model.
    pub fn file_count(&self) -> usize {
        self.parts.len()
    }

    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn typed<'s, T>(
        &'s self,
        key: &str,
        want: &str,
        f: impl Fn(&'s MetaValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| {
                HearthError::InvalidFile(format!(
                    "GGUF metadata `{key}` is a {}, expected {want}",
                    v.type_name()
                ))
            }),
        }
    }

    /// Any non-negative integer type; a wrong type is an error, absence is `None`.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", MetaValue::as_u64)
    }

    pub fn get_usize(&self, key: &str) -> Result<Option<usize>> {
        self.typed(key, "a non-negative integer", |v| {
            v.as_u64().and_then(|x| usize::try_from(x).ok())
        })
    }

    pub fn get_i64(&self, key: &str) -> Result<Option<i64>> {
        self.typed(key, "an integer", MetaValue::as_i64)
    }

    /// Floats, or integers converted.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        self.typed(key, "a number", |v| v.as_f64().map(|x| x as f32))
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", MetaValue::as_bool)
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", MetaValue::as_str)
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&[MetaValue]>> {
        self.typed(key, "an array", MetaValue::as_array)
    }

    /// An array whose elements all convert with `f`.
    pub fn get_array_of<'s, T>(
        &'s self,
        key: &str,
        want: &str,
        f: impl Fn(&'s MetaValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(arr) = self.get_array(key)? else {
            return Ok(None);
        };
        arr.iter()
            .map(|v| {
                f(v).ok_or_else(|| {
                    HearthError::InvalidFile(format!(
                        "GGUF metadata `{key}` holds a {}, expected {want}",
                        v.type_name()
                    ))
                })
            })
            .collect::<Result<Vec<T>>>()
            .map(Some)
    }

    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensor_index.contains_key(name)
    }

    /// Whether `name` exists and its data is in the file (always, unless the
    /// file was parsed with [`GgufFile::parse_header_only`]).
    pub fn has_tensor_data(&self, name: &str) -> bool {
        let Some(info) = self.tensor_info(name) else {
            return false;
        };
        let len = self.parts[info.shard].bytes.len();
        matches!(self.data_span(info), Ok((start, size)) if start + size as u64 <= len)
    }

    /// Where a tensor's data starts in its file and its size in bytes
    /// (`parse` checked that start + size does not overflow).
    fn data_span(&self, info: &GgufTensorInfo) -> Result<(u64, usize)> {
        let size = info.dtype()?.bytes_for(info.numel() as usize)?;
        Ok((
            self.parts[info.shard].data_offset as u64 + info.offset,
            size,
        ))
    }

    /// A tensor with its shape in PyTorch order and its data borrowed from the file.
    pub fn tensor(&self, name: &str) -> Result<HostTensor<'_>> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| HearthError::MissingTensor(name.to_string()))?;
        let (start, size) = self.data_span(info)?;
        Ok(HostTensor {
            name: name.to_string(),
            dtype: info.dtype()?,
            shape: info.shape(),
            // A header-only file's missing data is an InvalidFile error here.
            data: self.parts[info.shard].bytes.range(start, size)?,
        })
    }
}

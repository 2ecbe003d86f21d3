//! A browser `Blob` (a `File`, or a Cache API response body) as a model file
//! read in slices.

use hearth::model::load::RangeRead;
use hearth::{HearthError, Result};
use wasm_bindgen::JsValue;
use web_sys::{Blob, FileReaderSync};

/// Largest single read: one tensor must fit in the wasm32 heap (4 GiB of
/// address space shared with everything else).
const MAX_READ: usize = 1 << 30;

pub struct BlobFile {
    name: String,
    blob: Blob,
    reader: FileReaderSync,
}

pub fn js_err(what: &str, e: JsValue) -> HearthError {
    let msg = e
        .as_string()
        .or_else(|| {
            js_sys::Reflect::get(&e, &"message".into())
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{e:?}"));
    HearthError::io(what, std::io::Error::other(msg))
}

impl BlobFile {
    pub fn new(name: &str, blob: Blob) -> Result<BlobFile> {
        let reader = FileReaderSync::new()
            .map_err(|e| js_err("FileReaderSync (the engine must run in a Web Worker)", e))?;
        Ok(BlobFile {
            name: name.to_string(),
            blob,
            reader,
        })
    }

    pub fn read_text(&self) -> Result<String> {
        self.reader
            .read_as_text(&self.blob)
            .map_err(|e| js_err(&self.name, e))
    }
}

impl RangeRead for BlobFile {
    fn size(&self) -> u64 {
        self.blob.size() as u64
    }

    fn read(&self, start: u64, len: usize) -> Result<Vec<u8>> {
        if len > MAX_READ {
            return Err(HearthError::Unsupported(format!(
                "{}: one read of {} MiB at offset {start} exceeds the {} MiB a single tensor may take in the WebAssembly heap (wasm32 has 4 GiB in all)",
                self.name,
                len >> 20,
                MAX_READ >> 20
            )));
        }
        let slice = self
            .blob
            .slice_with_f64_and_f64(start as f64, (start + len as u64) as f64)
            .map_err(|e| js_err(&self.name, e))?;
        let buf = self
            .reader
            .read_as_array_buffer(&slice)
            .map_err(|e| js_err(&self.name, e))?;
        Ok(js_sys::Uint8Array::new(&buf).to_vec())
    }
}

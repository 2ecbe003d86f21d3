//! Hearth in a browser tab: the runtime compiled to wasm32 behind a small
//! JavaScript API. It is meant to run inside a Web Worker (`web/www/hearth-worker.js`):
//! model files are read slice by slice with `FileReaderSync`, which only
//! workers have, so the page never freezes and the wasm heap never holds the
//! whole model.
#![cfg(target_arch = "wasm32")]

mod blob_file;
mod engine;
mod files;
mod generate;
mod options;

pub use engine::Engine;

use wasm_bindgen::prelude::*;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The crate version, for the page's footer and bug reports.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

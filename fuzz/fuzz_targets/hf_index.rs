//! Any text as `model.safetensors.index.json`, and as `config.json`.
#![no_main]

use hearth::model::hf::{parse_config, shard_names_from_index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(names) = shard_names_from_index(text) {
            assert!(names.iter().all(|n| !n.contains('/') && !n.contains('\\')));
        }
        let _ = parse_config(text, data.len() % 2 == 0);
    }
});

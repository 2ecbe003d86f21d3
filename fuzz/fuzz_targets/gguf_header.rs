//! Any bytes as a GGUF file: header, metadata, tensor table, config and the
//! shape check must end in an error or a model, never a panic or a huge
//! allocation.
#![no_main]

use hearth::model::gguf::GgufModel;
use hearth::model::load::check_shapes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = GgufModel::from_bytes(data.to_vec()) {
        let _ = check_shapes(&m);
        for t in m.file().tensor_infos() {
            let _ = m.file().tensor(&t.name).and_then(|t| t.to_f32());
        }
    }
});

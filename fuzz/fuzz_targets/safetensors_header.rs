//! Any bytes as a safetensors shard of a small valid config.
#![no_main]

use hearth::model::hf::HfModel;
use hearth::model::load::check_shapes;
use hearth::model::WeightSource;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
  "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "vocab_size": 40, "max_position_embeddings": 512}"#;

fuzz_target!(|data: &[u8]| {
    let shards = vec![("model.safetensors".to_string(), data.to_vec())];
    if let Ok(m) = HfModel::from_parts(CONFIG, shards) {
        let _ = check_shapes(&m);
        for name in m.tensor_names() {
            let _ = m.tensor(name).and_then(|t| t.to_f32());
        }
    }
});

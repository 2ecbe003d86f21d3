//! `hearth info`: the GPU adapters wgpu finds and, with `--model`, what each
//! `--kv-dtype` costs that model per token ([`kv_report`]).

mod kv_report;

use std::path::PathBuf;

use anyhow::Result;

pub fn run(json: bool, model: Option<PathBuf>) -> Result<()> {
    let model = model.map(|m| crate::hub::resolve(&m)).transpose()?;
    let adapters = pollster::block_on(hearth::gpu::context::list_adapters());
    if json {
        // With a model, one object; without, the adapter list as before.
        let v = match &model {
            Some(p) => serde_json::json!({
                "adapters": adapters,
                "model": kv_report::model_info(p, true)?,
            }),
            None => serde_json::to_value(&adapters)?,
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if adapters.is_empty() {
        println!(
            "no GPU adapters found (on Linux without a GPU: apt-get install mesa-vulkan-drivers)"
        );
    }
    for a in adapters {
        println!(
            "[{}] {} ({}, {})",
            a.index, a.name, a.backend, a.device_type
        );
        println!("    driver: {}", a.driver);
        println!(
            "    shader-f16: {}  subgroups: {} (size {}..{})  timestamps: {}",
            a.shader_f16, a.subgroups, a.subgroup_sizes.0, a.subgroup_sizes.1, a.timestamp_query
        );
        println!(
            "    max storage binding: {} MiB  max buffer: {} MiB  workgroup: {} invocations, {} KiB shared  storage buffers/stage: {}",
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_workgroup_invocations,
            a.max_workgroup_storage >> 10,
            a.max_storage_buffers_per_stage
        );
    }
    if let Some(p) = &model {
        kv_report::model_info(p, false)?;
    }
    Ok(())
}

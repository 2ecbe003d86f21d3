//! WGSL loading: a tiny preprocessor for the per-adapter differences, and a
//! cache so every pipeline is compiled once.
//!
//! Kernels write `#if F16` / `#if !SUBGROUPS` / `#else` / `#endif` lines and
//! refer to constants that the launcher supplies; the loader owns the
//! `enable` directives, which differ between naga and browsers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::context::GpuContext;

/// One kernel variant: its source, the flags it is compiled with and the
/// `const NAME: u32` values prepended to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShaderSpec {
    pub name: &'static str,
    pub source: &'static str,
    pub entry: &'static str,
    pub flags: Vec<&'static str>,
    pub consts: Vec<(&'static str, u32)>,
}

impl ShaderSpec {
    pub fn new(name: &'static str, source: &'static str) -> Self {
        ShaderSpec {
            name,
            source,
            entry: "main",
            flags: Vec::new(),
            consts: Vec::new(),
        }
    }

    pub fn entry(mut self, entry: &'static str) -> Self {
        self.entry = entry;
        self
    }

    pub fn flag(mut self, flag: &'static str, on: bool) -> Self {
        if on {
            self.flags.push(flag);
        }
        self
    }

    pub fn constant(mut self, name: &'static str, value: u32) -> Self {
        self.consts.push((name, value));
        self
    }
}

/// Evaluates `#if`/`#else`/`#endif` lines against `flags`.
pub fn preprocess(source: &str, flags: &[&str]) -> String {
    let mut out = String::with_capacity(source.len());
    // Each entry: (this branch active, some enclosing branch inactive).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &Vec<(bool, bool)>| stack.iter().all(|&(on, _)| on);
    for line in source.lines() {
        let t = line.trim_start();
        if let Some(cond) = t.strip_prefix("#if ") {
            let cond = cond.trim();
            let (neg, name) = match cond.strip_prefix('!') {
                Some(n) => (true, n.trim()),
                None => (false, cond),
            };
            let on = flags.contains(&name) != neg;
            stack.push((on, false));
        } else if t.starts_with("#else") {
            if let Some(top) = stack.last_mut() {
                top.0 = !top.0;
            }
        } else if t.starts_with("#endif") {
            stack.pop();
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push('\n');
        }
    }
    out
}

/// Full WGSL for a spec on a device with the given capabilities.
pub fn render(spec: &ShaderSpec, f16: bool, subgroups: bool) -> String {
    let mut flags = spec.flags.clone();
    if f16 {
        flags.push("F16");
    }
    if subgroups {
        flags.push("SUBGROUPS");
    }
    let mut head = String::new();
    if f16 {
        head.push_str("enable f16;\n");
    }
    // Browsers require the directive; naga rejects it and accepts the builtins without it.
    // Tint's uniformity analysis cannot see that a loop bound taken from
    // subgroupBroadcastFirst or subgroup_size is the same across a subgroup,
    // and rejects the subgroup reductions inside such loops.
    if subgroups && cfg!(target_arch = "wasm32") {
        head.push_str("enable subgroups;\ndiagnostic(off, subgroup_uniformity);\n");
    }
    for (name, v) in &spec.consts {
        head.push_str(&format!("const {name}: u32 = {v}u;\n"));
    }
    head + &preprocess(spec.source, &flags)
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<ShaderSpec, Arc<wgpu::ComputePipeline>>>,
}

impl GpuContext {
    /// The compute pipeline for `spec`, compiled on first use. `F16`/`SUBGROUPS`
    /// flags are added from the device capabilities.
    pub fn pipeline(&self, spec: &ShaderSpec) -> Arc<wgpu::ComputePipeline> {
        let mut map = self.pipelines.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(spec) {
            return p.clone();
        }
        let code = render(spec, self.caps.f16, self.caps.subgroups);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(spec.name),
                source: wgpu::ShaderSource::Wgsl(code.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(spec.name),
                layout: None,
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        let p = Arc::new(pipeline);
        map.insert(spec.clone(), p.clone());
        p
    }

    /// A bind group for group 0 of `pipeline` with the given buffers at bindings 0, 1, 2, …
    pub fn bind_group(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_nested_and_negated() {
        let src = "a\n#if F16\nb\n#if !SUBGROUPS\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf";
        let keep = |flags: &[&str]| {
            preprocess(src, flags)
                .lines()
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("")
        };
        assert_eq!(keep(&[]), "aef");
        assert_eq!(keep(&["F16"]), "abcf");
        assert_eq!(keep(&["F16", "SUBGROUPS"]), "abdf");
        assert_eq!(keep(&["SUBGROUPS"]), "aef");
    }

    #[test]
    fn render_adds_enable_and_consts() {
        let spec = ShaderSpec::new("t", "x").constant("WG", 64);
        let s = render(&spec, true, false);
        assert!(s.starts_with("enable f16;\nconst WG: u32 = 64u;\n"));
        assert!(!render(&spec, false, false).contains("enable"));
    }
}

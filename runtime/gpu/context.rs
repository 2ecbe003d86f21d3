//! Device creation with limits and features negotiated from the real adapter.

use std::sync::{Arc, Mutex};

use crate::{HearthError, Result};

use super::shader::PipelineCache;

/// What the caller wants from the device; every field has an env-var twin
/// (see [`GpuOptions::from_env`]) so tests and users can force fallbacks.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Adapter index (as listed by `hearth info`) or a case-insensitive substring of its name.
    pub adapter: Option<String>,
    /// Don't use `shader-f16` even if the adapter has it.
    pub no_f16: bool,
    /// Don't use subgroup operations even if the adapter has them.
    pub no_subgroups: bool,
    /// Pretend the adapter's max storage binding is at most this many bytes
    /// (exercises the row-split path).
    pub max_binding: Option<u64>,
    /// The host created the WebGPU device with the `subgroups` feature, which
    /// wgpu's web backend neither reports nor requests (the browser worker
    /// adds it to `requestDevice`); kernels may then use subgroup operations.
    pub web_subgroups: bool,
    /// Don't use timestamp queries even if the adapter has them (profiling
    /// then times each kernel as its own submission).
    pub no_timestamps: bool,
    /// f16 multiply-adds in the tiled matrix-matrix kernel (prompt rows):
    /// `None` uses them where `shader-f16` is on and the adapter is not a
    /// CPU (llvmpipe emulates f16 arithmetic in f32 with conversions, which
    /// only costs there); `Some` forces the choice (needs `shader-f16`).
    pub tiled_f16: Option<bool>,
}

impl GpuOptions {
    /// `HEARTH_ADAPTER`, `HEARTH_NO_F16=1`, `HEARTH_NO_SUBGROUPS=1`, `HEARTH_MAX_BINDING=<bytes>`,
    /// `HEARTH_NO_TIMESTAMPS=1`, `HEARTH_TILED_F16=0|1`.
    pub fn from_env() -> Self {
        let flag = |k: &str| {
            std::env::var(k)
                .map(|v| !v.is_empty() && v != "0")
                .unwrap_or(false)
        };
        GpuOptions {
            adapter: std::env::var("HEARTH_ADAPTER")
                .ok()
                .filter(|s| !s.is_empty()),
            no_f16: flag("HEARTH_NO_F16"),
            no_subgroups: flag("HEARTH_NO_SUBGROUPS"),
            max_binding: std::env::var("HEARTH_MAX_BINDING")
                .ok()
                .and_then(|s| s.parse().ok()),
            web_subgroups: false,
            no_timestamps: flag("HEARTH_NO_TIMESTAMPS"),
            tiled_f16: std::env::var("HEARTH_TILED_F16")
                .ok()
                .filter(|s| !s.is_empty())
                .map(|s| s != "0"),
        }
    }
}

/// Optional capabilities actually enabled on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub f16: bool,
    /// The tiled matrix-matrix kernel multiplies in f16 (see [`GpuOptions::tiled_f16`]).
    pub tiled_f16: bool,
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// Effective max bytes of one storage binding (after any forced cap), a multiple of 256.
    pub max_binding: u64,
    pub max_buffer: u64,
    pub max_workgroup_size_x: u32,
    pub max_invocations: u32,
    pub max_workgroup_storage: u32,
    pub max_storage_buffers_per_stage: u32,
    pub max_workgroups_per_dim: u32,
    /// Timestamp queries at compute-pass boundaries (`hearth bench --profile` uses them).
    pub timestamps: bool,
}

/// One line of `hearth info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub subgroup_sizes: (u32, u32),
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub max_workgroup_invocations: u32,
    pub max_workgroup_storage: u32,
    pub max_storage_buffers_per_stage: u32,
    pub timestamp_query: bool,
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub caps: Caps,
    pub(crate) pipelines: PipelineCache,
    /// The first error the device reported outside any error scope (out of
    /// memory, validation); surfaced by [`GpuContext::check_errors`] instead
    /// of wgpu's default panic.
    first_error: Arc<Mutex<Option<String>>>,
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    // Keep validation off by default; WGPU_VALIDATION=1 turns it on via with_env.
    if std::env::var("WGPU_VALIDATION").is_err() {
        desc.flags = wgpu::InstanceFlags::empty();
    }
    wgpu::Instance::new(desc)
}

fn summarize(index: usize, a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let l = a.limits();
    let f = a.features();
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        shader_f16: f.contains(wgpu::Features::SHADER_F16),
        subgroups: f.contains(wgpu::Features::SUBGROUP),
        subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
        max_storage_binding: l.max_storage_buffer_binding_size,
        max_buffer: l.max_buffer_size,
        max_workgroup_invocations: l.max_compute_invocations_per_workgroup,
        max_workgroup_storage: l.max_compute_workgroup_storage_size,
        max_storage_buffers_per_stage: l.max_storage_buffers_per_shader_stage,
        timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
    }
}

/// Lists the adapters wgpu can reach, in the order `--adapter N` uses.
pub async fn list_adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    inst.enumerate_adapters(wgpu::Backends::all())
        .await
        .iter()
        .enumerate()
        .map(|(i, a)| summarize(i, a))
        .collect()
}

impl GpuContext {
    pub async fn new(opts: &GpuOptions) -> Result<Arc<GpuContext>> {
        let inst = instance();
        let adapter = match &opts.adapter {
            Some(sel) => {
                let all = inst.enumerate_adapters(wgpu::Backends::all()).await;
                let pick = match sel.parse::<usize>() {
                    Ok(i) => all.into_iter().nth(i),
                    Err(_) => {
                        let s = sel.to_lowercase();
                        all.into_iter()
                            .find(|a| a.get_info().name.to_lowercase().contains(&s))
                    }
                };
                pick.ok_or_else(|| {
                    HearthError::Gpu(format!(
                        "no adapter matches `{sel}` (see `hearth info` for the list)"
                    ))
                })?
            }
            None => inst
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    apply_limit_buckets: false,
                })
                .await
                .map_err(|e| {
                    HearthError::Gpu(format!(
                        "no GPU adapter found ({e}); on Linux without a GPU install Mesa's \
                         lavapipe (`apt-get install mesa-vulkan-drivers`)"
                    ))
                })?,
        };
        Self::from_adapter(adapter, opts).await
    }

    /// Native convenience wrapper around [`GpuContext::new`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: &GpuOptions) -> Result<Arc<GpuContext>> {
        pollster::block_on(Self::new(opts))
    }

    // On wasm32 wgpu's handles are neither Send nor Sync; there the Arc is
    // shared within the one thread a page or worker has.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub async fn from_adapter(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Arc<Self>> {
        let info = adapter.get_info();
        let have = adapter.features();
        let mut features = wgpu::Features::empty();
        let f16 = have.contains(wgpu::Features::SHADER_F16) && !opts.no_f16;
        let native_subgroups = have.contains(wgpu::Features::SUBGROUP);
        let subgroups = (native_subgroups || opts.web_subgroups) && !opts.no_subgroups;
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        if subgroups && native_subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let timestamps = have.contains(wgpu::Features::TIMESTAMP_QUERY) && !opts.no_timestamps;
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // Ask for everything the adapter offers: kernels specialise to it.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("hearth"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| HearthError::Gpu(format!("request_device failed: {e}")))?;
        let mut max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if let Some(cap) = opts.max_binding {
            max_binding = max_binding.min(cap.max(256));
        }
        max_binding &= !255;
        let tiled_f16 = f16
            && opts
                .tiled_f16
                .unwrap_or(info.device_type != wgpu::DeviceType::Cpu);
        let caps = Caps {
            f16,
            tiled_f16,
            subgroups,
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            max_binding,
            max_buffer: limits.max_buffer_size,
            max_workgroup_size_x: limits.max_compute_workgroup_size_x,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            timestamps,
        };
        tracing::info!(adapter = %info.name, backend = ?info.backend, ?caps, "GPU device ready");
        let first_error = Arc::new(Mutex::new(None));
        let sink = first_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let msg = match &e {
                wgpu::Error::OutOfMemory { .. } => format!(
                    "the GPU ran out of memory ({e}); try a smaller model or a smaller KV-cache budget (--kv-memory, kv_memory_mib)"
                ),
                _ => e.to_string(),
            };
            tracing::error!("{msg}");
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert(msg);
            }
        }));
        Ok(Arc::new(GpuContext {
            device,
            queue,
            info,
            limits,
            caps,
            pipelines: PipelineCache::default(),
            first_error,
        }))
    }

    /// The first error the device has reported so far, as a `Gpu` error.
    /// Errors arrive asynchronously on the web: await
    /// [`GpuContext::settle`] first to see those of work already submitted.
    pub fn check_errors(&self) -> Result<()> {
        match self.first_error.lock().ok().and_then(|e| e.clone()) {
            Some(msg) => Err(HearthError::Gpu(msg)),
            None => Ok(()),
        }
    }

    /// Waits until the GPU has finished all submitted work, then reports
    /// any error it raised.
    pub async fn settle(&self) -> Result<()> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.wait()?;
        let _ = rx.await;
        self.check_errors()
    }

    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Blocks (natively) until all submitted work is done.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| HearthError::Gpu(format!("device poll failed: {e}")))
    }
}

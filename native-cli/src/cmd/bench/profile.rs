//! `hearth bench --profile`: time per kernel kind.

use hearth::model::forward::{GpuModel, KernelProfile};

/// How `--profile` times kernels on this adapter.
pub fn method(m: &GpuModel) -> &'static str {
    if m.profile_uses_timestamps() {
        "GPU timestamps, one pass per kernel"
    } else {
        "no timestamp queries: each kernel submitted and timed alone"
    }
}

/// Time per kernel kind, largest first, to stderr.
pub fn print(title: &str, p: KernelProfile) {
    let total: f64 = p.values().map(|v| v.0).sum();
    eprintln!("{title}");
    let mut rows: Vec<_> = p.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    for (name, (secs, n)) in rows {
        eprintln!(
            "  {name:<40} {:>9.1} ms {:>6} calls {:>5.1}%",
            secs * 1e3,
            n,
            100.0 * secs / total.max(1e-12)
        );
    }
}

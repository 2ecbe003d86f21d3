//! Micro-benchmark (filled in by the kernel owner).
fn main() {}

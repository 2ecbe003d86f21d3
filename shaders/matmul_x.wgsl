// How the matrix kernels (matvec.wgsl, matmul_tiled.wgsl) read x, concatenated
// with them: xv(i) is vec4 i of x, xs4() the vec4s per token row.

#if X_SILU
// SwiGLU fused into the x loads (down projection): x is the gate/up output,
// rows of 2 * cols ([gate | up]); a vec4 of x at i (row stride xs4()) is
// silu(g) * u of the gate at i and the up cols/4 after it. Every kernel
// form reads x through here, so a row's value is the same in all of them.
fn xs4() -> u32 { return params.cols / 2u; }
fn xv(i: u32) -> vec4<f32> {
    let g = x[i];
    return g / (vec4<f32>(1.0) + exp(-g)) * x[i + params.cols / 4u];
}
#else
// Vec4s per row of x.
fn xs4() -> u32 { return params.cols / 4u; }
#if X_VEC4
fn xv(i: u32) -> vec4<f32> { return x[i]; }
#endif
#endif

//! The pooling kernel (sums of row segments, for embeddings) against its CPU
//! reference at awkward widths (not multiples of the workgroup), with
//! segments of one row, overlapping ones and ones at the buffer's end.

mod common;

use common::{gpu, rand_vec};
use hearth::gpu::kernels::pool::{pool_rows_ref, PoolRows, Segment};
use hearth::gpu::readback_f32;

fn check(width: usize, rows: usize, segs: &[Segment]) {
    let ctx = gpu();
    let x = rand_vec(rows * width, (width * 31 + rows) as u64);
    let xb = ctx.buffer_from("x", &x);
    let max_segs = segs.len() as u32 + 2;
    let out = ctx.buffer_from("out", &vec![f32::NAN; max_segs as usize * width]);
    let k = PoolRows::new(&ctx, &xb, &out, width as u32, max_segs);
    k.write(&ctx.queue, segs).unwrap();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        k.record(&mut pass, segs.len() as u32);
    }
    ctx.queue.submit(Some(enc.finish()));
    let got = readback_f32(&ctx, &out, segs.len() * width).unwrap();
    let want = pool_rows_ref(&x, width, segs);
    common::assert_close(&got, &want, 1e-5, 1e-5, &format!("width {width}"));
}

#[test]
fn segments_sum_their_rows() {
    check(32, 10, &[[0, 10]]);
    check(37, 9, &[[0, 1], [3, 4], [8, 1]]);
    check(100, 70, &[[5, 65], [0, 70], [69, 1], [10, 3]]);
    check(1, 4, &[[0, 4], [2, 2]]);
}

#[test]
fn more_segments_than_loaded_for_are_refused() {
    let ctx = gpu();
    let x = ctx.buffer_from("x", &[0f32; 8]);
    let out = ctx.buffer_from("out", &[0f32; 8]);
    let k = PoolRows::new(&ctx, &x, &out, 4, 1);
    let err = k.write(&ctx.queue, &[[0, 1], [1, 1]]).unwrap_err();
    assert!(err.to_string().contains("2 pooled segments"), "{err}");
}

//! The roofline's copy kernel against its CPU reference at sizes that are not
//! multiples of a workgroup, with a guard past the end that must stay untouched.

mod common;

use common::*;
use hearth::gpu::kernels::copy::{copy_ref, CopyKernel};
use hearth::gpu::readback_u32;

#[test]
fn copies_exactly_the_requested_words() {
    for ctx in all_variants() {
        for n in [1usize, 3, 257, 100_003] {
            let src: Vec<u32> = (0..n * 4 + 8)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761))
                .collect();
            let guard = vec![0xdead_beefu32; n * 4 + 8];
            let (sb, db) = (ctx.buffer_from("src", &src), ctx.buffer_from("dst", &guard));
            let k = CopyKernel::new(&ctx, &sb, &db, n as u32);
            assert_eq!(k.bytes_moved(), 32 * n as u64);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                k.record(&mut pass);
            }
            ctx.queue.submit(Some(enc.finish()));
            let got = readback_u32(&ctx, &db, n * 4 + 8).unwrap();
            assert_eq!(
                got[..n * 4],
                copy_ref(&src, n)[..],
                "n={n} caps={:?}",
                ctx.caps
            );
            assert!(
                got[n * 4..].iter().all(|&w| w == 0xdead_beef),
                "n={n}: wrote past the end"
            );
        }
    }
}

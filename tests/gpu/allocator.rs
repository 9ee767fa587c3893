//! src/cuda/allocator.rs on the device: a steady-state loop reaches the driver only in its first
//! pass, blocks hold usable memory, and an impossible request is a clear error, not a panic.

use crate::support::*;

#[test]
fn steady_state_loop_makes_no_driver_allocation() {
    let Some(g) = gpu() else { return };
    let alloc = medsyn::cuda::CachingAllocator::new(g.stream().clone());
    let sizes = [100usize, 4096, 70_000, 3 << 20, 1 << 20, 513];
    let mut after_first = None;
    for pass in 0..50 {
        let blocks: Vec<_> = sizes.iter().map(|&s| alloc.alloc(s).unwrap()).collect();
        assert!(blocks
            .iter()
            .zip(&sizes)
            .all(|(b, &s)| b.len() == s && b.slice().len() >= s));
        drop(blocks);
        if pass == 0 {
            after_first = Some(alloc.stats().driver_allocs);
        }
    }
    let stats = alloc.stats();
    let first = after_first.unwrap();
    record("allocator steady state", stats.driver_allocs == first, 0.0);
    assert_eq!(stats.driver_allocs, first, "{stats:?}");
    assert_eq!(stats.driver_allocs, sizes.len() as u64);
    assert_eq!(stats.reuses, 49 * sizes.len() as u64);
    assert_eq!(stats.bytes_in_use, 0);
    assert!(stats.bytes_cached > 0);
    alloc.release_cached().unwrap();
    assert_eq!(alloc.stats().bytes_cached, 0);
}

#[test]
fn blocks_hold_memory_and_oom_is_an_error() {
    let Some(g) = gpu() else { return };
    let alloc = medsyn::cuda::CachingAllocator::new(g.stream().clone());
    let mut b = alloc.alloc(1000).unwrap();
    let data: Vec<u8> = (0..b.slice().len()).map(|i| (i * 7 % 251) as u8).collect();
    g.stream().memcpy_htod(&data, b.slice_mut()).unwrap();
    let back = g.download(b.slice()).unwrap();
    check_exact("allocator block round trip", &back, &data);
    // 1 PiB: no card has it; the error names the request.
    let err = alloc
        .alloc(1 << 50)
        .err()
        .expect("a 1 PiB allocation must fail");
    let msg = err.to_string();
    record(
        "allocator out-of-memory error",
        msg.contains("out of GPU memory"),
        0.0,
    );
    assert!(
        msg.contains("out of GPU memory") && msg.contains("bytes"),
        "{msg}"
    );
}

//! The copy kernel against `memcpy` (std's `copy_nonoverlapping`) and against itself on one
//! thread, into destinations that are already touched (so page faults are not measured): the
//! kernel-only half of the comparison whose allocating half `bench/copy_bench.py` measures.
//!
//! `cargo bench --bench copy` (add a filter such as `-- transpose` to run one group).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dlbridge::copy::{PARALLEL_MIN_BYTES, copy_strided, copy_strided_with};

const MIB: usize = 1 << 20;

fn buffers(bytes: usize) -> (Vec<u8>, Vec<u8>) {
    // Both touched (written) before timing starts.
    ((0..bytes).map(|i| i as u8).collect(), vec![1u8; bytes])
}

fn contiguous(c: &mut Criterion) {
    let mut g = c.benchmark_group("contiguous");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for mib in [1, 4, 16, 64, 256] {
        let bytes = mib * MIB;
        let (src, mut dst) = buffers(bytes);
        g.throughput(Throughput::Bytes(bytes as u64));
        let id = |name: &str| BenchmarkId::new(name, format!("{mib}MiB"));
        g.bench_function(id("memcpy"), |b| {
            b.iter(|| unsafe {
                std::ptr::copy_nonoverlapping(black_box(src.as_ptr()), dst.as_mut_ptr(), bytes)
            })
        });
        g.bench_function(id("dlbridge"), |b| {
            b.iter(|| unsafe {
                copy_strided(black_box(src.as_ptr()), &[1], dst.as_mut_ptr(), &[1], &[bytes], 1)
            })
        });
        g.bench_function(id("dlbridge_1thread"), |b| {
            b.iter(|| unsafe {
                copy_strided_with(
                    black_box(src.as_ptr()),
                    &[1],
                    dst.as_mut_ptr(),
                    &[1],
                    &[bytes],
                    1,
                    usize::MAX,
                )
            })
        });
    }
    g.finish();
}

/// Where splitting across threads starts to pay: the same copy on one thread and split.
fn threshold(c: &mut Criterion) {
    let mut g = c.benchmark_group("threshold");
    g.sample_size(20).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(1));
    for kib in [256, 512, 1024, 2048, 4096, 8192] {
        let bytes = kib * 1024;
        let (src, mut dst) = buffers(bytes);
        g.throughput(Throughput::Bytes(bytes as u64));
        for (name, min) in [("1thread", usize::MAX), ("split", 0)] {
            g.bench_function(BenchmarkId::new(name, format!("{kib}KiB")), |b| {
                b.iter(|| unsafe {
                    copy_strided_with(black_box(src.as_ptr()), &[1], dst.as_mut_ptr(), &[1], &[bytes], 1, min)
                })
            });
        }
    }
    g.finish();
    let _ = PARALLEL_MIN_BYTES;
}

/// Square transposes (`a.T` made contiguous) per element size, on one thread and split.
fn transpose(c: &mut Criterion) {
    let mut g = c.benchmark_group("transpose");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for itemsize in [1usize, 2, 4, 8, 16] {
        let n = if itemsize == 4 { 8192 } else { 4096 };
        let bytes = n * n * itemsize;
        let (src, mut dst) = buffers(bytes);
        let s = itemsize as isize;
        let n_ = n as isize;
        g.throughput(Throughput::Bytes(bytes as u64));
        for (name, min) in [("1thread", usize::MAX), ("dlbridge", PARALLEL_MIN_BYTES)] {
            g.bench_function(BenchmarkId::new(name, format!("{n}x{n}x{itemsize}B")), |b| {
                b.iter(|| unsafe {
                    copy_strided_with(
                        black_box(src.as_ptr()),
                        &[s, n_ * s],
                        dst.as_mut_ptr(),
                        &[n_ * s, s],
                        &[n, n],
                        itemsize,
                        min,
                    )
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, contiguous, threshold, transpose);
criterion_main!(benches);

//! `dlb_tensor_copy` through the C API, as a C program calls it: a contiguous copy against
//! memcpy, copies either side of the size from which the library splits a copy across threads,
//! and square transposes per element size. The source is caller memory wrapped with
//! `dlb_tensor_from_data` (already touched); transposes are `dlb_tensor_view`s of it.
//!
//! Every `dlb_tensor_copy` allocates its result, so page faults on the fresh destination are part
//! of what is measured: memcpy's like-for-like peer is "memcpy_fresh" (a new allocation, then
//! memcpy), while "memcpy_touched" copies into a buffer written before, the ceiling no allocating
//! copy reaches (the same two peers as in `bench/copy_bench.py`).
//!
//! How many threads a copy uses is decided inside the library, by size, so unlike a benchmark of
//! the kernel itself this one cannot compare one thread with several: the "threshold" group
//! shows the effect of the split as the step in throughput across `PARALLEL_MIN_BYTES`.
//!
//! `cargo bench --bench copy` (add a filter such as `-- transpose` to run one group).

use std::ffi::c_void;
use std::hint::black_box;
use std::ptr::{null, null_mut};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

#[path = "../tests/common/c_api.rs"]
mod c_api;
use c_api::*;

const MIB: usize = 1 << 20;

/// The size from which the library splits a copy across threads (its internal threshold, not
/// part of the C API: keep in step with src/copy.rs). Used only to pick sizes either side.
const PARALLEL_MIN_BYTES: usize = 32 * MIB;

const CPU: DLDevice = DLDevice { device_type: DLDeviceType(1), device_id: 0 };

/// An unsigned integer (or, for 16 bytes, complex128) dtype of `itemsize` bytes: a copy only
/// moves bytes, so any type of the right size measures the same.
fn dtype(itemsize: usize) -> DLDataType {
    let (code, bits) = match itemsize {
        16 => (5, 128),
        n => (1, (n * 8) as u8),
    };
    DLDataType { code: DLDataTypeCode(code), bits, lanes: 1 }
}

/// Caller memory wrapped as a tensor (the buffer is touched: written before timing starts).
/// The buffer outlives the handle: the handle is freed first, in `drop`, and no export or view
/// of it is left then.
struct Source {
    t: *mut dlb_tensor,
    buf: Vec<u8>,
}

impl Source {
    /// `n` × `n` elements of `itemsize` bytes, row-major.
    fn square(n: usize, itemsize: usize) -> Source {
        Source::new(&[n as i64, n as i64], itemsize)
    }

    fn new(shape: &[i64], itemsize: usize) -> Source {
        let bytes = shape.iter().product::<i64>() as usize * itemsize;
        let mut buf: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        let mut t = null_mut();
        // SAFETY: `buf` holds every byte the row-major shape describes and outlives the handle
        // (see the struct); shape is valid for ndim reads; no release callback is asked for.
        let status = unsafe {
            dlb_tensor_from_data(
                buf.as_mut_ptr().cast::<c_void>(),
                shape.as_ptr(),
                null(),
                shape.len() as i32,
                dtype(itemsize),
                CPU,
                true,
                None,
                null_mut(),
                &mut t,
            )
        };
        assert_eq!(status, DLB_OK);
        Source { t, buf }
    }

    /// The wrapped bytes, for the memcpy peers (the library only reads them too).
    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The transpose of a square source: a view with the strides swapped.
    fn transposed(&self, n: usize) -> *mut dlb_tensor {
        let (shape, strides) = ([n as i64, n as i64], [1i64, n as i64]);
        let mut v = null_mut();
        // SAFETY: self.t is a live handle; shape and strides are valid for 2 reads.
        let status = unsafe { dlb_tensor_view(self.t, shape.as_ptr(), strides.as_ptr(), 2, 0, &mut v) };
        assert_eq!(status, DLB_OK);
        v
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // SAFETY: a live handle, not used afterwards (views of it were freed by their users).
        unsafe { dlb_tensor_free(self.t) };
    }
}

/// One `dlb_tensor_copy` of `t` and the free of the copy.
fn copy_and_free(t: *const dlb_tensor) {
    let mut c = null_mut();
    // SAFETY: `t` is a live handle for the whole benchmark; `c` is a valid out-parameter.
    let status = unsafe { dlb_tensor_copy(black_box(t), &mut c) };
    assert_eq!(status, DLB_OK);
    // SAFETY: `c` is the live handle just returned, not used afterwards.
    unsafe { dlb_tensor_free(black_box(c)) };
}

/// memcpy into a new allocation, as an allocating copy must.
fn memcpy_fresh(src: &[u8]) {
    let mut dst: Vec<u8> = Vec::with_capacity(src.len());
    // SAFETY: `dst` has capacity for src.len() bytes and does not overlap `src`; those bytes are
    // initialised by the copy before set_len.
    unsafe {
        std::ptr::copy_nonoverlapping(black_box(src.as_ptr()), dst.as_mut_ptr(), src.len());
        dst.set_len(src.len());
    }
    black_box(dst);
}

fn contiguous(c: &mut Criterion) {
    let mut g = c.benchmark_group("contiguous");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for mib in [1, 4, 16, 64, 256] {
        let bytes = mib * MIB;
        let src = Source::new(&[bytes as i64], 1);
        let mut touched = vec![1u8; bytes];
        g.throughput(Throughput::Bytes(bytes as u64));
        let id = |name: &str| BenchmarkId::new(name, format!("{mib}MiB"));
        g.bench_function(id("memcpy_touched"), |b| {
            b.iter(|| touched.copy_from_slice(black_box(src.bytes())))
        });
        g.bench_function(id("memcpy_fresh"), |b| b.iter(|| memcpy_fresh(src.bytes())));
        g.bench_function(id("dlbridge"), |b| b.iter(|| copy_and_free(src.t)));
    }
    g.finish();
}

/// Contiguous copies either side of `PARALLEL_MIN_BYTES`, with memcpy into fresh memory beside
/// each: below it the library copies on the calling thread, from it on across threads.
fn threshold(c: &mut Criterion) {
    let mut g = c.benchmark_group("threshold");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    let p = PARALLEL_MIN_BYTES;
    for bytes in [p / 4, p / 2, p - MIB, p, p + p / 2, 2 * p] {
        let src = Source::new(&[bytes as i64], 1);
        g.throughput(Throughput::Bytes(bytes as u64));
        let id = |name: &str| BenchmarkId::new(name, format!("{}MiB", bytes / MIB));
        g.bench_function(id("memcpy_fresh"), |b| b.iter(|| memcpy_fresh(src.bytes())));
        g.bench_function(id("dlbridge"), |b| b.iter(|| copy_and_free(src.t)));
    }
    g.finish();
}

/// Square transposes (`a.T` made contiguous) per element size, next to the row-major copy of
/// the same tensor (the same bytes written, without the transpose). Transposes are split across
/// threads from 8 MiB (src/copy.rs: `TRANSPOSE_PARALLEL_MIN_BYTES`), the row-major copy from
/// 32 MiB, so at 16 MiB (the 1- and 2-byte rows here, 4096x4096) the transpose has two threads
/// and the copy one. `bench/copy_bench.py` reports the same comparison as a share, with NumPy
/// and PyTorch beside it.
fn transpose(c: &mut Criterion) {
    let mut g = c.benchmark_group("transpose");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for itemsize in [1usize, 2, 4, 8, 16] {
        let n = if itemsize == 4 { 8192 } else { 4096 };
        let bytes = n * n * itemsize;
        let src = Source::square(n, itemsize);
        let t = src.transposed(n);
        g.throughput(Throughput::Bytes(bytes as u64));
        let id = |name: &str| BenchmarkId::new(name, format!("{n}x{n}x{itemsize}B"));
        g.bench_function(id("row_major"), |b| b.iter(|| copy_and_free(src.t)));
        g.bench_function(id("dlbridge"), |b| b.iter(|| copy_and_free(t)));
        // SAFETY: a live view, not used afterwards.
        unsafe { dlb_tensor_free(t) };
    }
    g.finish();
}

criterion_group!(benches, contiguous, threshold, transpose);
criterion_main!(benches);

//! The fixed costs of the C API: DLPack export + import + free round trips (legacy and
//! versioned), alias, view and free, each at 1 KiB and at 1 GiB. They must not grow with the
//! tensor: the 1 GiB tensor is a 2-D float32 wrap of memory that is reserved but never touched
//! (`dlb_tensor_from_data` over an uninitialised allocation: nothing reads it here).
//!
//! `cargo bench --bench exchange`. Each measured call pairs with the call that undoes it (an
//! alias with its free), so the figures are per round trip.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

#[path = "../tests/common/c_api.rs"]
mod c_api;
use c_api::*;

/// A wrapped float32 tensor of `bytes` bytes, shape `[bytes / 4096, 1024]`, over memory that is
/// allocated (reserved) but never touched.
struct Wrapped {
    t: *mut dlb_tensor,
    mem: *mut u8,
    layout: std::alloc::Layout,
}

impl Wrapped {
    fn new(bytes: usize) -> Wrapped {
        let layout = std::alloc::Layout::from_size_align(bytes, 4096).unwrap();
        // SAFETY: non-zero size.
        let mem = unsafe { std::alloc::alloc(layout) };
        assert!(!mem.is_null());
        let shape = [(bytes / 4096) as i64, 1024];
        let f32 = DLDataType { code: DLDataTypeCode(2), bits: 32, lanes: 1 };
        let cpu = DLDevice { device_type: DLDeviceType(1), device_id: 0 };
        let mut t = std::ptr::null_mut();
        // SAFETY: `mem` holds the bytes of the row-major shape (nothing reads them here) and is
        // freed only in `drop`, after the handle; shape is valid for 2 reads; no release.
        let st = unsafe {
            dlb_tensor_from_data(
                mem.cast(),
                shape.as_ptr(),
                std::ptr::null(),
                2,
                f32,
                cpu,
                false,
                None,
                std::ptr::null_mut(),
                &mut t,
            )
        };
        assert_eq!(st, DLB_OK);
        Wrapped { t, mem, layout }
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        // SAFETY: the handle is live and not used afterwards (views and exports of it are gone);
        // `mem` came from `alloc` with this layout and the handle no longer uses it.
        unsafe {
            dlb_tensor_free(self.t);
            std::alloc::dealloc(self.mem, self.layout);
        }
    }
}

fn calls(c: &mut Criterion) {
    let mut g = c.benchmark_group("c_api");
    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for (size, bytes) in [("1KiB", 4096usize / 4), ("1GiB", 1 << 30)] {
        // 1 KiB is [1, 1024] float32 rows of 4 KiB: use one quarter row for the small case.
        let w = if bytes < 4096 { Wrapped::new(4096) } else { Wrapped::new(bytes) };
        let t = if bytes < 4096 {
            let mut v = std::ptr::null_mut();
            let (shape, strides) = ([256i64], [1i64]);
            assert_eq!(
                // SAFETY: w.t is a live handle; shape and strides are valid for 1 read.
                unsafe { dlb_tensor_view(w.t, shape.as_ptr(), strides.as_ptr(), 1, 0, &mut v) },
                DLB_OK
            );
            v
        } else {
            w.t
        };
        g.bench_function(BenchmarkId::new("dlpack_versioned_roundtrip", size), |b| {
            // SAFETY: `t` lives through the group; the import consumes the export; `back` is freed once.
            b.iter(|| unsafe {
                let mut mt: *mut DLManagedTensorVersioned = std::ptr::null_mut();
                dlb_tensor_to_dlpack_versioned(black_box(t), false, &mut mt);
                let mut back = std::ptr::null_mut();
                dlb_tensor_from_dlpack_versioned(mt, &mut back);
                dlb_tensor_free(black_box(back));
            })
        });
        g.bench_function(BenchmarkId::new("dlpack_legacy_roundtrip", size), |b| {
            // SAFETY: `t` lives through the group; the import consumes the export; `back` is freed once.
            b.iter(|| unsafe {
                let mut mt: *mut DLManagedTensor = std::ptr::null_mut();
                dlb_tensor_to_dlpack(black_box(t), &mut mt);
                let mut back = std::ptr::null_mut();
                dlb_tensor_from_dlpack(mt, &mut back);
                dlb_tensor_free(black_box(back));
            })
        });
        g.bench_function(BenchmarkId::new("export_and_deleter", size), |b| {
            // SAFETY: `t` is live for the whole group; the export is released by its deleter exactly once.
            b.iter(|| unsafe {
                let mut mt: *mut DLManagedTensorVersioned = std::ptr::null_mut();
                dlb_tensor_to_dlpack_versioned(black_box(t), false, &mut mt);
                ((*mt).deleter.unwrap())(black_box(mt));
            })
        });
        g.bench_function(BenchmarkId::new("alias_and_free", size), |b| {
            // SAFETY: `t` is live for the whole group; the alias is freed once.
            b.iter(|| unsafe {
                let mut a = std::ptr::null_mut();
                dlb_tensor_alias(black_box(t), &mut a);
                dlb_tensor_free(black_box(a));
            })
        });
        g.bench_function(BenchmarkId::new("view_and_free", size), |b| {
            let (shape, strides) = ([16i64, 8], [1i64, 16]);
            // SAFETY: `t` is live for the whole group; the view lies inside it and is freed once.
            b.iter(|| unsafe {
                let mut v = std::ptr::null_mut();
                dlb_tensor_view(black_box(t), shape.as_ptr(), strides.as_ptr(), 2, 3, &mut v);
                dlb_tensor_free(black_box(v));
            })
        });
        if t != w.t {
            // SAFETY: the view made above, not used afterwards.
            unsafe { dlb_tensor_free(t) };
        }
    }
    g.finish();
}

criterion_group!(benches, calls);
criterion_main!(benches);

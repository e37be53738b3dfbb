//! Running out of memory, allocation by allocation. This test binary's global allocator can be
//! told to fail, on the calling thread, the n-th allocation from now and every one after it (the
//! way memory really runs out: it stays out). Each C-API operation below runs for n = 0, 1, 2, …
//! until it no longer meets a failure, so every allocation it makes fails once in turn, including
//! those on its error paths. Each time it must:
//!
//! - return `DLB_OK` (an allocation with a fallback, such as a scratch buffer, may fail without
//!   failing the call) or `DLB_ERR_OUT_OF_MEMORY` with a message — never abort the process;
//! - leak nothing: neither tensor memory (`dlb_live_allocations`) nor any heap block (this
//!   thread's allocations minus its frees);
//! - keep its ownership promises: lent memory is not released on failure, an imported managed
//!   tensor's deleter runs exactly once whatever happens;
//! - leave the library working: the next iteration runs the same operation again.
//!
//! A Rust `Box::new`, `Vec::push` or `format!` left anywhere on these paths would abort this
//! process ("memory allocation of N bytes failed") and fail the test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

mod common;
use common::c_api::*;
use common::{CPU, dl, dt, free, last_error, ok};

struct Failing;

thread_local! {
    /// Allocations still granted before failing starts; None: never fail.
    static GRANTED: Cell<Option<usize>> = const { Cell::new(None) };
    /// Whether an allocation was refused since arming.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
    /// This thread's allocations minus its frees.
    static NET: Cell<isize> = const { Cell::new(0) };
}

fn refuse() -> bool {
    GRANTED
        .try_with(|g| match g.get() {
            Some(0) => {
                REFUSED.with(|r| r.set(true));
                true
            }
            Some(n) => {
                g.set(Some(n - 1));
                false
            }
            None => false,
        })
        .unwrap_or(false)
}

fn count(delta: isize) {
    let _ = NET.try_with(|n| n.set(n.get() + delta));
}

// SAFETY: forwards to the system allocator, or returns NULL (allowed: "allocation failed").
unsafe impl GlobalAlloc for Failing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse() {
            return null_mut();
        }
        // SAFETY: forwarded to the system allocator under GlobalAlloc::alloc's own contract.
        let p = unsafe { System.alloc(layout) };
        count(!p.is_null() as isize);
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse() {
            return null_mut();
        }
        // SAFETY: forwarded to the system allocator under GlobalAlloc::alloc_zeroed's own contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        count(!p.is_null() as isize);
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refuse() {
            return null_mut();
        }
        // SAFETY: `ptr` came from this allocator, which gets its blocks from System: forwarded under
        // realloc's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-1);
        // SAFETY: `ptr` came from this allocator, which gets its blocks from System: forwarded under
        // dealloc's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Failing = Failing;

fn net() -> isize {
    NET.with(|n| n.get())
}

/// `dlb_live_allocations` is process-wide: the tests here run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts the same message in this thread's last-error slot, so that heap counts before and after
/// an operation compare like with like.
fn known_last_error() {
    let mut out = null_mut();
    // SAFETY: a NULL handle is allowed (and refused); `out` is a valid out-parameter.
    assert_eq!(unsafe { dlb_tensor_alias(null(), &mut out) }, DLB_ERR_INVALID_ARGUMENT);
}

/// Runs `run` (on what `setup` made) with every allocation from the n-th on failing, for
/// n = 0, 1, … until nothing was refused; `after` checks and releases the result once
/// allocation works again. Returns how many allocations the operation makes.
fn each_failing<I, R>(
    what: &str,
    mut setup: impl FnMut() -> I,
    mut run: impl FnMut(I) -> (dlb_status, R),
    mut after: impl FnMut(dlb_status, R),
) -> usize {
    for n in 0..10_000 {
        known_last_error();
        let (live, heap) = (dlb_live_allocations(), net());
        let input = setup();
        GRANTED.with(|g| g.set(Some(n)));
        REFUSED.with(|r| r.set(false));
        let (status, result) = run(input);
        GRANTED.with(|g| g.set(None));
        let refused = REFUSED.with(|r| r.get());
        match status {
            DLB_OK => {}
            DLB_ERR_OUT_OF_MEMORY => {
                assert!(refused, "{what}: out of memory without a refused allocation");
                let message = last_error();
                assert!(!message.is_empty(), "{what}: allocation {n} failing left no message");
            }
            other => panic!("{what}: allocation {n} failing gave {other:?}: {}", last_error()),
        }
        after(status, result);
        known_last_error();
        assert_eq!(dlb_live_allocations(), live, "{what}: allocation {n} failing leaked tensor memory");
        assert_eq!(net(), heap, "{what}: allocation {n} failing leaked a heap block");
        if !refused {
            assert_eq!(status, DLB_OK, "{what}");
            return n;
        }
    }
    panic!("{what}: still allocating after 10000 allocations");
}

fn f32t() -> DLDataType {
    dt(2, 32)
}

fn filled(shape: &[i64]) -> *mut dlb_tensor {
    let mut t = null_mut();
    // SAFETY: `shape` is valid for its length in reads; `t` is a valid out-parameter.
    ok(unsafe { dlb_tensor_empty(shape.as_ptr(), shape.len() as i32, f32t(), CPU, &mut t) });
    let d = dl(t);
    let n: i64 = shape.iter().product();
    // SAFETY: the fresh row-major float32 tensor has exactly n elements from `data`, used by nothing else
    // yet.
    let data = unsafe { std::slice::from_raw_parts_mut(d.data.cast::<f32>(), n as usize) };
    for (i, v) in data.iter_mut().enumerate() {
        *v = i as f32;
    }
    t
}

/// The values of `t` (of any real dtype), as float32, in row-major order.
fn values(t: *const dlb_tensor) -> Vec<f32> {
    let mut c = null_mut();
    // SAFETY: `t` is a live handle; `c` is a valid out-parameter.
    ok(unsafe { dlb_tensor_cast(t, f32t(), &mut c) });
    let d = dl(c);
    // SAFETY: the cast result has `ndim` shape entries, and i < ndim.
    let n: i64 = (0..d.ndim as usize).map(|i| unsafe { *d.shape.add(i) }).product();
    // SAFETY: the cast result is a contiguous float32 tensor of n elements.
    let out = unsafe { std::slice::from_raw_parts(d.data.cast::<f32>(), n as usize) }.to_vec();
    free(&[c]);
    out
}

/// A handle-producing call on one input tensor.
fn producing(what: &str, input: &[i64], call: impl Fn(*mut dlb_tensor, *mut *mut dlb_tensor) -> dlb_status) {
    let source = filled(input);
    let expected = values(source);
    let allocations = each_failing(
        what,
        || (),
        |()| {
            let mut out = null_mut();
            (call(source, &mut out), out)
        },
        |status, out| {
            assert_eq!(out.is_null(), status != DLB_OK, "{what}: out is set exactly on success");
            if !out.is_null() {
                if what.starts_with("cast") || what.starts_with("copy") || what.starts_with("alias") {
                    assert_eq!(values(out), expected, "{what}: wrong values");
                }
                free(&[out]);
            }
        },
    );
    assert!(allocations > 0, "{what} allocated nothing: the test proves nothing");
    free(&[source]);
}

#[test]
fn tensor_calls_survive_every_failing_allocation() {
    let _serial = serial();
    for shape in [&[2i64, 3][..], &[2, 1, 3, 1, 2, 1]] {
        let rank = shape.len();
        // SAFETY: `shape` is valid for `rank` reads; `out` is the valid out-parameter `producing` passes.
        producing(&format!("empty, rank {rank}"), shape, |_, out| unsafe {
            dlb_tensor_empty(shape.as_ptr(), rank as i32, f32t(), CPU, out)
        });
        // SAFETY: `shape` is valid for `rank` reads; `out` is the valid out-parameter `producing` passes.
        producing(&format!("zeros, rank {rank}"), shape, |_, out| unsafe {
            dlb_tensor_zeros(shape.as_ptr(), rank as i32, f32t(), CPU, out)
        });
        // SAFETY: `t` is the live source handle; `out` is a valid out-parameter.
        producing(&format!("alias, rank {rank}"), shape, |t, out| unsafe { dlb_tensor_alias(t, out) });
        // SAFETY: `t` is the live source handle; `out` is a valid out-parameter.
        producing(&format!("copy, rank {rank}"), shape, |t, out| unsafe { dlb_tensor_copy(t, out) });
        // SAFETY: `t` is the live source handle; `out` is a valid out-parameter.
        producing(&format!("cast to float64, rank {rank}"), shape, |t, out| unsafe {
            dlb_tensor_cast(t, dt(2, 64), out)
        });
        // SAFETY: `t` is the live source handle; `out` is a valid out-parameter.
        producing(&format!("to_device cpu, rank {rank}"), shape, |t, out| unsafe {
            dlb_tensor_to_device(t, CPU, out)
        });
    }
    // Views: a transposed one (rank 2) and one of rank 5 (shape and strides on the heap).
    // SAFETY: `t` is the live source handle; shape and strides are valid for 2 reads; `out` is valid.
    producing("view, transposed", &[4, 6], |t, out| unsafe {
        dlb_tensor_view(t, [6i64, 4].as_ptr(), [1i64, 6].as_ptr(), 2, 0, out)
    });
    // SAFETY: `t` is the live source handle; the shape is valid for 5 reads; `out` is valid.
    producing("view, rank 5", &[4, 6], |t, out| unsafe {
        dlb_tensor_view(t, [2i64, 2, 3, 1, 2].as_ptr(), null(), 5, 0, out)
    });
    // A copy of a transposed view goes through the transpose kernels (with their scratch).
    let source = filled(&[64, 48]);
    let mut transposed = null_mut();
    // SAFETY: `source` is a live handle; shape and strides are valid for 2 reads; `transposed` is valid.
    ok(unsafe { dlb_tensor_view(source, [48i64, 64].as_ptr(), [1i64, 48].as_ptr(), 2, 0, &mut transposed) });
    let expected = values(transposed);
    each_failing(
        "copy of a transposed view",
        || (),
        |()| {
            let mut out = null_mut();
            // SAFETY: `transposed` is a live handle; `out` is a valid out-parameter.
            (unsafe { dlb_tensor_copy(transposed, &mut out) }, out)
        },
        |status, out| {
            if status == DLB_OK {
                assert_eq!(values(out), expected);
                free(&[out]);
            }
        },
    );
    free(&[transposed, source]);
}

#[test]
fn refusals_survive_failing_allocations_too() {
    let _serial = serial();
    let t = filled(&[3]);
    // An invalid view: its message is formatted, and may be lost, but the answer stays
    // DLB_ERR_INVALID_ARGUMENT (checked here by hand, since `each_failing` expects OK or OOM).
    for n in 0..50 {
        let mut out = null_mut();
        GRANTED.with(|g| g.set(Some(n)));
        // SAFETY: `t` is a live handle; the shape is valid for 1 read; `out` is a valid out-parameter.
        let status = unsafe { dlb_tensor_view(t, [9i64].as_ptr(), null(), 1, 0, &mut out) };
        GRANTED.with(|g| g.set(None));
        assert!(
            status == DLB_ERR_INVALID_ARGUMENT || status == DLB_ERR_OUT_OF_MEMORY,
            "{status:?}: {}",
            last_error()
        );
        assert!(out.is_null());
        assert!(!last_error().is_empty());
    }
    free(&[t]);
}

static RELEASED: AtomicUsize = AtomicUsize::new(0);
unsafe extern "C" fn count_release(_: *mut c_void) {
    RELEASED.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn lent_memory_is_never_released_by_a_failed_wrap() {
    let _serial = serial();
    let mut data = [1.0f32; 12];
    for shape in [&[3i64, 4][..], &[1, 3, 1, 2, 1, 2]] {
        let released = RELEASED.load(Ordering::SeqCst);
        each_failing(
            "from_data",
            || (),
            |()| {
                let mut out = null_mut();
                // SAFETY: `data` holds 12 float32 and outlives every handle on it (freed within each
                // iteration); count_release does not free it; `shape` is valid for its length; `out` is
                // valid.
                let status = unsafe {
                    dlb_tensor_from_data(
                        data.as_mut_ptr().cast(),
                        shape.as_ptr(),
                        null(),
                        shape.len() as i32,
                        f32t(),
                        CPU,
                        false,
                        Some(count_release),
                        null_mut(),
                        &mut out,
                    )
                };
                (status, out)
            },
            |status, out| {
                assert_eq!(RELEASED.load(Ordering::SeqCst), released, "released while still wrapped");
                if status == DLB_OK {
                    free(&[out]);
                    assert_eq!(
                        RELEASED.load(Ordering::SeqCst),
                        released + 1,
                        "released once with the handle"
                    );
                    RELEASED.fetch_sub(1, Ordering::SeqCst);
                }
            },
        );
    }
}

#[test]
fn exports_and_imports_survive_every_failing_allocation() {
    let _serial = serial();
    for shape in [&[2i64, 3][..], &[2, 1, 3, 1, 2, 1]] {
        let t = filled(shape);
        for copy in [false, true] {
            each_failing(
                "export (versioned)",
                || (),
                |()| {
                    let mut mt = null_mut();
                    // SAFETY: `t` is a live handle; `mt` is a valid out-parameter.
                    (unsafe { dlb_tensor_to_dlpack_versioned(t, copy, &mut mt) }, mt)
                },
                |status, mt| {
                    assert_eq!(mt.is_null(), status != DLB_OK);
                    if !mt.is_null() {
                        // SAFETY: the export is live and released here exactly once.
                        unsafe { ((*mt).deleter.unwrap())(mt) };
                    }
                },
            );
        }
        each_failing(
            "export (legacy)",
            || (),
            |()| {
                let mut mt = null_mut();
                // SAFETY: `t` is a live handle; `mt` is a valid out-parameter.
                (unsafe { dlb_tensor_to_dlpack(t, &mut mt) }, mt)
            },
            |status, mt| {
                if status == DLB_OK {
                    // SAFETY: the export is live and released here exactly once.
                    unsafe { ((*mt).deleter.unwrap())(mt) };
                }
            },
        );
        // A re-import of our own export: consumed whatever happens.
        each_failing(
            "re-import of an export",
            || {
                let mut mt = null_mut();
                // SAFETY: `t` is a live handle; `mt` is a valid out-parameter.
                ok(unsafe { dlb_tensor_to_dlpack_versioned(t, false, &mut mt) });
                mt
            },
            |mt| {
                let mut out = null_mut();
                // SAFETY: `mt` is the live export from setup (consumed here); `out` is a valid out-parameter.
                (unsafe { dlb_tensor_from_dlpack_versioned(mt, &mut out) }, out)
            },
            |status, out| {
                if status == DLB_OK {
                    free(&[out]);
                }
            },
        );
        free(&[t]);
    }
}

/// A foreign producer's versioned managed tensor (a boxed block: the struct, then its dims and
/// data), whose deleter counts its calls.
#[repr(C)]
struct Foreign {
    managed: DLManagedTensorVersioned,
    shape: [i64; 6],
    data: [f32; 12],
}
static DELETED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn delete_foreign(mt: *mut DLManagedTensorVersioned) {
    DELETED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the library calls this once with the managed struct, the first field of the Box<Foreign> made
    // by `foreign` (repr(C)).
    drop(unsafe { Box::from_raw(mt.cast::<Foreign>()) });
}

fn foreign(ndim: usize) -> *mut DLManagedTensorVersioned {
    let f = Box::into_raw(Box::new(Foreign {
        managed: DLManagedTensorVersioned {
            version: DLPackVersion { major: 1, minor: 1 },
            manager_ctx: null_mut(),
            deleter: Some(delete_foreign),
            flags: DlpackFlags::empty(),
            dl_tensor: DLTensor {
                data: null_mut(),
                device: CPU,
                ndim: ndim as i32,
                dtype: f32t(),
                shape: null_mut(),
                strides: null_mut(),
                byte_offset: 0,
            },
        },
        shape: [1, 2, 1, 3, 2, 1],
        data: [0.5; 12],
    }));
    // SAFETY: `f` is the live Box just leaked; the pointers stored point into it.
    unsafe {
        (*f).shape[ndim - 1] = if ndim == 1 { 12 } else { (*f).shape[ndim - 1] };
        (*f).managed.dl_tensor.data = (&raw mut (*f).data).cast();
        (*f).managed.dl_tensor.shape = (&raw mut (*f).shape).cast();
    }
    f.cast()
}

#[test]
fn foreign_imports_run_the_deleter_exactly_once_whatever_fails() {
    let _serial = serial();
    for ndim in [1usize, 6] {
        let mut deleted = DELETED.load(Ordering::SeqCst);
        each_failing(
            "foreign import",
            || foreign(ndim),
            |mt| {
                let mut out = null_mut();
                // SAFETY: `mt` is a valid managed tensor from setup, consumed here; `out` is a valid out-
                // parameter.
                (unsafe { dlb_tensor_from_dlpack_versioned(mt, &mut out) }, out)
            },
            |status, out| {
                if status == DLB_OK {
                    assert_eq!(DELETED.load(Ordering::SeqCst), deleted, "deleted while imported");
                    free(&[out]);
                }
                deleted += 1;
                assert_eq!(DELETED.load(Ordering::SeqCst), deleted, "the deleter runs exactly once");
            },
        );
    }
}

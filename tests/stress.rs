//! Stress: 8 threads hammering two shared tensors through the C API with mixed operations —
//! alias, strided views, versioned and legacy exports, re-imports of exports, copies, casts,
//! frees in varying orders, failing calls — while the DLPack deleters of their exports run on
//! other threads. At the end the caller's release callback and the foreign producer's deleter
//! must each have run exactly once, and `dlb_live_allocations()` must be back where it started.
//!
//! `DLB_STRESS_ITERATIONS` sets the iterations per thread (each is about twelve operations):
//! 100000 gives the 8 × 1,000,000 operations of `make stress`. The default keeps `cargo test`
//! quick; Miri runs a handful (it checks every access for data races), and `make test` also runs
//! this file under ThreadSanitizer (see tests/tsan.sh).

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Barrier, Mutex};

mod common;
use common::c_api::*;

const THREADS: usize = 8;
/// Elements of each shared tensor: value i at index i.
const N: usize = 64;
const CPU: DLDevice = DLDevice { device_type: DLDeviceType(1), device_id: 0 };
const F32: DLDataType = DLDataType { code: DLDataTypeCode(2), bits: 32, lanes: 1 };

static RELEASES: AtomicUsize = AtomicUsize::new(0);
static FOREIGN_DELETES: AtomicUsize = AtomicUsize::new(0);
static OPERATIONS: AtomicU64 = AtomicU64::new(0);
static CROSS_THREAD_DELETES: AtomicU64 = AtomicU64::new(0);

fn iterations() -> usize {
    std::env::var("DLB_STRESS_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(if cfg!(miri) {
        12
    } else {
        20_000
    })
}

unsafe extern "C" fn release(ctx: *mut c_void) {
    // SAFETY: the library calls this once, with the ctx of the wrap: the Box<[f32; N]> leaked by the test.
    drop(unsafe { Box::from_raw(ctx.cast::<[f32; N]>()) });
    RELEASES.fetch_add(1, SeqCst);
}

/// A foreign producer's tensor: the managed struct and everything it points to, in one box.
#[repr(C)]
struct Foreign {
    mt: DLManagedTensorVersioned,
    shape: [i64; 1],
    strides: [i64; 1],
    data: [f32; N],
}

unsafe extern "C" fn foreign_deleter(mt: *mut DLManagedTensorVersioned) {
    // SAFETY: the library calls this once, with the managed struct whose manager_ctx is its Box<Foreign>.
    drop(unsafe { Box::from_raw((*mt).manager_ctx.cast::<Foreign>()) });
    FOREIGN_DELETES.fetch_add(1, SeqCst);
}

/// An export on its way to another thread, which will call its deleter.
enum Parcel {
    Versioned(*mut DLManagedTensorVersioned),
    Legacy(*mut DLManagedTensor),
}
// SAFETY: exports may be released from any thread (the DLPack contract dlbridge implements).
unsafe impl Send for Parcel {}

impl Parcel {
    fn delete(self) {
        // SAFETY: each parcel holds an export nobody else released.
        unsafe {
            match self {
                Parcel::Versioned(m) => ((*m).deleter.unwrap())(m),
                Parcel::Legacy(m) => ((*m).deleter.unwrap())(m),
            }
        }
    }
}

struct Shared(*mut dlb_tensor);
// SAFETY: read-only operations on one handle from several threads are allowed by the contract.
unsafe impl Sync for Shared {}

#[track_caller]
fn ok(status: dlb_status) {
    assert_eq!(status, DLB_OK);
    OPERATIONS.fetch_add(1, SeqCst);
}

fn first(t: *const dlb_tensor) -> f32 {
    // SAFETY: a live handle of a float32 tensor with at least one element.
    unsafe {
        let d = &*dlb_tensor_dltensor(t);
        *d.data.cast::<f32>()
    }
}

fn worker(id: usize, shared: &[Shared; 2], mailboxes: &[Mutex<Vec<Parcel>>], start: &Barrier) {
    let drain = |boxed: &Mutex<Vec<Parcel>>| {
        let parcels = std::mem::take(&mut *boxed.lock().unwrap());
        CROSS_THREAD_DELETES.fetch_add(parcels.len() as u64, SeqCst);
        OPERATIONS.fetch_add(parcels.len() as u64, SeqCst);
        parcels.into_iter().for_each(Parcel::delete); // outside the lock
    };
    start.wait();
    for k in 0..iterations() {
        let base = shared[(k + id) % 2].0;
        let (mut a, mut v, mut r) = (null_mut(), null_mut(), null_mut());
        // SAFETY: `base` stays live until every worker is joined; every handle made here is live until freed
        // once at the end of the iteration, and each export is either imported or sent to exactly one other
        // thread to be released; shapes and strides are valid for 1 read; views lie inside the 64 elements.
        unsafe {
            ok(dlb_tensor_alias(base, &mut a));
            // A view whose first element and stride vary: strides -1, 0 and 1.
            let offset = 8 + (k % 40) as i64;
            let (shape, strides) = ([8i64], [(k % 3) as i64 - 1]);
            ok(dlb_tensor_view(a, shape.as_ptr(), strides.as_ptr(), 1, offset, &mut v));
            assert_eq!(first(v), offset as f32);
            // Export the view and import it again: the same memory, nothing new allocated.
            let mut mv = null_mut();
            ok(dlb_tensor_to_dlpack_versioned(v, false, &mut mv));
            ok(dlb_tensor_from_dlpack_versioned(mv, &mut r));
            assert_eq!(first(r), offset as f32);
            // Exports for other threads to release.
            let mut ml = null_mut();
            ok(dlb_tensor_to_dlpack(a, &mut ml));
            mailboxes[(id + 1) % THREADS].lock().unwrap().push(Parcel::Legacy(ml));
            let mut mv2 = null_mut();
            ok(dlb_tensor_to_dlpack_versioned(r, k % 16 == 0, &mut mv2));
            mailboxes[(id + 3) % THREADS].lock().unwrap().push(Parcel::Versioned(mv2));
            if k % 32 == 0 {
                let mut c = null_mut();
                let f64t = DLDataType { code: DLDataTypeCode(2), bits: 64, lanes: 1 };
                ok(dlb_tensor_cast(v, f64t, &mut c));
                assert_eq!(*(*dlb_tensor_dltensor(c)).data.cast::<f64>(), offset as f64);
                dlb_tensor_free(c);
            }
            if k % 64 == 0 {
                // Errors are per thread and leave nothing behind.
                let mut bad = null_mut();
                let too_long = [N as i64 + 1];
                let s = dlb_tensor_view(base, too_long.as_ptr(), std::ptr::null(), 1, 0, &mut bad);
                assert_eq!(s, DLB_ERR_INVALID_ARGUMENT);
                assert!(bad.is_null());
            }
            let order: [*mut dlb_tensor; 3] = if k % 2 == 1 { [a, r, v] } else { [v, a, r] };
            for t in order {
                dlb_tensor_free(t);
            }
            OPERATIONS.fetch_add(3, SeqCst);
        }
        if k % 4 == 3 {
            drain(&mailboxes[id]);
        }
    }
    drain(&mailboxes[id]);
}

#[test]
fn eight_threads_share_export_import_and_release() {
    let live0 = dlb_live_allocations();
    let mut t0 = null_mut();
    let buf = Box::into_raw(Box::new(std::array::from_fn::<f32, N, _>(|i| i as f32)));
    let shape = [N as i64];
    // SAFETY: `buf` holds N float32 and stays valid until `release` frees it; shape is valid for 1 read; `t0`
    // is a valid out-parameter.
    unsafe {
        ok(dlb_tensor_from_data(
            buf.cast(),
            shape.as_ptr(),
            std::ptr::null(),
            1,
            F32,
            CPU,
            false,
            Some(release),
            buf.cast(),
            &mut t0,
        ))
    };
    let f = Box::into_raw(Box::new(Foreign {
        // SAFETY: an all-zero DLManagedTensorVersioned is valid (NULL pointers, no deleter); it is filled in
        // below.
        mt: unsafe { std::mem::zeroed() },
        shape: [N as i64],
        strides: [1],
        data: std::array::from_fn(|i| i as f32),
    }));
    let mut t1 = null_mut();
    // SAFETY: `f` is the live Box just leaked; the pointers stored point into it; the import consumes `m`.
    unsafe {
        let m = &mut (*f).mt;
        m.version = DLPackVersion { major: 1, minor: 3 };
        m.manager_ctx = f.cast();
        m.deleter = Some(foreign_deleter);
        m.dl_tensor = DLTensor {
            data: (*f).data.as_mut_ptr().cast(),
            device: CPU,
            ndim: 1,
            dtype: F32,
            shape: (*f).shape.as_mut_ptr(),
            strides: (*f).strides.as_mut_ptr(),
            byte_offset: 0,
        };
        ok(dlb_tensor_from_dlpack_versioned(m, &mut t1));
    }
    assert_eq!(dlb_live_allocations(), live0 + 2);

    let shared = [Shared(t0), Shared(t1)];
    let mailboxes: Vec<Mutex<Vec<Parcel>>> = (0..THREADS).map(|_| Mutex::new(Vec::new())).collect();
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for id in 0..THREADS {
            let (shared, mailboxes, start) = (&shared, &mailboxes, &start);
            s.spawn(move || worker(id, shared, mailboxes, start));
        }
    });
    // Threads that finished early may have received exports after their last drain.
    for m in &mailboxes {
        std::mem::take(&mut *m.lock().unwrap()).into_iter().for_each(Parcel::delete);
    }
    assert_eq!((RELEASES.load(SeqCst), FOREIGN_DELETES.load(SeqCst)), (0, 0), "released while in use");
    assert_eq!(dlb_live_allocations(), live0 + 2);

    // The last references: exports of both, handles freed, deleters run on another thread.
    let mut last = [null_mut(), null_mut()];
    for (t, m) in shared.iter().zip(&mut last) {
        // SAFETY: each handle is live, exported once and then freed once; nobody uses it afterwards.
        unsafe {
            ok(dlb_tensor_to_dlpack_versioned(t.0, false, m));
            dlb_tensor_free(t.0);
        }
    }
    assert_eq!((RELEASES.load(SeqCst), FOREIGN_DELETES.load(SeqCst)), (0, 0));
    let parcels: Vec<Parcel> = last.into_iter().map(Parcel::Versioned).collect();
    std::thread::spawn(move || parcels.into_iter().for_each(Parcel::delete)).join().unwrap();
    assert_eq!((RELEASES.load(SeqCst), FOREIGN_DELETES.load(SeqCst)), (1, 1), "exactly once each");
    assert_eq!(dlb_live_allocations(), live0);
    eprintln!(
        "{THREADS} threads x {} iterations: {} operations, {} exports released on another thread",
        iterations(),
        OPERATIONS.load(SeqCst),
        CROSS_THREAD_DELETES.load(SeqCst)
    );
}

//! CUDA through the C API. What runs depends on the driver this process finds:
//!
//! - **none** (a plain `cargo test` on a machine without NVIDIA's driver, as in CI): every CUDA
//!   request must fail with `DLB_ERR_DEVICE` and a message naming what is missing;
//! - **the fake driver** (`make test-cuda-fake` puts `build/fake-cuda/libcuda.so` on
//!   LD_LIBRARY_PATH): every path runs against host memory behind the driver entry points, and
//!   the fake's own checks (no device pointer used by the host, a context current for every
//!   call, no free with work pending, nothing leaked) must stay clean. It proves dlbridge's logic,
//!   not the GPU;
//! - **a real GPU** (`make test-gpu`): the same round trips on hardware.

use std::ffi::{CStr, CString, c_char, c_int, c_long, c_void};
use std::ptr::null_mut;
use std::sync::{Mutex, MutexGuard, OnceLock};

mod common;
use common::c_api::*;
use common::{CPU, dl, dt, expect, free, last_error, ok};

// ---------------------------------------------------------------------------------------------
// the driver this process sees
// ---------------------------------------------------------------------------------------------

/// The fake driver's control and introspection functions (see tests/fake_cuda/README.md).
struct Fake {
    misuse_count: unsafe extern "C" fn() -> c_long,
    last_misuse: unsafe extern "C" fn() -> *const c_char,
    live_device_allocations: unsafe extern "C" fn() -> c_long,
    pending_ops: unsafe extern "C" fn() -> c_long,
    call_count: unsafe extern "C" fn(*const c_char) -> c_long,
    fail_allocs_after: unsafe extern "C" fn(c_long),
    fail_copies_after: unsafe extern "C" fn(c_long),
    writecombined_allocations: unsafe extern "C" fn() -> c_long,
    device_of: unsafe extern "C" fn(u64) -> c_int,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    None,
    Fake,
    Real,
}

fn fake() -> Option<&'static Fake> {
    static FAKE: OnceLock<Option<Fake>> = OnceLock::new();
    FAKE.get_or_init(|| {
        dlb_cuda_device_count(); // loads the driver, if any
        // SAFETY: RTLD_NOLOAD only finds the library dlbridge already opened.
        let h = unsafe { libc::dlopen(c"libcuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if h.is_null() {
            return None;
        }
        /// A function of the fake, typed as the caller says (`F` is a function pointer type).
        fn sym<F: Copy>(h: *mut c_void, name: &str) -> Option<F> {
            let c = CString::new(name).unwrap();
            // SAFETY: a handle from dlopen and a NUL-terminated name.
            let p = unsafe { libc::dlsym(h, c.as_ptr()) };
            // SAFETY: the fake declares each function with the signature the field names.
            (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
        }
        Some(Fake {
            misuse_count: sym(h, "fake_cuda_misuse_count")?,
            last_misuse: sym(h, "fake_cuda_last_misuse")?,
            live_device_allocations: sym(h, "fake_cuda_live_device_allocations")?,
            pending_ops: sym(h, "fake_cuda_pending_ops")?,
            call_count: sym(h, "fake_cuda_call_count")?,
            fail_allocs_after: sym(h, "fake_cuda_fail_allocs_after")?,
            fail_copies_after: sym(h, "fake_cuda_fail_copies_after")?,
            writecombined_allocations: sym(h, "fake_cuda_writecombined_allocations")?,
            device_of: sym(h, "fake_cuda_device_of")?,
        })
    })
    .as_ref()
}

fn driver() -> Driver {
    match (dlb_cuda_device_count(), fake()) {
        (_, Some(_)) => Driver::Fake,
        (0, None) => Driver::None,
        _ => Driver::Real,
    }
}

fn calls(name: &str) -> i64 {
    let c = CString::new(name).unwrap();
    // SAFETY: the fake's function, called with the signature it declares and a NUL-terminated name.
    fake().map_or(0, |f| unsafe { (f.call_count)(c.as_ptr()) })
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Tests run one at a time: the allocation counters and the fake's failure switches are global.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the lock; on drop checks that nothing leaked and that the fake saw no misuse.
struct Check {
    live: i64,
    misuse: i64,
    device_allocations: i64,
    _guard: MutexGuard<'static, ()>,
}

fn check() -> Check {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = fake();
    Check {
        live: dlb_live_allocations(),
        // SAFETY: the fake's function, called with the signature it declares (no arguments).
        misuse: f.map_or(0, |f| unsafe { (f.misuse_count)() }),
        // SAFETY: the fake's function, called with the signature it declares (no arguments).
        device_allocations: f.map_or(0, |f| unsafe { (f.live_device_allocations)() }),
        _guard: guard,
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        if let Some(f) = fake() {
            // Whatever happened, the next test starts with a working driver.
            // SAFETY: the fake's functions, called with the signatures they declare.
            unsafe {
                (f.fail_allocs_after)(-1);
                (f.fail_copies_after)(-1);
            }
        }
        if std::thread::panicking() {
            return;
        }
        assert_eq!(dlb_live_allocations(), self.live, "a test leaked a data buffer");
        if let Some(f) = fake() {
            // SAFETY: the fake's functions, called with the signatures they declare; last_misuse returns a
            // NUL-terminated string that stays valid while it is read here.
            unsafe {
                let last = CStr::from_ptr((f.last_misuse)()).to_string_lossy();
                assert_eq!((f.misuse_count)(), self.misuse, "the fake driver saw a misuse: {last}");
                assert_eq!((f.live_device_allocations)(), self.device_allocations, "device memory leaked");
                assert_eq!((f.pending_ops)(), 0, "work left queued after an operation returned");
                assert_eq!((f.writecombined_allocations)(), 0, "pinned memory must not be write-combined");
            }
        }
    }
}

const fn device(ty: u32, id: i32) -> DLDevice {
    DLDevice { device_type: DLDeviceType(ty), device_id: id }
}
const fn cuda(id: i32) -> DLDevice {
    device(2, id)
}
const PINNED: DLDevice = device(3, 0);

/// Every dtype dlbridge copies: (code, bits).
const DTYPES: [(u8, u8); 15] = [
    (6, 8),
    (0, 8),
    (0, 16),
    (0, 32),
    (0, 64),
    (1, 8),
    (1, 16),
    (1, 32),
    (1, 64),
    (2, 16),
    (4, 16),
    (2, 32),
    (2, 64),
    (5, 64),
    (5, 128),
];

fn itemsize(t: *const dlb_tensor) -> usize {
    dl(t).dtype.bits as usize / 8
}

/// A CPU tensor whose bytes are a pattern that differs at every byte position and per `seed`.
fn patterned(shape: &[i64], dtype: DLDataType, seed: u8) -> *mut dlb_tensor {
    let mut t = null_mut();
    // SAFETY: `shape` is valid for its length in reads; `t` is a valid out-parameter.
    ok(unsafe { dlb_tensor_empty(shape.as_ptr(), shape.len() as i32, dtype, CPU, &mut t) });
    let n = shape.iter().product::<i64>() as usize * (dtype.bits as usize / 8);
    let mut p = null_mut();
    // SAFETY: `t` is the live, writable handle made above; `p` is a valid out-parameter.
    ok(unsafe { dlb_tensor_data_mut(t, &mut p) });
    for i in 0..n {
        let v = (i as u32).wrapping_mul(2654435761).rotate_right(13) as u8 ^ seed;
        // Keep bool elements 0 or 1.
        let v = if dtype.code.0 == 6 { v & 1 } else { v };
        // SAFETY: `p` points at the n bytes of the fresh row-major host tensor, and i < n.
        unsafe { *p.cast::<u8>().add(i) = v };
    }
    t
}

/// The elements of a host tensor in row-major order, as bytes.
fn host_bytes(t: *const dlb_tensor) -> Vec<u8> {
    let d = dl(t);
    assert!(d.device.device_type.0 == 1 || d.device.device_type.0 == 3, "host tensors only");
    let size = itemsize(t);
    let nd = d.ndim as usize;
    // SAFETY: a live handle's DLTensor has `ndim` shape entries.
    let shape = if nd == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(d.shape, nd) } };
    // SAFETY: strides is non-NULL with `ndim` entries for dlbridge's tensors.
    let strides = if nd == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(d.strides, nd) } };
    let n: i64 = shape.iter().product();
    let mut out = Vec::with_capacity(n as usize * size);
    for flat in 0..n {
        let (mut rem, mut off) = (flat, 0i64);
        for a in (0..nd).rev() {
            off += (rem % shape[a]) * strides[a];
            rem /= shape[a];
        }
        // SAFETY: `off` is the offset of an element of `t`, inside its host memory.
        let p = unsafe { d.data.cast::<u8>().offset((off * size as i64) as isize) };
        // SAFETY: `p` is an element of `t`: `size` readable bytes.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, size) });
    }
    out
}

fn to(t: *const dlb_tensor, dev: DLDevice) -> *mut dlb_tensor {
    let mut out = null_mut();
    // SAFETY: `t` is a live handle; `out` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_device(t, dev, &mut out) });
    assert_eq!(dl(out).device, dev);
    out
}

fn view(t: *const dlb_tensor, shape: &[i64], strides: &[i64], offset: i64) -> *mut dlb_tensor {
    let mut out = null_mut();
    // SAFETY: `t` is a live handle; shape and strides are valid for their (equal) length; `out` is valid.
    ok(unsafe { dlb_tensor_view(t, shape.as_ptr(), strides.as_ptr(), shape.len() as i32, offset, &mut out) });
    out
}

fn copy(t: *const dlb_tensor) -> *mut dlb_tensor {
    let mut out = null_mut();
    // SAFETY: `t` is a live handle; `out` is a valid out-parameter.
    ok(unsafe { dlb_tensor_copy(t, &mut out) });
    out
}

/// The bytes of any tensor, fetched to the CPU.
fn fetch(t: *const dlb_tensor) -> Vec<u8> {
    let host = to(t, CPU);
    let bytes = host_bytes(host);
    free(&[host]);
    bytes
}

fn gpu() -> bool {
    if driver() == Driver::None {
        eprintln!("no CUDA driver: only the no-driver test applies");
        return false;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// no driver
// ---------------------------------------------------------------------------------------------

/// What a machine without CUDA says: no driver library (CI), or a driver without a GPU.
const MISSING: [&str; 3] = ["no CUDA driver library (libcuda.so)", "found no GPU", "reports no GPU"];

#[track_caller]
fn expect_missing(status: dlb_status) {
    assert_eq!(status, DLB_ERR_DEVICE, "last error: {}", last_error());
    let msg = last_error();
    assert!(MISSING.iter().any(|m| msg.contains(m)), "message {msg:?} should say what is missing");
}

#[test]
fn without_a_driver_every_cuda_request_is_a_device_error() {
    if driver() != Driver::None {
        return;
    }
    let _c = check();
    assert_eq!(dlb_cuda_device_count(), 0);
    let shape = [2i64, 3];
    for dev in [cuda(0), cuda(1), PINNED] {
        let mut out = null_mut();
        // SAFETY: `shape` is valid for 2 reads; `out` is a valid out-parameter.
        expect_missing(unsafe { dlb_tensor_empty(shape.as_ptr(), 2, dt(2, 32), dev, &mut out) });
        assert!(out.is_null());
        // SAFETY: `shape` is valid for 2 reads; `out` is a valid out-parameter.
        expect_missing(unsafe { dlb_tensor_zeros(shape.as_ptr(), 2, dt(2, 32), dev, &mut out) });
        let t = patterned(&shape, dt(2, 32), 0);
        // SAFETY: `t` is a live handle; `out` is a valid out-parameter.
        expect_missing(unsafe { dlb_tensor_to_device(t, dev, &mut out) });
        assert!(out.is_null());
        free(&[t]);
    }
}

// ---------------------------------------------------------------------------------------------
// with a driver (fake or real)
// ---------------------------------------------------------------------------------------------

#[test]
fn devices_are_counted_and_checked() {
    if !gpu() {
        return;
    }
    let _c = check();
    let n = dlb_cuda_device_count();
    assert!(n >= 1);
    let mut out = null_mut();
    let shape = [4i64];
    expect(
        // SAFETY: `shape` is valid for 1 read; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty(shape.as_ptr(), 1, dt(2, 32), cuda(n), &mut out) },
        DLB_ERR_DEVICE,
        "does not exist",
    );
    let t = patterned(&shape, dt(2, 32), 1);
    // SAFETY: `t` is a live handle; `out` is a valid out-parameter.
    expect(unsafe { dlb_tensor_to_device(t, cuda(n + 3), &mut out) }, DLB_ERR_DEVICE, "reports");
    // Zero-size tensors need no memory but still a real device.
    let empty = [0i64, 5];
    // SAFETY: `empty` is valid for 2 reads; `out` is a valid out-parameter.
    ok(unsafe { dlb_tensor_empty(empty.as_ptr(), 2, dt(2, 32), cuda(0), &mut out) });
    let back = to(out, CPU);
    assert_eq!(host_bytes(back), []);
    free(&[t, out, back]);
}

#[test]
fn every_dtype_round_trips_between_all_devices() {
    if !gpu() {
        return;
    }
    let _c = check();
    let n = dlb_cuda_device_count();
    for (i, &(code, bits)) in DTYPES.iter().enumerate() {
        let src = patterned(&[3, 5, 7], dt(code, bits), i as u8);
        let want = host_bytes(src);
        let mut chain = vec![CPU, cuda(0), PINNED, cuda(0), CPU, PINNED, CPU];
        if n >= 2 {
            chain.splice(2..2, [cuda(1), cuda(0)]);
        }
        let mut held = vec![];
        let mut cur = src;
        for &dev in &chain[1..] {
            cur = to(cur, dev);
            held.push(cur);
            let d = dl(cur);
            assert_eq!((d.dtype.code.0, d.dtype.bits), (code, bits));
            // SAFETY: a 3-d handle has 3 shape entries.
            assert_eq!(unsafe { std::slice::from_raw_parts(d.shape, 3) }, [3, 5, 7]);
        }
        assert_eq!(host_bytes(cur), want, "dtype ({code}, {bits})");
        // A device copy is independent and equal.
        let on_gpu = to(src, cuda(0));
        let c = copy(on_gpu);
        assert_ne!(dl(c).data, dl(on_gpu).data);
        assert_eq!(fetch(c), want);
        free(&held);
        free(&[src, on_gpu, c]);
    }
}

#[test]
fn zeros_on_the_device_are_zero() {
    if !gpu() {
        return;
    }
    let _c = check();
    for dev in [cuda(0), PINNED] {
        let mut t = null_mut();
        let shape = [1000i64, 3];
        // SAFETY: `shape` is valid for 2 reads; `t` is a valid out-parameter.
        ok(unsafe { dlb_tensor_zeros(shape.as_ptr(), 2, dt(2, 64), dev, &mut t) });
        assert_eq!(dl(t).data as usize % 256, 0, "256-byte alignment");
        assert!(fetch(t).iter().all(|&b| b == 0));
        free(&[t]);
    }
}

/// Views of a 4×6×5 source: (shape, strides, offset), in elements.
const VIEWS: &[(&[i64], &[i64], i64)] = &[
    (&[4, 6, 5], &[30, 5, 1], 0),       // contiguous
    (&[5, 6, 4], &[1, 5, 30], 0),       // full permutation
    (&[4, 5, 6], &[30, 1, 5], 0),       // transpose of the inner two
    (&[4, 3, 5], &[30, 10, 1], 0),      // every other row: row-pitched
    (&[2, 6, 2], &[60, 5, 2], 1),       // steps on two axes with an offset
    (&[4, 6, 5], &[30, 5, -1], 4),      // reversed inner axis
    (&[4, 6, 5], &[-30, -5, -1], 119),  // everything reversed
    (&[3, 4, 6, 5], &[0, 30, 5, 1], 0), // broadcast outer axis
    (&[4, 6, 5], &[30, 5, 0], 0),       // broadcast inner axis
    (&[20], &[6], 0),                   // a column through the flattened tensor
    (&[2, 2], &[60, 1], 0),             // a sparse corner: span much larger than the data
    (&[], &[], 7),                      // 0-d
];

#[test]
fn strided_sources_copy_correctly_in_every_direction() {
    if !gpu() {
        return;
    }
    let _c = check();
    let n = dlb_cuda_device_count();
    for &(code, bits) in &[(0u8, 8u8), (2, 16), (2, 32), (2, 64), (5, 128)] {
        let host = patterned(&[4, 6, 5], dt(code, bits), bits);
        let device = to(host, cuda(0));
        let pinned = to(host, PINNED);
        for &(shape, strides, offset) in VIEWS {
            let what = format!("dtype ({code}, {bits}) view {shape:?} {strides:?} +{offset}");
            let hv = view(host, shape, strides, offset);
            let want = host_bytes(hv);
            // host strided → device (staged packing), and pinned strided → device.
            let pv = view(pinned, shape, strides, offset);
            for src in [hv, pv] {
                let up = to(src, cuda(0));
                assert_eq!(fetch(up), want, "upload of {what}");
                free(&[up]);
            }
            // device strided → host (span fetch or device compaction), → pinned, → device.
            let dv = view(device, shape, strides, offset);
            let down = to(dv, CPU);
            assert_eq!(host_bytes(down), want, "download of {what}");
            let down_pinned = to(dv, PINNED);
            assert_eq!(host_bytes(down_pinned), want, "download to pinned memory of {what}");
            let c = copy(dv);
            assert_eq!(fetch(c), want, "device copy of {what}");
            let mut held = vec![hv, pv, dv, down, down_pinned, c];
            if n >= 2 {
                let other = to(dv, cuda(1));
                assert_eq!(fetch(other), want, "peer copy of {what}");
                held.push(other);
            }
            free(&held);
        }
        free(&[host, device, pinned]);
    }
}

#[test]
fn large_transfers_go_through_the_staging_buffers_in_chunks() {
    if !gpu() {
        return;
    }
    let _c = check();
    // 1 MiB + 3 bytes: with a small DLBRIDGE_CUDA_STAGING_BYTES (the Makefile sets 4096 for the
    // fake driver) this is hundreds of chunks, the last one partial.
    let shape = [(1 << 20) + 3];
    let src = patterned(&shape, dt(1, 8), 9);
    let want = host_bytes(src);
    let uploads = calls("cuMemcpyHtoDAsync_v2");
    let g = to(src, cuda(0));
    let downloads = calls("cuMemcpyDtoHAsync_v2");
    let back = to(g, CPU);
    assert_eq!(host_bytes(back), want);
    if driver() == Driver::Fake {
        let chunk = std::env::var("DLBRIDGE_CUDA_STAGING_BYTES").map_or(4 << 20, |v| v.parse().unwrap());
        let expected = (shape[0] as usize).div_ceil(chunk) as i64;
        assert_eq!(calls("cuMemcpyHtoDAsync_v2") - uploads, expected, "one upload per chunk");
        assert_eq!(calls("cuMemcpyDtoHAsync_v2") - downloads, expected, "one download per chunk");
    }
    // A strided source larger than a chunk: packed piece by piece.
    let wide = patterned(&[64, 4096], dt(2, 32), 3);
    let t = view(wide, &[4096, 64], &[1, 4096], 0);
    let want = host_bytes(t);
    let g2 = to(t, cuda(0));
    assert_eq!(fetch(g2), want);
    free(&[src, g, back, wide, t, g2]);
}

#[test]
fn casts_of_device_tensors_convert() {
    if !gpu() {
        return;
    }
    let _c = check();
    let mut src = null_mut();
    let shape = [6i64];
    // SAFETY: `shape` is valid for 1 read; `src` is a valid out-parameter.
    ok(unsafe { dlb_tensor_zeros(shape.as_ptr(), 1, dt(2, 64), CPU, &mut src) });
    let mut p = null_mut();
    // SAFETY: `src` is the live, writable handle made above; `p` is a valid out-parameter.
    ok(unsafe { dlb_tensor_data_mut(src, &mut p) });
    let values = [0.5f64, -1.25, 3.0, 1e10, -0.0, 7.75];
    // SAFETY: `p` points at the 6 float64 elements of `src`, which do not overlap `values`.
    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), p.cast::<f64>(), 6) };
    let g = to(src, cuda(0));
    let mut c = null_mut();
    // SAFETY: `g` is a live handle; `c` is a valid out-parameter.
    ok(unsafe { dlb_tensor_cast(g, dt(2, 32), &mut c) });
    assert_eq!(dl(c).device, cuda(0));
    let got: Vec<f32> = fetch(c).chunks(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect();
    assert_eq!(got, values.map(|v| v as f32));
    free(&[src, g, c]);
}

#[test]
fn device_exports_share_and_their_deleters_run_on_any_thread() {
    if !gpu() {
        return;
    }
    let _c = check();
    let live = dlb_live_allocations();
    let src = patterned(&[8, 8], dt(2, 32), 5);
    let want = host_bytes(src);
    let g = to(src, cuda(0));
    free(&[src]);
    let mut mt: *mut DLManagedTensorVersioned = null_mut();
    // SAFETY: `g` is a live handle; `mt` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_dlpack_versioned(g, false, &mut mt) });
    // SAFETY: `mt` is a live export until its deleter runs at the end of this test.
    let d = unsafe { &(*mt).dl_tensor };
    assert_eq!(d.device, cuda(0));
    assert_eq!(d.data, dl(g).data, "a shared export hands out the device pointer itself");
    if let Some(f) = fake() {
        // SAFETY: the fake's function, called with the signature it declares.
        assert_eq!(unsafe { (f.device_of)(d.data as u64) }, 0);
    }
    // Re-import: the same memory again.
    let mut again = null_mut();
    let mut mt2: *mut DLManagedTensorVersioned = null_mut();
    // SAFETY: `g` is a live handle; `mt2` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_dlpack_versioned(g, false, &mut mt2) });
    // SAFETY: `mt2` is the live export just made (consumed here); `again` is a valid out-parameter.
    ok(unsafe { dlb_tensor_from_dlpack_versioned(mt2, &mut again) });
    assert_eq!(dl(again).data, dl(g).data);
    assert_eq!(fetch(again), want);
    free(&[g, again]);
    assert_eq!(dlb_live_allocations(), live + 1, "the export keeps the device memory alive");
    if fake().is_some() {
        // The consumer still has work queued on the memory (on the legacy stream) when it calls
        // the deleter: the free must wait for it.
        consumer_queues_a_memset(d.data as u64, 64 * 4);
    }
    // The consumer releases it from a thread that never used CUDA: the deleter must make the
    // context current itself before freeing.
    let addr = mt as usize;
    std::thread::spawn(move || {
        let mt = addr as *mut DLManagedTensorVersioned;
        // SAFETY: the export is live and released here exactly once (any thread may do so).
        unsafe { ((*mt).deleter.unwrap())(mt) };
    })
    .join()
    .unwrap();
    assert_eq!(dlb_live_allocations(), live);
}

/// Queues a memset of device memory on the legacy stream through the driver itself, as a
/// consumer's kernel would, and leaves it pending.
fn consumer_queues_a_memset(ptr: u64, len: usize) {
    type Retain = unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int;
    type Push = unsafe extern "C" fn(*mut c_void) -> c_int;
    type Pop = unsafe extern "C" fn(*mut *mut c_void) -> c_int;
    type Memset = unsafe extern "C" fn(u64, u8, usize, *mut c_void) -> c_int;
    // SAFETY: RTLD_NOLOAD only finds the library dlbridge already opened.
    let h = unsafe { libc::dlopen(c"libcuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    let sym = |name: &CStr| {
        // SAFETY: a handle from dlopen and a NUL-terminated name.
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        assert!(!p.is_null(), "{name:?}");
        p
    };
    // SAFETY: each symbol is the driver's function of that name, with the signature of its CUDA declaration;
    // the context and the device memory at `ptr` (`len` bytes) are the driver's own.
    unsafe {
        let retain = std::mem::transmute::<*mut c_void, Retain>(sym(c"cuDevicePrimaryCtxRetain"));
        let push = std::mem::transmute::<*mut c_void, Push>(sym(c"cuCtxPushCurrent_v2"));
        let pop = std::mem::transmute::<*mut c_void, Pop>(sym(c"cuCtxPopCurrent_v2"));
        let memset = std::mem::transmute::<*mut c_void, Memset>(sym(c"cuMemsetD8Async"));
        let mut ctx = null_mut();
        assert_eq!(retain(&mut ctx, 0), 0);
        assert_eq!(push(ctx), 0);
        assert_eq!(memset(ptr, 7, len, std::ptr::without_provenance_mut(1)), 0);
        assert_eq!(pop(&mut ctx), 0);
        assert!((fake().unwrap().pending_ops)() > 0);
    }
}

#[test]
fn foreign_device_memory_imports_without_a_copy() {
    if !gpu() {
        return;
    }
    let _c = check();
    // Memory another library owns, wrapped with dlb_tensor_from_data as a kDLCUDA tensor.
    let src = patterned(&[16], dt(2, 32), 2);
    let g = to(src, cuda(0));
    let shape = [16i64];
    let mut wrapped = null_mut();
    // SAFETY: `g`'s device memory holds 16 float32 and outlives the wrapping handle (freed first); shape is
    // valid for 1 read; `wrapped` is a valid out-parameter.
    ok(unsafe {
        dlb_tensor_from_data(
            dl(g).data,
            shape.as_ptr(),
            std::ptr::null(),
            1,
            dt(2, 32),
            cuda(0),
            false,
            None,
            null_mut(),
            &mut wrapped,
        )
    });
    assert_eq!(fetch(wrapped), host_bytes(src));
    free(&[wrapped, g, src]);
}

// ---------------------------------------------------------------------------------------------
// the fake driver only: failures on purpose
// ---------------------------------------------------------------------------------------------

#[test]
fn failed_device_allocations_are_out_of_memory_and_leak_nothing() {
    let Some(f) = fake() else { return };
    let _c = check();
    let src = patterned(&[256], dt(2, 32), 4);
    let shape = [256i64];
    // SAFETY: the fake's function, called with the signature it declares.
    unsafe { (f.fail_allocs_after)(0) };
    let mut out = null_mut();
    expect(
        // SAFETY: `shape` is valid for 1 read; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty(shape.as_ptr(), 1, dt(2, 32), cuda(0), &mut out) },
        DLB_ERR_OUT_OF_MEMORY,
        "cuMemAlloc",
    );
    expect(
        // SAFETY: `shape` is valid for 1 read; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty(shape.as_ptr(), 1, dt(2, 32), PINNED, &mut out) },
        DLB_ERR_OUT_OF_MEMORY,
        "cuMemHostAlloc",
    );
    expect(
        // SAFETY: `src` is a live handle; `out` is a valid out-parameter.
        unsafe { dlb_tensor_to_device(src, cuda(0), &mut out) },
        DLB_ERR_OUT_OF_MEMORY,
        "CUDA_ERROR_OUT_OF_MEMORY",
    );
    assert!(out.is_null());
    // SAFETY: the fake's function, called with the signature it declares.
    unsafe { (f.fail_allocs_after)(-1) };
    // The library keeps working.
    let g = to(src, cuda(0));
    assert_eq!(fetch(g), host_bytes(src));
    free(&[src, g]);
}

#[test]
fn failed_copies_are_device_errors_and_leak_nothing() {
    let Some(f) = fake() else { return };
    let _c = check();
    let src = patterned(&[4, 64], dt(2, 32), 6);
    let g = to(src, cuda(0));
    let gt = view(g, &[64, 4], &[1, 64], 0);
    for after in 0..3 {
        let mut out = null_mut();
        // SAFETY: the fake's function, called with the signature it declares.
        unsafe { (f.fail_copies_after)(after) };
        // SAFETY: `src` is a live handle; `out` is a valid out-parameter.
        let s = unsafe { dlb_tensor_to_device(src, cuda(0), &mut out) };
        // SAFETY: the fake's function, called with the signature it declares.
        unsafe { (f.fail_copies_after)(-1) };
        if s != DLB_OK {
            expect(s, DLB_ERR_DEVICE, "cuMemcpy");
            assert!(out.is_null());
        } else {
            free(&[out]);
        }
        // SAFETY: the fake's function, called with the signature it declares.
        unsafe { (f.fail_copies_after)(after) };
        // SAFETY: `gt` is a live handle; `out` is a valid out-parameter.
        let s = unsafe { dlb_tensor_copy(gt, &mut out) };
        // SAFETY: the fake's function, called with the signature it declares.
        unsafe { (f.fail_copies_after)(-1) };
        expect(s, DLB_ERR_DEVICE, "cuMemcpy");
        assert!(out.is_null());
    }
    free(&[gt, g, src]);
}

/// Runs this test binary again with extra environment, asking for one ignored test.
fn child(test: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--ignored", "--nocapture"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
#[ignore = "run by drivers_without_devices_are_device_errors in a process of its own"]
fn child_reports_device_errors() {
    let needle = std::env::var("EXPECT_MESSAGE").unwrap();
    assert_eq!(dlb_cuda_device_count(), 0);
    let shape = [2i64];
    let mut out = null_mut();
    expect(
        // SAFETY: `shape` is valid for 1 read; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty(shape.as_ptr(), 1, dt(2, 32), cuda(0), &mut out) },
        DLB_ERR_DEVICE,
        &needle,
    );
    expect(
        // SAFETY: `shape` is valid for 1 read; `out` is a valid out-parameter.
        unsafe { dlb_tensor_zeros(shape.as_ptr(), 1, dt(2, 32), PINNED, &mut out) },
        DLB_ERR_DEVICE,
        &needle,
    );
}

#[test]
fn drivers_without_devices_are_device_errors() {
    if fake().is_none() {
        return;
    }
    for (env, message) in [
        (("FAKE_CUDA_DEVICES", "0"), "reports no GPU"),
        (("FAKE_CUDA_INIT_RESULT", "100"), "found no GPU (CUDA_ERROR_NO_DEVICE)"),
        (("FAKE_CUDA_INIT_RESULT", "999"), "cuInit failed"),
    ] {
        let out = child("child_reports_device_errors", &[env, ("EXPECT_MESSAGE", message)]);
        assert!(
            out.status.success(),
            "{env:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

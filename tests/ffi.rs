//! Integration tests that call the exported `extern "C"` functions exactly as C does: raw
//! pointers, out-parameters, status codes, `dlb_last_error`, foreign deleters. They also run
//! under Miri (`make test-miri`), which checks every raw-pointer access they cause.

use std::ffi::{CStr, c_void};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

mod common;
use common::c_api::*;
use common::{CPU, dl, dt, expect, free, ok};

/// `dlb_live_allocations` is process-wide: tests that check it run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the lock and checks on drop that every buffer a test made is gone again.
struct LeakCheck {
    start: i64,
    _guard: MutexGuard<'static, ()>,
}

fn leak_check() -> LeakCheck {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    LeakCheck { start: dlb_live_allocations(), _guard: guard }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(dlb_live_allocations(), self.start, "a test leaked a data buffer");
        }
    }
}

fn f32t() -> DLDataType {
    dt(2, 32)
}
fn f64t() -> DLDataType {
    dt(2, 64)
}

fn zeros(shape: &[i64], dtype: DLDataType) -> *mut dlb_tensor {
    let mut t = null_mut();
    // SAFETY: `shape` is valid for its length in reads; `t` is a valid out-parameter.
    ok(unsafe { dlb_tensor_zeros(shape.as_ptr(), shape.len() as i32, dtype, CPU, &mut t) });
    t
}

/// A float32 tensor holding 0, 1, 2, … in row-major order.
fn arange(shape: &[i64]) -> *mut dlb_tensor {
    let t = zeros(shape, f32t());
    let n: i64 = shape.iter().product();
    let mut p = null_mut();
    // SAFETY: `t` is the live handle made above; `p` is a valid out-parameter.
    ok(unsafe { dlb_tensor_data_mut(t, &mut p) });
    for i in 0..n as usize {
        // SAFETY: `p` points at the n writable float32 elements of the fresh row-major tensor, and i < n.
        unsafe { *p.cast::<f32>().add(i) = i as f32 };
    }
    t
}

/// Reads every element of a float32 tensor in row-major order through its DLTensor.
fn read_f32(t: *const dlb_tensor) -> Vec<f32> {
    let d = dl(t);
    // SAFETY: a live handle's DLTensor has `ndim` shape entries.
    let shape = unsafe { std::slice::from_raw_parts(d.shape, d.ndim as usize) };
    // SAFETY: strides is non-NULL with `ndim` entries for dlbridge's tensors.
    let strides = unsafe { std::slice::from_raw_parts(d.strides, d.ndim as usize) };
    let n: i64 = shape.iter().product();
    let mut out = Vec::new();
    for flat in 0..n {
        let (mut rem, mut off) = (flat, 0i64);
        for a in (0..shape.len()).rev() {
            off += (rem % shape[a]) * strides[a];
            rem /= shape[a];
        }
        // SAFETY: `off` is the offset of an element of `t`, inside its memory.
        out.push(unsafe { *d.data.cast::<f32>().offset(off as isize) });
    }
    out
}

#[test]
fn version_error_and_cuda_count() {
    // SAFETY: dlb_version returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(dlb_version()) }.to_str().unwrap();
    assert_eq!(v.split('.').filter(|p| p.parse::<u32>().is_ok()).count(), 3, "{v}");
    assert!(dlb_cuda_device_count() >= 0); // tests/cuda.rs covers CUDA
}

#[test]
fn version_macros_agree_with_dlb_version() {
    // SAFETY: dlb_version returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(dlb_version()) }.to_str().unwrap();
    assert_eq!(v, format!("{DLBRIDGE_VERSION_MAJOR}.{DLBRIDGE_VERSION_MINOR}.{DLBRIDGE_VERSION_PATCH}"));
}

#[test]
fn status_str_names_every_status() {
    let name = |s: i32| {
        let p = dlb_status_str(s);
        assert!(!p.is_null());
        // SAFETY: dlb_status_str returns a static NUL-terminated string, never NULL.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap()
    };
    for (status, expected) in [
        (DLB_OK, "DLB_OK"),
        (DLB_ERR_INVALID_ARGUMENT, "DLB_ERR_INVALID_ARGUMENT"),
        (DLB_ERR_UNSUPPORTED, "DLB_ERR_UNSUPPORTED"),
        (DLB_ERR_OUT_OF_MEMORY, "DLB_ERR_OUT_OF_MEMORY"),
        (DLB_ERR_DEVICE, "DLB_ERR_DEVICE"),
        (DLB_ERR_READ_ONLY, "DLB_ERR_READ_ONLY"),
        (DLB_ERR_VERSION, "DLB_ERR_VERSION"),
        (DLB_ERR_PANIC, "DLB_ERR_PANIC"),
    ] {
        assert_eq!(name(status as i32), expected);
    }
    for unknown in [-1, 8, 1000, i32::MIN, i32::MAX] {
        assert_eq!(name(unknown), "unknown dlb_status");
    }
    // Static strings: the same pointer every time.
    assert_eq!(dlb_status_str(5), dlb_status_str(5));
}

#[test]
fn alias_and_view_share_copy_does_not() {
    let _l = leak_check();
    let t = arange(&[2, 3]);
    let (mut a, mut v, mut c) = (null_mut(), null_mut(), null_mut());
    // SAFETY: `t` is a live handle; `a` is a valid out-parameter.
    ok(unsafe { dlb_tensor_alias(t, &mut a) });
    let (shape, strides) = ([3i64, 2], [1i64, 3]);
    // SAFETY: `t` is a live handle; shape and strides are valid for 2 reads; `v` is a valid out-parameter.
    ok(unsafe { dlb_tensor_view(t, shape.as_ptr(), strides.as_ptr(), 2, 0, &mut v) });
    // SAFETY: `v` is a live handle; `c` is a valid out-parameter.
    ok(unsafe { dlb_tensor_copy(v, &mut c) });
    assert_eq!(read_f32(v), [0., 3., 1., 4., 2., 5.]);
    assert_eq!(read_f32(c), [0., 3., 1., 4., 2., 5.]);
    // SAFETY: `c` and `v` are live handles.
    assert!(unsafe { dlb_tensor_is_contiguous(c) && !dlb_tensor_is_contiguous(v) });
    // Write through the alias: the original and the view see it, the copy does not.
    let mut p = null_mut();
    // SAFETY: `a` is a live, writable handle; `p` is a valid out-parameter.
    ok(unsafe { dlb_tensor_data_mut(a, &mut p) });
    // SAFETY: `p` points at the 6 float32 elements of `t`, `a` and `v`; nothing else accesses them.
    unsafe { *p.cast::<f32>().add(1) = 42.0 };
    assert_eq!(read_f32(t)[1], 42.0);
    assert_eq!(read_f32(v)[2], 42.0);
    assert_eq!(read_f32(c)[2], 1.0);
    // SAFETY: `t`, `a`, `v` and `c` are live handles.
    unsafe {
        assert!(dlb_tensor_shares_memory(t, a) && dlb_tensor_shares_memory(t, v));
        assert!(!dlb_tensor_shares_memory(t, c));
    }
    free(&[t, a, v, c]);
}

#[test]
fn creation_is_aligned_zeroed_and_keeps_dtype() {
    let _l = leak_check();
    let t = zeros(&[3, 5], f64t());
    let d = dl(t);
    assert_eq!(d.data as usize % 256, 0);
    assert_eq!((d.dtype.code.0, d.dtype.bits, d.dtype.lanes), (2, 64, 1));
    assert_eq!(d.byte_offset, 0);
    // SAFETY: a 2-d tensor has 2 strides.
    assert_eq!(unsafe { std::slice::from_raw_parts(d.strides, 2) }, [5, 1]);
    // SAFETY: the tensor holds 3 * 5 float64 elements, contiguous from `data`.
    assert!(unsafe { std::slice::from_raw_parts(d.data.cast::<f64>(), 15) }.iter().all(|&x| x == 0.0));
    // 0-d with NULL shape, and a zero-size tensor.
    let (mut s, mut z) = (null_mut(), null_mut());
    // SAFETY: NULL shape is allowed with ndim 0; `s` is a valid out-parameter.
    ok(unsafe { dlb_tensor_empty(null(), 0, f32t(), CPU, &mut s) });
    assert_eq!(dl(s).ndim, 0);
    // SAFETY: the shape array is valid for 2 reads; `z` is a valid out-parameter.
    ok(unsafe { dlb_tensor_empty([0i64, 4].as_ptr(), 2, f32t(), CPU, &mut z) });
    // SAFETY: `z` is a live handle.
    assert!(unsafe { dlb_tensor_is_contiguous(z) && !dlb_tensor_shares_memory(z, z) });
    free(&[t, s, z]);
}

#[test]
fn bad_arguments_give_status_message_and_null_out() {
    let _l = leak_check();
    let t = arange(&[6]);
    let mut out = std::ptr::dangling_mut::<dlb_tensor>(); // must be overwritten with NULL
    let shape = [2i64, 2];
    expect(
        // SAFETY: `t` is a live handle; shape is valid for 2 reads; NULL strides is allowed; `out` is a valid
        // out-parameter.
        unsafe { dlb_tensor_view(t, shape.as_ptr(), null(), 2, 4, &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "view element 7 lies outside the 6 elements of its storage",
    );
    assert!(out.is_null());
    // SAFETY: a NULL handle is allowed (and refused); `out` is a valid out-parameter.
    expect(unsafe { dlb_tensor_alias(null(), &mut out) }, DLB_ERR_INVALID_ARGUMENT, "t is NULL");
    // SAFETY: `t` is a live handle; a NULL out is allowed (and refused).
    expect(unsafe { dlb_tensor_alias(t, null_mut()) }, DLB_ERR_INVALID_ARGUMENT, "out is NULL");
    expect(
        // SAFETY: the call refuses NULL shape with ndim 2 before reading it; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty(null(), 2, f32t(), CPU, &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "shape is NULL",
    );
    expect(
        // SAFETY: ndim 65 is refused before `shape` is read (it has only 2 entries); `out` is valid.
        unsafe { dlb_tensor_empty(shape.as_ptr(), 65, f32t(), CPU, &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "ndim",
    );
    expect(
        // SAFETY: a negative ndim is refused before `shape` is read; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty(shape.as_ptr(), -1, f32t(), CPU, &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "ndim",
    );
    expect(
        // SAFETY: the shape array is valid for 1 read; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty([-1i64].as_ptr(), 1, f32t(), CPU, &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "shape[0] is -1",
    );
    expect(
        // SAFETY: the shape array is valid for 2 reads; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty([1i64 << 62, 1 << 62].as_ptr(), 2, f32t(), CPU, &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "bytes",
    );
    let lanes0 = DLDataType { code: DLDataTypeCode(2), bits: 32, lanes: 0 };
    expect(
        // SAFETY: `shape` is valid for 2 reads; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty(shape.as_ptr(), 2, lanes0, CPU, &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "lanes",
    );
    expect(
        // SAFETY: `shape` is valid for 2 reads; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty(shape.as_ptr(), 2, dt(99, 8), CPU, &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "code 99",
    );
    expect(
        // SAFETY: `shape` is valid for 2 reads; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty(shape.as_ptr(), 2, dt(2, 7), CPU, &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "7 bits",
    );
    let cuda = DLDevice { device_type: DLDeviceType(2), device_id: 0 };
    let vulkan = DLDevice { device_type: DLDeviceType(7), device_id: 0 };
    // SAFETY: `shape` is valid for 2 reads; `out` is a valid out-parameter.
    expect(unsafe { dlb_tensor_empty(shape.as_ptr(), 2, f32t(), cuda, &mut out) }, DLB_ERR_DEVICE, "CUDA");
    // SAFETY: `t` is a live handle; `out` is a valid out-parameter.
    expect(unsafe { dlb_tensor_to_device(t, cuda, &mut out) }, DLB_ERR_DEVICE, "CUDA");
    // SAFETY: `t` is a live handle; `out` is a valid out-parameter.
    expect(unsafe { dlb_tensor_to_device(t, vulkan, &mut out) }, DLB_ERR_UNSUPPORTED, "kDLVulkan");
    // SAFETY: `t` is a live handle; `out` is a valid out-parameter.
    expect(unsafe { dlb_tensor_cast(t, dt(3, 64), &mut out) }, DLB_ERR_UNSUPPORTED, "kDLOpaqueHandle");
    assert!(out.is_null());
    // SAFETY: NULL is allowed for every handle argument of these calls; `t` is a live handle.
    unsafe {
        dlb_tensor_free(null_mut());
        assert!(dlb_tensor_dltensor(null()).is_null());
        assert!(!dlb_tensor_is_read_only(null()) && !dlb_tensor_shares_memory(t, null()));
    }
    free(&[t]);
}

#[test]
#[cfg_attr(miri, ignore = "Miri reports huge allocations as resource exhaustion")]
fn impossible_allocation_is_out_of_memory_and_the_library_keeps_working() {
    let _l = leak_check();
    let mut out = null_mut();
    expect(
        // SAFETY: the shape array is valid for 1 read; `out` is a valid out-parameter.
        unsafe { dlb_tensor_empty([1i64 << 44].as_ptr(), 1, f32t(), CPU, &mut out) },
        DLB_ERR_OUT_OF_MEMORY,
        "allocating",
    );
    assert!(out.is_null());
    free(&[arange(&[4])]);
}

#[test]
fn to_device_cpu_copies_and_cast_converts() {
    let _l = leak_check();
    let t = arange(&[2, 2]);
    let (mut c, mut d, mut back, mut cplx, mut bad) =
        (null_mut(), null_mut(), null_mut(), null_mut(), null_mut());
    // SAFETY: `t` is a live handle; `c` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_device(t, CPU, &mut c) });
    // SAFETY: `t` and `c` are live handles.
    assert!(!unsafe { dlb_tensor_shares_memory(t, c) });
    // SAFETY: `t` is a live handle; `d` is a valid out-parameter.
    ok(unsafe { dlb_tensor_cast(t, f64t(), &mut d) });
    let dd = dl(d);
    assert_eq!(dd.dtype.bits, 64);
    // SAFETY: `dd` describes the 4 float64 elements of the contiguous cast result.
    assert_eq!(unsafe { std::slice::from_raw_parts(dd.data.cast::<f64>(), 4) }, [0., 1., 2., 3.]);
    // SAFETY: `d` is a live handle; `back` is a valid out-parameter.
    ok(unsafe { dlb_tensor_cast(d, f32t(), &mut back) });
    assert_eq!(read_f32(back), [0., 1., 2., 3.]);
    // SAFETY: `t` is a live handle; `cplx` is a valid out-parameter.
    ok(unsafe { dlb_tensor_cast(t, dt(5, 64), &mut cplx) });
    // SAFETY: `cplx` is a live handle; `bad` is a valid out-parameter.
    expect(unsafe { dlb_tensor_cast(cplx, f32t(), &mut bad) }, DLB_ERR_UNSUPPORTED, "imaginary");
    free(&[t, c, d, back, cplx]);
}

static RELEASED: AtomicUsize = AtomicUsize::new(0);
unsafe extern "C" fn count_release(ctx: *mut c_void) {
    RELEASED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the library calls this exactly once, with the ctx of wrap_counted: a Box<[f32; 6]> leaked by
    // the test.
    drop(unsafe { Box::from_raw(ctx.cast::<[f32; 6]>()) });
}

/// Wraps the boxed buffer `buf` as a float32 tensor of `shape` whose release is `count_release`.
fn wrap_counted(buf: *mut [f32; 6], shape: &[i64], out: &mut *mut dlb_tensor) -> dlb_status {
    let ctx = buf.cast::<c_void>();
    // SAFETY: `buf` holds 6 float32 and stays valid until count_release frees it; `shape` is valid for its
    // length; `out` is a valid out-parameter.
    unsafe {
        dlb_tensor_from_data(
            ctx,
            shape.as_ptr(),
            null(),
            shape.len() as i32,
            f32t(),
            CPU,
            false,
            Some(count_release),
            ctx,
            out,
        )
    }
}

#[test]
fn wrapped_memory_is_released_once_after_the_last_user() {
    let _l = leak_check();
    RELEASED.store(0, Ordering::SeqCst);
    let buf = Box::into_raw(Box::new([1f32, 2., 3., 4., 5., 6.]));
    let shape = [2i64, 3];
    let mut t = null_mut();
    ok(wrap_counted(buf, &shape, &mut t));
    let (mut a, mut mt) = (null_mut(), null_mut());
    // SAFETY: `t` is a live handle; `a` is a valid out-parameter.
    ok(unsafe { dlb_tensor_alias(t, &mut a) });
    // SAFETY: `t` is a live handle; `mt` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_dlpack_versioned(t, false, &mut mt) });
    free(&[t, a]);
    assert_eq!(RELEASED.load(Ordering::SeqCst), 0, "the export still uses the memory");
    // SAFETY: the export is alive and keeps the 6-element memory alive.
    assert_eq!(unsafe { *(*mt).dl_tensor.data.cast::<f32>().add(5) }, 6.0);
    // SAFETY: the export is live and released here exactly once.
    unsafe { ((*mt).deleter.unwrap())(mt) };
    assert_eq!(RELEASED.load(Ordering::SeqCst), 1);

    // On failure the release is not called: the memory is still the caller's.
    let buf = Box::into_raw(Box::new([0f32; 6]));
    expect(wrap_counted(buf, &[-2], &mut t), DLB_ERR_INVALID_ARGUMENT, "shape[0] is -2");
    assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
    expect(
        // SAFETY: NULL data is refused before anything is read; shape is valid for 2 reads; `t` is a valid
        // out-parameter.
        unsafe {
            dlb_tensor_from_data(
                null_mut(),
                shape.as_ptr(),
                null(),
                2,
                f32t(),
                CPU,
                false,
                None,
                null_mut(),
                &mut t,
            )
        },
        DLB_ERR_INVALID_ARGUMENT,
        "data is NULL",
    );
    // SAFETY: the failed wrap did not take `buf`: it is still the test's Box, freed once here.
    drop(unsafe { Box::from_raw(buf) });
}

#[test]
fn read_only_data_stays_read_only() {
    let _l = leak_check();
    let buf = [1f32, 2., 3.];
    let mut t = null_mut();
    // SAFETY: `buf` holds 3 float32 and outlives the handle and everything made from it in this test; the
    // shape array is valid for 1 read; `t` is a valid out-parameter.
    ok(unsafe {
        dlb_tensor_from_data(
            buf.as_ptr().cast_mut().cast(),
            [3i64].as_ptr(),
            null(),
            1,
            f32t(),
            CPU,
            true,
            None,
            null_mut(),
            &mut t,
        )
    });
    let (mut p, mut legacy, mut shared, mut copied, mut a, mut c) =
        (null_mut(), null_mut(), null_mut(), null_mut(), null_mut(), null_mut());
    // SAFETY: `t` is a live handle; `p` is a valid out-parameter.
    expect(unsafe { dlb_tensor_data_mut(t, &mut p) }, DLB_ERR_READ_ONLY, "read-only");
    // SAFETY: `t` is a live handle; `legacy` is a valid out-parameter.
    expect(unsafe { dlb_tensor_to_dlpack(t, &mut legacy) }, DLB_ERR_READ_ONLY, "read-only");
    assert!(legacy.is_null());
    // SAFETY: `t` is a live handle; `shared` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_dlpack_versioned(t, false, &mut shared) });
    // SAFETY: `t` is a live handle; `copied` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_dlpack_versioned(t, true, &mut copied) });
    // SAFETY: the exports just made are live: `shared` is consumed by the import and `copied` released by its
    // deleter, each once; every handle is live until freed once at the end.
    unsafe {
        assert_eq!((*shared).flags.bits(), FLAG_READ_ONLY);
        assert_eq!((*copied).flags.bits(), FLAG_IS_COPIED);
        ok(dlb_tensor_alias(t, &mut a));
        ok(dlb_tensor_copy(t, &mut c));
        assert!(dlb_tensor_is_read_only(a) && !dlb_tensor_is_read_only(c));
        // Re-importing the read-only export keeps it read-only.
        let mut back = null_mut();
        ok(dlb_tensor_from_dlpack_versioned(shared, &mut back));
        assert!(dlb_tensor_is_read_only(back));
        ((*copied).deleter.unwrap())(copied);
        free(&[t, a, c, back]);
    }
}

#[test]
fn exports_fold_offsets_and_carry_strides() {
    let _l = leak_check();
    let t = arange(&[3, 4]);
    let mut v = null_mut();
    // Rows 1..3, columns reversed.
    // SAFETY: `t` is a live handle; shape and strides are valid for 2 reads; `v` is a valid out-parameter.
    ok(unsafe { dlb_tensor_view(t, [2i64, 4].as_ptr(), [4i64, -1].as_ptr(), 2, 7, &mut v) });
    let (mut mt, mut legacy) = (null_mut(), null_mut());
    // SAFETY: `v` is a live handle; `mt` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_dlpack_versioned(v, false, &mut mt) });
    // SAFETY: `v` is a live handle; `legacy` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_dlpack(v, &mut legacy) });
    // SAFETY: both exports are live until their deleters run, once each, at the end; they keep the memory
    // alive after the handles are freed, so `d` and its data stay valid.
    unsafe {
        let d = &(*mt).dl_tensor;
        assert_eq!(((*mt).version.major, (*mt).version.minor), (1, 3));
        assert_eq!((*mt).flags.bits(), 0);
        assert_eq!(d.byte_offset, 0);
        assert_eq!(*d.data.cast::<f32>(), 7.0);
        assert_eq!(std::slice::from_raw_parts(d.strides, 2), [4, -1]);
        assert_eq!((*legacy).dl_tensor.data, d.data);
        free(&[t, v]);
        // Both exports keep the memory alive on their own.
        assert_eq!(*d.data.cast::<f32>().offset(-3), 4.0);
        ((*mt).deleter.unwrap())(mt);
        ((*legacy).deleter.unwrap())(legacy);
    }
}

/// A foreign producer: a boxed managed tensor whose deleter counts its calls.
struct Foreign {
    data: Vec<f64>,
    shape: Vec<i64>,
    strides: Vec<i64>,
}
static DELETED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn delete_foreign_v(mt: *mut DLManagedTensorVersioned) {
    DELETED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the library calls this once with the Box<DLManagedTensorVersioned> made by foreign_versioned,
    // whose manager_ctx is a Box<Foreign>.
    unsafe {
        drop(Box::from_raw((*mt).manager_ctx.cast::<Foreign>()));
        drop(Box::from_raw(mt));
    }
}
unsafe extern "C" fn delete_foreign_l(mt: *mut DLManagedTensor) {
    DELETED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the library calls this once with the Box<DLManagedTensor> made by the test, whose manager_ctx
    // is a Box<Foreign>.
    unsafe {
        drop(Box::from_raw((*mt).manager_ctx.cast::<Foreign>()));
        drop(Box::from_raw(mt));
    }
}

fn foreign_tensor(n: usize) -> (DLTensor, *mut Foreign) {
    let mut f = Box::new(Foreign {
        data: (0..n).map(|i| i as f64).collect(),
        shape: vec![n as i64],
        strides: vec![1],
    });
    let t = DLTensor {
        data: f.data.as_mut_ptr().cast(),
        device: CPU,
        ndim: 1,
        dtype: f64t(),
        shape: f.shape.as_mut_ptr(),
        strides: f.strides.as_mut_ptr(),
        byte_offset: 0,
    };
    (t, Box::into_raw(f))
}

fn foreign_versioned(
    n: usize,
    minor: u32,
    edit: impl FnOnce(&mut DLManagedTensorVersioned),
) -> *mut DLManagedTensorVersioned {
    let (t, ctx) = foreign_tensor(n);
    let mut mt = DLManagedTensorVersioned {
        version: DLPackVersion { major: 1, minor },
        manager_ctx: ctx.cast(),
        deleter: Some(delete_foreign_v),
        flags: DlpackFlags::empty(),
        dl_tensor: t,
    };
    edit(&mut mt);
    Box::into_raw(Box::new(mt))
}

#[test]
fn foreign_imports_share_and_delete_once_with_the_last_user() {
    let _l = leak_check();
    DELETED.store(0, Ordering::SeqCst);
    let start = dlb_live_allocations();
    let mt = foreign_versioned(4, 3, |m| m.dl_tensor.byte_offset = 8);
    // SAFETY: `mt` is the live Box made just above.
    let data = unsafe { (*mt).dl_tensor.data };
    let mut t = null_mut();
    // byte_offset 8 skips one float64, so the tensor sees 1, 2, 3 (shape says 4: make it 3).
    // SAFETY: `mt` is the live Box made above; its shape points at a 1-element Vec.
    unsafe { *(*mt).dl_tensor.shape = 3 };
    // SAFETY: `mt` is a valid managed tensor (consumed here); `t` is a valid out-parameter.
    ok(unsafe { dlb_tensor_from_dlpack_versioned(mt, &mut t) });
    assert_eq!(dlb_live_allocations(), start + 1);
    let d = dl(t);
    assert_eq!(d.data, data.wrapping_byte_add(8));
    assert_eq!(d.byte_offset, 0);
    // SAFETY: `d` describes 3 float64 elements inside the foreign buffer, alive while `t` is.
    assert_eq!(unsafe { *d.data.cast::<f64>() }, 1.0);
    assert_eq!((d.dtype.code.0, d.dtype.bits), (2, 64));
    let (mut a, mut re, mut back) = (null_mut(), null_mut(), null_mut());
    // SAFETY: `t` is a live handle; `a` is a valid out-parameter.
    ok(unsafe { dlb_tensor_alias(t, &mut a) });
    // SAFETY: `t` is a live handle; `re` is a valid out-parameter.
    ok(unsafe { dlb_tensor_to_dlpack_versioned(t, false, &mut re) });
    // SAFETY: `re` is the live export just made (consumed here); `back` is a valid out-parameter.
    ok(unsafe { dlb_tensor_from_dlpack_versioned(re, &mut back) });
    assert_eq!(dlb_live_allocations(), start + 1, "re-importing our own export adds nothing");
    free(&[t, a]);
    assert_eq!(DELETED.load(Ordering::SeqCst), 0);
    free(&[back]);
    assert_eq!(DELETED.load(Ordering::SeqCst), 1);

    // Legacy producer with NULL strides (allowed before DLPack 1.2).
    let (mut lt, ctx) = foreign_tensor(2);
    lt.strides = null_mut();
    let legacy = Box::into_raw(Box::new(DLManagedTensor {
        dl_tensor: lt,
        manager_ctx: ctx.cast(),
        deleter: Some(delete_foreign_l),
    }));
    // SAFETY: `legacy` is a valid managed tensor (consumed here); `t` is a valid out-parameter.
    ok(unsafe { dlb_tensor_from_dlpack(legacy, &mut t) });
    // SAFETY: a 1-d handle has 1 stride.
    assert_eq!(unsafe { std::slice::from_raw_parts(dl(t).strides, 1) }, [1]);
    free(&[t]);
    assert_eq!(DELETED.load(Ordering::SeqCst), 2);
}

#[test]
fn refused_imports_have_already_run_the_deleter() {
    let _l = leak_check();
    type Edit = fn(&mut DLManagedTensorVersioned);
    let cases: &[(&str, u32, Edit, dlb_status, &str)] = &[
        ("major 2", 3, |m| m.version.major = 2, DLB_ERR_VERSION, "major version 2"),
        ("ndim 65", 3, |m| m.dl_tensor.ndim = 65, DLB_ERR_INVALID_ARGUMENT, "ndim"),
        ("ndim -1", 3, |m| m.dl_tensor.ndim = -1, DLB_ERR_INVALID_ARGUMENT, "ndim"),
        ("NULL shape", 3, |m| m.dl_tensor.shape = null_mut(), DLB_ERR_INVALID_ARGUMENT, "shape is NULL"),
        (
            "NULL strides 1.3",
            3,
            |m| m.dl_tensor.strides = null_mut(),
            DLB_ERR_INVALID_ARGUMENT,
            "strides is NULL",
        ),
        ("NULL data", 3, |m| m.dl_tensor.data = null_mut(), DLB_ERR_INVALID_ARGUMENT, "data is NULL"),
        ("lanes 0", 3, |m| m.dl_tensor.dtype.lanes = 0, DLB_ERR_INVALID_ARGUMENT, "lanes"),
        ("code 99", 3, |m| m.dl_tensor.dtype.code = DLDataTypeCode(99), DLB_ERR_INVALID_ARGUMENT, "code 99"),
        (
            "device 99",
            3,
            |m| m.dl_tensor.device.device_type = DLDeviceType(99),
            DLB_ERR_INVALID_ARGUMENT,
            "device type 99",
        ),
        ("device id -1", 3, |m| m.dl_tensor.device.device_id = -1, DLB_ERR_INVALID_ARGUMENT, "negative"),
        ("byte offset", 3, |m| m.dl_tensor.byte_offset = u64::MAX, DLB_ERR_INVALID_ARGUMENT, "byte_offset"),
        (
            "strides out of range",
            3,
            // SAFETY: `strides` points at the foreign tensor's 1-element Vec.
            |m| unsafe { *m.dl_tensor.strides = i64::MAX / 2 },
            DLB_ERR_INVALID_ARGUMENT,
            "reaches",
        ),
    ];
    for &(what, minor, edit, status, needle) in cases {
        DELETED.store(0, Ordering::SeqCst);
        let mt = foreign_versioned(4, minor, edit);
        let mut out = std::ptr::dangling_mut::<dlb_tensor>();
        // SAFETY: `mt` is a valid managed tensor, consumed by the call; `out` is a valid out-parameter.
        expect(unsafe { dlb_tensor_from_dlpack_versioned(mt, &mut out) }, status, needle);
        assert!(out.is_null(), "{what}");
        assert_eq!(DELETED.load(Ordering::SeqCst), 1, "{what}: the deleter must have run once");
    }
    // Negative extents and overflowing byte sizes need a writable shape.
    for (shape0, needle) in [(-3i64, "shape[0] is -3"), (1i64 << 62, "bytes")] {
        DELETED.store(0, Ordering::SeqCst);
        let mt = foreign_versioned(4, 3, |_| {});
        // SAFETY: `mt` is the live Box made above; its shape points at a 1-element Vec.
        unsafe { *(*mt).dl_tensor.shape = shape0 };
        let mut out = null_mut();
        // SAFETY: `mt` is a valid managed tensor, consumed by the call; `out` is a valid out-parameter.
        expect(unsafe { dlb_tensor_from_dlpack_versioned(mt, &mut out) }, DLB_ERR_INVALID_ARGUMENT, needle);
        assert_eq!(DELETED.load(Ordering::SeqCst), 1);
    }
    // NULL strides from a 1.1 producer are fine; NULL mt and NULL out are refused cleanly.
    DELETED.store(0, Ordering::SeqCst);
    let mut out = null_mut();
    // SAFETY: a valid managed tensor, consumed by the call; `out` is a valid out-parameter.
    ok(unsafe {
        dlb_tensor_from_dlpack_versioned(
            foreign_versioned(4, 1, |m| m.dl_tensor.strides = null_mut()),
            &mut out,
        )
    });
    free(&[out]);
    expect(
        // SAFETY: a NULL managed tensor is allowed (and refused); `out` is a valid out-parameter.
        unsafe { dlb_tensor_from_dlpack_versioned(null_mut(), &mut out) },
        DLB_ERR_INVALID_ARGUMENT,
        "NULL",
    );
    expect(
        // SAFETY: a valid managed tensor, consumed even though the NULL out is refused.
        unsafe { dlb_tensor_from_dlpack_versioned(foreign_versioned(4, 3, |_| {}), null_mut()) },
        DLB_ERR_INVALID_ARGUMENT,
        "out is NULL",
    );
    assert_eq!(DELETED.load(Ordering::SeqCst), 2);
}

/// A raw pointer that may cross threads (the C contract allows it for these handles).
struct Shared<T>(*mut T);
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}
// SAFETY: dlbridge handles may be read from several threads and exports deleted on any thread.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as for Send.
unsafe impl<T> Sync for Shared<T> {}
impl<T> Shared<T> {
    /// Taking `self` makes closures capture the whole (Send) wrapper, not the raw field.
    fn get(self) -> *mut T {
        self.0
    }
}

#[test]
fn threads_alias_export_and_free_the_same_tensor() {
    let _l = leak_check();
    RELEASED.store(0, Ordering::SeqCst);
    let buf = Box::into_raw(Box::new([0f32; 6]));
    let mut t = null_mut();
    ok(wrap_counted(buf, &[6], &mut t));
    let shared = Shared(t);
    let iterations = if cfg!(miri) { 3 } else { 2000 };
    let exports: Vec<Shared<DLManagedTensorVersioned>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(move || {
                    let t = shared.get() as *const dlb_tensor;
                    let mut kept = Vec::new();
                    for i in 0..iterations {
                        let (mut a, mut v, mut mt, mut back) =
                            (null_mut(), null_mut(), null_mut(), null_mut());
                        // SAFETY: `t` stays live until every worker is joined; `a` is a valid out-parameter.
                        ok(unsafe { dlb_tensor_alias(t, &mut a) });
                        // SAFETY: `a` is a live handle; shape and strides are valid for 1 read; `v` is a
                        // valid out-parameter.
                        ok(unsafe { dlb_tensor_view(a, [3i64].as_ptr(), [2i64].as_ptr(), 1, 0, &mut v) });
                        // SAFETY: `v` is a live handle; `mt` is a valid out-parameter.
                        ok(unsafe { dlb_tensor_to_dlpack_versioned(v, false, &mut mt) });
                        if i % 2 == 0 {
                            // SAFETY: `mt` is the live export just made (consumed here); `back` is a valid
                            // out-parameter.
                            ok(unsafe { dlb_tensor_from_dlpack_versioned(mt, &mut back) });
                            free(&[back]);
                        } else {
                            kept.push(Shared(mt)); // deleted later, on another thread
                        }
                        free(&[a, v]);
                    }
                    kept
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    free(&[t]);
    assert_eq!(RELEASED.load(Ordering::SeqCst), 0, "exports still hold the memory");
    std::thread::spawn(move || {
        for mt in exports {
            let mt = mt.get();
            // SAFETY: each kept export is live and released here exactly once, on this thread (allowed by
            // DLPack).
            unsafe { ((*mt).deleter.unwrap())(mt) };
        }
    })
    .join()
    .unwrap();
    assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
}

#[test]
#[cfg_attr(miri, ignore = "reads a file; Miri isolates the file system")]
fn header_declares_every_contract_function() {
    let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/dlbridge.h")).unwrap();
    for name in [
        "dlb_version",
        "dlb_status_str",
        "dlb_last_error",
        "dlb_live_allocations",
        "dlb_cuda_device_count",
        "dlb_tensor_empty",
        "dlb_tensor_zeros",
        "dlb_tensor_from_data",
        "dlb_tensor_alias",
        "dlb_tensor_view",
        "dlb_tensor_copy",
        "dlb_tensor_cast",
        "dlb_tensor_to_device",
        "dlb_tensor_free",
        "dlb_tensor_dltensor",
        "dlb_tensor_is_read_only",
        "dlb_tensor_is_contiguous",
        "dlb_tensor_shares_memory",
        "dlb_tensor_data_mut",
        "dlb_tensor_to_dlpack_versioned",
        "dlb_tensor_to_dlpack",
        "dlb_tensor_from_dlpack_versioned",
        "dlb_tensor_from_dlpack",
        "dlb_tensor_empty_shared",
        "dlb_tensor_zeros_shared",
        "dlb_tensor_is_shared",
        "dlb_tensor_share",
        "dlb_tensor_to_ipc",
        "dlb_tensor_from_ipc",
    ] {
        assert!(header.contains(&format!("{name}(")), "{name} missing from include/dlbridge.h");
    }
}

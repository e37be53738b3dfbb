//! Exported tensor functions: library information, creation, sharing, copying and inspection.
//! Each one checks its arguments, calls the core and converts the result.

use std::ffi::{CStr, c_char, c_void};

use super::error::{boundary_or, dlb_status, last_error_ptr, produce};
use super::handle::{dims, dlb_tensor};
use crate::abi::{DLDataType, DLDevice, DLTensor};
use crate::device::Device;
use crate::dtype::DType;
use crate::storage::{Owner, live_allocations};
use crate::tensor::Tensor;

/// The major version of the header: a program can compare DLBRIDGE_VERSION_MAJOR with what
/// dlb_version() returns at run time. Taken from Cargo.toml (checked by a unit test).
pub const DLBRIDGE_VERSION_MAJOR: u32 = 0;
/// The minor version of the header. While the major version is 0, a new minor version may
/// change the ABI; the shared library's SONAME (libdlbridge.so.0.MINOR) says which one it is.
pub const DLBRIDGE_VERSION_MINOR: u32 = 1;
/// The patch version of the header.
pub const DLBRIDGE_VERSION_PATCH: u32 = 0;

// The constants must name Cargo.toml's version: a mismatch does not compile (and the unit test
// below says which one differs).
const _: () = assert!(DLBRIDGE_VERSION_MAJOR == decimal(env!("CARGO_PKG_VERSION_MAJOR")));
const _: () = assert!(DLBRIDGE_VERSION_MINOR == decimal(env!("CARGO_PKG_VERSION_MINOR")));
const _: () = assert!(DLBRIDGE_VERSION_PATCH == decimal(env!("CARGO_PKG_VERSION_PATCH")));

/// A decimal number, at compile time (u32::MAX for anything else).
const fn decimal(s: &str) -> u32 {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return u32::MAX;
    }
    let mut value: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let digit = bytes[i].wrapping_sub(b'0');
        if digit > 9 {
            return u32::MAX;
        }
        value = value.saturating_mul(10).saturating_add(digit as u32);
        i += 1;
    }
    value
}

/// The library version, "MAJOR.MINOR.PATCH" (the same numbers as DLBRIDGE_VERSION_MAJOR,
/// DLBRIDGE_VERSION_MINOR and DLBRIDGE_VERSION_PATCH of the header it was built with). The
/// string is static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a dlb_status value, e.g. "DLB_ERR_READ_ONLY" for 5, or "unknown dlb_status" for
/// a value that is not one. It takes a plain integer, so any value is allowed. Never NULL; the
/// string is static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_status_str(status: i32) -> *const c_char {
    // Panic-free: a match on an integer returning static C strings.
    status_name(status).as_ptr()
}

fn status_name(status: i32) -> &'static CStr {
    const NAMES: [(dlb_status, &CStr); 8] = [
        (dlb_status::DLB_OK, c"DLB_OK"),
        (dlb_status::DLB_ERR_INVALID_ARGUMENT, c"DLB_ERR_INVALID_ARGUMENT"),
        (dlb_status::DLB_ERR_UNSUPPORTED, c"DLB_ERR_UNSUPPORTED"),
        (dlb_status::DLB_ERR_OUT_OF_MEMORY, c"DLB_ERR_OUT_OF_MEMORY"),
        (dlb_status::DLB_ERR_DEVICE, c"DLB_ERR_DEVICE"),
        (dlb_status::DLB_ERR_READ_ONLY, c"DLB_ERR_READ_ONLY"),
        (dlb_status::DLB_ERR_VERSION, c"DLB_ERR_VERSION"),
        (dlb_status::DLB_ERR_PANIC, c"DLB_ERR_PANIC"),
    ];
    NAMES.iter().find(|&&(s, _)| s as i32 == status).map_or(c"unknown dlb_status", |&(_, name)| name)
}

/// The message of this thread's last failed dlbridge call, or "" if none failed yet. The string
/// belongs to dlbridge and stays valid until this thread's next dlbridge call.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_last_error() -> *const c_char {
    last_error_ptr()
}

/// How many data buffers dlbridge keeps alive right now: each of its own allocations, each
/// wrapped foreign buffer and each imported DLPack tensor counts once until released (handles
/// and export structs do not count; re-importing one of dlbridge's own exports adds nothing).
#[unsafe(no_mangle)]
pub extern "C" fn dlb_live_allocations() -> i64 {
    live_allocations()
}

/// The number of CUDA devices usable now: 0 when there is no driver library or no device.
/// Never fails. The first call (or the first CUDA request) loads the driver; the answer is
/// cached for the life of the process.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_cuda_device_count() -> i32 {
    std::panic::catch_unwind(crate::cuda::device_count).unwrap_or(0)
}

/// # Safety
/// Pointers as documented on `dlb_tensor_empty`.
unsafe fn create(
    function: &str,
    shape: *const i64,
    ndim: i32,
    dtype: DLDataType,
    device: DLDevice,
    zeroed: bool,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: per the caller's contract.
    unsafe {
        produce(function, out, || {
            let shape = dims(shape, ndim, "shape", false)?.unwrap_or(&[]);
            let t = Tensor::empty(shape, DType::from_dl(dtype)?, Device::from_dl(device)?, zeroed)?;
            dlb_tensor::into_raw(t)
        })
    }
}

/// Creates an uninitialised row-major tensor of `ndim` extents from `shape` (NULL allowed when
/// ndim is 0) on `device`. Its memory is aligned to at least 256 bytes. kDLCUDA is device
/// memory (cuMemAlloc in the device's primary context); kDLCUDAHost is pinned host memory,
/// portable, not write-combined (cuMemHostAlloc). Without a CUDA driver, a GPU or that device
/// index, those give DLB_ERR_DEVICE with a message naming what is missing.
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// `shape` is NULL or valid for `ndim` reads; `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_empty(
    shape: *const i64,
    ndim: i32,
    dtype: DLDataType,
    device: DLDevice,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: forwarded contract.
    unsafe { create("dlb_tensor_empty", shape, ndim, dtype, device, false, out) }
}

/// Like dlb_tensor_empty, with every byte set to zero (on a GPU: complete when this returns).
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// As for dlb_tensor_empty.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_zeros(
    shape: *const i64,
    ndim: i32,
    dtype: DLDataType,
    device: DLDevice,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: forwarded contract.
    unsafe { create("dlb_tensor_zeros", shape, ndim, dtype, device, true, out) }
}

/// Wraps memory the caller owns, without copying. `strides` NULL means row-major (in
/// elements). The memory must stay valid until `release(ctx)` runs: dlbridge calls it exactly
/// once, on whichever thread drops the last tensor or export using the memory (`release` may be
/// NULL). On failure `release` is NOT called: the memory is still the caller's.
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// Every element the shape and strides describe from `data` must be valid memory on `device`
/// until `release(ctx)`; `shape`/`strides` NULL or valid for `ndim` reads; `out` NULL or valid
/// for one write; `release` callable from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_from_data(
    data: *mut c_void,
    shape: *const i64,
    strides: *const i64,
    ndim: i32,
    dtype: DLDataType,
    device: DLDevice,
    read_only: bool,
    release: Option<unsafe extern "C" fn(ctx: *mut c_void)>,
    ctx: *mut c_void,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_from_data", out, || {
            let shape = dims(shape, ndim, "shape", false)?.unwrap_or(&[]);
            let strides = dims(strides, ndim, "strides", true)?;
            let (dtype, device) = (DType::from_dl(dtype)?, Device::from_dl(device)?);
            // The handle first: once the storage holds `release`, failing would run it.
            let slot = dlb_tensor::reserve()?;
            let owner = Owner::Foreign { release, ctx };
            Tensor::from_borrowed(data.cast(), shape, strides, dtype, device, read_only, owner)
                .map(|t| dlb_tensor::fill(slot, t))
                .map_err(|(e, owner)| {
                    // The memory stays the caller's: forget the release instead of running it.
                    std::mem::forget(owner);
                    e
                })
        })
    }
}

/// A new handle on the same memory as `t`: writes through one are seen through the other.
/// Read-only stays read-only. The caller owns the returned tensor and releases it with
/// dlb_tensor_free.
///
/// # Safety
/// `t` is NULL or a live handle; `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_alias(t: *const dlb_tensor, out: *mut *mut dlb_tensor) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_alias", out, || {
            dlb_tensor::into_raw(dlb_tensor::from_ptr(t, "t")?.tensor().alias())
        })
    }
}

/// A strided view of t's memory (zero-copy). `offset` and `strides` count elements from t's first
/// element; `strides` NULL means row-major; negative and zero strides are allowed. Every element
/// of the view must lie inside the memory t can reach (for dlbridge's allocations: the bytes that
/// were asked for; for wrapped or imported memory: the bytes the original tensor spans), else
/// DLB_ERR_INVALID_ARGUMENT. The caller owns the returned tensor and releases it with
/// dlb_tensor_free.
///
/// # Safety
/// `t` NULL or a live handle; `shape`/`strides` NULL or valid for `ndim` reads; `out` NULL or
/// valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_view(
    t: *const dlb_tensor,
    shape: *const i64,
    strides: *const i64,
    ndim: i32,
    offset: i64,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_view", out, || {
            let t = dlb_tensor::from_ptr(t, "t")?;
            let shape = dims(shape, ndim, "shape", false)?.unwrap_or(&[]);
            let strides = dims(strides, ndim, "strides", true)?;
            dlb_tensor::into_raw(t.tensor().view(shape, strides, offset)?)
        })
    }
}

/// A copy of t in new memory: row-major contiguous, writable, independent of t, on t's device.
/// On a GPU the copy is done by the driver's copy engines and complete when this returns.
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// `t` NULL or a live handle; `out` NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_copy(t: *const dlb_tensor, out: *mut *mut dlb_tensor) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_copy", out, || {
            dlb_tensor::into_raw(dlb_tensor::from_ptr(t, "t")?.tensor().copy()?)
        })
    }
}

/// A converting copy of t (new memory, row-major, writable) between bool, int8..int64,
/// uint8..uint64, float16, bfloat16, float32, float64, complex64 and complex128. Integers wrap,
/// floats to integers truncate and saturate (NaN gives 0), anything to bool is "!= 0", float16
/// and bfloat16 round to nearest even. Complex to real is DLB_ERR_UNSUPPORTED. A kDLCUDA tensor is
/// cast on the host between two transfers (dlbridge has no GPU kernels). The caller owns the
/// returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// `t` NULL or a live handle; `out` NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_cast(
    t: *const dlb_tensor,
    dtype: DLDataType,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_cast", out, || {
            let t = dlb_tensor::from_ptr(t, "t")?;
            dlb_tensor::into_raw(t.tensor().cast(DType::from_dl(dtype)?)?)
        })
    }
}

/// A copy of t on `device` (kDLCPU, kDLCUDA, kDLCUDAHost), in every direction and across CUDA
/// devices; always new memory, row-major, complete when this returns (no stream or event is
/// left to wait for). t may be strided. Host data that is not pinned moves through pinned
/// staging buffers in chunks. Without a CUDA driver, a GPU or that device index this gives
/// DLB_ERR_DEVICE; a device type dlbridge does not handle (Vulkan, Metal, …) gives
/// DLB_ERR_UNSUPPORTED; a failing driver call gives DLB_ERR_DEVICE (or DLB_ERR_OUT_OF_MEMORY)
/// with the call and the CUDA error in the message. The caller owns the returned tensor and
/// releases it with dlb_tensor_free.
///
/// # Safety
/// `t` NULL or a live handle; `out` NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_to_device(
    t: *const dlb_tensor,
    device: DLDevice,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_to_device", out, || {
            let t = dlb_tensor::from_ptr(t, "t")?;
            dlb_tensor::into_raw(t.tensor().to_device(Device::from_dl(device)?)?)
        })
    }
}

/// Releases a handle. The memory goes when the last handle or export using it is gone.
/// NULL is a no-op. Needs the caller's exclusive use of `t`.
///
/// # Safety
/// `t` is NULL or a live handle that nobody uses afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_free(t: *mut dlb_tensor) {
    // SAFETY: per this function's contract.
    boundary_or("dlb_tensor_free", (), || unsafe { dlb_tensor::free(t) })
}

/// The tensor described as a DLTensor, borrowed: it belongs to `t` and is valid while `t` lives.
/// `data` points at the first element, `byte_offset` is 0, `strides` is non-NULL whenever
/// ndim > 0. Returns NULL when `t` is NULL.
///
/// # Safety
/// `t` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_dltensor(t: *const dlb_tensor) -> *const DLTensor {
    // SAFETY: per this function's contract.
    boundary_or("dlb_tensor_dltensor", std::ptr::null(), || unsafe {
        t.as_ref().map_or(std::ptr::null(), |t| t.dltensor() as *const DLTensor)
    })
}

/// Whether t's data is read-only (false when `t` is NULL).
///
/// # Safety
/// `t` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_is_read_only(t: *const dlb_tensor) -> bool {
    // SAFETY: per this function's contract.
    boundary_or("dlb_tensor_is_read_only", false, || unsafe {
        t.as_ref().is_some_and(|t| t.tensor().is_read_only())
    })
}

/// Whether t is row-major compact (false when `t` is NULL).
///
/// # Safety
/// `t` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_is_contiguous(t: *const dlb_tensor) -> bool {
    // SAFETY: per this function's contract.
    boundary_or("dlb_tensor_is_contiguous", false, || unsafe {
        t.as_ref().is_some_and(|t| t.tensor().is_contiguous())
    })
}

/// Whether the byte ranges the two tensors span overlap, on the same device (false when either
/// is NULL or has no elements).
///
/// # Safety
/// `a` and `b` are NULL or live handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_shares_memory(a: *const dlb_tensor, b: *const dlb_tensor) -> bool {
    // SAFETY: per this function's contract.
    boundary_or("dlb_tensor_shares_memory", false, || unsafe {
        match (a.as_ref(), b.as_ref()) {
            (Some(a), Some(b)) => a.tensor().shares_memory(b.tensor()),
            _ => false,
        }
    })
}

/// Gives a writable pointer to t's first element in `*out` (borrowed: valid while the memory
/// lives). DLB_ERR_READ_ONLY if t is read-only. Needs the caller's exclusive use of `t`.
///
/// # Safety
/// `t` is NULL or a live handle; `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_data_mut(t: *mut dlb_tensor, out: *mut *mut c_void) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_data_mut", out, || {
            Ok(dlb_tensor::from_ptr(t, "t")?.tensor().data_mut()?.cast::<c_void>())
        })
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn version_constants_match_cargo_toml() {
        let parse = |s: &str| s.parse::<u32>().unwrap();
        assert_eq!(DLBRIDGE_VERSION_MAJOR, parse(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(DLBRIDGE_VERSION_MINOR, parse(env!("CARGO_PKG_VERSION_MINOR")));
        assert_eq!(DLBRIDGE_VERSION_PATCH, parse(env!("CARGO_PKG_VERSION_PATCH")));
        // SAFETY: dlb_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(dlb_version()) }.to_str().unwrap();
        let expected = format!("{DLBRIDGE_VERSION_MAJOR}.{DLBRIDGE_VERSION_MINOR}.{DLBRIDGE_VERSION_PATCH}");
        assert_eq!(v, expected);
    }

    #[test]
    fn status_names() {
        for (value, name) in [(0, "DLB_OK"), (5, "DLB_ERR_READ_ONLY"), (7, "DLB_ERR_PANIC")] {
            assert_eq!(status_name(value).to_str().unwrap(), name);
        }
        for value in [-1, 8, i32::MIN, i32::MAX] {
            assert_eq!(status_name(value).to_str().unwrap(), "unknown dlb_status");
        }
    }
}

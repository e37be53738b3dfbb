//! Helpers shared by the integration tests that call the C API from Rust (`tests/ffi.rs`,
//! `tests/cuda.rs`, `tests/oom.rs`, `tests/stress.rs`): the C declarations ([`c_api`]),
//! statuses with their messages, dtypes, handles. Each test file uses a part.
#![allow(dead_code)]

pub mod c_api;

use std::ffi::CStr;

use c_api::*;

pub const CPU: DLDevice = DLDevice { device_type: DLDeviceType(1), device_id: 0 };

pub fn dt(code: u8, bits: u8) -> DLDataType {
    DLDataType { code: DLDataTypeCode(code), bits, lanes: 1 }
}

/// This thread's `dlb_last_error()`.
pub fn last_error() -> String {
    // SAFETY: dlb_last_error always returns a valid NUL-terminated string, unchanged until this
    // thread's next call into the library.
    unsafe { CStr::from_ptr(dlb_last_error()) }.to_string_lossy().into_owned()
}

/// Asserts a status, and for failures that the message is set and mentions `needle`.
#[track_caller]
pub fn expect(status: dlb_status, want: dlb_status, needle: &str) {
    assert_eq!(status, want, "last error: {}", last_error());
    if want != DLB_OK {
        let msg = last_error();
        assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
    }
}

#[track_caller]
pub fn ok(status: dlb_status) {
    expect(status, DLB_OK, "");
}

/// The DLTensor a handle lends.
/// `t` must be a live handle; the reference must not outlive it (the caller picks `'a`).
pub fn dl<'a>(t: *const dlb_tensor) -> &'a DLTensor {
    // SAFETY: the tests pass live handles only, for which the result is non-NULL and valid
    // while the handle lives.
    unsafe { &*dlb_tensor_dltensor(t) }
}

pub fn free(ts: &[*mut dlb_tensor]) {
    for &t in ts {
        // SAFETY: each is a live handle (or NULL) that the test does not use afterwards.
        unsafe { dlb_tensor_free(t) };
    }
}

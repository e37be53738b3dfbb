//! Helpers shared by the integration tests that call the C API from Rust (`tests/ffi.rs`,
//! `tests/cuda.rs`): statuses with their messages, dtypes, handles. Each test file uses a part.
#![allow(dead_code)]

use std::ffi::CStr;

use dlbridge::abi::*;
use dlbridge::ffi::tensor::*;
use dlbridge::ffi::{dlb_status, dlb_status::*, dlb_tensor};

pub const CPU: DLDevice = DLDevice { device_type: DLDeviceType(1), device_id: 0 };

pub fn dt(code: u8, bits: u8) -> DLDataType {
    DLDataType { code: DLDataTypeCode(code), bits, lanes: 1 }
}

/// This thread's `dlb_last_error()`.
pub fn last_error() -> String {
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
pub fn dl<'a>(t: *const dlb_tensor) -> &'a DLTensor {
    unsafe { &*dlb_tensor_dltensor(t) }
}

pub fn free(ts: &[*mut dlb_tensor]) {
    for &t in ts {
        unsafe { dlb_tensor_free(t) };
    }
}

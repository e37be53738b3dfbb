//! The C declarations of `include/dlbridge.h`, written out for the Rust tests, benches and fuzz
//! targets so that they call the library the way a C program does: through the exported
//! symbols, with raw pointers and status codes, never through the crate's Rust paths.
//! `tests/c` compiles C programs against the header itself; this file must say the same as the
//! header (same names, parameter order, types and status values), and is checked only by use.
//!
//! The DLPack structs are dlpark's (`dlbridge::dlpark`, the crate dlbridge itself uses for
//! them), which have the layout of DLPack's C header.
// Each test binary uses a part of it.
#![allow(dead_code, unused_imports, non_camel_case_types)]

use std::ffi::{c_char, c_void};

// The symbols declared below live in the dlbridge library. A dependency that nothing names is
// not linked at all, so this names it: the test binary then links its rlib, symbols included.
use dlbridge as _;

pub use dlbridge::dlpark::DlpackFlags;
pub use dlbridge::dlpark::ffi::{
    DLDataType, DLDataTypeCode, DLDevice, DLDeviceType, DLManagedTensor, DLManagedTensorVersioned,
    DLPackVersion, DLTensor,
};

/// DLPACK_MAJOR_VERSION and DLPACK_MINOR_VERSION: the DLPack version dlbridge writes into its
/// versioned exports.
pub const DLPACK_MAJOR: u32 = 1;
pub const DLPACK_MINOR: u32 = 3;

/// Bits of `DLManagedTensorVersioned.flags` (DLPACK_FLAG_BITMASK_*).
pub const FLAG_READ_ONLY: u64 = 1 << 0;
pub const FLAG_IS_COPIED: u64 = 1 << 1;
pub const FLAG_IS_SUBBYTE_TYPE_PADDED: u64 = 1 << 2;

/// `typedef struct dlb_tensor dlb_tensor;`: an opaque handle, only ever used behind a pointer.
/// Zero-sized and unconstructible here; the marker keeps it from being `Send`, `Sync` or
/// `Unpin`, so that nothing assumes more of the C object than the header says.
#[repr(C)]
pub struct dlb_tensor {
    _opaque: [u8; 0],
    _pin: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}

/// `enum dlb_status`: the result of every fallible call, with the header's values.
#[cfg(not(miri))]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dlb_status {
    DLB_OK = 0,
    DLB_ERR_INVALID_ARGUMENT = 1,
    DLB_ERR_UNSUPPORTED = 2,
    DLB_ERR_OUT_OF_MEMORY = 3,
    DLB_ERR_DEVICE = 4,
    DLB_ERR_READ_ONLY = 5,
    DLB_ERR_VERSION = 6,
    DLB_ERR_PANIC = 7,
}
pub use dlb_status::*;
/// Under Miri, the library's own type: Miri checks that a caller names the very type the callee
/// returns, and a copy of a `repr(C)` enum with the same values is another type to it.
#[cfg(miri)]
pub use dlbridge::dlb_status;

/// The header's version macros.
pub const DLBRIDGE_VERSION_MAJOR: u32 = 0;
pub const DLBRIDGE_VERSION_MINOR: u32 = 1;
pub const DLBRIDGE_VERSION_PATCH: u32 = 0;

// The header's functions, in its order. The five without pointer arguments have no
// preconditions (they never fail and take no pointers), so they are declared safe to call.
unsafe extern "C" {
    pub safe fn dlb_version() -> *const c_char;
    pub safe fn dlb_status_str(status: i32) -> *const c_char;
    pub safe fn dlb_last_error() -> *const c_char;
    pub safe fn dlb_live_allocations() -> i64;
    pub safe fn dlb_cuda_device_count() -> i32;

    pub fn dlb_tensor_empty(
        shape: *const i64,
        ndim: i32,
        dtype: DLDataType,
        device: DLDevice,
        out: *mut *mut dlb_tensor,
    ) -> dlb_status;
    pub fn dlb_tensor_zeros(
        shape: *const i64,
        ndim: i32,
        dtype: DLDataType,
        device: DLDevice,
        out: *mut *mut dlb_tensor,
    ) -> dlb_status;
    pub fn dlb_tensor_from_data(
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
    ) -> dlb_status;
    pub fn dlb_tensor_alias(t: *const dlb_tensor, out: *mut *mut dlb_tensor) -> dlb_status;
    pub fn dlb_tensor_view(
        t: *const dlb_tensor,
        shape: *const i64,
        strides: *const i64,
        ndim: i32,
        offset: i64,
        out: *mut *mut dlb_tensor,
    ) -> dlb_status;
    pub fn dlb_tensor_copy(t: *const dlb_tensor, out: *mut *mut dlb_tensor) -> dlb_status;
    pub fn dlb_tensor_cast(t: *const dlb_tensor, dtype: DLDataType, out: *mut *mut dlb_tensor) -> dlb_status;
    pub fn dlb_tensor_to_device(
        t: *const dlb_tensor,
        device: DLDevice,
        out: *mut *mut dlb_tensor,
    ) -> dlb_status;
    pub fn dlb_tensor_free(t: *mut dlb_tensor);
    pub fn dlb_tensor_dltensor(t: *const dlb_tensor) -> *const DLTensor;
    pub fn dlb_tensor_is_read_only(t: *const dlb_tensor) -> bool;
    pub fn dlb_tensor_is_contiguous(t: *const dlb_tensor) -> bool;
    pub fn dlb_tensor_shares_memory(a: *const dlb_tensor, b: *const dlb_tensor) -> bool;
    pub fn dlb_tensor_data_mut(t: *mut dlb_tensor, out: *mut *mut c_void) -> dlb_status;
    pub fn dlb_tensor_to_dlpack_versioned(
        t: *const dlb_tensor,
        copy: bool,
        out: *mut *mut DLManagedTensorVersioned,
    ) -> dlb_status;
    pub fn dlb_tensor_to_dlpack(t: *const dlb_tensor, out: *mut *mut DLManagedTensor) -> dlb_status;
    pub fn dlb_tensor_from_dlpack_versioned(
        mt: *mut DLManagedTensorVersioned,
        out: *mut *mut dlb_tensor,
    ) -> dlb_status;
    pub fn dlb_tensor_from_dlpack(mt: *mut DLManagedTensor, out: *mut *mut dlb_tensor) -> dlb_status;
    pub fn dlb_tensor_zeros_shared(
        shape: *const i64,
        ndim: i32,
        dtype: DLDataType,
        out: *mut *mut dlb_tensor,
    ) -> dlb_status;
    pub fn dlb_tensor_empty_shared(
        shape: *const i64,
        ndim: i32,
        dtype: DLDataType,
        out: *mut *mut dlb_tensor,
    ) -> dlb_status;
    pub fn dlb_tensor_is_shared(t: *const dlb_tensor) -> bool;
    pub fn dlb_tensor_share(t: *const dlb_tensor, out: *mut *mut dlb_tensor) -> dlb_status;
    pub fn dlb_tensor_to_ipc(t: *const dlb_tensor, handle_out: *mut u8, fd_out: *mut i32) -> dlb_status;
    pub fn dlb_tensor_from_ipc(
        handle: *const u8,
        handle_len: usize,
        fd: i32,
        out: *mut *mut dlb_tensor,
    ) -> dlb_status;
}

/// DLB_IPC_HANDLE_SIZE and DLB_IPC_MAX_NDIM.
pub const DLB_IPC_HANDLE_SIZE: usize = 256;
pub const DLB_IPC_MAX_NDIM: i32 = 8;

// The constants above are DLPack's: check them against dlpark's copy of the official header.
const _: () = {
    assert!(dlbridge::dlpark::ffi::DLPACK_MAJOR_VERSION == DLPACK_MAJOR);
    assert!(dlbridge::dlpark::ffi::DLPACK_MINOR_VERSION == DLPACK_MINOR);
    assert!(dlbridge::dlpark::ffi::DLPACK_FLAG_BITMASK_READ_ONLY as u64 == FLAG_READ_ONLY);
    assert!(dlbridge::dlpark::ffi::DLPACK_FLAG_BITMASK_IS_COPIED as u64 == FLAG_IS_COPIED);
    assert!(
        dlbridge::dlpark::ffi::DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED as u64
            == FLAG_IS_SUBBYTE_TYPE_PADDED
    );
};

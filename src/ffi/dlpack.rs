//! Exported DLPack functions: export to and import from managed tensors.

use super::error::{consume, dlb_status, produce};
use super::handle::dlb_tensor;
use crate::abi::{DLManagedTensor, DLManagedTensorVersioned};
use crate::dlpack::{export, export_legacy, import};

/// Exports t as a DLPack 1.3 versioned managed tensor. The result always has byte_offset 0 and
/// non-NULL strides when ndim > 0.
/// copy = false: shares t's memory; DLPACK_FLAG_BITMASK_READ_ONLY is set when t is read-only.
/// copy = true: a fresh row-major copy; DLPACK_FLAG_BITMASK_IS_COPIED is set.
/// The receiver owns the result and calls its deleter exactly once, from any thread, in any
/// order relative to dlb_tensor_free calls; the memory stays alive until then.
/// CUDA tensors export their device pointer; nothing is pending on any stream (every dlbridge
/// operation completes before it returns), so a consumer may use the data on any stream at
/// once. When the deleter frees dlbridge's device or pinned memory it first waits for the
/// device to finish (cuCtxSynchronize), so kernels the consumer queued on it still complete.
///
/// # Safety
/// `t` NULL or a live handle; `out` NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_to_dlpack_versioned(
    t: *const dlb_tensor,
    copy: bool,
    out: *mut *mut DLManagedTensorVersioned,
) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_to_dlpack_versioned", out, || {
            export(dlb_tensor::from_ptr(t, "t")?.tensor(), copy)
        })
    }
}

/// Exports t as a legacy (unversioned) DLPack managed tensor, sharing t's memory. The legacy
/// struct cannot say "read-only", so a read-only t gives DLB_ERR_READ_ONLY (copy it first, or use
/// dlb_tensor_to_dlpack_versioned). The receiver owns the result and calls its deleter exactly
/// once, from any thread.
///
/// # Safety
/// `t` NULL or a live handle; `out` NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_to_dlpack(
    t: *const dlb_tensor,
    out: *mut *mut DLManagedTensor,
) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_to_dlpack", out, || export_legacy(dlb_tensor::from_ptr(t, "t")?.tensor(), false))
    }
}

/// Imports a versioned managed tensor, zero-copy. Always consumes `mt`: on success its deleter
/// runs exactly once, when the last tensor or export using the memory is gone; on failure it has
/// already run when this call returns. A major version other than 1 gives DLB_ERR_VERSION. NULL
/// strides are accepted only from producers older than 1.2. byte_offset is honoured;
/// DLPACK_FLAG_BITMASK_READ_ONLY makes the tensor read-only. For kDLCUDA data the caller makes
/// sure the producer's work on it is finished, or ordered before the legacy default stream
/// (dlbridge works on each thread's default stream, which waits for the legacy one).
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// `mt` NULL or a valid managed tensor whose memory stays valid until its deleter runs; `out`
/// NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_from_dlpack_versioned(
    mt: *mut DLManagedTensorVersioned,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe { consume("dlb_tensor_from_dlpack_versioned", out, || import(mt), dlb_tensor::into_raw) }
}

/// Imports a legacy managed tensor, zero-copy, with the same ownership rules as
/// dlb_tensor_from_dlpack_versioned (always consumed; on failure the deleter has already run).
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// As for dlb_tensor_from_dlpack_versioned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_from_dlpack(
    mt: *mut DLManagedTensor,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe { consume("dlb_tensor_from_dlpack", out, || import(mt), dlb_tensor::into_raw) }
}

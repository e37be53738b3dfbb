//! Exported functions for tensors across processes: shared-memory tensors, and the handles that
//! rebuild a tensor in another process on the same memory. The core is `crate::ipc`.

use std::os::fd::BorrowedFd;

use super::error::{boundary_or, dlb_status, produce};
use super::handle::{dims, dlb_tensor};
use crate::abi::DLDataType;
use crate::dtype::DType;
use crate::error::Error;
use crate::ipc;

/// The size in bytes of a dlb_ipc_handle.
pub const DLB_IPC_HANDLE_SIZE: usize = 256;
/// The most axes a tensor sent through a dlb_ipc_handle may have.
pub const DLB_IPC_MAX_NDIM: i32 = 8;

const _: () = assert!(DLB_IPC_HANDLE_SIZE == crate::shared_memory::IPC_HANDLE_SIZE);
const _: () = assert!(DLB_IPC_MAX_NDIM as usize == crate::shared_memory::IPC_MAX_NDIM);

/// # Safety
/// As `dlb_tensor_zeros_shared`.
unsafe fn create_shared(
    function: &str,
    shape: *const i64,
    ndim: i32,
    dtype: DLDataType,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: per the caller's contract.
    unsafe {
        produce(function, out, || {
            let shape = dims(shape, ndim, "shape", false)?.unwrap_or(&[]);
            dlb_tensor::into_raw(ipc::zeros_shared(shape, DType::from_dl(dtype)?)?)
        })
    }
}

/// Creates a zero-filled row-major host tensor (kDLCPU) in new shared memory: an anonymous,
/// size-sealed memory file (memfd) that other processes can map once they are given its file
/// descriptor (see dlb_tensor_to_ipc). Nothing is left in /dev/shm or elsewhere: the memory is
/// freed when no process maps it or holds its descriptor any more. Its memory is page aligned.
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// `shape` is NULL or valid for `ndim` reads; `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_zeros_shared(
    shape: *const i64,
    ndim: i32,
    dtype: DLDataType,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: forwarded contract.
    unsafe { create_shared("dlb_tensor_zeros_shared", shape, ndim, dtype, out) }
}

/// As dlb_tensor_zeros_shared (shared memory always starts out zeroed; the name is there so that
/// every dlb_tensor_empty call has a shared counterpart).
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// `shape` is NULL or valid for `ndim` reads; `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_empty_shared(
    shape: *const i64,
    ndim: i32,
    dtype: DLDataType,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: forwarded contract.
    unsafe { create_shared("dlb_tensor_empty_shared", shape, ndim, dtype, out) }
}

/// Whether t's memory is shared memory other processes can map (made by
/// dlb_tensor_zeros_shared, dlb_tensor_share or dlb_tensor_from_ipc, or a view or alias of
/// such a tensor). False when `t` is NULL.
///
/// # Safety
/// `t` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_is_shared(t: *const dlb_tensor) -> bool {
    // SAFETY: per this function's contract.
    boundary_or("dlb_tensor_is_shared", false, || unsafe {
        t.as_ref().is_some_and(|t| ipc::is_shared(t.tensor()))
    })
}

/// A tensor another process can receive: t itself (a new alias) when its memory is shared
/// memory or dlbridge's own CUDA memory, else a row-major copy of t in new shared memory.
/// Pinned host memory and CUDA memory dlbridge did not allocate give DLB_ERR_UNSUPPORTED.
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// `t` is NULL or a live handle; `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_share(t: *const dlb_tensor, out: *mut *mut dlb_tensor) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_share", out, || {
            dlb_tensor::into_raw(ipc::share(dlb_tensor::from_ptr(t, "t")?.tensor())?)
        })
    }
}

/// Describes t for another process: writes its handle, DLB_IPC_HANDLE_SIZE opaque bytes (the same
/// on every platform, to be sent as they are), to `handle_out` and, for shared host
/// memory, a new file descriptor of the segment (close-on-exec) to `*fd_out`, which the caller
/// owns and closes once it has sent it (over a Unix socket with SCM_RIGHTS, or by letting a
/// child inherit it). For dlbridge's own CUDA memory the handle carries a CUDA IPC handle
/// (cuIpcGetMemHandle, after the device has finished its queued work) and `*fd_out` is -1.
/// Private host memory gives DLB_ERR_UNSUPPORTED (dlb_tensor_share makes a shareable copy);
/// more than DLB_IPC_MAX_NDIM axes give DLB_ERR_UNSUPPORTED. On failure `*fd_out` is -1.
///
/// # Safety
/// `t` is NULL or a live handle; `handle_out` is NULL or valid for DLB_IPC_HANDLE_SIZE byte
/// writes; `fd_out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_to_ipc(
    t: *const dlb_tensor,
    handle_out: *mut u8,
    fd_out: *mut i32,
) -> dlb_status {
    if !fd_out.is_null() {
        // SAFETY: per this function's contract.
        unsafe { *fd_out = -1 };
    }
    super::error::boundary("dlb_tensor_to_ipc", || {
        if handle_out.is_null() || fd_out.is_null() {
            return Err(Error::invalid("handle_out or fd_out is NULL"));
        }
        // SAFETY: per this function's contract.
        let t = unsafe { dlb_tensor::from_ptr(t, "t") }?.tensor();
        let (bytes, fd) = ipc::to_handle(t)?;
        let fd = match fd {
            Some(fd) => fd.try_clone_to_owned().map_err(|e| {
                Error::out_of_memory(format_args!("duplicating the segment's descriptor failed: {e}"))
            })?,
            None => {
                // SAFETY: per this function's contract.
                unsafe { handle_out.copy_from_nonoverlapping(bytes.as_ptr(), bytes.len()) };
                return Ok(());
            }
        };
        // SAFETY: per this function's contract; the descriptor is handed over to the caller.
        unsafe {
            handle_out.copy_from_nonoverlapping(bytes.as_ptr(), bytes.len());
            *fd_out = std::os::fd::IntoRawFd::into_raw_fd(fd);
        }
        Ok(())
    })
}

/// Rebuilds a tensor from a handle made by dlb_tensor_to_ipc in this or another process, on the
/// same memory (zero-copy: writes are seen by every process that maps it). `handle` points to
/// `handle_len` bytes, which must be exactly one intact handle (DLB_IPC_HANDLE_SIZE bytes;
/// anything truncated, corrupted or of another version is refused). For host memory `fd` is the
/// segment's descriptor as received; it stays the caller's (dlbridge keeps a duplicate, so the
/// caller may close it at once). For CUDA handles `fd` is ignored (pass -1); the memory is opened
/// with cuIpcOpenMemHandle, which the driver refuses in the process that allocated it; unlike
/// shared host memory, CUDA memory belongs to the process that allocated it, which must keep
/// its tensor alive until every receiver has freed theirs.
/// Everything the handle says is checked against the segment itself: its size from the
/// descriptor (fstat), its seals, and every element's position (DLB_ERR_INVALID_ARGUMENT when
/// anything lies outside). The memory lives until the last tensor on it, in any process, is gone.
/// The caller owns the returned tensor and releases it with dlb_tensor_free.
///
/// # Safety
/// `handle` is NULL or valid for `handle_len` reads; `fd` is -1 or a descriptor open for the
/// duration of the call; `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_from_ipc(
    handle: *const u8,
    handle_len: usize,
    fd: i32,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: per this function's contract.
    unsafe {
        produce("dlb_tensor_from_ipc", out, || {
            if handle.is_null() {
                return Err(Error::invalid("handle is NULL"));
            }
            let bytes = std::slice::from_raw_parts(handle, handle_len);
            // The caller's descriptor, borrowed for the call only (the contract says it stays
            // open that long). Should it not be open after all, the system calls on it answer
            // EBADF, which Segment::open reports: a number is never turned into memory unchecked.
            let fd = (fd >= 0).then(|| BorrowedFd::borrow_raw(fd));
            let t = ipc::from_handle(bytes, fd)?;
            dlb_tensor::into_raw(t)
        })
    }
}

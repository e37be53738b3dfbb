//! Status codes, the thread-local last-error message and the one wrapper every export runs in.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Error, ErrorKind};

/// The result of every fallible dlbridge call. Values are fixed and never reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum dlb_status {
    /// Success.
    DLB_OK = 0,
    /// NULL where not allowed, negative extent, view out of bounds, overflow, bad dtype.
    DLB_ERR_INVALID_ARGUMENT = 1,
    /// A dtype, device or layout this operation cannot handle.
    DLB_ERR_UNSUPPORTED = 2,
    /// An allocation failed; the library keeps working.
    DLB_ERR_OUT_OF_MEMORY = 3,
    /// Device runtime missing or failing (no CUDA driver, no GPU, CUDA error).
    DLB_ERR_DEVICE = 4,
    /// Write access asked of read-only data.
    DLB_ERR_READ_ONLY = 5,
    /// A DLPack major version dlbridge does not understand.
    DLB_ERR_VERSION = 6,
    /// An internal bug, caught at the boundary instead of unwinding into C.
    DLB_ERR_PANIC = 7,
}

impl From<ErrorKind> for dlb_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => dlb_status::DLB_ERR_INVALID_ARGUMENT,
            ErrorKind::Unsupported => dlb_status::DLB_ERR_UNSUPPORTED,
            ErrorKind::OutOfMemory => dlb_status::DLB_ERR_OUT_OF_MEMORY,
            ErrorKind::Device => dlb_status::DLB_ERR_DEVICE,
            ErrorKind::ReadOnly => dlb_status::DLB_ERR_READ_ONLY,
            ErrorKind::Version => dlb_status::DLB_ERR_VERSION,
        }
    }
}

/// This thread's last error message: owned text, or a fixed one (before the first error, and
/// when the message could not be stored for lack of memory).
enum LastError {
    Fixed(&'static CStr),
    Owned(CString),
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const { RefCell::new(LastError::Fixed(c"")) };
}

/// Stores "function: message" as this thread's last error. Allocation may fail here too: the
/// message is then replaced by a fixed one (the status still says what happened).
pub(crate) fn set_last_error(function: &str, message: &str) {
    let text = joined(function, message).map_or(
        LastError::Fixed(c"(the error message could not be stored: out of memory)"),
        LastError::Owned,
    );
    // `try_with`: during thread teardown the slot may be gone; the status still tells the story.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = text);
}

/// "function: message" as a C string (NULs become spaces), or None when out of memory.
fn joined(function: &str, message: &str) -> Option<CString> {
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(function.len() + 2 + message.len() + 1).ok()?;
    bytes.extend_from_slice(function.as_bytes());
    bytes.extend_from_slice(b": ");
    bytes.extend(message.bytes().map(|b| if b == 0 { b' ' } else { b }));
    bytes.push(0);
    CString::from_vec_with_nul(bytes).ok()
}

/// This thread's last error message; valid until this thread's next call that fails.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| match &*slot.borrow() {
            LastError::Fixed(text) => text.as_ptr(),
            LastError::Owned(text) => text.as_ptr(),
        })
        .unwrap_or(c"".as_ptr())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error (a bug in dlbridge, please report it): {what}")
}

/// Runs `f`, turning an error into a status plus message and a panic into `DLB_ERR_PANIC`.
pub(crate) fn boundary(function: &str, f: impl FnOnce() -> Result<(), Error>) -> dlb_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => dlb_status::DLB_OK,
        Ok(Err(e)) => {
            set_last_error(function, &e.message);
            e.kind.into()
        }
        Err(payload) => {
            set_last_error(function, &panic_message(payload.as_ref()));
            dlb_status::DLB_ERR_PANIC
        }
    }
}

/// For exports without a status (inspection): a panic gives `fallback` instead of unwinding.
pub(crate) fn boundary_or<T>(function: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        set_last_error(function, &panic_message(payload.as_ref()));
        fallback
    })
}

/// Creates a result for an out-parameter: `*out` is cleared first, `f` runs only when `out` is
/// non-NULL, and `*out` is set only on success.
///
/// # Safety
/// `out` is NULL or valid for one pointer write.
pub(crate) unsafe fn produce<T>(
    function: &str,
    out: *mut *mut T,
    f: impl FnOnce() -> Result<*mut T, Error>,
) -> dlb_status {
    if !out.is_null() {
        // SAFETY: per the function contract.
        unsafe { *out = std::ptr::null_mut() };
    }
    boundary(function, || {
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        let value = f()?;
        // SAFETY: per the function contract.
        unsafe { *out = value };
        Ok(())
    })
}

/// Like `produce`, for calls that take ownership of an argument: `f` always runs (so the
/// argument is consumed), and its result is released again if `out` is NULL.
///
/// # Safety
/// `out` is NULL or valid for one pointer write; `into_raw` hands ownership to the caller.
pub(crate) unsafe fn consume<T, V>(
    function: &str,
    out: *mut *mut T,
    f: impl FnOnce() -> Result<V, Error>,
    into_raw: impl FnOnce(V) -> Result<*mut T, Error>,
) -> dlb_status {
    if !out.is_null() {
        // SAFETY: per the function contract.
        unsafe { *out = std::ptr::null_mut() };
    }
    boundary(function, || {
        let value = f()?;
        if out.is_null() {
            drop(value);
            return Err(Error::invalid("out is NULL (the managed tensor was consumed and released)"));
        }
        // SAFETY: per the function contract.
        let raw = into_raw(value)?;
        // SAFETY: per the function contract.
        unsafe { *out = raw };
        Ok(())
    })
}

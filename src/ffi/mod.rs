//! The C boundary. Every exported function lives in this folder, one file per object:
//! [`tensor`] (library information, creation, sharing, copying, inspection), [`dlpack`] (export
//! and import), [`ipc`] (shared-memory tensors and handles for other processes) and [`error`]
//! (status codes, the last-error message, the panic-catching wrapper).
//! Handle pointers are turned into Rust references in exactly one place, [`handle`]. [`python`]
//! holds the Python package's capsule helpers, which are not part of the C contract or the header.
//! (The order of the modules is the order of the declarations in the generated header.)

mod tensor;
mod dlpack;
mod ipc;
mod error;
mod handle;
mod python;

#[cfg(miri)]
pub use error::dlb_status;

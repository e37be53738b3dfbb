//! The C boundary. Every exported function lives in this folder, one file per object:
//! [`error`] (status codes, the last-error message, the panic-catching wrapper), [`tensor`]
//! (creation, sharing, copying, inspection) and [`dlpack`] (export and import). Handle pointers
//! are turned into Rust references in exactly one place, [`handle`].

pub mod dlpack;
pub mod error;
pub mod handle;
pub mod tensor;

pub use error::dlb_status;
pub use handle::dlb_tensor;

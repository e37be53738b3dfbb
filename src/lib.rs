//! dlbridge: tensor exchange through DLPack, for Rust, C and Python.
//!
//! A [`Tensor`] is a strided, typed view of memory on the CPU, in pinned host memory or on a CUDA
//! device. Every operation says whether it shares memory or copies it:
//!
//! | shares the memory | makes new memory |
//! |---|---|
//! | [`Tensor::alias`], [`Tensor::view`], `Clone` | [`Tensor::copy`], [`Tensor::cast`], [`Tensor::to_device`] |
//! | [`Tensor::to_dlpack`], [`Tensor::from_dlpack`] | [`Tensor::zeros`], [`Tensor::from_slice`] |
//! | [`Tensor::from_vec`] (takes the `Vec` over) | |
//!
//! Memory lives as long as any tensor, view or DLPack export of it does, and is freed (or given
//! back to its producer) exactly once, on whichever thread lets go last.
//!
//! ```
//! use dlbridge::{DType, Device, Tensor};
//!
//! let t = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3])?;
//! // A transposed view shares the memory; a copy of it is row-major.
//! let tr = t.view(&[3, 2], Some(&[1, 3]), 0)?;
//! assert!(tr.shares_memory(&t) && !tr.is_contiguous());
//! assert_eq!(tr.copy()?.as_slice::<f32>()?, &[0., 3., 1., 4., 2., 5.]);
//! // Casts convert into new memory.
//! assert_eq!(t.cast(DType::I64)?.as_slice::<i64>()?, &[0, 1, 2, 3, 4, 5]);
//! assert_eq!(t.device(), Device::CPU);
//! # Ok::<(), dlbridge::Error>(())
//! ```
//!
//! DLPack exchange uses [`dlpark`]'s owned managed tensors (re-exported as [`dlpark`] so that
//! the versions match). The `ndarray` feature adds zero-copy `ndarray` views of tensors and
//! tensors that take over an `ndarray::Array`.
//!
//! The same library is a C library (`libdlbridge.so`, `include/dlbridge.h`); its functions are
//! a thin boundary over this crate and are documented in the repository's `docs/c-api.md`.
//!
//! Inside, the crate is a safe core (dtype, device, layout, storage, tensor, copy, cast, dlpack,
//! transfer) and one folder, `ffi`, that holds every exported C function.
#![warn(missing_docs)]

pub use dlpark;

pub use device::{Device, DeviceKind};
pub use dtype::DType;
pub use element::Element;
pub use error::{Error, ErrorKind, Result};
pub use tensor::Tensor;

mod abi;
mod alloc;
#[cfg(feature = "ndarray")]
mod array;
mod cast;
mod copy;
mod cuda;
mod device;
mod dlpack;
mod dtype;
mod element;
mod error;
mod ffi;
mod host_memory;
mod ipc;
mod layout;
mod shared_memory;
mod storage;
mod tensor;
mod transfer;

/// The C API's status type, named only under Miri, for the crate's C-style tests (`tests/`):
/// Miri requires a caller to name the very type the callee returns, and the tests otherwise
/// declare the C API as a C program does, with their own copy of the enum. Not part of the Rust
/// API.
#[cfg(miri)]
#[doc(hidden)]
pub use ffi::dlb_status;

/// The internals are private: none of these paths compiles outside the crate (checked by these
/// doctests, one per module, so that each must fail on its own).
///
/// ```compile_fail
/// use dlbridge::transfer;
/// ```
/// ```compile_fail
/// use dlbridge::alloc;
/// ```
/// ```compile_fail
/// use dlbridge::storage;
/// ```
/// ```compile_fail
/// use dlbridge::host_memory;
/// ```
/// ```compile_fail
/// use dlbridge::ffi;
/// ```
/// ```compile_fail
/// use dlbridge::copy;
/// ```
/// ```
/// // The control: what is public compiles.
/// use dlbridge::{DType, Device, Element, Error, ErrorKind, Result, Tensor, dlpark};
/// ```
#[cfg(doctest)]
pub struct PrivateInternals;

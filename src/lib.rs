//! dlbridge: tensor exchange through DLPack, with a C ABI.
//!
//! The C contract (names, parameter order, status values) is `shared/docs/c-api.md`; its
//! generated header is `include/dlbridge.h`. The crate has two halves:
//!
//! - a safe core — [`dtype`], [`device`], [`layout`], [`storage`], [`tensor`], [`copy`],
//!   [`cast`] and [`dlpack`] — plain Rust with unit tests and no `extern "C"`;
//! - a thin boundary, [`ffi`], holding every exported function: each checks its arguments,
//!   calls the core inside one panic-catching wrapper and turns the result into a `dlb_status`
//!   plus a thread-local message.
//!
//! Ownership in one sentence: memory lives in a reference-counted [`storage::Storage`]; aliases,
//! views and DLPack exports each hold a reference, and the memory (or the foreign release
//! callback, or the producer's DLPack deleter) goes exactly once, with the last reference.

pub use dlpark;

pub mod abi;
pub mod alloc;
pub mod cast;
pub mod copy;
pub mod cuda;
pub mod device;
pub mod dlpack;
pub mod dtype;
pub mod error;
pub mod ffi;
pub mod host_memory;
pub mod layout;
pub mod storage;
pub mod tensor;
pub mod transfer;

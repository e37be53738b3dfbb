//! DLPack export and import: the only module that builds or takes apart managed tensors.
//!
//! Export: one heap block per export holds the managed struct, its shape and strides and one
//! reference to the storage; the deleter frees that block (and with it the reference) exactly
//! once, on any thread. Exports carry `byte_offset == 0` (the offset is folded into `data`, since
//! PyTorch up to 2.9 and TensorFlow ignore it) and non-NULL strides when `ndim > 0`.
//!
//! Import: ownership is taken first (dlpark's `Managed`, whose `Drop` runs the producer's
//! deleter), then every field is validated before anything is trusted; a refusal drops the
//! `Managed`, so the deleter has run by the time the caller sees the error. Our own exports are
//! recognised by their deleter and re-imported onto the storage they already reference, so a
//! round trip adds no allocation.

use std::sync::Arc;

use dlpark::{Managed, ManagedTensorBase};

use crate::abi::{
    DLManagedTensor, DLManagedTensorVersioned, DLPACK_MAJOR, DLPACK_MINOR, DLPackVersion, DLTensor,
    DlpackFlags, FLAG_IS_COPIED, FLAG_READ_ONLY,
};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::{MAX_NDIM, check_ndim};
use crate::storage::{Owner, Storage};
use crate::tensor::Tensor;

type DeleterV = unsafe extern "C" fn(*mut DLManagedTensorVersioned);
type DeleterL = unsafe extern "C" fn(*mut DLManagedTensor);

// Our exports are recognised by their deleter. Rust gives no promise that one function has one
// address (Miri deliberately hands out several), so every export installs the pointer value stored
// in these statics and recognition compares against the same values. No other library's
// function can have that address, so a match is always one of ours.
static OUR_DELETER_V: DeleterV = delete_versioned;
static OUR_DELETER_L: DeleterL = delete_legacy;

/// The two managed-tensor structs, seen the same way by export and import.
pub trait ManagedKind: ManagedTensorBase + Sized + 'static {
    /// Builds the struct for one of our exports, with our deleter.
    fn ours(tensor: DLTensor, flags: u64) -> Self;
    /// Whether this struct was made by `ours` (its deleter is ours).
    fn is_ours(&self) -> bool;
    /// Whether NULL strides are refused (versioned producers from DLPack 1.2 on).
    fn requires_strides(&self) -> bool;
    /// Whether the producer marked the data read-only.
    fn read_only(&self) -> bool;
}

impl ManagedKind for DLManagedTensorVersioned {
    fn ours(dl_tensor: DLTensor, flags: u64) -> Self {
        DLManagedTensorVersioned {
            version: DLPackVersion { major: DLPACK_MAJOR, minor: DLPACK_MINOR },
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(OUR_DELETER_V),
            flags: DlpackFlags::from_bits_retain(flags),
            dl_tensor,
        }
    }
    fn is_ours(&self) -> bool {
        self.deleter.is_some_and(|d| std::ptr::fn_addr_eq(d, OUR_DELETER_V))
    }
    fn requires_strides(&self) -> bool {
        self.version.minor >= 2
    }
    fn read_only(&self) -> bool {
        self.flags.bits() & FLAG_READ_ONLY != 0
    }
}

impl ManagedKind for DLManagedTensor {
    fn ours(dl_tensor: DLTensor, _flags: u64) -> Self {
        DLManagedTensor { dl_tensor, manager_ctx: std::ptr::null_mut(), deleter: Some(OUR_DELETER_L) }
    }
    fn is_ours(&self) -> bool {
        self.deleter.is_some_and(|d| std::ptr::fn_addr_eq(d, OUR_DELETER_L))
    }
    fn requires_strides(&self) -> bool {
        false
    }
    fn read_only(&self) -> bool {
        false
    }
}

/// One export: the managed struct first (so a pointer to it is a pointer to the whole block),
/// then what it points at and keeps alive.
#[repr(C)]
struct Export<M> {
    managed: M,
    /// shape in `[..ndim]`, strides in `[MAX_NDIM..MAX_NDIM + ndim]`.
    dims: [i64; 2 * MAX_NDIM],
    storage: Arc<Storage>,
}

unsafe extern "C" fn delete_versioned(mt: *mut DLManagedTensorVersioned) {
    // SAFETY: only ever installed on blocks made by `export`.
    unsafe { free_export(mt) }
}

unsafe extern "C" fn delete_legacy(mt: *mut DLManagedTensor) {
    // SAFETY: only ever installed on blocks made by `export`.
    unsafe { free_export(mt) }
}

/// # Safety
/// `mt` is NULL or a block made by `export::<M>` whose deleter has not run yet.
unsafe fn free_export<M>(mt: *mut M) {
    if mt.is_null() {
        return;
    }
    // A deleter must never unwind into its caller (C, or a Python runtime without the GIL).
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: per the function contract the block came from `Box::into_raw` in `export`.
        drop(unsafe { Box::from_raw(mt.cast::<Export<M>>()) })
    }));
}

/// Exports `t`: shared (`copy == false`, READ_ONLY when `t` is read-only) or a fresh row-major
/// copy (IS_COPIED). The caller owns the returned struct and must call its deleter once.
pub fn export<M: ManagedKind>(t: &Tensor, copy: bool) -> Result<*mut M> {
    let copied;
    let (src, flags) = if copy {
        copied = t.copy()?;
        (&copied, FLAG_IS_COPIED)
    } else {
        (t, if t.is_read_only() { FLAG_READ_ONLY } else { 0 })
    };
    let ndim = src.shape().len();
    let mut block = Box::new(Export {
        managed: M::ours(
            DLTensor {
                // DLPack 1.3 recommends NULL data for zero-element exports.
                data: if src.numel() == 0 { std::ptr::null_mut() } else { src.data_ptr().cast() },
                device: src.device().to_dl(),
                ndim: ndim as i32,
                dtype: src.dtype().to_dl(),
                shape: std::ptr::null_mut(),
                strides: std::ptr::null_mut(),
                byte_offset: 0,
            },
            flags,
        ),
        dims: [0; 2 * MAX_NDIM],
        storage: src.storage().clone(),
    });
    block.dims[..ndim].copy_from_slice(src.shape());
    block.dims[MAX_NDIM..MAX_NDIM + ndim].copy_from_slice(src.strides());
    // The self-references are taken from the raw pointer, after the box is given up, so that
    // they stay valid for as long as the block lives.
    let raw = Box::into_raw(block);
    if ndim > 0 {
        // SAFETY: `raw` is a live, exclusively owned block.
        unsafe {
            let dims = (&raw mut (*raw).dims).cast::<i64>();
            let dl = (*raw).managed.tensor_mut();
            dl.shape = dims;
            dl.strides = dims.wrapping_add(MAX_NDIM);
        }
    }
    Ok(raw.cast::<M>())
}

/// Exports `t` as a legacy managed tensor. The legacy struct cannot say "read-only", so a shared
/// export of read-only data is refused (a copy is always writable).
pub fn export_legacy(t: &Tensor, copy: bool) -> Result<*mut DLManagedTensor> {
    if t.is_read_only() && !copy {
        return Err(Error::read_only(
            "the tensor is read-only and the legacy DLManagedTensor cannot carry a read-only flag; \
             export the versioned struct or a copy",
        ));
    }
    export(t, copy)
}

/// Gives up a managed tensor nobody will import: runs its deleter (if any) once.
///
/// # Safety
/// `mt` is NULL or a managed tensor whose deleter has not run and that nobody uses afterwards.
pub unsafe fn release<M: ManagedKind>(mt: *mut M) {
    // SAFETY: per the function contract; dropping the `Managed` runs the deleter (dlpark also
    // runs it when the major version is foreign).
    drop(unsafe { Managed::from_raw(mt) });
}

/// Imports a managed tensor, zero-copy, taking ownership of it whatever happens.
///
/// # Safety
/// `mt` is NULL or points to a managed tensor whose fields (when the major version matches) the
/// producer keeps valid until its deleter runs, and whose deleter may be called once from any
/// thread.
pub unsafe fn import<M: ManagedKind>(mt: *mut M) -> Result<Tensor> {
    // SAFETY: per the function contract. On a version mismatch dlpark runs the deleter.
    let managed = unsafe { Managed::from_raw(mt) }.map_err(|e| match e {
        dlpark::dlpack::FromRawError::Null => Error::invalid("the managed tensor pointer is NULL"),
        dlpark::dlpack::FromRawError::Version { source } => Error::version(format!(
            "the managed tensor has DLPack major version {}; dlbridge understands version {DLPACK_MAJOR}.x \
             (its deleter has been called)",
            source.actual
        )),
        other => Error::invalid(other.to_string()),
    })?;
    // SAFETY: `managed` owns a non-NULL struct of the right major version.
    let m: &M = unsafe { &*managed.as_ptr() };
    let dl = *m.tensor();
    let ndim = check_ndim(dl.ndim)?;
    let dtype = DType::from_dl(dl.dtype)?;
    let device = Device::from_dl(dl.device)?;
    if ndim > 0 && dl.shape.is_null() {
        return Err(Error::invalid(format!("shape is NULL but ndim is {ndim}")));
    }
    let requires_strides = m.requires_strides();
    if ndim > 0 && dl.strides.is_null() && requires_strides {
        return Err(Error::invalid(
            "strides is NULL, which DLPack 1.2 and later forbid for ndim > 0 (producer claims version 1.2+)",
        ));
    }
    // SAFETY: non-NULL and, per the producer's contract, `ndim` entries long.
    let shape: &[i64] = if ndim == 0 { &[] } else { unsafe { std::slice::from_raw_parts(dl.shape, ndim) } };
    let strides: Option<&[i64]> = if ndim == 0 || dl.strides.is_null() {
        None
    } else {
        // SAFETY: as for shape.
        Some(unsafe { std::slice::from_raw_parts(dl.strides, ndim) })
    };
    let offset =
        usize::try_from(dl.byte_offset).ok().filter(|&o| (dl.data as usize).checked_add(o).is_some());
    let Some(offset) = offset else {
        return Err(Error::invalid(format!("byte_offset {} overflows the data pointer", dl.byte_offset)));
    };
    let first = dl.data.cast::<u8>().wrapping_add(offset);
    let read_only = m.read_only();
    if m.is_ours() {
        // SAFETY: `is_ours` proves the block is an `Export<M>` that is still alive.
        let storage = unsafe { &*managed.as_ptr().cast::<Export<M>>() }.storage.clone();
        if storage.device() != device {
            return Err(Error::invalid("the device of one of our exports was changed"));
        }
        // The export's deleter runs when `managed` drops at the end of this scope.
        return Tensor::on_storage(storage, first, shape, strides, dtype, read_only);
    }
    let owner = Owner::Imported(managed.into_deleter());
    // SAFETY: the producer keeps the memory valid until its deleter runs; the layout is
    // validated against it here before anything reads it.
    unsafe { Tensor::from_borrowed(first, shape, strides, dtype, device, read_only, owner) }.map_err(
        |(e, owner)| {
            drop(owner); // runs the producer's deleter now, as the contract promises
            e
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn export_then_import_round_trips_onto_the_same_storage() {
        let t = Tensor::empty(&[2, 3], DType::F64, Device::CPU, true).unwrap();
        let v = t.view(&[3], Some(&[2]), 1).unwrap();
        let mt = export::<DLManagedTensorVersioned>(&v, false).unwrap();
        unsafe {
            assert_eq!((*mt).dl_tensor.byte_offset, 0);
            assert_eq!((*mt).dl_tensor.data.cast::<u8>(), v.data_ptr());
            assert_eq!(*(*mt).dl_tensor.strides, 2);
        }
        let back = unsafe { import(mt) }.unwrap();
        assert!(back.shares_memory(&t));
        assert_eq!(back.strides(), &[2]);
        // Re-imported onto the very same storage: no new allocation is counted.
        assert!(Arc::ptr_eq(back.storage(), t.storage()));
    }

    #[test]
    fn copied_exports_are_flagged_and_independent() {
        let t = Tensor::empty(&[4], DType::F32, Device::CPU, true).unwrap();
        let mt = export::<DLManagedTensorVersioned>(&t, true).unwrap();
        unsafe {
            assert_eq!((*mt).flags.bits(), FLAG_IS_COPIED);
            assert_ne!((*mt).dl_tensor.data.cast::<u8>(), t.data_ptr());
            ((*mt).deleter.unwrap())(mt);
        }
    }

    #[test]
    fn null_is_refused() {
        let e = unsafe { import::<DLManagedTensor>(std::ptr::null_mut()) }.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }
}

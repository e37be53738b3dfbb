//! DLPack export and import: the only module that builds or takes apart managed tensors.
//!
//! Export: one heap block per export, sized to the tensor's rank, holds the managed struct, one
//! reference to the storage and the shape and strides; the deleter frees that block (and with it
//! the reference) exactly once, on any thread. Exports carry `byte_offset == 0` (the offset is folded into `data`, since
//! PyTorch up to 2.9 and TensorFlow ignore it) and non-NULL strides when `ndim > 0`.
//!
//! Import: ownership is taken first (dlpark's `Managed`, whose `Drop` runs the producer's
//! deleter), then every field is validated before anything is trusted; a refusal drops the
//! `Managed`, so the deleter has run by the time the caller sees the error. Our own exports are
//! recognised by their deleter and taken apart instead: each block keeps the tensor it was made
//! from (one storage reference), and a re-import whose fields are still exactly what the export
//! wrote takes that tensor back unchanged, with nothing to validate. A consumer may have changed
//! the fields (nothing stops it); then they are validated like any foreign tensor's and laid onto
//! the block's storage. Either way the import frees the block itself, so a round trip adds no
//! data allocation and touches the reference count only for the export.

use dlpark::{Managed, ManagedTensorBase};

use crate::abi::{
    DLManagedTensor, DLManagedTensorVersioned, DLPACK_MAJOR, DLPACK_MINOR, DLPackVersion, DLTensor,
    DlpackFlags, FLAG_IS_COPIED, FLAG_READ_ONLY,
};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::check_ndim;
use crate::storage::Owner;
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
///
/// # Safety
/// Implemented for `DLManagedTensorVersioned` and `DLManagedTensor` only: import frees a block
/// as an `Export<Self>` when `is_ours` says so, so `is_ours` must be true only for structs that
/// `ours` made (whose deleter is this crate's).
pub(crate) unsafe trait ManagedKind: ManagedTensorBase + Sized + 'static {
    /// Builds the struct for one of our exports, with our deleter.
    fn ours(tensor: DLTensor, flags: u64) -> Self;
    /// Whether this struct was made by `ours` (its deleter is ours).
    fn is_ours(&self) -> bool;
    /// Whether NULL strides are refused (versioned producers from DLPack 1.2 on).
    fn requires_strides(&self) -> bool;
    /// Whether the producer marked the data read-only.
    fn read_only(&self) -> bool;
}

// SAFETY: `is_ours` compares the deleter with the one `ours` installs, which only this crate has.
unsafe impl ManagedKind for DLManagedTensorVersioned {
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

// SAFETY: as for the versioned struct.
unsafe impl ManagedKind for DLManagedTensor {
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

/// The head of one export block: the managed struct first (so a pointer to it is a pointer to the
/// whole block), then the tensor it was made from, which keeps the storage alive. `2 * ndim`
/// `i64`s follow it in the same allocation: the shape, then the strides, which the managed
/// struct points at (the tensor's own dims are never lent to the consumer, who could write them).
#[repr(C)]
struct Export<M> {
    managed: M,
    tensor: Tensor,
    ndim: usize,
}

impl<M: ManagedKind> Export<M> {
    /// The block for a tensor of `ndim` dimensions, and where its dims start.
    fn layout(ndim: usize) -> (std::alloc::Layout, usize) {
        // The head's size is a multiple of its alignment (8), so the dims follow it directly.
        const { assert!(size_of::<Export<M>>().is_multiple_of(align_of::<i64>()) && align_of::<Export<M>>() >= 8) };
        let dims_at = size_of::<Export<M>>();
        let size = dims_at + 2 * ndim * size_of::<i64>();
        // SAFETY: the alignment is a power of two, and `ndim <= 64` keeps the size a few hundred
        // bytes, far from overflowing `isize`.
        (unsafe { std::alloc::Layout::from_size_align_unchecked(size, align_of::<Export<M>>()) }, dims_at)
    }

    /// Moves the block's tensor out to the caller. The block must then be freed with `dealloc`,
    /// never with the deleter (which would drop the tensor again).
    ///
    /// # Safety
    /// `block` came from `export::<M>`, its deleter has not run, and its tensor has not been
    /// taken yet.
    unsafe fn take_tensor(block: *mut Export<M>) -> Tensor {
        // SAFETY: per the function contract the field is initialised and read (moved) once.
        unsafe { std::ptr::read(&raw const (*block).tensor) }
    }

    /// Whether the managed struct still says exactly what `export` wrote for `tensor`: same
    /// data, device, dtype, flags, dims pointers and dims. Then `tensor` (validated when it was
    /// made) is what the struct describes, and a re-import can take it as it is.
    ///
    /// # Safety
    /// As for `take_tensor`; `tensor` is the block's tensor.
    unsafe fn untouched(block: *mut Export<M>, tensor: &Tensor) -> bool {
        // SAFETY: per the function contract the block is live; its dims are `2 * ndim` i64s.
        let (m, ndim, dims) = unsafe {
            let ndim = (*block).ndim;
            (&(*block).managed, ndim, block.cast::<u8>().add(Export::<M>::layout(ndim).1).cast::<i64>())
        };
        let dl = m.tensor();
        let expected_data = if tensor.numel() == 0 { std::ptr::null_mut() } else { tensor.data_ptr() };
        let (device, dtype) = (tensor.device().to_dl(), tensor.dtype().to_dl());
        let (shape, strides) = if ndim == 0 {
            (std::ptr::null_mut(), std::ptr::null_mut())
        } else {
            (dims, dims.wrapping_add(ndim))
        };
        let fields = dl.data.cast::<u8>() == expected_data
            && dl.device.device_type.0 == device.device_type.0
            && dl.device.device_id == device.device_id
            && dl.ndim as usize == ndim
            && (dl.dtype.code.0, dl.dtype.bits, dl.dtype.lanes) == (dtype.code.0, dtype.bits, dtype.lanes)
            && dl.shape == shape
            && dl.strides == strides
            && dl.byte_offset == 0
            && m.read_only() == tensor.is_read_only();
        // The block's dims against the tensor's, value by value (`==` on slices calls memcmp,
        // which costs more than the handful of values it would compare).
        let same = |ours: *const i64, theirs: &[i64]| {
            // SAFETY: `ours` is `ndim` dims in the block, and `theirs` has `ndim` values (the
            // block was made for this tensor).
            theirs.iter().enumerate().all(|(i, &v)| unsafe { *ours.add(i) } == v)
        };
        fields && same(shape, tensor.shape()) && same(strides, tensor.strides())
    }

    /// Frees the block's memory; its tensor must have been taken.
    ///
    /// # Safety
    /// As for `take_tensor`, after it; nothing uses the block (shape and strides included)
    /// afterwards.
    unsafe fn dealloc(block: *mut Export<M>) {
        // SAFETY: per the function contract; `ndim` is plain data, and the memory is freed with
        // the layout it was allocated with.
        unsafe { std::alloc::dealloc(block.cast(), Export::<M>::layout((*block).ndim).0) }
    }
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
unsafe fn free_export<M: ManagedKind>(mt: *mut M) {
    if mt.is_null() {
        return;
    }
    // A deleter must never unwind into its caller (C, or a Python runtime without the GIL).
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let block = mt.cast::<Export<M>>();
        // SAFETY: per the function contract; dropping the tensor may free the storage.
        unsafe {
            drop(Export::take_tensor(block));
            Export::dealloc(block);
        }
    }));
}

/// Exports `t`: shared (`copy == false`, READ_ONLY when `t` is read-only) or a fresh row-major
/// copy (IS_COPIED). The caller owns the returned struct and must call its deleter once.
pub(crate) fn export<M: ManagedKind>(t: &Tensor, copy: bool) -> Result<*mut M> {
    let copied = if copy { Some(t.copy()?) } else { None };
    let src = copied.as_ref().unwrap_or(t);
    let flags = match (copy, t.is_read_only()) {
        (true, _) => FLAG_IS_COPIED,
        (false, true) => FLAG_READ_ONLY,
        (false, false) => 0,
    };
    let ndim = src.shape().len();
    let (layout, dims_at) = Export::<M>::layout(ndim);
    // SAFETY: the layout has a non-zero size (it holds at least the managed struct).
    let block = unsafe { std::alloc::alloc(layout) };
    if block.is_null() {
        return Err(Error::out_of_memory("allocating the DLPack managed tensor failed"));
    }
    let dims = block.wrapping_add(dims_at).cast::<i64>();
    let (shape, strides) = if ndim == 0 {
        (std::ptr::null_mut(), std::ptr::null_mut())
    } else {
        (dims, dims.wrapping_add(ndim))
    };
    let managed = M::ours(
        DLTensor {
            // DLPack 1.3 recommends NULL data for zero-element exports.
            data: if src.numel() == 0 { std::ptr::null_mut() } else { src.data_ptr().cast() },
            device: src.device().to_dl(),
            ndim: ndim as i32,
            dtype: src.dtype().to_dl(),
            shape,
            strides,
            byte_offset: 0,
        },
        flags,
    );
    let head = block.cast::<Export<M>>();
    // SAFETY: the block is fresh, aligned for `Export<M>` and has room for `2 * ndim` dims at
    // `dims`; the pointers in the managed struct point into the same block, which lives until
    // the deleter (or an import) frees it. The fields are written one by one, the tensor
    // straight into its place (assembling the head first and moving it cost as much again).
    unsafe {
        std::ptr::copy_nonoverlapping(src.shape().as_ptr(), dims, ndim);
        std::ptr::copy_nonoverlapping(src.strides().as_ptr(), dims.wrapping_add(ndim), ndim);
        (&raw mut (*head).managed).write(managed);
        (&raw mut (*head).ndim).write(ndim);
        (&raw mut (*head).tensor).write(copied.unwrap_or_else(|| t.clone()));
    }
    Ok(block.cast::<M>())
}

/// Exports `t` as a legacy managed tensor. The legacy struct cannot say "read-only", so a shared
/// export of read-only data is refused (a copy is always writable).
pub(crate) fn export_legacy(t: &Tensor, copy: bool) -> Result<*mut DLManagedTensor> {
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
pub(crate) unsafe fn release<M: ManagedKind>(mt: *mut M) {
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
pub(crate) unsafe fn import<M: ManagedKind>(mt: *mut M) -> Result<Tensor> {
    // SAFETY: per the function contract. On a version mismatch dlpark runs the deleter.
    let managed = unsafe { Managed::from_raw(mt) }.map_err(|e| match e {
        dlpark::dlpack::FromRawError::Null => Error::invalid("the managed tensor pointer is NULL"),
        dlpark::dlpack::FromRawError::Version { source } => Error::version(format_args!(
            "the managed tensor has DLPack major version {}; dlbridge understands version {DLPACK_MAJOR}.x \
             (its deleter has been called)",
            source.actual
        )),
        other => Error::invalid(format_args!("{other}")),
    })?;
    // SAFETY: `managed` owns a non-NULL struct of the right major version.
    if unsafe { &*managed.as_ptr() }.is_ours() {
        // The block is ours to free: the tensor inside it comes out (no count change), then the
        // block goes, exactly as its deleter would have freed it.
        let block = managed.into_raw().cast::<Export<M>>();
        // SAFETY: `is_ours` proves the block is a live `Export<M>` whose tensor is still there.
        let exported = unsafe { Export::take_tensor(block) };
        // SAFETY: as above; the tensor is the block's.
        let tensor = if unsafe { Export::untouched(block, &exported) } {
            Ok(exported)
        } else {
            // SAFETY: as above; the fields are read (and copied) before the block is freed.
            let m: &M = unsafe { &*block.cast::<M>() };
            Fields::read(m).and_then(|f| {
                if exported.device() != f.device {
                    return Err(Error::invalid("the device of one of our exports was changed"));
                }
                Tensor::on_storage(exported.into_storage(), f.first, f.shape, f.strides, f.dtype, f.read_only)
            })
        };
        // SAFETY: the tensor was taken above, and nothing reads the block any more.
        unsafe { Export::dealloc(block) };
        return tensor;
    }
    // SAFETY: as above.
    let f = Fields::read(unsafe { &*managed.as_ptr() })?;
    let owner = Owner::Imported(managed.into_deleter());
    // SAFETY: the producer keeps the memory valid until its deleter runs; the layout is
    // validated against it here before anything reads it.
    unsafe { Tensor::from_borrowed(f.first, f.shape, f.strides, f.dtype, f.device, f.read_only, owner) }
        .map_err(|(e, owner)| {
            drop(owner); // runs the producer's deleter now, as the contract promises
            e
        })
}

impl Tensor {
    /// Exports the tensor through DLPack's versioned struct, sharing its memory (READ_ONLY when
    /// the tensor is read-only). The export holds one reference to the memory until its deleter
    /// runs: when the returned value is dropped, or by whoever it is handed to as a raw pointer
    /// (`into_raw`), e.g. a `__dlpack__` capsule or a C consumer.
    ///
    /// ```
    /// use dlbridge::Tensor;
    ///
    /// let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0], &[3])?;
    /// let exported = t.to_dlpack()?;
    /// let tensor = exported.validate().unwrap();
    /// assert_eq!(tensor.shape(), &[3]);
    /// // Back again: the very same memory.
    /// let back = Tensor::from_dlpack(exported)?;
    /// assert!(back.shares_memory(&t));
    /// # Ok::<(), dlbridge::Error>(())
    /// ```
    pub fn to_dlpack(&self) -> Result<dlpark::versioned::Dlpack> {
        let raw = export::<DLManagedTensorVersioned>(self, false)?;
        // SAFETY: a fresh export of ours: non-NULL, version 1.3, deleter set.
        Ok(unsafe { Managed::from_raw(raw) }.expect("our exports are non-NULL and of our major version"))
    }

    /// Exports the tensor through the legacy (pre-1.0) struct, sharing its memory. The legacy
    /// struct cannot say "read-only", so a read-only tensor is refused
    /// ([`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly)): export a copy instead.
    pub fn to_dlpack_legacy(&self) -> Result<dlpark::legacy::Dlpack> {
        let raw = export_legacy(self, false)?;
        // SAFETY: as in `to_dlpack`.
        Ok(unsafe { Managed::from_raw(raw) }.expect("our exports are non-NULL"))
    }

    /// Imports a versioned DLPack tensor without copying, taking ownership of it whatever
    /// happens: on success the tensor runs the producer's deleter when its memory goes; on
    /// failure the deleter has already run. Every field is validated first (dtype, device, rank,
    /// strides, byte offset, and that the memory range does not wrap); the READ_ONLY flag is
    /// kept. One of this crate's own exports comes back as the tensor it was made from.
    ///
    /// The producer's memory is then the tensor's, as DLPack's hand-over means: while Rust code
    /// holds a slice of it, the producer must not write it (nor read it, for a mutable slice).
    pub fn from_dlpack(managed: dlpark::versioned::Dlpack) -> Result<Tensor> {
        // SAFETY: `Managed` owns a managed tensor whose fields its producer keeps valid until
        // the deleter runs (the contract of `Managed::from_raw`).
        unsafe { import(managed.into_raw()) }
    }

    /// [`Tensor::from_dlpack`] for the legacy struct (which has no read-only flag).
    pub fn from_dlpack_legacy(managed: dlpark::legacy::Dlpack) -> Result<Tensor> {
        // SAFETY: as in `from_dlpack`.
        unsafe { import(managed.into_raw()) }
    }
}

/// The fields of a managed tensor, each checked on its own (the layout is validated by whoever
/// builds the tensor): a known dtype and device, non-NULL dims where the rank needs them, and a
/// byte offset that does not overflow the data pointer.
struct Fields<'a> {
    first: *mut u8,
    shape: &'a [i64],
    strides: Option<&'a [i64]>,
    dtype: DType,
    device: Device,
    read_only: bool,
}

impl<'a> Fields<'a> {
    fn read<M: ManagedKind>(m: &'a M) -> Result<Fields<'a>> {
        let dl = *m.tensor();
        let ndim = check_ndim(dl.ndim)?;
        let dtype = DType::from_dl(dl.dtype)?;
        let device = Device::from_dl(dl.device)?;
        if ndim > 0 && dl.shape.is_null() {
            return Err(Error::invalid(format_args!("shape is NULL but ndim is {ndim}")));
        }
        if ndim > 0 && dl.strides.is_null() && m.requires_strides() {
            return Err(Error::invalid(
                "strides is NULL, which DLPack 1.2 and later forbid for ndim > 0 (producer claims version 1.2+)",
            ));
        }
        let shape: &[i64] = if ndim == 0 {
            &[]
        } else {
            // SAFETY: non-NULL and, per the producer's contract, `ndim` entries long and valid
            // while the managed tensor is.
            unsafe { std::slice::from_raw_parts(dl.shape, ndim) }
        };
        let strides: Option<&[i64]> = if ndim == 0 || dl.strides.is_null() {
            None
        } else {
            // SAFETY: as for shape.
            Some(unsafe { std::slice::from_raw_parts(dl.strides, ndim) })
        };
        let offset =
            usize::try_from(dl.byte_offset).ok().filter(|&o| (dl.data as usize).checked_add(o).is_some());
        let Some(offset) = offset else {
            return Err(Error::invalid(format_args!(
                "byte_offset {} overflows the data pointer",
                dl.byte_offset
            )));
        };
        let first = dl.data.cast::<u8>().wrapping_add(offset);
        Ok(Fields { first, shape, strides, dtype, device, read_only: m.read_only() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::Shared;
    use crate::error::ErrorKind;

    #[test]
    fn export_then_import_round_trips_onto_the_same_storage() {
        let t = Tensor::empty(&[2, 3], DType::F64, Device::CPU, true).unwrap();
        let v = t.view(&[3], Some(&[2]), 1).unwrap();
        let mt = export::<DLManagedTensorVersioned>(&v, false).unwrap();
        // SAFETY: mt is a live export of ours (its deleter has not run) of a 1-d view, so its
        // strides array holds one value.
        unsafe {
            assert_eq!((*mt).dl_tensor.byte_offset, 0);
            assert_eq!((*mt).dl_tensor.data.cast::<u8>(), v.data_ptr());
            assert_eq!(*(*mt).dl_tensor.strides, 2);
        }
        // SAFETY: mt is a live export of ours whose deleter has not run; import takes it over.
        let back = unsafe { import(mt) }.unwrap();
        assert!(back.shares_memory(&t));
        assert_eq!(back.strides(), &[2]);
        // Re-imported onto the very same storage: no new allocation is counted.
        assert!(Shared::ptr_eq(back.storage(), t.storage()));
    }

    /// Blocks are sized to the rank: 0-d (no dims), 1-d and 64-d exports carry their shape and
    /// strides, and both ways of ending an export (the deleter, or an import that takes the
    /// block over) release exactly the one storage reference it held.
    #[test]
    fn export_blocks_fit_every_rank() {
        let t = Tensor::empty(&[2], DType::F32, Device::CPU, true).unwrap();
        for ndim in [0usize, 1, 64] {
            let shape = vec![1i64; ndim];
            let v = t.view(&shape, None, 1).unwrap();
            let mt = export::<DLManagedTensor>(&v, false).unwrap();
            // SAFETY: mt is a live export of ours; its shape and strides arrays hold ndim values
            // each, and are read only when ndim > 0.
            unsafe {
                assert_eq!((*mt).dl_tensor.ndim as usize, ndim);
                assert_eq!((*mt).dl_tensor.shape.is_null(), ndim == 0);
                if ndim > 0 {
                    assert_eq!(std::slice::from_raw_parts((*mt).dl_tensor.shape, ndim), &shape[..]);
                    assert_eq!(*(*mt).dl_tensor.strides.add(ndim - 1), 1);
                }
            }
            assert_eq!(Shared::count(t.storage()), 3);
            // SAFETY: mt is a live export of ours whose deleter has not run; import takes it over.
            let back = unsafe { import(mt) }.unwrap();
            assert_eq!(back.shape(), &shape[..]);
            assert_eq!(Shared::count(t.storage()), 3);
            drop(back);
            let mt = export::<DLManagedTensorVersioned>(&v, false).unwrap();
            // SAFETY: mt is a fresh export of ours; its deleter runs once, and mt is not used after.
            unsafe { ((*mt).deleter.unwrap())(mt) };
            assert_eq!(Shared::count(t.storage()), 2);
        }
    }

    /// A consumer may write into one of our exports before handing it back. The re-import then
    /// validates the fields like a foreign tensor's, against the block's storage, and never
    /// takes the tensor the export was made from.
    #[test]
    fn reimports_of_changed_exports_are_validated_again() {
        let t = Tensor::empty(&[4, 6], DType::F32, Device::CPU, true).unwrap();
        let v = t.view(&[3, 2], Some(&[6, 2]), 1).unwrap();
        type Edit = fn(&mut DLManagedTensorVersioned);
        /// What is changed, how, and the shape and strides the re-import then has (None: refused).
        type Change = (&'static str, Edit, Option<(&'static [i64], &'static [i64])>);
        let changes: [Change; 8] = [
            ("nothing", |_| {}, Some((&[3, 2], &[6, 2]))),
            // SAFETY: m is always one of our exports of the 2-d view (the loop below passes
            // nothing else), whose shape and strides arrays hold two values each.
            ("a shape value", |m| unsafe { *m.dl_tensor.shape = 2 }, Some((&[2, 2], &[6, 2]))),
            // SAFETY: as above, strides holds two values.
            ("a stride value", |m| unsafe { *m.dl_tensor.strides.add(1) = 1 }, Some((&[3, 2], &[6, 1]))),
            ("the strides, to NULL", |m| m.dl_tensor.strides = std::ptr::null_mut(), None),
            // SAFETY: as above, shape holds two values.
            ("the shape, past the storage", |m| unsafe { *m.dl_tensor.shape = 5 }, None),
            (
                "the data pointer, past the storage",
                |m| m.dl_tensor.data = m.dl_tensor.data.wrapping_add(96),
                None,
            ),
            ("the byte offset", |m| m.dl_tensor.byte_offset = 4, Some((&[3, 2], &[6, 2]))),
            ("the device", |m| m.dl_tensor.device.device_id = 1, None),
        ];
        for (what, edit, expected) in changes {
            let mt = export::<DLManagedTensorVersioned>(&v, false).unwrap();
            // SAFETY: mt is a fresh export of ours, not otherwise referenced while `edit` runs.
            let m = unsafe { &mut *mt };
            edit(m);
            // SAFETY: mt is our own export, its deleter not yet run; the edits leave its shape and
            // strides pointers NULL or on the block's own arrays, and import checks a changed
            // export's fields against the block's storage before building the tensor.
            let back = unsafe { import(mt) };
            match expected {
                Some((shape, strides)) => {
                    let back = back.unwrap_or_else(|e| panic!("{what}: {}", e.message));
                    assert_eq!((back.shape(), back.strides()), (shape, strides), "{what}");
                    assert!(Shared::ptr_eq(back.storage(), t.storage()), "{what}");
                }
                None => assert_eq!(back.unwrap_err().kind, ErrorKind::InvalidArgument, "{what}"),
            }
            assert_eq!(Shared::count(t.storage()), 2, "{what}: the export's reference was not released once");
        }
        // The byte offset moves the first element; the dtype is taken as written, and the
        // read-only flag is honoured.
        let mt = export::<DLManagedTensorVersioned>(&v, false).unwrap();
        // SAFETY: mt is a live export of ours, not otherwise referenced; plain fields are written.
        unsafe {
            (*mt).dl_tensor.byte_offset = 8;
            (*mt).dl_tensor.dtype.code = crate::abi::DLDataTypeCode(crate::dtype::code::INT);
            (*mt).flags = DlpackFlags::from_bits_retain(FLAG_READ_ONLY);
        }
        // SAFETY: mt is our own export, its deleter not yet run; import validates the changed
        // fields against the block's storage.
        let back = unsafe { import(mt) }.unwrap();
        assert_eq!(back.data_ptr(), v.data_ptr().wrapping_add(8));
        assert_eq!(back.dtype().to_dl().code.0, crate::dtype::code::INT);
        assert!(back.is_read_only());
    }

    #[test]
    fn copied_exports_are_flagged_and_independent() {
        let t = Tensor::empty(&[4], DType::F32, Device::CPU, true).unwrap();
        let mt = export::<DLManagedTensorVersioned>(&t, true).unwrap();
        // SAFETY: mt is a live export of ours; its deleter runs once, last, and mt is not used after.
        unsafe {
            assert_eq!((*mt).flags.bits(), FLAG_IS_COPIED);
            assert_ne!((*mt).dl_tensor.data.cast::<u8>(), t.data_ptr());
            ((*mt).deleter.unwrap())(mt);
        }
    }

    #[test]
    fn null_is_refused() {
        // SAFETY: NULL is allowed by import's contract (and refused).
        let e = unsafe { import::<DLManagedTensor>(std::ptr::null_mut()) }.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }
}

//! Tensor: a storage, a strided layout over it, a dtype and a read-only bit. Aliases and views
//! share the storage; copies, casts and device moves make a new one.

use crate::alloc::Shared;
use crate::copy::for_each_row;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::PerAxis;
use crate::layout::{Layout, Span};
use crate::storage::{Owner, Storage};
use crate::transfer;

/// A tensor: memory on a device, a strided layout over it (shape and strides counted in
/// elements, strides may be negative or zero), a dtype and a read-only bit.
///
/// Cloning a tensor is [`Tensor::alias`]: the same memory, one more reference to it. The memory
/// goes with the last tensor, view or DLPack export that references it, on whichever thread
/// that is. Tensors are `Send` and `Sync`; typed access checks the rules that keep Rust's
/// aliasing guarantees (see [`Tensor::as_slice_mut`]).
///
/// ```
/// use dlbridge::{DType, Device, Tensor};
///
/// let t = Tensor::zeros(&[2, 3], DType::F32, Device::CPU)?;
/// assert_eq!((t.shape(), t.strides(), t.numel()), (&[2i64, 3][..], &[3i64, 1][..], 6));
/// // Every second element of row 1, backwards: offsets and strides count elements.
/// let v = t.view(&[2], Some(&[-2]), 5)?;
/// assert!(v.shares_memory(&t));
/// let c = v.copy()?;
/// assert!(!c.shares_memory(&t) && c.is_contiguous());
/// # Ok::<(), dlbridge::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor {
    storage: Shared<Storage>,
    /// The first element (NULL allowed only when the tensor has no elements).
    data: *mut u8,
    layout: Layout,
    dtype: DType,
    read_only: bool,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape())
            .field("strides", &self.strides())
            .field("dtype", &format_args!("{}", self.dtype))
            .field("device", &format_args!("{}", self.device()))
            .field("read_only", &self.read_only)
            .finish()
    }
}

// SAFETY: `data` points into `storage`, which is Send + Sync; the pointer itself is never used to
// mutate anything the Tensor owns.
unsafe impl Send for Tensor {}
// SAFETY: as for Send.
unsafe impl Sync for Tensor {}

impl Tensor {
    /// A new zeroed, row-major, writable tensor on `device`.
    pub fn zeros(shape: &[i64], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::empty(shape, dtype, device, true)
    }

    /// A new uninitialised (or zeroed) row-major tensor on `device`. Only the C API and Python
    /// hand out uninitialised memory; Rust code reads elements only of zeroed or written tensors.
    pub(crate) fn empty(shape: &[i64], dtype: DType, device: Device, zeroed: bool) -> Result<Tensor> {
        let layout = Layout::new(shape, None, dtype.itemsize())?;
        let storage = Storage::allocate(device, layout.numel() * dtype.itemsize(), zeroed)?;
        let data = storage.base();
        Ok(Tensor { storage, data, layout, dtype, read_only: false })
    }

    /// Wraps memory that someone else owns. Everything is validated before the owner is
    /// recorded: when this fails, `owner` is handed back untouched so that the caller decides
    /// what happens to it (the C API must not release lent memory on failure; an import must
    /// run the producer's deleter).
    ///
    /// # Safety
    /// Every element the layout describes from `data` must be valid memory on `device` for as
    /// long as `owner` has not released it.
    pub(crate) unsafe fn from_borrowed(
        data: *mut u8,
        shape: &[i64],
        strides: Option<&[i64]>,
        dtype: DType,
        device: Device,
        read_only: bool,
        owner: Owner,
    ) -> std::result::Result<Tensor, (Error, Owner)> {
        // Two plain matches: built as one `Result` of a tuple, the layout was moved through
        // memory twice more on every import.
        let layout = match Layout::new(shape, strides, dtype.itemsize()) {
            Ok(layout) => layout,
            Err(e) => return Err((e, owner)),
        };
        let (base, len) = match reached_bytes(data, &layout) {
            Ok(range) => range,
            Err(e) => return Err((e, owner)),
        };
        // SAFETY: the caller vouches for the memory; `base`/`len` are exactly what the layout reaches.
        let storage = unsafe { Storage::borrowed(base, len, device, owner) }?;
        Ok(Tensor { storage, data, layout, dtype, read_only })
    }

    /// Puts a layout on an existing storage (the re-import of one of our own exports). The
    /// layout must lie inside the storage.
    pub(crate) fn on_storage(
        storage: Shared<Storage>,
        data: *mut u8,
        shape: &[i64],
        strides: Option<&[i64]>,
        dtype: DType,
        read_only: bool,
    ) -> Result<Tensor> {
        let layout = Layout::new(shape, strides, dtype.itemsize())?;
        // Zero-element exports carry NULL data; such a tensor sits at the start of the storage.
        let data = if data.is_null() && layout.numel() == 0 { storage.base() } else { data };
        let first = offset_in(&storage, data)
            .ok_or_else(|| Error::invalid("the data pointer lies outside the exported memory"))?;
        check_inside(&storage, first, &layout, dtype, 0)?;
        Ok(Tensor { storage, data, layout, dtype, read_only })
    }

    /// The extent of each axis.
    pub fn shape(&self) -> &[i64] {
        self.layout.shape()
    }
    /// The step between neighbours along each axis, in elements.
    pub fn strides(&self) -> &[i64] {
        self.layout.strides()
    }
    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.layout.shape().len()
    }
    /// The number of elements (1 for a 0-d tensor, 0 when any extent is 0).
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Where the memory lives.
    pub fn device(&self) -> Device {
        self.storage.device()
    }
    /// Whether the tensor refuses writes (a producer exported it read-only). Views keep the
    /// bit; copies are always writable.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
    /// Whether the layout is row-major without gaps (extent-1 axes may have any stride).
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }
    pub(crate) fn storage(&self) -> &Shared<Storage> {
        &self.storage
    }
    /// Gives up the tensor, keeping its reference to the storage.
    pub(crate) fn into_storage(self) -> Shared<Storage> {
        self.storage
    }
    /// The address of the first element, on the tensor's device (NULL or dangling when there
    /// are no elements), for handing to C or device code. Reading through it needs the memory
    /// to be host memory; writing needs what [`Tensor::as_slice_mut`] checks, or an agreement
    /// with whoever else uses the memory.
    pub fn data_ptr(&self) -> *mut u8 {
        self.data
    }

    /// The first element, for writing; refused on read-only tensors.
    pub(crate) fn data_mut(&self) -> Result<*mut u8> {
        if self.read_only {
            return Err(Error::read_only("the tensor is read-only; it cannot hand out a writable pointer"));
        }
        Ok(self.data)
    }

    /// The same memory, layout and dtype through a new tensor (the same as `clone`).
    pub fn alias(&self) -> Tensor {
        self.clone()
    }

    /// A strided view of the same memory: `shape`, `strides` (None: row-major) and `offset`
    /// count elements, the offset from this tensor's first element. Any view that stays inside
    /// the memory is allowed (transposes, negative and zero strides, the whole storage from a
    /// view of part of it); one that reaches outside is refused, naming the element.
    pub fn view(&self, shape: &[i64], strides: Option<&[i64]>, offset: i64) -> Result<Tensor> {
        let layout = Layout::new(shape, strides, self.dtype.itemsize())?;
        let first = offset_in(&self.storage, self.data).expect("a tensor's data lies in its storage");
        let shift = i128::from(offset) * self.dtype.itemsize() as i128;
        let new_first = check_inside(&self.storage, first, &layout, self.dtype, shift).map_err(|e| {
            Error::invalid(format_args!(
                "{} (view offset {offset}, shape {shape:?}, strides {:?})",
                e.message,
                layout.strides()
            ))
        })?;
        let data = self.storage.base().wrapping_add(new_first);
        Ok(Tensor {
            storage: self.storage.clone(),
            data,
            layout,
            dtype: self.dtype,
            read_only: self.read_only,
        })
    }

    /// A row-major, writable, independent copy on the same device.
    pub fn copy(&self) -> Result<Tensor> {
        self.copy_to(self.device())
    }

    /// A row-major, writable copy on `device` (always new memory).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        self.copy_to(device)
    }

    fn copy_to(&self, device: Device) -> Result<Tensor> {
        self.device().ensure_runtime()?;
        let layout = Layout::new(self.shape(), None, self.dtype.itemsize())?;
        // SAFETY: this tensor's layout was validated against its storage, which lives on
        // `self.device()` and outlives the call.
        let storage =
            unsafe { transfer::copy(self.data, &self.layout, self.dtype.itemsize(), self.device(), device) }?;
        let data = storage.base();
        Ok(Tensor { storage, data, layout, dtype: self.dtype, read_only: false })
    }

    /// A converting copy (row-major, writable) on the same device (through host memory for
    /// CUDA), between bool, the integers, float16, bfloat16, float32, float64 and the complex
    /// types: integers narrow by wrapping, floats become integers by truncating toward zero
    /// (saturating, NaN to 0), anything becomes bool as `!= 0`, and half floats round to
    /// nearest even. Casting complex to real is refused rather than dropping the imaginary part.
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype {
            return self.copy();
        }
        let castable = "casts convert between bool, int8..int64, uint8..uint64, float16, bfloat16, \
                        float32, float64, complex64 and complex128";
        let from = self
            .dtype
            .scalar()
            .ok_or_else(|| Error::unsupported(format_args!("cannot cast from {}: {castable}", self.dtype)))?;
        let to = dtype
            .scalar()
            .ok_or_else(|| Error::unsupported(format_args!("cannot cast to {}: {castable}", dtype)))?;
        if from.is_complex() && !to.is_complex() {
            return Err(Error::unsupported(format_args!(
                "casting {} to {} would drop the imaginary part; take the real part explicitly",
                from.name(),
                to.name()
            )));
        }
        if !self.device().is_host_accessible() {
            // dlbridge has no device kernels: a CUDA tensor is cast on the host, between two
            // transfers.
            return self.to_device(Device::CPU)?.cast(dtype)?.to_device(self.device());
        }
        let out = Tensor::empty(self.shape(), dtype, self.device(), false)?;
        if out.numel() == 0 {
            return Ok(out);
        }
        let widest = self.dtype.itemsize().max(dtype.itemsize());
        if self.small_host_run(self.device(), widest).is_some() {
            // The small-tensor path: both sides are row-major runs, so one conversion loop
            // over every element does the whole cast.
            let (src, dst) = (self.dtype.itemsize() as isize, dtype.itemsize() as isize);
            // SAFETY: the source is `numel` contiguous elements of host memory inside its
            // validated storage; `out` is a new row-major host tensor of as many elements.
            unsafe { crate::cast::convert_row(from, to, self.data, src, out.data, dst, out.numel()) };
            return Ok(out);
        }
        let (shape, src_strides, dst_strides) = self.byte_layouts(&out);
        // SAFETY: the source layout was validated against its storage; the destination is a new
        // row-major allocation of the same shape.
        unsafe {
            for_each_row(self.data, &src_strides, out.data, &dst_strides, &shape, |s, d, n, ss, ds| {
                crate::cast::convert_row(from, to, s, ss, d, ds, n)
            })
        };
        Ok(out)
    }

    /// For a small contiguous tensor in host memory, cast into new memory on a host `device`: the
    /// bytes a run of its elements takes at `itemsize` bytes each (at most
    /// `transfer::SMALL_COPY_BYTES`, the bound under which copies skip the planner too). Such
    /// casts are one conversion loop.
    fn small_host_run(&self, device: Device, itemsize: usize) -> Option<usize> {
        let bytes = self.numel().checked_mul(itemsize)?;
        (bytes <= transfer::SMALL_COPY_BYTES
            && self.device().is_host_accessible()
            && device.is_host_accessible()
            && self.layout.is_contiguous())
        .then_some(bytes)
    }

    /// The shape and the byte strides of `self` and of `out` (a tensor of the same shape), as
    /// the copy kernel takes them, for tensors with elements. An extent-1 axis reaches nothing,
    /// so its stride may be anything (i64::MAX included): it becomes 0 here. Every other stride
    /// times the item size fits, because the layout's validated span contains it.
    fn byte_layouts(&self, out: &Tensor) -> (PerAxis<usize>, PerAxis<isize>, PerAxis<isize>) {
        debug_assert!(self.numel() > 0);
        let bytes = |t: &Tensor| {
            let size = t.dtype.itemsize() as isize;
            t.shape()
                .iter()
                .zip(t.strides())
                .map(|(&n, &s)| if n == 1 { 0 } else { s as isize * size })
                .collect()
        };
        (self.shape().iter().map(|&n| n as usize).collect(), bytes(self), bytes(out))
    }

    /// Whether the byte ranges the two tensors reach overlap, on the same device (a
    /// conservative answer for interleaved strided views, as NumPy's `may_share_memory`).
    pub fn shares_memory(&self, other: &Tensor) -> bool {
        if self.device() != other.device() {
            return false;
        }
        match (self.address_range(), other.address_range()) {
            (Some((a0, a1)), Some((b0, b1))) => a0 < b1 && b0 < a1,
            _ => false,
        }
    }

    fn address_range(&self) -> Option<(usize, usize)> {
        let Span { lo, hi } = self.layout.span()?;
        let first = self.data as usize;
        Some((first.wrapping_add_signed(lo), first.wrapping_add_signed(hi)))
    }
}

/// The memory a foreign layout reaches from `data`: `(lowest byte, byte count)`. Fails on NULL
/// data with elements, and on ranges that would wrap around the address space.
fn reached_bytes(data: *mut u8, layout: &Layout) -> Result<(*mut u8, usize)> {
    let Some(span) = layout.span() else {
        return Ok((data, 0));
    };
    if data.is_null() {
        return Err(Error::invalid(format_args!(
            "data is NULL but the tensor has {} element(s)",
            layout.numel()
        )));
    }
    let addr = data as usize;
    match (addr.checked_add_signed(span.lo), addr.checked_add_signed(span.hi)) {
        (Some(_), Some(_)) => Ok((data.wrapping_offset(span.lo), (span.hi - span.lo) as usize)),
        _ => Err(Error::invalid(format_args!(
            "the tensor reaches bytes {}..{} around its data pointer, which wraps around the address space",
            span.lo, span.hi
        ))),
    }
}

/// The byte offset of `data` from the storage's base, if it lies within `[0, len]`.
fn offset_in(storage: &Storage, data: *mut u8) -> Option<usize> {
    let off = (data as usize).checked_sub(storage.base() as usize)?;
    (off <= storage.byte_len()).then_some(off)
}

/// Checks that `layout`, starting `shift` bytes after the byte offset `first`, stays inside the
/// storage; returns the new first element's byte offset.
fn check_inside(
    storage: &Storage,
    first: usize,
    layout: &Layout,
    dtype: DType,
    shift: i128,
) -> Result<usize> {
    let size = dtype.itemsize() as i128;
    let len = storage.byte_len() as i128;
    let start = first as i128 + shift;
    let (lo, hi) = match layout.span() {
        Some(span) => (start + span.lo as i128, start + span.hi as i128),
        // A view without elements reaches nothing, but its pointer must still lie in the storage.
        None => (start, start),
    };
    if lo < 0 || hi > len {
        let element = if lo < 0 { lo.div_euclid(size) } else { (hi - 1).div_euclid(size) };
        return Err(Error::invalid(format_args!(
            "view element {element} lies outside the {} elements of its storage",
            len / size
        )));
    }
    Ok(start as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Scalar;
    use crate::error::ErrorKind;

    fn arange_f32(n: i64) -> Tensor {
        let t = Tensor::empty(&[n], DType::F32, Device::CPU, false).unwrap();
        let p = t.data_mut().unwrap().cast::<f32>();
        for i in 0..n as usize {
            // SAFETY: t is a fresh, writable, host tensor of n f32s (aligned) and i < n.
            unsafe { *p.add(i) = i as f32 };
        }
        t
    }

    fn values_f32(t: &Tensor) -> Vec<f32> {
        let c = t.copy().unwrap();
        // SAFETY: c is a fresh row-major host copy of numel f32s, all written by the copy (the
        // callers pass views of `arange_f32`'s fully written tensors, never empty ones).
        unsafe { std::slice::from_raw_parts(c.data_ptr().cast::<f32>(), c.numel()) }.to_vec()
    }

    #[test]
    fn views_share_and_copies_do_not() {
        let t = arange_f32(6);
        let m = t.view(&[2, 3], None, 0).unwrap();
        let tr = m.view(&[3, 2], Some(&[1, 3]), 0).unwrap();
        assert_eq!(values_f32(&tr), [0., 3., 1., 4., 2., 5.]);
        assert!(tr.shares_memory(&t));
        let rev = t.view(&[6], Some(&[-1]), 5).unwrap();
        assert_eq!(values_f32(&rev), [5., 4., 3., 2., 1., 0.]);
        let c = tr.copy().unwrap();
        assert!(c.is_contiguous() && !c.shares_memory(&t));
    }

    #[test]
    fn views_out_of_bounds_are_refused_with_the_element() {
        let t = arange_f32(6);
        let e = t.view(&[2, 2], None, 4).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.starts_with("view element 7 lies outside the 6 elements of its storage"),
            "{}",
            e.message
        );
        let e = t.view(&[2], Some(&[-1]), 0).unwrap_err();
        assert!(e.message.contains("view element -1"), "{}", e.message);
        // A view of a view is bounded by the storage, not by the parent view.
        let tail = t.view(&[2], None, 4).unwrap();
        assert!(tail.view(&[6], None, -4).is_ok());
        assert!(tail.view(&[0], None, 2).is_ok());
        assert!(tail.view(&[0], None, 3).is_err());
    }

    #[test]
    fn casts_convert_and_refuse_complex_to_real() {
        let t = arange_f32(4).view(&[2, 2], Some(&[1, 2]), 0).unwrap();
        let d = t.cast(Scalar::F64.dtype()).unwrap();
        // SAFETY: d is a fresh row-major host tensor of 4 f64s, all written by the cast.
        let v = unsafe { std::slice::from_raw_parts(d.data_ptr().cast::<f64>(), 4) };
        assert_eq!(v, [0., 2., 1., 3.]);
        let c = t.cast(Scalar::C64.dtype()).unwrap();
        assert_eq!(c.cast(Scalar::F32.dtype()).unwrap_err().kind, ErrorKind::Unsupported);
        let zero_d = Tensor::empty(&[], DType::F64, Device::CPU, true).unwrap();
        assert_eq!(zero_d.cast(Scalar::I8.dtype()).unwrap().numel(), 1);
    }

    #[test]
    fn small_contiguous_copies_and_casts_take_the_direct_path_and_match() {
        // A contiguous run in the middle of its storage, with extent-1 axes of any stride: the
        // direct path must start at the view's first element and copy exactly its elements.
        let t = arange_f32(10);
        let v = t.view(&[1, 2, 1, 3], Some(&[i64::MAX, 3, -7, 1]), 2).unwrap();
        assert!(v.is_contiguous() && v.small_host_run(Device::CPU, 4) == Some(24));
        let c = v.copy().unwrap();
        assert_eq!((c.shape(), c.strides()), (&[1i64, 2, 1, 3][..], &[6i64, 3, 3, 1][..]));
        assert_eq!(values_f32(&c), [2., 3., 4., 5., 6., 7.]);
        assert!(!c.shares_memory(&t));
        let d = v.cast(Scalar::F64.dtype()).unwrap();
        // SAFETY: d is a fresh row-major host tensor of 6 f64s, all written by the cast.
        let got = unsafe { std::slice::from_raw_parts(d.data_ptr().cast::<f64>(), 6) };
        assert_eq!(got, [2., 3., 4., 5., 6., 7.]);
        let i = v.cast(Scalar::I16.dtype()).unwrap().cast(Scalar::F32.dtype()).unwrap();
        assert_eq!(values_f32(&i), [2., 3., 4., 5., 6., 7.]);
        // Strided and large tensors take the general planner, with the same results.
        assert_eq!(t.view(&[3], Some(&[3]), 0).unwrap().small_host_run(Device::CPU, 4), None);
        let n = transfer::SMALL_COPY_BYTES / 4 + 1;
        let big = arange_f32(n as i64);
        assert_eq!(big.small_host_run(Device::CPU, 4), None);
        assert_eq!(values_f32(&big)[n - 3..], [(n - 3) as f32, (n - 2) as f32, (n - 1) as f32]);
        // No elements: nothing to copy, nothing read.
        let z = Tensor::empty(&[0, 4], DType::F32, Device::CPU, false).unwrap();
        assert_eq!((z.copy().unwrap().numel(), z.cast(DType::F64).unwrap().numel()), (0, 0));
    }

    #[test]
    fn casts_of_degenerate_layouts_do_not_overflow() {
        // An extent-1 axis may have any stride, and a zero-element shape any extents: neither may
        // overflow when turned into byte strides.
        let t = Tensor::empty(&[4], DType::F32, Device::CPU, true).unwrap();
        let v = t.view(&[1], Some(&[i64::MAX]), 0).unwrap();
        assert_eq!(v.cast(DType::F64).unwrap().shape(), &[1]);
        let z = Tensor::empty(&[2, i64::MAX, 0], DType::F32, Device::CPU, false).unwrap();
        assert_eq!(z.cast(DType::F64).unwrap().numel(), 0);
    }

    #[test]
    fn read_only_refuses_writes() {
        let mut t = arange_f32(3);
        t.read_only = true;
        assert_eq!(t.data_mut().unwrap_err().kind, ErrorKind::ReadOnly);
        assert!(t.view(&[1], None, 0).unwrap().is_read_only());
        assert!(!t.copy().unwrap().is_read_only());
    }
}

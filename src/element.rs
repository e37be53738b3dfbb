//! Typed access to a tensor's elements from Rust: which Rust types stand for which dtypes,
//! tensors made from Rust buffers, and the checks that make a slice of tensor memory sound.
//!
//! A shared slice needs host memory, the element type of the dtype, a row-major layout and an
//! aligned first element. A mutable one needs more: a writable tensor that holds the only
//! reference to its memory (no alias, view or DLPack export of it is alive), so that nothing
//! else can read or write the elements while the slice lives. Memory imported through DLPack
//! counts as the tensor's own, as DLPack's hand-over means.

use std::ffi::c_void;
use std::ptr::NonNull;

use crate::alloc::{Shared, try_box};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::Owner;
use crate::tensor::Tensor;

mod sealed {
    pub trait Sealed {}
}

/// A Rust type whose values are exactly the elements of one dtype: the integer and floating
/// point types. `bool` is not one (a byte of a foreign bool tensor may hold any value, which a
/// Rust `bool` must not), nor are half floats and complex numbers, which have no type in std.
///
/// The trait is sealed: the crate's checks rely on its implementations.
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The dtype whose elements are values of this type.
    const DTYPE: DType;
}

macro_rules! elements {
    ($($t:ty => $dtype:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
        }
    )*};
}

elements!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64,
          f32 => F32, f64 => F64);

/// Drops the `Vec<T>` a tensor took over: the release callback of its storage.
///
/// # Safety
/// `ctx` is a `Box<Vec<T>>` leaked by `Tensor::from_rust_buffer`, released once.
unsafe extern "C" fn release_vec<T>(ctx: *mut c_void) {
    // SAFETY: per the function contract.
    drop(unsafe { Box::from_raw(ctx.cast::<Vec<T>>()) });
}

impl Tensor {
    /// A new CPU tensor holding a copy of `data`, row-major in `shape`.
    ///
    /// ```
    /// use dlbridge::{DType, Tensor};
    ///
    /// let t = Tensor::from_slice(&[1u16, 2, 3, 4], &[2, 2])?;
    /// assert_eq!((t.shape(), t.dtype()), (&[2i64, 2][..], DType::U16));
    /// assert!(Tensor::from_slice(&[1u16, 2, 3], &[2, 2]).is_err());
    /// # Ok::<(), dlbridge::Error>(())
    /// ```
    pub fn from_slice<T: Element>(data: &[T], shape: &[i64]) -> Result<Tensor> {
        let t = Tensor::empty(shape, T::DTYPE, Device::CPU, false)?;
        check_length(&t, data.len())?;
        // SAFETY: the new tensor holds `data.len()` elements of `T` (checked above), row-major.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), t.data_ptr().cast::<T>(), data.len()) };
        Ok(t)
    }

    /// A CPU tensor over `data`'s own buffer, row-major in `shape` (no copy). The tensor owns the
    /// `Vec` and frees it with its last reference.
    ///
    /// ```
    /// use dlbridge::Tensor;
    ///
    /// let v = vec![0.5f64; 6];
    /// let first = v.as_ptr();
    /// let t = Tensor::from_vec(v, &[3, 2])?;
    /// assert_eq!(t.data_ptr().cast_const(), first.cast::<u8>());
    /// # Ok::<(), dlbridge::Error>(())
    /// ```
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[i64]) -> Result<Tensor> {
        let (len, first) = (data.len(), data.as_ptr().cast_mut());
        let t = Tensor::from_rust_buffer(data, first, shape, None)?;
        check_length(&t, len)?;
        Ok(t)
    }

    /// Takes over a Rust buffer: a tensor of `T` from `first` (inside `buffer`) with the given
    /// layout, which owns `buffer` from now on.
    ///
    /// The layout must only reach elements of `buffer` from `first`; callers guarantee that (a
    /// row-major layout of `buffer.len()` elements from its start, or an `ndarray::Array`'s own
    /// layout). When this fails, `buffer` is freed.
    pub(crate) fn from_rust_buffer<T: Element>(
        buffer: Vec<T>,
        first: *mut T,
        shape: &[i64],
        strides: Option<&[i64]>,
    ) -> Result<Tensor> {
        let ctx =
            try_box(buffer).map_err(|_| Error::out_of_memory("allocating a tensor's owner record failed"))?;
        let ctx = Box::into_raw(ctx).cast::<c_void>();
        let owner = Owner::Foreign { release: Some(release_vec::<T>), ctx };
        // SAFETY: the elements lie in the boxed Vec, which the storage owns and frees with its
        // last reference (through `release_vec`).
        unsafe { Tensor::from_borrowed(first.cast(), shape, strides, T::DTYPE, Device::CPU, false, owner) }
            .map_err(|(e, _)| {
                // SAFETY: the storage was not made, so the Vec is still ours to free, once.
                unsafe { release_vec::<T>(ctx) };
                e
            })
    }

    /// The elements as a slice, in row-major order, without copying. Needs host memory
    /// ([`Device::is_host_accessible`]), `T` matching the dtype, a row-major layout
    /// ([`Tensor::is_contiguous`]) and an aligned first element; otherwise an error says which
    /// is missing ([`Tensor::to_vec`] copies from any tensor).
    ///
    /// ```
    /// use dlbridge::{ErrorKind, Tensor};
    ///
    /// let t = Tensor::from_vec(vec![1i32, 2, 3, 4, 5, 6], &[2, 3])?;
    /// assert_eq!(t.as_slice::<i32>()?, &[1, 2, 3, 4, 5, 6]);
    /// assert_eq!(t.as_slice::<f32>().unwrap_err().kind(), ErrorKind::InvalidArgument);
    /// // A transposed view is not row-major: no slice, but a copy.
    /// let tr = t.view(&[3, 2], Some(&[1, 3]), 0)?;
    /// assert!(tr.as_slice::<i32>().is_err());
    /// assert_eq!(tr.to_vec::<i32>()?, [1, 4, 2, 5, 3, 6]);
    /// # Ok::<(), dlbridge::Error>(())
    /// ```
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.check_elements::<T>()?;
        self.check_row_major()?;
        // SAFETY: `numel` elements of `T`, row-major from the aligned first element, in host
        // memory the storage keeps alive while `self` is borrowed. Mutable access to the same
        // memory needs the only reference to the storage and `&mut` of its tensor, which cannot
        // exist while this borrow does.
        Ok(unsafe { std::slice::from_raw_parts(self.first::<T>().as_ptr(), self.numel()) })
    }

    /// The elements as a mutable slice, in row-major order, without copying. Needs what
    /// [`Tensor::as_slice`] needs, a writable tensor, and the only reference to its memory:
    /// while an alias, a view or a DLPack export of it is alive, the error is
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly).
    ///
    /// ```
    /// use dlbridge::{DType, Device, Tensor};
    ///
    /// let mut t = Tensor::zeros(&[4], DType::F32, Device::CPU)?;
    /// t.as_slice_mut::<f32>()?[2] = 7.0;
    /// let alias = t.alias();
    /// assert!(t.as_slice_mut::<f32>().is_err());
    /// drop(alias);
    /// t.as_slice_mut::<f32>()?[3] = 8.0;
    /// assert_eq!(t.as_slice::<f32>()?, &[0., 0., 7., 8.]);
    /// # Ok::<(), dlbridge::Error>(())
    /// ```
    pub fn as_slice_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        self.check_elements::<T>()?;
        self.check_row_major()?;
        self.check_exclusive()?;
        // SAFETY: as in `as_slice`; in addition this tensor holds the only reference to its
        // storage and is borrowed mutably, so no other tensor, view or export reaches the memory
        // while the slice lives, and the memory is writable.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.first::<T>().as_ptr(), self.numel()) })
    }

    /// A copy of the elements in row-major order, from any layout and any device (CUDA memory
    /// is copied to the host first). Needs `T` to match the dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        check_dtype::<T>(self)?;
        if let Ok(elements) = self.as_slice::<T>() {
            return Ok(elements.to_vec());
        }
        // Device memory, a strided layout or a misaligned first element: through a row-major
        // host copy, which is aligned.
        Ok(self.to_device(Device::CPU)?.as_slice::<T>()?.to_vec())
    }

    /// Checks that the elements are host memory holding values of `T`, aligned for it.
    pub(crate) fn check_elements<T: Element>(&self) -> Result<()> {
        check_dtype::<T>(self)?;
        if !self.device().is_host_accessible() {
            return Err(Error::unsupported(format_args!(
                "the tensor is on {}; its elements are reachable from the host only through a copy (to_device or to_vec)",
                self.device()
            )));
        }
        if self.numel() > 0 && !(self.data_ptr() as usize).is_multiple_of(align_of::<T>()) {
            return Err(Error::unsupported(format_args!(
                "the first element is at {:p}, which is not aligned for {}; copy the tensor first",
                self.data_ptr(),
                self.dtype()
            )));
        }
        Ok(())
    }

    fn check_row_major(&self) -> Result<()> {
        if !self.is_contiguous() {
            return Err(Error::invalid(format_args!(
                "the tensor is not row-major (shape {:?}, strides {:?}); copy it first, or use to_vec",
                self.shape(),
                self.strides()
            )));
        }
        Ok(())
    }

    /// Checks that writing is allowed and that nothing else reaches the memory.
    pub(crate) fn check_exclusive(&self) -> Result<()> {
        if self.is_read_only() {
            return Err(Error::read_only("the tensor is read-only"));
        }
        let references = Shared::count(self.storage());
        if references != 1 {
            return Err(Error::read_only(format_args!(
                "the tensor's memory is shared ({} other alias(es), view(s) or DLPack export(s) hold it); \
                 mutable access needs the only reference: drop them or copy the tensor",
                references - 1
            )));
        }
        Ok(())
    }

    /// The first element as a `T` pointer: dangling (but aligned) when there are none.
    pub(crate) fn first<T>(&self) -> NonNull<T> {
        NonNull::new(self.data_ptr().cast::<T>()).filter(|_| self.numel() > 0).unwrap_or(NonNull::dangling())
    }
}

fn check_dtype<T: Element>(t: &Tensor) -> Result<()> {
    if t.dtype() != T::DTYPE {
        return Err(Error::invalid(format_args!(
            "the tensor holds {} elements, not {} ({})",
            t.dtype(),
            T::DTYPE,
            std::any::type_name::<T>()
        )));
    }
    Ok(())
}

fn check_length(t: &Tensor, len: usize) -> Result<()> {
    if t.numel() != len {
        return Err(Error::invalid(format_args!(
            "the shape {:?} holds {} elements but the data has {len}",
            t.shape(),
            t.numel()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn vecs_are_taken_over_and_freed_once() {
        let before = crate::storage::live_allocations_on_this_thread();
        let t = Tensor::from_vec(vec![1u64, 2, 3], &[3]).unwrap();
        let v = t.view(&[2], Some(&[-1]), 2).unwrap();
        drop(t);
        assert_eq!(v.to_vec::<u64>().unwrap(), [3, 2]);
        drop(v);
        assert_eq!(crate::storage::live_allocations_on_this_thread(), before);
        // A refused shape frees the Vec at once (Miri would report a leak otherwise).
        assert_eq!(Tensor::from_vec(vec![1u8; 5], &[2, 2]).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert!(Tensor::from_vec(vec![1u8; 5], &[-5]).is_err());
        assert_eq!(Tensor::from_vec(Vec::<f32>::new(), &[0, 3]).unwrap().as_slice::<f32>().unwrap(), &[]);
    }

    #[test]
    fn mutable_slices_need_the_only_writable_reference() {
        let mut t = Tensor::from_slice(&[1i16, 2, 3], &[3]).unwrap();
        t.as_slice_mut::<i16>().unwrap()[0] = 9;
        let export = t.to_dlpack().unwrap();
        assert_eq!(t.as_slice_mut::<i16>().unwrap_err().kind(), ErrorKind::ReadOnly);
        drop(export);
        assert_eq!(t.as_slice::<i16>().unwrap(), &[9, 2, 3]);
        let mut back = Tensor::from_dlpack(t.to_dlpack().unwrap()).unwrap();
        assert!(back.as_slice_mut::<i16>().is_err());
        drop(t);
        assert!(back.as_slice_mut::<i16>().is_ok());
        // A producer's READ_ONLY flag is honoured.
        let raw = back.to_dlpack().unwrap().into_raw();
        // SAFETY: a live export of ours, flagged before anyone imports it.
        unsafe { (*raw).flags = dlpark::DlpackFlags::READ_ONLY };
        drop(back);
        // SAFETY: the pointer came from `into_raw` above and is handed over once.
        let mut ro =
            Tensor::from_dlpack(unsafe { dlpark::versioned::Dlpack::from_raw(raw) }.unwrap()).unwrap();
        assert!(ro.is_read_only());
        assert_eq!(ro.as_slice_mut::<i16>().unwrap_err().kind(), ErrorKind::ReadOnly);
    }

    #[test]
    fn misaligned_and_foreign_memory_is_refused() {
        let t = Tensor::from_slice(&[0u8; 9], &[9]).unwrap();
        let bytes = t.view(&[4], None, 1).unwrap();
        let dl = bytes.to_dlpack().unwrap();
        drop(bytes);
        // Reinterpret the misaligned bytes as one float32 through DLPack.
        let raw = dl.into_raw();
        // SAFETY: a live export of ours; its dims are writable and the dtype stays 4 bytes wide.
        unsafe {
            (*raw).dl_tensor.dtype = DType::F32.to_dl();
            *(*raw).dl_tensor.shape = 1;
        }
        // SAFETY: the pointer came from `into_raw` above and is handed back once.
        let f = Tensor::from_dlpack(unsafe { dlpark::versioned::Dlpack::from_raw(raw) }.unwrap()).unwrap();
        assert_eq!(f.as_slice::<f32>().unwrap_err().kind(), ErrorKind::Unsupported);
        assert_eq!(f.to_vec::<f32>().unwrap().len(), 1);
    }
}

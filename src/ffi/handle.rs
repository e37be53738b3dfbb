//! The one place where C pointers become Rust references: tensor handles and the arrays C
//! passes in (shape, strides).

use std::mem::MaybeUninit;

use crate::abi::DLTensor;
use crate::alloc::try_box;
use crate::error::{Error, Result};
use crate::layout::check_ndim;
use crate::tensor::Tensor;

/// An opaque tensor handle. Every handle is owned by exactly one caller, who releases it with
/// `dlb_tensor_free`.
#[allow(non_camel_case_types)]
pub struct dlb_tensor {
    tensor: Tensor,
    /// What `dlb_tensor_dltensor` lends out; its shape and strides point into `tensor`.
    dl: DLTensor,
}

impl dlb_tensor {
    /// Boxes a tensor into a handle the caller owns. When the handle cannot be allocated, the
    /// tensor is dropped (releasing its reference) and the error says so.
    #[inline]
    pub(crate) fn into_raw(tensor: Tensor) -> Result<*mut dlb_tensor> {
        Ok(dlb_tensor::fill(dlb_tensor::reserve()?, tensor))
    }

    /// The memory of one handle, allocated ahead, for calls that must not fail once they have
    /// taken something over (memory lent by the caller must not be released on failure).
    #[inline]
    pub(crate) fn reserve() -> Result<Box<MaybeUninit<dlb_tensor>>> {
        try_box(MaybeUninit::uninit()).map_err(|_| Error::out_of_memory("allocating a tensor handle failed"))
    }

    /// Puts `tensor` into reserved handle memory and hands the handle out.
    #[inline]
    pub(crate) fn fill(slot: Box<MaybeUninit<dlb_tensor>>, tensor: Tensor) -> *mut dlb_tensor {
        let empty = DLTensor {
            data: std::ptr::null_mut(),
            device: tensor.device().to_dl(),
            ndim: 0,
            dtype: tensor.dtype().to_dl(),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        };
        // From here on the handle is only reached through this raw pointer (as C reaches it),
        // so the pointers into it below stay valid.
        let raw = Box::into_raw(slot).cast::<dlb_tensor>();
        // SAFETY: `raw` is a fresh allocation for one handle; writing initialises it. The shape
        // and strides may live inside the tensor itself, so they are pointed at only now that it
        // has its final place (a handle never moves or replaces its tensor), and `dl` is written
        // through its own field, leaving the tensor's bytes alone.
        unsafe {
            raw.write(dlb_tensor { tensor, dl: empty });
            let t = &(*raw).tensor;
            let ndim = t.shape().len();
            let dims = |v: &[i64]| if ndim == 0 { std::ptr::null_mut() } else { v.as_ptr().cast_mut() };
            let (data, shape, strides) = (t.data_ptr().cast(), dims(t.shape()), dims(t.strides()));
            let dl = &raw mut (*raw).dl;
            (*dl).data = data;
            (*dl).ndim = ndim as i32;
            (*dl).shape = shape;
            (*dl).strides = strides;
        }
        raw
    }

    pub(crate) fn tensor(&self) -> &Tensor {
        &self.tensor
    }
    pub(crate) fn dltensor(&self) -> &DLTensor {
        &self.dl
    }

    /// # Safety
    /// `t` is NULL or a live handle from `into_raw` that no other thread is freeing.
    pub(crate) unsafe fn from_ptr<'a>(t: *const dlb_tensor, name: &str) -> Result<&'a dlb_tensor> {
        // SAFETY: per the function contract.
        unsafe { t.as_ref() }.ok_or_else(|| Error::invalid(format_args!("{name} is NULL")))
    }

    /// Releases a handle (NULL is a no-op).
    ///
    /// # Safety
    /// `t` is NULL or a live handle from `into_raw` that nobody uses afterwards.
    pub(crate) unsafe fn free(t: *mut dlb_tensor) {
        if !t.is_null() {
            // SAFETY: per the function contract.
            drop(unsafe { Box::from_raw(t) });
        }
    }
}

/// Reads an `ndim`-long array from C after checking `ndim`. NULL is allowed only when `ndim` is
/// 0, or when `optional` (strides) — then the result is None.
///
/// # Safety
/// A non-NULL `ptr` must be valid for `ndim` reads.
pub(crate) unsafe fn dims<'a>(
    ptr: *const i64,
    ndim: i32,
    name: &str,
    optional: bool,
) -> Result<Option<&'a [i64]>> {
    let n = check_ndim(ndim)?;
    if ptr.is_null() {
        return if n == 0 || optional {
            Ok(None)
        } else {
            Err(Error::invalid(format_args!("{name} is NULL but ndim is {n}")))
        };
    }
    // SAFETY: per the function contract.
    Ok(Some(unsafe { std::slice::from_raw_parts(ptr, n) }))
}

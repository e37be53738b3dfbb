//! The one place where C pointers become Rust references: tensor handles and the arrays C
//! passes in (shape, strides).

use crate::abi::DLTensor;
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
    /// Boxes a tensor into a handle the caller owns.
    pub(crate) fn into_raw(tensor: Tensor) -> *mut dlb_tensor {
        let ndim = tensor.shape().len();
        let dims = |v: &[i64]| if ndim == 0 { std::ptr::null_mut() } else { v.as_ptr().cast_mut() };
        let dl = DLTensor {
            data: tensor.data_ptr().cast(),
            device: tensor.device().to_dl(),
            ndim: ndim as i32,
            dtype: tensor.dtype().to_dl(),
            shape: dims(tensor.shape()),
            strides: dims(tensor.strides()),
            byte_offset: 0,
        };
        Box::into_raw(Box::new(dlb_tensor { tensor, dl }))
    }

    pub(crate) fn tensor(&self) -> &Tensor {
        &self.tensor
    }
    pub(crate) fn tensor_mut(&mut self) -> &mut Tensor {
        &mut self.tensor
    }
    pub(crate) fn dltensor(&self) -> &DLTensor {
        &self.dl
    }

    /// # Safety
    /// `t` is NULL or a live handle from `into_raw` that no other thread is freeing.
    pub(crate) unsafe fn from_ptr<'a>(t: *const dlb_tensor, name: &str) -> Result<&'a dlb_tensor> {
        // SAFETY: per the function contract.
        unsafe { t.as_ref() }.ok_or_else(|| Error::invalid(format!("{name} is NULL")))
    }

    /// # Safety
    /// `t` is NULL or a live handle the caller uses exclusively.
    pub(crate) unsafe fn from_mut_ptr<'a>(t: *mut dlb_tensor, name: &str) -> Result<&'a mut dlb_tensor> {
        // SAFETY: per the function contract.
        unsafe { t.as_mut() }.ok_or_else(|| Error::invalid(format!("{name} is NULL")))
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
            Err(Error::invalid(format!("{name} is NULL but ndim is {n}")))
        };
    }
    // SAFETY: per the function contract.
    Ok(Some(unsafe { std::slice::from_raw_parts(ptr, n) }))
}

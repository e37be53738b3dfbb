//! The `ndarray` feature: tensors seen as `ndarray` views without copying, and tensors that take
//! over an `ndarray::Array`'s buffer.
//!
//! ndarray's views take non-negative strides from their lowest-addressed element, so a tensor
//! with negative strides is seen from its lowest element, with those axes flipped back
//! (`invert_axis`). Extent-1 axes, whose strides nothing steps along, get stride 0.

use ndarray::{Array, ArrayBase, ArrayViewD, ArrayViewMutD, Axis, Dimension, IxDyn, RawData, ShapeBuilder};

use crate::element::Element;
use crate::error::{Error, Result};
use crate::layout::PerAxis;
use crate::tensor::Tensor;

/// The extents of a tensor as ndarray takes them (validated non-negative).
fn extents(t: &Tensor) -> Vec<usize> {
    t.shape().iter().map(|&n| n as usize).collect()
}

/// A tensor's layout as ndarray wants it: extents, non-negative strides, the element offset of
/// the lowest-addressed element from the first one, and which axes run backwards.
struct NdLayout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    lowest: isize,
    flipped: PerAxis<bool>,
}

impl NdLayout {
    fn of(t: &Tensor) -> NdLayout {
        let mut lowest = 0isize;
        let mut flipped = PerAxis::new();
        let mut strides = Vec::with_capacity(t.ndim());
        for (&n, &s) in t.shape().iter().zip(t.strides()) {
            // A tensor with elements has a validated span, so (n - 1) * |s| fits in isize.
            let s = if n <= 1 { 0 } else { s as isize };
            if s < 0 {
                lowest += (n as isize - 1) * s;
            }
            flipped.push(s < 0);
            strides.push(s.unsigned_abs());
        }
        NdLayout { shape: extents(t), strides, lowest, flipped }
    }

    /// Turns the axes that run backwards in the tensor back in a view made from the lowest
    /// element, so that indexing the view gives the tensor's element at the same index.
    fn flip_back<S: RawData>(&self, view: &mut ArrayBase<S, IxDyn>) {
        for (axis, &flip) in self.flipped.iter().enumerate() {
            if flip {
                view.invert_axis(Axis(axis));
            }
        }
    }

    /// Whether no two indices reach the same element: sorted by stride, each axis must step
    /// past everything the axes inside it reach. (Layouts that interleave without nesting also
    /// avoid overlap, but no producer makes them; they are refused.)
    fn is_non_overlapping(&self) -> bool {
        let mut axes: Vec<(usize, usize)> =
            self.shape.iter().zip(&self.strides).filter(|&(&n, _)| n > 1).map(|(&n, &s)| (s, n)).collect();
        axes.sort_unstable();
        let mut reach = 0usize; // the largest element offset the inner axes reach
        for (s, n) in axes {
            if s <= reach {
                return false;
            }
            reach += (n - 1) * s;
        }
        true
    }
}

impl Tensor {
    /// A zero-copy `ndarray` view of the elements, in the tensor's own layout (transposed,
    /// stepped, negative and zero strides included). Needs host memory, `T` matching the dtype
    /// and an aligned first element.
    ///
    /// ```
    /// use dlbridge::Tensor;
    ///
    /// let t = Tensor::from_vec((0..6).collect::<Vec<i64>>(), &[2, 3])?;
    /// // Rows reversed, columns transposed: still the same memory.
    /// let v = t.view(&[3, 2], Some(&[1, -3]), 3)?;
    /// let a = v.as_array::<i64>()?;
    /// assert_eq!(a, ndarray::arr2(&[[3, 0], [4, 1], [5, 2]]).into_dyn());
    /// # Ok::<(), dlbridge::Error>(())
    /// ```
    pub fn as_array<T: Element>(&self) -> Result<ArrayViewD<'_, T>> {
        self.check_elements::<T>()?;
        if self.numel() == 0 {
            return Ok(
                ArrayViewD::from_shape(IxDyn(&extents(self)), &[]).expect("an empty shape fits no elements")
            );
        }
        let nd = NdLayout::of(self);
        let lowest = self.first::<T>().as_ptr().wrapping_offset(nd.lowest);
        // SAFETY: every element the layout reaches lies in the tensor's storage (validated when
        // the tensor was made), aligned host memory of `T`s that lives while `self` is borrowed;
        // `lowest` is the least address the layout reaches and the strides step up from it
        // inside the same allocation, with offsets that fit isize (the span does). Mutable
        // access needs `&mut` of the only tensor on the storage, which this borrow excludes.
        let mut view =
            unsafe { ArrayViewD::from_shape_ptr(IxDyn(&nd.shape).strides(IxDyn(&nd.strides)), lowest) };
        nd.flip_back(&mut view);
        Ok(view)
    }

    /// A zero-copy mutable `ndarray` view. Needs what [`Tensor::as_array`] needs, what
    /// [`Tensor::as_slice_mut`] needs of the memory (writable, the only reference to it), and
    /// a layout in which no two indices reach the same element (a broadcast, stride-0 axis is
    /// refused).
    ///
    /// ```
    /// use dlbridge::{DType, Device, Tensor};
    ///
    /// let mut t = Tensor::zeros(&[2, 2], DType::F64, Device::CPU)?;
    /// t.as_array_mut::<f64>()?[[1, 0]] = 5.0;
    /// assert_eq!(t.as_slice::<f64>()?, &[0., 0., 5., 0.]);
    /// # Ok::<(), dlbridge::Error>(())
    /// ```
    pub fn as_array_mut<T: Element>(&mut self) -> Result<ArrayViewMutD<'_, T>> {
        self.check_elements::<T>()?;
        self.check_exclusive()?;
        if self.numel() == 0 {
            return Ok(ArrayViewMutD::from_shape(IxDyn(&extents(self)), &mut [])
                .expect("an empty shape fits no elements"));
        }
        let nd = NdLayout::of(self);
        if !nd.is_non_overlapping() {
            return Err(Error::invalid(format_args!(
                "the layout (shape {:?}, strides {:?}) reaches some elements from more than one index; \
                 a mutable view needs each element once (copy the tensor first)",
                self.shape(),
                self.strides()
            )));
        }
        let lowest = self.first::<T>().as_ptr().wrapping_offset(nd.lowest);
        // SAFETY: as in `as_array`; in addition this tensor holds the only reference to its
        // storage, is writable, is borrowed mutably for the view's life, and no two indices
        // reach the same element (checked above).
        let mut view =
            unsafe { ArrayViewMutD::from_shape_ptr(IxDyn(&nd.shape).strides(IxDyn(&nd.strides)), lowest) };
        nd.flip_back(&mut view);
        Ok(view)
    }

    /// A CPU tensor over an `ndarray::Array`'s own buffer and layout (no copy). The tensor owns
    /// the buffer from now on and frees it with its last reference.
    ///
    /// ```
    /// use dlbridge::Tensor;
    ///
    /// let mut a = ndarray::Array2::<f32>::zeros((2, 3));
    /// a[[0, 2]] = 1.5;
    /// let at = a.reversed_axes(); // a transposed array: strides [1, 3]
    /// let t = Tensor::from_array(at)?;
    /// assert_eq!((t.shape(), t.strides()), (&[3i64, 2][..], &[1i64, 3][..]));
    /// assert_eq!(t.to_vec::<f32>()?, [0., 0., 0., 0., 1.5, 0.]);
    /// # Ok::<(), dlbridge::Error>(())
    /// ```
    pub fn from_array<T: Element, D: Dimension>(array: Array<T, D>) -> Result<Tensor> {
        let shape: Vec<i64> = array.shape().iter().map(|&n| n as i64).collect();
        let strides: Vec<i64> = array.strides().iter().map(|&s| s as i64).collect();
        let (mut buffer, offset) = array.into_raw_vec_and_offset();
        // The first element is `offset` elements into the buffer (None: there are no elements).
        let first = buffer.as_mut_ptr().wrapping_add(offset.unwrap_or(0));
        Tensor::from_rust_buffer(buffer, first, &shape, Some(&strides))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::dtype::DType;
    use crate::error::ErrorKind;
    use ndarray::{Array3, arr1, s};

    #[test]
    fn views_follow_every_layout() {
        let t = Tensor::from_vec((0..24).collect::<Vec<i32>>(), &[2, 3, 4]).unwrap();
        let a = Array3::from_shape_vec((2, 3, 4), (0..24).collect()).unwrap().into_dyn();
        assert_eq!(t.as_array::<i32>().unwrap(), a);
        // A permutation, a negative step and a broadcast axis.
        let p = t.view(&[4, 2, 3], Some(&[1, 12, 4]), 0).unwrap();
        assert_eq!(p.as_array::<i32>().unwrap(), a.view().permuted_axes(IxDyn(&[2, 0, 1])));
        let r = t.view(&[3], Some(&[-5]), 10).unwrap();
        assert_eq!(r.as_array::<i32>().unwrap(), arr1(&[10, 5, 0]).into_dyn());
        let b = t.view(&[2, 3], Some(&[0, 1]), 1).unwrap();
        assert_eq!(
            b.as_array::<i32>().unwrap().index_axis(Axis(0), 1).iter().copied().collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(t.view(&[0, 5], None, 0).unwrap().as_array::<i32>().unwrap().len(), 0);
        assert_eq!(t.as_array::<u32>().unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn mutable_views_write_through_and_refuse_overlap() {
        let mut t = Tensor::zeros(&[3, 4], DType::I64, Device::CPU).unwrap();
        {
            let mut a = t.as_array_mut::<i64>().unwrap();
            a.slice_mut(s![.., 1]).fill(7);
        }
        assert_eq!(t.to_vec::<i64>().unwrap()[..6], [0, 7, 0, 0, 0, 7]);
        let mut rev = t.view(&[4], Some(&[-1]), 3).unwrap();
        drop(t);
        rev.as_array_mut::<i64>().unwrap()[0] = 9; // the last element of row 0
        assert_eq!(rev.to_vec::<i64>().unwrap(), [9, 0, 7, 0]);
        let mut broadcast = rev.view(&[2, 2], Some(&[0, 1]), 0).unwrap();
        drop(rev);
        assert_eq!(broadcast.as_array_mut::<i64>().unwrap_err().kind(), ErrorKind::InvalidArgument);
        let mut shared = broadcast.view(&[2], None, 0).unwrap();
        assert_eq!(shared.as_array_mut::<i64>().unwrap_err().kind(), ErrorKind::ReadOnly);
    }

    #[test]
    fn arrays_are_taken_over_in_their_own_layout() {
        let before = crate::storage::live_allocations_on_this_thread();
        let a = Array3::<f64>::from_shape_fn((2, 3, 4), |(i, j, k)| (100 * i + 10 * j + k) as f64);
        let expected = a.slice(s![.., ..;-1, 1..]).to_owned();
        let mut sliced = a;
        sliced.slice_collapse(s![.., ..;-1, 1..]);
        let first = &sliced[[0, 0, 0]] as *const f64;
        let t = Tensor::from_array(sliced).unwrap();
        assert_eq!(t.data_ptr().cast_const(), first.cast::<u8>());
        assert_eq!(t.strides(), &[12, -4, 1]);
        assert_eq!(t.as_array::<f64>().unwrap(), expected.into_dyn());
        drop(t);
        assert_eq!(crate::storage::live_allocations_on_this_thread(), before);
        let empty = Tensor::from_array(ndarray::Array2::<u8>::zeros((0, 3))).unwrap();
        assert_eq!(empty.shape(), &[0, 3]);
    }
}

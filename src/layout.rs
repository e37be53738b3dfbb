//! Shapes and strides (in elements): validation with checked arithmetic, contiguity, and the byte
//! range a strided layout reaches. Nothing here touches memory.

use std::fmt;
use std::ops::Deref;

use crate::alloc::Shared;
use crate::error::{Error, Result};

/// The most dimensions dlbridge accepts anywhere (checked before any shape is read).
pub const MAX_NDIM: usize = 64;

/// Checks an `ndim` received from C or from a foreign tensor.
pub fn check_ndim(ndim: i32) -> Result<usize> {
    match usize::try_from(ndim) {
        Ok(n) if n <= MAX_NDIM => Ok(n),
        _ => Err(Error::invalid(format_args!("ndim is {ndim}; it must lie in 0..=64"))),
    }
}

/// Ranks up to this keep their shape and strides inside the layout itself.
const INLINE_NDIM: usize = 4;

/// Shape followed by strides. Ranks up to `INLINE_NDIM` (nearly every tensor) keep them in
/// place: creating or aliasing such a layout allocates nothing, and the C API's fixed costs are
/// tens of nanoseconds, where each malloc counts. Larger ranks keep them in one shared block,
/// which aliases share instead of copying. A handle's DLTensor points into the dims, which is
/// safe because a handle never moves its tensor (see `ffi::handle`).
///
/// The tag and `ndim` are 4 bytes each, so that the dims start 8 bytes in and a tensor stays
/// within 128 bytes, which the compiler moves with a few vector loads and stores instead of a
/// call to `memcpy` (handles are filled by moves, and a round trip makes several).
#[repr(u32)]
enum Dims {
    Inline {
        ndim: u32,
        shape: [i64; INLINE_NDIM],
        strides: [i64; INLINE_NDIM],
    },
    /// The shape, then the strides.
    Shared(Shared<Vec<i64>>),
}

impl Dims {
    /// `shape`, and the strides given (or row-major ones; their product saturates only for
    /// zero-element shapes, whose strides nothing steps along).
    #[inline]
    fn new(shape: &[i64], strides: Option<&[i64]>) -> Result<Dims> {
        let n = shape.len();
        let row_major = |st: &mut [i64]| {
            let mut acc: i64 = 1;
            for (stride, &e) in st.iter_mut().zip(shape).rev() {
                *stride = acc;
                acc = acc.saturating_mul(e.max(1));
            }
        };
        if n <= INLINE_NDIM {
            // Picked one by one over the fixed capacity, which compiles to a few loads and
            // stores; a copy of `n` values would be a call to memcpy.
            let pick = |from: &[i64]| std::array::from_fn(|i| from.get(i).copied().unwrap_or(0));
            let strides = match strides {
                Some(s) => pick(s),
                None => {
                    let mut st = [0; INLINE_NDIM];
                    row_major(&mut st[..n]);
                    st
                }
            };
            return Ok(Dims::Inline { ndim: n as u32, shape: pick(shape), strides });
        }
        let oom = || Error::out_of_memory("allocating the shape and strides of a tensor failed");
        let mut all = Vec::new();
        all.try_reserve_exact(2 * n).map_err(|_| oom())?;
        all.extend_from_slice(shape);
        match strides {
            Some(s) => all.extend_from_slice(s),
            None => {
                all.resize(2 * n, 0);
                row_major(&mut all[n..]);
            }
        }
        Shared::try_new(all).map(Dims::Shared).map_err(|_| oom())
    }

    #[inline]
    fn shape(&self) -> &[i64] {
        match self {
            Dims::Inline { ndim, shape, .. } => &shape[..*ndim as usize],
            Dims::Shared(all) => &all[..all.len() / 2],
        }
    }

    #[inline]
    fn strides(&self) -> &[i64] {
        match self {
            Dims::Inline { ndim, strides, .. } => &strides[..*ndim as usize],
            Dims::Shared(all) => &all[all.len() / 2..],
        }
    }
}

impl Clone for Dims {
    /// Inline dims are copied as one block: a derived clone would write the tag and `ndim` as
    /// two small stores, and the first move of the result would read them back in one wide load,
    /// which the CPU cannot forward from them (it waits for them to reach the cache instead;
    /// that wait was a sixth of an export).
    #[inline]
    fn clone(&self) -> Dims {
        match self {
            // SAFETY: this variant holds only integers, so a bitwise copy is a clone.
            Dims::Inline { .. } => unsafe { std::ptr::read(self) },
            Dims::Shared(all) => Dims::Shared(all.clone()),
        }
    }
}

impl PartialEq for Dims {
    fn eq(&self, other: &Self) -> bool {
        self.shape() == other.shape() && self.strides() == other.strides()
    }
}

impl Eq for Dims {}

impl std::fmt::Debug for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dims").field("shape", &self.shape()).field("strides", &self.strides()).finish()
    }
}

/// A validated strided layout: `shape` and `strides` have the same length, every extent is
/// non-negative, and the element count and the byte range fit in `isize` for the dtype it was
/// validated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dims: Dims,
    numel: usize,
    /// The bytes reached, validated once here (every use of a layout needs it); meaningless
    /// (zero) when the layout has no elements.
    span: Span,
}

/// The bytes a layout reaches, relative to its first element: `[lo, hi)`. Zero-element layouts
/// reach none, and `Layout::span` gives None for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub lo: isize,
    pub hi: isize,
}

impl Layout {
    /// Validates `shape` and `strides` (None = row-major) for elements of `itemsize` bytes.
    ///
    /// This runs in every view, import and allocation, so it makes one pass over the extents
    /// with word-sized arithmetic and leaves the messages to cold functions.
    pub fn new(shape: &[i64], strides: Option<&[i64]>, itemsize: usize) -> Result<Layout> {
        if shape.len() > MAX_NDIM {
            return Err(too_many_dims(shape.len()));
        }
        if let Some(s) = strides
            && s.len() != shape.len()
        {
            return Err(lengths_differ(shape.len(), s.len()));
        }
        // The element count: wrapping, with a flag, so that the loop has no early exits. An
        // extent of zero makes any count (even one that overflowed on the way) zero.
        let (mut numel, mut overflow, mut negative, mut empty) = (1u64, false, false, false);
        for &e in shape {
            let (product, o) = numel.overflowing_mul(e as u64);
            numel = product;
            overflow |= o;
            negative |= e < 0;
            empty |= e == 0;
        }
        if negative {
            return Err(negative_extent(shape));
        }
        let numel = if empty { 0 } else { numel };
        let nbytes = numel.checked_mul(itemsize as u64);
        if !empty && (overflow || nbytes.is_none_or(|b| b > isize::MAX as u64)) {
            return Err(too_many_bytes(shape, itemsize));
        }
        let dims = Dims::new(shape, strides)?;
        let span = match (empty, strides) {
            (true, _) => Span { lo: 0, hi: 0 },
            // Row-major: exactly the element bytes, already checked to fit.
            (false, None) => Span { lo: 0, hi: nbytes.unwrap_or(0) as isize },
            (false, Some(_)) => span_of(dims.shape(), dims.strides(), itemsize)?,
        };
        Ok(Layout { dims, numel: numel as usize, span })
    }

    #[inline]
    pub fn shape(&self) -> &[i64] {
        self.dims.shape()
    }
    #[inline]
    pub fn strides(&self) -> &[i64] {
        self.dims.strides()
    }
    #[inline]
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Row-major compact (extents of 1 may have any stride; zero-element layouts are contiguous).
    pub fn is_contiguous(&self) -> bool {
        if self.numel == 0 {
            return true;
        }
        let mut expected: i64 = 1;
        for (&n, &s) in self.shape().iter().zip(self.strides()).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }

    /// The byte range the layout reaches relative to its first element (for the item size it was
    /// validated with), or None when it has no elements.
    #[inline]
    pub fn span(&self) -> Option<Span> {
        (self.numel > 0).then_some(self.span)
    }
}

#[cold]
fn lengths_differ(shape: usize, strides: usize) -> Error {
    Error::invalid(format_args!(
        "the shape has {shape} extents but the strides have {strides}; they must match"
    ))
}

#[cold]
fn too_many_dims(ndim: usize) -> Error {
    Error::invalid(format_args!("ndim is {ndim}; it must lie in 0..=64"))
}

#[cold]
fn negative_extent(shape: &[i64]) -> Error {
    let (axis, n) = shape.iter().enumerate().find(|&(_, &n)| n < 0).map_or((0, 0), |(a, &n)| (a, n));
    Error::invalid(format_args!("shape[{axis}] is {n}; extents must be >= 0"))
}

#[cold]
fn too_many_bytes(shape: &[i64], itemsize: usize) -> Error {
    Error::invalid(format_args!(
        "shape {shape:?} with {itemsize}-byte elements needs more bytes than any address space holds"
    ))
}

/// The byte range that `shape` and `strides` reach with `itemsize`-byte elements, for a layout
/// with elements (every extent at least 1). Fails when that range does not fit in `isize`.
/// The negative and the positive reaches are summed apart, so each sum only grows: when one
/// overflows an `i64` on the way, its final value would not fit either.
fn span_of(shape: &[i64], strides: &[i64], itemsize: usize) -> Result<Span> {
    let (mut lo, mut hi) = (Some(0i64), Some(0i64));
    for (&n, &s) in shape.iter().zip(strides) {
        match (n - 1).checked_mul(s) {
            Some(reach) if reach < 0 => lo = lo.and_then(|lo| lo.checked_add(reach)),
            Some(reach) => hi = hi.and_then(|hi| hi.checked_add(reach)),
            None => return Err(unreachable_span(shape, strides)),
        }
    }
    let size = itemsize as i64;
    let lo = lo.and_then(|lo| lo.checked_mul(size));
    let hi = hi.and_then(|hi| hi.checked_add(1)).and_then(|hi| hi.checked_mul(size));
    match (lo, hi) {
        (Some(lo), Some(hi)) => {
            let fits = |v: i64| isize::try_from(v).is_ok();
            match hi.checked_sub(lo) {
                Some(len) if fits(lo) && fits(hi) && fits(len) => {
                    Ok(Span { lo: lo as isize, hi: hi as isize })
                }
                _ => Err(unreachable_span(shape, strides)),
            }
        }
        _ => Err(unreachable_span(shape, strides)),
    }
}

#[cold]
fn unreachable_span(shape: &[i64], strides: &[i64]) -> Error {
    Error::invalid(format_args!(
        "shape {shape:?} with strides {strides:?} reaches more bytes than any address space holds"
    ))
}

/// Up to `MAX_NDIM` values, one per axis, kept on the stack.
#[derive(Clone, Copy)]
pub struct PerAxis<T: Copy + Default> {
    len: usize,
    values: [T; MAX_NDIM],
}

impl<T: Copy + Default> PerAxis<T> {
    pub fn new() -> Self {
        PerAxis { len: 0, values: [T::default(); MAX_NDIM] }
    }

    /// `n` copies of `value` (`n` is at most `MAX_NDIM`).
    pub fn filled(value: T, n: usize) -> Self {
        assert!(n <= MAX_NDIM, "{n} axes; dlbridge handles at most {MAX_NDIM}");
        PerAxis { len: n, values: [value; MAX_NDIM] }
    }

    /// Appends a value; there is room for `MAX_NDIM`, which every validated layout fits.
    pub fn push(&mut self, value: T) {
        assert!(self.len < MAX_NDIM, "more than {MAX_NDIM} axes");
        self.values[self.len] = value;
        self.len += 1;
    }
}

impl<T: Copy + Default> Default for PerAxis<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default> FromIterator<T> for PerAxis<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut out = PerAxis::new();
        for v in iter {
            out.push(v);
        }
        out
    }
}

impl<T: Copy + Default> Deref for PerAxis<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.values[..self.len]
    }
}

impl<T: Copy + Default> std::ops::DerefMut for PerAxis<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.values[..self.len]
    }
}

impl<'a, T: Copy + Default> IntoIterator for &'a PerAxis<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Copy + Default + fmt::Debug> fmt::Debug for PerAxis<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_and_contiguity() {
        let l = Layout::new(&[2, 3, 4], None, 4).unwrap();
        assert_eq!(l.strides(), &[12, 4, 1]);
        assert!(l.is_contiguous());
        assert_eq!(l.numel(), 24);
        assert_eq!(l.span(), Some(Span { lo: 0, hi: 96 }));
        let t = Layout::new(&[3, 2], Some(&[1, 3]), 4).unwrap();
        assert!(!t.is_contiguous());
        // Extents of one may carry any stride.
        assert!(Layout::new(&[1, 3], Some(&[99, 1]), 4).unwrap().is_contiguous());
        assert!(Layout::new(&[0, 3], Some(&[7, 7]), 4).unwrap().is_contiguous());
        assert!(Layout::new(&[], None, 8).unwrap().is_contiguous());
    }

    #[test]
    fn spans_of_negative_and_zero_strides() {
        let l = Layout::new(&[4], Some(&[-1]), 8).unwrap();
        assert_eq!(l.span(), Some(Span { lo: -24, hi: 8 }));
        let b = Layout::new(&[5, 3], Some(&[0, 1]), 2).unwrap();
        assert_eq!(b.span(), Some(Span { lo: 0, hi: 6 }));
        assert_eq!(Layout::new(&[0], None, 4).unwrap().span(), None);
        assert_eq!(Layout::new(&[], None, 4).unwrap().span(), Some(Span { lo: 0, hi: 4 }));
    }

    #[test]
    fn refuses_negative_extents_and_overflow() {
        let e = Layout::new(&[2, -3], None, 4).unwrap_err();
        assert!(e.message.contains("shape[1] is -3"), "{}", e.message);
        assert!(Layout::new(&[1 << 62, 1 << 62], None, 4).is_err());
        assert!(Layout::new(&[1 << 62, 8], None, 8).is_err());
        assert!(Layout::new(&[2, 2], Some(&[i64::MAX, 1]), 8).is_err());
        assert!(check_ndim(65).is_err());
        // Strides of another length than the shape are refused, in release builds too.
        let e = Layout::new(&[2, 2, 2, 2, 2], Some(&[7, 1, 1, 1, 1, 1, 1]), 4).unwrap_err();
        assert!(e.message.contains("5 extents but the strides have 7"), "{}", e.message);
        assert!(check_ndim(-1).is_err());
        assert_eq!(check_ndim(64).unwrap(), 64);
    }

    #[test]
    fn per_axis_values_behave_like_a_short_vec() {
        let mut v: PerAxis<i64> = [3, 4].into_iter().collect();
        v.push(5);
        assert_eq!(&*v, &[3, 4, 5]);
        v[0] = 9;
        assert_eq!(v.iter().sum::<i64>(), 18);
        assert_eq!(&*PerAxis::filled(0usize, 2), &[0, 0]);
        assert!(PerAxis::<u8>::new().is_empty());
    }
}

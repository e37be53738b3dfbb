//! Shapes and strides (in elements): validation with checked arithmetic, contiguity, and the byte
//! range a strided layout reaches. Nothing here touches memory.

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

/// Row-major strides (in elements) for `shape`. Callers validate the shape first; the product
/// saturates only past sizes no allocation can have, where it no longer matters.
fn fill_row_major(shape: &[i64], strides: &mut [i64]) {
    let mut acc: i64 = 1;
    for (stride, &n) in strides.iter_mut().zip(shape).rev() {
        *stride = acc;
        acc = acc.saturating_mul(n.max(1));
    }
}

/// Ranks up to this keep their shape and strides inside the layout itself.
const INLINE_NDIM: usize = 4;

/// Shape followed by strides. Ranks up to `INLINE_NDIM` (nearly every tensor) keep them in
/// place: creating or aliasing such a layout allocates nothing, and the C API's fixed costs are
/// tens of nanoseconds, where each malloc counts. Larger ranks keep them in one shared block,
/// which aliases share instead of copying. A handle's DLTensor points into the dims, which is
/// safe because a handle never moves its tensor (see `ffi::handle`).
#[derive(Clone)]
enum Dims {
    Inline { ndim: u8, all: [i64; 2 * INLINE_NDIM] },
    Shared(Shared<Vec<i64>>),
}

impl Dims {
    /// `shape`, and the strides given (or row-major ones).
    fn new(shape: &[i64], strides: Option<&[i64]>) -> Result<Dims> {
        let n = shape.len();
        let fill = |all: &mut [i64]| {
            let (sh, st) = all.split_at_mut(n);
            sh.copy_from_slice(shape);
            match strides {
                Some(s) => st.copy_from_slice(s),
                None => fill_row_major(shape, st),
            }
        };
        if n <= INLINE_NDIM {
            let mut all = [0i64; 2 * INLINE_NDIM];
            fill(&mut all[..2 * n]);
            return Ok(Dims::Inline { ndim: n as u8, all });
        }
        let oom = || Error::out_of_memory("allocating the shape and strides of a tensor failed");
        let mut all = Vec::new();
        all.try_reserve_exact(2 * n).map_err(|_| oom())?;
        all.resize(2 * n, 0);
        fill(&mut all);
        Shared::try_new(all).map(Dims::Shared).map_err(|_| oom())
    }

    /// Shape and strides, one after the other.
    fn all(&self) -> &[i64] {
        match self {
            Dims::Inline { ndim, all } => &all[..2 * *ndim as usize],
            Dims::Shared(all) => all,
        }
    }
}

impl PartialEq for Dims {
    fn eq(&self, other: &Self) -> bool {
        self.all() == other.all()
    }
}

impl Eq for Dims {}

impl std::fmt::Debug for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.all().fmt(f)
    }
}

/// A validated strided layout: `shape` and `strides` have the same length, every extent is
/// non-negative, and the element count and the byte range fit in `isize` for the dtype it was
/// validated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dims: Dims,
    numel: usize,
    /// The bytes reached, validated once here (every use of a layout needs it).
    span: Option<Span>,
}

/// The bytes a layout reaches, relative to its first element: `[lo, hi)`. Empty for zero-element
/// layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub lo: isize,
    pub hi: isize,
}

impl Layout {
    /// Validates `shape` and `strides` (None = row-major) for elements of `itemsize` bytes.
    pub fn new(shape: &[i64], strides: Option<&[i64]>, itemsize: usize) -> Result<Layout> {
        if shape.len() > MAX_NDIM {
            return Err(Error::invalid(format_args!("ndim is {}; it must lie in 0..=64", shape.len())));
        }
        if let Some((axis, &n)) = shape.iter().enumerate().find(|&(_, &n)| n < 0) {
            return Err(Error::invalid(format_args!("shape[{axis}] is {n}; extents must be >= 0")));
        }
        debug_assert!(strides.is_none_or(|s| s.len() == shape.len()));
        let mut numel: u128 = 1;
        for &n in shape {
            numel = numel.saturating_mul(n as u128);
        }
        let nbytes = numel.saturating_mul(itemsize as u128);
        if nbytes == u128::MAX {
            return Err(Error::invalid(format_args!(
                "shape {shape:?} with {itemsize}-byte elements needs over 2^128 bytes, more than \
                 any address space holds"
            )));
        }
        if nbytes > isize::MAX as u128 {
            return Err(Error::invalid(format_args!(
                "shape {shape:?} with {itemsize}-byte elements needs {nbytes} bytes, more than any \
                 address space holds"
            )));
        }
        let dims = Dims::new(shape, strides)?;
        let span = if numel == 0 { None } else { Some(span_of(dims.all(), itemsize)?) };
        Ok(Layout { dims, numel: numel as usize, span })
    }

    pub fn shape(&self) -> &[i64] {
        let all = self.dims.all();
        &all[..all.len() / 2]
    }
    pub fn strides(&self) -> &[i64] {
        let all = self.dims.all();
        &all[all.len() / 2..]
    }
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
    pub fn span(&self) -> Option<Span> {
        self.span
    }
}

/// The byte range that shape-then-strides `all` reaches with `itemsize`-byte elements, for a
/// layout with elements. Fails when that range does not fit in `isize`.
fn span_of(all: &[i64], itemsize: usize) -> Result<Span> {
    let (shape, strides) = all.split_at(all.len() / 2);
    let (mut lo, mut hi) = (0i128, 0i128);
    for (&n, &s) in shape.iter().zip(strides) {
        let reach = i128::from(n - 1) * i128::from(s);
        if reach < 0 { lo += reach } else { hi += reach }
    }
    let size = itemsize as i128;
    let (lo, hi) = (lo * size, (hi + 1) * size);
    let fits = |v: i128| v >= isize::MIN as i128 && v <= isize::MAX as i128;
    if !fits(lo) || !fits(hi) || !fits(hi - lo) {
        return Err(Error::invalid(format_args!(
            "shape {shape:?} with strides {strides:?} reaches more bytes than any address space holds"
        )));
    }
    Ok(Span { lo: lo as isize, hi: hi as isize })
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
        assert!(check_ndim(-1).is_err());
        assert_eq!(check_ndim(64).unwrap(), 64);
    }
}

//! The copy kernel: moves the elements of one strided byte layout into another. It is the only
//! code that walks strided memory, so tuning (tile size, specialised inner loops, threads) happens
//! here and nowhere else.
//!
//! Plan, from fastest to slowest:
//! 1. Simplify: drop extents of 1, merge dimensions that are contiguous in both source and
//!    destination. A compact source then collapses to one `memcpy`.
//! 2. Innermost dimension contiguous in both: one `memcpy` per row.
//! 3. Source contiguous along another dimension (a transpose): a cache-blocked 2-D tile loop, so
//!    both the reads and the writes of a tile stay in L1.
//! 4. Anything else (negative or zero strides inside, gathers): a tight strided loop per row,
//!    specialised on the element size.

/// Edge of the square tiles used for transposes, in elements. 32 x 32 elements of 8 bytes is
/// 8 KiB per side, comfortably inside L1.
pub const TILE: usize = 32;

/// One dimension of a copy: extent, source stride and destination stride (strides in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dim {
    n: usize,
    src: isize,
    dst: isize,
}

/// Drops extents of one, orders dimensions by decreasing destination stride, and merges
/// neighbours that are contiguous in both layouts. Returns None when there is nothing to copy.
fn simplify(shape: &[usize], src: &[isize], dst: &[isize]) -> Option<Vec<Dim>> {
    if shape.contains(&0) {
        return None;
    }
    let mut dims: Vec<Dim> = (0..shape.len())
        .filter(|&i| shape[i] != 1)
        .map(|i| Dim { n: shape[i], src: src[i], dst: dst[i] })
        .collect();
    dims.sort_by_key(|d| std::cmp::Reverse(d.dst.unsigned_abs()));
    let mut merged: Vec<Dim> = Vec::with_capacity(dims.len());
    for d in dims {
        if let Some(outer) = merged.last_mut() {
            let n = d.n as isize;
            if outer.src == d.src * n && outer.dst == d.dst * n {
                *outer = Dim { n: outer.n * d.n, src: d.src, dst: d.dst };
                continue;
            }
        }
        merged.push(d);
    }
    Some(merged)
}

/// Calls `f(src, dst)` with the address of the first element of every position of `outer`
/// (an odometer over the outer dimensions, last dimension fastest).
///
/// # Safety
/// Every position must be addressable from `src` and `dst` with the given strides.
unsafe fn for_each_outer(outer: &[Dim], src: *const u8, dst: *mut u8, mut f: impl FnMut(*const u8, *mut u8)) {
    let mut index = vec![0usize; outer.len()];
    let (mut s, mut d) = (src, dst);
    loop {
        f(s, d);
        // Advance the odometer, carrying into outer dimensions.
        let mut axis = outer.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            let dim = outer[axis];
            index[axis] += 1;
            s = s.wrapping_offset(dim.src);
            d = d.wrapping_offset(dim.dst);
            if index[axis] < dim.n {
                break;
            }
            s = s.wrapping_offset(-dim.src * dim.n as isize);
            d = d.wrapping_offset(-dim.dst * dim.n as isize);
            index[axis] = 0;
        }
    }
}

/// Copies elements of `itemsize` bytes from the strided layout at `src` to the strided layout at
/// `dst`. Shape and strides are per dimension; strides are in bytes and may be negative or zero
/// in the source.
///
/// # Safety
/// Every element address the two layouts describe must be valid for reads (source) and writes
/// (destination), and the destination must not overlap the source.
pub unsafe fn copy_strided(
    src: *const u8,
    src_strides: &[isize],
    dst: *mut u8,
    dst_strides: &[isize],
    shape: &[usize],
    itemsize: usize,
) {
    let Some(dims) = simplify(shape, src_strides, dst_strides) else { return };
    let size = itemsize as isize;
    let Some((&inner, outer)) = dims.split_last() else {
        // SAFETY: a 0-d (or all-ones) layout is a single element, valid by the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, itemsize) };
        return;
    };
    if inner.src == size && inner.dst == size {
        let row = inner.n * itemsize;
        // SAFETY: each row is `row` contiguous bytes in both layouts.
        unsafe { for_each_outer(outer, src, dst, |s, d| std::ptr::copy_nonoverlapping(s, d, row)) };
        return;
    }
    // A transpose: some outer dimension is the source's contiguous one while the destination is
    // contiguous along the inner dimension.
    if inner.dst == size
        && let Some(k) = outer.iter().position(|d| d.src == size)
    {
        let across = outer[k];
        let rest: Vec<Dim> = outer.iter().enumerate().filter(|&(i, _)| i != k).map(|(_, d)| *d).collect();
        // SAFETY: the tile loop visits exactly the elements of the two dimensions.
        unsafe {
            for_each_outer(&rest, src, dst, |s, d| {
                dispatch_size(itemsize, |elem| transpose_tiles(elem, s, d, across, inner))
            })
        };
        return;
    }
    // SAFETY: the row loop visits exactly the elements of the inner dimension.
    unsafe {
        for_each_outer(outer, src, dst, |s, d| dispatch_size(itemsize, |elem| strided_row(elem, s, d, inner)))
    };
}

/// Calls `f(src_row, dst_row, n, src_stride, dst_stride)` for every row of the simplified
/// layouts (strides in bytes): the walker for element-wise kernels other than copies (casts).
/// A 0-d layout is one row of one element.
///
/// # Safety
/// As for `copy_strided`: every described address must be valid for `f`'s accesses.
pub unsafe fn for_each_row(
    src: *const u8,
    src_strides: &[isize],
    dst: *mut u8,
    dst_strides: &[isize],
    shape: &[usize],
    mut f: impl FnMut(*const u8, *mut u8, usize, isize, isize),
) {
    let Some(dims) = simplify(shape, src_strides, dst_strides) else { return };
    match dims.split_last() {
        None => f(src, dst, 1, 0, 0),
        // SAFETY: per the function contract.
        Some((&inner, outer)) => unsafe {
            for_each_outer(outer, src, dst, |s, d| f(s, d, inner.n, inner.src, inner.dst))
        },
    }
}

/// Element sizes with a specialised inner loop; others copy byte slices.
#[derive(Clone, Copy)]
enum Elem {
    B1,
    B2,
    B4,
    B8,
    B16,
    Other(usize),
}

fn dispatch_size(itemsize: usize, f: impl FnOnce(Elem)) {
    f(match itemsize {
        1 => Elem::B1,
        2 => Elem::B2,
        4 => Elem::B4,
        8 => Elem::B8,
        16 => Elem::B16,
        n => Elem::Other(n),
    })
}

/// # Safety
/// `s` and `d` are valid for `size_of::<T>()` bytes (no alignment needed).
#[inline(always)]
unsafe fn move_one<T: Copy>(s: *const u8, d: *mut u8) {
    // SAFETY: per the function contract; unaligned accesses because foreign strides may be odd.
    unsafe { d.cast::<T>().write_unaligned(s.cast::<T>().read_unaligned()) }
}

macro_rules! with_elem {
    ($elem:expr, $body:ident, $($arg:expr),*) => {
        match $elem {
            Elem::B1 => $body::<u8>($($arg),*, 1),
            Elem::B2 => $body::<u16>($($arg),*, 2),
            Elem::B4 => $body::<u32>($($arg),*, 4),
            Elem::B8 => $body::<u64>($($arg),*, 8),
            Elem::B16 => $body::<u128>($($arg),*, 16),
            Elem::Other(n) => $body::<u8>($($arg),*, n),
        }
    };
}

fn strided_row(elem: Elem, s: *const u8, d: *mut u8, dim: Dim) {
    #[inline(always)]
    fn run<T: Copy>(s: *const u8, d: *mut u8, dim: Dim, itemsize: usize) {
        let (mut s, mut d) = (s, d);
        for _ in 0..dim.n {
            // SAFETY: copy_strided's caller guarantees every element address is valid.
            unsafe { copy_elem::<T>(s, d, itemsize) };
            s = s.wrapping_offset(dim.src);
            d = d.wrapping_offset(dim.dst);
        }
    }
    with_elem!(elem, run, s, d, dim)
}

fn transpose_tiles(elem: Elem, s: *const u8, d: *mut u8, across: Dim, inner: Dim) {
    #[inline(always)]
    fn run<T: Copy>(s: *const u8, d: *mut u8, (across, inner): (Dim, Dim), itemsize: usize) {
        for i0 in (0..across.n).step_by(TILE) {
            let i1 = (i0 + TILE).min(across.n);
            for j0 in (0..inner.n).step_by(TILE) {
                let j1 = (j0 + TILE).min(inner.n);
                for i in i0..i1 {
                    let si = s.wrapping_offset(i as isize * across.src);
                    let di = d.wrapping_offset(i as isize * across.dst);
                    for j in j0..j1 {
                        let sj = si.wrapping_offset(j as isize * inner.src);
                        let dj = di.wrapping_offset(j as isize * inner.dst);
                        // SAFETY: (i, j) lies inside both layouts.
                        unsafe { copy_elem::<T>(sj, dj, itemsize) };
                    }
                }
            }
        }
    }
    with_elem!(elem, run, s, d, (across, inner))
}

/// Copies one element: a typed move for the specialised sizes, a byte copy otherwise.
///
/// # Safety
/// `s` and `d` are valid for `itemsize` bytes.
#[inline(always)]
unsafe fn copy_elem<T: Copy>(s: *const u8, d: *mut u8, itemsize: usize) {
    if size_of::<T>() == itemsize {
        // SAFETY: per the function contract.
        unsafe { move_one::<T>(s, d) }
    } else {
        // SAFETY: per the function contract.
        unsafe { std::ptr::copy_nonoverlapping(s, d, itemsize) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: element-by-element index walk.
    fn reference(src: &[u8], src_off: isize, shape: &[usize], ss: &[isize], itemsize: usize) -> Vec<u8> {
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n * itemsize);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            let off: isize = src_off + idx.iter().zip(ss).map(|(&i, &s)| i as isize * s).sum::<isize>();
            out.extend_from_slice(&src[off as usize..off as usize + itemsize]);
            for a in (0..shape.len()).rev() {
                idx[a] += 1;
                if idx[a] < shape[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        out
    }

    fn row_major_bytes(shape: &[usize], itemsize: usize) -> Vec<isize> {
        let mut st = vec![0isize; shape.len()];
        let mut acc = itemsize as isize;
        for i in (0..shape.len()).rev() {
            st[i] = acc;
            acc *= shape[i] as isize;
        }
        st
    }

    fn check(shape: &[usize], strides_el: &[isize], first_el: isize, itemsize: usize, src_len_el: usize) {
        let src: Vec<u8> = (0..src_len_el * itemsize).map(|i| (i * 7 + 3) as u8).collect();
        let ss: Vec<isize> = strides_el.iter().map(|s| s * itemsize as isize).collect();
        let expect = reference(&src, first_el * itemsize as isize, shape, &ss, itemsize);
        let mut dst = vec![0u8; expect.len()];
        let ds = row_major_bytes(shape, itemsize);
        unsafe {
            copy_strided(
                src.as_ptr().offset(first_el * itemsize as isize),
                &ss,
                dst.as_mut_ptr(),
                &ds,
                shape,
                itemsize,
            )
        };
        assert_eq!(dst, expect, "shape {shape:?} strides {strides_el:?} itemsize {itemsize}");
    }

    #[test]
    fn contiguous_rows_transposes_and_reversals() {
        // Miri is slow: there the ragged-tile case runs for one element size only.
        for itemsize in [1, 2, 3, 4, 8, 16] {
            check(&[6, 5], &[5, 1], 0, itemsize, 30);
            check(&[5, 6], &[1, 5], 0, itemsize, 30); // transpose
            if !cfg!(miri) || itemsize == 4 {
                check(&[37, 41], &[1, 37], 0, itemsize, 37 * 41); // transpose, ragged tiles
            }
            check(&[3, 4], &[8, 1], 2, itemsize, 30); // slice rows with offset
            check(&[7], &[-1], 6, itemsize, 7); // reversed
            check(&[4, 3], &[-3, 1], 9, itemsize, 12); // flipped rows
            check(&[4, 3], &[0, 1], 0, itemsize, 3); // broadcast
            check(&[2, 3, 4], &[1, 8, 2], 0, itemsize, 24); // 3-d permutation
            check(&[2, 1, 3], &[3, 99, 1], 0, itemsize, 6); // size-one extents
            check(&[], &[], 4, itemsize, 5); // 0-d
        }
    }

    #[test]
    fn zero_extent_copies_nothing() {
        let mut dst = [9u8; 4];
        unsafe { copy_strided(std::ptr::null(), &[4, 1], dst.as_mut_ptr(), &[4, 1], &[0, 4], 1) };
        assert_eq!(dst, [9u8; 4]);
    }

    #[test]
    fn simplify_merges_compact_layouts() {
        let d = simplify(&[2, 3, 4], &[48, 16, 4], &[48, 16, 4]).unwrap();
        assert_eq!(d, vec![Dim { n: 24, src: 4, dst: 4 }]);
    }
}

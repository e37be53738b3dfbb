//! The copy kernel: moves the elements of one strided byte layout into another. It is the only
//! code that walks strided memory, so tuning (tile sizes, SIMD inner loops, threads) happens here
//! and in [`transpose`] and nowhere else.
//!
//! Plan:
//! 1. Simplify: drop extents of 1, order dimensions by destination stride, merge dimensions that
//!    are contiguous in both layouts. A compact source then is one row: one `memcpy`.
//! 2. Large copies are cut along their outermost dimension into one piece per core (up to
//!    `MAX_THREADS`), each copied by the steps below on its own scoped thread: transposes from
//!    `TRANSPOSE_PARALLEL_MIN_BYTES`, other copies from `PARALLEL_MIN_BYTES`.
//! 3. Per row of the innermost dimension, when the destination is contiguous along it:
//!    contiguous source: `memcpy`; reversed source (stride -1): a reversing loop the compiler
//!    vectorises; broadcast source (stride 0): a fill; another dimension contiguous in the source
//!    (a transpose): the cache-blocked SIMD tiles of [`transpose`].
//! 4. Anything else (gathers, strided destinations): a tight strided loop per row, specialised on
//!    the element size.
//!
//! Every loop reads and writes elements as `[u8; N]`, which has alignment 1: foreign data and
//! odd strides need no alignment.

mod transpose;

use std::sync::OnceLock;

use crate::layout::MAX_NDIM;
use crate::layout::PerAxis;

/// Copies of at least this many bytes are split across threads. Measured on the 2-core machine
/// this project runs on, `dlb_tensor_copy` of 1 MiB to 256 MiB split and unsplit, interleaved,
/// best of 7: one core already saturates memory bandwidth when the destination pages are
/// resident (below 32 MiB glibc hands freed memory back out, and two threads there ran at half
/// the speed of one), while from 32 MiB on every copy writes fresh pages and splitting the page
/// faults over two cores won 5-30%.
pub const PARALLEL_MIN_BYTES: usize = 32 << 20;
/// Element-wise kernels (casts) over at least this many elements are split across threads: the
/// point where the larger side of a cast from or to 8-byte elements reaches `PARALLEL_MIN_BYTES`.
/// (Casts of 16M elements ran within this machine's noise, +-20%, of one thread either way.)
pub const PARALLEL_MIN_ELEMENTS: usize = 4 << 20;
/// More threads than this do not help a memory-bound copy.
pub const MAX_THREADS: usize = 4;

/// Runs `$f::<N>(args..., itemsize)` with `N` the element size for the sizes that have their own
/// loop, and `N = 1` (moving `itemsize` bytes per element) for the others.
macro_rules! dispatch_size {
    ($itemsize:expr, $f:ident, $($arg:expr),*) => {
        match $itemsize {
            1 => $f::<1>($($arg),*, 1),
            2 => $f::<2>($($arg),*, 2),
            4 => $f::<4>($($arg),*, 4),
            8 => $f::<8>($($arg),*, 8),
            16 => $f::<16>($($arg),*, 16),
            n => $f::<1>($($arg),*, n),
        }
    };
}

/// One dimension of a copy: extent, source stride and destination stride (strides in bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Dim {
    n: usize,
    src: isize,
    dst: isize,
}

/// Up to `MAX_NDIM` dimensions, on the stack: copies allocate nothing.
type Dims = PerAxis<Dim>;

/// Drops extents of one, orders dimensions by decreasing destination stride, and merges
/// neighbours that are contiguous in both layouts. Returns None when there is nothing to copy.
///
/// # Panics
/// With more than `MAX_NDIM` dimensions of extent above one (no layout has that many).
fn simplify(shape: &[usize], src: &[isize], dst: &[isize]) -> Option<Dims> {
    if shape.contains(&0) {
        return None;
    }
    let mut dims: Dims = (0..shape.len())
        .filter(|&i| shape[i] != 1)
        .map(|i| Dim { n: shape[i], src: src[i], dst: dst[i] })
        .collect();
    // Unstable: the stable sort allocates. The order of equal strides does not matter.
    dims.sort_unstable_by_key(|d| std::cmp::Reverse(d.dst.unsigned_abs()));
    let mut merged = Dims::new();
    for &d in dims.iter() {
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
    let mut index = [0usize; MAX_NDIM];
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
/// in the source. Large copies run on several threads.
///
/// # Safety
/// Every element address the two layouts describe must be valid for reads (source) and writes
/// (destination), the destination must not overlap the source, and no two destination elements
/// may overlap each other (the pieces of a split copy write concurrently).
pub unsafe fn copy_strided(
    src: *const u8,
    src_strides: &[isize],
    dst: *mut u8,
    dst_strides: &[isize],
    shape: &[usize],
    itemsize: usize,
) {
    let Some(dims) = simplify(shape, src_strides, dst_strides) else { return };
    let from = if is_transpose(&dims, itemsize) { TRANSPOSE_PARALLEL_MIN_BYTES } else { PARALLEL_MIN_BYTES };
    // SAFETY: forwarded contract.
    unsafe { copy_strided_with(src, src_strides, dst, dst_strides, shape, itemsize, from) }
}

/// Transposing copies of at least this many bytes are split across threads: a transpose is
/// bound by the latency of its scattered lines more than by bandwidth, so a second core pays
/// off well below `PARALLEL_MIN_BYTES` (see docs/benchmarks.md).
pub const TRANSPOSE_PARALLEL_MIN_BYTES: usize = 8 << 20;

/// Whether the simplified layout `dims` is copied by the transpose kernels: the destination is
/// contiguous along its innermost dimension and the source along another one.
fn is_transpose(dims: &[Dim], itemsize: usize) -> bool {
    let size = itemsize as isize;
    match dims.split_last() {
        Some((inner, outer)) => inner.dst == size && inner.src != size && outer.iter().any(|d| d.src == size),
        None => false,
    }
}

/// `copy_strided` with the size from which it splits the work across threads.
///
/// # Safety
/// As for `copy_strided`.
pub unsafe fn copy_strided_with(
    src: *const u8,
    src_strides: &[isize],
    dst: *mut u8,
    dst_strides: &[isize],
    shape: &[usize],
    itemsize: usize,
    parallel_min_bytes: usize,
) {
    let Some(dims) = simplify(shape, src_strides, dst_strides) else { return };
    let isa = Isa::detect();
    let bytes = shape.iter().product::<usize>().saturating_mul(itemsize);
    // SAFETY: per the function contract.
    unsafe {
        in_pieces(&dims, threads_for(bytes, parallel_min_bytes), src, dst, |piece, s, d| {
            copy_dims(piece, s, d, itemsize, isa, bytes)
        })
    };
}

/// Runs `run(piece, src, dst)` over the simplified layout `dims`: whole on this thread, or cut
/// along its outermost dimension into up to `threads` pieces that run on scoped threads.
///
/// # Safety
/// `run` must be safe to call on `dims` from `src` and `dst`, and on any sub-range of its
/// outermost dimension; pieces write disjoint parts of the destination.
unsafe fn in_pieces(
    dims: &[Dim],
    threads: usize,
    src: *const u8,
    dst: *mut u8,
    run: impl Fn(&[Dim], *const u8, *mut u8) + Sync,
) {
    let threads = threads.min(dims.first().map_or(1, |d| d.n));
    if threads <= 1 {
        return run(dims, src, dst);
    }
    let outer = dims[0];
    let step = outer.n.div_ceil(threads);
    // The piece starting at index `start` of the outermost dimension.
    let piece = |start: usize| {
        let mut piece: Dims = dims.iter().copied().collect();
        piece[0].n = step.min(outer.n - start);
        piece
    };
    let ends = Ends { src, dst };
    let run = &run;
    std::thread::scope(|scope| {
        for start in (0..outer.n).step_by(step).skip(1) {
            let (s, d) = ends.offset(start, outer);
            // The pieces cover disjoint index ranges of the outermost dimension, so they read
            // what the whole reads and write disjoint parts of what it writes; the scope joins
            // every thread before the caller's borrows end. A thread the system refuses (out of
            // threads or memory) is no error: its piece runs here instead.
            let dims = piece(start);
            let spawned =
                std::thread::Builder::new().spawn_scoped(scope, move || run(&dims, s.get(), d.get_mut()));
            if spawned.is_err() {
                run(&piece(start), s.get(), d.get_mut());
            }
        }
        run(&piece(0), src, dst);
    });
}

/// How many threads a copy of `bytes` bytes uses.
fn threads_for(bytes: usize, parallel_min_bytes: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    if bytes < parallel_min_bytes.max(1) {
        return 1;
    }
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // At least half the threshold per thread: a thread that copies less costs more than it saves.
    let by_size = (bytes / (parallel_min_bytes / 2).max(1)).max(1);
    cores.clamp(1, MAX_THREADS).min(by_size)
}

/// The two base pointers of a copy, sendable to the threads that copy its pieces.
#[derive(Clone, Copy)]
struct Ends {
    src: *const u8,
    dst: *mut u8,
}

/// A pointer handed to another thread.
#[derive(Clone, Copy)]
struct Sent<T>(T);
// SAFETY: the copy's contract makes the memory behind these pointers valid for the whole scoped
// call; each thread writes a disjoint part of the destination.
unsafe impl<T> Send for Sent<T> {}
impl Sent<*const u8> {
    fn get(self) -> *const u8 {
        self.0
    }
}
impl Sent<*mut u8> {
    fn get_mut(self) -> *mut u8 {
        self.0
    }
}

impl Ends {
    /// The first element of index `start` along `dim`.
    fn offset(self, start: usize, dim: Dim) -> (Sent<*const u8>, Sent<*mut u8>) {
        let k = start as isize;
        (Sent(self.src.wrapping_offset(k * dim.src)), Sent(self.dst.wrapping_offset(k * dim.dst)))
    }
}

/// Which SIMD kernels the CPU can run, found once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Whatever the target guarantees (SSE2 on x86-64).
    Base,
    /// x86-64 with AVX2.
    Avx2,
    /// x86-64 with AVX2, AVX-512F and AVX-512BW.
    Avx512,
}

impl Isa {
    fn detect() -> Isa {
        // Miri runs the portable kernels: it checks the tile loops, not the intrinsics.
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if std::arch::is_x86_feature_detected!("avx2") {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                return Isa::Avx512;
            }
            return Isa::Avx2;
        }
        Isa::Base
    }
}

/// Copies one simplified layout on the calling thread: the whole copy, or one of its pieces
/// (`whole` is the whole copy's size in bytes: whether a transpose streams depends on it, not on
/// the piece's, so that splitting a copy does not change how it stores).
///
/// # Safety
/// As for `copy_strided`, for the layout `dims` describes from `src` and `dst`.
unsafe fn copy_dims(dims: &[Dim], src: *const u8, dst: *mut u8, itemsize: usize, isa: Isa, whole: usize) {
    let size = itemsize as isize;
    let Some((&inner, outer)) = dims.split_last() else {
        // SAFETY: a 0-d (or all-ones) layout is a single element, valid by the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, itemsize) };
        return;
    };
    if inner.dst == size {
        if inner.src == size {
            let row = inner.n * itemsize;
            let total = outer.iter().map(|d| d.n).product::<usize>() * row;
            if !outer.is_empty() && total >= ROW_STREAM_MIN_BYTES && row >= STREAM_MIN_ROW {
                // SAFETY: each row is `row` contiguous bytes in both layouts.
                unsafe { for_each_outer(outer, src, dst, |s, d| stream_copy(s, d, row)) };
                store_fence();
                return;
            }
            // SAFETY: each row is `row` contiguous bytes in both layouts.
            unsafe { for_each_outer(outer, src, dst, |s, d| std::ptr::copy_nonoverlapping(s, d, row)) };
            return;
        }
        // A transpose: some outer dimension is the source's contiguous one.
        if let Some(k) = outer.iter().rposition(|d| d.src == size) {
            let across = outer[k];
            let rest: Dims = outer.iter().enumerate().filter(|&(i, _)| i != k).map(|(_, &d)| d).collect();
            let plane = |s, d| transpose::Plane {
                src: s,
                src_ld: inner.src,
                dst: d,
                dst_ld: across.dst,
                ni: across.n,
                nj: inner.n,
                stream: whole >= transpose::STREAM_MIN_BYTES,
            };
            // SAFETY: each plane is exactly the elements of the two dimensions at one position
            // of the others.
            unsafe {
                for_each_outer(&rest, src, dst, |s, d| transpose::transpose(plane(s, d), itemsize, isa))
            };
            return;
        }
        if inner.src == -size || inner.src == 0 {
            let reversed = inner.src != 0;
            // SAFETY: each row is `inner.n` elements, reversed or repeated in the source.
            unsafe {
                for_each_outer(outer, src, dst, |s, d| {
                    dispatch_size!(itemsize, dense_row, s, d, inner.n, reversed)
                })
            };
            return;
        }
        // Small forward steps (slices such as `[::2]`): a gather the compiler vectorises.
        if let Some(step @ 2..=4) = (inner.src > 0 && inner.src % size == 0).then_some(inner.src / size) {
            // SAFETY: each row is `inner.n` elements, `step` elements apart in the source.
            unsafe {
                for_each_outer(outer, src, dst, |s, d| {
                    dispatch_size!(itemsize, stepped_row, s, d, inner.n, step as usize)
                })
            };
            return;
        }
    }
    // SAFETY: the row loop visits exactly the elements of the inner dimension.
    unsafe { for_each_outer(outer, src, dst, |s, d| dispatch_size!(itemsize, strided_row, s, d, inner)) };
}

/// Calls `f(src_row, dst_row, n, src_stride, dst_stride)` for every row of the simplified
/// layouts (strides in bytes): the walker for element-wise kernels other than copies (casts).
/// A 0-d layout is one row of one element. Layouts of `PARALLEL_MIN_ELEMENTS` elements or more
/// are split across threads like copies, so `f` may run on several threads at once, on disjoint
/// rows.
///
/// # Safety
/// As for `copy_strided`: every described address must be valid for `f`'s accesses.
pub unsafe fn for_each_row(
    src: *const u8,
    src_strides: &[isize],
    dst: *mut u8,
    dst_strides: &[isize],
    shape: &[usize],
    f: impl Fn(*const u8, *mut u8, usize, isize, isize) + Sync,
) {
    // SAFETY: forwarded contract.
    unsafe { for_each_row_with(src, src_strides, dst, dst_strides, shape, f, PARALLEL_MIN_ELEMENTS) }
}

/// `for_each_row` with the element count from which it splits the work across threads.
///
/// # Safety
/// As for `for_each_row`.
unsafe fn for_each_row_with(
    src: *const u8,
    src_strides: &[isize],
    dst: *mut u8,
    dst_strides: &[isize],
    shape: &[usize],
    f: impl Fn(*const u8, *mut u8, usize, isize, isize) + Sync,
    parallel_min_elements: usize,
) {
    let Some(dims) = simplify(shape, src_strides, dst_strides) else { return };
    let numel = shape.iter().product::<usize>();
    let threads = threads_for(numel, parallel_min_elements);
    // SAFETY: per the function contract; each piece is a sub-layout.
    unsafe {
        in_pieces(&dims, threads, src, dst, |piece, s, d| match piece.split_last() {
            None => f(s, d, 1, 0, 0),
            Some((&inner, outer)) => {
                for_each_outer(outer, s, d, |s, d| f(s, d, inner.n, inner.src, inner.dst))
            }
        })
    };
}

/// Row copies (padded or broadcast rows) at least this large write their destination with
/// non-temporal stores (measured on float32 rows: even at 4 MiB, faster from 16 MiB on).
const ROW_STREAM_MIN_BYTES: usize = 8 << 20;

/// Rows of at least this many bytes are worth streaming (aligning the destination costs a
/// partial vector at each end).
const STREAM_MIN_ROW: usize = 256;

/// Copies `len` bytes with non-temporal stores where the target has them: the destination's
/// lines are written without first being read from memory. Callers end the copy with
/// `store_fence`.
///
/// # Safety
/// `s` is readable and `d` writable for `len` bytes; they do not overlap.
#[inline(always)]
unsafe fn stream_copy(s: *const u8, d: *mut u8, len: usize) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if len >= 32 {
        use std::arch::x86_64::*;
        // Plain stores up to the destination's first 16-byte boundary and after its last one.
        let head = d.align_offset(16).min(len);
        let body = (len - head) & !15;
        // SAFETY: all three pieces lie in the two ranges of the function contract; the body's
        // destination is 16-byte aligned (SSE2 is part of x86-64).
        unsafe {
            std::ptr::copy_nonoverlapping(s, d, head);
            let (s, d) = (s.add(head), d.add(head));
            for k in (0..body).step_by(16) {
                _mm_stream_si128(d.add(k).cast(), _mm_loadu_si128(s.add(k).cast()));
            }
            std::ptr::copy_nonoverlapping(s.add(body), d.add(body), len - head - body);
        }
        return;
    }
    // SAFETY: per the function contract.
    unsafe { std::ptr::copy_nonoverlapping(s, d, len) }
}

/// Orders non-temporal stores before whatever follows (a copy's results are read by the next
/// operation, perhaps on another thread).
#[inline(always)]
fn store_fence() {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a store fence has no memory-safety preconditions.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Moves `n` bytes (a non-specialised element).
///
/// # Safety
/// `s` is readable and `d` writable for `n` bytes; they do not overlap.
#[inline(always)]
unsafe fn move_bytes(s: *const u8, d: *mut u8, n: usize) {
    // SAFETY: per the function contract.
    unsafe { std::ptr::copy_nonoverlapping(s, d, n) }
}

/// Moves one element: a typed move when `N` is the element size, else `itemsize` bytes.
///
/// # Safety
/// `s` is readable and `d` writable for `itemsize` bytes.
#[inline(always)]
unsafe fn move_elem<const N: usize>(s: *const u8, d: *mut u8, itemsize: usize) {
    // SAFETY: per the function contract; `[u8; N]` has alignment 1.
    unsafe {
        if N == itemsize {
            d.cast::<[u8; N]>().write_unaligned(s.cast::<[u8; N]>().read_unaligned())
        } else {
            move_bytes(s, d, itemsize)
        }
    }
}

/// A destination row of `n` contiguous elements from a reversed (`reversed`) or broadcast source.
fn dense_row<const N: usize>(s: *const u8, d: *mut u8, n: usize, reversed: bool, itemsize: usize) {
    if N != itemsize {
        let step = if reversed { -(itemsize as isize) } else { 0 };
        return strided_row::<N>(s, d, Dim { n, src: step, dst: itemsize as isize }, itemsize);
    }
    // SAFETY: the destination row is `n` contiguous elements (copy_strided's contract) that
    // nothing else references during the copy; `[u8; N]` has alignment 1.
    let out = unsafe { std::slice::from_raw_parts_mut(d.cast::<[u8; N]>(), n) };
    if reversed {
        // SAFETY: the source row is the `n` elements ending at `s`, read-only during the copy.
        let src = unsafe { std::slice::from_raw_parts(s.wrapping_sub((n - 1) * N).cast::<[u8; N]>(), n) };
        // Indexing from both ends of equal-length slices: the compiler drops the bounds checks
        // and vectorises with reversing shuffles.
        for (o, x) in out.iter_mut().zip(src.iter().rev()) {
            *o = *x;
        }
    } else {
        // SAFETY: `s` is one readable element.
        out.fill(unsafe { s.cast::<[u8; N]>().read_unaligned() });
    }
}

/// A destination row of `n` contiguous elements taken every `step` (2, 3 or 4) elements of the
/// source, with the step a constant in each loop so that the compiler vectorises the gather.
fn stepped_row<const N: usize>(s: *const u8, d: *mut u8, n: usize, step: usize, itemsize: usize) {
    #[inline(always)]
    fn gather<const N: usize, const K: usize>(s: *const u8, d: *mut u8, n: usize) {
        // SAFETY: the source row is elements 0, K, .., (n - 1) * K from `s` and the destination
        // row `n` contiguous elements (copy_strided's contract), which nothing else writes during
        // the copy; `[u8; N]` has alignment 1.
        let (src, out) = unsafe {
            (
                std::slice::from_raw_parts(s.cast::<[u8; N]>(), (n - 1) * K + 1),
                std::slice::from_raw_parts_mut(d.cast::<[u8; N]>(), n),
            )
        };
        // Whole groups of K first (no bounds checks), then the last element on its own: the
        // source ends there, K - 1 elements short of a whole group.
        for (o, group) in out.iter_mut().zip(src.chunks_exact(K)) {
            *o = group[0];
        }
        out[n - 1] = src[(n - 1) * K];
    }
    if N != itemsize {
        let dim = Dim { n, src: (step * itemsize) as isize, dst: itemsize as isize };
        return strided_row::<N>(s, d, dim, itemsize);
    }
    match step {
        2 => gather::<N, 2>(s, d, n),
        3 => gather::<N, 3>(s, d, n),
        _ => gather::<N, 4>(s, d, n),
    }
}

fn strided_row<const N: usize>(s: *const u8, d: *mut u8, dim: Dim, itemsize: usize) {
    let (mut s, mut d) = (s, d);
    for _ in 0..dim.n {
        // SAFETY: copy_strided's caller guarantees every element address is valid.
        unsafe { move_elem::<N>(s, d, itemsize) };
        s = s.wrapping_offset(dim.src);
        d = d.wrapping_offset(dim.dst);
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
        // SAFETY: `reference` has just read every source element of this layout with checked
        // indexing (and would have panicked on one outside `src`); `dst` is a separate, compact
        // row-major buffer of exactly the shape's elements.
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

    /// A small deterministic generator (SplitMix64): the property tests need no dependency and
    /// every failure replays from its case number.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, one_in: usize) -> bool {
            self.below(one_in) == 0
        }
        fn shuffle(&mut self, v: &mut [usize]) {
            for i in (1..v.len()).rev() {
                v.swap(i, self.below(i + 1));
            }
        }
    }

    /// A random source layout over a buffer: dimensions in a random memory order, with steps,
    /// reversed and broadcast (zero-stride) dimensions, and a random offset. Returns shape,
    /// element strides, first element and buffer length in elements.
    fn random_layout(rng: &mut Rng, max_extent: usize) -> (Vec<usize>, Vec<isize>, isize, usize) {
        let ndim = rng.below(5);
        let shape: Vec<usize> =
            (0..ndim).map(|_| if rng.chance(12) { 1 } else { rng.below(max_extent + 1).max(1) }).collect();
        let shape =
            if rng.chance(40) && ndim > 0 { shape.iter().map(|&n| n * (n % 2)).collect() } else { shape };
        let mut order: Vec<usize> = (0..ndim).collect();
        rng.shuffle(&mut order);
        let mut strides = vec![0isize; ndim];
        let mut acc = 1isize;
        for &k in order.iter().rev() {
            let step = if rng.chance(3) { 1 + rng.below(3) as isize } else { 1 };
            strides[k] = acc * step;
            acc *= (shape[k] as isize * step).max(1);
        }
        let mut first = rng.below(3) as isize;
        for k in 0..ndim {
            if rng.chance(6) {
                strides[k] = 0;
            } else if rng.chance(4) {
                strides[k] = -strides[k];
                first += (shape[k].max(1) as isize - 1) * -strides[k];
            }
        }
        let reach: isize =
            shape.iter().zip(&strides).map(|(&n, &s)| (n.max(1) as isize - 1) * s.max(0)).sum();
        (shape, strides, first, (first + reach + 1 + rng.below(3) as isize) as usize)
    }

    /// Compact destination strides (bytes) in a random dimension order (row-major most often).
    fn random_destination(rng: &mut Rng, shape: &[usize], itemsize: usize) -> Vec<isize> {
        let mut order: Vec<usize> = (0..shape.len()).collect();
        if rng.chance(3) {
            rng.shuffle(&mut order);
        }
        let mut strides = vec![0isize; shape.len()];
        let mut acc = itemsize as isize;
        for &k in order.iter().rev() {
            strides[k] = acc;
            acc *= shape[k].max(1) as isize;
        }
        strides
    }

    /// Reference: every element, by index, from its source to its destination offset.
    fn reference_into(
        src: &[u8],
        first: isize,
        shape: &[usize],
        ss: &[isize],
        ds: &[isize],
        dst: &mut [u8],
        size: usize,
    ) {
        let n: usize = shape.iter().product();
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            let so = first + idx.iter().zip(ss).map(|(&i, &s)| i as isize * s).sum::<isize>();
            let d = idx.iter().zip(ds).map(|(&i, &s)| i as isize * s).sum::<isize>() as usize;
            dst[d..d + size].copy_from_slice(&src[so as usize..so as usize + size]);
            for a in (0..shape.len()).rev() {
                idx[a] += 1;
                if idx[a] < shape[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
    }

    fn check_random(
        rng: &mut Rng,
        max_extent: usize,
        itemsize: usize,
        parallel_min_bytes: usize,
        case: usize,
    ) {
        let (shape, strides_el, first_el, len_el) = random_layout(rng, max_extent);
        let src: Vec<u8> = (0..len_el * itemsize).map(|_| rng.next() as u8).collect();
        let ss: Vec<isize> = strides_el.iter().map(|s| s * itemsize as isize).collect();
        let ds = random_destination(rng, &shape, itemsize);
        let out_len = shape.iter().product::<usize>() * itemsize;
        let (mut expect, mut got) = (vec![0u8; out_len], vec![0u8; out_len]);
        let first = first_el * itemsize as isize;
        reference_into(&src, first, &shape, &ss, &ds, &mut expect, itemsize);
        // SAFETY: `reference_into` has just walked the same source and destination offsets with
        // checked indexing, into `expect`, the length of `got`; `first` is inside `src` by
        // construction; the destination strides are compact, so no two elements overlap.
        unsafe {
            copy_strided_with(
                src.as_ptr().offset(first),
                &ss,
                got.as_mut_ptr(),
                &ds,
                &shape,
                itemsize,
                parallel_min_bytes,
            )
        };
        // The portable kernels too, on a CPU that has the SIMD ones.
        let mut portable = vec![0u8; out_len];
        if let Some(dims) = simplify(&shape, &ss, &ds) {
            // SAFETY: `dims` is the same layout merged, just copied safely into `got`, the length
            // of `portable`; the portable kernels need no CPU feature.
            unsafe {
                copy_dims(
                    &dims,
                    src.as_ptr().offset(first),
                    portable.as_mut_ptr(),
                    itemsize,
                    Isa::Base,
                    out_len,
                )
            };
        }
        assert!(
            got == expect && portable == expect,
            "case {case}: shape {shape:?} source strides {strides_el:?} (elements) first {first_el} \
             destination strides {ds:?} (bytes) itemsize {itemsize}"
        );
    }

    #[test]
    fn random_layouts_match_the_reference() {
        let (cases, max_extent) = if cfg!(miri) { (30, 5) } else { (3000, 24) };
        let mut rng = Rng(5);
        for case in 0..cases {
            let itemsize = [1, 2, 3, 4, 8, 16][case % 6];
            // Every fifth case is split across threads from its first byte.
            let parallel_min_bytes = if case % 5 == 0 { 0 } else { usize::MAX };
            check_random(&mut rng, max_extent, itemsize, parallel_min_bytes, case);
        }
    }

    /// The row walker for element-wise kernels, whole and split across threads, moving elements
    /// one by one with the strides it hands out: the same result as the reference.
    #[test]
    fn rows_walk_every_element_once() {
        let mut rng = Rng(11);
        for case in 0..if cfg!(miri) { 12 } else { 400 } {
            let itemsize = [1, 4, 8][case % 3];
            let (shape, strides_el, first_el, len_el) =
                random_layout(&mut rng, if cfg!(miri) { 5 } else { 12 });
            let src: Vec<u8> = (0..len_el * itemsize).map(|_| rng.next() as u8).collect();
            let ss: Vec<isize> = strides_el.iter().map(|s| s * itemsize as isize).collect();
            let ds = random_destination(&mut rng, &shape, itemsize);
            let out_len = shape.iter().product::<usize>() * itemsize;
            let (mut expect, mut got) = (vec![0u8; out_len], vec![0u8; out_len]);
            let first = first_el * itemsize as isize;
            reference_into(&src, first, &shape, &ss, &ds, &mut expect, itemsize);
            let row = |s: *const u8, d: *mut u8, n: usize, sst: isize, dst: isize| {
                for k in 0..n as isize {
                    // SAFETY: `row` goes only to `for_each_row_with` below, which hands it rows of
                    // that layout: each of the n elements lies in `src` and in `got`, separate
                    // buffers (`reference_into` walked the same offsets with checked indexing).
                    unsafe { std::ptr::copy_nonoverlapping(s.offset(k * sst), d.offset(k * dst), itemsize) };
                }
            };
            let parallel_min_elements = if case % 2 == 0 { 0 } else { usize::MAX };
            // SAFETY: as in `check_random`: `reference_into` has walked these offsets with
            // checked indexing, `first` is inside `src`, and the destination strides are compact.
            unsafe {
                for_each_row_with(
                    src.as_ptr().offset(first),
                    &ss,
                    got.as_mut_ptr(),
                    &ds,
                    &shape,
                    row,
                    parallel_min_elements,
                )
            };
            assert!(got == expect, "case {case}: shape {shape:?} source strides {strides_el:?} (elements)");
        }
    }

    /// Planes larger than a tile, with ragged edges, for every specialised element size: the
    /// micro-kernels and the tile loop's edges against the reference.
    #[test]
    fn transposes_across_tiles_match_the_reference() {
        for itemsize in [1, 2, 4, 8, 16, 3] {
            let edge = transpose::tile_edge(itemsize);
            let (ni, nj) = if cfg!(miri) { (11, 10) } else { (edge + 13, 2 * edge + 5) };
            for (src_ld, flip) in [(ni, false), (ni + 3, false), (ni, true)] {
                let len = nj * src_ld;
                let src: Vec<u8> = (0..len * itemsize).map(|i| (i * 31 + i / 7) as u8).collect();
                let size = itemsize as isize;
                let (first, ld) =
                    if flip { ((nj - 1) * src_ld, -(src_ld as isize)) } else { (0, src_ld as isize) };
                let ss = [size, ld * size];
                let ds = [size * nj as isize, size];
                let shape = [ni, nj];
                let mut expect = vec![0u8; ni * nj * itemsize];
                let mut got = expect.clone();
                let first = (first * itemsize) as isize;
                reference_into(&src, first, &shape, &ss, &ds, &mut expect, itemsize);
                // SAFETY: element (i, j) reads source element i +- j * src_ld from `first`, inside
                // the nj * src_ld of `src` (ni <= src_ld), and writes element i * nj + j of `got`
                // (ni * nj elements); `reference_into` has just checked the same offsets.
                unsafe {
                    copy_strided(src.as_ptr().offset(first), &ss, got.as_mut_ptr(), &ds, &shape, itemsize)
                };
                assert!(got == expect, "{ni}x{nj} itemsize {itemsize} source pitch {src_ld} flipped {flip}");
            }
        }
    }

    /// Every instruction set this CPU can run, down to the portable one.
    fn isas() -> Vec<Isa> {
        match Isa::detect() {
            Isa::Avx512 => vec![Isa::Avx512, Isa::Avx2, Isa::Base],
            Isa::Avx2 => vec![Isa::Avx2, Isa::Base],
            Isa::Base => vec![Isa::Base],
        }
    }

    /// Planes around a tile's edge (ragged tiles, odd pitches, flipped source rows, destination
    /// rows compact or padded to whole lines, so that ragged planes stream too), written with
    /// ordinary and with non-temporal stores, with either instruction set and into destinations
    /// of every alignment class: the same result as the reference.
    #[test]
    fn transposes_by_plan_match_the_reference() {
        for itemsize in [1, 2, 4, 8, 16, 3] {
            let edge = transpose::tile_edge(itemsize);
            let shapes: &[(usize, usize)] = if cfg!(miri) {
                &[(17, 18)]
            } else {
                &[(edge, edge), (edge + 5, edge / 2 + 19), (edge + 70, edge / 2 + 45), (5, 7)]
            };
            // Source pitches: compact, odd, flipped, and whole lines; destination pitches: compact,
            // and whole lines (so that it streams); the source from a line boundary, and 16 bytes
            // past one.
            let mut layouts = vec![];
            for &(ni, nj) in shapes {
                let pitches = [(ni, false), (ni + 1, false), (ni, true), (ni.next_multiple_of(64), false)];
                for (pitch, flip) in pitches {
                    for dpitch in [nj, nj.next_multiple_of(64)] {
                        for soff in [0, 16] {
                            layouts.push((ni, nj, pitch, flip, dpitch, soff));
                        }
                    }
                }
            }
            if cfg!(miri) {
                layouts.truncate(4);
            }
            for (ni, nj, pitch, flip, dpitch, soff) in layouts {
                let len = nj * pitch * itemsize;
                let mut buf = vec![0u8; len + 128];
                let at = buf.as_ptr().align_offset(64) + soff;
                let src = &mut buf[at..at + len];
                src.iter_mut().enumerate().for_each(|(i, x)| *x = (i * 13 + i / 5) as u8);
                let src = &*src;
                let size = itemsize as isize;
                let (first, ld) =
                    if flip { ((nj - 1) * pitch, -(pitch as isize)) } else { (0, pitch as isize) };
                let first = (first * itemsize) as isize;
                let (ss, ds) = ([size, ld * size], [dpitch as isize * size, size]);
                let mut expect = vec![0u8; ni * dpitch * itemsize];
                reference_into(src, first, &[ni, nj], &ss, &ds, &mut expect, itemsize);
                for stream in [false, true] {
                    for isa in isas() {
                        for shift in [0, 16, 1] {
                            let mut got = vec![0u8; expect.len() + 128];
                            // Line-aligned, so that `shift` decides the destination's alignment.
                            let at = got.as_ptr().align_offset(64) + shift;
                            let plane = transpose::Plane {
                                // SAFETY: `first` is inside `src` (see `reference_into`).
                                src: unsafe { src.as_ptr().offset(first) },
                                src_ld: ss[1],
                                // SAFETY: at < 64 + 16, inside the 128 spare bytes of `got`.
                                dst: unsafe { got.as_mut_ptr().add(at) },
                                dst_ld: ds[0],
                                ni,
                                nj,
                                stream,
                            };
                            // SAFETY: element (i, j) is read at first + i + j * ld elements
                            // (inside `src`, as `reference_into` has checked) and written at
                            // i * dpitch + j of the ni * dpitch elements from `at`, inside
                            // `got` (at < 80 of 128 spare bytes); separate buffers; `isa` is
                            // Base or detected.
                            unsafe { transpose::transpose(plane, itemsize, isa) };
                            assert!(
                                got[at..at + expect.len()] == expect[..],
                                "{ni}x{nj} itemsize {itemsize} pitch {pitch} flip {flip} stream {stream} \
                                     {isa:?} shift {shift} destination pitch {dpitch} source offset {soff}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Random permutations of compact arrays of 2 to 4 dimensions, large enough to use whole
    /// micro-kernel blocks and tiles, for every element size, with the source steps and flips of
    /// `random_layout` on top: the same result as the reference, on one thread and split.
    #[test]
    fn random_permutations_match_the_reference() {
        // (cases, largest extent of the two long axes, of the others)
        let (cases, long, short) = if cfg!(miri) { (12, 40, 3) } else { (240, 300, 12) };
        let mut rng = Rng(17);
        for case in 0..cases {
            let itemsize = [1, 2, 4, 8, 16, 3][case % 6];
            let ndim = 2 + rng.below(3);
            // One or two long axes, the others short.
            let mut shape: Vec<usize> = (0..ndim).map(|_| 1 + rng.below(short)).collect();
            for _ in 0..2 {
                let axis = rng.below(ndim);
                shape[axis] = 1 + rng.below(long);
            }
            // At most 100 000 elements: halve the longest axis until then.
            while shape.iter().product::<usize>() > 100_000 {
                let longest = (0..ndim).max_by_key(|&k| shape[k]).unwrap();
                shape[longest] /= 2;
            }
            let mut order: Vec<usize> = (0..ndim).collect();
            rng.shuffle(&mut order);
            // Source: compact in `order` (last fastest), some axes stepped or flipped.
            let mut strides = vec![0isize; ndim];
            let mut acc = 1isize;
            for &k in order.iter().rev() {
                let step = if rng.chance(5) { 2 } else { 1 };
                strides[k] = acc * step;
                acc *= shape[k] as isize * step;
            }
            let mut first = 0isize;
            for k in 0..ndim {
                if rng.chance(5) {
                    first += (shape[k] as isize - 1) * strides[k];
                    strides[k] = -strides[k];
                }
            }
            let len_el = acc as usize;
            let src: Vec<u8> = (0..len_el * itemsize).map(|_| rng.next() as u8).collect();
            let ss: Vec<isize> = strides.iter().map(|s| s * itemsize as isize).collect();
            let ds = row_major_bytes(&shape, itemsize);
            let out_len = shape.iter().product::<usize>() * itemsize;
            let mut expect = vec![0u8; out_len];
            let first = first * itemsize as isize;
            reference_into(&src, first, &shape, &ss, &ds, &mut expect, itemsize);
            for parallel_min_bytes in [usize::MAX, 0] {
                let mut got = vec![0u8; out_len];
                // SAFETY: `reference_into` has just walked the same offsets with checked
                // indexing; `first` is inside `src`; the destination is compact row-major.
                unsafe {
                    copy_strided_with(
                        src.as_ptr().offset(first),
                        &ss,
                        got.as_mut_ptr(),
                        &ds,
                        &shape,
                        itemsize,
                        parallel_min_bytes,
                    )
                };
                assert!(
                    got == expect,
                    "case {case}: shape {shape:?} source strides {strides:?} (elements) itemsize {itemsize} \
                     split from {parallel_min_bytes}"
                );
            }
        }
    }

    /// A transpose large enough for non-temporal stores, into an aligned and a misaligned
    /// destination (where they cannot be used).
    #[test]
    #[cfg_attr(miri, ignore = "9 MiB is too slow under Miri; the same tile loop runs there on small planes")]
    fn large_transposes_stream_correctly() {
        let n = 1500usize;
        assert!(n * n * 4 >= transpose::STREAM_MIN_BYTES);
        let src: Vec<u32> = (0..(n * n) as u32).collect();
        for shift in [0usize, 1] {
            let mut dst = vec![0u32; n * n + 1];
            let s = 4isize;
            let stride = n as isize * s;
            // SAFETY: element (i, j) is read at u32 i + j * n of `src` (n * n) and written at
            // u32 i * n + j of `dst[shift..]`, which holds at least n * n; separate buffers.
            unsafe {
                copy_strided(
                    src.as_ptr().cast(),
                    &[s, stride],
                    dst[shift..].as_mut_ptr().cast(),
                    &[stride, s],
                    &[n, n],
                    4,
                )
            };
            for (k, &v) in dst[shift..shift + n * n].iter().enumerate() {
                let (i, j) = (k / n, k % n);
                assert_eq!(v, (j * n + i) as u32, "element ({i}, {j}), destination shifted by {shift}");
            }
        }
    }

    /// The streaming row copy: every length around its head, body and tail, every destination
    /// offset in a vector.
    #[test]
    fn stream_copy_moves_every_byte() {
        let src: Vec<u8> = (0..300).map(|i| (i * 7 + 1) as u8).collect();
        for len in (0..if cfg!(miri) { 40 } else { 200 }).step_by(if cfg!(miri) { 3 } else { 1 }) {
            for shift in 0..16 {
                let mut dst = vec![0u8; len + 32];
                // SAFETY: len < 200 bytes, and `src[3..]` holds 297, `dst[shift..]` len + 32 - shift
                // (shift < 16); separate buffers.
                unsafe { stream_copy(src[3..].as_ptr(), dst[shift..].as_mut_ptr(), len) };
                store_fence();
                assert_eq!(&dst[shift..shift + len], &src[3..3 + len], "length {len}, shift {shift}");
                assert!(dst[..shift].iter().chain(&dst[shift + len..]).all(|&b| b == 0));
            }
        }
    }

    /// Row copies large enough to stream (broadcast rows and padded rows) into an aligned and a
    /// misaligned destination, for several element sizes.
    #[test]
    #[cfg_attr(miri, ignore = "8 MiB is too slow under Miri; stream_copy runs there on its own")]
    fn large_row_copies_stream_correctly() {
        for (itemsize, shift) in [(4, 0), (4, 1), (1, 3), (8, 0), (16, 5)] {
            let (rows, cols) = ((ROW_STREAM_MIN_BYTES / itemsize).div_ceil(1021), 1021);
            let src: Vec<u8> =
                (0..(rows * (cols + 3) + 1) * itemsize).map(|i| (i * 31 + i / 9) as u8).collect();
            let size = itemsize as isize;
            for ss in [[0, size], [(cols as isize + 3) * size, size]] {
                let ds = [cols as isize * size, size];
                let mut expect = vec![0u8; rows * cols * itemsize];
                reference_into(&src, 0, &[rows, cols], &ss, &ds, &mut expect, itemsize);
                let mut got = vec![0u8; expect.len() + shift];
                // SAFETY: source element (r, c) lies at c or r * (cols + 3) + c, both below
                // rows * (cols + 3) elements of `src`; the destination is compact row-major over
                // `got[shift..]`, exactly rows * cols elements; separate buffers.
                unsafe {
                    copy_strided(src.as_ptr(), &ss, got[shift..].as_mut_ptr(), &ds, &[rows, cols], itemsize)
                };
                assert!(
                    got[shift..] == expect[..],
                    "itemsize {itemsize} shift {shift} source strides {ss:?}"
                );
            }
        }
    }

    #[test]
    fn zero_extent_copies_nothing() {
        let mut dst = [9u8; 4];
        // SAFETY: the shape has a zero extent, so no element of either layout is addressed (the
        // null source is never read).
        unsafe { copy_strided(std::ptr::null(), &[4, 1], dst.as_mut_ptr(), &[4, 1], &[0, 4], 1) };
        assert_eq!(dst, [9u8; 4]);
    }

    #[test]
    fn simplify_merges_compact_layouts() {
        let d = simplify(&[2, 3, 4], &[48, 16, 4], &[48, 16, 4]).unwrap();
        assert_eq!(*d, [Dim { n: 24, src: 4, dst: 4 }]);
    }
}

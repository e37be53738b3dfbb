//! Transposing copies: `dst[i][j] = src[j][i]` over a plane whose source is contiguous along `i`
//! and whose destination is contiguous along `j`, cache-blocked in tiles, each tile made of
//! register blocks that a SIMD micro-kernel transposes in registers.
//!
//! How the blocks reach the destination (`tiles`):
//! - *line blocks* (AVX-512, 4- to 16-byte elements: each destination row of a block is one whole
//!   line), when streaming to line-aligned rows: straight from the registers with non-temporal
//!   stores, band by band (`lines`);
//! - small planes: straight into the destination with ordinary stores, where the rows a block
//!   writes do not evict each other from the first-level cache (`lines` too);
//! - otherwise each tile is transposed into a buffer on the stack and then written out row by
//!   row, with non-temporal (cache-bypassing) stores when the copy is larger than the caches.
//!
//! Nothing is allocated: the buffer is `TILE_BUFFER_BYTES` of stack, of which a tile uses
//! `tile_bytes`.
//!
//! Micro-kernels (x86-64), chosen by `Isa`: with AVX-512 (F and BW), 16 rows by 64 one-byte and 8
//! by 32 two-byte elements (each source line loaded once, whole), and the line blocks 16x16
//! four-byte, 8x8 eight-byte and 4x4 sixteen-byte; with AVX2, 16 rows by 32 one-byte, 8x8 two- and
//! four-byte and 4x4 eight-byte elements; else SSE2 (always present): 16x16 one-byte, 8x8
//! two-byte, 4x4 four-byte and 2x2 eight-byte elements. Sixteen-byte elements without AVX-512,
//! other element sizes, other architectures and Miri use the portable element loop, still tiled.

use std::mem::MaybeUninit;

use super::{Isa, move_bytes};

/// One plane to transpose. Element `(i, j)` is at `src + i * size + j * src_ld` and goes to
/// `dst + i * dst_ld + j * size` (`size` is the element size; the leading strides are in bytes
/// and may be anything, negative and zero included).
#[derive(Clone, Copy)]
pub(super) struct Plane {
    pub src: *const u8,
    pub src_ld: isize,
    pub dst: *mut u8,
    pub dst_ld: isize,
    /// Extent along `i` (the source's contiguous dimension).
    pub ni: usize,
    /// Extent along `j` (the destination's contiguous dimension).
    pub nj: usize,
    /// Write the destination with non-temporal stores (for copies much larger than the caches).
    pub stream: bool,
}

/// Transposing copies at least this large write their destination with non-temporal stores:
/// they bypass the caches, so the destination's lines are not first read from memory. Measured
/// with `bench/copy_bench.py` (see docs/benchmarks.md): at 16 MiB, streaming was 1.5-3x faster
/// than ordinary stores for 4- and 8-byte elements, even though source and destination fit in
/// this machine's 32 MiB last-level cache.
pub(super) const STREAM_MIN_BYTES: usize = 8 << 20;

/// Planes of at most this many bytes, with blocks that write whole lines (`Micro::LINE`), are
/// transposed straight into the destination, without the tile buffer: their destination stays
/// in the caches, and each block writes each of its destination lines whole, once, so the
/// buffer's second pass costs more than it saves (measured on the 64 KiB and 1 MiB rows of
/// `bench/copy_bench.py`, docs/benchmarks.md). Blocks that write a line in 16-byte pieces (one-
/// and two-byte elements) lost 2-3x this way on 32x32x32 permutations, whose destination rows,
/// a power of two apart, evict each other before their lines are complete: they keep the buffer
/// unless the rows of a block fit the first-level cache together (they gained 1.7-2.9x on the
/// 64 KiB 2-D transposes).
const SMALL_PLANE_BYTES: usize = 256 << 10;

/// The tile buffer on the stack: room for the largest tile (`tile_bytes`). Threads that copy
/// (the caller's, and the scoped threads of a split copy, which have 2 MiB) need this much
/// stack besides their own.
const TILE_BUFFER_BYTES: usize = 64 << 10;

/// Bytes of tile per element size. Measured on the Zen 5 this project runs on (docs/
/// benchmarks.md), 16 MiB transposes and permutations with tiles of 8, 16, 32 and 64 KiB: one-
/// to four-byte elements were fastest with the largest (one-byte ones lost half their speed at
/// 8 KiB), eight-byte ones at 32 KiB, and sixteen-byte ones at 16 KiB (2.5x faster than with
/// 64 KiB tiles, which is what they had before).
const fn tile_bytes(itemsize: usize) -> usize {
    match itemsize {
        1..=4 => 64 << 10,
        8 => 32 << 10,
        _ => 16 << 10,
    }
}

/// The edge, in elements, of a square tile for elements of `itemsize` bytes: the largest
/// multiple of 16 (every micro-kernel's block edge divides 16) whose tile fits in `tile_bytes`.
pub(super) const fn tile_edge(itemsize: usize) -> usize {
    let mut edge = 256;
    while edge > 16 && edge * edge * itemsize > tile_bytes(itemsize) {
        edge -= 16;
    }
    edge
}

#[repr(C, align(64))]
struct TileBuffer([MaybeUninit<u8>; TILE_BUFFER_BYTES]);

/// A register-block transpose of `R x R` elements, and optionally of `R` source rows by `WIDE`
/// elements (`WIDE` destination rows of `R`): a wider block that reads whole cache lines.
trait Micro {
    const R: usize;
    /// 0 when there is no wide block.
    const WIDE: usize = 0;
    /// # Safety
    /// The `R x R` block at `(s, sl)` is readable and the one at `(d, dl)` writable (as in
    /// `Plane`); the CPU has the features the implementation is compiled for.
    unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize);
    /// # Safety
    /// As for `run`, for the `WIDE x R` block; only called when `WIDE` is not 0.
    unsafe fn run_wide(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        let _ = (s, sl, d, dl);
        unreachable!("no wide block")
    }
    /// Whether `run_line` exists: each of the block's `R` destination rows is one whole 64-byte
    /// line, which it writes with one non-temporal store straight from a register.
    const LINE: bool = false;
    /// # Safety
    /// As for `run`, and every destination row of the block is a 64-byte aligned line; only
    /// called when `LINE`.
    unsafe fn run_line(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        let _ = (s, sl, d, dl);
        unreachable!("no line block")
    }
    /// How many line blocks side by side `run_line_run` transposes at once (1: none): `R` source
    /// rows by `R * LINE_RUN` elements, written as `LINE_RUN` consecutive lines of each of the
    /// `R` destination rows.
    const LINE_RUN: usize = 1;
    /// # Safety
    /// As for `run_line`, for the `R x (R * LINE_RUN)` block; only called when `LINE_RUN > 1`.
    unsafe fn run_line_run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        let _ = (s, sl, d, dl);
        unreachable!("no run of line blocks")
    }
}

/// Transposes `p` with elements of `itemsize` bytes.
///
/// # Safety
/// Every element of the plane is readable at its source address and writable at its destination
/// address, and the two ranges do not overlap; `isa` is `Isa::Base` or what `Isa::detect` found.
pub(super) unsafe fn transpose(p: Plane, itemsize: usize, isa: Isa) {
    // SAFETY: in every arm, per this function's contract; AVX2 kernels run only when `isa` says
    // the CPU has AVX2.
    unsafe {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        match (itemsize, isa) {
            (1, Isa::Avx512) if streams_lines(&p) => {
                return x86::squares_avx512::<1, x86::S64x1, x86::B64x16x1>(p);
            }
            (2, Isa::Avx512) if streams_lines(&p) => {
                return x86::squares_avx512::<2, x86::S32x2, x86::B32x8x2>(p);
            }
            (1, Isa::Avx512) => return x86::tiles_avx512::<1, x86::B64x16x1>(p),
            (2, Isa::Avx512) => return x86::tiles_avx512::<2, x86::B32x8x2>(p),
            (4, Isa::Avx512) => return x86::tiles_avx512::<4, x86::B16x16x4>(p),
            (8, Isa::Avx512) => return x86::tiles_avx512::<8, x86::B8x8x8>(p),
            (16, Isa::Avx512) => return x86::tiles_avx512::<16, x86::B4x4x16>(p),
            (1, Isa::Avx2) => return x86::tiles_avx2::<1, x86::B32x16x1>(p),
            (1, _) => return tiles::<1, x86::B16x16x1>(p),
            (2, Isa::Avx2) => return x86::tiles_avx2::<2, x86::B8x8x2>(p),
            (2, _) => return tiles::<2, x86::B8x8x2>(p),
            (4, Isa::Avx2) => return x86::tiles_avx2::<4, x86::B8x8x4>(p),
            (4, _) => return tiles::<4, x86::B4x4x4>(p),
            (8, Isa::Avx2) => return x86::tiles_avx2::<8, x86::B4x4x8>(p),
            (8, _) => return tiles::<8, x86::B2x2x8>(p),
            _ => {}
        }
        let _ = isa;
        match itemsize {
            1 => tiles::<1, Scalar<1>>(p),
            2 => tiles::<2, Scalar<2>>(p),
            4 => tiles::<4, Scalar<4>>(p),
            8 => tiles::<8, Scalar<8>>(p),
            16 => tiles::<16, Scalar<16>>(p),
            n => tiles_any(p, n),
        }
    }
}

/// Whether the plane is written by `lines` with non-temporal stores of whole lines: it is large
/// enough to stream, and its destination rows are line-aligned (tiles start at multiples of 16
/// elements, blocks at multiples of R, so `R * N == 64` keeps every block's rows aligned).
fn streams_lines(p: &Plane) -> bool {
    p.stream
        && cfg!(all(target_arch = "x86_64", not(miri)))
        && p.dst.addr().is_multiple_of(64)
        && p.dst_ld.unsigned_abs().is_multiple_of(64)
}

/// The portable micro-kernel: one element.
struct Scalar<const N: usize>;
impl<const N: usize> Micro for Scalar<N> {
    const R: usize = 1;
    #[inline(always)]
    unsafe fn run(s: *const u8, _: isize, d: *mut u8, _: isize) {
        // SAFETY: per the trait contract.
        unsafe { move_n::<N>(s, d) }
    }
}

/// Writes `len` bytes from the tile buffer to the destination: with non-temporal (cache-bypassing)
/// stores when `stream` and whole vectors, else an ordinary copy.
///
/// # Safety
/// `s` readable and `d` writable for `len` bytes; they do not overlap; when `stream`, `d` is
/// 16-byte aligned.
#[inline(always)]
unsafe fn store_row(s: *const u8, d: *mut u8, len: usize, stream: bool) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if len.is_multiple_of(16) {
        use std::arch::x86_64::*;
        // Inline vector moves: a row is a few hundred bytes, where calling memcpy cost a third
        // of a one-byte transpose's time.
        for k in (0..len).step_by(16) {
            // SAFETY: per the function contract; when streaming the destination is 16-byte
            // aligned.
            unsafe {
                let v = _mm_loadu_si128(s.add(k).cast());
                if stream {
                    _mm_stream_si128(d.add(k).cast(), v)
                } else {
                    _mm_storeu_si128(d.add(k).cast(), v)
                }
            }
        }
        return;
    }
    let _ = stream;
    // SAFETY: per the function contract.
    unsafe { std::ptr::copy_nonoverlapping(s, d, len) }
}

/// The tile loop for elements of `N` bytes with micro-kernel `K`.
///
/// Each tile is transposed into a small buffer and then written out row by row. Reading the
/// source tile row by row and writing whole destination rows keeps every cache line in use for
/// a short time: transposing straight into the destination writes a column of half-lines whose
/// rows, at a power-of-two pitch, all fall in the same cache set and evict each other before
/// their other halves are written (measured: about half the throughput at 8192x8192).
///
/// # Safety
/// As for `transpose`, and the CPU has `K`'s features.
#[inline(always)]
unsafe fn tiles<const N: usize, K: Micro>(p: Plane) {
    // Non-temporal stores need 16-byte aligned destination rows; otherwise ordinary stores.
    let stream = p.stream
        && cfg!(all(target_arch = "x86_64", not(miri)))
        && p.dst.addr().is_multiple_of(16)
        && p.dst_ld.unsigned_abs().is_multiple_of(16);
    let mut buffer = TileBuffer([MaybeUninit::uninit(); TILE_BUFFER_BYTES]);
    let b = buffer.0.as_mut_ptr().cast::<u8>();
    let tile = tile_edge(N);
    let (ti, tj) = (tile, tile);
    let pitch = tj * N; // buffer bytes per destination row
    let size = N as isize;
    let src_at = |i: usize, j: usize| p.src.wrapping_offset(i as isize * size + j as isize * p.src_ld);
    let r = K::R;
    // Blocks whose destination rows are whole lines are streamed straight from registers, when
    // every such row is line-aligned: no pass through the buffer.
    if K::LINE && streams_lines(&p) {
        // SAFETY: per this function's contract; `streams_lines` checked the alignment.
        unsafe { lines::<N, K, true>(p) };
        super::store_fence();
        return;
    }
    // The destination rows one block writes, a power-of-two pitch apart at worst, share the
    // first-level cache's sets (12 ways of 4 KiB): they stay there together while they span at
    // most 32 KiB (leaving room for the source).
    let rows_fit = K::R.max(K::WIDE) * p.dst_ld.unsigned_abs() <= 32 << 10;
    if (K::LINE || rows_fit) && !stream && p.ni * p.nj * N <= SMALL_PLANE_BYTES {
        // SAFETY: per this function's contract.
        return unsafe { lines::<N, K, false>(p) };
    }
    for i0 in (0..p.ni).step_by(ti) {
        let i1 = (i0 + ti).min(p.ni);
        for j0 in (0..p.nj).step_by(tj) {
            let j1 = (j0 + tj).min(p.nj);
            let in_buf = |i: usize, j: usize| b.wrapping_add((i - i0) * pitch + (j - j0) * N);
            // Source rows j, in groups of R, into buffer columns.
            let mut j = j0;
            while j + r <= j1 {
                // Ask for the same rows of the next tile down, while this one is transposed.
                if j + tj + r <= p.nj {
                    for jj in j + tj..j + tj + r {
                        for off in (0..(i1 - i0) * N).step_by(64) {
                            prefetch(src_at(i0, jj).wrapping_add(off));
                        }
                    }
                }
                let mut i = i0;
                if K::WIDE > 0 {
                    while i + K::WIDE <= i1 {
                        // SAFETY: the R x WIDE block at (i, j) lies in the plane and in the buffer.
                        unsafe { K::run_wide(src_at(i, j), p.src_ld, in_buf(i, j), pitch as isize) };
                        i += K::WIDE;
                    }
                }
                while i + r <= i1 {
                    // SAFETY: the R x R block at (i, j) lies in the plane and in the buffer.
                    unsafe { K::run(src_at(i, j), p.src_ld, in_buf(i, j), pitch as isize) };
                    i += r;
                }
                for jj in j..j + r {
                    // SAFETY: as above, element by element.
                    (i..i1).for_each(|ii| unsafe { move_n::<N>(src_at(ii, jj), in_buf(ii, jj)) });
                }
                j += r;
            }
            for jj in j..j1 {
                // SAFETY: as above.
                (i0..i1).for_each(|ii| unsafe { move_n::<N>(src_at(ii, jj), in_buf(ii, jj)) });
            }
            // Buffer rows out to the destination.
            for i in i0..i1 {
                let d = p.dst.wrapping_offset(i as isize * p.dst_ld + j0 as isize * size);
                // SAFETY: the destination row segment (i, j0..j1) lies in the plane; the buffer
                // row was filled above and does not overlap it.
                unsafe { store_row(in_buf(i, j0), d, (j1 - j0) * N, stream) };
            }
        }
    }
    if stream {
        super::store_fence();
    }
}

/// Bytes of each source row per tile of streamed `lines`: a tile is `LINE_TILE_SRC_BYTES / N`
/// destination rows by `LINE_TILE_J` source rows, so that every element size reads the same
/// run of consecutive lines from each source row. (512 and 2048 bytes measured the same at
/// 256 MiB; docs/benchmarks.md.)
const LINE_TILE_SRC_BYTES: usize = 1024;

/// Source rows per tile of streamed `lines`: a destination row gets `LINE_TILE_J * N` contiguous
/// bytes per tile (more for blocks that write runs of lines: one-byte squares take 256). 64 to
/// 256 rows measured alike at 256 MiB, 512 slower; 256 rows for single two-byte squares were
/// slower at 16 MiB (docs/benchmarks.md).
const LINE_TILE_J: usize = 128;

/// Destination rows and source rows per tile when `lines` writes a small plane (not streamed).
const SMALL_PLANE_TILE_I: usize = 128;
const SMALL_PLANE_TILE_J: usize = 256;

/// The tile loop that writes straight into the destination, with no pass through a buffer:
/// `STREAM` blocks store whole lines with non-temporal stores (`K::run_line`), the others
/// (small planes, which the caches hold whole) store with ordinary stores.
///
/// Within a tile, each band of `R` destination rows is written left to right: the band's rows
/// are written sequentially (whole lines, in order, which is what the memory controller and the
/// write-combining buffers want), while the source is read a line from each of `R` rows at a
/// time, each line used whole by one block. Measured (docs/benchmarks.md), 4- and 8-byte
/// elements at 16 MiB ran at 0.82-1.11 of the contiguous copy this way, against 0.33-1.02
/// walking the tile source-row-major.
///
/// When streaming, each block also prefetches `R` lines of the *next* tile's source, row by row
/// (`NextTile`): memory then serves each source row's 1 KiB as one run, where the band order
/// alone asks for one line of each of the tile's source rows in turn, each from another DRAM
/// page. At 256 MiB this took most transposes into warm memory from about 0.75 to 0.93-1.10 of
/// the contiguous copy's speed (docs/benchmarks.md).
///
/// # Safety
/// As for `tiles`; when `STREAM`, `K::LINE` and the destination's rows are 64-byte aligned.
#[inline(always)]
unsafe fn lines<const N: usize, K: Micro, const STREAM: bool>(p: Plane) {
    let r = K::R;
    // Wide blocks (R source rows by WIDE) where the kernel has them and stores are ordinary.
    let w = if STREAM || K::WIDE == 0 { r } else { K::WIDE };
    // Blocks that write runs of lines (`K::LINE_RUN`) need tiles at least one run wide. Small
    // planes (not streamed) sit in the caches whole: their tiles keep the shape they were
    // measured with before the streamed tiles were tuned.
    let run = if STREAM { r * K::LINE_RUN } else { r };
    let (ti, tj) = if STREAM {
        ((LINE_TILE_SRC_BYTES / N).max(r), LINE_TILE_J.max(run))
    } else {
        (SMALL_PLANE_TILE_I, SMALL_PLANE_TILE_J)
    };
    let size = N as isize;
    let src_at = |i: usize, j: usize| p.src.wrapping_offset(i as isize * size + j as isize * p.src_ld);
    let dst_at = |i: usize, j: usize| p.dst.wrapping_offset(i as isize * p.dst_ld + j as isize * size);
    for i0 in (0..p.ni).step_by(ti) {
        let i1 = (i0 + ti).min(p.ni);
        for j0 in (0..p.nj).step_by(tj) {
            let j1 = (j0 + tj).min(p.nj);
            let je = j0 + (j1 - j0) / r * r;
            // The tiles run along j, then down i.
            let mut next = if j1 < p.nj {
                NextTile::new(&p, N, i0, i1, j1, tj)
            } else {
                NextTile::new(&p, N, i1, i1 + ti, 0, tj)
            };
            let mut i = i0;
            while i + r <= i1 {
                let wide = w > r && i + w <= i1;
                let mut j = j0;
                if run > r {
                    while j + run <= je {
                        next.prefetch(run);
                        // SAFETY: the R x run block at (i, j) lies in the plane; its destination
                        // rows are line-aligned (this function's contract).
                        unsafe { K::run_line_run(src_at(i, j), p.src_ld, dst_at(i, j), p.dst_ld) };
                        j += run;
                    }
                }
                for j in (j..je).step_by(r) {
                    if STREAM {
                        next.prefetch(r);
                        // SAFETY: the R x R block at (i, j) lies in the plane; its destination
                        // rows are line-aligned (this function's contract).
                        unsafe { K::run_line(src_at(i, j), p.src_ld, dst_at(i, j), p.dst_ld) };
                    } else if wide {
                        // SAFETY: the R x WIDE block at (i, j) lies in the plane.
                        unsafe { K::run_wide(src_at(i, j), p.src_ld, dst_at(i, j), p.dst_ld) };
                    } else {
                        // SAFETY: the R x R block at (i, j) lies in the plane.
                        unsafe { K::run(src_at(i, j), p.src_ld, dst_at(i, j), p.dst_ld) };
                    }
                }
                i += if wide { w } else { r };
            }
            for j in j0..j1 {
                let from = if j < je { i } else { i0 };
                // SAFETY: (ii, j) lies in the plane.
                (from..i1).for_each(|ii| unsafe { move_n::<N>(src_at(ii, j), dst_at(ii, j)) });
            }
        }
    }
}

/// The source lines of one tile of `lines`, in prefetch order: row by row, each row's lines in
/// address order.
struct NextTile {
    /// The next row to prefetch from, at the tile's first column.
    row: *const u8,
    src_ld: isize,
    /// Bytes of each row within the tile (whole lines), and the next one to ask for.
    row_bytes: usize,
    at: usize,
    /// Rows left, the current one included.
    rows: usize,
}

impl NextTile {
    /// Columns `i0..i1` of source rows `j0..j0 + tj` of `p` (clipped to the plane; empty past it).
    fn new(p: &Plane, size: usize, i0: usize, i1: usize, j0: usize, tj: usize) -> NextTile {
        let cols = i1.min(p.ni).saturating_sub(i0);
        let rows = (j0 + tj).min(p.nj).saturating_sub(j0);
        let row = p.src.wrapping_offset((i0 * size) as isize + j0 as isize * p.src_ld);
        let row_bytes = (cols * size).next_multiple_of(64);
        NextTile { row, src_ld: p.src_ld, row_bytes, at: 0, rows: if cols == 0 { 0 } else { rows } }
    }

    /// Prefetches the next `count` lines of the tile (fewer at its end).
    #[inline(always)]
    fn prefetch(&mut self, count: usize) {
        for _ in 0..count {
            if self.rows == 0 {
                return;
            }
            prefetch(self.row.wrapping_add(self.at));
            self.at += 64;
            if self.at == self.row_bytes {
                self.at = 0;
                self.rows -= 1;
                self.row = self.row.wrapping_offset(self.src_ld);
            }
        }
    }
}

/// A hint to fetch the cache line holding `p`. Never faults, whatever `p` is.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: prefetching is a hint; it has no effect on memory and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// # Safety
/// `s` readable and `d` writable for `N` bytes.
#[inline(always)]
unsafe fn move_n<const N: usize>(s: *const u8, d: *mut u8) {
    // SAFETY: per the function contract; `[u8; N]` has alignment 1.
    unsafe { d.cast::<[u8; N]>().write_unaligned(s.cast::<[u8; N]>().read_unaligned()) }
}

/// The tile loop for element sizes without a specialised kernel.
///
/// # Safety
/// As for `transpose`.
unsafe fn tiles_any(p: Plane, itemsize: usize) {
    let size = itemsize as isize;
    let tile = 64;
    for i0 in (0..p.ni).step_by(tile) {
        let i1 = (i0 + tile).min(p.ni);
        for j0 in (0..p.nj).step_by(tile) {
            for i in i0..i1 {
                for j in j0..(j0 + tile).min(p.nj) {
                    let s = p.src.wrapping_offset(i as isize * size + j as isize * p.src_ld);
                    let d = p.dst.wrapping_offset(i as isize * p.dst_ld + j as isize * size);
                    // SAFETY: (i, j) lies in the plane.
                    unsafe { move_bytes(s, d, itemsize) };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{Micro, Plane, lines, tiles};

    /// One stage of a 16-row transpose: pairs neighbours, lo halves into the first eight results
    /// and hi halves into the last eight (constant indices only, so everything stays in
    /// registers).
    macro_rules! pairs16 {
        ($v:expr, $lo:ident, $hi:ident) => {{
            let v = $v;
            [
                $lo(v[0], v[1]),
                $lo(v[2], v[3]),
                $lo(v[4], v[5]),
                $lo(v[6], v[7]),
                $lo(v[8], v[9]),
                $lo(v[10], v[11]),
                $lo(v[12], v[13]),
                $lo(v[14], v[15]),
                $hi(v[0], v[1]),
                $hi(v[2], v[3]),
                $hi(v[4], v[5]),
                $hi(v[6], v[7]),
                $hi(v[8], v[9]),
                $hi(v[10], v[11]),
                $hi(v[12], v[13]),
                $hi(v[14], v[15]),
            ]
        }};
    }

    /// `pairs16!` for eight rows.
    macro_rules! pairs8 {
        ($v:expr, $lo:ident, $hi:ident) => {{
            let v = $v;
            [
                $lo(v[0], v[1]),
                $lo(v[2], v[3]),
                $lo(v[4], v[5]),
                $lo(v[6], v[7]),
                $hi(v[0], v[1]),
                $hi(v[2], v[3]),
                $hi(v[4], v[5]),
                $hi(v[6], v[7]),
            ]
        }};
    }

    /// The tile loop compiled with AVX2, so that AVX2 micro-kernels inline into it (and SSE2
    /// ones get the shorter VEX encodings).
    ///
    /// # Safety
    /// As for `transpose`, and the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tiles_avx2<const N: usize, K: Micro>(p: Plane) {
        // SAFETY: per this function's contract.
        unsafe { tiles::<N, K>(p) }
    }

    /// The tile loop compiled with AVX-512 (F and BW), for the AVX-512 micro-kernels.
    ///
    /// # Safety
    /// As for `transpose`, and the CPU has AVX2, AVX-512F and AVX-512BW.
    #[target_feature(enable = "avx2,avx512f,avx512bw")]
    pub(super) unsafe fn tiles_avx512<const N: usize, K: Micro>(p: Plane) {
        // SAFETY: per this function's contract.
        unsafe { tiles::<N, K>(p) }
    }

    /// Streams a plane through `lines` with the *square* blocks `K` (R x R elements, each source
    /// and destination row one line), and the rows and columns past the last whole square
    /// through the tile loop with `E`.
    ///
    /// # Safety
    /// As for `transpose`; `streams_lines(&p)`; the CPU has AVX2, AVX-512F and AVX-512BW.
    #[target_feature(enable = "avx2,avx512f,avx512bw")]
    pub(super) unsafe fn squares_avx512<const N: usize, K: Micro, E: Micro>(p: Plane) {
        let (mi, mj) = (p.ni / K::R * K::R, p.nj / K::R * K::R);
        let size = N as isize;
        // SAFETY: the three planes are disjoint parts of `p` (whole squares; the rows below
        // them; the columns right of them), each valid by this function's contract; the first
        // keeps `p`'s alignment.
        unsafe {
            lines::<N, K, true>(Plane { ni: mi, nj: mj, ..p });
            if mi < p.ni {
                let (src, dst) = (
                    p.src.wrapping_offset(mi as isize * size),
                    p.dst.wrapping_offset(mi as isize * p.dst_ld),
                );
                tiles::<N, E>(Plane { src, dst, ni: p.ni - mi, ..p });
            }
            if mj < p.nj && mi > 0 {
                let (src, dst) = (
                    p.src.wrapping_offset(mj as isize * p.src_ld),
                    p.dst.wrapping_offset(mj as isize * size),
                );
                tiles::<N, E>(Plane { src, dst, ni: mi, nj: p.nj - mj, ..p });
            }
        }
        super::super::store_fence();
    }

    /// A 64x64 square of one-byte elements with AVX-512: four `B64x16x1` blocks, then each of
    /// the 64 destination lines written whole. Streaming, the blocks write into a buffer on the
    /// stack that stays in the first-level cache, and each line leaves it with one 64-byte
    /// non-temporal store; `B64x16x1` alone writes a line in four 16-byte pieces, so its tiles
    /// need a second pass through a 64 KiB buffer. Four squares side by side go together
    /// (`LINE_RUN`, a 16 KiB buffer), so that each destination row gets four consecutive lines
    /// at a time: measured with the order of the variants rotated, that took the 16 MiB one-byte
    /// permutation from 0.57 to 0.82-0.84 of the contiguous copy (warm; its destination rows are
    /// 64 KiB apart) and the other one-byte rows up by 0.01-0.14; two-byte squares lost with it
    /// (docs/benchmarks.md).
    pub(super) struct S64x1;
    impl Micro for S64x1 {
        const R: usize = 64;
        const LINE: bool = true;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            for g in 0..4 {
                // SAFETY: per the trait contract: rows 16g.. of the square, into its columns 16g..
                unsafe { b64x16x1(row(s, sl, 16 * g), sl, d.wrapping_add(16 * g as usize), dl) };
            }
        }
        #[inline(always)]
        unsafe fn run_line(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            let mut buffer = Staging([MaybeUninit::uninit(); 64]);
            let b = buffer.0.as_mut_ptr().cast::<u8>();
            // SAFETY: per the trait contract; the buffer is 64 rows of 64 bytes, filled whole by
            // the four blocks before it is read.
            unsafe {
                Self::run(s, sl, b, 64);
                stream_rows::<64, 1>(b, d, dl);
            }
        }
        const LINE_RUN: usize = 4;
        #[inline(always)]
        unsafe fn run_line_run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            let mut buffer = Staging([MaybeUninit::uninit(); 256]);
            let b = buffer.0.as_mut_ptr().cast::<u8>();
            // SAFETY: per the trait contract; the buffer is 64 rows of 256 bytes, filled whole by
            // the four squares (source rows 64k.. into buffer columns 64k..) before it is read.
            unsafe {
                for k in 0..4 {
                    Self::run(row(s, sl, 64 * k), sl, b.add(64 * k as usize), 256);
                }
                stream_rows::<64, 4>(b, d, dl);
            }
        }
    }

    /// A 32x32 square of two-byte elements with AVX-512: four `B32x8x2` blocks, then each of the
    /// 32 destination lines written whole (see `S64x1`).
    pub(super) struct S32x2;
    impl Micro for S32x2 {
        const R: usize = 32;
        const LINE: bool = true;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            for g in 0..4 {
                // SAFETY: per the trait contract: rows 8g.. of the square, into its columns 8g..
                unsafe { b32x8x2(row(s, sl, 8 * g), sl, d.wrapping_add(16 * g as usize), dl) };
            }
        }
        #[inline(always)]
        unsafe fn run_line(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            let mut buffer = Staging([MaybeUninit::uninit(); 32]);
            let b = buffer.0.as_mut_ptr().cast::<u8>();
            // SAFETY: as for S64x1::run_line, with 32 rows.
            unsafe {
                Self::run(s, sl, b, 64);
                stream_rows::<32, 1>(b, d, dl);
            }
        }
    }

    /// A square's staging buffer on the stack: `LINES` 64-byte lines, one per destination row
    /// of a square, or four per row for four one-byte squares side by side.
    #[repr(C, align(64))]
    struct Staging<const LINES: usize>([MaybeUninit<[u8; 64]>; LINES]);

    /// Copies `M` rows of `L` lines each from the buffer `b` (rows `64 * L` bytes apart) to
    /// destination rows `dl` apart, each line with one non-temporal store, each row's lines in
    /// address order.
    ///
    /// # Safety
    /// `b` holds `M` initialised, 64-byte aligned rows of `64 * L` bytes; each destination row
    /// has `64 * L` writable bytes from a 64-byte aligned address.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn stream_rows<const M: usize, const L: usize>(b: *const u8, d: *mut u8, dl: isize) {
        for k in 0..M {
            for l in 0..L {
                // SAFETY: per the function contract.
                unsafe {
                    _mm512_stream_si512(
                        out(d, dl, k as isize).add(64 * l).cast(),
                        _mm512_load_si512(b.add(64 * (L * k + l)).cast()),
                    )
                };
            }
        }
    }

    /// 16 rows of 64 one-byte elements with AVX-512: each source line is loaded once, whole
    /// (`B32x16x1` loads it in two halves, and the 16 lines, a power-of-two pitch apart, evict
    /// each other from the first-level cache between the two). The four 128-bit lanes are four
    /// independent 16x16 transposes, `B16x16x1`'s steps. Its square block is `B16x16x1`.
    pub(super) struct B64x16x1;
    impl Micro for B64x16x1 {
        const R: usize = 16;
        const WIDE: usize = 64;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract.
            unsafe { B16x16x1::run(s, sl, d, dl) }
        }
        #[inline(always)]
        unsafe fn run_wide(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX-512).
            unsafe { b64x16x1(s, sl, d, dl) }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn b64x16x1(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        // SAFETY: per B64x16x1::run_wide's contract; unaligned loads and stores.
        unsafe {
            macro_rules! ld {
                ($($k:literal)*) => {
                    [$(_mm512_loadu_si512(row(s, sl, $k).cast())),*]
                };
            }
            let r = ld!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            let a = pairs16!(r, _mm512_unpacklo_epi8, _mm512_unpackhi_epi8);
            let b = pairs16!(a, _mm512_unpacklo_epi16, _mm512_unpackhi_epi16);
            let c = pairs16!(b, _mm512_unpacklo_epi32, _mm512_unpackhi_epi32);
            let e = pairs16!(c, _mm512_unpacklo_epi64, _mm512_unpackhi_epi64);
            // Lane l of result k is destination row 16 * l + ROW16[k].
            macro_rules! st {
                ($($k:literal)*) => {
                    $(
                        _mm_storeu_si128(out(d, dl, ROW16[$k]).cast(), _mm512_extracti32x4_epi32::<0>(e[$k]));
                        _mm_storeu_si128(out(d, dl, 16 + ROW16[$k]).cast(), _mm512_extracti32x4_epi32::<1>(e[$k]));
                        _mm_storeu_si128(out(d, dl, 32 + ROW16[$k]).cast(), _mm512_extracti32x4_epi32::<2>(e[$k]));
                        _mm_storeu_si128(out(d, dl, 48 + ROW16[$k]).cast(), _mm512_extracti32x4_epi32::<3>(e[$k]));
                    )*
                };
            }
            st!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        }
    }

    /// 8 rows of 32 two-byte elements with AVX-512: each source line loaded once, whole; the four
    /// 128-bit lanes are four `B8x8x2` transposes. Its square block is `B8x8x2`.
    pub(super) struct B32x8x2;
    impl Micro for B32x8x2 {
        const R: usize = 8;
        const WIDE: usize = 32;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract.
            unsafe { B8x8x2::run(s, sl, d, dl) }
        }
        #[inline(always)]
        unsafe fn run_wide(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX-512).
            unsafe { b32x8x2(s, sl, d, dl) }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn b32x8x2(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        // SAFETY: per B32x8x2::run_wide's contract; unaligned loads and stores.
        unsafe {
            macro_rules! ld {
                ($($k:literal)*) => {
                    [$(_mm512_loadu_si512(row(s, sl, $k).cast())),*]
                };
            }
            let r = ld!(0 1 2 3 4 5 6 7);
            let a = pairs8!(r, _mm512_unpacklo_epi16, _mm512_unpackhi_epi16);
            let b = pairs8!(a, _mm512_unpacklo_epi32, _mm512_unpackhi_epi32);
            let e = pairs8!(b, _mm512_unpacklo_epi64, _mm512_unpackhi_epi64);
            // Lane l of result k is destination row 8 * l + ROW8[k].
            macro_rules! st {
                ($($k:literal)*) => {
                    $(
                        _mm_storeu_si128(out(d, dl, ROW8[$k]).cast(), _mm512_extracti32x4_epi32::<0>(e[$k]));
                        _mm_storeu_si128(out(d, dl, 8 + ROW8[$k]).cast(), _mm512_extracti32x4_epi32::<1>(e[$k]));
                        _mm_storeu_si128(out(d, dl, 16 + ROW8[$k]).cast(), _mm512_extracti32x4_epi32::<2>(e[$k]));
                        _mm_storeu_si128(out(d, dl, 24 + ROW8[$k]).cast(), _mm512_extracti32x4_epi32::<3>(e[$k]));
                    )*
                };
            }
            st!(0 1 2 3 4 5 6 7);
        }
    }

    /// The destination row of each result of an 8-row `pairs8!` transpose (three pairings leave
    /// the columns in bit-reversed order).
    const ROW8: [isize; 8] = [0, 4, 2, 6, 1, 5, 3, 7];

    /// Gathers the four 128-bit lanes `l` of the results: `a`, `b`, `c`, `e` hold, in each lane
    /// `l`, a quarter of destination row `l` (in that order); returns the four rows.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn lanes4(a: __m512i, b: __m512i, c: __m512i, e: __m512i) -> [__m512i; 4] {
        let x0 = _mm512_shuffle_i64x2::<0x44>(a, b); // a0 a1 b0 b1
        let x1 = _mm512_shuffle_i64x2::<0xEE>(a, b); // a2 a3 b2 b3
        let y0 = _mm512_shuffle_i64x2::<0x44>(c, e);
        let y1 = _mm512_shuffle_i64x2::<0xEE>(c, e);
        [
            _mm512_shuffle_i64x2::<0x88>(x0, y0), // a0 b0 c0 e0
            _mm512_shuffle_i64x2::<0xDD>(x0, y0), // a1 b1 c1 e1
            _mm512_shuffle_i64x2::<0x88>(x1, y1),
            _mm512_shuffle_i64x2::<0xDD>(x1, y1),
        ]
    }

    /// Loads `M` source rows of one line each.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_lines<const M: usize>(s: *const u8, sl: isize) -> [__m512i; M] {
        // SAFETY: per the caller's block contract: each row's line is readable.
        std::array::from_fn(|k| unsafe { _mm512_loadu_si512(row(s, sl, k as isize).cast()) })
    }

    /// Writes `M` destination rows of one line each: non-temporal stores (line-aligned rows) when
    /// `STREAM`, else unaligned stores.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_lines<const M: usize, const STREAM: bool>(d: *mut u8, dl: isize, v: [__m512i; M]) {
        for (k, v) in v.into_iter().enumerate() {
            let at = out(d, dl, k as isize);
            // SAFETY: per the caller's block contract: each row's line is writable (and aligned
            // when streaming).
            unsafe {
                if STREAM { _mm512_stream_si512(at.cast(), v) } else { _mm512_storeu_si512(at.cast(), v) }
            }
        }
    }

    /// 16x16 four-byte elements with AVX-512: each source and destination row is one line.
    /// Interleave pairs of rows by 32 and by 64 bits (4x4 transposes in each 128-bit lane), then
    /// gather the lanes.
    pub(super) struct B16x16x4;
    impl Micro for B16x16x4 {
        const R: usize = 16;
        const LINE: bool = true;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX-512).
            unsafe { b16x16x4::<false>(s, sl, d, dl) }
        }
        #[inline(always)]
        unsafe fn run_line(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX-512).
            unsafe { b16x16x4::<true>(s, sl, d, dl) }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn b16x16x4<const STREAM: bool>(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        // SAFETY: per B16x16x4's contracts.
        unsafe {
            let r = load_lines::<16>(s, sl);
            // t[4g + 2h + c]: rows 4g + 2h.. of ... in each lane; u[4g + c] holds, in lane l,
            // column 4l + c of rows 4g..4g + 4.
            let mut u = [_mm512_setzero_si512(); 16];
            for g in 0..4 {
                let (r0, r1, r2, r3) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
                let t0 = _mm512_unpacklo_epi32(r0, r1);
                let t1 = _mm512_unpackhi_epi32(r0, r1);
                let t2 = _mm512_unpacklo_epi32(r2, r3);
                let t3 = _mm512_unpackhi_epi32(r2, r3);
                u[4 * g] = _mm512_unpacklo_epi64(t0, t2);
                u[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
                u[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
                u[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
            }
            for c in 0..4 {
                let rows = lanes4(u[c], u[4 + c], u[8 + c], u[12 + c]);
                // Destination row 4l + c is lane l's.
                for (l, v) in rows.into_iter().enumerate() {
                    store_lines::<1, STREAM>(out(d, dl, (4 * l + c) as isize), dl, [v]);
                }
            }
        }
    }

    /// 8x8 eight-byte elements with AVX-512: each source and destination row is one line.
    pub(super) struct B8x8x8;
    impl Micro for B8x8x8 {
        const R: usize = 8;
        const LINE: bool = true;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX-512).
            unsafe { b8x8x8::<false>(s, sl, d, dl) }
        }
        #[inline(always)]
        unsafe fn run_line(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX-512).
            unsafe { b8x8x8::<true>(s, sl, d, dl) }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn b8x8x8<const STREAM: bool>(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        // SAFETY: per B8x8x8's contracts.
        unsafe {
            let r = load_lines::<8>(s, sl);
            // t[2h + c] holds, in lane l, column 2l + c of rows 2h, 2h + 1.
            let mut t = [_mm512_setzero_si512(); 8];
            for h in 0..4 {
                t[2 * h] = _mm512_unpacklo_epi64(r[2 * h], r[2 * h + 1]);
                t[2 * h + 1] = _mm512_unpackhi_epi64(r[2 * h], r[2 * h + 1]);
            }
            for c in 0..2 {
                let rows = lanes4(t[c], t[2 + c], t[4 + c], t[6 + c]);
                for (l, v) in rows.into_iter().enumerate() {
                    store_lines::<1, STREAM>(out(d, dl, (2 * l + c) as isize), dl, [v]);
                }
            }
        }
    }

    /// 4x4 sixteen-byte elements with AVX-512: each source and destination row is one line, and
    /// each element one 128-bit lane.
    pub(super) struct B4x4x16;
    impl Micro for B4x4x16 {
        const R: usize = 4;
        const LINE: bool = true;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX-512).
            unsafe { b4x4x16::<false>(s, sl, d, dl) }
        }
        #[inline(always)]
        unsafe fn run_line(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX-512).
            unsafe { b4x4x16::<true>(s, sl, d, dl) }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn b4x4x16<const STREAM: bool>(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        // SAFETY: per B4x4x16's contracts.
        unsafe {
            let r = load_lines::<4>(s, sl);
            store_lines::<4, STREAM>(d, dl, lanes4(r[0], r[1], r[2], r[3]));
        }
    }

    /// Source row `k` of a block (`k` steps of the source's leading stride).
    #[inline(always)]
    fn row(s: *const u8, sl: isize, k: isize) -> *const u8 {
        s.wrapping_offset(k * sl)
    }
    #[inline(always)]
    fn out(d: *mut u8, dl: isize, k: isize) -> *mut u8 {
        d.wrapping_offset(k * dl)
    }

    /// 16 rows of 32 one-byte elements with AVX2: each source line is loaded in two pieces
    /// rather than `B16x16x1`'s four (16 lines at a power-of-two pitch all fall in one set of the
    /// first-level cache, which holds 12, so every piece reloads its line from the second
    /// level). The two 128-bit lanes are two independent 16x16 transposes, the same steps as
    /// `B16x16x1`'s. Its square block is `B16x16x1`.
    pub(super) struct B32x16x1;
    impl Micro for B32x16x1 {
        const R: usize = 16;
        const WIDE: usize = 32;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract.
            unsafe { B16x16x1::run(s, sl, d, dl) }
        }
        #[inline(always)]
        unsafe fn run_wide(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX2).
            unsafe { b32x16x1(s, sl, d, dl) }
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn b32x16x1(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        // SAFETY: per B32x16x1::run_wide's contract; unaligned loads and stores.
        unsafe {
            macro_rules! ld {
                ($k:expr) => {
                    _mm256_loadu_si256(row(s, sl, $k).cast())
                };
            }
            let r = [
                ld!(0),
                ld!(1),
                ld!(2),
                ld!(3),
                ld!(4),
                ld!(5),
                ld!(6),
                ld!(7),
                ld!(8),
                ld!(9),
                ld!(10),
                ld!(11),
                ld!(12),
                ld!(13),
                ld!(14),
                ld!(15),
            ];
            let a = pairs16!(r, _mm256_unpacklo_epi8, _mm256_unpackhi_epi8);
            let b = pairs16!(a, _mm256_unpacklo_epi16, _mm256_unpackhi_epi16);
            let c = pairs16!(b, _mm256_unpacklo_epi32, _mm256_unpackhi_epi32);
            let e = pairs16!(c, _mm256_unpacklo_epi64, _mm256_unpackhi_epi64);
            // Lane l of result k is destination row 16 * l + ROW16[k].
            macro_rules! st {
                ($($k:literal)*) => {
                    $(
                        _mm_storeu_si128(out(d, dl, ROW16[$k]).cast(), _mm256_castsi256_si128(e[$k]));
                        _mm_storeu_si128(out(d, dl, 16 + ROW16[$k]).cast(), _mm256_extracti128_si256::<1>(e[$k]));
                    )*
                };
            }
            st!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        }
    }

    /// 16x16 one-byte elements: sixteen 16-byte rows interleaved by 8, 16, 32 and 64 bits.
    pub(super) struct B16x16x1;
    impl Micro for B16x16x1 {
        const R: usize = 16;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (SSE2 is part of x86-64); unaligned loads/stores.
            unsafe {
                macro_rules! ld {
                    ($k:expr) => {
                        _mm_loadu_si128(row(s, sl, $k).cast())
                    };
                }
                let r = [
                    ld!(0),
                    ld!(1),
                    ld!(2),
                    ld!(3),
                    ld!(4),
                    ld!(5),
                    ld!(6),
                    ld!(7),
                    ld!(8),
                    ld!(9),
                    ld!(10),
                    ld!(11),
                    ld!(12),
                    ld!(13),
                    ld!(14),
                    ld!(15),
                ];
                let a = pairs16!(r, _mm_unpacklo_epi8, _mm_unpackhi_epi8);
                let b = pairs16!(a, _mm_unpacklo_epi16, _mm_unpackhi_epi16);
                let c = pairs16!(b, _mm_unpacklo_epi32, _mm_unpackhi_epi32);
                let e = pairs16!(c, _mm_unpacklo_epi64, _mm_unpackhi_epi64);
                macro_rules! st {
                    ($($k:literal)*) => {
                        $(_mm_storeu_si128(out(d, dl, ROW16[$k]).cast(), e[$k]);)*
                    };
                }
                st!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            }
        }
    }

    /// The destination row of each result of `B16x16x1`'s last stage: pairing neighbours four
    /// times leaves the columns in bit-reversed order.
    const ROW16: [isize; 16] = [0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15];

    /// 8x8 two-byte elements: eight 16-byte rows interleaved by 16, 32 and 64 bits.
    pub(super) struct B8x8x2;
    impl Micro for B8x8x2 {
        const R: usize = 8;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (SSE2 is part of x86-64); unaligned loads/stores.
            unsafe {
                let ld = |k| _mm_loadu_si128(row(s, sl, k).cast());
                let (r0, r1, r2, r3) = (ld(0), ld(1), ld(2), ld(3));
                let (r4, r5, r6, r7) = (ld(4), ld(5), ld(6), ld(7));
                let a0 = _mm_unpacklo_epi16(r0, r1);
                let a1 = _mm_unpackhi_epi16(r0, r1);
                let a2 = _mm_unpacklo_epi16(r2, r3);
                let a3 = _mm_unpackhi_epi16(r2, r3);
                let a4 = _mm_unpacklo_epi16(r4, r5);
                let a5 = _mm_unpackhi_epi16(r4, r5);
                let a6 = _mm_unpacklo_epi16(r6, r7);
                let a7 = _mm_unpackhi_epi16(r6, r7);
                let b0 = _mm_unpacklo_epi32(a0, a2);
                let b1 = _mm_unpackhi_epi32(a0, a2);
                let b2 = _mm_unpacklo_epi32(a1, a3);
                let b3 = _mm_unpackhi_epi32(a1, a3);
                let b4 = _mm_unpacklo_epi32(a4, a6);
                let b5 = _mm_unpackhi_epi32(a4, a6);
                let b6 = _mm_unpacklo_epi32(a5, a7);
                let b7 = _mm_unpackhi_epi32(a5, a7);
                let st = |k, v| _mm_storeu_si128(out(d, dl, k).cast(), v);
                st(0, _mm_unpacklo_epi64(b0, b4));
                st(1, _mm_unpackhi_epi64(b0, b4));
                st(2, _mm_unpacklo_epi64(b1, b5));
                st(3, _mm_unpackhi_epi64(b1, b5));
                st(4, _mm_unpacklo_epi64(b2, b6));
                st(5, _mm_unpackhi_epi64(b2, b6));
                st(6, _mm_unpacklo_epi64(b3, b7));
                st(7, _mm_unpackhi_epi64(b3, b7));
            }
        }
    }

    /// 4x4 four-byte elements with SSE2 (the fallback without AVX2).
    pub(super) struct B4x4x4;
    impl Micro for B4x4x4 {
        const R: usize = 4;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (SSE2 is part of x86-64); unaligned loads/stores.
            unsafe {
                let ld = |k| _mm_loadu_si128(row(s, sl, k).cast());
                let (r0, r1, r2, r3) = (ld(0), ld(1), ld(2), ld(3));
                let t0 = _mm_unpacklo_epi32(r0, r1);
                let t1 = _mm_unpacklo_epi32(r2, r3);
                let t2 = _mm_unpackhi_epi32(r0, r1);
                let t3 = _mm_unpackhi_epi32(r2, r3);
                let st = |k, v| _mm_storeu_si128(out(d, dl, k).cast(), v);
                st(0, _mm_unpacklo_epi64(t0, t1));
                st(1, _mm_unpackhi_epi64(t0, t1));
                st(2, _mm_unpacklo_epi64(t2, t3));
                st(3, _mm_unpackhi_epi64(t2, t3));
            }
        }
    }

    /// 2x2 eight-byte elements with SSE2 (the fallback without AVX2).
    pub(super) struct B2x2x8;
    impl Micro for B2x2x8 {
        const R: usize = 2;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (SSE2 is part of x86-64); unaligned loads/stores.
            unsafe {
                let r0 = _mm_loadu_si128(row(s, sl, 0).cast());
                let r1 = _mm_loadu_si128(row(s, sl, 1).cast());
                _mm_storeu_si128(out(d, dl, 0).cast(), _mm_unpacklo_epi64(r0, r1));
                _mm_storeu_si128(out(d, dl, 1).cast(), _mm_unpackhi_epi64(r0, r1));
            }
        }
    }

    /// 8x8 four-byte elements with AVX2: interleave pairs of rows, then pairs of pairs, then
    /// swap 128-bit halves.
    pub(super) struct B8x8x4;
    impl Micro for B8x8x4 {
        const R: usize = 8;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX2); unaligned accesses.
            unsafe { b8x8x4(s, sl, d, dl) }
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn b8x8x4(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        // SAFETY: per B8x8x4::run's contract.
        unsafe {
            // Macros, not closures: the intrinsics must inline into this AVX2 function.
            macro_rules! ld {
                ($k:expr) => {
                    _mm256_loadu_ps(row(s, sl, $k).cast())
                };
            }
            let (r0, r1, r2, r3) = (ld!(0), ld!(1), ld!(2), ld!(3));
            let (r4, r5, r6, r7) = (ld!(4), ld!(5), ld!(6), ld!(7));
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            let t4 = _mm256_unpacklo_ps(r4, r5);
            let t5 = _mm256_unpackhi_ps(r4, r5);
            let t6 = _mm256_unpacklo_ps(r6, r7);
            let t7 = _mm256_unpackhi_ps(r6, r7);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            // Moved as floats but never computed on: any bit pattern (NaN payloads too) is kept.
            macro_rules! st {
                ($k:expr, $v:expr) => {
                    _mm256_storeu_ps(out(d, dl, $k).cast(), $v)
                };
            }
            st!(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
            st!(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
            st!(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
            st!(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
            st!(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
            st!(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
            st!(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
            st!(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
        }
    }

    /// 4x4 eight-byte elements with AVX2.
    pub(super) struct B4x4x8;
    impl Micro for B4x4x8 {
        const R: usize = 4;
        #[inline(always)]
        unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
            // SAFETY: per the trait contract (the caller runs only with AVX2); unaligned accesses.
            unsafe { b4x4x8(s, sl, d, dl) }
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn b4x4x8(s: *const u8, sl: isize, d: *mut u8, dl: isize) {
        // SAFETY: per B4x4x8::run's contract.
        unsafe {
            let r0 = _mm256_loadu_pd(row(s, sl, 0).cast());
            let r1 = _mm256_loadu_pd(row(s, sl, 1).cast());
            let r2 = _mm256_loadu_pd(row(s, sl, 2).cast());
            let r3 = _mm256_loadu_pd(row(s, sl, 3).cast());
            let t0 = _mm256_unpacklo_pd(r0, r1);
            let t1 = _mm256_unpackhi_pd(r0, r1);
            let t2 = _mm256_unpacklo_pd(r2, r3);
            let t3 = _mm256_unpackhi_pd(r2, r3);
            _mm256_storeu_pd(out(d, dl, 0).cast(), _mm256_permute2f128_pd::<0x20>(t0, t2));
            _mm256_storeu_pd(out(d, dl, 1).cast(), _mm256_permute2f128_pd::<0x20>(t1, t3));
            _mm256_storeu_pd(out(d, dl, 2).cast(), _mm256_permute2f128_pd::<0x31>(t0, t2));
            _mm256_storeu_pd(out(d, dl, 3).cast(), _mm256_permute2f128_pd::<0x31>(t1, t3));
        }
    }
}

//! Transposing copies: `dst[i][j] = src[j][i]` over a plane whose source is contiguous along `i`
//! and whose destination is contiguous along `j`.
//!
//! The unit of work is a *line block*: the square of elements that is one 64-byte cache line
//! wide in both layouts (64x64 one-byte elements, 32x32 two-byte, 16x16 four-byte, 8x8
//! eight-byte, 4x4 sixteen-byte). A line block reads whole source lines and writes whole
//! destination lines, so no line has to stay in a cache between blocks: nothing is read twice
//! and, for copies larger than the last-level cache, every destination line can go out with
//! non-temporal stores (bypassing the caches, so it is never first read from memory). Line
//! blocks are visited in tiles (`TILE_BYTES` of source rows by `TILE_BYTES` of destination rows)
//! so that the pages a tile touches stay within the TLB.
//!
//! Inside a line block, SIMD micro-kernels transpose square register blocks (x86-64): 16x16 one-
//! byte and 8x8 two-byte elements with SSE2 (always present), 8x8 four-byte and 4x4 eight-byte
//! with AVX2 when the CPU has it (checked at run time), else 4x4 and 2x2 with SSE2; sixteen-byte
//! elements are one vector each. Other element sizes, other architectures and Miri use the
//! portable element loop over the same blocks.

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
    /// Write the destination with non-temporal stores (for copies larger than the caches).
    pub stream: bool,
}

/// Transposing copies at least this large write their destination with non-temporal stores.
/// Below it, source and destination together fit in the last-level cache (32 MiB on the machine
/// this was measured on) and ordinary stores, which leave the result in the cache for whoever
/// reads it next, were as fast or faster; see docs/benchmarks.md.
pub(super) const STREAM_MIN_BYTES: usize = 24 << 20;

/// The cache line: the edge of a line block in bytes.
const LINE: usize = 64;

/// A tile covers this many bytes of each source row and of each destination row: at most
/// `TILE_BYTES / 64 * element size` rows of either layout, so with rows a page or more apart a
/// tile touches a few dozen pages of each (the first-level TLB holds 64 to 96).
const TILE_BYTES: usize = 1024;

/// The edge, in elements, of the square a tile covers (tests use it to cross tile borders).
pub(super) const fn tile_edge(itemsize: usize) -> usize {
    TILE_BYTES / itemsize
}

/// A register-block transpose of `R x R` elements.
trait Micro {
    const R: usize;
    /// # Safety
    /// The `R x R` block at `(s, sl)` is readable and the one at `(d, dl)` writable (as in
    /// `Plane`); the CPU has the features the implementation is compiled for.
    unsafe fn run(s: *const u8, sl: isize, d: *mut u8, dl: isize);
}

/// Transposes `p` with elements of `itemsize` bytes. Allocates nothing: a non-temporal copy
/// stages each line block in a 4 KiB buffer on the stack.
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
            (1, Isa::Avx2) => return x86::blocks_avx2::<1, x86::B16x16x1>(p),
            (1, _) => return blocks::<1, x86::B16x16x1>(p),
            (2, Isa::Avx2) => return x86::blocks_avx2::<2, x86::B8x8x2>(p),
            (2, _) => return blocks::<2, x86::B8x8x2>(p),
            (4, Isa::Avx2) => return x86::blocks_avx2::<4, x86::B8x8x4>(p),
            (4, _) => return blocks::<4, x86::B4x4x4>(p),
            (8, Isa::Avx2) => return x86::blocks_avx2::<8, x86::B4x4x8>(p),
            (8, _) => return blocks::<8, x86::B2x2x8>(p),
            (16, Isa::Avx2) => return x86::blocks_avx2::<16, Scalar<16>>(p),
            (16, _) => return blocks::<16, Scalar<16>>(p),
            _ => {}
        }
        let _ = isa;
        match itemsize {
            1 => blocks::<1, Scalar<1>>(p),
            2 => blocks::<2, Scalar<2>>(p),
            4 => blocks::<4, Scalar<4>>(p),
            8 => blocks::<8, Scalar<8>>(p),
            16 => blocks::<16, Scalar<16>>(p),
            n => tiles_any(p, n),
        }
    }
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

/// A staging buffer for one line block: 64 lines of 64 bytes, line-aligned.
#[repr(C, align(64))]
struct Staging([MaybeUninit<u8>; LINE * LINE]);

/// The line-block loop for elements of `N` bytes with micro-kernel `K` (whose `R` divides
/// `64 / N`), then the ragged edges element by element.
///
/// Loop order: tiles along `j` (source rows), then along `i`; inside a tile, line blocks along
/// `j`, then along `i`, so that the `64 / N` source rows of a block row are read front to back
/// (what the hardware prefetchers follow) while the destination takes whole lines wherever they
/// fall. Each block asks for the source lines of the block after the next.
///
/// # Safety
/// As for `transpose`, and the CPU has `K`'s features.
#[inline(always)]
unsafe fn blocks<const N: usize, K: Micro>(p: Plane) {
    let m = LINE / N; // line block edge in elements
    let size = N as isize;
    let (ni, nj) = (p.ni - p.ni % m, p.nj - p.nj % m);
    let src_at = |i: usize, j: usize| p.src.wrapping_offset(i as isize * size + j as isize * p.src_ld);
    let dst_at = |i: usize, j: usize| p.dst.wrapping_offset(i as isize * p.dst_ld + j as isize * size);
    // Non-temporal stores need 16-byte aligned destination lines; otherwise ordinary stores.
    let stream = p.stream
        && cfg!(all(target_arch = "x86_64", not(miri)))
        && p.dst.addr().is_multiple_of(16)
        && p.dst_ld.unsigned_abs().is_multiple_of(16);
    let mut staging = Staging([MaybeUninit::uninit(); LINE * LINE]);
    let stage = staging.0.as_mut_ptr().cast::<u8>();
    // One line block: transposed into the staging buffer, then written out a line at a time.
    let line_block = |i0: usize, j0: usize| {
        let (out, out_ld) = (stage, LINE as isize);
        let mut jb = 0;
        while jb < m {
            let mut ib = 0;
            while ib < m {
                let d = out.wrapping_offset(ib as isize * out_ld + (jb * N) as isize);
                // SAFETY: the R x R block at (i0 + ib, j0 + jb) lies in the plane; `d`
                // is that block in the destination or in the staging buffer (row
                // pitch 64 bytes, `m` rows of 64 bytes).
                unsafe { K::run(src_at(i0 + ib, j0 + jb), p.src_ld, d, out_ld) };
                ib += K::R;
            }
            jb += K::R;
        }
        for k in 0..m {
            // SAFETY: staging row k holds destination row i0 + k, columns j0..j0 + m
            // (64 bytes), which lie in the plane; the destination is 16-byte aligned
            // when streaming.
            unsafe {
                if stream {
                    stream_line(stage.add(k * LINE), dst_at(i0 + k, j0))
                } else {
                    std::ptr::copy_nonoverlapping(stage.add(k * LINE), dst_at(i0 + k, j0), LINE)
                }
            }
        }
    };
    let tile = tile_edge(N);
    for jt in (0..nj).step_by(tile) {
        let jt1 = (jt + tile).min(nj);
        for it in (0..ni).step_by(tile) {
            let it1 = (it + tile).min(ni);
            // Streaming: block rows along j outside, so that the source rows are read front to
            // back; cached: along i outside, so that the destination rows are written front to
            // back (their lines must be fetched before they are written, and the prefetchers
            // follow sequential stores).
            if stream {
                for j0 in (jt..jt1).step_by(m) {
                    for i0 in (it..it1).step_by(m) {
                        line_block(i0, j0);
                    }
                }
            } else {
                for i0 in (it..it1).step_by(m) {
                    for j0 in (jt..jt1).step_by(m) {
                        line_block(i0, j0);
                    }
                }
            }
        }
    }
    // Ragged edges: the rows of i past the last whole block, and the columns of j past it.
    for i in ni..p.ni {
        // SAFETY: (i, j) lies in the plane.
        (0..p.nj).for_each(|j| unsafe { move_n::<N>(src_at(i, j), dst_at(i, j)) });
    }
    for j in nj..p.nj {
        // SAFETY: as above.
        (0..ni).for_each(|i| unsafe { move_n::<N>(src_at(i, j), dst_at(i, j)) });
    }
    if stream {
        super::store_fence();
    }
}

/// Writes one 64-byte line from the staging buffer with non-temporal stores.
///
/// # Safety
/// `s` readable and `d` writable for 64 bytes, `d` 16-byte aligned; x86-64 only, never under
/// Miri (callers stream only there).
#[inline(always)]
unsafe fn stream_line(s: *const u8, d: *mut u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: per the function contract (SSE2 is part of x86-64).
    unsafe {
        use std::arch::x86_64::*;
        for k in (0..LINE).step_by(16) {
            _mm_stream_si128(d.add(k).cast(), _mm_load_si128(s.add(k).cast()));
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    // SAFETY: per the function contract.
    unsafe {
        std::ptr::copy_nonoverlapping(s, d, LINE)
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

    use super::{Micro, Plane, blocks};

    /// The block loop compiled with AVX2, so that AVX2 micro-kernels inline into it (and SSE2
    /// ones get the shorter VEX encodings).
    ///
    /// # Safety
    /// As for `transpose`, and the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blocks_avx2<const N: usize, K: Micro>(p: Plane) {
        // SAFETY: per this function's contract.
        unsafe { blocks::<N, K>(p) }
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
                // Each stage pairs neighbours: lo halves into the first eight results, hi halves
                // into the last eight (constant indices only, so everything stays in registers).
                macro_rules! stage {
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
                let a = stage!(r, _mm_unpacklo_epi8, _mm_unpackhi_epi8);
                let b = stage!(a, _mm_unpacklo_epi16, _mm_unpackhi_epi16);
                let c = stage!(b, _mm_unpacklo_epi32, _mm_unpackhi_epi32);
                let e = stage!(c, _mm_unpacklo_epi64, _mm_unpackhi_epi64);
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

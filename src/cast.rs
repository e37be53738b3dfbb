//! Element conversion between the named scalar types (`dlb_tensor_cast`).
//!
//! Rules, chosen to match what NumPy and PyTorch users expect:
//! - integer to narrower integer wraps (two's complement), as C casts and NumPy do;
//! - float to integer truncates toward zero and saturates at the target's range; NaN gives 0;
//! - anything to bool is `value != 0` (NaN is true); bool is 0 or 1;
//! - float16 and bfloat16 round to nearest, ties to even, straight from float64 (no double
//!   rounding), overflowing to infinity;
//! - real to complex sets the imaginary part to 0; complex to real is refused by the caller.
//! - integer to float rounds to nearest once (int64 to float32 directly, as NumPy does, not
//!   through float64).
//!
//! Between the ten plain numeric types (int8..int64, uint8..uint64, float32, float64) the rules
//! above are exactly Rust's `as`, so those pairs run monomorphised loops that the compiler
//! vectorises; every other pair goes element by element through [`Value`].

use crate::dtype::Scalar;

/// One element on its way between two types.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    I(i64),
    U(u64),
    F(f64),
    C(f64, f64),
}

/// # Safety
/// `p` is valid for reading one element of type `s` (no alignment needed).
#[inline]
unsafe fn read(s: Scalar, p: *const u8) -> Value {
    // SAFETY: per the function contract.
    unsafe {
        macro_rules! rd {
            ($t:ty) => {
                p.cast::<$t>().read_unaligned()
            };
        }
        match s {
            Scalar::Bool => Value::U(u64::from(rd!(u8) != 0)),
            Scalar::I8 => Value::I(rd!(i8).into()),
            Scalar::I16 => Value::I(rd!(i16).into()),
            Scalar::I32 => Value::I(rd!(i32).into()),
            Scalar::I64 => Value::I(rd!(i64)),
            Scalar::U8 => Value::U(rd!(u8).into()),
            Scalar::U16 => Value::U(rd!(u16).into()),
            Scalar::U32 => Value::U(rd!(u32).into()),
            Scalar::U64 => Value::U(rd!(u64)),
            Scalar::F16 => Value::F(minifloat_to_f64(rd!(u16).into(), F16)),
            Scalar::BF16 => Value::F(minifloat_to_f64(rd!(u16).into(), BF16)),
            Scalar::F32 => Value::F(rd!(f32).into()),
            Scalar::F64 => Value::F(rd!(f64)),
            Scalar::C64 => {
                let q = p.cast::<[f32; 2]>().read_unaligned();
                Value::C(q[0].into(), q[1].into())
            }
            Scalar::C128 => {
                let q = p.cast::<[f64; 2]>().read_unaligned();
                Value::C(q[0], q[1])
            }
        }
    }
}

/// # Safety
/// `p` is valid for writing one element of type `s` (no alignment needed).
#[inline]
unsafe fn write(s: Scalar, p: *mut u8, v: Value) {
    // Integer targets: wrap from integers, truncate-and-saturate from floats.
    macro_rules! int {
        ($t:ty) => {
            match v {
                Value::I(x) => x as $t,
                Value::U(x) => x as $t,
                Value::F(x) | Value::C(x, _) => x as $t,
            }
        };
    }
    let real = match v {
        Value::I(x) => x as f64,
        Value::U(x) => x as f64,
        Value::F(x) | Value::C(x, _) => x,
    };
    let imag = match v {
        Value::C(_, y) => y,
        _ => 0.0,
    };
    // SAFETY: per the function contract.
    unsafe {
        macro_rules! wr {
            ($t:ty, $x:expr) => {
                p.cast::<$t>().write_unaligned($x)
            };
        }
        match s {
            Scalar::Bool => {
                let truth = match v {
                    Value::I(x) => x != 0,
                    Value::U(x) => x != 0,
                    Value::F(x) => x != 0.0,
                    Value::C(x, y) => x != 0.0 || y != 0.0,
                };
                wr!(u8, u8::from(truth))
            }
            Scalar::I8 => wr!(i8, int!(i8)),
            Scalar::I16 => wr!(i16, int!(i16)),
            Scalar::I32 => wr!(i32, int!(i32)),
            Scalar::I64 => wr!(i64, int!(i64)),
            Scalar::U8 => wr!(u8, int!(u8)),
            Scalar::U16 => wr!(u16, int!(u16)),
            Scalar::U32 => wr!(u32, int!(u32)),
            Scalar::U64 => wr!(u64, int!(u64)),
            Scalar::F16 => wr!(u16, f64_to_minifloat(real, F16) as u16),
            Scalar::BF16 => wr!(u16, f64_to_minifloat(real, BF16) as u16),
            Scalar::F32 => wr!(f32, real as f32),
            Scalar::F64 => wr!(f64, real),
            Scalar::C64 => wr!([f32; 2], [real as f32, imag as f32]),
            Scalar::C128 => wr!([f64; 2], [real, imag]),
        }
    }
}

/// Converts `n` elements from `src` (stride `src_stride` bytes) to `dst` (stride `dst_stride`).
///
/// # Safety
/// Every addressed element must be valid for its access; the ranges must not overlap.
pub unsafe fn convert_row(
    from: Scalar,
    to: Scalar,
    src: *const u8,
    src_stride: isize,
    dst: *mut u8,
    dst_stride: isize,
    n: usize,
) {
    // SAFETY: forwarded contract.
    if unsafe { typed_row(from, to, src, src_stride, dst, dst_stride, n) } {
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { convert_row_by_value(from, to, src, src_stride, dst, dst_stride, n) }
}

/// The element-by-element conversion every pair supports (and the reference the typed loops are
/// tested against).
///
/// # Safety
/// As for `convert_row`.
unsafe fn convert_row_by_value(
    from: Scalar,
    to: Scalar,
    src: *const u8,
    src_stride: isize,
    dst: *mut u8,
    dst_stride: isize,
    n: usize,
) {
    let (mut s, mut d) = (src, dst);
    for _ in 0..n {
        // SAFETY: per the function contract.
        unsafe { write(to, d, read(from, s)) };
        s = s.wrapping_offset(src_stride);
        d = d.wrapping_offset(dst_stride);
    }
}

/// A plain numeric type, read and written at any alignment.
trait Prim: Copy {
    /// # Safety
    /// `p` is readable for `size_of::<Self>()` bytes.
    unsafe fn load(p: *const u8) -> Self;
    /// # Safety
    /// `p` is writable for `size_of::<Self>()` bytes.
    unsafe fn store(self, p: *mut u8);
}

/// `self as B`.
trait As<B> {
    fn to(self) -> B;
}

macro_rules! prims {
    ($($t:ty),*) => {
        $(
            impl Prim for $t {
                #[inline(always)]
                unsafe fn load(p: *const u8) -> Self {
                    // SAFETY: per the trait contract.
                    unsafe { p.cast::<$t>().read_unaligned() }
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut u8) {
                    // SAFETY: per the trait contract.
                    unsafe { p.cast::<$t>().write_unaligned(self) }
                }
            }
            prims!(@as $t; i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);
        )*
    };
    (@as $a:ty; $($b:ty),*) => {
        $(
            impl As<$b> for $a {
                #[inline(always)]
                fn to(self) -> $b {
                    self as $b
                }
            }
        )*
    };
}
prims!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

/// Runs the typed loop for `from -> to` when both are plain numeric types; false otherwise.
///
/// # Safety
/// As for `convert_row`.
unsafe fn typed_row(
    from: Scalar,
    to: Scalar,
    src: *const u8,
    src_stride: isize,
    dst: *mut u8,
    dst_stride: isize,
    n: usize,
) -> bool {
    macro_rules! to {
        ($a:ty, $f:ident) => {
            match to {
                Scalar::I8 => $f::<$a, i8>,
                Scalar::I16 => $f::<$a, i16>,
                Scalar::I32 => $f::<$a, i32>,
                Scalar::I64 => $f::<$a, i64>,
                Scalar::U8 => $f::<$a, u8>,
                Scalar::U16 => $f::<$a, u16>,
                Scalar::U32 => $f::<$a, u32>,
                Scalar::U64 => $f::<$a, u64>,
                Scalar::F32 => $f::<$a, f32>,
                Scalar::F64 => $f::<$a, f64>,
                _ => return false,
            }
        };
    }
    macro_rules! pick {
        ($f:ident) => {
            match from {
                Scalar::I8 => to!(i8, $f),
                Scalar::I16 => to!(i16, $f),
                Scalar::I32 => to!(i32, $f),
                Scalar::I64 => to!(i64, $f),
                Scalar::U8 => to!(u8, $f),
                Scalar::U16 => to!(u16, $f),
                Scalar::U32 => to!(u32, $f),
                Scalar::U64 => to!(u64, $f),
                Scalar::F32 => to!(f32, $f),
                Scalar::F64 => to!(f64, $f),
                _ => return false,
            }
        };
    }
    let run: unsafe fn(*const u8, isize, *mut u8, isize, usize) =
        if simd_wide() { pick!(typed_avx2) } else { pick!(typed) };
    // SAFETY: per the function contract.
    unsafe { run(src, src_stride, dst, dst_stride, n) };
    true
}

/// Whether the typed loops may use their AVX2 builds (x86-64 CPUs that have it; checked once, then
/// a cached load).
fn simd_wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `typed`, compiled for AVX2: twice the vector width where the data is in cache.
///
/// # Safety
/// As for `convert_row`, and the CPU has AVX2 (`simd_wide`).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2"))]
unsafe fn typed_avx2<A: Prim + As<B>, B: Prim>(s: *const u8, ss: isize, d: *mut u8, ds: isize, n: usize) {
    // SAFETY: per the function contract.
    unsafe { typed_body::<A, B>(s, ss, d, ds, n) }
}

/// # Safety
/// As for `convert_row`.
unsafe fn typed<A: Prim + As<B>, B: Prim>(s: *const u8, ss: isize, d: *mut u8, ds: isize, n: usize) {
    // SAFETY: per the function contract.
    unsafe { typed_body::<A, B>(s, ss, d, ds, n) }
}

/// # Safety
/// As for `convert_row`.
#[inline(always)]
unsafe fn typed_body<A: Prim + As<B>, B: Prim>(s: *const u8, ss: isize, d: *mut u8, ds: isize, n: usize) {
    let (a, b) = (size_of::<A>(), size_of::<B>());
    if ss == a as isize && ds == b as isize {
        // Contiguous rows: a loop with constant strides that the compiler vectorises.
        for k in 0..n {
            // SAFETY: element k of both rows is in range.
            unsafe { B::store(A::load(s.add(k * a)).to(), d.add(k * b)) };
        }
        return;
    }
    let (mut s, mut d) = (s, d);
    for _ in 0..n {
        // SAFETY: per the function contract.
        unsafe { B::store(A::load(s).to(), d) };
        s = s.wrapping_offset(ss);
        d = d.wrapping_offset(ds);
    }
}

/// An IEEE-style binary format narrower than float32: exponent and mantissa widths.
#[derive(Clone, Copy)]
struct Mini {
    exp_bits: u32,
    man_bits: u32,
}
const F16: Mini = Mini { exp_bits: 5, man_bits: 10 };
const BF16: Mini = Mini { exp_bits: 8, man_bits: 7 };

/// 2^e, exactly, for the normal range of f64 (built from bits: `powi` may be inexact).
fn pow2(e: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&e));
    f64::from_bits(((e + 1023) as u64) << 52)
}

fn minifloat_to_f64(bits: u32, m: Mini) -> f64 {
    let sign = if bits >> (m.exp_bits + m.man_bits) & 1 == 1 { -1.0 } else { 1.0 };
    let exp_max = (1u32 << m.exp_bits) - 1;
    let e = (bits >> m.man_bits) & exp_max;
    let man = bits & ((1 << m.man_bits) - 1);
    let bias = (1i32 << (m.exp_bits - 1)) - 1;
    let value = if e == exp_max {
        if man == 0 { f64::INFINITY } else { f64::NAN }
    } else if e == 0 {
        f64::from(man) * pow2(1 - bias - m.man_bits as i32)
    } else {
        f64::from(man | (1 << m.man_bits)) * pow2(e as i32 - bias - m.man_bits as i32)
    };
    sign * value
}

fn f64_to_minifloat(x: f64, m: Mini) -> u32 {
    let sign = ((x.to_bits() >> 63) as u32) << (m.exp_bits + m.man_bits);
    let exp_max = (1u32 << m.exp_bits) - 1;
    if x.is_nan() {
        return sign | (exp_max << m.man_bits) | (1 << (m.man_bits - 1));
    }
    let a = x.abs();
    if a == 0.0 {
        return sign;
    }
    let bias = (1i32 << (m.exp_bits - 1)) - 1;
    let emin = 1 - bias;
    // Unbiased exponent of `a` (f64 subnormals are far below every target's range).
    let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    if e < emin {
        // Subnormal in the target: count quanta of 2^(emin - man_bits). A count that rounds up
        // to 2^man_bits is exactly the smallest normal, which the same encoding expresses.
        let q = (a / pow2(emin - m.man_bits as i32)).round_ties_even() as u32;
        return sign | q;
    }
    let mut e = e;
    let mut q = (a / pow2(e - m.man_bits as i32)).round_ties_even() as u64;
    if q == 1 << (m.man_bits + 1) {
        e += 1;
        q >>= 1;
    }
    if e > bias {
        return sign | (exp_max << m.man_bits);
    }
    sign | (((e + bias) as u32) << m.man_bits) | (q as u32 & ((1 << m.man_bits) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cast1<A: Copy, B: Copy + Default>(from: Scalar, to: Scalar, x: A) -> B {
        let mut out = B::default();
        // SAFETY: one element each way; every caller below picks A and B whose sizes are the
        // item sizes of `from` and `to`, and `x` and `out` are distinct locals.
        unsafe {
            convert_row(from, to, (&x as *const A).cast(), 0, (&mut out as *mut B).cast(), 0, 1);
        }
        out
    }

    /// The typed loops against the element-by-element path, for every pair of plain numeric
    /// types, over random bit patterns, contiguous and strided. The one intended difference:
    /// 64-bit integers to float32 round once (directly), where the element path goes through
    /// float64; there the reference is Rust's `as`.
    #[test]
    fn typed_loops_match_the_element_path() {
        use Scalar::*;
        let plain = [I8, I16, I32, I64, U8, U16, U32, U64, F32, F64];
        let n = if cfg!(miri) { 9 } else { 257 };
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut src = vec![0u8; n * 8 * 2];
        for b in src.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Small magnitudes half the time, so float-to-int casts hit the non-saturated range.
            let v = if state.is_multiple_of(2) { state } else { ((state >> 40) as f64 - 8e6).to_bits() };
            b.copy_from_slice(&v.to_ne_bytes());
        }
        for from in plain {
            for to in plain {
                let (a, b) = (from.dtype().itemsize(), to.dtype().itemsize());
                for step in [1usize, 2] {
                    let (ss, ds) = ((a * step) as isize, b as isize);
                    let mut fast = vec![0u8; n * b];
                    let mut slow = vec![0u8; n * b];
                    // SAFETY: source element k (a <= 8 bytes) starts at k*a*step <= 16(n-1) in
                    // `src` (16n bytes); the k-th output lies at k*b in `fast`/`slow` (n*b bytes);
                    // the three buffers are distinct.
                    unsafe {
                        assert!(typed_row(from, to, src.as_ptr(), ss, fast.as_mut_ptr(), ds, n));
                        convert_row_by_value(from, to, src.as_ptr(), ss, slow.as_mut_ptr(), ds, n);
                    }
                    if matches!((from, to), (I64 | U64, F32)) {
                        for k in 0..n {
                            let bits: [u8; 8] = src[k * a * step..k * a * step + 8].try_into().unwrap();
                            let expect = if from == I64 {
                                i64::from_ne_bytes(bits) as f32
                            } else {
                                u64::from_ne_bytes(bits) as f32
                            };
                            assert_eq!(fast[k * 4..k * 4 + 4], expect.to_ne_bytes(), "{from:?} -> F32");
                        }
                        continue;
                    }
                    if from == to {
                        // An identity (never asked of the element path, which would quiet
                        // signalling NaNs through float64): every bit is kept.
                        let picked: Vec<u8> =
                            src.chunks(a * step).take(n).flat_map(|e| e[..a].to_vec()).collect();
                        assert!(fast == picked, "{from:?} -> {to:?} with source stride {ss}");
                        continue;
                    }
                    // Compared as bytes: NaN payloads and signed zeros must match too.
                    assert!(fast == slow, "{from:?} -> {to:?} with source stride {ss}");
                }
            }
        }
        // Types outside the plain ten are left to the element path.
        // SAFETY: n is 0, so no element is read or written (and the pair is not a typed one).
        let half = unsafe { typed_row(F16, F32, src.as_ptr(), 2, src.as_ptr().cast_mut(), 4, 0) };
        // SAFETY: n is 0, so no element is read or written (and the pair is not a typed one).
        let boolean = unsafe { typed_row(I32, Bool, src.as_ptr(), 4, src.as_ptr().cast_mut(), 1, 0) };
        assert!(!half && !boolean);
    }

    #[test]
    fn float16_known_bit_patterns() {
        let cases: [(f64, u16); 9] = [
            (1.0, 0x3c00),
            (-2.5, 0xc100),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00),               // rounds up to infinity
            (6.103515625e-5, 0x0400),        // smallest normal
            (5.960464477539063e-8, 0x0001),  // smallest subnormal
            (2.9802322387695312e-8, 0x0000), // half of it: ties to even (0)
            (1.0009765625, 0x3c01),
            (1.00048828125, 0x3c00), // tie between 0x3c00 and 0x3c01: even
        ];
        for (x, bits) in cases {
            assert_eq!(f64_to_minifloat(x, F16) as u16, bits, "{x}");
            if bits & 0x7c00 != 0x7c00 && x != 2.9802322387695312e-8 && x != 1.00048828125 {
                assert_eq!(minifloat_to_f64(bits.into(), F16), x);
            }
        }
        assert!(minifloat_to_f64(f64_to_minifloat(f64::NAN, F16), F16).is_nan());
        assert_eq!(f64_to_minifloat(-0.0, F16), 0x8000);
    }

    #[test]
    fn bfloat16_matches_float32_top_bits() {
        for x in [1.0f32, -3.5, 1e30, 1e-30, 0.1, 3.0e38] {
            let bits = f64_to_minifloat(x.into(), BF16);
            // Round-to-nearest-even of the float32 bit pattern to its top 16 bits.
            let b = x.to_bits();
            let expect = (b + 0x7fff + ((b >> 16) & 1)) >> 16;
            assert_eq!(bits, expect, "{x}");
        }
        assert_eq!(minifloat_to_f64(0x3f80, BF16), 1.0);
    }

    #[test]
    fn integer_and_float_rules() {
        assert_eq!(cast1::<i32, i8>(Scalar::I32, Scalar::I8, 300), 44);
        assert_eq!(cast1::<f64, i8>(Scalar::F64, Scalar::I8, 300.7), 127);
        assert_eq!(cast1::<f64, i32>(Scalar::F64, Scalar::I32, -2.9), -2);
        assert_eq!(cast1::<f64, i32>(Scalar::F64, Scalar::I32, f64::NAN), 0);
        assert_eq!(cast1::<u64, f64>(Scalar::U64, Scalar::F64, u64::MAX), 18446744073709551615.0);
        assert_eq!(cast1::<i64, u8>(Scalar::I64, Scalar::U8, -1), 255);
        assert_eq!(cast1::<f32, u8>(Scalar::F32, Scalar::Bool, f32::NAN), 1);
        assert_eq!(cast1::<f32, u8>(Scalar::F32, Scalar::Bool, 0.0), 0);
        assert_eq!(cast1::<u8, f32>(Scalar::Bool, Scalar::F32, 7), 1.0);
        assert_eq!(cast1::<f32, [f64; 2]>(Scalar::F32, Scalar::C128, 2.5), [2.5, 0.0]);
        assert_eq!(cast1::<[f64; 2], [f32; 2]>(Scalar::C128, Scalar::C64, [1.5, -2.0]), [1.5, -2.0]);
        assert_eq!(cast1::<f32, u16>(Scalar::F32, Scalar::F16, 0.5), 0x3800);
        assert_eq!(cast1::<u16, f64>(Scalar::BF16, Scalar::F64, 0xc020), -2.5);
    }
}

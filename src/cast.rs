//! Element conversion between the named scalar types (`dlb_tensor_cast`).
//!
//! Rules, chosen to match what NumPy and PyTorch users expect:
//! - integer to narrower integer wraps (two's complement), as C casts and NumPy do;
//! - float to integer truncates toward zero and saturates at the target's range; NaN gives 0;
//! - anything to bool is `value != 0` (NaN is true); bool is 0 or 1;
//! - float16 and bfloat16 round to nearest, ties to even, straight from float64 (no double
//!   rounding), overflowing to infinity;
//! - real to complex sets the imaginary part to 0; complex to real is refused by the caller.

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
    let (mut s, mut d) = (src, dst);
    for _ in 0..n {
        // SAFETY: per the function contract.
        unsafe { write(to, d, read(from, s)) };
        s = s.wrapping_offset(src_stride);
        d = d.wrapping_offset(dst_stride);
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
        unsafe {
            convert_row(from, to, (&x as *const A).cast(), 0, (&mut out as *mut B).cast(), 0, 1);
        }
        out
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

//! Element types: validation of a `DLDataType` read from C or from a foreign tensor, the size of
//! one element, and the named scalar types that casts understand.

use crate::abi::DLDataType;
use crate::error::{Error, Result};

/// DLPack type codes (`DLDataTypeCode`), as plain integers: a code read from foreign memory is
/// compared against these, never transmuted into a Rust enum.
pub(crate) mod code {
    pub const INT: u8 = 0;
    pub const UINT: u8 = 1;
    pub const FLOAT: u8 = 2;
    pub const OPAQUE_HANDLE: u8 = 3;
    pub const BFLOAT: u8 = 4;
    pub const COMPLEX: u8 = 5;
    pub const BOOL: u8 = 6;
    /// First and last of the float8 codes (e3m4 … e8m0fnu).
    pub const FLOAT8_FIRST: u8 = 7;
    pub const FLOAT8_LAST: u8 = 14;
    pub const FLOAT6_E2M3FN: u8 = 15;
    pub const FLOAT6_E3M2FN: u8 = 16;
    pub const FLOAT4_E2M1FN: u8 = 17;
}

/// An element type, as DLPack describes it: a type code, a bit width and a lane count.
///
/// Every `DType` is valid: a known code, a bit width that code allows, at least one lane, and a
/// whole number of bytes per element (sub-byte packed types are refused as unsupported). The
/// usual ones are constants; any other DLPack dtype (float8 variants, vector lanes) comes from
/// [`DType::from_dl`].
///
/// ```
/// use dlbridge::DType;
///
/// assert_eq!(DType::F32.itemsize(), 4);
/// assert_eq!(DType::C128.to_string(), "complex128");
/// let dl = DType::BF16.to_dl();
/// assert_eq!((dl.code.0, dl.bits, dl.lanes), (4, 16, 1));
/// assert_eq!(DType::from_dl(dl).unwrap(), DType::BF16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DType {
    code: u8,
    bits: u8,
    lanes: u16,
}

impl DType {
    /// `bool`, one byte per element (DLPack's kDLBool, 8 bits).
    pub const BOOL: DType = DType { code: code::BOOL, bits: 8, lanes: 1 };
    /// `int8`.
    pub const I8: DType = DType { code: code::INT, bits: 8, lanes: 1 };
    /// `int16`.
    pub const I16: DType = DType { code: code::INT, bits: 16, lanes: 1 };
    /// `int32`.
    pub const I32: DType = DType { code: code::INT, bits: 32, lanes: 1 };
    /// `int64`.
    pub const I64: DType = DType { code: code::INT, bits: 64, lanes: 1 };
    /// `uint8`.
    pub const U8: DType = DType { code: code::UINT, bits: 8, lanes: 1 };
    /// `uint16`.
    pub const U16: DType = DType { code: code::UINT, bits: 16, lanes: 1 };
    /// `uint32`.
    pub const U32: DType = DType { code: code::UINT, bits: 32, lanes: 1 };
    /// `uint64`.
    pub const U64: DType = DType { code: code::UINT, bits: 64, lanes: 1 };
    /// `float16` (IEEE half precision).
    pub const F16: DType = DType { code: code::FLOAT, bits: 16, lanes: 1 };
    /// `bfloat16`.
    pub const BF16: DType = DType { code: code::BFLOAT, bits: 16, lanes: 1 };
    /// `float32`.
    pub const F32: DType = DType { code: code::FLOAT, bits: 32, lanes: 1 };
    /// `float64`.
    pub const F64: DType = DType { code: code::FLOAT, bits: 64, lanes: 1 };
    /// `complex64`: two `float32`s, real part first.
    pub const C64: DType = DType { code: code::COMPLEX, bits: 64, lanes: 1 };
    /// `complex128`: two `float64`s, real part first.
    pub const C128: DType = DType { code: code::COMPLEX, bits: 128, lanes: 1 };

    /// Checks a DLPack dtype (from C, from a foreign tensor, or made up): unknown codes, bit
    /// widths a code does not allow and zero lanes are [`ErrorKind::InvalidArgument`]; sub-byte
    /// types are [`ErrorKind::Unsupported`].
    ///
    /// [`ErrorKind::InvalidArgument`]: crate::ErrorKind::InvalidArgument
    /// [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
    #[inline]
    pub fn from_dl(dt: DLDataType) -> Result<DType> {
        let (code, bits, lanes) = (dt.code.0, dt.bits, dt.lanes);
        // Every import and every creation asks this: the one-lane types of whole bytes are
        // answered at once, the rest (and every refusal) by `check`.
        let usual = lanes == 1
            && matches!(
                (code, bits),
                (code::INT | code::UINT, 8 | 16 | 32 | 64)
                    | (code::FLOAT, 16 | 32 | 64)
                    | (code::BFLOAT, 16)
                    | (code::COMPLEX, 64 | 128)
                    | (code::BOOL, 8)
                    | (code::FLOAT8_FIRST..=code::FLOAT8_LAST, 8)
            );
        if usual { Ok(DType { code, bits, lanes }) } else { DType::check(code, bits, lanes) }
    }

    /// `from_dl` for the dtypes it does not answer at once.
    #[cold]
    fn check(code: u8, bits: u8, lanes: u16) -> Result<DType> {
        if lanes == 0 {
            return Err(Error::invalid("dtype has lanes == 0; every DLPack dtype has at least one lane"));
        }
        if bits == 0 {
            return Err(Error::invalid("dtype has bits == 0"));
        }
        let allowed: &[u8] = match code {
            code::INT | code::UINT => &[8, 16, 32, 64],
            code::FLOAT => &[16, 32, 64],
            code::BFLOAT => &[16],
            code::COMPLEX => &[64, 128],
            code::BOOL => &[8],
            code::FLOAT8_FIRST..=code::FLOAT8_LAST => &[8],
            code::FLOAT6_E2M3FN | code::FLOAT6_E3M2FN => &[6],
            code::FLOAT4_E2M1FN => &[4],
            code::OPAQUE_HANDLE => {
                return Err(Error::unsupported(
                    "dtype code 3 (kDLOpaqueHandle) has no agreed meaning; dlbridge does not exchange it",
                ));
            }
            _ => {
                return Err(Error::invalid(format_args!(
                    "dtype code {code} is not a DLPack 1.3 type code (known codes are 0..=17)"
                )));
            }
        };
        // The float8/6/4 codes name one width each; the others could have any whole-byte width,
        // and one dlbridge lacks (PyTorch's complex32, a 128-bit float) is unsupported, not bad.
        let open_width =
            matches!(code, code::INT | code::UINT | code::FLOAT | code::BFLOAT | code::COMPLEX | code::BOOL);
        if !allowed.contains(&bits) && open_width && bits.is_multiple_of(8) {
            return Err(Error::unsupported(format_args!(
                "dtype code {code} ({}) with {bits} bits is not a type dlbridge handles (it handles {allowed:?})",
                code_name(code)
            )));
        }
        if !allowed.contains(&bits) {
            return Err(Error::invalid(format_args!(
                "dtype code {code} ({}) cannot have {bits} bits (allowed: {allowed:?})",
                code_name(code)
            )));
        }
        let total_bits = u32::from(bits) * u32::from(lanes);
        if total_bits % 8 != 0 {
            return Err(Error::unsupported(format_args!(
                "dtype {} with {lanes} lane(s) is {total_bits} bits per element, not a whole number \
                 of bytes; packed sub-byte types are not supported",
                code_name(code)
            )));
        }
        Ok(DType { code, bits, lanes })
    }

    /// The DLPack struct for this dtype.
    pub fn to_dl(self) -> DLDataType {
        DLDataType { code: crate::abi::DLDataTypeCode(self.code), bits: self.bits, lanes: self.lanes }
    }

    /// Bytes one element occupies (always at least 1).
    pub fn itemsize(self) -> usize {
        (usize::from(self.bits) * usize::from(self.lanes)) / 8
    }

    /// The DLPack type code (0 int, 1 uint, 2 float, 4 bfloat, 5 complex, 6 bool, 7..=14 float8, …).
    pub fn code(self) -> u8 {
        self.code
    }

    /// Bits per lane.
    pub fn bits(self) -> u8 {
        self.bits
    }

    /// Lanes per element (1 but for vector types).
    pub fn lanes(self) -> u16 {
        self.lanes
    }

    /// The named scalar type, for the dtypes that casts convert between.
    pub fn scalar(self) -> Option<Scalar> {
        if self.lanes != 1 {
            return None;
        }
        Some(match (self.code, self.bits) {
            (code::BOOL, 8) => Scalar::Bool,
            (code::INT, 8) => Scalar::I8,
            (code::INT, 16) => Scalar::I16,
            (code::INT, 32) => Scalar::I32,
            (code::INT, 64) => Scalar::I64,
            (code::UINT, 8) => Scalar::U8,
            (code::UINT, 16) => Scalar::U16,
            (code::UINT, 32) => Scalar::U32,
            (code::UINT, 64) => Scalar::U64,
            (code::FLOAT, 16) => Scalar::F16,
            (code::BFLOAT, 16) => Scalar::BF16,
            (code::FLOAT, 32) => Scalar::F32,
            (code::FLOAT, 64) => Scalar::F64,
            (code::COMPLEX, 64) => Scalar::C64,
            (code::COMPLEX, 128) => Scalar::C128,
            _ => return None,
        })
    }

    fn scalar_ignoring_lanes(self) -> Option<Scalar> {
        DType { lanes: 1, ..self }.scalar()
    }
}

fn code_name(code: u8) -> &'static str {
    match code {
        code::INT => "int",
        code::UINT => "uint",
        code::FLOAT => "float",
        code::OPAQUE_HANDLE => "opaque handle",
        code::BFLOAT => "bfloat",
        code::COMPLEX => "complex",
        code::BOOL => "bool",
        code::FLOAT8_FIRST..=code::FLOAT8_LAST => "float8",
        code::FLOAT6_E2M3FN | code::FLOAT6_E3M2FN => "float6",
        code::FLOAT4_E2M1FN => "float4",
        _ => "unknown",
    }
}

/// The scalar element types dlbridge can convert between (`dlb_tensor_cast`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    BF16,
    F32,
    F64,
    C64,
    C128,
}

impl Scalar {
    pub const ALL: [Scalar; 15] = [
        Scalar::Bool,
        Scalar::I8,
        Scalar::I16,
        Scalar::I32,
        Scalar::I64,
        Scalar::U8,
        Scalar::U16,
        Scalar::U32,
        Scalar::U64,
        Scalar::F16,
        Scalar::BF16,
        Scalar::F32,
        Scalar::F64,
        Scalar::C64,
        Scalar::C128,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scalar::Bool => "bool",
            Scalar::I8 => "int8",
            Scalar::I16 => "int16",
            Scalar::I32 => "int32",
            Scalar::I64 => "int64",
            Scalar::U8 => "uint8",
            Scalar::U16 => "uint16",
            Scalar::U32 => "uint32",
            Scalar::U64 => "uint64",
            Scalar::F16 => "float16",
            Scalar::BF16 => "bfloat16",
            Scalar::F32 => "float32",
            Scalar::F64 => "float64",
            Scalar::C64 => "complex64",
            Scalar::C128 => "complex128",
        }
    }

    pub fn dtype(self) -> DType {
        let (code, bits) = match self {
            Scalar::Bool => (code::BOOL, 8),
            Scalar::I8 => (code::INT, 8),
            Scalar::I16 => (code::INT, 16),
            Scalar::I32 => (code::INT, 32),
            Scalar::I64 => (code::INT, 64),
            Scalar::U8 => (code::UINT, 8),
            Scalar::U16 => (code::UINT, 16),
            Scalar::U32 => (code::UINT, 32),
            Scalar::U64 => (code::UINT, 64),
            Scalar::F16 => (code::FLOAT, 16),
            Scalar::BF16 => (code::BFLOAT, 16),
            Scalar::F32 => (code::FLOAT, 32),
            Scalar::F64 => (code::FLOAT, 64),
            Scalar::C64 => (code::COMPLEX, 64),
            Scalar::C128 => (code::COMPLEX, 128),
        };
        DType { code, bits, lanes: 1 }
    }

    pub fn is_complex(self) -> bool {
        matches!(self, Scalar::C64 | Scalar::C128)
    }
}

/// A short human name ("float32", "float8 (code 10)", "int32x4").
impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scalar_ignoring_lanes() {
            Some(s) => f.write_str(s.name())?,
            None => write!(f, "{} (code {}, {} bits)", code_name(self.code), self.code, self.bits)?,
        }
        if self.lanes != 1 {
            write!(f, "x{}", self.lanes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::DLDataTypeCode;

    fn dl(code: u8, bits: u8, lanes: u16) -> DLDataType {
        DLDataType { code: DLDataTypeCode(code), bits, lanes }
    }

    /// The quick answers of `from_dl` are exactly the full check's, for every code and width.
    /// (Pure arithmetic, 32,000 cases: natively only, where it takes milliseconds.)
    #[test]
    #[cfg_attr(miri, ignore = "exhaustive arithmetic, checked natively")]
    fn the_quick_path_agrees_with_the_full_check() {
        for code in 0..=20u8 {
            for bits in 0..=255u8 {
                for lanes in [0u16, 1, 2, 3, 4, 16] {
                    let quick = DType::from_dl(dl(code, bits, lanes)).map_err(|e| e.kind);
                    let full = DType::check(code, bits, lanes).map_err(|e| e.kind);
                    assert_eq!(quick, full, "code {code}, bits {bits}, lanes {lanes}");
                }
            }
        }
    }

    #[test]
    fn named_dtypes_round_trip() {
        for s in Scalar::ALL {
            let d = DType::from_dl(s.dtype().to_dl()).unwrap();
            assert_eq!(d.scalar(), Some(s));
            assert_eq!(d.to_string(), s.name());
        }
        assert_eq!(Scalar::C128.dtype().itemsize(), 16);
        assert_eq!(Scalar::Bool.dtype().itemsize(), 1);
    }

    #[test]
    fn refuses_bad_dtypes() {
        use crate::error::ErrorKind::*;
        assert_eq!(DType::from_dl(dl(2, 32, 0)).unwrap_err().kind, InvalidArgument);
        assert_eq!(DType::from_dl(dl(2, 0, 1)).unwrap_err().kind, InvalidArgument);
        assert_eq!(DType::from_dl(dl(2, 7, 1)).unwrap_err().kind, InvalidArgument);
        assert_eq!(DType::from_dl(dl(99, 8, 1)).unwrap_err().kind, InvalidArgument);
        assert_eq!(DType::from_dl(dl(3, 64, 1)).unwrap_err().kind, Unsupported);
        assert_eq!(DType::from_dl(dl(17, 4, 1)).unwrap_err().kind, Unsupported);
        // complex32 (two float16) is real, PyTorch makes it, dlbridge does not handle it.
        assert_eq!(DType::from_dl(dl(5, 32, 1)).unwrap_err().kind, Unsupported);
        assert_eq!(DType::from_dl(dl(17, 8, 1)).unwrap_err().kind, InvalidArgument);
        // Two float4 lanes make a whole byte.
        assert_eq!(DType::from_dl(dl(17, 4, 2)).unwrap().itemsize(), 1);
        assert!(DType::from_dl(dl(99, 8, 1)).unwrap_err().message.contains("99"));
    }

    #[test]
    fn vector_and_float8_types_have_sizes_but_no_scalar() {
        let v = DType::from_dl(dl(2, 32, 4)).unwrap();
        assert_eq!(v.itemsize(), 16);
        assert_eq!(v.scalar(), None);
        assert_eq!(v.to_string(), "float32x4");
        let f8 = DType::from_dl(dl(10, 8, 1)).unwrap();
        assert_eq!(f8.itemsize(), 1);
        assert_eq!(f8.scalar(), None);
    }
}

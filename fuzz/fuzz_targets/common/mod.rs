//! Shared pieces of the fuzz targets: the C API's declarations, a byte cursor that decodes the
//! fuzzer's input, checked calls into the C API, and the harness's own (independent) layout
//! arithmetic and gathers.
#![allow(dead_code, unused_imports)]

use std::ffi::CStr;
use std::ptr::null_mut;

// The C API as C declares it (include/dlbridge.h), shared with the tests; the DLPack structs
// in it are `dlbridge::dlpark`'s.
#[path = "../../../tests/common/c_api.rs"]
mod c_api;
pub use c_api::*;

/// Reads the fuzzer's bytes front to back; past the end every read gives zeros, so every input
/// decodes to something.
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
    pub fn i64(&mut self) -> i64 {
        self.u64() as i64
    }
    /// Picks from `choices` by one byte.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[usize::from(self.u8()) % choices.len()]
    }
    /// An i64 that is usually small but can be any interesting or raw value. One tag byte:
    /// 0..=159 small (tag % 16 - 4, so -4..=11), 160..=223 an edge value, 224..=255 eight raw bytes.
    pub fn dim(&mut self) -> i64 {
        const EDGES: [i64; 16] = [
            -1,
            i64::MIN,
            i64::MAX,
            1 << 62,
            1 << 32,
            (1 << 31) - 1,
            -(1 << 40),
            1 << 20,
            65536,
            -65536,
            i64::MAX / 2 + 1,
            i64::MIN + 1,
            -2,
            100,
            4096,
            1 << 48,
        ];
        let tag = self.u8();
        match tag {
            0..=159 => i64::from(tag % 16) - 4,
            160..=223 => EDGES[usize::from(tag - 160) % EDGES.len()],
            _ => self.i64(),
        }
    }
}

/// Whether FUZZ_TRACE is set: the targets then print what each input did (to check seeds).
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::common::tracing() {
            eprintln!($($arg)*);
        }
    };
}

pub fn last_error() -> String {
    // SAFETY: dlb_last_error always returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(dlb_last_error()) }.to_string_lossy().into_owned()
}

/// Asserts that a failed call left a message naming the function.
#[track_caller]
pub fn assert_error(status: dlb_status, want: dlb_status, function: &str) {
    assert_eq!(status, want, "{function}: want {want:?}, got {status:?} ({})", last_error());
    let msg = last_error();
    assert!(msg.starts_with(function), "{function} failed without its message: {msg:?}");
}

#[track_caller]
pub fn ok(status: dlb_status, what: &str) {
    assert_eq!(status, DLB_OK, "{what} failed: {}", last_error());
}

pub const CPU: DLDevice = DLDevice { device_type: DLDeviceType(1), device_id: 0 };

pub fn dt(code: u8, bits: u8, lanes: u16) -> DLDataType {
    DLDataType { code: DLDataTypeCode(code), bits, lanes }
}

/// Valid dtypes with their item size, for the targets that make their own tensors: every
/// castable scalar, a float8, and two vector types (which nothing can cast).
pub const DTYPES: [(u8, u8, u16); 18] = [
    (6, 8, 1),   // bool
    (0, 8, 1),   // int8
    (0, 16, 1),  // int16
    (0, 32, 1),  // int32
    (0, 64, 1),  // int64
    (1, 8, 1),   // uint8
    (1, 16, 1),  // uint16
    (1, 32, 1),  // uint32
    (1, 64, 1),  // uint64
    (2, 16, 1),  // float16
    (4, 16, 1),  // bfloat16
    (2, 32, 1),  // float32
    (2, 64, 1),  // float64
    (5, 64, 1),  // complex64
    (5, 128, 1), // complex128
    (8, 8, 1),   // float8 (no casts)
    (2, 32, 4),  // float32x4 (no casts)
    (0, 16, 3),  // int16x3 (no casts)
];

pub fn itemsize(d: DLDataType) -> usize {
    usize::from(d.bits) * usize::from(d.lanes) / 8
}

/// Whether dlbridge can cast from/to this dtype (a lanes-1 scalar of the named kinds).
pub fn castable(d: DLDataType) -> bool {
    d.lanes == 1 && DTYPES[..15].iter().any(|&(c, b, _)| c == d.code.0 && b == d.bits)
}

/// Row-major strides in elements (extents of 0 counted as 1, as the library does; the value
/// of a stride past a zero extent does not matter).
pub fn row_major(shape: &[i64]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut acc: i64 = 1;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc = acc.saturating_mul(shape[i].max(1));
    }
    s
}

/// The harness's own layout check, in i128: what a strided layout reaches, in bytes relative to
/// its first element, or None when it has no elements. Err when the layout is not one the
/// library may accept (a negative extent, more bytes than an address space, a span that does
/// not fit in isize).
pub fn reach(shape: &[i64], strides: &[i64], item: usize) -> Result<Option<(i128, i128)>, ()> {
    if shape.iter().any(|&n| n < 0) {
        return Err(());
    }
    let numel: u128 = shape.iter().fold(1u128, |a, &n| a.saturating_mul(n as u128));
    if numel.saturating_mul(item as u128) > isize::MAX as u128 {
        return Err(());
    }
    if numel == 0 {
        return Ok(None);
    }
    let (mut lo, mut hi) = (0i128, 0i128);
    for (&n, &s) in shape.iter().zip(strides) {
        let r = i128::from(n - 1) * i128::from(s);
        if r < 0 { lo += r } else { hi += r }
    }
    let size = item as i128;
    let (lo, hi) = (lo * size, (hi + 1) * size);
    let fits = |v: i128| v >= isize::MIN as i128 && v <= isize::MAX as i128;
    if !fits(lo) || !fits(hi) || !fits(hi - lo) {
        return Err(());
    }
    Ok(Some((lo, hi)))
}

pub fn numel(shape: &[i64]) -> u128 {
    shape.iter().fold(1u128, |a, &n| a.saturating_mul(n.max(0) as u128))
}

/// Gathers the elements of a strided layout in row-major order from `mem`, where the first
/// element sits at byte `first` of `mem`. The caller has checked that every element lies in
/// `mem`.
pub fn gather(mem: &[u8], first: i128, shape: &[i64], strides: &[i64], item: usize) -> Vec<u8> {
    let n = numel(shape) as usize;
    let mut out = Vec::with_capacity(n * item);
    if n == 0 {
        return out;
    }
    // Rows along the last axis: one slice copy when that axis is unit-stride, else per element.
    let nd = shape.len();
    let (row_len, row_unit) = match nd {
        0 => (1usize, true),
        _ => (shape[nd - 1] as usize, strides[nd - 1] == 1),
    };
    let last_step = if nd == 0 { 0 } else { i128::from(strides[nd - 1]) * item as i128 };
    let outer = &shape[..nd.saturating_sub(1)];
    // An odometer over the outer indices; `off` follows it incrementally (in i128: no overflow).
    let step: Vec<i128> = strides.iter().map(|&s| i128::from(s) * item as i128).collect();
    let mut idx = vec![0i64; outer.len()];
    let mut off = first;
    for _ in 0..n / row_len {
        let o = usize::try_from(off).expect("gather: element before the memory");
        if row_unit {
            out.extend_from_slice(&mem[o..o + row_len * item]);
        } else {
            for j in 0..row_len as i128 {
                let e = usize::try_from(off + j * last_step).expect("gather: element before the memory");
                out.extend_from_slice(&mem[e..e + item]);
            }
        }
        for a in (0..outer.len()).rev() {
            idx[a] += 1;
            off += step[a];
            if idx[a] < outer[a] {
                break;
            }
            off -= step[a] * i128::from(idx[a]);
            idx[a] = 0;
        }
    }
    out
}

/// The borrowed DLTensor of a handle.
pub fn dl<'a>(t: *const dlb_tensor) -> &'a DLTensor {
    // SAFETY: live handles only.
    let p = unsafe { dlb_tensor_dltensor(t) };
    assert!(!p.is_null(), "dlb_tensor_dltensor returned NULL for a live handle");
    // SAFETY: valid while the handle lives.
    unsafe { &*p }
}

/// Shape and strides of a DLTensor (strides must be non-NULL when ndim > 0, which holds for
/// dlbridge's own tensors and exports).
pub fn dims_of(d: &DLTensor) -> (Vec<i64>, Vec<i64>) {
    let n = usize::try_from(d.ndim).expect("negative ndim in a dlbridge tensor");
    if n == 0 {
        return (vec![], vec![]);
    }
    assert!(!d.shape.is_null() && !d.strides.is_null(), "NULL shape/strides with ndim {n}");
    // SAFETY: dlbridge promises ndim entries.
    unsafe {
        (std::slice::from_raw_parts(d.shape, n).to_vec(), std::slice::from_raw_parts(d.strides, n).to_vec())
    }
}

/// The bytes of a row-major contiguous CPU tensor (a copy, cast or device move), checking that
/// it is row-major, writable and has byte_offset 0.
pub fn contiguous_bytes(t: *const dlb_tensor) -> Vec<u8> {
    let d = dl(t);
    assert_eq!(d.byte_offset, 0);
    assert_eq!(d.device.device_type.0, 1, "not a CPU tensor");
    let (shape, strides) = dims_of(d);
    let n = numel(&shape) as usize;
    if n > 0 {
        assert_eq!(strides, row_major(&shape), "a copy is not row-major: shape {shape:?}");
    }
    // SAFETY: live handle.
    assert!(unsafe { dlb_tensor_is_contiguous(t) });
    // SAFETY: live handle.
    assert!(!unsafe { dlb_tensor_is_read_only(t) }, "a copy is read-only");
    let len = n * itemsize(d.dtype);
    if len == 0 {
        return vec![];
    }
    // SAFETY: a contiguous CPU tensor of `len` bytes from `data`.
    unsafe { std::slice::from_raw_parts(d.data.cast::<u8>(), len) }.to_vec()
}

/// dlb_tensor_copy, asserting it works, returning the new handle and its bytes.
pub fn copy_of(t: *const dlb_tensor) -> (*mut dlb_tensor, Vec<u8>) {
    let mut c = null_mut();
    // SAFETY: live handle, valid out.
    ok(unsafe { dlb_tensor_copy(t, &mut c) }, "dlb_tensor_copy");
    assert!(!c.is_null());
    let bytes = contiguous_bytes(c);
    (c, bytes)
}

pub fn free(t: *mut dlb_tensor) {
    // SAFETY: live handle (or NULL) that nobody uses afterwards.
    unsafe { dlb_tensor_free(t) }
}

/// Fills memory with a position-dependent pattern (every byte differs from its neighbours, so
/// a gather from the wrong place shows).
pub fn pattern(buf: &mut [u8], seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(167).wrapping_add(u32::from(seed)).wrapping_add((i >> 8) as u32) as u8;
    }
}

/// Whether a DLPack element type code / device is one the harness expects the library to take.
pub fn device_expect(ty: u32, id: i32) -> DeviceClass {
    match ty {
        1 | 2 | 3 if id < 0 => DeviceClass::Invalid,
        1 => DeviceClass::Cpu,
        2 | 3 => DeviceClass::Cuda,
        4 | 7..=18 => DeviceClass::Unsupported,
        _ => DeviceClass::Invalid,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceClass {
    Cpu,
    Cuda,
    Unsupported,
    Invalid,
}

/// What the harness expects of a view: given the bytes its storage covers, `[lo0, hi0)`
/// relative to the parent's first element, and the view's first element `start` bytes after
/// the parent's first, Some((lo, hi)) (the view's reach, relative to its own first element;
/// (0, 0) without elements) when every element lies inside, None when the library must refuse.
pub fn view_expect(
    lo0: i128,
    hi0: i128,
    start: i128,
    shape: &[i64],
    strides: &[i64],
    item: usize,
) -> Option<(i128, i128)> {
    match reach(shape, strides, item) {
        Err(()) => None,
        Ok(None) => (lo0 <= start && start <= hi0).then_some((0, 0)),
        Ok(Some((lo, hi))) => (start + lo >= lo0 && start + hi <= hi0).then_some((lo, hi)),
    }
}

/// The status the documented dtype rules give a DLDataType: Ok(item size) or the error.
pub fn dtype_expect(code: u8, bits: u8, lanes: u16) -> Result<usize, dlb_status> {
    if lanes == 0 || bits == 0 {
        return Err(DLB_ERR_INVALID_ARGUMENT);
    }
    let allowed: &[u8] = match code {
        0 | 1 => &[8, 16, 32, 64],
        2 => &[16, 32, 64],
        4 => &[16],
        5 => &[64, 128],
        6 => &[8],
        7..=14 => &[8],
        15 | 16 => &[6],
        17 => &[4],
        3 => return Err(DLB_ERR_UNSUPPORTED),
        _ => return Err(DLB_ERR_INVALID_ARGUMENT),
    };
    if !allowed.contains(&bits) {
        // A whole-byte width of an open-width kind that dlbridge lacks is unsupported; a width
        // the type code cannot have is invalid.
        return Err(if matches!(code, 0 | 1 | 2 | 4 | 5 | 6) && bits % 8 == 0 {
            DLB_ERR_UNSUPPORTED
        } else {
            DLB_ERR_INVALID_ARGUMENT
        });
    }
    let total = u32::from(bits) * u32::from(lanes);
    if total % 8 != 0 {
        return Err(DLB_ERR_UNSUPPORTED);
    }
    Ok(total as usize / 8)
}

//! Fuzzes views, copies, casts and device moves: a CPU tensor of a fuzzer-chosen dtype and size
//! (at most 64 KiB) filled with a pattern, then a fuzzer-chosen sequence of operations on a pool
//! of handles (dlb_tensor_view with arbitrary shape/strides/offset, dlb_tensor_copy,
//! dlb_tensor_cast, dlb_tensor_to_device to the CPU, dlb_tensor_alias, dlb_tensor_free, a write
//! through a writable handle).
//!
//! The harness keeps its own model of every handle: the storage it lives on (base pointer and
//! length, which it knows because it made the first tensor or because a copy is new row-major
//! memory), its first element's byte offset in that storage, its shape and strides.
//!
//! Properties:
//! - a view is accepted iff every element lies inside the storage (computed by the harness in
//!   i128); a refused view gives DLB_ERR_INVALID_ARGUMENT, *out NULL and a message;
//! - an accepted view's data pointer is the parent's plus offset * itemsize, and its elements
//!   (gathered by the harness from the storage) are exactly what dlb_tensor_copy returns, row-major;
//! - copies and moves to the CPU are row-major, writable, independent and equal to the gather;
//! - casts: same-dtype casts copy; complex to real and non-scalar dtypes are
//!   DLB_ERR_UNSUPPORTED; int32->int64, int8->int16, uint16->uint64, float32->float64,
//!   float16->float32, bfloat16->float32 and anything->bool are checked element by element;
//! - an alias has the same data pointer and read-only bit;
//! - never DLB_ERR_PANIC; at the end dlb_live_allocations() is back to its start.
#![no_main]

mod common;

use std::ptr::null_mut;

use common::*;
use libfuzzer_sys::fuzz_target;

/// The harness's model of one handle.
#[derive(Clone)]
struct Model {
    h: *mut dlb_tensor,
    /// Base address and byte length of the storage the handle lives on.
    base: usize,
    len: usize,
    /// The first element, in bytes from `base`.
    first: i128,
    shape: Vec<i64>,
    strides: Vec<i64>,
    dtype: DLDataType,
}

impl Model {
    fn item(&self) -> usize {
        itemsize(self.dtype)
    }
    fn numel(&self) -> u128 {
        numel(&self.shape)
    }
    /// The bytes the handle reaches, in storage coordinates; None without elements.
    fn range(&self) -> Option<(i128, i128)> {
        let (lo, hi) = reach(&self.shape, &self.strides, self.item()).ok()??;
        Some((self.first + lo, self.first + hi))
    }
    /// The elements, row-major, gathered by the harness from the storage.
    fn gather(&self) -> Vec<u8> {
        if self.numel() == 0 {
            return vec![];
        }
        // SAFETY: the storage is alive while any handle on it lives (this one does), and the
        // harness checked at view time that every element lies in [base, base + len).
        let mem = unsafe { std::slice::from_raw_parts(self.base as *const u8, self.len) };
        gather(mem, self.first, &self.shape, &self.strides, self.item())
    }
}

/// Copies bigger than this are not made (zero strides give huge views of small memory).
const MAX_COPY_BYTES: u128 = 1 << 17;

fuzz_target!(|data: &[u8]| run(data));

/// A new row-major tensor (copy, cast, move) as a model on its own storage.
fn fresh(h: *mut dlb_tensor, shape: &[i64], dtype: DLDataType) -> Model {
    let d = dl(h);
    let (s, st) = dims_of(d);
    assert_eq!(s, shape);
    assert_eq!((d.dtype.code.0, d.dtype.bits, d.dtype.lanes), (dtype.code.0, dtype.bits, dtype.lanes));
    let len = (numel(shape) as usize) * itemsize(dtype);
    if len > 0 {
        assert_eq!(st, row_major(shape), "new tensors are row-major");
        assert_eq!(d.data as usize % 256, 0, "allocations are 256-byte aligned");
    }
    Model { h, base: d.data as usize, len, first: 0, shape: s, strides: st, dtype }
}

fn run(data: &[u8]) {
    let live0 = dlb_live_allocations();
    let mut c = Cursor::new(data);

    // ---- the base tensor ----------------------------------------------------------------------
    let (code, bits, lanes) = c.pick(&DTYPES);
    let dtype = dt(code, bits, lanes);
    let item = itemsize(dtype);
    let max = 64 * 1024 / item;
    let n = usize::from(c.u16()) % (max + 1);
    let base_shape: Vec<i64> = match c.u8() % 3 {
        0 => vec![n as i64],
        // 2-D when it factors; otherwise 1-D.
        1 if n > 0 => {
            let r = (usize::from(c.u8()) % 16 + 1).min(n);
            if n % r == 0 { vec![r as i64, (n / r) as i64] } else { vec![n as i64] }
        }
        _ => vec![n as i64],
    };
    let mut t = null_mut();
    // SAFETY: shape array of the given length; valid out.
    ok(
        unsafe { dlb_tensor_empty(base_shape.as_ptr(), base_shape.len() as i32, dtype, CPU, &mut t) },
        "dlb_tensor_empty",
    );
    let seed = c.u8();
    let nbytes = n * item;
    if nbytes > 0 {
        let mut p = null_mut();
        // SAFETY: a fresh writable tensor; nbytes bytes from its data pointer.
        unsafe {
            ok(dlb_tensor_data_mut(t, &mut p), "dlb_tensor_data_mut");
            pattern(std::slice::from_raw_parts_mut(p.cast::<u8>(), nbytes), seed);
        }
    }
    let mut pool = vec![fresh(t, &base_shape, dtype)];
    let cuda_none = dlb_cuda_device_count() == 0;

    // ---- the operations -------------------------------------------------------------------------
    let mut steps = 0;
    while !c.is_empty() && steps < 64 {
        steps += 1;
        let op = c.u8();
        let which = usize::from(c.u8());
        if pool.is_empty() {
            break;
        }
        let m = pool[which % pool.len()].clone();
        crate::trace!("views: op {} on handle {} of {}", op % 8, which % pool.len(), pool.len());
        match op % 8 {
            // A view with arbitrary shape, strides (or NULL) and offset.
            0..=2 => {
                let ndim: i32 = match c.u8() {
                    t @ 0..=247 => i32::from(t % 9),
                    t => [-1, 65, 9, 64, i32::MIN, 100, 63, 0][usize::from(t) % 8],
                };
                let alloc = ndim.clamp(0, 64) as usize;
                let shape: Vec<i64> = (0..alloc).map(|_| c.dim()).collect();
                let null_strides = c.u8() < 48;
                let strides: Vec<i64> =
                    if null_strides { vec![] } else { (0..alloc).map(|_| c.dim()).collect() };
                let offset = c.dim();
                let eff = if null_strides { row_major(&shape) } else { strides.clone() };
                let start = m.first + i128::from(offset) * m.item() as i128;
                let expect = if (0..=64).contains(&ndim) {
                    view_expect(-m.first, m.len as i128 - m.first, start - m.first, &shape, &eff, m.item())
                } else {
                    None
                };
                let mut v = 0x1 as *mut dlb_tensor;
                let sp = if shape.is_empty() { null_mut::<i64>().cast_const() } else { shape.as_ptr() };
                let stp = if null_strides { null_mut::<i64>().cast_const() } else { strides.as_ptr() };
                // SAFETY: arrays of `alloc` entries (or NULL); valid out.
                let st = unsafe { dlb_tensor_view(m.h, sp, stp, ndim, offset, &mut v) };
                crate::trace!("views:   view {ndim} {shape:?} {strides:?} +{offset} -> {st:?}");
                match expect {
                    None => {
                        assert_error(st, DLB_ERR_INVALID_ARGUMENT, "dlb_tensor_view");
                        assert!(v.is_null(), "*out not NULL after a refused view");
                    }
                    Some(_) => {
                        ok(st, "dlb_tensor_view (the harness finds every element inside)");
                        let d = dl(v);
                        let (s, st) = dims_of(d);
                        assert_eq!(s, shape);
                        let vm = Model { h: v, first: start, shape: s, strides: st, ..m.clone() };
                        if vm.numel() > 0 {
                            assert_eq!(st_eq(&vm.strides, &eff), true, "view strides differ");
                            assert_eq!(d.data as usize as i128, m.base as i128 + start, "view data pointer");
                        }
                        // shares_memory: exactly when the byte ranges overlap (same storage here).
                        let overlap = match (vm.range(), m.range()) {
                            (Some((a0, a1)), Some((b0, b1))) => a0 < b1 && b0 < a1,
                            _ => false,
                        };
                        // SAFETY: live handles.
                        assert_eq!(unsafe { dlb_tensor_shares_memory(v, m.h) }, overlap, "shares_memory");
                        // SAFETY: live handles.
                        assert_eq!(unsafe { dlb_tensor_is_read_only(v) }, unsafe {
                            dlb_tensor_is_read_only(m.h)
                        });
                        if vm.numel() * vm.item() as u128 <= MAX_COPY_BYTES {
                            let (cp, bytes) = copy_of(v);
                            assert!(bytes == vm.gather(), "view: copy differs from the harness's gather");
                            free(cp);
                        }
                        pool.push(vm);
                    }
                }
            }
            // Copy (or a move to the CPU): row-major, equal to the gather, independent.
            3 | 4 => {
                if m.numel() * m.item() as u128 > MAX_COPY_BYTES {
                    continue;
                }
                let mut cp = null_mut();
                if op % 8 == 3 {
                    // SAFETY: live handle, valid out.
                    ok(unsafe { dlb_tensor_copy(m.h, &mut cp) }, "dlb_tensor_copy");
                } else {
                    // SAFETY: live handle, valid out.
                    ok(unsafe { dlb_tensor_to_device(m.h, CPU, &mut cp) }, "dlb_tensor_to_device(cpu)");
                }
                let bytes = contiguous_bytes(cp);
                assert!(bytes == m.gather(), "copy differs from the harness's gather");
                if m.numel() > 0 {
                    // SAFETY: live handles.
                    assert!(!unsafe { dlb_tensor_shares_memory(cp, m.h) }, "a copy shares memory");
                }
                pool.push(fresh(cp, &m.shape, m.dtype));
                // A move to a CUDA device without a driver is a device error.
                if cuda_none && op & 0x80 != 0 {
                    let mut g = null_mut();
                    let cuda = DLDevice { device_type: DLDeviceType(2), device_id: 0 };
                    // SAFETY: live handle, valid out.
                    let st = unsafe { dlb_tensor_to_device(m.h, cuda, &mut g) };
                    assert_error(st, DLB_ERR_DEVICE, "dlb_tensor_to_device");
                    assert!(g.is_null());
                }
            }
            // Cast.
            5 => {
                let (tc, tb, tl) = c.pick(&DTYPES);
                let to = dt(tc, tb, tl);
                if m.numel() * itemsize(to).max(m.item()) as u128 > MAX_COPY_BYTES {
                    continue;
                }
                let mut r = null_mut();
                // SAFETY: live handle, valid out.
                let st = unsafe { dlb_tensor_cast(m.h, to, &mut r) };
                crate::trace!("views:   cast to {tc}/{tb}/{tl} -> {st:?}");
                let same = (to.code.0, to.bits, to.lanes) == (m.dtype.code.0, m.dtype.bits, m.dtype.lanes);
                let complex_to_real = m.dtype.code.0 == 5 && to.code.0 != 5;
                if !same && (!castable(m.dtype) || !castable(to) || complex_to_real) {
                    assert_error(st, DLB_ERR_UNSUPPORTED, "dlb_tensor_cast");
                    assert!(r.is_null());
                    continue;
                }
                ok(st, "dlb_tensor_cast");
                let out = contiguous_bytes(r);
                let src = m.gather();
                if same {
                    assert!(out == src, "a same-dtype cast is not a copy");
                } else {
                    check_cast(m.dtype, to, &src, &out);
                }
                pool.push(fresh(r, &m.shape, to));
            }
            // Alias.
            6 => {
                let mut a = null_mut();
                // SAFETY: live handle, valid out.
                ok(unsafe { dlb_tensor_alias(m.h, &mut a) }, "dlb_tensor_alias");
                assert_eq!(dl(a).data, dl(m.h).data);
                pool.push(Model { h: a, ..m.clone() });
            }
            // Free one handle, or write through it (every handle here is writable).
            _ => {
                if op & 0x40 != 0 && m.numel() > 0 {
                    let mut p = null_mut();
                    // SAFETY: live handle, exclusive use here; the first element is in its storage.
                    unsafe {
                        ok(dlb_tensor_data_mut(m.h, &mut p), "dlb_tensor_data_mut");
                        assert_eq!(p as usize as i128, m.base as i128 + m.first);
                        *p.cast::<u8>() ^= 0x5a;
                    }
                } else {
                    let i = which % pool.len();
                    let gone = pool.swap_remove(i);
                    free(gone.h);
                }
            }
        }
    }

    for m in pool {
        free(m.h);
    }
    assert_eq!(dlb_live_allocations(), live0, "a buffer leaked");
}

fn st_eq(a: &[i64], b: &[i64]) -> bool {
    a == b
}

fn rd<const N: usize>(b: &[u8], i: usize) -> [u8; N] {
    b[i * N..i * N + N].try_into().unwrap()
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = (h >> 10) & 0x1f;
    let man = u32::from(h & 0x3ff);
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // subnormal: man * 2^-24
            let v = man as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        e => sign | ((u32::from(e) + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Element-by-element checks of the cast pairs whose results the harness can compute exactly.
fn check_cast(from: DLDataType, to: DLDataType, src: &[u8], out: &[u8]) {
    let (fi, ti) = (itemsize(from), itemsize(to));
    let n = src.len() / fi;
    assert_eq!(out.len(), n * ti);
    let key = ((from.code.0, from.bits), (to.code.0, to.bits));
    for i in 0..n {
        let s = &src[i * fi..i * fi + fi];
        match key {
            // anything -> bool is "!= 0" (NaN is true, -0.0 is false)
            (_, (6, 8)) => {
                let nonzero = match from.code.0 {
                    0 | 1 | 6 => s.iter().any(|&b| b != 0),
                    2 if fi == 2 => u16::from_le_bytes(rd(s, 0)) & 0x7fff != 0,
                    4 => u16::from_le_bytes(rd(s, 0)) & 0x7fff != 0,
                    2 if fi == 4 => f32::from_le_bytes(rd(s, 0)) != 0.0,
                    2 => f64::from_le_bytes(rd(s, 0)) != 0.0,
                    5 if fi == 8 => {
                        f32::from_le_bytes(rd(s, 0)) != 0.0 || f32::from_le_bytes(rd(s, 1)) != 0.0
                    }
                    _ => f64::from_le_bytes(rd(s, 0)) != 0.0 || f64::from_le_bytes(rd(s, 1)) != 0.0,
                };
                assert_eq!(out[i], u8::from(nonzero), "cast to bool of {s:?}");
            }
            ((0, 32), (0, 64)) => {
                let v = i64::from(i32::from_le_bytes(rd(s, 0)));
                assert_eq!(i64::from_le_bytes(rd(out, i)), v, "int32 -> int64");
            }
            ((0, 8), (0, 16)) => {
                assert_eq!(i16::from_le_bytes(rd(out, i)), i16::from(s[0] as i8), "int8 -> int16");
            }
            ((1, 16), (1, 64)) => {
                assert_eq!(u64::from_le_bytes(rd(out, i)), u64::from(u16::from_le_bytes(rd(s, 0))));
            }
            ((2, 32), (2, 64)) => {
                let v = f32::from_le_bytes(rd(s, 0));
                let w = f64::from_le_bytes(rd(out, i));
                assert!(
                    if v.is_nan() { w.is_nan() } else { w == f64::from(v) },
                    "float32 -> float64: {v} gave {w}"
                );
            }
            ((2, 16), (2, 32)) | ((4, 16), (2, 32)) => {
                let h = u16::from_le_bytes(rd(s, 0));
                let v = if from.code.0 == 4 { f32::from_bits(u32::from(h) << 16) } else { f16_to_f32(h) };
                let w = f32::from_le_bytes(rd(out, i));
                assert!(
                    if v.is_nan() { w.is_nan() } else { w == v },
                    "half -> float32: {h:#x} gave {w}, want {v}"
                );
            }
            // int32 -> int8 wraps (two's complement)
            ((0, 32), (0, 8)) => {
                assert_eq!(out[i] as i8, i32::from_le_bytes(rd(s, 0)) as i8, "int32 -> int8 wraps");
            }
            _ => return,
        }
    }
}

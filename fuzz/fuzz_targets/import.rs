//! Fuzzes dlb_tensor_from_dlpack_versioned / dlb_tensor_from_dlpack with arbitrary managed
//! tensors built by the harness (version, flags, ndim, NULL or real shape/strides arrays,
//! arbitrary extents, strides, byte_offset, dtype and device, data NULL or inside a harness
//! buffer), then uses what was imported the way C would.
//!
//! Properties:
//! - a valid managed tensor (by the documented rules, computed independently here) is accepted,
//!   an invalid one is refused with a status naming one of its faults (major version != 1 is
//!   always DLB_ERR_VERSION); never DLB_ERR_PANIC;
//! - on failure the deleter has run exactly once when the call returns and *out is NULL; with
//!   out == NULL the tensor is still consumed;
//! - on success the deleter has not run; the handle describes exactly what was given (data +
//!   byte_offset, shape, strides or row-major, dtype, device, read-only iff the versioned
//!   READ_ONLY flag);
//! - only when the harness's own i128 arithmetic shows every element inside the harness buffer
//!   (and the device is the CPU) is anything read: dlb_tensor_copy equals a gather done by the
//!   harness; aliases, views (accepted iff inside what was imported), versioned and legacy
//!   exports (shared, same pointer, flags right, legacy refused for read-only data), re-imports
//!   of the exports and copies give the same bytes;
//! - after everything is freed the deleter has run exactly once, the harness's allocations are
//!   all gone and dlb_live_allocations() is back to its starting value.
#![no_main]

mod common;

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use common::*;
use libfuzzer_sys::fuzz_target;

/// Deleter calls and harness contexts alive (a context is freed only by the deleter).
static DELETED: AtomicUsize = AtomicUsize::new(0);
static CTX_LIVE: AtomicUsize = AtomicUsize::new(0);

/// Everything the harness allocates for one managed tensor; the deleter frees it all.
struct Ctx {
    versioned: DLManagedTensorVersioned,
    legacy: DLManagedTensor,
    buf: Box<[u8]>,
    shape: Box<[i64]>,
    strides: Box<[i64]>,
    /// What the deleter must be called with.
    expect: *mut c_void,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        CTX_LIVE.fetch_sub(1, SeqCst);
    }
}

unsafe fn delete_ctx(mt: *mut c_void, ctx: *mut c_void) {
    assert!(!ctx.is_null(), "deleter: manager_ctx was changed to NULL");
    // SAFETY: manager_ctx is the Box<Ctx> made by the harness; the asserts below catch a second
    // call only if the memory was not reused, but DELETED catches it in any case.
    let ctx = unsafe { Box::from_raw(ctx.cast::<Ctx>()) };
    assert_eq!(ctx.expect, mt, "deleter called with another pointer");
    let n = DELETED.fetch_add(1, SeqCst);
    assert_eq!(n, 0, "deleter called twice");
    drop(ctx);
}

unsafe extern "C" fn deleter_v(mt: *mut DLManagedTensorVersioned) {
    // SAFETY: only installed on harness contexts.
    unsafe { delete_ctx(mt.cast(), (*mt).manager_ctx) }
}

unsafe extern "C" fn deleter_l(mt: *mut DLManagedTensor) {
    // SAFETY: only installed on harness contexts.
    unsafe { delete_ctx(mt.cast(), (*mt).manager_ctx) }
}

fn deleted() -> usize {
    DELETED.load(SeqCst)
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    DELETED.store(0, SeqCst);
    let live0 = dlb_live_allocations();
    let mut c = Cursor::new(data);
    if data.len() == 1 && data[0] == 0xff {
        // NULL managed tensors: refused, nothing to release.
        let mut t = 0x1 as *mut dlb_tensor;
        // SAFETY: NULL is allowed; valid out.
        assert_error(
            unsafe { dlb_tensor_from_dlpack_versioned(null_mut(), &mut t) },
            DLB_ERR_INVALID_ARGUMENT,
            "dlb_tensor_from_dlpack_versioned",
        );
        assert!(t.is_null());
        t = 0x1 as *mut dlb_tensor;
        // SAFETY: as above.
        assert_error(
            unsafe { dlb_tensor_from_dlpack(null_mut(), &mut t) },
            DLB_ERR_INVALID_ARGUMENT,
            "dlb_tensor_from_dlpack",
        );
        assert!(t.is_null());
        return;
    }

    // ---- decode the managed tensor --------------------------------------------------------
    let mode = c.u8();
    let versioned = mode & 1 == 1;
    let out_null = mode & 0x0e == 0x0e; // 1 in 8: the consumed-with-NULL-out path
    let major = match c.u8() {
        0..=239 => 1,
        240..=247 => 0,
        248..=251 => 2,
        _ => c.u32(),
    };
    let minor = match c.u8() {
        t @ 0..=239 => u32::from(t % 6),
        _ => c.u32(),
    };
    let flags = match c.u8() {
        255 => c.u64(),
        t => u64::from(t & 7),
    };
    let ndim: i32 = match c.u8() {
        t @ 0..=199 => i32::from(t % 10),
        t => [-1, 65, 200, 64, i32::MIN, i32::MAX, 63, -64][usize::from(t) % 8],
    };
    let null_bits = c.u8();
    let (shape_null, strides_null) = (null_bits & 0x0f == 0x0f, null_bits & 0xf0 == 0xf0 || null_bits == 1);
    let buf_len = usize::from(c.u16()) % (64 * 1024 + 1);
    let n_alloc = ndim.clamp(0, 64) as usize;
    let shape: Vec<i64> = (0..n_alloc).map(|_| c.dim()).collect();
    let strides: Vec<i64> = (0..n_alloc).map(|_| c.dim()).collect();
    let byte_offset: u64 = match c.u8() {
        0..=127 => 0,
        128..=223 => u64::from(c.u16()),
        224..=239 => u64::MAX - u64::from(c.u8()),
        _ => c.u64(),
    };
    let (code, bits, lanes) = match c.u8() {
        0..=199 => c.pick(&DTYPES),
        _ => (c.u8(), c.u8(), c.u16()),
    };
    let (dev_type, dev_id): (u32, i32) = match c.u8() {
        0..=199 => (1, 0),
        t => {
            let ty = if t & 1 == 0 { u32::from(c.u8() % 24) } else { c.u32() };
            let id = match c.u8() {
                0..=127 => 0,
                128..=191 => -1,
                192..=223 => i32::from(c.u8()),
                _ => c.u32() as i32,
            };
            (ty, id)
        }
    };
    let data_off: Option<usize> = match c.u8() {
        0..=15 => None,
        _ => Some(usize::from(c.u16()) % (buf_len + 1)),
    };
    let seed = c.u8();

    // ---- build it --------------------------------------------------------------------------
    let mut buf = vec![0u8; buf_len].into_boxed_slice();
    pattern(&mut buf, seed);
    let ctx = Box::into_raw(Box::new(Ctx {
        // SAFETY: all-zero is a valid value of these plain C structs (NULL pointers, no deleter).
        versioned: unsafe { std::mem::zeroed() },
        // SAFETY: as above.
        legacy: unsafe { std::mem::zeroed() },
        buf,
        shape: shape.clone().into_boxed_slice(),
        strides: strides.clone().into_boxed_slice(),
        expect: null_mut(),
    }));
    CTX_LIVE.fetch_add(1, SeqCst);
    // SAFETY: `ctx` is live until the deleter runs, which cannot happen before the import call.
    let (buf_ptr, dl_tensor) = unsafe {
        let cx = &mut *ctx;
        let buf_ptr = cx.buf.as_mut_ptr();
        let dims = |v: &mut Box<[i64]>, null: bool| if null { null_mut() } else { v.as_mut_ptr() };
        let dl_tensor = DLTensor {
            data: data_off.map_or(null_mut(), |o| buf_ptr.add(o).cast()),
            device: DLDevice { device_type: DLDeviceType(dev_type), device_id: dev_id },
            ndim,
            dtype: dt(code, bits, lanes),
            shape: dims(&mut cx.shape, shape_null),
            strides: dims(&mut cx.strides, strides_null),
            byte_offset,
        };
        (buf_ptr as usize, dl_tensor)
    };

    // ---- what the documented rules say ------------------------------------------------------
    let mut faults: Vec<dlb_status> = vec![];
    let mut item = 0usize;
    let mut span: Option<(i128, i128)> = None; // reach of the layout, when it is valid
    let eff_strides: Vec<i64> = if strides_null { row_major(&shape) } else { strides.clone() };
    let first_addr: i128 = data_off.map_or(0, |o| (buf_ptr + o) as i128) + i128::from(byte_offset);
    if versioned && major != 1 {
        faults.push(DLB_ERR_VERSION);
    } else {
        if !(0..=64).contains(&ndim) {
            faults.push(DLB_ERR_INVALID_ARGUMENT);
        }
        match dtype_expect(code, bits, lanes) {
            Ok(i) => item = i,
            Err(e) => faults.push(e),
        }
        match device_expect(dev_type, dev_id) {
            DeviceClass::Invalid => faults.push(DLB_ERR_INVALID_ARGUMENT),
            DeviceClass::Unsupported => faults.push(DLB_ERR_UNSUPPORTED),
            _ => {}
        }
        let n = ndim.clamp(0, 64);
        if n > 0 && shape_null {
            faults.push(DLB_ERR_INVALID_ARGUMENT);
        }
        if n > 0 && strides_null && versioned && minor >= 2 {
            faults.push(DLB_ERR_INVALID_ARGUMENT);
        }
        if first_addr > usize::MAX as i128 {
            faults.push(DLB_ERR_INVALID_ARGUMENT); // byte_offset overflows the pointer
        }
        if faults.is_empty() {
            match reach(&shape, &eff_strides, item) {
                Err(()) => faults.push(DLB_ERR_INVALID_ARGUMENT),
                Ok(None) => span = Some((0, 0)),
                Ok(Some((lo, hi))) => {
                    if first_addr == 0 {
                        faults.push(DLB_ERR_INVALID_ARGUMENT); // NULL data with elements
                    } else if first_addr + lo < 0 || first_addr + hi > usize::MAX as i128 {
                        faults.push(DLB_ERR_INVALID_ARGUMENT); // wraps the address space
                    } else {
                        span = Some((lo, hi));
                    }
                }
            }
        }
    }

    // ---- import ----------------------------------------------------------------------------
    let mut t: *mut dlb_tensor = 0x1 as *mut dlb_tensor; // must be overwritten
    let out: *mut *mut dlb_tensor = if out_null { null_mut() } else { &mut t };
    // SAFETY: `ctx` holds a managed tensor whose memory lives until its deleter runs.
    let status = unsafe {
        let cx = &mut *ctx;
        if versioned {
            cx.versioned = DLManagedTensorVersioned {
                version: DLPackVersion { major, minor },
                manager_ctx: ctx.cast(),
                deleter: Some(deleter_v),
                flags: DlpackFlags::from_bits_retain(flags),
                dl_tensor,
            };
            let mt = &raw mut cx.versioned;
            cx.expect = mt.cast();
            dlb_tensor_from_dlpack_versioned(mt, out)
        } else {
            cx.legacy = DLManagedTensor { dl_tensor, manager_ctx: ctx.cast(), deleter: Some(deleter_l) };
            let mt = &raw mut cx.legacy;
            cx.expect = mt.cast();
            dlb_tensor_from_dlpack(mt, out)
        }
    };
    assert_ne!(status, DLB_ERR_PANIC, "import panicked: {}", last_error());
    crate::trace!(
        "import: versioned {versioned} out_null {out_null} -> {status:?} (faults {faults:?}) {}",
        if status == DLB_OK { String::new() } else { last_error() }
    );

    if out_null {
        assert_ne!(status, DLB_OK);
        assert_eq!(deleted(), 1, "import with out == NULL did not consume the managed tensor");
        assert_eq!(CTX_LIVE.load(SeqCst), 0);
        assert_eq!(dlb_live_allocations(), live0);
        return;
    }
    if status != DLB_OK {
        assert!(
            faults.contains(&status),
            "import refused a managed tensor with {status:?} ({}); faults the harness sees: {faults:?}",
            last_error()
        );
        assert!(t.is_null(), "*out is not NULL after a failed import");
        assert_eq!(deleted(), 1, "deleter ran {} times on a failed import", deleted());
        assert_eq!(CTX_LIVE.load(SeqCst), 0);
        assert_eq!(dlb_live_allocations(), live0, "a failed import leaked");
        assert!(last_error().starts_with("dlb_tensor_from_dlpack"), "{}", last_error());
        return;
    }
    assert!(faults.is_empty(), "import accepted a managed tensor with faults {faults:?}");
    let (lo, hi) = span.expect("accepted without a span");
    assert!(!t.is_null() && t as usize != 1, "*out not set on success");
    assert_eq!(deleted(), 0, "deleter ran during a successful import");

    // ---- the handle describes what was given -------------------------------------------------
    let read_only = versioned && flags & 1 == 1;
    // SAFETY: live handle.
    assert_eq!(unsafe { dlb_tensor_is_read_only(t) }, read_only);
    let d = dl(t);
    let (s2, st2) = dims_of(d);
    assert_eq!(s2, shape[..ndim as usize]);
    let n = numel(&shape);
    if n > 0 {
        assert_eq!(st2, eff_strides, "strides changed on import");
        assert_eq!(d.data as usize as i128, first_addr, "data is not data + byte_offset");
    }
    assert_eq!(d.byte_offset, 0);
    assert_eq!((d.dtype.code.0, d.dtype.bits, d.dtype.lanes), (code, bits, lanes));
    assert_eq!((d.device.device_type.0, d.device.device_id), (dev_type, dev_id));

    // Readable only when every element lies in the harness buffer and the device is the CPU.
    let first_off = first_addr - buf_ptr as i128; // bytes from the buffer start
    let inside = n == 0 || (data_off.is_some() && first_off + lo >= 0 && first_off + hi <= buf_len as i128);
    let readable = dev_type == 1 && inside && n * (item as u128) <= 1 << 20;
    // SAFETY: the context lives until the deleter runs, which the asserts show has not happened.
    let buf: &[u8] = unsafe { &(*ctx).buf };
    let reference = readable.then(|| gather(buf, first_off, &shape, &eff_strides, item));
    let cuda_none = dlb_cuda_device_count() == 0;

    let mut handles = vec![t];
    let check_bytes = |h: *mut dlb_tensor, what: &str| {
        if let Some(r) = &reference {
            let (cp, bytes) = copy_of(h);
            assert!(bytes == *r, "{what}: dlb_tensor_copy differs from the harness's gather");
            free(cp);
        } else if dev_type != 1 && cuda_none && n > 0 {
            // A CUDA (or pinned) import can be held but not copied without a driver.
            let mut cp = null_mut();
            // SAFETY: live handle, valid out.
            let st = unsafe { dlb_tensor_copy(h, &mut cp) };
            assert_error(st, DLB_ERR_DEVICE, "dlb_tensor_copy");
            assert!(cp.is_null());
        }
    };
    crate::trace!("import: read back {}", reference.is_some());
    check_bytes(t, "import");
    let ops = c.u8();

    // An alias: same data, same everything.
    if ops & 1 != 0 {
        let mut a = null_mut();
        // SAFETY: live handle, valid out.
        ok(unsafe { dlb_tensor_alias(t, &mut a) }, "dlb_tensor_alias");
        assert_eq!(dl(a).data, d.data);
        // SAFETY: live handle.
        assert_eq!(unsafe { dlb_tensor_is_read_only(a) }, read_only);
        if n > 0 {
            // SAFETY: live handles.
            assert!(unsafe { dlb_tensor_shares_memory(a, t) });
        }
        check_bytes(a, "alias");
        handles.push(a);
    }

    // The identity view is always inside; a fuzzer-chosen view is accepted iff it lies inside
    // the bytes the import reaches.
    if ops & 2 != 0 {
        let mut v = null_mut();
        let nd = ndim.clamp(0, 64);
        // SAFETY: arrays of nd entries; valid out.
        ok(
            unsafe { dlb_tensor_view(t, shape.as_ptr(), eff_strides.as_ptr(), nd, 0, &mut v) },
            "identity dlb_tensor_view",
        );
        check_bytes(v, "identity view");
        handles.push(v);

        let vn = usize::from(c.u8() % 5);
        let vshape: Vec<i64> = (0..vn).map(|_| c.dim()).collect();
        let vstrides: Vec<i64> = (0..vn).map(|_| c.dim()).collect();
        let voff = c.dim();
        let (lo0, hi0) = if n == 0 { (0, 0) } else { (lo, hi) };
        let expect = view_expect(lo0, hi0, i128::from(voff) * item as i128, &vshape, &vstrides, item);
        let mut w = null_mut();
        // SAFETY: arrays of vn entries; valid out.
        let st = unsafe { dlb_tensor_view(t, vshape.as_ptr(), vstrides.as_ptr(), vn as i32, voff, &mut w) };
        crate::trace!("import: view {vshape:?} {vstrides:?} +{voff} -> {st:?}");
        match expect {
            None => {
                assert_error(st, DLB_ERR_INVALID_ARGUMENT, "dlb_tensor_view");
                assert!(w.is_null());
            }
            Some(_) => {
                ok(st, "in-bounds dlb_tensor_view of an import");
                let vfirst = first_off + i128::from(voff) * item as i128;
                if numel(&vshape) > 0 {
                    assert_eq!(dl(w).data as usize as i128, first_addr + i128::from(voff) * item as i128);
                }
                if readable && numel(&vshape) * (item as u128) <= 1 << 20 {
                    let r = gather(buf, vfirst, &vshape, &vstrides, item);
                    let (cp, bytes) = copy_of(w);
                    assert!(bytes == r, "view of an import: copy differs from the harness's gather");
                    free(cp);
                }
                handles.push(w);
            }
        }
    }

    // Versioned export (shared), then re-import or the export's own deleter.
    if ops & 4 != 0 {
        let mut mt: *mut DLManagedTensorVersioned = null_mut();
        // SAFETY: live handle, valid out.
        ok(unsafe { dlb_tensor_to_dlpack_versioned(t, false, &mut mt) }, "dlb_tensor_to_dlpack_versioned");
        // SAFETY: a fresh export we own.
        let m = unsafe { &*mt };
        assert_eq!((m.version.major, m.version.minor), (1, 3));
        assert_eq!(m.flags.bits(), if read_only { 1 } else { 0 });
        assert_eq!(m.dl_tensor.byte_offset, 0);
        if n > 0 {
            assert_eq!(m.dl_tensor.data, d.data, "a shared export moved the data");
        } else {
            assert!(m.dl_tensor.data.is_null(), "zero-element exports carry NULL data");
        }
        let (es, est) = dims_of(&m.dl_tensor);
        assert_eq!(es, shape[..ndim as usize]);
        if n > 0 {
            assert_eq!(est, eff_strides);
        }
        if ops & 8 != 0 {
            let live = dlb_live_allocations();
            // Half the time, change one layout field of the export first, as a consumer may.
            let tamper = c.u8();
            let changed = (tamper & 1 == 1 && n > 0).then(|| {
                // SAFETY: our export, not handed on; its shape and strides point into it.
                let m = unsafe { &mut *mt };
                let nd = ndim as usize;
                let (mut ts, mut tst, mut tfirst) = (es.clone(), est.clone(), first_off);
                match (tamper >> 1) % 4 {
                    kind @ (0 | 1) if nd > 0 => {
                        let axis = usize::from(c.u8()) % nd;
                        let value = c.dim();
                        if kind == 0 { ts[axis] = value } else { tst[axis] = value }
                    }
                    3 => {
                        let shift = isize::from(c.u8() as i8);
                        m.dl_tensor.data = m.dl_tensor.data.wrapping_offset(shift);
                        tfirst += shift as i128;
                    }
                    _ => {
                        let offset = c.u8();
                        m.dl_tensor.byte_offset = u64::from(offset);
                        tfirst += i128::from(offset);
                    }
                }
                for k in 0..nd {
                    // SAFETY: `nd` entries each, inside the export block.
                    unsafe { (*m.dl_tensor.shape.add(k), *m.dl_tensor.strides.add(k)) = (ts[k], tst[k]) };
                }
                (ts, tst, tfirst)
            });
            let mut back = null_mut();
            // SAFETY: our export, consumed here.
            let st = unsafe { dlb_tensor_from_dlpack_versioned(mt, &mut back) };
            assert_eq!(dlb_live_allocations(), live, "re-importing our own export allocated");
            match changed {
                None => {
                    ok(st, "re-import");
                    // SAFETY: the live handle the re-import just made.
                    assert_eq!(unsafe { dlb_tensor_is_read_only(back) }, read_only);
                    check_bytes(back, "re-import");
                    handles.push(back);
                }
                Some((ts, tst, tfirst)) => {
                    // The export keeps alive exactly the bytes the import reaches: a changed
                    // layout is accepted when it is valid and stays inside them.
                    let (lo, hi) = (first_off + lo, first_off + hi);
                    let inside = match reach(&ts, &tst, item) {
                        Err(()) => Some(false),
                        Ok(None) => None, // no elements: decided by where the pointer lies
                        Ok(Some((l, h))) => Some(tfirst + l >= lo && tfirst + h <= hi),
                    };
                    crate::trace!("import: changed re-import {ts:?} {tst:?} at {tfirst}: {st:?}, inside {inside:?}");
                    assert_ne!(st, DLB_ERR_PANIC, "changed re-import: {}", last_error());
                    if st == DLB_OK {
                        assert_ne!(inside, Some(false), "a changed re-import reaching outside the export's memory was accepted");
                        let tn = numel(&ts);
                        if tn > 0 && reference.is_some() && tn * (item as u128) <= 1 << 20 {
                            let want = gather(buf, tfirst, &ts, &tst, item);
                            let (cp, bytes) = copy_of(back);
                            assert!(bytes == want, "changed re-import: copy differs from the harness's gather");
                            free(cp);
                        }
                        handles.push(back);
                    } else {
                        assert_ne!(inside, Some(true), "a valid changed re-import was refused: {}", last_error());
                        assert!(back.is_null());
                    }
                }
            }
        } else {
            // SAFETY: the receiver's one deleter call.
            unsafe { (m.deleter.expect("export without deleter"))(mt) };
        }
    }

    // Legacy export: refused for read-only data, else shared.
    if ops & 16 != 0 {
        let mut mt: *mut DLManagedTensor = 0x1 as *mut DLManagedTensor;
        // SAFETY: live handle, valid out.
        let st = unsafe { dlb_tensor_to_dlpack(t, &mut mt) };
        if read_only {
            assert_error(st, DLB_ERR_READ_ONLY, "dlb_tensor_to_dlpack");
            assert!(mt.is_null());
        } else {
            ok(st, "dlb_tensor_to_dlpack");
            // SAFETY: a fresh export we own.
            let m = unsafe { &*mt };
            assert_eq!(m.dl_tensor.byte_offset, 0);
            if n > 0 {
                assert_eq!(m.dl_tensor.data, d.data);
            }
            if ops & 32 != 0 {
                let mut back = null_mut();
                // SAFETY: our export, consumed here.
                ok(unsafe { dlb_tensor_from_dlpack(mt, &mut back) }, "legacy re-import");
                check_bytes(back, "legacy re-import");
                handles.push(back);
            } else {
                // SAFETY: the receiver's one deleter call.
                unsafe { (m.deleter.expect("export without deleter"))(mt) };
            }
        }
    }

    // A copied export: fresh row-major memory with the same bytes.
    if ops & 64 != 0 && (reference.is_some() || (dev_type != 1 && cuda_none && n > 0)) {
        let mut mt: *mut DLManagedTensorVersioned = null_mut();
        // SAFETY: live handle, valid out.
        let st = unsafe { dlb_tensor_to_dlpack_versioned(t, true, &mut mt) };
        if let Some(r) = &reference {
            ok(st, "copied export");
            // SAFETY: a fresh export we own.
            let m = unsafe { &*mt };
            assert_eq!(m.flags.bits(), 2, "a copy must be IS_COPIED and writable");
            let (es, est) = dims_of(&m.dl_tensor);
            if n > 0 {
                assert_eq!(est, row_major(&es));
                // SAFETY: a contiguous export of r.len() bytes.
                let got = unsafe { std::slice::from_raw_parts(m.dl_tensor.data.cast::<u8>(), r.len()) };
                assert!(got == &r[..], "copied export differs from the harness's gather");
            }
            // SAFETY: the receiver's one deleter call.
            unsafe { (m.deleter.unwrap())(mt) };
        } else {
            assert_error(st, DLB_ERR_DEVICE, "dlb_tensor_to_dlpack_versioned");
            assert!(mt.is_null());
        }
    }

    // ---- free everything, in a fuzzer-chosen order -------------------------------------------
    let rot = usize::from(c.u8());
    if !handles.is_empty() {
        let k = rot % handles.len();
        handles.rotate_left(k);
    }
    let last = handles.len() - 1;
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(deleted(), 0, "deleter ran while a handle still used the memory");
        free(h);
        if i == last {
            assert_eq!(deleted(), 1, "deleter did not run exactly once after the last free");
        }
    }
    assert_eq!(CTX_LIVE.load(SeqCst), 0, "harness allocations leaked");
    assert_eq!(dlb_live_allocations(), live0, "dlb_live_allocations not back to its start");
}

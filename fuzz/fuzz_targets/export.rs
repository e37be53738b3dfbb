//! Fuzzes the C operations behind Python's `__dlpack__(max_version, copy, dl_device)`: a source
//! tensor that is dlbridge's own (writable) or an import of a harness-made versioned managed
//! tensor (read-only or writable) or legacy one, optionally a strided view of it (negative and
//! zero strides too), an optional move to a requested device (arbitrary type/id), then a
//! versioned or legacy export, shared or copied, which is re-imported or released through its
//! deleter.
//!
//! Properties:
//! - a requested device other than the tensor's: kDLCPU gives a copy; kDLCUDA/kDLCUDAHost give
//!   DLB_ERR_DEVICE when no driver is present; other DLPack device types DLB_ERR_UNSUPPORTED;
//!   unknown types and negative ids DLB_ERR_INVALID_ARGUMENT (with *out NULL and a message);
//! - legacy export of read-only data is DLB_ERR_READ_ONLY; a legacy copy (dlb_tensor_copy then
//!   dlb_tensor_to_dlpack) works;
//! - versioned export sets READ_ONLY exactly when the source is read-only and not copied, and
//!   IS_COPIED exactly when copy = true; version 1.3;
//! - every export has byte_offset 0, non-NULL shape/strides when ndim > 0, the source's shape,
//!   dtype and device, NULL data exactly when it has no elements;
//! - a shared export has the source's data pointer and strides; a copy is row-major, has the
//!   source's bytes and is independent (writing into the source afterwards leaves it unchanged,
//!   while a shared export sees the write);
//! - the export re-imports (dlb_tensor_from_dlpack[_versioned]) to equal bytes; calling its
//!   deleter instead frees it; the source's producer deleter runs exactly once, at the end;
//!   dlb_live_allocations() is back to its start.
#![no_main]

mod common;

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use common::*;
use libfuzzer_sys::fuzz_target;

static DELETED: AtomicUsize = AtomicUsize::new(0);

/// The producer side of an imported source: the harness's buffer, dims and managed struct.
struct Producer {
    versioned: DLManagedTensorVersioned,
    legacy: DLManagedTensor,
    buf: Box<[u8]>,
    shape: Box<[i64]>,
}

unsafe fn release(ctx: *mut c_void) {
    assert_eq!(DELETED.fetch_add(1, SeqCst), 0, "producer deleter called twice");
    // SAFETY: the Box<Producer> the harness made; called once.
    drop(unsafe { Box::from_raw(ctx.cast::<Producer>()) });
}
unsafe extern "C" fn deleter_v(mt: *mut DLManagedTensorVersioned) {
    // SAFETY: installed on harness producers only.
    unsafe { release((*mt).manager_ctx) }
}
unsafe extern "C" fn deleter_l(mt: *mut DLManagedTensor) {
    // SAFETY: installed on harness producers only.
    unsafe { release((*mt).manager_ctx) }
}

fuzz_target!(|data: &[u8]| run(data));

/// The handle's elements, row-major, read through its DLTensor (dlbridge's tensors have
/// non-NULL strides and byte_offset 0). Only for CPU tensors.
fn elements(t: *const dlb_tensor) -> Vec<u8> {
    let d = dl(t);
    let (shape, strides) = dims_of(d);
    let item = itemsize(d.dtype);
    let n = numel(&shape);
    if n == 0 {
        return vec![];
    }
    let r = reach(&shape, &strides, item).unwrap().unwrap();
    // SAFETY: the tensor's elements lie in [data + lo, data + hi).
    let mem =
        unsafe { std::slice::from_raw_parts(d.data.cast::<u8>().offset(r.0 as isize), (r.1 - r.0) as usize) };
    gather(mem, -r.0, &shape, &strides, item)
}

fn run(data: &[u8]) {
    DELETED.store(0, SeqCst);
    let live0 = dlb_live_allocations();
    let mut c = Cursor::new(data);
    let cuda_none = dlb_cuda_device_count() == 0;

    // ---- the source ---------------------------------------------------------------------------
    let (code, bits, lanes) = c.pick(&DTYPES);
    let dtype = dt(code, bits, lanes);
    let item = itemsize(dtype);
    let ndim = usize::from(c.u8() % 5);
    let shape: Vec<i64> = (0..ndim).map(|_| i64::from(c.u8() % 7)).collect();
    let n = numel(&shape) as usize;
    let seed = c.u8();
    // 0: dlbridge's own; 1: versioned import, READ_ONLY; 2: versioned import, writable; 3: legacy.
    let kind = c.u8() % 4;
    let mut imported = false;
    let mut src = null_mut();
    if kind == 0 {
        // SAFETY: shape array of ndim entries; valid out.
        ok(
            unsafe { dlb_tensor_empty(shape.as_ptr(), ndim as i32, dtype, CPU, &mut src) },
            "dlb_tensor_empty",
        );
        if n > 0 {
            let mut p = null_mut();
            // SAFETY: fresh writable tensor of n * item bytes.
            unsafe {
                ok(dlb_tensor_data_mut(src, &mut p), "dlb_tensor_data_mut");
                pattern(std::slice::from_raw_parts_mut(p.cast::<u8>(), n * item), seed);
            }
        }
    } else {
        imported = true;
        let mut buf = vec![0u8; n * item].into_boxed_slice();
        pattern(&mut buf, seed);
        let prod = Box::into_raw(Box::new(Producer {
            // SAFETY: all-zero is valid for these C structs.
            versioned: unsafe { std::mem::zeroed() },
            // SAFETY: as above.
            legacy: unsafe { std::mem::zeroed() },
            buf,
            shape: shape.clone().into_boxed_slice(),
        }));
        // SAFETY: `prod` lives until its deleter runs.
        let st = unsafe {
            let p = &mut *prod;
            let dl_tensor = DLTensor {
                data: if n == 0 { null_mut() } else { p.buf.as_mut_ptr().cast() },
                device: CPU,
                ndim: ndim as i32,
                dtype,
                shape: if ndim == 0 { null_mut() } else { p.shape.as_mut_ptr() },
                strides: null_mut(), // row-major, as producers before DLPack 1.2 may say
                byte_offset: 0,
            };
            if kind == 3 {
                p.legacy = DLManagedTensor { dl_tensor, manager_ctx: prod.cast(), deleter: Some(deleter_l) };
                dlb_tensor_from_dlpack(&raw mut p.legacy, &mut src)
            } else {
                p.versioned = DLManagedTensorVersioned {
                    version: DLPackVersion { major: 1, minor: 1 },
                    manager_ctx: prod.cast(),
                    deleter: Some(deleter_v),
                    flags: DlpackFlags::from_bits_retain(if kind == 1 { 1 } else { 0 }),
                    dl_tensor,
                };
                dlb_tensor_from_dlpack_versioned(&raw mut p.versioned, &mut src)
            }
        };
        ok(st, "import of the source");
        assert_eq!(DELETED.load(SeqCst), 0);
    }
    let read_only = kind == 1;
    // SAFETY: live handle.
    assert_eq!(unsafe { dlb_tensor_is_read_only(src) }, read_only);
    // Every handle, and whether it uses the source's memory (the producer's, for imports).
    let mut handles: Vec<(*mut dlb_tensor, bool)> = vec![(src, true)];

    // ---- optionally a strided view (negative and zero strides included) -----------------------
    let mut t = src;
    if c.u8() & 1 == 1 && ndim > 0 {
        let vshape: Vec<i64> =
            shape.iter().map(|&e| if c.bool() { e } else { i64::from(c.u8() % 4) }).collect();
        let vstrides: Vec<i64> = (0..ndim).map(|_| i64::from(c.u8() % 9) - 4).collect();
        let off = i64::from(c.u8()) % (n as i64 + 1);
        let mut v = null_mut();
        // SAFETY: arrays of ndim entries; valid out.
        let st =
            unsafe { dlb_tensor_view(src, vshape.as_ptr(), vstrides.as_ptr(), ndim as i32, off, &mut v) };
        assert_ne!(st, DLB_ERR_PANIC);
        if st == DLB_OK {
            handles.push((v, true));
            t = v;
        } else {
            assert_error(st, DLB_ERR_INVALID_ARGUMENT, "dlb_tensor_view");
        }
    }
    let before = elements(t);

    // ---- __dlpack__(max_version, copy, dl_device) ------------------------------------------------
    let mode = c.u8();
    let versioned = mode & 1 == 1;
    let copy = mode & 2 == 2;
    let deleter_instead = mode & 4 == 4;
    let (dev_type, dev_id): (u32, i32) = match c.u8() {
        0..=159 => (1, 0),
        t => {
            let ty = if t & 1 == 0 { u32::from(c.u8() % 21) } else { c.u32() };
            let id = match c.u8() {
                0..=159 => 0,
                160..=199 => -1,
                200..=231 => i32::from(c.u8() % 4),
                _ => c.u32() as i32,
            };
            (ty, id)
        }
    };
    let mut export_copy = copy;
    let mut on_source = true;
    if (dev_type, dev_id) != (1, 0) {
        let mut moved = 0x1 as *mut dlb_tensor;
        let dev = DLDevice { device_type: DLDeviceType(dev_type), device_id: dev_id };
        // SAFETY: live handle, valid out.
        let st = unsafe { dlb_tensor_to_device(t, dev, &mut moved) };
        crate::trace!("export: to_device({dev_type}, {dev_id}) -> {st:?}");
        assert_ne!(st, DLB_ERR_PANIC, "{}", last_error());
        let want = match device_expect(dev_type, dev_id) {
            DeviceClass::Cpu => DLB_OK,
            DeviceClass::Cuda if cuda_none => DLB_ERR_DEVICE,
            DeviceClass::Cuda => {
                // A GPU is present: the CUDA paths are tests/cuda.rs's business, not this target's.
                free(if st == DLB_OK { moved } else { null_mut() });
                finish(handles, imported, live0, &mut c);
                return;
            }
            DeviceClass::Unsupported => DLB_ERR_UNSUPPORTED,
            DeviceClass::Invalid => DLB_ERR_INVALID_ARGUMENT,
        };
        if want != DLB_OK {
            assert_error(st, want, "dlb_tensor_to_device");
            assert!(moved.is_null(), "*out not NULL after a refused move");
            finish(handles, imported, live0, &mut c);
            return;
        }
        ok(st, "dlb_tensor_to_device(cpu)");
        handles.push((moved, false));
        on_source = false;
        let d = dl(moved);
        assert_eq!((d.device.device_type.0, d.device.device_id), (dev_type, dev_id));
        // SAFETY: live handles.
        assert!(!unsafe { dlb_tensor_is_read_only(moved) }, "a moved tensor is a writable copy");
        // SAFETY: live handles.
        assert!(n == 0 || !unsafe { dlb_tensor_shares_memory(moved, t) } || numel(&dims_of(d).0) == 0);
        assert_eq!(elements(moved), before, "a device move changed the bytes");
        t = moved;
        // The move made the copy; the export then shares the moved tensor, as __dlpack__ does.
        export_copy = false;
    }
    export_and_check(t, on_source, versioned, export_copy, deleter_instead, &before, &mut c, &mut handles);
    finish(handles, imported, live0, &mut c);
}

/// Exports `t` (versioned or legacy, `copy`), checks the result, writes into the source to
/// prove sharing or independence, then re-imports the export or calls its deleter.
fn export_and_check(
    t: *mut dlb_tensor,
    on_source: bool,
    versioned: bool,
    copy: bool,
    deleter_instead: bool,
    before: &[u8],
    c: &mut Cursor,
    handles: &mut Vec<(*mut dlb_tensor, bool)>,
) {
    // SAFETY: live handle.
    let read_only = unsafe { dlb_tensor_is_read_only(t) };
    crate::trace!(
        "export: versioned {versioned} copy {copy} read_only {read_only} deleter {deleter_instead}"
    );
    let d = dl(t);
    let (shape, strides) = dims_of(d);
    let n = numel(&shape);
    let item = itemsize(d.dtype);

    // The export: a pointer to the managed struct's DLTensor and a way to import or release it.
    let (dlt, flags, import_back, release): (
        DLTensor,
        Option<u64>,
        Box<dyn FnOnce() -> *mut dlb_tensor>,
        Box<dyn FnOnce()>,
    );
    if versioned {
        let mut mt: *mut DLManagedTensorVersioned = 0x1 as *mut _;
        // SAFETY: live handle, valid out.
        ok(unsafe { dlb_tensor_to_dlpack_versioned(t, copy, &mut mt) }, "dlb_tensor_to_dlpack_versioned");
        // SAFETY: a fresh export.
        let m = unsafe { &*mt };
        assert_eq!((m.version.major, m.version.minor), (1, 3));
        dlt = m.dl_tensor;
        flags = Some(m.flags.bits());
        import_back = Box::new(move || {
            let mut b = null_mut();
            // SAFETY: our export, consumed.
            ok(unsafe { dlb_tensor_from_dlpack_versioned(mt, &mut b) }, "versioned re-import");
            b
        });
        // SAFETY: the receiver's one deleter call.
        release = Box::new(move || unsafe { ((*mt).deleter.unwrap())(mt) });
    } else {
        // Legacy: the C API exports shared; __dlpack__(copy=True) copies first.
        let mut owned_copy = null_mut();
        let src = if copy {
            // SAFETY: live handle, valid out.
            ok(unsafe { dlb_tensor_copy(t, &mut owned_copy) }, "dlb_tensor_copy");
            owned_copy
        } else {
            t
        };
        let mut mt: *mut DLManagedTensor = 0x1 as *mut _;
        // SAFETY: live handle, valid out.
        let st = unsafe { dlb_tensor_to_dlpack(src, &mut mt) };
        if read_only && !copy {
            assert_error(st, DLB_ERR_READ_ONLY, "dlb_tensor_to_dlpack");
            assert!(mt.is_null());
            return;
        }
        ok(st, "dlb_tensor_to_dlpack");
        // The export keeps the copy's memory alive on its own.
        free(owned_copy);
        // SAFETY: a fresh export.
        dlt = unsafe { (*mt).dl_tensor };
        flags = None;
        import_back = Box::new(move || {
            let mut b = null_mut();
            // SAFETY: our export, consumed.
            ok(unsafe { dlb_tensor_from_dlpack(mt, &mut b) }, "legacy re-import");
            b
        });
        // SAFETY: the receiver's one deleter call.
        release = Box::new(move || unsafe { ((*mt).deleter.unwrap())(mt) });
    }

    // ---- the export's fields --------------------------------------------------------------------
    if let Some(f) = flags {
        let want = if copy {
            2
        } else if read_only {
            1
        } else {
            0
        };
        assert_eq!(f, want, "flags (copy {copy}, read-only {read_only})");
    }
    assert_eq!(dlt.byte_offset, 0);
    assert_eq!(
        (dlt.dtype.code.0, dlt.dtype.bits, dlt.dtype.lanes),
        (d.dtype.code.0, d.dtype.bits, d.dtype.lanes)
    );
    assert_eq!(
        (dlt.device.device_type.0, dlt.device.device_id),
        (d.device.device_type.0, d.device.device_id)
    );
    let (es, est) = dims_of(&dlt); // asserts non-NULL shape/strides when ndim > 0
    assert_eq!(es, shape);
    assert_eq!(dlt.data.is_null(), n == 0, "data must be NULL exactly for zero elements");
    if n > 0 {
        if copy {
            assert_ne!(dlt.data, d.data, "a copied export shares the data pointer");
            assert_eq!(est, row_major(&es), "a copied export is not row-major");
        } else {
            assert_eq!(dlt.data, d.data, "a shared export moved the data");
            assert_eq!(est, strides, "a shared export changed the strides");
        }
    }
    let exported_bytes = |dlt: &DLTensor| -> Vec<u8> {
        if n == 0 {
            return vec![];
        }
        let (lo, hi) = reach(&es, &est, item).unwrap().unwrap();
        // SAFETY: the export's elements lie in [data + lo, data + hi).
        let mem = unsafe {
            std::slice::from_raw_parts(dlt.data.cast::<u8>().offset(lo as isize), (hi - lo) as usize)
        };
        gather(mem, -lo, &es, &est, item)
    };
    assert!(exported_bytes(&dlt) == before, "the export's elements differ from the source's");

    // ---- write into the source: a copy must not see it, a shared export must ---------------------
    let wrote = if n > 0 && c.bool() { write_first(t) } else { None };
    if let Some(first_elem_changed) = wrote {
        let after = exported_bytes(&dlt);
        if copy {
            assert!(after == before, "a copied export changed when the source was written");
        } else if first_elem_changed {
            assert!(after != before, "a shared export did not see a write into its source");
        }
    }
    let now = exported_bytes(&dlt);

    // ---- re-import or release --------------------------------------------------------------------
    if deleter_instead {
        release();
    } else {
        drop(release);
        let live = dlb_live_allocations();
        let b = import_back();
        assert_eq!(dlb_live_allocations(), live, "re-importing our own export allocated");
        // SAFETY: live handle.
        assert_eq!(unsafe { dlb_tensor_is_read_only(b) }, versioned && !copy && read_only);
        if n * item as u128 > 0 {
            assert_eq!(dl(b).data, dlt.data);
        }
        let (cp, bytes) = copy_of(b);
        assert!(bytes == now, "the re-import's bytes differ from the export's");
        free(cp);
        handles.push((b, on_source && !copy));
    }
}

/// Writes into the source through the first element of `t`: via dlb_tensor_data_mut when it
/// is writable; a read-only source is a harness import, whose producer (the harness) owns the
/// buffer and may write it. Some(true) when the element changed (it always does: XOR 0xa5).
fn write_first(t: *mut dlb_tensor) -> Option<bool> {
    let d = dl(t);
    let item = itemsize(d.dtype);
    // SAFETY: live handle.
    let p = if unsafe { dlb_tensor_is_read_only(t) } {
        d.data
    } else {
        let mut p = null_mut();
        // SAFETY: live handle, exclusive use here; `p` is a valid out-parameter.
        ok(unsafe { dlb_tensor_data_mut(t, &mut p) }, "dlb_tensor_data_mut");
        assert_eq!(p, d.data);
        p
    };
    if p.is_null() {
        return None;
    }
    // SAFETY: the first element of a live CPU tensor, `item` bytes, writable as argued above.
    unsafe {
        for i in 0..item {
            *p.cast::<u8>().add(i) ^= 0xa5;
        }
    }
    Some(true)
}

/// Frees every handle (in an order the input chooses); the producer's deleter runs exactly
/// once, when the last handle on its memory goes; no leaks.
fn finish(mut handles: Vec<(*mut dlb_tensor, bool)>, imported: bool, live0: i64, c: &mut Cursor) {
    let k = usize::from(c.u8()) % handles.len();
    handles.rotate_left(k);
    let mut on_source = handles.iter().filter(|h| h.1).count();
    for (h, src) in handles {
        if on_source > 0 {
            assert_eq!(DELETED.load(SeqCst), 0, "producer deleter ran while a handle still uses its memory");
        }
        free(h);
        on_source -= usize::from(src);
        if on_source == 0 {
            assert_eq!(
                DELETED.load(SeqCst),
                usize::from(imported),
                "producer deleter count after the last free"
            );
        }
    }
    assert_eq!(DELETED.load(SeqCst), usize::from(imported), "producer deleter count");
    assert_eq!(dlb_live_allocations(), live0, "a buffer leaked");
}

//! Entry points for dlbridge's own Python package (bindings/python). They are not part of the C
//! contract and are left out of the header.
//!
//! Private symbols: `dlb_py_init` and `dlb_py_function` are exported from libdlbridge.so and
//! libdlbridge.a only because the Python package looks them up through ctypes. They are not
//! declared in dlbridge.h, carry no ABI or API promise (the SONAME does not change for them),
//! may change or disappear in any release, and C and C++ programs must not call them.
//!
//! Why they exist: a DLPack hand-over from Python means building or taking apart a PyCapsule.
//! Through ctypes that is several foreign calls of 200-400 ns each, and a capsule destructor
//! written in Python could be collected while a capsule still needs it or run after the
//! interpreter has gone. So the hand-over paths live here, as CPython builtin functions
//! (METH_FASTCALL) that cost one plain Python call, and the capsule destructors are C functions
//! of this library.
//!
//! The library never links against libpython. At import the package hands over the few CPython
//! functions used here and the exception types to raise (`dlb_py_init`, through ctypes), then
//! asks for the builtins by name (`dlb_py_function`). C programs that link dlbridge are
//! unaffected. The native base of `dlbridge.Tensor` and the package's `from_dlpack`, `empty` and
//! `zeros` live in [`native`], reached through the same two exports. Everything here runs with the GIL held: the builtins are called by Python, the
//! destructors by CPython, the two exports through `ctypes.PyDLL`.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use super::error::{boundary, dlb_status, last_error_ptr, set_last_error};
use super::handle::dlb_tensor;
use crate::abi::{DLManagedTensor, DLManagedTensorVersioned, DLPackVersion, DlpackFlags, FLAG_IS_COPIED};
use crate::device::code as device_code;
use crate::dlpack::{ManagedKind, export, export_legacy, import, release};
use crate::error::Error;
use crate::tensor::Tensor;

mod native;

/// CPython's `PyObject`, only ever handled by pointer.
type PyObject = c_void;
type Destructor = unsafe extern "C" fn(*mut PyObject);
/// A METH_FASTCALL function: `(self, args, nargs) -> new reference or NULL with an exception`.
type FastCall = unsafe extern "C" fn(*mut PyObject, *const *mut PyObject, isize) -> *mut PyObject;

const LEGACY: &CStr = c"dltensor";
const VERSIONED: &CStr = c"dltensor_versioned";
const USED_LEGACY: &CStr = c"used_dltensor";
const USED_VERSIONED: &CStr = c"used_dltensor_versioned";
const EXCHANGE_API: &CStr = c"dlpack_exchange_api";

/// The index in `dlb_py_api::exceptions` for "wrong type" (TypeError), after the status values.
const WRONG_TYPE: usize = 8;

/// What the Python package hands over at import: CPython functions (addresses taken from
/// `ctypes.pythonapi`), `None`, and the exception type to raise for each `dlb_status` value, plus
/// TypeError at index 8. The objects are borrowed and must live for the whole process (None and
/// the built-in exception types do).
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct dlb_py_api {
    pub capsule_new:
        Option<unsafe extern "C" fn(*mut c_void, *const c_char, Option<Destructor>) -> *mut PyObject>,
    pub capsule_is_valid: Option<unsafe extern "C" fn(*mut PyObject, *const c_char) -> c_int>,
    pub capsule_get_pointer: Option<unsafe extern "C" fn(*mut PyObject, *const c_char) -> *mut c_void>,
    pub capsule_set_name: Option<unsafe extern "C" fn(*mut PyObject, *const c_char) -> c_int>,
    pub err_set_string: Option<unsafe extern "C" fn(*mut PyObject, *const c_char)>,
    pub err_occurred: Option<unsafe extern "C" fn() -> *mut PyObject>,
    pub long_as_void_ptr: Option<unsafe extern "C" fn(*mut PyObject) -> *mut c_void>,
    pub long_from_void_ptr: Option<unsafe extern "C" fn(*mut c_void) -> *mut PyObject>,
    pub cfunction_new_ex:
        Option<unsafe extern "C" fn(*mut PyMethodDef, *mut PyObject, *mut PyObject) -> *mut PyObject>,
    pub incref: Option<unsafe extern "C" fn(*mut PyObject)>,
    pub none: *mut PyObject,
    pub exceptions: [*mut PyObject; 9],
}

/// `dlb_py_api` with every function checked to be present.
struct Api {
    capsule_new: unsafe extern "C" fn(*mut c_void, *const c_char, Option<Destructor>) -> *mut PyObject,
    capsule_is_valid: unsafe extern "C" fn(*mut PyObject, *const c_char) -> c_int,
    capsule_get_pointer: unsafe extern "C" fn(*mut PyObject, *const c_char) -> *mut c_void,
    capsule_set_name: unsafe extern "C" fn(*mut PyObject, *const c_char) -> c_int,
    err_set_string: unsafe extern "C" fn(*mut PyObject, *const c_char),
    err_occurred: unsafe extern "C" fn() -> *mut PyObject,
    long_as_void_ptr: unsafe extern "C" fn(*mut PyObject) -> *mut c_void,
    long_from_void_ptr: unsafe extern "C" fn(*mut c_void) -> *mut PyObject,
    cfunction_new_ex: unsafe extern "C" fn(*mut PyMethodDef, *mut PyObject, *mut PyObject) -> *mut PyObject,
    incref: unsafe extern "C" fn(*mut PyObject),
    none: *mut PyObject,
    exceptions: [*mut PyObject; 9],
}

// SAFETY: the functions are CPython's and the objects immortal; every use happens with the GIL
// held, which serialises them.
unsafe impl Send for Api {}
// SAFETY: as above.
unsafe impl Sync for Api {}

static API: OnceLock<Api> = OnceLock::new();

impl Api {
    fn is_named(&self, capsule: *mut PyObject, name: &CStr) -> bool {
        // SAFETY: `capsule` is a live object (the caller holds a reference and the GIL);
        // PyCapsule_IsValid accepts any object and never sets an exception.
        unsafe { (self.capsule_is_valid)(capsule, name.as_ptr()) == 1 }
    }

    /// Sets the Python exception for a failed call: the type chosen by `index` (a status value,
    /// or WRONG_TYPE), the message of this thread's last error. Returns NULL, for the caller to
    /// hand back to CPython.
    fn raise<T>(&self, index: usize) -> *mut T {
        let exc = self.exceptions[index.min(self.exceptions.len() - 1)];
        // SAFETY: the GIL is held; the message is a NUL-terminated string that lives until this
        // thread's next failing call (PyErr_SetString copies it).
        unsafe { (self.err_set_string)(exc, last_error_ptr()) };
        std::ptr::null_mut()
    }

    /// Records `message` as the last error of `function` and raises it as `index`.
    fn fail<T>(&self, function: &str, index: usize, message: &str) -> *mut T {
        set_last_error(function, message);
        self.raise(index)
    }

    /// Runs `f` inside the usual boundary; its error, if any, becomes a Python exception.
    fn call(&self, function: &str, f: impl FnOnce() -> Result<(), Error>) -> bool {
        let status = boundary(function, f);
        if status != dlb_status::DLB_OK {
            self.raise::<c_void>(status as usize);
        }
        status == dlb_status::DLB_OK
    }

    /// The arguments of a fastcall, checked for number.
    ///
    /// # Safety
    /// `args` holds `nargs` live objects, as CPython passes them.
    unsafe fn args<'a, const N: usize>(
        &self,
        function: &str,
        args: *const *mut PyObject,
        nargs: isize,
    ) -> Option<&'a [*mut PyObject; N]> {
        if nargs != N as isize {
            self.fail::<c_void>(
                function,
                WRONG_TYPE,
                &crate::error::message(format_args!("takes {N} arguments, got {nargs}")),
            );
            return None;
        }
        // SAFETY: per the function contract.
        Some(unsafe { &*args.cast::<[*mut PyObject; N]>() })
    }

    /// A Python int as a pointer (a handle, or flags as its address); None if it raised.
    fn pointer(&self, obj: *mut PyObject) -> Option<*mut c_void> {
        // SAFETY: GIL held; `obj` is live. NULL is also the answer for 0, so check for an error.
        let value = unsafe { (self.long_as_void_ptr)(obj) };
        // SAFETY: GIL held.
        if value.is_null() && unsafe { !(self.err_occurred)().is_null() } {
            return None;
        }
        Some(value)
    }

    /// Hands an export of ours to a new capsule named `name` (a new reference). If CPython cannot
    /// make the capsule it has set an exception (MemoryError); the export is released again and
    /// NULL returned.
    fn capsule<M: ManagedKind>(
        &self,
        mt: *mut M,
        name: &'static CStr,
        destructor: Destructor,
    ) -> *mut PyObject {
        // SAFETY: GIL held; the name is static, as PyCapsule_New requires; `mt` is ours to hand over.
        let capsule = unsafe { (self.capsule_new)(mt.cast(), name.as_ptr(), Some(destructor)) };
        if capsule.is_null() {
            // SAFETY: nobody else has seen `mt`.
            unsafe { release(mt) };
        }
        capsule
    }

    /// A new reference to None.
    fn none(&self) -> *mut PyObject {
        // SAFETY: GIL held; None is immortal.
        unsafe { (self.incref)(self.none) };
        self.none
    }

    /// A handle as a new Python int.
    fn handle(&self, t: *mut dlb_tensor) -> *mut PyObject {
        // SAFETY: GIL held. On failure (MemoryError) the handle is released again.
        let obj = unsafe { (self.long_from_void_ptr)(t.cast()) };
        if obj.is_null() {
            // SAFETY: `t` is ours and nobody else has seen it.
            unsafe { dlb_tensor::free(t) };
        }
        obj
    }
}

/// Stores the CPython functions and objects the builtins use. The first call wins; later calls
/// (a reloaded module) keep the first table.
///
/// # Safety
/// `api` is NULL or points to a filled table whose functions are CPython's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_init(api: *const dlb_py_api) -> dlb_status {
    boundary("dlb_py_init", || {
        // SAFETY: per the function contract.
        let api = unsafe { api.as_ref() }.ok_or_else(|| Error::invalid("api is NULL"))?;
        let missing = || Error::invalid("a CPython function in the table is NULL");
        let checked = Api {
            capsule_new: api.capsule_new.ok_or_else(missing)?,
            capsule_is_valid: api.capsule_is_valid.ok_or_else(missing)?,
            capsule_get_pointer: api.capsule_get_pointer.ok_or_else(missing)?,
            capsule_set_name: api.capsule_set_name.ok_or_else(missing)?,
            err_set_string: api.err_set_string.ok_or_else(missing)?,
            err_occurred: api.err_occurred.ok_or_else(missing)?,
            long_as_void_ptr: api.long_as_void_ptr.ok_or_else(missing)?,
            long_from_void_ptr: api.long_from_void_ptr.ok_or_else(missing)?,
            cfunction_new_ex: api.cfunction_new_ex.ok_or_else(missing)?,
            incref: api.incref.ok_or_else(missing)?,
            none: api.none,
            exceptions: api.exceptions,
        };
        if checked.none.is_null() || checked.exceptions.iter().any(|e| e.is_null()) {
            return Err(Error::invalid("an object in the table is NULL"));
        }
        let _ = API.set(checked);
        Ok(())
    })
}

/// CPython's `PyMethodDef` (stable ABI).
#[repr(C)]
pub struct PyMethodDef {
    name: *const c_char,
    meth: Option<FastCall>,
    flags: c_int,
    doc: *const c_char,
}

/// The method definitions must outlive every function object made from them: a static.
struct Methods([PyMethodDef; 5]);
// SAFETY: immutable after construction; CPython only reads it.
unsafe impl Sync for Methods {}

const METH_FASTCALL: c_int = 0x0080;

static METHODS: Methods = Methods([
    PyMethodDef {
        name: c"to_capsule".as_ptr(),
        meth: Some(py_to_capsule),
        flags: METH_FASTCALL,
        doc: c"to_capsule(handle, flags): a DLPack capsule of the tensor (flags: 1 versioned, 2 copy, 4 the tensor is already a private copy: mark it IS_COPIED)"
            .as_ptr(),
    },
    PyMethodDef {
        name: c"from_capsule".as_ptr(),
        meth: Some(py_from_capsule),
        flags: METH_FASTCALL,
        doc: c"from_capsule(capsule): consumes a DLPack capsule; returns a new handle".as_ptr(),
    },
    PyMethodDef {
        name: c"from_exchange_api".as_ptr(),
        meth: Some(py_from_exchange_api),
        flags: METH_FASTCALL,
        doc: c"from_exchange_api(table, obj): a new handle, or None when __dlpack__ must be used".as_ptr(),
    },
    PyMethodDef {
        name: c"native_init".as_ptr(),
        meth: Some(py_native_init),
        flags: METH_FASTCALL,
        doc: c"native_init(address of a dlb_py_native_api): builds the native Tensor base type and returns it"
            .as_ptr(),
    },
    PyMethodDef {
        name: c"free".as_ptr(),
        meth: Some(py_free),
        flags: METH_FASTCALL,
        doc: c"free(handle): releases a handle".as_ptr(),
    },
]);

/// A new builtin function object for one of the helpers below, by name; NULL with an exception
/// set for an unknown name.
///
/// # Safety
/// GIL held (ctypes.PyDLL); `dlb_py_init` has succeeded; `name` NULL or a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_function(name: *const c_char) -> *mut PyObject {
    let Some(api) = API.get() else { return std::ptr::null_mut() };
    // SAFETY: per the function contract.
    let wanted = (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) });
    for def in &METHODS.0 {
        // SAFETY: our names are static C strings.
        if Some(unsafe { CStr::from_ptr(def.name) }) == wanted {
            // SAFETY: GIL held; the definition is static, as CPython requires.
            return unsafe {
                (api.cfunction_new_ex)(
                    (def as *const PyMethodDef).cast_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
    }
    if let Some(function) = native::function(wanted) {
        return function;
    }
    api.fail("dlb_py_function", dlb_status::DLB_ERR_INVALID_ARGUMENT as usize, "no such helper")
}

/// `native_init(address)`: see `native::native_init`; the address is that of a filled
/// `dlb_py_native_api` (ctypes.addressof), read during the call only.
unsafe extern "C" fn py_native_init(
    _: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
) -> *mut PyObject {
    let Some(api) = API.get() else { return std::ptr::null_mut() };
    // SAFETY: CPython passes `nargs` live arguments.
    let Some(&[address]) = (unsafe { api.args("native_init", args, nargs) }) else {
        return std::ptr::null_mut();
    };
    let Some(table) = api.pointer(address) else { return std::ptr::null_mut() };
    // SAFETY: the package passes the address of a table it filled with CPython's functions.
    unsafe { native::native_init(table.cast()) }
}

/// The capsule destructor for our versioned capsules: releases the export only while the capsule
/// is unconsumed (a consumer renamed it to "used_dltensor_versioned" when it took ownership).
unsafe extern "C" fn destroy_versioned(capsule: *mut PyObject) {
    // SAFETY: called by CPython on a capsule we created with this name.
    unsafe { destroy::<DLManagedTensorVersioned>(capsule, VERSIONED) }
}

/// The capsule destructor for our legacy capsules, as `destroy_versioned`.
unsafe extern "C" fn destroy_legacy(capsule: *mut PyObject) {
    // SAFETY: called by CPython on a capsule we created with this name.
    unsafe { destroy::<DLManagedTensor>(capsule, LEGACY) }
}

/// # Safety
/// `capsule` is a capsule being destroyed by CPython (GIL held).
unsafe fn destroy<M: ManagedKind>(capsule: *mut PyObject, name: &CStr) {
    let Some(api) = API.get() else { return };
    // A destructor must never unwind into CPython.
    let _ = std::panic::catch_unwind(|| {
        if api.is_named(capsule, name) {
            // SAFETY: the capsule is valid under `name`, so this cannot fail or set an exception;
            // its pointer is the export we stored and nobody has taken ownership of it.
            unsafe { release((api.capsule_get_pointer)(capsule, name.as_ptr()).cast::<M>()) }
        }
    });
}

/// `to_capsule(handle, flags)`: exports the tensor as a new capsule ("dltensor_versioned" with
/// flag 1, else "dltensor"), sharing its memory or, with flag 2, a fresh copy. Flag 4 says the
/// tensor already is a private copy (a move to another device): shared, but marked IS_COPIED. A
/// legacy export of read-only data raises BufferError.
unsafe extern "C" fn py_to_capsule(
    _: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
) -> *mut PyObject {
    let Some(api) = API.get() else { return std::ptr::null_mut() };
    // SAFETY: CPython passes `nargs` live arguments.
    let Some(&[handle, flags]) = (unsafe { api.args("__dlpack__", args, nargs) }) else {
        return std::ptr::null_mut();
    };
    let (Some(handle), Some(flags)) = (api.pointer(handle), api.pointer(flags)) else {
        return std::ptr::null_mut();
    };
    let (versioned, copy, moved) = (flags.addr() & 1 != 0, flags.addr() & 2 != 0, flags.addr() & 4 != 0);
    let mut capsule = std::ptr::null_mut();
    api.call("__dlpack__", || {
        // SAFETY: the package passes only live handles it owns.
        let t = unsafe { dlb_tensor::from_ptr(handle.cast::<dlb_tensor>(), "the tensor") }?.tensor();
        capsule = export_capsule(api, t, versioned, copy, moved)?;
        Ok(())
    });
    capsule
}

/// A new capsule ("dltensor_versioned" when `versioned`, else "dltensor") holding an export of
/// `t`: shared, or with `copy` a fresh copy; `moved` marks a shared export IS_COPIED (the tensor
/// already is a private copy). NULL (an exception set by CPython) when the capsule could not be
/// made.
fn export_capsule(
    api: &Api,
    t: &Tensor,
    versioned: bool,
    copy: bool,
    moved: bool,
) -> Result<*mut PyObject, Error> {
    Ok(if versioned {
        let mt = export::<DLManagedTensorVersioned>(t, copy)?;
        if moved {
            // SAFETY: a new export nobody else has seen yet.
            unsafe { (*mt).flags = DlpackFlags::from_bits_retain((*mt).flags.bits() | FLAG_IS_COPIED) };
        }
        api.capsule(mt, VERSIONED, destroy_versioned)
    } else {
        api.capsule(export_legacy(t, copy)?, LEGACY, destroy_legacy)
    })
}

/// `from_capsule(capsule)`: takes ownership of the managed tensor in a DLPack capsule (legacy or
/// versioned) and imports it, returning a new handle. The capsule is renamed "used_…" before the
/// import, so whatever the outcome a second consumption fails cleanly and the producer's capsule
/// destructor leaves the tensor alone. Raises TypeError for a capsule that is not a DLPack
/// capsule, ValueError for one already consumed, else the import's error.
unsafe extern "C" fn py_from_capsule(
    _: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
) -> *mut PyObject {
    let Some(api) = API.get() else { return std::ptr::null_mut() };
    // SAFETY: CPython passes `nargs` live arguments.
    let Some(&[capsule]) = (unsafe { api.args("from_dlpack", args, nargs) }) else {
        return std::ptr::null_mut();
    };
    match import_capsule(api, capsule) {
        Some(out) => api.handle(out),
        None => std::ptr::null_mut(),
    }
}

/// `from_capsule`'s work: a new handle, or None with the exception raised.
fn import_capsule(api: &Api, capsule: *mut PyObject) -> Option<*mut dlb_tensor> {
    let take = |name: &CStr, used: &CStr| -> Result<*mut c_void, Error> {
        // SAFETY: the capsule is valid under `name` (checked by the caller), so GetPointer
        // cannot fail; the names are static, as PyCapsule_SetName requires.
        unsafe {
            let ptr = (api.capsule_get_pointer)(capsule, name.as_ptr());
            if (api.capsule_set_name)(capsule, used.as_ptr()) != 0 {
                return Err(Error::invalid("the capsule could not be renamed"));
            }
            Ok(ptr)
        }
    };
    let mut out = std::ptr::null_mut();
    let mut wrong_type = false;
    let ok = api.call("from_dlpack", || {
        // The handle first, so that running out of memory leaves the capsule unconsumed.
        let slot = dlb_tensor::reserve()?;
        // A pointer taken from a capsule of that name is a managed tensor of that kind, now
        // ours; `import` consumes it whatever happens.
        let tensor = if api.is_named(capsule, VERSIONED) {
            // SAFETY: see above.
            unsafe { import(take(VERSIONED, USED_VERSIONED)?.cast::<DLManagedTensorVersioned>()) }?
        } else if api.is_named(capsule, LEGACY) {
            // SAFETY: see above.
            unsafe { import(take(LEGACY, USED_LEGACY)?.cast::<DLManagedTensor>()) }?
        } else if api.is_named(capsule, USED_VERSIONED) || api.is_named(capsule, USED_LEGACY) {
            return Err(Error::invalid(
                "this DLPack capsule was already consumed (a capsule can be imported only once)",
            ));
        } else {
            wrong_type = true;
            return Err(Error::invalid(
                "expected a DLPack capsule named \"dltensor\" or \"dltensor_versioned\"",
            ));
        };
        out = dlb_tensor::fill(slot, tensor);
        Ok(())
    });
    if !ok {
        if wrong_type {
            api.raise::<c_void>(WRONG_TYPE);
        }
        return None;
    }
    Some(out)
}

/// DLPack 1.3's C exchange table, as far as dlbridge uses it (the layout is DLPack's).
#[repr(C)]
struct ExchangeApi {
    version: DLPackVersion,
    prev_api: *mut c_void,
    managed_tensor_allocator: *mut c_void,
    managed_tensor_from_py_object_no_sync:
        Option<unsafe extern "C" fn(*mut PyObject, *mut *mut DLManagedTensorVersioned) -> c_int>,
    managed_tensor_to_py_object_no_sync: *mut c_void,
    dltensor_from_py_object_no_sync: *mut c_void,
    current_work_stream: *mut c_void,
}

/// `from_exchange_api(table, obj)`: imports `obj` through its type's `__dlpack_c_exchange_api__`
/// (`table`, a capsule named "dlpack_exchange_api"), without any Python-level call, returning a
/// new handle. Host (kDLCPU) tensors only: the table's export does no stream synchronisation, so a
/// device tensor is released again and None is returned, telling the caller to use `__dlpack__`
/// (as for a table this library cannot use).
unsafe extern "C" fn py_from_exchange_api(
    _: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
) -> *mut PyObject {
    let Some(api) = API.get() else { return std::ptr::null_mut() };
    // SAFETY: CPython passes `nargs` live arguments.
    let Some(&[table, obj]) = (unsafe { api.args("from_dlpack", args, nargs) }) else {
        return std::ptr::null_mut();
    };
    match import_exchange(api, table, obj) {
        Ok(Some(h)) => api.handle(h),
        Ok(None) => api.none(),
        Err(()) => std::ptr::null_mut(),
    }
}

/// `from_exchange_api`'s work: Ok(Some(handle)), Ok(None) when `__dlpack__` must be used, or
/// Err with the exception raised. A refusal by the producer's table becomes a one-line
/// BufferError.
fn import_exchange(
    api: &Api,
    table: *mut PyObject,
    obj: *mut PyObject,
) -> Result<Option<*mut dlb_tensor>, ()> {
    if !api.is_named(table, EXCHANGE_API) {
        return Ok(None);
    }
    // SAFETY: valid under this name, so GetPointer cannot fail; the producer keeps the table
    // alive for the whole process (DLPack's rule).
    let table = unsafe { &*(api.capsule_get_pointer)(table, EXCHANGE_API.as_ptr()).cast::<ExchangeApi>() };
    let Some(from_py) = table.managed_tensor_from_py_object_no_sync.filter(|_| table.version.major == 1)
    else {
        return Ok(None);
    };
    let mut mt = std::ptr::null_mut();
    // SAFETY: the table belongs to obj's type; on failure the producer has set an exception.
    if unsafe { from_py(obj, &mut mt) } != 0 {
        native::refusal(api);
        return Err(());
    }
    if mt.is_null() {
        api.fail::<c_void>(
            "from_dlpack",
            dlb_status::DLB_ERR_PANIC as usize,
            "the producer's exchange API returned no tensor",
        );
        return Err(());
    }
    // SAFETY: a non-NULL result is an owned versioned managed tensor of major version 1.
    if unsafe { (*mt).dl_tensor.device.device_type.0 } != device_code::CPU {
        // SAFETY: still ours; nobody else has seen it.
        unsafe { release(mt) };
        return Ok(None);
    }
    let mut out = std::ptr::null_mut();
    if !api.call("from_dlpack", || {
        // SAFETY: owned, and consumed by `import` whatever happens.
        out = dlb_tensor::into_raw(unsafe { import(mt) }?)?;
        Ok(())
    }) {
        return Err(());
    }
    Ok(Some(out))
}

/// `free(handle)`: releases a handle (0 is a no-op).
unsafe extern "C" fn py_free(_: *mut PyObject, args: *const *mut PyObject, nargs: isize) -> *mut PyObject {
    let Some(api) = API.get() else { return std::ptr::null_mut() };
    // SAFETY: CPython passes `nargs` live arguments.
    let Some(&[handle]) = (unsafe { api.args("free", args, nargs) }) else { return std::ptr::null_mut() };
    let Some(handle) = api.pointer(handle) else { return std::ptr::null_mut() };
    // SAFETY: the package frees each handle it owns exactly once. A panicking drop (a bug) must
    // not unwind into CPython.
    let _ = std::panic::catch_unwind(|| unsafe { dlb_tensor::free(handle.cast::<dlb_tensor>()) });
    api.none()
}

/// The helpers against a small fake of the CPython functions they use (objects are boxed Rust
/// values), so that their ownership logic runs under `cargo test` and Miri without Python. The
/// Python suite (tests/python) runs them against the real interpreter.
#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::sync::Once;

    use super::*;
    use crate::device::Device;
    use crate::dtype::DType;
    use crate::tensor::Tensor;

    enum Obj {
        Int(*mut c_void),
        Capsule { ptr: *mut c_void, name: Cell<*const c_char>, destructor: Option<Destructor> },
        Func,
        Marker,
    }

    fn obj(o: Obj) -> *mut PyObject {
        Box::into_raw(Box::new(o)).cast()
    }
    fn get<'a>(o: *mut PyObject) -> &'a Obj {
        // SAFETY: every object the tests and the fakes pass here was made by `obj` and is not yet
        // freed by `drop_obj`; nothing takes a `&mut Obj` (a capsule's name changes via `Cell`).
        unsafe { &*o.cast::<Obj>() }
    }

    thread_local! {
        /// The exception raised on this thread: (index in the exceptions table, message).
        static RAISED: RefCell<Option<(usize, String)>> = const { RefCell::new(None) };
    }

    /// A fake object shared by all test threads (the fake is only touched by one test at a time
    /// per object, as the GIL would ensure).
    #[derive(Clone, Copy)]
    struct Shared(*mut PyObject);
    // SAFETY: the pointers wrapped are `install`'s `Obj::Marker` boxes (None and the exception
    // types), never freed nor written; other threads only compare their addresses or read them.
    unsafe impl Send for Shared {}
    // SAFETY: as above.
    unsafe impl Sync for Shared {}

    static EXCEPTIONS: OnceLock<[Shared; 9]> = OnceLock::new();
    static NONE: OnceLock<Shared> = OnceLock::new();

    unsafe extern "C" fn capsule_new(
        ptr: *mut c_void,
        name: *const c_char,
        d: Option<Destructor>,
    ) -> *mut PyObject {
        obj(Obj::Capsule { ptr, name: Cell::new(name), destructor: d })
    }
    unsafe extern "C" fn is_valid(o: *mut PyObject, name: *const c_char) -> c_int {
        match get(o) {
            Obj::Capsule { name: n, .. } => {
                // SAFETY: capsule names and the names asked about are static C strings (the
                // shim's constants, or c"other" below).
                c_int::from(unsafe { CStr::from_ptr(n.get()) == CStr::from_ptr(name) })
            }
            _ => 0,
        }
    }
    unsafe extern "C" fn get_pointer(o: *mut PyObject, name: *const c_char) -> *mut c_void {
        // SAFETY: our own contract: a live fake object and a static C string name.
        let valid = unsafe { is_valid(o, name) };
        assert_eq!(valid, 1, "GetPointer with a wrong name");
        match get(o) {
            Obj::Capsule { ptr, .. } => *ptr,
            _ => unreachable!(),
        }
    }
    unsafe extern "C" fn set_name(o: *mut PyObject, name: *const c_char) -> c_int {
        match get(o) {
            Obj::Capsule { name: n, .. } => n.set(name),
            _ => unreachable!(),
        }
        0
    }
    unsafe extern "C" fn set_string(exc: *mut PyObject, message: *const c_char) {
        let index = EXCEPTIONS.get().unwrap().iter().position(|e| e.0 == exc).expect("an exception type");
        // SAFETY: the shim passes `last_error_ptr()`, a NUL-terminated string alive for the call.
        let message = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
        RAISED.with(|r| *r.borrow_mut() = Some((index, message)));
    }
    unsafe extern "C" fn occurred() -> *mut PyObject {
        if RAISED.with(|r| r.borrow().is_some()) { NONE.get().unwrap().0 } else { std::ptr::null_mut() }
    }
    unsafe extern "C" fn as_void_ptr(o: *mut PyObject) -> *mut c_void {
        match get(o) {
            Obj::Int(p) => *p,
            _ => {
                RAISED.with(|r| *r.borrow_mut() = Some((WRONG_TYPE, "not an int".into())));
                std::ptr::null_mut()
            }
        }
    }
    unsafe extern "C" fn from_void_ptr(p: *mut c_void) -> *mut PyObject {
        obj(Obj::Int(p))
    }
    unsafe extern "C" fn cfunction(_: *mut PyMethodDef, _: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
        obj(Obj::Func)
    }
    unsafe extern "C" fn incref(_: *mut PyObject) {}

    fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let none = obj(Obj::Marker);
            let exceptions: [*mut PyObject; 9] = std::array::from_fn(|_| obj(Obj::Marker));
            let _ = NONE.set(Shared(none));
            let _ = EXCEPTIONS.set(exceptions.map(Shared));
            let table = dlb_py_api {
                capsule_new: Some(capsule_new),
                capsule_is_valid: Some(is_valid),
                capsule_get_pointer: Some(get_pointer),
                capsule_set_name: Some(set_name),
                err_set_string: Some(set_string),
                err_occurred: Some(occurred),
                long_as_void_ptr: Some(as_void_ptr),
                long_from_void_ptr: Some(from_void_ptr),
                cfunction_new_ex: Some(cfunction),
                incref: Some(incref),
                none,
                exceptions,
            };
            // SAFETY: the table is complete; the fakes above keep CPython's contracts over the
            // boxed objects, and None and the exception types are boxes never freed.
            let status = unsafe { dlb_py_init(&table) };
            assert_eq!(status, dlb_status::DLB_OK);
        });
        RAISED.with(|r| *r.borrow_mut() = None);
    }

    /// What CPython does when the last reference to an object goes.
    fn drop_obj(o: *mut PyObject) {
        if let Obj::Capsule { destructor: Some(d), .. } = get(o) {
            // SAFETY: `d` was given for this very capsule by the shim's capsule_new call, and it
            // runs once, as CPython's would when the last reference goes.
            unsafe { d(o) };
        }
        // SAFETY: `o` was made by `obj` (a leaked box); each test drops an object once, last.
        drop(unsafe { Box::from_raw(o.cast::<Obj>()) });
    }

    fn call(f: FastCall, args: &[*mut PyObject]) -> Result<*mut PyObject, (usize, String)> {
        // SAFETY: `f` is one of the shim's fastcall builtins (which ignore `self`), and `args`
        // holds args.len() live objects made by `obj`, as CPython would pass them.
        let out = unsafe { f(std::ptr::null_mut(), args.as_ptr(), args.len() as isize) };
        match RAISED.with(|r| r.borrow_mut().take()) {
            Some(e) => {
                assert!(out.is_null(), "an exception was set but a result returned");
                Err(e)
            }
            None => {
                assert!(!out.is_null(), "NULL returned without an exception");
                Ok(out)
            }
        }
    }

    fn handle_of(t: &Tensor) -> *mut PyObject {
        obj(Obj::Int(dlb_tensor::into_raw(t.alias()).unwrap().cast()))
    }

    /// `to_capsule(h, flags)`, with the flags object made and dropped around the call.
    fn export(h: *mut PyObject, versioned: bool, copy: bool) -> Result<*mut PyObject, (usize, String)> {
        let flags =
            obj(Obj::Int(std::ptr::without_provenance_mut(versioned as usize | (copy as usize) << 1)));
        let result = call(py_to_capsule, &[h, flags]);
        drop_obj(flags);
        result
    }

    fn free_handle(h: *mut PyObject) {
        let none = call(py_free, &[h]).unwrap();
        assert_eq!(none, NONE.get().unwrap().0);
        drop_obj(h);
    }

    #[test]
    fn an_unconsumed_capsule_releases_its_export_and_a_consumed_one_does_not() {
        install();
        let t = Tensor::empty(&[2, 3], DType::F32, Device::CPU, true).unwrap();
        let h = handle_of(&t);
        for versioned in [false, true] {
            let before = crate::alloc::Shared::count(t.storage());
            let capsule = export(h, versioned, false).unwrap();
            let name = if versioned { VERSIONED } else { LEGACY };
            // SAFETY: `capsule` is a live fake object; the name is a static C string.
            let valid = unsafe { is_valid(capsule, name.as_ptr()) };
            assert!(valid == 1);
            assert_eq!(crate::alloc::Shared::count(t.storage()), before + 1);
            drop_obj(capsule);
            assert_eq!(
                crate::alloc::Shared::count(t.storage()),
                before,
                "the destructor released the export"
            );

            let capsule = export(h, versioned, false).unwrap();
            let imported = call(py_from_capsule, &[capsule]).unwrap();
            let used = if versioned { USED_VERSIONED } else { USED_LEGACY };
            // SAFETY: `capsule` is a live fake object; the name is a static C string.
            let valid = unsafe { is_valid(capsule, used.as_ptr()) };
            assert!(valid == 1, "renamed when consumed");
            drop_obj(capsule); // consumed: the destructor must leave the export alone
            assert_eq!(crate::alloc::Shared::count(t.storage()), before + 1, "the import holds the storage");
            free_handle(imported);
            assert_eq!(crate::alloc::Shared::count(t.storage()), before);
        }
        free_handle(h);
    }

    #[test]
    fn a_capsule_is_consumed_once_and_foreign_capsules_are_refused() {
        install();
        let t = Tensor::empty(&[4], DType::F64, Device::CPU, true).unwrap();
        let h = handle_of(&t);
        let capsule = export(h, true, true).unwrap();
        let imported = call(py_from_capsule, &[capsule]).unwrap();
        let (kind, message) = call(py_from_capsule, &[capsule]).unwrap_err();
        assert_eq!(kind, dlb_status::DLB_ERR_INVALID_ARGUMENT as usize);
        assert!(message.contains("already consumed"), "{message}");
        drop_obj(capsule);
        free_handle(imported);

        // SAFETY: the fake only boxes its arguments; the name is a static C string, and the
        // dangling pointer is never read (the shim refuses the capsule by its name).
        let foreign = unsafe { capsule_new(std::ptr::without_provenance_mut(8), c"other".as_ptr(), None) };
        assert_eq!(call(py_from_capsule, &[foreign]).unwrap_err().0, WRONG_TYPE);
        drop_obj(foreign);
        free_handle(h);
    }

    #[test]
    fn refusals_raise_the_mapped_exception() {
        install();
        let t = Tensor::empty(&[2], DType::F32, Device::CPU, true).unwrap();
        let storage = t.storage().clone();
        let ro = Tensor::on_storage(storage, t.data_ptr(), &[2], None, DType::F32, true).unwrap();
        let h = handle_of(&ro);
        let (kind, message) = export(h, false, false).unwrap_err();
        assert_eq!(kind, dlb_status::DLB_ERR_READ_ONLY as usize);
        assert!(message.starts_with("__dlpack__: the tensor is read-only"), "{message}");
        // A copy is writable, so the legacy struct can carry it.
        let capsule = export(h, false, true).unwrap();
        drop_obj(capsule);
        // Wrong argument count and wrong argument type.
        assert_eq!(call(py_to_capsule, &[h]).unwrap_err().0, WRONG_TYPE);
        let not_int = obj(Obj::Marker);
        assert_eq!(export(not_int, true, false).unwrap_err().0, WRONG_TYPE);
        drop_obj(not_int);
        // A NULL handle is refused, not dereferenced; freeing it is a no-op.
        let null = obj(Obj::Int(std::ptr::null_mut()));
        assert_eq!(export(null, true, false).unwrap_err().0, 1);
        free_handle(null);
        free_handle(h);
    }
}

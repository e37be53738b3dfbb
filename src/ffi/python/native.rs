//! The native base of `dlbridge.Tensor`: a heap type made through CPython's stable ABI
//! (`PyType_FromSpec`), whose instances are `{PyObject header; dlb_tensor *}`, with the hot
//! attribute reads and methods as C functions of this library, the package's `from_dlpack`,
//! `empty` and `zeros` as builtins, and the DLPack C exchange table (`__dlpack_c_exchange_api__`).
//!
//! Each call takes its fast path only for the arguments it fully understands (the common ones:
//! a dtype or device written as a plain string, a shape as a tuple of ints, no stream, ...);
//! anything else goes to a Python function of the package (a "fallback"), which keeps every
//! rule, conversion and error message in one place, written once. The fast paths call only the
//! core, and report its errors with the same function names as the C exports, so the two paths
//! raise the same exceptions with the same messages.
//!
//! As in `mod.rs`, the library never links libpython: the package hands over the CPython
//! functions (the `native_init` helper, given the address of a `dlb_py_native_api` it filled
//! through ctypes) and everything runs with the GIL held. Nothing here is exported: the package
//! reaches it through `dlb_py_function`.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::{API, Api, EXCHANGE_API, ExchangeApi, PyObject, WRONG_TYPE};
use crate::abi::{DLManagedTensorVersioned, DLPackVersion, DLTensor};
use crate::device::{Device, DeviceKind};
use crate::dlpack::{export, import, release};
use crate::dtype::DType;
use crate::error::Error;
use crate::ffi::error::{boundary, dlb_status};
use crate::ffi::handle::dlb_tensor;
use crate::tensor::Tensor;

/// `(self, args, nargs, kwnames)`: METH_FASTCALL | METH_KEYWORDS.
type FastCallKw =
    unsafe extern "C" fn(*mut PyObject, *const *mut PyObject, isize, *mut PyObject) -> *mut PyObject;
/// `(self, unused)`: METH_NOARGS.
type NoArgs = unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject;
/// `(self, arg)`: METH_O.
type OneArg = NoArgs;
type Getter = unsafe extern "C" fn(*mut PyObject, *mut c_void) -> *mut PyObject;
/// `PyObject_Vectorcall(callable, args, nargsf, kwnames)`; `PyObject_VectorcallMethod(name, ...)`
/// has the same signature.
type Vectorcall =
    unsafe extern "C" fn(*mut PyObject, *const *mut PyObject, usize, *mut PyObject) -> *mut PyObject;

const METH_NOARGS: c_int = 0x0004;
const METH_O: c_int = 0x0008;
const METH_FASTCALL_KW: c_int = 0x0080 | 0x0002;

// typeslots.h
const PY_TP_ALLOC: c_int = 47;
const PY_TP_DEALLOC: c_int = 52;
const PY_TP_DOC: c_int = 56;
const PY_TP_METHODS: c_int = 64;
const PY_TP_NEW: c_int = 65;
const PY_TP_GETSET: c_int = 73;
const PY_TP_FREE: c_int = 74;
/// Py_TPFLAGS_DEFAULT (Py_TPFLAGS_HAVE_VERSION_TAG) | Py_TPFLAGS_BASETYPE.
const TYPE_FLAGS: u32 = (1 << 18) | (1 << 10);

/// Above this many bytes a copy runs with the GIL released, as the ctypes calls did.
const RELEASE_GIL_BYTES: usize = 64 << 10;

/// What the package hands over for the native type: more CPython functions (from
/// `ctypes.pythonapi`) and objects (borrowed, immortal for the process: built-in types).
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct dlb_py_native_api {
    pub type_from_spec: *mut c_void,
    pub type_get_slot: *mut c_void,
    pub type_is_subtype: *mut c_void,
    pub decref: *mut c_void,
    pub tuple_new: *mut c_void,
    pub tuple_set_item: *mut c_void,
    pub tuple_size: *mut c_void,
    pub tuple_get_item: *mut c_void,
    pub long_from_long_long: *mut c_void,
    pub long_as_long_long: *mut c_void,
    pub unicode_from_string_and_size: *mut c_void,
    pub unicode_intern_from_string: *mut c_void,
    pub unicode_compare_ascii: *mut c_void,
    pub bool_from_long: *mut c_void,
    pub object_get_attr: *mut c_void,
    pub object_call: *mut c_void,
    pub object_str: *mut c_void,
    pub dict_new: *mut c_void,
    pub dict_get_item: *mut c_void,
    pub dict_set_item: *mut c_void,
    pub err_exception_matches: *mut c_void,
    pub err_clear: *mut c_void,
    pub err_fetch: *mut c_void,
    pub unicode_as_utf8_string: *mut c_void,
    pub bytes_as_string: *mut c_void,
    pub save_thread: *mut c_void,
    pub restore_thread: *mut c_void,
    /// `PyObject_Vectorcall` and `PyObject_VectorcallMethod` where the interpreter exports them
    /// (3.9+ does; they joined the limited API in 3.12), else NULL: the calls then go through
    /// `PyObject_Call`.
    pub vectorcall: *mut c_void,
    pub vectorcall_method: *mut c_void,
    /// `object.__basicsize__`: where the handle sits in an instance.
    pub object_size: isize,
    /// Where `ob_type` sits in an object's header, as the package found it.
    pub type_offset: isize,
    pub int_type: *mut PyObject,
    pub str_type: *mut PyObject,
    pub tuple_type: *mut PyObject,
    pub capsule_type: *mut PyObject,
    pub memory_error: *mut PyObject,
    pub attribute_error: *mut PyObject,
}

struct Native {
    type_get_slot: unsafe extern "C" fn(*mut PyObject, c_int) -> *mut c_void,
    type_is_subtype: unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> c_int,
    decref: unsafe extern "C" fn(*mut PyObject),
    tuple_new: unsafe extern "C" fn(isize) -> *mut PyObject,
    tuple_set_item: unsafe extern "C" fn(*mut PyObject, isize, *mut PyObject) -> c_int,
    tuple_size: unsafe extern "C" fn(*mut PyObject) -> isize,
    tuple_get_item: unsafe extern "C" fn(*mut PyObject, isize) -> *mut PyObject,
    long_from_long_long: unsafe extern "C" fn(i64) -> *mut PyObject,
    long_as_long_long: unsafe extern "C" fn(*mut PyObject) -> i64,
    unicode_from_string_and_size: unsafe extern "C" fn(*const c_char, isize) -> *mut PyObject,
    unicode_compare_ascii: unsafe extern "C" fn(*mut PyObject, *const c_char) -> c_int,
    bool_from_long: unsafe extern "C" fn(i64) -> *mut PyObject,
    object_get_attr: unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject,
    object_call: unsafe extern "C" fn(*mut PyObject, *mut PyObject, *mut PyObject) -> *mut PyObject,
    object_str: unsafe extern "C" fn(*mut PyObject) -> *mut PyObject,
    dict_get_item: unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject,
    err_exception_matches: unsafe extern "C" fn(*mut PyObject) -> c_int,
    err_clear: unsafe extern "C" fn(),
    err_fetch: unsafe extern "C" fn(*mut *mut PyObject, *mut *mut PyObject, *mut *mut PyObject),
    unicode_as_utf8_string: unsafe extern "C" fn(*mut PyObject) -> *mut PyObject,
    bytes_as_string: unsafe extern "C" fn(*mut PyObject) -> *mut c_char,
    save_thread: unsafe extern "C" fn() -> *mut c_void,
    restore_thread: unsafe extern "C" fn(*mut c_void),
    vectorcall: Option<Vectorcall>,
    vectorcall_method: Option<Vectorcall>,
    offset: usize,
    int_type: *mut PyObject,
    str_type: *mut PyObject,
    tuple_type: *mut PyObject,
    capsule_type: *mut PyObject,
    memory_error: *mut PyObject,
    attribute_error: *mut PyObject,
    /// The native base type (a new reference kept for the process).
    base: *mut PyObject,
    /// Interned "__dlpack__", an empty tuple and `{"max_version": (1, 3)}`, kept for the process.
    dunder: *mut PyObject,
    empty_tuple: *mut PyObject,
    dunder_kwargs: *mut PyObject,
    /// `(1, 3)` and `("max_version",)`, for the vectorcall of `__dlpack__`.
    max_version: *mut PyObject,
    max_version_name: *mut PyObject,
    /// The exchange-table capsule `__dlpack_c_exchange_api__`.
    exchange_capsule: *mut PyObject,
}

// SAFETY: CPython's functions and objects kept alive for the process; every use holds the GIL.
unsafe impl Send for Native {}
// SAFETY: as above.
unsafe impl Sync for Native {}

static NATIVE: OnceLock<Native> = OnceLock::new();

/// What `setup` hands over once the Python class exists: the class natively made tensors get
/// (and its tp_alloc), the import routes and the fallbacks.
struct Setup {
    cls: *mut PyObject,
    alloc: unsafe extern "C" fn(*mut PyObject, isize) -> *mut PyObject,
    /// The dict type -> route that `from_dlpack` reads: True (ask `__dlpack__` directly) or an
    /// exchange-table capsule (read it, host tensors only). A missing type takes the fallback.
    routes: *mut PyObject,
    fallbacks: [*mut PyObject; FALLBACKS],
}
// SAFETY: as for Native.
unsafe impl Send for Setup {}
// SAFETY: as above.
unsafe impl Sync for Setup {}

static SETUP: OnceLock<Setup> = OnceLock::new();
static NUMPY_FROM_DLPACK: AtomicPtr<PyObject> = AtomicPtr::new(std::ptr::null_mut());

/// The fallbacks, in the order the package's `setup` call passes them (the Python functions of
/// `_tensor.py` named `_*_slow`, and its `_MISSING` marker last).
const FALLBACKS: usize = 8;
const FB_FROM_DLPACK: usize = 0; // (obj, copy, device)
const FB_DLPACK: usize = 1; // (self, stream, max_version, dl_device, copy)
const FB_VIEW: usize = 2; // (self, shape, strides, offset)
const FB_ASTYPE: usize = 3; // (self, dtype)
const FB_TO: usize = 4; // (self, device)
const FB_NUMPY: usize = 5; // (self)
const FB_CREATE: usize = 6; // (shape, dtype, device, zero, shared)
/// Not a function: the object that stands for an argument not given.
const FB_MISSING: usize = 7;

fn native() -> Option<(&'static Api, &'static Native)> {
    Some((API.get()?, NATIVE.get()?))
}

macro_rules! fnptr {
    ($api:ident . $field:ident) => {{
        let p = $api.$field;
        if p.is_null() {
            return Err(Error::invalid(concat!("CPython function ", stringify!($field), " is NULL")));
        }
        // SAFETY: the package passes the address of the CPython function of that name, whose
        // C signature is the field's type here.
        unsafe { std::mem::transmute::<*mut c_void, _>(p) }
    }};
}

/// Builds the native base type. Returns it (a new reference), or NULL with an exception set.
///
/// # Safety
/// GIL held; `dlb_py_init` has succeeded; `api` NULL or a filled table of CPython's functions.
#[expect(
    clippy::missing_transmute_annotations,
    reason = "fnptr! turns each table entry into the type of the field it fills, named there"
)]
pub(super) unsafe fn native_init(api: *const dlb_py_native_api) -> *mut PyObject {
    let Some(py) = API.get() else { return std::ptr::null_mut() };
    if let Some(n) = NATIVE.get() {
        // SAFETY: GIL held; the base lives for the process.
        unsafe { (py.incref)(n.base) };
        return n.base;
    }
    let mut out = std::ptr::null_mut();
    let ok = py.call("native_init", || {
        // SAFETY: per the function contract.
        let a = unsafe { api.as_ref() }.ok_or_else(|| Error::invalid("api is NULL"))?;
        let type_from_spec: unsafe extern "C" fn(*mut PyTypeSpec) -> *mut PyObject = fnptr!(a.type_from_spec);
        let intern: unsafe extern "C" fn(*const c_char) -> *mut PyObject =
            fnptr!(a.unicode_intern_from_string);
        let dict_new: unsafe extern "C" fn() -> *mut PyObject = fnptr!(a.dict_new);
        let dict_set_item: unsafe extern "C" fn(*mut PyObject, *mut PyObject, *mut PyObject) -> c_int =
            fnptr!(a.dict_set_item);
        let mut n = Native {
            type_get_slot: fnptr!(a.type_get_slot),
            type_is_subtype: fnptr!(a.type_is_subtype),
            decref: fnptr!(a.decref),
            tuple_new: fnptr!(a.tuple_new),
            tuple_set_item: fnptr!(a.tuple_set_item),
            tuple_size: fnptr!(a.tuple_size),
            tuple_get_item: fnptr!(a.tuple_get_item),
            long_from_long_long: fnptr!(a.long_from_long_long),
            long_as_long_long: fnptr!(a.long_as_long_long),
            unicode_from_string_and_size: fnptr!(a.unicode_from_string_and_size),
            unicode_compare_ascii: fnptr!(a.unicode_compare_ascii),
            bool_from_long: fnptr!(a.bool_from_long),
            object_get_attr: fnptr!(a.object_get_attr),
            object_call: fnptr!(a.object_call),
            object_str: fnptr!(a.object_str),
            dict_get_item: fnptr!(a.dict_get_item),
            err_exception_matches: fnptr!(a.err_exception_matches),
            err_clear: fnptr!(a.err_clear),
            err_fetch: fnptr!(a.err_fetch),
            unicode_as_utf8_string: fnptr!(a.unicode_as_utf8_string),
            bytes_as_string: fnptr!(a.bytes_as_string),
            save_thread: fnptr!(a.save_thread),
            restore_thread: fnptr!(a.restore_thread),
            // SAFETY: NULL or CPython's function of that signature.
            vectorcall: unsafe { std::mem::transmute::<*mut c_void, Option<Vectorcall>>(a.vectorcall) },
            // SAFETY: as above.
            vectorcall_method: unsafe {
                std::mem::transmute::<*mut c_void, Option<Vectorcall>>(a.vectorcall_method)
            },
            offset: usize::try_from(a.object_size)
                .ok()
                .filter(|&s| s >= 2 * size_of::<usize>() && s % align_of::<usize>() == 0)
                .ok_or_else(|| Error::invalid("object_size is not a PyObject header size"))?,
            int_type: a.int_type,
            str_type: a.str_type,
            tuple_type: a.tuple_type,
            capsule_type: a.capsule_type,
            memory_error: a.memory_error,
            attribute_error: a.attribute_error,
            base: std::ptr::null_mut(),
            dunder: std::ptr::null_mut(),
            empty_tuple: std::ptr::null_mut(),
            dunder_kwargs: std::ptr::null_mut(),
            max_version: std::ptr::null_mut(),
            max_version_name: std::ptr::null_mut(),
            exchange_capsule: std::ptr::null_mut(),
        };
        let type_offset = usize::try_from(a.type_offset)
            .ok()
            .filter(|&o| o % align_of::<usize>() == 0 && o + size_of::<usize>() <= n.offset)
            .ok_or_else(|| Error::invalid("type_offset is not inside a PyObject header"))?;
        TYPE_OFFSET.store(type_offset, Ordering::Relaxed);
        if [n.int_type, n.str_type, n.tuple_type, n.capsule_type, n.memory_error, n.attribute_error]
            .iter()
            .any(|p| p.is_null())
        {
            return Err(Error::invalid("an object in the table is NULL"));
        }
        let failed = || Error::out_of_memory("CPython could not make an object");
        // SAFETY: GIL held; each call is CPython's with its documented arguments; the objects
        // made here are kept for the whole process (never released), as the type's slots and
        // the builtins need them.
        unsafe {
            n.dunder = intern(c"__dlpack__".as_ptr());
            n.empty_tuple = (n.tuple_new)(0);
            let version = pair(&n, 1, 3);
            n.dunder_kwargs = dict_new();
            let key = intern(c"max_version".as_ptr());
            if n.dunder.is_null()
                || n.empty_tuple.is_null()
                || version.is_null()
                || n.dunder_kwargs.is_null()
                || key.is_null()
                || dict_set_item(n.dunder_kwargs, key, version) != 0
            {
                return Err(failed());
            }
            n.max_version = version;
            n.max_version_name = (n.tuple_new)(1);
            (py.incref)(key);
            if n.max_version_name.is_null() || (n.tuple_set_item)(n.max_version_name, 0, key) != 0 {
                return Err(failed());
            }
            n.exchange_capsule = (py.capsule_new)(
                (&raw const EXCHANGE_TABLE.0).cast_mut().cast(),
                EXCHANGE_API.as_ptr(),
                None,
            );
            if n.exchange_capsule.is_null() {
                return Err(failed());
            }
            n.offset = n.offset.next_multiple_of(align_of::<*mut dlb_tensor>());
            let spec = Box::leak(Box::new(PyTypeSpec {
                name: c"dlbridge._TensorBase".as_ptr(),
                basicsize: (n.offset + size_of::<*mut dlb_tensor>()) as c_int,
                itemsize: 0,
                flags: TYPE_FLAGS,
                slots: type_slots(),
            }));
            n.base = type_from_spec(spec);
            if n.base.is_null() {
                return Err(failed());
            }
        }
        out = n.base;
        // SAFETY: GIL held; one reference for the caller, the table keeps the other.
        unsafe { (py.incref)(out) };
        let _ = NATIVE.set(n);
        Ok(())
    });
    if ok { out } else { std::ptr::null_mut() }
}

/// CPython's `PyType_Spec` (stable ABI).
#[repr(C)]
struct PyTypeSpec {
    name: *const c_char,
    basicsize: c_int,
    itemsize: c_int,
    flags: u32,
    slots: *mut PyTypeSlot,
}

/// CPython's `PyType_Slot`.
#[repr(C)]
struct PyTypeSlot {
    slot: c_int,
    pfunc: *mut c_void,
}

/// CPython's `PyMethodDef`, with the function as an untyped pointer (its flags say the kind).
#[repr(C)]
struct MethodDef {
    name: *const c_char,
    meth: *mut c_void,
    flags: c_int,
    doc: *const c_char,
}

/// CPython's `PyGetSetDef`.
#[repr(C)]
struct GetSetDef {
    name: *const c_char,
    get: Option<Getter>,
    set: *mut c_void,
    doc: *const c_char,
    closure: *mut c_void,
}

fn method(name: &'static CStr, meth: *mut c_void, flags: c_int, doc: &'static CStr) -> MethodDef {
    MethodDef { name: name.as_ptr(), meth, flags, doc: doc.as_ptr() }
}

fn getter(name: &'static CStr, get: Getter, doc: &'static CStr) -> GetSetDef {
    GetSetDef {
        name: name.as_ptr(),
        get: Some(get),
        set: std::ptr::null_mut(),
        doc: doc.as_ptr(),
        closure: std::ptr::null_mut(),
    }
}

/// The slot table of the base type. It and the tables it points to are leaked: CPython keeps
/// pointers into them for as long as the type lives (the whole process).
fn type_slots() -> *mut PyTypeSlot {
    let kw = |f: FastCallKw| f as *mut c_void;
    let noargs = |f: NoArgs| f as *mut c_void;
    let methods: Vec<MethodDef> = vec![
        method(c"data_ptr", noargs(t_data_ptr), METH_NOARGS, c"data_ptr($self, /)\n--\n\nThe address of the first element (0 for a zero-element tensor without memory), for native code. It stays valid while this tensor, or anything sharing its memory, lives."),
        method(c"is_contiguous", noargs(t_is_contiguous), METH_NOARGS, c"is_contiguous($self, /)\n--\n\nWhether the elements are row-major without gaps."),
        method(c"alias", noargs(t_alias), METH_NOARGS, c"alias($self, /)\n--\n\nA new tensor sharing this one's memory."),
        method(c"copy", noargs(t_copy), METH_NOARGS, c"copy($self, /)\n--\n\nA row-major copy in new memory."),
        method(c"view", kw(t_view), METH_FASTCALL_KW, c"view($self, /, shape, strides=None, offset=0)\n--\n\nA strided view of this tensor's memory (zero-copy). strides and offset are in elements, relative to this tensor's first element; strides None means row-major."),
        method(c"astype", kw(t_astype), METH_FASTCALL_KW, c"astype($self, /, dtype)\n--\n\nA converting copy (complex to real is refused with TypeError)."),
        method(c"to", kw(t_to), METH_FASTCALL_KW, c"to($self, /, device)\n--\n\nSame device: an alias. Another device: a copy there."),
        method(c"cpu", noargs(t_cpu), METH_NOARGS, c"cpu($self, /)\n--\n\nLike torch, an alias when already on the CPU, else a copy to the CPU."),
        method(c"numpy", noargs(t_numpy), METH_NOARGS, c"numpy($self, /)\n--\n\nA NumPy array sharing this tensor's memory (host memory only). A read-only tensor gives a read-only array; bfloat16 needs ml_dtypes."),
        method(c"__dlpack__", kw(t_dlpack), METH_FASTCALL_KW, c"__dlpack__($self, /, *, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\nExports this tensor as a DLPack capsule: \"dltensor_versioned\" when max_version allows (major >= 1), else legacy \"dltensor\". copy=True hands out a fresh copy (IS_COPIED), copy=False never copies. Shared exports of read-only data set READ_ONLY; the legacy struct cannot, so a legacy export of read-only data raises BufferError. dl_device other than the tensor's device copies there (BufferError with copy=False, or when dlbridge cannot reach that device); every kDLCPU id is the same memory. Wrong types: TypeError."),
        method(c"__dlpack_device__", noargs(t_dlpack_device), METH_NOARGS, c"__dlpack_device__($self, /)\n--\n\n(device_type, device_id) as DLPack numbers them."),
        method(c"shares_memory", t_shares_memory as OneArg as *mut c_void, METH_O, c"shares_memory($self, other, /)\n--\n\nWhether the byte ranges of the two tensors overlap, on the same device."),
        MethodDef { name: std::ptr::null(), meth: std::ptr::null_mut(), flags: 0, doc: std::ptr::null() },
    ];
    let getset: Vec<GetSetDef> = vec![
        getter(c"shape", g_shape, c"The shape, a tuple of ints."),
        getter(c"strides", g_strides, c"Strides in elements (not bytes), as DLPack counts them."),
        getter(c"ndim", g_ndim, c"The number of dimensions."),
        getter(c"dtype", g_dtype, c"The element type's name ('float32', ...)."),
        getter(c"device", g_device, c"'cpu', 'cuda:N', 'cuda_host' or 'cuda_host:N'."),
        getter(c"itemsize", g_itemsize, c"Bytes per element."),
        getter(c"nbytes", g_nbytes, c"Bytes of the elements (the product of the shape times the itemsize)."),
        getter(c"read_only", g_read_only, c"Whether the memory may not be written through this tensor."),
        getter(c"_h", g_handle, c"The dlb_tensor * handle as an int (0 once freed); borrowed."),
        GetSetDef {
            name: std::ptr::null(),
            get: None,
            set: std::ptr::null_mut(),
            doc: std::ptr::null(),
            closure: std::ptr::null_mut(),
        },
    ];
    let slots = vec![
        PyTypeSlot {
            slot: PY_TP_DEALLOC,
            pfunc: t_dealloc as unsafe extern "C" fn(*mut PyObject) as *mut c_void,
        },
        PyTypeSlot {
            slot: PY_TP_NEW,
            pfunc: t_new as unsafe extern "C" fn(*mut PyObject, *mut PyObject, *mut PyObject) -> *mut PyObject
                as *mut c_void,
        },
        PyTypeSlot { slot: PY_TP_METHODS, pfunc: Box::leak(methods.into_boxed_slice()).as_mut_ptr().cast() },
        PyTypeSlot { slot: PY_TP_GETSET, pfunc: Box::leak(getset.into_boxed_slice()).as_mut_ptr().cast() },
        PyTypeSlot {
            slot: PY_TP_DOC,
            pfunc: c"The native part of dlbridge.Tensor: a dlb_tensor handle owned by this object."
                .as_ptr()
                .cast_mut()
                .cast(),
        },
        PyTypeSlot { slot: 0, pfunc: std::ptr::null_mut() },
    ];
    Box::leak(slots.into_boxed_slice()).as_mut_ptr()
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

/// Where `ob_type` sits in an object's header: after the reference count (8 on 64-bit builds,
/// the stable ABI's layout), unless the package measured otherwise (a free-threaded build's
/// header is longer).
static TYPE_OFFSET: AtomicUsize = AtomicUsize::new(size_of::<isize>());

/// `Py_TYPE(obj)`.
///
/// # Safety
/// `obj` is a live object.
unsafe fn type_of(obj: *mut PyObject) -> *mut PyObject {
    // SAFETY: per the function contract; `ob_type` is a pointer at TYPE_OFFSET in the header.
    unsafe { *obj.cast::<u8>().add(TYPE_OFFSET.load(Ordering::Relaxed)).cast::<*mut PyObject>() }
}

/// The handle slot of an instance of the base type.
///
/// # Safety
/// `obj` is an instance of the base type (or a subclass).
unsafe fn slot(n: &Native, obj: *mut PyObject) -> *mut *mut dlb_tensor {
    // SAFETY: per the function contract: the instance has `offset + size_of::<*mut>()` bytes.
    unsafe { obj.cast::<u8>().add(n.offset).cast() }
}

/// A 2-tuple of ints (NULL with an exception set on failure).
///
/// # Safety
/// GIL held.
unsafe fn pair(n: &Native, a: i64, b: i64) -> *mut PyObject {
    // SAFETY: GIL held; PyTuple_SetItem steals the item (NULL items make it fail: checked).
    unsafe {
        let t = (n.tuple_new)(2);
        if t.is_null() {
            return t;
        }
        for (i, v) in [a, b].into_iter().enumerate() {
            let item = (n.long_from_long_long)(v);
            if item.is_null() || (n.tuple_set_item)(t, i as isize, item) != 0 {
                (n.decref)(t);
                return std::ptr::null_mut();
            }
        }
        t
    }
}

/// A tuple of ints.
///
/// # Safety
/// GIL held.
unsafe fn int_tuple(n: &Native, values: &[i64]) -> *mut PyObject {
    // SAFETY: GIL held; as `pair`.
    unsafe {
        let t = (n.tuple_new)(values.len() as isize);
        if t.is_null() {
            return t;
        }
        for (i, &v) in values.iter().enumerate() {
            let item = (n.long_from_long_long)(v);
            if item.is_null() || (n.tuple_set_item)(t, i as isize, item) != 0 {
                (n.decref)(t);
                return std::ptr::null_mut();
            }
        }
        t
    }
}

/// Calls `f(*items)` (borrowed items; NULL stands for an argument not given: the package's
/// marker once set up, else None). A new reference or NULL.
///
/// # Safety
/// GIL held; `f` and the items are live objects.
unsafe fn call_with(py: &Api, n: &Native, f: *mut PyObject, items: &[*mut PyObject]) -> *mut PyObject {
    let missing = || setup().map_or(py.none, |s| s.fallbacks[FB_MISSING]);
    if let Some(vectorcall) = n.vectorcall.filter(|_| items.len() <= 8) {
        let mut args = [std::ptr::null_mut(); 8];
        for (slot, &item) in args.iter_mut().zip(items) {
            *slot = if item.is_null() { missing() } else { item };
        }
        // SAFETY: GIL held; borrowed arguments, alive for the call.
        return unsafe { vectorcall(f, args.as_ptr(), items.len(), std::ptr::null_mut()) };
    }
    // SAFETY: GIL held; SetItem steals a reference, so each item is increfed first.
    unsafe {
        let args = (n.tuple_new)(items.len() as isize);
        if args.is_null() {
            return args;
        }
        for (i, &item) in items.iter().enumerate() {
            let item = if item.is_null() { missing() } else { item };
            (py.incref)(item);
            (n.tuple_set_item)(args, i as isize, item);
        }
        let out = (n.object_call)(f, args, std::ptr::null_mut());
        (n.decref)(args);
        out
    }
}

fn setup() -> Option<&'static Setup> {
    SETUP.get()
}

/// Calls fallback `which` with `items`; NULL with an exception when the package is not set up.
fn fallback(py: &Api, n: &Native, which: usize, items: &[*mut PyObject]) -> *mut PyObject {
    let Some(s) = setup() else {
        return py.fail(
            "dlbridge",
            dlb_status::DLB_ERR_PANIC as usize,
            "the package has not set up its Tensor class",
        );
    };
    // SAFETY: GIL held (we are called from Python); the fallbacks live for the process.
    unsafe { call_with(py, n, s.fallbacks[which], items) }
}

/// Wraps a new handle in a new instance of the package's class; on failure (MemoryError set)
/// the handle is released.
fn wrap(py: &Api, h: *mut dlb_tensor) -> *mut PyObject {
    let Some((s, n)) = setup().zip(NATIVE.get()) else {
        // SAFETY: the handle is ours and nobody else has seen it.
        unsafe { dlb_tensor::free(h) };
        return py.fail(
            "dlbridge",
            dlb_status::DLB_ERR_PANIC as usize,
            "the package has not set up its Tensor class",
        );
    };
    // SAFETY: GIL held; tp_alloc of the class gives a zeroed instance (a new reference) with room
    // for the handle, or NULL with MemoryError set.
    unsafe {
        let obj = (s.alloc)(s.cls, 0);
        if obj.is_null() {
            dlb_tensor::free(h);
            return obj;
        }
        *slot(n, obj) = h;
        obj
    }
}

/// Runs `f` in the boundary under `function`'s name and wraps the handle it makes.
fn produce(py: &Api, function: &str, f: impl FnOnce() -> Result<Tensor, Error>) -> *mut PyObject {
    let mut h = std::ptr::null_mut();
    if !py.call(function, || {
        h = dlb_tensor::into_raw(f()?)?;
        Ok(())
    }) {
        return std::ptr::null_mut();
    }
    wrap(py, h)
}

/// Like `produce`, with the GIL released around `f` when `bytes` is large (a copy).
fn produce_released(
    py: &Api,
    n: &Native,
    function: &str,
    bytes: usize,
    f: impl FnOnce() -> Result<Tensor, Error>,
) -> *mut PyObject {
    if bytes < RELEASE_GIL_BYTES {
        return produce(py, function, f);
    }
    let mut h = std::ptr::null_mut();
    // SAFETY: nothing below touches Python until the GIL is taken back.
    let state = unsafe { (n.save_thread)() };
    let status = boundary(function, || {
        h = dlb_tensor::into_raw(f()?)?;
        Ok(())
    });
    // SAFETY: the state saved above, on the same thread.
    unsafe { (n.restore_thread)(state) };
    if status != dlb_status::DLB_OK {
        return py.raise(status as usize);
    }
    wrap(py, h)
}

/// The tensor of `obj`, an instance of the base type; ValueError once freed (never: the handle
/// lives as long as the object, but a C extension may have been handed a NULL one).
///
/// # Safety
/// `obj` is an instance of the base type; the returned reference does not outlive it.
unsafe fn tensor_of<'a>(py: &Api, n: &Native, obj: *mut PyObject) -> Option<&'a Tensor> {
    // SAFETY: per the function contract.
    let h = unsafe { *slot(n, obj) };
    if h.is_null() {
        py.fail::<c_void>(
            "dlbridge",
            dlb_status::DLB_ERR_INVALID_ARGUMENT as usize,
            "the tensor has been freed",
        );
        return None;
    }
    // SAFETY: a live handle owned by `obj`.
    Some(unsafe { (*h).tensor() })
}

fn is_tensor(n: &Native, obj: *mut PyObject) -> bool {
    // SAFETY: GIL held; `obj` is live; PyType_IsSubtype never fails.
    unsafe { (n.type_is_subtype)(type_of(obj), n.base) != 0 }
}

// ---------------------------------------------------------------------------------------------
// The type's slots, getters and methods
// ---------------------------------------------------------------------------------------------

unsafe extern "C" fn t_new(_: *mut PyObject, _: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let Some(py) = API.get() else { return std::ptr::null_mut() };
    py.fail(
        "dlbridge.Tensor",
        WRONG_TYPE,
        "use dlbridge.empty, dlbridge.zeros or dlbridge.from_dlpack to make a Tensor",
    )
}

/// Frees the handle, then the object (through its type's tp_free), then drops the reference
/// the instance held to its heap type. Runs during interpreter shutdown too: it needs no module.
unsafe extern "C" fn t_dealloc(obj: *mut PyObject) {
    let Some(n) = NATIVE.get() else { return };
    // SAFETY: CPython calls this once, with the GIL, for an instance of the base type or a
    // subclass (whose subtype_dealloc has cleared its own parts first).
    unsafe {
        let tp = type_of(obj);
        let h = std::mem::replace(&mut *slot(n, obj), std::ptr::null_mut());
        // A panicking drop (a bug) must not unwind into CPython.
        let _ = std::panic::catch_unwind(|| dlb_tensor::free(h));
        let free = (n.type_get_slot)(tp, PY_TP_FREE);
        if !free.is_null() {
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(free)(obj);
        }
        (n.decref)(tp);
    }
}

/// The common start of every getter and method: the tables and the tensor.
macro_rules! this {
    ($obj:expr) => {{
        let Some((py, n)) = native() else { return std::ptr::null_mut() };
        // SAFETY: CPython passes an instance of the type the descriptor belongs to.
        let Some(t) = (unsafe { tensor_of(py, n, $obj) }) else { return std::ptr::null_mut() };
        (py, n, t)
    }};
}

unsafe extern "C" fn g_shape(obj: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    let (_, n, t) = this!(obj);
    // SAFETY: GIL held.
    unsafe { int_tuple(n, t.shape()) }
}

unsafe extern "C" fn g_strides(obj: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    let (_, n, t) = this!(obj);
    // SAFETY: GIL held.
    unsafe { int_tuple(n, t.strides()) }
}

unsafe extern "C" fn g_ndim(obj: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    let (_, n, t) = this!(obj);
    // SAFETY: GIL held.
    unsafe { (n.long_from_long_long)(t.ndim() as i64) }
}

unsafe extern "C" fn g_itemsize(obj: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    let (_, n, t) = this!(obj);
    // SAFETY: GIL held.
    unsafe { (n.long_from_long_long)(t.dtype().itemsize() as i64) }
}

unsafe extern "C" fn g_nbytes(obj: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    let (_, n, t) = this!(obj);
    // SAFETY: GIL held.
    unsafe { (n.long_from_long_long)((t.numel() * t.dtype().itemsize()) as i64) }
}

unsafe extern "C" fn g_read_only(obj: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    let (_, n, t) = this!(obj);
    // SAFETY: GIL held.
    unsafe { (n.bool_from_long)(i64::from(t.is_read_only())) }
}

unsafe extern "C" fn g_handle(obj: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    let Some((py, n)) = native() else { return std::ptr::null_mut() };
    // SAFETY: CPython passes an instance of the type; GIL held.
    unsafe { (py.long_from_void_ptr)((*slot(n, obj)).cast()) }
}

/// The dlbridge name of a dtype, as the package spells it.
fn dtype_name(d: DType) -> String {
    const FLOAT8: [&str; 8] = [
        "float8_e3m4",
        "float8_e4m3",
        "float8_e4m3b11fnuz",
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e5m2",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
    ];
    if let Some(s) = d.scalar() {
        return s.name().to_owned();
    }
    if d.lanes() == 1 && d.bits() == 8 && (7..=14).contains(&d.code()) {
        return FLOAT8[usize::from(d.code() - 7)].to_owned();
    }
    format!("dlpack_dtype(code={}, bits={}, lanes={})", d.code(), d.bits(), d.lanes())
}

fn device_name(d: Device) -> String {
    match d.kind {
        DeviceKind::Cpu => "cpu".to_owned(),
        DeviceKind::Cuda => format!("cuda:{}", d.id),
        DeviceKind::CudaHost if d.id == 0 => "cuda_host".to_owned(),
        DeviceKind::CudaHost => format!("cuda_host:{}", d.id),
    }
}

fn string(n: &Native, s: &str) -> *mut PyObject {
    // SAFETY: GIL held; the bytes are valid UTF-8 of that length.
    unsafe { (n.unicode_from_string_and_size)(s.as_ptr().cast(), s.len() as isize) }
}

unsafe extern "C" fn g_dtype(obj: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    // The names of the usual dtypes are made once and shared, as NumPy shares its dtypes.
    static NAMES: [AtomicPtr<PyObject>; 16] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 16];
    let d = t.dtype();
    let Some(i) = d.scalar().map(|s| s as usize).filter(|&i| i < NAMES.len()) else {
        return string(n, &dtype_name(d));
    };
    cached(py, n, &NAMES[i], || dtype_name(d))
}

/// A string made once and kept (a new reference to it each call).
fn cached(py: &Api, n: &Native, cell: &AtomicPtr<PyObject>, make: impl FnOnce() -> String) -> *mut PyObject {
    let mut s = cell.load(Ordering::Relaxed);
    if s.is_null() {
        s = string(n, &make());
        if s.is_null() {
            return s;
        }
        // The GIL serialises this: the cell keeps this reference for the process.
        cell.store(s, Ordering::Relaxed);
    }
    // SAFETY: GIL held; a live string.
    unsafe { (py.incref)(s) };
    s
}

unsafe extern "C" fn g_device(obj: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    static CPU: AtomicPtr<PyObject> = AtomicPtr::new(std::ptr::null_mut());
    match t.device().kind {
        DeviceKind::Cpu => cached(py, n, &CPU, || "cpu".to_owned()),
        _ => string(n, &device_name(t.device())),
    }
}

unsafe extern "C" fn t_data_ptr(obj: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let (py, _, t) = this!(obj);
    // SAFETY: GIL held.
    unsafe { (py.long_from_void_ptr)(t.data_ptr().cast()) }
}

unsafe extern "C" fn t_is_contiguous(obj: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let (_, n, t) = this!(obj);
    // SAFETY: GIL held.
    unsafe { (n.bool_from_long)(i64::from(t.is_contiguous())) }
}

unsafe extern "C" fn t_dlpack_device(obj: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let (_, n, t) = this!(obj);
    let d = t.device().to_dl();
    // SAFETY: GIL held.
    unsafe { pair(n, i64::from(d.device_type.0), i64::from(d.device_id)) }
}

unsafe extern "C" fn t_alias(obj: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let (py, _, t) = this!(obj);
    produce(py, "dlb_tensor_alias", || Ok(t.alias()))
}

fn nbytes(t: &Tensor) -> usize {
    t.numel().saturating_mul(t.dtype().itemsize())
}

unsafe extern "C" fn t_copy(obj: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    produce_released(py, n, "dlb_tensor_copy", nbytes(t), || t.copy())
}

unsafe extern "C" fn t_cpu(obj: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    if t.device().kind == DeviceKind::Cpu {
        return produce(py, "dlb_tensor_alias", || Ok(t.alias()));
    }
    produce_released(py, n, "dlb_tensor_to_device", nbytes(t), || t.to_device(Device::CPU))
}

unsafe extern "C" fn t_shares_memory(obj: *mut PyObject, other: *mut PyObject) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    if !is_tensor(n, other) {
        // SAFETY: GIL held; `other` is live.
        let name = unsafe { type_name(n, other) };
        return py.fail(
            "shares_memory",
            WRONG_TYPE,
            &format!("shares_memory expects a dlbridge.Tensor, not {name}"),
        );
    }
    // SAFETY: checked to be an instance of the base type.
    let Some(u) = (unsafe { tensor_of(py, n, other) }) else { return std::ptr::null_mut() };
    // SAFETY: GIL held.
    unsafe { (n.bool_from_long)(i64::from(t.shares_memory(u))) }
}

/// `type(obj).__name__`, for messages.
///
/// # Safety
/// GIL held; `obj` live.
unsafe fn type_name(n: &Native, obj: *mut PyObject) -> String {
    // SAFETY: per the function contract.
    unsafe { type_name_of_type(n, type_of(obj)) }
}

/// `str(obj)` as a Rust string (None, with the error cleared, when it fails; `obj` may be NULL).
///
/// # Safety
/// GIL held.
unsafe fn text_of(n: &Native, obj: *mut PyObject) -> Option<String> {
    if obj.is_null() {
        // SAFETY: GIL held.
        unsafe { (n.err_clear)() };
        return None;
    }
    // SAFETY: GIL held; each new reference is released; PyBytes_AsString's buffer lives as long
    // as the bytes object, which is released only after it was copied.
    unsafe {
        let s = (n.object_str)(obj);
        let bytes = if s.is_null() { s } else { (n.unicode_as_utf8_string)(s) };
        let text = if bytes.is_null() {
            None
        } else {
            let p = (n.bytes_as_string)(bytes);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        for o in [s, bytes] {
            if !o.is_null() {
                (n.decref)(o);
            }
        }
        if text.is_none() {
            (n.err_clear)();
        }
        text
    }
}

// -- argument parsing ------------------------------------------------------------------------

/// Sorts fastcall arguments into `names`' slots (NULL = not given): at most `positional` of them
/// by position, any by keyword. TypeError (raised) for a wrong call.
///
/// # Safety
/// CPython's fastcall arguments: `args` holds `nargs` objects, then one per name in `kwnames`.
#[allow(clippy::too_many_arguments, reason = "a fastcall's three arguments, and what to sort them into")]
unsafe fn parse<const N: usize>(
    py: &Api,
    n: &Native,
    function: &str,
    names: [&CStr; N],
    positional: usize,
    args: *const *mut PyObject,
    nargs: isize,
    kwnames: *mut PyObject,
) -> Option<[*mut PyObject; N]> {
    let mut out = [std::ptr::null_mut(); N];
    let nargs = nargs as usize;
    if nargs > positional {
        py.fail::<c_void>(
            function,
            WRONG_TYPE,
            &format!("{function}() takes at most {positional} positional arguments ({nargs} given)"),
        );
        return None;
    }
    for (i, slot) in out.iter_mut().enumerate().take(nargs) {
        // SAFETY: per the function contract.
        *slot = unsafe { *args.add(i) };
    }
    // SAFETY: GIL held; kwnames is NULL or a tuple of str.
    let nkw = if kwnames.is_null() { 0 } else { unsafe { (n.tuple_size)(kwnames) } };
    for k in 0..nkw {
        // SAFETY: as above; borrowed items of a live tuple.
        let key = unsafe { (n.tuple_get_item)(kwnames, k) };
        // SAFETY: the keys are str objects; CompareWithASCIIString does not fail.
        let found =
            names.iter().position(|name| unsafe { (n.unicode_compare_ascii)(key, name.as_ptr()) } == 0);
        match found {
            Some(i) if out[i].is_null() => {
                // SAFETY: the keyword values follow the positional ones.
                out[i] = unsafe { *args.add(nargs + k as usize) };
            }
            Some(i) => {
                py.fail::<c_void>(
                    function,
                    WRONG_TYPE,
                    &format!(
                        "{function}() got multiple values for argument '{}'",
                        names[i].to_string_lossy()
                    ),
                );
                return None;
            }
            None => {
                // SAFETY: GIL held; `key` is live.
                let key = unsafe { text_of(n, key) }.unwrap_or_default();
                py.fail::<c_void>(
                    function,
                    WRONG_TYPE,
                    &format!("{function}() got an unexpected keyword argument '{key}'"),
                );
                return None;
            }
        }
    }
    Some(out)
}

fn is_none(py: &Api, o: *mut PyObject) -> bool {
    o.is_null() || o == py.none
}

/// An exact int that fits in i64 (anything else, or an overflow, gives None, error cleared:
/// the caller then takes the fallback, which explains).
fn exact_int(n: &Native, o: *mut PyObject) -> Option<i64> {
    // SAFETY: GIL held; `o` is live.
    if o.is_null() || unsafe { type_of(o) } != n.int_type {
        return None;
    }
    // SAFETY: GIL held; an int.
    let v = unsafe { (n.long_as_long_long)(o) };
    // -1 is also the error value: an int beyond i64 leaves OverflowError set, which must not
    // outlive this call (CPython would report a result returned with an exception set).
    // SAFETY: GIL held.
    if v == -1 && API.get().is_some_and(|py| unsafe { !(py.err_occurred)().is_null() }) {
        // SAFETY: GIL held.
        unsafe { (n.err_clear)() };
        return None;
    }
    Some(v)
}

/// A shape or strides read from Python: on the stack up to `Dims::INLINE` entries (the usual
/// case: no allocation on the hot path), else on the heap.
enum Dims {
    Inline([i64; Dims::INLINE], usize),
    Heap(Vec<i64>),
}

impl Dims {
    const INLINE: usize = 8;
}

impl std::ops::Deref for Dims {
    type Target = [i64];

    fn deref(&self) -> &[i64] {
        match self {
            Dims::Inline(values, len) => &values[..*len],
            Dims::Heap(values) => values,
        }
    }
}

/// A shape or strides given as an exact tuple of exact ints, or one exact int.
fn dims_of(n: &Native, o: *mut PyObject) -> Option<Dims> {
    if let Some(v) = exact_int(n, o) {
        let mut values = [0; Dims::INLINE];
        values[0] = v;
        return Some(Dims::Inline(values, 1));
    }
    // SAFETY: GIL held; `o` live.
    if unsafe { type_of(o) } != n.tuple_type {
        return None;
    }
    // SAFETY: an exact tuple; borrowed items.
    let len = unsafe { (n.tuple_size)(o) };
    // SAFETY: as above, `i` below its length.
    let item = |i: isize| exact_int(n, unsafe { (n.tuple_get_item)(o, i) });
    let len_usize = usize::try_from(len).ok()?;
    if len_usize <= Dims::INLINE {
        let mut values = [0; Dims::INLINE];
        for (i, slot) in values.iter_mut().enumerate().take(len_usize) {
            *slot = item(i as isize)?;
        }
        return Some(Dims::Inline(values, len_usize));
    }
    (0..len).map(item).collect::<Option<Vec<i64>>>().map(Dims::Heap)
}

fn is_str(n: &Native, o: *mut PyObject, s: &CStr) -> bool {
    // SAFETY: GIL held; an exact str compares without failing.
    !o.is_null()
        && unsafe { type_of(o) } == n.str_type
        && unsafe { (n.unicode_compare_ascii)(o, s.as_ptr()) } == 0
}

/// A dtype given as one of the contract's names (an exact str).
fn dtype_of(n: &Native, o: *mut PyObject) -> Option<DType> {
    const NAMES: [(&CStr, DType); 15] = [
        (c"float32", DType::F32),
        (c"float64", DType::F64),
        (c"int64", DType::I64),
        (c"int32", DType::I32),
        (c"bool", DType::BOOL),
        (c"int8", DType::I8),
        (c"int16", DType::I16),
        (c"uint8", DType::U8),
        (c"uint16", DType::U16),
        (c"uint32", DType::U32),
        (c"uint64", DType::U64),
        (c"float16", DType::F16),
        (c"bfloat16", DType::BF16),
        (c"complex64", DType::C64),
        (c"complex128", DType::C128),
    ];
    NAMES.iter().find(|(name, _)| is_str(n, o, name)).map(|&(_, d)| d)
}

/// A device given as "cpu" or "cuda" (the rest takes the fallback).
fn device_of(n: &Native, o: *mut PyObject) -> Option<Device> {
    if is_str(n, o, c"cpu") {
        Some(Device::CPU)
    } else if is_str(n, o, c"cuda") {
        Some(Device::cuda(0))
    } else {
        None
    }
}

unsafe extern "C" fn t_view(
    obj: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
    kw: *mut PyObject,
) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    // SAFETY: CPython's fastcall arguments.
    let Some([shape, strides, offset]) =
        (unsafe { parse(py, n, "view", [c"shape", c"strides", c"offset"], 3, args, nargs, kw) })
    else {
        return std::ptr::null_mut();
    };
    if shape.is_null() {
        return py.fail("view", WRONG_TYPE, "view() missing required argument 'shape'");
    }
    let fast_shape = dims_of(n, shape);
    let fast_strides = if is_none(py, strides) { Some(None) } else { dims_of(n, strides).map(Some) };
    let fast_offset = if offset.is_null() { Some(0) } else { exact_int(n, offset) };
    match (fast_shape, fast_strides, fast_offset) {
        (Some(shape), Some(strides), Some(offset))
            if strides.as_ref().is_none_or(|s| s.len() == shape.len()) =>
        {
            produce(py, "dlb_tensor_view", || t.view(&shape, strides.as_deref(), offset))
        }
        _ => fallback(py, n, FB_VIEW, &[obj, shape, strides, offset]),
    }
}

unsafe extern "C" fn t_astype(
    obj: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
    kw: *mut PyObject,
) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    // SAFETY: CPython's fastcall arguments.
    let Some([dtype]) = (unsafe { parse(py, n, "astype", [c"dtype"], 1, args, nargs, kw) }) else {
        return std::ptr::null_mut();
    };
    match dtype_of(n, dtype) {
        Some(d) => {
            let mut h = std::ptr::null_mut();
            let status = boundary("dlb_tensor_cast", || {
                h = dlb_tensor::into_raw(t.cast(d)?)?;
                Ok(())
            });
            match status {
                dlb_status::DLB_OK => wrap(py, h),
                // A conversion dlbridge does not do (complex to real): TypeError, as NumPy.
                dlb_status::DLB_ERR_UNSUPPORTED => py.raise(WRONG_TYPE),
                other => py.raise(other as usize),
            }
        }
        None if dtype.is_null() => {
            py.fail("astype", WRONG_TYPE, "astype() missing required argument 'dtype'")
        }
        None => fallback(py, n, FB_ASTYPE, &[obj, dtype]),
    }
}

unsafe extern "C" fn t_to(
    obj: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
    kw: *mut PyObject,
) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    // SAFETY: CPython's fastcall arguments.
    let Some([device]) = (unsafe { parse(py, n, "to", [c"device"], 1, args, nargs, kw) }) else {
        return std::ptr::null_mut();
    };
    match device_of(n, device) {
        Some(d) if d == t.device() => produce(py, "dlb_tensor_alias", || Ok(t.alias())),
        Some(d) => produce_released(py, n, "dlb_tensor_to_device", nbytes(t), || t.to_device(d)),
        None if device.is_null() => py.fail("to", WRONG_TYPE, "to() missing required argument 'device'"),
        None => fallback(py, n, FB_TO, &[obj, device]),
    }
}

unsafe extern "C" fn t_numpy(obj: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    let f = NUMPY_FROM_DLPACK.load(Ordering::Relaxed);
    if f.is_null() || !t.device().is_host_accessible() || t.dtype() == DType::BF16 {
        return fallback(py, n, FB_NUMPY, &[obj]);
    }
    // SAFETY: GIL held; `f` is NumPy's from_dlpack, kept for the process.
    unsafe { call_with(py, n, f, &[obj]) }
}

unsafe extern "C" fn t_dlpack(
    obj: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
    kw: *mut PyObject,
) -> *mut PyObject {
    let (py, n, t) = this!(obj);
    // SAFETY: CPython's fastcall arguments.
    let Some([stream, max_version, dl_device, copy]) = (unsafe {
        parse(py, n, "__dlpack__", [c"stream", c"max_version", c"dl_device", c"copy"], 0, args, nargs, kw)
    }) else {
        return std::ptr::null_mut();
    };
    // copy: None, True or False (bool objects are the two ints of type bool).
    let copy_flag = if is_none(py, copy) {
        Some(false)
    } else {
        // SAFETY: GIL held; a live object.
        let is_bool = unsafe { (n.type_is_subtype)(type_of(copy), type_of(py_true(n))) } != 0;
        is_bool.then(|| exact_bool(n, copy))
    };
    let versioned = if is_none(py, max_version) {
        Some(false)
    // SAFETY: GIL held; `max_version` live.
    } else if unsafe { type_of(max_version) } == n.tuple_type && unsafe { (n.tuple_size)(max_version) } == 2 {
        // SAFETY: an exact 2-tuple: borrowed item 0.
        exact_int(n, unsafe { (n.tuple_get_item)(max_version, 0) }).map(|major| major >= 1)
    } else {
        None
    };
    match (copy_flag, versioned) {
        (Some(copy), Some(versioned)) if is_none(py, stream) && is_none(py, dl_device) => {
            let mut capsule = std::ptr::null_mut();
            py.call("__dlpack__", || {
                capsule = super::export_capsule(py, t, versioned, copy, false)?;
                Ok(())
            });
            capsule
        }
        _ => fallback(py, n, FB_DLPACK, &[obj, stream, max_version, dl_device, copy]),
    }
}

/// `True`, found once through bool's type (from `PyBool_FromLong`).
fn py_true(n: &Native) -> *mut PyObject {
    static TRUE: AtomicPtr<PyObject> = AtomicPtr::new(std::ptr::null_mut());
    let t = TRUE.load(Ordering::Relaxed);
    if !t.is_null() {
        return t;
    }
    // SAFETY: GIL held; True is immortal, so the reference may be kept without counting.
    let t = unsafe { (n.bool_from_long)(1) };
    TRUE.store(t, Ordering::Relaxed);
    t
}

fn exact_bool(n: &Native, o: *mut PyObject) -> bool {
    o == py_true(n)
}

// ---------------------------------------------------------------------------------------------
// The package's functions: from_dlpack, empty, zeros, and its setup
// ---------------------------------------------------------------------------------------------

/// `from_dlpack(obj, *, copy=None, device=None)`: the common imports natively (a dlbridge
/// tensor, a capsule, a type whose route is known), the rest through the fallback.
unsafe extern "C" fn f_from_dlpack(
    _: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
    kw: *mut PyObject,
) -> *mut PyObject {
    let Some((py, n)) = native() else { return std::ptr::null_mut() };
    // SAFETY: CPython's fastcall arguments.
    let Some([obj, copy, device]) =
        (unsafe { parse(py, n, "from_dlpack", [c"obj", c"copy", c"device"], 1, args, nargs, kw) })
    else {
        return std::ptr::null_mut();
    };
    if obj.is_null() {
        return py.fail("from_dlpack", WRONG_TYPE, "from_dlpack() missing required argument 'obj'");
    }
    if !is_none(py, copy) || !is_none(py, device) {
        return fallback(py, n, FB_FROM_DLPACK, &[obj, copy, device]);
    }
    // SAFETY: GIL held; `obj` live.
    let tp = unsafe { type_of(obj) };
    if is_tensor(n, obj) {
        // SAFETY: an instance of the base type.
        let Some(t) = (unsafe { tensor_of(py, n, obj) }) else { return std::ptr::null_mut() };
        return produce(py, "dlb_tensor_alias", || Ok(t.alias()));
    }
    if tp == n.capsule_type {
        return match super::import_capsule(py, obj) {
            Some(h) => wrap(py, h),
            None => std::ptr::null_mut(),
        };
    }
    let Some(s) = setup() else { return fallback(py, n, FB_FROM_DLPACK, &[obj, copy, device]) };
    // SAFETY: GIL held; a dict keyed by types; a borrowed value or NULL (no exception).
    let route = unsafe { (n.dict_get_item)(s.routes, tp) };
    if route.is_null() {
        return fallback(py, n, FB_FROM_DLPACK, &[obj, copy, device]);
    }
    if route != py_true(n) {
        // An exchange table: read it for host tensors; None means "use __dlpack__".
        return match super::import_exchange(py, route, obj) {
            Ok(Some(h)) => wrap(py, h),
            Ok(None) => fallback(py, n, FB_FROM_DLPACK, &[obj, copy, device]),
            Err(()) => std::ptr::null_mut(),
        };
    }
    // A producer whose __dlpack__ took max_version and handed out host memory before: ask it
    // directly. (No __dlpack_device__ call: for a CUDA tensor, stream=None is the legacy default
    // stream, which is what the fallback asks for by name.)
    // SAFETY: GIL held; new references released below.
    unsafe {
        let capsule = if let Some(call_method) = n.vectorcall_method {
            // obj.__dlpack__(max_version=(1, 3)) without a bound method or a kwargs dict.
            let args = [obj, n.max_version];
            call_method(n.dunder, args.as_ptr(), 1, n.max_version_name)
        } else {
            let dunder = (n.object_get_attr)(obj, n.dunder);
            if dunder.is_null() {
                (n.err_clear)();
                return fallback(py, n, FB_FROM_DLPACK, &[obj, copy, device]);
            }
            let capsule = (n.object_call)(dunder, n.empty_tuple, n.dunder_kwargs);
            (n.decref)(dunder);
            capsule
        };
        if capsule.is_null() {
            // No __dlpack__ any more (a type that changed), or one without max_version.
            if (n.err_exception_matches)(py.exceptions[WRONG_TYPE]) != 0
                || (n.err_exception_matches)(n.attribute_error) != 0
            {
                (n.err_clear)();
                return fallback(py, n, FB_FROM_DLPACK, &[obj, copy, device]);
            }
            return capsule;
        }
        let h = super::import_capsule(py, capsule);
        (n.decref)(capsule);
        match h {
            Some(h) => wrap(py, h),
            None => std::ptr::null_mut(),
        }
    }
}

/// `empty(shape, dtype="float32", device="cpu", *, shared=False)` and `zeros(...)`.
fn create(args: *const *mut PyObject, nargs: isize, kw: *mut PyObject, zero: bool) -> *mut PyObject {
    let Some((py, n)) = native() else { return std::ptr::null_mut() };
    let function = if zero { "zeros" } else { "empty" };
    // SAFETY: CPython's fastcall arguments.
    let Some([shape, dtype, device, shared]) =
        (unsafe { parse(py, n, function, [c"shape", c"dtype", c"device", c"shared"], 3, args, nargs, kw) })
    else {
        return std::ptr::null_mut();
    };
    if shape.is_null() {
        return py.fail(function, WRONG_TYPE, &format!("{function}() missing required argument 'shape'"));
    }
    let d = if dtype.is_null() { Some(DType::F32) } else { dtype_of(n, dtype) };
    let dev = if device.is_null() { Some(Device::CPU) } else { device_of(n, device) };
    let plain = shared.is_null() || is_false(n, shared);
    match (dims_of(n, shape), d, dev) {
        (Some(shape), Some(d), Some(dev)) if plain => {
            let name = if zero { "dlb_tensor_zeros" } else { "dlb_tensor_empty" };
            // Small CPU tensors (up to 4 KiB) are one allocation, cleared in place when zeroed;
            // larger zeroed ones come from calloc, whose fresh pages are zero already.
            produce(py, name, || Tensor::empty(&shape, d, dev, zero))
        }
        _ => {
            // SAFETY: GIL held.
            let z = unsafe { (n.bool_from_long)(i64::from(zero)) };
            fallback(py, n, FB_CREATE, &[shape, dtype, device, z, shared])
        }
    }
}

fn is_false(n: &Native, o: *mut PyObject) -> bool {
    static FALSE: AtomicPtr<PyObject> = AtomicPtr::new(std::ptr::null_mut());
    let mut f = FALSE.load(Ordering::Relaxed);
    if f.is_null() {
        // SAFETY: GIL held; False is immortal.
        f = unsafe { (n.bool_from_long)(0) };
        FALSE.store(f, Ordering::Relaxed);
    }
    o == f
}

unsafe extern "C" fn f_empty(
    _: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
    kw: *mut PyObject,
) -> *mut PyObject {
    create(args, nargs, kw, false)
}

unsafe extern "C" fn f_zeros(
    _: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
    kw: *mut PyObject,
) -> *mut PyObject {
    create(args, nargs, kw, true)
}

/// `setup(cls, routes, fallbacks)`: the Python class natively made tensors get (a subclass of
/// the base), the routes dict and the tuple of fallbacks. Once per process.
unsafe extern "C" fn f_setup(
    _: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
    kw: *mut PyObject,
) -> *mut PyObject {
    let Some((py, n)) = native() else { return std::ptr::null_mut() };
    // SAFETY: CPython's fastcall arguments.
    let Some([cls, routes, fallbacks]) =
        (unsafe { parse(py, n, "setup", [c"cls", c"routes", c"fallbacks"], 3, args, nargs, kw) })
    else {
        return std::ptr::null_mut();
    };
    if SETUP.get().is_some() {
        return py.none();
    }
    let bad = |what: &str| py.fail("setup", WRONG_TYPE, what);
    // SAFETY: GIL held; the objects are live.
    if cls.is_null() || unsafe { (n.type_is_subtype)(cls, n.base) } == 0 {
        return bad("cls must be a subclass of the native base");
    }
    // SAFETY: as above.
    let is_tuple = !fallbacks.is_null() && unsafe { type_of(fallbacks) } == n.tuple_type;
    // SAFETY: an exact tuple.
    if !is_tuple || unsafe { (n.tuple_size)(fallbacks) } != FALLBACKS as isize {
        return bad("fallbacks must be a tuple of 7 functions and the missing-argument marker");
    }
    if routes.is_null() {
        return bad("routes must be a dict");
    }
    // SAFETY: a heap type (a Python class): GetSlot works; tp_alloc is always set.
    let alloc = unsafe { (n.type_get_slot)(cls, PY_TP_ALLOC) };
    if alloc.is_null() {
        return bad("the class has no tp_alloc");
    }
    let mut fb = [std::ptr::null_mut(); FALLBACKS];
    for (i, f) in fb.iter_mut().enumerate() {
        // SAFETY: an exact tuple of that size; the reference taken is kept for the process.
        unsafe {
            *f = (n.tuple_get_item)(fallbacks, i as isize);
            (py.incref)(*f);
        }
    }
    // SAFETY: as above, kept for the process.
    unsafe {
        (py.incref)(cls);
        (py.incref)(routes);
    }
    let _ = SETUP.set(Setup {
        cls,
        // SAFETY: tp_alloc's signature.
        alloc: unsafe {
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut PyObject, isize) -> *mut PyObject>(
                alloc,
            )
        },
        routes,
        fallbacks: fb,
    });
    py.none()
}

/// `set_numpy(np.from_dlpack)`: what `Tensor.numpy()` calls (the fallback imports NumPy first).
unsafe extern "C" fn f_set_numpy(_: *mut PyObject, f: *mut PyObject) -> *mut PyObject {
    let Some(py) = API.get() else { return std::ptr::null_mut() };
    if NUMPY_FROM_DLPACK.load(Ordering::Relaxed).is_null() {
        // SAFETY: GIL held; kept for the process.
        unsafe { (py.incref)(f) };
        NUMPY_FROM_DLPACK.store(f, Ordering::Relaxed);
    }
    py.none()
}

/// `wrap(handle)`: a Tensor owning a handle (an int; 0 raises ValueError).
unsafe extern "C" fn f_wrap(_: *mut PyObject, h: *mut PyObject) -> *mut PyObject {
    let Some(py) = API.get() else { return std::ptr::null_mut() };
    let Some(h) = py.pointer(h) else { return std::ptr::null_mut() };
    if h.is_null() {
        return py.fail("from_handle", dlb_status::DLB_ERR_INVALID_ARGUMENT as usize, "the handle is NULL");
    }
    wrap(py, h.cast())
}

/// `exchange_api()`: the capsule for `Tensor.__dlpack_c_exchange_api__`.
unsafe extern "C" fn f_exchange_api(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let Some((py, n)) = native() else { return std::ptr::null_mut() };
    // SAFETY: GIL held; kept for the process.
    unsafe { (py.incref)(n.exchange_capsule) };
    n.exchange_capsule
}

/// The builtins the package asks for by name (through `dlb_py_function`).
struct Builtins([MethodDef; 7]);
// SAFETY: immutable; CPython only reads it.
unsafe impl Sync for Builtins {}

static BUILTINS: Builtins = Builtins([
    MethodDef {
        name: c"from_dlpack".as_ptr(),
        meth: f_from_dlpack as FastCallKw as *mut c_void,
        flags: METH_FASTCALL_KW,
        doc: c"from_dlpack(obj, *, copy=None, device=None)\n--\n\nImports anything that speaks DLPack: an object with __dlpack__ (NumPy, PyTorch, JAX, CuPy, tvm-ffi, pyarrow, dlbridge), a DLPack capsule (legacy or versioned, consumed here) or a tf.Tensor. Shares memory whenever the producer allows; copy=True always copies; copy=False shares or raises BufferError. device moves the result there (a copy, so not with copy=False).".as_ptr(),
    },
    MethodDef {
        name: c"empty".as_ptr(),
        meth: f_empty as FastCallKw as *mut c_void,
        flags: METH_FASTCALL_KW,
        doc: c"empty(shape, dtype='float32', device='cpu', *, shared=False)\n--\n\nA new tensor with uninitialised memory (256-byte aligned).".as_ptr(),
    },
    MethodDef {
        name: c"zeros".as_ptr(),
        meth: f_zeros as FastCallKw as *mut c_void,
        flags: METH_FASTCALL_KW,
        doc: c"zeros(shape, dtype='float32', device='cpu', *, shared=False)\n--\n\nA new zero-filled tensor (256-byte aligned).".as_ptr(),
    },
    MethodDef {
        name: c"setup".as_ptr(),
        meth: f_setup as FastCallKw as *mut c_void,
        flags: METH_FASTCALL_KW,
        doc: c"setup(cls, routes, fallbacks)".as_ptr(),
    },
    MethodDef { name: c"set_numpy".as_ptr(), meth: f_set_numpy as OneArg as *mut c_void, flags: METH_O, doc: c"set_numpy(np.from_dlpack)".as_ptr() },
    MethodDef { name: c"wrap".as_ptr(), meth: f_wrap as OneArg as *mut c_void, flags: METH_O, doc: c"wrap(handle): a Tensor owning the handle".as_ptr() },
    MethodDef {
        name: c"exchange_api".as_ptr(),
        meth: f_exchange_api as NoArgs as *mut c_void,
        flags: METH_NOARGS,
        doc: c"exchange_api(): the DLPack C exchange table, as a capsule".as_ptr(),
    },
]);

/// A new builtin for one of the functions above, by name (None for another name); NULL with an
/// exception set before `native_init`.
pub(super) fn function(wanted: Option<&CStr>) -> Option<*mut PyObject> {
    // SAFETY: our names are static C strings.
    let def = BUILTINS.0.iter().find(|def| Some(unsafe { CStr::from_ptr(def.name) }) == wanted)?;
    let Some((py, _)) = native() else { return Some(std::ptr::null_mut()) };
    // SAFETY: GIL held; the definition is static, with the layout of PyMethodDef.
    Some(unsafe {
        (py.cfunction_new_ex)(
            (def as *const MethodDef).cast_mut().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The exchange table we publish (DLPack 1.3)
// ---------------------------------------------------------------------------------------------

type SetError = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char);

struct Table(ExchangeApi);
// SAFETY: immutable; read by any thread.
unsafe impl Sync for Table {}

static EXCHANGE_TABLE: Table = Table(ExchangeApi {
    version: DLPackVersion { major: 1, minor: 3 },
    prev_api: std::ptr::null_mut(),
    managed_tensor_allocator: x_allocate
        as unsafe extern "C" fn(
            *mut DLTensor,
            *mut *mut DLManagedTensorVersioned,
            *mut c_void,
            Option<SetError>,
        ) -> c_int as *mut c_void,
    managed_tensor_from_py_object_no_sync: Some(x_from_py),
    managed_tensor_to_py_object_no_sync: x_to_py
        as unsafe extern "C" fn(*mut DLManagedTensorVersioned, *mut *mut PyObject) -> c_int
        as *mut c_void,
    dltensor_from_py_object_no_sync: x_dltensor_from_py
        as unsafe extern "C" fn(*mut PyObject, *mut DLTensor) -> c_int
        as *mut c_void,
    current_work_stream: x_current_stream as unsafe extern "C" fn(c_int, i32, *mut *mut c_void) -> c_int
        as *mut c_void,
});

/// The tensor of a Python object handed to the table; TypeError (raised) for another type.
///
/// # Safety
/// GIL held; `obj` live.
unsafe fn table_tensor<'a>(obj: *mut PyObject) -> Option<&'a dlb_tensor> {
    let (py, n) = native()?;
    if obj.is_null() || !is_tensor(n, obj) {
        py.fail::<c_void>("__dlpack_c_exchange_api__", WRONG_TYPE, "the object is not a dlbridge.Tensor");
        return None;
    }
    // SAFETY: an instance of the base type.
    let h = unsafe { *slot(n, obj) };
    if h.is_null() {
        py.fail::<c_void>(
            "__dlpack_c_exchange_api__",
            dlb_status::DLB_ERR_INVALID_ARGUMENT as usize,
            "the tensor has been freed",
        );
        return None;
    }
    // SAFETY: live while `obj` is.
    Some(unsafe { &*h })
}

/// `managed_tensor_from_py_object_no_sync`: a shared versioned export (as `__dlpack__` with
/// max_version (1, x) makes). Every dlbridge operation is complete when it returns, so there is
/// nothing to synchronise.
unsafe extern "C" fn x_from_py(obj: *mut PyObject, out: *mut *mut DLManagedTensorVersioned) -> c_int {
    // SAFETY: the consumer holds the GIL and a reference to `obj`.
    let Some(h) = (unsafe { table_tensor(obj) }) else { return -1 };
    let Some(py) = API.get() else { return -1 };
    if out.is_null() {
        py.fail::<c_void>(
            "__dlpack_c_exchange_api__",
            dlb_status::DLB_ERR_INVALID_ARGUMENT as usize,
            "out is NULL",
        );
        return -1;
    }
    let mut mt = std::ptr::null_mut();
    if !py.call("__dlpack__", || {
        mt = export::<DLManagedTensorVersioned>(h.tensor(), false)?;
        Ok(())
    }) {
        return -1;
    }
    // SAFETY: checked non-NULL; the consumer now owns the export.
    unsafe { *out = mt };
    0
}

/// `dltensor_from_py_object_no_sync`: a borrowed view, valid while `obj` lives.
unsafe extern "C" fn x_dltensor_from_py(obj: *mut PyObject, out: *mut DLTensor) -> c_int {
    // SAFETY: the consumer holds the GIL and a reference to `obj`.
    let Some(h) = (unsafe { table_tensor(obj) }) else { return -1 };
    if out.is_null() {
        return -1;
    }
    // SAFETY: `out` points to a DLTensor to fill; the shape and strides point into the handle,
    // which lives as long as `obj`.
    unsafe { out.write(std::ptr::read(h.dltensor())) };
    0
}

/// `managed_tensor_to_py_object_no_sync`: takes ownership of `mt` and returns a new Tensor.
unsafe extern "C" fn x_to_py(mt: *mut DLManagedTensorVersioned, out: *mut *mut PyObject) -> c_int {
    let Some(py) = API.get() else {
        // SAFETY: ours to release, whatever happens.
        unsafe { release(mt) };
        return -1;
    };
    if out.is_null() {
        // SAFETY: ours to release: nothing could be handed back.
        unsafe { release(mt) };
        py.fail::<c_void>(
            "__dlpack_c_exchange_api__",
            dlb_status::DLB_ERR_INVALID_ARGUMENT as usize,
            "out is NULL",
        );
        return -1;
    }
    let mut h = std::ptr::null_mut();
    if !py.call("from_dlpack", || {
        // SAFETY: an owned versioned managed tensor, consumed by `import` whatever happens.
        h = dlb_tensor::into_raw(unsafe { import(mt) }?)?;
        Ok(())
    }) {
        return -1;
    }
    let obj = wrap(py, h);
    if obj.is_null() {
        return -1;
    }
    // SAFETY: checked non-NULL.
    unsafe { *out = obj };
    0
}

/// `managed_tensor_allocator`: a new tensor shaped like the prototype (dtype, shape, device),
/// exported; errors go to `set_error` (no Python needed).
unsafe extern "C" fn x_allocate(
    prototype: *mut DLTensor,
    out: *mut *mut DLManagedTensorVersioned,
    ctx: *mut c_void,
    set_error: Option<SetError>,
) -> c_int {
    let mut mt = std::ptr::null_mut();
    let status = boundary("managed_tensor_allocator", || {
        // SAFETY: the caller passes a live prototype.
        let p = unsafe { prototype.as_ref() }.ok_or_else(|| Error::invalid("prototype is NULL"))?;
        // SAFETY: `shape` holds `ndim` entries (DLPack's contract for a prototype).
        let shape = unsafe { crate::ffi::handle::dims(p.shape, p.ndim, "shape", false) }?.unwrap_or(&[]);
        let t = Tensor::empty(shape, DType::from_dl(p.dtype)?, Device::from_dl(p.device)?, false)?;
        mt = export::<DLManagedTensorVersioned>(&t, false)?;
        Ok(())
    });
    if status == dlb_status::DLB_OK && !out.is_null() {
        // SAFETY: checked non-NULL.
        unsafe { *out = mt };
        return 0;
    }
    if !mt.is_null() {
        // SAFETY: not handed out.
        unsafe { release(mt) };
    }
    if let Some(set_error) = set_error {
        let kind = if status == dlb_status::DLB_ERR_OUT_OF_MEMORY { c"MemoryError" } else { c"RuntimeError" };
        // SAFETY: the caller's callback, with NUL-terminated strings alive for the call.
        unsafe { set_error(ctx, kind.as_ptr(), crate::ffi::error::last_error_ptr()) };
    }
    -1
}

/// `current_work_stream`: NULL, the default stream: dlbridge's work is complete when each call
/// returns, so any stream sees it.
unsafe extern "C" fn x_current_stream(_: c_int, _: i32, out: *mut *mut c_void) -> c_int {
    if !out.is_null() {
        // SAFETY: checked non-NULL.
        unsafe { *out = std::ptr::null_mut() };
    }
    0
}

/// Turns the exception a producer's exchange table raised into a BufferError with one line
/// (PyTorch's carry a C++ backtrace), as `np.from_dlpack` refuses what it cannot import.
/// MemoryError stays as it is.
pub(super) fn refusal(py: &Api) {
    let Some(n) = NATIVE.get() else { return };
    // SAFETY: GIL held; an exception is set.
    if unsafe { (n.err_exception_matches)(n.memory_error) } != 0 {
        return;
    }
    let (mut t, mut v, mut tb) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: GIL held; Fetch hands over the three references, released below.
    let text = unsafe {
        (n.err_fetch)(&mut t, &mut v, &mut tb);
        let text = text_of(n, if v.is_null() { t } else { v });
        let name = if t.is_null() { None } else { Some(type_name_of_type(n, t)) };
        for o in [t, v, tb] {
            if !o.is_null() {
                (n.decref)(o);
            }
        }
        let line = text.unwrap_or_default().lines().next().unwrap_or("").trim().to_owned();
        match name {
            Some(name) if !line.is_empty() => format!("{name}: {line}"),
            Some(name) => name,
            None => line,
        }
    };
    py.fail::<c_void>(
        "from_dlpack",
        dlb_status::DLB_ERR_UNSUPPORTED as usize,
        &format!("the producer refused to export the tensor through its DLPack exchange table ({text})"),
    );
}

/// `tp.__name__` for a type object.
///
/// # Safety
/// GIL held; `tp` a live type.
unsafe fn type_name_of_type(n: &Native, tp: *mut PyObject) -> String {
    // SAFETY: per the function contract.
    unsafe {
        let key = string(n, "__name__");
        if key.is_null() {
            (n.err_clear)();
            return "?".into();
        }
        let value = (n.object_get_attr)(tp, key);
        (n.decref)(key);
        let text = text_of(n, value);
        if !value.is_null() {
            (n.decref)(value);
        }
        text.unwrap_or_else(|| "?".into())
    }
}

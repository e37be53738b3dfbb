"""The one place that talks to libdlbridge through ctypes.

It loads the library, declares the DLPack structs, gives every C function its signature (one
table: ctypes would otherwise assume ``int`` and truncate pointers) and turns a failed status into
an exception carrying ``dlb_last_error()``. Nothing else in the package calls ctypes.
"""

from __future__ import annotations

import ctypes
import datetime
import glob
import os
from ctypes import POINTER, c_bool, c_char_p, c_int32, c_int64, c_uint8, c_uint16, c_uint64
from ctypes import c_void_p, py_object

__all__ = ["lib", "pylib", "helpers", "native", "TensorBase", "raise_for", "STATUS_EXCEPTIONS", "DLDevice", "DLDataType", "DLTensor"]


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", c_void_p),
        ("device", DLDevice),
        ("ndim", c_int32),
        ("dtype", DLDataType),
        ("shape", POINTER(c_int64)),
        ("strides", POINTER(c_int64)),
        ("byte_offset", c_uint64),
    ]


# The exception for each dlb_status value (index = status), then TypeError for "wrong type".
# The library raises these itself from its Python helpers, so the two sides cannot disagree.
STATUS_EXCEPTIONS: tuple[type[BaseException], ...] = (
    RuntimeError,  # 0 DLB_OK: never raised
    ValueError,  # 1 DLB_ERR_INVALID_ARGUMENT
    BufferError,  # 2 DLB_ERR_UNSUPPORTED: the data cannot be described or exchanged
    MemoryError,  # 3 DLB_ERR_OUT_OF_MEMORY
    RuntimeError,  # 4 DLB_ERR_DEVICE
    BufferError,  # 5 DLB_ERR_READ_ONLY
    BufferError,  # 6 DLB_ERR_VERSION
    RuntimeError,  # 7 DLB_ERR_PANIC
    TypeError,  # 8 (not a status) a wrong type, e.g. a capsule that is not a DLPack capsule
)

_HERE = os.path.dirname(os.path.abspath(__file__))


def _find_library() -> str:
    override = os.environ.get("DLBRIDGE_LIBRARY")
    if override:
        if not os.path.isfile(override):
            raise ImportError(f"DLBRIDGE_LIBRARY={override!r} does not name a file")
        return override
    # The cdylib is installed as _libdlbridge.so, or (older builds) under an extension-module
    # name; the plain name wins when a stale file of the other kind is left beside it.
    plain = os.path.join(_HERE, "_libdlbridge.so")
    found = [plain] if os.path.isfile(plain) else sorted(glob.glob(os.path.join(_HERE, "_libdlbridge*.so")))
    if not found:
        raise ImportError(
            f"libdlbridge is not in {_HERE}: install the package with `pip install ./bindings/python` "
            "or point DLBRIDGE_LIBRARY at a build (target/release/libdlbridge.so)"
        )
    return found[0]


path = _find_library()
# Two views of the same library: `lib` releases the GIL during calls (copies can take long),
# `pylib` keeps it, for the helpers that touch Python objects (and for calls too short to be
# worth releasing it).
lib = ctypes.CDLL(path)
pylib = ctypes.PyDLL(path)

_tensor_p = c_void_p
_status = c_int32

# name: (restype, argtypes) — every C function of the contract, plus the Python helpers.
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "dlb_version": (c_char_p, []),
    "dlb_last_error": (c_char_p, []),
    "dlb_live_allocations": (c_int64, []),
    "dlb_cuda_device_count": (c_int32, []),
    "dlb_tensor_empty": (_status, [POINTER(c_int64), c_int32, DLDataType, DLDevice, POINTER(_tensor_p)]),
    "dlb_tensor_zeros": (_status, [POINTER(c_int64), c_int32, DLDataType, DLDevice, POINTER(_tensor_p)]),
    "dlb_tensor_from_data": (
        _status,
        [c_void_p, POINTER(c_int64), POINTER(c_int64), c_int32, DLDataType, DLDevice, c_bool,
         c_void_p, c_void_p, POINTER(_tensor_p)],
    ),
    "dlb_tensor_alias": (_status, [_tensor_p, POINTER(_tensor_p)]),
    "dlb_tensor_view": (
        _status, [_tensor_p, POINTER(c_int64), POINTER(c_int64), c_int32, c_int64, POINTER(_tensor_p)]
    ),
    "dlb_tensor_copy": (_status, [_tensor_p, POINTER(_tensor_p)]),
    "dlb_tensor_cast": (_status, [_tensor_p, DLDataType, POINTER(_tensor_p)]),
    "dlb_tensor_to_device": (_status, [_tensor_p, DLDevice, POINTER(_tensor_p)]),
    "dlb_tensor_free": (None, [_tensor_p]),
    "dlb_tensor_dltensor": (POINTER(DLTensor), [_tensor_p]),
    "dlb_tensor_is_read_only": (c_bool, [_tensor_p]),
    "dlb_tensor_is_contiguous": (c_bool, [_tensor_p]),
    "dlb_tensor_shares_memory": (c_bool, [_tensor_p, _tensor_p]),
    "dlb_tensor_data_mut": (_status, [_tensor_p, POINTER(c_void_p)]),
    "dlb_tensor_to_dlpack_versioned": (_status, [_tensor_p, c_bool, POINTER(c_void_p)]),
    "dlb_tensor_to_dlpack": (_status, [_tensor_p, POINTER(c_void_p)]),
    "dlb_tensor_from_dlpack_versioned": (_status, [c_void_p, POINTER(_tensor_p)]),
    "dlb_tensor_from_dlpack": (_status, [c_void_p, POINTER(_tensor_p)]),
    # Tensors across processes (_shared.py).
    "dlb_tensor_zeros_shared": (_status, [POINTER(c_int64), c_int32, DLDataType, POINTER(_tensor_p)]),
    "dlb_tensor_empty_shared": (_status, [POINTER(c_int64), c_int32, DLDataType, POINTER(_tensor_p)]),
    "dlb_tensor_is_shared": (c_bool, [_tensor_p]),
    "dlb_tensor_share": (_status, [_tensor_p, POINTER(_tensor_p)]),
    "dlb_tensor_to_ipc": (_status, [_tensor_p, c_void_p, POINTER(c_int32)]),
    "dlb_tensor_from_ipc": (_status, [c_void_p, ctypes.c_size_t, c_int32, POINTER(_tensor_p)]),
}

# The Python helpers (src/ffi/python/mod.rs), called with the GIL held. dlb_py_function returns a
# builtin function object (or NULL with an exception set, which ctypes.PyDLL raises).
_PY_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "dlb_py_init": (_status, [c_void_p]),
    "dlb_py_function": (py_object, [c_char_p]),
}


def last_error() -> str:
    message = lib.dlb_last_error()
    return message.decode("utf-8", "replace") if message else ""


def raise_for(status: int) -> None:
    """Raises the exception for a failed status, with this thread's dlb_last_error() as message."""
    raise STATUS_EXCEPTIONS[status if 0 < status < 8 else 7](last_error())


def _check(status: int, func: object, args: tuple) -> int:
    if status:
        raise_for(status)
    return status


def _declare(target: ctypes.CDLL, table: dict[str, tuple[object, list[object]]]) -> None:
    for name, (restype, argtypes) in table.items():
        fn = getattr(target, name)
        fn.restype = restype
        fn.argtypes = argtypes
        # dlb_cuda_device_count returns a count, not a status, in the same C type.
        if restype is _status and name not in ("dlb_py_init", "dlb_cuda_device_count"):
            fn.errcheck = _check


_declare(lib, _SIGNATURES)
_declare(pylib, _SIGNATURES)
_declare(pylib, _PY_SIGNATURES)


class _PyApi(ctypes.Structure):
    _fields_ = [
        ("capsule_new", c_void_p),
        ("capsule_is_valid", c_void_p),
        ("capsule_get_pointer", c_void_p),
        ("capsule_set_name", c_void_p),
        ("err_set_string", c_void_p),
        ("err_occurred", c_void_p),
        ("long_as_void_ptr", c_void_p),
        ("long_from_void_ptr", c_void_p),
        ("cfunction_new_ex", c_void_p),
        ("incref", c_void_p),
        ("none", c_void_p),
        ("exceptions", c_void_p * len(STATUS_EXCEPTIONS)),
    ]


def _init_python_helpers() -> None:
    api = ctypes.pythonapi

    def address(fn: object) -> int | None:
        return ctypes.cast(fn, c_void_p).value

    table = _PyApi(
        address(api.PyCapsule_New),
        address(api.PyCapsule_IsValid),
        address(api.PyCapsule_GetPointer),
        address(api.PyCapsule_SetName),
        address(api.PyErr_SetString),
        address(api.PyErr_Occurred),
        address(api.PyLong_AsVoidPtr),
        address(api.PyLong_FromVoidPtr),
        address(api.PyCFunction_NewEx),
        address(api.Py_IncRef),
        # id() is the object's address in CPython; None and the built-in exception types live
        # forever.
        id(None),
        (c_void_p * len(STATUS_EXCEPTIONS))(*(id(e) for e in STATUS_EXCEPTIONS)),
    )
    status = pylib.dlb_py_init(ctypes.byref(table))
    if status:
        raise ImportError(f"libdlbridge refused its Python helpers: {last_error()}")


_init_python_helpers()


# The CPython functions the native Tensor type uses (src/ffi/python/native.rs), all of the stable
# ABI, in the order of dlb_py_native_api.
_NATIVE_FUNCTIONS = (
    "PyType_FromSpec", "PyType_GetSlot", "PyType_IsSubtype", "Py_DecRef", "PyTuple_New",
    "PyTuple_SetItem", "PyTuple_Size", "PyTuple_GetItem", "PyLong_FromLongLong",
    "PyLong_AsLongLong", "PyUnicode_FromStringAndSize", "PyUnicode_InternFromString",
    "PyUnicode_CompareWithASCIIString", "PyBool_FromLong", "PyObject_GetAttr", "PyObject_Call",
    "PyObject_Str", "PyDict_New", "PyDict_GetItem", "PyDict_SetItem", "PyErr_ExceptionMatches",
    "PyErr_Clear", "PyErr_Fetch", "PyUnicode_AsUTF8String", "PyBytes_AsString",
    "PyEval_SaveThread", "PyEval_RestoreThread",
)


# Exported by CPython 3.9+ but in the limited API only from 3.12: used where present.
_OPTIONAL_FUNCTIONS = ("PyObject_Vectorcall", "PyObject_VectorcallMethod")


class _NativeApi(ctypes.Structure):
    _fields_ = [(name, c_void_p) for name in _NATIVE_FUNCTIONS + _OPTIONAL_FUNCTIONS] + [
        ("object_size", ctypes.c_ssize_t),
        ("type_offset", ctypes.c_ssize_t),
        ("int_type", c_void_p),
        ("str_type", c_void_p),
        ("tuple_type", c_void_p),
        ("capsule_type", c_void_p),
        ("memory_error", c_void_p),
        ("attribute_error", c_void_p),
    ]


def _type_offset() -> int:
    """Where ob_type sits in an object's header: measured, since a free-threaded build's header
    is longer than the stable ABI's {refcount, type}."""
    probe = object()
    for offset in range(0, object.__basicsize__, ctypes.sizeof(c_void_p)):
        if c_void_p.from_address(id(probe) + offset).value == id(object):
            return offset
    raise ImportError("dlbridge cannot find ob_type in this interpreter's object header")


def _init_native() -> type:
    """Builds the native base type of dlbridge.Tensor and returns it."""
    api = ctypes.pythonapi
    addresses = [ctypes.cast(getattr(api, name), c_void_p).value for name in _NATIVE_FUNCTIONS]
    addresses += [ctypes.cast(getattr(api, name), c_void_p).value if hasattr(api, name) else None
                  for name in _OPTIONAL_FUNCTIONS]
    # The objects live forever (built-in types); id() is their address in CPython.
    capsule_type = type(datetime.datetime_CAPI)
    table = _NativeApi(*addresses, object.__basicsize__, _type_offset(), id(int), id(str), id(tuple), id(capsule_type),
                       id(MemoryError), id(AttributeError))
    return pylib.dlb_py_function(b"native_init")(ctypes.addressof(table))


TensorBase: type = _init_native()


class _Native:
    """The package functions of src/ffi/python/native.rs, as builtins."""

    def __init__(self) -> None:
        get = pylib.dlb_py_function
        self.from_dlpack = get(b"from_dlpack")
        self.empty = get(b"empty")
        self.zeros = get(b"zeros")
        self.setup = get(b"setup")
        self.set_numpy = get(b"set_numpy")
        self.wrap = get(b"wrap")
        self.exchange_api = get(b"exchange_api")


native = _Native()


class _Helpers:
    """The builtins of src/ffi/python/mod.rs: each a plain Python call (METH_FASTCALL), no ctypes."""

    def __init__(self) -> None:
        get = pylib.dlb_py_function
        self.to_capsule = get(b"to_capsule")  # (handle, flags: 1 versioned | 2 copy) -> capsule
        self.from_capsule = get(b"from_capsule")  # (capsule) -> handle
        self.from_exchange_api = get(b"from_exchange_api")  # (table, obj) -> handle or None
        self.free = get(b"free")  # (handle) -> None


helpers = _Helpers()

version: str = lib.dlb_version().decode()

# Our own prototypes for the CPython calls made from Python (setting restype on
# ctypes.pythonapi's shared function objects would change them for everybody).
capsule_pointer = ctypes.PYFUNCTYPE(c_void_p, py_object, c_char_p)(("PyCapsule_GetPointer", ctypes.pythonapi))
capsule_name = ctypes.PYFUNCTYPE(c_char_p, py_object)(("PyCapsule_GetName", ctypes.pythonapi))
# datetime's C API is a capsule: the one capsule sure to exist.
CapsuleType: type = type(datetime.datetime_CAPI)

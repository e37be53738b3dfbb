"""Helpers shared by the test files: reading a DLPack capsule without consuming it, sample data
for every dtype of the contract, and a quick "the library still works" check.

The DLPack structs are declared here independently of the package (layouts from the DLPack 1.3
header), so that the tests check the package's exports instead of trusting its own declarations.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_char_p, c_int32, c_int64, c_uint8, c_uint16, c_uint32, c_uint64, c_void_p

import numpy as np

import dlbridge

READ_ONLY = 1 << 0
IS_COPIED = 1 << 1
CPU = (1, 0)

# The dtypes of the contract, in its order. NUMPY_DTYPES are those NumPy can exchange itself.
ALL_DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
]
NUMPY_DTYPES = [d for d in ALL_DTYPES if d != "bfloat16"]


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


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [
        ("major", c_uint32),
        ("minor", c_uint32),
        ("manager_ctx", c_void_p),
        ("deleter", c_void_p),
        ("flags", c_uint64),
        ("dl_tensor", DLTensor),
    ]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", c_void_p), ("deleter", c_void_p)]


assert ctypes.sizeof(DLTensor) == 48
assert ctypes.sizeof(DLManagedTensor) == 64
assert ctypes.sizeof(DLManagedTensorVersioned) == 80

# Our own prototypes: setting restype on ctypes.pythonapi's shared function objects would change
# them for everybody in the process (the package included).
_capsule_name = ctypes.PYFUNCTYPE(c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))
_capsule_pointer = ctypes.PYFUNCTYPE(c_void_p, ctypes.py_object, c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi)
)


def capsule_name(capsule: object) -> str:
    name = _capsule_name(capsule)
    return name.decode() if name is not None else ""


def managed_struct(capsule: object):
    """The managed struct inside an unconsumed DLPack capsule, and its DLTensor."""
    name = capsule_name(capsule)
    assert name in ("dltensor", "dltensor_versioned"), f"not an unconsumed DLPack capsule: {name!r}"
    address = _capsule_pointer(capsule, name.encode())
    if name == "dltensor_versioned":
        m = DLManagedTensorVersioned.from_address(address)
    else:
        m = DLManagedTensor.from_address(address)
    return m, m.dl_tensor


def managed_info(capsule: object) -> dict:
    """What an unconsumed DLPack capsule describes (the capsule stays unconsumed)."""
    m, dl = managed_struct(capsule)
    n = dl.ndim
    versioned = isinstance(m, DLManagedTensorVersioned)
    return {
        "versioned": versioned,
        "version": (m.major, m.minor) if versioned else None,
        "flags": m.flags if versioned else None,
        "data": dl.data,
        "device": (dl.device.device_type, dl.device.device_id),
        "ndim": n,
        "dtype": (dl.dtype.code, dl.dtype.bits, dl.dtype.lanes),
        "shape": tuple(dl.shape[i] for i in range(n)) if dl.shape else None,
        "strides": tuple(dl.strides[i] for i in range(n)) if dl.strides else None,
        "byte_offset": dl.byte_offset,
    }


def relabel(capsule: object, code=None, bits=None, lanes=None, major=None) -> None:
    """Edits an unconsumed capsule we own (its dtype, or its DLPack major version), to make
    inputs that NumPy cannot make or that no correct producer would make."""
    m, dl = managed_struct(capsule)
    if code is not None:
        dl.dtype.code = code
    if bits is not None:
        dl.dtype.bits = bits
    if lanes is not None:
        dl.dtype.lanes = lanes
    if major is not None:
        assert isinstance(m, DLManagedTensorVersioned), "only versioned structs carry a version"
        m.major = major


def data_ptr(t: dlbridge.Tensor) -> int:
    """The address of a dlbridge tensor's first element, read from an export (no NumPy needed for
    bfloat16). The export is dropped unconsumed again."""
    return managed_info(t.__dlpack__(max_version=(1, 3)))["data"] or 0


def sample(dtype: str) -> np.ndarray:
    """Values that exercise a dtype's edges: extremes, signed zero, infinities, NaN."""
    if dtype == "bool":
        return np.array([True, False, True, True, False])
    if dtype == "bfloat16":
        import ml_dtypes

        return np.array([-np.inf, -1.5, -0.0, 0.0, 3.140625, 1e38, np.inf, np.nan], dtype=ml_dtypes.bfloat16)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return np.array([info.min, info.min + 1, 0, 1, 7, info.max - 1, info.max], dtype=dt)
    if dt.kind == "f":
        info = np.finfo(dt)
        return np.array([-np.inf, info.min, -1.5, -0.0, 0.0, info.tiny, 1 / 3, info.max, np.inf, np.nan], dtype=dt)
    assert dt.kind == "c"
    real = sample("float32" if dt.itemsize == 8 else "float64")
    out = np.empty(real.shape, dtype=dt)
    out.real, out.imag = real, real[::-1]
    return out


def assert_same_bytes(got: np.ndarray, want: np.ndarray) -> None:
    """Exact equality, NaN payloads and signed zeros included."""
    assert got.shape == want.shape
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), (got, want)


def assert_library_works() -> None:
    """A small end-to-end use of the library: create, view, copy, export, import."""
    t = dlbridge.zeros((2, 3), "float32")
    a = t.numpy()
    a[...] = np.arange(6).reshape(2, 3)
    v = t.view((3,), strides=(2,), offset=0)
    assert v.numpy().tolist() == [0.0, 2.0, 4.0]
    c = dlbridge.from_dlpack(t.copy().__dlpack__(max_version=(1, 3)))
    assert c.numpy().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert not c.shares_memory(t)

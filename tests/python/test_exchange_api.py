"""DLPack 1.3's C exchange table (`Tensor.__dlpack_c_exchange_api__`), produced by dlbridge and
read by a consumer we did not write: apache-tvm-ffi, whose `from_dlpack` and function calls read
the table of a tensor's type instead of calling `__dlpack__`, and whose `convert_func(...,
tensor_cls=dlbridge.Tensor)` hands tensors back through the table's `to_py` entry. Also dlbridge
reading tvm-ffi's own table, and the table's entries called directly through ctypes."""

import ctypes

import numpy as np
import pytest

import dlbridge
from dlbridge import _lib

tvm_ffi = pytest.importorskip("tvm_ffi")


class DLPackExchangeAPI(ctypes.Structure):
    # DLPack 1.3: the header (version, prev_api), then five function pointers.
    _fields_ = [
        ("major", ctypes.c_uint32),
        ("minor", ctypes.c_uint32),
        ("prev_api", ctypes.c_void_p),
        ("managed_tensor_allocator", ctypes.c_void_p),
        ("managed_tensor_from_py_object_no_sync", ctypes.c_void_p),
        ("managed_tensor_to_py_object_no_sync", ctypes.c_void_p),
        ("dltensor_from_py_object_no_sync", ctypes.c_void_p),
        ("current_work_stream", ctypes.c_void_p),
    ]


def table() -> DLPackExchangeAPI:
    capsule = dlbridge.Tensor.__dlpack_c_exchange_api__
    assert _lib.capsule_name(capsule) == b"dlpack_exchange_api"
    return DLPackExchangeAPI.from_address(_lib.capsule_pointer(capsule, b"dlpack_exchange_api"))


def test_the_table_is_published_on_the_type_as_dlpack_1_3():
    t = table()
    assert (t.major, t.minor) == (1, 3)
    assert not t.prev_api
    assert all(getattr(t, name) for name, _ in DLPackExchangeAPI._fields_[3:])
    # Every access gives the same capsule: the table lives for the process.
    assert dlbridge.Tensor.__dlpack_c_exchange_api__ is dlbridge.Tensor.__dlpack_c_exchange_api__


def test_tvm_ffi_imports_through_the_table_without_calling_dunder_dlpack(monkeypatch):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = dlbridge.from_dlpack(a)

    def refuse(self, **kwargs):
        raise RuntimeError("__dlpack__ was called: the table was not used")

    # A RuntimeError, which tvm-ffi would pass on: only the table can make the import succeed.
    monkeypatch.setattr(dlbridge.Tensor, "__dlpack__", refuse)
    v = tvm_ffi.from_dlpack(t)
    assert v.data_ptr() == t.data_ptr() == a.ctypes.data
    assert tuple(v.shape) == (2, 3) and str(v.dtype) == "float32"
    monkeypatch.undo()
    # Shared memory, proven by writing through NumPy and reading back through tvm-ffi.
    a[1, 2] = 42.0
    np.testing.assert_array_equal(np.from_dlpack(v), a)
    del v, t


def test_tvm_ffi_functions_receive_dlbridge_tensors_through_the_table():
    # A tvm-ffi function called with a dlbridge Tensor converts it in C (from_py), and a Python
    # callback declared with tensor_cls=dlbridge.Tensor gets dlbridge Tensors back (to_py).
    seen = []

    def callback(x):
        seen.append((type(x), x.shape, x.data_ptr(), x.numpy().copy()))

    f = tvm_ffi.convert_func(callback, tensor_cls=dlbridge.Tensor)
    t = dlbridge.from_dlpack(np.arange(4.0))
    f(t)
    (cls, shape, ptr, values), = seen
    assert cls is dlbridge.Tensor and shape == (4,) and ptr == t.data_ptr()
    np.testing.assert_array_equal(values, np.arange(4.0))


def test_dlbridge_reads_tvm_ffis_table_and_shares():
    a = np.arange(5, dtype=np.int32)
    v = tvm_ffi.from_dlpack(a)
    t = dlbridge.from_dlpack(v)
    assert t.data_ptr() == a.ctypes.data and t.dtype == "int32" and t.shape == (5,)
    # tvm-ffi 0.1 publishes no table on its Tensor type; after this first import the native
    # from_dlpack asks its __dlpack__ directly (no __dlpack_device__ call, no Python code).
    assert dlbridge._tensor._ROUTES.get(type(v)) is True
    u = dlbridge.from_dlpack(v)
    assert u.shares_memory(t)
    np.testing.assert_array_equal(u.numpy(), a)


def take(obj: ctypes.py_object):
    """The object a C function wrote into `obj` as a new reference (ctypes does not own it)."""
    value = obj.value
    ctypes.pythonapi.Py_DecRef(ctypes.py_object(value))
    return value


def test_a_read_only_tensor_goes_out_read_only_through_the_table():
    a = np.arange(3.0)
    a.flags.writeable = False
    t = dlbridge.from_dlpack(a)
    assert t.read_only
    fn = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.POINTER(ctypes.c_void_p))(
        table().managed_tensor_from_py_object_no_sync
    )
    out = ctypes.c_void_p()
    assert fn(t, ctypes.byref(out)) == 0 and out.value
    flags = ctypes.c_uint64.from_address(out.value + 24).value  # DLManagedTensorVersioned.flags
    assert flags & 1, "READ_ONLY"
    # Import it back (consumes it: the deleter runs once, when the import goes).
    back = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.py_object))(
        table().managed_tensor_to_py_object_no_sync
    )
    obj = ctypes.py_object()
    assert back(out, ctypes.byref(obj)) == 0
    u = take(obj)
    assert isinstance(u, dlbridge.Tensor) and u.read_only and u.shares_memory(t)


def test_table_entries_refuse_other_objects_and_fill_borrowed_views():
    fn = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.POINTER(ctypes.c_void_p))(
        table().managed_tensor_from_py_object_no_sync
    )
    out = ctypes.c_void_p()
    with pytest.raises(TypeError, match="not a dlbridge.Tensor"):
        fn(np.arange(3.0), ctypes.byref(out))
    t = dlbridge.zeros((2, 3), "int16")
    view = _lib.DLTensor()
    fill = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.POINTER(_lib.DLTensor))(
        table().dltensor_from_py_object_no_sync
    )
    assert fill(t, ctypes.byref(view)) == 0
    assert (view.data, view.ndim, view.shape[0], view.shape[1], view.strides[0]) == (t.data_ptr(), 2, 2, 3, 3)
    assert (view.dtype.code, view.dtype.bits) == (0, 16)
    stream = ctypes.c_void_p(1)
    current = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p))(
        table().current_work_stream
    )
    assert current(1, 0, ctypes.byref(stream)) == 0 and not stream.value


SET_ERROR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)


def test_the_allocator_makes_tensors_like_the_prototype_and_reports_errors():
    alloc = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(_lib.DLTensor), ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, SET_ERROR
    )(table().managed_tensor_allocator)
    errors = []
    on_error = SET_ERROR(lambda ctx, kind, message: errors.append((kind, message)))
    shape = (ctypes.c_int64 * 2)(3, 4)
    proto = _lib.DLTensor(None, _lib.DLDevice(1, 0), 2, _lib.DLDataType(2, 32, 1), shape, None, 0)
    out = ctypes.c_void_p()
    assert alloc(ctypes.byref(proto), ctypes.byref(out), None, on_error) == 0 and not errors
    back = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.py_object))(
        table().managed_tensor_to_py_object_no_sync
    )
    obj = ctypes.py_object()
    assert back(out, ctypes.byref(obj)) == 0
    t = take(obj)
    assert (t.shape, t.dtype, t.device) == ((3, 4), "float32", "cpu") and t.data_ptr() % 256 == 0
    # A dtype dlbridge cannot hold: -1 and the error through SetError, nothing allocated.
    proto.dtype = _lib.DLDataType(2, 7, 1)
    assert alloc(ctypes.byref(proto), ctypes.byref(out), None, on_error) == -1
    (kind, message), = errors
    assert kind == b"RuntimeError" and b"managed_tensor_allocator" in message

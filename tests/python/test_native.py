"""The native Tensor: a Python subclass of a type libdlbridge builds at import, whose common
members are C functions. What the package promises about it: tensors made natively are instances
of dlbridge.Tensor, attributes can be added to the class, the heap type's reference count stays
balanced, the fast paths and the Python fallbacks agree on results and errors, and no hot call
goes through ctypes."""

import ctypes
import gc
import inspect
import sys
import weakref

import numpy as np
import pytest

import dlbridge
from dlbridge import _lib


def test_natively_made_tensors_are_instances_of_the_python_class():
    base = dlbridge.Tensor.__base__
    assert base is _lib.TensorBase and base.__name__ == "_TensorBase"
    a = np.arange(4.0)
    made = [
        dlbridge.zeros(3), dlbridge.empty((2, 2), "int8"), dlbridge.from_dlpack(a),
        dlbridge.from_dlpack(a.__dlpack__()), dlbridge.from_dlpack(a).alias(), dlbridge.zeros(4).copy(),
        dlbridge.zeros(4).view((2, 2)), dlbridge.zeros(2).astype("int32"), dlbridge.zeros(2).to("cpu"),
        dlbridge.zeros(2).cpu(), dlbridge.Tensor.from_handle(_handle()),
    ]
    assert all(type(t) is dlbridge.Tensor for t in made)
    weakref.ref(made[0])  # the subclass keeps weak references working
    with pytest.raises(AttributeError):
        made[0].anything = 1  # no __dict__: the instance is the handle


def _handle() -> int:
    """A new dlb_tensor * from the C API, for Tensor.from_handle."""
    out = ctypes.c_void_p()
    _lib.lib.dlb_tensor_zeros((ctypes.c_int64 * 1)(2), 1, _lib.DLDataType(2, 32, 1), _lib.DLDevice(1, 0),
                              ctypes.byref(out))
    return out.value


def test_tensors_cannot_be_made_by_calling_the_types():
    for cls in (dlbridge.Tensor, _lib.TensorBase):
        with pytest.raises(TypeError, match="use dlbridge.empty, dlbridge.zeros or dlbridge.from_dlpack"):
            cls()
    with pytest.raises(TypeError):
        object.__new__(dlbridge.Tensor)


def test_the_class_takes_new_attributes_for_other_code():
    # Issue 18 attaches properties and methods to dlbridge.Tensor: the class must stay open.
    dlbridge.Tensor._probe = property(lambda self: self.shape)
    try:
        assert dlbridge.zeros((2, 5))._probe == (2, 5)
    finally:
        del dlbridge.Tensor._probe


def test_the_heap_types_reference_count_stays_balanced():
    gc.collect()
    before = sys.getrefcount(dlbridge.Tensor), sys.getrefcount(_lib.TensorBase)
    a = np.arange(8.0)
    for _ in range(1000):
        t = dlbridge.from_dlpack(a)
        t.alias().copy().view((2, 4))
        del t
    gc.collect()
    assert (sys.getrefcount(dlbridge.Tensor), sys.getrefcount(_lib.TensorBase)) == before


def test_fast_paths_and_fallbacks_agree():
    a = np.arange(12, dtype=np.float32)
    t = dlbridge.from_dlpack(a)
    # The same views, through the native path (ints and tuples) and the fallback (lists, numpy ints).
    for fast, slow in [
        (t.view((3, 4)), t.view([3, 4])),
        (t.view((2, 3), (1, 2), 1), t.view([np.int64(2), 3], [1, 2], np.int64(1))),
        (t.view(shape=(4,), offset=8), t.view(shape=[4], offset=np.int8(8))),
    ]:
        assert (fast.shape, fast.strides, fast.data_ptr()) == (slow.shape, slow.strides, slow.data_ptr())
    np.testing.assert_array_equal(t.astype("int64").numpy(), t.astype(np.int64).numpy())
    np.testing.assert_array_equal(dlbridge.zeros((2, 2), "uint8").numpy(), dlbridge.zeros([2, 2], np.uint8).numpy())
    assert dlbridge.zeros(3, device="cpu").device == dlbridge.zeros(3, device=(1, 0)).device == "cpu"
    # The same errors, with the same messages.
    for call in (lambda: t.view((5, 5)), lambda: t.view([5, 5])):
        with pytest.raises(ValueError, match="dlb_tensor_view"):
            call()
    c = dlbridge.zeros(2, "complex64")
    for dtype in ("float32", np.float32):  # complex to real: TypeError on both paths
        with pytest.raises(TypeError, match="dlb_tensor_cast"):
            c.astype(dtype)
    with pytest.raises(ValueError, match="unknown dtype"):
        dlbridge.zeros(2, "float7")
    with pytest.raises(ValueError, match="unknown device"):
        t.to("gpu")
    with pytest.raises(TypeError, match="shares_memory expects a dlbridge.Tensor, not ndarray"):
        t.shares_memory(a)


def test_argument_errors_of_the_native_functions():
    t = dlbridge.zeros(4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        t.view((2, 2), bogus=1)
    with pytest.raises(TypeError, match="multiple values for argument 'shape'"):
        t.view((2, 2), shape=(4,))
    with pytest.raises(TypeError, match="at most 3 positional"):
        t.view(1, 2, 3, 4)
    with pytest.raises(TypeError, match="missing required argument 'shape'"):
        dlbridge.zeros()
    with pytest.raises(TypeError, match="at most 0 positional"):
        t.__dlpack__(None)
    with pytest.raises(TypeError, match="missing required argument 'obj'"):
        dlbridge.from_dlpack()


def test_shared_keyword_reaches_shared_memory():
    # The native empty/zeros hand shared= (any truthy value) to the shared-memory path.
    z = dlbridge.zeros((2,), shared=True)
    assert z.is_shared and z.shape == (2,) and z.numpy().tolist() == [0.0, 0.0]
    e = dlbridge.empty((3,), "int8", "cpu", shared=1)
    assert e.is_shared and e.dtype == "int8"
    assert not dlbridge.zeros((2,), shared=False).is_shared
    assert not dlbridge.empty((2,)).is_shared


def test_signatures_are_visible():
    assert str(inspect.signature(dlbridge.from_dlpack)) == "(obj, *, copy=None, device=None)"
    assert "shared=False" in str(inspect.signature(dlbridge.empty))
    assert str(inspect.signature(dlbridge.Tensor.view)) == "(self, /, shape, strides=None, offset=0)"


def test_hot_calls_run_no_python_code():
    # The profiler reports a "call" event for every Python function that runs (ctypes calls and
    # the package's fallbacks included); the hot paths are C all the way.
    a = np.arange(16, dtype=np.float32)
    t = dlbridge.from_dlpack(a)  # the first import of a type runs the fallback (and learns it)
    t.numpy()  # the first numpy() imports NumPy in Python
    python_calls = []

    def profile(frame, event, arg):
        if event == "call":
            python_calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        u = dlbridge.from_dlpack(a)
        (u.shape, u.strides, u.ndim, u.dtype, u.device, u.nbytes, u.itemsize, u.read_only, u.data_ptr(),
         u.is_contiguous(), u.__dlpack_device__(), u.shares_memory(t))
        u.alias(), u.copy(), u.view((4, 4)), u.astype("float64"), u.to("cpu"), u.cpu(), u.numpy(), u.__dlpack__()
        u.__dlpack__(max_version=(1, 3), copy=True), dlbridge.zeros((4, 4)), dlbridge.empty(3, "int8")
        dlbridge.from_dlpack(u), dlbridge.from_dlpack(a.__dlpack__()), np.from_dlpack(u)
    finally:
        sys.setprofile(None)
    assert python_calls == []
    # The uncommon arguments do run Python (the fallbacks): the profiler sees them.
    sys.setprofile(profile)
    try:
        u.view([4, 4])
    finally:
        sys.setprofile(None)
    assert "_view_slow" in python_calls


@pytest.mark.parametrize("shape", [(4, 4), (3,), (1000,), (2, 0), ()])
def test_zeros_are_zero_even_on_reused_blocks(shape):
    # Small CPU zeros are cleared blocks from the core's cache: dirty the cache first.
    for _ in range(8):
        dirty = dlbridge.empty(shape, "float64")
        dirty.numpy()[...] = 7.0
        del dirty
    for dtype in ("float64", "int8", "bool"):
        z = dlbridge.zeros(shape, dtype)
        assert z.shape == shape and not z.numpy().any()


def test_ints_beyond_int64_take_the_fallback_cleanly():
    # LONG_AS_LONG_LONG's -1 with OverflowError set must not leak out of a fast path (CPython
    # would raise SystemError: "returned a result with an exception set").
    t = dlbridge.zeros((2, 3))
    big = 2**100
    cap = t.__dlpack__(max_version=(big, 0))
    assert type(cap).__name__ == "PyCapsule"
    assert dlbridge.from_dlpack(cap).shape == (2, 3)
    for call in (
        lambda: dlbridge.zeros((big,)),
        lambda: dlbridge.empty((2, big)),
        lambda: t.view((2, 3), (big, 1)),
        lambda: t.view((6,), None, big),
    ):
        with pytest.raises((ValueError, OverflowError)):
            call()

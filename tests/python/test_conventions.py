"""NumPy's and Python's conventions: np.asarray / np.array through __array__ (NumPy 2's protocol,
copy=None shares, copy=False never copies, copy=True always does), the buffer protocol
(__buffer__, PEP 688), and dtypes given the way NumPy and PyTorch users write them."""

import subprocess
import sys

import numpy as np
import pytest

import dlbridge

PyBUF_WRITABLE = 0x0001


def shares(arr, t):
    return arr.ctypes.data == t.data_ptr()


def test_asarray_shares_both_ways():
    t = dlbridge.zeros((2, 3), "float32")
    a = np.asarray(t)
    assert a.dtype == np.float32 and a.shape == (2, 3) and shares(a, t)
    a[1, 2] = 5  # NumPy -> dlbridge
    assert t.numpy()[1, 2] == 5
    t.numpy()[0, 0] = 7  # dlbridge -> NumPy
    assert a[0, 0] == 7


def test_array_copy_false_shares_and_copy_true_copies():
    t = dlbridge.from_dlpack(np.arange(6.0))
    assert shares(np.array(t, copy=False), t)
    assert shares(np.asarray(t, dtype=np.float64), t), "the same dtype needs no copy"
    c = np.array(t)  # NumPy's default is copy=True
    assert not shares(c, t) and c.tolist() == [0, 1, 2, 3, 4, 5]
    c[0] = 9
    assert t.numpy()[0] == 0


def test_a_conversion_copies_and_copy_false_refuses_it():
    t = dlbridge.from_dlpack(np.arange(4, dtype=np.int32))
    f = np.asarray(t, dtype=np.float64)
    assert f.dtype == np.float64 and f.tolist() == [0, 1, 2, 3] and not shares(f, t)
    with pytest.raises(ValueError):  # from __array__, or from NumPy itself on Python 3.12+ (buffer route)
        np.array(t, dtype=np.float64, copy=False)
    with pytest.raises(ValueError, match="copy=False"):
        t.__array__(np.float32, copy=False)
    with pytest.raises(TypeError, match="copy"):
        t.__array__(copy="yes")


def test_strided_views_keep_their_strides():
    base = np.arange(24, dtype=np.int16).reshape(4, 6)
    t = dlbridge.from_dlpack(base[::2, 1::2].T)
    a = np.asarray(t)
    np.testing.assert_array_equal(a, base[::2, 1::2].T)
    assert np.shares_memory(a, base)


def test_read_only_tensors_give_read_only_arrays():
    src = np.arange(3.0)
    src.flags.writeable = False
    t = dlbridge.from_dlpack(src)
    assert t.read_only
    a = np.asarray(t)
    assert not a.flags.writeable and shares(a, t)
    with pytest.raises(ValueError):
        a[0] = 1
    assert np.array(t).flags.writeable, "a copy is the caller's to write"


def test_zero_dim_and_empty_tensors():
    assert np.asarray(dlbridge.zeros((), "int64")).shape == ()
    assert np.asarray(dlbridge.zeros((0, 3), "float32")).shape == (0, 3)


def test_bfloat16_goes_through_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    t = dlbridge.from_dlpack(np.array([1.5, -2.0], dtype=np.float32)).astype("bfloat16")
    a = np.asarray(t)
    assert a.dtype == ml_dtypes.bfloat16 and a.astype(np.float32).tolist() == [1.5, -2.0]
    assert shares(a, t)


def test_numpy_functions_take_tensors():
    t = dlbridge.from_dlpack(np.arange(5.0))
    assert np.sum(t) == 10.0
    assert (np.add(t, 1) == np.arange(1.0, 6.0)).all()


def test_gpu_tensors_raise_type_error_naming_cpu(monkeypatch):
    # Without a GPU here, a CPU tensor stands in for one: the check reads only the device (the
    # real thing runs in test_cuda.py against the fake driver and on GPUs).
    t = dlbridge.zeros((2,), "float32")
    monkeypatch.setattr(dlbridge.Tensor, "device", property(lambda self: "cuda:0"))
    for convert in (np.asarray, lambda x: np.array(x, copy=False), lambda x: x.__buffer__(0)):
        with pytest.raises(TypeError, match=r"cuda:0 tensor.*\.cpu\(\)"):
            convert(t)


# -- the buffer protocol -----------------------------------------------------------------------


def test_buffer_is_a_shared_memoryview():
    t = dlbridge.from_dlpack(np.arange(6, dtype=np.int32).reshape(2, 3))
    m = t.__buffer__(PyBUF_WRITABLE)
    assert m.format == "i" and m.shape == (2, 3) and not m.readonly
    m[1, 2] = 40
    assert t.numpy()[1, 2] == 40
    assert np.asarray(m).ctypes.data == t.data_ptr()
    m.release()


def test_buffer_of_read_only_data_is_read_only():
    src = np.arange(3.0)
    src.flags.writeable = False
    t = dlbridge.from_dlpack(src)
    m = t.__buffer__(0)
    assert m.readonly and m.tolist() == [0, 1, 2]
    m.release()
    with pytest.raises(BufferError, match="read-only"):
        t.__buffer__(PyBUF_WRITABLE)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python calls __buffer__ from 3.12 on (PEP 688)")
def test_memoryview_and_bytes_take_tensors():
    t = dlbridge.from_dlpack(np.array([1, 2, 3], dtype=np.uint8))
    with memoryview(t) as m:
        assert m.tolist() == [1, 2, 3]
    assert bytes(t) == b"\x01\x02\x03"


# -- dtypes --------------------------------------------------------------------------------------

NUMPY_SPELLINGS = [
    (np.float64, "float64"),
    (np.float32, "float32"),
    (np.dtype("f4"), "float32"),
    (np.dtype("<i2"), "int16"),
    (np.uint64, "uint64"),
    (np.bool_, "bool"),
    (np.dtype(bool), "bool"),
    (np.complex64, "complex64"),
    (np.float16, "float16"),
    (float, "float64"),
    (int, "int64"),
    (bool, "bool"),
    (complex, "complex128"),
    ("int8", "int8"),
]


@pytest.mark.parametrize("spelling, name", NUMPY_SPELLINGS, ids=[repr(s) for s, _ in NUMPY_SPELLINGS])
def test_numpy_and_python_dtypes_are_accepted_everywhere(spelling, name):
    assert dlbridge.zeros((2,), spelling).dtype == name
    assert dlbridge.empty((2,), dtype=spelling).dtype == name
    assert dlbridge.zeros((2,), "int8").astype(spelling).dtype == name


def test_torch_dtypes_are_accepted_everywhere():
    torch = pytest.importorskip("torch")
    for spelling, name in [(torch.float32, "float32"), (torch.float, "float32"), (torch.int64, "int64"),
                           (torch.cfloat, "complex64"), (torch.uint8, "uint8"), (torch.bfloat16, "bfloat16")]:
        assert dlbridge.zeros((2,), spelling).dtype == name
        assert dlbridge.empty((2,), spelling).dtype == name
        assert dlbridge.zeros((2,), "bool").astype(spelling).dtype == name


def test_ml_dtypes_bfloat16_is_accepted():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert dlbridge.zeros((2,), ml_dtypes.bfloat16).dtype == "bfloat16"
    assert dlbridge.zeros((2,), np.dtype(ml_dtypes.bfloat16)).dtype == "bfloat16"


def test_dtypes_dlbridge_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="byte order"):
        dlbridge.zeros((2,), np.dtype(">f4"))
    with pytest.raises(ValueError, match="unknown dtype"):
        dlbridge.zeros((2,), np.dtype("U3"))
    with pytest.raises(ValueError, match="unknown dtype"):
        dlbridge.zeros((2,), "float128")
    for wrong in (object(), 3, None, str):
        with pytest.raises(TypeError, match="dtype must be"):
            dlbridge.zeros((2,), wrong)


def test_dtype_handling_imports_neither_numpy_nor_torch():
    code = (
        "import sys, dlbridge\n"
        "t = dlbridge.zeros((2,), 'float32').astype('int8')\n"
        "assert dlbridge.empty((1,), 'bool').dtype == 'bool'\n"
        "for bad in (object(), 3):\n"
        "    try:\n"
        "        dlbridge.zeros((1,), bad)\n"
        "    except TypeError:\n"
        "        pass\n"
        "loaded = {'numpy', 'torch'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""The Tensor object on its own: creation, properties, alias/view/copy/astype/to, the Python
protocols (copy, deepcopy, pickle), and what an export capsule holds (read back through our own
declaration of the DLPack structs)."""

import copy
import ctypes
import importlib.metadata
import pickle

import numpy as np
import pytest

import dlbridge
from support import ALL_DTYPES, CPU, IS_COPIED, READ_ONLY, capsule_name, data_ptr, managed_info

# DLPack (type code, bits) of each dtype of the contract.
DL_CODES = {
    "bool": (6, 8), "int8": (0, 8), "int16": (0, 16), "int32": (0, 32), "int64": (0, 64),
    "uint8": (1, 8), "uint16": (1, 16), "uint32": (1, 32), "uint64": (1, 64),
    "float16": (2, 16), "bfloat16": (4, 16), "float32": (2, 32), "float64": (2, 64),
    "complex64": (5, 64), "complex128": (5, 128),
}


def test_version_is_the_installed_distribution_version():
    assert dlbridge.__version__ == importlib.metadata.version("dlbridge")


def test_dtypes_are_the_fifteen_of_the_contract():
    assert sorted(dlbridge.DTYPES) == sorted(ALL_DTYPES)
    assert {name: tuple(v) for name, v in dlbridge.DTYPES.items()} == DL_CODES


def test_cuda_device_count_is_a_count():
    n = dlbridge.cuda_device_count()
    assert isinstance(n, int) and n >= 0  # 0 without a driver; test_cuda.py covers the rest


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("make", [dlbridge.empty, dlbridge.zeros])
def test_new_tensors_are_row_major_aligned_and_writable(make, dtype, live_base):
    t = make((2, 3, 4), dtype)
    itemsize = DL_CODES[dtype][1] // 8
    assert t.shape == (2, 3, 4)
    assert t.strides == (12, 4, 1)
    assert t.ndim == 3
    assert t.dtype == dtype
    assert t.itemsize == itemsize
    assert t.nbytes == 24 * itemsize
    assert t.device == "cpu"
    assert t.__dlpack_device__() == CPU
    assert not t.read_only
    assert t.is_contiguous()
    assert data_ptr(t) % 256 == 0, "allocations are 256-byte aligned"
    assert dlbridge.live_allocations() == live_base + 1


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_zeros_are_zero_bytes(dtype):
    t = dlbridge.zeros((5, 7), dtype)
    assert ctypes.string_at(data_ptr(t), t.nbytes) == bytes(35 * DL_CODES[dtype][1] // 8)


@pytest.mark.parametrize(
    "shape, expected",
    [
        (3, (3,)),
        ((), ()),
        ([2, 3], (2, 3)),
        ((np.int64(2), np.int32(3)), (2, 3)),
        (np.int64(3), (3,)),
        (range(1, 4), (1, 2, 3)),
    ],
    ids=["int", "empty-tuple", "list", "numpy-ints-in-tuple", "numpy-int", "range"],
)
def test_shape_spellings(shape, expected):
    assert dlbridge.empty(shape).shape == expected


@pytest.mark.parametrize("spelling", ["float16", np.dtype("float16")], ids=["name", "numpy-dtype"])
def test_dtype_spellings(spelling):
    assert dlbridge.zeros((1,), spelling).dtype == "float16"


def test_zero_dim_and_zero_size_tensors():
    scalar = dlbridge.zeros(())
    assert (scalar.shape, scalar.strides, scalar.ndim, scalar.nbytes) == ((), (), 0, 4)
    empty = dlbridge.zeros((3, 0, 2), "int16")
    assert (empty.shape, empty.ndim, empty.nbytes) == ((3, 0, 2), 3, 0)
    assert empty.copy().shape == (3, 0, 2)
    assert empty.astype("float64").dtype == "float64"


def test_alias_shares_and_keeps_memory_alive(live_base):
    t = dlbridge.zeros((4,), "int32")
    a = t.alias()
    assert a.shares_memory(t) and t.shares_memory(a)
    assert (a.shape, a.strides, a.dtype) == (t.shape, t.strides, t.dtype)
    a.numpy()[2] = 7
    del t
    assert dlbridge.live_allocations() == live_base + 1, "the alias keeps the memory"
    assert a.numpy().tolist() == [0, 0, 7, 0]


def test_copy_and_deepcopy_are_new_memory_and_copy_copy_is_an_alias():
    t = dlbridge.zeros((3,), "float64")
    t.numpy()[:] = [1, 2, 3]
    shallow, deep = copy.copy(t), copy.deepcopy(t)
    assert shallow.shares_memory(t)
    assert not deep.shares_memory(t)
    t.numpy()[0] = 10
    assert shallow.numpy().tolist() == [10, 2, 3]
    assert deep.numpy().tolist() == [1, 2, 3]


def test_pickling_is_by_value_with_every_protocol():
    # (test_shared.py covers pickling in depth: dtypes, out-of-band buffers, multiprocessing.)
    t = dlbridge.zeros((2,))
    t.numpy()[:] = [1.5, -2]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        u = pickle.loads(pickle.dumps(t, protocol=protocol))
        assert u.numpy().tolist() == [1.5, -2] and not u.shares_memory(t)


def test_tensor_cannot_be_constructed_directly():
    with pytest.raises(TypeError):
        dlbridge.Tensor()


def test_repr_says_shape_dtype_device():
    r = repr(dlbridge.zeros((2, 3), "uint8"))
    assert "(2, 3)" in r and "uint8" in r and "cpu" in r


# ---------------------------------------------------------------------------------------------
# views


def base12():
    t = dlbridge.zeros((12,), "float64")
    t.numpy()[:] = np.arange(12)
    return t


VIEWS = [
    # (shape, strides, offset, the same view on np.arange(12))
    ((3, 4), None, 0, lambda a: a.reshape(3, 4)),
    ((4, 3), (1, 4), 0, lambda a: a.reshape(3, 4).T),
    ((6,), (2,), 0, lambda a: a[::2]),
    ((5,), (2,), 1, lambda a: a[1::2][:5]),
    ((12,), (-1,), 11, lambda a: a[::-1]),
    ((2, 3), (-6, -2), 11, lambda a: a.reshape(2, 6)[::-1, ::-2]),
    ((3, 4), (0, 1), 4, lambda a: np.broadcast_to(a[4:8], (3, 4))),
    ((), None, 5, lambda a: a[5]),
    ((0, 4), None, 12, lambda a: a[12:].reshape(0, 4)),
]
VIEW_IDS = ["reshape", "transpose", "step2", "offset", "reversed", "neg2d", "zero-stride", "0-d", "empty-at-end"]


@pytest.mark.parametrize("shape, strides, offset, expected", VIEWS, ids=VIEW_IDS)
def test_view_is_zero_copy_with_element_strides(shape, strides, offset, expected):
    t = base12()
    v = t.view(shape, strides, offset)
    want = expected(np.arange(12.0))
    assert v.shape == want.shape
    if strides is not None:
        assert v.strides == strides
    assert np.array_equal(v.numpy(), want)
    assert v.dtype == "float64" and not v.read_only
    if want.size:
        assert v.shares_memory(t)
        assert data_ptr(v) == data_ptr(t) + 8 * offset


def test_view_of_view_is_relative_to_its_first_element():
    t = base12()
    v = t.view((2, 3), strides=(6, 2), offset=1)  # [[1, 3, 5], [7, 9, 11]]
    # offset counts elements of memory from v's first element (storage element 1), not v's
    # logical indices.
    w = v.view((3,), strides=(2,), offset=2)
    assert w.numpy().tolist() == [3.0, 5.0, 7.0]
    w.numpy()[1] = -5
    assert t.numpy()[5] == -5
    assert v.view((3,), strides=(2,), offset=1).numpy().tolist() == [2.0, 4.0, 6.0]


def test_view_keeps_memory_alive(live_base):
    t = base12()
    v = t.view((4,), strides=(3,), offset=0)
    del t
    assert dlbridge.live_allocations() == live_base + 1
    assert v.numpy().tolist() == [0.0, 3.0, 6.0, 9.0]


def test_is_contiguous():
    t = base12()
    assert t.is_contiguous()
    assert t.view((3, 4)).is_contiguous()
    assert not t.view((6,), strides=(2,)).is_contiguous()
    assert not t.view((4, 3), strides=(1, 4)).is_contiguous()


def test_shares_memory():
    t = base12()
    assert t.shares_memory(t.view((2,), offset=10))
    assert not t.view((6,)).shares_memory(t.view((6,), offset=6))
    assert not t.shares_memory(t.copy())
    assert not t.shares_memory(dlbridge.zeros((12,), "float64"))


# ---------------------------------------------------------------------------------------------
# copy, astype, to


def row_major(shape):
    strides, step = [], 1
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


@pytest.mark.parametrize("shape, strides, offset, expected", VIEWS, ids=VIEW_IDS)
def test_copy_is_row_major_and_independent(shape, strides, offset, expected):
    v = base12().view(shape, strides, offset)
    c = v.copy()
    want = expected(np.arange(12.0))
    assert c.is_contiguous() and not c.read_only
    assert c.strides == row_major(want.shape)
    assert np.array_equal(c.numpy(), want)
    if want.size:
        assert not c.shares_memory(v)
        c.numpy()[...] = -1
        assert np.array_equal(v.numpy(), want)


@pytest.mark.parametrize(
    "src_dtype, values, dtype, expected",
    [
        ("float64", [-1.7, 2.9, np.nan, 1e20, -1e20, 300.5], "int8", [-1, 2, 0, 127, -128, 127]),
        ("int32", [255, 256, -1, 128], "int8", [-1, 0, -1, -128]),
        ("int32", [-1, 65536], "uint16", [65535, 0]),
        ("float64", [0.0, -0.0, 0.5, np.nan], "bool", [False, False, True, True]),
        ("float64", [1.5, -2.0], "complex64", [1.5 + 0j, -2 + 0j]),
        ("float32", [1.00390625, 1.01171875], "bfloat16", [1.0, 1.015625]),  # ties to even
        ("float64", [1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11], "float16", [1.0, 1.001953125]),
        ("bool", [True, False], "float32", [1.0, 0.0]),
    ],
)
def test_astype_follows_the_casting_rules(src_dtype, values, dtype, expected):
    src = dlbridge.from_dlpack(np.array(values, dtype=src_dtype))
    out = src.astype(dtype)
    assert out.dtype == dtype
    assert not out.shares_memory(src)
    got = out.astype("complex128" if dtype == "complex64" else "float64").numpy()
    assert got.tolist() == [complex(e) if dtype == "complex64" else float(e) for e in expected]


def test_astype_of_a_strided_view_and_same_dtype_is_a_copy():
    t = base12()
    v = t.view((6,), strides=(-2,), offset=11)
    same = v.astype("float64")
    assert not same.shares_memory(t)
    assert same.numpy().tolist() == [11.0, 9.0, 7.0, 5.0, 3.0, 1.0]
    assert v.astype("int16").numpy().tolist() == [11, 9, 7, 5, 3, 1]


@pytest.mark.parametrize(
    "move", [lambda t: t.to("cpu"), lambda t: t.cpu(), lambda t: t.to(CPU)], ids=["to-cpu", "cpu", "to-pair"]
)
def test_to_the_same_device_is_an_alias(move):
    t = base12()
    m = move(t)
    assert m.device == "cpu" and m.shares_memory(t)


# ---------------------------------------------------------------------------------------------
# exports


@pytest.mark.parametrize(
    "max_version, name",
    [
        (None, "dltensor"),
        ((0, 9), "dltensor"),
        ((1, 0), "dltensor_versioned"),
        ((1, 3), "dltensor_versioned"),
        ((2, 0), "dltensor_versioned"),
    ],
)
def test_export_capsule_kind_follows_max_version(max_version, name):
    t = dlbridge.zeros((2, 3), "int16")
    c = t.__dlpack__(max_version=max_version)
    assert capsule_name(c) == name
    info = managed_info(c)
    if info["versioned"]:
        assert info["version"][0] == 1 and info["flags"] == 0


@pytest.mark.parametrize("versioned", [False, True])
def test_shared_export_describes_the_tensor(versioned):
    """byte_offset 0 (the offset is folded into data), non-NULL strides, the tensor's own memory."""
    t = base12()
    v = t.view((2, 3), strides=(-6, 2), offset=7)
    info = managed_info(v.__dlpack__(max_version=(1, 3) if versioned else None))
    assert info["data"] == data_ptr(t) + 7 * 8
    assert info["byte_offset"] == 0
    assert info["shape"] == (2, 3) and info["strides"] == (-6, 2)
    assert info["dtype"] == (2, 64, 1) and info["device"] == CPU


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_export_dtype_codes(dtype):
    info = managed_info(dlbridge.zeros((1,), dtype).__dlpack__(max_version=(1, 3)))
    assert info["dtype"] == (*DL_CODES[dtype], 1)


def test_zero_size_export_has_null_data():
    assert managed_info(dlbridge.zeros((0, 3)).__dlpack__(max_version=(1, 3)))["data"] is None
    info = managed_info(dlbridge.zeros(()).__dlpack__(max_version=(1, 3)))
    assert info["ndim"] == 0 and info["data"] is not None


@pytest.mark.parametrize("versioned", [False, True])
def test_copy_export_is_fresh_memory_flagged_is_copied(versioned, live_base):
    t = base12()
    c = t.__dlpack__(max_version=(1, 3) if versioned else None, copy=True)
    info = managed_info(c)
    assert info["data"] != data_ptr(t)
    assert dlbridge.live_allocations() == live_base + 2
    if versioned:
        assert info["flags"] == IS_COPIED
    u = dlbridge.from_dlpack(c)
    assert not u.shares_memory(t) and u.numpy().tolist() == list(range(12))
    t.numpy()[0] = 99
    assert u.numpy()[0] == 0


@pytest.mark.parametrize("copy", [None, False])
def test_export_to_own_device_shares(copy):
    t = base12()
    c = t.__dlpack__(max_version=(1, 3), dl_device=CPU, copy=copy)
    assert managed_info(c)["data"] == data_ptr(t)
    assert managed_info(c)["flags"] & IS_COPIED == 0


def test_read_only_flag_is_exported():
    a = np.arange(4.0)
    a.flags.writeable = False
    t = dlbridge.from_dlpack(a)
    assert managed_info(t.__dlpack__(max_version=(1, 3)))["flags"] == READ_ONLY
    assert managed_info(t.__dlpack__(max_version=(1, 3), copy=True))["flags"] == IS_COPIED


def test_data_ptr_is_the_first_element():
    """data_ptr() is what native code needs: the address of the first element, views included."""
    a = np.arange(12.0)
    t = dlbridge.from_dlpack(a)
    assert t.data_ptr() == a.ctypes.data == data_ptr(t)
    v = t.view((3,), strides=(-2,), offset=7)
    assert v.data_ptr() == a.ctypes.data + 7 * 8
    assert dlbridge.zeros((0,)).data_ptr() >= 0

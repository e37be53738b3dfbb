"""NumPy <-> dlbridge: memory is shared both ways (proven by writing through each side), copies
are independent, every dtype keeps its exact bytes, strided/offset/negative-stride layouts keep
their strides, and read-only data stays read-only in and out."""

import numpy as np
import pytest

import dlbridge
from support import (
    NUMPY_DTYPES,
    READ_ONLY,
    assert_same_bytes,
    capsule_name,
    data_ptr,
    managed_info,
    sample,
    relabel,
)


def test_numpy_import_shares_both_ways(live_base):
    a = np.arange(6.0).reshape(2, 3)
    t = dlbridge.from_dlpack(a)
    assert dlbridge.live_allocations() == live_base + 1, "the import is counted while held"
    assert data_ptr(t) == a.ctypes.data
    a[0, 1] = 10  # NumPy -> dlbridge
    assert t.numpy()[0, 1] == 10
    back = t.numpy()
    back[1, 2] = 20  # dlbridge -> NumPy
    assert a[1, 2] == 20
    assert np.shares_memory(back, a)
    del t, back
    assert a.tolist() == [[0, 10, 2], [3, 4, 20]]


def test_import_keeps_the_numpy_buffer_alive(live_base):
    a = np.arange(1000.0)
    t = dlbridge.from_dlpack(a)
    del a
    assert t.numpy()[999] == 999.0
    del t
    assert dlbridge.live_allocations() == live_base


def test_dlbridge_memory_shared_with_numpy(live_base):
    t = dlbridge.zeros((3,), "int32")
    a = np.from_dlpack(t)
    del t
    assert dlbridge.live_allocations() == live_base + 1, "NumPy's array holds the export"
    a[:] = [1, 2, 3]
    u = dlbridge.from_dlpack(a)  # back into dlbridge: our own export, recognised
    assert u.numpy().tolist() == [1, 2, 3]
    u.numpy()[0] = 9
    assert a[0] == 9


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_every_dtype_round_trips_through_numpy(dtype):
    a = sample(dtype).reshape(1, -1)
    t = dlbridge.from_dlpack(a)
    assert t.dtype == dtype == a.dtype.name
    assert t.shape == a.shape and t.itemsize == a.itemsize and t.nbytes == a.nbytes
    back = np.from_dlpack(t)
    assert back.dtype == a.dtype
    assert_same_bytes(back, a)
    assert np.shares_memory(back, a)
    # and through dlbridge's own memory
    c = t.copy()
    assert_same_bytes(c.numpy(), a)
    z = dlbridge.zeros(a.shape, dtype)
    z.numpy()[...] = a
    assert_same_bytes(np.from_dlpack(z), a)


def test_bfloat16_through_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = sample("bfloat16")
    t = dlbridge.zeros(values.shape, "bfloat16")
    arr = t.numpy()
    assert arr.dtype == ml_dtypes.bfloat16
    assert arr.ctypes.data == data_ptr(t)
    arr[:] = values  # write through NumPy, read through a second export
    assert_same_bytes(t.numpy(), values)
    assert t.dtype == "bfloat16"
    assert t.astype("float32").numpy().tolist()[:7] == values.astype(np.float32).tolist()[:7]
    assert np.isnan(t.astype("float64").numpy()[-1])


def test_read_only_bfloat16_gives_a_read_only_array():
    pytest.importorskip("ml_dtypes")
    raw = np.array([0x3FC0, 0xC000], dtype=np.uint16)  # 1.5, -2.0 as bfloat16 bits
    raw.flags.writeable = False
    capsule = raw.__dlpack__(max_version=(1, 0))
    relabel(capsule, code=4, bits=16)  # our unconsumed capsule, now bfloat16
    t = dlbridge.from_dlpack(capsule)
    assert t.dtype == "bfloat16" and t.read_only
    arr = t.numpy()
    assert not arr.flags.writeable
    assert arr.astype(np.float32).tolist() == [1.5, -2.0]


@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (3, 0), (2, 0, 4)])
def test_zero_dim_and_zero_size(shape):
    a = np.full(shape, 7.5)
    t = dlbridge.from_dlpack(a)
    assert t.shape == shape and t.ndim == len(shape)
    assert t.nbytes == a.nbytes
    back = t.numpy()
    assert back.shape == shape and np.array_equal(back, a)
    z = dlbridge.zeros(shape, "int16")
    assert np.from_dlpack(z).shape == shape
    assert np.from_dlpack(z.copy()).shape == shape
    if a.size:  # 0-d: shared
        back[()] = 1.0
        assert a[()] == 1.0


STRIDED = {
    "step": lambda a: a[::2],
    "offset-and-step": lambda a: a[1:, ::3],
    "reversed-rows": lambda a: a[::-1],
    "reversed-cols": lambda a: a[:, ::-2],
    "transpose": lambda a: a.T,
    "transposed-slice": lambda a: a[1::2, ::-3].T,
    "column": lambda a: a[:, 4],
    "0-d-element": lambda a: a[2, 3, ...],
}


@pytest.mark.parametrize("take", STRIDED.values(), ids=STRIDED.keys())
def test_strided_numpy_views_are_imported_shared(take):
    base = np.arange(48, dtype=np.int32).reshape(6, 8)
    a = take(base)
    t = dlbridge.from_dlpack(a)
    assert t.shape == a.shape
    assert t.strides == tuple(s // a.itemsize for s in a.strides)
    assert t.is_contiguous() == a.flags.c_contiguous
    assert data_ptr(t) == a.ctypes.data
    assert np.array_equal(t.numpy(), a)
    t.numpy()[...] = -1  # write through dlbridge: the right elements of base change
    expected = np.arange(48, dtype=np.int32).reshape(6, 8)
    take(expected)[...] = -1
    assert np.array_equal(base, expected)
    assert np.array_equal(t.copy().numpy(), take(expected))


def test_broadcast_view_imports_read_only_with_zero_stride():
    row = np.arange(4.0)
    a = np.broadcast_to(row, (3, 4))
    t = dlbridge.from_dlpack(a)
    assert t.strides == (0, 1) and t.read_only
    assert np.array_equal(t.numpy(), a)
    row[1] = 42
    assert t.numpy()[2, 1] == 42


VIEWS = {
    # name: (shape, strides, offset) on 24 elements, and the same view in NumPy
    "row-major": ((4, 6), None, 0, lambda a: a.reshape(4, 6)),
    "transpose": ((6, 4), (1, 6), 0, lambda a: a.reshape(4, 6).T),
    "offset-step": ((3, 2), (6, 3), 7, lambda a: a.reshape(4, 6)[1:, 1::3]),
    "negative": ((24,), (-1,), 23, lambda a: a[::-1]),
    "negative-2d": ((4, 3), (-6, -2), 23, lambda a: a.reshape(4, 6)[::-1, ::-2]),
    "zero-stride": ((5, 6), (0, 1), 6, lambda a: np.broadcast_to(a[6:12], (5, 6))),
}


@pytest.mark.parametrize("shape, strides, offset, same", VIEWS.values(), ids=VIEWS.keys())
def test_dlbridge_views_export_to_numpy_shared(shape, strides, offset, same):
    t = dlbridge.zeros((24,), "float32")
    t.numpy()[:] = np.arange(24)
    v = t.view(shape, strides, offset)
    arr = np.from_dlpack(v)
    want = same(np.arange(24, dtype=np.float32))
    assert arr.shape == want.shape
    assert tuple(s // 4 for s in arr.strides) == tuple(s // 4 for s in want.strides)
    assert np.array_equal(arr, want)
    assert np.shares_memory(arr, t.numpy())
    t.numpy()[offset] = -7  # the view's first element, written through the base
    assert arr.flat[0] == -7


# ---------------------------------------------------------------------------------------------
# read-only


@pytest.fixture
def read_only_array():
    a = np.arange(6.0).reshape(2, 3)
    a.flags.writeable = False
    return a


def test_read_only_array_imports_read_only(read_only_array):
    t = dlbridge.from_dlpack(read_only_array)
    assert t.read_only
    assert data_ptr(t) == read_only_array.ctypes.data
    for derived in (t.alias(), t.view((3,), strides=(2,)), dlbridge.from_dlpack(t)):
        assert derived.read_only


def test_numpy_of_read_only_tensor_is_read_only(read_only_array):
    t = dlbridge.from_dlpack(read_only_array)
    for arr in (t.numpy(), np.from_dlpack(t)):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0, 0] = 1
    assert read_only_array[0, 0] == 0


def test_legacy_export_of_read_only_data_is_refused(read_only_array):
    t = dlbridge.from_dlpack(read_only_array)
    with pytest.raises(BufferError) as e:
        t.__dlpack__()
    assert str(e.value).startswith("__dlpack__:")


def test_versioned_export_of_read_only_data_carries_the_flag(read_only_array):
    t = dlbridge.from_dlpack(read_only_array)
    c = t.__dlpack__(max_version=(1, 3))
    assert capsule_name(c) == "dltensor_versioned"
    info = managed_info(c)
    assert info["flags"] & READ_ONLY
    assert info["data"] == read_only_array.ctypes.data
    assert dlbridge.from_dlpack(c).read_only


@pytest.mark.parametrize(
    "make_copy",
    [
        lambda t: t.copy(),
        lambda t: t.astype("float32"),
        lambda t: dlbridge.from_dlpack(t, copy=True),
        lambda t: dlbridge.from_dlpack(t.__dlpack__(copy=True)),  # legacy is fine for a copy
        lambda t: dlbridge.from_dlpack(t.__dlpack__(max_version=(1, 3), copy=True)),
    ],
    ids=["copy", "astype", "from_dlpack-copy", "legacy-copy-export", "versioned-copy-export"],
)
def test_copies_of_read_only_data_are_writable(read_only_array, make_copy):
    t = dlbridge.from_dlpack(read_only_array)
    c = make_copy(t)
    assert not c.read_only
    arr = c.numpy()
    assert arr.flags.writeable
    arr[0, 0] = 5
    assert read_only_array[0, 0] == 0


def test_from_dlpack_of_read_only_with_copy_true_is_writable(read_only_array):
    c = dlbridge.from_dlpack(read_only_array, copy=True)
    assert not c.read_only and not np.shares_memory(c.numpy(), read_only_array)


# ---------------------------------------------------------------------------------------------
# copy semantics of from_dlpack and of exports


class OldProducer:
    """A producer from before DLPack 1.0: __dlpack__ takes only `stream`."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, stream=None):
        return self.a.__dlpack__()

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


class NoCopyRefuser:
    """A producer that would have to copy, so refuses copy=False (as the protocol says)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        if copy is False:
            raise BufferError("this producer must copy")
        return self.a.__dlpack__(max_version=max_version, copy=True)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


@pytest.mark.parametrize(
    "wrap",
    [lambda a: a, OldProducer, lambda a: a.__dlpack__(max_version=(1, 0))],
    ids=["ndarray", "old-producer", "capsule"],
)
@pytest.mark.parametrize("copy", [None, False, True])
def test_from_dlpack_copy_argument(wrap, copy):
    a = np.arange(5.0)
    t = dlbridge.from_dlpack(wrap(a), copy=copy)
    arr = t.numpy()
    assert arr.tolist() == [0, 1, 2, 3, 4]
    shared = copy is not True
    assert np.shares_memory(arr, a) == shared
    a[0] = 100
    assert (arr[0] == 100) == shared


@pytest.mark.parametrize("device", ["cpu", (1, 0)])
@pytest.mark.parametrize("copy", [None, False, True])
def test_from_dlpack_to_the_same_device_shares_unless_copy(device, copy):
    a = np.arange(3.0)
    t = dlbridge.from_dlpack(a, device=device, copy=copy)
    assert t.device == "cpu"
    assert np.shares_memory(t.numpy(), a) == (copy is not True)


def test_copy_false_is_refused_when_the_producer_must_copy():
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(NoCopyRefuser(np.arange(3.0)), copy=False)
    t = dlbridge.from_dlpack(NoCopyRefuser(np.arange(3.0)))
    assert t.numpy().tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "make_copy",
    [
        lambda t: t.copy(),
        lambda t: dlbridge.from_dlpack(t, copy=True),
        lambda t: np.from_dlpack(t, copy=True),  # NumPy asks __dlpack__ for a copy
        lambda t: dlbridge.from_dlpack(t.__dlpack__(copy=True)),
        lambda t: dlbridge.from_dlpack(t.__dlpack__(max_version=(1, 3), copy=True)),
    ],
    ids=["copy", "from_dlpack-copy", "numpy-copy", "legacy-copy-export", "versioned-copy-export"],
)
def test_copies_are_independent(make_copy):
    a = np.arange(4.0)
    t = dlbridge.from_dlpack(a)
    c = make_copy(t)
    arr = c if isinstance(c, np.ndarray) else c.numpy()
    assert arr.tolist() == [0, 1, 2, 3]
    assert not np.shares_memory(arr, a)
    a[0] = 50  # write through the source: the copy does not see it
    arr[1] = 60  # write through the copy: the source does not see it
    assert arr.tolist() == [0, 60, 2, 3]
    assert a.tolist() == [50, 1, 2, 3]

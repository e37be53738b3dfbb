"""Bad arguments give the documented exception types (BufferError for data that cannot be
exchanged, ValueError for bad arguments, TypeError for wrong types, MemoryError for failed
allocations, RuntimeError for device errors), library errors carry the library's message
(starting with the function name, per thread), and the library keeps working afterwards."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import dlbridge
from support import assert_library_works

# A CUDA device index that does not exist, with or without a driver.
N_CUDA = dlbridge.cuda_device_count()


def t12():
    return dlbridge.zeros((12,), "float32")


def complex_(n):
    return dlbridge.zeros((n,), "complex64")


# (call, exception, prefix of the message: the C function for errors the library reports)
BAD_CALLS = {
    # dtypes
    "dtype-unknown-name": (lambda: dlbridge.empty((2,), "float33"), ValueError, None),
    "dtype-int": (lambda: dlbridge.empty((2,), 3), TypeError, None),
    "dtype-None": (lambda: dlbridge.zeros((2,), None), TypeError, None),
    "dtype-numpy-type-class": (lambda: dlbridge.zeros((2,), object), TypeError, None),
    "astype-unknown-name": (lambda: t12().astype("nope"), ValueError, None),
    "astype-int": (lambda: t12().astype(3), TypeError, None),
    "astype-complex-to-real": (lambda: complex_(2).astype("float32"), TypeError, "dlb_tensor_cast:"),
    "astype-complex-to-int": (lambda: complex_(2).astype("int8"), TypeError, "dlb_tensor_cast:"),
    # devices
    "device-unknown-name": (lambda: dlbridge.empty((2,), device="gpu"), ValueError, None),
    "device-bad-index": (lambda: dlbridge.empty((2,), device="cuda:x"), ValueError, None),
    "device-int": (lambda: dlbridge.empty((2,), device=3), TypeError, None),
    "to-unknown-device": (lambda: t12().to("gpu"), ValueError, None),
    "to-int": (lambda: t12().to(3), TypeError, None),
    "empty-cuda-missing": (lambda: dlbridge.empty((2,), device=f"cuda:{N_CUDA}"), RuntimeError, "dlb_tensor_empty:"),
    "to-cuda-missing": (lambda: t12().to(f"cuda:{N_CUDA + 2}"), RuntimeError, "dlb_tensor_to_device:"),
    # shapes and sizes
    "negative-extent": (lambda: dlbridge.empty((3, -1)), ValueError, "dlb_tensor_empty:"),
    "float-extent": (lambda: dlbridge.empty((2.0,)), TypeError, None),
    "string-shape": (lambda: dlbridge.zeros("ab"), TypeError, None),
    "ndim-65": (lambda: dlbridge.zeros((1,) * 65), ValueError, "dlb_tensor_zeros:"),
    "byte-size-overflows": (lambda: dlbridge.empty((2**62, 8), "float64"), ValueError, "dlb_tensor_empty:"),
    "extent-2**63": (lambda: dlbridge.empty((2**63,), "uint8"), ValueError, None),
    "out-of-memory-empty": (lambda: dlbridge.empty((1 << 46,), "uint8"), MemoryError, "dlb_tensor_empty:"),
    "out-of-memory-zeros": (lambda: dlbridge.zeros((1 << 46,), "uint8"), MemoryError, "dlb_tensor_zeros:"),
    # views
    "view-past-the-end": (lambda: t12().view((13,)), ValueError, "dlb_tensor_view:"),
    "view-offset-past-the-end": (lambda: t12().view((2,), offset=11), ValueError, "dlb_tensor_view:"),
    "view-before-the-start": (lambda: t12().view((2,), offset=-1), ValueError, "dlb_tensor_view:"),
    "view-negative-stride-escapes": (lambda: t12().view((3,), strides=(-1,), offset=1), ValueError, "dlb_tensor_view:"),
    "view-strides-length": (lambda: t12().view((2,), strides=(1, 1)), ValueError, None),
    "view-string-shape": (lambda: t12().view("ab"), TypeError, None),
    # from_dlpack
    "from-int": (lambda: dlbridge.from_dlpack(3), TypeError, None),
    "from-str": (lambda: dlbridge.from_dlpack("tensor"), TypeError, None),
    "from-list": (lambda: dlbridge.from_dlpack([1.0, 2.0]), TypeError, None),
    "from-copy-not-bool": (lambda: dlbridge.from_dlpack(np.zeros(2), copy=1), TypeError, None),
    "from-unknown-device": (lambda: dlbridge.from_dlpack(np.zeros(2), device="gpu"), ValueError, None),
    "from-to-cuda-missing": (lambda: dlbridge.from_dlpack(np.zeros(2), device=f"cuda:{N_CUDA}"), RuntimeError, "dlb_tensor_to_device:"),
    "from-to-cuda-no-copy": (lambda: dlbridge.from_dlpack(np.zeros(2), device="cuda", copy=False), BufferError, None),
    # exports
    "stream-1": (lambda: t12().__dlpack__(stream=1), BufferError, None),
    "stream-minus-1": (lambda: t12().__dlpack__(stream=-1, max_version=(1, 3)), BufferError, None),
    "dl-device-cuda-missing": (lambda: t12().__dlpack__(dl_device=(2, N_CUDA)), BufferError, None),
    "dl-device-cuda-missing-copy": (lambda: t12().__dlpack__(dl_device=(2, N_CUDA), copy=True), BufferError, None),
    "dl-device-cuda-no-copy": (lambda: t12().__dlpack__(dl_device=(2, 0), copy=False), BufferError, None),
    "positional-dlpack-argument": (lambda: t12().__dlpack__(None), TypeError, None),
    "shares-memory-with-array": (lambda: t12().shares_memory(np.zeros(12)), TypeError, None),
}


@pytest.mark.parametrize("call, exc, prefix", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_arguments_raise_the_documented_type(call, exc, prefix):
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc, f"{type(info.value).__name__} is a subclass, not {exc.__name__}"
    assert str(info.value), "the message says why"
    if prefix is not None:
        assert str(info.value).startswith(prefix)
    del info
    assert_library_works()


# ctypes wraps Python ints silently into int64: 2**64 + 5 would become 5. These must be refused.
INT64_OVERFLOW = {
    "extent-2**64": lambda: dlbridge.empty((2**64,), "uint8"),
    "extent-2**64+5": lambda: dlbridge.empty((2**64 + 5,), "uint8"),
    "zeros-extent-2**64+1": lambda: dlbridge.zeros((2, 2**64 + 1), "float32"),
    "view-extent-2**64+1": lambda: t12().view((2**64 + 1,)),
    "view-stride-2**64+1": lambda: t12().view((2,), strides=(2**64 + 1,)),
    "view-offset-2**64": lambda: t12().view((1,), offset=2**64),
}


@pytest.mark.parametrize("call", INT64_OVERFLOW.values(), ids=INT64_OVERFLOW.keys())
def test_integers_beyond_int64_are_refused(call):
    with pytest.raises(ValueError):
        call()
    assert_library_works()


def test_errors_on_many_threads_carry_their_own_messages():
    """dlb_last_error() is per thread: concurrent failures never swap messages."""
    n_threads = 8
    base = dlbridge.zeros((100,), "float64")
    complex_ = {k: dlbridge.zeros((2,), "complex64" if k % 2 else "complex128") for k in range(n_threads)}
    targets = ["float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16"]
    start = threading.Barrier(n_threads)

    def work(k):
        start.wait()
        for i in range(200):
            if i % 2:
                with pytest.raises(ValueError) as e:
                    base.view((101 + k,))
                assert str(e.value).startswith("dlb_tensor_view:") and f"shape [{101 + k}]" in str(e.value)
            else:
                src = "complex64" if k % 2 else "complex128"
                with pytest.raises(TypeError) as e:
                    complex_[k].astype(targets[k])
                assert str(e.value).startswith("dlb_tensor_cast:")
                assert f"{src} to {targets[k]}" in str(e.value)
            v = base.view((10,), offset=k)  # and successes in between
            assert v.shape == (10,)
        return k

    with ThreadPoolExecutor(n_threads) as pool:
        assert sorted(pool.map(work, range(n_threads))) == list(range(n_threads))


def test_device_pairs_beyond_32_bits_are_refused_not_wrapped():
    """DLDevice's fields are 32-bit; ctypes would wrap (1 + 2**32, 0) to the CPU silently (found
    by the __dlpack__ fuzz target)."""
    for device in [(1 + 2**32, 0), (1, 2**32), (2**100, 0), (-(2**31) - 1, 0)]:
        with pytest.raises(ValueError, match="32-bit"):
            dlbridge.zeros((2,), device=device)
    t = dlbridge.zeros((2,))
    with pytest.raises(ValueError, match="32-bit"):
        t.to((1 + 2**32, 0))
    with pytest.raises(BufferError, match="32-bit"):
        t.__dlpack__(dl_device=(1 + 2**32, 0))


def test_dlpack_keywords_take_the_standards_types():
    """Enum device types (what torch.Tensor.__dlpack_device__ returns), namedtuples and IntEnum
    ints are what the standard's types allow (found by the __dlpack__ fuzz target)."""
    import collections
    import enum

    class Kind(enum.IntEnum):
        CPU = 1

    class Plain(enum.Enum):
        CPU = 1

    Pair = collections.namedtuple("Pair", "a b")
    t = dlbridge.zeros((3,))
    for dl_device in [(Kind.CPU, 0), (Plain.CPU, 0), Pair(1, 0), (1, Kind.CPU)]:
        assert np.from_dlpack(_Hand(t.__dlpack__(dl_device=dl_device))).shape == (3,)
    assert t.__dlpack__(max_version=Pair(Kind.CPU, 0)) is not None
    torch = pytest.importorskip("torch")
    t.__dlpack__(dl_device=torch.zeros(1).__dlpack_device__())
    with pytest.raises(TypeError):
        t.__dlpack__(dl_device=(True, 0))
    with pytest.raises(TypeError):
        t.__dlpack__(max_version=[1, 0])


class _Hand:
    """Hands NumPy one capsule made already."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)

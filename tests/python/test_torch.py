"""PyTorch <-> dlbridge: memory shared both ways (proven by writing through each side), every
dtype torch exchanges keeps its bytes, strided views keep their strides (negative ones are
refused by torch, cleanly), copies are independent, and deleters run correctly when torch drops
its tensors on other threads, including many threads exchanging at once."""

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import dlbridge
from support import ALL_DTYPES, assert_same_bytes, data_ptr, sample

torch = pytest.importorskip("torch")


def torch_bytes(x) -> np.ndarray:
    """A torch tensor's elements as raw bytes in row-major order (any dtype, bfloat16 too)."""
    flat = x.contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().copy() if flat.numel() else np.empty(0, np.uint8)


def require_torch_dtype(dtype: str) -> None:
    """Skips when torch itself cannot take this dtype through DLPack (asked of NumPy, not of
    dlbridge, so a dlbridge bug cannot turn into a skip)."""
    if dtype == "bfloat16":
        return
    try:
        torch.from_dlpack(np.zeros(2, dtype=dtype))
    except Exception as e:  # noqa: BLE001 - any refusal by torch means "not supported"
        pytest.skip(f"torch {torch.__version__} does not import {dtype} through DLPack: {e}")


def dlbridge_tensor(dtype: str) -> dlbridge.Tensor:
    values = sample(dtype)
    t = dlbridge.zeros(values.shape, dtype)
    t.numpy()[...] = values
    return t


@pytest.mark.parametrize(
    "hand_over",
    [
        lambda t: torch.from_dlpack(t),
        lambda t: torch.from_dlpack(t.__dlpack__()),
        lambda t: torch.from_dlpack(t.__dlpack__(max_version=(1, 3))),
        lambda t: torch.utils.dlpack.from_dlpack(t),
    ],
    ids=["object", "legacy-capsule", "versioned-capsule", "utils"],
)
def test_dlbridge_to_torch_shares_both_ways(hand_over, live_base):
    t = dlbridge.zeros((2, 3), "float32")
    x = hand_over(t)
    assert x.data_ptr() == data_ptr(t)
    assert tuple(x.shape) == (2, 3) and x.stride() == (3, 1) and x.dtype == torch.float32
    x[1, 2] = 5.0  # torch -> dlbridge
    assert t.numpy()[1, 2] == 5.0
    t.numpy()[0, 0] = -1.0  # dlbridge -> torch
    assert x[0, 0].item() == -1.0
    del t
    assert dlbridge.live_allocations() == live_base + 1, "torch holds the export"
    x.add_(1)
    del x
    assert dlbridge.live_allocations() == live_base, "torch ran the deleter"


@pytest.mark.parametrize(
    "import_",
    [lambda x: dlbridge.from_dlpack(x), lambda x: dlbridge.from_dlpack(torch.utils.dlpack.to_dlpack(x))],
    ids=["object", "capsule"],
)
def test_torch_to_dlbridge_shares_both_ways(import_, live_base):
    x = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    t = import_(x)
    assert dlbridge.live_allocations() == live_base + 1, "the import is counted while held"
    assert data_ptr(t) == x.data_ptr()
    assert (t.shape, t.strides, t.dtype) == ((2, 3), (3, 1), "float64")
    x[0, 1] = 10  # torch -> dlbridge
    assert t.numpy()[0, 1] == 10
    t.numpy()[1, 0] = 20  # dlbridge -> torch
    assert x[1, 0].item() == 20
    del x
    assert t.numpy().tolist() == [[0, 10, 2], [20, 4, 5]], "the import keeps torch's memory alive"


def test_numpy_to_dlbridge_to_torch_all_share():
    a = np.zeros(4, dtype=np.int64)
    x = torch.from_dlpack(dlbridge.from_dlpack(a))
    x[3] = 7
    assert a[3] == 7
    assert x.data_ptr() == a.ctypes.data


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_every_dtype_round_trips_through_torch(dtype):
    require_torch_dtype(dtype)
    t = dlbridge_tensor(dtype)
    want = t.numpy().view(np.uint8).copy()
    x = torch.from_dlpack(t)  # dlbridge -> torch
    assert str(x.dtype) == f"torch.{dtype}"
    assert x.data_ptr() == data_ptr(t)
    assert_same_bytes(torch_bytes(x), want)
    back = dlbridge.from_dlpack(x.clone())  # torch -> dlbridge, torch's own memory
    assert back.dtype == dtype and back.shape == t.shape
    assert_same_bytes(back.numpy().view(np.uint8), want)


def test_bfloat16_values_through_torch():
    x = torch.tensor([1.5, -2.0, 3.140625, float("inf")], dtype=torch.bfloat16)
    t = dlbridge.from_dlpack(x)
    assert t.dtype == "bfloat16"
    assert t.astype("float32").numpy().tolist() == [1.5, -2.0, 3.140625, float("inf")]
    assert torch.equal(torch.from_dlpack(t.astype("bfloat16")), x)
    pytest.importorskip("ml_dtypes")
    arr = t.numpy()
    arr[0] = 8.0  # through ml_dtypes/NumPy, seen by torch
    assert x[0].item() == 8.0


FLOAT8 = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"]


@pytest.mark.parametrize("name", FLOAT8)
def test_float8_passes_through_unchanged(name):
    """dlbridge holds and exchanges DLPack's float8 types (it does not convert them)."""
    dt = getattr(torch, name, None)
    if dt is None:
        pytest.skip(f"torch {torch.__version__} has no {name}")
    x = torch.tensor([0.5, 1.0, 2.0, 4.0]).to(dt)
    t = dlbridge.from_dlpack(x)
    assert t.dtype == name and t.itemsize == 1
    y = torch.from_dlpack(t.copy())
    assert y.dtype == dt
    assert torch.equal(y.view(torch.uint8), x.view(torch.uint8))
    with pytest.raises(TypeError):
        t.astype("float32")


def test_complex32_is_refused_as_data_that_cannot_be_exchanged():
    """torch.complex32 exports as DLPack (kDLComplex, 32 bits): a valid DLPack dtype dlbridge
    does not hold. Like other dtypes it cannot handle (opaque handles, sub-byte types) that is
    BufferError, not ValueError (which is for bad arguments)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "ComplexHalf support is experimental"
        x = torch.zeros(2, dtype=torch.complex32)
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(x)


@pytest.mark.parametrize(
    "spelling, name",
    [(torch.float16, "float16"), (torch.bfloat16, "bfloat16"), (torch.bool, "bool"), (torch.complex128, "complex128")],
)
def test_torch_dtypes_are_accepted_as_dtype(spelling, name):
    assert dlbridge.zeros((2,), spelling).dtype == name
    assert dlbridge.zeros((2,), "int8").astype(spelling).dtype == name


@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (0, 2, 5)])
def test_zero_dim_and_zero_size_through_torch(shape):
    t = dlbridge.zeros(shape, "float32")
    x = torch.from_dlpack(t)
    assert tuple(x.shape) == shape
    back = dlbridge.from_dlpack(torch.ones(shape))
    assert back.shape == shape
    assert back.numpy().sum() == (1 if shape == () else 0)


TORCH_LAYOUTS = {
    "transpose": lambda x: x.t(),
    "step": lambda x: x[:, ::2],
    "storage-offset": lambda x: x[1:, 2:],
    "expand": lambda x: x[0:1].expand(3, 6),
}


@pytest.mark.parametrize("take", TORCH_LAYOUTS.values(), ids=TORCH_LAYOUTS.keys())
def test_strided_torch_tensors_import_with_their_strides(take):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    x = take(base)
    t = dlbridge.from_dlpack(x)
    assert t.shape == tuple(x.shape) and t.strides == x.stride()
    assert data_ptr(t) == x.data_ptr()
    assert np.array_equal(t.numpy(), x.numpy())


POSITIVE_VIEWS = {
    "transpose": ((6, 4), (1, 6), 0),
    "offset-step": ((3, 2), (6, 3), 7),
    "zero-stride": ((5, 6), (0, 1), 6),
    "0-d": ((), (), 13),
}


@pytest.mark.parametrize("shape, strides, offset", POSITIVE_VIEWS.values(), ids=POSITIVE_VIEWS.keys())
def test_dlbridge_views_export_to_torch_shared(shape, strides, offset):
    t = dlbridge.zeros((24,), "float32")
    t.numpy()[:] = np.arange(24)
    v = t.view(shape, strides, offset)
    x = torch.from_dlpack(v)
    assert tuple(x.shape) == shape and x.stride() == strides
    assert x.data_ptr() == data_ptr(t) + 4 * offset
    assert np.array_equal(x.numpy(), v.numpy())
    t.numpy()[offset] = -3  # the view's first element, written through the base
    assert x.reshape(-1)[0].item() == -3


@pytest.mark.parametrize(
    "hand_over",
    [lambda v: v, lambda v: v.__dlpack__(), lambda v: v.__dlpack__(max_version=(1, 3))],
    ids=["object", "legacy", "versioned"],
)
def test_torch_refuses_negative_strides_cleanly(hand_over):
    t = dlbridge.zeros((12,), "float32")
    v = t.view((6,), strides=(-2,), offset=11)
    with pytest.raises(RuntimeError):
        torch.from_dlpack(hand_over(v))
    # nothing was freed twice or leaked (the fixture checks the count); the tensor still works
    assert v.copy().numpy().tolist() == [0.0] * 6
    assert torch.from_dlpack(v.copy()).tolist() == [0.0] * 6


def test_copy_true_from_torch_is_independent():
    x = torch.arange(4, dtype=torch.int32)
    c = dlbridge.from_dlpack(x, copy=True)
    assert data_ptr(c) != x.data_ptr()
    x[0] = 100
    c.numpy()[1] = 200
    assert c.numpy().tolist() == [0, 200, 2, 3]
    assert x.tolist() == [100, 1, 2, 3]


def test_export_copy_to_torch_is_independent():
    t = dlbridge.zeros((3,), "float32")
    x = torch.from_dlpack(t.__dlpack__(max_version=(1, 3), copy=True))
    x[0] = 1
    assert t.numpy()[0] == 0


def test_conjugated_view_is_not_imported_with_wrong_values():
    """A torch tensor with the conjugate bit set holds its values unconjugated in memory; torch's
    own __dlpack__ refuses it (BufferError). dlbridge must refuse it too or import its true
    values, never the raw memory."""
    x = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64).conj()
    assert x.is_conj()
    try:
        t = dlbridge.from_dlpack(x)
    except BufferError:
        return
    assert t.numpy().tolist() == [1 - 2j, 3 + 4j]


def test_negated_view_is_not_imported_with_wrong_values():
    """The negative bit is like the conjugate bit: the memory holds the un-negated values."""
    x = torch._neg_view(torch.tensor([1.0, 2.0]))
    assert x.is_neg() and x.tolist() == [-1.0, -2.0]
    try:
        t = dlbridge.from_dlpack(x)
    except BufferError:
        return
    assert t.numpy().tolist() == [-1.0, -2.0]


def test_sparse_tensor_is_refused():
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(torch.eye(3).to_sparse())


def test_tensor_requiring_grad_is_refused_as_torch_refuses_it():
    """torch's __dlpack__ refuses tensors that require grad (writes through the shared memory
    would bypass autograd); from_dlpack must not bypass that refusal."""
    x = torch.ones(3, requires_grad=True)
    with pytest.raises(BufferError):
        torch.from_dlpack(x)  # torch's own rule, for reference
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(x)
    assert dlbridge.from_dlpack(x.detach()).numpy().tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------
# deleters on other threads


def test_torch_drops_dlbridge_exports_on_a_worker_thread(live_base):
    n = 40
    held = []
    for i in range(n):
        t = dlbridge.zeros((100,), "float32")
        t.numpy()[:] = i
        capsule_kind = i % 3
        if capsule_kind == 0:
            held.append(torch.from_dlpack(t))
        elif capsule_kind == 1:
            held.append(torch.from_dlpack(t.__dlpack__()))
        else:
            held.append(torch.from_dlpack(t.__dlpack__(max_version=(1, 3))))
        del t  # only torch holds the memory now
    assert dlbridge.live_allocations() == live_base + n
    seen = {}

    def drop():
        seen["values"] = [int(x[50].item()) for x in held]
        held.clear()  # torch runs our deleters here, on this thread
        seen["live"] = dlbridge.live_allocations()

    worker = threading.Thread(target=drop)
    worker.start()
    worker.join()
    assert seen["values"] == list(range(n))
    assert seen["live"] == live_base


def test_dlbridge_drops_torch_imports_on_worker_threads(live_base):
    """The reverse: dlbridge runs torch's deleters when the last dlbridge handle goes, on
    whichever thread drops it."""
    tensors = [torch.full((50,), float(i)) for i in range(32)]
    imports = [dlbridge.from_dlpack(x) for x in tensors]
    views = [t.view((25,), strides=(2,)) for t in imports]
    del tensors, imports
    assert dlbridge.live_allocations() == live_base + 32

    def drop(chunk):
        values = [float(v.numpy()[3]) for v in chunk]
        chunk.clear()
        return values

    chunks = [views[i::4] for i in range(4)]
    del views
    with ThreadPoolExecutor(4) as pool:
        got = sorted(v for values in pool.map(drop, chunks) for v in values)
    assert got == [float(i) for i in range(32)]
    assert dlbridge.live_allocations() == live_base


def test_many_threads_exchange_concurrently():
    n_threads, rounds = 8, 150
    shared = np.zeros((n_threads, 64))
    start = threading.Barrier(n_threads)

    def work(k):
        start.wait()
        row = shared[k]
        for i in range(rounds):
            t = dlbridge.from_dlpack(row)  # NumPy -> dlbridge, shared
            x = torch.from_dlpack(t)  # dlbridge -> torch, shared
            x[i % 64] += 1  # write through torch
            u = dlbridge.from_dlpack(x)  # torch -> dlbridge, shared
            c = dlbridge.from_dlpack(u.__dlpack__(max_version=(1, 3)))  # capsule round trip
            assert c.shares_memory(t)
            cp = dlbridge.from_dlpack(x, copy=True)
            assert not cp.shares_memory(t)
            y = torch.from_dlpack(cp.view((32,), strides=(2,)))
            assert y.sum().item() == row[::2].sum()
            assert torch.from_dlpack(t.__dlpack__(copy=True)).data_ptr() != row.ctypes.data
        return k

    with ThreadPoolExecutor(n_threads) as pool:
        assert sorted(pool.map(work, range(n_threads))) == list(range(n_threads))
    expected = np.zeros(64)
    for i in range(rounds):
        expected[i % 64] += 1
    assert all(np.array_equal(row, expected) for row in shared)

"""CUDA from Python: devices, moves, the GPU rules and stream-correct DLPack exchange.

The plain test run (no NVIDIA driver on CI) checks what a machine without CUDA answers; the
tests that need a device skip there. `make test` runs this file a second time against the fake
CUDA driver (build/fake-cuda/libcuda.so on LD_LIBRARY_PATH), where they all run: that proves
dlbridge's logic, not the GPU. `make test-gpu` runs it on real hardware, where the PyTorch CUDA
interop tests run too.
"""

import ctypes
import gc
import threading

import numpy as np
import pytest

import dlbridge

from support import NUMPY_DTYPES as DTYPES


def _fake():
    """The fake driver's introspection functions when it is the driver in use, else None."""
    if dlbridge.cuda_device_count() == 0:
        return None
    try:
        lib = ctypes.CDLL("libcuda.so", mode=getattr(ctypes, "RTLD_NOLOAD", 4) | ctypes.RTLD_GLOBAL)
        lib.fake_cuda_misuse_count.restype = ctypes.c_long
    except (OSError, AttributeError):
        return None
    lib.fake_cuda_last_misuse.restype = ctypes.c_char_p
    lib.fake_cuda_pending_ops.restype = ctypes.c_long
    lib.fake_cuda_live_device_allocations.restype = ctypes.c_long
    return lib


FAKE = _fake()
HAS_CUDA = dlbridge.cuda_device_count() > 0
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason="no CUDA driver here; make test runs these against the fake driver"
)


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if FAKE is None and torch.cuda.is_available() else None


TORCH = _torch_cuda() if HAS_CUDA else None
needs_torch_cuda = pytest.mark.skipif(TORCH is None, reason="needs PyTorch with a real GPU (make test-gpu)")


@pytest.fixture(autouse=True)
def driver_stays_clean():
    """With the fake driver: no misuse, nothing left queued, no device memory leaked."""
    if FAKE is None:
        yield
        return
    misuse = FAKE.fake_cuda_misuse_count()
    yield
    gc.collect()
    assert FAKE.fake_cuda_misuse_count() == misuse, FAKE.fake_cuda_last_misuse().decode()
    assert FAKE.fake_cuda_pending_ops() == 0


def sample(shape, dtype):
    rng = np.random.default_rng(7)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.startswith("complex"):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 100, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# -------------------------------------------------------------------------------------------
# without a driver
# -------------------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA driver is present")
def test_without_a_driver_cuda_requests_raise_runtime_error():
    assert dlbridge.cuda_device_count() == 0
    # No driver library (CI), or a driver without a GPU: the message says which.
    missing = r"no CUDA driver library \(libcuda.so\)|found no GPU|reports no GPU"
    with pytest.raises(RuntimeError, match=missing):
        dlbridge.empty((2,), device="cuda")
    with pytest.raises(RuntimeError, match=missing):
        dlbridge.zeros((2,), device="cuda_host")
    t = dlbridge.from_dlpack(np.arange(3.0))
    with pytest.raises(RuntimeError, match=missing):
        t.to("cuda:0")


# -------------------------------------------------------------------------------------------
# devices and moves
# -------------------------------------------------------------------------------------------


@needs_cuda
def test_device_strings_and_dlpack_devices():
    n = dlbridge.cuda_device_count()
    t = dlbridge.zeros((2, 3), device="cuda")
    assert t.device == "cuda:0" and t.__dlpack_device__() == (2, 0)
    h = dlbridge.zeros((2, 3), device="cuda_host")
    assert h.device == "cuda_host" and h.__dlpack_device__() == (3, 0)
    with pytest.raises(RuntimeError, match=f"cuda:{n} does not exist"):
        dlbridge.empty((1,), device=f"cuda:{n}")
    with pytest.raises(ValueError, match="unknown device"):
        dlbridge.empty((1,), device="cuda:x")
    with pytest.raises(ValueError, match="unknown device"):
        dlbridge.empty((1,), device="gpu")
    if n >= 2:
        assert dlbridge.empty((1,), device="cuda:1").device == "cuda:1"


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_through_the_gpu(dtype):
    a = sample((3, 4, 5), dtype)
    t = dlbridge.from_dlpack(a)
    g = t.to("cuda")
    assert g.device == "cuda:0" and g.dtype == t.dtype and g.shape == (3, 4, 5)
    pinned = g.to("cuda_host")
    back = pinned.cpu()
    assert back.device == "cpu"
    np.testing.assert_array_equal(back.numpy(), a)
    np.testing.assert_array_equal(pinned.numpy(), a)  # pinned memory is host memory
    assert not back.shares_memory(t)


@needs_cuda
@pytest.mark.parametrize(
    "index",
    [
        (slice(None), slice(None), slice(None)),
        (slice(None, None, 2), slice(1, None, 3), slice(None)),
        (slice(None), slice(None), slice(None, None, -1)),
        (slice(None, None, -1), slice(None, None, -2), slice(None, None, -1)),
        (1, slice(None), 2),
    ],
)
@pytest.mark.parametrize("transpose", [False, True])
def test_strided_views_move_correctly(index, transpose):
    a = sample((6, 7, 8), "float32")
    view = a[index]
    if transpose:
        view = view.T
    g = dlbridge.from_dlpack(view).to("cuda")
    np.testing.assert_array_equal(g.cpu().numpy(), view)
    # The same view taken on the device, then copied on it and brought back.
    on_device = dlbridge.from_dlpack(a).to("cuda")
    dv = dlbridge.from_dlpack(np.ascontiguousarray(view)).to("cuda")
    np.testing.assert_array_equal(dv.copy().cpu().numpy(), view)
    np.testing.assert_array_equal(on_device.cpu().numpy(), a)


@needs_cuda
def test_broadcast_source_moves():
    a = np.broadcast_to(np.arange(5, dtype=np.int64), (4, 5))
    g = dlbridge.from_dlpack(a).to("cuda")
    np.testing.assert_array_equal(g.cpu().numpy(), a)


@needs_cuda
def test_cpu_of_a_cpu_tensor_is_an_alias_and_of_a_gpu_tensor_a_copy():
    t = dlbridge.from_dlpack(np.arange(4.0))
    assert t.cpu().shares_memory(t)
    g = t.to("cuda")
    assert g.to("cuda").shares_memory(g)  # same device: an alias
    assert g.to("cuda:0").shares_memory(g)
    c = g.cpu()
    assert c.device == "cpu" and not c.shares_memory(t)


@needs_cuda
def test_numpy_refuses_gpu_tensors_and_says_what_to_do():
    g = dlbridge.zeros((3,), device="cuda")
    with pytest.raises(TypeError, match=r"\.cpu\(\)"):
        g.numpy()
    for convert in (np.asarray, np.array, lambda x: np.array(x, copy=False), lambda x: x.__buffer__(0)):
        with pytest.raises(TypeError, match=r"\.cpu\(\)"):
            convert(g)
    np.testing.assert_array_equal(g.cpu().numpy(), np.zeros(3, np.float32))
    np.testing.assert_array_equal(np.asarray(g.cpu()), np.zeros(3, np.float32))


@needs_cuda
def test_pinned_tensors_share_with_numpy():
    h = dlbridge.zeros((4,), "int32", device="cuda_host")
    arr = h.numpy()
    arr[2] = 9
    assert np.asarray(h).ctypes.data == h.data_ptr()
    np.testing.assert_array_equal(h.to("cuda").cpu().numpy(), [0, 0, 9, 0])


@needs_cuda
def test_casts_on_the_gpu():
    g = dlbridge.from_dlpack(np.array([1.5, -2.25, 3.0])).to("cuda")
    f = g.astype("float32")
    assert f.device == "cuda:0" and f.dtype == "float32"
    np.testing.assert_array_equal(f.cpu().numpy(), np.array([1.5, -2.25, 3.0], np.float32))


@needs_cuda
def test_cross_device_moves():
    if dlbridge.cuda_device_count() < 2:
        pytest.skip("needs two devices")
    a = sample((5, 6), "float64")
    g1 = dlbridge.from_dlpack(a).to("cuda:0").to("cuda:1")
    assert g1.device == "cuda:1"
    np.testing.assert_array_equal(g1.cpu().numpy(), a)
    np.testing.assert_array_equal(dlbridge.from_dlpack(a.T).to("cuda:1").to("cuda:0").cpu().numpy(), a.T)


# -------------------------------------------------------------------------------------------
# DLPack
# -------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("stream", [None, -1, 1, 2, 0x7F00DEAD0000])
def test_dlpack_stream_values_the_spec_allows(stream):
    g = dlbridge.from_dlpack(np.arange(6.0)).to("cuda")
    for max_version in (None, (1, 3)):
        capsule = g.__dlpack__(stream=stream, max_version=max_version)
        back = dlbridge.from_dlpack(capsule)
        assert back.device == "cuda:0" and back.data_ptr() == g.data_ptr()
        np.testing.assert_array_equal(back.cpu().numpy(), np.arange(6.0))


@needs_cuda
def test_dlpack_stream_values_the_spec_refuses():
    g = dlbridge.zeros((2,), device="cuda")
    with pytest.raises(ValueError, match="stream=0"):
        g.__dlpack__(stream=0)
    with pytest.raises(ValueError, match="not a CUDA stream"):
        g.__dlpack__(stream=-5)
    with pytest.raises(TypeError, match="stream must be None or an int"):
        g.__dlpack__(stream="default")
    with pytest.raises(BufferError, match="CPU tensor"):
        dlbridge.zeros((2,)).__dlpack__(stream=1)


class Producer:
    """A CUDA producer that records what the consumer asked for."""

    def __init__(self, t):
        self.t, self.asked = t, []

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()

    def __dlpack__(self, **kwargs):
        self.asked.append(kwargs)
        return self.t.__dlpack__(**kwargs)


@needs_cuda
def test_cuda_imports_ask_for_the_legacy_default_stream_and_share():
    g = dlbridge.from_dlpack(np.arange(3.0)).to("cuda")
    p = Producer(g)
    t = dlbridge.from_dlpack(p)
    assert p.asked == [{"max_version": (1, 3), "stream": 1}]
    assert t.data_ptr() == g.data_ptr() and t.shares_memory(g)
    c = dlbridge.from_dlpack(Producer(g), copy=True)
    assert c.device == "cuda:0" and not c.shares_memory(g)
    np.testing.assert_array_equal(c.cpu().numpy(), [0.0, 1.0, 2.0])


@needs_cuda
def test_dl_device_cpu_exports_a_host_copy():
    g = dlbridge.from_dlpack(np.arange(4, dtype=np.int16)).to("cuda")
    arr = np.from_dlpack(g, device="cpu")
    np.testing.assert_array_equal(arr, np.arange(4, dtype=np.int16))
    with pytest.raises(BufferError, match="copy=False"):
        g.__dlpack__(dl_device=(1, 0), copy=False)
    moved = dlbridge.from_dlpack(g, device="cpu")
    assert moved.device == "cpu"


@needs_cuda
def test_capsules_of_gpu_tensors_release_on_any_thread():
    base = dlbridge.live_allocations()
    g = dlbridge.zeros((1000,), device="cuda")
    capsules = [g.__dlpack__(max_version=(1, 3)) for _ in range(4)]
    del g
    assert dlbridge.live_allocations() == base + 1

    def drop():
        capsules.clear()

    th = threading.Thread(target=drop)
    th.start()
    th.join()
    assert dlbridge.live_allocations() == base


# -------------------------------------------------------------------------------------------
# PyTorch on a real GPU (make test-gpu)
# -------------------------------------------------------------------------------------------


@needs_torch_cuda
def test_torch_cuda_tensors_share_both_ways():
    torch = TORCH
    x = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    t = dlbridge.from_dlpack(x)
    assert t.device == "cuda:0" and t.data_ptr() == x.data_ptr()
    y = torch.from_dlpack(t)
    assert y.data_ptr() == x.data_ptr()
    y.add_(1)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(t.cpu().numpy(), (np.arange(12).reshape(3, 4) + 1).astype(np.float32))
    with pytest.raises(TypeError, match=r"\.cpu\(\)"):
        t.numpy()


@needs_torch_cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "int8", "int64", "bool", "complex64"])
def test_torch_round_trip_every_dtype_and_strided_layout(dtype):
    torch = TORCH
    x = torch.arange(60, device="cuda").reshape(3, 4, 5).to(getattr(torch, dtype))
    for v in (x, x.transpose(0, 2), x[:, ::2, 1:], x[1]):
        t = dlbridge.from_dlpack(v)
        back = torch.from_dlpack(t.cpu())
        assert torch.equal(back, v.cpu())
        up = torch.from_dlpack(dlbridge.from_dlpack(v.cpu()).to("cuda"))
        assert torch.equal(up, v)


@needs_torch_cuda
def test_exports_consumed_on_a_non_default_stream():
    torch = TORCH
    g = dlbridge.from_dlpack(np.arange(1 << 20, dtype=np.float32)).to("cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = torch.from_dlpack(g)  # torch passes its current stream to __dlpack__
        z = y * 2
    s.synchronize()
    assert torch.equal(z.cpu(), torch.arange(1 << 20, dtype=torch.float32) * 2)


@needs_torch_cuda
def test_torch_releases_our_exports_from_another_thread():
    torch = TORCH
    base = dlbridge.live_allocations()
    y = torch.from_dlpack(dlbridge.zeros((256,), device="cuda"))
    holder = [y]
    del y
    th = threading.Thread(target=holder.clear)
    th.start()
    th.join()
    torch.cuda.synchronize()
    assert dlbridge.live_allocations() == base


# -------------------------------------------------------------------------------------------
# shutdown
# -------------------------------------------------------------------------------------------

EXIT_WITH_GPU_EXCHANGES = """
    import numpy as np
    import dlbridge

    g = dlbridge.from_dlpack(np.arange(1000.0)).to("cuda")
    capsule = g.__dlpack__(max_version=(1, 3))           # never consumed
    legacy = g.view((10,), strides=(3,)).__dlpack__()    # never consumed, a view
    again = dlbridge.from_dlpack(g.__dlpack__())         # dlbridge holds an import of its export
    pinned = g.to("cuda_host")
    arr = pinned.numpy()                                 # NumPy holds pinned memory
    cycle = [g.alias()]
    cycle.append(cycle)                                  # freed only by the final collection
    del g
    print("ok", flush=True)
"""


@needs_cuda
def test_interpreter_exits_cleanly_with_gpu_exchanges_alive(tmp_path):
    from test_process import CRASH_MARKERS, run_python

    result = run_python(EXIT_WITH_GPU_EXCHANGES, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    for marker in (*CRASH_MARKERS, "fake-cuda misuse"):
        assert marker not in result.stderr, result.stderr

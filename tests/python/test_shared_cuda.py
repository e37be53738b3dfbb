"""CUDA tensors through multiprocessing as CUDA IPC handles (cuIpcGetMemHandle in the sender,
cuIpcOpenMemHandle in the receiver). Runs against the fake driver under `make test-cuda-fake`
(whose device memory is shared between processes once exported) and on a GPU under
`make test-gpu`; skipped without a driver."""

import ctypes
import multiprocessing as mp
import os
import sys

import numpy as np
import pytest

import dlbridge

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shared_workers  # noqa: E402

pytestmark = pytest.mark.skipif(dlbridge.cuda_device_count() == 0, reason="no CUDA driver (fake or real)")


def _fake():
    try:
        lib = ctypes.CDLL("libcuda.so")
        lib.fake_cuda_misuse_count.restype = ctypes.c_long
        return lib
    except (OSError, AttributeError):
        return None


def test_a_cuda_tensor_travels_as_an_ipc_handle_and_writes_are_seen_here():
    fake = _fake()
    if fake is None:
        pytest.skip("the write-back check pokes device memory through the fake driver")
    c = dlbridge.from_dlpack(np.arange(6.0)).to("cuda:0")
    assert c.share_memory().shares_memory(c) and not c.is_shared
    ctx = mp.get_context("spawn")
    requests, replies = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=shared_workers.cuda_read_and_write, args=(requests, replies))
    p.start()
    requests.put(c)
    values, device, rc, live_device, misuse, live = replies.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0
    assert values == [0, 1, 2, 3, 4, 5] and device == "cuda:0" and rc == 0
    assert (live_device, misuse, live) == (0, 0, 0)  # the child's mapping was closed
    assert np.asarray(c.cpu()).tolist() == [0, 1, 2, 3, 4, 42]
    assert fake.fake_cuda_misuse_count() == 0


def test_a_cuda_handle_cannot_be_opened_in_its_own_process():
    from dlbridge import _shared

    c = dlbridge.zeros((3,), device="cuda:0")
    handle, fd = _shared._to_ipc(c)
    assert fd == -1 and len(handle) == _shared.HANDLE_SIZE
    with pytest.raises(RuntimeError, match="cuIpcOpenMemHandle"):
        _shared.from_ipc(handle, -1)
    with pytest.raises(BufferError):
        dlbridge.zeros((3,), device="cuda_host").share_memory()

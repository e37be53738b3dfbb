"""Tensors across processes: shared-memory tensors, IPC handles, pickling by value and
multiprocessing (spawn and fork), and the faults: forged or truncated handles, a child killed
while it holds shared tensors, interpreter shutdown with shared tensors alive."""

import ctypes
import multiprocessing as mp
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import dlbridge
from dlbridge import _shared

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import shared_workers  # noqa: E402

# A timeout for every wait on a child: a hang fails the test instead of blocking the suite.
WAIT = 60


def numbered(shape, dtype="float32", shared=False):
    t = dlbridge.zeros(shape, dtype, shared=shared)
    a = np.asarray(t)
    a[...] = np.arange(a.size).reshape(a.shape)
    return t


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def dev_shm():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


# -- shared-memory tensors --------------------------------------------------------------------


def test_shared_tensors_are_zeroed_host_memory_and_views_stay_shared():
    for make in (dlbridge.zeros, dlbridge.empty):
        t = make((3, 5), "int16", shared=True)
        assert t.is_shared and t.device == "cpu" and t.dtype == "int16" and t.shape == (3, 5)
        assert not np.asarray(t).any()
        assert t.view((5,), None, 5).is_shared and t.alias().is_shared
    assert not dlbridge.zeros((3,)).is_shared
    assert dlbridge.zeros((), shared=True).is_shared and dlbridge.zeros((0, 4), shared=True).nbytes == 0
    with pytest.raises(ValueError, match="device must be 'cpu'"):
        dlbridge.zeros((2,), device="cuda:0", shared=True)
    with pytest.raises(ValueError):
        dlbridge.zeros((-1,), shared=True)


def test_share_memory_aliases_shared_tensors_and_copies_others():
    s = numbered((4, 4), shared=True)
    assert s.share_memory().shares_memory(s)
    private = numbered((4, 6))
    strided = private.view((3, 4), (-6, 1), 12)  # rows 2, 1, 0, first four columns
    c = strided.share_memory()
    assert c.is_shared and not c.shares_memory(private) and c.is_contiguous()
    np.testing.assert_array_equal(np.asarray(c), np.asarray(strided))


# -- handles ----------------------------------------------------------------------------------


def test_a_handle_rebuilds_the_same_memory_and_the_descriptor_is_the_callers():
    t = numbered((6, 7), "float64", shared=True)
    v = t.view((3, 3), (14, 2), 1)
    handle, fd = _shared._to_ipc(v)
    try:
        assert len(handle) == _shared.HANDLE_SIZE
        u = _shared.from_ipc(handle, fd)
    finally:
        os.close(fd)  # the tensor keeps its own duplicate
    assert (u.shape, u.strides, u.dtype) == (v.shape, v.strides, v.dtype)
    np.asarray(u)[2, 2] = -1.0
    assert np.asarray(t)[4, 5] == -1.0
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_forged_and_truncated_handles_and_wrong_descriptors_are_refused():
    t = numbered((4, 4), shared=True)
    other = dlbridge.zeros((100,), shared=True)
    handle, fd = _shared._to_ipc(t)
    _, other_fd = _shared._to_ipc(other)
    fds = open_fds()
    try:
        with pytest.raises(ValueError, match="256 bytes, not 255"):
            _shared.from_ipc(handle[:-1], fd)
        with pytest.raises(ValueError, match="256 bytes, not 0"):
            _shared.from_ipc(b"", fd)
        for at in (0, 16, 40, 60, 120, 250):
            forged = bytearray(handle)
            forged[at] ^= 0x40
            with pytest.raises(ValueError):
                _shared.from_ipc(bytes(forged), fd)
        with pytest.raises(ValueError, match="holds 400"):
            _shared.from_ipc(handle, other_fd)  # a segment of another size
        with pytest.raises(ValueError, match="needs its segment's file descriptor"):
            _shared.from_ipc(handle, -1)
        with open(__file__, "rb") as f:
            with pytest.raises(ValueError, match="not a dlbridge shared-memory segment"):
                _shared.from_ipc(handle, f.fileno())
        with pytest.raises(TypeError):
            _shared.from_ipc("not bytes", fd)
        assert open_fds() == fds  # refusals keep no descriptor
    finally:
        os.close(fd)
        os.close(other_fd)
    with pytest.raises(BufferError, match="share it first"):
        _shared._to_ipc(dlbridge.zeros((2,)))
    with pytest.raises(BufferError, match="at most 8 axes"):
        _shared._to_ipc(dlbridge.zeros((1,) * 9, shared=True))


# -- pickle by value --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", sorted(dlbridge.DTYPES))
def test_pickle_keeps_dtype_shape_and_values(dtype):
    t = dlbridge.zeros((3, 4), dtype)
    # Distinct bytes in every element, whatever the dtype (bool: any non-zero byte reads back
    # as it was written, since the bytes are compared, not the values).
    src = (np.arange(t.nbytes) % 251 + 1).astype(np.uint8)
    ctypes.memmove(t.data_ptr(), src.ctypes.data, t.nbytes)
    for protocol in (2, 4, 5):
        u = pickle.loads(pickle.dumps(t, protocol=protocol))
        assert (u.dtype, u.shape, u.is_shared, u.read_only) == (dtype, (3, 4), False, False)
        got = (ctypes.c_char * u.nbytes).from_address(u.data_ptr()).raw
        assert got == src.tobytes()


def test_protocol_5_reads_the_tensor_in_place_out_of_band():
    t = numbered((64, 64), "float64")
    buffers = []
    data = pickle.dumps(t, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1 and len(data) < 200  # the 32 KiB went out of band
    view = buffers[0].raw()
    assert np.frombuffer(view, np.float64).ctypes.data == t.data_ptr()  # no copy was made
    u = pickle.loads(data, buffers=buffers)
    np.testing.assert_array_equal(np.asarray(u), np.asarray(t))
    # The unpickler uses the buffers it is given as they are: handed the tensor's own (the same
    # process), it gives the same memory back, as NumPy does.
    assert u.shares_memory(t)
    # A writable out-of-band buffer (what Dask and Ray hand the unpickler) becomes the tensor's
    # memory without a copy.
    received = bytearray(view)
    w = pickle.loads(data, buffers=[received])
    assert w.data_ptr() == np.frombuffer(received, np.uint8).ctypes.data and not w.read_only
    np.testing.assert_array_equal(np.asarray(w), np.asarray(t))
    # A read-only one is copied, into writable memory.
    r = pickle.loads(data, buffers=[bytes(view)])
    assert not r.read_only and np.asarray(r)[1, 2] == 66.0
    with pytest.raises(ValueError, match="holds 8 bytes"):
        pickle.loads(data, buffers=[bytearray(8)])
    # Strided views, 0-d, empty and read-only tensors.
    s = t.view((8, 8), (-64 * 8, 8), 63 * 64)
    np.testing.assert_array_equal(np.asarray(pickle.loads(pickle.dumps(s, protocol=5))), np.asarray(s))
    assert np.asarray(pickle.loads(pickle.dumps(dlbridge.zeros((), "int8")))).shape == ()
    assert pickle.loads(pickle.dumps(dlbridge.zeros((0, 3)))).shape == (0, 3)
    frozen = np.arange(4.0)
    frozen.flags.writeable = False
    ro = dlbridge.from_dlpack(frozen)
    assert ro.read_only
    back = pickle.loads(pickle.dumps(ro, protocol=5))
    assert not back.read_only and np.asarray(back).tolist() == [0, 1, 2, 3]


def test_a_shared_tensor_pickles_by_value_outside_multiprocessing():
    t = numbered((3,), shared=True)
    u = pickle.loads(pickle.dumps(t))
    assert not u.is_shared and not u.shares_memory(t)
    np.testing.assert_array_equal(np.asarray(u), [0, 1, 2])


# -- multiprocessing --------------------------------------------------------------------------


# fork: test_fork_start_method_in_a_clean_interpreter (forking pytest, where JAX and TensorFlow
# run threads, could deadlock the child).
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_shared_tensor_travels_as_its_memory_both_ways(method):
    ctx = mp.get_context(method)
    replies = ctx.Queue()
    t = numbered((2, 3), "float32", shared=True)
    p = ctx.Process(target=shared_workers.write_and_reply, args=(t, 42.0, replies))
    p.start()
    seen, child_shared = replies.get(timeout=WAIT)
    p.join(WAIT)
    assert p.exitcode == 0 and child_shared and seen == 0.0
    assert (np.asarray(t) == 42.0).all()  # the child's write is seen here


def test_a_tensor_made_by_a_child_outlives_it_and_writes_are_seen_both_ways():
    ctx = mp.get_context("spawn")
    requests, replies = ctx.Queue(), ctx.Queue()
    base = dlbridge.live_allocations()
    p = ctx.Process(target=shared_workers.make_and_hand_over, args=(requests, replies))
    p.start()
    t = replies.get(timeout=WAIT)
    assert t.is_shared and dlbridge.live_allocations() == base + 1
    assert (np.asarray(t) == 7.0).all()
    np.asarray(t)[3, 7] = 9.5
    requests.put("written")
    assert replies.get(timeout=WAIT) == 9.5  # our write, read by the child
    p.join(WAIT)
    assert p.exitcode == 0
    np.asarray(t)[0, 0] = 1.0  # the creator is gone; the memory is not
    assert np.asarray(t).sum() == 7.0 * 31 - 7.0 + 9.5 + 1.0


def test_fork_start_method_in_a_clean_interpreter():
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "shared_workers.py")], capture_output=True, text=True, timeout=WAIT
    )
    assert r.returncode == 0 and "fork checks passed" in r.stdout, r.stdout + r.stderr


def test_through_a_queue_shared_tensors_keep_their_memory_and_others_are_copied():
    ctx = mp.get_context("spawn")
    requests, replies = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=shared_workers.echo, args=(requests, replies))
    p.start()
    try:
        shared = numbered((5,), shared=True)
        private = numbered((5,))
        requests.put(shared)
        requests.put(private)
        back_shared = replies.get(timeout=WAIT)
        back_private = replies.get(timeout=WAIT)
        assert back_shared.is_shared and not back_private.is_shared
        np.asarray(back_shared)[0] = 100
        np.asarray(back_private)[0] = 100
        assert np.asarray(shared)[0] == 100  # the same memory, after two hops
        assert np.asarray(private)[0] == 0  # a copy
    finally:
        requests.put(None)
        p.join(WAIT)
    assert p.exitcode == 0


# -- faults -----------------------------------------------------------------------------------


def test_a_child_killed_while_holding_shared_tensors_leaks_nothing_here():
    ctx = mp.get_context("spawn")
    replies = ctx.Queue()
    t = numbered((1000,), "int64", shared=True)
    replies.put(None)  # the queue's own pipe and feeder thread exist before we count
    assert replies.get(timeout=WAIT) is None
    fds, shm, live = open_fds(), dev_shm(), dlbridge.live_allocations()
    p = ctx.Process(target=shared_workers.hold_and_wait, args=(t, replies))
    p.start()
    pid = replies.get(timeout=WAIT)
    os.kill(pid, 9)
    p.join(WAIT)
    assert p.exitcode == -9
    p.close()
    assert dlbridge.live_allocations() == live
    assert open_fds() == fds
    assert dev_shm() == shm
    assert (np.asarray(t) == 1).all()  # the child's writes stay; our tensor is intact


def test_interpreter_shutdown_with_shared_tensors_alive_is_clean():
    code = """
import multiprocessing as mp, numpy as np, dlbridge
t = dlbridge.zeros((1 << 20,), "uint8", shared=True)
views = [t.view((10,), None, i) for i in range(10)]
copy = dlbridge.zeros((4,)).share_memory()
q = mp.get_context("spawn").Queue()
q.put(t)                    # a handle waiting in the resource sharer at exit
got = q.get(timeout=60)
np.asarray(got)[0] = 5
assert np.asarray(t)[0] == 5
cycle = [t]; cycle.append(cycle)  # freed by the last garbage collection, or never
print("done")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "done" and r.stderr == ""

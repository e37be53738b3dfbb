"""Child-process bodies for test_shared.py and bench/process_bench.py. A module of its own, so
that a spawned child imports only this and dlbridge (not pytest, the test module or the
frameworks)."""

import os
import signal

import numpy as np

import dlbridge


def write_and_reply(t, value, replies):
    """Writes `value` into the received tensor and replies with what it saw first."""
    a = np.asarray(t)
    seen = float(a.flat[0])
    a[...] = value
    replies.put((seen, t.is_shared))


def make_and_hand_over(requests, replies):
    """Creates a shared tensor, sends it, waits for the parent's write, reports what it reads,
    and exits while the parent still holds the tensor."""
    t = dlbridge.zeros((4, 8), "float64", shared=True)
    np.asarray(t)[...] = 7.0
    replies.put(t)
    requests.get()  # the parent has written
    replies.put(float(np.asarray(t)[3, 7]))


def echo(requests, replies):
    """Sends back every object it receives until None."""
    while True:
        obj = requests.get()
        if obj is None:
            return
        replies.put(obj)


def hold_and_wait(t, replies):
    """Holds the received tensor and new shared tensors of its own, says so, and waits to be
    killed."""
    mine = [dlbridge.zeros((1 << 16,), "uint8", shared=True) for _ in range(3)]
    mine.append(t.share_memory())
    np.asarray(t)[...] = 1
    replies.put(os.getpid())
    signal.pause()


def cuda_read_and_write(requests, replies):
    """Reads the CUDA tensor received through `requests` and writes its last element through the fake driver's
    poke (there is no kernel to run), then closes the mapping and reports the fake's counters."""
    import ctypes

    t = requests.get()  # (not a Process argument: the Process object would keep it alive)
    values = np.asarray(t.cpu()).tolist()
    fake = ctypes.CDLL("libcuda.so")
    fake.fake_cuda_write.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
    v = np.array([42.0], np.float64)
    rc = fake.fake_cuda_write(t.data_ptr() + 8 * (len(values) - 1), v.ctypes.data, 8)
    device = t.device
    del t
    fake.fake_cuda_live_device_allocations.restype = ctypes.c_long
    fake.fake_cuda_misuse_count.restype = ctypes.c_long
    replies.put((values, device, rc, fake.fake_cuda_live_device_allocations(), fake.fake_cuda_misuse_count(),
                 dlbridge.live_allocations()))


def fork_checks():
    """The fork start method's hand-overs, run by test_shared.py in a fresh interpreter: forking
    the pytest process, where JAX and TensorFlow have started threads, could deadlock the child."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    replies = ctx.Queue()
    t = dlbridge.zeros((2, 3), "float32", shared=True)
    p = ctx.Process(target=write_and_reply, args=(t, 42.0, replies))
    p.start()
    seen, child_shared = replies.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0 and child_shared and seen == 0.0
    assert (np.asarray(t) == 42.0).all()

    requests, replies = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=make_and_hand_over, args=(requests, replies))
    p.start()
    u = replies.get(timeout=60)
    assert u.is_shared and (np.asarray(u) == 7.0).all()
    np.asarray(u)[3, 7] = 9.5
    requests.put("written")
    assert replies.get(timeout=60) == 9.5
    p.join(60)
    assert p.exitcode == 0
    np.asarray(u)[0, 0] = 1.0  # the creator is gone; the memory is not
    assert np.asarray(u).sum() == 7.0 * 31 - 7.0 + 9.5 + 1.0
    del t, u
    assert dlbridge.live_allocations() == 0


if __name__ == "__main__":
    fork_checks()
    print("fork checks passed")

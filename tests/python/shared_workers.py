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

"""Test configuration: quiet TensorFlow, JAX on the CPU, and after every test a check that
dlbridge's live-allocation count is back where it was before it.

dlbridge counts its own buffers and the foreign buffers it imported, while a dlbridge tensor or
an export of one holds them; so a leaked handle, export or import, and a deleter that never ran,
all show up here.
"""

import os

# Before anything can import TensorFlow or JAX.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import gc  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

import dlbridge  # noqa: E402

# Deleters may run on another thread a little later (a framework releasing its buffers
# asynchronously); a leak does not go away, so waiting briefly cannot hide one.
SETTLE_SECONDS = 2.0


def _forget_last_failure() -> bool:
    # pytest keeps the last failure's traceback (for post-mortem debugging), and with it the
    # frames and tensors of the failed test: without this one failure would cascade into leak
    # reports for the tests after it.
    forgot = False
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            delattr(sys, name)
            forgot = True
    return forgot


def settled_live_allocations(expected: int) -> int:
    """The live-allocation count once garbage is collected and late deleters have run. gc runs
    only when the count differs: a full collection costs ~0.15 s with torch and TensorFlow
    loaded, and tensors are normally freed by reference counting alone."""
    if _forget_last_failure():
        gc.collect()
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        n = dlbridge.live_allocations()
        if n == expected or time.monotonic() > deadline:
            return n
        gc.collect()
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def live_base():
    """The live-allocation count before the test; asserts the count is back to it afterwards."""
    if _forget_last_failure():
        gc.collect()
    base = dlbridge.live_allocations()
    yield base
    after = settled_live_allocations(base)
    assert after == base, f"dlbridge.live_allocations() is {after} after the test, {base} before: a leak"

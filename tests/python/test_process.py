"""Whole-process behaviour, each in a fresh interpreter: DLBRIDGE_LIBRARY chooses the library
(a missing file is an ImportError), and the interpreter exits cleanly while foreign frameworks,
dlbridge tensors and unconsumed capsules still hold each other's memory (deleters then run
during or after finalization and must neither crash nor need Python)."""

import os
import subprocess
import sys
import textwrap

import pytest

import dlbridge

CRASH_MARKERS = (
    "Fatal Python error",
    "Segmentation fault",
    "Traceback",
    "Exception ignored",
    "panicked",
    "double free",
    "free():",
    "corrupted",
    "Aborted",
    "core dumped",
)


def run_python(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONFAULTHANDLER="1", **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,  # so that the installed package is imported, not a source tree
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


IMPORT_CHECK = """
    try:
        import dlbridge
    except ImportError as e:
        print("ImportError:", e)
        raise SystemExit(3)
    print("loaded", dlbridge._lib.path, dlbridge.zeros((2,)).shape)
"""


def test_missing_library_file_is_an_import_error(tmp_path):
    missing = tmp_path / "no-such-dir" / "libdlbridge.so"
    result = run_python(IMPORT_CHECK, tmp_path, DLBRIDGE_LIBRARY=str(missing))
    assert result.returncode == 3, result.stdout + result.stderr
    assert str(missing) in result.stdout


def test_library_variable_chooses_the_library(tmp_path):
    """The control for the test above: the same script loads a library that exists."""
    path = dlbridge._lib.path
    result = run_python(IMPORT_CHECK, tmp_path, DLBRIDGE_LIBRARY=path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"loaded {path} (2,)"


EXIT_WITH_LIVE_EXCHANGES = """
    import threading
    import time
    import numpy as np
    import torch
    import dlbridge

    t = dlbridge.zeros((1000,), "float32")
    t.numpy()[:] = 1
    held_by_torch = torch.from_dlpack(t)                       # torch holds a dlbridge export
    held_by_torch_capsule = torch.from_dlpack(dlbridge.zeros((10,)).__dlpack__())
    del t
    holds_numpy = dlbridge.from_dlpack(np.arange(1000.0))      # dlbridge holds a NumPy import
    holds_torch = dlbridge.from_dlpack(torch.arange(10.0))     # ... and a torch import
    capsule = dlbridge.zeros((10,)).__dlpack__(max_version=(1, 3))   # never consumed
    legacy = holds_numpy.view((10,), strides=(3,)).__dlpack__()      # never consumed, of an import
    cycle = [holds_numpy.alias()]
    cycle.append(cycle)                                        # freed only by the final collection
    np_view = np.from_dlpack(holds_torch)                      # NumPy holds an export of an import
    assert dlbridge.live_allocations() == 5, dlbridge.live_allocations()
    assert float(held_by_torch.sum()) == 1000.0
    print("ok", flush=True)

    def hold(objects):  # a daemon thread still holding these when the interpreter exits
        time.sleep(60)

    {exit}
"""


@pytest.mark.parametrize(
    "exit_statement",
    [
        "",
        "raise SystemExit(0)",
        "threading.Thread(target=hold, args=([held_by_torch, holds_numpy, capsule],), daemon=True).start()",
    ],
    ids=["end-of-script", "sys-exit", "daemon-thread-holds-some"],
)
def test_interpreter_exits_cleanly_with_exchanges_alive(tmp_path, exit_statement):
    pytest.importorskip("torch")
    result = run_python(EXIT_WITH_LIVE_EXCHANGES.replace("{exit}", exit_statement), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    for marker in CRASH_MARKERS:
        assert marker not in result.stderr, result.stderr


UNDER_AN_ADDRESS_SPACE_LIMIT = """
    import gc
    import resource

    import numpy as np

    import dlbridge

    base = dlbridge.from_dlpack(np.arange(16, dtype=np.float32).reshape(4, 4))
    live = dlbridge.live_allocations()
    held = [None] * 2_000_000  # the slots, made before the limit

    def address_space():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * resource.getpagesize()

    # Python needs memory of its own to handle the MemoryError (tracebacks, frames): 16 MiB of
    # ballast, made before the limit and dropped first thing, gives it that room.
    ballast = bytearray(16 << 20)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + (96 << 20), hard))

    try:
        dlbridge.empty((1 << 30,), "float32")  # 4 GiB
        raise SystemExit("a 4 GiB tensor under a 96 MiB headroom")
    except MemoryError as e:
        assert "memory" in str(e) or "allocat" in str(e), e

    made = 0
    try:
        while made < len(held):
            held[made] = base.view((2, 1, 2, 1, 2, 2)) if made % 2 else base.alias()
            made += 1
        raise SystemExit("memory never ran out")
    except MemoryError:
        del ballast
    for i in range(made):
        held[i] = None
    del held
    gc.collect()
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    assert dlbridge.live_allocations() == live, (dlbridge.live_allocations(), live)
    assert base.numpy().ravel().tolist() == list(range(16))
    again = dlbridge.from_dlpack(np.from_dlpack(base.view((2, 1, 2, 1, 2, 2)).copy()))
    assert again.numpy().ravel().tolist() == list(range(16))
    print("ok", made > 1000)
"""


def test_running_out_of_memory_raises_memory_error_and_the_library_keeps_working(tmp_path):
    """Under an address-space limit (what `ulimit -v` sets), dlbridge calls raise MemoryError
    (the 4 GiB tensor, and the small allocations of handles once memory is exhausted), nothing
    aborts or leaks, and everything works again once memory is back."""
    result = run_python(UNDER_AN_ADDRESS_SPACE_LIMIT, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "ok True\n", result.stdout + result.stderr
    for marker in CRASH_MARKERS:
        assert marker not in result.stderr, result.stderr

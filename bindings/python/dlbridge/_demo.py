"""What the two demos (tour, matrix) share: quiet framework start-up and the closing check that
dlbridge holds no memory any more."""

from __future__ import annotations

import gc
import os
import sys
from typing import TextIO

import dlbridge


def quiet_frameworks() -> None:
    """Before TensorFlow or JAX is imported: no start-up chatter, no probing for TPUs and GPUs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def released(label: str, out: TextIO = sys.stdout) -> int:
    """Prints dlbridge's live-allocation count once garbage is collected; the exit status: 0 when
    nothing is held, 1 (a leak) otherwise."""
    gc.collect()
    live = dlbridge.live_allocations()
    print(f"\n{label}: dlbridge.live_allocations() -> {live}", file=out)
    if live != 0:
        print("error: dlbridge still holds memory (a leak)", file=sys.stderr)
        return 1
    return 0

"""Cost of dlbridge's Python calls next to NumPy's (or PyTorch's) call for the same job, measured
in the same process.

Run with `make bench` (it installs the package into .venv first). Small tensors (16 float32), so
the figures are the fixed cost of one call (including dropping the result). Each pair is measured
interleaved, best of several rounds, and reported as a ratio ours / peer: the machines here are
shared and noisy, so read the ratios, not the nanoseconds.

Targets (issue 16): every call at <= 1.5x NumPy's (the moonshot is 1.0x);
dlbridge.from_dlpack(torch) <= 1.0x np.from_dlpack(torch); torch.from_dlpack(dlbridge) <= 1.1x
torch.from_dlpack(numpy). Rows for JAX, tvm-ffi and pyarrow appear when they are installed.

`--json FILE` also writes the rows (ns per call and the ratio ours / peer) for bench/report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import timeit

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dlbridge  # noqa: E402

TARGET = 1.5


def per_call_ns(fn, number: int) -> float:
    return timeit.timeit(fn, number=number) / number * 1e9


def compare(ours, peer, rounds: int, number: int) -> tuple[float, float]:
    """Best-of-rounds ns per call for both, measured alternately so drift hits both alike."""
    best_ours = best_peer = float("inf")
    for _ in range(rounds):
        best_peer = min(best_peer, per_call_ns(peer, number))
        best_ours = min(best_ours, per_call_ns(ours, number))
    return best_ours, best_peer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rounds", type=int, nargs="?", default=7)
    ap.add_argument("--number", type=int, default=20000, help="calls per round")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    rounds, number = args.rounds, args.number
    a = np.arange(16, dtype=np.float32)
    tt = torch.arange(16, dtype=torch.float32)
    d = dlbridge.from_dlpack(a)

    cases = [
        # (what, ours, peer name, peer, target ratio or None)
        ("dlbridge.from_dlpack(numpy array)", lambda: dlbridge.from_dlpack(a),
         "np.from_dlpack(numpy array)", lambda: np.from_dlpack(a), TARGET),
        ("t.__dlpack__()", lambda: d.__dlpack__(), "a.__dlpack__()", lambda: a.__dlpack__(), TARGET),
        ("t.numpy()", lambda: d.numpy(), "np.from_dlpack(a)", lambda: np.from_dlpack(a), TARGET),
        ("t.alias()", lambda: d.alias(), "a.view()", lambda: a.view(), TARGET),
        ("t.copy() (64 B)", lambda: d.copy(), "a.copy()", lambda: a.copy(), TARGET),
        ("dlbridge.zeros((4, 4))", lambda: dlbridge.zeros((4, 4)), "np.zeros((4, 4))", lambda: np.zeros((4, 4)), TARGET),
        ("dlbridge.empty((4, 4))", lambda: dlbridge.empty((4, 4)), "np.empty((4, 4))", lambda: np.empty((4, 4)), TARGET),
        ("t.view((4, 4))", lambda: d.view((4, 4)), "a.reshape((4, 4))", lambda: a.reshape((4, 4)), TARGET),
        ("t.astype('float64')", lambda: d.astype("float64"), "a.astype(np.float64)", lambda: a.astype(np.float64), TARGET),
        ("t.shape", lambda: d.shape, "a.shape", lambda: a.shape, TARGET),
        ("t.dtype", lambda: d.dtype, "a.dtype", lambda: a.dtype, TARGET),
        ("dlbridge.from_dlpack(torch tensor)", lambda: dlbridge.from_dlpack(tt),
         "np.from_dlpack(torch tensor)", lambda: np.from_dlpack(tt), 1.0),
        ("torch.from_dlpack(dlbridge tensor)", lambda: torch.from_dlpack(d),
         "torch.from_dlpack(numpy array)", lambda: torch.from_dlpack(a), 1.1),
        ("np.from_dlpack(dlbridge tensor)", lambda: np.from_dlpack(d),
         "np.from_dlpack(numpy array)", lambda: np.from_dlpack(a), None),
    ]
    # What was timed must be right: sharing both ways.
    assert torch.from_dlpack(d).data_ptr() == a.ctypes.data
    assert dlbridge.from_dlpack(tt).numpy().ctypes.data == tt.data_ptr()
    assert dlbridge.from_dlpack(a).data_ptr() == a.ctypes.data

    try:
        import jax.numpy as jnp
    except ImportError:
        print("(JAX is not installed: no JAX row)")
    else:
        j = jnp.arange(16, dtype=jnp.float32)
        assert dlbridge.from_dlpack(j).numpy().ctypes.data == j.unsafe_buffer_pointer()
        cases.append(("dlbridge.from_dlpack(jax array)", lambda: dlbridge.from_dlpack(j),
                      "np.from_dlpack(jax array)", lambda: np.from_dlpack(j), TARGET))
    try:
        import tvm_ffi
    except ImportError:
        print("(tvm-ffi is not installed: no tvm-ffi rows)")
    else:
        v = tvm_ffi.from_dlpack(a)
        assert dlbridge.from_dlpack(v).data_ptr() == a.ctypes.data == tvm_ffi.from_dlpack(d).data_ptr()
        cases.append(("dlbridge.from_dlpack(tvm_ffi tensor)", lambda: dlbridge.from_dlpack(v),
                      "np.from_dlpack(tvm_ffi tensor)", lambda: np.from_dlpack(v), TARGET))
        cases.append(("tvm_ffi.from_dlpack(dlbridge tensor)", lambda: tvm_ffi.from_dlpack(d),
                      "tvm_ffi.from_dlpack(numpy array)", lambda: tvm_ffi.from_dlpack(a), None))
    try:
        import pyarrow as pa
    except ImportError:
        print("(pyarrow is not installed: no pyarrow row)")
    else:
        p = pa.array(a)
        assert dlbridge.from_dlpack(p).data_ptr() == np.from_dlpack(p).ctypes.data
        cases.append(("dlbridge.from_dlpack(pyarrow array)", lambda: dlbridge.from_dlpack(p),
                      "np.from_dlpack(pyarrow array)", lambda: np.from_dlpack(p), TARGET))

    print(f"dlbridge's Python calls against NumPy's, 16-element float32, best of {rounds} x {number} calls "
          f"(numpy {np.__version__}, torch {torch.__version__}, dlbridge {dlbridge.__version__})")
    failed = []
    rows = []
    for what, ours, peer_name, peer, target in cases:
        ns_ours, ns_peer = compare(ours, peer, rounds, number)
        ratio = ns_ours / ns_peer
        rows.append({"operation": what, "ns": ns_ours, "peer": peer_name, "peer_ns": ns_peer, "ratio": ratio,
                     "target": target})
        verdict = ""
        if target is not None:
            verdict = f"  target <= {target:.1f}x: {'met' if ratio <= target else 'MISSED'}"
            if ratio > target:
                failed.append(what)
        print(f"  {what:38s} {ns_ours:7.0f} ns   vs {peer_name:32s} {ns_peer:7.0f} ns   "
              f"ratio {ratio:4.2f}x{verdict}")
    if failed:
        print("targets missed (noisy machine? run again):", ", ".join(failed))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, "calls_per_round": number, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

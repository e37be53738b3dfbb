"""Cost of a DLPack hand-over from Python, dlbridge next to the same call between NumPy and
PyTorch, measured in the same process.

Run with `make bench` (it installs the package into .venv first). Small tensors, so the figures
are the fixed cost of one exchange (including dropping the result). Each pair is measured
interleaved, best of several rounds, and reported as a ratio: the machines here are shared and
noisy, so read the ratios, not the nanoseconds.

Targets (issue 3): torch.from_dlpack(dlbridge) <= 1.2x torch.from_dlpack(numpy);
dlbridge.from_dlpack(torch) <= 1.0x np.from_dlpack(torch). JAX (when installed) adds
dlbridge.from_dlpack(jax array) against np.from_dlpack(jax array), without a target.

`--json FILE` also writes the rows (ns per call and the ratio ours / peer) for bench/report.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit

import numpy as np
import torch

import dlbridge


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
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    rounds = args.rounds
    number = 20000
    a = np.arange(16, dtype=np.float32)
    tt = torch.arange(16, dtype=torch.float32)
    d = dlbridge.from_dlpack(a)

    cases = [
        # (what, ours, peer name, peer, target ratio or None)
        ("torch.from_dlpack(dlbridge tensor)", lambda: torch.from_dlpack(d),
         "torch.from_dlpack(numpy array)", lambda: torch.from_dlpack(a), 1.2),
        ("dlbridge.from_dlpack(torch tensor)", lambda: dlbridge.from_dlpack(tt),
         "np.from_dlpack(torch tensor)", lambda: np.from_dlpack(tt), 1.0),
        ("np.from_dlpack(dlbridge tensor)", lambda: np.from_dlpack(d),
         "np.from_dlpack(torch tensor)", lambda: np.from_dlpack(tt), None),
        ("dlbridge.from_dlpack(numpy array)", lambda: dlbridge.from_dlpack(a),
         "torch.from_dlpack(numpy array)", lambda: torch.from_dlpack(a), None),
        ("dlbridge tensor.__dlpack__()", lambda: d.__dlpack__(),
         "numpy array.__dlpack__()", lambda: a.__dlpack__(), None),
    ]

    try:
        import jax.numpy as jnp
    except ImportError:
        print("(JAX is not installed: no JAX row)")
    else:
        j = jnp.arange(16, dtype=jnp.float32)
        assert dlbridge.from_dlpack(j).numpy().ctypes.data == j.unsafe_buffer_pointer()
        cases.append(("dlbridge.from_dlpack(jax array)", lambda: dlbridge.from_dlpack(j),
                      "np.from_dlpack(jax array)", lambda: np.from_dlpack(j), None))

    # What was timed must be right: sharing both ways.
    assert torch.from_dlpack(d).data_ptr() == a.ctypes.data
    assert dlbridge.from_dlpack(tt).numpy().ctypes.data == tt.data_ptr()

    print(f"DLPack exchange cost, 16-element float32, best of {rounds} x {number} calls "
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

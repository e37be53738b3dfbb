"""Handing a tensor to another process through a multiprocessing queue.

Rows (each the median of --reps hand-overs to a child started once, spawn start method):
  dlbridge-shared-4KiB      a dlbridge shared tensor (its handle and descriptor travel)
  dlbridge-shared-256MiB    the same at 256 MiB
  numpy-by-value-256MiB     the same-size NumPy array, pickled by value (what a plain
                            multiprocessing user pays today)
  torch-shared-256MiB       a torch tensor after share_memory_(), through
                            torch.multiprocessing (file_descriptor strategy)

One hand-over is: the parent puts the tensor on the queue; the child takes it, reads its first
and last element (so the memory is mapped and reachable there), and puts back a small reply;
the parent waits for that reply. The ratios compare rows measured in the same run.

    python bench/process_bench.py [--reps 20] [--mib 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time


def _child(kind: str, requests, replies) -> None:  # runs in the child process
    if kind == "torch":
        import torch  # noqa: F401  (its reducers must be registered here too)
    else:
        import dlbridge  # noqa: F401
    import numpy as np

    while True:
        obj = requests.get()
        if obj is None:
            return
        if kind == "torch":
            first, last = float(obj[0]), float(obj[-1])
        else:
            a = np.asarray(obj)
            first, last = float(a[0]), float(a[-1])
        del obj
        replies.put((first, last))


def _measure(ctx, kind: str, payload, reps: int) -> float:
    requests, replies = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_child, args=(kind, requests, replies))
    p.start()
    try:
        times = []
        for i in range(reps + 2):  # two warm-up hand-overs
            t0 = time.perf_counter()
            requests.put(payload)
            replies.get(timeout=300)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        requests.put(None)
        p.join(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    import multiprocessing as mp

    import numpy as np

    import dlbridge

    big = args.mib << 20
    ctx = mp.get_context("spawn")
    rows = {}

    small_t = dlbridge.zeros((4096,), "uint8", shared=True)
    big_t = dlbridge.zeros((big,), "uint8", shared=True)
    np.asarray(big_t)[:] = 1  # touched, as a real tensor would be
    rows["dlbridge-shared-4KiB"] = _measure(ctx, "dlbridge", small_t, args.reps)
    rows[f"dlbridge-shared-{args.mib}MiB"] = _measure(ctx, "dlbridge", big_t, args.reps)
    del big_t
    arr = np.ones((big,), np.uint8)
    rows[f"numpy-by-value-{args.mib}MiB"] = _measure(ctx, "numpy", arr, max(3, args.reps // 4))
    del arr
    try:
        import torch
        import torch.multiprocessing as tmp

        tt = torch.ones((big,), dtype=torch.uint8).share_memory_()
        rows[f"torch-shared-{args.mib}MiB"] = _measure(tmp.get_context("spawn"), "torch", tt, args.reps)
        del tt
    except ImportError:
        print("torch is not installed: no torch row")

    base = rows[f"dlbridge-shared-{args.mib}MiB"]
    print(f"multiprocessing queue hand-over, median of {args.reps} ({platform.node()}, {platform.processor() or platform.machine()})")
    for name, secs in rows.items():
        print(f"  {name:28s} {secs * 1e3:9.3f} ms   {secs / base:8.2f}x dlbridge-shared-{args.mib}MiB")
    ratios = {
        "shared_big_over_small": base / rows["dlbridge-shared-4KiB"],
        "numpy_by_value_over_shared": rows[f"numpy-by-value-{args.mib}MiB"] / base,
    }
    if f"torch-shared-{args.mib}MiB" in rows:
        ratios["shared_over_torch"] = base / rows[f"torch-shared-{args.mib}MiB"]
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "seconds": rows, "ratios": ratios}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

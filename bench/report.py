"""Gathers one `make bench` run into bench/results.json and draws bench/results.png.

Inputs: the JSON rows of bench/copy_bench.py and bench/exchange_bench.py, and criterion's
estimates for the C API (`make bench` runs `cargo bench --bench exchange` three times, saving the
baselines pass1..pass3 under target/criterion/c_api; each figure is the lowest of the three
medians, and results.json keeps all three).
Every panel shows speed-up = peer time / dlbridge time (above 1: dlbridge is faster), except the
C API panel, which shows nanoseconds per call at 1 KiB and 1 GiB against the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

C_API_TARGETS_NS = {"dlpack_versioned_roundtrip": 100, "dlpack_legacy_roundtrip": 100, "alias_and_free": 50}


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
            mem_gib = round(kib / (1 << 20), 1)
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": mem_gib, "kernel": platform.release(),
            "python": platform.python_version()}


def criterion_c_api(root, passes=("pass1", "pass2", "pass3")):
    """{operation: {size: median ns}} from criterion's saved estimates: the lowest of the medians
    of the `passes` baselines that `make bench` saves (each a whole run of the exchange bench, a
    minute or so apart; this machine has slow spells lasting seconds to minutes that double every
    fixed cost), or the latest run ("new") when there are none. Returns (best, every pass)."""
    best, every = {}, {}
    base = os.path.join(root, "c_api")
    if not os.path.isdir(base):
        return best, every
    for op in sorted(os.listdir(base)):
        for size in sorted(os.listdir(os.path.join(base, op))):
            medians = []
            for name in passes:
                path = os.path.join(base, op, size, name, "estimates.json")
                if os.path.exists(path):
                    with open(path) as f:
                        medians.append(json.load(f)["median"]["point_estimate"])
            if not medians:
                path = os.path.join(base, op, size, "new", "estimates.json")
                if os.path.exists(path):
                    with open(path) as f:
                        medians.append(json.load(f)["median"]["point_estimate"])
            if medians:
                best.setdefault(op, {})[size] = min(medians)
                every.setdefault(op, {})[size] = medians
    return best, every


def human(nbytes):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes // size} {unit}"
    return f"{nbytes} B"


def draw(results, png):
    copy_rows = results["copy"]["rows"]
    ops = list(dict.fromkeys(r["operation"] for r in copy_rows))
    share_rows = results["copy"].get("share_rows", [])
    panels = len(ops) + 2 + (1 if share_rows else 0)
    cols = 3
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    axes = [ax for line in axes for ax in line]
    for ax, op in zip(axes, ops):
        mine = [r for r in copy_rows if r["operation"] == op]
        sizes = [r["bytes"] for r in mine]
        for peer in mine[0]["ratios"]:
            ax.plot(sizes, [r["ratios"][peer] for r in mine], marker="o", label=f"vs {peer}")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [human(s) for s in sizes], fontsize=7)
        ax.set_title(op, fontsize=10)
        ax.set_ylabel("speed-up (peer time / dlbridge)", fontsize=7)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")

    ax = axes[len(ops)]
    ex = results.get("exchange", {}).get("rows", [])
    if ex:
        # One line per call (the calls compared are in exchange_bench.py's output and JSON).
        ax.barh(range(len(ex)), [r["peer_ns"] / r["ns"] for r in ex], color="tab:blue")
        ax.set_yticks(range(len(ex)), [r["operation"] for r in ex], fontsize=5)
        for i, r in enumerate(ex):
            if r.get("target"):  # a red tick at the slowest speed-up the target allows
                ax.vlines(1.0 / r["target"], i - 0.4, i + 0.4, color="red", lw=1)
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("speed-up vs NumPy's (or PyTorch's) call (red: target)", fontsize=7)
    ax.set_title("Python calls vs NumPy", fontsize=10)

    ax = axes[len(ops) + 1]
    capi = results.get("c_api_ns", {})
    if capi:
        names = list(capi)
        sizes = sorted({s for v in capi.values() for s in v})
        width = 0.8 / max(1, len(sizes))
        for k, size in enumerate(sizes):
            ax.bar([i + k * width for i in range(len(names))], [capi[n].get(size, 0) for n in names], width,
                   label=size)
        for i, n in enumerate(names):
            if n in C_API_TARGETS_NS:
                ax.hlines(C_API_TARGETS_NS[n], i - 0.1, i + 0.9, color="red", lw=1)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))],
                      [n.replace("_", "\n") for n in names], fontsize=6)
        ax.set_ylabel("ns per call (red: target)", fontsize=7)
        ax.legend(fontsize=7)
    ax.set_title("C API fixed costs (criterion median, best of 3 runs)", fontsize=10)
    if share_rows:
        draw_shares(axes[len(ops) + 2], share_rows)
    for ax in axes[panels:]:
        ax.axis("off")
    m = results["machine"]
    fig.suptitle(f"dlbridge vs memcpy, NumPy, PyTorch — {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
                 f"{results['date']}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(png, dpi=90)


def draw_shares(ax, share_rows):
    """Transposes and permutations as a share of dlbridge's contiguous copy of the same bytes
    (measured beside each row in the same run): dlbridge's as bars, one per size, NumPy's and
    PyTorch's as markers, the targets as red ticks."""
    kinds = list(dict.fromkeys((r["operation"].split(" ")[0], r["itemsize"]) for r in share_rows))
    sizes = sorted({r["bytes"] for r in share_rows})
    width = 0.8 / max(1, len(sizes))
    for k, size in enumerate(sizes):
        xs, ours, numpy, torch = [], [], [], []
        for i, (dims, itemsize) in enumerate(kinds):
            row = next((r for r in share_rows if r["bytes"] == size and r["itemsize"] == itemsize
                        and r["operation"].startswith(dims)), None)
            if row is None:
                continue
            xs.append(i + k * width)
            ours.append(row["shares"]["dlbridge"])
            numpy.append(row["shares"]["numpy"])
            torch.append(row["shares"]["torch"])
        ax.bar(xs, ours, width, label=f"dlbridge, {human(size)}")
        ax.plot(xs, numpy, "k.", ms=4, label="NumPy" if k == 0 else None)
        ax.plot(xs, torch, "kx", ms=4, label="PyTorch" if k == 0 else None)
    for i, (_, itemsize) in enumerate(kinds):
        ax.hlines(0.7 if itemsize <= 2 else 0.8, i - 0.1, i + 0.9, color="red", lw=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(kinds))],
                  [f"{dims}\n{itemsize} B" for dims, itemsize in kinds], fontsize=6)
    ax.set_ylabel("share of the contiguous copy (red: target)", fontsize=7)
    ax.legend(fontsize=6)
    ax.set_title("transposes (2-D) and permutations (3-D)", fontsize=10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copy", required=True)
    ap.add_argument("--exchange", required=True)
    ap.add_argument("--criterion", default=os.path.join(os.path.dirname(__file__), "..", "target", "criterion"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results.json"))
    ap.add_argument("--png", default=os.path.join(os.path.dirname(__file__), "results.png"))
    args = ap.parse_args(argv)
    with open(args.copy) as f:
        copy = json.load(f)
    with open(args.exchange) as f:
        exchange = json.load(f)
    import numpy
    import torch

    results = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": machine(),
        "versions": {"numpy": numpy.__version__, "torch": torch.__version__},
        "copy": copy,
        "exchange": exchange,
    }
    results["c_api_ns"], results["c_api_ns_each_pass"] = criterion_c_api(args.criterion)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    draw(results, args.png)
    print(f"wrote {args.out} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

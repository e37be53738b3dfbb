"""Copies and casts: dlb_tensor_copy / dlb_tensor_cast next to memcpy, NumPy and PyTorch, in the
same process and the same run.

Run with `make bench` (or directly; DLBRIDGE_LIBRARY picks the library). For every layout and size
it times dlbridge and each peer interleaved, best of several rounds, and reports the ratio
peer time / dlbridge time (above 1: dlbridge is faster). These machines are shared and noisy: read
the ratios, not the absolute figures.

Every operation here allocates its result, as dlb_tensor_copy does: memcpy's like-for-like peer is
"allocate with np.empty, then memcpy" ("memcpy, fresh"); "memcpy, touched" copies into a buffer
that was written before, the ceiling no allocating copy reaches (first-touch page faults).

Sizes are the bytes written, 4 KiB to 256 MiB by default; `--max-mib 1024` adds 1 GiB (needs about
6 GiB of memory and a few more minutes).

Then the transposes and permutations by element size: a 2-D transpose and a 3-D permutation
(2, 0, 1) of 1-, 2-, 4-, 8- and 16-byte elements at 1, 16 and 256 MiB, each timed interleaved
with dlbridge's contiguous copy of the same number of bytes and reported as a share of it
(contiguous time / time: 1.0 is as fast as the contiguous copy; the targets are 0.8, and 0.7 for
1- and 2-byte elements), for dlbridge, NumPy (`np.ascontiguousarray`) and PyTorch
(`.t()/.permute().contiguous()`). `--shares-only` runs just these, `--no-shares` skips them,
`--itemsize N` picks element sizes.

The whole list runs `--passes` times (2 by default) and each row keeps, per candidate, the best of
all its rounds in all passes: the rounds of one pass follow each other within a second or two,
and a slow spell of the shared machine that long once made a single row three times slower than
in every other run; the passes are minutes apart.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import sys
import time

import numpy as np
import torch

LIB = os.environ.get(
    "DLBRIDGE_LIBRARY", os.path.join(os.path.dirname(__file__), "..", "target", "release", "libdlbridge.so")
)
lib = ctypes.CDLL(LIB)


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


P = ctypes.c_void_p
I64P = ctypes.POINTER(ctypes.c_int64)
lib.dlb_tensor_from_data.argtypes = [P, I64P, I64P, ctypes.c_int32, DLDataType, DLDevice, ctypes.c_bool, P, P,
                                     ctypes.POINTER(P)]
lib.dlb_tensor_view.argtypes = [P, I64P, I64P, ctypes.c_int32, ctypes.c_int64, ctypes.POINTER(P)]
lib.dlb_tensor_copy.argtypes = [P, ctypes.POINTER(P)]
lib.dlb_tensor_cast.argtypes = [P, DLDataType, ctypes.POINTER(P)]
lib.dlb_tensor_free.argtypes = [P]
lib.dlb_tensor_dltensor.argtypes = [P]
lib.dlb_tensor_dltensor.restype = ctypes.POINTER(DLTensor)
lib.dlb_last_error.restype = ctypes.c_char_p
for f in ("dlb_tensor_from_data", "dlb_tensor_view", "dlb_tensor_copy", "dlb_tensor_cast"):
    getattr(lib, f).restype = ctypes.c_int

DTYPES = {np.dtype(np.float32): (2, 32), np.dtype(np.float64): (2, 64), np.dtype(np.int32): (0, 32),
          np.dtype(np.int64): (0, 64), np.dtype(np.uint8): (1, 8), np.dtype(np.uint16): (1, 16),
          np.dtype(np.complex128): (5, 128)}

# One dtype per element size for the share-of-contiguous rows (a copy only moves bytes), and the
# same-size dtype PyTorch gets (its uint16 support is partial; int16 moves the same bytes).
SHARE_DTYPES = {1: (np.uint8, torch.uint8), 2: (np.uint16, torch.int16), 4: (np.float32, torch.float32),
                8: (np.float64, torch.float64), 16: (np.complex128, torch.complex128)}
SHARE_TARGETS = {1: 0.70, 2: 0.70, 4: 0.80, 8: 0.80, 16: 0.80}


def check(status):
    if status != 0:
        raise RuntimeError(lib.dlb_last_error().decode())


def i64s(values):
    return (ctypes.c_int64 * len(values))(*values)


def wrap(a):
    """A dlbridge tensor sharing the NumPy array `a`, with a's layout (any strides)."""
    code, bits = DTYPES[a.dtype]
    strides = [s // a.itemsize for s in a.strides]
    out = P()
    check(lib.dlb_tensor_from_data(a.ctypes.data, i64s(a.shape), i64s(strides), a.ndim, DLDataType(code, bits, 1),
                                   DLDevice(1, 0), False, None, None, ctypes.byref(out)))
    return out


def as_numpy(t, dtype, shape):
    d = lib.dlb_tensor_dltensor(t).contents
    n = int(np.prod(shape))
    buf = (ctypes.c_char * (n * np.dtype(dtype).itemsize)).from_address(d.data)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def dlb_copy(t):
    def run():
        out = P()
        check(lib.dlb_tensor_copy(t, ctypes.byref(out)))
        lib.dlb_tensor_free(out)
    return run


def dlb_cast(t, dtype):
    code, bits = DTYPES[np.dtype(dtype)]

    def run():
        out = P()
        check(lib.dlb_tensor_cast(t, DLDataType(code, bits, 1), ctypes.byref(out)))
        lib.dlb_tensor_free(out)
    return run


def per_call(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def compare(fns, rounds):
    """Best-of-`rounds` seconds per call for each of `fns` (name -> callable), interleaved so that
    the machine's drift hits all alike. Small cases repeat inside a round to reach ~5 ms.

    Each round starts one candidate further along the list, so that no candidate always runs
    right after the same one. (With a fixed order, dlbridge's contiguous copy in the 256 MiB
    one-byte permutation row, which always ran right after PyTorch's permutation, ran at 1-2 GB/s
    in every round of five runs out of six; alone it runs at 13-21 GB/s. The cause was not
    found, and the row still shows it in some runs: see docs/benchmarks.md.)"""
    numbers = {}
    for name, fn in fns.items():
        fn()  # warm up (and first-touch anything lazily made)
        once = per_call(fn, 1)
        numbers[name] = max(1, min(10000, int(0.005 / max(once, 1e-9))))
    best = {name: math.inf for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            best[name] = min(best[name], per_call(fns[name], numbers[name]))
    return best


def square(n):
    side = 1 << (int(math.log2(n)) // 2)
    return side, n // side


def cases(nbytes):
    """(operation, dlbridge callable, peers, check) for `nbytes` bytes written, float32 copies."""
    n = nbytes // 4
    out = []

    # Contiguous.
    a = np.arange(n, dtype=np.float32)
    ta = torch.from_numpy(a)
    touched = np.empty_like(a)
    touched.fill(1)

    def memcpy_fresh():
        dst = np.empty_like(a)
        ctypes.memmove(dst.ctypes.data, a.ctypes.data, a.nbytes)

    out.append(("contiguous copy", a, None, {
        "memcpy, fresh": memcpy_fresh,
        "memcpy, touched": lambda: ctypes.memmove(touched.ctypes.data, a.ctypes.data, a.nbytes),
        "a.copy()": lambda: a.copy(),
        "torch clone()": lambda: ta.clone(),
    }))

    # 2-D transpose.
    r, c = square(n)
    m = a.reshape(r, c)
    tm = torch.from_numpy(m)
    out.append(("2-D transpose", m.T, None, {
        "np.ascontiguousarray": lambda: np.ascontiguousarray(m.T),
        "torch .t().contiguous()": lambda: tm.t().contiguous(),
    }))

    # 3-D permutation (2, 0, 1) of a roughly cubic array.
    s = 1 << (int(math.log2(n)) // 3)
    cube = a.reshape(s, s, n // (s * s))
    tc = torch.from_numpy(cube)
    out.append(("3-D permutation", cube.transpose(2, 0, 1), None, {
        "np.ascontiguousarray": lambda: np.ascontiguousarray(cube.transpose(2, 0, 1)),
        "torch permute().contiguous()": lambda: tc.permute(2, 0, 1).contiguous(),
    }))

    # Stepped slice: every other row and column of a source four times the output.
    big = np.arange(4 * n, dtype=np.float32).reshape(2 * r, 2 * c)
    tb = torch.from_numpy(big)
    out.append(("stepped slice [::2, ::2]", big[::2, ::2], None, {
        "np.ascontiguousarray": lambda: np.ascontiguousarray(big[::2, ::2]),
        "torch slice .contiguous()": lambda: tb[::2, ::2].contiguous(),
    }))

    # Negative stride: each row reversed. PyTorch has no negative strides: torch.flip is its way.
    out.append(("negative stride [:, ::-1]", m[:, ::-1], None, {
        "np.ascontiguousarray": lambda: np.ascontiguousarray(m[:, ::-1]),
        "torch.flip": lambda: torch.flip(tm, [1]),
    }))

    # Broadcast: one row repeated (a zero stride).
    row = np.arange(c, dtype=np.float32)
    trow = torch.from_numpy(row)
    out.append(("broadcast (zero stride)", np.broadcast_to(row, (r, c)), None, {
        "np.ascontiguousarray": lambda: np.ascontiguousarray(np.broadcast_to(row, (r, c))),
        "torch expand().contiguous()": lambda: trow.expand(r, c).contiguous(),
    }))

    # Casts (the size is the bytes written).
    for src, dst, tdst in [(np.float64, np.float32, torch.float32), (np.int32, np.float32, torch.float32),
                           (np.int64, np.float64, torch.float64)]:
        k = nbytes // np.dtype(dst).itemsize
        x = np.arange(k, dtype=src)
        tx = torch.from_numpy(x)
        out.append((f"cast {np.dtype(src).name} to {np.dtype(dst).name}", x, dst, {
            "astype": (lambda x=x, dst=dst: x.astype(dst)),
            "torch .to(dtype)": (lambda tx=tx, tdst=tdst: tx.to(tdst)),
        }))
    return out


def share_cases(nbytes):
    """(operation, element size, source view, peers) for the rows reported as a share of dlbridge's
    contiguous copy of the same bytes: a 2-D transpose and a 3-D permutation (2, 0, 1) for every
    element size."""
    out = []
    for size, (dtype, tdtype) in SHARE_DTYPES.items():
        n = nbytes // size
        a = np.arange(n).astype(dtype)
        t = torch.from_numpy(a.view(np.int16) if dtype == np.uint16 else a)
        if t.dtype != tdtype:
            t = t.view(tdtype)
        r, c = square(n)
        m, tm = a.reshape(r, c), t.reshape(r, c)
        out.append((f"2-D transpose {r}x{c}", size, m.T, {
            "numpy": lambda m=m: np.ascontiguousarray(m.T),
            "torch": lambda tm=tm: tm.t().contiguous(),
        }))
        s = 1 << (int(math.log2(n)) // 3)
        cube, tcube = a.reshape(s, s, n // (s * s)), t.reshape(s, s, n // (s * s))
        out.append((f"3-D permutation (2, 0, 1) {s}x{s}x{n // (s * s)}", size, cube.transpose(2, 0, 1), {
            "numpy": lambda cube=cube: np.ascontiguousarray(cube.transpose(2, 0, 1)),
            "torch": lambda tcube=tcube: tcube.permute(2, 0, 1).contiguous(),
        }))
    return out


def run_share_case(op, size, src, peers, nbytes, rounds):
    """Times the copy of `src` (dlbridge, NumPy, PyTorch) interleaved with dlbridge's contiguous
    copy of the same number of bytes, and reports each as a share of that copy's speed
    (contiguous time / its time: 1.0 is as fast as the contiguous copy)."""
    contiguous = np.ascontiguousarray(src)
    t, c = wrap(src), wrap(contiguous)
    try:
        res = P()
        check(lib.dlb_tensor_copy(t, ctypes.byref(res)))
        got = as_numpy(res, src.dtype, src.shape)
        assert np.array_equal(got, contiguous), f"{op}: dlbridge's result differs from NumPy's"
        del got
        lib.dlb_tensor_free(res)
        best = compare({"contiguous": dlb_copy(c), "dlbridge": dlb_copy(t), **peers}, rounds)
    finally:
        lib.dlb_tensor_free(t)
        lib.dlb_tensor_free(c)
    return {
        "operation": op,
        "itemsize": size,
        "bytes": nbytes,
        "contiguous_s": best["contiguous"],
        "times_s": {k: v for k, v in best.items() if k != "contiguous"},
    }


def shares(row):
    return {k: row["contiguous_s"] / v for k, v in row["times_s"].items()}


def merge_best_share(old, new):
    if old is None:
        return new
    times = {k: min(v, new["times_s"][k]) for k, v in old["times_s"].items()}
    return {**new, "contiguous_s": min(old["contiguous_s"], new["contiguous_s"]), "times_s": times}


def run_case(op, src, cast_to, peers, nbytes, rounds):
    t = wrap(src)
    try:
        ours = dlb_cast(t, cast_to) if cast_to is not None else dlb_copy(t)
        # What is timed must be right: dlbridge's result against NumPy's.
        res = P()
        if cast_to is not None:
            code, bits = DTYPES[np.dtype(cast_to)]
            check(lib.dlb_tensor_cast(t, DLDataType(code, bits, 1), ctypes.byref(res)))
            expect = src.astype(cast_to)
        else:
            check(lib.dlb_tensor_copy(t, ctypes.byref(res)))
            expect = np.ascontiguousarray(src)
        got = as_numpy(res, expect.dtype, expect.shape)
        assert np.array_equal(got, expect), f"{op}: dlbridge's result differs from NumPy's"
        del got
        lib.dlb_tensor_free(res)
        best = compare({"dlbridge": ours, **peers}, rounds)
    finally:
        lib.dlb_tensor_free(t)
    return {
        "operation": op,
        "bytes": nbytes,
        "dlbridge_s": best["dlbridge"],
        "peers_s": {k: v for k, v in best.items() if k != "dlbridge"},
        "ratios": {k: v / best["dlbridge"] for k, v in best.items() if k != "dlbridge"},
    }


def human(nbytes):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes // size} {unit}"
    return f"{nbytes} B"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--passes", type=int, default=2, help="times the whole list runs (best of all)")
    ap.add_argument("--max-mib", type=int, default=256, help="largest size in MiB (1024 adds 1 GiB)")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--only", action="append", default=[],
                    help="run only operations whose name contains this text (repeatable)")
    ap.add_argument("--sizes", help="comma-separated sizes in KiB to run instead of the default list")
    ap.add_argument("--shares-only", action="store_true", help="only the share-of-contiguous rows")
    ap.add_argument("--no-shares", action="store_true", help="skip the share-of-contiguous rows")
    ap.add_argument("--itemsize", type=int, action="append", default=[],
                    help="share rows only for this element size (repeatable)")
    args = ap.parse_args(argv)

    sizes = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30]
    sizes = [s for s in sizes if s <= args.max_mib << 20]
    if args.sizes:
        sizes = [int(k) << 10 for k in args.sizes.split(",")]
    print(f"copies and casts, best of {args.rounds} rounds (3 from 256 MiB) in each of {args.passes} "
          f"passes (numpy {np.__version__}, torch {torch.__version__}, {torch.get_num_threads()} torch "
          "threads); ratio = peer time / dlbridge time")
    share_sizes = [1 << 20, 16 << 20, 256 << 20]
    share_sizes = [s for s in share_sizes if s <= args.max_mib << 20]
    if args.sizes:
        share_sizes = sizes
    rows, share_rows = {}, {}
    for p in range(args.passes):
        print(f"pass {p + 1} of {args.passes}" + (" (each row: best so far)" if p else ""), flush=True)
        for nbytes in [] if args.shares_only else sizes:
            for op, src, cast_to, peers in cases(nbytes):
                if args.only and not any(o in op for o in args.only):
                    continue
                row = run_case(op, src, cast_to, peers, nbytes, args.rounds if nbytes < 256 << 20 else 3)
                row = merge_best(rows.get((nbytes, op)), row)
                rows[(nbytes, op)] = row
                gbs = nbytes / row["dlbridge_s"] / 1e9
                ratios = "  ".join(f"{k} {v:5.2f}x" for k, v in row["ratios"].items())
                print(f"  {human(nbytes):>8} {op:28s} dlbridge {gbs:6.2f} GB/s   {ratios}", flush=True)
        if args.no_shares:
            continue
        print("  share of dlbridge's contiguous copy of the same bytes (contiguous time / time; "
              "targets 0.80, 0.70 for 1- and 2-byte elements)", flush=True)
        for nbytes in share_sizes:
            for op, size, src, peers in share_cases(nbytes):
                if args.only and not any(o in op for o in args.only):
                    continue
                if args.itemsize and size not in args.itemsize:
                    continue
                row = run_share_case(op, size, src, peers, nbytes, args.rounds if nbytes < 256 << 20 else 3)
                row = merge_best_share(share_rows.get((nbytes, op, size)), row)
                share_rows[(nbytes, op, size)] = row
                sh = shares(row)
                mark = "" if sh["dlbridge"] >= SHARE_TARGETS[size] else "  (below target)"
                print(f"  {human(nbytes):>8} {size:2d}-byte {op:38s} contiguous {nbytes / row['contiguous_s'] / 1e9:6.2f} "
                      f"GB/s  dlbridge {sh['dlbridge']:5.2f}  numpy {sh['numpy']:5.2f}  torch {sh['torch']:5.2f}{mark}",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "passes": args.passes, "rows": list(rows.values()),
                       "share_rows": [{**r, "shares": shares(r)} for r in share_rows.values()]}, f, indent=1)
    return 0


def merge_best(old, new):
    """The row with each candidate's best time from `old` (an earlier pass, or None) and `new`."""
    if old is None:
        return new
    ours = min(old["dlbridge_s"], new["dlbridge_s"])
    peers = {k: min(v, new["peers_s"][k]) for k, v in old["peers_s"].items()}
    return {**new, "dlbridge_s": ours, "peers_s": peers, "ratios": {k: v / ours for k, v in peers.items()}}


if __name__ == "__main__":
    sys.exit(main())

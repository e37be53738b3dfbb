"""Copy throughput of dlb_tensor_copy next to memcpy and NumPy, measured in the same process.

Run with `make bench`. Prints GB/s (bytes read + bytes written counted once, as the copied size)
and the ratio of dlbridge to each peer. Machines here are shared and noisy: read the ratios, not
the absolute figures. Best of N repetitions.
"""

import ctypes
import os
import sys
import time

import numpy as np

LIB = os.environ.get("DLBRIDGE_LIBRARY", os.path.join(os.path.dirname(__file__), "..", "target", "release", "libdlbridge.so"))
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
lib.dlb_tensor_from_data.argtypes = [P, I64P, I64P, ctypes.c_int32, DLDataType, DLDevice, ctypes.c_bool, P, P, ctypes.POINTER(P)]
lib.dlb_tensor_view.argtypes = [P, I64P, I64P, ctypes.c_int32, ctypes.c_int64, ctypes.POINTER(P)]
lib.dlb_tensor_copy.argtypes = [P, ctypes.POINTER(P)]
lib.dlb_tensor_free.argtypes = [P]
lib.dlb_tensor_dltensor.argtypes = [P]
lib.dlb_tensor_dltensor.restype = ctypes.POINTER(DLTensor)
lib.dlb_last_error.restype = ctypes.c_char_p
for f in ("dlb_tensor_from_data", "dlb_tensor_view", "dlb_tensor_copy"):
    getattr(lib, f).restype = ctypes.c_int


def check(status):
    if status != 0:
        raise RuntimeError(lib.dlb_last_error().decode())


def i64s(values):
    return (ctypes.c_int64 * len(values))(*values)


def wrap(a):
    """A dlbridge tensor sharing the float32 NumPy array `a` (row-major)."""
    out = P()
    check(lib.dlb_tensor_from_data(a.ctypes.data, i64s(a.shape), None, a.ndim, DLDataType(2, 32, 1), DLDevice(1, 0), False, None, None, ctypes.byref(out)))
    return out


def best(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def dlb_copy(t):
    def run():
        out = P()
        check(lib.dlb_tensor_copy(t, ctypes.byref(out)))
        lib.dlb_tensor_free(out)
    return run


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    n = 8192
    nbytes = n * n * 4
    gb = nbytes / 1e9
    a = np.arange(n * n, dtype=np.float32).reshape(n, n)
    dst = np.empty_like(a)
    t = wrap(a)

    rows = []
    # Contiguous: memcpy (ctypes.memmove), np.copyto, dlb_tensor_copy.
    memcpy = best(lambda: ctypes.memmove(dst.ctypes.data, a.ctypes.data, nbytes), reps)
    copyto = best(lambda: np.copyto(dst, a), reps)
    fresh = best(lambda: a.copy(), reps)
    dlb = best(dlb_copy(t), reps)
    # dlb_tensor_copy allocates its result, so a.copy() (allocate + copy) is the like-for-like
    # peer; memcpy and np.copyto into an already-touched buffer are the ceiling.
    rows.append(("contiguous 256 MiB float32", dlb,
                 [("a.copy() (allocates)", fresh), ("memcpy into touched buffer", memcpy), ("np.copyto into touched buffer", copyto)]))

    # Transpose: the view a.T copied to row-major.
    tv = P()
    check(lib.dlb_tensor_view(t, i64s([n, n]), i64s([1, n]), 2, 0, ctypes.byref(tv)))
    np_t = best(lambda: np.ascontiguousarray(a.T), reps)
    dlb_t = best(dlb_copy(tv), reps)
    rows.append(("transpose 8192x8192 float32", dlb_t, [("np.ascontiguousarray(a.T)", np_t)]))

    # Correctness of what was timed.
    out = P()
    check(lib.dlb_tensor_copy(tv, ctypes.byref(out)))
    d = lib.dlb_tensor_dltensor(out).contents
    got = np.ctypeslib.as_array(ctypes.cast(d.data, ctypes.POINTER(ctypes.c_float)), shape=(n, n))
    assert np.array_equal(got, a.T), "transposed copy is wrong"
    lib.dlb_tensor_free(out)
    lib.dlb_tensor_free(tv)
    lib.dlb_tensor_free(t)

    print(f"dlb_tensor_copy throughput, best of {reps} (numpy {np.__version__})")
    for name, dlb_s, peers in rows:
        print(f"  {name}: dlbridge {gb / dlb_s:6.2f} GB/s")
        for peer, s in peers:
            print(f"    vs {peer:28s} {gb / s:6.2f} GB/s  ratio dlbridge/peer = {s / dlb_s:5.2f}x")


if __name__ == "__main__":
    main()

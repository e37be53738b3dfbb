"""Builds normalize.c into a C extension linked against the dlbridge package's own library, then
hands it NumPy and PyTorch data and takes its results back (`make test-python-extension`).

The steps, each checked:
1. compile: gcc -shared -fPIC normalize.c $(python -m dlbridge --includes --libs), in a
   temporary folder;
2. `import dlbridge` first, then load the extension with ctypes: the loader resolves the
   extension's libdlbridge to the copy the package already has;
3. NumPy array and PyTorch tensor -> dlbridge.from_dlpack (shared) -> the C function (a Tensor
   passes as its `dlb_tensor *`) -> a tensor made in C -> Tensor.from_handle (owned by Python) ->
   np.from_dlpack / torch.from_dlpack (shared), values compared with NumPy's own arithmetic;
4. one libdlbridge in the process (/proc/self/maps), and dlbridge.live_allocations() back to
   where it started once everything is released.

Exit status 0 when every check passes; each failure is printed with what was found.
"""

from __future__ import annotations

import ctypes
import gc
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import dlbridge  # before the extension: its library is the one the extension must use

HERE = os.path.dirname(os.path.abspath(__file__))


def compile_extension(folder: str) -> str:
    """normalize.c -> folder/normalize.so, with the flags `python -m dlbridge` prints."""
    flags = subprocess.run(
        [sys.executable, "-m", "dlbridge", "--includes", "--libs"], check=True, capture_output=True, text=True
    ).stdout.split()
    out = os.path.join(folder, "normalize.so")
    cc = os.environ.get("CC", "gcc")
    cmd = [cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
           os.path.join(HERE, "normalize.c"), "-o", out, *flags, "-lm"]
    print("$", " ".join(cmd))
    subprocess.run(cmd, check=True)
    return out


def needed_libdlbridge(path: str) -> str:
    """The extension's NEEDED entry for libdlbridge, as readelf shows it (informational)."""
    if shutil.which("readelf") is None:
        return "(readelf not found)"
    dynamic = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    for line in dynamic.splitlines():
        if "(NEEDED)" in line and "libdlbridge" in line:
            return line.split("[", 1)[1].rstrip("]")
    return "(none)"


def mapped_libdlbridge() -> set[str]:
    """The libdlbridge files mapped into this process (the package's _libdlbridge*.so or a
    libdlbridge.so*): two entries would be two copies of the library, with two sets of globals."""
    found = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and "libdlbridge" in os.path.basename(parts[5].strip()):
                found.add(parts[5].strip())
    return found


class Checks:
    def __init__(self) -> None:
        self.failed = 0

    def check(self, ok: bool, what: str) -> None:
        print(("ok    " if ok else "FAIL  ") + what)
        self.failed += not ok


def expected(values: np.ndarray) -> np.ndarray:
    dtype = np.float32 if values.dtype == np.float32 else np.float64
    x = values.astype(dtype)
    peak = np.abs(x).max() if x.size else 0
    return x / peak if peak else x


def main() -> int:
    checks = Checks()
    library = dlbridge.get_library()
    print(f"dlbridge {dlbridge.__version__}: library {library}, headers {dlbridge.get_include()}")
    base = dlbridge.live_allocations()
    with tempfile.TemporaryDirectory(prefix="dlbridge-ext-") as folder:
        path = compile_extension(folder)
        needed = needed_libdlbridge(path)
        soname = needed.startswith("libdlbridge.so.")
        print(f"the extension records NEEDED {needed}: "
              + ("the SONAME, matched to the copy already loaded" if soname
                 else "the file name (the package's library has no SONAME): the loader finds the file "
                      "through the rpath and recognises the copy already loaded as the same file"))
        ext = ctypes.CDLL(path)
    normalize = ext.normalize_unit_max
    normalize.restype = ctypes.c_int32
    normalize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    # The same library as the package's (dlopen of the loaded file gives the loaded copy), for
    # the names of statuses and the error message.
    c_api = ctypes.CDLL(library)
    c_api.dlb_status_str.restype = c_api.dlb_last_error.restype = ctypes.c_char_p
    c_api.dlb_status_str.argtypes = [ctypes.c_int32]

    def call(t: dlbridge.Tensor) -> dlbridge.Tensor:
        out = ctypes.c_void_p()
        status = normalize(t, ctypes.byref(out))  # the Tensor passes as its dlb_tensor *
        if status:
            raise RuntimeError(f"normalize_unit_max: {c_api.dlb_status_str(status).decode()}: "
                               f"{c_api.dlb_last_error().decode()}")
        return dlbridge.Tensor.from_handle(out.value)  # owned by Python from here on

    # NumPy: float32, a transposed (strided) float64 view, int16 (cast to float64 in C).
    cases = [
        ("numpy float32", np.array([1.0, -4.0, 2.0], dtype=np.float32)),
        ("numpy float64, transposed", np.arange(12.0).reshape(3, 4).T - 3),
        ("numpy int16", np.array([[3, -6], [0, 12]], dtype=np.int16)),
        ("numpy zeros", np.zeros(3)),
    ]
    for name, a in cases:
        before = a.copy()
        t = dlbridge.from_dlpack(a)
        checks.check(t.data_ptr() == a.ctypes.data, f"{name}: dlbridge.from_dlpack shares NumPy's memory")
        r = call(t)
        back = np.from_dlpack(r)
        checks.check(back.ctypes.data == r.data_ptr(), f"{name}: np.from_dlpack shares the C result")
        want = expected(a)
        checks.check(back.dtype == want.dtype and back.shape == a.shape and np.array_equal(back, want),
                     f"{name}: {back.dtype}{list(back.shape)} = {back.ravel().tolist()}")
        checks.check(np.array_equal(a, before) and not np.shares_memory(back, a),
                     f"{name}: the input is untouched, the result is new memory")
        del t, r, back

    # PyTorch, when installed.
    try:
        import torch
    except ImportError:
        print("skip  PyTorch is not installed")
    else:
        x = torch.tensor([[0.5, -2.0], [1.0, 4.0]], dtype=torch.float32)
        t = dlbridge.from_dlpack(x)
        checks.check(t.data_ptr() == x.data_ptr(), "torch float32: dlbridge.from_dlpack shares PyTorch's memory")
        r = call(t)
        y = torch.from_dlpack(r)
        checks.check(y.data_ptr() == r.data_ptr(), "torch float32: torch.from_dlpack shares the C result")
        checks.check(y.dtype == torch.float32 and torch.equal(y, x / 4), f"torch float32: {y.tolist()}")
        del t, r
        y.mul_(2)  # the result is PyTorch's to write, and ours to free when y goes
        checks.check(float(y.abs().max()) == 2.0, "torch float32: the result is writable through PyTorch")
        del y

    maps = mapped_libdlbridge()
    checks.check(len(maps) == 1, f"one libdlbridge mapped in the process: {sorted(maps)}")
    checks.check(os.path.realpath(library) in {os.path.realpath(m) for m in maps},
                 "it is the package's library (dlbridge.get_library())")
    gc.collect()
    now = dlbridge.live_allocations()
    checks.check(now == base, f"dlbridge.live_allocations() is back to {base} (now {now})")

    if checks.failed:
        print(f"run.py: {checks.failed} check(s) failed")
        return 1
    print("run.py: the extension shares the package's library; every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The wheel that `make wheel` leaves in build/wheelhouse, installed the way users install it
# (make test-wheel):
#  1. its file name carries the tag py3-none-manylinux_<glibc>_x86_64 and it is under 3 MB;
#  2. it holds dlbridge/_libdlbridge.so (no Python version in the name, SONAME
#     libdlbridge.so.<SOVERSION>, no debug info), dlbridge/include/dlbridge.h and .hpp, LICENSE;
#  3. a fresh venv (build/wheel-test/venv) gets only NumPy (pinned as in requirements-dev.txt)
#     and the wheel; with cargo off PATH, NumPy exchanges work there, the README's Python example
#     runs there (PyTorch borrowed from .venv, after the venv's own packages), the headers are
#     found (through dlbridge.get_include() where the package has it), and a C extension linked
#     against the package's library (NEEDED libdlbridge.so.<SOVERSION>) loads without
#     LD_LIBRARY_PATH and shares the package's copy of the library;
#  4. pip accepts the wheel for other CPython versions (3.9, 3.12 and 3.13, by its tag; and a venv
#     of every other /usr/bin/python3.X imports it).
# Run from anywhere after `make wheel`; exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/build/wheel-test
VENV=$OUT/venv
PYTHON=${PYTHON:-python3}
CC=${CC:-gcc}
fail() { echo "make test-wheel: $*" >&2; exit 1; }

shopt -s nullglob
wheels=(build/wheelhouse/dlbridge-*.whl)
[[ ${#wheels[@]} -eq 1 ]] || fail "expected one wheel in build/wheelhouse (run 'make wheel'), found ${#wheels[@]}"
WHEEL=$ROOT/${wheels[0]}
name=$(basename "$WHEEL")
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
SONAME=$(${MAKE:-make} -s --no-print-directory print-soname)

# 1. The tag and the size.
[[ $name =~ ^dlbridge-${VERSION//./\\.}-py3-none-manylinux_2_[0-9]+_x86_64\.whl$ ]] \
    || fail "$name: expected dlbridge-$VERSION-py3-none-manylinux_2_<N>_x86_64.whl"
size=$(stat -c %s "$WHEEL")
(( size < 3 * 1024 * 1024 )) || fail "$name is $size bytes, over 3 MB"
echo "wheel: $name, $size bytes"

# 2. What is inside.
rm -rf "$OUT"
mkdir -p "$OUT/unpacked"
"$PYTHON" -m zipfile -e "$WHEEL" "$OUT/unpacked"
for f in dlbridge/_libdlbridge.so dlbridge/include/dlbridge.h dlbridge/include/dlbridge.hpp \
         "dlbridge-$VERSION.dist-info/licenses/LICENSE"; do
    [[ -f $OUT/unpacked/$f ]] || fail "$name lacks $f"
done
libs=("$OUT"/unpacked/dlbridge/*.so)
[[ ${#libs[@]} -eq 1 ]] || fail "$name holds ${#libs[@]} libraries in dlbridge/, expected only _libdlbridge.so"
soname=$(readelf -d "$OUT/unpacked/dlbridge/_libdlbridge.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == "$SONAME" ]] || fail "the library's SONAME is '$soname', expected $SONAME"
if readelf -S "$OUT/unpacked/dlbridge/_libdlbridge.so" | grep -q '\.debug_'; then
    fail "the library still has debug sections"
fi
cmp -s "$OUT/unpacked/dlbridge/include/dlbridge.h" include/dlbridge.h || fail "dlbridge/include/dlbridge.h differs from include/dlbridge.h"
grep -q '^License-Expression: Apache-2.0$' "$OUT/unpacked/dlbridge-$VERSION.dist-info/METADATA" \
    || fail "METADATA has no License-Expression: Apache-2.0"
echo "contents: _libdlbridge.so (SONAME $soname, no debug info), include/dlbridge.h, include/dlbridge.hpp, LICENSE"

# 3. A fresh venv with NumPy and the wheel only; cargo is not on PATH.
NUMPY_PIN=$(grep -i '^numpy==' bindings/python/requirements-dev.txt | cut -d' ' -f1)
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$NUMPY_PIN" "$WHEEL"
RUN=(env -u DLBRIDGE_LIBRARY -u PYTHONPATH -u LD_LIBRARY_PATH "PATH=$VENV/bin:/usr/bin:/bin")
if "${RUN[@]}" bash -c 'command -v cargo' > /dev/null; then
    fail "cargo is on the clean PATH ($("${RUN[@]}" bash -c 'command -v cargo')): the check would not prove the wheel needs none"
fi
echo "--- NumPy and dlbridge in $VENV (nothing else installed, no cargo on PATH)"
"${RUN[@]}" python - "$VENV" <<'EOF'
import os, sys
import numpy as np
import dlbridge
from dlbridge import _lib

venv = os.path.realpath(sys.argv[1])
assert os.path.realpath(dlbridge.__file__).startswith(venv + os.sep), dlbridge.__file__
a = np.arange(6, dtype=np.float64)
t = dlbridge.from_dlpack(a)
c = dlbridge.from_dlpack(a, copy=True)
t.numpy()[0] = 42.0
assert a[0] == 42.0 and c.numpy()[0] == 0.0 and not c.shares_memory(t)
del t, c
assert dlbridge.live_allocations() == 0
assert os.path.basename(_lib.path) == "_libdlbridge.so", _lib.path
if hasattr(dlbridge, "get_include"):
    include = dlbridge.get_include()
    print(f"dlbridge.get_include() = {include}")
else:
    include = os.path.join(os.path.dirname(dlbridge.__file__), "include")
    print("dlbridge.get_include() does not exist (yet): checked the package's include/ instead")
for header in ("dlbridge.h", "dlbridge.hpp"):
    assert os.path.isfile(os.path.join(include, header)), f"{header} not in {include}"
print(f"installed: {_lib.path}, dlb_version() = {_lib.lib.dlb_version().decode()}")
EOF

# The README's example needs PyTorch, which this venv does not get (PyPI's torch is the 4 GB CUDA
# build): .venv's site-packages is appended to sys.path (after this venv's own, so dlbridge and
# NumPy still come from here) for that one run.
DEV_SITE=$("$ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "--- examples/python/readme_example.py in $VENV (PyTorch from .venv)"
"${RUN[@]}" python - "$VENV" "$DEV_SITE" examples/python/readme_example.py <<'EOF'
import os, runpy, site, sys
venv, dev_site, script = sys.argv[1:]
site.addsitedir(dev_site)
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
import dlbridge, numpy
for module in (dlbridge, numpy):
    assert os.path.realpath(module.__file__).startswith(os.path.realpath(venv) + os.sep), module.__file__
EOF

# A C extension linked against the package's library records NEEDED <SONAME>; once the package
# has loaded its library by path, the loader matches that SONAME to it: no LD_LIBRARY_PATH, one copy.
PKG=$("${RUN[@]}" python -c 'import dlbridge, os; print(os.path.dirname(dlbridge.__file__))')
cat > "$OUT/ext.c" <<'EOF'
#include "dlbridge.h"
const char *ext_version(void) { return dlb_version(); }
EOF
"$CC" -shared -fPIC -I"$PKG/include" "$OUT/ext.c" -L"$PKG" -l:_libdlbridge.so -o "$OUT/ext.so"
needed=$(readelf -d "$OUT/ext.so" | sed -n 's/.*(NEEDED).*\[\(libdlbridge.*\)\]/\1/p')
[[ $needed == "$SONAME" ]] || fail "the extension records NEEDED '$needed', expected $SONAME"
"${RUN[@]}" python - "$OUT/ext.so" "$SONAME" <<'EOF'
import ctypes, sys
import dlbridge
from dlbridge import _lib

ext = ctypes.CDLL(sys.argv[1])
ext.ext_version.restype = ctypes.c_char_p
version = ext.ext_version().decode()
with open("/proc/self/maps") as f:
    copies = {line.split()[-1] for line in f if "dlbridge" in line and ".so" in line and "ext.so" not in line}
assert copies == {_lib.path}, f"the library is mapped from {copies}, expected only {_lib.path}"
print(f"C extension with NEEDED {sys.argv[2]}: dlb_version() = {version}, one copy of the library loaded")
EOF

# 4. Other Python versions.
host=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
for py in /usr/bin/python3.[0-9]*; do
    [[ $py =~ /python3\.[0-9]+$ ]] || continue
    v=${py#/usr/bin/python}
    [[ $v == "$host" ]] && continue
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || continue
    echo "--- Python $v: a venv with the wheel"
    rm -rf "$OUT/venv-$v"
    "$py" -m venv "$OUT/venv-$v"
    "$OUT/venv-$v/bin/pip" install --quiet --disable-pip-version-check "$WHEEL"
    env -u DLBRIDGE_LIBRARY "$OUT/venv-$v/bin/python" -c 'import dlbridge, sys; from dlbridge import _lib; print(sys.version.split()[0], _lib.lib.dlb_version().decode())'
done
for v in 3.9 3.12 3.13; do
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --python-version "$v" --only-binary=:all: \
        --no-deps --target "$OUT/target-$v" "$WHEEL" || fail "pip refuses the wheel for Python $v"
    [[ -f $OUT/target-$v/dlbridge/_libdlbridge.so ]] || fail "no library after installing for Python $v"
done
echo "pip accepts the wheel for Python 3.9, 3.12 and 3.13"
echo "make test-wheel: passed"

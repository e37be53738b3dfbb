#!/usr/bin/env bash
# Programs built from an installed dlbridge, the way users build them (make test-install):
#  1. make install into a staging prefix under build/install-test, and into a DESTDIR;
#  2. a C program (consumer.c) through pkg-config: against the shared library (readelf must show
#     NEEDED <SONAME>, not a path) and against the static library (pkg-config --static);
#  3. a C++ program (consumer.cpp) through CMake's find_package(dlbridge) and dlbridge::dlbridge,
#     and consumer.c through dlbridge::dlbridge_static;
#  4. the prefix is moved elsewhere: the programs run again (the shared library found by its
#     SONAME through LD_LIBRARY_PATH) and are rebuilt against the moved prefix (the .pc file and
#     the CMake package are relocatable);
#  5. make uninstall removes every file install put there (and the DESTDIR copy likewise).
# pkg-config and CMake are the pinned PyPI packages in .venv (bindings/python/requirements-dev.txt).
# Run from anywhere after `make build`; exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
SRC=$ROOT/tests/install
OUT=$ROOT/build/install-test
MAKE=${MAKE:-make}
PKG_CONFIG=$ROOT/.venv/bin/pkg-config
CMAKE=$ROOT/.venv/bin/cmake
CC=${CC:-gcc}
CXX=${CXX:-g++}
CFLAGS=(-std=c11 -Wall -Wextra -Werror -pedantic)

for tool in "$PKG_CONFIG" "$CMAKE"; do
    [[ -x $tool ]] || { echo "missing $tool (make test-install installs it into .venv)" >&2; exit 2; }
done
[[ -f target/release/libdlbridge.so ]] || { echo "run 'make build' first" >&2; exit 2; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
SONAME=$(readelf -d target/release/libdlbridge.so | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ -n $SONAME ]] || { echo "target/release/libdlbridge.so has no SONAME" >&2; exit 1; }
echo "dlbridge $VERSION, SONAME $SONAME"

step() { printf '\n==== %s ====\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

# needed_ok <program>: NEEDED names the SONAME, never a path or the unversioned name.
needed_ok() {
    local needed
    needed=$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*dlbridge.*\)\]/\1/p')
    echo "$1: NEEDED $needed"
    [[ $needed == "$SONAME" ]] || fail "$1 records NEEDED '$needed', expected $SONAME"
}
# no_dlbridge_needed <program>: statically linked, nothing of dlbridge needed at run time.
no_dlbridge_needed() {
    if readelf -d "$1" | grep -q 'NEEDED.*dlbridge'; then fail "$1 needs libdlbridge.so"; fi
}
# build_c <prefix> <outdir>: consumer.c through pkg-config, shared and static.
build_c() {
    local prefix=$1 out=$2
    mkdir -p "$out"
    export PKG_CONFIG_PATH=$prefix/lib/pkgconfig PKG_CONFIG_LIBDIR=$prefix/lib/pkgconfig
    echo "pkg-config --cflags --libs dlbridge: $("$PKG_CONFIG" --cflags --libs dlbridge)"
    # shellcheck disable=SC2046  # pkg-config's output is meant to be split into words
    "$CC" "${CFLAGS[@]}" "$SRC/consumer.c" -o "$out/consumer_c" $("$PKG_CONFIG" --cflags --libs dlbridge)
    # The static library: -ldlbridge would pick the .so, so ask for the archive by name.
    local static_libs
    static_libs=$("$PKG_CONFIG" --static --libs dlbridge)
    echo "pkg-config --static --libs dlbridge: $static_libs"
    # shellcheck disable=SC2046
    "$CC" "${CFLAGS[@]}" "$SRC/consumer.c" -o "$out/consumer_c_static" \
        $("$PKG_CONFIG" --cflags dlbridge) ${static_libs/-ldlbridge/-l:libdlbridge.a}
    unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR
    needed_ok "$out/consumer_c"
    no_dlbridge_needed "$out/consumer_c_static"
}
# build_cmake <prefix> <builddir>: tests/install/CMakeLists.txt against the installed package.
build_cmake() {
    rm -rf "$2"
    "$CMAKE" -S "$SRC" -B "$2" -DCMAKE_PREFIX_PATH="$1" -DDLBRIDGE_VERSION="$VERSION" \
        -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" > "$2.log" 2>&1 \
        || { cat "$2.log"; fail "cmake configure against $1"; }
    "$CMAKE" --build "$2" -j 4 >> "$2.log" 2>&1 || { cat "$2.log"; fail "cmake build against $1"; }
    grep -q "dlbridge_DIR:PATH=$1/lib/cmake/dlbridge" "$2/CMakeCache.txt" \
        || fail "CMake found dlbridge somewhere other than $1"
    needed_ok "$2/consumer_cpp"
    no_dlbridge_needed "$2/consumer_c_static"
}
# run_all <lib dir or ""> <programs...>: runs each, with LD_LIBRARY_PATH when given.
run_all() {
    local libdir=$1
    shift
    local p
    for p in "$@"; do
        echo "--- $p${libdir:+ (LD_LIBRARY_PATH=$libdir)}"
        if [[ -n $libdir ]]; then LD_LIBRARY_PATH=$libdir "$p"; else "$p"; fi || fail "$p"
    done
}
# installed_files <root>: every file and link under root, relative.
installed_files() { (cd "$1" && find . \( -type f -o -type l \) | sort); }

rm -rf "$OUT"
mkdir -p "$OUT"
PREFIX=$OUT/prefix

step "make install PREFIX=$PREFIX"
"$MAKE" -s --no-print-directory install PREFIX="$PREFIX"
installed_files "$PREFIX" | tee "$OUT/installed.txt"
for f in include/dlbridge.h "lib/libdlbridge.so.$VERSION" "lib/$SONAME" lib/libdlbridge.so \
         lib/libdlbridge.a lib/pkgconfig/dlbridge.pc lib/cmake/dlbridge/dlbridgeConfig.cmake \
         lib/cmake/dlbridge/dlbridgeConfigVersion.cmake; do
    [[ -e $PREFIX/$f ]] || fail "make install did not install $f"
done
[[ -f $PREFIX/lib/libdlbridge.so.$VERSION && ! -L $PREFIX/lib/libdlbridge.so.$VERSION ]] \
    || fail "libdlbridge.so.$VERSION is not the real file"
[[ $(readlink "$PREFIX/lib/libdlbridge.so") == "$SONAME" ]] || fail "libdlbridge.so -> $SONAME"
if [[ -f include/dlbridge.hpp ]]; then
    [[ -f $PREFIX/include/dlbridge.hpp ]] || fail "include/dlbridge.hpp exists but was not installed"
fi
grep -q "$ROOT" "$PREFIX/lib/pkgconfig/dlbridge.pc" "$PREFIX"/lib/cmake/dlbridge/*.cmake \
    && fail "an installed .pc or CMake file names an absolute path"

step "C through pkg-config"
build_c "$PREFIX" "$OUT/c"
run_all "$PREFIX/lib" "$OUT/c/consumer_c"
run_all "" "$OUT/c/consumer_c_static"
if [[ -f $PREFIX/include/dlbridge.hpp ]]; then
    echo '#include <dlbridge.hpp>' | "$CXX" -std=c++17 -fsyntax-only -I"$PREFIX/include" -x c++ - \
        || fail "the installed dlbridge.hpp does not compile"
    echo "installed dlbridge.hpp compiles"
fi

step "C++ through CMake find_package(dlbridge)"
build_cmake "$PREFIX" "$OUT/cmake"
run_all "" "$OUT/cmake/consumer_cpp" "$OUT/cmake/consumer_c_static"

step "the prefix moved to $OUT/moved/prefix"
mkdir -p "$OUT/moved"
mv "$PREFIX" "$OUT/moved/prefix"
MOVED=$OUT/moved/prefix
# The programs built before the move find the library by its SONAME.
run_all "$MOVED/lib" "$OUT/c/consumer_c" "$OUT/cmake/consumer_cpp"
run_all "" "$OUT/c/consumer_c_static" "$OUT/cmake/consumer_c_static"
# Rebuilt against the moved prefix: the .pc file and the CMake package follow it.
build_c "$MOVED" "$OUT/c-moved"
run_all "$MOVED/lib" "$OUT/c-moved/consumer_c"
run_all "" "$OUT/c-moved/consumer_c_static"
build_cmake "$MOVED" "$OUT/cmake-moved"
run_all "" "$OUT/cmake-moved/consumer_cpp" "$OUT/cmake-moved/consumer_c_static"

step "make uninstall PREFIX=$MOVED"
"$MAKE" -s --no-print-directory uninstall PREFIX="$MOVED"
left=$(installed_files "$MOVED")
[[ -z $left ]] || fail "make uninstall left: $left"

step "DESTDIR staging: make install DESTDIR=$OUT/destdir PREFIX=/opt/dlbridge LIBDIR=/opt/dlbridge/lib64"
STAGE=$OUT/destdir
"$MAKE" -s --no-print-directory install DESTDIR="$STAGE" PREFIX=/opt/dlbridge LIBDIR=/opt/dlbridge/lib64
[[ $(installed_files "$STAGE") == "$(sed 's|^\./lib/|./opt/dlbridge/lib64/|; s|^\./include/|./opt/dlbridge/include/|' "$OUT/installed.txt" | sort)" ]] \
    || fail "DESTDIR staging installed other files: $(installed_files "$STAGE")"
grep -q "$STAGE" "$STAGE"/opt/dlbridge/lib64/pkgconfig/dlbridge.pc && fail "the .pc file names DESTDIR"
# The staged tree is usable where it lies, thanks to the relative paths (LIBDIR is not PREFIX/lib
# here: the .pc file and the CMake package reach include/ from lib64/).
PKG_CONFIG_LIBDIR=$STAGE/opt/dlbridge/lib64/pkgconfig "$PKG_CONFIG" --cflags dlbridge \
    | grep -q -- "-I$STAGE/opt/dlbridge/lib64/pkgconfig/../../include" \
    || fail "pkg-config --cflags for the staged tree: $(PKG_CONFIG_LIBDIR=$STAGE/opt/dlbridge/lib64/pkgconfig "$PKG_CONFIG" --cflags dlbridge)"
"$MAKE" -s --no-print-directory uninstall DESTDIR="$STAGE" PREFIX=/opt/dlbridge LIBDIR=/opt/dlbridge/lib64
left=$(installed_files "$STAGE")
[[ -z $left ]] || fail "make uninstall DESTDIR=... left: $left"

printf '\nall install tests passed\n'

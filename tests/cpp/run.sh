#!/usr/bin/env bash
# Builds and runs the tests of include/dlbridge.hpp (the header-only C++17 wrapper) three ways:
# plain, under valgrind, and rebuilt with AddressSanitizer + UndefinedBehaviorSanitizer. Also
# builds and runs two programs that include the official dlpack.h before and after dlbridge.hpp.
# Every program is compiled with -std=c++17 -Wall -Wextra -Werror -pedantic.
#
# Run from anywhere after `make build`; needs target/release/libdlbridge.so and the official
# header at build/official-dlpack/dlpack/dlpack.h (the Makefile puts it there: `make test-cpp`).
# Outputs go to build/cpp/. Exits non-zero if anything fails.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
LIBDIR=$ROOT/target/release
OUT=$ROOT/build/cpp
SRC=tests/cpp

for f in "$LIBDIR/libdlbridge.so" include/dlbridge.h include/dlbridge.hpp \
         build/official-dlpack/dlpack/dlpack.h; do
    if [[ ! -f $f ]]; then
        echo "missing $f (build the library with 'make build'; 'make test-cpp' also provides" \
             "the official header)" >&2
        exit 2
    fi
done

CXX=${CXX:-g++}
CXXFLAGS=(-std=c++17 -Wall -Wextra -Werror -pedantic -g -Iinclude)
OFFICIAL=(-Ibuild/official-dlpack)
LDFLAGS=(-L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -ldlbridge -pthread)
SANITIZE=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

# shellcheck source=../run_modes.sh
source tests/run_modes.sh

# build <output dir> <extra compiler flags...>: every program into that directory.
build() {
    local dir=$1
    shift
    mkdir -p "$dir"
    "$CXX" "${CXXFLAGS[@]}" "$@" "$SRC/test_hpp.cpp" -o "$dir/test_hpp" "${LDFLAGS[@]}"
    local order
    for order in a b; do
        "$CXX" "${CXXFLAGS[@]}" "${OFFICIAL[@]}" "$@" "$SRC/include_order_$order.cpp" \
            -o "$dir/include_order_$order" "${LDFLAGS[@]}"
    done
}

PROGRAMS=(test_hpp include_order_a include_order_b)

section "build (plain)"
build "$OUT/plain"

section "build (AddressSanitizer + UBSan)"
build "$OUT/asan" "${SANITIZE[@]}"

section "run (plain)"
for p in "${PROGRAMS[@]}"; do run "$p" "$OUT/plain/$p"; done

run_valgrind "$OUT/plain" "${PROGRAMS[@]}"
run_sanitized "$OUT/asan" detect_leaks=1 "${PROGRAMS[@]}"
summary "C++ wrapper tests"

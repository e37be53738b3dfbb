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

failures=()
MODE=""
section() {
    MODE=$*
    printf '\n==== %s ====\n' "$*"
}

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

# run <label> <command...>: runs one program, records a failure instead of stopping.
run() {
    local label=$1
    shift
    echo "--- $label"
    if "$@"; then
        echo "--- $label: ok"
    else
        local rc=$?
        echo "--- $label: FAILED (exit $rc)"
        failures+=("$MODE: $label")
    fi
}

section "build (plain)"
build "$OUT/plain"

section "build (AddressSanitizer + UBSan)"
build "$OUT/asan" "${SANITIZE[@]}"

section "run (plain)"
for p in "${PROGRAMS[@]}"; do run "$p" "$OUT/plain/$p"; done

section "run (valgrind)"
if command -v valgrind >/dev/null; then
    # Fail on any memory error and on definitely lost bytes; reachable blocks (thread-locals,
    # one-time runtime state) are not errors.
    VALGRIND=(valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
              --show-leak-kinds=definite)
    for p in "${PROGRAMS[@]}"; do run "$p" "${VALGRIND[@]}" "$OUT/plain/$p"; done
else
    echo "valgrind not found" >&2
    failures+=("valgrind missing")
fi

section "run (AddressSanitizer + UBSan)"
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for p in "${PROGRAMS[@]}"; do run "$p" "$OUT/asan/$p"; done
unset ASAN_OPTIONS UBSAN_OPTIONS

section "summary"
if ((${#failures[@]})); then
    printf 'FAILED: %s\n' "${failures[@]}"
    exit 1
fi
echo "all C++ wrapper tests passed"

#!/usr/bin/env bash
# Builds and runs the C conformance programs three ways: plain, under valgrind, and rebuilt with
# AddressSanitizer + UndefinedBehaviorSanitizer. Also checks that dlbridge.h and the official
# dlpack.h can be included in either order from C11 and C++17, and that the static library links.
#
# Run from the repository root after `make build`; needs include/dlbridge.h and the
# official header at build/official-dlpack/dlpack/dlpack.h (the Makefile puts it there).
# Outputs go to build/c/. Exits non-zero if anything fails.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
LIBDIR=$ROOT/target/release
OUT=$ROOT/build/c
SRC=tests/c

for f in "$LIBDIR/libdlbridge.so" include/dlbridge.h build/official-dlpack/dlpack/dlpack.h; do
    if [[ ! -f $f ]]; then
        echo "missing $f (build the library with 'make build'; the Makefile provides" \
             "the official header)" >&2
        exit 2
    fi
done

CC=${CC:-gcc}
CXX=${CXX:-g++}
CFLAGS=(-std=c11 -Wall -Wextra -Werror -pedantic -g -Iinclude -I"$SRC")
CXXFLAGS=(-std=c++17 -Wall -Wextra -Werror -g -Iinclude)
OFFICIAL=(-Ibuild/official-dlpack)
LDFLAGS=(-L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -ldlbridge -pthread)
SANITIZE=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)

# shellcheck source=../run_modes.sh
source tests/run_modes.sh

# build <output dir> <extra compiler flags...>: every program into that directory.
build() {
    local dir=$1
    shift
    mkdir -p "$dir"
    "$CC" "${CFLAGS[@]}" "$@" "$SRC/test_api.c" -o "$dir/test_api" "${LDFLAGS[@]}"
    "$CC" "${CFLAGS[@]}" "$@" "$SRC/test_threads.c" -o "$dir/test_threads" "${LDFLAGS[@]}"
    "$CC" "${CFLAGS[@]}" "$@" "$SRC/test_oom.c" -o "$dir/test_oom" "${LDFLAGS[@]}"
    # The ABI test: ours and the official layout come from separate translation units.
    "$CC" "${CFLAGS[@]}" "$@" -c "$SRC/test_abi_ours.c" -o "$dir/test_abi_ours.o"
    "$CC" "${CFLAGS[@]}" "${OFFICIAL[@]}" "$@" -c "$SRC/test_abi_official.c" \
        -o "$dir/test_abi_official.o"
    "$CC" "${CFLAGS[@]}" "$@" "$SRC/test_abi.c" "$dir/test_abi_ours.o" "$dir/test_abi_official.o" \
        -o "$dir/test_abi" "${LDFLAGS[@]}"
    local order
    for order in a b; do
        "$CC" "${CFLAGS[@]}" "${OFFICIAL[@]}" "$@" "$SRC/test_include_order_$order.c" \
            -o "$dir/test_include_order_${order}_c" "${LDFLAGS[@]}"
        "$CXX" "${CXXFLAGS[@]}" "${OFFICIAL[@]}" "$@" -x c++ "$SRC/test_include_order_$order.c" \
            -x none -o "$dir/test_include_order_${order}_cxx" "${LDFLAGS[@]}"
    done
}

PROGRAMS=(test_api test_threads test_abi test_include_order_a_c test_include_order_b_c
          test_include_order_a_cxx test_include_order_b_cxx)

section "build (plain)"
build "$OUT/plain"

section "build (static library)"
# The system libraries the Rust standard library needs (rustc --print native-static-libs).
"$CC" "${CFLAGS[@]}" "$SRC/test_api.c" -o "$OUT/plain/test_api_static" \
    "$LIBDIR/libdlbridge.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl

section "build (AddressSanitizer + UBSan)"
build "$OUT/asan" "${SANITIZE[@]}"

section "run (plain)"
for p in "${PROGRAMS[@]}"; do run "$p" "$OUT/plain/$p"; done
# The stress size: 8 threads x 100000 iterations of about a dozen operations each.
run "test_threads (8 x 100000 iterations)" "$OUT/plain/test_threads" 100000
run "test_api (static)" "$OUT/plain/test_api_static"
# Under an address-space limit: plain only (ASan's shadow memory and valgrind's allocator cannot
# run under one), so it is not in PROGRAMS.
run "test_oom (address-space limit)" "$OUT/plain/test_oom"

run_valgrind "$OUT/plain" "${PROGRAMS[@]}"
# allocator_may_return_null: the out-of-memory test asks for 128 TiB and expects a status, not
# an ASan abort.
run_sanitized "$OUT/asan" allocator_may_return_null=1:detect_leaks=1 "${PROGRAMS[@]}"
summary "C tests"

#!/usr/bin/env bash
# Builds and runs tests/c/test_ipc.c (tensors across processes: SCM_RIGHTS to a forked child)
# the way tests/c/run.sh runs the other C programs: plain, under valgrind (the child too) and
# with AddressSanitizer + UBSan. Run from the repository root after `make build`.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
LIBDIR=$ROOT/target/release
OUT=$ROOT/build/c-ipc
SRC=tests/c
CC=${CC:-gcc}
CFLAGS=(-std=c11 -Wall -Wextra -Werror -pedantic -g -Iinclude -I"$SRC")
LDFLAGS=(-L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -ldlbridge -pthread)
SANITIZE=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)

# shellcheck source=../run_modes.sh
source tests/run_modes.sh

mkdir -p "$OUT/plain" "$OUT/asan"
section "build"
"$CC" "${CFLAGS[@]}" "$SRC/test_ipc.c" -o "$OUT/plain/test_ipc" "${LDFLAGS[@]}"
"$CC" "${CFLAGS[@]}" "${SANITIZE[@]}" "$SRC/test_ipc.c" -o "$OUT/asan/test_ipc" "${LDFLAGS[@]}"

section "run (plain)"
run test_ipc "$OUT/plain/test_ipc"
run_valgrind "$OUT/plain" test_ipc
run_sanitized "$OUT/asan" detect_leaks=1 test_ipc
summary "C IPC tests"

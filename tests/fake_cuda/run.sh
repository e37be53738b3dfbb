#!/usr/bin/env bash
# Builds the fake CUDA driver (build/fake-cuda/libcuda.so) and its selftest, checks the exported
# symbols, and runs the selftest in every environment mode (also under valgrind when available).
# Run from the repository root. Idempotent. Exits non-zero if anything fails.
set -euo pipefail

cd "$(dirname "$0")/../.."
SRC=tests/fake_cuda
OUT=build/fake-cuda
CC=${CC:-gcc}
WARN=(-std=c11 -pedantic -Wall -Wextra -Werror -pthread)

mkdir -p "$OUT"
"$CC" "${WARN[@]}" -shared -fPIC -O1 -g "$SRC/fake_cuda.c" -o "$OUT/libcuda.so"
"$CC" "${WARN[@]}" -O1 -g "$SRC/selftest.c" -o "$OUT/selftest" \
    -L"$OUT" -lcuda -Wl,--disable-new-dtags,-rpath,"$PWD/$OUT"

# Exactly the driver entry points dlbridge uses may carry a cu prefix.
expected="cuCtxPopCurrent_v2 cuCtxPushCurrent_v2 cuCtxSynchronize cuDeviceGet cuDeviceGetCount
cuDeviceGetName cuDevicePrimaryCtxRetain cuDriverGetVersion cuEventCreate cuEventDestroy_v2
cuEventRecord cuEventSynchronize cuGetErrorName cuGetErrorString cuInit cuIpcCloseMemHandle
cuIpcGetMemHandle cuIpcOpenMemHandle_v2 cuMemAlloc_v2 cuMemGetAddressRange_v2
cuMemFreeHost cuMemFree_v2 cuMemHostAlloc cuMemcpy2DAsync_v2 cuMemcpyDtoDAsync_v2
cuMemcpyDtoHAsync_v2 cuMemcpyHtoDAsync_v2 cuMemcpyPeerAsync cuMemsetD8Async
cuStreamSynchronize"
actual=$(nm -D --defined-only "$OUT/libcuda.so" | awk '$3 ~ /^cu/ {print $3}' | LC_ALL=C sort)
if [[ $actual != "$(tr ' ' '\n' <<<"$expected" | LC_ALL=C sort)" ]]; then
    echo "fake-cuda: unexpected cu* exports:" >&2
    diff <(tr ' ' '\n' <<<"$expected" | LC_ALL=C sort) <(echo "$actual") >&2 || true
    exit 1
fi
others=$(nm -D --defined-only "$OUT/libcuda.so" | awk '$2 ~ /^[TDBR]$/ && $3 !~ /^(cu|fake_cuda_)/ {print $3}')
if [[ -n $others ]]; then
    echo "fake-cuda: unexpected exports: $others" >&2
    exit 1
fi

# mode, then the environment it needs
modes=(
    "main FAKE_CUDA_DEVICES=2"
    "initfail FAKE_CUDA_INIT_RESULT=100"
    "nodev FAKE_CUDA_DEVICES=0"
    "smallmem FAKE_CUDA_DEVICE_MEMORY=4096"
)
run_modes() {
    local m
    for m in "${modes[@]}"; do
        read -r mode envs <<<"$m"
        env -u FAKE_CUDA_DEVICES -u FAKE_CUDA_INIT_RESULT -u FAKE_CUDA_DEVICE_MEMORY \
            -u FAKE_CUDA_ABORT_ON_MISUSE $envs "$@" "$OUT/selftest" "$mode"
    done
}

run_modes
if command -v valgrind >/dev/null 2>&1; then
    run_modes valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=all \
        --show-leak-kinds=all
    echo "fake-cuda: selftest clean under valgrind"
else
    echo "fake-cuda: valgrind not found; skipped the valgrind run"
fi

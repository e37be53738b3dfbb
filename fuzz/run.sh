#!/usr/bin/env bash
# Runs dlbridge's cargo-fuzz targets for a bounded time each and fails on any crash.
#
#   fuzz/run.sh [seconds-per-target] [target...]     (default: 30 s; all targets)
#   fuzz/run.sh 600                                  (the 10-minute runs)
#
# Run from the repository root (it changes there itself). It installs cargo-fuzz at a pinned
# version into build/tools (nothing global) and needs the nightly toolchain (`cargo +nightly`).
# Each target fuzzes a temporary copy of its committed seeds (fuzz/corpus/<target>), so the
# committed corpus stays small; FUZZ_KEEP_CORPUS=1 keeps the grown copies and prints where.
# A crash leaves its reproducer in fuzz/artifacts/<target>/ (replay it with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`).
# Environment: FUZZ_SANITIZER (address, the default; or none), FUZZ_KEEP_CORPUS.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
TARGETS_ALL=(import views export)

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: fuzz/run.sh [seconds-per-target] [target...]   (targets: ${TARGETS_ALL[*]})" >&2
    exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS_ALL[@]}")
for t in "${targets[@]}"; do
    if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
        echo "fuzz/run.sh: unknown target '$t' (targets: ${TARGETS_ALL[*]})" >&2
        exit 2
    fi
done

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi

# cargo-fuzz, pinned, in build/tools (repository-local).
tools="$root/build/tools"
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into build/tools"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"

sanitizer=${FUZZ_SANITIZER:-address}
echo "== building the fuzz targets (nightly, sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
    cargo +nightly fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer" "$t"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/dlbridge-fuzz.XXXXXX")
if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]; then
    trap 'rm -rf "$work"' EXIT
fi

failed=()
summary=()
for t in "${targets[@]}"; do
    corpus="$work/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    if [ -d "fuzz/corpus/$t" ]; then
        cp -R "fuzz/corpus/$t/." "$corpus/"
    fi
    log="$work/$t.log"
    echo "== fuzzing $t for ${seconds} s ($(find "$corpus" -type f | wc -l) seeds)"
    status=0
    cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=4096 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    # libFuzzer's last status line ("#N DONE cov: C ft: F corp: ...") and its final stats.
    done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|RELOAD|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
    line="$t: ${execs:-?} executions in ${seconds} s, cov: ${cov:-?} ft: ${ft:-?}, corpus ${corp:-?} inputs"
    if [ "$status" -ne 0 ]; then
        echo "!! $t FAILED (exit $status); what libFuzzer reported:" >&2
        grep -E -A3 "panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)" "$log" | head -n 40 >&2 || true
        grep -E "^SUMMARY|Test unit written to|^MS: " "$log" >&2 || true
        ls -1 "fuzz/artifacts/$t" | sed "s|^|   reproducer: fuzz/artifacts/$t/|" >&2
        failed+=("$t")
        line="$line  FAILED"
    fi
    echo "   $line"
    summary+=("$line")
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
if [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ]; then
    echo "   grown corpora kept in $work/corpus"
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi

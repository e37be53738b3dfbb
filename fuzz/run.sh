#!/usr/bin/env bash
# Runs dlbridge's fuzz targets for a bounded time each and fails on any crash or finding: the
# cargo-fuzz targets (fuzz/fuzz_targets/*.rs) and the atheris target for the Python package
# (fuzz/python/dlpack_kwargs.py, run with the .venv's Python).
#
#   fuzz/run.sh [seconds-per-target] [target...]     (default: 30 s; all targets)
#   fuzz/run.sh 600                                  (the 10-minute runs)
#
# Run from the repository root (it changes there itself). For the Rust targets it installs
# cargo-fuzz at a pinned version into build/tools (nothing global) and needs the nightly
# toolchain (`cargo +nightly`). The Python target needs .venv with atheris and the dlbridge
# package; when they are not there it runs `make python-package` first, which makes them.
# Each target fuzzes a temporary copy of its committed seeds (fuzz/corpus/<target>, or
# fuzz/python/corpus/<target>), so the committed corpus stays small; FUZZ_KEEP_CORPUS=1 keeps the
# grown copies and prints where. A crash leaves its reproducer in fuzz/artifacts/<target>/
# (replay it with `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`, or
# `.venv/bin/python fuzz/python/<target>.py fuzz/artifacts/<target>/<file>`).
# Environment: FUZZ_SANITIZER (address, the default; or none; Rust targets only), FUZZ_KEEP_CORPUS.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
TARGETS_ALL=(import views export dlpack_kwargs)

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
rust_targets=()
python_targets=()
for t in "${targets[@]}"; do
    if [ -f "fuzz/fuzz_targets/$t.rs" ]; then
        rust_targets+=("$t")
    elif [ -f "fuzz/python/$t.py" ]; then
        python_targets+=("$t")
    else
        echo "fuzz/run.sh: unknown target '$t' (targets: ${TARGETS_ALL[*]})" >&2
        exit 2
    fi
done

sanitizer=${FUZZ_SANITIZER:-address}
if [ ${#rust_targets[@]} -gt 0 ]; then
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

    echo "== building the fuzz targets (nightly, sanitizer: $sanitizer)"
    for t in "${rust_targets[@]}"; do
        cargo +nightly fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer" "$t"
    done
fi

# The Python target runs in .venv against the dlbridge package installed there (atheris is in
# bindings/python/requirements-dev.txt).
venv_py="$root/.venv/bin/python"
if [ ${#python_targets[@]} -gt 0 ] && ! "$venv_py" -c 'import atheris, dlbridge' >/dev/null 2>&1; then
    echo "== .venv lacks atheris or dlbridge: make python-package"
    make python-package
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/dlbridge-fuzz.XXXXXX")
if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]; then
    trap 'rm -rf "$work"' EXIT
fi

failed=()
summary=()
libfuzzer_flags=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=4096 -print_final_stats=1)
for t in "${targets[@]}"; do
    corpus="$work/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    seeds="fuzz/corpus/$t"
    python=0
    if [ -f "fuzz/python/$t.py" ]; then
        python=1
        seeds="fuzz/python/corpus/$t"
    fi
    if [ -d "$seeds" ]; then
        cp -R "$seeds/." "$corpus/"
    fi
    log="$work/$t.log"
    echo "== fuzzing $t for ${seconds} s ($(find "$corpus" -type f | wc -l) seeds)"
    status=0
    if [ "$python" = 1 ]; then
        # atheris passes its arguments to libFuzzer; crashes go to fuzz/artifacts/<target>/.
        "$venv_py" "fuzz/python/$t.py" "${libfuzzer_flags[@]}" -artifact_prefix="fuzz/artifacts/$t/" \
            "$corpus" >"$log" 2>&1 || status=$?
    else
        cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" "$corpus" -- \
            "${libfuzzer_flags[@]}" >"$log" 2>&1 || status=$?
    fi
    # libFuzzer's last status line ("#N DONE cov: C ft: F corp: ...") and its final stats.
    done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|RELOAD|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
    line="$t: ${execs:-?} executions in ${seconds} s, cov: ${cov:-?} ft: ${ft:-?}, corpus ${corp:-?} inputs"
    # Departures from the rules the Python target expects while they are open (dlpack_rules.py).
    grep -E "^dlpack_kwargs: known deviation" "$log" | sed 's/^/   /' || true
    if [ "$status" -ne 0 ]; then
        echo "!! $t FAILED (exit $status); what libFuzzer reported:" >&2
        grep -E -A3 "panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)" "$log" | head -n 40 >&2 || true
        grep -E -A12 "=== Uncaught Python exception" "$log" | head -n 40 >&2 || true
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

# Shared by tests/c/run.sh and tests/cpp/run.sh (sourced, not run): reporting sections, running
# programs while recording failures instead of stopping, the valgrind and sanitizer runs, and
# the summary. The caller sets MODE through `section` and reads `failures` at the end.

failures=()
MODE=""

section() {
    MODE=$*
    printf '\n==== %s ====\n' "$*"
}

# run <label> <command...>: runs one program, records a failure instead of stopping.
run() {
    local label=$1
    shift
    echo "--- $label"
    local start=$SECONDS
    if "$@"; then
        echo "--- $label: ok ($((SECONDS - start)) s)"
    else
        local rc=$?
        echo "--- $label: FAILED (exit $rc)"
        failures+=("$MODE: $label")
    fi
}

# run_valgrind <dir> <program...>: each program under valgrind, failing on any memory error and
# on definitely lost bytes (reachable blocks, such as thread-locals and one-time runtime state,
# are not errors).
run_valgrind() {
    local dir=$1 p
    shift
    section "run (valgrind)"
    if ! command -v valgrind >/dev/null; then
        echo "valgrind not found" >&2
        failures+=("valgrind missing")
        return
    fi
    local valgrind=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
                    --show-leak-kinds=definite)
    for p in "$@"; do run "$p" "${valgrind[@]}" "$dir/$p"; done
}

# run_sanitized <dir> <ASAN_OPTIONS> <program...>: each program built with AddressSanitizer and
# UBSan, leak detection on, stopping at the first undefined behaviour.
run_sanitized() {
    local dir=$1 asan_options=$2 p
    shift 2
    section "run (AddressSanitizer + UBSan)"
    for p in "$@"; do
        run "$p" env ASAN_OPTIONS="$asan_options" UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$dir/$p"
    done
}

# summary <what>: fails when anything failed.
summary() {
    section "summary"
    if ((${#failures[@]})); then
        printf 'FAILED: %s\n' "${failures[@]}"
        exit 1
    fi
    echo "all $1 passed"
}

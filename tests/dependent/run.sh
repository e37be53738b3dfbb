#!/usr/bin/env bash
# Builds tests/dependent, a crate that depends on dlbridge, runs it, and fails if a C library of
# dlbridge (libdlbridge.so*, libdlbridge.a) was built for it: a dependent must build only the
# Rust library. Its own target directory, target/dependent, so nothing stale from other builds
# counts and no lock is shared with them. Run from anywhere; exits non-zero if anything fails.
set -euo pipefail

cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=$PWD/target/dependent
manifest=tests/dependent/Cargo.toml

# Its Cargo.lock is committed (the same versions as the root Cargo.lock): hold to it. When
# dlbridge's dependencies change, refresh it the same way it was made: copy the root Cargo.lock
# over it and run this cargo build once without --locked.
locked=()
[[ -f tests/dependent/Cargo.lock ]] && locked=(--locked)

# C libraries left by an earlier build (of another commit) would be counted: remove them first
# (cargo rebuilds dlbridge when an output it expects is missing, so nothing is hidden this way).
pattern=(\( -name 'libdlbridge.so*' -o -name 'libdlbridge.a' \))
[[ -d $CARGO_TARGET_DIR ]] && find "$CARGO_TARGET_DIR" "${pattern[@]}" -delete

cargo build --release "${locked[@]}" --manifest-path "$manifest"
"$CARGO_TARGET_DIR/release/dlbridge-dependent"

found=$(find "$CARGO_TARGET_DIR" "${pattern[@]}" -print)
if [[ -n $found ]]; then
    echo "test-dependent: a dependent built dlbridge's C libraries:" >&2
    echo "$found" >&2
    exit 1
fi
rlibs=$(find "$CARGO_TARGET_DIR/release" -name 'libdlbridge-*.rlib' -print)
if [[ -z $rlibs ]]; then
    echo "test-dependent: no libdlbridge-*.rlib under $CARGO_TARGET_DIR/release (did it build?)" >&2
    exit 1
fi
echo "test-dependent: the dependent built only dlbridge's rlib:"
ls -l $rlibs "$CARGO_TARGET_DIR/release/dlbridge-dependent"

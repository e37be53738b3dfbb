#!/usr/bin/env bash
# Compile the C examples into build/examples/ and run them.
# Run from the repository root after `make build` (which builds target/release/libdlbridge.so;
# include/dlbridge.h is committed).
set -euo pipefail

lib_dir="$PWD/target/release"
out_dir=build/examples
for needed in include/dlbridge.h "$lib_dir/libdlbridge.so"; do
  if [[ ! -e "$needed" ]]; then
    echo "run.sh: $needed is missing; run this from the repository root after 'make build'" >&2
    exit 1
  fi
done

mkdir -p "$out_dir"
for name in tour readme_example; do
  "${CC:-gcc}" -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude "examples/c/$name.c" \
    -Ltarget/release -ldlbridge -Wl,-rpath,"$lib_dir" -o "$out_dir/$name"
done

"$out_dir/tour"
echo
echo "== readme_example =="
"$out_dir/readme_example"

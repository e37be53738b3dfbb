#!/usr/bin/env bash
# The README's examples must be exactly the files that are compiled and run (examples/rust/
# readme_example.rs, examples/c/readme_example.c and examples/python/readme_example.py), so that
# they work as printed.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
check() { # section heading, fence language, file
  local block
  block=$(awk -v h="## $1" -v f="\`\`\`$2" '$0==h{s=1; next} s&&/^## /{exit} s&&$0==f{p=1; next} p&&/^```$/{exit} p' README.md)
  if [[ "$block" != "$(cat "$3")" ]]; then
    echo "README.md's $2 example under '## $1' differs from $3:" >&2
    diff <(echo "$block") "$3" >&2 || true
    status=1
  else
    echo "README $2 example matches $3"
  fi
}
check "Using it from Rust" rust examples/rust/readme_example.rs
check "Using it from C" c examples/c/readme_example.c
check "Using it from Python" python examples/python/readme_example.py
exit $status

#!/usr/bin/env bash
# The README's C example must be exactly examples/c/readme_example.c, so that it compiles as printed.
set -euo pipefail
cd "$(dirname "$0")/.."
block=$(awk '/^## Using it from C/{s=1} s&&/^```c$/{p=1; next} p&&/^```$/{exit} p' README.md)
if [[ "$block" != "$(cat examples/c/readme_example.c)" ]]; then
  echo "README.md's C example differs from examples/c/readme_example.c:" >&2
  diff <(echo "$block") examples/c/readme_example.c >&2 || true
  exit 1
fi
echo "README C example matches examples/c/readme_example.c"

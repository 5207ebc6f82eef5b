#!/usr/bin/env bash
# Exhaustively checks ipiq/model/park_kick.pml with spin (safety: assertions and invalid end
# states, i.e. no lost message and no lost wakeup) and prints the state count.
set -euo pipefail
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  model="$TEST_SRCDIR/lwkt/ipiq/model/park_kick.pml"   # under bazel test (runfiles)
else
  model="$(cd "$(dirname "$0")" && pwd)/park_kick.pml"
fi
command -v spin >/dev/null || { echo "spin is not installed (tools/setup installs it)"; exit 1; }
work="${TEST_TMPDIR:-$(mktemp -d)}"
cd "$work"
cp "$model" .
spin -a park_kick.pml >/dev/null
gcc -O2 -DSAFETY -o pan pan.c
./pan -m100000 | tee pan.out
grep -q "errors: 0" pan.out || { echo "spin found a violation"; exit 1; }
grep -E "states, stored" pan.out

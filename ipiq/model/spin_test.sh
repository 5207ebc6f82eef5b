#!/usr/bin/env bash
# spin_test.sh MODEL [MUTANT ...]
#
# Checks a Promela model exhaustively with spin, then checks that every mutant of it fails.
#
#   MODEL   the model's path from the workspace root, e.g. ipiq/model/park_kick.pml
#   MUTANT  a define that selects a deliberately broken variant of the model (`spin -DMUTANT`);
#           several defines for one mutant are separated by commas (A,B: `spin -DA -DB`)
#
# The search is safety only (pan compiled with -DSAFETY: assertion violations and invalid end
# states, i.e. lost messages, lost wakeups and deadlocks), exhaustive (no bitstate hashing) and
# must not be truncated (a search that hits the depth limit fails the test).
# Passes when: the model has no error (prints its `states, stored` line) and each mutant has at
# least one (prints spin's error line), so the property the model checks is not vacuous.
# Under `bazel test` the model is found in the runfiles; run by hand, relative to this file.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 MODEL.pml [MUTANT[,DEFINE...] ...]" >&2
  exit 2
fi
rel="$1"
shift
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  model="$TEST_SRCDIR/${TEST_WORKSPACE:-lwkt}/$rel"   # under bazel test (runfiles)
else
  model="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/$rel"
fi
[[ -f "$model" ]] || { echo "model not found: $model"; exit 1; }
command -v spin >/dev/null || { echo "spin is not installed (tools/setup installs it)"; exit 1; }
command -v gcc >/dev/null || { echo "gcc is not installed"; exit 1; }
work="${TEST_TMPDIR:-$(mktemp -d)}"
name="$(basename "$model")"
depth=1000000   # -m: a search that reaches it is reported as truncated, which fails the test

# verify DIR DEFINES...: runs spin + pan in DIR; leaves pan's output in DIR/pan.out.
verify() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  cp "$model" "$dir/$name"
  (
    cd "$dir"
    spin "$@" -a "$name" >spin.out 2>&1 || { cat spin.out; exit 1; }
    gcc -O0 -w -DSAFETY -o pan pan.c   # -O0: compiling dominates; the searches take seconds
    ./pan -m"$depth" >pan.out 2>&1 || true   # the verdict is pan's "errors: N" line
  )
}

echo "== $rel"
start=$SECONDS
verify "$work/model"
out="$work/model/pan.out"
cat "$out"
if grep -q "max search depth too small" "$out"; then
  echo "FAIL: $rel: search truncated at depth $depth (not exhaustive)"
  exit 1
fi
grep -q "errors: 0" "$out" || { echo "FAIL: $rel: spin found a violation (or did not finish)"; exit 1; }
echo "PASS: $rel: $(grep -E "states, stored" "$out" | sed 's/^ *//') ($((SECONDS - start)) s)"

status=0
for mutant in "$@"; do
  start=$SECONDS
  defines=()
  IFS=',' read -r -a names <<<"$mutant"
  for d in "${names[@]}"; do defines+=("-D$d"); done
  verify "$work/mutant-${mutant//,/-}" "${defines[@]}"
  out="$work/mutant-${mutant//,/-}/pan.out"
  # A verdict only from a completed search that reports errors (not a crash or out of memory).
  if ! grep -qE "errors: [1-9]" "$out"; then
    cat "$out"
    echo "FAIL: mutant $mutant of $rel: spin found no error (the check is vacuous)"
    status=1
    continue
  fi
  err="$(grep -m1 -E "^pan:[0-9]+:" "$out" || grep -m1 -E "errors: [1-9]" "$out")"
  echo "PASS: mutant $mutant caught: $err ($((SECONDS - start)) s)"
done
exit "$status"

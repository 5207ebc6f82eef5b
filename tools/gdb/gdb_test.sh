#!/usr/bin/env bash
# tools/gdb/lwkt.py against a live process stopped at a known point and against the core
# file gdb wrote of it (gcore): the listing shows each probe thread with its state, wait
# message, tokens and stack, and lwkt-bt unwinds each (running or switched out) through the
# function it is in. See gdb_probe.cc for the threads.
set -uo pipefail
probe="$1"
py="$2"
if ! command -v gdb > /dev/null; then
  echo "SKIPPED: gdb is not installed (tools/setup installs it)"
  exit 0
fi
out="${TEST_TMPDIR:-$(mktemp -d)}"
core="$out/probe.core"
fail=0
expect() {  # file, extended regexp, what
  if ! grep -qE -- "$2" "$1"; then
    echo "FAIL ($(basename "$1")): $3 (no line matches: $2)"
    fail=1
  fi
}

gdb -nx -batch -ex "source $py" -ex "set pagination off" -ex "handle SIGURG nostop noprint" \
  -ex "break lwkt_gdb_probe_ready" -ex "run" \
  -ex "info lwkt-threads" -ex "lwkt-bt all" -ex "gcore $core" -ex "kill" \
  "$probe" > "$out/live.txt" 2>&1
gdb -nx -batch -ex "source $py" -ex "set pagination off" \
  -ex "info lwkt-threads" -ex "lwkt-bt all" "$probe" "$core" > "$out/core.txt" 2>&1

# Auto-loading: the program names tools/gdb/lwkt.py in .debug_gdb_scripts; gdb loads it
# from a scripts-directory holding tools/gdb/ (here the runfiles tree) that is a safe path.
# (gdb checks the safe path against the script's real path: the runfiles entry is a link.)
root="$(cd "$(dirname "$py")/../.." && pwd)"
real="$(dirname "$(readlink -f "$py")")"
gdb -nx -batch -iex "add-auto-load-scripts-directory $root" -iex "add-auto-load-safe-path $real" \
  -ex "info lwkt-threads" "$probe" "$core" > "$out/autoload.txt" 2>&1
echo "=== autoload.txt"
cat "$out/autoload.txt"
expect "$out/autoload.txt" '^[0-9]+ +0 +0 +probe-sleeper +sleep ' \
  "info lwkt-threads from the auto-loaded script"

for f in "$out/live.txt" "$out/core.txt"; do
  echo "=== $(basename "$f")"
  cat "$f"
  expect "$f" '^ID +RT +WORKER +NAME +STATE' "the listing's header"
  expect "$f" '^[0-9]+ +0 +0 +idle 0 +idle' "worker 0's idle thread"
  expect "$f" '^[0-9]+ +0 +1 +idle 1 +idle' "worker 1's idle thread"
  expect "$f" '^[0-9]+ +0 +0 +probe-sleeper +sleep .* probe-wait chan 0x[0-9a-f]+ +- ' \
    "the sleeper: worker 0, asleep, its wait message and channel, no tokens"
  expect "$f" '^[0-9]+ +0 +1 +probe-tokholder +sleep .*probe-tokwait.* probe-tok ' \
    "the token holder: worker 1, asleep, with probe-tok on its token stack"
  expect "$f" '^[0-9]+ +0 +0 +probe-held +held ' "the held thread"
  expect "$f" '^[0-9]+ +0 +1 +probe-spinner +run ' "the spinner, running on worker 1"
  # Stack now/max/size: a switched-out thread's depth and its high-water mark, 64 KiB.
  expect "$f" 'probe-sleeper .* [0-9.]+/[0-9.]+/64\.0 ' "the sleeper's stack figures"
  expect "$f" "^lwkt thread [0-9]+ 'probe-sleeper' \\(worker 0, sleep\\):" "the sleeper's backtrace"
  # Each backtrace, through the function its thread is in and down to the trampoline.
  for pair in "probe-sleeper:probe_sleep_in_tsleep" "probe-tokholder:probe_sleep_in_tsleep" \
              "probe-spinner:probe_spin"; do
    name="${pair%%:*}"
    fn="${pair#*:}"
    bt=$(awk -v n="'$name'" '$1=="lwkt" && $2=="thread" {on = ($4==n)} on' "$f")
    if ! grep -qE "^  #[0-9]+ +0x[0-9a-f]+ in .*$fn \(" <<< "$bt"; then
      echo "FAIL ($(basename "$f")): the backtrace of $name does not pass through $fn"
      fail=1
    fi
  done
  bt=$(awk "\$1==\"lwkt\" && \$2==\"thread\" {on = (\$4==\"'probe-sleeper'\")} on" "$f")
  grep -q "lwkt::tsleep" <<< "$bt" || { echo "FAIL: the sleeper's backtrace lacks lwkt::tsleep"; fail=1; }
  # Its resume point: where the switch returns (cpu_switch_to tail-calls lwkt_cpu_switch).
  grep -qE "^  #0 .* in lwkt::(lwkt_switch|internal::cpu_switch_to) " <<< "$bt" ||
    { echo "FAIL: the sleeper's backtrace does not start at its switch"; fail=1; }
  bt=$(awk "\$1==\"lwkt\" && \$2==\"thread\" {on = (\$4==\"'probe-held'\")} on" "$f")
  grep -qE "^  #0 .* in lwkt_cpu_trampoline \(\) \(not run yet\)" <<< "$bt" ||
    { echo "FAIL: the held thread's backtrace is not its first-run trampoline"; fail=1; }
done
((fail == 0)) && echo "PASS"
exit $fail

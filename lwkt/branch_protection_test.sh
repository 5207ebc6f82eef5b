#!/usr/bin/env bash
# The context-switch assembly keeps CET / BTI for the binaries that link it.
#
# The linker ANDs the GNU property notes of all inputs, so one object without
# .note.gnu.property (as the .S files were) drops IBT / BTI from a whole program built with
# -fcf-protection / -mbranch-protection. For each architecture whose compiler is installed
# (gcc for x86-64; aarch64-linux-gnu-gcc, from tools/setup --aarch64, for AArch64) this
# assembles the switch, checks the object's note and the entry markers, links it with C
# built the same way into a freestanding program (Debian's crt files carry no notes, so
# the program brings its own _start) and checks that the program keeps the feature. It
# also checks what is deliberately not claimed (SHSTK, PAC: see the comments in the .S
# files) and a control: the same program with an unmarked switch object loses the feature.
set -euo pipefail

src=lwkt/internal
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/branch_protection.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
ok() { echo "ok: $*"; }

cat >"$tmp/main.c" <<'EOF'
void *lwkt_cpu_switch(void **save_sp, void *load_sp, void *arg);
void lwkt_cpu_trampoline(void);
void lwkt_thread_bootstrap(void *prev, void *td) { (void)prev; (void)td; for (;;) {} }
/* Read by the x86-64 switch (lwkt/internal/context.cc defines it in the library). */
unsigned char lwkt_switch_mxcsr_always;
void _start(void) {
  void *sp;
  lwkt_cpu_switch(&sp, 0, 0);
  lwkt_cpu_trampoline();
  for (;;) {}
}
EOF

# has_note FILE PATTERN: readelf -n shows a property line matching PATTERN.
has_note() { readelf -n "$1" | grep -q "$2"; }

# entry_markers OBJDUMP OBJ INSN: how many of the two global functions start with INSN.
entry_markers() {
  "$1" -d --no-show-raw-insn "$2" |
    awk '/<lwkt_cpu_(switch|trampoline)>:$/ { getline; print }' | grep -c "$3" || true
}

# has_gnu_stack OBJ: the object says its stack is not executable.
has_gnu_stack() { readelf -SW "$1" | grep -q '\.note\.GNU-stack'; }

# check ARCH CC OBJDUMP SRC OTHER_SRC FLAGS FEATURE MARKER ABSENT
#   OTHER_SRC: the other architecture's switch, which assembles to an empty object here.
check() {
  local arch=$1 cc=$2 objdump=$3 s=$4 other=$5 flags=$6 feature=$7 marker=$8 absent=$9
  local o="$tmp/$arch.o" plain="$tmp/$arch-plain.o" empty="$tmp/$arch-empty.o"
  "$cc" -I. -c "$s" -o "$plain"
  if has_note "$plain" "$arch feature"; then
    fail "$arch: the switch claims a feature without $flags"
  else
    ok "$arch: no property note without $flags (as for compiled C)"
  fi

  # shellcheck disable=SC2086
  "$cc" $flags -I. -c "$s" -o "$o"
  readelf -n "$o" | sed -n '/NT_GNU_PROPERTY_TYPE_0/,+1p'
  if has_note "$o" "$arch feature: .*$feature"; then ok "$arch $flags: object claims $feature"; else
    fail "$arch $flags: object lacks $feature in .note.gnu.property"
  fi
  if has_note "$o" "$absent"; then fail "$arch $flags: object claims $absent"; else
    ok "$arch $flags: object does not claim $absent"
  fi
  local n
  n=$(entry_markers "$objdump" "$o" "$marker")
  if [[ $n == 2 ]]; then ok "$arch $flags: $marker at both entries"; else
    fail "$arch $flags: $marker at $n of 2 entries"
  fi

  # shellcheck disable=SC2086
  "$cc" $flags -O2 -ffreestanding -nostdlib -static -o "$tmp/$arch-prog" "$tmp/main.c" "$o"
  if has_note "$tmp/$arch-prog" "$arch feature: .*$feature"; then
    ok "$arch $flags: the linked program keeps $feature"
  else
    fail "$arch $flags: the linked program lost $feature"
  fi
  if has_note "$tmp/$arch-prog" "$absent"; then fail "$arch $flags: program claims $absent"; fi

  # The other architecture's file: empty here, but with the same notes, so that a link that
  # pulls in every object (--whole-archive, alwayslink) keeps the feature and a
  # non-executable stack.
  # shellcheck disable=SC2086
  "$cc" $flags -I. -c "$other" -o "$empty"
  local f
  for f in "$o" "$plain" "$empty"; do
    has_gnu_stack "$f" || fail "$arch $flags: $(basename "$f") lacks .note.GNU-stack"
  done
  if has_note "$empty" "$arch feature: .*$feature"; then
    ok "$arch $flags: the empty other-architecture object claims $feature too"
  else
    fail "$arch $flags: the empty other-architecture object lacks the $feature note"
  fi
  # shellcheck disable=SC2086
  "$cc" $flags -O2 -ffreestanding -nostdlib -static -o "$tmp/$arch-both" "$tmp/main.c" "$o" \
    "$empty"
  if has_note "$tmp/$arch-both" "$arch feature: .*$feature"; then
    ok "$arch $flags: a program linking both switch objects keeps $feature"
  else
    fail "$arch $flags: a program linking both switch objects lost $feature"
  fi

  # Control: the unmarked object (the old .S) takes the feature away from the program.
  # shellcheck disable=SC2086
  "$cc" $flags -O2 -ffreestanding -nostdlib -static -o "$tmp/$arch-ctl" "$tmp/main.c" "$plain"
  if has_note "$tmp/$arch-ctl" "$arch feature: .*$feature"; then
    fail "$arch: control program kept $feature with an unmarked object (test is vacuous)"
  else
    ok "$arch: control: an unmarked switch object drops $feature from the program"
  fi
}

# check_cfi ARCH CC SRC CFA_REG MIN_FRAME REGS...: the unwind table of lwkt_cpu_switch (the
# first FDE) moves the CFA by at least MIN_FRAME after the frame is allocated, and records a
# save slot ("c-N") for every callee-saved register it stores, so debuggers and unwinders
# walk through a switched-out thread's frame (issue 9 item 16: the AArch64 switch had no
# CFA adjustment after its frame allocation).
check_cfi() {
  local arch=$1 cc=$2 s=$3 reg=$4 min=$5
  shift 5
  local o="$tmp/$arch-cfi.o" rows
  "$cc" -I. -c "$s" -o "$o"
  # The rows of the first FDE only (up to the blank line that ends it).
  rows=$(readelf --debug-dump=frames-interp "$o" | awk '/FDE/ {n++} n == 1 && /^[0-9a-f]+ / {print}')
  local max
  max=$(awk -v r="$reg+" '{ if (index($2, r) == 1) { v = substr($2, length(r) + 1) + 0; if (v > m) m = v } } END { print m + 0 }' <<<"$rows")
  if ((max >= min)); then ok "$arch: CFA moves to $reg+$max inside lwkt_cpu_switch"; else
    fail "$arch: lwkt_cpu_switch's CFA never moves past $reg+$max (frame of at least $min)"
  fi
  local header col r
  header=$(readelf --debug-dump=frames-interp "$o" | awk '/FDE/ {n++} n == 1 && /LOC/ {print; exit}')
  for r in "$@"; do
    col=$(awk -v r="$r" '{ for (i = 1; i <= NF; i++) if ($i == r) print i }' <<<"$header")
    if [[ -z $col ]] || ! awk -v c="$col" '$c ~ /^c-/ {found = 1} END {exit !found}' <<<"$rows"; then
      fail "$arch: no save slot for $r in lwkt_cpu_switch's unwind table"
    fi
  done
  ok "$arch: save slots recorded for $*"
}

checked=0
if command -v gcc >/dev/null && [[ $(gcc -dumpmachine) == x86_64-* ]]; then
  check_cfi x86 gcc "$src/switch_x86_64_sysv_elf.S" rsp 56 ra
  for f in -fcf-protection=branch -fcf-protection=full; do
    check x86 gcc objdump "$src/switch_x86_64_sysv_elf.S" "$src/switch_aarch64_aapcs_elf.S" \
      "$f" IBT endbr64 SHSTK
  done
  checked=$((checked + 1))
fi
if command -v aarch64-linux-gnu-gcc >/dev/null; then
  check_cfi AArch64 aarch64-linux-gnu-gcc "$src/switch_aarch64_aapcs_elf.S" sp 160 \
    x19 x20 x21 x22 x23 x24 x25 x26 x27 x28 x29 ra v8 v9 v10 v11 v12 v13 v14 v15
  for f in -mbranch-protection=bti -mbranch-protection=standard; do
    check AArch64 aarch64-linux-gnu-gcc aarch64-linux-gnu-objdump \
      "$src/switch_aarch64_aapcs_elf.S" "$src/switch_x86_64_sysv_elf.S" "$f" BTI "bti" PAC
  done
  checked=$((checked + 1))
else
  echo "note: aarch64-linux-gnu-gcc not installed (tools/setup --aarch64): AArch64 not checked"
fi

if ((checked == 0)); then
  echo "FAIL: no compiler for either architecture" >&2
  exit 1
fi
if ((failures)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all checks passed"

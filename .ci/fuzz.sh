#!/usr/bin/env bash
# The fuzz gate: builds every fuzz/fuzz_*.c target with clang and libFuzzer
# (plus AddressSanitizer and UndefinedBehaviorSanitizer) straight from
# lib/*.c, replays every input in fuzz/regressions/<target>/, then fuzzes
# each target for FUZZ_SECONDS (default 20) over a copy of
# fuzz/corpus/<target>/, so the tree is never written.  One line per target;
# exits non-zero on any crash, leak, sanitizer report or failed check, and
# then keeps the crashing inputs and logs in a directory it names.
#
# Needs clang and libclang-rt-14-dev (libFuzzer), msgpack, and a configure
# script (autoreconf -fi) or a tree configured in place.  See fuzz/README.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
secs=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-2}
cc=${FUZZ_CC:-clang}

work=$(mktemp -d)
keep=0
trap '[ "$keep" = 1 ] || rm -rf "$work"' EXIT

# config.h as configure writes it on this machine: the tree's own when it is
# configured in place, else from a configure run in the scratch directory.
if [ -f config.h ]; then
  cfg=$top
elif [ -x configure ]; then
  mkdir "$work/cfg"
  (cd "$work/cfg" && "$top/configure" -q >/dev/null)
  cfg=$work/cfg
else
  echo "fuzz.sh: no configure script: run autoreconf -fi first" >&2
  exit 1
fi
msgpack=$(pkg-config --exists msgpack && echo msgpack || echo msgpack-c)
mp_cflags=$(pkg-config --cflags "$msgpack")
mp_libs=$(pkg-config --libs "$msgpack")

# -ftrivial-auto-var-init=pattern: a read of an uninitialised local gets the
# same odd value every time, so such a bug fails a check reproducibly.
cflags="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined
  -fno-sanitize-recover=all -ftrivial-auto-var-init=pattern -pthread
  -DHAVE_CONFIG_H -DFP_BUILDING -I$cfg -Iinclude -Ilib $mp_cflags
  -Wall -Wno-unused-function"
export cc cflags work
mkdir "$work/obj" "$work/bin"
ls lib/*.c | xargs -P "$jobs" -I{} sh -c \
  '$cc $cflags -fsanitize=fuzzer-no-link -c {} -o "$work/obj/$(basename {} .c).o"'

# A harness may #include a lib/*.c file to reach its static functions; that
# file's object is then left out of its link.
objects_for() {
  local src=$1 o skip
  skip=$(sed -n 's|^#include "\.\./lib/\([a-z_]*\)\.c".*|\1|p' "$src")
  for o in "$work"/obj/*.o; do
    case " $(echo $skip) " in *" $(basename "$o" .o) "*) continue ;; esac
    echo "$o"
  done
}

targets=""
for src in fuzz/fuzz_*.c; do
  t=$(basename "$src" .c)
  targets="$targets $t"
  # shellcheck disable=SC2046
  $cc $cflags -fsanitize=fuzzer "$src" $(objects_for "$src") $mp_libs \
    -o "$work/bin/$t"
done
# The seed generator must keep building and running against the encoders.
# shellcheck disable=SC2046
$cc $cflags fuzz/make_seeds.c $(objects_for fuzz/make_seeds.c) $mp_libs \
  -o "$work/bin/make_seeds"
"$work/bin/make_seeds" "$work/seeds" >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

# Replays the target's regressions, then fuzzes it; writes "$t.status".
run_target() {
  local t=$1 bin=$work/bin/$1 reg=fuzz/regressions/$1 n=0 rc=0
  mkdir -p "$work/art/$t" "$work/corpus/$t"
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
    n=$(ls "$reg" | wc -l)
    "$bin" -rss_limit_mb=2048 -timeout=10 "$reg"/* >"$work/$t.replay.log" 2>&1 ||
      { echo "replay $?" >"$work/$t.status"; return 0; }
  fi
  [ -d "fuzz/corpus/$t" ] && cp -R "fuzz/corpus/$t/." "$work/corpus/$t/"
  local before
  before=$(ls "$work/corpus/$t" | wc -l)
  "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$work/art/$t/" \
    "$work/corpus/$t" >"$work/$t.log" 2>&1 || rc=$?
  echo "$rc $n $before $(ls "$work/corpus/$t" | wc -l)" >"$work/$t.status"
}

for t in $targets; do
  run_target "$t" &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
done
wait

failed=0
for t in $targets; do
  read -r rc n before after <"$work/$t.status" || rc="missing"
  if [ "$rc" = replay ]; then
    echo "$t: FAILED replaying fuzz/regressions/$t (exit $n)"
    grep -E "Running:|ERROR|SUMMARY|check failed" "$work/$t.replay.log" | tail -20
    failed=1
    continue
  fi
  fstat() { sed -n "s/^stat::$1: *//p" "$work/$t.log" | tail -1; }
  runs=$(fstat number_of_executed_units)
  eps=$(fstat average_exec_per_sec)
  if [ "$rc" != 0 ]; then
    echo "$t: FAILED after ${runs:-?} runs (exit $rc)"
    grep -E "ERROR|SUMMARY|check failed|Test unit written" "$work/$t.log" | tail -20
    failed=1
    continue
  fi
  echo "$t: ok, ${runs:-?} runs in ${secs}s (${eps:-?}/s), corpus $before -> $after, $n regressions replayed"
done
if [ "$failed" != 0 ]; then
  keep=1
  echo "fuzz.sh: crashing inputs and logs kept in $work (art/<target>/);" \
    "copy a crash into fuzz/regressions/<target>/ once it is fixed" >&2
  exit 1
fi

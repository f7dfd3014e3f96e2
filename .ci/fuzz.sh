#!/usr/bin/env bash
# The fuzz gate: builds every fuzz/fuzz_*.c target with clang and libFuzzer
# (plus AddressSanitizer and UndefinedBehaviorSanitizer) straight from
# lib/*.c, replays every input in fuzz/regressions/<target>/, then fuzzes
# each target for FUZZ_SECONDS (default 20) over a copy of
# fuzz/corpus/<target>/, so the tree is never written.  One line per target;
# exits non-zero on any crash, leak, sanitizer report or failed check, and
# then keeps the crashing inputs and logs in a directory it names.
#
#   FUZZ_SECONDS  time per target (default 20)
#   FUZZ_JOBS     targets built and fuzzed at once (default 2)
#   FUZZ_WORK     a directory to work in and keep (binaries in bin/, grown
#                 corpora in corpus/, crashes in art/); default a scratch one
#
# Needs clang and libclang-rt-14-dev (libFuzzer), msgpack, and a configure
# script (autoreconf -fi) or a tree configured in place.  See fuzz/README.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
secs=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-2}
cc=${FUZZ_CC:-clang}

keep=0
if [ -n "${FUZZ_WORK:-}" ]; then
  work=$FUZZ_WORK
  keep=1
  mkdir -p "$work"
  (cd "$work" && rm -rf cfg obj bin seeds corpus art ./*.log ./*.status)
else
  work=$(mktemp -d)
fi
trap '[ "$keep" = 1 ] || rm -rf "$work"' EXIT

. .ci/config-h.sh # sets cfg and msgpack
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
printf '%s\n' lib/*.c | xargs -P "$jobs" -I{} sh -c \
  '$cc $cflags -fsanitize=fuzzer-no-link -c {} -o "$work/obj/$(basename {} .c).o"'

# The objects to link with a harness: all of lib/ but the files it includes
# (#include "../lib/x.c", to reach their static functions).
objects_for() {
  local skip o
  skip=" $(sed -n 's|^#include "\.\./lib/\([a-z_]*\)\.c".*|\1|p' "$1" | tr '\n' ' ') "
  for o in "$work"/obj/*.o; do
    case $skip in *" $(basename "$o" .o) "*) ;; *) echo "$o" ;; esac
  done
}

build_one() {
  $cc $cflags ${2:-} "$1" $(objects_for "$1") $mp_libs \
    -o "$work/bin/$(basename "$1" .c)"
}
targets=""
for src in fuzz/fuzz_*.c; do
  targets="$targets $(basename "$src" .c)"
  build_one "$src" -fsanitize=fuzzer &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
done
wait
for t in $targets; do
  [ -x "$work/bin/$t" ] || { echo "fuzz.sh: $t did not build" >&2; exit 1; }
done
# The seed generator must keep building and running against the encoders.
build_one fuzz/make_seeds.c
"$work/bin/make_seeds" "$work/seeds" >/dev/null

# msgpack-c allocates a container's items from the count in its header,
# before it reads them: five bytes can ask for 64 GiB.  Such an allocation
# fails here, as it would in a process with a memory limit, and the code
# under test must cope (FP_ENOMEM or FP_EPROTO) rather than stop the run.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:max_allocation_size_mb=64}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
flags="-rss_limit_mb=2048 -timeout=10"

# Replays the target's regressions one by one, then fuzzes it; writes
# "<exit> <regressions> <corpus before> <after>" or "replay <files>" to
# $t.status.
run_target() {
  local t=$1 bin=$work/bin/$1 n=0 rc=0 bad="" f before
  mkdir -p "$work/art/$t" "$work/corpus/$t"
  for f in fuzz/regressions/"$t"/*; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    "$bin" $flags "$f" >>"$work/$t.replay.log" 2>&1 || bad="$bad $f"
  done
  if [ -n "$bad" ]; then
    echo "replay$bad" >"$work/$t.status"
    return 0
  fi
  [ -d "fuzz/corpus/$t" ] && cp -R "fuzz/corpus/$t/." "$work/corpus/$t/"
  before=$(ls "$work/corpus/$t" | wc -l)
  "$bin" $flags -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="$work/art/$t/" "$work/corpus/$t" >"$work/$t.log" 2>&1 ||
    rc=$?
  echo "$rc $n $before $(ls "$work/corpus/$t" | wc -l)" >"$work/$t.status"
}

for t in $targets; do
  run_target "$t" &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
done
wait

# A number from libFuzzer's -print_final_stats.
fstat() { sed -n "s/^stat::$2: *//p" "$work/$1.log" | tail -1; }

failed=0
for t in $targets; do
  read -r rc rest <"$work/$t.status"
  if [ "$rc" = replay ]; then
    failed=1
    for f in $rest; do
      echo "$t: FAILED on $f"
      "$work/bin/$t" $flags "$f" 2>&1 |
        grep -E "check failed|runtime error|ERROR: [A-Za-z]*Sanitizer|SUMMARY" |
        head -3 | sed 's/^/  /'
    done
    continue
  fi
  read -r n before after <<<"$rest"
  runs=$(fstat "$t" number_of_executed_units)
  eps=$(fstat "$t" average_exec_per_sec)
  if [ "$rc" != 0 ]; then
    failed=1
    echo "$t: FAILED after ${runs:-?} runs (exit $rc)"
    grep -E "check failed|runtime error|ERROR: |SUMMARY|Test unit written" \
      "$work/$t.log" | head -8 | sed 's/^/  /'
    continue
  fi
  echo "$t: ok, $runs runs in ${secs}s ($eps/s), corpus $before -> $after," \
    "$n regressions replayed"
done
if [ "$failed" != 0 ]; then
  keep=1
  echo "fuzz.sh: inputs and logs kept in $work (crashes in art/<target>/);" \
    "see fuzz/README, 'When it finds a crash'" >&2
  exit 1
fi

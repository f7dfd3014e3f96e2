#!/bin/sh
# make bench's real workload (issue 14, item 5): examples/pgzip against
# "pigz -p N -6" and "gzip -6" on the same ~200 MB input, N = online CPUs.
#
#   bench/pgzip.sh [--quick] [--] PGZIP DIR
#
# make bench passes its BENCH_FLAGS before "--": --quick is used, the rest
# (forkpool-bench's own) ignored.
# PGZIP is the built examples/pgzip ("" when configure found no zlib); DIR
# is the build's bench directory.  The input is made once from files on
# this machine, 100 MB from /usr/lib and 100 MB from /usr/share (binaries,
# text, and files already compressed), in sorted order, and cached as
# DIR/pgzip-input.bin.  Each tool runs PGZIP_REPS times (3; --quick: 1, on
# 20 MB), the three taking turns, reading the file and writing to a file in
# DIR; the figure is the median wall time.  With perf, the median CPU time
# (task-clock of every process and thread the command started) is printed
# too: on a shared machine it moves much less than the wall time.  pgzip's output must pass gzip -t
# and gunzip back to the input.  Prints the figures and the target
# "pgzip >= 1.0x pigz's speed", met or missed, and appends them to
# DIR/results.md.  Skipped, with a note and status 0, without pgzip or pigz.
# Exits 1 only when a run fails or the output does not round-trip: a missed
# target is a finding, not a failure.

quick=0
case " $* " in
*" -- "*)
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    [ "$1" = --quick ] && quick=1
    shift
  done
  shift ;;
*)
  [ "$1" = --quick ] && { quick=1; shift; } ;;
esac
pgzip=$1 dir=$2
if [ -z "$dir" ]; then
  echo "usage: bench/pgzip.sh [--quick] [--] PGZIP DIR" >&2
  exit 2
fi
if [ -z "$pgzip" ] || [ ! -x "$pgzip" ]; then
  echo "# pgzip: skipped: examples/pgzip was not built (configure found no zlib)"
  exit 0
fi
if ! command -v pigz >/dev/null 2>&1; then
  echo "# pgzip: skipped: pigz is not installed (apt-get install pigz)"
  exit 0
fi
mkdir -p "$dir" || exit 1

if [ $quick -eq 1 ]; then
  half=10000000 reps=${PGZIP_REPS:-1} input=$dir/pgzip-input-quick.bin
else
  half=100000000 reps=${PGZIP_REPS:-3} input=$dir/pgzip-input.bin
fi
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)

# files DIR: the regular readable files under DIR, sorted, one a line.
files() {
  find "$1" -type f -readable -size +0 2>/dev/null | LC_ALL=C sort
}

# take N: the first N bytes of the files named on stdin, concatenated (a
# file that vanished or cannot be read is left out).
take() {
  tr '\n' '\0' | xargs -0 cat 2>/dev/null | head -c "$1"
}

if [ ! -s "$input" ]; then
  echo "# pgzip: making $input from /usr/lib and /usr/share (once)"
  { files /usr/lib | take $half; files /usr/share | take $half; } \
    >"$input.tmp" && mv "$input.tmp" "$input" || exit 1
fi
size=$(wc -c <"$input")
mb=$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1e6 }')
load0=$(cat /proc/loadavg)
echo "# pgzip: $input, $mb MB; $reps runs each of pgzip -p $ncpu -6, pigz -p $ncpu -6, gzip -6; load $load0"

# CPU time: perf stat's task-clock counts every process and thread a
# command starts (pgzip's fork server and workers are not reaped by the
# shell, so the times builtin would miss them).  Without a usable perf the
# CPU column says n/a.
if perf stat -x, -e task-clock -o /dev/null true >/dev/null 2>&1; then
  perf=perf
else
  perf=
fi

# timed NAME CMD...: runs CMD <input >DIR/pgzip-NAME.gz, appends its wall
# time in seconds to DIR/pgzip-NAME.times and, with perf, its CPU time
# (task-clock: user + system of every process and thread it started) to
# DIR/pgzip-NAME.cpu.
timed() {
  name=$1
  shift
  t0=$(date +%s.%N)
  if [ -n "$perf" ]; then
    $perf stat -x, -e task-clock -o "$dir/pgzip-perf.txt" -- "$@" \
      <"$input" >"$dir/pgzip-$name.gz"
  else
    "$@" <"$input" >"$dir/pgzip-$name.gz"
  fi
  if [ $? -ne 0 ]; then
    echo "pgzip bench: $* failed" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{ printf "%.4f\n", $2 - $1 }' >>"$dir/pgzip-$name.times"
  [ -z "$perf" ] ||
    awk -F, '$3 == "task-clock" { printf "%.3f\n", $1 / 1000 }' \
      "$dir/pgzip-perf.txt" >>"$dir/pgzip-$name.cpu"
}

rm -f "$dir"/pgzip-*.times "$dir"/pgzip-*.cpu
r=0
while [ $r -lt "$reps" ]; do
  # Who goes first takes turns: a neighbour's burst hits each alike.
  case $((r % 3)) in
  0) order="pgzip pigz gzip" ;;
  1) order="pigz gzip pgzip" ;;
  *) order="gzip pgzip pigz" ;;
  esac
  for tool in $order; do
    case $tool in
    pgzip) timed pgzip "$pgzip" -p "$ncpu" -6 ;;
    pigz) timed pigz pigz -p "$ncpu" -6 -c ;;
    gzip) timed gzip gzip -6 -c ;;
    esac
  done
  r=$((r + 1))
done
load1=$(cat /proc/loadavg)

# stats NAME [EXT]: "median min max n" of its times (or of DIR/pgzip-NAME.EXT).
stats() {
  sort -n "$dir/pgzip-$1.${2:-times}" | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.3f %.3f %.3f %d\n", m, v[1], v[NR], NR }'
}
set -- $(stats pgzip)
pg_med=$1 pg_min=$2 pg_max=$3 n=$4
set -- $(stats pigz)
pi_med=$1 pi_min=$2 pi_max=$3
set -- $(stats gzip)
gz_med=$1 gz_min=$2 gz_max=$3
if [ -n "$perf" ]; then
  set -- $(stats pgzip cpu)
  pg_cpu="$1 s" pg_crange="$2–$3"
  set -- $(stats pigz cpu)
  pi_cpu="$1 s" pi_crange="$2–$3"
  set -- $(stats gzip cpu)
  gz_cpu="$1 s" gz_crange="$2–$3"
else
  pg_cpu=n/a pi_cpu=n/a gz_cpu=n/a pg_crange=- pi_crange=- gz_crange=- cpu_ratio=n/a
fi

# Round trip: what pgzip wrote in its last run.
ok=yes
gzip -t "$dir/pgzip-pgzip.gz" || ok=no
gunzip -c "$dir/pgzip-pgzip.gz" | cmp -s - "$input" || ok=no

rate() { awk -v b="$size" -v t="$1" 'BEGIN { printf "%.1f", b / 1e6 / t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
bytes() { wc -c <"$dir/pgzip-$1.gz"; }
vs_pigz=$(ratio "$pi_med" "$pg_med")   # speed: pigz's time / pgzip's
vs_gzip=$(ratio "$gz_med" "$pg_med")
[ -n "$perf" ] && cpu_ratio=$(ratio "${pg_cpu% s}" "${pi_cpu% s}")
pigz_vs_gzip=$(ratio "$gz_med" "$pi_med")
met=$(awk -v r="$vs_pigz" 'BEGIN { print (r >= 1.0 ? "met" : "MISS") }')
[ $ok = yes ] || met=MISS

echo "P1 gzip -6: $gz_med s ($gz_min–$gz_max, $n) $(rate "$gz_med") MB/s, $(bytes gzip) bytes"
echo "P1 pigz -p $ncpu -6: $pi_med s ($pi_min–$pi_max, $n) $(rate "$pi_med") MB/s, $(bytes pigz) bytes; speed $pigz_vs_gzip x gzip's"
echo "P1 pgzip -p $ncpu -6: $pg_med s ($pg_min–$pg_max, $n) $(rate "$pg_med") MB/s, $(bytes pgzip) bytes; speed $vs_gzip x gzip's, ratio $vs_pigz x pigz's speed"
echo "P1 CPU time (perf stat task-clock), medians: gzip $gz_cpu ($gz_crange), pigz $pi_cpu ($pi_crange), pgzip $pg_cpu ($pg_crange); pgzip's CPU / pigz's: $cpu_ratio"
echo "P1 pgzip round trip (gzip -t, gunzip | cmp): $ok"
echo "  $met  P1 pgzip speed >= 1.0x pigz's (same input, same run): $vs_pigz"
echo "# pgzip: load at start $load0; at end $load1"

if [ -f "$dir/results.md" ]; then
  cat >>"$dir/results.md" <<EOF

## A real workload: pgzip against pigz

examples/pgzip compresses in 1 MiB blocks in forkpool's workers and writes
one gzip member per block; \`pigz -p $ncpu -6\` and \`gzip -6\` compress the
same $mb MB input ($input: files from /usr/lib and /usr/share).  Medians of
$n runs each, taking turns; wall time, file to file.  Load at start:
$load0; at end: $load1.

| Command | Median | Min–max (n) | MB/s | CPU (task-clock), median | Output bytes | Speed vs pigz | Target | Met |
|---|---:|---:|---:|---:|---:|---:|---|:-:|
| gzip -6 | $gz_med s | $gz_min–$gz_max ($n) | $(rate "$gz_med") | $gz_cpu | $(bytes gzip) | $(ratio "$pi_med" "$gz_med") | – | – |
| pigz -p $ncpu -6 | $pi_med s | $pi_min–$pi_max ($n) | $(rate "$pi_med") | $pi_cpu | $(bytes pigz) | 1.00 | – | – |
| pgzip -p $ncpu -6 | $pg_med s | $pg_min–$pg_max ($n) | $(rate "$pg_med") | $pg_cpu | $(bytes pgzip) | $vs_pigz | >= 1.0x pigz's speed, output round-trips ($ok) | $([ "$met" = met ] && echo yes || echo "**no**") |
EOF
fi
rm -f "$dir"/pgzip-*.gz "$dir"/pgzip-*.times "$dir"/pgzip-*.cpu "$dir"/pgzip-perf.txt
[ $ok = yes ] || { echo "pgzip bench: the output does not round-trip" >&2; exit 1; }
exit 0

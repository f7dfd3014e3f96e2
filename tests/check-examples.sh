#!/bin/sh
# Runs the example programs and checks what they print.  For make check:
# top_builddir (default ".") is where the examples were built.  The output
# goes to files in top_builddir, removed by make clean.  Exits 0 or 1.

top_builddir=${top_builddir:-.}
ex=$top_builddir/examples
out=$top_builddir/check-examples.out
in=$top_builddir/check-examples.in
png=$top_builddir/check-examples.png
status=0

fail() {
  echo "FAIL: $*" >&2
  sed 's/^/  | /' "$out" >&2
  status=1
}

# run PROGRAM [ARG...]: runs it under timeout 120, stdin as given, stdout and
# stderr into $out, then a last line "exit status N".  Workers and the fork
# server inherit the output pipe, so cat sees its end only when every process
# the example started is gone: one left behind fails the run at 125 s.
run() {
  { timeout 120 "$@" 2>&1; echo "exit status $?"; } | timeout 125 cat >"$out"
  if [ $? -ne 0 ]; then
    fail "$*: its output stayed open 125 s (a process it started lives on?)"
    return 1
  fi
  if ! grep -q '^exit status 0$' "$out"; then
    fail "$*: did not exit with status 0"
    return 1
  fi
  echo "ran: $*"
}

# expect WHAT LINE...: each LINE (a fixed string) is in $out.
expect() {
  what=$1
  shift
  for line in "$@"; do
    grep -qF -- "$line" "$out" || { fail "$what: no line '$line'"; return 1; }
  done
}

run "$ex/squares" </dev/null &&
  expect squares "square(10) = 100" "TypeError: square takes one integer"

# Crashes of every kind and an endless loop stopped by its deadline; the
# pool finishes all the rest.
run "$ex/crashy" </dev/null &&
  expect crashy "12 finished, 8 failed" \
    "not done after 100 ms: timed out (FP_ETIMEDOUT)" \
    "killed by signal 11" "killed by signal 6" "exited with status 3" \
    "task failed (ValueError: I refuse, politely)" \
    "hang   failed: task ran past its deadline (task ran past its deadline of 500 ms)" \
    "worker deaths 6, deadline kills 1"

# fp_map over a lazy input: the count is right, the progress bar (stderr, not
# a terminal here: a line per quarter) reaches every item.
run "$ex/primes" 100000 </dev/null &&
  expect primes "primes below 100000: 9592" "100% 100/100 ranges"

# The same program in each mode, switched by its flag alone.
for mode in processes threads inline; do
  run "$ex/primes" --mode $mode 100000 </dev/null &&
    expect "primes --mode $mode" "primes below 100000: 9592" \
      "100% 100/100 ranges"
done
run "$ex/primes" --mode inline 100000 </dev/null &&
  expect "primes --mode inline" "over 1 caller"

# Ctrl-C: once the map runs (its first progress line), SIGINT makes the
# handler's fp_pool_interrupt end the blocked fp_map_next with FP_EINTR;
# primes says so and exits 130.  The wait is for that line, not a time.
# The file is emptied first: the background child truncates it only once
# it runs, and the last run's "ranges" must not send SIGINT early (a
# background job starts with SIGINT ignored, so an early one is lost).
# A second SIGINT, then SIGKILL, after the limit: a lost one fails the
# test instead of hanging it for the hours primes would run.
: >"$out"
"$ex/primes" 1000000000000 </dev/null >"$out" 2>&1 &
pid=$!
i=0
until grep -q ranges "$out" || [ $i -ge 1200 ]; do
  sleep 0.1
  i=$((i + 1))
done
kill -INT $pid
# Running, not a zombie that no wait has collected yet (sh may leave one).
running() {
  state=$(sed 's/.*) //' /proc/$1/stat 2>/dev/null | cut -c1)
  [ -n "$state" ] && [ "$state" != Z ]
}
i=0
while running $pid && [ $i -lt 1200 ]; do
  sleep 0.1
  i=$((i + 1))
done
if running $pid; then
  kill -KILL $pid
  fail "primes: Ctrl-C: still running 120 s after SIGINT"
fi
wait $pid
st=$?
if [ $st -ne 130 ]; then
  fail "primes: Ctrl-C: exit status $st, not 130"
else
  expect "primes Ctrl-C" "interrupted: " && echo "ran: primes, Ctrl-C"
fi

# Large payloads: every band's pixels and its blurred result (256 KiB at
# this width) cross through shared memory, and the image is right.
run "$ex/blur" 1024 1024 </dev/null &&
  expect blur "1024x1024, 16 bands of 64 rows" \
    "through shared memory: 16 of 16 arguments, 16 of 16 results"

# Input from a file, not a pipe: a function at the end of a pipeline may run
# in a subshell, which would lose what fail() sets.
printf '10\n1000\nseven\n100000\n-1\n' >"$in"
run "$ex/evloop" <"$in" &&
  expect evloop "primes below 10: 4" "primes below 1000: 168" \
    "primes below 100000: 9592" "not a number: 'seven'" \
    "primes below -1: task failed (ValueError"

# Many small questions at once: every one is answered, none is lost.
awk 'BEGIN { for (i = 1; i <= 500; i++) print i }' >"$in"
run "$ex/evloop" <"$in" &&
  { n=$(grep -c '^primes below' "$out")
    [ "$n" -eq 500 ] || fail "evloop: $n answers to 500 questions"; }

if [ -x "$ex/mandelbrot" ]; then
  rm -f "$png"
  run "$ex/mandelbrot" "$png" 300 200 500 </dev/null &&
    expect mandelbrot "speedup:" &&
    { sig=$(od -An -tx1 -N8 "$png" | tr -d ' \n')
      [ "$sig" = 89504e470d0a1a0a ] || fail "mandelbrot: $png is not a PNG"; }
else
  echo "skip: examples/mandelbrot (not built: configure found no libpng)"
fi

exit $status

#!/bin/sh
# examples/pgzip round trips: compresses inputs of 0 bytes, 1 byte, 1 MiB,
# 3 MiB + 1 and a multi-block mix of text and random bytes, from a file,
# from stdin (at its start and part way in) and from a pipe, with several
# levels and worker counts; each output must pass "gzip -t" and gunzip back
# to the same bytes (cmp).  Then bad usage and bad files: each must fail
# with a clear message and the documented status.  For
# make check: top_builddir (default ".") is where pgzip was built; skipped
# (77) when it was not (configure found no zlib).  Files go to
# top_builddir/check-pgzip.*, removed by make clean.  Exits 0, 1 or 77.

top_builddir=${top_builddir:-.}
pgzip=$top_builddir/examples/pgzip
tmp=$top_builddir/check-pgzip
out=$tmp.out
gz=$tmp.gz
status=0

if [ ! -x "$pgzip" ]; then
  echo "skip: examples/pgzip was not built (configure found no zlib)"
  exit 77
fi
for tool in gzip gunzip cmp; do
  command -v $tool >/dev/null 2>&1 ||
    { echo "skip: no $tool on this machine"; exit 77; }
done

fail() {
  echo "FAIL: $*" >&2
  [ -s "$out" ] && sed 's/^/  | /' "$out" >&2
  status=1
}

# pgz ARG...: runs pgzip under timeout 120 with stdout to $gz, stderr to
# $out; returns its exit status.  Workers and the fork server inherit
# stderr, so cat sees its end only when every process pgzip started is
# gone: one left behind fails the run at 125 s.
pgz() {
  { timeout 120 "$pgzip" "$@" 2>&1 >"$gz"; echo "exit status $?"; } |
    timeout 125 cat >"$out"
  if [ $? -ne 0 ]; then
    fail "pgzip $*: its stderr stayed open 125 s (a process it started lives on?)"
    return 125
  fi
  st=$(sed -n 's/^exit status //p' "$out")
  return "$st"
}

# roundtrip NAME INPUT ARG...: pgzip ARG... must exit 0, and $gz must pass
# gzip -t and decompress to exactly INPUT.
roundtrip() {
  name=$1 input=$2
  shift 2
  pgz "$@"
  st=$?
  if [ $st -ne 0 ]; then
    fail "$name: pgzip $* exited $st"
    return
  fi
  if ! gzip -t "$gz" 2>"$out"; then
    fail "$name: gzip -t rejects the output of pgzip $*"
    return
  fi
  if ! gunzip -c "$gz" 2>"$out" | cmp -s - "$input"; then
    fail "$name: pgzip $* | gunzip differs from the input"
    return
  fi
  echo "ok: $name ($(wc -c <"$input") bytes -> $(wc -c <"$gz")): pgzip $*"
}

# Inputs: text (compressible) cut to size, and for the mix incompressible
# bytes too, where a member is larger than its block.
: >"$tmp.0"
printf x >"$tmp.1"
seq 1 400000 | head -c 1048576 >"$tmp.1m"
seq 1 1000000 | head -c 3145729 >"$tmp.3m1"
{ head -c 2500000 /dev/urandom; seq 1 300000; head -c 700001 /dev/urandom; } \
  >"$tmp.mix"
for fw in 0:0 1:1 1m:1048576 3m1:3145729; do
  f=${fw%:*} want=${fw#*:}
  [ "$(wc -c <"$tmp.$f")" -eq "$want" ] || fail "input $tmp.$f is not $want bytes"
done

for f in 0 1 1m 3m1 mix; do
  roundtrip "$f, a file" "$tmp.$f" "$tmp.$f"
  roundtrip "$f, stdin" "$tmp.$f" <"$tmp.$f"
done
roundtrip "3m1, -1 -p 1" "$tmp.3m1" -1 -p 1 "$tmp.3m1"
roundtrip "3m1, -9 -p 3" "$tmp.3m1" -9 -p 3 "$tmp.3m1"
roundtrip "mix, -p 5, -" "$tmp.mix" -p 5 - <"$tmp.mix"
# More workers than blocks, and the level after the file name.
roundtrip "1, -p 8" "$tmp.1" "$tmp.1" -p 8 -2
# A regular file's blocks are read by the workers, from where stdin's
# offset is: here 1000 bytes in (dd seeks, reads nothing).
tail -c +1001 "$tmp.3m1" >"$tmp.tail"
{ dd bs=1000 skip=1 count=0 2>/dev/null
  roundtrip "3m1 after 1000 bytes, stdin" "$tmp.tail"; } <"$tmp.3m1"
# A pipe's blocks go through this process, as bytes.
if mkfifo "$tmp.pipe" 2>/dev/null; then
  for f in 0 3m1 mix; do
    cat "$tmp.$f" >"$tmp.pipe" &
    roundtrip "$f, a pipe" "$tmp.$f" -p 2 <"$tmp.pipe"
    wait
  done
else
  echo "skip: pipes (no mkfifo)"
fi

# -o FILE, and the blocks are members: 3 MiB + 1 makes 4, each with the
# gzip magic and header zlib writes (1f 8b 08 00), in input order.
rm -f "$tmp.o.gz"
if "$pgzip" -o "$tmp.o.gz" "$tmp.3m1" 2>"$out" && gzip -t "$tmp.o.gz" &&
  gunzip -c "$tmp.o.gz" | cmp -s - "$tmp.3m1"; then
  n=$(od -An -tx1 -v "$tmp.o.gz" | tr -d '\n' | grep -o '1f 8b 08 00' | wc -l)
  [ "$n" -ge 4 ] || fail "-o: $n gzip headers in the output, not 4 or more"
  echo "ok: -o FILE, $n members"
else
  fail "pgzip -o $tmp.o.gz $tmp.3m1"
fi

# -v: the summary counts the bytes and the blocks.
if pgz -v "$tmp.3m1" && grep -qF "pgzip: 3145729 bytes in 4 blocks -> " "$out"
then
  echo "ok: -v: $(grep '^pgzip:' "$out")"
else
  fail "pgzip -v $tmp.3m1: no summary of 3145729 bytes in 4 blocks"
fi

# expect_error STATUS TEXT ARG...: pgzip ARG... exits STATUS and says TEXT.
expect_error() {
  want=$1 text=$2
  shift 2
  pgz "$@" </dev/null
  st=$?
  if [ "$st" -ne "$want" ]; then
    fail "pgzip $*: exit status $st, not $want"
  elif ! grep -qF -- "$text" "$out"; then
    fail "pgzip $*: no message '$text'"
  else
    echo "ok: pgzip $* fails ($st): $(head -n 1 "$out")"
  fi
}

expect_error 1 "$tmp.none: No such file or directory" "$tmp.none"
expect_error 2 "unknown option '-x'" -x "$tmp.1"
expect_error 2 "unknown option '-0'" -0 "$tmp.1"
expect_error 2 "-p takes a number of workers from 1 to 4096, not '0'" -p 0
expect_error 2 "-p takes a number of workers from 1 to 4096, not 'two'" -p two
expect_error 2 "-o needs an argument" "$tmp.1" -o
expect_error 2 "one input file at most" "$tmp.1" "$tmp.1m"
expect_error 1 "Is a directory" "$top_builddir"
expect_error 1 "$tmp.none/x.gz: No such file or directory" -o "$tmp.none/x.gz" "$tmp.1"
cp "$tmp.1" "$tmp.same"
expect_error 1 "the input and the output are the same file" -o "$tmp.same" "$tmp.same"
cmp -s "$tmp.1" "$tmp.same" || fail "-o the input itself: the input was changed"
# A read that fails after the pool started: the output file is removed.
rm -f "$tmp.o.gz"
expect_error 1 "Is a directory" -o "$tmp.o.gz" "$top_builddir"
[ ! -e "$tmp.o.gz" ] || fail "a failed run left its output file behind"
if [ -w /dev/full ]; then
  { "$pgzip" "$tmp.1m" >/dev/full 2>"$out"; echo "exit status $?" >>"$out"; }
  if grep -q '^exit status 1$' "$out" &&
    grep -qF "stdout: No space left on device" "$out"; then
    echo "ok: a full disk fails (1): $(head -n 1 "$out")"
  else
    fail "pgzip >/dev/full: not exit status 1 with 'No space left on device'"
  fi
fi

# Ctrl-C while pgzip waits for input: a FIFO this shell holds open for
# writing sends a few bytes and no end.  Once pgzip catches SIGINT (bit 2 of
# SigCgt in /proc: its handler is in place, so the pool exists), SIGINT
# makes the blocked read return, the map end with FP_EINTR, and pgzip say
# so, remove its output and exit 130.  The wait is for that bit, not a time.
if [ -d /proc/$$ ] && mkfifo "$tmp.fifo" 2>/dev/null; then
  exec 3<>"$tmp.fifo"
  printf 'some bytes, and no end' >&3
  rm -f "$tmp.o.gz"
  "$pgzip" -o "$tmp.o.gz" <"$tmp.fifo" 2>"$out" &
  pid=$!
  i=0
  until [ $i -ge 1200 ] || {
    cgt=$(sed -n 's/^SigCgt:[[:space:]]*//p' /proc/$pid/status 2>/dev/null)
    [ -n "$cgt" ] && [ $((0x$cgt & 2)) -ne 0 ]; }; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -INT $pid
  # A pgzip that ignored it would wait for input for ever: 120 s, then KILL.
  i=0
  while [ $i -lt 1200 ] && [ -d /proc/$pid ] &&
    ! grep -q '^State:[[:space:]]*Z' /proc/$pid/status 2>/dev/null; do
    sleep 0.1
    i=$((i + 1))
  done
  [ $i -lt 1200 ] || kill -KILL $pid
  wait $pid
  st=$?
  exec 3>&-
  if [ $st -ne 130 ]; then
    fail "Ctrl-C: exit status $st, not 130"
  elif ! grep -qF "pgzip: interrupted" "$out"; then
    fail "Ctrl-C: no 'pgzip: interrupted'"
  elif [ -e "$tmp.o.gz" ]; then
    fail "Ctrl-C: the output file was left behind"
  else
    echo "ok: Ctrl-C while reading: interrupted, 130, no output file"
  fi
else
  echo "skip: Ctrl-C (no /proc or no mkfifo)"
fi

rm -f "$tmp".*
exit $status

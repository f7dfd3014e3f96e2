#!/usr/bin/env bash
# The static gate on lib/: cppcheck (warning and portability checks) and
# clang-tidy (the checks in .clang-tidy), both with the defines configure
# finds on this machine.  Prints every finding; exits non-zero if any is
# left that the list of waivers below does not name.
#
# Needs cppcheck (2.10), clang-tidy (14), msgpack, and a configure script
# (autoreconf -fi) or a tree configured in place.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
jobs=${STATIC_JOBS:-2}

# Findings looked at and waived until lib/ carries the fix or the inline
# suppression proposed for each; then delete its line.  A waiver names the
# tool and check, the file, and text of the flagged line, so that it covers
# that line only, wherever it moves.
#   tool:check|file|text of the line
waivers='
cppcheck:nullPointer|lib/map.c|last->next = c->next;
cppcheck:ctuuninitvar|lib/forkserver.c|struct iovec iov = {m, sizeof *m};
clang-tidy:clang-analyzer-core.NullDereference|lib/pipe.c|size_t rest = s->send->frame_len - s->send_off;
clang-tidy:bugprone-implicit-widening-of-multiplication-result|lib/frame.c|FP__CHUNK
clang-tidy:bugprone-branch-clone|lib/map.c|c->f = failed_future(m, rc); /* this item fails; the map goes on */
'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. .ci/config-h.sh # sets cfg and msgpack
# As lib/Makefile.am compiles the library, warnings included.
cflags="-DHAVE_CONFIG_H -DFP_BUILDING -I$cfg -Iinclude -Ilib -pthread
  $(pkg-config --cflags "$msgpack") -Wall -Wextra -Wshadow -Wstrict-prototypes
  -Wmissing-prototypes -Wpointer-arith"

# Findings, one a line: "tool:check|file|line|message".
findings=$work/findings
: >"$findings"

echo "== cppcheck $(cppcheck --version | sed 's/^Cppcheck //')"
rc=0
cppcheck --enable=warning,portability --error-exitcode=1 --inline-suppr \
  --suppress=missingIncludeSystem -q -DHAVE_CONFIG_H -DFP_BUILDING \
  -I "$cfg" -I include -I lib \
  --template='cppcheck:{id}|{file}|{line}|{severity}: {message}' \
  lib/ 2>"$work/cppcheck.out" || rc=$?
grep '^cppcheck:' "$work/cppcheck.out" >>"$findings" || true
if [ "$rc" != 0 ] && ! grep -q '^cppcheck:' "$work/cppcheck.out"; then
  cat "$work/cppcheck.out" >&2
  echo "static.sh: cppcheck failed (exit $rc)" >&2
  exit 1
fi

echo "== $(clang-tidy --version | grep -i version | sed 's/^ *//')"
mkdir "$work/tidy"
export cflags work
printf '%s\n' lib/*.c | xargs -P "$jobs" -I{} sh -c \
  'f={}; o="$work/tidy/$(basename "$f").out";
   clang-tidy --quiet "$f" -- $cflags >"$o" 2>"$o.err" || echo "$f" >>"$o.failed"'
cat "$work"/tidy/*.c.out |
  sed -n 's#^\(/[^:]*\):\([0-9]*\):[0-9]*: \(warning\|error\): \(.*\) \[\([^]]*\)\]$#clang-tidy:\5|\1|\2|\3: \4#p' |
  sed "s#|$top/#|#" | sort -u >>"$findings"
for failed in "$work"/tidy/*.failed; do
  [ -e "$failed" ] || continue
  # A compile error is a finding above; a crash leaves no line at all.
  f=$(cat "$failed")
  if ! grep -q "|$f|" "$findings"; then
    cat "$work/tidy/$(basename "$f").out.err" >&2
    echo "static.sh: clang-tidy failed on $f" >&2
    exit 1
  fi
done

# Sorts the findings into waived and left.
left=0 waived=0
while IFS='|' read -r id file line msg; do
  text=$(sed -n "${line}p" "$file" 2>/dev/null | sed 's/^[[:space:]]*//')
  w=0
  while IFS='|' read -r wid wfile wtext; do
    [ -n "$wid" ] || continue
    if [ "$wid" = "$id" ] && [ "$wfile" = "$file" ] &&
       case "$text" in *"$wtext"*) true ;; *) false ;; esac; then
      w=1
      break
    fi
  done <<EOF
$waivers
EOF
  if [ "$w" = 1 ]; then
    waived=$((waived + 1))
    echo "waived  $file:$line: [$id] $msg"
  else
    left=$((left + 1))
    echo "FINDING $file:$line: [$id] $msg"
    echo "        $text"
  fi
done <"$findings"

echo "static: $left findings, $waived waived"
[ "$left" = 0 ]

#!/bin/sh
# The man pages cover the public API and lint clean:
#   - every function declared with FP_EXTERN in include/forkpool.h has
#     man/<name>.3;
#   - every .Fn or .Fo fp_... in a page names a function of the header;
#   - every .Xr to an fp_ or forkpool page points to a page in man/;
#   - man/local.am lists every page in man/, and only those;
#   - if mandoc is installed, `mandoc -T lint -W warning` reports nothing.
# Alias pages are one-line `.so man3/<page>.3` files.  mandoc resolves .so
# against the current directory, so pages are linted from a scratch
# directory where man3/ and man7/ point to man/.  mandoc warns ".so is
# fragile, better use ln(1)" about every alias; that one message is the
# price of .so aliases and is the only one ignored.
# Exit status: 0 pass, 1 fail (for the automake test driver).
set -u

top_srcdir=${top_srcdir:-.}
hdr=$top_srcdir/include/forkpool.h
# forkpool over MPI's header, in the tree whether or not it is built.
hdr_mpi=$top_srcdir/include/forkpool-mpi.h
man=$top_srcdir/man
fail=0

bad() {
  echo "check-man: $*"
  fail=1
}

[ -f "$hdr" ] || { echo "check-man: no $hdr"; exit 1; }
[ -d "$man" ] || { echo "check-man: no $man"; exit 1; }

tmp=${TMPDIR:-/tmp}/fp-check-man.$$
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
mkdir "$tmp" || exit 1

# The functions of the header: a line "FP_EXTERN ... fp_name(".
sed -n 's/^FP_EXTERN[^(]*[^A-Za-z0-9_]\(fp_[A-Za-z0-9_]*\)(.*/\1/p' "$hdr" "$hdr_mpi" |
  sort -u > "$tmp/functions"
nfunc=$(wc -l < "$tmp/functions" | tr -d ' ')
[ "$nfunc" -gt 0 ] || bad "no FP_EXTERN function found in $hdr"

while read -r fn; do
  [ -f "$man/$fn.3" ] || bad "$fn is declared in include/ but man/$fn.3 is missing"
done < "$tmp/functions"

# The pages, as man3/x.3 and man7/x.7 names.
pages=
for p in "$man"/*.3 "$man"/*.7; do
  [ -f "$p" ] || continue
  pages="$pages $(basename "$p")"
done
npages=$(echo $pages | wc -w | tr -d ' ')

# .Fn and .Fo on macro lines, wherever they stand on the line; .Xr too.
for page in $pages; do
  awk -v page="$page" '
    /^[.\047]/ {
      for (i = 1; i < NF; i++) {
        if (($i == "Fn" || $i == ".Fn" || $i == "Fo" || $i == ".Fo") &&
            $(i + 1) ~ /^fp_/)
          print "fn", $(i + 1), page ":" NR
        if (($i == "Xr" || $i == ".Xr") && i + 2 <= NF &&
            $(i + 1) ~ /^(fp_|forkpool)/)
          print "xr", $(i + 1) "." $(i + 2), page ":" NR
      }
    }' "$man/$page"
done > "$tmp/refs"

while read -r kind name where; do
  name=${name%%[!A-Za-z0-9_.]*}
  case $kind in
  fn)
    grep -qx "$name" "$tmp/functions" ||
      bad "$where: .Fn $name is not a function of include/forkpool.h or forkpool-mpi.h"
    ;;
  xr)
    [ -f "$man/$name" ] || bad "$where: .Xr to $name, which is not in man/"
    ;;
  esac
done < "$tmp/refs"

# man/local.am: dist_man_MANS names exactly the pages in man/.
if [ -f "$man/local.am" ]; then
  tr ' \t\\' '\n\n\n' < "$man/local.am" | sed -n 's|^man/\([^/]*\.[37]\)$|\1|p' |
    sort -u > "$tmp/listed"
  for page in $pages; do
    grep -qx "$page" "$tmp/listed" || bad "man/$page is not in man/local.am"
  done
  while read -r page; do
    [ -f "$man/$page" ] || bad "man/local.am lists man/$page, which does not exist"
  done < "$tmp/listed"
else
  bad "no man/local.am"
fi

lint="mandoc not installed: lint skipped"
if command -v mandoc > /dev/null 2>&1; then
  mandir=$(cd "$man" && pwd) || exit 1
  ln -s "$mandir" "$tmp/man3" && ln -s "$mandir" "$tmp/man7" || exit 1
  list=
  for page in $pages; do
    case $page in
    *.3) list="$list man3/$page" ;;
    *.7) list="$list man7/$page" ;;
    esac
  done
  (cd "$tmp" && mandoc -T lint -W warning $list) > "$tmp/lint" 2>&1
  grep -v 'WARNING: \.so is fragile, better use ln(1)' "$tmp/lint" > "$tmp/lint.kept"
  if [ -s "$tmp/lint.kept" ]; then
    cat "$tmp/lint.kept"
    bad "mandoc -T lint -W warning reported the messages above"
  fi
  lint="mandoc lint clean"
fi

if [ "$fail" -ne 0 ]; then
  echo "check-man: FAIL ($npages pages, $nfunc functions in the header)"
  exit 1
fi
echo "check-man: $npages pages cover the $nfunc functions of the header; $lint"
exit 0

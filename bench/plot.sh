#!/bin/sh
# make bench's plots (issue 14, item 6): renders DIR/w8.png and DIR/w4.png
# from the DIR/w8.dat and DIR/w4.dat that forkpool-bench --data DIR wrote,
# with bench/plot.gp, and links them from DIR/results.md.  Skipped with a
# note, status 0, when gnuplot is not installed (Debian: gnuplot-nox) or a
# data file is missing (an --only run without W4 or W8).
#
#   bench/plot.sh SRCDIR DIR

srcdir=$1 dir=$2
if [ -z "$dir" ]; then
  echo "usage: bench/plot.sh SRCDIR DIR" >&2
  exit 2
fi
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "# plots: skipped: gnuplot is not installed (apt-get install gnuplot-nox)"
  exit 0
fi
if [ ! -s "$dir/w8.dat" ] || [ ! -s "$dir/w4.dat" ]; then
  echo "# plots: skipped: $dir/w8.dat or $dir/w4.dat is missing (run W4 and W8)"
  exit 0
fi
rm -f "$dir/w8.png" "$dir/w4.png"
if ! gnuplot -e "dir='$dir'" "$srcdir/bench/plot.gp"; then
  echo "plots: gnuplot failed on $srcdir/bench/plot.gp" >&2
  exit 1
fi
echo "wrote $dir/w8.png $dir/w4.png"
if [ -f "$dir/results.md" ]; then
  cat >>"$dir/results.md" <<'MD'

## Plots

W8, the parent's CPU time per task against the number of workers (data:
[w8.dat](w8.dat)):

![W8: parent CPU per task against workers](w8.png)

W4, the speedup over one thread with 1, 2, 4 and 8 workers, beside OpenMP
with as many threads (data: [w4.dat](w4.dat)):

![W4: speedup against workers, forkpool and OpenMP](w4.png)
MD
fi

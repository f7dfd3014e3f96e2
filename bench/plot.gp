# Plots of make bench's scaling figures, from the data forkpool-bench
# writes with --data DIR (bench/plot.sh runs this):
#   gnuplot -e "dir='bench'" bench/plot.gp
# DIR/w8.dat -> DIR/w8.png: W8, the parent's CPU per task against workers.
# DIR/w4.dat -> DIR/w4.png: W4, speedup against workers, beside OpenMP's.
# Columns: see the comment lines at the top of each .dat file.
if (!exists("dir")) dir = "bench"
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 800,500 font "sans,10"
} else {
  set terminal png size 800,500
}
set key top left box opaque
# stamp FILE: "made DATE, load ..." from the data file's first line.
stamp(f) = system("sed -n '1s/^# made //p' '".f."'")
set grid
set datafile missing "nan"

set output dir."/w8.png"
set label 1 stamp(dir."/w8.dat") at screen 0.01, screen 0.02 left font ",8"
set title "W8: the parent's CPU time per task, against the pool's size\n(getrusage of the parent; medians, bars from min to max; target: 256 workers <= 1.2x 2)"
set xlabel "workers"
set ylabel "parent CPU, ns per task (map: per item)"
set logscale x 2
set xtics (2, 16, 64, 256)
set xrange [1.6:320]
set yrange [0:*]
plot dir."/w8.dat" using 1:2:3:4 with yerrorlines lw 2 pt 7 title "fp\\_submit loop", \
     ""            using 1:5:6:7 with yerrorlines lw 2 pt 5 title "fp\\_future\\_result loop", \
     ""            using 1:11:12:13 with yerrorlines lw 2 pt 9 title "fp\\_map, per item"

set output dir."/w4.png"
set label 1 stamp(dir."/w4.dat") at screen 0.01, screen 0.02 left font ",8"
set title "W4: speedup over one thread against workers, counting primes (64 ranges)\n(medians, bars from min to max; the dashed line is the number of CPUs)"
set ylabel "speedup (serial time / parallel time)"
set xtics (1, 2, 4, 8)
set xrange [0.8:10]
set yrange [0:*]
# The CPUs this ran on, from the data file's first comment line.
ncpu = real(system("sed -n 's/.*; \\([0-9]*\\) online CPUs.*/\\1/p' '".dir."/w4.dat' | head -n 1"))
plot dir."/w4.dat" using 1:2:3:4 with yerrorlines lw 2 pt 7 title "forkpool workers", \
     ""            using 1:5:6:7 with yerrorlines lw 2 pt 5 title "OpenMP threads", \
     (x < ncpu ? x : ncpu) with lines dt 2 lc "gray" title "ideal: min(workers, CPUs)"

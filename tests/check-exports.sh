#!/bin/sh
# Every symbol the shared library exports is declared in the public header,
# and every function the header declares is exported (jansson's check-exports).
# The one exception: the fp__remote_ seam (lib/forkpool-remote.h), exported
# for libforkpool-mpi alone, and no other fp__ name.  libforkpool-mpi, when
# built, is held to include/forkpool-mpi.h the same way.
set -eu
lib=${top_builddir:-.}/lib/.libs/libforkpool.so
hdr=${top_srcdir:-.}/include/forkpool.h
[ -f "$lib" ] || { echo "no $lib (static-only build?)"; exit 77; }
tmp=${TMPDIR:-/tmp}/fp-exports.$$
trap 'rm -f "$tmp".*' EXIT
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBR]$/ {print $3}' | sort -u > "$tmp.all"
grep -v '^fp__remote_' "$tmp.all" > "$tmp.lib" || true
seam=$(grep -c '^fp__remote_' "$tmp.all" || true)
grep -oE 'FP_EXTERN[^;]*[^a-z_0-9](fp_[a-z0-9_]+)\(' "$hdr" |
  sed -E 's/.*[^a-z_0-9](fp_[a-z0-9_]+)\($/\1/' | sort -u > "$tmp.hdr"
if ! diff -u "$tmp.hdr" "$tmp.lib"; then
  echo "exports differ from the header (- header only, + library only)"
  exit 1
fi
echo "exports: $(wc -l < "$tmp.lib") symbols match the header, and $seam fp__remote_ symbols the seam"

mpilib=${top_builddir:-.}/lib/.libs/libforkpool-mpi.so
mpihdr=${top_srcdir:-.}/include/forkpool-mpi.h
[ -f "$mpilib" ] || exit 0
nm -D --defined-only "$mpilib" | awk '$2 ~ /^[TDBR]$/ {print $3}' |
  grep '^fp' | sort -u > "$tmp.mpilib" || true
grep -oE 'FP_EXTERN[^;]*[^a-z_0-9](fp_[a-z0-9_]+)\(' "$mpihdr" |
  sed -E 's/.*[^a-z_0-9](fp_[a-z0-9_]+)\($/\1/' | sort -u > "$tmp.mpihdr"
if ! diff -u "$tmp.mpihdr" "$tmp.mpilib"; then
  echo "libforkpool-mpi's exports differ from forkpool-mpi.h (- header only, + library only)"
  exit 1
fi
echo "exports: $(wc -l < "$tmp.mpilib") libforkpool-mpi symbols match forkpool-mpi.h"

#!/bin/sh
# forkpool over MPI, for make check: tests/check_mpi, tests/check_model_mpi
# and examples/mpi_primes under mpirun with 3 ranks (rank 0 the root, two
# hosts), twice: with Open MPI's defaults (shared memory between ranks on
# one machine) and with --mca btl tcp,self, the path ranks on separate
# machines take; then every case of tests/contract/mpi_contract, the one
# list of them.  Exits 77 (skip) only when configure did not build
# libforkpool-mpi; 0 or 1 else.
# Every run is under a timeout: a rank that does not return fails it.
top_builddir=${top_builddir:-.}
if [ "${FP_HAVE_MPI:-no}" != yes ]; then
  echo "skip: configure found no MPI (--with-mpi, apt-get install openmpi-bin libopenmpi-dev)"
  exit 77
fi
mpirun=${MPIRUN:-mpirun}
# CI runs as root; Open MPI refuses that unless told.
OMPI_ALLOW_RUN_AS_ROOT=1
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
# Check's own fork per test would make a child that is no MPI rank.
CK_FORK=no
export CK_FORK
status=0
# Its own name: make check may run while someone runs this by hand.
out=$top_builddir/check-mpi.$$.out
trap 'rm -f "$out"' EXIT

# run WHAT N PROGRAM [ARG...]: PROGRAM under mpirun with N ranks.
run() {
  what=$1 n=$2
  shift 2
  if timeout 600 "$mpirun" --oversubscribe -n "$n" "$@" >"$out" 2>&1; then
    echo "pass: $what"
  else
    echo "FAIL: $what (exit status $?)"
    sed 's/^/  | /' "$out"
    status=1
  fi
}

for btl in default tcp; do
  # The tcp run also leaves out Open MPI's crash handlers, which workers
  # inherit (fp_mpi_pool_create(3), CAVEATS): no stack trace is printed.
  if [ $btl = tcp ]; then
    set -- --mca btl tcp,self --mca opal_signal ""
  else
    set --
  fi
  run "check_mpi, btl $btl" 3 "$@" "$top_builddir/tests/check_mpi"
  grep -E '^[0-9]+%: Checks' "$out"
  if [ $btl = tcp ] && grep -q 'Process received signal' "$out"; then
    echo "FAIL: --mca opal_signal \"\" still printed a stack trace"
    status=1
  fi
  # The model test over MPI (tests/check_model.c built with FP_MODEL_MPI):
  # its seeds, and on a failure how to replay it, are in its output.
  run "check_model_mpi, btl $btl" 3 "$@" "$top_builddir/tests/check_model_mpi"
  grep -E '^model\[[a-z]+\]: seed|^[0-9]+%: Checks' "$out"
  run "mpi_primes, btl $btl" 3 "$@" "$top_builddir/examples/mpi_primes" \
    --workers 1 1000000
  grep -q '^primes below 1000000: 78498$' "$out" ||
    { echo "FAIL: mpi_primes, btl $btl: no 'primes below 1000000: 78498'"; status=1; }
  run "mpi_primes --root-workers 1, btl $btl" 3 "$@" \
    "$top_builddir/examples/mpi_primes" --workers 1 --root-workers 1 1000000
  grep -q '^primes below 1000000: 78498$' "$out" &&
    grep -q 'over 2 workers on other ranks and 1 on rank 0$' "$out" ||
    { echo "FAIL: mpi_primes --root-workers 1, btl $btl"; status=1; }
done
# fp_mpi_pool_create(3)'s and fp_mpi_pool_create_ex(3)'s promises, bad
# input on one rank or all of them included, each case a run of its own
# (tests/contract/mpi_contract.c says what each case checks): with 3 ranks,
# basic with 2, a communicator of 1 rank, and calls before MPI_Init and
# after MPI_Finalize with no mpirun at all.
contract=$top_builddir/tests/contract/mpi_contract
for c in bad toomany exactly basic root1 initfail initdie cpu idle optsnull \
  rootopts create_error nullhost nullroot shm_args mpibadall mpibadhost \
  mpibadroot mpisizes rootworkers rootloop rootreaper rootstop rootshutdown \
  rootdestroy rootmap rootaffinity rooteagain rootpin rootlast retire_fs \
  retire_initdie retire_stopping retire_slowinit; do
  run "contract $c" 3 "$contract" "$c"
done
run "contract basic, 2 ranks" 2 "$contract" basic
run "contract onerank, 1 rank" 1 "$contract" onerank
"$contract" noinit >"$out" 2>&1 && echo "pass: contract noinit" ||
  { echo "FAIL: contract noinit"; sed 's/^/  | /' "$out"; status=1; }
exit $status

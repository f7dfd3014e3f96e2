/*
 * mpi_primes: the primes example over MPI.  Every rank runs this same
 * program and calls fp_mpi_pool_create; rank 0 gets the pool and maps the
 * count task over ranges of numbers, as examples/primes.c does on one
 * machine, and every other rank lends its workers (one per CPU it may run
 * on, or --workers K) until rank 0 destroys the pool.  With --root-workers
 * R, rank 0 forks R workers of its own too (fp_mpi_pool_create_ex), so one
 * rank per machine uses every machine.  No task runs in an MPI process: a
 * task that crashed would fail its range alone.
 *
 *   mpicc mpi_primes.c $(pkg-config --cflags --libs forkpool-mpi) -o mpi_primes
 *   mpirun -n 3 ./mpi_primes [--workers K] [--root-workers R] [N]
 *
 * N is 3000000 by default.  Rank 0 prints the count, the time and the
 * workers it had; every rank exits 0 on success.
 */
#define _POSIX_C_SOURCE 200809L
#include <forkpool-mpi.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RANGE 1000 /* numbers per item */

/* --- The task: it runs in the workers, the hosts' and rank 0's --------- */

static int is_prime(int64_t n)
{
  if (n < 4)
    return n >= 2;
  if (n % 2 == 0)
    return 0;
  for (int64_t d = 3; d * d <= n; d += 2)
    if (n % d == 0)
      return 0;
  return 1;
}

/* [lo, hi] -> how many primes p with lo <= p <= hi. */
static int count(fp_call *call, const msgpack_object *args,
                 msgpack_packer *out)
{
  int64_t lo, hi, n = 0;
  if (fp_unpack(args, "[II]", &lo, &hi) != 0)
    return fp_call_fail(call, "TypeError", "count takes [lo, hi]");
  for (int64_t i = lo; i <= hi; i++)
    n += is_prime(i);
  return msgpack_pack_int64(out, n);
}

/* Every rank registers the same tasks: the hosts run them by name. */
static const fp_task tasks[] = {{"count", count}, {NULL, NULL}};

/* --- The input, on the root: one range at a time ---------------------------- */

struct ranges {
  int64_t next, end;
};

static int next_range(void *arg, msgpack_packer *pk)
{
  struct ranges *r = arg;
  if (r->next >= r->end)
    return 0;
  int64_t lo = r->next, hi = lo + RANGE - 1 < r->end ? lo + RANGE - 1
                                                     : r->end - 1;
  r->next = hi + 1;
  int rc = fp_pack(pk, "[II]", lo, hi);
  return rc == 0 ? 1 : rc;
}

static const struct {
  int64_t n, primes;
} known[] = {{100000, 9592}, {1000000, 78498}, {3000000, 216816},
             {10000000, 664579}};

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Rank 0's part: the map over the pool.  0 on success. */
static int run_root(fp_pool *pool, int64_t n, unsigned root_workers)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_pool_stats_get(pool, &st, NULL, 0);
  struct ranges in_state = {0, n};
  fp_map_input in = {NULL, 0, next_range, &in_state};
  fp_map_options mo = FP_MAP_OPTIONS_INIT; /* automatic chunks */
  double t0 = now();
  fp_map_iter *m;
  int rc = fp_map(pool, "count", &in, &mo, &m);
  if (rc != 0) {
    fprintf(stderr, "fp_map: %s\n", fp_strerror(rc));
    return 1;
  }
  int64_t primes = 0;
  size_t items = 0, failed = 0;
  fp_map_item item;
  while ((rc = fp_map_next(m, -1, &item)) == 1) {
    items++;
    if (item.err == 0)
      primes += item.result->via.i64;
    else
      failed++;
  }
  fp_map_destroy(m);
  double elapsed = now() - t0;
  if (rc != 0 || failed != 0) {
    fprintf(stderr, "fp_map_next: %s, %zu ranges failed\n", fp_strerror(rc),
            failed);
    return 1;
  }
  printf("primes below %lld: %lld\n", (long long)n, (long long)primes);
  printf("time: %.3f s, %zu ranges of %d numbers over %u workers on other "
         "ranks and %u on rank 0\n", elapsed, items, RANGE,
         st.workers - root_workers, root_workers);
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (known[i].n == n && known[i].primes != primes) {
      printf("wrong: there are %lld\n", (long long)known[i].primes);
      return 1;
    }
  return 0;
}

int main(int argc, char **argv)
{
  int64_t n = 3000000;
  unsigned workers = 0;
  fp_mpi_options mo = FP_MPI_OPTIONS_INIT; /* root_workers 0: none */
  int a = 1;
  for (; a + 1 < argc && strncmp(argv[a], "--", 2) == 0; a += 2) {
    if (strcmp(argv[a], "--workers") == 0)
      workers = (unsigned)strtoul(argv[a + 1], NULL, 10);
    else if (strcmp(argv[a], "--root-workers") == 0)
      mo.root_workers = (unsigned)strtoul(argv[a + 1], NULL, 10);
    else
      break;
  }
  if (a < argc)
    n = strtoll(argv[a], NULL, 10);
  if (argc > a + 1 || n < 0) {
    fprintf(stderr, "usage: mpi_primes [--workers K] [--root-workers R] "
            "[N]\n");
    return 2;
  }

  MPI_Init(&argc, &argv);
  fp_pool_options opts = FP_POOL_OPTIONS_INIT;
  opts.tasks = tasks;
  opts.workers = workers; /* per host; 0: the CPUs each host may run on */
  fp_pool *pool;
  /* The same options on every rank; only rank 0's root_workers counts. */
  int rc = fp_mpi_pool_create_ex(&pool, &opts, &mo, MPI_COMM_WORLD, 0);
  int status = 0;
  if (rc != 0) {
    fprintf(stderr, "fp_mpi_pool_create_ex: %s\n", fp_strerror(rc));
    status = 1;
  } else if (pool != NULL) {
    /* Rank 0, the root: no MPI call of its own until the pool is gone. */
    status = run_root(pool, n, mo.root_workers);
    fp_pool_destroy(pool); /* every host returns from its create */
  }
  MPI_Finalize();
  return status;
}

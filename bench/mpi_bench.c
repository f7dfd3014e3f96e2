/*
 * forkpool-mpi-bench: forkpool over MPI against its baselines, measured in
 * the same run: raw MPI (ping-pong, 1 MiB echo) and a local pool on the
 * root.  Run by `make bench` as `mpirun --oversubscribe -n 3`: rank 0 the
 * root, ranks 1 and 2 hosts of one worker each.  Prints each figure with
 * its target (issue 13) and whether this run met it.  The primes maps, on
 * the local pool and over MPI, run three times each and their medians
 * count: one lasts a sixth of a second.  The 1 MiB echoes, raw and over
 * forkpool, alternate in rounds (raw MPI between ranks 0 and 1, then a
 * pool made for the round), so that both halves of a ratio see the same
 * machine; the median of the rounds' ratios counts.  Ranks that are not
 * measuring wait with a sleep between MPI probes, so that they take no
 * CPU from what is measured.
 */
#define _GNU_SOURCE
#include <forkpool-mpi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int rank, nranks;

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void nap_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* A host waits for rank 0's word without spinning. */
static int wait_word(void)
{
  int flag = 0, w;
  while (!flag) {
    MPI_Iprobe(0, 99, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
    if (!flag)
      nap_ms(1);
  }
  MPI_Recv(&w, 1, MPI_INT, 0, 99, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  return w;
}

static void say_word(int w)
{
  for (int r = 1; r < nranks; r++)
    MPI_Send(&w, 1, MPI_INT, r, 99, MPI_COMM_WORLD);
}

/* --- Tasks ---------------------------------------------------------------------- */

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

static int64_t count_range(int64_t lo, int64_t hi)
{
  int64_t n = 0;
  for (int64_t i = lo; i <= hi; i++)
    n += is_prime(i);
  return n;
}

static int t_count(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t lo, hi;
  if (fp_unpack(a, "[II]", &lo, &hi) != 0)
    return fp_call_fail(c, "TypeError", "count takes [lo, hi]");
  return msgpack_pack_int64(o, count_range(lo, hi));
}

static int t_sq(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  return msgpack_pack_int64(o, a->via.i64 * a->via.i64);
}

static int t_echo(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  return msgpack_pack_object(o, *a);
}

static const fp_task tasks[] = {
    {"count", t_count}, {"sq", t_sq}, {"echo", t_echo}, {NULL, NULL}};

/* --- Measurements on the root, on any pool --------------------------------------- */

static double round_trip_us(fp_pool *p, int n)
{
  double t0 = now();
  for (int i = 0; i < n; i++) {
    fp_future *f;
    const msgpack_object *r;
    fp_submit(p, "sq", "\x07", 1, &f);
    fp_future_result(f, -1, &r);
    fp_future_release(f);
  }
  return (now() - t0) / n * 1e6;
}

static double submit_rate(fp_pool *p, int n)
{
  fp_future **f = malloc((size_t)n * sizeof *f);
  double t0 = now();
  for (int i = 0; i < n; i++)
    fp_submit(p, "sq", "\x07", 1, &f[i]);
  for (int i = 0; i < n; i++) {
    const msgpack_object *r;
    fp_future_result(f[i], -1, &r);
    fp_future_release(f[i]);
  }
  double t = now() - t0;
  free(f);
  return n / t;
}

struct counter {
  int64_t next, end;
};

static int next_int(void *arg, msgpack_packer *pk)
{
  struct counter *c = arg;
  if (c->next >= c->end)
    return 0;
  return msgpack_pack_int64(pk, c->next++) == 0 ? 1 : -1;
}

static int next_range(void *arg, msgpack_packer *pk)
{
  struct counter *c = arg;
  if (c->next >= c->end)
    return 0;
  int64_t lo = c->next;
  c->next += 1000;
  return fp_pack(pk, "[II]", lo, lo + 999) == 0 ? 1 : -1;
}

/* Seconds to map name over the lazy input. */
static double map_time(fp_pool *p, const char *name, fp_map_input_fn next,
                       int64_t end, int64_t *sum)
{
  struct counter c = {0, end};
  fp_map_input in = {NULL, 0, next, &c};
  fp_map_iter *m;
  fp_map_item it;
  double t0 = now();
  *sum = 0;
  if (fp_map(p, name, &in, NULL, &m) != 0)
    return -1;
  while (fp_map_next(m, -1, &it) == 1)
    *sum += it.err == 0 ? it.result->via.i64 : 0;
  fp_map_destroy(m);
  return now() - t0;
}

/* The median of three. */
static double median3(double a, double b, double c)
{
  return a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
}

/* The median time of three maps of the primes count; 0 if one counted
 * wrong. */
static double primes_time(fp_pool *p, int64_t n, int64_t want)
{
  double t[3];
  int64_t sum;
  for (int i = 0; i < 3; i++) {
    t[i] = map_time(p, "count", next_range, n, &sum);
    if (sum != want) {
      fprintf(stderr, "primes: %lld, not %lld\n", (long long)sum,
              (long long)want);
      return 0;
    }
  }
  return median3(t[0], t[1], t[2]);
}

/* GB/s of 1 MiB echoed n times (both ways counted). */
static double echo_gbs(fp_pool *p, int n)
{
  size_t len = (size_t)1 << 20;
  char *buf = calloc(1, len);
  double t0 = now();
  for (int i = 0; i < n; i++) {
    fp_future *f;
    const msgpack_object *r;
    fp_submitf(p, "echo", &f, "y", buf, len);
    fp_future_result(f, -1, &r);
    fp_future_release(f);
  }
  double t = now() - t0;
  free(buf);
  return 2.0 * (double)len * n / t / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median_of(const double *v, int n)
{
  double s[16];
  memcpy(s, v, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

#define ECHO_ROUNDS_MAX 16

/*
 * The 1 MiB echo, raw MPI and over forkpool, in rounds: ranks 0 and 1
 * echo n times with MPI_Send and MPI_Recv while rank 2 waits asleep, then
 * every rank makes a pool of opts for the round and rank 0 echoes n times
 * through it.  On rank 0: the medians of the raw and the pool's rates, and
 * of the rounds' ratios.
 */
static void echo_rounds(const fp_pool_options *opts, int rounds, int n,
                        double *raw, double *fp, double *ratio)
{
  size_t mib = (size_t)1 << 20;
  char *buf = calloc(1, mib);
  double r_raw[ECHO_ROUNDS_MAX], r_fp[ECHO_ROUNDS_MAX],
      r_ratio[ECHO_ROUNDS_MAX];
  for (int k = 0; k < rounds; k++) {
    if (rank < 2) {
      int peer = 1 - rank;
      double t0 = 0;
      for (int i = -3; i < n; i++) { /* three to warm up */
        if (i == 0)
          t0 = now();
        if (rank == 0) {
          MPI_Send(buf, (int)mib, MPI_BYTE, peer, 2, MPI_COMM_WORLD);
          MPI_Recv(buf, (int)mib, MPI_BYTE, peer, 2, MPI_COMM_WORLD,
                   MPI_STATUS_IGNORE);
        } else {
          MPI_Recv(buf, (int)mib, MPI_BYTE, peer, 2, MPI_COMM_WORLD,
                   MPI_STATUS_IGNORE);
          MPI_Send(buf, (int)mib, MPI_BYTE, peer, 2, MPI_COMM_WORLD);
        }
      }
      r_raw[k] = 2.0 * (double)mib * n / (now() - t0) / 1e9;
    }
    if (rank == 0)
      say_word(1);
    else
      wait_word();
    fp_pool *p;
    if (fp_mpi_pool_create(&p, opts, MPI_COMM_WORLD, 0) != 0)
      MPI_Abort(MPI_COMM_WORLD, 1);
    if (p != NULL) {
      echo_gbs(p, 3); /* its first echoes fault the areas in */
      r_fp[k] = echo_gbs(p, n);
      r_ratio[k] = r_fp[k] / r_raw[k];
      fp_pool_destroy(p);
    }
  }
  if (rank == 0) {
    *raw = median_of(r_raw, rounds);
    *fp = median_of(r_fp, rounds);
    *ratio = median_of(r_ratio, rounds);
  }
  free(buf);
}

static void row(const char *what, double v, const char *unit,
                const char *target, int met)
{
  printf("%-44s %12.2f %-8s target %-34s %s\n", what, v, unit, target,
         met ? "met" : "MISSED");
}

/* CPU seconds (user + system) of pid so far, from /proc; -1 if unknown. */
static double cpu_of(pid_t pid)
{
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  unsigned long ut, st;
  if (p == NULL ||
      sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
             &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int main(int argc, char **argv)
{
  int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  if (nranks != 3) {
    if (rank == 0)
      fprintf(stderr, "forkpool-mpi-bench: run with mpirun -n 3\n");
    MPI_Finalize();
    return 2;
  }
  int scale = quick ? 10 : 1;
  pid_t pids[3], me = getpid();
  MPI_Gather(&me, (int)sizeof me, MPI_BYTE, pids, (int)sizeof me, MPI_BYTE, 0,
             MPI_COMM_WORLD);

  /* Raw MPI between ranks 0 and 1; rank 2 waits. */
  double pingpong_us = 0;
  int n_pp = 20000 / scale;
  if (rank < 2) {
    int peer = 1 - rank;
    char b8[8] = {0};
    for (int pass = 0; pass < 2; pass++) { /* the first warms up */
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = now();
      for (int i = 0; i < n_pp; i++) {
        if (rank == 0) {
          MPI_Send(b8, 8, MPI_BYTE, peer, 1, MPI_COMM_WORLD);
          MPI_Recv(b8, 8, MPI_BYTE, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
          MPI_Recv(b8, 8, MPI_BYTE, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
          MPI_Send(b8, 8, MPI_BYTE, peer, 1, MPI_COMM_WORLD);
        }
      }
      pingpong_us = (now() - t0) / n_pp * 1e6;
    }
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
  }

  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.tasks = tasks;
  int n_rt = 5000 / scale, n_sub = 200000 / scale;
  int64_t n_map = 4000000 / scale, n_primes = 3000000 / scale, sum;
  double local_rt = 0, local_w1 = 0, t_serial = 0, t_local2 = 0;
  int64_t primes = 0; /* below n_primes, counted serially */
  if (rank == 0) {
    /* The local baselines, the hosts asleep. */
    fp_pool *p;
    o.workers = 1;
    fp_pool_create(&p, &o);
    round_trip_us(p, n_rt / 5);
    local_rt = round_trip_us(p, n_rt);
    local_w1 = submit_rate(p, n_sub);
    fp_pool_destroy(p);
    double t0 = now();
    for (int64_t lo = 0; lo < n_primes; lo += 1000)
      primes += count_range(lo, lo + 999);
    t_serial = now() - t0;
    o.workers = 2;
    fp_pool_create(&p, &o);
    t_local2 = primes_time(p, n_primes, primes);
    fp_pool_destroy(p);
    say_word(1);
  } else {
    wait_word();
  }

  /* Over MPI: two hosts of one worker. */
  o.workers = 1;
  double raw_echo = 0, echo = 0, echo_ratio = 0;
  echo_rounds(&o, quick ? 3 : 7, 40 / scale, &raw_echo, &echo, &echo_ratio);
  fp_pool *p;
  int rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
  if (rc != 0) {
    fprintf(stderr, "fp_mpi_pool_create: %s\n", fp_strerror(rc));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (p != NULL) {
    round_trip_us(p, n_rt / 5);
    double rt = round_trip_us(p, n_rt);
    double sub = submit_rate(p, n_sub);
    double tm = map_time(p, "sq", next_int, n_map, &sum);
    double t_mpi2 = primes_time(p, n_primes, primes);

    /* Idle: 2 s with nothing to do, every rank's CPU time. */
    nap_ms(300); /* past the spin after the last work */
    double c0[3], c1[3];
    for (int r = 0; r < 3; r++)
      c0[r] = cpu_of(pids[r]);
    double t0 = now();
    nap_ms(2000);
    double idle_s = now() - t0;
    for (int r = 0; r < 3; r++)
      c1[r] = cpu_of(pids[r]);
    fp_pool_destroy(p);

    char tgt[64];
    printf("baselines: MPI ping-pong %.2f us, raw 1 MiB echo %.2f GB/s "
           "(median of rounds), local pool round trip %.1f us, local W1 %.0f tasks/s, "
           "serial primes %.3f s, local 2 workers %.3f s (median of 3)\n",
           pingpong_us, raw_echo, local_rt, local_w1, t_serial, t_local2);
    snprintf(tgt, sizeof tgt, "<= %.1f us (ping-pong+local+20)",
             pingpong_us + local_rt + 20);
    row("round trip root->host->worker->root", rt, "us", tgt,
        rt <= pingpong_us + local_rt + 20);
    snprintf(tgt, sizeof tgt, ">= %.0f (50x mpi4py, 0.5 local W1)",
             235000.0 > 0.5 * local_w1 ? 235000.0 : 0.5 * local_w1);
    row("submit throughput, 2 hosts", sub, "tasks/s", tgt,
        sub >= 235000 && sub >= 0.5 * local_w1);
    row("map throughput, automatic chunks", (double)n_map / tm, "items/s",
        ">= 10.5M (5x mpi4py)", (double)n_map / tm >= 10.5e6);
    snprintf(tgt, sizeof tgt, ">= 0.5 (%.2f vs %.2f GB/s)", echo, raw_echo);
    row("1 MiB echo / raw MPI's, median of rounds", echo_ratio, "x", tgt,
        echo_ratio >= 0.5);
    double sp_local = t_serial / t_local2, sp_mpi = t_serial / t_mpi2;
    snprintf(tgt, sizeof tgt, ">= %.2f (0.9 local's %.2f)", 0.9 * sp_local,
             sp_local);
    row("W4 primes speedup, 2 hosts x 1 worker", sp_mpi, "x", tgt,
        sp_mpi >= 0.9 * sp_local);
    for (int r = 0; r < 3; r++) {
      char what[64];
      snprintf(what, sizeof what, "idle CPU, rank %d%s", r,
               r == 0 ? " (root, bridge)" : " (host)");
      double pct = c0[r] < 0 || c1[r] < 0 ? -1
                                         : 100 * (c1[r] - c0[r]) / idle_s;
      row(what, pct, "% core", "< 5%", pct >= 0 && pct < 5);
    }
  }
  MPI_Finalize();
  return 0;
}

/*
 * The workloads of issue 6, measured through forkpool's public API, each
 * next to its baseline (baseline.c) in the same run: the two alternate
 * repetition by repetition.
 */
#include "bench.h"

#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Waits are unbounded, as most callers write them (a finite timeout costs a
 * clock_gettime per call); main's alarm() ends a run that hangs. */
#define WAIT_MS (-1)

/* --- Tasks ------------------------------------------------------------------ */

/* x*x, read straight from the object: the pool's cost is what we measure. */
static int t_square(fp_call *call, const msgpack_object *args,
                    msgpack_packer *out)
{
  (void)call;
  uint64_t x = args->via.u64; /* i64 shares the bits for negative ints */
  return msgpack_pack_uint64(out, x * x);
}

/* [lo, hi]: the primes in [lo, hi). */
static int t_primes(fp_call *call, const msgpack_object *args,
                    msgpack_packer *out)
{
  uint64_t lo, hi;
  if (fp_unpack(args, "[UU]", &lo, &hi) != 0 || hi > UINT32_MAX)
    return fp_call_fail(call, "TypeError", "primes takes [lo, hi]");
  return msgpack_pack_uint64(out, primes_in((uint32_t)lo, (uint32_t)hi));
}

/* Echoes a bin argument back. */
static int t_echo(fp_call *call, const msgpack_object *args,
                  msgpack_packer *out)
{
  if (args->type != MSGPACK_OBJECT_BIN)
    return fp_call_fail(call, "TypeError", "echo takes bytes");
  return msgpack_pack_bin(out, args->via.bin.size) ||
         msgpack_pack_bin_body(out, args->via.bin.ptr, args->via.bin.size);
}

static int t_crash(fp_call *call, const msgpack_object *args,
                   msgpack_packer *out)
{
  (void)call;
  (void)args;
  (void)out;
  struct rlimit no_core = {0, 0}; /* a core dump would be timed too */
  setrlimit(RLIMIT_CORE, &no_core);
  raise(SIGSEGV);
  return 1;
}

/* Holds its worker (the Memory workload's pending futures stay pending). */
static int t_sleep(fp_call *call, const msgpack_object *args,
                   msgpack_packer *out)
{
  (void)call;
  sleep((unsigned)args->via.u64);
  return msgpack_pack_nil(out);
}

/* Sleeps args microseconds: a task that waits (the I/O-bound row). */
static int t_nap(fp_call *call, const msgpack_object *args,
                 msgpack_packer *out)
{
  (void)call;
  struct timespec ts = {(time_t)(args->via.u64 / 1000000),
                        (long)(args->via.u64 % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0)
    ;
  return msgpack_pack_nil(out);
}

const fp_task bench_tasks[] = {
    {"square", t_square}, {"primes", t_primes}, {"echo", t_echo},
    {"crash", t_crash},   {"sleep", t_sleep},   {"nap", t_nap},
    {NULL, NULL},
};

/* --- Helpers ---------------------------------------------------------------- */

/* A msgpack buffer of one small object, packed without allocating. */
typedef struct small_buf {
  char data[64];
  size_t len;
} small_buf;

static int small_write(void *data, const char *buf, size_t len)
{
  small_buf *b = data;
  if (len > sizeof b->data - b->len)
    return -1;
  memcpy(b->data + b->len, buf, len);
  b->len += len;
  return 0;
}

static void pack_uint(small_buf *b, uint64_t x)
{
  msgpack_packer pk;
  b->len = 0;
  msgpack_packer_init(&pk, b, small_write);
  msgpack_pack_uint64(&pk, x);
}

static unsigned tuned_inflight;
static size_t tuned_shm;

void pool_tuning(unsigned max_inflight, size_t shm_args)
{
  tuned_inflight = max_inflight;
  tuned_shm = shm_args;
}

static fp_pool *pool_new_shm(unsigned workers, unsigned restart_limit,
                             size_t shm_args)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = workers;
  o.max_inflight = tuned_inflight;
  o.shm_args = shm_args;
  o.tasks = bench_tasks;
  o.restart_limit = restart_limit;
  fp_pool *p;
  int rc = fp_pool_create(&p, &o);
  if (rc != 0)
    die("fp_pool_create", rc);
  return p;
}

static fp_pool *pool_new(unsigned workers, unsigned restart_limit)
{
  return pool_new_shm(workers, restart_limit, tuned_shm);
}

static fp_future *submit_uint(fp_pool *p, const char *task, uint64_t x)
{
  small_buf b;
  fp_future *f;
  pack_uint(&b, x);
  int rc = fp_submit(p, task, b.data, b.len, &f);
  if (rc != 0)
    die("fp_submit", rc);
  return f;
}

/* The result of f as an unsigned integer; releases f. */
static uint64_t take_uint(fp_future *f)
{
  const msgpack_object *r;
  int rc = fp_future_result(f, WAIT_MS, &r);
  if (rc != 0)
    die(fp_future_error(f) ? fp_future_error(f) : "fp_future_result", rc);
  uint64_t v = r->via.u64;
  fp_future_release(f);
  return v;
}

static void warm(fp_pool *p, unsigned n)
{
  for (unsigned i = 0; i < n; i++)
    (void)take_uint(submit_uint(p, "square", i));
}

static uint64_t sum_squares(size_t n)
{
  uint64_t s = 0;
  for (uint64_t i = 0; i < n; i++)
    s += i * i;
  return s;
}

static void check_sum(const char *what, uint64_t got, uint64_t want)
{
  if (got != want) {
    fprintf(stderr, "forkpool-bench: %s: wrong sum %llu, want %llu\n", what,
            (unsigned long long)got, (unsigned long long)want);
    exit(1);
  }
}

/* --- W1: submit throughput ------------------------------------------------------- */

void run_w1(const bench_cfg *c)
{
  size_t n = c->w1_tasks;
  fp_pool *p = pool_new(2, 10);
  fp_future **fs = malloc(n * sizeof *fs);
  if (fs == NULL)
    die("malloc", FP_ENOMEM);
  warm(p, 1000);
  uint64_t want = sum_squares(n);
  series base = {0}, fp = {0}, sub = {0};
  for (int r = 0; r < c->reps; r++) {
    uint64_t bsum;
    if (!c->no_baseline) {
      series_add(&base, base_stream(n, 1, &bsum));
      check_sum("W1 baseline", bsum, want);
    }

    uint64_t sum = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
      fs[i] = submit_uint(p, "square", i);
    double t1 = now_s();
    for (size_t i = 0; i < n; i++)
      sum += take_uint(fs[i]);
    double t = now_s() - t0;
    check_sum("W1", sum, want);
    series_add(&fp, (double)n / t);
    series_add(&sub, (t1 - t0) / (double)n * 1e6);
  }
  fp_pool_destroy(p);
  free(fs);
  char note[160];
  snprintf(note, sizeof note, "%zu x*x tasks, 2 workers, one write per item "
           "each way, reads buffered", n);
  figure *b = figure_add("W1 baseline: pipes, per-item writes", "tasks/s",
                         &base, NULL, note);
  snprintf(note, sizeof note, "%zu fp_submit of x*x, then fp_future_result "
           "of each in order; 2 workers, automatic max_inflight", n);
  figure *f = figure_add("W1 submit throughput", "tasks/s", &fp, b, note);
  figure_target(f, f->med >= 1e6 && f->ratio >= 0.8,
                ">= 1,000,000 tasks/s and >= 0.80 of baseline");
  figure_add("W1 time inside fp_submit", "µs/task", &sub, NULL,
             "the submit loop's time per task (dispatching included)");
}

/* --- W2: map throughput ------------------------------------------------------------ */

static double map_once(fp_pool *p, const fp_map_input *in, size_t chunksize,
                       size_t n, uint64_t want)
{
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = chunksize;
  fp_map_iter *m;
  fp_map_item it;
  uint64_t sum = 0;
  size_t got = 0;
  int rc;
  double t0 = now_s();
  if ((rc = fp_map(p, "square", in, &o, &m)) != 0)
    die("fp_map", rc);
  while ((rc = fp_map_next(m, WAIT_MS, &it)) == 1) {
    if (it.err != 0)
      die(it.error, it.err);
    sum += it.result->via.u64;
    got++;
  }
  if (rc != 0)
    die("fp_map_next", rc);
  fp_map_destroy(m);
  double t = now_s() - t0;
  if (got != n)
    die("fp_map: items missing", 0);
  if (want != 0)
    check_sum("W2", sum, want);
  return (double)n / t;
}

void run_w2(const bench_cfg *c)
{
  static const size_t sizes[] = {1, 100, 1000, 10000, 0};
  enum { NS = sizeof sizes / sizeof sizes[0] };
  size_t n = c->w2_items;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, (uint32_t)n);
  for (size_t i = 0; i < n; i++)
    msgpack_pack_uint64(&pk, i);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  uint64_t want = sum_squares(n);

  fp_pool *p = pool_new(2, 10);
  warm(p, 1000);
  series base = {0}, fp[NS];
  memset(fp, 0, sizeof fp);
  for (int r = 0; r < c->reps; r++) {
    uint64_t bsum;
    if (!c->no_baseline) {
      series_add(&base, base_stream(n, 8192, &bsum));
      check_sum("W2 baseline", bsum, want);
    }
    for (int k = 0; k < NS; k++)
      if ((sizes[k] != 1 || r < c->reps_slow) &&
          (c->w2_chunksize < 0 || (size_t)c->w2_chunksize == sizes[k]))
        series_add(&fp[k], map_once(p, &in, sizes[k], n, want));
  }
  fp_pool_destroy(p);
  msgpack_sbuffer_destroy(&sb);

  char note[160], name[80];
  snprintf(note, sizeof note, "%zu items, 2 workers, 64 KiB writes each way",
           n);
  figure *b = figure_add("W2 baseline: pipes, batched", "items/s", &base,
                         NULL, note);
  figure *best = NULL, *fig[NS];
  for (int k = 0; k < NS; k++) {
    if (sizes[k])
      snprintf(name, sizeof name, "W2 map chunksize %zu", sizes[k]);
    else
      snprintf(name, sizeof name, "W2 map chunksize automatic");
    snprintf(note, sizeof note, "fp_map of x*x over a msgpack array of %zu "
             "integers, ordered, buffersize automatic", n);
    if (fp[k].n == 0) { /* --chunksize: not run */
      fig[k] = NULL;
      continue;
    }
    fig[k] = figure_add(name, "items/s", &fp[k], b, note);
    if (sizes[k] && (best == NULL || fig[k]->med > best->med))
      best = fig[k];
  }
  figure *a = fig[NS - 1];
  if (a == NULL || best == NULL)
    return;
  double of_best = a->med / best->med;
  figure_target(a, of_best >= 0.9 && a->med >= 1e7,
                ">= 0.90 of best fixed (%s: %.2f) and >= 10,000,000 items/s",
                best->name + strlen("W2 map "), of_best);
}

/* --- W3: round-trip latency ------------------------------------------------------- */

/*
 * One W3 case.  cpu_worker < 0: the scheduler places both sides.  Else the
 * pool is created while this process is pinned to cpu_worker, so the fork
 * server and the worker inherit that CPU, and then this process is pinned
 * to cpu_parent; the baseline's child is placed the same way.  On one CPU a
 * round trip is two context switches; on two it is two cross-CPU wake-ups
 * (issue 14: ~3 µs against ~30 µs on this VM).
 */
static void w3_case(const bench_cfg *c, const char *where, int cpu_parent,
                    int cpu_worker)
{
  size_t n = c->w3_trips;
  int rc = cpu_worker >= 0 ? pin_cpu(cpu_worker) : 0;
  if (rc != 0)
    die("sched_setaffinity", rc);
  fp_pool *p = pool_new(1, 10);
  if (cpu_worker >= 0) {
    fp_worker_stats ws[1];
    fp_pool_stats st = FP_POOL_STATS_INIT;
    fp_pool_stats_get(p, &st, ws, 1);
    if (pin_cpu(cpu_parent) != 0 || ws[0].pid <= 0 ||
        !pinned_to(ws[0].pid, cpu_worker))
      die("W3: the worker did not inherit its CPU", 0);
  }
  warm(p, 200);
  series base = {0}, fp = {0};
  for (int r = 0; r < c->reps; r++) {
    if (!c->no_baseline)
      series_add(&base, base_pingpong(n, cpu_parent, cpu_worker));
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
      if (take_uint(submit_uint(p, "square", i)) != i * i)
        die("W3: wrong result", 0);
    series_add(&fp, (now_s() - t0) / (double)n * 1e6);
  }
  fp_pool_destroy(p);
  if (cpu_worker >= 0)
    pin_restore();
  char note[200], name[80];
  snprintf(note, sizeof note, "mean of %zu 16-byte round trips, poll() "
           "before each read%s", n, where[0] ? ", the child placed as the "
           "worker below" : "");
  snprintf(name, sizeof name, "W3 baseline: pipe ping-pong%s", where);
  figure *b = figure_add(name, "µs", &base, NULL, note);
  if (cpu_worker < 0)
    snprintf(note, sizeof note, "mean of %zu sequential fp_submit + "
             "fp_future_result + release, 1 worker", n);
  else
    snprintf(note, sizeof note, "the same, parent on CPU %d, pool created "
             "on CPU %d (worker's Cpus_allowed_list checked)", cpu_parent,
             cpu_worker);
  snprintf(name, sizeof name, "W3 round trip%s", where);
  figure *f = figure_add(name, "µs", &fp, b, note);
  figure_target(f, f->ratio <= 1.5, "<= 1.50x baseline");
}

void run_w3(const bench_cfg *c)
{
  int a, b;
  w3_case(c, "", -1, -1);
  int ncpu = cpus_first_two(&a, &b);
  if (ncpu < 1 || pin_cpu(a) != 0) { /* a container may forbid it */
    bench_log("W3: cannot pin this process: the pinned cases are skipped");
    return;
  }
  pin_restore();
  w3_case(c, ", one CPU", a, a);
  if (ncpu < 2) {
    bench_log("W3: only one CPU allowed: the two-CPU case is skipped");
    return;
  }
  w3_case(c, ", two CPUs", a, b);
}

/* --- W4: CPU-bound scaling ---------------------------------------------------------- */

static double primes_forkpool(fp_pool *p, uint32_t limit, unsigned ranges,
                              uint64_t *count)
{
  fp_future *fs[1024];
  uint64_t total = 0;
  double t0 = now_s();
  for (unsigned r = 0; r < ranges && r < 1024; r++) {
    uint64_t lo = (uint64_t)limit * r / ranges;
    uint64_t hi = (uint64_t)limit * (r + 1) / ranges;
    int rc = fp_submitf(p, "primes", &fs[r], "[UU]", lo, hi);
    if (rc != 0)
      die("fp_submitf", rc);
  }
  for (unsigned r = 0; r < ranges && r < 1024; r++)
    total += take_uint(fs[r]);
  *count = total;
  return now_s() - t0;
}

/*
 * The curve: 1, 2, 4 and 8 workers against as many OpenMP threads (more
 * than the cores here: the speedup should stay flat past them).  2 is the
 * count the target is on; the others are rows and w4.dat for the plot.
 */
static const unsigned w4_counts[] = {1, 2, 4, 8};
enum { W4_N = sizeof w4_counts / sizeof w4_counts[0], W4_TARGET = 1 };

static double series_max(const series *s)
{
  double m = s->n ? s->v[0] : NAN;
  for (int i = 1; i < s->n; i++)
    m = s->v[i] > m ? s->v[i] : m;
  return m;
}

/* A series as three columns for gnuplot: median, min, max ("NaN" if
 * empty, which gnuplot skips). */
static void data_cols(FILE *fp, const series *s)
{
  fprintf(fp, " %.4f %.4f %.4f", series_median(s), series_min(s),
          series_max(s));
}

/* W4 data for plots: workers, forkpool's speedup, OpenMP's. */
static void w4_data(const series *fpsp, const series *omp)
{
  FILE *fp = bench_data("w4.dat");
  if (fp == NULL)
    return;
  fprintf(fp, "# W4: speedup over the serial run against workers (OpenMP: "
          "threads), medians and ranges; %ld online CPUs\n"
          "# workers forkpool_med min max openmp_med min max\n",
          sysconf(_SC_NPROCESSORS_ONLN));
  for (int k = 0; k < W4_N; k++) {
    fprintf(fp, "%u", w4_counts[k]);
    data_cols(fp, &fpsp[k]);
    data_cols(fp, &omp[k]);
    fputc('\n', fp);
  }
  fclose(fp);
}

void run_w4(const bench_cfg *c)
{
  uint32_t limit = c->w4_limit;
  unsigned ranges = c->w4_ranges;
  fp_pool *p[W4_N];
  for (int k = 0; k < W4_N; k++) {
    p[k] = pool_new(w4_counts[k], 10);
    warm(p[k], 100);
  }
  series serial = {0}, omp[W4_N], fpsp[W4_N], fpt[W4_N], ompt[W4_N];
  memset(omp, 0, sizeof omp);
  memset(fpsp, 0, sizeof fpsp);
  memset(fpt, 0, sizeof fpt);
  memset(ompt, 0, sizeof ompt);
  uint64_t want = 0;
  for (int r = 0; r < c->reps; r++) {
    double t0 = now_s();
    uint64_t n = 0;
    for (unsigned k = 0; k < ranges; k++)
      n += primes_in((uint32_t)((uint64_t)limit * k / ranges),
                     (uint32_t)((uint64_t)limit * (k + 1) / ranges));
    double ts = now_s() - t0;
    want = n;
    series_add(&serial, ts);
    for (int k = 0; k < W4_N; k++) {
      if (have_openmp()) {
        double to = primes_openmp(limit, ranges, w4_counts[k], &n);
        if (n != want)
          die("W4: OpenMP counted differently", 0);
        series_add(&omp[k], ts / to);
        series_add(&ompt[k], to);
      }
      double tf = primes_forkpool(p[k], limit, ranges, &n);
      if (n != want)
        die("W4: forkpool counted differently", 0);
      series_add(&fpsp[k], ts / tf);
      series_add(&fpt[k], tf);
    }
  }
  for (int k = 0; k < W4_N; k++)
    fp_pool_destroy(p[k]);
  char note[160];
  snprintf(note, sizeof note, "%llu primes below %u by trial division, %u "
           "ranges, one thread", (unsigned long long)want, limit, ranges);
  figure_add("W4 serial", "s", &serial, NULL, note);
  const int t = W4_TARGET;
  figure *o = NULL;
  if (have_openmp()) {
    figure_add("W4 OpenMP 2 threads", "s", &ompt[t], NULL,
               "parallel for, schedule(dynamic, 1), in a forked child");
    o = figure_add("W4 OpenMP speedup", "x", &omp[t], NULL,
                   "serial time / OpenMP time, same repetition");
  } else {
    bench_log("W4: the compiler has no OpenMP: the OpenMP row is skipped");
  }
  figure_add("W4 forkpool 2 workers", "s", &fpt[t], NULL,
             "64 fp_submitf of [lo, hi], then every result");
  figure *f = figure_add("W4 forkpool speedup", "x", &fpsp[t], o,
                         "serial time / forkpool time, same repetition");
  if (o != NULL)
    figure_target(f, f->ratio >= 0.98, ">= 0.98x OpenMP's speedup");

  /* Another process on a 2-core machine takes a core from whichever run it
   * overlaps; the fastest run of each is the least disturbed. */
  series bo = {0}, bf = {0};
  double smin = series_min(&serial);
  series_add(&bf, smin / series_min(&fpt[t]));
  figure *ob = NULL;
  if (o != NULL) {
    series_add(&bo, smin / series_min(&ompt[t]));
    ob = figure_add("W4 OpenMP speedup, fastest runs", "x", &bo, NULL,
                    "fastest serial / fastest OpenMP run: the least "
                    "disturbed by other processes");
  }
  figure_add("W4 forkpool speedup, fastest runs", "x", &bf, ob,
             "fastest serial / fastest forkpool run (no target: the "
             "target is on medians)");

  /* The rest of the curve, each count against OpenMP with as many threads. */
  for (int k = 0; k < W4_N; k++) {
    if (k == t)
      continue;
    char name[80];
    figure *ok = NULL;
    if (have_openmp()) {
      snprintf(name, sizeof name, "W4 OpenMP speedup, %u threads",
               w4_counts[k]);
      ok = figure_add(name, "x", &omp[k], NULL,
                      k ? "" : "the curve: 1, 4 and 8 threads, as above");
    }
    snprintf(name, sizeof name, "W4 forkpool speedup, %u workers",
             w4_counts[k]);
    figure_add(name, "x", &fpsp[k], ok,
               k ? "" : "the curve: 1, 4 and 8 workers, as above");
  }
  w4_data(fpsp, omp);
}

/* --- W5: payload bandwidth ------------------------------------------------------------ */

/* MiB/s of n sequential echoes of the packed payload (both directions). */
static double echo_rate(fp_pool *p, const msgpack_sbuffer *sb, size_t bytes,
                        size_t n)
{
  double t0 = now_s();
  for (size_t i = 0; i < n; i++) {
    fp_future *f;
    const msgpack_object *res;
    int rc = fp_submit(p, "echo", sb->data, sb->size, &f);
    if (rc != 0 || (rc = fp_future_result(f, WAIT_MS, &res)) != 0)
      die("W5 echo", rc);
    if (res->type != MSGPACK_OBJECT_BIN || res->via.bin.size != bytes)
      die("W5: wrong echo", 0);
    fp_future_release(f);
  }
  return 2.0 * (double)bytes * (double)n / (now_s() - t0) / (1 << 20);
}

void run_w5(const bench_cfg *c)
{
  size_t bytes = c->w5_bytes, n = c->w5_trips;
  char *payload = malloc(bytes);
  if (payload == NULL)
    die("malloc", FP_ENOMEM);
  memset(payload, 0x5a, bytes);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_bin(&pk, bytes);
  msgpack_pack_bin_body(&pk, payload, bytes);

  /* The same through the pipes alone, for the record: what the shared
   * memory transport buys. */
  fp_pool *p = pool_new(1, 10), *pipes = pool_new_shm(1, 10, FP_SHM_OFF);
  series base = {0}, fp = {0}, fp_pipes = {0};
  (void)echo_rate(p, &sb, bytes, 3); /* warm-up */
  (void)echo_rate(pipes, &sb, bytes, 3);
  for (int r = 0; r < c->reps; r++) {
    if (!c->no_baseline)
      series_add(&base, base_echo(bytes, n));
    series_add(&fp, echo_rate(p, &sb, bytes, n));
    if (!c->no_baseline)
      series_add(&fp_pipes, echo_rate(pipes, &sb, bytes, n));
  }
  fp_pool_destroy(p);
  fp_pool_destroy(pipes);
  msgpack_sbuffer_destroy(&sb);
  free(payload);
  char note[200];
  snprintf(note, sizeof note, "%zu round trips of %zu bytes each way, 1 MiB "
           "pipes; MiB/s counts both directions", n, bytes);
  figure *b = figure_add("W5 baseline: pipe echo", "MiB/s", &base, NULL,
                         note);
  snprintf(note, sizeof note, "%zu sequential fp_submit of a %zu-byte bin "
           "echoed back, 1 worker", n, bytes);
  figure *f = figure_add("W5 payload bandwidth", "MiB/s", &fp, b, note);
  figure_target(f, f->ratio >= 0.9, ">= 0.90 of baseline");
  if (!c->no_baseline)
    figure_add("W5 through pipes only (FP_SHM_OFF)", "MiB/s", &fp_pipes, b,
               "the same with shm_args FP_SHM_OFF: every byte through the "
               "pipes (no target)");
}

/* --- W6: crash recovery ---------------------------------------------------------------- */

static void wait_all_live(fp_pool *p)
{
  double t0 = now_s();
  for (;;) {
    fp_pool_stats st = FP_POOL_STATS_INIT;
    fp_pool_stats_get(p, &st, NULL, 0);
    if (st.workers_live == st.workers)
      return;
    if (now_s() - t0 > 10)
      die("W6: the pool did not replace its worker", 0);
    (void)fp_pool_dispatch(p, 5);
  }
}

static void crash_case(const bench_cfg *c, unsigned workers)
{
  fp_pool *p = pool_new(workers, 0); /* restart_limit 0: never broken */
  warm(p, 100);
  series bdet = {0}, bnext = {0}, det = {0}, next = {0};
  for (int r = 0; r < c->w6_reps; r++) {
    double d, nx;
    if (!c->no_baseline) {
      base_crash(workers == 1, &d, &nx);
      series_add(&bdet, d * 1e6);
      series_add(&bnext, nx * 1e6);
    }

    wait_all_live(p);
    fp_future *f;
    const msgpack_object *res;
    double t0 = now_s();
    int rc = fp_submit(p, "crash", "\xc0", 1, &f);
    if (rc != 0)
      die("fp_submit crash", rc);
    rc = fp_future_result(f, WAIT_MS, &res);
    double t1 = now_s();
    if (rc != FP_EWORKER)
      die("W6: the crash was not reported as FP_EWORKER", rc);
    fp_future_release(f);
    if (take_uint(submit_uint(p, "square", 3)) != 9)
      die("W6: wrong result", 0);
    double t2 = now_s();
    series_add(&det, (t1 - t0) * 1e6);
    series_add(&next, (t2 - t1) * 1e6);
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_pool_stats_get(p, &st, NULL, 0);
  if (st.worker_deaths != (uint64_t)c->w6_reps)
    die("W6: deaths were not counted", 0);
  fp_pool_destroy(p);

  char name[80], bname[80], note[200];
  const char *w = workers == 1 ? "1 worker" : "2 workers";
  snprintf(bname, sizeof bname, "W6 baseline: child crash seen (%s)", w);
  figure *bd = figure_add(bname, "µs", &bdet, NULL,
                          "SIGSEGV in a child until EOF on its pipe and "
                          "waitpid");
  snprintf(name, sizeof name, "W6 crash reported (%s)", w);
  figure_add(name, "µs", &det, bd, "fp_submit of a SIGSEGV task until "
             "fp_future_result returns FP_EWORKER");
  snprintf(bname, sizeof bname, "W6 baseline: next round trip (%s)", w);
  figure *bn = figure_add(bname, "µs", &bnext, NULL, workers == 1
                          ? "fork a new child, ready byte, one round trip"
                          : "one round trip with the surviving child");
  snprintf(name, sizeof name, "W6 next result after the crash (%s)", w);
  snprintf(note, sizeof note, "from FP_EWORKER to a trivial task's result "
           "on the same pool%s", workers == 1 ? " (a replacement worker "
           "must start)" : " (the other worker is live)");
  figure *f = figure_add(name, "µs", &next, bn, note);
  figure_target(f, f->med <= 1000, "<= 1 ms");
}

void run_w6(const bench_cfg *c)
{
  crash_case(c, 2);
  crash_case(c, 1);
}

/* --- W7: start-up ------------------------------------------------------------------------ */

void run_w7(const bench_cfg *c)
{
  series bstart = {0}, bstop = {0}, first = {0}, stop = {0}, floor = {0};
  for (int r = -1; r < c->w7_reps; r++) { /* r == -1: warm-up */
    double s = NAN, st = NAN, fl = NAN;
    if (!c->no_baseline) {
      base_startup(2, &s, &st, NULL);
      fl = base_startup_chain(2);
    }
    double t0 = now_s();
    fp_pool *p = pool_new(2, 10);
    uint64_t v = take_uint(submit_uint(p, "square", 7));
    double t1 = now_s();
    fp_pool_destroy(p);
    double t2 = now_s();
    if (v != 49)
      die("W7: wrong result", 0);
    if (r < 0)
      continue;
    if (!c->no_baseline) {
      series_add(&bstart, s * 1e3);
      series_add(&bstop, st * 1e3);
      series_add(&floor, fl * 1e3);
    }
    series_add(&first, (t1 - t0) * 1e3);
    series_add(&stop, (t2 - t1) * 1e3);
  }
  figure *b = figure_add("W7 baseline: fork 2 + round trip", "ms", &bstart,
                         NULL, "fork 2 children with pipes, a ready byte "
                         "from each, one 16-byte round trip");
  figure *f = figure_add("W7 create to first result", "ms", &first, b,
                         "fp_pool_create (2 workers) + fp_submit + "
                         "fp_future_result");
  figure_target(f, f->med <= 1.0 && f->ratio <= 1.5,
                "<= 1 ms and <= 1.50x baseline");
  /* The shape alone, to tell the design's cost from the library's. */
  figure_add("W7 floor: vfork + fork server + 2 + round trip", "ms", &floor,
             b, "a vfork()ed middle forks a stand-in fork server, which "
             "forks 2 children; the first's ready byte, one round trip; no "
             "forkpool code (bench/NOTES.md, W7's floor)");
  b = figure_add("W7 baseline: close + reap 2", "ms", &bstop, NULL,
                 "close both children's pipes, waitpid both");
  figure_add("W7 destroy", "ms", &stop, b, "fp_pool_destroy of the idle "
             "pool: workers and fork server gone");
}

/* --- W8: flat in workers ------------------------------------------------------------- */

/*
 * What the parent pays per task as the pool grows: its CPU time (getrusage,
 * user + system), not wall time, because here the workers outnumber the
 * cores and mostly wait.  Each worker count's figure is compared with the
 * 2-worker figure of the same run; the counts take turns, repetition by
 * repetition, so that a neighbour's load hits them alike.
 */
static const unsigned w8_counts[] = {2, 16, 64, 256};
enum { W8_N = sizeof w8_counts / sizeof w8_counts[0] };

typedef struct w8_series {
  series all, sub, res, map; /* ns per task or item */
} w8_series;

/* W1 on p: n submits, then every result in order. */
static void w8_submit(fp_pool *p, fp_future **fs, size_t n, uint64_t want,
                      w8_series *s)
{
  uint64_t sum = 0;
  double c0 = cpu_self_s();
  for (size_t i = 0; i < n; i++)
    fs[i] = submit_uint(p, "square", i);
  double c1 = cpu_self_s();
  for (size_t i = 0; i < n; i++)
    sum += take_uint(fs[i]);
  double c2 = cpu_self_s();
  check_sum("W8", sum, want);
  series_add(&s->all, (c2 - c0) / (double)n * 1e9);
  series_add(&s->sub, (c1 - c0) / (double)n * 1e9);
  series_add(&s->res, (c2 - c1) / (double)n * 1e9);
}

static void w8_map(fp_pool *p, const fp_map_input *in, size_t n,
                   uint64_t want, w8_series *s)
{
  double c0 = cpu_self_s();
  (void)map_once(p, in, 0, n, want);
  series_add(&s->map, (cpu_self_s() - c0) / (double)n * 1e9);
}

/* Create and destroy of the largest pool, and the parent's memory for it. */
static void w8_create(const bench_cfg *c)
{
  unsigned w = w8_counts[W8_N - 1];
  series bstart = {0}, bstop = {0}, create = {0}, destroy = {0}, mem = {0};
  for (int r = -1; r < c->w8_pools; r++) { /* r == -1: warm-up */
    double s = NAN, st = NAN;
    if (!c->no_baseline)
      base_startup(w, &s, &st, NULL);
    malloc_trim(0);
    long r0 = proc_kb(0, "status", "VmRSS");
    double t0 = now_s();
    fp_pool *p = pool_new(w, 10);
    double t1 = now_s();
    warm(p, 1000);
    long r1 = proc_kb(0, "status", "VmRSS");
    double t2 = now_s();
    fp_pool_destroy(p);
    double t3 = now_s();
    if (r < 0)
      continue;
    if (!c->no_baseline) {
      series_add(&bstart, s * 1e3);
      series_add(&bstop, st * 1e3);
    }
    series_add(&create, (t1 - t0) * 1e3);
    series_add(&destroy, (t3 - t2) * 1e3);
    series_add(&mem, (double)(r1 - r0) * 1024 / w);
  }
  char name[80], note[200];
  snprintf(name, sizeof name, "W8 baseline: fork %u + round trip", w);
  snprintf(note, sizeof note, "fork %u children with pipes, a ready byte "
           "from each, one 16-byte round trip", w);
  figure *b = figure_add(name, "ms", &bstart, NULL, note);
  snprintf(name, sizeof name, "W8 fp_pool_create, %u workers", w);
  figure_add(name, "ms", &create, b, "until fp_pool_create returns (every "
             "worker ready)");
  snprintf(name, sizeof name, "W8 baseline: close + reap %u", w);
  b = figure_add(name, "ms", &bstop, NULL, "close every child's pipes, "
                 "waitpid each");
  snprintf(name, sizeof name, "W8 fp_pool_destroy, %u workers", w);
  figure_add(name, "ms", &destroy, b, "fp_pool_destroy after 1,000 tasks: "
             "workers and fork server gone");
  snprintf(name, sizeof name, "W8 parent memory per worker, %u workers", w);
  snprintf(note, sizeof note, "parent VmRSS after fp_pool_create and 1,000 "
           "tasks - VmRSS before, / %u", w);
  figure_add(name, "B", &mem, NULL, note);
}

/* One row per worker count; the target on the largest, against 2 workers. */
static void w8_rows(const char *what, const char *unit, const char *note,
                    w8_series *s, series *(*pick)(w8_series *), int target)
{
  figure *two = NULL;
  char name[80];
  for (int k = 0; k < W8_N; k++) {
    snprintf(name, sizeof name, "W8 %s, %u workers", what, w8_counts[k]);
    figure *f = figure_add(name, unit, pick(&s[k]), two, k ? "" : note);
    if (k == 0)
      two = f;
    else if (k == W8_N - 1 && target)
      figure_target(f, f->ratio <= 1.2, "<= 1.20x the 2-worker figure");
  }
}

static series *pick_all(w8_series *s) { return &s->all; }
static series *pick_sub(w8_series *s) { return &s->sub; }
static series *pick_res(w8_series *s) { return &s->res; }
static series *pick_map(w8_series *s) { return &s->map; }

/* W8 data for plots: workers, then the parent's CPU per task, ns, of the
 * submit loop, the results loop, both, and per map item. */
static void w8_data(w8_series *s)
{
  FILE *fp = bench_data("w8.dat");
  if (fp == NULL)
    return;
  fprintf(fp, "# W8: parent CPU (getrusage) per task, ns, against workers; "
          "medians and ranges; %ld online CPUs\n"
          "# workers submit_med min max results_med min max "
          "submit+results_med min max map_med min max\n",
          sysconf(_SC_NPROCESSORS_ONLN));
  for (int k = 0; k < W8_N; k++) {
    fprintf(fp, "%u", w8_counts[k]);
    data_cols(fp, &s[k].sub);
    data_cols(fp, &s[k].res);
    data_cols(fp, &s[k].all);
    data_cols(fp, &s[k].map);
    fputc('\n', fp);
  }
  fclose(fp);
}

void run_w8(const bench_cfg *c)
{
  double t0 = now_s();
  w8_create(c);

  size_t n = c->w8_tasks, items = c->w8_items;
  fp_future **fs = malloc(n * sizeof *fs);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  if (fs == NULL)
    die("malloc", FP_ENOMEM);
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, (uint32_t)items);
  for (size_t i = 0; i < items; i++)
    msgpack_pack_uint64(&pk, i);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  uint64_t want = sum_squares(n), want_map = sum_squares(items);

  fp_pool *p[W8_N];
  w8_series s[W8_N];
  memset(s, 0, sizeof s);
  for (int k = 0; k < W8_N; k++) {
    p[k] = pool_new(w8_counts[k], 10);
    warm(p[k], 1000);
    (void)map_once(p[k], &in, 0, items, want_map);
  }
  for (int r = 0; r < c->w8_reps; r++)
    for (int j = 0; j < W8_N; j++) {
      int k = (j + r) % W8_N; /* who goes first takes turns */
      w8_submit(p[k], fs, n, want, &s[k]);
      w8_map(p[k], &in, items, want_map, &s[k]);
    }
  for (int k = 0; k < W8_N; k++)
    fp_pool_destroy(p[k]);
  free(fs);
  msgpack_sbuffer_destroy(&sb);

  char note[200];
  snprintf(note, sizeof note, "parent CPU (getrusage user + sys) / %zu: "
           "fp_submit of x*x, then fp_future_result of each in order", n);
  w8_rows("submit+results CPU", "ns/task", note, s, pick_all, 1);
  w8_rows("of which submit loop", "ns/task", "the submit loop's share of "
          "the line above", s, pick_sub, 0);
  w8_rows("of which results loop", "ns/task", "the results loop's share",
          s, pick_res, 0);
  snprintf(note, sizeof note, "parent CPU / %zu: fp_map of x*x over a "
           "msgpack array, automatic chunks, until fp_map_destroy", items);
  w8_rows("map CPU", "ns/item", note, s, pick_map, 1);
  w8_data(s);
  bench_log("W8: %.1f s", now_s() - t0);
}

/* --- Memory ----------------------------------------------------------------------------------- */

static long rss_kb(void)
{
  return proc_kb(0, "status", "VmRSS");
}

static long hwm_kb(void)
{
  return proc_kb(0, "status", "VmHWM");
}

/* n futures queued behind workers that sleep: bytes per pending task. */
static double pending_futures(size_t n, double *base_bytes, double *args)
{
  fp_future **fs = malloc(n * sizeof *fs);
  if (fs == NULL)
    die("malloc", FP_ENOMEM);
  memset(fs, 0, n * sizeof *fs); /* the caller's array is not the pool's */

  /* Baseline: each task's argument bytes in an allocation of its own. */
  double asum = 0;
  malloc_trim(0);
  long r0 = rss_kb();
  for (size_t i = 0; i < n; i++) {
    small_buf b;
    pack_uint(&b, i);
    asum += (double)b.len;
    char *a = malloc(b.len);
    if (a == NULL)
      die("malloc", FP_ENOMEM);
    memcpy(a, b.data, b.len);
    fs[i] = (fp_future *)a;
  }
  *base_bytes = (double)(rss_kb() - r0) * 1024 / (double)n;
  *args = asum / (double)n;
  for (size_t i = 0; i < n; i++)
    free(fs[i]);
  malloc_trim(0);

  fp_pool *p = pool_new(2, 10);
  fp_future *sleepers[4];
  for (int k = 0; k < 4; k++) /* 2 workers x max_inflight 2 */
    sleepers[k] = submit_uint(p, "sleep", 600);
  malloc_trim(0);
  long f0 = rss_kb();
  for (size_t i = 0; i < n; i++)
    fs[i] = submit_uint(p, "square", i);
  long f1 = rss_kb();
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_pool_stats_get(p, &st, NULL, 0);
  if (st.queued != n)
    bench_log("Memory: %llu of %zu futures queued, not all",
              (unsigned long long)st.queued, n);
  fp_pool_kill(p);
  for (int k = 0; k < 4; k++)
    fp_future_release(sleepers[k]);
  for (size_t i = 0; i < n; i++)
    fp_future_release(fs[i]);
  fp_pool_destroy(p);
  free(fs);
  malloc_trim(0);
  return (double)(f1 - f0) * 1024 / (double)n;
}

typedef struct counter {
  uint64_t i, n;
} counter;

static int next_uint(void *arg, msgpack_packer *pk)
{
  counter *c = arg;
  if (c->i == c->n)
    return 0;
  return msgpack_pack_uint64(pk, c->i++) ? FP_ENOMEM : 1;
}

/* A lazy map of n items: its peak RSS over the start, in kB; *rate items/s. */
static long lazy_map_peak(fp_pool *p, size_t n, double *rate)
{
  counter ctr = {0, n};
  fp_map_input in = {.next = next_uint, .arg = &ctr};
  malloc_trim(0);
  if (reset_peak_rss() != 0)
    bench_log("Memory: cannot reset VmHWM; the lazy-map peaks include "
              "earlier ones");
  long r0 = rss_kb();
  *rate = map_once(p, &in, 0, n, sum_squares(n));
  return hwm_kb() - r0;
}

void run_memory(const bench_cfg *c)
{
  char note[200], name[80];
  /* Worker private memory right after start, and a forked child's. */
  series wpriv = {0}, bpriv = {0};
  for (int r = 0; r < 3; r++) {
    double s, st;
    long kb;
    if (!c->no_baseline) {
      base_startup(1, &s, &st, &kb);
      if (kb >= 0)
        series_add(&bpriv, (double)kb);
    }
    fp_pool *p = pool_new(2, 10);
    fp_worker_stats ws[2];
    fp_pool_stats pst = FP_POOL_STATS_INIT;
    fp_pool_stats_get(p, &pst, ws, 2);
    for (int k = 0; k < 2; k++) {
      long kb_w = ws[k].pid > 0 ? private_kb(ws[k].pid) : -1;
      if (kb_w >= 0) /* smaps_rollup: Linux 4.14 and later */
        series_add(&wpriv, (double)kb_w);
    }
    fp_pool_destroy(p);
  }
  figure *b = figure_add("Memory baseline: forked child, private", "KiB",
                         &bpriv, NULL, "Private_Clean + Private_Dirty of a "
                         "child forked by this program, after a round trip");
  figure_add("Memory worker private RSS after start", "KiB", &wpriv, b,
             "smaps_rollup Private_* of each worker of a new 2-worker "
             "pool (pids from fp_pool_stats_get)");

  /* Pending futures. */
  size_t n = c->mem_pending;
  double base_bytes, args;
  series fp = {0}, base = {0}, extra = {0};
  double per = pending_futures(n, &base_bytes, &args);
  series_add(&fp, per);
  series_add(&base, base_bytes);
  series_add(&extra, per - base_bytes);
  snprintf(note, sizeof note, "VmRSS growth over %zu argument buffers "
           "(%.1f bytes of msgpack each) malloc'd one by one", n, args);
  b = figure_add("Memory baseline: arguments alone", "B/task", &base, NULL,
                 note);
  snprintf(note, sizeof note, "VmRSS growth over %zu fp_submit queued "
           "behind 2 busy workers, / %zu", n, n);
  snprintf(name, sizeof name, "Memory parent per pending task");
  figure_add(name, "B/task", &fp, b, note);
  figure *f = figure_add("Memory per pending task beyond its arguments",
                         "B/task", &extra, NULL,
                         "the line above minus the baseline's");
  figure_target(f, f->med <= 256, "<= 256 B");

  /* Lazy maps: peak RSS must not grow with the length. */
  fp_pool *p = pool_new(2, 10);
  warm(p, 100);
  double rs, rl;
  series small = {0}, large = {0}, rate = {0};
  series_add(&small, (double)lazy_map_peak(p, c->mem_lazy_small, &rs));
  series_add(&large, (double)lazy_map_peak(p, c->mem_lazy_large, &rl));
  series_add(&rate, rl);
  fp_pool_destroy(p);
  snprintf(name, sizeof name, "Memory lazy map %zu items, peak growth",
           c->mem_lazy_small);
  snprintf(note, sizeof note, "VmHWM after the map (reset by clear_refs 5) "
           "- VmRSS before; fp_map with a next() callback, automatic "
           "chunks");
  b = figure_add(name, "KiB", &small, NULL, note);
  snprintf(name, sizeof name, "Memory lazy map %zu items, peak growth",
           c->mem_lazy_large);
  f = figure_add(name, "KiB", &large, b, note);
  figure_target(f, f->med <= b->med * 1.1 + 1024,
                "flat: <= 1.1x the short map's + 1 MiB");
  snprintf(name, sizeof name, "Memory lazy map %zu items, rate",
           c->mem_lazy_large);
  figure_add(name, "items/s", &rate, NULL, "the same map's throughput");
}

/* --- Modes: threads and inline (issue 16) -------------------------------------------- */

static fp_pool *pool_mode(unsigned mode, unsigned workers)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = workers;
  o.max_inflight = tuned_inflight;
  o.shm_args = tuned_shm;
  o.tasks = bench_tasks;
  o.mode = mode;
  fp_pool *p;
  int rc = fp_pool_create(&p, &o);
  if (rc != 0)
    die("fp_pool_create (mode)", rc);
  return p;
}

/* W1 on p: n submits, then each result in order; seconds. */
static double w1_once(fp_pool *p, fp_future **fs, size_t n, uint64_t want)
{
  uint64_t sum = 0;
  double t0 = now_s();
  for (size_t i = 0; i < n; i++)
    fs[i] = submit_uint(p, "square", i);
  for (size_t i = 0; i < n; i++)
    sum += take_uint(fs[i]);
  double t = now_s() - t0;
  check_sum("W1 (modes)", sum, want);
  return t;
}

/* W3 on p: n sequential round trips; µs each. */
static double w3_once(fp_pool *p, size_t n)
{
  double t0 = now_s();
  for (size_t i = 0; i < n; i++)
    if (take_uint(submit_uint(p, "square", i)) != i * i)
      die("W3 (modes): wrong result", 0);
  return (now_s() - t0) / (double)n * 1e6;
}

/*
 * The inline baseline: the task function called by hand, its argument an
 * object built on the stack, its result packed into a small buffer and
 * unpacked, which is the least a caller does to get the value; seconds.
 */
static double direct_once(size_t n, uint64_t want)
{
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  uint64_t sum = 0;
  double t0 = now_s();
  for (size_t i = 0; i < n; i++) {
    msgpack_object arg = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER};
    arg.via.u64 = i;
    small_buf b = {.len = 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, small_write);
    if (t_square(NULL, &arg, &pk) != 0 ||
        msgpack_unpack_next(&u, b.data, b.len, NULL) !=
            MSGPACK_UNPACK_SUCCESS)
      die("direct call", 0);
    sum += u.data.via.u64;
  }
  double t = now_s() - t0;
  msgpack_unpacked_destroy(&u);
  check_sum("direct call", sum, want);
  return t;
}

/* n tasks that sleep 1 ms on p, all submitted, then waited; tasks/s. */
static double io_once(fp_pool *p, size_t n)
{
  fp_future *fs[4096];
  if (n > 4096)
    n = 4096;
  small_buf b;
  pack_uint(&b, 1000);
  double t0 = now_s();
  for (size_t i = 0; i < n; i++) {
    int rc = fp_submit(p, "nap", b.data, b.len, &fs[i]);
    if (rc != 0)
      die("fp_submit (nap)", rc);
  }
  for (size_t i = 0; i < n; i++) {
    const msgpack_object *r;
    int rc = fp_future_result(fs[i], WAIT_MS, &r);
    if (rc != 0)
      die("fp_future_result (nap)", rc);
    fp_future_release(fs[i]);
  }
  return (double)n / (now_s() - t0);
}

/* W1 and W3 in each mode next to their baselines, one repetition. */
static void modes_rep(const bench_cfg *c, fp_pool *const pools[3],
                      fp_future **fs, series w1[3], series w3[3],
                      series *bq, series *bpp, series *bdirect)
{
  size_t n = c->w1_tasks, trips = c->w3_trips;
  uint64_t want = sum_squares(n), s;
  if (!c->no_baseline) {
    series_add(bq, (double)n / base_tqueue(n, 2, 0, &s));
    check_sum("thread queue", s, want);
    series_add(bpp, base_tqueue(trips, 1, 1, &s) / (double)trips * 1e6);
    check_sum("thread ping-pong", s, sum_squares(trips));
    series_add(bdirect, (double)n / direct_once(n, want));
  }
  for (int m = 0; m < 3; m++) {
    series_add(&w1[m], (double)n / w1_once(pools[m], fs, n, want));
    series_add(&w3[m], w3_once(pools[3 + m], trips));
  }
}

static void modes_report(const bench_cfg *c, series w1[3], series w3[3],
                         const series *bq, const series *bpp,
                         const series *bdirect)
{
  static const char *const mname[3] = {"processes", "threads", "inline"};
  char note[160], name[80];
  snprintf(note, sizeof note, "%zu x*x through a mutex + 2 condition "
           "variables, 2 threads, results waited for in order", c->w1_tasks);
  figure *q = figure_add("Modes baseline: thread queue, 2 threads",
                         "tasks/s", bq, NULL, note);
  snprintf(note, sizeof note, "%zu calls of the task function, argument "
           "built on the stack, result packed and unpacked", c->w1_tasks);
  figure *d = figure_add("Modes baseline: direct call of the task",
                         "tasks/s", bdirect, NULL, note);
  snprintf(note, sizeof note, "%zu sequential round trips through the same "
           "queue, 1 thread", c->w3_trips);
  figure *pp = figure_add("Modes baseline: thread queue ping-pong", "µs",
                          bpp, NULL, note);
  for (int m = 0; m < 3; m++) {
    snprintf(name, sizeof name, "W1 %s mode", mname[m]);
    snprintf(note, sizeof note, "as W1: %zu fp_submit of x*x then each "
             "result; %s", c->w1_tasks, m == 2 ? "tasks run in the waits"
                                               : "2 workers");
    figure *f = figure_add(name, "tasks/s", &w1[m], m == 1 ? q : m == 2 ? d
                                                                        : NULL,
                           note);
    if (m == 1)
      figure_target(f, f->ratio >= 0.8, ">= 0.80 of the thread queue");
    if (m == 2)
      figure_target(f, f->ratio >= 0.5, ">= 0.50 of the direct call");
  }
  for (int m = 0; m < 3; m++) {
    snprintf(name, sizeof name, "W3 round trip, %s mode", mname[m]);
    snprintf(note, sizeof note, "as W3: %zu sequential submit + result, "
             "1 worker", c->w3_trips);
    figure *f = figure_add(name, "µs", &w3[m], m == 1 ? pp : NULL, note);
    if (m == 1)
      figure_target(f, f->ratio <= 1.5, "<= 1.50x the queue's ping-pong");
  }
}

/* I/O-bound: 1 ms sleeps, 2 worker processes against 16 worker threads. */
static void modes_io(const bench_cfg *c)
{
  fp_pool *procs = pool_new(2, 10), *threads = pool_mode(FP_MODE_THREADS, 16);
  warm(procs, 100);
  warm(threads, 100);
  series sp = {0}, st = {0};
  for (int r = 0; r < c->reps; r++) {
    series_add(&sp, io_once(procs, c->io_tasks));
    series_add(&st, io_once(threads, c->io_tasks));
  }
  fp_pool_destroy(procs);
  fp_pool_destroy(threads);
  char note[160];
  snprintf(note, sizeof note, "%zu tasks that sleep 1 ms (nanosleep), all "
           "submitted, then waited for; 2 worker processes", c->io_tasks);
  figure *b = figure_add("I/O-bound, 2 processes", "tasks/s", &sp, NULL,
                         note);
  snprintf(note, sizeof note, "the same tasks, 16 worker threads");
  figure *f = figure_add("I/O-bound, 16 threads", "tasks/s", &st, b, note);
  figure_target(f, f->ratio > 1.0, "faster than 2 processes");
}

void run_modes(const bench_cfg *c)
{
  static const unsigned mode[3] = {FP_MODE_PROCESSES, FP_MODE_THREADS,
                                   FP_MODE_INLINE};
  fp_pool *pools[6]; /* W1 pools (2 workers), then W3 pools (1 worker) */
  for (int m = 0; m < 3; m++) {
    pools[m] = pool_mode(mode[m], 2);
    pools[3 + m] = pool_mode(mode[m], 1);
    warm(pools[m], 1000);
    warm(pools[3 + m], 200);
  }
  fp_future **fs = malloc(c->w1_tasks * sizeof *fs);
  if (fs == NULL)
    die("malloc", FP_ENOMEM);
  series w1[3], w3[3], bq = {0}, bpp = {0}, bd = {0};
  memset(w1, 0, sizeof w1);
  memset(w3, 0, sizeof w3);
  for (int r = 0; r < c->reps; r++)
    modes_rep(c, pools, fs, w1, w3, &bq, &bpp, &bd);
  for (int k = 0; k < 6; k++)
    fp_pool_destroy(pools[k]);
  free(fs);
  modes_report(c, w1, w3, &bq, &bpp, &bd);
  modes_io(c);
}

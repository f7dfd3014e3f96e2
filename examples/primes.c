/*
 * primes: fp_map over an input made on demand.  Counts the primes below N
 * by trial division, in ranges of RANGE numbers: a callback hands the map
 * one range [lo, hi] at a time, as room frees up, so no list of ranges is
 * ever built.  The map packs ranges into chunks, sized automatically, and
 * a progress bar on stderr follows the results.  Prints the count and the
 * time taken, and checks the count when N is one whose answer is known.
 * Ctrl-C stops it at once: the SIGINT handler calls fp_pool_interrupt,
 * which makes the blocked fp_map_next return FP_EINTR; it prints what was
 * counted so far and exits with status 130.
 *
 *   cc primes.c $(pkg-config --cflags --libs forkpool) -o primes
 *   ./primes [--mode processes|threads|inline] [N]
 *
 * N is 3000000 by default.  --mode changes only the pool's option: the
 * task, the map and the progress bar are the same in every mode (threads:
 * the workers are threads of this process; inline: the tasks run in this
 * thread, inside fp_map_next, where a debugger sees them).
 */
#define _POSIX_C_SOURCE 200809L
#include <forkpool.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RANGE 1000 /* numbers per item: a fraction of a millisecond of work */

/* --- The task: it runs in the workers ------------------------------------ */

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

static const fp_task tasks[] = {{"count", count}, {NULL, NULL}};

/* --- The input: called by the map in this process ------------------------- */

struct ranges {
  int64_t next; /* the first number of the next range */
  int64_t end;  /* one past the last number */
};

/* Packs the next range and returns 1, or returns 0 when there is none. */
static int next_range(void *arg, msgpack_packer *pk)
{
  struct ranges *r = arg;
  if (r->next >= r->end)
    return 0;
  int64_t lo = r->next, hi = lo + RANGE - 1 < r->end ? lo + RANGE - 1
                                                     : r->end - 1;
  r->next = hi + 1;
  int rc = fp_pack(pk, "[II]", lo, hi);
  return rc == 0 ? 1 : rc; /* a negative code stops the map with it */
}

/* --- The progress bar ------------------------------------------------------- */

struct bar {
  size_t expected; /* items this program will give; 0 if it could not know */
  int tty;         /* stderr is a terminal: redraw in place */
  int shown;       /* the percentage drawn last; -1: none yet */
};

/*
 * Called by fp_map_next each time a chunk's results are in.  total is the
 * number of items as the map knows it: 0 while it does not, which for an
 * input made on demand means until the input has ended.  This program knows
 * how many ranges it will make and uses that instead; one that cannot know
 * shows the count alone.
 */
static void progress(void *arg, size_t done, size_t total)
{
  struct bar *b = arg;
  size_t of = total != 0 ? total : b->expected;
  if (of == 0) {
    if (b->tty)
      fprintf(stderr, "\r%zu ranges done", done);
    return;
  }
  int pct = (int)(100 * done / of);
  /* A terminal gets a redraw per percent; a file or pipe a line per 25%. */
  int step = b->tty ? 1 : 25;
  if (pct / step == b->shown / step && b->shown >= 0)
    return;
  b->shown = pct;
  char fill[41];
  int w = (int)(40 * done / of);
  for (int i = 0; i < 40; i++)
    fill[i] = i < w ? '#' : '.';
  fill[40] = '\0';
  fprintf(stderr, "%s[%s] %3d%% %zu/%zu ranges%s", b->tty ? "\r" : "", fill,
          pct, done, of, b->tty ? "" : "\n");
}

/* --- Ctrl-C ------------------------------------------------------------------ */

/* The pool the handler wakes; NULL before it exists and once it is going. */
static _Atomic(fp_pool *) sigint_pool;

/* Only async-signal-safe calls here: fp_pool_interrupt is one. */
static void on_sigint(int sig)
{
  (void)sig;
  fp_pool *p = atomic_load(&sigint_pool);
  if (p != NULL)
    (void)fp_pool_interrupt(p);
}

static void catch_sigint(fp_pool *pool)
{
  struct sigaction sa;
  sa.sa_handler = pool != NULL ? on_sigint : SIG_DFL;
  sa.sa_flags = 0;
  sigemptyset(&sa.sa_mask);
  atomic_store(&sigint_pool, pool);
  sigaction(SIGINT, &sa, NULL);
}

/* --- The caller --------------------------------------------------------------- */

/* The number of primes below n, for some n: the count is checked for these. */
static const struct {
  int64_t n, primes;
} known[] = {{10, 4},          {100, 25},         {1000, 168},
             {10000, 1229},    {100000, 9592},    {1000000, 78498},
             {3000000, 216816}, {10000000, 664579}};

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* "processes", "threads" or "inline": 0 and *mode, or -1. */
static int parse_mode(const char *s, unsigned *mode)
{
  static const char *const names[] = {"processes", "threads", "inline"};
  static const unsigned modes[] = {FP_MODE_PROCESSES, FP_MODE_THREADS,
                                   FP_MODE_INLINE};
  for (size_t i = 0; i < 3; i++)
    if (strcmp(s, names[i]) == 0) {
      *mode = modes[i];
      return 0;
    }
  return -1;
}

int main(int argc, char **argv)
{
  int64_t n = 3000000;
  unsigned mode = FP_MODE_PROCESSES;
  int a = 1;
  if (a + 1 < argc && strcmp(argv[a], "--mode") == 0) {
    if (parse_mode(argv[a + 1], &mode) != 0)
      argc = 0; /* usage */
    a += 2;
  }
  if (argc == 0 || argc > a + 1) {
    fprintf(stderr, "usage: primes [--mode processes|threads|inline] [N]\n");
    return 2;
  }
  if (a < argc) {
    char *end;
    errno = 0;
    long long v = strtoll(argv[a], &end, 10);
    if (end == argv[a] || *end != '\0' || errno != 0 || v < 0 ||
        v > 1000000000000LL) {
      fprintf(stderr, "usage: primes [--mode processes|threads|inline] [N], "
                      "N from 0 to 10^12\n");
      return 2;
    }
    n = v;
  }

  fp_pool_options opts = FP_POOL_OPTIONS_INIT;
  opts.tasks = tasks;
  opts.mode = mode;
  fp_pool *pool;
  int rc = fp_pool_create(&pool, &opts); /* one worker per usable CPU */
  if (rc != 0) {
    fprintf(stderr, "fp_pool_create: %s\n", fp_strerror(rc));
    return 1;
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_pool_stats_get(pool, &st, NULL, 0);
  /* After create: the workers are not ours to stop, and are in a process
   * group of their own, so a terminal's Ctrl-C reaches this process only. */
  catch_sigint(pool);

  struct ranges in_state = {0, n};
  fp_map_input in = {NULL, 0, next_range, &in_state}; /* lazy: no array */
  struct bar bar = {(size_t)((n + RANGE - 1) / RANGE), isatty(2), -1};
  fp_map_options mo = FP_MAP_OPTIONS_INIT; /* chunksize 0: automatic */
  mo.progress = progress;
  mo.progress_arg = &bar;

  /* The time leaves out fp_pool_create: forking workers is paid once. */
  double t0 = now();
  fp_map_iter *m;
  if ((rc = fp_map(pool, "count", &in, &mo, &m)) != 0) {
    fprintf(stderr, "fp_map: %s\n", fp_strerror(rc));
    fp_pool_destroy(pool);
    return 1;
  }
  int64_t primes = 0;
  size_t items = 0, failed = 0;
  fp_map_item item;
  while ((rc = fp_map_next(m, -1, &item)) == 1) {
    items++;
    if (item.err == 0) {
      primes += item.result->via.i64; /* valid until the next fp_map_next */
    } else {
      fprintf(stderr, "\nrange %zu: %s (%s)\n", item.index,
              fp_strerror(item.err), item.error);
      failed++;
    }
  }
  if (bar.tty)
    fputc('\n', stderr); /* leave the bar's last state on screen */
  if (rc == FP_EINTR)
    fprintf(stderr, "interrupted: %lld primes in the first %zu ranges\n",
            (long long)primes, items);
  else if (rc != 0)
    fprintf(stderr, "fp_map_next: %s\n", fp_strerror(rc));
  catch_sigint(NULL); /* before destroy: the handler must not see it go */
  fp_map_destroy(m);  /* cancels what has not started */
  double elapsed = now() - t0;
  fp_pool_destroy(pool);
  if (rc == FP_EINTR)
    return 130;
  if (rc != 0 || failed != 0)
    return 1;

  printf("primes below %lld: %lld\n", (long long)n, (long long)primes);
  static const char *const kinds[] = {"workers", "threads", "caller"};
  printf("time: %.3f s, %zu ranges of %d numbers over %u %s\n", elapsed,
         items, RANGE, st.workers, kinds[mode]);
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (known[i].n == n && known[i].primes != primes) {
      printf("wrong: there are %lld\n", (long long)known[i].primes);
      return 1;
    }
  return 0;
}

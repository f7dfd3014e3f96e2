/*
 * Soak: FP_SOAK_N tasks (20000 by default, 1,000,000 under "make soak")
 * across 4 workers, 1% of them crashing, 1% hanging past a 100 ms deadline,
 * 1% cancelled while pending when they still are.  Every future ends in
 * exactly one of FINISHED, FAILED, CANCELLED, with the right code, its
 * done-callback runs exactly once, the counters add up, and at the end no
 * child process, descriptor or heap byte is left, and the resident set has
 * not grown with the task count.
 */
#define _GNU_SOURCE
#include "failmalloc.h"
#include "fpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SOAK_WORKERS 4
#define SOAK_WINDOW 512       /* futures outstanding at most */
#define SOAK_DEADLINE_MS 100

/* Not ck_assert: a million of those would each write to Check's pipe. */
#define SOAK_CHECK(cond, ...)                                                 \
  do {                                                                        \
    if (!(cond))                                                              \
      ck_abort_msg(__VA_ARGS__);                                              \
  } while (0)

enum kind { K_SQUARE, K_CRASH, K_HANG, K_CANCEL };

/* i * 61 mod 100 runs through 0..99 once every 100 tasks: exactly 1% each,
 * spread out rather than in a row. */
static enum kind kind_of(size_t i)
{
  switch ((i * 61) % 100) {
  case 17:
    return K_CRASH;
  case 42:
    return K_HANG;
  case 73:
    return K_CANCEL;
  default:
    return K_SQUARE;
  }
}

typedef struct tally {
  uint64_t finished, crashed, hung, cancelled;
} tally;

static unsigned char *done_calls;  /* per task: done-callbacks run */
static unsigned char *was_cancelled; /* per task: fp_future_cancel said 0 */

static void on_done(fp_future *f, void *arg)
{
  (void)f;
  ++*(unsigned char *)arg;
}

static fp_future *submit_one(fp_pool *p, size_t i)
{
  static const char no_args[] = {(char)0x90}; /* [] */
  fp_future *f = NULL;
  int rc;
  enum kind k = kind_of(i);
  if (k == K_CRASH) {
    rc = fp_submit(p, "segv", no_args, sizeof no_args, &f);
  } else if (k == K_HANG) {
    fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
    so.deadline_ms = SOAK_DEADLINE_MS;
    rc = fp_submit_ex(p, "forever", no_args, sizeof no_args, &so, &f);
  } else {
    rc = fp_submitf(p, "square", &f, "[I]", (int64_t)i);
  }
  SOAK_CHECK(rc == 0, "submit %zu: %s", i, fp_strerror(rc));
  rc = fp_future_on_done(f, on_done, &done_calls[i]);
  SOAK_CHECK(rc == 0, "on_done %zu: %s", i, fp_strerror(rc));
  if (k == K_CANCEL) {
    rc = fp_future_cancel(f, 0);
    SOAK_CHECK(rc == 0 || rc == FP_EBUSY, "cancel %zu: %s", i,
               fp_strerror(rc));
    was_cancelled[i] = rc == 0;
  }
  return f;
}

static void check_one(size_t i, fp_future *f, tally *t)
{
  const msgpack_object *r;
  int rc = fp_future_result(f, FPT_LIMIT_MS, &r);
  fp_state st = fp_future_state(f);
  const char *err = fp_future_error(f);
  enum kind k = kind_of(i);
  if (was_cancelled[i]) {
    SOAK_CHECK(rc == FP_ECANCELLED && st == FP_CANCELLED,
               "task %zu, cancelled: %s, state %d", i, fp_err_name(rc), st);
    t->cancelled++;
  } else if (k == K_CRASH) {
    SOAK_CHECK(rc == FP_EWORKER && st == FP_FAILED && err &&
               strstr(err, "signal 11"), "task %zu, crash: %s (%s)", i,
               fp_err_name(rc), err ? err : "");
    t->crashed++;
  } else if (k == K_HANG) {
    SOAK_CHECK(rc == FP_EDEADLINE && st == FP_FAILED,
               "task %zu, hang: %s (%s)", i, fp_err_name(rc), err ? err : "");
    t->hung++;
  } else {
    SOAK_CHECK(rc == 0 && st == FP_FINISHED && err == NULL,
               "task %zu: %s (%s)", i, fp_err_name(rc), err ? err : "");
    SOAK_CHECK(r->via.i64 == (int64_t)i * (int64_t)i, "task %zu: %lld", i,
               (long long)r->via.i64);
    t->finished++;
  }
  SOAK_CHECK(done_calls[i] == 1, "task %zu: %d done-callbacks", i,
             done_calls[i]);
}

static long rss_kib(void)
{
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  if (f)
    fclose(f);
  return kib;
}

static size_t soak_n(void)
{
  const char *v = getenv("FP_SOAK_N");
  return v && *v ? (size_t)strtoull(v, NULL, 10) : fpt_scaled(20000, 500);
}

START_TEST(soak)
{
  size_t n = soak_n();
  fpt_snapshot s;
  fpt_begin(&s);
  long heap0 = fm_heap_in_use(), rss0 = -1;
  done_calls = calloc(n, 1);
  was_cancelled = calloc(n, 1);
  ck_assert(done_calls && was_cancelled);
  fp_future *ring[SOAK_WINDOW];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);

  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = SOAK_WORKERS;
  o.tasks = fpt_tasks;
  o.restart_limit = 0; /* crashes on purpose: never a crash loop */
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  tally t = {0, 0, 0, 0};
  for (size_t i = 0; i < n + SOAK_WINDOW; i++) {
    if (i >= SOAK_WINDOW) {
      size_t j = i - SOAK_WINDOW;
      check_one(j, ring[j % SOAK_WINDOW], &t);
      fp_future_release(ring[j % SOAK_WINDOW]);
      if (j == 4 * SOAK_WINDOW || (j == n - 1 && rss0 < 0))
        rss0 = rss_kib(); /* warm: every buffer at its working size */
    }
    if (i < n)
      ring[i % SOAK_WINDOW] = submit_one(p, i);
  }
  long rss1 = rss_kib();

  /* The last replacement may still be starting: let the dispatcher run. */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  for (int waited = 0;; waited += 10) {
    ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
    if (st.workers_live == SOAK_WORKERS)
      break;
    ck_assert_int_lt(waited, FPT_LIMIT_MS);
    ck_assert_int_ge(fp_pool_dispatch(p, 10), 0);
  }
  ck_assert_uint_eq(t.finished + t.crashed + t.hung + t.cancelled, n);
  uint64_t crashes = 0, hangs = 0;
  for (size_t i = 0; i < n; i++) {
    crashes += kind_of(i) == K_CRASH;
    hangs += kind_of(i) == K_HANG;
  }
  ck_assert_uint_eq(t.crashed, crashes);
  ck_assert_uint_eq(t.hung, hangs);
  ck_assert_uint_eq(st.submitted, n);
  ck_assert_uint_eq(st.queued, 0);
  ck_assert_uint_eq(st.running, 0);
  ck_assert_uint_eq(st.finished, t.finished);
  ck_assert_uint_eq(st.failed, t.crashed + t.hung);
  ck_assert_uint_eq(st.cancelled, t.cancelled);
  ck_assert_uint_eq(st.deadline_kills, t.hung);
  ck_assert_uint_eq(st.worker_deaths, t.crashed);
  ck_assert_uint_eq(st.worker_restarts, t.crashed + t.hung);
  fpt_pool_destroy(p);

  for (size_t i = 0; i < n; i++)
    SOAK_CHECK(done_calls[i] == 1, "task %zu: %d done-callbacks after destroy",
               i, done_calls[i]);
  free(done_calls);
  free(was_cancelled);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) +
                (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  long heap1 = fm_heap_in_use();
  printf("soak: %zu tasks in %.1f s: %llu finished, %llu crashed, %llu hung, "
         "%llu cancelled; RSS %ld -> %ld KiB; heap %+ld bytes\n", n, secs,
         (unsigned long long)t.finished, (unsigned long long)t.crashed,
         (unsigned long long)t.hung, (unsigned long long)t.cancelled, rss0,
         rss1, heap1 - heap0);
  fflush(stdout);
  /* Every byte the pool and its futures took is back. */
  ck_assert_msg(heap1 == heap0, "heap grew by %ld bytes", heap1 - heap0);
  /* Not under valgrind or a sanitizer: their own memory is in the RSS. */
  if (fpt_rss_is_meaningful())
    ck_assert_msg(rss1 - rss0 < 32 * 1024, "RSS grew by %ld KiB over the run",
                  rss1 - rss0);
  fpt_end(&s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("soak");
  /* About 4 workers * 100 ms per hang, plus the rest: generous. */
  TCase *tc = fpt_tcase(s, "soak", 300 + (double)soak_n() / 250);
  tcase_add_test(tc, soak);
  fpt_run_suite(s);
}

/*
 * crashy: the pool survives its tasks.  Some tasks here segfault, abort(),
 * call _exit(3) or fail cleanly with fp_call_fail; one runs for two seconds;
 * most just work.  A worker that dies takes down only the task it was
 * running: the pool starts a new worker in its place and the other tasks
 * finish.  Prints the outcome of every task, then "N finished, M failed".
 *
 *   cc crashy.c $(pkg-config --cflags --libs forkpool) -o crashy
 */
#define _POSIX_C_SOURCE 200809L
#include <forkpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* --- Tasks: they run in the workers ------------------------------------- */

/* [n]: the sum 1 + 2 + ... + n. */
static int sum(fp_call *call, const msgpack_object *args, msgpack_packer *out)
{
  int64_t n, s = 0;
  if (fp_unpack(args, "[I]", &n) != 0)
    return fp_call_fail(call, "TypeError", "sum takes one integer");
  for (int64_t i = 1; i <= n; i++)
    s += i;
  return msgpack_pack_int64(out, s);
}

/* A bug: writes through a null pointer.  The worker dies of SIGSEGV. */
static int segv(fp_call *call, const msgpack_object *args, msgpack_packer *out)
{
  (void)call;
  (void)args;
  (void)out;
  volatile int *p = NULL;
  *p = 1;
  return 0;
}

/* A failed assertion looks like this: SIGABRT. */
static int crash_abort(fp_call *call, const msgpack_object *args,
                       msgpack_packer *out)
{
  (void)call;
  (void)args;
  (void)out;
  abort();
}

/* A library that calls exit() on error: the worker just ends, status 3. */
static int crash_exit(fp_call *call, const msgpack_object *args,
                      msgpack_packer *out)
{
  (void)call;
  (void)args;
  (void)out;
  _exit(3);
}

/* The polite way to fail: the worker lives on and serves the next task. */
static int refuse(fp_call *call, const msgpack_object *args,
                  msgpack_packer *out)
{
  (void)args;
  (void)out;
  return fp_call_fail(call, "ValueError", "I refuse, politely");
}

/* Busy for two seconds of wall time, then returns how many loops it made. */
static int spin(fp_call *call, const msgpack_object *args, msgpack_packer *out)
{
  (void)call;
  (void)args;
  struct timespec t0, t;
  int64_t loops = 0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do {
    loops++;
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while (t.tv_sec - t0.tv_sec < 2 ||
           (t.tv_sec - t0.tv_sec == 2 && t.tv_nsec < t0.tv_nsec));
  return msgpack_pack_int64(out, loops);
}

static const fp_task tasks[] = {
    {"sum", sum},         {"segv", segv},     {"abort", crash_abort},
    {"exit", crash_exit}, {"refuse", refuse}, {"spin", spin},
    {NULL, NULL}};

/* --- The caller ----------------------------------------------------------- */

/* What to run, in order: the slow one first, so that it is surely running
 * when we look at it; then mostly "sum", with the troublemakers mixed in. */
static const char *const jobs[] = {
    "spin", "sum", "segv",  "sum", "abort",  "sum", "sum",
    "exit", "sum", "refuse", "sum", "segv",  "sum", "abort",
    "sum",  "sum", "exit",  "sum", "sum",    "sum"};
#define NJOBS (sizeof jobs / sizeof jobs[0])

/* Prints one task's outcome; returns 1 if it finished, 0 if it failed. */
static int report(unsigned i, fp_future *f)
{
  const msgpack_object *r;
  int rc = fp_future_result(f, -1, &r); /* -1: as long as it takes */
  printf("task %2u %-6s ", i, jobs[i]);
  if (rc == 0) {
    printf("= %lld\n", (long long)r->via.i64);
    return 1;
  }
  /* The code says what kind of failure; the message says the details:
   * "kind: message" from fp_call_fail, or which worker died and how. */
  printf("failed: %s (%s)\n", fp_strerror(rc), fp_future_error(f));
  return 0;
}

int main(void)
{
  /* The crashes are on purpose: leave no core files behind. */
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);

  fp_pool_options opts = FP_POOL_OPTIONS_INIT;
  opts.tasks = tasks;
  opts.workers = 2;
  /* A task waits in the pool's queue rather than behind "spin" on its
   * worker's pipe: a free worker takes the next task. */
  opts.max_inflight = 1;
  /* The crash-loop rule: more than restart_limit worker restarts within
   * restart_window_ms mark the pool broken.  Every task not done then fails
   * with FP_EBROKEN and submits are refused, instead of forking workers
   * forever when, say, every task crashes.  This program kills six workers
   * within a few milliseconds on purpose, so it allows 20 per second (with
   * 5, the sixth crash breaks the pool: try it). */
  opts.restart_limit = 20;
  opts.restart_window_ms = 1000;

  fp_pool *pool;
  int rc = fp_pool_create(&pool, &opts);
  if (rc != 0) {
    fprintf(stderr, "fp_pool_create: %s\n", fp_strerror(rc));
    return 1;
  }

  fp_future *f[NJOBS];
  for (unsigned i = 0; i < NJOBS; i++)
    if ((rc = fp_submitf(pool, jobs[i], &f[i], "[I]", (int64_t)i * 100)) != 0) {
      fprintf(stderr, "fp_submitf %s: %s\n", jobs[i], fp_strerror(rc));
      fp_pool_destroy(pool);
      return 1;
    }

  /* A wait can give up; the task goes on.  Tasks have no deadline here, so
   * we leave "spin" running on one worker, collect the others from the
   * other worker, and come back for it at the end. */
  const msgpack_object *r;
  rc = fp_future_result(f[0], 100, &r);
  printf("task  0 spin   not done after 100 ms: %s (%s)\n", fp_strerror(rc),
         fp_err_name(rc));

  unsigned finished = 0, failed = 0;
  for (unsigned i = 1; i <= NJOBS; i++) {
    if (report(i % NJOBS, f[i % NJOBS])) /* task 0 last */
      finished++;
    else
      failed++;
  }
  for (unsigned i = 0; i < NJOBS; i++)
    fp_future_release(f[i]);
  fp_pool_destroy(pool);

  printf("%u finished, %u failed\n", finished, failed);
  /* Only the troublemakers may fail: every "sum" and "spin" finishes. */
  unsigned should_fail = 0;
  for (unsigned i = 0; i < NJOBS; i++)
    should_fail += strcmp(jobs[i], "sum") && strcmp(jobs[i], "spin");
  return failed == should_fail ? 0 : 1;
}

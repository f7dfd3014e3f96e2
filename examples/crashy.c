/*
 * crashy: the pool survives its tasks.  Some tasks here segfault, abort(),
 * call _exit(3) or fail cleanly with fp_call_fail; one never ends and is
 * stopped by its deadline; most just work.  A worker that dies takes down
 * only the task it was running: the pool starts a new worker in its place
 * and the other tasks finish.  Prints the outcome of every task, then
 * "N finished, M failed" and the pool's counters.
 *
 *   cc crashy.c $(pkg-config --cflags --libs forkpool) -o crashy
 */
#define _POSIX_C_SOURCE 200809L
#include <forkpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

/* A bug of another kind: a loop that never ends.  The worker stays alive
 * and busy, so nothing fails by itself; only a deadline stops it. */
static int hang(fp_call *call, const msgpack_object *args, msgpack_packer *out)
{
  (void)call;
  (void)args;
  volatile int running = 1; /* volatile: read every time, never changed */
  uint64_t loops = 0;
  while (running)
    loops++;
  return msgpack_pack_uint64(out, loops); /* never reached */
}

static const fp_task tasks[] = {
    {"sum", sum},         {"segv", segv},     {"abort", crash_abort},
    {"exit", crash_exit}, {"refuse", refuse}, {"hang", hang},
    {NULL, NULL}};

/* --- The caller ----------------------------------------------------------- */

/* What to run, in order: the endless one first, so that it is surely
 * running when we look at it; then mostly "sum", with the troublemakers
 * mixed in. */
static const char *const jobs[] = {
    "hang", "sum", "segv",  "sum", "abort",  "sum", "sum",
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
  /* A task waits in the pool's queue rather than behind "hang" on its
   * worker's pipe: a free worker takes the next task. */
  opts.max_inflight = 1;
  /* The crash-loop rule: more than restart_limit worker deaths in a row,
   * with no task answered between them, mark the pool broken.  Every task
   * not done then fails with FP_EBROKEN and submits are refused, instead of
   * forking workers forever when, say, every task crashes.  Here the sums
   * between the crashes are progress, so the default would do. */
  opts.restart_limit = 20;

  fp_pool *pool;
  int rc = fp_pool_create(&pool, &opts);
  if (rc != 0) {
    fprintf(stderr, "fp_pool_create: %s\n", fp_strerror(rc));
    return 1;
  }

  /* "hang" gets a deadline: if it runs longer than 500 ms, the pool kills
   * its worker, starts another, and fails it with FP_EDEADLINE.  The
   * dispatcher checks deadlines, so it happens during a call that runs it:
   * here, the fp_future_result calls below.  Options are for fp_submit_ex,
   * which takes arguments packed by the caller (NULL: no options). */
  fp_submit_options deadline = FP_SUBMIT_OPTIONS_INIT;
  deadline.deadline_ms = 500;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  fp_future *f[NJOBS];
  for (unsigned i = 0; i < NJOBS; i++) {
    msgpack_sbuffer_clear(&sb);
    if ((rc = fp_pack(&pk, "[I]", (int64_t)i * 100)) == 0)
      rc = fp_submit_ex(pool, jobs[i], sb.data, sb.size,
                        strcmp(jobs[i], "hang") ? NULL : &deadline, &f[i]);
    if (rc != 0) {
      fprintf(stderr, "fp_submit_ex %s: %s\n", jobs[i], fp_strerror(rc));
      while (i > 0)
        fp_future_release(f[--i]);
      fp_pool_destroy(pool);
      msgpack_sbuffer_destroy(&sb);
      return 1;
    }
  }
  msgpack_sbuffer_destroy(&sb); /* submits copy their arguments */

  /* A wait can give up; the task goes on.  We leave "hang" running on one
   * worker, collect the others from the other worker, and come back for it
   * at the end, when its deadline has stopped it. */
  const msgpack_object *r;
  rc = fp_future_result(f[0], 100, &r);
  printf("task  0 hang   not done after 100 ms: %s (%s)\n", fp_strerror(rc),
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

  /* The pool's own count of what happened.  A deadline kill is not a death:
   * it does not count towards restart_limit. */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_pool_stats_get(pool, &st, NULL, 0);
  fp_pool_destroy(pool);

  printf("%u finished, %u failed\n", finished, failed);
  printf("pool counters: finished %llu, failed %llu, worker deaths %llu, "
         "deadline kills %llu\n",
         (unsigned long long)st.finished, (unsigned long long)st.failed,
         (unsigned long long)st.worker_deaths,
         (unsigned long long)st.deadline_kills);
  /* Only the troublemakers may fail: every "sum" finishes. */
  unsigned should_fail = 0;
  for (unsigned i = 0; i < NJOBS; i++)
    should_fail += strcmp(jobs[i], "sum") != 0;
  return failed == should_fail ? 0 : 1;
}

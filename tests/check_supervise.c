/* Worker supervision with real workers: memory recycling, resource limits
 * per worker, CPU time in the stats, CPU pinning, where workers' stdout
 * goes; each with the options' bad values. */
#define _GNU_SOURCE
#include "fpt.h"

#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

/* --- Tasks ------------------------------------------------------------------ */

static int64_t arg_i64(const msgpack_object *a)
{
  int64_t v = 0;
  (void)fp_unpack(a, "[I]", &v);
  return v;
}

/* What t_leak keeps: reachable, so the compiler keeps the writes. */
static char *volatile leaked;

/* Allocates [mib] MiB, touches every page and keeps it; answers its pid. */
static int t_leak(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  size_t len = (size_t)arg_i64(a) << 20;
  char *p = malloc(len ? len : 1);
  if (p == NULL)
    return fp_call_fail(c, "NoMemory", "malloc(%zu)", len);
  memset(p, 1, len);
  leaked = p;
  return msgpack_pack_int64(o, getpid());
}

/* The same, but frees it before answering. */
static int t_spike(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  size_t len = (size_t)arg_i64(a) << 20;
  char *volatile p = malloc(len);
  if (p == NULL)
    return fp_call_fail(c, "NoMemory", "malloc(%zu)", len);
  memset(p, 1, len);
  free(p);
  return msgpack_pack_int64(o, getpid());
}

/* 1 if malloc of [mib] MiB succeeds (untouched), else 0. */
static int t_try_alloc(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  void *volatile p = malloc((size_t)arg_i64(a) << 20);
  int ok = p != NULL;
  free(p);
  return msgpack_pack_int(o, ok);
}

static int64_t cpu_user_us(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
}

/* Spins until it has used [ms] more of user CPU (< 0: for ever). */
static int t_spin(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  int64_t ms = arg_i64(a), end = cpu_user_us() + ms * 1000;
  while (ms < 0 || cpu_user_us() < end)
    ;
  return msgpack_pack_int64(o, getpid());
}

/* The CPU the kernel says this thread runs on (getcpu(2), no rseq). */
static int kernel_cpu(void)
{
  unsigned cpu = 0;
  return syscall(SYS_getcpu, &cpu, NULL, NULL) == 0 ? (int)cpu : -1;
}

/* [CPUs this worker may run on, the first of them, the CPU glibc's
 * sched_getcpu() names (from the rseq area, where glibc registered one),
 * the CPU the kernel names]. */
static int t_affinity(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  cpu_set_t set;
  int first = -1;
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    return fp_call_fail(c, "OSError", "sched_getaffinity");
  for (int cpu = 0; cpu < CPU_SETSIZE && first < 0; cpu++)
    if (CPU_ISSET(cpu, &set))
      first = cpu;
  int glibc = sched_getcpu();
  return fp_pack(o, "[iiii]", CPU_COUNT(&set), first, glibc, kernel_cpu());
}

/* Init of a pinned worker: fails unless glibc's CPU number is the kernel's.
 * A worker whose rseq area no kernel updates reads the CPU the caller last
 * ran on, which is another CPU than the pin for at least one worker. */
static int init_cpu_agrees(void **state, void *arg, fp_call *call)
{
  (void)state;
  (void)arg;
  int glibc = sched_getcpu(), kernel = kernel_cpu();
  if (glibc != kernel)
    return fp_call_fail(call, "StaleCpu", "sched_getcpu() %d, getcpu %d",
                        glibc, kernel);
  return 0;
}

/* printf's a line with [n]; with n < 0 then hangs (for a deadline). */
static int t_print(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  int64_t n = arg_i64(a);
  printf("worker line %lld\n", (long long)n);
  while (n < 0)
    pause();
  return msgpack_pack_int64(o, n);
}

static const fp_task tasks[] = {
    {"leak", t_leak},   {"spike", t_spike},       {"try_alloc", t_try_alloc},
    {"spin", t_spin},   {"affinity", t_affinity}, {"print", t_print},
    {NULL, NULL}};

/* --- Helpers ---------------------------------------------------------------- */

static fp_pool *pool_opts(fp_pool_options *o, unsigned workers)
{
  fp_pool *p;
  o->workers = workers;
  o->tasks = tasks;
  int rc = fpt_pool_create(&p, o);
  ck_assert_msg(rc == 0, "fp_pool_create: %s (%s)", fp_strerror(rc),
                fp_pool_create_error() ? fp_pool_create_error() : "");
  return p;
}

static fp_future *run(fp_pool *p, const char *task, int64_t x)
{
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, task, &f, "[I]", x), 0);
  return f;
}

/* The task's integer result; releases the future. */
static int64_t result(fp_future *f)
{
  int64_t v = fpt_i64(f);
  fp_future_release(f);
  return v;
}

static fp_pool_stats stats(fp_pool *p)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  return st;
}

/* Runs the dispatcher until the pool has counted n recycles. */
static void await_recycles(fp_pool *p, uint64_t n)
{
  int64_t waited = 0;
  while (stats(p).worker_recycles < n) {
    ck_assert_msg(waited < FPT_LIMIT_MS, "no recycle");
    ck_assert_int_ge(fp_pool_dispatch(p, 10), 0);
    waited += 10;
  }
}

static int create_rc(fp_pool_options *o)
{
  fp_pool *p;
  o->workers = 1;
  o->tasks = tasks;
  int rc = fpt_pool_create(&p, o);
  if (rc == 0)
    fpt_pool_destroy(p);
  return rc;
}

/* --- Bad values --------------------------------------------------------------- */

START_TEST(bad_options_are_einval)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.max_worker_rss = 1; /* bytes, surely meant as something else */
  ck_assert_int_eq(create_rc(&o), FP_EINVAL);
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.max_worker_rss = ((size_t)1 << 20) - 1;
  ck_assert_int_eq(create_rc(&o), FP_EINVAL);
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.worker_stdout = 3;
  ck_assert_int_eq(create_rc(&o), FP_EINVAL);
  o.worker_stdout = -1;
  ck_assert_int_eq(create_rc(&o), FP_EINVAL);
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.pin_workers = 2;
  ck_assert_int_eq(create_rc(&o), FP_EINVAL);
  /* Below what a worker has mapped at its start: every allocation would
   * fail.  Refused, and create says why. */
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.worker_rlimit_as = 1;
  ck_assert_int_eq(create_rc(&o), FP_EINVAL);
  ck_assert_ptr_nonnull(strstr(fp_pool_create_error(), "worker_rlimit_as"));
  fpt_end(&s);
}
END_TEST

/* Huge (and "negative", converted) limits mean no practical limit. */
START_TEST(huge_limits_mean_none)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.max_worker_rss = SIZE_MAX;
  o.worker_rlimit_as = (size_t)-1;
  o.worker_rlimit_cpu = (unsigned)-1;
  fp_pool *p = pool_opts(&o, 1);
  int64_t pid = result(run(p, "leak", 8));
  ck_assert_int_eq(result(run(p, "try_alloc", 1024)), 1);
  ck_assert_int_eq(result(run(p, "leak", 1)), pid);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.worker_recycles + st.worker_deaths, 0);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- Memory recycling ----------------------------------------------------------- */

/* A worker over max_worker_rss after a task is replaced: its result is
 * kept, the tasks queued in its pipe run on the replacement, and the stats
 * count a recycle, not a death. */
START_TEST(rss_over_limit_recycles)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.max_worker_rss = (size_t)64 << 20;
  o.max_inflight = 4;
  fp_pool *p = pool_opts(&o, 1);
  fp_future *big = run(p, "leak", 128);
  fp_future *next[3];
  for (int i = 0; i < 3; i++)
    next[i] = run(p, "leak", 0);
  int64_t leaker = result(big);
  for (int i = 0; i < 3; i++)
    ck_assert_int_ne(result(next[i]), leaker);
  await_recycles(p, 1);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.worker_recycles, 1);
  ck_assert_uint_eq(st.worker_deaths, 0);
  ck_assert_uint_eq(st.worker_restarts, 0);
  ck_assert_uint_eq(st.failed, 0);
  ck_assert_uint_eq(st.finished, 4);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* The present resident memory counts, not the peak: a task that freed what
 * it used keeps its worker. */
START_TEST(rss_freed_keeps_worker)
{
  fpt_snapshot s;
  fpt_begin(&s);
  if (!fpt_rss_is_meaningful()) {
    fprintf(stderr, "rss_freed_keeps_worker: RSS not meaningful here\n");
    fpt_end(&s);
    return;
  }
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.max_worker_rss = (size_t)64 << 20;
  fp_pool *p = pool_opts(&o, 1);
  int64_t pid = result(run(p, "spike", 128));
  ck_assert_int_eq(result(run(p, "spike", 128)), pid);
  ck_assert_uint_eq(stats(p).worker_recycles, 0);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- Resource limits --------------------------------------------------------------- */

static size_t address_space(void)
{
  FILE *f = fopen("/proc/self/statm", "re");
  unsigned long pages = 0;
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fscanf(f, "%lu", &pages), 1);
  fclose(f);
  return pages * (size_t)sysconf(_SC_PAGESIZE);
}

START_TEST(rlimit_as_limits_allocations)
{
  fpt_snapshot s;
  fpt_begin(&s);
  if (!fpt_rss_is_meaningful()) { /* sanitizers reserve their own */
    fpt_end(&s);
    return;
  }
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.shm_args = FP_SHM_OFF;
  o.worker_rlimit_as = address_space() + ((size_t)256 << 20);
  fp_pool *p = pool_opts(&o, 1);
  ck_assert_int_eq(result(run(p, "try_alloc", 1024)), 0);
  ck_assert_int_eq(result(run(p, "try_alloc", 16)), 1);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* A task that runs its worker out of CPU time fails FP_EWORKER, and says
 * so; the worker's death counts as one. */
START_TEST(rlimit_cpu_says_so)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.worker_rlimit_cpu = 1;
  fp_pool *p = pool_opts(&o, 1);
  fp_future *f = run(p, "spin", -1);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EWORKER);
  ck_assert_msg(strstr(fp_future_error(f), "exceeded its CPU time limit"),
                "%s", fp_future_error(f));
  fp_future_release(f);
  ck_assert_int_gt(result(run(p, "spin", 1)), 0); /* a fresh worker */
  ck_assert_uint_eq(stats(p).worker_deaths, 1);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- CPU time ---------------------------------------------------------------------- */

START_TEST(cpu_time_in_stats)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.max_tasks_per_worker = 2;
  fp_pool *p = pool_opts(&o, 1);
  (void)result(run(p, "spin", 100));
  /* Live: as of its last answer, which we hold. */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats w[2];
  memset(w, 0xff, sizeof w);
  ck_assert_int_eq(fp_pool_stats_get(p, &st, w, 2), 0);
  ck_assert_uint_ge(w[0].cpu_user_us, 100000);
  ck_assert_uint_eq(st.cpu_user_us, w[0].cpu_user_us);
  ck_assert_uint_eq(st.cpu_sys_us, w[0].cpu_sys_us);
  ck_assert_uint_eq(w[1].tasks, UINT64_MAX); /* one slot: one entry */
  /* Exited: from wait4, at least what it stamped. */
  (void)result(run(p, "spin", 1));
  await_recycles(p, 1);
  uint64_t before = w[0].cpu_user_us;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, w, 1), 0);
  ck_assert_uint_ge(st.cpu_user_us, before + 1000);
  ck_assert_uint_le(w[0].cpu_user_us, st.cpu_user_us - before);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* A caller built before the CPU fields passes the shorter stats and an
 * array of the shorter fp_worker_stats: it gets exactly that. */
START_TEST(cpu_stats_old_layout)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_opts(&(fp_pool_options)FP_POOL_OPTIONS_INIT, 2);
  struct {
    pid_t pid;
    uint64_t tasks;
  } old[3];
  memset(old, 0xff, sizeof old);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  st.size = offsetof(fp_pool_stats, cpu_user_us);
  st.cpu_user_us = 12345;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, (fp_worker_stats *)old, 2), 0);
  ck_assert_uint_eq(st.cpu_user_us, 12345); /* beyond its size: untouched */
  ck_assert_int_gt(old[0].pid, 0);
  ck_assert_int_gt(old[1].pid, 0);
  ck_assert_int_eq(old[2].pid, -1);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(pin_workers_one_cpu_each)
{
  fpt_snapshot s;
  fpt_begin(&s);
  cpu_set_t mine;
  ck_assert_int_eq(sched_getaffinity(0, sizeof mine, &mine), 0);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.pin_workers = 1;
  fp_pool *p = pool_opts(&o, 3);
  for (int i = 0; i < 6; i++) {
    fp_future *f = run(p, "affinity", 0);
    const msgpack_object *r;
    int n, cpu, glibc, kernel;
    ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), 0);
    ck_assert_int_eq(fp_unpack(r, "[iiii]", &n, &cpu, &glibc, &kernel), 0);
    ck_assert_int_eq(n, 1);
    ck_assert(CPU_ISSET(cpu, &mine));
    ck_assert_int_eq(kernel, cpu);
    ck_assert_int_eq(glibc, cpu);
    fp_future_release(f);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* A worker on each CPU the caller may use (up to 16), each checking in its
 * init that sched_getcpu() is the kernel's answer: the fork server and so
 * every worker has glibc's rseq registration, however it was forked. */
START_TEST(pinned_workers_know_their_cpu)
{
  fpt_snapshot s;
  fpt_begin(&s);
  cpu_set_t mine;
  ck_assert_int_eq(sched_getaffinity(0, sizeof mine, &mine), 0);
  unsigned n = (unsigned)CPU_COUNT(&mine);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.pin_workers = 1;
  o.init = init_cpu_agrees;
  fp_pool *p = pool_opts(&o, n < 16 ? n : 16);
  /* fpt_pool_create waited for every init; a failed one breaks the pool. */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_pool_status ps = FP_POOL_STATUS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_int_eq(fp_pool_status_get(p, &ps), 0);
  ck_assert_msg(ps.state == FP_POOL_RUNNING, "pool state %d: %s", (int)ps.state,
                ps.reason);
  ck_assert_uint_eq(st.workers_live, st.workers);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- Workers' stdout ---------------------------------------------------------------- */

/* What the workers of a pool with mode wrote to fds 1 and 2, running
 * task "print" with x (a deadline of 200 ms when x < 0). */
static void capture(int mode, int64_t x, char *out, char *err, size_t len)
{
  char path[2][64];
  int fd[2], saved[2];
  for (int k = 0; k < 2; k++) {
    snprintf(path[k], sizeof path[k], "/tmp/fpt-stdio-%d-%d", (int)getpid(),
             k);
    fd[k] = open(path[k], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd[k], 0);
    unlink(path[k]);
    fflush(k ? stderr : stdout);
    saved[k] = dup(1 + k);
    ck_assert_int_eq(dup2(fd[k], 1 + k), 1 + k);
  }
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.worker_stdout = mode;
  fp_pool *p = pool_opts(&o, 1);
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = x < 0 ? 200 : 0;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  ck_assert_int_eq(fp_pack(&pk, "[I]", x), 0);
  fp_future *f;
  ck_assert_int_eq(fp_submit_ex(p, "print", sb.data, sb.size, &so, &f), 0);
  msgpack_sbuffer_destroy(&sb);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r),
                   x < 0 ? FP_EDEADLINE : 0);
  fp_future_release(f);
  fpt_pool_destroy(p); /* every worker gone: nothing more is written */
  for (int k = 0; k < 2; k++) {
    ck_assert_int_eq(dup2(saved[k], 1 + k), 1 + k);
    close(saved[k]);
    char *buf = k ? err : out;
    ssize_t n = pread(fd[k], buf, len - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd[k]);
  }
}

START_TEST(stdout_default_is_stderr)
{
  fpt_snapshot s;
  fpt_begin(&s);
  char out[256], err[256];
  capture(FP_STDOUT_STDERR, 7, out, err, sizeof out);
  ck_assert_str_eq(out, "");
  ck_assert_str_eq(err, "worker line 7\n");
  fpt_end(&s);
}
END_TEST

START_TEST(stdout_inherit_and_null)
{
  fpt_snapshot s;
  fpt_begin(&s);
  char out[256], err[256];
  capture(FP_STDOUT_INHERIT, 8, out, err, sizeof out);
  ck_assert_str_eq(out, "worker line 8\n");
  ck_assert_str_eq(err, "");
  capture(FP_STDOUT_NULL, 9, out, err, sizeof out);
  ck_assert_str_eq(out, "");
  ck_assert_str_eq(err, "");
  fpt_end(&s);
}
END_TEST

/* Line-buffered: a worker killed for a deadline has not lost its line. */
START_TEST(stdout_survives_deadline_kill)
{
  fpt_snapshot s;
  fpt_begin(&s);
  char out[256], err[256];
  capture(FP_STDOUT_INHERIT, -1, out, err, sizeof out);
  ck_assert_str_eq(out, "worker line -1\n");
  fpt_end(&s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("supervise");
  TCase *tc = fpt_tcase(s, "supervise", 300);
  tcase_add_test(tc, bad_options_are_einval);
  tcase_add_test(tc, huge_limits_mean_none);
  tcase_add_test(tc, rss_over_limit_recycles);
  tcase_add_test(tc, rss_freed_keeps_worker);
  tcase_add_test(tc, rlimit_as_limits_allocations);
  tcase_add_test(tc, rlimit_cpu_says_so);
  tcase_add_test(tc, cpu_time_in_stats);
  tcase_add_test(tc, cpu_stats_old_layout);
  tcase_add_test(tc, pin_workers_one_cpu_each);
  tcase_add_test(tc, pinned_workers_know_their_cpu);
  tcase_add_test(tc, stdout_default_is_stderr);
  tcase_add_test(tc, stdout_inherit_and_null);
  tcase_add_test(tc, stdout_survives_deadline_kill);
  fpt_run_suite(s);
}

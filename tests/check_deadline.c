/* Soft deadlines with real workers: at the deadline a task is asked to stop
 * (fp_call_should_stop, SIGTERM), and only after its grace is its worker
 * killed.  A task that stops in time keeps its worker. */
#define _GNU_SOURCE
#include "fpt.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --- Tasks -------------------------------------------------------------- */

static void nap_1ms(void)
{
  struct timespec ts = {0, 1000 * 1000};
  nanosleep(&ts, NULL);
}

/* Polls until asked to stop; then fails with its own message, which names
 * its worker and says that the flag stayed up. */
static int t_polls(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  (void)o;
  while (!fp_call_should_stop(c))
    nap_1ms();
  return fp_call_fail(c, "Stopped", "worker %d stopped, flag still %d",
                      (int)getpid(), fp_call_should_stop(c));
}

/* Ignores both the flag and SIGTERM: only SIGKILL ends it. */
static int t_deaf(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  signal(SIGTERM, SIG_IGN);
  for (;;)
    pause();
  return 0;
}

/* Neither polls nor handles SIGTERM: the signal's default ends it. */
static int t_hangs(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  for (;;)
    pause();
  return 0;
}

static volatile sig_atomic_t got_term;

static void on_term(int sig)
{
  (void)sig;
  got_term = 1;
}

/* Catches SIGTERM to clean up, then puts things back and fails. */
static int t_catches(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  (void)o;
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigprocmask(SIG_BLOCK, &term, &old);
  struct sigaction sa = {.sa_handler = on_term}, prev;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, &prev);
  got_term = 0;
  sigset_t wait = old;
  sigdelset(&wait, SIGTERM);
  while (!got_term)
    sigsuspend(&wait);
  sigaction(SIGTERM, &prev, NULL);
  sigprocmask(SIG_SETMASK, &old, NULL);
  return fp_call_fail(c, "CleanedUp", "caught SIGTERM in %d", (int)getpid());
}

/* [its pid, fp_call_should_stop] */
static int t_pid_flag(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  return fp_pack(o, "[ii]", (int)getpid(), fp_call_should_stop(c));
}

/* Reads one byte from the FIFO at path: 0, or -1. */
static int gate_pass(const char *path)
{
  char b;
  int fd = open(path, O_RDONLY);
  int ok = fd >= 0 && read(fd, &b, 1) == 1;
  if (fd >= 0)
    close(fd);
  return ok ? 0 : -1;
}

/* [started, stopped]: says it polls, passes the FIFO started, polls until
 * asked to stop, passes the FIFO stopped (so the test acts inside the
 * grace), then fails as t_polls. */
static int t_polls_gate(fp_call *c, const msgpack_object *a,
                        msgpack_packer *o)
{
  (void)o;
  const char *p1, *p2;
  size_t n1, n2;
  char started[256], stopped[256];
  if (fp_unpack(a, "[ss]", &p1, &n1, &p2, &n2) != 0 ||
      n1 >= sizeof started || n2 >= sizeof stopped)
    return fp_call_fail(c, "TypeError", "takes two paths");
  memcpy(started, p1, n1);
  started[n1] = '\0';
  memcpy(stopped, p2, n2);
  stopped[n2] = '\0';
  (void)fp_call_should_stop(c); /* it polls: no SIGTERM for it */
  if (gate_pass(started) != 0)
    return fp_call_fail(c, "OSError", "gate %s", started);
  while (!fp_call_should_stop(c))
    nap_1ms();
  if (gate_pass(stopped) != 0)
    return fp_call_fail(c, "OSError", "gate %s", stopped);
  return fp_call_fail(c, "Stopped", "worker %d stopped", (int)getpid());
}

static const fp_task tasks[] = {
    {"polls", t_polls},   {"deaf", t_deaf},         {"hangs", t_hangs},
    {"catches", t_catches}, {"pid_flag", t_pid_flag},
    {"polls_gate", t_polls_gate}, {NULL, NULL}};

/* --- Helpers ------------------------------------------------------------ */

static fp_pool *pool_grace(unsigned workers, int grace_ms)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = workers;
  o.tasks = tasks;
  o.deadline_grace_ms = grace_ms;
  int rc = fpt_pool_create(&p, &o);
  ck_assert_msg(rc == 0, "fp_pool_create: %s", fp_strerror(rc));
  return p;
}

/* Submits task with no argument, the deadline and the grace. */
static fp_future *submit(fp_pool *p, const char *task, int deadline_ms,
                         int grace_ms)
{
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  fp_future *f;
  so.deadline_ms = deadline_ms;
  so.grace_ms = grace_ms;
  ck_assert_int_eq(fp_submit_ex(p, task, "\xc0", 1, &so, &f), 0);
  return f;
}

static fp_pool_stats stats(fp_pool *p)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  return st;
}

/* The pid the pool's only worker has now, from a task that also says
 * whether it was asked to stop (never: it has no deadline). */
static int worker_pid(fp_pool *p)
{
  fp_future *f = submit(p, "pid_flag", 0, FP_GRACE_POOL);
  const msgpack_object *r;
  int pid, flag;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), 0);
  ck_assert_int_eq(fp_unpack(r, "[ii]", &pid, &flag), 0);
  ck_assert_int_eq(flag, 0);
  fp_future_release(f);
  return pid;
}

static void expect_error(fp_future *f, int err, const char *text)
{
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), err);
  ck_assert_msg(strstr(fp_future_error(f), text) != NULL, "error '%s'",
                fp_future_error(f));
}

/* --- Tests -------------------------------------------------------------- */

/*
 * fp_submit(3): "at the deadline the task is asked to stop ... A task that
 * returns within the grace keeps its worker; its future fails with
 * FP_EDEADLINE and the task's own message."  A grace of an hour: only the
 * task's return can end it in time.  The next task on the same worker reads
 * the flag down.
 */
START_TEST(polling_task_stops_and_keeps_its_worker)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_grace(1, FP_GRACE_MAX_MS);
  int pid = worker_pid(p);
  fp_future *f = submit(p, "polls", 50, FP_GRACE_POOL);
  char text[80];
  snprintf(text, sizeof text, "Stopped: worker %d stopped, flag still 1",
           pid);
  expect_error(f, FP_EDEADLINE, text);
  ck_assert_int_eq(fp_future_state(f), FP_FAILED);
  fp_future_release(f);
  ck_assert_int_eq(worker_pid(p), pid); /* kept, and its flag is down */
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.deadline_kills, 0);
  ck_assert_uint_eq(st.worker_deaths, 0);
  ck_assert_uint_eq(st.worker_restarts, 0);
  ck_assert_uint_eq(st.failed, 1);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* The per-submit grace wins over the pool's (0: none). */
START_TEST(submit_grace_overrides_the_pool)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_grace(1, 0);
  int pid = worker_pid(p);
  fp_future *f = submit(p, "polls", 50, FP_GRACE_MAX_MS);
  expect_error(f, FP_EDEADLINE, "Stopped: worker");
  fp_future_release(f);
  ck_assert_int_eq(worker_pid(p), pid);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_submit(3): "A task that ignores both is killed once the grace is
 * over." */
START_TEST(deaf_task_is_killed_after_the_grace)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_grace(1, 0);
  int pid = worker_pid(p);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  fp_future *f = submit(p, "deaf", 50, 100);
  expect_error(f, FP_EDEADLINE, "deadline of 50 ms");
  clock_gettime(CLOCK_MONOTONIC, &t1);
  /* Not sooner than deadline and grace (a bound no load can break). */
  ck_assert_int_ge((t1.tv_sec - t0.tv_sec) * 1000 +
                       (t1.tv_nsec - t0.tv_nsec) / 1000000, 150);
  ck_assert_ptr_nonnull(strstr(fp_future_error(f), "grace of 100 ms"));
  ck_assert_int_eq(fpt_process_gone(pid), 1);
  fp_future_release(f);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.deadline_kills, 1);
  ck_assert_uint_eq(st.worker_deaths, 0); /* a kill we asked for */
  ck_assert_int_ne(worker_pid(p), pid);   /* replaced, and it works */
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_submit(3): a task that neither polls nor catches SIGTERM ends at the
 * signal's default, long before its grace is over. */
START_TEST(task_without_a_handler_ends_at_sigterm)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_grace(1, FP_GRACE_MAX_MS);
  int pid = worker_pid(p);
  fp_future *f = submit(p, "hangs", 50, FP_GRACE_POOL);
  expect_error(f, FP_EDEADLINE, "deadline of 50 ms");
  fp_future_release(f);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.deadline_kills, 1);
  ck_assert_uint_eq(st.worker_deaths, 0);
  ck_assert_int_ne(worker_pid(p), pid);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_submit(3): a task may catch SIGTERM to clean up, and return. */
START_TEST(sigterm_catching_task_cleans_up)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_grace(1, FP_GRACE_MAX_MS);
  int pid = worker_pid(p);
  fp_future *f = submit(p, "catches", 50, FP_GRACE_POOL);
  char text[80];
  snprintf(text, sizeof text, "CleanedUp: caught SIGTERM in %d", pid);
  expect_error(f, FP_EDEADLINE, text);
  fp_future_release(f);
  ck_assert_int_eq(worker_pid(p), pid);
  ck_assert_uint_eq(stats(p).worker_restarts, 0);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Grace 0 is the deadline as it was: SIGKILL at once, even for a task that
 * would have stopped; the flag is never seen. */
START_TEST(grace_zero_kills_at_once)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_grace(1, FP_GRACE_MAX_MS);
  int pid = worker_pid(p);
  fp_future *f = submit(p, "polls", 50, 0);
  expect_error(f, FP_EDEADLINE, "task ran past its deadline of 50 ms");
  ck_assert_ptr_null(strstr(fp_future_error(f), "Stopped"));
  fp_future_release(f);
  ck_assert_uint_eq(stats(p).deadline_kills, 1);
  ck_assert_int_ne(worker_pid(p), pid);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_future_cancel(3): FP_CANCEL_RUNNING under a grace takes the same way:
 * the future ends FP_CANCELLED with the task's message, worker kept. */
START_TEST(cancel_running_asks_first)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_grace(1, FP_GRACE_MAX_MS);
  int pid = worker_pid(p);
  fp_future *f = submit(p, "polls", 0, FP_GRACE_POOL);
  while (fp_future_state(f) != FP_RUNNING)
    ck_assert_int_eq(fp_pool_dispatch(p, 10) >= 0, 1);
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
  expect_error(f, FP_ECANCELLED, "Stopped: "); /* started or not */
  ck_assert_int_eq(fp_future_state(f), FP_CANCELLED);
  fp_future_release(f);
  ck_assert_int_eq(worker_pid(p), pid);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.cancelled, 1);
  ck_assert_uint_eq(st.worker_restarts, 0);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_future_cancel(3) RETURN VALUES: 0 means cancelled.  A cancel that
 * comes while the task is already in its deadline's grace wins: the future
 * ends FP_ECANCELLED, not FP_EDEADLINE.  The task holds on a gate once it
 * has started (the test makes no library call meanwhile, so no deadline is
 * seen before), and on another once it has seen the stop, so the cancel
 * surely lands inside the grace. */
START_TEST(cancel_inside_a_deadline_grace_wins)
{
  fpt_snapshot s;
  char started[256], stopped[256];
  fpt_begin(&s);
  fpt_gate_make(started, sizeof started);
  fpt_gate_make(stopped, sizeof stopped);
  fp_pool *p = pool_grace(1, FP_GRACE_MAX_MS);
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = 1;
  fp_future *f;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  ck_assert_int_eq(fp_pack(&pk, "[ss]", started, stopped), 0);
  ck_assert_int_eq(fp_submit_ex(p, "polls_gate", sb.data, sb.size, &so, &f), 0);
  msgpack_sbuffer_destroy(&sb);
  int fd = open(started, O_WRONLY | O_CLOEXEC); /* until the task runs */
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, "x", 1), 1);
  close(fd);
  /* Passes read the deadline (long past) and ask the task to stop; it then
   * opens the second gate. */
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while ((fd = open(stopped, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    ck_assert_int_lt((t.tv_sec - t0.tv_sec) * 1000, FPT_LIMIT_MS);
    ck_assert_int_ge(fp_pool_dispatch(p, 2), 0);
  }
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(write(fd, "x", 1), 1);
  close(fd);
  expect_error(f, FP_ECANCELLED, "Stopped: ");
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_gate_remove(started);
  fpt_gate_remove(stopped);
  fpt_end(&s);
}
END_TEST

/* A grace below 0 (but FP_GRACE_POOL for a submit) or above
 * FP_GRACE_MAX_MS is FP_EINVAL, for the pool and for a submit. */
START_TEST(bad_grace_is_einval)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int bad[] = {-1, -2, INT32_MIN, FP_GRACE_MAX_MS + 1, INT32_MAX};
  fp_pool *p;
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    o.workers = 1;
    o.tasks = tasks;
    o.deadline_grace_ms = bad[k];
    ck_assert_int_eq(fpt_pool_create(&p, &o), FP_EINVAL);
  }
  p = pool_grace(1, FP_GRACE_MAX_MS);
  for (size_t k = 1; k < sizeof bad / sizeof bad[0]; k++) {
    fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
    fp_future *f = (fp_future *)&so;
    so.deadline_ms = 10;
    so.grace_ms = bad[k];
    ck_assert_int_eq(fp_submit_ex(p, "polls", "\xc0", 1, &so, &f),
                     FP_EINVAL);
    ck_assert_ptr_null(f);
  }
  /* A caller built before grace_ms gets the pool's. */
  fp_submit_options old = FP_SUBMIT_OPTIONS_INIT;
  old.size = offsetof(fp_submit_options, grace_ms);
  old.deadline_ms = 50;
  old.grace_ms = -7; /* not read */
  fp_future *f;
  ck_assert_int_eq(fp_submit_ex(p, "polls", "\xc0", 1, &old, &f), 0);
  expect_error(f, FP_EDEADLINE, "Stopped: worker");
  fp_future_release(f);
  ck_assert_int_eq(fp_call_should_stop(NULL), 0);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("deadline");
  TCase *tc = fpt_tcase(s, "soft", 300);
  tcase_add_test(tc, polling_task_stops_and_keeps_its_worker);
  tcase_add_test(tc, submit_grace_overrides_the_pool);
  tcase_add_test(tc, deaf_task_is_killed_after_the_grace);
  tcase_add_test(tc, task_without_a_handler_ends_at_sigterm);
  tcase_add_test(tc, sigterm_catching_task_cleans_up);
  tcase_add_test(tc, grace_zero_kills_at_once);
  tcase_add_test(tc, cancel_running_asks_first);
  tcase_add_test(tc, cancel_inside_a_deadline_grace_wins);
  tcase_add_test(tc, bad_grace_is_einval);
  fpt_run_suite(s);
  return 0;
}

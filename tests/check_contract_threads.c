/* Promises of the man pages about stop requests in thread mode: the text
 * of a task stopped before it began (fp_future_cancel(3)), and terminate
 * and kill asking running tasks to stop (fp_call_should_stop(3)).  Both
 * failed against the library before it was fixed. */
#define _GNU_SOURCE
#include "fpt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- tasks ---- */

static atomic_int release_deaf; /* lets t_deaf return */
static atomic_int deaf_saw_stop;
static atomic_int deaf_running;
static atomic_int deaf_returned;
static atomic_int poll_returned;
static atomic_int poll_started;

static int t_sq(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t x;
  if (fp_unpack(a, "[I]", &x) != 0)
    return fp_call_fail(c, "TypeError", "[I]");
  return fp_pack(o, "I", x * x);
}

/* Never polls; returns 7 once the test releases it (or after the limit). */
static int t_deaf(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  atomic_store(&deaf_running, 1);
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  while (!atomic_load(&release_deaf) && fpt_now_ms() < end)
    usleep(1000);
  atomic_store(&deaf_saw_stop, fp_call_should_stop(c));
  atomic_store(&deaf_returned, 1);
  return fp_pack(o, "I", (int64_t)7);
}

/* Polls; on a stop, fails with its own text ([1]) or returns 5 ([0]). */
static int t_poll(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t how;
  if (fp_unpack(a, "[I]", &how) != 0)
    return fp_call_fail(c, "TypeError", "[I]");
  atomic_store(&poll_started, 1);
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  while (!fp_call_should_stop(c) && fpt_now_ms() < end)
    usleep(1000);
  atomic_store(&poll_returned, 1);
  if (how == 1)
    return fp_call_fail(c, "Stopped", "by request");
  return fp_pack(o, "I", (int64_t)5);
}

static fp_future *volatile self_future;
static atomic_int self_cancel_rc = 1, self_cancel0_rc = 1, self_stop = -1;

/* Inline: cancels its own future while it runs. */
static int t_self_cancel(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  atomic_store(&self_cancel0_rc, fp_future_cancel(self_future, 0));
  atomic_store(&self_cancel_rc, fp_future_cancel(self_future, FP_CANCEL_RUNNING));
  atomic_store(&self_stop, fp_call_should_stop(c));
  return fp_pack(o, "I", (int64_t)1);
}

static const fp_task tasks[] = {
    {"sq", t_sq},     {"deaf", t_deaf}, {"poll", t_poll},
    {"self_cancel", t_self_cancel},     {NULL, NULL}};

static __attribute__((unused)) void reset_deaf(void)
{
  atomic_store(&release_deaf, 0);
  atomic_store(&deaf_saw_stop, -1);
  atomic_store(&deaf_running, 0);
  atomic_store(&deaf_returned, 0);
}

static fp_pool *make(unsigned mode, unsigned workers, int grace)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p = NULL;
  o.workers = workers;
  o.tasks = tasks;
  o.mode = mode;
  o.deadline_grace_ms = grace;
  int rc = fpt_pool_create_as(&p, &o);
  ck_assert_msg(rc == 0, "fp_pool_create: %s", fp_strerror(rc));
  return p;
}

static __attribute__((unused)) void wait_until(atomic_int *v, int want)
{
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  while (atomic_load(v) != want && fpt_now_ms() < end)
    usleep(1000);
  ck_assert_int_eq(atomic_load(v), want);
}

/* fp_future_cancel(3): a task cancelled with a grace ends FP_CANCELLED
 * with "cancelled while running", its own "kind: message", or "Stopped:
 * task 'poll' was asked to stop before it started" when the request
 * reached its thread first; no other text.  The loop cancels at once after
 * submitting, many times, to land in each window. */
START_TEST(cancel_with_grace_before_start_has_a_text_of_its_own)
{
  fp_pool *p = make(FP_MODE_THREADS, 1, 10000);
  int odd = 0;
  char seen[256] = "";
  for (int k = 0; k < 2000 && !odd; k++) {
    fp_future *f;
    atomic_store(&poll_started, 0);
    ck_assert_int_eq(fp_submitf(p, "poll", &f, "[I]", (int64_t)1), 0);
    int rc = fp_future_cancel(f, FP_CANCEL_RUNNING);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(fp_future_wait(f, FPT_LIMIT_MS), 0);
    ck_assert_int_eq(fp_future_state(f), FP_CANCELLED);
    const char *e = fp_future_error(f);
    if (strcmp(e, "cancelled while running") != 0 &&
        strcmp(e, "cancelled") != 0 && strcmp(e, "Stopped: by request") != 0 &&
        strcmp(e, "Stopped: task 'poll' was asked to stop before it started") != 0) {
      odd = 1;
      snprintf(seen, sizeof seen, "%s (iteration %d)", e, k);
    }
    fp_future_release(f);
  }
  fpt_pool_destroy(p);
  ck_assert_msg(!odd, "cancelled future's text: %s", seen);
}
END_TEST

/* fp_call_should_stop(3), Threads: "every task is asked ... when the pool
 * is terminated or killed (fp_pool_terminate(3), fp_pool_kill(3))": the
 * running task sees the flag before the pool is destroyed.  (It did not
 * while terminate() reached only slots with a pid.)  The loop index picks
 * terminate (0) or kill (1). */
START_TEST(thread_terminate_and_kill_ask)
{
  int kill = _i;
  {
    fp_pool *p = make(FP_MODE_THREADS, 1, 0);
    atomic_store(&poll_returned, 0);
    atomic_store(&poll_started, 0);
    fp_future *f;
    ck_assert_int_eq(fp_submitf(p, "poll", &f, "[I]", (int64_t)0), 0);
    wait_until(&poll_started, 1);
    ck_assert_int_eq(kill ? fp_pool_kill(p) : fp_pool_terminate(p), 0);
    ck_assert_int_eq(fp_future_wait(f, FPT_LIMIT_MS), 0);
    ck_assert_int_eq(fp_future_state(f), FP_CANCELLED);
    /* The task polls: asked, it returns, before the pool is destroyed. */
    int64_t end = fpt_now_ms() + 20000; /* the task polls every ms */
    while (!atomic_load(&poll_returned) && fpt_now_ms() < end)
      fp_pool_dispatch(p, 10);
    ck_assert_msg(atomic_load(&poll_returned),
                  "%s: the running task was never asked to stop",
                  kill ? "fp_pool_kill" : "fp_pool_terminate");
    fpt_pool_destroy(p);
    fp_future_release(f);
  }
}
END_TEST

int main(void)
{
  Suite *s = suite_create("contract_threads");
  TCase *tc = fpt_tcase(s, "threads", 300);
  tcase_add_test(tc, cancel_with_grace_before_start_has_a_text_of_its_own);
  tcase_add_loop_test(tc, thread_terminate_and_kill_ask, 0, 2);
  fpt_run_suite(s);
}

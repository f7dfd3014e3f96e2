/* Crash isolation: workers that die in every way, from inside and outside,
 * a crash loop, garbage on the pipe, a dead fork server, a dead parent. */
#define _GNU_SOURCE
#include "fpt.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The crashing task fails alone; everything around it still succeeds. */
static void crash_kind(const char *task, const char *expect)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 4);
  fp_future *f[21];
  for (int i = 0; i < 21; i++)
    ck_assert_int_eq(fp_submitf(p, i == 10 ? task : "square", &f[i], "[I]",
                                (int64_t)i), 0);
  for (int i = 0; i < 21; i++) {
    if (i == 10) {
      const msgpack_object *r;
      ck_assert_int_eq(fp_future_result(f[i], FPT_LIMIT_MS, &r), FP_EWORKER);
      ck_assert_int_eq(fp_future_state(f[i]), FP_FAILED);
      ck_assert_msg(strstr(fp_future_error(f[i]), expect) != NULL, "%s: %s",
                    task, fp_future_error(f[i]));
      ck_assert_ptr_nonnull(strstr(fp_future_error(f[i]), "worker "));
    } else {
      ck_assert_int_eq(fpt_i64(f[i]), i * i);
    }
    fp_future_release(f[i]);
  }
  /* The pool kept its size: two distinct live workers answer. */
  pid_t seen[2] = {0, 0};
  for (int tries = 0; seen[1] == 0; tries++) {
    ck_assert_int_lt(tries, 100000);
    fp_future *a;
    ck_assert_int_eq(fp_submitf(p, "pid", &a, "[]"), 0);
    pid_t pid = (pid_t)fpt_i64(a);
    fp_future_release(a);
    if (seen[0] == 0)
      seen[0] = pid;
    else if (pid != seen[0])
      seen[1] = pid;
  }
  ck_assert(!fpt_process_gone(seen[0]) && !fpt_process_gone(seen[1]));
  fpt_pool_destroy(p);
  fpt_end(&s);
}

START_TEST(segfault)
{
  crash_kind("segv", "killed by signal 11");
}
END_TEST

START_TEST(abort_)
{
  crash_kind("abort", "killed by signal 6");
}
END_TEST

START_TEST(exit_status)
{
  crash_kind("exit3", "exited with status 3");
}
END_TEST

START_TEST(sigkill_self)
{
  crash_kind("sigkill", "killed by signal 9");
}
END_TEST

START_TEST(killed_from_outside)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f, *g;
  ck_assert_int_eq(fp_submitf(p, "pid", &f, "[]"), 0);
  pid_t worker = (pid_t)fpt_i64(f);
  fp_future_release(f);
  ck_assert_int_eq(fp_submitf(p, "gate", &g, "[s]", gate), 0);
  ck_assert_int_eq(fp_submitf(p, "pid", &f, "[]"), 0);
  ck_assert_int_eq(fp_future_state(g), FP_RUNNING);
  ck_assert_int_eq(kill(worker, SIGKILL), 0); /* as the OOM killer would */
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(g, FPT_LIMIT_MS, &r), FP_EWORKER);
  ck_assert_ptr_nonnull(strstr(fp_future_error(g), "signal 9"));
  /* The task queued behind it ran on the replacement. */
  pid_t replacement = (pid_t)fpt_i64(f);
  ck_assert_int_ne(replacement, worker);
  ck_assert(fpt_process_gone(worker));
  fp_future_release(f);
  fp_future_release(g);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

START_TEST(crash_loop_breaks_the_pool)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 2;
  o.tasks = fpt_tasks;
  o.restart_limit = 3;
  o.restart_window_ms = 600000; /* any 4 restarts: never flaky on a slow box */
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  fp_future *f[12];
  for (int i = 0; i < 12; i++)
    ck_assert_int_eq(fp_submitf(p, "segv", &f[i], "[]"), 0);
  int worker = 0, broken = 0;
  for (int i = 0; i < 12; i++) {
    const msgpack_object *r;
    int rc = fp_future_result(f[i], FPT_LIMIT_MS, &r);
    ck_assert_msg(rc == FP_EWORKER || rc == FP_EBROKEN, "%s", fp_strerror(rc));
    if (rc == FP_EBROKEN) {
      ck_assert_ptr_nonnull(strstr(fp_future_error(f[i]), "crash loop"));
      broken++;
    } else {
      worker++;
    }
    fp_future_release(f[i]);
  }
  ck_assert_int_eq(worker, 4); /* the fourth restart is one too many */
  ck_assert_int_eq(broken, 8);
  fp_future *late = (fp_future *)&s;
  ck_assert_int_eq(fp_submitf(p, "square", &late, "[I]", (int64_t)1),
                   FP_EBROKEN);
  ck_assert_ptr_null(late);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(garbage_from_a_worker)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 2);
  fp_future *f[10];
  for (int i = 0; i < 10; i++)
    ck_assert_int_eq(fp_submitf(p, i == 3 ? "corrupt" : "square", &f[i],
                                "[I]", (int64_t)i), 0);
  for (int i = 0; i < 10; i++) {
    if (i == 3) {
      const msgpack_object *r;
      ck_assert_int_eq(fp_future_result(f[i], FPT_LIMIT_MS, &r), FP_EPROTO);
      ck_assert_ptr_nonnull(strstr(fp_future_error(f[i]), "protocol"));
    } else {
      ck_assert_int_eq(fpt_i64(f[i]), i * i);
    }
    fp_future_release(f[i]);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(fork_server_killed)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(2, 0);
  /* We are a subreaper, so the detached fork server is our only child. */
  pid_t fs = fpt_first_child();
  ck_assert_int_gt(fs, 0);
  fp_future *g, *q[5];
  ck_assert_int_eq(fp_submitf(p, "gate", &g, "[s]", gate), 0);
  for (int i = 0; i < 5; i++)
    ck_assert_int_eq(fp_submitf(p, "gate", &q[i], "[s]", gate), 0);
  ck_assert_int_eq(kill(fs, SIGKILL), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(g, FPT_LIMIT_MS, &r), FP_EBROKEN);
  ck_assert_ptr_nonnull(strstr(fp_future_error(g), "fork server"));
  for (int i = 0; i < 5; i++) {
    ck_assert_int_eq(fp_future_result(q[i], FPT_LIMIT_MS, &r), FP_EBROKEN);
    fp_future_release(q[i]);
  }
  fp_future *late;
  ck_assert_int_eq(fp_submitf(p, "square", &late, "[I]", (int64_t)1),
                   FP_EBROKEN);
  fp_future_release(g);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* Writing to a worker that died before the dispatcher noticed raises
 * SIGPIPE; with the default disposition it would kill this process. */
START_TEST(sigpipe_never_reaches_caller)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  signal(SIGPIPE, SIG_DFL);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 2);
  fp_future *f, *g, *late;
  ck_assert_int_eq(fp_submitf(p, "pid", &f, "[]"), 0);
  pid_t worker = (pid_t)fpt_i64(f);
  fp_future_release(f);
  ck_assert_int_eq(fp_submitf(p, "gate", &g, "[s]", gate), 0);
  ck_assert_int_eq(fp_future_state(g), FP_RUNNING);
  ck_assert_int_eq(kill(worker, SIGKILL), 0);
  for (int waited = 0; !fpt_process_gone(worker); waited++)
    ck_assert_int_lt(waited, 10000000); /* its pipes close as it exits */
  /* No library call ran since: this submit writes into the dead pipe. */
  ck_assert_int_eq(fp_submitf(p, "square", &late, "[I]", (int64_t)6), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(g, FPT_LIMIT_MS, &r), FP_EWORKER);
  ck_assert_int_eq(fpt_i64(late), 36);
  sigset_t pending;
  sigpending(&pending);
  ck_assert(!sigismember(&pending, SIGPIPE));
  fp_future_release(g);
  fp_future_release(late);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* A parent killed with SIGKILL leaves no fork server and no worker. */
START_TEST(parent_sigkilled_leaves_nothing)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int rep[2];
  ck_assert_int_eq(pipe(rep), 0);
  pid_t parent = fork();
  ck_assert_int_ge(parent, 0);
  if (parent == 0) {
    close(rep[0]);
    fp_pool *p = fpt_pool(2, 0);
    char gate[256];
    fpt_gate_make(gate, sizeof gate);
    fp_future *f[2];
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
      ck_assert_int_eq(fp_submitf(p, "pid", &f[i], "[]"), 0);
      pids[i] = (pid_t)fpt_i64(f[i]);
    }
    ck_assert_int_eq(fp_submitf(p, "gate", &f[0], "[s]", gate), 0);
    ck_assert_int_eq(fp_future_state(f[0]), FP_RUNNING);
    if (write(rep[1], pids, sizeof pids) != sizeof pids)
      _exit(1);
    for (;;)
      pause(); /* until SIGKILL */
  }
  close(rep[1]);
  pid_t pids[2];
  ck_assert_int_eq(read(rep[0], pids, sizeof pids), (ssize_t)sizeof pids);
  close(rep[0]);
  ck_assert(!fpt_process_gone(pids[0]));
  ck_assert_int_eq(kill(parent, SIGKILL), 0);
  int st;
  ck_assert_int_eq(waitpid(parent, &st, 0), parent);
  /* fpt_end waits until every descendant (fork server, workers) is gone. */
  fpt_end(&s);
  ck_assert(fpt_process_gone(pids[0]));
  ck_assert(fpt_process_gone(pids[1]));
}
END_TEST

int main(void)
{
  Suite *s = suite_create("crash");
  TCase *tc = fpt_tcase(s, "crash", 300);
  tcase_add_test(tc, segfault);
  tcase_add_test(tc, abort_);
  tcase_add_test(tc, exit_status);
  tcase_add_test(tc, sigkill_self);
  tcase_add_test(tc, killed_from_outside);
  tcase_add_test(tc, crash_loop_breaks_the_pool);
  tcase_add_test(tc, garbage_from_a_worker);
  tcase_add_test(tc, fork_server_killed);
  tcase_add_test(tc, parent_sigkilled_leaves_nothing);
  tcase_add_test(tc, sigpipe_never_reaches_caller);
  fpt_run_suite(s);
}

/* Crash isolation: workers that die in every way, from inside and outside,
 * a crash loop, garbage on the pipe, a dead fork server, a dead parent. */
#define _GNU_SOURCE
#include "fpt.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
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
  /* The pool kept its size: two distinct live workers answer.  Two tasks
   * at a time: an idle worker takes each, once the new one is ready. */
  pid_t seen[2] = {0, 0};
  for (int tries = 0; seen[1] == 0; tries++) {
    ck_assert_int_lt(tries, 100000);
    fp_future *a[2];
    for (int k = 0; k < 2; k++)
      ck_assert_int_eq(fp_submitf(p, "pid", &a[k], "[]"), 0);
    for (int k = 0; k < 2; k++) {
      pid_t pid = (pid_t)fpt_i64(a[k]);
      fp_future_release(a[k]);
      if (seen[0] == 0)
        seen[0] = pid;
      else if (pid != seen[0])
        seen[1] = pid;
    }
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

static int gate_started(const char *path);

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
  int started = gate_started(gate); /* g runs: the death is its own */
  ck_assert_int_eq(kill(worker, SIGKILL), 0); /* as the OOM killer would */
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(g, FPT_LIMIT_MS, &r), FP_EWORKER);
  close(started);
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
  /* A pool on one machine is one group: its crash loop breaks it, as it
   * always did, and retires nothing (hosts leave only an MPI pool). */
  fp_pool_status ps = FP_POOL_STATUS_INIT;
  ck_assert_int_eq(fp_pool_status_get(p, &ps), 0);
  ck_assert_int_eq(ps.state, FP_POOL_BROKEN);
  ck_assert_ptr_nonnull(strstr(ps.reason, "crash loop: more than 3 worker "
                               "deaths in a row with no task answered"));
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.hosts_retired, 0);
  ck_assert_uint_eq(st.workers_retired, 0);
  ck_assert_uint_eq(st.worker_deaths, 4);
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
  int started = gate_started(gate); /* g runs: its death is its own */
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
  close(started);
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

/* --- One kill fails one task: the one it names --------------------------- */

/*
 * Blocks until a gate task has opened the FIFO, and returns our end of it.
 * A worker writes each answer before it reads its next frame, so once the
 * gate task runs, the answers of the tasks before it wait in the result
 * pipe, unread until the next library call.
 */
static int gate_started(const char *path)
{
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  ck_assert_int_ge(fd, 0);
  return fd;
}

/* Lets the gate task finish; if its worker is gone, the byte has no reader
 * (EPIPE, not SIGPIPE) and the test's checks say what went wrong. */
static void gate_release(int fd)
{
  void (*old)(int) = signal(SIGPIPE, SIG_IGN);
  (void)!write(fd, "x", 1);
  signal(SIGPIPE, old);
  close(fd);
}

static int64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Lets the clock pass t (ms); no process is waited for. */
static void clock_past(int64_t t)
{
  while (mono_ms() <= t) {
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static pid_t worker_pid(fp_pool *p)
{
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "pid", &f, "[]"), 0);
  pid_t pid = (pid_t)fpt_i64(f);
  fp_future_release(f);
  return pid;
}

static fp_pool_stats stats(fp_pool *p)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  return st;
}

/*
 * fp_submit(3): the deadline "counts from when the task becomes the one its
 * worker runs, as the dispatcher sees it".  A answered within its deadline
 * and the caller made no call since: its deadline passes on the clock while
 * its answer waits in the pipe.  The answer is read first; B, behind it,
 * runs on.
 */
START_TEST(deadline_passed_with_the_answer_in_the_pipe)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 2);
  pid_t worker = worker_pid(p);
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = 20;
  fp_future *a, *b;
  ck_assert_int_eq(fp_submit_ex(p, "square", "\x91\x03", 2, &so, &a), 0);
  int64_t since = mono_ms(); /* A runs, for the dispatcher, from before */
  ck_assert_int_eq(fp_submitf(p, "gate", &b, "[s]", gate), 0);
  int w = gate_started(gate);
  clock_past(since + so.deadline_ms);
  ck_assert_int_eq(fpt_i64(a), 9); /* the first call since the submits */
  ck_assert_int_eq(fp_future_state(b), FP_RUNNING);
  gate_release(w);
  ck_assert_int_eq(fpt_i64(b), worker);
  fp_pool_stats st = stats(p);
  ck_assert_int_eq(st.deadline_kills, 0);
  ck_assert_int_eq(st.failed, 0);
  fp_future_release(a);
  fp_future_release(b);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/*
 * fp_future_cancel(3): the tasks behind a killed one "go back to the front
 * of the queue".  A has answered, unread, when it is cancelled: the answer
 * is read first, A finished, and no worker is killed; B, behind it, runs on.
 */
START_TEST(cancel_running_after_the_answer)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 2);
  pid_t worker = worker_pid(p);
  fp_future *a, *b;
  ck_assert_int_eq(fp_submitf(p, "square", &a, "[I]", (int64_t)3), 0);
  ck_assert_int_eq(fp_submitf(p, "gate", &b, "[s]", gate), 0);
  int w = gate_started(gate);
  int rc = fp_future_cancel(a, FP_CANCEL_RUNNING); /* the first call since */
  gate_release(w);
  ck_assert_int_eq(fpt_i64(b), worker);
  ck_assert_int_eq(rc, FP_EBUSY);
  ck_assert_int_eq(fpt_i64(a), 9);
  fp_pool_stats st = stats(p);
  ck_assert_int_eq(st.worker_restarts, 0);
  ck_assert_int_eq(st.failed + st.cancelled, 0);
  fp_future_release(a);
  fp_future_release(b);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* fp_future_cancel(3): a task cancelled with FP_CANCEL_RUNNING while it
 * waits in the worker's pipe is stopped when its turn comes.  It loops for
 * ever: before, it then held its worker for good and the next task never
 * ran. */
START_TEST(cancel_running_waiting_in_the_pipe)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 2);
  fp_future *a, *b, *c;
  ck_assert_int_eq(fp_submitf(p, "gate", &a, "[s]", gate), 0);
  ck_assert_int_eq(fp_submitf(p, "forever", &b, "[]"), 0);
  int w = gate_started(gate); /* a runs, b waits behind it in the pipe */
  ck_assert_int_eq(fp_future_state(b), FP_RUNNING);
  ck_assert_int_eq(fp_future_cancel(b, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_future_state(b), FP_CANCELLED);
  ck_assert_int_eq(fp_submitf(p, "square", &c, "[I]", (int64_t)5), 0);
  gate_release(w);
  ck_assert_int_gt(fpt_i64(a), 0);
  ck_assert_int_eq(fpt_i64(c), 25);
  fp_pool_stats st = stats(p);
  ck_assert_int_eq(st.worker_deaths, 0);
  ck_assert_int_eq(st.cancelled, 1);
  ck_assert_int_eq(st.failed, 0);
  fp_future_release(a);
  fp_future_release(b);
  fp_future_release(c);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* forkpool(7): a task whose worker dies before it starts the task goes back
 * to the queue.  The idle worker is killed from outside and the task
 * submitted before the pool can know: its frame lies unread in the dead
 * worker's pipe, so it runs on the replacement instead of failing
 * FP_EWORKER for a death that was not its own. */
START_TEST(task_sent_to_a_dead_idle_worker_runs_elsewhere)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  for (int round = 0; round < 5; round++) {
    pid_t worker = worker_pid(p);
    ck_assert_int_eq(kill(worker, SIGKILL), 0);
    for (int waited = 0; !fpt_process_gone(worker); waited++) {
      ck_assert_int_lt(waited, FPT_LIMIT_MS);
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    fp_future *f;
    ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)round), 0);
    ck_assert_int_eq(fpt_i64(f), round * round);
    fp_future_release(f);
  }
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.failed, 0);
  ck_assert_uint_eq(st.worker_deaths, 5);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Many cancels of running tasks, some of them just as they answer: every
 * future not cancelled finishes with its own result. */
START_TEST(cancel_running_storm)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 4);
  enum { N = 600 };
  fp_future *f[N];
  int cancelled[N];
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
    cancelled[i] = 0;
    if (i % 3 == 2) {
      int rc = fp_future_cancel(f[i - 1], FP_CANCEL_RUNNING);
      ck_assert_msg(rc == 0 || rc == FP_EBUSY, "%s", fp_strerror(rc));
      cancelled[i - 1] = rc == 0;
    }
  }
  for (int i = 0; i < N; i++) {
    if (cancelled[i])
      ck_assert_int_eq(fp_future_state(f[i]), FP_CANCELLED);
    else
      ck_assert_int_eq(fpt_i64(f[i]), (int64_t)i * i);
    fp_future_release(f[i]);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- The crash-loop rule: deaths without progress ------------------------ */

/* fpt_pool_create(3): restart_limit counts deaths with no task answered
 * between them.  One task in ten crashes, the rest succeed: no loop. */
START_TEST(crashes_among_successes_are_no_loop)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0); /* the default restart_limit */
  enum { N = 300 };
  fp_future *f[N];
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(fp_submitf(p, i % 10 == 9 ? "segv" : "square", &f[i],
                                "[I]", (int64_t)i), 0);
  for (int i = 0; i < N; i++) {
    if (i % 10 == 9) {
      const msgpack_object *r;
      int rc = fp_future_result(f[i], FPT_LIMIT_MS, &r);
      ck_assert_msg(rc == FP_EWORKER, "task %d: %s", i, fp_future_error(f[i]));
    } else {
      ck_assert_int_eq(fpt_i64(f[i]), (int64_t)i * i);
    }
    fp_future_release(f[i]);
  }
  ck_assert_int_eq(stats(p).worker_deaths, N / 10);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* However far apart the deaths, restart_limit + 1 of them in a row with
 * nothing answered break the pool. */
START_TEST(slow_crash_loop_breaks_the_pool)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 1;
  o.tasks = fpt_tasks;
  o.restart_limit = 3;
  o.restart_window_ms = 1; /* no longer a window: deaths are not timed */
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  int deaths = 0;
  for (;;) {
    fp_future *f;
    int rc = fp_submitf(p, "segv", &f, "[]");
    if (rc == FP_EBROKEN)
      break;
    ck_assert_int_eq(rc, 0);
    const msgpack_object *r;
    rc = fp_future_result(f, FPT_LIMIT_MS, &r);
    ck_assert_int_eq(rc, FP_EWORKER);
    fp_future_release(f);
    ck_assert_int_le(++deaths, 4);
    clock_past(mono_ms() + 2); /* the old rule's window is over */
  }
  ck_assert_int_eq(deaths, 4);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- Retries and shutdown ------------------------------------------------- */

typedef struct killer {
  fp_pool *pool;
  pid_t worker;
  int gate;              /* our end of the gate task's FIFO */
} killer;

/* Kills the worker once a shutdown has begun (submits are refused), then
 * opens the gate: a second run of the task would end, not hang. */
static void *kill_when_shut(void *arg)
{
  killer *k = arg;
  for (;;) {
    fp_future *f;
    int rc = fp_submitf(k->pool, "none", &f, "[]");
    if (rc == FP_ESHUTDOWN)
      break;
    ck_assert_int_eq(rc, 0);
    fp_future_release(f);
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  ck_assert_int_eq(kill(k->worker, SIGKILL), 0);
  for (int waited = 0; !fpt_process_gone(k->worker); waited++)
    ck_assert_int_lt(waited, 10000000); /* the killed one never reads it */
  ck_assert_int_eq(write(k->gate, "x", 1), 1);
  return NULL;
}

/* fp_submit(3): "When no retry is left, or during a shutdown, the future
 * fails with FP_EWORKER." */
START_TEST(no_retry_during_shutdown)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 0);
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.retries = 1;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  ck_assert_int_eq(fp_pack(&pk, "[s]", gate), 0);
  killer k = {p, worker_pid(p), -1};
  fp_future *g;
  ck_assert_int_eq(fp_submit_ex(p, "gate", sb.data, sb.size, &so, &g), 0);
  msgpack_sbuffer_destroy(&sb);
  k.gate = gate_started(gate);
  /* A reader of our own: the byte written later never meets EPIPE. */
  int keep = open(gate, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ck_assert_int_ge(keep, 0);
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, kill_when_shut, &k), 0);
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0);
  pthread_join(th, NULL);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(g, 0, &r), FP_EWORKER);
  ck_assert_ptr_nonnull(strstr(fp_future_error(g), "signal 9"));
  close(k.gate);
  close(keep);
  fp_future_release(g);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
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
  tcase_add_test(tc, deadline_passed_with_the_answer_in_the_pipe);
  tcase_add_test(tc, cancel_running_after_the_answer);
  tcase_add_test(tc, cancel_running_storm);
  tcase_add_test(tc, cancel_running_waiting_in_the_pipe);
  tcase_add_test(tc, task_sent_to_a_dead_idle_worker_runs_elsewhere);
  tcase_add_test(tc, crashes_among_successes_are_no_loop);
  tcase_add_test(tc, slow_crash_loop_breaks_the_pool);
  tcase_add_test(tc, no_retry_during_shutdown);
  fpt_run_suite(s);
}

/* The rest of the executor API with real workers: deadlines, cancelling a
 * running task, init, recycling, retries, callbacks, terminate and kill,
 * stats that add up. */
#define _GNU_SOURCE
#include "fpt.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static fp_pool *pool_with(fp_pool_options *o, unsigned workers)
{
  fp_pool *p;
  o->workers = workers;
  o->tasks = fpt_tasks;
  int rc = fpt_pool_create(&p, o);
  ck_assert_msg(rc == 0, "fp_pool_create: %s", fp_strerror(rc));
  return p;
}

static fp_pool_stats stats(fp_pool *p)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  return st;
}

static void submit_opts(fp_pool *p, const char *task, int deadline,
                        unsigned retries, fp_future **f, const char *arg)
{
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = deadline;
  so.retries = retries;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  if (arg)
    ck_assert_int_eq(fp_pack(&pk, "[s]", arg), 0);
  else
    ck_assert_int_eq(fp_pack(&pk, "[]"), 0);
  ck_assert_int_eq(fp_submit_ex(p, task, sb.data, sb.size, &so, f), 0);
  msgpack_sbuffer_destroy(&sb);
}

START_TEST(deadline_kills_an_infinite_loop)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  fp_future *hung, *ok;
  submit_opts(p, "forever", 200, 0, &hung, NULL);
  ck_assert_int_eq(fp_submitf(p, "square", &ok, "[I]", (int64_t)4), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(hung, FPT_LIMIT_MS, &r), FP_EDEADLINE);
  ck_assert_ptr_nonnull(strstr(fp_future_error(hung), "deadline of 200 ms"));
  ck_assert_int_eq(fpt_i64(ok), 16);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.deadline_kills, 1);
  ck_assert_uint_eq(st.worker_deaths, 0); /* a kill we asked for */
  fp_future_release(hung);
  fp_future_release(ok);
  /* The pool kept its size and goes on. */
  fp_future *after;
  ck_assert_int_eq(fp_submitf(p, "square", &after, "[I]", (int64_t)5), 0);
  ck_assert_int_eq(fpt_i64(after), 25);
  fp_future_release(after);
  ck_assert_int_eq(fp_submit_ex(p, "square", "\x91\x01", 2,
                                &(fp_submit_options){sizeof(fp_submit_options),
                                                     -1, 0, FP_GRACE_POOL},
                                &after),
                   FP_EINVAL);
  ck_assert_int_eq(fp_submit_ex(p, "square", "\x91\x01", 2,
                                &(fp_submit_options){3, 0, 0, 0}, &after),
                   FP_EINVAL);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(cancel_a_running_task)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 2);
  fp_future *run, *behind;
  ck_assert_int_eq(fp_submitf(p, "forever", &run, "[]"), 0);
  ck_assert_int_eq(fp_submitf(p, "square", &behind, "[I]", (int64_t)3), 0);
  ck_assert_int_eq(fp_future_state(run), FP_RUNNING);
  ck_assert_int_eq(fp_future_cancel(run, 0), FP_EBUSY);
  ck_assert_int_eq(fp_future_cancel(run, 7), FP_EINVAL);
  ck_assert_int_eq(fp_future_cancel(run, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_future_state(run), FP_CANCELLED);
  /* The task queued behind it in the same worker runs on the replacement. */
  ck_assert_int_eq(fpt_i64(behind), 9);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.cancelled, 1);
  ck_assert_uint_eq(st.worker_restarts, 1);
  ck_assert_uint_eq(st.worker_deaths, 0);
  fp_future_release(run);
  fp_future_release(behind);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

static int init_ok(void **state, void *arg, fp_call *call)
{
  (void)call;
  /* Per worker: in a thread pool, init runs in each thread at once. */
  static _Thread_local int value;
  value = *(int *)arg;
  *state = &value;
  return 0;
}

static int init_fails(void **state, void *arg, fp_call *call)
{
  (void)state;
  (void)arg;
  return fp_call_fail(call, "OSError", "no table here");
}

static char logged[512];
static void keep_log(void *arg, int level, const char *msg)
{
  (void)arg;
  if (level == FP_LOG_ERROR)
    snprintf(logged, sizeof logged, "%s", msg);
}

START_TEST(initializer)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int value = 1234;
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.init = init_ok;
  o.init_arg = &value;
  fp_pool *p = pool_with(&o, 2);
  for (int i = 0; i < 4; i++) {
    fp_future *f;
    ck_assert_int_eq(fp_submitf(p, "state", &f, "[]"), 0);
    ck_assert_int_eq(fpt_i64(f), 1234);
    fp_future_release(f);
  }
  fpt_pool_destroy(p);

  /* An initializer that fails breaks the pool instead of restart-looping. */
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.workers = 2;
  o.tasks = fpt_tasks;
  o.init = init_fails;
  o.log = keep_log;
  fp_pool *q = (fp_pool *)&s;
  ck_assert_int_eq(fpt_pool_create(&q, &o), FP_EBROKEN);
  ck_assert_ptr_null(q);
  ck_assert_ptr_nonnull(strstr(logged, "initializer failed: OSError: no table"));
  /* The same text without a log function. */
  ck_assert_ptr_nonnull(strstr(fp_pool_create_error(),
                               "initializer failed: OSError: no table"));
  o.init = init_ok;
  o.init_arg = &value;
  ck_assert_int_eq(fpt_pool_create(&q, &o), 0);
  ck_assert_ptr_null(fp_pool_create_error());
  fpt_pool_destroy(q);
  fpt_end(&s);
}
END_TEST

/* Crashes its worker before it is ready: at once, or (arg a path) once
 * that path exists. */
__attribute__((no_sanitize("undefined")))
static int init_segv(void **state, void *arg, fp_call *call)
{
  (void)state;
  (void)call;
  if (arg == NULL || access(arg, F_OK) == 0)
    raise(SIGSEGV);
  return 0;
}

static int deaths;
static void count_deaths(void *arg, int level, const char *msg)
{
  (void)arg;
  (void)msg;
  if (level == FP_LOG_WARN && ++deaths > 50)
    _exit(2); /* create restarts crashing workers forever */
}

/* In a child: create with an init that crashes, and no restart limit. */
static int create_with_crashing_init(void)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 2;
  o.tasks = fpt_tasks;
  o.init = init_segv;
  o.restart_limit = 0;
  o.log = count_deaths;
  fp_pool *p;
  int rc = fpt_pool_create(&p, &o);
  const char *why = fp_pool_create_error();
  if (rc != FP_EBROKEN)
    return 3;
  if (why == NULL || strstr(why, "before it was ready") == NULL ||
      strstr(why, "initializer failed: worker") == NULL)
    return 4;
  return deaths <= 2 ? 0 : 5; /* no replacement was forked */
}

/* "A failing init breaks the pool": so does a worker that dies before it is
 * ready, at its first death and whatever the restart limit; create says why
 * without a log function. */
START_TEST(init_that_crashes_fails_create)
{
  fpt_snapshot s;
  fpt_begin(&s);
  pid_t c = fork();
  ck_assert_int_ge(c, 0);
  if (c == 0)
    _exit(create_with_crashing_init());
  int st;
  ck_assert_int_eq(waitpid(c, &st, 0), c);
  ck_assert(WIFEXITED(st));
  ck_assert_int_eq(WEXITSTATUS(st), 0);
  fpt_end(&s);
}
END_TEST

/* A replacement that dies in init breaks the pool too, instead of being
 * replaced forever. */
START_TEST(replacement_that_crashes_in_init_breaks)
{
  fpt_snapshot s;
  fpt_begin(&s);
  char marker[256];
  snprintf(marker, sizeof marker, "%s/fpt-init-marker-%d",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
  unlink(marker);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.init = init_segv;
  o.init_arg = marker;
  o.restart_limit = 0;
  fp_pool *p = pool_with(&o, 1);
  int fd = open(marker, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ck_assert_int_ge(fd, 0); /* from now on, init crashes */
  close(fd);
  fp_future *f;
  const msgpack_object *r;
  ck_assert_int_eq(fp_submitf(p, "segv", &f, "[]"), 0);
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EWORKER);
  fp_future_release(f);
  int rc = fp_submitf(p, "square", &f, "[I]", (int64_t)3);
  if (rc == 0) {
    ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EBROKEN);
    ck_assert_ptr_nonnull(strstr(fp_future_error(f), "before it was ready"));
    fp_future_release(f);
  } else {
    ck_assert_int_eq(rc, FP_EBROKEN);
  }
  fpt_pool_destroy(p);
  unlink(marker);
  fpt_end(&s);
}
END_TEST

/* --- Create returns once one worker is ready -------------------------------- */

/* Two files and a FIFO: the first worker whose init creates `first` is
 * ready at once; every later one writes its pid to `pidfile`, then waits
 * in init until the test opens `gate`, and then fails or not. */
typedef struct later_init {
  char first[256];
  char pidfile[256];
  char gate[256];
  int fail;
} later_init;

static void later_init_make(later_init *li, int fail)
{
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(li->first, sizeof li->first, "%s/fpt-first-%d", tmp, (int)getpid());
  snprintf(li->pidfile, sizeof li->pidfile, "%s/fpt-later-%d", tmp,
           (int)getpid());
  unlink(li->first);
  unlink(li->pidfile);
  fpt_gate_make(li->gate, sizeof li->gate);
  li->fail = fail;
}

static void later_init_remove(const later_init *li)
{
  unlink(li->first);
  unlink(li->pidfile);
  fpt_gate_remove(li->gate);
}

/* In init: blocks until the test opens the FIFO at path and closes it. */
static void hold_at(const char *path)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char c;
    while (read(fd, &c, 1) > 0)
      ;
    close(fd);
  }
}

static int init_first_at_once(void **state, void *arg, fp_call *call)
{
  const later_init *li = arg;
  (void)state;
  int fd = open(li->first, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    close(fd);
    return 0;
  }
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
  fd = open(li->pidfile, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    (void)!write(fd, buf, (size_t)n);
    close(fd);
  }
  hold_at(li->gate);
  return li->fail ? fp_call_fail(call, "OSError", "only one worker may start")
                  : 0;
}

static fp_pool *pool_later_init(later_init *li, unsigned workers)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = workers;
  o.tasks = fpt_tasks;
  o.init = init_first_at_once;
  o.init_arg = li;
  fp_pool *p;
  int rc = fpt_pool_create_early(&p, &o);
  ck_assert_msg(rc == 0, "fp_pool_create: %s", fp_strerror(rc));
  return p;
}

/* fp_pool_create(3): create returns once one worker is ready; tasks
 * submitted at once run on it, none waits for the other's init. */
START_TEST(create_returns_with_one_worker_ready)
{
  fpt_snapshot s;
  fpt_begin(&s);
  later_init li;
  later_init_make(&li, 0);
  fp_pool *p = pool_later_init(&li, 2);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats ws[2];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, ws, 2), 0);
  ck_assert_uint_eq(st.workers, 2);
  ck_assert_uint_eq(st.workers_live, 1);
  ck_assert_int_eq((ws[0].pid > 0) + (ws[1].pid > 0), 1);
  fp_future *f[20];
  for (int k = 0; k < 20; k++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[k], "[I]", (int64_t)k), 0);
  for (int k = 0; k < 20; k++) {
    ck_assert_int_eq(fpt_i64(f[k]), k * k);
    fp_future_release(f[k]);
  }
  ck_assert_uint_eq(stats(p).workers_live, 1); /* the other is in init */
  fpt_gate_open(li.gate);
  fpt_pool_wait_ready(p);
  ck_assert_uint_eq(stats(p).workers_live, 2);
  ck_assert_uint_eq(stats(p).worker_deaths, 0);
  fpt_pool_destroy(p);
  later_init_remove(&li);
  fpt_end(&s);
}
END_TEST

/* fp_pool_create(3): an init that fails in a worker that was not ready
 * when create returned breaks the pool, as a replacement's does. */
START_TEST(init_failing_after_create_breaks_the_pool)
{
  fpt_snapshot s;
  fpt_begin(&s);
  later_init li;
  later_init_make(&li, 1);
  fp_pool *p = pool_later_init(&li, 2);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)4), 0);
  ck_assert_int_eq(fpt_i64(f), 16);
  fp_future_release(f);
  fpt_gate_open(li.gate); /* the other init fails now */
  fp_pool_status ps = FP_POOL_STATUS_INIT;
  int64_t waited = 0;
  for (;;) {
    ck_assert_int_eq(fp_pool_status_get(p, &ps), 0);
    if (ps.state != FP_POOL_RUNNING)
      break;
    ck_assert_msg(waited < FPT_LIMIT_MS, "the pool did not break");
    (void)fp_pool_dispatch(p, 100); /* returns at the failure */
    waited += 100;
  }
  ck_assert_int_eq(ps.state, FP_POOL_BROKEN);
  ck_assert_int_eq(ps.err, FP_EBROKEN);
  ck_assert_ptr_nonnull(strstr(ps.reason, "worker initializer failed: "
                                          "OSError: only one worker may "
                                          "start"));
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)4),
                   FP_EBROKEN);
  fpt_pool_destroy(p);
  later_init_remove(&li);
  fpt_end(&s);
}
END_TEST

/* fp_pool_create(3): with no worker ready (the only one crashed), a task
 * is written to the replacement while it is in init, and runs once init
 * returns; its future says RUNNING before the replacement is ready. */
START_TEST(task_waits_in_the_pipe_of_the_only_worker_in_init)
{
  fpt_snapshot s;
  fpt_begin(&s);
  later_init li;
  later_init_make(&li, 0);
  fp_pool *p = pool_later_init(&li, 1);
  fp_future *f;
  const msgpack_object *r;
  ck_assert_int_eq(fp_submitf(p, "segv", &f, "[]"), 0);
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EWORKER);
  fp_future_release(f);
  /* The replacement is held in init at the gate. */
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)7), 0);
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  while (fp_future_state(f) == FP_PENDING) {
    ck_assert_msg(fpt_now_ms() < end, "the task was not handed out");
    (void)fp_pool_dispatch(p, 100);
  }
  ck_assert_int_eq(fp_future_state(f), FP_RUNNING);
  ck_assert_uint_eq(stats(p).workers_live, 0); /* still in init */
  fpt_gate_open(li.gate);
  ck_assert_int_eq(fpt_i64(f), 49);
  fp_future_release(f);
  ck_assert_uint_eq(stats(p).workers_live, 1);
  fpt_pool_destroy(p);
  later_init_remove(&li);
  fpt_end(&s);
}
END_TEST

/* Holds a worker in init at a gate once a marker file exists. */
typedef struct held_init {
  char marker[256];
  char started[300]; /* made by a worker held so, before the gate */
  char gate[256];
} held_init;

static int init_held_after_marker(void **state, void *arg, fp_call *call)
{
  const held_init *h = arg;
  (void)state;
  (void)call;
  if (access(h->marker, F_OK) != 0)
    return 0;
  int fd = open(h->started, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0)
    close(fd);
  hold_at(h->gate);
  return 0;
}

/* fp_pool_create(3): while a worker is ready, no task goes to a worker in
 * init, even when the ready one has no room: the task waits in the queue
 * and runs on the ready worker once it is free. */
START_TEST(no_task_waits_for_an_init_while_a_worker_is_ready)
{
  fpt_snapshot s;
  fpt_begin(&s);
  held_init h;
  char task_gate[256];
  snprintf(h.marker, sizeof h.marker, "%s/fpt-held-%d",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
  snprintf(h.started, sizeof h.started, "%s-started", h.marker);
  unlink(h.marker);
  unlink(h.started);
  fpt_gate_make(h.gate, sizeof h.gate);
  fpt_gate_make(task_gate, sizeof task_gate);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.init = init_held_after_marker;
  o.init_arg = &h;
  o.max_inflight = 1; /* a busy worker has no room */
  o.restart_limit = 0;
  fp_pool *p = pool_with(&o, 2);
  int fd = open(h.marker, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ck_assert_int_ge(fd, 0); /* from now on, a new worker is held in init */
  close(fd);
  fp_future *f, *run;
  const msgpack_object *r;
  /* One worker is busy; the other crashes, and its replacement is the
   * worker last given a task. */
  ck_assert_int_eq(fp_submitf(p, "gate", &run, "[s]", task_gate), 0);
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  while (fp_future_state(run) != FP_RUNNING) {
    ck_assert_msg(fpt_now_ms() < end, "the gate task did not start");
    (void)fp_pool_dispatch(p, 10);
  }
  ck_assert_int_eq(fp_submitf(p, "segv", &f, "[]"), 0);
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EWORKER);
  fp_future_release(f);
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)6), 0);
  /* Until the replacement is in init, and a few passes after that, in
   * which its pipes come in: the task stays in the queue. */
  int passes = 0;
  while (passes < 10) {
    (void)fp_pool_dispatch(p, 10);
    ck_assert_int_eq(fp_future_state(f), FP_PENDING);
    ck_assert_uint_eq(stats(p).workers_live, 1);
    passes += access(h.started, F_OK) == 0;
    ck_assert_msg(fpt_now_ms() < end, "no replacement");
  }
  ck_assert_int_eq(fp_future_state(run), FP_RUNNING);
  fpt_gate_open(task_gate); /* the ready worker is free: it runs the task */
  ck_assert_int_eq(fp_future_result(run, FPT_LIMIT_MS, &r), 0);
  fp_future_release(run);
  ck_assert_int_eq(fpt_i64(f), 36);
  fp_future_release(f);
  ck_assert_uint_eq(stats(p).workers_live, 1); /* the other is in init */
  fpt_gate_open(h.gate);
  fpt_pool_wait_ready(p);
  ck_assert_uint_eq(stats(p).workers_live, 2);
  fpt_pool_destroy(p);
  unlink(h.marker);
  unlink(h.started);
  fpt_gate_remove(h.gate);
  fpt_gate_remove(task_gate);
  fpt_end(&s);
}
END_TEST

/* Nothing is left once destroy returns, right after create: not the ready
 * worker, not one still in init (killed: it has run nothing), not the fork
 * server (our child here, as we are a subreaper). */
START_TEST(destroy_right_after_create_leaves_no_process)
{
  fpt_snapshot s;
  fpt_begin(&s);
  for (int k = 0; k < 5; k++) {
    fp_pool *p = fpt_pool(4, 0);
    fp_pool_stats st = FP_POOL_STATS_INIT;
    fp_worker_stats ws[4];
    ck_assert_int_eq(fp_pool_stats_get(p, &st, ws, 4), 0);
    fpt_pool_destroy(p);
    ck_assert_int_eq(fpt_count_children(), 0);
    for (int i = 0; i < 4; i++)
      ck_assert(ws[i].pid == 0 || (kill(ws[i].pid, 0) < 0 && errno == ESRCH));
  }
  for (int k = 0; k < 5; k++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    o.workers = 4;
    o.tasks = fpt_tasks;
    fp_pool *p;
    ck_assert_int_eq(fpt_pool_create_early(&p, &o), 0);
    fpt_pool_destroy(p);
    ck_assert_int_eq(fpt_count_children(), 0);
  }

  later_init li;
  later_init_make(&li, 0);
  fp_pool *p = pool_later_init(&li, 2);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats ws[2];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, ws, 2), 0);
  pid_t ready = ws[0].pid > 0 ? ws[0].pid : ws[1].pid;
  /* The other worker is in init once it holds the FIFO open. */
  int fd, waited = 0;
  while ((fd = open(li.gate, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
    ck_assert_int_eq(errno, ENXIO);
    ck_assert_msg(waited < FPT_LIMIT_MS, "the second init never ran");
    (void)fp_pool_dispatch(p, 2);
    waited += 2;
  }
  char buf[32] = "";
  FILE *pf = fopen(li.pidfile, "r");
  ck_assert_ptr_nonnull(pf);
  ck_assert_ptr_nonnull(fgets(buf, sizeof buf, pf));
  fclose(pf);
  pid_t starting = (pid_t)atoi(buf);
  ck_assert_int_gt(starting, 0);
  ck_assert_int_ne(starting, ready);
  fpt_pool_destroy(p);
  ck_assert_int_eq(fpt_count_children(), 0);
  ck_assert(kill(ready, 0) < 0 && errno == ESRCH);
  ck_assert(kill(starting, 0) < 0 && errno == ESRCH);
  close(fd);
  later_init_remove(&li);
  fpt_end(&s);
}
END_TEST

START_TEST(recycle_every_5_tasks)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.max_tasks_per_worker = 5;
  o.restart_limit = 3; /* recycling is not a crash loop */
  fp_pool *p = pool_with(&o, 2);
  fp_future *f[100];
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq(fp_submitf(p, "pid", &f[i], "[]"), 0);
  pid_t pids[100];
  for (int i = 0; i < 100; i++) {
    pids[i] = (pid_t)fpt_i64(f[i]);
    fp_future_release(f[i]);
  }
  /* No worker ran more than 5, so at least 20 different ones ran. */
  int distinct = 0;
  for (int i = 0; i < 100; i++) {
    int count = 0, first = 1;
    for (int j = 0; j < 100; j++) {
      count += pids[j] == pids[i];
      if (j < i && pids[j] == pids[i])
        first = 0;
    }
    ck_assert_int_le(count, 5);
    distinct += first;
  }
  ck_assert_int_ge(distinct, 20);
  fp_pool_stats st = stats(p);
  ck_assert_uint_ge(st.worker_recycles, 18);
  ck_assert_uint_eq(st.worker_deaths, 0);
  ck_assert_uint_eq(st.finished, 100);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(retries_after_a_crash)
{
  fpt_snapshot s;
  char mark[256];
  fpt_begin(&s);
  snprintf(mark, sizeof mark, "%s/fpt-once-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
           (int)getpid());
  unlink(mark);
  fp_pool *p = fpt_pool(2, 0);
  fp_future *f;
  submit_opts(p, "crash_once", 0, 1, &f, mark);
  ck_assert_int_eq(fpt_i64(f), 1);
  fp_future_release(f);
  unlink(mark);
  submit_opts(p, "crash_once", 0, 0, &f, mark); /* no retries: it fails */
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EWORKER);
  fp_future_release(f);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.worker_deaths, 2);
  ck_assert_uint_eq(st.finished, 1);
  ck_assert_uint_eq(st.failed, 1);
  unlink(mark);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

typedef struct chain {
  fp_pool *pool;
  int stop;
  int calls;
  int64_t last;
  fp_future *next;
} chain;

/* Runs in the dispatcher's thread: submits the next square. */
static void on_done(fp_future *f, void *arg)
{
  chain *c = arg;
  const msgpack_object *r;
  c->calls++;
  if (fp_future_result(f, 0, &r) != 0)
    return;
  c->last = r->via.i64;
  if (c->last < 1000 && !c->stop) {
    ck_assert_int_eq(fp_submitf(c->pool, "square", &c->next, "[I]", c->last), 0);
    ck_assert_int_eq(fp_future_on_done(c->next, on_done, c), 0);
  }
}

START_TEST(callbacks_that_submit)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  chain c = {p, 0, 0, 0, NULL};
  fp_future *first;
  ck_assert_int_eq(fp_submitf(p, "square", &first, "[I]", (int64_t)2), 0);
  ck_assert_int_eq(fp_future_on_done(first, on_done, &c), 0);
  /* square(2) = 4 -> 16 -> 256 -> 65536: four futures, four callbacks,
   * the first three of which submit the next square. */
  fp_future *futures[4] = {first};
  for (int i = 1; i <= 4; i++) {
    for (int waited = 0; c.calls < i; waited++) {
      ck_assert_int_lt(waited, 1000000);
      ck_assert_int_ge(fp_pool_dispatch(p, 100), 0);
    }
    if (i < 4)
      futures[i] = c.next;
  }
  ck_assert_int_eq(c.calls, 4);
  ck_assert_int_eq(c.last, 65536);
  ck_assert_int_eq(fpt_i64(futures[3]), 65536);
  /* On a future already done: right away, in this thread. */
  int before = c.calls;
  c.stop = 1;
  ck_assert_int_eq(fp_future_on_done(first, on_done, &c), 0);
  ck_assert_int_eq(c.calls, before + 1);
  ck_assert_int_eq(fp_future_on_done(first, NULL, &c), FP_EINVAL);
  for (int i = 0; i < 4; i++)
    fp_future_release(futures[i]);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- A storm of callbacks that submit --------------------------------------- */

/*
 * Each callback releases its future and submits two more, until want were
 * submitted: the pattern of fp_future_on_done(3).  All run in one thread.
 */
typedef struct storm {
  fp_pool *pool;
  unsigned want, submitted, done, finished;
} storm;

static void storm_submit(storm *st);

static void storm_done(fp_future *f, void *arg)
{
  storm *st = arg;
  const msgpack_object *r;
  st->done++;
  st->finished += fp_future_result(f, 0, &r) == 0;
  fp_future_release(f);
  storm_submit(st);
  storm_submit(st);
}

static void storm_submit(storm *st)
{
  fp_future *f;
  if (st->submitted == st->want)
    return;
  st->submitted++;
  ck_assert_int_eq(fp_submitf(st->pool, "sq", &f, "I",
                              (int64_t)(st->submitted % 1000)), 0);
  ck_assert_int_eq(fp_future_on_done(f, storm_done, st), 0);
}

static void *storm_run(void *arg)
{
  storm *st = arg;
  unsigned seen = 0;
  int64_t idle_since = 0;
  storm_submit(st);
  while (st->done < st->want) {
    struct timespec ts;
    ck_assert_int_ge(fp_pool_dispatch(st->pool, 1000), 0);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (st->done != seen || idle_since == 0)
      idle_since = now, seen = st->done;
    ck_assert_msg(now - idle_since < FPT_LIMIT_MS, "the storm stalled at %u",
                  st->done);
  }
  return NULL;
}

/* Callbacks do not nest: stack use does not grow with the tasks.  The
 * storm runs on a 256 KiB stack, which the recursion used to overflow
 * after about a thousand tasks. */
START_TEST(callback_storm_on_a_small_stack)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  storm st = {p, (unsigned)fpt_scaled(200000, 5000), 0, 0, 0};
  pthread_attr_t a;
  pthread_t th;
  ck_assert_int_eq(pthread_attr_init(&a), 0);
  ck_assert_int_eq(pthread_attr_setstacksize(&a, 256 << 10), 0);
  ck_assert_int_eq(pthread_create(&th, &a, storm_run, &st), 0);
  ck_assert_int_eq(pthread_join(th, NULL), 0);
  pthread_attr_destroy(&a);
  ck_assert_uint_eq(st.done, st.want);
  ck_assert_uint_eq(st.finished, st.want);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* A callback's on_done on a future already done is deferred, not nested:
 * it runs after the running callback returns, in the same thread. */
typedef struct nested {
  fp_future *done;       /* a future already done */
  int depth, max_depth, calls;
} nested;

static void nested_cb(fp_future *f, void *arg)
{
  nested *n = arg;
  (void)f;
  n->calls++;
  n->depth++;
  if (n->depth > n->max_depth)
    n->max_depth = n->depth;
  if (n->calls < 5)
    ck_assert_int_eq(fp_future_on_done(n->done, nested_cb, n), 0);
  n->depth--;
}

START_TEST(on_done_inside_a_callback_does_not_nest)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *d, *f;
  ck_assert_int_eq(fp_submitf(p, "square", &d, "[I]", (int64_t)3), 0);
  ck_assert_int_eq(fpt_i64(d), 9);
  nested n = {d, 0, 0, 0};
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)4), 0);
  ck_assert_int_eq(fp_future_on_done(f, nested_cb, &n), 0);
  ck_assert_int_eq(fpt_i64(f), 16);
  ck_assert_int_eq(n.calls, 5);
  ck_assert_int_eq(n.max_depth, 1);
  /* Outside a callback: at once, as before. */
  n.calls = 10;
  ck_assert_int_eq(fp_future_on_done(d, nested_cb, &n), 0);
  ck_assert_int_eq(n.calls, 11);
  fp_future_release(d);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- Results nested too deep --------------------------------------------------- */

START_TEST(result_nested_too_deep_says_so)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *ok, *deep;
  const msgpack_object *r;
  ck_assert_int_eq(fp_submitf(p, "nest", &ok, "[I]", (int64_t)32), 0);
  ck_assert_int_eq(fp_submitf(p, "nest", &deep, "[I]", (int64_t)33), 0);
  ck_assert_int_eq(fp_future_result(ok, FPT_LIMIT_MS, &r), 0);
  for (int depth = 1; depth < 32; depth++) {
    ck_assert_int_eq(r->type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(r->via.array.size, 1);
    r = &r->via.array.ptr[0];
  }
  ck_assert_int_eq(r->type, MSGPACK_OBJECT_ARRAY);
  ck_assert_uint_eq(r->via.array.size, 0);
  ck_assert_int_eq(fp_future_result(deep, FPT_LIMIT_MS, &r), FP_ETASK);
  ck_assert_msg(strstr(fp_future_error(deep), "ResultError: ") ==
                    fp_future_error(deep) &&
                strstr(fp_future_error(deep), "nested deeper than 32"),
                "error: %s", fp_future_error(deep));
  fp_future_release(ok);
  fp_future_release(deep);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

static void stop_all(int use_kill)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(2, 1);
  fp_future *run[2], *queued[3];
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(fp_submitf(p, "gate", &run[i], "[s]", gate), 0);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &queued[i], "[I]", (int64_t)i), 0);
  ck_assert_int_eq(fp_future_state(run[0]), FP_RUNNING);
  ck_assert_int_eq(use_kill ? fp_pool_kill(p) : fp_pool_terminate(p), 0);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(fp_future_state(run[i]), FP_CANCELLED);
    fp_future_release(run[i]);
  }
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(fp_future_state(queued[i]), FP_CANCELLED);
    fp_future_release(queued[i]);
  }
  fp_future *late;
  ck_assert_int_eq(fp_submitf(p, "square", &late, "[I]", (int64_t)1),
                   FP_ESHUTDOWN);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.cancelled, 5);
  ck_assert_uint_eq(st.submitted, 5);
  fpt_pool_destroy(p); /* returns: the workers are gone, not waited on */
  fpt_gate_remove(gate);
  fpt_end(&s);
}

START_TEST(terminate_)
{
  stop_all(0);
}
END_TEST

START_TEST(kill_)
{
  stop_all(1);
  ck_assert_int_eq(fp_pool_kill(NULL), FP_EINVAL);
  ck_assert_int_eq(fp_pool_terminate(NULL), FP_EINVAL);
}
END_TEST

/* Waits until pid is stopped. */
static void wait_stopped(pid_t pid)
{
  for (int waited = 0;; waited++) {
    char path[64], buf[512] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    if (rp != NULL && rp[2] == 'T')
      return;
    ck_assert_int_lt(waited, FPT_LIMIT_MS);
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

/*
 * An idle worker stopped with SIGSTOP (by a task's child, say) neither reads
 * its end of file nor acts on SIGTERM: fp_pool_destroy, after
 * fp_pool_terminate or not, continues it and kills what is left after a
 * grace.  trap: the worker's SIGTERM handler never returns.
 */
static void stopped_idle_worker(int terminate, int trap)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, trap ? "trap_term" : "pid", &f, "[]"), 0);
  pid_t w = (pid_t)fpt_i64(f);
  fp_future_release(f);
  ck_assert_int_eq(kill(w, SIGSTOP), 0);
  wait_stopped(w);
  alarm(FPT_LIMIT_MS / 1000); /* before the fix: destroy never returned */
  if (terminate)
    ck_assert_int_eq(fp_pool_terminate(p), 0);
  fpt_pool_destroy(p);
  alarm(0);
  ck_assert(fpt_process_gone(w));
  fpt_end(&s);
}

START_TEST(destroy_continues_a_stopped_worker)
{
  stopped_idle_worker(0, 0);
}
END_TEST

START_TEST(terminate_continues_a_stopped_worker)
{
  stopped_idle_worker(1, 0);
}
END_TEST

START_TEST(terminate_escalates_to_sigkill)
{
  stopped_idle_worker(1, 1);
}
END_TEST

START_TEST(stats_add_up)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.restart_limit = 0; /* crashes on purpose: never break */
  fp_pool *p = pool_with(&o, 2);
  enum { N = 400 };
  fp_future *f[N];
  const char *kinds[] = {"square", "fail", "segv", "square", "none"};
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(fp_submitf(p, kinds[i % 5], &f[i], "[I]", (int64_t)i), 0);
  int cancelled = 0;
  for (int i = N - 1; i >= N - 50; i--)
    cancelled += fp_future_cancel(f[i], 0) == 0;
  int fin = 0, failed = 0, canc = 0;
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(fp_future_wait(f[i], FPT_LIMIT_MS), 0);
    fp_state st = fp_future_state(f[i]);
    fin += st == FP_FINISHED;
    failed += st == FP_FAILED;
    canc += st == FP_CANCELLED;
    fp_future_release(f[i]);
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats ws[2];
  /* The last replacement may still be starting: let the dispatcher run. */
  for (int waited = 0;; waited++) {
    ck_assert_int_eq(fp_pool_stats_get(p, &st, ws, 2), 0);
    if (st.workers_live == 2)
      break;
    ck_assert_int_lt(waited, 100000);
    ck_assert_int_ge(fp_pool_dispatch(p, 10), 0);
  }
  ck_assert_uint_eq(st.submitted, N);
  ck_assert_uint_eq(st.queued + st.running, 0);
  ck_assert_uint_eq(st.finished, (uint64_t)fin);
  ck_assert_uint_eq(st.failed, (uint64_t)failed);
  ck_assert_uint_eq(st.cancelled, (uint64_t)canc);
  ck_assert_int_eq(canc, cancelled);
  ck_assert_uint_eq(st.finished + st.failed + st.cancelled, N);
  ck_assert_uint_eq(st.worker_deaths, st.worker_restarts);
  ck_assert_uint_gt(st.worker_deaths, 0);
  ck_assert_uint_eq(st.workers, 2);
  ck_assert_uint_eq(st.workers_live, 2);
  ck_assert_int_gt(ws[0].pid, 0);
  ck_assert_int_gt(ws[1].pid, 0);
  /* Bad input. */
  st.size = 3;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), FP_EINVAL);
  st.size = sizeof st;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 5), FP_EINVAL);
  ck_assert_int_eq(fp_pool_stats_get(NULL, &st, NULL, 0), FP_EINVAL);
  ck_assert_int_eq(fp_pool_stats_get(p, NULL, NULL, 0), FP_EINVAL);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- The fixture itself ---------------------------------------------------- */

static char left_gate[256];

/* Fails with a pool, a map and a gated task still alive: what a failed
 * assertion leaves when CK_FORK=no skips the rest of the test. */
START_TEST(fails_holding_everything)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  fp_future *f;
  fpt_gate_make(left_gate, sizeof left_gate);
  ck_assert_int_eq(fp_submitf(p, "gate", &f, "[s]", left_gate), 0);
  static const char items[] = {(char)0x93, 1, 2, 3};
  fp_map_input in = {.array = items, .len = sizeof items};
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq", &in, NULL, &m), 0);
  fp_future_release(f);
  ck_abort_msg("failing on purpose");
}
END_TEST

/* Runs after it in the same process: must see no child and no descriptor. */
START_TEST(runs_clean_after_it)
{
  fpt_snapshot s;
  fpt_begin(&s);
  ck_assert_int_eq(fpt_count_children(), 0);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)3), 0);
  ck_assert_int_eq(fpt_i64(f), 9);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* With CK_FORK=no a failed test must not leave its pool, map, gate or
 * processes to the tests after it: one failure stays one failure.  Runs
 * the pair above in a child, without Check's fork, and expects exactly one
 * failure. */
START_TEST(failed_test_leaves_nothing_behind)
{
  fpt_snapshot s;
  fpt_begin(&s);
  pid_t child = fork();
  ck_assert_int_ge(child, 0);
  if (child == 0) {
    /* The caller's selection is for the outer run, not this one. */
    unsetenv("CK_RUN_SUITE");
    unsetenv("CK_RUN_CASE");
    unsetenv("CK_FORK");
    Suite *inner = suite_create("inner");
    TCase *tc = fpt_tcase(inner, "inner", 300);
    tcase_add_test(tc, fails_holding_everything);
    tcase_add_test(tc, runs_clean_after_it);
    SRunner *sr = srunner_create(inner);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_SILENT);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    struct stat st;
    _exit(failed == 1 && stat(left_gate, &st) != 0 ? 0 : 10 + failed);
  }
  int st;
  ck_assert_int_eq(waitpid(child, &st, 0), child);
  ck_assert(WIFEXITED(st));
  ck_assert_msg(WEXITSTATUS(st) == 0, "inner run: status %d", WEXITSTATUS(st));
  fpt_end(&s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("api");
  TCase *tc = fpt_tcase(s, "api", 300);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a deadline kills a task that never returns", tc,
                  deadline_kills_an_infinite_loop);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a cancel kills a task that never returns", tc,
                  cancel_a_running_task);
  tcase_add_test(tc, initializer);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "max_tasks_per_worker replaces worker processes", tc,
                  recycle_every_5_tasks);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  retries_after_a_crash);
  tcase_add_test(tc, callbacks_that_submit);
  tcase_add_test(tc, callback_storm_on_a_small_stack);
  tcase_add_test(tc, on_done_inside_a_callback_does_not_nest);
  tcase_add_test(tc, result_nested_too_deep_says_so);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "terminate ends workers held at a gate", tc,
                  terminate_);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "kill ends workers held at a gate", tc,
                  kill_);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  stats_add_up);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "the teardown kills a worker held at a gate", tc,
                  failed_test_leaves_nothing_behind);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  init_that_crashes_fails_create);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  replacement_that_crashes_in_init_breaks);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "SIGSTOP on a worker process", tc,
                  destroy_continues_a_stopped_worker);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "SIGSTOP on a worker process", tc,
                  terminate_continues_a_stopped_worker);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "signals to worker processes", tc,
                  terminate_escalates_to_sigkill);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "workers held in init in worker processes", tc,
                  create_returns_with_one_worker_ready);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a worker process's init fails", tc,
                  init_failing_after_create_breaks_the_pool);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  task_waits_in_the_pipe_of_the_only_worker_in_init);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  no_task_waits_for_an_init_while_a_worker_is_ready);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "worker processes left behind", tc,
                  destroy_right_after_create_leaves_no_process);
  fpt_run_suite(s);
}

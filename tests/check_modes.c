/* The same calls in each pool mode (processes, threads, inline): results,
 * maps, callbacks, task errors, counters and fp_wait, and what each mode
 * cannot do, refused at the call.  Each test runs once per mode; its test
 * case is named after the mode, so CI can run "threads" under TSan. */
#define _GNU_SOURCE
#include "fpt.h"

#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const unsigned modes[] = {FP_MODE_PROCESSES, FP_MODE_THREADS,
                                 FP_MODE_INLINE};

static fp_pool *pool_in(unsigned mode, unsigned workers)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = workers;
  o.tasks = fpt_tasks;
  o.mode = mode;
  int rc = fpt_pool_create_as(&p, &o);
  ck_assert_msg(rc == 0, "fp_pool_create: %s", fp_strerror(rc));
  return p;
}

static fp_future *submit(fp_pool *p, const char *task, int64_t x)
{
  fp_future *f;
  int rc = fp_submitf(p, task, &f, "[I]", x);
  ck_assert_msg(rc == 0, "submit %s: %s", task, fp_strerror(rc));
  return f;
}

START_TEST(submit_and_result)
{
  fpt_snapshot s;
  fpt_begin(&s);
  unsigned mode = modes[_i];
  fp_pool *p = pool_in(mode, 2);
  fp_future *f[50];
  for (int k = 0; k < 50; k++)
    f[k] = submit(p, "square", k);
  for (int k = 0; k < 50; k++) {
    ck_assert_int_eq(fpt_i64(f[k]), (int64_t)k * k);
    fp_future_release(f[k]);
  }
  /* Where it ran: another process, or this one. */
  fp_future *w = submit(p, "pid", 0);
  int64_t pid = fpt_i64(w);
  fp_future_release(w);
  if (mode == FP_MODE_PROCESSES)
    ck_assert_int_ne(pid, getpid());
  else
    ck_assert_int_eq(pid, getpid());
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(task_errors)
{
  fpt_snapshot s;
  const msgpack_object *r;
  fpt_begin(&s);
  fp_pool *p = pool_in(modes[_i], 2);
  fp_future *fail = submit(p, "fail", 0), *none = submit(p, "none", 0),
            *two = submit(p, "two", 0), *ok = submit(p, "square", 4);
  ck_assert_int_eq(fp_future_result(fail, FPT_LIMIT_MS, &r), FP_ETASK);
  ck_assert_ptr_nonnull(strstr(fp_future_error(fail), ":"));
  ck_assert_int_eq(fp_future_result(none, FPT_LIMIT_MS, &r), FP_ETASK);
  ck_assert_int_eq(fp_future_result(two, FPT_LIMIT_MS, &r), FP_ETASK);
  ck_assert_int_eq(fpt_i64(ok), 16);
  fp_future *nf;
  ck_assert_int_eq(fp_submitf(p, "no_such_task", &nf, "[I]", 1), FP_ENOTASK);
  fp_future_release(fail);
  fp_future_release(none);
  fp_future_release(two);
  fp_future_release(ok);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

static void count_done(fp_future *f, void *arg)
{
  (void)f;
  atomic_fetch_add((atomic_int *)arg, 1);
}

START_TEST(callbacks_and_wait)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_in(modes[_i], 3);
  atomic_int n = 0;
  fp_future *f[20];
  size_t nd = 0;
  for (int k = 0; k < 20; k++) {
    f[k] = submit(p, "square", k);
    ck_assert_int_eq(fp_future_on_done(f[k], count_done, &n), 0);
  }
  ck_assert_int_eq(fp_wait(f, 20, FP_ALL_COMPLETED, FPT_LIMIT_MS, &nd), 0);
  ck_assert_uint_eq(nd, 20);
  /* Callbacks run in the thread that made the futures final, before its
   * wait returns. */
  ck_assert_int_eq(atomic_load(&n), 20);
  for (int k = 0; k < 20; k++)
    fp_future_release(f[k]);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(map_in_order)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_in(modes[_i], 2);
  size_t n = fpt_scaled(500, 50);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, n);
  for (size_t k = 0; k < n; k++) {
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int64(&pk, (int64_t)k);
  }
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq_or_fail", &in, NULL, &m), 0);
  fp_map_item it;
  size_t seen = 0, failed = 0;
  int rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
    ck_assert_uint_eq(it.index, seen);
    if (it.err != 0) {
      ck_assert_int_eq(it.err, FP_ETASK);
      failed++;
    } else {
      ck_assert_int_eq(it.result->via.i64, (int64_t)(seen * seen));
    }
    seen++;
  }
  ck_assert_int_eq(rc, 0);
  ck_assert_uint_eq(seen, n);
  ck_assert_uint_eq(failed, 2); /* items 3 and 7 */
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(stats_count_every_task)
{
  fpt_snapshot s;
  fpt_begin(&s);
  unsigned mode = modes[_i];
  fp_pool *p = pool_in(mode, 2);
  fp_future *f[10];
  for (int k = 0; k < 10; k++)
    f[k] = submit(p, k == 9 ? "fail" : "square", k);
  size_t nd;
  ck_assert_int_eq(fp_wait(f, 10, FP_ALL_COMPLETED, FPT_LIMIT_MS, &nd), 0);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats ws[2];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, ws, 2), 0);
  ck_assert_uint_eq(st.submitted, 10);
  ck_assert_uint_eq(st.finished, 9);
  ck_assert_uint_eq(st.failed, 1);
  ck_assert_uint_eq(st.queued + st.running, 0);
  unsigned want = mode == FP_MODE_INLINE ? 1 : 2;
  ck_assert_uint_eq(st.workers, want);
  ck_assert_uint_eq(st.workers_live, want);
  uint64_t tasks = 0;
  for (unsigned k = 0; k < want; k++) {
    tasks += ws[k].tasks;
    if (mode != FP_MODE_PROCESSES)
      ck_assert_int_eq(ws[k].pid, getpid());
    else
      ck_assert_int_ne(ws[k].pid, getpid());
  }
  ck_assert_uint_eq(tasks, 10);
  for (int k = 0; k < 10; k++)
    fp_future_release(f[k]);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* This thread's own CPU time, in ns. */
static int64_t thread_cpu_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* [ms]: spins until the thread that runs it has used ms of CPU time: as
 * much CPU on a loaded machine as on an idle one, however long it takes. */
static int t_spin_cpu(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t ms;
  if (fp_unpack(a, "[I]", &ms) != 0)
    return fp_call_fail(c, "TypeError", "takes one integer");
  for (int64_t end = thread_cpu_ns() + ms * 1000000; thread_cpu_ns() < end;)
    ;
  return msgpack_pack_int64(o, ms);
}

/* The user and system CPU time of the process that runs it so far, in us:
 * a worker's, or the caller's (every thread's) with threads or inline. */
static int t_process_cpu(fp_call *c, const msgpack_object *a,
                         msgpack_packer *o)
{
  (void)a;
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return fp_call_fail(c, "OSError", "getrusage");
  return msgpack_pack_int64(
      o, (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
             (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec);
}

static const fp_task cpu_tasks[] = {{"spin_cpu", t_spin_cpu},
                                    {"process_cpu", t_process_cpu},
                                    {NULL, NULL}};

/* fp_pool_stats_get(3): cpu_user_us and cpu_sys_us are the CPU time of the
 * pool's workers, processes or threads (0 inline), and once the caller
 * holds the result of a task that ran a millisecond or more they include
 * it.  A task that spins
 * for 200 ms of its thread's CPU shows in the total and in its worker's
 * entry (150 ms at least: a clock tick of slack each way), and neither
 * exceeds what the process it ran in has used (a bound on a worker
 * process's, or on all the caller's threads'), read by a task after. */
START_TEST(stats_count_the_workers_cpu_time)
{
  fpt_snapshot s;
  /* The page: 0 inline, and with threads where there is no
   * RUSAGE_THREAD. */
  int counted = modes[_i] != FP_MODE_INLINE;
#if !defined(RUSAGE_THREAD)
  counted = modes[_i] == FP_MODE_PROCESSES;
#endif
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 1;
  o.tasks = cpu_tasks;
  o.mode = modes[_i];
  int rc = fpt_pool_create_as(&p, &o);
  ck_assert_msg(rc == 0, "fp_pool_create: %s", fp_strerror(rc));
  fp_future *f = submit(p, "spin_cpu", 200);
  ck_assert_int_eq(fpt_i64(f), 200);
  fp_future_release(f);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats w[1];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, w, 1), 0);
  uint64_t total = st.cpu_user_us + st.cpu_sys_us;
  uint64_t mine = w[0].cpu_user_us + w[0].cpu_sys_us;
  ck_assert_int_ne(w[0].pid, 0);
  if (!counted) {
    ck_assert_uint_eq(total, 0);
    ck_assert_uint_eq(mine, 0);
  }
  ck_assert_uint_ge(total, counted ? 150000 : 0);
  ck_assert_uint_ge(mine, counted ? 150000 : 0);
  ck_assert_uint_le(mine, total); /* one worker */
  f = submit(p, "process_cpu", 0);
  int64_t process = fpt_i64(f);
  fp_future_release(f);
  ck_assert_msg(total <= (uint64_t)process,
                "the workers' %llu us, their process's %lld us",
                (unsigned long long)total, (long long)process);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* init runs once per worker: in each thread, once in the caller inline,
 * and not in this process with processes. */
static atomic_int inits;
static int init_count(void **state, void *arg, fp_call *call)
{
  (void)arg;
  (void)call;
  static int ids[64];
  int k = atomic_fetch_add(&inits, 1);
  ids[k % 64] = k + 100;
  *state = &ids[k % 64];
  return 0;
}

START_TEST(init_runs_per_worker)
{
  fpt_snapshot s;
  fpt_begin(&s);
  unsigned mode = modes[_i];
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 3;
  o.tasks = fpt_tasks;
  o.mode = mode;
  o.init = init_count;
  atomic_store(&inits, 0);
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), 0);
  int want = mode == FP_MODE_THREADS ? 3 : mode == FP_MODE_INLINE ? 1 : 0;
  ck_assert_int_eq(atomic_load(&inits), want);
  fp_future *f = submit(p, "state", 0);
  int64_t st = fpt_i64(f);
  ck_assert_int_ge(st, 100);
  ck_assert_int_lt(st, 103);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

static int init_fails(void **state, void *arg, fp_call *call)
{
  (void)state;
  (void)arg;
  return fp_call_fail(call, "SetupError", "no database");
}

START_TEST(init_failure_fails_create)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 2;
  o.tasks = fpt_tasks;
  o.mode = modes[_i];
  o.init = init_fails;
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), FP_EBROKEN);
  ck_assert_ptr_nonnull(strstr(fp_pool_create_error(),
                               "SetupError: no database"));
  fpt_end(&s);
}
END_TEST

/* fp_pool_fd and fp_pool_dispatch: an event loop drives every mode. */
START_TEST(event_loop_drives_tasks)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_in(modes[_i], 2);
  int fd = fp_pool_fd(p);
  ck_assert_int_ge(fd, 0);
  fp_future *f = submit(p, "square", 9);
  while (fp_future_wait(f, 0) != 0) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&pf, 1, FPT_LIMIT_MS), 1);
    ck_assert_int_ge(fp_pool_dispatch(p, 0), 0);
  }
  ck_assert_int_eq(fpt_i64(f), 81);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- What a mode cannot do ----------------------------------------------- */

START_TEST(bad_mode_is_einval)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.tasks = fpt_tasks;
  o.mode = 3;
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), FP_EINVAL);
  o.mode = (unsigned)-1;
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), FP_EINVAL);
}
END_TEST

START_TEST(limits_are_refused_at_the_call)
{
  fpt_snapshot s;
  fpt_begin(&s);
  unsigned mode = modes[_i];
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.tasks = fpt_tasks;
  o.mode = mode;
  o.max_tasks_per_worker = 5;
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), FP_ENOTSUP);
  o.max_tasks_per_worker = 0;
  o.pin_workers = 1;
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), FP_ENOTSUP);
  o.pin_workers = 0;
  o.worker_rlimit_cpu = 10;
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), FP_ENOTSUP);
  o.worker_rlimit_cpu = 0;
  o.worker_stdout = FP_STDOUT_NULL;
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), FP_ENOTSUP);

  p = pool_in(mode, 1);
  char one[] = {(char)0x91, 0x02}; /* [2] */
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = FPT_LIMIT_MS;
  fp_future *f = NULL;
  if (mode == FP_MODE_INLINE) {
    /* Nothing runs beside the caller's thread to watch the clock. */
    ck_assert_int_eq(fp_submit_ex(p, "square", one, sizeof one, &so, &f),
                     FP_ENOTSUP);
    ck_assert_ptr_null(f);
  } else {
    /* A thread is asked to stop at its deadline: accepted, and a task
     * that returns in time is not touched. */
    ck_assert_int_eq(fp_submit_ex(p, "square", one, sizeof one, &so, &f), 0);
    ck_assert_int_eq(fpt_i64(f), 4);
    fp_future_release(f);
  }
  char arr[] = {(char)0x91, (char)0x91, 0x02}; /* [[2]] */
  fp_map_input in = {.array = arr, .len = sizeof arr};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  mo.deadline_ms = 1000;
  fp_map_iter *m = NULL;
  /* A map's late item fails alone, which needs its worker killed. */
  ck_assert_int_eq(fpt_map(p, "square", &in, &mo, &m), FP_ENOTSUP);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Inline, nothing runs before a wait: FP_CANCEL_RUNNING takes back the
 * task about to run, as a queued one. */
START_TEST(inline_cancel_running_before_it_runs)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = pool_in(FP_MODE_INLINE, 1);
  /* The gate task would run in this thread: open it first. */
  int fd = open(gate, O_RDWR | O_NONBLOCK);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, "x", 1), 1);
  fp_future *g;
  ck_assert_int_eq(fp_submitf(p, "gate", &g, "[s]", gate), 0);
  fp_future *q = submit(p, "square", 3);
  /* No fp_future_state before the cancel: its pass would run the task. */
  ck_assert_int_eq(fp_future_cancel(g, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_future_cancel(q, 0), 0);
  ck_assert_int_eq(fp_future_state(g), FP_CANCELLED);
  close(fd);
  fp_future_release(g);
  fp_future_release(q);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* --- Stopping a thread's task: asked, never killed ------------------------ */

static void nap_1ms(void)
{
  struct timespec ts = {0, 1000 * 1000};
  nanosleep(&ts, NULL);
}

/* Polls until asked to stop, then fails with its own message. */
static int t_polls(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  (void)o;
  while (!fp_call_should_stop(c))
    nap_1ms();
  return fp_call_fail(c, "Stopped", "stopped, flag still %d",
                      fp_call_should_stop(c));
}

/* fp_call_should_stop as the task starts. */
static int t_flag(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  return msgpack_pack_int(o, fp_call_should_stop(c));
}

/* [path]: never polls; blocks until the test writes a byte into the FIFO,
 * then returns fp_call_should_stop. */
static int t_deaf_gate(fp_call *c, const msgpack_object *a,
                       msgpack_packer *o)
{
  const char *p;
  size_t n;
  char path[256], b;
  if (fp_unpack(a, "[s]", &p, &n) != 0 || n >= sizeof path)
    return fp_call_fail(c, "TypeError", "takes a path");
  memcpy(path, p, n);
  path[n] = '\0';
  int fd = open(path, O_RDONLY);
  if (fd < 0 || read(fd, &b, 1) != 1)
    return fp_call_fail(c, "OSError", "gate %s", path);
  close(fd);
  return msgpack_pack_int(o, fp_call_should_stop(c));
}

static int t_sq(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t x;
  if (fp_unpack(a, "[I]", &x) != 0)
    return fp_call_fail(c, "TypeError", "takes one integer");
  return msgpack_pack_int64(o, x * x);
}

static const fp_task stop_tasks[] = {{"polls", t_polls},
                                     {"flag", t_flag},
                                     {"deaf_gate", t_deaf_gate},
                                     {"square", t_sq},
                                     {NULL, NULL}};

static fp_pool *thread_pool(unsigned workers, unsigned inflight, int grace)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = workers;
  o.max_inflight = inflight;
  o.tasks = stop_tasks;
  o.mode = FP_MODE_THREADS;
  o.deadline_grace_ms = grace;
  int rc = fpt_pool_create_as(&p, &o);
  ck_assert_msg(rc == 0, "fp_pool_create: %s", fp_strerror(rc));
  return p;
}

static fp_future *submit_deadline(fp_pool *p, const char *task,
                                  const char *path, int deadline_ms,
                                  int grace_ms)
{
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  ck_assert_int_eq(fp_pack(&pk, "[s]", path ? path : ""), 0);
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = deadline_ms;
  so.grace_ms = grace_ms;
  fp_future *f;
  int rc = fp_submit_ex(p, task, sb.data, sb.size, &so, &f);
  msgpack_sbuffer_destroy(&sb);
  ck_assert_msg(rc == 0, "submit %s: %s", task, fp_strerror(rc));
  return f;
}

static void assert_thread_alive(fp_pool *p)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_future *f = submit(p, "flag", 0);
  ck_assert_int_eq(fpt_i64(f), 0); /* the flag is down for the next task */
  fp_future_release(f);
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.workers_live, st.workers);
  ck_assert_uint_eq(st.worker_deaths + st.worker_restarts, 0);
}

/* fp_call_should_stop(3): at its deadline a thread's task is asked; one
 * that polls returns within its grace, its future fails FP_EDEADLINE with
 * its own message, and the thread takes the next task. */
START_TEST(thread_deadline_asks_a_polling_task)
{
  fpt_snapshot s;
  const msgpack_object *r;
  fpt_begin(&s);
  fp_pool *p = thread_pool(1, 0, 0);
  fp_future *f = submit_deadline(p, "polls", NULL, 20, FPT_LIMIT_MS);
  ck_assert_int_eq(fp_future_result(f, 2 * FPT_LIMIT_MS, &r), FP_EDEADLINE);
  ck_assert_str_eq(fp_future_error(f), "Stopped: stopped, flag still 1");
  fp_future_release(f);
  assert_thread_alive(p);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* The same without a grace: the flag is raised all the same (no kill can
 * replace it), and the future fails at the deadline, not when the task
 * returns: a task that never polls cannot hold its waiter. */
START_TEST(thread_deadline_gives_up_a_deaf_task)
{
  fpt_snapshot s;
  const msgpack_object *r;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = thread_pool(1, 2, 0);
  fp_future *f = submit_deadline(p, "deaf_gate", gate, 20, 0);
  fp_future *q = submit(p, "square", 3);
  /* The gate is closed: the task still runs when its future fails. */
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EDEADLINE);
  ck_assert_ptr_nonnull(strstr(fp_future_error(f), "deadline of 20 ms"));
  /* The only thread is still in the gate: the task behind it waits. */
  ck_assert_int_ne(fp_future_state(q), FP_FINISHED);
  fpt_gate_open(gate);
  ck_assert_int_eq(fpt_i64(q), 9);
  /* The task's answer, when it came, was dropped. */
  ck_assert_int_eq(fp_future_state(f), FP_FAILED);
  ck_assert_int_eq(fp_future_result(f, 0, &r), FP_EDEADLINE);
  fp_future_release(f);
  fp_future_release(q);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.deadline_kills, 1);
  assert_thread_alive(p);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* With a grace, a task that does not poll is given up on when the grace is
 * over, while it still runs; the tasks handed to its thread behind it go
 * to another thread meanwhile. */
START_TEST(thread_grace_over_gives_up_and_moves_the_rest)
{
  fpt_snapshot s;
  const msgpack_object *r;
  char ga[256], gb[256];
  fpt_begin(&s);
  fpt_gate_make(ga, sizeof ga);
  fpt_gate_make(gb, sizeof gb);
  fp_pool *p = thread_pool(2, 4, 0);
  fp_future *a = submit_deadline(p, "deaf_gate", ga, 20, 50);
  fp_future *b = submit_deadline(p, "deaf_gate", gb, 0, 0);
  fp_future *q[6];
  for (int k = 0; k < 6; k++)
    q[k] = submit(p, "square", k);
  ck_assert_int_eq(fp_future_result(a, FPT_LIMIT_MS, &r), FP_EDEADLINE);
  ck_assert_ptr_nonnull(strstr(fp_future_error(a), "within its grace"));
  /* a's thread is still in its gate: b's thread runs every square. */
  fpt_gate_open(gb);
  for (int k = 0; k < 6; k++) {
    ck_assert_int_eq(fpt_i64(q[k]), k * k);
    fp_future_release(q[k]);
  }
  ck_assert_int_eq(fpt_i64(b), 0);
  fpt_gate_open(ga);
  fp_future_release(a);
  fp_future_release(b);
  assert_thread_alive(p);
  fpt_pool_destroy(p);
  fpt_gate_remove(ga);
  fpt_gate_remove(gb);
  fpt_end(&s);
}
END_TEST

/* fp_future_cancel(3) with FP_CANCEL_RUNNING in a thread: without a grace
 * the future is cancelled at once and the task, which does not poll, runs
 * on (it sees the flag when it looks); with one, a polling task is asked
 * and its future ends cancelled when it returns.  The thread lives on. */
START_TEST(thread_cancel_running_asks)
{
  fpt_snapshot s;
  const msgpack_object *r;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = thread_pool(1, 0, 0);
  fp_future *g;
  ck_assert_int_eq(fp_submitf(p, "deaf_gate", &g, "[s]", gate), 0);
  int fd = open(gate, O_WRONLY); /* returns once the task has opened it */
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(fp_future_cancel(g, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_future_state(g), FP_CANCELLED);
  ck_assert_int_eq(fp_future_result(g, 0, &r), FP_ECANCELLED);
  ck_assert_int_eq(write(fd, "x", 1), 1);
  close(fd);
  assert_thread_alive(p);
  fp_future_release(g);

  fp_future *f = submit_deadline(p, "polls", NULL, 0, FPT_LIMIT_MS);
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_future_result(f, 2 * FPT_LIMIT_MS, &r), FP_ECANCELLED);
  /* Asked before or after it started: "Stopped" either way. */
  ck_assert_ptr_nonnull(strstr(fp_future_error(f), "Stopped"));
  fp_future_release(f);
  assert_thread_alive(p);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* fp_pool_kill asks the tasks its threads run to stop: polling tasks do
 * not hold fp_pool_destroy. */
START_TEST(thread_kill_asks_running_tasks)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = thread_pool(2, 0, 0);
  fp_future *f = submit(p, "polls", 0), *g = submit(p, "polls", 0);
  ck_assert_int_eq(fp_pool_kill(p), 0);
  fpt_pool_destroy(p);
  ck_assert_int_eq(fp_future_state(f), FP_CANCELLED);
  ck_assert_int_eq(fp_future_state(g), FP_CANCELLED);
  fp_future_release(f);
  fp_future_release(g);
  fpt_end(&s);
}
END_TEST

/* Opens gate for writing: returns once a task has opened it to read, that
 * is, once that task runs.  The caller writes a byte to let it finish. */
static int gate_reached(const char *gate)
{
  int fd = open(gate, O_WRONLY);
  ck_assert_int_ge(fd, 0);
  return fd;
}

/* Two threads run two tasks at once: each is inside its gate together. */
START_TEST(threads_run_in_parallel)
{
  fpt_snapshot s;
  char ga[256], gb[256];
  fpt_begin(&s);
  fpt_gate_make(ga, sizeof ga);
  fpt_gate_make(gb, sizeof gb);
  fp_pool *p = pool_in(FP_MODE_THREADS, 2);
  fp_future *a, *b;
  ck_assert_int_eq(fp_submitf(p, "gate", &a, "[s]", ga), 0);
  ck_assert_int_eq(fp_submitf(p, "gate", &b, "[s]", gb), 0);
  int fa = gate_reached(ga), fb = gate_reached(gb);
  ck_assert_int_eq(write(fa, "x", 1), 1);
  ck_assert_int_eq(write(fb, "x", 1), 1);
  close(fa);
  close(fb);
  ck_assert_int_eq(fpt_i64(a), getpid());
  ck_assert_int_eq(fpt_i64(b), getpid());
  fp_future_release(a);
  fp_future_release(b);
  fpt_pool_destroy(p);
  fpt_gate_remove(ga);
  fpt_gate_remove(gb);
  fpt_end(&s);
}
END_TEST

/* fp_pool_kill cancels a task a thread runs; the thread finishes it, and
 * destroy waits for that. */
START_TEST(kill_cancels_what_threads_run)
{
  fpt_snapshot s;
  char gate[256];
  const msgpack_object *r;
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = pool_in(FP_MODE_THREADS, 1);
  fp_future *g, *q;
  ck_assert_int_eq(fp_submitf(p, "gate", &g, "[s]", gate), 0);
  q = submit(p, "square", 5);
  int fd = gate_reached(gate);
  ck_assert_int_eq(fp_pool_kill(p), 0);
  ck_assert_int_eq(fp_future_result(g, 0, &r), FP_ECANCELLED);
  ck_assert_int_eq(fp_future_result(q, 0, &r), FP_ECANCELLED);
  fp_future *late;
  ck_assert_int_eq(fp_submitf(p, "square", &late, "[I]", (int64_t)1),
                   FP_ESHUTDOWN);
  ck_assert_int_eq(write(fd, "x", 1), 1);
  close(fd);
  fpt_pool_destroy(p);
  fp_future_release(g);
  fp_future_release(q);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* Inline, fp_pool_kill cancels the task about to run: it never runs. */
START_TEST(inline_kill_before_the_task_runs)
{
  fpt_snapshot s;
  const msgpack_object *r;
  fpt_begin(&s);
  fp_pool *p = pool_in(FP_MODE_INLINE, 1);
  fp_future *a = submit(p, "square", 2), *b = submit(p, "square", 3);
  ck_assert_int_eq(fp_pool_kill(p), 0);
  ck_assert_int_eq(fp_future_result(a, FPT_LIMIT_MS, &r), FP_ECANCELLED);
  ck_assert_int_eq(fp_future_result(b, FPT_LIMIT_MS, &r), FP_ECANCELLED);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.cancelled, 2);
  ck_assert_uint_eq(st.finished, 0);
  fpt_pool_destroy(p);
  fp_future_release(a);
  fp_future_release(b);
  fpt_end(&s);
}
END_TEST

/* Inline, a task runs only inside a call that waits, never in a submit. */
START_TEST(inline_runs_only_in_waits)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_in(FP_MODE_INLINE, 4);
  fp_future *f[200];
  for (int k = 0; k < 200; k++)
    f[k] = submit(p, "square", k);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.finished, 0);
  /* In submission order: waiting on the last runs all before it. */
  ck_assert_int_eq(fpt_i64(f[199]), 199 * 199);
  for (int k = 0; k < 199; k++)
    ck_assert_int_eq(fp_future_state(f[k]), FP_FINISHED);
  for (int k = 0; k < 200; k++)
    fp_future_release(f[k]);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_pool_create(3), inline mode: tasks not yet run wait where they can be
 * cancelled, the first one submitted too. */
START_TEST(inline_cancels_what_has_not_run)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_in(FP_MODE_INLINE, 1);
  fp_future *a = submit(p, "square", 2), *b = submit(p, "square", 3),
            *c = submit(p, "square", 4);
  ck_assert_int_eq(fp_future_cancel(a, 0), 0);
  ck_assert_int_eq(fp_future_cancel(c, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_future_state(a), FP_CANCELLED);
  ck_assert_int_eq(fpt_i64(b), 9);
  ck_assert_int_eq(fp_future_state(c), FP_CANCELLED);
  ck_assert_int_eq(fp_future_cancel(b, 0), FP_EBUSY); /* it ran */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.finished, 1);
  ck_assert_uint_eq(st.cancelled, 2);
  fp_future_release(a);
  fp_future_release(b);
  fp_future_release(c);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

int main(void)
{
  static const char *const names[] = {"processes", "threads", "inline"};
  Suite *s = suite_create("modes");
  for (int m = 0; m < 3; m++) {
    TCase *tc = fpt_tcase(s, names[m], 300);
    tcase_add_loop_test(tc, submit_and_result, m, m + 1);
    tcase_add_loop_test(tc, task_errors, m, m + 1);
    tcase_add_loop_test(tc, callbacks_and_wait, m, m + 1);
    tcase_add_loop_test(tc, map_in_order, m, m + 1);
    tcase_add_loop_test(tc, stats_count_every_task, m, m + 1);
    tcase_add_loop_test(tc, stats_count_the_workers_cpu_time, m, m + 1);
    tcase_add_loop_test(tc, init_runs_per_worker, m, m + 1);
    tcase_add_loop_test(tc, init_failure_fails_create, m, m + 1);
    tcase_add_loop_test(tc, event_loop_drives_tasks, m, m + 1);
    if (m != 0)
      tcase_add_loop_test(tc, limits_are_refused_at_the_call, m, m + 1);
    if (m == 0)
      tcase_add_test(tc, bad_mode_is_einval);
    if (m == 1) {
      tcase_add_test(tc, threads_run_in_parallel);
      tcase_add_test(tc, kill_cancels_what_threads_run);
      tcase_add_test(tc, thread_deadline_asks_a_polling_task);
      tcase_add_test(tc, thread_deadline_gives_up_a_deaf_task);
      tcase_add_test(tc, thread_grace_over_gives_up_and_moves_the_rest);
      tcase_add_test(tc, thread_cancel_running_asks);
      tcase_add_test(tc, thread_kill_asks_running_tasks);
    }
    if (m == 2) {
      tcase_add_test(tc, inline_runs_only_in_waits);
      tcase_add_test(tc, inline_cancel_running_before_it_runs);
      tcase_add_test(tc, inline_kill_before_the_task_runs);
      tcase_add_test(tc, inline_cancels_what_has_not_run);
    }
  }
  fpt_run_suite(s);
}

/* The man pages' promises, sentence by sentence, checked against the
 * library: return codes on bad input (NULL pointers, out-of-range values,
 * the wrong mode), *out on failure, fp_pool_create_error, the thread mode's
 * deadline and cancel, inline refusals, and the "ready" paragraph of
 * fp_pool_create(3).  Each test names the page it checks. */
#define _GNU_SOURCE
#include "fpt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

/* Sleeps its argument's microseconds: a task of known length. */
static int t_nap(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  usleep((useconds_t)a->via.i64);
  return fp_pack(o, "I", (int64_t)1);
}

/* Args [pool, ms]: submits sq(3) to that pool (its address: a worker
 * process has a copy of it) and waits ms for it: [submit's code, result's
 * code, the result or -1]. */
static int t_own_pool(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  uint64_t addr;
  int64_t ms;
  if (fp_unpack(a, "[UI]", &addr, &ms) != 0)
    return fp_call_fail(c, "TypeError", "[UI]");
  fp_future *f = NULL;
  const msgpack_object *r = NULL;
  int sub = fp_submitf((fp_pool *)(uintptr_t)addr, "sq", &f, "[I]",
                       (int64_t)3);
  int res = sub == 0 ? fp_future_result(f, (int)ms, &r) : sub;
  int64_t v = res == 0 ? r->via.i64 : -1;
  fp_future_release(f);
  return fp_pack(o, "[iiI]", sub, res, v);
}

/* Prints a line on stdout and flushes it. */
static int t_say(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  printf("said\n");
  fflush(stdout);
  return fp_pack(o, "I", (int64_t)1);
}

static const fp_task tasks[] = {
    {"sq", t_sq},     {"deaf", t_deaf}, {"poll", t_poll},
    {"self_cancel", t_self_cancel},     {"nap", t_nap},
    {"own_pool", t_own_pool}, {"say", t_say}, {NULL, NULL}};

static void reset_deaf(void)
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

static void wait_until(atomic_int *v, int want)
{
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  while (atomic_load(v) != want && fpt_now_ms() < end)
    usleep(1000);
  ck_assert_int_eq(atomic_load(v), want);
}

/* ---- fp_pool_create(3): ERRORS ---- */

static void create_fails(const fp_pool_options *o, int want, const char *what)
{
  fp_pool *p = (fp_pool *)&p;
  int rc = fp_pool_create(&p, o);
  ck_assert_msg(rc == want, "%s: %s, want %s", what, fp_err_name(rc),
                fp_err_name(want));
  ck_assert_msg(p == NULL, "%s: *out not NULL on failure", what);
  ck_assert_msg(fp_pool_create_error() != NULL, "%s: no create_error", what);
}

static int t_other(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  return t_sq(c, a, o);
}

START_TEST(create_refuses_bad_options)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o;
  ck_assert_int_eq(fp_pool_create(NULL, NULL), FP_EINVAL);
#define BAD(field, value, want)                                               \
  do {                                                                        \
    o = (fp_pool_options)FP_POOL_OPTIONS_INIT;                                \
    o.workers = 1;                                                            \
    o.field = value;                                                          \
    create_fails(&o, want, #field " = " #value);                              \
  } while (0)
  BAD(size, offsetof(fp_pool_options, log_arg) + sizeof(void *) - 1, FP_EINVAL);
  BAD(size, sizeof(fp_pool_options) + 8, FP_EINVAL);
  BAD(size, 0, FP_EINVAL);
  BAD(workers, 1025, FP_EINVAL);
  BAD(max_message, 1023, FP_EINVAL);
  BAD(max_message, (size_t)4 << 30, FP_EINVAL);
  BAD(max_inflight, 1025, FP_EINVAL);
  BAD(restart_limit, 100001, FP_EINVAL);
  BAD(restart_window_ms, 0, FP_EINVAL);
  BAD(shm_args, 1, FP_EINVAL);
  BAD(shm_args, ((size_t)1 << 40) + 1, FP_EINVAL);
  BAD(max_worker_rss, 1, FP_EINVAL);
  BAD(pin_workers, 2, FP_EINVAL);
  BAD(worker_stdout, 3, FP_EINVAL);
  BAD(worker_stdout, -1, FP_EINVAL);
  BAD(mode, 3, FP_EINVAL);
  BAD(deadline_grace_ms, -1, FP_EINVAL);
  BAD(deadline_grace_ms, FP_GRACE_MAX_MS + 1, FP_EINVAL);
  static const fp_task empty[] = {{"", t_sq}, {NULL, NULL}};
  static const fp_task nullfn[] = {{"x", NULL}, {NULL, NULL}};
  static const fp_task twice[] = {{"x", t_sq}, {"x", t_other}, {NULL, NULL}};
  static char longname[257];
  memset(longname, 'n', 256);
  static fp_task toolong[] = {{longname, t_sq}, {NULL, NULL}};
  BAD(tasks, empty, FP_EINVAL);
  BAD(tasks, nullfn, FP_EINVAL);
  BAD(tasks, twice, FP_EINVAL);
  BAD(tasks, toolong, FP_EINVAL);
  /* restart_limit 0 with restart_window_ms 0: no limit, allowed */
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.workers = 1;
  o.restart_limit = 0;
  o.restart_window_ms = 0;
  fp_pool *p;
  ck_assert_int_eq(fp_pool_create(&p, &o), 0);
  ck_assert_ptr_null(fp_pool_create_error());
  fp_pool_destroy(p);
  /* a name of exactly 255 bytes is allowed */
  longname[255] = '\0';
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.workers = 1;
  o.tasks = toolong;
  ck_assert_int_eq(fp_pool_create(&p, &o), 0);
  fp_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_pool_create(3): the limits themselves are allowed. */
START_TEST(create_accepts_the_limits)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o;
  fp_pool *p;
#define GOOD(field, value)                                                    \
  do {                                                                        \
    o = (fp_pool_options)FP_POOL_OPTIONS_INIT;                                \
    o.workers = 1;                                                            \
    o.field = value;                                                          \
    int rc_ = fp_pool_create(&p, &o);                                         \
    ck_assert_msg(rc_ == 0, #field " = " #value ": %s", fp_err_name(rc_));    \
    ck_assert_ptr_null(fp_pool_create_error());                               \
    fp_pool_destroy(p);                                                       \
  } while (0)
  GOOD(max_message, 1024);
  GOOD(max_message, 0xffffffffu);
  GOOD(max_inflight, 1024);
  GOOD(restart_limit, 100000);
  GOOD(shm_args, (size_t)1 << 20);
  GOOD(shm_args, (size_t)1 << 40);
  GOOD(shm_args, FP_SHM_OFF);
  GOOD(max_worker_rss, (size_t)1 << 20);
  GOOD(max_worker_rss, SIZE_MAX);
  GOOD(worker_rlimit_as, SIZE_MAX);
  GOOD(worker_stdout, FP_STDOUT_NULL);
  GOOD(deadline_grace_ms, FP_GRACE_MAX_MS);
  GOOD(size, offsetof(fp_pool_options, log_arg) + sizeof(void *)); /* 0.1 */
  /* worker_rlimit_as too low: FP_EINVAL, and the error says what it needs */
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.workers = 1;
  o.worker_rlimit_as = 1 << 20;
  ck_assert_int_eq(fp_pool_create(&p, &o), FP_EINVAL);
  ck_assert_ptr_nonnull(strstr(fp_pool_create_error(), "worker_rlimit_as"));
  fpt_end(&s);
}
END_TEST

/* fp_pool_create(3) ERRORS, FP_ENOTSUP: per-process limits in the other
 * modes. */
START_TEST(create_refuses_process_options_in_other_modes)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o;
  for (unsigned mode = FP_MODE_THREADS; mode <= FP_MODE_INLINE; mode++) {
#define NOTSUP(field, value)                                                  \
  do {                                                                        \
    o = (fp_pool_options)FP_POOL_OPTIONS_INIT;                                \
    o.workers = 1;                                                            \
    o.mode = mode;                                                            \
    o.field = value;                                                          \
    create_fails(&o, FP_ENOTSUP, #field " = " #value);                        \
  } while (0)
    NOTSUP(max_tasks_per_worker, 1);
    NOTSUP(max_worker_rss, (size_t)1 << 30);
    NOTSUP(worker_rlimit_as, (size_t)1 << 40);
    NOTSUP(worker_rlimit_cpu, 100);
    NOTSUP(pin_workers, 1);
    NOTSUP(worker_stdout, FP_STDOUT_NULL);
  }
  fpt_end(&s);
}
END_TEST

/* fp_pool_create(3): "In thread mode ... and inline mode, fp_pool_create()
 * returns when every worker has run init"; inline, init runs once. */
static atomic_int inits;
static int count_init(void **state, void *arg, fp_call *call)
{
  (void)state, (void)arg, (void)call;
  usleep(20000);
  atomic_fetch_add(&inits, 1);
  return 0;
}

START_TEST(other_modes_create_after_every_init)
{
  for (unsigned mode = FP_MODE_THREADS; mode <= FP_MODE_INLINE; mode++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    fp_pool *p;
    atomic_store(&inits, 0);
    o.workers = 4;
    o.mode = mode;
    o.init = count_init;
    ck_assert_int_eq(fpt_pool_create_as(&p, &o), 0);
    ck_assert_int_eq(atomic_load(&inits), mode == FP_MODE_THREADS ? 4 : 1);
    fp_pool_stats st = FP_POOL_STATS_INIT;
    ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
    ck_assert_uint_eq(st.workers_live, st.workers);
    fpt_pool_destroy(p);
  }
}
END_TEST

/* ---- fp_pool_create(3): "ready" ---- */

static char ready_dir[64];

/* The first worker to get here is ready at once; the others wait for the
 * file "go" (the test makes it), then succeed or fail as "fail" says. */
static int gated_init(void **state, void *arg, fp_call *call)
{
  (void)state, (void)arg;
  char path[128];
  snprintf(path, sizeof path, "%s/first", ready_dir);
  int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd >= 0) {
    close(fd);
    return 0;
  }
  snprintf(path, sizeof path, "%s/go", ready_dir);
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  while (access(path, F_OK) != 0 && fpt_now_ms() < end)
    usleep(2000);
  snprintf(path, sizeof path, "%s/fail", ready_dir);
  if (access(path, F_OK) == 0)
    return fp_call_fail(call, "InitError", "late");
  return 0;
}

static void ready_setup(int fail)
{
  snprintf(ready_dir, sizeof ready_dir, "/tmp/fpt-ready-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(ready_dir));
  if (fail) {
    char path[128];
    snprintf(path, sizeof path, "%s/fail", ready_dir);
    close(open(path, O_CREAT | O_WRONLY, 0600));
  }
}

static void ready_go(void)
{
  char path[128];
  snprintf(path, sizeof path, "%s/go", ready_dir);
  close(open(path, O_CREAT | O_WRONLY, 0600));
}

static void ready_cleanup(void)
{
  static const char *const names[] = {"first", "go", "fail"};
  char path[128];
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", ready_dir, names[i]);
    unlink(path);
  }
  rmdir(ready_dir);
}

START_TEST(create_returns_once_one_worker_is_ready)
{
  fpt_snapshot s;
  fpt_begin(&s);
  ready_setup(0);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 3;
  o.tasks = tasks;
  o.init = gated_init;
  ck_assert_int_eq(fpt_pool_create_early(&p, &o), 0);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_pool_stats_get(p, &st, NULL, 0);
  ck_assert_uint_eq(st.workers, 3);
  ck_assert_uint_eq(st.workers_live, 1); /* the others wait for "go" */
  /* tasks run on the ready worker meanwhile */
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "sq", &f, "[I]", (int64_t)6), 0);
  ck_assert_int_eq(fpt_i64(f), 36);
  fp_future_release(f);
  ready_go();
  fpt_pool_wait_ready(p);
  fp_pool_stats_get(p, &st, NULL, 0);
  ck_assert_uint_eq(st.workers_live, 3);
  fpt_pool_destroy(p);
  ready_cleanup();
  fpt_end(&s);
}
END_TEST

START_TEST(late_init_failure_breaks_the_pool)
{
  fpt_snapshot s;
  fpt_begin(&s);
  ready_setup(1);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 2;
  o.tasks = tasks;
  o.init = gated_init;
  ck_assert_int_eq(fpt_pool_create_early(&p, &o), 0);
  reset_deaf();
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "deaf", &f, "[]"), 0);
  ready_go(); /* the second worker now fails its init */
  const msgpack_object *r;
  int rc = fp_future_result(f, FPT_LIMIT_MS, &r);
  ck_assert_msg(rc == FP_EBROKEN, "future: %s", fp_err_name(rc));
  ck_assert_str_eq(fp_future_error(f),
                   "pool broken: worker initializer failed: InitError: late");
  fp_future_release(f);
  ck_assert_int_eq(fp_submitf(p, "sq", &f, "[I]", (int64_t)1), FP_EBROKEN);
  ck_assert_ptr_null(f);
  fpt_pool_destroy(p);
  ready_cleanup();
  fpt_end(&s);
}
END_TEST

/* ---- fp_submit(3): ERRORS ---- */

START_TEST(submit_refuses_bad_input)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 1;
  o.tasks = tasks;
  o.max_message = 1024;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  fp_future *f = (fp_future *)&f;
  static const char one[] = "\x91\x01"; /* [1] */
#define SUB(want, ...)                                                        \
  do {                                                                        \
    f = (fp_future *)&f;                                                      \
    int rc_ = __VA_ARGS__;                                                    \
    ck_assert_msg(rc_ == (want), "%s: %s", #__VA_ARGS__, fp_err_name(rc_));   \
    if (rc_ != 0)                                                             \
      ck_assert_msg(f == NULL, "%s: *out not NULL", #__VA_ARGS__);            \
    else                                                                      \
      fp_future_release(f);                                                   \
  } while (0)
  ck_assert_int_eq(fp_submit(NULL, "sq", one, 2, &f), FP_EINVAL);
  ck_assert_int_eq(fp_submit(p, "sq", one, 2, NULL), FP_EINVAL);
  SUB(FP_EINVAL, fp_submit(p, NULL, one, 2, &f));
  SUB(FP_EINVAL, fp_submit(p, "", one, 2, &f));
  char longname[257];
  memset(longname, 'x', 256);
  longname[256] = '\0';
  SUB(FP_EINVAL, fp_submit(p, longname, one, 2, &f));
  SUB(FP_EINVAL, fp_submit(p, "sq", NULL, 2, &f));
  SUB(FP_EINVAL, fp_submit(p, "sq", NULL, 0, &f));   /* empty */
  SUB(FP_EINVAL, fp_submit(p, "sq", one, 1, &f));    /* truncated */
  SUB(FP_EINVAL, fp_submit(p, "sq", "\x01\x02", 2, &f)); /* two objects */
  SUB(FP_EINVAL, fp_submit(p, "sq", "\xc1", 1, &f)); /* never used byte */
  char deep[40];
  memset(deep, '\x91', 33);
  deep[33] = '\x01';
  SUB(FP_EINVAL, fp_submit(p, "sq", deep, 34, &f));  /* 33 deep */
  SUB(0, fp_submit(p, "sq", deep + 1, 33, &f));      /* 32 deep */
  SUB(FP_ENOTASK, fp_submit(p, "nope", one, 2, &f));
  /* max_message - 287 bytes of arguments pass, one more is too many */
  char big[1024];
  size_t room = 1024 - 287;
  big[0] = '\xc5'; /* bin 16 */
  big[1] = (char)((room - 3) >> 8);
  big[2] = (char)((room - 3) & 0xff);
  memset(big + 3, 0, sizeof big - 3);
  SUB(0, fp_submit(p, "sq", big, room, &f));
  big[1] = (char)((room - 2) >> 8);
  big[2] = (char)((room - 2) & 0xff);
  SUB(FP_EMSGSIZE, fp_submit(p, "sq", big, room + 1, &f));
  /* fp_submitf: the same bound on what it packs (bin 16: 3 bytes more) */
  SUB(0, fp_submitf(p, "sq", &f, "y", big + 3, room - 3));
  SUB(FP_EMSGSIZE, fp_submitf(p, "sq", &f, "y", big + 3, room - 2));
  /* fp_submit_ex */
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.size = 3;
  SUB(FP_EINVAL, fp_submit_ex(p, "sq", one, 2, &so, &f));
  so = (fp_submit_options)FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = -1;
  SUB(FP_EINVAL, fp_submit_ex(p, "sq", one, 2, &so, &f));
  so = (fp_submit_options)FP_SUBMIT_OPTIONS_INIT;
  so.grace_ms = -2;
  SUB(FP_EINVAL, fp_submit_ex(p, "sq", one, 2, &so, &f));
  so.grace_ms = FP_GRACE_MAX_MS + 1;
  SUB(FP_EINVAL, fp_submit_ex(p, "sq", one, 2, &so, &f));
  so.grace_ms = FP_GRACE_MAX_MS;
  SUB(0, fp_submit_ex(p, "sq", one, 2, &so, &f));
  SUB(0, fp_submit_ex(p, "sq", one, 2, NULL, &f));
  /* fp_submitf */
  SUB(FP_EINVAL, fp_submitf(p, "sq", &f, NULL));
  SUB(FP_EINVAL, fp_submitf(p, "sq", &f, "[I"));
  SUB(FP_EINVAL, fp_submitf(p, "sq", &f, "I I", (int64_t)1, (int64_t)2));
  /* "On failure ... nothing was queued": only the 5 that succeeded count */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.submitted, 5);
  /* after shutdown */
  ck_assert_int_eq(fp_pool_shutdown(p, 0), 0);
  SUB(FP_ESHUTDOWN, fp_submit(p, "sq", one, 2, &f));
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_submit(3) ERRORS FP_ENOTSUP: a deadline inline. */
START_TEST(inline_refuses_deadlines_and_cancel_of_the_running_task)
{
  fp_pool *p = make(FP_MODE_INLINE, 1, 0);
  fp_future *f = (fp_future *)&f;
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = 100;
  ck_assert_int_eq(fp_submit_ex(p, "sq", "\x91\x02", 2, &so, &f), FP_ENOTSUP);
  ck_assert_ptr_null(f);
  /* fp_map(3): a deadline is FP_ENOTSUP */
  fp_map_input in = {"\x91\x91\x01", 3, NULL, NULL};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  fp_map_iter *m = (fp_map_iter *)&m;
  mo.deadline_ms = 100;
  ck_assert_int_eq(fp_map(p, "sq", &in, &mo, &m), FP_ENOTSUP);
  ck_assert_ptr_null(m);
  /* fp_future_cancel(3): FP_CANCEL_RUNNING of the running task is
   * FP_ENOTSUP; the task runs on and ends as it does.  fp_call_should_stop
   * returns 0 inline. */
  ck_assert_int_eq(fp_submitf(p, "self_cancel", &f, "[]"), 0);
  self_future = f;
  ck_assert_int_eq(fpt_i64(f), 1);
  ck_assert_int_eq(atomic_load(&self_cancel_rc), FP_ENOTSUP);
  ck_assert_int_eq(atomic_load(&self_cancel0_rc), FP_EBUSY);
  ck_assert_int_eq(atomic_load(&self_stop), 0);
  ck_assert_int_eq(fp_future_state(f), FP_FINISHED);
  fp_future_release(f);
  /* A task not yet run is cancelled, even one whose state reads
   * FP_RUNNING, with FP_CANCEL_RUNNING. */
  fp_future *g;
  ck_assert_int_eq(fp_submitf(p, "sq", &g, "[I]", (int64_t)3), 0);
  ck_assert_int_eq(fp_future_cancel(g, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_future_state(g), FP_CANCELLED);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(g, 0, &r), FP_ECANCELLED);
  fp_future_release(g);
  fpt_pool_destroy(p);
}
END_TEST

/* fp_call_should_stop(3): 0 for a NULL call, and in an init function. */
static atomic_int init_stop = -1;
static int stop_in_init(void **state, void *arg, fp_call *call)
{
  (void)state, (void)arg;
  atomic_store(&init_stop, fp_call_should_stop(call));
  return 0;
}

START_TEST(should_stop_is_0_for_null_and_in_init)
{
  ck_assert_int_eq(fp_call_should_stop(NULL), 0);
  for (unsigned mode = FP_MODE_THREADS; mode <= FP_MODE_INLINE; mode++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    fp_pool *p;
    o.workers = 1;
    o.mode = mode;
    o.init = stop_in_init;
    atomic_store(&init_stop, -1);
    ck_assert_int_eq(fpt_pool_create_as(&p, &o), 0);
    ck_assert_int_eq(atomic_load(&init_stop), 0);
    fpt_pool_destroy(p);
  }
}
END_TEST

/* ---- fp_future_cancel(3): ERRORS ---- */

START_TEST(cancel_refuses_bad_input)
{
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f;
  ck_assert_int_eq(fp_future_cancel(NULL, 0), FP_EINVAL);
  ck_assert_int_eq(fp_future_cancel(NULL, FP_CANCEL_RUNNING), FP_EINVAL);
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)3), 0);
  ck_assert_int_eq(fp_future_cancel(f, 2), FP_EINVAL);
  ck_assert_int_eq(fp_future_cancel(f, ~0u), FP_EINVAL);
  ck_assert_int_eq(fpt_i64(f), 9);
  ck_assert_int_eq(fp_future_cancel(f, 0), FP_EBUSY);
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), FP_EBUSY);
  ck_assert_int_eq(fp_future_state(f), FP_FINISHED);
  fp_future_release(f);
  fpt_pool_destroy(p);
}
END_TEST

/* fp_future_cancel(3): callbacks "run in the calling thread before it
 * returns", and "A thread waiting for f ... returns at once, whatever its
 * timeout". */
static pthread_t cb_thread;
static atomic_int cb_ran;
static void on_done(fp_future *f, void *arg)
{
  (void)f, (void)arg;
  cb_thread = pthread_self();
  atomic_store(&cb_ran, 1);
}
static void *waiter(void *arg)
{
  return (void *)(intptr_t)fp_future_wait(arg, -1);
}
START_TEST(cancel_runs_callbacks_and_wakes_waiters)
{
  char gate[256];
  fpt_gate_make(gate, sizeof gate);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 1;
  o.max_inflight = 1;
  o.tasks = fpt_tasks;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  fp_future *a, *b;
  ck_assert_int_eq(fp_submitf(p, "gate", &a, "[s]", gate), 0);
  ck_assert_int_eq(fp_submitf(p, "square", &b, "[I]", (int64_t)2), 0);
  ck_assert_int_eq(fp_future_state(b), FP_PENDING);
  atomic_store(&cb_ran, 0);
  ck_assert_int_eq(fp_future_on_done(b, on_done, NULL), 0);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, waiter, b), 0);
  ck_assert_int_eq(fp_future_cancel(b, 0), 0);
  ck_assert_int_eq(atomic_load(&cb_ran), 1);
  ck_assert(pthread_equal(cb_thread, pthread_self()));
  void *r;
  ck_assert_int_eq(pthread_join(t, &r), 0);
  ck_assert_int_eq((int)(intptr_t)r, 0);
  ck_assert_str_eq(fp_future_error(b), "cancelled");
  ck_assert_int_eq(fp_future_cancel(b, 0), 0); /* again: nothing */
  fpt_gate_open(gate);
  ck_assert_int_eq(fp_future_wait(a, FPT_LIMIT_MS), 0);
  fp_future_release(a);
  fp_future_release(b);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
}
END_TEST

/* ---- Threads: fp_call_should_stop(3), fp_submit(3), fp_future_cancel(3) */

/* The deadlines below are long (500 ms) on purpose: a deadline counts from
 * when the task is handed to the thread, and one that passes before the
 * thread starts the task ends it with another text, "Stopped: task 'x' was
 * asked to stop before it started" (see check_contract_failing). */

/* Without a grace: the future fails at the deadline with the pool's text,
 * the task runs on with the flag up, its thread takes no other task, and
 * what it returns is dropped; deadline_kills counts it. */
START_TEST(thread_deadline_gives_up_without_grace)
{
  fp_pool *p = make(FP_MODE_THREADS, 1, 0);
  reset_deaf();
  fp_future *f, *g;
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = 500;
  ck_assert_int_eq(fp_submit_ex(p, "deaf", "\x90", 1, &so, &f), 0);
  ck_assert_int_eq(fp_submitf(p, "sq", &g, "[I]", (int64_t)4), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EDEADLINE);
  ck_assert_str_eq(fp_future_error(f), "task ran past its deadline of 500 ms");
  ck_assert_int_eq(atomic_load(&deaf_returned), 0);
  /* the one thread is still held: g cannot run */
  ck_assert_int_eq(fp_future_wait(g, 100), FP_ETIMEDOUT);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_pool_stats_get(p, &st, NULL, 0);
  ck_assert_uint_eq(st.deadline_kills, 1);
  ck_assert_uint_eq(st.failed, 1);
  atomic_store(&release_deaf, 1);
  ck_assert_int_eq(fpt_i64(g), 16);
  wait_until(&deaf_returned, 1);
  ck_assert_int_eq(atomic_load(&deaf_saw_stop), 1);
  ck_assert_int_eq(fp_future_state(f), FP_FAILED); /* answer dropped */
  fp_future_release(f);
  fp_future_release(g);
  fpt_pool_destroy(p);
}
END_TEST

/* With a grace, a polling task that returns in time: FP_EDEADLINE with its
 * own "kind: message", or the pool's text if it returned a result; the
 * thread takes the next task. */
START_TEST(thread_deadline_with_grace_polling_task)
{
  fp_pool *p = make(FP_MODE_THREADS, 1, 10000);
  for (int how = 0; how < 2; how++) {
    fp_future *f;
    fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
    so.deadline_ms = 500;
    ck_assert_int_eq(fp_submit_ex(p, "poll", how ? "\x91\x01" : "\x91\x00", 2,
                                  &so, &f), 0);
    const msgpack_object *r;
    ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EDEADLINE);
    if (how)
      ck_assert_str_eq(fp_future_error(f), "Stopped: by request");
    else
      ck_assert_str_eq(fp_future_error(f), "task ran past its deadline of 500 ms");
    fp_future_release(f);
    ck_assert_int_eq(fp_submitf(p, "sq", &f, "[I]", (int64_t)5), 0);
    ck_assert_int_eq(fpt_i64(f), 25);
    fp_future_release(f);
  }
  fpt_pool_destroy(p);
}
END_TEST

/* With a grace and a task that does not poll: given up when the grace is
 * over, with "and did not stop within its grace of N ms". */
START_TEST(thread_grace_over_text)
{
  fp_pool *p = make(FP_MODE_THREADS, 1, 0);
  reset_deaf();
  fp_future *f;
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = 500;
  so.grace_ms = 40;
  ck_assert_int_eq(fp_submit_ex(p, "deaf", "\x90", 1, &so, &f), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EDEADLINE);
  ck_assert_str_eq(fp_future_error(f), "task ran past its deadline of 500 ms "
                                       "and did not stop within its grace of 40 ms");
  atomic_store(&release_deaf, 1);
  wait_until(&deaf_returned, 1);
  fp_future_release(f);
  fpt_pool_destroy(p);
}
END_TEST

/* fp_submit(3), grace_ms: "A caller built before this field existed gets
 * the pool's grace": an fp_submit_options that ends before grace_ms is
 * accepted, and the pool's deadline_grace_ms applies (threads: a polling
 * task returns within it, so its own text is the future's). */
START_TEST(old_submit_options_get_the_pool_grace)
{
  fp_pool *p = make(FP_MODE_THREADS, 1, 10000);
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.size = offsetof(fp_submit_options, grace_ms);
  so.deadline_ms = 500;
  so.grace_ms = 0; /* beyond size: must not be read */
  fp_future *f;
  ck_assert_int_eq(fp_submit_ex(p, "poll", "\x91\x01", 2, &so, &f), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EDEADLINE);
  ck_assert_str_eq(fp_future_error(f), "Stopped: by request");
  fp_future_release(f);
  fpt_pool_destroy(p);
}
END_TEST

/* Cancel without a grace: FP_CANCELLED at once, "cancelled while running",
 * the task runs on with the flag up and its result is dropped. */
START_TEST(thread_cancel_running_without_grace)
{
  fp_pool *p = make(FP_MODE_THREADS, 1, 0);
  reset_deaf();
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "deaf", &f, "[]"), 0);
  wait_until(&deaf_running, 1);
  ck_assert_int_eq(fp_future_cancel(f, 0), FP_EBUSY);
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_future_state(f), FP_CANCELLED);
  ck_assert_str_eq(fp_future_error(f), "cancelled while running");
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0); /* again */
  atomic_store(&release_deaf, 1);
  wait_until(&deaf_returned, 1);
  ck_assert_int_eq(atomic_load(&deaf_saw_stop), 1);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, 0, &r), FP_ECANCELLED);
  fp_future_release(f);
  fpt_pool_destroy(p);
}
END_TEST

/* Cancel with a grace: the future stays FP_RUNNING until the task returns,
 * then FP_CANCELLED with the task's own text. */
START_TEST(thread_cancel_running_with_grace)
{
  fp_pool *p = make(FP_MODE_THREADS, 1, 10000);
  fp_future *f;
  atomic_store(&poll_started, 0);
  ck_assert_int_eq(fp_submitf(p, "poll", &f, "[I]", (int64_t)1), 0);
  wait_until(&poll_started, 1);
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_ECANCELLED);
  ck_assert_str_eq(fp_future_error(f), "Stopped: by request");
  fp_future_release(f);
  /* the thread is kept */
  ck_assert_int_eq(fp_submitf(p, "sq", &f, "[I]", (int64_t)2), 0);
  ck_assert_int_eq(fpt_i64(f), 4);
  fp_future_release(f);
  fpt_pool_destroy(p);
}
END_TEST

/* fp_future_cancel(3): the answers in the worker's pipe are read first.
 * In a thread pool that read may give up the task at the head (cancelled
 * while it waited behind another, stopped when it starts) and hand what
 * the thread has not started back to the queue, pending: a cancel-running
 * of one of those cancels it as a pending task, "cancelled", and it is
 * never handed out again (it was: done yet queued, it ran, and its state
 * went back to FP_RUNNING for good).  Found by check_model's threads-stop
 * case. */
START_TEST(thread_cancel_of_a_task_handed_back_by_the_read)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p = NULL;
  o.workers = 1;
  o.max_inflight = 3;
  o.tasks = tasks;
  o.mode = FP_MODE_THREADS;
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), 0);
  reset_deaf();
  atomic_store(&poll_started, 0);
  atomic_store(&poll_returned, 0);
  fp_future *a, *b, *c, *d;
  ck_assert_int_eq(fp_submitf(p, "deaf", &a, "[]"), 0);
  ck_assert_int_eq(fp_submitf(p, "poll", &b, "[I]", (int64_t)0), 0);
  ck_assert_int_eq(fp_submitf(p, "sq", &c, "[I]", (int64_t)3), 0);
  wait_until(&deaf_running, 1);
  ck_assert_int_eq(fp_pool_dispatch(p, 0) >= 0, 1); /* b and c to the thread */
  ck_assert_int_eq(fp_future_state(c), FP_RUNNING);
  ck_assert_int_eq(fp_future_cancel(b, FP_CANCEL_RUNNING), 0); /* behind a */
  /* a answers, unread (no library call), and the thread runs b, whose
   * flag is not up yet: b stops only when a's answer is read. */
  atomic_store(&release_deaf, 1);
  wait_until(&poll_started, 1);
  ck_assert_int_eq(fp_future_cancel(c, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_future_state(c), FP_CANCELLED);
  ck_assert_str_eq(fp_future_error(c), "cancelled");
  wait_until(&poll_returned, 1);
  /* d waits behind b's answer, and so would c if it were still queued. */
  ck_assert_int_eq(fp_submitf(p, "sq", &d, "[I]", (int64_t)4), 0);
  ck_assert_int_eq(fpt_i64(d), 16);
  ck_assert_int_eq(fpt_i64(a), 7);
  ck_assert_int_eq(fp_future_state(b), FP_CANCELLED);
  ck_assert_int_eq(fp_future_state(c), FP_CANCELLED);
  ck_assert_str_eq(fp_future_error(c), "cancelled");
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.submitted, 4);
  ck_assert_uint_eq(st.finished, 2);
  ck_assert_uint_eq(st.cancelled, 2);
  ck_assert_uint_eq(st.queued, 0);
  ck_assert_uint_eq(st.running, 0);
  fp_future_release(a);
  fp_future_release(b);
  fp_future_release(c);
  fp_future_release(d);
  fpt_pool_destroy(p);
}
END_TEST

/* fp_future_cancel(3), threads: "the task runs on in its thread until it
 * returns (or, if it had not started, is not run)", and the thread is held
 * only "until that task returns".  A task cancelled (or past its deadline)
 * while its job still waited in the thread's inbox never runs, so never
 * answers: the thread must take work again at once.  It waited for that
 * answer for ever, and the pool's one thread with it.  A cancel right
 * after the submit mostly comes before the thread wakes to take the job;
 * whichever comes first, b must run. */
START_TEST(thread_cancel_before_the_thread_takes_the_task)
{
  fp_pool *p = make(FP_MODE_THREADS, 1, 0);
  unsigned n = (unsigned)fpt_scaled(200, 20), cancelled = 0;
  for (unsigned k = 0; k < n; k++) {
    fp_future *a, *b;
    ck_assert_int_eq(fp_submitf(p, "sq", &a, "[I]", (int64_t)k), 0);
    int rc = fp_future_cancel(a, FP_CANCEL_RUNNING);
    ck_assert_msg(rc == 0 || rc == FP_EBUSY, "cancel: %s", fp_err_name(rc));
    cancelled += rc == 0; /* else it answered first, and was read */
    ck_assert_int_eq(fp_submitf(p, "sq", &b, "[I]", (int64_t)k), 0);
    ck_assert_msg(fp_future_wait(b, FPT_LIMIT_MS) == 0,
                  "round %u: the task after a cancelled one never ran", k);
    ck_assert_int_eq(fpt_i64(b), (int64_t)k * k);
    ck_assert_int_eq(fp_future_state(a), rc == 0 ? FP_CANCELLED : FP_FINISHED);
    fp_future_release(a);
    fp_future_release(b);
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.cancelled, cancelled);
  ck_assert_uint_eq(st.finished, 2 * n - cancelled);
  printf("thread_cancel_before_the_thread_takes_the_task: %u of %u "
         "cancelled before they answered\n", cancelled, n);
  fpt_pool_destroy(p);
}
END_TEST

/* ---- fp_map(3): ERRORS ---- */

START_TEST(map_refuses_bad_input)
{
  fp_pool *p = fpt_pool(1, 0);
  static const char arr[] = "\x92\x91\x01\x91\x02"; /* [[1],[2]] */
  fp_map_input in = {arr, 5, NULL, NULL};
  fp_map_options mo;
  fp_map_iter *m;
#define MAPBAD(want, ...)                                                     \
  do {                                                                        \
    m = (fp_map_iter *)&m;                                                    \
    int rc_ = __VA_ARGS__;                                                    \
    ck_assert_msg(rc_ == (want), "%s: %s", #__VA_ARGS__, fp_err_name(rc_));   \
    ck_assert_msg(m == NULL, "%s: *out not NULL", #__VA_ARGS__);              \
  } while (0)
  MAPBAD(FP_EINVAL, fp_map(NULL, "square", &in, NULL, &m));
  MAPBAD(FP_EINVAL, fp_map(p, "square", NULL, NULL, &m));
  ck_assert_int_eq(fp_map(p, "square", &in, NULL, NULL), FP_EINVAL);
  MAPBAD(FP_EINVAL, fp_map(p, NULL, &in, NULL, &m));
  MAPBAD(FP_EINVAL, fp_map(p, "", &in, NULL, &m));
  MAPBAD(FP_ENOTASK, fp_map(p, "nope", &in, NULL, &m));
  fp_map_input none = {NULL, 0, NULL, NULL};
  MAPBAD(FP_EINVAL, fp_map(p, "square", &none, NULL, &m));
  fp_map_input notarr = {"\x01", 1, NULL, NULL};
  MAPBAD(FP_EINVAL, fp_map_unordered(p, "square", &notarr, NULL, &m));
  fp_map_input badfirst = {"\x91\xc1", 2, NULL, NULL};
  MAPBAD(FP_EINVAL, fp_map(p, "square", &badfirst, NULL, &m));
#define MAPOPT(field, value)                                                  \
  do {                                                                        \
    mo = (fp_map_options)FP_MAP_OPTIONS_INIT;                                 \
    mo.field = value;                                                         \
    MAPBAD(FP_EINVAL, fp_map(p, "square", &in, &mo, &m));                     \
  } while (0)
  MAPOPT(size, 3);
  MAPOPT(chunksize, 65537);
  MAPOPT(deadline_ms, -1);
  MAPOPT(timeout_ms, -1);
  MAPOPT(timeout_cancel, 2);
  MAPOPT(item_args, 2);
  MAPOPT(item_args, -1);
  /* chunksize 65536 is allowed */
  mo = (fp_map_options)FP_MAP_OPTIONS_INIT;
  mo.chunksize = 65536;
  ck_assert_int_eq(fpt_map(p, "square", &in, &mo, &m), 0);
  fp_map_item it;
  ck_assert_int_eq(fp_map_next(NULL, 0, &it), FP_EINVAL);
  ck_assert_int_eq(fp_map_next(m, 0, NULL), FP_EINVAL);
  ck_assert_int_eq(fp_map_next(m, -2, &it), FP_EINVAL);
  int n = 0, rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1)
    n++;
  ck_assert_int_eq(rc, 0);
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(fp_map_next(m, 0, &it), 0); /* and at every later call */
  fpt_map_destroy(m);
  fp_map_destroy(NULL);
  ck_assert_int_eq(fp_pool_shutdown(p, 0), 0);
  MAPBAD(FP_ESHUTDOWN, fp_map(p, "square", &in, NULL, &m));
  fpt_pool_destroy(p);
}
END_TEST

/* fp_submit(3), fp_map(3): FP_EINVAL when "the call is made in a child of
 * the process that created the pool". */
START_TEST(calls_from_a_child_are_einval)
{
  fp_pool *p = fpt_pool(1, 0);
  static const char arr[] = "\x91\x91\x01";
  fp_map_input in = {arr, 3, NULL, NULL};
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "square", &in, NULL, &m), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    fp_future *f = (fp_future *)&f;
    fp_map_iter *m2 = (fp_map_iter *)&m2;
    fp_map_item it;
    int bad = 0;
    bad |= fp_submitf(p, "square", &f, "[I]", (int64_t)2) != FP_EINVAL;
    bad |= (f != NULL) << 1;
    bad |= (fp_map(p, "square", &in, NULL, &m2) != FP_EINVAL) << 2;
    bad |= (m2 != NULL) << 3;
    bad |= (fp_map_next(m, 0, &it) != FP_EINVAL) << 4;
    /* FP_EINVAL before the other checks: forkpool(7) Fork says so of
     * every fp_submit in a child, not FP_ENOTASK or FP_EMSGSIZE. */
    bad |= (fp_submit(p, "no such task", arr + 1, 2, &f) != FP_EINVAL) << 5;
    bad |= (fp_map(p, "no such task", &in, NULL, &m2) != FP_EINVAL) << 6;
    fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
    so.deadline_ms = 1;
    bad |= (fp_submit_ex(p, "no such task", arr + 1, 2, &so, &f) != FP_EINVAL)
           << 7;
    _exit(bad);
  }
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
  fp_map_item it;
  ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), 1);
  ck_assert_int_eq(it.result->via.i64, 1);
  fpt_map_destroy(m);
  fpt_pool_destroy(p);
}
END_TEST

/* fp_map(3), Input: trailing bytes after the array "end the input with
 * FP_EINVAL, returned as an error of next would be": once, by fp_map_next,
 * after the items sent before; a next function that returns 1 without
 * packing is FP_EINVAL; an error of next before any item sent is fp_map's. */
static int next_err(void *arg, msgpack_packer *pk)
{
  (void)arg, (void)pk;
  return FP_ENOMEM;
}
static int next_empty(void *arg, msgpack_packer *pk)
{
  (void)arg, (void)pk;
  return 1;
}
START_TEST(map_input_errors)
{
  fp_pool *p = fpt_pool(1, 0);
  static const char trail[] = "\x92\x91\x01\x91\x02\x00"; /* [[1],[2]] 0 */
  fp_map_input in = {trail, 6, NULL, NULL};
  fp_map_iter *m;
  fp_map_item it;
  int rc, items = 0, einval = 0;
  ck_assert_int_eq(fpt_map(p, "square", &in, NULL, &m), 0);
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) != 0) {
    if (rc == 1)
      items++;
    else if (rc == FP_EINVAL)
      einval++;
    else
      ck_abort_msg("fp_map_next: %s", fp_err_name(rc));
    ck_assert_int_le(items + einval, 3);
  }
  ck_assert_int_eq(items, 2);
  ck_assert_int_eq(einval, 1);
  fpt_map_destroy(m);
  fp_map_input e = {NULL, 0, next_err, NULL};
  m = (fp_map_iter *)&m;
  ck_assert_int_eq(fp_map(p, "square", &e, NULL, &m), FP_ENOMEM);
  ck_assert_ptr_null(m);
  fp_map_input z = {NULL, 0, next_empty, NULL};
  m = (fp_map_iter *)&m;
  ck_assert_int_eq(fp_map(p, "square", &z, NULL, &m), FP_EINVAL);
  ck_assert_ptr_null(m);
  fpt_pool_destroy(p);
}
END_TEST

/* fp_map(3), timeout_ms: after it, the first fp_map_next that finds no
 * result returns FP_ETIMEDOUT, and so does every later call. */
START_TEST(map_timeout_is_sticky)
{
  char gate[256];
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 0);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 1);
  fp_pack(&pk, "[s]", gate);
  fp_map_input in = {sb.data, sb.size, NULL, NULL};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  mo.timeout_ms = 50;
  fp_map_iter *m;
  fp_map_item it;
  ck_assert_int_eq(fpt_map(p, "gate", &in, &mo, &m), 0);
  ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), FP_ETIMEDOUT);
  fpt_gate_open(gate);
  ck_assert_int_eq(fp_map_next(m, 0, &it), FP_ETIMEDOUT);
  ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), FP_ETIMEDOUT);
  fpt_map_destroy(m);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(threads_refuse_map_deadline)
{
  fp_pool *p = make(FP_MODE_THREADS, 1, 0);
  fp_map_input in = {"\x91\x91\x01", 3, NULL, NULL};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  fp_map_iter *m = (fp_map_iter *)&m;
  mo.deadline_ms = 100;
  ck_assert_int_eq(fp_map(p, "sq", &in, &mo, &m), FP_ENOTSUP);
  ck_assert_ptr_null(m);
  fpt_pool_destroy(p);
}
END_TEST

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

/* ---- attack2: more sentences of fp_pool_create(3), fp_map(3),
 * forkpool(7) and fp_future_cancel(3) ---- */

/* forkpool(7) Descriptors: "4 + 3 x workers, plus three" once fp_pool_fd
 * has been called; fp_pool_destroy closes them all. */
START_TEST(descriptors_are_four_plus_three_per_worker)
{
  fpt_snapshot s;
  fpt_begin(&s);
  static const unsigned ws[] = {1, 2, 5};
  for (unsigned i = 0; i < sizeof ws / sizeof ws[0]; i++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    fp_pool *p;
    o.workers = ws[i];
    o.tasks = tasks;
    int before = fpt_count_fds();
    ck_assert_int_eq(fp_pool_create(&p, &o), 0);
    int after = fpt_count_fds();
    ck_assert_int_eq(after - before, (int)(4 + 3 * ws[i]));
    ck_assert_int_ge(fp_pool_fd(p), 3);
    ck_assert_int_eq(fpt_count_fds() - after, 3);
    fp_pool_destroy(p);
    ck_assert_int_eq(fpt_count_fds(), before);
  }
  fpt_end(&s);
}
END_TEST

/* forkpool(7) Descriptors: "A pool in thread mode holds 2 + 2 x workers;
 * one in inline mode, 2", each "plus the same three once fp_pool_fd(3) has
 * been called"; fp_pool_destroy closes them all. */
START_TEST(descriptors_with_threads_and_inline)
{
  fpt_snapshot s;
  fpt_begin(&s);
  static const unsigned ws[] = {1, 2, 5};
  unsigned mode = _i == 0 ? FP_MODE_THREADS : FP_MODE_INLINE;
  for (unsigned i = 0; i < sizeof ws / sizeof ws[0]; i++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    fp_pool *p;
    o.workers = ws[i];
    o.tasks = tasks;
    o.mode = mode;
    int before = fpt_count_fds();
    ck_assert_int_eq(fp_pool_create(&p, &o), 0);
    int after = fpt_count_fds();
    ck_assert_int_eq(after - before,
                     mode == FP_MODE_THREADS ? (int)(2 + 2 * ws[i]) : 2);
    ck_assert_int_ge(fp_pool_fd(p), 3);
    ck_assert_int_eq(fpt_count_fds() - after, 3);
    fp_pool_destroy(p);
    ck_assert_int_eq(fpt_count_fds(), before);
  }
  fpt_end(&s);
}
END_TEST

/* fp_pool_create(3) ERRORS: workers or max_inflight out of range is
 * FP_EINVAL "(not in inline mode, which ignores them)". */
/* fp_pool_create(3): "0, the default, means one per CPU the calling thread
 * may run on, as sched_getaffinity(2) reports at create".  The mask is
 * narrowed to one CPU and put back before any assertion can fail. */
/* fp_pool_stats_get(3): "A program built against an older header, whose
 * fp_pool_stats ends before hosts_retired, gets the fields its size holds",
 * and FP_EINVAL if "st->size is not a size this library knows": the sizes
 * the struct has had are where workers_live, shared_bytes, cpu_sys_us and
 * workers_retired end; a size that cuts a field in two, or ends where no
 * header ever did, is refused and nothing is written. */
START_TEST(stats_sizes_old_and_unknown)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  const size_t known[] = {offsetof(fp_pool_stats, shared_args),
                          offsetof(fp_pool_stats, cpu_user_us),
                          offsetof(fp_pool_stats, hosts_retired),
                          sizeof(fp_pool_stats)};
  for (unsigned i = 0; i < sizeof known / sizeof *known; i++) {
    union {
      fp_pool_stats st;
      unsigned char b[sizeof(fp_pool_stats) + 16];
    } u;
    memset(&u, 0x5a, sizeof u);
    u.st.size = known[i];
    ck_assert_int_eq(fp_pool_stats_get(p, &u.st, NULL, 0), 0);
    ck_assert_uint_eq(u.st.size, known[i]);
    ck_assert_uint_eq(u.st.workers, 1);
    for (size_t k = known[i]; k < sizeof u; k++)
      ck_assert_msg(u.b[k] == 0x5a, "size %zu: byte %zu written", known[i], k);
  }
  const size_t unknown[] = {offsetof(fp_pool_stats, workers),
                            offsetof(fp_pool_stats, workers_live),
                            offsetof(fp_pool_stats, shared_args) + 4,
                            offsetof(fp_pool_stats, shared_bytes),
                            offsetof(fp_pool_stats, hosts_retired) + 1,
                            offsetof(fp_pool_stats, workers_retired),
                            sizeof(fp_pool_stats) - 1,
                            sizeof(fp_pool_stats) + 8};
  for (unsigned i = 0; i < sizeof unknown / sizeof *unknown; i++) {
    union {
      fp_pool_stats st;
      unsigned char b[sizeof(fp_pool_stats) + 16];
    } u;
    memset(&u, 0x5a, sizeof u);
    u.st.size = unknown[i];
    ck_assert_msg(fp_pool_stats_get(p, &u.st, NULL, 0) == FP_EINVAL, "size %zu accepted",
                  unknown[i]);
    for (size_t k = sizeof u.st.size; k < sizeof u; k++)
      ck_assert_msg(u.b[k] == 0x5a, "size %zu: byte %zu written", unknown[i], k);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(default_workers_follow_the_affinity_mask)
{
  fpt_snapshot s;
  fpt_begin(&s);
  cpu_set_t all, one;
  ck_assert_int_eq(sched_getaffinity(0, sizeof all, &all), 0);
  int first = 0;
  while (!CPU_ISSET(first, &all))
    first++;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  for (int i = 0; i < 2; i++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    fp_pool *p;
    o.tasks = tasks;
    o.mode = i == 0 ? FP_MODE_PROCESSES : FP_MODE_THREADS;
    ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
    int rc = fp_pool_create(&p, &o);
    sched_setaffinity(0, sizeof all, &all);
    ck_assert_int_eq(rc, 0);
    fp_pool_stats st = FP_POOL_STATS_INIT;
    fp_pool_stats_get(p, &st, NULL, 0);
    unsigned narrowed = st.workers;
    fp_pool_destroy(p);
    ck_assert_uint_eq(narrowed, 1);
    ck_assert_int_eq(fp_pool_create(&p, &o), 0);
    fp_pool_stats_get(p, &st, NULL, 0);
    fp_pool_destroy(p);
    ck_assert_uint_eq(st.workers, (unsigned)CPU_COUNT(&all));
  }
  fpt_end(&s);
}
END_TEST

/* forkpool(7) Processes: the caller's pthread_atfork handlers run around
 * create's fork as around a fork in the calling thread: prepare and parent
 * once each (in the intermediate child, on the caller's memory, where it is
 * a vfork child; in the caller's copy under valgrind or TSan, which make
 * vfork a fork), child in the fork server.  Counted in shared memory so
 * that any process's count is seen. */
static atomic_int *atfork_counts; /* prepare, parent, child */
static void on_prepare(void)
{
  if (atfork_counts != NULL)
    atomic_fetch_add(&atfork_counts[0], 1);
}
static void on_parent(void)
{
  if (atfork_counts != NULL)
    atomic_fetch_add(&atfork_counts[1], 1);
}
static void on_child(void)
{
  if (atfork_counts != NULL)
    atomic_fetch_add(&atfork_counts[2], 1);
}

START_TEST(atfork_handlers_run_around_create)
{
  fpt_snapshot s;
  fpt_begin(&s);
  atomic_int *c = mmap(NULL, 3 * sizeof *c, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(c, MAP_FAILED);
  static int registered;
  if (!registered++)
    ck_assert_int_eq(pthread_atfork(on_prepare, on_parent, on_child), 0);
  atfork_counts = c;
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 1;
  o.tasks = tasks;
  int rc = fpt_pool_create(&p, &o);
  int prepare = atomic_load(&c[0]), parent = atomic_load(&c[1]);
  ck_assert_int_eq(rc, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "sq", &f, "[I]", (int64_t)4), 0);
  ck_assert_int_eq(fpt_i64(f), 16);
  fp_future_release(f);
  fpt_pool_destroy(p);
  atfork_counts = NULL;
  /* The fork server's own forks of its workers count as well. */
  ck_assert_int_ge(prepare, 1);
  ck_assert_int_ge(parent, 1);
  ck_assert_int_ge(atomic_load(&c[2]), 1);
  munmap(c, 3 * sizeof *c);
  fpt_end(&s);
}
END_TEST

START_TEST(inline_ignores_workers_and_max_inflight)
{
  fpt_snapshot s;
  fpt_begin(&s);
  static const unsigned bad[][2] = {{1025, 0}, {0, 1025}, {UINT32_MAX, UINT32_MAX}};
  for (unsigned i = 0; i < 3; i++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    fp_pool *p;
    o.mode = FP_MODE_INLINE;
    o.tasks = tasks;
    o.workers = bad[i][0];
    o.max_inflight = bad[i][1];
    ck_assert_int_eq(fp_pool_create(&p, &o), 0);
    fp_future *f;
    ck_assert_int_eq(fp_submitf(p, "sq", &f, "[I]", (int64_t)3), 0);
    ck_assert_int_eq(fpt_i64(f), 9);
    fp_future_release(f);
    fp_pool_destroy(p);
    o.mode = FP_MODE_THREADS; /* the other modes do not ignore them */
    create_fails(&o, FP_EINVAL, "threads, out of range");
  }
  fpt_end(&s);
}
END_TEST

/* fp_pool_status_get(3): "FP_POOL_SHUTTING_DOWN follows fp_pool_shutdown(3)
 * without FP_SHUTDOWN_WAIT", "FP_POOL_SHUT_DOWN follows ... an
 * fp_pool_join(3) that returned 0"; fp_pool_stats_get(3): workers_live are
 * the slots "whose worker is running and ready now", an entry's pid is
 * 0 "if no worker is ready in it", and so are its CPU times then (the
 * total keeps them).  In every mode: threads and inline have
 * no fork server whose exit would say the pool is shut down. */
START_TEST(status_and_live_workers_follow_shutdown_in_every_mode)
{
  static const unsigned modes[] = {FP_MODE_PROCESSES, FP_MODE_THREADS,
                                   FP_MODE_INLINE};
  fp_pool *p = make(modes[_i], 1, 0);
  fp_future *f[3];
  for (int k = 0; k < 3; k++)
    ck_assert_int_eq(fp_submitf(p, "sq", &f[k], "[I]", (int64_t)k), 0);
  ck_assert_int_eq(fp_pool_shutdown(p, 0), 0);
  fp_pool_status st = FP_POOL_STATUS_INIT;
  ck_assert_int_eq(fp_pool_status_get(p, &st), 0);
  ck_assert_int_eq(st.state, FP_POOL_SHUTTING_DOWN);
  fp_pool_stats s = FP_POOL_STATS_INIT;
  fp_worker_stats w[1];
  ck_assert_int_eq(fp_pool_stats_get(p, &s, w, 1), 0);
  ck_assert_uint_eq(s.workers_live, 1);
  ck_assert_int_ne(w[0].pid, 0);
  ck_assert_int_eq(fp_pool_join(p, -1), 0);
  ck_assert_int_eq(fp_pool_status_get(p, &st), 0);
  ck_assert_int_eq(st.state, FP_POOL_SHUT_DOWN);
  ck_assert_int_eq(fp_pool_stats_get(p, &s, w, 1), 0);
  ck_assert_uint_eq(s.finished, 3);
  ck_assert_uint_eq(s.workers_live, 0);
  ck_assert_int_eq(w[0].pid, 0);
  /* The worker's CPU time left its entry with its pid. */
  ck_assert(w[0].cpu_user_us == 0 && w[0].cpu_sys_us == 0);
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(fpt_i64(f[k]), k * k);
    fp_future_release(f[k]);
  }
  fpt_pool_destroy(p);
}
END_TEST

/* forkpool(7), Choosing a mode: "A task may use its own pool only with
 * threads or inline: a worker process is a child ..., where the pool's calls
 * return FP_EINVAL"; with threads a free thread runs the task it waits
 * for; inline none can, and its wait ends at its timeout (0 here). */
START_TEST(a_task_uses_its_own_pool_only_with_threads_or_inline)
{
  static const unsigned modes[] = {FP_MODE_PROCESSES, FP_MODE_THREADS,
                                   FP_MODE_INLINE};
  static const int sub[] = {FP_EINVAL, 0, 0}, res[] = {FP_EINVAL, 0,
                                                       FP_ETIMEDOUT};
  static const int64_t val[] = {-1, 9, -1};
  fp_pool *p = make(modes[_i], 2, 0);
  fp_future *f;
  int64_t wait_ms = modes[_i] == FP_MODE_INLINE ? 0 : FPT_LIMIT_MS;
  ck_assert_int_eq(fp_submitf(p, "own_pool", &f, "[UI]",
                              (uint64_t)(uintptr_t)p, wait_ms), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, -1, &r), 0);
  int64_t got[3];
  ck_assert_int_eq(fp_unpack(r, "[III]", &got[0], &got[1], &got[2]), 0);
  ck_assert_int_eq(got[0], sub[_i]);
  ck_assert_int_eq(got[1], res[_i]);
  ck_assert_int_eq(got[2], val[_i]);
  fp_future_release(f);
  fpt_pool_destroy(p);
}
END_TEST

/* fp_pool_interrupt(3): "makes every wait on pool return FP_EINTR at
 * once", fp_pool_dispatch(3) included, "every later wait that would
 * block".  Inline, a dispatcher pass runs a task, which is how inline
 * waits: an interrupted fp_pool_dispatch runs none.  With processes and
 * threads the task never answers before the test lets it. */
START_TEST(interrupted_dispatch_returns_at_once_in_every_mode)
{
  static const unsigned modes[] = {FP_MODE_PROCESSES, FP_MODE_THREADS,
                                   FP_MODE_INLINE};
  int inl = modes[_i] == FP_MODE_INLINE;
  reset_deaf();
  fp_pool *p = make(modes[_i], 1, 0);
  fp_future *f;
  if (inl)
    ck_assert_int_eq(fp_submitf(p, "sq", &f, "[I]", (int64_t)3), 0);
  else
    ck_assert_int_eq(fp_submitf(p, "deaf", &f, "[]"), 0);
  ck_assert_int_eq(fp_pool_interrupt(p), 0);
  ck_assert_int_eq(fp_pool_dispatch(p, -1), FP_EINTR);
  ck_assert_int_eq(fp_pool_dispatch(p, 0), FP_EINTR);
  fp_pool_stats s = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &s, NULL, 0), 0);
  ck_assert_uint_eq(s.finished, 0);
  ck_assert_int_eq(fp_pool_interrupt_clear(p), 0);
  atomic_store(&release_deaf, 1);
  if (modes[_i] == FP_MODE_PROCESSES)
    ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
  else
    ck_assert_int_eq(fpt_i64(f), inl ? 9 : 7);
  fp_future_release(f);
  fpt_pool_destroy(p);
}
END_TEST

/* fp_pool_create(3) worker_stdout: "With threads or inline ... a task
 * writes to the caller's own standard output ..., whatever this field
 * says", the default FP_STDOUT_STDERR included; forkpool(7) Output. */
START_TEST(threads_and_inline_tasks_print_on_the_callers_stdout)
{
  unsigned mode = _i == 0 ? FP_MODE_THREADS : FP_MODE_INLINE;
  char path[] = "/tmp/fp-contract-stdout.XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  unlink(path);
  fflush(stdout);
  int saved = dup(1);
  ck_assert_int_ge(saved, 0);
  ck_assert_int_eq(dup2(fd, 1), 1);
  fp_pool *p = make(mode, 1, 0); /* worker_stdout: FP_STDOUT_STDERR */
  fp_future *f;
  int rc = fp_submitf(p, "say", &f, "[]");
  int64_t v = rc == 0 ? fpt_i64(f) : -1;
  if (rc == 0)
    fp_future_release(f);
  fpt_pool_destroy(p);
  dup2(saved, 1);
  close(saved);
  ck_assert_int_eq(v, 1);
  char buf[64] = "";
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  close(fd);
  ck_assert_int_eq(n, 5);
  ck_assert_str_eq(buf, "said\n");
}
END_TEST

/* fp_pool_join(3): it waits "until every task of pool has ended and then
 * every worker ... exited", and "in a pool of threads ... a task the pool
 * gave up on included ... the call waits for it"; then fp_pool_destroy(3)
 * "waits for nothing".  The given-up task returns when the test lets it. */
START_TEST(thread_join_waits_for_a_task_given_up_on)
{
  reset_deaf();
  fp_pool *p = make(FP_MODE_THREADS, 1, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "deaf", &f, "[]"), 0);
  wait_until(&deaf_running, 1);
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
  ck_assert_int_eq(fp_pool_shutdown(p, 0), 0);
  ck_assert_int_eq(fp_pool_join(p, 0), FP_ETIMEDOUT);
  fp_pool_status st = FP_POOL_STATUS_INIT;
  ck_assert_int_eq(fp_pool_status_get(p, &st), 0);
  ck_assert_int_eq(st.state, FP_POOL_SHUTTING_DOWN);
  ck_assert_int_eq(atomic_load(&deaf_returned), 0);
  atomic_store(&release_deaf, 1);
  ck_assert_int_eq(fp_pool_join(p, -1), 0);
  ck_assert_int_eq(atomic_load(&deaf_returned), 1);
  ck_assert_int_eq(fp_pool_status_get(p, &st), 0);
  ck_assert_int_eq(st.state, FP_POOL_SHUT_DOWN);
  fpt_pool_destroy(p);
  fp_future_release(f);
}
END_TEST

/* A msgpack str object of exactly n bytes, packed. */
static void pack_str_of(msgpack_packer *pk, size_t n)
{
  size_t body = n <= 32 ? n - 1 : n <= 257 ? n - 2 : n - 3;
  char *b = malloc(body);
  ck_assert_ptr_nonnull(b);
  memset(b, 'x', body);
  msgpack_pack_str(pk, body);
  msgpack_pack_str_body(pk, b, body);
  free(b);
}

/* fp_map(3) CAVEATS: "An item that fp_submit(3) would refuse as too large
 * ... fails alone with FP_EMSGSIZE", the first item too; fp_pool_create(3):
 * "Arguments larger than max_message - 287 bytes fail at submit". */
START_TEST(map_item_too_large_fails_alone)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 2;
  o.tasks = tasks;
  o.max_message = 1024;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  static const size_t sizes[] = {1024 - 286, 10, 1024 - 287, 900, 10};
  enum { N = sizeof sizes / sizeof sizes[0] };
  msgpack_sbuffer sb;
  msgpack_packer pk;
  for (unsigned i = 0; i < N; i++) { /* what fp_submit says */
    fp_future *f;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_str_of(&pk, sizes[i]);
    int rc = fp_submit(p, "sq", sb.data, sb.size, &f);
    ck_assert_int_eq(rc, sizes[i] > 1024 - 287 ? FP_EMSGSIZE : 0);
    if (rc == 0)
      fp_future_release(f);
    msgpack_sbuffer_destroy(&sb);
  }
  for (size_t chunksize = 0; chunksize <= 8; chunksize += 8) {
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, N);
    for (unsigned i = 0; i < N; i++)
      pack_str_of(&pk, sizes[i]);
    fp_map_input in = {sb.data, sb.size, NULL, NULL};
    fp_map_options mo = FP_MAP_OPTIONS_INIT;
    mo.chunksize = chunksize;
    fp_map_iter *m;
    fp_map_item it;
    ck_assert_int_eq(fpt_map(p, "sq", &in, &mo, &m), 0);
    size_t n = 0;
    int rc;
    while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
      ck_assert_uint_eq(it.index, n);
      n++;
      if (sizes[it.index] > 1024 - 287)
        ck_assert_int_eq(it.err, FP_EMSGSIZE);
      else /* sq takes [I]: a string is its TypeError, run by a worker */
        ck_assert_int_eq(it.err, FP_ETASK);
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(n, N);
    fpt_map_destroy(m);
    msgpack_sbuffer_destroy(&sb);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Seen by the test and by worker processes alike. */
static atomic_int *xstarted;

static int t_xpoll(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t how;
  if (fp_unpack(a, "[I]", &how) != 0)
    return fp_call_fail(c, "TypeError", "[I]");
  atomic_store(xstarted, 1);
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  while (!fp_call_should_stop(c) && fpt_now_ms() < end)
    usleep(1000);
  if (how == 1)
    return fp_call_fail(c, "Halt", "mine");
  return fp_pack(o, "I", (int64_t)getpid());
}

static const fp_task xtasks[] = {{"xpoll", t_xpoll}, {NULL, NULL}};

static void xstart_wait(fp_pool *p)
{
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  while (!atomic_load(xstarted) && fpt_now_ms() < end)
    (void)fp_pool_dispatch(p, 10);
  ck_assert_int_eq(atomic_load(xstarted), 1);
}

/* fp_future_cancel(3): a running task cancelled with FP_CANCEL_RUNNING
 * ends FP_CANCELLED with "cancelled while running" without a grace; with
 * one, with its own "kind: message" if it failed, else "cancelled while
 * running", and it keeps its worker.  In worker processes, also in a
 * replacement for a worker killed by a cancel. */
START_TEST(process_cancel_texts)
{
  fpt_snapshot s;
  fpt_begin(&s);
  xstarted = mmap(NULL, sizeof *xstarted, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(xstarted, MAP_FAILED);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 1;
  o.tasks = xtasks;
  ck_assert_int_eq(fpt_pool_create_as(&p, &o), 0);
  const int g = FPT_LIMIT_MS;
  const struct {
    int grace;
    int64_t how;
    const char *text;
  } cases[] = {
      {0, 1, "cancelled while running"},
      {g, 1, "Halt: mine"},
      {g, 0, "cancelled while running"},
      {0, 0, "cancelled while running"},
      {g, 1, "Halt: mine"}, /* after a replacement */
  };
  for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
    fp_future *f;
    so.grace_ms = cases[i].grace;
    atomic_store(xstarted, 0);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    ck_assert_int_eq(fp_pack(&pk, "[I]", cases[i].how), 0);
    ck_assert_int_eq(fp_submit_ex(p, "xpoll", sb.data, sb.size, &so, &f), 0);
    msgpack_sbuffer_destroy(&sb);
    xstart_wait(p);
    ck_assert_int_eq(fp_future_state(f), FP_RUNNING);
    fp_pool_stats st = FP_POOL_STATS_INIT;
    fp_worker_stats w1, w2;
    ck_assert_int_eq(fp_pool_stats_get(p, &st, &w1, 1), 0);
    ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
    ck_assert_int_eq(fp_future_wait(f, FPT_LIMIT_MS), 0);
    ck_assert_int_eq(fp_future_state(f), FP_CANCELLED);
    ck_assert_str_eq(fp_future_error(f), cases[i].text);
    if (cases[i].grace != 0) { /* a task that returns in time keeps it */
      ck_assert_int_eq(fp_pool_stats_get(p, &st, &w2, 1), 0);
      ck_assert_int_eq(w1.pid, w2.pid);
    }
    fp_future_release(f);
  }
  fpt_pool_destroy(p);
  munmap(xstarted, sizeof *xstarted);
  fpt_end(&s);
}
END_TEST

/* fp_pool_create(3), max_inflight: the automatic window is "between 2 (for
 * tasks of a millisecond or more, and until the first answers are in) and
 * 256".  One worker, 100 tasks of 2 ms: never more than 2 handed to it,
 * also right after the first answers (the mean once started at a sixteenth
 * of the first figure, and the window was 7 deep).  A slower machine only
 * makes the measured time longer and the window shallower. */
START_TEST(window_of_slow_tasks_is_two)
{
  enum { N = 100 };
  fp_pool *p = make(FP_MODE_PROCESSES, 1, 0);
  fp_future *f[N];
  uint64_t most = 0;
  for (unsigned i = 0; i < N; i++)
    ck_assert_int_eq(fp_submitf(p, "nap", &f[i], "I", (int64_t)2000), 0);
  for (unsigned i = 0; i < N; i++) {
    while (fp_future_wait(f[i], 0) != 0) {
      (void)fp_pool_dispatch(p, 5);
      fp_pool_stats st = FP_POOL_STATS_INIT;
      ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
      if (st.running > most)
        most = st.running;
    }
    fp_future_release(f[i]);
  }
  fpt_pool_destroy(p);
  ck_assert_msg(most <= 2, "%llu tasks of 2 ms handed to one worker at once",
                (unsigned long long)most);
}
END_TEST

/* ---- forkpool(7) Processes: the vfork() middle process ---- */

/* Under valgrind or TSan vfork is a fork: the vfork-only promises are not
 * the library's to keep there. */
static int vfork_is_fork(void)
{
  const char *lp = getenv("LD_PRELOAD");
#if defined(__SANITIZE_THREAD__)
  return 1;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
  return 1;
#endif
#endif
  return lp != NULL && strstr(lp, "vgpreload") != NULL;
}

/*
 * A sandbox's filter: the syscall nr gets ERRNO(err).  With fork_only, nr
 * is clone and only a clone without CLONE_THREAD (a fork, not a thread).
 */
static int refuse_syscall(int nr, int err, int fork_only)
{
#if defined(__x86_64__)
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, fork_only ? CLONE_THREAD : 0, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
#else
  (void)nr, (void)err, (void)fork_only;
  errno = ENOSYS;
  return -1;
#endif
}

/* Init of a pinned worker: sched_getcpu() is the kernel's answer. */
static int init_knows_cpu(void **state, void *arg, fp_call *call)
{
  (void)state, (void)arg;
  unsigned cpu = 0;
  int glibc = sched_getcpu();
  if (syscall(SYS_getcpu, &cpu, NULL, NULL) != 0 || glibc != (int)cpu)
    return fp_call_fail(call, "StaleCpu", "sched_getcpu() %d, getcpu %u",
                        glibc, cpu);
  return 0;
}

/* In a child process: vfork refused with err; a pool of pinned workers
 * that know their CPU is created, runs a task, is destroyed; no child is
 * left.  The exit status says what failed. */
static void child_with_vfork_refused(int err)
{
  if (refuse_syscall(SYS_vfork, err, 0) != 0)
    _exit(10);
  cpu_set_t mine;
  if (sched_getaffinity(0, sizeof mine, &mine) != 0)
    _exit(11);
  unsigned n = (unsigned)CPU_COUNT(&mine);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.tasks = tasks;
  o.workers = n < 8 ? n : 8;
  o.pin_workers = 1;
  o.init = init_knows_cpu;
  fp_pool *p;
  int rc = fp_pool_create(&p, &o);
  if (rc != 0)
    _exit(12);
  fp_future *f;
  const msgpack_object *r;
  if (fp_submitf(p, "sq", &f, "[I]", (int64_t)6) != 0 ||
      fp_future_result(f, FPT_LIMIT_MS, &r) != 0 || r->via.i64 != 36)
    _exit(13);
  fp_future_release(f);
  /* every worker's init agreed (a failed one would break the pool) */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  for (int64_t end = fpt_now_ms() + FPT_LIMIT_MS; fpt_now_ms() < end;) {
    (void)fp_pool_dispatch(p, 10);
    if (fp_pool_stats_get(p, &st, NULL, 0) != 0 || st.workers_live == st.workers)
      break;
  }
  fp_pool_status ps = FP_POOL_STATUS_INIT;
  if (fp_pool_status_get(p, &ps) != 0 || ps.state != FP_POOL_RUNNING ||
      st.workers_live != st.workers)
    _exit(14);
  fp_pool_destroy(p);
  if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
    _exit(15);
  /* the filter holds: a vfork refused with EAGAIN is create's FP_EAGAIN */
  _exit(0);
}

static int run_child(void (*body)(int), int arg)
{
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    body(arg);
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert_msg(WIFEXITED(st), "child: status %#x", st);
  return WEXITSTATUS(st);
}

/* forkpool(7): "where vfork(2) is refused (ENOSYS, EPERM), the
 * intermediate child is made with fork(2)": the pool works, its workers
 * still know their CPU, and nothing is left. */
START_TEST(create_works_when_a_sandbox_refuses_vfork)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int err = _i == 0 ? EPERM : ENOSYS;
  int rc = run_child(child_with_vfork_refused, err);
  if (rc == 10)
    fprintf(stderr, "skip: no seccomp filter here\n");
  else
    ck_assert_msg(rc == 0, "vfork refused with %s: child exit %d",
                  strerror(err), rc);
  fpt_end(&s);
}
END_TEST

/* In a child: nr (vfork, or a fork's clone) refused with EAGAIN; create
 * must fail with FP_EAGAIN (fp_pool_create(3) ERRORS) and leave nothing. */
static void child_with_fork_eagain(int which)
{
  int rc = which == 0 ? refuse_syscall(SYS_vfork, EAGAIN, 0)
                      : refuse_syscall(SYS_clone, EAGAIN, 1);
  if (rc != 0)
    _exit(10);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.tasks = tasks;
  o.workers = 1;
  fp_pool *p = (fp_pool *)&o;
  rc = fp_pool_create(&p, &o);
  if (rc != FP_EAGAIN) {
    fprintf(stderr, "create: %s (%s)\n", fp_err_name(rc),
            fp_pool_create_error() ? fp_pool_create_error() : "-");
    _exit(rc == 0 ? 20 : 21);
  }
  if (p != NULL)
    _exit(22);
  if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
    _exit(23);
  _exit(0);
}

START_TEST(create_is_eagain_when_vfork_or_fork_fails)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int rc = run_child(child_with_fork_eagain, _i);
  if (rc == 10 || (_i == 0 && rc == 20 && vfork_is_fork()))
    fprintf(stderr, "skip: no seccomp filter, or no vfork, here\n");
  else
    ck_assert_msg(rc == 0, "%s refused with EAGAIN: child exit %d",
                  _i == 0 ? "vfork" : "fork", rc);
  fpt_end(&s);
}
END_TEST

/* forkpool(7): "The caller's pthread_atfork(3) prepare and parent handlers
 * then run in the intermediate child, on the caller's memory, as they would
 * around a fork(2) in the calling thread, except that getpid(2) there names
 * the intermediate child"; the child handler runs in the fork server, on
 * its own memory.  Plain globals: what the caller sees after create was
 * written on its memory. */
static volatile pid_t prep_pid, parent_pid;
static volatile int prep_calls, parent_calls, child_calls;
static pthread_t prep_thread;
static void rec_prepare(void)
{
  if (prep_calls++ == 0) {
    prep_pid = getpid();
    prep_thread = pthread_self();
  }
}
static void rec_parent(void)
{
  if (parent_calls++ == 0)
    parent_pid = getpid();
}
static void rec_child(void)
{
  child_calls++;
}

static void child_atfork(int refused)
{
  if (refused && refuse_syscall(SYS_vfork, EPERM, 0) != 0)
    _exit(10);
  if (pthread_atfork(rec_prepare, rec_parent, rec_child) != 0)
    _exit(11);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.tasks = tasks;
  o.workers = 1;
  fp_pool *p;
  if (fp_pool_create(&p, &o) != 0)
    _exit(12);
  int prep = prep_calls, par = parent_calls, ch = child_calls;
  pid_t pp = prep_pid, parp = parent_pid;
  int same_thread = prep != 0 && pthread_equal(prep_thread, pthread_self());
  fp_pool_destroy(p);
  /* Valgrind's vfork is a raw fork, no glibc fork(): the handlers run
   * only in that copy of the caller's memory, outside what the page says. */
  if (vfork_is_fork())
    _exit(0);
  if (prep != 1 || par != 1 || ch != 0)
    _exit(13);
  if (!same_thread)
    _exit(14);
  if (pp != parp)
    _exit(15);
  if (!refused && !vfork_is_fork() && pp == getpid())
    _exit(16); /* ran in the caller, not in a vfork child */
  if (refused && pp != getpid())
    _exit(17); /* a fork in the calling thread: the caller's own pid */
  _exit(0);
}

START_TEST(atfork_handlers_run_on_the_callers_memory)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int rc = run_child(child_atfork, _i);
  if (rc == 10)
    fprintf(stderr, "skip: no seccomp filter here\n");
  else
    ck_assert_msg(rc == 0, "%s: child exit %d",
                  _i ? "vfork refused" : "vfork", rc);
  fpt_end(&s);
}
END_TEST

/* Create and destroy from one thread while others fork, allocate, write
 * to a FILE and reap with waitpid(-1) (the fixture makes this process a
 * subreaper, so the fork servers are its children too): every create
 * succeeds, nothing hangs, nothing is left. */
static atomic_int churn_stop;
static void *fork_churn(void *arg)
{
  (void)arg;
  while (!atomic_load(&churn_stop)) {
    pid_t pid = fork();
    if (pid == 0)
      _exit(0);
    if (pid > 0)
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
  }
  return NULL;
}
static void *malloc_churn(void *arg)
{
  (void)arg;
  while (!atomic_load(&churn_stop)) {
    void *v[64];
    for (int i = 0; i < 64; i++)
      v[i] = malloc((size_t)(i + 1) * 97);
    for (int i = 0; i < 64; i++)
      free(v[i]);
  }
  return NULL;
}

/* Writes to a FILE: glibc's fork takes every FILE's list lock. */
static void *stdio_churn(void *arg)
{
  FILE *f = fopen("/dev/null", "we");
  (void)arg;
  while (f != NULL && !atomic_load(&churn_stop))
    fprintf(f, "%d\n", 42);
  if (f != NULL)
    fclose(f);
  return NULL;
}
/* Reaps with waitpid(-1), as forkpool(7) says a caller may: it may take
 * the intermediate child or a subreaper's fork server before the pool. */
static void *reap_any(void *arg)
{
  (void)arg;
  while (!atomic_load(&churn_stop))
    if (waitpid(-1, NULL, WNOHANG) <= 0)
      sched_yield();
  return NULL;
}

START_TEST(create_while_other_threads_fork_and_allocate)
{
  if (vfork_is_fork()) {
    /* Each forked child would run valgrind's leak check on a copy of
     * the other threads' heap, whose pointers live on stacks the child
     * has not: slow, and false reports.  The threads are the point. */
    fprintf(stderr, "skip: create beside forking threads, under valgrind or TSan\n");
    return;
  }
  fpt_snapshot s;
  fpt_begin(&s);
  atomic_store(&churn_stop, 0);
  pthread_t t[4];
  void *(*body[4])(void *) = {fork_churn, malloc_churn, stdio_churn, reap_any};
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, body[i], NULL), 0);
  int bad = 0;
  for (int i = 0; i < (int)fpt_scaled(30, 5); i++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    o.tasks = tasks;
    o.workers = 2;
    fp_pool *p;
    int rc = fp_pool_create(&p, &o);
    if (rc != 0) {
      bad = rc;
      break;
    }
    fp_future *f;
    if (fp_submitf(p, "sq", &f, "[I]", (int64_t)i) != 0 || fpt_i64(f) != (int64_t)i * i)
      bad = 1;
    fp_future_release(f);
    fp_pool_destroy(p);
  }
  atomic_store(&churn_stop, 1);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  ck_assert_msg(bad == 0, "create or task: %d", bad);
  fpt_end(&s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("contract");
  TCase *tc = fpt_tcase(s, "create", 120);
  tcase_add_test(tc, create_refuses_bad_options);
  tcase_add_test(tc, create_accepts_the_limits);
  tcase_add_test(tc, create_refuses_process_options_in_other_modes);
  tcase_add_test(tc, other_modes_create_after_every_init);
  tcase_add_test(tc, create_returns_once_one_worker_is_ready);
  tcase_add_test(tc, late_init_failure_breaks_the_pool);
  fpt_add_test_in(FPT_IN_PROCESSES, "counts worker pipes", tc,
                  descriptors_are_four_plus_three_per_worker);
  tcase_add_loop_test(tc, descriptors_with_threads_and_inline, 0, 2);
  tcase_add_test(tc, inline_ignores_workers_and_max_inflight);
  tcase_add_loop_test(tc, status_and_live_workers_follow_shutdown_in_every_mode, 0, 3);
  tcase_add_loop_test(tc, a_task_uses_its_own_pool_only_with_threads_or_inline, 0, 3);
  tcase_add_loop_test(tc, interrupted_dispatch_returns_at_once_in_every_mode, 0, 3);
  tcase_add_loop_test(tc, threads_and_inline_tasks_print_on_the_callers_stdout, 0, 2);
  tcase_add_test(tc, thread_join_waits_for_a_task_given_up_on);
  tcase_add_test(tc, default_workers_follow_the_affinity_mask);
  fpt_add_test_in(FPT_IN_PROCESSES, "forks a fork server", tc,
                  atfork_handlers_run_around_create);
  tcase_add_test(tc, stats_sizes_old_and_unknown);
  tcase_add_loop_test(tc, create_works_when_a_sandbox_refuses_vfork, 0, 2);
  tcase_add_loop_test(tc, create_is_eagain_when_vfork_or_fork_fails, 0, 2);
  tcase_add_loop_test(tc, atfork_handlers_run_on_the_callers_memory, 0, 2);
  tcase_add_test(tc, create_while_other_threads_fork_and_allocate);
  fpt_add_test_in(FPT_IN_PROCESSES, "a worker process's window", tc,
                  window_of_slow_tasks_is_two);
  tc = fpt_tcase(s, "calls", 120);
  tcase_add_test(tc, submit_refuses_bad_input);
  tcase_add_test(tc, cancel_refuses_bad_input);
  tcase_add_test(tc, cancel_runs_callbacks_and_wakes_waiters);
  tcase_add_test(tc, map_refuses_bad_input);
  tcase_add_test(tc, calls_from_a_child_are_einval);
  tcase_add_test(tc, map_input_errors);
  tcase_add_test(tc, map_timeout_is_sticky);
  tcase_add_test(tc, map_item_too_large_fails_alone);
  tcase_add_test(tc, should_stop_is_0_for_null_and_in_init);
  tc = fpt_tcase(s, "modes", 120);
  tcase_add_test(tc, inline_refuses_deadlines_and_cancel_of_the_running_task);
  tcase_add_test(tc, threads_refuse_map_deadline);
  tcase_add_test(tc, thread_deadline_gives_up_without_grace);
  tcase_add_test(tc, thread_deadline_with_grace_polling_task);
  tcase_add_test(tc, thread_grace_over_text);
  tcase_add_test(tc, old_submit_options_get_the_pool_grace);
  tcase_add_test(tc, thread_cancel_running_without_grace);
  tcase_add_test(tc, thread_cancel_running_with_grace);
  tcase_add_test(tc, thread_cancel_of_a_task_handed_back_by_the_read);
  tcase_add_test(tc, thread_cancel_before_the_thread_takes_the_task);
  tcase_add_test(tc, cancel_with_grace_before_start_has_a_text_of_its_own);
  tcase_add_loop_test(tc, thread_terminate_and_kill_ask, 0, 2);
  fpt_add_test_in(FPT_IN_PROCESSES, "kills worker processes", tc,
                  process_cancel_texts);
  fpt_run_suite(s);
}

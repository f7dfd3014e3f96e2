/* What a program asks of a pool beyond submitting, with real workers: its
 * state and why it broke, waking every wait from a signal handler, a
 * failure in parts, a join with a timeout, a whole-map timeout and map
 * items that know their input. */
#define _GNU_SOURCE
#include "fpt.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static fp_pool_status status(fp_pool *p)
{
  fp_pool_status st = FP_POOL_STATUS_INIT;
  ck_assert_int_eq(fp_pool_status_get(p, &st), 0);
  return st;
}

static fp_future *submit_gate(fp_pool *p, const char *gate)
{
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "gate", &f, "[s]", gate), 0);
  return f;
}

static int64_t now_ms(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* --- fp_pool_status_get ---------------------------------------------------- */

START_TEST(status_follows_the_pool)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_pool_status st = status(p);
  ck_assert_int_eq(st.state, FP_POOL_RUNNING);
  ck_assert_int_eq(st.err, 0);
  ck_assert_str_eq(st.reason, "");
  ck_assert_int_eq(st.interrupted, 0);
  /* Bad input: no pool, no struct, sizes it cannot be. */
  ck_assert_int_eq(fp_pool_status_get(NULL, &st), FP_EINVAL);
  ck_assert_int_eq(fp_pool_status_get(p, NULL), FP_EINVAL);
  st.size = 0;
  ck_assert_int_eq(fp_pool_status_get(p, &st), FP_EINVAL);
  st.size = SIZE_MAX;
  ck_assert_int_eq(fp_pool_status_get(p, &st), FP_EINVAL);

  char gate[256];
  fpt_gate_make(gate, sizeof gate);
  fp_future *f = submit_gate(p, gate);
  ck_assert_int_eq(fp_pool_shutdown(p, 0), 0);
  ck_assert_int_eq(status(p).state, FP_POOL_SHUTTING_DOWN);
  fpt_gate_open(gate);
  ck_assert_int_eq(fp_pool_join(p, FPT_LIMIT_MS), 0);
  ck_assert_int_eq(status(p).state, FP_POOL_SHUT_DOWN);
  ck_assert_int_gt(fpt_i64(f), 0);
  fp_future_release(f);
  fpt_gate_remove(gate);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(status_says_why_it_broke)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 1;
  o.tasks = fpt_tasks;
  o.restart_limit = 1; /* the second death in a row breaks it */
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  fp_future *f[2];
  const msgpack_object *r;
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(fp_submitf(p, "segv", &f[i], "[]"), 0);
  for (int i = 0; i < 2; i++) {
    int rc = fp_future_result(f[i], FPT_LIMIT_MS, &r);
    ck_assert(rc == FP_EWORKER || rc == FP_EBROKEN);
    fp_future_release(f[i]);
  }
  /* Asked without a submit, after no wait on the pool itself. */
  fp_pool_status st = status(p);
  ck_assert_int_eq(st.state, FP_POOL_BROKEN);
  ck_assert_int_eq(st.err, FP_EBROKEN);
  ck_assert_msg(strstr(st.reason, "crash loop") != NULL, "%s", st.reason);
  /* A program built with a shorter struct gets what fits. */
  fp_pool_status small = FP_POOL_STATUS_INIT;
  small.size = offsetof(fp_pool_status, interrupted);
  small.interrupted = 77;
  ck_assert_int_eq(fp_pool_status_get(p, &small), 0);
  ck_assert_int_eq(small.state, FP_POOL_BROKEN);
  ck_assert_int_eq(small.interrupted, 77);
  /* Shut down, it stays broken: the reason is kept. */
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0);
  ck_assert_int_eq(status(p).state, FP_POOL_BROKEN);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- fp_pool_interrupt ----------------------------------------------------- */

static _Atomic(fp_pool *) handler_pool;

static void on_usr1(int sig)
{
  (void)sig;
  (void)fp_pool_interrupt(atomic_load(&handler_pool));
}

struct shooter {
  pthread_t target;
  int64_t sent_ms;
};

/* Sends SIGUSR1 to the waiting thread.  Whether it comes before or during
 * the wait does not matter: the interrupt is sticky. */
static void *shoot(void *arg)
{
  struct shooter *sh = arg;
  sh->sent_ms = now_ms();
  pthread_kill(sh->target, SIGUSR1);
  return NULL;
}

static int map_gates(void *arg, msgpack_packer *pk)
{
  return fp_pack(pk, "[s]", (const char *)arg) == 0 ? 1 : -1;
}

START_TEST(interrupt_wakes_every_wait)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  struct sigaction sa = {.sa_handler = on_usr1}, old;
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old), 0);
  atomic_store(&handler_pool, p);
  char gate[256], mgate[256]; /* a gate per waiting task: each reads one */
  fpt_gate_make(gate, sizeof gate);
  fpt_gate_make(mgate, sizeof mgate);
  fp_future *g = submit_gate(p, gate), *sq;
  ck_assert_int_eq(fp_submitf(p, "square", &sq, "[I]", (int64_t)3), 0);
  ck_assert_int_eq(fpt_i64(sq), 9);

  /* A wait blocked for good returns FP_EINTR when the handler runs. */
  struct shooter sh = {pthread_self(), 0};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, shoot, &sh), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(g, -1, &r), FP_EINTR);
  int64_t woke_ms = now_ms();
  pthread_join(t, NULL);
  fprintf(stderr, "interrupt: the wait returned %lld ms after the signal\n",
          (long long)(woke_ms - sh.sent_ms));
  ck_assert_ptr_null(r);
  ck_assert_int_eq(status(p).interrupted, 1);

  /* Sticky: every later wait that would block returns at once. */
  ck_assert_int_eq(fp_future_wait(g, -1), FP_EINTR);
  ck_assert_int_eq(fp_future_wait(g, 0), FP_EINTR);
  fp_future *both[2] = {g, sq};
  size_t n_done = 9;
  ck_assert_int_eq(fp_wait(both, 2, FP_ALL_COMPLETED, -1, &n_done), FP_EINTR);
  ck_assert_uint_eq(n_done, 1);
  ck_assert_int_eq(fp_pool_dispatch(p, -1), 1); /* sq's, unreported */
  ck_assert_int_eq(fp_pool_dispatch(p, -1), FP_EINTR);
  fp_as_completed *it;
  ck_assert_int_eq(fp_as_completed_create(&it, both, 2, -1), 0);
  fp_future *next;
  ck_assert_int_eq(fp_as_completed_next(it, &next), 1); /* sq: done */
  ck_assert_ptr_eq(next, sq);
  ck_assert_int_eq(fp_as_completed_next(it, &next), FP_EINTR);
  fp_as_completed_destroy(it);
  fp_map_input in = {NULL, 0, map_gates, mgate};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  mo.buffersize = 1;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "gate", &in, &mo, &m), 0);
  fp_map_item item;
  ck_assert_int_eq(fp_map_next(m, -1, &item), FP_EINTR);
  /* A wait whose condition is met returns as usual. */
  ck_assert_int_eq(fp_future_result(sq, -1, &r), 0);
  ck_assert_int_eq(fp_future_wait(sq, 0), 0);
  ck_assert_int_eq(fp_pool_shutdown(p, 0), 0);
  ck_assert_int_eq(fp_pool_join(p, -1), FP_EINTR);

  /* Cleared, waits block again. */
  ck_assert_int_eq(fp_pool_interrupt_clear(p), 0);
  ck_assert_int_eq(status(p).interrupted, 0);
  ck_assert_int_eq(fp_future_wait(g, 0), FP_ETIMEDOUT);
  fpt_gate_open(gate); /* the plain task */
  ck_assert_int_gt(fpt_i64(g), 0);
  fpt_gate_open(mgate); /* the map's item */
  ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &item), 1);
  ck_assert_int_eq(item.err, 0);
  /* Bad input; shutdown and destroy are not waits it stops. */
  ck_assert_int_eq(fp_pool_interrupt(NULL), FP_EINVAL);
  ck_assert_int_eq(fp_pool_interrupt_clear(NULL), FP_EINVAL);
  ck_assert_int_eq(fp_pool_interrupt(p), 0);
  ck_assert_int_eq(fp_pool_interrupt(p), 0); /* twice is once */
  pid_t child = fork();
  if (child == 0)
    _exit(fp_pool_interrupt(p) == FP_EINVAL ? 0 : 1);
  int ws;
  ck_assert_int_eq(waitpid(child, &ws, 0), child);
  ck_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
  fpt_map_destroy(m); /* the input made more; they are cancelled */
  atomic_store(&handler_pool, NULL);
  sigaction(SIGUSR1, &old, NULL);
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0);
  ck_assert_int_eq(status(p).state, FP_POOL_SHUT_DOWN);
  ck_assert_str_eq(fp_err_name(FP_EINTR), "FP_EINTR");
  ck_assert_ptr_nonnull(strstr(fp_strerror(FP_EINTR), "fp_pool_interrupt"));
  fp_future_release(g);
  fp_future_release(sq);
  fpt_gate_remove(gate);
  fpt_gate_remove(mgate);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- fp_future_error_info -------------------------------------------------- */

static fp_error_info info_of(fp_future *f, int want_rc)
{
  fp_error_info e = FP_ERROR_INFO_INIT;
  ck_assert_int_eq(fp_future_error_info(f, &e), want_rc);
  return e;
}

START_TEST(error_info_in_parts)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  const msgpack_object *r;
  fp_future *fail, *segv, *ex3, *late, *ok;
  ck_assert_int_eq(fp_submitf(p, "fail", &fail, "[]"), 0);
  ck_assert_int_eq(fp_future_result(fail, FPT_LIMIT_MS, &r), FP_ETASK);
  fp_error_info e = info_of(fail, 1);
  ck_assert_int_eq(e.err, FP_ETASK);
  ck_assert_str_eq(e.kind, "ValueError");
  ck_assert_str_eq(e.message, "bad value 42");
  ck_assert_str_eq(fp_future_error(fail), "ValueError: bad value 42");
  ck_assert_int_eq(e.pid, 0);
  ck_assert_int_eq(e.exit_status, -1);
  ck_assert_int_eq(e.signal, 0);

  ck_assert_int_eq(fp_submitf(p, "segv", &segv, "[]"), 0);
  ck_assert_int_eq(fp_future_result(segv, FPT_LIMIT_MS, &r), FP_EWORKER);
  e = info_of(segv, 1);
  ck_assert_str_eq(e.kind, "FP_EWORKER");
  ck_assert_str_eq(e.message, fp_future_error(segv));
  ck_assert_int_gt(e.pid, 0);
  ck_assert_int_eq(e.signal, SIGSEGV);
  ck_assert_int_eq(e.exit_status, -1);

  ck_assert_int_eq(fp_submitf(p, "exit3", &ex3, "[]"), 0);
  ck_assert_int_eq(fp_future_result(ex3, FPT_LIMIT_MS, &r), FP_EWORKER);
  e = info_of(ex3, 1);
  ck_assert_int_gt(e.pid, 0);
  ck_assert_int_eq(e.exit_status, 3);
  ck_assert_int_eq(e.signal, 0);

  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = 100;
  ck_assert_int_eq(fp_submit_ex(p, "forever", "\x90", 1, &so, &late), 0);
  ck_assert_int_eq(fp_future_result(late, FPT_LIMIT_MS, &r), FP_EDEADLINE);
  e = info_of(late, 1);
  ck_assert_str_eq(e.kind, "FP_EDEADLINE");
  ck_assert_int_gt(e.pid, 0);
  ck_assert_int_eq(e.signal, SIGKILL);

  /* No failure: 0, and nothing to read. */
  ck_assert_int_eq(fp_submitf(p, "square", &ok, "[I]", (int64_t)2), 0);
  ck_assert_int_eq(fpt_i64(ok), 4);
  e = info_of(ok, 0);
  ck_assert_int_eq(e.err, 0);
  ck_assert_ptr_null(e.kind);
  ck_assert_ptr_null(e.message);
  ck_assert_int_eq(e.pid, 0);

  /* Bad input, and a program built with a struct that ends at message. */
  ck_assert_int_eq(fp_future_error_info(NULL, &e), FP_EINVAL);
  ck_assert_int_eq(fp_future_error_info(fail, NULL), FP_EINVAL);
  e.size = 0;
  ck_assert_int_eq(fp_future_error_info(fail, &e), FP_EINVAL);
  e.size = SIZE_MAX;
  ck_assert_int_eq(fp_future_error_info(fail, &e), FP_EINVAL);
  fp_error_info small = FP_ERROR_INFO_INIT;
  small.size = offsetof(fp_error_info, pid);
  small.pid = 77;
  ck_assert_int_eq(fp_future_error_info(segv, &small), 1);
  ck_assert_int_eq(small.pid, 77);
  ck_assert_int_eq(small.err, FP_EWORKER);

  fp_future_release(fail);
  fp_future_release(segv);
  fp_future_release(ex3);
  fp_future_release(late);
  fp_future_release(ok);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(error_info_of_a_cancelled_task)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 1);
  char gate[256];
  fpt_gate_make(gate, sizeof gate);
  fp_future *g = submit_gate(p, gate), *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)2), 0);
  info_of(f, 0); /* not done */
  ck_assert_int_eq(fp_future_cancel(f, 0), 0);
  fp_error_info e = info_of(f, 1);
  ck_assert_int_eq(e.err, FP_ECANCELLED);
  ck_assert_str_eq(e.kind, "FP_ECANCELLED");
  ck_assert_str_eq(e.message, "cancelled");
  fpt_gate_open(gate);
  ck_assert_int_gt(fpt_i64(g), 0);
  fp_future_release(g);
  fp_future_release(f);
  fpt_gate_remove(gate);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- fp_pool_join ------------------------------------------------------------ */

START_TEST(join_with_a_timeout)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  char gate[256];
  fpt_gate_make(gate, sizeof gate);
  fp_future *g = submit_gate(p, gate);
  ck_assert_int_eq(fp_pool_join(NULL, 0), FP_EINVAL);
  ck_assert_int_eq(fp_pool_join(p, 0), FP_EINVAL); /* not shut down */
  ck_assert_int_eq(fp_pool_shutdown(p, 0), 0);
  ck_assert_int_eq(fp_pool_join(p, -2), FP_EINVAL);
  ck_assert_int_eq(fp_pool_join(p, INT_MIN), FP_EINVAL);
  ck_assert_int_eq(fp_pool_join(p, 0), FP_ETIMEDOUT);
  int64_t t0 = now_ms();
  ck_assert_int_eq(fp_pool_join(p, 100), FP_ETIMEDOUT);
  ck_assert_int_ge(now_ms() - t0, 100);
  ck_assert_int_eq(status(p).state, FP_POOL_SHUTTING_DOWN);
  fpt_gate_open(gate);
  ck_assert_int_eq(fp_pool_join(p, INT_MAX), 0);
  ck_assert_int_eq(status(p).state, FP_POOL_SHUT_DOWN);
  ck_assert_int_eq(fp_pool_join(p, 0), 0); /* again: done */
  ck_assert_int_gt(fpt_i64(g), 0);
  fp_future_release(g);
  fpt_gate_remove(gate);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* After fp_pool_kill, join waits for the killed worker and the fork
 * server to exit. */
START_TEST(join_after_kill)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "forever", &f, "[]"), 0);
  ck_assert_int_eq(fp_future_state(f), FP_RUNNING);
  ck_assert_int_eq(fp_pool_kill(p), 0);
  ck_assert_int_eq(fp_pool_join(p, FPT_LIMIT_MS), 0);
  ck_assert_int_eq(status(p).state, FP_POOL_SHUT_DOWN);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- map: timeout_ms and item_args ---------------------------------------- */

static void pack_gates(msgpack_sbuffer *sb, const char *gate, int n)
{
  msgpack_packer pk;
  msgpack_sbuffer_init(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, (size_t)n);
  for (int i = 0; i < n; i++)
    ck_assert_int_eq(fp_pack(&pk, "[s]", gate), 0);
}

START_TEST(map_timeout_is_for_good)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  char gate[256];
  fpt_gate_make(gate, sizeof gate);
  msgpack_sbuffer sb;
  pack_gates(&sb, gate, 6);
  fp_map_input in = {sb.data, sb.size, NULL, NULL};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  fp_map_iter *m;
  /* Bad options. */
  mo.timeout_ms = -1;
  ck_assert_int_eq(fpt_map(p, "gate", &in, &mo, &m), FP_EINVAL);
  mo.timeout_ms = 100;
  mo.timeout_cancel = 2;
  ck_assert_int_eq(fpt_map(p, "gate", &in, &mo, &m), FP_EINVAL);
  mo.timeout_cancel = FP_CANCEL_RUNNING;
  mo.item_args = 2;
  ck_assert_int_eq(fpt_map(p, "gate", &in, &mo, &m), FP_EINVAL);
  mo.item_args = 0;
  /* No gate opens: nothing can finish, whatever the machine's speed. */
  int64_t t0 = now_ms();
  ck_assert_int_eq(fpt_map_unordered(p, "gate", &in, &mo, &m), 0);
  fp_map_item item;
  ck_assert_int_eq(fp_map_next(m, -1, &item), FP_ETIMEDOUT);
  ck_assert_int_ge(now_ms() - t0, 100);
  ck_assert_int_eq(fp_map_next(m, 0, &item), FP_ETIMEDOUT);
  ck_assert_int_eq(fp_map_next(m, -1, &item), FP_ETIMEDOUT);
  fpt_map_destroy(m);
  /* Its running items were killed: the pool is idle and answers. */
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)5), 0);
  ck_assert_int_eq(fpt_i64(f), 25);
  fp_future_release(f);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.running + st.queued, 0);
  msgpack_sbuffer_destroy(&sb);
  fpt_gate_remove(gate);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(map_timeout_not_reached)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  fp_map_input in = {"\x93\x01\x02\x03", 4, NULL, NULL};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  mo.timeout_ms = INT_MAX; /* huge: never reached */
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq", &in, &mo, &m), 0);
  fp_map_item item;
  uint64_t sum = 0;
  int rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &item)) == 1)
    sum += item.result->via.u64;
  ck_assert_int_eq(rc, 0);
  ck_assert_uint_eq(sum, 14);
  fpt_map_destroy(m);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* A lazy input of [x] for x = 0 .. r->end - 1. */
struct upto {
  int next, end;
};

static int upto(void *arg, msgpack_packer *pk)
{
  struct upto *r = arg;
  if (r->next == r->end)
    return 0;
  return fp_pack(pk, "[I]", (int64_t)r->next++) == 0 ? 1 : -1;
}

/* Each item's args is its input; items bad_a and bad_b fail. */
static void check_args(fp_pool *p, const char *task, int end, size_t chunksize,
                       int bad_a, int bad_b)
{
  struct upto r = {0, end};
  fp_map_input in = {NULL, 0, upto, &r};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  mo.item_args = 1;
  mo.chunksize = chunksize;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, task, &in, &mo, &m), 0);
  fp_map_item item;
  size_t n = 0;
  while (fp_map_next(m, FPT_LIMIT_MS, &item) == 1) {
    int64_t x;
    ck_assert_ptr_nonnull(item.args);
    ck_assert_int_eq(fp_unpack(item.args, "[I]", &x), 0);
    ck_assert_int_eq(x, (int64_t)item.index);
    ck_assert_int_eq(item.err != 0, x == bad_a || x == bad_b);
    n++;
  }
  ck_assert_uint_eq(n, (size_t)end);
  fpt_map_destroy(m);
}

START_TEST(map_items_know_their_input)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  check_args(p, "sq_or_fail", 12, 4, 3, 7); /* failures inside chunks */
  check_args(p, "sq_or_segv", 6, 3, 5, -1); /* the crash splits a chunk */
  /* Without item_args the field is not written: a 0.1 program's struct
   * ends before it. */
  fp_map_input in = {"\x92\x91\x01\x91\x02", 5, NULL, NULL};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "square", &in, &mo, &m), 0);
  fp_map_item item;
  const msgpack_object sentinel = {0};
  item.args = &sentinel;
  ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &item), 1);
  ck_assert_ptr_eq(item.args, &sentinel);
  fpt_map_destroy(m);
  /* An array input: args point into it, containers too. */
  mo.item_args = 1;
  ck_assert_int_eq(fpt_map(p, "square", &in, &mo, &m), 0);
  for (int64_t want = 1; want <= 2; want++) {
    int64_t x;
    ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &item), 1);
    ck_assert_int_eq(fp_unpack(item.args, "[I]", &x), 0);
    ck_assert_int_eq(x, want);
    ck_assert_int_eq(item.result->via.i64, want * want);
  }
  fpt_map_destroy(m);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("state");
  TCase *tc = fpt_tcase(s, "state", 300);
  tcase_add_test(tc, status_follows_the_pool);
  tcase_add_test(tc, status_says_why_it_broke);
  tcase_add_test(tc, interrupt_wakes_every_wait);
  tcase_add_test(tc, error_info_in_parts);
  tcase_add_test(tc, error_info_of_a_cancelled_task);
  tcase_add_test(tc, join_with_a_timeout);
  tcase_add_test(tc, join_after_kill);
  tcase_add_test(tc, map_timeout_is_for_good);
  tcase_add_test(tc, map_timeout_not_reached);
  tcase_add_test(tc, map_items_know_their_input);
  fpt_run_suite(s);
}

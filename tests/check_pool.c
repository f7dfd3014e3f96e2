/* The core executor with real workers: results, errors, bad input,
 * cancellation, timeouts, shutdown, threads, event loops, signals. */
#define _GNU_SOURCE
#include "fpt.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

START_TEST(happy_path)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)7), 0);
  ck_assert_int_eq(fpt_i64(f), 49);
  ck_assert_int_eq(fp_future_state(f), FP_FINISHED);
  ck_assert_ptr_null(fp_future_error(f));
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(ten_thousand_tasks)
{
  const int64_t N = (int64_t)fpt_scaled(10000, 200);
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  fp_future **f = calloc(N, sizeof *f);
  for (int64_t i = 0; i < N; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", i), 0);
  for (int64_t i = 0; i < N; i++) {
    ck_assert_int_eq(fpt_i64(f[i]), i * i);
    fp_future_release(f[i]);
  }
  free(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(unknown_task_is_refused_at_submit)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f = (fp_future *)&s;
  ck_assert_int_eq(fp_submitf(p, "no-such-task", &f, "[]"), FP_ENOTASK);
  ck_assert_ptr_null(f);
  char long_name[300];
  memset(long_name, 'a', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  ck_assert_int_eq(fp_submitf(p, long_name, &f, "[]"), FP_EINVAL);
  ck_assert_int_eq(fp_submitf(p, "", &f, "[]"), FP_EINVAL);
  ck_assert_int_eq(fp_submitf(p, NULL, &f, "[]"), FP_EINVAL);
  /* The pool still works. */
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)3), 0);
  ck_assert_int_eq(fpt_i64(f), 9);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(malformed_args_are_refused)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f;
  static const char truncated[] = {(char)0x92, 0x01}; /* array of 2, 1 item */
  static const char two[] = {0x01, 0x02};             /* two objects */
  static const char reserved[] = {(char)0xc1};        /* never used byte */
  ck_assert_int_eq(fp_submit(p, "echo", truncated, sizeof truncated, &f),
                   FP_EINVAL);
  ck_assert_int_eq(fp_submit(p, "echo", two, sizeof two, &f), FP_EINVAL);
  ck_assert_int_eq(fp_submit(p, "echo", reserved, 1, &f), FP_EINVAL);
  ck_assert_int_eq(fp_submit(p, "echo", "", 0, &f), FP_EINVAL);
  ck_assert_int_eq(fp_submit(p, "echo", NULL, 3, &f), FP_EINVAL);
  ck_assert_int_eq(fp_submit(p, "echo", two, 1, NULL), FP_EINVAL);
  ck_assert_int_eq(fp_submit(NULL, "echo", two, 1, &f), FP_EINVAL);
  ck_assert_int_eq(fp_submitf(p, "echo", &f, "[I", (int64_t)1), FP_EINVAL);
  ck_assert_int_eq(fp_submitf(p, "echo", &f, "s", NULL), FP_EINVAL);
  /* A task that gets arguments of the wrong shape says so. */
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[s]", "x"), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_ETASK);
  ck_assert_ptr_null(r);
  ck_assert_str_eq(fp_future_error(f), "TypeError: square takes one integer");
  fp_future_release(f);
  /* One valid object goes through untouched. */
  ck_assert_int_eq(fp_submit(p, "echo", two, 1, &f), 0);
  ck_assert_int_eq(fpt_i64(f), 1);
  fp_future_release(f);
  /* msgpack-c reads containers 32 deep, not 33: 33 is refused up front. */
  char deep[34];
  memset(deep, (char)0x91, 33); /* arrays of one, 33 of them, around 1 */
  deep[33] = 0x01;
  ck_assert_int_eq(fp_submit(p, "echo", deep, sizeof deep, &f), FP_EINVAL);
  ck_assert_int_eq(fp_submit(p, "echo", deep + 1, sizeof deep - 1, &f), 0);
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), 0);
  for (int d = 0; d < 32; d++) {
    ck_assert_int_eq(r->type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(r->via.array.size, 1);
    r = r->via.array.ptr;
  }
  ck_assert_int_eq(r->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

static void expect_task_error(fp_pool *p, const char *task, const char *kind)
{
  fp_future *f;
  const msgpack_object *r;
  ck_assert_int_eq(fp_submitf(p, task, &f, "[]"), 0);
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_ETASK);
  ck_assert_int_eq(fp_future_state(f), FP_FAILED);
  ck_assert_msg(strncmp(fp_future_error(f), kind, strlen(kind)) == 0,
                "%s: %s", task, fp_future_error(f));
  fp_future_release(f);
}

START_TEST(task_failures_are_clear)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  expect_task_error(p, "fail", "ValueError: bad value 42");
  expect_task_error(p, "none", "ResultError: task 'none' packed 0 results");
  expect_task_error(p, "two", "ResultError: task 'two' packed 2 results");
  expect_task_error(p, "badrc", "TaskError: task 'badrc' returned -7");
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(cancel_pending_not_running)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 1);
  fp_future *run, *queued;
  ck_assert_int_eq(fp_submitf(p, "gate", &run, "[s]", gate), 0);
  ck_assert_int_eq(fp_submitf(p, "square", &queued, "[I]", (int64_t)2), 0);
  ck_assert_int_eq(fp_future_state(run), FP_RUNNING);
  ck_assert_int_eq(fp_future_state(queued), FP_PENDING);
  ck_assert_int_eq(fp_future_cancel(run, 0), FP_EBUSY);
  ck_assert_int_eq(fp_future_cancel(queued, 0), 0);
  ck_assert_int_eq(fp_future_cancel(queued, 0), 0); /* again: still cancelled */
  ck_assert_int_eq(fp_future_state(queued), FP_CANCELLED);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(queued, 0, &r), FP_ECANCELLED);
  fpt_gate_open(gate);
  ck_assert_int_gt(fpt_i64(run), 0);
  ck_assert_int_eq(fp_future_cancel(run, 0), FP_EBUSY); /* done */
  ck_assert_int_eq(fp_future_cancel(NULL, 0), FP_EINVAL);
  fp_future_release(run);
  fp_future_release(queued);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

START_TEST(result_timeout)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f;
  const msgpack_object *r = (const msgpack_object *)&s;
  ck_assert_int_eq(fp_submitf(p, "gate", &f, "[s]", gate), 0);
  ck_assert_int_eq(fp_future_result(f, 0, &r), FP_ETIMEDOUT);
  ck_assert_ptr_null(r);
  ck_assert_int_eq(fp_future_result(f, 30, &r), FP_ETIMEDOUT);
  ck_assert_int_eq(fp_future_wait(f, 10), FP_ETIMEDOUT);
  ck_assert_int_eq(fp_future_wait(f, -5), FP_EINVAL);
  ck_assert_int_eq(fp_future_result(f, 0, NULL), FP_EINVAL);
  fpt_gate_open(gate);
  ck_assert_int_eq(fp_future_result(f, -1, &r), 0);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

START_TEST(shutdown_wait_runs_everything)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  fp_future *f[50], *late = (fp_future *)&s;
  for (int i = 0; i < 50; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0);
  ck_assert_int_eq(fp_submitf(p, "square", &late, "[I]", (int64_t)1),
                   FP_ESHUTDOWN);
  ck_assert_ptr_null(late);
  for (int i = 0; i < 50; i++) {
    ck_assert_int_eq(fp_future_state(f[i]), FP_FINISHED);
    ck_assert_int_eq(fpt_i64(f[i]), i * i);
    fp_future_release(f[i]);
  }
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0); /* again */
  ck_assert_int_eq(fp_pool_shutdown(p, 1u << 7), FP_EINVAL);
  ck_assert_int_eq(fp_pool_shutdown(NULL, 0), FP_EINVAL);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(shutdown_cancel_pending)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 1);
  fp_future *run, *f[10];
  ck_assert_int_eq(fp_submitf(p, "gate", &run, "[s]", gate), 0);
  for (int i = 0; i < 10; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  ck_assert_int_eq(fp_future_state(run), FP_RUNNING);
  /* Without WAIT it returns at once; the running task goes on. */
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_CANCEL_PENDING), 0);
  for (int i = 0; i < 10; i++) {
    ck_assert_int_eq(fp_future_state(f[i]), FP_CANCELLED);
    fp_future_release(f[i]);
  }
  fpt_gate_open(gate);
  ck_assert_int_gt(fpt_i64(run), 0);
  fp_future_release(run);
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

START_TEST(destroy_with_outstanding_futures)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 1);
  /* The only worker is busy until a deadline kills it, so all 200 squares
   * are still queued when destroy runs. */
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = 300;
  fp_future *busy, *f[200];
  ck_assert_int_eq(fp_submit_ex(p, "forever", "\x90", 1, &so, &busy), 0);
  for (int i = 0; i < 200; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  ck_assert_int_eq(fp_future_state(busy), FP_RUNNING);
  fpt_pool_destroy(p);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(busy, 0, &r), FP_EDEADLINE);
  fp_future_release(busy);
  for (int i = 0; i < 200; i++) {
    ck_assert_int_eq(fp_future_result(f[i], 0, &r), FP_ECANCELLED);
    ck_assert_int_eq(fp_future_state(f[i]), FP_CANCELLED);
    ck_assert_str_eq(fp_future_error(f[i]), "cancelled");
    fp_future_release(f[i]);
  }
  fpt_end(&s);
}
END_TEST

START_TEST(future_outlives_pool_and_retain)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)5), 0);
  ck_assert_ptr_eq(fp_future_retain(f), f);
  ck_assert_int_eq(fpt_i64(f), 25);
  fpt_pool_destroy(p);
  fp_future_release(f);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, 0, &r), 0); /* one reference left */
  ck_assert_int_eq(r->via.i64, 25);
  fp_future_release(f);
  fp_future_release(NULL);
  fpt_pool_destroy(NULL);
  fpt_end(&s);
}
END_TEST

START_TEST(busy_loop_on_state_makes_progress)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)9), 0);
  while (fp_future_state(f) != FP_FINISHED)
    ; /* no other call: the state query itself runs the dispatcher */
  ck_assert_int_eq(fpt_i64(f), 81);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(big_payloads_cross)
{
  enum { MIB = 1 << 20 };
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  size_t n = 64 * (size_t)MIB;
  char *arg = malloc(n);
  for (size_t i = 0; i < n; i++)
    arg[i] = (char)(i * 13);
  fp_future *echo, *made;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  ck_assert_int_eq(fp_pack(&pk, "y", arg, n), 0);
  /* 64 MiB out and 64 MiB back at the same time, twice over. */
  ck_assert_int_eq(fp_submit(p, "echo", sb.data, sb.size, &echo), 0);
  ck_assert_int_eq(fp_submitf(p, "bytes", &made, "[I]", (int64_t)n), 0);
  msgpack_sbuffer_destroy(&sb);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(echo, FPT_LIMIT_MS, &r), 0);
  ck_assert_int_eq(r->type, MSGPACK_OBJECT_BIN);
  ck_assert_uint_eq(r->via.bin.size, n);
  ck_assert(memcmp(r->via.bin.ptr, arg, n) == 0);
  ck_assert_int_eq(fp_future_result(made, FPT_LIMIT_MS, &r), 0);
  ck_assert_uint_eq(r->via.bin.size, n);
  ck_assert_int_eq(r->via.bin.ptr[n - 1], (char)((n - 1) * 7));
  free(arg);
  fp_future_release(echo);
  fp_future_release(made);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Argument i of full_task_pipe_keeps_frames_whole: bytes that say i. */
static size_t frame_arg(unsigned i, char *buf, size_t cap)
{
  /* Mostly a few KiB (several joined per write), every 50th over 8 KiB
   * (written alone, with writev). */
  size_t n = i % 50 == 0 ? 12000 + i : 500 + (size_t)(i * 7919u % 3000);
  ck_assert_uint_le(n, cap);
  for (size_t k = 0; k < n; k++)
    buf[k] = (char)(i * 31 + k);
  return n;
}

/* A worker held in a task while 1,023 frames of 0.5-13 KiB (about 2.5 MiB)
 * wait for it: its task pipe (1 MiB at most) fills, writes end in the
 * middle of frames, and what follows once it reads must still be every
 * frame, whole and in order. */
START_TEST(full_task_pipe_keeps_frames_whole)
{
  enum { N = 1024 };
  static char buf[16384];
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, N);
  char gate[256];
  fpt_gate_make(gate, sizeof gate);
  fp_future *g, **f = calloc(N, sizeof *f);
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fp_submitf(p, "gate", &g, "[s]", gate), 0);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  for (unsigned i = 1; i < N; i++) {
    size_t n = frame_arg(i, buf, sizeof buf);
    msgpack_sbuffer_clear(&sb);
    ck_assert_int_eq(fp_pack(&pk, "y", buf, n), 0);
    ck_assert_int_eq(fp_submit(p, "echo", sb.data, sb.size, &f[i]), 0);
  }
  msgpack_sbuffer_destroy(&sb);
  fpt_gate_open(gate);
  ck_assert_int_gt(fpt_i64(g), 0);
  for (unsigned i = 1; i < N; i++) {
    const msgpack_object *r;
    size_t n = frame_arg(i, buf, sizeof buf);
    ck_assert_int_eq(fp_future_result(f[i], FPT_LIMIT_MS, &r), 0);
    ck_assert_int_eq(r->type, MSGPACK_OBJECT_BIN);
    ck_assert_uint_eq(r->via.bin.size, n);
    ck_assert(memcmp(r->via.bin.ptr, buf, n) == 0);
    fp_future_release(f[i]);
  }
  fp_future_release(g);
  free(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(max_message_both_ways)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 1;
  o.tasks = fpt_tasks;
  o.max_message = 4096;
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  char big[8192] = {0};
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "echo", &f, "y", big, sizeof big),
                   FP_EMSGSIZE);
  ck_assert_int_eq(fp_submitf(p, "bytes", &f, "[I]", (int64_t)8192), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EMSGSIZE);
  ck_assert_ptr_nonnull(strstr(fp_future_error(f), "max_message"));
  fp_future_release(f);
  ck_assert_int_eq(fp_submitf(p, "bytes", &f, "[I]", (int64_t)100), 0);
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), 0);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(bad_options)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = (fp_pool *)&s;
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.size = 3;
  ck_assert_int_eq(fpt_pool_create(&p, &o), FP_EINVAL);
  ck_assert_ptr_null(p);
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.size = sizeof o + 8; /* a newer header than this library */
  ck_assert_int_eq(fpt_pool_create(&p, &o), FP_EINVAL);
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.max_message = (size_t)1 << 33;
  ck_assert_int_eq(fpt_pool_create(&p, &o), FP_EINVAL);
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.restart_window_ms = 0;
  ck_assert_int_eq(fpt_pool_create(&p, &o), FP_EINVAL);
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  o.workers = 100000;
  ck_assert_int_eq(fpt_pool_create(&p, &o), FP_EINVAL);
  o = (fp_pool_options)FP_POOL_OPTIONS_INIT;
  static const fp_task clash[] = {{"square", (fp_task_fn)1}, {NULL, NULL}};
  o.tasks = clash;
  ck_assert_int_eq(fp_task_register("square", fpt_tasks[0].fn), 0);
  ck_assert_int_eq(fpt_pool_create(&p, &o), FP_EINVAL); /* two meanings */
  ck_assert_int_eq(fpt_pool_create(NULL, NULL), FP_EINVAL);
  fpt_end(&s);
}
END_TEST

START_TEST(global_registry)
{
  fpt_snapshot s;
  fpt_begin(&s);
  ck_assert_int_eq(fp_task_register("g-square", fpt_tasks[0].fn), 0);
  ck_assert_int_eq(fp_task_register("g-square", fpt_tasks[0].fn), 0);
  ck_assert_int_eq(fp_task_register("g-square", fpt_tasks[1].fn), FP_EINVAL);
  ck_assert_int_eq(fp_task_register(NULL, fpt_tasks[1].fn), FP_EINVAL);
  ck_assert_int_eq(fp_task_register("x", NULL), FP_EINVAL);
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, NULL), 0); /* defaults: one per CPU */
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "g-square", &f, "[I]", (int64_t)-4), 0);
  ck_assert_int_eq(fpt_i64(f), 16);
  fp_future_release(f);
  /* Registered after the pool started: not in it. */
  ck_assert_int_eq(fp_task_register("g-late", fpt_tasks[0].fn), 0);
  ck_assert_int_eq(fp_submitf(p, "g-late", &f, "[I]", (int64_t)1),
                   FP_ENOTASK);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

typedef struct thread_arg {
  fp_pool *pool;
  int base;
  int ok;
} thread_arg;

static void *submit_and_wait(void *arg)
{
  thread_arg *t = arg;
  enum { N = 500 };
  fp_future *f[N];
  t->ok = 1;
  for (int i = 0; i < N; i++)
    if (fp_submitf(t->pool, "square", &f[i], "[I]", (int64_t)(t->base + i)))
      t->ok = 0;
  for (int i = N - 1; i >= 0; i--) { /* waits out of order on purpose */
    const msgpack_object *r;
    if (fp_future_result(f[i], FPT_LIMIT_MS, &r) != 0 ||
        r->via.i64 != (int64_t)(t->base + i) * (t->base + i))
      t->ok = 0;
    fp_future_release(f[i]);
  }
  return NULL;
}

START_TEST(four_threads_submit_and_wait)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  pthread_t th[4];
  thread_arg a[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (thread_arg){p, i * 1000, 0};
    ck_assert_int_eq(pthread_create(&th[i], NULL, submit_and_wait, &a[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    ck_assert_msg(a[i].ok, "thread %d saw a wrong result", i);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(event_loop_fd)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  int fd = fp_pool_fd(p);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(fp_pool_fd(p), fd);
  ck_assert_int_eq(fp_pool_fd(NULL), FP_EINVAL);
  fp_future *f[20];
  for (int i = 0; i < 20; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  /* Every future made final is counted by exactly one dispatch call, even
   * those that finished inside fp_submitf, and the descriptor says so. */
  int done = 0;
  for (int rounds = 0; done < 20; rounds++) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&pf, 1, FPT_LIMIT_MS), 1);
    int n = fp_pool_dispatch(p, 0);
    ck_assert_int_ge(n, 0);
    done += n;
    ck_assert_int_lt(rounds, 100000);
  }
  ck_assert_int_eq(done, 20);
  for (int i = 0; i < 20; i++) {
    ck_assert_int_eq(fp_future_state(f[i]), FP_FINISHED);
    fp_future_release(f[i]);
  }
  /* Nothing left: the descriptor is quiet. */
  struct pollfd quiet = {.fd = fd, .events = POLLIN};
  ck_assert_int_eq(fp_pool_dispatch(p, 0), 0);
  ck_assert_int_eq(poll(&quiet, 1, 0), 0);
  ck_assert_int_eq(fp_pool_dispatch(p, -7), FP_EINVAL);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* A program with its own SIGCHLD handler that reaps every child. */
static volatile sig_atomic_t reaped_own;
static pid_t own_child;

static void reap_all(int sig)
{
  (void)sig;
  int saved = errno;
  pid_t pid;
  while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
    if (pid == own_child)
      reaped_own = 1;
  errno = saved;
}

START_TEST(caller_reaps_with_waitpid_minus_one)
{
  fpt_snapshot s;
  fpt_begin(&s);
  struct sigaction sa = {.sa_handler = reap_all, .sa_flags = SA_RESTART};
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGCHLD, &sa, NULL), 0);
  fp_pool *p = fpt_pool(2, 0);
  fp_future *f[100];
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq(fp_submitf(p, i == 50 ? "segv" : "square", &f[i], "[I]",
                                (int64_t)i), 0);
  /* Blocked until own_child is set, or the handler could reap it first. */
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &old);
  own_child = fork();
  if (own_child == 0)
    _exit(0);
  sigprocmask(SIG_SETMASK, &old, NULL);
  for (int i = 0; i < 100; i++) {
    if (i == 50) {
      const msgpack_object *r;
      ck_assert_int_eq(fp_future_result(f[i], FPT_LIMIT_MS, &r), FP_EWORKER);
    } else {
      ck_assert_int_eq(fpt_i64(f[i]), i * i);
    }
    fp_future_release(f[i]);
  }
  fpt_pool_destroy(p);
  sigset_t none;
  sigemptyset(&none);
  for (int waited = 0; !reaped_own; waited++) {
    ck_assert_int_lt(waited, FPT_LIMIT_MS);
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  signal(SIGCHLD, SIG_DFL);
  fpt_end(&s);
}
END_TEST

/*
 * A child forked from the caller holds a copy of the pool: every call on it
 * is refused (the ownership check reads a page the kernel wipes on fork),
 * destroy only forgets it, and the parent's pool goes on untouched.
 */
START_TEST(forked_child_copy_is_refused)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)3), 0);
  ck_assert_int_eq(fpt_i64(f), 9);
  fp_future_release(f);
  pid_t child = fork();
  ck_assert_int_ge(child, 0);
  if (child == 0) {
    int bad = 0;
    fp_future *g = NULL;
    bad |= fp_submitf(p, "square", &g, "[I]", (int64_t)4) != FP_EINVAL;
    bad |= g != NULL;
    bad |= fp_pool_dispatch(p, 0) != FP_EINVAL;
    bad |= fp_pool_shutdown(p, FP_SHUTDOWN_WAIT) != FP_EINVAL;
    fpt_pool_destroy(p); /* closes this copy's descriptors only */
    _exit(bad ? 1 : 0);
  }
  int st;
  ck_assert_int_eq(waitpid(child, &st, 0), child);
  ck_assert(WIFEXITED(st));
  ck_assert_int_eq(WEXITSTATUS(st), 0);
  for (int64_t i = 0; i < 100; i++) {
    ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", i), 0);
    ck_assert_int_eq(fpt_i64(f), i * i);
    fp_future_release(f);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Runs fn in a child process: its exit status, or 128 + a signal. */
static int in_child(int (*fn)(void))
{
  pid_t c = fork();
  ck_assert_int_ge(c, 0);
  if (c == 0)
    _exit(fn());
  int st;
  ck_assert_int_eq(waitpid(c, &st, 0), c);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A result as an integer, or -1000 for a failure. */
static int64_t result_or(fp_future *f)
{
  const msgpack_object *r;
  int rc = fp_future_result(f, FPT_LIMIT_MS, &r);
  int64_t v = rc == 0 ? r->via.i64 : -1000;
  fp_future_release(f);
  return v;
}

/* A caller whose fds 0, 1 and 2 are closed: none of the pool's descriptors
 * takes them, and the workers have /dev/null there. */
static int pool_without_stdio(void)
{
  for (int fd = 0; fd < 3; fd++)
    close(fd);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 2;
  o.tasks = fpt_tasks;
  fp_pool *p;
  if (fpt_pool_create(&p, &o) != 0)
    return 10;
  if (fp_pool_fd(p) < 3)
    return 11;
  for (int fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) >= 0)
      return 12; /* one of ours */
  for (int i = 0; i < 20; i++) {
    fp_future *f;
    if (fp_submitf(p, "stdio", &f, "[]") != 0)
      return 13;
    int64_t open_ = result_or(f); /* it wrote a line to fds 1 and 2 */
    if (open_ != 7)
      return open_ < 0 ? 14 : 15;
  }
  fpt_pool_destroy(p);
  return 0;
}

START_TEST(caller_without_stdio)
{
  fpt_snapshot s;
  fpt_begin(&s);
  ck_assert_int_eq(in_child(pool_without_stdio), 0);
  fpt_end(&s);
}
END_TEST

/* "No process of a pool outlives the caller", with fds 0-2 closed too. */
START_TEST(caller_without_stdio_sigkilled)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int rep[2];
  ck_assert_int_eq(pipe(rep), 0);
  pid_t c = fork();
  ck_assert_int_ge(c, 0);
  if (c == 0) {
    close(rep[0]);
    for (int fd = 0; fd < 3; fd++)
      close(fd);
    fp_pool *p;
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    o.workers = 2;
    o.tasks = fpt_tasks;
    char ok = fpt_pool_create(&p, &o) == 0;
    if (write(rep[1], &ok, 1) != 1)
      _exit(1);
    for (;;)
      pause(); /* until SIGKILL */
  }
  close(rep[1]);
  char ok = 0;
  ck_assert_int_eq(read(rep[0], &ok, 1), 1);
  close(rep[0]);
  ck_assert(ok);
  ck_assert_int_eq(kill(c, SIGKILL), 0);
  ck_assert_int_eq(waitpid(c, NULL, 0), c);
  /* fpt_end waits until every descendant (fork server, workers) is gone. */
  fpt_end(&s);
}
END_TEST

/* A subreaper (fpt_begin makes us one) gets the fork server as a child:
 * destroy reaps it, and leaves the caller's own children alone. */
START_TEST(subreaper_caller_gets_no_zombies)
{
  fpt_snapshot s;
  fpt_begin(&s);
  pid_t own = fork();
  ck_assert_int_ge(own, 0);
  if (own == 0)
    _exit(7);
  for (int i = 0; i < 10; i++) {
    fp_pool *p = fpt_pool(1, 0);
    fpt_pool_destroy(p);
  }
  int st;
  ck_assert_int_eq(waitpid(own, &st, 0), own);
  ck_assert(WIFEXITED(st));
  ck_assert_int_eq(WEXITSTATUS(st), 7);
  ck_assert_int_eq(fpt_count_children(), 0); /* no zombie: no waiting */
  fpt_end(&s);
}
END_TEST

/* A program a task execs inherits none of the worker's pipes. */
START_TEST(worker_pipes_are_close_on_exec)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "fd_leaks", &f, "[]"), 0);
  ck_assert_int_eq(fpt_i64(f), 0);
  fp_future_release(f);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* The caller's buffered FILE on fd 4, flushed by a task's exit(0), must not
 * reach the worker's result pipe: the task fails FP_EWORKER. */
static int exit_flushes_callers_file(void)
{
  int null = open("/dev/null", O_WRONLY);
  if (null < 0 || (null != 4 && (dup2(null, 4) != 4 || close(null) != 0)))
    return 10;
  FILE *out = fdopen(4, "w");
  if (out == NULL || setvbuf(out, NULL, _IOFBF, 4096) != 0)
    return 11;
  /* Output that reads as a short frame whose body is not a result. */
  static const char junk[8] = {4, 0, 0, 0, 'j', 'u', 'n', 'k'};
  if (fwrite(junk, 1, sizeof junk, out) != sizeof junk)
    return 11;
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 1;
  o.tasks = fpt_tasks;
  fp_pool *p;
  if (fpt_pool_create(&p, &o) != 0)
    return 12;
  fp_future *f;
  const msgpack_object *r;
  if (fp_submitf(p, "exit0", &f, "[]") != 0)
    return 13;
  int rc = fp_future_result(f, FPT_LIMIT_MS, &r);
  fp_future_release(f);
  fpt_pool_destroy(p);
  return rc == FP_EWORKER ? 0 : rc == FP_EPROTO ? 20 : 21;
}

START_TEST(callers_file_on_fd_4)
{
  fpt_snapshot s;
  fpt_begin(&s);
  ck_assert_int_eq(in_child(exit_flushes_callers_file), 0);
  fpt_end(&s);
}
END_TEST

#define NOBODY 65534

/* Tasks (threads) whose real uid is uid, as RLIMIT_NPROC counts them. */
static int count_tasks_of(uid_t uid)
{
  DIR *d = opendir("/proc");
  int n = 0;
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    char path[600], line[256];
    snprintf(path, sizeof path, "/proc/%s/task", e->d_name);
    DIR *t = opendir(path);
    struct dirent *te;
    while (t != NULL && (te = readdir(t)) != NULL) {
      if (te->d_name[0] == '.')
        continue;
      snprintf(path, sizeof path, "/proc/%s/task/%s/status", e->d_name,
               te->d_name);
      FILE *f = fopen(path, "r");
      unsigned real;
      while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "Uid: %u", &real) == 1)
          n += real == uid;
      if (f != NULL)
        fclose(f);
    }
    if (t != NULL)
      closedir(t);
  }
  if (d != NULL)
    closedir(d);
  return n;
}

/* At the process limit: the first fork create makes fails as fork(2)
 * does, with EAGAIN, or, if a process counted here has ended since, the
 * next one (the fork server's, reported by the middle process): EAGAIN
 * either way.  (Room for exactly one more made a second ended process, seen
 * once under valgrind, leave room for the fork server too, and a worker's
 * fork failed instead.)  RLIMIT_NPROC does not hold for root: run as
 * nobody. */
static int create_at_nproc_limit(void)
{
  if (setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
    return 77;
  int n = count_tasks_of(NOBODY);
  struct rlimit rl = {(rlim_t)n, (rlim_t)n};
  if (n < 1 || setrlimit(RLIMIT_NPROC, &rl) != 0)
    return 78;
  fp_pool *p;
  int rc = fpt_pool_create(&p, NULL);
  if (rc == 0)
    fpt_pool_destroy(p);
  return rc == FP_EAGAIN ? 0 : rc == FP_EBROKEN ? 20 : 21;
}

START_TEST(nproc_limit_is_eagain)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int rc = in_child(create_at_nproc_limit);
  ck_assert_msg(rc == 0, "create at the process limit: exit %d", rc);
  fpt_end(&s);
}
END_TEST

/*
 * Many workers (issue 14): each of 64 is reachable and answers, through
 * the dispatcher's own wait and through fp_pool_fd's event loop; a worker
 * killed among them is replaced and answers too; destroy leaves no
 * descriptor behind (fpt_end), with the dispatcher's epoll set in use.
 * Rounds of one "pid" task per worker go on until every worker has
 * answered one; a bounded number of rounds, never a clock.
 */
enum { MANY = 64 };

/* Runs rounds of MANY "pid" tasks until MANY different pids answered;
 * with loop, through fp_pool_fd and fp_pool_dispatch.  Returns the pids. */
static void all_answer(fp_pool *p, int fd, pid_t pids[MANY])
{
  int seen = 0;
  for (int round = 0; seen < MANY; round++) {
    ck_assert_msg(round < 100, "only %d of %d workers answered", seen, MANY);
    fp_future *f[MANY];
    /* The count starts now: every future before this round is final. */
    if (fd >= 0)
      ck_assert_int_ge(fp_pool_dispatch(p, 0), 0);
    for (int i = 0; i < MANY; i++)
      ck_assert_int_eq(fp_submitf(p, "pid", &f[i], "[]"), 0);
    for (int done = 0, rounds = 0; fd >= 0 && done < MANY; rounds++) {
      struct pollfd pf = {.fd = fd, .events = POLLIN};
      ck_assert_int_eq(poll(&pf, 1, FPT_LIMIT_MS), 1);
      int n = fp_pool_dispatch(p, 0);
      ck_assert_int_ge(n, 0);
      done += n;
      ck_assert_int_lt(rounds, 1000000);
    }
    for (int i = 0; i < MANY; i++) {
      if (fd >= 0)
        ck_assert_msg(fp_future_state(f[i]) == FP_FINISHED, "state %d: %s", (int)fp_future_state(f[i]), fp_future_error(f[i]) ? fp_future_error(f[i]) : "-");
      pid_t pid = (pid_t)fpt_i64(f[i]);
      fp_future_release(f[i]);
      int known = 0;
      for (int k = 0; k < seen; k++)
        known |= pids[k] == pid;
      if (!known)
        pids[seen++] = pid;
    }
  }
}

START_TEST(many_workers_all_answer)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int fds_before = fpt_count_fds();
  fp_pool *p = fpt_pool(MANY, 0);
  /* Three descriptors per worker, and a few of the pool's own. */
  ck_assert_int_ge(fpt_count_fds(), fds_before + 3 * MANY);
  pid_t pids[MANY];
  all_answer(p, -1, pids);
  /* A worker killed with a real signal: its slot's descriptors leave the
   * epoll set and its successor's come in. */
  ck_assert_int_eq(kill(pids[MANY / 2], SIGKILL), 0);
  /* Its death seen first: a task written to it in the moment between the
   * kill and its end may be read by it and so count as started, and fail
   * (as the page says), which is not what this test is about. */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  for (int64_t end = fpt_now_ms() + FPT_LIMIT_MS; st.worker_deaths == 0;) {
    ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
    ck_assert_msg(fpt_now_ms() < end, "the killed worker's death was not seen");
    (void)fp_pool_dispatch(p, 100);
  }
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)9), 0);
  ck_assert_int_eq(fpt_i64(f), 81);
  fp_future_release(f);
  int fd = fp_pool_fd(p);
  ck_assert_int_ge(fd, 0);
  pid_t again[MANY];
  all_answer(p, fd, again);
  int gone = 1;
  for (int k = 0; k < MANY; k++)
    gone &= again[k] != pids[MANY / 2];
  ck_assert_msg(gone, "the killed worker answered");
  fpt_pool_destroy(p);
  ck_assert_int_eq(fpt_count_fds(), fds_before);
  fpt_end(&s);
}
END_TEST

/*
 * forkpool(7), Scheduling: a task goes to the worker idle last, so tasks
 * that come one at a time keep to one worker while the other sleeps
 * (idle workers taking turns would share them out).
 */
START_TEST(one_at_a_time_keeps_to_one_worker)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  fpt_pool_wait_ready(p);
  for (int i = 0; i < 20; i++) {
    fp_future *f;
    ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)i), 0);
    ck_assert_int_eq(fpt_i64(f), (int64_t)i * i);
    fp_future_release(f);
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats w[2];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, w, 2), 0);
  ck_assert_uint_eq(w[0].tasks + w[1].tasks, 20);
  ck_assert_msg(w[0].tasks == 20 || w[1].tasks == 20,
                "the tasks were shared out: %llu and %llu",
                (unsigned long long)w[0].tasks,
                (unsigned long long)w[1].tasks);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("pool");
  TCase *tc = fpt_tcase(s, "core", 300);
  tcase_add_test(tc, happy_path);
  tcase_add_test(tc, ten_thousand_tasks);
  fpt_add_test_in(FPT_IN_BESIDE, "an inline pool has one worker", tc,
                  one_at_a_time_keeps_to_one_worker);
  fpt_add_test_in(FPT_IN_PROCESSES, "a worker process's task pipe", tc,
                  full_task_pipe_keeps_frames_whole);
  tcase_add_test(tc, forked_child_copy_is_refused);
  tcase_add_test(tc, unknown_task_is_refused_at_submit);
  tcase_add_test(tc, malformed_args_are_refused);
  tcase_add_test(tc, task_failures_are_clear);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  cancel_pending_not_running);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  result_timeout);
  tcase_add_test(tc, shutdown_wait_runs_everything);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  shutdown_cancel_pending);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "destroy kills a worker whose task never returns", tc,
                  destroy_with_outstanding_futures);
  tcase_add_test(tc, future_outlives_pool_and_retain);
  tcase_add_test(tc, busy_loop_on_state_makes_progress);
  tcase_add_test(tc, big_payloads_cross);
  tcase_add_test(tc, max_message_both_ways);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "inline ignores workers and max_inflight", tc,
                  bad_options);
  tcase_add_test(tc, global_registry);
  tcase_add_test(tc, event_loop_fd);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  caller_reaps_with_waitpid_minus_one);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "the fork server's and workers' descriptors", tc,
                  caller_without_stdio);
  tcase_add_test(tc, caller_without_stdio_sigkilled);
  tcase_add_test(tc, subreaper_caller_gets_no_zombies);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "worker processes' pipes", tc,
                  worker_pipes_are_close_on_exec);
  tcase_add_test(tc, callers_file_on_fd_4);
  tcase_add_test(tc, nproc_limit_is_eagain);
  fpt_add_test_in(FPT_IN_PROCESSES, "kills a worker process by its pid", tc,
                  many_workers_all_answer);
  /* Its own case, so CI can run it alone under ThreadSanitizer. */
  TCase *threads = fpt_tcase(s, "threads", 300);
  tcase_add_test(threads, four_threads_submit_and_wait);
  fpt_run_suite(s);
}

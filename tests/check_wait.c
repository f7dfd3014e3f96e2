/* Waiting on many futures: fp_wait in each mode and the as-completed
 * iterator, with real workers, gated tasks, failures and crashes. */
#define _GNU_SOURCE
#include "fpt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Submits task with the arguments [x]. */
static fp_future *submit(fp_pool *p, const char *task, int64_t x)
{
  fp_future *f;
  int rc = fp_submitf(p, task, &f, "[I]", x);
  ck_assert_msg(rc == 0, "submit %s: %s", task, fp_strerror(rc));
  return f;
}

/* Submits a gate task: it runs until open_gate. */
static fp_future *submit_gate(fp_pool *p, const char *gate)
{
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "gate", &f, "[s]", gate), 0);
  return f;
}

/* Opens a gate whose task a worker has taken (so it will read the FIFO). */
static void open_gate(const char *gate, fp_future *f)
{
  ck_assert_int_eq(fp_future_state(f), FP_RUNNING);
  fpt_gate_open(gate);
}

static int is_done(fp_future *f)
{
  return fp_future_wait(f, 0) == 0;
}

static void release_all(fp_future **fs, size_t n)
{
  for (size_t i = 0; i < n; i++)
    fp_future_release(fs[i]);
}

static void expect_error(fp_future *f, int err)
{
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, 0, &r), err);
  ck_assert_int_eq(fp_future_state(f), err == FP_ECANCELLED ? FP_CANCELLED
                                                            : FP_FAILED);
}

/* --- fp_wait --------------------------------------------------------------- */

START_TEST(first_completed_while_gate_runs)
{
  fpt_snapshot s;
  char gate[256];
  size_t nd = 99;
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(2, 1);
  fp_future *g = submit_gate(p, gate);
  ck_assert_int_eq(fp_wait(&g, 1, FP_FIRST_COMPLETED, 20, &nd), FP_ETIMEDOUT);
  ck_assert_uint_eq(nd, 0);

  fp_future *fs[4] = {g, submit(p, "square", 3), submit(p, "fail", 0),
                      submit(p, "segv", 0)};
  ck_assert_int_eq(fp_wait(fs, 4, FP_FIRST_COMPLETED, FPT_LIMIT_MS, &nd), 0);
  ck_assert_uint_ge(nd, 1);
  ck_assert_uint_le(nd, 3);
  ck_assert(!is_done(g));

  open_gate(gate, g);
  ck_assert_int_eq(fp_wait(&g, 1, FP_FIRST_COMPLETED, FPT_LIMIT_MS, &nd), 0);
  ck_assert_uint_eq(nd, 1);
  ck_assert_int_eq(fp_wait(fs, 4, FP_ALL_COMPLETED, FPT_LIMIT_MS, NULL), 0);
  ck_assert_int_gt(fpt_i64(g), 0);
  ck_assert_int_eq(fpt_i64(fs[1]), 9);
  expect_error(fs[2], FP_ETASK);
  expect_error(fs[3], FP_EWORKER);
  release_all(fs, 4);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

START_TEST(first_exception_returns_on_failure)
{
  fpt_snapshot s;
  char g1[256], g2[256];
  size_t nd = 99;
  fpt_begin(&s);
  fpt_gate_make(g1, sizeof g1);
  fpt_gate_make(g2, sizeof g2);
  /* Two workers held by gates; the third runs the rest in order. */
  fp_pool *p = fpt_pool(3, 1);
  fp_future *fs[6] = {submit_gate(p, g1), submit_gate(p, g2),
                      submit(p, "square", 1), submit(p, "square", 2),
                      submit(p, "fail", 0), submit(p, "square", 3)};
  ck_assert_int_eq(fp_wait(fs, 6, FP_FIRST_EXCEPTION, FPT_LIMIT_MS, &nd), 0);
  expect_error(fs[4], FP_ETASK);
  ck_assert(!is_done(fs[0]) && !is_done(fs[1]));
  ck_assert_uint_ge(nd, 3); /* both squares before it, and itself */
  ck_assert_uint_le(nd, 4);

  /* A crash is an exception too. */
  fp_future *crash[3] = {fs[0], fs[1], submit(p, "segv", 0)};
  ck_assert_int_eq(fp_wait(crash, 3, FP_FIRST_EXCEPTION, FPT_LIMIT_MS, &nd),
                   0);
  ck_assert_uint_eq(nd, 1);
  expect_error(crash[2], FP_EWORKER);

  /* Without a failure it waits for all. */
  fp_future *fine[2] = {fs[2], fs[3]};
  ck_assert_int_eq(fp_wait(fine, 2, FP_FIRST_EXCEPTION, 0, &nd), 0);
  ck_assert_uint_eq(nd, 2);

  open_gate(g1, fs[0]);
  open_gate(g2, fs[1]);
  ck_assert_int_eq(fp_wait(fs, 6, FP_ALL_COMPLETED, FPT_LIMIT_MS, &nd), 0);
  ck_assert_uint_eq(nd, 6);
  ck_assert_int_eq(fpt_i64(fs[5]), 9);
  fp_future_release(crash[2]);
  release_all(fs, 6);
  fpt_pool_destroy(p);
  fpt_gate_remove(g1);
  fpt_gate_remove(g2);
  fpt_end(&s);
}
END_TEST

START_TEST(cancelled_is_not_an_exception)
{
  fpt_snapshot s;
  char gate[256];
  size_t nd = 99;
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 1);
  fp_future *fs[2] = {submit_gate(p, gate), submit(p, "square", 2)};
  ck_assert_int_eq(fp_future_cancel(fs[1], 0), 0);
  ck_assert_int_eq(fp_wait(fs, 2, FP_FIRST_EXCEPTION, 30, &nd), FP_ETIMEDOUT);
  ck_assert_uint_eq(nd, 1);
  ck_assert_int_eq(fp_wait(fs, 2, FP_FIRST_COMPLETED, 0, &nd), 0);
  ck_assert_uint_eq(nd, 1);
  open_gate(gate, fs[0]);
  ck_assert_int_eq(fp_wait(fs, 2, FP_FIRST_EXCEPTION, FPT_LIMIT_MS, &nd), 0);
  ck_assert_uint_eq(nd, 2);
  expect_error(fs[1], FP_ECANCELLED);
  release_all(fs, 2);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

START_TEST(all_completed_times_out_then_succeeds)
{
  enum { N = 8 };
  fpt_snapshot s;
  char gate[256];
  size_t nd = 99;
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(2, 1);
  fp_future *fs[N];
  fs[0] = submit_gate(p, gate);
  for (int i = 1; i < N; i++)
    fs[i] = submit(p, i == 3 ? "fail" : i == 5 ? "segv" : "square", i);
  /* Everything but the gate ends; then the whole set must time out. */
  ck_assert_int_eq(fp_wait(fs + 1, N - 1, FP_ALL_COMPLETED, FPT_LIMIT_MS,
                           &nd), 0);
  ck_assert_uint_eq(nd, N - 1);
  ck_assert_int_eq(fp_wait(fs, N, FP_ALL_COMPLETED, 50, &nd), FP_ETIMEDOUT);
  ck_assert_uint_eq(nd, N - 1);
  nd = 99;
  ck_assert_int_eq(fp_wait(fs, N, FP_ALL_COMPLETED, 0, &nd), FP_ETIMEDOUT);
  ck_assert_uint_eq(nd, N - 1);
  ck_assert_int_eq(fp_wait(fs, N, FP_ALL_COMPLETED, 0, NULL), FP_ETIMEDOUT);

  open_gate(gate, fs[0]);
  ck_assert_int_eq(fp_wait(fs, N, FP_ALL_COMPLETED, -1, &nd), 0);
  ck_assert_uint_eq(nd, N);
  ck_assert_int_gt(fpt_i64(fs[0]), 0);
  for (int i = 1; i < N; i++) {
    if (i == 3)
      expect_error(fs[i], FP_ETASK);
    else if (i == 5)
      expect_error(fs[i], FP_EWORKER);
    else
      ck_assert_int_eq(fpt_i64(fs[i]), i * i);
  }
  release_all(fs, N);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* Done futures never touch their pool: this one is freed already. */
START_TEST(done_futures_outlive_their_pool)
{
  fpt_snapshot s;
  size_t nd = 99;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  fp_future *fs[3] = {submit(p, "square", 4), submit(p, "fail", 0),
                      submit(p, "segv", 0)};
  ck_assert_int_eq(fp_wait(fs, 3, FP_ALL_COMPLETED, FPT_LIMIT_MS, &nd), 0);
  fpt_pool_destroy(p);
  for (int mode = FP_FIRST_COMPLETED; mode <= FP_ALL_COMPLETED; mode++) {
    nd = 99;
    ck_assert_int_eq(fp_wait(fs, 3, (fp_wait_mode)mode, 0, &nd), 0);
    ck_assert_uint_eq(nd, 3);
  }
  fp_as_completed *it;
  fp_future *f;
  ck_assert_int_eq(fp_as_completed_create(&it, fs, 3, 0), 0);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
    ck_assert_ptr_eq(f, fs[i]); /* all done at create: in array order */
  }
  ck_assert_int_eq(fp_as_completed_next(it, &f), 0);
  ck_assert_ptr_null(f);
  fp_as_completed_destroy(it);
  ck_assert_int_eq(fpt_i64(fs[0]), 16);
  release_all(fs, 3);
  fpt_end(&s);
}
END_TEST

START_TEST(bad_input)
{
  fpt_snapshot s;
  char ga[256], gb[256];
  size_t nd;
  fp_future *f;
  fp_as_completed *it;
  fpt_begin(&s);
  fpt_gate_make(ga, sizeof ga);
  fpt_gate_make(gb, sizeof gb);
  fp_pool *pa = fpt_pool(1, 1), *pb = fpt_pool(1, 1);
  fp_future *d = submit(pa, "square", 2);
  ck_assert_int_eq(fpt_i64(d), 4);
  fp_future *two[2] = {submit_gate(pa, ga), submit_gate(pb, gb)};

  /* Pending futures of two pools. */
  for (int mode = FP_FIRST_COMPLETED; mode <= FP_ALL_COMPLETED; mode++)
    ck_assert_int_eq(fp_wait(two, 2, (fp_wait_mode)mode, 0, &nd), FP_EINVAL);
  it = (fp_as_completed *)&s;
  ck_assert_int_eq(fp_as_completed_create(&it, two, 2, -1), FP_EINVAL);
  ck_assert_ptr_null(it);

  /* A done future of another pool is fine. */
  fp_future *mixed[2] = {d, two[1]};
  ck_assert_int_eq(fp_wait(mixed, 2, FP_FIRST_COMPLETED, FPT_LIMIT_MS, &nd),
                   0);
  ck_assert_uint_eq(nd, 1);
  ck_assert_int_eq(fp_as_completed_create(&it, mixed, 2, 0), 0);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
  ck_assert_ptr_eq(f, d);
  ck_assert_int_eq(fp_as_completed_next(it, &f), FP_ETIMEDOUT);
  ck_assert_ptr_null(f);
  fp_as_completed_destroy(it);

  /* fp_wait's arguments. */
  fp_future *holey[2] = {d, NULL};
  ck_assert_int_eq(fp_wait(NULL, 1, FP_ALL_COMPLETED, 0, &nd), FP_EINVAL);
  ck_assert_int_eq(fp_wait(holey, 2, FP_ALL_COMPLETED, 0, &nd), FP_EINVAL);
  ck_assert_int_eq(fp_wait(&d, 1, (fp_wait_mode)3, 0, &nd), FP_EINVAL);
  ck_assert_int_eq(fp_wait(&d, 1, (fp_wait_mode)-1, 0, &nd), FP_EINVAL);
  ck_assert_int_eq(fp_wait(&d, 1, FP_ALL_COMPLETED, -2, &nd), FP_EINVAL);
  nd = 99;
  ck_assert_int_eq(fp_wait(NULL, 0, FP_ALL_COMPLETED, -1, &nd), 0);
  ck_assert_uint_eq(nd, 0);
  ck_assert_int_eq(fp_wait(&d, 1, FP_ALL_COMPLETED, 0, NULL), 0);

  /* fp_as_completed's arguments. */
  ck_assert_int_eq(fp_as_completed_create(NULL, &d, 1, 0), FP_EINVAL);
  it = (fp_as_completed *)&s;
  ck_assert_int_eq(fp_as_completed_create(&it, NULL, 1, 0), FP_EINVAL);
  ck_assert_ptr_null(it);
  ck_assert_int_eq(fp_as_completed_create(&it, holey, 2, 0), FP_EINVAL);
  ck_assert_int_eq(fp_as_completed_create(&it, &d, 1, -2), FP_EINVAL);
  ck_assert_int_eq(fp_as_completed_next(NULL, &f), FP_EINVAL);
  ck_assert_int_eq(fp_as_completed_create(&it, NULL, 0, -1), 0);
  ck_assert_int_eq(fp_as_completed_next(it, NULL), FP_EINVAL);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 0);
  fp_as_completed_destroy(it);
  fp_as_completed_destroy(NULL);

  open_gate(ga, two[0]);
  open_gate(gb, two[1]);
  ck_assert_int_gt(fpt_i64(two[0]), 0);
  ck_assert_int_gt(fpt_i64(two[1]), 0);
  fp_future_release(d);
  release_all(two, 2);
  fpt_pool_destroy(pa);
  fpt_pool_destroy(pb);
  fpt_gate_remove(ga);
  fpt_gate_remove(gb);
  fpt_end(&s);
}
END_TEST

/* --- fp_as_completed ---------------------------------------------------------- */

static size_t index_of(fp_future *const *fs, size_t n, fp_future *f)
{
  for (size_t i = 0; i < n; i++)
    if (fs[i] == f)
      return i;
  ck_abort_msg("as_completed yielded a future not in the set");
  return n;
}

/* Yields each of fs exactly once; checks each result by its kind. */
static void drain_checking(fp_future **fs, size_t n, const char **kind)
{
  fp_as_completed *it;
  fp_future *f;
  char *seen = calloc(n, 1);
  ck_assert_int_eq(fp_as_completed_create(&it, fs, n, FPT_LIMIT_MS), 0);
  for (size_t k = 0; k < n; k++) {
    ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
    size_t i = index_of(fs, n, f);
    ck_assert_msg(!seen[i], "future %zu yielded twice", i);
    seen[i] = 1;
    ck_assert(is_done(f));
    if (strcmp(kind[i], "fail") == 0)
      expect_error(f, FP_ETASK);
    else if (strcmp(kind[i], "segv") == 0)
      expect_error(f, FP_EWORKER);
    else
      ck_assert_int_eq(fpt_i64(f), (int64_t)(i * i));
  }
  ck_assert_int_eq(fp_as_completed_next(it, &f), 0);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 0);
  fp_as_completed_destroy(it);
  free(seen);
}

static void run_many(size_t n, int with_errors)
{
  fp_pool *p = fpt_pool(2, 0);
  fp_future **fs = calloc(n, sizeof *fs);
  const char **kind = calloc(n, sizeof *kind);
  for (size_t i = 0; i < n; i++) {
    kind[i] = "square";
    if (with_errors && i % 10 == 3)
      kind[i] = "fail";
    else if (with_errors && i == 50)
      kind[i] = "segv";
    fs[i] = submit(p, kind[i], (int64_t)i);
  }
  drain_checking(fs, n, kind);
  release_all(fs, n);
  free(fs);
  free(kind);
  fpt_pool_destroy(p);
}

START_TEST(as_completed_yields_each_once)
{
  fpt_snapshot s;
  fpt_begin(&s);
  run_many(100, 1);
  fpt_end(&s);
}
END_TEST

START_TEST(as_completed_thousands)
{
  fpt_snapshot s;
  fpt_begin(&s);
  run_many(3000, 0);
  fpt_end(&s);
}
END_TEST

START_TEST(as_completed_order)
{
  fpt_snapshot s;
  char g[3][256];
  fp_future *gf[3], *d[3], *f;
  fp_as_completed *it;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(3, 1);
  for (int i = 0; i < 3; i++) {
    d[i] = submit(p, "square", i);
    ck_assert_int_eq(fpt_i64(d[i]), i * i);
  }
  for (int i = 0; i < 3; i++) {
    fpt_gate_make(g[i], sizeof g[i]);
    gf[i] = submit_gate(p, g[i]);
  }
  fp_future *fs[6] = {gf[0], d[2], gf[1], d[0], gf[2], d[1]};
  ck_assert_int_eq(fp_as_completed_create(&it, fs, 6, -1), 0);
  /* Done at create: first, in array order. */
  static const int order[3] = {2, 0, 1};
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
    ck_assert_ptr_eq(f, d[order[k]]);
  }
  /* Then in the order they finish, whatever their place in the array. */
  for (int k = 0; k < 3; k++) {
    open_gate(g[order[k]], gf[order[k]]);
    ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
    ck_assert_ptr_eq(f, gf[order[k]]);
  }
  ck_assert_int_eq(fp_as_completed_next(it, &f), 0);
  fp_as_completed_destroy(it);
  for (int i = 0; i < 3; i++) {
    fp_future_release(d[i]);
    fp_future_release(gf[i]);
    fpt_gate_remove(g[i]);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(as_completed_timeout)
{
  fpt_snapshot s;
  char gate[256];
  fp_future *f;
  fp_as_completed *it;
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 1);
  fp_future *d = submit(p, "square", 5);
  ck_assert_int_eq(fpt_i64(d), 25);
  fp_future *g = submit_gate(p, gate);
  fp_future *q = submit(p, "square", 6); /* queued behind the gate */
  fp_future *fs[3] = {g, q, d};
  ck_assert_int_eq(fp_as_completed_create(&it, fs, 3, 50), 0);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
  ck_assert_ptr_eq(f, d);
  ck_assert_int_eq(fp_as_completed_next(it, &f), FP_ETIMEDOUT);
  ck_assert_ptr_null(f);
  ck_assert_int_eq(fp_as_completed_next(it, &f), FP_ETIMEDOUT);
  ck_assert(!is_done(g) && !is_done(q));

  /* What finished after the deadline is still yielded. */
  open_gate(gate, g);
  ck_assert_int_eq(fp_future_wait(q, FPT_LIMIT_MS), 0);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
  ck_assert_ptr_eq(f, g);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
  ck_assert_ptr_eq(f, q);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 0);
  fp_as_completed_destroy(it);
  ck_assert_int_eq(fpt_i64(q), 36);
  release_all(fs, 3);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* A future listed more than once is yielded once (CPython's bpo-20367),
 * done at create or done later. */
START_TEST(as_completed_yields_a_repeated_future_once)
{
  fpt_snapshot s;
  char gate[256];
  fp_future *f;
  fp_as_completed *it;
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 1);
  fp_future *d = submit(p, "square", 3);
  ck_assert_int_eq(fpt_i64(d), 9);
  fp_future *g = submit_gate(p, gate);
  fp_future *three[3] = {d, d, d};
  ck_assert_int_eq(fp_as_completed_create(&it, three, 3, 0), 0);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
  ck_assert_ptr_eq(f, d);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 0);
  fp_as_completed_destroy(it);

  fp_future *fs[5] = {g, d, g, d, g};
  ck_assert_int_eq(fp_as_completed_create(&it, fs, 5, FPT_LIMIT_MS), 0);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
  ck_assert_ptr_eq(f, d);
  open_gate(gate, g);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 1);
  ck_assert_ptr_eq(f, g);
  ck_assert_int_eq(fp_as_completed_next(it, &f), 0);
  fp_as_completed_destroy(it);
  ck_assert_int_gt(fpt_i64(g), 0);
  fp_future_release(d);
  fp_future_release(g);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* fp_wait with a future listed twice: each entry counts in n_done, and the
 * modes mean what they mean for distinct futures. */
START_TEST(wait_with_a_repeated_future)
{
  fpt_snapshot s;
  char gate[256];
  size_t nd = 99;
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 1);
  fp_future *d = submit(p, "square", 4);
  ck_assert_int_eq(fpt_i64(d), 16);
  fp_future *g = submit_gate(p, gate);
  fp_future *fs[4] = {d, g, d, g};
  ck_assert_int_eq(fp_wait(fs, 4, FP_FIRST_COMPLETED, 0, &nd), 0);
  ck_assert_uint_eq(nd, 2);
  ck_assert_int_eq(fp_wait(fs, 4, FP_ALL_COMPLETED, 20, &nd), FP_ETIMEDOUT);
  ck_assert_uint_eq(nd, 2);
  open_gate(gate, g);
  ck_assert_int_eq(fp_wait(fs, 4, FP_ALL_COMPLETED, FPT_LIMIT_MS, &nd), 0);
  ck_assert_uint_eq(nd, 4);
  ck_assert_int_gt(fpt_i64(g), 0);
  fp_future_release(d);
  fp_future_release(g);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* Destroying an iterator with a future still pending releases it. */
START_TEST(as_completed_destroy_while_pending)
{
  fpt_snapshot s;
  char gate[256];
  fp_future *f;
  fp_as_completed *it;
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 1);
  fp_future *fs[2] = {submit_gate(p, gate), submit(p, "square", 7)};
  ck_assert_int_eq(fp_as_completed_create(&it, fs, 2, 0), 0);
  ck_assert_int_eq(fp_as_completed_next(it, &f), FP_ETIMEDOUT);
  fp_as_completed_destroy(it);
  open_gate(gate, fs[0]);
  ck_assert_int_eq(fp_wait(fs, 2, FP_ALL_COMPLETED, FPT_LIMIT_MS, NULL), 0);
  ck_assert_int_eq(fpt_i64(fs[1]), 49);
  release_all(fs, 2);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* --- Threads ------------------------------------------------------------------ */

typedef struct thread_arg {
  fp_pool *pool;
  int use_iterator;
  int ok;
} thread_arg;

/* One thread drains an iterator while the other waits for all. */
static void *wait_many(void *arg)
{
  enum { N = 300 };
  thread_arg *t = arg;
  fp_future *fs[N], *f;
  size_t nd = 0;
  int got = 0;
  for (int i = 0; i < N; i++)
    if (fp_submitf(t->pool, "square", &fs[i], "[I]", (int64_t)i) != 0)
      return NULL;
  if (t->use_iterator) {
    fp_as_completed *it;
    if (fp_as_completed_create(&it, fs, N, FPT_LIMIT_MS) == 0) {
      while (fp_as_completed_next(it, &f) == 1)
        got++;
      fp_as_completed_destroy(it);
    }
  } else if (fp_wait(fs, N, FP_ALL_COMPLETED, FPT_LIMIT_MS, &nd) == 0) {
    got = (int)nd;
  }
  t->ok = got == N;
  for (int i = 0; i < N; i++) {
    const msgpack_object *r;
    if (fp_future_result(fs[i], 0, &r) != 0 || r->via.i64 != i * i)
      t->ok = 0;
    fp_future_release(fs[i]);
  }
  return NULL;
}

START_TEST(two_threads_wait_on_one_pool)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  pthread_t th[2];
  thread_arg a[2];
  for (int i = 0; i < 2; i++) {
    a[i] = (thread_arg){p, i, 0};
    ck_assert_int_eq(pthread_create(&th[i], NULL, wait_many, &a[i]), 0);
  }
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    ck_assert_msg(a[i].ok, "thread %d (iterator %d) failed", i, i);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- Cancelling wakes a waiter ---------------------------------------------- */

typedef struct waiter {
  fp_future *f;
  atomic_int tid;        /* its thread id, once it is about to wait */
  int rc;                /* what fp_future_result returned */
} waiter;

static void *wait_forever(void *arg)
{
  waiter *w = arg;
  const msgpack_object *r;
  atomic_store(&w->tid, (int)syscall(SYS_gettid));
  w->rc = fp_future_result(w->f, -1, &r);
  return NULL;
}

/* Whether thread tid of this process is asleep: in poll() or a wait. */
static int thread_sleeps(int tid)
{
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *rp = strrchr(buf, ')');
  return rp != NULL && rp[2] == 'S';
}

static void nap_ms(int ms)
{
  struct timespec ts = {0, ms * 1000 * 1000};
  nanosleep(&ts, NULL);
}

/*
 * A thread waits without a timeout on a pending future q (behind a gate,
 * on a one-worker pool); once it sleeps in the dispatcher, how cancels q.
 * The waiter must return FP_ECANCELLED, well within FPT_LIMIT_MS: before
 * the fix only the pool's next event (the gate opening) woke it.
 */
static void cancel_wakes_waiter(int how)
{
  fpt_snapshot s;
  char gate[256];
  pthread_t th;
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 1);
  fp_future *g = submit_gate(p, gate);
  ck_assert_int_eq(fp_future_state(g), FP_RUNNING);
  fp_future *q = submit(p, "square", 5);
  ck_assert_int_eq(fp_future_state(q), FP_PENDING);
  waiter w = {.f = q, .rc = 1};
  atomic_init(&w.tid, 0);
  ck_assert_int_eq(pthread_create(&th, NULL, wait_forever, &w), 0);
  int waited = 0;
  while (atomic_load(&w.tid) == 0 || !thread_sleeps(atomic_load(&w.tid))) {
    ck_assert_msg(waited < FPT_LIMIT_MS, "the waiter never slept");
    nap_ms(1);
    waited++;
  }
  if (how == 0)
    ck_assert_int_eq(fp_future_cancel(q, 0), 0);
  else
    ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_CANCEL_PENDING), 0);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += FPT_LIMIT_MS / 1000;
  int woken = pthread_timedjoin_np(th, NULL, &until) == 0;
  if (!woken) {
    fpt_gate_open(gate); /* the pool's next event lets it go */
    pthread_join(th, NULL);
  }
  ck_assert_msg(woken, "cancelling did not wake the waiting thread");
  ck_assert_int_eq(w.rc, FP_ECANCELLED);
  ck_assert_int_eq(fp_future_state(q), FP_CANCELLED);
  open_gate(gate, g);
  ck_assert_int_gt(fpt_i64(g), 0);
  fp_future_release(g);
  fp_future_release(q);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}

START_TEST(cancel_wakes_a_waiting_thread)
{
  cancel_wakes_waiter(0);
}
END_TEST

START_TEST(shutdown_cancel_pending_wakes_a_waiting_thread)
{
  cancel_wakes_waiter(1);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("wait");
  TCase *tc = fpt_tcase(s, "core", 300);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  first_completed_while_gate_runs);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  first_exception_returns_on_failure);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  cancelled_is_not_an_exception);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  all_completed_times_out_then_succeeds);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  done_futures_outlive_their_pool);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  bad_input);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  as_completed_yields_each_once);
  tcase_add_test(tc, as_completed_thousands);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  as_completed_order);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  as_completed_timeout);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  as_completed_destroy_while_pending);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  as_completed_yields_a_repeated_future_once);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", tc,
                  wait_with_a_repeated_future);
  /* Its own case, so CI can run it alone under ThreadSanitizer. */
  TCase *threads = fpt_tcase(s, "threads", 300);
  tcase_add_test(threads, two_threads_wait_on_one_pool);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", threads,
                  cancel_wakes_a_waiting_thread);
  fpt_add_test_in(FPT_IN_BESIDE,
                  "a task waits at a gate the test opens", threads,
                  shutdown_cancel_pending_wakes_a_waiting_thread);
  fpt_run_suite(s);
}

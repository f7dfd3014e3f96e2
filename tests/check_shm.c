/*
 * Large payloads through shared memory: arguments of 64 KiB or more go
 * through the pool's shared area and results of 64 KiB or more through the
 * worker's ring, as fp_submit(3) says; everything else, and whatever does
 * not fit, through the pipes.  Real workers, real megabytes: the bytes come
 * back intact either way, a task cannot write over arguments, a crash or a
 * cancellation loses nothing, a lying worker is refused, and the memory is
 * handed back.
 */
#define _GNU_SOURCE
#include "fpt.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SHARED_MIN 65536 /* fp_submit(3): arguments and results this large */

/* The argument's bin, unchanged. */
static int t_echo(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  return msgpack_pack_object(o, *a) ? FP_ENOMEM : 0;
}

/* Writes into its own argument, which the API hands over as const. */
static int t_scribble(fp_call *c, const msgpack_object *a,
                      msgpack_packer *o)
{
  if (a->type != MSGPACK_OBJECT_BIN || a->via.bin.size == 0)
    return fp_call_fail(c, "TypeError", "scribble takes a bin");
  ((volatile char *)a->via.bin.ptr)[0] ^= 1;
  return msgpack_pack_nil(o);
}

/* Writes a RESULT frame for task 1 that names bytes outside its ring. */
static int t_forge(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  /* Body: 3 (in the ring), id 1, pos 0, len 2^32-1 as uint 32. */
  static const char frame[] = {8, 0, 0, 0, 3, 1, 0, (char)0xce,
                               -1, -1, -1, -1};
  if (write(fpt_result_fd(), frame, sizeof frame) < 0)
    return -1;
  return msgpack_pack_nil(o);
}

/* [path]: blocks until the test writes a byte into the FIFO at path. */
static int t_gate(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  const char *p;
  size_t n;
  char path[256], b;
  if (fp_unpack(a, "[s]", &p, &n) != 0 || n >= sizeof path)
    return fp_call_fail(c, "TypeError", "gate takes a path");
  memcpy(path, p, n);
  path[n] = '\0';
  FILE *f = fopen(path, "r");
  if (f == NULL || fread(&b, 1, 1, f) != 1)
    return fp_call_fail(c, "OSError", "gate %s", path);
  fclose(f);
  return msgpack_pack_nil(o);
}

static const fp_task tasks[] = {{"echo", t_echo},
                                {"scribble", t_scribble},
                                {"forge", t_forge},
                                {"gate", t_gate},
                                {NULL, NULL}};

static fp_pool *pool(unsigned workers, unsigned max_inflight)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = workers;
  o.max_inflight = max_inflight;
  o.tasks = tasks;
  o.restart_limit = 0;
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  return p;
}

/* A bin of n bytes of a pattern that depends on seed, packed. */
static void pack_bin(msgpack_sbuffer *sb, size_t n, unsigned seed)
{
  msgpack_packer pk;
  msgpack_sbuffer_init(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  ck_assert_int_eq(msgpack_pack_bin(&pk, n), 0);
  char *buf = malloc(n + 1);
  ck_assert_ptr_nonnull(buf);
  for (size_t i = 0; i < n; i++)
    buf[i] = (char)(i * 31 + seed);
  ck_assert_int_eq(msgpack_pack_bin_body(&pk, buf, n), 0);
  free(buf);
}

/* The result is the bin pack_bin made for n and seed. */
static void check_bin(fp_future *f, size_t n, unsigned seed)
{
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), 0);
  ck_assert_int_eq(r->type, MSGPACK_OBJECT_BIN);
  ck_assert_uint_eq(r->via.bin.size, n);
  for (size_t i = 0; i < n; i++)
    if (r->via.bin.ptr[i] != (char)(i * 31 + seed))
      ck_abort_msg("byte %zu of %zu differs", i, n);
}

static fp_pool_stats stats(fp_pool *p)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  return st;
}

/* This process's resident shared memory, in KiB. */
static long rss_shmem_kib(void)
{
  FILE *f = fopen("/proc/self/status", "r");
  ck_assert_ptr_nonnull(f);
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "RssShmem: %ld kB", &kib) == 1)
      break;
  fclose(f);
  ck_assert_int_ge(kib, 0);
  return kib;
}

static fp_future *submit(fp_pool *p, const char *task,
                         const msgpack_sbuffer *sb)
{
  fp_future *f;
  ck_assert_int_eq(fp_submit(p, task, sb->data, sb->size, &f), 0);
  return f;
}

START_TEST(sizes_around_the_threshold)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool(2, 0);
  /* A bin of n bytes packs to n + 3 (under 64 KiB) or n + 5 bytes. */
  static const size_t sizes[] = {0,      1,         100,       SHARED_MIN - 4,
                                 SHARED_MIN - 3,    SHARED_MIN, 1 << 20,
                                 (9 << 20) + 7};
  enum { N = sizeof sizes / sizeof sizes[0] };
  fp_future *f[N];
  uint64_t large = 0;
  for (unsigned i = 0; i < N; i++) {
    msgpack_sbuffer sb;
    pack_bin(&sb, sizes[i], i);
    large += sb.size >= SHARED_MIN;
    f[i] = submit(p, "echo", &sb);
    msgpack_sbuffer_destroy(&sb); /* the caller's buffer goes at once */
  }
  for (unsigned i = 0; i < N; i++) {
    check_bin(f[i], sizes[i], i);
    fp_future_release(f[i]);
  }
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(large, 4);
  ck_assert_uint_eq(st.shared_args, large);
  ck_assert_uint_eq(st.shared_results, large);
  ck_assert_uint_eq(st.shared_bytes, 0); /* every argument let go */
  ck_assert_uint_eq(st.finished, N);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(tasks_cannot_write_shared_arguments)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool(1, 4);
  msgpack_sbuffer small, big;
  pack_bin(&small, 10, 1);
  pack_bin(&big, 1 << 20, 2);
  /* A private copy may be scribbled on; the shared one is read-only. */
  fp_future *a = submit(p, "scribble", &small);
  fp_future *b = submit(p, "scribble", &big);
  fp_future *c = submit(p, "echo", &big); /* queued behind the crash */
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(a, FPT_LIMIT_MS, &r), 0);
  ck_assert_int_eq(fp_future_result(b, FPT_LIMIT_MS, &r), FP_EWORKER);
  ck_assert_ptr_nonnull(strstr(fp_future_error(b), "signal 11"));
  check_bin(c, 1 << 20, 2); /* its own copy, untouched, sent again */
  fp_future_release(a);
  fp_future_release(b);
  fp_future_release(c);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.worker_deaths, 1);
  ck_assert_uint_eq(st.shared_bytes, 0);
  msgpack_sbuffer_destroy(&small);
  msgpack_sbuffer_destroy(&big);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/*
 * A running task cancelled before its frame was written: the frame (and
 * its shared argument) must stay until the worker is done with it, or the
 * next write would send freed memory and kill the worker.
 */
START_TEST(cancelled_before_written)
{
  fpt_snapshot s;
  fpt_begin(&s);
  char gate[64];
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = pool(1, 8);
  msgpack_sbuffer sb[4];
  fp_future *g, *f[4];
  ck_assert_int_eq(fp_submitf(p, "gate", &g, "[s]", gate), 0);
  for (unsigned i = 0; i < 4; i++) {
    pack_bin(&sb[i], i % 2 ? 100 : (size_t)1 << 20, i);
    f[i] = submit(p, "echo", &sb[i]);
  }
  /* Handed to the worker, their frames still gathering: no call that runs
   * the dispatcher (fp_future_state, say) may come between. */
  for (unsigned i = 1; i < 4; i++)
    ck_assert_int_eq(fp_future_cancel(f[i], FP_CANCEL_RUNNING), 0);
  fpt_gate_open(gate);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(g, FPT_LIMIT_MS, &r), 0);
  check_bin(f[0], (size_t)1 << 20, 0);
  for (unsigned i = 1; i < 4; i++)
    ck_assert_int_eq(fp_future_state(f[i]), FP_CANCELLED);
  /* The placeholders' answers come back; then nothing is held. */
  fp_pool_stats st;
  for (int tries = 0;; tries++) {
    ck_assert_int_lt(tries, FPT_LIMIT_MS);
    st = stats(p);
    if (st.shared_bytes == 0)
      break;
    ck_assert_int_ge(fp_pool_dispatch(p, 1), 0);
  }
  ck_assert_uint_eq(st.worker_deaths, 0);
  ck_assert_uint_eq(st.cancelled, 3);
  fp_future_release(g);
  for (unsigned i = 0; i < 4; i++) {
    fp_future_release(f[i]);
    msgpack_sbuffer_destroy(&sb[i]);
  }
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

#define OVERFILL_N 18
#define OVERFILL_SIZE ((size_t)16 << 20) /* 18 x 16 MiB > 256 MiB */

/*
 * Behind a task that holds p's one worker at a gate, OVERFILL_N echoes of
 * OVERFILL_SIZE bytes each, more than the area holds, all pending at once:
 * packed by hand for fp_submit, or given to fp_submitf as bytes.  The area
 * fills (what went there is counted and resident) and the rest goes
 * through the pipes; once the gate opens, every byte comes back.
 */
static void overfill_area(fp_pool *p, int submitf)
{
  char gate[64];
  fpt_gate_make(gate, sizeof gate);
  fp_future *g, *f[OVERFILL_N];
  ck_assert_int_eq(fp_submitf(p, "gate", &g, "[s]", gate), 0);
  char *bytes = submitf ? malloc(OVERFILL_SIZE) : NULL;
  ck_assert(!submitf || bytes != NULL);
  for (unsigned i = 0; i < OVERFILL_N; i++) {
    if (submitf) {
      for (size_t k = 0; k < OVERFILL_SIZE; k++)
        bytes[k] = (char)(k * 31 + i);
      ck_assert_int_eq(fp_submitf(p, "echo", &f[i], "y", bytes,
                                  OVERFILL_SIZE), 0);
    } else {
      msgpack_sbuffer sb;
      pack_bin(&sb, OVERFILL_SIZE, i);
      f[i] = submit(p, "echo", &sb);
      msgpack_sbuffer_destroy(&sb); /* the caller's buffer goes at once */
    }
  }
  free(bytes);
  fp_pool_stats st = stats(p);
  ck_assert_uint_gt(st.shared_args, 0);
  ck_assert_uint_lt(st.shared_args, OVERFILL_N); /* the area was full */
  ck_assert_uint_ge(st.shared_bytes, st.shared_args * OVERFILL_SIZE);
  ck_assert_int_gt(rss_shmem_kib(), 128 << 10);
  fpt_gate_open(gate);
  for (unsigned i = 0; i < OVERFILL_N; i++) {
    check_bin(f[i], OVERFILL_SIZE, i);
    fp_future_release(f[i]);
  }
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(g, FPT_LIMIT_MS, &r), 0);
  fp_future_release(g);
  fpt_gate_remove(gate);
}

/*
 * More than the area holds, all pending at once: what does not fit goes
 * through the pipes, every byte comes back, and afterwards the pages are
 * handed back to the kernel.
 */
START_TEST(area_full_then_trimmed)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool(1, 4);
  overfill_area(p, 0);
  /* One more, so that the worker trims its emptied ring. */
  msgpack_sbuffer sb;
  pack_bin(&sb, 1 << 20, 99);
  fp_future *last = submit(p, "echo", &sb);
  check_bin(last, 1 << 20, 99);
  fp_future_release(last);
  msgpack_sbuffer_destroy(&sb);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.shared_bytes, 0);
  ck_assert_uint_gt(st.shared_results, 0);
  /* At most 8 MiB kept for arguments and 8 MiB for the ring, and slack. */
  ck_assert_int_lt(rss_shmem_kib(), 24 << 10);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/*
 * fp_submitf packs a large argument straight into the area; once the area
 * is full, into a frame.  A format of two values is refused (FP_EINVAL),
 * and nothing is held for it.
 */
START_TEST(submitf_packs_large_arguments_into_the_area)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool(1, 4);
  char bytes[2 * SHARED_MIN] = {0};
  fp_future *bad = NULL;
  ck_assert_int_eq(fp_submitf(p, "echo", &bad, "yy", bytes,
                              (size_t)SHARED_MIN, bytes + SHARED_MIN,
                              (size_t)SHARED_MIN),
                   FP_EINVAL);
  ck_assert_ptr_null(bad);
  ck_assert_uint_eq(stats(p).shared_bytes, 0);
  overfill_area(p, 1);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.shared_bytes, 0);
  ck_assert_uint_eq(st.finished, OVERFILL_N + 1);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/*
 * An argument that nests containers more than 32 deep is refused at
 * submit (forkpool(7), Limits), large or small: packed straight into the
 * area, fp_submitf checks it as fp_submit does, and frees its place.  Its
 * worker, sent it, exited with status 70 (FP_EWORKER) instead.
 */
START_TEST(submitf_refuses_deep_large_arguments)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool(1, 1);
  char *bytes = calloc(1, SHARED_MIN);
  ck_assert_ptr_nonnull(bytes);
  for (int depth = 32; depth <= 33; depth++) {
    char fmt[80] = "";
    for (int k = 0; k < depth - 1; k++)
      strcat(fmt, "[");
    strcat(fmt, "[y]"); /* the bin in the deepest array */
    for (int k = 0; k < depth - 1; k++)
      strcat(fmt, "]");
    const size_t sizes[] = {100, SHARED_MIN};
    for (int k = 0; k < 2; k++) {
      fp_future *f = NULL;
      int rc = fp_submitf(p, "echo", &f, fmt, bytes, sizes[k]);
      if (depth > 32) {
        ck_assert_msg(rc == FP_EINVAL, "depth %d, %zu bytes: %s", depth,
                      sizes[k], fp_strerror(rc));
        ck_assert_ptr_null(f);
      } else {
        ck_assert_int_eq(rc, 0);
        const msgpack_object *r;
        ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), 0);
        fp_future_release(f);
      }
      ck_assert_uint_eq(stats(p).shared_bytes, 0);
    }
  }
  free(bytes);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.finished, 2);
  ck_assert_uint_eq(st.worker_deaths, 0);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(forged_ring_result_is_refused)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool(1, 2);
  fp_future *f;
  /* The pool's first task has id 1, the id the forged frame names. */
  ck_assert_int_eq(fp_submitf(p, "forge", &f, "[]"), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_EPROTO);
  ck_assert_ptr_nonnull(strstr(fp_future_error(f), "ring"));
  fp_future_release(f);
  /* The worker was replaced; the next large echo works. */
  msgpack_sbuffer sb;
  pack_bin(&sb, 1 << 20, 5);
  f = submit(p, "echo", &sb);
  check_bin(f, 1 << 20, 5);
  fp_future_release(f);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Mappings of shared anonymous memory in this process. */
static int shared_anon_maps(void)
{
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL)
    return -1;
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f) != NULL)
    n += strstr(line, "/dev/zero (deleted)") != NULL;
  fclose(f);
  return n;
}

/* The caller's own children do not get the area; FP_SHM_OFF maps none. */
START_TEST(area_stays_out_of_callers_children)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int before = shared_anon_maps();
  fp_pool *p = pool(1, 0);
  ck_assert_int_eq(shared_anon_maps(), before + 1);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    _exit(shared_anon_maps() == before ? 0 : 1);
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  fpt_pool_destroy(p);
  ck_assert_int_eq(shared_anon_maps(), before);

  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 1;
  o.tasks = tasks;
  o.shm_args = FP_SHM_OFF;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  ck_assert_int_eq(shared_anon_maps(), before);
  msgpack_sbuffer sb;
  pack_bin(&sb, 1 << 20, 3);
  fp_future *f = submit(p, "echo", &sb);
  check_bin(f, 1 << 20, 3);
  fp_future_release(f);
  msgpack_sbuffer_destroy(&sb);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.shared_args, 0);
  ck_assert_uint_eq(st.shared_results, 0);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Out-of-range sizes are refused, and nothing is left behind. */
START_TEST(bad_shm_args)
{
  fpt_snapshot s;
  fpt_begin(&s);
  static const size_t bad[] = {1, 4096, (1 << 20) - 1,
                               ((size_t)1 << 40) + 1, FP_SHM_OFF - 1};
  for (unsigned i = 0; i < sizeof bad / sizeof *bad; i++) {
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    o.tasks = tasks;
    o.shm_args = bad[i];
    fp_pool *p = (fp_pool *)&o; /* not left as it was */
    ck_assert_int_eq(fpt_pool_create(&p, &o), FP_EINVAL);
    ck_assert_ptr_null(p);
  }
  /* The smallest area: a 2 MiB argument does not fit, and goes by pipe. */
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 1;
  o.tasks = tasks;
  o.shm_args = 1 << 20;
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  msgpack_sbuffer sb;
  pack_bin(&sb, 2 << 20, 4);
  fp_future *f = submit(p, "echo", &sb);
  check_bin(f, 2 << 20, 4);
  fp_future_release(f);
  msgpack_sbuffer_destroy(&sb);
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.shared_args, 0);
  ck_assert_uint_eq(st.shared_results, 1); /* the ring is its own */
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Threads submitting large echoes at once: each copy into the shared area
 * is made outside the pool's lock, into a place no other task has. */
typedef struct thread_arg {
  fp_pool *p;
  unsigned seed;
  int ok;
} thread_arg;

static void *echo_thread(void *arg)
{
  thread_arg *t = arg;
  enum { N = 24 };
  fp_future *f[N];
  msgpack_sbuffer sb[N];
  for (unsigned i = 0; i < N; i++) {
    pack_bin(&sb[i], (size_t)(64 + i * 17) << 10, t->seed + i);
    if (fp_submit(t->p, "echo", sb[i].data, sb[i].size, &f[i]) != 0)
      return NULL;
  }
  for (unsigned i = 0; i < N; i++) {
    check_bin(f[i], (size_t)(64 + i * 17) << 10, t->seed + i);
    fp_future_release(f[i]);
    msgpack_sbuffer_destroy(&sb[i]);
  }
  t->ok = 1;
  return NULL;
}

START_TEST(threads_submit_large_arguments)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool(2, 0);
  pthread_t th[3];
  thread_arg ta[3];
  for (unsigned k = 0; k < 3; k++) {
    ta[k] = (thread_arg){p, 100 * k, 0};
    ck_assert_int_eq(pthread_create(&th[k], NULL, echo_thread, &ta[k]), 0);
  }
  for (unsigned k = 0; k < 3; k++) {
    ck_assert_int_eq(pthread_join(th[k], NULL), 0);
    ck_assert(ta[k].ok);
  }
  fp_pool_stats st = stats(p);
  ck_assert_uint_eq(st.shared_args, 3 * 24);
  ck_assert_uint_eq(st.shared_bytes, 0);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("shm");
  TCase *tc = fpt_tcase(s, "shm", 300);
  tcase_add_test(tc, sizes_around_the_threshold);
  tcase_add_test(tc, tasks_cannot_write_shared_arguments);
  tcase_add_test(tc, submitf_packs_large_arguments_into_the_area);
  tcase_add_test(tc, submitf_refuses_deep_large_arguments);
  tcase_add_test(tc, cancelled_before_written);
  tcase_add_test(tc, area_full_then_trimmed);
  tcase_add_test(tc, forged_ring_result_is_refused);
  tcase_add_test(tc, area_stays_out_of_callers_children);
  tcase_add_test(tc, bad_shm_args);
  tc = fpt_tcase(s, "threads", 300);
  tcase_add_test(tc, threads_submit_large_arguments);
  fpt_run_suite(s);
}

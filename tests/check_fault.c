/*
 * Fault injection with real workers and real signals: failed allocations in
 * the parent, exhausted descriptors, a signal storm, a fork server killed at
 * awkward moments, workers that write garbage.  Whatever the fault, every
 * call returns success or a clear error, and nothing hangs, crashes or is
 * left behind (no child process, no descriptor, no byte).
 *
 * Runs that may crash or hang on a bug are made in a forked child of the
 * test (see in_child), so one bad case is reported with its parameters and
 * the others still run.
 */
#define _GNU_SOURCE
#include "failmalloc.h"
#include "fpt.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAULT_HDR 4 /* the wire's frame header: body length, little-endian */

/* --- Tasks that break the protocol (registered in main) ------------------- */

/* The worker's end of its result pipe. */
#define WORKER_OUT_FD fpt_result_fd()

static int write_frame(const void *body, size_t len, size_t claimed)
{
  unsigned char hdr[FAULT_HDR] = {claimed & 0xff, (claimed >> 8) & 0xff,
                                  (claimed >> 16) & 0xff,
                                  (claimed >> 24) & 0xff};
  if (write(WORKER_OUT_FD, hdr, sizeof hdr) != sizeof hdr)
    return -1;
  if (len > 0 && write(WORKER_OUT_FD, body, len) != (ssize_t)len)
    return -1;
  return 0;
}

/* A frame of the right length whose body is not msgpack, then its answer. */
static int t_garbage_body(fp_call *c, const msgpack_object *a,
                          msgpack_packer *o)
{
  (void)c;
  (void)a;
  static const unsigned char never_used[8] = {0xc1, 0xc1, 0xc1, 0xc1,
                                              0xc1, 0xc1, 0xc1, 0xc1};
  if (write_frame(never_used, sizeof never_used, sizeof never_used) != 0)
    return -1;
  return msgpack_pack_nil(o);
}

/*
 * Packs a RESULT body into sb: a success, [1, id, 0, nil], when code_str is
 * 0; else a string where the integer code belongs, followed by one object
 * (code_str 1) or by the kind and message of a failure (code_str 2).
 */
static void result_body(msgpack_sbuffer *sb, uint64_t id, int code_str)
{
  msgpack_packer pk;
  msgpack_sbuffer_init(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_int(&pk, 1);
  msgpack_pack_uint64(&pk, id);
  if (code_str == 0) {
    msgpack_pack_int(&pk, 0);
    msgpack_pack_nil(&pk);
    return;
  }
  msgpack_pack_str_with_body(&pk, "x", 1);
  if (code_str == 1) {
    msgpack_pack_int(&pk, 42);
  } else {
    msgpack_pack_str_with_body(&pk, "Kind", 4);
    msgpack_pack_str_with_body(&pk, "message", 7);
  }
}

/*
 * [id, round]: a RESULT frame for the task's own wire id (the test passes
 * it: a new pool numbers its tasks 1, 2, 3, ... in submit order) whose code
 * is a string, not an integer, then the task's real answer.  Even rounds put
 * one object after the code, odd ones a kind and a message: whatever a
 * reader that does not check the code makes of it, one of them is wrong.
 */
static int t_bad_code(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t id, round;
  if (fp_unpack(a, "[II]", &id, &round) != 0)
    return fp_call_fail(c, "TypeError", "takes an id and a round");
  msgpack_sbuffer sb;
  result_body(&sb, (uint64_t)id, round % 2 ? 2 : 1);
  int rc = write_frame(sb.data, sb.size, sb.size);
  msgpack_sbuffer_destroy(&sb);
  return rc != 0 ? -1 : msgpack_pack_nil(o);
}

/* [id, round]: a well-formed success for a task this worker never had. */
static int t_other_id(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t id, round;
  if (fp_unpack(a, "[II]", &id, &round) != 0)
    return fp_call_fail(c, "TypeError", "takes an id and a round");
  msgpack_sbuffer sb;
  result_body(&sb, (uint64_t)id + 1000, 0);
  int rc = write_frame(sb.data, sb.size, sb.size);
  msgpack_sbuffer_destroy(&sb);
  return rc != 0 ? -1 : msgpack_pack_nil(o);
}

/* A header announcing 100 bytes, 10 of them, and the worker exits 0. */
static int t_cut_body(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  static const char some[10] = "0123456789";
  (void)write_frame(some, sizeof some, 100);
  _exit(0);
}

/* Half a header, and the worker exits 0. */
static int t_cut_header(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  (void)!write(WORKER_OUT_FD, "\x10\x00", 2);
  _exit(0);
}

static const fp_task fault_tasks[] = {
    {"fault_garbage_body", t_garbage_body}, {"fault_bad_code", t_bad_code},
    {"fault_other_id", t_other_id},         {"fault_cut_body", t_cut_body},
    {"fault_cut_header", t_cut_header},     {NULL, NULL}};

/* --- Running a case in a child of the test -------------------------------- */

typedef struct report {
  long value;             /* what the case wants to tell, e.g. a count */
  unsigned long calls;    /* allocations made while armed */
  unsigned long failures; /* allocations failed while armed */
  char msg[600];          /* the first thing that went wrong; "" if none */
} report;

/* Keeps the first problem of a case; later ones are usually its echoes. */
static void note(report *r, const char *fmt, ...) FP_PRINTF(2, 3);
static void note(report *r, const char *fmt, ...)
{
  if (r->msg[0] != '\0')
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->msg, sizeof r->msg, fmt, ap);
  va_end(ap);
}

/*
 * In the child of in_child, instead of Check's assertions (which would
 * report from, or unwind into, a copy of the test): notes the failed
 * condition and returns from the case.
 */
#define REQUIRE(r, cond)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      note(r, "%s:%d: %s", __FILE__, __LINE__, #cond);                        \
      return;                                                                 \
    }                                                                         \
  } while (0)

enum child_end { CHILD_OK, CHILD_FAILED, CHILD_CRASHED, CHILD_HUNG };

/* Reaps the test's descendants (it is a subreaper) until none is left:
 * 0, or -1 after limit_ms, when the ones left are killed. */
static int reap_all(int limit_ms)
{
  struct timespec nap = {0, 2 * 1000 * 1000};
  for (int waited = 0; fpt_count_children(); waited += 2) {
    while (waitpid(-1, NULL, WNOHANG) > 0)
      ;
    if (waited >= limit_ms) {
      pid_t c;
      while ((c = fpt_first_child()) > 0) {
        kill(c, SIGKILL);
        waitpid(c, NULL, 0);
      }
      return -1;
    }
    nanosleep(&nap, NULL);
  }
  return 0;
}

/*
 * Runs fn(arg, r) in a forked child: CHILD_OK if it returned with no note,
 * CHILD_FAILED with r->msg, CHILD_CRASHED if it died of a signal or exited
 * without its report, CHILD_HUNG (and killed) if it took longer than
 * limit_ms.  Afterwards no descendant of the test is left, or r->msg says so.
 */
static enum child_end in_child(void (*fn)(void *, report *), void *arg,
                               int limit_ms, report *r)
{
  int pp[2];
  memset(r, 0, sizeof *r);
  ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(pp[0]);
    report mine;
    memset(&mine, 0, sizeof mine);
    fn(arg, &mine);
    (void)!write(pp[1], &mine, sizeof mine);
    _exit(mine.msg[0] != '\0');
  }
  close(pp[1]);
  struct pollfd pf = {.fd = pp[0], .events = POLLIN};
  int64_t end = 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  end = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + limit_ms;
  size_t got = 0;
  int hung = 0;
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t left = end - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (left <= 0) {
      hung = 1;
      break;
    }
    int n = poll(&pf, 1, (int)left);
    if (n < 0 && errno == EINTR)
      continue;
    ck_assert_int_ge(n, 0);
    if (n == 0)
      continue;
    ssize_t k = read(pp[0], (char *)r + got, sizeof *r - got);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      break;
    got += (size_t)k;
  }
  close(pp[0]);
  if (hung)
    kill(pid, SIGKILL);
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
    ;
  enum child_end e;
  if (hung) {
    e = CHILD_HUNG;
    snprintf(r->msg, sizeof r->msg, "hung for %d ms (killed)", limit_ms);
  } else if (WIFSIGNALED(st)) {
    e = CHILD_CRASHED;
    snprintf(r->msg, sizeof r->msg, "crashed with signal %d (%s)",
             WTERMSIG(st), strsignal(WTERMSIG(st)));
  } else if (got != sizeof *r) {
    e = CHILD_CRASHED; /* a sanitizer's exit, say */
    snprintf(r->msg, sizeof r->msg, "exited with status %d, no report",
             WEXITSTATUS(st));
  } else {
    e = r->msg[0] != '\0' ? CHILD_FAILED : CHILD_OK;
  }
  /* The pool's fork server was reparented to the test: it must be gone. */
  if (reap_all(hung ? FPT_LIMIT_MS : 10000) != 0 && e == CHILD_OK) {
    e = CHILD_FAILED;
    snprintf(r->msg, sizeof r->msg, "a process was left behind");
  }
  return e;
}

/* Checks that a case left its process as it found it: descriptors, heap. */
typedef struct baseline {
  int fds;
  long heap;
} baseline;

static baseline take_baseline(void)
{
  baseline b;
  b.fds = fpt_count_fds();
  b.heap = fm_heap_in_use();
  return b;
}

static void compare_baseline(const baseline *b, report *r)
{
  int fds = fpt_count_fds();
  long heap = fm_heap_in_use();
  if (fds != b->fds)
    note(r, "%d descriptors left behind", fds - b->fds);
  if (heap != b->heap)
    note(r, "%ld bytes of heap left behind", heap - b->heap);
}

/* --- Allocation failure --------------------------------------------------- */

enum { ALLOC_TASKS = 20, ALLOC_CRASH = 7, MAP_ITEMS = 50, MAP_CRASH = 5 };
/* A scenario takes ~15 ms: this is a hang, however busy the machine. */
#define INNER_LIMIT_MS 30000

static msgpack_sbuffer map_items; /* [[v], ...]; built before any arming */

static int64_t map_value(size_t i)
{
  return i == 6 ? 106 : (int64_t)i; /* sq_or_segv: 5 segfaults, 6 spins */
}

static void build_map_items(void)
{
  msgpack_packer pk;
  msgpack_sbuffer_init(&map_items);
  msgpack_packer_init(&pk, &map_items, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, MAP_ITEMS);
  for (size_t i = 0; i < MAP_ITEMS; i++) {
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int64(&pk, map_value(i));
  }
}

static void count_call(fp_future *f, void *arg)
{
  (void)f;
  ++*(int *)arg;
}

typedef struct alloc_case {
  unsigned long nth;
  int persistent;
} alloc_case;

/*
 * The codes a shortage of memory may cause: FP_ENOMEM, and, when every
 * allocation from the nth on fails, FP_EBROKEN too (a pool that cannot read
 * its workers' answers any more may give up).
 */
static int short_of_memory(const alloc_case *ac, int rc)
{
  return rc == FP_ENOMEM || (ac->persistent && rc == FP_EBROKEN);
}

/* One result of the submitted tasks: right, or a failure allowed here. */
static void check_task(report *r, const alloc_case *ac, fp_future *f, int i)
{
  const msgpack_object *res;
  int rc = fp_future_result(f, 0, &res);
  fp_state st = fp_future_state(f);
  if (rc == 0 && i != ALLOC_CRASH && res->via.i64 != (int64_t)i * i)
    note(r, "task %d returned %lld", i,
         (long long)res->via.i64);
  else if (rc == 0 && st != FP_FINISHED)
    note(r, "task %d has a result in state %d", i, st);
  else if (rc == 0 && i == ALLOC_CRASH)
    note(r, "the crashing task succeeded");
  else if (rc != 0 && (st != FP_FAILED || fp_future_error(f) == NULL))
    note(r, "task %d failed (%s) in state %d, error %s", i,
         fp_err_name(rc), st, fp_future_error(f) ? "set" : "NULL");
  else if (rc != 0 && !short_of_memory(ac, rc) &&
           !(i == ALLOC_CRASH && rc == FP_EWORKER))
    note(r, "task %d failed with %s: %s", i,
         fp_err_name(rc), fp_future_error(f));
}

/* 1 if f is done, as it must be after waiting for all of them. */
static int done_or_note(report *r, fp_future *f, int i)
{
  if (fp_future_wait(f, 0) == 0)
    return 1;
  note(r, "task %d is not done after waiting for all", i);
  return 0;
}

/* Runs the map; 1 if it ran to its end (nothing left running). */
static int alloc_map(report *r, const alloc_case *ac, fp_pool *p)
{
  fp_map_input in = {.array = map_items.data, .len = map_items.size};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  mo.chunksize = 4; /* the crash is in a chunk: the chunk is split */
  fp_map_iter *m = NULL;
  int rc = fpt_map(p, "sq_or_segv", &in, &mo, &m);
  if (rc != 0) {
    if (!short_of_memory(ac, rc))
      note(r, "fp_map: %s", fp_err_name(rc));
    if (m != NULL)
      note(r, "fp_map failed but set *out");
    return 1;
  }
  unsigned char seen[MAP_ITEMS] = {0};
  int retries = 0;
  fp_map_item it;
  for (;;) {
    rc = fp_map_next(m, INNER_LIMIT_MS, &it);
    if (rc == FP_ENOMEM && !ac->persistent && ++retries < 5)
      continue; /* a passing shortage: the next call goes on */
    if (rc != 1)
      break;
    if (it.index >= MAP_ITEMS || seen[it.index]) {
      note(r, "map item %zu yielded twice or out of range",
           it.index);
      break;
    }
    seen[it.index] = 1;
    int64_t v = map_value(it.index);
    if (it.err == 0 && (it.index == MAP_CRASH ||
                        it.result->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                        it.result->via.i64 != v * v))
      note(r, "map item %zu: result of type %d, %lld, not %lld", it.index,
           it.result->type, (long long)it.result->via.i64, (long long)(v * v));
    else if (it.err != 0 && !short_of_memory(ac, it.err) &&
             !(it.index == MAP_CRASH && it.err == FP_EWORKER))
      note(r, "map item %zu failed with %s: %s", it.index,
           fp_err_name(it.err), it.error ? it.error : "(no message)");
  }
  if (rc == 0) {
    for (size_t i = 0; i < MAP_ITEMS; i++)
      if (!seen[i])
        note(r, "the map ended without item %zu", i);
  } else if (!short_of_memory(ac, rc)) {
    note(r, "fp_map_next: %s", fp_err_name(rc));
  } else if (!ac->persistent) {
    note(r, "fp_map_next kept failing with FP_ENOMEM");
  }
  fpt_map_destroy(m);
  return rc == 0;
}

/*
 * The scenario: create a pool; submit 20 tasks, one of which crashes, with a
 * done-callback on one; wait for them as they complete; map 50 items, one of
 * which crashes; check the counters; destroy.  Any allocation may have
 * failed: each call must succeed or say FP_ENOMEM, and each future must end
 * right or with FP_ENOMEM.
 */
/*
 * A 96 KiB bin echoed: its argument and its result go through the pool's
 * shared memory.  Packed by hand into static storage, so the harness's own
 * allocations do not count.
 */
static void alloc_large_echo(report *r, const alloc_case *ac, fp_pool *p)
{
  enum { N = 96 << 10 };
  static char big[5 + N];
  big[0] = (char)0xc6; /* bin 32 */
  big[1] = 0;
  big[2] = (char)(N >> 16);
  big[3] = (char)(N >> 8);
  big[4] = (char)N;
  for (int i = 0; i < N; i++)
    big[5 + i] = (char)(i * 13);
  fp_future *e = NULL;
  const msgpack_object *res;
  int rc = fp_submit(p, "echo", big, sizeof big, &e);
  if (rc == 0)
    rc = fp_future_result(e, INNER_LIMIT_MS, &res);
  if (rc == 0 && (res->type != MSGPACK_OBJECT_BIN || res->via.bin.size != N ||
                  memcmp(res->via.bin.ptr, big + 5, N) != 0))
    note(r, "large echo: the bytes came back wrong");
  else if (rc != 0 && !short_of_memory(ac, rc))
    note(r, "large echo: %s (%s)", fp_err_name(rc),
         e && fp_future_error(e) ? fp_future_error(e) : "");
  fp_future_release(e);
}

static void alloc_scenario(report *r, const alloc_case *ac)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 2;
  o.tasks = fpt_tasks;
  fp_pool *p = (fp_pool *)&o;
  int rc = fpt_pool_create(&p, &o);
  if (rc != 0) {
    if (!short_of_memory(ac, rc))
      note(r, "fp_pool_create: %s", fp_err_name(rc));
    if (p != NULL)
      note(r, "fp_pool_create failed but set *out");
    return;
  }

  fp_future *f[ALLOC_TASKS], *live[ALLOC_TASKS];
  size_t nlive = 0;
  for (int i = 0; i < ALLOC_TASKS; i++) {
    rc = fp_submitf(p, i == ALLOC_CRASH ? "segv" : "square", &f[i], "[I]",
                    (int64_t)i);
    if (rc != 0 && !short_of_memory(ac, rc))
      note(r, "fp_submitf: %s", fp_err_name(rc));
    if (rc != 0 && f[i] != NULL)
      note(r, "fp_submitf failed but set *out");
    if (rc != 0)
      f[i] = NULL;
    else
      live[nlive++] = f[i];
  }
  int calls = 0, added = 0;
  if (f[0] != NULL) {
    rc = fp_future_on_done(f[0], count_call, &calls);
    added = rc == 0;
    if (rc != 0 && rc != FP_ENOMEM)
      note(r, "fp_future_on_done: %s", fp_err_name(rc));
  }

  fp_as_completed *it;
  rc = fp_as_completed_create(&it, live, nlive, INNER_LIMIT_MS);
  if (rc == 0) {
    size_t yielded = 0;
    fp_future *d;
    while ((rc = fp_as_completed_next(it, &d)) == 1)
      yielded++;
    if (rc != 0 || yielded != nlive)
      note(r, "as_completed yielded %zu of %zu, then %s",
           yielded, nlive, fp_err_name(rc));
    fp_as_completed_destroy(it);
  } else if (rc == FP_ENOMEM) {
    rc = fp_wait(live, nlive, FP_ALL_COMPLETED, INNER_LIMIT_MS, NULL);
    if (rc != 0)
      note(r, "fp_wait: %s", fp_err_name(rc));
  } else {
    note(r, "fp_as_completed_create: %s", fp_err_name(rc));
  }
  for (int i = 0; i < ALLOC_TASKS; i++)
    if (f[i] != NULL && done_or_note(r, f[i], i))
      check_task(r, ac, f[i], i);
  if (added && calls != 1)
    note(r, "the done-callback ran %d times", calls);

  int map_ended = alloc_map(r, ac, p);
  alloc_large_echo(r, ac, p);

  /* Every task is in one of the five states; if the map was given up, its
   * chunks already with a worker may still be running. */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  if (fp_pool_stats_get(p, &st, NULL, 0) != 0)
    note(r, "fp_pool_stats_get failed");
  else if ((map_ended && st.queued + st.running != 0) ||
           st.submitted != st.queued + st.running + st.finished + st.failed +
                           st.cancelled)
    note(r, "stats: submitted %llu, queued %llu, running %llu, "
         "finished %llu, failed %llu, cancelled %llu",
         (unsigned long long)st.submitted, (unsigned long long)st.queued,
         (unsigned long long)st.running, (unsigned long long)st.finished,
         (unsigned long long)st.failed, (unsigned long long)st.cancelled);
  for (int i = 0; i < ALLOC_TASKS; i++)
    fp_future_release(f[i]);
  fpt_pool_destroy(p);
}

static void alloc_child(void *arg, report *r)
{
  const alloc_case *ac = arg;
  baseline b = take_baseline();
  fm_arm(ac->nth, ac->persistent);
  alloc_scenario(r, ac);
  fm_disarm();
  r->calls = fm_calls();
  r->failures = fm_failures();
  compare_baseline(&b, r);
}

/* Problems grouped by their text with the numbers taken out. */
typedef struct problems {
  struct {
    char shape[160];
    char first[600];
    unsigned count;
  } kind[16];
  unsigned nkinds, total;
} problems;

static void add_problem(problems *ps, const char *msg)
{
  char shape[160];
  size_t k = 0;
  for (const char *c = msg; *c && k < sizeof shape - 1; c++)
    if (*c < '0' || *c > '9')
      shape[k++] = *c;
  shape[k] = '\0';
  ps->total++;
  for (unsigned i = 0; i < ps->nkinds; i++)
    if (strcmp(ps->kind[i].shape, shape) == 0) {
      ps->kind[i].count++;
      return;
    }
  if (ps->nkinds == sizeof ps->kind / sizeof ps->kind[0])
    return;
  snprintf(ps->kind[ps->nkinds].shape, sizeof ps->kind[0].shape, "%s", shape);
  snprintf(ps->kind[ps->nkinds].first, sizeof ps->kind[0].first, "%s", msg);
  ps->kind[ps->nkinds++].count = 1;
}

static void format_problems(const problems *ps, char *out, size_t len)
{
  size_t off = 0;
  out[0] = '\0';
  for (unsigned i = 0; i < ps->nkinds && off < len; i++)
    off += (size_t)snprintf(out + off, len - off, "\n  [%u runs] %s",
                            ps->kind[i].count, ps->kind[i].first);
}

static unsigned long env_ulong(const char *name, unsigned long def)
{
  const char *v = getenv(name);
  return v && *v ? strtoul(v, NULL, 10) : def;
}

/*
 * Fails allocation N = 1, 2, 3, ... of the scenario in the parent, once or
 * from N on, until a run makes fewer than N allocations.  Each run is a
 * child of the test; the fork server and workers it forks never fail.
 */
static void alloc_loop(int persistent)
{
  fpt_snapshot s;
  fpt_begin(&s);
  build_map_items();
  /* Once here, unarmed, so that what libc sets up on first use is set up in
   * every child before its baseline is taken. */
  report r;
  alloc_case ac = {0, persistent};
  memset(&r, 0, sizeof r);
  alloc_scenario(&r, &ac);
  ck_assert_msg(r.msg[0] == '\0', "without injected failures: %s", r.msg);
  ck_assert_int_eq(reap_all(FPT_LIMIT_MS), 0);

  /* FP_FAULT_NTH=n runs only that case (to debug it), FP_FAULT_MAX_NTH
   * bounds the loop (for slow runs under valgrind). */
  unsigned long only = env_ulong("FP_FAULT_NTH", 0);
  unsigned long max = only ? only : env_ulong("FP_FAULT_MAX_NTH", 5000);
  unsigned long n, calls = 0;
  static problems ps;
  unsigned hangs = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (n = only ? only : 1; n <= max; n++) {
    ac.nth = n;
    enum child_end e = in_child(alloc_child, &ac, 3 * INNER_LIMIT_MS, &r);
    if (e != CHILD_OK) {
      char msg[700];
      snprintf(msg, sizeof msg, "nth %lu: %s", n, r.msg);
      add_problem(&ps, msg);
    }
    if (e == CHILD_HUNG && ++hangs == 2)
      break; /* each costs the limit: two say enough */
    if ((e == CHILD_OK || e == CHILD_FAILED) && r.failures == 0) {
      calls = r.calls;
      break; /* this run never reached its nth allocation: all covered */
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) +
                (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("allocation failure (%s): %lu runs, %lu allocations in a full run, "
         "%.1f s, %u runs went wrong\n",
         persistent ? "from nth on" : "nth only", n, calls, secs, ps.total);
  fflush(stdout);
  static char text[16 * 700];
  format_problems(&ps, text, sizeof text);
  ck_assert_msg(ps.total == 0, "%u of %lu runs went wrong:%s", ps.total, n,
                text);
  ck_assert_msg(n <= max, "the scenario still made %lu allocations", max);
  msgpack_sbuffer_destroy(&map_items);
  fpt_end(&s);
}

START_TEST(alloc_fails_once)
{
  alloc_loop(0);
}
END_TEST

START_TEST(alloc_fails_from_nth_on)
{
  alloc_loop(1);
}
END_TEST

/* --- Descriptor exhaustion ------------------------------------------------ */

static char pool_log[1024];

static void keep_log(void *arg, int level, const char *msg)
{
  (void)arg;
  if (level == FP_LOG_ERROR && pool_log[0] == '\0')
    snprintf(pool_log, sizeof pool_log, "%s", msg);
}

static int lowest_free_fd(void)
{
  int fd = fcntl(2, F_DUPFD, 0);
  if (fd >= 0)
    close(fd);
  return fd;
}

/* [limit]: create a pool under RLIMIT_NOFILE limit; value 1 if it worked. */
static void nofile_child(void *arg, report *r)
{
  int limit = *(int *)arg;
  baseline b = take_baseline();
  struct rlimit old, low;
  REQUIRE(r, getrlimit(RLIMIT_NOFILE, &old) == 0);
  low = old;
  low.rlim_cur = (rlim_t)limit;
  REQUIRE(r, setrlimit(RLIMIT_NOFILE, &low) == 0);
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 2;
  o.tasks = fpt_tasks;
  o.log = keep_log;
  fp_pool *p;
  int rc = fpt_pool_create(&p, &o);
  if (rc == 0) {
    fp_future *f;
    const msgpack_object *res;
    rc = fp_submitf(p, "square", &f, "[I]", (int64_t)7);
    if (rc == 0 && (rc = fp_future_result(f, INNER_LIMIT_MS, &res)) == 0 &&
        res->via.i64 != 49)
      note(r, "limit %d: wrong result", limit);
    else if (rc != 0)
      note(r, "limit %d: a task on a pool that started: %s (%s)", limit,
           fp_err_name(rc), f ? fp_future_error(f) : "");
    fp_future_release(f);
    fpt_pool_destroy(p);
    r->value = 1;
  } else if (rc != FP_EMFILE) {
    note(r, "limit %d: fp_pool_create returned %s, not FP_EMFILE (log: %s)",
         limit, fp_err_name(rc), pool_log);
  } else if (pool_log[0] != '\0' && strstr(pool_log, "open files") == NULL) {
    note(r, "limit %d: FP_EMFILE, but the log says: %s", limit, pool_log);
  }
  REQUIRE(r, setrlimit(RLIMIT_NOFILE, &old) == 0);
  compare_baseline(&b, r);
}

/* fp_pool_create under every limit from "no descriptor left" up to one it
 * works with: FP_EMFILE, and nothing left behind, until it works. */
START_TEST(create_under_low_nofile)
{
  fpt_snapshot s;
  fpt_begin(&s);
  int first = lowest_free_fd();
  ck_assert_int_ge(first, 0);
  static problems ps;
  report r;
  int limit, worked = 0;
  for (limit = first; limit < first + 64 && !worked; limit++) {
    enum child_end e = in_child(nofile_child, &limit, FPT_LIMIT_MS, &r);
    if (e != CHILD_OK)
      add_problem(&ps, r.msg);
    worked = e == CHILD_OK && r.value == 1;
  }
  static char text[16 * 700];
  format_problems(&ps, text, sizeof text);
  printf("descriptor exhaustion at create: limits %d..%d\n", first, limit - 1);
  ck_assert_msg(ps.total == 0, "%u of %d limits went wrong:%s", ps.total,
                limit - first, text);
  ck_assert_msg(worked, "no pool even with %d descriptors", limit);
  fpt_end(&s);
}
END_TEST

/* Takes every free descriptor number below the limit: how many it took,
 * or -1 if that was not all of them. */
static int fill_descriptors(int *fds, int max)
{
  int n = 0;
  while (n < max && (fds[n] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
    n++;
  return n < max && errno == EMFILE ? n : -1;
}

/*
 * A working pool, then no descriptor left: a crashed worker's replacement
 * cannot be received.  The pool must break with a message that says so, and
 * nothing may hang.  The fork server is stopped while the crash is half
 * handled (the parent has closed the dead worker's pipes and waits for its
 * exit status), so that the test can take the two numbers freed before the
 * replacement's arrive.
 */
static void restart_child(void *arg, report *r)
{
  (void)arg;
  REQUIRE(r, prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); /* the fork server is
                                                       our child */
  baseline b = take_baseline();
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.workers = 2;
  o.tasks = fpt_tasks;
  o.log = keep_log;
  fp_pool *p;
  REQUIRE(r, fpt_pool_create(&p, &o) == 0);
  pid_t fs = fpt_first_child();
  REQUIRE(r, fs > 0);
  fp_future *f;
  const msgpack_object *res;
  REQUIRE(r, fp_submitf(p, "square", &f, "[I]", (int64_t)3) == 0);
  REQUIRE(r, fp_future_result(f, INNER_LIMIT_MS, &res) == 0);
  fp_future_release(f);

  struct rlimit old, low;
  REQUIRE(r, getrlimit(RLIMIT_NOFILE, &old) == 0);
  low = old;
  low.rlim_cur = (rlim_t)lowest_free_fd();
  REQUIRE(r, setrlimit(RLIMIT_NOFILE, &low) == 0);
  REQUIRE(r, kill(fs, SIGSTOP) == 0);
  fp_future *crash;
  REQUIRE(r, fp_submitf(p, "segv", &crash, "[]") == 0);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    REQUIRE(r, fp_pool_stats_get(p, &st, NULL, 0) == 0);
    if (st.workers_live == 1)
      break; /* its end of file is handled, its pipes closed */
    clock_gettime(CLOCK_MONOTONIC, &t);
    REQUIRE(r, t.tv_sec - t0.tv_sec < INNER_LIMIT_MS / 1000);
    REQUIRE(r, fp_pool_dispatch(p, 10) >= 0);
  }
  int filler[8];
  int nfill = fill_descriptors(filler, 8);
  REQUIRE(r, nfill >= 0);
  REQUIRE(r, kill(fs, SIGCONT) == 0);

  int rc = fp_future_result(crash, INNER_LIMIT_MS, &res);
  if (rc != FP_EWORKER)
    note(r, "the crash: %s (%s)", fp_err_name(rc), fp_future_error(crash));
  fp_future_release(crash);
  /* Tasks go on with the other worker until the replacement's SPAWNED
   * message is read; then the pool is broken. */
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    f = NULL;
    rc = fp_submitf(p, "square", &f, "[I]", (int64_t)4);
    if (rc == 0)
      rc = fp_future_result(f, INNER_LIMIT_MS, &res);
    if (rc != 0 && rc != FP_EBROKEN)
      note(r, "a task after the crash: %s (%s)", fp_err_name(rc),
           f ? fp_future_error(f) : "");
    fp_future_release(f);
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (rc != 0 || t.tv_sec - t0.tv_sec > INNER_LIMIT_MS / 1000)
      break;
  }
  if (rc != FP_EBROKEN)
    note(r, "the pool still works without descriptors for a new worker: %s",
         fp_err_name(rc));
  else if (strstr(pool_log, "open files") == NULL)
    note(r, "the pool broke, but the reason given is: %s", pool_log);
  REQUIRE(r, setrlimit(RLIMIT_NOFILE, &old) == 0);
  fpt_pool_destroy(p);
  while (nfill > 0)
    close(filler[--nfill]);
  compare_baseline(&b, r);
}

START_TEST(restart_without_descriptors)
{
  fpt_snapshot s;
  fpt_begin(&s);
  report r;
  enum child_end e = in_child(restart_child, NULL, FPT_LIMIT_MS, &r);
  ck_assert_msg(e == CHILD_OK, "%s", r.msg);
  fpt_end(&s);
}
END_TEST

/* --- A signal storm ------------------------------------------------------- */

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
  (void)sig;
  alarms++;
}

static void storm(int on)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on ? on_alarm : SIG_DFL;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: every blocking call sees EINTR */
  struct itimerval it = {{0, on ? 100 : 0}, {0, on ? 100 : 0}};
  if (on)
    ck_assert_int_eq(sigaction(SIGALRM, &sa, NULL), 0);
  ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
  if (!on)
    ck_assert_int_eq(sigaction(SIGALRM, &sa, NULL), 0);
}

/* SIGALRM every 100 us from create to destroy, through 2000 tasks, a map,
 * 16 MiB each way, a deadline kill and a restart: every result arrives, in
 * order, and no call returns -EINTR. */
START_TEST(signal_storm)
{
  enum { N = 2000 };
  fpt_snapshot s;
  fpt_begin(&s);
  alarms = 0;
  storm(1);
  fp_pool *p = fpt_pool(2, 0);
  static fp_future *f[N];
  for (int64_t i = 0; i < N; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", i), 0);
  ck_assert_int_eq(fp_wait(f, N / 2, FP_ALL_COMPLETED, FPT_LIMIT_MS, NULL), 0);
  for (int64_t i = 0; i < N; i++) {
    const msgpack_object *r;
    int rc = fp_future_result(f[i], FPT_LIMIT_MS, &r);
    ck_assert_msg(rc == 0, "task %lld: %s", (long long)i, fp_err_name(rc));
    ck_assert_int_eq(r->via.i64, i * i);
    fp_future_release(f[i]);
  }

  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, N);
  for (uint64_t i = 0; i < N; i++)
    msgpack_pack_uint64(&pk, i);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq", &in, NULL, &m), 0);
  fp_map_item it;
  uint64_t n = 0;
  int rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
    ck_assert_uint_eq(it.index, n);
    ck_assert_int_eq(it.err, 0);
    ck_assert_uint_eq(it.result->via.u64, n * n);
    n++;
  }
  ck_assert_msg(rc == 0, "fp_map_next: %s", fp_err_name(rc));
  ck_assert_uint_eq(n, N);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);

  /* 16 MiB each way: long reads and writes, interrupted again and again. */
  size_t big = (size_t)16 << 20;
  char *buf = malloc(big);
  ck_assert_ptr_nonnull(buf);
  for (size_t i = 0; i < big; i++)
    buf[i] = (char)(i * 13);
  fp_future *e;
  ck_assert_int_eq(fp_submitf(p, "echo", &e, "y", buf, big), 0);
  /* A wait of 300 ms in poll(), then a deadline kill and a restart. */
  static const char no_args[] = {(char)0x90};
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = 300;
  fp_future *d;
  ck_assert_int_eq(fp_submit_ex(p, "forever", no_args, 1, &so, &d), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(d, FPT_LIMIT_MS, &r), FP_EDEADLINE);
  rc = fp_future_result(e, FPT_LIMIT_MS, &r);
  ck_assert_msg(rc == 0, "echo: %s", fp_err_name(rc));
  ck_assert(r->type == MSGPACK_OBJECT_BIN && r->via.bin.size == big &&
            memcmp(r->via.bin.ptr, buf, big) == 0);
  fp_future_release(e);
  fp_future_release(d);
  free(buf);

  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.finished + 1, st.submitted);
  ck_assert_uint_eq(st.deadline_kills, 1);
  ck_assert_uint_eq(st.worker_deaths, 0);
  fpt_pool_destroy(p);
  storm(0);
  printf("signal storm: %d SIGALRMs\n", (int)alarms);
  ck_assert_int_gt(alarms, 100);
  fpt_end(&s);
}
END_TEST

/* --- The fork server killed ----------------------------------------------- */

/* 1 if pid is asleep inside write(2) or writev(2); -1 if /proc cannot say. */
static int asleep_in_write(pid_t pid)
{
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  long nr = strtol(buf, NULL, 10);
  return nr == SYS_write || nr == SYS_writev;
}

static pid_t worker_pid(fp_pool *p, unsigned slot)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats ws[8];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, ws, 8), 0);
  ck_assert_uint_gt(st.workers, slot);
  return ws[slot].pid;
}

/*
 * One worker is in the middle of sending a 64 MiB result (the parent holds
 * part of it), the other is blocked in a task, 30 tasks wait: the fork
 * server is killed.  Every future fails with FP_EBROKEN, the partial result
 * is freed, nothing hangs.
 */
START_TEST(fork_server_killed_mid_64mib_result)
{
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  long heap = fm_heap_in_use();
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(2, 2);
  pid_t fs = fpt_first_child();
  pid_t w[2] = {worker_pid(p, 0), worker_pid(p, 1)};
  enum { Q = 30 };
  fp_future *g, *big, *q[Q];
  ck_assert_int_eq(fp_submitf(p, "gate", &g, "[s]", gate), 0);
  ck_assert_int_eq(fp_submitf(p, "bytes", &big, "[I]", (int64_t)64 << 20), 0);
  /* Queued while the result is still being computed, so that the parent
   * reads none of it yet. */
  for (int i = 0; i < Q; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &q[i], "[I]", (int64_t)i), 0);
  /* Wait until the worker sending the result fills its pipe, and stop it
   * there: the parent then reads part of the result and waits for more. */
  pid_t writer = 0;
  for (int waited = 0; writer == 0; waited++) {
    int a = asleep_in_write(w[0]), b = asleep_in_write(w[1]);
    if (a < 0 || b < 0)
      break; /* no /proc/PID/syscall: kill the fork server wherever it is */
    writer = a == 1 ? w[0] : b == 1 ? w[1] : 0;
    ck_assert_msg(waited < FPT_LIMIT_MS, "the worker never wrote its result");
    if (writer == 0) {
      struct timespec ms = {0, 1000 * 1000};
      nanosleep(&ms, NULL);
    }
  }
  if (writer != 0) {
    ck_assert_int_eq(kill(writer, SIGSTOP), 0);
    ck_assert_int_eq(fp_future_state(big), FP_RUNNING); /* reads a part */
  }
  ck_assert_int_eq(fp_future_state(g), FP_RUNNING);
  ck_assert_int_eq(fp_future_state(q[Q - 1]), FP_PENDING);
  ck_assert_int_eq(kill(fs, SIGKILL), 0);

  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(big, FPT_LIMIT_MS, &r), FP_EBROKEN);
  ck_assert_ptr_nonnull(strstr(fp_future_error(big), "fork server"));
  ck_assert_int_eq(fp_future_result(g, FPT_LIMIT_MS, &r), FP_EBROKEN);
  for (int i = 0; i < Q; i++) {
    ck_assert_int_eq(fp_future_result(q[i], FPT_LIMIT_MS, &r), FP_EBROKEN);
    fp_future_release(q[i]);
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.failed, Q + 2);
  ck_assert_uint_eq(st.queued + st.running, 0);
  fp_future *late = (fp_future *)&s;
  ck_assert_int_eq(fp_submitf(p, "square", &late, "[I]", (int64_t)1),
                   FP_EBROKEN);
  ck_assert_ptr_null(late);
  fp_future_release(big);
  fp_future_release(g);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  /* The workers die with the fork server (PR_SET_PDEATHSIG), a moment
   * later: they are not the pool's to wait for, fpt_end waits. */
  fpt_end(&s);
  ck_assert(fpt_process_gone(w[0]) && fpt_process_gone(w[1]));
  ck_assert_int_eq(fm_heap_in_use(), heap); /* the partial result too */
}
END_TEST

/* Killed with 200 tasks in the parent's queue: all fail, none is lost. */
START_TEST(fork_server_killed_with_a_queue)
{
  enum { Q = 200 };
  fpt_snapshot s;
  char gate[256];
  fpt_begin(&s);
  fpt_gate_make(gate, sizeof gate);
  fp_pool *p = fpt_pool(1, 1);
  pid_t fs = fpt_first_child();
  static fp_future *f[Q + 1];
  ck_assert_int_eq(fp_submitf(p, "gate", &f[0], "[s]", gate), 0);
  for (int i = 1; i <= Q; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  ck_assert_int_eq(fp_future_state(f[0]), FP_RUNNING);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.queued, Q);
  ck_assert_int_eq(kill(fs, SIGKILL), 0);
  size_t done = 0;
  ck_assert_int_eq(fp_wait(f, Q + 1, FP_ALL_COMPLETED, FPT_LIMIT_MS, &done), 0);
  ck_assert_uint_eq(done, Q + 1);
  for (int i = 0; i <= Q; i++) {
    const msgpack_object *r;
    ck_assert_int_eq(fp_future_result(f[i], 0, &r), FP_EBROKEN);
    ck_assert_ptr_nonnull(strstr(fp_future_error(f[i]), "fork server"));
    ck_assert_int_eq(fp_future_cancel(f[i], 0), FP_EBUSY);
    fp_future_release(f[i]);
  }
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.failed, Q + 1);
  ck_assert_uint_eq(st.queued + st.running, 0);
  ck_assert_int_eq(fp_pool_dispatch(p, 0), Q + 1); /* all became done */
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

/* Killed while the pool is idle and nobody calls it: destroy finds out. */
START_TEST(fork_server_killed_while_idle)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  pid_t fs = fpt_first_child();
  pid_t w = worker_pid(p, 1);
  ck_assert_int_eq(kill(fs, SIGKILL), 0);
  /* Its workers die with it: wait for that, not for the pool. */
  for (int waited = 0; !fpt_process_gone(w); waited++) {
    ck_assert_msg(waited < FPT_LIMIT_MS, "worker %d outlived its fork server",
                  (int)w);
    struct timespec ms = {0, 1000 * 1000};
    nanosleep(&ms, NULL);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Killed right after a worker crashed, while its replacement may be on the
 * way: the crash is reported, the rest fail with FP_EBROKEN, no hang. */
START_TEST(fork_server_killed_during_a_restart)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  pid_t fs = fpt_first_child();
  fp_future *crash, *after[4];
  ck_assert_int_eq(fp_submitf(p, "segv", &crash, "[]"), 0);
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(crash, FPT_LIMIT_MS, &r), FP_EWORKER);
  ck_assert_int_eq(kill(fs, SIGKILL), 0);
  for (int i = 0; i < 4; i++) {
    int rc = fp_submitf(p, "square", &after[i], "[I]", (int64_t)i);
    ck_assert(rc == 0 || rc == FP_EBROKEN);
    if (rc != 0)
      continue;
    rc = fp_future_result(after[i], FPT_LIMIT_MS, &r);
    ck_assert_msg(rc == 0 || rc == FP_EBROKEN, "%s", fp_err_name(rc));
    fp_future_release(after[i]);
  }
  fp_future_release(crash);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- Workers that write garbage ------------------------------------------- */

/*
 * Rounds of ten tasks on two workers; the fourth of each is task bad, which
 * breaks the protocol, with arguments [wire id, round] (a new pool numbers
 * its tasks 1, 2, 3, ... in submit order).  It fails with one of the codes
 * allowed; the nine others finish, and so do ten more afterwards.
 */
static void garbage_case(const char *bad, int allow_eworker, int rounds)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 2);
  fp_future *f[10];
  for (int64_t round = 0; round < rounds; round++) {
    for (int64_t i = 0; i < 10; i++) {
      int rc = i == 3 ? fp_submitf(p, bad, &f[i], "[II]", round * 10 + i + 1,
                                   round)
                      : fp_submitf(p, "square", &f[i], "[I]", i);
      ck_assert_int_eq(rc, 0);
    }
    for (int i = 0; i < 10; i++) {
      const msgpack_object *r;
      int rc = fp_future_result(f[i], FPT_LIMIT_MS, &r);
      if (i == 3) {
        ck_assert_msg(rc == FP_EPROTO || (allow_eworker && rc == FP_EWORKER),
                      "%s, round %d: %s (%s)", bad, (int)round,
                      rc == 0 ? "success" : fp_err_name(rc),
                      rc == 0 ? "the garbage became its result"
                              : fp_future_error(f[i]));
        ck_assert_int_eq(fp_future_state(f[i]), FP_FAILED);
      } else {
        ck_assert_msg(rc == 0, "%s, round %d: innocent task %d: %s (%s)", bad,
                      (int)round, i, fp_err_name(rc), fp_future_error(f[i]));
        ck_assert_int_eq(r->via.i64, i * i);
      }
      fp_future_release(f[i]);
    }
  }
  for (int i = 0; i < 10; i++) {
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
    ck_assert_int_eq(fpt_i64(f[i]), i * i);
    fp_future_release(f[i]);
  }
  fpt_pool_destroy(p);
  fpt_end(&s);
}

START_TEST(garbage_body_of_valid_length)
{
  garbage_case("fault_garbage_body", 0, 2);
}
END_TEST

START_TEST(result_with_a_malformed_code)
{
  garbage_case("fault_bad_code", 0, 8);
}
END_TEST

START_TEST(result_for_another_task)
{
  garbage_case("fault_other_id", 0, 2);
}
END_TEST

START_TEST(truncated_body_then_exit)
{
  garbage_case("fault_cut_body", 1, 2);
}
END_TEST

START_TEST(truncated_header_then_exit)
{
  garbage_case("fault_cut_header", 1, 2);
}
END_TEST

int main(void)
{
  for (const fp_task *t = fault_tasks; t->name != NULL; t++)
    if (fp_task_register(t->name, t->fn) != 0)
      return 99;
  Suite *s = suite_create("fault");
  TCase *tc = fpt_tcase(s, "alloc", 600);
  tcase_add_test(tc, alloc_fails_once);
  tc = fpt_tcase(s, "alloc_persistent", 600);
  tcase_add_test(tc, alloc_fails_from_nth_on);
  tc = fpt_tcase(s, "fds", 300);
  tcase_add_test(tc, create_under_low_nofile);
  tcase_add_test(tc, restart_without_descriptors);
  tc = fpt_tcase(s, "signals", 300);
  tcase_add_test(tc, signal_storm);
  tc = fpt_tcase(s, "forkserver", 300);
  tcase_add_test(tc, fork_server_killed_mid_64mib_result);
  tcase_add_test(tc, fork_server_killed_with_a_queue);
  tcase_add_test(tc, fork_server_killed_while_idle);
  tcase_add_test(tc, fork_server_killed_during_a_restart);
  tc = fpt_tcase(s, "garbage", 300);
  tcase_add_test(tc, garbage_body_of_valid_length);
  tcase_add_test(tc, result_with_a_malformed_code);
  tcase_add_test(tc, result_for_another_task);
  tcase_add_test(tc, truncated_body_then_exit);
  tcase_add_test(tc, truncated_header_then_exit);
  fpt_run_suite(s);
}

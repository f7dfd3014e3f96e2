/*
 * forkpool over MPI, with real ranks and real workers: run by
 * tests/check-mpi.sh as `mpirun -n 3 tests/check_mpi`.  Rank 0 runs the
 * Check suite, without forking (a forked child is no MPI process); every
 * other rank is a host for each pool a test makes.  Pools are made
 * collectively: before each, rank 0 broadcasts the test's options (or the
 * end of the suite), and after each every host reports how its
 * fp_mpi_pool_create returned and whether any process it started is left,
 * which rank 0 checks.  A test that fails on rank 0 still kills and
 * destroys its pool in the teardown, so every host returns and every rank
 * exits.  Tests of fp_mpi_pool_create_ex's root_workers check rank 0 the
 * same way: fpt_end finds no process the pool left there.
 */
#include <forkpool-mpi.h>

#include "failmalloc.h"
#include "fpt-mpi.h"
#include "fpt.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What a test's pool is made with, the same on every rank. */
typedef struct mpt_cfg {
  int more;              /* 0: the suite is over, hosts leave */
  unsigned workers;      /* per host */
  int init_fails;        /* every worker's init fails */
  int bad_option;        /* an option every rank refuses: 1 invalid, 2
                            threads */
  int grace_ms;          /* deadline_grace_ms */
  int small_area;        /* hosts: shm_args of HOST_AREA */
  int init_fails_on;     /* this rank's init fails (0: none) */
  int crash_on;          /* on this rank, "sq_here" crashes (0: none) */
  int fs_dies_on;        /* on this rank, "sq_here" kills its fork server
                            (0: none) */
  unsigned restart_limit; /* 0: the default */
  unsigned root_workers; /* fp_mpi_pool_create_ex's; 0 with no bad_mpi:
                            fp_mpi_pool_create */
  int bad_mpi;           /* fp_mpi_options every rank refuses: 1 a wrong
                            size, 2 root_workers 1025 */
  int bad_mpi_rank;      /* the rank that has them; -1: every rank */
  int oom_over_on;       /* on this rank, every allocation of OOM_OVER
                            bytes or more fails while fp_mpi_pool_create
                            runs (0: none) */
  size_t oom_over;       /* instead of OOM_OVER (0: OOM_OVER) */
  int root_area_off;     /* the root: shm_args FP_SHM_OFF */
  int host_area_off;     /* hosts: shm_args FP_SHM_OFF */
  int as_limit_on;       /* on this rank, RLIMIT_AS leaves AS_ROOM bytes
                            of address space while fp_mpi_pool_create
                            runs (0: none) */
} mpt_cfg;

/* With small_area, a host's area holds one BIG_ARG at a time: an argument
 * a host failed to free would make the next one go framed. */
#define HOST_AREA ((size_t)8 << 20)
#define BIG_ARG ((size_t)5 << 20)
/* An argument a host with small_area must take into memory of its own
 * (it does not fit the area), and the least allocation that fails with
 * oom_over_on: more than a DATA message (FPM_CHUNK, 1 MiB, and its
 * header) or anything Open MPI asks for in a test, less than that
 * argument. */
#define OOM_ARG ((size_t)12 << 20)
#define OOM_OVER ((size_t)10 << 20)
/* The least allocation that fails to take a DATA message (a framed
 * payload's pieces, FPM_CHUNK bytes and a header when its pipe was full):
 * half of one, so that it is surely met while a payload of OOM_ARG
 * streams, and more than anything else a relay or Open MPI asks for. */
#define OOM_MSG ((size_t)512 << 10)
/* An argument a host with small_area and as_limit_on can map no room for,
 * not even as address space: more than AS_ROOM, which is enough for
 * anything else the host does in a test. */
#define AS_ARG ((size_t)200 << 20)
#define AS_ROOM ((size_t)150 << 20)

/* What a host says after its fp_mpi_pool_create returned. */
typedef struct mpt_report {
  int rc;                /* what it returned */
  int got_pool;          /* *out was not NULL */
  int left;              /* a process it started was still there */
  int sched_changed;     /* its thread's timer slack or time slice was not
                            what it was before */
  unsigned long failed_allocs; /* allocations failed on purpose (oom_over_on) */
} mpt_report;

static int nranks;
static int my_rank;      /* set before any pool: workers inherit it */
static mpt_cfg host_cfg; /* a host's: its workers, forked later, see it */

/* Each rank's process, and whether it runs on rank 0's machine (its
 * /proc is then ours to read). */
typedef struct mpt_rank {
  pid_t pid;
  char host[64];
} mpt_rank;
static mpt_rank ranks[64];

/* --- Tasks of this suite's own (fpt's are there too) ---------------------- */

static int init_fails(void **state, void *arg, fp_call *call)
{
  (void)state;
  (void)arg;
  return fp_call_fail(call, "InitError", "this host refuses");
}

/* Fails on the rank the test names, on every host before the first. */
static int init_fails_here(void **state, void *arg, fp_call *call)
{
  (void)state;
  (void)arg;
  if (host_cfg.init_fails_on == my_rank)
    return fp_call_fail(call, "InitError", "this host refuses");
  return 0;
}

/* The square of its argument; on the rank the test names, it crashes
 * (SIGSEGV) or kills its own fork server (the worker's parent) instead. */
static int t_sq_here(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t x;
  if (fp_unpack(a, "[I]", &x) != 0)
    return fp_call_fail(c, "TypeError", "sq_here takes [x]");
  if (host_cfg.crash_on == my_rank)
    raise(SIGSEGV);
  if (host_cfg.fs_dies_on == my_rank) {
    kill(getppid(), SIGKILL);
    pause(); /* PR_SET_PDEATHSIG ends it */
  }
  return msgpack_pack_int64(o, x * x);
}

/* Runs until asked to stop, then fails with "Stopped". */
static int t_polls(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  (void)o;
  while (!fp_call_should_stop(c)) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  return fp_call_fail(c, "Stopped", "asked to stop");
}

/*
 * [shared, pid]: whether the argument (a bin) lies in the worker's shared
 * area (a shared mapping of /dev/zero, in /proc/self/maps), and the
 * worker's pid.
 */
static int t_in_area(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  if (a->type != MSGPACK_OBJECT_BIN)
    return fp_call_fail(c, "TypeError", "in_area takes a bin");
  uintptr_t at = (uintptr_t)a->via.bin.ptr;
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int shared = 0;
  while (f != NULL && fgets(line, sizeof line, f) != NULL) {
    unsigned long lo, hi;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && at >= lo &&
        at < hi)
      shared = perms[3] == 's' && strstr(line, "/dev/zero") != NULL;
  }
  if (f != NULL)
    fclose(f);
  return msgpack_pack_array(o, 2) || msgpack_pack_int(o, shared) ||
         msgpack_pack_int64(o, (int64_t)getpid());
}

/* A bin whose first byte says what to do: 's' crash, 'p' pause until
 * killed or asked to stop (then fail with "Stopped"). */
static int t_hold(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)o;
  if (a->type != MSGPACK_OBJECT_BIN || a->via.bin.size == 0)
    return fp_call_fail(c, "TypeError", "hold takes a bin");
  if (a->via.bin.ptr[0] == 's') {
    volatile int *null = NULL;
    *null = 1;
  }
  return t_polls(c, a, o);
}

/* [gate, crash]: waits at the FIFO gate (as fpt's "gate"); then, if this
 * worker is the root's, crash 1 kills it (SIGKILL) and crash 2 its fork
 * server (it dies with it); else returns [rank it was forked on, pid]. */
static int t_where(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  const char *p;
  size_t n;
  int64_t crash;
  char path[256], b;
  if (fp_unpack(a, "[sI]", &p, &n, &crash) != 0 || n >= sizeof path)
    return fp_call_fail(c, "TypeError", "where takes [path, crash]");
  memcpy(path, p, n);
  path[n] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, &b, 1) != 1)
    return fp_call_fail(c, "OSError", "gate %s", path);
  close(fd);
  if (crash == 1 && my_rank == 0)
    raise(SIGKILL);
  if (crash == 2 && my_rank == 0) {
    kill(getppid(), SIGKILL);
    pause(); /* PR_SET_PDEATHSIG ends it */
  }
  return fp_pack(o, "[II]", (int64_t)my_rank, (int64_t)getpid());
}

static fp_pool_options options_of(const mpt_cfg *c)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (c->small_area && rank != 0)
    o.shm_args = HOST_AREA;
  if (c->root_area_off && rank == 0)
    o.shm_args = FP_SHM_OFF;
  if (c->host_area_off && rank != 0)
    o.shm_args = FP_SHM_OFF;
  if (c->as_limit_on && rank == 0)
    o.shm_args = 3 * AS_ARG; /* two at a time, each sent from the area */
  o.tasks = fpt_tasks;
  o.workers = c->workers;
  o.init = c->init_fails ? init_fails : NULL;
  if (c->init_fails_on != 0)
    o.init = init_fails_here;
  if (c->restart_limit != 0)
    o.restart_limit = c->restart_limit;
  o.deadline_grace_ms = c->grace_ms;
  if (c->bad_option == 1)
    o.max_inflight = 100000; /* over 1024: FP_EINVAL everywhere */
  if (c->bad_option == 2)
    o.mode = FP_MODE_THREADS; /* FP_ENOTSUP */
  return o;
}

/* The pool of c on this rank, logging to log (NULL: not): with
 * fp_mpi_pool_create_ex when c has MPI options, fp_mpi_pool_create else. */
static int create_of(const mpt_cfg *c, fp_pool **out, fp_log_fn log)
{
  fp_pool_options o = options_of(c);
  o.log = log;
  if (c->root_workers == 0 && c->bad_mpi == 0)
    return fp_mpi_pool_create(out, &o, MPI_COMM_WORLD, 0);
  fp_mpi_options m = FP_MPI_OPTIONS_INIT;
  m.root_workers = c->root_workers;
  if (c->bad_mpi_rank < 0 || c->bad_mpi_rank == my_rank) {
    if (c->bad_mpi == 1)
      m.size = sizeof m + 1;
    if (c->bad_mpi == 2)
      m.root_workers = 1025;
  }
  return fp_mpi_pool_create_ex(out, &o, &m, MPI_COMM_WORLD, 0);
}

/* --- A thread's timer slack and time slice --------------------------------- */

/* The kernel's struct sched_attr, its first version. */
struct mpt_sched_attr {
  uint32_t size, policy;
  uint64_t flags;
  int32_t nice;
  uint32_t priority;
  uint64_t runtime, deadline, period;
};

/* Thread tid's time slice in ns (0: the calling thread), as Linux 6.12
 * and later report a SCHED_OTHER thread's; 0 where none is reported, -1
 * if it cannot be read. */
static long long slice_of(pid_t tid)
{
  struct mpt_sched_attr a;
  memset(&a, 0, sizeof a);
  if (syscall(SYS_sched_getattr, tid, &a, (unsigned)sizeof a, 0) != 0)
    return -1;
  return (long long)a.runtime;
}

/* The man page's slice of the relays (fp_mpi_pool_create(3), Progress). */
#define RELAY_SLICE_NS 200000LL

/* --- Hosts ------------------------------------------------------------------ */

/* This process's address space now, in bytes. */
static size_t vm_size(void)
{
  FILE *f = fopen("/proc/self/statm", "r");
  size_t pages = 0;
  if (f != NULL) {
    if (fscanf(f, "%zu", &pages) != 1)
      pages = 0;
    fclose(f);
  }
  return pages * (size_t)sysconf(_SC_PAGESIZE);
}

static void host_loop(void)
{
  /* The fork server and the workers stay countable as our descendants. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  for (;;) {
    mpt_cfg c;
    MPI_Bcast(&c, (int)sizeof c, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (!c.more)
      return;
    host_cfg = c;
    fp_pool *p = (fp_pool *)&c; /* must be set to NULL */
    mpt_report r;
    int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    long long slice = slice_of(0);
    if (c.oom_over_on == my_rank)
      /* this process only: not its fork server */
      fm_arm_over(c.oom_over != 0 ? c.oom_over : OOM_OVER);
    struct rlimit as;
    getrlimit(RLIMIT_AS, &as);
    if (c.as_limit_on == my_rank) {
      struct rlimit tight = {vm_size() + AS_ROOM, as.rlim_max};
      setrlimit(RLIMIT_AS, &tight);
    }
    r.rc = create_of(&c, &p, NULL);
    fm_disarm();
    if (c.as_limit_on == my_rank)
      setrlimit(RLIMIT_AS, &as);
    r.failed_allocs = c.oom_over_on == my_rank ? fm_failures() : 0;
    r.got_pool = p != NULL;
    r.left = fpt_mpi_children_left();
    r.sched_changed = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) != slack ||
                      slice_of(0) != slice;
    MPI_Gather(&r, (int)sizeof r, MPI_BYTE, NULL, 0, MPI_BYTE, 0,
               MPI_COMM_WORLD);
  }
}

/* --- Rank 0: the pool a test has, and its end ------------------------------ */

static fp_pool *cur;     /* the test's pool; NULL: none */
static int owed;         /* the hosts' reports are still to be gathered */
static mpt_report reports[64];

/* Gathers every host's report; 0, or 1 if one did not return 0 with no
 * pool and nothing left behind, and its thread's slack and slice as they
 * were. */
static int gather_reports(int expect_rc)
{
  mpt_report mine = {0, 0, 0, 0, 0};
  owed = 0;
  MPI_Gather(&mine, (int)sizeof mine, MPI_BYTE, reports, (int)sizeof mine,
             MPI_BYTE, 0, MPI_COMM_WORLD);
  int bad = 0;
  for (int r = 1; r < nranks; r++)
    bad |= reports[r].rc != expect_rc || reports[r].got_pool ||
           reports[r].left || reports[r].sched_changed;
  return bad;
}

/* What the root's pool logged, its lines one after another. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char logged[8192];

static void log_line(void *arg, int level, const char *msg)
{
  (void)arg;
  (void)level;
  pthread_mutex_lock(&log_lock);
  size_t n = strlen(logged);
  snprintf(logged + n, sizeof logged - n, "%s\n", msg);
  pthread_mutex_unlock(&log_lock);
}

/* Whether a line logged so far has both texts. */
static int log_has(const char *a, const char *b)
{
  pthread_mutex_lock(&log_lock);
  int found = 0;
  for (const char *l = logged; !found && *l != '\0';) {
    const char *end = strchr(l, '\n');
    size_t len = end != NULL ? (size_t)(end - l) : strlen(l);
    char line[1024];
    snprintf(line, sizeof line, "%.*s", (int)len, l);
    found = strstr(line, a) != NULL && strstr(line, b) != NULL;
    l += len + (end != NULL);
  }
  pthread_mutex_unlock(&log_lock);
  return found;
}

static int mpt_create(mpt_cfg c, fp_pool **out)
{
  c.more = 1;
  MPI_Bcast(&c, (int)sizeof c, MPI_BYTE, 0, MPI_COMM_WORLD);
  logged[0] = '\0';
  int rc = create_of(&c, out, log_line);
  owed = 1;
  cur = rc == 0 ? *out : NULL;
  return rc;
}

/* The end of a test's pool: destroyed, and every host reported back. */
static void mpt_destroy(fp_pool *p, int host_rc)
{
  cur = NULL;
  fp_pool_destroy(p);
  int bad = gather_reports(host_rc);
  for (int r = 1; r < nranks; r++)
    ck_assert_msg(!bad,
                  "rank %d: rc %d, pool %d, process left %d, slack or "
                  "slice changed %d",
                  r, reports[r].rc, reports[r].got_pool, reports[r].left,
                  reports[r].sched_changed);
}

static void mpt_teardown(void)
{
  if (cur != NULL) {
    fp_pool_kill(cur);
    fp_pool_destroy(cur);
    cur = NULL;
  }
  if (owed)
    (void)gather_reports(0);
}

static fp_pool *pool_of(unsigned workers)
{
  mpt_cfg c = {.workers = workers};
  fp_pool *p;
  int rc = mpt_create(c, &p);
  ck_assert_msg(rc == 0, "fp_mpi_pool_create: %s", fp_strerror(rc));
  fpt_pool_wait_ready(p); /* create returns with one worker ready */
  return p;
}

static void expect_error(fp_future *f, int err, const char *text)
{
  const msgpack_object *r;
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), err);
  const char *e = fp_future_error(f);
  ck_assert_msg(e != NULL && strstr(e, text) != NULL, "error '%s', not '%s'",
                e ? e : "(none)", text);
  fp_future_release(f);
}

static int64_t square_of(fp_pool *p, int64_t x)
{
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", x), 0);
  int64_t v = fpt_i64(f);
  fp_future_release(f);
  return v;
}

/* --- Tests ------------------------------------------------------------------- */

START_TEST(results_and_errors_cross)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_of(1);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.workers, (unsigned)(nranks - 1));
  ck_assert_uint_eq(st.workers_live, (unsigned)(nranks - 1));

  ck_assert_int_eq(square_of(p, 12), 144);
  fp_future *f;
  const msgpack_object *r;
  ck_assert_int_eq(fp_submitf(p, "echo", &f, "[s{sI}[yn]]", "hello", "k",
                              (int64_t)-5, "\x01\x02", (size_t)2), 0);
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), 0);
  ck_assert_int_eq(r->type, MSGPACK_OBJECT_ARRAY);
  ck_assert_uint_eq(r->via.array.size, 3);
  ck_assert_int_eq(r->via.array.ptr[0].via.str.size, 5);
  ck_assert_int_eq(memcmp(r->via.array.ptr[0].via.str.ptr, "hello", 5), 0);
  ck_assert_int_eq(r->via.array.ptr[1].via.map.ptr[0].val.via.i64, -5);
  ck_assert_int_eq(r->via.array.ptr[2].via.array.ptr[0].via.bin.size, 2);
  fp_future_release(f);

  ck_assert_int_eq(fp_submitf(p, "fail", &f, "[]"), 0);
  expect_error(f, FP_ETASK, "ValueError: bad value 42");
  ck_assert_int_eq(fp_submitf(p, "none", &f, "[]"), 0);
  expect_error(f, FP_ETASK, "ResultError: task 'none' packed 0 results");
  ck_assert_int_eq(fp_submitf(p, "two", &f, "[]"), 0);
  expect_error(f, FP_ETASK, "ResultError: task 'two' packed 2 results");
  ck_assert_int_eq(fp_submitf(p, "badrc", &f, "[]"), 0);
  expect_error(f, FP_ETASK, "TaskError: task 'badrc' returned -7");
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[s]", "x"), 0);
  expect_error(f, FP_ETASK, "TypeError: square takes one integer");
  ck_assert_int_eq(fp_submitf(p, "no-such-task", &f, "[]"), FP_ENOTASK);

  /* Many at once, over both hosts. */
  fp_future *fs[200];
  for (int i = 0; i < 200; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &fs[i], "[I]", (int64_t)i), 0);
  for (int i = 0; i < 200; i++) {
    ck_assert_int_eq(fpt_i64(fs[i]), (int64_t)i * i);
    fp_future_release(fs[i]);
  }
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* A crash of any kind on a host fails its task alone; the pool goes on. */
START_TEST(crashes_fail_one_future_each)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_of(1);
  const char *kinds[] = {"segv", "abort", "exit3", "sigkill"};
  const char *why[] = {"killed by signal 11", "killed by signal 6",
                       "exited with status 3", "killed by signal 9"};
  fp_future *f[4], *ok[8];
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(fp_submitf(p, kinds[i], &f[i], "[]"), 0);
  for (int i = 0; i < 8; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &ok[i], "[I]", (int64_t)i), 0);
  for (int i = 0; i < 4; i++)
    expect_error(f[i], FP_EWORKER, why[i]);
  for (int i = 0; i < 8; i++) {
    ck_assert_int_eq(fpt_i64(ok[i]), (int64_t)i * i);
    fp_future_release(ok[i]);
  }
  ck_assert_int_eq(square_of(p, 9), 81);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.worker_deaths, 4);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* A deadline kills the worker on its host (the kill goes through the
 * bridge), with or without a grace (the stop request too). */
START_TEST(deadlines_reach_the_host)
{
  fpt_snapshot s;
  fpt_begin(&s);
  mpt_cfg c = {.workers = 1, .grace_ms = 0};
  fp_pool *p;
  ck_assert_int_eq(mpt_create(c, &p), 0);
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  so.deadline_ms = 100;
  fp_future *f;
  ck_assert_int_eq(fp_submit_ex(p, "forever", "\x90", 1, &so, &f), 0);
  expect_error(f, FP_EDEADLINE, "deadline of 100 ms");
  ck_assert_int_eq(square_of(p, 3), 9);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.deadline_kills, 1);
  mpt_destroy(p, 0);

  /* With a grace: the task is asked to stop (a signal the host's fork
   * server queues), answers, and its worker lives on. */
  c.grace_ms = FP_GRACE_MAX_MS;
  ck_assert_int_eq(mpt_create(c, &p), 0);
  ck_assert_int_eq(fp_submit_ex(p, "polls", "\x90", 1, &so, &f), 0);
  expect_error(f, FP_EDEADLINE, "Stopped");
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.worker_deaths + st.deadline_kills, 0);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* Runs the pool until f is handed to a worker (up to FPT_LIMIT_MS). */
static void wait_running(fp_pool *p, fp_future *f)
{
  int64_t give_up = fpt_now_ms() + FPT_LIMIT_MS;
  while (fp_future_state(f) != FP_RUNNING) {
    ck_assert_msg(fpt_now_ms() < give_up, "not running after %d ms", FPT_LIMIT_MS);
    (void)fp_pool_dispatch(p, 1);
  }
}

START_TEST(cancel_running_kills_on_the_host)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_of(1);
  fp_future *f;
  /* -1: pauses until killed. */
  ck_assert_int_eq(fp_submit(p, "sq_or_pause", "\xff", 1, &f), 0);
  wait_running(p, f);
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
  expect_error(f, FP_ECANCELLED, "cancel");
  ck_assert_int_eq(square_of(p, 5), 25);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* 64 MiB each way: an argument echoed, and a result made on the host. */
START_TEST(large_payloads_cross)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_of(1);
  size_t n = fpt_scaled((size_t)64 << 20, 1 << 20);
  char *big = malloc(n);
  ck_assert_ptr_nonnull(big);
  for (size_t i = 0; i < n; i++)
    big[i] = (char)(i * 13 + (i >> 20));
  fp_future *f, *g;
  const msgpack_object *r;
  ck_assert_int_eq(fp_submitf(p, "echo", &f, "y", big, n), 0);
  ck_assert_int_eq(fp_submitf(p, "bytes", &g, "[I]", (int64_t)n), 0);
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), 0);
  ck_assert_int_eq(r->type, MSGPACK_OBJECT_BIN);
  ck_assert_uint_eq(r->via.bin.size, n);
  ck_assert(memcmp(r->via.bin.ptr, big, n) == 0);
  fp_future_release(f);
  ck_assert_int_eq(fp_future_result(g, FPT_LIMIT_MS, &r), 0);
  ck_assert_uint_eq(r->via.bin.size, n);
  for (size_t i = 0; i < n; i += 4093)
    ck_assert_int_eq(r->via.bin.ptr[i], (char)(i * 7));
  fp_future_release(g);
  free(big);
  /* The argument went through the shared areas of the root and the host
   * (and was freed once answered); the results too, unless larger than a
   * worker's ring (n and a bin's 5-byte head): then framed.  A live
   * worker's CPU time is not known. */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats w[2];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, w, 2), 0);
  ck_assert_uint_eq(st.shared_args, 1);
  ck_assert_uint_eq(st.shared_results, n + 5 <= ((size_t)64 << 20) ? 2 : 0);
  ck_assert_uint_eq(st.shared_bytes, 0);
  ck_assert_uint_eq(w[0].cpu_user_us + w[0].cpu_sys_us, 0);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* Every host's worker gets a BIG_ARG argument in its area: a few tries
 * until each host answered (the scheduler picks the worker). */
static void each_host_shares(fp_pool *p)
{
  char *arg = calloc(1, BIG_ARG);
  int64_t seen[64];
  int nseen = 0;
  ck_assert_ptr_nonnull(arg);
  for (int tries = 0; nseen < nranks - 1 && tries < 200; tries++) {
    fp_future *f;
    const msgpack_object *r;
    int64_t shared, pid;
    ck_assert_int_eq(fp_submitf(p, "in_area", &f, "y", arg, BIG_ARG), 0);
    ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), 0);
    ck_assert_int_eq(fp_unpack(r, "[II]", &shared, &pid), 0);
    fp_future_release(f);
    ck_assert_msg(shared == 1, "worker %lld: its argument was framed",
                  (long long)pid);
    int known = 0;
    for (int i = 0; i < nseen; i++)
      known |= seen[i] == pid;
    if (!known)
      seen[nseen++] = pid;
  }
  free(arg);
}

/* A task with a large argument, hold mode m, submitted with so. */
static fp_future *hold_big(fp_pool *p, char m, const fp_submit_options *so)
{
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  char *arg = calloc(1, BIG_ARG);
  ck_assert_ptr_nonnull(arg);
  arg[0] = m;
  msgpack_pack_bin(&pk, BIG_ARG);
  msgpack_pack_bin_body(&pk, arg, BIG_ARG);
  free(arg);
  fp_future *f;
  ck_assert_int_eq(fp_submit_ex(p, "hold", sb.data, sb.size, so, &f), 0);
  msgpack_sbuffer_destroy(&sb);
  return f;
}

/*
 * A large argument is in the host's area while its task runs; a crash, a
 * deadline's kill and a cancel of the running task each fail that future
 * alone and free the argument on the host (each host's area holds one
 * such argument: the next ones would go framed otherwise) and on the root.
 */
START_TEST(large_args_freed_after_faults)
{
  fpt_snapshot s;
  fpt_begin(&s);
  mpt_cfg c = {.workers = 1, .small_area = 1};
  fp_pool *p;
  ck_assert_int_eq(mpt_create(c, &p), 0);
  fpt_pool_wait_ready(p);
  each_host_shares(p);

  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  expect_error(hold_big(p, 's', &so), FP_EWORKER, "killed by signal 11");
  each_host_shares(p);

  so.deadline_ms = 200;
  expect_error(hold_big(p, 'p', &so), FP_EDEADLINE, "deadline of 200 ms");
  each_host_shares(p);

  so.deadline_ms = 0;
  fp_future *f = hold_big(p, 'p', &so);
  wait_running(p, f);
  ck_assert_int_eq(fp_future_cancel(f, FP_CANCEL_RUNNING), 0);
  expect_error(f, FP_ECANCELLED, "cancel");
  each_host_shares(p);

  /* A large result comes through both rings. */
  fp_future *g;
  const msgpack_object *r;
  ck_assert_int_eq(fp_submitf(p, "bytes", &g, "[I]", (int64_t)BIG_ARG), 0);
  ck_assert_int_eq(fp_future_result(g, FPT_LIMIT_MS, &r), 0);
  ck_assert_uint_eq(r->via.bin.size, BIG_ARG);
  for (size_t i = 0; i < BIG_ARG; i += 4093)
    ck_assert_int_eq(r->via.bin.ptr[i], (char)(i * 7));
  fp_future_release(g);

  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.shared_bytes, 0);
  ck_assert_uint_eq(st.shared_results, 1);
  ck_assert_uint_eq(st.deadline_kills, 1);
  ck_assert_uint_ge(st.worker_deaths, 1);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* Kill, terminate and shutdown with large arguments and results in
 * flight: every future ends, and no process is left on any rank. */
static void stop_with_payloads(int (*stop)(fp_pool *))
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_of(2);
  unsigned n = 2 * (unsigned)(nranks - 1);
  fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
  fp_future *f[16], *g[8];
  for (unsigned i = 0; i < n; i++)
    f[i] = hold_big(p, 'p', &so);
  for (unsigned i = 0; i < n; i++)
    wait_running(p, f[i]);
  char *arg = calloc(1, BIG_ARG);
  ck_assert_ptr_nonnull(arg);
  for (int i = 0; i < 8; i++)
    if (i % 2)
      ck_assert_int_eq(fp_submitf(p, "echo", &g[i], "y", arg, BIG_ARG), 0);
    else
      ck_assert_int_eq(fp_submitf(p, "bytes", &g[i], "[I]",
                                  (int64_t)BIG_ARG), 0);
  free(arg);
  if (stop != NULL) {
    ck_assert_int_eq(stop(p), 0);
    for (unsigned i = 0; i < n; i++)
      expect_error(f[i], FP_ECANCELLED, "cancelled");
    for (int i = 0; i < 8; i++)
      fp_future_release(g[i]); /* done or cancelled, either way */
  } else {
    /* Shutdown: the pausing tasks are cancelled first, then what was
     * queued finishes. */
    for (unsigned i = 0; i < n; i++) {
      ck_assert_int_eq(fp_future_cancel(f[i], FP_CANCEL_RUNNING), 0);
      expect_error(f[i], FP_ECANCELLED, "cancel");
    }
    ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0);
    for (int i = 0; i < 8; i++) {
      const msgpack_object *r;
      ck_assert_int_eq(fp_future_result(g[i], FPT_LIMIT_MS, &r), 0);
      ck_assert_uint_eq(r->via.bin.size, BIG_ARG);
      fp_future_release(g[i]);
    }
  }
  mpt_destroy(p, 0);
  fpt_end(&s);
}

START_TEST(kill_with_payloads_in_flight)
{
  stop_with_payloads(fp_pool_kill);
}
END_TEST

START_TEST(terminate_with_payloads_in_flight)
{
  stop_with_payloads(fp_pool_terminate);
}
END_TEST

START_TEST(shutdown_with_payloads_in_flight)
{
  stop_with_payloads(NULL);
}
END_TEST

/* With workers on the root, the pool maps no area (theirs is their fork
 * server's view): large payloads are framed to the root's workers and
 * from the root to the hosts, and still come back right from both. */
START_TEST(large_payloads_with_root_workers)
{
  fpt_snapshot s;
  fpt_begin(&s);
  mpt_cfg c = {.workers = 1, .root_workers = 1};
  fp_pool *p;
  ck_assert_int_eq(mpt_create(c, &p), 0);
  char *arg = malloc(BIG_ARG);
  ck_assert_ptr_nonnull(arg);
  for (size_t i = 0; i < BIG_ARG; i++)
    arg[i] = (char)(i * 11);
  fp_future *f[12];
  for (int i = 0; i < 12; i++)
    if (i % 2)
      ck_assert_int_eq(fp_submitf(p, "echo", &f[i], "y", arg, BIG_ARG), 0);
    else
      ck_assert_int_eq(fp_submitf(p, "bytes", &f[i], "[I]",
                                  (int64_t)BIG_ARG), 0);
  for (int i = 0; i < 12; i++) {
    const msgpack_object *r;
    ck_assert_int_eq(fp_future_result(f[i], FPT_LIMIT_MS, &r), 0);
    ck_assert_uint_eq(r->via.bin.size, BIG_ARG);
    for (size_t k = 0; k < BIG_ARG; k += 4093)
      ck_assert_int_eq(r->via.bin.ptr[k], (char)(k * (i % 2 ? 11 : 7)));
    fp_future_release(f[i]);
  }
  free(arg);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.shared_args + st.shared_results, 0);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

struct counter {
  int64_t next, end;
};

static int next_int(void *arg, msgpack_packer *pk)
{
  struct counter *c = arg;
  if (c->next >= c->end)
    return 0;
  return msgpack_pack_int64(pk, c->next++) == 0 ? 1 : -1;
}

/* A lazy input of many items, chunked automatically. */
START_TEST(map_chunks_automatically)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_of(2);
  int64_t n = (int64_t)fpt_scaled(1000000, 1000);
  struct counter c = {0, n};
  fp_map_input in = {NULL, 0, next_int, &c};
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq", &in, NULL, &m), 0);
  fp_map_item it;
  int rc;
  int64_t k = 0;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
    ck_assert_int_eq(it.err, 0);
    ck_assert_uint_eq(it.index, (size_t)k);
    ck_assert_int_eq(it.result->via.i64, k * k);
    k++;
  }
  ck_assert_int_eq(rc, 0);
  ck_assert_int_eq(k, n);
  fpt_map_destroy(m);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.worker_deaths, 0);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* A per-item deadline in a map: the item that hangs fails alone. */
START_TEST(map_item_deadline)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_of(1);
  static const char items[] = {1, 2, 3, -1, 5, 6, 7, 8}; /* -1: pauses */
  char packed[9] = {(char)0x98}; /* a msgpack array of 8 */
  for (int i = 0; i < 8; i++)
    packed[i + 1] = items[i]; /* positive and negative fixints */
  fp_map_input in = {packed, 9, NULL, NULL};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  mo.deadline_ms = 300;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq_or_pause", &in, &mo, &m), 0);
  fp_map_item it;
  int n = 0;
  while (fp_map_next(m, FPT_LIMIT_MS, &it) == 1) {
    if (items[it.index] < 0) {
      ck_assert_int_eq(it.err, FP_EDEADLINE);
    } else {
      ck_assert_int_eq(it.err, 0);
      ck_assert_int_eq(it.result->via.i64, items[it.index] * items[it.index]);
    }
    n++;
  }
  ck_assert_int_eq(n, 8);
  fpt_map_destroy(m);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* fp_pool_fd becomes readable when a result is in. */
START_TEST(pool_fd_works)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_of(1);
  int fd = fp_pool_fd(p);
  ck_assert_int_ge(fd, 0);
  fp_future *f;
  ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)11), 0);
  int done = 0;
  int64_t give_up = fpt_now_ms() + FPT_LIMIT_MS;
  while (!done) {
    ck_assert_msg(fpt_now_ms() < give_up, "no result in %d ms", FPT_LIMIT_MS);
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 100) > 0)
      done = fp_pool_dispatch(p, 0) > 0 || fp_future_state(f) == FP_FINISHED;
  }
  ck_assert_int_eq(fpt_i64(f), 121);
  fp_future_release(f);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* Every worker's init fails: create fails on the root, as on one machine;
 * the hosts return 0 and leave nothing. */
START_TEST(failing_init_fails_create)
{
  fpt_snapshot s;
  fpt_begin(&s);
  mpt_cfg c = {.workers = 1, .init_fails = 1};
  fp_pool *p = (fp_pool *)&c;
  int rc = mpt_create(c, &p);
  ck_assert_int_eq(rc, FP_EBROKEN);
  ck_assert_ptr_null(p);
  ck_assert_ptr_nonnull(strstr(fp_pool_create_error(), "InitError"));
  /* The first host to fail left; the last one's failure broke the pool. */
  ck_assert_msg(log_has("retired", "InitError") &&
                log_has("pool broken: worker initializer failed", "InitError"),
                "log:\n%s", logged);
  ck_assert_int_eq(gather_reports(0), 0);
  fpt_end(&s);
}
END_TEST

static fp_pool_stats stats_of(fp_pool *p)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  return st;
}

/* Runs the pool until a host has left it (up to FPT_LIMIT_MS). */
static void wait_retired(fp_pool *p)
{
  int64_t until = fpt_now_ms() + FPT_LIMIT_MS;
  while (stats_of(p).hosts_retired == 0) {
    ck_assert_msg(fpt_now_ms() < until, "no host was retired");
    ck_assert_int_ge(fp_pool_dispatch(p, 10), 0);
  }
}

/* Rounds of 8 "sq_here" until a host has left: each future resolves,
 * with its square or FP_EWORKER.  Returns how many failed. */
static unsigned rounds_until_retired(fp_pool *p)
{
  int64_t until = fpt_now_ms() + FPT_LIMIT_MS;
  unsigned failed = 0;
  while (stats_of(p).hosts_retired == 0) {
    ck_assert_msg(fpt_now_ms() < until, "no host was retired");
    fp_future *f[8];
    for (int i = 0; i < 8; i++)
      ck_assert_int_eq(fp_submitf(p, "sq_here", &f[i], "[I]", (int64_t)i), 0);
    for (int i = 0; i < 8; i++) {
      const msgpack_object *r;
      int rc = fp_future_result(f[i], FPT_LIMIT_MS, &r);
      if (rc == 0) {
        ck_assert_int_eq(r->via.i64, (int64_t)i * i);
      } else {
        ck_assert_msg(rc == FP_EWORKER, "task %d: %s", i, fp_strerror(rc));
        failed++;
      }
      fp_future_release(f[i]);
    }
  }
  return failed;
}

/* After rank 1 left: n more tasks all run, on rank 2; the stats and the
 * per-slot entries show rank 1's slots (per_host of them) retired. */
static void rest_runs_on_rank2(fp_pool *p, int n, unsigned per_host)
{
  fp_future *f[64];
  for (int i = 0; i < n; i++)
    ck_assert_int_eq(fp_submitf(p, "sq_here", &f[i], "[I]", (int64_t)i), 0);
  for (int i = 0; i < n; i++) {
    ck_assert_int_eq(fpt_i64(f[i]), (int64_t)i * i);
    fp_future_release(f[i]);
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats w[4];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, w, 4), 0);
  ck_assert_uint_eq(st.workers, 2 * per_host);
  ck_assert_uint_eq(st.hosts_retired, 1);
  ck_assert_uint_eq(st.workers_retired, per_host);
  ck_assert_uint_eq(st.queued + st.running, 0);
  for (unsigned k = 0; k < per_host; k++)
    ck_assert_int_eq(w[k].pid, 0); /* rank 1's slots come first */
  ck_assert_uint_le(st.workers_live, per_host);
}

/* Init fails on rank 1 alone: that host leaves at once (a log line says
 * which and why), create returns on rank 2's workers, and every task runs
 * there. */
START_TEST(host_whose_init_fails_leaves)
{
  fpt_snapshot s;
  fpt_begin(&s);
  mpt_cfg c = {.workers = 2, .init_fails_on = 1};
  fp_pool *p;
  int rc = mpt_create(c, &p);
  ck_assert_msg(rc == 0, "fp_mpi_pool_create: %s (%s)", fp_strerror(rc),
                fp_pool_create_error());
  enum { N = 40 };
  fp_future *f[N];
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(fpt_i64(f[i]), (int64_t)i * i);
    fp_future_release(f[i]);
  }
  wait_retired(p);
  rest_runs_on_rank2(p, 8, 2);
  fp_pool_stats st = stats_of(p);
  ck_assert_uint_eq(st.finished, N + 8);
  ck_assert_uint_eq(st.failed, 0);
  ck_assert_msg(log_has("host rank 1 retired", "worker initializer failed: "
                        "InitError: this host refuses"), "log:\n%s", logged);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* Every task crashes its worker on rank 1: past restart_limit deaths in a
 * row with none of rank 1's tasks answered, rank 1 leaves and rank 2,
 * whose answers do not count for rank 1, runs the rest.  The failures are
 * the crashes that made the loop, and at most one more: rank 1's other
 * worker's task, when it crashed too or was killed as its host left. */
START_TEST(host_that_crash_loops_is_retired)
{
  fpt_snapshot s;
  fpt_begin(&s);
  mpt_cfg c = {.workers = 2, .crash_on = 1, .restart_limit = 3};
  fp_pool *p;
  int rc = mpt_create(c, &p);
  ck_assert_msg(rc == 0, "fp_mpi_pool_create: %s", fp_strerror(rc));
  unsigned failed = rounds_until_retired(p);
  ck_assert_uint_ge(failed, 4);
  ck_assert_uint_le(failed, 5);
  rest_runs_on_rank2(p, 40, 2);
  fp_pool_stats st = stats_of(p);
  ck_assert_uint_eq(st.failed, failed);
  ck_assert_uint_eq(st.finished + st.failed, st.submitted);
  ck_assert_uint_ge(st.worker_deaths, 4);
  ck_assert_uint_le(st.worker_deaths, 5);
  ck_assert_msg(log_has("host rank 1 retired", "crash loop: more than 3 "
                        "worker deaths in a row"), "log:\n%s", logged);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* A task on rank 1 kills that host's fork server (its workers die with
 * it): the host tells the root, which retires it; rank 2 runs the rest,
 * and every rank ends with no process left. */
START_TEST(host_whose_fork_server_dies_leaves)
{
  fpt_snapshot s;
  fpt_begin(&s);
  mpt_cfg c = {.workers = 2, .fs_dies_on = 1};
  fp_pool *p;
  int rc = mpt_create(c, &p);
  ck_assert_msg(rc == 0, "fp_mpi_pool_create: %s", fp_strerror(rc));
  unsigned failed = rounds_until_retired(p);
  ck_assert_uint_le(failed, 2); /* the tasks its two workers ran */
  rest_runs_on_rank2(p, 40, 2);
  ck_assert_msg(log_has("host rank 1 retired", "the fork server of host "
                        "rank 1 died"), "log:\n%s", logged);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/*
 * In a pool of one worker per host: submits arguments of len bytes, two at
 * a time, until a host retires.  Each of the two goes to an idle worker,
 * so one to each host, and only one is ever rank 1's.  Each fails as at
 * its worker's death (SIGKILL) or is answered (on rank 2, framed: its area
 * is too small as well).  Returns how many failed; adds the answered to
 * *answered.
 */
static unsigned until_a_host_retires(fp_pool *p, size_t len,
                                     unsigned *answered)
{
  char *arg = calloc(1, len);
  ck_assert_ptr_nonnull(arg);
  unsigned failed = 0;
  int64_t until = fpt_now_ms() + FPT_LIMIT_MS;
  while (stats_of(p).hosts_retired == 0) {
    ck_assert_msg(fpt_now_ms() < until, "no host was retired");
    fp_future *f[2];
    const msgpack_object *r;
    for (int k = 0; k < 2; k++)
      ck_assert_int_eq(fp_submitf(p, "in_area", &f[k], "y", arg, len), 0);
    for (int k = 0; k < 2; k++) {
      int rc = fp_future_result(f[k], FPT_LIMIT_MS, &r);
      if (rc == 0) {
        (*answered)++;
      } else {
        const char *e = fp_future_error(f[k]);
        ck_assert_msg(rc == FP_EWORKER && e != NULL &&
                      strstr(e, "killed by signal 9") != NULL,
                      "rc %s, error '%s'", fp_strerror(rc), e ? e : "(none)");
        failed++;
      }
      fp_future_release(f[k]);
    }
  }
  free(arg);
  return failed;
}

/*
 * Rank 1's relay has no memory for a large argument (OOM_ARG, which does
 * not fit its area, so the relay must allocate it): the host tells the
 * root and reports its workers killed, the task fails as at a worker's
 * death (SIGKILL), the log says why, and rank 2 runs the rest.  Rank 1
 * serves on with no worker until the pool is gone and returns 0, as every
 * host does (fp_mpi_pool_create(3), RETURN VALUES), with no process left.
 * Tasks go two at a time, one to each host, so that only one is ever rank
 * 1's when it goes.
 */
/*
 * The pool of c (one worker per host), whose rank 1 runs short of memory
 * for arguments of len bytes: exactly one future fails as that host
 * retires, the log says why, and rest more tasks run on rank 2.  Returns
 * the pool for the caller's own checks; *answered as until_a_host_retires.
 */
static fp_pool *host_leaves_short_of_memory(mpt_cfg c, size_t len, int rest,
                                            unsigned *answered)
{
  fp_pool *p;
  int rc = mpt_create(c, &p);
  ck_assert_msg(rc == 0, "fp_mpi_pool_create: %s", fp_strerror(rc));
  fpt_pool_wait_ready(p);
  *answered = 0;
  ck_assert_uint_eq(until_a_host_retires(p, len, answered), 1);
  rest_runs_on_rank2(p, rest, 1);
  ck_assert_msg(log_has("host rank 1 retired", "the relay of host rank 1 "
                        "failed: out of memory"), "log:\n%s", logged);
  return p;
}

START_TEST(host_whose_relay_runs_out_of_memory_leaves)
{
  fpt_snapshot s;
  fpt_begin(&s);
  unsigned answered;
  fp_pool *p = host_leaves_short_of_memory(
      (mpt_cfg){.workers = 1, .small_area = 1, .oom_over_on = 1}, OOM_ARG, 40,
      &answered);
  fp_pool_stats st = stats_of(p);
  ck_assert_uint_eq(st.failed, 1);
  ck_assert_uint_eq(st.finished, answered + 40);
  ck_assert_uint_eq(st.worker_deaths, 0); /* the pool's kills */
  mpt_destroy(p, 0);
  /* Its one allocation for the argument, and none else that large. */
  ck_assert_uint_eq(reports[1].failed_allocs, 1);
  for (int r = 2; r < nranks; r++)
    ck_assert_uint_eq(reports[r].failed_allocs, 0);
  fpt_end(&s);
}
END_TEST

/*
 * Rank 1's relay may map no room for a large argument, not even address
 * space to drop it into (RLIMIT_AS): it leaves as at any other shortage
 * of memory, and still takes the payload off the line, so that it sees
 * the root's END: every host returns 0 and the root's destroy returns.
 */
START_TEST(host_without_address_space_leaves)
{
  fpt_snapshot s;
  fpt_begin(&s);
  unsigned answered;
  fp_pool *p = host_leaves_short_of_memory(
      (mpt_cfg){.workers = 1, .small_area = 1, .as_limit_on = 1}, AS_ARG, 10,
      &answered);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/*
 * The bridge has no memory for a host's large result (the root maps no
 * area, so the result would be framed in memory of its own): the pool
 * breaks, as at any other failure of the bridge, and every rank ends; a
 * result dropped would leave its future waiting forever.
 */
/* A pool of c whose root fails every allocation of over bytes or more
 * while a host returns OOM_ARG bytes: the future fails as the pool breaks,
 * with the bridge's reason, and every rank ends. */
static void bridge_breaks_without_memory(mpt_cfg c, size_t over)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p;
  int rc = mpt_create(c, &p);
  ck_assert_msg(rc == 0, "fp_mpi_pool_create: %s", fp_strerror(rc));
  fpt_pool_wait_ready(p);
  fp_future *f;
  const msgpack_object *r;
  ck_assert_int_eq(fp_submitf(p, "bytes", &f, "[I]", (int64_t)OOM_ARG), 0);
  fm_arm_over(over);
  rc = fp_future_result(f, FPT_LIMIT_MS, &r);
  fm_disarm();
  ck_assert_msg(rc == FP_EBROKEN, "rc %s, error '%s'", fp_strerror(rc),
                fp_future_error(f) ? fp_future_error(f) : "(none)");
  ck_assert_ptr_nonnull(fp_future_error(f));
  ck_assert_msg(strstr(fp_future_error(f), "the MPI bridge ran out of memory"),
                "error '%s'", fp_future_error(f));
  ck_assert_uint_ge(fm_failures(), 1);
  fp_future_release(f);
  mpt_destroy(p, 0);
  fpt_end(&s);
}

START_TEST(bridge_out_of_memory_for_a_result_breaks_the_pool)
{
  bridge_breaks_without_memory((mpt_cfg){.workers = 1, .root_area_off = 1},
                               OOM_OVER);
}
END_TEST

/*
 * Rank 1's relay has no memory for a DATA message (a piece of a framed
 * argument: the root maps no area): it leaves, as at any other shortage
 * of memory, and takes such messages off the line all the same, unread,
 * so that it sees the root's END behind them: the root's destroy returns
 * and every host returns 0.  One left first in line held the relay in a
 * loop that tried to take it for ever.
 */
START_TEST(host_out_of_memory_for_a_message_leaves)
{
  fpt_snapshot s;
  fpt_begin(&s);
  unsigned answered;
  fp_pool *p = host_leaves_short_of_memory(
      (mpt_cfg){.workers = 1, .root_area_off = 1, .oom_over_on = 1,
                .oom_over = OOM_MSG},
      OOM_ARG, 10, &answered);
  mpt_destroy(p, 0);
  ck_assert_uint_ge(reports[1].failed_allocs, 1);
  fpt_end(&s);
}
END_TEST

/*
 * The bridge has no memory for a DATA message from a host (a piece of a
 * large result framed: the hosts map no area): the pool breaks, as at any
 * other shortage of the bridge's, and the bridge, stopping, takes such
 * messages off the line all the same, unread, so that it sees each host's
 * END_ACK behind them: the future fails, destroy returns, and every host
 * returns 0.  One left first in line held the bridge in a loop that tried
 * to take it for ever, and the pool never learnt it was broken.
 */
START_TEST(bridge_out_of_memory_for_a_message_breaks_the_pool)
{
  bridge_breaks_without_memory((mpt_cfg){.workers = 1, .host_area_off = 1},
                               OOM_MSG);
}
END_TEST

/* Options a host refuses: every rank returns the same error. */
START_TEST(refused_options_fail_everywhere)
{
  fpt_snapshot s;
  fpt_begin(&s);
  mpt_cfg c = {.workers = 1, .bad_option = 1};
  fp_pool *p;
  ck_assert_int_eq(mpt_create(c, &p), FP_EINVAL);
  ck_assert_ptr_null(p);
  ck_assert_int_eq(gather_reports(FP_EINVAL), 0);
  c.bad_option = 2; /* threads */
  ck_assert_int_eq(mpt_create(c, &p), FP_ENOTSUP);
  ck_assert_int_eq(gather_reports(FP_ENOTSUP), 0);
  /* A communicator of the root alone: no host, refused at once. */
  fp_pool_options o = options_of(&c);
  ck_assert_int_eq(fp_mpi_pool_create(&p, &o, MPI_COMM_SELF, 0), FP_EINVAL);
  ck_assert_ptr_null(p);
  fpt_end(&s);
}
END_TEST

/* Every task pauses on every host (and on the root's own workers, if
 * any); kill (or terminate) reaches them all, and destroy returns with no
 * process left on any rank. */
static void stop_all(int (*stop)(fp_pool *), unsigned root_workers)
{
  fpt_snapshot s;
  fpt_begin(&s);
  mpt_cfg c = {.workers = 2, .root_workers = root_workers};
  fp_pool *p;
  int rc = mpt_create(c, &p);
  ck_assert_msg(rc == 0, "create: %s", fp_strerror(rc));
  fpt_pool_wait_ready(p);
  unsigned n = 2 * (unsigned)(nranks - 1) + root_workers;
  fp_future *f[16];
  ck_assert_uint_le(n, 16);
  /* The root's slots come first (it is rank 0): their workers' pids. */
  fp_worker_stats ws[16];
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, ws, 16), 0);
  ck_assert_uint_eq(st.workers, n);
  for (unsigned i = 0; i < n; i++)
    ck_assert_int_eq(fp_submit(p, "sq_or_pause", "\xff", 1, &f[i]), 0);
  for (unsigned i = 0; i < n; i++)
    wait_running(p, f[i]);
  ck_assert_int_eq(stop(p), 0);
  for (unsigned i = 0; i < n; i++)
    expect_error(f[i], FP_ECANCELLED, "cancelled");
  mpt_destroy(p, 0);
  for (unsigned i = 0; i < root_workers; i++) {
    ck_assert_int_gt(ws[i].pid, 0);
    ck_assert_msg(fpt_process_gone(ws[i].pid), "root worker %d is left",
                  (int)ws[i].pid);
  }
  fpt_end(&s);
}

START_TEST(kill_reaches_every_host)
{
  stop_all(fp_pool_kill, 0);
}
END_TEST

START_TEST(terminate_reaches_every_host)
{
  stop_all(fp_pool_terminate, 0);
}
END_TEST

START_TEST(kill_reaches_root_workers)
{
  stop_all(fp_pool_kill, 2);
}
END_TEST

START_TEST(terminate_reaches_root_workers)
{
  stop_all(fp_pool_terminate, 2);
}
END_TEST

/* Shutdown finishes what was submitted, then the hosts return: before
 * the root's destroy. */
START_TEST(shutdown_finishes_then_hosts_return)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_of(1);
  fp_future *f[50];
  for (int i = 0; i < 50; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0);
  for (int i = 0; i < 50; i++) {
    ck_assert_int_eq(fpt_i64(f[i]), (int64_t)i * i);
    fp_future_release(f[i]);
  }
  fp_pool_status ps = FP_POOL_STATUS_INIT;
  ck_assert_int_eq(fp_pool_status_get(p, &ps), 0);
  ck_assert_int_eq(ps.state, FP_POOL_SHUT_DOWN);
  /* The hosts returned at the shutdown: their reports are in already. */
  cur = NULL;
  ck_assert_int_eq(gather_reports(0), 0);
  fp_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* At MPI_THREAD_MULTIPLE the program may call MPI while the pool works. */
START_TEST(program_calls_mpi_meanwhile)
{
  int level;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE)
    return;
  fp_pool *p = pool_of(1);
  fp_future *f[100];
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  for (int i = 0; i < 100; i++) {
    int one = 1, sum = 0;
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_SELF);
    ck_assert_int_eq(sum, 1);
    ck_assert_int_eq(fpt_i64(f[i]), (int64_t)i * i);
    fp_future_release(f[i]);
  }
  mpt_destroy(p, 0);
}
END_TEST

/*
 * After many quick round trips (the relays then look for each answer
 * without a nap while it is due), a pool left idle stops looking: every
 * rank on this machine uses a small part of a core.  A relay that went on
 * spinning would use all the CPU it gets; the limit is far above the
 * naps' cost and far below a spin's, whatever the machine's load.  The
 * interval starts at the last answer: the spin that may follow it (under
 * 1 ms) and the naps growing back to their longest are part of going idle.
 */
START_TEST(idle_after_round_trips_is_quiet)
{
  fp_pool *p = pool_of(1);
  for (int i = 0; i < 2000; i++)
    ck_assert_int_eq(square_of(p, i), (int64_t)i * i);
  double before[64], after[64];
  for (int r = 0; r < nranks; r++)
    before[r] = strcmp(ranks[r].host, ranks[0].host) == 0
                    ? fpt_cpu_seconds(ranks[r].pid) : -1;
  struct timespec t0, t1, idle = {2, 0};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  nanosleep(&idle, NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  for (int r = 0; r < nranks; r++)
    after[r] = before[r] >= 0 ? fpt_cpu_seconds(ranks[r].pid) : -1;
  double wall = (double)(t1.tv_sec - t0.tv_sec) +
                (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  for (int r = 0; r < nranks; r++)
    if (before[r] >= 0 && after[r] >= 0)
      ck_assert_msg(after[r] - before[r] < 0.25 * wall,
                    "rank %d used %.2f s of CPU in %.2f s idle", r,
                    after[r] - before[r], wall);
  ck_assert_int_eq(square_of(p, 3), 9); /* and it still answers */
  mpt_destroy(p, 0);
}
END_TEST

/*
 * A host whose worker has a task does not look at MPI between the
 * worker's answers more than about once per millisecond or a few times per
 * task: while each worker naps 5 ms per task, two at a time queued, every
 * host rank on this machine uses a small part of a core.  Looking as after
 * any work (a sixty-fourth of the time since it) would be hundreds of looks
 * per task; the limit is far above the naps' cost and far below that.
 */
START_TEST(hosts_quiet_while_workers_work)
{
  fp_pool *p = pool_of(1);
  double before[64], after[64];
  for (int r = 0; r < nranks; r++)
    before[r] = r > 0 && strcmp(ranks[r].host, ranks[0].host) == 0
                    ? fpt_cpu_seconds(ranks[r].pid) : -1;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  enum { N = 80 * 2 };
  fp_future *f[N];
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(fp_submitf(p, "nap", &f[i], "I", (int64_t)5), 0);
  for (int i = 0; i < N; i++) {
    const msgpack_object *r;
    ck_assert_int_eq(fp_future_result(f[i], -1, &r), 0);
    fp_future_release(f[i]);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  for (int r = 0; r < nranks; r++)
    after[r] = before[r] >= 0 ? fpt_cpu_seconds(ranks[r].pid) : -1;
  double wall = (double)(t1.tv_sec - t0.tv_sec) +
                (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  for (int r = 1; r < nranks; r++)
    if (before[r] >= 0 && after[r] >= 0)
      ck_assert_msg(after[r] - before[r] < 0.25 * wall,
                    "host rank %d used %.2f s of CPU in %.2f s", r,
                    after[r] - before[r], wall);
  mpt_destroy(p, 0);
}
END_TEST

/* The root's thread named fp-bridge (fp_mpi_pool_create(3), Threads); 0:
 * none. */
static pid_t bridge_tid(void)
{
  pid_t found = 0;
  DIR *d = opendir("/proc/self/task");
  ck_assert_ptr_nonnull(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    char path[64], name[32] = "";
    pid_t tid = (pid_t)atoi(e->d_name);
    if (tid <= 0)
      continue;
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
      continue;
    if (fgets(name, sizeof name, f) != NULL &&
        strcmp(name, "fp-bridge\n") == 0)
      found = tid;
    fclose(f);
  }
  closedir(d);
  return found;
}

/* The CPU time thread tid of this process has had, in seconds
 * (/proc/.../schedstat: nanoseconds on a CPU). */
static double cpu_of_thread(pid_t tid)
{
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)tid);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  unsigned long long ns = 0;
  ck_assert_int_eq(fscanf(f, "%llu", &ns), 1);
  fclose(f);
  return (double)ns / 1e9;
}

/*
 * fp_mpi_pool_create(3), Progress: while no host worker has a task, the
 * bridge waits a millisecond between looks at MPI (the pool's pipe wakes
 * it for the next task).  The caller computes for 2 ms at a time between
 * round trips: meanwhile the bridge looks once or twice, and uses about 1%
 * of the time; looking as after any work, with waits that grow from a
 * microsecond with the time since, it used 7% on a quiet machine.  A busy
 * machine makes the waits longer, not the CPU time larger; valgrind makes
 * every look take many times longer, so the bound is left out under it.
 */
static void bridge_naps_between_round_trips(fp_pool *p, const char *what)
{
  pid_t tid = bridge_tid();
  ck_assert_int_gt(tid, 0);
  enum { ROUNDS = 100, COMPUTE_MS = 2 };
  double cpu = 0, wall = 0;
  for (int i = 0; i < ROUNDS; i++) {
    fp_future *f;
    ck_assert_int_eq(fp_submitf(p, "square", &f, "[I]", (int64_t)i), 0);
    ck_assert_int_eq(fpt_i64(f), (int64_t)i * i);
    fp_future_release(f);
    double c0 = cpu_of_thread(tid);
    int64_t t0 = fpt_now_ms(), until = t0 + COMPUTE_MS;
    while (fpt_now_ms() < until)
      ; /* the caller's own work: no call into the pool */
    cpu += cpu_of_thread(tid) - c0;
    wall += (double)(fpt_now_ms() - t0) / 1e3;
  }
  if (fpt_cpu_is_meaningful())
    ck_assert_msg(cpu < 0.04 * wall,
                  "%s: the bridge used %.3f s of CPU in %.3f s", what, cpu,
                  wall);
  else
    printf("%s: the bridge's CPU time under valgrind or a sanitizer says "
           "nothing; not bounded\n", what);
}

START_TEST(bridge_naps_while_no_host_worker_has_a_task)
{
  fp_pool *p = pool_of(1);
  bridge_naps_between_round_trips(p, "one worker per host");
  mpt_destroy(p, 0);
}
END_TEST

/*
 * So it does after a host left: the pool's kills of that host's workers,
 * sent once its GONE came, are answered by no one (the host has no fork
 * server to kill them with, and they were reported killed already), and
 * must not keep the bridge looking as if an answer were due.
 */
START_TEST(bridge_naps_after_a_host_left)
{
  mpt_cfg c = {.workers = 2, .fs_dies_on = 1};
  fp_pool *p;
  int rc = mpt_create(c, &p);
  ck_assert_msg(rc == 0, "fp_mpi_pool_create: %s", fp_strerror(rc));
  (void)rounds_until_retired(p);
  rest_runs_on_rank2(p, 40, 2);
  bridge_naps_between_round_trips(p, "after rank 1 left");
  mpt_destroy(p, 0);
}
END_TEST

/*
 * The bridge thread asks for time slices of 200 microseconds, where the
 * kernel reports a thread's slice (Linux 6.12 and later); a host gives the
 * calling thread its own slack and slice back, which every host's report
 * checks (host_loop).
 */
START_TEST(bridge_asks_for_short_slices)
{
  long long mine = slice_of(0);
  if (mine <= 0)
    return; /* no slice reported: nothing to see */
  fp_pool *p = pool_of(1);
  pid_t tid = bridge_tid();
  ck_assert_int_gt(tid, 0);
  ck_assert_int_eq(slice_of(tid), RELAY_SLICE_NS);
  ck_assert_int_eq(slice_of(0), mine); /* the caller's stays its own */
  mpt_destroy(p, 0);
}
END_TEST

/* --- Workers on the root too: fp_mpi_pool_create_ex ---------------------- */

/*
 * Runs one "where" task on each of the pool's n workers at once: each
 * waits at a gate of its own, opened only once its task runs, so no worker
 * can hold two (the test fails at the limit if one does).  The gates are
 * opened in whatever order their tasks start: a task that a retired
 * worker had not started goes back to the queue and may wait behind
 * another's gate, and one whose worker was killed before it opened its
 * gate has failed and opens none.  ran[r] counts those that rank r's workers answered,
 * pid[i] is the i-th task's worker (0 if it failed: then with FP_EWORKER,
 * killed by SIGKILL).  Returns the number that failed.
 */
static void open_gates_as_tasks_start(fp_pool *p, fp_future **f,
                                      char (*gate)[256], unsigned n)
{
  int opened[16] = {0};
  unsigned left = n;
  int64_t give_up = fpt_now_ms() + FPT_LIMIT_MS;
  while (left > 0) {
    for (unsigned i = 0; i < n; i++) {
      if (opened[i])
        continue;
      if (fp_future_state(f[i]) >= FP_FINISHED) {
        opened[i] = 1; /* failed before it ran: its worker was killed */
        left--;
        continue;
      }
      if (!fpt_gate_try(gate[i]))
        continue; /* not started yet */
      opened[i] = 1;
      left--;
    }
    if (left > 0 && fpt_now_ms() >= give_up) {
      char d[2048];
      size_t k = 0;
      fp_pool_stats st = FP_POOL_STATS_INIT;
      fp_worker_stats w[16];
      fp_pool_stats_get(p, &st, w, 16);
      for (unsigned j = 0; j < st.workers && j < 16; j++)
        k += (size_t)snprintf(d + k, sizeof d - k, "worker %u pid %d tasks %llu; ",
                              j, (int)w[j].pid, (unsigned long long)w[j].tasks);
      for (unsigned j = 0; j < n; j++)
        k += (size_t)snprintf(d + k, sizeof d - k, "task %u opened %d state %d; ",
                              j, opened[j], (int)fp_future_state(f[j]));
      ck_abort_msg("%u gate tasks never ran: %s log:\n%s", left, d, logged);
    }
    if (left > 0)
      fp_pool_dispatch(p, 2); /* a requeued task is handed out by a pass */
  }
}

static unsigned run_on_every_worker(fp_pool *p, unsigned n, int crash,
                                    int *ran, int64_t *pid)
{
  char gate[16][256];
  fp_future *f[16];
  ck_assert_uint_le(n, 16);
  for (unsigned i = 0; i < n; i++) {
    fpt_gate_make(gate[i], sizeof gate[i]);
    ck_assert_int_eq(fp_submitf(p, "where", &f[i], "[sI]", gate[i],
                                (int64_t)crash), 0);
  }
  open_gates_as_tasks_start(p, f, gate, n);
  for (int r = 0; r < nranks; r++)
    ran[r] = 0;
  unsigned failed = 0;
  for (unsigned i = 0; i < n; i++) {
    const msgpack_object *r;
    int err = fp_future_result(f[i], FPT_LIMIT_MS, &r);
    pid[i] = 0;
    if (err == 0) {
      int64_t rank, wpid;
      ck_assert_int_eq(fp_unpack(r, "[II]", &rank, &wpid), 0);
      ck_assert(rank >= 0 && rank < nranks);
      ran[rank]++;
      pid[i] = wpid;
      fp_future_release(f[i]);
    } else {
      expect_error(f[i], FP_EWORKER, "killed by signal 9");
      failed++;
    }
    fpt_gate_remove(gate[i]);
  }
  return failed;
}

static fp_pool *pool_with_root(unsigned workers, unsigned root_workers)
{
  mpt_cfg c = {.workers = workers, .root_workers = root_workers};
  fp_pool *p;
  int rc = mpt_create(c, &p);
  ck_assert_msg(rc == 0, "fp_mpi_pool_create_ex: %s", fp_strerror(rc));
  fpt_pool_wait_ready(p);
  return p;
}

/* The root's own workers run tasks beside the hosts', in processes of the
 * root's machine that are not the root, and end with the pool. */
START_TEST(root_workers_run_beside_the_hosts)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_with_root(1, 2);
  unsigned n = (unsigned)(nranks - 1) + 2;
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats ws[16];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, ws, 16), 0);
  ck_assert_uint_eq(st.workers, n);
  ck_assert_uint_eq(st.workers_live, n);

  int ran[64];
  int64_t pid[16];
  ck_assert_uint_eq(run_on_every_worker(p, n, 0, ran, pid), 0);
  ck_assert_int_eq(ran[0], 2);
  for (int r = 1; r < nranks; r++)
    ck_assert_int_eq(ran[r], 1);
  for (unsigned i = 0; i < n; i++) {
    ck_assert_int_ne(pid[i], (int64_t)getpid());
    for (unsigned j = 0; j < i; j++)
      ck_assert_int_ne(pid[i], pid[j]);
  }
  /* Rank 0's slots are the first two: the pids its tasks reported. */
  int64_t root_pid[2];
  int k = 0;
  for (unsigned i = 0; i < 2; i++) {
    int found = 0;
    for (unsigned j = 0; j < n; j++)
      found |= ws[i].pid == (pid_t)pid[j];
    ck_assert_msg(found, "slot %u's pid %d ran no task", i, (int)ws[i].pid);
    root_pid[k++] = ws[i].pid;
  }

  /* Many at once, and large payloads both ways, over every worker. */
  fp_future *fs[200];
  for (int i = 0; i < 200; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &fs[i], "[I]", (int64_t)i), 0);
  for (int i = 0; i < 200; i++) {
    ck_assert_int_eq(fpt_i64(fs[i]), (int64_t)i * i);
    fp_future_release(fs[i]);
  }
  size_t big = fpt_scaled((size_t)16 << 20, 1 << 20);
  for (unsigned i = 0; i < n; i++)
    ck_assert_int_eq(fp_submitf(p, "bytes", &fs[i], "[I]", (int64_t)big), 0);
  for (unsigned i = 0; i < n; i++) {
    const msgpack_object *r;
    ck_assert_int_eq(fp_future_result(fs[i], FPT_LIMIT_MS, &r), 0);
    ck_assert_uint_eq(r->via.bin.size, big);
    fp_future_release(fs[i]);
  }
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.worker_deaths, 0);
  mpt_destroy(p, 0);
  for (int i = 0; i < k; i++)
    ck_assert_msg(fpt_process_gone((pid_t)root_pid[i]),
                  "root worker %d is left", (int)root_pid[i]);
  fpt_end(&s);
}
END_TEST

/* A crash on one of the root's workers fails its task alone, as on a
 * host: the worker is replaced and the pool goes on. */
START_TEST(root_worker_crash_fails_one_future)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_with_root(1, 1);
  unsigned n = (unsigned)(nranks - 1) + 1;
  int ran[64];
  int64_t pid[16];
  ck_assert_uint_eq(run_on_every_worker(p, n, 1, ran, pid), 1);
  ck_assert_int_eq(ran[0], 0);
  for (int r = 1; r < nranks; r++)
    ck_assert_int_eq(ran[r], 1);
  fpt_pool_wait_ready(p);
  /* Its replacement runs the next one. */
  ck_assert_uint_eq(run_on_every_worker(p, n, 0, ran, pid), 0);
  ck_assert_int_eq(ran[0], 1);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.worker_deaths, 1);
  ck_assert_int_eq(square_of(p, 9), 81);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* The root's fork server dies: the root's slots are retired as a host's
 * are (a log line says so), their tasks fail alone, and the hosts run the
 * rest. */
START_TEST(root_fork_server_death_retires_the_root)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_with_root(1, 2);
  unsigned n = (unsigned)(nranks - 1) + 2;
  int ran[64];
  int64_t pid[16];
  /* Both root workers' tasks fail if both had started when the root left;
   * one the second had not started yet runs on a host instead. */
  unsigned failed = run_on_every_worker(p, n, 2, ran, pid);
  ck_assert(failed >= 1 && failed <= 2);
  ck_assert_int_eq(ran[0], 0);
  fp_future *f[40];
  for (int i = 0; i < 40; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  for (int i = 0; i < 40; i++) {
    ck_assert_int_eq(fpt_i64(f[i]), (int64_t)i * i);
    fp_future_release(f[i]);
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_worker_stats w[16];
  ck_assert_int_eq(fp_pool_stats_get(p, &st, w, 16), 0);
  ck_assert_uint_eq(st.hosts_retired, 1);
  ck_assert_uint_eq(st.workers_retired, 2);
  ck_assert_int_eq(w[0].pid, 0); /* the root's slots come first */
  ck_assert_int_eq(w[1].pid, 0);
  ck_assert_msg(log_has("root rank 0 retired", "the fork server of root "
                        "rank 0 died"), "log:\n%s", logged);
  mpt_destroy(p, 0);
  fpt_end(&s);
}
END_TEST

/* Shutdown finishes what was submitted on every worker, the root's too,
 * and leaves no process on any rank. */
START_TEST(shutdown_ends_root_workers)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = pool_with_root(1, 2);
  fp_future *f[50];
  for (int i = 0; i < 50; i++)
    ck_assert_int_eq(fp_submitf(p, "square", &f[i], "[I]", (int64_t)i), 0);
  ck_assert_int_eq(fp_pool_shutdown(p, FP_SHUTDOWN_WAIT), 0);
  for (int i = 0; i < 50; i++) {
    ck_assert_int_eq(fpt_i64(f[i]), (int64_t)i * i);
    fp_future_release(f[i]);
  }
  fp_pool_status ps = FP_POOL_STATUS_INIT;
  ck_assert_int_eq(fp_pool_status_get(p, &ps), 0);
  ck_assert_int_eq(ps.state, FP_POOL_SHUT_DOWN);
  cur = NULL;
  ck_assert_int_eq(gather_reports(0), 0);
  fp_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Bad fp_mpi_options, on every rank or on one: FP_EINVAL on all of them,
 * and create_error says why. */
START_TEST(bad_mpi_options_fail_everywhere)
{
  fpt_snapshot s;
  fpt_begin(&s);
  struct {
    int bad, rank;
    unsigned root_workers, workers;
    const char *why;
  } cases[] = {
      {1, -1, 1, 1, "mpi_opts->size is not sizeof(fp_mpi_options)"},
      {1, 1, 0, 1, "mpi_opts->size is not sizeof(fp_mpi_options) on another rank"},
      {2, 0, 0, 1, "mpi_opts->root_workers is more than 1024"},
      {2, 1, 1, 1, "root_workers is more than 1024 on another rank"},
      /* Each within bounds, too many together: no root worker forked. */
      {0, -1, 1024, 1, "the root's and the hosts' workers add up to"},
  };
  for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mpt_cfg c = {.workers = cases[i].workers, .bad_mpi = cases[i].bad,
                 .bad_mpi_rank = cases[i].rank,
                 .root_workers = cases[i].root_workers};
    fp_pool *p = (fp_pool *)&c;
    ck_assert_int_eq(mpt_create(c, &p), FP_EINVAL);
    ck_assert_ptr_null(p);
    const char *e = fp_pool_create_error();
    ck_assert_msg(e != NULL && strstr(e, cases[i].why) != NULL,
                  "case %u: '%s', not '%s'", i, e ? e : "(null)",
                  cases[i].why);
    ck_assert_int_eq(gather_reports(FP_EINVAL), 0);
  }
  /* Options the hosts refuse, the root's workers too. */
  mpt_cfg c = {.workers = 1, .root_workers = 1, .bad_option = 2};
  fp_pool *p;
  ck_assert_int_eq(mpt_create(c, &p), FP_ENOTSUP);
  ck_assert_int_eq(gather_reports(FP_ENOTSUP), 0);
  /* NULL options: fp_mpi_pool_create's pool. */
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  ck_assert_int_eq(fp_mpi_pool_create_ex(&p, &o, NULL, MPI_COMM_SELF, 0),
                   FP_EINVAL);
  fpt_end(&s);
}
END_TEST

static Suite *mpi_suite(void)
{
  Suite *s = suite_create("mpi");
  TCase *tc = fpt_tcase(s, "mpi", 300);
  tcase_add_checked_fixture(tc, NULL, mpt_teardown);
  tcase_add_test(tc, results_and_errors_cross);
  tcase_add_test(tc, crashes_fail_one_future_each);
  tcase_add_test(tc, deadlines_reach_the_host);
  tcase_add_test(tc, cancel_running_kills_on_the_host);
  tcase_add_test(tc, large_payloads_cross);
  tcase_add_test(tc, large_args_freed_after_faults);
  tcase_add_test(tc, kill_with_payloads_in_flight);
  tcase_add_test(tc, terminate_with_payloads_in_flight);
  tcase_add_test(tc, shutdown_with_payloads_in_flight);
  tcase_add_test(tc, large_payloads_with_root_workers);
  tcase_add_test(tc, map_chunks_automatically);
  tcase_add_test(tc, map_item_deadline);
  tcase_add_test(tc, pool_fd_works);
  tcase_add_test(tc, failing_init_fails_create);
  tcase_add_test(tc, host_whose_init_fails_leaves);
  tcase_add_test(tc, host_that_crash_loops_is_retired);
  tcase_add_test(tc, host_whose_fork_server_dies_leaves);
  tcase_add_test(tc, host_whose_relay_runs_out_of_memory_leaves);
  tcase_add_test(tc, bridge_out_of_memory_for_a_result_breaks_the_pool);
  tcase_add_test(tc, host_without_address_space_leaves);
  tcase_add_test(tc, host_out_of_memory_for_a_message_leaves);
  tcase_add_test(tc, bridge_out_of_memory_for_a_message_breaks_the_pool);
  tcase_add_test(tc, refused_options_fail_everywhere);
  tcase_add_test(tc, kill_reaches_every_host);
  tcase_add_test(tc, terminate_reaches_every_host);
  tcase_add_test(tc, shutdown_finishes_then_hosts_return);
  tcase_add_test(tc, program_calls_mpi_meanwhile);
  tcase_add_test(tc, idle_after_round_trips_is_quiet);
  tcase_add_test(tc, hosts_quiet_while_workers_work);
  tcase_add_test(tc, bridge_asks_for_short_slices);
  tcase_add_test(tc, bridge_naps_while_no_host_worker_has_a_task);
  tcase_add_test(tc, bridge_naps_after_a_host_left);
  tcase_add_test(tc, root_workers_run_beside_the_hosts);
  tcase_add_test(tc, root_worker_crash_fails_one_future);
  tcase_add_test(tc, kill_reaches_root_workers);
  tcase_add_test(tc, terminate_reaches_root_workers);
  tcase_add_test(tc, shutdown_ends_root_workers);
  tcase_add_test(tc, root_fork_server_death_retires_the_root);
  tcase_add_test(tc, bad_mpi_options_fail_everywhere);
  return s;
}

int main(int argc, char **argv)
{
  int level, rank;
  /* A gate's reader may be killed between our open and our write: that
   * write is EPIPE, not a SIGPIPE that ends the root. */
  signal(SIGPIPE, SIG_IGN);
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &level);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  if (nranks < 2 || nranks > 64) {
    if (rank == 0)
      fprintf(stderr, "check_mpi: run it with mpirun -n 3 (2 to 64 ranks)\n");
    MPI_Finalize();
    return 77;
  }
  /* Every connection MPI opens between rank 0 and a host is opened now,
   * so that a test's count of descriptors sees only the pool's. */
  fpt_mpi_connect_all();
  mpt_rank me = {.pid = getpid()};
  (void)gethostname(me.host, sizeof me.host - 1);
  MPI_Gather(&me, (int)sizeof me, MPI_BYTE, ranks, (int)sizeof me, MPI_BYTE,
             0, MPI_COMM_WORLD);
  /* Registered by name on every rank: the hosts run it. */
  my_rank = rank;
  if (fp_task_register("polls", t_polls) != 0 ||
      fp_task_register("sq_here", t_sq_here) != 0 ||
      fp_task_register("where", t_where) != 0 ||
      fp_task_register("in_area", t_in_area) != 0 ||
      fp_task_register("hold", t_hold) != 0)
    MPI_Abort(MPI_COMM_WORLD, 1);
  int failed = 0;
  if (rank != 0) {
    host_loop();
  } else {
    SRunner *sr = srunner_create(mpi_suite());
    srunner_set_fork_status(sr, CK_NOFORK); /* a forked child is no rank */
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    mpt_cfg end = {.more = 0};
    MPI_Bcast(&end, (int)sizeof end, MPI_BYTE, 0, MPI_COMM_WORLD);
  }
  MPI_Bcast(&failed, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return failed ? 1 : 0;
}

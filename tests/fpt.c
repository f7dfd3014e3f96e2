#define _GNU_SOURCE
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#include "fpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

/* --- Tasks (run in workers) --- */

static int t_square(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t x;
  if (fp_unpack(a, "[I]", &x) != 0)
    return fp_call_fail(c, "TypeError", "square takes one integer");
  return msgpack_pack_int64(o, x * x);
}

static int t_echo(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  return msgpack_pack_object(o, *a);
}

static int t_fail(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  (void)o;
  return fp_call_fail(c, "ValueError", "bad value %d", 42);
}

static int t_none(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  return 0;
}

static int t_two(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  msgpack_pack_int(o, 1);
  return msgpack_pack_int(o, 2);
}

static int t_badrc(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  return -7;
}

static int t_pid(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  return msgpack_pack_int64(o, getpid());
}

/* A real SIGSEGV: the sanitizers must not turn it into an exit status. */
__attribute__((no_sanitize("undefined")))
static int t_segv(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  volatile int *null = NULL;
  *null = 1;
  return 0;
}

static int t_abort(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  abort();
}

static int t_exit3(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  _exit(3);
}

static int t_sigkill(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  raise(SIGKILL);
  return 0;
}

/* Writes a frame header claiming 4 GiB-1 to the parent: garbage. */
static int t_corrupt(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  static const char junk[8] = {-1, -1, -1, -1, 1, 2, 3, 4};
  if (write(fpt_result_fd(), junk, sizeof junk) < 0)
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
  int fd = open(path, O_RDONLY);
  if (fd < 0 || read(fd, &b, 1) != 1)
    return fp_call_fail(c, "OSError", "gate %s: %s", path, strerror(errno));
  close(fd);
  return msgpack_pack_int64(o, getpid());
}

/* [n]: returns n bytes of a pattern, as bin. */
static int t_bytes(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t n;
  if (fp_unpack(a, "[I]", &n) != 0 || n < 0)
    return fp_call_fail(c, "TypeError", "bytes takes a size");
  char *buf = malloc((size_t)n + 1);
  if (buf == NULL)
    return fp_call_fail(c, "MemoryError", "no memory");
  for (int64_t i = 0; i < n; i++)
    buf[i] = (char)(i * 7);
  int rc = msgpack_pack_bin_with_body(o, buf, (size_t)n);
  free(buf);
  return rc;
}

/* Loops until killed: for deadlines and cancellation. */
static int t_forever(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  for (volatile unsigned spin = 0;; spin++)
    ;
  return 0;
}

/* Returns what the pool's init left in this worker, as an integer. */
static int t_state(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)a;
  int *st = fp_call_state(c);
  return msgpack_pack_int64(o, st ? *st : -1);
}

/* [path]: segfaults the first time (creating path), succeeds after. */
static int t_crash_once(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  const char *p;
  size_t n;
  char path[256];
  if (fp_unpack(a, "[s]", &p, &n) != 0 || n >= sizeof path)
    return fp_call_fail(c, "TypeError", "crash_once takes a path");
  memcpy(path, p, n);
  path[n] = '\0';
  int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd >= 0) {
    close(fd);
    raise(SIGSEGV);
  }
  return msgpack_pack_int(o, 1);
}

/* [x]: x*x, except that 3 and 7 fail and 5 segfaults when asked to. */
static int t_sq_or_fail(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t x;
  if (fp_unpack(a, "[I]", &x) != 0)
    return fp_call_fail(c, "TypeError", "takes one integer");
  if (x == 3 || x == 7)
    return fp_call_fail(c, "ValueError", "item %lld fails", (long long)x);
  return msgpack_pack_int64(o, x * x);
}

static int t_sq_or_segv(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t x;
  if (fp_unpack(a, "[I]", &x) != 0)
    return fp_call_fail(c, "TypeError", "takes one integer");
  if (x == 5)
    raise(SIGSEGV);
  if (x == 6)
    for (volatile unsigned spin = 0;; spin++)
      ;
  return msgpack_pack_int64(o, x * x);
}

/* x (a bare integer, not an array): x*x; the tiny task of the map tests. */
static int t_sq(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  if (a->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return fp_call_fail(c, "TypeError", "takes an integer");
  return msgpack_pack_uint64(o, a->via.u64 * a->via.u64);
}

static int t_nest(fp_call *c, const msgpack_object *a, msgpack_packer *o);
static int t_sq_or_pause(fp_call *c, const msgpack_object *a,
                         msgpack_packer *o);
static int t_nap(fp_call *c, const msgpack_object *a, msgpack_packer *o);
static int t_exit0(fp_call *c, const msgpack_object *a, msgpack_packer *o);
static int t_fd_leaks(fp_call *c, const msgpack_object *a, msgpack_packer *o);
static int t_stdio(fp_call *c, const msgpack_object *a, msgpack_packer *o);
static int t_trap_term(fp_call *c, const msgpack_object *a, msgpack_packer *o);

const fp_task fpt_tasks[] = {
    {"square", t_square}, {"echo", t_echo},       {"fail", t_fail},
    {"none", t_none},     {"two", t_two},         {"badrc", t_badrc},
    {"pid", t_pid},       {"segv", t_segv},       {"abort", t_abort},
    {"exit3", t_exit3},   {"sigkill", t_sigkill}, {"corrupt", t_corrupt},
    {"gate", t_gate},     {"bytes", t_bytes},     {"forever", t_forever},
    {"state", t_state},   {"crash_once", t_crash_once},
    {"sq_or_fail", t_sq_or_fail}, {"sq_or_segv", t_sq_or_segv},
    {"sq", t_sq},         {"nest", t_nest},
    {"sq_or_pause", t_sq_or_pause}, {"nap", t_nap},
    {"exit0", t_exit0},   {"fd_leaks", t_fd_leaks},
    {"stdio", t_stdio},   {"trap_term", t_trap_term}, {NULL, NULL}};

/* --- Processes and descriptors --- */

int fpt_count_fds(void)
{
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  ck_assert_ptr_nonnull(d);
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the DIR's own */
}

/* A child of this process (the first /proc lists), 0 if it has none, or -1
 * if /proc cannot be read.  No assertion: hosts of check_mpi use it too. */
pid_t fpt_child_pid(void)
{
  DIR *d = opendir("/proc");
  struct dirent *e;
  pid_t me = getpid(), found = 0;
  if (d == NULL)
    return -1;
  while (!found && (e = readdir(d)) != NULL) {
    char path[300], buf[512];
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
      continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    int ppid;
    char st;
    if (rp && sscanf(rp + 2, "%c %d", &st, &ppid) == 2 && ppid == me)
      found = atoi(e->d_name);
  }
  closedir(d);
  return found;
}

static pid_t each_child(void)
{
  pid_t pid = fpt_child_pid();
  ck_assert_msg(pid >= 0, "cannot read /proc");
  return pid;
}

pid_t fpt_first_child(void)
{
  return each_child();
}

int fpt_count_children(void)
{
  return each_child() != 0;
}

/* The fields of /proc/PID/stat after the command's closing parenthesis,
 * from the state on, in buf; NULL if the process is not there. */
static const char *stat_fields(pid_t pid, char *buf, size_t len)
{
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return NULL;
  size_t n = fread(buf, 1, len - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *rp = strrchr(buf, ')');
  return rp != NULL && rp[1] == ' ' ? rp + 2 : NULL;
}

int fpt_process_gone(pid_t pid)
{
  char buf[512];
  const char *st = stat_fields(pid, buf, sizeof buf);
  return st == NULL || st[0] == 'Z' || st[0] == 'X';
}

double fpt_cpu_seconds(pid_t pid)
{
  char buf[1024];
  const char *st = stat_fields(pid, buf, sizeof buf);
  unsigned long ut, sy;
  if (st == NULL ||
      sscanf(st, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
             &ut, &sy) != 2)
    return -1;
  return (double)(ut + sy) / (double)sysconf(_SC_CLK_TCK);
}

static void nap(void)
{
  struct timespec ts = {0, 2 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

void fpt_begin(fpt_snapshot *s)
{
  ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  s->fds = fpt_count_fds();
}

void fpt_end(const fpt_snapshot *s)
{
  /* Descendants that outlive the pool become our children (subreaper):
   * reap them, and wait for none to be left. */
  for (int waited = 0; fpt_count_children(); waited += 2) {
    while (waitpid(-1, NULL, WNOHANG) > 0)
      ;
    ck_assert_msg(waited < FPT_LIMIT_MS, "a child process was left behind");
    nap();
  }
  ck_assert_int_eq(fpt_count_fds(), s->fds);
}

/* --- The fixture: what a test made, so that teardown can undo it --- */

#define FPT_TRACKED 64

typedef struct tracked {
  void *v[FPT_TRACKED];
  unsigned n;
} tracked;

static tracked pools, maps;
static char gates[FPT_TRACKED][256]; /* FIFO paths, not heap: check_fault fails malloc */
static unsigned ngates;

/* No ck_assert on the way that succeeds: Check's mark point allocates, and
 * check_fault fails allocations under these calls. */
/* Tests with threads of their own (check_model's drivers) make and destroy
 * maps at once: the lists are shared. */
static pthread_mutex_t track_mu = PTHREAD_MUTEX_INITIALIZER;

static void track(tracked *t, void *x)
{
  pthread_mutex_lock(&track_mu);
  int full = t->n == FPT_TRACKED;
  if (!full)
    t->v[t->n++] = x;
  pthread_mutex_unlock(&track_mu);
  if (full)
    ck_abort_msg("more than %d pools or maps at once", FPT_TRACKED);
}

static void untrack(tracked *t, const void *x)
{
  pthread_mutex_lock(&track_mu);
  for (unsigned i = t->n; i-- > 0;)
    if (t->v[i] == x) {
      t->v[i] = t->v[--t->n];
      break;
    }
  pthread_mutex_unlock(&track_mu);
}

unsigned fpt_mode(void)
{
  const char *m = getenv("FPT_MODE");
  if (m == NULL || *m == '\0' || strcmp(m, "processes") == 0)
    return FP_MODE_PROCESSES;
  if (strcmp(m, "threads") == 0)
    return FP_MODE_THREADS;
  if (strcmp(m, "inline") == 0)
    return FP_MODE_INLINE;
  fprintf(stderr, "FPT_MODE=%s: not processes, threads or inline\n", m);
  exit(EXIT_FAILURE);
}

int fpt_pool_create_early(fp_pool **out, const fp_pool_options *o)
{
  int rc = fp_pool_create(out, o);
  if (rc == 0)
    track(&pools, *out);
  return rc;
}

int64_t fpt_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on the pool's own events (a READY wakes the dispatcher), not on
 * the clock. */
void fpt_pool_wait_ready(fp_pool *p)
{
  int64_t end = fpt_now_ms() + FPT_LIMIT_MS;
  for (;;) {
    fp_pool_stats st = FP_POOL_STATS_INIT;
    fp_pool_status ps = FP_POOL_STATUS_INIT;
    if (fp_pool_stats_get(p, &st, NULL, 0) != 0 ||
        st.workers_live == st.workers || fp_pool_status_get(p, &ps) != 0 ||
        ps.state != FP_POOL_RUNNING || fpt_now_ms() > end)
      return;
    (void)fp_pool_dispatch(p, 100);
  }
}

int fpt_pool_create_as(fp_pool **out, const fp_pool_options *o)
{
  int rc = fpt_pool_create_early(out, o);
  if (rc == 0)
    fpt_pool_wait_ready(*out);
  return rc;
}

int fpt_pool_create(fp_pool **out, const fp_pool_options *o)
{
  if (o == NULL || o->mode != FP_MODE_PROCESSES ||
      fpt_mode() == FP_MODE_PROCESSES)
    return fpt_pool_create_as(out, o);
  fp_pool_options m = *o;
  m.mode = fpt_mode();
  return fpt_pool_create_as(out, &m);
}

/* Tests left out of this run for its mode, and why (fpt_add_test_in). */
static unsigned nleft_out;
static char left_out[4096];

void fpt_add_test_in(unsigned modes, const char *why, TCase *tc,
                     const TTest *t)
{
  unsigned m = fpt_mode();
  unsigned bit = m == FP_MODE_THREADS  ? FPT_IN_THREADS
                 : m == FP_MODE_INLINE ? FPT_IN_INLINE
                                       : FPT_IN_PROCESSES;
  if (modes & bit) {
    _tcase_add_test(tc, t, 0, 0, 0, 1);
    return;
  }
  size_t n = strlen(left_out);
  snprintf(left_out + n, sizeof left_out - n, "  %s: %s\n", t->name, why);
  nleft_out++;
}

void fpt_pool_destroy(fp_pool *p)
{
  untrack(&pools, p);
  fp_pool_destroy(p);
}

int fpt_map(fp_pool *p, const char *task, const fp_map_input *in,
            const fp_map_options *o, fp_map_iter **out)
{
  int rc = fp_map(p, task, in, o, out);
  if (rc == 0)
    track(&maps, *out);
  return rc;
}

int fpt_map_unordered(fp_pool *p, const char *task, const fp_map_input *in,
                      const fp_map_options *o, fp_map_iter **out)
{
  int rc = fp_map_unordered(p, task, in, o, out);
  if (rc == 0)
    track(&maps, *out);
  return rc;
}

void fpt_map_destroy(fp_map_iter *m)
{
  untrack(&maps, m);
  fp_map_destroy(m);
}

static void fixture_setup(void)
{
  pools.n = maps.n = ngates = 0;
}

/* Runs after every test, passed or failed (Check runs a checked teardown
 * after a failed assertion with CK_FORK=no too).  After a pass nothing is
 * tracked; after a failure the pools are killed first, so that no task the
 * test gated or hung keeps a destroy waiting. */
static void fixture_teardown(void)
{
  for (unsigned i = 0; i < pools.n; i++)
    fp_pool_kill(pools.v[i]);
  while (maps.n > 0)
    fpt_map_destroy(maps.v[maps.n - 1]);
  while (pools.n > 0)
    fpt_pool_destroy(pools.v[pools.n - 1]);
  while (ngates > 0)
    unlink(gates[--ngates]);
  /* Handlers and timers a failed test set up stay with the process. */
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  signal(SIGALRM, SIG_DFL);
  signal(SIGCHLD, SIG_DFL);
  /* What the test forked itself, or what outlived its pools. */
  for (int waited = 0; waited < FPT_LIMIT_MS; waited += 2) {
    pid_t child = fpt_first_child();
    if (child == 0)
      break;
    kill(child, SIGKILL);
    while (waitpid(-1, NULL, WNOHANG) > 0)
      ;
    nap();
  }
}

TCase *fpt_tcase(Suite *s, const char *name, double timeout_s)
{
  TCase *tc = tcase_create(name);
  tcase_set_timeout(tc, timeout_s);
  tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
  suite_add_tcase(s, tc);
  return tc;
}

size_t fpt_scaled(size_t n, size_t min)
{
  const char *v = getenv("FPT_SCALE");
  unsigned long pct = v && *v ? strtoul(v, NULL, 10) : 100;
  size_t m = (size_t)((double)n * (double)pct / 100.0);
  return m < min ? min : m;
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FPT_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FPT_SANITIZED 1
#endif

static int under_valgrind(void)
{
#if defined(HAVE_VALGRIND_VALGRIND_H)
  return RUNNING_ON_VALGRIND;
#else
  const char *pre = getenv("LD_PRELOAD"); /* how valgrind loads itself */
  return pre != NULL && strstr(pre, "vgpreload") != NULL;
#endif
}

int fpt_limit_ms(void)
{
  return under_valgrind() ? 600000 : 60000;
}

int fpt_rss_is_meaningful(void)
{
#if defined(FPT_SANITIZED)
  return 0;
#else
  return !under_valgrind();
#endif
}

int fpt_cpu_is_meaningful(void)
{
  return fpt_rss_is_meaningful(); /* the same tools distort both */
}

fp_pool *fpt_pool(unsigned workers, unsigned max_inflight)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = workers;
  o.max_inflight = max_inflight;
  o.tasks = fpt_tasks;
  int rc = fpt_pool_create(&p, &o);
  ck_assert_msg(rc == 0, "fp_pool_create: %s", fp_strerror(rc));
  return p;
}

void fpt_gate_make(char *path, size_t len)
{
  static int seq;
  snprintf(path, len, "%s/fpt-gate-%d-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
           (int)getpid(), seq++);
  unlink(path);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  if (ngates == FPT_TRACKED || strlen(path) >= sizeof gates[0])
    ck_abort_msg("too many gates");
  strcpy(gates[ngates++], path);
}

int fpt_gate_try(const char *path)
{
  int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ck_assert_int_eq(errno, ENXIO); /* no reader: the task has not run */
    return 0;
  }
  /* EPIPE where SIGPIPE is ignored: the reader was killed after its open;
   * its task has run as far as it will. */
  ssize_t w = write(fd, "x", 1);
  ck_assert_msg(w == 1 || errno == EPIPE, "gate write: %s", strerror(errno));
  close(fd);
  return 1;
}

void fpt_gate_open(const char *path)
{
  /* The task opens the FIFO when it runs: wait for a reader to appear. */
  int64_t give_up = fpt_now_ms() + FPT_LIMIT_MS;
  while (!fpt_gate_try(path)) {
    ck_assert_msg(fpt_now_ms() < give_up, "the gate task never ran");
    nap();
  }
}

void fpt_gate_remove(const char *path)
{
  unlink(path);
  for (unsigned i = 0; i < ngates; i++)
    if (strcmp(gates[i], path) == 0) {
      memmove(gates[i], gates[--ngates], sizeof gates[i]);
      break;
    }
}

int64_t fpt_i64(fp_future *f)
{
  const msgpack_object *r;
  int rc = fp_future_result(f, FPT_LIMIT_MS, &r);
  ck_assert_msg(rc == 0, "result: %s (%s)", fp_strerror(rc),
                fp_future_error(f) ? fp_future_error(f) : "");
  ck_assert(r->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
            r->type == MSGPACK_OBJECT_NEGATIVE_INTEGER);
  return r->via.i64;
}

void fpt_run_suite(Suite *s)
{
  if (nleft_out != 0)
    printf("FPT_MODE=%s: %u tests not run in this mode:\n%s",
           getenv("FPT_MODE"), nleft_out, left_out);
  fflush(stdout);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose names each test */
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  exit(failed ? EXIT_FAILURE : EXIT_SUCCESS);
}

/* [n]: n arrays, each holding the next, the innermost empty. */
static int t_nest(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t n;
  if (fp_unpack(a, "[I]", &n) != 0 || n < 1)
    return fp_call_fail(c, "TypeError", "nest takes a depth");
  for (int64_t i = 1; i < n; i++)
    if (msgpack_pack_array(o, 1) != 0)
      return -1;
  return msgpack_pack_array(o, 0);
}

/* x (a bare integer): x*x; a negative x hangs in pause() until killed. */
static int t_sq_or_pause(fp_call *c, const msgpack_object *a,
                         msgpack_packer *o)
{
  if (a->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    for (;;)
      pause();
  return t_sq(c, a, o);
}

/* ms (a bare integer): sleeps that long, returns ms; a slow map item. */
static int t_nap(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  if (a->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return fp_call_fail(c, "TypeError", "takes an integer");
  struct timespec ts = {(time_t)(a->via.u64 / 1000),
                        (long)(a->via.u64 % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0)
    ;
  return msgpack_pack_uint64(o, a->via.u64);
}

/* --- More tasks (run in workers) --- */

/* Calls fn for each descriptor of this process from 3 up; stops at the
 * first that returns non-zero, and returns it. */
static int each_fd(int (*fn)(int fd))
{
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  int self = dirfd(d), found = 0;
  struct dirent *e;
  while (!found && (e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (e->d_name[0] != '.' && fd >= 3 && fd != self)
      found = fn(fd);
  }
  closedir(d);
  return found;
}

static int is_write_pipe(int fd)
{
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) &&
                 (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY
             ? fd
             : 0;
}

int fpt_result_fd(void)
{
  return each_fd(is_write_pipe);
}

/* exit(0), which flushes whatever stdio buffers the worker has. */
static int t_exit0(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  (void)o;
  exit(0);
}

static int inheritable(int fd)
{
  return (fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0;
}

/* How many of the worker's descriptors from 3 up a program it execs would
 * inherit: 0 or 1 (it stops at the first). */
static int t_fd_leaks(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  return msgpack_pack_int(o, each_fd(inheritable));
}

/* Writes a line to fds 1 and 2; returns a bit for each of 0, 1, 2 that is
 * open. */
static int t_stdio(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  int open_ = 0;
  for (int fd = 0; fd < 3; fd++)
    open_ |= fcntl(fd, F_GETFD) >= 0 ? 1 << fd : 0;
  (void)!write(1, "stdout line\n", 12);
  (void)!write(2, "stderr line\n", 12);
  return msgpack_pack_int(o, open_);
}

static void stuck_on_term(int sig)
{
  (void)sig;
  for (;;)
    pause();
}

/* Leaves the worker with a SIGTERM handler that never returns; answers its
 * pid. */
static int t_trap_term(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  (void)a;
  signal(SIGTERM, stuck_on_term);
  return msgpack_pack_int64(o, getpid());
}

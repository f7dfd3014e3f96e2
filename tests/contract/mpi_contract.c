/* Probes of fp_mpi_pool_create(3)'s promises, one case per run:
 *   mpirun --oversubscribe -n 3 tests/contract/mpi_contract CASE
 * Every rank prints "rank R: ok|MISMATCH ..." and exits 1 on a mismatch.
 * tests/check-mpi.sh (make check) runs every case; the ranks share one
 * machine, whose /proc some cases read. */
#define _GNU_SOURCE
#include <forkpool-mpi.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int rank = -1, bad = 0;
/* fp_mpi_pool_create(3): "a negative error code with *out set to NULL,
 * and fp_pool_create_error(3) says why" (case create_error). */
static int check_error = 0;

#define EXPECT(cond, ...)                                                     \
  do {                                                                        \
    if (!(cond)) {                                                            \
      printf("rank %d: MISMATCH %s:%d: ", rank, __FILE__, __LINE__);          \
      printf(__VA_ARGS__);                                                    \
      printf("\n");                                                           \
      fflush(stdout);                                                         \
      bad = 1;                                                                \
    }                                                                         \
  } while (0)

static int t_sq(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  int64_t x;
  if (fp_unpack(a, "[I]", &x) != 0)
    return fp_call_fail(c, "TypeError", "[I]");
  return fp_pack(o, "I", x * x);
}
static int t_pid(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c, (void)a;
  return fp_pack(o, "I", (int64_t)getpid());
}
static int t_spin(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c, (void)a, (void)o;
  for (;;)
    pause();
  return 0;
}
/* [path]: creates the file at path, then pauses until killed: the root
 * sees that the task runs in its worker. */
static int t_spin_at(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  const char *p;
  size_t n;
  char path[256];
  (void)o;
  if (fp_unpack(a, "[s]", &p, &n) != 0 || n >= sizeof path)
    return fp_call_fail(c, "TypeError", "[path]");
  memcpy(path, p, n);
  path[n] = '\0';
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return fp_call_fail(c, "OSError", "%s", path);
  close(fd);
  for (;;)
    pause();
  return 0;
}
static int t_crash(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c, (void)a, (void)o;
  raise(SIGKILL);
  return 0;
}
static int t_len(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  return fp_pack(o, "I", a->type == MSGPACK_OBJECT_BIN ? (int64_t)a->via.bin.size : -1);
}
static int t_item(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  if (a->via.i64 == 3)
    for (;;)
      pause();
  return fp_pack(o, "I", a->via.i64);
}
/* [pid, CPUs in its affinity mask]. */
static int t_where(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c, (void)a;
  cpu_set_t set;
  int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
  return fp_pack(o, "[II]", (int64_t)getpid(), (int64_t)n);
}
/* Dies on the root's workers (PROBE_ROOT is set in rank 0's environment
 * before create), answers its pid on a host's. */
static int t_crash_root(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c, (void)a;
  if (getenv("PROBE_ROOT") != NULL)
    raise(SIGKILL);
  return fp_pack(o, "I", (int64_t)getpid());
}
/* Pauses on the root's workers; x squared on a host's. */
static int t_item_root(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c;
  if (getenv("PROBE_ROOT") != NULL)
    for (;;)
      pause();
  return fp_pack(o, "I", a->via.i64 * a->via.i64);
}
/* 1 s on the root's workers, then [x] squared; at once on a host's. */
static int t_slow_root(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  if (getenv("PROBE_ROOT") != NULL) {
    struct timespec t = {1, 0};
    while (nanosleep(&t, &t) != 0)
      ;
  }
  int64_t x;
  if (fp_unpack(a, "[I]", &x) != 0)
    return fp_call_fail(c, "TypeError", "[I]");
  return fp_pack(o, "I", x * x);
}
/* [pid, PROBE_ROOT set, PROBE_LATE set]. */
static int t_env(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c, (void)a;
  return fp_pack(o, "[III]", (int64_t)getpid(), (int64_t)(getenv("PROBE_ROOT") != NULL),
                 (int64_t)(getenv("PROBE_LATE") != NULL));
}
static const fp_task tasks[] = {{"sq", t_sq},     {"pid", t_pid},
                                {"env", t_env},
                                {"slow_root", t_slow_root},
                                {"spin", t_spin}, {"spin_at", t_spin_at},
                                {"crash", t_crash},
                                {"len", t_len},   {"item", t_item},
                                {"where", t_where},
                                {"crash_root", t_crash_root},
                                {"item_root", t_item_root},
                                {NULL, NULL}};

/* Forks this process made through glibc's fork() since registered. */
static volatile int forks_seen;
static void count_fork(void)
{
  forks_seen++;
}

/* Log lines of the pool, kept for a case to look at. */
static char logged[8192];
static void keep_log(void *arg, int level, const char *msg)
{
  (void)arg, (void)level;
  size_t n = strlen(logged);
  snprintf(logged + n, sizeof logged - n, "%s\n", msg);
}

/* A fork (clone without CLONE_THREAD) refused with EAGAIN from now on. */
static int refuse_fork_eagain(void)
{
#if defined(__x86_64__)
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
#else
  return -1;
#endif
}

/* This process's children, every thread's: "" when none. */
static void children_of_self(char *out, size_t len)
{
  out[0] = '\0';
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  size_t used = 0;
  while (d != NULL && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char path[300];
    snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
      continue;
    used += fread(out + used, 1, len - 1 - used, f);
    out[used] = '\0';
    fclose(f);
  }
  if (d != NULL)
    closedir(d);
}

static int fd_count(void)
{
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  if (d != NULL)
    closedir(d);
  return n - 1; /* the DIR's own */
}

/* Every rank: no child left, and no descriptor more than before. */
static void expect_nothing_left(int fds_before, const char *what)
{
  char kids[512];
  children_of_self(kids, sizeof kids);
  EXPECT(strspn(kids, " \n") == strlen(kids), "%s: children left: %s", what, kids);
  int zombies = waitpid(-1, NULL, WNOHANG);
  EXPECT(zombies <= 0, "%s: a zombie child %d left", what, zombies);
  EXPECT(fd_count() <= fds_before, "%s: %d descriptors, %d before", what,
         fd_count(), fds_before);
}

/* Every wait's limit, by the clock: generous, since the machine may be
 * loaded; a case that reaches it has failed, whatever its speed. */
#define LIMIT_MS 60000

static int64_t now_ms(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static fp_pool_stats stats_of(fp_pool *p, fp_worker_stats *w, size_t n)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  EXPECT(fp_pool_stats_get(p, &st, w, n) == 0, "fp_pool_stats_get");
  return st;
}

/* Runs the root's pool until every worker is live (up to LIMIT_MS):
 * create returns once one is, and a replacement takes a fork.  The
 * counters of then, the first n entries in w. */
static fp_pool_stats wait_all_live(fp_pool *p, fp_worker_stats *w, size_t n)
{
  int64_t end = now_ms() + LIMIT_MS;
  fp_pool_stats st = stats_of(p, w, n);
  while (st.workers_live < st.workers && now_ms() < end) {
    fp_pool_dispatch(p, 10);
    st = stats_of(p, w, n);
  }
  EXPECT(st.workers_live == st.workers, "%u of %u workers live after %d s",
         st.workers_live, st.workers, LIMIT_MS / 1000);
  return st;
}

/* The root's workers' pids: slots 0..n-1 with root 0, once all are live. */
static void root_worker_pids(fp_pool *p, pid_t *pids, unsigned n)
{
  fp_worker_stats ws[64];
  wait_all_live(p, ws, 64);
  for (unsigned i = 0; i < n; i++)
    pids[i] = ws[i].pid;
}

static int init_fail(void **state, void *arg, fp_call *call)
{
  (void)state, (void)arg;
  return fp_call_fail(call, "InitError", "no");
}

static int init_die(void **state, void *arg, fp_call *call)
{
  (void)state, (void)arg, (void)call;
  raise(SIGKILL);
  return 0;
}

static int t_burn(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c, (void)a;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  volatile uint64_t x = 0;
  do {
    for (int i = 0; i < 100000; i++)
      x += (uint64_t)i;
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 200);
  return fp_pack(o, "I", (int64_t)getpid());
}
static const fp_task burn_tasks[] = {{"burn", t_burn}, {NULL, NULL}};


static int64_t result_i64(fp_future *f, int *err)
{
  const msgpack_object *r;
  *err = fp_future_result(f, LIMIT_MS, &r);
  return *err == 0 ? r->via.i64 : 0;
}

/* --- A host that leaves (fp_mpi_pool_create(3), Failures) --------------- */

/* The worker's rank: Open MPI's environment, which workers inherit. */
static int64_t world_rank(void)
{
  const char *e = getenv("OMPI_COMM_WORLD_RANK");
  return e != NULL ? atoi(e) : -1;
}

/* Pauses for ever on rank 1; on the others, returns its rank. */
static int t_hold1(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c, (void)a;
  if (world_rank() == 1)
    for (;;)
      pause();
  return fp_pack(o, "I", world_rank());
}
static int t_rank(fp_call *c, const msgpack_object *a, msgpack_packer *o)
{
  (void)c, (void)a;
  return fp_pack(o, "I", world_rank());
}
static const fp_task retire_tasks[] = {{"hold1", t_hold1}, {"rank", t_rank},
                                       {NULL, NULL}};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static void log_line(void *arg, int level, const char *msg)
{
  (void)arg;
  pthread_mutex_lock(&log_lock);
  size_t n = strlen(logged);
  snprintf(logged + n, sizeof logged - n, "[%d] %s\n", level, msg);
  pthread_mutex_unlock(&log_lock);
}

/* A process's /proc/PID/stat from its state on (the fields after the
 * command's name), in buf; NULL when it is gone.  All ranks share this
 * machine, so the root reads the hosts' too. */
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
  char *q = strrchr(buf, ')');
  return q != NULL && q[1] == ' ' ? q + 2 : NULL;
}

/* The parent of a process, -1 if it is gone. */
static pid_t parent_of(pid_t pid)
{
  char buf[512];
  const char *st = stat_fields(pid, buf, sizeof buf);
  int pp = -1;
  if (st == NULL || sscanf(st, "%*c %d", &pp) != 1)
    pp = -1;
  return pp;
}

/* A process's CPU time so far, every thread's, in seconds; -1 if gone. */
static double cpu_seconds(pid_t pid)
{
  char buf[1024];
  const char *st = stat_fields(pid, buf, sizeof buf);
  unsigned long ut, sy;
  if (st == NULL ||
      sscanf(st, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &sy) != 2)
    return -1;
  return (double)(ut + sy) / (double)sysconf(_SC_CLK_TCK);
}

/* fp_pool_stats_get(3): "It may be called from any thread": read while a
 * host leaves, the counters stay coherent: hosts_retired only grows, to 1,
 * its 2 slots counted with it, never live, their entries' pids 0. */
static volatile int reader_stop;
static void *stats_reader(void *arg)
{
  fp_pool *p = arg;
  unsigned last = 0;
  while (!reader_stop && !bad) {
    fp_pool_stats st = FP_POOL_STATS_INIT;
    fp_worker_stats w[4];
    EXPECT(fp_pool_stats_get(p, &st, w, 4) == 0, "stats from a thread");
    EXPECT(st.hosts_retired >= last && st.hosts_retired <= 1 &&
               st.workers_retired == 2 * st.hosts_retired &&
               st.workers_live + st.workers_retired <= st.workers,
           "hosts_retired %u (was %u), workers_retired %u, live %u of %u", st.hosts_retired,
           last, st.workers_retired, st.workers_live, st.workers);
    if (st.hosts_retired == 1)
      EXPECT(w[0].pid == 0 && w[1].pid == 0, "retired pids %d %d", (int)w[0].pid,
             (int)w[1].pid);
    last = st.hosts_retired;
  }
  return NULL;
}

/* "its fork server dies ...: the host tells the root, and reports each of
 * its workers killed by SIGKILL"; "the pool kills each worker it still
 * has": the two tasks rank 1's workers ran fail with FP_EWORKER and a text
 * naming the signal, the queue runs on rank 2, the log line, the counters
 * and the entries (pid 0) say it, and those kills are not deaths
 * (worker_deaths: "workers that died unasked").  A program with the older
 * fp_pool_stats gets the fields its size holds and no more. */
static void retire_fs_round(fp_pool *p)
{
  enum { H = 4, Q = 8 };
  fp_future *h[H], *q[Q];
  fp_pool_stats st;
  fp_worker_stats w[4];
  logged[0] = '\0';
  wait_all_live(p, w, 4);
  int64_t end = now_ms() + LIMIT_MS;
  pid_t fs1 = parent_of(w[0].pid); /* rank 1's slots come first */
  EXPECT(w[0].pid > 0 && fs1 > 1, "rank 1's fork server: %d", (int)fs1);
  for (int i = 0; i < H; i++)
    EXPECT(fp_submitf(p, "hold1", &h[i], "[]") == 0, "submit hold1");
  for (int i = 0; i < Q; i++)
    EXPECT(fp_submitf(p, "rank", &q[i], "[]") == 0, "submit rank");
  for (int i = 0; i < H; i++)
    while (fp_future_state(h[i]) == FP_PENDING && now_ms() < end)
      fp_pool_dispatch(p, 5);
  pthread_t reader;
  reader_stop = 0;
  int threaded = pthread_create(&reader, NULL, stats_reader, p) == 0;
  if (fs1 > 1)
    kill(fs1, SIGKILL);
  int failed = 0, err;
  for (int i = 0; i < H; i++) {
    int64_t r = result_i64(h[i], &err);
    const char *e = err != 0 ? fp_future_error(h[i]) : "";
    EXPECT(err == 0 ? r == 2 : err == FP_EWORKER && strstr(e, "signal 9") != NULL,
           "hold1 %d: %s (%s)", i, fp_err_name(err), e);
    failed += err != 0;
    fp_future_release(h[i]);
  }
  EXPECT(failed == 2, "%d tasks failed, want rank 1's 2", failed);
  for (int i = 0; i < Q; i++) {
    EXPECT(result_i64(q[i], &err) == 2 && err == 0, "rank %d: %s", i, fp_err_name(err));
    fp_future_release(q[i]);
  }
  reader_stop = 1;
  if (threaded)
    pthread_join(reader, NULL);
  st = stats_of(p, w, 4);
  EXPECT(st.hosts_retired == 1 && st.workers_retired == 2, "retired %u hosts, %u workers",
         st.hosts_retired, st.workers_retired);
  EXPECT(w[0].pid == 0 && w[1].pid == 0, "retired slots' pids %d %d", (int)w[0].pid,
         (int)w[1].pid);
  EXPECT(st.worker_deaths == 0 && strstr(logged, "[1] ") == NULL,
         "the pool's kills counted as %llu deaths; log:\n%s",
         (unsigned long long)st.worker_deaths, logged);
  EXPECT(strstr(logged, "[0] host rank 1 retired, its 2 workers with it (1 of 2 hosts "
                        "left): the fork server of host rank 1 died\n") != NULL,
         "log:\n%s", logged);
  /* fp_pool_stats_get(3): an older header's struct ends before hosts_retired. */
  fp_pool_stats old;
  memset(&old, 0x5a, sizeof old);
  old.size = offsetof(fp_pool_stats, hosts_retired);
  EXPECT(fp_pool_stats_get(p, &old, NULL, 0) == 0, "older size refused");
  EXPECT(old.workers == 4 && old.hosts_retired == 0x5a5a5a5a &&
             old.workers_retired == 0x5a5a5a5a,
         "older size: workers %u, fields past its size written", old.workers);
}

/* Init dies (SIGKILL) on rank 1 only. */
static int init_die_on_1(void **state, void *arg, fp_call *call)
{
  (void)state, (void)arg, (void)call;
  if (world_rank() == 1)
    raise(SIGKILL);
  return 0;
}

/* "A host leaves when ... one of its workers ... dies before it has
 * reported ready", and the log line's why is "the text a broken pool
 * would give": fp_pool_create(3)'s "worker initializer failed: worker pid
 * was killed by signal n (name) before it was ready". */
static void retire_initdie_root(fp_pool *p)
{
  int64_t end = now_ms() + LIMIT_MS;
  while (stats_of(p, NULL, 0).hosts_retired == 0 && now_ms() < end)
    fp_pool_dispatch(p, 5);
  fp_pool_stats st = stats_of(p, NULL, 0);
  EXPECT(st.hosts_retired == 1 && st.workers_retired == 2, "retired %u hosts, %u workers",
         st.hosts_retired, st.workers_retired);
  pthread_mutex_lock(&log_lock);
  const char *l = strstr(logged, "[0] host rank 1 retired, its 2 workers with it (1 of 2 "
                                 "hosts left): worker initializer failed: worker ");
  const char *tail = l != NULL ? strchr(l, '\n') : NULL;
  const char *want = " was killed by signal 9 (Killed) before it was ready\n";
  EXPECT(tail != NULL && strncmp(tail + 1 - strlen(want), want, strlen(want)) == 0,
         "log:\n%s", logged);
  pthread_mutex_unlock(&log_lock);
  int err;
  fp_future *f;
  EXPECT(fp_submitf(p, "rank", &f, "[]") == 0, "submit");
  EXPECT(result_i64(f, &err) == 2 && err == 0, "rank: %s", fp_err_name(err));
  fp_future_release(f);
}

/* "what each held goes as at a worker's death": a task its worker was
 * being asked to stop (a cancel under a grace) when its host left fails
 * as a kill after that request would fail it, FP_ECANCELLED, not as a
 * plain death. */
static void retire_stopping_root(fp_pool *p)
{
  enum { H = 4 };
  fp_future *h[H];
  fp_worker_stats w[4];
  wait_all_live(p, w, 4);
  int64_t end = now_ms() + LIMIT_MS;
  pid_t fs1 = parent_of(w[0].pid);
  EXPECT(w[0].pid > 0 && fs1 > 1, "rank 1's fork server: %d", (int)fs1);
  for (int i = 0; i < H; i++)
    EXPECT(fp_submitf(p, "hold1", &h[i], "[]") == 0, "submit hold1");
  /* Rank 2's two answer; rank 1's two run on. */
  int done;
  do {
    fp_pool_dispatch(p, 5);
    done = 0;
    for (int i = 0; i < H; i++)
      done += fp_future_state(h[i]) == FP_FINISHED;
  } while (done < 2 && now_ms() < end);
  for (int i = 0; i < H; i++)
    if (fp_future_state(h[i]) == FP_RUNNING)
      EXPECT(fp_future_cancel(h[i], FP_CANCEL_RUNNING) == 0, "cancel");
  fp_pool_dispatch(p, 0);
  if (fs1 > 1)
    kill(fs1, SIGKILL);
  int cancelled = 0, err;
  for (int i = 0; i < H; i++) {
    int64_t r = result_i64(h[i], &err);
    EXPECT(err == 0 ? r == 2 : err == FP_ECANCELLED &&
                                   strcmp(fp_future_error(h[i]), "cancelled while running") == 0,
           "hold1 %d: %s (%s)", i, fp_err_name(err), err ? fp_future_error(h[i]) : "");
    cancelled += err != 0;
    fp_future_release(h[i]);
  }
  EXPECT(cancelled == 2, "%d cancelled, want 2", cancelled);
  while (stats_of(p, NULL, 0).hosts_retired == 0 && now_ms() < end)
    fp_pool_dispatch(p, 5);
  EXPECT(stats_of(p, NULL, 0).hosts_retired == 1, "rank 1 not retired");
}

/* Init on rank 2 fails after 1 s; rank 1's is quick. */
static int init_fails_late_on_2(void **state, void *arg, fp_call *call)
{
  (void)state, (void)arg;
  if (world_rank() != 2)
    return 0;
  struct timespec t = {1, 0};
  nanosleep(&t, NULL);
  return fp_call_fail(call, "InitError", "late");
}

/* "fp_mpi_pool_create returns on the root once one worker is ready,
 * whatever init does on other hosts, and a host whose init fails, before
 * or after, leaves the pool": a map runs while rank 2's init fails after
 * create returned; every item comes back from rank 1, none is lost, and
 * rank 2 leaves with the page's log line. */
static void retire_slowinit_root(fp_pool *p)
{
  enum { K = 500 };
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, K);
  for (int k = 0; k < K; k++) {
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int64(&pk, k);
  }
  fp_map_input in = {sb.data, sb.size, NULL, NULL};
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  mo.chunksize = 1;
  fp_map_iter *m;
  int rc = fp_map(p, "sq", &in, &mo, &m);
  EXPECT(rc == 0, "fp_map: %s", fp_err_name(rc));
  int n = 0;
  if (rc == 0) {
    fp_map_item it;
    while ((rc = fp_map_next(m, LIMIT_MS, &it)) == 1) {
      EXPECT(it.err == 0 && it.result->via.i64 == (int64_t)(it.index * it.index),
             "item %zu: %s", it.index, fp_err_name(it.err));
      n++;
    }
    fp_map_destroy(m);
  }
  msgpack_sbuffer_destroy(&sb);
  EXPECT(rc == 0 && n == K, "map: %s after %d items", fp_err_name(rc), n);
  int64_t end = now_ms() + LIMIT_MS;
  while (stats_of(p, NULL, 0).hosts_retired == 0 && now_ms() < end)
    fp_pool_dispatch(p, 5);
  fp_worker_stats w[4];
  fp_pool_stats st = stats_of(p, w, 4);
  EXPECT(st.hosts_retired == 1 && st.workers_retired == 2 && w[2].pid == 0 && w[3].pid == 0,
         "retired %u hosts, %u workers; pids %d %d", st.hosts_retired, st.workers_retired,
         (int)w[2].pid, (int)w[3].pid);
  EXPECT(st.failed == 0, "%llu failed", (unsigned long long)st.failed);
  EXPECT(strstr(logged, "[0] host rank 2 retired, its 2 workers with it (1 of 2 hosts "
                        "left): worker initializer failed: InitError: late\n") != NULL,
         "log:\n%s", logged);
}

static fp_pool_options base(void)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.tasks = tasks;
  o.workers = 2;
  return o;
}

/* Expect every rank to get want, and *out NULL, with no pool. */
static void expect_all(int rc, fp_pool *p, int want, const char *what)
{
  EXPECT(rc == want, "%s: rc %d (%s), want %d (%s)", what, rc,
         fp_err_name(rc), want, fp_err_name(want));
  EXPECT(p == NULL, "%s: *out not NULL", what);
  if (check_error && rc != 0 && rank == 0)
    EXPECT(fp_pool_create_error() != NULL,
           "%s: fp_pool_create_error() is NULL after a failure", what);
  if (p != NULL)
    fp_pool_destroy(p);
}


int main(int argc, char **argv)
{
  const char *c = argc > 1 ? argv[1] : "basic";
  fp_pool *p = (fp_pool *)&bad; /* not NULL: checks the call sets it */
  fp_pool_options o = base();
  int rc;

  if (strcmp(c, "noinit") == 0) {
    check_error = 1;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "before MPI_Init");
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Finalize();
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "after MPI_Finalize");
    printf("rank %d: %s %s\n", rank, c, bad ? "FAILED" : "ok");
    return bad;
  }

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int size;
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  if (strcmp(c, "retire_fs") == 0) {
    /* Several pools: which of a dead worker's pipe and its host's report
     * the root reads first varies from run to run. */
    o.tasks = retire_tasks;
    o.log = log_line;
    for (int round = 0; round < 4 && !bad; round++) {
      p = NULL;
      rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
      EXPECT(rc == 0 && (rank == 0) == (p != NULL), "create: %s", fp_err_name(rc));
      if (rank == 0 && p != NULL) {
        retire_fs_round(p);
        fp_pool_destroy(p);
      }
      MPI_Bcast(&bad, 1, MPI_INT, 0, MPI_COMM_WORLD);
    }
  } else if (strcmp(c, "retire_initdie") == 0 || strcmp(c, "retire_stopping") == 0) {
    int initdie = c[7] == 'i';
    o.tasks = retire_tasks;
    o.log = log_line;
    if (initdie)
      o.init = init_die_on_1;
    else
      o.deadline_grace_ms = 600000; /* a cancel asks; nothing kills */
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0 && (rank == 0) == (p != NULL), "create: %s", fp_err_name(rc));
    if (rank == 0 && p != NULL) {
      if (initdie)
        retire_initdie_root(p);
      else
        retire_stopping_root(p);
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "retire_slowinit") == 0) {
    o.log = log_line;
    o.init = init_fails_late_on_2;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0 && (rank == 0) == (p != NULL), "create: %s", fp_err_name(rc));
    if (rank == 0 && p != NULL) {
      retire_slowinit_root(p);
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "create_error") == 0) {
    check_error = 1;
    fp_pool *lp;
    fp_pool_options lo = FP_POOL_OPTIONS_INIT;
    lo.workers = 1;
    if (fp_pool_create(&lp, &lo) == 0)
      fp_pool_destroy(lp);
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, -1);
    expect_all(rc, p, FP_EINVAL, "root -1");
    fp_pool_options b = base();
    b.workers = 1025; /* refused by the hosts */
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "workers 1025");
  } else if (strcmp(c, "initdie") == 0) {
    /* "[FP_EBROKEN] On the root: ... a worker died before it was ready ...
     * The hosts return 0." */
    o.init = init_die;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    expect_all(rc, p, rank == 0 ? FP_EBROKEN : 0, "init dies");
    if (rank == 0) {
      const char *e = fp_pool_create_error();
      EXPECT(e != NULL && strstr(e, "before it was ready") != NULL, "create_error: %s",
             e ? e : "(null)");
    }
  } else if (strcmp(c, "cpu") == 0) {
    /* "a live worker's CPU time is not known until it exits: the CPU
     * counters count workers that have exited"; a pid is the host's. */
    o.tasks = burn_tasks;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "create: %s", fp_err_name(rc));
    if (rank == 0 && rc == 0) {
      fp_future *f;
      int err;
      EXPECT(fp_submitf(p, "burn", &f, "[]") == 0, "submit");
      int64_t pid = result_i64(f, &err);
      EXPECT(err == 0, "burn: %s", fp_err_name(err));
      fp_future_release(f);
      fp_pool_stats st = FP_POOL_STATS_INIT;
      fp_worker_stats ws[8];
      fp_pool_stats_get(p, &st, ws, 8);
      EXPECT(st.cpu_user_us == 0 && st.cpu_sys_us == 0,
             "no worker exited, yet cpu_user_us %llu cpu_sys_us %llu",
             (unsigned long long)st.cpu_user_us, (unsigned long long)st.cpu_sys_us);
      int found = 0;
      for (unsigned i = 0; i < st.workers && i < 8; i++)
        found |= ws[i].pid == (pid_t)pid;
      EXPECT(found, "the task's pid %lld is no worker's pid in the counters", (long long)pid);
      fp_pool_destroy(p);
    } else if (rc == 0 && p != NULL) {
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "idle") == 0) {
    /* "An idle pool so uses a small fraction of a core on each rank":
     * once every worker is live, the CPU time of each rank over 3 s of
     * the idle pool, read by the root from /proc as the hosts wait in
     * fp_mpi_pool_create (printed; a rank above 25% of a core is a
     * mismatch).  The 3 s are the interval measured, not a wait. */
    int me = (int)getpid(), *pids = calloc((size_t)size, sizeof *pids);
    double *cpu0 = calloc((size_t)size, sizeof *cpu0);
    if (pids == NULL || cpu0 == NULL)
      MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Gather(&me, 1, MPI_INT, pids, 1, MPI_INT, 0, MPI_COMM_WORLD);
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "create: %s", fp_err_name(rc));
    if (rank == 0 && rc == 0) {
      wait_all_live(p, NULL, 0);
      struct timespec t0, t1, idle = {3, 0};
      for (int r = 0; r < size; r++)
        cpu0[r] = cpu_seconds(pids[r]);
      clock_gettime(CLOCK_MONOTONIC, &t0);
      while (nanosleep(&idle, &idle) != 0)
        ;
      clock_gettime(CLOCK_MONOTONIC, &t1);
      double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
      for (int r = 0; r < size; r++) {
        double cpu = cpu_seconds(pids[r]) - cpu0[r];
        EXPECT(cpu0[r] >= 0 && cpu >= 0, "rank %d (pid %d): no /proc entry", r, pids[r]);
        printf("rank %d: idle pool: %.2f s CPU over %.3f s (%.1f%% of a core)\n", r, cpu,
               wall, 100 * cpu / wall);
        EXPECT(cpu / wall < 0.25, "idle rank %d uses %.0f%% of a core", r, 100 * cpu / wall);
      }
      fp_pool_destroy(p);
    }
    free(pids);
    free(cpu0);
  } else if (strcmp(c, "nullhost") == 0 || strcmp(c, "nullroot") == 0) {
    /* "[FP_EINVAL] out is NULL ... (on every rank)": out NULL on the hosts
     * only (nullhost) or on the root only (nullroot).  Every rank should
     * return; today the others wait in the collective for ever (run under
     * timeout). */
    int null_here = strcmp(c, "nullhost") == 0 ? rank != 0 : rank == 0;
    rc = fp_mpi_pool_create(null_here ? NULL : &p, &o, MPI_COMM_WORLD, 0);
    printf("rank %d: returned %s\n", rank, fp_err_name(rc));
    fflush(stdout);
    EXPECT(rc == FP_EINVAL, "out NULL on %s: %s", c + 4, fp_err_name(rc));
    if (rc == 0 && p != NULL)
      fp_pool_destroy(p);
  } else if (strcmp(c, "rootopts") == 0) {
    /* Options valid on the hosts, refused on the root only: "an option is
     * invalid (on every rank)", "FP_ENOTSUP ... on every rank, whether or
     * not the root has workers", shm_args "a value one refuses is
     * FP_EINVAL on every rank"; and no host's fork server is left. */
    static const struct { const char *what; int want; } rcase[] = {
        {"max_message 5", FP_EINVAL}, {"shm_args 5", FP_EINVAL},
        {"mode threads", FP_ENOTSUP}, {"mode inline", FP_ENOTSUP},
        {"size 3", FP_EINVAL}};
    check_error = 1;
    /* Over TCP, Open MPI opens its sockets at the first messages between
     * two ranks: the same calls once, refused everywhere, before the
     * descriptors are counted. */
    fp_pool_options w = base();
    w.max_message = 5;
    rc = fp_mpi_pool_create(&p, &w, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "max_message 5 everywhere");
    for (size_t i = 0; i < sizeof rcase / sizeof *rcase; i++) {
      fp_pool_options b = base();
      if (rank == 0) {
        if (i == 0)
          b.max_message = 5;
        else if (i == 1)
          b.shm_args = 5;
        else if (i == 2 || i == 3)
          b.mode = i == 2 ? FP_MODE_THREADS : FP_MODE_INLINE;
        else
          b.size = 3;
      }
      int fds0 = fd_count();
      p = (fp_pool *)&bad;
      rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
      expect_all(rc, p, rcase[i].want, rcase[i].what);
      if (rank == 0) {
        const char *e = fp_pool_create_error();
        EXPECT(e != NULL && strstr(e, "the root's options") != NULL,
               "%s: create_error: %s", rcase[i].what, e ? e : "(null)");
      }
      MPI_Barrier(MPI_COMM_WORLD);
      expect_nothing_left(fds0, rcase[i].what);
    }
  } else if (strcmp(c, "onerank") == 0) {
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    expect_all(rc, p, size < 2 ? FP_EINVAL : 0, "MPI_COMM_WORLD");
    if (rc == 0 && p != NULL)
      fp_pool_destroy(p);
  } else if (strcmp(c, "bad") == 0) {
    /* A successful local create first, so that a stale NULL shows. */
    fp_pool *lp;
    fp_pool_options lo = FP_POOL_OPTIONS_INIT;
    lo.workers = 1;
    if (fp_pool_create(&lp, &lo) == 0)
      fp_pool_destroy(lp);
    rc = fp_mpi_pool_create(NULL, &o, MPI_COMM_WORLD, 0);
    expect_all(rc, NULL, FP_EINVAL, "out NULL");
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_NULL, 0);
    expect_all(rc, p, FP_EINVAL, "MPI_COMM_NULL");
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_SELF, 0);
    expect_all(rc, p, FP_EINVAL, "MPI_COMM_SELF (one rank)");
    /* An intercommunicator, rank 0 against the others: FP_EINVAL on
     * every rank of both groups, not a wait. */
    MPI_Comm local, inter;
    MPI_Comm_split(MPI_COMM_WORLD, rank == 0, rank, &local);
    MPI_Intercomm_create(local, 0, MPI_COMM_WORLD, rank == 0 ? 1 : 0, 7,
                         &inter);
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &o, inter, 0);
    expect_all(rc, p, FP_EINVAL, "an intercommunicator");
    MPI_Comm_free(&inter);
    MPI_Comm_free(&local);
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, -1);
    expect_all(rc, p, FP_EINVAL, "root -1");
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, size);
    expect_all(rc, p, FP_EINVAL, "root == size");
    /* Options, on every rank. */
    fp_pool_options b = base();
    b.mode = FP_MODE_THREADS;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_ENOTSUP, "mode threads");
    b.mode = FP_MODE_INLINE;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_ENOTSUP, "mode inline");
    b = base();
    b.workers = 1025;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "workers 1025");
    b = base();
    b.max_message = 5;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "max_message 5");
    b = base();
    b.size = 3;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "size 3");
    b = base();
    b.deadline_grace_ms = -5;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "deadline_grace_ms -5");
    b = base();
    b.pin_workers = 2;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "pin_workers 2");
    /* A task table with a NULL function: an invalid option. */
    static const fp_task badt[] = {{"x", NULL}, {NULL, NULL}};
    b = base();
    b.tasks = badt;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create(&p, &b, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "task with NULL function");
    /* After all that, a good pool still works on the same communicator. */
    p = NULL;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "good create after bad ones: %s", fp_err_name(rc));
    if (rc == 0 && p != NULL) {
      fp_future *f;
      int err;
      EXPECT(fp_submitf(p, "sq", &f, "[I]", (int64_t)9) == 0, "submit");
      EXPECT(result_i64(f, &err) == 81 && err == 0, "sq 9: %s", fp_err_name(err));
      fp_future_release(f);
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "mpibadhost") == 0 || strcmp(c, "mpibadroot") == 0 ||
             strcmp(c, "mpibadall") == 0) {
    /* fp_mpi_pool_create_ex(3): "a size or a root_workers the library
     * refuses on any rank makes the call return FP_EINVAL on every rank". */
    int here = strcmp(c, "mpibadall") == 0 ||
               (strcmp(c, "mpibadhost") == 0 ? rank != 0 : rank == 0);
    check_error = 1;
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 1;
    if (here)
      mo.size = 4; /* shorter than any fp_mpi_options */
    rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "mpi_opts->size 4");
    fp_mpi_options mo2 = FP_MPI_OPTIONS_INIT;
    mo2.root_workers = here ? 1025 : 1;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create_ex(&p, &o, &mo2, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "root_workers 1025");
    /* 1024 on the root alone, hosts' workers on top: too many together. */
    fp_mpi_options mo3 = FP_MPI_OPTIONS_INIT;
    mo3.root_workers = 1024;
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create_ex(&p, &o, &mo3, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "root_workers 1024 and the hosts'");
    /* A good one after: the communicator still works. */
    fp_mpi_options mo4 = FP_MPI_OPTIONS_INIT;
    mo4.root_workers = 1;
    p = NULL;
    rc = fp_mpi_pool_create_ex(&p, &o, &mo4, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "good create after bad ones: %s", fp_err_name(rc));
    if (rc == 0 && p != NULL) {
      fp_future *f;
      int err;
      EXPECT(fp_submitf(p, "sq", &f, "[I]", (int64_t)7) == 0, "submit");
      EXPECT(result_i64(f, &err) == 49 && err == 0, "sq 7: %s", fp_err_name(err));
      fp_future_release(f);
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "rootworkers") == 0) {
    /* fp_mpi_pool_create_ex(3): the root's workers are slots beside the
     * hosts', the first ones with root 0, pids of the root's machine, not
     * the root; a crash on one fails one future; mpi_opts NULL is
     * fp_mpi_pool_create. */
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0 && (rank == 0) == (p != NULL), "create: %s", fp_err_name(rc));
    if (rank == 0 && rc == 0) {
      fp_worker_stats ws[64];
      fp_pool_stats st = wait_all_live(p, ws, 64);
      EXPECT(st.workers == 2u * (unsigned)(size - 1) + 2, "workers %u", st.workers);
      for (int i = 0; i < 2; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d", (int)ws[i].pid);
        EXPECT(ws[i].pid > 0 && ws[i].pid != getpid() && access(path, F_OK) == 0,
               "slot %d: pid %d is no process of the root's machine", i, (int)ws[i].pid);
      }
      fp_future *f[64];
      int err, n = 0;
      for (int i = 0; i < 64; i++)
        n += fp_submitf(p, "sq", &f[i], "[I]", (int64_t)i) == 0;
      EXPECT(n == 64, "submit");
      for (int i = 0; i < n; i++) {
        EXPECT(result_i64(f[i], &err) == (int64_t)i * i, "sq %d: %s", i, fp_err_name(err));
        fp_future_release(f[i]);
      }
      pid_t root_pids[2] = {ws[0].pid, ws[1].pid};
      fp_pool_destroy(p);
      for (int i = 0; i < 2; i++) {
        char buf[512];
        const char *st_of = stat_fields(root_pids[i], buf, sizeof buf);
        EXPECT(st_of == NULL || st_of[0] == 'Z' || st_of[0] == 'X',
               "root worker %d outlived fp_pool_destroy", (int)root_pids[i]);
      }
    }
    p = (fp_pool *)&bad;
    rc = fp_mpi_pool_create_ex(&p, &o, NULL, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "mpi_opts NULL: %s", fp_err_name(rc));
    if (rank == 0 && rc == 0 && p != NULL) {
      fp_pool_stats st = FP_POOL_STATS_INIT;
      fp_pool_stats_get(p, &st, NULL, 0);
      EXPECT(st.workers == 2u * (unsigned)(size - 1), "mpi_opts NULL: workers %u", st.workers);
      fp_pool_destroy(p);
    } else if (rank != 0) {
      EXPECT(p == NULL, "host: *out not NULL");
    }
  } else if (strcmp(c, "shm_args") == 0) {
    /* "opts->shm_args is checked as fp_pool_create(3) checks it (a value
     * it refuses is FP_EINVAL on every rank) and otherwise ignored". */
    o.shm_args = 5;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "shm_args 5, refused by fp_pool_create");
  } else if (strcmp(c, "toomany") == 0) {
    o.workers = 1024 / (unsigned)(size - 1) + 1; /* sum just above 1024 */
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EINVAL, "hosts' workers add up to more than 1024");
  } else if (strcmp(c, "exactly") == 0) {
    o.workers = 1024 / (unsigned)(size - 1);
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "hosts' workers add up to <= 1024: %s", fp_err_name(rc));
    if (rc == 0 && p != NULL) {
      fp_pool_stats st = FP_POOL_STATS_INIT;
      fp_pool_stats_get(p, &st, NULL, 0);
      EXPECT(st.workers == o.workers * (unsigned)(size - 1), "workers %u", st.workers);
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "optsnull") == 0) {
    fp_task_register("sq", t_sq);
    rc = fp_mpi_pool_create(&p, NULL, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "opts NULL: %s", fp_err_name(rc));
    if (rc == 0 && p != NULL) {
      fp_future *f;
      int err;
      EXPECT(fp_submitf(p, "sq", &f, "[I]", (int64_t)3) == 0, "submit");
      EXPECT(result_i64(f, &err) == 9, "sq 3: %s", fp_err_name(err));
      fp_future_release(f);
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "initfail") == 0) {
    o.init = init_fail;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, 0);
    expect_all(rc, p, rank == 0 ? FP_EBROKEN : 0, "failing init");
    if (rank == 0) {
      const char *e = fp_pool_create_error();
      EXPECT(e != NULL && strstr(e, "worker initializer failed: InitError: no") != NULL,
             "create_error: %s", e ? e : "(null)");
    }
  } else if (strcmp(c, "root1") == 0 || strcmp(c, "basic") == 0) {
    int root = strcmp(c, "root1") == 0 ? size - 1 : 0;
    rc = fp_mpi_pool_create(&p, &o, MPI_COMM_WORLD, root);
    if (rank != root) {
      EXPECT(rc == 0 && p == NULL, "host: rc %s, *out %p", fp_err_name(rc), (void *)p);
    } else {
      EXPECT(rc == 0 && p != NULL, "root: rc %s", fp_err_name(rc));
      EXPECT(fp_pool_create_error() == NULL, "create_error not NULL after success");
      fp_pool_stats st = FP_POOL_STATS_INIT;
      fp_future *f;
      int err;
      fp_pool_stats_get(p, &st, NULL, 0);
      EXPECT(st.workers == 2u * (unsigned)(size - 1), "workers %u", st.workers);
      EXPECT(st.workers_live >= 1, "workers_live %u at return", st.workers_live);
      /* results */
      EXPECT(fp_submitf(p, "sq", &f, "[I]", (int64_t)12) == 0, "submit");
      EXPECT(result_i64(f, &err) == 144, "sq: %s", fp_err_name(err));
      fp_future_release(f);
      /* the task does not run in an MPI process */
      EXPECT(fp_submitf(p, "pid", &f, "[]") == 0, "submit pid");
      int64_t pid = result_i64(f, &err);
      EXPECT(err == 0 && pid != getpid(), "pid task ran in the root");
      fp_future_release(f);
      /* a 200 KiB argument and a 64 MiB one */
      static char buf[64 << 20];
      for (size_t n = 200 << 10; n <= sizeof buf; n = n == (200 << 10) ? sizeof buf : n + 1) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_bin(&pk, n);
        msgpack_pack_bin_body(&pk, buf, n);
        EXPECT(fp_submit(p, "len", sb.data, sb.size, &f) == 0, "submit len");
        msgpack_sbuffer_destroy(&sb);
        EXPECT(result_i64(f, &err) == (int64_t)n, "len %zu: %s", n, fp_err_name(err));
        fp_future_release(f);
      }
      fp_pool_stats_get(p, &st, NULL, 0);
      /* Both arguments went through the root's shared area, and every
       * task is answered: none is held there. */
      EXPECT(st.shared_bytes == 0 && st.shared_args == 2,
             "shared_bytes %llu shared_args %llu", (unsigned long long)st.shared_bytes,
             (unsigned long long)st.shared_args);
      /* deadline: fails its own future, the pool goes on */
      fp_submit_options so = FP_SUBMIT_OPTIONS_INIT;
      so.deadline_ms = 200;
      EXPECT(fp_submit_ex(p, "spin", "\x90", 1, &so, &f) == 0, "submit spin");
      result_i64(f, &err);
      EXPECT(err == FP_EDEADLINE, "spin past deadline: %s (%s)", fp_err_name(err),
             fp_future_error(f));
      fp_future_release(f);
      /* cancel a task that runs in its worker (it made its file) */
      char flag[256];
      const char *tmp = getenv("TMPDIR");
      snprintf(flag, sizeof flag, "%s/mpi_contract-%d", tmp != NULL ? tmp : "/tmp",
               (int)getpid());
      unlink(flag);
      EXPECT(fp_submitf(p, "spin_at", &f, "[s]", flag) == 0, "submit spin_at");
      int64_t end = now_ms() + LIMIT_MS;
      while (access(flag, F_OK) != 0 && now_ms() < end)
        fp_pool_dispatch(p, 10);
      EXPECT(access(flag, F_OK) == 0, "spin_at did not start in %d s", LIMIT_MS / 1000);
      unlink(flag);
      EXPECT(fp_future_cancel(f, 0) == FP_EBUSY, "cancel running without flag");
      EXPECT(fp_future_cancel(f, FP_CANCEL_RUNNING) == 0, "cancel running");
      result_i64(f, &err);
      EXPECT(err == FP_ECANCELLED, "cancelled: %s", fp_err_name(err));
      fp_future_release(f);
      /* a crash */
      EXPECT(fp_submitf(p, "crash", &f, "[]") == 0, "submit crash");
      result_i64(f, &err);
      EXPECT(err == FP_EWORKER, "crash: %s", fp_err_name(err));
      fp_future_release(f);
      /* a map with a per-item deadline: item 3 fails alone */
      msgpack_sbuffer sb;
      msgpack_packer pk;
      msgpack_sbuffer_init(&sb);
      msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
      msgpack_pack_array(&pk, 20);
      for (int k = 0; k < 20; k++)
        msgpack_pack_int64(&pk, k);
      fp_map_input in = {sb.data, sb.size, NULL, NULL};
      fp_map_options mo = FP_MAP_OPTIONS_INIT;
      /* Item 3 never ends; the others end well within, on a busy machine. */
      mo.deadline_ms = 3000;
      fp_map_iter *m;
      rc = fp_map(p, "item", &in, &mo, &m);
      EXPECT(rc == 0, "fp_map with deadline: %s", fp_err_name(rc));
      if (rc == 0) {
        fp_map_item it;
        int n = 0;
        while ((rc = fp_map_next(m, LIMIT_MS, &it)) == 1) {
          if (it.index == 3)
            EXPECT(it.err == FP_EDEADLINE, "item 3: %s", fp_err_name(it.err));
          else
            EXPECT(it.err == 0 && it.result->via.i64 == (int64_t)it.index,
                   "item %zu: %s", it.index, fp_err_name(it.err));
          n++;
        }
        EXPECT(rc == 0 && n == 20, "map end rc %d n %d", rc, n);
        fp_map_destroy(m);
      }
      msgpack_sbuffer_destroy(&sb);
      /* every worker eventually live */
      wait_all_live(p, NULL, 0);
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "mpisizes") == 0) {
    /* fp_mpi_pool_create_ex(3): "a size it does not know is FP_EINVAL";
     * ERRORS: smaller than the first fp_mpi_options (which ends at
     * root_workers) or larger than this library's.  The first struct's
     * own sizes are taken: the end of root_workers, and sizeof. */
    check_error = 1;
    size_t first = offsetof(fp_mpi_options, root_workers) + sizeof(unsigned);
    size_t good[] = {first, sizeof(fp_mpi_options)};
    for (int i = 0; i < 2; i++) {
      struct { fp_mpi_options m; char tail[16]; } big;
      memset(&big, 0xff, sizeof big);
      big.m.size = good[i];
      big.m.root_workers = 1;
      p = (fp_pool *)&bad;
      rc = fp_mpi_pool_create_ex(&p, &o, &big.m, MPI_COMM_WORLD, 0);
      EXPECT(rc == 0, "size %zu: %s", good[i], fp_err_name(rc));
      EXPECT((rank == 0) == (p != NULL), "size %zu: *out", good[i]);
      if (rc == 0 && p != NULL) {
        fp_pool_stats st = FP_POOL_STATS_INIT;
        fp_pool_stats_get(p, &st, NULL, 0);
        EXPECT(st.workers == 2u * (unsigned)(size - 1) + 1, "size %zu: workers %u",
               good[i], st.workers);
        fp_pool_destroy(p);
      }
    }
    /* "before any other collective call and before any process is
     * forked": no fork on any rank for the refused ones. */
    pthread_atfork(count_fork, NULL, NULL);
    size_t badsz[] = {0, first - 1, sizeof(fp_mpi_options) + 1,
                      sizeof(fp_mpi_options) + 8, (size_t)-1};
    for (int i = 0; i < 5; i++) {
      struct { fp_mpi_options m; char tail[16]; } big;
      memset(&big, 0, sizeof big);
      big.m.size = badsz[i];
      p = (fp_pool *)&bad;
      rc = fp_mpi_pool_create_ex(&p, &o, &big.m, MPI_COMM_WORLD, 0);
      expect_all(rc, p, FP_EINVAL, "bad size");
    }
    EXPECT(forks_seen == 0, "%d forks for refused sizes", forks_seen);
    /* "Only the root's root_workers is used" */
    for (int k = 0; k < 2; k++) {
      fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
      mo.root_workers = rank == 0 ? (unsigned)k : 3;
      p = NULL;
      rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
      EXPECT(rc == 0, "root's %d, hosts' 3: %s", k, fp_err_name(rc));
      if (rc == 0 && p != NULL) {
        fp_pool_stats st = FP_POOL_STATS_INIT;
        fp_pool_stats_get(p, &st, NULL, 0);
        EXPECT(st.workers == 2u * (unsigned)(size - 1) + (unsigned)k,
               "root's root_workers %d: workers %u", k, st.workers);
        fp_pool_destroy(p);
      }
    }
  } else if (strcmp(c, "rootloop") == 0) {
    /* fp_mpi_pool_create_ex(3): "The root's workers are a host of their
     * own for the rules that stop a crash loop ... more than
     * restart_limit of them dying in a row with none of their tasks
     * answered ... makes the root's slots leave the pool ... while the
     * hosts go on". */
    if (rank == 0)
      setenv("PROBE_ROOT", "1", 1);
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    o.restart_limit = 2;
    o.workers = 1;
    o.log = keep_log;
    int fds0 = fd_count();
    rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0 && (rank == 0) == (p != NULL), "create: %s", fp_err_name(rc));
    if (rank == 0 && rc == 0) {
      /* Rounds of tasks until the root is retired: a round the hosts
       * drain before a replacement is ready crashes nothing. */
      int err, crashed = 0, answered = 0;
      fp_pool_stats st0 = FP_POOL_STATS_INIT;
      for (int round = 0; round < 500 && st0.hosts_retired == 0; round++) {
        fp_future *f[20];
        for (int i = 0; i < 20; i++)
          EXPECT(fp_submitf(p, "crash_root", &f[i], "[]") == 0, "submit %d", i);
        for (int i = 0; i < 20; i++) {
          int64_t pid = result_i64(f[i], &err);
          if (err == 0) {
            answered++;
            EXPECT(pid != getpid(), "ran in the root");
          } else {
            crashed++;
            EXPECT(err == FP_EWORKER, "task %d: %s", i, fp_err_name(err));
          }
          fp_future_release(f[i]);
        }
        /* wait for the replacements (or the retirement) before the next */
        int64_t end = now_ms() + LIMIT_MS;
        st0 = stats_of(p, NULL, 0);
        while (st0.hosts_retired == 0 && st0.workers_live < st0.workers && now_ms() < end) {
          fp_pool_dispatch(p, 10);
          st0 = stats_of(p, NULL, 0);
        }
      }
      fp_pool_stats st = FP_POOL_STATS_INIT;
      fp_pool_stats_get(p, &st, NULL, 0);
      fp_pool_status ps = FP_POOL_STATUS_INIT;
      fp_pool_status_get(p, &ps);
      EXPECT(ps.state == FP_POOL_RUNNING, "pool state %d: %s", (int)ps.state, ps.reason);
      EXPECT(st.hosts_retired == 1 && st.workers_retired == 2,
             "hosts_retired %u workers_retired %u", st.hosts_retired, st.workers_retired);
      EXPECT(strstr(logged, "root rank 0") != NULL, "no log line names root rank 0:\n%s",
             logged);
      EXPECT(crashed >= 3 && answered > 0,
             "crashed %d answered %d (restart_limit 2, 2 root workers)", crashed, answered);
      /* the hosts go on */
      fp_future *g;
      EXPECT(fp_submitf(p, "sq", &g, "[I]", (int64_t)12) == 0, "submit");
      EXPECT(result_i64(g, &err) == 144 && err == 0, "sq 12 after: %s", fp_err_name(err));
      fp_future_release(g);
      fp_pool_destroy(p);
    }
    expect_nothing_left(fds0, "rootloop");
  } else if (strcmp(c, "rootreaper") == 0) {
    /* "the bridge has reaped it too if the root's process is a child
     * subreaper; no process of the pool is left on any rank". */
    if (rank == 0)
      EXPECT(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "PR_SET_CHILD_SUBREAPER");
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    int fds0 = -1;
    for (int round = 0; round < 3; round++) {
      p = NULL;
      rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
      EXPECT(rc == 0, "create: %s", fp_err_name(rc));
      if (rank == 0 && rc == 0) {
        pid_t rp[2];
        root_worker_pids(p, rp, 2);
        fp_future *f[20];
        int err;
        for (int i = 0; i < 20; i++)
          EXPECT(fp_submitf(p, "sq", &f[i], "[I]", (int64_t)i) == 0, "submit");
        for (int i = 0; i < 20; i++) {
          EXPECT(result_i64(f[i], &err) == (int64_t)i * i, "sq %d: %s", i, fp_err_name(err));
          fp_future_release(f[i]);
        }
        /* round 1: the root's workers are busy when destroy comes */
        if (round == 1) {
          setenv("PROBE_ROOT", "1", 1); /* read in the workers: no effect */
          fp_future *s[8];
          for (int i = 0; i < 8; i++)
            EXPECT(fp_submitf(p, "slow_root", &s[i], "[I]", (int64_t)i) == 0, "submit");
          for (int i = 0; i < 8; i++)
            fp_future_release(s[i]);
        }
        fp_pool_destroy(p);
        for (int i = 0; i < 2; i++)
          EXPECT(kill(rp[i], 0) != 0, "root worker %d left", (int)rp[i]);
      }
      MPI_Barrier(MPI_COMM_WORLD);
      /* the first round may leave MPI's own descriptors; the others none */
      if (fds0 < 0)
        fds0 = fd_count();
      else
        expect_nothing_left(fds0, "rootreaper");
    }
    char kids[512];
    children_of_self(kids, sizeof kids);
    EXPECT(strspn(kids, " \n") == strlen(kids), "children left: %s", kids);
  } else if (strcmp(c, "rootstop") == 0 || strcmp(c, "rootshutdown") == 0) {
    /* kill/terminate/shutdown with the root's workers busy (and the hosts'
     * answering): each future ends, and nothing is left on any rank. */
    if (rank == 0)
      setenv("PROBE_ROOT", "1", 1);
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    int fds0 = -1;
    int (*stops[3])(fp_pool *) = {fp_pool_kill, fp_pool_terminate, NULL};
    for (int round = 0; round < 4; round++) {
      p = NULL;
      rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
      EXPECT(rc == 0, "create: %s", fp_err_name(rc));
      if (rank == 0 && rc == 0) {
        pid_t rp[2];
        root_worker_pids(p, rp, 2);
        fp_future *f[40];
        int err;
        for (int i = 0; i < 40; i++)
          EXPECT(fp_submitf(p, "item_root", &f[i], "[I]", (int64_t)i) == 0, "submit");
        /* both root workers busy: the hosts answer every other item */
        int64_t end = now_ms() + LIMIT_MS;
        int running = 0;
        while (!(running >= 2 && fp_future_state(f[39]) != FP_PENDING) && now_ms() < end) {
          fp_pool_dispatch(p, 10);
          running = 0;
          for (int i = 0; i < 40; i++)
            running += fp_future_state(f[i]) == FP_RUNNING;
        }
        EXPECT(running >= 2 && fp_future_state(f[39]) != FP_PENDING,
               "%d running, the last %s pending after %d s", running,
               fp_future_state(f[39]) == FP_PENDING ? "still" : "not", LIMIT_MS / 1000);
        int which = round % 2;
        if (strcmp(c, "rootshutdown") == 0 || round >= 2) {
          /* the pending ones are cancelled; the running ones run on
           * until cancelled while running */
          EXPECT(fp_pool_shutdown(p, FP_SHUTDOWN_CANCEL_PENDING) == 0, "shutdown");
          for (int i = 0; i < 40; i++)
            if (fp_future_state(f[i]) == FP_RUNNING)
              EXPECT(fp_future_cancel(f[i], FP_CANCEL_RUNNING) == 0, "cancel %d", i);
        } else {
          EXPECT(stops[which] != NULL && stops[which](p) == 0, "stop %d", which);
        }
        int done = 0;
        for (int i = 0; i < 40; i++) {
          const msgpack_object *r;
          err = fp_future_result(f[i], LIMIT_MS, &r);
          EXPECT(err != FP_ETIMEDOUT, "future %d still pending after the stop", i);
          done += err == 0;
          fp_future_release(f[i]);
        }
        fp_pool_destroy(p);
        for (int i = 0; i < 2; i++)
          EXPECT(kill(rp[i], 0) != 0, "root worker %d left", (int)rp[i]);
      }
      MPI_Barrier(MPI_COMM_WORLD);
      if (fds0 < 0)
        fds0 = fd_count();
      else
        expect_nothing_left(fds0, c);
    }
  } else if (strcmp(c, "rootdestroy") == 0) {
    /* fp_pool_destroy(3): "Every task already handed to a worker ... runs
     * to the end, and its future gets its result", on the root's workers
     * as on the hosts'. */
    if (rank == 0)
      setenv("PROBE_ROOT", "1", 1);
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "create: %s", fp_err_name(rc));
    if (rank == 0 && rc == 0) {
      pid_t rp[2];
      root_worker_pids(p, rp, 2);
      fp_future *f[2];
      for (int i = 0; i < 2; i++)
        EXPECT(fp_submitf(p, "slow_root", &f[i], "[I]", (int64_t)i + 5) == 0, "submit");
      /* both handed to a worker (the root's two, the first slots) */
      int64_t end = now_ms() + LIMIT_MS;
      while ((fp_future_state(f[0]) == FP_PENDING || fp_future_state(f[1]) == FP_PENDING) &&
             now_ms() < end)
        fp_pool_dispatch(p, 10);
      EXPECT(fp_future_state(f[0]) != FP_PENDING && fp_future_state(f[1]) != FP_PENDING,
             "a task still pending after %d s", LIMIT_MS / 1000);
      fp_pool_destroy(p);
      for (int i = 0; i < 2; i++) {
        int err;
        int64_t v = result_i64(f[i], &err);
        EXPECT(err == 0 && v == (i + 5) * (i + 5), "task %d: %s %lld state %d: %s", i,
               fp_err_name(err), (long long)v, (int)fp_future_state(f[i]),
               fp_future_error(f[i]) ? fp_future_error(f[i]) : "-");
        fp_future_release(f[i]);
      }
      for (int i = 0; i < 2; i++)
        EXPECT(kill(rp[i], 0) != 0, "root worker %d left", (int)rp[i]);
    }
  } else if (strcmp(c, "rooteagain") == 0) {
    /* "An error of fp_pool_create(3) in starting the root's fork server
     * (for example FP_EAGAIN at the process limit) is every rank's, and
     * fp_pool_create_error(3) on the root says the root could not start
     * its workers"; the hosts' fork servers are gone. */
    if (rank == 0)
      EXPECT(refuse_fork_eagain() == 0, "seccomp filter");
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    int fds0 = fd_count();
    rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
    expect_all(rc, p, FP_EAGAIN, "the root cannot fork");
    if (rank == 0) {
      const char *e = fp_pool_create_error();
      EXPECT(e != NULL && strstr(e, "the root could not start its workers") != NULL,
             "create_error: %s", e ? e : "(null)");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    expect_nothing_left(fds0, "rooteagain");
  } else if (strcmp(c, "rootpin") == 0) {
    /* "pin_workers counts the root's slots from 0, as a host counts its
     * own": root worker k runs on the root's k-th CPU alone. */
    cpu_set_t mine;
    sched_getaffinity(0, sizeof mine, &mine);
    int cpus[2], n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < 2; cpu++)
      if (CPU_ISSET(cpu, &mine))
        cpus[n++] = cpu;
    if (n < 2)
      cpus[1] = cpus[0];
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    o.pin_workers = 1;
    rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "create: %s", fp_err_name(rc));
    if (rank == 0 && rc == 0) {
      pid_t rp[2];
      root_worker_pids(p, rp, 2);
      for (int i = 0; i < 2; i++) {
        cpu_set_t w;
        EXPECT(sched_getaffinity(rp[i], sizeof w, &w) == 0, "affinity of %d", (int)rp[i]);
        EXPECT(CPU_COUNT(&w) == 1 && CPU_ISSET(cpus[i], &w),
               "root worker %d (slot %d): %d CPUs, not CPU %d alone", (int)rp[i], i,
               CPU_COUNT(&w), cpus[i]);
      }
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "rootlast") == 0) {
    /* "rank r's worker k is slot k plus the workers of the ranks below r":
     * with the last rank the root, its workers are the last slots; they
     * see the root's environment as it was at create, not what it set
     * later. */
    int root = size - 1;
    if (rank == root)
      setenv("PROBE_ROOT", "1", 1);
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, root);
    EXPECT(rc == 0 && (rank == root) == (p != NULL), "create: %s", fp_err_name(rc));
    if (rank == root && rc == 0) {
      setenv("PROBE_LATE", "1", 1);
      fp_worker_stats ws[64];
      unsigned n = wait_all_live(p, ws, 64).workers;
      EXPECT(n == 2u * (unsigned)(size - 1) + 2, "workers %u", n);
      int seen[64] = {0};
      for (int round = 0; round < 50; round++) {
        fp_future *f[16];
        for (int i = 0; i < 16; i++)
          fp_submitf(p, "env", &f[i], "[]");
        for (int i = 0; i < 16; i++) {
          const msgpack_object *r;
          if (fp_future_result(f[i], LIMIT_MS, &r) == 0) {
            int64_t pid = r->via.array.ptr[0].via.i64;
            int is_root = (int)r->via.array.ptr[1].via.i64;
            EXPECT(r->via.array.ptr[2].via.i64 == 0, "worker %lld saw a later setenv",
                   (long long)pid);
            for (unsigned j = 0; j < n && j < 64; j++)
              if (ws[j].pid == pid) {
                seen[j] = 1;
                EXPECT(is_root == (j >= n - 2), "slot %u (pid %lld): root's %d", j,
                       (long long)pid, is_root);
              }
          }
          fp_future_release(f[i]);
        }
      }
      for (unsigned j = n - 2; j < n; j++)
        EXPECT(seen[j], "slot %u ran nothing", j);
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "rootmap") == 0) {
    /* fp_map with an item deadline: items on the root's workers hang past
     * it and fail alone (FP_EDEADLINE), the hosts' answer. */
    if (rank == 0)
      setenv("PROBE_ROOT", "1", 1);
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "create: %s", fp_err_name(rc));
    if (rank == 0 && rc == 0) {
      msgpack_sbuffer sb;
      msgpack_packer pk;
      msgpack_sbuffer_init(&sb);
      msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
      msgpack_pack_array(&pk, 30);
      for (int i = 0; i < 30; i++)
        msgpack_pack_int64(&pk, i);
      fp_map_options mo2 = FP_MAP_OPTIONS_INIT;
      mo2.deadline_ms = 300;
      mo2.chunksize = 1;
      fp_map_input in = {sb.data, sb.size, NULL, NULL};
      fp_map_iter *m;
      rc = fp_map(p, "item_root", &in, &mo2, &m);
      EXPECT(rc == 0, "fp_map: %s", fp_err_name(rc));
      if (rc == 0) {
        fp_map_item it;
        int n = 0, late = 0;
        while ((rc = fp_map_next(m, 120000, &it)) == 1) {
          if (it.err == FP_EDEADLINE)
            late++;
          else
            EXPECT(it.err == 0 && it.result->via.i64 == (int64_t)(it.index * it.index),
                   "item %zu: %s", it.index, fp_err_name(it.err));
          n++;
        }
        EXPECT(rc == 0 && n == 30, "map end rc %d n %d", rc, n);
        EXPECT(late >= 2, "only %d items past their deadline", late);
        fp_map_destroy(m);
      }
      msgpack_sbuffer_destroy(&sb);
      fp_pool_destroy(p);
    }
  } else if (strcmp(c, "rootaffinity") == 0) {
    /* "they inherit ... its affinity mask": the root narrowed to one CPU
     * before create; its workers run on that CPU alone. */
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    cpu_set_t all;
    sched_getaffinity(0, sizeof all, &all);
    if (rank == 0)
      EXPECT(sched_setaffinity(0, sizeof one, &one) == 0, "sched_setaffinity");
    fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
    mo.root_workers = 2;
    rc = fp_mpi_pool_create_ex(&p, &o, &mo, MPI_COMM_WORLD, 0);
    EXPECT(rc == 0, "create: %s", fp_err_name(rc));
    if (rank == 0 && rc == 0) {
      pid_t rp[2];
      root_worker_pids(p, rp, 2);
      int seen = 0;
      for (int k = 0; k < 40 && seen != 3; k++) {
        fp_future *f[16];
        int err;
        for (int i = 0; i < 16; i++)
          fp_submitf(p, "where", &f[i], "[]");
        for (int i = 0; i < 16; i++) {
          const msgpack_object *r;
          err = fp_future_result(f[i], LIMIT_MS, &r);
          if (err == 0) {
            int64_t pid = r->via.array.ptr[0].via.i64, n = r->via.array.ptr[1].via.i64;
            for (int j = 0; j < 2; j++)
              if (pid == rp[j]) {
                seen |= 1 << j;
                EXPECT(n == 1, "root worker %d may run on %lld CPUs", (int)pid, (long long)n);
              }
          }
          fp_future_release(f[i]);
        }
      }
      EXPECT(seen == 3, "not every root worker ran a task (%d)", seen);
      fp_pool_destroy(p);
    }
  } else {
    printf("unknown case %s\n", c);
    bad = 1;
  }
  MPI_Finalize();
  printf("rank %d: %s %s\n", rank, c, bad ? "FAILED" : "ok");
  return bad;
}

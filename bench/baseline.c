/*
 * The physical baselines: the same work as each workload, written by hand
 * with fork(), pipes and poll(), with no futures, no framing and no msgpack.
 * They are what the kernel allows on this machine; forkpool's figures are
 * reported as ratios to them.  Pipes are grown to 1 MiB as forkpool grows
 * its own (F_SETPIPE_SZ), so the comparison is of the code, not of the pipe.
 */
#include "bench.h"

#include <errno.h>
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

#define RBUF (64 * 1024)

typedef struct child {
  pid_t pid;
  int to;                /* parent writes here; -1 closed */
  int from;              /* parent reads here; -1 closed */
} child;

typedef void (*child_fn)(int in, int out, void *arg);

static void grow(int fd)
{
#ifdef F_SETPIPE_SZ
  (void)fcntl(fd, F_SETPIPE_SZ, 1 << 20);
#else
  (void)fd;
#endif
}

/* Forks a child running fn(in, out, arg); the child keeps no other fd. */
static child spawn(child_fn fn, void *arg)
{
  int a[2], b[2];
  if (pipe(a) != 0 || pipe(b) != 0)
    die("pipe", -errno);
  grow(a[1]);
  grow(b[1]);
  pid_t pid = fork();
  if (pid < 0)
    die("fork", -errno);
  if (pid == 0) {
    /* Its ends become 3 and 4; everything above goes, so that no other
     * child's pipe (nor forkpool's) stays open in this one. */
    int in = fcntl(a[0], F_DUPFD, 10), out = fcntl(b[1], F_DUPFD, 10);
    if (in < 0 || out < 0 || dup2(in, 3) < 0 || dup2(out, 4) < 0)
      _exit(127);
#ifdef HAVE_CLOSE_RANGE
    if (close_range(5, ~0u, 0) != 0)
#endif
      for (int fd = 5; fd < 1024; fd++)
        close(fd);
    fn(3, 4, arg);
    _exit(0);
  }
  close(a[0]);
  close(b[1]);
  return (child){pid, a[1], b[0]};
}

static void reap(child *c)
{
  if (c->to >= 0)
    close(c->to);
  if (c->from >= 0)
    close(c->from);
  c->to = c->from = -1;
  while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
    ;
}

static void nonblock(int fd)
{
  int fl = fcntl(fd, F_GETFL);
  (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* --- W1, W2: two workers squaring a stream of integers ----------------------- */

/* The worker: reads what is there, squares each whole item, answers each
 * item with its own write (batch 1) or the whole block with one. */
static void square_worker(int in, int out, void *arg)
{
  size_t batch = *(size_t *)arg;
  static uint64_t buf[RBUF / 8];
  size_t have = 0; /* bytes in buf, a partial item at the end */
  for (;;) {
    ssize_t n = read(in, (char *)buf + have, sizeof buf - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    have += (size_t)n;
    size_t items = have / 8;
    for (size_t i = 0; i < items; i++) {
      buf[i] *= buf[i];
      if (batch == 1 && write_all_fd(out, &buf[i], 8) != 0)
        return;
    }
    if (batch != 1 && write_all_fd(out, buf, items * 8) != 0)
      return;
    memmove(buf, (char *)buf + items * 8, have - items * 8);
    have -= items * 8;
  }
}

typedef struct sender {
  uint64_t *buf;         /* the block being written */
  size_t len, off;       /* bytes in it, bytes written */
  char rest[8];          /* a partial result item */
  size_t rest_len;
} sender;

double base_stream(size_t items, size_t batch, uint64_t *sum)
{
  child w[2];
  sender s[2];
  for (int k = 0; k < 2; k++) {
    w[k] = spawn(square_worker, &batch);
    nonblock(w[k].to);
    nonblock(w[k].from);
    memset(&s[k], 0, sizeof s[k]);
    if ((s[k].buf = malloc(batch * 8)) == NULL)
      die("malloc", FP_ENOMEM);
  }
  static char rbuf[RBUF];
  size_t next = 0, got = 0;
  uint64_t total = 0;
  double t0 = now_s();
  while (got < items) {
    struct pollfd pf[4];
    int who[4], np = 0;
    for (int k = 0; k < 2; k++) {
      if (w[k].to >= 0) {
        pf[np] = (struct pollfd){.fd = w[k].to, .events = POLLOUT};
        who[np++] = k * 2 + 1;
      }
      if (w[k].from >= 0) {
        pf[np] = (struct pollfd){.fd = w[k].from, .events = POLLIN};
        who[np++] = k * 2;
      }
    }
    if (np == 0)
      die("the baseline workers answered too few items", 0);
    if (poll(pf, (nfds_t)np, -1) < 0 && errno != EINTR)
      die("poll", -errno);
    for (int j = 0; j < np; j++) {
      int k = who[j] / 2;
      if (pf[j].revents == 0)
        continue;
      if (who[j] % 2 == 1) {
        /* Writable: per-item writes (batch 1) or one block at a time, a few
         * hundred writes per visit so that both workers are fed. */
        sender *sd = &s[k];
        for (int visit = 0; visit < 256; visit++) {
          if (sd->off == sd->len) {
            size_t n = items - next < batch ? items - next : batch;
            if (n == 0) {
              close(w[k].to);
              w[k].to = -1;
              break;
            }
            for (size_t i = 0; i < n; i++)
              sd->buf[i] = next + i;
            next += n;
            sd->len = n * 8;
            sd->off = 0;
          }
          ssize_t wr = write(w[k].to, (char *)sd->buf + sd->off,
                             sd->len - sd->off);
          if (wr < 0 && (errno == EAGAIN || errno == EINTR))
            break;
          if (wr < 0)
            die("write to a baseline worker", -errno);
          sd->off += (size_t)wr;
          if (sd->off < sd->len)
            break;
        }
      } else {
        sender *sd = &s[k];
        ssize_t n = read(w[k].from, rbuf, sizeof rbuf);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
          continue;
        if (n < 0)
          die("read from a baseline worker", -errno);
        if (n == 0) { /* done: it saw the end of its input */
          close(w[k].from);
          w[k].from = -1;
          continue;
        }
        size_t off = 0;
        if (sd->rest_len > 0) {
          size_t need = 8 - sd->rest_len;
          size_t take = (size_t)n < need ? (size_t)n : need;
          memcpy(sd->rest + sd->rest_len, rbuf, take);
          sd->rest_len += take;
          off = take;
          if (sd->rest_len == 8) {
            uint64_t v;
            memcpy(&v, sd->rest, 8);
            total += v;
            got++;
            sd->rest_len = 0;
          }
        }
        for (; off + 8 <= (size_t)n; off += 8) {
          uint64_t v;
          memcpy(&v, rbuf + off, 8);
          total += v;
          got++;
        }
        memcpy(sd->rest, rbuf + off, (size_t)n - off);
        sd->rest_len += (size_t)n - off;
      }
    }
  }
  double t = now_s() - t0;
  for (int k = 0; k < 2; k++) {
    reap(&w[k]);
    free(s[k].buf);
  }
  *sum = total;
  return (double)items / t;
}

/* --- W3: ping-pong ------------------------------------------------------------- */

static int poll_read(int fd, void *buf, size_t len)
{
  struct pollfd pf = {.fd = fd, .events = POLLIN};
  while (poll(&pf, 1, -1) < 0)
    if (errno != EINTR)
      return -1;
  return read_all_fd(fd, buf, len);
}

static void pong(int in, int out, void *arg)
{
  (void)arg;
  char msg[16];
  while (poll_read(in, msg, sizeof msg) == 0)
    if (write_all_fd(out, msg, sizeof msg) != 0)
      return;
}

double base_pingpong(size_t trips, int cpu_parent, int cpu_child)
{
  if (cpu_child >= 0 && pin_cpu(cpu_child) != 0)
    die("sched_setaffinity", -errno);
  child c = spawn(pong, NULL);
  if (cpu_child >= 0 && (pin_cpu(cpu_parent) != 0 ||
                         !pinned_to(c.pid, cpu_child)))
    die("ping-pong: the child is not on its CPU", 0);
  char msg[16] = "ping";
  for (int i = 0; i < 100; i++) /* warm up both sides */
    if (write_all_fd(c.to, msg, sizeof msg) || poll_read(c.from, msg, 16))
      die("ping-pong", 0);
  double t0 = now_s();
  for (size_t i = 0; i < trips; i++)
    if (write_all_fd(c.to, msg, sizeof msg) || poll_read(c.from, msg, 16))
      die("ping-pong", 0);
  double t = now_s() - t0;
  reap(&c);
  return t / (double)trips * 1e6;
}

/* --- W5: payload echo ------------------------------------------------------------- */

static void echo(int in, int out, void *arg)
{
  size_t bytes = *(size_t *)arg;
  char *buf = malloc(bytes);
  if (buf == NULL)
    return;
  while (read_all_fd(in, buf, bytes) == 0)
    if (write_all_fd(out, buf, bytes) != 0)
      return;
}

double base_echo(size_t bytes, size_t trips)
{
  child c = spawn(echo, &bytes);
  char *buf = malloc(bytes);
  if (buf == NULL)
    die("malloc", FP_ENOMEM);
  memset(buf, 0xa5, bytes);
  for (int i = 0; i < 3; i++)
    if (write_all_fd(c.to, buf, bytes) || read_all_fd(c.from, buf, bytes))
      die("echo", 0);
  double t0 = now_s();
  for (size_t i = 0; i < trips; i++)
    if (write_all_fd(c.to, buf, bytes) || read_all_fd(c.from, buf, bytes))
      die("echo", 0);
  double t = now_s() - t0;
  reap(&c);
  free(buf);
  return 2.0 * (double)bytes * (double)trips / t / (1 << 20);
}

/* --- W7, W6: start-up and crash ------------------------------------------------------ */

/* Says it is ready, then answers 16-byte messages; 'c' first: crash. */
static void ready_pong(int in, int out, void *arg)
{
  (void)arg;
  char msg[16];
  if (write_all_fd(out, "r", 1) != 0)
    return;
  while (poll_read(in, msg, sizeof msg) == 0) {
    if (msg[0] == 'c') {
      struct rlimit no_core = {0, 0};
      setrlimit(RLIMIT_CORE, &no_core);
      raise(SIGSEGV);
    }
    if (write_all_fd(out, msg, sizeof msg) != 0)
      return;
  }
}

static void round_trip(child *c)
{
  char msg[16] = "ping";
  if (write_all_fd(c->to, msg, sizeof msg) || poll_read(c->from, msg, 16))
    die("round trip", 0);
}

static void wait_ready(child *c)
{
  char r;
  if (poll_read(c->from, &r, 1) != 0)
    die("a baseline child did not start", 0);
}

void base_startup(unsigned n, double *start, double *stop, long *priv_kb)
{
  child *c = malloc(n * sizeof *c);
  if (c == NULL)
    die("malloc", FP_ENOMEM);
  double t0 = now_s();
  for (unsigned i = 0; i < n; i++)
    c[i] = spawn(ready_pong, NULL);
  for (unsigned i = 0; i < n; i++)
    wait_ready(&c[i]);
  round_trip(&c[0]);
  double t1 = now_s();
  if (priv_kb != NULL)
    *priv_kb = private_kb(c[0].pid);
  double t2 = now_s();
  for (unsigned i = 0; i < n; i++)
    reap(&c[i]);
  double t3 = now_s();
  free(c);
  *start = t1 - t0;
  *stop = t3 - t2;
}

/*
 * W7's floor: the shape forkpool starts in, with no forkpool code in it.
 * A vfork()ed middle process forks a stand-in fork server, which forks n
 * children (each sends a ready byte, then answers as ready_pong does),
 * saying so after the first; the parent waits for that and for the first
 * child's ready byte, then makes one round trip.  That is the chain no
 * fork-server design can avoid (a fork of the caller, then a fork of that,
 * for the first worker; see bench/NOTES.md "W7's floor"), so
 * fp_pool_create's figure over this one is what the library itself adds.
 * The pipes are made here, before the forks: none is passed over a
 * socket.
 */
static void chain_server(unsigned n, int (*a)[2], int (*b)[2], int done,
                         int hold)
{
  pid_t *pid = calloc(n, sizeof *pid);
  if (pid == NULL)
    _exit(1);
  for (unsigned i = 0; i < n; i++) { /* the parent's ends */
    close(a[i][1]);
    close(b[i][0]);
  }
  for (unsigned i = 0; i < n; i++) {
    if (i == 1 && write_all_fd(done, "d", 1) != 0)
      _exit(1);
    if ((pid[i] = fork()) < 0)
      _exit(1);
    if (pid[i] == 0) {
      int in = fcntl(a[i][0], F_DUPFD, 10), out = fcntl(b[i][1], F_DUPFD, 10);
      if (in < 0 || out < 0 || dup2(in, 3) < 0 || dup2(out, 4) < 0)
        _exit(127);
#ifdef HAVE_CLOSE_RANGE
      if (close_range(5, ~0u, 0) != 0)
#endif
        for (int fd = 5; fd < 1024; fd++)
          close(fd);
      ready_pong(3, 4, NULL);
      _exit(0);
    }
  }
  for (unsigned i = 0; i < n; i++) {
    close(a[i][0]);
    close(b[i][1]);
  }
  if (n < 2 && write_all_fd(done, "d", 1) != 0)
    _exit(1);
  close(done);
  char x;
  ssize_t r;
  while ((r = read(hold, &x, 1)) > 0 || (r < 0 && errno == EINTR))
    ; /* until the parent closes its end: then reap and go */
  for (unsigned i = 0; i < n; i++)
    while (waitpid(pid[i], NULL, 0) < 0 && errno == EINTR)
      ;
  _exit(0);
}

double base_startup_chain(unsigned n)
{
  int (*a)[2] = calloc(n, sizeof *a), (*b)[2] = calloc(n, sizeof *b);
  child *c = calloc(n, sizeof *c);
  int done[2], hold[2];
  if (a == NULL || b == NULL || c == NULL)
    die("calloc", FP_ENOMEM);
  double t0 = now_s();
  if (pipe(done) != 0 || pipe(hold) != 0)
    die("pipe", -errno);
  for (unsigned i = 0; i < n; i++) {
    if (pipe(a[i]) != 0 || pipe(b[i]) != 0)
      die("pipe", -errno);
    grow(a[i][1]);
    grow(b[i][1]);
  }
  pid_t mid = vfork();
  if (mid == 0) {
    pid_t fs = fork();
    if (fs == 0) {
      close(done[0]);
      close(hold[1]);
      chain_server(n, a, b, done[1], hold[0]);
    }
    _exit(fs < 0);
  }
  if (mid < 0)
    die("vfork", -errno);
  while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
    ;
  close(done[1]);
  close(hold[0]);
  for (unsigned i = 0; i < n; i++) {
    close(a[i][0]);
    close(b[i][1]);
    c[i] = (child){-1, a[i][1], b[i][0]};
  }
  char x;
  if (poll_read(done[0], &x, 1) != 0)
    die("the stand-in fork server did not start", 0);
  wait_ready(&c[0]);
  round_trip(&c[0]);
  double t1 = now_s();
  for (unsigned i = 0; i < n; i++) {
    close(c[i].to);
    close(c[i].from);
  }
  /* The stand-in reaps its children and exits at this end of file; it is
   * not our child (the middle process was), so its own exit is not
   * waited for, as forkpool's fork server's is not by a caller. */
  close(hold[1]);
  close(done[0]);
  free(a);
  free(b);
  free(c);
  return t1 - t0;
}

void base_crash(int respawn, double *detect, double *next)
{
  child a = spawn(ready_pong, NULL), b = {-1, -1, -1};
  wait_ready(&a);
  if (!respawn) {
    b = spawn(ready_pong, NULL);
    wait_ready(&b);
  }
  round_trip(&a);
  char msg[16] = "crash";
  double t0 = now_s();
  if (write_all_fd(a.to, msg, sizeof msg) != 0)
    die("crash", 0);
  char x;
  if (poll_read(a.from, &x, 1) == 0)
    die("the crashing child answered", 0);
  int status;
  while (waitpid(a.pid, &status, 0) < 0 && errno == EINTR)
    ;
  double t1 = now_s();
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
    die("the crashing child did not die of SIGSEGV", 0);
  close(a.to);
  close(a.from);
  if (respawn) {
    b = spawn(ready_pong, NULL);
    wait_ready(&b);
  }
  round_trip(&b);
  double t2 = now_s();
  reap(&b);
  *detect = t1 - t0;
  *next = t2 - t1;
}

/* --- Modes: a hand-written thread queue ---------------------------------------- */

/*
 * What a C programmer writes instead of a thread pool: one mutex, a
 * condition variable for work and one for results, a FIFO of integers and
 * a done flag per item.  Each thread takes one item at a time, squares it,
 * stores the result and signals the submitter, which waits item by item in
 * order, as W1 reads its futures.  No msgpack, no futures, no allocation
 * per item.
 */
typedef struct tqueue {
  pthread_mutex_t mu;
  pthread_cond_t work, done;
  const uint64_t *in;
  uint64_t *out;
  unsigned char *ready;
  size_t head, tail;
  int stop;
} tqueue;

static void *tq_worker(void *arg)
{
  tqueue *q = arg;
  pthread_mutex_lock(&q->mu);
  for (;;) {
    while (q->head == q->tail && !q->stop)
      pthread_cond_wait(&q->work, &q->mu);
    if (q->head == q->tail)
      break;
    size_t i = q->head++;
    pthread_mutex_unlock(&q->mu);
    uint64_t r = q->in[i] * q->in[i];
    pthread_mutex_lock(&q->mu);
    q->out[i] = r;
    q->ready[i] = 1;
    pthread_cond_signal(&q->done); /* the submitter is the only waiter */
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

static void tq_put(tqueue *q, size_t i)
{
  pthread_mutex_lock(&q->mu);
  q->tail = i + 1;
  pthread_cond_signal(&q->work);
  pthread_mutex_unlock(&q->mu);
}

static uint64_t tq_take(tqueue *q, size_t i)
{
  pthread_mutex_lock(&q->mu);
  while (!q->ready[i])
    pthread_cond_wait(&q->done, &q->mu);
  uint64_t r = q->out[i];
  pthread_mutex_unlock(&q->mu);
  return r;
}

double base_tqueue(size_t items, unsigned threads, int pingpong,
                   uint64_t *sum)
{
  tqueue q = {.mu = PTHREAD_MUTEX_INITIALIZER,
              .work = PTHREAD_COND_INITIALIZER,
              .done = PTHREAD_COND_INITIALIZER};
  uint64_t *in = malloc(items * sizeof *in);
  q.out = malloc(items * sizeof *q.out);
  q.ready = calloc(items, 1);
  pthread_t th[64];
  if (in == NULL || q.out == NULL || q.ready == NULL || threads > 64)
    die("malloc", FP_ENOMEM);
  for (size_t i = 0; i < items; i++)
    in[i] = i;
  q.in = in;
  for (unsigned t = 0; t < threads; t++)
    if ((errno = pthread_create(&th[t], NULL, tq_worker, &q)) != 0)
      die("pthread_create", -errno);
  uint64_t s = 0;
  double t0 = now_s();
  if (pingpong) {
    for (size_t i = 0; i < items; i++) {
      tq_put(&q, i);
      s += tq_take(&q, i);
    }
  } else {
    for (size_t i = 0; i < items; i++)
      tq_put(&q, i);
    for (size_t i = 0; i < items; i++)
      s += tq_take(&q, i);
  }
  double t = now_s() - t0;
  pthread_mutex_lock(&q.mu);
  q.stop = 1;
  pthread_cond_broadcast(&q.work);
  pthread_mutex_unlock(&q.mu);
  for (unsigned k = 0; k < threads; k++)
    pthread_join(th[k], NULL);
  free(in);
  free(q.out);
  free(q.ready);
  *sum = s;
  return t;
}

/*
 * The dispatcher: worker slots, the queue of pending tasks, the poll loop,
 * restarts.  There is no thread of its own: it runs inside the caller's
 * calls, one thread at a time in poll(), the others waiting on a condition
 * variable.  Every field of the pool is guarded by its lock.
 *
 * A task's life: submit puts it on the queue (PENDING); schedule hands it to
 * the least busy live worker (RUNNING) and writes its frame when the pipe
 * takes it; the worker answers in order, so the oldest task of a worker is
 * the one it runs.  When a worker dies, that oldest task fails and the ones
 * behind it go back to the front of the queue.
 */
#include "forkpool-private.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

#define FP__MAX_WORKERS 1024
#define FP__IOV_BATCH 64 /* frames per writev */

enum slot_state {
  SLOT_OFF = 0,   /* no worker, none wanted */
  SLOT_SPAWNING,  /* SPAWN sent, SPAWNED not yet read */
  SLOT_LIVE,      /* a worker with open pipes */
  SLOT_DYING,     /* killed or gone; waiting for its EXITED report */
};

typedef struct fp__slot {
  enum slot_state state;
  pid_t pid;
  int in_fd;              /* tasks to the worker; -1 once closed */
  int out_fd;             /* results from it; -1 once closed */
  fp__reader rd;          /* partial result frame */
  fp_future *head, *tail; /* handed to it, oldest (the running one) first */
  fp_future *send;        /* first frame not fully written; NULL: none */
  size_t send_off;        /* bytes of send's frame already written */
  unsigned inflight;      /* length of the head..tail list */
  int killed;             /* KILL already sent */
  int fail_err;           /* why we killed it (FP_EPROTO); 0: it died */
  char fail_msg[160];     /* the message for fail_err */
  uint32_t ep_in, ep_out; /* events registered in the pool's epoll set */
} fp__slot;

struct fp_pool {
  pthread_mutex_t lock;
  pthread_cond_t cond;    /* broadcast after every dispatcher pass */
  int polling;            /* a thread is inside poll() without the lock */
  int wake[2];            /* lets a thread interrupt that poll() */
  int wake_pending;       /* a byte is in wake[] already */
  int ctl_fd;             /* control socket to the fork server; -1 closed */
  pid_t fs_pid;           /* the fork server, for messages only */
  pid_t owner;            /* the process that created the pool */
  fp_pool_options opts;   /* the caller's, with defaults filled in */
  fp__tasks tasks;        /* names the pool accepts */
  fp__worker_cfg wcfg;    /* what the fork server's workers run */
  fp__slot *slots;
  unsigned nslots;
  unsigned rr;            /* where the next scheduling scan starts */
  struct pollfd *pfd;     /* the poll set: ctl, wake, then two per slot */
  int *pfd_who;           /* slot * 2 (+1 for the write end); -1 others */
  fp_future *qhead, *qtail; /* PENDING tasks, oldest first */
  atomic_uint_fast64_t next_id;
  uint64_t ndone;         /* futures made final, for fp_pool_dispatch */
  int closed;             /* no more submits */
  int stopping;           /* workers are being let go */
  int err;                /* FP_EBROKEN or a start-up error once broken */
  char err_msg[256];      /* why */
  int64_t *restarts;      /* ring of the last restart_limit+1 restart times */
  unsigned nrestarts;     /* restarts ever */
  int epfd;               /* for fp_pool_fd; -1 until asked for */
};

static void slot_close_fd(fp_pool *p, fp__slot *s, int *fd);

void fp__pool_lock(fp_pool *p)
{
  pthread_mutex_lock(&p->lock);
}

void fp__pool_unlock(fp_pool *p)
{
  pthread_mutex_unlock(&p->lock);
}

void fp__log(fp_pool *p, int level, const char *fmt, ...)
{
  if (p->opts.log == NULL)
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  p->opts.log(p->opts.log_arg, level, msg);
}

/* --- Lists ----------------------------------------------------------------- */

static void list_push(fp_future **head, fp_future **tail, fp_future *f)
{
  f->next = NULL;
  f->prev = *tail;
  if (*tail)
    (*tail)->next = f;
  else
    *head = f;
  *tail = f;
}

static void list_unlink(fp_future **head, fp_future **tail, fp_future *f)
{
  if (f->prev)
    f->prev->next = f->next;
  else
    *head = f->next;
  if (f->next)
    f->next->prev = f->prev;
  else
    *tail = f->prev;
  f->next = f->prev = NULL;
}

/* Drops the pool's reference to a future that just became final. */
static void done(fp_pool *p, fp_future *f)
{
  p->ndone++;
  fp_future_release(f);
}

static void fail(fp_pool *p, fp_future *f, int err, const char *msg)
{
  fp__future_fail(f, err, "%s", msg);
  done(p, f);
}

/* --- Waking the thread in poll() -------------------------------------------- */

static void wake_poller(fp_pool *p)
{
  if (!p->polling || p->wake_pending)
    return;
  p->wake_pending = 1;
  (void)!write(p->wake[1], "", 1);
}

/* --- Worker slots ------------------------------------------------------------ */

static int ctl_send(fp_pool *p, uint32_t op, unsigned slot, pid_t pid,
                    int value)
{
  if (p->ctl_fd < 0)
    return FP_EBROKEN;
  fp__ctl m = {.op = op, .slot = slot, .pid = pid, .value = value};
  return fp__ctl_send(p->ctl_fd, &m);
}

/*
 * Asks the fork server to kill the slot's worker and stops writing to it.
 * err and msg, when given, become the failure of the task it was running.
 */
static void slot_kill(fp_pool *p, unsigned i, int err, const char *msg)
{
  fp__slot *s = &p->slots[i];
  if (err != 0 && s->fail_err == 0) {
    s->fail_err = err;
    snprintf(s->fail_msg, sizeof s->fail_msg, "%s", msg);
  }
  if (!s->killed && s->pid > 0)
    (void)ctl_send(p, FP__CTL_KILL, i, s->pid, SIGKILL);
  s->killed = 1;
  slot_close_fd(p, s, &s->in_fd);
  if (err == FP_EPROTO)
    slot_close_fd(p, s, &s->out_fd); /* what follows garbage is garbage */
  s->send = NULL;
  if (s->state == SLOT_LIVE)
    s->state = SLOT_DYING;
}

static void spawn(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  memset(s, 0, sizeof *s);
  s->in_fd = s->out_fd = -1;
  fp__reader_init(&s->rd);
  s->state = SLOT_SPAWNING;
  if (ctl_send(p, FP__CTL_SPAWN, i, 0, 0) != 0)
    s->state = SLOT_OFF;
}

static void fail_list(fp_pool *p, fp_future **head, fp_future **tail, int err,
                      const char *msg)
{
  while (*head) {
    fp_future *f = *head;
    list_unlink(head, tail, f);
    fail(p, f, err, msg);
  }
}

/*
 * Marks the pool broken: every task not done fails with FP_EBROKEN and the
 * reason, submits are refused, and workers are let go.  err is what a
 * fp_pool_create in progress returns.
 */
static void pool_break(fp_pool *p, int err, const char *fmt, ...)
    FP_PRINTF(3, 4);
static void pool_break(fp_pool *p, int err, const char *fmt, ...)
{
  if (p->err != 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->err_msg, sizeof p->err_msg, fmt, ap);
  va_end(ap);
  p->err = err;
  p->closed = 1;
  p->stopping = 1;
  fp__log(p, FP_LOG_ERROR, "pool broken: %s", p->err_msg);
  char msg[300];
  snprintf(msg, sizeof msg, "pool broken: %s", p->err_msg);
  fail_list(p, &p->qhead, &p->qtail, FP_EBROKEN, msg);
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    s->send = NULL;
    s->inflight = 0;
    fail_list(p, &s->head, &s->tail, FP_EBROKEN, msg);
    slot_close_fd(p, s, &s->in_fd); /* a worker exits at end of file */
  }
}

/* Puts a dead worker's unstarted tasks back at the front of the queue. */
static void requeue(fp_pool *p, fp__slot *s)
{
  while (s->tail) {
    fp_future *f = s->tail;
    list_unlink(&s->head, &s->tail, f);
    f->state = FP_PENDING;
    f->slot = -1;
    f->next = p->qhead;
    f->prev = NULL;
    if (p->qhead)
      p->qhead->prev = f;
    else
      p->qtail = f;
    p->qhead = f;
  }
  s->send = NULL;
  s->inflight = 0;
}

/*
 * Records a restart; 1 if it makes more than restart_limit within the window.
 * The ring holds the last limit+1 restart times; after this one is written,
 * the next slot holds the oldest of them.
 */
static int crash_loop(fp_pool *p)
{
  unsigned limit = p->opts.restart_limit;
  if (limit == 0)
    return 0;
  unsigned n = limit + 1;
  int64_t now = fp__now_ms();
  p->restarts[p->nrestarts % n] = now;
  p->nrestarts++;
  int64_t oldest = p->restarts[p->nrestarts % n];
  return p->nrestarts >= n &&
         now - oldest < (int64_t)p->opts.restart_window_ms;
}

static void describe_exit(char *buf, size_t len, pid_t pid, int status)
{
  if (WIFSIGNALED(status))
    snprintf(buf, len, "worker %d was killed by signal %d (%s)", (int)pid,
             WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    snprintf(buf, len, "worker %d exited with status %d", (int)pid,
             WEXITSTATUS(status));
}

static void handle_readable(fp_pool *p, unsigned i);

/* The fork server reaped the slot's worker. */
static void slot_exited(fp_pool *p, unsigned i, pid_t pid, int status)
{
  fp__slot *s = &p->slots[i];
  if (s->pid != pid || s->state == SLOT_OFF || s->state == SLOT_SPAWNING)
    return;
  if (s->out_fd >= 0)
    handle_readable(p, i); /* answers it wrote before it died still count */
  slot_close_fd(p, s, &s->in_fd);
  slot_close_fd(p, s, &s->out_fd);
  fp__reader_free(&s->rd);

  char why[200];
  describe_exit(why, sizeof why, pid, status);
  int expected = p->stopping && !s->killed && s->head == NULL &&
                 WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!expected)
    fp__log(p, FP_LOG_WARN, "%s", why);
  if (s->head != NULL) {
    fp_future *f = s->head;
    list_unlink(&s->head, &s->tail, f);
    s->inflight--;
    if (s->fail_err != 0)
      fail(p, f, s->fail_err, s->fail_msg);
    else
      fail(p, f, FP_EWORKER, why);
  }
  requeue(p, s);
  s->state = SLOT_OFF;
  s->pid = 0;
  if (p->stopping)
    return;
  if (crash_loop(p)) {
    pool_break(p, FP_EBROKEN,
               "crash loop: more than %u worker restarts within %u ms (last: "
               "%s)",
               p->opts.restart_limit, p->opts.restart_window_ms, why);
    return;
  }
  spawn(p, i);
}

static void slot_spawned(fp_pool *p, const fp__ctl *m, int fds[2])
{
  fp__slot *s = &p->slots[m->slot];
  if (s->state != SLOT_SPAWNING) {
    if (fds[0] >= 0) {
      close(fds[0]);
      close(fds[1]);
    }
    return;
  }
  s->pid = m->pid;
  s->state = SLOT_LIVE;
  if (fds[0] < 0) {
    /* The kernel dropped the descriptors: we are out of them. */
    slot_kill(p, m->slot, 0, NULL);
    pool_break(p, FP_EMFILE, "could not receive worker %d's pipes (too many "
               "open files)", (int)m->pid);
    return;
  }
  s->in_fd = fds[0];
  s->out_fd = fds[1];
  if (fp__set_nonblock(s->in_fd) != 0 || fp__set_nonblock(s->out_fd) != 0)
    slot_kill(p, m->slot, 0, NULL);
  if (p->stopping)
    slot_close_fd(p, s, &s->in_fd);
}

/* Reads every message the fork server has sent. */
static void handle_ctl(fp_pool *p)
{
  for (;;) {
    fp__ctl m;
    int fds[2];
    int rc = fp__ctl_recv(p->ctl_fd, &m, fds);
    if (rc == 0)
      return;
    if (rc < 0 || rc == FP__IO_EOF) {
      close(p->ctl_fd);
      p->ctl_fd = -1;
      pool_break(p, FP_EBROKEN, "the fork server (pid %d) died",
                 (int)p->fs_pid);
      for (unsigned i = 0; i < p->nslots; i++) {
        fp__slot *s = &p->slots[i];
        /* Its workers die with it (PR_SET_PDEATHSIG and end of file). */
        slot_close_fd(p, s, &s->out_fd);
        fp__reader_free(&s->rd);
        s->state = SLOT_OFF;
      }
      return;
    }
    if (m.slot >= p->nslots) {
      if (fds[0] >= 0) {
        close(fds[0]);
        close(fds[1]);
      }
      continue;
    }
    if (m.op == FP__CTL_SPAWNED) {
      slot_spawned(p, &m, fds);
    } else if (m.op == FP__CTL_SPAWN_FAILED) {
      p->slots[m.slot].state = SLOT_OFF;
      pool_break(p, m.value, "could not start a worker: %s",
                 fp_strerror(m.value));
    } else if (m.op == FP__CTL_EXITED) {
      slot_exited(p, m.slot, m.pid, m.value);
    }
  }
}

/* --- Results ----------------------------------------------------------------- */

/* A RESULT frame from slot i; takes body. */
static void handle_frame(fp_pool *p, unsigned i, char *body, size_t len)
{
  fp__slot *s = &p->slots[i];
  uint64_t id;
  int code;
  size_t off;
  fp_future *f = s->head;
  if (fp__decode_result_head(body, len, &id, &code, &off) != 0 || f == NULL ||
      f->id != id || f == s->send) {
    free(body);
    slot_kill(p, i, FP_EPROTO, "protocol error: the worker sent a message "
              "that is not a result for its task");
    return;
  }
  list_unlink(&s->head, &s->tail, f);
  s->inflight--;
  if (code == 0) {
    fp__future_finish(f, body, off, len);
  } else {
    msgpack_zone z;
    msgpack_object kind, msg;
    int ok = msgpack_zone_init(&z, 64) &&
             msgpack_unpack(body, len, &off, &z, &kind) > 0 &&
             msgpack_unpack(body, len, &off, &z, &msg) > 0 &&
             kind.type == MSGPACK_OBJECT_STR && msg.type == MSGPACK_OBJECT_STR;
    if (ok)
      fp__future_fail(f, code, "%.*s: %.*s", (int)kind.via.str.size,
                      kind.via.str.ptr, (int)msg.via.str.size,
                      msg.via.str.ptr);
    else
      fp__future_fail(f, FP_EPROTO, "protocol error: malformed failure");
    msgpack_zone_destroy(&z);
    free(body);
  }
  done(p, f);
}

static void handle_readable(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  while (s->out_fd >= 0) {
    char *body;
    size_t len;
    int rc = fp__reader_next(&s->rd, s->out_fd, p->opts.max_message, &body,
                             &len);
    if (rc == FP__IO_FRAME) {
      handle_frame(p, i, body, len);
    } else if (rc == FP__IO_AGAIN) {
      return;
    } else if (rc == FP__IO_EOF) {
      /* It closed its end: dead or dying.  The EXITED report says which. */
      slot_close_fd(p, s, &s->out_fd);
      slot_kill(p, i, 0, NULL);
    } else {
      slot_kill(p, i, rc == FP_ENOMEM ? FP_ENOMEM : FP_EPROTO,
                rc == FP_ENOMEM ? "out of memory reading a result"
                                : "protocol error: the worker sent a frame "
                                  "longer than max_message");
    }
  }
}

/* --- Sending ------------------------------------------------------------------- */

/* Writes what the slot's pipe takes; 1 if bytes are still waiting. */
static int flush(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  while (s->send != NULL && s->in_fd >= 0) {
    struct iovec iov[FP__IOV_BATCH];
    int n = 0;
    size_t off = s->send_off;
    for (fp_future *f = s->send; f && n < FP__IOV_BATCH; f = f->next) {
      iov[n].iov_base = f->frame + off;
      iov[n].iov_len = f->frame_len - off;
      off = 0;
      n++;
    }
    ssize_t w = fp__writev_nosigpipe(s->in_fd, iov, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 1;
      slot_kill(p, i, 0, NULL); /* EPIPE: it is gone */
      return 0;
    }
    size_t left = (size_t)w;
    while (left > 0) {
      size_t rest = s->send->frame_len - s->send_off;
      if (left < rest) {
        s->send_off += left;
        break;
      }
      left -= rest;
      s->send_off = 0;
      s->send = s->send->next;
    }
  }
  return 0;
}

/* Hands queued tasks to the least busy workers and writes them. */
static void schedule(fp_pool *p)
{
  unsigned max = p->opts.max_inflight;
  while (p->qhead != NULL) {
    int best = -1;
    /* Ties go round-robin, so idle workers take turns. */
    for (unsigned k = 0; k < p->nslots; k++) {
      unsigned i = (p->rr + k) % p->nslots;
      fp__slot *s = &p->slots[i];
      if (s->state == SLOT_LIVE && s->in_fd >= 0 && s->inflight < max &&
          (best < 0 || s->inflight < p->slots[best].inflight))
        best = (int)i;
    }
    if (best < 0)
      break;
    fp__slot *s = &p->slots[best];
    p->rr = (unsigned)best + 1;
    fp_future *f = p->qhead;
    list_unlink(&p->qhead, &p->qtail, f);
    list_push(&s->head, &s->tail, f);
    f->state = FP_RUNNING;
    f->slot = best;
    s->inflight++;
    if (s->send == NULL) {
      s->send = f;
      s->send_off = 0;
    }
  }
  for (unsigned i = 0; i < p->nslots; i++)
    if (p->slots[i].send != NULL)
      flush(p, i);
}

/* --- The poll loop ---------------------------------------------------------------- */

static void slot_close_fd(fp_pool *p, fp__slot *s, int *fd)
{
  if (*fd < 0)
    return;
#ifdef HAVE_SYS_EPOLL_H
  if (p->epfd >= 0 && ((fd == &s->in_fd && s->ep_in) ||
                       (fd == &s->out_fd && s->ep_out)))
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, *fd, NULL);
#endif
  if (fd == &s->in_fd)
    s->ep_in = 0;
  else
    s->ep_out = 0;
  close(*fd);
  *fd = -1;
}

/* Keeps the epoll set behind fp_pool_fd equal to what poll() would watch. */
static void ep_sync(fp_pool *p)
{
#ifdef HAVE_SYS_EPOLL_H
  if (p->epfd < 0)
    return;
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    uint32_t want_out = s->out_fd >= 0 ? EPOLLIN : 0;
    uint32_t want_in = s->in_fd >= 0 && s->send ? EPOLLOUT : 0;
    struct epoll_event ev = {.events = want_out, .data.u32 = i};
    if (want_out != s->ep_out)
      epoll_ctl(p->epfd, s->ep_out ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s->out_fd,
                &ev);
    s->ep_out = want_out;
    ev.events = want_in;
    if (want_in != s->ep_in && want_in)
      epoll_ctl(p->epfd, s->ep_in ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s->in_fd,
                &ev);
    else if (want_in != s->ep_in)
      epoll_ctl(p->epfd, EPOLL_CTL_DEL, s->in_fd, NULL);
    s->ep_in = want_in;
  }
#else
  (void)p;
#endif
}

static int build_pollset(fp_pool *p)
{
  int n = 0;
  if (p->ctl_fd >= 0) {
    p->pfd[n] = (struct pollfd){.fd = p->ctl_fd, .events = POLLIN};
    p->pfd_who[n++] = -1;
  }
  p->pfd[n] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
  p->pfd_who[n++] = -2;
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    if (s->out_fd >= 0) {
      p->pfd[n] = (struct pollfd){.fd = s->out_fd, .events = POLLIN};
      p->pfd_who[n++] = (int)i * 2;
    }
    if (s->in_fd >= 0 && s->send != NULL) {
      p->pfd[n] = (struct pollfd){.fd = s->in_fd, .events = POLLOUT};
      p->pfd_who[n++] = (int)i * 2 + 1;
    }
  }
  return n;
}

/*
 * One dispatcher pass: poll for up to timeout_ms without the lock, then
 * handle what is ready.  Slots are handled before the control socket, whose
 * messages may close and reopen their descriptors.  Called with the lock.
 */
static int poll_once(fp_pool *p, int timeout_ms)
{
  int n = build_pollset(p);
  p->polling = 1;
  fp__pool_unlock(p);
  int r = poll(p->pfd, (nfds_t)n, timeout_ms);
  int saved = errno;
  fp__pool_lock(p);
  p->polling = 0;
  if (r < 0 && saved != EINTR)
    return -saved;
  int ctl_ready = 0;
  for (int k = 0; r > 0 && k < n; k++) {
    short ev = p->pfd[k].revents;
    int who = p->pfd_who[k];
    if (ev == 0)
      continue;
    if (who == -1) {
      ctl_ready = 1;
    } else if (who == -2) {
      char drain[64];
      while (read(p->wake[0], drain, sizeof drain) > 0)
        ;
      p->wake_pending = 0;
    } else if (who % 2 == 0) {
      if (p->slots[who / 2].out_fd == p->pfd[k].fd)
        handle_readable(p, (unsigned)who / 2);
    } else if (p->slots[who / 2].in_fd == p->pfd[k].fd) {
      if (ev & (POLLERR | POLLHUP))
        slot_kill(p, (unsigned)who / 2, 0, NULL);
      else
        flush(p, (unsigned)who / 2);
    }
  }
  if (ctl_ready && p->ctl_fd >= 0)
    handle_ctl(p);
  schedule(p);
  ep_sync(p);
  pthread_cond_broadcast(&p->cond);
  return 0;
}

static void cond_wait_until(fp_pool *p, int64_t deadline)
{
  if (deadline < 0) {
    pthread_cond_wait(&p->cond, &p->lock);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t left = deadline - fp__now_ms();
  if (left < 0)
    left = 0;
  ts.tv_sec += left / 1000;
  ts.tv_nsec += (left % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_cond_timedwait(&p->cond, &p->lock, &ts);
}

typedef int (*pool_pred)(fp_pool *p, void *arg);

/*
 * Runs the dispatcher, or waits for the thread that runs it, until pred is
 * true (0) or the deadline passes (FP_ETIMEDOUT).  A deadline in the past
 * still makes one pass without waiting.  Called with the lock held.
 */
static int run_until(fp_pool *p, pool_pred pred, void *arg, int64_t deadline)
{
  if (p->owner != getpid())
    return FP_EINVAL; /* a copy of the pool in a forked child */
  for (;;) {
    if (pred(p, arg))
      return 0;
    int ms = fp__remaining_ms(deadline);
    if (!p->polling) {
      int rc = poll_once(p, ms);
      if (rc != 0)
        return rc;
      if (pred(p, arg))
        return 0;
    } else if (ms != 0) {
      cond_wait_until(p, deadline);
      continue;
    }
    if (ms == 0)
      return FP_ETIMEDOUT;
  }
}

static int future_done(fp_pool *p, void *arg)
{
  (void)p;
  return atomic_load_explicit(&((fp_future *)arg)->done,
                              memory_order_acquire);
}

int fp__pool_wait_future(fp_pool *p, fp_future *f, int64_t deadline)
{
  return run_until(p, future_done, f, deadline);
}

/* --- Options and creation --------------------------------------------------------- */

static int options_fill(fp_pool_options *o, const fp_pool_options *in)
{
  fp_pool_options def = FP_POOL_OPTIONS_INIT;
  *o = def;
  if (in != NULL) {
    if (in->size < offsetof(fp_pool_options, log_arg) + sizeof(void *) ||
        in->size > sizeof *o)
      return FP_EINVAL;
    memcpy(o, in, in->size);
  }
  if (o->workers == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o->workers = n > 0 ? (unsigned)n : 1;
  }
  if (o->max_message == 0)
    o->max_message = FP__DEFAULT_MAX_MESSAGE;
  if (o->max_inflight == 0)
    o->max_inflight = 2;
  if (o->workers > FP__MAX_WORKERS || o->max_message < 64 ||
      o->max_message > UINT32_MAX || o->max_inflight > 1024 ||
      o->restart_limit > 100000 ||
      (o->restart_limit > 0 && o->restart_window_ms == 0))
    return FP_EINVAL;
  return 0;
}

static int all_started(fp_pool *p, void *arg)
{
  (void)arg;
  if (p->err != 0)
    return 1;
  for (unsigned i = 0; i < p->nslots; i++)
    if (p->slots[i].state != SLOT_LIVE)
      return 0;
  return 1;
}

static void pool_free(fp_pool *p);

FP_EXTERN int fp_pool_create(fp_pool **out, const fp_pool_options *opts)
{
  if (out == NULL)
    return FP_EINVAL;
  *out = NULL;
  fp_pool_options o;
  int rc = options_fill(&o, opts);
  if (rc != 0)
    return rc;

  fp_pool *p = calloc(1, sizeof *p);
  if (p == NULL)
    return FP_ENOMEM;
  p->opts = o;
  p->ctl_fd = p->epfd = p->wake[0] = p->wake[1] = -1;
  p->owner = getpid();
  p->nslots = o.workers;
  atomic_init(&p->next_id, 1);
  pthread_mutex_init(&p->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cond, &ca);
  pthread_condattr_destroy(&ca);

  p->slots = calloc(p->nslots, sizeof *p->slots);
  p->pfd = calloc(2 + 2 * p->nslots, sizeof *p->pfd);
  p->pfd_who = calloc(2 + 2 * p->nslots, sizeof *p->pfd_who);
  p->restarts = calloc(o.restart_limit + 1, sizeof *p->restarts);
  if (!p->slots || !p->pfd || !p->pfd_who || !p->restarts) {
    rc = FP_ENOMEM;
    goto fail;
  }
  for (unsigned i = 0; i < p->nslots; i++)
    p->slots[i].in_fd = p->slots[i].out_fd = -1;
  if ((rc = fp__tasks_build(&p->tasks, o.tasks)) != 0 ||
      (rc = fp__pipe(p->wake)) != 0 ||
      (rc = fp__set_nonblock(p->wake[0])) != 0 ||
      (rc = fp__set_nonblock(p->wake[1])) != 0)
    goto fail;
  p->wcfg.tasks = &p->tasks;
  p->wcfg.max_message = o.max_message;
  p->wcfg.nslots = p->nslots;
  if ((rc = fp__forkserver_start(&p->wcfg, &p->ctl_fd, &p->fs_pid)) != 0)
    goto fail;

  fp__pool_lock(p);
  for (unsigned i = 0; i < p->nslots; i++)
    spawn(p, i);
  rc = run_until(p, all_started, NULL, -1);
  if (rc == 0)
    rc = p->err;
  fp__pool_unlock(p);
  if (rc != 0)
    goto fail;
  *out = p;
  return 0;
fail:
  pool_free(p);
  return rc;
}

/* --- Submitting --------------------------------------------------------------------- */

FP_EXTERN int fp_submit(fp_pool *p, const char *name, const void *args,
                        size_t len, fp_future **out)
{
  if (out != NULL)
    *out = NULL;
  if (p == NULL || out == NULL || !fp__task_name_ok(name) ||
      (args == NULL && len > 0))
    return FP_EINVAL;
  size_t nobj;
  int rc = fp__count_objects(args, len, &nobj);
  if (rc != 0)
    return rc;
  if (nobj != 1)
    return FP_EINVAL;
  if (len > p->opts.max_message - FP__MAX_NAME - 32)
    return FP_EMSGSIZE;
  if (fp__tasks_find(&p->tasks, name, strlen(name)) == NULL)
    return FP_ENOTASK;

  fp_future *f = fp__future_new(p);
  if (f == NULL)
    return FP_ENOMEM;
  f->id = atomic_fetch_add(&p->next_id, 1);
  rc = fp__encode_task(f->id, name, args, len, &f->frame, &f->frame_len);
  if (rc != 0) {
    free(f);
    return rc;
  }

  fp__pool_lock(p);
  if (p->owner != getpid())
    rc = FP_EINVAL;
  else if (p->err != 0)
    rc = FP_EBROKEN;
  else if (p->closed)
    rc = FP_ESHUTDOWN;
  if (rc != 0) {
    fp__pool_unlock(p);
    free(f->frame);
    free(f);
    return rc;
  }
  list_push(&p->qhead, &p->qtail, f);
  schedule(p);
  /* Pipes full: let the workers' answers out so they can go on. */
  int waiting = p->qhead != NULL;
  for (unsigned i = 0; !waiting && i < p->nslots; i++)
    waiting = p->slots[i].send != NULL;
  if (waiting && !p->polling)
    (void)poll_once(p, 0);
  else if (waiting)
    wake_poller(p);
  ep_sync(p);
  fp__pool_unlock(p);
  *out = f;
  return 0;
}

FP_EXTERN int fp_submitf(fp_pool *p, const char *name, fp_future **out,
                         const char *fmt, ...)
{
  if (out != NULL)
    *out = NULL;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  va_list ap;
  va_start(ap, fmt);
  int rc = fp_vpack(&pk, fmt, ap);
  va_end(ap);
  if (rc == 0)
    rc = fp_submit(p, name, sb.data, sb.size, out);
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

int fp__pool_cancel(fp_pool *p, fp_future *f)
{
  if (atomic_load(&f->done))
    return f->state == FP_CANCELLED ? 0 : FP_EBUSY;
  if (f->state != FP_PENDING)
    return FP_EBUSY;
  list_unlink(&p->qhead, &p->qtail, f);
  fail(p, f, FP_ECANCELLED, "cancelled");
  pthread_cond_broadcast(&p->cond);
  return 0;
}

/* --- Dispatching and shutting down --------------------------------------------------- */

FP_EXTERN int fp_pool_dispatch(fp_pool *p, int timeout_ms)
{
  int64_t deadline;
  if (p == NULL || fp__deadline(timeout_ms, &deadline) != 0)
    return FP_EINVAL;
  fp__pool_lock(p);
  uint64_t before = p->ndone;
  int rc = 0;
  if (p->owner != getpid())
    rc = FP_EINVAL;
  else if (!p->polling)
    rc = poll_once(p, fp__remaining_ms(deadline));
  else if (timeout_ms != 0)
    cond_wait_until(p, deadline);
  if (rc == 0)
    rc = (int)(p->ndone - before);
  fp__pool_unlock(p);
  return rc;
}

FP_EXTERN int fp_pool_fd(fp_pool *p)
{
  if (p == NULL)
    return FP_EINVAL;
#ifdef HAVE_SYS_EPOLL_H
  fp__pool_lock(p);
  int rc = p->epfd;
  if (rc < 0) {
    rc = epoll_create1(EPOLL_CLOEXEC);
    if (rc < 0) {
      rc = -errno;
    } else {
      struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
      p->epfd = rc;
      epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wake[0], &ev);
      if (p->ctl_fd >= 0)
        epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->ctl_fd, &ev);
      ep_sync(p);
    }
  }
  fp__pool_unlock(p);
  return rc;
#else
  return FP_ENOSYS;
#endif
}

static int nothing_left(fp_pool *p, void *arg)
{
  (void)arg;
  if (p->qhead != NULL)
    return 0;
  for (unsigned i = 0; i < p->nslots; i++)
    if (p->slots[i].head != NULL)
      return 0;
  return 1;
}

static int all_exited(fp_pool *p, void *arg)
{
  (void)arg;
  if (p->ctl_fd < 0)
    return 1;
  for (unsigned i = 0; i < p->nslots; i++)
    if (p->slots[i].state != SLOT_OFF)
      return 0;
  return 1;
}

/*
 * Lets the fork server go: at end of file it kills and reaps what is left
 * and exits; its exit closes its end, which is the end of file we wait for.
 */
static void forkserver_stop(fp_pool *p)
{
  if (p->ctl_fd < 0)
    return;
  shutdown(p->ctl_fd, SHUT_WR);
  for (;;) {
    fp__ctl m;
    int fds[2];
    struct pollfd pf = {.fd = p->ctl_fd, .events = POLLIN};
    if (poll(&pf, 1, -1) < 0 && errno != EINTR)
      break;
    int rc = fp__ctl_recv(p->ctl_fd, &m, fds);
    if (fds[0] >= 0) {
      close(fds[0]);
      close(fds[1]);
    }
    if (rc < 0 || rc == FP__IO_EOF)
      break;
  }
  close(p->ctl_fd);
  p->ctl_fd = -1;
}

static void cancel_queued(fp_pool *p)
{
  fail_list(p, &p->qhead, &p->qtail, FP_ECANCELLED, "cancelled");
  pthread_cond_broadcast(&p->cond);
}

FP_EXTERN int fp_pool_shutdown(fp_pool *p, unsigned flags)
{
  if (p == NULL ||
      (flags & ~(unsigned)(FP_SHUTDOWN_WAIT | FP_SHUTDOWN_CANCEL_PENDING)))
    return FP_EINVAL;
  fp__pool_lock(p);
  int rc = p->owner == getpid() ? 0 : FP_EINVAL;
  if (rc == 0) {
    p->closed = 1;
    if (flags & FP_SHUTDOWN_CANCEL_PENDING)
      cancel_queued(p);
  }
  if (rc == 0 && (flags & FP_SHUTDOWN_WAIT)) {
    rc = run_until(p, nothing_left, NULL, -1);
    p->stopping = 1;
    for (unsigned i = 0; i < p->nslots; i++)
      slot_close_fd(p, &p->slots[i], &p->slots[i].in_fd);
    wake_poller(p);
    if (rc == 0)
      rc = run_until(p, all_exited, NULL, -1);
    /* Another thread may still be in poll() on the control socket. */
    while (p->polling) {
      wake_poller(p);
      pthread_cond_wait(&p->cond, &p->lock);
    }
    forkserver_stop(p);
  }
  fp__pool_unlock(p);
  return rc;
}

static void pool_free(fp_pool *p)
{
  if (p->ctl_fd >= 0) {
    fp__pool_lock(p);
    pool_break(p, FP_EBROKEN, "the pool was destroyed");
    forkserver_stop(p);
    fp__pool_unlock(p);
  }
  /* Whatever is still listed was never handed out: a failed create. */
  for (unsigned i = 0; p->slots && i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    slot_close_fd(p, s, &s->in_fd);
    slot_close_fd(p, s, &s->out_fd);
    fp__reader_free(&s->rd);
  }
  if (p->epfd >= 0)
    close(p->epfd);
  if (p->wake[0] >= 0)
    close(p->wake[0]);
  if (p->wake[1] >= 0)
    close(p->wake[1]);
  fp__tasks_free(&p->tasks);
  free(p->slots);
  free(p->pfd);
  free(p->pfd_who);
  free(p->restarts);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->cond);
  free(p);
}

/* In a forked child the pool is a copy: close our descriptors, free memory,
 * and tell no process anything. */
static void pool_forget(fp_pool *p)
{
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    s->ep_in = s->ep_out = 0;
    slot_close_fd(p, s, &s->in_fd);
    slot_close_fd(p, s, &s->out_fd);
  }
  if (p->ctl_fd >= 0)
    close(p->ctl_fd);
  p->ctl_fd = -1;
}

FP_EXTERN void fp_pool_destroy(fp_pool *p)
{
  if (p == NULL)
    return;
  if (p->owner != getpid())
    pool_forget(p);
  else
    (void)fp_pool_shutdown(p, FP_SHUTDOWN_WAIT | FP_SHUTDOWN_CANCEL_PENDING);
  pool_free(p);
}

/*
 * The thread transport (FP_MODE_THREADS): each slot's worker is a thread of
 * the caller's process running the worker's own code (fp__local_run), so
 * tasks, arguments and results are the same msgpack as with processes.  A
 * slot has an inbox of TASK bodies and an outbox of RESULT bodies, each
 * guarded by the slot's own mutex (never the pool's: a worker thread never
 * waits for the dispatcher), and a pipe the thread writes a byte to when
 * its outbox stops being empty: the dispatcher's poll() wakes on it as on a
 * worker's result pipe, and hands each body to fp__dispatch_frame under the
 * pool lock.  A task frame that lives in its future (a small one) is lent
 * to the thread, which holds a reference to the future until the job comes
 * back: the pool may let go of the future (a broken pool fails what
 * workers hold) while its thread still reads the arguments, and the
 * reference keeps them.  A larger frame is copied into the inbox.  Jobs are
 * kept for reuse, and a small answer travels in its job: a task costs no
 * malloc here.
 *
 * Nothing can kill a thread, so a deadline or FP_CANCEL_RUNNING asks: the
 * dispatcher raises the thread's stop flag (fp__stop, read by
 * fp_call_should_stop), and at the end of the grace gives the task up (its
 * future fails, its answer will be dropped; supervise.c).  The thread goes
 * on with it meanwhile, so it is handed nothing more, and what it was
 * handed and has not started goes back to the pool's queue (give_up).
 *
 * Each thread reads its own CPU time (getrusage RUSAGE_THREAD) after init,
 * after a task as a worker process stamps its page (worker.c), and as it
 * exits, into its channel, where fp_pool_stats_get reads it.  The channel
 * lives until fp_pool_destroy, so a thread that exited stays counted.
 */
#include "forkpool-private.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

#define FP__TJOB_SMALL 96 /* answers this small travel in their job */
#define FP__TJOB_KEEP 512 /* jobs kept per slot for reuse */
#ifndef FP__THREAD_BATCH
#define FP__THREAD_BATCH 128 /* tasks a submit lets gather for a busy
                                thread: one wake of a thread costs the
                                dispatcher more than a task */
#endif

typedef struct tjob {
  struct tjob *next;
  const char *body;      /* TASK or RESULT body: own, small or the lent
                            future's frame; NULL: the thread could not run
                            the task (err says why) */
  size_t len;
  char *own;             /* a malloc'd body, owned; NULL: none */
  fp_future *lent;       /* the future whose frame body is, referenced
                            until the job comes back; NULL: none */
  int err;
  char small[FP__TJOB_SMALL];
} tjob;

typedef struct thread_chan {
  pthread_mutex_t mu;    /* guards what follows, up to fd */
  pthread_cond_t cv;     /* the inbox has a job, or stop was set */
  tjob *in_head, *in_tail; /* TASK bodies, oldest first */
  tjob *out_head, *out_tail; /* RESULT bodies, oldest first */
  int stop;              /* no more tasks: exit once the inbox is empty */
  int drop;              /* exit after the running task, inbox unrun */
  int signalled;         /* a byte is in fd[], or on its way */
  int fd[2];             /* the thread -> the dispatcher's poll() */
  uint32_t ep;           /* fd[0] is in the pool's epoll set */
  pthread_t tid;
  int started;           /* tid is a thread to join */
  tjob *first;           /* for the READY, made before the thread: its
                            answer must come, or the pool waits for ever */
  unsigned owed;         /* bytes of fd[] whose outbox the dispatcher
                            took, not read yet: the dispatcher's */
  tjob *spare;           /* jobs for reuse: the dispatcher's alone */
  unsigned nspare;
  const fp__worker_cfg *cfg;
  fp__stop asked;        /* the dispatcher raises, the thread reads */
  int stop_sent;         /* the dispatcher's: sending was closed */
  uint64_t given_up;     /* the dispatcher's: the task the pool gave up on,
                            which the thread still runs; 0: none.  The slot
                            takes no work until it answers */
  atomic_int exited;     /* the thread is about to return: a shutdown's
                            wait for the workers is over for it */
  _Atomic uint64_t user_us; /* the thread's CPU time as of its last */
  _Atomic uint64_t sys_us;  /*   reading: the thread writes, stats read */
  int64_t cpu_read;      /* the thread's: when it last read it (ns) */
} thread_chan;

/* What a job holds: its malloc'd body, its future's reference.  The
 * dispatcher's: a future is released under the pool lock. */
static void job_clear(tjob *j)
{
  free(j->own);
  j->own = NULL;
  j->body = NULL;
  if (j->lent != NULL)
    fp_future_release(j->lent);
  j->lent = NULL;
}

static void jobs_free(tjob *j)
{
  while (j != NULL) {
    tjob *next = j->next;
    job_clear(j);
    free(j);
    j = next;
  }
}

/* A job emptied, kept for the next task or freed. */
static void job_recycle(thread_chan *c, tjob *j)
{
  job_clear(j);
  if (c->nspare >= FP__TJOB_KEEP) {
    free(j);
    return;
  }
  j->next = c->spare;
  c->spare = j;
  c->nspare++;
}

static void push(tjob **head, tjob **tail, tjob *j)
{
  j->next = NULL;
  if (*tail)
    (*tail)->next = j;
  else
    *head = j;
  *tail = j;
}

/*
 * Worker: posts done's answer (NULL: none) and takes the next TASK body,
 * in one hold of the lock; NULL when it is to exit.  A thread that
 * finishes a task goes on with the next one in its inbox at once.  The
 * pipe gets a byte only when the outbox stops being empty (the dispatcher
 * takes all), written after the lock is let go: the write wakes the
 * dispatcher, which would otherwise wake only to wait for the lock.
 */
static tjob *post_take(thread_chan *c, tjob *done)
{
  int wake = 0;
  pthread_mutex_lock(&c->mu);
  if (done != NULL) {
    push(&c->out_head, &c->out_tail, done);
    wake = !c->signalled;
    c->signalled = 1;
  }
  if (wake && c->in_head == NULL) {
    /* About to sleep: the byte goes first. */
    pthread_mutex_unlock(&c->mu);
    (void)!write(c->fd[1], "", 1);
    wake = 0;
    pthread_mutex_lock(&c->mu);
  }
  while (c->in_head == NULL && !c->stop && !c->drop)
    pthread_cond_wait(&c->cv, &c->mu);
  tjob *j = c->drop ? NULL : c->in_head;
  if (j != NULL && (c->in_head = j->next) == NULL)
    c->in_tail = NULL;
  pthread_mutex_unlock(&c->mu);
  if (wake)
    (void)!write(c->fd[1], "", 1);
  return j;
}

/*
 * Worker: its CPU time into the channel, if always or if FP__CPU_STAMP_NS
 * have passed since it last did (a clock read per task, a system call at
 * most once a millisecond).  user and sys are two stores: a reader between
 * them pairs a reading with the one before, each as true as it was.
 */
static void note_cpu(thread_chan *c, int always)
{
  int64_t now = fp__now_ns();
  uint64_t user, sys;
  if ((!always && now - c->cpu_read < FP__CPU_STAMP_NS) ||
      fp__thread_cpu(&user, &sys) != 0)
    return;
  c->cpu_read = now;
  atomic_store_explicit(&c->user_us, user, memory_order_relaxed);
  atomic_store_explicit(&c->sys_us, sys, memory_order_relaxed);
}

/* The thread's last act: it has exited for fp_pool_join and shutdown,
 * and the dispatcher, maybe in poll() for that, is woken as by an answer
 * (the byte is counted as one, and read). */
static void note_exit(thread_chan *c)
{
  note_cpu(c, 1); /* its final figures */
  pthread_mutex_lock(&c->mu);
  atomic_store(&c->exited, 1);
  int wake = !c->signalled;
  c->signalled = 1;
  pthread_mutex_unlock(&c->mu);
  if (wake)
    (void)!write(c->fd[1], "", 1);
}

static void *thread_main(void *arg)
{
  thread_chan *c = arg;
  fp__local_worker w;
  tjob *j = c->first;
  int rc = fp__local_init(&w);
  w.stop = &c->asked;
  c->first = NULL;
  /* Init runs here, so its state is this thread's. */
  j->err = rc != 0 ? rc : fp__local_ready(&w, c->cfg, &j->own, &j->len);
  j->body = j->own;
  note_cpu(c, 1); /* before READY: init's CPU time shows at once */
  if (rc != 0) {
    pthread_mutex_lock(&c->mu);
    push(&c->out_head, &c->out_tail, j);
    c->signalled = 1;
    atomic_store(&c->exited, 1);
    pthread_mutex_unlock(&c->mu);
    (void)!write(c->fd[1], "", 1);
    return NULL;
  }
  for (j = post_take(c, j); j != NULL; j = post_take(c, j)) {
    char *out = NULL;
    size_t len = 0;
    j->err = fp__local_run(&w, c->cfg, j->body, j->len, j->small,
                           sizeof j->small, &out, &len);
    /* The TASK body is done with; its future's reference goes back with
     * the job, to be dropped by the dispatcher. */
    free(j->own);
    j->own = out != j->small ? out : NULL;
    j->body = j->err == 0 ? out : NULL;
    j->len = len;
    /* Before the answer: a caller holding a result sees its CPU time. */
    note_cpu(c, 0);
  }
  fp__local_destroy(&w);
  note_exit(c);
  return NULL;
}

/* --- The dispatcher's side ----------------------------------------------- */

static void thread_reset(fp_pool *p, unsigned i)
{
  p->slots[i].local = NULL;
}

static void ep_set(fp_pool *p, thread_chan *c, uint32_t want, unsigned i)
{
#ifdef HAVE_SYS_EPOLL_H
  struct epoll_event ev = {.events = want, .data.u32 = i};
  if (want == c->ep || p->epfd < 0)
    return;
  if (want != 0)
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, c->fd[0], &ev);
  else
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, c->fd[0], NULL);
#else
  (void)p;
  (void)i;
#endif
  c->ep = want;
}

static void chan_free(thread_chan *c)
{
  jobs_free(c->in_head);
  jobs_free(c->out_head);
  jobs_free(c->first); /* the thread never started */
  jobs_free(c->spare);
  for (int k = 0; k < 2; k++)
    if (c->fd[k] >= 0)
      close(c->fd[k]);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

/* Tells the thread to stop: at once (drop) or once its inbox is empty. */
static void chan_stop(thread_chan *c, int drop)
{
  pthread_mutex_lock(&c->mu);
  c->stop = 1;
  c->drop |= drop;
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

/*
 * FP__BOTH waits for the thread: one running a task cannot be interrupted,
 * so fp_pool_destroy returns when that task does.  The thread never takes
 * the pool lock, so waiting with it held cannot deadlock.
 */
static void thread_close(fp_pool *p, unsigned i, int dir)
{
  fp__slot *s = &p->slots[i];
  thread_chan *c = s->local;
  if (dir & FP__SEND)
    s->can_send = 0;
  if (dir & FP__RECV)
    s->can_recv = 0;
  if (c == NULL)
    return;
  if (dir & FP__SEND) {
    c->stop_sent = 1;
    chan_stop(c, dir == FP__BOTH);
  }
  if (dir & FP__RECV)
    ep_set(p, c, 0, i);
  if (dir != FP__BOTH)
    return;
  /* The task it runs, if it polls, returns sooner. */
  atomic_store(&c->asked.all, 1);
  if (c->started)
    pthread_join(c->tid, NULL);
  chan_free(c);
  s->local = NULL;
  fp__local_release(p, i);
}

/* In a forked child there is no thread, and its mutex may be held by one
 * that the fork left behind: close our descriptors, free nothing. */
static void thread_forget(fp_pool *p, unsigned i)
{
  thread_chan *c = p->slots[i].local;
  if (c == NULL)
    return;
  for (int k = 0; k < 2; k++)
    if (c->fd[k] >= 0)
      close(c->fd[k]);
  c->fd[0] = c->fd[1] = -1;
  p->slots[i].local = NULL;
}

/* Starts the slot's thread with every signal blocked: the caller's
 * handlers run in the caller's threads, as they did before the pool. */
static int start_thread(thread_chan *c)
{
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&c->tid, NULL, thread_main, c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  c->started = rc == 0;
  return rc == 0 ? 0 : rc == EAGAIN ? FP_EAGAIN : -rc;
}

static int thread_open(fp_pool *p, unsigned i, int fds[FP__CTL_NFDS])
{
  (void)fds;
  fp__slot *s = &p->slots[i];
  thread_chan *c = calloc(1, sizeof *c);
  if (c == NULL)
    return FP_ENOMEM;
  c->cfg = &p->wcfg;
  c->fd[0] = c->fd[1] = -1;
  c->first = calloc(1, sizeof *c->first);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  s->local = c;
  int rc = c->first != NULL ? fp__pipe(c->fd) : FP_ENOMEM;
  if (rc == 0 && (rc = fp__set_nonblock(c->fd[0])) == 0)
    rc = fp__set_nonblock(c->fd[1]);
  if (rc == 0)
    rc = start_thread(c);
  if (rc == 0)
    s->can_send = s->can_recv = 1;
  return rc;
}

/* A job for the frame of f: lent if it lives in f, else copied. */
static tjob *job_for(thread_chan *c, fp_future *f)
{
  tjob *j = c->spare;
  if (j != NULL) {
    c->spare = j->next;
    c->nspare--;
  } else if ((j = malloc(sizeof *j)) == NULL) {
    return NULL;
  } else {
    j->own = NULL;
    j->lent = NULL;
  }
  j->err = 0;
  j->len = f->frame_len - FP__HDR;
  if (f->frame == f->frame_here) {
    j->lent = fp_future_retain(f);
    j->body = f->frame + FP__HDR;
    return j;
  }
  if ((j->own = malloc(j->len)) == NULL) {
    job_recycle(c, j);
    return NULL;
  }
  memcpy(j->own, f->frame + FP__HDR, j->len);
  j->body = j->own;
  return j;
}

/* Hands the frames from the send cursor on to the inbox. */
static void thread_send(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  thread_chan *c = s->local;
  tjob *head = NULL, *tail = NULL;
  s->blocked = 0;
  if (c == NULL || !s->can_send)
    return;
  for (; s->send != NULL; s->send = s->send->next, s->unsent--) {
    tjob *j = job_for(c, s->send);
    if (j == NULL)
      break; /* the next pass tries again */
    push(&head, &tail, j);
  }
  s->send_off = 0;
  if (head == NULL)
    return;
  pthread_mutex_lock(&c->mu);
  int was_empty = c->in_head == NULL;
  if (c->in_tail)
    c->in_tail->next = head;
  else
    c->in_head = head;
  c->in_tail = tail;
  pthread_mutex_unlock(&c->mu);
  /* After the unlock, so that the thread does not wake to wait for it; a
   * thread with work in its inbox is not waiting. */
  if (was_empty)
    pthread_cond_signal(&c->cv);
}

/* A task the thread could not run (its frame unreadable, or memory): it
 * fails, as with a worker process that exits, and the thread goes on.
 * Before READY it breaks the pool. */
static void job_failed(fp_pool *p, unsigned i, int err)
{
  fp__slot *s = &p->slots[i];
  const char *msg = err == FP_ENOMEM ? "out of memory in a worker thread"
                                     : "protocol error: a worker thread could "
                                       "not read its task";
  if (s->state == SLOT_STARTING)
    fp__pool_break(p, err, "%s", msg);
  else if (s->head != NULL && s->head != s->send)
    fp__slot_pop(p, s, s->head, err, msg);
}

/* Hands every answer in the outbox to the dispatcher. */
static void thread_recv(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  thread_chan *c = s->local;
  if (c == NULL)
    return;
  pthread_mutex_lock(&c->mu);
  tjob *j = c->out_head;
  c->out_head = c->out_tail = NULL;
  c->owed += c->signalled;
  c->signalled = 0;
  pthread_mutex_unlock(&c->mu);
  /* A byte per time the outbox stopped being empty, written after the
   * thread let go of the lock: it may come after this read, and is then
   * read by the next one (one wake for nothing).  Only the bytes of the
   * outboxes taken are read, never a later one's, whose answers would
   * then wait for no wake. */
  char drain[16];
  ssize_t got = c->owed > 0 ? read(c->fd[0], drain, c->owed < sizeof drain
                                                      ? c->owed
                                                      : sizeof drain)
                            : 0;
  if (got > 0)
    c->owed -= (unsigned)got;
  /* The answers read together share one reading of the clock. */
  int took = fp__clock_hold(p);
  while (j != NULL) {
    tjob *next = j->next;
    if (s->can_recv && j->body != NULL) {
      /* A body in the job is lent; a malloc'd one is handed over. */
      fp__dispatch_frame(p, i, j->own, j->body, j->len);
      j->own = NULL;
    } else if (s->can_recv) {
      job_failed(p, i, j->err);
    }
    job_recycle(c, j);
    j = next;
  }
  fp__clock_release(p, took);
  /* The task given up on has answered: the thread takes work again. */
  if (c->given_up != 0 && (s->head == NULL || s->head->id != c->given_up)) {
    c->given_up = 0;
    if (!c->stop_sent && s->state == SLOT_LIVE) {
      s->can_send = 1;
      fp__sched_offer(p, i);
    }
  }
}

static void thread_stop(fp_pool *p, unsigned i, uint64_t id)
{
  thread_chan *c = p->slots[i].local;
  if (c == NULL)
    return;
  if (id == 0)
    atomic_store(&c->asked.all, 1);
  else
    atomic_store(&c->asked.id, id);
}

/*
 * Takes back what the thread was handed and has not started; returns how
 * many.  The slot's list holds, oldest first, what the thread took (runs,
 * or answered unread), what waits in its inbox, and what was never sent.
 * If the thread took none of them, the head had not started either: it
 * goes back with the rest, nothing runs on, and the thread, which will
 * never answer it, takes work again at once.  Otherwise the slot waits for
 * the head's answer (thread_recv).
 */
static unsigned thread_give_up(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  thread_chan *c = s->local;
  if (c == NULL || s->head == NULL)
    return 0;
  pthread_mutex_lock(&c->mu);
  tjob *j = c->in_head;
  c->in_head = c->in_tail = NULL;
  pthread_mutex_unlock(&c->mu);
  unsigned n = 0;
  while (j != NULL) {
    tjob *next = j->next;
    job_recycle(c, j);
    j = next;
    n++;
  }
  if (s->inflight > s->unsent + n) {
    c->given_up = s->head->id;
    s->can_send = 0;
  } else {
    fp__sched_offer(p, i);
  }
  return n;
}

static int thread_poll_add(fp_pool *p, unsigned i, struct pollfd *pfd)
{
  const thread_chan *c = p->slots[i].local;
  if (c == NULL || !p->slots[i].can_recv)
    return 0;
  pfd[0] = (struct pollfd){.fd = c->fd[0], .events = POLLIN};
  return 1;
}

static void thread_poll_event(fp_pool *p, unsigned i, const struct pollfd *pfd)
{
  const thread_chan *c = p->slots[i].local;
  if (c != NULL && pfd->fd == c->fd[0])
    thread_recv(p, i);
}

static void thread_ep_sync(fp_pool *p, unsigned i)
{
#ifdef HAVE_SYS_EPOLL_H
  thread_chan *c = p->slots[i].local;
  if (c != NULL)
    ep_set(p, c, p->slots[i].can_recv ? EPOLLIN : 0, i);
#else
  (void)p;
  (void)i;
#endif
}

static int thread_exited(fp_pool *p, unsigned i)
{
  const thread_chan *c = p->slots[i].local;
  return c == NULL || !c->started || atomic_load(&c->exited);
}

static void thread_cpu(fp_pool *p, unsigned i, uint64_t *user_us,
                       uint64_t *sys_us)
{
  const thread_chan *c = p->slots[i].local;
  *user_us = c ? atomic_load_explicit(&c->user_us, memory_order_relaxed) : 0;
  *sys_us = c ? atomic_load_explicit(&c->sys_us, memory_order_relaxed) : 0;
}

const fp__transport fp__thread_transport = {
    .reset = thread_reset,
    .open = thread_open,
    .send = thread_send,
    .recv = thread_recv,
    .close = thread_close,
    .forget = thread_forget,
    .poll_add = thread_poll_add,
    .poll_event = thread_poll_event,
    .ep_sync = thread_ep_sync,
    .stop = thread_stop,
    .give_up = thread_give_up,
    .exited = thread_exited,
    .cpu = thread_cpu,
    .batch = FP__THREAD_BATCH,
};

/*
 * The pool's life: options, creation, shutdown, termination, destruction,
 * and what a caller asks of it (dispatch, its descriptor, its counters).
 * The dispatcher itself is in dispatch.c, workers' lives in supervise.c,
 * and how frames move in pipe.c.
 */
#include "forkpool-remote.h" /* fp__remote_group: a remote pool's hosts */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

#define FP__MAX_WORKERS 1024
#define FP__STOP_GRACE_MS 1000 /* for workers to exit at a shutdown */
#define FP__AS_MARGIN ((size_t)16 << 20) /* worker_rlimit_as above the start */

/* --- Options and creation --------------------------------------------------------- */

int fp__options_fill(fp_pool_options *o, const fp_pool_options *in)
{
  fp_pool_options def = FP_POOL_OPTIONS_INIT;
  *o = def;
  if (in != NULL) {
    /* Callers built against 0.1's header pass the struct up to log_arg. */
    if (in->size < offsetof(fp_pool_options, log_arg) + sizeof(void *) ||
        in->size > sizeof *o)
      return FP_EINVAL;
    memcpy(o, in, in->size);
  }
  if (o->workers == 0)
    o->workers = fp__cpus_allowed();
  if (o->max_message == 0)
    o->max_message = FP__DEFAULT_MAX_MESSAGE;
  if (o->shm_args == 0)
    o->shm_args = FP__SHM_ARGS;
  if (o->shm_args != FP_SHM_OFF &&
      (o->shm_args < ((size_t)1 << 20) || o->shm_args > ((size_t)1 << 40)))
    return FP_EINVAL;
  if ((o->max_worker_rss != 0 && o->max_worker_rss < ((size_t)1 << 20)) ||
      o->pin_workers > 1 || o->worker_stdout < FP_STDOUT_STDERR ||
      o->worker_stdout > FP_STDOUT_NULL)
    return FP_EINVAL;
#ifndef HAVE_SCHED_SETAFFINITY
  if (o->pin_workers)
    return FP_ENOSYS;
#endif
  if (o->mode > FP_MODE_INLINE)
    return FP_EINVAL;
  /* Nothing replaces, limits, pins or redirects a thread or the caller
   * alone. */
  if (o->mode != FP_MODE_PROCESSES &&
      (o->max_tasks_per_worker != 0 || o->max_worker_rss != 0 ||
       o->worker_rlimit_as != 0 || o->worker_rlimit_cpu != 0 ||
       o->pin_workers != 0 || o->worker_stdout == FP_STDOUT_NULL))
    return FP_ENOTSUP;
  if (o->mode == FP_MODE_INLINE) {
    o->workers = 1;      /* the caller */
    o->max_inflight = 1; /* the rest wait in the queue, cancellable */
  }
  if (o->workers > FP__MAX_WORKERS || o->max_message < 1024 ||
      o->max_message > UINT32_MAX || o->max_inflight > 1024 ||
      o->restart_limit > 100000 ||
      (o->restart_limit > 0 && o->restart_window_ms == 0) ||
      o->deadline_grace_ms < 0 || o->deadline_grace_ms > FP_GRACE_MAX_MS)
    return FP_EINVAL;
  return 0;
}

/* The address space a worker starts with: the caller's (the fork server is
 * forked from it, after the shared area is mapped); 0 if unknown. */
static size_t address_space_now(void)
{
  unsigned long pages, resident;
  if (fp__statm(&pages, &resident) != 0)
    return 0;
  return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* A worker_rlimit_as below what a worker has mapped at its start would make
 * its every allocation fail: refused, and create says why. */
static int check_rlimit_as(const fp_pool *p, char *why, size_t len)
{
  size_t lim = p->opts.worker_rlimit_as;
  if (lim == 0)
    return 0; /* no limit: /proc is not read */
  size_t need = address_space_now();
  if (need < p->shm.len)
    need = p->shm.len;
  need += FP__AS_MARGIN;
  if (lim >= need)
    return 0;
  snprintf(why, len, "worker_rlimit_as (%zu bytes) is below what a worker "
           "has mapped at its start plus %zu MiB (%zu bytes: the caller's "
           "address space and the pool's shared memory)", lim,
           FP__AS_MARGIN >> 20, need);
  return FP_EINVAL;
}

/*
 * Worker processes: every one forked, its pipes in our hands (so that a
 * fork or a descriptor we cannot have fails create, as before), and one
 * has run init and said READY; the others run init meanwhile.
 */
static int one_started(fp_pool *p, void *arg)
{
  (void)arg;
  int live = 0;
  if (p->err != 0)
    return 1;
  for (unsigned i = 0; i < p->nslots; i++) {
    if (p->slots[i].state == SLOT_SPAWNING)
      return 0;
    live |= p->slots[i].state == SLOT_LIVE;
  }
  return live;
}

/* Threads, or the caller: every one has run init. */
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

/* A page that reads 1 here and 0 in any forked child: the ownership check
 * on every call costs a load instead of getpid(). */
static volatile unsigned char *fork_guard_new(void)
{
#if HAVE_DECL_MADV_WIPEONFORK
  size_t len = (size_t)sysconf(_SC_PAGESIZE);
  unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return NULL;
  if (madvise(m, len, MADV_WIPEONFORK) != 0) {
    munmap(m, len);
    return NULL; /* an older kernel: fall back to getpid() */
  }
  *m = 1;
  return m;
#else
  return NULL;
#endif
}

/* Why this thread's last fp_pool_create failed; "" after a success. */
static _Thread_local char create_error[256];

FP_EXTERN const char *fp_pool_create_error(void)
{
  return create_error[0] != '\0' ? create_error : NULL;
}

int fp__create_failed(int rc, const char *why)
{
  snprintf(create_error, sizeof create_error, "%s",
           why != NULL && why[0] != '\0' ? why : fp_strerror(rc));
  return rc;
}

/* The shared area and the fork server, which forks every worker; or, for a
 * remote pool, only the control socket to whatever stands in for the fork
 * server. */
static int start_processes(fp_pool *p, int remote_ctl)
{
  int rc;
  /* Before the fork server, so that every worker inherits it.  A remote
   * pool's is filled and read by its relay, in this process. */
  if (p->opts.shm_args != FP_SHM_OFF &&
      (rc = fp__shm_init(&p->shm, p->opts.shm_args, p->nslots)) != 0)
    return rc;
  if (remote_ctl >= 0) {
    p->ctl_fd = remote_ctl;
    p->remote = 1;
    /* Its workers run on their hosts' CPUs, one per CPU unless a host was
     * told otherwise: none waits for a CPU of this machine. */
    p->ncpus = p->nslots;
    fp__shm_private(&p->shm);
    return 0;
  }
  p->wcfg.shm = p->shm.base != NULL ? &p->shm : NULL;
  /* Its message, in err_msg, is create's. */
  if ((rc = check_rlimit_as(p, p->err_msg, sizeof p->err_msg)) != 0)
    return rc;
  if ((rc = fp__forkserver_start(&p->wcfg, &p->ctl_fd, &p->fs_pid,
                                 &p->fs_child)) != 0)
    return rc;
  fp__shm_private(&p->shm);
  return 0;
}

/* A worker in this process (a thread, or the caller): no fork server, its
 * transport starts it.  Lock held. */
static void start_local(fp_pool *p, unsigned i)
{
  p->slots[i].state = SLOT_STARTING;
  int rc = p->tr->open(p, i, NULL);
  if (rc != 0)
    fp__pool_break(p, rc, "could not start a worker %s: %s",
                   p->opts.mode == FP_MODE_THREADS ? "thread" : "in the caller",
                   fp_strerror(rc));
  else
    fp__sched_offer(p, i); /* it takes work from now on */
}

void fp__worker_cfg_fill(fp__worker_cfg *w, const fp_pool_options *o,
                         const fp__tasks *tasks, unsigned nslots)
{
  memset(w, 0, sizeof *w);
  w->tasks = tasks;
  w->max_message = o->max_message;
  w->nslots = nslots;
  w->init = o->init;
  w->init_arg = o->init_arg;
  w->max_tasks = o->max_tasks_per_worker;
  w->own_process = o->mode == FP_MODE_PROCESSES;
  w->max_rss = o->max_worker_rss;
  w->rlimit_as = o->worker_rlimit_as;
  w->rlimit_cpu = o->worker_rlimit_cpu;
  w->pin = o->pin_workers;
  w->out_mode = o->worker_stdout;
}

FP_EXTERN int fp_pool_create(fp_pool **out, const fp_pool_options *opts)
{
  return fp__pool_create(out, opts, -1, NULL, 0);
}

/* The slots' groups: the hosts given, their workers adding up to the
 * pool's, or one group of every slot. */
static int groups_init(fp_pool *p, const fp__remote_group *in, unsigned n)
{
  unsigned ng = in != NULL ? n : 1, first = 0;
  p->groups = calloc(ng, sizeof *p->groups);
  if (p->groups == NULL)
    return FP_ENOMEM;
  p->ngroups = ng;
  for (unsigned g = 0; g < ng; g++) {
    fp__group *gr = &p->groups[g];
    gr->first = first;
    gr->n = in != NULL ? in[g].workers : p->nslots;
    if (gr->n == 0 || gr->n > p->nslots - first)
      return FP_EINVAL;
    if (in != NULL)
      snprintf(gr->name, sizeof gr->name, "%.*s", (int)sizeof gr->name - 1,
               in[g].name);
    for (unsigned i = first; i < first + gr->n; i++)
      p->slots[i].group = g;
    first += gr->n;
  }
  return first == p->nslots ? 0 : FP_EINVAL;
}

int fp__pool_create(fp_pool **out, const fp_pool_options *opts,
                    int remote_ctl, const fp__remote_group *groups,
                    unsigned ngroups)
{
  create_error[0] = '\0';
  fp_pool_options o;
  int rc = out == NULL ? FP_EINVAL : fp__options_fill(&o, opts);
  if (out != NULL)
    *out = NULL;
  /* Its workers are on other machines: nothing is shared with them. */
  if (rc == 0 && remote_ctl >= 0 && o.mode != FP_MODE_PROCESSES)
    rc = FP_ENOTSUP;
  fp_pool *p = rc == 0 ? calloc(1, sizeof *p) : NULL;
  if (rc == 0 && p == NULL)
    rc = FP_ENOMEM;
  if (rc != 0) {
    if (remote_ctl >= 0)
      close(remote_ctl);
    return fp__create_failed(rc, NULL);
  }
  p->opts = o;
  p->ctl_fd = p->epfd = p->evfd = p->wake[0] = p->wake[1] = -1;
  p->notify[0] = p->notify[1] = -1;
  p->owner = getpid();
  p->nslots = o.workers;
  p->fcache = fp__fcache_new();
  atomic_init(&p->next_id, 1);
  pthread_mutex_init(&p->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cond, &ca);
  pthread_condattr_destroy(&ca);

  p->tr = o.mode == FP_MODE_THREADS  ? &fp__thread_transport
          : o.mode == FP_MODE_INLINE ? &fp__inline_transport
                                     : &fp__pipe_transport;
  p->slots = calloc(p->nslots, sizeof *p->slots);
  for (unsigned i = 0; p->slots != NULL && i < p->nslots; i++)
    p->tr->reset(p, i);
  p->pfd = calloc(2 + 2 * p->nslots, sizeof *p->pfd);
  p->pfd_who = calloc(2 + 2 * p->nslots, sizeof *p->pfd_who);
  if (!p->slots || !p->pfd || !p->pfd_who || fp__sched_init(p) != 0) {
    rc = FP_ENOMEM;
    goto fail;
  }
  if ((rc = groups_init(p, remote_ctl >= 0 ? groups : NULL, ngroups)) != 0 ||
      (rc = fp__tasks_build(&p->tasks, o.tasks)) != 0 ||
      (rc = fp__pipe(p->wake)) != 0 ||
      (rc = fp__set_nonblock(p->wake[0])) != 0 ||
      (rc = fp__set_nonblock(p->wake[1])) != 0)
    goto fail;
  fp__worker_cfg_fill(&p->wcfg, &o, &p->tasks, p->nslots);
  if (o.mode == FP_MODE_PROCESSES && (rc = start_processes(p, remote_ctl)) != 0)
    goto fail;
  remote_ctl = -1; /* the pool's now */
  /* Only this process uses it (its failure is no error): made while the
   * fork server forks the first workers, not before the fork. */
  p->fork_guard = fork_guard_new();

  /*
   * Create returns once every worker is forked and one has run init and
   * said READY (every thread, in thread mode): the others run init while
   * the first tasks run, and take tasks once ready.  An init that fails before that fails
   * create; one that fails after breaks the pool, as a replacement's does.
   */
  fp__pool_lock(p);
  for (unsigned i = 0; i < p->nslots; i++)
    fp__slot_await(p, i); /* the fork server forks them unasked */
  for (unsigned i = 0; o.mode != FP_MODE_PROCESSES && i < p->nslots; i++)
    start_local(p, i);
  rc = fp__pool_run_until(p, o.mode == FP_MODE_PROCESSES ? one_started
                                                        : all_started,
                          NULL, -1);
  if (rc == 0)
    rc = p->err;
  fp__pool_unlock(p);
  if (rc != 0)
    goto fail;
  *out = p;
  return 0;
fail:
  if (remote_ctl >= 0)
    close(remote_ctl);
  fp__create_failed(rc, p->err_msg[0] != '\0' ? p->err_msg : NULL);
  pool_free(p);
  return rc;
}

/* --- Shutting down -------------------------------------------------------------------- */

static int nothing_left(fp_pool *p, void *arg)
{
  (void)arg;
  if (p->qhead != NULL)
    return 0;
  for (unsigned i = 0; i < p->nslots; i++)
    for (fp_future *f = p->slots[i].head; f; f = f->next)
      if (!fp__future_is_done(f))
        return 0;
  return 1;
}

static int all_exited(fp_pool *p, void *arg)
{
  (void)arg;
  if (p->tr->exited != NULL) {
    /* Threads: one still running a task given up on is waited for. */
    for (unsigned i = 0; i < p->nslots; i++)
      if (!p->tr->exited(p, i))
        return 0;
    return 1;
  }
  if (p->ctl_fd < 0)
    return 1;
  for (unsigned i = 0; i < p->nslots; i++)
    if (p->slots[i].state != SLOT_OFF)
      return 0;
  return 1;
}

/*
 * A subreaper caller has the fork server as its child: reap exactly that
 * pid once it has closed its end (it is exiting), never -1, so that the
 * caller's own children stay the caller's to wait for.  ECHILD if the
 * caller's own waitpid(-1) took it first.
 */
static void forkserver_reap(fp_pool *p)
{
  if (!p->fs_child || !fp__pool_owned(p))
    return;
  p->fs_child = 0;
  while (waitpid(p->fs_pid, NULL, 0) < 0 && errno == EINTR)
    ;
}

/*
 * Lets the fork server go: at end of file it kills and reaps what is left
 * and exits; its exit closes its end, which is the end of file we wait for.
 */
void fp__forkserver_stop(fp_pool *p)
{
  if (p->ctl_fd < 0)
    return;
  shutdown(p->ctl_fd, SHUT_WR);
  for (;;) {
    enum fp__io io;
    fp__ctl m;
    int fds[FP__CTL_NFDS];
    struct pollfd pf = {.fd = p->ctl_fd, .events = POLLIN};
    if (poll(&pf, 1, -1) < 0 && errno != EINTR)
      break;
    int rc = fp__ctl_recv(p->ctl_fd, &io, &m, fds);
    for (int k = 0; k < FP__CTL_NFDS; k++)
      if (fds[k] >= 0)
        close(fds[k]);
    if (rc < 0 || io == FP__IO_EOF)
      break;
  }
  close(p->ctl_fd);
  p->ctl_fd = -1;
  forkserver_reap(p);
}

static void cancel_queued(fp_pool *p)
{
  while (p->qhead) {
    fp_future *f = p->qhead;
    fp__list_unlink(&p->qhead, &p->qtail, f);
    fp__pool_fail(p, f, FP_ECANCELLED, "cancelled");
  }
  pthread_cond_broadcast(&p->cond);
}

/* Signals every worker that has not exited (SIGKILL: or would make us wait
 * on it). */
static void signal_workers(fp_pool *p, int sig)
{
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    if (s->pid > 0 && s->state != SLOT_OFF)
      fp__slot_terminate(p, i, sig);
  }
  fp__wake_poller(p);
}

/*
 * Lets every worker go (end of file on its pipe), once.  An idle worker
 * exits at end of file at once, unless it is stopped (the fork server
 * sends SIGCONT: it reads it), or a handler of its own holds it (SIGTERM
 * after fp_pool_terminate): stop_wait kills it FP__STOP_GRACE_MS after
 * this.  Lock held.
 */
static void stop_begin(fp_pool *p)
{
  if (p->stop_at != 0)
    return;
  p->stopping = 1;
  p->stop_at = fp__now_ms();
  fp__slots_let_go(p);
  fp__wake_poller(p);
}

/* fp_pool_join's waits end early for fp_pool_interrupt; shutdown's not. */
static int run_until(fp_pool *p, fp__pool_pred pred, int intr,
                     int64_t deadline)
{
  return intr ? fp__pool_wait(p, pred, NULL, deadline)
              : fp__pool_run_until(p, pred, NULL, deadline);
}

/*
 * Waits until deadline (-1: none) for every worker to exit, killing those
 * left at the grace's end, then for the fork server.  0, FP_ETIMEDOUT or
 * FP_EINTR with the pool as it was (call again), or the dispatcher's error.
 */
static int stop_wait(fp_pool *p, int64_t deadline, int intr)
{
  int64_t grace = p->stop_at + FP__STOP_GRACE_MS;
  int early = deadline >= 0 && deadline < grace;
  int rc = run_until(p, all_exited, intr, early ? deadline : grace);
  if (rc == FP_ETIMEDOUT && !early) {
    signal_workers(p, SIGKILL);
    rc = run_until(p, all_exited, intr, deadline);
  }
  if (rc == FP_ETIMEDOUT || rc == FP_EINTR)
    return rc;
  /* Another thread may still be in poll() on the control socket. */
  while (p->polling) {
    fp__wake_poller(p);
    pthread_cond_wait(&p->cond, &p->lock);
  }
  fp__forkserver_stop(p);
  return rc;
}

/* Every task ends, then every process.  Lock held. */
static int finish(fp_pool *p, int64_t deadline, int intr)
{
  int rc = run_until(p, nothing_left, intr, deadline);
  if (rc == FP_ETIMEDOUT || rc == FP_EINTR)
    return rc;
  stop_begin(p);
  int rc2 = stop_wait(p, deadline, intr);
  if (rc == 0 && rc2 == 0)
    p->drained = 1;
  return rc ? rc : rc2;
}

FP_EXTERN int fp_pool_shutdown(fp_pool *p, unsigned flags)
{
  if (p == NULL ||
      (flags & ~(unsigned)(FP_SHUTDOWN_WAIT | FP_SHUTDOWN_CANCEL_PENDING)))
    return FP_EINVAL;
  fp__pool_lock(p);
  int rc = fp__pool_owned(p) ? 0 : FP_EINVAL;
  if (rc == 0) {
    p->closed = 1;
    if (flags & FP_SHUTDOWN_CANCEL_PENDING)
      cancel_queued(p);
  }
  if (rc == 0 && (flags & FP_SHUTDOWN_WAIT))
    rc = finish(p, -1, 0);
  fp__pool_unlock(p);
  return rc;
}

FP_EXTERN int fp_pool_join(fp_pool *p, int timeout_ms)
{
  int64_t deadline;
  if (p == NULL || fp__deadline(timeout_ms, &deadline) != 0)
    return FP_EINVAL;
  fp__pool_lock(p);
  int rc = fp__pool_owned(p) && p->closed ? finish(p, deadline, 1)
                                          : FP_EINVAL;
  fp__pool_unlock(p);
  return rc;
}

/* Fails every task a worker holds and signals every worker. */
static int terminate(fp_pool *p, int sig)
{
  if (p == NULL)
    return FP_EINVAL;
  fp__pool_lock(p);
  int rc = fp__pool_owned(p) ? 0 : FP_EINVAL;
  if (rc == 0) {
    p->closed = 1;
    p->stopping = 1;
    cancel_queued(p);
    for (unsigned i = 0; i < p->nslots; i++) {
      fp__slot *s = &p->slots[i];
      for (fp_future *f = s->head; f; f = f->next) {
        if (fp__future_is_done(f))
          continue;
        fp__pool_fail_held(p, f, FP_ECANCELLED, sig == SIGKILL
                           ? "cancelled: the pool's workers were killed"
                           : "cancelled: the pool's workers were terminated");
      }
      if (s->pid > 0 && s->state != SLOT_OFF)
        fp__slot_terminate(p, i, sig);
      else if (p->tr->stop != NULL && s->state != SLOT_OFF)
        p->tr->stop(p, i, 0); /* a thread: no signal, its tasks are asked */
    }
    fp__wake_poller(p);
    pthread_cond_broadcast(&p->cond);
  }
  fp__pool_unlock(p);
  return rc;
}

FP_EXTERN int fp_pool_terminate(fp_pool *p)
{
  return terminate(p, SIGTERM);
}

FP_EXTERN int fp_pool_kill(fp_pool *p)
{
  return terminate(p, SIGKILL);
}

static void pool_free(fp_pool *p)
{
  if (p->ctl_fd >= 0) {
    fp__pool_lock(p);
    fp__pool_break(p, FP_EBROKEN, "the pool was destroyed");
    fp__forkserver_stop(p);
    fp__pool_unlock(p);
  }
  forkserver_reap(p); /* it died: the dispatcher saw its end of file */
  for (unsigned i = 0; p->slots && i < p->nslots; i++)
    p->tr->close(p, i, FP__BOTH);
  if (p->epfd >= 0)
    close(p->epfd);
  if (p->wake[0] >= 0)
    close(p->wake[0]);
  if (p->wake[1] >= 0)
    close(p->wake[1]);
  for (int i = 0; i < 2; i++)
    if (p->notify[i] >= 0)
      close(p->notify[i]);
  fp__tasks_free(&p->tasks);
  free(p->slots);
  free(p->groups);
  fp__sched_free(p);
  free(p->pfd);
  free(p->pfd_who);
  free(atomic_load(&p->spare));
  fp__shm_destroy(&p->shm);
  fp__fcache_close(p->fcache);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->cond);
  if (p->fork_guard != NULL)
    munmap((void *)p->fork_guard, (size_t)sysconf(_SC_PAGESIZE));
  free(p);
}

/* In a forked child the pool is a copy: close our descriptors (without
 * touching the epoll set, which the parent shares), and tell no process. */
static void pool_forget(fp_pool *p)
{
  for (unsigned i = 0; i < p->nslots; i++)
    p->tr->forget(p, i);
  if (p->ctl_fd >= 0)
    close(p->ctl_fd);
  p->ctl_fd = -1;
  p->cbq = NULL;
  fp__shm_forget(&p->shm);
}

FP_EXTERN void fp_pool_destroy(fp_pool *p)
{
  if (p == NULL)
    return;
  if (!fp__pool_owned(p))
    pool_forget(p);
  else
    (void)fp_pool_shutdown(p, FP_SHUTDOWN_WAIT | FP_SHUTDOWN_CANCEL_PENDING);
  pool_free(p);
}

/* --- Asking the pool ---------------------------------------------------------------------- */

/* How many futures were made final since the last call, in any call. */
FP_EXTERN int fp_pool_dispatch(fp_pool *p, int timeout_ms)
{
  int64_t deadline;
  if (p == NULL || fp__deadline(timeout_ms, &deadline) != 0)
    return FP_EINVAL;
  fp__pool_lock(p);
  int rc = 0, intr = atomic_load(&p->interrupted);
  if (!fp__pool_owned(p))
    rc = FP_EINVAL;
  else if (intr && p->opts.mode == FP_MODE_INLINE)
    ; /* an inline pass runs a task: the inline form of waiting for one */
  else if (!p->polling)
    rc = fp__poll_once(p, p->ndone != p->ndone_reported || intr
                              ? 0 : fp__remaining_ms(deadline));
  else if (timeout_ms != 0 && !intr)
    fp__cond_wait_until(p, deadline); /* the poller broadcasts */
  if (rc == 0 && p->ndone == p->ndone_reported &&
      atomic_load(&p->interrupted))
    rc = FP_EINTR; /* after the pass, which drained the wake pipe */
  if (rc == 0) {
    uint64_t n = p->ndone - p->ndone_reported;
    p->ndone_reported = p->ndone;
    if (p->notify_pending) {
      char drain[64];
      while (read(p->notify[0], drain, sizeof drain) > 0)
        ;
      p->notify_pending = 0;
    }
    rc = n > INT32_MAX ? INT32_MAX : (int)n;
  }
  fp__pool_unlock(p);
  return rc;
}

FP_EXTERN int fp_pool_fd(fp_pool *p)
{
  if (p == NULL)
    return FP_EINVAL;
#ifdef HAVE_SYS_EPOLL_H
  if (!fp__pool_owned(p))
    return FP_EINVAL;
  fp__pool_lock(p);
  int rc = p->epfd;
  if (rc < 0 && (rc = fp__pipe(p->notify)) == 0 &&
      (rc = fp__set_nonblock(p->notify[0])) == 0 &&
      (rc = fp__set_nonblock(p->notify[1])) == 0) {
    rc = epoll_create1(EPOLL_CLOEXEC);
    rc = rc < 0 ? -errno : fp__fd_high(rc);
    if (rc >= 0) {
      struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
      p->epfd = rc;
      epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wake[0], &ev);
      epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->notify[0], &ev);
      if (p->ctl_fd >= 0)
        epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->ctl_fd, &ev);
      fp__ep_sync(p);
      fp__signal_done(p);
    }
  }
  if (rc < 0 && p->epfd < 0) {
    for (int i = 0; i < 2; i++)
      if (p->notify[i] >= 0)
        close(p->notify[i]);
    p->notify[0] = p->notify[1] = -1;
  }
  fp__pool_unlock(p);
  return rc;
#else
  return FP_ENOSYS;
#endif
}

void fp__cpu_exited(fp_pool *p, const fp__ctl *m)
{
  p->st.cpu_user_us += m->user_us;
  p->st.cpu_sys_us += m->sys_us;
}

/* fp_worker_stats as a caller built before its CPU fields has it. */
typedef struct worker_stats_short {
  pid_t pid;
  uint64_t tasks;
} worker_stats_short;

/* Slot i's entry in the caller's array, of the layout its header has. */
static void worker_entry(void *workers, int wide, unsigned i,
                         const fp_worker_stats *w)
{
  if (wide)
    ((fp_worker_stats *)workers)[i] = *w;
  else
    ((worker_stats_short *)workers)[i] =
        (worker_stats_short){w->pid, w->tasks};
}

/* Every task ended and every worker exited: with processes, the fork
 * server's exit says so, which another thread's pass may read; threads and
 * inline have no fork server, and are shut down once finish() drained them
 * (their ctl_fd is -1 from the start). */
static int shut_down(const fp_pool *p)
{
  return p->opts.mode == FP_MODE_PROCESSES ? p->ctl_fd < 0 : p->drained;
}

FP_EXTERN int fp_pool_status_get(fp_pool *p, fp_pool_status *st)
{
  if (p == NULL || st == NULL ||
      st->size < offsetof(fp_pool_status, interrupted) ||
      st->size > sizeof *st || !fp__pool_owned(p))
    return FP_EINVAL;
  fp_pool_status s = FP_POOL_STATUS_INIT;
  fp__pool_lock(p);
  if (!p->polling)
    (void)fp__poll_once(p, 0); /* deaths nobody waited for are read */
  if (p->err != 0) {
    s.state = FP_POOL_BROKEN;
    s.err = p->err;
    snprintf(s.reason, sizeof s.reason, "%s", p->err_msg);
  } else if (p->closed) {
    s.state = shut_down(p) ? FP_POOL_SHUT_DOWN : FP_POOL_SHUTTING_DOWN;
  }
  s.interrupted = atomic_load(&p->interrupted);
  fp__pool_unlock(p);
  s.size = st->size;
  memcpy(st, &s, s.size);
  return 0;
}

/* Whether size is one fp_pool_stats has had: where each header's struct
 * ended (fp_pool_stats_get(3)).  Any other size would cut a field in two,
 * or is not what its caller thinks. */
static int stats_size_known(size_t size)
{
  static const size_t known[] = {
      offsetof(fp_pool_stats, shared_args),   /* up to workers_live */
      offsetof(fp_pool_stats, cpu_user_us),   /* up to shared_bytes */
      offsetof(fp_pool_stats, hosts_retired), /* up to cpu_sys_us */
      sizeof(fp_pool_stats)};
  for (size_t i = 0; i < sizeof known / sizeof *known; i++)
    if (size == known[i])
      return 1;
  return 0;
}

FP_EXTERN int fp_pool_stats_get(fp_pool *p, fp_pool_stats *st,
                                fp_worker_stats *workers, size_t n)
{
  if (p == NULL || st == NULL || !stats_size_known(st->size) ||
      (workers == NULL && n > 0) || !fp__pool_owned(p))
    return FP_EINVAL;
  fp__pool_lock(p);
  fp_pool_stats s = p->st;
  s.size = st->size;
  s.queued = s.running = 0;
  for (fp_future *f = p->qhead; f; f = f->next)
    s.queued += f->nitems;
  s.workers = p->nslots;
  s.workers_live = 0;
  s.shared_bytes = p->shm.in_use;
  s.hosts_retired = p->nretired;
  s.workers_retired = 0;
  for (unsigned g = 0; g < p->ngroups; g++)
    s.workers_retired += p->groups[g].retired ? p->groups[g].n : 0;
  /* A caller whose stats have the CPU fields has them in fp_worker_stats
   * too: the same header. */
  int wide = st->size >= offsetof(fp_pool_stats, cpu_sys_us) +
                             sizeof st->cpu_sys_us;
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *sl = &p->slots[i];
    for (fp_future *f = sl->head; f; f = f->next)
      s.running += fp__future_is_done(f) ? 0 : f->nitems;
    /* A thread let go at shutdown is no longer ready, as a worker
     * process that exited: its slot stays LIVE until destroy. */
    int live = sl->state == SLOT_LIVE && !p->drained;
    s.workers_live += live;
    /* A thread or the caller (pid 0): the caller's process. */
    fp_worker_stats w = {live ? (sl->pid ? sl->pid : p->owner) : 0,
                         sl->answered, 0, 0};
    uint64_t user = 0, sys = 0;
    int entry = 1;
    if (p->tr->cpu != NULL) {
      /* A thread or the caller: its figures stay in the total once it
       * has stopped, and leave its entry with its pid, as a process's
       * at its exit. */
      p->tr->cpu(p, i, &user, &sys);
      entry = live;
    } else if (sl->pid > 0 && sl->state != SLOT_OFF) {
      /* Until its exit is counted (then pid is 0), a worker's CPU time is
       * what it stamped after its last answer. */
      (void)fp__stamp_read_cpu(&p->shm, i, sl->pid, &user, &sys);
    }
    s.cpu_user_us += user;
    s.cpu_sys_us += sys;
    if (entry) {
      w.cpu_user_us = user;
      w.cpu_sys_us = sys;
    }
    if (i < n)
      worker_entry(workers, wide, i, &w);
  }
  fp__pool_unlock(p);
  memcpy(st, &s, s.size);
  return 0;
}

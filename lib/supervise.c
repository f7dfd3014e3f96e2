/*
 * The supervisor: the pool's side of the fork server (control messages,
 * lib/forkserver.c is the other), and each worker slot's life: spawned,
 * ready, signalled, exited, replaced, and the rule that stops replacing
 * workers that die without progress (a crash loop).  Signals go through the
 * fork server, which reaps the workers and reports each exit; only then is
 * a slot's task failed and the rest put back on the queue, so that a kill
 * names the task it is for and answers already sent are read first.
 */
#include "forkpool-private.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* --- Control messages ---------------------------------------------------- */

static int ctl_send(fp_pool *p, uint32_t op, unsigned slot, pid_t pid,
                    int value)
{
  if (p->ctl_fd < 0)
    return FP_EBROKEN;
  fp__ctl m = {.op = op, .slot = slot, .pid = pid, .value = value};
  return fp__ctl_send(p->ctl_fd, &m);
}

static void close_fds(int fds[FP__CTL_NFDS])
{
  for (int k = 0; k < FP__CTL_NFDS; k++)
    if (fds[k] >= 0)
      close(fds[k]);
}

/* --- Signalling a worker ------------------------------------------------- */

/* Whether the task an earlier kill named is still the one the worker runs. */
static int target_running(const fp__slot *s)
{
  return s->target != 0 && s->head != NULL && s->head->id == s->target;
}

/*
 * Asks the fork server to signal the slot's worker (SIGKILL unless the pool
 * is terminating it) and stops writing to it.  A kill for a task names it,
 * f, and err and msg become its failure; an earlier kill's target that is
 * still running keeps its own.  err without f is a kill for no task.
 */
static void slot_signal(fp_pool *p, unsigned i, int sig, const fp_future *f,
                        int err, const char *msg, int send)
{
  fp__slot *s = &p->slots[i];
  if (f != NULL ? !target_running(s) : (err != 0 && s->fail_err == 0)) {
    s->target = f != NULL ? f->id : 0;
    s->fail_err = err;
    snprintf(s->fail_msg, sizeof s->fail_msg, "%s", msg ? msg : "");
  }
  if (send && s->killed != sig && s->killed != SIGKILL && s->pid > 0)
    (void)ctl_send(p, FP__CTL_KILL, i, s->pid, sig);
  if (p->tr->stop != NULL)
    p->tr->stop(p, i, 0); /* a thread: its tasks are asked to stop */
  if (s->killed != SIGKILL)
    s->killed = sig;
  p->tr->close(p, i, FP__SEND);
  if (err == FP_EPROTO)
    p->tr->close(p, i, FP__RECV); /* what follows garbage is garbage */
  s->send = NULL;
  s->unsent = 0;
  p->nlive -= s->state == SLOT_LIVE;
  if (s->state == SLOT_LIVE || s->state == SLOT_STARTING)
    s->state = SLOT_DYING;
}

void fp__slot_kill(fp_pool *p, unsigned i, int err, const char *msg)
{
  /* A fault the worker made (a malformed answer, say) is its running
   * task's. */
  slot_signal(p, i, SIGKILL, err != 0 ? p->slots[i].head : NULL, err, msg,
              1);
}

static void requeue_newest(fp_pool *p, fp__slot *s, unsigned n);

/*
 * A worker that cannot be killed (a thread) is not: f, the task it runs,
 * fails now (err and msg; a final f is left as it is) and stays at the
 * head of its list, a placeholder whose answer will be dropped, and its
 * stop flag is raised.  The thread takes no more work until f returns, and
 * the tasks it was handed and has not started go back to the queue: a task
 * that never returns holds its own thread, nothing else.
 */
static void give_up_task(fp_pool *p, unsigned i, fp_future *f, int err,
                         const char *msg)
{
  fp__slot *s = &p->slots[i];
  if (!fp__future_is_done(f))
    fp__pool_fail_held(p, f, err, msg);
  p->tr->stop(p, i, f->id);
  if (s->head != f || s->state != SLOT_LIVE)
    return;
  unsigned n = p->tr->give_up(p, i); /* sent, not started */
  requeue_newest(p, s, s->unsent + n);
  pthread_cond_broadcast(&p->cond);
}

void fp__slot_kill_task(fp_pool *p, unsigned i, const fp_future *f, int err,
                        const char *msg)
{
  if (p->tr->stop != NULL) {
    /* The pool's lists hold f; const only for the process path. */
    give_up_task(p, i, (fp_future *)f, err, msg);
    return;
  }
  p->slots[i].asked = 1;
  slot_signal(p, i, SIGKILL, f, err, msg, 1);
}

/*
 * A soft stop: the worker is asked, through the fork server, to stop f, and
 * keeps taking answers and tasks.  f is named as a kill's target now, so
 * that if the worker ends (at the SIGTERM, at the kill after the grace) f
 * alone fails, with err and msg, and the end is not taken for a death.
 */
void fp__slot_stop_task(fp_pool *p, unsigned i, const fp_future *f, int err,
                        const char *msg)
{
  fp__slot *s = &p->slots[i];
  /* A thread's task, a map chunk too, is always asked: nothing kills it. */
  int ask = p->tr->stop != NULL || f->nitems == 1;
  if (f->grace_ms <= 0 || !ask) {
    fp__slot_kill_task(p, i, f, err, msg);
    return;
  }
  if (s->stop_id == f->id || s->state != SLOT_LIVE || target_running(s))
    return; /* asked already, or being killed */
  p->nstops += s->stop_id == 0;
  s->stop_id = f->id;
  s->stop_kill_ns = fp__now_ns() + (int64_t)f->grace_ms * 1000000;
  s->target = f->id;
  s->asked = 1;
  s->fail_err = err;
  snprintf(s->fail_msg, sizeof s->fail_msg, "%s", msg);
  if (p->tr->stop != NULL)
    p->tr->stop(p, i, f->id);
  else
    (void)ctl_send(p, FP__CTL_STOP, i, s->pid, (int32_t)(uint32_t)f->id);
}

void fp__slot_stopped(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  p->nstops -= s->stop_id != 0;
  s->stop_id = 0;
  if (s->state != SLOT_LIVE)
    return; /* killed meanwhile: the kill's record stays */
  s->target = 0;
  s->asked = 0;
  s->fail_err = 0;
  s->fail_msg[0] = '\0';
}

void fp__slot_stop_expired(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  const fp_future *f = s->head;
  size_t n = strlen(s->fail_msg);
  snprintf(s->fail_msg + n, sizeof s->fail_msg - n,
           " and did not stop within its grace of %d ms", f->grace_ms);
  if (p->tr->stop != NULL) {
    /* Given up on, not killed: the slot is no longer stopping a task. */
    p->st.deadline_kills += s->fail_err == FP_EDEADLINE;
    char msg[sizeof s->fail_msg];
    int err = s->fail_err;
    memcpy(msg, s->fail_msg, sizeof msg);
    fp__slot_stopped(p, i);
    fp__slot_kill_task(p, i, f, err, msg);
    return;
  }
  fp__slot_kill_task(p, i, f, s->fail_err, s->fail_msg);
}

void fp__slot_terminate(fp_pool *p, unsigned i, int sig)
{
  p->slots[i].asked = 1;
  slot_signal(p, i, sig, NULL, 0, NULL, 1);
}

/* The same, for a signal the fork server sends of its own accord. */
static void slot_note_signal(fp_pool *p, unsigned i, int sig)
{
  p->slots[i].asked = 1;
  slot_signal(p, i, sig, NULL, 0, NULL, 0);
}

void fp__slots_let_go(fp_pool *p)
{
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    p->tr->close(p, i, FP__SEND);
    /* A worker still busy with a cancelled task would make us wait on it;
     * one still in init has run nothing. */
    if (s->head != NULL || (s->state == SLOT_STARTING && s->pid > 0))
      fp__slot_terminate(p, i, SIGKILL);
    else if (s->pid > 0 && s->state != SLOT_OFF)
      slot_note_signal(p, i, SIGCONT); /* the fork server sends it */
  }
  if (p->opts.mode == FP_MODE_PROCESSES && !p->finishing &&
      ctl_send(p, FP__CTL_FINISH, 0, 0, 0) == 0)
    p->finishing = 1;
}

void fp__slot_read(fp_pool *p, unsigned i)
{
  uint64_t done = p->ndone;
  p->tr->recv(p, i);
  if (p->ndone != done) {
    /* Its poll() may have missed the bytes we took. */
    fp__wake_poller(p);
    pthread_cond_broadcast(&p->cond);
  }
}

void fp__slot_recv_ended(fp_pool *p, unsigned i, int err)
{
  fp__slot *s = &p->slots[i];
  if (err == 0) {
    /* It closed its end: dead or dying.  The EXITED report says which. */
    if (s->state != SLOT_DYING)
      fp__slot_kill(p, i, 0, NULL);
    return;
  }
  fp__slot_kill(p, i, err == FP_ENOMEM ? FP_ENOMEM : FP_EPROTO,
                err == FP_ENOMEM ? "out of memory reading a result"
                                 : "protocol error: the worker sent a frame "
                                   "longer than max_message");
  /* A replacement is tried once; twice in a row would loop for ever. */
  if (err == FP_ENOMEM && s->state == SLOT_DYING && s->head == NULL &&
      s->answered == 0 && ++p->oom_starts >= 2)
    fp__pool_break(p, FP_ENOMEM, "out of memory reading a new worker's "
                   "first message");
}

/* --- Starting a worker --------------------------------------------------- */

void fp__slot_await(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  p->nstops -= s->stop_id != 0; /* a worker asked to stop, now gone */
  p->nlive -= s->state == SLOT_LIVE;
  unsigned group = s->group;
  memset(s, 0, sizeof *s);
  s->group = group;
  p->tr->reset(p, i);
  s->state = SLOT_SPAWNING;
  fp__shm_ring_done(&p->shm, i, 0); /* a new worker starts its ring afresh */
}

void fp__spawn(fp_pool *p, unsigned i)
{
  fp__slot_await(p, i);
  if (ctl_send(p, FP__CTL_SPAWN, i, 0, 0) != 0)
    p->slots[i].state = SLOT_OFF;
}

static void slot_spawned(fp_pool *p, const fp__ctl *m, int fds[FP__CTL_NFDS])
{
  fp__slot *s = &p->slots[m->slot];
  if (s->state != SLOT_SPAWNING) {
    close_fds(fds);
    return;
  }
  s->pid = m->pid;
  s->state = SLOT_STARTING;
  if (fds[0] < 0) {
    /* The kernel dropped the descriptors: we are out of them. */
    fp__slot_kill(p, m->slot, 0, NULL);
    fp__pool_break(p, FP_EMFILE, "could not receive worker %d's pipes (too "
                   "many open files)", (int)m->pid);
    return;
  }
  /* Offered now, it takes work before its READY only while no worker is
   * ready (slot_takes_work, dispatch.c): a task must not wait for an init
   * while another worker is idle.  Its READY offers it again. */
  if (p->tr->open(p, m->slot, fds) != 0)
    fp__slot_kill(p, m->slot, 0, NULL);
  else
    fp__sched_offer(p, m->slot);
  if (p->stopping)
    fp__slot_terminate(p, m->slot, SIGKILL); /* it has run nothing */
}

/* --- Breaking the pool --------------------------------------------------- */

static void fail_queue(fp_pool *p, int err, const char *msg)
{
  while (p->qhead) {
    fp_future *f = p->qhead;
    fp__list_unlink(&p->qhead, &p->qtail, f);
    fp__pool_fail(p, f, err, msg);
  }
}

void fp__pool_break(fp_pool *p, int err, const char *fmt, ...)
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
  fail_queue(p, FP_EBROKEN, msg);
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    int busy = s->head != NULL;
    while (s->head)
      fp__slot_pop(p, s, s->head, FP_EBROKEN, msg);
    p->tr->close(p, i, FP__SEND); /* an idle worker exits at EOF */
    if (busy && s->pid > 0 && s->state != SLOT_OFF)
      fp__slot_terminate(p, i, SIGKILL); /* a busy one would make us wait */
  }
}

/* A slot of a retired group: its worker goes, and none replaces it.  One
 * already forked is killed, asked (it is not a death of its own), so that
 * its exit comes back through slot_exited and its tasks go as they would
 * at a death; one still in init has run none of them. */
static void slot_retire(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  if (s->state == SLOT_SPAWNING)
    s->state = SLOT_OFF; /* a SPAWNED still to come is dropped (slot_spawned) */
  else if (s->state == SLOT_STARTING || s->state == SLOT_LIVE)
    fp__slot_terminate(p, i, SIGKILL);
}

void fp__group_fail(fp_pool *p, unsigned i, int err, const char *fmt, ...)
{
  fp__group *g = &p->groups[p->slots[i].group];
  if (g->retired || p->err != 0)
    return;
  char why[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  if (p->ngroups - p->nretired <= 1) {
    fp__pool_break(p, err, "%s", why); /* the last: as with no groups */
    return;
  }
  g->retired = 1;
  p->nretired++;
  fp__log(p, FP_LOG_ERROR, "%s retired, its %u workers with it (%u of %u "
          "hosts left): %s", g->name, g->n, p->ngroups - p->nretired,
          p->ngroups, why);
  for (unsigned k = g->first; k < g->first + g->n; k++)
    slot_retire(p, k);
}

static void forkserver_died(fp_pool *p)
{
  close(p->ctl_fd);
  p->ctl_fd = -1;
  /* A remote pool's bridge ends its socket while the pool lives only when
   * it runs out of memory (lib/mpi/bridge.c). */
  if (p->remote)
    fp__pool_break(p, FP_EBROKEN, "the MPI bridge ran out of memory");
  else
    fp__pool_break(p, FP_EBROKEN, "the fork server (pid %d) died",
                   (int)p->fs_pid);
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    /* Its workers die with it (PR_SET_PDEATHSIG and end of file). */
    p->tr->close(p, i, FP__BOTH);
    p->nlive -= s->state == SLOT_LIVE;
    s->state = SLOT_OFF;
  }
}

/* --- A worker's exit ----------------------------------------------------- */

/* Puts the n newest tasks of slot s, which its worker has not started,
 * back at the front of the queue (n may exceed what it holds). */
static void requeue_newest(fp_pool *p, fp__slot *s, unsigned n)
{
  for (; n > 0 && s->tail != NULL; n--) {
    fp_future *f = s->tail;
    fp__list_unlink(&s->head, &s->tail, f);
    s->inflight--;
    p->ndeadlines -= f->deadline_ms > 0;
    if (fp__future_is_done(f)) {
      fp__pool_let_go(p, f); /* a placeholder */
      continue;
    }
    if (f->kill_at_start) {
      /* Cancelled under a grace before it started: it need not run. */
      fp__pool_fail(p, f, FP_ECANCELLED, "cancelled while running");
      continue;
    }
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
  /* The unsent frames were the newest: they went first. */
  s->send = NULL;
  s->unsent = 0;
}

/* Puts a dead worker's unstarted tasks back at the front of the queue. */
static void requeue(fp_pool *p, fp__slot *s)
{
  requeue_newest(p, s, UINT_MAX);
  s->inflight = 0;
}

/*
 * Records the death of slot s's worker; 1 if it makes more than
 * restart_limit in a row without progress in its group (the whole pool,
 * but for a remote pool's hosts): with no task answered by the group's
 * workers since the first of them, or, for workers that died before READY,
 * with none of them ready since.  Time plays no part: a pool whose other
 * tasks succeed is not in a loop however often some crash, and one whose
 * every task crashes is, however slowly.
 */
static int crash_loop(fp_pool *p, const fp__slot *s)
{
  unsigned limit = p->opts.restart_limit;
  fp__group *g = &p->groups[s->group];
  g->deaths_unanswered++;
  if (!s->ready)
    g->deaths_unready++;
  return limit != 0 &&
         (g->deaths_unanswered > limit || g->deaths_unready > limit);
}

static void describe_exit(char *buf, size_t len, pid_t pid, int status)
{
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGXCPU)
    snprintf(buf, len, "worker %d exceeded its CPU time limit (SIGXCPU)",
             (int)pid);
  else if (WIFSIGNALED(status))
    snprintf(buf, len, "worker %d was killed by signal %d (%s)", (int)pid,
             WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    snprintf(buf, len, "worker %d exited with status %d", (int)pid,
             WEXITSTATUS(status));
}

/* The fork server reaped the slot's worker. */
static void slot_exited(fp_pool *p, unsigned i, pid_t pid, int status)
{
  fp__slot *s = &p->slots[i];
  if (s->pid != pid || s->state == SLOT_OFF || s->state == SLOT_SPAWNING)
    return;
  p->tr->recv(p, i); /* answers it wrote before it died still count */
  /* Dead before it read its oldest task: that task never started. */
  int unread = s->fail_err == 0 && p->tr->unread != NULL && p->tr->unread(p, i);
  p->tr->close(p, i, FP__BOTH);

  char why[200];
  describe_exit(why, sizeof why, pid, status);
  int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0 && s->head == NULL;
  int recycled = clean && p->wcfg.max_tasks != 0 &&
                 s->answered >= p->wcfg.max_tasks;
  /* Over max_worker_rss after an answer: it started nothing after it. */
  int mem_recycled = p->wcfg.max_rss != 0 && s->ready &&
                     WIFEXITED(status) &&
                     WEXITSTATUS(status) == FP__EXIT_RECYCLE;
  recycled = recycled || mem_recycled;
  int asked = s->asked || (s->fail_err != 0 && s->fail_err != FP_EPROTO);
  int died = !recycled && !asked && !(clean && p->stopping);
  if (died) {
    p->st.worker_deaths++;
    fp__log(p, FP_LOG_WARN, "%s", why);
  }
  if (died && !s->ready)
    /* Only init ran: a replacement would die the same way, as a failing
     * init would fail the same way. */
    fp__group_fail(p, i, FP_EBROKEN, "worker initializer failed: %s before "
                   "it was ready", why);
  /* Its group was retired before its READY: it ran none of its tasks (the
   * pool broken instead, they were failed already). */
  int retired = p->groups[s->group].retired;
  unread = unread || (retired && !s->ready && s->fail_err == 0);

  /* A kill for a task fails that task alone, if it still runs; if it
   * answered first, nothing is failed.  Whatever else the worker held goes
   * back to the queue. */
  fp_future *f = s->head;
  /* Ended while asked to stop for a deadline (at the SIGTERM, or killed
   * after the grace): a deadline kill, as one without a grace. */
  if (s->stop_id != 0 && target_running(s) && s->fail_err == FP_EDEADLINE)
    p->st.deadline_kills++;
  if (mem_recycled || unread) {
    /* requeue() below hands out what it held, as not started. */
  } else if (f != NULL && s->target != 0 && !target_running(s)) {
    fp__log(p, FP_LOG_INFO, "task %llu answered before its kill",
            (unsigned long long)s->target);
  } else if (f != NULL && !fp__future_is_done(f) && s->fail_err == 0 &&
             f->retries > 0 && !p->closed) {
    f->retries--; /* requeue() below hands it out again, first */
    fp__log(p, FP_LOG_INFO, "task %llu runs again: %s",
            (unsigned long long)f->id, why);
  } else if (f != NULL) {
    fp__future_died(f, pid, status);
    fp__slot_pop(p, s, f, s->fail_err ? s->fail_err : FP_EWORKER,
             s->fail_err ? s->fail_msg : why);
  }
  requeue(p, s);
  p->nlive -= s->state == SLOT_LIVE;
  s->state = SLOT_OFF;
  s->pid = 0;
  if (p->stopping || retired)
    return;
  if (died && crash_loop(p, s)) {
    fp__group_fail(p, i, FP_EBROKEN,
                   "crash loop: more than %u worker deaths in a row with no "
                   "task answered (last: %s)",
                   p->opts.restart_limit, why);
    return;
  }
  if (recycled)
    p->st.worker_recycles++;
  else
    p->st.worker_restarts++;
  fp__spawn(p, i);
}

/* --- What the fork server sends ------------------------------------------ */

static int all_off(const fp_pool *p)
{
  for (unsigned i = 0; i < p->nslots; i++)
    if (p->slots[i].state != SLOT_OFF)
      return 0;
  return 1;
}

/*
 * A host that is gone reports each worker it had killed (SIGKILL), and
 * they are the pool's kills, as slot_retire's are.  Some of their pipes
 * may have ended before the GONE came (the host closes them when its fork
 * server dies): those slots are dying already, which slot_retire leaves
 * alone, and chance must not make their ends deaths of their own.
 */
static void host_gone_asked(fp_pool *p, const fp__group *g)
{
  for (unsigned k = g->first; k < g->first + g->n; k++)
    if (p->slots[k].state == SLOT_DYING)
      p->slots[k].asked = 1;
}

/* Reads every message the fork server has sent. */
void fp__supervise_ctl(fp_pool *p)
{
  while (p->ctl_fd >= 0) {
    enum fp__io io;
    fp__ctl m;
    int fds[FP__CTL_NFDS];
    int rc = fp__ctl_recv(p->ctl_fd, &io, &m, fds);
    if (rc == 0 && io == FP__IO_AGAIN)
      return;
    if (rc == 0 && io == FP__IO_EOF && p->finishing && all_off(p)) {
      close(p->ctl_fd); /* it exited as asked, every exit reported */
      p->ctl_fd = -1;
      return;
    }
    if (rc < 0 || io == FP__IO_EOF) {
      forkserver_died(p);
      return;
    }
    if (m.slot >= p->nslots) {
      close_fds(fds);
      continue;
    }
    if (m.op == FP__CTL_SPAWNED) {
      slot_spawned(p, &m, fds);
    } else if (m.op == FP__CTL_SPAWN_FAILED) {
      p->slots[m.slot].state = SLOT_OFF;
      fp__group_fail(p, m.slot, m.value, "could not start a worker: %s",
                     fp_strerror(m.value));
    } else if (m.op == FP__CTL_GONE) {
      const fp__group *g = &p->groups[p->slots[m.slot].group];
      host_gone_asked(p, g);
      if (m.value == 0)
        fp__group_fail(p, m.slot, FP_EBROKEN, "the fork server of %s died",
                       g->name);
      else
        fp__group_fail(p, m.slot, FP_EBROKEN, "the relay of %s failed: %s",
                       g->name, fp_strerror(m.value));
    } else if (m.op == FP__CTL_EXITED) {
      fp__cpu_exited(p, &m);
      slot_exited(p, m.slot, m.pid, m.value);
    }
  }
}

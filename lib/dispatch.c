/*
 * The dispatcher: the queue of pending tasks, scheduling onto worker slots,
 * deadlines, results into futures, and the run loop.  It is blind to how
 * frames move: a slot's transport (pool->tr; pipe.c for local workers)
 * sends the frames it queues and hands back each frame that arrives, through
 * fp__dispatch_frame.  Starting, signalling and replacing workers is the
 * supervisor's (supervise.c).  There is no thread of its own: it runs inside
 * the caller's calls, one thread at a time in poll(), the others waiting on
 * a condition variable.  Every field of the pool is guarded by its lock.
 *
 * A task's life: submit puts it on the queue (PENDING); schedule hands it to
 * an idle live worker, or else one with room (RUNNING), and the transport
 * writes its frame when the channel takes it; the worker answers in order,
 * so the oldest task of a worker is the one it runs.  When a worker dies,
 * the supervisor fails that oldest task (or runs it again, if it has
 * retries left) and puts the ones behind it back at the front of the
 * queue.  A future made final while still in a worker's list (a cancelled
 * running task) stays there as a placeholder until its answer or its
 * worker's exit comes back, so the order stays true.
 */
#include "forkpool-private.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

#define FP__PIPELINE_NS ((int64_t)1000 * 1000)
#define FP__PIPELINE_MAX 256

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

/* --- Locking and done-callbacks ------------------------------------------ */

void fp__pool_lock(fp_pool *p)
{
  pthread_mutex_lock(&p->lock);
}

/*
 * The pools whose callbacks this thread is running, innermost first.  A
 * callback that calls the library (to submit the next task, say) does not
 * start another round for the same pool: the round it runs in drains the
 * queue once it returns, so the stack does not grow with the number of
 * tasks.  Per thread, because each thread that makes futures final runs
 * their callbacks; a chain on the stack, because a callback of one pool may
 * run another pool's.
 */
typedef struct cb_round {
  const fp_pool *pool;
  struct cb_round *outer;
} cb_round;

static _Thread_local cb_round *cb_rounds;

int fp__in_callbacks(const fp_pool *p)
{
  for (const cb_round *r = cb_rounds; r != NULL; r = r->outer)
    if (r->pool == p)
      return 1;
  return 0;
}

void fp__callbacks_queue(fp_pool *p, fp_future *f)
{
  fp_future_retain(f);
  f->cb_queued = 1;
  f->cb_next = p->cbq;
  p->cbq = f;
}

/* Runs the callbacks of futures made final, each list without the lock,
 * unless this thread is running them already. */
static void run_callbacks(fp_pool *p)
{
  if (p->cbq == NULL || fp__in_callbacks(p))
    return;
  cb_round round = {p, cb_rounds};
  cb_rounds = &round;
  while (p->cbq != NULL) {
    fp_future *f = p->cbq;
    p->cbq = f->cb_next;
    f->cb_next = NULL;
    fp__callback *list;
    while ((list = f->callbacks) != NULL) {
      f->callbacks = NULL;
      pthread_mutex_unlock(&p->lock);
      fp__callbacks_run(f, list);
      pthread_mutex_lock(&p->lock);
    }
    f->cb_queued = 0;
    fp_future_release(f);
  }
  cb_rounds = round.outer;
}

void fp__pool_unlock(fp_pool *p)
{
  run_callbacks(p);
  fp__signal_done(p);
  pthread_mutex_unlock(&p->lock);
}

/* --- The scheduler's rings ------------------------------------------------ */

/*
 * Which worker takes a task is found without a look at every slot: slots
 * that may take work wait in rings (idle ones, ones with room, ones with
 * frames to write), each slot at most once per ring.  An entry can go
 * stale (its worker died, filled up, wrote everything); it is checked when
 * taken, and an answer or a new channel puts the slot back.
 */
/*
 * The dispatcher's own epoll set, for a transport that takes its events
 * (ep_event): a pass then costs the descriptors that are ready, where
 * poll() would walk two per worker.  Without epoll, or without a
 * descriptor for it, the dispatcher polls as before: 0 either way, or
 * FP_ENOMEM.
 */
#define FP__EVS_MAX 1024 /* events taken per pass; the rest wait for the next */
static int ev_init(fp_pool *p)
{
#ifdef HAVE_SYS_EPOLL_H
  if (p->tr->ep_event == NULL)
    return 0;
  size_t n = 2 * (size_t)p->nslots + 2;
  n = n < FP__EVS_MAX ? n : FP__EVS_MAX;
  struct epoll_event *evs = calloc(n, sizeof *evs);
  if (evs == NULL)
    return FP_ENOMEM;
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd >= 0)
    fd = fp__fd_high(fd);
  if (fd < 0) {
    free(evs);
    return 0; /* out of descriptors: poll() needs none */
  }
  p->evfd = fd;
  p->evs = evs;
  p->nevs = (unsigned)n;
#else
  (void)p;
#endif
  return 0;
}

int fp__sched_init(fp_pool *p)
{
  size_t n = p->nslots;
  p->evfd = p->ev_ctl = -1;
  unsigned *v = calloc(1, 3 * n * sizeof *v + n);
  if (v == NULL)
    return FP_ENOMEM;
  p->idle.v = v;
  p->room.v = v + n;
  p->sendq.v = v + 2 * n;
  p->ringed = (unsigned char *)(v + 3 * n);
  p->last_pick = -1;
  p->ncpus = fp__cpus_allowed();
  return ev_init(p);
}

void fp__sched_free(fp_pool *p)
{
  free(p->idle.v);
  p->idle.v = NULL;
  if (p->evs != NULL) /* evfd is ours (a forked child's is a copy) */
    close(p->evfd);
  free(p->evs);
  p->evs = NULL;
  p->evfd = -1;
}

static void ring_put(fp_pool *p, fp__slotq *q, unsigned bit, unsigned i)
{
  if (p->ringed[i] & bit)
    return;
  p->ringed[i] |= bit;
  unsigned at = q->head + q->len++;
  q->v[at >= p->nslots ? at - p->nslots : at] = i;
}

static unsigned ring_take(fp_pool *p, fp__slotq *q, unsigned bit)
{
  unsigned i = q->v[q->head];
  if (++q->head == p->nslots)
    q->head = 0;
  q->len--;
  p->ringed[i] &= ~bit;
  return i;
}

/* The newest entry of q, for the idle ring: the worker idle last. */
static unsigned ring_take_newest(fp_pool *p, fp__slotq *q, unsigned bit)
{
  unsigned at = q->head + --q->len;
  unsigned i = q->v[at >= p->nslots ? at - p->nslots : at];
  p->ringed[i] &= ~bit;
  return i;
}

/* Slot i's list got shorter: it is idle, or has room again. */
static void sched_freed(fp_pool *p, unsigned i)
{
  if (p->slots[i].inflight == 0)
    ring_put(p, &p->idle, FP__IN_IDLE, i);
  else
    ring_put(p, &p->room, FP__IN_ROOM, i);
}

void fp__sched_offer(fp_pool *p, unsigned i)
{
  ring_put(p, &p->idle, FP__IN_IDLE, i);
}

/* --- Lists and final states ---------------------------------------------- */

void fp__list_push(fp_future **head, fp_future **tail, fp_future *f)
{
  f->next = NULL;
  f->prev = *tail;
  if (*tail)
    (*tail)->next = f;
  else
    *head = f;
  *tail = f;
}

void fp__list_unlink(fp_future **head, fp_future **tail, fp_future *f)
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

/* Counts a map chunk's items by outcome, as fp__future_finish found them. */
static void account_chunk(fp_pool *p, const fp_future *f)
{
  p->st.finished += f->chunk_ok;
  p->st.failed += f->nitems - f->chunk_ok;
}

/*
 * Bookkeeping for a future that just became final: counters, callbacks,
 * and the pool's reference unless it stays behind as a placeholder.
 */
static void finalized(fp_pool *p, fp_future *f, int keep_ref)
{
  p->ndone++;
  if (f->state == FP_FINISHED && f->nitems > 1)
    account_chunk(p, f);
  else if (f->state == FP_FINISHED)
    p->st.finished++;
  else if (f->state == FP_CANCELLED)
    p->st.cancelled += f->nitems;
  else
    p->st.failed += f->nitems;
  if (f->callbacks != NULL)
    fp__callbacks_queue(p, f);
  /* Made final outside the poll loop (a cancel, a shutdown): the thread in
   * poll() may be waiting for f, and the others wait for its broadcast. */
  if (p->polling)
    fp__wake_poller(p);
  if (!keep_ref)
    fp__pool_let_go(p, f);
}

void fp__pool_let_go(fp_pool *p, fp_future *f)
{
  if (f->shm_len != 0) {
    fp__shm_free(&p->shm, f->shm_off, f->shm_len);
    f->shm_len = 0;
  }
  fp__future_drop_frame(f);
  fp_future_release(f);
}

void fp__pool_fail(fp_pool *p, fp_future *f, int err, const char *msg)
{
  fp__future_fail(f, err, "%s", msg);
  finalized(p, f, 0);
}

void fp__pool_fail_held(fp_pool *p, fp_future *f, int err, const char *msg)
{
  fp__future_fail(f, err, "%s", msg);
  finalized(p, f, 1);
}

void fp__slot_pop(fp_pool *p, fp__slot *s, fp_future *f, int err,
                  const char *msg)
{
  fp__list_unlink(&s->head, &s->tail, f);
  s->inflight--;
  p->ndeadlines -= f->deadline_ms > 0;
  sched_freed(p, (unsigned)(s - p->slots));
  if (s->send == f) {
    s->send = f->next;
    s->send_off = 0;
    s->unsent--;
  }
  if (fp__future_is_done(f))
    fp__pool_let_go(p, f); /* a placeholder */
  else
    fp__pool_fail(p, f, err, msg);
}

/* --- Waking the thread in poll() ----------------------------------------- */

void fp__wake_poller(fp_pool *p)
{
  if (!p->polling || p->wake_pending)
    return;
  p->wake_pending = 1;
  (void)!write(p->wake[1], "", 1);
}

/* --- Results ------------------------------------------------------------- */

/* The time for an answer's bookkeeping: one reading per held batch.  The
 * last reading is kept too (clock_last), for the pass that made it. */
static int64_t answer_clock(fp_pool *p)
{
  if (p->clock_ns > 0)
    return p->clock_ns;
  int64_t now = fp__now_ns();
  if (p->clock_ns < 0)
    p->clock_ns = now;
  p->clock_last = now;
  return now;
}

void fp__clock_fresh(fp_pool *p)
{
  p->clock_last = 0;
}

int fp__clock_hold(fp_pool *p)
{
  if (p->clock_ns != 0)
    return 0; /* held by a caller */
  p->clock_ns = -1; /* read at the first answer */
  return 1;
}

void fp__clock_release(fp_pool *p, int took)
{
  if (took)
    p->clock_ns = 0;
}

/* Reads kind and message after a failure's code: "kind: message". */
static void fail_from_body(fp_pool *p, fp_future *f, int code,
                           const char *body, size_t len, size_t off)
{
  const char *kind, *msg;
  size_t kind_len, msg_len;
  if (fp__read_str(body, len, &off, &kind, &kind_len) == 0 &&
      fp__read_str(body, len, &off, &msg, &msg_len) == 0 &&
      kind_len <= INT_MAX && msg_len <= INT_MAX)
    fp__future_fail_parts(f, code, kind, kind_len, msg, msg_len);
  else
    fp__future_fail(f, FP_EPROTO, "protocol error: malformed failure");
  if (p != NULL)
    finalized(p, f, 0);
}

/* The task now at the head of slot i was cancelled while it waited in the
 * pipe: it starts now, so it is stopped now. */
static void stop_at_start(fp_pool *p, unsigned i)
{
  fp_future *f = p->slots[i].head;
  if (fp__future_is_done(f))
    fp__slot_kill_task(p, i, f, 0, NULL); /* a placeholder, no grace */
  else
    fp__slot_stop_task(p, i, f, FP_ECANCELLED, "cancelled while running");
}

/* The worker's READY, or the failure of its init function. */
static void handle_ready(fp_pool *p, unsigned i, int code, const char *body,
                         size_t len, size_t off)
{
  fp__slot *s = &p->slots[i];
  if (code == 0 && s->state == SLOT_STARTING) {
    p->oom_starts = 0;
    p->groups[s->group].deaths_unready = 0;
    s->state = SLOT_LIVE;
    p->nlive++;
    s->ready = 1;
    s->head_since = fp__now_ns();
    fp__sched_offer(p, i); /* it takes work from now on, not before */
    if (s->head != NULL && s->head->kill_at_start)
      stop_at_start(p, i); /* cancelled before its worker was ready */
  } else if (code != 0) {
    fp_future tmp;
    memset(&tmp, 0, sizeof tmp);
    fail_from_body(NULL, &tmp, code, body, len, off);
    fp__group_fail(p, i, FP_EBROKEN, "worker initializer failed: %s",
                   tmp.error ? tmp.error : "?");
    free(tmp.error);
  }
}

/* The worker's answer is not for its oldest task: it is out of step. */
static int answer_out_of_step(const fp__slot *s, uint64_t id)
{
  fp_future *f = s->head;
  /* A dying worker's answers written before it died still count. */
  return f == NULL || f->id != id || f == s->send ||
         (s->state != SLOT_LIVE && s->state != SLOT_DYING);
}

/* How a task that was asked to stop ends, whatever it answers: err
 * (FP_EDEADLINE, FP_ECANCELLED; 0: it was not asked), with its own failure
 * text, or msg if it sent none. */
typedef struct stop_note {
  int err;
  char msg[sizeof ((fp__slot *)0)->fail_msg];
} stop_note;

/* Takes the answered task off slot i's list: its future, which the caller
 * makes final or lets go of; *stop says whether it was asked to stop. */
static fp_future *pop_answered(fp_pool *p, unsigned i, stop_note *stop)
{
  fp__slot *s = &p->slots[i];
  fp_future *f = s->head;
  stop->err = 0;
  if (s->stop_id != 0 && s->stop_id == f->id) {
    stop->err = s->fail_err;
    snprintf(stop->msg, sizeof stop->msg, "%s", s->fail_msg);
    fp__slot_stopped(p, i); /* it stopped in time: the worker stays */
  }
  fp__list_unlink(&s->head, &s->tail, f);
  s->inflight--;
  s->answered++;
  p->ndeadlines -= f->deadline_ms > 0;
  sched_freed(p, i);
  p->groups[s->group].deaths_unanswered = 0; /* progress: not a loop */
  if (f->timed) {
    int64_t now = answer_clock(p);
    f->run_ns = now - s->head_since;
    s->head_since = now; /* the next one starts now */
    s->batch_ns += f->run_ns; /* timed when the read is over: time_batch */
    s->batch_items += f->nitems;
  }
  /* The next one was cancelled with FP_CANCEL_RUNNING while it waited in
   * the pipe: it starts now, so it is stopped now. */
  if (s->head != NULL && s->head->kill_at_start)
    stop_at_start(p, i);
  return f;
}

/*
 * A running mean of the time per item, over about the last 16 answers,
 * sizes the pipelines (window()).  It is taken over what one read of a
 * slot brought: the answers read together share the time since the first
 * of them became the running task.  If the worker has nothing written left
 * to run, it may have waited for us for part of that time, and the more so
 * the more workers we serve: such a read may lower the mean, never raise
 * it, or a slow parent would shrink the pipelines that hide its slowness.
 */
static void time_batch(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  if (s->batch_items == 0)
    return;
  int64_t per = s->batch_ns / (int64_t)s->batch_items;
  int dry = s->inflight == s->unsent; /* nothing written is unanswered */
  if (p->avg_run_ns == 0)
    p->avg_run_ns = per > 0 ? per : 1; /* the first figure is the mean: a
                                          sixteenth of it would make the
                                          window 16 times too deep */
  else if (!dry || per < p->avg_run_ns)
    for (uint64_t k = 0; k < s->batch_items && k < 16; k++)
      p->avg_run_ns += (per - p->avg_run_ns) / 16;
  s->batch_ns = 0;
  s->batch_items = 0;
}

/* A success the worker left in its ring: copied out, then the ring space
 * is handed back. */
static void handle_ring_result(fp_pool *p, unsigned i, const char *body,
                               size_t len)
{
  fp__slot *s = &p->slots[i];
  uint64_t id, pos;
  size_t rlen;
  const char *at = NULL;
  if (fp__decode_result_shm(body, len, &id, &pos, &rlen) == 0 &&
      rlen <= p->opts.max_message)
    at = fp__shm_ring_read(&p->shm, i, s->ring_tail, pos, rlen);
  if (at == NULL || answer_out_of_step(s, id)) {
    fp__slot_kill(p, i, FP_EPROTO, "protocol error: the worker sent a "
                  "result that is not in its ring or not for its task");
    p->tr->close(p, i, FP__RECV); /* the stream is out of step */
    return;
  }
  stop_note stop;
  fp_future *f = pop_answered(p, i, &stop);
  p->st.shared_results++;
  if (fp__future_is_done(f)) {
    fp__pool_let_go(p, f); /* a cancelled task's answer */
  } else if (stop.err != 0) {
    fp__pool_fail(p, f, stop.err, stop.msg); /* a result after the ask */
  } else {
    fp__future_finish_lent(f, at, 0, rlen); /* copies it out first */
    finalized(p, f, 0);
  }
  s->ring_tail = pos + rlen;
  fp__shm_ring_done(&p->shm, i, s->ring_tail);
}

void fp__dispatch_frame(fp_pool *p, unsigned i, char *owned,
                        const char *body, size_t len)
{
  fp__slot *s = &p->slots[i];
  uint64_t id;
  int code;
  size_t off;
  if (len > 0 && (unsigned char)body[0] == FP__MSG_RESULT_SHM) {
    handle_ring_result(p, i, body, len);
    free(owned);
    return;
  }
  int rc = fp__decode_result_head(body, len, &id, &code, &off);
  if (rc == 0 && code != 0 && !fp__is_worker_code(code))
    rc = FP_EPROTO;
  if (rc != 0) {
    free(owned);
    fp__slot_kill(p, i, rc == FP_ENOMEM ? FP_ENOMEM : FP_EPROTO,
                  rc == FP_ENOMEM ? "out of memory reading a result"
                                  : "protocol error: the worker sent a "
                                    "malformed result");
    p->tr->close(p, i, FP__RECV); /* the stream is out of step */
    return;
  }
  if (id == 0) {
    handle_ready(p, i, code, body, len, off);
    free(owned);
    return;
  }
  if (answer_out_of_step(s, id)) {
    free(owned);
    fp__slot_kill(p, i, FP_EPROTO, "protocol error: the worker sent a "
                  "message that is not a result for its task");
    return;
  }
  stop_note stop;
  fp_future *f = pop_answered(p, i, &stop);
  if (fp__future_is_done(f)) {
    free(owned); /* a cancelled task's answer */
    fp__pool_let_go(p, f);
  } else if (stop.err != 0) {
    /* Asked to stop: it ends so, with its own message if it failed. */
    if (code != 0)
      fail_from_body(p, f, stop.err, body, len, off);
    else
      fp__pool_fail(p, f, stop.err, stop.msg);
    free(owned);
  } else if (code == 0) {
    if (owned != NULL)
      fp__future_finish(f, owned, off, len);
    else
      fp__future_finish_lent(f, body, off, len);
    finalized(p, f, 0);
  } else {
    fail_from_body(p, f, code, body, len, off);
    free(owned);
  }
}

/* --- Scheduling ---------------------------------------------------------- */

/*
 * How many tasks one worker is handed ahead.  Automatic: enough to cover
 * about FP__PIPELINE_NS of work, so that short tasks travel in batches and
 * long ones stay at 2, where an idle worker never waits behind a busy one
 * for more than one task.
 *
 * The time per task is the dispatcher's clock, from a task's start to its
 * answer, and with more workers than CPUs that clock also runs while a
 * worker waits for a CPU: 256 workers on 2 CPUs each get 1/128 of one, a
 * task of 2 us seems to take hundreds, the window falls to 2 and the parent
 * pays a write and a read for every task or two.  So with more workers
 * than CPUs a task counts its share of a CPU, ncpus / nslots of the time it
 * seemed to take: what it would take with the CPUs to itself.  (The CPU
 * time a worker stamps would say the same of a task that computes, but
 * count nothing for one that sleeps or waits for I/O, which would then get
 * a window of 256 and keep its worker's queue long.)
 */
static unsigned window(const fp_pool *p)
{
  if (p->opts.max_inflight != 0)
    return p->opts.max_inflight;
  if (p->avg_run_ns <= 0)
    return 2;
  int64_t per = p->avg_run_ns;
  if (p->nslots > p->ncpus)
    per = per * p->ncpus / p->nslots;
  int64_t w = FP__PIPELINE_NS / (per > 0 ? per : 1);
  return w < 2 ? 2 : w > FP__PIPELINE_MAX ? FP__PIPELINE_MAX : (unsigned)w;
}

/*
 * Whether to write a slot's new frames now or let them gather: now if the
 * worker may soon run dry (fewer than 2 written and unanswered), or a
 * writev's worth is waiting.  Every pass of the dispatcher writes all.
 */
static int flush_now(const fp_pool *p, const fp__slot *s)
{
  unsigned batch = p->tr->batch != 0 ? p->tr->batch : FP__IOV_BATCH;
  return !s->blocked &&
         (s->inflight - s->unsent < 2 || s->unsent >= batch);
}

/*
 * A worker still in init takes work only while no worker of the pool is
 * ready (after a crash in a pool of one, say): a task then waits for an
 * init whatever we do, and waits less in its pipe, run as soon as init
 * returns, than written after the READY.  While a worker is ready, a task
 * never waits behind an init: the worker in init gets work at its READY
 * (handle_ready offers it).  A thread or inline worker takes work from
 * the start, as it always did (start_local).
 */
static int slot_takes_work(const fp_pool *p, const fp__slot *s, unsigned w)
{
  int up = s->state == SLOT_LIVE ||
           (s->state == SLOT_STARTING &&
            (p->nlive == 0 || p->opts.mode != FP_MODE_PROCESSES));
  return up && s->can_send && s->inflight < w &&
         (p->wcfg.max_tasks == 0 || s->assigned < p->wcfg.max_tasks);
}

/*
 * An idle slot that takes work, off the idle ring, or -1: the one idle
 * last, whose worker's cache is warm and, over MPI, whose host's relay is
 * awake.  Tasks that come one at a time then go to one worker, and the
 * others (and their hosts, which wait for MPI by looking) stay asleep
 * instead of taking turns at waking.  One given work since it went there
 * moves to the room ring.
 */
static int take_idle(fp_pool *p, unsigned w)
{
  while (p->idle.len > 0) {
    unsigned i = ring_take_newest(p, &p->idle, FP__IN_IDLE);
    const fp__slot *s = &p->slots[i];
    if (!slot_takes_work(p, s, w))
      continue;
    if (s->inflight == 0)
      return (int)i;
    ring_put(p, &p->room, FP__IN_ROOM, i);
  }
  return -1;
}

static int take_room(fp_pool *p, unsigned w)
{
  while (p->room.len > 0) {
    unsigned i = ring_take(p, &p->room, FP__IN_ROOM);
    if (slot_takes_work(p, &p->slots[i], w))
      return (int)i;
  }
  return -1;
}

/*
 * The worker for the next task: an idle one first (the one idle last),
 * so that a task never waits behind another while a worker is idle; then
 * one with room (window()), the last one taken after those that answered.
 */
static int pick(fp_pool *p, unsigned w)
{
  int last = p->last_pick;
  const fp__slot *s = last >= 0 ? &p->slots[last] : NULL;
  int i = take_idle(p, w);
  if (i < 0)
    i = take_room(p, w);
  if (i < 0 && s != NULL && slot_takes_work(p, s, w))
    i = last;
  if (i >= 0 && last >= 0 && i != last)
    ring_put(p, &p->room, FP__IN_ROOM, (unsigned)last); /* checked when taken */
  if (i >= 0)
    p->last_pick = i;
  return i;
}

/* Writes slot i's frames (all, or if its worker may run dry) and keeps
 * its place in the epoll set; 1 if it is left blocked. */
static int send_slot(fp_pool *p, unsigned i, int all)
{
  fp__slot *s = &p->slots[i];
  if (s->send != NULL && (all || flush_now(p, s)))
    p->tr->send(p, i);
  if (fp__ep_set(p) >= 0)
    p->tr->ep_sync(p, i); /* its send cursor may have come or gone */
  return s->send != NULL && s->blocked;
}

/* Writes the frames of every slot that has some; counts those left
 * blocked.  Between two of these, only a schedule's new tasks can make a
 * slot's frames due (answers are read in passes), so a submit looks at the
 * slot it gave work to alone. */
static void send_all(fp_pool *p)
{
  unsigned n = p->sendq.len;
  p->nblocked = 0;
  while (n-- > 0) {
    unsigned i = ring_take(p, &p->sendq, FP__IN_SENDQ);
    p->nblocked += send_slot(p, i, 1);
    if (p->slots[i].send != NULL)
      ring_put(p, &p->sendq, FP__IN_SENDQ, i);
  }
}

void fp__schedule(fp_pool *p, int all)
{
  unsigned w = window(p);
  while (p->qhead != NULL) {
    int best = pick(p, w);
    if (best < 0)
      break;
    fp__slot *s = &p->slots[best];
    fp_future *f = p->qhead;
    fp__list_unlink(&p->qhead, &p->qtail, f);
    if (s->head == NULL && f->timed)
      s->head_since = answer_clock(p);
    fp__list_push(&s->head, &s->tail, f);
    f->state = FP_RUNNING;
    f->slot = best;
    s->inflight++;
    s->assigned++;
    s->unsent++;
    p->ndeadlines += f->deadline_ms > 0;
    if (s->send == NULL) {
      s->send = f;
      s->send_off = 0;
      ring_put(p, &p->sendq, FP__IN_SENDQ, (unsigned)best);
    }
    if (!all)
      p->nblocked += send_slot(p, (unsigned)best, 0);
  }
  if (all)
    send_all(p);
}

/* --- Deadlines ----------------------------------------------------------- */

/*
 * When slot i's running task passes its deadline (ns), or -1 if it has
 * none now; *limit_ms is the time it is allowed.  A map chunk's deadline is
 * per item: its worker stamps each item's start in shared memory, so the
 * item it runs gets deadline_ms from then, and *item says which (+ 1).  A
 * chunk not started yet gets deadline_ms from when it became the worker's
 * head, as a task does; one whose items are all done, or whose worker went
 * on to a later task, has its answer on the way and none.  Without a stamp
 * from this worker (no shared memory), a chunk of n items gets n times the
 * deadline.
 */
static int64_t deadline_end(const fp_pool *p, unsigned i, unsigned *item,
                            int64_t *limit_ms)
{
  const fp__slot *s = &p->slots[i];
  const fp_future *f = s->head;
  if (s->state != SLOT_LIVE || f == NULL || f->deadline_ms <= 0 ||
      fp__future_is_done(f))
    return -1;
  int64_t per = (int64_t)f->deadline_ms * 1000000, since;
  uint64_t id, at;
  *item = 0;
  *limit_ms = f->deadline_ms;
  if (f->nitems == 1)
    return s->head_since + per;
  if (fp__stamp_read(&p->shm, i, s->pid, &id, &at, &since) != 0) {
    *limit_ms *= f->nitems;
    return s->head_since + per * f->nitems;
  }
  if (id == f->id && at >= f->nitems)
    return -1;
  if (id == f->id) {
    *item = (unsigned)at + 1;
    return since + per;
  }
  for (const fp_future *g = f->next; g != NULL; g = g->next)
    if (g->id == id)
      return -1;
  return s->head_since + per;
}

/* Slot i's task was asked to stop: once its grace is over, the worker is
 * killed, unless its answer waits in the pipe.  When, or -1. */
static int64_t check_grace(fp_pool *p, unsigned i, int64_t now)
{
  fp__slot *s = &p->slots[i];
  if (s->state != SLOT_LIVE)
    return -1;
  if (now < s->stop_kill_ns)
    return s->stop_kill_ns;
  fp__slot_read(p, i);
  if (s->stop_id != 0 && s->state == SLOT_LIVE)
    fp__slot_stop_expired(p, i);
  return -1;
}

/* Asks tasks past their deadline to stop, or kills their workers; kills
 * those whose grace is over.  Returns the ms to the next of these, or -1. */
static int check_deadlines(fp_pool *p)
{
  if (p->ndeadlines == 0 && p->nstops == 0)
    return -1; /* no task in a worker has one, and none is in its grace */
  int64_t now = fp__now_ns(), next = -1, end, limit_ms;
  unsigned item;
  for (unsigned i = 0; i < p->nslots; i++) {
    fp__slot *s = &p->slots[i];
    if (s->stop_id != 0)
      end = check_grace(p, i, now);
    else
      end = deadline_end(p, i, &item, &limit_ms);
    if (end < 0)
      continue;
    /* Its answer may wait in the pipe: then it is done, and the worker
     * runs the next task, whose time starts now. */
    if (now >= end && s->stop_id == 0) {
      fp__slot_read(p, i);
      if ((end = deadline_end(p, i, &item, &limit_ms)) < 0)
        continue;
    }
    if (now >= end && s->stop_id == 0) {
      fp_future *f = s->head;
      char msg[120];
      snprintf(msg, sizeof msg, "task ran past its deadline of %lld ms",
               (long long)limit_ms);
      f->late_item = item; /* the map fails that item alone */
      p->st.deadline_kills += f->grace_ms <= 0 || f->nitems != 1;
      fp__slot_stop_task(p, i, f, FP_EDEADLINE, msg);
      if (s->stop_id != 0)
        end = s->stop_kill_ns; /* its grace */
    }
    if (now >= end) {
      continue;
    } else if (next < 0 || end - now < next) {
      next = end - now;
    }
  }
  return next < 0 ? -1 : (int)((next + 999999) / 1000000);
}

/* --- The run loop -------------------------------------------------------- */

static void drain_wake(fp_pool *p)
{
  char drain[64];
  while (read(p->wake[0], drain, sizeof drain) > 0)
    ;
  p->wake_pending = 0;
}

/* The poll set: the fork server's socket, the wake pipe, then what each
 * slot's transport asks for. */
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
    int k = p->tr->poll_add(p, i, &p->pfd[n]);
    for (int j = 0; j < k; j++)
      p->pfd_who[n++] = (int)i;
  }
  return n;
}

static void handle_events(fp_pool *p, int n)
{
  int ctl_ready = 0;
  for (int k = 0; k < n; k++) {
    int who = p->pfd_who[k];
    if (p->pfd[k].revents == 0)
      continue;
    if (who == -1) {
      ctl_ready = 1;
    } else if (who == -2) {
      drain_wake(p);
    } else {
      p->tr->poll_event(p, (unsigned)who, &p->pfd[k]);
      time_batch(p, (unsigned)who);
    }
  }
  /* Last: its messages may close and reopen slots' channels. */
  if (ctl_ready)
    fp__supervise_ctl(p);
}

/* Waits with poll() over every slot's descriptors, then handles them. */
static int wait_poll(fp_pool *p, int timeout_ms)
{
  int n = build_pollset(p);
  p->polling = 1;
  pthread_mutex_unlock(&p->lock);
  int r = poll(p->pfd, (nfds_t)n, timeout_ms);
  int saved = errno;
  pthread_mutex_lock(&p->lock);
  p->polling = 0;
  fp__clock_fresh(p);
  if (r < 0 && saved != EINTR)
    return -saved;
  if (r > 0)
    handle_events(p, n);
  return 0;
}

#ifdef HAVE_SYS_EPOLL_H
/*
 * The wake pipe and the fork server's socket in the dispatcher's set.  The
 * socket is one-shot, armed again after its messages are read: supervise.c
 * and pool.c close it without a word to us, and a copy held by a process
 * the caller forked would keep a level-triggered entry reporting it for
 * ever.  One-shot, such an entry reports once, and is told apart by the
 * descriptor we hold then.
 */
static void ev_arm(fp_pool *p)
{
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = FP__EV_WAKE};
  if (!p->ev_wake && p->wake[0] >= 0 &&
      epoll_ctl(p->evfd, EPOLL_CTL_ADD, p->wake[0], &ev) == 0)
    p->ev_wake = 1;
  if (p->ctl_fd < 0 || (p->ev_ctl == p->ctl_fd && p->ev_ctl_armed))
    return;
  ev = (struct epoll_event){.events = EPOLLIN | EPOLLONESHOT,
                            .data.u64 = FP__EV_CTL};
  int op = p->ev_ctl == p->ctl_fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(p->evfd, op, p->ctl_fd, &ev) == 0) {
    p->ev_ctl = p->ctl_fd;
    p->ev_ctl_armed = 1;
  }
}

/* Waits on the dispatcher's epoll set, then handles what is ready. */
static int wait_epoll(fp_pool *p, int timeout_ms)
{
  ev_arm(p);
  struct epoll_event *evs = p->evs;
  p->polling = 1;
  pthread_mutex_unlock(&p->lock);
  int r = epoll_wait(p->evfd, evs, (int)p->nevs, timeout_ms);
  int saved = errno;
  pthread_mutex_lock(&p->lock);
  p->polling = 0;
  fp__clock_fresh(p);
  if (r < 0 && saved != EINTR)
    return -saved;
  int ctl_ready = 0;
  for (int k = 0; k < r; k++) {
    uint64_t tag = evs[k].data.u64;
    if (tag == FP__EV_WAKE) {
      drain_wake(p);
    } else if (tag == FP__EV_CTL) {
      p->ev_ctl_armed = 0;
      ctl_ready = p->ctl_fd >= 0 && p->ctl_fd == p->ev_ctl;
    } else if ((tag >> 1) < p->nslots) {
      unsigned i = (unsigned)(tag >> 1);
      p->tr->ep_event(p, i, (unsigned)(tag & 1), evs[k].events);
      time_batch(p, i);
    }
  }
  /* Last: its messages may close and reopen slots' channels. */
  if (ctl_ready)
    fp__supervise_ctl(p);
  return 0;
}
#endif

void fp__ep_sync(fp_pool *p)
{
  if (p->epfd < 0)
    return;
#ifdef HAVE_SYS_EPOLL_H
  if (p->evfd >= 0) {
    /* The slots are in our set, and our set in the caller's. */
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = FP__EV_WAKE};
    if (!p->ev_user && (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->evfd, &ev) == 0 ||
                        errno == EEXIST))
      p->ev_user = 1;
    return;
  }
#endif
  for (unsigned i = 0; i < p->nslots; i++)
    p->tr->ep_sync(p, i);
}

/*
 * One dispatcher pass: wait for up to timeout_ms (less if a deadline falls
 * sooner) without the lock, handle what is ready, hand out work, run
 * callbacks.  Called with the lock held.
 */
int fp__poll_once(fp_pool *p, int timeout_ms)
{
  uint64_t done = p->ndone;
  fp__clock_fresh(p); /* the lock may have been let go since a reading */
  /* Work queued outside a pass (a task put back, a worker found ready by a
   * cancel that read its pipe first) is handed out before we sleep, or
   * nothing would wake us; and before the deadlines, which start with it.
   * Frames that submits let gather go out now too: the wait watches a task
   * pipe only while it is full (pipe.c), so they would otherwise wait for
   * their worker's next answer, and it could run dry meanwhile. */
  if (p->qhead != NULL || p->sendq.len != 0)
    fp__schedule(p, 1);
  int next = check_deadlines(p);
  if (next >= 0 && (timeout_ms < 0 || next < timeout_ms))
    timeout_ms = next;
  if (p->ndone != done)
    timeout_ms = 0; /* it read answers: report them without waiting */
  int rc = 0;
  /* A task to run here and now (inline mode) is the pass's event: no
   * system call to find it. */
  if (p->tr->run_now != NULL && p->tr->run_now(p))
    ;
#ifdef HAVE_SYS_EPOLL_H
  else if (p->evfd >= 0)
    rc = wait_epoll(p, timeout_ms);
#endif
  else
    rc = wait_poll(p, timeout_ms);
  if (rc != 0)
    return rc;
  /* What the pass hands out starts when its answers came: the reading
   * they took (since the lock was last taken back), or one more. */
  int took = fp__clock_hold(p);
  if (took && p->clock_last > 0)
    p->clock_ns = p->clock_last;
  check_deadlines(p);
  p->since_pass = 0;
  fp__schedule(p, 1);
  fp__clock_release(p, took);
  fp__ep_sync(p);
  fp__signal_done(p);
  pthread_cond_broadcast(&p->cond);
  run_callbacks(p);
  return 0;
}

/*
 * An event loop waits on fp_pool_fd, then calls fp_pool_dispatch.  Futures
 * made final in any other call (a submit, a state query) must wake it too:
 * keep a pipe in the epoll set (never in our own poll set) readable while
 * some are unreported.
 */
void fp__signal_done(fp_pool *p)
{
  if (p->epfd < 0 || p->ndone == p->ndone_reported || p->notify_pending)
    return;
  p->notify_pending = 1;
  (void)!write(p->notify[1], "", 1);
}

void fp__cond_wait_until(fp_pool *p, int64_t deadline)
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

int fp__pool_run_until(fp_pool *p, fp__pool_pred pred, void *arg,
                       int64_t deadline)
{
  if (!fp__pool_owned(p))
    return FP_EINVAL; /* a copy of the pool in a forked child */
  for (;;) {
    if (pred(p, arg))
      return 0;
    int ms = fp__remaining_ms(deadline);
    if (!p->polling) {
      int rc = fp__poll_once(p, ms);
      if (rc != 0)
        return rc;
      if (pred(p, arg))
        return 0;
    } else if (ms != 0) {
      fp__cond_wait_until(p, deadline);
      continue;
    }
    if (ms == 0)
      return FP_ETIMEDOUT;
  }
}

static int future_done(fp_pool *p, void *arg)
{
  (void)p;
  return fp__future_is_done(arg);
}

int fp__pool_wait_future(fp_pool *p, fp_future *f, int64_t deadline)
{
  return fp__pool_run_until(p, future_done, f, deadline);
}

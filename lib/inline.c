/*
 * The inline transport (FP_MODE_INLINE): no process and no thread.  The
 * pool's one slot runs its task in the caller's thread, inside the
 * dispatcher pass of a call that waits (fp_future_result, fp_map_next,
 * fp_wait, fp_pool_dispatch, ...), one task per pass, in submission order.
 * The TASK frame goes through the worker's own code (fp__worker_handle) and
 * the RESULT frame back through fp__dispatch_frame, so futures, maps,
 * callbacks and counters work as they do with processes; a debugger or
 * valgrind sees the task's frames in the caller's stack.
 *
 * The pass learns that a task is ready to run the way it learns anything:
 * from poll().  While a slot has a frame to run, its poll entry is the wake
 * pipe's write end, always writable, so the pass does not sleep and calls
 * poll_event, which runs the task.
 *
 * Also the worker's side for in-process workers (inline and threads):
 * fp__local_*, a worker's buffers and its init state kept between tasks.
 */
#include "forkpool-private.h"

#include <stdlib.h>
#include <string.h>
#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

/* --- A worker in this process -------------------------------------------- */

int fp__local_init(fp__local_worker *w)
{
  memset(w, 0, sizeof *w);
  if (!msgpack_zone_init(&w->zone, 4096))
    return FP_ENOMEM;
  msgpack_sbuffer_init(&w->head);
  fp__outbuf_init(&w->result);
  fp__outbuf_init(&w->item);
  return 0;
}

void fp__local_destroy(fp__local_worker *w)
{
  msgpack_zone_destroy(&w->zone);
  msgpack_sbuffer_destroy(&w->head);
  fp__outbuf_destroy(&w->result);
  fp__outbuf_destroy(&w->item);
}

/* The frame in head and result as one body, without its header: the
 * result's pieces may point into the TASK body, which is not ours to keep.
 * Into buf if it fits in cap bytes, else into a malloc. */
static int flatten(fp__local_worker *w, char *buf, size_t cap, char **out,
                   size_t *len)
{
  struct iovec iov[FP__OUT_IOV];
  int n = fp__outbuf_pieces(&w->result, iov);
  size_t head = w->head.size - FP__HDR;
  size_t total = head + fp__outbuf_size(&w->result);
  char *b = total <= cap ? buf : malloc(total);
  if (b == NULL)
    return FP_ENOMEM;
  memcpy(b, w->head.data + FP__HDR, head);
  size_t at = head;
  for (int k = 0; k < n; k++) {
    memcpy(b + at, iov[k].iov_base, iov[k].iov_len);
    at += iov[k].iov_len;
  }
  fp__outbuf_clear(&w->result);
  if (w->result.sb.alloc > (4u << 20)) { /* as a worker: not kept */
    msgpack_sbuffer_destroy(&w->result.sb);
    msgpack_sbuffer_init(&w->result.sb);
  }
  *out = b;
  *len = total;
  return 0;
}

int fp__local_ready(fp__local_worker *w, const fp__worker_cfg *cfg,
                    char **out, size_t *len)
{
  int rc = fp__worker_ready(cfg, &w->state, &w->head, &w->result);
  return rc == FP_ENOMEM ? rc : flatten(w, NULL, 0, out, len);
}

int fp__local_run(fp__local_worker *w, const fp__worker_cfg *cfg,
                  const char *body, size_t blen, char *buf, size_t cap,
                  char **out, size_t *len)
{
  int rc = fp__worker_handle(cfg, w->stop, w->state, body, blen, &w->zone,
                             &w->head, &w->result, &w->item);
  return rc != 0 ? rc : flatten(w, buf, cap, out, len);
}

void fp__local_release(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  while (s->head != NULL)
    fp__slot_pop(p, s, s->head, FP_ECANCELLED,
                 "cancelled: the pool was destroyed");
}

/* --- The transport ------------------------------------------------------- */

#define FP__INLINE_KEEP 4096 /* answers this small need no malloc */

typedef struct inline_chan {
  fp__local_worker w;
  uint32_t ep;           /* the wake pipe's write end is in the epoll set */
  char answer[FP__INLINE_KEEP]; /* the last answer, lent to the dispatcher */
} inline_chan;

static void inline_ep_set(fp_pool *p, inline_chan *c, uint32_t want)
{
#ifdef HAVE_SYS_EPOLL_H
  struct epoll_event ev = {.events = want, .data.u32 = 0};
  if (want == c->ep)
    return;
  if (want != 0)
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wake[1], &ev);
  else
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->wake[1], NULL);
#else
  (void)p;
#endif
  c->ep = want;
}

static void inline_reset(fp_pool *p, unsigned i)
{
  p->slots[i].local = NULL;
}

/* The channel is gone: a forked child's copy (forget) leaves the epoll set,
 * which the parent shares, alone. */
static void inline_free(fp_pool *p, unsigned i, int leave_ep)
{
  inline_chan *c = p->slots[i].local;
  if (c == NULL)
    return;
  if (leave_ep && p->epfd >= 0)
    inline_ep_set(p, c, 0);
  fp__local_destroy(&c->w);
  free(c);
  p->slots[i].local = NULL;
}

static void inline_close(fp_pool *p, unsigned i, int dir)
{
  fp__slot *s = &p->slots[i];
  if (dir & FP__SEND)
    s->can_send = 0;
  if (dir & FP__RECV)
    s->can_recv = 0;
  if (dir == FP__BOTH) {
    inline_free(p, i, 1);
    fp__local_release(p, i);
  }
}

static void inline_forget(fp_pool *p, unsigned i)
{
  inline_free(p, i, 0);
}

/* Runs init now, in the caller's thread, inside fp_pool_create: its READY
 * or its failure is the slot's first frame. */
static int inline_open(fp_pool *p, unsigned i, int fds[FP__CTL_NFDS])
{
  (void)fds;
  fp__slot *s = &p->slots[i];
  inline_chan *c = calloc(1, sizeof *c);
  if (c == NULL)
    return FP_ENOMEM;
  if (fp__local_init(&c->w) != 0) {
    free(c);
    return FP_ENOMEM;
  }
  s->local = c;
  s->can_send = s->can_recv = 1;
  char *body;
  size_t len;
  int rc = fp__local_ready(&c->w, &p->wcfg, &body, &len);
  if (rc == 0)
    fp__dispatch_frame(p, i, body, body, len);
  return rc;
}

/* Frames wait at the send cursor until a pass runs them. */
static void inline_send(fp_pool *p, unsigned i)
{
  p->slots[i].blocked = 0;
}

/* Answers are dispatched as each task returns: none waits. */
static void inline_recv(fp_pool *p, unsigned i)
{
  (void)p;
  (void)i;
}

static int has_work(const fp_pool *p, const fp__slot *s)
{
  (void)p;
  return s->local != NULL && s->can_send && s->send != NULL;
}

/*
 * Runs the frame at the send cursor.  Without the lock, so that a task may
 * take its time while other threads read futures and submit; they see
 * polling set, as while a pass sleeps in poll(), and wait for it.
 */
static void inline_run(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  inline_chan *c = s->local;
  fp_future *f = s->send;
  s->send = f->next;
  s->send_off = 0;
  s->unsent--;
  if (fp__future_is_done(f)) {
    fp__slot_pop(p, s, f, 0, NULL); /* cancelled by fp_pool_kill: a placeholder */
    return;
  }
  char *body = NULL;
  size_t len = 0;
  p->polling = 1;
  pthread_mutex_unlock(&p->lock);
  int rc = fp__local_run(&c->w, &p->wcfg, f->frame + FP__HDR,
                         f->frame_len - FP__HDR, c->answer, sizeof c->answer,
                         &body, &len);
  pthread_mutex_lock(&p->lock);
  p->polling = 0;
  fp__clock_fresh(p); /* submits meanwhile read the clock before the end */
  if (rc != 0) {
    fp__slot_pop(p, s, f, rc, rc == FP_ENOMEM
                 ? "out of memory running the task inline"
                 : "protocol error: the task's frame could not be read");
    return;
  }
  fp__dispatch_frame(p, i, NULL, body, len); /* lent: it copies what it keeps */
  if (body != c->answer)
    free(body);
}

static int inline_poll_add(fp_pool *p, unsigned i, struct pollfd *pfd)
{
  if (!has_work(p, &p->slots[i]))
    return 0;
  pfd[0] = (struct pollfd){.fd = p->wake[1], .events = POLLOUT};
  return 1;
}

static void inline_poll_event(fp_pool *p, unsigned i, const struct pollfd *pfd)
{
  if (pfd->fd == p->wake[1] && has_work(p, &p->slots[i]))
    inline_run(p, i);
}

/* The next task, without a poll() to learn that it is there. */
static int inline_run_now(fp_pool *p)
{
  for (unsigned i = 0; i < p->nslots; i++)
    if (has_work(p, &p->slots[i])) {
      inline_run(p, i);
      return 1;
    }
  return 0;
}

/* An event loop on fp_pool_fd must wake to run the next task, too. */
static void inline_ep_sync(fp_pool *p, unsigned i)
{
#ifdef HAVE_SYS_EPOLL_H
  inline_chan *c = p->slots[i].local;
  if (c != NULL)
    inline_ep_set(p, c, has_work(p, &p->slots[i]) ? EPOLLOUT : 0);
#else
  (void)p;
  (void)i;
#endif
}

const fp__transport fp__inline_transport = {
    .reset = inline_reset,
    .open = inline_open,
    .send = inline_send,
    .recv = inline_recv,
    .close = inline_close,
    .forget = inline_forget,
    .poll_add = inline_poll_add,
    .poll_event = inline_poll_event,
    .ep_sync = inline_ep_sync,
    .run_now = inline_run_now,
};

/*
 * The pipe transport: how frames move between the dispatcher and a local
 * worker.  Each slot has a task pipe (frames out, written with writev as the
 * pipe takes them, never blocking) and a result pipe (frames in, through
 * frame.c's reader), both from the fork server.  A frame that arrives goes
 * to fp__dispatch_frame; end of file and garbage go to the supervisor
 * (fp__slot_recv_ended).  The dispatcher and the supervisor call this file
 * only through fp__pipe_transport, at the end.
 */
#include "forkpool-private.h"

#define FP__SEND_JOIN 8192 /* small frames joined per write(), at most */

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

/* Leaves the epoll set before the close: a copy of the descriptor in a
 * process the caller forked would keep it there, reporting events for a
 * descriptor we no longer have. */
static void close_fd(fp_pool *p, int *fd, uint32_t *ep)
{
  if (*fd < 0)
    return;
#ifdef HAVE_SYS_EPOLL_H
  if (fp__ep_set(p) >= 0 && *ep != 0)
    epoll_ctl(fp__ep_set(p), EPOLL_CTL_DEL, *fd, NULL);
#else
  (void)p;
#endif
  *ep = 0;
  close(*fd);
  *fd = -1;
}

/*
 * Keeps slot i's descriptors in the epoll set (fp__ep_set), level
 * triggered: the result pipe while it is open, the task pipe while frames
 * wait that it did not take (blocked).  Frames merely gathered are written
 * by the next pass, which the submit that gathered them wakes, or which
 * the worker's next answer brings: watching the task pipe for them would
 * cost two epoll_ctl per batch and wake the dispatcher at once.  A call
 * that changes nothing makes no system call.
 */
static void pipe_ep_sync(fp_pool *p, unsigned i)
{
#ifdef HAVE_SYS_EPOLL_H
  fp__slot *s = &p->slots[i];
  fp__pipe_chan *c = &s->pipe;
  int set = fp__ep_set(p);
  if (set < 0)
    return;
  uint32_t want_out = c->out_fd >= 0 ? EPOLLIN : 0;
  uint32_t want_in = c->in_fd >= 0 && s->send && s->blocked ? EPOLLOUT : 0;
  struct epoll_event ev = {.events = want_out, .data.u64 = fp__ev_tag(i, 0)};
  if (want_out != c->ep_out && want_out)
    epoll_ctl(set, c->ep_out ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->out_fd, &ev);
  c->ep_out = want_out; /* only close_fd takes it out */
  ev = (struct epoll_event){.events = want_in, .data.u64 = fp__ev_tag(i, 1)};
  if (want_in != c->ep_in && want_in)
    epoll_ctl(set, c->ep_in ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->in_fd, &ev);
  else if (want_in != c->ep_in)
    epoll_ctl(set, EPOLL_CTL_DEL, c->in_fd, NULL);
  c->ep_in = want_in;
#else
  (void)p;
  (void)i;
#endif
}

/* What was written from the oldest task's frame on, as the task pipe
 * closes: nothing more is written after. */
static void note_sent(fp__slot *s)
{
  fp__pipe_chan *c = &s->pipe;
  size_t n = 0;
  for (const fp_future *f = s->head; f != NULL && f != s->send; f = f->next)
    n += f->frame_len;
  if (s->send != NULL)
    n += s->send_off;
  c->sent_head = s->head != NULL ? s->head->id : 0;
  c->sent_bytes = n;
}

static void pipe_close(fp_pool *p, unsigned i, int dir)
{
  fp__slot *s = &p->slots[i];
  fp__pipe_chan *c = &s->pipe;
  if ((dir & FP__SEND) && c->in_fd >= 0) {
    note_sent(s);
    close_fd(p, &c->in_fd, &c->ep_in);
    s->can_send = 0;
  }
  /* The task pipe's read end stays until both ends close: what the worker
   * left unread in it tells whether it began its oldest task. */
  if (dir == FP__BOTH && c->hold_fd >= 0) {
    close(c->hold_fd);
    c->hold_fd = -1;
  }
  if (dir & FP__RECV) {
    close_fd(p, &c->out_fd, &c->ep_out);
    s->can_recv = 0;
  }
  if (dir == FP__BOTH)
    fp__reader_free(&c->rd);
}

/* In a forked child's copy of the pool: closes its copies of the
 * descriptors, and leaves the epoll set, which the parent shares, alone. */
static void pipe_forget(fp_pool *p, unsigned i)
{
  fp__pipe_chan *c = &p->slots[i].pipe;
  c->ep_in = c->ep_out = 0;
  pipe_close(p, i, FP__BOTH);
}

static void pipe_reset(fp_pool *p, unsigned i)
{
  fp__pipe_chan *c = &p->slots[i].pipe;
  c->in_fd = c->out_fd = c->hold_fd = -1;
  c->ep_in = c->ep_out = 0;
  c->sent_head = 0;
  c->sent_bytes = 0;
  fp__reader_init(&c->rd);
}

/* The fork server's descriptors for a new worker: the task pipe's write
 * end, the result pipe's read end, the task pipe's read end (held only so
 * that writes never raise SIGPIPE). */
static int pipe_open(fp_pool *p, unsigned i, int fds[FP__CTL_NFDS])
{
  fp__slot *s = &p->slots[i];
  fp__pipe_chan *c = &s->pipe;
  c->in_fd = fds[0];
  c->out_fd = fds[1];
  c->hold_fd = fds[2];
  s->can_send = s->can_recv = 1;
  if (fp__set_nonblock(c->in_fd) != 0 || fp__set_nonblock(c->out_fd) != 0)
    return FP_EBROKEN;
  pipe_ep_sync(p, i); /* its results are watched from now on */
  return 0;
}

/* Reads every whole frame in the result pipe, until it is empty. */
static void pipe_recv(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  fp__pipe_chan *c = &s->pipe;
  fp__reader_undrain(&c->rd); /* from here on, a short read ends the loop */
  /* The answers read together share one reading of the clock. */
  int took = fp__clock_hold(p);
  while (c->out_fd >= 0) {
    enum fp__io io;
    char *owned;
    const char *body;
    size_t len;
    int rc = fp__reader_next_lent(&c->rd, c->out_fd, p->opts.max_message,
                                  &io, &owned, &body, &len);
    if (rc == 0 && io == FP__IO_FRAME) {
      fp__dispatch_frame(p, i, owned, body, len);
    } else if (rc == 0 && io == FP__IO_AGAIN) {
      break;
    } else {
      pipe_close(p, i, FP__RECV);
      if (rc != 0)
        fp__reader_free(&c->rd); /* it cannot go on from a frame it refused */
      fp__slot_recv_ended(p, i, rc);
    }
  }
  fp__clock_release(p, took);
}

/*
 * One write of the frames from s's send cursor on: those that fit in
 * FP__SEND_JOIN bytes copied into one buffer and written with write(),
 * which costs the kernel far less than a writev of as many small pieces
 * (it copies each piece on its own); a first frame too large for it with
 * a writev of up to FP__IOV_BATCH frames.  What write() returns.
 */
static ssize_t write_frames(int fd, const fp__slot *s)
{
  char join[FP__SEND_JOIN];
  size_t joined = 0, off = s->send_off;
  const fp_future *f = s->send;
  for (; f != NULL && joined + f->frame_len - off <= sizeof join;
       f = f->next) {
    memcpy(join + joined, f->frame + off, f->frame_len - off);
    joined += f->frame_len - off;
    off = 0;
  }
  if (joined > 0)
    return write(fd, join, joined);
  struct iovec iov[FP__IOV_BATCH];
  int n = 0;
  for (f = s->send; f != NULL && n < FP__IOV_BATCH; f = f->next, off = 0)
    iov[n++] = (struct iovec){f->frame + off, f->frame_len - off};
  return writev(fd, iov, n);
}

/* Writes what the task pipe takes, from the slot's send cursor on. */
static void pipe_send(fp_pool *p, unsigned i)
{
  fp__slot *s = &p->slots[i];
  int fd = s->pipe.in_fd;
  while (s->send != NULL && fd >= 0) {
    /* No SIGPIPE: we hold the pipe's read end (hold_fd) ourselves. */
    ssize_t w = write_frames(fd, s);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        s->blocked = 1; /* poll() or epoll says when it takes more */
        pipe_ep_sync(p, i);
      } else {
        fp__slot_kill(p, i, 0, NULL);
      }
      return;
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
      s->unsent--;
    }
  }
  s->blocked = 0;
  pipe_ep_sync(p, i);
}

static int pipe_poll_add(fp_pool *p, unsigned i, struct pollfd *pfd)
{
  const fp__slot *s = &p->slots[i];
  int n = 0;
  if (s->pipe.out_fd >= 0)
    pfd[n++] = (struct pollfd){.fd = s->pipe.out_fd, .events = POLLIN};
  if (s->pipe.in_fd >= 0 && s->send != NULL)
    pfd[n++] = (struct pollfd){.fd = s->pipe.in_fd, .events = POLLOUT};
  return n;
}

static void pipe_poll_event(fp_pool *p, unsigned i, const struct pollfd *pfd)
{
  fp__slot *s = &p->slots[i];
  /* A descriptor closed and reused during this pass is not ours. */
  if (pfd->fd == s->pipe.out_fd && (pfd->events & POLLIN)) {
    pipe_recv(p, i);
  } else if (pfd->fd == s->pipe.in_fd && (pfd->events & POLLOUT)) {
    if (pfd->revents & (POLLERR | POLLHUP))
      fp__slot_kill(p, i, 0, NULL);
    else
      pipe_send(p, i);
  }
}

/* An event from the dispatcher's epoll set.  A descriptor closed since
 * epoll_wait left the set (close_fd), so its event is not ours. */
static void pipe_ep_event(fp_pool *p, unsigned i, unsigned which,
                          uint32_t events)
{
#ifdef HAVE_SYS_EPOLL_H
  fp__pipe_chan *c = &p->slots[i].pipe;
  if (which == 0 && c->ep_out != 0) {
    pipe_recv(p, i);
  } else if (which == 1 && c->ep_in != 0) {
    if (events & (EPOLLERR | EPOLLHUP))
      fp__slot_kill(p, i, 0, NULL);
    else
      pipe_send(p, i);
  }
#else
  (void)p;
  (void)i;
  (void)which;
  (void)events;
#endif
}

/* The worker is gone, so nobody reads the task pipe any more: if every
 * byte written from its oldest task's frame on is still there, and that
 * task is still the oldest, the worker never began it. */
static int pipe_unread(fp_pool *p, unsigned i)
{
  const fp__slot *s = &p->slots[i];
  const fp__pipe_chan *c = &s->pipe;
  int left;
  if (s->head == NULL || c->sent_head != s->head->id || c->sent_bytes == 0 ||
      c->hold_fd < 0 || ioctl(c->hold_fd, FIONREAD, &left) != 0 || left < 0)
    return 0;
  return (size_t)left >= c->sent_bytes;
}

const fp__transport fp__pipe_transport = {
    .reset = pipe_reset,
    .open = pipe_open,
    .send = pipe_send,
    .recv = pipe_recv,
    .close = pipe_close,
    .forget = pipe_forget,
    .poll_add = pipe_poll_add,
    .poll_event = pipe_poll_event,
    .ep_sync = pipe_ep_sync,
    .ep_event = pipe_ep_event,
    .unread = pipe_unread,
};

/*
 * A host: a non-root rank's side of the pool.  It runs a real fork server
 * (started from the caller's options, as a local pool's), which forks the
 * workers and reports their exits, and relays: control messages between the
 * root and the fork server, a worker's frames between its pipes and DATA
 * messages.  No task ever runs in this process.  It returns when the root
 * says END, after its fork server has killed and reaped every worker.
 *
 * A worker's exit goes to the root after every byte it wrote, so that the
 * pool reads its answers first, as it does from a local worker.  If the
 * fork server itself dies, or this relay runs out of memory, the root is
 * told GONE, then each live worker is reported killed: the pool retires
 * this host (or breaks, if it was the last), and a SPAWN still to come is
 * answered with SPAWN_FAILED.
 *
 * With the workers' shared area, the host plays the dispatcher's part in
 * it: a large argument (a BIG message) is taken straight into the area and
 * the worker gets a frame that names it (task_in); the block is freed when
 * the worker's answer to that task goes by, or the worker is gone.  A
 * large result the worker left in its ring goes to the root from there
 * (result_out), and the ring is handed back once MPI is done with it.
 */
#include "relay.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* An argument placed in the area for a task sent to a worker. */
typedef struct hblock {
  uint64_t id;           /* the task */
  size_t off, len;
} hblock;

/* A slot's share of the area. */
typedef struct hslot {
  hblock *blk;           /* arguments of tasks sent, oldest first */
  size_t nblk, cap;
  uint32_t gen;          /* its worker: sends of an earlier one's ring
                            hand nothing back */
  uint64_t tail;         /* how far the ring was read */
  unsigned inflight;     /* sends from the ring not done */
  uint64_t done_tail;    /* handed back once they are */
} hslot;

typedef struct host {
  fpm_relay rl;
  int root;
  int ctl;               /* to the fork server; -1 once it died */
  unsigned n;
  fpm_chan *ch;          /* per slot: rfd the result pipe's read end, wfd
                            the task pipe's write end, hold its read end */
  pid_t *pid;            /* per slot: its worker, for an EXITED of ours */
  struct pollfd *pfd;
  int *pfd_slot;
  fp__shm *area;         /* the workers' shared area; NULL: none */
  hslot *hs;             /* per slot */
} host;

static int result_peek(void *ctx, fpm_chan *c, uint32_t slot,
                       const char *body, size_t have, size_t len);
static size_t result_out(void *ctx, fpm_relay *rl, fpm_chan *c, int dest,
                         uint32_t slot, const char *frame, size_t len);
static const fpm_hooks result_hooks = {result_peek, result_out};

/* --- Large payloads --------------------------------------------------------- */

/* Frees slot k's arguments up to task id's (all of them if id is 0). */
static void blocks_free(host *h, unsigned k, uint64_t id)
{
  if (h->hs == NULL)
    return; /* out of memory at the start: nothing was placed */
  hslot *s = &h->hs[k];
  size_t upto = s->nblk;
  if (id != 0) {
    size_t j = 0;
    while (j < s->nblk && s->blk[j].id != id)
      j++;
    if (j == s->nblk)
      return; /* a task whose arguments were framed */
    upto = j + 1;
  }
  for (size_t j = 0; j < upto; j++)
    fp__remote_shm_free(h->area, s->blk[j].off, s->blk[j].len);
  memmove(s->blk, s->blk + upto, (s->nblk - upto) * sizeof *s->blk);
  s->nblk -= upto;
}

/* Slot k has a new worker: its ring starts afresh. */
static void slot_fresh(host *h, unsigned k)
{
  hslot *s = &h->hs[k];
  blocks_free(h, k, 0);
  s->gen++;
  s->tail = s->done_tail = 0;
  s->inflight = 0;
  if (h->area != NULL)
    fp__remote_ring_done(h->area, k, 0);
}

/* Every answer frees its task's arguments (a worker answers in order);
 * a result in the ring is taken whole. */
static int result_peek(void *ctx, fpm_chan *c, uint32_t slot,
                       const char *body, size_t have, size_t len)
{
  (void)c;
  (void)len;
  host *h = ctx;
  uint64_t type, id;
  if (fp__remote_frame_head(body, have, &type, &id) != 0)
    return 0;
  if ((type == FP__MSG_RESULT || type == FP__MSG_RESULT_SHM) && id != 0 &&
      h->hs[slot].nblk > 0)
    blocks_free(h, slot, id);
  return type == FP__MSG_RESULT_SHM && h->area != NULL;
}

/*
 * What the root may send that is due.  Nothing, while every worker has a
 * task queued behind the one it runs: its answer wakes us (its pipe), and
 * that pass takes what came meanwhile, the next task included.  Tasks not
 * urgent, while every worker runs one: the next is needed when that one
 * ends, and fpm_pace looks a few times per usual time between the root's
 * messages.  A channel that waits for the root's ACK has it due.  The
 * root's frames are tasks; a worker's first frame is its READY, and each
 * after it answers one task, in order.
 */
static enum fpm_due due_from_root(const host *h)
{
  uint64_t least = UINT64_MAX;
  for (unsigned k = 0; k < h->n; k++) {
    const fpm_chan *c = &h->ch[k];
    uint64_t answers = c->out.n > 0 ? c->out.n - 1 : 0;
    uint64_t ahead = c->in.n > answers ? c->in.n - answers : 0;
    if (!c->open)
      continue;
    if (!fpm_chan_wants_read(c))
      return FPM_DUE_ANY;
    least = ahead < least ? ahead : least;
  }
  return least == UINT64_MAX || least == 0 ? FPM_DUE_ANY
         : least == 1                      ? FPM_DUE_LATER
                                           : FPM_DUE_NONE;
}

/* A send from slot's ring is done (arg: slot and its worker's gen). */
static void ring_sent(void *ctx, uint64_t arg)
{
  host *h = ctx;
  unsigned k = (unsigned)(arg & UINT32_MAX);
  hslot *s = &h->hs[k];
  if ((uint32_t)(arg >> 32) != s->gen || s->inflight == 0)
    return;
  if (--s->inflight == 0)
    fp__remote_ring_done(h->area, k, s->done_tail);
}

/*
 * A result the worker left in its ring: BIG, the frame's body as it is
 * (the bridge reads the id and length), then the bytes, sent from the
 * ring, which is handed back to the worker once every such send is done.
 * Returns the weight in the window.
 */
static size_t result_out(void *ctx, fpm_relay *rl, fpm_chan *c, int dest,
                         uint32_t slot, const char *frame, size_t len)
{
  (void)c;
  host *h = ctx;
  hslot *s = &h->hs[slot];
  const char *body = frame + FP__HDR, *at = NULL;
  size_t blen = len - FP__HDR, rlen;
  uint64_t id, pos;
  if (fp__remote_result_ref(body, blen, &id, &pos, &rlen) == 0)
    at = fp__remote_ring_read(h->area, slot, s->tail, pos, rlen);
  char *msg = fpm_msg_new(rl, at != NULL ? blen : len);
  if (msg == NULL ||
      (at != NULL &&
       !fpm_room(rl, 1 + (int)((rlen + FPM_PIECE - 1) / FPM_PIECE)))) {
    free(msg);
    fpm_lost(rl);
    return len;
  }
  if (at == NULL) {
    /* Not in its ring: as bytes, for the pool to refuse. */
    fp__ctl m = {.op = FPM_DATA, .slot = slot};
    memcpy(msg, &m, sizeof m);
    memcpy(msg + sizeof m, frame, len);
    fpm_post(rl, dest, msg, sizeof m + len);
    return len;
  }
  fp__ctl m = {.op = FPM_BIG, .slot = slot, .user_us = len + rlen,
               .sys_us = rlen};
  memcpy(msg, &m, sizeof m);
  memcpy(msg + sizeof m, body, blen);
  fpm_post(rl, dest, msg, sizeof m + blen);
  s->tail = s->done_tail = pos + rlen;
  for (size_t off = 0; off < rlen; off += FPM_PIECE) {
    s->inflight++;
    fpm_post_lent(rl, dest, at + off,
                  rlen - off < FPM_PIECE ? rlen - off : FPM_PIECE, ring_sent,
                  h, (uint64_t)s->gen << 32 | slot);
  }
  return len + rlen;
}

/*
 * A BIG message from the root: a large argument, which follows.  It goes
 * into the area and the worker gets a frame that names it; with no room,
 * a frame that carries it.  Taken, and dropped, whatever became of the
 * slot.
 */
static void task_in(host *h, const fp__ctl *m, const char *body, size_t blen)
{
  size_t alen = (size_t)m->sys_us, name_len, off = 0;
  uint64_t id, off0, n2;
  const char *name;
  unsigned n;
  fpm_chan *c = m->slot < h->n ? &h->ch[m->slot] : NULL;
  int ok = c != NULL && c->open && c->wfd >= 0 &&
           fp__remote_task_ref(body, blen, &id, &name, &name_len, &n, &off0,
                               &n2) == 0 &&
           n2 == alen && alen > 0;
  char *dst = NULL, *buf = NULL;
  int placed = ok && h->area != NULL &&
               fp__remote_shm_alloc(h->area, alen, &off) == 0;
  if (placed)
    dst = h->area->args + off;
  else if (ok && (dst = buf = malloc(alen)) == NULL) {
    ok = 0;
    h->rl.failed = 1; /* dropped, the task would go unanswered: we leave */
  }
  if (fpm_recv_payload(&h->rl, h->root, ok ? dst : NULL, alen) != 0 || !ok) {
    if (placed)
      fp__remote_shm_free(h->area, off, alen);
    free(buf);
    return;
  }
  hslot *s = &h->hs[m->slot];
  if (placed && s->nblk == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 8;
    hblock *nb = realloc(s->blk, cap * sizeof *nb);
    if (nb == NULL) {
      fp__remote_shm_free(h->area, off, alen);
      h->rl.failed = 1;
      return;
    }
    s->blk = nb;
    s->cap = cap;
  }
  char *frame;
  size_t flen;
  int rc = fp__remote_task_frame(id, name, name_len, n,
                                 placed ? h->area : NULL, off, buf, alen,
                                 &frame, &flen);
  free(buf);
  if (rc != 0) {
    if (placed)
      fp__remote_shm_free(h->area, off, alen);
    h->rl.failed = 1;
    return;
  }
  if (placed)
    s->blk[s->nblk++] = (hblock){id, off, alen};
  if (fpm_chan_put_frame(c, frame, flen, (size_t)m->user_us) != 0) {
    h->rl.failed = 1;
    return;
  }
  fpm_chan_write(c);
}

void fpm_forkserver_stop(int ctl, pid_t fs_pid, int fs_child)
{
  if (ctl >= 0) {
    shutdown(ctl, SHUT_WR);
    for (;;) {
      enum fp__io io;
      fp__ctl m;
      int fds[FP__CTL_NFDS];
      struct pollfd pf = {.fd = ctl, .events = POLLIN};
      if (poll(&pf, 1, -1) < 0 && errno != EINTR)
        break;
      int rc = fp__remote_ctl_recv(ctl, &io, &m, fds);
      for (int k = 0; k < FP__CTL_NFDS; k++)
        if (fds[k] >= 0)
          close(fds[k]);
      if (rc < 0 || io == FP__IO_EOF)
        break;
    }
    close(ctl);
  }
  if (fs_child)
    while (waitpid(fs_pid, NULL, 0) < 0 && errno == EINTR)
      ;
}

/* Slot k's worker is gone (status): the root gets what it wrote, then
 * EXITED. */
static void worker_gone(host *h, const fp__ctl *m)
{
  fpm_chan *c = &h->ch[m->slot];
  if (c->open)
    while (c->rfd >= 0 && fpm_chan_read(&h->rl, c, h->root, m->slot, 1) > 0)
      ;
  fpm_chan_close(c);
  blocks_free(h, m->slot, 0); /* the arguments of tasks it did not answer */
  fpm_post_ctl(&h->rl, h->root, m);
}

/* This host runs no worker any more (why: 0, its fork server died; or
 * -errno): GONE, then the exit of each worker it had. */
static void host_gone(host *h, int why)
{
  fp__ctl gone = {.op = FP__CTL_GONE, .value = why};
  fpm_post_ctl(&h->rl, h->root, &gone);
  for (unsigned k = 0; h->ch != NULL && h->pid != NULL && k < h->n; k++) {
    if (!h->ch[k].open)
      continue;
    fp__ctl m = {.op = FP__CTL_EXITED, .slot = k, .pid = h->pid[k],
                 .value = SIGKILL};
    worker_gone(h, &m);
  }
}

static void forkserver_died(host *h)
{
  close(h->ctl);
  h->ctl = -1;
  host_gone(h, 0); /* its workers die with it (PR_SET_PDEATHSIG) */
}

/* What the fork server sends.  Sets *busy if anything came. */
static void from_forkserver(host *h, int *busy)
{
  while (h->ctl >= 0) {
    enum fp__io io;
    fp__ctl m;
    int fds[FP__CTL_NFDS];
    int rc = fp__remote_ctl_recv(h->ctl, &io, &m, fds);
    if (rc == 0 && io == FP__IO_AGAIN)
      return;
    *busy = 1;
    if (rc < 0 || io == FP__IO_EOF) {
      forkserver_died(h);
      return;
    }
    if (m.slot >= h->n) {
      for (int k = 0; k < FP__CTL_NFDS; k++)
        if (fds[k] >= 0)
          close(fds[k]);
      continue;
    }
    if (m.op == FP__CTL_SPAWNED && fds[0] < 0) {
      /* Out of descriptors: the worker is no use. */
      fp__ctl kill = {.op = FP__CTL_KILL, .slot = m.slot, .pid = m.pid,
                      .value = SIGKILL};
      (void)fp__remote_ctl_send(h->ctl, &kill, NULL);
      m.op = FP__CTL_SPAWN_FAILED;
      m.value = FP_EMFILE;
    } else if (m.op == FP__CTL_SPAWNED) {
      int wfd = fpm_fd_prep(fds[0]), rfd = fpm_fd_prep(fds[1]);
      fpm_chan_open(&h->ch[m.slot], rfd, wfd, fds[2]);
      slot_fresh(h, m.slot);
      h->pid[m.slot] = m.pid;
    } else if (m.op == FP__CTL_EXITED) {
      worker_gone(h, &m);
      continue;
    }
    fpm_post_ctl(&h->rl, h->root, &m);
  }
}

/* A message from the root, END apart. */
static void from_root(host *h, char *msg, size_t len)
{
  fp__ctl m;
  memcpy(&m, msg, sizeof m);
  if (m.op == FPM_BIG) {
    task_in(h, &m, msg + sizeof m, len - sizeof m);
    free(msg);
    return;
  }
  if (m.slot >= h->n) {
    free(msg);
    return;
  }
  fpm_chan *c = &h->ch[m.slot];
  switch (m.op) {
  case FP__CTL_SPAWN:
    if (h->ctl < 0) {
      fp__ctl no = {.op = FP__CTL_SPAWN_FAILED, .slot = m.slot,
                    .value = FP_EBROKEN};
      fpm_post_ctl(&h->rl, h->root, &no);
      break;
    }
    /* fall through */
  case FP__CTL_KILL:
  case FP__CTL_STOP:
    if (h->ctl >= 0)
      (void)fp__remote_ctl_send(h->ctl, &m, NULL);
    break;
  default:
    (void)fpm_chan_message(&h->rl, c, &m, &msg, len); /* DATA, ACK, CLOSE */
    break;
  }
  free(msg);
}

static int serve(host *h)
{
  int busy = 1;
  for (;;) {
    int np = 0;
    if (h->ctl >= 0) {
      h->pfd[np] = (struct pollfd){.fd = h->ctl, .events = POLLIN};
      h->pfd_slot[np++] = -1;
    }
    for (unsigned k = 0; k < h->n; k++) {
      fpm_chan *c = &h->ch[k];
      if (fpm_chan_wants_read(c)) {
        h->pfd[np] = (struct pollfd){.fd = c->rfd, .events = POLLIN};
        h->pfd_slot[np++] = (int)k;
      }
      if (c->wfd >= 0 && !fpm_chan_flushed(c)) {
        h->pfd[np] = (struct pollfd){.fd = c->wfd, .events = POLLOUT};
        h->pfd_slot[np++] = (int)k;
      }
    }
    int ready = fpm_pace(&h->rl, h->pfd, np, busy, due_from_root(h));
    busy = 0;
    for (int j = 0; ready > 0 && j < np; j++) {
      if (h->pfd[j].revents == 0)
        continue;
      if (h->pfd_slot[j] < 0) {
        from_forkserver(h, &busy);
        continue;
      }
      unsigned k = (unsigned)h->pfd_slot[j];
      fpm_chan *c = &h->ch[k];
      /* A descriptor closed during this pass is not looked at. */
      if (h->pfd[j].events == POLLIN && h->pfd[j].fd == c->rfd)
        busy |= fpm_chan_read(&h->rl, c, h->root, k, 0) > 0;
      else if (h->pfd[j].events == POLLOUT && h->pfd[j].fd == c->wfd)
        busy |= fpm_chan_write(c) > 0;
    }
    fp__ctl m;
    char *msg;
    size_t len;
    int from;
    for (int j = 0; j < FPM_BATCH &&
                    fpm_take(&h->rl, h->root, &m, &msg, &len, &from); j++) {
      busy = 1;
      if (m.op == FPM_END) {
        free(msg);
        return 0;
      }
      if (msg == NULL)
        break; /* dropped, no memory for it: we leave */
      from_root(h, msg, len);
    }
    for (unsigned k = 0; k < h->n; k++)
      if (h->ch[k].open)
        fpm_chan_ack(&h->rl, &h->ch[k], h->root, k);
    fpm_progress(&h->rl);
    if (h->rl.failed)
      return FP_ENOMEM;
  }
}

int fpm_host_run(MPI_Comm comm, int root, unsigned n, int ctl, pid_t fs_pid,
                 int fs_child, fp__shm *area)
{
  host h = {.root = root, .ctl = ctl, .n = n, .area = area};
  fpm_relay_init(&h.rl, comm);
  h.ch = calloc(n + 1, sizeof *h.ch);
  h.pfd = calloc(2 * n + 1, sizeof *h.pfd);
  h.pfd_slot = calloc(2 * n + 1, sizeof *h.pfd_slot);
  h.hs = calloc(n + 1, sizeof *h.hs);
  h.pid = calloc(n + 1, sizeof *h.pid);
  /* Out of memory, at the start (rc) or while serving (left): the root
   * retires this host.  Only a host that could not start returns an error
   * (fp_mpi_pool_create(3), RETURN VALUES): one that left, as one whose
   * fork server died, returns 0 once the pool is gone. */
  int rc = FP_ENOMEM, left = 0;
  if (h.ch != NULL && h.pfd != NULL && h.pfd_slot != NULL && h.hs != NULL &&
      h.pid != NULL) {
    for (unsigned k = 0; k < n; k++) {
      fpm_chan_init(&h.ch[k]);
      h.ch[k].hooks = &result_hooks;
      h.ch[k].hctx = &h;
    }
    /* The caller's thread: short waits and slices while serving, its own
     * back after (the fork server, forked before, keeps the caller's). */
    long slack = fpm_slack_set(FPM_SLACK_NS);
    int64_t slice = fpm_slice_set(FPM_SLICE_NS);
    left = serve(&h) != 0;
    rc = 0;
    if (slack >= 0)
      (void)fpm_slack_set(slack);
    if (slice >= 0)
      (void)fpm_slice_set(slice);
  }
  /* Its workers go now. */
  if (rc != 0 || left)
    host_gone(&h, FP_ENOMEM);
  /* Workers see end of file on their task pipes; the fork server kills
   * and reaps what is left once its socket ends. */
  for (unsigned k = 0; h.ch != NULL && k < n; k++)
    fpm_chan_close(&h.ch[k]);
  fpm_forkserver_stop(h.ctl, fs_pid, fs_child);
  if (rc != 0 || left) {
    /* The root waits for END_ACK after its END: take messages until then. */
    fp__ctl m;
    char *msg;
    size_t len;
    int from, end = 0;
    while (!end) {
      while (!end && fpm_take(&h.rl, root, &m, &msg, &len, &from)) {
        end = m.op == FPM_END;
        /* A BIG's payload comes next (taken with a BIG it had no memory
         * for): nobody wants it. */
        if (m.op == FPM_BIG && msg != NULL)
          (void)fpm_recv_payload(&h.rl, root, NULL, (size_t)m.sys_us);
        free(msg);
      }
      fpm_progress(&h.rl);
      if (!end)
        fpm_pace(&h.rl, NULL, 0, 0, FPM_DUE_ANY);
    }
  }
  fp__ctl ack = {.op = FPM_END_ACK};
  MPI_Send(&ack, (int)sizeof ack, MPI_BYTE, root, FPM_TAG, comm);
  fpm_relay_drain(&h.rl); /* last: sends from the area are done */
  for (unsigned k = 0; h.hs != NULL && k < n; k++)
    free(h.hs[k].blk);
  fp__remote_area_free(area);
  free(h.ch);
  free(h.pfd);
  free(h.pfd_slot);
  free(h.hs);
  free(h.pid);
  return rc;
}

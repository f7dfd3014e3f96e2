/*
 * The bridge: on the root, a thread that stands in for the pool's fork
 * server.  It holds the other end of the pool's control socket.  A worker
 * forked on a host is, to the pool, a SPAWNED message with pipe ends
 * attached, as from a local fork server: the bridge makes the two pipes,
 * passes the pool its ends, and relays the bytes of the other ends to and
 * from the host as DATA messages.  SPAWN, KILL and STOP go to the host of
 * the slot; EXITED comes back once the bytes the worker sent before it
 * died are in the pool's pipe.  When the pool closes the socket, every
 * host is told to stop, and the bridge closes its end once all have: so
 * the pool's destroy returns when no worker is left on any rank.
 *
 * With workers of its own (fp_mpi_pool_create_ex's root_workers), the root
 * has a real fork server too.  Its messages pass through with their slot
 * numbers changed and nothing else: SPAWNED carries the worker's real pipe
 * ends, so that worker's bytes go straight between it and the pool, never
 * through this thread.
 *
 * The pool's slots are every rank's in rank order: rank r's local slot k
 * is base[r] + k.
 *
 * With the pool's shared area, a large argument is not in the task pipe:
 * the pool's frame names it in the area, and the bridge sends it to the
 * host from there (task_out).  A large result comes as a BIG message, and
 * the bridge takes it straight into the slot's ring, as a local worker
 * would have written it, and gives the pool a frame that names it
 * (result_in).  A pool with workers on the root has no area (their
 * frames carry everything): the bridge then frames a BIG result itself.
 */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct fpm_bridge {
  fpm_relay rl;
  int root, size;
  int ctl;               /* our end of the pool's control socket */
  unsigned nslots;
  unsigned nroot;        /* the root's own slots, from base[root] */
  unsigned *base;        /* per rank: its first slot */
  int *rank;             /* per slot: its host */
  fpm_chan *ch;          /* per host slot: rfd the task pipe's read end,
                            wfd the result pipe's write end */
  int fs_ctl;            /* the root's own fork server; -1: none, or gone */
  pid_t fs_pid;
  int fs_child;          /* we reap fs_pid (a child subreaper's) */
  pid_t *live;           /* per root slot: its worker's pid; 0: none */
  int finishing;         /* FINISH went to the root's fork server: its
                            exit is no failure */
  fp__ctl *exited;       /* per slot: EXITED waiting for its bytes */
  int *exit_pending;
  unsigned char *asked;  /* per slot: a SPAWN or KILL went to its host,
                            whose answer has not come */
  unsigned char *gone;   /* per rank: its host said GONE, and what it is
                            asked after may go unanswered */
  struct pollfd *pfd;    /* ctl, then up to two per slot */
  int *pfd_slot;
  _Atomic(fp__shm *) area; /* the pool's shared area; NULL: none (yet) */
  fp__ring *ring;        /* per slot: the writer's side of its ring */
  unsigned char *ring_on; /* per slot: ring attached since the worker came */
};

static int task_peek(void *ctx, fpm_chan *c, uint32_t slot, const char *body,
                     size_t have, size_t len);
static size_t task_out(void *ctx, fpm_relay *rl, fpm_chan *c, int dest,
                       uint32_t slot, const char *frame, size_t len);
static const fpm_hooks task_hooks = {task_peek, task_out};

fpm_bridge *fpm_bridge_new(MPI_Comm comm, int root, const int *count,
                           int ctl, int fs_ctl, pid_t fs_pid, int fs_child)
{
  fpm_bridge *b = calloc(1, sizeof *b);
  int size;
  MPI_Comm_size(comm, &size);
  if (b != NULL) {
    b->base = calloc((size_t)size, sizeof *b->base);
    for (int r = 0; b->base != NULL && r < size; r++) {
      b->base[r] = b->nslots;
      b->nslots += (unsigned)count[r];
    }
  }
  unsigned n = b != NULL ? b->nslots : 0;
  if (b == NULL || b->base == NULL ||
      !(b->rank = calloc(n + 1, sizeof *b->rank)) ||
      !(b->ch = calloc(n + 1, sizeof *b->ch)) ||
      !(b->exited = calloc(n + 1, sizeof *b->exited)) ||
      !(b->exit_pending = calloc(n + 1, sizeof *b->exit_pending)) ||
      !(b->live = calloc(n + 1, sizeof *b->live)) ||
      !(b->pfd = calloc(2 * n + 2, sizeof *b->pfd)) ||
      !(b->pfd_slot = calloc(2 * n + 2, sizeof *b->pfd_slot)) ||
      !(b->ring = calloc(n + 1, sizeof *b->ring)) ||
      !(b->ring_on = calloc(n + 1, sizeof *b->ring_on)) ||
      !(b->asked = calloc(n + 1, sizeof *b->asked)) ||
      !(b->gone = calloc((size_t)size, sizeof *b->gone))) {
    if (b != NULL) {
      free(b->asked);
      free(b->ring_on);
      free(b->ring);
      free(b->pfd_slot);
      free(b->base);
      free(b->rank);
      free(b->ch);
      free(b->exited);
      free(b->exit_pending);
      free(b->live);
      free(b->pfd);
      free(b);
    }
    close(ctl);
    fpm_forkserver_stop(fs_ctl, fs_pid, fs_child);
    return NULL;
  }
  fpm_relay_init(&b->rl, comm);
  b->root = root;
  b->size = size;
  b->ctl = ctl;
  b->fs_ctl = fs_ctl;
  b->fs_pid = fs_pid;
  b->fs_child = fs_child;
  b->nroot = (unsigned)count[root];
  for (int r = 0; r < size; r++)
    for (unsigned k = 0; k < (unsigned)count[r]; k++)
      b->rank[b->base[r] + k] = r;
  atomic_init(&b->area, NULL);
  for (unsigned i = 0; i < n; i++) {
    fpm_chan_init(&b->ch[i]);
    b->ch[i].hooks = &task_hooks;
    b->ch[i].hctx = b;
  }
  return b;
}

void fpm_bridge_area(fpm_bridge *b, fp__shm *area)
{
  atomic_store_explicit(&b->area, area, memory_order_release);
}

static void bridge_free(fpm_bridge *b)
{
  for (unsigned i = 0; i < b->nslots; i++)
    fpm_chan_close(&b->ch[i]);
  free(b->base);
  free(b->rank);
  free(b->ch);
  free(b->exited);
  free(b->exit_pending);
  free(b->live);
  free(b->pfd);
  free(b->pfd_slot);
  free(b->ring);
  free(b->ring_on);
  free(b->asked);
  free(b->gone);
  free(b);
}

static uint32_t local_slot(const fpm_bridge *b, unsigned i)
{
  return i - b->base[b->rank[i]];
}

static void to_pool(fpm_bridge *b, const fp__ctl *m, const int *fds)
{
  (void)fp__remote_ctl_send(b->ctl, m, fds);
}

static void close_fds(int fds[FP__CTL_NFDS])
{
  for (int k = 0; k < FP__CTL_NFDS; k++)
    if (fds[k] >= 0)
      close(fds[k]);
}

/* --- The root's own fork server ------------------------------------------ */

/* Whether slot i is one of the root's own. */
static int root_slot(const fpm_bridge *b, unsigned i)
{
  return b->rank[i] == b->root;
}

/* The root's fork server is gone (it died, or it exited after FINISH with
 * every exit reported): reaped, and, as a host does, GONE unless it was
 * asked to finish (the pool retires the root's slots), then each worker it
 * had not reported is reported killed (they die with it:
 * PR_SET_PDEATHSIG). */
static void forkserver_gone(fpm_bridge *b)
{
  fpm_forkserver_stop(b->fs_ctl, b->fs_pid, b->fs_child);
  b->fs_ctl = -1;
  b->fs_child = 0;
  if (!b->finishing && b->nroot > 0) {
    fp__ctl gone = {.op = FP__CTL_GONE, .slot = b->base[b->root]};
    to_pool(b, &gone, NULL);
  }
  for (unsigned i = 0; i < b->nslots; i++)
    if (root_slot(b, i) && b->live[i] != 0) {
      fp__ctl m = {.op = FP__CTL_EXITED, .slot = i, .pid = b->live[i],
                   .value = SIGKILL};
      b->live[i] = 0;
      to_pool(b, &m, NULL);
    }
}

/* What the pool asks of the root's slot i (m's slot already the fork
 * server's number), or FINISH; a SPAWN once it is gone fails. */
static void to_forkserver(fpm_bridge *b, unsigned i, const fp__ctl *m)
{
  if (b->fs_ctl >= 0 && fp__remote_ctl_send(b->fs_ctl, m, NULL) != 0)
    forkserver_gone(b);
  if (b->fs_ctl < 0 && m->op == FP__CTL_SPAWN) {
    fp__ctl no = {.op = FP__CTL_SPAWN_FAILED, .slot = i,
                  .value = FP_EBROKEN};
    to_pool(b, &no, NULL);
  }
}

/* What the root's fork server sends goes to the pool as it is, in the
 * pool's slot numbers; SPAWNED's descriptors are the worker's own pipes.
 * Sets *busy if anything came. */
static void from_forkserver(fpm_bridge *b, int *busy)
{
  while (b->fs_ctl >= 0) {
    enum fp__io io;
    fp__ctl m;
    int fds[FP__CTL_NFDS];
    int rc = fp__remote_ctl_recv(b->fs_ctl, &io, &m, fds);
    if (rc == 0 && io == FP__IO_AGAIN)
      return;
    *busy = 1;
    if (rc < 0 || io == FP__IO_EOF) {
      forkserver_gone(b);
      return;
    }
    if (m.slot >= b->nroot) {
      close_fds(fds);
      continue;
    }
    unsigned i = b->base[b->root] + m.slot;
    if (m.op == FP__CTL_SPAWNED && fds[0] < 0) {
      /* Out of descriptors: the worker is no use. */
      fp__ctl kill = {.op = FP__CTL_KILL, .slot = m.slot, .pid = m.pid,
                      .value = SIGKILL};
      (void)fp__remote_ctl_send(b->fs_ctl, &kill, NULL);
      m.op = FP__CTL_SPAWN_FAILED;
      m.value = FP_EMFILE;
    } else if (m.op == FP__CTL_SPAWNED) {
      b->live[i] = m.pid;
    } else if (m.op == FP__CTL_EXITED) {
      b->live[i] = 0;
    }
    m.slot = i;
    to_pool(b, &m, m.op == FP__CTL_SPAWNED ? fds : NULL);
    close_fds(fds); /* the pool has its own now */
  }
}

/* --- The hosts' workers -------------------------------------------------- */

/* A pipe, both ends from 3 up and close-on-exec; the pool's ends are
 * made non-blocking by the pool. */
static int pipe_high(int fds[2])
{
  if (pipe2(fds, O_CLOEXEC) != 0)
    return -errno;
  for (int k = 0; k < 2; k++)
    if (fds[k] < 3) {
      int high = fcntl(fds[k], F_DUPFD_CLOEXEC, 3);
      close(fds[k]);
      fds[k] = high;
    }
  if (fds[0] < 0 || fds[1] < 0) {
    int err = -errno;
    for (int k = 0; k < 2; k++)
      if (fds[k] >= 0)
        close(fds[k]);
    return err;
  }
#ifdef F_SETPIPE_SZ
  (void)fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
#endif
  return 0;
}

/* A host forked slot i's worker: its pipes, the pool's ends passed on. */
static void slot_spawned(fpm_bridge *b, unsigned i, const fp__ctl *in)
{
  fpm_chan *c = &b->ch[i];
  int task[2] = {-1, -1}, result[2] = {-1, -1};
  int rc = pipe_high(task);
  if (rc == 0 && (rc = pipe_high(result)) != 0) {
    close(task[0]);
    close(task[1]);
  }
  fp__ctl m = *in;
  m.slot = i;
  if (rc != 0) {
    /* The worker is no use without its pipes: the host kills it. */
    fp__ctl kill = {.op = FP__CTL_KILL, .slot = local_slot(b, i),
                    .pid = in->pid, .value = SIGKILL};
    fpm_post_ctl(&b->rl, b->rank[i], &kill);
    m.op = FP__CTL_SPAWN_FAILED;
    m.value = rc;
    to_pool(b, &m, NULL);
    return;
  }
  int rfd = fpm_fd_prep(task[0]);
  int wfd = fpm_fd_prep(result[1]);
  int fds[FP__CTL_NFDS] = {task[1], result[0], rfd};
  to_pool(b, &m, fds);
  close(task[1]);
  close(result[0]);
  fpm_chan_open(c, rfd, wfd, -1);
  b->exit_pending[i] = 0;
  b->ring_on[i] = 0; /* its ring starts afresh, as the pool's reading */
}

/* --- Large payloads --------------------------------------------------------- */

static fp__shm *area_of(fpm_bridge *b)
{
  return atomic_load_explicit(&b->area, memory_order_acquire);
}

/* A frame that names its arguments in the pool's area is taken whole. */
static int task_peek(void *ctx, fpm_chan *c, uint32_t slot, const char *body,
                     size_t have, size_t len)
{
  (void)c;
  (void)slot;
  (void)len;
  return have > 0 && (unsigned char)body[0] == FP__MSG_TASK_SHM &&
         area_of(ctx) != NULL;
}

/*
 * Such a frame goes to the host as BIG, its body as it is (the host reads
 * the id, name and count, and places the arguments in its own area), then
 * the arguments, sent from the pool's area: they stay there until the
 * task's answer is in or its worker is gone, which the pool learns only
 * after the host has them.  Returns the weight in the window.
 */
static size_t task_out(void *ctx, fpm_relay *rl, fpm_chan *c, int dest,
                       uint32_t slot, const char *frame, size_t len)
{
  (void)c;
  fp__shm *area = area_of(ctx);
  const char *body = frame + FP__HDR, *name;
  size_t blen = len - FP__HDR, name_len;
  uint64_t id, off, alen;
  unsigned n;
  if (fp__remote_task_ref(body, blen, &id, &name, &name_len, &n, &off,
                          &alen) != 0 ||
      off > area->args_len || alen > area->args_len - off) {
    /* Not what the pool writes: as bytes, for the worker to refuse. */
    char *msg = fpm_msg_new(rl, len);
    if (msg == NULL) {
      fpm_lost(rl);
      return len;
    }
    fp__ctl m = {.op = FPM_DATA, .slot = slot};
    memcpy(msg, &m, sizeof m);
    memcpy(msg + sizeof m, frame, len);
    fpm_post(rl, dest, msg, sizeof m + len);
    return len;
  }
  char *msg = fpm_msg_new(rl, blen);
  if (msg == NULL || !fpm_room(rl, 1 + (int)((alen + FPM_PIECE - 1) /
                                             FPM_PIECE))) {
    free(msg);
    fpm_lost(rl);
    return len;
  }
  fp__ctl m = {.op = FPM_BIG, .slot = slot, .user_us = len + alen,
               .sys_us = alen};
  memcpy(msg, &m, sizeof m);
  memcpy(msg + sizeof m, body, blen);
  fpm_post(rl, dest, msg, sizeof m + blen);
  for (uint64_t at = 0; at < alen; at += FPM_PIECE)
    fpm_post_lent(rl, dest, area->args + off + at,
                  alen - at < FPM_PIECE ? alen - at : FPM_PIECE, NULL, NULL,
                  0);
  return len + alen;
}

/*
 * A BIG message from a host: a worker's large result, which follows.  It
 * goes into slot i's ring (valid: i is the sender's) and the pool gets a
 * frame that names it there; with no room, a frame that carries it.
 * Taken, and dropped, whatever becomes of the slot.
 */
static void result_in(fpm_bridge *b, int from, unsigned i, int valid,
                      const fp__ctl *m, const char *body, size_t blen)
{
  size_t rlen = (size_t)m->sys_us, n;
  uint64_t id, pos = 0;
  fp__shm *area = area_of(b);
  fpm_chan *c = valid ? &b->ch[i] : NULL;
  int ok = c != NULL && c->open && c->wfd >= 0 &&
           fp__remote_result_ref(body, blen, &id, &pos, &n) == 0 &&
           n == rlen && rlen > 0;
  char *dst = NULL, *buf = NULL;
  if (ok && area != NULL) {
    if (!b->ring_on[i]) {
      fp__remote_ring_attach(&b->ring[i], area, i);
      b->ring_on[i] = 1;
    }
    dst = fp__remote_ring_place(&b->ring[i], rlen, &pos);
  }
  if (ok && dst == NULL && (dst = buf = malloc(rlen)) == NULL) {
    ok = 0;
    b->rl.failed = 1; /* dropped, its future would wait forever: we stop */
  }
  if (fpm_recv_payload(&b->rl, from, ok ? dst : NULL, rlen) != 0 || !ok) {
    free(buf);
    return;
  }
  char *frame;
  size_t flen;
  int rc = fp__remote_result_frame(id, buf, pos, rlen, &frame, &flen);
  free(buf);
  if (rc != 0) {
    b->rl.failed = 1;
    return;
  }
  if (fpm_chan_put_frame(c, frame, flen, (size_t)m->user_us) != 0) {
    b->rl.failed = 1;
    return;
  }
  fpm_chan_write(c);
}

/* Slot i's EXITED goes to the pool once the pool can read everything the
 * worker sent before it: after its pipe, which then ends. */
static int flush_exit(fpm_bridge *b, unsigned i)
{
  fpm_chan *c = &b->ch[i];
  if (!b->exit_pending[i] || !fpm_chan_flushed(c))
    return 0;
  fpm_chan_close(c);
  b->exit_pending[i] = 0;
  to_pool(b, &b->exited[i], NULL);
  return 1;
}

/* Host rank r said GONE: it has no fork server, or it left, so a KILL
 * it is sent now has no worker to answer for (each live one is reported
 * killed after the GONE), and a SPAWN may go unanswered. */
static void host_gone(fpm_bridge *b, int r)
{
  b->gone[r] = 1;
  for (unsigned i = b->base[r]; i < b->nslots && b->rank[i] == r; i++)
    b->asked[i] = 0;
}

/* Whether the host answers op, which the pool sends to its slot i: a
 * SPAWN with SPAWNED or SPAWN_FAILED, a KILL of a worker whose exit has
 * not come with its EXITED.  A KILL that crossed the exit (or one of a
 * worker the host reported killed when it left) is answered by nothing:
 * waiting for it, the bridge would look at MPI as if an answer were due
 * for the rest of the pool's life. */
static int answer_comes(const fpm_bridge *b, unsigned i, uint32_t op)
{
  if (b->gone[b->rank[i]])
    return 0;
  if (op == FP__CTL_KILL)
    return b->ch[i].open && !b->exit_pending[i];
  return op == FP__CTL_SPAWN;
}

/* A message from host rank from.  Returns 1 if it made work. */
static void from_host(fpm_bridge *b, int from, char *msg, size_t len)
{
  fp__ctl m;
  memcpy(&m, msg, sizeof m);
  unsigned n = from != b->root ? b->base[from] : 0;
  unsigned i = n + m.slot;
  int valid = from != b->root && m.slot < b->nslots && i < b->nslots &&
              b->rank[i] == from;
  if (m.op == FPM_BIG) {
    result_in(b, from, i, valid, &m, msg + sizeof m, len - sizeof m);
    free(msg);
    return;
  }
  if (!valid) {
    free(msg);
    return;
  }
  fpm_chan *c = &b->ch[i];
  if (m.op == FP__CTL_GONE)
    host_gone(b, from);
  else if (m.op == FP__CTL_SPAWNED || m.op == FP__CTL_SPAWN_FAILED ||
           m.op == FP__CTL_EXITED)
    b->asked[i] = 0;
  switch (m.op) {
  case FP__CTL_SPAWNED:
    slot_spawned(b, i, &m);
    break;
  case FP__CTL_SPAWN_FAILED:
  case FP__CTL_GONE:
    m.slot = i;
    to_pool(b, &m, NULL);
    break;
  case FP__CTL_EXITED:
    m.slot = i;
    b->exited[i] = m;
    b->exit_pending[i] = 1;
    fpm_chan_write(c);
    flush_exit(b, i);
    break;
  default:
    (void)fpm_chan_message(&b->rl, c, &m, &msg, len); /* DATA, ACK, CLOSE */
    break;
  }
  free(msg);
}

/*
 * What the hosts may send that is due (the pool's frames to a worker are
 * tasks; its first frame back is its READY, and each after that answers
 * one task).  Any time: a READY, an ACK a full window waits for, the
 * answer to a SPAWN or KILL, or the answer of a worker with no task queued
 * behind it.  Not urgent, if every host worker with a task has one queued
 * behind it: the pool learns of an answer later then, but no worker waits
 * for it meanwhile.  Nothing, while no host worker has a task: the next
 * one comes through the pool's pipe, which wakes us, and a host's
 * unprompted news (a worker that died idle, a host that leaves) is seen
 * within a nap.
 */
static enum fpm_due due_from_hosts(const fpm_bridge *b)
{
  enum fpm_due due = FPM_DUE_NONE;
  for (unsigned i = 0; i < b->nslots; i++) {
    const fpm_chan *c = &b->ch[i];
    uint64_t answers = c->in.n > 0 ? c->in.n - 1 : 0;
    if (root_slot(b, i))
      continue;
    if (b->asked[i])
      return FPM_DUE_ANY;
    if (!c->open)
      continue;
    if (c->in.n == 0 || c->unacked >= FPM_WINDOW || c->out.n == answers + 1)
      return FPM_DUE_ANY;
    if (c->out.n > answers)
      due = FPM_DUE_LATER;
  }
  return due;
}

/* What the pool asks of the fork server goes to the slot's host.  0, or 1
 * at end of file. */
static int from_pool(fpm_bridge *b, int *busy)
{
  for (;;) {
    enum fp__io io;
    fp__ctl m;
    int fds[FP__CTL_NFDS];
    int rc = fp__remote_ctl_recv(b->ctl, &io, &m, fds);
    close_fds(fds);
    if (rc == 0 && io == FP__IO_AGAIN)
      return 0;
    if (rc < 0 || io == FP__IO_EOF)
      return 1;
    *busy = 1;
    if (m.op == FP__CTL_FINISH) {
      /* Only a fork server of the root's exits at FINISH; a host's
       * workers end at end of file, and its fork server at END. */
      b->finishing = 1;
      to_forkserver(b, 0, &m);
      continue;
    }
    if (m.slot >= b->nslots)
      continue;
    unsigned i = m.slot;
    if (m.op == FP__CTL_SPAWN || m.op == FP__CTL_KILL ||
        m.op == FP__CTL_STOP) {
      m.slot = local_slot(b, i);
      if (root_slot(b, i)) {
        to_forkserver(b, i, &m);
      } else {
        fpm_post_ctl(&b->rl, b->rank[i], &m);
        b->asked[i] |= answer_comes(b, i, m.op);
      }
    }
  }
}

/* Tells every host to stop, stops the root's fork server, and waits until
 * each host has: no worker is left on any rank after this. */
static void stop_hosts(fpm_bridge *b)
{
  for (unsigned i = 0; i < b->nslots; i++)
    fpm_chan_close(&b->ch[i]);
  int left = 0;
  for (int r = 0; r < b->size; r++)
    if (r != b->root) {
      fp__ctl m = {.op = FPM_END};
      fpm_post_ctl(&b->rl, r, &m);
      left++;
    }
  /* Meanwhile: at end of file it kills and reaps the root's workers. */
  fpm_progress(&b->rl);
  fpm_forkserver_stop(b->fs_ctl, b->fs_pid, b->fs_child);
  b->fs_ctl = -1;
  b->fs_child = 0;
  while (left > 0) {
    fp__ctl m;
    char *msg;
    size_t len;
    int from, busy = 0;
    while (fpm_take(&b->rl, MPI_ANY_SOURCE, &m, &msg, &len, &from)) {
      left -= m.op == FPM_END_ACK;
      /* A BIG's payload comes next (taken with a BIG it had no memory
       * for): nobody wants it. */
      if (m.op == FPM_BIG && msg != NULL)
        (void)fpm_recv_payload(&b->rl, from, NULL, (size_t)m.sys_us);
      free(msg);
      busy = 1;
    }
    fpm_progress(&b->rl);
    if (left > 0)
      fpm_pace(&b->rl, NULL, 0, busy, FPM_DUE_ANY);
  }
  fpm_relay_drain(&b->rl);
}

void fpm_bridge_run(fpm_bridge *b)
{
  int busy = 1;
  /* Our own thread: its waits are as short as fpm_pace asks, not 50
   * microseconds longer (the default slack), and its slices short. */
  (void)fpm_slack_set(FPM_SLACK_NS);
  (void)fpm_slice_set(FPM_SLICE_NS);
  for (;;) {
    int np = 0;
    b->pfd[np] = (struct pollfd){.fd = b->ctl, .events = POLLIN};
    b->pfd_slot[np++] = -1;
    if (b->fs_ctl >= 0) {
      b->pfd[np] = (struct pollfd){.fd = b->fs_ctl, .events = POLLIN};
      b->pfd_slot[np++] = -2;
    }
    for (unsigned i = 0; i < b->nslots; i++) {
      fpm_chan *c = &b->ch[i];
      if (fpm_chan_wants_read(c)) {
        b->pfd[np] = (struct pollfd){.fd = c->rfd, .events = POLLIN};
        b->pfd_slot[np++] = (int)i;
      }
      if (c->wfd >= 0 && !fpm_chan_flushed(c)) {
        b->pfd[np] = (struct pollfd){.fd = c->wfd, .events = POLLOUT};
        b->pfd_slot[np++] = (int)i;
      }
    }
    int ready = fpm_pace(&b->rl, b->pfd, np, busy, due_from_hosts(b));
    busy = 0;
    if (ready > 0 && b->pfd[0].revents != 0 && from_pool(b, &busy))
      break;
    for (int k = 1; ready > 0 && k < np; k++) {
      if (b->pfd[k].revents == 0)
        continue;
      if (b->pfd_slot[k] == -2) {
        from_forkserver(b, &busy);
        continue;
      }
      unsigned i = (unsigned)b->pfd_slot[k];
      fpm_chan *c = &b->ch[i];
      if (b->pfd[k].events == POLLIN && b->pfd[k].fd == c->rfd)
        busy |= fpm_chan_read(&b->rl, c, b->rank[i], local_slot(b, i), 0) > 0;
      else if (b->pfd[k].fd == c->wfd)
        busy |= fpm_chan_write(c) > 0;
    }
    fp__ctl m;
    char *msg;
    size_t len;
    int from;
    for (int k = 0; k < FPM_BATCH &&
                    fpm_take(&b->rl, MPI_ANY_SOURCE, &m, &msg, &len, &from);
         k++) {
      busy = 1;
      if (msg == NULL)
        break; /* dropped, no memory for it: we stop */
      from_host(b, from, msg, len);
    }
    for (unsigned i = 0; i < b->nslots; i++) {
      fpm_chan *c = &b->ch[i];
      if (!c->open)
        continue;
      busy |= flush_exit(b, i);
      if (c->open)
        fpm_chan_ack(&b->rl, c, b->rank[i], local_slot(b, i));
    }
    fpm_progress(&b->rl);
    if (b->rl.failed)
      break; /* out of memory: the pool sees its fork server die */
  }
  stop_hosts(b);
  MPI_Comm comm = b->rl.comm;
  int ctl = b->ctl;
  bridge_free(b);
  MPI_Comm_free(&comm);
  /* Last: the pool's destroy returns at this end of file. */
  close(ctl);
}

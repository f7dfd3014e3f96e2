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
} host;

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
      h->pid[m.slot] = m.pid;
    } else if (m.op == FP__CTL_EXITED) {
      worker_gone(h, &m);
      continue;
    }
    fpm_post_ctl(&h->rl, h->root, &m);
  }
}

/* A message from the root.  1 at END. */
static int from_root(host *h, char *msg, size_t len)
{
  fp__ctl m;
  memcpy(&m, msg, sizeof m);
  if (m.op == FPM_END) {
    free(msg);
    return 1;
  }
  if (m.slot >= h->n) {
    free(msg);
    return 0;
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
    (void)fpm_chan_message(c, &m, &msg, len); /* DATA, ACK, CLOSE */
    break;
  }
  free(msg);
  return 0;
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
    int ready = fpm_pace(&h->rl, h->pfd, np, busy);
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
    char *msg;
    size_t len;
    int from;
    for (int j = 0;
         j < FPM_BATCH && fpm_take(&h->rl, h->root, &msg, &len, &from); j++) {
      busy = 1;
      if (from_root(h, msg, len))
        return 0;
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
                 int fs_child)
{
  host h = {.root = root, .ctl = ctl, .n = n};
  fpm_relay_init(&h.rl, comm);
  h.ch = calloc(n + 1, sizeof *h.ch);
  h.pfd = calloc(2 * n + 1, sizeof *h.pfd);
  h.pfd_slot = calloc(2 * n + 1, sizeof *h.pfd_slot);
  h.pid = calloc(n + 1, sizeof *h.pid);
  int rc = FP_ENOMEM;
  if (h.ch != NULL && h.pfd != NULL && h.pfd_slot != NULL && h.pid != NULL) {
    for (unsigned k = 0; k < n; k++)
      fpm_chan_init(&h.ch[k]);
    /* The caller's thread: short waits while serving, its own slack
     * back after. */
    long slack = fpm_slack_set(FPM_SLACK_NS);
    rc = serve(&h);
    if (slack >= 0)
      (void)fpm_slack_set(slack);
  }
  /* Out of memory: the root retires this host, whose workers go now. */
  if (rc == FP_ENOMEM)
    host_gone(&h, FP_ENOMEM);
  /* Workers see end of file on their task pipes; the fork server kills
   * and reaps what is left once its socket ends. */
  for (unsigned k = 0; h.ch != NULL && k < n; k++)
    fpm_chan_close(&h.ch[k]);
  fpm_forkserver_stop(h.ctl, fs_pid, fs_child);
  if (rc == FP_ENOMEM) {
    /* The root waits for END_ACK after its END: take messages until then. */
    char *msg;
    size_t len;
    int from, end = 0;
    while (!end) {
      while (!end && fpm_take(&h.rl, root, &msg, &len, &from)) {
        fp__ctl m;
        memcpy(&m, msg, sizeof m);
        end = m.op == FPM_END;
        free(msg);
      }
      fpm_progress(&h.rl);
      if (!end)
        fpm_pace(&h.rl, NULL, 0, 0);
    }
  }
  fp__ctl ack = {.op = FPM_END_ACK};
  MPI_Send(&ack, (int)sizeof ack, MPI_BYTE, root, FPM_TAG, comm);
  fpm_relay_drain(&h.rl);
  free(h.ch);
  free(h.pfd);
  free(h.pfd_slot);
  free(h.pid);
  return rc;
}

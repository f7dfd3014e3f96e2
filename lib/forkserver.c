/*
 * The fork server: a small single-threaded process forked from the caller
 * when a pool is created.  It forks every worker, the first ones and every
 * replacement, so each starts from the same image and no fork ever happens
 * in a multi-threaded parent.  It hands each worker's pipe ends to the
 * pool (supervise.c) over a SOCK_SEQPACKET socket (SCM_RIGHTS), reaps its
 * workers and reports each exit.  At end of file on that socket it kills
 * what is left, reaps it and exits.
 *
 * It is detached with a double fork, so the caller's process never has it as
 * a child: a caller's own waitpid(-1) loop or SIGCHLD handler sees nothing of
 * ours after fp_pool_create returns.  The exception is a caller that is a
 * child subreaper (PR_SET_CHILD_SUBREAPER): the fork server is then
 * reparented to it, and the pool reaps it by its pid when it stops.  The
 * middle process is a vfork() child where FP__VFORK_MIDDLE allows: it
 * costs no copy of the caller's memory and no teardown of one.
 */
#include "forkpool-private.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif
#ifdef HAVE_SYS_PIDFD_H
#include <sys/pidfd.h>
#endif
#ifdef HAVE_STDIO_EXT_H
#include <stdio_ext.h>
#endif

#define FS_CTL_FD 3 /* the fork server's end of the control socket */

typedef struct fs_slot {
  pid_t pid;             /* 0: no live worker */
  int pidfd;             /* -1 without pidfds */
} fs_slot;

typedef struct fs_state {
  const fp__worker_cfg *cfg;
  fs_slot *slots;        /* cfg->nslots of them */
  struct pollfd *pfd;    /* the poll set: ctl, SIGCHLD pipe or pidfds */
  int use_pidfd;         /* pidfd_open works on this kernel */
  int sigchld_pipe[2];   /* without pidfds: SIGCHLD handler -> loop */
  struct sigaction caller_chld; /* restored in workers */
  sigset_t caller_mask;  /* restored in workers */
  int fd_floor;          /* above every descriptor the caller had */
  int finishing;         /* FP__CTL_FINISH read: exit once none is left */
} fs_state;

static int sigchld_write_fd = -1;

static void on_sigchld(int sig)
{
  (void)sig;
  int saved = errno;
  (void)!write(sigchld_write_fd, "", 1);
  errno = saved;
}

int fp__ctl_send(int fd, const fp__ctl *m)
{
  for (;;) {
    if (send(fd, m, sizeof *m, MSG_NOSIGNAL) == (ssize_t)sizeof *m)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -errno;
    /* The fork server answers at most two messages per slot: this is short. */
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, -1) < 0 && errno != EINTR)
      return -errno;
  }
}

int fp__ctl_send_fds(int fd, const fp__ctl *m, const int fds[FP__CTL_NFDS])
{
  union {
    char buf[CMSG_SPACE(FP__CTL_NFDS * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct iovec iov = {(void *)m, sizeof *m};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  memset(u.buf, 0, sizeof u.buf);
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(FP__CTL_NFDS * sizeof(int));
  memcpy(CMSG_DATA(c), fds, FP__CTL_NFDS * sizeof(int));
  while (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0)
    if (errno != EINTR)
      return -errno;
  return 0;
}

static void close_fds(int fds[FP__CTL_NFDS])
{
  for (int i = 0; i < FP__CTL_NFDS; i++) {
    if (fds[i] >= 0)
      close(fds[i]);
    fds[i] = -1;
  }
}

int fp__ctl_recv(int fd, enum fp__io *io, fp__ctl *m,
                 int fds[FP__CTL_NFDS])
{
  union {
    char buf[CMSG_SPACE(FP__CTL_NFDS * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct iovec iov = {m, sizeof *m};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  ssize_t n;
  for (int i = 0; i < FP__CTL_NFDS; i++)
    fds[i] = -1;
  while ((n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
    ;
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    return -errno;
  *io = n < 0 ? FP__IO_AGAIN : n == 0 ? FP__IO_EOF : FP__IO_FRAME;
  if (n <= 0)
    return 0;
  int got = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      got = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      memcpy(fds, CMSG_DATA(c),
             (got > FP__CTL_NFDS ? FP__CTL_NFDS : got) * sizeof(int));
    }
  int want_fds = n == (ssize_t)sizeof *m && m->op == FP__CTL_SPAWNED;
  if (want_fds && (msg.msg_flags & MSG_CTRUNC) && got < FP__CTL_NFDS) {
    /* Out of descriptors: the kernel dropped what did not fit. */
    close_fds(fds);
    return 0;
  }
  if (n != (ssize_t)sizeof *m || (msg.msg_flags & MSG_CTRUNC) ||
      want_fds != (got == FP__CTL_NFDS) || (!want_fds && got != 0)) {
    close_fds(fds);
    return FP_EPROTO;
  }
  for (int i = 0; want_fds && i < FP__CTL_NFDS; i++)
    if ((fds[i] = fp__fd_high(fds[i])) < 0) {
      close_fds(fds); /* out of descriptors, as above */
      return 0;
    }
  return 0;
}

/* In the new worker: become the caller's image again, then run the loop. */
static void worker_child(fs_state *fs, uint32_t slot, int in_fd, int out_fd)
{
#ifdef PR_SET_PDEATHSIG
  /* The fork server is single-threaded, so this follows its death. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
  if (getppid() == 1)
    _exit(1);
  sigaction(SIGCHLD, &fs->caller_chld, NULL);
  free(fs->pfd); /* the fork server's, not the worker's */
  free(fs->slots);
  /* Above every descriptor the caller had, so that no FILE or descriptor
   * number of the caller's that a task uses (or exit() flushes) is ours;
   * close-on-exec, so that nothing a task execs inherits them. */
  int in = fcntl(in_fd, F_DUPFD_CLOEXEC, fs->fd_floor);
  int out = fcntl(out_fd, F_DUPFD_CLOEXEC, fs->fd_floor);
  /* Under a descriptor limit that low, they stay where they are: still
   * close-on-exec, and above 2. */
  if (in < 0)
    in = in_fd;
  if (out < 0)
    out = out_fd;
  fp__close_from_except(3, in, out);
  fp__worker_setup(fs->cfg, slot);
  sigprocmask(SIG_SETMASK, &fs->caller_mask, NULL);
  fp__worker_main(fs->cfg, slot, in, out);
}

static void spawn(fs_state *fs, uint32_t slot)
{
  fp__ctl m = {.op = FP__CTL_SPAWN_FAILED, .slot = slot};
  int in[2] = {-1, -1}, out[2] = {-1, -1};
  int rc = fp__pipe(in);
  if (rc == 0)
    rc = fp__pipe(out);
  pid_t pid = rc == 0 ? fork() : -1;
  if (rc == 0 && pid < 0)
    rc = -errno;
  if (pid == 0)
    worker_child(fs, slot, in[0], out[1]);
  if (rc == 0) {
    fp__grow_pipe(in[1]);
    fp__grow_pipe(out[0]);
    fs->slots[slot].pid = pid;
#ifdef HAVE_PIDFD_OPEN
    if (fs->use_pidfd)
      fs->slots[slot].pidfd = fp__fd_high(pidfd_open(pid, 0));
#endif
    m.op = FP__CTL_SPAWNED;
    m.pid = pid;
    /* The dispatcher keeps in[0] open too, so that writing to a dead
     * worker fills the pipe instead of raising SIGPIPE. */
    int fds[FP__CTL_NFDS] = {in[1], out[0], in[0]};
    rc = fp__ctl_send_fds(FS_CTL_FD, &m, fds);
  } else {
    m.value = rc;
    rc = fp__ctl_send(FS_CTL_FD, &m);
  }
  for (int i = 0; i < 2; i++) {
    if (in[i] >= 0)
      close(in[i]);
    if (out[i] >= 0)
      close(out[i]);
  }
  if (rc != 0 && pid > 0)
    kill(pid, SIGKILL); /* the parent is gone; the reaper finds it */
}

/* Reaps what has exited and reports it; with block, waits for all. */
static void reap(fs_state *fs, int block)
{
  for (uint32_t i = 0; i < fs->cfg->nslots; i++) {
    fs_slot *s = &fs->slots[i];
    int st;
    if (s->pid == 0)
      continue;
    pid_t r;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    /* wait4: the worker's CPU time, which no getrusage of the caller's
     * ever sees (a worker is not the caller's child). */
    while ((r = wait4(s->pid, &st, block ? 0 : WNOHANG, &ru)) < 0 &&
           errno == EINTR)
      ;
    if (r == 0)
      continue;
    fp__ctl m = {.op = FP__CTL_EXITED, .slot = i, .pid = s->pid,
                 .value = r > 0 ? st : 0,
                 .user_us = fp__tv_us(&ru.ru_utime),
                 .sys_us = fp__tv_us(&ru.ru_stime)};
    s->pid = 0;
    if (s->pidfd >= 0)
      close(s->pidfd);
    s->pidfd = -1;
    if (!block)
      (void)fp__ctl_send(FS_CTL_FD, &m);
  }
}

static void handle_ctl(fs_state *fs, const fp__ctl *m)
{
  if (m->slot >= fs->cfg->nslots)
    return;
  fs_slot *s = &fs->slots[m->slot];
  if (m->op == FP__CTL_SPAWN && s->pid == 0)
    spawn(fs, m->slot);
  /* Only a pid not yet reaped is ours to signal: no pid-reuse race. */
  else if (m->op == FP__CTL_KILL && s->pid != 0 && s->pid == m->pid) {
    kill(s->pid, m->value);
    /* A stopped worker would leave SIGTERM pending for ever. */
    if (m->value != SIGKILL && m->value != SIGCONT)
      kill(s->pid, SIGCONT);
  } else if (m->op == FP__CTL_FINISH) {
    fs->finishing = 1;
    /* A stopped worker reads its end of file only once continued. */
    for (uint32_t i = 0; i < fs->cfg->nslots; i++)
      if (fs->slots[i].pid != 0)
        kill(fs->slots[i].pid, SIGCONT);
  } else if (m->op == FP__CTL_STOP && s->pid != 0 && s->pid == m->pid) {
    /* The value names the task: a late request is not taken for the
     * next one's. */
    union sigval v = {.sival_int = m->value};
    (void)sigqueue(s->pid, FP__STOP_SIG, v);
  }
}

static int none_left(const fs_state *fs)
{
  for (uint32_t i = 0; i < fs->cfg->nslots; i++)
    if (fs->slots[i].pid != 0)
      return 0;
  return 1;
}

static void serve(fs_state *fs)
{
  unsigned n = fs->cfg->nslots;
  struct pollfd *p = fs->pfd = calloc(n + 2, sizeof *p);
  if (p == NULL)
    return;
  for (;;) {
    int np = 0;
    p[np++] = (struct pollfd){.fd = FS_CTL_FD, .events = POLLIN};
    if (!fs->use_pidfd)
      p[np++] = (struct pollfd){.fd = fs->sigchld_pipe[0], .events = POLLIN};
    for (unsigned i = 0; fs->use_pidfd && i < n; i++)
      if (fs->slots[i].pidfd >= 0)
        p[np++] = (struct pollfd){.fd = fs->slots[i].pidfd, .events = POLLIN};
    if (poll(p, (nfds_t)np, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (!fs->use_pidfd && (p[1].revents & POLLIN)) {
      char drain[64];
      while (read(fs->sigchld_pipe[0], drain, sizeof drain) > 0)
        ;
    }
    reap(fs, 0);
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      enum fp__io io;
      fp__ctl m;
      int fds[FP__CTL_NFDS];
      int rc = fp__ctl_recv(FS_CTL_FD, &io, &m, fds);
      if (rc < 0 || io == FP__IO_EOF)
        break;
      if (io == FP__IO_FRAME)
        handle_ctl(fs, &m);
    }
    if (fs->finishing && none_left(fs))
      break; /* every exit is reported: the pool is done with us */
  }
  free(p);
  fs->pfd = NULL;
}

/* Where the caller had no fd 0, 1 or 2, /dev/null: workers write to their
 * stdio.  Without /dev/null they stay closed (our own descriptors go
 * through fp__fd_high, so none lands there). */
static void stdio_or_null(void)
{
  for (int fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) < 0) {
      int null = open("/dev/null", O_RDWR);
      if (null > 2)
        close(null); /* cannot be: fd was the lowest free */
    }
}

/*
 * One past the highest descriptor open here, given top, the caller's
 * fp__fd_top() just before the fork.  A descriptor another thread opened
 * since takes the lowest free number, so it lies below top or just above
 * it: one poll() over the next FS_FD_SLACK numbers finds it, where a fresh
 * process reading /proc/self/fd would take tens of microseconds.
 */
#define FS_FD_SLACK 64
static int fd_top_from(int top)
{
  struct pollfd p[FS_FD_SLACK];
  for (int k = 0; k < FS_FD_SLACK; k++)
    p[k] = (struct pollfd){.fd = top + k, .events = 0};
  if (poll(p, FS_FD_SLACK, 0) < 0)
    return fp__fd_top();
  for (int k = FS_FD_SLACK - 1; k >= 0; k--)
    if (!(p[k].revents & POLLNVAL))
      return k == FS_FD_SLACK - 1 ? fp__fd_top() : top + k + 1;
  return top;
}

/* The fork server's life; never returns. */
static void forkserver_main(const fp__worker_cfg *cfg, int ctl,
                            const sigset_t *caller_mask, int fd_top)
{
  fs_state fs = {.cfg = cfg, .use_pidfd = 0, .sigchld_pipe = {-1, -1}};
  fs.caller_mask = *caller_mask;
#ifdef FP__VFORK_MIDDLE
  /* Before anything reads it; every worker inherits it from here. */
  fp__rseq_renew();
#endif
  /* Our descriptors are still the caller's at fork. */
  fs.fd_floor = fd_top_from(fd_top);
  if (fs.fd_floor < FS_CTL_FD + 1)
    fs.fd_floor = FS_CTL_FD + 1;
  if (ctl != FS_CTL_FD && (dup2(ctl, FS_CTL_FD) < 0 || close(ctl) < 0))
    _exit(1);
  fcntl(FS_CTL_FD, F_SETFL, 0); /* blocking: nothing else to do */
  fp__close_from(FS_CTL_FD + 1);
  stdio_or_null();
  /* Workers read arguments in the shared area but never write there: a
   * stray write from one task must not reach another's arguments. */
  if (cfg->shm != NULL)
    (void)mprotect(cfg->shm->base, cfg->shm->len, PROT_READ);
  /* Terminal signals go to the caller; we follow it through the socket. */
  setpgid(0, 0);
#ifdef HAVE___FPURGE
  /* Output the caller had not flushed is the caller's, not ours to repeat. */
  __fpurge(stdout);
  __fpurge(stderr);
#endif

  fs.slots = calloc(cfg->nslots ? cfg->nslots : 1, sizeof *fs.slots);
  if (fs.slots == NULL)
    _exit(1);
  for (unsigned i = 0; i < cfg->nslots; i++)
    fs.slots[i].pidfd = -1;

  /* SIGTERM must end the fork server and its workers (fp_pool_terminate),
   * whatever handler the caller had; other dispositions stay the caller's. */
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  sigaction(SIGCHLD, NULL, &fs.caller_chld);
  struct sigaction sa = {.sa_handler = SIG_DFL};
  sigemptyset(&sa.sa_mask);
#ifdef HAVE_PIDFD_OPEN
  int probe = pidfd_open(getpid(), 0);
  if (probe >= 0) {
    fs.use_pidfd = 1;
    close(probe);
  }
#endif
  if (!fs.use_pidfd) {
    if (fp__pipe(fs.sigchld_pipe) != 0 ||
        fp__set_nonblock(fs.sigchld_pipe[0]) != 0 ||
        fp__set_nonblock(fs.sigchld_pipe[1]) != 0)
      _exit(1);
    sigchld_write_fd = fs.sigchld_pipe[1];
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  }
  sigaction(SIGCHLD, &sa, NULL); /* never the caller's handler, never IGN */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);

  fp__ctl hello = {.op = FP__CTL_READY, .pid = getpid()};
  if (fp__ctl_send(FS_CTL_FD, &hello) == 0) {
    /* The first workers unasked: a round trip less before create returns. */
    for (unsigned i = 0; i < cfg->nslots; i++)
      spawn(&fs, i);
    serve(&fs);
  }

  for (unsigned i = 0; i < cfg->nslots; i++)
    if (fs.slots[i].pid != 0)
      kill(fs.slots[i].pid, SIGKILL);
  reap(&fs, 1);
  fp__shm_unseen(cfg->shm);
  /* Before our memory is torn down: the pool waits for this end of file,
   * and need not wait for that. */
  close(FS_CTL_FD);
  _exit(0);
}

/*
 * The middle process has exited, so the fork server now has the nearest
 * subreaper among our ancestors as its parent (or init): that is us if we
 * are one (PR_SET_CHILD_SUBREAPER), and then we must reap it.
 */
static int forkserver_is_child(void)
{
#ifdef PR_GET_CHILD_SUBREAPER
  int subreaper = 0;
  return prctl(PR_GET_CHILD_SUBREAPER, &subreaper) == 0 && subreaper != 0;
#else
  return 0;
#endif
}

/*
 * The middle process: forks the fork server and exits.  As a vfork() child
 * it runs on the caller's memory and stack (below the caller's frame, which
 * it never returns to) while the calling thread waits; glibc's fork() then
 * takes its locks and runs the atfork handlers as a fork in the caller
 * would, and the fork server gets a copy of the caller's memory.
 */
static void middle(const fp__worker_cfg *cfg, int ctl,
                   const sigset_t *caller_mask, int fd_top)
    __attribute__((noreturn, noinline));
static void middle(const fp__worker_cfg *cfg, int ctl,
                   const sigset_t *caller_mask, int fd_top)
{
  pid_t fs = fork();
  if (fs == 0)
    forkserver_main(cfg, ctl, caller_mask, fd_top);
  if (fs < 0) {
    /* EAGAIN at the process limit: the caller's error, as fork(2)'s. */
    fp__ctl m = {.op = FP__CTL_SPAWN_FAILED, .value = -errno};
    (void)fp__ctl_send(ctl, &m);
  }
  /* Only a valgrind annotation, so harmless in the caller's memory. */
  fp__shm_unseen(cfg->shm);
  _exit(fs < 0 ? 1 : 0);
}

int fp__forkserver_start(const fp__worker_cfg *cfg, int *ctl_fd,
                         pid_t *fs_pid, int *fs_child)
{
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return -errno;
  int rc = fp__fd_pair_high(sv);
  if (rc != 0)
    return rc;

  /* Read here, where /proc/self is warm after the first pool. */
  int fd_top = fp__fd_top();
  /* Block signals across the forks so no caller handler runs in our
   * children before they have set up their own. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
#ifdef FP__VFORK_MIDDLE
  /* The analyzer's vfork rules forbid any call but exec and _exit in the
   * child; ours calls fork() by design (see middle), and the caller waits
   * only for that fork. */
  pid_t mid = vfork(); /* NOLINT(clang-analyzer-security.insecureAPI.vfork) */
  if (mid < 0 && (errno == ENOSYS || errno == EPERM))
    mid = fork(); /* a sandbox's filter that refuses vfork alone */
#else
  pid_t mid = fork();
#endif
  if (mid == 0)
    middle(cfg, sv[1], &old, fd_top); /* NOLINT(clang-analyzer-unix.Vfork) */
  rc = mid < 0 ? -errno : 0;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close(sv[1]);
  if (rc != 0) {
    close(sv[0]);
    return rc;
  }
  /* Our own child, by pid; ECHILD if the caller's handler took it first. */
  while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
    ;

  enum fp__io io = FP__IO_AGAIN;
  fp__ctl m;
  int fds[FP__CTL_NFDS];
  struct pollfd p = {.fd = sv[0], .events = POLLIN};
  while ((rc = poll(&p, 1, -1)) < 0 && errno == EINTR)
    ;
  rc = rc < 0 ? -errno : fp__ctl_recv(sv[0], &io, &m, fds);
  int got = rc == 0 && io == FP__IO_FRAME; /* a message */
  if (got && m.op == FP__CTL_READY) {
    rc = fp__set_nonblock(sv[0]);
    if (rc == 0) {
      *ctl_fd = sv[0];
      *fs_pid = m.pid;
      *fs_child = forkserver_is_child();
      return 0;
    }
  } else if (got && m.op == FP__CTL_SPAWN_FAILED && m.value < 0) {
    rc = m.value;
  } else if (rc == 0) {
    rc = FP_EBROKEN; /* it died before saying hello */
  }
  close(sv[0]);
  return rc;
}

/*
 * The seam between the core and a transport that reaches workers on other
 * machines (libforkpool-mpi).  Private: never installed, and not part of
 * the API; the core exports these names (their prefix, fp__remote_, is the
 * only internal one tests/check-exports.sh accepts) only so that a library
 * built in this tree can link them.
 *
 * The model: the pool talks to its workers only through the control socket
 * of a fork server (fp__ctl messages; SPAWNED passes a worker's pipe ends)
 * and those pipes.  A remote pool's fork server is whatever holds the other
 * end of the control socket, here a relay that impersonates it; on each
 * remote host a real fork server, started from the same options, forks the
 * workers.  Nothing here knows how the relay moves bytes.
 */
#ifndef FORKPOOL_REMOTE_H
#define FORKPOOL_REMOTE_H

#include "forkpool-private.h"

/* One host's slots in a remote pool: they fail together (fp__group). */
typedef struct fp__remote_group {
  unsigned workers;      /* its slots, after the previous group's */
  char name[48];         /* who it is, in log lines: "host rank 1" */
} fp__remote_group;

/*
 * A process pool whose fork server is the peer of ctl_fd (a SOCK_SEQPACKET
 * socket; consumed, on failure too), with no shared memory: every payload
 * is framed.  opts->workers is the number of slots, all remote, in ngroups
 * groups (their workers add up to it); the peer must answer a SPAWNED (fds
 * attached) or SPAWN_FAILED for each of them unasked, as a fork server does
 * at start, and the pool is returned once a worker said READY.  The peer
 * sends GONE for a slot whose host can run no worker any more: that host's
 * group is retired, or the pool breaks if it is the last.  Destroying it
 * closes ctl_fd's write side and waits for the peer to close its end.  0,
 * or what fp_pool_create returns.
 */
FP_EXTERN int fp__remote_pool_create(fp_pool **out,
                                     const fp_pool_options *opts, int ctl_fd,
                                     const fp__remote_group *groups,
                                     unsigned ngroups);

/*
 * On a host: checks opts as fp_pool_create does and starts a fork server
 * with opts->workers workers (0: this machine's online CPUs; their number
 * in *nworkers), configured as a remote pool's (no shared memory).  *ctl_fd
 * is its control socket (non-blocking, close-on-exec): end of file on it
 * makes the fork server kill and reap its workers and exit.  *fs_child is
 * 1 if this process must reap *fs_pid (it is a child subreaper).
 */
FP_EXTERN int fp__remote_forkserver_start(const fp_pool_options *opts,
                                          unsigned *nworkers, int *ctl_fd,
                                          pid_t *fs_pid, int *fs_child);

/* What fp_pool_create_error(3) then says in this thread (printf-style);
 * returns rc. */
FP_EXTERN int fp__remote_create_failed(int rc, const char *fmt, ...)
    FP_PRINTF(2, 3);

/* A control message on a non-blocking socket, waiting while it is full;
 * fds (NULL: none) are attached for SPAWNED.  0 or -errno. */
FP_EXTERN int fp__remote_ctl_send(int fd, const fp__ctl *m,
                                  const int fds[FP__CTL_NFDS]);
/* fp__ctl_recv. */
FP_EXTERN int fp__remote_ctl_recv(int fd, enum fp__io *io, fp__ctl *m,
                                  int fds[FP__CTL_NFDS]);

#endif

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
 * socket; consumed, on failure too).  opts->workers is the number of
 * slots, all remote, in ngroups groups (their workers add up to it); the
 * peer must answer a SPAWNED (fds attached) or SPAWN_FAILED for each of
 * them unasked, as a fork server does at start, and the pool is returned
 * once a worker said READY.  The peer sends GONE for a slot whose host can
 * run no worker any more: that host's group is retired, or the pool breaks
 * if it is the last.  Destroying it closes ctl_fd's write side and waits
 * for the peer to close its end.
 *
 * Unless opts->shm_args is FP_SHM_OFF, the pool has a shared area as a
 * local pool's, which no worker maps: *area (NULL: none) is for the peer,
 * in this process, until it closes its end.  The pool writes TASK frames
 * that name arguments in it (FP__MSG_TASK_SHM), and reads RESULT frames
 * that name results in slot's ring (FP__MSG_RESULT_SHM) that the peer
 * wrote there (fp__remote_ring_attach).  0, or what fp_pool_create
 * returns.
 */
FP_EXTERN int fp__remote_pool_create(fp_pool **out,
                                     const fp_pool_options *opts, int ctl_fd,
                                     const fp__remote_group *groups,
                                     unsigned ngroups, fp__shm **area);

/*
 * What fp__remote_pool_create would refuse of opts (its options, its mode,
 * its tasks) before anything starts: 0, or the error.  Lets the root of a
 * remote pool find its own bad options while every host can still be
 * told, so that the call fails on every rank.
 */
FP_EXTERN int fp__remote_options_check(const fp_pool_options *opts);

/*
 * On a host: checks opts as fp_pool_create does and starts a fork server
 * with opts->workers workers (0: this machine's online CPUs; their number
 * in *nworkers), configured as a local pool's.  *ctl_fd is its control
 * socket (non-blocking, close-on-exec): end of file on it makes the fork
 * server kill and reap its workers and exit.  *fs_child is 1 if this
 * process must reap *fs_pid (it is a child subreaper).  *area is the
 * workers' shared area (NULL: none, as with FP_SHM_OFF): this process
 * places their large arguments in it and reads their rings, as a pool's
 * dispatcher does; freed by fp__remote_area_free once they are gone.
 * area NULL: no area, whatever opts->shm_args (which is still checked).
 */
FP_EXTERN int fp__remote_forkserver_start(const fp_pool_options *opts,
                                          unsigned *nworkers, int *ctl_fd,
                                          pid_t *fs_pid, int *fs_child,
                                          fp__shm **area);
FP_EXTERN void fp__remote_area_free(fp__shm *area);

/* --- What a relay needs of the shared area and the frames ---------------- */

/* fp__shm_alloc, fp__shm_free, fp__shm_ring_read, fp__shm_ring_done. */
FP_EXTERN int fp__remote_shm_alloc(fp__shm *m, size_t len, size_t *off);
FP_EXTERN void fp__remote_shm_free(fp__shm *m, size_t off, size_t len);
FP_EXTERN const char *fp__remote_ring_read(const fp__shm *m, unsigned slot,
                                           uint64_t tail, uint64_t pos,
                                           size_t len);
FP_EXTERN void fp__remote_ring_done(fp__shm *m, unsigned slot,
                                    uint64_t tail);
/* The writer's side of a remote pool's ring, in the pool's process:
 * fp__ring_attach, fp__ring_place (and fp__shm_lend on the bytes). */
FP_EXTERN void fp__remote_ring_attach(fp__ring *r, const fp__shm *m,
                                      unsigned slot);
FP_EXTERN char *fp__remote_ring_place(fp__ring *r, size_t len,
                                      uint64_t *pos);

/* A frame body's type and id (its first two msgpack integers), from its
 * first have bytes; 0 or FP_EPROTO. */
FP_EXTERN int fp__remote_frame_head(const char *body, size_t have,
                                    uint64_t *type, uint64_t *id);
/* A TASK_SHM body: its id, name (name_len bytes, in body), n, and the
 * arguments' offset and length, unchecked against any area. */
FP_EXTERN int fp__remote_task_ref(const char *body, size_t len, uint64_t *id,
                                  const char **name, size_t *name_len,
                                  unsigned *n, uint64_t *off,
                                  uint64_t *args_len);
/* A TASK frame (malloc'd, *frame_len bytes) for id, name, n: the
 * arguments at args (len bytes) named at off in the area when area is not
 * NULL, else copied in.  0 or FP_ENOMEM, FP_EINVAL. */
FP_EXTERN int fp__remote_task_frame(uint64_t id, const char *name,
                                    size_t name_len, unsigned n,
                                    const fp__shm *area, size_t off,
                                    const char *args, size_t len,
                                    char **frame, size_t *frame_len);
/* fp__decode_result_shm. */
FP_EXTERN int fp__remote_result_ref(const char *body, size_t len,
                                    uint64_t *id, uint64_t *pos,
                                    size_t *rlen);
/* A RESULT frame (malloc'd) for id's success: the result's len bytes
 * named at pos in the ring when result is NULL, else copied in. */
FP_EXTERN int fp__remote_result_frame(uint64_t id, const char *result,
                                      uint64_t pos, size_t len, char **frame,
                                      size_t *frame_len);

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

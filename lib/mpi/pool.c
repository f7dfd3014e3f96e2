/*
 * fp_mpi_pool_create(_ex): the start-up every rank goes through together.
 * Each host starts its fork server and says how many workers it has (or
 * why it could not), the root whether its own options will do; the root
 * adds them up, starts a fork server of its
 * own if it is to have workers too and they fit, and says whether to go
 * on.  Then each host serves (host.c) until the root's pool is gone, and
 * the root starts the bridge thread (bridge.c) and creates an ordinary
 * pool whose fork server the bridge stands in for (passing its own fork
 * server's messages through).
 */
#include "relay.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

#define FPM_MAX_WORKERS 1024 /* a pool's, all ranks together */
/* The first fp_mpi_options: a later library accepts a caller built then. */
#define FPM_OPTIONS_MIN_SIZE                                                  \
  (offsetof(fp_mpi_options, root_workers) + sizeof(unsigned))

static void *bridge_main(void *arg)
{
#ifdef HAVE_SYS_PRCTL_H
  /* So that ps -L, top -H and gdb tell it from the caller's threads. */
  (void)prctl(PR_SET_NAME, "fp-bridge", 0, 0, 0);
#endif
  fpm_bridge_run(arg);
  return NULL;
}

/* When the bridge cannot be made: END to every host, and what each sends
 * taken until its END_ACK (with no memory for a message, taken all the
 * same, unread).  Frees comm. */
static void stop_hosts_plain(MPI_Comm comm, int root)
{
  int size;
  MPI_Comm_size(comm, &size);
  fp__ctl end = {.op = FPM_END};
  for (int r = 0; r < size; r++)
    if (r != root)
      MPI_Send(&end, (int)sizeof end, MPI_BYTE, r, FPM_TAG, comm);
  fpm_relay rl;
  fpm_relay_init(&rl, comm);
  for (int left = size - 1; left > 0;) {
    fp__ctl m;
    char *msg;
    size_t len;
    int from;
    if (fpm_take(&rl, MPI_ANY_SOURCE, &m, &msg, &len, &from)) {
      left -= m.op == FPM_END_ACK;
      free(msg);
    } else {
      (void)fpm_pace(&rl, NULL, 0, 0, FPM_DUE_ANY);
    }
  }
  fpm_relay_drain(&rl);
  MPI_Comm_free(&comm);
}

/* opts (NULL: the defaults) with workers set: what the pool, or the
 * root's own fork server, is made with. */
static fp_pool_options options_with(const fp_pool_options *opts,
                                    unsigned workers)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  if (opts != NULL) {
    /* A wrong size stays wrong: fp_pool_create refuses it. */
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    o.size = opts->size;
  }
  o.workers = workers;
  return o;
}

/* The root: the bridge, then the pool.  fs_ctl (-1: none) is the root's
 * own fork server's control socket, taken.  On failure the hosts were told
 * to stop, the root's fork server too, and comm is freed. */
static int root_create(fp_pool **out, const fp_pool_options *opts,
                       MPI_Comm comm, int root, const int *count,
                       unsigned total, int fs_ctl, pid_t fs_pid, int fs_child)
{
  /* Each rank's slots fail together, the root's own too: in the
   * bridge's order, rank by rank. */
  int size;
  unsigned ngroups = 0;
  MPI_Comm_size(comm, &size);
  fp__remote_group *groups = calloc((size_t)size, sizeof *groups);
  for (int r = 0; groups != NULL && r < size; r++)
    if (count[r] > 0) {
      groups[ngroups].workers = (unsigned)count[r];
      snprintf(groups[ngroups++].name, sizeof groups->name, "%s rank %d",
               r == root ? "root" : "host", r);
    }
  int sv[2];
  if (groups == NULL ||
      socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    int rc = groups == NULL ? FP_ENOMEM : -errno;
    free(groups);
    fpm_forkserver_stop(fs_ctl, fs_pid, fs_child);
    stop_hosts_plain(comm, root);
    return fp__remote_create_failed(rc, "%s: %s", groups == NULL ?
                                    "the hosts' table" : "socketpair",
                                    fp_strerror(rc));
  }
  sv[0] = fpm_fd_prep(sv[0]);
  sv[1] = fpm_fd_prep(sv[1]);
  fpm_bridge *b = NULL;
  if (sv[1] >= 0) /* takes sv[1] and fs_ctl */
    b = fpm_bridge_new(comm, root, count, sv[1], fs_ctl, fs_pid, fs_child);
  else
    fpm_forkserver_stop(fs_ctl, fs_pid, fs_child);
  if (b == NULL || sv[0] < 0) {
    free(groups);
    if (sv[0] >= 0)
      close(sv[0]);
    if (b != NULL)
      fpm_bridge_run(b); /* sees end of file at once */
    else
      stop_hosts_plain(comm, root);
    return fp__remote_create_failed(sv[0] < 0 ? sv[0] : FP_ENOMEM,
                                    "the bridge to the hosts: %s",
                                    fp_strerror(sv[0] < 0 ? sv[0]
                                                          : FP_ENOMEM));
  }

  /* The bridge takes no signal of the caller's, and a write to a pipe
   * the pool has closed is EPIPE, not SIGPIPE. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  int trc = pthread_create(&t, NULL, bridge_main, b);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (trc != 0) {
    free(groups);
    close(sv[0]);
    fpm_bridge_run(b); /* sees end of file at once */
    return fp__remote_create_failed(-trc, "the bridge thread: %s",
                                    strerror(trc));
  }

  fp_pool_options o = options_with(opts, total);
  /* The root's own workers have their own fork server's view, not the
   * pool's area: with them, every frame between the pool and the root
   * carries its payload. */
  if (count[root] > 0)
    o.shm_args = FP_SHM_OFF;
  fp__shm *area;
  int rc = fp__remote_pool_create(out, &o, sv[0], groups, ngroups, &area);
  free(groups);
  if (rc != 0) {
    pthread_join(t, NULL); /* the pool closed sv[0]: the bridge is done */
  } else {
    /* No task was submitted yet: nothing needed the area before. */
    fpm_bridge_area(b, area);
    pthread_detach(t);
  }
  return rc;
}

/* Whose workers a failed start-up is about. */
enum { BY_HOSTS, BY_ALL, BY_ROOT, BY_ROOT_OPTS };

/* The start-up failed on a rank, or the workers are too many: why, as
 * fp_pool_create_error(3) says it, on every rank. */
static int start_failed(int status, unsigned total, int by)
{
  if (status == FP_EINVAL && total > FPM_MAX_WORKERS)
    return fp__remote_create_failed(status, "the %s workers add up to "
                                    "%u, more than %d",
                                    by == BY_HOSTS ? "hosts'"
                                                   : "root's and the hosts'",
                                    total, FPM_MAX_WORKERS);
  if (by == BY_ROOT_OPTS)
    return fp__remote_create_failed(status, "the root's options: %s",
                                    fp_strerror(status));
  return fp__remote_create_failed(status, "%s could not start its "
                                  "workers: %s",
                                  by == BY_ROOT ? "the root" : "a host",
                                  fp_strerror(status));
}

/* What is wrong with this rank's own arguments, most telling last: 0, or
 * an index into arg_why. */
enum { ARG_OK, ARG_OUT_NULL, ARG_OPTS_SIZE, ARG_ROOT_WORKERS };
static const char *const arg_why[] = {
    "", "out is NULL", "mpi_opts->size is not sizeof(fp_mpi_options)",
    "mpi_opts->root_workers is more than 1024"};

static int args_check(fp_pool **out, const fp_mpi_options *mo)
{
  if (mo != NULL &&
      (mo->size < FPM_OPTIONS_MIN_SIZE || mo->size > sizeof *mo))
    return ARG_OPTS_SIZE;
  if (mo != NULL && mo->root_workers > FPM_MAX_WORKERS)
    return ARG_ROOT_WORKERS;
  return out == NULL ? ARG_OUT_NULL : ARG_OK;
}

FP_EXTERN int fp_mpi_pool_create(fp_pool **out, const fp_pool_options *opts,
                                 MPI_Comm comm, int root)
{
  return fp_mpi_pool_create_ex(out, opts, NULL, comm, root);
}

FP_EXTERN int fp_mpi_pool_create_ex(fp_pool **out,
                                    const fp_pool_options *opts,
                                    const fp_mpi_options *mpi_opts,
                                    MPI_Comm comm, int root)
{
  int inited = 0, finalized = 0, rank, size;
  if (out != NULL)
    *out = NULL;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (!inited || finalized)
    return fp__remote_create_failed(FP_EINVAL, "MPI is %s",
                                    inited ? "finalized" : "not initialized");
  if (comm == MPI_COMM_NULL)
    return fp__remote_create_failed(FP_EINVAL,
                                    "the communicator is MPI_COMM_NULL");
  /* Every rank of an intercommunicator sees it so: each fails here,
   * where the collective calls below would pair the two groups and
   * wait forever. */
  int inter = 0;
  MPI_Comm_test_inter(comm, &inter);
  if (inter)
    return fp__remote_create_failed(FP_EINVAL, "the communicator is an "
                                    "intercommunicator");
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  /* A bad argument on one rank fails the call on all of them, rather than
   * leave the others waiting in the collective calls below. */
  int bad = args_check(out, mpi_opts), any_bad = 0;
  MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, comm);
  if (any_bad)
    return fp__remote_create_failed(FP_EINVAL, "%s%s", arg_why[any_bad],
                                    bad == any_bad ? "" : " on another rank");
  fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
  if (mpi_opts != NULL)
    memcpy(&mo, mpi_opts, mpi_opts->size);
  if (root < 0 || root >= size)
    return fp__remote_create_failed(FP_EINVAL, "root %d is not a rank of "
                                    "the communicator (%d ranks)", root,
                                    size);
  if (size < 2)
    return fp__remote_create_failed(FP_EINVAL, "the communicator has one "
                                    "rank: no host");

  MPI_Comm fc;
  MPI_Comm_dup(comm, &fc);
  int mine = 0, ctl = -1, fs_child = 0;
  unsigned n = 0;
  pid_t fs_pid = 0;
  fp__shm *area = NULL;
  if (rank != root) {
    mine = fp__remote_forkserver_start(opts, &n, &ctl, &fs_pid, &fs_child,
                                       &area);
    if (mine == 0)
      mine = (int)n;
  } else {
    /* The root's pool would refuse them after every host had started:
     * found now, the call fails on every rank, not on the root alone.
     * Its opts->workers is not its own (the pool has the ranks' sum). */
    fp_pool_options ro = options_with(opts, 1);
    mine = fp__remote_options_check(&ro);
  }
  int *count = rank == root ? calloc((size_t)size, sizeof *count) : NULL;
  int status = rank == root && count == NULL ? FP_ENOMEM : 0;
  int dummy;
  MPI_Gather(&mine, 1, MPI_INT, count != NULL ? count : &dummy, 1, MPI_INT,
             root, fc);
  unsigned total = 0;
  int by = BY_HOSTS;
  if (count != NULL && count[root] < 0) {
    status = count[root];
    by = BY_ROOT_OPTS;
  }
  for (int r = 0; count != NULL && r < size; r++) {
    if (count[r] < 0 && status == 0)
      status = count[r];
    else if (count[r] > 0)
      total += (unsigned)count[r];
  }
  if (status == 0 && rank == root && mo.root_workers > 0) {
    /* The root's own workers, from a fork server of its own: once the
     * hosts' count says they fit, and before the bridge thread exists. */
    by = BY_ALL;
    total += mo.root_workers;
    if (total <= FPM_MAX_WORKERS) {
      fp_pool_options ro = options_with(opts, mo.root_workers);
      /* No area: as the pool's, then (root_create). */
      status = fp__remote_forkserver_start(&ro, &n, &ctl, &fs_pid,
                                           &fs_child, NULL);
      by = status != 0 ? BY_ROOT : BY_ALL;
      count[root] = status == 0 ? (int)n : 0;
    }
  }
  if (status == 0 && rank == root && total > FPM_MAX_WORKERS)
    status = FP_EINVAL;
  unsigned st[3] = {(unsigned)status, total, (unsigned)by};
  MPI_Bcast(st, 3, MPI_UNSIGNED, root, fc);
  status = (int)st[0];
  total = st[1];
  by = (int)st[2];

  int rc = status;
  if (status != 0) {
    if (ctl >= 0)
      fpm_forkserver_stop(ctl, fs_pid, fs_child);
    fp__remote_area_free(area);
    MPI_Comm_free(&fc);
    rc = start_failed(status, total, by);
  } else if (rank != root) {
    rc = fpm_host_run(fc, root, n, ctl, fs_pid, fs_child, area);
    MPI_Comm_free(&fc);
  } else {
    rc = root_create(out, opts, fc, root, count, total, ctl, fs_pid,
                     fs_child);
  }
  free(count);
  return rc;
}

/*
 * The seam for transports beyond this machine: a pool whose fork server is
 * a relay, and a fork server started for a remote pool's host.  See
 * forkpool-remote.h; the transport itself lives in its own library.
 */
#include "forkpool-remote.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

FP_EXTERN int fp__remote_create_failed(int rc, const char *fmt, ...)
{
  char why[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  return fp__create_failed(rc, why);
}

FP_EXTERN int fp__remote_pool_create(fp_pool **out,
                                     const fp_pool_options *opts, int ctl_fd,
                                     const fp__remote_group *groups,
                                     unsigned ngroups)
{
  if (ctl_fd < 0 || groups == NULL || ngroups == 0) {
    if (ctl_fd >= 0)
      close(ctl_fd);
    if (out != NULL)
      *out = NULL;
    return FP_EINVAL;
  }
  return fp__pool_create(out, opts, ctl_fd, groups, ngroups);
}

FP_EXTERN int fp__remote_forkserver_start(const fp_pool_options *opts,
                                          unsigned *nworkers, int *ctl_fd,
                                          pid_t *fs_pid, int *fs_child)
{
  fp_pool_options o;
  int rc = fp__options_fill(&o, opts);
  if (rc != 0)
    return rc;
  if (o.mode != FP_MODE_PROCESSES)
    return FP_ENOTSUP;
  o.shm_args = FP_SHM_OFF; /* as the remote pool's: the same frames */
  fp__tasks tasks;
  if ((rc = fp__tasks_build(&tasks, o.tasks)) != 0)
    return rc;
  fp__worker_cfg cfg;
  fp__worker_cfg_fill(&cfg, &o, &tasks, o.workers);
  /* The fork server keeps its own copy of cfg and tasks. */
  rc = fp__forkserver_start(&cfg, ctl_fd, fs_pid, fs_child);
  fp__tasks_free(&tasks);
  if (rc == 0)
    *nworkers = o.workers;
  return rc;
}

FP_EXTERN int fp__remote_ctl_send(int fd, const fp__ctl *m,
                                  const int fds[FP__CTL_NFDS])
{
  if (fds == NULL)
    return fp__ctl_send(fd, m);
  for (;;) {
    int rc = fp__ctl_send_fds(fd, m, fds);
    if (rc != -EAGAIN && rc != -EWOULDBLOCK)
      return rc;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, -1) < 0 && errno != EINTR)
      return -errno;
  }
}

FP_EXTERN int fp__remote_ctl_recv(int fd, enum fp__io *io, fp__ctl *m,
                                  int fds[FP__CTL_NFDS])
{
  return fp__ctl_recv(fd, io, m, fds);
}

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
#include <stdlib.h>
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
                                     unsigned ngroups, fp__shm **area)
{
  *area = NULL;
  if (ctl_fd < 0 || groups == NULL || ngroups == 0) {
    if (ctl_fd >= 0)
      close(ctl_fd);
    if (out != NULL)
      *out = NULL;
    return FP_EINVAL;
  }
  int rc = fp__pool_create(out, opts, ctl_fd, groups, ngroups);
  if (rc == 0 && (*out)->shm.base != NULL)
    *area = &(*out)->shm;
  return rc;
}

/* opts filled in and checked as a remote pool takes them (worker
 * processes only), into *o, with their tasks built into *tasks (the
 * caller frees them): 0, or the error. */
static int options_take(const fp_pool_options *opts, fp_pool_options *o,
                        fp__tasks *tasks)
{
  int rc = fp__options_fill(o, opts);
  if (rc != 0)
    return rc;
  if (o->mode != FP_MODE_PROCESSES)
    return FP_ENOTSUP;
  return fp__tasks_build(tasks, o->tasks);
}

FP_EXTERN int fp__remote_options_check(const fp_pool_options *opts)
{
  fp_pool_options o;
  fp__tasks tasks;
  int rc = options_take(opts, &o, &tasks);
  if (rc == 0)
    fp__tasks_free(&tasks);
  return rc;
}

FP_EXTERN int fp__remote_forkserver_start(const fp_pool_options *opts,
                                          unsigned *nworkers, int *ctl_fd,
                                          pid_t *fs_pid, int *fs_child,
                                          fp__shm **area)
{
  if (area != NULL)
    *area = NULL;
  fp_pool_options o;
  fp__tasks tasks;
  int rc = options_take(opts, &o, &tasks);
  if (rc != 0)
    return rc;
  /* As a local pool's, mapped before the fork server so that every
   * worker has it; this process plays the dispatcher's part in it. */
  fp__shm *m = NULL;
  if (o.shm_args != FP_SHM_OFF && area != NULL) {
    m = calloc(1, sizeof *m);
    if (m == NULL || (rc = fp__shm_init(m, o.shm_args, o.workers)) != 0) {
      free(m);
      fp__tasks_free(&tasks);
      return m == NULL ? FP_ENOMEM : rc;
    }
  }
  fp__worker_cfg cfg;
  fp__worker_cfg_fill(&cfg, &o, &tasks, o.workers);
  cfg.shm = m != NULL && m->base != NULL ? m : NULL;
  cfg.no_stamps = 1; /* in this host's area: the root cannot read them */
  /* The fork server keeps its own copy of cfg and tasks. */
  rc = fp__forkserver_start(&cfg, ctl_fd, fs_pid, fs_child);
  fp__tasks_free(&tasks);
  if (rc != 0) {
    fp__remote_area_free(m);
    return rc;
  }
  if (m != NULL && m->base == NULL) {
    fp__remote_area_free(m); /* the kernel would not: everything is framed */
    m = NULL;
  }
  if (m != NULL) {
    fp__shm_private(m);
    *area = m;
  }
  *nworkers = o.workers;
  return 0;
}

FP_EXTERN void fp__remote_area_free(fp__shm *area)
{
  if (area != NULL) {
    fp__shm_destroy(area);
    free(area);
  }
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

/* --- What a relay needs of the shared area and the frames ---------------- */

FP_EXTERN int fp__remote_shm_alloc(fp__shm *m, size_t len, size_t *off)
{
  return fp__shm_alloc(m, len, off);
}

FP_EXTERN void fp__remote_shm_free(fp__shm *m, size_t off, size_t len)
{
  fp__shm_free(m, off, len);
}

FP_EXTERN const char *fp__remote_ring_read(const fp__shm *m, unsigned slot,
                                           uint64_t tail, uint64_t pos,
                                           size_t len)
{
  return fp__shm_ring_read(m, slot, tail, pos, len);
}

FP_EXTERN void fp__remote_ring_done(fp__shm *m, unsigned slot, uint64_t tail)
{
  fp__shm_ring_done(m, slot, tail);
}

FP_EXTERN void fp__remote_ring_attach(fp__ring *r, const fp__shm *m,
                                      unsigned slot)
{
  fp__ring_attach(r, m, slot);
}

FP_EXTERN char *fp__remote_ring_place(fp__ring *r, size_t len, uint64_t *pos)
{
  if (len == 0 || fp__ring_place(r, len, pos) != 0)
    return NULL;
  char *at = fp__ring_at(r, *pos);
  fp__shm_lend(at, len);
  return at;
}

FP_EXTERN int fp__remote_frame_head(const char *body, size_t have,
                                    uint64_t *type, uint64_t *id)
{
  size_t off = 0;
  if (fp__read_uint(body, have, &off, type) != 0 ||
      fp__read_uint(body, have, &off, id) != 0)
    return FP_EPROTO;
  return 0;
}

FP_EXTERN int fp__remote_task_ref(const char *body, size_t len, uint64_t *id,
                                  const char **name, size_t *name_len,
                                  unsigned *n, uint64_t *off,
                                  uint64_t *args_len)
{
  size_t at = 0;
  uint64_t type, count;
  if (fp__read_uint(body, len, &at, &type) != 0 ||
      type != FP__MSG_TASK_SHM || fp__read_uint(body, len, &at, id) != 0 ||
      fp__read_str(body, len, &at, name, name_len) != 0 ||
      *name_len == 0 || *name_len > FP__MAX_NAME ||
      fp__read_uint(body, len, &at, &count) != 0 || count == 0 ||
      count > UINT32_MAX || fp__read_uint(body, len, &at, off) != 0 ||
      fp__read_uint(body, len, &at, args_len) != 0 || at != len)
    return FP_EPROTO;
  *n = (unsigned)count;
  return 0;
}

FP_EXTERN int fp__remote_task_frame(uint64_t id, const char *name,
                                    size_t name_len, unsigned n,
                                    const fp__shm *area, size_t off,
                                    const char *args, size_t len,
                                    char **frame, size_t *frame_len)
{
  char nm[FP__MAX_NAME + 1];
  if (name_len == 0 || name_len > FP__MAX_NAME)
    return FP_EINVAL;
  memcpy(nm, name, name_len);
  nm[name_len] = '\0';
  *frame = NULL;
  if (area == NULL)
    return fp__encode_task(id, nm, n, args, len, NULL, frame, frame_len);
  char *buf = malloc(fp__task_frame_max(name_len, FP__SHM_REF));
  if (buf == NULL)
    return FP_ENOMEM;
  int rc = fp__encode_task_shm(id, nm, n, off, len, buf, frame_len);
  if (rc != 0)
    free(buf);
  else
    *frame = buf;
  return rc;
}

FP_EXTERN int fp__remote_result_ref(const char *body, size_t len,
                                    uint64_t *id, uint64_t *pos, size_t *rlen)
{
  return fp__decode_result_shm(body, len, id, pos, rlen);
}

FP_EXTERN int fp__remote_result_frame(uint64_t id, const char *result,
                                      uint64_t pos, size_t len, char **frame,
                                      size_t *frame_len)
{
  *frame = NULL;
  if (result == NULL) {
    char *buf = malloc(FP__RESULT_SHM_MAX);
    if (buf == NULL)
      return FP_ENOMEM;
    *frame_len = fp__encode_result_shm(buf, id, pos, len);
    *frame = buf;
    return 0;
  }
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  if (fp__encode_result_head(&sb, id, 0) != 0 ||
      msgpack_sbuffer_write(&sb, result, len) != 0) {
    msgpack_sbuffer_destroy(&sb);
    return FP_ENOMEM;
  }
  fp__frame_seal(sb.data, sb.size - FP__HDR);
  *frame_len = sb.size;
  *frame = msgpack_sbuffer_release(&sb);
  return 0;
}

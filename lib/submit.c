/* Submitting tasks and cancelling them. */
#include "forkpool-private.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Why the pool takes no task now: 0, or the submit's error.  Lock held. */
static int refuses(const fp_pool *p)
{
  if (!fp__pool_owned(p))
    return FP_EINVAL;
  if (p->err != 0)
    return FP_EBROKEN;
  return p->closed ? FP_ESHUTDOWN : 0;
}

int fp__submit_refused(fp_pool *p)
{
  fp__pool_lock(p);
  int rc = refuses(p);
  fp__pool_unlock(p);
  return rc;
}

/* fp_submitf's argument: its format and values, packed straight into the
 * shared area. */
typedef struct packed_args {
  const char *fmt;
  va_list ap;
} packed_args;

/* A packer's writer into a buffer of a known size. */
typedef struct fixed_buf {
  char *at;
  size_t left;
} fixed_buf;

static int fixed_write(void *data, const char *buf, size_t len)
{
  fixed_buf *b = data;
  if (len > b->left)
    return -1;
  memcpy(b->at, buf, len);
  b->at += len;
  b->left -= len;
  return 0;
}

/* Packs pa into the len bytes at to, which it must fill (fp_vpack packs
 * exactly one value, as fp_submit takes), and checks it as fp_submit
 * does: fp_pack nests brackets 64 deep, and an 'O' as deep as it likes,
 * where a worker reads 32 (a worker sent it exits). */
static int pack_to(packed_args *pa, char *to, size_t len)
{
  fixed_buf b = {to, len};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &b, fixed_write);
  va_list ap;
  va_copy(ap, pa->ap);
  int rc = fp_vpack(&pk, pa->fmt, ap);
  va_end(ap);
  if (rc == 0 && b.left != 0)
    rc = FP_EINVAL; /* not what it measured: another thread changed it */
  size_t nobj;
  if (rc == 0 && (fp__count_objects(to, len, &nobj) != 0 || nobj != 1))
    rc = FP_EINVAL;
  return rc != 0 ? FP_EINVAL : 0;
}

/* encode's answer when a packed argument found no room in the area. */
#define NOT_PLACED 1

/*
 * Frames a task's argument: a large one into a place in the shared area,
 * taken under the lock and filled without it (the place is this task's
 * alone), with a small frame that names it; any other, or a large one when
 * the area is full, into the frame itself.  A packed argument (pa) is
 * packed into its place; with no place, NOT_PLACED.
 */
static int encode(fp_pool *p, fp_future *f, const char *name, int shared,
                  const void *args, packed_args *pa, size_t len)
{
  size_t off;
  int placed = 0, rc = 0;
  if (shared) {
    fp__pool_lock(p);
    rc = refuses(p);
    placed = rc == 0 && fp__shm_alloc(&p->shm, len, &off) == 0;
    fp__pool_unlock(p);
  }
  if (rc != 0)
    return rc;
  if (!placed && pa != NULL)
    return NOT_PLACED;
  if (placed && pa != NULL && (rc = pack_to(pa, p->shm.args + off, len))) {
    fp__pool_lock(p);
    fp__shm_free(&p->shm, off, len);
    fp__pool_unlock(p);
    return rc;
  }
  if (placed) {
    if (pa == NULL)
      memcpy(p->shm.args + off, args, len);
    f->shm_off = off;
    f->shm_len = len;
    return fp__encode_task_shm(f->id, name, f->nitems, off, len, f->frame,
                               &f->frame_len);
  }
  if (shared)
    f->frame = NULL; /* not frame_here: that is sized for a small frame */
  return fp__encode_task(f->id, name, f->nitems, args, len, &p->spare,
                         &f->frame, &f->frame_len);
}

static int submit(fp_pool *p, const char *name, const void *args,
                  packed_args *pa, size_t len, unsigned nitems,
                  int deadline_ms, int grace_ms, unsigned retries,
                  int map_chunk, fp_future **out);

int fp__submit(fp_pool *p, const char *name, const void *args, size_t len,
               unsigned nitems, int deadline_ms, unsigned retries,
               fp_future **out)
{
  return submit(p, name, args, NULL, len, nitems, deadline_ms, 0, retries, 1,
                out);
}

int fp__submit_grace(fp_pool *p, const char *name, const void *args,
                     size_t len, unsigned nitems, int deadline_ms,
                     int grace_ms, unsigned retries, fp_future **out)
{
  return submit(p, name, args, NULL, len, nitems, deadline_ms, grace_ms,
                retries, 0, out);
}

/* args, or (pa) a packed argument of len bytes, which goes to the shared
 * area or nowhere: NOT_PLACED. */
static int submit(fp_pool *p, const char *name, const void *args,
                  packed_args *pa, size_t len, unsigned nitems,
                  int deadline_ms, int grace_ms, unsigned retries,
                  int map_chunk, fp_future **out)
{
  /* A child's copy of the pool is refused before anything else is looked
   * at: forkpool(7) Fork promises FP_EINVAL there, whatever the task. */
  if (!fp__pool_owned(p))
    return FP_EINVAL;
  if (len > p->opts.max_message - FP__MAX_NAME - 32)
    return FP_EMSGSIZE;
  /* A process is killed when its time is up, a thread is asked to stop;
   * inline, nothing runs beside the task to watch the clock. */
  if (deadline_ms > 0 && p->opts.mode == FP_MODE_INLINE)
    return FP_ENOTSUP;
  size_t name_len = strlen(name);
  if (fp__tasks_find(&p->tasks, name, name_len) == NULL)
    return FP_ENOTASK;
  /* A small frame shares the future's allocation: one malloc per task.  A
   * large argument goes to the shared area (base never changes), and its
   * frame is small. */
  int shared = p->shm.base != NULL && len >= FP__SHM_MIN;
  size_t max = shared ? fp__task_frame_max(name_len, FP__SHM_REF)
                      : fp__task_frame_max(name_len, len);
  int here = shared || max <= FP__FRAME_HERE;
  fp_future *f = fp__future_new_extra(p, here ? max : 0);
  if (f == NULL)
    return FP_ENOMEM;
  f->frame = here ? f->frame_here : NULL;
  f->id = atomic_fetch_add(&p->next_id, 1);
  f->nitems = nitems;
  f->deadline_ms = deadline_ms;
  f->grace_ms = grace_ms;
  f->retries = retries;
  /* Inline, a task's time is only wanted to size a map's chunks: nothing
   * else runs beside it to watch a deadline. */
  f->timed = map_chunk || p->opts.mode != FP_MODE_INLINE;
  /* The copy is made without the lock. */
  int rc = encode(p, f, name, shared, args, pa, len);

  fp__pool_lock(p);
  if (rc == 0)
    rc = refuses(p);
  if (rc != 0) {
    if (f->shm_len != 0)
      fp__shm_free(&p->shm, f->shm_off, f->shm_len);
    fp__pool_unlock(p);
    fp__future_drop_frame(f);
    fp__future_free(f);
    return rc;
  }
  p->st.shared_args += f->shm_len != 0;
  p->st.submitted += nitems;
  /* Behind others in the queue, no worker can take it: only a dispatcher
   * pass frees room, and every pass ends by handing out work. */
  int queued = p->qhead != NULL;
  fp__list_push(&p->qhead, &p->qtail, f);
  if (!queued)
    fp__schedule(p, 0);
  /* Workers full or a pipe full: every so often a pass without waiting
   * reads their answers so they can go on.  Behind none, the schedule
   * just made counted the full pipes and the frames left to write (and
   * kept the epoll set of the slots it wrote to). */
  int behind = p->qhead != NULL || p->nblocked != 0;
  int gathering = p->sendq.len != 0;
  if (p->polling && (behind || gathering))
    fp__wake_poller(p);
  else if (behind && ++p->since_pass >= FP__IOV_BATCH &&
           p->opts.mode != FP_MODE_INLINE) /* inline: tasks run in waits */
    (void)fp__poll_once(p, 0);
  fp__signal_done(p);
  fp__pool_unlock(p);
  *out = f;
  return 0;
}

FP_EXTERN int fp_submit_ex(fp_pool *p, const char *name, const void *args,
                           size_t len, const fp_submit_options *opts,
                           fp_future **out)
{
  fp_submit_options o = FP_SUBMIT_OPTIONS_INIT;
  if (out != NULL)
    *out = NULL;
  if (p == NULL || out == NULL || !fp__task_name_ok(name) ||
      (args == NULL && len > 0))
    return FP_EINVAL;
  if (opts != NULL) {
    if (opts->size < sizeof(size_t) || opts->size > sizeof o)
      return FP_EINVAL;
    memcpy(&o, opts, opts->size);
  }
  if (o.deadline_ms < 0 || (o.grace_ms < 0 && o.grace_ms != FP_GRACE_POOL) ||
      o.grace_ms > FP_GRACE_MAX_MS)
    return FP_EINVAL;
  /* The pool's is read without the lock: options never change. */
  int grace = o.grace_ms == FP_GRACE_POOL ? p->opts.deadline_grace_ms
                                          : o.grace_ms;
  size_t nobj;
  int rc = fp__count_objects(args, len, &nobj);
  if (rc != 0)
    return rc;
  if (nobj != 1)
    return FP_EINVAL;
  return fp__submit_grace(p, name, args, len, 1, o.deadline_ms, grace,
                          o.retries, out);
}

FP_EXTERN int fp_submit(fp_pool *p, const char *name, const void *args,
                        size_t len, fp_future **out)
{
  return fp_submit_ex(p, name, args, len, NULL, out);
}

/* A packer's writer that only counts the bytes. */
static int count_write(void *data, const char *buf, size_t len)
{
  (void)buf;
  *(size_t *)data += len;
  return 0;
}

/*
 * The argument is measured first, then packed once: a large one straight
 * into its place in the shared area, any other (or when the area is full)
 * into a buffer of its size, which fp_submit copies.  Grown by doubling, a
 * large one was copied and faulted in several times over (a fifth of a
 * 1 MiB echo's time over MPI); packed into a buffer and copied, once more.
 */
FP_EXTERN int fp_submitf(fp_pool *p, const char *name, fp_future **out,
                         const char *fmt, ...)
{
  if (out != NULL)
    *out = NULL;
  size_t len = 0;
  msgpack_packer pk;
  msgpack_packer_init(&pk, &len, count_write);
  va_list ap;
  va_start(ap, fmt);
  int rc = fp_vpack(&pk, fmt, ap);
  va_end(ap);
  if (rc != 0)
    return rc;
  /* Arguments fp_submit would take this far: too large ones are refused
   * before they are copied, large ones packed straight into the area (the
   * pool's options and the area's base never change: read without the
   * lock).  Anything else goes through fp_submit, which says why not. */
  if (p != NULL && out != NULL && fp__task_name_ok(name) &&
      fp__pool_owned(p)) {
    if (len > p->opts.max_message - FP__MAX_NAME - 32)
      return FP_EMSGSIZE;
    if (p->shm.base != NULL && len >= FP__SHM_MIN) {
      packed_args pa = {.fmt = fmt};
      va_start(pa.ap, fmt);
      rc = submit(p, name, NULL, &pa, len, 1, 0, p->opts.deadline_grace_ms,
                  0, 0, out);
      va_end(pa.ap);
      if (rc != NOT_PLACED)
        return rc;
    }
  }
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  if ((sb.data = malloc(len > 0 ? len : 1)) == NULL)
    return FP_ENOMEM;
  sb.alloc = len > 0 ? len : 1;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  va_start(ap, fmt);
  rc = fp_vpack(&pk, fmt, ap);
  va_end(ap);
  if (rc == 0)
    rc = fp_submit(p, name, sb.data, sb.size, out);
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

/*
 * A pending task leaves the queue.  A running one, with FP_CANCEL_RUNNING,
 * is made final now and stays in its worker's list as a placeholder; if it
 * is the one the worker runs, the worker is killed and replaced.  Unless it
 * has answered already: its answer, in the pipe, is read first.
 */
/* Inline mode hands every task to its one slot at once, but runs them only
 * in a pass: those from the send cursor on have not run, and wait there as
 * a pending task waits in the queue. */
static int inline_unrun(const fp__slot *s, const fp_future *f)
{
  for (const fp_future *g = s->send; g != NULL; g = g->next)
    if (g == f)
      return 1;
  return 0;
}

int fp__pool_cancel(fp_pool *p, fp_future *f, unsigned flags)
{
  if (!fp__pool_owned(p))
    return FP_EINVAL; /* a copy of the pool in a forked child */
  if (fp__future_is_done(f))
    return f->state == FP_CANCELLED ? 0 : FP_EBUSY;
  if ((flags & FP_CANCEL_RUNNING) && f->state == FP_RUNNING &&
      p->opts.mode != FP_MODE_INLINE) {
    /* Its answer may wait in the pipe: read first.  The read may also end
     * it, or put it back in the queue, pending and not started (a thread
     * given up on hands back what it has not started): what follows goes
     * by where it is now, or a done future would stay queued, to be
     * handed out again. */
    fp__slot_read(p, (unsigned)f->slot);
    if (fp__future_is_done(f))
      return f->state == FP_CANCELLED ? 0 : FP_EBUSY;
  }
  if (f->state == FP_PENDING) {
    fp__list_unlink(&p->qhead, &p->qtail, f);
    fp__pool_fail(p, f, FP_ECANCELLED, "cancelled");
  } else if (p->opts.mode == FP_MODE_INLINE &&
             inline_unrun(&p->slots[f->slot], f)) {
    fp__slot *s = &p->slots[f->slot];
    if (s->send != f)
      s->unsent--; /* fp__slot_pop counts the cursor's own */
    fp__slot_pop(p, s, f, FP_ECANCELLED, "cancelled");
  } else if ((flags & FP_CANCEL_RUNNING) &&
             p->opts.mode == FP_MODE_INLINE) {
    return FP_ENOTSUP; /* the caller runs it: nothing can be asked */
  } else if (flags & FP_CANCEL_RUNNING) {
    unsigned i = (unsigned)f->slot;
    fp__slot *s = &p->slots[i];
    if (f->grace_ms > 0 && s->head == f && s->state == SLOT_LIVE) {
      /* Asked to stop, as at a deadline: the future ends, cancelled, when
       * the task returns or its worker is killed.  A stop or kill already
       * under way for f (its deadline's) now ends it cancelled too, as
       * the 0 returned promises. */
      fp__slot_stop_task(p, i, f, FP_ECANCELLED, "cancelled while running");
      if (s->target == f->id) {
        s->fail_err = FP_ECANCELLED;
        snprintf(s->fail_msg, sizeof s->fail_msg, "cancelled while running");
      }
      return 0;
    }
    /* Not started yet (or no grace): cancelled now; its worker is killed
     * when it starts, as a placeholder's. */
    fp__pool_fail_held(p, f, FP_ECANCELLED, "cancelled while running");
    if (p->slots[i].head == f)
      fp__slot_kill_task(p, i, f, 0, NULL);
    else
      f->kill_at_start = 1; /* still in the pipe: stopped when it starts */
  } else {
    return FP_EBUSY;
  }
  pthread_cond_broadcast(&p->cond);
  return 0;
}

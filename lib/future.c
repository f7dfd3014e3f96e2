/*
 * Futures: states, waiting, results and their lifetime.  A future is shared
 * by the caller and, until it is final, the pool; each holds a reference.
 * Once final (done == 1) it never changes again, so reading it needs no
 * lock and no pool.
 */
#include "forkpool-private.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

fp_future *fp__future_new(fp_pool *pool)
{
  return fp__future_new_extra(pool, 0);
}

void fp__future_drop_frame(fp_future *f)
{
  if (f->frame != f->frame_here)
    fp__buf_give(f->pool != NULL ? &f->pool->spare : NULL, f->frame);
  f->frame = NULL;
}

/* Two sizes of block: room for a frame of 32 bytes or of 48, which malloc
 * rounds up to the chunks a future with such a frame had anyway (272 and
 * 288 bytes with a 232-byte future), so a kept future costs no more memory
 * while pending.  A small task's frame (a short name, a number) is 30-40. */
static const size_t block_frame[2] = {32, 48};
#define FP__BLOCK(k) (sizeof(fp_future) + block_frame[k])

fp__fcache *fp__fcache_new(void)
{
  fp__fcache *fc = calloc(1, sizeof *fc);
  if (fc == NULL)
    return NULL;
  pthread_mutex_init(&fc->mu, NULL);
  atomic_init(&fc->refs, 1);
  atomic_init(&fc->closed, 0);
  return fc;
}

/* Drops a reference; the last frees every block kept, and the cache. */
static void fcache_unref(fp__fcache *fc)
{
  if (atomic_fetch_sub_explicit(&fc->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (int k = 0; k < 2; k++)
    for (void *b = fc->free[k]; b != NULL;) {
      void *next = *(void **)b;
      free(b);
      b = next;
    }
  pthread_mutex_destroy(&fc->mu);
  free(fc);
}

void fp__fcache_close(fp__fcache *fc)
{
  if (fc == NULL)
    return;
  atomic_store(&fc->closed, 1);
  fcache_unref(fc);
}

/* The oldest block of class k kept, taken off its list; NULL: none.
 * Lock held. */
static void *fcache_pop(fp__fcache *fc, unsigned k)
{
  void *b = fc->free[k];
  if (b != NULL) {
    if ((fc->free[k] = *(void **)b) == NULL)
      fc->last[k] = NULL;
    fc->n--;
  }
  return b;
}

/* A zeroed block of class k from fc, or a calloc'd one; NULL if out of
 * memory. */
static fp_future *fcache_take(fp__fcache *fc, unsigned k)
{
  void *b = NULL;
  if (pthread_mutex_trylock(&fc->mu) == 0) {
    b = fcache_pop(fc, k);
    pthread_mutex_unlock(&fc->mu);
  }
  if (b != NULL)
    memset(b, 0, sizeof(fp_future)); /* frame_here is written before read */
  else if ((b = calloc(1, FP__BLOCK(k))) == NULL)
    return NULL;
  atomic_fetch_add_explicit(&fc->refs, 1, memory_order_relaxed);
  fp_future *f = b;
  f->fc = (uintptr_t)fc | k;
  return f;
}

/*
 * f's block back to its cache, or to malloc.  A full cache keeps the
 * newest blocks and frees its oldest: after a burst released in order, it
 * holds the last ones malloc gave, at the heap's top, and the rest, freed
 * below them, stay malloc's to reuse instead of going back to the kernel
 * and faulting in again at the next burst.
 */
void fp__future_free(fp_future *f)
{
  fp__fcache *fc = (fp__fcache *)(f->fc & ~(uintptr_t)1);
  unsigned k = (unsigned)(f->fc & 1);
  void *gone = f;
  if (fc == NULL) {
    free(f);
    return;
  }
  if (!atomic_load_explicit(&fc->closed, memory_order_relaxed) &&
      pthread_mutex_trylock(&fc->mu) == 0) {
    gone = fc->n < FP__FUTURES_KEPT ? NULL : fcache_pop(fc, k);
    if (fc->n < FP__FUTURES_KEPT) {
      *(void **)(void *)f = NULL;
      if (fc->last[k] != NULL)
        *(void **)fc->last[k] = f;
      else
        fc->free[k] = f;
      fc->last[k] = f;
      fc->n++;
    } else {
      gone = f; /* the other class fills the cache */
    }
    pthread_mutex_unlock(&fc->mu);
  }
  free(gone);
  fcache_unref(fc);
}

fp_future *fp__future_new_extra(fp_pool *pool, size_t extra)
{
  fp_future *f;
  if (pool != NULL && pool->fcache != NULL && extra <= block_frame[1])
    f = fcache_take(pool->fcache, extra <= block_frame[0] ? 0 : 1);
  else
    f = calloc(1, sizeof *f + extra);
  if (f == NULL)
    return NULL;
  atomic_init(&f->refs, 2); /* the caller's and the pool's */
  f->nitems = 1;
  atomic_init(&f->done, 0);
  f->pool = pool;
  f->state = FP_PENDING;
  f->slot = -1;
  return f;
}

static void make_final(fp_future *f, fp_state state, int err)
{
  /* The frame stays: a cancelled task's may still be on its way out. */
  f->state = state;
  f->err = err;
  /* f->pool stays: a racing reader may still use it.  The lists' links are
   * the pool's to clear. */
  atomic_store_explicit(&f->done, 1, memory_order_release);
}

/*
 * A map chunk's answer, checked in place without building it: an array of
 * one entry per item, each [0, result] or [code, kind, message] with code an
 * FP_E* (so it fits an int).  Each result is checked on its own, so it may
 * nest as deep as a single task's.  Sets f->chunk_ok to the [0, result]
 * entries; FP_EPROTO if anything is off.
 */
static int check_chunk(fp_future *f, const char *body, size_t off, size_t len)
{
  uint32_t n, size;
  unsigned ok = 0;
  if (fp__read_array(body, len, &off, &n) != 0 || n != f->nitems)
    return FP_EPROTO;
  for (uint32_t i = 0; i < n; i++) {
    const char *s;
    size_t slen;
    int code, rc;
    if (fp__read_array(body, len, &off, &size) != 0 ||
        fp__read_code(body, len, &off, &code) != 0)
      return FP_EPROTO;
    if (size == 2 && code == 0) {
      rc = fp__skip_object(body, len, &off); /* the result: any one object */
      ok++;
    } else if (size == 3 && fp__is_worker_code(code)) {
      rc = fp__read_str(body, len, &off, &s, &slen); /* kind */
      if (rc == 0)
        rc = fp__read_str(body, len, &off, &s, &slen); /* message */
    } else {
      rc = FP_EPROTO;
    }
    if (rc != 0)
      return FP_EPROTO;
  }
  if (off != len)
    return FP_EPROTO;
  f->chunk_ok = ok;
  return 0;
}

/* Whether a msgpack object starting with byte c is an array or a map. */
static int is_container(unsigned char c)
{
  return (c >= 0x80 && c <= 0x9f) || (c >= 0xdc && c <= 0xdf);
}

/*
 * A single task's result.  The usual kinds (nil, bool, integer, float, str,
 * bin) are read by hand.  For the others msgpack_unpack builds the object,
 * and needs a zone only for arrays and maps: msgpack-c builds an ext in the
 * object itself (pointing into body), so it gets an empty zone on the stack
 * that is never allocated from and never destroyed.  Only a result with
 * containers leaves f->zone set.
 */
static int unpack_result(fp_future *f, const char *body, size_t off,
                         size_t len)
{
  size_t end = off;
  if (fp__read_plain(body, len, &end, &f->result) == 0)
    return end == len ? 0 : FP_EPROTO;
  msgpack_zone unused, *z = &unused;
  memset(&unused, 0, sizeof unused);
  if (off < len && is_container((unsigned char)body[off])) {
    f->zone = msgpack_zone_new(len - off < 4096 ? 256 : 4096);
    if (f->zone == NULL)
      return FP_ENOMEM;
    z = f->zone;
  }
  msgpack_unpack_return rc = msgpack_unpack(body, len, &off, z, &f->result);
  if (rc == MSGPACK_UNPACK_SUCCESS)
    return 0;
  return rc == MSGPACK_UNPACK_NOMEM_ERROR ? FP_ENOMEM : FP_EPROTO;
}

void fp__future_finish(fp_future *f, char *body, size_t off, size_t len)
{
  int rc;
  if (f->nitems > 1) {
    /* fp_map_next reads the entries from result_buf at result_off. */
    f->result.type = MSGPACK_OBJECT_NIL;
    f->result_off = off;
    f->result_len = len;
    rc = check_chunk(f, body, off, len);
  } else {
    rc = unpack_result(f, body, off, len);
  }
  if (rc == 0) {
    f->result_buf = body; /* the result points into it */
    make_final(f, FP_FINISHED, 0);
    return;
  }
  free(body);
  if (rc == FP_ENOMEM)
    fp__future_fail(f, FP_ENOMEM, "out of memory reading the result");
  else
    fp__future_fail(f, FP_EPROTO, "the worker sent a malformed result");
}

/* Whether a msgpack object starting with byte c is a number, nil or a bool:
 * built in the object itself, never pointing into the body. */
static int is_self_contained(unsigned char c)
{
  return c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3 ||
         (c >= 0xca && c <= 0xd3);
}

void fp__future_finish_lent(fp_future *f, const char *body, size_t off,
                            size_t len)
{
  if (f->nitems == 1 && off < len && is_self_contained((unsigned char)body[off])) {
    int rc = unpack_result(f, body, off, len);
    if (rc == 0)
      make_final(f, FP_FINISHED, 0);
    else
      fp__future_fail(f, FP_EPROTO, "the worker sent a malformed result");
    return;
  }
  char *copy = malloc(len + 1);
  if (copy == NULL) {
    fp__future_fail(f, FP_ENOMEM, "out of memory reading the result");
    return;
  }
  memcpy(copy, body, len);
  fp__future_finish(f, copy, off, len);
}

void fp__future_fail(fp_future *f, int err, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  free(f->error);
  f->kind_len = 0;
  if (vasprintf(&f->error, fmt, ap) < 0)
    f->error = NULL; /* fp_future_error falls back to fp_strerror */
  va_end(ap);
  make_final(f, err == FP_ECANCELLED ? FP_CANCELLED : FP_FAILED, err);
}

void fp__future_fail_parts(fp_future *f, int err, const char *kind,
                           size_t kind_len, const char *msg, size_t msg_len)
{
  /* Lengths the text really has: a str may hold a NUL. */
  int klen = (int)strnlen(kind, kind_len), mlen = (int)strnlen(msg, msg_len);
  free(f->error);
  f->kind_len = 0;
  if (asprintf(&f->error, "%.*s: %.*s%c%.*s", klen, kind, mlen, msg, '\0',
               klen, kind) < 0)
    f->error = NULL; /* fp_future_error falls back to fp_strerror */
  else
    f->kind_len = (size_t)klen + 1;
  make_final(f, err == FP_ECANCELLED ? FP_CANCELLED : FP_FAILED, err);
}

void fp__future_died(fp_future *f, pid_t pid, int status)
{
  if (fp__future_is_done(f))
    return; /* final: immutable, and not failed by this exit */
  f->died_pid = pid;
  f->died_status = status;
}

int fp__future_is_done(const fp_future *f)
{
  return atomic_load_explicit(&f->done, memory_order_acquire);
}

void fp__callbacks_run(fp_future *f, fp__callback *cb)
{
  while (cb != NULL) {
    fp__callback *next = cb->next;
    cb->fn(f, cb->arg);
    free(cb);
    cb = next;
  }
}

FP_EXTERN int fp_future_on_done(fp_future *f, fp_done_fn fn, void *arg)
{
  if (f == NULL || fn == NULL)
    return FP_EINVAL;
  /* Inside a callback of f's pool, a round is running: cb joins it rather
   * than nesting (see run_callbacks).  Only then is a done f's pool used. */
  if (fp__future_is_done(f) && !fp__in_callbacks(f->pool)) {
    fn(f, arg);
    return 0;
  }
  fp__callback *cb = malloc(sizeof *cb);
  if (cb == NULL)
    return FP_ENOMEM;
  *cb = (fp__callback){fn, arg, NULL};
  fp_pool *p = f->pool;
  if (!fp__pool_owned(p)) {
    free(cb);
    return FP_EINVAL;
  }
  fp__pool_lock(p);
  int now = fp__future_is_done(f) && !f->cb_queued;
  if (now && fp__in_callbacks(p)) {
    fp__callbacks_queue(p, f);
    now = 0;
  }
  if (!now) {
    /* If f is final, its queued run has not finished and will see this. */
    fp__callback **tail = &f->callbacks;
    while (*tail)
      tail = &(*tail)->next;
    *tail = cb;
  }
  fp__pool_unlock(p);
  if (now) {
    fn(f, arg);
    free(cb);
  }
  return 0;
}

FP_EXTERN fp_state fp_future_state(fp_future *f)
{
  if (f == NULL)
    return FP_FAILED;
  if (fp__future_is_done(f))
    return f->state;
  fp_pool *p = f->pool;
  fp__pool_lock(p);
  (void)fp__pool_wait_future(p, f, 0); /* one pass, no wait */
  fp_state s = f->state;
  fp__pool_unlock(p);
  return s;
}

static int future_done(fp_pool *p, void *f)
{
  (void)p;
  return fp__future_is_done(f);
}

FP_EXTERN int fp_future_wait(fp_future *f, int timeout_ms)
{
  int64_t deadline;
  if (f == NULL || timeout_ms < -1)
    return FP_EINVAL;
  if (fp__future_is_done(f))
    return 0; /* the common case, without reading the clock */
  (void)fp__deadline(timeout_ms, &deadline); /* timeout_ms is valid */
  fp_pool *p = f->pool;
  fp__pool_lock(p);
  int rc = fp__pool_wait(p, future_done, f, deadline);
  fp__pool_unlock(p);
  return rc;
}

FP_EXTERN int fp_future_result(fp_future *f, int timeout_ms,
                               const msgpack_object **out)
{
  if (out != NULL)
    *out = NULL;
  if (out == NULL)
    return FP_EINVAL;
  int rc = fp_future_wait(f, timeout_ms);
  if (rc != 0)
    return rc;
  if (f->state != FP_FINISHED)
    return f->err;
  *out = &f->result;
  return 0;
}

FP_EXTERN const char *fp_future_error(fp_future *f)
{
  if (f == NULL || !fp__future_is_done(f) || f->state == FP_FINISHED)
    return NULL;
  return f->error ? f->error : fp_strerror(f->err);
}

FP_EXTERN int fp_future_error_info(fp_future *f, fp_error_info *info)
{
  if (f == NULL || info == NULL || info->size < offsetof(fp_error_info, pid) ||
      info->size > sizeof *info)
    return FP_EINVAL;
  fp_error_info e = FP_ERROR_INFO_INIT;
  int failed = fp__future_is_done(f) && f->state != FP_FINISHED;
  if (failed) {
    e.err = f->err;
    e.kind = fp_err_name(f->err);
    e.message = fp_future_error(f);
    if (f->error != NULL && f->kind_len != 0) {
      e.kind = f->error + strlen(f->error) + 1;
      e.message = f->error + f->kind_len + 1; /* after "kind: " */
    }
    e.pid = f->died_pid;
    if (e.pid != 0 && WIFEXITED(f->died_status))
      e.exit_status = WEXITSTATUS(f->died_status);
    if (e.pid != 0 && WIFSIGNALED(f->died_status))
      e.signal = WTERMSIG(f->died_status);
  }
  e.size = info->size;
  memcpy(info, &e, info->size);
  return failed;
}

FP_EXTERN int fp_future_cancel(fp_future *f, unsigned flags)
{
  if (f == NULL || (flags & ~(unsigned)FP_CANCEL_RUNNING))
    return FP_EINVAL;
  if (fp__future_is_done(f))
    return f->state == FP_CANCELLED ? 0 : FP_EBUSY;
  fp_pool *p = f->pool;
  fp__pool_lock(p);
  int rc = fp__pool_cancel(p, f, flags);
  fp__pool_unlock(p);
  return rc;
}

FP_EXTERN fp_future *fp_future_retain(fp_future *f)
{
  if (f != NULL)
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
  return f;
}

FP_EXTERN void fp_future_release(fp_future *f)
{
  if (f == NULL ||
      atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
    return;
  fp__future_drop_frame(f);
  free(f->error);
  free(f->result_buf);
  while (f->callbacks != NULL) { /* never ran: the future never became final */
    fp__callback *next = f->callbacks->next;
    free(f->callbacks);
    f->callbacks = next;
  }
  if (f->zone != NULL)
    msgpack_zone_free(f->zone);
  fp__future_free(f);
}

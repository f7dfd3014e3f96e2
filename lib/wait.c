/*
 * Waiting on many futures: fp_wait and the as-completed iterator.  A final
 * future never changes, so both read futures without a lock and take the
 * pool's lock only to run the dispatcher while some are not done.  Futures
 * that are all done never touch their pool, which may be gone by then.
 */
#include "forkpool-private.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * Checks the n futures fs and finds the pool of those not done: *pool is
 * that pool, or NULL when every one is done.  FP_EINVAL for a NULL array
 * (n > 0) or entry, or for not-done futures of two pools.
 */
static int pool_of_pending(fp_future *const *fs, size_t n, fp_pool **pool)
{
  *pool = NULL;
  if (fs == NULL && n > 0)
    return FP_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (fs[i] == NULL)
      return FP_EINVAL;
    if (fp__future_is_done(fs[i]))
      continue;
    if (*pool != NULL && fs[i]->pool != *pool)
      return FP_EINVAL;
    *pool = fs[i]->pool;
  }
  return 0;
}

static size_t count_done(fp_future *const *fs, size_t n)
{
  size_t done = 0;
  for (size_t i = 0; i < n; i++)
    done += fp__future_is_done(fs[i]) != 0;
  return done;
}

/* --- fp_wait ------------------------------------------------------------- */

typedef struct wait_set {
  fp_future *const *fs;  /* borrowed from the caller of fp_wait */
  size_t n;
  fp_wait_mode mode;
} wait_set;

static int mode_valid(fp_wait_mode mode)
{
  return mode == FP_FIRST_COMPLETED || mode == FP_FIRST_EXCEPTION ||
         mode == FP_ALL_COMPLETED;
}

/*
 * The run_until predicate: 1 once w->mode is met.  As in Python, only a
 * failure counts as an exception for FIRST_EXCEPTION, not a cancellation.
 */
static int wait_met(fp_pool *pool, void *arg)
{
  const wait_set *w = arg;
  size_t done = 0;
  (void)pool;
  for (size_t i = 0; i < w->n; i++) {
    fp_future *f = w->fs[i];
    if (!fp__future_is_done(f))
      continue;
    if (w->mode == FP_FIRST_COMPLETED)
      return 1;
    if (w->mode == FP_FIRST_EXCEPTION && f->state == FP_FAILED)
      return 1;
    done++;
  }
  return done == w->n;
}

/*
 * Waits up to timeout_ms until mode is met for fs: 0 when it is,
 * FP_ETIMEDOUT when it is not, or the dispatcher's error.  Either way
 * *n_done (if not NULL) is how many are done.  FP_EINVAL, with *n_done 0,
 * for bad arguments or not-done futures of different pools.
 */
FP_EXTERN int fp_wait(fp_future *const *fs, size_t n, fp_wait_mode mode,
                      int timeout_ms, size_t *n_done)
{
  fp_pool *pool;
  int64_t deadline;
  if (n_done != NULL)
    *n_done = 0;
  if (!mode_valid(mode) || fp__deadline(timeout_ms, &deadline) != 0)
    return FP_EINVAL;
  int rc = pool_of_pending(fs, n, &pool);
  if (rc != 0)
    return rc;
  if (pool != NULL) {
    wait_set w = {fs, n, mode};
    fp__pool_lock(pool);
    rc = fp__pool_wait(pool, wait_met, &w, deadline);
    fp__pool_unlock(pool);
  }
  if (n_done != NULL)
    *n_done = count_done(fs, n);
  return rc;
}

/* --- fp_as_completed ----------------------------------------------------- */

/*
 * Every future is in exactly one of ready[0, tail) and pending[0,
 * npending), and holds one reference of the iterator's.  One thread at a
 * time may use an iterator.
 */
struct fp_as_completed {
  fp_future **ready;     /* [0, head) yielded, [head, tail) done, to yield */
  fp_future **pending;   /* not seen done yet, in array order */
  size_t head, tail;
  size_t npending;
  fp_pool *pool;         /* of the pending futures; used only while any is */
  int64_t deadline;      /* absolute, counted from create; -1: none */
  fp_future *slots[];    /* n for ready, then n for pending */
};

/*
 * Moves the pending futures that are now done to the end of the ready
 * queue, in array order.  1 if some future is ready to be yielded.
 */
static int collect(fp_as_completed *it)
{
  size_t keep = 0;
  for (size_t i = 0; i < it->npending; i++) {
    fp_future *f = it->pending[i];
    if (fp__future_is_done(f))
      it->ready[it->tail++] = f;
    else
      it->pending[keep++] = f;
  }
  it->npending = keep;
  return it->tail > it->head;
}

/* The run_until predicate: 1 once a future is ready to be yielded. */
static int any_ready(fp_pool *pool, void *arg)
{
  (void)pool;
  return collect(arg);
}

/*
 * Drops the repeats of a future from fs[0, *n), keeping the first of each,
 * in order: a future is yielded once however often it is listed, as CPython
 * decided in bpo-20367.  A set of pointers with open addressing, so that a
 * large array costs O(n).  0, or FP_ENOMEM.
 */
static int drop_repeats(fp_future **fs, size_t *n)
{
  if (*n < 2)
    return 0;
  unsigned bits = 1;
  while (((size_t)1 << bits) < 2 * *n)
    bits++;
  size_t mask = ((size_t)1 << bits) - 1, keep = 0;
  fp_future **seen = calloc(mask + 1, sizeof(fp_future *));
  if (seen == NULL)
    return FP_ENOMEM;
  for (size_t i = 0; i < *n; i++) {
    /* Fibonacci hashing: the top bits of the product mix every bit. */
    size_t h = (size_t)(((uint64_t)(uintptr_t)fs[i] *
                         UINT64_C(0x9E3779B97F4A7C15)) >> (64 - bits));
    while (seen[h] != NULL && seen[h] != fs[i])
      h = (h + 1) & mask;
    if (seen[h] == NULL) {
      seen[h] = fs[i];
      fs[keep++] = fs[i];
    }
  }
  free(seen);
  *n = keep;
  return 0;
}

/*
 * Copies fs, each future once, and retains each; the deadline counts from
 * now.  The futures already done are queued first, in array order.
 * FP_EINVAL for bad arguments or not-done futures of different pools,
 * FP_ENOMEM; on failure *out is NULL and nothing is retained.
 */
FP_EXTERN int fp_as_completed_create(fp_as_completed **out,
                                     fp_future *const *fs, size_t n,
                                     int timeout_ms)
{
  fp_pool *pool;
  int64_t deadline;
  if (out == NULL)
    return FP_EINVAL;
  *out = NULL;
  if (fp__deadline(timeout_ms, &deadline) != 0)
    return FP_EINVAL;
  int rc = pool_of_pending(fs, n, &pool);
  if (rc != 0)
    return rc;
  if (n > (SIZE_MAX - sizeof(fp_as_completed)) / (2 * sizeof(fp_future *)))
    return FP_ENOMEM;
  fp_as_completed *it = malloc(sizeof *it + 2 * n * sizeof(fp_future *));
  if (it == NULL)
    return FP_ENOMEM;
  it->ready = it->slots;
  it->pending = it->slots + n;
  it->head = it->tail = 0;
  it->pool = pool;
  it->deadline = deadline;
  if (n > 0)
    memcpy(it->pending, fs, n * sizeof(fp_future *));
  if (drop_repeats(it->pending, &n) != 0) {
    free(it);
    return FP_ENOMEM;
  }
  it->npending = n;
  for (size_t i = 0; i < n; i++)
    fp_future_retain(it->pending[i]);
  (void)collect(it);
  *out = it;
  return 0;
}

/*
 * 1 with *f the next done future not yet yielded (borrowed), running the
 * dispatcher until one is; 0 once all were yielded; FP_ETIMEDOUT once the
 * deadline has passed with none ready, or the dispatcher's error.  A future
 * done by then is still yielded after a timeout.  O(n) at worst.
 */
FP_EXTERN int fp_as_completed_next(fp_as_completed *it, fp_future **f)
{
  if (f != NULL)
    *f = NULL;
  if (it == NULL || f == NULL)
    return FP_EINVAL;
  if (it->head == it->tail && !collect(it) && it->npending > 0) {
    fp__pool_lock(it->pool);
    int rc = fp__pool_wait(it->pool, any_ready, it, it->deadline);
    fp__pool_unlock(it->pool);
    if (rc != 0)
      return rc;
  }
  if (it->head == it->tail)
    return 0;
  *f = it->ready[it->head++];
  return 1;
}

/* Releases every future the iterator retained and frees it.  NULL: no-op. */
FP_EXTERN void fp_as_completed_destroy(fp_as_completed *it)
{
  if (it == NULL)
    return;
  for (size_t i = 0; i < it->tail; i++)
    fp_future_release(it->ready[i]);
  for (size_t i = 0; i < it->npending; i++)
    fp_future_release(it->pending[i]);
  free(it);
}

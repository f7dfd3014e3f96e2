/*
 * Waking every wait on a pool from a signal handler: fp_pool_interrupt sets
 * a flag and writes a byte to the pool's wake pipe, the only two things a
 * handler may do here.  The thread in poll() wakes on the byte, its pass
 * ends with a broadcast, and every waiter re-reads its predicate, which
 * for the caller's waits (fp__pool_wait) includes the flag.  The flag is
 * sticky: a signal just before a wait would otherwise be lost.
 */
#include "forkpool-private.h"

typedef struct intr_wait {
  fp__pool_pred pred;
  void *arg;
} intr_wait;

static int met_or_interrupted(fp_pool *p, void *arg)
{
  const intr_wait *w = arg;
  return w->pred(p, w->arg) || atomic_load(&p->interrupted);
}

int fp__pool_wait(fp_pool *p, fp__pool_pred pred, void *arg, int64_t deadline)
{
  intr_wait w = {pred, arg};
  int rc = fp__pool_run_until(p, met_or_interrupted, &w, deadline);
  return rc == 0 && !pred(p, arg) ? FP_EINTR : rc;
}

/* Async-signal-safe: no lock, no allocation; fp__pool_owned reads a page
 * or calls getpid(). */
FP_EXTERN int fp_pool_interrupt(fp_pool *p)
{
  if (p == NULL || !fp__pool_owned(p))
    return FP_EINVAL;
  int saved = errno; /* a handler must leave errno as it found it */
  atomic_store(&p->interrupted, 1);
  /* Non-blocking: a full pipe already wakes the poller. */
  (void)!write(p->wake[1], "", 1);
  errno = saved;
  return 0;
}

FP_EXTERN int fp_pool_interrupt_clear(fp_pool *p)
{
  if (p == NULL || !fp__pool_owned(p))
    return FP_EINVAL;
  atomic_store(&p->interrupted, 0);
  return 0;
}

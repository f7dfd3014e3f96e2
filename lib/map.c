/*
 * map: one task over many argument objects.  Items are packed into chunks,
 * each chunk one message and one future.  A bounded amount of work is in
 * flight, so a lazy input of any length runs in bounded memory.  A chunk
 * whose worker died is split into single items and sent again, so only the
 * item that crashed fails.  A deadline is per item: the worker stamps each
 * item's start in shared memory, the dispatcher kills it when the item
 * runs late and names the item, which fails alone while the chunk's other
 * items are sent again.  Without shared memory a map with a deadline sends
 * one item per message.  A pool that stops taking work (broken, shut down,
 * terminated) stops the map: no more items are taken from the input.
 *
 * Each item is parsed once on the way out and once on the way back: an
 * array input is cut into chunks as byte ranges with the zone-free scanner,
 * and a chunk's answer is read entry by entry as the caller takes items,
 * only the result itself being unpacked.
 *
 * Automatic chunk size: start at one item, and size each next chunk so that
 * it runs for about FP__CHUNK_TARGET_NS on a worker (a remote pool's,
 * longer), from the measured time per item, but never more than twice the
 * chunk cut before it, nor larger than an even share of what is left when
 * the total is known, so the tail still balances.
 */
#include "forkpool-private.h"

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FP__CHUNK_TARGET_NS (2 * 1000 * 1000)
/* A remote pool's chunk crosses two more hops each way, and each wakes a
 * relay that takes a CPU from the workers beside it: longer chunks. */
#define FP__CHUNK_TARGET_REMOTE_NS (4 * FP__CHUNK_TARGET_NS)
#define FP__CHUNK_MAX 65536
#define FP__INFLIGHT_BYTES ((size_t)4 << 20) /* automatic buffersize */
#define FP__MIN_ITEMS 16                       /* in flight, per worker */
#define FP__LEARN_ITEMS ((double)(1 << 20)) /* measured items kept, about */

typedef struct chunk {
  fp_future *f;          /* owned reference; NULL: not sent yet */
  size_t first;          /* index of its first item */
  unsigned n;            /* items */
  const char *args;      /* the items' msgpack, kept to split: in own, or
                            in the caller's array */
  size_t args_len;
  char *own;             /* lazy input: the buffer args is in; owned */
  struct chunk *next, *prev; /* in flight: linked both ways, so that a
                            chunk leaves or is split without a walk */
} chunk;

struct fp_map_iter {
  fp_pool *pool;
  char name[FP__MAX_NAME + 1];
  int ordered;           /* yield in input order */
  fp_map_options o;
  fp_map_input in;
  size_t arr_left;       /* array input: items not yet taken */
  size_t arr_off;        /* array input: offset of the next item */
  size_t total;          /* items in the input, once known; else 0 */
  int input_done;        /* the input has no more items */
  int input_err;         /* the input's error, returned once */
  size_t taken;          /* items taken from the input */
  size_t done;           /* items yielded or finished, for progress */
  chunk *head, *tail;    /* in flight, in input order */
  size_t inflight;       /* items in flight */
  size_t nchunks;        /* chunks in flight */
  size_t inflight_bytes; /* their arguments */
  size_t unsent;         /* of those chunks, not sent yet (f NULL):
                            counted so that no call walks the list */
  uint64_t quiet_ndone;  /* the pool's ndone when a wait's scan last found
                            no chunk ready, + 1; 0: none in this wait */
  chunk *cur;            /* the finished chunk being yielded */
  unsigned cur_pos;      /* its next item */
  size_t ans_off;        /* its answer: the next entry in result_buf */
  size_t ans_end;        /* its answer's end; 0: none to read */
  size_t chunksize;      /* the next chunk's size (automatic: adapts) */
  double sum_ns;         /* automatic mode: time measured, and */
  double sum_items;      /*   over how many items (see learn) */
  double cpu_share;      /* automatic mode: of a CPU, what a busy worker
                            gets, at most 1 (see learn) */
  size_t prev_n;         /* automatic mode: the last chunk cut; 0: none */
  int timed;             /* automatic mode: the time per item is known,
                            from the pool or from a chunk (learn) */
  int stop;              /* the pool refused work (FP_EBROKEN,
                            FP_ESHUTDOWN): no item is taken any more, and
                            this is returned once none is left to give */
  msgpack_sbuffer sb;    /* lazy input: the chunk being packed */
  msgpack_zone zone;     /* its containers; cleared before each result */
  msgpack_object result; /* the result being yielded */
  char errbuf[600];      /* an item's "kind: message" */
  int64_t end;           /* the map's timeout_ms ends then (ms); -1: none */
  int expired;           /* it did: FP_ETIMEDOUT for good */
  size_t arg_off;        /* item_args: the next item's in cur's args */
  msgpack_zone arg_zone; /* item_args: the item's containers */
  msgpack_object arg;    /* item_args: the item being yielded */
};

/* --- Input ------------------------------------------------------------------------ */

/* Reads the input array's header: 0 with *n and *off past it, or
 * FP_EINVAL: it is the caller's input, not a worker's answer. */
static int array_header(const unsigned char *b, size_t len, size_t *n,
                        size_t *off)
{
  uint32_t count;
  *off = 0;
  if (fp__read_array((const char *)b, len, off, &count) != 0)
    return FP_EINVAL;
  *n = count;
  return 0;
}

/* Bytes of the items taken into the chunk being cut, which starts at
 * start in an array input. */
static size_t cut_len(const fp_map_iter *m, size_t start)
{
  return m->in.next == NULL ? m->arr_off - start : m->sb.size;
}

/* Takes the next item into the chunk being cut: 0 with *took set (0 at
 * the end), or a negative code.  An array item stays where it is; a lazy
 * one is packed into m->sb. */
static int take_item(fp_map_iter *m, int *took)
{
  *took = 0;
  if (m->input_done)
    return 0;
  if (m->in.next == NULL) {
    /* The array is checked here, as it is cut, rather than all at once
     * before the first chunk: each item is scanned once. */
    if (m->arr_left == 0) {
      m->input_done = 1;
      return m->arr_off == m->in.len ? 0 : FP_EINVAL; /* bytes after it */
    }
    if (fp__skip_object(m->in.array, m->in.len, &m->arr_off) != 0)
      return FP_EINVAL; /* not msgpack, or cut short */
    m->arr_left--;
    *took = 1;
    return 0;
  }
  size_t before = m->sb.size, end = before;
  msgpack_packer pk;
  msgpack_packer_init(&pk, &m->sb, msgpack_sbuffer_write);
  int rc = m->in.next(m->in.arg, &pk);
  if (rc == 0)
    m->input_done = 1;
  if (rc == 1 && (fp__skip_object(m->sb.data, m->sb.size, &end) != 0 ||
                  end != m->sb.size))
    rc = FP_EINVAL; /* the callback must pack exactly one object */
  if (rc != 1)
    m->sb.size = before;
  *took = rc == 1;
  return rc < 0 ? rc : 0;
}

/*
 * Items the next chunk may take; 0 when enough is in flight.  The caller's
 * buffersize counts items.  The automatic one keeps two chunks per worker,
 * so that each has the next one queued behind the one it runs, or more
 * while they hold fewer than FP__MIN_ITEMS items per worker: tiny chunks
 * end before the caller comes back for more.  Either way no more than
 * about FP__INFLIGHT_BYTES of arguments, but at least a chunk per worker,
 * once the time per item is known; before, two per CPU at most.
 */
static size_t chunk_goal(const fp_map_iter *m)
{
  size_t goal = m->chunksize, workers = m->pool->nslots;
  /* Without the shared area no stamp says which item a worker runs: only
   * an item per message keeps the deadline per item.  A remote worker
   * stamps its host's area, which this process cannot read. */
  if (m->o.deadline_ms > 0 &&
      (m->pool->shm.base == NULL || m->pool->remote))
    goal = 1;
  if (m->o.chunksize == 0) {
    /* What is left is cut in at least 4 chunks per worker that can run
     * at once: with more workers than CPUs, per CPU. */
    size_t cpus = workers < m->pool->ncpus ? workers : m->pool->ncpus;
    size_t twice = m->prev_n != 0 ? 2 * m->prev_n : 1;
    size_t share = m->total != 0
                       ? (m->total - m->taken) / (4 * cpus) + 1 : goal;
    goal = goal < twice ? goal : twice;
    goal = goal < share ? goal : share;
  }
  if (m->o.buffersize != 0) {
    size_t room = m->o.buffersize > m->inflight
                      ? m->o.buffersize - m->inflight : 0;
    return goal < room ? goal : room;
  }
  if (m->nchunks >= workers && m->inflight_bytes >= FP__INFLIGHT_BYTES)
    return 0;
  /* Until the time per item is known (a fresh pool), chunks hold one
   * item, and no more than two go out per worker that can run at once:
   * with more workers than CPUs, two per worker would be hundreds of
   * messages before the first answer says how large a chunk should be.
   * The first answer lifts this, so slow items still reach every worker,
   * one item's time later. */
  size_t par = workers < m->pool->ncpus ? workers : m->pool->ncpus;
  if (m->o.chunksize == 0 && !m->timed && m->nchunks >= 2 * par)
    return 0;
  /* Then no more than two chunks per worker while they hold FP__MIN_ITEMS
   * items per worker. */
  if (m->nchunks >= 2 * workers && m->inflight >= FP__MIN_ITEMS * workers)
    return 0;
  return goal;
}

/*
 * Bytes of arguments after which a chunk takes no more items: a quarter of
 * max_message leaves its answer room.  The automatic buffersize also gives
 * each chunk an even share of FP__INFLIGHT_BYTES, two per worker that can
 * run at once: per CPU when the workers outnumber the CPUs, since a share
 * per worker would cut a map of quick items into as many more chunks, each
 * a message that wakes a worker.  Such a chunk takes no more than what is
 * left of FP__INFLIGHT_BYTES, or a share per worker when less is left, so
 * that the arguments in flight stay under about 1.5 FP__INFLIGHT_BYTES
 * (chunk_goal stops at FP__INFLIGHT_BYTES once every worker has a chunk).
 */
static size_t chunk_bytes(const fp_map_iter *m)
{
  size_t bytes = m->pool->opts.max_message / 4;
  size_t workers = m->pool->nslots, cpus = m->pool->ncpus;
  size_t par = cpus != 0 && cpus < workers ? cpus : workers;
  size_t share = FP__INFLIGHT_BYTES / (2 * par);
  size_t floor = FP__INFLIGHT_BYTES / (2 * workers);
  size_t left = FP__INFLIGHT_BYTES > m->inflight_bytes
                    ? FP__INFLIGHT_BYTES - m->inflight_bytes : 0;
  share = share < left ? share : left;
  share = share > floor ? share : floor;
  return m->o.buffersize == 0 && share < bytes ? share : bytes;
}

/* A future that failed before it was sent, so its items still report. */
static fp_future *failed_future(fp_map_iter *m, int err, const char *why)
{
  fp_future *f = fp__future_new(m->pool);
  if (f == NULL)
    return NULL;
  atomic_store(&f->refs, 1); /* the pool never saw it */
  fp__future_fail(f, err, "%s", why);
  return f;
}

/*
 * Submits c.  A chunk the pool refuses fails: an item too large alone, a
 * chunk too large to be split later; a pool that takes no more work stops
 * the map, and the items it had taken fail FP_ECANCELLED (shut down or
 * terminated) or FP_EBROKEN.  0 with *failed set if it failed so, or
 * FP_ENOMEM with c left unsent.
 */
static int submit(fp_map_iter *m, chunk *c, int *failed)
{
  int rc = fp__submit(m->pool, m->name, c->args, c->args_len, c->n,
                      m->o.deadline_ms, 0, &c->f);
  char why[128];
  *failed = 0;
  if (rc == 0 || rc == FP_ENOMEM)
    return rc;
  if (rc == FP_EBROKEN || rc == FP_ESHUTDOWN || rc == FP_EINVAL)
    m->stop = rc;
  if (rc == FP_ESHUTDOWN)
    rc = FP_ECANCELLED;
  snprintf(why, sizeof why, rc == FP_ECANCELLED
           ? "cancelled: the pool was shut down before it was sent"
           : "could not submit: %s", fp_strerror(rc));
  c->f = failed_future(m, rc, why);
  *failed = c->f != NULL;
  return c->f == NULL ? FP_ENOMEM : 0;
}

/* Appends c to the chunks in flight. */
static void link_chunk(fp_map_iter *m, chunk *c)
{
  c->prev = m->tail;
  if (m->tail)
    m->tail->next = c;
  else
    m->head = c;
  m->tail = c;
  m->inflight += c->n;
  m->nchunks++;
  m->unsent += c->f == NULL;
  m->inflight_bytes += c->args_len;
}

/* Packs and submits one chunk: 0 with *more set if one went out and the
 * next may follow at once, or a negative code. */
static int send_chunk(fp_map_iter *m, int *more)
{
  size_t goal = chunk_goal(m);
  *more = 0;
  if (goal == 0 || m->input_done || m->stop != 0)
    return 0;
  /* Asked before any item is taken: an input may be endless. */
  if ((m->stop = fp__submit_refused(m->pool)) != 0)
    return 0;
  size_t bytes = chunk_bytes(m), start = m->arr_off;
  chunk *c = calloc(1, sizeof *c); /* before any item is taken */
  if (c == NULL)
    return FP_ENOMEM;
  msgpack_sbuffer_clear(&m->sb);
  unsigned n = 0;
  int rc = 0, took;
  /* Items are taken whole: the last one may go past bytes. */
  while (n < goal && (n == 0 || cut_len(m, start) < bytes) &&
         (rc = take_item(m, &took)) == 0 && took)
    n++;
  if (rc < 0) {
    m->input_err = rc; /* returned once by fp_map_next, after this chunk */
    m->input_done = 1;
  }
  if (m->input_done && m->in.next != NULL)
    m->total = m->taken + n;
  if (n == 0) {
    free(c);
    return rc < 0 ? rc : 0;
  }
  c->first = m->taken;
  c->n = n;
  c->args_len = cut_len(m, start);
  if (m->in.next == NULL) {
    c->args = (const char *)m->in.array + start; /* borrowed until destroy */
  } else {
    c->own = msgpack_sbuffer_release(&m->sb);
    c->args = c->own;
  }
  m->taken += n;
  if (m->o.chunksize == 0)
    m->prev_n = n;
  int failed;
  /* FP_ENOMEM: kept unsent, resubmit() tries again. */
  rc = submit(m, c, &failed);
  link_chunk(m, c);
  if (rc == FP_ENOMEM)
    return FP_ENOMEM;
  /* A chunk that failed FP_EMSGSIZE is split before more are sent. */
  *more = m->stop == 0 && (!failed || n == 1);
  return 0;
}

/* Submits the chunks a shortage of memory or a split left unsent, in
 * order.  The walk stops at the last of them, and with none (nearly every
 * call) does not start: the list holds two chunks per worker. */
static int resubmit(fp_map_iter *m)
{
  int failed;
  for (chunk *c = m->head; c && m->unsent > 0; c = c->next) {
    if (c->f != NULL)
      continue;
    if (submit(m, c, &failed) == FP_ENOMEM)
      return FP_ENOMEM;
    m->unsent--;
  }
  return 0;
}

/* 1 if waiting can make a chunk ready: one it waits on was sent (ordered:
 * the oldest; unordered: any). */
static int waitable(const fp_map_iter *m)
{
  if (m->ordered)
    return m->head != NULL && m->head->f != NULL;
  return m->nchunks > m->unsent;
}

/* Fills the buffer; a failed submit (a broken pool) is the map's error. */
static int top_up(fp_map_iter *m)
{
  int rc, more;
  while ((rc = send_chunk(m, &more)) == 0 && more)
    ;
  return rc;
}

/* --- Chunks coming back ------------------------------------------------------------- */

static void chunk_free(chunk *c)
{
  fp_future_release(c->f);
  free(c->own);
  free(c);
}

/* Takes c out of the chunks in flight. */
static void unlink_chunk(fp_map_iter *m, chunk *c)
{
  if (c->prev)
    c->prev->next = c->next;
  else
    m->head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    m->tail = c->prev;
  c->next = c->prev = NULL;
  m->inflight -= c->n;
  m->nchunks--;
  m->inflight_bytes -= c->args_len;
}

/* Item i of c, the len bytes at start of its arguments, as a chunk of its
 * own.  An array's item stays in the array; a lazy one is copied, since
 * c's buffer goes with c. */
static chunk *single(const chunk *c, unsigned i, size_t start, size_t len)
{
  chunk *one = calloc(1, sizeof *one);
  if (one == NULL)
    return NULL;
  one->args = c->args + start;
  if (c->own != NULL) {
    if ((one->own = malloc(len)) == NULL) {
      free(one);
      return NULL;
    }
    memcpy(one->own, one->args, len);
    one->args = one->own;
  }
  one->args_len = len;
  one->first = c->first + i;
  one->n = 1;
  return one;
}

/* Frees a list of chunks never sent. */
static void free_unsent(chunk *c)
{
  while (c != NULL) {
    chunk *next = c->next;
    free(c->own);
    free(c);
    c = next;
  }
}

/*
 * Replaces a chunk whose worker died by its items, one message each.  All
 * of them are made before any is sent, so a shortage leaves c as it was;
 * singles a shortage keeps from being sent, resubmit() sends later.  The
 * item that ran past its deadline, when the dispatcher could name it, is
 * not sent again: it fails as the chunk did.  The others' results died
 * with the worker (a chunk is answered in one message, at its end), so
 * those before it run again too.
 */
static int split(fp_map_iter *m, chunk *c)
{
  chunk *first = NULL, *last = NULL;
  size_t off = 0;
  unsigned late = c->f->err == FP_EDEADLINE ? c->f->late_item : 0;
  fp_future *late_f = NULL;
  size_t unsent = 0;
  if (late != 0 && (late_f = failed_future(m, FP_EDEADLINE,
                                           fp_future_error(c->f))) == NULL)
    return FP_ENOMEM;
  for (unsigned i = 0; i < c->n; i++) {
    size_t start = off;
    chunk *one = NULL;
    /* Cannot fail: the items were checked when they were taken. */
    int rc = fp__skip_object(c->args, c->args_len, &off);
    if (rc == 0 && (one = single(c, i, start, off - start)) == NULL)
      rc = FP_ENOMEM;
    if (rc != 0) {
      free_unsent(first);
      fp_future_release(late_f);
      return rc;
    }
    if (i + 1 == late)
      one->f = late_f;
    unsent += one->f == NULL;
    one->prev = last;
    if (last != NULL)
      last->next = one;
    else
      first = one;
    last = one;
  }
  /* The singles take c's place in the list. */
  first->prev = c->prev;
  last->next = c->next;
  if (c->prev)
    c->prev->next = first;
  if (c->next)
    c->next->prev = last;
  if (m->head == c)
    m->head = first;
  if (m->tail == c)
    m->tail = last;
  m->nchunks += c->n - 1;
  m->unsent += unsent;
  /* The items count once in the pool's stats, as the singles: the chunk
   * that failed for them is forgotten, but for the late item, which is not
   * sent again. */
  fp__pool_lock(m->pool);
  m->pool->st.submitted -= c->n - (late != 0);
  m->pool->st.failed -= c->n - (late != 0);
  fp__pool_unlock(m->pool);
  chunk_free(c);
  (void)resubmit(m);
  return 0;
}

static int splittable(const chunk *c)
{
  if (c->f == NULL)
    return 0;
  int err = c->f->err;
  return c->n > 1 && c->f->state == FP_FAILED &&
         (err == FP_EWORKER || err == FP_EDEADLINE || err == FP_EPROTO ||
          err == FP_EMSGSIZE);
}

/*
 * What share of a CPU each worker gets when all are busy: 1, or with more
 * workers than the CPUs this process may run on, CPUs / workers.
 */
static double cpu_share(const fp_pool *p)
{
  if (p->ncpus >= p->nslots)
    return 1;
  return (double)p->ncpus / p->nslots;
}

/*
 * Learns the time per item from a finished chunk (automatic mode).  The
 * dispatcher times a chunk from the answer before it on the same worker:
 * when it reads several answers at once, the first seems to have taken
 * their whole time and the others none.  So times and items are summed,
 * never averaged chunk by chunk, where a run of such zeros would make the
 * items look free and the chunks huge; the sums are halved now and then
 * to follow a change of pace.
 */
/* How long a chunk of the automatic size runs in a worker. */
static double chunk_target_ns(const fp_pool *p)
{
  return p->remote ? FP__CHUNK_TARGET_REMOTE_NS : FP__CHUNK_TARGET_NS;
}

static void learn(fp_map_iter *m, const chunk *c)
{
  if (m->o.chunksize != 0 || c->f->state != FP_FINISHED)
    return;
  if (m->sum_items > FP__LEARN_ITEMS) {
    m->sum_ns /= 2;
    m->sum_items /= 2;
  }
  m->sum_ns += c->f->run_ns > 0 ? (double)c->f->run_ns : 0;
  m->sum_items += c->n;
  m->timed = 1;
  /* The dispatcher's clock also runs while a worker waits for a CPU: with
   * more workers than CPUs, an item seems to take workers / CPUs times its
   * time, the chunks shrink to one item and the parent's work per item
   * grows with the workers.  The time an item runs is what a chunk is
   * sized by. */
  double per = m->sum_ns / m->sum_items * m->cpu_share;
  double want = chunk_target_ns(m->pool) / (per > 1 ? per : 1);
  m->chunksize = want < 1 ? 1 : want > FP__CHUNK_MAX ? FP__CHUNK_MAX
                                                     : (size_t)want;
}

/*
 * The automatic chunk size before this map has timed a chunk: from the
 * pool's time per item if it has run work already, else 1.  Starting at 1
 * costs a message per item until the first answers are in, and up to
 * FP__MIN_ITEMS items per worker go out so: with 256 workers, thousands of
 * messages for a map that needs a hundred.
 */
static size_t first_chunksize(fp_map_iter *m)
{
  fp__pool_lock(m->pool);
  int64_t avg = m->pool->avg_run_ns;
  fp__pool_unlock(m->pool);
  if (avg <= 0)
    return 1;
  m->timed = 1;
  double per = (double)avg * m->cpu_share;
  double want = chunk_target_ns(m->pool) / (per > 1 ? per : 1);
  return want < 1 ? 1 : want > FP__CHUNK_MAX ? FP__CHUNK_MAX : (size_t)want;
}

/* Picks a finished chunk to yield: the oldest, or in unordered mode any. */
static chunk *ready_chunk(fp_map_iter *m)
{
  for (chunk *c = m->head; c; c = c->next) {
    if (c->f != NULL && fp__future_is_done(c->f))
      return c;
    if (m->ordered)
      return NULL;
  }
  return NULL;
}

/*
 * The test fp_map_next waits on; lock held.  The chunks do not change while
 * it waits and only the pool makes their futures final, counting each in
 * ndone: a scan that found none ready (unordered, it may look at every
 * chunk) is not repeated until the pool has made another final.
 */
static int any_ready(fp_pool *p, void *arg)
{
  fp_map_iter *m = arg;
  if (m->quiet_ndone == p->ndone + 1)
    return 0;
  if (ready_chunk(m) != NULL)
    return 1;
  m->quiet_ndone = p->ndone + 1;
  return 0;
}

/*
 * Makes c, final, the chunk being yielded.  A finished chunk's answer is
 * an array of one entry per item, which its future checked; every read is
 * still bounded by the body's end, through codec.c's readers.  Should the
 * answer not be there, every item fails with FP_EPROTO.
 */
static void open_answer(fp_map_iter *m, chunk *c)
{
  fp_future *f = c->f;
  size_t off = f->result_off;
  uint32_t n;
  m->cur = c;
  m->cur_pos = 0;
  m->ans_off = m->ans_end = 0;
  if (f->state != FP_FINISHED || f->nitems == 1)
    return;
  if (fp__read_array(f->result_buf, f->result_len, &off, &n) == 0 &&
      n == c->n) {
    m->ans_off = off;
    m->ans_end = f->result_len;
  }
}

/* Reads any one object at *off into m->zone: 0, FP_ENOMEM or FP_EPROTO.
 * msgpack_unpack is given the object's end, which the answer does not. */
static int unpack_one(fp_map_iter *m, const char *buf, size_t *off,
                      msgpack_object *o)
{
  size_t end = *off;
  int rc = fp__skip_object(buf, m->ans_end, &end);
  if (rc != 0)
    return FP_EPROTO;
  msgpack_zone_clear(&m->zone); /* the previous item's result */
  rc = msgpack_unpack(buf, end, off, &m->zone, o);
  if (rc == MSGPACK_UNPACK_SUCCESS)
    return 0;
  return rc == MSGPACK_UNPACK_NOMEM_ERROR ? FP_ENOMEM : FP_EPROTO;
}

/*
 * Reads the current chunk's next answer entry into *item: [0, result],
 * whose result is read by hand if it is plain and else unpacked into
 * m->zone, or [code, kind, message].  0, or FP_ENOMEM with the entry left
 * to be read again.
 */
static int next_entry(fp_map_iter *m, fp_map_item *item)
{
  const char *buf = m->cur->f->result_buf, *kind, *msg;
  size_t off = m->ans_off, end = m->ans_end, kind_len, msg_len;
  uint32_t n = 0;
  int code = 0;
  int rc = end == 0 ? FP_EPROTO : fp__read_array(buf, end, &off, &n);
  if (rc == 0)
    rc = fp__read_code(buf, end, &off, &code);
  if (rc == 0 && n == 2 && code == 0) {
    if (fp__read_plain(buf, end, &off, &m->result) != 0)
      rc = unpack_one(m, buf, &off, &m->result);
    if (rc == FP_ENOMEM)
      return rc;
    item->result = &m->result;
  } else if (rc == 0 && n == 3 && fp__is_worker_code(code) &&
             fp__read_str(buf, end, &off, &kind, &kind_len) == 0 &&
             fp__read_str(buf, end, &off, &msg, &msg_len) == 0) {
    item->err = code;
    snprintf(m->errbuf, sizeof m->errbuf, "%.*s: %.*s", (int)kind_len, kind,
             (int)msg_len, msg);
    item->error = m->errbuf;
  } else {
    rc = FP_EPROTO;
  }
  if (rc != 0) { /* what follows cannot be read either */
    item->result = NULL;
    item->err = FP_EPROTO;
    item->error = "the worker sent a malformed result";
    m->ans_end = 0;
  }
  m->ans_off = off;
  return 0;
}

/*
 * item_args: reads the current item's argument object, at m->arg_off in
 * the chunk's arguments, which stay until the next fp_map_next; *next is
 * the offset after it.  0, or FP_ENOMEM.
 */
static int item_args(fp_map_iter *m, fp_map_item *item, size_t *next)
{
  const chunk *c = m->cur;
  size_t off = m->arg_off, end = off;
  if (fp__skip_object(c->args, c->args_len, &end) != 0)
    return FP_EPROTO; /* cannot be: the items were checked when taken */
  *next = end;
  if (fp__read_plain(c->args, end, &off, &m->arg) != 0) {
    msgpack_zone_clear(&m->arg_zone); /* the previous item's */
    off = m->arg_off;
    int rc = msgpack_unpack(c->args, end, &off, &m->arg_zone, &m->arg);
    if (rc != MSGPACK_UNPACK_SUCCESS)
      return rc == MSGPACK_UNPACK_NOMEM_ERROR ? FP_ENOMEM : FP_EPROTO;
  }
  item->args = &m->arg;
  return 0;
}

/* Fills *item with the current chunk's next item: 0, or FP_ENOMEM with
 * nothing taken.  The args field is written only with item_args: a program
 * built with 0.1's header has a struct that ends before it. */
static int yield(fp_map_iter *m, fp_map_item *item)
{
  chunk *c = m->cur;
  fp_future *f = c->f;
  size_t next_arg = 0;
  memset(item, 0, m->o.item_args ? sizeof *item
                                  : offsetof(fp_map_item, args));
  item->index = c->first + m->cur_pos;
  if (m->cur_pos == 0)
    m->arg_off = 0;
  if (m->o.item_args && item_args(m, item, &next_arg) == FP_ENOMEM)
    return FP_ENOMEM;
  if (f->state != FP_FINISHED) {
    item->err = f->err;
    item->error = fp_future_error(f);
  } else if (f->nitems == 1) {
    item->result = &f->result;
  } else if (next_entry(m, item) != 0) {
    return FP_ENOMEM;
  }
  m->cur_pos++;
  m->arg_off = next_arg;
  return 0;
}

/* The map's timeout passed: cancels what is in flight, for good. */
static int expire(fp_map_iter *m)
{
  m->expired = 1;
  m->input_done = 1;
  for (chunk *c = m->head; c; c = c->next)
    if (c->f != NULL)
      (void)fp_future_cancel(c->f, m->o.timeout_cancel);
  return FP_ETIMEDOUT;
}

FP_EXTERN int fp_map_next(fp_map_iter *m, int timeout_ms, fp_map_item *item)
{
  int64_t deadline = -1;
  int timed = 0; /* deadline computed */
  if (m == NULL || item == NULL || timeout_ms < -1)
    return FP_EINVAL;
  if (m->expired)
    return FP_ETIMEDOUT;
  for (;;) {
    if (m->cur != NULL && m->cur_pos < m->cur->n)
      return yield(m, item) == 0 ? 1 : FP_ENOMEM; /* call again */
    if (m->cur != NULL) {
      chunk_free(m->cur);
      m->cur = NULL;
    }
    /* Past the map's timeout no item is taken, and none is waited for. */
    int late = m->end >= 0 && fp__now_ms() >= m->end;
    int rc = late ? 0 : top_up(m);
    if (m->input_err != 0) {
      rc = m->input_err;
      m->input_err = 0;
      m->input_done = 1;
      return rc;
    }
    if (rc < 0 && m->head == NULL)
      return rc;
    if (m->head == NULL)
      return late && !m->input_done ? expire(m) : m->stop; /* 0: the end */
    int rs = resubmit(m);
    chunk *c = ready_chunk(m);
    if (c == NULL && late)
      return expire(m);
    if (c == NULL && !waitable(m))
      return rs < 0 ? rs : FP_ENOMEM; /* call again: nothing was lost */
    if (c == NULL) {
      /* The clock is read only when there is something to wait for: most
       * calls find their item ready. */
      if (!timed)
        (void)fp__deadline(timeout_ms, &deadline); /* checked above */
      timed = 1;
      m->quiet_ndone = 0; /* the chunks changed since the last wait */
      int64_t until = m->end >= 0 && (deadline < 0 || m->end < deadline)
                          ? m->end : deadline;
      fp__pool_lock(m->pool);
      rc = fp__pool_wait(m->pool, any_ready, m, until);
      fp__pool_unlock(m->pool);
      if (rc != 0 && !(rc == FP_ETIMEDOUT && until == m->end))
        return rc;
      continue; /* at the map's timeout, the loop's top expires it */
    }
    if (splittable(c)) {
      if ((rc = split(m, c)) != 0)
        return rc;
      continue;
    }
    unlink_chunk(m, c);
    learn(m, c);
    open_answer(m, c);
    m->done += c->n;
    if (m->o.progress != NULL)
      m->o.progress(m->o.progress_arg, m->done, m->total);
  }
}

/* --- Creation ----------------------------------------------------------------------- */

static int map_start(fp_pool *pool, const char *name, const fp_map_input *in,
                     const fp_map_options *opts, int ordered,
                     fp_map_iter **out)
{
  if (out != NULL)
    *out = NULL;
  if (pool == NULL || out == NULL || in == NULL || !fp__task_name_ok(name) ||
      (in->next == NULL) == (in->array == NULL))
    return FP_EINVAL;
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  if (opts != NULL) {
    if (opts->size < sizeof(size_t) || opts->size > sizeof o)
      return FP_EINVAL;
    memcpy(&o, opts, opts->size);
  }
  if (o.chunksize > FP__CHUNK_MAX || o.deadline_ms < 0 || o.timeout_ms < 0 ||
      (o.timeout_cancel & ~(unsigned)FP_CANCEL_RUNNING) ||
      (o.item_args != 0 && o.item_args != 1))
    return FP_EINVAL;
  if (!fp__pool_owned(pool))
    return FP_EINVAL; /* a child's copy: before any other check */
  if (o.deadline_ms > 0 && pool->opts.mode != FP_MODE_PROCESSES)
    return FP_ENOTSUP; /* a late item fails alone: its worker is killed */
  size_t n_items = 0, off = 0; /* its items are checked as they are taken */
  if (in->array != NULL && array_header(in->array, in->len, &n_items, &off))
    return FP_EINVAL;
  if (fp__tasks_find(&pool->tasks, name, strlen(name)) == NULL)
    return FP_ENOTASK;
  int rc = fp__submit_refused(pool); /* before anything is made or taken */
  if (rc != 0)
    return rc;

  fp_map_iter *m = calloc(1, sizeof *m);
  if (m == NULL)
    return FP_ENOMEM;
  if (!msgpack_zone_init(&m->zone, 1024)) {
    free(m);
    return FP_ENOMEM;
  }
  if (!msgpack_zone_init(&m->arg_zone, 256)) {
    msgpack_zone_destroy(&m->zone);
    free(m);
    return FP_ENOMEM;
  }
  msgpack_sbuffer_init(&m->sb);
  m->pool = pool;
  snprintf(m->name, sizeof m->name, "%s", name);
  m->ordered = ordered;
  m->in = *in;
  m->o = o;
  m->arr_left = n_items;
  m->arr_off = off;
  m->total = n_items;
  m->cpu_share = cpu_share(pool);
  m->chunksize = o.chunksize ? o.chunksize : first_chunksize(m);
  m->end = o.timeout_ms > 0 ? fp__now_ms() + o.timeout_ms : -1;
  rc = top_up(m);
  if ((rc < 0 && m->head == NULL) || m->stop != 0) {
    /* Refused now, after all: another thread shut the pool down. */
    rc = rc < 0 && m->head == NULL ? rc : m->stop;
    fp_map_destroy(m);
    return rc;
  }
  *out = m;
  return 0;
}

FP_EXTERN int fp_map(fp_pool *pool, const char *name, const fp_map_input *in,
                     const fp_map_options *opts, fp_map_iter **out)
{
  return map_start(pool, name, in, opts, 1, out);
}

FP_EXTERN int fp_map_unordered(fp_pool *pool, const char *name,
                               const fp_map_input *in,
                               const fp_map_options *opts, fp_map_iter **out)
{
  return map_start(pool, name, in, opts, 0, out);
}

FP_EXTERN void fp_map_destroy(fp_map_iter *m)
{
  if (m == NULL)
    return;
  if (m->cur != NULL)
    chunk_free(m->cur);
  while (m->head != NULL) {
    chunk *c = m->head;
    m->head = c->next;
    (void)fp_future_cancel(c->f, 0); /* what has not started never will */
    chunk_free(c);
  }
  msgpack_sbuffer_destroy(&m->sb);
  msgpack_zone_destroy(&m->zone);
  msgpack_zone_destroy(&m->arg_zone);
  free(m);
}

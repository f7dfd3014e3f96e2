/*
 * map: one task over many argument objects.  Items are packed into chunks,
 * each chunk one message and one future; at most buffersize items are in
 * flight, so a lazy input of any length runs in bounded memory.  A chunk
 * whose worker died (or ran past its deadline) is split into single items
 * and sent again, so only the item that crashed fails.
 *
 * Automatic chunk size: start at one item, and size each next chunk so that
 * it runs for about FP__CHUNK_TARGET_NS on a worker, from the measured time
 * per item (at most doubling each time), but never larger than an even share
 * of what is left when the total is known, so the tail still balances.
 */
#include "forkpool-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FP__CHUNK_TARGET_NS (5 * 1000 * 1000)
#define FP__CHUNK_MAX 65536

typedef struct chunk {
  fp_future *f;          /* owned reference */
  size_t first;          /* index of its first item */
  unsigned n;            /* items */
  char *args;            /* the items' msgpack, kept to split; owned */
  size_t args_len;
  struct chunk *next;
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
  chunk *cur;            /* the finished chunk being yielded */
  unsigned cur_pos;
  size_t chunksize;      /* the next chunk's size (automatic: adapts) */
  double ns_per_item;    /* measured, automatic mode; 0: not yet */
  msgpack_sbuffer sb;    /* the chunk being packed */
  msgpack_zone zone;     /* scratch for item boundaries */
  char errbuf[600];      /* an item's "kind: message" */
};

/* --- Input ------------------------------------------------------------------------ */

/* Reads a msgpack array header: 0 with *n and *off past it, or FP_EINVAL. */
static int array_header(const unsigned char *b, size_t len, size_t *n,
                        size_t *off)
{
  if (len >= 1 && (b[0] & 0xf0) == 0x90) {
    *n = b[0] & 0x0f;
    *off = 1;
  } else if (len >= 3 && b[0] == 0xdc) {
    *n = (size_t)b[1] << 8 | b[2];
    *off = 3;
  } else if (len >= 5 && b[0] == 0xdd) {
    *n = (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
    *off = 5;
  } else {
    return FP_EINVAL;
  }
  return 0;
}

/* Appends the next item to m->sb: 1, 0 at the end, or a negative code. */
static int take_item(fp_map_iter *m)
{
  if (m->input_done)
    return 0;
  if (m->in.next == NULL) {
    if (m->arr_left == 0) {
      m->input_done = 1;
      return 0;
    }
    size_t start = m->arr_off, end = start;
    msgpack_object o;
    msgpack_zone_clear(&m->zone);
    int urc = msgpack_unpack(m->in.array, m->in.len, &end, &m->zone, &o);
    if (urc == MSGPACK_UNPACK_NOMEM_ERROR)
      return FP_ENOMEM;
    if (urc <= 0)
      return FP_EINVAL; /* checked at start: cannot happen */
    /* Taken only once copied: a shortage loses nothing. */
    if (msgpack_sbuffer_write(&m->sb, (const char *)m->in.array + start,
                              end - start))
      return FP_ENOMEM;
    m->arr_off = end;
    m->arr_left--;
    return 1;
  }
  size_t before = m->sb.size, n = 0;
  msgpack_packer pk;
  msgpack_packer_init(&pk, &m->sb, msgpack_sbuffer_write);
  int rc = m->in.next(m->in.arg, &pk);
  if (rc == 0)
    m->input_done = 1;
  if (rc == 1 && (fp__count_objects(m->sb.data + before, m->sb.size - before,
                                    &n) != 0 || n != 1))
    rc = FP_EINVAL; /* the callback must pack exactly one object */
  if (rc != 1)
    m->sb.size = before;
  return rc < 0 ? rc : rc == 1;
}

static size_t chunk_goal(fp_map_iter *m)
{
  size_t goal = m->chunksize;
  if (m->o.chunksize == 0 && m->total != 0) {
    size_t left = m->total - m->taken;
    size_t share = left / (4 * (size_t)m->pool->nslots) + 1;
    if (goal > share)
      goal = share;
  }
  /* Automatic: enough in flight to keep every worker busy. */
  size_t cap = m->o.buffersize ? m->o.buffersize
                               : 4 * (size_t)m->pool->nslots * m->chunksize;
  size_t room = cap > m->inflight ? cap - m->inflight : 0;
  return goal < room ? goal : room;
}

/* A future that failed before it was sent, so its items still report. */
static fp_future *failed_future(fp_map_iter *m, int err)
{
  fp_future *f = fp__future_new(m->pool);
  if (f == NULL)
    return NULL;
  atomic_store(&f->refs, 1); /* the pool never saw it */
  fp__future_fail(f, err, "could not submit: %s", fp_strerror(err));
  return f;
}

/* Packs and submits one chunk; 1 if one went out, 0 if none, or < 0. */
static int send_chunk(fp_map_iter *m)
{
  size_t goal = chunk_goal(m);
  if (goal == 0 || m->input_done)
    return 0;
  /* Items are packed whole; a chunk stops well short of max_message so
   * that its answer has room too. */
  size_t bytes = m->pool->opts.max_message / 4;
  chunk *c = calloc(1, sizeof *c); /* before any item is taken */
  if (c == NULL)
    return FP_ENOMEM;
  msgpack_sbuffer_clear(&m->sb);
  unsigned n = 0;
  int rc = 1;
  while (n < goal && (n == 0 || m->sb.size < bytes) &&
         (rc = take_item(m)) == 1)
    n++;
  int short_of_memory = rc == FP_ENOMEM && m->in.next == NULL;
  if (rc < 0 && !short_of_memory) {
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
  c->args_len = m->sb.size;
  c->args = msgpack_sbuffer_release(&m->sb);
  m->taken += n;
  rc = fp__submit(m->pool, m->name, c->args, c->args_len, n, m->o.deadline_ms,
                  0, &c->f);
  if (rc != 0 && rc != FP_ENOMEM)
    c->f = failed_future(m, rc); /* n == 1: it fails; else FP_EMSGSIZE:
                                    split into singles */
  if (c->f == NULL)
    rc = FP_ENOMEM; /* kept unsent: resubmit() tries again */
  if (m->tail)
    m->tail->next = c;
  else
    m->head = c;
  m->tail = c;
  m->inflight += n;
  if (rc == FP_ENOMEM || short_of_memory)
    return FP_ENOMEM;
  return rc == 0 || n == 1 ? 1 : 0;
}

/* Submits the chunks a shortage of memory left unsent, in order. */
static int resubmit(fp_map_iter *m)
{
  for (chunk *c = m->head; c; c = c->next) {
    if (c->f != NULL)
      continue;
    int rc = fp__submit(m->pool, m->name, c->args, c->args_len, c->n,
                        m->o.deadline_ms, 0, &c->f);
    if (rc != 0 && rc != FP_ENOMEM)
      c->f = failed_future(m, rc);
    if (c->f == NULL)
      return FP_ENOMEM;
  }
  return 0;
}

/* 1 if waiting can make a chunk ready: one it waits on was sent. */
static int waitable(const fp_map_iter *m)
{
  for (const chunk *c = m->head; c; c = c->next) {
    if (c->f != NULL)
      return 1;
    if (m->ordered)
      return 0;
  }
  return 0;
}

/* Fills the buffer; a failed submit (a broken pool) is the map's error. */
static int top_up(fp_map_iter *m)
{
  int rc;
  while ((rc = send_chunk(m)) == 1)
    ;
  return rc;
}

/* --- Chunks coming back ------------------------------------------------------------- */

static void chunk_free(chunk *c)
{
  fp_future_release(c->f);
  free(c->args);
  free(c);
}

/* The link that points at c. */
static chunk **link_to(fp_map_iter *m, chunk *c)
{
  chunk **pp = &m->head;
  while (*pp != c)
    pp = &(*pp)->next;
  return pp;
}

static void unlink_chunk(fp_map_iter *m, chunk *c)
{
  *link_to(m, c) = c->next;
  if (m->tail == c)
    for (m->tail = m->head; m->tail && m->tail->next; m->tail = m->tail->next)
      ;
  c->next = NULL;
  m->inflight -= c->n;
}

/* Replaces a chunk whose worker died by its items, one message each.  All
 * of them are made before any is sent, so a shortage leaves c as it was;
 * singles a shortage keeps from being sent, resubmit() sends later. */
static int split(fp_map_iter *m, chunk *c)
{
  size_t off = 0;
  chunk *after = c->next, *prev = NULL, *first = NULL;
  for (unsigned i = 0; i < c->n; i++) {
    size_t start = off;
    msgpack_object o;
    msgpack_zone_clear(&m->zone);
    int urc = msgpack_unpack(c->args, c->args_len, &off, &m->zone, &o);
    chunk *one = urc > 0 ? calloc(1, sizeof *one) : NULL;
    if (one == NULL || (one->args = malloc(off - start)) == NULL) {
      free(one);
      while (first != NULL) {
        chunk *next = first->next;
        free(first->args);
        free(first);
        first = next;
      }
      return urc > 0 || urc == MSGPACK_UNPACK_NOMEM_ERROR ? FP_ENOMEM
                                                         : FP_EPROTO;
    }
    memcpy(one->args, c->args + start, off - start);
    one->args_len = off - start;
    one->first = c->first + i;
    one->n = 1;
    if (prev != NULL)
      prev->next = one;
    prev = one;
    if (first == NULL)
      first = one;
  }
  /* The singles take c's place in the list. */
  prev->next = after;
  *link_to(m, c) = first;
  if (m->tail == c)
    m->tail = prev;
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

/* Learns the time per item from a finished chunk (automatic mode). */
static void learn(fp_map_iter *m, const chunk *c)
{
  if (m->o.chunksize != 0 || c->f->state != FP_FINISHED || c->f->run_ns <= 0)
    return;
  double per = (double)c->f->run_ns / c->n;
  m->ns_per_item = m->ns_per_item == 0 ? per : 0.7 * m->ns_per_item + 0.3 * per;
  double want = FP__CHUNK_TARGET_NS / (m->ns_per_item > 1 ? m->ns_per_item : 1);
  size_t next = want < 1 ? 1 : want > FP__CHUNK_MAX ? FP__CHUNK_MAX
                                                    : (size_t)want;
  if (next > 2 * m->chunksize)
    next = 2 * m->chunksize;
  m->chunksize = next;
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

static int any_ready(fp_pool *p, void *arg)
{
  (void)p;
  return ready_chunk(arg) != NULL;
}

/* Fills *item from entry pos of the current chunk. */
static void yield(fp_map_iter *m, fp_map_item *item)
{
  chunk *c = m->cur;
  fp_future *f = c->f;
  unsigned pos = m->cur_pos++;
  memset(item, 0, sizeof *item);
  item->index = c->first + pos;
  if (f->state != FP_FINISHED) {
    item->err = f->err;
    item->error = fp_future_error(f);
  } else if (c->n == 1 && f->nitems == 1) {
    item->result = &f->result;
  } else {
    const msgpack_object *e = &f->result.via.array.ptr[pos];
    const msgpack_object *v = e->via.array.ptr;
    if (e->via.array.size == 2) {
      item->result = &v[1];
    } else {
      item->err = (int)v[0].via.i64;
      snprintf(m->errbuf, sizeof m->errbuf, "%.*s: %.*s",
               (int)v[1].via.str.size, v[1].via.str.ptr,
               (int)v[2].via.str.size, v[2].via.str.ptr);
      item->error = m->errbuf;
    }
  }
}

/* A chunk's answer must have one well-formed entry per item. */
static int chunk_answer_ok(const chunk *c)
{
  const msgpack_object *r = &c->f->result;
  if (c->f->state != FP_FINISHED || c->f->nitems == 1)
    return 1;
  if (r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size != c->n)
    return 0;
  for (uint32_t i = 0; i < c->n; i++) {
    const msgpack_object *e = &r->via.array.ptr[i];
    if (e->type != MSGPACK_OBJECT_ARRAY)
      return 0;
    const msgpack_object *v = e->via.array.ptr;
    int ok2 = e->via.array.size == 2 && v[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER;
    int ok3 = e->via.array.size == 3 && v[0].type == MSGPACK_OBJECT_NEGATIVE_INTEGER &&
              v[1].type == MSGPACK_OBJECT_STR && v[2].type == MSGPACK_OBJECT_STR;
    if (!ok2 && !ok3)
      return 0;
  }
  return 1;
}

FP_EXTERN int fp_map_next(fp_map_iter *m, int timeout_ms, fp_map_item *item)
{
  int64_t deadline;
  if (m == NULL || item == NULL || fp__deadline(timeout_ms, &deadline) != 0)
    return FP_EINVAL;
  for (;;) {
    if (m->cur != NULL && m->cur_pos < m->cur->n) {
      yield(m, item);
      return 1;
    }
    if (m->cur != NULL) {
      chunk_free(m->cur);
      m->cur = NULL;
    }
    int rc = top_up(m);
    if (m->input_err != 0) {
      rc = m->input_err;
      m->input_err = 0;
      m->input_done = 1;
      return rc;
    }
    if (rc < 0 && m->head == NULL)
      return rc;
    if (m->head == NULL)
      return 0;
    int rs = resubmit(m);
    chunk *c = ready_chunk(m);
    if (c == NULL && !waitable(m))
      return rs < 0 ? rs : FP_ENOMEM; /* call again: nothing was lost */
    if (c == NULL) {
      fp__pool_lock(m->pool);
      rc = fp__pool_run_until(m->pool, any_ready, m, deadline);
      fp__pool_unlock(m->pool);
      if (rc != 0)
        return rc;
      continue;
    }
    if (splittable(c)) {
      if ((rc = split(m, c)) != 0)
        return rc;
      continue;
    }
    unlink_chunk(m, c);
    if (!chunk_answer_ok(c)) {
      c->f->state = FP_FAILED; /* every item reports the protocol error */
      c->f->err = FP_EPROTO;
    }
    learn(m, c);
    m->cur = c;
    m->cur_pos = 0;
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
  if (o.chunksize > FP__CHUNK_MAX || o.deadline_ms < 0)
    return FP_EINVAL;
  size_t n_items = 0, off = 0, nobj;
  if (in->array != NULL) {
    if (array_header(in->array, in->len, &n_items, &off) != 0)
      return FP_EINVAL;
    int rc = fp__count_objects(in->array, in->len, &nobj);
    if (rc != 0 || nobj != 1)
      return rc == FP_ENOMEM ? FP_ENOMEM : FP_EINVAL;
  }
  if (fp__tasks_find(&pool->tasks, name, strlen(name)) == NULL)
    return FP_ENOTASK;

  fp_map_iter *m = calloc(1, sizeof *m);
  if (m == NULL)
    return FP_ENOMEM;
  if (!msgpack_zone_init(&m->zone, 1024)) {
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
  m->input_done = in->array != NULL && n_items == 0;
  m->chunksize = o.chunksize ? o.chunksize : 1;
  int rc = top_up(m);
  if (rc < 0 && m->head == NULL) {
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
  free(m);
}

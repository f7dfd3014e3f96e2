/*
 * The parent side of a worker's pipe: everything from the bytes a worker
 * writes to what the caller is told.  The harness includes dispatch.c,
 * pipe.c, supervise.c, map.c and frame.c so that it can drive their static
 * functions on a pool of its own making: one slot on the pipe transport, no
 * fork server, no workers, its out_fd the read end of a pipe the fuzzer's
 * bytes go into.
 *
 *   pipe_recv -> fp__reader_next -> fp__dispatch_frame ->
 *     fp__decode_result_head, handle_ready, fp__future_finish,
 *     handle_ring_result (the ring's first 4 KiB hold the input's first
 *     bytes),
 *     fail_from_body, account_chunk; then slot_exited for the worker's
 *     death; then, as fp_map_next does, open_answer and yield.
 *
 * Input: three control bytes, then the bytes the worker writes.
 *   0  bits 0-1  futures handed to the worker: 1, 2, 3, 3 (ids 1, 2, 3)
 *      bit 2     the slot is STARTING (its READY not read yet), else LIVE
 *      bit 3     the last future's TASK frame is not fully written yet
 *      bit 4     the worker closes its end before it exits
 *      bit 5     it exits killed by SIGKILL, else with status 0
 *      bits 6-7  map chunks: none; future 1 has 2 items; all have 2;
 *                future 1 has 3
 *   1  bit 0     max_message 1024, else 1 MiB
 *      bits 1-7  how the bytes are cut into writes (0: all at once)
 *   2  the frame reader's Nth allocation fails (0: none)
 *
 * Checks, beyond the sanitizers: every future ends final; a finished one
 * was answered by a well-formed RESULT with its id and code 0; a failed one
 * carries either the code of a well-formed RESULT with its id or one the
 * pool itself gives (FP_EPROTO, FP_EWORKER, FP_ENOMEM, FP_EBROKEN,
 * FP_ECANCELLED); every item fp_map_next would yield is a result or an
 * error code with text, and a result read out of a chunk's answer (through
 * codec.c's readers) is the object msgpack_unpack reads there; the pool's
 * counters add up to the items, and count as finished exactly the items the
 * caller sees succeed.
 */
#include "../lib/dispatch.c"
#include "../lib/map.c"
#include "../lib/pipe.c"
#include "../lib/supervise.c"

static unsigned fz_alloc_n, fz_alloc_fail_at;

/* frame.c's malloc: fails the fz_alloc_fail_at'th call of an input. */
static void *fz_malloc(size_t n)
{
  if (++fz_alloc_n == fz_alloc_fail_at)
    return NULL;
  return malloc(n);
}

#define malloc fz_malloc
#include "../lib/frame.c"
#undef malloc

#include "fuzz.h"

#define ORACLE_CHECK FZ_CHECK
#include "../tests/codec-oracle.h"

#define FZ_PID 0x7fffffff /* above pid_max: never a real process */
#define FZ_MAXF 3

/* A RESULT frame the bytes hold, read the plain way, for comparing. */
typedef struct answer {
  uint64_t id;
  int code;
} answer;

typedef struct answers {
  answer a[256];
  size_t n;
  int overflow;          /* more than a[] holds: answered() stops checking */
} answers;

/* Every well-formed RESULT head among the complete frames in buf. */
static void find_answers(const uint8_t *buf, size_t len, size_t max,
                         answers *out)
{
  size_t off = 0;
  out->n = 0;
  out->overflow = 0;
  while (len - off >= FP__HDR) {
    uint32_t n = fp__frame_body_len((const char *)buf + off);
    if (n > max || len - off - FP__HDR < n)
      break;
    uint64_t id;
    int code;
    size_t at;
    uint64_t pos;
    size_t rlen;
    const char *body = (const char *)buf + off + FP__HDR;
    if (fp__decode_result_shm(body, n, &id, &pos, &rlen) == 0)
      code = 0; /* a success left in the ring */
    else if (fp__decode_result_head(body, n, &id, &code, &at) != 0) {
      off += FP__HDR + n;
      continue;
    }
    if (out->n < sizeof out->a / sizeof *out->a)
      out->a[out->n++] = (answer){id, code};
    else
      out->overflow = 1;
    off += FP__HDR + n;
  }
}

static int answered(const answers *as, uint64_t id, int code)
{
  if (as->overflow)
    return 1;
  for (size_t i = 0; i < as->n; i++)
    if (as->a[i].id == id && as->a[i].code == code)
      return 1;
  return 0;
}

/* What the pool may fail a task with on its own, whatever the worker says. */
static int pool_code(int err)
{
  return err == FP_EPROTO || err == FP_EWORKER || err == FP_ENOMEM ||
         err == FP_EBROKEN || err == FP_ECANCELLED;
}

/*
 * The slot's ring, as a worker would have filled it: the first 4 KiB hold
 * the input's first bytes (the fuzzer's to shape), the rest zeros.  Mapped
 * once; the pool borrows it.
 */
static fp__shm fz_shm;

static void ring_fill(const uint8_t *data, size_t size)
{
  if (fz_shm.base == NULL)
    FZ_CHECK(fp__shm_init(&fz_shm, (size_t)1 << 20, 1) == 0 &&
             fz_shm.base != NULL);
  size_t n = size < 4096 ? size : 4096;
  memset(fz_shm.rings, 0, 4096);
  memcpy(fz_shm.rings, data, n);
}

static fp_pool *pool_new(size_t max_message)
{
  fp_pool *p = calloc(1, sizeof *p);
  FZ_CHECK(p != NULL);
  p->shm = fz_shm;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->cond, NULL);
  p->ctl_fd = p->epfd = -1; /* so no message, and no signal, leaves */
  p->wake[0] = p->wake[1] = p->notify[0] = p->notify[1] = -1;
  p->owner = getpid();
  p->opts.max_message = max_message;
  p->opts.max_inflight = FZ_MAXF;
  p->nslots = 1;
  p->tr = &fp__pipe_transport;
  p->slots = calloc(1, sizeof *p->slots);
  FZ_CHECK(p->slots != NULL);
  p->groups = calloc(1, sizeof *p->groups); /* one, as a local pool has */
  FZ_CHECK(p->groups != NULL);
  p->groups[0].n = 1;
  p->ngroups = 1;
  FZ_CHECK(fp__sched_init(p) == 0);
  return p;
}

static void fz_pool_free(fp_pool *p)
{
  fp__reader_free(&p->slots[0].pipe.rd);
  free(p->slots);
  free(p->groups);
  fp__sched_free(p);
  pthread_cond_destroy(&p->cond);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

/*
 * A chunk item's result r, read by next_entry from the entry [0, result]
 * between at and end, is what msgpack_unpack reads there: the entry's
 * header and code skipped with msgpack-c too, not with codec.c's readers.
 */
static void same_as_msgpack(const fp_future *f, size_t at, size_t end,
                            const msgpack_object *r)
{
  const unsigned char c = (unsigned char)f->result_buf[at];
  msgpack_zone z;
  msgpack_object code, o;
  FZ_CHECK(msgpack_zone_init(&z, 1024));
  at += c == 0xdc ? 3 : c == 0xdd ? 5 : 1; /* [code, result] */
  FZ_CHECK(msgpack_unpack(f->result_buf, end, &at, &z, &code) ==
           MSGPACK_UNPACK_EXTRA_BYTES);
  FZ_CHECK(msgpack_unpack(f->result_buf, end, &at, &z, &o) ==
           MSGPACK_UNPACK_SUCCESS);
  if (o.type == MSGPACK_OBJECT_EXT || o.type == MSGPACK_OBJECT_ARRAY ||
      o.type == MSGPACK_OBJECT_MAP)
    FZ_CHECK(msgpack_object_equal(*r, o));
  else
    FZ_CHECK(oracle_same_plain(r, &o)); /* floats by their bits */
  msgpack_zone_destroy(&z);
}

/*
 * What fp_map_next does with a final chunk future: 1 for each item it
 * yields as a result.  Checks each item it yields, and that a result read
 * out of a chunk's answer is msgpack-c's.
 */
static unsigned map_items(fp_future *f)
{
  chunk c = {.f = f, .n = f->nitems};
  fp_map_iter m;
  unsigned ok = 0;

  if (splittable(&c))
    return 0; /* sent again item by item: these count as failed */
  memset(&m, 0, sizeof m);
  FZ_CHECK(msgpack_zone_init(&m.zone, 1024));
  open_answer(&m, &c);
  for (unsigned i = 0; i < c.n; i++) {
    fp_map_item item;
    size_t at = m.ans_off;
    FZ_CHECK(yield(&m, &item) == 0);
    FZ_CHECK(item.index == i);
    if (item.result != NULL) {
      FZ_CHECK(item.err == 0);
      if (c.n > 1)
        same_as_msgpack(f, at, m.ans_off, item.result);
      ok++;
    } else {
      FZ_CHECK(item.err < 0 && item.err > -5000);
      FZ_CHECK(item.error != NULL);
    }
  }
  msgpack_zone_destroy(&m.zone);
  return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fz z = {data, size};
  uint8_t c0 = fz_u8(&z), c1 = fz_u8(&z);
  static const unsigned nfut[] = {1, 2, 3, 3};
  unsigned n = nfut[c0 & 3], chunks = c0 >> 6, items = 0;
  size_t max = c1 & 1 ? 1024 : (size_t)1 << 20;
  fp_future *fs[FZ_MAXF];
  answers as;
  int fds[2];

  fz_alloc_n = 0;
  fz_alloc_fail_at = fz_u8(&z);
  find_answers(z.p, z.n, max, &as);

  ring_fill(z.p, z.n);
  fp_pool *p = pool_new(max);
  fp__slot *s = &p->slots[0];
  fz_pipe(fds);
  pipe_reset(p, 0);
  s->state = c0 & 4 ? SLOT_STARTING : SLOT_LIVE;
  s->pid = FZ_PID;
  s->pipe.out_fd = fds[0];
  s->can_recv = 1;
  for (unsigned i = 0; i < n; i++) {
    fp_future *f = fs[i] = fp__future_new(p);
    FZ_CHECK(f != NULL);
    f->id = i + 1;
    f->state = FP_RUNNING;
    f->slot = 0;
    if ((chunks == 1 && i == 0) || chunks == 2)
      f->nitems = 2;
    else if (chunks == 3 && i == 0)
      f->nitems = 3;
    items += f->nitems;
    fp__list_push(&s->head, &s->tail, f);
    s->inflight++;
    s->assigned++;
  }
  if (c0 & 8)
    s->send = s->tail;

  /* The worker writes; the dispatcher reads whenever poll() would say so. */
  size_t off = 0;
  for (unsigned k = 0; off < z.n && s->pipe.out_fd >= 0; k++) {
    fz_write_some(fds[1], z.p, z.n, &off, fz_piece(c1 >> 1, k));
    pipe_recv(p, 0);
  }
  if (c0 & 16) {
    close(fds[1]);
    fds[1] = -1;
    pipe_recv(p, 0);
  }
  /* The fork server reports its exit; the pool lets go of the rest. */
  p->stopping = 1;
  slot_exited(p, 0, FZ_PID, c0 & 32 ? SIGKILL : 0);
  fail_queue(p, FP_ECANCELLED, "harness: the pool is shutting down");
  if (fds[1] >= 0)
    close(fds[1]);
  FZ_CHECK(s->pipe.out_fd < 0 && s->pipe.in_fd < 0 && s->head == NULL);

  unsigned seen_ok = 0;
  for (unsigned i = 0; i < n; i++) {
    fp_future *f = fs[i];
    FZ_CHECK(fp__future_is_done(f));
    if (f->state == FP_FINISHED) {
      /* A number, nil or bool keeps no body: it is all in the object. */
      FZ_CHECK(f->err == 0);
      FZ_CHECK(f->result_buf != NULL || f->result.type == MSGPACK_OBJECT_NIL ||
               f->result.type == MSGPACK_OBJECT_BOOLEAN ||
               f->result.type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
               f->result.type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
               f->result.type == MSGPACK_OBJECT_FLOAT32 ||
               f->result.type == MSGPACK_OBJECT_FLOAT64);
      FZ_CHECK(answered(&as, f->id, 0));
    } else {
      FZ_CHECK(f->state == (f->err == FP_ECANCELLED ? FP_CANCELLED
                                                    : FP_FAILED));
      FZ_CHECK(f->err < 0 && f->err > -5000);
      FZ_CHECK(pool_code(f->err) || answered(&as, f->id, f->err));
      FZ_CHECK(fp_future_error(f) != NULL);
    }
    seen_ok += map_items(f);
  }
  FZ_CHECK(p->st.finished + p->st.failed + p->st.cancelled == items);
  FZ_CHECK(p->st.finished == seen_ok);

  for (unsigned i = 0; i < n; i++)
    fp_future_release(fs[i]);
  fz_pool_free(p);
  return 0;
}

/*
 * The messages between the dispatcher and a worker, in msgpack.  A body is a
 * short stream of msgpack objects rather than one array, so a payload is
 * copied into a frame as the bytes the caller gave and read back in place,
 * never re-encoded.  The heads are written and read here by hand, without a
 * packer callback or a zone: they cost a few bytes per task, and a zone is a
 * malloc and a free.
 */
#include "forkpool-private.h"

#include <endian.h>
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */
#include <stdlib.h>
#include <string.h>

/* Writes v big-endian in width bytes. */
static void store_be(unsigned char *p, unsigned width, uint64_t v)
{
  for (unsigned b = 0; b < width; b++)
    p[b] = (unsigned char)(v >> 8 * (width - 1 - b));
}

/* Writes v as msgpack_pack_uint64 does: in the fewest bytes. */
static size_t put_uint(unsigned char *p, uint64_t v)
{
  if (v <= 0x7f) {
    p[0] = (unsigned char)v;
    return 1;
  }
  unsigned k = v <= 0xff ? 0 : v <= 0xffff ? 1 : v <= 0xffffffff ? 2 : 3;
  p[0] = (unsigned char)(0xcc + k); /* uint 8, 16, 32, 64 */
  store_be(p + 1, 1u << k, v);
  return 1 + (1u << k);
}

/* Writes a str header as msgpack_pack_str does. */
static size_t put_str_head(unsigned char *p, uint32_t n)
{
  if (n < 32) {
    p[0] = (unsigned char)(0xa0 | n); /* fixstr */
    return 1;
  }
  unsigned k = n <= 0xff ? 0 : n <= 0xffff ? 1 : 2;
  p[0] = (unsigned char)(0xd9 + k); /* str 8, 16, 32 */
  store_be(p + 1, 1u << k, n);
  return 1 + (1u << k);
}

/*
 * A TASK frame's prefix is four short values, written by hand straight into
 * the frame: the same bytes as msgpack's packer gives, without a callback
 * per value.  Here, the most they can take.
 */
size_t fp__task_frame_max(size_t name_len, size_t args_len)
{
  /* type, id, str header, name, n: at most 1 + 9 + 5 + name_len + 5. */
  return FP__HDR + 20 + name_len + args_len;
}

/* type, id, name and n: the head both kinds of TASK share.  Its length. */
static size_t put_task_head(unsigned char *p, int type, uint64_t id,
                            const char *name, size_t name_len, unsigned n)
{
  size_t h = 0;
  p[h++] = (unsigned char)type; /* a positive fixint */
  h += put_uint(p + h, id);
  h += put_str_head(p + h, (uint32_t)name_len);
  memcpy(p + h, name, name_len); /* a msgpack str has no NUL */
  h += name_len;
  h += put_uint(p + h, n);
  return h;
}

int fp__encode_task(uint64_t id, const char *name, unsigned n,
                    const void *args, size_t args_len, fp__spare *spare,
                    char **frame, size_t *frame_len)
{
  size_t name_len = strnlen(name, (size_t)UINT32_MAX + 1);
  if (name_len > UINT32_MAX)
    return FP_EINVAL;
  char *buf = *frame;
  if (buf == NULL &&
      (buf = fp__buf_take(spare, fp__task_frame_max(name_len, args_len))) ==
          NULL)
    return FP_ENOMEM;
  unsigned char *p = (unsigned char *)buf + FP__HDR;
  size_t h = put_task_head(p, FP__MSG_TASK, id, name, name_len, n);
  memcpy(p + h, args, args_len);
  fp__frame_seal(buf, h + args_len);
  *frame = buf;
  *frame_len = FP__HDR + h + args_len;
  return 0;
}

int fp__encode_task_shm(uint64_t id, const char *name, unsigned n, size_t off,
                        size_t args_len, char *frame, size_t *frame_len)
{
  size_t name_len = strnlen(name, (size_t)UINT32_MAX + 1);
  if (name_len > UINT32_MAX)
    return FP_EINVAL;
  unsigned char *p = (unsigned char *)frame + FP__HDR;
  size_t h = put_task_head(p, FP__MSG_TASK_SHM, id, name, name_len, n);
  h += put_uint(p + h, off);
  h += put_uint(p + h, args_len);
  fp__frame_seal(frame, h);
  *frame_len = FP__HDR + h;
  return 0;
}

/* Reads an n-byte (1, 2, 4 or 8) big-endian number at *i.  Always inline:
 * a call would cost more than the load, on every integer and header. */
static inline __attribute__((always_inline)) int
load_be(const unsigned char *p, size_t len, size_t *i, unsigned n, uint64_t *v)
{
  if (len - *i < n)
    return FP_EPROTO;
  const unsigned char *q = p + *i;
  uint16_t x16;
  uint32_t x32;
  uint64_t x64;
  switch (n) { /* one load each, not a loop: heads are read per task */
  case 1:
    *v = q[0];
    break;
  case 2:
    memcpy(&x16, q, 2);
    *v = be16toh(x16);
    break;
  case 4:
    memcpy(&x32, q, 4);
    *v = be32toh(x32);
    break;
  default:
    memcpy(&x64, q, 8);
    *v = be64toh(x64);
  }
  *i += n;
  return 0;
}

/*
 * Reads an integer of any width at *off.  As in msgpack-c, only a signed
 * encoding of a value below zero is negative (*neg); *v holds its bits.
 */
static inline int read_int(const char *buf, size_t len, size_t *off,
                           int *neg, uint64_t *v)
{
  const unsigned char *p = (const unsigned char *)buf;
  size_t i = *off;
  if (i >= len)
    return FP_EPROTO;
  unsigned c = p[i++];
  uint64_t x;
  int sign = 0; /* a signed encoding */
  if (c <= 0x7f) {
    x = c; /* positive fixint */
  } else if (c >= 0xe0) {
    x = (uint64_t)c - 0x100, sign = 1; /* negative fixint, wrapped */
  } else if (c >= 0xcc && c <= 0xd3) { /* uint, then int, 8 to 64 bits */
    unsigned width = 1u << (c & 3);
    if (load_be(p, len, &i, width, &x) != 0)
      return FP_EPROTO;
    sign = c >= 0xd0;
    if (sign && width < 8 && x >> (8 * width - 1))
      x |= ~(uint64_t)0 << 8 * width; /* sign-extend */
  } else {
    return FP_EPROTO;
  }
  *neg = sign && x >> 63;
  *v = x;
  *off = i;
  return 0;
}

int fp__read_uint(const char *buf, size_t len, size_t *off, uint64_t *v)
{
  int neg;
  size_t i = *off;
  if (read_int(buf, len, &i, &neg, v) != 0 || neg)
    return FP_EPROTO;
  *off = i;
  return 0;
}

int fp__read_code(const char *buf, size_t len, size_t *off, int *code)
{
  int neg;
  uint64_t v;
  size_t i = *off;
  if (read_int(buf, len, &i, &neg, &v) != 0)
    return FP_EPROTO;
  if (neg ? (int64_t)v <= -5000 : v != 0)
    return FP_EPROTO;
  *code = (int)(int64_t)v;
  *off = i;
  return 0;
}

int fp__is_worker_code(int code)
{
  return code == FP_ETASK || code == FP_ENOTASK || code == FP_EMSGSIZE;
}

/* Reads a str (str != 0) or a bin at *off; its bytes must all be there. */
static int read_blob(const char *buf, size_t len, size_t *off, int str,
                     const char **s, size_t *n)
{
  const unsigned char *p = (const unsigned char *)buf;
  size_t i = *off;
  uint64_t size;
  if (i >= len)
    return FP_EPROTO;
  unsigned c = p[i++], first = str ? 0xd9 : 0xc4; /* str 8 or bin 8 */
  if (str && c >= 0xa0 && c <= 0xbf)
    size = c & 0x1f; /* fixstr */
  else if (c < first || c > first + 2 ||
           load_be(p, len, &i, 1u << (c - first), &size) != 0)
    return FP_EPROTO;
  if (size > len - i)
    return FP_EPROTO;
  *s = buf + i;
  *n = (size_t)size;
  *off = i + size;
  return 0;
}

int fp__read_str(const char *buf, size_t len, size_t *off, const char **s,
                 size_t *n)
{
  return read_blob(buf, len, off, 1, s, n);
}

/* Reads a float 32 or 64 at *off, whose first byte is 0xca or 0xcb, as
 * msgpack-c does: a float 32 is widened to a double (a signalling NaN comes
 * out quiet, as it does from msgpack-c). */
static int read_float(const char *buf, size_t len, size_t *off,
                      msgpack_object *o)
{
  const unsigned char *p = (const unsigned char *)buf;
  size_t i = *off + 1;
  uint64_t bits;
  int f32 = p[*off] == 0xca;
  if (load_be(p, len, &i, f32 ? 4 : 8, &bits) != 0)
    return FP_EPROTO;
  if (f32) {
    uint32_t b32 = (uint32_t)bits;
    float x;
    memcpy(&x, &b32, sizeof x);
    o->type = MSGPACK_OBJECT_FLOAT32;
    o->via.f64 = x;
  } else {
    o->type = MSGPACK_OBJECT_FLOAT64;
    memcpy(&o->via.f64, &bits, sizeof bits);
  }
  *off = i;
  return 0;
}

/* fp__read_plain for all but the integers: kept out of line, so that the
 * usual result, a number, costs a map item few instructions. */
static __attribute__((noinline)) int read_plain_rest(const char *buf,
                                                     size_t len, size_t *off,
                                                     msgpack_object *o)
{
  size_t n;
  if (*off >= len)
    return FP_EPROTO;
  unsigned c = (unsigned char)buf[*off];
  if (c == 0xc0 || c == 0xc2 || c == 0xc3) {
    o->type = c == 0xc0 ? MSGPACK_OBJECT_NIL : MSGPACK_OBJECT_BOOLEAN;
    o->via.boolean = c == 0xc3;
    ++*off;
  } else if (c == 0xca || c == 0xcb) {
    return read_float(buf, len, off, o);
  } else if (read_blob(buf, len, off, 1, &o->via.str.ptr, &n) == 0) {
    o->type = MSGPACK_OBJECT_STR;
    o->via.str.size = (uint32_t)n;
  } else if (read_blob(buf, len, off, 0, &o->via.bin.ptr, &n) == 0) {
    o->type = MSGPACK_OBJECT_BIN;
    o->via.bin.size = (uint32_t)n;
  } else {
    return FP_EPROTO;
  }
  return 0;
}

int fp__read_plain(const char *buf, size_t len, size_t *off,
                   msgpack_object *o)
{
  int neg;
  if (read_int(buf, len, off, &neg, &o->via.u64) != 0)
    return read_plain_rest(buf, len, off, o);
  o->type = neg ? MSGPACK_OBJECT_NEGATIVE_INTEGER
                : MSGPACK_OBJECT_POSITIVE_INTEGER;
  return 0;
}

int fp__read_array(const char *buf, size_t len, size_t *off, uint32_t *n)
{
  const unsigned char *p = (const unsigned char *)buf;
  size_t i = *off;
  uint64_t size;
  if (i >= len)
    return FP_EPROTO;
  unsigned c = p[i++];
  if (c >= 0x90 && c <= 0x9f)
    size = c & 0x0f;
  else if ((c != 0xdc && c != 0xdd) || load_be(p, len, &i, c == 0xdc ? 2 : 4,
                                               &size))
    return FP_EPROTO; /* not an array 16 or 32 */
  *n = (uint32_t)size;
  *off = i;
  return 0;
}

/* Reads the type and id every body starts with: *type is the one wanted
 * (UINT64_MAX: any), and the one read.  0, or FP_EPROTO. */
static int decode_head(const char *body, size_t len, size_t *off,
                       uint64_t *type, uint64_t *id)
{
  uint64_t t;
  if (fp__read_uint(body, len, off, &t) != 0 || (*type != UINT64_MAX && t != *type) ||
      fp__read_uint(body, len, off, id) != 0)
    return FP_EPROTO;
  *type = t;
  return 0;
}

int fp__decode_task(const char *body, size_t len, const char *shm,
                    size_t shm_len, uint64_t *id, const char **name,
                    size_t *name_len, unsigned *n, const char **args,
                    size_t *args_len)
{
  size_t off = 0;
  uint64_t type = UINT64_MAX, count, at, size;
  /* As fp__task_name_ok: not empty, not too long. */
  if (decode_head(body, len, &off, &type, id) != 0 ||
      (type != FP__MSG_TASK && type != FP__MSG_TASK_SHM) ||
      fp__read_str(body, len, &off, name, name_len) != 0 || *name_len == 0 ||
      *name_len > FP__MAX_NAME || fp__read_uint(body, len, &off, &count) != 0 ||
      count == 0 || count > UINT32_MAX || off >= len)
    return FP_EPROTO;
  *n = (unsigned)count;
  if (type == FP__MSG_TASK) {
    *args = body + off;
    *args_len = len - off;
    return 0;
  }
  /* The bytes must lie inside the area, and the frame end after them. */
  if (shm == NULL || fp__read_uint(body, len, &off, &at) != 0 ||
      fp__read_uint(body, len, &off, &size) != 0 || off != len ||
      size == 0 || at > shm_len || size > shm_len - at)
    return FP_EPROTO;
  *args = shm + at;
  *args_len = (size_t)size;
  return 0;
}

int fp__encode_result_head(msgpack_sbuffer *sb, uint64_t id, int code)
{
  static const char no_header[FP__HDR];
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  if (msgpack_sbuffer_write(sb, no_header, FP__HDR) ||
      msgpack_pack_int(&pk, FP__MSG_RESULT) || msgpack_pack_uint64(&pk, id) ||
      msgpack_pack_int(&pk, code))
    return FP_ENOMEM;
  return 0;
}

int fp__decode_result_head(const char *body, size_t len, uint64_t *id,
                           int *code, size_t *off)
{
  *off = 0;
  uint64_t type = FP__MSG_RESULT;
  if (decode_head(body, len, off, &type, id) != 0 ||
      fp__read_code(body, len, off, code) != 0)
    return FP_EPROTO;
  return 0;
}

size_t fp__encode_result_shm(char frame[FP__RESULT_SHM_MAX], uint64_t id,
                             uint64_t pos, size_t len)
{
  unsigned char *p = (unsigned char *)frame + FP__HDR;
  size_t h = 0;
  p[h++] = FP__MSG_RESULT_SHM; /* a positive fixint */
  h += put_uint(p + h, id);
  h += put_uint(p + h, pos);
  h += put_uint(p + h, len);
  fp__frame_seal(frame, h);
  return FP__HDR + h;
}

int fp__decode_result_shm(const char *body, size_t len, uint64_t *id,
                          uint64_t *pos, size_t *rlen)
{
  size_t off = 0;
  uint64_t type = FP__MSG_RESULT_SHM, n;
  if (decode_head(body, len, &off, &type, id) != 0 ||
      fp__read_uint(body, len, &off, pos) != 0 ||
      fp__read_uint(body, len, &off, &n) != 0 || off != len || n > SIZE_MAX)
    return FP_EPROTO;
  *rlen = (size_t)n;
  return 0;
}

/*
 * msgpack is self-delimiting, so finding where an object ends needs no
 * zone and no msgpack_object: a byte or two per scalar.  The scans below
 * accept exactly what msgpack_unpack accepts, nesting limit included: one
 * over a contiguous buffer, one through a cursor over a list of pieces (a
 * worker's result that is partly copied bytes and partly runs of its TASK
 * body, where a header may straddle two pieces).  The format itself is in
 * one place, the table heads.
 */
enum head_kind { HEAD_BYTES, HEAD_EXT, HEAD_ITEMS, HEAD_PAIRS, HEAD_BAD };

/* What a header byte c says: a count n, in the next lenbytes bytes (1, 2
 * or 4) or else fixed + (c & mask), and what n counts. */
typedef struct head {
  unsigned char kind;     /* bytes, ext bytes less the type byte, items, or
                             key-value pairs */
  unsigned char lenbytes;
  unsigned char fixed;
  unsigned char mask;
} head;

#define H(k, l, f, m) {HEAD_##k, l, f, m}
static const head heads[256] = {
    [0x00 ... 0x7f] = H(BYTES, 0, 0, 0),    /* positive fixint */
    [0x80 ... 0x8f] = H(PAIRS, 0, 0, 0x0f), /* fixmap */
    [0x90 ... 0x9f] = H(ITEMS, 0, 0, 0x0f), /* fixarray */
    [0xa0 ... 0xbf] = H(BYTES, 0, 0, 0x1f), /* fixstr */
    [0xc0] = H(BYTES, 0, 0, 0),             /* nil */
    [0xc1] = H(BAD, 0, 0, 0),               /* never used */
    [0xc2 ... 0xc3] = H(BYTES, 0, 0, 0),    /* false, true */
    [0xc4] = H(BYTES, 1, 0, 0),             /* bin 8, 16, 32 */
    [0xc5] = H(BYTES, 2, 0, 0),
    [0xc6] = H(BYTES, 4, 0, 0),
    [0xc7] = H(EXT, 1, 0, 0),               /* ext 8, 16, 32 */
    [0xc8] = H(EXT, 2, 0, 0),
    [0xc9] = H(EXT, 4, 0, 0),
    [0xca] = H(BYTES, 0, 4, 0),             /* float 32, 64 */
    [0xcb] = H(BYTES, 0, 8, 0),
    [0xcc] = H(BYTES, 0, 1, 0),             /* uint 8 .. 64 */
    [0xcd] = H(BYTES, 0, 2, 0),
    [0xce] = H(BYTES, 0, 4, 0),
    [0xcf] = H(BYTES, 0, 8, 0),
    [0xd0] = H(BYTES, 0, 1, 0),             /* int 8 .. 64 */
    [0xd1] = H(BYTES, 0, 2, 0),
    [0xd2] = H(BYTES, 0, 4, 0),
    [0xd3] = H(BYTES, 0, 8, 0),
    [0xd4] = H(BYTES, 0, 2, 0),             /* fixext: type + 1 .. 16 */
    [0xd5] = H(BYTES, 0, 3, 0),
    [0xd6] = H(BYTES, 0, 5, 0),
    [0xd7] = H(BYTES, 0, 9, 0),
    [0xd8] = H(BYTES, 0, 17, 0),
    [0xd9] = H(BYTES, 1, 0, 0),             /* str 8, 16, 32 */
    [0xda] = H(BYTES, 2, 0, 0),
    [0xdb] = H(BYTES, 4, 0, 0),
    [0xdc] = H(ITEMS, 2, 0, 0),             /* array 16, 32 */
    [0xdd] = H(ITEMS, 4, 0, 0),
    [0xde] = H(PAIRS, 2, 0, 0),             /* map 16, 32 */
    [0xdf] = H(PAIRS, 4, 0, 0),
    [0xe0 ... 0xff] = H(BYTES, 0, 0, 0),    /* negative fixint */
};
#undef H

/* The open containers of a scan and the items each still expects. */
typedef struct nest {
  uint64_t left[MSGPACK_EMBED_STACK_SIZE];
  unsigned top;
} nest;

/*
 * After an object's head (its bytes skipped, rest of them left in the
 * input): 0 with *whole set once the outermost object is whole (0: read
 * on), FP__EDEEP when a container is nested too deep, FP_EPROTO when it
 * cannot fit what is left.
 */
static inline __attribute__((always_inline)) int nest_step(nest *s, head h,
                                                         uint64_t n,
                                                         size_t rest,
                                                         int *whole)
{
  *whole = 0;
  if (h.kind == HEAD_ITEMS || h.kind == HEAD_PAIRS) {
    uint64_t items = h.kind == HEAD_PAIRS ? 2 * n : n;
    /* msgpack-c refuses even an empty container this deep. */
    if (s->top >= MSGPACK_EMBED_STACK_SIZE)
      return FP__EDEEP;
    if (items > rest)
      return FP_EPROTO;
    if (items > 0) {
      s->left[s->top++] = items;
      return 0;
    }
  }
  /* An object ended: close every container it completes. */
  while (s->top > 0 && --s->left[s->top - 1] == 0)
    s->top--;
  *whole = s->top == 0;
  return 0;
}

/* The bytes an object of head h and count n carries after its head. */
static uint64_t payload(head h, uint64_t n)
{
  if (h.kind == HEAD_EXT)
    return n + 1; /* the type byte */
  return h.kind == HEAD_BYTES ? n : 0;
}

int fp__skip_object(const char *buf, size_t len, size_t *off)
{
  const unsigned char *p = (const unsigned char *)buf;
  nest s;
  s.top = 0; /* left[] is written before it is read */
  size_t i = *off;
  for (;;) {
    if (i >= len)
      return FP_EPROTO;
    unsigned c = p[i++];
    head h = heads[c];
    uint64_t n = h.fixed + (c & h.mask);
    if (h.kind == HEAD_BAD ||
        (h.lenbytes && load_be(p, len, &i, h.lenbytes, &n) != 0))
      return FP_EPROTO;
    uint64_t skip = payload(h, n);
    if (skip > len - i)
      return FP_EPROTO;
    i += skip;
    int whole;
    if (nest_step(&s, h, n, len - i, &whole) != 0)
      return FP_EPROTO;
    if (whole) {
      *off = i;
      return 0;
    }
  }
}

int fp__count_objects(const char *buf, size_t len, size_t *n)
{
  size_t off = 0;
  *n = 0;
  while (off < len) {
    if (fp__skip_object(buf, len, &off) != 0)
      return FP_EINVAL;
    ++*n;
  }
  return 0;
}

/* A read position in a list of pieces. */
typedef struct seg_cursor {
  const struct iovec *iov; /* the piece holding the next byte */
  size_t off;              /* into it */
  size_t left;             /* bytes from here to the end of the last piece */
} seg_cursor;

static int seg_byte(seg_cursor *c, unsigned *b)
{
  if (c->left == 0)
    return FP_EPROTO;
  while (c->off == c->iov->iov_len) /* left > 0: a later piece has it */
    c->iov++, c->off = 0;
  *b = ((const unsigned char *)c->iov->iov_base)[c->off++];
  c->left--;
  return 0;
}

static int seg_be(seg_cursor *c, unsigned n, uint64_t *v)
{
  unsigned b;
  *v = 0;
  for (unsigned k = 0; k < n; k++) {
    if (seg_byte(c, &b) != 0)
      return FP_EPROTO;
    *v = *v << 8 | b;
  }
  return 0;
}

static int seg_skip(seg_cursor *c, uint64_t n)
{
  if (n > c->left)
    return FP_EPROTO;
  c->left -= n;
  while (n > 0) {
    size_t room = c->iov->iov_len - c->off;
    if (n <= room) {
      c->off += n;
      break;
    }
    n -= room;
    c->iov++, c->off = 0;
  }
  return 0;
}

/* fp__skip_object at the cursor. */
static int seg_skip_object(seg_cursor *c)
{
  nest s;
  s.top = 0; /* left[] is written before it is read */
  for (;;) {
    unsigned c0;
    if (seg_byte(c, &c0) != 0)
      return FP_EPROTO;
    head h = heads[c0];
    uint64_t n = h.fixed + (c0 & h.mask);
    if (h.kind == HEAD_BAD || (h.lenbytes && seg_be(c, h.lenbytes, &n)) ||
        seg_skip(c, payload(h, n)) != 0)
      return FP_EPROTO;
    int whole;
    int rc = nest_step(&s, h, n, c->left, &whole);
    if (rc != 0 || whole)
      return rc;
  }
}

int fp__count_objects_iov(const struct iovec *iov, int iovcnt, size_t *n)
{
  seg_cursor c = {iov, 0, 0};
  for (int k = 0; k < iovcnt; k++)
    c.left += iov[k].iov_len;
  *n = 0;
  while (c.left > 0) {
    int rc = seg_skip_object(&c);
    if (rc != 0)
      return rc == FP__EDEEP ? rc : FP_EINVAL;
    ++*n;
  }
  return 0;
}

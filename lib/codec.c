/*
 * The messages between the dispatcher and a worker, encoded with msgpack-c.
 * A body is a short stream of msgpack objects rather than one array, so a
 * payload is copied into a frame as the bytes the caller gave and read back
 * in place, never re-encoded.
 */
#include "forkpool-private.h"

#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */
#include <stdlib.h>
#include <string.h>

/* A msgpack write callback into a fixed buffer, for the short prefixes. */
typedef struct fixed_buf {
  char data[FP__MAX_NAME + 64];
  size_t len;
} fixed_buf;

static int fixed_write(void *data, const char *buf, size_t len)
{
  fixed_buf *fb = data;
  if (len > sizeof fb->data - fb->len)
    return -1;
  memcpy(fb->data + fb->len, buf, len);
  fb->len += len;
  return 0;
}

int fp__encode_task(uint64_t id, const char *name, unsigned n,
                    const void *args, size_t args_len, char **frame,
                    size_t *frame_len)
{
  fixed_buf head = {.len = 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &head, fixed_write);
  size_t name_len = strlen(name);
  if (msgpack_pack_int(&pk, FP__MSG_TASK) || msgpack_pack_uint64(&pk, id) ||
      msgpack_pack_str_with_body(&pk, name, name_len) ||
      msgpack_pack_unsigned_int(&pk, n))
    return FP_EINVAL;

  size_t body = head.len + args_len;
  char *buf = malloc(FP__HDR + body);
  if (buf == NULL)
    return FP_ENOMEM;
  fp__frame_seal(buf, body);
  memcpy(buf + FP__HDR, head.data, head.len);
  memcpy(buf + FP__HDR + head.len, args, args_len);
  *frame = buf;
  *frame_len = FP__HDR + body;
  return 0;
}

/* Reads one object at *off: 0 or FP_EPROTO when the bytes are not msgpack. */
static int next_object(const char *buf, size_t len, size_t *off,
                       msgpack_zone *z, msgpack_object *obj)
{
  msgpack_unpack_return rc = msgpack_unpack(buf, len, off, z, obj);
  if (rc == MSGPACK_UNPACK_SUCCESS || rc == MSGPACK_UNPACK_EXTRA_BYTES)
    return 0;
  return rc == MSGPACK_UNPACK_NOMEM_ERROR ? FP_ENOMEM : FP_EPROTO;
}

/* Reads the type and id every body starts with. */
static int decode_head(const char *body, size_t len, size_t *off,
                       msgpack_zone *z, int type, uint64_t *id)
{
  msgpack_object o;
  int rc = next_object(body, len, off, z, &o);
  if (rc != 0)
    return rc;
  if (o.type != MSGPACK_OBJECT_POSITIVE_INTEGER || o.via.u64 != (uint64_t)type)
    return FP_EPROTO;
  if ((rc = next_object(body, len, off, z, &o)) != 0)
    return rc;
  if (o.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return FP_EPROTO;
  *id = o.via.u64;
  return 0;
}

int fp__decode_task(const char *body, size_t len, msgpack_zone *z,
                    uint64_t *id, const char **name, size_t *name_len,
                    unsigned *n, const char **args, size_t *args_len)
{
  size_t off = 0;
  msgpack_object o;
  int rc = decode_head(body, len, &off, z, FP__MSG_TASK, id);
  if (rc != 0)
    return rc;
  if ((rc = next_object(body, len, &off, z, &o)) != 0)
    return rc;
  /* As fp__task_name_ok: msgpack gives an empty str a NULL pointer. */
  if (o.type != MSGPACK_OBJECT_STR || o.via.str.size == 0 ||
      o.via.str.size > FP__MAX_NAME)
    return FP_EPROTO;
  *name = o.via.str.ptr;
  *name_len = o.via.str.size;
  if ((rc = next_object(body, len, &off, z, &o)) != 0)
    return rc;
  if (o.type != MSGPACK_OBJECT_POSITIVE_INTEGER || o.via.u64 == 0 ||
      o.via.u64 > UINT32_MAX)
    return FP_EPROTO;
  *n = (unsigned)o.via.u64;
  *args = body + off;
  *args_len = len - off;
  return off < len ? 0 : FP_EPROTO;
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
  msgpack_zone z; /* scalars never touch it; initialised for msgpack's sake */
  msgpack_object o;
  int rc;
  if (!msgpack_zone_init(&z, 64))
    return FP_ENOMEM;
  *off = 0;
  rc = decode_head(body, len, off, &z, FP__MSG_RESULT, id);
  if (rc == 0)
    rc = next_object(body, len, off, &z, &o);
  if (rc == 0 && o.type == MSGPACK_OBJECT_POSITIVE_INTEGER && o.via.u64 == 0)
    *code = 0;
  else if (rc == 0 && o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER &&
           o.via.i64 > -5000)
    *code = (int)o.via.i64;
  else if (rc == 0)
    rc = FP_EPROTO;
  msgpack_zone_destroy(&z);
  return rc;
}

/* Reads an n-byte big-endian length at *i. */
static int load_be(const unsigned char *p, size_t len, size_t *i, unsigned n,
                   uint64_t *v)
{
  if (len - *i < n)
    return FP_EPROTO;
  uint64_t x = 0;
  for (unsigned k = 0; k < n; k++)
    x = x << 8 | p[*i + k];
  *i += n;
  *v = x;
  return 0;
}

/*
 * msgpack is self-delimiting, so finding where an object ends needs no
 * zone and no msgpack_object: a byte or two per scalar.  It accepts exactly
 * what msgpack_unpack accepts, nesting limit included.
 */
int fp__skip_object(const char *buf, size_t len, size_t *off)
{
  const unsigned char *p = (const unsigned char *)buf;
  uint64_t left[MSGPACK_EMBED_STACK_SIZE]; /* items due in each open one */
  unsigned top = 0;
  size_t i = *off;
  for (;;) {
    if (i >= len)
      return FP_EPROTO;
    unsigned c = p[i++];
    uint64_t skip = 0, items = 0, v = 0;
    int container = 0, rc = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
      /* fixint, nil, bool: the byte itself */
    } else if (c <= 0x8f) {
      items = 2 * (uint64_t)(c & 0x0f), container = 1;
    } else if (c <= 0x9f) {
      items = c & 0x0f, container = 1;
    } else if (c <= 0xbf) {
      skip = c & 0x1f;
    } else {
      switch (c) {
      case 0xc4: case 0xd9: rc = load_be(p, len, &i, 1, &skip); break;
      case 0xc5: case 0xda: rc = load_be(p, len, &i, 2, &skip); break;
      case 0xc6: case 0xdb: rc = load_be(p, len, &i, 4, &skip); break;
      case 0xc7: rc = load_be(p, len, &i, 1, &v), skip = v + 1; break;
      case 0xc8: rc = load_be(p, len, &i, 2, &v), skip = v + 1; break;
      case 0xc9: rc = load_be(p, len, &i, 4, &v), skip = v + 1; break;
      case 0xcc: case 0xd0: skip = 1; break;
      case 0xcd: case 0xd1: skip = 2; break;
      case 0xca: case 0xce: case 0xd2: skip = 4; break;
      case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
      case 0xd4: skip = 2; break;
      case 0xd5: skip = 3; break;
      case 0xd6: skip = 5; break;
      case 0xd7: skip = 9; break;
      case 0xd8: skip = 17; break;
      case 0xdc: rc = load_be(p, len, &i, 2, &items), container = 1; break;
      case 0xdd: rc = load_be(p, len, &i, 4, &items), container = 1; break;
      case 0xde: rc = load_be(p, len, &i, 2, &v), items = 2 * v, container = 1;
        break;
      case 0xdf: rc = load_be(p, len, &i, 4, &v), items = 2 * v, container = 1;
        break;
      default: return FP_EPROTO; /* 0xc1, never used */
      }
      if (rc != 0)
        return rc;
    }
    if (skip > len - i)
      return FP_EPROTO;
    i += skip;
    if (container) {
      /* msgpack-c refuses even an empty container this deep. */
      if (top >= MSGPACK_EMBED_STACK_SIZE || items > len - i)
        return FP_EPROTO;
      if (items > 0) {
        left[top++] = items;
        continue;
      }
    }
    /* An object ended: close every container it completes. */
    while (top > 0 && --left[top - 1] == 0)
      top--;
    if (top == 0) {
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

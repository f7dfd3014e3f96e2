/*
 * The messages between the dispatcher and a worker, encoded with msgpack-c.
 * A body is a short stream of msgpack objects rather than one array, so a
 * payload is copied into a frame as the bytes the caller gave and read back
 * in place, never re-encoded.
 */
#include "forkpool-private.h"

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

int fp__count_objects(const char *buf, size_t len, size_t *n)
{
  msgpack_zone z;
  msgpack_object o;
  size_t off = 0;
  int rc = 0;
  if (!msgpack_zone_init(&z, 1024))
    return FP_ENOMEM;
  *n = 0;
  while (off < len && rc == 0) {
    rc = next_object(buf, len, &off, &z, &o);
    if (rc == 0)
      ++*n;
  }
  msgpack_zone_destroy(&z);
  return rc == FP_EPROTO ? FP_EINVAL : rc;
}

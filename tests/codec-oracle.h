/*
 * The zone-free head readers of lib/codec.c against msgpack-c's own
 * reading, shared by tests/check_codec.c and fuzz/fuzz_skip.c.  The
 * includer defines ORACLE_CHECK(cond), which records or stops at a failure.
 */
#ifndef FP_CODEC_ORACLE_H
#define FP_CODEC_ORACLE_H

/* Whether fp__read_plain's p is msgpack-c's o. */
static int oracle_same_plain(const msgpack_object *p, const msgpack_object *o)
{
  if (p->type != o->type)
    return 0;
  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    return 1;
  case MSGPACK_OBJECT_BOOLEAN:
    return p->via.boolean == o->via.boolean;
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return p->via.u64 == o->via.u64;
  case MSGPACK_OBJECT_FLOAT32: /* the same bits: NaNs are not equal */
  case MSGPACK_OBJECT_FLOAT64:
    return memcmp(&p->via.f64, &o->via.f64, sizeof o->via.f64) == 0;
  case MSGPACK_OBJECT_STR:
  case MSGPACK_OBJECT_BIN: /* msgpack-c gives "" no pointer, or a stale one */
    return p->via.str.size == o->via.str.size &&
           (o->via.str.size == 0 || p->via.str.ptr == o->via.str.ptr);
  default:
    return 0;
  }
}

/*
 * Each reader at off against o, the object msgpack_unpack read there (ok:
 * it read one, ending at end): a reader accepts exactly the objects of its
 * type, with the same value and end, and moves nothing when it refuses.
 */
static void oracle_readers(const char *b, size_t len, size_t off, int ok,
                           size_t end, const msgpack_object *o)
{
  const char *s;
  size_t i, n;
  uint64_t u;
  uint32_t an;
  int code, want;

  i = off;
  want = ok && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
  ORACLE_CHECK((fp__read_uint(b, len, &i, &u) == 0) == want);
  ORACLE_CHECK(i == (want ? end : off));
  ORACLE_CHECK(!want || u == o->via.u64);

  i = off;
  want = ok && ((o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                 o->via.u64 == 0) ||
                (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER &&
                 o->via.i64 > -5000));
  ORACLE_CHECK((fp__read_code(b, len, &i, &code) == 0) == want);
  ORACLE_CHECK(i == (want ? end : off));
  ORACLE_CHECK(!want || code == (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                                     ? 0 : (int)o->via.i64));

  i = off;
  want = ok && o->type == MSGPACK_OBJECT_STR;
  ORACLE_CHECK((fp__read_str(b, len, &i, &s, &n) == 0) == want);
  ORACLE_CHECK(i == (want ? end : off));
  ORACLE_CHECK(!want || n == o->via.str.size);
  ORACLE_CHECK(!want || n == 0 || s == o->via.str.ptr); /* "": no pointer */

  i = off;
  msgpack_object p;
  want = ok && (o->type == MSGPACK_OBJECT_NIL ||
                o->type == MSGPACK_OBJECT_BOOLEAN ||
                o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
                o->type == MSGPACK_OBJECT_FLOAT32 ||
                o->type == MSGPACK_OBJECT_FLOAT64 ||
                o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN);
  ORACLE_CHECK((fp__read_plain(b, len, &i, &p) == 0) == want);
  ORACLE_CHECK(i == (want ? end : off));
  ORACLE_CHECK(!want || oracle_same_plain(&p, o));

  /* Only the header: a bad item fails msgpack, not fp__read_array. */
  i = off;
  int got = fp__read_array(b, len, &i, &an) == 0;
  unsigned char c0 = off < len ? (unsigned char)b[off] : 0;
  ORACLE_CHECK(!(ok && o->type == MSGPACK_OBJECT_ARRAY) ||
               (got && an == o->via.array.size));
  ORACLE_CHECK(!got || c0 / 16 == 9 || c0 == 0xdc || c0 == 0xdd);
  ORACLE_CHECK(got || i == off);
}

#endif

/*
 * fp_pack and fp_unpack: round trips through real msgpack bytes for every
 * letter, and every way a format or an argument can be wrong.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <forkpool.h>

#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Each test packs into sbuf through pk and reads back through result. */
static msgpack_sbuffer sbuf;
static msgpack_packer pk;
static msgpack_unpacked result;

static void setup(void)
{
  msgpack_sbuffer_init(&sbuf);
  msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
  msgpack_unpacked_init(&result);
}

static void teardown(void)
{
  msgpack_unpacked_destroy(&result);
  msgpack_sbuffer_destroy(&sbuf);
}

/* Unpacks sbuf, which must hold exactly one object; valid until sbuf moves. */
static const msgpack_object *one_object(void)
{
  size_t off = 0;
  ck_assert_int_eq(msgpack_unpack_next(&result, sbuf.data, sbuf.size, &off),
                   MSGPACK_UNPACK_SUCCESS);
  ck_assert_uint_eq(off, sbuf.size);
  return &result.data;
}

/* Empties sbuf, packs fmt into it (which must succeed) and unpacks it. */
static const msgpack_object *pack_one(const char *fmt, ...)
{
  va_list ap;
  msgpack_sbuffer_clear(&sbuf);
  va_start(ap, fmt);
  int rc = fp_vpack(&pk, fmt, ap);
  va_end(ap);
  ck_assert_int_eq(rc, 0);
  return one_object();
}

/* fp_pack(&pk, ...) fails with err and leaves sbuf as it was. */
#define ck_pack_fails(err, ...)                                               \
  do {                                                                        \
    size_t size_before_ = sbuf.size;                                          \
    ck_assert_int_eq(fp_pack(&pk, __VA_ARGS__), (err));                       \
    ck_assert_uint_eq(sbuf.size, size_before_);                               \
  } while (0)

/* A string of n copies of open followed by n copies of close. */
static char *nested(size_t n, char open, char close)
{
  char *s = malloc(2 * n + 1);
  ck_assert_ptr_nonnull(s);
  memset(s, open, n);
  memset(s + n, close, n);
  s[2 * n] = '\0';
  return s;
}

/* --- Round trips --------------------------------------------------------- */

START_TEST(test_nil)
{
  const msgpack_object *o = pack_one("n");
  ck_assert_int_eq(o->type, MSGPACK_OBJECT_NIL);
  ck_assert_int_eq(fp_unpack(o, "n"), 0);
}
END_TEST

START_TEST(test_bool)
{
  int t = -1, f = -1, other = -1;
  const msgpack_object *o = pack_one("[b b b]", 1, 0, 42);
  ck_assert_int_eq(o->via.array.ptr[2].type, MSGPACK_OBJECT_BOOLEAN);
  ck_assert_int_eq(fp_unpack(o, "[b b b]", &t, &f, &other), 0);
  ck_assert_int_eq(t, 1);
  ck_assert_int_eq(f, 0);
  ck_assert_int_eq(other, 1); /* any non-zero int packs as true */
}
END_TEST

START_TEST(test_int)
{
  int a = 1, b = 1, c = 1, d = 1;
  const msgpack_object *o = pack_one("[i i i i]", INT_MIN, -1, 0, INT_MAX);
  ck_assert_int_eq(fp_unpack(o, "[i i i i]", &a, &b, &c, &d), 0);
  ck_assert_int_eq(a, INT_MIN);
  ck_assert_int_eq(b, -1);
  ck_assert_int_eq(c, 0);
  ck_assert_int_eq(d, INT_MAX);
}
END_TEST

START_TEST(test_int64)
{
  int64_t lo = 0, hi = 0, small = 0;
  const msgpack_object *o =
      pack_one("[I I I]", INT64_MIN, INT64_MAX, (int64_t)-7);
  ck_assert_int_eq(o->via.array.ptr[0].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
  ck_assert_int_eq(fp_unpack(o, "[I I I]", &lo, &hi, &small), 0);
  ck_assert_int_eq(lo, INT64_MIN);
  ck_assert_int_eq(hi, INT64_MAX);
  ck_assert_int_eq(small, -7);
}
END_TEST

START_TEST(test_unsigned)
{
  unsigned zero = 1, max = 0;
  uint64_t big = 0, mid = 0;
  const msgpack_object *o = pack_one("[u u U U]", 0u, UINT_MAX, UINT64_MAX,
                                     (uint64_t)1 << 40);
  ck_assert_int_eq(fp_unpack(o, "[u u U U]", &zero, &max, &big, &mid), 0);
  ck_assert_uint_eq(zero, 0);
  ck_assert_uint_eq(max, UINT_MAX);
  ck_assert_uint_eq(big, UINT64_MAX);
  ck_assert_uint_eq(mid, (uint64_t)1 << 40);
}
END_TEST

START_TEST(test_double)
{
  double a = 0, b = 0, c = 0;
  const msgpack_object *o = pack_one("[f f f]", -0.5, 1e300, 3.0);
  ck_assert_int_eq(o->via.array.ptr[0].type, MSGPACK_OBJECT_FLOAT64);
  ck_assert_int_eq(fp_unpack(o, "[f f f]", &a, &b, &c), 0);
  ck_assert_double_eq(a, -0.5);
  ck_assert_double_eq(b, 1e300);
  ck_assert_double_eq(c, 3.0);
}
END_TEST

START_TEST(test_double_from_int_and_float32)
{
  double a = 0, b = 0;
  const msgpack_object *o = pack_one("[i U]", -12, (uint64_t)1 << 60);
  ck_assert_int_eq(fp_unpack(o, "[f f]", &a, &b), 0);
  ck_assert_double_eq(a, -12.0);
  ck_assert_double_eq(b, 1152921504606846976.0);

  msgpack_object f32 = {.type = MSGPACK_OBJECT_FLOAT32, .via.f64 = 0.25};
  ck_assert_int_eq(fp_unpack(&f32, "f", &a), 0);
  ck_assert_double_eq(a, 0.25);
}
END_TEST

START_TEST(test_string)
{
  const char *s = NULL, *empty = NULL;
  size_t len = 0, empty_len = 1;
  const msgpack_object *o = pack_one("[s s]", "hello", "");
  ck_assert_int_eq(o->via.array.ptr[0].type, MSGPACK_OBJECT_STR);
  ck_assert_int_eq(fp_unpack(o, "[s s]", &s, &len, &empty, &empty_len), 0);
  ck_assert_uint_eq(len, 5);
  ck_assert_mem_eq(s, "hello", 5);
  ck_assert_uint_eq(empty_len, 0);
}
END_TEST

START_TEST(test_string_with_length)
{
  const char *s = NULL;
  size_t len = 0;
  /* s# takes the length given, NUL bytes included, and stops there. */
  const msgpack_object *o = pack_one("s#", "a\0b-not-this", (size_t)3);
  ck_assert_int_eq(fp_unpack(o, "s", &s, &len), 0);
  ck_assert_uint_eq(len, 3);
  ck_assert_mem_eq(s, "a\0b", 3);
  /* s points into the object: it is not a copy. */
  ck_assert_ptr_eq(s, o->via.str.ptr);

  o = pack_one("s#", (const char *)NULL, (size_t)0);
  ck_assert_int_eq(fp_unpack(o, "s", &s, &len), 0);
  ck_assert_uint_eq(len, 0);
}
END_TEST

START_TEST(test_bin)
{
  const unsigned char bytes[] = {0, 1, 2, 0xff};
  const void *p = NULL, *q = NULL;
  size_t len = 0, qlen = 1;
  const msgpack_object *o = pack_one("[y y]", bytes, sizeof bytes,
                                     (const void *)NULL, (size_t)0);
  ck_assert_int_eq(o->via.array.ptr[0].type, MSGPACK_OBJECT_BIN);
  ck_assert_int_eq(fp_unpack(o, "[y y]", &p, &len, &q, &qlen), 0);
  ck_assert_uint_eq(len, sizeof bytes);
  ck_assert_mem_eq(p, bytes, sizeof bytes);
  ck_assert_uint_eq(qlen, 0);
}
END_TEST

START_TEST(test_bin_1mib)
{
  size_t n = (size_t)1 << 20;
  unsigned char *big = malloc(n);
  ck_assert_ptr_nonnull(big);
  for (size_t i = 0; i < n; i++)
    big[i] = (unsigned char)(i * 31 + 7);
  const void *p = NULL;
  size_t len = 0;
  const msgpack_object *o = pack_one("y", big, n);
  ck_assert_int_eq(fp_unpack(o, "y", &p, &len), 0);
  ck_assert_uint_eq(len, n);
  ck_assert_int_eq(memcmp(p, big, n), 0);
  free(big);
}
END_TEST

START_TEST(test_object)
{
  /* Build an object in a buffer of its own, then embed it with O. */
  msgpack_sbuffer other;
  msgpack_packer opk;
  msgpack_unpacked inner;
  msgpack_sbuffer_init(&other);
  msgpack_packer_init(&opk, &other, msgpack_sbuffer_write);
  msgpack_unpacked_init(&inner);
  ck_assert_int_eq(fp_pack(&opk, "{s:[i s] s:n}", "k", 5, "v", "z"), 0);
  size_t off = 0;
  ck_assert_int_eq(msgpack_unpack_next(&inner, other.data, other.size, &off),
                   MSGPACK_UNPACK_SUCCESS);

  const msgpack_object *o = pack_one("[i O]", 1, &inner.data);
  const msgpack_object *got = NULL;
  int one = 0;
  ck_assert_int_eq(fp_unpack(o, "[i o]", &one, &got), 0);
  ck_assert_int_eq(one, 1);
  ck_assert_ptr_eq(got, &o->via.array.ptr[1]);
  ck_assert(msgpack_object_equal(*got, inner.data));

  msgpack_unpacked_destroy(&inner);
  msgpack_sbuffer_destroy(&other);
}
END_TEST

START_TEST(test_nested_arrays)
{
  int a = 0, b = 0;
  const char *s = NULL;
  size_t len = 0;
  const msgpack_object *o = pack_one("[i [s [n []] {}] i]", 1, "x", 2);
  ck_assert_uint_eq(o->via.array.size, 3);
  ck_assert_uint_eq(o->via.array.ptr[1].via.array.size, 3);
  ck_assert_int_eq(fp_unpack(o, "[i [s [n []] {}] i]", &a, &s, &len, &b), 0);
  ck_assert_int_eq(a, 1);
  ck_assert_int_eq(b, 2);
  ck_assert_uint_eq(len, 1);
  ck_assert_mem_eq(s, "x", 1);
}
END_TEST

START_TEST(test_nested_maps)
{
  int x = 0, y = 0;
  const void *bin = NULL;
  size_t bin_len = 0;
  const msgpack_object *o =
      pack_one("{s: {s: [i i]}, s: y}", "point", "xy", 3, 4, "raw", "ab",
               (size_t)2);
  ck_assert_int_eq(o->type, MSGPACK_OBJECT_MAP);
  ck_assert_uint_eq(o->via.map.size, 2);
  /* Keys are looked up, so the format need not follow the packed order. */
  ck_assert_int_eq(fp_unpack(o, "{s: y, s: {s: [i i]}}", "raw", &bin, &bin_len,
                             "point", "xy", &x, &y),
                   0);
  ck_assert_int_eq(x, 3);
  ck_assert_int_eq(y, 4);
  ck_assert_uint_eq(bin_len, 2);
  ck_assert_mem_eq(bin, "ab", 2);
}
END_TEST

START_TEST(test_map_extra_and_non_string_keys)
{
  int v = 0;
  /* An int key and an extra string key are skipped by the lookup. */
  const msgpack_object *o =
      pack_one("{i: i, s: i, s: i}", 7, 70, "other", 1, "want", 2);
  ck_assert_int_eq(fp_unpack(o, "{s: i}", "want", &v), 0);
  ck_assert_int_eq(v, 2);
  ck_assert_int_eq(fp_unpack(o, "{}"), 0);
}
END_TEST

START_TEST(test_separators_ignored)
{
  int a = 0, b = 0, c = 0;
  const msgpack_object *o = pack_one("  [ i,i :i ]  ", 1, 2, 3);
  ck_assert_uint_eq(o->via.array.size, 3);
  ck_assert_int_eq(fp_unpack(o, "[i,i,i]", &a, &b, &c), 0);
  ck_assert_int_eq(a + b + c, 6);
  ck_assert_int_eq(fp_unpack(o, ",,[iii]::", &a, &b, &c), 0);
}
END_TEST

START_TEST(test_depth_limit)
{
  char *ok = nested(64, '[', ']');
  char *deep = nested(65, '[', ']');
  char *huge = nested(100000, '{', '}');
  ck_assert_int_eq(fp_pack(&pk, ok), 0);
  ck_assert_uint_eq(sbuf.size, 64);

  /* msgpack_unpack_next stops at 32 levels, so build the 64 by hand. */
  msgpack_object levels[64];
  for (int i = 0; i < 64; i++) {
    levels[i].type = MSGPACK_OBJECT_ARRAY;
    levels[i].via.array.size = i < 63 ? 1 : 0;
    levels[i].via.array.ptr = i < 63 ? &levels[i + 1] : NULL;
  }
  ck_assert_int_eq(fp_unpack(&levels[0], ok), 0);
  ck_pack_fails(FP_EINVAL, deep);
  ck_pack_fails(FP_EINVAL, huge);
  ck_assert_int_eq(fp_unpack(pack_one("n"), deep), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(pack_one("n"), huge), FP_EINVAL);
  free(ok);
  free(deep);
  free(huge);
}
END_TEST

/* --- Pack errors --------------------------------------------------------- */

START_TEST(test_pack_unknown_letters)
{
  ck_assert_int_eq(fp_pack(&pk, "n"), 0); /* so "unchanged" is not "empty" */
  ck_pack_fails(FP_EINVAL, "x");
  ck_pack_fails(FP_EINVAL, "[i x]", 1);
  ck_pack_fails(FP_EINVAL, "o", NULL); /* o is unpack's letter */
  ck_pack_fails(FP_EINVAL, "#");
  ck_pack_fails(FP_EINVAL, "[s #]", "a", (size_t)1); /* # must follow s */
  ck_pack_fails(FP_EINVAL, "i\t");
  ck_assert_uint_eq(sbuf.size, 1);
}
END_TEST

START_TEST(test_pack_unbalanced)
{
  ck_assert_int_eq(fp_pack(&pk, "n"), 0);
  ck_pack_fails(FP_EINVAL, "[");
  ck_pack_fails(FP_EINVAL, "]");
  ck_pack_fails(FP_EINVAL, "[i", 1);
  ck_pack_fails(FP_EINVAL, "[[i]", 1);
  ck_pack_fails(FP_EINVAL, "[i]]", 1);
  ck_pack_fails(FP_EINVAL, "[}");
  ck_pack_fails(FP_EINVAL, "{s i]", "k", 1);
  ck_pack_fails(FP_EINVAL, "{s [i}]", "k", 1);
}
END_TEST

START_TEST(test_pack_odd_map)
{
  ck_assert_int_eq(fp_pack(&pk, "n"), 0);
  ck_pack_fails(FP_EINVAL, "{s}", "k");
  ck_pack_fails(FP_EINVAL, "{s: i, s}", "a", 1, "b");
  ck_pack_fails(FP_EINVAL, "[{s:i} {i}]", "a", 1, 2);
}
END_TEST

START_TEST(test_pack_not_one_value)
{
  ck_assert_int_eq(fp_pack(&pk, "n"), 0);
  ck_pack_fails(FP_EINVAL, "");
  ck_pack_fails(FP_EINVAL, " , ");
  ck_pack_fails(FP_EINVAL, "ii", 1, 2);
  ck_pack_fails(FP_EINVAL, "[i]i", 1, 2);
  ck_pack_fails(FP_EINVAL, "[][]");
}
END_TEST

START_TEST(test_pack_null_arguments)
{
  msgpack_object bad_type = {.type = (msgpack_object_type)0x7f};
  msgpack_object null_str = {.type = MSGPACK_OBJECT_STR,
                             .via.str = {.size = 3, .ptr = NULL}};
  msgpack_object_kv kv = {.key = {.type = MSGPACK_OBJECT_NIL},
                          .val = null_str};
  msgpack_object deep_bad = {.type = MSGPACK_OBJECT_MAP,
                             .via.map = {.size = 1, .ptr = &kv}};

  ck_assert_int_eq(fp_pack(NULL, "n"), FP_EINVAL);
  ck_assert_int_eq(fp_pack(&pk, NULL), FP_EINVAL);
  ck_assert_int_eq(fp_pack(&pk, "n"), 0);
  ck_pack_fails(FP_EINVAL, "s", (const char *)NULL);
  ck_pack_fails(FP_EINVAL, "s#", (const char *)NULL, (size_t)1);
  ck_pack_fails(FP_EINVAL, "y", (const void *)NULL, (size_t)4);
  ck_pack_fails(FP_EINVAL, "O", (const msgpack_object *)NULL);
  ck_pack_fails(FP_EINVAL, "O", &bad_type);
  ck_pack_fails(FP_EINVAL, "O", &deep_bad);
  /* The bad argument is the last: nothing before it was written either. */
  ck_pack_fails(FP_EINVAL, "[i s y {s: s}]", 1, "ok", "b", (size_t)1, "k",
                (const char *)NULL);
}
END_TEST

static int failing_write(void *data, const char *buf, size_t len)
{
  (void)data;
  (void)buf;
  (void)len;
  return -1;
}

START_TEST(test_pack_write_failure)
{
  msgpack_packer broken;
  msgpack_object obj = {.type = MSGPACK_OBJECT_NIL};
  msgpack_packer_init(&broken, NULL, failing_write);
  ck_assert_int_eq(fp_pack(&broken, "n"), FP_ENOMEM);
  ck_assert_int_eq(fp_pack(&broken, "i", 1), FP_ENOMEM);
  ck_assert_int_eq(fp_pack(&broken, "s", "x"), FP_ENOMEM);
  ck_assert_int_eq(fp_pack(&broken, "y", "x", (size_t)1), FP_ENOMEM);
  ck_assert_int_eq(fp_pack(&broken, "O", &obj), FP_ENOMEM);
  ck_assert_int_eq(fp_pack(&broken, "{s:i}", "k", 1), FP_ENOMEM);
  /* A bad format is still FP_EINVAL: it is found before any write. */
  ck_assert_int_eq(fp_pack(&broken, "[i", 1), FP_EINVAL);
}
END_TEST

/* --- Unpack errors ------------------------------------------------------- */

START_TEST(test_unpack_type_mismatch)
{
  const msgpack_object *o =
      pack_one("[n b i f s y [] {}]", 1, 5, 1.5, "s", "y", (size_t)1);
  const msgpack_object *item = o->via.array.ptr;
  int i = 0;
  int64_t I = 0;
  unsigned u = 0;
  uint64_t U = 0;
  double f = 0;
  const char *s = NULL;
  const void *y = NULL;
  size_t len = 0;

  ck_assert_int_eq(fp_unpack(&item[1], "n"), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[2], "b", &i), FP_ETYPE); /* int, not bool */
  ck_assert_int_eq(fp_unpack(&item[1], "i", &i), FP_ETYPE); /* bool, not int */
  ck_assert_int_eq(fp_unpack(&item[3], "i", &i), FP_ETYPE); /* float */
  ck_assert_int_eq(fp_unpack(&item[3], "I", &I), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[4], "u", &u), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[0], "U", &U), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[4], "f", &f), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[5], "s", &s, &len), FP_ETYPE); /* bin */
  ck_assert_int_eq(fp_unpack(&item[4], "y", &y, &len), FP_ETYPE); /* str */
  ck_assert_int_eq(fp_unpack(&item[7], "[]"), FP_ETYPE);          /* map */
  ck_assert_int_eq(fp_unpack(&item[6], "{}"), FP_ETYPE);          /* array */
  ck_assert_int_eq(fp_unpack(&item[2], "[i]", &i), FP_ETYPE);
}
END_TEST

START_TEST(test_unpack_out_of_range)
{
  int i = 0;
  int64_t I = 0;
  unsigned u = 0;
  uint64_t U = 0;
  const msgpack_object *o =
      pack_one("[I I I I U]", (int64_t)INT_MAX + 1, (int64_t)INT_MIN - 1,
               (int64_t)-1, (int64_t)UINT_MAX + 1, UINT64_MAX);
  const msgpack_object *item = o->via.array.ptr;

  ck_assert_int_eq(fp_unpack(&item[0], "i", &i), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[1], "i", &i), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[2], "u", &u), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[2], "U", &U), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[3], "u", &u), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(&item[4], "I", &I), FP_ETYPE);
  /* The same values fit the wider letters. */
  ck_assert_int_eq(fp_unpack(&item[0], "I", &I), 0);
  ck_assert_int_eq(I, (int64_t)INT_MAX + 1);
  ck_assert_int_eq(fp_unpack(&item[3], "U", &U), 0);
  ck_assert_uint_eq(U, (uint64_t)UINT_MAX + 1);
  ck_assert_int_eq(fp_unpack(&item[2], "i", &i), 0);
  ck_assert_int_eq(i, -1);
}
END_TEST

START_TEST(test_unpack_integer_across_signs)
{
  unsigned u = 0;
  int64_t I = 0;
  /* msgpack stores 5 as a positive integer even when packed with I. */
  const msgpack_object *o = pack_one("[I u]", (int64_t)5, 9u);
  ck_assert_int_eq(fp_unpack(o, "[u I]", &u, &I), 0);
  ck_assert_uint_eq(u, 5);
  ck_assert_int_eq(I, 9);

  /* A hand-made NEGATIVE_INTEGER holding a non-negative value still fits. */
  msgpack_object odd = {.type = MSGPACK_OBJECT_NEGATIVE_INTEGER, .via.i64 = 3};
  ck_assert_int_eq(fp_unpack(&odd, "u", &u), 0);
  ck_assert_uint_eq(u, 3);
}
END_TEST

START_TEST(test_unpack_array_size)
{
  int a = 0, b = 0, c = 0;
  const msgpack_object *o = pack_one("[i i]", 1, 2);
  ck_assert_int_eq(fp_unpack(o, "[i]", &a), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(o, "[i i i]", &a, &b, &c), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(o, "[]"), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(o, "[i i]", &a, &b), 0);
}
END_TEST

START_TEST(test_unpack_missing_key)
{
  int v = 0, w = 0;
  const char *s = NULL;
  size_t len = 0;
  const msgpack_object *o = pack_one("{s: i, s: [i]}", "a", 1, "b", 2);
  ck_assert_int_eq(fp_unpack(o, "{s: i}", "c", &v), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(o, "{s: i, s: i}", "a", &v, "", &w), FP_ETYPE);
  /* A key that is a prefix of a packed key is not that key. */
  o = pack_one("{s: i}", "ab", 1);
  ck_assert_int_eq(fp_unpack(o, "{s: i}", "a", &v), FP_ETYPE);
  /* The value under a found key must still match its spec. */
  ck_assert_int_eq(fp_unpack(o, "{s: s}", "ab", &s, &len), FP_ETYPE);
  ck_assert_int_eq(fp_unpack(pack_one("[]"), "{s: i}", "a", &v), FP_ETYPE);
}
END_TEST

START_TEST(test_unpack_bad_format)
{
  int i = 0;
  const char *s = NULL;
  size_t len = 0;
  const msgpack_object *any = NULL;
  const msgpack_object *o = pack_one("[i s]", 1, "x");

  ck_assert_int_eq(fp_unpack(NULL, "n"), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, NULL), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, ""), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "[i x]", &i), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "O", &any), FP_EINVAL); /* O is pack's */
  ck_assert_int_eq(fp_unpack(o, "[i s#]", &i, &s, &len), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "[i s", &i, &s, &len), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "[i s]]", &i, &s, &len), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "[i s}", &i, &s, &len), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "[i s] i", &i, &s, &len, &i), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "o o", &any, &any), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "{s}", "k"), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "{i: i}", &i, &i), FP_EINVAL); /* key not s */
  ck_assert_int_eq(fp_unpack(o, "{[s]: i}", &s, &len, &i), FP_EINVAL);
  /* The format is checked first: a bad one is FP_EINVAL even on a mismatch. */
  ck_assert_int_eq(fp_unpack(o, "{x}"), FP_EINVAL);
}
END_TEST

START_TEST(test_unpack_null_outputs)
{
  int i = 0;
  size_t len = 0;
  const char *s = NULL;
  const msgpack_object *o = pack_one("[i s]", 1, "x");

  ck_assert_int_eq(fp_unpack(o, "[i s]", (int *)NULL, &s, &len), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "[i s]", &i, &s, (size_t *)NULL), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(o, "o", (const msgpack_object **)NULL),
                   FP_EINVAL);
  /* A NULL output is FP_EINVAL even where the value would not match. */
  ck_assert_int_eq(fp_unpack(o, "[s i]", &s, &len, (int *)NULL), FP_EINVAL);
  ck_assert_int_eq(fp_unpack(pack_one("{s: i}", "k", 1), "{s: i}",
                             (const char *)NULL, &i),
                   FP_EINVAL);
}
END_TEST

static Suite *pack_suite(void)
{
  Suite *s = suite_create("pack");

  TCase *trip = tcase_create("round trip");
  tcase_add_checked_fixture(trip, setup, teardown);
  tcase_add_test(trip, test_nil);
  tcase_add_test(trip, test_bool);
  tcase_add_test(trip, test_int);
  tcase_add_test(trip, test_int64);
  tcase_add_test(trip, test_unsigned);
  tcase_add_test(trip, test_double);
  tcase_add_test(trip, test_double_from_int_and_float32);
  tcase_add_test(trip, test_string);
  tcase_add_test(trip, test_string_with_length);
  tcase_add_test(trip, test_bin);
  tcase_add_test(trip, test_bin_1mib);
  tcase_add_test(trip, test_object);
  tcase_add_test(trip, test_nested_arrays);
  tcase_add_test(trip, test_nested_maps);
  tcase_add_test(trip, test_map_extra_and_non_string_keys);
  tcase_add_test(trip, test_separators_ignored);
  tcase_add_test(trip, test_depth_limit);
  suite_add_tcase(s, trip);

  TCase *perr = tcase_create("pack errors");
  tcase_add_checked_fixture(perr, setup, teardown);
  tcase_add_test(perr, test_pack_unknown_letters);
  tcase_add_test(perr, test_pack_unbalanced);
  tcase_add_test(perr, test_pack_odd_map);
  tcase_add_test(perr, test_pack_not_one_value);
  tcase_add_test(perr, test_pack_null_arguments);
  tcase_add_test(perr, test_pack_write_failure);
  suite_add_tcase(s, perr);

  TCase *uerr = tcase_create("unpack errors");
  tcase_add_checked_fixture(uerr, setup, teardown);
  tcase_add_test(uerr, test_unpack_type_mismatch);
  tcase_add_test(uerr, test_unpack_out_of_range);
  tcase_add_test(uerr, test_unpack_integer_across_signs);
  tcase_add_test(uerr, test_unpack_array_size);
  tcase_add_test(uerr, test_unpack_missing_key);
  tcase_add_test(uerr, test_unpack_bad_format);
  tcase_add_test(uerr, test_unpack_null_outputs);
  suite_add_tcase(s, uerr);

  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(pack_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed > 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

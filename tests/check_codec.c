/*
 * The zone-free codec (lib/codec.c) against msgpack-c itself: fp__skip_object,
 * fp__count_objects and the readers must accept exactly what
 * msgpack_unpack accepts, end where it ends and read the values it reads,
 * on every type byte, every truncation, the nesting limit and a few hundred
 * thousand pseudo-random inputs.  Then the messages (fp__encode_task against
 * msgpack's packer, the strictness of both decoders) and fp__future_finish
 * (lib/future.c), which keeps results without a heap zone where it can.
 *
 * The test is built from the library's sources, whose fp__ functions the
 * library does not export; future.c's calls into the pool are stubbed below.
 */
#include "forkpool-private.h"

#include <check.h>
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* --- Stubs: future.c's pool side, which these tests never reach ---------- */

void fp__pool_lock(fp_pool *pool) { (void)pool; }
void fp__pool_unlock(fp_pool *pool) { (void)pool; }
int fp__in_callbacks(const fp_pool *pool) { (void)pool; return 0; }
void fp__callbacks_queue(fp_pool *pool, fp_future *f) { (void)pool, (void)f; }

int fp__pool_wait_future(fp_pool *pool, fp_future *f, int64_t deadline)
{
  (void)pool, (void)f, (void)deadline;
  return FP_EINVAL;
}

int fp__pool_wait(fp_pool *pool, fp__pool_pred pred, void *arg,
                  int64_t deadline)
{
  (void)pool, (void)pred, (void)arg, (void)deadline;
  return FP_EINVAL;
}

int fp__pool_cancel(fp_pool *pool, fp_future *f, unsigned flags)
{
  (void)pool, (void)f, (void)flags;
  return FP_EINVAL;
}

/* --- What msgpack-c says -------------------------------------------------- */

static msgpack_zone zone;

static void setup(void)
{
  ck_assert(msgpack_zone_init(&zone, 1024));
}

static void teardown(void)
{
  msgpack_zone_destroy(&zone);
}

/*
 * msgpack-c allocates a container's items from the count in its header
 * before it reads them, so "dd ff ff ff ff" asks for 100 GB: a failure
 * that AddressSanitizer stops the test for.  An input with what may be a
 * 32-bit count above 65536 anywhere (even inside a str) is not shown to
 * msgpack-c, and only the scanner's own checks run on it.  A real count
 * that large cannot be met in a short buffer (each item takes a byte):
 * test_huge_counts checks that the scanner refuses it.
 */
static int too_big_for_msgpack(const unsigned char *b, size_t len)
{
  for (size_t i = 0; i + 4 < len; i++) {
    if (b[i] != 0xdd && b[i] != 0xdf)
      continue;
    uint32_t n = (uint32_t)b[i + 1] << 24 | (uint32_t)b[i + 2] << 16 |
                 (uint32_t)b[i + 3] << 8 | b[i + 4];
    if (n > 65536)
      return 1;
  }
  return 0;
}

/* 1 if msgpack_unpack reads one object at off, with its end and value. */
static int mp_one(const unsigned char *b, size_t len, size_t off,
                  size_t *end, msgpack_object *o)
{
  msgpack_zone_clear(&zone);
  *end = off;
  msgpack_unpack_return rc =
      msgpack_unpack((const char *)b, len, end, &zone, o);
  return rc == MSGPACK_UNPACK_SUCCESS || rc == MSGPACK_UNPACK_EXTRA_BYTES;
}

/* The input being compared, for the message of a failed check. */
static const unsigned char *cur;
static size_t cur_len, cur_off;

static void mismatch(const char *file, int line, const char *what)
{
  char hex[3 * 48 + 1] = "";
  for (size_t i = 0; i < cur_len && i < 48; i++)
    snprintf(hex + 3 * i, 4, "%02x ", cur[i]);
  ck_abort_msg("%s:%d: %s, at %zu of %zu bytes [%s]", file, line, what,
               cur_off, cur_len, hex);
}

/* A check for the loops over many inputs: Check's ck_assert records every
 * one that passes, which would cost more than the code under test. */
#define REQUIRE(cond)                                                         \
  do {                                                                        \
    if (!(cond))                                                              \
      mismatch(__FILE__, __LINE__, #cond);                                    \
  } while (0)

#define ORACLE_CHECK REQUIRE
#include "codec-oracle.h"

/* fp__count_objects against msgpack_unpack called until the end. */
static void same_count(const unsigned char *b, size_t len)
{
  size_t off = 0, want = 0, end, n;
  msgpack_object o;
  int ok = 1;
  while (off < len && (ok = mp_one(b, len, off, &end, &o)))
    off = end, want++;
  int rc = fp__count_objects((const char *)b, len, &n);
  REQUIRE(rc == (ok ? 0 : FP_EINVAL));
  REQUIRE(!ok || n == want);
}

static unsigned long compared, not_shown; /* inputs, for the random test */

/*
 * The scanner and the readers agree with msgpack_unpack at off: the same
 * verdict (SUCCESS or EXTRA_BYTES against 0, anything else against an
 * error) and the same end.  Returns the scanner's verdict.  b should be an
 * allocation of exactly len bytes, so that a read past it is seen by ASan.
 */
static int same(const unsigned char *b, size_t len, size_t off)
{
  cur = b, cur_len = len, cur_off = off;
  size_t skip_end = off;
  int rc = fp__skip_object((const char *)b, len, &skip_end);
  REQUIRE(rc == 0 || rc == FP_EPROTO);
  REQUIRE(rc == 0 || skip_end == off);
  if (too_big_for_msgpack(b, len)) {
    not_shown++;
    return rc;
  }
  compared++;
  size_t end;
  msgpack_object o;
  int ok = mp_one(b, len, off, &end, &o);
  REQUIRE(ok == (rc == 0));
  REQUIRE(!ok || end == skip_end);
  oracle_readers((const char *)b, len, off, ok, end, &o);
  if (off == 0)
    same_count(b, len);
  return rc;
}

/* same() on a copy of exactly len bytes, at offset 0. */
static int same_copy(const void *p, size_t len)
{
  unsigned char *b = malloc(len ? len : 1);
  ck_assert_ptr_nonnull(b);
  memcpy(b, p, len);
  int rc = same(b, len, 0);
  free(b);
  return rc;
}

/* Every prefix of p is refused by both; the whole is accepted by both. */
static void whole_and_prefixes(const void *p, size_t len)
{
  for (size_t k = 0; k < len; k++)
    ck_assert_int_eq(same_copy(p, k), FP_EPROTO);
  ck_assert_int_eq(same_copy(p, len), 0);
}

/* --- fp__skip_object: fixed cases ---------------------------------------- */

START_TEST(test_every_type_byte)
{
  /* Every first byte, followed by every length of a few fillers: zero
   * lengths and counts, small ones, and large ones in a short buffer. */
  static const unsigned char fill[] = {0x00, 0x01, 0x02, 0x7f, 0xc0, 0xff};
  unsigned char b[48];
  for (unsigned c = 0; c <= 0xff; c++) {
    for (size_t f = 0; f < sizeof fill; f++) {
      b[0] = (unsigned char)c;
      memset(b + 1, fill[f], sizeof b - 1);
      for (size_t len = 1; len <= sizeof b; len++)
        same_copy(b, len);
    }
  }
  ck_assert_int_eq(same_copy("\xc1", 1), FP_EPROTO);
  ck_assert_int_eq(same_copy("\x91\xc1", 2), FP_EPROTO);
  ck_assert_int_eq(same_copy("", 0), FP_EPROTO);
}
END_TEST

/* A valid encoding of each kind, whole and cut short at every length. */
START_TEST(test_truncated_everywhere)
{
  static const struct {
    const char *b;
    size_t n;
  } v[] = {
#define V(s) {s, sizeof s - 1}
      V("\x00"), V("\x7f"), V("\xe0"), V("\xff"), V("\xc0"), V("\xc2"),
      V("\xc3"), V("\xcc\xff"), V("\xcd\x01\x00"), V("\xce\x00\x01\x00\x00"),
      V("\xcf\x80\x00\x00\x00\x00\x00\x00\x00"), V("\xd0\x80"),
      V("\xd1\xff\x00"), V("\xd2\x80\x00\x00\x00"),
      V("\xd3\xff\xff\xff\xff\xff\xff\xff\xff"), V("\xca\x3f\x80\x00\x00"),
      V("\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00"), V("\xa3" "abc"),
      V("\xd9\x03" "abc"), V("\xda\x00\x03" "abc"),
      V("\xdb\x00\x00\x00\x03" "abc"), V("\xc4\x02" "ab"),
      V("\xc5\x00\x02" "ab"), V("\xc6\x00\x00\x00\x02" "ab"),
      V("\xc7\x02\x05" "ab"), V("\xc8\x00\x02\x05" "ab"),
      V("\xc9\x00\x00\x00\x02\x05" "ab"), V("\xc7\x00\x05"),
      V("\xd4\x01" "a"), V("\xd5\x01" "ab"), V("\xd6\x01" "abcd"),
      V("\xd7\x01" "abcdefgh"), V("\xd8\x01" "abcdefghijklmnop"),
      V("\x92\x01\xa1" "x"), V("\xdc\x00\x02\x01\x02"),
      V("\xdd\x00\x00\x00\x02\x01\x02"), V("\x82\x01\x02\xa1" "k\x90"),
      V("\xde\x00\x01\x01\x80"), V("\xdf\x00\x00\x00\x01\x01\x02"),
      V("\x93\x91\x91\x90\x81\x80\x80\x92\xc0\xd4\x00\x00"),
#undef V
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    whole_and_prefixes(v[i].b, v[i].n);
}
END_TEST

/* str, bin and ext in each width, at the lengths where widths change. */
START_TEST(test_str_bin_ext_widths)
{
  static const uint32_t sizes[] = {0, 1, 31, 32, 255, 256, 65535, 65536};
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  char *body = calloc(1, 65536);
  ck_assert_ptr_nonnull(body);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    for (int kind = 0; kind < 3; kind++) {
      msgpack_sbuffer_clear(&sb);
      if (kind == 0)
        msgpack_pack_str_with_body(&pk, body, sizes[i]);
      else if (kind == 1)
        msgpack_pack_bin_with_body(&pk, body, sizes[i]);
      else
        msgpack_pack_ext_with_body(&pk, body, sizes[i], 7);
      ck_assert_int_eq(same_copy(sb.data, sb.size), 0);
      ck_assert_int_eq(same_copy(sb.data, sb.size - 1), FP_EPROTO);
    }
  }
  /* The widths msgpack's packer does not choose: str 32 for "ab", and so
   * on, are still msgpack. */
  ck_assert_int_eq(same_copy("\xdb\x00\x00\x00\x02" "ab", 7), 0);
  ck_assert_int_eq(same_copy("\xc6\x00\x00\x00\x00", 5), 0);
  ck_assert_int_eq(same_copy("\xc9\x00\x00\x00\x00\x01", 6), 0);
  ck_assert_int_eq(same_copy("\xda\x00\x00", 3), 0);
  free(body);
  msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* depth containers nested, each holding the next; the innermost holds
 * inner (n bytes; none: empty).  kind 0 arrays, 1 maps (key 0), 2 both. */
static size_t nest(unsigned char *b, unsigned depth, int kind,
                   const char *inner, size_t n)
{
  size_t len = 0;
  for (unsigned d = 0; d < depth; d++) {
    int map = kind == 1 || (kind == 2 && d % 2);
    int empty = d + 1 == depth && n == 0;
    b[len++] = (unsigned char)((map ? 0x80 : 0x90) | !empty);
    if (map && !empty)
      b[len++] = 0x00;
  }
  memcpy(b + len, inner, n);
  return len + n;
}

START_TEST(test_nesting_limit)
{
  /* msgpack-c holds MSGPACK_EMBED_STACK_SIZE open containers and refuses
   * one more, even an empty one. */
  static const struct {
    const char *b;
    size_t n;
  } inner[] = {{"", 0}, {"\x01", 1}, {"\x90", 1}, {"\x80", 1},
               {"\xdc\x00\x00", 3}, {"\xa1" "x", 2}};
  const unsigned limit = MSGPACK_EMBED_STACK_SIZE;
  ck_assert_uint_eq(limit, 32);
  unsigned char b[4 * 40];
  for (unsigned depth = 29; depth <= 34; depth++) {
    for (int kind = 0; kind < 3; kind++) {
      for (size_t i = 0; i < sizeof inner / sizeof inner[0]; i++) {
        size_t len = nest(b, depth, kind, inner[i].b, inner[i].n);
        /* The containers: depth, and one more if inner is one. */
        unsigned total = depth + (i == 2 || i == 3 || i == 4);
        ck_assert_int_eq(same_copy(b, len), total <= limit ? 0 : FP_EPROTO);
      }
    }
  }
}
END_TEST

START_TEST(test_huge_counts)
{
  /* Declared counts and lengths far past the buffer: refused, and read no
   * further than the buffer (it is an allocation of its exact size). */
  static const struct {
    const char *b;
    size_t n;
  } v[] = {
#define V(s) {s, sizeof s - 1}
      V("\xdd\xff\xff\xff\xff\x01"), V("\xdf\xff\xff\xff\xff\x01\x02"),
      V("\xdd\x80\x00\x00\x00"), V("\xdf\x00\x01\x00\x01\x01\x01"),
      V("\xdc\xff\xff\x01\x02"), V("\xde\xff\xff\x01\x02"),
      V("\xdb\xff\xff\xff\xff" "abc"), V("\xc6\xff\xff\xff\xff" "abc"),
      V("\xc9\xff\xff\xff\xff\x01" "ab"), V("\xc9\xff\xff\xff\xfe\x01" "ab"),
      V("\xda\xff\xff" "a"), V("\xc5\xff\xff" "a"), V("\xc8\xff\xff\x01"),
      V("\x9f\x01"), V("\x8f\x01\x02"), V("\x91\xdd\xff\xff\xff\xff"),
      V("\x81\x01\xdf\x7f\xff\xff\xff\x01"),
#undef V
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    ck_assert_int_eq(same_copy(v[i].b, v[i].n), FP_EPROTO);
  /* ext 32 of length 0xffffffff: msgpack-c adds the type byte in 32 bits,
   * gets 0 and refuses it; it must not become a 0-byte object here. */
  ck_assert_int_eq(same_copy("\xc9\xff\xff\xff\xff", 5), FP_EPROTO);
}
END_TEST

/* --- fp__skip_object: pseudo-random inputs -------------------------------- */

static uint64_t rng = 0x2545f4914f6cdd1dULL; /* fixed: failures reproduce */

static uint64_t rnd(void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static unsigned below(unsigned n)
{
  return (unsigned)(rnd() % n);
}

/* A byte biased towards the ones that mean something. */
static unsigned char interesting(void)
{
  static const unsigned char t[] = {0x00, 0x01, 0x02, 0x03, 0x0f, 0x10, 0x7f,
                                    0x80, 0x81, 0x8f, 0x90, 0x91, 0x9f, 0xa0,
                                    0xa1, 0xbf, 0xe0, 0xff, 0xfe};
  unsigned r = below(4);
  if (r == 0)
    return (unsigned char)rnd();
  if (r == 1)
    return (unsigned char)(0xc0 + below(32)); /* every typed header */
  return t[below(sizeof t)];
}

typedef struct gen {
  unsigned char b[512];
  size_t n;
} gen;

static void put(gen *g, uint64_t v, unsigned bytes)
{
  while (bytes-- > 0 && g->n < sizeof g->b)
    g->b[g->n++] = (unsigned char)(v >> 8 * bytes);
}

/* Payload bytes: random, but never the array 32 and map 32 headers, so
 * that too_big_for_msgpack seldom hides an input from msgpack-c. */
static void put_payload(gen *g, unsigned bytes)
{
  while (bytes-- > 0) {
    unsigned char c = (unsigned char)rnd();
    put(g, c == 0xdd || c == 0xdf ? c - 0x10 : c, 1);
  }
}

/* A length or count in a random width that holds it. */
static void put_len(gen *g, uint32_t v, unsigned char fix, unsigned fix_max,
                    unsigned char w8, unsigned char w16, unsigned char w32)
{
  unsigned r = below(4);
  if (r == 0 && fix && v <= fix_max)
    put(g, fix | v, 1);
  else if (r <= 1 && w8 && v <= 0xff)
    put(g, w8, 1), put(g, v, 1);
  else if (r <= 2 && v <= 0xffff)
    put(g, w16, 1), put(g, v, 2);
  else
    put(g, w32, 1), put(g, v, 4);
}

/* A random valid object, in random (not always shortest) encodings. */
static void object(gen *g, unsigned depth)
{
  if (g->n > sizeof g->b - 24) {
    put(g, 0xc0, 1);
    return;
  }
  unsigned k = below(depth < 36 ? 10 : 6);
  if (depth >= 28 && below(2))
    k = 6 + below(2); /* go deep sometimes */
  switch (k) {
  case 0: { /* an integer, any width */
    unsigned w = below(9);
    if (w == 8)
      put(g, below(2) ? below(128) : 0xe0 + below(32), 1);
    else
      put(g, 0xcc + w, 1), put_payload(g, 1u << (w & 3));
    break;
  }
  case 1:
    put(g, 0xc0 + (unsigned)"\x00\x02\x03"[below(3)], 1);
    break;
  case 2: { /* float 32 or 64 */
    unsigned w = below(2) ? 4 : 8;
    put(g, w == 4 ? 0xca : 0xcb, 1);
    put_payload(g, w);
    break;
  }
  case 3:
  case 4: { /* str or bin */
    uint32_t n = below(3) ? below(8) : below(40);
    if (k == 3)
      put_len(g, n, 0xa0, 31, 0xd9, 0xda, 0xdb);
    else
      put_len(g, n, 0, 0, 0xc4, 0xc5, 0xc6);
    while (n-- > 0)
      put(g, 'a' + below(26), 1);
    break;
  }
  case 5: { /* ext, fixext */
    unsigned f = below(7);
    uint32_t n = f < 5 ? 1u << f : below(20);
    if (f < 5)
      put(g, 0xd4 + f, 1);
    else
      put_len(g, n, 0, 0, 0xc7, 0xc8, 0xc9);
    put_payload(g, 1 + n); /* the type, then the data */
    break;
  }
  default: { /* array or map */
    int map = k % 2;
    uint32_t n = depth >= 28 ? below(2) : below(4);
    put_len(g, n, map ? 0x80 : 0x90, 15, 0, map ? 0xde : 0xdc,
            map ? 0xdf : 0xdd);
    for (uint32_t i = 0; i < n * (map ? 2u : 1u); i++)
      object(g, depth + 1);
  }
  }
}

/* Changes a few bytes: cut, overwrite, insert, delete, append. */
static void mutate(gen *g)
{
  for (unsigned m = below(4); m > 0; m--) {
    size_t at = g->n ? below((unsigned)g->n) : 0;
    switch (below(5)) {
    case 0:
      g->n = at;
      break;
    case 1:
      if (g->n)
        g->b[at] = interesting();
      break;
    case 2:
      if (g->n < sizeof g->b) {
        memmove(g->b + at + 1, g->b + at, g->n - at);
        g->b[at] = interesting();
        g->n++;
      }
      break;
    case 3:
      if (g->n) {
        memmove(g->b + at, g->b + at + 1, g->n - at - 1);
        g->n--;
      }
      break;
    default:
      put(g, interesting(), 1);
    }
  }
}

START_TEST(test_random_inputs)
{
  unsigned long accepted = 0;
  compared = not_shown = 0;
  for (unsigned round = 0; round < 300000; round++) {
    gen g = {.n = 0};
    if (round % 3 == 0) { /* a few bytes of anything */
      for (unsigned n = below(12); n > 0; n--)
        put(&g, interesting(), 1);
    } else {
      object(&g, below(4) ? 0 : 24);
      if (below(3))
        object(&g, 0); /* a second one: EXTRA_BYTES */
      if (round % 3 == 2)
        mutate(&g);
    }
    unsigned char *b = malloc(g.n ? g.n : 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b, g.b, g.n);
    accepted += same(b, g.n, 0) == 0;
    if (g.n > 0)
      same(b, g.n, below((unsigned)g.n)); /* from inside */
    free(b);
  }
  /* The comparison meant something: both verdicts came up often, and few
   * inputs were kept from msgpack-c. */
  ck_assert_uint_gt(accepted, 100000);
  ck_assert_uint_lt(accepted, 280000);
  ck_assert_uint_lt(not_shown, compared / 50);
}
END_TEST

/* --- The readers ---------------------------------------------------------- */

START_TEST(test_read_integers)
{
  /* Every width, at the values where a sign or a width changes. */
  static const int64_t vals[] = {0, 1, 127, 128, 255, 256, 65535, 65536,
                                 -1, -32, -33, -128, -129, -4999, -5000,
                                 -32768, -32769, INT32_MIN, INT64_MIN,
                                 INT64_MAX, 4294967295LL};
  static const unsigned char tags[] = {0xcc, 0xcd, 0xce, 0xcf,
                                       0xd0, 0xd1, 0xd2, 0xd3};
  unsigned char b[9];
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    uint64_t v = (uint64_t)vals[i];
    for (size_t t = 0; t < sizeof tags; t++) {
      unsigned w = 1u << (tags[t] & 3);
      b[0] = tags[t];
      for (unsigned k = 0; k < w; k++)
        b[1 + k] = (unsigned char)(v >> 8 * (w - 1 - k));
      same_copy(b, 1 + w); /* whether or not it fits: msgpack decides */
    }
  }
  /* Codes: 0 in any width; FP_E* down to -4999; nothing positive. */
  size_t off = 0;
  int code;
  ck_assert_int_eq(fp__read_code("\xd3\0\0\0\0\0\0\0\0", 9, &off, &code), 0);
  ck_assert_int_eq(code, 0);
  ck_assert_uint_eq(off, 9);
  off = 0;
  ck_assert_int_eq(fp__read_code("\xd1\xec\x79", 3, &off, &code), 0);
  ck_assert_int_eq(code, -4999);
  off = 0;
  ck_assert_int_eq(fp__read_code("\xd1\xec\x78", 3, &off, &code), FP_EPROTO);
  ck_assert_int_eq(fp__read_code("\x01", 1, &off, &code), FP_EPROTO);
  ck_assert_int_eq(fp__read_code("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9,
                                 &off, &code), FP_EPROTO);
  ck_assert_uint_eq(off, 0);
}
END_TEST

/* Floats in both widths, at zeros, infinities, NaNs (a float 32's
 * signalling NaN comes back quiet, as a double) and the smallest values:
 * fp__read_plain gives the bits msgpack-c gives. */
START_TEST(test_read_floats)
{
  static const uint32_t f32[] = {0, 0x80000000u, 0x3fc00000u, 0x7f800000u,
                                 0xff800000u, 0x7fc00000u, 0x7f800001u,
                                 0xffffffffu, 0x00000001u, 0x7f7fffffu};
  static const uint64_t f64[] = {0, 0x8000000000000000u, 0x3ff8000000000000u,
                                 0x7ff0000000000000u, 0x7ff8000000000000u,
                                 0x7ff0000000000001u, 0xffffffffffffffffu,
                                 0x0000000000000001u, 0xc002000000000000u};
  unsigned char b[9];
  for (size_t i = 0; i < sizeof f32 / sizeof f32[0]; i++) {
    b[0] = 0xca;
    for (unsigned k = 0; k < 4; k++)
      b[1 + k] = (unsigned char)(f32[i] >> 8 * (3 - k));
    whole_and_prefixes(b, 5);
  }
  for (size_t i = 0; i < sizeof f64 / sizeof f64[0]; i++) {
    b[0] = 0xcb;
    for (unsigned k = 0; k < 8; k++)
      b[1 + k] = (unsigned char)(f64[i] >> 8 * (7 - k));
    whole_and_prefixes(b, 9);
  }
  /* The value itself, not only msgpack-c's agreement. */
  msgpack_object o;
  size_t off = 0;
  ck_assert_int_eq(fp__read_plain("\xca\x3f\xc0\0\0", 5, &off, &o), 0);
  ck_assert_int_eq(o.type, MSGPACK_OBJECT_FLOAT32);
  ck_assert_double_eq(o.via.f64, 1.5);
  ck_assert_uint_eq(off, 5);
  off = 0;
  ck_assert_int_eq(fp__read_plain("\xcb\xc0\x02\0\0\0\0\0\0", 9, &off,
                                  &o), 0);
  ck_assert_int_eq(o.type, MSGPACK_OBJECT_FLOAT64);
  ck_assert_double_eq(o.via.f64, -2.25);
  ck_assert_uint_eq(off, 9);
}
END_TEST

/* --- The messages --------------------------------------------------------- */

/* fp__decode_task on a body of exactly len bytes. */
static int decode_task(const void *p, size_t len)
{
  char *b = malloc(len ? len : 1);
  ck_assert_ptr_nonnull(b);
  memcpy(b, p, len);
  uint64_t id;
  const char *name, *args;
  size_t name_len, args_len;
  unsigned n;
  int rc = fp__decode_task(b, len, NULL, 0, &id, &name, &name_len, &n, &args,
                           &args_len);
  free(b);
  return rc;
}

/* The TASK prefix as msgpack's packer writes it. */
static void packed_head(msgpack_sbuffer *sb, uint64_t id, const char *name,
                        unsigned n)
{
  msgpack_packer pk;
  msgpack_sbuffer_clear(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_int(&pk, FP__MSG_TASK);
  msgpack_pack_uint64(&pk, id);
  msgpack_pack_str_with_body(&pk, name, strlen(name));
  msgpack_pack_unsigned_int(&pk, n);
}

START_TEST(test_encode_task_bytes)
{
  static const uint64_t ids[] = {0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff,
                                 0x10000, 0xffffffff, 0x100000000ULL,
                                 UINT64_MAX};
  static const unsigned ns[] = {1, 127, 128, 65536, UINT32_MAX};
  char name[FP__MAX_NAME + 2];
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
    for (size_t len = 1; len <= FP__MAX_NAME; len += len < 40 ? 1 : 43) {
      memset(name, 'a' + (int)(len % 26), len);
      name[len] = '\0';
      unsigned n = ns[(i + len) % (sizeof ns / sizeof ns[0])];
      char *frame = NULL;
      size_t flen;
      ck_assert_int_eq(fp__encode_task(ids[i], name, n, "\xc0", 1, NULL, &frame,
                                       &flen), 0);
      packed_head(&sb, ids[i], name, n);
      ck_assert_uint_eq(flen, FP__HDR + sb.size + 1);
      ck_assert_uint_eq(fp__frame_body_len(frame), sb.size + 1);
      ck_assert_mem_eq(frame + FP__HDR, sb.data, sb.size);
      ck_assert_int_eq((unsigned char)frame[flen - 1], 0xc0);

      /* And back. */
      uint64_t id;
      const char *nm, *args;
      size_t nm_len, args_len;
      unsigned got_n;
      ck_assert_int_eq(fp__decode_task(frame + FP__HDR, flen - FP__HDR, NULL,
                                       0, &id, &nm, &nm_len, &got_n, &args,
                                       &args_len), 0);
      ck_assert_uint_eq(id, ids[i]);
      ck_assert_uint_eq(nm_len, len);
      ck_assert_mem_eq(nm, name, len);
      ck_assert_uint_eq(got_n, n);
      ck_assert_ptr_eq(args, frame + flen - 1);
      ck_assert_uint_eq(args_len, 1);
      free(frame);
    }
  }
  /* Longer names are the decoder's to refuse; they are still msgpack. */
  static const size_t long_names[] = {FP__MAX_NAME + 1, 65535, 65536};
  for (size_t i = 0; i < sizeof long_names / sizeof long_names[0]; i++) {
    char *long_name = malloc(long_names[i] + 1);
    ck_assert_ptr_nonnull(long_name);
    memset(long_name, 'x', long_names[i]);
    long_name[long_names[i]] = '\0';
    char *frame = NULL;
    size_t flen;
    ck_assert_int_eq(fp__encode_task(9, long_name, 2, "\xc0\xc0", 2, NULL, &frame,
                                     &flen), 0);
    packed_head(&sb, 9, long_name, 2);
    ck_assert_uint_eq(flen, FP__HDR + sb.size + 2);
    ck_assert_mem_eq(frame + FP__HDR, sb.data, sb.size);
    ck_assert_int_eq(decode_task(frame + FP__HDR, flen - FP__HDR), FP_EPROTO);
    free(frame);
    free(long_name);
  }
  msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_decode_task_strict)
{
#define DT(s) decode_task(s, sizeof s - 1)
  ck_assert_int_eq(DT("\x00\x05\xa1" "f\x01\xc0"), 0);
  /* Any width msgpack-c reads as a positive integer. */
  ck_assert_int_eq(DT("\xd0\x00\xd3\0\0\0\0\0\0\0\x05\xa1" "f\xcf\0\0\0\0\0\0"
                      "\0\x01\xc0"), 0);
  ck_assert_int_eq(DT("\x00\x05\xd9\x01" "f\x01\xc0"), 0);
  ck_assert_int_eq(DT("\x01\x05\xa1" "f\x01\xc0"), FP_EPROTO);   /* RESULT */
  ck_assert_int_eq(DT("\x00\xff\xa1" "f\x01\xc0"), FP_EPROTO);   /* id -1 */
  ck_assert_int_eq(DT("\x00\x05\xa0\x01\xc0"), FP_EPROTO);       /* empty */
  ck_assert_int_eq(DT("\x00\x05\xc4\x01" "f\x01\xc0"), FP_EPROTO); /* bin */
  ck_assert_int_eq(DT("\x00\x05\xa1" "f\x00\xc0"), FP_EPROTO);   /* n 0 */
  ck_assert_int_eq(DT("\x00\x05\xa1" "f\xcf\0\0\0\x01\0\0\0\0\xc0"),
                   FP_EPROTO);                                    /* n 2^32 */
  ck_assert_int_eq(DT("\x00\x05\xa1" "f\x01"), FP_EPROTO);       /* no args */
  ck_assert_int_eq(DT("\x00\x05\xa1"), FP_EPROTO);               /* cut */
  ck_assert_int_eq(DT("\x90\x05\xa1" "f\x01\xc0"), FP_EPROTO);
  ck_assert_int_eq(DT(""), FP_EPROTO);
#undef DT
  /* A name of FP__MAX_NAME bytes, and one more. */
  unsigned char b[8 + FP__MAX_NAME + 1];
  for (size_t len = FP__MAX_NAME; len <= FP__MAX_NAME + 1; len++) {
    size_t n = 0;
    b[n++] = 0x00;
    b[n++] = 0x07;
    b[n++] = 0xda; /* str 16 */
    b[n++] = (unsigned char)(len >> 8);
    b[n++] = (unsigned char)len;
    memset(b + n, 'q', len);
    n += len;
    b[n++] = 0x01;
    b[n++] = 0xc0;
    ck_assert_int_eq(decode_task(b, n), len <= FP__MAX_NAME ? 0 : FP_EPROTO);
  }
}
END_TEST

/* fp__decode_result_head on a body of exactly len bytes. */
static int result_head(const void *p, size_t len, uint64_t *id, int *code,
                       size_t *off)
{
  char *b = malloc(len ? len : 1);
  ck_assert_ptr_nonnull(b);
  memcpy(b, p, len);
  int rc = fp__decode_result_head(b, len, id, code, off);
  free(b);
  return rc;
}

START_TEST(test_result_head)
{
  uint64_t id;
  int code;
  size_t off;
#define RH(s) result_head(s, sizeof s - 1, &id, &code, &off)
  ck_assert_int_eq(RH("\x01\x07\x00\xc0"), 0);
  ck_assert(id == 7 && code == 0 && off == 3);
  ck_assert_int_eq(RH("\x01\xcf\x80\0\0\0\0\0\0\0\xd2\xff\xff\xff\xfe"), 0);
  ck_assert(id == 1ULL << 63 && code == -2 && off == 15);
  ck_assert_int_eq(RH("\x01\x00\xd1\xec\x79"), 0);
  ck_assert_int_eq(code, -4999);
  ck_assert_int_eq(RH("\xd3\0\0\0\0\0\0\0\x01\x00\xcd\x00\x00"), 0);
  ck_assert_int_eq(code, 0);
  ck_assert_int_eq(RH("\x01\x00\xd1\xec\x78"), FP_EPROTO); /* -5000 */
  ck_assert_int_eq(RH("\x01\x00\x01"), FP_EPROTO);        /* positive */
  ck_assert_int_eq(RH("\x01\x00\xc2"), FP_EPROTO);
  ck_assert_int_eq(RH("\x00\x00\x00"), FP_EPROTO);        /* a TASK */
  ck_assert_int_eq(RH("\x01\xff\x00"), FP_EPROTO);        /* id -1 */
  ck_assert_int_eq(RH("\x01\x00"), FP_EPROTO);
  ck_assert_int_eq(RH("\x01\x00\xd1\xec"), FP_EPROTO);
  ck_assert_int_eq(RH("\x01\x00\xdd\xff\xff\xff\xff"), FP_EPROTO);
#undef RH
  /* Every code fp__encode_result_head writes comes back. */
  static const int codes[] = {0, -1, -31, -32, -33, -127, -128, -129, -4999};
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    msgpack_sbuffer_clear(&sb);
    ck_assert_int_eq(fp__encode_result_head(&sb, 1000 + i, codes[i]), 0);
    ck_assert_int_eq(result_head(sb.data + FP__HDR, sb.size - FP__HDR, &id,
                                 &code, &off), 0);
    ck_assert(id == 1000 + i && code == codes[i] && off == sb.size - FP__HDR);
  }
  msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* --- fp__future_finish ---------------------------------------------------- */

/*
 * future.c gives msgpack_unpack an unallocated zone for a result without
 * containers: msgpack-c must neither allocate from it nor write it.
 */
START_TEST(test_scalars_leave_zone_alone)
{
  static const struct {
    const char *b;
    size_t n;
  } v[] = {
#define V(s) {s, sizeof s - 1}
      V("\x05"), V("\xc0"), V("\xc3"), V("\xd3\x80\0\0\0\0\0\0\0"),
      V("\xca\x3f\x80\0\0"), V("\xcb\x3f\xf0\0\0\0\0\0\0"), V("\xa2" "hi"),
      V("\xdb\0\0\0\x01" "x"), V("\xc4\x01\x00"), V("\xc7\x01\x05\x00"),
      V("\xd8\x05" "0123456789abcdef"), V("\xa0"),
#undef V
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    msgpack_zone z, zero;
    memset(&z, 0, sizeof z);
    memset(&zero, 0, sizeof zero);
    msgpack_object o;
    size_t off = 0;
    ck_assert_int_eq(msgpack_unpack(v[i].b, v[i].n, &off, &z, &o),
                     MSGPACK_UNPACK_SUCCESS);
    ck_assert_mem_eq(&z, &zero, sizeof z);
  }
}
END_TEST

/* A future for n items, finished with the bytes p (a copy it takes). */
static fp_future *finish(unsigned n, const void *p, size_t len)
{
  fp_future *f = fp__future_new(NULL);
  ck_assert_ptr_nonnull(f);
  f->nitems = n;
  char *body = malloc(len + 3);
  ck_assert_ptr_nonnull(body);
  memcpy(body, "\x01\x01\x00", 3); /* a RESULT head, read by the caller */
  memcpy(body + 3, p, len);
  fp__future_finish(f, body, 3, len + 3);
  ck_assert(fp__future_is_done(f));
  return f;
}

static void release(fp_future *f)
{
  fp_future_release(f);
  fp_future_release(f);
}

START_TEST(test_finish_single)
{
  /* No container: no heap zone, and the value msgpack-c gives. */
  fp_future *f = finish(1, "\xa3" "abc", 4);
  ck_assert_int_eq(f->state, FP_FINISHED);
  ck_assert_ptr_null(f->zone);
  ck_assert_int_eq(f->result.type, MSGPACK_OBJECT_STR);
  ck_assert_ptr_eq(f->result.via.str.ptr, f->result_buf + 4);
  ck_assert_uint_eq(f->result.via.str.size, 3);
  release(f);

  f = finish(1, "\xd1\xff\x00", 3);
  ck_assert_int_eq(f->state, FP_FINISHED);
  ck_assert_ptr_null(f->zone);
  ck_assert_int_eq(f->result.type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
  ck_assert_int_eq(f->result.via.i64, -256);
  release(f);

  /* A float is read by hand, an ext through msgpack_unpack: neither keeps
   * a zone. */
  f = finish(1, "\xcb\x3f\xf8\0\0\0\0\0\0", 9);
  ck_assert_int_eq(f->state, FP_FINISHED);
  ck_assert_ptr_null(f->zone);
  ck_assert_int_eq(f->result.type, MSGPACK_OBJECT_FLOAT64);
  ck_assert_double_eq(f->result.via.f64, 1.5);
  release(f);

  f = finish(1, "\xd5\x07\x01\x02", 4);
  ck_assert_int_eq(f->state, FP_FINISHED);
  ck_assert_ptr_null(f->zone);
  ck_assert_int_eq(f->result.type, MSGPACK_OBJECT_EXT);
  ck_assert_int_eq(f->result.via.ext.type, 7);
  ck_assert_ptr_eq(f->result.via.ext.ptr, f->result_buf + 5);
  ck_assert_uint_eq(f->result.via.ext.size, 2);
  release(f);

  /* Containers keep theirs. */
  f = finish(1, "\x92\x01\x81\xa1" "k\xc3", 6);
  ck_assert_int_eq(f->state, FP_FINISHED);
  ck_assert_ptr_nonnull(f->zone);
  ck_assert_int_eq(f->result.type, MSGPACK_OBJECT_ARRAY);
  ck_assert_uint_eq(f->result.via.array.size, 2);
  ck_assert_int_eq(f->result.via.array.ptr[1].type, MSGPACK_OBJECT_MAP);
  release(f);

  f = finish(1, "\x90", 1);
  ck_assert_int_eq(f->state, FP_FINISHED);
  ck_assert_uint_eq(f->result.via.array.size, 0);
  release(f);

  /* Malformed: cut short, followed by more, none at all, 0xc1. */
  static const struct {
    const char *b;
    size_t n;
  } bad[] = {{"\xa3" "ab", 3}, {"\x01\x02", 2}, {"", 0}, {"\xc1", 1},
             {"\x92\x01", 2}, {"\x91\x01\xc0", 3}, {"\xcb\0", 2},
             {"\xd4\x01", 2}, {"\xca\0\0\0\0\xc0", 6}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    f = finish(1, bad[i].b, bad[i].n);
    ck_assert_int_eq(f->state, FP_FAILED);
    ck_assert_int_eq(f->err, FP_EPROTO);
    ck_assert_ptr_null(f->result_buf);
    release(f);
  }
}
END_TEST

START_TEST(test_finish_chunk)
{
  /* [[0, 1], [FP_ETASK, "k", "m"], [0, [1, {}]]], code 0 written as int64. */
  static const char answer[] = "\x93\x92\x00\x01\x93\xd1\xf0\x5f\xa1k\xa1m"
                               "\x92\xd3\0\0\0\0\0\0\0\0\x92\x01\x80";
  fp_future *f = finish(3, answer, sizeof answer - 1);
  ck_assert_int_eq(f->state, FP_FINISHED);
  ck_assert_ptr_null(f->zone);
  ck_assert_int_eq(f->result.type, MSGPACK_OBJECT_NIL);
  ck_assert_uint_eq(f->result_off, 3);
  ck_assert_uint_eq(f->chunk_ok, 2);
  ck_assert_mem_eq(f->result_buf + f->result_off, answer, sizeof answer - 1);
  release(f);

  /* FP_ETASK and FP_ENOTASK, the failures a worker sends. */
  f = finish(2, "\x92\x93\xd1\xf0\x5f\xa0\xa0\x93\xd1\xf0\x5c\xd9\x01k\xa0",
             15);
  ck_assert_int_eq(f->state, FP_FINISHED);
  ck_assert_uint_eq(f->chunk_ok, 0);
  release(f);

  /* Each value on its own may nest as deep as a single result. */
  unsigned char b[64];
  for (unsigned depth = 31; depth <= 33; depth++) {
    size_t n = 0;
    memcpy(b, "\x92\x92\x00", 3);
    n = 3 + nest(b + 3, depth, 0, "\x01", 1);
    memcpy(b + n, "\x92\x00\xc0", 3);
    f = finish(2, b, n + 3);
    ck_assert_int_eq(f->state, depth <= 32 ? FP_FINISHED : FP_FAILED);
    release(f);
  }

  static const struct {
    const char *b;
    size_t n;
  } bad[] = {
#define V(s) {s, sizeof s - 1}
      V("\x92\x92\x00\x01"),                 /* one entry short */
      V("\x93\x92\x00\x01\x92\x00\x01\x92\x00\x01"), /* one too many */
      V("\x92\x92\x00\x01\x92\x01\x01"),     /* code 1 */
      V("\x92\x92\x00\x01\x91\x00"),         /* [0] */
      V("\x92\x92\x00\x01\x93\x00\xa0\xa0"), /* [0, "", ""] */
      V("\x92\x92\x00\x01\x92\xff\xa0"),     /* [-1, ""] */
      V("\x92\x92\x00\x01\x93\xd1\xec\x78\xa0\xa0"), /* -5000 */
      V("\x92\x92\x00\x01\x93\xfc\xa0\xa0"), /* -4: not a worker's */
      V("\x92\x92\x00\x01\x93\xd1\xf0\x5d\xa0\xa0"), /* FP_EBROKEN */
      V("\x92\x92\x00\x01\x93\xd0\x83\xa0\xa0"), /* FP_ECANCELLED */
      V("\x92\x92\x00\x01\x93\xff\xa0\x01"), /* message not a str */
      V("\x92\x92\x00\x01\x93\xff\xc4\x00\xa0"), /* kind a bin */
      V("\x92\x92\x00\x01\x92\x00\x01\xc0"), /* followed by more */
      V("\x92\x92\x00\x01\x92\x00"),         /* cut short */
      V("\x92\x92\x00\x01\x92\x00\xc1"),     /* not msgpack */
      V("\x92\x92\x00\x01\x81\x00\x01"),     /* an entry not an array */
      V("\x82\x00\x01\x01\x01"),             /* a map */
      V("\xdd\xff\xff\xff\xff"),             /* a count far too large */
      V(""),
#undef V
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    f = finish(2, bad[i].b, bad[i].n);
    ck_assert_msg(f->state == FP_FAILED && f->err == FP_EPROTO, "case %zu",
                  i);
    ck_assert_ptr_null(f->result_buf);
    release(f);
  }
}
END_TEST

static Suite *codec_suite(void)
{
  Suite *s = suite_create("codec");

  TCase *skip = tcase_create("skip");
  tcase_add_checked_fixture(skip, setup, teardown);
  tcase_set_timeout(skip, 120); /* the random inputs, under sanitizers */
  tcase_add_test(skip, test_every_type_byte);
  tcase_add_test(skip, test_truncated_everywhere);
  tcase_add_test(skip, test_str_bin_ext_widths);
  tcase_add_test(skip, test_nesting_limit);
  tcase_add_test(skip, test_huge_counts);
  tcase_add_test(skip, test_random_inputs);
  tcase_add_test(skip, test_read_integers);
  tcase_add_test(skip, test_read_floats);
  suite_add_tcase(s, skip);

  TCase *msg = tcase_create("messages");
  tcase_add_checked_fixture(msg, setup, teardown);
  tcase_add_test(msg, test_encode_task_bytes);
  tcase_add_test(msg, test_decode_task_strict);
  tcase_add_test(msg, test_result_head);
  suite_add_tcase(s, msg);

  TCase *fin = tcase_create("finish");
  tcase_add_test(fin, test_scalars_leave_zone_alone);
  tcase_add_test(fin, test_finish_single);
  tcase_add_test(fin, test_finish_chunk);
  suite_add_tcase(s, fin);

  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(codec_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed > 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

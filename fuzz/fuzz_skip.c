/*
 * The zone-free msgpack readers (lib/codec.c) against msgpack-c itself:
 * fp__skip_object, fp__count_objects and the readers fp__read_uint,
 * fp__read_code, fp__read_str, fp__read_array and fp__read_plain, the
 * readers through tests/codec-oracle.h.  tests/check_codec.c does
 * the same on fixed and pseudo-random inputs; this target lets libFuzzer
 * look for what those miss.
 *
 * Input: one control byte, then the bytes to read.
 *   the control byte  where to start, as an offset into the bytes (modulo
 *                     their length + 1)
 *
 * Checks, beyond the sanitizers: at that offset, fp__skip_object accepts
 * exactly when msgpack_unpack returns SUCCESS or EXTRA_BYTES, and ends
 * where it ends; each reader accepts exactly the objects msgpack-c reads as
 * its type (fp__read_array: at least those arrays; it reads the header
 * only), with the same value and end, and moves nothing when it refuses;
 * fp__count_objects counts what msgpack_unpack, called until the end,
 * counts.  The bytes are an allocation of their exact size, so a read past
 * them is an ASan report.  msgpack-c's allocations over 64 MiB fail under
 * fuzz.sh, which it reports as NOMEM_ERROR: a refusal like any other.
 */
#include "forkpool-private.h"

#include "fuzz.h"

#define ORACLE_CHECK FZ_CHECK
#include "../tests/codec-oracle.h"

static msgpack_zone zone;

/* 1 if msgpack_unpack reads one object at off, with its end and value. */
static int mp_one(const char *b, size_t len, size_t off, size_t *end,
                  msgpack_object *o)
{
  msgpack_zone_clear(&zone);
  *end = off;
  msgpack_unpack_return rc = msgpack_unpack(b, len, end, &zone, o);
  return rc == MSGPACK_UNPACK_SUCCESS || rc == MSGPACK_UNPACK_EXTRA_BYTES;
}

static void check_skip(const char *b, size_t len, size_t off, int ok,
                       size_t end)
{
  size_t i = off;
  int rc = fp__skip_object(b, len, &i);
  FZ_CHECK(rc == (ok ? 0 : FP_EPROTO));
  FZ_CHECK(i == (ok ? end : off));
}

static void check_count(const char *b, size_t len)
{
  size_t off = 0, want = 0, end, n;
  msgpack_object o;
  int ok = 1;
  while (off < len && (ok = mp_one(b, len, off, &end, &o)))
    off = end, want++;
  int rc = fp__count_objects(b, len, &n);
  FZ_CHECK(rc == (ok ? 0 : FP_EINVAL));
  FZ_CHECK(!ok || n == want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fz z = {data, size};
  uint8_t ctl = fz_u8(&z);
  size_t len = z.n, off = ctl % (len + 1);
  char *b = malloc(len ? len : 1);
  FZ_CHECK(b != NULL);
  memcpy(b, z.p, len);
  FZ_CHECK(msgpack_zone_init(&zone, 1024));

  size_t end;
  msgpack_object o;
  int ok = mp_one(b, len, off, &end, &o);
  check_skip(b, len, off, ok, end);
  oracle_readers(b, len, off, ok, end, &o);
  check_count(b, len);

  msgpack_zone_destroy(&zone);
  free(b);
  return 0;
}

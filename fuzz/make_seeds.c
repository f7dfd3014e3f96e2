/*
 * Writes the seed corpus of each fuzz target into DIR/<target>/: messages
 * made by the real encoders (fp__encode_task, fp__encode_result_head and
 * msgpack's packers), plus a few malformed ones by hand.  Each file starts
 * with the control bytes its target's comment describes.
 *
 *   make_seeds DIR     (fuzz/README says how to rebuild fuzz/corpus)
 */
#include "forkpool-private.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *outdir;

/* A string literal and its length, NULs included. */
#define LIT(s) s, sizeof s - 1

/* A seed being built. */
typedef struct seed {
  char d[16384];
  size_t n;
} seed;

static void die(const char *what)
{
  fprintf(stderr, "make_seeds: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void add(seed *s, const void *p, size_t n)
{
  if (n == 0)
    return; /* p may be an empty sbuffer's NULL */
  if (n > sizeof s->d - s->n) {
    errno = EOVERFLOW;
    die("seed too large");
  }
  memcpy(s->d + s->n, p, n);
  s->n += n;
}

static void add_byte(seed *s, int b)
{
  unsigned char c = (unsigned char)b;
  add(s, &c, 1);
}

static void add_sb(seed *s, const msgpack_sbuffer *sb)
{
  add(s, sb->data, sb->size);
}

static void put(const char *target, const char *name, const seed *s)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", outdir, target);
  if (mkdir(path, 0777) != 0 && errno != EEXIST)
    die(path);
  snprintf(path, sizeof path, "%s/%s/%s", outdir, target, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(s->d, 1, s->n, f) != s->n || fclose(f) != 0)
    die(path);
  printf("%s\n", path);
}

/* A seed that starts with the given control bytes. */
static seed *start(seed *s, int nctl, ...)
{
  va_list ap;
  s->n = 0;
  va_start(ap, nctl);
  for (int i = 0; i < nctl; i++)
    add_byte(s, va_arg(ap, int));
  va_end(ap);
  return s;
}

/* Packs fmt into a fresh sbuffer (freed by the caller). */
static void packf(msgpack_sbuffer *sb, const char *fmt, ...)
{
  msgpack_packer pk;
  va_list ap;
  msgpack_sbuffer_init(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  va_start(ap, fmt);
  if (fp_vpack(&pk, fmt, ap) != 0) {
    errno = EINVAL;
    die(fmt);
  }
  va_end(ap);
}

/* --- TASK and RESULT messages -------------------------------------------- */

/* A TASK frame for n items, the items packed from fmt; with its header. */
static void task(seed *s, int with_header, uint64_t id, const char *name,
                 unsigned n, const char *fmt, ...)
{
  msgpack_sbuffer args;
  msgpack_packer pk;
  va_list ap;
  char *frame = NULL;
  size_t len;
  msgpack_sbuffer_init(&args);
  msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
  va_start(ap, fmt);
  if (fmt != NULL && fp_vpack(&pk, fmt, ap) != 0) {
    errno = EINVAL;
    die(fmt);
  }
  va_end(ap);
  /* No items yet (the caller adds them): a pointer all the same. */
  if (fp__encode_task(id, name, n, args.size ? args.data : "", args.size,
                      NULL, &frame, &len) != 0)
    die("fp__encode_task");
  add(s, frame + (with_header ? 0 : FP__HDR), len - (with_header ? 0 : FP__HDR));
  free(frame);
  msgpack_sbuffer_destroy(&args);
}

/* A RESULT frame for id and code, the rest packed from fmt (NULL: none). */
static void result(seed *s, uint64_t id, int code, const char *fmt, ...)
{
  msgpack_sbuffer sb;
  msgpack_packer pk;
  va_list ap;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  if (fp__encode_result_head(&sb, id, code) != 0)
    die("fp__encode_result_head");
  va_start(ap, fmt);
  if (fmt != NULL && fp_vpack(&pk, fmt, ap) != 0) {
    errno = EINVAL;
    die(fmt);
  }
  va_end(ap);
  fp__frame_seal(sb.data, sb.size - FP__HDR);
  add_sb(s, &sb);
  msgpack_sbuffer_destroy(&sb);
}

/* A failed RESULT frame: code, kind, message. */
static void failure(seed *s, uint64_t id, int code, const char *kind,
                    const char *message)
{
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  if (fp__encode_result_head(&sb, id, code) != 0 ||
      msgpack_pack_str_with_body(&pk, kind, strlen(kind)) != 0 ||
      msgpack_pack_str_with_body(&pk, message, strlen(message)) != 0)
    die("fp__encode_result_head");
  fp__frame_seal(sb.data, sb.size - FP__HDR);
  add_sb(s, &sb);
  msgpack_sbuffer_destroy(&sb);
}

/* A frame around raw body bytes. */
static void raw_frame(seed *s, const void *body, size_t len)
{
  char hdr[FP__HDR];
  fp__frame_seal(hdr, len);
  add(s, hdr, sizeof hdr);
  add(s, body, len);
}

/* --- Per target ------------------------------------------------------------ */

static void frame_seeds(void)
{
  seed s;
  const char *t = "fuzz_frame";
  put(t, "empty", start(&s, 1, 0));
  task(start(&s, 1, 0), 1, 1, "echo", 1, "i", 42);
  put(t, "task", &s);
  task(start(&s, 1, 5 << 2), 1, 1, "echo", 1, "i", 1);
  task(&s, 1, 2, "square", 3, "[i i]", 1, 2);
  task(&s, 1, 3, "echo", 1, "s", "three");
  put(t, "three-in-pieces", &s);
  result(start(&s, 1, 1 << 2), 0, 0, "n");
  result(&s, 1, FP_ETASK, "[s s]", "TypeError", "bad");
  put(t, "results-bytewise", &s);
  raw_frame(start(&s, 1, 0), "", 0);
  raw_frame(&s, "x", 1);
  put(t, "empty-body", &s);
  raw_frame(start(&s, 1, 1), "", 0); /* max 0: only empty bodies */
  raw_frame(&s, "x", 1);
  put(t, "max-zero", &s);
  task(start(&s, 1, 0), 1, 1, "echo", 1, "s", "truncated");
  s.n -= 3;
  put(t, "truncated-body", &s);
  add(start(&s, 1, 3 << 2), "\x07\x00", 2);
  put(t, "partial-header", &s);
  raw_frame(start(&s, 1, 2), "abc", 3); /* max 5 */
  raw_frame(&s, "abcdef", 6);
  put(t, "over-max", &s);
  add(start(&s, 1, 0), "\xff\xff\xff\xff" "x", 5);
  put(t, "length-4gib", &s);
  static char big[3000];
  memset(big, 'b', sizeof big);
  task(start(&s, 1, 9 << 2), 1, 9, "echo", 1, "y", big, sizeof big);
  raw_frame(&s, "", 0);
  put(t, "large-body-in-pieces", &s);
}

static void result_seeds(void)
{
  seed s;
  const char *t = "fuzz_result";
  /* c0: futures-1 | starting 4 | send pending 8 | close 16 | killed 32 |
   * chunks << 6;  c1: max 1024 | pieces << 1;  c2: failing allocation. */
  result(start(&s, 3, 4, 0, 0), 0, 0, "n");
  result(&s, 1, 0, "i", 42);
  put(t, "ready-then-result", &s);
  result(start(&s, 3, 0, 0, 0), 1, 0, "n");
  put(t, "result", &s);
  /* In the ring, which holds the input's first bytes: byte 0 is c0 = 0x01,
   * a fixint; bytes 0-2 are three fixints, two too many. */
  char ring[FP__RESULT_SHM_MAX];
  add(start(&s, 3, 1, 0, 0), ring, fp__encode_result_shm(ring, 1, 0, 1));
  add(&s, ring, fp__encode_result_shm(ring, 2, 1, 1));
  put(t, "ring-results", &s);
  add(start(&s, 3, 0, 0, 0), ring, fp__encode_result_shm(ring, 1, 0, 3));
  put(t, "ring-result-extra", &s);
  add(start(&s, 3, 0, 0, 0), ring, fp__encode_result_shm(ring, 1, 5, 64));
  add(&s, ring, fp__encode_result_shm(ring, 1, 0, 1)); /* before the tail */
  put(t, "ring-result-behind", &s);
  failure(start(&s, 3, 16, 0, 0), 1, FP_ETASK, "TypeError", "bad args");
  put(t, "failure", &s);
  result(start(&s, 3, 2, 3 << 1, 0), 1, 0, "{s: [i s]}", "k", 1, "v");
  failure(&s, 2, FP_ENOTASK, "NoTask", "no task named 'x'");
  result(&s, 3, 0, "y", "\x01\x02", (size_t)2);
  put(t, "three-in-pieces", &s);
  result(start(&s, 3, 1 << 6, 0, 0), 1, 0, "[[i n] [i s s]]", 0, FP_ETASK,
         "Boom", "item 2 failed");
  put(t, "chunk", &s);
  result(start(&s, 3, (2 << 6) | 1, 0, 0), 1, 0, "[[i s] [i f]]", 0, "a", 0,
         1.5);
  result(&s, 2, 0, "[[i s s] [i n]]", FP_ETASK, "K", "m", 0);
  put(t, "two-chunks", &s);
  failure(start(&s, 3, 3 << 6, 1, 0), 1, FP_EMSGSIZE, "ResultTooLarge",
          "a chunk of 3 results is 4000 bytes, over max_message");
  put(t, "chunk-too-large", &s);
  failure(start(&s, 3, 4, 0, 0), 0, FP_ETASK, "InitError", "init returned 1");
  put(t, "init-failure", &s);
  result(start(&s, 3, 0, 0, 0), 7, 0, "n");
  put(t, "wrong-id", &s);
  result(start(&s, 3, 0, 0, 0), 1, 0, "n");
  s.d[3 + 0] += 1; /* the body is one byte longer: one more nil */
  add_byte(&s, 0xc0);
  put(t, "extra-object", &s);
  result(start(&s, 3, 0, 0, 0), 1, FP_ETASK, "[i i]", 5, 6);
  put(t, "failure-not-strings", &s);
  static char big[2000];
  result(start(&s, 3, 0, 1, 0), 1, 0, "y", big, sizeof big); /* max 1024 */
  put(t, "over-max", &s);
  result(start(&s, 3, 1 | 16 | 32, 0, 0), 1, 0, "b", 1);
  put(t, "killed-after-one", &s);
  result(start(&s, 3, 1 | 8, 0, 0), 1, 0, "n");
  result(&s, 2, 0, "n");
  put(t, "answer-before-sent", &s);
  result(start(&s, 3, 0, 0, 1), 1, 0, "n");
  put(t, "first-allocation-fails", &s);
  raw_frame(start(&s, 3, 0, 0, 0), "\x01\x01\x07\xc0", 4);
  put(t, "code-positive", &s);
  raw_frame(start(&s, 3, 0, 0, 0), "\x01\x01\xd1\xec\x78\xa1k\xa1m", 9);
  put(t, "code-below-range", &s); /* -5000 */
}

/* A TASK frame body naming len bytes at off in the shared area. */
static void task_shm(seed *s, uint64_t id, const char *name, unsigned n,
                     size_t off, size_t len)
{
  char frame[FP__HDR + 20 + FP__MAX_NAME + FP__SHM_REF];
  size_t flen;
  if (fp__encode_task_shm(id, name, n, off, len, frame, &flen) != 0)
    die("fp__encode_task_shm");
  add(s, frame + FP__HDR, flen - FP__HDR);
}

static void task_seeds(void)
{
  seed s;
  const char *t = "fuzz_task";
  /* The control byte: max_message 1024 if bit 0. */
  task(start(&s, 1, 0), 0, 1, "echo", 1, "i", 42);
  put(t, "echo", &s);
  task(start(&s, 1, 0), 0, 2, "echo", 1, "{s: [i s b n f]}", "a", 1, "x", 1,
       2.5);
  put(t, "echo-map", &s);
  task(start(&s, 1, 0), 0, 3, "echo", 3, NULL); /* 1, "two", [3] */
  add(&s, LIT("\x01\xa3two\x91\x03"));
  put(t, "echo-chunk", &s);
  task(start(&s, 1, 0), 0, 4, "fail", 1, "s", "x");
  put(t, "fail", &s);
  task(start(&s, 1, 0), 0, 5, "fail", 2, NULL);
  add(&s, LIT("\xc0\x01"));
  put(t, "fail-chunk", &s);
  task(start(&s, 1, 0), 0, 6, "rc", 1, "n");
  put(t, "rc", &s);
  task(start(&s, 1, 0), 0, 7, "none", 1, "n");
  put(t, "none", &s);
  task(start(&s, 1, 0), 0, 8, "two", 1, "n");
  put(t, "two", &s);
  task(start(&s, 1, 0), 0, 9, "bad", 1, "n");
  put(t, "bad-bytes", &s);
  task(start(&s, 1, 0), 0, 10, "bad", 1, "i", 1);
  put(t, "bad-unfinished", &s);
  task(start(&s, 1, 1), 0, 11, "big", 1, "i", 2000);
  put(t, "big-over-max", &s);
  task(start(&s, 1, 1), 0, 12, "big", 2, NULL); /* 600, 600 */
  add(&s, LIT("\xcd\x02\x58\xcd\x02\x58"));
  put(t, "big-chunk-over-max", &s);
  /* Arguments in fuzz_task's shared area of fixints. */
  task_shm(start(&s, 1, 0), 15, "echo", 1, 7, 1);
  put(t, "shm-echo", &s);
  task_shm(start(&s, 1, 0), 16, "echo", 3, 100, 3);
  put(t, "shm-chunk", &s);
  task_shm(start(&s, 1, 0), 17, "echo", 1, 4095, 2);
  put(t, "shm-past-end", &s);
  task(start(&s, 1, 0), 0, 13, "unpack", 1, "[i s]", 7, "seven");
  put(t, "unpack", &s);
  task(start(&s, 1, 0), 0, 14, "unpack", 1, "i", 5);
  put(t, "unpack-wrong-type", &s);
  task(start(&s, 1, 0), 0, 15, "nosuch", 1, "n");
  put(t, "no-task", &s);
  /* Malformed by hand. */
  add(start(&s, 1, 0), "\x00\x01\xa4" "echo\x00\xc0", 8);
  put(t, "zero-items", &s);
  add(start(&s, 1, 0), "\x00\x01\xa4" "echo\x02\xc0", 8);
  put(t, "items-missing", &s);
  add(start(&s, 1, 0), "\x00\x01\xa4" "echo\x01\xc0\xc0", 9);
  put(t, "extra-object", &s);
  add(start(&s, 1, 0), "\x00\x01\xa4" "echo\x01\xc1", 8);
  put(t, "args-not-msgpack", &s);
  add(start(&s, 1, 0), "\x01\x01\xa4" "echo\x01\xc0", 8);
  put(t, "result-type", &s);
  add(start(&s, 1, 0), "\x00\x01\x05\x01\xc0", 5);
  put(t, "name-not-str", &s);
  static char name[257];
  memset(name, 'n', 256);
  task(start(&s, 1, 0), 0, 16, name, 1, "n");
  put(t, "name-too-long", &s);
  put(t, "empty", start(&s, 1, 0));
}

/*
 * A fuzz_pack seed: the format, the object from ofmt, then raw argument
 * bytes (see make_pack_args and check_unpack in fuzz_pack.c).
 */
static void pack_seed(const char *name, const char *fmt, const void *args,
                      size_t args_len, const char *ofmt, ...)
{
  seed s;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  va_list ap;
  s.n = 0;
  add_byte(&s, (int)strlen(fmt));
  add(&s, fmt, strlen(fmt));
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  va_start(ap, ofmt);
  if (ofmt != NULL && fp_vpack(&pk, ofmt, ap) != 0) {
    errno = EINVAL;
    die(ofmt);
  }
  va_end(ap);
  add_byte(&s, (int)sb.size);
  add_sb(&s, &sb);
  add(&s, args, args_len);
  msgpack_sbuffer_destroy(&sb);
  put("fuzz_pack", name, &s);
}

static char *nested(int depth)
{
  static char buf[2 * 65 + 1];
  for (int i = 0; i < depth; i++) {
    buf[i] = '[';
    buf[2 * depth - 1 - i] = ']';
  }
  buf[2 * depth] = '\0';
  return buf;
}

static void pack_seeds(void)
{
  /* Pack arguments: i 4 bytes; s a length byte (0xff: NULL) and bytes; s#
   * and y the same (0xfe, 0xfd: bad pairs); O a byte choosing the object.
   * Then, for fp_unpack, each pointer slot: a key length byte (0xff: NULL)
   * and the key. */
  pack_seed("nil", "n", LIT(""), NULL);
  pack_seed("array", "[i s]", LIT("\x07\x00\x00\x00" "\x03" "abc"), "[i s]",
            7, "seven");
  pack_seed("man-page", "{s: s, s: [f, f], s: b}",
            LIT("\x01" "n" "\x02" "ab" "\x02" "at"
                "\x00\x00\x00\x00\x00\x00\xf8\x3f"
                "\x00\x00\x00\x00\x00\x00\x00\x00"
                "\x02" "fx" "\x01\x00\x00\x00"
                /* fp_unpack: key, s (two), key, f, f, key, b */
                "\x01" "n" "\x00" "\x00" "\x02" "at" "\x00" "\x00" "\x02" "fx"
                "\x00"),
            "{s: s, s: [f, f], s: b}", "n", "origin", "at", 0.0, 0.0, "fx", 1);
  pack_seed("bytes", "[y s#]", LIT("\x03" "xyz" "\xff"), "[y s]", "xyz",
            (size_t)3, "ab");
  pack_seed("bad-pairs", "[y s#]", LIT("\xfe" "\xfd"), "y", "", (size_t)0);
  pack_seed("object", "O", LIT("\x00"), "{s: [i [n b] {}] s: y}", "k", -1, 0,
            "y", "\x00\x01", (size_t)2);
  pack_seed("broken-object", "[O O O]", LIT("\x02\x03\x04"), "n");
  pack_seed("int64", "[I U u]",
            LIT("\x00\x00\x00\x00\x00\x00\x00\x80"
                "\xff\xff\xff\xff\xff\xff\xff\xff" "\xff\xff\xff\xff"),
            "[I U U]", INT64_MIN, UINT64_MAX, (uint64_t)UINT_MAX + 1);
  pack_seed("int-edges", "[i i i i]", LIT(""), "[I I I I]", (int64_t)INT_MIN,
            (int64_t)INT_MAX, (int64_t)INT_MIN - 1, (int64_t)INT_MAX + 1);
  pack_seed("floats", "[f f b o]", LIT(""), "[i f b n]", 1, 1.5, 1);
  pack_seed("depth-64", nested(64), LIT(""), "n");
  pack_seed("depth-65", nested(65), LIT(""), "n");
  pack_seed("missing-key", "{s: i}", LIT("\x01" "a"), "{s: i}", "b", 1);
  pack_seed("nested-map", "{s:[i s] s:n}",
            LIT("\x01" "k" "\x05\x00\x00\x00" "\x01" "v" "\x01" "z"),
            "{s: [i s] s: n}", "k", 5, "v", "z");
  pack_seed("unclosed", "[i", LIT(""), "n");
  pack_seed("odd-map", "{i}", LIT(""), "n");
  pack_seed("two-values", "i i", LIT(""), "n");
  pack_seed("unknown-letter", "q", LIT(""), "n");
  pack_seed("separators", ",,[iii]::", LIT(""), "[i i i]", 1, 2, 3);
}

/*
 * fuzz_skip seeds: a control byte of 0 (start at the front), then msgpack:
 * each kind of value, and containers nested as deep as msgpack-c takes and
 * one deeper.
 */
static void skip_seeds(void)
{
  seed s;
  const char *t = "fuzz_skip";
  start(&s, 1, 0);
  add(&s, LIT("\x00\xff\xc0\xc3\xcc\x80\xd1\xec\x79\xcf\0\0\0\x01\0\0\0\0"
              "\xca\0\0\0\0\xcb\0\0\0\0\0\0\0\0"));
  put(t, "scalars", &s);
  start(&s, 1, 0);
  add(&s, LIT("\xa2" "ab\xd9\x01" "a\xda\0\x01" "a\xdb\0\0\0\x01" "a\xc4\x01"
              "b\xc5\0\0\xc6\0\0\0\0\xc7\0\x01\xc8\0\x01\x01" "e\xc9\0\0\0\0"
              "\x01\xd4\x01" "a\xd5\x01" "ab\xd8\x01" "0123456789abcdef"));
  put(t, "str-bin-ext", &s);
  start(&s, 1, 0);
  add(&s, LIT("\x92\x01\x82\xa1" "k\x90\x01\x80\xdc\0\x01\xc0\xdd\0\0\0\0"
              "\xde\0\x01\x01\x02\xdf\0\0\0\0"));
  put(t, "containers", &s);
  for (int depth = 32; depth <= 33; depth++) {
    start(&s, 1, 0);
    for (int i = 0; i < depth - 1; i++) /* arrays of one, then {} */
      add(&s, i % 2 ? "\x91" : "\xdc\0\x01", i % 2 ? 1 : 3);
    add_byte(&s, 0x80);
    put(t, depth == 32 ? "depth-32" : "depth-33", &s);
  }
}

int main(int argc, char **argv)
{
  if (argc != 2) {
    fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  outdir = argv[1];
  if (mkdir(outdir, 0777) != 0 && errno != EEXIST)
    die(outdir);
  frame_seeds();
  result_seeds();
  task_seeds();
  pack_seeds();
  skip_seeds();
  return 0;
}

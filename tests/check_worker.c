/* The worker's side of the pipes: its frame reader, which lends bodies from
 * the read-ahead or from one buffer it keeps, and payloads of every size
 * through a real worker that reuses that buffer.  lib/frame.c is compiled
 * into this program: the library does not export its internals. */
#define _GNU_SOURCE
#include "fpt.h"
#include "forkpool-private.h" /* the frame reader, compiled into this test */

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* --- A stream of frames, written by a child process ------------------------ */

typedef struct stream {
  char *buf;
  size_t len;
} stream;

static char pattern(unsigned frame, size_t i)
{
  return (char)(frame * 31 + i * 7);
}

/* Appends frame number k with a body of n pattern bytes. */
static void add_frame(stream *s, unsigned k, size_t n)
{
  s->buf = realloc(s->buf, s->len + FP__HDR + n);
  ck_assert_ptr_nonnull(s->buf);
  fp__frame_seal(s->buf + s->len, n);
  for (size_t i = 0; i < n; i++)
    s->buf[s->len + FP__HDR + i] = pattern(k, i);
  s->len += FP__HDR + n;
}

/* A child writes the stream into a pipe and exits: the read end is returned,
 * the child's pid in *pid.  It writes in pieces of piece bytes. */
static int write_in_child(const stream *s, size_t piece, pid_t *pid)
{
  int fds[2];
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  *pid = fork();
  ck_assert_int_ge(*pid, 0);
  if (*pid == 0) {
    close(fds[0]);
    for (size_t off = 0; off < s->len;) {
      size_t want = s->len - off < piece ? s->len - off : piece;
      ssize_t n = write(fds[1], s->buf + off, want);
      if (n <= 0)
        _exit(1);
      off += (size_t)n;
    }
    _exit(0);
  }
  close(fds[1]);
  return fds[0];
}

/* Ends a stream read with r from write_in_child's fd: frees, closes, and
 * checks that the writer exited cleanly. */
static void end_stream(fp__reader *r, int fd, pid_t pid)
{
  int st;
  fp__reader_free(r);
  close(fd);
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void check_body(const char *body, size_t len, unsigned k, size_t n)
{
  ck_assert_ptr_nonnull(body);
  ck_assert_uint_eq(len, n);
  for (size_t i = 0; i < n; i++)
    if (body[i] != pattern(k, i))
      ck_abort_msg("frame %u: byte %zu differs", k, i);
}

/* --- The reader ----------------------------------------------------------------- */

START_TEST(small_frames_are_lent_from_the_read_ahead)
{
  fpt_snapshot snap;
  fpt_begin(&snap);
  stream s = {NULL, 0};
  add_frame(&s, 0, 10);
  add_frame(&s, 1, 0); /* empty: still a real pointer */
  add_frame(&s, 2, 1000);
  pid_t pid;
  int fd = write_in_child(&s, s.len, &pid);
  fp__reader r;
  fp__reader_init(&r);
  enum fp__io io;
  char *buf = NULL;
  size_t cap = 0, len;
  const char *body;
  static const size_t sizes[] = {10, 0, 1000};
  for (unsigned k = 0; k < 3; k++) {
    ck_assert_int_eq(fp__read_frame_borrowed(fd, &r, 4096, &io, &buf, &cap,
                                             &body, &len), 0);
    ck_assert_int_eq(io, FP__IO_FRAME);
    check_body(body, len, k, sizes[k]);
  }
  ck_assert_ptr_null(buf); /* nothing copied */
  ck_assert_int_eq(fp__read_frame_borrowed(fd, &r, 4096, &io, &buf, &cap,
                                           &body, &len), 0);
  ck_assert_int_eq(io, FP__IO_EOF);
  end_stream(&r, fd, pid);
  free(s.buf);
  fpt_end(&snap);
}
END_TEST

/* Sizes that straddle the 64 KiB read-ahead, grow the buffer, shrink back
 * into it (stale bytes must not show), and many small ones between. */
START_TEST(large_frames_reuse_one_buffer)
{
  static const size_t sizes[] = {200000, 100000, 5, 300000, 65530, 65536,
                                 1,      70000,  300000, 3, 131072, 0};
  enum { N = sizeof sizes / sizeof *sizes };
  fpt_snapshot snap;
  fpt_begin(&snap);
  stream s = {NULL, 0};
  for (unsigned k = 0; k < N; k++)
    add_frame(&s, k, sizes[k]);
  static const size_t pieces[] = {(size_t)1 << 30, 4093};
  for (unsigned p = 0; p < 2; p++) {
    pid_t pid;
    int fd = write_in_child(&s, pieces[p], &pid);
    fp__reader r;
    fp__reader_init(&r);
    enum fp__io io;
    char *buf = NULL, *first = NULL;
    size_t cap = 0, len;
    const char *body;
    for (unsigned k = 0; k < N; k++) {
      ck_assert_int_eq(fp__read_frame_borrowed(fd, &r, 1 << 20, &io, &buf,
                                               &cap, &body, &len), 0);
      ck_assert_int_eq(io, FP__IO_FRAME);
      check_body(body, len, k, sizes[k]);
      if (k == 0)
        first = buf;
      if (k == 1)
        ck_assert_ptr_eq(buf, first); /* 100000 fits where 200000 was */
      ck_assert_uint_ge(cap, sizes[k] > 65536 ? sizes[k] : 0);
    }
    ck_assert_int_eq(fp__read_frame_borrowed(fd, &r, 1 << 20, &io, &buf,
                                             &cap, &body, &len), 0);
    ck_assert_int_eq(io, FP__IO_EOF);
    free(buf);
    end_stream(&r, fd, pid);
  }
  free(s.buf);
  fpt_end(&snap);
}
END_TEST

START_TEST(over_max_and_cut_short)
{
  fpt_snapshot snap;
  fpt_begin(&snap);
  /* Over the maximum: refused before anything is allocated, for good. */
  stream s = {NULL, 0};
  add_frame(&s, 0, 5000);
  pid_t pid;
  int fd = write_in_child(&s, s.len, &pid);
  fp__reader r;
  fp__reader_init(&r);
  enum fp__io io;
  char *buf = NULL;
  size_t cap = 0, len;
  const char *body;
  ck_assert_int_eq(fp__read_frame_borrowed(fd, &r, 4999, &io, &buf, &cap,
                                           &body, &len), FP_EPROTO);
  ck_assert_ptr_null(buf);
  ck_assert_int_eq(fp__read_frame_borrowed(fd, &r, 1 << 20, &io, &buf, &cap,
                                           &body, &len), FP_EPROTO);
  end_stream(&r, fd, pid);

  /* A large body cut short by the writer's exit is end of file. */
  s.len = 0;
  add_frame(&s, 1, 200000);
  s.len -= 1000;
  fd = write_in_child(&s, s.len, &pid);
  fp__reader_init(&r);
  ck_assert_int_eq(fp__read_frame_borrowed(fd, &r, 1 << 20, &io, &buf, &cap,
                                           &body, &len), 0);
  ck_assert_int_eq(io, FP__IO_EOF);
  free(buf);
  end_stream(&r, fd, pid);
  free(s.buf);
  fpt_end(&snap);
}
END_TEST

/* --- Through a real worker ------------------------------------------------------- */

static void pack_bytes(msgpack_sbuffer *sb, unsigned k, size_t n)
{
  char *arg = malloc(n + 1);
  ck_assert_ptr_nonnull(arg);
  for (size_t i = 0; i < n; i++)
    arg[i] = pattern(k, i);
  msgpack_packer pk;
  msgpack_sbuffer_clear(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  ck_assert_int_eq(fp_pack(&pk, "y", arg, n), 0);
  free(arg);
}

/* Echoes of every size, many queued at once behind each other: each comes
 * back whole, whatever buffer the worker read it into. */
START_TEST(echoes_of_every_size)
{
  static const size_t sizes[] = {
      3,      1 << 20, 300000, 9u << 20, 70000, 10,      65536, 2u << 20,
      65000,  0,       1 << 20, 100,     5000,  1 << 20, 7,     500000};
  enum { N = sizeof sizes / sizeof *sizes, ROUNDS = 3 };
  fpt_snapshot snap;
  fpt_begin(&snap);
  fp_pool *p = fpt_pool(1, 8);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  fp_future *f[N * ROUNDS];
  for (unsigned k = 0; k < N * ROUNDS; k++) {
    pack_bytes(&sb, k, sizes[k % N]);
    ck_assert_int_eq(fp_submit(p, "echo", sb.data, sb.size, &f[k]), 0);
  }
  for (unsigned k = 0; k < N * ROUNDS; k++) {
    const msgpack_object *r;
    ck_assert_int_eq(fp_future_result(f[k], FPT_LIMIT_MS, &r), 0);
    ck_assert_int_eq(r->type, MSGPACK_OBJECT_BIN);
    check_body(r->via.bin.ptr ? r->via.bin.ptr : "", r->via.bin.size, k,
               sizes[k % N]);
    fp_future_release(f[k]);
  }
  msgpack_sbuffer_destroy(&sb);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.worker_deaths, 0);
  fpt_pool_destroy(p);
  fpt_end(&snap);
}
END_TEST

/* --- Large results that point into the task's own body ------------------------ */

/* Packs its argument back: a large str or bin is written from the body. */
static int t_echo(fp_call *call, const msgpack_object *args,
                  msgpack_packer *out)
{
  (void)call;
  return msgpack_pack_object(out, *args);
}

/* [bytes, first]: writes bytes, raw, as its result, in pieces of first
 * bytes and then of the sizes below: runs of 64 KiB or more of the body
 * go out by reference, the rest is copied, and an object may straddle any
 * two pieces. */
static int t_raw(fp_call *call, const msgpack_object *args,
                 msgpack_packer *out)
{
  static const size_t sizes[] = {1, 65536, 70001, 3, 65535, 100000, 2, 9};
  enum { NSIZES = sizeof sizes / sizeof *sizes };
  const msgpack_object *a = args->via.array.ptr;
  if (args->type != MSGPACK_OBJECT_ARRAY || args->via.array.size != 2 ||
      a[0].type != MSGPACK_OBJECT_BIN ||
      a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return fp_call_fail(call, "TypeError", "raw takes [bytes, first]");
  const char *p = a[0].via.bin.ptr;
  size_t left = a[0].via.bin.size, piece = (size_t)a[1].via.u64;
  for (unsigned k = 0; left > 0; k++) {
    size_t n = piece < left ? piece : left;
    if (out->callback(out->data, p, n) != 0)
      return FP_ENOMEM;
    p += n, left -= n;
    piece = sizes[k % NSIZES];
  }
  return 0;
}

static const fp_task ref_tasks[] = {
    {"echo", t_echo}, {"raw", t_raw}, {NULL, NULL}};

/* shm_args: FP_SHM_OFF, for results that go out through the pipe by
 * reference, or 0, for large ones copied into the worker's ring. */
static fp_pool *ref_pool(size_t shm_args)
{
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  fp_pool *p;
  o.workers = 1;
  o.max_inflight = 8;
  o.tasks = ref_tasks;
  o.shm_args = shm_args;
  ck_assert_int_eq(fpt_pool_create(&p, &o), 0);
  return p;
}

/* Packs a str (str != 0) or a bin of n pattern bytes into sb. */
static void pack_blob(msgpack_sbuffer *sb, int str, unsigned k, size_t n)
{
  char *b = malloc(n + 1);
  ck_assert_ptr_nonnull(b);
  for (size_t i = 0; i < n; i++)
    b[i] = pattern(k, i);
  msgpack_packer pk;
  msgpack_sbuffer_clear(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  ck_assert_int_eq(str ? msgpack_pack_str_with_body(&pk, b, n)
                       : msgpack_pack_bin_with_body(&pk, b, n), 0);
  free(b);
}

/* The bytes of f's result, packed again, must be want's. */
static void check_result_bytes(fp_future *f, const char *want, size_t len)
{
  const msgpack_object *r;
  int rc = fp_future_result(f, FPT_LIMIT_MS, &r);
  ck_assert_msg(rc == 0, "result: %s (%s)", fp_strerror(rc),
                fp_future_error(f) ? fp_future_error(f) : "");
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  ck_assert_int_eq(msgpack_pack_object(&pk, *r), 0);
  ck_assert_uint_eq(sb.size, len);
  ck_assert(memcmp(sb.data, want, len) == 0);
  msgpack_sbuffer_destroy(&sb);
}

/* Through the pipe by reference (_i 0) or through shared memory (_i 1). */
START_TEST(large_echoes_go_out_by_reference)
{
  static const size_t sizes[] = {65535, 65536, 1 << 20, 3u << 20, 65537, 5};
  enum { N = sizeof sizes / sizeof *sizes };
  fpt_snapshot snap;
  fpt_begin(&snap);
  fp_pool *p = ref_pool(_i == 0 ? FP_SHM_OFF : 0);
  msgpack_sbuffer sb[2 * N];
  fp_future *f[2 * N];
  for (unsigned k = 0; k < 2 * N; k++) {
    msgpack_sbuffer_init(&sb[k]);
    pack_blob(&sb[k], k >= N, k, sizes[k % N]);
    ck_assert_int_eq(fp_submit(p, "echo", sb[k].data, sb[k].size, &f[k]), 0);
  }
  for (unsigned k = 0; k < 2 * N; k++) {
    check_result_bytes(f[k], sb[k].data, sb[k].size);
    fp_future_release(f[k]);
    msgpack_sbuffer_destroy(&sb[k]);
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.shared_args, _i == 0 ? 0 : 2 * (N - 1));
  /* Results find the ring full at times (the model test below says
   * exactly when); those go through the pipe by reference. */
  if (_i == 0)
    ck_assert_uint_eq(st.shared_results, 0);
  else
    ck_assert_uint_gt(st.shared_results, 0);
  fpt_pool_destroy(p);
  fpt_end(&snap);
}
END_TEST

/* One array of n small values of every kind, in about 400 KiB; with bad,
 * item n / 2 is the byte 0xc1, never msgpack. */
static void pack_many(msgpack_sbuffer *sb, int bad)
{
  enum { N = 12000 };
  static const char blob[300] = "b";
  msgpack_packer pk;
  msgpack_sbuffer_clear(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  ck_assert_int_eq(msgpack_pack_array(&pk, N), 0);
  for (unsigned i = 0; i < N; i++) {
    int rc = 0;
    if (bad && i == N / 2) {
      ck_assert_int_eq(msgpack_sbuffer_write(sb, "\xc1", 1), 0);
      continue;
    }
    switch (i % 10) {
    case 0: rc = msgpack_pack_uint64(&pk, (uint64_t)i << (i % 60)); break;
    case 1: rc = msgpack_pack_int64(&pk, -(int64_t)i * 1000); break;
    case 2: rc = msgpack_pack_str_with_body(&pk, "forty bytes of text, or "
                                            "thereabouts, here", 40); break;
    case 3: rc = msgpack_pack_bin_with_body(&pk, blob, i % 300); break;
    case 4: rc = msgpack_pack_map(&pk, 1) || msgpack_pack_int(&pk, 1) ||
                 msgpack_pack_array(&pk, 2) || msgpack_pack_nil(&pk) ||
                 msgpack_pack_true(&pk); break;
    case 5: rc = msgpack_pack_double(&pk, i * 0.5); break;
    case 6: rc = msgpack_pack_ext_with_body(&pk, blob, i % 20, 7); break;
    case 7: rc = msgpack_pack_uint16(&pk, (uint16_t)(i * 7)); break;
    case 8: rc = msgpack_pack_array(&pk, 0); break;
    default: rc = msgpack_pack_int8(&pk, -(int8_t)(i % 100)); break;
    }
    ck_assert_int_eq(rc, 0);
  }
}

/* Packs [bytes, first] for raw. */
static void pack_raw_args(msgpack_sbuffer *args, const msgpack_sbuffer *bytes,
                          size_t first)
{
  msgpack_packer pk;
  msgpack_sbuffer_clear(args);
  msgpack_packer_init(&pk, args, msgpack_sbuffer_write);
  ck_assert_int_eq(msgpack_pack_array(&pk, 2) ||
                       msgpack_pack_bin_with_body(&pk, bytes->data,
                                                  bytes->size) ||
                       msgpack_pack_uint64(&pk, first), 0);
}

/* raw must fail with ResultError. */
static void check_result_error(fp_pool *p, const msgpack_sbuffer *bytes,
                               size_t first)
{
  msgpack_sbuffer args;
  fp_future *f;
  const msgpack_object *r;
  msgpack_sbuffer_init(&args);
  pack_raw_args(&args, bytes, first);
  ck_assert_int_eq(fp_submit(p, "raw", args.data, args.size, &f), 0);
  ck_assert_int_eq(fp_future_result(f, FPT_LIMIT_MS, &r), FP_ETASK);
  ck_assert_ptr_nonnull(strstr(fp_future_error(f), "ResultError"));
  fp_future_release(f);
  msgpack_sbuffer_destroy(&args);
}

/* Raw msgpack written from the body in pieces: the result is read across
 * them, headers cut in two included, and bad bytes inside a reference are
 * found. */
START_TEST(raw_results_are_read_across_pieces)
{
  static const size_t firsts[] = {1, 2, 3, 5, 65536, 65537, 100000, 70003};
  enum { NF = sizeof firsts / sizeof *firsts };
  fpt_snapshot snap;
  fpt_begin(&snap);
  fp_pool *p = ref_pool(0);
  msgpack_sbuffer good, args;
  msgpack_sbuffer_init(&good);
  msgpack_sbuffer_init(&args);
  pack_many(&good, 0);
  for (unsigned k = 0; k < NF; k++) {
    fp_future *f;
    pack_raw_args(&args, &good, firsts[k]);
    ck_assert_int_eq(fp_submit(p, "raw", args.data, args.size, &f), 0);
    check_result_bytes(f, good.data, good.size);
    fp_future_release(f);
  }

  msgpack_sbuffer bad;
  msgpack_sbuffer_init(&bad);
  pack_many(&bad, 1); /* 0xc1 in the middle */
  check_result_error(p, &bad, 7);
  msgpack_sbuffer_clear(&bad); /* one byte short */
  ck_assert_int_eq(msgpack_sbuffer_write(&bad, good.data, good.size - 1), 0);
  check_result_error(p, &bad, 100000);
  /* Two objects, the second a large bin that goes by reference. */
  ck_assert_int_eq(msgpack_sbuffer_write(&bad, good.data + good.size - 1, 1),
                   0);
  ck_assert_int_eq(msgpack_sbuffer_write(&bad, good.data, good.size), 0);
  check_result_error(p, &bad, 3);
  msgpack_sbuffer_destroy(&bad);

  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.worker_deaths, 0);
  msgpack_sbuffer_destroy(&good);
  msgpack_sbuffer_destroy(&args);
  fpt_pool_destroy(p);
  fpt_end(&snap);
}
END_TEST

/* --- The result ring ------------------------------------------------------ */

/* Whether [a, a+n) and [b, b+m) share a byte. */
static int overlap(size_t a, size_t n, size_t b, size_t m)
{
  return a < b + m && b < a + n;
}

/*
 * A worker's ring against a model of the parent: random result sizes, from
 * a byte to most of the ring, and a reader that falls behind and catches up
 * at random.  A place is never over a result not yet read, never runs off
 * the ring's end, and goes where the model says: right after the newest
 * while that stays in the first FP__SHM_COMPACT bytes, else to the ring's
 * beginning if there is room there (an empty ring always has), else after
 * the newest, else nowhere.  A large result is trimmed away once read.
 */
START_TEST(ring_never_overwrites_unread_results)
{
  enum { Q = 64 };
  const size_t R = FP__SHM_RING;
  char *base = mmap(NULL, R, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ck_assert_ptr_ne(base, MAP_FAILED);
  _Atomic uint64_t tail = 0;
  fp__ring r = {.base = base, .tail = &tail};
  uint64_t qpos[Q];
  size_t qlen[Q];
  unsigned head = 0, n = 0, refused = 0, trimmed = 0;
  uint32_t seed = 12345;
  const size_t steps = fpt_scaled(200000, 5000);
  for (size_t step = 0; step < steps; step++) {
    seed = seed * 1103515245u + 12345u;
    unsigned pick = (seed >> 16) % 8;
    if (n > 0 && (pick < 3 || n == Q)) { /* the parent reads the oldest */
      unsigned k = head;
      ck_assert_int_eq(base[qpos[k] % R], (char)qpos[k]);
      ck_assert_int_eq(base[qpos[k] % R + qlen[k] - 1], (char)(qpos[k] + 1));
      atomic_store(&tail, qpos[k] + qlen[k]);
      head = (head + 1) % Q;
      n--;
      continue;
    }
    size_t len = pick == 7   ? 1 + (seed >> 8) % (R - 1)
                 : pick >= 5 ? 1 + (seed >> 8) % (R / 4)
                             : 1 + (seed >> 8) % (1 << 20);
    size_t before = r.touched;
    uint64_t pos;
    /* Room in the model: after the newest unread result, up to the ring's
     * end or the oldest; or, when those wrap, from the start. */
    /* Where the ring should put it: -1 nowhere, else an offset. */
    long want = 0;
    if (n > 0) {
      unsigned last = (head + n - 1) % Q;
      size_t o = qpos[head] % R, a = qpos[last] % R + qlen[last];
      int end_ok = a > o ? len <= R - a : len <= o - a;
      int start_ok = a > o && len <= o; /* room before the oldest */
      if (end_ok && a + len <= FP__SHM_COMPACT)
        want = (long)(a % R); /* compact: right after the newest */
      else if (start_ok)
        want = 0;             /* back to the start */
      else
        want = end_ok ? (long)(a % R) : -1;
    }
    if (fp__ring_place(&r, len, &pos) != 0) {
      ck_assert_msg(want < 0, "refused %zu bytes that fit at %ld", len, want);
      refused++;
      continue;
    }
    ck_assert_int_eq((long)(pos % R), want);
    if (n == 0) {
      /* What earlier results left beyond this one and 8 MiB is gone. */
      size_t keep = len > FP__SHM_KEEP ? len : FP__SHM_KEEP;
      ck_assert_uint_le(r.touched, (keep + 4095) & ~(size_t)4095);
      trimmed += before > FP__SHM_KEEP && r.touched < before;
    }
    ck_assert_uint_le(pos % R + len, R);
    for (unsigned i = 0, k = head; i < n; i++, k = (k + 1) % Q) {
      ck_assert_uint_ge(pos, qpos[k] + qlen[k]); /* positions only grow */
      ck_assert(!overlap(pos % R, len, qpos[k] % R, qlen[k]));
    }
    base[pos % R] = (char)pos;
    base[pos % R + len - 1] = (char)(pos + 1);
    unsigned k = (head + n) % Q;
    qpos[k] = pos;
    qlen[k] = len;
    n++;
  }
  ck_assert_uint_gt(refused, 0); /* the reader fell behind at times */
  ck_assert_uint_gt(trimmed, 0);
  munmap(base, R);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("worker");
  TCase *tc = fpt_tcase(s, "reader", 120);
  tcase_add_test(tc, small_frames_are_lent_from_the_read_ahead);
  tcase_add_test(tc, large_frames_reuse_one_buffer);
  tcase_add_test(tc, over_max_and_cut_short);
  tc = fpt_tcase(s, "bodies", 120);
  tcase_add_test(tc, echoes_of_every_size);
  tcase_add_loop_test(tc, large_echoes_go_out_by_reference, 0, 2);
  tcase_add_test(tc, raw_results_are_read_across_pieces);
  tc = fpt_tcase(s, "ring", 120);
  tcase_add_test(tc, ring_never_overwrites_unread_results);
  fpt_run_suite(s);
}

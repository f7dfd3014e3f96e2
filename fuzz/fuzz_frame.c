/*
 * The frame reader (lib/frame.c), on both sides of the pipe.
 *
 * Input: one control byte, then the bytes a peer writes.
 *   bits 0-1  the maximum body length: 1 MiB, 0, 5 or 300 bytes
 *   bits 2-7  how the bytes are cut into writes (0: all at once)
 *
 * Parent side: the bytes go through a non-blocking pipe in pieces, and
 * fp__reader_next_lent is called after each piece until it says "again", as
 * the dispatcher does when poll() says readable; then the write end is
 * closed.  Worker side: the same bytes, whole, through a blocking pipe into
 * fp__read_frame_borrowed.  Both must return exactly the frames a plain
 * reading of the bytes finds (so every frame has len <= max), then end of
 * file, or FP_EPROTO at the first length over the maximum.  LeakSanitizer
 * checks that whatever a partial frame had allocated is freed by
 * fp__reader_free.
 */
#include "forkpool-private.h"

#include "fuzz.h"

static const size_t max_table[] = {(size_t)1 << 20, 0, 5, 300};

/* The frames a plain reading of buf finds, for comparing. */
typedef struct expect {
  const uint8_t *buf;
  size_t len, max;
  size_t off;            /* the next frame's header */
  int over;              /* a length over max ends the stream */
} expect;

/*
 * Checks that body/len is the next frame of e.  A frame is only complete if
 * its whole body is there.
 */
static void expect_frame(expect *e, const char *body, size_t len)
{
  FZ_CHECK(e->len - e->off >= FP__HDR);
  uint32_t n = fp__frame_body_len((const char *)e->buf + e->off);
  FZ_CHECK(n <= e->max);
  FZ_CHECK(len == n);
  FZ_CHECK(len <= e->max);
  FZ_CHECK(e->len - e->off - FP__HDR >= n);
  FZ_CHECK(len == 0 || memcmp(body, e->buf + e->off + FP__HDR, len) == 0);
  e->off += FP__HDR + n;
}

/* What the stream must end with once every complete frame is read: 0
 * (end of file) or FP_EPROTO. */
static int expect_end(const expect *e)
{
  if (e->len - e->off < FP__HDR)
    return 0;
  uint32_t n = fp__frame_body_len((const char *)e->buf + e->off);
  return n > e->max ? FP_EPROTO : 0;
}

/* Reads every frame the pipe has now: the reader's last answer, 0 with *io
 * (FP__IO_AGAIN or FP__IO_EOF) or its error.  As pipe_recv (pipe.c) does
 * when poll() says readable, it first forgets that an earlier read emptied
 * the pipe. */
static int drain(fp__reader *r, int fd, expect *e, enum fp__io *io)
{
  fp__reader_undrain(r);
  for (;;) {
    char *owned = NULL;
    const char *body = NULL;
    size_t len = 0;
    int rc = fp__reader_next_lent(r, fd, e->max, io, &owned, &body, &len);
    if (rc != 0 || *io != FP__IO_FRAME)
      return rc;
    FZ_CHECK(body != NULL);
    FZ_CHECK(owned == NULL || owned == body);
    expect_frame(e, body, len);
    free(owned);
  }
}

static void parent_side(const uint8_t *buf, size_t len, size_t max,
                        unsigned seed)
{
  expect e = {.buf = buf, .len = len, .max = max};
  fp__reader r;
  int fds[2];
  size_t off = 0;
  enum fp__io io = FP__IO_AGAIN;
  int rc = 0;

  fz_pipe(fds);
  fp__reader_init(&r);
  for (unsigned k = 0; off < len && rc == 0 && io == FP__IO_AGAIN; k++) {
    fz_write_some(fds[1], buf, len, &off, fz_piece(seed, k));
    rc = drain(&r, fds[0], &e, &io);
  }
  if (rc == 0 && io == FP__IO_AGAIN) {
    close(fds[1]);
    fds[1] = -1;
    rc = drain(&r, fds[0], &e, &io);
    FZ_CHECK(rc == expect_end(&e));
    FZ_CHECK(rc != 0 || io == FP__IO_EOF);
  } else {
    /* It stopped before the end: only at a length over the maximum. */
    FZ_CHECK(rc == FP_EPROTO);
    FZ_CHECK(expect_end(&e) == FP_EPROTO);
  }
  fp__reader_free(&r);
  close(fds[0]);
  if (fds[1] >= 0)
    close(fds[1]);
}

static void worker_side(const uint8_t *buf, size_t len, size_t max)
{
  expect e = {.buf = buf, .len = len, .max = max};
  fp__reader r;
  int fds[2];
  size_t off = 0;

  /* A pipe's default 64 KiB takes the whole input, so this never blocks. */
  if (len > 60000)
    return;
  FZ_CHECK(pipe2(fds, O_CLOEXEC) == 0);
  while (off < len)
    FZ_CHECK(fz_write_some(fds[1], buf, len, &off, SIZE_MAX) > 0);
  close(fds[1]);
  fp__reader_init(&r);
  char *kept = NULL;
  size_t cap = 0;
  for (;;) {
    enum fp__io io;
    const char *body = NULL;
    size_t blen = 0;
    int rc = fp__read_frame_borrowed(fds[0], &r, max, &io, &kept, &cap, &body,
                                     &blen);
    if (rc == 0 && io == FP__IO_FRAME) {
      expect_frame(&e, body, blen);
      continue;
    }
    FZ_CHECK(rc == expect_end(&e));
    break;
  }
  free(kept);
  fp__reader_free(&r);
  close(fds[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fz z = {data, size};
  uint8_t ctl = fz_u8(&z);
  size_t max = max_table[ctl & 3];

  parent_side(z.p, z.n, max, ctl >> 2);
  worker_side(z.p, z.n, max);
  return 0;
}

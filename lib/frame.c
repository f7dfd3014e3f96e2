/*
 * Framing on a descriptor: a 32-bit little-endian body length, then the
 * body.  EINTR and EAGAIN are handled here, once; callers see a frame, "try
 * again later", end of file, or an error.  A length is checked against the
 * maximum before anything is allocated.
 */
#include "forkpool-private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FP__CHUNK (64 * 1024) /* read-ahead: many small frames per read() */

void fp__frame_seal(char *buf, size_t body_len)
{
  uint32_t n = (uint32_t)body_len;
  unsigned char *p = (unsigned char *)buf;
  p[0] = n & 0xff;
  p[1] = (n >> 8) & 0xff;
  p[2] = (n >> 16) & 0xff;
  p[3] = (n >> 24) & 0xff;
}

uint32_t fp__frame_body_len(const char *hdr)
{
  const unsigned char *p = (const unsigned char *)hdr;
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

void fp__reader_init(fp__reader *r)
{
  memset(r, 0, sizeof *r);
}

void fp__reader_free(fp__reader *r)
{
  free(r->body);
  free(r->chunk);
  fp__reader_init(r);
}

void fp__reader_undrain(fp__reader *r)
{
  r->drained = 0;
}

/* read() that retries EINTR: > 0 bytes, 0 EOF, FP_EAGAIN, or -errno. */
static ssize_t read_some(int fd, void *buf, size_t len)
{
  for (;;) {
    ssize_t n = read(fd, buf, len);
    if (n >= 0)
      return n;
    if (errno == EINTR)
      continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? FP_EAGAIN : -errno;
  }
}

/* Refills the read-ahead chunk: > 0, 0 at EOF, FP_EAGAIN or -errno. */
static ssize_t refill(fp__reader *r, int fd)
{
  if (r->chunk == NULL && (r->chunk = malloc(FP__CHUNK)) == NULL)
    return FP_ENOMEM;
  ssize_t n = read_some(fd, r->chunk, FP__CHUNK);
  r->chunk_off = 0;
  r->chunk_len = n > 0 ? (size_t)n : 0;
  /* A pipe gives all it has: less than asked means it is empty now. */
  r->drained = n > 0 && n < FP__CHUNK;
  return n;
}

static size_t take(fp__reader *r, char *dst, size_t want)
{
  size_t have = r->chunk_len - r->chunk_off;
  size_t n = want < have ? want : have;
  memcpy(dst, r->chunk + r->chunk_off, n);
  r->chunk_off += n;
  return n;
}

/* After an error the stream is out of step for good: say so again. */
static int fail(fp__reader *r, int err)
{
  r->err = err;
  return err;
}

/* A read that gave no bytes (n <= 0): 0 with *io FP__IO_EOF or
 * FP__IO_AGAIN, or its error, which ends the stream. */
static int no_bytes(fp__reader *r, ssize_t n, enum fp__io *io)
{
  if (n < 0 && n != FP_EAGAIN)
    return fail(r, (int)n);
  *io = n == 0 ? FP__IO_EOF : FP__IO_AGAIN;
  return 0;
}

/* Reads until the header is whole and within max: 0 with *io FP__IO_FRAME
 * (r->body_len set), FP__IO_AGAIN or FP__IO_EOF, or a negative code. */
static int read_header(fp__reader *r, int fd, size_t max, int nonblock,
                       enum fp__io *io)
{
  while (r->hdr_have < FP__HDR) {
    if (r->chunk_off == r->chunk_len && nonblock && r->drained) {
      r->drained = 0; /* a read now would only say EAGAIN */
      *io = FP__IO_AGAIN;
      return 0;
    }
    if (r->chunk_off == r->chunk_len) {
      ssize_t n = refill(r, fd);
      if (n <= 0)
        return no_bytes(r, n, io);
    }
    r->hdr_have += take(r, r->hdr + r->hdr_have, FP__HDR - r->hdr_have);
  }
  r->body_len = fp__frame_body_len(r->hdr);
  if (r->body_len > max)
    return fail(r, FP_EPROTO);
  *io = FP__IO_FRAME;
  return 0;
}

/* Fills r->body up to r->body_len: 0 with *io FP__IO_FRAME once whole, or
 * as above. */
static int read_body(fp__reader *r, int fd, enum fp__io *io)
{
  r->body_have += take(r, r->body + r->body_have, r->body_len - r->body_have);
  while (r->body_have < r->body_len) {
    /* Large bodies are read straight into place, never through the chunk. */
    ssize_t n = read_some(fd, r->body + r->body_have,
                          r->body_len - r->body_have);
    if (n <= 0)
      return no_bytes(r, n, io);
    r->body_have += (size_t)n;
  }
  *io = FP__IO_FRAME;
  return 0;
}

int fp__reader_next_lent(fp__reader *r, int fd, size_t max, enum fp__io *io,
                         char **owned, const char **body, size_t *len)
{
  *owned = NULL;
  if (r->err != 0)
    return r->err;
  if (r->hdr_have < FP__HDR) {
    int rc = read_header(r, fd, max, 1, io);
    if (rc != 0 || *io != FP__IO_FRAME)
      return rc;
    if (r->chunk_len - r->chunk_off >= r->body_len) {
      /* Whole in the read-ahead: lend it, no malloc and no copy. */
      *body = r->chunk + r->chunk_off;
      *len = r->body_len;
      r->chunk_off += r->body_len;
      r->hdr_have = 0;
      return 0;
    }
    if ((r->body = malloc(r->body_len + 1)) == NULL)
      return fail(r, FP_ENOMEM);
    r->body_have = 0;
  }
  int rc = read_body(r, fd, io);
  if (rc != 0 || *io != FP__IO_FRAME)
    return rc;
  *body = *owned = r->body;
  *len = r->body_len;
  r->body = NULL;
  r->hdr_have = 0;
  return 0;
}

/* Makes *buf hold at least need bytes; its old contents do not matter. */
static int reserve(char **buf, size_t *cap, size_t need)
{
  if (*cap >= need)
    return 0;
  if (need < 4096)
    need = 4096; /* small frames cut by the chunk's end: no churn */
  char *nb = malloc(need);
  if (nb == NULL)
    return FP_ENOMEM;
  free(*buf);
  *buf = nb;
  *cap = need;
  return 0;
}

int fp__read_frame_borrowed(int fd, fp__reader *r, size_t max,
                            enum fp__io *io, char **buf, size_t *cap,
                            const char **body, size_t *len)
{
  if (r->err != 0)
    return r->err;
  int rc = read_header(r, fd, max, 0, io);
  if (rc != 0 || *io == FP__IO_EOF)
    return rc;
  if (*io == FP__IO_AGAIN)
    return FP_EAGAIN;
  r->hdr_have = 0;
  *len = r->body_len;
  if (r->body_len <= r->chunk_len - r->chunk_off) {
    /* The whole body is in the read-ahead: no copy at all. */
    *body = r->chunk + r->chunk_off;
    r->chunk_off += r->body_len;
    return 0;
  }
  if (reserve(buf, cap, r->body_len) != 0)
    return fail(r, FP_ENOMEM);
  r->body = *buf;
  r->body_have = 0;
  rc = read_body(r, fd, io);
  r->body = NULL; /* the caller's, never the reader's */
  if (rc != 0 || *io == FP__IO_EOF)
    return rc;
  /* Cut short, the body is lost with the call: the stream cannot resume. */
  if (*io == FP__IO_AGAIN)
    return fail(r, FP_EAGAIN);
  *body = *buf;
  return 0;
}

int fp__write_all(int fd, struct iovec *iov, int iovcnt)
{
  while (iovcnt > 0) {
    ssize_t n = iovcnt == 1 ? write(fd, iov->iov_base, iov->iov_len)
                            : writev(fd, iov, iovcnt);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = (char *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return 0;
}

/*
 * What the fuzz targets share: reading the fuzzer's bytes as control values,
 * a check that aborts (so libFuzzer saves the input), and feeding bytes
 * through a real pipe in pieces, the way a worker's writes arrive.
 */
#ifndef FP_FUZZ_H
#define FP_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A check the code under test must pass: on failure, abort with the line. */
#define FZ_CHECK(cond)                                                        \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,       \
              #cond);                                                         \
      abort();                                                                \
    }                                                                         \
  } while (0)

/* The fuzzer's input, consumed from the front; zeros once it runs out. */
typedef struct fz {
  const uint8_t *p;
  size_t n;
} fz;

static inline uint8_t fz_u8(fz *z)
{
  if (z->n == 0)
    return 0;
  z->n--;
  return *z->p++;
}

static inline uint64_t fz_u64(fz *z, int bytes)
{
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++)
    v |= (uint64_t)fz_u8(z) << (8 * i);
  return v;
}

/* Up to want bytes from the front; *got says how many. */
static inline const uint8_t *fz_bytes(fz *z, size_t want, size_t *got)
{
  const uint8_t *p = z->p;
  *got = want < z->n ? want : z->n;
  z->p += *got;
  z->n -= *got;
  return p;
}

/*
 * The sizes of successive writes: seed 0 writes everything at once, any
 * other seed cuts the bytes into small, uneven pieces so that headers and
 * bodies straddle reads.
 */
static inline size_t fz_piece(unsigned seed, unsigned k)
{
  static const size_t sizes[] = {1, 2, 3, 4, 5, 7, 9, 64, 1000, 4096, 70000};
  if (seed == 0)
    return SIZE_MAX;
  return sizes[(seed * 5 + k * (seed | 1)) % (sizeof sizes / sizeof *sizes)];
}

/*
 * A non-blocking pipe, both ends close-on-exec, as the dispatcher has: the
 * test writes into fds[1] and the code under test reads fds[0].
 */
static inline void fz_pipe(int fds[2])
{
  FZ_CHECK(pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
}

/* Writes what the pipe takes of [*off, len): 0 once nothing more fits. */
static inline size_t fz_write_some(int fd, const uint8_t *buf, size_t len,
                                   size_t *off, size_t piece)
{
  size_t want = len - *off < piece ? len - *off : piece;
  ssize_t w = write(fd, buf + *off, want);
  if (w < 0) {
    FZ_CHECK(errno == EAGAIN || errno == EINTR);
    return 0;
  }
  *off += (size_t)w;
  return (size_t)w;
}

#endif

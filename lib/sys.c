/* Small OS helpers, with the Linux-only calls behind configure checks. */
#include "forkpool-private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int fp__pipe(int fds[2])
{
#ifdef HAVE_PIPE2
  if (pipe2(fds, O_CLOEXEC) != 0)
    return -errno;
#else
  if (pipe(fds) != 0)
    return -errno;
  (void)fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  (void)fcntl(fds[1], F_SETFD, FD_CLOEXEC);
#endif
  return 0;
}

int fp__set_nonblock(int fd)
{
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -errno;
  return 0;
}

/* Bigger pipes mean fewer wake-ups for large payloads; failure is harmless. */
void fp__grow_pipe(int fd)
{
#ifdef F_SETPIPE_SZ
  (void)fcntl(fd, F_SETPIPE_SZ, 1 << 20);
#else
  (void)fd;
#endif
}

/*
 * Used in freshly forked children only, so it must not allocate: with no
 * close_range, walk /proc/self/fd (opendir allocates, but the child is
 * single-threaded) or, failing that, every possible descriptor.
 */
int fp__close_from(int lowfd)
{
#ifdef HAVE_CLOSE_RANGE
  if (close_range((unsigned)lowfd, ~0u, 0) == 0)
    return 0;
#endif
  DIR *d = opendir("/proc/self/fd");
  if (d != NULL) {
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      int fd = atoi(e->d_name);
      if (e->d_name[0] != '.' && fd >= lowfd && fd != self)
        close(fd);
    }
    closedir(d);
    return 0;
  }
  long max = sysconf(_SC_OPEN_MAX);
  for (long fd = lowfd; fd < max; fd++)
    close((int)fd);
  return 0;
}

int64_t fp__now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t fp__now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int fp__deadline(int timeout_ms, int64_t *out)
{
  if (timeout_ms < -1)
    return FP_EINVAL;
  *out = timeout_ms < 0 ? -1 : fp__now_ms() + timeout_ms;
  return 0;
}

int fp__remaining_ms(int64_t deadline)
{
  if (deadline < 0)
    return -1;
  int64_t left = deadline - fp__now_ms();
  if (left <= 0)
    return 0;
  return left > 1000000 ? 1000000 : (int)left;
}

#define FP__SPARE_MIN ((size_t)64 << 10) /* smaller ones are cheap to malloc */

char *fp__buf_take(fp__spare *slot, size_t need)
{
#ifdef HAVE_MALLOC_USABLE_SIZE
  if (slot != NULL && need >= FP__SPARE_MIN) {
    char *b = atomic_exchange(slot, NULL);
    size_t cap = b != NULL ? malloc_usable_size(b) : 0;
    if (cap >= need && cap / 4 <= need)
      return b;
    free(b); /* the wrong size: the next give keeps a better one */
  }
#else
  (void)slot;
#endif
  return malloc(need);
}

void fp__buf_give(fp__spare *slot, char *buf)
{
#ifdef HAVE_MALLOC_USABLE_SIZE
  if (slot != NULL && buf != NULL && malloc_usable_size(buf) >= FP__SPARE_MIN)
    buf = atomic_exchange(slot, buf);
#else
  (void)slot;
#endif
  free(buf);
}

/* Small OS helpers, with the Linux-only calls behind configure checks. */
#include "forkpool-private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#ifdef FP__VFORK_MIDDLE
#include <string.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#endif

int fp__fd_high(int fd)
{
  if (fd < 0 || fd > 2)
    return fd;
  int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int saved = errno;
  close(fd);
  return moved >= 0 ? moved : -saved;
}

int fp__fd_pair_high(int fds[2])
{
  for (int i = 0; i < 2; i++)
    if ((fds[i] = fp__fd_high(fds[i])) < 0) {
      int rc = fds[i];
      if (fds[1 - i] >= 0)
        close(fds[1 - i]);
      fds[0] = fds[1] = -1;
      return rc;
    }
  return 0;
}

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
  return fp__fd_pair_high(fds);
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

static int kept(int fd, const int keep[2])
{
  return fd == keep[0] || fd == keep[1];
}

/* Calls fn for each descriptor of this process, but the directory's own:
 * 0, or -1 where /proc is not mounted. */
static int each_fd(void (*fn)(int fd, void *arg), void *arg)
{
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  int self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (e->d_name[0] != '.' && *end == '\0' && fd != self)
      fn((int)fd, arg);
  }
  closedir(d);
  return 0;
}

typedef struct close_args {
  int lowfd;
  const int *keep;
} close_args;

static void close_one(int fd, void *arg)
{
  const close_args *a = arg;
  if (fd >= a->lowfd && !kept(fd, a->keep))
    close(fd);
}

static void note_top(int fd, void *arg)
{
  int *top = arg;
  if (fd > *top)
    *top = fd;
}

/*
 * Used in freshly forked children only, so it must not allocate: with no
 * close_range, walk /proc/self/fd (opendir allocates, but the child is
 * single-threaded) or, failing that, every possible descriptor.
 */
int fp__close_from_except(int lowfd, int keep_a, int keep_b)
{
  const int keep[2] = {keep_a < keep_b ? keep_a : keep_b,
                       keep_a < keep_b ? keep_b : keep_a};
#ifdef HAVE_CLOSE_RANGE
  unsigned from = (unsigned)lowfd;
  int ok = 1;
  for (int k = 0; k < 2 && ok; k++) {
    if (keep[k] < 0 || (unsigned)keep[k] < from)
      continue;
    if ((unsigned)keep[k] > from)
      ok = close_range(from, (unsigned)keep[k] - 1, 0) == 0;
    from = (unsigned)keep[k] + 1;
  }
  if (ok && close_range(from, ~0u, 0) == 0)
    return 0;
#endif
  close_args ca = {lowfd, keep};
  if (each_fd(close_one, &ca) == 0)
    return 0;
  long max = sysconf(_SC_OPEN_MAX);
  for (long fd = lowfd; fd < max; fd++)
    if (!kept((int)fd, keep))
      close((int)fd);
  return 0;
}

int fp__close_from(int lowfd)
{
  return fp__close_from_except(lowfd, -1, -1);
}

int fp__fd_top(void)
{
  int top = -1;
  if (each_fd(note_top, &top) == 0)
    return top + 1;
  for (int fd = 0; fd < 1024; fd++)
    if (fcntl(fd, F_GETFD) >= 0)
      top = fd;
  return top + 1;
}

void fp__rseq_renew(void)
{
#ifdef FP__VFORK_MIDDLE
  if (__rseq_size == 0)
    return; /* glibc registered nothing (tunable off, or the kernel said no) */
  struct rseq *rs =
      (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
  /* What glibc itself registers: the feature size, but at least the 32
   * bytes of the original struct, the least the kernel takes. */
  unsigned len = __rseq_size < 32 ? 32 : __rseq_size;
  /* No critical section runs here; the kernel reads this at registration. */
  memset(&rs->rseq_cs, 0, sizeof rs->rseq_cs);
  if (syscall(SYS_rseq, rs, len, (int)__rseq_flags, RSEQ_SIG) == 0 ||
      errno == EBUSY)
    return; /* the kernel fills cpu_id before we run again */
  rs->cpu_id = RSEQ_CPU_ID_REGISTRATION_FAILED;
#endif
}

/* The CPUs this process may run on (its affinity mask: a cpuset, taskset or
 * a batch system's allocation), which forked children inherit; the online
 * CPUs if the mask cannot be read; at least 1. */
unsigned fp__cpus_allowed(void)
{
  long n = 0;
#ifdef CPU_COUNT
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    n = CPU_COUNT(&set);
#endif
  if (n <= 0)
    n = sysconf(_SC_NPROCESSORS_ONLN);
  return n <= 0 ? 1 : n > INT_MAX ? INT_MAX : (unsigned)n;
}

int64_t fp__now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t fp__tv_us(const struct timeval *tv)
{
  return (uint64_t)tv->tv_sec * 1000000 + (uint64_t)tv->tv_usec;
}

int fp__thread_cpu(uint64_t *user_us, uint64_t *sys_us)
{
  *user_us = *sys_us = 0;
#if HAVE_DECL_RUSAGE_THREAD
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0)
    return -errno;
  *user_us = fp__tv_us(&ru.ru_utime);
  *sys_us = fp__tv_us(&ru.ru_stime);
  return 0;
#else
  return FP_ENOSYS;
#endif
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

int fp__statm(unsigned long *size, unsigned long *resident)
{
  char buf[128];
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  int err = n < 0 ? -errno : FP_EPROTO;
  close(fd);
  if (n <= 0)
    return err;
  buf[n] = '\0';
  char *end;
  errno = 0;
  *size = strtoul(buf, &end, 10);
  *resident = strtoul(end, &end, 10);
  return errno != 0 || *end != ' ' ? FP_EPROTO : 0;
}

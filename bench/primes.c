/*
 * W4's kernel: count primes by trial division.  The same function runs
 * serially, in forkpool's workers and in OpenMP threads, so only the way the
 * ranges are spread over the cores differs.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int is_prime(uint32_t n)
{
  if (n < 2)
    return 0;
  if (n % 2 == 0)
    return n == 2;
  for (uint32_t d = 3; d <= n / d; d += 2)
    if (n % d == 0)
      return 0;
  return 1;
}

uint64_t primes_in(uint32_t lo, uint32_t hi)
{
  uint64_t count = 0;
  for (uint32_t n = lo; n < hi; n++)
    count += (uint64_t)is_prime(n);
  return count;
}

int have_openmp(void)
{
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

#ifdef _OPENMP
/* The same ranges as the forkpool run, handed out one at a time. */
static double openmp_run(uint32_t limit, unsigned ranges, unsigned threads,
                         uint64_t *count)
{
  uint64_t total = 0;
  double t0 = now_s();
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total) num_threads(threads)
  for (unsigned r = 0; r < ranges; r++) {
    uint32_t lo = (uint32_t)((uint64_t)limit * r / ranges);
    uint32_t hi = (uint32_t)((uint64_t)limit * (r + 1) / ranges);
    total += primes_in(lo, hi);
  }
  double t = now_s() - t0;
  *count = total;
  return t;
}
#endif

double primes_openmp(uint32_t limit, unsigned ranges, unsigned threads,
                     uint64_t *count)
{
#ifdef _OPENMP
  /* A child, so that the benchmark's own process never has threads: the
   * libgomp pool would otherwise spin and slow the workloads after this. */
  int fds[2];
  if (pipe(fds) != 0)
    die("pipe", 0);
  pid_t pid = fork();
  if (pid < 0)
    die("fork", 0);
  if (pid == 0) {
    close(fds[0]);
    uint64_t warm;
    (void)openmp_run(limit / 64, ranges, threads, &warm); /* start them */
    double r[2];
    uint64_t n;
    r[0] = openmp_run(limit, ranges, threads, &n);
    r[1] = (double)n;
    _exit(write_all_fd(fds[1], r, sizeof r) != 0);
  }
  close(fds[1]);
  double r[2] = {-1, 0};
  if (read_all_fd(fds[0], r, sizeof r) != 0)
    die("the OpenMP child died", 0);
  close(fds[0]);
  waitpid(pid, NULL, 0);
  *count = (uint64_t)r[1];
  return r[0];
#else
  (void)limit;
  (void)ranges;
  (void)threads;
  *count = 0;
  return -1;
#endif
}

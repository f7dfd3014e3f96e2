/*
 * evloop: a pool inside your own poll() loop.  Reads numbers from stdin,
 * one per line, and counts the primes below each in a worker; prints each
 * answer as soon as it is ready, while still reading input.  At end of
 * input it waits for the answers still due, then exits.
 *
 *   cc evloop.c $(pkg-config --cflags --libs forkpool) -o evloop
 *   printf '10\n1000\n100000\n' | ./evloop
 *
 * fp_pool_fd() polls readable when the pool has something to do (a result
 * arrived, a worker died, a pipe has room again); fp_pool_dispatch(pool, 0)
 * then does it without blocking.  No thread, no busy loop.
 */
#define _POSIX_C_SOURCE 200809L
#include <forkpool.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_N 100000000 /* a sieve of 100 MB in the worker, at most */

/* Runs in a worker: [n] -> how many primes are below n (sieve). */
static int count_primes(fp_call *call, const msgpack_object *args,
                        msgpack_packer *out)
{
  int64_t n, count = 0;
  if (fp_unpack(args, "[I]", &n) != 0)
    return fp_call_fail(call, "TypeError", "primes takes one integer");
  if (n < 0 || n > MAX_N)
    return fp_call_fail(call, "ValueError", "%lld is not in 0..%d",
                        (long long)n, MAX_N);
  char *composite = calloc((size_t)n + 1, 1);
  if (composite == NULL)
    return fp_call_fail(call, "MemoryError", "no memory for a sieve");
  for (int64_t i = 2; i < n; i++) {
    if (composite[i])
      continue;
    count++;
    for (int64_t j = i * i; j < n; j += i)
      composite[j] = 1;
  }
  free(composite);
  return msgpack_pack_int64(out, count);
}

static const fp_task tasks[] = {{"primes", count_primes}, {NULL, NULL}};

/* The questions asked and not yet answered. */
struct question {
  long long n;
  fp_future *f;
};
static struct question *due;
static size_t ndue, cap;

/* Parses one line and submits it; a bad line is reported and skipped. */
static void ask(fp_pool *pool, char *line)
{
  char *end;
  errno = 0;
  long long n = strtoll(line, &end, 10);
  if (end == line || *end != '\0' || errno != 0) {
    if (*line != '\0')
      fprintf(stderr, "evloop: not a number: '%.40s'\n", line);
    return;
  }
  if (ndue == cap) {
    struct question *q = realloc(due, (cap = cap ? 2 * cap : 16) * sizeof *q);
    if (q == NULL) {
      fprintf(stderr, "evloop: out of memory\n");
      exit(1);
    }
    due = q;
  }
  int rc = fp_submitf(pool, "primes", &due[ndue].f, "[I]", (int64_t)n);
  if (rc != 0) {
    fprintf(stderr, "evloop: fp_submitf: %s\n", fp_strerror(rc));
    return;
  }
  due[ndue++].n = n;
}

/* Prints and forgets every question whose answer is in; returns how many. */
static int answer(void)
{
  int printed = 0;
  for (size_t i = 0; i < ndue;) {
    fp_future *f = due[i].f;
    const msgpack_object *r;
    if (fp_future_wait(f, 0) != 0) { /* not yet */
      i++;
      continue;
    }
    int rc = fp_future_result(f, 0, &r);
    if (rc == 0)
      printf("primes below %lld: %lld\n", due[i].n, (long long)r->via.i64);
    else
      printf("primes below %lld: %s (%s)\n", due[i].n, fp_strerror(rc),
             fp_future_error(f));
    fp_future_release(f);
    memmove(&due[i], &due[i + 1], (--ndue - i) * sizeof *due);
    printed++;
  }
  fflush(stdout); /* whoever reads our pipe wants answers as they come */
  return printed;
}

int main(void)
{
  fp_pool_options opts = FP_POOL_OPTIONS_INIT;
  opts.tasks = tasks;
  fp_pool *pool;
  int rc = fp_pool_create(&pool, &opts);
  if (rc != 0) {
    fprintf(stderr, "fp_pool_create: %s\n", fp_strerror(rc));
    return 1;
  }
  int pool_fd = fp_pool_fd(pool); /* owned by the pool: never close it */
  if (pool_fd < 0) {
    fprintf(stderr, "fp_pool_fd: %s\n", fp_strerror(pool_fd));
    fp_pool_destroy(pool);
    return 1;
  }

  /* stdin is read with read(), not stdio: poll() knows nothing of what
   * stdio has buffered, so fgets() could sit on lines poll() never sees. */
  char buf[4096];
  size_t len = 0; /* bytes in buf: a line not complete yet */
  int eof = 0;
  while (!eof || ndue > 0) {
    struct pollfd pfd[2] = {{.fd = eof ? -1 : STDIN_FILENO, .events = POLLIN},
                            {.fd = pool_fd, .events = POLLIN}};
    if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
      perror("poll");
      break;
    }
    if (pfd[0].revents) {
      ssize_t n = read(STDIN_FILENO, buf + len, sizeof buf - 1 - len);
      if (n > 0) {
        len += (size_t)n;
        char *nl;
        while ((nl = memchr(buf, '\n', len)) != NULL) {
          *nl = '\0';
          ask(pool, buf);
          len -= (size_t)(nl + 1 - buf);
          memmove(buf, nl + 1, len);
        }
        if (len == sizeof buf - 1) {
          fprintf(stderr, "evloop: line too long, skipped\n");
          len = 0;
        }
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        if (n < 0)
          perror("read");
        buf[len] = '\0'; /* a last line without a newline */
        ask(pool, buf);
        eof = 1;
      }
    }
    if (pfd[1].revents && (rc = fp_pool_dispatch(pool, 0)) < 0)
      fprintf(stderr, "fp_pool_dispatch: %s\n", fp_strerror(rc));
    /* Look after every turn, not only after fp_pool_dispatch: any call that
     * runs the dispatcher may read results (a submit when the workers are
     * busy, fp_future_wait(f, 0) on a future not done), and results already
     * read do not make pool_fd readable again.  answer() makes such calls
     * itself, hence the repeat until it finds nothing new. */
    while (answer() > 0)
      ;
  }

  fp_pool_destroy(pool);
  free(due);
  return 0;
}

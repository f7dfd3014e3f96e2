/*
 * A driver to profile one mode's cost per task (bench/NOTES.md, issue 16):
 * N tasks that square a small integer, submitted in batches, each batch's
 * results then waited for in order.  Prints the wall and CPU time per task
 * and the fastest batch.  Built on demand: make bench/modes-driver.
 *
 *   bench/modes-driver [threads|inline|processes] [workers] [tasks] [batch]
 *   perf record -g bench/modes-driver threads 2 300000 10000
 */
#include <forkpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static int t_square(fp_call *call, const msgpack_object *args,
                    msgpack_packer *out)
{
  (void)call;
  return msgpack_pack_uint64(out, args->via.u64 * args->via.u64);
}

static const fp_task tasks[] = {{"square", t_square}, {NULL, NULL}};

static double now_s(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) * 1e-6;
}

int main(int argc, char **argv)
{
  const char *mode = argc > 1 ? argv[1] : "threads";
  fp_pool_options o = FP_POOL_OPTIONS_INIT;
  o.mode = strcmp(mode, "threads") == 0  ? FP_MODE_THREADS
           : strcmp(mode, "inline") == 0 ? FP_MODE_INLINE
                                         : FP_MODE_PROCESSES;
  o.workers = argc > 2 ? (unsigned)atoi(argv[2]) : 2;
  o.tasks = tasks;
  size_t total = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000000;
  size_t batch = argc > 4 ? strtoul(argv[4], NULL, 10) : 10000;
  fp_future **fs = malloc((batch ? batch : 1) * sizeof *fs);
  fp_pool *p;
  int rc = fs == NULL || batch == 0 ? FP_EINVAL : fp_pool_create(&p, &o);
  if (rc != 0) {
    fprintf(stderr, "modes-driver: %s\n", fp_strerror(rc));
    return 1;
  }
  double t0 = now_s(), c0 = cpu_s(), best = 1e9;
  for (size_t done = 0; done < total; done += batch) {
    double b0 = now_s();
    for (size_t i = 0; i < batch; i++) {
      unsigned char arg[3] = {0xcd, (unsigned char)(i >> 8),
                              (unsigned char)i}; /* a uint16 */
      if ((rc = fp_submit(p, "square", arg, sizeof arg, &fs[i])) != 0)
        break;
    }
    for (size_t i = 0; rc == 0 && i < batch; i++) {
      const msgpack_object *r;
      if ((rc = fp_future_result(fs[i], -1, &r)) == 0 &&
          r->via.u64 != (uint64_t)(i & 0xffff) * (i & 0xffff))
        rc = FP_EPROTO;
      fp_future_release(fs[i]);
    }
    if (rc != 0) {
      fprintf(stderr, "modes-driver: %s\n", fp_strerror(rc));
      return 1;
    }
    if (now_s() - b0 < best)
      best = now_s() - b0;
  }
  double n = (double)(total / batch * batch);
  printf("%s, %u workers: %.3f us/task wall, %.3f us/task CPU, fastest "
         "batch %.3f us/task\n", mode, o.workers, (now_s() - t0) / n * 1e6,
         (cpu_s() - c0) / n * 1e6, best / (double)batch * 1e6);
  fp_pool_destroy(p);
  free(fs);
  return 0;
}

/*
 * squares: the smallest forkpool program.  Squares 1..10 in worker
 * processes, shows a task that fails on bad input, and prints the results.
 *
 *   cc squares.c $(pkg-config --cflags --libs forkpool) -o squares
 */
#include <forkpool.h>

#include <stdio.h>

/* Runs in a worker: args is [x], the result is x*x. */
static int square(fp_call *call, const msgpack_object *args,
                  msgpack_packer *out)
{
  int64_t x;
  if (fp_unpack(args, "[I]", &x) != 0)
    return fp_call_fail(call, "TypeError", "square takes one integer");
  return msgpack_pack_int64(out, x * x);
}

static const fp_task tasks[] = {{"square", square}, {NULL, NULL}};

int main(void)
{
  fp_pool_options opts = FP_POOL_OPTIONS_INIT;
  opts.tasks = tasks;
  fp_pool *pool;
  int rc = fp_pool_create(&pool, &opts); /* one worker per usable CPU */
  if (rc != 0) {
    fprintf(stderr, "fp_pool_create: %s\n", fp_strerror(rc));
    return 1;
  }

  fp_future *f[11];
  for (int64_t i = 0; i < 10; i++)
    if ((rc = fp_submitf(pool, "square", &f[i], "[I]", i + 1)) != 0)
      fprintf(stderr, "fp_submitf: %s\n", fp_strerror(rc));
  /* Wrong argument type: the task reports it, the pool carries on. */
  fp_submitf(pool, "square", &f[10], "[s]", "seven");

  for (int i = 0; i < 11; i++) {
    const msgpack_object *r;
    rc = fp_future_result(f[i], -1, &r); /* -1: wait as long as it takes */
    if (rc == 0)
      printf("square(%d) = %lld\n", i + 1, (long long)r->via.i64);
    else
      printf("task %d failed: %s (%s)\n", i + 1, fp_strerror(rc),
             fp_future_error(f[i]));
    fp_future_release(f[i]);
  }
  fp_pool_destroy(pool);
  return 0;
}

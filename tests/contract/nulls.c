/* Every public function given NULL where a pointer goes: each call runs in
 * a child, which prints what it returned or dies; the parent reports a
 * crash.  Run: tests/contract/nulls (built against the tree). */
#define _GNU_SOURCE
#include <forkpool.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int crashes;

#define TRY(expr)                                                             \
  do {                                                                        \
    fflush(stdout);                                                           \
    pid_t pid_ = fork();                                                      \
    if (pid_ == 0) {                                                          \
      long r_ = (long)(expr);                                                 \
      printf("  %-60s -> %ld (%s)\n", #expr, r_, fp_err_name((int)r_));        \
      fflush(stdout);                                                         \
      _exit(0);                                                               \
    }                                                                         \
    int st_;                                                                  \
    waitpid(pid_, &st_, 0);                                                   \
    if (!WIFEXITED(st_)) {                                                    \
      printf("  %-60s -> CRASH (%s)\n", #expr, strsignal(WTERMSIG(st_)));     \
      crashes++;                                                              \
    }                                                                         \
  } while (0)

static long v(void (*fn)(void *), void *a)
{
  fn(a);
  return 0;
}

int main(void)
{
  fp_future *f = NULL;
  size_t n;
  fp_pool_stats st = FP_POOL_STATS_INIT;
  fp_pool_status ps;
  memset(&ps, 0, sizeof ps);
  ps.size = sizeof ps;
  fp_map_item it;
  fp_error_info ei = FP_ERROR_INFO_INIT;
  fp_as_completed *ac;
  TRY(fp_strerror(0) == NULL);
  TRY(fp_task_register(NULL, NULL));
  TRY(fp_task_register("x", NULL));
  TRY(fp_call_fail(NULL, "k", "m"));
  TRY(fp_call_fail(NULL, NULL, NULL));
  TRY(fp_call_state(NULL) != NULL);
  TRY(fp_call_should_stop(NULL));
  TRY(fp_pool_shutdown(NULL, 0));
  TRY(v((void (*)(void *))fp_pool_destroy, NULL));
  TRY(fp_pool_join(NULL, 0));
  TRY(fp_pool_interrupt(NULL));
  TRY(fp_pool_interrupt_clear(NULL));
  TRY(fp_pool_status_get(NULL, &ps));
  TRY(fp_pool_terminate(NULL));
  TRY(fp_pool_kill(NULL));
  TRY(fp_pool_stats_get(NULL, &st, NULL, 0));
  TRY(fp_pool_dispatch(NULL, 0));
  TRY(fp_pool_fd(NULL));
  TRY(fp_submitf(NULL, "x", &f, "[]"));
  TRY(fp_pack(NULL, "I", (int64_t)1));
  TRY(fp_unpack(NULL, "I", (int64_t *)NULL));
  TRY(fp_future_state(NULL));
  TRY(fp_future_wait(NULL, 0));
  TRY(fp_future_result(NULL, 0, NULL));
  TRY(fp_future_error(NULL) != NULL);
  TRY(fp_future_error_info(NULL, &ei));
  TRY(fp_future_cancel(NULL, 0));
  TRY(fp_future_on_done(NULL, NULL, NULL));
  TRY(fp_wait(NULL, 0, FP_ALL_COMPLETED, 0, &n));
  TRY(fp_wait(NULL, 1, FP_ALL_COMPLETED, 0, &n));
  TRY(fp_as_completed_create(NULL, NULL, 0, 0));
  TRY(fp_as_completed_create(&ac, NULL, 1, 0));
  TRY(fp_as_completed_next(NULL, &f));
  TRY(v((void (*)(void *))fp_as_completed_destroy, NULL));
  TRY(fp_map_next(NULL, 0, &it));
  TRY(v((void (*)(void *))fp_map_destroy, NULL));
  TRY(fp_future_retain(NULL) != NULL);
  TRY(v((void (*)(void *))fp_future_release, NULL));
  printf("%d crashes\n", crashes);
  return crashes != 0;
}

/*
 * Test helpers shared by the suites: the tasks real workers run, a pool
 * made with them, gates the tests open to let a task finish, and the
 * leak check every test ends with (no child process, no descriptor left).
 */
#ifndef FPT_H
#define FPT_H

#include <forkpool.h>

#include <check.h>
#include <stdint.h>
#include <sys/types.h>

/* How long a test waits for what must happen: generous, for the machine
 * may be busy; ten times that under valgrind, whose overheads (a leak
 * check in every process that exits) must not decide a verdict. */
#define FPT_LIMIT_MS fpt_limit_ms()
int fpt_limit_ms(void);

/* Tasks: square [x], echo x, fail, none, two, badrc, crash kinds, gate,
 * sq x, sq_or_pause x (hangs on x < 0), nap ms, nest [n]; exit0, fd_leaks,
 * stdio, trap_term (descriptors and signals). */
extern const fp_task fpt_tasks[];

typedef struct fpt_snapshot {
  int fds;
} fpt_snapshot;

/* The fixture.  Every test case comes from fpt_tcase(), whose checked
 * teardown destroys what a failed test left behind (maps, pools, gates,
 * child processes), also with CK_FORK=no, so that one failure stays one
 * failure instead of a cascade of leak reports in the tests after it.  For
 * that the tests create and destroy pools and maps through the tracked
 * wrappers below. */
TCase *fpt_tcase(Suite *s, const char *name, double timeout_s);
/*
 * The pool mode the behavioural suites run in: FPT_MODE=processes (the
 * default), threads or inline.  fpt_pool_create (and fpt_pool) make a pool
 * whose options leave mode at FP_MODE_PROCESSES in that mode instead;
 * fpt_pool_create_as keeps the mode the test set (pinned).
 */
unsigned fpt_mode(void);
int fpt_pool_create(fp_pool **out, const fp_pool_options *o);
int fpt_pool_create_as(fp_pool **out, const fp_pool_options *o);
/*
 * Registers test t in tc only when fpt_mode() is one of modes (FPT_IN_*);
 * otherwise it is left out, and fpt_run_suite prints which tests were and
 * why, so that a run in threads or inline never passes them silently.
 * PROCESSES: the test needs worker processes (kills, crashes, rlimits,
 * shared memory, the fork server, deadlines in a map...).  BESIDE: it needs
 * a worker running beside the caller (a task that blocks on a gate the test
 * opens, parallel workers): processes or threads, not inline.
 */
enum {
  FPT_IN_PROCESSES = 1 << 0,
  FPT_IN_THREADS = 1 << 1,
  FPT_IN_INLINE = 1 << 2,
  FPT_IN_BESIDE = FPT_IN_PROCESSES | FPT_IN_THREADS,
  FPT_IN_ALL = FPT_IN_BESIDE | FPT_IN_INLINE,
};
void fpt_add_test_in(unsigned modes, const char *why, TCase *tc,
                     const TTest *t);
/* fp_pool_create returns once one worker is ready (fp_pool_create(3));
 * fpt_pool_create then waits (up to FPT_LIMIT_MS) for every worker, since
 * most tests count on all of a pool's workers taking tasks from the start.
 * fpt_pool_create_early returns as fp_pool_create does (and keeps the
 * test's mode, as fpt_pool_create_as does). */
int fpt_pool_create_early(fp_pool **out, const fp_pool_options *o);
/* Until every worker is ready, the pool is broken, or FPT_LIMIT_MS. */
void fpt_pool_wait_ready(fp_pool *p);
/* CLOCK_MONOTONIC in milliseconds, for limits (never for verdicts). */
int64_t fpt_now_ms(void);
void fpt_pool_destroy(fp_pool *p);
int fpt_map(fp_pool *p, const char *task, const fp_map_input *in,
            const fp_map_options *o, fp_map_iter **out);
int fpt_map_unordered(fp_pool *p, const char *task, const fp_map_input *in,
                      const fp_map_options *o, fp_map_iter **out);
void fpt_map_destroy(fp_map_iter *m);

/* The size knob: FPT_SCALE (a percentage, 100 by default) scales every
 * size-dependent test's count, so the valgrind and sanitizer gates can run
 * the same tests smaller.  Never returns less than min. */
size_t fpt_scaled(size_t n, size_t min);
/* 0 under valgrind or AddressSanitizer, whose own memory and quarantine
 * make the process's RSS say nothing about the library's: tests that bound
 * RSS skip that assertion then, and say so. */
int fpt_rss_is_meaningful(void);
/* 0 likewise under valgrind or a sanitizer, which run the library's code
 * many times slower: tests that bound a thread's CPU time skip that
 * assertion then, and say so. */
int fpt_cpu_is_meaningful(void);

/* Makes this process a subreaper, so every descendant stays countable. */
void fpt_begin(fpt_snapshot *s);
/* Waits (up to FPT_LIMIT_MS) until no child is left; checks the fds. */
void fpt_end(const fpt_snapshot *s);
int fpt_count_fds(void);
int fpt_count_children(void); /* 1 if any child is left (not a count) */
pid_t fpt_first_child(void);
/* The same without an assertion: -1 if /proc cannot be read. */
pid_t fpt_child_pid(void);

fp_pool *fpt_pool(unsigned workers, unsigned max_inflight);

/* A FIFO that a "gate" task blocks on until fpt_gate_open writes to it. */
void fpt_gate_make(char *path, size_t len);
void fpt_gate_open(const char *path);
/* One try, without waiting: 1 if the task was at its gate and was let go
 * (or killed there after its open), 0 if it has not reached it yet. */
int fpt_gate_try(const char *path);
void fpt_gate_remove(const char *path);

/* In a worker: its result pipe's write end (its only write end of a pipe),
 * for tasks that break the protocol on purpose; 0 if none. */
int fpt_result_fd(void);

int64_t fpt_i64(fp_future *f);  /* result as an integer; fails the test */
int fpt_process_gone(pid_t pid);
double fpt_cpu_seconds(pid_t pid); /* user + system so far; -1: gone */
void fpt_run_suite(Suite *s);    /* runs and exits with the status */

#endif

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

#define FPT_LIMIT_MS 60000 /* generous: the machine may be busy */

/* Tasks: square [x], echo x, fail, none, two, badrc, crash kinds, gate;
 * exit0, fd_leaks, stdio, trap_term (descriptors and signals). */
extern const fp_task fpt_tasks[];

typedef struct fpt_snapshot {
  int fds;
} fpt_snapshot;

/* Makes this process a subreaper, so every descendant stays countable. */
void fpt_begin(fpt_snapshot *s);
/* Waits (up to FPT_LIMIT_MS) until no child is left; checks the fds. */
void fpt_end(const fpt_snapshot *s);
int fpt_count_fds(void);
int fpt_count_children(void);
pid_t fpt_first_child(void);

fp_pool *fpt_pool(unsigned workers, unsigned max_inflight);

/* A FIFO that a "gate" task blocks on until fpt_gate_open writes to it. */
void fpt_gate_make(char *path, size_t len);
void fpt_gate_open(const char *path);
void fpt_gate_remove(const char *path);

/* In a worker: its result pipe's write end (its only write end of a pipe),
 * for tasks that break the protocol on purpose; 0 if none. */
int fpt_result_fd(void);

int64_t fpt_i64(fp_future *f);  /* result as an integer; fails the test */
int fpt_process_gone(pid_t pid);
void fpt_run_suite(Suite *s);    /* runs and exits with the status */

#endif

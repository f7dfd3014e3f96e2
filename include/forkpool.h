/*
 * forkpool: run CPU-bound C functions in a pool of long-lived worker
 * processes, with futures, crash isolation and restart.
 *
 * The whole public API is in this header; every name starts with fp_ or FP_.
 * Every function is documented in its own man page (man 3 fp_submit, ...);
 * forkpool(7) is the overview.
 *
 * Conventions, once for all:
 *   - Functions return 0 (or a count) on success and a negative FP_E* code
 *     on failure.  System failures are returned as -errno.  fp_strerror()
 *     turns any of them into text.
 *   - If a *_create or submit call fails, nothing was created and there is
 *     nothing to clean up.  If it succeeds, the caller owns the result and
 *     must release or destroy it.
 *   - "Borrowed" means the library does not keep the pointer past the call;
 *     "owned by X" means X frees it.
 *
 * Lines marked "since 0.1" have been in every release.
 */
#ifndef FORKPOOL_H
#define FORKPOOL_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(FP_BUILDING)
#define FP_EXTERN __attribute__((visibility("default")))
#else
#define FP_EXTERN
#endif

#if defined(__GNUC__)
#define FP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define FP_PRINTF(fmt, args)
#endif

/* --- Errors -------------------------------------------------------------- */

/*
 * XX(name, value, message).  Codes that mean the same as a system errno are
 * that errno, negated; codes of forkpool's own live from -4000 down.
 */
#define FP_ERRNO_MAP(XX)                                                      \
  XX(EINVAL, -EINVAL, "invalid argument")                                     \
  XX(ENOMEM, -ENOMEM, "out of memory")                                        \
  XX(ETIMEDOUT, -ETIMEDOUT, "timed out")                                      \
  XX(ECANCELLED, -ECANCELED, "cancelled")                                     \
  XX(EBUSY, -EBUSY, "already running or done")                                \
  XX(EPROTO, -EPROTO, "protocol error: malformed message from a worker")      \
  XX(EMSGSIZE, -EMSGSIZE, "message larger than max_message")                  \
  XX(EMFILE, -EMFILE, "too many open files")                                  \
  XX(EAGAIN, -EAGAIN, "resource temporarily unavailable")                     \
  XX(ENOSYS, -ENOSYS, "not supported on this system")                         \
  XX(ETASK, -4001, "task failed")                                             \
  XX(EWORKER, -4002, "worker process died")                                   \
  XX(EBROKEN, -4003, "pool is broken")                                        \
  XX(ENOTASK, -4004, "no task registered under that name")                    \
  XX(ESHUTDOWN, -4005, "pool is shut down")                                   \
  XX(ETYPE, -4006, "value does not match the format")                         \
  XX(EDEADLINE, -4007, "task ran past its deadline")                          \
  XX(EINTR, -EINTR, "wait interrupted by fp_pool_interrupt")                  \
  XX(ENOTSUP, -ENOTSUP, "not supported in this pool's mode")

typedef enum fp_errno {
#define FP__ERR_ENUM(name, value, msg) FP_##name = (value),
  FP_ERRNO_MAP(FP__ERR_ENUM)
#undef FP__ERR_ENUM
  FP__ERR_PAD = -4999 /* keeps the enum signed; not an error code */
} fp_errno;

/* Text for any code: forkpool's, -errno (strerror's text), or unknown. */
FP_EXTERN const char *fp_strerror(int err);
/* "FP_EINVAL" and so on; "UNKNOWN" for codes not in FP_ERRNO_MAP. */
FP_EXTERN const char *fp_err_name(int err);
/* "0.1.0": the version of the library actually linked. */
FP_EXTERN const char *fp_version(void);

/* --- Tasks (run inside workers) ------------------------------------------ */

typedef struct fp_pool fp_pool;
typedef struct fp_future fp_future;
typedef struct fp_call fp_call;

/*
 * A task runs in a worker.  args is the one msgpack object the caller
 * submitted (borrowed, valid during the call).  The task packs exactly one
 * result object into out and returns 0.  To fail, return fp_call_fail(...).
 * Any other non-zero return fails the future with kind "TaskError"; packing
 * zero or several objects fails it with kind "ResultError".
 */
typedef int (*fp_task_fn)(fp_call *call, const msgpack_object *args,
                          msgpack_packer *out);

/* One row of a task table; a table ends with a row whose name is NULL. */
typedef struct fp_task {
  const char *name; /* borrowed; at most 255 bytes */
  fp_task_fn fn;
} fp_task;

/*
 * Adds name to the process-wide task table that pools created afterwards
 * copy.  Thread-safe.  FP_EINVAL for a NULL, empty or over-long name, or a
 * name already registered with another function.  A pool's own table
 * (fp_pool_options.tasks) needs no global state and is preferred in libraries.
 */
FP_EXTERN int fp_task_register(const char *name, fp_task_fn fn);

/*
 * Called from a task: records the failure the future will report as
 * "kind: message" with FP_ETASK.  kind and fmt are borrowed.  Returns
 * FP_ETASK so that a task can `return fp_call_fail(...)`.
 */
FP_EXTERN int fp_call_fail(fp_call *call, const char *kind, const char *fmt,
                           ...) FP_PRINTF(3, 4);

/*
 * Called from a task: the state the pool's init function left in this
 * worker (fp_pool_options.init), or NULL.
 */
FP_EXTERN void *fp_call_state(fp_call *call);

/*
 * Called from a task: 1 once the task has been asked to stop (its deadline
 * passed and its grace began, or it was cancelled with FP_CANCEL_RUNNING
 * under a grace), else 0.  Cheap enough for an inner loop: it reads a flag
 * in the worker's memory.  A task that has called it is not sent SIGTERM
 * when asked to stop: it is trusted to return within its grace.  0 for a
 * NULL call and in init.
 */
FP_EXTERN int fp_call_should_stop(fp_call *call);

/*
 * Runs once in each worker before its first task.  It may set *state for
 * the tasks (fp_call_state).  It returns 0, or fails with fp_call_fail or any
 * non-zero value: the pool then becomes broken with that message, since a
 * replacement worker would fail the same way.
 */
typedef int (*fp_init_fn)(void **state, void *arg, fp_call *call);

/* --- Pool ---------------------------------------------------------------- */

typedef void (*fp_log_fn)(void *arg, int level, const char *message);

enum fp_log_level { FP_LOG_ERROR = 0, FP_LOG_WARN = 1, FP_LOG_INFO = 2 };

/*
 * Options for fp_pool_create.  Always start from FP_POOL_OPTIONS_INIT: it
 * records sizeof the struct your program was compiled with, so that later
 * versions can add fields at the end without breaking your binary.
 */
typedef struct fp_pool_options {
  size_t size;                /* sizeof(fp_pool_options); set by _INIT */
  unsigned workers;           /* 0: one per CPU we may run on */
  size_t max_message;         /* largest frame in bytes; 0: 1 GiB; <= 4 GiB-1 */
  unsigned restart_limit;     /* more worker deaths than this in a row, no
                                 task answered between, break the pool
                                 (over MPI: per host, which leaves it);
                                 0: never */
  unsigned restart_window_ms; /* unused; must not be 0 if the limit is set */
  unsigned max_inflight;      /* tasks handed to one worker ahead; 0: auto */
  const fp_task *tasks;       /* borrowed during create; NULL-name ended */
  fp_log_fn log;              /* NULL: no diagnostics; called with the */
  void *log_arg;              /*   pool locked: it must not call forkpool */
  fp_init_fn init;            /* NULL: none; runs in each worker */
  void *init_arg;             /* passed to init, in the worker's memory */
  unsigned max_tasks_per_worker; /* replace a worker after so many; 0: never */
  size_t shm_args;            /* shared memory for large arguments, bytes of
                                 address space: 0: 256 MiB; 1 MiB..1 TiB; or
                                 FP_SHM_OFF: every payload through pipes */
  size_t max_worker_rss;      /* bytes; a worker whose resident memory is
                                 above this after a task is replaced (a
                                 recycle; the task's result is kept);
                                 0: never; else at least 1 MiB */
  size_t worker_rlimit_as;    /* bytes of address space per worker
                                 (RLIMIT_AS), counting the shared area;
                                 0: the caller's limit */
  unsigned worker_rlimit_cpu; /* CPU seconds per worker process, over all
                                 its tasks (RLIMIT_CPU); 0: the caller's */
  unsigned pin_workers;       /* 1: worker i runs only on the i-th CPU the
                                 caller may use (mod their count); 0: no */
  int worker_stdout;          /* where a worker's fd 1 goes: FP_STDOUT_* */
  int deadline_grace_ms;      /* a task past its deadline (or cancelled
                                 running) is asked to stop, and its worker
                                 killed this much later; 0: killed at once;
                                 0..FP_GRACE_MAX_MS */
  unsigned mode;              /* FP_MODE_PROCESSES (0), FP_MODE_THREADS or
                                 FP_MODE_INLINE: see forkpool(7) */
} fp_pool_options;

/* Where tasks run: forked worker processes (the default), threads of the
 * caller's process, or the caller's own thread inside the calls that wait. */
enum fp_pool_mode {
  FP_MODE_PROCESSES = 0,
  FP_MODE_THREADS = 1,
  FP_MODE_INLINE = 2,
};

#define FP_SHM_OFF ((size_t)-1)
#define FP_GRACE_MAX_MS (3600 * 1000) /* the longest grace: an hour */
#define FP_GRACE_POOL (-1) /* fp_submit_options.grace_ms: the pool's grace */

/* Where the workers' standard output goes (fp_pool_options.worker_stdout).
 * In every case stdout is line-buffered in the worker. */
enum fp_stdout_mode {
  FP_STDOUT_STDERR = 0,       /* the default: the caller's stderr */
  FP_STDOUT_INHERIT = 1,      /* the caller's stdout */
  FP_STDOUT_NULL = 2,         /* /dev/null */
};

#define FP_POOL_OPTIONS_INIT                                                  \
  { sizeof(fp_pool_options), 0, 0, 10, 1000, 0, NULL, NULL, NULL,             \
    NULL, NULL, 0, 0, 0, 0, 0, 0, FP_STDOUT_STDERR, 0, FP_MODE_PROCESSES }

/*
 * Starts a fork server and the workers, and waits until every worker is
 * ready.  opts may be NULL for all defaults; it is borrowed.  On success
 * *out owns a pool the caller must pass to fp_pool_destroy.
 */
FP_EXTERN int fp_pool_create(fp_pool **out, const fp_pool_options *opts);

/*
 * Why the calling thread's last fp_pool_create failed, as text: for a
 * failing init "worker initializer failed: kind: message", or the signal or
 * exit status of a worker that died before it was ready.  NULL if that call
 * succeeded or there was none.  Owned by the library; valid in this thread
 * until its next fp_pool_create.  Needs no log function.
 */
FP_EXTERN const char *fp_pool_create_error(void);

enum fp_shutdown_flags {
  FP_SHUTDOWN_WAIT = 1u << 0,           /* block until all work and workers end */
  FP_SHUTDOWN_CANCEL_PENDING = 1u << 1, /* cancel tasks no worker has started */
};

/*
 * Stops accepting submits (they get FP_ESHUTDOWN).  With WAIT, runs the
 * dispatcher until every task is done and every worker and the fork server
 * have exited.  Calling it again is allowed.
 */
FP_EXTERN int fp_pool_shutdown(fp_pool *pool, unsigned flags);

/*
 * Shuts down with WAIT | CANCEL_PENDING and frees the pool.  Futures stay
 * valid, final and readable until released.  NULL is a no-op.  No other
 * thread may be using the pool or its futures during the call.
 */
FP_EXTERN void fp_pool_destroy(fp_pool *pool);

/*
 * After fp_pool_shutdown (FP_EINVAL before it), waits up to timeout_ms (-1:
 * forever, 0: no wait) for every task to end and then every worker and the
 * fork server to exit: 0 once they have, FP_ETIMEDOUT if time ran out
 * first (the pool goes on; call again), FP_EINTR after fp_pool_interrupt.
 * Workers still there 1 s after the last task ended are killed, as by
 * fp_pool_destroy, which must still free the pool.
 */
FP_EXTERN int fp_pool_join(fp_pool *pool, int timeout_ms);

/*
 * Makes every wait on the pool return FP_EINTR at once: fp_future_result,
 * fp_future_wait, fp_wait, fp_as_completed_next, fp_map_next,
 * fp_pool_dispatch and fp_pool_join, in any thread, the ones blocked now and
 * every later one that would block, until fp_pool_interrupt_clear: it is
 * sticky, so a signal that comes just before a wait is not lost.  A wait
 * whose condition is already met returns as usual.  Shutting down and
 * destroying are not affected.  Async-signal-safe: an atomic flag and one
 * write() to the pool's wake pipe; a signal handler may call it as long as
 * the pool is not destroyed under it.  FP_EINVAL for NULL or in a child.
 */
FP_EXTERN int fp_pool_interrupt(fp_pool *pool);
/* Ends fp_pool_interrupt's effect; waits block again.  Async-signal-safe. */
FP_EXTERN int fp_pool_interrupt_clear(fp_pool *pool);

typedef enum fp_pool_state {
  FP_POOL_RUNNING = 0,        /* takes submits */
  FP_POOL_SHUTTING_DOWN = 1,  /* shut down, terminated or killed: takes no
                                 submits; tasks or processes remain */
  FP_POOL_SHUT_DOWN = 2,      /* every task ended, every worker and the fork
                                 server exited (shutdown WAIT or join) */
  FP_POOL_BROKEN = 3,         /* takes no submits for the reason below */
} fp_pool_state;

/* Start from FP_POOL_STATUS_INIT so fields can be added later. */
typedef struct fp_pool_status {
  size_t size;                /* sizeof(fp_pool_status); set by _INIT */
  fp_pool_state state;
  int err;                    /* BROKEN: FP_EBROKEN, or FP_EMFILE if new
                                 workers could not place their pipes; 0 */
  char reason[256];           /* BROKEN: why, e.g. "worker initializer
                                 failed: kind: message" or "crash loop: ...";
                                 else "".  A copy: the caller's. */
  int interrupted;            /* 1 between fp_pool_interrupt and _clear */
} fp_pool_status;

#define FP_POOL_STATUS_INIT { sizeof(fp_pool_status), FP_POOL_RUNNING, 0, \
                              "", 0 }

/*
 * Fills *st (borrowed) with what the pool is doing, after a dispatcher
 * pass with no wait, so that a crash loop nobody waited on is seen.  Needs
 * no submit.  Why fp_pool_create failed is fp_pool_create_error's.
 */
FP_EXTERN int fp_pool_status_get(fp_pool *pool, fp_pool_status *st);

/*
 * Stops every worker now, with SIGTERM (terminate) or SIGKILL (kill), and
 * shuts the pool down: every task not done ends FP_CANCELLED (its result
 * is FP_ECANCELLED).  No worker is restarted.  fp_pool_destroy still frees.
 */
FP_EXTERN int fp_pool_terminate(fp_pool *pool);
FP_EXTERN int fp_pool_kill(fp_pool *pool);

/*
 * One per slot.  The fields after tasks are filled only for a caller whose
 * fp_pool_stats has cpu_user_us (its size says so): one built before
 * passes an array of the older layout, and gets that.
 */
typedef struct fp_worker_stats {
  pid_t pid;                  /* 0: no live worker in this slot */
  uint64_t tasks;             /* tasks this worker has answered */
  uint64_t cpu_user_us;       /* this worker's user CPU, microseconds, as of
                                 an answer less than 1 ms of its time ago;
                                 0 for a process without shared memory,
                                 and inline */
  uint64_t cpu_sys_us;        /* the same, system CPU */
} fp_worker_stats;

/*
 * Counters since the pool was created.  Every task submitted is in exactly
 * one of queued, running, finished, failed or cancelled (map items count one
 * by one).  Start from FP_POOL_STATS_INIT so fields can be added later.
 */
typedef struct fp_pool_stats {
  size_t size;                /* sizeof(fp_pool_stats); set by _INIT */
  uint64_t submitted;
  uint64_t queued;            /* now: in the parent's queue */
  uint64_t running;           /* now: handed to a worker */
  uint64_t finished;
  uint64_t failed;            /* any failure, deadline kills included */
  uint64_t cancelled;
  uint64_t deadline_kills;    /* workers killed for a task's deadline
                                 (threads: tasks given up on) */
  uint64_t worker_deaths;     /* workers that died unasked */
  uint64_t worker_restarts;   /* replacements forked after a death or kill */
  uint64_t worker_recycles;   /* replaced after max_tasks_per_worker */
  unsigned workers;           /* slots; also entries fp_pool_stats fills */
  unsigned workers_live;      /* slots with a live worker now */
  uint64_t shared_args;       /* tasks and map chunks whose arguments went
                                 through shared memory, not a pipe */
  uint64_t shared_results;    /* results that came back that way */
  uint64_t shared_bytes;      /* now: shared memory held by arguments */
  uint64_t cpu_user_us;       /* user CPU of every worker, microseconds:
                                 exited ones in full, live ones as their
                                 fp_worker_stats says */
  uint64_t cpu_sys_us;        /* the same, system CPU; with threads each
                                 thread's own; both 0 inline: the caller's
                                 own time */
  unsigned hosts_retired;     /* over MPI: hosts that left the pool while
                                 others went on (fp_mpi_pool_create(3),
                                 Failures); else 0 */
  unsigned workers_retired;   /* their slots, which get no worker again */
} fp_pool_stats;

#define FP_POOL_STATS_INIT { sizeof(fp_pool_stats), 0, 0, 0, 0, 0, 0, 0, 0, \
                             0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/*
 * Fills *st and, when workers is not NULL, up to n per-worker entries (one
 * per slot).  Both are borrowed.  Does not run the dispatcher.
 */
FP_EXTERN int fp_pool_stats_get(fp_pool *pool, fp_pool_stats *st,
                                fp_worker_stats *workers, size_t n);

/*
 * Runs the dispatcher for up to timeout_ms (0: no wait, -1: until something
 * happens; it does not wait if futures became done since the last call).
 * Returns how many futures became done since the last call, in this call or
 * in any other (>= 0), or a negative code.
 */
FP_EXTERN int fp_pool_dispatch(fp_pool *pool, int timeout_ms);

/*
 * A descriptor that polls readable when fp_pool_dispatch(pool, 0) has work
 * or futures became done since its last call.  Owned by the pool: do not
 * read it or close it.  FP_ENOSYS without epoll.
 */
FP_EXTERN int fp_pool_fd(fp_pool *pool);

/* --- Submitting ---------------------------------------------------------- */

/*
 * Submits the task called name with args, a buffer holding exactly one
 * msgpack object (FP_EINVAL otherwise).  args is copied: it is borrowed.
 * On success *out is a future owned by the caller (fp_future_release).
 * May run the dispatcher when the workers' pipes are full.
 */
FP_EXTERN int fp_submit(fp_pool *pool, const char *name, const void *args,
                        size_t len, fp_future **out);

/* Per-task options for fp_submit_ex; start from FP_SUBMIT_OPTIONS_INIT. */
typedef struct fp_submit_options {
  size_t size;                /* sizeof(fp_submit_options); set by _INIT */
  int deadline_ms;            /* > 0: stop the task if it runs longer (after
                                 its grace, kill its worker) and fail it
                                 with FP_EDEADLINE; 0: none */
  unsigned retries;           /* run again, up to this many times, when its
                                 worker dies under it; then FP_EWORKER */
  int grace_ms;               /* FP_GRACE_POOL (set by _INIT): the pool's
                                 deadline_grace_ms; else as that option */
} fp_submit_options;

#define FP_SUBMIT_OPTIONS_INIT                                                \
  { sizeof(fp_submit_options), 0, 0, FP_GRACE_POOL }

/* As fp_submit, with options (NULL: the defaults). */
FP_EXTERN int fp_submit_ex(fp_pool *pool, const char *name, const void *args,
                           size_t len, const fp_submit_options *opts,
                           fp_future **out);

/* As fp_submit, with args packed from fmt as by fp_pack. */
FP_EXTERN int fp_submitf(fp_pool *pool, const char *name, fp_future **out,
                         const char *fmt, ...);

/*
 * Packs the values in fmt into pk:
 *   n nil          b bool (int)      i int            I int64_t
 *   u unsigned     U uint64_t        f double         s string (NUL-ended)
 *   s# string (const char *, size_t) y bin (const void *, size_t)
 *   O a msgpack object (const msgpack_object *)
 *   [ ... ] array  { ... } map (key, value, key, value ...)
 * The space character, ',' and ':' are ignored; brackets nest at most 64
 * deep.  The whole format and every pointer is checked before anything is
 * written: on FP_EINVAL pk is unchanged (on FP_ENOMEM it may hold a part).
 */
FP_EXTERN int fp_pack(msgpack_packer *pk, const char *fmt, ...);
FP_EXTERN int fp_vpack(msgpack_packer *pk, const char *fmt, va_list ap);

/*
 * Reads obj by fmt into pointers (the same letters as fp_pack):
 *   n nil          b int *           i int *          I int64_t *
 *   u unsigned *   U uint64_t *      f double *       o const msgpack_object **
 *   s const char **, size_t *  (not NUL-terminated; points into obj)
 *   y const void **, size_t *  (points into obj)
 *   [ ... ] an array of exactly that many items
 *   { s: ... } a map: each key is a const char * argument, each value a spec
 * Returns FP_ETYPE on a mismatch (a number out of range included),
 * FP_EINVAL on a bad format.  Outputs may be partly written on error.
 */
FP_EXTERN int fp_unpack(const msgpack_object *obj, const char *fmt, ...);
FP_EXTERN int fp_vunpack(const msgpack_object *obj, const char *fmt,
                         va_list ap);

/* --- Futures ------------------------------------------------------------- */

typedef enum fp_state {
  FP_PENDING = 0,   /* queued in the parent */
  FP_RUNNING = 1,   /* handed to a worker */
  FP_FINISHED = 2,  /* has a result */
  FP_FAILED = 3,    /* has an error code and message */
  FP_CANCELLED = 4, /* cancelled, or its pool terminated, before done */
} fp_state;

/* The state now, after a dispatcher pass with no wait. */
FP_EXTERN fp_state fp_future_state(fp_future *f);

/* 0 once done (finished, failed or cancelled), FP_ETIMEDOUT otherwise. */
FP_EXTERN int fp_future_wait(fp_future *f, int timeout_ms);

/*
 * Waits up to timeout_ms (-1: forever) and returns 0 with *out pointing to
 * the result object, owned by the future and valid until it is released.
 * Otherwise *out is NULL and the code is FP_ETIMEDOUT (not done yet), the
 * future's failure (FP_ETASK, FP_ENOTASK, FP_EMSGSIZE, FP_EWORKER,
 * FP_EDEADLINE, FP_EPROTO, FP_ENOMEM, FP_EBROKEN, FP_ECANCELLED), FP_EINVAL
 * for bad arguments or a pool used in a forked child, or -errno if poll()
 * itself failed.
 */
FP_EXTERN int fp_future_result(fp_future *f, int timeout_ms,
                               const msgpack_object **out);

/*
 * The failure as text ("kind: message" for a task's fp_call_fail, the pid
 * and signal for a dead worker), owned by the future; NULL unless failed or
 * cancelled.
 */
FP_EXTERN const char *fp_future_error(fp_future *f);

/* fp_future_error in parts.  Start from FP_ERROR_INFO_INIT. */
typedef struct fp_error_info {
  size_t size;                /* sizeof(fp_error_info); set by _INIT */
  int err;                    /* what fp_future_result returns for it */
  const char *kind;           /* a worker's failure (a task's fp_call_fail,
                                 "TaskError", "ResultError", ...): its kind;
                                 any other: fp_err_name(err) */
  const char *message;        /* a worker's failure: its message; any other:
                                 the whole text of fp_future_error */
  pid_t pid;                  /* the worker that died or was killed under
                                 the task (FP_EWORKER, FP_EDEADLINE); 0 */
  int exit_status;            /* that worker's exit status; -1: none */
  int signal;                 /* the signal that ended it; 0: none */
} fp_error_info;

#define FP_ERROR_INFO_INIT { sizeof(fp_error_info), 0, NULL, NULL, 0, -1, 0 }

/*
 * Fills *info (borrowed): 1 if f failed or was cancelled, 0 if it has no
 * failure (not done, or finished: then err 0 and both strings NULL), or
 * FP_EINVAL.  kind and message are owned by f (or static), valid until it
 * is released, like fp_future_error's text.
 */
FP_EXTERN int fp_future_error_info(fp_future *f, fp_error_info *info);

enum fp_cancel_flags {
  /* Also stop a running task: its worker is killed and replaced, and the
   * tasks queued behind it are handed out again.  A task already in a
   * worker's pipe but not started still runs there; its answer is dropped.
   * Under a grace (grace_ms), the task is asked to stop first, as at a
   * deadline, and the future ends FP_CANCELLED once it has. */
  FP_CANCEL_RUNNING = 1u << 0,
};

/*
 * Cancels a future no worker has taken (flags 0), or any future not done
 * (FP_CANCEL_RUNNING).  0 if it is now cancelled (or already was), FP_EBUSY
 * if it is running (without the flag) or done.
 */
FP_EXTERN int fp_future_cancel(fp_future *f, unsigned flags);

/*
 * Calls cb(f, arg) once when f is done, in the thread that runs the
 * dispatcher and without any lock held, so cb may submit and wait; right
 * away, in this thread, if f is done already.  Several callbacks run in the
 * order they were added.
 */
typedef void (*fp_done_fn)(fp_future *f, void *arg);
FP_EXTERN int fp_future_on_done(fp_future *f, fp_done_fn cb, void *arg);

/* --- Waiting on many ----------------------------------------------------- */

typedef enum fp_wait_mode {
  FP_FIRST_COMPLETED = 0,     /* any one done */
  FP_FIRST_EXCEPTION = 1,     /* any one failed, or all done */
  FP_ALL_COMPLETED = 2,       /* all done */
} fp_wait_mode;

/*
 * Waits up to timeout_ms until mode is met for the n futures fs (borrowed,
 * all of one pool).  0 when met, FP_ETIMEDOUT otherwise; either way
 * *n_done, if not NULL, is how many are done.  Which ones: fp_future_state,
 * which does not run the dispatcher for a done future.
 */
FP_EXTERN int fp_wait(fp_future *const *fs, size_t n, fp_wait_mode mode,
                      int timeout_ms, size_t *n_done);

/*
 * Yields the futures fs as they become done, each once, within one overall
 * timeout (-1: none) counted from create.  fs is copied; the futures are
 * retained until destroy.  next returns 1 with *f (borrowed), 0 once every
 * future was yielded, or FP_ETIMEDOUT.
 */
typedef struct fp_as_completed fp_as_completed;
FP_EXTERN int fp_as_completed_create(fp_as_completed **out,
                                     fp_future *const *fs, size_t n,
                                     int timeout_ms);
FP_EXTERN int fp_as_completed_next(fp_as_completed *it, fp_future **f);
FP_EXTERN void fp_as_completed_destroy(fp_as_completed *it);

/* --- map ------------------------------------------------------------------- */

/*
 * Produces a map's items one at a time: packs the next argument object into
 * pk and returns 1, returns 0 at the end, or a negative code to stop the map
 * with that error (it is not called again after 0 or an error).  Runs in the
 * caller's thread, during fp_map, fp_map_unordered and fp_map_next.
 */
typedef int (*fp_map_input_fn)(void *arg, msgpack_packer *pk);

/* One of the two: a msgpack array of argument objects, or a callback. */
typedef struct fp_map_input {
  const void *array;          /* borrowed until fp_map_destroy */
  size_t len;
  fp_map_input_fn next;       /* lazy: called as room frees up */
  void *arg;
} fp_map_input;

typedef void (*fp_progress_fn)(void *arg, size_t done, size_t total);

typedef struct fp_map_options {
  size_t size;                /* sizeof(fp_map_options); set by _INIT */
  size_t chunksize;           /* items per message; 0: automatic */
  size_t buffersize;          /* items in flight at most; 0: automatic */
  int deadline_ms;            /* per item, as fp_submit_options; 0: none */
  fp_progress_fn progress;    /* NULL: none; total 0 while unknown */
  void *progress_arg;
  int timeout_ms;             /* > 0: the whole map's, from fp_map: then
                                 fp_map_next returns FP_ETIMEDOUT for good
                                 and what is in flight is cancelled; 0: none */
  unsigned timeout_cancel;    /* FP_CANCEL_RUNNING: that cancel also kills
                                 running items; 0: they finish unread */
  int item_args;              /* 1: fill fp_map_item.args; 0: leave it */
} fp_map_options;

#define FP_MAP_OPTIONS_INIT { sizeof(fp_map_options), 0, 0, 0, NULL, NULL, \
                              0, 0, 0 }

/* One result of a map: valid until the next fp_map_next or destroy. */
typedef struct fp_map_item {
  size_t index;               /* position in the input */
  int err;                    /* 0, or the item's FP_E* code */
  const msgpack_object *result; /* when err == 0 */
  const char *error;          /* when err != 0 */
  /* Since 0.2, written only for a map made with item_args set (a program
   * built with an older header has a shorter struct): */
  const msgpack_object *args; /* the item's argument object, owned by the
                                 map, valid as long as result */
} fp_map_item;

typedef struct fp_map_iter fp_map_iter;

/*
 * Runs the task name over every item of in: fp_map yields results in input
 * order, fp_map_unordered as they finish.  One failing item fails only
 * itself: a chunk whose worker dies, runs past its deadline or whose answer
 * is too large is split and its items sent one by one.  Stats count the
 * split items again as submitted.  On success *out owns the map.
 */
FP_EXTERN int fp_map(fp_pool *pool, const char *name, const fp_map_input *in,
                     const fp_map_options *opts, fp_map_iter **out);
FP_EXTERN int fp_map_unordered(fp_pool *pool, const char *name,
                               const fp_map_input *in,
                               const fp_map_options *opts, fp_map_iter **out);
/* 1 with *item filled, 0 at the end, FP_ETIMEDOUT (for good once the map's
 * timeout_ms passed), FP_EINTR, or the input's error. */
FP_EXTERN int fp_map_next(fp_map_iter *m, int timeout_ms, fp_map_item *item);
/* Cancels what has not run and frees the map.  NULL is a no-op. */
FP_EXTERN void fp_map_destroy(fp_map_iter *m);

/* Reference counting: each retain needs one release.  Thread-safe. */
FP_EXTERN fp_future *fp_future_retain(fp_future *f);
FP_EXTERN void fp_future_release(fp_future *f);

#ifdef __cplusplus
}
#endif
#endif /* FORKPOOL_H */

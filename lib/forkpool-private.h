/*
 * Internal declarations, grouped by the file that defines them.  Internal
 * non-static names start with fp__.
 */
#ifndef FORKPOOL_PRIVATE_H
#define FORKPOOL_PRIVATE_H

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <forkpool.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>

#define FP__DEFAULT_MAX_MESSAGE ((size_t)1 << 30)
#define FP__MAX_NAME 255
#define FP__HDR 4 /* frame header: body length, 32-bit little-endian */

/* --- sys.c: small OS helpers ---------------------------------------------- */

int fp__pipe(int fds[2]);                      /* close-on-exec, blocking */
int fp__set_nonblock(int fd);
int fp__close_from(int lowfd);                 /* close every fd >= lowfd */
int64_t fp__now_ms(void);                      /* CLOCK_MONOTONIC */
int fp__deadline(int timeout_ms, int64_t *out); /* -1: none */
int fp__remaining_ms(int64_t deadline);        /* for poll(); -1 if none */
void fp__grow_pipe(int fd);                    /* best effort F_SETPIPE_SZ */

/*
 * Writes to a pipe without letting SIGPIPE reach the process: the signal is
 * blocked in this thread for the call and a SIGPIPE it raised is consumed.
 */
ssize_t fp__writev_nosigpipe(int fd, const struct iovec *iov, int iovcnt);

/* --- frame.c: length-prefixed frames on a descriptor ---------------------- */

/*
 * The transport interface of the dispatcher: frames in, frames out.  A
 * frame is an owned malloc'd buffer whose first FP__HDR bytes are the
 * header, filled in by fp__frame_seal.
 */
typedef struct fp__frame {
  char *buf;             /* header + body, owned */
  size_t len;            /* header + body */
  struct fp__frame *next;
} fp__frame;

void fp__frame_seal(char *buf, size_t body_len);
uint32_t fp__frame_body_len(const char *hdr);

/* Parent side, non-blocking. */
typedef struct fp__reader {
  char hdr[FP__HDR];     /* header being read */
  size_t hdr_have;
  char *body;            /* body being read, owned */
  size_t body_len;
  size_t body_have;
  char *chunk;           /* read-ahead for small frames, owned */
  size_t chunk_len, chunk_off;
} fp__reader;

enum { FP__IO_AGAIN = 0, FP__IO_FRAME = 1, FP__IO_EOF = 2 };

void fp__reader_init(fp__reader *r);
void fp__reader_free(fp__reader *r);
/*
 * Reads towards the next frame.  FP__IO_FRAME with *body (owned by the
 * caller) and *len, FP__IO_AGAIN when the pipe is empty, FP__IO_EOF at end
 * of file, or a negative code: FP_EPROTO for a length over max.
 */
int fp__reader_next(fp__reader *r, int fd, size_t max, char **body,
                    size_t *len);

/* Worker side, blocking: 1 frame, 0 EOF, negative error. */
int fp__read_frame_blocking(int fd, fp__reader *r, size_t max, char **body,
                            size_t *len);
int fp__write_all(int fd, struct iovec *iov, int iovcnt);

/* --- codec.c: the messages, as msgpack ------------------------------------ */

enum fp__msg_type { FP__MSG_TASK = 0, FP__MSG_RESULT = 1 };

/*
 * TASK body:   0, id, name, args            (a stream of msgpack objects)
 * RESULT body: 1, id, 0, result             (success)
 *              1, id, code, kind, message   (failure; code is an FP_E*)
 */
int fp__encode_task(uint64_t id, const char *name, const void *args,
                    size_t args_len, char **frame, size_t *frame_len);
int fp__decode_task(const char *body, size_t len, msgpack_zone *z,
                    uint64_t *id, const char **name, size_t *name_len,
                    msgpack_object *args);
/* Writes the RESULT prefix for id and code into sb (header space first). */
int fp__encode_result_head(msgpack_sbuffer *sb, uint64_t id, int code);
int fp__decode_result_head(const char *body, size_t len, uint64_t *id,
                           int *code, size_t *off);
/* 0 if [off, len) holds exactly one msgpack object; FP_EINVAL otherwise. */
int fp__count_objects(const char *buf, size_t len, size_t *n);

/* --- task.c: the task table ------------------------------------------------ */

typedef struct fp__tasks {
  fp_task *rows;         /* owned copies of names */
  size_t n;
} fp__tasks;

int fp__tasks_build(fp__tasks *t, const fp_task *own);
void fp__tasks_free(fp__tasks *t);
fp_task_fn fp__tasks_find(const fp__tasks *t, const char *name, size_t len);
int fp__task_name_ok(const char *name);

/* --- worker.c: the worker's loop ------------------------------------------ */

typedef struct fp__worker_cfg {
  const fp__tasks *tasks;
  size_t max_message;
  unsigned nslots;       /* slots the fork server accepts: 0 .. nslots-1 */
} fp__worker_cfg;

/* Runs tasks from in_fd, answers on out_fd, exits the process on EOF. */
void fp__worker_main(const fp__worker_cfg *cfg, int in_fd, int out_fd)
    __attribute__((noreturn));

/* --- forkserver.c: forks workers and reports their exits ------------------ */

enum fp__ctl_op {
  FP__CTL_SPAWN = 1,     /* parent -> fs: fork a worker for slot */
  FP__CTL_KILL = 2,      /* parent -> fs: signal value to pid, if alive */
  FP__CTL_SPAWNED = 3,   /* fs -> parent: pid, with its two fds attached */
  FP__CTL_SPAWN_FAILED = 4, /* fs -> parent: value is -errno */
  FP__CTL_EXITED = 5,    /* fs -> parent: value is the wait status */
  FP__CTL_READY = 6,     /* fs -> parent: pid is the fork server's */
};

typedef struct fp__ctl {
  uint32_t op;
  uint32_t slot;
  int32_t pid;
  int32_t value;
} fp__ctl;

/*
 * Forks the fork server (detached: the caller's process never has it as a
 * child after this returns).  *ctl_fd is the parent's end of the control
 * socket, close-on-exec and non-blocking.
 */
int fp__forkserver_start(const fp__worker_cfg *cfg, int *ctl_fd,
                         pid_t *fs_pid);
int fp__ctl_send(int fd, const fp__ctl *m);
/* 1 message (fds[] filled for SPAWNED), 0 nothing yet, FP__IO_EOF, or < 0. */
int fp__ctl_recv(int fd, fp__ctl *m, int fds[2]);

/* --- future.c -------------------------------------------------------------- */

struct fp_future {
  atomic_int refs;           /* the caller's and the pool's */
  atomic_int done;           /* 1 once final; then immutable */
  fp_pool *pool;             /* not used once final */
  fp_future *next, *prev;    /* in the pool queue or a worker's list */
  uint64_t id;
  fp_state state;
  int err;                   /* FP_E* when failed or cancelled */
  int slot;                  /* worker slot while running */
  char *frame;               /* TASK frame until written, owned */
  size_t frame_len;
  char *error;               /* failure text, owned */
  char *result_buf;          /* RESULT body the result points into, owned */
  msgpack_zone *zone;        /* result's containers, owned */
  msgpack_object result;
};

fp_future *fp__future_new(fp_pool *pool);
/* Makes f final; called with the pool lock held. */
void fp__future_finish(fp_future *f, char *body, size_t off, size_t len);
void fp__future_fail(fp_future *f, int err, const char *fmt, ...)
    FP_PRINTF(3, 4);

/* --- pool.c ---------------------------------------------------------------- */

/* Runs the dispatcher until f is done or the deadline; lock held. */
int fp__pool_wait_future(fp_pool *pool, fp_future *f, int64_t deadline);
void fp__pool_lock(fp_pool *pool);
void fp__pool_unlock(fp_pool *pool);
int fp__pool_cancel(fp_pool *pool, fp_future *f);
void fp__log(fp_pool *pool, int level, const char *fmt, ...) FP_PRINTF(3, 4);

#endif

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
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#define FP__DEFAULT_MAX_MESSAGE ((size_t)1 << 30)
#define FP__MAX_NAME 255
#define FP__HDR 4 /* frame header: body length, 32-bit little-endian */
#define FP__IOV_BATCH 64 /* frames per writev; submits per pass when full */
#define FP__FRAME_HERE 64 /* frames this small live in their future */
#define FP__CPU_STAMP_NS 1000000 /* a worker's CPU time read at most once
                                    a ms (worker.c, threads.c) */
#define FP__EXIT_RECYCLE 73 /* a worker left after its answer, its resident
                               memory over max_worker_rss: a recycle */

/* --- sys.c: small OS helpers ---------------------------------------------- */

int fp__pipe(int fds[2]);                      /* close-on-exec, blocking */
int fp__set_nonblock(int fd);
int fp__close_from(int lowfd);                 /* close every fd >= lowfd */
/* The same, but keeps keep_a and keep_b (-1: none) open. */
int fp__close_from_except(int lowfd, int keep_a, int keep_b);
/* One past the highest open descriptor. */
int fp__fd_top(void);
/* The calling thread's own user and system CPU time so far, in
 * microseconds (getrusage RUSAGE_THREAD): 0, or FP_ENOSYS where the system
 * has none (then both are 0). */
int fp__thread_cpu(uint64_t *user_us, uint64_t *sys_us);
/*
 * FP__VFORK_MIDDLE: the fork server's middle process can be a vfork() child,
 * because fp__rseq_renew can give the fork server back the rseq
 * registration that glibc made for the calling thread and that the kernel
 * does not pass on to a child sharing its parent's memory (nor so to that
 * child's own children).  Without it, glibc would read a CPU number that
 * no kernel updates (sched_getcpu).
 */
#if defined(HAVE_VFORK) && defined(HAVE_SYS_RSEQ_H) &&                        \
    HAVE_DECL___RSEQ_OFFSET && HAVE_DECL___RSEQ_SIZE &&                       \
    HAVE_DECL___RSEQ_FLAGS && HAVE_DECL_RSEQ_SIG && HAVE_DECL_SYS_RSEQ &&     \
    defined(HAVE_BUILTIN_THREAD_POINTER)
#define FP__VFORK_MIDDLE 1
#endif
/* Registers glibc's rseq area for this thread again, if glibc had
 * registered it and the kernel has not (EBUSY: it has); on any other
 * failure marks it failed, so that glibc asks the kernel instead. */
void fp__rseq_renew(void);
/*
 * Every descriptor the pool keeps goes through here (or fp__fd_pair_high):
 * a caller that closed its stdio would otherwise get our pipes and sockets
 * as 0, 1 or 2, and so would the fork server and the workers.  Returns fd,
 * or a close-on-exec copy of it from 3 up (fd is closed), or -errno (fd is
 * closed).
 */
int fp__fd_high(int fd);
/* Both ends of a pipe or socketpair: 0, or -errno with both closed and
 * set to -1. */
int fp__fd_pair_high(int fds[2]);
int64_t fp__now_ms(void);                      /* CLOCK_MONOTONIC */
unsigned fp__cpus_allowed(void);              /* affinity mask, at least 1 */
int64_t fp__now_ns(void);
/* A getrusage time in microseconds. */
struct timeval;
uint64_t fp__tv_us(const struct timeval *tv);
int fp__deadline(int timeout_ms, int64_t *out); /* -1: none */
int fp__remaining_ms(int64_t deadline);        /* for poll(); -1 if none */
void fp__grow_pipe(int fd);                    /* best effort F_SETPIPE_SZ */
/* This process's size and resident set, in pages, from /proc/self/statm. */
int fp__statm(unsigned long *size, unsigned long *resident);

/*
 * One large buffer kept for the next large frame: a megabyte freed and
 * malloc'd again per task makes glibc give its pages back and fault them in
 * again.  take returns a buffer of at least need bytes (the kept one if it
 * fits, else a malloc) or NULL; give keeps buf if it is large (and frees
 * what was kept), else frees it.  slot may be NULL: plain malloc and free.
 */
typedef _Atomic(char *) fp__spare;
char *fp__buf_take(fp__spare *slot, size_t need);
void fp__buf_give(fp__spare *slot, char *buf);

/* --- shm.c: shared memory for large arguments and results ------------------- */

#define FP__SHM_ARGS ((size_t)256 << 20) /* address space for arguments */
#define FP__SHM_KEEP ((size_t)8 << 20)   /* free bytes kept resident */
#define FP__SHM_COMPACT ((size_t)1 << 20) /* a ring's results stay in its
                                             first MiB while they fit */
#define FP__SHM_RING ((size_t)64 << 20)  /* for each worker's results */
#define FP__SHM_MIN ((size_t)64 << 10)   /* smaller payloads are framed */

typedef struct fp__shm {
  char *base;            /* mapped MAP_SHARED before the fork server forks;
                            NULL: no area, every payload is framed */
  size_t len;            /* bytes mapped */
  char *stamps;          /* a page per slot: what its worker runs */
  char *args;            /* the argument pages */
  size_t args_len;
  char *rings;           /* nslots rings of FP__SHM_RING bytes */
  unsigned nslots;
  /* The parent's allocator for args; a worker's copy is stale. */
  size_t page;           /* the unit of allocation */
  uint64_t *used;        /* a bit per page, set while allocated; owned */
  size_t npages;         /* a multiple of 64 */
  size_t touched;        /* pages at or above this are not resident */
  size_t in_use;         /* bytes allocated, in whole pages */
} fp__shm;

/* Maps the area: args bytes for arguments, a ring for each of nslots
 * workers.  0 with base NULL if the kernel would not; FP_ENOMEM. */
int fp__shm_init(fp__shm *m, size_t args, unsigned nslots);
/* After the fork server is forked: keep the area out of the caller's own
 * forks. */
void fp__shm_private(fp__shm *m);
void fp__shm_destroy(fp__shm *m);
/* Before a process that has the area (the fork server, a worker) exits:
 * under valgrind, keeps its leak check out of the area.  Otherwise nothing. */
void fp__shm_unseen(const fp__shm *m);
/* In a forked child's copy of a pool: frees the bitmap, unmaps nothing. */
void fp__shm_forget(fp__shm *m);
/* 0 and *off (into args) of len free bytes, or FP_ENOMEM when no run is
 * free. */
int fp__shm_alloc(fp__shm *m, size_t len, size_t *off);
void fp__shm_free(fp__shm *m, size_t off, size_t len);
/* Parent: the len bytes a worker left at pos in slot's ring, or NULL if
 * they do not lie in it or come before tail (what was read already). */
const char *fp__shm_ring_read(const fp__shm *m, unsigned slot, uint64_t tail,
                              uint64_t pos, size_t len);
/* Parent: everything before tail in slot's ring has been read. */
void fp__shm_ring_done(fp__shm *m, unsigned slot, uint64_t tail);
/* Under valgrind: len bytes at at are about to be written (by a relay, in
 * the pool's process).  Otherwise nothing. */
void fp__shm_lend(const void *at, size_t len);

/*
 * Per-item deadlines: a worker stamps each item of a map chunk as it starts
 * it (and the chunk once all are done) in its slot's stamp page; the
 * dispatcher reads the stamp to time the item.  open: worker, takes write
 * access to its stamp and marks it with its pid (NULL: none).  set: worker,
 * item of task id started at since (fp__now_ns).  read: parent, 0 with what
 * worker pid last stamped, or FP_EAGAIN if it stamped nothing readable.
 */
typedef struct fp__stamp fp__stamp;
fp__stamp *fp__stamp_open(const fp__shm *m, unsigned slot);
void fp__stamp_set(fp__stamp *st, uint64_t id, uint64_t item, int64_t since);
int fp__stamp_read(const fp__shm *m, unsigned slot, pid_t pid, uint64_t *id,
                   uint64_t *item, int64_t *since);
/* CPU time in the same page: the worker stamps its own getrusage after
 * each answer (and after init); the parent reads it for worker pid, 0, or
 * FP_EAGAIN (no stamp of that pid: *user and *sys are 0). */
void fp__stamp_cpu(fp__stamp *st, uint64_t user_us, uint64_t sys_us);
int fp__stamp_read_cpu(const fp__shm *m, unsigned slot, pid_t pid,
                       uint64_t *user_us, uint64_t *sys_us);

/* A worker's own ring. */
typedef struct fp__ring {
  char *base;            /* NULL: none, results go through the pipe */
  _Atomic uint64_t *tail; /* how far the parent has read */
  uint64_t head;         /* how far this worker has written */
  uint64_t gap_from, gap_to; /* the last stretch skipped to start again at
                            the ring's beginning */
  size_t touched;        /* bytes at the ring's start that may be resident */
} fp__ring;

struct fp__worker_cfg;
/* Worker: takes write access to slot's ring. */
void fp__ring_open(fp__ring *r, const struct fp__worker_cfg *cfg,
                   unsigned slot);
/* Worker: 0 and *pos where len bytes may be written, or FP_ENOMEM if the
 * ring has no room (the parent has not read enough). */
int fp__ring_place(fp__ring *r, size_t len, uint64_t *pos);
char *fp__ring_at(const fp__ring *r, uint64_t pos);
/* In the pool's own process, a relay that writes slot's ring for a remote
 * worker: r as fp__ring_open makes it, without a change of protection. */
void fp__ring_attach(fp__ring *r, const fp__shm *m, unsigned slot);

/* --- frame.c: length-prefixed frames on a descriptor ---------------------- */

/* Writes a frame header: the body's length, 32-bit little-endian, in the
 * FP__HDR bytes at buf. */
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
  int err;               /* the error that ended the stream; 0: none */
  int drained;           /* the last read emptied the pipe */
} fp__reader;

/* What a read came to, through an out-parameter beside a return of 0:
 * never 0, so never mistaken for a return code. */
enum fp__io {
  FP__IO_AGAIN = 1,      /* nothing more yet: poll again */
  FP__IO_FRAME,          /* a whole frame (or control message) */
  FP__IO_EOF,            /* end of file: the peer closed its end */
};

void fp__reader_init(fp__reader *r);
void fp__reader_free(fp__reader *r);
/*
 * Reads towards the next frame: 0 with *io FP__IO_FRAME (and *body and
 * *len), FP__IO_AGAIN when the pipe is empty or FP__IO_EOF at end of file;
 * or a negative code: FP_EPROTO for a length over max.  A frame whole in the
 * read-ahead is lent: *body points into it until the next call, and *owned
 * is NULL.  Otherwise *owned is the malloc'd body, the caller's, and
 * *body == *owned.  Once a read has emptied the pipe, the next call that
 * would read says FP__IO_AGAIN without one: call again only when poll()
 * says readable, or after fp__reader_undrain.
 */
int fp__reader_next_lent(fp__reader *r, int fd, size_t max, enum fp__io *io,
                         char **owned, const char **body, size_t *len);
/* Forgets that the pipe was empty: the next call reads whatever is there. */
void fp__reader_undrain(fp__reader *r);

/*
 * Worker side, blocking, for a caller that is done with each body before it
 * reads the next: 0 with *io FP__IO_FRAME or FP__IO_EOF, or a negative
 * code.  *body is borrowed.  It points into the read-ahead when the whole
 * body is there, else into *buf, the caller's buffer of *cap bytes,
 * replaced by a larger malloc when too small.  Valid until the next call.
 * A body cut short by FP_EAGAIN ends the stream.
 */
int fp__read_frame_borrowed(int fd, fp__reader *r, size_t max,
                            enum fp__io *io, char **buf, size_t *cap,
                            const char **body, size_t *len);
int fp__write_all(int fd, struct iovec *iov, int iovcnt);

/* --- codec.c: the messages, as msgpack ------------------------------------ */

enum fp__msg_type {
  FP__MSG_TASK = 0,
  FP__MSG_RESULT = 1,
  FP__MSG_TASK_SHM = 2,  /* a TASK whose arguments are in shared memory */
  FP__MSG_RESULT_SHM = 3, /* a success whose result is in the worker's ring */
};

/*
 * TASK body:   0, id, name, n, args...        (a stream of msgpack objects;
 *                                              n > 1 for a map chunk)
 *              2, id, name, n, off, len       (the args are the len bytes
 *                                              at off in the pool's shm)
 * RESULT body: 1, id, 0, result               (success; for a chunk, an
 *                                              array of [0, result] or
 *                                              [code, kind, message])
 *              1, id, code, kind, message     (failure; code is an FP_E*)
 *              3, id, pos, len                (success; the result is the
 *                                              len bytes at pos in the
 *                                              worker's ring)
 * id 0 is the worker's READY (code 0) or its init failure.
 */
/* The largest TASK frame for a name and arguments of these lengths. */
size_t fp__task_frame_max(size_t name_len, size_t args_len);
/* Into *frame if it is not NULL (then of at least fp__task_frame_max
 * bytes), else into a buffer taken from spare. */
int fp__encode_task(uint64_t id, const char *name, unsigned n,
                    const void *args, size_t args_len, fp__spare *spare,
                    char **frame, size_t *frame_len);
/* The same for arguments already at off in the shared area: the frame only
 * names them.  Into *frame, of at least fp__task_frame_max(name_len,
 * FP__SHM_REF) bytes. */
#define FP__SHM_REF 18 /* two msgpack uint64s */
int fp__encode_task_shm(uint64_t id, const char *name, unsigned n, size_t off,
                        size_t args_len, char *frame, size_t *frame_len);
/*
 * args points at the first of n objects, in body or, for a TASK that names
 * its arguments in shared memory, in shm (shm_len bytes; NULL: no area, and
 * such a TASK is FP_EPROTO); *args_len covers all of them.
 */
int fp__decode_task(const char *body, size_t len, const char *shm,
                    size_t shm_len, uint64_t *id, const char **name,
                    size_t *name_len, unsigned *n, const char **args,
                    size_t *args_len);
/* Writes the RESULT prefix for id and code into sb (header space first). */
int fp__encode_result_head(msgpack_sbuffer *sb, uint64_t id, int code);
int fp__decode_result_head(const char *body, size_t len, uint64_t *id,
                           int *code, size_t *off);
/* The RESULT frame that names its bytes in the ring, sealed: its length.
 * And back, from the body. */
#define FP__RESULT_SHM_MAX (FP__HDR + 1 + 3 * 9)
size_t fp__encode_result_shm(char frame[FP__RESULT_SHM_MAX], uint64_t id,
                             uint64_t pos, size_t len);
int fp__decode_result_shm(const char *body, size_t len, uint64_t *id,
                          uint64_t *pos, size_t *rlen);
/* Counts the msgpack objects in [buf, buf+len): 0, or FP_EINVAL if the
 * bytes are not a whole number of valid objects. */
int fp__count_objects(const char *buf, size_t len, size_t *n);
/* The same over the concatenation of iovcnt pieces (empty ones allowed),
 * but FP__EDEEP where the bytes nest containers deeper than msgpack-c reads
 * (MSGPACK_EMBED_STACK_SIZE, 32), so that the worker can say so. */
#define FP__EDEEP (-4999) /* internal: never returned by a public function */
int fp__count_objects_iov(const struct iovec *iov, int iovcnt, size_t *n);
/* Moves *off past one object; FP_EPROTO if it is malformed or cut short.
 * Accepts what msgpack_unpack accepts, without a zone. */
int fp__skip_object(const char *buf, size_t len, size_t *off);
/*
 * Zone-free readers of one value at *off, each accepting exactly what
 * msgpack_unpack reads as that type: 0 and *off moved past it, or FP_EPROTO.
 * uint: a POSITIVE_INTEGER of any width.  code: 0, or a NEGATIVE_INTEGER
 * above -5000 (an FP_E*).  str: *s points into buf.  array: the header only;
 * the *n items that follow are the caller's to read.  plain: a nil, bool,
 * integer, float, str or bin, built as msgpack_unpack builds it (a str or
 * bin points into buf); not an ext or a container.
 */
int fp__read_uint(const char *buf, size_t len, size_t *off, uint64_t *v);
int fp__read_code(const char *buf, size_t len, size_t *off, int *code);
/* Whether code is one of the failure codes a worker sends: FP_ETASK,
 * FP_ENOTASK and FP_EMSGSIZE.  Any other (FP_ECANCELLED, say) would be a
 * lie. */
int fp__is_worker_code(int code);
int fp__read_str(const char *buf, size_t len, size_t *off, const char **s,
                 size_t *n);
int fp__read_array(const char *buf, size_t len, size_t *off, uint32_t *n);
int fp__read_plain(const char *buf, size_t len, size_t *off,
                   msgpack_object *o);

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
  fp_init_fn init;       /* run before the first task; NULL: none */
  void *init_arg;
  uint64_t max_tasks;    /* exit after answering so many; 0: never */
  const fp__shm *shm;    /* the pool's shared area (read-only in a worker
                            but for its ring); NULL: none */
  int no_stamps;         /* a remote pool's host: nobody reads the stamps,
                            so no item is stamped (a clock read each) */
  size_t max_rss;        /* leave with FP__EXIT_RECYCLE above it; 0: never */
  size_t rlimit_as;      /* bytes; 0: leave RLIMIT_AS as it is */
  unsigned rlimit_cpu;   /* seconds; 0: leave RLIMIT_CPU as it is */
  unsigned pin;          /* pin worker i to the i-th allowed CPU */
  int out_mode;          /* fp_stdout_mode for the worker's fd 1 */
  int own_process;       /* tasks run in a worker process, the only thread:
                            the stop flags (process-wide, for the signal
                            handler) are theirs; 0 for threads and inline */
} fp__worker_cfg;

/*
 * A task's result: what it packed, copied into sb, except for large writes
 * that lie inside the TASK body (an echoed argument, say), which are only
 * referenced: a megabyte is not copied once more on its way out.  refs[k]
 * comes after the first refs[k].at bytes of sb.  The body must outlive the
 * answer's write.
 */
#define FP__REF_MIN ((size_t)64 << 10) /* smaller writes are copied */
#define FP__REFS 16                    /* references per result, at most */
typedef struct fp__ref {
  size_t at;             /* bytes of sb before it */
  const char *ptr;       /* inside the body */
  size_t len;
} fp__ref;

typedef struct fp__outbuf {
  msgpack_sbuffer sb;    /* the copied bytes */
  fp__ref refs[FP__REFS]; /* in the order written */
  unsigned nrefs;
  size_t ref_bytes;      /* the refs' lengths, summed */
  const char *lo, *hi;   /* the body refs may point into; NULL: none */
} fp__outbuf;
#define FP__OUT_IOV (2 * FP__REFS + 1) /* its pieces, at most */

void fp__outbuf_init(fp__outbuf *o);
void fp__outbuf_destroy(fp__outbuf *o);
/* Forgets the contents, and the body: refs are not taken until a new one
 * is set. */
void fp__outbuf_clear(fp__outbuf *o);
/* sb's bytes and the refs' in order, empty pieces left out: their count. */
int fp__outbuf_pieces(const fp__outbuf *o, struct iovec iov[FP__OUT_IOV]);
static inline size_t fp__outbuf_size(const fp__outbuf *o)
{
  return o->sb.size + o->ref_bytes;
}

/* Runs tasks from in_fd, answers on out_fd (large results in slot's ring);
 * exits the process at EOF, after max_tasks answers, or at a frame it
 * cannot take. */
void fp__worker_main(const fp__worker_cfg *cfg, unsigned slot, int in_fd,
                     int out_fd) __attribute__((noreturn));
/*
 * How a worker thread is asked to stop (FP_MODE_THREADS): a thread cannot
 * be signalled as a worker process is, so the dispatcher raises one of
 * these flags, which fp_call_should_stop reads.  Atomic: the dispatcher
 * writes, the worker thread reads, neither under a lock.
 */
typedef struct fp__stop {
  _Atomic uint64_t id;   /* the task (or map chunk) asked to stop; 0: none */
  atomic_int all;        /* every task from now on: the pool is going */
} fp__stop;

/*
 * One TASK body, as the worker runs it: decodes it, runs its task (or each
 * item of a map chunk) and leaves the RESULT frame in head (the sealed
 * header and the prefix) and result (the rest, which may point into body).
 * 0, or FP_EPROTO or FP_ENOMEM: the worker exits instead of answering.  body
 * is only read; zone is cleared before it returns.  stop: a worker
 * thread's flags (a task asked to stop before it starts is not run), or
 * NULL: a worker process's signal-driven flags (cfg->own_process), or none.
 */
int fp__worker_handle(const fp__worker_cfg *cfg, const fp__stop *stop,
                      void *state, const char *body, size_t len,
                      msgpack_zone *zone, msgpack_sbuffer *head,
                      fp__outbuf *result, fp__outbuf *item);
/* Runs init and leaves READY (id 0, code 0) or init's failure, sealed, in
 * head and result: 0, init's failure code (the frame says why), or
 * FP_ENOMEM (no frame). */
int fp__worker_ready(const fp__worker_cfg *cfg, void **state,
                     msgpack_sbuffer *head, fp__outbuf *result);
/* Worker, after fork: the pool's rlimits, CPU pin and stdout (cfg). */
void fp__worker_setup(const fp__worker_cfg *cfg, unsigned slot);

/* --- forkserver.c: forks workers and reports their exits ------------------ */

enum fp__ctl_op {
  FP__CTL_SPAWN = 1,     /* parent -> fs: fork a worker for slot (the fs
                            forks one for every slot at start, unasked) */
  FP__CTL_KILL = 2,      /* parent -> fs: signal value to pid, if alive */
  FP__CTL_SPAWNED = 3,   /* fs -> parent: pid, with its two fds attached */
  FP__CTL_SPAWN_FAILED = 4, /* fs -> parent: value is -errno */
  FP__CTL_EXITED = 5,    /* fs -> parent: value is the wait status,
                            user_us and sys_us its CPU time (wait4) */
  FP__CTL_READY = 6,     /* fs -> parent: pid is the fork server's */
  FP__CTL_STOP = 7,      /* parent -> fs: ask pid's task to stop: queue it
                            FP__STOP_SIG with value, if alive */
  FP__CTL_FINISH = 8,    /* parent -> fs: the pool is shutting down: send
                            every worker SIGCONT, and exit (closing the
                            socket) once every worker is reaped */
  FP__CTL_GONE = 9,      /* relay -> parent: slot's host can run no worker
                            any more (value: why, -errno); the EXITED of
                            its workers follow.  A local fork server never
                            sends it */
};

/* Carries a request to stop a task to its worker (worker.c).  Ignored by
 * default, so a request a worker cannot take is lost, not fatal; the
 * worker is killed after the grace either way. */
#define FP__STOP_SIG SIGURG

typedef struct fp__ctl {
  uint32_t op;
  uint32_t slot;
  int32_t pid;
  int32_t value;
  uint64_t user_us;      /* EXITED: the worker's user CPU, microseconds */
  uint64_t sys_us;       /* EXITED: its system CPU */
} fp__ctl;

/*
 * Forks the fork server (detached: the caller's process never has it as a
 * child after this returns, unless it is a child subreaper: then *fs_child
 * is 1 and the pool must reap *fs_pid).  *ctl_fd is the parent's end of the
 * control socket, close-on-exec, non-blocking and above 2.
 */
int fp__forkserver_start(const fp__worker_cfg *cfg, int *ctl_fd,
                         pid_t *fs_pid, int *fs_child);
int fp__ctl_send(int fd, const fp__ctl *m);
/* SPAWNED carries the task pipe's write end, the result pipe's read end and
 * the task pipe's read end (held only so writes never raise SIGPIPE). */
#define FP__CTL_NFDS 3
/* fp__ctl_send with those descriptors attached (SPAWNED). */
int fp__ctl_send_fds(int fd, const fp__ctl *m, const int fds[FP__CTL_NFDS]);
/* 0 with *io FP__IO_FRAME for a message in *m (fds[] filled for SPAWNED,
 * or all -1 if the kernel dropped them for want of descriptors),
 * FP__IO_AGAIN for nothing yet or FP__IO_EOF; or a negative code. */
int fp__ctl_recv(int fd, enum fp__io *io, fp__ctl *m,
                 int fds[FP__CTL_NFDS]);

/* --- future.c -------------------------------------------------------------- */

typedef struct fp__callback {
  fp_done_fn fn;
  void *arg;
  struct fp__callback *next;
} fp__callback;

typedef struct fp__fcache fp__fcache;

struct fp_future {
  atomic_int refs;           /* the caller's and, until final, the pool's */
  atomic_int done;           /* 1 once final; then immutable */
  fp_pool *pool;             /* not used once final */
  fp_future *next, *prev;    /* in the pool queue or a worker's list */
  uint64_t id;
  fp_state state;
  int err;                   /* FP_E* when failed or cancelled */
  int slot;                  /* worker slot while running */
  unsigned nitems;           /* 1, or the items of a map chunk */
  int deadline_ms;           /* 0: none */
  int grace_ms;              /* asked to stop, then killed this much later
                                (a deadline, a cancel); 0: killed at once */
  unsigned retries;          /* reruns left when its worker dies */
  int timed;                 /* run_ns is wanted (the dispatcher reads the
                                clock for it): 0 only for an inline pool's
                                tasks that are not map chunks */
  int64_t run_ns;            /* how long its worker took, about */
  int kill_at_start;          /* cancelled running while in a worker's pipe:
                                its worker is killed when it starts */
  unsigned late_item;        /* map chunk killed for its deadline: the item
                                that ran past it, + 1; 0: not known */
  char *frame;               /* TASK frame, kept to resend until the pool
                                lets go of it (fp__pool_let_go) */
  size_t frame_len;
  size_t shm_off, shm_len;   /* its arguments in the pool's shared area,
                                held as long as its frame; len 0: none */
  char *error;               /* failure text, owned; for a worker's
                                failure "kind: message", then a NUL and
                                kind again (fp_future_error_info) */
  size_t kind_len;           /* that kind's length + 1; 0: not a worker's */
  pid_t died_pid;            /* the worker that died under it; 0: none */
  int died_status;           /* its wait status */
  char *result_buf;          /* RESULT body the result points into, owned */
  msgpack_zone *zone;        /* result's containers, owned */
  msgpack_object result;      /* NIL for a map chunk: see result_off */
  size_t result_off;         /* chunk: its answer array in result_buf */
  size_t result_len;         /* chunk: where that array (the body) ends */
  fp__callback *callbacks;   /* to run once final; guarded by the pool lock */
  fp_future *cb_next;        /* in the pool's queue of callbacks to run */
  int cb_queued;             /* in that queue, or its callbacks running */
  unsigned chunk_ok;         /* chunk: entries that are [0, result] */
  uintptr_t fc;              /* the fp__fcache its block goes back to, its
                                size class in the low bit; 0: free() */
  char frame_here[];         /* a small frame, in the same allocation */
};

/*
 * Futures' memory kept for reuse by a pool: a burst of submits then
 * releases would otherwise have malloc give the pages back and fault them
 * in again.  Blocks come in two sizes (future.c), each the malloc chunk a
 * future with a frame of that size had anyway; a future with a larger
 * frame is malloc'd at its size.  Refcounted:
 * the pool's reference, and one per future made from it, so a future may
 * outlive its pool.  Its lock is only tried: taken, or plain malloc and
 * free (a forked child's copy whose lock a thread held at the fork).
 */
#define FP__FUTURES_KEPT 16384 /* blocks kept, at most (~5 MiB) */
struct fp__fcache {
  pthread_mutex_t mu;    /* guards free and n */
  atomic_int refs;
  atomic_int closed;     /* the pool is gone: keep nothing more */
  void *free[2];         /* blocks of each size class, oldest first,
                            linked through their first word */
  void *last[2];         /* the newest of each; NULL: none */
  unsigned n;            /* blocks kept, both classes */
};
/* NULL if out of memory: the pool's futures are then malloc'd. */
fp__fcache *fp__fcache_new(void);
/* The pool lets go of it. */
void fp__fcache_close(fp__fcache *fc);

fp_future *fp__future_new(fp_pool *pool);
/* With room for a frame of up to extra bytes at f->frame_here. */
fp_future *fp__future_new_extra(fp_pool *pool, size_t extra);
/* Frees f's memory (to its pool's cache, if it came from one): for a
 * future no one else holds, whose contents are freed already. */
void fp__future_free(fp_future *f);
/* Frees f->frame unless it is f->frame_here. */
void fp__future_drop_frame(fp_future *f);
/* Make f final; called with the pool lock held.  finish takes body. */
void fp__future_finish(fp_future *f, char *body, size_t off, size_t len);
/* The same for a body only lent: copied if the result must point into it. */
void fp__future_finish_lent(fp_future *f, const char *body, size_t off,
                            size_t len);
void fp__future_fail(fp_future *f, int err, const char *fmt, ...)
    FP_PRINTF(3, 4);
/* The same for a failure a worker sent, kept in parts too. */
void fp__future_fail_parts(fp_future *f, int err, const char *kind,
                           size_t kind_len, const char *msg, size_t msg_len);
/* Before f fails for the exit of its worker pid (wait status): notes them,
 * unless f is final already. */
void fp__future_died(fp_future *f, pid_t pid, int status);
/* 1 once f is final (then it never changes); no lock needed. */
int fp__future_is_done(const fp_future *f);
/* Runs and frees a list of f's callbacks; no lock held. */
void fp__callbacks_run(fp_future *f, fp__callback *list);

/* --- Worker slots: shared by dispatch.c, supervise.c and the transport ---- */

enum fp__slot_state {
  SLOT_OFF = 0,          /* no worker, none wanted */
  SLOT_SPAWNING,         /* SPAWN sent, SPAWNED not yet read */
  SLOT_STARTING,         /* channel open, its READY (after init) not yet read */
  SLOT_LIVE,             /* a worker taking tasks */
  SLOT_DYING,            /* killed or gone; waiting for its EXITED report */
};

/* A slot's channel as the pipe transport keeps it; pipe.c's alone. */
typedef struct fp__pipe_chan {
  int in_fd;             /* tasks to the worker; -1 once closed */
  int out_fd;            /* results from it; -1 once closed */
  int hold_fd;           /* the task pipe's read end, closed with in_fd */
  fp__reader rd;         /* partial result frame */
  uint32_t ep_in, ep_out; /* events registered in the pool's epoll set */
  uint64_t sent_head;    /* when the task pipe was closed: the id of the
                            oldest task written to it, and how many bytes
                            had been written from its frame on */
  size_t sent_bytes;
} fp__pipe_chan;

typedef struct fp__slot {
  /* The worker process: the supervisor's (supervise.c). */
  unsigned group;         /* its group in fp_pool.groups, for good */
  enum fp__slot_state state;
  pid_t pid;
  int killed;             /* the signal already sent; 0: none */
  int asked;              /* we stopped it on purpose: not a death */
  int ready;              /* it said READY: user code may have run */
  int fail_err;           /* why we killed it (FP_EPROTO, ...); 0: it died */
  char fail_msg[160];     /* the message for fail_err */
  uint64_t target;        /* the id of the task we killed it for, the only
                             one the kill may fail; 0: none */
  uint64_t stop_id;       /* the task we asked to stop (it is the target
                             too); 0: none */
  int64_t stop_kill_ns;   /* when its worker is killed if it has not
                             answered by then */
  /* Its tasks: the dispatcher's (dispatch.c). */
  fp_future *head, *tail; /* handed to it, oldest (the running one) first;
                             a final future here is a cancelled placeholder */
  unsigned inflight;      /* length of the head..tail list */
  int64_t batch_ns;       /* answers read since the last timing: their */
  uint64_t batch_items;   /* time since head_since, and their items */
  uint64_t assigned;      /* tasks handed to this worker, ever */
  uint64_t answered;      /* results it sent */
  uint64_t ring_tail;     /* how far we have read its ring */
  int64_t head_since;     /* when head became the running task (ns) */
  /* The send cursor: the dispatcher queues, the transport writes and
   * moves it on. */
  fp_future *send;        /* first frame not fully written; NULL: none */
  size_t send_off;        /* bytes of send's frame already written */
  unsigned unsent;        /* frames from send on: not fully written */
  int blocked;            /* the last send found the channel full */
  int can_send, can_recv; /* the channel is open that way (the transport
                             keeps these) */
  fp__pipe_chan pipe;     /* the pipe transport's own */
  void *local;            /* the thread or inline transport's own */
} fp__slot;

/*
 * Slots that live and fail together: a remote pool's host, whose workers
 * share a machine, an init and a fork server.  A local pool is one group.
 * A group whose workers crash-loop or fail init, or whose host is gone,
 * is retired while another group remains (its slots get no worker again);
 * the last group's failure breaks the pool instead (supervise.c).
 */
typedef struct fp__group {
  unsigned first, n;          /* its slots: first .. first + n - 1 */
  unsigned deaths_unanswered; /* its workers' deaths since one of its tasks
                                 was answered */
  unsigned deaths_unready;    /* deaths before READY since one of its
                                 workers was ready */
  int retired;                /* left the pool */
  char name[48];              /* in log lines: "host rank 1"; "" local */
} fp__group;

/*
 * The transport seam: how frames move between the dispatcher and a slot's
 * worker, in the manner of Redis's ae_epoll.c behind ae.c.  The dispatcher
 * decides what goes where; a transport moves the bytes.  Every call is made
 * with the pool lock held.  A frame that arrives goes to
 * fp__dispatch_frame; the end of the stream, or bytes that cannot be a
 * frame, go to fp__slot_recv_ended.
 */
enum { FP__SEND = 1, FP__RECV = 2, FP__BOTH = 3 };
typedef struct fp__transport {
  /* The slot has no channel yet. */
  void (*reset)(fp_pool *pool, unsigned slot);
  /* A new worker's channel, from the fork server's FP__CTL_NFDS
   * descriptors (now the transport's): 0, or < 0 to kill the worker. */
  int (*open)(fp_pool *pool, unsigned slot, int fds[FP__CTL_NFDS]);
  /* Writes what the channel takes of the frames from the send cursor on;
   * sets blocked when it takes no more. */
  void (*send)(fp_pool *pool, unsigned slot);
  /* Reads every frame that has arrived, until none is left. */
  void (*recv)(fp_pool *pool, unsigned slot);
  /* Stops sending (FP__SEND), receiving (FP__RECV) or both: FP__BOTH also
   * drops a frame half read. */
  void (*close)(fp_pool *pool, unsigned slot, int dir);
  /* The same in a forked child's copy of the pool: only our copies. */
  void (*forget)(fp_pool *pool, unsigned slot);
  /* Its descriptors for poll(), at pfd: how many (at most 2).  Used each
   * pass when the dispatcher has no epoll set of its own (no ep_event, or
   * no epoll). */
  int (*poll_add)(fp_pool *pool, unsigned slot, struct pollfd *pfd);
  /* poll() set revents on one of them. */
  void (*poll_event)(fp_pool *pool, unsigned slot, const struct pollfd *pfd);
  /* Keeps its descriptors in the epoll set fp__ep_set names, tagged
   * fp__ev_tag(slot, which), whenever its channel or send cursor changes
   * (and again when the dispatcher asks). */
  void (*ep_sync)(fp_pool *pool, unsigned slot);
  /* epoll said events (EPOLLIN, ...) on its descriptor which, in the
   * dispatcher's own set.  NULL: the transport's descriptors are polled
   * every pass (poll_add), and the dispatcher keeps no set of its own. */
  void (*ep_event)(fp_pool *pool, unsigned slot, unsigned which,
                   uint32_t events);
  /* Once the worker is gone: 1 if it never read a byte of its oldest
   * task's frame, which then never started; 0 if it may have.  NULL: 0. */
  int (*unread)(fp_pool *pool, unsigned slot);
  /* Runs, in this thread, work that needs no waiting (the inline
   * transport's next task): 1 if it ran some, and the pass then does not
   * wait at all; 0 if none.  NULL: never any. */
  int (*run_now)(fp_pool *pool);
  /* For a worker that cannot be killed (a thread): raises the flag that
   * asks task id to stop (fp_call_should_stop), or with id 0 every task
   * from now on.  NULL: the worker is a process, stopped by a signal and
   * killed when its grace is over (supervise.c). */
  void (*stop)(fp_pool *pool, unsigned slot, uint64_t id);
  /* With stop: the slot's worker goes on with a task the pool gave up on
   * (its future failed, its answer will be dropped).  Stops handing it
   * work until that answer comes, and takes back the tasks it was handed
   * and has not started: how many, the newest of those it was sent. */
  unsigned (*give_up)(fp_pool *pool, unsigned slot);
  /* For a worker with no fork server to report its exit (a thread): 1
   * once it has exited or never started, 0 while it runs, a task given up
   * on included.  NULL: the fork server reports exits, or there is no
   * worker to wait for (inline). */
  int (*exited)(fp_pool *pool, unsigned slot);
  /* For a worker in this process (a thread, or the caller inline): the
   * user and system CPU time it spent as the slot's worker, as of its last
   * reading, in microseconds.  NULL: a process, whose figures are in its
   * stamp (fp__stamp_read_cpu) and, once it exited, in the pool's. */
  void (*cpu)(fp_pool *pool, unsigned slot, uint64_t *user_us,
              uint64_t *sys_us);
  /* Frames a submit lets gather for a busy worker before it sends them;
   * 0: FP__IOV_BATCH, a writev's worth. */
  unsigned batch;
} fp__transport;

/* --- pipe.c: the transport for local workers -------------------------------- */

extern const fp__transport fp__pipe_transport;

/* --- inline.c, threads.c: workers in the caller's process ------------------ */

/* What a worker keeps from task to task, for one run in this process. */
typedef struct fp__local_worker {
  void *state;           /* what init left, for this worker alone */
  const fp__stop *stop;  /* a worker thread's stop flags; NULL inline */
  msgpack_zone zone;
  msgpack_sbuffer head;
  fp__outbuf result, item;
} fp__local_worker;

int fp__local_init(fp__local_worker *w);
void fp__local_destroy(fp__local_worker *w);
/* Runs init: the READY frame's body (or init's failure), malloc'd, in *out
 * and *len.  0, or FP_ENOMEM. */
int fp__local_ready(fp__local_worker *w, const fp__worker_cfg *cfg,
                    char **out, size_t *len);
/* Runs one TASK body: the RESULT frame's body in *out, which is buf when
 * it fits in cap bytes, else a malloc the caller frees.  0, or FP_EPROTO
 * or FP_ENOMEM (then no answer). */
int fp__local_run(fp__local_worker *w, const fp__worker_cfg *cfg,
                  const char *body, size_t blen, char *buf, size_t cap,
                  char **out, size_t *len);

/* At the end, with its worker gone: lets go of what the slot still holds
 * (tasks cancelled while they ran), as a worker process's exit would. */
void fp__local_release(fp_pool *pool, unsigned slot);

/* The slot needs no fork server: open (fds NULL) starts its worker. */
extern const fp__transport fp__inline_transport;
extern const fp__transport fp__thread_transport;

/* --- The pool: made in pool.c, read by every file of the parent side ----- */

/* A ring of slot numbers, nslots long (dispatch.c's scheduling). */
typedef struct fp__slotq {
  unsigned *v;            /* nslots entries */
  unsigned head, len;     /* the oldest entry, how many */
} fp__slotq;
enum { FP__IN_IDLE = 1, FP__IN_ROOM = 2, FP__IN_SENDQ = 4 };

struct fp_pool {
  pthread_mutex_t lock;
  pthread_cond_t cond;    /* broadcast after every dispatcher pass */
  int polling;            /* a thread is inside poll() without the lock */
  int wake[2];            /* lets a thread interrupt that poll() */
  int wake_pending;       /* a byte is in wake[] already */
  int notify[2];          /* in fp_pool_fd's set: futures done, unreported */
  int notify_pending;     /* a byte is in notify[] already */
  int ctl_fd;             /* control socket to the fork server; -1 closed */
  pid_t fs_pid;           /* the fork server: for messages, and for
                             waitpid when fs_child */
  int fs_child;           /* it is our child (we are a subreaper): reap it */
  pid_t owner;            /* the process that created the pool */
  volatile unsigned char *fork_guard; /* 1, but 0 in a forked child (a
                             MADV_WIPEONFORK page); NULL: compare owner */
  fp_pool_options opts;   /* the caller's, with defaults filled in */
  fp__tasks tasks;        /* names the pool accepts */
  fp__worker_cfg wcfg;    /* what the fork server's workers run */
  const fp__transport *tr; /* how frames reach the workers */
  fp__slot *slots;
  unsigned nslots;
  /* Scheduling without a scan of the slots (dispatch.c).  Each ring holds
   * slot numbers, a slot at most once (its bit in ringed[]); an entry may be
   * stale, and is checked when it is taken. */
  fp__slotq idle;         /* slots that may take work and had none */
  fp__slotq room;         /* slots that had work and room for more */
  fp__slotq sendq;        /* slots whose send cursor was set */
  unsigned char *ringed;  /* per slot: FP__IN_IDLE | FP__IN_ROOM | ... */
  int last_pick;          /* the slot given the last task (in no ring
                             while it has room); -1: none */
  unsigned nblocked;      /* sendq's slots found blocked by the last
                             schedule */
  unsigned ndeadlines;    /* tasks in workers' lists with a deadline */
  unsigned nstops;        /* slots whose task was asked to stop, in its
                             grace */
  struct pollfd *pfd;     /* the poll set: ctl, wake, then two per slot */
  int *pfd_who;           /* the slot of each entry; < 0 for ctl and wake */
  int evfd;               /* the dispatcher's own epoll set (transports
                             with ep_event): ctl, wake and the slots'
                             descriptors, so that a pass costs what is
                             ready, not the number of workers; -1: poll() */
  void *evs;              /* epoll_wait's array, nevs entries */
  unsigned nevs;
  int ev_ctl;             /* ctl_fd as registered in evfd (one-shot); -1 */
  int ev_ctl_armed;       /* ... and armed */
  int ev_wake;            /* wake[0] is in evfd */
  int ev_user;            /* evfd is in epfd, fp_pool_fd's set */
  fp_future *qhead, *qtail; /* PENDING tasks, oldest first */
  fp_future *cbq;         /* final futures whose callbacks must run */
  atomic_uint_fast64_t next_id;
  uint64_t ndone;         /* futures made final */
  uint64_t ndone_reported; /* of those, counted by fp_pool_dispatch */
  fp_pool_stats st;       /* counters; queued, running, workers computed */
  int closed;             /* no more submits */
  int stopping;           /* workers are being let go */
  int finishing;          /* FP__CTL_FINISH sent: the fork server's end of
                             file is its exit, not a death */
  int drained;            /* a shutdown WAIT or join returned 0: every task
                             ended, every worker let go (threads and inline
                             have no fork server whose exit says so) */
  int err;                /* FP_EBROKEN or a start-up error once broken */
  char err_msg[256];      /* why */
  fp__group *groups;      /* the slots' groups, in slot order */
  unsigned ngroups;
  unsigned nretired;      /* groups retired; never all (the pool breaks) */
  int64_t avg_run_ns;     /* time per task, a running mean; 0: unknown */
  unsigned ncpus;         /* CPUs the workers may run on, at create (a
                             remote pool: one per worker) */
  unsigned nlive;         /* slots in SLOT_LIVE: workers that said READY
                             and were not told to stop since */
  unsigned since_pass;    /* submits since the last dispatcher pass */
  unsigned oom_starts;    /* new workers in a row whose READY we could not
                             read for want of memory */
  int epfd;               /* for fp_pool_fd; -1 until asked for */
  fp__spare spare;        /* a large frame buffer kept for reuse */
  fp__fcache *fcache;     /* futures' blocks kept for reuse; NULL: none */
  fp__shm shm;            /* where large arguments go */
  int remote;             /* workers on other machines (remote.c): the
                             area is the bridge's to fill, and no worker
                             stamps it */
  atomic_int interrupted; /* fp_pool_interrupt: waits return FP_EINTR */
  int64_t stop_at;        /* when workers were let go (ms); 0: not yet */
  int64_t clock_ns;       /* fp__clock_hold's reading; 0: none held, -1:
                             held, not read yet */
  int64_t clock_last;     /* the last reading since fp__clock_fresh; 0:
                             none */
};

/* 1 in the process that created the pool; a forked child's copy of the
 * pool must not touch the workers' pipes.  No system call where the kernel
 * can wipe a page on fork. */
static inline int fp__pool_owned(const fp_pool *pool)
{
  return pool->fork_guard != NULL ? *pool->fork_guard != 0
                                  : pool->owner == getpid();
}

/* --- dispatch.c: the queue, scheduling, deadlines, results, the run loop -- */

/*
 * Runs the dispatcher, or waits for the thread that runs it, until pred is
 * true (0) or the deadline passes (FP_ETIMEDOUT).  A deadline in the past
 * still makes one pass without waiting; -1 means none.  The lock is held on
 * entry and on return, but released while waiting and while done-callbacks
 * run, so pred must re-read everything it looks at.
 */
typedef int (*fp__pool_pred)(fp_pool *pool, void *arg);
int fp__pool_run_until(fp_pool *pool, fp__pool_pred pred, void *arg,
                       int64_t deadline);
int fp__pool_wait_future(fp_pool *pool, fp_future *f, int64_t deadline);
void fp__pool_lock(fp_pool *pool);
/* Runs the callbacks of futures made final (unless this thread is running
 * them already, in a callback: its round runs them next), then unlocks. */
void fp__pool_unlock(fp_pool *pool);
/* 1 if this thread is running pool's callbacks; the pointer is only
 * compared, so it may be a pool that is gone. */
int fp__in_callbacks(const fp_pool *pool);
/* Queues final f for a round of callbacks.  Lock held. */
void fp__callbacks_queue(fp_pool *pool, fp_future *f);
int fp__poll_once(fp_pool *pool, int timeout_ms);
/* Hands queued tasks to workers; sends all frames, or (all == 0, on
 * submit) only where a worker may run dry or a batch has gathered. */
void fp__schedule(fp_pool *pool, int all);
/* The scheduler's rings for nslots slots, and the dispatcher's epoll set
 * when the transport takes its events (without one it polls): 0 or
 * FP_ENOMEM; freed by fp__sched_free (also after a failed init). */
int fp__sched_init(fp_pool *pool);
void fp__sched_free(fp_pool *pool);
/* Slot's channel opened: its worker may take work. */
void fp__sched_offer(fp_pool *pool, unsigned slot);
void fp__wake_poller(fp_pool *pool);
/* Waits on the pool's condition until broadcast or deadline (-1: none). */
void fp__cond_wait_until(fp_pool *pool, int64_t deadline);
void fp__signal_done(fp_pool *pool);
/* Keeps every slot's descriptors in the epoll set behind fp_pool_fd (or,
 * with the dispatcher's own set, that set in it). */
void fp__ep_sync(fp_pool *pool);
/* The epoll set the slots' descriptors belong in: the dispatcher's own,
 * else fp_pool_fd's, else none (-1). */
static inline int fp__ep_set(const fp_pool *pool)
{
  return pool->evfd >= 0 ? pool->evfd : pool->epfd;
}
/* The epoll tag of slot's descriptor which (0 or 1); FP__EV_CTL and
 * FP__EV_WAKE are the dispatcher's own. */
static inline uint64_t fp__ev_tag(unsigned slot, unsigned which)
{
  return (uint64_t)slot << 1 | which;
}
#define FP__EV_WAKE UINT64_MAX
#define FP__EV_CTL (UINT64_MAX - 1)
/* Answers handed over together (a transport's batch, a dispatcher pass)
 * and the tasks handed out after them share one reading of the clock,
 * taken at the first that asks: hold (1 if this call took the hold, 0 if
 * a caller holds it), then release with what hold returned.  Lock held. */
int fp__clock_hold(fp_pool *pool);
void fp__clock_release(fp_pool *pool, int took);
/* The lock was let go and taken back: a reading kept from before it is
 * stale (fp__poll_once reuses one from after). */
void fp__clock_fresh(fp_pool *pool);
/* A frame from slot's worker, from its transport.  body is lent (valid
 * until the call returns), or malloc'd and then owned == body, which this
 * takes. */
void fp__dispatch_frame(fp_pool *pool, unsigned slot, char *owned,
                        const char *body, size_t len);
/* Makes f final as failed or cancelled and lets go of it. */
void fp__pool_fail(fp_pool *pool, fp_future *f, int err, const char *msg);
/* The same for a task a worker holds: f stays in its list, with its frame
 * and arguments, as a placeholder until its answer or its worker's exit. */
void fp__pool_fail_held(fp_pool *pool, fp_future *f, int err,
                        const char *msg);
/* The pool is done with f: frees its frame and shared arguments, drops its
 * reference. */
void fp__pool_let_go(fp_pool *pool, fp_future *f);
/* Takes f off slot s's list: fails it, or lets go of a placeholder. */
void fp__slot_pop(fp_pool *pool, fp__slot *s, fp_future *f, int err,
                  const char *msg);
void fp__list_push(fp_future **head, fp_future **tail, fp_future *f);
void fp__list_unlink(fp_future **head, fp_future **tail, fp_future *f);
void fp__log(fp_pool *pool, int level, const char *fmt, ...) FP_PRINTF(3, 4);

/* --- supervise.c: the fork server's messages, workers' lives, restarts ----- */

void fp__spawn(fp_pool *pool, unsigned slot);
/* Readies a slot for the worker the fork server forks at start. */
void fp__slot_await(fp_pool *pool, unsigned slot);
/* Kills slot's worker for no task (err 0) or for its running task's fault. */
void fp__slot_kill(fp_pool *pool, unsigned slot, int err, const char *msg);
/* Asks f, the task slot's worker runs, to stop (FP_EDEADLINE or
 * FP_ECANCELLED, with msg) and kills the worker after f's grace unless f
 * answers first; without a grace, fp__slot_kill_task.  Again for the same
 * f: nothing. */
void fp__slot_stop_task(fp_pool *pool, unsigned slot, const fp_future *f,
                        int err, const char *msg);
/* The task asked to stop answered: the worker lives on. */
void fp__slot_stopped(fp_pool *pool, unsigned slot);
/* Its grace is over: kills the worker. */
void fp__slot_stop_expired(fp_pool *pool, unsigned slot);
/* Kills slot's worker, on purpose, for f, the task it runs: f alone may
 * fail (with err and msg; a final f is let go), and only if it has not
 * answered by the time the exit comes back.  The rest go back to the queue.
 * Read the slot's channel first (fp__slot_read): f may have answered. */
void fp__slot_kill_task(fp_pool *pool, unsigned slot, const fp_future *f,
                        int err, const char *msg);
/* Reads the answers already sent by slot's worker, and wakes their
 * waiters. */
void fp__slot_read(fp_pool *pool, unsigned slot);
void fp__slot_terminate(fp_pool *pool, unsigned slot, int sig);
/* At shutdown, once: lets every worker go.  A ready one reads end of file
 * and exits; one not yet ready has run no task and is killed; the fork
 * server sends each SIGCONT (a stopped one then reads its end of file
 * too) and exits once it has reaped them all. */
void fp__slots_let_go(fp_pool *pool);
/* From the transport: slot's stream ended, at its end (err 0: the worker
 * closed it, dead or dying) or at bytes it could not take (FP_EPROTO,
 * FP_ENOMEM). */
void fp__slot_recv_ended(fp_pool *pool, unsigned slot, int err);
/* Reads every message the fork server has sent. */
void fp__supervise_ctl(fp_pool *pool);
void fp__pool_break(fp_pool *pool, int err, const char *fmt, ...)
    FP_PRINTF(3, 4);
/*
 * Slot's group can run no worker (a crash loop, a failing init, a host that
 * is gone): retired if another group remains (its workers killed, no new
 * one, their tasks handled as at their deaths), else the pool breaks with
 * err and the text, as it did before there were groups.  Again: nothing.
 */
void fp__group_fail(fp_pool *pool, unsigned slot, int err, const char *fmt,
                    ...) FP_PRINTF(4, 5);

/* --- pool.c ------------------------------------------------------------------- */

/* The caller's options (NULL: the defaults) checked, defaults filled in. */
int fp__options_fill(fp_pool_options *o, const fp_pool_options *in);
/* What the workers of a pool with options o run. */
void fp__worker_cfg_fill(fp__worker_cfg *w, const fp_pool_options *o,
                         const fp__tasks *tasks, unsigned nslots);
/* fp_pool_create; with remote_ctl >= 0 (consumed, also on failure), a
 * process pool whose fork server is the peer of that control socket, its
 * slots in ngroups groups; its shared area, if any, is for whatever relays
 * its frames (remote.c). */
struct fp__remote_group;
int fp__pool_create(fp_pool **out, const fp_pool_options *opts,
                    int remote_ctl, const struct fp__remote_group *groups,
                    unsigned ngroups);

void fp__forkserver_stop(fp_pool *pool);
/* Counts an exited worker's CPU time into the pool's stats. */
void fp__cpu_exited(fp_pool *pool, const fp__ctl *m);

/* Records why this thread's fp_pool_create failed (fp_pool_create_error;
 * why NULL or "": fp_strerror(rc)) and returns rc. */
int fp__create_failed(int rc, const char *why);

/* --- submit.c ---------------------------------------------------------------- */

/* fp_future_cancel's work, with the lock held. */
int fp__pool_cancel(fp_pool *pool, fp_future *f, unsigned flags);
/* Why the pool takes no task now: 0, FP_EBROKEN, FP_ESHUTDOWN, or FP_EINVAL
 * in a forked child. */
int fp__submit_refused(fp_pool *pool);
/* Queues a task (or a map chunk of nitems items packed one after another). */
int fp__submit(fp_pool *pool, const char *name, const void *args, size_t len,
               unsigned nitems, int deadline_ms, unsigned retries,
               fp_future **out);
/* The same with a grace (fp__submit's tasks have none). */
int fp__submit_grace(fp_pool *pool, const char *name, const void *args,
                     size_t len, unsigned nitems, int deadline_ms,
                     int grace_ms, unsigned retries, fp_future **out);

/* --- interrupt.c -------------------------------------------------------------- */

/* fp__pool_run_until for the caller's waits, which also end with FP_EINTR
 * once the pool is interrupted and pred is not met. */
int fp__pool_wait(fp_pool *pool, fp__pool_pred pred, void *arg,
                  int64_t deadline);

#endif

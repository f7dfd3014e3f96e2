/*
 * The worker's loop: run the pool's init function, say READY, then read a
 * TASK frame, run the task it names (once, or once per item of a map chunk),
 * answer with one RESULT frame, repeat; exit at end of file, or after
 * max_tasks answers.  It runs in a process of its own and never returns into
 * the caller's stack.  Its descriptors are blocking: it has nothing else to
 * do while it waits.
 */
#include "forkpool-private.h"

#include <errno.h>
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>
#ifdef HAVE_SCHED_SETAFFINITY
#include <sched.h>
#endif

#define FP__EXIT_PROTO 70 /* the parent sent bytes that are not a frame */
#define FP__EXIT_INIT 71  /* the init function failed */
#define FP__BODY_KEEP (8u << 20) /* largest body buffer kept for reuse */
#define FP__BODY_IDLE 64         /* frames in a row without it free it */

/* This worker's stamp (fp__stamp_open), set in fp__worker_main: a worker is
 * a process of its own.  NULL elsewhere (a harness calling
 * fp__worker_handle), where nothing is stamped. */
static fp__stamp *stamp;

/* Notes in the stamp that item of task id starts now (item == n: done). */
static void stamp_item(uint64_t id, uint64_t item)
{
  if (stamp != NULL)
    fp__stamp_set(stamp, id, item, fp__now_ns());
}

/*
 * Asking a task to stop.  The dispatcher sends FP__STOP_SIG through the
 * fork server, queued with the low 32 bits of the task's id (sigqueue), so
 * that a request that arrives after its task returned is told apart from
 * one for the task now running.  The worker is a process of the library's
 * own: the handler is installed in it, never in the caller's process.  It
 * raises the flag fp_call_should_stop reads and, unless the running task
 * has shown that it polls, raises SIGTERM, whose default ends the worker
 * and which a task may catch.  A request for a task not started yet is
 * kept: that task is answered without being run.
 */
static volatile sig_atomic_t task_running; /* a task (not a chunk) runs */
static volatile sig_atomic_t task_lo;      /* its id's low 32 bits */
static volatile sig_atomic_t stop_asked;   /* it has been asked to stop */
static volatile sig_atomic_t stop_polled;  /* it called fp_call_should_stop */
static volatile sig_atomic_t early_valid;  /* a request for a task not */
static volatile sig_atomic_t early_lo;     /*   running when it came */

static void on_stop(int sig, siginfo_t *si, void *uc)
{
  (void)sig;
  (void)uc;
  if (si->si_code != SI_QUEUE)
    return; /* not ours: SIGURG's default is to ignore it */
  int saved = errno;
  int lo = si->si_value.sival_int;
  if (task_running && task_lo == lo) {
    stop_asked = 1;
    if (!stop_polled)
      raise(SIGTERM);
  } else {
    early_lo = lo;
    early_valid = 1;
  }
  errno = saved;
}

/* In the worker, once: takes FP__STOP_SIG, whatever the caller's mask. */
static void stop_handler_install(void)
{
  struct sigaction sa = {.sa_sigaction = on_stop,
                         .sa_flags = SA_SIGINFO | SA_RESTART};
  sigemptyset(&sa.sa_mask);
  sigaction(FP__STOP_SIG, &sa, NULL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, FP__STOP_SIG);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
}

/* Task id starts: 0, or 1 if it was asked to stop before it started. */
static int task_begin(uint64_t id)
{
  stop_asked = 0;
  stop_polled = 0;
  task_lo = (int)(uint32_t)id;
  task_running = 1; /* before the test below: no request falls between */
  if (early_valid && early_lo == task_lo) {
    early_valid = 0;
    return 1;
  }
  return 0;
}

static void task_end(void)
{
  task_running = 0;
  stop_asked = 0;
}

struct fp_call {
  const char *task;      /* the running task's name, NUL-ended copy */
  void *state;           /* what init left for the tasks */
  int failed;            /* fp_call_fail was called */
  char kind[64];         /* its kind, truncated */
  char *message;         /* its message, owned */
  const fp__stop *stop;  /* in a worker thread: its stop flags; NULL in a
                            worker process (the flags above) and inline */
  uint64_t id;           /* the task's (or chunk's) id, for stop */
};

/* In a worker thread: whether task id has been asked to stop.  The
 * dispatcher raises the flag from another thread: atomic, no lock. */
static int thread_stop_asked(const fp__stop *stop, uint64_t id)
{
  return atomic_load_explicit(&stop->id, memory_order_relaxed) == id ||
         atomic_load_explicit(&stop->all, memory_order_relaxed) != 0;
}

FP_EXTERN int fp_call_should_stop(fp_call *call)
{
  if (call == NULL)
    return 0;
  if (call->stop != NULL)
    return thread_stop_asked(call->stop, call->id);
  if (!task_running)
    return 0; /* inline, an init function, or no task */
  stop_polled = 1;
  return stop_asked;
}

FP_EXTERN int fp_call_fail(fp_call *call, const char *kind, const char *fmt,
                           ...)
{
  if (call == NULL)
    return FP_EINVAL;
  snprintf(call->kind, sizeof call->kind, "%s", kind ? kind : "Error");
  free(call->message);
  call->message = NULL;
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&call->message, fmt, ap) < 0)
      call->message = NULL;
    va_end(ap);
  }
  call->failed = 1;
  return FP_ETASK;
}

FP_EXTERN void *fp_call_state(fp_call *call)
{
  return call ? call->state : NULL;
}

/* How one task call ended: code 0 and one object in the result buffer, or
 * an FP_E* code with a kind and a message. */
typedef struct outcome {
  int code;
  char kind[64];
  char text[512];
} outcome;

static void set_failure(outcome *o, int code, const char *kind,
                        const char *fmt, ...) FP_PRINTF(4, 5);
static void set_failure(outcome *o, int code, const char *kind,
                        const char *fmt, ...)
{
  va_list ap;
  o->code = code;
  snprintf(o->kind, sizeof o->kind, "%s", kind);
  va_start(ap, fmt);
  vsnprintf(o->text, sizeof o->text, fmt, ap);
  va_end(ap);
}

void fp__outbuf_init(fp__outbuf *o)
{
  msgpack_sbuffer_init(&o->sb);
  fp__outbuf_clear(o);
}

void fp__outbuf_destroy(fp__outbuf *o)
{
  msgpack_sbuffer_destroy(&o->sb);
}

void fp__outbuf_clear(fp__outbuf *o)
{
  msgpack_sbuffer_clear(&o->sb);
  o->nrefs = 0;
  o->ref_bytes = 0;
  o->lo = o->hi = NULL;
}

/* Whether [p, p+len) lies inside the body, compared as addresses: the
 * packer may hand over any pointer. */
static int in_body(const fp__outbuf *o, const char *p, size_t len)
{
  uintptr_t a = (uintptr_t)p, lo = (uintptr_t)o->lo, hi = (uintptr_t)o->hi;
  return o->lo != NULL && a >= lo && a <= hi && len <= hi - a;
}

/* The packer's write callback: large runs of the body are referenced (one
 * that continues the last reference extends it), anything else copied. */
static int outbuf_write(void *data, const char *buf, size_t len)
{
  fp__outbuf *o = data;
  if (len < FP__REF_MIN || !in_body(o, buf, len))
    return msgpack_sbuffer_write(&o->sb, buf, len);
  fp__ref *last = o->nrefs ? &o->refs[o->nrefs - 1] : NULL;
  if (last && last->at == o->sb.size && last->ptr + last->len == buf)
    last->len += len;
  else if (o->nrefs < FP__REFS)
    o->refs[o->nrefs++] = (fp__ref){o->sb.size, buf, len};
  else
    return msgpack_sbuffer_write(&o->sb, buf, len);
  o->ref_bytes += len;
  return 0;
}

int fp__outbuf_pieces(const fp__outbuf *o, struct iovec iov[FP__OUT_IOV])
{
  int n = 0;
  size_t done = 0; /* bytes of sb already placed */
  for (unsigned k = 0; k < o->nrefs; k++) {
    const fp__ref *r = &o->refs[k];
    if (r->at > done)
      iov[n++] = (struct iovec){o->sb.data + done, r->at - done};
    iov[n++] = (struct iovec){(char *)r->ptr, r->len};
    done = r->at;
  }
  if (o->sb.size > done)
    iov[n++] = (struct iovec){o->sb.data + done, o->sb.size - done};
  return n;
}

/* Counts the objects in a result, over its pieces when it has refs: 0,
 * FP_EINVAL, or FP__EDEEP for one nested too deep. */
static int count_result(const fp__outbuf *o, size_t *n)
{
  struct iovec iov[FP__OUT_IOV];
  if (o->nrefs == 0 && fp__count_objects(o->sb.data, o->sb.size, n) == 0)
    return 0;
  /* Slower, but it tells nesting from garbage. */
  return fp__count_objects_iov(iov, fp__outbuf_pieces(o, iov), n);
}

/* Calls fn once with result empty; on success it holds exactly one
 * object. */
static void run_one(const fp__worker_cfg *cfg, const fp__stop *stop,
                    uint64_t id, void *state, const char *task,
                    fp_task_fn fn, const msgpack_object *args,
                    fp__outbuf *result, outcome *o)
{
  fp_call call = {.task = task, .state = state, .stop = stop, .id = id};
  msgpack_packer out;
  size_t n = 0;
  int count_rc = 0;
  msgpack_packer_init(&out, result, outbuf_write);
  int rc = fn(&call, args, &out);
  o->code = 0;
  if (call.failed)
    set_failure(o, FP_ETASK, call.kind, "%s",
                call.message ? call.message : "");
  else if (rc != 0)
    set_failure(o, FP_ETASK, "TaskError",
                "task '%s' returned %d without fp_call_fail", task, rc);
  else if ((count_rc = count_result(result, &n)) == FP__EDEEP)
    set_failure(o, FP_ETASK, "ResultError",
                "task '%s' packed a result nested deeper than %d levels "
                "(arrays and maps), which msgpack-c cannot read",
                task, MSGPACK_EMBED_STACK_SIZE);
  else if (count_rc || n != 1)
    set_failure(o, FP_ETASK, "ResultError",
                "task '%s' packed %zu%s results; a task packs exactly one",
                task, n, count_rc ? " or more (invalid msgpack)" : "");
  else if (fp__outbuf_size(result) > cfg->max_message - 64)
    set_failure(o, FP_EMSGSIZE, "ResultTooLarge",
                "task '%s' result of %zu bytes exceeds max_message (%zu)",
                task, fp__outbuf_size(result), cfg->max_message);
  free(call.message);
  if (o->code != 0)
    fp__outbuf_clear(result);
}

static int pack_str(msgpack_packer *pk, const char *s)
{
  return msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* The failure answer for a whole message. */
static int answer_failure(msgpack_sbuffer *head, fp__outbuf *result,
                          uint64_t id, const outcome *o)
{
  msgpack_packer pk;
  msgpack_packer_init(&pk, head, msgpack_sbuffer_write);
  msgpack_sbuffer_clear(head);
  fp__outbuf_clear(result);
  if (fp__encode_result_head(head, id, o->code) || pack_str(&pk, o->kind) ||
      pack_str(&pk, o->text))
    return FP_ENOMEM;
  return 0;
}

/*
 * A map chunk: n argument objects in args, answered with one array of
 * [0, result] or [code, kind, message], one entry per item.  Each item's
 * start is stamped, and the chunk's end, so that the dispatcher can time
 * each item against the deadline.
 */
static int run_chunk(const fp__worker_cfg *cfg, const fp__stop *stop,
                     void *state, const char *task,
                     fp_task_fn fn, uint64_t id, unsigned n, const char *args,
                     size_t args_len, msgpack_zone *zone,
                     fp__outbuf *item, fp__outbuf *result)
{
  msgpack_packer pk;
  size_t off = 0;
  /* Items are copied into the chunk's answer: no refs in either. */
  fp__outbuf_clear(result);
  msgpack_packer_init(&pk, &result->sb, msgpack_sbuffer_write);
  if (msgpack_pack_array(&pk, n))
    return FP_ENOMEM;
  for (unsigned i = 0; i < n; i++) {
    msgpack_object a;
    outcome o;
    if (msgpack_unpack(args, args_len, &off, zone, &a) <= 0)
      return FP_EPROTO;
    stamp_item(id, i);
    fp__outbuf_clear(item);
    /* A thread asked to stop the chunk runs none of its items left. */
    if (stop != NULL && thread_stop_asked(stop, id))
      set_failure(&o, FP_ETASK, "Stopped",
                  "task '%s' was asked to stop before this item started",
                  task);
    else
      run_one(cfg, stop, id, state, task, fn, &a, item, &o);
    /* An item's objects die with its call.  Only containers take zone
     * memory (scalars, strings and bins point into args); clearing after
     * each keeps the zone at one chunk instead of growing with the chunk. */
    if (a.type == MSGPACK_OBJECT_ARRAY || a.type == MSGPACK_OBJECT_MAP)
      msgpack_zone_clear(zone);
    int rc = o.code == 0
                 ? msgpack_pack_array(&pk, 2) || msgpack_pack_int(&pk, 0) ||
                       msgpack_sbuffer_write(&result->sb, item->sb.data,
                                             item->sb.size)
                 : msgpack_pack_array(&pk, 3) ||
                       msgpack_pack_int(&pk, o.code) || pack_str(&pk, o.kind) ||
                       pack_str(&pk, o.text);
    if (rc)
      return FP_ENOMEM;
  }
  stamp_item(id, n); /* done: its answer is on its way */
  return off == args_len ? 0 : FP_EPROTO;
}

/* Keeps a worker's memory small after a large result. */
static void shrink(msgpack_sbuffer *sb)
{
  if (sb->alloc > (4u << 20)) {
    msgpack_sbuffer_destroy(sb);
    msgpack_sbuffer_init(sb);
  }
}

/* A task the worker does not have: answered, not fatal. */
static int answer_no_task(uint64_t id, const char *task,
                          msgpack_sbuffer *head, fp__outbuf *result)
{
  outcome o;
  set_failure(&o, FP_ENOTASK, "NoTask", "no task named '%s' in this worker",
              task);
  return answer_failure(head, result, id, &o);
}

static int answer_chunk(const fp__worker_cfg *cfg, const fp__stop *stop,
                        void *state, const char *task, fp_task_fn fn,
                        uint64_t id,
                        unsigned n, const char *args, size_t args_len,
                        msgpack_zone *zone, msgpack_sbuffer *head,
                        fp__outbuf *result, fp__outbuf *item)
{
  int rc = run_chunk(cfg, stop, state, task, fn, id, n, args, args_len, zone,
                     item, result);
  shrink(&item->sb);
  if (rc != 0)
    return rc;
  if (result->sb.size > cfg->max_message - 64) {
    /* The dispatcher splits the chunk and sends its items one by one. */
    outcome o;
    set_failure(&o, FP_EMSGSIZE, "ResultTooLarge",
                "a chunk of %u results is %zu bytes, over max_message", n,
                result->sb.size);
    return answer_failure(head, result, id, &o);
  }
  msgpack_sbuffer_clear(head);
  return fp__encode_result_head(head, id, 0);
}

static int answer_one(const fp__worker_cfg *cfg, const fp__stop *stop,
                      void *state, const char *task, fp_task_fn fn,
                      uint64_t id,
                      const char *args, size_t args_len, msgpack_zone *zone,
                      msgpack_sbuffer *head, fp__outbuf *result)
{
  msgpack_object a;
  size_t off = 0;
  outcome o;
  /* A nil, bool, number, str or bin is read by hand, without the zone;
   * anything else (or anything malformed) by msgpack_unpack. */
  if (fp__read_plain(args, args_len, &off, &a) != 0) {
    off = 0;
    if (msgpack_unpack(args, args_len, &off, zone, &a) <= 0)
      return FP_EPROTO;
  }
  if (off != args_len)
    return FP_EPROTO;
  /* The argument's strings and bins point into args: in the body, or in
   * shared memory. */
  result->lo = args;
  result->hi = args + args_len;
  /* The signal-driven flags are the worker process's alone (threads
   * would race on them): a thread has its own, in stop. */
  int early = cfg->own_process ? task_begin(id)
              : stop != NULL  ? thread_stop_asked(stop, id)
                              : 0;
  if (early)
    set_failure(&o, FP_ETASK, "Stopped",
                "task '%s' was asked to stop before it started", task);
  else
    run_one(cfg, stop, id, state, task, fn, &a, result, &o);
  if (cfg->own_process)
    task_end();
  msgpack_sbuffer_clear(head);
  return o.code ? answer_failure(head, result, id, &o)
                : fp__encode_result_head(head, id, 0);
}

static void seal(msgpack_sbuffer *head, const fp__outbuf *result)
{
  fp__frame_seal(head->data, head->size - FP__HDR + fp__outbuf_size(result));
}

int fp__worker_handle(const fp__worker_cfg *cfg, const fp__stop *stop,
                      void *state, const char *body, size_t len,
                      msgpack_zone *zone, msgpack_sbuffer *head,
                      fp__outbuf *result, fp__outbuf *item)
{
  size_t name_len, args_len;
  const char *name, *args;
  uint64_t id;
  unsigned n;
  fp__outbuf_clear(result); /* no refs into the last task's body */
  int rc = fp__decode_task(body, len, cfg->shm ? cfg->shm->args : NULL,
                           cfg->shm ? cfg->shm->args_len : 0, &id, &name,
                           &name_len, &n, &args, &args_len);
  if (rc == 0) {
    char task[FP__MAX_NAME + 1];
    memcpy(task, name, name_len);
    task[name_len] = '\0';
    fp_task_fn fn = fp__tasks_find(cfg->tasks, name, name_len);
    if (fn == NULL)
      rc = answer_no_task(id, task, head, result);
    else if (n > 1)
      rc = answer_chunk(cfg, stop, state, task, fn, id, n, args, args_len,
                        zone, head, result, item);
    else
      rc = answer_one(cfg, stop, state, task, fn, id, args, args_len, zone,
                      head, result);
  }
  msgpack_zone_clear(zone);
  if (rc == 0)
    seal(head, result);
  return rc;
}

#define FP__ANSWER_JOIN 512 /* answers up to this size go in one write() */

static int send_answer(int fd, const msgpack_sbuffer *head,
                       const fp__outbuf *result)
{
  size_t size = head->size + result->sb.size;
  if (result->nrefs == 0 && size <= FP__ANSWER_JOIN) {
    /* One buffer: write() costs the kernel less than a writev of two. */
    char buf[FP__ANSWER_JOIN];
    memcpy(buf, head->data, head->size);
    if (result->sb.size > 0) /* data may be NULL while empty */
      memcpy(buf + head->size, result->sb.data, result->sb.size);
    struct iovec one = {buf, size};
    return fp__write_all(fd, &one, 1);
  }
  struct iovec iov[1 + FP__OUT_IOV] = {{head->data, head->size}};
  return fp__write_all(fd, iov, 1 + fp__outbuf_pieces(result, iov + 1));
}

/*
 * A large success goes to the worker's ring, and its frame only names it:
 * the parent copies the result out of shared memory instead of reading it
 * through the pipe.  That frame, sealed in frame: its length; or 0, when
 * the answer goes as it is (small, a failure, or no room in the ring).
 */
static size_t answer_in_ring(fp__ring *ring, const msgpack_sbuffer *head,
                             const fp__outbuf *result,
                             char frame[FP__RESULT_SHM_MAX])
{
  size_t size = fp__outbuf_size(result), off;
  uint64_t id, pos;
  int code;
  if (ring->base == NULL || size < FP__SHM_MIN ||
      fp__decode_result_head(head->data + FP__HDR, head->size - FP__HDR, &id,
                             &code, &off) != 0 ||
      code != 0 || fp__ring_place(ring, size, &pos) != 0)
    return 0;
  struct iovec iov[FP__OUT_IOV];
  int n = fp__outbuf_pieces(result, iov);
  char *to = fp__ring_at(ring, pos);
  for (int k = 0; k < n; k++) {
    memcpy(to, iov[k].iov_base, iov[k].iov_len);
    to += iov[k].iov_len;
  }
  return fp__encode_result_shm(frame, id, pos, size);
}

int fp__worker_ready(const fp__worker_cfg *cfg, void **state,
                     msgpack_sbuffer *head, fp__outbuf *result)
{
  outcome o = {.code = 0};
  if (cfg->init != NULL) {
    fp_call call = {.task = "init"};
    int rc = cfg->init(state, cfg->init_arg, &call);
    if (call.failed)
      set_failure(&o, FP_ETASK, call.kind, "%s",
                  call.message ? call.message : "");
    else if (rc != 0)
      set_failure(&o, FP_ETASK, "InitError", "init returned %d", rc);
    free(call.message);
  }
  msgpack_packer pk;
  msgpack_sbuffer_clear(head);
  fp__outbuf_clear(result);
  msgpack_packer_init(&pk, &result->sb, msgpack_sbuffer_write);
  int rc = o.code ? answer_failure(head, result, 0, &o)
                  : fp__encode_result_head(head, 0, 0) || msgpack_pack_nil(&pk);
  if (rc != 0)
    return FP_ENOMEM;
  seal(head, result);
  return o.code;
}

/* Runs init and sends READY or the failure; 0 to go on. */
static int start(const fp__worker_cfg *cfg, int out_fd, void **state,
                 msgpack_sbuffer *head, fp__outbuf *result)
{
  int rc = fp__worker_ready(cfg, state, head, result);
  if (rc == FP_ENOMEM)
    return rc;
  int sent = send_answer(out_fd, head, result);
  return sent != 0 ? sent : rc;
}

/*
 * The buffer for bodies that the read-ahead does not hold whole.  Kept from
 * task to task so that a stream of large frames reuses its pages instead of
 * faulting fresh ones in for each; let go of when it is too large to keep, or
 * unused for a while.
 */
typedef struct bodybuf {
  char *data;            /* owned; NULL: none */
  size_t cap;
  unsigned idle;         /* frames in a row that did not need it */
} bodybuf;

static void body_done(bodybuf *b, const char *body)
{
  b->idle = b->data != NULL && body == b->data ? 0 : b->idle + 1;
  if (b->cap > FP__BODY_KEEP || b->idle > FP__BODY_IDLE) {
    free(b->data);
    *b = (bodybuf){NULL, 0, 0};
  }
}

/* --- Set-up after fork, and what a worker measures of itself ------------------ */

/* Lowers resource to want (soft) and want + slack (hard), never above the
 * hard limit the caller had: raising it needs privilege. */
static void lower_limit(int resource, rlim_t want, rlim_t slack)
{
  struct rlimit rl;
  if (getrlimit(resource, &rl) != 0)
    return;
  rlim_t hard = want + slack;
  if (rl.rlim_max != RLIM_INFINITY && hard > rl.rlim_max)
    hard = rl.rlim_max;
  rl.rlim_max = hard;
  rl.rlim_cur = want < hard ? want : hard;
  (void)setrlimit(resource, &rl);
}

/* Worker i on the i-th CPU (mod their count) of those the fork server may
 * use, which are those of the thread that created the pool.  Best effort:
 * a worker that cannot be pinned runs unpinned. */
static void pin_to_cpu(unsigned slot)
{
#ifdef HAVE_SCHED_SETAFFINITY
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) <= 0)
    return;
  unsigned want = slot % (unsigned)CPU_COUNT(&set);
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
    if (CPU_ISSET(cpu, &set) && want-- == 0) {
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      (void)sched_setaffinity(0, sizeof set, &set);
      return;
    }
#else
  (void)slot; /* fp_pool_create refused the option */
#endif
}

/* fd 1 to where the pool says, and line-buffered: a worker killed for a
 * deadline has lost at most a part line.  Where fd 1 cannot be moved, it is
 * closed rather than left on the caller's stdout. */
static void stdout_setup(int mode)
{
  if (mode == FP_STDOUT_STDERR && dup2(2, 1) < 0)
    mode = FP_STDOUT_NULL;
  if (mode == FP_STDOUT_NULL) {
    int null = open("/dev/null", O_WRONLY);
    if (null < 0 || dup2(null, 1) < 0)
      close(1);
    if (null > 1)
      close(null);
  }
  setvbuf(stdout, NULL, _IOLBF, BUFSIZ);
}

void fp__worker_setup(const fp__worker_cfg *cfg, unsigned slot)
{
  if (cfg->rlimit_as != 0)
    lower_limit(RLIMIT_AS, (rlim_t)cfg->rlimit_as, 0);
  /* A second past the soft limit: SIGXCPU first, which the dispatcher
   * names, and SIGKILL only for a task that ignores it. */
  if (cfg->rlimit_cpu != 0)
    lower_limit(RLIMIT_CPU, (rlim_t)cfg->rlimit_cpu, 1);
  if (cfg->pin)
    pin_to_cpu(slot);
  stdout_setup(cfg->out_mode);
}

/* Whether resident memory is above max: the peak (free with getrusage)
 * first, and only when that is above, the present figure from /proc, so
 * that a task that freed what it used does not cost its worker. */
static int rss_over(size_t max, const struct rusage *ru)
{
  if ((uint64_t)ru->ru_maxrss * 1024 <= max)
    return 0;
  unsigned long size, resident;
  if (fp__statm(&size, &resident) != 0)
    return 1; /* no /proc: the peak decides */
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) > max;
}

/* When the worker last stamped its CPU time (fp__now_ns); 0: never. */
static int64_t cpu_stamped;

/*
 * After init and after an answer: the worker's CPU time into its stamp, for
 * fp_pool_stats_get, if FP__CPU_STAMP_NS have passed since the last one
 * (getrusage per task would halve the rate of tiny tasks; a task as long as
 * that is always followed by a stamp); and whether it should leave for its
 * memory, checked after every task.
 */
static int measure(const fp__worker_cfg *cfg)
{
  struct rusage ru;
  int64_t now = stamp != NULL ? fp__now_ns() : 0;
  int cpu_due = stamp != NULL && now - cpu_stamped >= FP__CPU_STAMP_NS;
  if ((!cpu_due && cfg->max_rss == 0) || getrusage(RUSAGE_SELF, &ru))
    return 0;
  if (cpu_due) {
    fp__stamp_cpu(stamp, fp__tv_us(&ru.ru_utime), fp__tv_us(&ru.ru_stime));
    cpu_stamped = now;
  }
  return cfg->max_rss != 0 && rss_over(cfg->max_rss, &ru);
}

/* Every way out of a worker but a signal. */
static void worker_exit(const fp__worker_cfg *cfg, int status)
    __attribute__((noreturn));
static void worker_exit(const fp__worker_cfg *cfg, int status)
{
  fp__shm_unseen(cfg->shm);
  _exit(status);
}

void fp__worker_main(const fp__worker_cfg *cfg, unsigned slot, int in_fd,
                     int out_fd)
{
  fp__reader r;
  fp__ring ring;
  char ring_frame[FP__RESULT_SHM_MAX];
  bodybuf big = {NULL, 0, 0};
  msgpack_zone zone;
  msgpack_sbuffer head;
  fp__outbuf result, item;
  void *state = NULL;
  int status = 0;
  uint64_t answered = 0;

  fp__reader_init(&r);
  fp__ring_open(&ring, cfg, slot);
  stamp = cfg->no_stamps ? NULL : fp__stamp_open(cfg->shm, slot);
  stop_handler_install();
  msgpack_sbuffer_init(&head);
  fp__outbuf_init(&result);
  fp__outbuf_init(&item);
  if (!msgpack_zone_init(&zone, 4096))
    worker_exit(cfg, FP__EXIT_PROTO);
  (void)measure(cfg); /* before READY: init's CPU time shows at once */
  if (start(cfg, out_fd, &state, &head, &result) != 0)
    worker_exit(cfg, FP__EXIT_INIT);

  while (cfg->max_tasks == 0 || answered < cfg->max_tasks) {
    enum fp__io io;
    const char *body;
    size_t len;
    int rc = fp__read_frame_borrowed(in_fd, &r, cfg->max_message, &io,
                                     &big.data, &big.cap, &body, &len);
    if (rc != 0 || io == FP__IO_EOF) {
      status = rc == 0 ? 0 : FP__EXIT_PROTO;
      break;
    }
    rc = fp__worker_handle(cfg, NULL, state, body, len, &zone, &head,
                           &result, &item);
    if (rc != 0) {
      status = FP__EXIT_PROTO;
      break;
    }
    /* Before the answer: a caller holding a result sees its CPU time. */
    int leave = measure(cfg);
    /* At once, never held back for the next task: if that one kills the
     * worker, the parent must already have this answer (crash isolation). */
    size_t small = answer_in_ring(&ring, &head, &result, ring_frame);
    struct iovec iov = {ring_frame, small};
    if ((small ? fp__write_all(out_fd, &iov, 1)
               : send_answer(out_fd, &head, &result)) != 0)
      break; /* the parent is gone */
    /* Only now: the answer may point into the body. */
    body_done(&big, body);
    answered++;
    shrink(&result.sb);
    if (leave) {
      /* Unread tasks in the pipe go back to the queue, not failed. */
      status = FP__EXIT_RECYCLE;
      break;
    }
  }
  /* Tasks' own output; the fork server emptied what it inherited. */
  fflush(stdout);
  fflush(stderr);
  worker_exit(cfg, status);
}

/*
 * The worker's loop: read a TASK frame, run the task it names, answer with
 * one RESULT frame, repeat; exit at end of file.  It runs in a process of its
 * own and never returns into the caller's stack.  Its descriptors are
 * blocking: it has nothing else to do while it waits.
 */
#include "forkpool-private.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FP__EXIT_PROTO 70 /* the parent sent bytes that are not a frame */

struct fp_call {
  const char *task;      /* the running task's name, NUL-ended copy */
  int failed;            /* fp_call_fail was called */
  char kind[64];         /* its kind, truncated */
  char *message;         /* its message, owned */
};

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

/* Packs the failure part of a RESULT: kind and message. */
static int pack_error(msgpack_sbuffer *sb, uint64_t id, int code,
                      const char *kind, const char *msg)
{
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_sbuffer_clear(sb);
  if (fp__encode_result_head(sb, id, code) ||
      msgpack_pack_str_with_body(&pk, kind, strlen(kind)) ||
      msgpack_pack_str_with_body(&pk, msg, strlen(msg)))
    return FP_ENOMEM;
  return 0;
}

/*
 * Runs one task and fills head (and result, on success) with the answer.
 * Returns 0, or a negative code when not even an error answer fits in memory.
 */
static int run_task(const fp__worker_cfg *cfg, uint64_t id, const char *name,
                    size_t name_len, const msgpack_object *args,
                    msgpack_sbuffer *head, msgpack_sbuffer *result)
{
  char task[FP__MAX_NAME + 1];
  char text[512];
  memcpy(task, name, name_len);
  task[name_len] = '\0';

  fp_task_fn fn = fp__tasks_find(cfg->tasks, name, name_len);
  if (fn == NULL) {
    snprintf(text, sizeof text, "no task named '%s' in this worker", task);
    return pack_error(head, id, FP_ENOTASK, "NoTask", text);
  }

  fp_call call = {.task = task};
  msgpack_packer out;
  msgpack_sbuffer_clear(result);
  msgpack_packer_init(&out, result, msgpack_sbuffer_write);
  int rc = fn(&call, args, &out);

  size_t n = 0;
  int count_rc = 0, ok = 0;
  if (call.failed) {
    rc = pack_error(head, id, FP_ETASK, call.kind,
                    call.message ? call.message : "");
  } else if (rc != 0) {
    snprintf(text, sizeof text, "task '%s' returned %d without fp_call_fail",
             task, rc);
    rc = pack_error(head, id, FP_ETASK, "TaskError", text);
  } else if ((count_rc = fp__count_objects(result->data, result->size, &n)) ||
             n != 1) {
    snprintf(text, sizeof text,
             "task '%s' packed %zu%s results; a task packs exactly one", task,
             n, count_rc ? " or more (invalid msgpack)" : "");
    rc = pack_error(head, id, FP_ETASK, "ResultError", text);
  } else if (result->size > cfg->max_message - 32) {
    snprintf(text, sizeof text, "task '%s' result of %zu bytes exceeds "
             "max_message (%zu)", task, result->size, cfg->max_message);
    rc = pack_error(head, id, FP_EMSGSIZE, "ResultTooLarge", text);
  } else {
    msgpack_sbuffer_clear(head);
    rc = fp__encode_result_head(head, id, 0);
    ok = 1;
  }
  if (!ok)
    msgpack_sbuffer_clear(result); /* an error answer carries no result */
  free(call.message);
  return rc;
}

/* Keeps a worker's memory small after a large result. */
static void shrink(msgpack_sbuffer *sb)
{
  if (sb->alloc > (4u << 20)) {
    msgpack_sbuffer_destroy(sb);
    msgpack_sbuffer_init(sb);
  }
}

void fp__worker_main(const fp__worker_cfg *cfg, int in_fd, int out_fd)
{
  fp__reader r;
  msgpack_zone zone;
  msgpack_sbuffer head, result;
  int status = 0;

  fp__reader_init(&r);
  msgpack_sbuffer_init(&head);
  msgpack_sbuffer_init(&result);
  if (!msgpack_zone_init(&zone, 4096))
    _exit(FP__EXIT_PROTO);

  for (;;) {
    char *body;
    size_t len;
    int rc = fp__read_frame_blocking(in_fd, &r, cfg->max_message, &body, &len);
    if (rc <= 0) {
      status = rc == 0 ? 0 : FP__EXIT_PROTO;
      break;
    }
    uint64_t id;
    const char *name;
    size_t name_len;
    msgpack_object args;
    rc = fp__decode_task(body, len, &zone, &id, &name, &name_len, &args);
    if (rc == 0)
      rc = run_task(cfg, id, name, name_len, &args, &head, &result);
    if (rc != 0) {
      status = FP__EXIT_PROTO;
      break;
    }
    fp__frame_seal(head.data, head.size - FP__HDR + result.size);
    struct iovec iov[2] = {{head.data, head.size},
                           {result.data, result.size}};
    free(body);
    msgpack_zone_clear(&zone);
    if (fp__write_all(out_fd, iov, result.size ? 2 : 1) != 0)
      break; /* the parent is gone */
    shrink(&result);
  }
  /* Tasks' own output; the fork server emptied what it inherited. */
  fflush(stdout);
  fflush(stderr);
  _exit(status);
}

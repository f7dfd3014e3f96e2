/*
 * The worker side: a TASK body as fp__worker_main gets it from its frame
 * reader, run by fp__worker_handle, the worker's own code from
 * fp__decode_task to the sealed answer.  Then the answer is read back with
 * the parent's decoders: whatever the parent sent, a worker either exits (a
 * protocol error) or answers with a frame the parent accepts, no longer than
 * max_message, for the same id, holding exactly what fp__dispatch_frame and
 * fp_map_next expect.
 *
 * Input: one control byte, then the TASK body (its arguments in the body,
 * or named in a 4 KiB shared area of fixints).
 *   bit 0  max_message 1024, else 1 MiB
 *
 * The tasks, by name: "echo" packs its argument back; "fail" fails with
 * fp_call_fail; "rc" returns 7; "none" packs nothing; "two" packs two
 * values; "bad" packs bytes that are not msgpack; "big" packs a bin as long
 * as its argument says (up to 64 KiB); "unpack" reads [i s] with fp_unpack.
 */
#include "forkpool-private.h"

#include "fuzz.h"

static int t_echo(fp_call *call, const msgpack_object *args,
                  msgpack_packer *out)
{
  (void)call;
  return msgpack_pack_object(out, *args) ? FP_ENOMEM : 0;
}

static int t_fail(fp_call *call, const msgpack_object *args,
                  msgpack_packer *out)
{
  (void)out;
  return fp_call_fail(call, args->type == MSGPACK_OBJECT_NIL ? NULL : "Boom",
                      "argument of type %d", (int)args->type);
}

static int t_rc(fp_call *call, const msgpack_object *args, msgpack_packer *out)
{
  (void)call, (void)args, (void)out;
  return 7;
}

static int t_none(fp_call *call, const msgpack_object *args,
                  msgpack_packer *out)
{
  (void)call, (void)args, (void)out;
  return 0;
}

static int t_two(fp_call *call, const msgpack_object *args,
                 msgpack_packer *out)
{
  (void)call, (void)args;
  return msgpack_pack_nil(out) || msgpack_pack_nil(out) ? FP_ENOMEM : 0;
}

static int t_bad(fp_call *call, const msgpack_object *args,
                 msgpack_packer *out)
{
  (void)call;
  /* 0xc1 is never msgpack; a lone array header is an unfinished object. */
  if (args->type == MSGPACK_OBJECT_NIL)
    return out->callback(out->data, "\xc1", 1);
  return msgpack_pack_array(out, 3);
}

static int t_big(fp_call *call, const msgpack_object *args,
                 msgpack_packer *out)
{
  static const char zeros[1 << 16];
  uint64_t n = 0;
  if (fp_unpack(args, "U", &n) != 0 || n > sizeof zeros)
    return fp_call_fail(call, "TypeError", "big takes a size up to 64 KiB");
  return fp_pack(out, "y", zeros, (size_t)n);
}

static int t_unpack(fp_call *call, const msgpack_object *args,
                    msgpack_packer *out)
{
  int i;
  const char *s;
  size_t len;
  if (fp_unpack(args, "[i s]", &i, &s, &len) != 0)
    return fp_call_fail(call, "TypeError", "unpack takes [int, str]");
  return fp_pack(out, "[i s#]", i, s, len);
}

static const fp_task task_rows[] = {
    {"echo", t_echo}, {"fail", t_fail}, {"rc", t_rc},
    {"none", t_none}, {"two", t_two},   {"bad", t_bad},
    {"big", t_big},   {"unpack", t_unpack}, {NULL, NULL}};

/* One entry of a chunk's answer, as fp_map_next's yield reads it. */
static void check_entry(const msgpack_object *e)
{
  FZ_CHECK(e->type == MSGPACK_OBJECT_ARRAY);
  const msgpack_object *v = e->via.array.ptr;
  if (e->via.array.size == 2) {
    FZ_CHECK(v[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && v[0].via.u64 == 0);
  } else {
    FZ_CHECK(e->via.array.size == 3);
    FZ_CHECK(v[0].type == MSGPACK_OBJECT_NEGATIVE_INTEGER);
    FZ_CHECK(v[0].via.i64 > -5000);
    FZ_CHECK(v[1].type == MSGPACK_OBJECT_STR && v[2].type == MSGPACK_OBJECT_STR);
  }
}

/* Reads the answer back the way the parent does. */
static void check_answer(const fp__worker_cfg *cfg, const msgpack_sbuffer *head,
                         const fp__outbuf *result, uint64_t id, unsigned n)
{
  FZ_CHECK(head->size > FP__HDR);
  size_t len = head->size - FP__HDR + fp__outbuf_size(result);
  FZ_CHECK(fp__frame_body_len(head->data) == len);
  FZ_CHECK(len <= cfg->max_message); /* else the parent kills the worker */
  char *body = malloc(len + 1);
  FZ_CHECK(body != NULL);
  memcpy(body, head->data + FP__HDR, head->size - FP__HDR);
  /* The pieces, as send_answer writes them. */
  struct iovec iov[FP__OUT_IOV];
  int pieces = fp__outbuf_pieces(result, iov);
  size_t at = head->size - FP__HDR;
  for (int k = 0; k < pieces; k++) {
    memcpy(body + at, iov[k].iov_base, iov[k].iov_len);
    at += iov[k].iov_len;
  }
  FZ_CHECK(at == len);

  uint64_t got_id;
  int code;
  size_t off;
  FZ_CHECK(fp__decode_result_head(body, len, &got_id, &code, &off) == 0);
  FZ_CHECK(got_id == id);
  msgpack_zone z;
  msgpack_object o;
  FZ_CHECK(msgpack_zone_init(&z, 1024));
  size_t count;
  if (code == 0 && n > 1 && fp__count_objects(body + off, len - off, &count)) {
    /* A chunk whose results nest over 30 deep: msgpack-c's unpacker stops
     * at 32 levels and the answer adds two.  The parent fails the chunk
     * with FP_EPROTO and fp_map_next sends its items again one by one. */
  } else if (code == 0) {
    FZ_CHECK(fp__count_objects(body + off, len - off, &count) == 0);
    FZ_CHECK(count == 1);
    FZ_CHECK(msgpack_unpack(body, len, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS);
    if (n > 1) {
      FZ_CHECK(o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size == n);
      for (unsigned i = 0; i < n; i++)
        check_entry(&o.via.array.ptr[i]);
    }
  } else {
    /* What fail_from_body reads: "kind: message". */
    FZ_CHECK(code < 0 && code > -5000);
    FZ_CHECK(msgpack_unpack(body, len, &off, &z, &o) > 0);
    FZ_CHECK(o.type == MSGPACK_OBJECT_STR);
    FZ_CHECK(msgpack_unpack(body, len, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS);
    FZ_CHECK(o.type == MSGPACK_OBJECT_STR);
  }
  msgpack_zone_destroy(&z);
  free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static fp__tasks tasks;
  if (tasks.rows == NULL)
    FZ_CHECK(fp__tasks_build(&tasks, task_rows) == 0);
  fz z = {data, size};
  uint8_t ctl = fz_u8(&z);
  /* A shared area for TASKs that name their arguments there: fixints,
   * so any run of it is a stream of valid objects. */
  static char area[4096];
  static fp__shm shm = {.args = area, .args_len = sizeof area};
  if (area[1] == 0)
    for (size_t i = 0; i < sizeof area; i++)
      area[i] = (char)(i % 128);
  fp__worker_cfg cfg = {.tasks = &tasks, .nslots = 1,
                        .max_message = ctl & 1 ? 1024 : (size_t)1 << 20,
                        .shm = &shm};
  /* The body exactly as the frame reader hands it over: its own buffer. */
  char *body = malloc(z.n + 1);
  FZ_CHECK(body != NULL);
  if (z.n > 0)
    memcpy(body, z.p, z.n);

  msgpack_zone zone;
  msgpack_sbuffer head;
  fp__outbuf result, item;
  FZ_CHECK(msgpack_zone_init(&zone, 4096));
  msgpack_sbuffer_init(&head);
  fp__outbuf_init(&result);
  fp__outbuf_init(&item);
  int rc = fp__worker_handle(&cfg, NULL, NULL, body, z.n, &zone, &head,
                             &result, &item);
  if (rc == 0) {
    /* What it answered: the id and item count it decoded. */
    uint64_t id;
    unsigned n;
    const char *name, *args;
    size_t name_len, args_len;
    FZ_CHECK(fp__decode_task(body, z.n, shm.args, shm.args_len, &id, &name,
                             &name_len, &n, &args, &args_len) == 0);
    check_answer(&cfg, &head, &result, id, n);
  } else {
    FZ_CHECK(rc == FP_EPROTO || rc == FP_ENOMEM); /* it exits, not answers */
  }
  free(body);
  msgpack_zone_destroy(&zone);
  msgpack_sbuffer_destroy(&head);
  fp__outbuf_destroy(&result);
  fp__outbuf_destroy(&item);
  return 0;
}

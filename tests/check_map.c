/* fp_map and fp_map_unordered with real workers: order, failures, crashes,
 * deadlines, lazy input in bounded memory, chunking, progress, bad input. */
#define _GNU_SOURCE
#include "fpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A msgpack array of [i] for i in 0..n-1, or of bare i when bare. */
static void make_items(msgpack_sbuffer *sb, size_t n, int bare)
{
  msgpack_packer pk;
  msgpack_sbuffer_init(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    if (!bare)
      msgpack_pack_array(&pk, 1);
    msgpack_pack_uint64(&pk, i);
  }
}

static void run_ordered(size_t chunksize)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer sb;
  make_items(&sb, 1000, 0);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = chunksize;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "square", &in, &o, &m), 0);
  fp_map_item it;
  size_t n = 0;
  int rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
    ck_assert_uint_eq(it.index, n);
    ck_assert_int_eq(it.err, 0);
    ck_assert_int_eq(it.result->via.i64, (int64_t)(n * n));
    n++;
  }
  ck_assert_int_eq(rc, 0);
  ck_assert_uint_eq(n, 1000);
  ck_assert_int_eq(fp_map_next(m, 0, &it), 0); /* stays at the end */
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}

START_TEST(ordered_automatic)
{
  run_ordered(0);
}
END_TEST

START_TEST(ordered_chunks_of_1_and_100)
{
  run_ordered(1);
  run_ordered(100);
}
END_TEST

START_TEST(unordered_yields_each_once)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer sb;
  make_items(&sb, 1000, 0);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = 7;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map_unordered(p, "square", &in, &o, &m), 0);
  char seen[1000] = {0};
  fp_map_item it;
  int rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
    ck_assert_uint_lt(it.index, 1000);
    ck_assert(!seen[it.index]);
    seen[it.index] = 1;
    ck_assert_int_eq(it.result->via.i64, (int64_t)(it.index * it.index));
  }
  ck_assert_int_eq(rc, 0);
  for (int i = 0; i < 1000; i++)
    ck_assert(seen[i]);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(items_3_and_7_fail_alone)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer sb;
  make_items(&sb, 20, 0);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = 4; /* 3 shares its chunk with 0, 1 and 2 */
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq_or_fail", &in, &o, &m), 0);
  fp_map_item it;
  for (size_t i = 0; i < 20; i++) {
    ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), 1);
    ck_assert_uint_eq(it.index, i);
    if (i == 3 || i == 7) {
      char want[64];
      snprintf(want, sizeof want, "ValueError: item %zu fails", i);
      ck_assert_int_eq(it.err, FP_ETASK);
      ck_assert_str_eq(it.error, want);
      ck_assert_ptr_null(it.result);
    } else {
      ck_assert_int_eq(it.err, 0);
      ck_assert_int_eq(it.result->via.i64, (int64_t)(i * i));
    }
  }
  ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), 0);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(a_crash_fails_only_its_item)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer sb;
  make_items(&sb, 6, 0); /* 0..5: 5 segfaults */
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = 6; /* all in one chunk: the split isolates item 5 */
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq_or_segv", &in, &o, &m), 0);
  fp_map_item it;
  for (size_t i = 0; i < 6; i++) {
    ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), 1);
    ck_assert_uint_eq(it.index, i);
    if (i == 5) {
      ck_assert_int_eq(it.err, FP_EWORKER);
      ck_assert_ptr_nonnull(strstr(it.error, "signal 11"));
    } else {
      ck_assert_int_eq(it.err, 0);
      ck_assert_int_eq(it.result->via.i64, (int64_t)(i * i));
    }
  }
  fpt_map_destroy(m);
  /* Each item counts once: the split chunk's failure is not counted. */
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.submitted, 6);
  ck_assert_uint_eq(st.finished, 5);
  ck_assert_uint_eq(st.failed, 1);
  ck_assert_uint_eq(st.worker_deaths, 2); /* the chunk's, then item 5's */
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Unordered, a crash in a chunk between others: its items take its place
 * among the chunks in flight, one message each, and every index comes out
 * once, only the item that crashed failing. */
START_TEST(unordered_crash_in_a_middle_chunk)
{
  enum { N = 20 };
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, N);
  for (int i = 0; i < N; i++) { /* [v], v never 6: that one spins */
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int(&pk, i == 5 ? 5 : i % 5);
  }
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = 3; /* 5 is in the second chunk of seven */
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map_unordered(p, "sq_or_segv", &in, &o, &m), 0);
  char seen[N] = {0};
  fp_map_item it;
  int rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
    ck_assert_uint_lt(it.index, N);
    ck_assert(!seen[it.index]);
    seen[it.index] = 1;
    if (it.index == 5) {
      ck_assert_int_eq(it.err, FP_EWORKER);
      continue;
    }
    ck_assert_int_eq(it.err, 0);
    int64_t v = (int64_t)it.index % 5;
    ck_assert_int_eq(it.result->via.i64, v * v);
  }
  ck_assert_int_eq(rc, 0);
  for (int i = 0; i < N; i++)
    ck_assert(seen[i]);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(deadline_per_item)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer sb;
  make_items(&sb, 10, 0); /* 6 loops forever, 5 segfaults */
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  /* Long enough for item 5's worker to die first however slow its death
   * (valgrind checks for leaks as it dies): 3 s, or 30 s under valgrind. */
  o.deadline_ms = FPT_LIMIT_MS / 20;
  o.chunksize = 3;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq_or_segv", &in, &o, &m), 0);
  fp_map_item it;
  for (size_t i = 0; i < 10; i++) {
    ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), 1);
    ck_assert_uint_eq(it.index, i);
    if (i == 6)
      ck_assert_int_eq(it.err, FP_EDEADLINE);
    else if (i == 5)
      ck_assert_int_eq(it.err, FP_EWORKER);
    else
      ck_assert_int_eq(it.result->via.i64, (int64_t)(i * i));
  }
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

typedef struct counter {
  uint64_t next, end;
  int calls_after_error;
  int fail_at;   /* return this error at item fail_at; 0: never */
  int two_at;    /* pack two objects at this item; 0: never */
} counter;

static int count_items(void *arg, msgpack_packer *pk)
{
  counter *c = arg;
  if (c->next == c->end)
    return 0;
  if (c->fail_at && c->next == (uint64_t)c->fail_at) {
    c->calls_after_error++;
    return FP_ENOMEM;
  }
  if (c->two_at && c->next == (uint64_t)c->two_at)
    msgpack_pack_nil(pk);
  msgpack_pack_uint64(pk, c->next++);
  return 1;
}

static long peak_rss_kib(void)
{
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %ld", &kib) == 1)
      break;
  if (f)
    fclose(f);
  return kib;
}

/* A million tiny items through the lazy input: the parent's peak RSS grows
 * by less than 64 MiB, although the items alone would take 8 MiB packed and
 * their futures far more.  FPT_SCALE makes it fewer; under valgrind or a
 * sanitizer the RSS bound is not checked (their own memory is in it). */
START_TEST(lazy_million_in_bounded_memory)
{
  const size_t N = fpt_scaled(1000000, 10000);
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  long before = peak_rss_kib();
  counter c = {0, N, 0, 0, 0};
  fp_map_input in = {.next = count_items, .arg = &c};
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq", &in, NULL, &m), 0);
  fp_map_item it;
  uint64_t n = 0;
  int rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
    ck_assert_uint_eq(it.index, n);
    ck_assert_uint_eq(it.result->via.u64, n * n);
    n++;
  }
  ck_assert_int_eq(rc, 0);
  ck_assert_uint_eq(n, N);
  long grew = peak_rss_kib() - before;
  if (fpt_rss_is_meaningful())
    ck_assert_msg(grew < 64 * 1024, "peak RSS grew by %ld KiB", grew);
  fpt_map_destroy(m);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

typedef struct progress {
  size_t calls, last_done, last_total;
  int backwards;
} progress;

static void on_progress(void *arg, size_t done, size_t total)
{
  progress *pr = arg;
  pr->backwards |= done < pr->last_done;
  pr->calls++;
  pr->last_done = done;
  pr->last_total = total;
}

START_TEST(progress_reaches_total)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer sb;
  make_items(&sb, 500, 1);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  progress pr = {0, 0, 0, 0};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = 10;
  o.progress = on_progress;
  o.progress_arg = &pr;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map_unordered(p, "sq", &in, &o, &m), 0);
  fp_map_item it;
  while (fp_map_next(m, FPT_LIMIT_MS, &it) == 1)
    ;
  ck_assert_uint_eq(pr.calls, 50);
  ck_assert_uint_eq(pr.last_done, 500);
  ck_assert_uint_eq(pr.last_total, 500);
  ck_assert(!pr.backwards);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(bad_input)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  msgpack_sbuffer sb;
  make_items(&sb, 3, 1);
  fp_map_iter *m = (fp_map_iter *)&s;
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_input both = {.array = sb.data, .len = sb.size, .next = count_items};
  fp_map_input none = {NULL, 0, NULL, NULL};
  static const char not_array[] = {0x05};
  fp_map_input scalar = {.array = not_array, .len = 1};
  ck_assert_int_eq(fpt_map(NULL, "sq", &in, NULL, &m), FP_EINVAL);
  ck_assert_ptr_null(m);
  ck_assert_int_eq(fpt_map(p, "sq", &in, NULL, NULL), FP_EINVAL);
  ck_assert_int_eq(fpt_map(p, "", &in, NULL, &m), FP_EINVAL);
  ck_assert_int_eq(fpt_map(p, "sq", NULL, NULL, &m), FP_EINVAL);
  ck_assert_int_eq(fpt_map(p, "sq", &both, NULL, &m), FP_EINVAL);
  ck_assert_int_eq(fpt_map(p, "sq", &none, NULL, &m), FP_EINVAL);
  ck_assert_int_eq(fpt_map(p, "sq", &scalar, NULL, &m), FP_EINVAL);
  ck_assert_int_eq(fpt_map(p, "nope", &in, NULL, &m), FP_ENOTASK);
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.size = 1;
  ck_assert_int_eq(fpt_map(p, "sq", &in, &o, &m), FP_EINVAL);
  o = (fp_map_options)FP_MAP_OPTIONS_INIT;
  o.deadline_ms = -1;
  ck_assert_int_eq(fpt_map(p, "sq", &in, &o, &m), FP_EINVAL);

  /* A lazy input that packs two objects, or fails: next says so. */
  fp_map_item it;
  counter two = {0, 10, 0, 0, 4};
  fp_map_input lazy_two = {.next = count_items, .arg = &two};
  o = (fp_map_options)FP_MAP_OPTIONS_INIT;
  o.chunksize = 1;
  ck_assert_int_eq(fpt_map(p, "sq", &lazy_two, &o, &m), 0);
  int rc, items = 0;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1)
    items++;
  ck_assert_int_eq(rc, FP_EINVAL);
  ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it) >= 0, 1); /* drains */
  fpt_map_destroy(m);
  counter failing = {0, 10, 0, 6, 0};
  fp_map_input lazy_fail = {.next = count_items, .arg = &failing};
  ck_assert_int_eq(fpt_map(p, "sq", &lazy_fail, &o, &m), 0);
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1)
    ;
  ck_assert_int_eq(rc, FP_ENOMEM);
  ck_assert_int_eq(failing.calls_after_error, 1); /* never asked again */
  ck_assert_int_eq(fp_map_next(NULL, 0, &it), FP_EINVAL);
  ck_assert_int_eq(fp_map_next(m, -2, &it), FP_EINVAL);
  fpt_map_destroy(m);
  fpt_map_destroy(NULL);

  /* Empty input: done at once. */
  static const char empty[] = {(char)0x90};
  fp_map_input none_items = {.array = empty, .len = 1};
  ck_assert_int_eq(fpt_map(p, "sq", &none_items, NULL, &m), 0);
  ck_assert_int_eq(fp_map_next(m, 0, &it), 0);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Runs sq over in, chunks of one: *items results, *errs FP_EINVAL returns
 * (each code once), until the end. */
static void drain_counting(fp_pool *p, const void *buf, size_t len,
                           int *items, int *errs)
{
  fp_map_input in = {.array = buf, .len = len};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = 1;
  fp_map_iter *m;
  fp_map_item it;
  int rc;
  *items = *errs = 0;
  ck_assert_int_eq(fpt_map(p, "sq", &in, &o, &m), 0);
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) != 0) {
    if (rc == 1) {
      ck_assert_int_eq(it.err, 0);
      ck_assert_uint_eq(it.result->via.u64, it.index * it.index);
      (*items)++;
    } else {
      ck_assert_int_eq(rc, FP_EINVAL);
      (*errs)++;
    }
  }
  fpt_map_destroy(m);
}

/* An array's items are checked as they are cut into chunks: a bad item, or
 * bytes after the array, is FP_EINVAL once the map reaches it, after or
 * among the items before it; a bad first item fails fp_map itself. */
START_TEST(bad_array_items_found_when_reached)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  static const char bad_third[] = {(char)0x94, 0, 1, (char)0xc1, 3};
  static const char cut_short[] = {(char)0x93, 0, 1};
  static const char trailing[] = {(char)0x93, 0, 1, 2, 0};
  static const char bad_first[] = {(char)0x92, (char)0xc1, 1};
  int items, errs;
  drain_counting(p, bad_third, sizeof bad_third, &items, &errs);
  ck_assert_int_eq(items, 2);
  ck_assert_int_eq(errs, 1);
  drain_counting(p, cut_short, sizeof cut_short, &items, &errs);
  ck_assert_int_eq(items, 2);
  ck_assert_int_eq(errs, 1);
  drain_counting(p, trailing, sizeof trailing, &items, &errs);
  ck_assert_int_eq(items, 3);
  ck_assert_int_eq(errs, 1);
  fp_map_input in = {.array = bad_first, .len = sizeof bad_first};
  fp_map_iter *m = (fp_map_iter *)&s;
  ck_assert_int_eq(fpt_map(p, "sq", &in, NULL, &m), FP_EINVAL);
  ck_assert_ptr_null(m);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* One item of every kind, each integer width and sign at its edges. */
static void pack_kinds(msgpack_packer *pk, int *n)
{
  static const int64_t ints[] = {0, 1, 127, 128, 255, 256, 65535, 65536,
                                 INT32_MAX, -1, -32, -33, -128, -129, -32768,
                                 -32769, INT32_MIN, (int64_t)INT32_MIN - 1,
                                 INT64_MIN, INT64_MAX};
  static const uint64_t uints[] = {UINT32_MAX, (uint64_t)UINT32_MAX + 1,
                                   UINT64_MAX};
  char long_str[300];
  memset(long_str, 'x', sizeof long_str);
  *n = 0;
  for (size_t i = 0; i < sizeof ints / sizeof *ints; i++, ++*n)
    msgpack_pack_int64(pk, ints[i]);
  for (size_t i = 0; i < sizeof uints / sizeof *uints; i++, ++*n)
    msgpack_pack_uint64(pk, uints[i]);
  msgpack_pack_nil(pk);
  msgpack_pack_true(pk);
  msgpack_pack_false(pk);
  msgpack_pack_float(pk, 1.5f);
  msgpack_pack_double(pk, -2.25);
  msgpack_pack_str_with_body(pk, "", 0);
  msgpack_pack_str_with_body(pk, "abc", 3);
  msgpack_pack_str_with_body(pk, long_str, sizeof long_str);
  msgpack_pack_bin_with_body(pk, "\0\1", 2);
  msgpack_pack_ext_with_body(pk, "\7", 1, 5);
  msgpack_pack_array(pk, 2); /* [1, [2, 3]] */
  msgpack_pack_int(pk, 1);
  msgpack_pack_array(pk, 2);
  msgpack_pack_int(pk, 2);
  msgpack_pack_int(pk, 3);
  msgpack_pack_map(pk, 1); /* {"a": -1} */
  msgpack_pack_str_with_body(pk, "a", 1);
  msgpack_pack_int(pk, -1);
  *n += 12;
}

/* Each result is the object the worker packed, whether it came alone or
 * was read out of a chunk's answer. */
START_TEST(results_of_every_kind)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer items, sb;
  msgpack_packer pk;
  int n;
  msgpack_sbuffer_init(&items);
  msgpack_packer_init(&pk, &items, msgpack_sbuffer_write);
  pack_kinds(&pk, &n);
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, (uint32_t)n);
  msgpack_sbuffer_write(&sb, items.data, items.size);
  msgpack_zone z;
  msgpack_object want[64];
  size_t off = 0;
  ck_assert(msgpack_zone_init(&z, 1024));
  for (int i = 0; i < n; i++)
    ck_assert_int_ge(msgpack_unpack(items.data, items.size, &off, &z, &want[i]),
                     MSGPACK_UNPACK_EXTRA_BYTES);
  static const size_t sizes[] = {1, 7, 64};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    fp_map_input in = {.array = sb.data, .len = sb.size};
    fp_map_options o = FP_MAP_OPTIONS_INIT;
    o.chunksize = sizes[k];
    fp_map_iter *m;
    fp_map_item it;
    int got = 0, rc;
    ck_assert_int_eq(fpt_map(p, "echo", &in, &o, &m), 0);
    while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
      ck_assert_int_eq(it.err, 0);
      ck_assert_msg(msgpack_object_equal(*it.result, want[it.index]),
                    "chunksize %zu, item %zu: type %d, not %d", sizes[k],
                    it.index, it.result->type, want[it.index].type);
      got++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(got, n);
    fpt_map_destroy(m);
  }
  msgpack_zone_destroy(&z);
  msgpack_sbuffer_destroy(&items);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Items of the map in the pool's queue or running, from the pool's stats. */
static uint64_t items_in_pool(fp_pool *p)
{
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  return st.queued + st.running;
}

/* The caller's buffersize bounds the items in flight; the automatic one
 * bounds the bytes of arguments in flight to about 4 MiB. */
START_TEST(work_in_flight_is_bounded)
{
  enum { BIG = 64 * 1024, NBIG = 300 };
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer sb;
  make_items(&sb, 200, 1);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = 3;
  o.buffersize = 10;
  fp_map_iter *m;
  fp_map_item it;
  size_t n = 0;
  ck_assert_int_eq(fpt_map(p, "sq", &in, &o, &m), 0);
  while (fp_map_next(m, FPT_LIMIT_MS, &it) == 1) {
    ck_assert_uint_le(items_in_pool(p), 10);
    n++;
  }
  ck_assert_uint_eq(n, 200);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);

  static char blob[BIG];
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, NBIG);
  for (int i = 0; i < NBIG; i++)
    msgpack_pack_bin_with_body(&pk, blob, sizeof blob);
  in = (fp_map_input){.array = sb.data, .len = sb.size};
  uint64_t most = 0;
  n = 0;
  ck_assert_int_eq(fpt_map(p, "echo", &in, NULL, &m), 0);
  while (fp_map_next(m, FPT_LIMIT_MS, &it) == 1) {
    ck_assert_int_eq(it.err, 0);
    uint64_t now = items_in_pool(p);
    most = now > most ? now : most;
    n++;
  }
  ck_assert_uint_eq(n, NBIG);
  /* 4 MiB, and the item that crosses each chunk's share of it. */
  ck_assert_uint_le(most * BIG, (4 << 20) + 4 * BIG);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_map_next waits as long as it is told, and not at all with 0. */
START_TEST(next_times_out)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  static const char one[] = {(char)0x91, 0};
  fp_map_input in = {.array = one, .len = sizeof one};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.deadline_ms = 400;
  fp_map_iter *m;
  fp_map_item it;
  ck_assert_int_eq(fpt_map(p, "forever", &in, &o, &m), 0);
  ck_assert_int_eq(fp_map_next(m, 0, &it), FP_ETIMEDOUT);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ck_assert_int_eq(fp_map_next(m, 100, &it), FP_ETIMEDOUT);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
  ck_assert_msg(ms >= 90, "waited %.1f ms of 100", ms);
  ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), 1);
  ck_assert_int_eq(it.err, FP_EDEADLINE);
  ck_assert_int_eq(fp_map_next(m, 0, &it), 0);
  fpt_map_destroy(m);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Items so big that chunks must stay small, and answers that would not fit
 * in one message: every item still gets its result. */
START_TEST(big_items_never_lost)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options po = FP_POOL_OPTIONS_INIT;
  po.workers = 2;
  po.tasks = fpt_tasks;
  po.max_message = 8192;
  po.restart_limit = 3; /* a protocol error per chunk would trip this */
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &po), 0);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  char blob[1000];
  memset(blob, 'x', sizeof blob);
  msgpack_pack_array(&pk, 2001);
  for (int i = 0; i < 2000; i++)
    msgpack_pack_bin_with_body(&pk, blob, sizeof blob);
  char huge[9000] = {0}; /* one item over max_message: fails alone */
  msgpack_pack_bin_with_body(&pk, huge, sizeof huge);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  for (int chunk = 0; chunk <= 50; chunk += 50) {
    fp_map_options o = FP_MAP_OPTIONS_INIT;
    o.chunksize = (size_t)chunk;
    fp_map_iter *m;
    ck_assert_int_eq(fpt_map(p, "echo", &in, &o, &m), 0);
    fp_map_item it;
    size_t n = 0;
    int rc;
    while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
      ck_assert_uint_eq(it.index, n);
      if (n == 2000) {
        ck_assert_int_eq(it.err, FP_EMSGSIZE);
      } else {
        ck_assert_msg(it.err == 0, "%zu: %s", n, it.error);
        ck_assert_uint_eq(it.result->via.bin.size, sizeof blob);
      }
      n++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(n, 2001);
    fpt_map_destroy(m);
  }
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.worker_deaths, 0);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

START_TEST(destroy_midway)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  counter c = {0, 100000, 0, 0, 0};
  fp_map_input in = {.next = count_items, .arg = &c};
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq", &in, NULL, &m), 0);
  fp_map_item it;
  for (int i = 0; i < 10; i++)
    ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), 1);
  fpt_map_destroy(m);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* --- Deadlines per item, chunk sizes, and a pool that stops -------------- */

/* Records each chunk's size: in an ordered map without splits, each call of
 * progress is one chunk, in input order. */
typedef struct sizes {
  size_t last_done, n;
  size_t size[4096];
} sizes;

static void on_chunk(void *arg, size_t done, size_t total)
{
  sizes *z = arg;
  (void)total;
  if (z->n < sizeof z->size / sizeof *z->size)
    z->size[z->n++] = done - z->last_done;
  z->last_done = done;
}

/* n bare items i, but hang (a negative item) at index hang. */
static void make_hang_items(msgpack_sbuffer *sb, size_t n, size_t hang)
{
  msgpack_packer pk;
  msgpack_sbuffer_init(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, (uint32_t)n);
  for (size_t i = 0; i < n; i++)
    if (i == hang)
      msgpack_pack_int64(&pk, -1);
    else
      msgpack_pack_uint64(&pk, i);
}

/* One chunk of 1000 items whose item 500 hangs: the deadline is per item,
 * so the item fails after about deadline_ms, not 1000 times that; it fails
 * alone and once (it is not run again), and every other item succeeds. */
static void hung_item_in_big_chunk(size_t shm_args, sizes *z)
{
  fp_pool_options po = FP_POOL_OPTIONS_INIT;
  po.workers = 2;
  po.tasks = fpt_tasks;
  po.shm_args = shm_args;
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &po), 0);
  msgpack_sbuffer sb;
  make_hang_items(&sb, 1000, 500);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.chunksize = 1000;
  o.deadline_ms = 500; /* per chunk it would be 500 s: past FPT_LIMIT_MS */
  o.progress = on_chunk;
  o.progress_arg = z;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq_or_pause", &in, &o, &m), 0);
  fp_map_item it;
  for (size_t i = 0; i < 1000; i++) {
    ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), 1);
    ck_assert_uint_eq(it.index, i);
    if (i == 500) {
      ck_assert_int_eq(it.err, FP_EDEADLINE);
      ck_assert_ptr_nonnull(strstr(it.error, "deadline of 500 ms"));
    } else {
      ck_assert_msg(it.err == 0, "%zu: %s", i, it.error);
      ck_assert_uint_eq(it.result->via.u64, i * i);
    }
  }
  ck_assert_int_eq(fp_map_next(m, FPT_LIMIT_MS, &it), 0);
  fpt_map_destroy(m);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.deadline_kills, 1);
  ck_assert_uint_eq(st.submitted, 1000);
  ck_assert_uint_eq(st.finished, 999);
  ck_assert_uint_eq(st.failed, 1);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
}

START_TEST(deadline_fires_per_item_in_a_big_chunk)
{
  fpt_snapshot s;
  fpt_begin(&s);
  static sizes z;
  memset(&z, 0, sizeof z);
  hung_item_in_big_chunk(0, &z);
  fpt_end(&s);
}
END_TEST

/* Without shared memory the worker cannot say which item it runs: a map
 * with a deadline sends one item per message instead. */
START_TEST(deadline_without_shm_sends_single_items)
{
  fpt_snapshot s;
  fpt_begin(&s);
  static sizes z;
  memset(&z, 0, sizeof z);
  hung_item_in_big_chunk(FP_SHM_OFF, &z);
  ck_assert_uint_eq(z.n, 1000);
  for (size_t k = 0; k < z.n; k++)
    ck_assert_uint_eq(z.size[k], 1);
  fpt_end(&s);
}
END_TEST

/* Automatic chunks start at one item and never grow past twice the chunk
 * before, however fast the items are. */
START_TEST(automatic_chunks_at_most_double)
{
  enum { N = 300000 };
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  msgpack_sbuffer sb;
  make_items(&sb, N, 1);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  static sizes z;
  memset(&z, 0, sizeof z);
  fp_map_options o = FP_MAP_OPTIONS_INIT;
  o.progress = on_chunk;
  o.progress_arg = &z;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "sq", &in, &o, &m), 0);
  fp_map_item it;
  size_t n = 0;
  while (fp_map_next(m, FPT_LIMIT_MS, &it) == 1) {
    ck_assert_int_eq(it.err, 0);
    n++;
  }
  ck_assert_uint_eq(n, N);
  ck_assert_uint_eq(z.size[0], 1);
  for (size_t k = 1; k < z.n; k++)
    ck_assert_msg(z.size[k] <= 2 * z.size[k - 1],
                  "chunk %zu holds %zu items after one of %zu", k, z.size[k],
                  z.size[k - 1]);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Items of 5 ms each make chunks of one item (the target is about 2 ms),
 * even when the caller comes back late and reads many answers at once,
 * which look as if they had taken no time. */
START_TEST(slow_items_stay_in_small_chunks)
{
  enum { N = 200 };
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 32); /* answers pile up in the pipes */
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, N);
  for (int i = 0; i < N; i++)
    msgpack_pack_uint64(&pk, 5);
  fp_map_input in = {.array = sb.data, .len = sb.size};
  static sizes z;
  memset(&z, 0, sizeof z);
  fp_map_options o = FP_MAP_OPTIONS_INIT; /* 16 items per worker in flight */
  o.progress = on_chunk;
  o.progress_arg = &z;
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "nap", &in, &o, &m), 0);
  fp_map_item it;
  size_t n = 0;
  for (;;) {
    if (n % 32 == 0) {
      /* Not a synchronisation: only a late caller, so that answers wait. */
      struct timespec ts = {0, 300 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    if (fp_map_next(m, FPT_LIMIT_MS, &it) != 1)
      break;
    ck_assert_int_eq(it.err, 0);
    n++;
  }
  ck_assert_uint_eq(n, N);
  for (size_t k = 0; k < z.n; k++)
    ck_assert_msg(z.size[k] <= 2, "chunk %zu holds %zu items of 5 ms", k,
                  z.size[k]);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* Every item segfaults until the pool breaks: the map stops taking items
 * from its (endless) input, gives those it took, then says FP_EBROKEN, at
 * this call and every later one. */
START_TEST(broken_pool_ends_the_map)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool_options po = FP_POOL_OPTIONS_INIT;
  po.workers = 2;
  po.tasks = fpt_tasks;
  po.restart_limit = 3;
  po.restart_window_ms = 600000; /* speed does not matter */
  fp_pool *p;
  ck_assert_int_eq(fpt_pool_create(&p, &po), 0);
  counter c = {0, 1000000, 0, 0, 0};
  fp_map_input in = {.next = count_items, .arg = &c};
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "segv", &in, NULL, &m), 0);
  fp_map_item it;
  size_t n = 0;
  int rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1 && n < 100000) {
    ck_assert(it.err == FP_EWORKER || it.err == FP_EBROKEN);
    n++;
  }
  ck_assert_int_eq(rc, FP_EBROKEN);
  ck_assert_uint_lt(n, 1000);
  ck_assert_uint_eq(n, c.next); /* every item taken was given */
  ck_assert_int_eq(fp_map_next(m, 0, &it), FP_EBROKEN);
  ck_assert_uint_eq(n, c.next);
  fpt_map_destroy(m);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* After fp_pool_shutdown, fp_map fails with FP_ESHUTDOWN and makes
 * nothing: no map, no task, no item taken from the input. */
START_TEST(map_after_shutdown_fails)
{
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(1, 0);
  ck_assert_int_eq(fp_pool_shutdown(p, 0), 0);
  counter c = {0, 10, 0, 0, 0};
  fp_map_input in = {.next = count_items, .arg = &c};
  fp_map_iter *m = (fp_map_iter *)&s;
  ck_assert_int_eq(fpt_map(p, "sq", &in, NULL, &m), FP_ESHUTDOWN);
  ck_assert_ptr_null(m);
  m = (fp_map_iter *)&s;
  ck_assert_int_eq(fpt_map_unordered(p, "sq", &in, NULL, &m), FP_ESHUTDOWN);
  ck_assert_ptr_null(m);
  ck_assert_uint_eq(c.next, 0);
  fp_pool_stats st = FP_POOL_STATS_INIT;
  ck_assert_int_eq(fp_pool_stats_get(p, &st, NULL, 0), 0);
  ck_assert_uint_eq(st.submitted, 0);
  ck_assert_uint_eq(st.failed, 0);
  fpt_pool_destroy(p);
  fpt_end(&s);
}
END_TEST

/* fp_pool_terminate during a map of 10,000 items: the items in flight fail
 * FP_ECANCELLED, the map takes no more, and fp_map_next then says
 * FP_ESHUTDOWN (not 0: the input was not done). */
START_TEST(terminate_during_map)
{
  enum { N = 10000 };
  fpt_snapshot s;
  fpt_begin(&s);
  fp_pool *p = fpt_pool(2, 0);
  char gate[256];
  fpt_gate_make(gate, sizeof gate);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, N);
  for (int i = 0; i < N; i++) {
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, gate, strlen(gate));
  }
  fp_map_input in = {.array = sb.data, .len = sb.size};
  fp_map_iter *m;
  ck_assert_int_eq(fpt_map(p, "gate", &in, NULL, &m), 0);
  ck_assert_int_eq(fp_pool_terminate(p), 0);
  fp_map_item it;
  size_t n = 0;
  int rc;
  while ((rc = fp_map_next(m, FPT_LIMIT_MS, &it)) == 1) {
    ck_assert_msg(it.err == FP_ECANCELLED, "item %zu: %s", it.index,
                  it.error);
    n++;
  }
  ck_assert_int_eq(rc, FP_ESHUTDOWN);
  ck_assert_uint_gt(n, 0);
  ck_assert_uint_lt(n, 1000);
  ck_assert_int_eq(fp_map_next(m, 0, &it), FP_ESHUTDOWN);
  fpt_map_destroy(m);
  msgpack_sbuffer_destroy(&sb);
  fpt_pool_destroy(p);
  fpt_gate_remove(gate);
  fpt_end(&s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("map");
  TCase *tc = fpt_tcase(s, "map", 300);
  tcase_add_test(tc, ordered_automatic);
  tcase_add_test(tc, ordered_chunks_of_1_and_100);
  tcase_add_test(tc, unordered_yields_each_once);
  tcase_add_test(tc, items_3_and_7_fail_alone);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  a_crash_fails_only_its_item);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  unordered_crash_in_a_middle_chunk);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a map's deadline kills the worker", tc,
                  deadline_per_item);
  tcase_add_test(tc, lazy_million_in_bounded_memory);
  tcase_add_test(tc, progress_reaches_total);
  tcase_add_test(tc, bad_input);
  tcase_add_test(tc, bad_array_items_found_when_reached);
  tcase_add_test(tc, results_of_every_kind);
  tcase_add_test(tc, work_in_flight_is_bounded);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a map's deadline kills the worker", tc,
                  next_times_out);
  tcase_add_test(tc, destroy_midway);
  tcase_add_test(tc, big_items_never_lost);
  tc = fpt_tcase(s, "limits", 300);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a map's deadline kills the worker", tc,
                  deadline_fires_per_item_in_a_big_chunk);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a map's deadline kills the worker", tc,
                  deadline_without_shm_sends_single_items);
  tcase_add_test(tc, automatic_chunks_at_most_double);
  tcase_add_test(tc, slow_items_stay_in_small_chunks);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "a task crashes its worker process", tc,
                  broken_pool_ends_the_map);
  tcase_add_test(tc, map_after_shutdown_fails);
  fpt_add_test_in(FPT_IN_PROCESSES,
                  "terminate kills a worker held at a gate", tc,
                  terminate_during_map);
  fpt_run_suite(s);
}

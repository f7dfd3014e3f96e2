/*
 * malloc, calloc, realloc and free for the test program, forwarding to the
 * next allocator in the lookup order (libc's, or a sanitizer's) and failing
 * the allocations fm_arm asks for.  See failmalloc.h.
 *
 * The next allocator is found with dlsym(RTLD_NEXT), which may itself
 * allocate: while it runs, allocations come from a small static arena, and
 * free ignores pointers into that arena.
 */
#define _GNU_SOURCE
#include "failmalloc.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void (*free_fn)(void *);

static malloc_fn next_malloc;
static calloc_fn next_calloc;
static realloc_fn next_realloc;
static free_fn next_free;
static atomic_int resolved;      /* the four above are set */
static atomic_int resolving;     /* dlsym is running: use the arena */

static _Alignas(max_align_t) char arena[16384];
static size_t arena_used;        /* only while resolving: one thread */

static atomic_int armed_pid;     /* 0: disarmed */
static atomic_int persistent;    /* fail every allocation after the nth too */
static atomic_ulong nth;
static atomic_ulong calls;
static atomic_ulong failures;

/* Blocks of the arena carry their size just before them, for realloc. */
static void *arena_alloc(size_t n)
{
  const size_t hdr = sizeof(max_align_t);
  n = (n + hdr - 1) / hdr * hdr;
  if (n > sizeof arena - arena_used - hdr)
    return NULL;
  char *p = arena + arena_used + hdr;
  memcpy(p - sizeof n, &n, sizeof n);
  arena_used += n + hdr;
  return p;
}

static int in_arena(const void *p)
{
  return (const char *)p >= arena && (const char *)p < arena + sizeof arena;
}

static int resolve(void)
{
  if (atomic_load(&resolved))
    return 1;
  if (atomic_exchange(&resolving, 1))
    return 0; /* a nested call from dlsym itself */
  next_malloc = (malloc_fn)dlsym(RTLD_NEXT, "malloc");
  next_calloc = (calloc_fn)dlsym(RTLD_NEXT, "calloc");
  next_realloc = (realloc_fn)dlsym(RTLD_NEXT, "realloc");
  next_free = (free_fn)dlsym(RTLD_NEXT, "free");
  if (!next_malloc || !next_calloc || !next_realloc || !next_free)
    _exit(99); /* no allocator to forward to: nothing sensible to do */
  atomic_store(&resolved, 1);
  atomic_store(&resolving, 0);
  return 1;
}

/* 1 if this allocation is the one (or one of those) to fail. */
static int inject(void)
{
  int pid = atomic_load_explicit(&armed_pid, memory_order_relaxed);
  if (pid == 0 || pid != (int)getpid())
    return 0;
  unsigned long n = atomic_fetch_add(&calls, 1) + 1;
  unsigned long want = atomic_load(&nth);
  if (n == want || (n > want && atomic_load(&persistent))) {
    atomic_fetch_add(&failures, 1);
    errno = ENOMEM;
    return 1;
  }
  return 0;
}

void *malloc(size_t n)
{
  if (!resolve())
    return arena_alloc(n);
  return inject() ? NULL : next_malloc(n);
}

void *calloc(size_t n, size_t size)
{
  if (!resolve()) {
    if (size != 0 && n > SIZE_MAX / size)
      return NULL;
    return arena_alloc(n * size); /* static, hence zeroed */
  }
  return inject() ? NULL : next_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
  if (!resolve() || in_arena(p)) {
    void *q = resolve() ? next_malloc(n) : arena_alloc(n);
    if (q != NULL && p != NULL) {
      size_t old;
      memcpy(&old, (char *)p - sizeof old, sizeof old);
      memcpy(q, p, old < n ? old : n);
    }
    return q;
  }
  return inject() ? NULL : next_realloc(p, n);
}

void free(void *p)
{
  if (p == NULL || in_arena(p))
    return;
  if (resolve())
    next_free(p);
}

void fm_arm(unsigned long n, int persist)
{
  atomic_store(&armed_pid, 0);
  atomic_store(&calls, 0);
  atomic_store(&failures, 0);
  atomic_store(&nth, n);
  atomic_store(&persistent, persist);
  atomic_store(&armed_pid, (int)getpid());
}

void fm_disarm(void)
{
  atomic_store(&armed_pid, 0);
}

unsigned long fm_calls(void)
{
  return atomic_load(&calls);
}

unsigned long fm_failures(void)
{
  return atomic_load(&failures);
}

long fm_heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  struct mallinfo2 mi = mallinfo2();
  return (long)(mi.uordblks + mi.hblkhd);
#else
  return 0;
#endif
}

/*
 * The test program's allocator functions: they forward to the next allocator
 * in the lookup order (libc's, or a sanitizer's), count the bytes out, and
 * fail the allocations fm_arm asks for.  See failmalloc.h.
 *
 * The next allocator is found with dlsym(RTLD_NEXT), once the program's
 * constructors run (a sanitizer's allocator is not ready before), and dlsym
 * may itself allocate: until then and meanwhile, allocations come from a
 * static arena, and free ignores pointers into it.
 */
#define _GNU_SOURCE
#include "failmalloc.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void (*free_fn)(void *);
typedef int (*memalign_fn)(void **, size_t, size_t);
typedef size_t (*usable_fn)(void *);

static malloc_fn next_malloc;
static calloc_fn next_calloc;
static realloc_fn next_realloc;
static free_fn next_free;
static memalign_fn next_posix_memalign;
static usable_fn next_usable;
static atomic_int started;       /* constructors run: dlsym may be called */
static atomic_int resolved;      /* the pointers above are set */
static atomic_int resolving;     /* dlsym is running: use the arena */

static _Alignas(max_align_t) char arena[65536];
static size_t arena_used;        /* only while resolving: one thread */

static atomic_int armed_pid;     /* 0: disarmed */
static atomic_int persistent;    /* fail every allocation after the nth too */
static atomic_ulong nth;
static atomic_size_t over;       /* not 0: fail every allocation of at least
                                    this many bytes instead (nth unused) */
static atomic_ulong calls;
static atomic_ulong failures;
static atomic_long live_bytes;   /* handed out and not given back */

/*
 * Code that may run before a sanitizer is initialized must not be
 * instrumented by it: the arena path, and what leads to it.
 */
#define NO_SANITIZE                                                           \
  __attribute__((no_sanitize("address"), no_sanitize("undefined")))

/* Blocks of the arena carry their size just before them, for realloc. */
NO_SANITIZE static void *arena_alloc(size_t n)
{
  const size_t hdr = sizeof(max_align_t);
  n = (n + hdr - 1) / hdr * hdr;
  if (n > sizeof arena - arena_used - hdr)
    return NULL;
  char *p = arena + arena_used + hdr;
  ((size_t *)(void *)p)[-1] = n;
  arena_used += n + hdr;
  return p;
}

NO_SANITIZE static int in_arena(const void *p)
{
  return (const char *)p >= arena && (const char *)p < arena + sizeof arena;
}

NO_SANITIZE static int resolve(void)
{
  if (atomic_load(&resolved))
    return 1;
  if (!atomic_load(&started) || atomic_exchange(&resolving, 1))
    return 0; /* a nested call from dlsym itself */
  next_malloc = (malloc_fn)dlsym(RTLD_NEXT, "malloc");
  next_calloc = (calloc_fn)dlsym(RTLD_NEXT, "calloc");
  next_realloc = (realloc_fn)dlsym(RTLD_NEXT, "realloc");
  next_free = (free_fn)dlsym(RTLD_NEXT, "free");
  next_posix_memalign = (memalign_fn)dlsym(RTLD_NEXT, "posix_memalign");
  next_usable = (usable_fn)dlsym(RTLD_NEXT, "malloc_usable_size");
  if (!next_malloc || !next_calloc || !next_realloc || !next_free ||
      !next_posix_memalign || !next_usable)
    _exit(99); /* no allocator to forward to: nothing sensible to do */
  atomic_store(&resolved, 1);
  atomic_store(&resolving, 0);
  return 1;
}

__attribute__((constructor)) static void start(void)
{
  atomic_store(&started, 1);
  resolve();
}

/* 1 if this allocation, of size bytes, is the one (or one of those) to
 * fail. */
static int inject(size_t size)
{
  int pid = atomic_load_explicit(&armed_pid, memory_order_relaxed);
  if (pid == 0 || pid != (int)getpid())
    return 0;
  unsigned long n = atomic_fetch_add(&calls, 1) + 1;
  unsigned long want = atomic_load(&nth);
  size_t least = atomic_load(&over);
  if (least != 0 ? size >= least
                 : n == want || (n > want && atomic_load(&persistent))) {
    atomic_fetch_add(&failures, 1);
    errno = ENOMEM;
    return 1;
  }
  return 0;
}

/* Counts a block the next allocator handed out; returns it. */
static void *counted(void *p)
{
  if (p != NULL)
    atomic_fetch_add(&live_bytes, (long)next_usable(p));
  return p;
}

NO_SANITIZE void *malloc(size_t n)
{
  if (!resolve())
    return arena_alloc(n);
  return inject(n) ? NULL : counted(next_malloc(n));
}

NO_SANITIZE void *calloc(size_t n, size_t size)
{
  if (!resolve()) {
    if (size != 0 && n > SIZE_MAX / size)
      return NULL;
    return arena_alloc(n * size); /* static, hence zeroed */
  }
  /* An overflowing product is as large as any limit. */
  size_t total = size != 0 && n > SIZE_MAX / size ? SIZE_MAX : n * size;
  return inject(total) ? NULL : counted(next_calloc(n, size));
}

NO_SANITIZE void *realloc(void *p, size_t n)
{
  if (!resolve() || in_arena(p)) {
    void *q = resolve() ? counted(next_malloc(n)) : arena_alloc(n);
    if (q != NULL && p != NULL) {
      size_t old = ((const size_t *)p)[-1];
      memcpy(q, p, old < n ? old : n);
    }
    return q;
  }
  if (inject(n))
    return NULL;
  long old = p != NULL ? (long)next_usable(p) : 0;
  void *q = next_realloc(p, n);
  if (q != NULL)
    atomic_fetch_add(&live_bytes, (long)next_usable(q) - old);
  else if (n == 0 && p != NULL)
    atomic_fetch_sub(&live_bytes, old); /* realloc(p, 0) freed p */
  return q;
}

NO_SANITIZE int posix_memalign(void **out, size_t align, size_t n)
{
  if (!resolve())
    return ENOMEM;
  if (inject(n))
    return ENOMEM;
  int rc = next_posix_memalign(out, align, n);
  if (rc == 0)
    counted(*out);
  return rc;
}

void *aligned_alloc(size_t align, size_t n)
{
  void *p;
  return posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align,
                        n) == 0 ? p : NULL;
}

void *memalign(size_t align, size_t n)
{
  return aligned_alloc(align, n);
}

/* libc's call malloc, but a sanitizer's interceptors would not. */
static char *copy_of(const char *str, size_t len)
{
  char *copy = malloc(len + 1);
  if (copy != NULL) {
    memcpy(copy, str, len);
    copy[len] = '\0';
  }
  return copy;
}

char *strdup(const char *str)
{
  return copy_of(str, strlen(str));
}

char *strndup(const char *str, size_t n)
{
  return copy_of(str, strnlen(str, n));
}

NO_SANITIZE void free(void *p)
{
  if (p == NULL || in_arena(p) || !resolve())
    return;
  atomic_fetch_sub(&live_bytes, (long)next_usable(p));
  next_free(p);
}

void fm_arm(unsigned long n, int persist)
{
  atomic_store(&armed_pid, 0);
  atomic_store(&calls, 0);
  atomic_store(&failures, 0);
  atomic_store(&nth, n);
  atomic_store(&persistent, persist);
  atomic_store(&over, 0);
  atomic_store(&armed_pid, (int)getpid());
}

void fm_arm_over(size_t bytes)
{
  atomic_store(&armed_pid, 0);
  atomic_store(&calls, 0);
  atomic_store(&failures, 0);
  atomic_store(&over, bytes > 0 ? bytes : 1);
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
  return atomic_load(&live_bytes);
}

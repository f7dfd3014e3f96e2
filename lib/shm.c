/*
 * Shared memory for large arguments and results.  Each pool maps one
 * MAP_SHARED anonymous area before it forks the fork server, so every
 * worker has the same area at the same address.  It holds, in order:
 *
 *   tails   one cache line per slot: how far the parent has read that
 *           slot's ring (written by the parent only)
 *   stamps  one page per slot: the map item its worker runs and since
 *           when (written by that worker only), for per-item deadlines
 *   args    pages the parent allocates for large arguments: it copies an
 *           argument there once, and the TASK frame names the bytes
 *           (offset, length) instead of carrying them through the pipe
 *   rings   one per slot: the worker writes a large result there, and the
 *           RESULT frame names it (position, length)
 *
 * The fork server drops write access to all of it before it forks, and each
 * worker takes back write access to its own ring and stamp only: a stray
 * write from a task cannot reach another task's arguments.
 *
 * Only the parent allocates arguments, under the pool lock: first-fit over
 * a bitmap of pages, so live arguments stay low in the area; pages more than
 * FP__SHM_KEEP above the highest live one are handed back to the kernel when
 * they are freed.  A ring is written by its worker at positions that only
 * grow, and read by the parent in the same order; the worker never writes
 * over bytes the parent has not read (it sends through the pipe instead).
 * It keeps results in the ring's first FP__SHM_COMPACT bytes while they fit,
 * goes back to the beginning when there is room, and trims what lies beyond
 * the next result and FP__SHM_KEEP whenever the parent has read everything.
 * fp__ring_place's test in check_worker follows a model of exactly this.
 */
#include "forkpool-private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>
#endif

#define FP__SHM_LINE 64                /* a tail per cache line */

/*
 * Under valgrind the parent marks the argument pages and the rings
 * unaddressable while nothing of its own lives there, as a custom allocator
 * would.  memcheck then catches a stray read of a freed argument, and,
 * above all, the leak check at exit of every process the caller forks (in
 * which MADV_DONTFORK left nothing mapped) skips the area 64 KiB at a time
 * instead of faulting on each of its pages: minutes per fork otherwise.
 * Without valgrind these are no-ops.
 */
#ifdef HAVE_VALGRIND_MEMCHECK_H
#define VG_NOACCESS(a, n) ((void)VALGRIND_MAKE_MEM_NOACCESS((a), (n)))
#define VG_UNDEFINED(a, n) ((void)VALGRIND_MAKE_MEM_UNDEFINED((a), (n)))
#define VG_DEFINED(a, n) ((void)VALGRIND_MAKE_MEM_DEFINED((a), (n)))
#else
#define VG_NOACCESS(a, n) ((void)(a), (void)(n))
#define VG_UNDEFINED(a, n) ((void)(a), (void)(n))
#define VG_DEFINED(a, n) ((void)(a), (void)(n))
#endif

int fp__shm_init(fp__shm *m, size_t args, unsigned nslots)
{
  memset(m, 0, sizeof *m);
  m->page = (size_t)sysconf(_SC_PAGESIZE);
  m->npages = args / m->page / 64 * 64; /* whole bitmap words */
  size_t tails = ((size_t)nslots * FP__SHM_LINE + m->page - 1) / m->page *
                 m->page;
  size_t stamps = (size_t)nslots * m->page; /* a page each: see above */
  size_t len = tails + stamps + m->npages * m->page +
               (size_t)nslots * FP__SHM_RING;
  m->used = calloc(m->npages / 64, sizeof *m->used);
  if (m->used == NULL)
    return FP_ENOMEM;
  /* Pages are only allocated when touched: the area costs address space. */
  void *base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    /* Not fatal: everything travels through the pipes instead. */
    free(m->used);
    memset(m, 0, sizeof *m);
    return 0;
  }
  m->base = base;
  m->len = len;
  m->stamps = m->base + tails;
  m->args = m->stamps + stamps;
  m->args_len = m->npages * m->page;
  m->rings = m->args + m->args_len;
  m->nslots = nslots;
  return 0;
}

void fp__shm_private(fp__shm *m)
{
#ifdef MADV_DONTFORK
  /* The caller's own children need not share it. */
  if (m->base != NULL)
    (void)madvise(m->base, m->len, MADV_DONTFORK);
#endif
  /* The fork server has its own view of the area by now. */
  if (m->base != NULL) {
    VG_NOACCESS(m->args, m->args_len);
    VG_NOACCESS(m->rings, (size_t)m->nslots * FP__SHM_RING);
  }
}

void fp__shm_unseen(const fp__shm *m)
{
#ifdef HAVE_VALGRIND_MEMCHECK_H
  /* Valgrind's leak check at exit reads every page it believes mapped, a
   * fault each for hundreds of MiB of address space: seconds per process.
   * Marked unaddressable, it skips the area 64 KiB at a time. */
  if (m != NULL && m->base != NULL)
    VG_NOACCESS(m->base, m->len);
#else
  (void)m;
#endif
}

void fp__shm_destroy(fp__shm *m)
{
  if (m->base != NULL)
    munmap(m->base, m->len);
  free(m->used);
  memset(m, 0, sizeof *m);
}

void fp__shm_forget(fp__shm *m)
{
  /* A forked child: MADV_DONTFORK left nothing mapped at base. */
  free(m->used);
  memset(m, 0, sizeof *m);
}

/* --- Arguments ---------------------------------------------------------------- */

/* The first page at or after i whose bit is set (set == 1) or clear
 * (set == 0); npages if none. */
static size_t next_page(const fp__shm *m, size_t i, int set)
{
  while (i < m->npages) {
    uint64_t w = m->used[i / 64];
    if (!set)
      w = ~w;
    w >>= i % 64;
    if (w != 0)
      return i + (size_t)__builtin_ctzll(w);
    i = (i / 64 + 1) * 64;
  }
  return m->npages;
}

static void mark(fp__shm *m, size_t i, size_t n, int set)
{
  for (size_t k = i; k < i + n; k++) {
    uint64_t bit = (uint64_t)1 << (k % 64);
    if (set)
      m->used[k / 64] |= bit;
    else
      m->used[k / 64] &= ~bit;
  }
}

int fp__shm_alloc(fp__shm *m, size_t len, size_t *off)
{
  if (m->base == NULL || len == 0 || len > m->args_len)
    return FP_ENOMEM;
  size_t need = (len + m->page - 1) / m->page;
  for (size_t i = next_page(m, 0, 0); i + need <= m->npages;) {
    size_t end = next_page(m, i, 1);
    if (end - i >= need) {
      mark(m, i, need, 1);
      if (i + need > m->touched)
        m->touched = i + need;
      m->in_use += need * m->page;
      *off = i * m->page;
      VG_UNDEFINED(m->args + *off, need * m->page);
      return 0;
    }
    i = next_page(m, end, 0);
  }
  return FP_ENOMEM;
}

/* One past the highest allocated page below m->touched; 0 if none. */
static size_t top_page(const fp__shm *m)
{
  for (size_t w = (m->touched + 63) / 64; w > 0; w--)
    if (m->used[w - 1] != 0)
      return (w - 1) * 64 + 64 - (size_t)__builtin_clzll(m->used[w - 1]);
  return 0;
}

void fp__shm_free(fp__shm *m, size_t off, size_t len)
{
  size_t first = off / m->page, n = (len + m->page - 1) / m->page;
  mark(m, first, n, 0);
  m->in_use -= n * m->page;
  VG_NOACCESS(m->args + first * m->page, n * m->page);
  size_t keep = FP__SHM_KEEP / m->page;
  if (m->touched <= keep || first + n + keep < m->touched)
    return; /* nothing to give back, or not near the top */
  size_t from = top_page(m) + keep;
  if (from >= m->touched)
    return;
#ifdef MADV_REMOVE
  /* Frees the pages for every process that maps them; they read as zeros
   * if touched again. */
  if (madvise(m->args + from * m->page, (m->touched - from) * m->page,
              MADV_REMOVE) == 0)
    m->touched = from;
#endif
}

/* --- Result rings ------------------------------------------------------------- */

static _Atomic uint64_t *tail_of(char *base, unsigned slot)
{
  return (_Atomic uint64_t *)(void *)(base + (size_t)slot * FP__SHM_LINE);
}

void fp__ring_open(fp__ring *r, const fp__worker_cfg *cfg, unsigned slot)
{
  memset(r, 0, sizeof *r);
  const fp__shm *m = cfg->shm;
  if (m == NULL || m->base == NULL || slot >= m->nslots)
    return;
  char *base = m->rings + (size_t)slot * FP__SHM_RING;
  /* The fork server made the whole area read-only; this ring is ours. */
  if (mprotect(base, FP__SHM_RING, PROT_READ | PROT_WRITE) != 0)
    return;
  r->base = base;
  r->tail = tail_of(m->base, slot);
}

int fp__ring_place(fp__ring *r, size_t len, uint64_t *pos)
{
  if (r->base == NULL || len > FP__SHM_RING)
    return FP_ENOMEM;
  uint64_t read = atomic_load_explicit(r->tail, memory_order_acquire);
  int empty = read == r->head;
  /* Everything before from has been read, or is the gap skipped to start
   * again at the ring's beginning: never written, never read.  Unread
   * bytes span less than a ring, so at most the last gap lies ahead. */
  uint64_t from = read == r->gap_from ? r->gap_to : read;
  /* After the newest result while that stays in the first
   * FP__SHM_COMPACT bytes; else at the ring's beginning if there is room
   * there, so that the pages in use stay few; else after the newest.
   * Position q reuses the bytes of q - RING: the new bytes must not reach
   * those of anything not yet read. */
  uint64_t start = (r->head + FP__SHM_RING - 1) / FP__SHM_RING * FP__SHM_RING;
  size_t end = (size_t)(r->head % FP__SHM_RING) + len;
  int fits_end = end <= FP__SHM_RING && r->head + len - from <= FP__SHM_RING;
  int fits_start = start + len - from <= FP__SHM_RING;
  int compact = fits_end && end <= FP__SHM_COMPACT;
  if (!empty && !compact && !fits_start && !fits_end)
    return FP_ENOMEM;
  uint64_t at = empty || (!compact && fits_start) ? start : r->head;
  if (at != r->head) {
    r->gap_from = r->head;
    r->gap_to = at;
  }
  size_t keep = len > FP__SHM_KEEP ? len : FP__SHM_KEEP;
  keep = (keep + 4095) & ~(size_t)4095;
  if (empty && r->touched > keep) {
    /* Everything read, and this one starts at the beginning: give back
     * what earlier results left resident beyond it. */
#ifdef MADV_REMOVE
    if (madvise(r->base + keep, r->touched - keep, MADV_REMOVE) == 0)
      r->touched = keep;
#endif
  }
  end = (size_t)(at % FP__SHM_RING) + len;
  if (end > r->touched)
    r->touched = end;
  r->head = at + len;
  *pos = at;
  return 0;
}

char *fp__ring_at(const fp__ring *r, uint64_t pos)
{
  return r->base + pos % FP__SHM_RING;
}

const char *fp__shm_ring_read(const fp__shm *m, unsigned slot, uint64_t tail,
                              uint64_t pos, size_t len)
{
  if (m->base == NULL || slot >= m->nslots || pos < tail || len == 0 ||
      pos % FP__SHM_RING + len > FP__SHM_RING)
    return NULL;
  const char *at = m->rings + (size_t)slot * FP__SHM_RING + pos % FP__SHM_RING;
  VG_DEFINED(at, len); /* the worker wrote it */
  return at;
}

void fp__shm_ring_done(fp__shm *m, unsigned slot, uint64_t tail)
{
  if (m->base == NULL || slot >= m->nslots)
    return;
  _Atomic uint64_t *t = tail_of(m->base, slot);
  char *ring = m->rings + (size_t)slot * FP__SHM_RING;
  uint64_t old = atomic_load_explicit(t, memory_order_relaxed);
  atomic_store_explicit(t, tail, memory_order_release);
  /* Only what was read: a relay in this process (a remote pool's) may be
   * writing the next result further on meanwhile. */
  if (tail < old || tail - old >= FP__SHM_RING) {
    VG_NOACCESS(ring, FP__SHM_RING); /* a new worker: nothing is written */
  } else if (tail > old) {
    size_t from = (size_t)(old % FP__SHM_RING), n = (size_t)(tail - old);
    size_t first = n < FP__SHM_RING - from ? n : FP__SHM_RING - from;
    VG_NOACCESS(ring + from, first);
    VG_NOACCESS(ring, n - first);
  }
}

void fp__ring_attach(fp__ring *r, const fp__shm *m, unsigned slot)
{
  memset(r, 0, sizeof *r);
  if (m == NULL || m->base == NULL || slot >= m->nslots)
    return;
  r->base = m->rings + (size_t)slot * FP__SHM_RING;
  r->tail = tail_of(m->base, slot);
}

void fp__shm_lend(const void *at, size_t len)
{
  VG_UNDEFINED(at, len);
}

/* --- Stamps: which map item a worker runs ------------------------------------ */

/*
 * A sequence lock, as the kernel's seqcount: the worker makes seq odd,
 * writes, makes it even again; the parent retries while seq is odd or has
 * moved.  The worker may be killed between the two, so the parent gives up
 * after a few tries rather than wait.
 */
typedef struct fp__stamp {
  _Atomic uint64_t seq;
  _Atomic int64_t pid;   /* the worker that writes it: a stamp left by a dead
                            one is not read as its successor's */
  _Atomic uint64_t id;   /* the task (a map chunk) */
  _Atomic uint64_t item; /* its item being run; its nitems once all are */
  _Atomic int64_t since; /* when that item started, CLOCK_MONOTONIC ns */
  _Atomic uint64_t user_us; /* the worker's own CPU time, as of its last */
  _Atomic uint64_t sys_us;  /*   answer (getrusage RUSAGE_SELF) */
} fp__stamp;

static fp__stamp *stamp_of(const fp__shm *m, unsigned slot)
{
  return (fp__stamp *)(void *)(m->stamps + (size_t)slot * m->page);
}

static void stamp_write(fp__stamp *st, int64_t pid, uint64_t id,
                        uint64_t item, int64_t since)
{
  uint64_t seq = atomic_load_explicit(&st->seq, memory_order_relaxed);
  atomic_store_explicit(&st->seq, seq + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&st->pid, pid, memory_order_relaxed);
  atomic_store_explicit(&st->id, id, memory_order_relaxed);
  atomic_store_explicit(&st->item, item, memory_order_relaxed);
  atomic_store_explicit(&st->since, since, memory_order_relaxed);
  atomic_store_explicit(&st->seq, seq + 2, memory_order_release);
}

fp__stamp *fp__stamp_open(const fp__shm *m, unsigned slot)
{
  if (m == NULL || m->base == NULL || slot >= m->nslots)
    return NULL;
  fp__stamp *st = stamp_of(m, slot);
  /* The fork server made the whole area read-only; this page is ours.  If
   * it stays read-only, the parent sees no stamp with our pid and gives a
   * chunk n times the deadline instead. */
  if (mprotect(st, m->page, PROT_READ | PROT_WRITE) != 0)
    return NULL;
  /* The last worker's CPU time first, so that no reader takes it for
   * ours: it was counted at that worker's exit. */
  fp__stamp_cpu(st, 0, 0);
  stamp_write(st, getpid(), 0, 0, 0);
  return st;
}

void fp__stamp_set(fp__stamp *st, uint64_t id, uint64_t item, int64_t since)
{
  stamp_write(st, atomic_load_explicit(&st->pid, memory_order_relaxed), id,
              item, since);
}

int fp__stamp_read(const fp__shm *m, unsigned slot, pid_t pid, uint64_t *id,
                   uint64_t *item, int64_t *since)
{
  if (m->base == NULL || slot >= m->nslots)
    return FP_EAGAIN;
  const fp__stamp *st = stamp_of(m, slot);
  for (int tries = 0; tries < 64; tries++) {
    uint64_t seq = atomic_load_explicit(&st->seq, memory_order_acquire);
    int64_t who = atomic_load_explicit(&st->pid, memory_order_relaxed);
    *id = atomic_load_explicit(&st->id, memory_order_relaxed);
    *item = atomic_load_explicit(&st->item, memory_order_relaxed);
    *since = atomic_load_explicit(&st->since, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    if (seq % 2 == 0 &&
        atomic_load_explicit(&st->seq, memory_order_relaxed) == seq)
      return who == pid && pid > 0 ? 0 : FP_EAGAIN;
  }
  return FP_EAGAIN;
}

/* --- Stamps: the worker's CPU time -------------------------------------------- */

void fp__stamp_cpu(fp__stamp *st, uint64_t user_us, uint64_t sys_us)
{
  uint64_t seq = atomic_load_explicit(&st->seq, memory_order_relaxed);
  atomic_store_explicit(&st->seq, seq + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&st->user_us, user_us, memory_order_relaxed);
  atomic_store_explicit(&st->sys_us, sys_us, memory_order_relaxed);
  atomic_store_explicit(&st->seq, seq + 2, memory_order_release);
}

int fp__stamp_read_cpu(const fp__shm *m, unsigned slot, pid_t pid,
                       uint64_t *user_us, uint64_t *sys_us)
{
  *user_us = *sys_us = 0;
  if (m->base == NULL || slot >= m->nslots || pid <= 0)
    return FP_EAGAIN;
  const fp__stamp *st = stamp_of(m, slot);
  for (int tries = 0; tries < 64; tries++) {
    uint64_t seq = atomic_load_explicit(&st->seq, memory_order_acquire);
    int64_t who = atomic_load_explicit(&st->pid, memory_order_relaxed);
    uint64_t u = atomic_load_explicit(&st->user_us, memory_order_relaxed);
    uint64_t y = atomic_load_explicit(&st->sys_us, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    if (seq % 2 != 0 ||
        atomic_load_explicit(&st->seq, memory_order_relaxed) != seq)
      continue;
    if (who != pid)
      return FP_EAGAIN; /* a dead worker's figures are counted from its exit */
    *user_us = u;
    *sys_us = y;
    return 0;
  }
  return FP_EAGAIN;
}

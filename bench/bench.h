/*
 * forkpool-bench: shared declarations.  bench.c runs the workloads and
 * reports; workloads.c measures forkpool; baseline.c measures the same work
 * done by hand with fork() and pipes; primes.c is the CPU-bound kernel of W4
 * (serial and OpenMP).
 */
#ifndef FORKPOOL_BENCH_H
#define FORKPOOL_BENCH_H

/* First: config.h turns on _GNU_SOURCE (F_SETPIPE_SZ, close_range). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <forkpool.h>

#define BENCH_MAX_SAMPLES 64

/* What one run measures; --quick shrinks every count. */
typedef struct bench_cfg {
  int quick;
  int reps;                /* repetitions of the fast workloads */
  int reps_slow;           /* repetitions of the slowest: W2 chunksize 1 */
  size_t w1_tasks;         /* W1: individual submits */
  size_t w2_items;         /* W2: items mapped */
  size_t w3_trips;         /* W3: sequential round trips */
  uint32_t w4_limit;       /* W4: count primes below this */
  unsigned w4_ranges;      /* W4: ranges (tasks) */
  size_t w5_bytes;         /* W5: payload size */
  size_t w5_trips;         /* W5: round trips */
  int w6_reps;             /* W6: crashes per pool */
  int w7_reps;             /* W7: pools created and destroyed */
  size_t mem_pending;      /* Memory: pending futures */
  size_t mem_lazy_small;   /* Memory: lazy map, short */
  size_t mem_lazy_large;   /* Memory: lazy map, long */
  unsigned max_inflight;   /* fp_pool_options.max_inflight; 0: default */
  int shm_off;             /* fp_pool_options.shm_args FP_SHM_OFF */
  int no_baseline;         /* profiling forkpool alone: skip baselines */
  long w2_chunksize;       /* profiling W2: only this chunksize; -1: all */
  size_t w8_tasks;         /* W8: submits per repetition and worker count */
  size_t w8_items;         /* W8: map items per repetition and count */
  int w8_reps;             /* W8: repetitions of the CPU-time figures */
  int w8_pools;            /* W8: 256-worker pools created and destroyed */
  size_t io_tasks;         /* Modes: 1 ms sleeps, I/O-bound row */
} bench_cfg;

/* Samples of one figure. */
typedef struct series {
  double v[BENCH_MAX_SAMPLES];
  int n;
} series;

void series_add(series *s, double x);
double series_median(const series *s);
double series_min(const series *s);

/*
 * One reported figure.  ratio is median / the baseline's median (NAN
 * without a baseline); a target, when set, says whether it was met.
 */
typedef struct figure {
  char name[80];
  char unit[16];
  double med, min, max;
  int n;
  const struct figure *base; /* borrowed; NULL for a baseline */
  double ratio;
  char target[120];          /* "" when this figure has no target */
  int met;                   /* 1 met, 0 missed, -1 no target */
  char note[160];            /* how it was measured, for the table */
} figure;

/* Records and prints "NAME: median UNIT (min–max, n) ratio X.XX vs ...". */
figure *figure_add(const char *name, const char *unit, const series *s,
                   const figure *base, const char *note);
/* Records the verdict of a target for f. */
void figure_target(figure *f, int met, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints a line that is not a figure (progress, setup). */
void bench_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* For plots (--data DIR): DIR/name opened for writing, or NULL without
 * --data or if it cannot be opened (said once on stdout).  The caller
 * closes it. */
FILE *bench_data(const char *name);

/* --- Clocks and /proc ------------------------------------------------------ */

double now_s(void);                      /* CLOCK_MONOTONIC, seconds */
/* A field of /proc/<pid>/status or smaps_rollup in kB; -1 if absent. */
long proc_kb(pid_t pid, const char *file, const char *field);
/* Private_Clean + Private_Dirty of pid in kB; -1 if unreadable. */
long private_kb(pid_t pid);
/* Resets this process's VmHWM to its VmRSS (clear_refs 5); 0 or -1. */
int reset_peak_rss(void);

/* --- CPU affinity (W3 pinned): the process is single-threaded, so pinning
 * the calling thread pins the process, and its children inherit it ------- */

/* The first two CPUs this process may run on: how many there are (0..2). */
int cpus_first_two(int *a, int *b);
/* Pins this process to one CPU; the first call saves the mask pin_restore
 * puts back.  0 or -errno. */
int pin_cpu(int cpu);
void pin_restore(void);
/* Whether /proc/<pid>/status says pid may run on cpu alone. */
int pinned_to(pid_t pid, int cpu);
/* The parent's CPU time so far, user + system, in seconds (getrusage). */
double cpu_self_s(void);

/* --- Pipes ------------------------------------------------------------------ */

int write_all_fd(int fd, const void *buf, size_t len);
int read_all_fd(int fd, void *buf, size_t len);

/* --- Tasks (workloads.c), run in forkpool's workers -------------------------- */

extern const fp_task bench_tasks[];

/* --- W4 kernel (primes.c) ---------------------------------------------------- */

uint64_t primes_in(uint32_t lo, uint32_t hi); /* trial division, [lo, hi) */
int have_openmp(void);
/* Seconds for the OpenMP count over ranges with threads threads; *count
 * gets the count.  Runs in a forked child so this process never becomes
 * multi-threaded. */
double primes_openmp(uint32_t limit, unsigned ranges, unsigned threads,
                     uint64_t *count);

/* --- Baselines (baseline.c): each returns its figure's sample ---------------- */

/* Per-item (batch 1) or batched messages through 2 pre-forked workers that
 * square 64-bit integers; items per second. */
double base_stream(size_t items, size_t batch, uint64_t *sum);
/* Mean round trip of a 16-byte ping-pong with poll() before each read, µs.
 * cpu_child >= 0: the child is forked while this process is pinned there
 * (it inherits that CPU), then this process is pinned to cpu_parent. */
double base_pingpong(size_t trips, int cpu_parent, int cpu_child);
/* MiB/s of payload bytes (both ways) echoed through a child. */
double base_echo(size_t bytes, size_t trips);
/* Fork n children, read a ready byte from each, one 16-byte round trip:
 * *start and *stop (close and reap) in seconds; *priv_kb, if not NULL, the
 * private memory of the first child after its round trip. */
void base_startup(unsigned n, double *start, double *stop, long *priv_kb);
double base_startup_chain(unsigned n);
/* A child crashes (SIGSEGV): *detect is until EOF and reap, *next until a
 * round trip with a freshly forked child (respawn) or the surviving one. */
void base_crash(int respawn, double *detect, double *next);
/* items x*x through a mutex-and-condition-variable queue served by threads
 * threads, results read in order; pingpong: each item waited for before the
 * next is queued.  Seconds for the loop; *sum gets the sum of the results.
 * The threads are joined before it returns. */
double base_tqueue(size_t items, unsigned threads, int pingpong,
                   uint64_t *sum);

/* --- Workloads (workloads.c) --------------------------------------------------- */

/* Pools the workloads create use this max_inflight (0: the default). */
/* Options for every pool: 0 for the library's defaults. */
void pool_tuning(unsigned max_inflight, size_t shm_args);
void run_w1(const bench_cfg *c);
void run_w2(const bench_cfg *c);
void run_w3(const bench_cfg *c);
void run_w4(const bench_cfg *c);
void run_w5(const bench_cfg *c);
void run_w6(const bench_cfg *c);
void run_w7(const bench_cfg *c);
void run_w8(const bench_cfg *c);
void run_memory(const bench_cfg *c);
/* Thread and inline modes against a thread queue and a direct call, and an
 * I/O-bound row: 16 threads against 2 processes (issue 16). */
void run_modes(const bench_cfg *c);

/* Dies with a message: a benchmark that failed has nothing to report. */
void die(const char *what, int err) __attribute__((noreturn));

#endif

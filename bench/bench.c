/*
 * forkpool-bench: measures forkpool against hand-written fork-and-pipe
 * baselines on the machine it runs on (issue 6).  Every workload runs its
 * physical baseline in the same run, interleaved repetition by repetition,
 * so that a busy neighbour slows both alike; each figure is the median of
 * its repetitions.
 *
 *   forkpool-bench [--quick] [--reps N] [--only w1,w2,...,w8,modes,mem]
 *                  [--markdown FILE] [--data DIR]
 *
 * One line per figure goes to stdout:
 *   NAME: median UNIT (min–max, n) ratio X.XX vs baseline (ITS NAME)
 * then the verdict of each target; with --markdown, the table of figures and
 * targets goes to FILE; with --data, W4 and W8 write their curves to
 * DIR/w4.dat and DIR/w8.dat for bench/plot.gp.  --quick runs every workload with tiny counts in a
 * second or two: a smoke test, not a measurement.  For profiling (see
 * bench/NOTES.md): --no-baseline runs forkpool alone, --chunksize N runs W2
 * at one chunk size, --max-inflight N and --lazy-items N change the pools'
 * pipelining depth and the long lazy map's length.  A missed target is a
 * finding, not a failure: the exit status is 0 unless a measurement failed.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define MAX_FIGURES 128

static figure figures[MAX_FIGURES];
static int nfigures;

/* --- Samples and figures ----------------------------------------------------- */

void series_add(series *s, double x)
{
  if (s->n < BENCH_MAX_SAMPLES)
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double series_min(const series *s)
{
  double m = s->n ? s->v[0] : NAN;
  for (int i = 1; i < s->n; i++)
    m = s->v[i] < m ? s->v[i] : m;
  return m;
}

double series_median(const series *s)
{
  if (s->n == 0)
    return NAN;
  double v[BENCH_MAX_SAMPLES];
  memcpy(v, s->v, sizeof(double) * (size_t)s->n);
  qsort(v, (size_t)s->n, sizeof v[0], cmp_double);
  return s->n % 2 ? v[s->n / 2] : (v[s->n / 2 - 1] + v[s->n / 2]) / 2;
}

/* A number with 3 or 4 significant digits, without exponent when sane. */
static void fmt_num(char *buf, size_t len, double x)
{
  double a = fabs(x);
  if (isnan(x))
    snprintf(buf, len, "n/a");
  else if (a >= 1e9)
    snprintf(buf, len, "%.3g", x);
  else if (a >= 1000)
    snprintf(buf, len, "%.0f", x);
  else if (a >= 100)
    snprintf(buf, len, "%.1f", x);
  else if (a >= 10)
    snprintf(buf, len, "%.2f", x);
  else
    snprintf(buf, len, "%.3f", x);
}

figure *figure_add(const char *name, const char *unit, const series *s,
                   const figure *base, const char *note)
{
  if (nfigures == MAX_FIGURES)
    die("too many figures", 0);
  figure *f = &figures[nfigures++];
  memset(f, 0, sizeof *f);
  snprintf(f->name, sizeof f->name, "%s", name);
  snprintf(f->unit, sizeof f->unit, "%s", unit);
  snprintf(f->note, sizeof f->note, "%s", note ? note : "");
  f->n = s->n;
  f->med = series_median(s);
  f->min = f->max = s->n ? s->v[0] : NAN;
  for (int i = 1; i < s->n; i++) {
    f->min = s->v[i] < f->min ? s->v[i] : f->min;
    f->max = s->v[i] > f->max ? s->v[i] : f->max;
  }
  if (base != NULL && base->n == 0)
    base = NULL; /* --no-baseline */
  f->base = base;
  f->ratio = base && base->med != 0 ? f->med / base->med : NAN;
  f->met = -1;

  char med[32], lo[32], hi[32];
  fmt_num(med, sizeof med, f->med);
  fmt_num(lo, sizeof lo, f->min);
  fmt_num(hi, sizeof hi, f->max);
  printf("%s: %s %s (%s\xe2\x80\x93%s, %d)", f->name, med, f->unit, lo, hi,
         f->n);
  if (base != NULL)
    printf(" ratio %.2f vs baseline (%s)", f->ratio, base->name);
  printf("\n");
  fflush(stdout);
  return f;
}

void figure_target(figure *f, int met, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->target, sizeof f->target, fmt, ap);
  va_end(ap);
  f->met = met;
}

/* --data DIR: where the workloads write their plot data; NULL: nowhere. */
static const char *data_dir;

FILE *bench_data(const char *name)
{
  if (data_dir == NULL)
    return NULL;
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", data_dir, name);
  FILE *fp = fopen(path, "w");
  if (fp == NULL) {
    bench_log("cannot write %s: %s (no plot from it)", path, strerror(errno));
    return NULL;
  }
  /* When, and how busy the machine was: the plot shows it. */
  time_t t = time(NULL);
  char date[64];
  double load[3] = {NAN, NAN, NAN};
  strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&t));
  (void)getloadavg(load, 3);
  fprintf(fp, "# made %s, load %.2f %.2f %.2f, forkpool %s\n", date, load[0],
          load[1], load[2], fp_version());
  return fp;
}

void bench_log(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  printf("# ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  fflush(stdout);
}

void die(const char *what, int err)
{
  fprintf(stderr, "forkpool-bench: %s%s%s\n", what, err ? ": " : "",
          err ? fp_strerror(err) : "");
  exit(1);
}

/* --- Clocks, /proc and pipes --------------------------------------------------- */

double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

long proc_kb(pid_t pid, const char *file, const char *field)
{
  char path[64], line[256];
  if (pid > 0)
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
  else
    snprintf(path, sizeof path, "/proc/self/%s", file);
  FILE *fp = fopen(path, "r");
  if (fp == NULL)
    return -1;
  size_t flen = strlen(field);
  long kb = -1;
  while (fgets(line, sizeof line, fp) != NULL)
    if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
      kb = strtol(line + flen + 1, NULL, 10);
      break;
    }
  fclose(fp);
  return kb;
}

long private_kb(pid_t pid)
{
  long c = proc_kb(pid, "smaps_rollup", "Private_Clean");
  long d = proc_kb(pid, "smaps_rollup", "Private_Dirty");
  return c < 0 || d < 0 ? -1 : c + d;
}

int reset_peak_rss(void)
{
  int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  int rc = write(fd, "5", 1) == 1 ? 0 : -1;
  close(fd);
  return rc;
}

/* --- CPU affinity and CPU time --------------------------------------------- */

static cpu_set_t saved_mask;
static int mask_saved;

int cpus_first_two(int *a, int *b)
{
  cpu_set_t set;
  int n = 0;
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    return 0;
  for (int cpu = 0; cpu < CPU_SETSIZE && n < 2; cpu++)
    if (CPU_ISSET(cpu, &set))
      *(n++ == 0 ? a : b) = cpu;
  return n;
}

int pin_cpu(int cpu)
{
  cpu_set_t set;
  if (!mask_saved) {
    if (sched_getaffinity(0, sizeof saved_mask, &saved_mask) != 0)
      return -errno;
    mask_saved = 1;
  }
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : -errno;
}

void pin_restore(void)
{
  if (mask_saved && sched_setaffinity(0, sizeof saved_mask, &saved_mask) != 0)
    die("sched_setaffinity: cannot restore the CPU mask", -errno);
}

int pinned_to(pid_t pid, int cpu)
{
  char path[64], line[256], want[32];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  snprintf(want, sizeof want, "%d", cpu);
  FILE *fp = fopen(path, "r");
  if (fp == NULL)
    return 0;
  int ok = 0;
  while (fgets(line, sizeof line, fp) != NULL)
    if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
      char *v = line + 18;
      v += strspn(v, " \t");
      v[strcspn(v, "\n")] = '\0';
      ok = strcmp(v, want) == 0;
      break;
    }
  fclose(fp);
  return ok;
}

double cpu_self_s(void)
{
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    die("getrusage", -errno);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

int write_all_fd(int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int read_all_fd(int fd, void *buf, size_t len)
{
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* --- The Markdown table ----------------------------------------------------------- */

/*
 * Other processes on the machine: the share of the last 10 s in which some
 * runnable task waited for a CPU (PSI).  Parallel figures (W4) mean little
 * when it is high.
 */
static const char *cpu_pressure(char *buf, size_t len)
{
  char line[256];
  double avg10 = -1;
  FILE *fp = fopen("/proc/pressure/cpu", "r");
  if (fp != NULL) {
    if (fgets(line, sizeof line, fp) != NULL)
      (void)sscanf(line, "some avg10=%lf", &avg10);
    fclose(fp);
  }
  if (avg10 < 0)
    snprintf(buf, len, "CPU pressure unknown");
  else
    snprintf(buf, len, "CPU pressure %.0f%% (some, avg10)", avg10);
  return buf;
}

static void cpu_model(char *buf, size_t len)
{
  char line[256];
  snprintf(buf, len, "unknown CPU");
  FILE *fp = fopen("/proc/cpuinfo", "r");
  if (fp == NULL)
    return;
  while (fgets(line, sizeof line, fp) != NULL) {
    char *colon = strchr(line, ':');
    if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
      colon += 1 + (colon[1] == ' ');
      colon[strcspn(colon, "\n")] = '\0';
      snprintf(buf, len, "%s", colon);
      break;
    }
  }
  fclose(fp);
}

static void machine(char *buf, size_t len)
{
  struct utsname u;
  char cpu[128];
  double load[3] = {0, 0, 0};
  cpu_model(cpu, sizeof cpu);
  if (uname(&u) != 0)
    memset(&u, 0, sizeof u);
  if (getloadavg(load, 3) < 0)
    load[0] = NAN;
  char pressure[48];
  snprintf(buf, len, "%s %s %s, %s, %ld online CPUs, load %.2f and %s at "
           "start", u.sysname, u.release, u.machine, cpu,
           sysconf(_SC_NPROCESSORS_ONLN), load[0],
           cpu_pressure(pressure, sizeof pressure));
}

static void md_cell(FILE *fp, double x, const char *unit)
{
  char b[32];
  fmt_num(b, sizeof b, x);
  fprintf(fp, " %s %s |", b, unit);
}

static int write_markdown(const char *path, const bench_cfg *c,
                          const char *mach, double secs)
{
  FILE *fp = fopen(path, "w");
  if (fp == NULL)
    return -1;
  time_t t = time(NULL);
  char date[64];
  strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&t));
  fprintf(fp, "# forkpool benchmark\n\n");
  fprintf(fp, "forkpool %s, `forkpool-bench%s`, %s, %.0f s.  \n",
          fp_version(), c->quick ? " --quick" : "", date, secs);
  fprintf(fp, "Machine: %s.  \n", mach);
  fprintf(fp, "Medians of n repetitions (column n); each baseline is "
          "measured in the same run, interleaved with its workload.  Ratio = "
          "median / the baseline's median.  2 workers unless a row says "
          "otherwise; library defaults (max_inflight %s, %s).\n\n",
          c->max_inflight ? "set by --max-inflight" : "automatic",
          c->shm_off ? "shared memory off by --shm-off"
                     : "large payloads in shared memory");
  fprintf(fp, "| Figure | Median | Min–max (n) | Baseline | Baseline median "
          "| Ratio | Target | Met |\n");
  fprintf(fp, "|---|---:|---:|---|---:|---:|---|:-:|\n");
  for (int i = 0; i < nfigures; i++) {
    const figure *f = &figures[i];
    char lo[32], hi[32];
    fmt_num(lo, sizeof lo, f->min);
    fmt_num(hi, sizeof hi, f->max);
    fprintf(fp, "| %s |", f->name);
    md_cell(fp, f->med, f->unit);
    fprintf(fp, " %s–%s (%d) |", lo, hi, f->n);
    if (f->base != NULL) {
      fprintf(fp, " %s |", f->base->name);
      md_cell(fp, f->base->med, f->base->unit);
      fprintf(fp, " %.2f |", f->ratio);
    } else {
      fprintf(fp, " – | – | – |");
    }
    fprintf(fp, " %s | %s |\n", f->target[0] ? f->target : "–",
            f->met < 0 ? "–" : f->met ? "yes" : "**no**");
  }
  int notes = 0;
  for (int i = 0; i < nfigures; i++)
    notes += figures[i].note[0] != '\0';
  if (notes > 0) {
    fprintf(fp, "\nHow each figure is measured:\n\n");
    for (int i = 0; i < nfigures; i++)
      if (figures[i].note[0] != '\0')
        fprintf(fp, "- %s: %s\n", figures[i].name, figures[i].note);
  }
  return fclose(fp) == 0 ? 0 : -1;
}

/* --- Options and main ------------------------------------------------------------------ */

static void cfg_full(bench_cfg *c)
{
  *c = (bench_cfg){
      .reps = 7, .reps_slow = 3,
      .w1_tasks = 100000, .w2_items = 1000000, .w3_trips = 10000,
      .w4_limit = 3000000, .w4_ranges = 64,
      .w5_bytes = 1 << 20, .w5_trips = 200,
      .w6_reps = 30, .w7_reps = 30,
      .mem_pending = 1000000,
      .mem_lazy_small = 1000000, .mem_lazy_large = 10000000,
      .w8_tasks = 50000, .w8_items = 100000, .w8_reps = 5, .w8_pools = 5,
      .io_tasks = 400,
  };
}

static void cfg_quick(bench_cfg *c)
{
  *c = (bench_cfg){
      .quick = 1, .reps = 2, .reps_slow = 1,
      .w1_tasks = 2000, .w2_items = 20000, .w3_trips = 500,
      .w4_limit = 200000, .w4_ranges = 64,
      .w5_bytes = 1 << 20, .w5_trips = 10,
      .w6_reps = 3, .w7_reps = 3,
      .mem_pending = 20000,
      .mem_lazy_small = 20000, .mem_lazy_large = 200000,
      .w8_tasks = 1000, .w8_items = 5000, .w8_reps = 1, .w8_pools = 1,
      .io_tasks = 32,
  };
}

static void usage(FILE *fp)
{
  fprintf(fp, "usage: forkpool-bench [--quick] [--reps N] "
              "[--only w1,w2,w3,w4,w5,w6,w7,w8,modes,mem] [--markdown FILE]\n"
              "  [--data DIR (plot data: w4.dat, w8.dat)]\n"
              "  for profiling: [--no-baseline] [--max-inflight N] "
              "[--shm-off] [--chunksize N (W2)] [--lazy-items N (Memory)]\n");
}

static int wanted(const char *only, const char *name)
{
  if (only == NULL)
    return 1;
  size_t n = strlen(name);
  for (const char *p = only; *p; p += strcspn(p, ","), p += *p == ',')
    if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\0'))
      return 1;
  return 0;
}

int main(int argc, char **argv)
{
  bench_cfg c;
  const char *only = NULL, *markdown = NULL;
  int reps = 0, inflight = 0, quick = 0, no_baseline = 0, shm_off = 0;
  long chunk = -1, lazy = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      quick = 1;
    } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--lazy-items") == 0 && i + 1 < argc) {
      lazy = atol(argv[++i]);
    } else if (strcmp(argv[i], "--chunksize") == 0 && i + 1 < argc) {
      chunk = atol(argv[++i]);
    } else if (strcmp(argv[i], "--no-baseline") == 0) {
      no_baseline = 1;
    } else if (strcmp(argv[i], "--shm-off") == 0) {
      shm_off = 1;
    } else if (strcmp(argv[i], "--max-inflight") == 0 && i + 1 < argc) {
      inflight = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      only = argv[++i];
    } else if (strcmp(argv[i], "--markdown") == 0 && i + 1 < argc) {
      markdown = argv[++i];
    } else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
      data_dir = argv[++i];
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (quick)
    cfg_quick(&c);
  else
    cfg_full(&c);
  c.no_baseline = no_baseline;
  c.w2_chunksize = chunk;
  if (lazy > 0)
    c.mem_lazy_large = (size_t)lazy;
  c.max_inflight = inflight > 0 ? (unsigned)inflight : 0;
  c.shm_off = shm_off;
  pool_tuning(c.max_inflight, shm_off ? FP_SHM_OFF : 0);
  if (reps > 0)
    c.reps = c.reps_slow = c.w8_reps =
        reps > BENCH_MAX_SAMPLES ? BENCH_MAX_SAMPLES : reps;
  setvbuf(stdout, NULL, _IOLBF, 0);

  char mach[768];
  machine(mach, sizeof mach);
  bench_log("forkpool %s on %s", fp_version(), mach);
  bench_log("%s: %d repetitions (W2 chunksize 1: %d; W6, W7: %d; Memory: "
            "1)%s", c.quick ? "quick smoke run, tiny counts" : "full run",
            c.reps, c.reps_slow, c.w7_reps,
            c.quick ? "; figures are not meaningful" : "");
  /* A watchdog: the default action of SIGALRM ends a hung run. */
  alarm(c.quick ? 120 : 900);
  double t0 = now_s();
#define RUN(tag, fn)                                                          \
  do {                                                                        \
    if (wanted(only, tag)) {                                                  \
      malloc_trim(0); /* each workload starts from a small heap */           \
      bench_log("%s: parent VmRSS %ld KiB, VmHWM %ld KiB", tag,              \
                proc_kb(0, "status", "VmRSS"), proc_kb(0, "status", "VmHWM")); \
      fn(&c);                                                                 \
    }                                                                         \
  } while (0)
  /* Memory last: it leaves the heap larger, which slows fork() a little. */
  RUN("w7", run_w7);
  RUN("w3", run_w3);
  RUN("w1", run_w1);
  RUN("w2", run_w2);
  RUN("w4", run_w4);
  RUN("w5", run_w5);
  RUN("w6", run_w6);
  RUN("w8", run_w8);
  /* After every workload that pins or times this process as a single
   * thread (W3, W8): the modes start threads (all joined again). */
  RUN("modes", run_modes);
  RUN("mem", run_memory);
  double secs = now_s() - t0;

  int missed = 0, met = 0;
  printf("\nTargets:\n");
  for (int i = 0; i < nfigures; i++) {
    const figure *f = &figures[i];
    if (f->met < 0)
      continue;
    printf("  %-4s %s: %s\n", f->met ? "met" : "MISS", f->name, f->target);
    missed += !f->met;
    met += f->met;
  }
  printf("%d met, %d missed; %.0f s\n", met, missed, secs);
  if (markdown != NULL) {
    if (write_markdown(markdown, &c, mach, secs) != 0) {
      fprintf(stderr, "forkpool-bench: cannot write %s: %s\n", markdown,
              strerror(errno));
      return 1;
    }
    printf("wrote %s\n", markdown);
  }
  return 0; /* a missed target is a finding, not a failure */
}

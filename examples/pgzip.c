/*
 * pgzip: parallel gzip, a real workload.  Compresses a file or stdin in
 * blocks of 1 MiB with zlib in the pool's workers and writes one gzip member
 * per block, in input order: a multi-member gzip stream, which gunzip, zcat
 * and "gzip -t" read as one file (RFC 1952, section 2.2).  The blocks come
 * from a lazy fp_map input, read only as room frees up, so memory stays
 * bounded whatever the input's size.  Each worker sets up its deflate state
 * once, in the pool's init hook, and only resets it per block.  A progress
 * bar goes to stderr when stderr is a terminal.  Ctrl-C stops it: the
 * SIGINT handler calls fp_pool_interrupt, the partial output file is
 * removed, and the exit status is 130.
 *
 *   cc pgzip.c $(pkg-config --cflags --libs forkpool zlib) -o pgzip
 *   ./pgzip [-1..-9] [-p N] [-o FILE] [-v] [FILE]
 *
 * Reads FILE, or stdin when FILE is "-" or absent; writes to -o FILE or to
 * stdout (never to a terminal).  Level 6 and one worker per usable CPU by
 * default, as gzip and pigz; -v prints sizes, time and the workers' CPU
 * time (from fp_pool_stats_get) at the end.  Exit status: 0 done, 1 an
 * error (said on stderr), 2 bad usage, 130 interrupted.
 *
 * When the input is a regular file (a name, or stdin redirected from one),
 * the blocks do not pass through this process: a task is only the block's
 * offset and length, and the worker reads it with pread from its own
 * descriptor, into a buffer it keeps.  That saves this process a read and
 * two copies of every block (into the packed item, then into the shared
 * area), which it would otherwise do while the workers wait.  Bytes that
 * follow the file's size at the start (a file still growing) are read here
 * and sent as bytes, as from a pipe.
 *
 * Each member costs 18 bytes of header and trailer, and each block starts
 * with an empty dictionary: the output is a little larger than gzip's or
 * pigz's (which primes each block with the last 32 KiB of the one before).
 */
#define _POSIX_C_SOURCE 200809L
#define ZLIB_CONST /* next_in is const: the block is read in place */
#include <forkpool.h>
#include <zlib.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef BLOCK
#define BLOCK (1u << 20) /* input bytes per task, and per gzip member */
#endif

/* --- The task: it runs in the workers ------------------------------------ */

/* What init is given, in the caller's memory (each worker has a copy). */
struct setup {
  int level;
  int ranged;           /* the workers read the blocks from the file */
  const char *path;     /* that file's name; NULL: descriptor 0 (stdin) */
  dev_t dev;            /* the file the caller opened, to check that the */
  ino_t ino;            /* worker reads the same one */
};

/* A worker's deflate state and buffers, made once by init. */
struct deflater {
  z_stream zs;          /* gzip wrapper: header, CRC-32 and size per member */
  unsigned char *out;   /* room for one block's member, however bad */
  size_t cap;
  int fd;               /* the input file (ranged), or -1 */
  unsigned char *in;    /* one block read from it; NULL when not ranged */
};

/* Opens the input file in a worker: its descriptor, or -1 after a message
 * in the call.  Stdin is the caller's descriptor 0, which workers inherit. */
static int open_input(const struct setup *s, fp_call *call)
{
  int fd = s->path != NULL ? open(s->path, O_RDONLY | O_CLOEXEC) : 0;
  struct stat st;
  if (fd < 0) {
    fp_call_fail(call, "OSError", "%s: %s", s->path, strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) != 0 || st.st_dev != s->dev || st.st_ino != s->ino) {
    fp_call_fail(call, "OSError", "%s: not the file pgzip opened",
                 s->path != NULL ? s->path : "stdin");
    if (fd != 0)
      close(fd);
    return -1;
  }
  return fd;
}

/*
 * The pool's init hook: runs once in each worker before its first task.
 * arg points to a struct setup in the caller's memory, which the worker
 * has a copy of.  The state lives as long as the worker; a worker process
 * frees it, and closes the file, by exiting.
 */
static int deflater_init(void **state, void *arg, fp_call *call)
{
  const struct setup *s = arg;
  int level = s->level;
  struct deflater *d = calloc(1, sizeof *d);
  if (d == NULL)
    return fp_call_fail(call, "MemoryError", "no memory for a deflate state");
  d->fd = -1;
  if (s->ranged) {
    if ((d->in = malloc(BLOCK)) == NULL) {
      free(d);
      return fp_call_fail(call, "MemoryError", "no memory for a block");
    }
    if ((d->fd = open_input(s, call)) < 0) {
      free(d->in);
      free(d);
      return FP_ETASK;
    }
  }
  /* windowBits 15 + 16: a gzip header and trailer around each stream. */
  if (deflateInit2(&d->zs, level, Z_DEFLATED, 15 + 16, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    free(d->in);
    free(d);
    return fp_call_fail(call, "ZlibError", "deflateInit2 failed at level %d",
                        level);
  }
  size_t cap = deflateBound(&d->zs, BLOCK);
  if ((d->out = malloc(cap)) == NULL) {
    deflateEnd(&d->zs);
    free(d->in);
    free(d);
    return fp_call_fail(call, "MemoryError", "no memory for %zu bytes", cap);
  }
  d->cap = cap;
  *state = d;
  return 0;
}

/* Reads len bytes at off: the count (short only at the end of the file),
 * or -1 with errno set. */
static ssize_t pread_full(int fd, unsigned char *buf, size_t len, off_t off)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, off + (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

/* A block -> that block as one gzip member, a bin.  The block is a bin of
 * at most BLOCK bytes, or [offset, length] in the input file, which the
 * worker reads. */
static int deflate_block(fp_call *call, const msgpack_object *args,
                         msgpack_packer *out)
{
  struct deflater *d = fp_call_state(call);
  const void *in;
  size_t n;
  uint64_t off, len;
  if (args->type == MSGPACK_OBJECT_ARRAY && d->fd >= 0 &&
      fp_unpack(args, "[UU]", &off, &len) == 0 && len <= BLOCK &&
      off <= (uint64_t)INT64_MAX - BLOCK) {
    ssize_t got = pread_full(d->fd, d->in, (size_t)len, (off_t)off);
    if (got < 0)
      return fp_call_fail(call, "OSError", "reading the input: %s",
                          strerror(errno));
    if ((uint64_t)got != len)
      return fp_call_fail(call, "OSError", "the input file shrank while "
                          "being compressed");
    in = d->in;
    n = (size_t)len;
  } else if (fp_unpack(args, "y", &in, &n) != 0 || n > BLOCK) {
    return fp_call_fail(call, "TypeError", "deflate takes one bin of at "
                        "most %u bytes, or [offset, length] in the file",
                        BLOCK);
  }
  if (deflateReset(&d->zs) != Z_OK) /* keeps the level and the memory */
    return fp_call_fail(call, "ZlibError", "deflateReset failed");
  d->zs.next_in = in;
  d->zs.avail_in = (uInt)n;
  d->zs.next_out = d->out;
  d->zs.avail_out = (uInt)d->cap;
  /* The buffer holds deflateBound's worst case: one call ends the stream. */
  int zr = deflate(&d->zs, Z_FINISH);
  if (zr != Z_STREAM_END)
    return fp_call_fail(call, "ZlibError", "deflate returned %d (%s)", zr,
                        d->zs.msg != NULL ? d->zs.msg : "no message");
  return msgpack_pack_bin_with_body(out, d->out, d->cap - d->zs.avail_out);
}

static const fp_task tasks[] = {{"deflate", deflate_block}, {NULL, NULL}};

/* --- The input: called by the map in this process ------------------------- */

struct input {
  int fd;
  const char *name;     /* for messages: the file, or "stdin" */
  int ranged;           /* blocks [off, end) go as offsets, not bytes */
  off_t off, end;
  unsigned char *buf;   /* one block */
  size_t blocks;        /* given so far */
  int eof;              /* read returned 0: never read again (a terminal
                           would wait for more) */
  int err;              /* errno of a failed read; 0 */
  unsigned long long bytes;
};

/* Set by the SIGINT handler: a read it interrupts is not restarted. */
static volatile sig_atomic_t got_sigint;

/* Fills buf with up to len bytes: the count (short only at end of input),
 * or -1 with errno set: EINTR after Ctrl-C, so that a pipe or a terminal
 * that sends nothing does not keep the program waiting. */
static ssize_t read_full(int fd, unsigned char *buf, size_t len, int *eof)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n < 0 && errno == EINTR && !got_sigint)
      continue;
    if (n < 0)
      return -1;
    if (n == 0) {
      *eof = 1;
      break;
    }
    got += (size_t)n;
  }
  return (ssize_t)got;
}

/*
 * Packs the next block as a bin and returns 1, or returns 0 at the end.
 * An empty input still gives one (empty) block: an empty gzip member is
 * what gzip writes for it, and a zero-byte file is not a valid gzip file.
 */
static int next_block(void *arg, msgpack_packer *pk)
{
  struct input *in = arg;
  if (in->ranged && in->off < in->end) {
    off_t left = in->end - in->off;
    uint64_t n = left < (off_t)BLOCK ? (uint64_t)left : BLOCK;
    int rc = fp_pack(pk, "[UU]", (uint64_t)in->off, n);
    if (rc != 0)
      return rc;
    in->off += (off_t)n;
    in->blocks++;
    in->bytes += n;
    return 1;
  }
  if (in->eof)
    return 0;
  ssize_t n = read_full(in->fd, in->buf, BLOCK, &in->eof);
  if (n < 0) {
    in->err = errno;
    return -in->err; /* fp_map_next returns it: -EINTR is FP_EINTR */
  }
  if (n == 0 && in->blocks > 0)
    return 0;
  in->blocks++;
  in->bytes += (unsigned long long)n;
  return msgpack_pack_bin_with_body(pk, in->buf, (size_t)n) == 0 ? 1
                                                                 : FP_ENOMEM;
}

/* --- The progress bar (a terminal only) ----------------------------------- */

struct bar {
  size_t expected;      /* blocks in the input; 0: unknown (a pipe) */
  int shown;            /* the percentage drawn last; -1: none yet */
};

/* Called by fp_map_next each time results are in; done counts blocks. */
static void progress(void *arg, size_t done, size_t total)
{
  struct bar *b = arg;
  size_t of = b->expected != 0 ? b->expected : total;
  if (of == 0) {
    fprintf(stderr, "\rpgzip: %zu MiB", done);
    return;
  }
  int pct = (int)(100 * (done < of ? done : of) / of);
  if (pct == b->shown)
    return;
  b->shown = pct;
  char fill[41];
  int w = pct * 40 / 100;
  for (int i = 0; i < 40; i++)
    fill[i] = i < w ? '#' : '.';
  fill[40] = '\0';
  fprintf(stderr, "\rpgzip: [%s] %3d%% %zu/%zu MiB", fill, pct, done, of);
}

/* --- Ctrl-C ------------------------------------------------------------------ */

/* The pool the handler wakes; NULL before it exists and once it is going. */
static _Atomic(fp_pool *) sigint_pool;

static void on_sigint(int sig)
{
  (void)sig;
  got_sigint = 1;
  fp_pool *p = atomic_load(&sigint_pool);
  if (p != NULL)
    (void)fp_pool_interrupt(p); /* async-signal-safe */
}

static void catch_sigint(fp_pool *pool)
{
  struct sigaction sa;
  sa.sa_handler = pool != NULL ? on_sigint : SIG_DFL;
  sa.sa_flags = 0; /* no SA_RESTART: a blocked read returns EINTR */
  sigemptyset(&sa.sa_mask);
  atomic_store(&sigint_pool, pool);
  sigaction(SIGINT, &sa, NULL);
}

/* --- The caller --------------------------------------------------------------- */

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int write_all(int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void usage(FILE *fp)
{
  fprintf(fp, "usage: pgzip [-1..-9] [-p N] [-o FILE] [-v] [FILE]\n"
              "  compresses FILE (or stdin) to a gzip stream on stdout or "
              "in -o FILE\n"
              "  -1..-9   compression level (default 6)\n"
              "  -p N     N worker processes (default: one per usable CPU)\n"
              "  -o FILE  write to FILE instead of stdout\n"
              "  -v       a summary at the end: sizes, time, workers' CPU\n");
}

/* What the command line asks for. */
struct args {
  int level;
  int verbose;          /* -v: a summary on stderr at the end */
  unsigned workers;     /* 0: one per usable CPU */
  const char *out;      /* NULL: stdout */
  const char *in;       /* NULL: stdin */
};

/* Fills *a: 0, or 2 after saying what is wrong.  Options may come before
 * or after the file name, as with gzip. */
static int parse_args(int argc, char **argv, struct args *a)
{
  *a = (struct args){6, 0, 0, NULL, NULL};
  int files = 0, dashdash = 0;
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    if (dashdash || s[0] != '-' || s[1] == '\0') { /* "-" is stdin */
      if (files++ > 0) {
        fprintf(stderr, "pgzip: one input file at most\n");
        return 2;
      }
      a->in = strcmp(s, "-") == 0 ? NULL : s;
    } else if (strcmp(s, "--") == 0) {
      dashdash = 1;
    } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
      usage(stdout);
      exit(0);
    } else if (strcmp(s, "-v") == 0) {
      a->verbose = 1;
    } else if (s[1] >= '1' && s[1] <= '9' && s[2] == '\0') {
      a->level = s[1] - '0';
    } else if (strcmp(s, "-p") == 0 || strcmp(s, "-o") == 0) {
      if (i + 1 == argc) {
        fprintf(stderr, "pgzip: %s needs an argument\n", s);
        return 2;
      }
      const char *v = argv[++i];
      if (s[1] == 'o') {
        a->out = v;
        continue;
      }
      char *end;
      errno = 0;
      long n = strtol(v, &end, 10);
      if (end == v || *end != '\0' || errno != 0 || n < 1 || n > 4096) {
        fprintf(stderr, "pgzip: -p takes a number of workers from 1 to "
                        "4096, not '%s'\n", v);
        return 2;
      }
      a->workers = (unsigned)n;
    } else {
      fprintf(stderr, "pgzip: unknown option '%s'\n", s);
      return 2;
    }
  }
  return 0;
}

/*
 * Compresses in to out through the pool: 0, FP_EINTR, or 1 after saying
 * what went wrong.
 */
static int run(fp_pool *pool, unsigned workers, struct input *in, int out,
               const char *oname, unsigned long long *written)
{
  struct stat st;
  struct bar bar = {0, -1};
  if (fstat(in->fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
    bar.expected = ((size_t)st.st_size + BLOCK - 1) / BLOCK;

  fp_map_input mi = {NULL, 0, next_block, in}; /* lazy: a block at a time */
  fp_map_options mo = FP_MAP_OPTIONS_INIT;
  mo.chunksize = 1; /* a block is tens of ms of work: nothing to batch */
  /* Results come out in input order: a block slower than the others holds
   * up the ones after it.  The default window (about 4 MiB of arguments,
   * two blocks per worker with two workers) lets that idle a worker; this
   * one leaves each worker a few blocks of slack, and stays bounded: at
   * most this many blocks and their members are in memory. */
  mo.buffersize = 2 * (size_t)workers + 8;
  if (isatty(2)) {
    mo.progress = progress;
    mo.progress_arg = &bar;
  }
  fp_map_iter *m;
  int rc = fp_map(pool, "deflate", &mi, &mo, &m);
  if (rc == FP_EINTR) { /* Ctrl-C during the first read */
    fprintf(stderr, "pgzip: interrupted\n");
    return FP_EINTR;
  }
  if (rc != 0) {
    if (in->err != 0)
      fprintf(stderr, "pgzip: %s: %s\n", in->name, strerror(in->err));
    else
      fprintf(stderr, "pgzip: fp_map: %s\n", fp_strerror(rc));
    return 1;
  }
  int status = 0;
  fp_map_item item;
  while ((rc = fp_map_next(m, -1, &item)) == 1) {
    if (item.err != 0) {
      fprintf(stderr, "%spgzip: block %zu: %s\n", mo.progress ? "\n" : "",
              item.index, item.error);
      status = 1;
      break;
    }
    if (item.result->type != MSGPACK_OBJECT_BIN) {
      fprintf(stderr, "pgzip: block %zu: the worker's answer is not a bin\n",
              item.index);
      status = 1;
      break;
    }
    /* The bytes belong to the map until the next fp_map_next. */
    if (write_all(out, item.result->via.bin.ptr, item.result->via.bin.size)) {
      fprintf(stderr, "%spgzip: %s: %s\n", mo.progress ? "\n" : "", oname,
              strerror(errno));
      status = 1;
      break;
    }
    *written += item.result->via.bin.size;
  }
  if (mo.progress != NULL)
    fputc('\n', stderr);
  if (status == 0 && rc == FP_EINTR) {
    fprintf(stderr, "pgzip: interrupted\n");
    status = FP_EINTR;
  } else if (status == 0 && rc != 0) {
    if (in->err != 0)
      fprintf(stderr, "pgzip: %s: %s\n", in->name, strerror(in->err));
    else
      fprintf(stderr, "pgzip: fp_map_next: %s\n", fp_strerror(rc));
    status = 1;
  }
  fp_map_destroy(m); /* cancels what has not started */
  return status;
}

int main(int argc, char **argv)
{
  struct args a;
  if (parse_args(argc, argv, &a) != 0) {
    usage(stderr);
    return 2;
  }

  /* Every file first: a bad name fails before any worker is forked. */
  struct input in = {.fd = 0, .name = "stdin"};
  if (a.in != NULL) {
    in.name = a.in;
    if ((in.fd = open(a.in, O_RDONLY | O_CLOEXEC)) < 0) {
      fprintf(stderr, "pgzip: %s: %s\n", a.in, strerror(errno));
      return 1;
    }
  }
  int out = 1;
  const char *oname = a.out != NULL ? a.out : "stdout";
  if (a.out != NULL) {
    /* O_TRUNC on the input itself would lose it before a byte is read. */
    struct stat si, so;
    if (fstat(in.fd, &si) == 0 && stat(a.out, &so) == 0 &&
        si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
      fprintf(stderr, "pgzip: %s: the input and the output are the same "
                      "file\n", a.out);
      return 1;
    }
    out = open(a.out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (out < 0) {
      fprintf(stderr, "pgzip: %s: %s\n", a.out, strerror(errno));
      return 1;
    }
  } else if (isatty(1)) {
    fprintf(stderr, "pgzip: compressed data not written to a terminal: "
                    "redirect stdout or use -o FILE\n");
    return 1;
  }
  if ((in.buf = malloc(BLOCK)) == NULL) {
    fprintf(stderr, "pgzip: out of memory\n");
    return 1;
  }

  /* A regular file with bytes left: the workers read its blocks, from
   * where the offset is (stdin may have been read from already) to its
   * size now; this process goes on from there with read(), for bytes
   * added later. */
  struct setup setup = {.level = a.level, .path = a.in};
  struct stat si;
  off_t start;
  if (fstat(in.fd, &si) == 0 && S_ISREG(si.st_mode) &&
      (start = lseek(in.fd, 0, SEEK_CUR)) >= 0 && start < si.st_size &&
      lseek(in.fd, si.st_size, SEEK_SET) == si.st_size) {
    setup.ranged = in.ranged = 1;
    setup.dev = si.st_dev;
    setup.ino = si.st_ino;
    in.off = start;
    in.end = si.st_size;
  }

  fp_pool_options opts = FP_POOL_OPTIONS_INIT;
  opts.tasks = tasks;
  opts.workers = a.workers;
  opts.init = deflater_init;
  opts.init_arg = &setup; /* read in each worker's copy of this memory */
  fp_pool *pool;
  int rc = fp_pool_create(&pool, &opts);
  int status = 1;
  if (rc != 0) {
    const char *why = fp_pool_create_error();
    fprintf(stderr, "pgzip: fp_pool_create: %s%s%s\n", fp_strerror(rc),
            why != NULL ? ": " : "", why != NULL ? why : "");
  } else {
    fp_pool_stats st = FP_POOL_STATS_INIT;
    unsigned long long written = 0;
    double t0 = now();
    /* st.workers: the count the pool chose when -p was not given. */
    if ((rc = fp_pool_stats_get(pool, &st, NULL, 0)) != 0) {
      fprintf(stderr, "pgzip: fp_pool_stats_get: %s\n", fp_strerror(rc));
    } else {
      catch_sigint(pool);
      status = run(pool, st.workers, &in, out, oname, &written);
      catch_sigint(NULL); /* before destroy: the handler must not see it */
      if (a.verbose && status == 0 &&
          (rc = fp_pool_stats_get(pool, &st, NULL, 0)) != 0) {
        fprintf(stderr, "pgzip: fp_pool_stats_get: %s\n", fp_strerror(rc));
        status = 1;
      }
    }
    fp_pool_destroy(pool);
    double secs = now() - t0;
    if (a.verbose && status == 0)
      fprintf(stderr, "pgzip: %llu bytes in %zu blocks -> %llu bytes "
              "(%.1f%%), %.3f s, %.1f MB/s, %u workers, their CPU %.3f s\n",
              in.bytes, in.blocks, written,
              in.bytes ? 100.0 * (double)written / (double)in.bytes : 0.0,
              secs, secs > 0 ? (double)in.bytes / 1e6 / secs : 0.0,
              st.workers, (double)(st.cpu_user_us + st.cpu_sys_us) / 1e6);
  }
  free(in.buf);
  if (in.fd != 0)
    close(in.fd);
  /* close can report a write the file system failed late (NFS, quota). */
  if (out != 1 && close(out) != 0 && status == 0) {
    fprintf(stderr, "pgzip: %s: %s\n", oname, strerror(errno));
    status = 1;
  }
  /* A partial file is worse than none: remove what was written. */
  if (status != 0 && a.out != NULL)
    unlink(a.out);
  if (status == FP_EINTR)
    return 130;
  return status;
}

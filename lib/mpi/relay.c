/*
 * What the bridge and a host's relay share: sends in flight, the loop's
 * pace, and channels (a worker's pipes on this side, with their windows).
 */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif
#if HAVE_DECL_SYS_SCHED_GETATTR && HAVE_DECL_SYS_SCHED_SETATTR
#include <sys/syscall.h>
#define FPM_HAVE_SCHED_ATTR 1
/* The kernel's struct sched_attr, its first version (48 bytes). */
struct fpm_sched_attr {
  uint32_t size;
  uint32_t policy;
  uint64_t flags;
  int32_t nice;
  uint32_t priority;
  uint64_t runtime;    /* SCHED_OTHER: the time slice, from Linux 6.12 */
  uint64_t deadline;
  uint64_t period;
};
#define FPM_SCHED_RESET_ON_FORK 1 /* the only flag of this version kept */
#endif

int64_t fpm_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

long fpm_slack_set(long ns)
{
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
  int old = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  if (old < 0 || prctl(PR_SET_TIMERSLACK, (unsigned long)ns, 0, 0, 0) != 0)
    return -1;
  return old;
#else
  (void)ns;
  return -1;
#endif
}

/*
 * A relay runs for microseconds at a time, and a call into MPI that finds
 * nothing yields the CPU (Open MPI, oversubscribed).  With the default
 * slice of a few milliseconds, the kernel's EEVDF scheduler then lets a
 * worker on the same CPU run that long before the relay again: each MPI
 * hop of a task or a result could wait that long.  With a slice this short
 * the relay is back within a fraction of a millisecond, and it preempts a
 * worker as soon as it wakes.  Older kernels ignore the slice.
 */
int64_t fpm_slice_set(int64_t ns)
{
#ifdef FPM_HAVE_SCHED_ATTR
  struct fpm_sched_attr a;
  memset(&a, 0, sizeof a);
  if (syscall(SYS_sched_getattr, 0, &a, (unsigned)sizeof a, 0) != 0 ||
      a.policy != SCHED_OTHER)
    return -1;
  int64_t old = (int64_t)a.runtime;
  a.size = sizeof a;
  a.flags &= FPM_SCHED_RESET_ON_FORK;
  a.runtime = (uint64_t)ns;
  return syscall(SYS_sched_setattr, 0, &a, 0) == 0 ? old : -1;
#else
  (void)ns;
  return -1;
#endif
}

int fpm_fd_prep(int fd)
{
  if (fd < 0)
    return fd;
  if (fd < 3) {
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int err = errno;
    close(fd);
    if (high < 0)
      return -err;
    fd = high;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
      fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

/* --- Sends ----------------------------------------------------------------- */

void fpm_relay_init(fpm_relay *rl, MPI_Comm comm)
{
  memset(rl, 0, sizeof *rl);
  rl->comm = comm;
  rl->busy_ns = rl->post_ns = rl->take_ns = fpm_now_ns();
  rl->gap_ns = FPM_SPIN_MAX_NS; /* no spin until an answer came quickly */
}

char *fpm_msg_new(fpm_relay *rl, size_t payload)
{
  char *m = malloc(sizeof(fp__ctl) + payload);
  if (m == NULL)
    rl->failed = 1;
  return m;
}

int fpm_room(fpm_relay *rl, int n)
{
  if (rl->nreq + n <= rl->cap)
    return 1;
  int cap = rl->cap ? 2 * rl->cap : 64;
  while (cap < rl->nreq + n)
    cap *= 2;
  MPI_Request *r = realloc(rl->reqs, (size_t)cap * sizeof *r);
  if (r != NULL)
    rl->reqs = r;
  fpm_send *s = r != NULL ? realloc(rl->sends, (size_t)cap * sizeof *s) : NULL;
  if (s != NULL)
    rl->sends = s;
  if (r == NULL || s == NULL)
    return 0;
  rl->cap = cap;
  return 1;
}

/*
 * A send with no room to track it.  A header alone goes at once: so
 * small a message goes eagerly, the call returning once it left, so a
 * peer that sends to us meanwhile waits for nothing of ours.  Anything
 * larger is dropped, and the relay stops (the peer sees a stream that
 * ends, as at a worker's death): a blocking send of it would wait until
 * the peer receives it, which a peer in such a send toward us never does.
 */
static void post_untracked(fpm_relay *rl, int dest, const void *buf,
                           size_t len)
{
  if (len > sizeof(fp__ctl))
    fpm_lost(rl);
  else
    MPI_Send((void *)buf, (int)len, MPI_BYTE, dest, FPM_TAG, rl->comm);
}

void fpm_lost(fpm_relay *rl)
{
  rl->failed = 1;
  rl->lost++;
}

void fpm_post(fpm_relay *rl, int dest, char *msg, size_t len)
{
  rl->post_ns = fpm_now_ns();
  if (!fpm_room(rl, 1)) {
    post_untracked(rl, dest, msg, len);
    free(msg);
    return;
  }
  MPI_Isend(msg, (int)len, MPI_BYTE, dest, FPM_TAG, rl->comm,
            &rl->reqs[rl->nreq]);
  rl->sends[rl->nreq++] = (fpm_send){msg, NULL, NULL, 0, len > FPM_EAGER_MAX};
  rl->nlarge += len > FPM_EAGER_MAX;
}

void fpm_post_lent(fpm_relay *rl, int dest, const char *buf, size_t len,
                   void (*done)(void *ctx, uint64_t arg), void *ctx,
                   uint64_t arg)
{
  rl->post_ns = fpm_now_ns();
  if (!fpm_room(rl, 1)) {
    post_untracked(rl, dest, buf, len);
    if (done != NULL)
      done(ctx, arg);
    return;
  }
  MPI_Isend((void *)buf, (int)len, MPI_BYTE, dest, FPM_TAG, rl->comm,
            &rl->reqs[rl->nreq]);
  rl->sends[rl->nreq++] =
      (fpm_send){NULL, done, ctx, arg, len > FPM_EAGER_MAX};
  rl->nlarge += len > FPM_EAGER_MAX;
}

/*
 * Somewhere to receive len bytes nobody wants, at a cost in memory that
 * does not grow with len: len bytes of address space (rounded up to
 * FPM_CHUNK) whose every FPM_CHUNK maps the same FPM_CHUNK of one memfd.
 * So a payload is dropped even when the memory it would need is what ran
 * out.  *maplen is what to munmap; NULL where memfd_create is missing or
 * the mappings fail.
 */
static char *sink_map(size_t len, size_t *maplen)
{
#ifdef MFD_CLOEXEC
  size_t total = (len + FPM_CHUNK - 1) / FPM_CHUNK * FPM_CHUNK;
  int fd = memfd_create("forkpool-mpi-sink", MFD_CLOEXEC);
  if (fd < 0)
    return NULL;
  char *base = MAP_FAILED;
  if (ftruncate(fd, (off_t)FPM_CHUNK) == 0)
    base = mmap(NULL, total, PROT_NONE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  for (size_t off = 0; base != MAP_FAILED && off < total; off += FPM_CHUNK)
    if (mmap(base + off, FPM_CHUNK, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
      munmap(base, total);
      base = MAP_FAILED;
    }
  close(fd);
  if (base == MAP_FAILED)
    return NULL;
  *maplen = total;
  return base;
#else
  (void)len;
  (void)maplen;
  return NULL;
#endif
}

/*
 * Takes the next message from source, of n bytes: its first nhead into
 * head, the rest into FPM_VOID bytes that every block of it overwrites in
 * turn (a datatype of blocks with no stride between them).  MPI calls a
 * receive buffer that overlaps itself erroneous, since what it ends up
 * holding is unspecified, but nobody reads these bytes.  The last resort
 * for bytes nobody wants when there is no memory for them, not even the
 * sink's address space (RLIMIT_AS): a message left first in line would
 * hold back every message after it, the END or END_ACK a relay that stops
 * drains for among them.  A receive of fewer bytes than sent is no way
 * out: Open MPI may then copy the whole message into the buffer anyway.
 */
#define FPM_VOID 4096
static void recv_void(fpm_relay *rl, int source, size_t n, void *head,
                      size_t nhead)
{
  char vbuf[FPM_VOID];
  size_t rest = n - nhead;
  MPI_Datatype blocks, t;
  int lens[3] = {(int)nhead, 1, (int)(rest % FPM_VOID)};
  MPI_Aint disps[3];
  MPI_Datatype types[3];
  MPI_Type_create_hvector((int)(rest / FPM_VOID), FPM_VOID, 0, MPI_BYTE,
                          &blocks);
  MPI_Get_address(nhead > 0 ? head : vbuf, &disps[0]);
  MPI_Get_address(vbuf, &disps[1]);
  disps[2] = disps[1];
  types[0] = MPI_BYTE;
  types[1] = blocks;
  types[2] = MPI_BYTE;
  MPI_Type_create_struct(3, lens, disps, types, &t);
  MPI_Type_commit(&t);
  MPI_Recv(MPI_BOTTOM, 1, t, source, FPM_TAG, rl->comm, MPI_STATUS_IGNORE);
  MPI_Type_free(&t);
  MPI_Type_free(&blocks);
}

int fpm_recv_payload(fpm_relay *rl, int source, char *buf, size_t len)
{
  char *scratch = NULL, *sink = NULL;
  size_t piece = len < FPM_PIECE ? len : FPM_PIECE, sinklen = 0;
  int rc = 0;
  if (buf == NULL && len > 0) {
    /* Nobody wants it, but it must be taken: the next message is after.
     * A piece that is no more than a DATA message is worth no mappings. */
    if (piece > FPM_CHUNK)
      sink = sink_map(piece, &sinklen);
    if (sink == NULL && (scratch = malloc(piece)) == NULL) {
      rl->failed = 1;
      rc = -1;
    }
  }
  for (size_t at = 0; at < len;) {
    size_t n = len - at < FPM_PIECE ? len - at : FPM_PIECE;
    if (rc != 0)
      recv_void(rl, source, n, NULL, 0);
    else
      MPI_Recv(buf != NULL ? buf + at : sink != NULL ? sink : scratch, (int)n,
               MPI_BYTE, source, FPM_TAG, rl->comm, MPI_STATUS_IGNORE);
    at += n;
  }
  if (sink != NULL)
    munmap(sink, sinklen);
  free(scratch);
  rl->busy_ns = fpm_now_ns();
  return rc;
}

/* A send is done: its buffer freed, or its owner told. */
static void send_done(fpm_relay *rl, fpm_send *s)
{
  rl->nlarge -= s->large;
  free(s->buf);
  if (s->done != NULL)
    s->done(s->ctx, s->arg);
}

void fpm_post_ctl(fpm_relay *rl, int dest, const fp__ctl *m)
{
  char *msg = fpm_msg_new(rl, 0);
  if (msg == NULL) {
    post_untracked(rl, dest, m, sizeof *m);
    return;
  }
  memcpy(msg, m, sizeof *m);
  fpm_post(rl, dest, msg, sizeof *m);
}

void fpm_progress(fpm_relay *rl)
{
  if (rl->nreq == 0)
    return;
  int done[FPM_BATCH], ndone = 0;
  int n = rl->nreq < FPM_BATCH ? rl->nreq : FPM_BATCH;
  /* The oldest first: they complete about in order.  A request that
   * completes becomes MPI_REQUEST_NULL. */
  MPI_Testsome(n, rl->reqs, &ndone, done, MPI_STATUSES_IGNORE);
  if (ndone == MPI_UNDEFINED || ndone == 0)
    return;
  for (int k = 0; k < ndone; k++)
    send_done(rl, &rl->sends[done[k]]);
  int j = 0;
  for (int i = 0; i < rl->nreq; i++)
    if (rl->reqs[i] != MPI_REQUEST_NULL) {
      rl->reqs[j] = rl->reqs[i];
      rl->sends[j++] = rl->sends[i];
    }
  rl->nreq = j;
}

void fpm_relay_drain(fpm_relay *rl)
{
  if (rl->nreq > 0)
    MPI_Waitall(rl->nreq, rl->reqs, MPI_STATUSES_IGNORE);
  for (int i = 0; i < rl->nreq; i++)
    send_done(rl, &rl->sends[i]);
  free(rl->reqs);
  free(rl->sends);
  rl->reqs = NULL;
  rl->sends = NULL;
  rl->nreq = rl->cap = 0;
}

int fpm_take(fpm_relay *rl, int source, fp__ctl *hdr, char **msg,
             size_t *len, int *from)
{
  int flag = 0, count = 0;
  MPI_Status st;
  MPI_Iprobe(source, FPM_TAG, rl->comm, &flag, &st);
  if (!flag)
    return 0;
  MPI_Get_count(&st, MPI_BYTE, &count);
  size_t n = count > 0 ? (size_t)count : 0;
  if (n < sizeof *hdr) {
    /* Not ours: the communicator is our duplicate, so never. */
    recv_void(rl, st.MPI_SOURCE, n, NULL, 0);
    return 0;
  }
  char *m = malloc(n);
  if (m != NULL) {
    MPI_Recv(m, count, MPI_BYTE, st.MPI_SOURCE, FPM_TAG, rl->comm,
             MPI_STATUS_IGNORE);
    memcpy(hdr, m, sizeof *hdr);
  } else {
    /* No memory for it: the relay stops, but the message is taken all
     * the same, its header kept (a BIG's payload after it too), so that
     * the END or END_ACK behind it is seen. */
    rl->failed = 1;
    recv_void(rl, st.MPI_SOURCE, n, hdr, sizeof *hdr);
    if (hdr->op == FPM_BIG)
      (void)fpm_recv_payload(rl, st.MPI_SOURCE, NULL, (size_t)hdr->sys_us);
  }
  /*
   * The first message after a post: the time since that post goes into
   * the running mean that fpm_pace's spin rests on, weighing an eighth
   * (capped at twice FPM_SPIN_MAX_NS, so that one slow answer does not
   * stop the spin for long).  Every message: the time since the one
   * before goes into the mean time between messages, weighing an eighth
   * (capped at FPM_NAP_MAX_NS, the longest wait it sets).
   */
  int64_t now = fpm_now_ns();
  if (rl->post_ns > rl->take_ns) {
    int64_t gap = now - rl->post_ns;
    if (gap > 2 * FPM_SPIN_MAX_NS)
      gap = 2 * FPM_SPIN_MAX_NS;
    rl->gap_ns += (gap - rl->gap_ns) / 8;
  }
  int64_t every = now - rl->take_ns;
  if (every > FPM_NAP_MAX_NS)
    every = FPM_NAP_MAX_NS;
  rl->every_ns += (every - rl->every_ns) / 8;
  rl->take_ns = now;
  *msg = m;
  *len = n;
  *from = st.MPI_SOURCE;
  return 1;
}

/* --- The pace of the loop ----------------------------------------------- */

/*
 * Whether the peer's answer to what was posted last is due: nothing came
 * since the post, and answers have lately come within FPM_SPIN_MAX_NS.
 * Then the loop looks for it for up to twice the usual gap, without a nap.
 */
static int answer_due(const fpm_relay *rl, int64_t now)
{
  if (rl->post_ns <= rl->take_ns || rl->gap_ns >= FPM_SPIN_MAX_NS)
    return 0;
  int64_t spin = 2 * rl->gap_ns;
  return now - rl->post_ns < (spin < FPM_SPIN_MAX_NS ? spin : FPM_SPIN_MAX_NS);
}

int fpm_pace(fpm_relay *rl, struct pollfd *pfd, int n, int busy,
             enum fpm_due due)
{
  int64_t now = fpm_now_ns();
  if (busy)
    rl->busy_ns = now;
  /*
   * Each look costs a wake-up (tens of microseconds of a CPU on a virtual
   * machine), and a call into MPI that finds nothing yields the CPU (Open
   * MPI, oversubscribed), after which a rank may wait a whole time slice
   * of a worker's for it: a relay looks as seldom as what it waits for
   * allows.
   *
   * A large send in flight moves only while this side calls MPI, and the
   * peer waits in its receive meanwhile, so look again at once (after a
   * yield to a worker on this core); a small one was delivered when it was
   * posted, and only its completion waits for the peer to look.  Nothing
   * due before one of our descriptors wakes us (a host whose workers all
   * have a task queued: the next answer wakes it, and that pass takes
   * whatever came meanwhile): the longest wait at once.  Nothing urgent (a
   * host whose workers all run a task, whose next one is needed when it
   * ends; the bridge, while each host worker has a task queued): look
   * about FPM_LATER_DIV times per usual time between messages, a few looks
   * per task of a worker that runs tasks of milliseconds, where the ramp
   * below would make hundreds, and as often as the ramp when messages
   * stream in (short tasks, whose queues are short too).  Otherwise, an
   * answer due soon: look again at once.  A sleep to wait for it costs its
   * wake-up, then a wait for a CPU, on each of the two MPI hops of a round
   * trip; the spin lasts at most twice the gap measured (answer_due), so a
   * peer that answers slowly (a long task, a busy machine) is waited for
   * with naps and the spin does not take the CPU its workers need.  Else
   * the wait grows with the time since the last work: the first looks come
   * every microsecond or so, and the longer nothing comes the less it
   * matters to see it late: at most 1/FPM_NAP_DIV of the time waited
   * already, up to FPM_NAP_MAX_NS when idle.
   */
  int64_t nap = 0;
  if (rl->every_ns < FPM_STREAM_NS)
    due = FPM_DUE_ANY; /* streaming: a nap costs more than the wait */
  if (rl->nlarge == 0 && due == FPM_DUE_NONE) {
    nap = FPM_NAP_MAX_NS;
  } else if (rl->nlarge == 0 &&
             (due == FPM_DUE_LATER || !answer_due(rl, now))) {
    int64_t least = due == FPM_DUE_LATER ? rl->every_ns / FPM_LATER_DIV : 0;
    least = least > FPM_NAP_MIN_NS ? least : FPM_NAP_MIN_NS;
    nap = (now - rl->busy_ns) / FPM_NAP_DIV;
    nap = nap < least ? least : nap > FPM_NAP_MAX_NS ? FPM_NAP_MAX_NS : nap;
  }
  struct timespec ts = {nap / 1000000000, nap % 1000000000};
  int rc = ppoll(pfd, (nfds_t)n, &ts, NULL);
  if (rc == 0 && rl->nlarge > 0)
    sched_yield(); /* a send in flight: a worker on this core goes first */
  return rc < 0 ? 0 : rc;
}

/* --- Channels ------------------------------------------------------------ */

void fpm_chan_init(fpm_chan *c)
{
  memset(c, 0, sizeof *c);
  c->rfd = c->wfd = c->hold = -1;
}

void fpm_chan_open(fpm_chan *c, int rfd, int wfd, int hold)
{
  fpm_chan_close(c);
  c->rfd = rfd;
  c->wfd = wfd;
  c->hold = hold;
  c->open = 1;
}

static void chan_drop(fpm_chan *c)
{
  while (c->qhead != NULL) {
    fpm_chunk *k = c->qhead;
    c->qhead = k->next;
    free(k->msg);
    free(k);
  }
  c->qtail = NULL;
}

void fpm_chan_close(fpm_chan *c)
{
  int *fds[3] = {&c->rfd, &c->wfd, &c->hold};
  for (int i = 0; i < 3; i++)
    if (*fds[i] >= 0) {
      close(*fds[i]);
      *fds[i] = -1;
    }
  chan_drop(c);
  free(c->carry);
  c->carry = NULL;
  c->ncarry = c->fleft = 0;
  c->open = c->wclose = 0;
  c->unacked = c->to_ack = 0;
  memset(&c->in, 0, sizeof c->in);
  memset(&c->out, 0, sizeof c->out);
}

int fpm_chan_wants_read(const fpm_chan *c)
{
  return c->open && c->rfd >= 0 && c->unacked < FPM_WINDOW;
}

/* Bytes [from, to) of msg's payload as a DATA message for slot: msg
 * itself when they start it (MPI only reads a send's buffer, so the rest
 * of msg may still be looked at; it is freed once the send is done), else
 * a copy. */
static void post_data(fpm_relay *rl, int dest, uint32_t slot, char *msg,
                      size_t from, size_t to, int *msg_posted)
{
  fp__ctl m = {.op = FPM_DATA, .slot = slot};
  if (from == 0 && !*msg_posted) {
    memcpy(msg, &m, sizeof m);
    fpm_post(rl, dest, msg, sizeof m + to);
    *msg_posted = 1;
    return;
  }
  char *copy = fpm_msg_new(rl, to - from);
  if (copy == NULL) {
    fpm_lost(rl);
    return;
  }
  memcpy(copy, &m, sizeof m);
  memcpy(copy + sizeof m, msg + sizeof m + from, to - from);
  fpm_post(rl, dest, copy, sizeof m + to - from);
}

/*
 * Sends the n bytes of msg's payload for a channel with hooks: frames the
 * hooks take go to take, in their place; what cannot be judged yet (a
 * frame's start too short to peek at, or a frame to take not yet whole)
 * is kept in c->carry for the next read.  msg is taken.  Returns the
 * weight sent.
 */
static size_t split_frames(fpm_relay *rl, fpm_chan *c, int dest,
                           uint32_t slot, char *msg, size_t n)
{
  const char *b = msg + sizeof(fp__ctl);
  size_t p = 0, start = 0, weight = 0;
  int posted = 0;
  while (p < n) {
    if (c->fleft > 0) {
      size_t k = c->fleft < n - p ? c->fleft : n - p;
      p += k;
      c->fleft -= k;
      continue;
    }
    if (n - p < FP__HDR)
      break;
    const unsigned char *h = (const unsigned char *)b + p;
    size_t len = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 |
                 (size_t)h[3] << 24; /* frame.c: 32-bit little-endian */
    size_t have = n - p - FP__HDR < len ? n - p - FP__HDR : len;
    if (have < (len < FPM_PEEK ? len : FPM_PEEK))
      break;
    if (len > FPM_REF_MAX ||
        !c->hooks->peek(c->hctx, c, slot, b + p + FP__HDR, have, len)) {
      c->fleft = FP__HDR + len;
      continue;
    }
    if (have < len)
      break;
    if (p > start) {
      post_data(rl, dest, slot, msg, start, p, &posted);
      weight += p - start;
    }
    weight += c->hooks->take(c->hctx, rl, c, dest, slot, b + p,
                             FP__HDR + len);
    p += FP__HDR + len;
    start = p;
  }
  if (p > start) {
    post_data(rl, dest, slot, msg, start, p, &posted);
    weight += p - start;
  }
  if (p < n) {
    char *keep = malloc(n - p);
    if (keep == NULL)
      fpm_lost(rl);
    else
      memcpy(keep, b + p, n - p);
    c->carry = keep;
    c->ncarry = keep != NULL ? n - p : 0;
  }
  if (!posted)
    free(msg);
  return weight;
}

/* Counts the frames that end in the n bytes at b of a stream. */
static void count_frames(fpm_frames *f, const unsigned char *b, size_t n)
{
  while (n > 0) {
    if (f->nhdr < FP__HDR) {
      f->hdr[f->nhdr++] = *b++;
      n--;
      if (f->nhdr < FP__HDR)
        continue;
      f->left = (size_t)f->hdr[0] | (size_t)f->hdr[1] << 8 |
                (size_t)f->hdr[2] << 16 | (size_t)f->hdr[3] << 24;
    }
    size_t k = f->left < n ? f->left : n;
    f->left -= k;
    b += k;
    n -= k;
    if (f->left == 0) {
      f->n++;
      f->nhdr = 0;
    }
  }
}

size_t fpm_chan_read(fpm_relay *rl, fpm_chan *c, int dest, uint32_t slot,
                     int all)
{
  size_t sent = 0;
  while (c->rfd >= 0 && (all || c->unacked < FPM_WINDOW)) {
    int avail = 0;
    if (ioctl(c->rfd, FIONREAD, &avail) != 0 || avail < 0)
      avail = 0;
    size_t want = avail > 0 ? (size_t)avail : 4096;
    size_t room = all ? FPM_CHUNK : FPM_WINDOW - c->unacked;
    if (want > room)
      want = room;
    if (want > FPM_CHUNK)
      want = FPM_CHUNK;
    size_t kept = c->ncarry;
    char *msg = fpm_msg_new(rl, kept + want);
    if (msg == NULL)
      return sent;
    if (kept > 0)
      memcpy(msg + sizeof(fp__ctl), c->carry, kept);
    ssize_t r;
    while ((r = read(c->rfd, msg + sizeof(fp__ctl) + kept, want)) < 0 &&
           errno == EINTR)
      ;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      free(msg);
      return sent;
    }
    free(c->carry);
    c->carry = NULL;
    c->ncarry = 0;
    if (r > 0)
      count_frames(&c->out,
                   (const unsigned char *)msg + sizeof(fp__ctl) + kept,
                   (size_t)r);
    if (r <= 0) {
      /* End of file (or an error, which ends it as well): a frame's start
       * kept back goes as it is. */
      if (kept > 0) {
        fp__ctl d = {.op = FPM_DATA, .slot = slot};
        memcpy(msg, &d, sizeof d);
        fpm_post(rl, dest, msg, sizeof d + kept);
      } else {
        free(msg);
      }
      close(c->rfd);
      c->rfd = -1;
      fp__ctl m = {.op = FPM_CLOSE, .slot = slot};
      fpm_post_ctl(rl, dest, &m);
      return sent;
    }
    size_t n = kept + (size_t)r;
    unsigned long lost = rl->lost;
    if (c->hooks != NULL) {
      c->unacked += split_frames(rl, c, dest, slot, msg, n);
    } else {
      fp__ctl m = {.op = FPM_DATA, .slot = slot};
      memcpy(msg, &m, sizeof m);
      fpm_post(rl, dest, msg, sizeof m + n);
      c->unacked += n;
    }
    sent += (size_t)r;
    if (rl->lost != lost) {
      /* Bytes of this stream were dropped (the relay stops): it ends
       * here, as a dead worker's does, not with later bytes spliced on. */
      close(c->rfd);
      c->rfd = -1;
      fp__ctl m = {.op = FPM_CLOSE, .slot = slot};
      fpm_post_ctl(rl, dest, &m);
      return sent;
    }
    if ((size_t)r < want)
      return sent; /* the pipe is empty */
  }
  return sent;
}

int fpm_chan_put(fpm_chan *c, char *msg, size_t len)
{
  if (len <= sizeof(fp__ctl) || c->wfd < 0) {
    free(msg);
    return 0;
  }
  fpm_chunk *k = malloc(sizeof *k);
  if (k == NULL) {
    free(msg);
    return FP_ENOMEM;
  }
  count_frames(&c->in, (const unsigned char *)msg + sizeof(fp__ctl),
               len - sizeof(fp__ctl));
  *k = (fpm_chunk){NULL, msg, sizeof(fp__ctl), len, 0};
  if (c->qtail != NULL)
    c->qtail->next = k;
  else
    c->qhead = k;
  c->qtail = k;
  return 0;
}

int fpm_chan_put_frame(fpm_chan *c, char *frame, size_t len, size_t weight)
{
  if (len == 0 || c->wfd < 0) {
    free(frame);
    return 0;
  }
  fpm_chunk *k = malloc(sizeof *k);
  if (k == NULL) {
    free(frame);
    return FP_ENOMEM;
  }
  *k = (fpm_chunk){NULL, frame, 0, len, weight > 0 ? weight : 1};
  c->in.n++; /* whole, between frames of the stream */
  if (c->qtail != NULL)
    c->qtail->next = k;
  else
    c->qhead = k;
  c->qtail = k;
  return 0;
}

size_t fpm_chan_write(fpm_chan *c)
{
  size_t done = 0;
  while (c->qhead != NULL && c->wfd >= 0) {
    struct iovec iov[16];
    int n = 0;
    for (fpm_chunk *k = c->qhead; k != NULL && n < 16; k = k->next) {
      iov[n].iov_base = k->msg + k->off;
      iov[n++].iov_len = k->end - k->off;
    }
    ssize_t w = writev(c->wfd, iov, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (w < 0) {
      /* Its reader is gone (EPIPE): nobody wants these bytes. */
      chan_drop(c);
      close(c->wfd);
      c->wfd = -1;
      break;
    }
    done += (size_t)w;
    size_t left = (size_t)w;
    while (left > 0) {
      fpm_chunk *k = c->qhead;
      size_t rest = k->end - k->off;
      if (k->weight == 0)
        c->to_ack += left < rest ? left : rest;
      if (left < rest) {
        k->off += left;
        break;
      }
      left -= rest;
      c->to_ack += k->weight; /* a frame that stood for a payload */
      c->qhead = k->next;
      free(k->msg);
      free(k);
    }
    if (c->qhead == NULL)
      c->qtail = NULL;
  }
  if (c->qhead == NULL && c->wclose && c->wfd >= 0) {
    close(c->wfd);
    c->wfd = -1;
  }
  return done;
}

void fpm_chan_ack(fpm_relay *rl, fpm_chan *c, int dest, uint32_t slot)
{
  if (c->to_ack < FPM_ACK_AT)
    return;
  fp__ctl m = {.op = FPM_ACK, .slot = slot, .user_us = c->to_ack};
  fpm_post_ctl(rl, dest, &m);
  c->to_ack = 0;
}

int fpm_chan_message(fpm_relay *rl, fpm_chan *c, const fp__ctl *m,
                     char **msg, size_t len)
{
  switch (m->op) {
  case FPM_DATA:
    if (c->open) {
      if (fpm_chan_put(c, *msg, len) != 0)
        rl->failed = 1; /* the stream lost bytes: this relay stops */
      *msg = NULL;
      fpm_chan_write(c);
    }
    return 1;
  case FPM_ACK:
    if (c->open)
      c->unacked -= m->user_us < c->unacked ? m->user_us : c->unacked;
    return 1;
  case FPM_CLOSE:
    if (c->open) {
      c->wclose = 1;
      fpm_chan_write(c);
    }
    return 1;
  default:
    return 0;
  }
}

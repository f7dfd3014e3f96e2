/*
 * libforkpool-mpi's internals: what the root's bridge (bridge.c) and a
 * host's relay (host.c) share.  Both move bytes between pipes and MPI
 * messages without reading them: a channel is one worker's pair of pipes
 * on this side, and the bytes of its frames travel as DATA messages of at
 * most FPM_CHUNK bytes, in order (MPI does not reorder messages between two
 * ranks on one communicator and tag).  Each direction of a channel has a
 * window of FPM_WINDOW bytes: the sender reads its pipe only while less
 * than that is unacknowledged, and the receiver acknowledges what it has
 * written into its pipe, so that neither side ever holds more than a
 * window per worker.
 *
 * Large payloads do not travel inside that byte stream.  Each side of the
 * relay shares memory with its end of the pool: on the root the pool's own
 * area (the bridge runs in the pool's process), on a host the area of the
 * host's workers (fp__remote_forkserver_start).  A frame that names a
 * payload in an area (a TASK_SHM from the pool, a RESULT_SHM from a
 * worker) is taken out of the stream whole (fpm_hooks), and goes as a BIG
 * message, its body after the header, followed at once by the payload,
 * sent from where it lies; the receiver takes the payload straight into
 * its own area and puts a frame that names it there into the stream, in
 * the same place.  Where an area has no room the frame carries the
 * payload as before.
 */
#ifndef FPM_RELAY_H
#define FPM_RELAY_H

#include "../forkpool-remote.h"

#include <forkpool-mpi.h>

#define FPM_TAG 17                    /* every message, on our own comm */
#define FPM_CHUNK ((size_t)1 << 20)   /* payload bytes per DATA, at most */
#define FPM_WINDOW ((size_t)8 << 20)  /* unacknowledged bytes per direction */
#define FPM_ACK_AT (FPM_WINDOW / 4)   /* written bytes worth an ACK */
#define FPM_NAP_MIN_NS 1000           /* the shortest wait between looks */
#define FPM_NAP_MAX_NS 1000000        /* the longest: 1 ms */
#define FPM_NAP_DIV 64                /* a wait is 1/64 of the time since work */
#define FPM_SLACK_NS 1000             /* timer slack while relaying */
#define FPM_SLICE_NS 200000           /* time slice while relaying */
#define FPM_BATCH 64                  /* messages taken per pass, at most */
#define FPM_SPIN_MAX_NS 300000        /* answers slower than this: no spin */
#define FPM_LATER_DIV 4               /* answers not urgent: a wait is at least
                                         1/4 of the usual time between them */
#define FPM_STREAM_NS 100000          /* messages closer than this: what is
                                         due does not slow the looks */
#define FPM_EAGER_MAX 4096            /* larger sends move as the sender calls
                                         MPI: it looks again at once */

/*
 * Every message is an fp__ctl, then for DATA its payload.  The fork
 * server's ops (below 64) are relayed as they are, their slot the host's
 * own number; these are the relays' own.
 */
enum fpm_op {
  FPM_DATA = 64,       /* both ways: the payload goes into slot's pipe */
  FPM_ACK = 65,        /* both ways: user_us bytes of slot's were written */
  FPM_CLOSE = 66,      /* both ways: slot's stream ends (end of file) */
  FPM_END = 67,        /* root -> host: the pool is gone; stop */
  FPM_END_ACK = 68,    /* host -> root: stopped, every worker reaped */
  FPM_BIG = 69,        /* both ways: a frame naming a payload, its body
                          after the header; user_us is its weight in the
                          window, sys_us the payload's length, which comes
                          next in messages of at most FPM_PIECE bytes */
};

#define FPM_PIECE ((size_t)1 << 30)   /* a BIG payload's messages, at most */
#define FPM_PEEK 16                   /* a frame's first bytes, to judge it */
#define FPM_REF_MAX 4096              /* frames naming a payload are smaller */

/* A received DATA message, or what is left of it to write. */
typedef struct fpm_chunk {
  struct fpm_chunk *next;
  char *msg;           /* the whole message (or frame), owned */
  size_t off, end;     /* the payload bytes not yet written */
  size_t weight;       /* acknowledged once all is written; 0: each byte
                          as it is written (DATA) */
} fpm_chunk;

struct fpm_relay;
struct fpm_chan;
/*
 * A relay that looks into the frames it reads: peek sees each frame's
 * start (at least FPM_PEEK bytes of its body, or all of it: have of len)
 * and says 1 if the whole frame goes to take instead of into DATA; take
 * gets it, header included, in its place in the stream, sends what it
 * stands for, and returns its weight in the window.
 */
typedef struct fpm_hooks {
  int (*peek)(void *ctx, struct fpm_chan *c, uint32_t slot,
              const char *body, size_t have, size_t len);
  size_t (*take)(void *ctx, struct fpm_relay *rl, struct fpm_chan *c,
                 int dest, uint32_t slot, const char *frame, size_t len);
} fpm_hooks;

/* Where a stream of frames (frame.c's framing) is: frames counted, not
 * kept. */
typedef struct fpm_frames {
  uint64_t n;          /* whole frames so far */
  unsigned char hdr[FP__HDR]; /* the current frame's header, as it comes */
  unsigned nhdr;
  size_t left;         /* bytes of the current frame's body to come */
} fpm_frames;

/* One worker's two streams on this side of the relay. */
typedef struct fpm_chan {
  int open;            /* its worker exists: DATA, ACK and CLOSE count */
  int rfd;             /* bytes to send to the peer; -1: closed */
  int wfd;             /* where the peer's bytes go; -1: closed */
  int hold;            /* host: the task pipe's read end; -1: none */
  fpm_chunk *qhead, *qtail; /* the peer's bytes not yet written */
  size_t unacked;      /* bytes sent, not yet acknowledged */
  size_t to_ack;       /* bytes written, not yet acknowledged */
  int wclose;          /* the peer's stream ended: close wfd once written */
  const fpm_hooks *hooks; /* NULL: bytes only, no frames looked at */
  void *hctx;
  size_t fleft;        /* bytes of the current frame not read yet */
  char *carry;         /* a frame's start read but not yet judged, owned */
  size_t ncarry;
  fpm_frames in;       /* the frames of the peer's stream taken */
  fpm_frames out;      /* the frames of ours read from rfd */
} fpm_chan;

/* A send in flight: what to free or do when it is done. */
typedef struct fpm_send {
  char *buf;           /* the message, owned; NULL: lent */
  void (*done)(void *ctx, uint64_t arg); /* NULL: nothing */
  void *ctx;
  uint64_t arg;
  int large;           /* more than FPM_EAGER_MAX bytes */
} fpm_send;

/* Sends in flight, and the pace of the loop. */
typedef struct fpm_relay {
  MPI_Comm comm;       /* a duplicate of the caller's */
  MPI_Request *reqs;   /* nreq sends in flight */
  fpm_send *sends;     /* theirs */
  int nreq, cap;
  int nlarge;          /* of them, more than FPM_EAGER_MAX bytes */
  int64_t busy_ns;     /* when the last work was done */
  int64_t post_ns;     /* when the last message was posted */
  int64_t take_ns;     /* when the last message was taken */
  int64_t gap_ns;      /* the usual time from a post to the next message */
  int64_t every_ns;    /* the usual time between two messages taken */
  int failed;          /* out of memory: the relay stops */
  unsigned long lost;  /* messages dropped unsent (fpm_lost) */
} fpm_relay;

int64_t fpm_now_ns(void);
/* Sets the calling thread's timer slack to ns, so that a short wait is as
 * short as asked; returns the old slack, or -1 where there is none. */
long fpm_slack_set(long ns);
/* Sets the calling thread's time slice to ns (a SCHED_OTHER thread, where
 * the kernel takes one); returns the old slice, or -1 if none was set. */
int64_t fpm_slice_set(int64_t ns);
void fpm_relay_init(fpm_relay *rl, MPI_Comm comm);
/* Waits for every send, then frees what is left. */
void fpm_relay_drain(fpm_relay *rl);
/* A message of payload bytes after its header, or NULL (rl->failed). */
char *fpm_msg_new(fpm_relay *rl, size_t payload);
/* Room to track n more sends (0: none, out of memory).  Whoever posts a
 * BIG makes room for it and every piece of its payload first: a receiver
 * waits for each piece once it has the BIG. */
int fpm_room(fpm_relay *rl, int n);
/* A message for the peer was dropped, or bytes of a stream: the relay
 * stops (rl->failed), and a channel being read ends its stream. */
void fpm_lost(fpm_relay *rl);
/* Sends msg (taken) of len bytes to rank dest.  Never waits for the peer:
 * with no room to track the send, a header alone goes at once (eagerly)
 * and anything larger is dropped (fpm_lost). */
void fpm_post(fpm_relay *rl, int dest, char *msg, size_t len);
/* Sends len bytes at buf, which stay put until the send is done; then
 * done(ctx, arg) unless done is NULL (at once if it was dropped, as
 * fpm_post's). */
void fpm_post_lent(fpm_relay *rl, int dest, const char *buf, size_t len,
                   void (*done)(void *ctx, uint64_t arg), void *ctx,
                   uint64_t arg);
/* The len bytes of a BIG payload from source, into buf (NULL: dropped,
 * into mappings that cost a MiB of memory whatever len).  Returns 0, or -1
 * out of memory (rl->failed): the payload is then dropped unread, but
 * taken all the same. */
int fpm_recv_payload(fpm_relay *rl, int source, char *buf, size_t len);
/* Sends a header alone. */
void fpm_post_ctl(fpm_relay *rl, int dest, const fp__ctl *m);
/* Frees the messages whose sends completed. */
void fpm_progress(fpm_relay *rl);
/* What a relay knows of what its peer may send next. */
enum fpm_due {
  FPM_DUE_ANY,         /* anything, any time */
  FPM_DUE_LATER,       /* nothing urgent: the bridge, while each host
                          worker has a task queued behind the one it runs;
                          a host, while each of its workers runs one */
  FPM_DUE_NONE,        /* nothing needed before one of our descriptors
                          wakes us: a host, while each of its workers has
                          a task queued behind the one it runs; the bridge,
                          while no host worker has a task */
};
/*
 * Waits for one of n descriptors, or for the next look at MPI: not at all
 * while a send of more than FPM_EAGER_MAX bytes is in flight; if nothing is
 * due (FPM_DUE_NONE), FPM_NAP_MAX_NS; unless FPM_DUE_LATER, not at all
 * while the peer's answer to the last post is due (for up to twice the
 * usual gap from a post to the next message, if that gap is under
 * FPM_SPIN_MAX_NS); else for 1/FPM_NAP_DIV of the time since the last work
 * (busy: now), between FPM_NAP_MIN_NS (if FPM_DUE_LATER, 1/FPM_LATER_DIV of
 * the usual time between messages) and FPM_NAP_MAX_NS.  Returns poll's
 * count (0: none ready).
 */
int fpm_pace(fpm_relay *rl, struct pollfd *pfd, int n, int busy,
             enum fpm_due due);

/* The next message from source (MPI_ANY_SOURCE: any): 1 with *hdr its
 * header, *msg the whole message (owned), *len and *from; 0 if none is
 * there.  With no memory for it, *msg is NULL (rl->failed): the message
 * was taken all the same and dropped, a BIG's payload with it. */
int fpm_take(fpm_relay *rl, int source, fp__ctl *hdr, char **msg,
             size_t *len, int *from);

void fpm_chan_init(fpm_chan *c);
/* Opens c on its descriptors (taken; hold may be -1). */
void fpm_chan_open(fpm_chan *c, int rfd, int wfd, int hold);
/* Closes its descriptors and drops what it holds. */
void fpm_chan_close(fpm_chan *c);
/* Whether to poll rfd: open and room in the window. */
int fpm_chan_wants_read(const fpm_chan *c);
/*
 * Reads what rfd has (within the window unless all) and sends it as DATA
 * for slot to dest.  Returns bytes sent; at end of file sends CLOSE and
 * closes rfd.
 */
size_t fpm_chan_read(fpm_relay *rl, fpm_chan *c, int dest, uint32_t slot,
                     int all);
/* Takes a DATA message (msg, owned) for c: 0, or FP_ENOMEM if it could
 * not be queued (it is freed, and the stream is broken). */
int fpm_chan_put(fpm_chan *c, char *msg, size_t len);
/* Takes a frame (owned) for c, worth weight in the window: 0, or FP_ENOMEM
 * as fpm_chan_put. */
int fpm_chan_put_frame(fpm_chan *c, char *frame, size_t len, size_t weight);
/* Writes what wfd takes; drops the rest if its reader is gone.  Returns
 * bytes written. */
size_t fpm_chan_write(fpm_chan *c);
/* A DATA, ACK or CLOSE message m for channel c, alike on both sides: 1 if
 * it was one (a DATA's msg is then taken: *msg becomes NULL), 0 if not.
 * A DATA it had no memory to queue sets rl->failed. */
int fpm_chan_message(fpm_relay *rl, fpm_chan *c, const fp__ctl *m,
                     char **msg, size_t len);
/* Sends an ACK for slot to dest once enough was written. */
void fpm_chan_ack(fpm_relay *rl, fpm_chan *c, int dest, uint32_t slot);
/* Nothing of the peer's is left to write. */
static inline int fpm_chan_flushed(const fpm_chan *c)
{
  return c->qhead == NULL;
}

/* A descriptor from 3 up, close-on-exec and non-blocking (fd is consumed);
 * -errno. */
int fpm_fd_prep(int fd);

/* --- bridge.c: the root's stand-in for a fork server ---------------------- */

typedef struct fpm_bridge fpm_bridge;
/* For ranks that run count[r] workers each, talking to the pool on ctl
 * (taken).  The root's own count[root] workers, if any, are those of the
 * fork server on fs_ctl (taken; -1: none), which the bridge reaps if
 * fs_child.  NULL: out of memory (ctl closed, the fork server stopped). */
fpm_bridge *fpm_bridge_new(MPI_Comm comm, int root, const int *count,
                           int ctl, int fs_ctl, pid_t fs_pid, int fs_child);
/* The pool's shared area, once it exists (NULL: none): the pool's until
 * the bridge closes ctl. */
void fpm_bridge_area(fpm_bridge *b, fp__shm *area);
/* Relays until the pool closes its control socket, then stops every host
 * and the root's fork server, frees comm, and closes ctl last.  Frees b. */
void fpm_bridge_run(fpm_bridge *b);

/* --- host.c: a host's relay ------------------------------------------------ */

/* Relays between root and the fork server on ctl (taken) with n workers
 * and their shared area (taken; NULL: none) until the root says END;
 * stops the fork server (every worker is reaped when this returns) and
 * frees the area.  0, also when it ran out of memory while serving (the
 * root retired it); FP_ENOMEM if it had none to start. */
int fpm_host_run(MPI_Comm comm, int root, unsigned n, int ctl, pid_t fs_pid,
                 int fs_child, fp__shm *area);
/* Stops a fork server that never served. */
void fpm_forkserver_stop(int ctl, pid_t fs_pid, int fs_child);

#endif

/*
 * Helpers for the test programs that run under mpirun: see fpt-mpi.h.
 */
#include "fpt-mpi.h"

#include "fpt.h"

#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

void fpt_mpi_connect_all(void)
{
  int rank, nranks, one = 1, sum = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  for (int r = 1; r < nranks; r++) {
    int x = r;
    if (rank == 0)
      MPI_Sendrecv_replace(&x, 1, MPI_INT, r, 0, r, 0, MPI_COMM_WORLD,
                           MPI_STATUS_IGNORE);
    else if (rank == r)
      MPI_Sendrecv_replace(&x, 1, MPI_INT, 0, 0, 0, 0, MPI_COMM_WORLD,
                           MPI_STATUS_IGNORE);
  }
}

int fpt_mpi_children_left(void)
{
  int64_t give_up = fpt_now_ms() + FPT_LIMIT_MS;
  for (;;) {
    while (waitpid(-1, NULL, WNOHANG) > 0)
      ;
    if (fpt_child_pid() <= 0)
      return 0;
    if (fpt_now_ms() >= give_up)
      return 1;
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
}

/* What each rank makes a pool with: the same on every rank, as
 * fp_mpi_pool_create(3) requires. */
typedef struct opts {
  int more;                 /* 0: no more pools, the hosts return */
  unsigned workers;         /* per host */
  unsigned max_inflight;
  int deadline_grace_ms;
  unsigned restart_limit;
  unsigned root_workers;    /* fp_mpi_options' */
} opts;

/* What a host says after its fp_mpi_pool_create_ex returned. */
typedef struct report {
  int rc;       /* what it returned */
  int got_pool; /* *out was not NULL */
  int left;     /* a process it started was still there */
} report;

static int create(fp_pool **out, fp_pool_options o, const opts *m)
{
  o.workers = m->workers;
  o.max_inflight = m->max_inflight;
  o.deadline_grace_ms = m->deadline_grace_ms;
  o.restart_limit = m->restart_limit;
  fp_mpi_options mo = FP_MPI_OPTIONS_INIT;
  mo.root_workers = m->root_workers;
  return fp_mpi_pool_create_ex(out, &o, &mo, MPI_COMM_WORLD, 0);
}

void fpt_mpi_serve(const fp_task *tasks)
{
  /* The fork server and the workers stay countable as our descendants. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  for (;;) {
    opts m;
    MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (!m.more)
      return;
    fp_pool *p = (fp_pool *)&m; /* must be set to NULL */
    report r;
    fp_pool_options o = FP_POOL_OPTIONS_INIT;
    o.tasks = tasks;
    r.rc = create(&p, o, &m);
    r.got_pool = p != NULL;
    r.left = fpt_mpi_children_left();
    MPI_Gather(&r, (int)sizeof r, MPI_BYTE, NULL, 0, MPI_BYTE, 0,
               MPI_COMM_WORLD);
  }
}

int fpt_mpi_pool_create(fp_pool **out, const fp_pool_options *o,
                        unsigned root_workers)
{
  opts m = {1, o->workers, o->max_inflight, o->deadline_grace_ms,
            o->restart_limit, root_workers};
  MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, 0, MPI_COMM_WORLD);
  int rc = create(out, *o, &m);
  if (rc == 0)
    fpt_pool_wait_ready(*out); /* create returns with one worker ready */
  return rc;
}

int fpt_mpi_pool_destroy(fp_pool *p, char *buf, size_t len)
{
  int nranks, bad = 0;
  fp_pool_destroy(p);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  report mine = {0, 0, 0}, all[64]; /* the programs refuse more ranks */
  MPI_Gather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine,
             MPI_BYTE, 0, MPI_COMM_WORLD);
  buf[0] = '\0';
  for (int r = 1; r < nranks; r++)
    if (all[r].rc != 0 || all[r].got_pool || all[r].left) {
      size_t n = strlen(buf);
      snprintf(buf + n, len - n, "%shost rank %d: rc %d, pool %d, a process "
               "left %d", bad ? "; " : "", r, all[r].rc, all[r].got_pool,
               all[r].left);
      bad = 1;
    }
  return bad;
}

void fpt_mpi_serve_end(void)
{
  opts end;
  memset(&end, 0, sizeof end);
  MPI_Bcast(&end, (int)sizeof end, MPI_BYTE, 0, MPI_COMM_WORLD);
}

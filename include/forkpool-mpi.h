/*
 * forkpool-mpi: the forkpool API over MPI.  Link with -lforkpool-mpi
 * (pkg-config forkpool-mpi); the core library, -lforkpool, never links MPI.
 *
 * Every rank of a communicator calls fp_mpi_pool_create collectively.  The
 * root gets an ordinary fp_pool, which every fp_ function accepts; each
 * other rank becomes a host: it forks opts->workers local workers and
 * relays tasks and results between them and the root until the root
 * destroys the pool, then returns 0 with *out NULL.  No task runs in an MPI
 * process.  fp_mpi_pool_create_ex also takes options of this transport's
 * own, such as workers on the root.  fp_mpi_pool_create(3) and
 * fp_mpi_pool_create_ex(3) say everything.
 */
#ifndef FORKPOOL_MPI_H
#define FORKPOOL_MPI_H

#include <forkpool.h>
#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Collective over comm (borrowed; the pool talks on a duplicate of it).
 * On root: 0 and *out a pool whose workers are those of every other rank,
 * opts->workers each (0: the CPUs each host may run on).  On the other ranks:
 * serves until the root's pool is shut down or destroyed, then 0 with *out
 * NULL.  A negative FP_E* on every rank if a host could not start or the
 * root's opts are refused.
 */
FP_EXTERN int fp_mpi_pool_create(fp_pool **out, const fp_pool_options *opts,
                                 MPI_Comm comm, int root);

/*
 * Options of fp_mpi_pool_create_ex.  Always start from FP_MPI_OPTIONS_INIT:
 * it records sizeof the struct your program was compiled with, so that
 * later versions can add fields at the end without breaking your binary.
 */
typedef struct fp_mpi_options {
  size_t size;                /* sizeof(fp_mpi_options); set by _INIT */
  unsigned root_workers;      /* worker processes the root forks too, its
                                 slots beside the hosts'; 0 (the default):
                                 none, as fp_mpi_pool_create; <= 1024 */
} fp_mpi_options;

#define FP_MPI_OPTIONS_INIT { sizeof(fp_mpi_options), 0 }

/*
 * fp_mpi_pool_create with mpi_opts (NULL: FP_MPI_OPTIONS_INIT's defaults,
 * which make it fp_mpi_pool_create).  Collective, as that is; mpi_opts is
 * borrowed, checked on every rank (a bad one on any rank is FP_EINVAL on
 * all), and read on the root only.  With root_workers, the root's pool
 * also owns that many local workers: destroying it (and shutdown,
 * terminate, kill) reaches them as it reaches the hosts'.
 */
FP_EXTERN int fp_mpi_pool_create_ex(fp_pool **out,
                                    const fp_pool_options *opts,
                                    const fp_mpi_options *mpi_opts,
                                    MPI_Comm comm, int root);

#ifdef __cplusplus
}
#endif

#endif

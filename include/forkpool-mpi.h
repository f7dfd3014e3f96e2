/*
 * forkpool-mpi: the forkpool API over MPI.  Link with -lforkpool-mpi
 * (pkg-config forkpool-mpi); the core library, -lforkpool, never links MPI.
 *
 * Every rank of a communicator calls fp_mpi_pool_create collectively.  The
 * root gets an ordinary fp_pool, which every fp_ function accepts; each
 * other rank becomes a host: it forks opts->workers local workers and
 * relays tasks and results between them and the root until the root
 * destroys the pool, then returns 0 with *out NULL.  No task runs in an MPI
 * process.  fp_mpi_pool_create(3) says everything.
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
 * NULL.  A negative FP_E* on every rank if a host could not start.
 */
FP_EXTERN int fp_mpi_pool_create(fp_pool **out, const fp_pool_options *opts,
                                 MPI_Comm comm, int root);

#ifdef __cplusplus
}
#endif

#endif

/*
 * Helpers for the test programs that run under mpirun (tests/check_mpi.c,
 * and tests/check_model.c built as check_model_mpi): MPI's connections
 * opened before any test counts descriptors, a host's check that no
 * process it started is left, and a host's loop that serves each pool
 * rank 0 makes from a few broadcast options.
 */
#ifndef FPT_MPI_H
#define FPT_MPI_H

#include <forkpool-mpi.h>

/* Opens every connection MPI makes between rank 0 and each other rank
 * (collective over MPI_COMM_WORLD), so that a test's count of descriptors
 * on rank 0 sees only the pool's. */
void fpt_mpi_connect_all(void);

/* Waits up to FPT_LIMIT_MS, reaping, until this process (a subreaper) has
 * no child: 0, or 1 if one is left.  No assertion: a host runs no test. */
int fpt_mpi_children_left(void);

/* On a host (rank != 0): makes every pool rank 0 makes with
 * fpt_mpi_pool_create, with tasks, until rank 0 calls fpt_mpi_serve_end;
 * after each, reports to rank 0 how fp_mpi_pool_create_ex returned and
 * whether a process it started is left. */
void fpt_mpi_serve(const fp_task *tasks);

/* On rank 0: the pool of o over MPI_COMM_WORLD, made with every host
 * (fp_mpi_pool_create_ex with root_workers), its workers ready; or its
 * error.  The hosts make theirs with o's workers, max_inflight,
 * deadline_grace_ms and restart_limit and fpt_mpi_serve's tasks (o's other
 * fields are left at their defaults there: o->tasks must be those tasks);
 * their reports are owed to fpt_mpi_pool_destroy either way. */
int fpt_mpi_pool_create(fp_pool **out, const fp_pool_options *o,
                        unsigned root_workers);

/* On rank 0: destroys the pool of fpt_mpi_pool_create (NULL: the create
 * failed) and gathers the hosts' reports: 0 if every host returned 0 with
 * no pool and no process left, else a text saying which did not, in buf. */
int fpt_mpi_pool_destroy(fp_pool *p, char *buf, size_t len);

/* On rank 0: tells the hosts that no pool follows. */
void fpt_mpi_serve_end(void);

#endif

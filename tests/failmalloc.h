/*
 * Allocation failure on demand, for the fault-injection tests.  failmalloc.c
 * defines malloc, calloc, realloc, free, the aligned allocators, strdup and
 * strndup in the test program itself (glibc lets a program interpose them),
 * so the library, msgpack-c and libc's vasprintf all allocate through it.
 * Once armed, the Nth allocation of the armed process fails (and, when
 * persistent, every one after it), or every allocation of at least so many
 * bytes does (fm_arm_over); other processes, such as the fork server
 * and the workers forked from the armed one, never see a failure.
 *
 * Under valgrind, pass --soname-synonyms=somalloc=nouserintercepts, or
 * valgrind replaces these functions and nothing fails.
 */
#ifndef FAILMALLOC_H
#define FAILMALLOC_H

#include <stddef.h>

/* Fails the nth allocation from now (1: the next) in this process only. */
void fm_arm(unsigned long nth, int persistent);
/* Fails, from now until fm_disarm, every allocation of at least bytes (1
 * if 0) in this process only; smaller ones succeed.  A calloc's size is
 * its product, a realloc's the new size. */
void fm_arm_over(size_t bytes);
void fm_disarm(void);
/* Allocations attempted, and failures injected, since the last fm_arm or
 * fm_arm_over. */
unsigned long fm_calls(void);
unsigned long fm_failures(void);
/* Bytes handed out through these functions and not given back, by
 * malloc_usable_size: exact, unlike mallinfo, which counts the blocks in
 * glibc's per-thread cache as in use. */
long fm_heap_in_use(void);

#endif

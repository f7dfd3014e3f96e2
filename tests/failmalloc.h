/*
 * Allocation failure on demand, for the fault-injection tests.  failmalloc.c
 * defines malloc, calloc, realloc and free in the test program itself (glibc
 * lets a program interpose them), so the library, msgpack-c and libc's own
 * strdup and vasprintf all allocate through it.  Once armed, the Nth
 * allocation of the armed process fails (and, when persistent, every one
 * after it); other processes, such as the fork server and the workers forked
 * from the armed one, never see a failure.
 */
#ifndef FAILMALLOC_H
#define FAILMALLOC_H

/* Fails the nth allocation from now (1: the next) in this process only. */
void fm_arm(unsigned long nth, int persistent);
void fm_disarm(void);
/* Allocations attempted, and failures injected, since the last fm_arm. */
unsigned long fm_calls(void);
unsigned long fm_failures(void);
/* Bytes the allocator has handed out and not had back (mallinfo2); 0 when
 * another allocator (a sanitizer, valgrind) is underneath. */
long fm_heap_in_use(void);

#endif

/*
 * A shared library for the mixed-unwinding examples: LIB_outer -> LIB_inner, where LIB is a prefix
 * given with -DLIB=name (fplib or nofplib). build.rs builds it twice, with and without frame
 * pointers; mixmain.c calls it.
 */
#include "mixlib.h"

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long LIB_FN(inner)(unsigned long seed)
{
	unsigned long x = seed;
	for (int i = 0; i < 200000; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	return x;
}

/* Stores after the call so that it cannot become a tail jump that drops this frame. */
unsigned long LIB_FN(outer)(unsigned long seed)
{
	unsigned long x = LIB_FN(inner)(seed);
	sink = x;
	return x ^ sink;
}

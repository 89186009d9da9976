/*
 * A frame-pointer program whose hot work is a callback from libc: main -> run -> qsort -> (libc's
 * frameless merge sort) -> cmp -> spin. A frame-pointer walk breaks in libc between cmp and run, so
 * only unwinding with CFI keeps the whole chain.
 *
 * usage: qsort-fp [SECONDS]   (default 5 s)
 */
#include "common.h"

#define ELEMENTS 4096

static volatile unsigned long sink;
static unsigned long values[ELEMENTS];

__attribute__((noinline)) static unsigned long spin(unsigned long seed)
{
	unsigned long x = seed;
	for (int i = 0; i < 200; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	return x;
}

__attribute__((noinline)) static int cmp(const void *a, const void *b)
{
	unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
	sink += spin(x ^ y);
	return (x > y) - (x < y);
}

__attribute__((noinline)) void run(double seconds)
{
	double end = now_seconds() + seconds;
	unsigned long x = 1;
	while (now_seconds() < end) {
		for (int i = 0; i < ELEMENTS; i++) {
			x = x * 6364136223846793005UL + 1442695040888963407UL;
			values[i] = x >> 16;
		}
		qsort(values, ELEMENTS, sizeof(values[0]), cmp);
	}
}

int main(int argc, char **argv)
{
	run(seconds_arg(argc, argv, 5));
	return 0;
}

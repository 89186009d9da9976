/*
 * A process that lives a few milliseconds: main -> tiny_spin burns MS milliseconds of its own CPU
 * time (not wall time: on a busy machine it still does the same work), then the process exits. Run
 * in a loop beside a busy load, it is gone long before a profiler that reads /proc/PID/maps gets to
 * it, which is what mapping records must make up for.
 *
 * usage: tiny-spin [MS]   (default 3 ms)
 */
#include "common.h"

static volatile unsigned long sink;

static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Stores its result so that -O1 keeps the loop; noinline keeps main -> tiny_spin two frames. The
 * CPU clock is a system call: read it every ~100 us, so its samples stay few. */
__attribute__((noinline)) void tiny_spin(double end)
{
	unsigned long x = sink;
	while (cpu_seconds() < end)
		for (int i = 0; i < 100000; i++)
			x = x * 6364136223846793005UL + 1;
	sink = x;
}

int main(int argc, char **argv)
{
	tiny_spin(cpu_seconds() + (argc > 1 ? atof(argv[1]) : 3) / 1000);
	return 0;
}

/*
 * A process that is gone almost at once: main -> run -> short_lived_work burns CPU for MS
 * milliseconds, then the process exits. spawner starts a stream of them, so a profiler must read
 * their maps while they still exist.
 *
 * usage: short-lived [MS]   (default 100 ms)
 */
#include "common.h"

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long short_lived_work(double end)
{
	unsigned long x = sink;
	while (now_seconds() < end)
		for (int i = 0; i < 100000; i++)
			x = x * 6364136223846793005UL + 1;
	return x;
}

/* Stores the result after the call so that -O2 cannot turn it into a tail jump that drops run. */
__attribute__((noinline)) void run(double seconds)
{
	sink = short_lived_work(now_seconds() + seconds);
}

int main(int argc, char **argv)
{
	run((argc > 1 ? atof(argv[1]) : 100) / 1000);
	return 0;
}

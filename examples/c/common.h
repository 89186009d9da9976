/* Shared bits of the example workloads: run for a number of seconds given on the command line. */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include <stdlib.h>
#include <time.h>

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* First argument: seconds to run (default `fallback`). */
static double seconds_arg(int argc, char **argv, double fallback)
{
	return argc > 1 ? atof(argv[1]) : fallback;
}

#endif

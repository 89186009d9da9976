/*
 * Shared bits of the example workloads: run for a number of seconds given on the command line, find
 * a sibling workload. The helpers are `static inline` because not every workload uses all of them
 * and -Wall flags an unused plain `static` function.
 */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* First argument: seconds to run (default `fallback`). */
static inline double seconds_arg(int argc, char **argv, double fallback)
{
	return argc > 1 ? atof(argv[1]) : fallback;
}

/*
 * Path of the workload `name` in the directory of this executable, so a workload can start another
 * however it was itself started (directly, or exec'd by run-example).
 */
static inline void sibling_path(char *path, size_t size, const char *name)
{
	ssize_t len = readlink("/proc/self/exe", path, size - 1);
	if (len <= 0 || (size_t)len >= size - 1) {
		fprintf(stderr, "cannot read /proc/self/exe\n");
		exit(1);
	}
	path[len] = '\0';
	char *dir_end = strrchr(path, '/') + 1;
	size_t left = size - (size_t)(dir_end - path);
	if ((size_t)snprintf(dir_end, left, "%s", name) >= left) {
		fprintf(stderr, "path of %s too long\n", name);
		exit(1);
	}
}

#endif

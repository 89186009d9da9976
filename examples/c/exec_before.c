/*
 * One PID, two programs: main -> run -> before_exec_work burns CPU for SECONDS/2, then the process
 * execs exec-after (from the directory of this executable) for the other half, so samples of the
 * same PID must be symbolized against a different binary after the exec.
 *
 * usage: exec-before [SECONDS]   (default 2 s)
 */
#include <limits.h>

#include "common.h"

static volatile unsigned long sink;

__attribute__((noinline)) void before_exec_work(double seconds)
{
	double end = now_seconds() + seconds;
	unsigned long x = sink;
	while (now_seconds() < end)
		for (int i = 0; i < 100000; i++)
			x = x * 6364136223846793005UL + 1;
	sink = x;
}

__attribute__((noinline)) void run(double seconds)
{
	char path[PATH_MAX], half[32];
	sibling_path(path, sizeof(path), "exec-after");
	before_exec_work(seconds / 2);
	snprintf(half, sizeof(half), "%f", seconds / 2);
	char *args[] = {path, half, NULL};
	execv(path, args);
	perror(path);
}

int main(int argc, char **argv)
{
	run(seconds_arg(argc, argv, 2));
	return 1;
}

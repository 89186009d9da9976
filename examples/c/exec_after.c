/*
 * The second program of exec-before's PID: main -> run -> after_exec_work burns CPU for SECONDS.
 *
 * usage: exec-after [SECONDS]   (default 1 s)
 */
#include "common.h"

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long after_exec_work(double end)
{
	unsigned long x = sink;
	while (now_seconds() < end)
		for (int i = 0; i < 100000; i++)
			x = x * 6364136223846793005UL + 1;
	return x;
}

/* Stores the result after the call so that the call cannot become a tail jump that drops run. */
__attribute__((noinline)) void run(double seconds)
{
	sink = after_exec_work(now_seconds() + seconds);
}

int main(int argc, char **argv)
{
	run(seconds_arg(argc, argv, 1));
	return 0;
}

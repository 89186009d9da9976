/*
 * Frame pointers on one side of a shared-library call only: main -> run -> LIB_outer -> LIB_inner,
 * where LIB_outer and LIB_inner live in the shared library libmix-LIB.so (mixlib.c) and LIB is given
 * with -DLIB=name. build.rs builds `nofp-calls-fplib` (this program without frame pointers, the
 * library with them) and `fp-calls-nofplib` (the reverse), as a distribution links a frameless
 * program against a library built otherwise, and the reverse.
 *
 * usage: nofp-calls-fplib|fp-calls-nofplib [SECONDS]   (default 5 s)
 */
#include "common.h"
#include "mixlib.h"

static volatile unsigned long sink;

/* Stores after the call so that it cannot become a tail jump that drops run. */
__attribute__((noinline)) void run(double seconds)
{
	double end = now_seconds() + seconds;
	while (now_seconds() < end)
		sink = LIB_FN(outer)(sink);
}

int main(int argc, char **argv)
{
	run(seconds_arg(argc, argv, 5));
	return 0;
}

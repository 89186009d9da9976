/*
 * C++ names: main -> run -> emberprof_demo::Churner<unsigned long>::churn, a member function of a class
 * template in a namespace, whose symbol reads well only demangled.
 *
 * usage: cpp-work [SECONDS]   (default 5 s)
 */
#include "../c/common.h"

namespace emberprof_demo {

template <typename T> class Churner {
public:
	__attribute__((noinline)) T churn(T seed)
	{
		T x = seed;
		for (int i = 0; i < 200000; i++)
			x = x * 6364136223846793005UL + 1442695040888963407UL;
		return x;
	}
};

} // namespace emberprof_demo

static volatile unsigned long sink;

__attribute__((noinline)) void run(double seconds)
{
	emberprof_demo::Churner<unsigned long> churner;
	double end = now_seconds() + seconds;
	while (now_seconds() < end)
		sink = churner.churn(sink);
}

int main(int argc, char **argv)
{
	run(seconds_arg(argc, argv, 5));
	return 0;
}

/*
 * Two named threads that burn CPU: "worker-alpha" in alpha_work and "worker-beta" in beta_work, while
 * the main thread waits for them.
 *
 * usage: threads [SECONDS]   (default 5 s)
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "common.h"

static volatile unsigned long sink;
static double seconds;

__attribute__((noinline)) static void spin_until(double end)
{
	unsigned long x = sink;
	while (now_seconds() < end)
		for (int i = 0; i < 100000; i++)
			x = x * 6364136223846793005UL + 1;
	sink = x;
}

__attribute__((noinline)) void alpha_work(void) { spin_until(now_seconds() + seconds); }

__attribute__((noinline)) void beta_work(void) { spin_until(now_seconds() + seconds); }

static void *alpha_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "worker-alpha");
	alpha_work();
	return NULL;
}

static void *beta_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "worker-beta");
	beta_work();
	return NULL;
}

int main(int argc, char **argv)
{
	seconds = seconds_arg(argc, argv, 5);
	pthread_t alpha, beta;
	pthread_create(&alpha, NULL, alpha_main, NULL);
	pthread_create(&beta, NULL, beta_main, NULL);
	pthread_join(alpha, NULL);
	pthread_join(beta, NULL);
	return 0;
}

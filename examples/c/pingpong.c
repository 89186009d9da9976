/*
 * Context switches as fast as two threads can make them, for the cost of --off-cpu: "ping" and
 * "pong" hand one byte back and forth over two pipes ROUNDS times (each hand-over is a switch-out
 * and a switch-in of each thread); with `pool`, a main thread hands ROUNDS tiny tasks one at a time
 * to four workers waiting on a condition variable, as a thread pool does. Prints the wall time and
 * the rate, which the benchmark compares with and without profiling.
 *
 * usage: pingpong ROUNDS [pool]
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "common.h"

static long rounds;
static int ping_pipe[2], pong_pipe[2];

__attribute__((noinline)) static void hand_over(int out, int in)
{
	char byte = 0;
	if (write(out, &byte, 1) != 1 || read(in, &byte, 1) != 1) {
		perror("pipe");
		exit(1);
	}
}

static void *pong_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "pong");
	char byte;
	for (long i = 0; i < rounds; i++) {
		if (read(ping_pipe[0], &byte, 1) != 1 || write(pong_pipe[1], &byte, 1) != 1) {
			perror("pipe");
			exit(1);
		}
	}
	return NULL;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t posted = PTHREAD_COND_INITIALIZER, taken = PTHREAD_COND_INITIALIZER;
static long queued, done;
static volatile unsigned long sink;

static void *worker_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "worker");
	for (;;) {
		pthread_mutex_lock(&lock);
		while (queued == 0 && done < rounds)
			pthread_cond_wait(&posted, &lock);
		if (queued == 0) {
			pthread_mutex_unlock(&lock);
			return NULL;
		}
		queued--;
		done++;
		pthread_cond_signal(&taken);
		pthread_mutex_unlock(&lock);
		sink = sink * 31 + 1; /* the task */
	}
}

static void run_pool(void)
{
	pthread_t workers[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&workers[i], NULL, worker_main, NULL);
	for (long i = 0; i < rounds; i++) {
		pthread_mutex_lock(&lock);
		while (queued > 0)
			pthread_cond_wait(&taken, &lock);
		queued++;
		pthread_cond_signal(&posted);
		pthread_mutex_unlock(&lock);
	}
	pthread_mutex_lock(&lock);
	while (done < rounds)
		pthread_cond_wait(&taken, &lock);
	pthread_cond_broadcast(&posted);
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < 4; i++)
		pthread_join(workers[i], NULL);
}

int main(int argc, char **argv)
{
	rounds = argc > 1 ? atol(argv[1]) : 100000;
	int pool = argc > 2 && strcmp(argv[2], "pool") == 0;
	double start = now_seconds();
	if (pool) {
		run_pool();
	} else {
		if (pipe(ping_pipe) != 0 || pipe(pong_pipe) != 0) {
			perror("pipe");
			return 1;
		}
		pthread_t pong;
		pthread_create(&pong, NULL, pong_main, NULL);
		for (long i = 0; i < rounds; i++)
			hand_over(ping_pipe[1], pong_pipe[0]);
		pthread_join(pong, NULL);
	}
	double seconds = now_seconds() - start;
	printf("%s %ld rounds in %.3f s: %.0f rounds/s\n", pool ? "pool" : "pingpong", rounds, seconds,
	       rounds / seconds);
	return 0;
}

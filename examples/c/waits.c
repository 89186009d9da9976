/*
 * Threads that wait, for off-CPU (wall-clock) profiles. One mode per run, so that each test sees one
 * kind of waiting on an otherwise idle process:
 *
 *   sleep  "sleeper" burns 20 ms of its own CPU time in sleeper_burn, then sleeps 60 ms in
 *          sleeper_nap (nanosleep), in a loop: about 25 % on CPU, 75 % off.
 *   pipe   "reader" blocks in reader_wait on a read from a pipe nobody writes to: all off CPU.
 *   mutex  "holder" holds a mutex for 20 ms of CPU in holder_work, then lets go for a moment;
 *          "waiter" takes it in waiter_lock (pthread_mutex_lock, futex_wait in the kernel), so it
 *          waits nearly all the time.
 *
 * The main thread waits in pthread_join. Named threads: the tests look for them by name.
 *
 * usage: waits MODE [SECONDS]   (default 5 s)
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "common.h"

static volatile unsigned long sink;
static double end_time;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double thread_cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Burns `seconds` of this thread's CPU time (not wall time: a busy machine only makes it longer). */
__attribute__((noinline)) static void burn_cpu(double seconds)
{
	unsigned long x = sink;
	double end = thread_cpu_seconds() + seconds;
	while (thread_cpu_seconds() < end)
		for (int i = 0; i < 10000; i++)
			x = x * 6364136223846793005UL + 1;
	sink = x;
}

__attribute__((noinline)) void sleeper_burn(void) { burn_cpu(0.020); }

__attribute__((noinline)) void sleeper_nap(void)
{
	struct timespec nap = {.tv_sec = 0, .tv_nsec = 60 * 1000 * 1000};
	nanosleep(&nap, NULL);
}

static void *sleeper_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "sleeper");
	while (now_seconds() < end_time) {
		sleeper_burn();
		sleeper_nap();
	}
	return NULL;
}

__attribute__((noinline)) void reader_wait(int fd)
{
	char byte;
	if (read(fd, &byte, 1) < 0)
		perror("read");
}

static void *reader_main(void *arg)
{
	pthread_setname_np(pthread_self(), "reader");
	reader_wait(*(int *)arg);
	return NULL;
}

__attribute__((noinline)) void holder_work(void) { burn_cpu(0.020); }

static void *holder_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "holder");
	while (now_seconds() < end_time) {
		pthread_mutex_lock(&lock);
		holder_work();
		pthread_mutex_unlock(&lock);
		/* Long enough for the woken waiter to take the mutex. */
		usleep(1000);
	}
	return NULL;
}

__attribute__((noinline)) void waiter_lock(void) { pthread_mutex_lock(&lock); }

static void *waiter_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "waiter");
	while (now_seconds() < end_time) {
		waiter_lock();
		pthread_mutex_unlock(&lock);
		/* Let the holder take it again, so that the waiter waits in waiter_lock. */
		usleep(500);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	double seconds = argc > 2 ? atof(argv[2]) : 5;
	end_time = now_seconds() + seconds;
	pthread_t threads[2];
	int count = 0;
	int fds[2];
	if (strcmp(mode, "sleep") == 0) {
		pthread_create(&threads[count++], NULL, sleeper_main, NULL);
	} else if (strcmp(mode, "pipe") == 0) {
		if (pipe(fds) != 0) {
			perror("pipe");
			return 1;
		}
		pthread_create(&threads[count++], NULL, reader_main, &fds[0]);
		/* Nobody writes: the reader ends when the process does. */
		double left = end_time - now_seconds();
		if (left > 0)
			usleep((useconds_t)(left * 1e6));
		return 0;
	} else if (strcmp(mode, "mutex") == 0) {
		pthread_create(&threads[count++], NULL, holder_main, NULL);
		pthread_create(&threads[count++], NULL, waiter_main, NULL);
	} else {
		fprintf(stderr, "usage: waits sleep|pipe|mutex [SECONDS]\n");
		return 2;
	}
	for (int i = 0; i < count; i++)
		pthread_join(threads[i], NULL);
	return 0;
}

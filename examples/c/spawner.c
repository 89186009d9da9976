/*
 * A stream of short-lived processes: main -> run -> spawn_one forks and execs short-lived (from the
 * directory of this executable) COUNT times, one after another, waiting for each and pausing GAP_MS
 * before the next.
 *
 * usage: spawner [COUNT [MS [GAP_MS]]]   (defaults: 40 children of 100 ms each, 50 ms apart)
 *        prints each child's PID on a line of its own; exits 0 if every child exited 0, else 1
 */
#include <limits.h>
#include <sys/wait.h>

#include "common.h"

/* Runs `path` with argument `ms` and waits for it; returns whether it exited 0. */
__attribute__((noinline)) int spawn_one(char *path, char *ms)
{
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 0;
	}
	if (pid == 0) {
		char *args[] = {path, ms, NULL};
		execv(path, args);
		perror(path);
		_exit(127);
	}
	/* The child's PID on stdout, so that a test can tell these children from other processes. */
	printf("%d\n", (int)pid);
	fflush(stdout);
	int status;
	if (waitpid(pid, &status, 0) < 0) {
		perror("waitpid");
		return 0;
	}
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

__attribute__((noinline)) int run(int count, char *ms, long gap_ms)
{
	char path[PATH_MAX];
	sibling_path(path, sizeof(path), "short-lived");
	struct timespec gap = {gap_ms / 1000, gap_ms % 1000 * 1000000};
	int ok = 1;
	for (int i = 0; i < count; i++) {
		if (i > 0)
			nanosleep(&gap, NULL);
		ok &= spawn_one(path, ms);
	}
	return ok;
}

int main(int argc, char **argv)
{
	int count = argc > 1 ? atoi(argv[1]) : 40;
	char *ms = argc > 2 ? argv[2] : "100";
	long gap_ms = argc > 3 ? atol(argv[3]) : 50;
	return run(count, ms, gap_ms) ? 0 : 1;
}

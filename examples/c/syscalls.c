/*
 * A syscall-heavy loop: main -> run -> read_zero, reading /dev/zero a page at a time, so most
 * samples land in the kernel under the read system call.
 *
 * usage: syscalls [SECONDS]   (default 5 s)
 */
#include <fcntl.h>
#include <unistd.h>

#include "common.h"

__attribute__((noinline)) void read_zero(int fd)
{
	static char buf[4096];
	for (int i = 0; i < 1000; i++)
		if (read(fd, buf, sizeof(buf)) < 0)
			exit(1);
}

__attribute__((noinline)) void run(double seconds)
{
	int fd = open("/dev/zero", O_RDONLY);
	if (fd < 0)
		exit(1);
	double end = now_seconds() + seconds;
	while (now_seconds() < end)
		read_zero(fd);
	close(fd);
}

int main(int argc, char **argv)
{
	run(seconds_arg(argc, argv, 5));
	return 0;
}

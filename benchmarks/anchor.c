// The C anchor for benchmarks/run.py: the syscalls of one pinhole cell,
// vmsplice.memfd.shared.ro.written.pwrite (file-to-pin), in a loop with no harness around them.
// A three-page memfd written through the file, its middle page mapped and spliced into a
// pipe, a pwrite, the pipe's pages read through tee() (twice: before and after), both
// compared, then everything closed. Prints the nanoseconds per iteration.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static char page[4096], seen[4096];

static void peek(int source)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) || tee(source, p[1], sizeof(seen), 0) != sizeof(seen) ||
	    read(p[0], seen, sizeof(seen)) != sizeof(seen))
		exit(1);
	close(p[0]);
	close(p[1]);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 2000;
	struct timespec a, b;

	memset(page, 'w', sizeof(page));
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		int fd = memfd_create("anchor", MFD_CLOEXEC), p[2];
		char *map;
		struct iovec iov = { .iov_len = 4096 };

		if (fd < 0 || ftruncate(fd, 3 * 4096))
			return 1;
		for (int k = 0; k < 3; k++)
			pwrite(fd, page, sizeof(page), k * 4096);
		map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096);
		if (map == MAP_FAILED || pipe2(p, O_CLOEXEC))
			return 1;
		iov.iov_base = map;
		if (vmsplice(p[1], &iov, 1, 0) != 4096)
			return 1;
		peek(p[0]);
		page[0] = 'f';
		pwrite(fd, page, sizeof(page), 4096);
		pread(fd, seen, sizeof(seen), 4096);
		peek(p[0]);
		if (memcmp(seen, page, sizeof(page)))
			return 2;
		page[0] = 'w';
		close(p[0]);
		close(p[1]);
		munmap(map, 4096);
		close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%ld\n", ((b.tv_sec - a.tv_sec) * 1000000000L + b.tv_nsec - a.tv_nsec) / n);
	return 0;
}

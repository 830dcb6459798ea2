/*
 * The C baseline for benchmarks/demo_roundtrip.py: the same minor-fault round trip as
 * `uffdctl demo minor` (one memfd mapped twice, contents written through the plain mapping,
 * the other mapping registered MINOR, each first touch resolved with UFFDIO_CONTINUE), with
 * the handler in the main thread and one toucher thread, both pinned as --cpus asks.
 *
 * usage: minor_handler shmem|hugetlb PAGES same|spread|any
 * prints one JSON object: {"samples_ns": [...], "floor_ns": [...], "total_ns": N,
 * "floor_total_ns": N, "cpu_ns": N}: each touch timed, the whole touching loop (first touch
 * to last return), which over the pages is the per-fault cost demo_roundtrip.py compares,
 * and the CPU time both threads took meanwhile (the same span).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static char *area, *alias;
static size_t page_size, pages;
static long *samples;
static long total_ns, cpu_ns;
static int toucher_cpu = -1;
static volatile int done;

static void die(const char *what)
{
	fprintf(stderr, "minor_handler: %s: %s\n", what, strerror(errno));
	exit(3);
}

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static uint64_t now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

static void pin(int cpu)
{
	cpu_set_t set;
	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity");
}

static long touch_all(char *base, long *out)
{
	uint64_t start = now_ns();
	for (size_t i = 0; i < pages; i++) {
		uint64_t t0 = now_ns();
		(void)*(volatile char *)(base + i * page_size);
		out[i] = (long)(now_ns() - t0);
	}
	return (long)(now_ns() - start);
}

static void *toucher(void *arg)
{
	(void)arg;
	pin(toucher_cpu);
	/* The CPU time of both threads while the faults are taken: unlike the wall time, what
	 * other programs on the CPU take does not enter it. */
	uint64_t cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	total_ns = touch_all(area, samples);
	cpu_ns = (long)(clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0);
	__atomic_store_n(&done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int make_memfd(int huge)
{
	int fd = memfd_create("uffdctl-bench", MFD_CLOEXEC | (huge ? MFD_HUGETLB : 0));
	if (fd < 0)
		die("memfd_create");
	if (ftruncate(fd, (off_t)(pages * page_size)))
		die("ftruncate");
	return fd;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s shmem|hugetlb PAGES same|spread|any\n", argv[0]);
		return 2;
	}
	int huge = !strcmp(argv[1], "hugetlb");
	pages = strtoul(argv[2], NULL, 10);
	page_size = huge ? 2u << 20 : (size_t)sysconf(_SC_PAGESIZE);
	int handler_cpu = -1;
	cpu_set_t allowed;
	sched_getaffinity(0, sizeof(allowed), &allowed);
	int first = -1, second = -1;
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &allowed)) {
			if (first < 0)
				first = c;
			else if (second < 0)
				second = c;
		}
	if (!strcmp(argv[3], "same"))
		handler_cpu = toucher_cpu = first;
	else if (!strcmp(argv[3], "spread")) {
		handler_cpu = first;
		toucher_cpu = second >= 0 ? second : first;
	}

	int fd = make_memfd(huge);
	size_t len = pages * page_size;
	area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	alias = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (area == MAP_FAILED || alias == MAP_FAILED)
		die("mmap");
	for (size_t i = 0; i < pages; i++)
		memset(alias + i * page_size, (int)(i + 1), page_size);

	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		die("userfaultfd");
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = (huge ? UFFD_FEATURE_MINOR_HUGETLBFS : UFFD_FEATURE_MINOR_SHMEM) |
			    UFFD_FEATURE_THREAD_ID,
	};
	if (ioctl(uffd, UFFDIO_API, &api))
		die("UFFDIO_API");
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)area, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MINOR,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER");

	samples = calloc(pages, sizeof(long));
	pin(handler_cpu);
	pthread_t t;
	pthread_create(&t, NULL, toucher, NULL);
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	struct uffd_msg msgs[64];
	while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		ssize_t n = read(uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN)
				continue;
			die("read");
		}
		for (ssize_t k = 0; k < n / (ssize_t)sizeof(msgs[0]); k++) {
			if (msgs[k].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t addr = msgs[k].arg.pagefault.address & ~(uint64_t)(page_size - 1);
			struct uffdio_continue cont = {
				.range = { .start = addr, .len = page_size },
			};
			if (ioctl(uffd, UFFDIO_CONTINUE, &cont) && errno != EEXIST)
				die("UFFDIO_CONTINUE");
		}
	}
	pthread_join(t, NULL);
	for (size_t i = 0; i < pages; i++)
		if (area[i * page_size] != (char)(i + 1) || alias[i * page_size] != (char)(i + 1)) {
			fprintf(stderr, "minor_handler: page %zu differs\n", i);
			return 1;
		}

	/* The floor: the same touch on an unregistered mapping of a memfd written the same way. */
	int fd2 = make_memfd(huge);
	char *plain = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
	char *plain_alias = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
	if (plain == MAP_FAILED || plain_alias == MAP_FAILED)
		die("mmap");
	for (size_t i = 0; i < pages; i++)
		memset(plain_alias + i * page_size, (int)(i + 1), page_size);
	long *floor = calloc(pages, sizeof(long));
	pin(toucher_cpu);
	long floor_total_ns = touch_all(plain, floor);

	printf("{\"samples_ns\": [");
	for (size_t i = 0; i < pages; i++)
		printf("%s%ld", i ? ", " : "", samples[i]);
	printf("], \"floor_ns\": [");
	for (size_t i = 0; i < pages; i++)
		printf("%s%ld", i ? ", " : "", floor[i]);
	printf("], \"total_ns\": %ld, \"floor_total_ns\": %ld, \"cpu_ns\": %ld}\n", total_ns,
	       floor_total_ns, cpu_ns);
	return 0;
}

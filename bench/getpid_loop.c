/*
 * getpid_loop: times raw getpid system calls on one CPU.
 *
 *   getpid_loop CPU CALLS [REPS]
 *
 * Pins itself to CPU, makes CALLS / 10 untimed warm-up calls, then REPS (default 1) timed runs
 * of CALLS raw syscall(SYS_getpid) each, and prints one line per run: the nanoseconds per call
 * (CLOCK_MONOTONIC around the loop, three decimals). Used by syscall_overhead.sh.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long parse(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "getpid_loop: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

static double now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("getpid_loop: clock_gettime");
        exit(1);
    }
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void calls(long n)
{
    for (long i = 0; i < n; i++)
        /* The raw system call: glibc's getpid() is a real call too, but say so explicitly. */
        syscall(SYS_getpid);
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: getpid_loop CPU CALLS [REPS]\n");
        return 2;
    }
    long cpu = parse(argv[1], "CPU");
    long n = parse(argv[2], "CALLS");
    long reps = argc == 4 ? parse(argv[3], "REPS") : 1;
    if (n == 0 || reps == 0) {
        fprintf(stderr, "getpid_loop: CALLS and REPS must be positive\n");
        return 2;
    }

    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        fprintf(stderr, "getpid_loop: pinning to CPU %ld: %s\n", cpu, strerror(errno));
        return 1;
    }

    calls(n / 10);
    for (long r = 0; r < reps; r++) {
        double t0 = now_ns();
        calls(n);
        double t1 = now_ns();
        printf("%.3f\n", (t1 - t0) / (double)n);
    }
    return 0;
}

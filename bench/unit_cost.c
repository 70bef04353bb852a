/* What sd_pid_get_unit() answers for a process and what one call costs: the per-record lookup
 * of daemon/audit.c on the journal path. bench/run runs it inside the caller's cgroup. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <systemd/sd-login.h>

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
	/* By default our own pid, looked up through /proc/PID like any other (not 0, "self"). */
	pid_t pid = argc > 1 ? (pid_t)atoi(argv[1]) : getpid();
	long n = argc > 2 ? atol(argv[2]) : 5000;
	char *unit = NULL;
	int r;
	double t0;

	if (argc > 3 || n < 1 || pid < 1) {
		fputs("usage: unit_cost [PID [CALLS]]\n", stderr);
		return 2;
	}
	r = sd_pid_get_unit(pid, &unit);
	t0 = cpu_s();
	for (long i = 0; i < n; i++) {
		char *u = NULL;
		sd_pid_get_unit(pid, &u);
		free(u);
	}
	printf("{\"pid\":%d,\"result\":%d,\"error\":\"%s\",\"unit\":\"%s\",\"calls\":%ld,"
	       "\"us_per_call\":%.2f}\n",
	       (int)pid, r, r < 0 ? strerror(-r) : "", r < 0 ? "" : unit, n,
	       (cpu_s() - t0) / (double)n * 1e6);
	free(unit);
	return 0;
}

/* CPU cost of one audit record (daemon/audit.c) as written outside the journal: a JSON line.
 *
 * Build and run from the repository root (stderr to /dev/null, as the figure in the README):
 *   cc -O2 -std=gnu11 -D_GNU_SOURCE -Idaemon -Ilib $(pkg-config --cflags jansson) \
 *      bench/audit_cost.c daemon/audit.c daemon/log.c lib/json_out.c -o /tmp/audit_cost \
 *      $(pkg-config --libs jansson libsystemd) && /tmp/audit_cost 2>/dev/null */
#include <stdio.h>
#include <sys/resource.h>

#include "audit.h"

static double cpu_seconds(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
	       (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int main(void)
{
	struct audit_signature a = {"main",
	                            "nFkmW2rAvUYUQo1-18edS_gLRJFw4eurkn2G8kC-oHA",
	                            "gyNYht1LhVG776IkoktAvA",
	                            "[\"api://orders\",\"api://billing\"]",
	                            1795889881,
	                            1000,
	                            22391};
	const int n = 200000;
	double t0 = cpu_seconds();

	for (int i = 0; i < n; i++)
		audit_signed(&a);
	printf("%d records: %.2f us of CPU each\n", n, (cpu_seconds() - t0) / n * 1e6);
	return 0;
}

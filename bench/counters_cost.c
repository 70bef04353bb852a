/* CPU cost of what the metrics count for one granted signature (docs/performance.md,
 * "Metrics"), on the daemon's own counting code (daemon/counters.c, daemon/metrics.c): the
 * issuer's granted counter and latency histogram through the series cached per runtime, the
 * helper call's counter found by op name, the audit record's counter, and the clock reading
 * the latency needs. THREADS threads at once, as the daemon's sign workers, on the same series
 * (their cache lines move between CPUs as in the daemon).
 *
 * Built by meson (build/bench/counters_cost); run: build/bench/counters_cost [THREADS] [N].
 * With -Dcounters=false every series is NULL and the figure is the floor of the calls. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "counters.h"

static long per_thread;
static struct issuer_series series;

static uint64_t monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static double thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void *worker(void *arg)
{
	double *ns = arg, t0 = thread_cpu_ns();

	for (long i = 0; i < per_thread; i++) {
		uint64_t start = monotonic_us();
		/* issue.c -> hsmc.c: one "sign" call to a helper, counted by its op name */
		counters_hsm_call("sign", 0, NULL);
		/* audit.c: the record written */
		metrics_add(metrics_series(&counters.audit_records, NULL, NULL), 1);
		/* sign_api.c count_outcome(): granted, timed */
		metrics_add(series.granted, 1);
		metrics_observe(&counters.sign_duration, series.duration, monotonic_us() - start);
	}
	*ns = thread_cpu_ns() - t0;
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? atoi(argv[1]) : 2;
	long n = argc > 2 ? atol(argv[2]) : 20000000;
	pthread_t t[64];
	double ns[64] = {0}, total = 0;

	if (threads < 1 || threads > 64 || n < threads) {
		fprintf(stderr, "usage: counters_cost [THREADS 1..64] [N]\n");
		return 2;
	}
	per_thread = n / threads;
	/* As at start: the scrape makes every issuer's series, the runtime caches them; the
	 * daemon's helper ops are counted before the first signature. */
	counters_issuer_series("main", &series);
	for (const char *const *op = (const char *const[]){"ready", "probe", "prepare-alg",
	                                                   "index-read", "list-records", NULL};
	     *op; op++)
		counters_hsm_call(*op, 0, NULL);
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, worker, &ns[i]);
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		total += ns[i];
	}
	printf("%d threads, %ld signatures' counting: %.1f ns of CPU each%s\n", threads,
	       per_thread * threads, total / (double)(per_thread * threads),
	       series.granted ? "" : " (-Dcounters=false: nothing counted)");
	return 0;
}

/* One token bucket per kind of client-caused log line (log_limit.h). */
#include "log_limit.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "ratelimit.h"

static const char *const kind_names[LOG_KIND_N] = {
    [LOG_KIND_PUBLIC_HTTP] = "http (JWKS port)",
    [LOG_KIND_LOCAL_HTTP] = "http (sign and admin sockets)",
    [LOG_KIND_REFUSED_CALLER] = "refused callers",
};

/* Process-wide, like the log sink itself (stderr, the journal) and journald's own limit. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct ratelimit limits[LOG_KIND_N];

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + 1;
}

/* Called with lock held; the line is written after it is released. */
static uint64_t due(enum log_kind kind, uint64_t now, uint64_t *span)
{
	return ratelimit_due(&limits[kind], now, span);
}

static void report(enum log_kind kind, uint64_t n, uint64_t span_ns)
{
	log_warning(
	    "%s: %llu messages suppressed in the last %llus (rate limit: %d lines a second, "
	    "%d at once)",
	    kind_names[kind], (unsigned long long)n,
	    (unsigned long long)((span_ns + 999999999ull) / 1000000000ull), RATELIMIT_RATE,
	    RATELIMIT_BURST);
}

bool log_admit(enum log_kind kind)
{
	uint64_t now = now_ns(), span = 0, n;
	bool ok;

	pthread_mutex_lock(&lock);
	n = due(kind, now, &span);
	ok = ratelimit_take(&limits[kind], now);
	pthread_mutex_unlock(&lock);
	if (n)
		report(kind, n, span);
	return ok;
}

void log_limit_flush(void)
{
	uint64_t now = now_ns();

	for (int k = 0; k < LOG_KIND_N; k++) {
		uint64_t span = 0, n;

		pthread_mutex_lock(&lock);
		n = due((enum log_kind)k, now, &span);
		pthread_mutex_unlock(&lock);
		if (n)
			report((enum log_kind)k, n, span);
	}
}

/* The daemon's metric families that the hot paths count into (docs/operations.md,
 * "Monitoring"); scraped by http/metrics_http.c. Process-wide, like audit.c's sink: the token
 * client, the audit writer and the HTTP plumbing count without a daemon pointer. */
#pragma once
#include "metrics.h"

struct counters {
	struct metric_family sign_requests;       /* issuer, result */
	struct metric_family sign_duration;       /* issuer; granted requests */
	struct metric_family hsm_operations;      /* op */
	struct metric_family hsm_errors;          /* op, ckr */
	struct metric_family jwks_requests;       /* status */
	struct metric_family connections_refused; /* listener */
	struct metric_family audit_records, audit_dropped;
	struct metric_family key_generation_failures; /* issuer */
	struct metric_family connections_open;        /* listener; a gauge */
};

extern struct counters counters;

/* One helper call of op (its protocol name) that ended with r (0 or a negative errno) and, on
 * failure, the helper's error text. */
void counters_hsm_call(const char *op, int r, const char *err);

/* The CKR_* name in text, copied to buf; "helper_lost" for -ECONNABORTED, else "other". */
const char *counters_ckr(int r, const char *text, char *buf, size_t size);

/* A signing decision of issuer: result is "granted", a refusal code or "error" (nothing
 * could be answered); us: request received -> answer of a granted one (0: not timed). No
 * allocation once the issuer's series exist (the scrape makes them for every issuer). */
void counters_sign(const char *issuer, const char *result, uint64_t us);

/* An issuer's series of the signing hot path, looked up once per runtime (runtime.c): a
 * granted request then costs two atomic additions and no lookup. */
struct issuer_series {
	struct metric_series *granted, *duration;
};

/* Finds (or makes, at 0: rate() needs the series from the start) the issuer's granted, error,
 * duration and key generation failure series. Pointers may be NULL when out of memory. */
void counters_issuer_series(const char *issuer, struct issuer_series *ret);

/* A gauge of counters (connections_open) moved by delta; s may be NULL. */
static inline void counters_gauge_add(struct metric_series *s, int delta)
{
	/* Unsigned arithmetic wraps: adding -1 as 2^64 - 1 takes one away. */
	metrics_add(s, (uint64_t)(int64_t)delta);
}

/* Prometheus metrics of tokensignd (docs/operations.md, "Monitoring"): counters and histograms
 * updated on the hot path with relaxed atomics, rendered in the text exposition format when
 * scraped. Label values come from bounded sets (issuer names, result codes, op and CKR names),
 * never from a kid, a jti or a caller. */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define METRICS_MAX_LABELS 2

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

/* One labelled series. Created on first use, never freed before the family. */
struct metric_series {
	struct metric_series *_Atomic next;
	char *values[METRICS_MAX_LABELS];
	_Atomic uint64_t value;    /* counter; histogram: count */
	_Atomic uint64_t sum_us;   /* histogram: sum of observations, microseconds */
	_Atomic uint64_t *buckets; /* histogram: per bucket (not cumulative) */
};

struct metric_family {
	const char *name, *help;
	enum metric_type type;
	const char *labels[METRICS_MAX_LABELS]; /* NULL-terminated early when fewer */
	const double *bounds;                   /* histogram bucket upper bounds, seconds */
	size_t n_bounds;
	struct metric_series *_Atomic head;
	size_t n_series;
	size_t max_series; /* a bound on label combinations: beyond it, values go to "other" */
	pthread_mutex_t lock;
};

/* The series of fam with these label values (as many as fam has labels), created when new:
 * the lookup takes no lock. NULL only when out of memory. */
struct metric_series *metrics_series(struct metric_family *fam, const char *v0, const char *v1);

static inline void metrics_add(struct metric_series *s, uint64_t n)
{
	if (s)
		atomic_fetch_add_explicit(&s->value, n, memory_order_relaxed);
}

/* A histogram observation of us microseconds. */
void metrics_observe(struct metric_family *fam, struct metric_series *s, uint64_t us);

/* Writes fam in the text exposition format (# HELP, # TYPE, one line per series). */
void metrics_render(struct metric_family *fam, FILE *out);

/* A gauge line with its # HELP and # TYPE, for values computed at scrape time. label may be
 * NULL (no label). */
void metrics_gauge_head(FILE *out, const char *name, const char *help);
void metrics_gauge(FILE *out, const char *name, const char *label, const char *value, double v);

/* Writes s as a label value: backslash, double quote and newline escaped. */
void metrics_label_value(FILE *out, const char *s);

void metrics_family_free(struct metric_family *fam);

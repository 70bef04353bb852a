/* Metric families and their text exposition (metrics.h). */
#include "metrics.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static size_t n_labels(const struct metric_family *fam)
{
	size_t n = 0;

	while (n < METRICS_MAX_LABELS && fam->labels[n])
		n++;
	return n;
}

static struct metric_series *find(struct metric_family *fam, const char *const v[])
{
	size_t n = n_labels(fam);

	for (struct metric_series *s = atomic_load_explicit(&fam->head, memory_order_acquire); s;
	     s = atomic_load_explicit(&s->next, memory_order_acquire)) {
		size_t i = 0;
		while (i < n && same(s->values[i], v[i]))
			i++;
		if (i == n)
			return s;
	}
	return NULL;
}

static void series_free(struct metric_series *s)
{
	for (size_t i = 0; i < METRICS_MAX_LABELS; i++)
		free(s->values[i]);
	free(s->buckets);
	free(s);
}

struct metric_series *metrics_series(struct metric_family *fam, const char *v0, const char *v1)
{
	const char *v[METRICS_MAX_LABELS] = {v0, v1};
	const char *other[METRICS_MAX_LABELS] = {"other", "other"};
	struct metric_series *s, *made;
	size_t n = n_labels(fam);

#ifdef TOKENSIGN_NO_COUNTERS
	/* -Dcounters=false: no series, so every count is a NULL test (metrics_add()). */
	return NULL;
#endif
	if ((s = find(fam, v)))
		return s;
	pthread_mutex_lock(&fam->lock);
	s = find(fam, v);
	if (!s && fam->max_series && fam->n_series >= fam->max_series) {
		/* A bound on cardinality: whatever comes past it is counted, under "other". */
		for (size_t i = 0; i < n; i++)
			v[i] = other[i];
		s = find(fam, v);
	}
	if (!s && (made = calloc(1, sizeof(*made)))) {
		bool ok = true;
		for (size_t i = 0; i < n; i++)
			ok = ok && (made->values[i] = strdup(v[i] ? v[i] : "")) != NULL;
		if (ok && fam->type == METRIC_HISTOGRAM)
			ok =
			    (made->buckets = calloc(fam->n_bounds, sizeof(*made->buckets))) != NULL;
		if (ok) {
			atomic_store_explicit(&made->next, atomic_load(&fam->head),
			                      memory_order_relaxed);
			atomic_store_explicit(&fam->head, made, memory_order_release);
			fam->n_series++;
			s = made;
		} else {
			series_free(made);
		}
	}
	pthread_mutex_unlock(&fam->lock);
	return s;
}

void metrics_observe(struct metric_family *fam, struct metric_series *s, uint64_t us)
{
	double seconds = (double)us / 1e6;

	if (!s)
		return;
	for (size_t i = 0; i < fam->n_bounds; i++)
		if (seconds <= fam->bounds[i]) {
			atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
			break;
		}
	atomic_fetch_add_explicit(&s->sum_us, us, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->value, 1, memory_order_relaxed);
}

void metrics_label_value(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(out, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", out);
		else
			fputc(*s, out);
	}
}

/* {a="x",b="y"} with extra (a le="..." for buckets) appended; nothing when there is no label. */
static void labels(FILE *out, const struct metric_family *fam, const struct metric_series *s,
                   const char *extra_name, const char *extra_value)
{
	size_t n = n_labels(fam);

	if (n == 0 && !extra_name)
		return;
	fputc('{', out);
	for (size_t i = 0; i < n; i++) {
		fprintf(out, "%s%s=\"", i ? "," : "", fam->labels[i]);
		metrics_label_value(out, s->values[i]);
		fputc('"', out);
	}
	if (extra_name)
		fprintf(out, "%s%s=\"%s\"", n ? "," : "", extra_name, extra_value);
	fputc('}', out);
}

static const char *type_name(enum metric_type t)
{
	return t == METRIC_COUNTER ? "counter" : t == METRIC_GAUGE ? "gauge" : "histogram";
}

void metrics_render(struct metric_family *fam, FILE *out)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", fam->name, fam->help, fam->name,
	        type_name(fam->type));
	for (struct metric_series *s = atomic_load_explicit(&fam->head, memory_order_acquire); s;
	     s = atomic_load_explicit(&s->next, memory_order_acquire)) {
		uint64_t count = atomic_load_explicit(&s->value, memory_order_relaxed);
		if (fam->type != METRIC_HISTOGRAM) {
			fputs(fam->name, out);
			labels(out, fam, s, NULL, NULL);
			fprintf(out, " %llu\n", (unsigned long long)count);
			continue;
		}
		uint64_t cum = 0;
		for (size_t i = 0; i < fam->n_bounds; i++) {
			char le[32];
			cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
			snprintf(le, sizeof(le), "%g", fam->bounds[i]);
			fprintf(out, "%s_bucket", fam->name);
			labels(out, fam, s, "le", le);
			fprintf(out, " %llu\n", (unsigned long long)cum);
		}
		/* +Inf is the count: observations above the last bound are only in it. */
		fprintf(out, "%s_bucket", fam->name);
		labels(out, fam, s, "le", "+Inf");
		fprintf(out, " %llu\n%s_sum", (unsigned long long)(cum > count ? cum : count),
		        fam->name);
		labels(out, fam, s, NULL, NULL);
		fprintf(out, " %.6f\n%s_count",
		        (double)atomic_load_explicit(&s->sum_us, memory_order_relaxed) / 1e6,
		        fam->name);
		labels(out, fam, s, NULL, NULL);
		fprintf(out, " %llu\n", (unsigned long long)(cum > count ? cum : count));
	}
}

void metrics_gauge_head(FILE *out, const char *name, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

void metrics_gauge(FILE *out, const char *name, const char *label, const char *value, double v)
{
	fputs(name, out);
	if (label) {
		fprintf(out, "{%s=\"", label);
		metrics_label_value(out, value);
		fputs("\"}", out);
	}
	if (v == floor(v) && fabs(v) < 1e15)
		fprintf(out, " %.0f\n", v);
	else
		fprintf(out, " %.6f\n", v);
}

void metrics_family_free(struct metric_family *fam)
{
	struct metric_series *s = atomic_load(&fam->head);

	while (s) {
		struct metric_series *next = atomic_load(&s->next);
		series_free(s);
		s = next;
	}
	atomic_store(&fam->head, NULL);
	fam->n_series = 0;
}

/* Unit tests of daemon/metrics.c: series by label values, the cardinality bound, histogram
 * buckets, and the text exposition format. */
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "unit.h"

static char *render(struct metric_family *fam)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	metrics_render(fam, out);
	fclose(out);
	return text;
}

static void test_counter_series(void)
{
	struct metric_family fam = {.name = "t_requests_total",
	                            .help = "Requests.",
	                            .type = METRIC_COUNTER,
	                            .labels = {"issuer", "result"},
	                            .max_series = 3,
	                            .lock = PTHREAD_MUTEX_INITIALIZER};
	struct metric_series *a = metrics_series(&fam, "main", "granted");
	char *text;

	CHECK(a != NULL);
	CHECK(metrics_series(&fam, "main", "granted") == a);
	metrics_add(a, 2);
	metrics_add(metrics_series(&fam, "main", "aud_missing"), 1);
	/* A third combination fills the bound; past it every new one is counted as "other". */
	metrics_add(metrics_series(&fam, "billing", "granted"), 1);
	metrics_add(metrics_series(&fam, "x", "y"), 5);
	metrics_add(metrics_series(&fam, "z", "w"), 5);
	CHECK_INT((int)fam.n_series, 4);
	text = render(&fam);
	CHECK(strstr(text, "# HELP t_requests_total Requests.\n# TYPE t_requests_total counter\n"));
	CHECK(strstr(text, "t_requests_total{issuer=\"main\",result=\"granted\"} 2\n"));
	CHECK(strstr(text, "t_requests_total{issuer=\"main\",result=\"aud_missing\"} 1\n"));
	CHECK(strstr(text, "t_requests_total{issuer=\"other\",result=\"other\"} 10\n"));
	CHECK(!strstr(text, "\"x\""));
	free(text);
	metrics_family_free(&fam);
}

static void test_label_escaping(void)
{
	struct metric_family fam = {.name = "t_total",
	                            .help = "h",
	                            .type = METRIC_COUNTER,
	                            .labels = {"issuer"},
	                            .lock = PTHREAD_MUTEX_INITIALIZER};
	char *text;

	metrics_add(metrics_series(&fam, "a\"b\\c\nd", NULL), 1);
	text = render(&fam);
	CHECK(strstr(text, "t_total{issuer=\"a\\\"b\\\\c\\nd\"} 1\n"));
	free(text);
	metrics_family_free(&fam);
}

static void test_histogram(void)
{
	static const double bounds[] = {0.001, 0.01, 0.1};
	struct metric_family fam = {.name = "t_seconds",
	                            .help = "Latency.",
	                            .type = METRIC_HISTOGRAM,
	                            .labels = {"issuer"},
	                            .bounds = bounds,
	                            .n_bounds = 3,
	                            .lock = PTHREAD_MUTEX_INITIALIZER};
	struct metric_series *s = metrics_series(&fam, "main", NULL);
	char *text;

	metrics_observe(&fam, s, 500);     /* 0.5 ms */
	metrics_observe(&fam, s, 1000);    /* exactly 1 ms: le="0.001" */
	metrics_observe(&fam, s, 5000);    /* 5 ms */
	metrics_observe(&fam, s, 2000000); /* 2 s: only +Inf */
	text = render(&fam);
	CHECK(strstr(text, "# TYPE t_seconds histogram\n"));
	CHECK(strstr(text, "t_seconds_bucket{issuer=\"main\",le=\"0.001\"} 2\n"));
	CHECK(strstr(text, "t_seconds_bucket{issuer=\"main\",le=\"0.01\"} 3\n"));
	CHECK(strstr(text, "t_seconds_bucket{issuer=\"main\",le=\"0.1\"} 3\n"));
	CHECK(strstr(text, "t_seconds_bucket{issuer=\"main\",le=\"+Inf\"} 4\n"));
	CHECK(strstr(text, "t_seconds_sum{issuer=\"main\"} 2.006500\n"));
	CHECK(strstr(text, "t_seconds_count{issuer=\"main\"} 4\n"));
	free(text);
	metrics_family_free(&fam);
}

static void test_gauges(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	metrics_gauge_head(out, "t_ready", "Ready.");
	metrics_gauge(out, "t_ready", NULL, NULL, 1);
	metrics_gauge(out, "t_age_seconds", "issuer", "main", 12.5);
	metrics_gauge(out, "t_ts_seconds", "issuer", "main", 1796292035);
	fclose(out);
	CHECK(strstr(text, "# HELP t_ready Ready.\n# TYPE t_ready gauge\nt_ready 1\n"));
	CHECK(strstr(text, "t_age_seconds{issuer=\"main\"} 12.500000\n"));
	CHECK(strstr(text, "t_ts_seconds{issuer=\"main\"} 1796292035\n"));
	free(text);
}

int main(void)
{
	test_counter_series();
	test_label_escaping();
	test_histogram();
	test_gauges();
	return unit_finish("metrics");
}

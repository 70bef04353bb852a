/* Unit tests of daemon/metrics.c: series by label values, the cardinality bound, histogram
 * buckets, and the text exposition format. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "counters.h"
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

/* The ckr label of a failed helper call (counters.c): a CKR_* name from the helper's text,
 * helper_lost, or other; never the rest of the text (it may name a kid). */
static void test_ckr(void)
{
	char buf[64];

	CHECK_STR(counters_ckr(-EIO, "C_Sign: CKR_DEVICE_ERROR (key 3f2a)", buf, sizeof(buf)),
	          "CKR_DEVICE_ERROR");
	CHECK_STR(counters_ckr(-EIO, "CKR_PIN_INCORRECT", buf, sizeof(buf)), "CKR_PIN_INCORRECT");
	CHECK_STR(
	    counters_ckr(-ECONNABORTED, "the token helper was lost (CKR_X)", buf, sizeof(buf)),
	    "helper_lost");
	CHECK_STR(counters_ckr(-EIO, "no such key", buf, sizeof(buf)), "other");
	CHECK_STR(counters_ckr(-EIO, NULL, buf, sizeof(buf)), "other");
	CHECK_STR(counters_ckr(-EIO, "CKR_", buf, sizeof(buf)), "other");
	CHECK_STR(counters_ckr(-EIO, "ckr_device_error", buf, sizeof(buf)), "other");
	CHECK_STR(counters_ckr(-EIO, "CKR_A\"} 1\nevil", buf, sizeof(buf)), "CKR_A");
	CHECK_STR(counters_ckr(-EIO, "CKR_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", buf, 8), "CKR_AAA");
}

/* counters_sign: one decision, one increment; a granted one timed. */
static void test_sign(void)
{
	struct metric_series *g, *h;

	counters_sign("t-issuer", "granted", 700);
	counters_sign("t-issuer", "aud_missing", 0);
	counters_sign("t-issuer", "granted", 3000000);
	g = metrics_series(&counters.sign_requests, "t-issuer", "granted");
	h = metrics_series(&counters.sign_duration, "t-issuer", NULL);
	CHECK_U64(atomic_load(&g->value), 2);
	CHECK_U64(
	    atomic_load(&metrics_series(&counters.sign_requests, "t-issuer", "aud_missing")->value),
	    1);
	CHECK_U64(atomic_load(&h->value), 2);
	CHECK_U64(atomic_load(&h->buckets[1]), 1); /* 0.0007 <= .001 */
	CHECK_U64(atomic_load(&h->sum_us), 3000700);
}

int main(void)
{
	test_ckr();
	test_sign();
	test_counter_series();
	test_label_escaping();
	test_histogram();
	test_gauges();
	return unit_finish("metrics");
}

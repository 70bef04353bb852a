/* The daemon's counted metric families (counters.h). */
#include "counters.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

static const double sign_bounds[] = {.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5};

#define FAMILY(n, h, t, l0, l1, max)                                                               \
	{                                                                                          \
		.name = n, .help = h, .type = t, .labels = {l0, l1}, .max_series = max,            \
		.lock = PTHREAD_MUTEX_INITIALIZER                                                  \
	}

struct counters counters = {
    .sign_requests = FAMILY("tokensign_sign_requests_total", "Signing decisions.", METRIC_COUNTER,
                            "issuer", "result", 2048),
    .sign_duration = {.name = "tokensign_sign_duration_seconds",
                      .help = "Request received to answer, granted requests.",
                      .type = METRIC_HISTOGRAM,
                      .labels = {"issuer", NULL},
                      .bounds = sign_bounds,
                      .n_bounds = sizeof(sign_bounds) / sizeof(sign_bounds[0]),
                      .max_series = 128,
                      .lock = PTHREAD_MUTEX_INITIALIZER},
    .hsm_operations = FAMILY("tokensign_hsm_operations_total", "Helper protocol calls made.",
                             METRIC_COUNTER, "op", NULL, 64),
    .hsm_errors = FAMILY("tokensign_hsm_errors_total", "Helper protocol calls that failed.",
                         METRIC_COUNTER, "op", "ckr", 512),
    .jwks_requests = FAMILY("tokensign_jwks_requests_total", "JWKS and discovery answers.",
                            METRIC_COUNTER, "status", NULL, 8),
    .connections_refused =
        FAMILY("tokensign_connections_refused_total", "Connections refused at the cap.",
               METRIC_COUNTER, "listener", NULL, 8),
    .audit_records = FAMILY("tokensign_audit_records_total", "Audit records written.",
                            METRIC_COUNTER, NULL, NULL, 1),
    .audit_dropped =
        FAMILY("tokensign_audit_dropped_total", "Audit records that could not be written.",
               METRIC_COUNTER, NULL, NULL, 1),
    .key_generation_failures =
        FAMILY("tokensign_key_generation_failures_total", "Failed attempts to make the next key.",
               METRIC_COUNTER, "issuer", NULL, 128),
    .connections_open = FAMILY("tokensign_connections_open", "Connections open.", METRIC_GAUGE,
                               "listener", NULL, 8),
};

const char *counters_ckr(int r, const char *text, char *buf, size_t size)
{
	const char *p = text ? strstr(text, "CKR_") : NULL;
	size_t n = 0;

	if (r == -ECONNABORTED)
		return "helper_lost";
	if (!p)
		return "other";
	/* A CKR_ name is upper case letters, digits and underscores. */
	while (n + 1 < size &&
	       (isupper((unsigned char)p[n]) || isdigit((unsigned char)p[n]) || p[n] == '_'))
		n++;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return n > 4 ? buf : "other";
}

void counters_hsm_call(const char *op, int r, const char *err)
{
	char ckr[64];

	metrics_add(metrics_series(&counters.hsm_operations, op, NULL), 1);
	if (r < 0)
		metrics_add(metrics_series(&counters.hsm_errors, op,
		                           counters_ckr(r, err, ckr, sizeof(ckr))),
		            1);
}

void counters_sign(const char *issuer, const char *result, uint64_t us)
{
	metrics_add(metrics_series(&counters.sign_requests, issuer, result), 1);
	if (us)
		metrics_observe(&counters.sign_duration,
		                metrics_series(&counters.sign_duration, issuer, NULL), us);
}

void counters_issuer_series(const char *issuer, struct issuer_series *ret)
{
	ret->granted = metrics_series(&counters.sign_requests, issuer, "granted");
	ret->duration = metrics_series(&counters.sign_duration, issuer, NULL);
	metrics_series(&counters.sign_requests, issuer, "error");
	metrics_series(&counters.key_generation_failures, issuer, NULL);
}

/* HTTP for Prometheus: the counters of counters.h and gauges read at scrape time from the
 * current runtime's keyring, in the text exposition format. */
#include "metrics_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "clock.h"
#include "counters.h"
#include "health.h"
#include "http.h"
#include "jwks_http.h"
#include "log.h"
#include "tls.h"

struct metrics_http {
	struct daemon *d;
	struct http_tcp_set tcp;
	struct tls_server *tls; /* h14-tls: NULL: plain HTTP */
};

static const char content_type[] = "text/plain; version=0.0.4; charset=utf-8";

static const char *const state_names[] = {
    [KEY_PENDING] = "pending",
    [KEY_ACTIVE] = "active",
    [KEY_RETIRED] = "retired",
    [KEY_EXPIRED] = "expired",
};

/* The key's state as GET /v1/keys shows it (the set may predate a handover the scheduler has
 * not applied yet), and a key that may not be used is quarantined. */
static const char *key_state(struct keyset *set, const struct key *k, int64_t now)
{
	enum key_state st = k->st.state;

	if (!k->usable)
		return "quarantined";
	if (k == keyset_signer(set, now))
		st = KEY_ACTIVE;
	else if (st == KEY_ACTIVE || (st == KEY_PENDING && k->activates_at <= now))
		st = KEY_RETIRED;
	return state_names[st];
}

/* One gauge line with labels issuer and, when name2 is set, a second one. */
static void issuer_gauge(FILE *out, const char *name, const char *issuer, const char *name2,
                         const char *value2, double v)
{
	fprintf(out, "%s{issuer=\"", name);
	metrics_label_value(out, issuer);
	if (name2) {
		fprintf(out, "\",%s=\"", name2);
		metrics_label_value(out, value2);
	}
	fprintf(out, "\"} %.0f\n", v);
}

static void render_keys(FILE *out, struct keyring *kr, int64_t now)
{
	static const char *const states[] = {"pending", "active", "retired", "expired",
	                                     "quarantined"};

	metrics_gauge_head(out, "tokensign_keys", "Keys per state.");
	for (size_t i = 0; i < kr->n; i++) {
		struct keyset *set = keyring_acquire(kr, i);
		for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
			size_t n = 0;
			for (size_t k = 0; set && k < set->n; k++)
				n += strcmp(key_state(set, &set->keys[k], now), states[s]) == 0;
			issuer_gauge(out, "tokensign_keys", kr->issuers[i].conf->name, "state",
			             states[s], (double)n);
		}
		keyset_release(set);
	}
}

/* The per-issuer gauges of one kind; what picks the value (false: no line). */
typedef bool (*issuer_value)(const struct issuer_conf *ic, struct keyset *set, int64_t now,
                             double *v);

static bool current_age(const struct issuer_conf *ic, struct keyset *set, int64_t now, double *v)
{
	struct key *k = set ? keyset_signer(set, now) : NULL;

	(void)ic;
	*v = k ? (double)(now - k->activates_at) : 0;
	return k != NULL;
}

static bool next_rotation(const struct issuer_conf *ic, struct keyset *set, int64_t now, double *v)
{
	(void)ic;
	if (!set || !keyset_signer(set, now))
		return false;
	*v = (double)set->active_until;
	return true;
}

static bool next_published(const struct issuer_conf *ic, struct keyset *set, int64_t now, double *v)
{
	(void)ic;
	(void)now;
	*v = set && set->next && set->next->published;
	return true;
}

static bool destroyable_in(const struct issuer_conf *ic, struct keyset *set, int64_t now, double *v)
{
	bool any = false;
	int64_t oldest = 0;

	(void)ic;
	for (size_t k = 0; set && k < set->n; k++) {
		const struct key *key = &set->keys[k];
		const char *state = key_state(set, key, now);
		/* As GET /v1/keys shows it: the key a handover retired before the scheduler rebuilt
		 * the set counts already. */
		if (strcmp(state, "retired") != 0 && strcmp(state, "expired") != 0)
			continue;
		if (!any || key->st.destroy_after < oldest)
			oldest = key->st.destroy_after;
		any = true;
	}
	*v = oldest > now ? (double)(oldest - now) : 0;
	return any;
}

static bool rotation_period(const struct issuer_conf *ic, struct keyset *set, int64_t now,
                            double *v)
{
	(void)set;
	(void)now;
	*v = (double)ic->rotation_period;
	return true;
}

static bool prepublish(const struct issuer_conf *ic, struct keyset *set, int64_t now, double *v)
{
	(void)set;
	(void)now;
	*v = (double)ic->prepublish;
	return true;
}

static bool grace(const struct issuer_conf *ic, struct keyset *set, int64_t now, double *v)
{
	(void)set;
	(void)now;
	*v = (double)ic->max_token_ttl;
	return true;
}

static bool can_sign(const struct issuer_conf *ic, struct keyset *set, int64_t now, double *v)
{
	(void)ic;
	*v = set && keyset_signer(set, now) != NULL;
	return true;
}

static const struct {
	const char *name, *help;
	issuer_value value;
} issuer_gauges[] = {
    {"tokensign_current_key_age_seconds", "Now minus activates_at of the signing key.",
     current_age},
    {"tokensign_next_rotation_timestamp_seconds", "When the signing key hands over (unix seconds).",
     next_rotation},
    {"tokensign_next_key_published", "A pending key is in the JWKS.", next_published},
    {"tokensign_oldest_retired_key_destroyable_in_seconds",
     "Seconds until the oldest retired or expired key may be destroyed.", destroyable_in},
    {"tokensign_issuer_rotation_period_seconds", "Configured rotation-period.", rotation_period},
    {"tokensign_issuer_prepublish_seconds", "Configured prepublish.", prepublish},
    {"tokensign_issuer_grace_seconds",
     "How long a key may sign past its scheduled retirement (max-token-ttl).", grace},
    {"tokensign_issuer_can_sign", "The issuer has a key that may sign now.", can_sign},
};

static void render_issuer_gauges(FILE *out, struct keyring *kr, int64_t now)
{
	for (size_t g = 0; g < sizeof(issuer_gauges) / sizeof(issuer_gauges[0]); g++) {
		metrics_gauge_head(out, issuer_gauges[g].name, issuer_gauges[g].help);
		for (size_t i = 0; i < kr->n; i++) {
			struct keyset *set = keyring_acquire(kr, i);
			double v;
			if (issuer_gauges[g].value(kr->issuers[i].conf, set, now, &v))
				issuer_gauge(out, issuer_gauges[g].name, kr->issuers[i].conf->name,
				             NULL, NULL, v);
			keyset_release(set);
		}
	}
}

static void render_process(FILE *out, struct metrics_http *mh)
{
	const char *why;
	bool reachable = hsmc_probe_ready(mh->d->hsm) == 0;

	metrics_gauge_head(out, "tokensign_build_info", "The build.");
	metrics_gauge(out, "tokensign_build_info", "version", TOKENSIGN_VERSION, 1);
	metrics_gauge_head(out, "tokensign_up_since_timestamp_seconds", "Process start.");
	metrics_gauge(out, "tokensign_up_since_timestamp_seconds", NULL, NULL,
	              (double)mh->d->started_at);
	metrics_gauge_head(out, "tokensign_ready", "/readyz would answer 200.");
	metrics_gauge(out, "tokensign_ready", NULL, NULL, health_ready(mh->d, &why));
	metrics_gauge_head(out, "tokensign_token_reachable", "The token answers.");
	metrics_gauge(out, "tokensign_token_reachable", NULL, NULL, reachable);
	fprintf(out,
	        "# HELP tokensign_helper_restarts_total Helper processes replaced.\n"
	        "# TYPE tokensign_helper_restarts_total counter\n"
	        "tokensign_helper_restarts_total %lu\n",
	        hsmc_restarts(mh->d->hsm));
	fprintf(out,
	        "# HELP tokensign_hsm_session_recoveries_total Token sessions reopened and logins "
	        "repeated by the helpers.\n"
	        "# TYPE tokensign_hsm_session_recoveries_total counter\n"
	        "tokensign_hsm_session_recoveries_total %lu\n",
	        hsmc_session_recoveries(mh->d->hsm));
}

static void render_token_objects(FILE *out, struct keyring *kr)
{
	struct keyring_report *rep = keyring_report_acquire(kr);

	metrics_gauge_head(out, "tokensign_token_objects",
	                   "Foreign and quarantined objects seen in the token.");
	if (rep) {
		metrics_gauge(out, "tokensign_token_objects", "kind", "foreign",
		              (double)rep->n_foreign);
		metrics_gauge(out, "tokensign_token_objects", "kind", "quarantined",
		              (double)rep->n_quarantined);
	}
	keyring_report_release(rep);
}

/* Every configured issuer's granted and error series exist from the start (at 0), so that
 * rate() has a first sample; made here, at scrape time, so that a reload's new issuers get
 * them too. */
static void touch_issuer_series(const struct conf *conf)
{
	for (size_t i = 0; i < conf->n_issuers; i++) {
		metrics_series(&counters.sign_requests, conf->issuers[i].name, "granted");
		metrics_series(&counters.sign_requests, conf->issuers[i].name, "error");
		metrics_series(&counters.sign_duration, conf->issuers[i].name, NULL);
		metrics_series(&counters.key_generation_failures, conf->issuers[i].name, NULL);
	}
	metrics_series(&counters.jwks_requests, "200", NULL);
	metrics_series(&counters.jwks_requests, "304", NULL);
	metrics_series(&counters.jwks_requests, "404", NULL);
	metrics_series(&counters.audit_records, NULL, NULL);
	metrics_series(&counters.audit_dropped, NULL, NULL);
}

static void render_counters(FILE *out)
{
	struct metric_family *fams[] = {
	    &counters.sign_requests,    &counters.sign_duration, &counters.hsm_operations,
	    &counters.hsm_errors,       &counters.jwks_requests, &counters.connections_refused,
	    &counters.audit_records,    &counters.audit_dropped, &counters.key_generation_failures,
	    &counters.connections_open,
	};

	for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++)
		metrics_render(fams[i], out);
}

static char *render(struct metrics_http *mh, size_t *len)
{
	struct runtime *rt = runtime_acquire(mh->d);
	char *buf = NULL;
	FILE *out = open_memstream(&buf, len);

	if (out) {
		touch_issuer_series(rt->conf);
		render_process(out, mh);
		render_counters(out);
		int64_t now = clock_now();
		render_keys(out, rt->keyring, now);
		render_issuer_gauges(out, rt->keyring, now);
		render_token_objects(out, rt->keyring);
		if (fclose(out) != 0) {
			free(buf);
			buf = NULL;
		}
	}
	runtime_release(rt);
	return buf;
}

static enum MHD_Result reply_metrics(struct metrics_http *mh, struct MHD_Connection *c)
{
	size_t len = 0;
	char *body = render(mh, &len);
	struct MHD_Response *resp;
	enum MHD_Result r;

	if (!body)
		return http_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal_error",
		                        "out of memory");
	resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	r = MHD_queue_response(c, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
	static int headers_seen;
	enum MHD_Result r;

	(void)upload;
	/* As jwks_http.c: answer in the second call, once the request is complete. */
	if (!*req_cls) {
		if (http_refuse_malformed(c, method, version, &r))
			return r;
		*req_cls = &headers_seen;
		return MHD_YES;
	}
	if (*upload_size) {
		*upload_size = 0;
		return MHD_YES;
	}
	if (strcmp(url, "/metrics") != 0)
		return http_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path");
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
		return http_reply_method(c, "GET");
	return reply_metrics(cls, c);
}

static void metrics_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void metrics_log(void *cls, const char *fmt, va_list ap)
{
	if (strncmp(fmt, "Server reached connection limit", 31) == 0)
		metrics_add(metrics_series(&counters.connections_refused, "metrics", NULL), 1);
	else
		http_log(cls, fmt, ap);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)req_cls;
	(void)toe;
	http_request_done(c);
}

static int serve(struct metrics_http *mh, size_t i, const char *what)
{
	struct MHD_OptionItem tls[TLS_MHD_OPTIONS]; /* h14-tls: and how connections are watched */

	tls_server_options(mh->tls, &mh->tcp.guards, tls);
	mh->tcp.mhd[i] = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
	        tls_server_flags(mh->tls),
	    0, NULL, NULL, on_request, mh, MHD_OPTION_EXTERNAL_LOGGER, metrics_log, mh,
	    MHD_OPTION_LISTEN_SOCKET, mh->tcp.fds[i], MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_MAX_CONNECTIONS,
	    MHD_OPTION_STRICT_FOR_CLIENT, (int)HTTP_STRICTNESS, MHD_OPTION_ARRAY, tls,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_URI_LOG_CALLBACK,
	    http_on_target, NULL, MHD_OPTION_END);
	if (!mh->tcp.mhd[i]) {
		log_error("cannot start the metrics server on %s", what);
		return -EIO;
	}
	return 0;
}

int metrics_http_start(struct daemon *d, struct metrics_http **ret)
{
	const struct conf *conf = d->rt->conf;
	size_t total = conf->metrics.n_listen;
	struct metrics_http *mh;
	int r;

	*ret = NULL;
	if (total == 0)
		return 0;
	mh = calloc(1, sizeof(*mh));
	if (!mh)
		return -ENOMEM;
	mh->d = d;
	r = http_tcp_set_init(&mh->tcp, total, conf->jwks.request_timeout,
	                      metrics_series(&counters.connections_open, "metrics", NULL),
	                      "metrics");
	/* h14-tls: HTTPS when [metrics] has tls-cert; client certificates with client-ca. */
	if (r == 0)
		r = tls_server_new(&conf->metrics.tls, "metrics", d->config_path, &mh->tcp.guards,
		                   false, &mh->tls);
	if (r < 0) {
		metrics_http_stop(mh);
		return r;
	}
	for (size_t i = 0; i < total && r == 0; i++) {
		mh->tcp.n = i + 1;
		mh->tcp.fds[i] = -1;
		r = jwks_http_listen(&conf->metrics.listen[i], &mh->tcp.fds[i]);
		if (r < 0) {
			log_error("cannot listen on %s ([metrics]): %s",
			          conf->metrics.listen[i].text, strerror(-r));
			break;
		}
		r = serve(mh, i, conf->metrics.listen[i].text);
	}
	if (r < 0) {
		metrics_http_stop(mh);
		return r;
	}
	*ret = mh;
	return 0;
}

void metrics_http_stop(struct metrics_http *mh)
{
	if (!mh)
		return;
	http_tcp_set_stop(&mh->tcp);
	tls_server_free(mh->tls); /* h14-tls: after the daemons, whose connections held it */
	free(mh);
}

/* h14-tls */
bool metrics_http_tls_on(const struct metrics_http *mh)
{
	return mh && mh->tls != NULL;
}

int metrics_http_reload_tls(struct metrics_http *mh, const struct conf *conf,
                            const char *config_path)
{
	return mh && mh->tls ? tls_server_reload(mh->tls, &conf->metrics.tls, config_path) : 0;
}

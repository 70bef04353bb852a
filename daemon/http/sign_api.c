/* HTTP on the sign socket: route, caller check, body, then token_issue() (issue.c). */
#include "sign_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "audit.h"
#include "counters.h"
#include "health_http.h"
#include "http.h"
#include "issue.h"
#include "jwks_http.h"
#include "log.h"
#include "log_limit.h"
#include "peer.h"
#include "policy.h"

struct sign_api {
	struct daemon *d;
	struct http_unix_server srv;
};

enum route {
	ROUTE_SIGN,
	ROUTE_JWKS,
};

/* Marks a bodyless request whose headers were seen: libmicrohttpd closes the connection after
 * an answer given in the first call, so GET and HEAD are answered in the second. A POST that is
 * refused on its headers alone is answered at once, without reading its body. */
static char headers_seen;

/* Per request state, from the headers to the last body byte. */
struct request {
	enum route route;
	struct runtime *rt; /* held until the request completes: ic lives in it */
	const struct issuer_conf *ic;
	struct http_body body;
	uint64_t start_us; /* its headers were in, monotonic: tokensign_sign_duration_seconds */
};

static uint64_t monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* "/v1/issuers/NAME/sign" -> route and NAME; false for any other shape. */
static bool parse_issuer_path(const char *url, enum route *route, const char **name, size_t *len)
{
	const char *p = url + strlen("/v1/issuers/"), *slash;

	if (strncmp(url, "/v1/issuers/", 12) != 0)
		return false;
	slash = strchr(p, '/');
	if (!slash || slash == p)
		return false;
	if (strcmp(slash, "/sign") == 0)
		*route = ROUTE_SIGN;
	else if (strcmp(slash, "/jwks") == 0)
		*route = ROUTE_JWKS;
	else
		return false;
	*name = p;
	*len = (size_t)(slash - p);
	return true;
}

/* The caller as its audit record names it. */
static void audit_caller(struct MHD_Connection *c, struct audit_signature *a)
{
	const struct http_peer *hp = http_peer_of(c);

	a->no_caller = !hp || hp->err < 0;
	a->uid = a->no_caller ? 0 : (uint32_t)hp->peer.uid;
	a->pid = a->no_caller ? 0 : (int32_t)hp->peer.pid;
}

/* Counts a decision of ic: a granted one through rt's cached series when there is rt. */
static void count_outcome(struct runtime *rt, const struct issuer_conf *ic, uint64_t start_us,
                          const struct issue_outcome *out)
{
	if (out->status != MHD_HTTP_OK) {
		counters_sign(ic->name, out->code, 0);
		return;
	}
	if (rt && rt->series) {
		const struct issuer_series *s = &rt->series[ic - rt->conf->issuers];
		metrics_add(s->granted, 1);
		metrics_observe(&counters.sign_duration, s->duration, monotonic_us() - start_us);
		return;
	}
	counters_sign(ic->name, "granted", monotonic_us() - start_us);
}

/* The answer to an issuance, a token or a refusal, counted: every audited decision ends
 * here. rt: the request's runtime, or NULL; start_us: when its headers were in (refusals on
 * the headers alone are not timed). */
static enum MHD_Result reply_outcome(struct MHD_Connection *c, struct runtime *rt,
                                     const struct issuer_conf *ic, uint64_t start_us,
                                     struct issue_outcome *out)
{
	enum MHD_Result r;

	count_outcome(rt, ic, start_us, out);
	if (out->status != MHD_HTTP_OK)
		return http_reply_error(c, out->status, out->code, out->message);
	r = http_reply_json(c, MHD_HTTP_OK, out->answer);
	free(out->answer);
	out->answer = NULL;
	return r;
}

/* Refuses a signing request for ic on what the HTTP layer saw (caller, size, media type): its
 * audit record, then the error answer. */
static enum MHD_Result refuse(struct MHD_Connection *c, const struct issuer_conf *ic,
                              unsigned status, const char *code, const char *message)
{
	struct audit_signature caller = {0};
	struct issue_outcome out;

	audit_caller(c, &caller);
	issue_refuse(ic, &caller, status, code, message, NULL, &out);
	return reply_outcome(c, NULL, ic, 0, &out);
}

/* The checks that need only the headers, in the order of docs/api.md ("The rules, in the order
 * they are checked"): 404 path, 405, 404 issuer, 403, 413. */
static enum MHD_Result decide(struct sign_api *api, struct runtime *rt, struct MHD_Connection *c,
                              const char *url, const char *method, void **req_cls)
{
	const struct http_peer *conn = http_peer_of(c);
	struct request *rq;
	const char *name, *cl;
	enum route route;
	size_t len;

	if (health_http_path(url))
		return health_http_reply(api->d, c, url, method);
	if (!parse_issuer_path(url, &route, &name, &len))
		return http_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path");
	if (route == ROUTE_SIGN && strcmp(method, MHD_HTTP_METHOD_POST) != 0)
		return http_reply_method(c, "POST");
	if (route == ROUTE_JWKS && strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return http_reply_method(c, "GET, HEAD");
	const struct issuer_conf *ic = conf_find_issuer(rt->conf, name, len);
	if (!ic)
		return http_reply_error(c, MHD_HTTP_NOT_FOUND, "unknown_issuer", "no such issuer");
	if (route == ROUTE_JWKS)
		return jwks_http_reply(rt, c, keyring_index(rt->keyring, ic));
	if (!conn || conn->err < 0) {
		log_limited(LOG_KIND_REFUSED_CALLER, LOG_ERR,
		            "issuer %s: cannot read the caller's credentials: %s", ic->name,
		            strerror(conn ? -conn->err : ENOMEM));
		return refuse(c, ic, MHD_HTTP_FORBIDDEN, "forbidden",
		              "caller credentials unavailable");
	}
	if (!peer_allowed(&conn->peer, ic->allow, ic->n_allow)) {
		log_limited(LOG_KIND_REFUSED_CALLER, LOG_WARNING,
		            "issuer %s: refused caller uid %u pid %d (not in allow)", ic->name,
		            (unsigned)conn->peer.uid, (int)conn->peer.pid);
		return refuse(c, ic, MHD_HTTP_FORBIDDEN, "forbidden",
		              "this caller may not sign for this issuer");
	}
	cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl && strtoull(cl, NULL, 10) > POLICY_MAX_BODY)
		return refuse(c, ic, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
		              "the body is over 64 KiB");
	rq = calloc(1, sizeof(*rq));
	if (!rq)
		return MHD_NO;
	rq->route = route;
	rq->ic = ic;
	rq->start_us = monotonic_us();
	*req_cls = rq;
	return MHD_YES;
}

/* Decides on the headers with the current runtime; a request that goes on keeps it. */
static enum MHD_Result on_headers(struct sign_api *api, struct MHD_Connection *c, const char *url,
                                  const char *method, void **req_cls)
{
	struct runtime *rt = runtime_acquire(api->d);
	enum MHD_Result r = decide(api, rt, c, url, method, req_cls);
	struct request *rq = *req_cls;

	if (rq && (void *)rq != &headers_seen)
		rq->rt = rt;
	else
		runtime_release(rt);
	return r;
}

static enum MHD_Result on_complete(struct MHD_Connection *c, struct request *rq)
{
	struct audit_signature caller = {0};
	struct issue_outcome out;

	if (rq->body.too_large)
		return refuse(c, rq->ic, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
		              "the body is over 64 KiB");
	if (!policy_content_type_ok(
	        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE)))
		return refuse(c, rq->ic, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
		              "Content-Type must be application/json");
	audit_caller(c, &caller);
	if (token_issue(rq->rt, rq->ic, rq->body.data ? rq->body.data : "", rq->body.len, &caller,
	                &out) < 0) {
		counters_sign(rq->ic->name, "error", 0);
		return MHD_NO;
	}
	return reply_outcome(c, rq->rt, rq->ic, rq->start_us, &out);
}

static bool bodyless(const char *method)
{
	return strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
	       strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
	struct sign_api *api = cls;
	struct request *rq = *req_cls;
	enum MHD_Result r;

	if (!rq && http_refuse_malformed(c, method, version, &r))
		return r;
	if (!rq && bodyless(method)) {
		*req_cls = &headers_seen;
		return MHD_YES;
	}
	if ((void *)rq == &headers_seen) {
		if (*upload_size) { /* a body on GET is allowed and ignored */
			*upload_size = 0;
			return MHD_YES;
		}
		*req_cls = NULL;
		return on_headers(api, c, url, method, req_cls);
	}
	if (!rq) {
		r = on_headers(api, c, url, method, req_cls);
		if (!*req_cls) /* answered before its body */
			http_close_gently(c);
		return r;
	}
	if (*upload_size) {
		http_body_append(&rq->body, upload, *upload_size, POLICY_MAX_BODY);
		*upload_size = 0;
		/* A chunked body has no length to refuse up front: cut it off here. */
		if (rq->body.too_large)
			return http_refuse_upload(c, "the body is over 64 KiB");
		return MHD_YES;
	}
	return on_complete(c, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct request *rq = *req_cls;

	http_request_done(c);
	if (!rq || (void *)rq == &headers_seen)
		return;
	runtime_release(rq->rt);
	http_body_free(&rq->body);
	free(rq);
	*req_cls = NULL;
}

unsigned sign_api_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 2 ? 2 : n > 16 ? 16 : (unsigned)n;
}

int sign_api_start(struct daemon *d, int fd, struct sign_api **ret)
{
	struct sign_api *api = calloc(1, sizeof(*api));
	int r;

	if (!api)
		return -ENOMEM;
	api->d = d;
	/* A thread pool: each worker signs on its own PKCS#11 session. */
	r = http_unix_serve(&api->srv, &d->rt->conf->sign, fd, sign_api_workers(), d->budget.sign,
	                    on_request, on_completed, api, "sign");
	if (r < 0) {
		free(api);
		return r;
	}
	*ret = api;
	return 0;
}

void sign_api_stop(struct sign_api *api)
{
	if (!api)
		return;
	http_unix_close(&api->srv);
	free(api);
}

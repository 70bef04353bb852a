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
#include "json_out.h"
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
	ROUTE_BATCH, /* sign-batch: many sign requests in one, each judged as ROUTE_SIGN's */
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

/* The largest body of a signing route, and the words of its refusal. */
static size_t body_max(enum route route)
{
	return route == ROUTE_BATCH ? POLICY_MAX_BATCH_BODY : POLICY_MAX_BODY;
}

static const char *body_too_large(enum route route)
{
	return route == ROUTE_BATCH ? "the body is over 256 KiB" : "the body is over 64 KiB";
}

static uint64_t monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* "/v1/issuers/NAME/sign" (or sign-batch, jwks) -> route and NAME; false for any other shape. */
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
	else if (strcmp(slash, "/sign-batch") == 0)
		*route = ROUTE_BATCH;
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
	struct http_peer *hp = (struct http_peer *)http_peer_of(c);

	a->no_caller = !hp || hp->err < 0;
	a->uid = a->no_caller ? 0 : (uint32_t)hp->peer.uid;
	a->pid = a->no_caller ? 0 : (int32_t)hp->peer.pid;
	a->unit = a->no_caller ? NULL : &hp->unit;
}

/* Counts a decision of ic: a granted one through rt's cached series when there is rt, timed
 * from start_us unless that is 0 (a batch's items: the batch is timed once). */
static void count_outcome(struct runtime *rt, const struct issuer_conf *ic, uint64_t start_us,
                          const struct issue_outcome *out)
{
	uint64_t us = start_us ? monotonic_us() - start_us : 0;

	if (out->status != MHD_HTTP_OK) {
		counters_sign(ic->name, out->code, 0);
		return;
	}
	if (rt && rt->series) {
		const struct issuer_series *s = &rt->series[ic - rt->conf->issuers];
		metrics_add(s->granted, 1);
		if (start_us)
			metrics_observe(&counters.sign_duration, s->duration, us);
		return;
	}
	counters_sign(ic->name, "granted", us);
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
	r = http_reply_json_take(c, MHD_HTTP_OK, out->answer);
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
	if (route != ROUTE_JWKS && strcmp(method, MHD_HTTP_METHOD_POST) != 0)
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
	if (cl && strtoull(cl, NULL, 10) > body_max(route))
		return refuse(c, ic, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
		              body_too_large(route));
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

/* What an item of a batch answers, the single sign's answer or {"error": code, "message":
 * message}, at most how long. */
static size_t batch_result_max(const struct issue_outcome *out)
{
	if (out->status == MHD_HTTP_OK)
		return strlen(out->answer);
	return sizeof("{\"error\":,\"message\":}") + JSON_OUT_STRING_MAX(strlen(out->code)) +
	       JSON_OUT_STRING_MAX(strlen(out->message));
}

/* Writes the item at p (the bytes json_dumps() of the error object would write); returns the
 * end. */
static char *batch_result(char *p, const struct issue_outcome *out)
{
	if (out->status == MHD_HTTP_OK)
		return stpcpy(p, out->answer);
	p = json_out_string(stpcpy(p, "{\"error\":"), out->code, strlen(out->code));
	p = json_out_string(stpcpy(p, ",\"message\":"), out->message, strlen(out->message));
	return stpcpy(p, "}");
}

/* {"results": [...]} of n outcomes, in order, written once into a buffer sized up front.
 * Caller frees. */
static char *batch_answer(const struct issue_outcome *outs, size_t n)
{
	size_t len = sizeof("{\"results\":[]}");
	char *s, *p;

	for (size_t i = 0; i < n; i++)
		len += batch_result_max(&outs[i]) + 1;
	s = p = malloc(len);
	if (!s)
		return NULL;
	p = stpcpy(p, "{\"results\":[");
	for (size_t i = 0; i < n; i++)
		p = batch_result(stpcpy(p, i ? "," : ""), &outs[i]);
	strcpy(p, "]}");
	return s;
}

/* Counts each item as the single sign counts a decision, and times the batch once (one
 * observation per batch that issued a token: the latency its caller saw). */
static void count_batch(struct request *rq, const struct issue_outcome *outs, size_t n)
{
	struct runtime *rt = rq->rt;
	bool granted = false;

	for (size_t i = 0; i < n; i++) {
		count_outcome(rt, rq->ic, 0, &outs[i]);
		granted |= outs[i].status == MHD_HTTP_OK;
	}
	if (!granted)
		return;
	if (rt->series)
		metrics_observe(&counters.sign_duration,
		                rt->series[rq->ic - rt->conf->issuers].duration,
		                monotonic_us() - rq->start_us);
}

/* The items of a batch, issued together (token_issue_batch()) and answered in one 200; or one
 * 503 when none was issued because no signing helper could be reached. */
static enum MHD_Result answer_batch(struct MHD_Connection *c, struct request *rq,
                                    const struct policy_batch *pb,
                                    const struct audit_signature *caller)
{
	struct issue_request reqs[POLICY_MAX_BATCH];
	struct issue_outcome *outs = calloc(pb->n, sizeof(*outs));
	enum MHD_Result r = MHD_NO;
	bool lost = false;
	char *body = NULL;

	for (size_t i = 0; i < pb->n; i++)
		reqs[i] = (struct issue_request){pb->items[i], pb->len[i], pb->trees[i]};
	if (!outs || token_issue_batch(rq->rt, rq->ic, reqs, pb->n, caller, outs, &lost) < 0) {
		counters_sign(rq->ic->name, "error", 0);
		free(outs);
		return MHD_NO;
	}
	count_batch(rq, outs, pb->n);
	if (lost)
		r = http_reply_error(
		    c, MHD_HTTP_SERVICE_UNAVAILABLE, "hsm_unavailable",
		    "no signing helper could be reached; no token of this batch was "
		    "issued");
	else if ((body = batch_answer(outs, pb->n))) {
		r = http_reply_json_take(c, MHD_HTTP_OK, body);
		body = NULL;
	} else
		counters_sign(rq->ic->name, "error", 0);
	for (size_t i = 0; i < pb->n; i++)
		free(outs[i].answer);
	free(outs);
	free(body);
	return r;
}

/* A complete sign-batch body: the request-level rules (policy_batch_split()) refuse the whole
 * batch as a single sign's would be refused; past them each item is its own decision. */
static enum MHD_Result on_complete_batch(struct MHD_Connection *c, struct request *rq)
{
	struct audit_signature caller = {0};
	struct policy_error perr = {0};
	struct policy_batch pb;
	enum MHD_Result r;
	int e = policy_batch_split(rq->body.data ? rq->body.data : "", rq->body.len, &pb, &perr);

	if (e == -EINVAL)
		r = refuse(c, rq->ic, (unsigned)perr.status, perr.code, perr.message);
	else if (e < 0) {
		counters_sign(rq->ic->name, "error", 0);
		r = MHD_NO;
	} else {
		audit_caller(c, &caller);
		r = answer_batch(c, rq, &pb, &caller);
	}
	policy_batch_free(&pb);
	return r;
}

static enum MHD_Result on_complete(struct MHD_Connection *c, struct request *rq)
{
	struct audit_signature caller = {0};
	struct issue_outcome out;

	if (rq->body.too_large)
		return refuse(c, rq->ic, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
		              body_too_large(rq->route));
	if (!policy_content_type_ok(
	        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE)))
		return refuse(c, rq->ic, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
		              "Content-Type must be application/json");
	if (rq->route == ROUTE_BATCH)
		return on_complete_batch(c, rq);
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
		http_body_append(&rq->body, upload, *upload_size, body_max(rq->route));
		*upload_size = 0;
		/* A chunked body has no length to refuse up front: cut it off here. */
		if (rq->body.too_large)
			return http_refuse_upload(c, body_too_large(rq->route));
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

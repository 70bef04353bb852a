/* HTTP on the sign socket: route, caller check, body, then policy -> jws -> hsm -> token. */
#include "sign_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/rand.h>

#include "audit.h"
#include "clock.h"
#include "health.h"
#include "http.h"
#include "jws.h"
#include "jws_verify.h"
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
};

static enum MHD_Result reply_simple(struct sign_api *api, struct MHD_Connection *c, const char *url,
                                    const char *method)
{
	const char *why = NULL;

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return http_reply_method(c, "GET, HEAD");
	if (strcmp(url, "/healthz") == 0)
		return http_reply_json(c, MHD_HTTP_OK, "{\"status\":\"ok\"}");
	if (health_ready(api->d, &why))
		return http_reply_json(c, MHD_HTTP_OK, "{\"status\":\"ready\"}");
	json_t *obj = json_pack("{s:s, s:s}", "status", "not_ready", "reason", why);
	char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	enum MHD_Result r = body ? http_reply_json(c, MHD_HTTP_SERVICE_UNAVAILABLE, body) : MHD_NO;
	json_decref(obj);
	free(body);
	return r;
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

static void keyset_free_cb(void *cls)
{
	keyset_release(cls);
}

/* Queues the issuer's rendered JWKS without copying it; the response holds the keyset. */
static enum MHD_Result reply_jwks(struct runtime *rt, struct MHD_Connection *c,
                                  const struct issuer_conf *ic)
{
	struct keyset *set = keyring_acquire(rt->keyring, keyring_index(rt->keyring, ic));
	struct MHD_Response *resp;
	enum MHD_Result r;

	if (!set)
		return http_reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "no_active_key",
		                        "no keys loaded");
	resp = MHD_create_response_from_buffer_with_free_callback_cls(set->jwks_len, set->jwks,
	                                                              keyset_free_cb, set);
	if (!resp) {
		keyset_release(set);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, set->etag);
	r = MHD_queue_response(c, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return r;
}

/* The caller as its audit record names it. */
static void audit_caller(struct MHD_Connection *c, struct audit_signature *a)
{
	const struct http_peer *hp = http_peer_of(c);

	a->no_caller = !hp || hp->err < 0;
	a->uid = a->no_caller ? 0 : (uint32_t)hp->peer.uid;
	a->pid = a->no_caller ? 0 : (int32_t)hp->peer.pid;
}

/* Refuses a signing request for ic: its audit record, then the error answer. The record is
 * never a reason to withhold a refusal ([sign] audit applies to tokens). seen: what the request
 * named so far (jti, aud, kid, exp), or NULL. */
static enum MHD_Result refuse(struct MHD_Connection *c, const struct issuer_conf *ic,
                              unsigned status, const char *code, const char *message,
                              const struct audit_signature *seen)
{
	struct audit_signature a = seen ? *seen : (struct audit_signature){0};

	a.issuer = ic->name;
	a.reason = code;
	audit_caller(c, &a);
	audit_refused(&a);
	return http_reply_error(c, status, code, message);
}

/* The checks that need only the headers, in SPEC order: 404 path, 405, 404 issuer, 403, 413. */
static enum MHD_Result decide(struct sign_api *api, struct runtime *rt, struct MHD_Connection *c,
                              const char *url, const char *method, void **req_cls)
{
	const struct http_peer *conn = http_peer_of(c);
	struct request *rq;
	const char *name, *cl;
	enum route route;
	size_t len;

	if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0)
		return reply_simple(api, c, url, method);
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
		return reply_jwks(rt, c, ic);
	if (!conn || conn->err < 0) {
		log_limited(LOG_KIND_REFUSED_CALLER, LOG_ERR,
		            "issuer %s: cannot read the caller's credentials: %s", ic->name,
		            strerror(conn ? -conn->err : ENOMEM));
		return refuse(c, ic, MHD_HTTP_FORBIDDEN, "forbidden",
		              "caller credentials unavailable", NULL);
	}
	if (!peer_allowed(&conn->peer, ic->allow, ic->n_allow)) {
		log_limited(LOG_KIND_REFUSED_CALLER, LOG_WARNING,
		            "issuer %s: refused caller uid %u pid %d (not in allow)", ic->name,
		            (unsigned)conn->peer.uid, (int)conn->peer.pid);
		return refuse(c, ic, MHD_HTTP_FORBIDDEN, "forbidden",
		              "this caller may not sign for this issuer", NULL);
	}
	cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl && strtoull(cl, NULL, 10) > POLICY_MAX_BODY)
		return refuse(c, ic, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
		              "the body is over 64 KiB", NULL);
	rq = calloc(1, sizeof(*rq));
	if (!rq)
		return MHD_NO;
	rq->route = route;
	rq->ic = ic;
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

static char *answer_format(const char *token, const struct key *k, enum jws_alg alg,
                           const struct signing_request *sr)
{
	/* token and kid are base64url, alg a fixed name: nothing here needs JSON escaping. Built
	 * with copies rather than asprintf, which cost ~10k instructions per token. */
	char tail[64];
	int tail_len = snprintf(tail, sizeof(tail), "\",\"iat\":%lld,\"exp\":%lld}",
	                        (long long)sr->iat, (long long)sr->exp);
	const char *parts[] = {"{\"token\":\"",   token, "\",\"kid\":\"", k->kid, "\",\"alg\":\"",
	                       jws_alg_name(alg), tail};
	size_t len = 0;
	char *s, *p;

	if (tail_len < 0 || (size_t)tail_len >= sizeof(tail))
		return NULL;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		len += strlen(parts[i]);
	s = p = malloc(len + 1);
	if (!s)
		return NULL;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		p = stpcpy(p, parts[i]);
	return s;
}

/* 128 random bits for a generated jti, taken from a per-thread pool refilled 64 at a time:
 * one RAND_bytes call per request cost ~20k instructions. A jti is public; the pool only
 * spares the DRBG's per-call overhead, and no bytes are ever handed out twice. */
#define JTI_POOL (POLICY_JTI_BYTES * 64)
static __thread uint8_t jti_pool[JTI_POOL];
static __thread size_t jti_pool_used = JTI_POOL;

static int jti_random(uint8_t out[POLICY_JTI_BYTES])
{
	if (jti_pool_used + POLICY_JTI_BYTES > JTI_POOL) {
		if (RAND_bytes(jti_pool, JTI_POOL) != 1)
			return -EIO;
		jti_pool_used = 0;
	}
	memcpy(out, jti_pool + jti_pool_used, POLICY_JTI_BYTES);
	memset(jti_pool + jti_pool_used, 0, POLICY_JTI_BYTES);
	jti_pool_used += POLICY_JTI_BYTES;
	return 0;
}

/* The token's signature, checked against the key's public half before anything leaves: a
 * faulty signature (the RSA-CRT fault attack leaks the key through one) is never answered. */
static int sign_checked(struct sign_api *api, const struct issuer_conf *ic, struct key *k,
                        const char *input, size_t input_len, uint8_t *sig, size_t *sig_len,
                        const char **code)
{
	int r = hsmc_sign(api->d->hsm, &k->hk, input, input_len, sig, HSM_MAX_SIG, sig_len);

	*code = "hsm_unavailable";
	if (r < 0) {
		log_error("issuer %s: key %s: signing failed: %s", ic->name, k->kid,
		          hsm_last_error());
		return r;
	}
	/* An RSA signature is exactly as long as the modulus, even without the self-check. */
	if (k->jwk.kty == JWK_KTY_RSA && *sig_len != k->jwk.n_len) {
		log_error(
		    "issuer %s: key %s: the token returned %zu signature bytes for a %zu-byte "
		    "modulus; no token was issued",
		    ic->name, k->kid, *sig_len, k->jwk.n_len);
		return -EIO;
	}
	if (!ic->self_check)
		return 0;
	r = jws_verify(k->hk.alg, k->evp, input, input_len, sig, *sig_len);
	if (r < 0) {
		*code = "signature_check_failed";
		log_msg(LOG_CRIT,
		        "issuer %s: key %s: the token returned a signature that does not verify "
		        "(%s); no token was issued. A faulty HSM can leak its key this way: "
		        "investigate before trusting this token again",
		        ic->name, k->kid, r == -EBADMSG ? "bad signature" : "check failed");
	}
	return r;
}

/* What the audit record names of a request the policy accepted; k may be NULL (no key). */
static struct audit_signature audit_of(const struct issuer_conf *ic, const struct key *k,
                                       const struct signing_request *sr)
{
	return (struct audit_signature){
	    .issuer = ic->name,
	    .kid = k ? k->kid : NULL,
	    .jti = sr->jti,
	    .aud = sr->aud,
	    .exp = sr->exp,
	    .aud_cut = sr->aud_cut,
	};
}

/* The token's audit record is written before the token is answered: with [sign] audit =
 * required, a token whose record could not be written is never handed out. */
static enum MHD_Result reply_token(struct runtime *rt, struct MHD_Connection *c,
                                   const struct issuer_conf *ic, const struct key *k,
                                   const struct signing_request *sr, const char *answer)
{
	struct audit_signature a = audit_of(ic, k, sr);

	audit_caller(c, &a);
	if (audit_signed(&a) < 0 && rt->conf->audit == CONF_AUDIT_REQUIRED)
		return http_reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "audit_unavailable",
		                        "the audit record could not be written, so no token was "
		                        "issued ([sign] audit = required); see the daemon's log");
	return http_reply_json(c, MHD_HTTP_OK, answer);
}

/* One attempt with the issuer's current signer: 0 and *ret_answer, or a negative errno with
 * *code set. -ENOENT: the key went away under us (revoked between our view and the token).
 * -EAGAIN: the signer now is bound to another iss than the payload's (a handover after an iss
 * change happened since the payload was made): the payload must be made again. */
static int sign_once(struct sign_api *api, struct runtime *rt, const struct issuer_conf *ic,
                     const struct signing_request *sr, const char *iss, struct key **ret_key,
                     char **ret_answer, const char **code, struct keyset **ret_set)
{
	struct keyset *set = keyring_acquire(rt->keyring, keyring_index(rt->keyring, ic));
	struct key *k = keyset_signer(set, sr->iat);
	uint8_t sig[HSM_MAX_SIG];
	size_t sig_len = 0, input_len = 0;
	char *input = NULL, *token = NULL;
	int r;

	*ret_set = set;
	*ret_key = k;
	if (!k) {
		*code = "no_active_key";
		return -ENOKEY;
	}
	if (strcmp(k->iss, iss) != 0)
		return -EAGAIN;
	/* The key's own algorithm: after an algorithm change the old key signs as what it is
	 * until its successor takes over. */
	r = jws_signing_input(k->hk.alg, k->kid, sr->typ, sr->payload, sr->payload_len, &input,
	                      &input_len);
	if (r == 0)
		r = sign_checked(api, ic, k, input, input_len, sig, &sig_len, code);
	if (r == 0 && (r = jws_compact(input, input_len, sig, sig_len, &token)) == 0 &&
	    !(*ret_answer = answer_format(token, k, k->hk.alg, sr)))
		r = -ENOMEM;
	free(input);
	free(token);
	return r;
}

static bool signer_changed(struct runtime *rt, const struct issuer_conf *ic, const struct key *was,
                           int64_t now)
{
	struct keyset *set = keyring_acquire(rt->keyring, keyring_index(rt->keyring, ic));
	struct key *k = keyset_signer(set, now);
	bool changed = k && was && strcmp(k->kid, was->kid) != 0;

	keyset_release(set);
	return changed;
}

/* The iss the issuer's signer at now is bound to (the configured one when there is none:
 * the request is then refused all the same). Caller frees. */
static char *signer_iss(struct runtime *rt, const struct issuer_conf *ic, int64_t now)
{
	struct keyset *set = keyring_acquire(rt->keyring, keyring_index(rt->keyring, ic));
	struct key *k = keyset_signer(set, now);
	char *iss = strdup(k ? k->iss : ic->iss);

	keyset_release(set);
	return iss;
}

/* Signs sr (whose payload carries iss) with the issuer's active key; on failure queues the
 * error answer itself. *ret_again: nothing was queued, the payload must be made again for the
 * signer's iss (sign_once()). */
static enum MHD_Result sign_and_reply(struct sign_api *api, struct runtime *rt,
                                      struct MHD_Connection *c, const struct issuer_conf *ic,
                                      const struct signing_request *sr, const char *iss,
                                      bool *ret_again)
{
	const char *code = "hsm_unavailable";
	struct keyset *set = NULL;
	struct key *k = NULL;
	char *answer = NULL;
	enum MHD_Result ret;
	int r;

	r = sign_once(api, rt, ic, sr, iss, &k, &answer, &code, &set);
	/* Revoked while we signed (the token no longer has the key, or fails on it as it goes):
	 * if the view has moved on to another key since, one more try with that one. */
	if (r < 0 && r != -ENOKEY && r != -EAGAIN && strcmp(code, "signature_check_failed") != 0 &&
	    signer_changed(rt, ic, k, sr->iat)) {
		keyset_release(set);
		r = sign_once(api, rt, ic, sr, iss, &k, &answer, &code, &set);
	}
	*ret_again = r == -EAGAIN;
	if (r == -EAGAIN) {
		keyset_release(set);
		return MHD_YES;
	}
	struct audit_signature seen = audit_of(ic, k, sr);
	if (r == -ENOKEY) {
		log_error("issuer %s: no active key; refusing to sign", ic->name);
		ret = refuse(c, ic, MHD_HTTP_SERVICE_UNAVAILABLE, "no_active_key",
		             "the issuer has no key that may sign now", &seen);
	} else if (r < 0) {
		ret = refuse(c, ic, MHD_HTTP_SERVICE_UNAVAILABLE, code,
		             "the token did not sign; see the daemon's log", &seen);
	} else {
		ret = reply_token(rt, c, ic, k, sr, answer);
	}
	keyset_release(set);
	free(answer);
	return ret;
}

static enum MHD_Result on_complete(struct sign_api *api, struct MHD_Connection *c,
                                   struct request *rq)
{
	struct signing_request sr = {0};
	struct policy_error perr = {0};
	uint8_t jti[POLICY_JTI_BYTES];
	enum MHD_Result ret;
	int r;

	if (rq->body.too_large)
		return refuse(c, rq->ic, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
		              "the body is over 64 KiB", NULL);
	if (!policy_content_type_ok(
	        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE)))
		return refuse(c, rq->ic, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
		              "Content-Type must be application/json", NULL);
	if (jti_random(jti) < 0)
		return refuse(c, rq->ic, MHD_HTTP_SERVICE_UNAVAILABLE, "hsm_unavailable",
		              "no randomness for jti", NULL);
	for (int attempt = 0;; attempt++) {
		bool again = false;
		char *iss = signer_iss(rq->rt, rq->ic, clock_now());
		struct issuer_conf as = *rq->ic;

		if (!iss)
			return MHD_NO;
		/* A key signs only for the iss it was made for: after an iss change, the old key
		 * signs with its own until its successor takes over (docs/design.md). */
		as.iss = iss;
		r = policy_apply(&as, rq->body.data ? rq->body.data : "", rq->body.len, clock_now(),
		                 jti, &sr, &perr);
		if (r == -EINVAL) {
			struct audit_signature seen = {
			    .jti = perr.jti, .aud = perr.aud, .aud_cut = perr.aud_cut};
			ret = refuse(c, rq->ic, (unsigned)perr.status, perr.code, perr.message,
			             &seen);
		} else if (r < 0) {
			log_error("issuer %s: cannot build the payload: %s", rq->ic->name,
			          strerror(-r));
			ret = refuse(c, rq->ic, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal_error",
			             "the daemon could not build the token; see its log", NULL);
		} else
			ret = sign_and_reply(api, rq->rt, c, rq->ic, &sr, iss, &again);
		free(sr.payload);
		free(iss);
		memset(&sr, 0, sizeof(sr));
		if (!again || attempt == 1)
			return again ? refuse(c, rq->ic, MHD_HTTP_SERVICE_UNAVAILABLE,
			                      "no_active_key",
			                      "the issuer's key changed; try again", NULL)
			             : ret;
	}
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
	return on_complete(api, c, rq);
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

/* CORS on the public JWKS listener ([jwks] cors-origins; docs/api.md, "CORS"): which headers
 * an answer carries, and the answer to a browser's preflight. */
#pragma once
#include <stdbool.h>

#include <microhttpd.h>

#include "conf.h"

/* What a preflight may ask for, and how long a browser may keep its answer (Firefox's own cap;
 * Chromium keeps at most 2 hours). */
#define CORS_ALLOW_METHODS "GET, HEAD"
#define CORS_ALLOW_HEADERS "If-None-Match, Cache-Control"
#define CORS_MAX_AGE       "86400"
/* Response headers a script may read beyond the safelisted ones (Cache-Control, Content-Type,
 * Content-Length are readable already): the ETag for its next If-None-Match, and when to come
 * back after a 503. */
#define CORS_EXPOSE_HEADERS "ETag, Retry-After"

/* True when the configuration turns CORS on. */
bool cors_enabled(const struct conf *conf);

/* The Access-Control-Allow-Origin value for a request whose Origin header is origin (NULL: it
 * had none, or several): "*" when any origin may read, else the configured origin equal to it
 * byte for byte (our copy, never the request's bytes), else NULL: no CORS headers. */
const char *cors_allow_origin(const struct conf *conf, const char *origin);

/* Access-Control-Request-Headers (NULL: absent): every comma-separated name, blanks around it
 * and case aside, is one of CORS_ALLOW_HEADERS. Empty items are skipped, as Fetch does. */
bool cors_request_headers_allowed(const char *names);

enum cors_preflight {
	CORS_NOT_PREFLIGHT, /* CORS off, or not OPTIONS with Origin and -Request-Method */
	CORS_PREFLIGHT_OK,
	CORS_REFUSED_ORIGIN,
	CORS_REFUSED_METHOD,
	CORS_REFUSED_HEADERS,
};

/* The request's CORS headers, each NULL when absent; n_* count repeated ones. */
struct cors_request {
	const char *origin, *method, *headers;
	unsigned n_origin, n_method, n_headers;
};

/* What to answer to an OPTIONS request. */
enum cors_preflight cors_preflight_check(const struct conf *conf, const struct cors_request *rq);

/* Reads the request's CORS headers from c. */
void cors_request_of(struct MHD_Connection *c, struct cors_request *ret);

/* Adds to resp, an answer of the public listener other than a preflight's (any status), the
 * headers CORS asks for: with a list of origins always Vary: Origin, and for an allowed origin
 * Access-Control-Allow-Origin and -Expose-Headers. Nothing when CORS is off. */
void cors_add_headers(const struct conf *conf, struct MHD_Connection *c, struct MHD_Response *resp);

/* With a list of origins, Vary: Origin on resp (a preflight's answer too). */
void cors_add_vary(const struct conf *conf, struct MHD_Response *resp);

/* For an OPTIONS request: what kind of preflight it is (CORS_NOT_PREFLIGHT when CORS is off);
 * for CORS_PREFLIGHT_OK *ret is its 204 answer with the CORS headers (NULL: out of memory),
 * else NULL: a refusal is answered 403 without CORS headers (jwks_http.c). */
enum cors_preflight cors_preflight(const struct conf *conf, struct MHD_Connection *c,
                                   struct MHD_Response **ret);

/* Why a refused preflight was refused, for its 403. */
const char *cors_refusal_message(enum cors_preflight p);

/* CORS for browser relying parties on the public JWKS listener: the body is public anyway, so
 * CORS only decides which pages' scripts may read it. Never credentials. */
#include "cors.h"

#include <string.h>
#include <strings.h>

/* The request headers a preflight may name (lowercase, as Fetch sends them). */
static const char *const allowed_headers[] = {"if-none-match", "cache-control"};

bool cors_enabled(const struct conf *conf)
{
	return conf->jwks.cors_any || conf->jwks.n_cors_origins > 0;
}

const char *cors_allow_origin(const struct conf *conf, const char *origin)
{
	if (conf->jwks.cors_any)
		return "*";
	if (!origin)
		return NULL;
	for (size_t i = 0; i < conf->jwks.n_cors_origins; i++)
		if (strcmp(origin, conf->jwks.cors_origins[i]) == 0)
			return conf->jwks.cors_origins[i];
	return NULL;
}

static bool header_name_allowed(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(allowed_headers) / sizeof(allowed_headers[0]); i++)
		if (strlen(allowed_headers[i]) == len &&
		    strncasecmp(name, allowed_headers[i], len) == 0)
			return true;
	return false;
}

bool cors_request_headers_allowed(const char *names)
{
	const char *p = names;

	while (p && *p) {
		size_t len = strcspn(p, ",");
		const char *next = p[len] ? p + len + 1 : p + len;

		while (len > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len > 0 && !header_name_allowed(p, len))
			return false;
		p = next;
	}
	return true;
}

enum cors_preflight cors_preflight_check(const struct conf *conf, const struct cors_request *rq)
{
	if (!cors_enabled(conf) || rq->n_origin == 0 || rq->n_method == 0)
		return CORS_NOT_PREFLIGHT;
	/* A browser sends each once; anything else is not a browser, and gets nothing. */
	if (rq->n_origin > 1 || !cors_allow_origin(conf, rq->origin))
		return CORS_REFUSED_ORIGIN;
	if (rq->n_method > 1 || (strcmp(rq->method, "GET") != 0 && strcmp(rq->method, "HEAD") != 0))
		return CORS_REFUSED_METHOD;
	if (rq->n_headers > 1 || !cors_request_headers_allowed(rq->headers))
		return CORS_REFUSED_HEADERS;
	return CORS_PREFLIGHT_OK;
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
	struct cors_request *rq = cls;

	(void)kind;
	if (strcasecmp(key, "Origin") == 0 && rq->n_origin++ == 0)
		rq->origin = value;
	else if (strcasecmp(key, "Access-Control-Request-Method") == 0 && rq->n_method++ == 0)
		rq->method = value;
	else if (strcasecmp(key, "Access-Control-Request-Headers") == 0 && rq->n_headers++ == 0)
		rq->headers = value;
	return MHD_YES;
}

void cors_request_of(struct MHD_Connection *c, struct cors_request *ret)
{
	memset(ret, 0, sizeof(*ret));
	MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, ret);
}

/* The origin to allow for this request, or NULL. */
static const char *allowed_for(const struct conf *conf, struct MHD_Connection *c)
{
	struct cors_request rq;

	cors_request_of(c, &rq);
	return cors_allow_origin(conf, rq.n_origin == 1 ? rq.origin : NULL);
}

/* With a list the answer depends on Origin: a shared cache must not hand one origin's answer
 * to another, nor one made without Origin to a browser. "*" is the same for every request, and
 * is sent even without Origin, so that a cached copy suits every browser: no Vary. */
void cors_add_vary(const struct conf *conf, struct MHD_Response *resp)
{
	if (!conf->jwks.cors_any)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
}

void cors_add_headers(const struct conf *conf, struct MHD_Connection *c, struct MHD_Response *resp)
{
	const char *allow;

	if (!cors_enabled(conf))
		return;
	cors_add_vary(conf, resp);
	allow = allowed_for(conf, c);
	if (!allow)
		return;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, allow);
	MHD_add_response_header(resp, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
}

const char *cors_refusal_message(enum cors_preflight p)
{
	switch (p) {
	case CORS_REFUSED_ORIGIN:
		return "origin not allowed ([jwks] cors-origins)";
	case CORS_REFUSED_METHOD:
		return "only GET and HEAD may be asked for";
	default:
		return "only the request headers " CORS_ALLOW_HEADERS " may be asked for";
	}
}

/* The 204 of an allowed preflight: no body, the CORS headers. NULL: out of memory. */
static struct MHD_Response *allowed_response(const struct conf *conf, const char *origin)
{
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);

	if (!resp)
		return NULL;
	cors_add_vary(conf, resp);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, origin);
	MHD_add_response_header(resp, "Access-Control-Allow-Methods", CORS_ALLOW_METHODS);
	MHD_add_response_header(resp, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
	MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE);
	return resp;
}

enum cors_preflight cors_preflight(const struct conf *conf, struct MHD_Connection *c,
                                   struct MHD_Response **ret)
{
	struct cors_request rq;
	enum cors_preflight p;

	*ret = NULL;
	cors_request_of(c, &rq);
	p = cors_preflight_check(conf, &rq);
	if (p == CORS_PREFLIGHT_OK)
		*ret = allowed_response(conf, cors_allow_origin(conf, rq.origin));
	return p;
}

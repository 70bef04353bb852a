/* HTTP for relying parties: pre-rendered JWKS with ETag/304, and the discovery document. */
#include "jwks_http.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "conf_routes.h"
#include "conf_values.h"
#include "cors.h"
#include "counters.h"
#include "etag.h"
#include "health_http.h"
#include "http.h"
#include "log.h"
#include "tls.h"

struct jwks_http {
	struct daemon *d;
	struct http_tcp_set tcp;
	struct tls_server *tls; /* h14-tls: NULL: plain HTTP */
};

static const char jwks_suffix[] = "/.well-known/jwks.json";
static const char discovery_suffix[] = "/.well-known/openid-configuration";

static void keyset_free_cb(void *cls)
{
	keyset_release(cls);
}

static void add_cache_headers(struct runtime *rt, struct MHD_Response *resp, const char *etag)
{
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, rt->cache_control);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
}

/* tokensign_jwks_requests_total: one per JWKS or discovery answer, by status. */
static void count(const char *status)
{
	metrics_add(metrics_series(&counters.jwks_requests, status, NULL), 1);
}

/* h14-cors: queues resp (made by the caller, NULL when out of memory) and drops our reference;
 * with cors, an answer of the public listener, with the CORS headers of cors.h. The sign
 * socket's copy of the JWKS has none: no browser reaches a Unix socket. */
static enum MHD_Result queue(struct runtime *rt, struct MHD_Connection *c, unsigned status,
                             struct MHD_Response *resp, bool cors)
{
	enum MHD_Result r;

	if (!resp)
		return MHD_NO;
	if (cors)
		cors_add_headers(rt->conf, c, resp);
	r = http_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result reply_not_modified(struct runtime *rt, struct MHD_Connection *c,
                                          const char *etag, bool cors)
{
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);

	if (!resp)
		return MHD_NO;
	count("304");
	add_cache_headers(rt, resp, etag);
	return queue(rt, c, MHD_HTTP_NOT_MODIFIED, resp, cors);
}

static bool not_modified(struct MHD_Connection *c, const char *etag)
{
	const char *inm =
	    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	return inm && etag_none_match(inm, etag);
}

static enum MHD_Result reply_jwks(struct runtime *rt, struct MHD_Connection *c, size_t index,
                                  bool cors)
{
	struct keyset *set = keyring_acquire(rt->keyring, index);
	struct MHD_Response *resp;
	enum MHD_Result r;

	if (!set)
		return queue(rt, c, MHD_HTTP_SERVICE_UNAVAILABLE,
		             http_error_response(MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		                                 "keys not loaded yet"),
		             cors);
	if (not_modified(c, set->etag)) {
		r = reply_not_modified(rt, c, set->etag, cors);
		keyset_release(set);
		return r;
	}
	resp = MHD_create_response_from_buffer_with_free_callback_cls(set->jwks_len, set->jwks,
	                                                              keyset_free_cb, set);
	if (!resp) {
		keyset_release(set);
		return MHD_NO;
	}
	count("200");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	add_cache_headers(rt, resp, set->etag);
	return queue(rt, c, MHD_HTTP_OK, resp, cors);
}

enum MHD_Result jwks_http_reply(struct runtime *rt, struct MHD_Connection *c, size_t index)
{
	return reply_jwks(rt, c, index, false);
}

/* The base of jwks_uri: [jwks] public-url, or else (docs/api.md, "The public JWKS") the scheme
 * and host of the issuer's iss. Never the request's Host header: the document is cacheable, and
 * a cache in front would hand every relying party the jwks_uri one client made up. NULL:
 * neither. */
static char *jwks_base(struct runtime *rt, const struct issuer_conf *ic)
{
	size_t n;

	if (rt->conf->jwks.public_url)
		return strdup(rt->conf->jwks.public_url);
	if (conf_url_origin_len(ic->iss, &n) < 0)
		return NULL;
	return strndup(ic->iss, n);
}

/* OIDC Discovery §3 and RFC 8414 §2 require response_types_supported, and RFC 8414 §3.2 forbids an
 * empty array. We run no authorization endpoint; ["id_token"] says what relying parties get (a
 * signed JWT checked against jwks_uri), as Kubernetes' service-account issuer says it
 * (docs/relying-parties.md). */
static char *discovery_render(const struct issuer_conf *ic, const char *base)
{
	json_t *doc;
	char *uri = NULL, *s = NULL;

	if (asprintf(&uri, "%s/%s%s", base, ic->name, jwks_suffix) < 0)
		return NULL;
	doc = json_pack("{s:s, s:s, s:[s], s:[s], s:[s]}", "issuer", ic->iss, "jwks_uri", uri,
	                "response_types_supported", "id_token", "subject_types_supported", "public",
	                "id_token_signing_alg_values_supported", jws_alg_name(ic->alg));
	if (doc)
		s = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	free(uri);
	return s;
}

/* Built from the configuration alone, so it varies with no request header (no Vary but
 * CORS's: cors.h); a matching If-None-Match gets 304. */
static enum MHD_Result reply_discovery(struct runtime *rt, struct MHD_Connection *c,
                                       const struct issuer_conf *ic)
{
	char *base = jwks_base(rt, ic), *body;
	struct MHD_Response *resp;
	char etag[ETAG_SIZE];

	if (!base) {
		count("404");
		return queue(
		    rt, c, MHD_HTTP_NOT_FOUND,
		    http_error_response(MHD_HTTP_NOT_FOUND, "no_jwks_uri",
		                        "the issuer's iss is not an http(s) URL and [jwks] "
		                        "public-url is not set"),
		    true);
	}
	body = discovery_render(ic, base);
	free(base);
	if (!body || etag_of(body, strlen(body), etag) < 0) {
		free(body);
		return MHD_NO;
	}
	if (not_modified(c, etag)) {
		free(body);
		return reply_not_modified(rt, c, etag, true);
	}
	resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	count("200");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	add_cache_headers(rt, resp, etag);
	return queue(rt, c, MHD_HTTP_OK, resp, true);
}

/* The path's issuer and document, from the table built with the configuration (conf_routes.h):
 * /NAME/.well-known/..., {iss path}/.well-known/openid-configuration and
 * /.well-known/oauth-authorization-server{iss path}. url is the path as sent (keep_escaped), so
 * "%2F", "//" or "/../" reach no document. /NAME/.well-known/{jwks.json,openid-configuration}
 * for no configured NAME is still a path: 405 before 404 unknown_issuer. */
static const struct issuer_conf *route(struct runtime *rt, const char *url, bool *is_jwks,
                                       bool *is_path)
{
	const struct conf_route *r = conf_route_find(rt->conf, url);
	const char *slash;

	if (r) {
		*is_path = true;
		*is_jwks = r->doc == CONF_DOC_JWKS;
		return &rt->conf->issuers[r->issuer];
	}
	*is_path = url[0] == '/' && (slash = strchr(url + 1, '/')) &&
	           (strcmp(slash, jwks_suffix) == 0 || strcmp(slash, discovery_suffix) == 0);
	return NULL;
}

/* A preflight's answer: true with *ret set, or false (not one: answered as before). */
static bool reply_preflight(struct runtime *rt, struct MHD_Connection *c, enum MHD_Result *ret)
{
	struct MHD_Response *resp;
	enum cors_preflight p = cors_preflight(rt->conf, c, &resp);

	if (p == CORS_NOT_PREFLIGHT)
		return false;
	if (p == CORS_PREFLIGHT_OK) {
		count("204");
		*ret = queue(rt, c, MHD_HTTP_NO_CONTENT, resp, false);
		return true;
	}
	/* Fetch fails a preflight whose status is not 2xx: a 403 does that and, unlike a bare
	 * 204, says why to whoever looks (curl, the browser's network panel). */
	resp = http_error_response(MHD_HTTP_FORBIDDEN, "cors_refused", cors_refusal_message(p));
	if (resp)
		cors_add_vary(rt->conf, resp);
	count("403");
	*ret = queue(rt, c, MHD_HTTP_FORBIDDEN, resp, false);
	return true;
}

static enum MHD_Result answer(struct runtime *rt, struct MHD_Connection *c, const char *url,
                              const char *method)
{
	const struct issuer_conf *ic;
	bool is_jwks = false, is_path;
	enum MHD_Result r;

	ic = route(rt, url, &is_jwks, &is_path);
	if (!is_path) {
		count("404");
		return queue(rt, c, MHD_HTTP_NOT_FOUND,
		             http_error_response(MHD_HTTP_NOT_FOUND, "not_found", "no such path"),
		             true);
	}
	/* h14-cors: a browser's preflight, when [jwks] cors-origins is set. */
	if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0 && reply_preflight(rt, c, &r))
		return r;
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return queue(rt, c, MHD_HTTP_METHOD_NOT_ALLOWED, http_method_response("GET, HEAD"),
		             true);
	if (!ic) {
		count("404");
		return queue(
		    rt, c, MHD_HTTP_NOT_FOUND,
		    http_error_response(MHD_HTTP_NOT_FOUND, "unknown_issuer", "no such issuer"),
		    true);
	}
	if (is_jwks)
		return reply_jwks(rt, c, keyring_index(rt->keyring, ic), true);
	return reply_discovery(rt, c, ic);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
	static int headers_seen;
	struct jwks_http *jh = cls;
	struct runtime *rt;
	enum MHD_Result r;

	/* Answering in the first call, before libmicrohttpd has seen the end of the request,
	 * makes it close the connection; answer in the second, as its examples do. */
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
	rt = runtime_acquire(jh->d);
	if (rt->conf->jwks.health && health_http_path(url)) /* h14-cors: [jwks] health = yes */
		r = health_http_reply(jh->d, c, url, method);
	else
		r = answer(rt, c, url, method);
	runtime_release(rt);
	return r;
}

/* Anyone can make libmicrohttpd refuse a connection at a cap, once per connection: the caps
 * are logged at start instead. */
static void jwks_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void jwks_log(void *cls, const char *fmt, va_list ap)
{
	if (strncmp(fmt, "Server reached connection limit", 31) == 0)
		metrics_add(metrics_series(&counters.connections_refused, "jwks", NULL), 1);
	else
		http_log(cls, fmt, ap);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
	http_request_done(c);
}

int jwks_http_listen(const struct listen_conf *lc, int *ret)
{
	int fd, one = 1, r;

	fd = socket(lc->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* A reload binds the new listeners before it closes the old ones, on the same ports. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* [::]:port means IPv6 only; IPv4 is its own listen line. */
	if (lc->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&lc->addr, lc->addr_len) < 0 || listen(fd, 128) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	*ret = fd;
	return 0;
}

/* libmicrohttpd would decode every %-escape in the path before the handler sees it, so that
 * "/realms%2Fmain/..." reached the document of "/realms/main/...": only the RFC 3986
 * equivalences are applied (conf_route_normalize). */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
	return conf_route_normalize(s);
}

static int serve(struct jwks_http *jh, size_t i, const char *what)
{
	struct MHD_OptionItem tls[TLS_MHD_OPTIONS]; /* h14-tls: and how connections are watched */

	tls_server_options(jh->tls, &jh->tcp.guards, tls);
	jh->tcp.mhd[i] = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
	        tls_server_flags(jh->tls),
	    0, NULL, NULL, on_request, jh, MHD_OPTION_EXTERNAL_LOGGER, jwks_log, jh,
	    MHD_OPTION_LISTEN_SOCKET, jh->tcp.fds[i], MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
	    MHD_OPTION_CONNECTION_LIMIT, jh->d->budget.jwks, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	    jh->d->budget.jwks_per_address, MHD_OPTION_STRICT_FOR_CLIENT, (int)HTTP_STRICTNESS,
	    MHD_OPTION_ARRAY, tls, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
	    MHD_OPTION_URI_LOG_CALLBACK, http_on_target, NULL, MHD_OPTION_UNESCAPE_CALLBACK,
	    keep_escaped, NULL, MHD_OPTION_END);
	if (!jh->tcp.mhd[i]) {
		log_error("cannot start the JWKS server on %s", what);
		return -EIO;
	}
	return 0;
}

int jwks_http_start(struct daemon *d, const int *fds, size_t n, struct jwks_http **ret)
{
	const struct conf *conf = d->rt->conf;
	size_t total = n > 0 ? n : conf->jwks.n_listen;
	struct jwks_http *jh = calloc(1, sizeof(*jh));
	int r = 0;

	if (!jh)
		return -ENOMEM;
	jh->d = d;
	r = http_tcp_set_init(&jh->tcp, total, conf->jwks.request_timeout,
	                      metrics_series(&counters.connections_open, "jwks", NULL), "JWKS");
	/* h14-tls: HTTPS when [jwks] has tls-cert; HSTS on its answers. */
	if (r == 0)
		r = tls_server_new(&conf->jwks.tls, "jwks", d->config_path, &jh->tcp.guards, true,
		                   &jh->tls);
	if (r < 0) {
		jwks_http_stop(jh);
		return r;
	}
	for (size_t i = 0; i < total && r == 0; i++) {
		jh->tcp.n = i + 1;
		jh->tcp.fds[i] = n > 0 ? fds[i] : -1;
		if (n == 0 && (r = jwks_http_listen(&conf->jwks.listen[i], &jh->tcp.fds[i])) < 0) {
			log_error("cannot listen on %s: %s", conf->jwks.listen[i].text,
			          strerror(-r));
			break;
		}
		r = serve(jh, i, n > 0 ? "a passed socket" : conf->jwks.listen[i].text);
	}
	if (r < 0) {
		jwks_http_stop(jh);
		return r;
	}
	*ret = jh;
	return 0;
}

void jwks_http_stop(struct jwks_http *jh)
{
	if (!jh)
		return;
	http_tcp_set_stop(&jh->tcp);
	tls_server_free(jh->tls); /* h14-tls: after the daemons, whose connections held it */
	free(jh);
}

/* h14-tls */
bool jwks_http_tls_on(const struct jwks_http *jh)
{
	return jh->tls != NULL;
}

int jwks_http_reload_tls(struct jwks_http *jh, const struct conf *conf, const char *config_path)
{
	return jh->tls ? tls_server_reload(jh->tls, &conf->jwks.tls, config_path) : 0;
}

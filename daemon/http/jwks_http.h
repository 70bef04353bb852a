/* The public JWKS and discovery documents (docs/api.md, "The public JWKS") on every [jwks]
 * listen address. */
#pragma once
#include <microhttpd.h>

#include "daemon.h"

/* Queues issuer index's JWKS of rt, as rendered at its last key change (no JSON work per request,
 * no copy: the response holds the keyset), with its ETag and Cache-Control; 304 to a matching
 * If-None-Match. The public endpoint's answer, and the sign socket's GET /v1/issuers/NAME/jwks. */
enum MHD_Result jwks_http_reply(struct runtime *rt, struct MHD_Connection *c, size_t index);

/* Serves on the n passed sockets when systemd passed any (n > 0), else binds every [jwks]
 * listen address. */
int jwks_http_start(struct daemon *d, const int *fds, size_t n, struct jwks_http **ret);
void jwks_http_stop(struct jwks_http *jh);

/* A listening TCP socket on lc (non-blocking, SO_REUSEPORT for reloads, IPv6 only on [::]);
 * the metrics listener's too. */
int jwks_http_listen(const struct listen_conf *lc, int *ret);

/* h14-tls: whether the listeners speak HTTPS; a reload that turns it on or off needs new
 * listeners (reload.c). Otherwise the reload reads [jwks] tls-cert and tls-key of conf again for
 * the connections that start from now on; on failure (logged) the running ones stay. */
bool jwks_http_tls_on(const struct jwks_http *jh);
int jwks_http_reload_tls(struct jwks_http *jh, const struct conf *conf, const char *config_path);

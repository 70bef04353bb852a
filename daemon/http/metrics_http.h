/* Prometheus metrics (docs/operations.md, "Monitoring") on every [metrics] listen address:
 * GET /metrics only. */
#pragma once
#include "daemon.h"

/* Connections per metrics listener: a scraper or two, never a crowd. */
#define METRICS_HTTP_MAX_CONNECTIONS 16

/* Binds every [metrics] listen address of d's configuration; none configured: *ret is NULL
 * and nothing listens. */
int metrics_http_start(struct daemon *d, struct metrics_http **ret);
void metrics_http_stop(struct metrics_http *mh);

/* h14-tls: as jwks_http_tls_on() and jwks_http_reload_tls(), for [metrics] (with client-ca).
 * Accept NULL (no metrics listener). */
bool metrics_http_tls_on(const struct metrics_http *mh);
int metrics_http_reload_tls(struct metrics_http *mh, const struct conf *conf,
                            const char *config_path);

/* GET /healthz and /readyz over HTTP: on the sign socket always, on the public JWKS listener
 * with [jwks] health = yes (for a TCP load balancer's probe). */
#pragma once
#include <stdbool.h>

#include <microhttpd.h>

#include "daemon.h"

/* True for "/healthz" and "/readyz". */
bool health_http_path(const char *url);

/* Answers url, one of them: 200 {"status":"ok"}, 200 {"status":"ready"} or 503
 * {"status":"not_ready","reason":...} (with Retry-After), all Cache-Control: no-store; 405 for
 * a method other than GET and HEAD. Never waits for a key generation (health.h). */
enum MHD_Result health_http_reply(struct daemon *d, struct MHD_Connection *c, const char *url,
                                  const char *method);

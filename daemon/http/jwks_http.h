/* The public JWKS and discovery documents of SPEC §5 on every [jwks] listen address. */
#pragma once
#include "daemon.h"

/* Serves on the n passed sockets when systemd passed any (n > 0), else binds every [jwks]
 * listen address. */
int jwks_http_start(struct daemon *d, const int *fds, size_t n, struct jwks_http **ret);
void jwks_http_stop(struct jwks_http *jh);

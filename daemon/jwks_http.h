/* The public JWKS and discovery documents of SPEC §5 on every [jwks] listen address. */
#pragma once
#include "daemon.h"

int jwks_http_start(struct daemon *d, struct jwks_http **ret);
void jwks_http_stop(struct jwks_http *jh);

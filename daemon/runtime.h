/* Making a runtime from a configuration: algorithms checked against the token, keys loaded,
 * first keys made. Used at start and on every reload. */
#pragma once
#include "daemon.h"

/* Takes ownership of conf (freed on failure too). Fails when an issuer's algorithm cannot be
 * served by the token or an issuer without keys cannot get one. */
int runtime_new(struct hsmc *hsm, struct conf *conf, struct runtime **ret);

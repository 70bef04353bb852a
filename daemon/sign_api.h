/* The signing API of SPEC §4 on the [sign] Unix socket. */
#pragma once
#include "daemon.h"

/* Creates the socket (mode, group from the configuration), starts serving. */
int sign_api_start(struct daemon *d, struct sign_api **ret);
void sign_api_stop(struct sign_api *api);

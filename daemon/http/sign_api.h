/* The signing API of docs/api.md on the [sign] Unix socket. */
#pragma once
#include "daemon.h"

/* Serves on fd when systemd passed one (fd >= 0: the unit owns path, mode and group), else
 * creates the [sign] socket with the configured mode and group. */
/* How many signing workers serve the sign socket: one per CPU, 2 to 16 (and as many signing
 * helpers). */
unsigned sign_api_workers(void);

int sign_api_start(struct daemon *d, int fd, struct sign_api **ret);
void sign_api_stop(struct sign_api *api);

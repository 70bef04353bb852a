/* The operator API of docs/admin-api.md on the [admin] Unix socket (keyrotate's peer). */
#pragma once
#include "daemon.h"

/* Serves on fd when systemd passed one, else on the [admin] socket; does nothing (and succeeds)
 * when neither exists. */
int admin_api_start(struct daemon *d, int fd, struct admin_api **ret);
void admin_api_stop(struct admin_api *api);

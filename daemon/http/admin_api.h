/* The operator API of docs/admin-api.md on the [admin] Unix socket (keyrotate's peer). */
#pragma once
#include "daemon.h"

/* Takes fd. Only with an [admin] section: serves on fd when systemd passed one, else on the
 * section's socket. Without one, closes fd and succeeds. */
int admin_api_start(struct daemon *d, int fd, struct admin_api **ret);
void admin_api_stop(struct admin_api *api);

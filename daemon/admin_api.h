/* The operator API of docs/admin-api.md on the [admin] Unix socket (keyrotate's peer). */
#pragma once
#include "daemon.h"

/* Does nothing (and succeeds) when the configuration has no [admin] section. */
int admin_api_start(struct daemon *d, struct admin_api **ret);
void admin_api_stop(struct admin_api *api);

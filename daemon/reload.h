/* Configuration loading for the running daemon, and SIGHUP reloads. */
#pragma once
#include "daemon.h"

/* Loads and validates path, logging every problem. */
int daemon_config_load(const char *path, struct conf **ret);

/* Re-reads the configuration file and applies it: issuers added or removed, policies changed,
 * keys of new issuers made, sockets whose path or address changed re-opened. An invalid file
 * (or one the token cannot serve) is rejected with its problems logged, and the running
 * configuration stays. Requests in flight finish with the configuration they started with.
 * The scheduler stops while the new runtime is built (both would write to the token) and starts
 * again on whichever runtime is current afterwards. */
void daemon_reload(struct daemon *d);

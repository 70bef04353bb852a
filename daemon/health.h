/* How healthy the daemon is, as /readyz, systemd's status line and its watchdog see it. */
#pragma once
#include <stdbool.h>

#include "daemon.h"

/* Ready means the token answers and every issuer has a key that may sign now. On false, *why
 * names the first problem (static, or an issuer name). Never waits for a key generation: it
 * reads published keysets and atomics, and skips probing a busy management helper. */
bool health_ready(struct daemon *d, const char **why);

/* Sends systemd "STATUS=signing: main=Qx7a1b2c ...", with prefix (e.g. "READY=1\n") first. */
void health_notify_status(struct daemon *d, const char *prefix);

/* Under a systemd watchdog: a heartbeat only while the token answers, then the status line. */
void health_watchdog_beat(struct daemon *d);

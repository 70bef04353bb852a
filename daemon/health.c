/* Readiness, systemd's status line and the watchdog heartbeat: read-only looks at the daemon,
 * called by the sign API (/readyz) and by main's loop; they depend on the keys, never the HTTP. */
#include "health.h"

#include <stdio.h>

#include <systemd/sd-daemon.h>

#include "clock.h"
#include "log.h"

bool health_ready(struct daemon *d, const char **why)
{
	struct runtime *rt = runtime_acquire(d);
	int64_t now = clock_now();
	bool ok = true;

	*why = NULL;
	if (hsmc_probe_ready(d->hsm) < 0) {
		*why = "token unreachable";
		ok = false;
	} else if (keyring_token_lost(rt->keyring)) {
		/* It answers again: the views, kept from before, are re-read now, not at the
		 * scheduler's next retry. */
		daemon_poke_scheduler(d);
	}
	/* Ready means "can sign now": a failed generation of the next key is a warning (status),
	 * not a reason to drain an instance that holds a good active key. */
	for (size_t i = 0; ok && i < rt->keyring->n; i++) {
		struct keyset *set = keyring_acquire(rt->keyring, i);
		ok = keyset_signer(set, now) != NULL;
		keyset_release(set);
		if (!ok)
			*why = rt->keyring->issuers[i].conf->name;
	}
	runtime_release(rt);
	return ok;
}

void health_notify_status(struct daemon *d, const char *prefix)
{
	struct runtime *rt = runtime_acquire(d);
	int64_t now = clock_now();
	char status[512];
	size_t used;
	int w;

	w = snprintf(status, sizeof(status), "%sSTATUS=signing:", prefix);
	used = w > 0 ? (size_t)w : 0;
	for (size_t i = 0; i < rt->keyring->n && used < sizeof(status); i++) {
		struct keyset *set = keyring_acquire(rt->keyring, i);
		struct key *k = keyset_signer(set, now);
		w = snprintf(status + used, sizeof(status) - used, " %s=%.8s",
		             rt->keyring->issuers[i].conf->name, k ? k->kid : "NONE");
		used += w > 0 ? (size_t)w : 0;
		keyset_release(set);
	}
	runtime_release(rt);
	sd_notify(0, status);
}

void health_watchdog_beat(struct daemon *d)
{
	if (hsmc_probe_ready(d->hsm) == 0)
		sd_notify(0, "WATCHDOG=1");
	else
		log_error("the token does not answer (%s); withholding the watchdog heartbeat",
		          hsm_last_error());
	health_notify_status(d, "");
}

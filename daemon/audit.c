/* Lifecycle audit records with a stable MESSAGE_ID, so journalctl can select them. */
#include "audit.h"

#include <stdio.h>
#include <stdlib.h>

#include <systemd/sd-journal.h>

#include "log.h"

/* journalctl MESSAGE_ID=6d1f0c1e5a3b4c2f9e8d7a6b5c4d3e2f */
#define AUDIT_MESSAGE_ID "6d1f0c1e5a3b4c2f9e8d7a6b5c4d3e2f"

static const char *const event_names[] = {
    [AUDIT_GENERATED] = "generated", [AUDIT_ACTIVATED] = "activated",
    [AUDIT_RETIRED] = "retired",     [AUDIT_DESTROYED] = "destroyed",
    [AUDIT_REVOKED] = "revoked",     [AUDIT_ROTATION_FORCED] = "rotation-forced",
};

void audit_key(enum audit_event event, const char *issuer, const char *kid, int64_t operator_uid)
{
	const char *name = event_names[event];
	char who[32] = "schedule";

	if (operator_uid >= 0)
		snprintf(who, sizeof(who), "uid:%lld", (long long)operator_uid);
	if (getenv("JOURNAL_STREAM")) {
		sd_journal_send("MESSAGE=issuer %s: key %s %s (%s)", issuer, kid, name, who,
		                "MESSAGE_ID=" AUDIT_MESSAGE_ID, "PRIORITY=%d", LOG_NOTICE,
		                "TOKENSIGN_EVENT=%s", name, "TOKENSIGN_ISSUER=%s", issuer,
		                "TOKENSIGN_KID=%s", kid, "TOKENSIGN_OPERATOR_UID=%lld",
		                (long long)operator_uid, NULL);
		return;
	}
	log_notice("audit: event=%s issuer=%s kid=%s by=%s", name, issuer, kid, who);
}

/* Audit records of key lifecycle events: to the journal with structured fields under systemd,
 * as one line on stderr otherwise. */
#pragma once
#include <stdint.h>

enum audit_event {
	AUDIT_GENERATED,
	AUDIT_ACTIVATED,
	AUDIT_RETIRED,
	AUDIT_DESTROYED,
	AUDIT_REVOKED,
	AUDIT_ROTATION_FORCED,
};

/* operator_uid < 0: the daemon itself acted (schedule), not a person. */
void audit_key(enum audit_event event, const char *issuer, const char *kid, int64_t operator_uid);

/* Audit records of key lifecycle events: to the journal with structured fields under systemd,
 * as one line on stderr otherwise. */
#pragma once
#include <stdbool.h>
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

/* One record per token issued: who asked (uid, pid, the caller's systemd unit), for which issuer
 * and audience, with which key, its jti and exp. Never a claim value beyond these, never the
 * token. aud is the compact JSON of the aud claim, or a cut piece of it (aud_cut). */
struct audit_signature {
	const char *issuer, *kid, *jti, *aud;
	int64_t exp;
	uint32_t uid;
	int32_t pid;
	bool aud_cut;
};
void audit_signed(const struct audit_signature *a);

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

/* The caller's systemd unit, for the journal's records (TOKENSIGN_CALLER_UNIT): a connection's
 * caller has one pid for the connection's life, so its unit is looked up at most once per
 * connection, and only when a record goes to the journal (sd_pid_get_unit() costs about 30
 * system calls). Owned by the connection; used by the one thread that serves it. */
struct audit_unit {
	char *name;     /* NULL: no unit (or not looked up yet) */
	bool looked_up; /* name is the answer, whatever it was */
};
void audit_unit_clear(struct audit_unit *u);

/* One record per signing decision (docs/operations.md, "Audit records"): a token issued
 * (audit_signed) or a request refused (audit_refused). Who asked (uid, pid, and under the journal
 * the caller's systemd unit), for which issuer and audience, with which key, its jti and exp; for a
 * refusal, the error code. Never a claim value beyond these, never the token. aud is the compact
 * JSON of the aud claim, or a cut piece of it (aud_cut). A refusal names what was known when it was
 * decided: kid, jti, aud NULL or "" and exp 0 when not known, no_caller when the credentials were
 * unreadable. */
struct audit_signature {
	const char *issuer, *kid, *jti, *aud;
	int64_t exp;
	uint32_t uid;
	int32_t pid;
	bool aud_cut;
	bool no_caller;
	struct audit_unit *unit; /* the connection's, or NULL: looked up for this record alone */
	const char *reason;      /* audit_refused(): the error code of docs/api.md */
};

/* Each returns 0, or a negative errno when the record could not be written (the caller applies
 * [sign] audit). A failure is logged once, until a record is written again. */
int audit_signed(const struct audit_signature *a);
int audit_refused(const struct audit_signature *a);

/* Token issuance (docs/api.md, "Signing"): from a request's body to a signed token, or a
 * refusal, each with its audit record. The sign API calls it once the body is complete. */
#pragma once
#include <stddef.h>

#include "audit.h"
#include "daemon.h"

/* What became of a request: a token (status 200 and answer) or a refusal (an HTTP status,
 * code and message). Either way its audit record has been written. */
struct issue_outcome {
	unsigned status;
	const char *code;  /* a refusal's error code (docs/api.md), static */
	char message[192]; /* a refusal's message, for people */
	char *answer;      /* status 200: the JSON answer; the caller frees it */
};

/* Issues a token of issuer ic (which lives in rt) for body (len bytes, not NUL-terminated),
 * with rt's keys and token. caller: who asks, as the audit record names them (uid, pid,
 * no_caller; the rest is ignored). Returns 0 with *ret filled, or -ENOMEM when nothing can
 * be answered. */
int token_issue(struct runtime *rt, const struct issuer_conf *ic, const char *body, size_t len,
                const struct audit_signature *caller, struct issue_outcome *ret);

/* Refuses a request for ic: writes its audit record (caller as above; seen: what the request
 * named so far, jti, aud, kid, exp, or NULL), then fills *ret. The record is never a reason to
 * withhold a refusal ([sign] audit applies to tokens). Returns 0. */
int issue_refuse(const struct issuer_conf *ic, const struct audit_signature *caller,
                 unsigned status, const char *code, const char *message,
                 const struct audit_signature *seen, struct issue_outcome *ret);

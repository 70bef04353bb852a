/* Token issuance (docs/api.md, "Signing"): from a request's body to a signed token, or a
 * refusal, each with its audit record. The sign API calls it once the body is complete. */
#pragma once
#include <stdbool.h>
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

/* One item of a batch: a single sign's body (len bytes, not NUL-terminated), and when it was
 * parsed already (policy_batch_split()), its tree, judged instead of parsing body again. */
struct json_t;
struct issue_request {
	const char *body;
	size_t len;
	const struct json_t *tree; /* or NULL */
};

/* Issues n (1..POLICY_MAX_BATCH) tokens of issuer ic, each judged and audited exactly as
 * token_issue() judges its body, signed in one round trip to a signing helper: ret[i] is the
 * outcome of reqs[i]. *ret_lost: no token was issued and the signing helpers could not be
 * reached (lost twice, or none running): the batch as a whole is then answered 503. Returns 0
 * with every ret[i] filled, -EINVAL for a bad n, or -ENOMEM when nothing can be answered. */
int token_issue_batch(struct runtime *rt, const struct issuer_conf *ic,
                      const struct issue_request *reqs, size_t n,
                      const struct audit_signature *caller, struct issue_outcome *ret,
                      bool *ret_lost);

/* Refuses a request for ic: writes its audit record (caller as above; seen: what the request
 * named so far, jti, aud, kid, exp, or NULL), then fills *ret. The record is never a reason to
 * withhold a refusal ([sign] audit applies to tokens). Returns 0. */
int issue_refuse(const struct issuer_conf *ic, const struct audit_signature *caller,
                 unsigned status, const char *code, const char *message,
                 const struct audit_signature *seen, struct issue_outcome *ret);

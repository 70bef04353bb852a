/* The claim policy of docs/api.md ("POST /v1/issuers/NAME/sign"): from a request body to the
 * exact payload the daemon will sign. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

#define POLICY_MAX_BODY  (64 * 1024)
#define POLICY_MAX_DEPTH 32
#define POLICY_JTI_BYTES 16

/* sign-batch (docs/api.md): 1 to POLICY_MAX_BATCH requests in a body of at most
 * POLICY_MAX_BATCH_BODY; each request within it is held to the single sign's rules. */
#define POLICY_MAX_BATCH      64
#define POLICY_MAX_BATCH_BODY (256 * 1024)

/* Why a request was refused: HTTP status, a stable code for programs, a message for people;
 * and for its audit record, the jti (when a valid one was given) and aud (as kept in struct
 * signing_request) of a body whose claims could be read, else "". */
struct policy_error {
	int status;
	const char *code;
	char message[192];
	char jti[4 * 128 + 1];
	char aud[256];
	bool aud_cut;
};

/* What the policy decided; payload is the claims exactly as they will be signed. */
struct signing_request {
	char *payload; /* compact JSON, caller frees */
	size_t payload_len;
	const char *typ; /* points into the issuer's token_types */
	int64_t iat, exp;
	char jti[4 * 128 + 1]; /* for the audit record: at most 128 characters */
	char aud[256];         /* compact JSON of aud, cut to 255 bytes at a character boundary */
	bool aud_cut;          /* aud was longer: what is left is not JSON */
};

/* Applies every claim rule of the issuer to body (len bytes, not NUL-terminated). now is the
 * current time; jti_random supplies the 128 random bits of a generated jti. Returns 0 and fills
 * *ret, or -EINVAL (refused, err says why: status 400) / -ENOMEM. *ret is untouched on failure. */
int policy_apply(const struct issuer_conf *ic, const char *body, size_t len, int64_t now,
                 const uint8_t jti_random[POLICY_JTI_BYTES], struct signing_request *ret,
                 struct policy_error *err);

/* policy_apply() for a request parsed already (a sign-batch item): the same rules on a copy of
 * item, which is left as it is. */
struct json_t;
int policy_apply_item(const struct issuer_conf *ic, const struct json_t *item, int64_t now,
                      const uint8_t jti_random[POLICY_JTI_BYTES], struct signing_request *ret,
                      struct policy_error *err);

/* A sign-batch body split into its requests, each as its tree in the batch's (what
 * policy_apply_item() judges) and as compact JSON (what policy_apply() would judge as a single
 * sign's body: the same rules, the same answer). */
struct policy_batch {
	char *items[POLICY_MAX_BATCH]; /* owned */
	size_t len[POLICY_MAX_BATCH];
	const struct json_t *trees[POLICY_MAX_BATCH]; /* in root */
	struct json_t *root;                          /* owned */
	size_t n;
};

/* The request-level rules of a sign-batch body (len bytes, not NUL-terminated): well-formed
 * JSON as a single sign's body must be, an object with only "requests", an array of 1 to
 * POLICY_MAX_BATCH objects. Nesting within a request is left to policy_apply(). Returns 0 and
 * fills *ret, or -EINVAL (err: status 400) / -ENOMEM; policy_batch_free() frees *ret either
 * way. */
int policy_batch_split(const char *body, size_t len, struct policy_batch *ret,
                       struct policy_error *err);
void policy_batch_free(struct policy_batch *b);

/* True when a Content-Type header value names application/json (parameters allowed). */
int policy_content_type_ok(const char *value);

/* libFuzzer harness for daemon/policy.c: any request body is refused with a documented 400 code
 * or becomes a payload that keeps every rule of docs/api.md. Never crashes or leaks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW 1790000000LL

static char *types[] = {(char *)"JWT", (char *)"at+jwt"};
static char *auds[] = {(char *)"api://orders", (char *)"api://billing"};
static struct allow_rule anyone = {ALLOW_ANY, 0};
static const struct issuer_conf ic = {
    .name = (char *)"main",
    .iss = (char *)"https://login.example.com/main",
    .alg = JWS_ES256,
    .rotation_period = 30 * 86400,
    .prepublish = 86400,
    .token_ttl = 900,
    .max_token_ttl = 3600,
    .audiences = auds,
    .n_audiences = 2,
    .token_types = types,
    .n_token_types = 2,
    .allow = &anyone,
    .n_allow = 1,
};
static const uint8_t jti_random[POLICY_JTI_BYTES] = {1, 2,  3,  4,  5,  6,  7,  8,
                                                     9, 10, 11, 12, 13, 14, 15, 16};

/* The 400 codes of docs/api.md. */
static const char *const codes[] = {
    "invalid_utf8",      "duplicate_member", "too_deep",        "invalid_json",
    "body_not_object",   "header_parameter", "unknown_member",  "claims_missing",
    "claims_not_object", "typ_invalid",      "typ_not_allowed", "iss_mismatch",
    "iat_forbidden",     "aud_missing",      "aud_invalid",     "aud_not_allowed",
    "exp_invalid",       "exp_in_past",      "exp_too_far",     "nbf_invalid",
    "nbf_after_exp",     "jti_invalid",
};

/* sign-batch's own, for its body as a whole. */
static const char *const batch_codes[] = {"requests_missing", "requests_not_array",
                                          "requests_empty", "requests_too_many",
                                          "request_not_object"};

static void check_refusal(const struct policy_error *err)
{
	size_t i;

	if (err->status != 400 || !err->code || !memchr(err->message, '\0', sizeof(err->message)))
		abort();
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (strcmp(codes[i], err->code) == 0)
			return;
	for (i = 0; i < sizeof(batch_codes) / sizeof(batch_codes[0]); i++)
		if (strcmp(batch_codes[i], err->code) == 0)
			return;
	abort();
}

static bool aud_allowed(json_t *aud)
{
	size_t i;
	json_t *v;

	if (json_is_string(aud))
		return issuer_aud_allowed(&ic, json_string_value(aud));
	if (!json_is_array(aud) || json_array_size(aud) == 0)
		return false;
	json_array_foreach (aud, i, v)
		if (!json_is_string(v) || !issuer_aud_allowed(&ic, json_string_value(v)))
			return false;
	return true;
}

static void check_payload(const struct signing_request *req)
{
	json_t *p, *nbf;

	if (!req->payload || strlen(req->payload) != req->payload_len)
		abort();
	if (req->typ != ic.token_types[0] && req->typ != ic.token_types[1])
		abort();
	if (req->iat != NOW || req->exp <= NOW || req->exp > NOW + (int64_t)ic.max_token_ttl)
		abort();
	p = json_loadb(req->payload, req->payload_len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(p))
		abort();
	if (!json_is_string(json_object_get(p, "iss")) ||
	    strcmp(json_string_value(json_object_get(p, "iss")), ic.iss) != 0)
		abort();
	if (json_integer_value(json_object_get(p, "iat")) != NOW ||
	    json_integer_value(json_object_get(p, "exp")) != req->exp)
		abort();
	if (!aud_allowed(json_object_get(p, "aud")))
		abort();
	if (!json_is_string(json_object_get(p, "jti")))
		abort();
	nbf = json_object_get(p, "nbf");
	if (nbf && (!json_is_integer(nbf) || json_integer_value(nbf) > req->exp))
		abort();
	json_decref(p);
}

/* The same bytes as a sign-batch body: split, and each request judged as a body of its own. */
static void fuzz_batch(const uint8_t *data, size_t size)
{
	struct policy_batch pb;
	struct policy_error err;
	int r;

	memset(&err, 0, sizeof(err));
	r = policy_batch_split((const char *)data, size, &pb, &err);
	if (r == -EINVAL)
		check_refusal(&err);
	else if (r == 0 && (pb.n == 0 || pb.n > POLICY_MAX_BATCH))
		abort();
	else if (r != 0 && r != -ENOMEM)
		abort();
	for (size_t i = 0; r == 0 && i < pb.n; i++) {
		struct signing_request req = {0}, tree_req = {0};
		struct policy_error tree_err;
		int a, b;
		if (!pb.items[i] || strlen(pb.items[i]) != pb.len[i] || pb.items[i][0] != '{')
			abort();
		a = policy_apply(&ic, pb.items[i], pb.len[i], NOW, jti_random, &req, &err);
		/* The daemon judges the item's tree (h15-cost): the same decision and payload. */
		memset(&tree_err, 0, sizeof(tree_err));
		b = policy_apply_item(&ic, pb.trees[i], NOW, jti_random, &tree_req, &tree_err);
		if (a != b && a != -ENOMEM && b != -ENOMEM)
			abort();
		if (a == -EINVAL && b == -EINVAL && strcmp(err.code, tree_err.code) != 0)
			abort();
		if (a == 0 && b == 0 && strcmp(req.payload, tree_req.payload) != 0)
			abort();
		if (a == 0) {
			check_payload(&req);
			free(req.payload);
		}
		free(b == 0 ? tree_req.payload : NULL);
	}
	policy_batch_free(&pb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct signing_request req;
	struct policy_error err;
	int r;

	if (size > POLICY_MAX_BODY) /* the HTTP layer refuses these with 413 */
		return 0;
	memset(&req, 0, sizeof(req));
	memset(&err, 0, sizeof(err));
	r = policy_apply(&ic, (const char *)data, size, NOW, jti_random, &req, &err);
	if (r == 0) {
		check_payload(&req);
		free(req.payload);
	} else if (r == -EINVAL) {
		if (req.payload)
			abort(); /* *ret untouched */
		check_refusal(&err);
	} else if (r != -ENOMEM) {
		abort();
	}
	fuzz_batch(data, size);
	return 0;
}

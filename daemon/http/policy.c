/* The claim rules of docs/api.md ("The rules, in the order they are checked"), applied to a
 * request body before anything is signed. */
#include "policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "b64url.h"
#include "json_arena.h"
#include "json_out.h"

/* Members a caller might use to smuggle a JOSE header parameter into the token. */
static const char *const header_parameters[] = {
    "alg", "kid", "jku", "jwk", "x5u",    "x5c",       "x5t",     "x5t#S256", "crit",
    "cty", "enc", "zip", "b64", "header", "protected", "headers", NULL,
};

static int refuse(struct policy_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(struct policy_error *err, const char *code, const char *fmt, ...)
{
	va_list ap;

	err->status = 400;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int refuse_parse(const json_error_t *jerr, struct policy_error *err)
{
	switch (json_error_code(jerr)) {
	case json_error_out_of_memory:
		return -ENOMEM;
	case json_error_invalid_utf8:
	case json_error_null_character:
	case json_error_null_byte_in_key:
		return refuse(err, "invalid_utf8", "body is not valid UTF-8 or holds a NUL: %s",
		              jerr->text);
	case json_error_duplicate_key:
		return refuse(err, "duplicate_member", "%s", jerr->text);
	case json_error_stack_overflow:
		return refuse(err, "too_deep", "nesting deeper than %d levels", POLICY_MAX_DEPTH);
	default:
		return refuse(err, "invalid_json", "invalid JSON at byte %d: %s", jerr->position,
		              jerr->text);
	}
}

/* True when v nests deeper than limit; the body object itself is level 1. Stops descending
 * once the limit is passed, so recursion is bounded by the limit, not by the input. */
static bool too_deep(json_t *v, int level, int limit)
{
	const char *key;
	json_t *child;
	size_t i;

	if (!json_is_object(v) && !json_is_array(v))
		return false;
	if (level > limit)
		return true;
	if (json_is_object(v)) {
		json_object_foreach (v, key, child)
			if (too_deep(child, level + 1, limit))
				return true;
	} else {
		json_array_foreach (v, i, child)
			if (too_deep(child, level + 1, limit))
				return true;
	}
	return false;
}

static bool is_header_parameter(const char *name)
{
	for (const char *const *p = header_parameters; *p; p++)
		if (strcmp(*p, name) == 0)
			return true;
	return false;
}

static int check_members(json_t *root, struct policy_error *err)
{
	const char *key;
	json_t *v;

	/* Two passes: an attempt to set a header parameter is named as such wherever it stands. */
	json_object_foreach (root, key, v) {
		if (is_header_parameter(key))
			return refuse(err, "header_parameter",
			              "'%.40s' is a JOSE header parameter; the header is built by "
			              "the daemon alone",
			              key);
	}
	json_object_foreach (root, key, v) {
		if (strcmp(key, "claims") != 0 && strcmp(key, "typ") != 0)
			return refuse(
			    err, "unknown_member",
			    "unknown member '%.40s'; the body has only 'claims' and 'typ'", key);
	}
	return 0;
}

static int pick_typ(const struct issuer_conf *ic, json_t *root, const char **ret,
                    struct policy_error *err)
{
	json_t *typ = json_object_get(root, "typ");

	if (!typ) {
		*ret = ic->token_types[0];
		return 0;
	}
	if (!json_is_string(typ))
		return refuse(err, "typ_invalid", "'typ' must be a string");
	*ret = issuer_typ_find(ic, json_string_value(typ));
	if (*ret)
		return 0;
	return refuse(err, "typ_not_allowed", "typ '%.40s' is not allowed for issuer %s",
	              json_string_value(typ), ic->name);
}

static bool aud_value_valid(json_t *v)
{
	return json_is_string(v) && json_string_length(v) > 0;
}

static int check_aud_allowed(const struct issuer_conf *ic, json_t *v, struct policy_error *err)
{
	if (!issuer_aud_allowed(ic, json_string_value(v)))
		return refuse(err, "aud_not_allowed",
		              "audience '%.60s' is not allowed for issuer %s", json_string_value(v),
		              ic->name);
	return 0;
}

/* Shape first (aud_invalid), then the allow-list (aud_not_allowed), as docs/api.md orders. */
static int check_aud(const struct issuer_conf *ic, json_t *claims, struct policy_error *err)
{
	json_t *aud = json_object_get(claims, "aud"), *v;
	size_t i;
	int r;

	if (!aud)
		return refuse(err, "aud_missing", "'aud' is required");
	if (!json_is_array(aud)) {
		if (!aud_value_valid(aud))
			return refuse(err, "aud_invalid",
			              "'aud' must be a non-empty string or a "
			              "non-empty array of them");
		return check_aud_allowed(ic, aud, err);
	}
	if (json_array_size(aud) == 0)
		return refuse(err, "aud_invalid", "'aud' must not be an empty array");
	json_array_foreach (aud, i, v) {
		if (!aud_value_valid(v))
			return refuse(err, "aud_invalid",
			              "every 'aud' value must be a non-empty string");
	}
	json_array_foreach (aud, i, v) {
		if ((r = check_aud_allowed(ic, v, err)) < 0)
			return r;
	}
	return 0;
}

static int check_times(const struct issuer_conf *ic, json_t *claims, int64_t now, int64_t *ret_exp,
                       struct policy_error *err)
{
	json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
	int64_t e = now + (int64_t)ic->token_ttl;

	if (exp) {
		if (!json_is_integer(exp))
			return refuse(err, "exp_invalid", "'exp' must be an integer NumericDate");
		e = json_integer_value(exp);
		if (e <= now)
			return refuse(err, "exp_in_past", "'exp' is not in the future");
		if (e > now + (int64_t)ic->max_token_ttl)
			return refuse(err, "exp_too_far", "'exp' is more than %llus from now",
			              (unsigned long long)ic->max_token_ttl);
	}
	if (nbf) {
		if (!json_is_integer(nbf))
			return refuse(err, "nbf_invalid", "'nbf' must be an integer NumericDate");
		if (json_integer_value(nbf) > e)
			return refuse(err, "nbf_after_exp", "'nbf' is after 'exp'");
	}
	*ret_exp = e;
	return 0;
}

static size_t utf8_length(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

static int check_iss_iat(const struct issuer_conf *ic, json_t *claims, struct policy_error *err)
{
	json_t *iss = json_object_get(claims, "iss");

	if (iss && (!json_is_string(iss) || strcmp(json_string_value(iss), ic->iss) != 0))
		return refuse(err, "iss_mismatch", "issuer %s signs only for iss '%.80s'", ic->name,
		              ic->iss);
	if (json_object_get(claims, "iat"))
		return refuse(err, "iat_forbidden", "'iat' is set by the daemon");
	return 0;
}

static int check_jti(json_t *claims, struct policy_error *err)
{
	json_t *jti = json_object_get(claims, "jti");
	size_t n;

	if (!jti)
		return 0;
	n = json_is_string(jti) ? utf8_length(json_string_value(jti)) : 0;
	if (n < 1 || n > 128)
		return refuse(err, "jti_invalid", "'jti' must be a string of 1 to 128 characters");
	return 0;
}

/* Sets the claims the daemon owns; existing members keep their place, new ones are appended. */
static int complete_claims(const struct issuer_conf *ic, json_t *claims, int64_t now, int64_t exp,
                           const uint8_t jti_random[POLICY_JTI_BYTES])
{
	char jti[32];

	if (json_object_set_new(claims, "iss", json_string(ic->iss)) < 0 ||
	    json_object_set_new(claims, "iat", json_integer(now)) < 0 ||
	    json_object_set_new(claims, "exp", json_integer(exp)) < 0)
		return -ENOMEM;
	if (!json_object_get(claims, "jti")) {
		b64url_encode(jti_random, POLICY_JTI_BYTES, jti);
		if (json_object_set_new(claims, "jti", json_string(jti)) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* Copies s into dst (size bytes), cut at a character boundary when it does not fit: s is
 * valid UTF-8 (jansson checked it), and so is what is kept, so that the audit record holding
 * it is valid JSON and a valid journal field. Returns true when s was cut. */
static bool keep_cut(char *dst, size_t size, const char *s)
{
	size_t n = strlen(s);

	if (n < size) {
		memcpy(dst, s, n + 1);
		return false;
	}
	n = size - 1;
	/* s[n] is the first byte left out: step back while it continues a character. */
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return true;
}

/* Copies what the audit record names: jti and aud, nothing else. A jti that check_jti() would
 * refuse is left out (a refusal's record may see one). */
static void audit_fields(json_t *claims, char jti[4 * 128 + 1], char aud_out[256], bool *aud_cut)
{
	json_t *j = json_object_get(claims, "jti"), *a = json_object_get(claims, "aud");
	char *aud = NULL;
	size_t aud_len, n = json_is_string(j) ? utf8_length(json_string_value(j)) : 0;

	if (!a || json_out_compact(a, &aud, &aud_len) < 0)
		aud = NULL;
	snprintf(jti, 4 * 128 + 1, "%s", n >= 1 && n <= 128 ? json_string_value(j) : "");
	*aud_cut = keep_cut(aud_out, 256, aud ? aud : "");
	free(aud);
}

/* Every rule past the parse, on the request's tree root (which it completes, and leaves to the
 * caller to free). */
static int judge(const struct issuer_conf *ic, json_t *root, int64_t now,
                 const uint8_t jti_random[POLICY_JTI_BYTES], struct signing_request *ret,
                 struct policy_error *err)
{
	json_t *claims;
	const char *typ = NULL;
	int64_t exp = 0;
	char *payload;
	int r;

	if (too_deep(root, 1, POLICY_MAX_DEPTH)) {
		r = refuse(err, "too_deep", "nesting deeper than %d levels", POLICY_MAX_DEPTH);
		goto out;
	}
	if (!json_is_object(root)) {
		r = refuse(err, "body_not_object", "the body must be a JSON object");
		goto out;
	}
	if ((r = check_members(root, err)) < 0)
		goto out;
	claims = json_object_get(root, "claims");
	if (!claims) {
		r = refuse(err, "claims_missing", "'claims' is required");
		goto out;
	}
	if (!json_is_object(claims)) {
		r = refuse(err, "claims_not_object", "'claims' must be a JSON object");
		goto out;
	}
	/* The order of docs/api.md's table. */
	if ((r = pick_typ(ic, root, &typ, err)) < 0 || (r = check_iss_iat(ic, claims, err)) < 0 ||
	    (r = check_aud(ic, claims, err)) < 0 ||
	    (r = check_times(ic, claims, now, &exp, err)) < 0 || (r = check_jti(claims, err)) < 0) {
		if (r == -EINVAL)
			audit_fields(claims, err->jti, err->aud, &err->aud_cut);
		goto out;
	}
	if ((r = complete_claims(ic, claims, now, exp, jti_random)) < 0)
		goto out;
	/* json_out writes what json_dumps(JSON_COMPACT) would, without its per-token callbacks
	 * (tests/unit/test_json_out.c compares the two). */
	if ((r = json_out_compact(claims, &payload, &ret->payload_len)) < 0)
		goto out;
	audit_fields(claims, ret->jti, ret->aud, &ret->aud_cut);
	ret->payload = payload;
	ret->typ = typ;
	ret->iat = now;
	ret->exp = exp;
	r = 0;
out:
	return r;
}

int policy_apply(const struct issuer_conf *ic, const char *body, size_t len, int64_t now,
                 const uint8_t jti_random[POLICY_JTI_BYTES], struct signing_request *ret,
                 struct policy_error *err)
{
	json_error_t jerr;
	json_t *root;
	bool arena;
	int r;

	err->jti[0] = err->aud[0] = '\0';
	err->aud_cut = false;
	/* A raw NUL is a control character to jansson; to callers it is the same fault as \u0000.
	 */
	if (memchr(body, '\0', len))
		return refuse(err, "invalid_utf8", "the body holds a NUL byte");
	/* The tree lives until the end of this function: its allocations from the arena. */
	arena = json_arena_begin();
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	r = root ? judge(ic, root, now, jti_random, ret, err) : refuse_parse(&jerr, err);
	json_decref(root);
	json_arena_end(arena);
	return r;
}

int policy_apply_item(const struct issuer_conf *ic, const json_t *item, int64_t now,
                      const uint8_t jti_random[POLICY_JTI_BYTES], struct signing_request *ret,
                      struct policy_error *err)
{
	bool arena;
	json_t *root;
	int r;

	err->jti[0] = err->aud[0] = '\0';
	err->aud_cut = false;
	/* A copy: the rules complete the claims, and the item may be judged again (a key
	 * handover between two attempts, issue.c). */
	arena = json_arena_begin();
	root = json_deep_copy(item);
	r = root ? judge(ic, root, now, jti_random, ret, err) : -ENOMEM;
	json_decref(root);
	json_arena_end(arena);
	return r;
}

/* ---- sign-batch ---- */

static int batch_requests(json_t *root, json_t **ret, struct policy_error *err)
{
	const char *key;
	json_t *v, *reqs;

	if (!json_is_object(root))
		return refuse(err, "body_not_object", "the body must be a JSON object");
	json_object_foreach (root, key, v) {
		if (strcmp(key, "requests") != 0)
			return refuse(err, "unknown_member",
			              "unknown member '%.40s'; the body has only 'requests'", key);
	}
	reqs = json_object_get(root, "requests");
	if (!reqs)
		return refuse(err, "requests_missing", "'requests' is required");
	if (!json_is_array(reqs))
		return refuse(err, "requests_not_array", "'requests' must be a JSON array");
	if (json_array_size(reqs) == 0)
		return refuse(err, "requests_empty", "'requests' holds no request");
	if (json_array_size(reqs) > POLICY_MAX_BATCH)
		return refuse(err, "requests_too_many", "'requests' holds %zu requests; at most %d",
		              json_array_size(reqs), POLICY_MAX_BATCH);
	*ret = reqs;
	return 0;
}

int policy_batch_split(const char *body, size_t len, struct policy_batch *ret,
                       struct policy_error *err)
{
	json_error_t jerr;
	json_t *root, *reqs = NULL, *item;
	size_t i;
	int r;

	memset(ret, 0, sizeof(*ret));
	err->jti[0] = err->aud[0] = '\0';
	err->aud_cut = false;
	if (memchr(body, '\0', len))
		return refuse(err, "invalid_utf8", "the body holds a NUL byte");
	/* Not in the arena: the tree outlives this function (ret->tree), and the items are judged
	 * each in an arena scope of its own. */
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root)
		return refuse_parse(&jerr, err);
	ret->root = root;
	if ((r = batch_requests(root, &reqs, err)) < 0)
		goto out;
	json_array_foreach (reqs, i, item) {
		if (!json_is_object(item)) {
			r = refuse(err, "request_not_object",
			           "'requests' item %zu is not a JSON object", i);
			goto out;
		}
	}
	/* Each request as the tree the single sign's policy judges (policy_apply_item()), and as
	 * the text a single sign's body would be, for its size (the 64 KiB of a body). json_out
	 * writes json_dumps()'s bytes at a fraction of its cost; json_dumps() is left only the
	 * items nested deeper than json_out goes (the policy refuses them). */
	json_array_foreach (reqs, i, item) {
		ret->trees[i] = item;
		r = json_out_compact(item, &ret->items[i], &ret->len[i]);
		if (r == -EINVAL) {
			ret->items[i] = json_dumps(item, JSON_COMPACT);
			r = ret->items[i] ? 0 : -ENOMEM;
			ret->len[i] = ret->items[i] ? strlen(ret->items[i]) : 0;
		}
		if (r < 0)
			goto out;
		ret->n = i + 1;
	}
	r = 0;
out:
	return r;
}

void policy_batch_free(struct policy_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->items[i]);
	json_decref(b->root);
	memset(b, 0, sizeof(*b));
}

int policy_content_type_ok(const char *value)
{
	size_t n;

	if (!value)
		return 0;
	while (*value == ' ' || *value == '\t')
		value++;
	n = strcspn(value, "; \t");
	if (n != strlen("application/json") || strncasecmp(value, "application/json", n) != 0)
		return 0;
	value += n;
	while (*value == ' ' || *value == '\t')
		value++;
	return *value == '\0' || *value == ';';
}

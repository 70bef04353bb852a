/* Unit tests of daemon/policy.c: one case per 400 rule of docs/api.md, and the exact payload of
 * accepted requests. */
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "policy.h"
#include "unit.h"

#define NOW 1790000000LL

static char *types[] = {(char *)"JWT", (char *)"at+jwt"};
static char *auds[] = {(char *)"api://orders", (char *)"api://billing"};
static struct allow_rule anyone = {ALLOW_ANY, 0};

/* Any aud accepted. */
static struct issuer_conf ic_open = {
    .name = (char *)"main",
    .iss = (char *)"https://login.example.com/main",
    .alg = JWS_ES256,
    .rotation_period = 30 * 86400,
    .prepublish = 86400,
    .token_ttl = 900,
    .max_token_ttl = 3600,
    .token_types = types,
    .n_token_types = 2,
    .allow = &anyone,
    .n_allow = 1,
};

/* With an audiences allow-list. */
static struct issuer_conf ic_aud = {
    .name = (char *)"svc",
    .iss = (char *)"https://login.example.com/svc",
    .alg = JWS_ES256,
    .rotation_period = 30 * 86400,
    .prepublish = 86400,
    .token_ttl = 300,
    .max_token_ttl = 1800,
    .audiences = auds,
    .n_audiences = 2,
    .token_types = types,
    .n_token_types = 2,
    .allow = &anyone,
    .n_allow = 1,
};

static const uint8_t jti_random[POLICY_JTI_BYTES] = {0xfb, 0xff, 0xbf, 0, 1, 2,  3,  4,
                                                     5,    6,    7,    8, 9, 10, 11, 12};
static const char jti_expected[] = "-_-_AAECAwQFBgcICQoLDA"; /* base64url, computed with Python */

/* Applies the policy to len bytes of body and expects a 400 with code; *ret stays untouched. */
static void refused_at(const char *file, int line, const struct issuer_conf *ic, const char *body,
                       size_t len, const char *code)
{
	struct signing_request req, untouched;
	struct policy_error err;
	unsigned before = unit_failures;
	int r;

	memset(&req, 0xab, sizeof(req));
	memcpy(&untouched, &req, sizeof(req));
	memset(&err, 0, sizeof(err));
	r = policy_apply(ic, body, len, NOW, jti_random, &req, &err);
	CHECK_INT(r, -EINVAL);
	CHECK_INT(err.status, 400);
	CHECK_STR(err.code, code);
	CHECK(err.message[0] != '\0');
	CHECK(memchr(err.message, '\0', sizeof(err.message)) != NULL);
	CHECK(memcmp(&req, &untouched, sizeof(req)) == 0);
	if (unit_failures != before)
		fprintf(stderr, "    ^ case at %s:%d: body %.*s\n      got %d %s: %s\n", file, line,
		        (int)(len > 300 ? 300 : len), body, err.status,
		        err.code ? err.code : "(null)", err.message);
	if (r == 0)
		free(req.payload);
}

#define REFUSED_IC(ic, body, code)                                                                 \
	refused_at(__FILE__, __LINE__, (ic), (body), strlen(body), (code))
#define REFUSED(body, code)        REFUSED_IC(&ic_open, (body), (code))
#define REFUSED_N(body, len, code) refused_at(__FILE__, __LINE__, &ic_open, (body), (len), (code))

/* Applies the policy expecting success; returns the parsed payload (NULL on failure). */
static json_t *accepted_at(const char *file, int line, const struct issuer_conf *ic,
                           const char *body, size_t len, struct signing_request *req)
{
	struct policy_error err = {0};
	json_error_t jerr;
	json_t *payload = NULL;
	int r;

	memset(req, 0, sizeof(*req));
	r = policy_apply(ic, body, len, NOW, jti_random, req, &err);
	CHECK_INT(r, 0);
	if (r != 0) {
		fprintf(stderr, "    ^ case at %s:%d: body %.*s\n      got %d %s: %s\n", file, line,
		        (int)(len > 300 ? 300 : len), body, err.status,
		        err.code ? err.code : "(null)", err.message);
		return NULL;
	}
	CHECK(req->payload != NULL);
	if (!req->payload)
		return NULL;
	CHECK_INT(req->payload_len, strlen(req->payload));
	CHECK(strchr(req->payload, '\n') == NULL); /* compact */
	payload = json_loadb(req->payload, req->payload_len, JSON_REJECT_DUPLICATES, &jerr);
	CHECK(payload != NULL);
	CHECK(payload && json_is_object(payload));
	if (!payload)
		fprintf(stderr, "    ^ case at %s:%d: payload %s: %s\n", file, line, req->payload,
		        jerr.text);
	return payload;
}

#define ACCEPTED_IC(ic, body, req)                                                                 \
	accepted_at(__FILE__, __LINE__, (ic), (body), strlen(body), (req))
#define ACCEPTED(body, req) ACCEPTED_IC(&ic_open, (body), (req))

static json_int_t int_member(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);

	CHECK(json_is_integer(v));
	return json_is_integer(v) ? json_integer_value(v) : -1;
}

static const char *str_member(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);

	CHECK(json_is_string(v));
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static void release(json_t *payload, struct signing_request *req)
{
	json_decref(payload);
	free(req->payload);
	req->payload = NULL;
}

/* ---- accepted requests ---- */

static void test_defaults(void)
{
	struct signing_request req;
	json_t *p = ACCEPTED("{\"claims\": {\"sub\": \"user-42\", \"aud\": \"api://orders\", "
	                     "\"scope\": \"read write\"}}",
	                     &req);

	if (!p)
		return;
	CHECK_INT(json_object_size(p), 7);
	CHECK_STR(str_member(p, "sub"), "user-42");
	CHECK_STR(str_member(p, "aud"), "api://orders");
	CHECK_STR(str_member(p, "scope"), "read write");
	CHECK_STR(str_member(p, "iss"), "https://login.example.com/main");
	CHECK_INT(int_member(p, "iat"), NOW);
	CHECK_INT(int_member(p, "exp"), NOW + 900);
	CHECK_STR(str_member(p, "jti"), jti_expected);
	CHECK(json_object_get(p, "nbf") == NULL);
	CHECK(json_object_get(p, "typ") == NULL);
	CHECK_INT(req.iat, NOW);
	CHECK_INT(req.exp, NOW + 900);
	CHECK(req.typ == ic_open.token_types[0]); /* points into the issuer's list */
	CHECK_STR(req.typ, "JWT");
	release(p, &req);

	/* Another issuer's values, and another random jti. */
	{
		static const uint8_t zero[POLICY_JTI_BYTES] = {0};
		static const char body[] = "{\"claims\":{\"aud\":\"api://billing\"}}";
		struct policy_error err = {0};
		CHECK_INT(policy_apply(&ic_aud, body, strlen(body), NOW, zero, &req, &err), 0);
		p = req.payload ? json_loads(req.payload, 0, NULL) : NULL;
		CHECK(p != NULL);
		if (p) {
			CHECK_INT(json_object_size(p), 5);
			CHECK_STR(str_member(p, "iss"), "https://login.example.com/svc");
			CHECK_INT(int_member(p, "exp"), NOW + 300);
			CHECK_STR(str_member(p, "jti"), "AAAAAAAAAAAAAAAAAAAAAA");
			CHECK_INT(req.exp, NOW + 300);
		}
		release(p, &req);
	}
}

static void test_exp_nbf_accepted(void)
{
	struct signing_request req;
	json_t *p;
	char body[256];

	/* A caller exp within max-token-ttl is kept; the last second is still within. */
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"exp\":%lld}}", NOW + 600);
	p = ACCEPTED(body, &req);
	if (p) {
		CHECK_INT(int_member(p, "exp"), NOW + 600);
		CHECK_INT(req.exp, NOW + 600);
		CHECK_INT(json_object_size(p), 5);
	}
	release(p, &req);
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"exp\":%lld}}", NOW + 3600);
	p = ACCEPTED(body, &req);
	if (p)
		CHECK_INT(req.exp, NOW + 3600);
	release(p, &req);
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"exp\":%lld}}", NOW + 1);
	p = ACCEPTED(body, &req);
	if (p)
		CHECK_INT(req.exp, NOW + 1);
	release(p, &req);

	/* nbf equal to exp, in the past, and equal to the default exp. */
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"exp\":%lld,\"nbf\":%lld}}",
	         NOW + 60, NOW + 60);
	p = ACCEPTED(body, &req);
	if (p)
		CHECK_INT(int_member(p, "nbf"), NOW + 60);
	release(p, &req);
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"nbf\":%lld}}", NOW - 3600);
	p = ACCEPTED(body, &req);
	if (p)
		CHECK_INT(int_member(p, "nbf"), NOW - 3600);
	release(p, &req);
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"nbf\":%lld}}", NOW + 900);
	p = ACCEPTED(body, &req);
	release(p, &req);
}

static void test_aud_iss_typ_jti_accepted(void)
{
	struct signing_request req;
	json_t *p;
	char body[512], jti[129];

	/* aud arrays: every value allowed. */
	p = ACCEPTED_IC(&ic_aud, "{\"claims\":{\"aud\":[\"api://orders\",\"api://billing\"]}}",
	                &req);
	if (p) {
		json_t *a = json_object_get(p, "aud");
		CHECK(json_is_array(a) && json_array_size(a) == 2);
		CHECK_STR(json_string_value(json_array_get(a, 1)), "api://billing");
	}
	release(p, &req);
	p = ACCEPTED_IC(&ic_aud, "{\"claims\":{\"aud\":[\"api://orders\"]}}", &req);
	release(p, &req);
	p = ACCEPTED("{\"claims\":{\"aud\":[\"x\",\"y\",\"z\"]}}", &req);
	release(p, &req);

	/* The issuer's own iss is accepted, and stays. */
	p = ACCEPTED("{\"claims\":{\"aud\":\"a\",\"iss\":\"https://login.example.com/main\"}}",
	             &req);
	if (p) {
		CHECK_STR(str_member(p, "iss"), "https://login.example.com/main");
		CHECK_INT(json_object_size(p), 5);
	}
	release(p, &req);

	/* typ: the default is the first token-type; another allowed one may be chosen. */
	p = ACCEPTED("{\"claims\":{\"aud\":\"a\"},\"typ\":\"at+jwt\"}", &req);
	if (p)
		CHECK(req.typ == ic_open.token_types[1]);
	release(p, &req);
	p = ACCEPTED("{\"typ\":\"JWT\",\"claims\":{\"aud\":\"a\"}}", &req);
	if (p)
		CHECK(req.typ == ic_open.token_types[0]);
	release(p, &req);

	/* A given jti is kept, from 1 to 128 characters. */
	p = ACCEPTED("{\"claims\":{\"aud\":\"a\",\"jti\":\"x\"}}", &req);
	if (p)
		CHECK_STR(str_member(p, "jti"), "x");
	release(p, &req);
	memset(jti, 'j', 128);
	jti[128] = '\0';
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"jti\":\"%s\"}}", jti);
	p = ACCEPTED(body, &req);
	if (p)
		CHECK_STR(str_member(p, "jti"), jti);
	release(p, &req);
}

static void test_payload_members(void)
{
	struct signing_request req;
	json_t *p, *nested;

	/* Whatever the caller sends in claims comes back as sent, beside the daemon's members. */
	p = ACCEPTED(
	    "\r\n  {\"claims\":{\"aud\":\"a\",\"sub\":\"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x8e\x89\","
	    "\"n\":-12345678901,\"f\":1.5,\"t\":true,\"z\":null,\"e\":\"\\u00e9\\\"\","
	    "\"o\":{\"k\":[1,{\"a\":\"b\"}],\"iss\":\"not the top-level iss\"},"
	    "\"alg\":\"a claim, not a header\"}}  \n",
	    &req);
	if (!p)
		return;
	CHECK_INT(json_object_size(p), 13);
	CHECK_STR(str_member(p, "sub"), "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x8e\x89");
	CHECK_INT(int_member(p, "n"), -12345678901LL);
	CHECK(json_is_real(json_object_get(p, "f")) &&
	      json_real_value(json_object_get(p, "f")) == 1.5);
	CHECK(json_is_true(json_object_get(p, "t")));
	CHECK(json_is_null(json_object_get(p, "z")));
	CHECK_STR(str_member(p, "e"), "\xc3\xa9\"");
	CHECK_STR(str_member(p, "alg"), "a claim, not a header");
	nested = json_object_get(p, "o");
	CHECK(json_is_object(nested) && json_object_size(nested) == 2);
	CHECK_STR(json_string_value(json_object_get(nested, "iss")), "not the top-level iss");
	CHECK_INT(json_integer_value(json_array_get(json_object_get(nested, "k"), 0)), 1);
	CHECK_STR(str_member(p, "iss"), "https://login.example.com/main");
	CHECK_INT(int_member(p, "iat"), NOW);
	CHECK_INT(int_member(p, "exp"), NOW + 900);
	CHECK_STR(str_member(p, "jti"), jti_expected);
	release(p, &req);
}

/* {"claims":{"aud":"a","n": <k levels> }}: 2 + k levels in all. */
static char *deep_body(int k, char open, char close)
{
	size_t cap = 64 + (size_t)k * 8;
	char *s = malloc(cap), *p;

	if (!s)
		abort();
	p = s + sprintf(s, "{\"claims\":{\"aud\":\"a\",\"n\":");
	for (int i = 0; i < k; i++) {
		if (open == '{')
			p += sprintf(p, i + 1 < k ? "{\"x\":" : "{");
		else
			*p++ = open;
	}
	for (int i = 0; i < k; i++)
		*p++ = close;
	strcpy(p, "}}");
	return s;
}

static void test_depth(void)
{
	struct signing_request req;
	char *b;
	json_t *p;

	b = deep_body(30, '{', '}'); /* 32 levels */
	p = ACCEPTED(b, &req);
	release(p, &req);
	free(b);
	b = deep_body(31, '{', '}');
	REFUSED(b, "too_deep");
	free(b);
	b = deep_body(30, '[', ']');
	p = ACCEPTED(b, &req);
	release(p, &req);
	free(b);
	b = deep_body(31, '[', ']');
	REFUSED(b, "too_deep");
	free(b);
	b = deep_body(3000, '[', ']'); /* beyond jansson's own limit too */
	REFUSED(b, "too_deep");
	free(b);
	/* Depth inside aud counts as well: 2 + 31 levels. */
	{
		char aud[128] = "{\"claims\":{\"aud\":";
		size_t n = strlen(aud);
		memset(aud + n, '[', 31);
		strcpy(aud + n + 31, "\"a\"");
		memset(aud + n + 34, ']', 31);
		strcpy(aud + n + 65, "}}");
		REFUSED(aud, "too_deep");
		aud[n] = ' ';
		aud[n + 64] = ' '; /* 32 levels: depth is fine, then aud is not a string array */
		REFUSED(aud, "aud_invalid");
	}
}

/* ---- refused requests, in the order of the table ---- */

static void test_invalid_utf8(void)
{
	static const char nul_in_string[] = "{\"claims\":{\"aud\":\"a\",\"sub\":\"a\0b\"}}";
	static const char nul_after[] = "{\"claims\":{\"aud\":\"a\"}}\0";

	REFUSED("{\"claims\":{\"aud\":\"a\",\"sub\":\"\xff\"}}", "invalid_utf8");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"sub\":\"\xc0\xaf\"}}", "invalid_utf8"); /* overlong */
	REFUSED("{\"claims\":{\"aud\":\"a\",\"sub\":\"\xed\xa0\x80\"}}",
	        "invalid_utf8"); /* surrogate */
	REFUSED("{\"claims\":{\"aud\":\"a\",\"sub\":\"\xe2\x82\"}}",
	        "invalid_utf8"); /* truncated */
	REFUSED("{\"claims\":{\"aud\":\"a\",\"sub\":\"\xf4\x90\x80\x80\"}}",
	        "invalid_utf8");                                            /* >10FFFF */
	REFUSED("{\"claims\":{\"aud\":\"a\",\"\xfe\":1}}", "invalid_utf8"); /* in a name */
	REFUSED("{\"claims\":{\"aud\":\"a\"}} \xff", "invalid_utf8");       /* outside any string */
	REFUSED("{\"claims\":{\"aud\":\"a\",\"sub\":\"a\\u0000b\"}}", "invalid_utf8");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"a\\u0000\":1}}", "invalid_utf8");
	REFUSED_N(nul_in_string, sizeof(nul_in_string) - 1, "invalid_utf8");
	REFUSED_N(nul_after, sizeof(nul_after) - 1, "invalid_utf8");
}

static void test_duplicate_member(void)
{
	REFUSED("{\"claims\":{\"aud\":\"a\",\"aud\":\"b\"}}", "duplicate_member");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"claims\":{\"aud\":\"a\"}}", "duplicate_member");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":\"JWT\",\"typ\":\"JWT\"}", "duplicate_member");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"x\":{\"y\":{\"z\":[1,{\"k\":1,\"k\":1}]}}}}",
	        "duplicate_member");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"\\u0061ud\":\"b\"}}", "duplicate_member");
	/* The same name in different objects is not a duplicate. */
	{
		struct signing_request req;
		json_t *p =
		    ACCEPTED("{\"claims\":{\"aud\":\"a\",\"x\":{\"aud\":1},\"y\":[{\"aud\":2},"
		             "{\"aud\":3}]}}",
		             &req);
		release(p, &req);
	}
}

static void test_invalid_json(void)
{
	REFUSED("", "invalid_json");
	REFUSED("   ", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\"}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\",}}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":'a'}}", "invalid_json");
	REFUSED("{claims:{\"aud\":\"a\"}}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\"}} {}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\"}}x", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"n\":NaN}}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"n\":1e999}}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"n\":-1e999}}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"n\":123456789012345678901234567890}}",
	        "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"n\":9223372036854775808}}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"s\":\"\\x41\"}}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"s\":\"tab\there\"}}", "invalid_json");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"s\":\"\\ud800\"}}",
	        "invalid_json"); /* lone surrogate */
	REFUSED("{\"claims\":{\"aud\":\"a\"},}", "invalid_json");
}

static void test_body_not_object(void)
{
	REFUSED("[]", "body_not_object");
	REFUSED("[{\"claims\":{\"aud\":\"a\"}}]", "body_not_object");
	REFUSED("\"claims\"", "body_not_object");
	REFUSED("42", "body_not_object");
	REFUSED("null", "body_not_object");
	REFUSED("true", "body_not_object");
}

static void test_header_parameter(void)
{
	static const char *const names[] = {
	    "alg",  "kid", "jku", "jwk", "x5u", "x5c",    "x5t",       "x5t#S256",
	    "crit", "cty", "enc", "zip", "b64", "header", "protected", "headers",
	};
	char body[256];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\"},\"%s\":\"x\"}", names[i]);
		REFUSED(body, "header_parameter");
		snprintf(body, sizeof(body), "{\"%s\":{}}", names[i]); /* before claims_missing */
		REFUSED(body, "header_parameter");
	}
	/* Before unknown_member, wherever it stands. */
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"foo\":1,\"alg\":\"none\"}", "header_parameter");
	REFUSED("{\"jwk\":{\"kty\":\"EC\"},\"claims\":{\"aud\":\"a\"},\"foo\":1}",
	        "header_parameter");
}

static void test_unknown_member(void)
{
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"foo\":1}", "unknown_member");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"Claims\":{}}", "unknown_member");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"TYP\":\"JWT\"}", "unknown_member");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"exp\":1}", "unknown_member");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"\":1}", "unknown_member");
	REFUSED("{\"foo\":1}", "unknown_member"); /* before claims_missing */
}

static void test_claims_and_typ(void)
{
	REFUSED("{}", "claims_missing");
	REFUSED("{\"typ\":\"JWT\"}", "claims_missing");
	REFUSED("{\"claims\":[]}", "claims_not_object");
	REFUSED("{\"claims\":\"sub=x\"}", "claims_not_object");
	REFUSED("{\"claims\":null}", "claims_not_object");
	REFUSED("{\"claims\":1}", "claims_not_object");
	REFUSED("{\"claims\":[{\"aud\":\"a\"}]}", "claims_not_object");

	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":5}", "typ_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":null}", "typ_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":[\"JWT\"]}", "typ_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":true}", "typ_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":\"jwt\"}", "typ_not_allowed");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":\"AT+JWT\"}", "typ_not_allowed");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":\"\"}", "typ_not_allowed");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":\"JWT \"}", "typ_not_allowed");
	REFUSED("{\"claims\":{\"aud\":\"a\"},\"typ\":\"dpop+jwt\"}", "typ_not_allowed");
	/* typ before the claims' own rules. */
	REFUSED("{\"claims\":{\"iat\":1},\"typ\":\"jwt\"}", "typ_not_allowed");
	REFUSED("{\"claims\":{\"iat\":1},\"typ\":1}", "typ_invalid");
}

static void test_iss_iat(void)
{
	REFUSED("{\"claims\":{\"aud\":\"a\",\"iss\":\"https://evil.example.com\"}}",
	        "iss_mismatch");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"iss\":\"https://login.example.com/main/\"}}",
	        "iss_mismatch");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"iss\":\"https://login.example.com/svc\"}}",
	        "iss_mismatch");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"iss\":42}}", "iss_mismatch");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"iss\":null}}", "iss_mismatch");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"iss\":[\"https://login.example.com/main\"]}}",
	        "iss_mismatch");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"iat\":1790000000}}", "iat_forbidden");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"iat\":\"now\"}}", "iat_forbidden");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"iat\":null}}", "iat_forbidden");
	/* iss before iat, iat before aud. */
	REFUSED("{\"claims\":{\"iat\":1,\"iss\":\"x\"}}", "iss_mismatch");
	REFUSED("{\"claims\":{\"iat\":1}}", "iat_forbidden");
}

static void test_aud(void)
{
	REFUSED("{\"claims\":{}}", "aud_missing");
	REFUSED("{\"claims\":{\"sub\":\"x\",\"Aud\":\"a\"}}", "aud_missing");
	REFUSED("{\"claims\":{\"aud\":\"\"}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":[]}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":[\"\"]}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":[\"a\",\"\"]}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":[1]}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":[\"a\",2]}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":[[\"a\"]]}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":5}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":null}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":true}}", "aud_invalid");
	REFUSED("{\"claims\":{\"aud\":{\"a\":\"b\"}}}", "aud_invalid");
	REFUSED_IC(&ic_aud, "{\"claims\":{\"aud\":\"api://other\"}}", "aud_not_allowed");
	REFUSED_IC(&ic_aud, "{\"claims\":{\"aud\":\"API://ORDERS\"}}", "aud_not_allowed");
	REFUSED_IC(&ic_aud, "{\"claims\":{\"aud\":\"api://orders \"}}", "aud_not_allowed");
	REFUSED_IC(&ic_aud, "{\"claims\":{\"aud\":[\"api://orders\",\"api://other\"]}}",
	           "aud_not_allowed");
	REFUSED_IC(&ic_aud, "{\"claims\":{\"aud\":[\"api://other\",\"api://orders\"]}}",
	           "aud_not_allowed");
	/* aud_invalid before aud_not_allowed. */
	REFUSED_IC(&ic_aud, "{\"claims\":{\"aud\":[\"api://other\",\"\"]}}", "aud_invalid");
}

static void test_exp_nbf_jti(void)
{
	char body[512], jti[130];

	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":\"1790000900\"}}", "exp_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":1790000900.5}}", "exp_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":1790000900.0}}", "exp_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":1.7900009e9}}", "exp_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":true}}", "exp_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":null}}", "exp_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":[1790000900]}}", "exp_invalid");

	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"exp\":%lld}}", NOW);
	REFUSED(body, "exp_in_past");
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"exp\":%lld}}", NOW - 1);
	REFUSED(body, "exp_in_past");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":0}}", "exp_in_past");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":-9223372036854775807}}", "exp_in_past");

	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"exp\":%lld}}", NOW + 3601);
	REFUSED(body, "exp_too_far");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":9223372036854775807}}", "exp_too_far");
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"api://orders\",\"exp\":%lld}}",
	         NOW + 1801);
	REFUSED_IC(&ic_aud, body, "exp_too_far"); /* that issuer's max-token-ttl is 30m */

	REFUSED("{\"claims\":{\"aud\":\"a\",\"nbf\":\"0\"}}", "nbf_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"nbf\":1.5}}", "nbf_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"nbf\":null}}", "nbf_invalid");
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"exp\":%lld,\"nbf\":%lld}}",
	         NOW + 60, NOW + 61);
	REFUSED(body, "nbf_after_exp");
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"nbf\":%lld}}", NOW + 901);
	REFUSED(body, "nbf_after_exp"); /* after the default exp */
	REFUSED("{\"claims\":{\"aud\":\"a\",\"nbf\":9223372036854775807}}", "nbf_after_exp");

	REFUSED("{\"claims\":{\"aud\":\"a\",\"jti\":5}}", "jti_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"jti\":\"\"}}", "jti_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"jti\":null}}", "jti_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"jti\":[\"x\"]}}", "jti_invalid");
	memset(jti, 'j', 129);
	jti[129] = '\0';
	snprintf(body, sizeof(body), "{\"claims\":{\"aud\":\"a\",\"jti\":\"%s\"}}", jti);
	REFUSED(body, "jti_invalid");

	/* The table's order among these: exp before nbf before jti, and aud before all. */
	REFUSED("{\"claims\":{\"exp\":\"x\"}}", "aud_missing");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"exp\":\"x\",\"nbf\":\"x\",\"jti\":1}}",
	        "exp_invalid");
	REFUSED("{\"claims\":{\"aud\":\"a\",\"nbf\":\"x\",\"jti\":1}}", "nbf_invalid");
}

static int content_type_ok_in_child(const char *value)
{
	pid_t pid = fork();
	int status;

	if (pid == 0)
		_exit(policy_content_type_ok(value) ? 1 : 0);
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	if (!WIFEXITED(status))
		return -2; /* crashed */
	return WEXITSTATUS(status);
}

static void test_content_type(void)
{
	static const char *const ok[] = {
	    "application/json",
	    "application/json; charset=utf-8",
	    "application/json;charset=UTF-8",
	    "Application/JSON",
	    "APPLICATION/json; charset=\"utf-8\"",
	    "application/json ; charset=utf-8",
	};
	static const char *const bad[] = {
	    "",
	    "text/plain",
	    "application/jsonp",
	    "application/json-patch+json",
	    "application/jwt",
	    "application/",
	    "application",
	    "json",
	    "application/*",
	    "*/*",
	    "text/json",
	    "application/x-www-form-urlencoded",
	    "multipart/form-data; boundary=application/json",
	    "xapplication/json",
	    "application/json2",
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int r = policy_content_type_ok(ok[i]);
		if (!r)
			fprintf(stderr, "    refused: \"%s\"\n", ok[i]);
		CHECK(r != 0);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = policy_content_type_ok(bad[i]);
		if (r)
			fprintf(stderr, "    accepted: \"%s\"\n", bad[i]);
		CHECK(r == 0);
	}
	/* No header at all (libmicrohttpd gives NULL) is not application/json, and no crash. */
	CHECK_INT(content_type_ok_in_child(NULL), 0);
}

/* What a refusal hands the audit record: jti (a valid one only) and aud of readable claims,
 * nothing when the claims were never read; reset by each call. */
static void test_refusal_audit_fields(void)
{
	struct signing_request req;
	struct policy_error err;
	const char *b1 = "{\"claims\":{\"aud\":[\"api://nope\"],\"jti\":\"j-1\"}}";
	const char *b2 = "{\"claims\":{\"jti\":\"j-2\"}}";
	const char *b3 = "{\"claims\":{\"aud\":\"api://orders\",\"jti\":7,\"exp\":1}}";
	const char *b4 = "{\"claims\":";

	CHECK_INT(policy_apply(&ic_aud, b1, strlen(b1), NOW, jti_random, &req, &err), -EINVAL);
	CHECK_STR(err.code, "aud_not_allowed");
	CHECK_STR(err.jti, "j-1");
	CHECK_STR(err.aud, "[\"api://nope\"]");
	CHECK(!err.aud_cut);
	CHECK_INT(policy_apply(&ic_aud, b2, strlen(b2), NOW, jti_random, &req, &err), -EINVAL);
	CHECK_STR(err.code, "aud_missing");
	CHECK_STR(err.jti, "j-2");
	CHECK_STR(err.aud, "");
	CHECK_INT(policy_apply(&ic_aud, b3, strlen(b3), NOW, jti_random, &req, &err), -EINVAL);
	CHECK_STR(err.code, "exp_in_past");
	CHECK_STR(err.jti, ""); /* not a string: never copied */
	CHECK_STR(err.aud, "\"api://orders\"");
	CHECK_INT(policy_apply(&ic_aud, b4, strlen(b4), NOW, jti_random, &req, &err), -EINVAL);
	CHECK_STR(err.code, "invalid_json");
	CHECK_STR(err.jti, "");
	CHECK_STR(err.aud, "");
}

/* sign-batch: the request-level rules refuse the whole body; each request comes out as a
 * compact object for policy_apply(), in order. */
static void batch_refused(const char *body, const char *code)
{
	struct policy_batch pb;
	struct policy_error err = {0};

	CHECK_INT(policy_batch_split(body, strlen(body), &pb, &err), -EINVAL);
	CHECK_INT(err.status, 400);
	CHECK_STR(err.code, code);
	CHECK_INT(pb.n, 0);
	policy_batch_free(&pb);
}

static void test_batch_split(void)
{
	struct policy_batch pb;
	struct policy_error err = {0};
	char many[64 * 16 + 64], *p = many;
	const char *two = "{\"requests\": [{\"claims\": {\"b\": 1, \"a\": [1, 2]}}, "
	                  "{\"typ\": 5, \"claims\": null}]}";

	CHECK_INT(policy_batch_split(two, strlen(two), &pb, &err), 0);
	CHECK_INT(pb.n, 2);
	CHECK_STR(pb.items[0], "{\"claims\":{\"b\":1,\"a\":[1,2]}}");
	CHECK_INT(pb.len[0], strlen(pb.items[0]));
	CHECK_STR(pb.items[1], "{\"typ\":5,\"claims\":null}");
	policy_batch_free(&pb);

	batch_refused("[]", "body_not_object");
	batch_refused("{\"requests\": [{}], \"x\": 1}", "unknown_member");
	batch_refused("{\"claims\": {}}", "unknown_member");
	batch_refused("{}", "requests_missing");
	batch_refused("{\"requests\": {}}", "requests_not_array");
	batch_refused("{\"requests\": []}", "requests_empty");
	batch_refused("{\"requests\": [{}, 1]}", "request_not_object");
	batch_refused("{\"requests\": [{}, {\"claims\": {\"a\": 1, \"a\": 2}}]}",
	              "duplicate_member");
	batch_refused("{\"requests\": [", "invalid_json");
	batch_refused("{\"requests\": [{\"claims\": {\"a\": \"\\u0000\"}}]}", "invalid_utf8");

	p = stpcpy(p, "{\"requests\": [{}");
	for (int i = 1; i < POLICY_MAX_BATCH; i++)
		p = stpcpy(p, ",{}");
	strcpy(p, "]}");
	CHECK_INT(policy_batch_split(many, strlen(many), &pb, &err), 0);
	CHECK_INT(pb.n, POLICY_MAX_BATCH);
	policy_batch_free(&pb);
	strcpy(p, ",{}]}");
	batch_refused(many, "requests_too_many");
}

/* A batch's items are judged on their trees (policy_apply_item()): the same payload or refusal
 * as policy_apply() of the item's text, the item left as it was, and so judged alike a second
 * time (a key handover makes issue.c apply the policy to an item again). */
static void test_apply_item(void)
{
	const char *body =
	    "{\"requests\": [{\"claims\": {\"aud\": \"api://x\", \"sub\": \"u\", \"n\": [1.5, "
	    "{\"k\": null}]}, \"typ\": \"JWT\"}, {\"claims\": {\"aud\": \"a\", \"iat\": 1}}]}";
	struct policy_batch pb;
	struct policy_error err = {0}, err2 = {0};
	struct signing_request a = {0}, b = {0}, c = {0};

	CHECK_INT(policy_batch_split(body, strlen(body), &pb, &err), 0);
	CHECK_INT(pb.n, 2);
	CHECK_INT(policy_apply(&ic_open, pb.items[0], pb.len[0], NOW, jti_random, &a, &err), 0);
	CHECK_INT(policy_apply_item(&ic_open, pb.trees[0], NOW, jti_random, &b, &err), 0);
	CHECK_INT(policy_apply_item(&ic_open, pb.trees[0], NOW + 1, jti_random, &c, &err), 0);
	CHECK_STR(b.payload, a.payload);
	CHECK_INT(c.iat, NOW + 1);
	CHECK(json_object_get(json_object_get(pb.trees[0], "claims"), "iat") == NULL);
	CHECK_INT(
	    policy_apply(&ic_open, pb.items[1], pb.len[1], NOW, jti_random, &a, &err) == -EINVAL &&
	        policy_apply_item(&ic_open, pb.trees[1], NOW, jti_random, &b, &err2) == -EINVAL,
	    1);
	CHECK_STR(err2.code, err.code);
	CHECK_STR(err2.code, "iat_forbidden");
	free(a.payload);
	free(b.payload);
	free(c.payload);
	policy_batch_free(&pb);
}

int main(void)
{
	test_apply_item();
	test_defaults();
	test_exp_nbf_accepted();
	test_aud_iss_typ_jti_accepted();
	test_payload_members();
	test_depth();
	test_invalid_utf8();
	test_duplicate_member();
	test_invalid_json();
	test_body_not_object();
	test_header_parameter();
	test_unknown_member();
	test_claims_and_typ();
	test_iss_iat();
	test_aud();
	test_exp_nbf_jti();
	test_content_type();
	test_refusal_audit_fields();
	test_batch_split();
	return unit_finish("policy");
}

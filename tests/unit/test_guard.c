/* Unit tests of daemon/hsm/guard.c: what the daemon makes is signed; every other input, each
 * attack a compromised front could try, is refused for its own reason. */
#include <errno.h>
#include <stdbool.h>

#include "b64url.h"
#include "guard.h"
#include "jws.h"
#include "unit.h"

#define NOW       INT64_C(1790000000)
#define ISS       "https://login.example.com/main"
#define KID       "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
#define HEADER_OK "{\"alg\":\"ES256\",\"kid\":\"" KID "\",\"typ\":\"JWT\"}"

static const struct guard_key key = {.alg = JWS_ES256, .kid = KID, .iss = ISS, .max_ttl = 3600};

/* A payload as policy.c writes it, with the three times given. */
static char *payload_times(long long iat, long long exp)
{
	static char buf[512];

	snprintf(buf, sizeof(buf),
	         "{\"sub\":\"user-42\",\"aud\":\"api://orders\",\"iss\":\"" ISS
	         "\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"abc\"}",
	         iat, exp);
	return buf;
}

/* BASE64URL(header) "." BASE64URL(payload) of arbitrary bytes, for headers the daemon never
 * writes. The caller frees the result. */
static char *raw_input(const char *header, size_t hlen, const char *payload, size_t plen,
                       size_t *ret_len)
{
	size_t h64 = b64url_encoded_len(hlen), p64 = b64url_encoded_len(plen);
	char *out = malloc(h64 + 1 + p64 + 1);

	if (!out)
		abort();
	b64url_encode((const uint8_t *)header, hlen, out);
	out[h64] = '.';
	b64url_encode((const uint8_t *)payload, plen, out + h64 + 1);
	*ret_len = h64 + 1 + p64;
	return out;
}

static char *raw(const char *header, const char *payload, size_t *ret_len)
{
	return raw_input(header, strlen(header), payload, strlen(payload), ret_len);
}

/* The daemon's own encoder: the header comes from jws_signing_input. */
static char *made(enum jws_alg alg, const char *kid, const char *payload, size_t *ret_len)
{
	char *out = NULL;

	if (jws_signing_input(alg, kid, "JWT", payload, strlen(payload), &out, ret_len) < 0)
		abort();
	return out;
}

static bool why_is_one_line(const char *why)
{
	size_t n = strlen(why);

	if (n == 0 || n >= GUARD_WHY_SIZE)
		return false;
	for (size_t i = 0; i < n; i++)
		if (why[i] < 0x20 || why[i] > 0x7e)
			return false;
	return true;
}

/* Refused, with a reason that names the fault (contains want). Frees input, which is evaluated
 * once. */
#define REFUSED(input, len, k, want)                                                               \
	do {                                                                                       \
		char why_[GUARD_WHY_SIZE] = "", *in_ = (input);                                    \
		CHECK_INT(guard_check(in_, (len), (k), NOW, why_, sizeof(why_)), -EPERM);          \
		CHECK(why_is_one_line(why_));                                                      \
		if (!strstr(why_, (want))) {                                                       \
			unit_fail(__FILE__, __LINE__, "reason names " #want);                      \
			fprintf(stderr, "    why: \"%s\"\n", why_);                                \
		}                                                                                  \
		free(in_);                                                                         \
	} while (0)

#define ACCEPTED(input, len, k)                                                                    \
	do {                                                                                       \
		char why_[GUARD_WHY_SIZE] = "untouched", *in_ = (input);                           \
		CHECK_INT(guard_check(in_, (len), (k), NOW, why_, sizeof(why_)), 0);               \
		if (strcmp(why_, "untouched") != 0)                                                \
			fprintf(stderr, "    why: \"%s\"\n", why_);                                \
		CHECK_STR(why_, "untouched");                                                      \
		free(in_);                                                                         \
	} while (0)

static void test_made_by_daemon(void)
{
	static const enum jws_alg algs[] = {JWS_ES256, JWS_ES384, JWS_RS256, JWS_PS256, JWS_EDDSA};
	size_t len;
	char *in;

	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		struct guard_key k = key;
		k.alg = algs[i];
		in = made(algs[i], KID, payload_times(NOW, NOW + 900), &len);
		ACCEPTED(in, len, &k);
	}
	/* The edges: the whole lifetime, one second of it, the clock skew both ways, nbf = exp. */
	in = made(JWS_ES256, KID, payload_times(NOW, NOW + 3600), &len);
	ACCEPTED(in, len, &key);
	in = made(JWS_ES256, KID, payload_times(NOW, NOW + 1), &len);
	ACCEPTED(in, len, &key);
	in = made(JWS_ES256, KID, payload_times(NOW - 60, NOW + 3540), &len);
	ACCEPTED(in, len, &key);
	in = made(JWS_ES256, KID, payload_times(NOW + 60, NOW + 3660), &len);
	ACCEPTED(in, len, &key);
	in = made(JWS_ES256, KID,
	          "{\"iss\":\"" ISS "\",\"nbf\":1790000900,\"iat\":1790000000,\"exp\":1790000900}",
	          &len);
	ACCEPTED(in, len, &key);
	/* typ may be absent; member order does not matter. */
	in = raw("{\"kid\":\"" KID "\",\"alg\":\"ES256\"}", payload_times(NOW, NOW + 60), &len);
	ACCEPTED(in, len, &key);
}

/* The input is len bytes, not a C string: what follows it is not read. */
static void test_not_nul_terminated(void)
{
	size_t len;
	char *in = made(JWS_ES256, KID, payload_times(NOW, NOW + 60), &len);
	char *longer = malloc(len + 8);

	memcpy(longer, in, len);
	memcpy(longer + len, ".AAAAAAA", 8);
	ACCEPTED(longer, len, &key);
	/* One character short is another payload: here not base64url of a whole object. */
	REFUSED(in, len - 1, &key, "payload");
}

static void test_other_key(void)
{
	struct guard_key eddsa = key;
	size_t len;
	char *in;

	in = made(JWS_ES256, "other-kid", payload_times(NOW, NOW + 60), &len);
	REFUSED(in, len, &key, "kid");
	/* A kid that starts like ours, or is ours with a tail, is not ours. */
	in = made(JWS_ES256, KID "x", payload_times(NOW, NOW + 60), &len);
	REFUSED(in, len, &key, "kid");
	in = raw("{\"alg\":\"ES256\",\"kid\":\"NzbLsXh8uDCcd\"}", payload_times(NOW, NOW + 60),
	         &len);
	REFUSED(in, len, &key, "kid");
	in = raw("{\"alg\":\"ES256\",\"kid\":\"" KID "\\u0000x\"}", payload_times(NOW, NOW + 60),
	         &len);
	REFUSED(in, len, &key, "header");
	in = raw("{\"alg\":\"ES256\",\"kid\":42}", payload_times(NOW, NOW + 60), &len);
	REFUSED(in, len, &key, "kid");
	/* Another algorithm under our kid: a token for a key type we do not hold. */
	eddsa.alg = JWS_EDDSA;
	in = made(JWS_ES256, KID, payload_times(NOW, NOW + 60), &len);
	REFUSED(in, len, &eddsa, "alg");
	in = raw("{\"alg\":\"none\",\"kid\":\"" KID "\"}", payload_times(NOW, NOW + 60), &len);
	REFUSED(in, len, &key, "alg");
	in = raw("{\"alg\":\"es256\",\"kid\":\"" KID "\"}", payload_times(NOW, NOW + 60), &len);
	REFUSED(in, len, &key, "alg");
}

static void test_other_iss(void)
{
	size_t len;
	char *in;

	in = made(JWS_ES256, KID,
	          "{\"iss\":\"https://evil.example\",\"iat\":1790000000,\"exp\":1790000060}", &len);
	REFUSED(in, len, &key, "iss");
	in = made(JWS_ES256, KID, "{\"iss\":\"" ISS "2\",\"iat\":1790000000,\"exp\":1790000060}",
	          &len);
	REFUSED(in, len, &key, "iss");
	in = made(
	    JWS_ES256, KID,
	    "{\"iss\":\"https://login.example.com/mai\",\"iat\":1790000000,\"exp\":1790000060}",
	    &len);
	REFUSED(in, len, &key, "iss");
	in = made(JWS_ES256, KID, "{\"iat\":1790000000,\"exp\":1790000060}", &len);
	REFUSED(in, len, &key, "iss missing");
	in = made(JWS_ES256, KID, "{\"iss\":null,\"iat\":1790000000,\"exp\":1790000060}", &len);
	REFUSED(in, len, &key, "iss missing");
	in = made(JWS_ES256, KID, "{\"iss\":[\"" ISS "\"],\"iat\":1790000000,\"exp\":1790000060}",
	          &len);
	REFUSED(in, len, &key, "iss missing");
	/* An embedded NUL would make a C comparison see our iss. */
	in = made(JWS_ES256, KID,
	          "{\"iss\":\"" ISS "\\u0000evil\",\"iat\":1790000000,\"exp\":1790000060}", &len);
	REFUSED(in, len, &key, "payload");
}

static void test_lifetime(void)
{
	size_t len;
	char *in;

	in = made(JWS_ES256, KID, payload_times(NOW, NOW + 3601), &len);
	REFUSED(in, len, &key, "lifetime 3601 s exceeds");
	in = made(JWS_ES256, KID, payload_times(NOW, NOW + 86400 * 365), &len);
	REFUSED(in, len, &key, "exceeds");
	in = made(JWS_ES256, KID, payload_times(NOW, NOW), &len);
	REFUSED(in, len, &key, "not after iat");
	in = made(JWS_ES256, KID, payload_times(NOW, NOW - 1), &len);
	REFUSED(in, len, &key, "not after iat");
	in = made(JWS_ES256, KID, "{\"iss\":\"" ISS "\",\"iat\":1790000000}", &len);
	REFUSED(in, len, &key, "exp missing");
	in = made(JWS_ES256, KID, "{\"iss\":\"" ISS "\",\"exp\":1790000060}", &len);
	REFUSED(in, len, &key, "iat missing");
	in = made(JWS_ES256, KID, "{\"iss\":\"" ISS "\",\"iat\":1790000000,\"exp\":\"1790000060\"}",
	          &len);
	REFUSED(in, len, &key, "exp missing or not an integer");
	in = made(JWS_ES256, KID, "{\"iss\":\"" ISS "\",\"iat\":1790000000,\"exp\":1790000060.0}",
	          &len);
	REFUSED(in, len, &key, "exp missing or not an integer");
	in = made(JWS_ES256, KID, "{\"iss\":\"" ISS "\",\"iat\":1.79e9,\"exp\":1790000060}", &len);
	REFUSED(in, len, &key, "iat missing or not an integer");
	in = made(JWS_ES256, KID,
	          "{\"iss\":\"" ISS "\",\"nbf\":1790000061,\"iat\":1790000000,\"exp\":1790000060}",
	          &len);
	REFUSED(in, len, &key, "nbf is after exp");
	in = made(JWS_ES256, KID,
	          "{\"iss\":\"" ISS "\",\"nbf\":\"now\",\"iat\":1790000000,\"exp\":1790000060}",
	          &len);
	REFUSED(in, len, &key, "nbf is not an integer");
}

static void test_clock(void)
{
	size_t len;
	char *in;

	in = made(JWS_ES256, KID, payload_times(NOW - 61, NOW + 60), &len);
	REFUSED(in, len, &key, "iat is more than 60 s from now");
	in = made(JWS_ES256, KID, payload_times(NOW + 61, NOW + 120), &len);
	REFUSED(in, len, &key, "iat is more than 60 s from now");
	/* A token made now for next year, or one backdated to 1970, within the lifetime cap. */
	in = made(JWS_ES256, KID, payload_times(NOW + 86400 * 365, NOW + 86400 * 365 + 60), &len);
	REFUSED(in, len, &key, "from now");
	in = made(JWS_ES256, KID, payload_times(0, 60), &len);
	REFUSED(in, len, &key, "from now");
}

static void test_overflow(void)
{
	char why[GUARD_WHY_SIZE];
	size_t len;
	char *in;

	in = made(JWS_ES256, KID, payload_times(INT64_MIN, INT64_MAX), &len);
	REFUSED(in, len, &key, "overflows");
	in = made(JWS_ES256, KID, payload_times(INT64_MAX, INT64_MIN), &len);
	REFUSED(in, len, &key, "overflows");
	/* A lifetime in range, far from now: iat - now must not overflow either. */
	in = made(JWS_ES256, KID, payload_times(INT64_MIN, INT64_MIN + 60), &len);
	REFUSED(in, len, &key, "from now");
	in = made(JWS_ES256, KID, payload_times(INT64_MAX - 60, INT64_MAX), &len);
	REFUSED(in, len, &key, "from now");
	/* Past what jansson holds: not an integer at all. */
	in = made(JWS_ES256, KID,
	          "{\"iss\":\"" ISS "\",\"iat\":1790000000,\"exp\":9223372036854775808}", &len);
	REFUSED(in, len, &key, "payload is not valid JSON");
	in = made(JWS_ES256, KID, "{\"iss\":\"" ISS "\",\"iat\":1790000000,\"exp\":1e999}", &len);
	REFUSED(in, len, &key, "payload");
	/* The helper's clock at the edges. */
	in = made(JWS_ES256, KID, payload_times(NOW, NOW + 60), &len);
	CHECK_INT(guard_check(in, len, &key, INT64_MIN, why, sizeof(why)), -EPERM);
	CHECK_INT(guard_check(in, len, &key, INT64_MAX, why, sizeof(why)), -EPERM);
	free(in);
}

static void test_duplicates(void)
{
	size_t len;
	char *in;

	in = raw("{\"alg\":\"ES256\",\"kid\":\"" KID "\",\"kid\":\"other\"}",
	         payload_times(NOW, NOW + 60), &len);
	REFUSED(in, len, &key, "header has a duplicate member");
	in = raw("{\"alg\":\"ES256\",\"alg\":\"ES256\",\"kid\":\"" KID "\"}",
	         payload_times(NOW, NOW + 60), &len);
	REFUSED(in, len, &key, "header has a duplicate member");
	/* Another verifier might take the last iss, or the last exp. */
	in = made(JWS_ES256, KID,
	          "{\"iss\":\"" ISS "\",\"iss\":\"https://evil.example\",\"iat\":1790000000,"
	          "\"exp\":1790000060}",
	          &len);
	REFUSED(in, len, &key, "payload has a duplicate member");
	in = made(JWS_ES256, KID,
	          "{\"iss\":\"" ISS "\",\"iat\":1790000000,\"exp\":1790000060,\"exp\":1890000000}",
	          &len);
	REFUSED(in, len, &key, "payload has a duplicate member");
}

static void test_header_members(void)
{
	const char *p = payload_times(NOW, NOW + 60);
	size_t len;
	char *in;

	/* jku, x5u, jwk, crit: a verifier that honours them would trust a key of the attacker's. */
	in = raw("{\"alg\":\"ES256\",\"kid\":\"" KID "\",\"typ\":\"JWT\",\"jku\":\"https://e.x\"}",
	         p, &len);
	REFUSED(in, len, &key, "header members");
	in = raw("{\"alg\":\"ES256\",\"kid\":\"" KID "\",\"crit\":[\"exp\"]}", p, &len);
	REFUSED(in, len, &key, "header members");
	in = raw("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", p, &len);
	REFUSED(in, len, &key, "header members");
	in = raw("{\"kid\":\"" KID "\",\"typ\":\"JWT\"}", p, &len);
	REFUSED(in, len, &key, "header members");
	in = raw("{}", p, &len);
	REFUSED(in, len, &key, "header members");
	in = raw("{\"alg\":\"ES256\",\"kid\":\"" KID "\",\"typ\":7}", p, &len);
	REFUSED(in, len, &key, "typ");
	in = raw("{\"alg\":\"ES256\",\"kid\":\"" KID "\",\"typ\":\"\"}", p, &len);
	REFUSED(in, len, &key, "typ");
}

static void test_dots(void)
{
	const char *p = payload_times(NOW, NOW + 60);
	size_t len, n;
	char *in, *out;

	/* A whole compact token, signature and all, is not a signing input. */
	in = made(JWS_ES256, KID, p, &len);
	out = malloc(len + 5);
	memcpy(out, in, len);
	memcpy(out + len, ".AAAA", 5);
	REFUSED(out, len + 5, &key, "more than one '.'");
	out = malloc(len + 1);
	memcpy(out, in, len);
	out[len] = '.';
	REFUSED(out, len + 1, &key, "more than one '.'");
	out = malloc(len + 1);
	out[0] = '.';
	memcpy(out + 1, in, len);
	REFUSED(out, len + 1, &key, "more than one '.'");
	/* No dot: the header alone, or nothing. */
	n = (size_t)(strchr(in, '.') - in);
	out = strndup(in, n);
	REFUSED(out, n, &key, "no '.'");
	REFUSED(strdup(""), 0, &key, "empty");
	REFUSED(strdup("."), 1, &key, "header");
	/* Empty parts. */
	out = strndup(in, n + 1);
	REFUSED(out, n + 1, &key, "payload is not valid JSON");
	out = strdup(strchr(in, '.'));
	REFUSED(out, len - n, &key, "header is not valid JSON");
	free(in);
}

/* Changes one character of the payload part (index i after the dot) to c. */
static char *with_payload_char(size_t i, char c, size_t *ret_len)
{
	char *in = made(JWS_ES256, KID, payload_times(NOW, NOW + 60), ret_len);

	strchr(in, '.')[1 + i] = c;
	return in;
}

static void test_base64url(void)
{
	size_t len;
	char *in, *out;

	in = with_payload_char(5, '+', &len);
	REFUSED(in, len, &key, "payload is not unpadded base64url");
	in = with_payload_char(5, '/', &len);
	REFUSED(in, len, &key, "payload is not unpadded base64url");
	in = with_payload_char(5, '\0', &len);
	REFUSED(in, len, &key, "payload is not unpadded base64url");
	in = with_payload_char(5, ' ', &len);
	REFUSED(in, len, &key, "payload is not unpadded base64url");
	in = made(JWS_ES256, KID, payload_times(NOW, NOW + 60), &len);
	in[3] = '=';
	REFUSED(in, len, &key, "header is not unpadded base64url");
	/* Padding where the length needs it. */
	in = raw(HEADER_OK, "{\"iss\":\"" ISS "\",\"iat\":1790000000,\"exp\":1790000060}", &len);
	CHECK(len % 4 != 0);
	out = malloc(len + 4);
	memcpy(out, in, len);
	memcpy(out + len, "====", 4);
	REFUSED(out, len + (4 - len % 4) % 4, &key, "payload is not unpadded base64url");
	/* An impossible length, and non-zero bits after the last byte (a second encoding). */
	out = malloc(len + 1);
	memcpy(out, in, len);
	out[len] = 'A';
	if (len % 4 == 0) /* then one more makes len % 4 == 1 */
		REFUSED(out, len + 1, &key, "payload is not unpadded base64url");
	else
		free(out);
	in[len - 1] = in[len - 1] == 'B' ? 'C' : 'B';
	REFUSED(in, len, &key, "payload is not unpadded base64url");
}

static void test_not_objects(void)
{
	static const char *const not_objects[] = {
	    "[]", "null", "\"x\"", "42", "", "{", "{\"iss\":\"" ISS "\"}x", "\xff\xfe",
	};
	size_t len;
	char *in;

	for (size_t i = 0; i < sizeof(not_objects) / sizeof(not_objects[0]); i++) {
		in = made(JWS_ES256, KID, not_objects[i], &len);
		REFUSED(in, len, &key, "payload is not");
		in = raw(not_objects[i], payload_times(NOW, NOW + 60), &len);
		REFUSED(in, len, &key, "header is not");
	}
	in = made(JWS_ES256, KID, "[{\"iss\":\"" ISS "\",\"iat\":1790000000,\"exp\":1790000060}]",
	          &len);
	REFUSED(in, len, &key, "payload is not a JSON object");
}

/* A JSON object of exactly n bytes: the payload with a "pad" member that fills it up. */
static char *sized_payload(size_t n)
{
	const char *base = "{\"iss\":\"" ISS "\",\"iat\":1790000000,\"exp\":1790000060,\"pad\":\"";
	size_t b = strlen(base);
	char *p = malloc(n + 1);

	if (n < b + 2)
		abort();
	memcpy(p, base, b);
	memset(p + b, 'a', n - b - 2);
	memcpy(p + n - 2, "\"}", 3);
	return p;
}

static void test_sizes(void)
{
	char header[GUARD_HEADER_MAX + 2], *in, *p;
	const char *h0 = "{\"alg\":\"ES256\",\"kid\":\"" KID "\",\"typ\":\"";
	size_t len, b = strlen(h0);

	/* Header of exactly the cap, then one byte over. */
	memcpy(header, h0, b);
	memset(header + b, 't', GUARD_HEADER_MAX - b - 2);
	memcpy(header + GUARD_HEADER_MAX - 2, "\"}", 3);
	CHECK_INT(strlen(header), GUARD_HEADER_MAX);
	in = raw(header, payload_times(NOW, NOW + 60), &len);
	ACCEPTED(in, len, &key);
	memcpy(header + GUARD_HEADER_MAX - 2, "t\"}", 4);
	in = raw(header, payload_times(NOW, NOW + 60), &len);
	REFUSED(in, len, &key, "header is larger than 1024 bytes");
	/* Payload of exactly the cap, then one byte over. */
	p = sized_payload(GUARD_PAYLOAD_MAX);
	in = made(JWS_ES256, KID, p, &len);
	CHECK(len <= GUARD_INPUT_MAX);
	ACCEPTED(in, len, &key);
	free(p);
	p = sized_payload(GUARD_PAYLOAD_MAX + 1);
	in = made(JWS_ES256, KID, p, &len);
	REFUSED(in, len, &key, "payload is larger than 69632 bytes");
	free(p);
	/* Over the input cap, whatever it holds; at the cap, refused only later (for its payload:
	 * no header under its cap makes room for a payload of 96 KiB). */
	p = sized_payload(GUARD_INPUT_MAX);
	in = made(JWS_ES256, KID, p, &len);
	REFUSED(in, len, &key, "signing input is larger than 98304 bytes");
	free(p);
	in = made(JWS_ES256, KID, "{}", &len);
	p = malloc(GUARD_INPUT_MAX + 1);
	len = (size_t)(strchr(in, '.') - in) + 1;
	memcpy(p, in, len);
	memset(p + len, 'A', GUARD_INPUT_MAX + 1 - len);
	free(in);
	in = malloc(GUARD_INPUT_MAX + 1);
	memcpy(in, p, GUARD_INPUT_MAX + 1);
	REFUSED(p, GUARD_INPUT_MAX + 1, &key, "signing input is larger than 98304 bytes");
	REFUSED(in, GUARD_INPUT_MAX, &key, "payload is");
}

/* An unusable key refuses everything, with that reason. */
#define KEY_REFUSED(k)                                                                             \
	do {                                                                                       \
		char *copy_ = malloc(len);                                                         \
		memcpy(copy_, in, len);                                                            \
		REFUSED(copy_, len, (k), "guard key is invalid");                                  \
	} while (0)

static void test_key_and_why(void)
{
	struct guard_key k = key;
	char why[16];
	size_t len;
	char *in = made(JWS_ES256, KID, payload_times(NOW, NOW + 60), &len);

	CHECK_INT(guard_check(in, len, NULL, NOW, NULL, 0), -EPERM);
	KEY_REFUSED(NULL);
	k.max_ttl = 0;
	KEY_REFUSED(&k);
	k = key;
	k.kid = NULL;
	KEY_REFUSED(&k);
	k = key;
	k.kid = "";
	KEY_REFUSED(&k);
	k = key;
	k.iss = NULL;
	KEY_REFUSED(&k);
	k = key;
	k.iss = "";
	KEY_REFUSED(&k);
	k = key;
	k.alg = _JWS_ALG_MAX;
	KEY_REFUSED(&k);
	CHECK_INT(guard_check(NULL, len, &key, NOW, NULL, 0), -EPERM);
	/* A short buffer gets a cut, terminated reason and nothing past its end. */
	memset(why, 'X', sizeof(why));
	k = key;
	k.kid = "other";
	CHECK_INT(guard_check(in, len, &k, NOW, why, 8), -EPERM);
	CHECK_INT(strlen(why), 7);
	CHECK(why[8] == 'X');
	memset(why, 'X', sizeof(why));
	CHECK_INT(guard_check(in, len, &k, NOW, why, 0), -EPERM);
	CHECK(why[0] == 'X');
	free(in);
}

int main(void)
{
	test_made_by_daemon();
	test_not_nul_terminated();
	test_other_key();
	test_other_iss();
	test_lifetime();
	test_clock();
	test_overflow();
	test_duplicates();
	test_header_members();
	test_dots();
	test_base64url();
	test_not_objects();
	test_sizes();
	test_key_and_why();
	return unit_finish("test_guard");
}

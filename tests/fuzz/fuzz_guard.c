/* libFuzzer harness for daemon/hsm/guard.c: whatever is accepted is, read independently, a
 * signing input for the key within its policy; a refusal is -EPERM with a short one-line reason
 * that stays inside its buffer. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "b64url.h"
#include "guard.h"
#include "jws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW INT64_C(1790000000)
#define ISS "https://login.example.com/main"
#define KID "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

static const struct guard_key key = {.alg = JWS_ES256, .kid = KID, .iss = ISS, .max_ttl = 3600};

static void check_why(const char *why, size_t size)
{
	size_t n = strnlen(why, size);

	if (n == 0 || n == size)
		abort();
	for (size_t i = 0; i < n; i++)
		if (why[i] < 0x20 || why[i] > 0x7e)
			abort();
}

/* Decodes one part with a buffer of its own, as a verifier would. NULL when it does not decode. */
static json_t *part_json(const char *s, size_t n)
{
	uint8_t *buf = malloc(n / 4 * 3 + 3);
	json_t *v = NULL;
	size_t got;

	if (!buf)
		abort();
	if (b64url_decode(s, n, buf, n / 4 * 3 + 3, &got) == 0)
		v = json_loadb((const char *)buf, got, JSON_REJECT_DUPLICATES, NULL);
	free(buf);
	return v;
}

static bool string_is(const json_t *v, const char *s)
{
	return json_is_string(v) && json_string_length(v) == strlen(s) &&
	       strcmp(json_string_value(v), s) == 0;
}

/* What guard_check() accepted, read again without its code: the properties the helper relies on. */
static void check_accepted(const char *in, size_t len)
{
	const char *dot = memchr(in, '.', len);
	json_t *h, *p, *iat, *exp, *nbf;
	__int128 ttl, skew;
	size_t hl;

	if (!dot || len > GUARD_INPUT_MAX)
		abort();
	hl = (size_t)(dot - in);
	if (memchr(dot + 1, '.', len - hl - 1))
		abort();
	h = part_json(in, hl);
	p = part_json(dot + 1, len - hl - 1);
	if (!json_is_object(h) || !json_is_object(p))
		abort();
	if (!string_is(json_object_get(h, "alg"), "ES256") ||
	    !string_is(json_object_get(h, "kid"), KID) ||
	    json_object_size(h) != (json_object_get(h, "typ") ? 3u : 2u))
		abort();
	iat = json_object_get(p, "iat");
	exp = json_object_get(p, "exp");
	nbf = json_object_get(p, "nbf");
	if (!string_is(json_object_get(p, "iss"), ISS) || !json_is_integer(iat) ||
	    !json_is_integer(exp))
		abort();
	ttl = (__int128)json_integer_value(exp) - json_integer_value(iat);
	skew = (__int128)json_integer_value(iat) - NOW;
	if (ttl < 1 || ttl > key.max_ttl || skew > GUARD_CLOCK_SKEW || skew < -GUARD_CLOCK_SKEW)
		abort();
	if (nbf && (!json_is_integer(nbf) || json_integer_value(nbf) > json_integer_value(exp)))
		abort();
	json_decref(h);
	json_decref(p);
}

/* One input, checked twice: with a full reason buffer, and with one too short for any reason,
 * which must be cut, terminated and give the same answer. */
static void check_input(const char *in, size_t len)
{
	char *why = malloc(GUARD_WHY_SIZE), *short_why = malloc(6);
	int r, again;

	if (!why || !short_why)
		abort();
	memset(why, 0x5a, GUARD_WHY_SIZE);
	r = guard_check(in, len, &key, NOW, why, GUARD_WHY_SIZE);
	again = guard_check(in, len, &key, NOW, short_why, 6);
	if (r != again)
		abort();
	if (r == 0) {
		/* Untouched on success. */
		for (size_t i = 0; i < GUARD_WHY_SIZE; i++)
			if (why[i] != 0x5a)
				abort();
		check_accepted(in, len);
	} else if (r == -EPERM) {
		check_why(why, GUARD_WHY_SIZE);
		check_why(short_why, 6);
	} else {
		abort();
	}
	free(why);
	free(short_why);
}

/* The first byte picks what the rest is, so that the fuzzer need not find base64url by chance:
 * 0 the signing input itself; 1 a payload under the daemon's own header; 2 a header and a
 * payload, split at the first NUL, each encoded here. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *rest = (const char *)data + 1;
	const char *nul;
	char *in = NULL;
	size_t n = size - 1, len, hl;

	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		check_input(rest, n);
		return 0;
	case 1:
		if (jws_signing_input(key.alg, key.kid, "JWT", rest, n, &in, &len) < 0)
			return 0;
		break;
	default:
		nul = memchr(rest, '\0', n);
		if (!nul)
			return 0;
		hl = (size_t)(nul - rest);
		len = b64url_encoded_len(hl) + 1 + b64url_encoded_len(n - hl - 1);
		in = malloc(len + 1);
		if (!in)
			abort();
		b64url_encode((const uint8_t *)rest, hl, in);
		in[b64url_encoded_len(hl)] = '.';
		b64url_encode((const uint8_t *)nul + 1, n - hl - 1,
		              in + b64url_encoded_len(hl) + 1);
		break;
	}
	check_input(in, len);
	free(in);
	return 0;
}

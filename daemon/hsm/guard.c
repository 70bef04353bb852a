/* Checks a JWS signing input against the key's policy before the helper signs it. */
#include "guard.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "b64url.h"

/* Where to write the reason, passed down so that every check can refuse in one line. */
struct why {
	char *buf;
	size_t size;
};

static int refuse(const struct why *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int refuse(const struct why *w, const char *fmt, ...)
{
	va_list ap;

	if (w->buf && w->size > 0) {
		va_start(ap, fmt);
		vsnprintf(w->buf, w->size, fmt, ap);
		va_end(ap);
	}
	return -EPERM;
}

/* Exact comparison by length, so that a string with an embedded NUL never equals a C string. */
static bool string_is(const json_t *v, const char *expected)
{
	size_t n = strlen(expected);

	return json_is_string(v) && json_string_length(v) == n &&
	       memcmp(json_string_value(v), expected, n) == 0;
}

static bool key_valid(const struct guard_key *k)
{
	return k && jws_alg_name(k->alg) && k->kid && *k->kid && k->iss && *k->iss &&
	       k->max_ttl >= 1;
}

/* Parses a decoded part; only an object without duplicate members will do. */
static int parse_object(const uint8_t *buf, size_t n, const char *part, json_t **ret,
                        const struct why *w)
{
	json_error_t err;
	json_t *v = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &err);

	/* jansson's own message quotes the input: name the fault, not the text. */
	if (!v && json_error_code(&err) == json_error_duplicate_key)
		return refuse(w, "%s has a duplicate member", part);
	if (!v && json_error_code(&err) == json_error_out_of_memory)
		return refuse(w, "out of memory parsing the %s", part);
	if (!v)
		return refuse(w, "%s is not valid JSON", part);
	if (!json_is_object(v)) {
		json_decref(v);
		return refuse(w, "%s is not a JSON object", part);
	}
	*ret = v;
	return 0;
}

/* The daemon writes exactly {"alg", "kid", "typ"}; typ is allowed to be absent. */
static int check_header(const json_t *h, const struct guard_key *k, const struct why *w)
{
	const json_t *alg = json_object_get(h, "alg"), *kid = json_object_get(h, "kid");
	const json_t *typ = json_object_get(h, "typ");

	if (!alg || !kid || json_object_size(h) != (typ ? 3u : 2u))
		return refuse(w, "header members are not exactly alg, kid and optionally typ");
	if (!string_is(alg, jws_alg_name(k->alg)))
		return refuse(w, "header alg is not this key's %s", jws_alg_name(k->alg));
	if (!string_is(kid, k->kid))
		return refuse(w, "header kid is not this key's");
	if (typ && (!json_is_string(typ) || json_string_length(typ) == 0 ||
	            strlen(json_string_value(typ)) != json_string_length(typ)))
		return refuse(w, "header typ is not a non-empty string");
	return 0;
}

static int check_times(const json_t *p, const struct guard_key *k, int64_t now, const struct why *w)
{
	const json_t *iat = json_object_get(p, "iat"), *exp = json_object_get(p, "exp");
	const json_t *nbf = json_object_get(p, "nbf");
	int64_t ttl, skew, e;

	if (!json_is_integer(iat))
		return refuse(w, "payload iat missing or not an integer");
	if (!json_is_integer(exp))
		return refuse(w, "payload exp missing or not an integer");
	e = json_integer_value(exp);
	if (__builtin_sub_overflow((int64_t)e, (int64_t)json_integer_value(iat), &ttl))
		return refuse(w, "payload exp - iat overflows");
	if (ttl < 1)
		return refuse(w, "payload exp is not after iat");
	if (ttl > k->max_ttl)
		return refuse(w, "payload lifetime %lld s exceeds this key's %lld s",
		              (long long)ttl, (long long)k->max_ttl);
	if (__builtin_sub_overflow((int64_t)json_integer_value(iat), now, &skew) ||
	    skew > GUARD_CLOCK_SKEW || skew < -GUARD_CLOCK_SKEW)
		return refuse(w, "payload iat is more than %d s from now", GUARD_CLOCK_SKEW);
	if (nbf && !json_is_integer(nbf))
		return refuse(w, "payload nbf is not an integer");
	if (nbf && json_integer_value(nbf) > e)
		return refuse(w, "payload nbf is after exp");
	return 0;
}

static int check_payload(const json_t *p, const struct guard_key *k, int64_t now,
                         const struct why *w)
{
	const json_t *iss = json_object_get(p, "iss");

	if (!json_is_string(iss))
		return refuse(w, "payload iss missing or not a string");
	if (!string_is(iss, k->iss))
		return refuse(w, "payload iss is not this key's issuer");
	return check_times(p, k, now, w);
}

static int check_header_part(const char *s, size_t n, const struct guard_key *k,
                             const struct why *w)
{
	uint8_t buf[GUARD_HEADER_MAX];
	json_t *h = NULL;
	size_t got;
	int r;

	r = b64url_decode(s, n, buf, sizeof(buf), &got);
	if (r == -ENOBUFS)
		return refuse(w, "header is larger than %d bytes", GUARD_HEADER_MAX);
	if (r < 0)
		return refuse(w, "header is not unpadded base64url");
	if (parse_object(buf, got, "header", &h, w) < 0)
		return -EPERM;
	r = check_header(h, k, w);
	json_decref(h);
	return r;
}

static int check_payload_part(const char *s, size_t n, const struct guard_key *k, int64_t now,
                              const struct why *w)
{
	/* Enough for any valid encoding of n characters, and never more than the cap. */
	size_t size = n / 4 * 3 + 2 > GUARD_PAYLOAD_MAX ? GUARD_PAYLOAD_MAX : n / 4 * 3 + 2;
	uint8_t *buf = malloc(size);
	json_t *p = NULL;
	size_t got;
	int r;

	if (!buf)
		return refuse(w, "out of memory decoding the payload");
	r = b64url_decode(s, n, buf, size, &got);
	if (r == -ENOBUFS) {
		r = refuse(w, "payload is larger than %d bytes", GUARD_PAYLOAD_MAX);
		goto out;
	}
	if (r < 0) {
		r = refuse(w, "payload is not unpadded base64url");
		goto out;
	}
	r = parse_object(buf, got, "payload", &p, w);
	if (r < 0)
		goto out;
	r = check_payload(p, k, now, w);
	json_decref(p);
out:
	free(buf);
	return r;
}

int guard_check(const char *input, size_t len, const struct guard_key *k, int64_t now, char *why,
                size_t why_size)
{
	const struct why w = {why, why_size};
	const char *dot;
	size_t hlen;

	if (!key_valid(k))
		return refuse(&w, "guard key is invalid");
	if (!input || len == 0)
		return refuse(&w, "signing input is empty");
	if (len > GUARD_INPUT_MAX)
		return refuse(&w, "signing input is larger than %d bytes", GUARD_INPUT_MAX);
	dot = memchr(input, '.', len);
	if (!dot)
		return refuse(&w, "signing input has no '.'");
	hlen = (size_t)(dot - input);
	if (memchr(dot + 1, '.', len - hlen - 1))
		return refuse(&w, "signing input has more than one '.'");
	if (check_header_part(input, hlen, k, &w) < 0)
		return -EPERM;
	return check_payload_part(dot + 1, len - hlen - 1, k, now, &w);
}

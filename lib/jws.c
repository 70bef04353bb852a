/* Encoding of the protected header, the signing input and the compact token. */
#include "jws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "b64url.h"

static const char *const alg_names[_JWS_ALG_MAX] = {
    [JWS_ES256] = "ES256", [JWS_ES384] = "ES384", [JWS_RS256] = "RS256",
    [JWS_PS256] = "PS256", [JWS_EDDSA] = "EdDSA",
};

const char *jws_alg_name(enum jws_alg alg)
{
	if ((unsigned)alg >= _JWS_ALG_MAX)
		return NULL;
	return alg_names[alg];
}

int jws_alg_from_name(const char *name, enum jws_alg *ret)
{
	for (unsigned i = 0; i < _JWS_ALG_MAX; i++) {
		if (strcmp(alg_names[i], name) == 0) {
			*ret = (enum jws_alg)i;
			return 0;
		}
	}
	return -EINVAL;
}

int jws_alg_is_rsa(enum jws_alg alg)
{
	return alg == JWS_RS256 || alg == JWS_PS256;
}

size_t jws_ecdsa_sig_len(enum jws_alg alg)
{
	switch (alg) {
	case JWS_ES256:
		return 64;
	case JWS_ES384:
		return 96;
	default:
		return 0;
	}
}

static char *header_json(enum jws_alg alg, const char *kid, const char *typ)
{
	json_t *h = json_object();
	char *s = NULL;

	if (!h)
		return NULL;
	/* Insertion order is output order: alg, kid, typ, and nothing else, ever. */
	if (json_object_set_new(h, "alg", json_string(jws_alg_name(alg))) == 0 &&
	    json_object_set_new(h, "kid", json_string(kid)) == 0 &&
	    json_object_set_new(h, "typ", json_string(typ)) == 0)
		s = json_dumps(h, JSON_COMPACT);
	json_decref(h);
	return s;
}

/* The encoded headers this thread made last: a signing thread serves few (kid, typ) pairs,
 * and the header, built through jansson and encoded, cost ~14k instructions per token. Fixed
 * arrays, so that nothing is left to free when the thread ends. */
#define HEADER_CACHE 4
#define HEADER_FIELD 64
struct header_entry {
	enum jws_alg alg;
	char kid[HEADER_FIELD + 1], typ[HEADER_FIELD + 1];
	char h64[4 * HEADER_FIELD];
	size_t h64_len; /* 0: empty */
};
static __thread struct header_entry header_cache[HEADER_CACHE];
static __thread unsigned header_next;

static const struct header_entry *header_cached(enum jws_alg alg, const char *kid, const char *typ)
{
	for (unsigned i = 0; i < HEADER_CACHE; i++) {
		const struct header_entry *e = &header_cache[i];
		if (e->h64_len && e->alg == alg && strcmp(e->kid, kid) == 0 &&
		    strcmp(e->typ, typ) == 0)
			return e;
	}
	return NULL;
}

static void header_remember(enum jws_alg alg, const char *kid, const char *typ, const char *h64,
                            size_t h64_len)
{
	struct header_entry *e = &header_cache[header_next];

	if (strlen(kid) > HEADER_FIELD || strlen(typ) > HEADER_FIELD || h64_len >= sizeof(e->h64))
		return;
	header_next = (header_next + 1) % HEADER_CACHE;
	e->alg = alg;
	strcpy(e->kid, kid);
	strcpy(e->typ, typ);
	memcpy(e->h64, h64, h64_len);
	e->h64_len = h64_len;
}

int jws_signing_input(enum jws_alg alg, const char *kid, const char *typ, const char *payload,
                      size_t payload_len, char **ret, size_t *ret_len)
{
	const struct header_entry *cached;
	char *header, *out;
	size_t hlen, h64, p64;

	if (!jws_alg_name(alg) || !kid || !*kid || !typ || !*typ || !payload)
		return -EINVAL;
	cached = header_cached(alg, kid, typ);
	if (cached) {
		h64 = cached->h64_len;
		p64 = b64url_encoded_len(payload_len);
		out = malloc(h64 + 1 + p64 + 1);
		if (!out)
			return -ENOMEM;
		memcpy(out, cached->h64, h64);
		out[h64] = '.';
		b64url_encode((const uint8_t *)payload, payload_len, out + h64 + 1);
		*ret = out;
		*ret_len = h64 + 1 + p64;
		return 0;
	}
	/* jansson refuses strings that are not UTF-8: a caller error, not a lack of memory. */
	json_t *check = json_pack("[s,s]", kid, typ);
	if (!check)
		return -EINVAL;
	json_decref(check);
	header = header_json(alg, kid, typ);
	if (!header)
		return -ENOMEM;
	hlen = strlen(header);
	h64 = b64url_encoded_len(hlen);
	p64 = b64url_encoded_len(payload_len);
	out = malloc(h64 + 1 + p64 + 1);
	if (!out) {
		free(header);
		return -ENOMEM;
	}
	b64url_encode((const uint8_t *)header, hlen, out);
	out[h64] = '.';
	b64url_encode((const uint8_t *)payload, payload_len, out + h64 + 1);
	free(header);
	header_remember(alg, kid, typ, out, h64);
	*ret = out;
	*ret_len = h64 + 1 + p64;
	return 0;
}

int jws_compact(const char *input, size_t input_len, const uint8_t *sig, size_t sig_len, char **ret)
{
	size_t s64 = b64url_encoded_len(sig_len);
	char *out = malloc(input_len + 1 + s64 + 1);

	if (!out)
		return -ENOMEM;
	memcpy(out, input, input_len);
	out[input_len] = '.';
	b64url_encode(sig, sig_len, out + input_len + 1);
	*ret = out;
	return 0;
}

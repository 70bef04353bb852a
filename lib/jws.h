/* JWS compact serialization (RFC 7515) of tokens the daemon signs: header, signing input, token. */
#pragma once
#include <stddef.h>
#include <stdint.h>

enum jws_alg {
	JWS_ES256,
	JWS_ES384,
	JWS_RS256,
	JWS_PS256,
	JWS_EDDSA,
	_JWS_ALG_MAX,
};

/* "ES256" ... for an alg; NULL for an invalid value. */
const char *jws_alg_name(enum jws_alg alg);

/* Parses an algorithm name (exact, case-sensitive). Returns 0 or -EINVAL. */
int jws_alg_from_name(const char *name, enum jws_alg *ret);

/* True for RS256 and PS256. */
int jws_alg_is_rsa(enum jws_alg alg);

/* Size of a signature in bytes for ECDSA algorithms (R||S, RFC 7518 §3.4); 0 for others. */
size_t jws_ecdsa_sig_len(enum jws_alg alg);

/* Builds BASE64URL(header) "." BASE64URL(payload) where the header is exactly
 * {"alg":ALG,"kid":KID,"typ":TYP}. The caller frees *ret. Returns 0, -EINVAL, -ENOMEM. */
int jws_signing_input(enum jws_alg alg, const char *kid, const char *typ, const char *payload,
                      size_t payload_len, char **ret, size_t *ret_len);

/* Appends "." BASE64URL(sig) to a signing input. The caller frees *ret. Returns 0 or -ENOMEM. */
int jws_compact(const char *input, size_t input_len, const uint8_t *sig, size_t sig_len,
                char **ret);

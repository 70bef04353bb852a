/* Public keys as JWKs (RFC 7517/7518) and their RFC 7638 thumbprints, which are our kids. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/types.h>

#include "jws.h"

enum jwk_kty {
	JWK_KTY_EC,
	JWK_KTY_RSA,
	JWK_KTY_OKP, /* RFC 8037: Ed25519 */
};

#define JWK_MAX_COORD   66   /* P-521 */
#define JWK_MAX_MODULUS 1024 /* RSA-8192 */
#define JWK_KID_LEN     43   /* base64url of a SHA-256 digest */

struct jwk {
	enum jwk_kty kty;
	const char *crv; /* EC: "P-256" or "P-384"; OKP: "Ed25519"; static string */
	uint8_t x[JWK_MAX_COORD], y[JWK_MAX_COORD]; /* OKP: x only */
	size_t coord_len;
	uint8_t n[JWK_MAX_MODULUS], e[8];
	size_t n_len, e_len;
};

/* Builds an EC JWK from a PKCS#11 CKA_EC_POINT: either the DER OCTET STRING that the standard
 * asks for or the raw uncompressed point some modules return. The point must lie on the curve.
 * Returns 0 or -EINVAL. */
int jwk_from_ec_point(const char *crv, const uint8_t *point, size_t len, struct jwk *ret);

/* Builds an OKP JWK (crv "Ed25519") from a PKCS#11 CKA_EC_POINT: the DER OCTET STRING of the
 * 32-byte public key, or the raw 32 bytes. Returns 0 or -EINVAL. */
int jwk_from_okp_point(const char *crv, const uint8_t *point, size_t len, struct jwk *ret);

/* Builds an RSA JWK from big-endian modulus and exponent (leading zeros are stripped). */
int jwk_from_rsa(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len, struct jwk *ret);

/* RFC 7638 thumbprint: base64url(SHA-256(required members, sorted, no whitespace)).
 * kid must hold JWK_KID_LEN + 1 bytes. */
int jwk_thumbprint(const struct jwk *key, char *kid);

/* The public JWK with kid, alg and use, members in a fixed order (kid, kty, alg, use, then the
 * key members) so that every instance renders byte-identical JWKS. Returns a new reference or
 * NULL on allocation failure. */
json_t *jwk_to_json(const struct jwk *key, const char *kid, enum jws_alg alg);

/* The key as an OpenSSL public key, to verify signatures with. Caller frees with EVP_PKEY_free.
 * Returns 0, -EINVAL or -ENOMEM. */
int jwk_to_evp(const struct jwk *key, EVP_PKEY **ret);

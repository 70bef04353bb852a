/* Unit tests of lib/jwk.c: RFC 7638 thumbprints, EC points as PKCS#11 returns them, JWK order. */
#include <errno.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "b64url.h"
#include "jwk.h"
#include "unit.h"

/* RFC 7638 §3.1: the RSA key of the example and its thumbprint. */
static const char rfc7638_n[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJE"
    "CPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2"
    "QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh"
    "6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
static const char rfc7638_e[] = "AQAB";
static const char rfc7638_kid[] = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

/* RFC 7515 A.3: a fixed P-256 public key; its thumbprint computed with Python's hashlib over
 * {"crv":"P-256","kty":"EC","x":...,"y":...}. */
static const char a3_x[] = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
static const char a3_y[] = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
static const char a3_kid[] = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";

/* The generator of P-256 (SEC 2 §2.4.2), a point known to be on the curve. */
static const uint8_t p256_g[65] = {
    0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5,
    0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4,
    0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a,
    0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33,
    0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
};

/* base64url written independently of lib/b64url.c. */
static void ref_b64url(const uint8_t *in, size_t n, char *out)
{
	int w = EVP_EncodeBlock((unsigned char *)out, in, (int)n);

	while (w > 0 && out[w - 1] == '=')
		w--;
	out[w] = '\0';
	for (int i = 0; i < w; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

static void ref_thumbprint_ec(const char *crv, const char *x, const char *y, char *kid)
{
	char json[512];
	uint8_t digest[32];
	int n = snprintf(json, sizeof(json),
	                 "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", crv, x, y);

	CHECK(EVP_Digest(json, (size_t)n, digest, NULL, EVP_sha256(), NULL) == 1);
	ref_b64url(digest, sizeof(digest), kid);
}

static size_t decode(const char *s, uint8_t *out, size_t size)
{
	size_t n = 0;

	CHECK_INT(b64url_decode(s, strlen(s), out, size, &n), 0);
	return n;
}

static void test_rfc7638_rsa(void)
{
	uint8_t n[512], e[8], n0[513];
	size_t n_len = decode(rfc7638_n, n, sizeof(n)), e_len = decode(rfc7638_e, e, sizeof(e));
	struct jwk key;
	char kid[JWK_KID_LEN + 1];
	char *s;
	json_t *j;

	CHECK_INT(n_len, 256);
	CHECK_INT(e_len, 3);
	CHECK_INT(jwk_from_rsa(n, n_len, e, e_len, &key), 0);
	CHECK_INT(key.kty, JWK_KTY_RSA);
	CHECK_INT(key.n_len, 256);
	CHECK_INT(key.e_len, 3);
	memset(kid, 'X', sizeof(kid));
	CHECK_INT(jwk_thumbprint(&key, kid), 0);
	CHECK_STR(kid, rfc7638_kid);

	/* Leading zeros (as in a DER INTEGER or a PKCS#11 attribute) do not change the key. */
	n0[0] = 0;
	memcpy(n0 + 1, n, n_len);
	{
		static const uint8_t e0[] = {0, 0, 1, 0, 1};
		CHECK_INT(jwk_from_rsa(n0, n_len + 1, e0, sizeof(e0), &key), 0);
		CHECK_INT(key.n_len, 256);
		CHECK_INT(key.e_len, 3);
		CHECK_INT(jwk_thumbprint(&key, kid), 0);
		CHECK_STR(kid, rfc7638_kid);
	}

	j = jwk_to_json(&key, kid, JWS_RS256);
	CHECK(j != NULL);
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (s) {
		char expected[1024];
		snprintf(expected, sizeof(expected),
		         "{\"kid\":\"%s\",\"kty\":\"RSA\",\"alg\":\"RS256\",\"use\":\"sig\",\"n\":"
		         "\"%s\","
		         "\"e\":\"AQAB\"}",
		         rfc7638_kid, rfc7638_n);
		CHECK_STR(s, expected);
	}
	free(s);
	json_decref(j);

	/* Bounds. */
	CHECK_INT(jwk_from_rsa(n, 0, e, e_len, &key), -EINVAL);
	CHECK_INT(jwk_from_rsa(n, n_len, e, 0, &key), -EINVAL);
	{
		static uint8_t big[JWK_MAX_MODULUS + 1];
		static const uint8_t e9[9] = {1, 0, 0, 0, 0, 0, 0, 0, 1};
		big[0] = 0x80;
		CHECK_INT(jwk_from_rsa(big, sizeof(big), e, e_len, &key), -EINVAL);
		CHECK_INT(jwk_from_rsa(big, JWK_MAX_MODULUS, e, e_len, &key), 0);
		CHECK_INT(jwk_from_rsa(n, n_len, e9, sizeof(e9), &key), -EINVAL);
	}
}

/* Builds the DER OCTET STRING that PKCS#11 asks CKA_EC_POINT to hold. */
static size_t der_wrap(const uint8_t *point, size_t len, uint8_t *out)
{
	size_t h = 0;

	out[h++] = 0x04;
	if (len >= 128)
		out[h++] = 0x81;
	out[h++] = (uint8_t)len;
	memcpy(out + h, point, len);
	return h + len;
}

static void check_ec_key(const char *crv, const uint8_t *point, size_t len, size_t coord)
{
	uint8_t wrapped[128];
	size_t wlen = der_wrap(point, len, wrapped);
	char x[128], y[128], ref_kid[JWK_KID_LEN + 1], kid[JWK_KID_LEN + 1];
	struct jwk key, key2;

	ref_b64url(point + 1, coord, x);
	ref_b64url(point + 1 + coord, coord, y);
	ref_thumbprint_ec(crv, x, y, ref_kid);

	memset(&key, 0xee, sizeof(key));
	CHECK_INT(jwk_from_ec_point(crv, point, len, &key), 0);
	CHECK_INT(key.kty, JWK_KTY_EC);
	CHECK_STR(key.crv, crv);
	CHECK_INT(key.coord_len, coord);
	CHECK_MEM(key.x, point + 1, coord);
	CHECK_MEM(key.y, point + 1 + coord, coord);
	memset(kid, 'X', sizeof(kid));
	CHECK_INT(jwk_thumbprint(&key, kid), 0);
	CHECK_STR(kid, ref_kid);

	/* The DER-wrapped form gives the same key. */
	memset(&key2, 0xee, sizeof(key2));
	CHECK_INT(jwk_from_ec_point(crv, wrapped, wlen, &key2), 0);
	CHECK_INT(key2.coord_len, coord);
	CHECK_MEM(key2.x, point + 1, coord);
	CHECK_MEM(key2.y, point + 1 + coord, coord);
	memset(kid, 'X', sizeof(kid));
	CHECK_INT(jwk_thumbprint(&key2, kid), 0);
	CHECK_STR(kid, ref_kid);

	/* Member order kid, kty, alg, use, crv, x, y, and nothing else. */
	{
		json_t *j = jwk_to_json(&key, kid, JWS_ES256);
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		char expected[512];
		snprintf(expected, sizeof(expected),
		         "{\"kid\":\"%s\",\"kty\":\"EC\",\"alg\":\"ES256\",\"use\":\"sig\",\"crv\":"
		         "\"%s\","
		         "\"x\":\"%s\",\"y\":\"%s\"}",
		         ref_kid, crv, x, y);
		CHECK(s != NULL);
		CHECK_STR(s, expected);
		free(s);
		json_decref(j);
	}
}

static EVP_PKEY *gen_ec(const char *curve, uint8_t *point, size_t size, size_t *len)
{
	EVP_PKEY *pkey = EVP_EC_gen(curve);

	CHECK(pkey != NULL);
	if (!pkey)
		return NULL;
	CHECK(EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, size,
	                                      len) == 1);
	return pkey;
}

static void test_ec_generated(void)
{
	uint8_t point[133];
	size_t len = 0;
	EVP_PKEY *pkey;

	pkey = gen_ec("P-256", point, sizeof(point), &len);
	CHECK_INT(len, 65);
	CHECK_INT(point[0], 0x04);
	if (pkey && len == 65)
		check_ec_key("P-256", point, len, 32);
	EVP_PKEY_free(pkey);

	pkey = gen_ec("P-384", point, sizeof(point), &len);
	CHECK_INT(len, 97);
	if (pkey && len == 97)
		check_ec_key("P-384", point, len, 48);
	EVP_PKEY_free(pkey);
}

static void test_ec_fixed(void)
{
	uint8_t point[65], x[40], y[40];
	struct jwk key;
	char kid[JWK_KID_LEN + 1];

	CHECK_INT(decode(a3_x, x, sizeof(x)), 32);
	CHECK_INT(decode(a3_y, y, sizeof(y)), 32);
	point[0] = 0x04;
	memcpy(point + 1, x, 32);
	memcpy(point + 33, y, 32);
	check_ec_key("P-256", point, sizeof(point), 32);
	CHECK_INT(jwk_from_ec_point("P-256", point, sizeof(point), &key), 0);
	CHECK_INT(jwk_thumbprint(&key, kid), 0);
	CHECK_STR(kid, a3_kid);
	check_ec_key("P-256", p256_g, sizeof(p256_g), 32);
}

static void check_ec_rejected(const char *crv, const uint8_t *p, size_t len)
{
	struct jwk key;

	CHECK_INT(jwk_from_ec_point(crv, p, len, &key), -EINVAL);
}

static void test_ec_rejects(void)
{
	uint8_t p[80], w[80];

	/* Off the curve: G with y + 1. */
	memcpy(p, p256_g, 65);
	p[64] ^= 0x01;
	check_ec_rejected("P-256", p, 65);
	check_ec_rejected("P-256", w, der_wrap(p, 65, w));
	/* Coordinates all zero, and all 0xff (beyond the field prime). */
	memset(p, 0, 65);
	p[0] = 0x04;
	check_ec_rejected("P-256", p, 65);
	memset(p + 1, 0xff, 64);
	check_ec_rejected("P-256", p, 65);
	/* Wrong lengths and forms. */
	check_ec_rejected("P-256", p256_g, 64);
	check_ec_rejected("P-256", p256_g, 1);
	check_ec_rejected("P-256", p256_g, 0);
	memcpy(p, p256_g, 65);
	p[65] = 0;
	check_ec_rejected("P-256", p, 66);
	check_ec_rejected("P-384", p256_g, 65);
	check_ec_rejected("P-521", p256_g, 65);
	check_ec_rejected("p-256", p256_g, 65);
	check_ec_rejected("", p256_g, 65);
	/* Compressed point (0x02 || x) and a hybrid/other prefix. */
	memcpy(p, p256_g, 33);
	p[0] = 0x03; /* Gy is odd */
	check_ec_rejected("P-256", p, 33);
	memcpy(p, p256_g, 65);
	p[0] = 0x06;
	check_ec_rejected("P-256", p, 65);
	/* DER wrapper with a wrong length byte, a wrong tag, or trailing bytes. */
	der_wrap(p256_g, 65, w);
	w[1] = 0x40;
	check_ec_rejected("P-256", w, 67);
	der_wrap(p256_g, 65, w);
	w[0] = 0x03;
	check_ec_rejected("P-256", w, 67);
	der_wrap(p256_g, 65, w);
	w[67] = 0;
	check_ec_rejected("P-256", w, 68);
	der_wrap(p256_g, 65, w);
	check_ec_rejected("P-256", w, 66);
}

int main(void)
{
	test_rfc7638_rsa();
	test_ec_fixed();
	test_ec_generated();
	test_ec_rejects();
	return unit_finish("jwk");
}

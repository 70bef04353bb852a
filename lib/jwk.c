/* JWK encoding of public keys and RFC 7638 thumbprints. */
#include "jwk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/bn.h>
#include <openssl/param_build.h>
#include <openssl/params.h>

#include "b64url.h"

static size_t curve_coord_len(const char *crv, const char **ossl_name)
{
	if (strcmp(crv, "P-256") == 0) {
		*ossl_name = "prime256v1";
		return 32;
	}
	if (strcmp(crv, "P-384") == 0) {
		*ossl_name = "secp384r1";
		return 48;
	}
	return 0;
}

/* Unwraps the DER OCTET STRING around an uncompressed point when present. */
static int ec_point_raw(const uint8_t *p, size_t len, size_t coord, const uint8_t **ret)
{
	size_t raw = 1 + 2 * coord;

	if (len == raw && p[0] == 0x04) {
		*ret = p;
		return 0;
	}
	if (raw < 128 && len == raw + 2 && p[0] == 0x04 && p[1] == raw && p[2] == 0x04) {
		*ret = p + 2;
		return 0;
	}
	if (raw >= 128 && raw < 256 && len == raw + 3 && p[0] == 0x04 && p[1] == 0x81 &&
	    p[2] == raw && p[3] == 0x04) {
		*ret = p + 3;
		return 0;
	}
	return -EINVAL;
}

static int ec_point_on_curve(const char *ossl_name, const uint8_t *raw, size_t len)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY_CTX *check = NULL;
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM params[3];
	int r = -EINVAL;

	if (!ctx)
		return -ENOMEM;
	params[0] =
	    OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)ossl_name, 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)raw, len);
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto out;
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (check && EVP_PKEY_public_check(check) == 1)
		r = 0;
out:
	EVP_PKEY_CTX_free(check);
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	return r;
}

int jwk_from_ec_point(const char *crv, const uint8_t *point, size_t len, struct jwk *ret)
{
	const char *ossl_name = NULL;
	const uint8_t *raw;
	size_t coord = curve_coord_len(crv, &ossl_name);
	int r;

	if (coord == 0)
		return -EINVAL;
	r = ec_point_raw(point, len, coord, &raw);
	if (r < 0)
		return r;
	r = ec_point_on_curve(ossl_name, raw, 1 + 2 * coord);
	if (r < 0)
		return r;
	memset(ret, 0, sizeof(*ret));
	ret->kty = JWK_KTY_EC;
	ret->crv = strcmp(crv, "P-256") == 0 ? "P-256" : "P-384";
	ret->coord_len = coord;
	memcpy(ret->x, raw + 1, coord);
	memcpy(ret->y, raw + 1 + coord, coord);
	return 0;
}

int jwk_from_okp_point(const char *crv, const uint8_t *point, size_t len, struct jwk *ret)
{
	const uint8_t *raw = point;

	if (strcmp(crv, "Ed25519") != 0)
		return -EINVAL;
	if (len == 34 && point[0] == 0x04 && point[1] == 32)
		raw = point + 2;
	else if (len != 32)
		return -EINVAL;
	memset(ret, 0, sizeof(*ret));
	ret->kty = JWK_KTY_OKP;
	ret->crv = "Ed25519";
	ret->coord_len = 32;
	memcpy(ret->x, raw, 32);
	return 0;
}

static void strip_zeros(const uint8_t **p, size_t *len)
{
	while (*len > 1 && (*p)[0] == 0) {
		(*p)++;
		(*len)--;
	}
}

int jwk_from_rsa(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len, struct jwk *ret)
{
	strip_zeros(&n, &n_len);
	strip_zeros(&e, &e_len);
	if (n_len == 0 || n_len > JWK_MAX_MODULUS || e_len == 0 || e_len > sizeof(ret->e))
		return -EINVAL;
	memset(ret, 0, sizeof(*ret));
	ret->kty = JWK_KTY_RSA;
	memcpy(ret->n, n, n_len);
	ret->n_len = n_len;
	memcpy(ret->e, e, e_len);
	ret->e_len = e_len;
	return 0;
}

static int set_b64(json_t *obj, const char *name, const uint8_t *v, size_t len)
{
	char buf[2 * JWK_MAX_MODULUS];

	b64url_encode(v, len, buf);
	return json_object_set_new(obj, name, json_string(buf));
}

/* Adds the key members; callers add kid/alg/use around them. */
static int add_key_members(json_t *obj, const struct jwk *key)
{
	if (key->kty == JWK_KTY_OKP) {
		if (json_object_set_new(obj, "crv", json_string(key->crv)) < 0 ||
		    set_b64(obj, "x", key->x, key->coord_len) < 0)
			return -ENOMEM;
		return 0;
	}
	if (key->kty == JWK_KTY_EC) {
		if (json_object_set_new(obj, "crv", json_string(key->crv)) < 0 ||
		    set_b64(obj, "x", key->x, key->coord_len) < 0 ||
		    set_b64(obj, "y", key->y, key->coord_len) < 0)
			return -ENOMEM;
		return 0;
	}
	if (set_b64(obj, "n", key->n, key->n_len) < 0 || set_b64(obj, "e", key->e, key->e_len) < 0)
		return -ENOMEM;
	return 0;
}

static const char *kty_name(enum jwk_kty kty)
{
	return kty == JWK_KTY_EC ? "EC" : kty == JWK_KTY_OKP ? "OKP" : "RSA";
}

int jwk_thumbprint(const struct jwk *key, char *kid)
{
	json_t *obj = json_object();
	unsigned char digest[32];
	char *s = NULL;
	int r = -ENOMEM;

	if (!obj)
		return -ENOMEM;
	if (json_object_set_new(obj, "kty", json_string(kty_name(key->kty))) < 0 ||
	    add_key_members(obj, key) < 0)
		goto out;
	/* Required members only, lexicographic order, no whitespace (RFC 7638 §3.2-3.3). */
	s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	if (!s)
		goto out;
	if (EVP_Digest(s, strlen(s), digest, NULL, EVP_sha256(), NULL) != 1) {
		r = -EIO;
		goto out;
	}
	b64url_encode(digest, sizeof(digest), kid);
	r = 0;
out:
	free(s);
	json_decref(obj);
	return r;
}

json_t *jwk_to_json(const struct jwk *key, const char *kid, enum jws_alg alg)
{
	json_t *obj = json_object();

	if (!obj)
		return NULL;
	if (json_object_set_new(obj, "kid", json_string(kid)) < 0 ||
	    json_object_set_new(obj, "kty", json_string(kty_name(key->kty))) < 0 ||
	    json_object_set_new(obj, "alg", json_string(jws_alg_name(alg))) < 0 ||
	    json_object_set_new(obj, "use", json_string("sig")) < 0 ||
	    add_key_members(obj, key) < 0) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

static int evp_from_ec(const struct jwk *key, EVP_PKEY **ret)
{
	const char *group = strcmp(key->crv, "P-256") == 0 ? "prime256v1" : "secp384r1";
	uint8_t point[1 + 2 * JWK_MAX_COORD];
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	OSSL_PARAM params[3];
	int r = -EINVAL;

	if (!ctx)
		return -ENOMEM;
	point[0] = 0x04;
	memcpy(point + 1, key->x, key->coord_len);
	memcpy(point + 1 + key->coord_len, key->y, key->coord_len);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point,
	                                              1 + 2 * key->coord_len);
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_PKEY_fromdata_init(ctx) > 0 &&
	    EVP_PKEY_fromdata(ctx, ret, EVP_PKEY_PUBLIC_KEY, params) > 0)
		r = 0;
	EVP_PKEY_CTX_free(ctx);
	return r;
}

static int evp_from_rsa(const struct jwk *key, EVP_PKEY **ret)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	BIGNUM *n = BN_bin2bn(key->n, (int)key->n_len, NULL);
	BIGNUM *e = BN_bin2bn(key->e, (int)key->e_len, NULL);
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	int r = -ENOMEM;

	if (!ctx || !n || !e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
	    !(params = OSSL_PARAM_BLD_to_param(bld)))
		goto out;
	r = -EINVAL;
	if (EVP_PKEY_fromdata_init(ctx) > 0 &&
	    EVP_PKEY_fromdata(ctx, ret, EVP_PKEY_PUBLIC_KEY, params) > 0)
		r = 0;
out:
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	EVP_PKEY_CTX_free(ctx);
	return r;
}

int jwk_to_evp(const struct jwk *key, EVP_PKEY **ret)
{
	switch (key->kty) {
	case JWK_KTY_EC:
		return evp_from_ec(key, ret);
	case JWK_KTY_RSA:
		return evp_from_rsa(key, ret);
	case JWK_KTY_OKP:
		*ret = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key->x, key->coord_len);
		return *ret ? 0 : -EINVAL;
	}
	return -EINVAL;
}

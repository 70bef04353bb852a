/* The JWS algorithms as PKCS#11 sees them: key types, curves, mechanisms, and which of the
 * token's mechanisms each algorithm uses (checked once at start-up). */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* DER of the named curves' OIDs, as CKA_EC_PARAMS wants them. */
static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
static const uint8_t oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};

/* The DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2, note 1). */
static const uint8_t digest_info_sha256[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                             0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                             0x01, 0x05, 0x00, 0x04, 0x20};

static const struct alg_info algs[_JWS_ALG_MAX] = {
    [JWS_ES256] = {CKK_EC,
                   CKM_EC_KEY_PAIR_GEN,
                   oid_p256,
                   sizeof(oid_p256),
                   "P-256",
                   EVP_sha256,
                   {{CKM_ECDSA, HSM_INPUT_DIGEST, false, "CKM_ECDSA over a SHA-256 digest"}},
                   1},
    [JWS_ES384] = {CKK_EC,
                   CKM_EC_KEY_PAIR_GEN,
                   oid_p384,
                   sizeof(oid_p384),
                   "P-384",
                   EVP_sha384,
                   {{CKM_ECDSA, HSM_INPUT_DIGEST, false, "CKM_ECDSA over a SHA-384 digest"}},
                   1},
    [JWS_RS256] = {CKK_RSA,
                   CKM_RSA_PKCS_KEY_PAIR_GEN,
                   NULL,
                   0,
                   NULL,
                   EVP_sha256,
                   {{CKM_SHA256_RSA_PKCS, HSM_INPUT_RAW, false, "CKM_SHA256_RSA_PKCS"},
                    {CKM_RSA_PKCS, HSM_INPUT_DIGEST_INFO, false,
                     "CKM_RSA_PKCS over a SHA-256 DigestInfo made here"}},
                   2},
    [JWS_PS256] = {CKK_RSA,
                   CKM_RSA_PKCS_KEY_PAIR_GEN,
                   NULL,
                   0,
                   NULL,
                   EVP_sha256,
                   {{CKM_SHA256_RSA_PKCS_PSS, HSM_INPUT_RAW, true, "CKM_SHA256_RSA_PKCS_PSS"},
                    {CKM_RSA_PKCS_PSS, HSM_INPUT_DIGEST, true,
                     "CKM_RSA_PKCS_PSS over a SHA-256 digest made here"}},
                   2},
    [JWS_EDDSA] = {CKK_EC_EDWARDS,
                   CKM_EC_EDWARDS_KEY_PAIR_GEN,
                   oid_ed25519,
                   sizeof(oid_ed25519),
                   "Ed25519",
                   NULL,
                   {{CKM_EDDSA, HSM_INPUT_RAW, false, "CKM_EDDSA (Ed25519)"}},
                   1},
};

const struct alg_info *hsm_alg_info(enum jws_alg alg)
{
	if ((unsigned)alg >= _JWS_ALG_MAX) {
		hsm_fail_text(-EINVAL, "unknown algorithm");
		return NULL;
	}
	return &algs[alg];
}

static bool mechanism_can(struct hsm *h, CK_MECHANISM_TYPE m, CK_FLAGS flag, unsigned bits)
{
	CK_MECHANISM_INFO mi;

	if (h->f->C_GetMechanismInfo(h->slot, m, &mi) != CKR_OK || !(mi.flags & flag))
		return false;
	/* Key sizes are in bits for RSA; EC modules report curve sizes, which we do not check. */
	return bits == 0 || (bits >= mi.ulMinKeySize && bits <= mi.ulMaxKeySize);
}

int hsm_prepare_alg(struct hsm *h, enum jws_alg alg, unsigned key_bits)
{
	const struct alg_info *ai;

	/* No session: the mechanisms are the slot's, and nothing here can be recovered from. */
	hsm_error_clear();
	if (!(ai = hsm_alg_info(alg)))
		return -EINVAL;
	if (!mechanism_can(h, ai->gen, CKF_GENERATE_KEY_PAIR,
	                   ai->key_type == CKK_RSA ? key_bits : 0))
		return hsm_fail_text(
		    -EOPNOTSUPP, "the token cannot generate %s keys%s (mechanism 0x%lx)",
		    jws_alg_name(alg), ai->key_type == CKK_RSA ? " of that size" : "",
		    (unsigned long)ai->gen);
	/* Signing threads read the plan: once made, it is never written again (reloads). */
	if (h->plans[alg].ready)
		return 0;
	for (size_t i = 0; i < ai->n_ways; i++) {
		EVP_MD *md = NULL;
		if (!mechanism_can(h, ai->ways[i].mech, CKF_SIGN, 0))
			continue;
		if (ai->ways[i].input != HSM_INPUT_RAW &&
		    !(md = EVP_MD_fetch(NULL, EVP_MD_get0_name(ai->digest()), NULL)))
			return hsm_fail_text(-EOPNOTSUPP, "OpenSSL has no %s",
			                     EVP_MD_get0_name(ai->digest()));
		h->plans[alg] = (struct hsm_plan){true, &ai->ways[i], md};
		return 0;
	}
	return hsm_fail_text(-EOPNOTSUPP, "the token has no mechanism to sign %s with",
	                     jws_alg_name(alg));
}

const char *hsm_alg_plan(struct hsm *h, enum jws_alg alg)
{
	if ((unsigned)alg >= _JWS_ALG_MAX || !h->plans[alg].ready)
		return "not prepared";
	return h->plans[alg].way->desc;
}

int hsm_sign_data(const struct hsm_plan *plan, const uint8_t *input, size_t len, uint8_t *buf,
                  size_t buf_size, const uint8_t **ret, size_t *ret_len)
{
	const struct hsm_sign_way *way = plan->way;
	size_t pre = way->input == HSM_INPUT_DIGEST_INFO ? sizeof(digest_info_sha256) : 0;
	unsigned dlen = 0;

	if (way->input == HSM_INPUT_RAW) {
		*ret = input;
		*ret_len = len;
		return 0;
	}
	if (buf_size < pre + EVP_MAX_MD_SIZE)
		return -ENOBUFS;
	memcpy(buf, digest_info_sha256, pre);
	if (EVP_Digest(input, len, buf + pre, &dlen, plan->md, NULL) != 1)
		return hsm_fail_text(-EIO, "digest failed");
	*ret = buf;
	*ret_len = pre + dlen;
	return 0;
}

/* ---- public keys ---- */

static CK_RV read_public(struct hsm *h, CK_SESSION_HANDLE s, const struct alg_info *ai,
                         CK_OBJECT_HANDLE pub, struct jwk *ret, int *err)
{
	uint8_t *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0;
	CK_RV rv;

	if (ai->key_type == CKK_RSA) {
		rv = hsm_get_bytes(h, s, pub, CKA_MODULUS, &a, &alen);
		if (rv == CKR_OK)
			rv = hsm_get_bytes(h, s, pub, CKA_PUBLIC_EXPONENT, &b, &blen);
		if (rv == CKR_OK)
			*err = jwk_from_rsa(a, alen, b, blen, ret);
	} else {
		rv = hsm_get_bytes(h, s, pub, CKA_EC_POINT, &a, &alen);
		if (rv == CKR_OK)
			*err = ai->key_type == CKK_EC ? jwk_from_ec_point(ai->crv, a, alen, ret)
			                              : jwk_from_okp_point(ai->crv, a, alen, ret);
	}
	free(a);
	free(b);
	return rv;
}

/* A read of a public key, and its result. */
struct public_read {
	const struct alg_info *ai;
	CK_OBJECT_HANDLE pub;
	struct jwk *ret;
	int err;
};

static CK_RV public_read_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct public_read *p = ctx;

	p->err = 0;
	return read_public(h, s->handle, p->ai, p->pub, p->ret, &p->err);
}

int hsm_public_jwk(struct hsm *h, const struct hsm_key *key, struct jwk *ret)
{
	struct public_read p = {NULL, key->pub, ret, 0};
	int r;

	hsm_error_clear();
	if (!(p.ai = hsm_alg_info(key->alg)))
		return -EINVAL;
	if ((r = hsm_with_session(h, "reading the public key", public_read_op, &p)) < 0)
		return r;
	if (p.err < 0)
		return hsm_fail_text(p.err, "the token's %s public key is not valid",
		                     jws_alg_name(key->alg));
	if (jws_alg_is_rsa(key->alg) && ret->n_len * 8 < 2048)
		return hsm_fail_text(-EPERM,
		                     "the token's RSA key has %zu bits; below 2048 is refused",
		                     ret->n_len * 8);
	return 0;
}

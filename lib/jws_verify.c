/* Signature verification with OpenSSL, in the exact forms RFC 7518 defines for each alg. */
#include "jws_verify.h"

#include <errno.h>
#include <stdlib.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

/* R||S (RFC 7518 §3.4) -> the DER ECDSA-Sig-Value OpenSSL verifies. */
static int ecdsa_to_der(const uint8_t *sig, size_t len, unsigned char **ret, size_t *ret_len)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, (int)(len / 2), NULL);
	BIGNUM *s = BN_bin2bn(sig + len / 2, (int)(len / 2), NULL);
	int n;

	if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(es);
		return -ENOMEM;
	}
	*ret = NULL;
	n = i2d_ECDSA_SIG(es, ret);
	ECDSA_SIG_free(es);
	if (n <= 0)
		return -ENOMEM;
	*ret_len = (size_t)n;
	return 0;
}

static const EVP_MD *alg_digest(enum jws_alg alg)
{
	switch (alg) {
	case JWS_ES384:
		return EVP_sha384();
	case JWS_EDDSA:
		return NULL; /* Ed25519 hashes internally */
	default:
		return EVP_sha256();
	}
}

int jws_verify(enum jws_alg alg, EVP_PKEY *pkey, const void *input, size_t len, const uint8_t *sig,
               size_t sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char *der = NULL;
	int r = -ENOMEM, ok;

	if (!ctx)
		return -ENOMEM;
	if (jws_ecdsa_sig_len(alg)) {
		if (sig_len != jws_ecdsa_sig_len(alg)) {
			r = -EBADMSG;
			goto out;
		}
		if ((r = ecdsa_to_der(sig, sig_len, &der, &sig_len)) < 0)
			goto out;
		sig = der;
	}
	r = -EINVAL;
	if (EVP_DigestVerifyInit(ctx, &pctx, alg_digest(alg), NULL, pkey) != 1)
		goto out;
	if (alg == JWS_PS256 && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	                         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1 ||
	                         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) != 1))
		goto out;
	ok = EVP_DigestVerify(ctx, sig, sig_len, input, len);
	r = ok == 1 ? 0 : -EBADMSG;
out:
	OPENSSL_free(der);
	EVP_MD_CTX_free(ctx);
	return r;
}

/* Unit tests of lib/jws.c: the exact protected header, the signing input, and a token that an
 * independent OpenSSL verifier accepts. */
#include <errno.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "jws.h"
#include "unit.h"

/* base64url written independently of lib/b64url.c, both ways. */
static void ref_b64url(const uint8_t *in, size_t n, char *out)
{
	int w = EVP_EncodeBlock((unsigned char *)out, in, (int)n);

	while (w > 0 && out[w - 1] == '=')
		w--;
	out[w] = '\0';
	for (int i = 0; i < w; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

/* Returns the decoded length, or -1. out holds at least len bytes. */
static int ref_b64url_decode(const char *in, size_t len, uint8_t *out)
{
	char *std = malloc(len + 4);
	size_t pad = (4 - len % 4) % 4;
	int n;

	if (!std || pad == 3) {
		free(std);
		return -1;
	}
	for (size_t i = 0; i < len; i++)
		std[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	memset(std + len, '=', pad);
	n = EVP_DecodeBlock(out, (unsigned char *)std, (int)(len + pad));
	free(std);
	return n < 0 ? -1 : n - (int)pad;
}

static void test_alg_names(void)
{
	static const char *const names[] = {"ES256", "ES384", "RS256", "PS256", "EdDSA"};
	enum jws_alg a;

	CHECK_INT(_JWS_ALG_MAX, 5);
	for (int i = 0; i < _JWS_ALG_MAX; i++) {
		CHECK_STR(jws_alg_name((enum jws_alg)i), names[i]);
		a = (enum jws_alg)99;
		CHECK_INT(jws_alg_from_name(names[i], &a), 0);
		CHECK_INT(a, i);
	}
	CHECK(jws_alg_name(_JWS_ALG_MAX) == NULL);
	CHECK(jws_alg_name((enum jws_alg) - 1) == NULL);
	a = (enum jws_alg)99;
	CHECK_INT(jws_alg_from_name("es256", &a), -EINVAL);
	CHECK_INT(jws_alg_from_name("EDDSA", &a), -EINVAL);
	CHECK_INT(jws_alg_from_name("ES256 ", &a), -EINVAL);
	CHECK_INT(jws_alg_from_name("", &a), -EINVAL);
	CHECK_INT(jws_alg_from_name("none", &a), -EINVAL);
	CHECK_INT(jws_alg_from_name("HS256", &a), -EINVAL);
	CHECK_INT(a, 99);
}

static void test_sig_len(void)
{
	CHECK_INT(jws_ecdsa_sig_len(JWS_ES256), 64);
	CHECK_INT(jws_ecdsa_sig_len(JWS_ES384), 96);
	CHECK_INT(jws_ecdsa_sig_len(JWS_RS256), 0);
	CHECK_INT(jws_ecdsa_sig_len(JWS_PS256), 0);
	CHECK_INT(jws_ecdsa_sig_len(JWS_EDDSA), 0);
}

/* The signing input must be exactly ref_b64url(header) "." ref_b64url(payload). */
static void check_input(enum jws_alg alg, const char *kid, const char *typ, const char *header,
                        const char *payload, size_t payload_len)
{
	char h64[512], p64[4096], expected[4700];
	char *got = NULL;
	size_t got_len = 0;

	ref_b64url((const uint8_t *)header, strlen(header), h64);
	ref_b64url((const uint8_t *)payload, payload_len, p64);
	snprintf(expected, sizeof(expected), "%s.%s", h64, p64);
	CHECK_INT(jws_signing_input(alg, kid, typ, payload, payload_len, &got, &got_len), 0);
	CHECK_STR(got, expected);
	CHECK_INT(got_len, strlen(expected));
	free(got);
}

static void test_signing_input(void)
{
	char *got = (char *)"untouched";
	size_t got_len = 4242;
	char payload[1000];

	check_input(JWS_ES256, "K", "JWT", "{\"alg\":\"ES256\",\"kid\":\"K\",\"typ\":\"JWT\"}",
	            "{\"sub\":\"a\"}", 11);
	check_input(JWS_ES384, "0nX6-_kid", "at+jwt",
	            "{\"alg\":\"ES384\",\"kid\":\"0nX6-_kid\",\"typ\":\"at+jwt\"}", "{}", 2);
	/* A quote or backslash in typ is escaped, never breaks out of the string. */
	check_input(JWS_ES256, "K", "a\"b\\c",
	            "{\"alg\":\"ES256\",\"kid\":\"K\",\"typ\":\"a\\\"b\\\\c\"}", "{}", 2);
	/* A forward slash is not escaped by default in jansson. */
	check_input(JWS_ES256, "K", "application/jwt",
	            "{\"alg\":\"ES256\",\"kid\":\"K\",\"typ\":\"application/jwt\"}", "{}", 2);
	/* The payload is taken as bytes: only payload_len of them, NULs included. */
	check_input(JWS_ES256, "K", "JWT", "{\"alg\":\"ES256\",\"kid\":\"K\",\"typ\":\"JWT\"}",
	            "{\"a\":1}TRAILING", 7);
	check_input(JWS_ES256, "K", "JWT", "{\"alg\":\"ES256\",\"kid\":\"K\",\"typ\":\"JWT\"}", "",
	            0);
	/* Every payload length mod 3, so every padding case of the payload encoding is hit. */
	for (size_t n = 1; n < sizeof(payload); n += 37) {
		memset(payload, 'p', n);
		check_input(JWS_ES256, "K", "JWT",
		            "{\"alg\":\"ES256\",\"kid\":\"K\",\"typ\":\"JWT\"}", payload, n);
	}

	/* Each thread remembers its last few encoded headers: more keys than it holds, in turn
	 * and twice, the same kid under another alg or typ, and a kid too long to remember. */
	for (int round = 0; round < 2; round++) {
		for (int k = 0; k < 6; k++) {
			char kid[8], header[128];
			snprintf(kid, sizeof(kid), "kid-%d", k);
			snprintf(header, sizeof(header),
			         "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", kid);
			check_input(JWS_ES256, kid, "JWT", header, "{}", 2);
			snprintf(header, sizeof(header),
			         "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"typ\":\"JWT\"}", kid);
			check_input(JWS_EDDSA, kid, "JWT", header, "{}", 2);
			snprintf(header, sizeof(header),
			         "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}", kid);
			check_input(JWS_ES256, kid, "at+jwt", header, "{}", 2);
		}
		char long_kid[100], header[200];
		memset(long_kid, 'L', sizeof(long_kid) - 1);
		long_kid[sizeof(long_kid) - 1] = '\0';
		snprintf(header, sizeof(header),
		         "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", long_kid);
		check_input(JWS_ES256, long_kid, "JWT", header, "{}", 2);
	}

	CHECK_INT(jws_signing_input(JWS_ES256, "", "JWT", "{}", 2, &got, &got_len), -EINVAL);
	CHECK_INT(jws_signing_input(JWS_ES256, NULL, "JWT", "{}", 2, &got, &got_len), -EINVAL);
	CHECK_INT(jws_signing_input(JWS_ES256, "K", "", "{}", 2, &got, &got_len), -EINVAL);
	CHECK_INT(jws_signing_input(JWS_ES256, "K", NULL, "{}", 2, &got, &got_len), -EINVAL);
	CHECK_INT(jws_signing_input(_JWS_ALG_MAX, "K", "JWT", "{}", 2, &got, &got_len), -EINVAL);
	CHECK_INT(jws_signing_input(JWS_ES256, "K", "JWT", NULL, 0, &got, &got_len), -EINVAL);
	/* Text that JSON cannot hold is a bad argument, not a lack of memory. */
	CHECK_INT(jws_signing_input(JWS_ES256, "K", "J\xffT", "{}", 2, &got, &got_len), -EINVAL);
	CHECK_INT(jws_signing_input(JWS_ES256, "K\xc3", "JWT", "{}", 2, &got, &got_len), -EINVAL);
	CHECK_STR(got, "untouched");
	CHECK_INT(got_len, 4242);
}

static void test_compact(void)
{
	static const uint8_t sig[] = {0xfb, 0xff, 0x00, 0x01};
	char *tok = NULL;

	CHECK_INT(jws_compact("aaa.bbb", 7, sig, sizeof(sig), &tok), 0);
	CHECK_STR(tok, "aaa.bbb.-_8AAQ");
	free(tok);
	tok = NULL;
	/* Only input_len bytes of the input are used. */
	CHECK_INT(jws_compact("aaa.bbbXYZ", 7, sig, 1, &tok), 0);
	CHECK_STR(tok, "aaa.bbb.-w");
	free(tok);
	tok = NULL;
	CHECK_INT(jws_compact("aaa.bbb", 7, sig, 0, &tok), 0);
	CHECK_STR(tok, "aaa.bbb.");
	free(tok);
}

/* ECDSA over SHA-256 with OpenSSL; returns the RFC 7518 R||S form. */
static int sign_es256(EVP_PKEY *pkey, const char *msg, size_t len, uint8_t rs[64])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char der[80];
	const unsigned char *p = der;
	size_t der_len = sizeof(der);
	ECDSA_SIG *sig = NULL;
	const BIGNUM *r, *s;
	int ok = -1;

	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) != 1 ||
	    EVP_DigestSign(md, der, &der_len, (const unsigned char *)msg, len) != 1)
		goto out;
	sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (!sig)
		goto out;
	ECDSA_SIG_get0(sig, &r, &s);
	if (BN_bn2binpad(r, rs, 32) != 32 || BN_bn2binpad(s, rs + 32, 32) != 32)
		goto out;
	ok = 0;
out:
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(md);
	return ok;
}

/* Verifies a compact token as a relying party would: split, decode, R||S -> DER, verify. */
static int verify_es256(EVP_PKEY *pkey, const char *token, char *header, size_t header_size,
                        char *payload, size_t payload_size)
{
	const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	uint8_t rs[128], *der = NULL;
	ECDSA_SIG *sig = NULL;
	EVP_MD_CTX *md = NULL;
	int n, der_len, ok = -1;

	if (!d1 || !d2 || strchr(d2 + 1, '.'))
		return -1;
	if ((size_t)(d1 - token) * 3 / 4 + 4 > header_size ||
	    (size_t)(d2 - d1 - 1) * 3 / 4 + 4 > payload_size || strlen(d2 + 1) > 90)
		return -1;
	n = ref_b64url_decode(token, (size_t)(d1 - token), (uint8_t *)header);
	if (n < 0)
		return -1;
	header[n] = '\0';
	n = ref_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), (uint8_t *)payload);
	if (n < 0)
		return -1;
	payload[n] = '\0';
	if (ref_b64url_decode(d2 + 1, strlen(d2 + 1), rs) != 64)
		return -1;
	sig = ECDSA_SIG_new();
	if (!sig || ECDSA_SIG_set0(sig, BN_bin2bn(rs, 32, NULL), BN_bin2bn(rs + 32, 32, NULL)) != 1)
		goto out;
	der_len = i2d_ECDSA_SIG(sig, &der);
	md = EVP_MD_CTX_new();
	if (der_len <= 0 || !md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) != 1)
		goto out;
	if (EVP_DigestVerify(md, der, (size_t)der_len, (const unsigned char *)token,
	                     (size_t)(d2 - token)) == 1)
		ok = 0;
out:
	OPENSSL_free(der);
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(md);
	return ok;
}

static void test_end_to_end(void)
{
	static const char payload[] =
	    "{\"iss\":\"https://login.example.com/main\",\"sub\":\"user-42\","
	    "\"aud\":\"api://orders\",\"iat\":1790000000,\"exp\":1790000900}";
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	char *input = NULL, *token = NULL;
	size_t input_len = 0;
	uint8_t rs[64];
	char header[256], body[512];

	CHECK(pkey != NULL);
	if (!pkey)
		return;
	CHECK_INT(jws_ecdsa_sig_len(JWS_ES256), sizeof(rs));
	CHECK_INT(jws_signing_input(JWS_ES256, "kid-1", "at+jwt", payload, strlen(payload), &input,
	                            &input_len),
	          0);
	if (!input)
		goto out;
	CHECK_INT(sign_es256(pkey, input, input_len, rs), 0);
	CHECK_INT(jws_compact(input, input_len, rs, sizeof(rs), &token), 0);
	if (!token)
		goto out;
	CHECK_INT(strlen(token), input_len + 1 + 86);
	CHECK(strncmp(token, input, input_len) == 0);
	CHECK(strchr(token, '=') == NULL);
	CHECK_INT(verify_es256(pkey, token, header, sizeof(header), body, sizeof(body)), 0);
	CHECK_STR(header, "{\"alg\":\"ES256\",\"kid\":\"kid-1\",\"typ\":\"at+jwt\"}");
	CHECK_STR(body, payload);

	/* The verifier is not a rubber stamp: a changed payload fails. */
	{
		char *bad = strdup(token);
		char *d1 = bad ? strchr(bad, '.') : NULL;
		if (d1) {
			d1[1] = d1[1] == 'A' ? 'B' : 'A';
			CHECK(verify_es256(pkey, bad, header, sizeof(header), body, sizeof(body)) !=
			      0);
		}
		free(bad);
	}
out:
	free(input);
	free(token);
	EVP_PKEY_free(pkey);
}

int main(void)
{
	test_alg_names();
	test_sig_len();
	test_signing_input();
	test_compact();
	test_end_to_end();
	return unit_finish("jws");
}

/* katsign: a test tool for known-answer tests of the daemon's own signing code. It imports a
 * private key given as a JWK into a throwaway token, then signs a JWS signing input with it
 * through hsm_prepare_alg() and hsm_sign(), the very functions tokensignd signs with (the
 * mechanism chosen for the token, the digest or DigestInfo made here, the R||S conversion).
 *
 * Usage: katsign MODULE TOKEN PIN_FILE ALG JWK_FILE SIGNING_INPUT [COUNT]
 *
 *   ALG            ES256 ES384 RS256 PS256 EdDSA
 *   JWK_FILE       a private JWK (RFC 7517/7518/8037): RSA with n e d p q dp dq qi; EC with crv
 *                  x y d; OKP (Ed25519) with crv x d
 *   SIGNING_INPUT  the bytes to sign, as given (BASE64URL(header) "." BASE64URL(payload))
 *   COUNT          how many signatures to make (default 1), one per output line
 *
 * Prints, on stdout, one JSON line {"plan": HOW, "sig": BASE64URL} per signature, where HOW is
 * hsm_alg_plan() ("CKM_SHA256_RSA_PKCS", "CKM_RSA_PKCS over a SHA-256 DigestInfo made here"...).
 * The key is a session object (CKA_TOKEN false): it is gone when the tool exits. It is built
 * into a struct hsm_key by hand: hsm_find_key() rightly refuses an imported key (CKA_LOCAL is
 * false), and the test is about signing, not about key checks.
 *
 * Also: katsign mechanisms MODULE TOKEN PIN_FILE [MECH...] prints one JSON line
 * {"list": [...], "info": {...}}: the token's C_GetMechanismList as "0x..." strings, and for each
 * MECH (a number, 0x hex or decimal) the CKR code of its C_GetMechanismInfo ("0x0" is CKR_OK).
 * The tests use it to check that p11shim hides what they ask it to hide.
 *
 * Exit status: 0 on success; 1 on any error (message on stderr, naming hsm_last_error()). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <p11-kit/pkcs11.h>

#include "b64url.h"
#include "hsm.h"
#include "hsm_internal.h"
#include "jws.h"

/* DER of the curves' OIDs, written here again on purpose (not taken from hsm_algs.c). */
static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
static const uint8_t oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70}; /* 1.3.101.112 */

struct member {
	const char *name;
	CK_ATTRIBUTE_TYPE type;
	uint8_t buf[1024];
	size_t len;
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "katsign: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* The PIN file as the daemon hands it to its helpers: an open descriptor. */
static int pin_fd(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		die("cannot open %s", path);
	return fd;
}

static void member_read(json_t *jwk, struct member *m)
{
	const char *s = json_string_value(json_object_get(jwk, m->name));

	if (!s)
		die("the JWK has no string member '%s'", m->name);
	if (b64url_decode(s, strlen(s), m->buf, sizeof(m->buf), &m->len) < 0 || m->len == 0)
		die("the JWK member '%s' is not base64url", m->name);
}

static int mechanisms(int argc, char **argv)
{
	struct hsm *h = NULL;
	CK_MECHANISM_TYPE list[512];
	CK_ULONG n = 512;
	json_t *out = json_object(), *jl = json_array(), *ji = json_object();
	char buf[32], *text;
	CK_RV rv;

	if (argc < 5)
		die("usage: katsign mechanisms MODULE TOKEN PIN_FILE [MECH...]");
	if (hsm_open(argv[2], argv[3], pin_fd(argv[4]), argv[4], &h) < 0)
		die("hsm_open: %s", hsm_last_error());
	if ((rv = h->f->C_GetMechanismList(h->slot, list, &n)) != CKR_OK)
		die("C_GetMechanismList: 0x%lx", (unsigned long)rv);
	for (CK_ULONG i = 0; i < n; i++) {
		snprintf(buf, sizeof(buf), "0x%lx", (unsigned long)list[i]);
		json_array_append_new(jl, json_string(buf));
	}
	for (int i = 5; i < argc; i++) {
		CK_MECHANISM_INFO mi;
		char key[32];
		rv = h->f->C_GetMechanismInfo(h->slot, strtoul(argv[i], NULL, 0), &mi);
		snprintf(key, sizeof(key), "0x%lx", strtoul(argv[i], NULL, 0));
		snprintf(buf, sizeof(buf), "0x%lx", (unsigned long)rv);
		json_object_set_new(ji, key, json_string(buf));
	}
	json_object_set_new(out, "list", jl);
	json_object_set_new(out, "info", ji);
	text = json_dumps(out, JSON_COMPACT);
	if (!text)
		die("out of memory");
	printf("%s\n", text);
	free(text);
	json_decref(out);
	hsm_close(h);
	return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt;
	CK_ATTRIBUTE tmpl[16] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_TOKEN, (void *)&no, sizeof(no)},
	    {CKA_PRIVATE, (void *)&yes, sizeof(yes)},
	    {CKA_SENSITIVE, (void *)&yes, sizeof(yes)},
	    {CKA_SIGN, (void *)&yes, sizeof(yes)},
	};
	CK_ULONG n_tmpl = 6;
	struct member rsa[] = {
	    {"n", CKA_MODULUS, {0}, 0},          {"e", CKA_PUBLIC_EXPONENT, {0}, 0},
	    {"d", CKA_PRIVATE_EXPONENT, {0}, 0}, {"p", CKA_PRIME_1, {0}, 0},
	    {"q", CKA_PRIME_2, {0}, 0},          {"dp", CKA_EXPONENT_1, {0}, 0},
	    {"dq", CKA_EXPONENT_2, {0}, 0},      {"qi", CKA_COEFFICIENT, {0}, 0},
	};
	struct member d = {"d", CKA_VALUE, {0}, 0};
	enum jws_alg alg;
	unsigned bits = 0;
	long count = 1;
	const char *kty, *crv;
	json_error_t jerr;
	json_t *jwk;
	struct hsm *h = NULL;
	struct hsm_session *s;
	struct hsm_key key;
	CK_OBJECT_HANDLE obj = 0;
	CK_RV rv;
	int r;

	if (argc > 1 && strcmp(argv[1], "mechanisms") == 0)
		return mechanisms(argc, argv);
	if (argc != 7 && argc != 8) {
		fprintf(stderr, "usage: katsign MODULE TOKEN PIN_FILE ALG JWK_FILE SIGNING_INPUT "
		                "[COUNT]\n");
		return 1;
	}
	if (jws_alg_from_name(argv[4], &alg) < 0)
		die("unknown algorithm '%s'", argv[4]);
	if (argc == 8 && ((count = strtol(argv[7], NULL, 10)) < 1 || count > 10000))
		die("bad count '%s'", argv[7]);
	jwk = json_load_file(argv[5], 0, &jerr);
	if (!jwk)
		die("cannot read the JWK: %s", jerr.text);
	kty = json_string_value(json_object_get(jwk, "kty"));
	crv = json_string_value(json_object_get(jwk, "crv"));
	if (!kty)
		die("the JWK has no kty");

	if (jws_alg_is_rsa(alg)) {
		if (strcmp(kty, "RSA") != 0)
			die("%s wants an RSA JWK", argv[4]);
		kt = CKK_RSA;
		for (size_t i = 0; i < sizeof(rsa) / sizeof(rsa[0]); i++) {
			member_read(jwk, &rsa[i]);
			tmpl[n_tmpl++] = (CK_ATTRIBUTE){rsa[i].type, rsa[i].buf, rsa[i].len};
		}
		bits = (unsigned)rsa[0].len * 8;
	} else {
		const uint8_t *oid;
		size_t oid_len;
		if (alg == JWS_EDDSA) {
			if (strcmp(kty, "OKP") != 0 || !crv || strcmp(crv, "Ed25519") != 0)
				die("%s wants an OKP Ed25519 JWK", argv[4]);
			kt = CKK_EC_EDWARDS;
			oid = oid_ed25519;
			oid_len = sizeof(oid_ed25519);
		} else {
			const char *want = alg == JWS_ES256 ? "P-256" : "P-384";
			if (strcmp(kty, "EC") != 0 || !crv || strcmp(crv, want) != 0)
				die("this algorithm wants an EC JWK on %s", want);
			kt = CKK_EC;
			oid = alg == JWS_ES256 ? oid_p256 : oid_p384;
			oid_len = alg == JWS_ES256 ? sizeof(oid_p256) : sizeof(oid_p384);
		}
		member_read(jwk, &d);
		tmpl[n_tmpl++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid, oid_len};
		tmpl[n_tmpl++] = (CK_ATTRIBUTE){CKA_VALUE, d.buf, d.len};
	}

	if ((r = hsm_open(argv[1], argv[2], pin_fd(argv[3]), argv[3], &h)) < 0)
		die("hsm_open: %s", hsm_last_error());
	if ((r = hsm_session_get(h, &s)) < 0)
		die("hsm_session_get: %s", hsm_last_error());
	rv = h->f->C_CreateObject(s->handle, tmpl, n_tmpl, &obj);
	if (rv != CKR_OK)
		die("C_CreateObject of the private key: 0x%lx", (unsigned long)rv);
	memset(&key, 0, sizeof(key));
	key.alg = alg;
	atomic_store(&key.priv, obj);
	if ((r = hsm_prepare_alg(h, alg, bits)) < 0)
		die("hsm_prepare_alg: %s", hsm_last_error());

	for (long i = 0; i < count; i++) {
		uint8_t sig[HSM_MAX_SIG];
		char out[2 * HSM_MAX_SIG];
		size_t slen = 0;
		if ((r = hsm_sign(h, &key, (const uint8_t *)argv[6], strlen(argv[6]), sig,
		                  sizeof(sig), &slen)) < 0)
			die("hsm_sign: %s", hsm_last_error());
		b64url_encode(sig, slen, out);
		json_t *line = json_pack("{s:s, s:s}", "plan", hsm_alg_plan(h, alg), "sig", out);
		char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
		if (!text)
			die("out of memory");
		printf("%s\n", text);
		free(text);
		json_decref(line);
	}
	h->f->C_DestroyObject(s->handle, obj);
	hsm_close(h);
	json_decref(jwk);
	return fflush(stdout) == 0 ? 0 : 1;
}

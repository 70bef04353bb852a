/* Keys and signatures in the token: key templates and attribute checks, lookup by CKA_ID,
 * generation, C_Sign. */
#include "hsm.h"
#include "hsm_internal.h"
#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

/* Finds the single private object of class with CKA_ID id. */
static CK_RV find_by_id(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                        const uint8_t id[HSM_ID_LEN], CK_OBJECT_HANDLE *ret, CK_ULONG *ret_n)
{
	CK_BBOOL priv = CK_TRUE;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_ID, (void *)id, HSM_ID_LEN},
	    {CKA_PRIVATE, &priv, sizeof(priv)},
	};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n = 0;
	CK_RV rv;

	/* Public objects are never ours: anyone may make one without the PIN. */
	rv = h->f->C_FindObjectsInit(s, tmpl, 3);
	if (rv != CKR_OK)
		return rv;
	rv = h->f->C_FindObjects(s, found, 2, &n);
	h->f->C_FindObjectsFinal(s);
	if (rv == CKR_OK && n > 0)
		*ret = found[0];
	*ret_n = n;
	return rv;
}

/* The attributes a private key that may sign must have (docs/design.md, "State lives in the
 * token"). */
static const struct private_rule {
	CK_ATTRIBUTE_TYPE type;
	const char *name;
	CK_BBOOL want;
} private_rules[] = {
    {CKA_TOKEN, "CKA_TOKEN", CK_TRUE},
    {CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE},
    {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE},
    {CKA_SIGN, "CKA_SIGN", CK_TRUE},
    {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE},
    {CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", CK_TRUE},
    {CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", CK_TRUE},
    {CKA_LOCAL, "CKA_LOCAL", CK_TRUE},
    {CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE},
    {CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE},
    {CKA_DERIVE, "CKA_DERIVE", CK_FALSE},
};
#define N_PRIVATE_RULES (sizeof(private_rules) / sizeof(private_rules[0]))

/* A key that must never be used: -EPERM, the reason recorded when record. */
static int type_refused(CK_KEY_TYPE kt, bool record)
{
	if (!record)
		return -EPERM;
	return hsm_fail_text(-EPERM, "key type 0x%lx does not match the algorithm",
	                     (unsigned long)kt);
}

static int rule_refused(size_t i, CK_BBOOL v, bool record)
{
	if (!record)
		return -EPERM;
	return hsm_fail_text(-EPERM, "private key has %s %s; it must never be used",
	                     private_rules[i].name, v ? "true" : "false");
}

/* One attribute per call: a missing one fails only its own call, and fails closed. */
static CK_RV check_private_each(struct hsm *h, struct hsm_session *s, CK_OBJECT_HANDLE obj,
                                const struct alg_info *ai, bool record, int *err)
{
	CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
	CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof(kt)};
	CK_RV rv;

	rv = h->f->C_GetAttributeValue(s->handle, obj, &a, 1);
	if (rv != CKR_OK)
		return hsm_called(s, "C_GetAttributeValue(CKA_KEY_TYPE)", rv);
	if (kt != ai->key_type) {
		*err = type_refused(kt, record);
		return CKR_OK;
	}
	for (size_t i = 0; i < N_PRIVATE_RULES; i++) {
		CK_BBOOL v = !private_rules[i].want;
		CK_ATTRIBUTE b = {private_rules[i].type, &v, sizeof(v)};
		rv = h->f->C_GetAttributeValue(s->handle, obj, &b, 1);
		if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
			return hsm_called(s, "C_GetAttributeValue", rv);
		if (rv != CKR_OK || v != private_rules[i].want) {
			*err = rule_refused(i, v, record);
			return CKR_OK;
		}
	}
	return CKR_OK;
}

CK_RV hsm_check_private(struct hsm *h, struct hsm_session *s, CK_OBJECT_HANDLE obj,
                        const struct alg_info *ai, bool record, int *err)
{
	CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
	CK_BBOOL v[N_PRIVATE_RULES];
	CK_ATTRIBUTE a[1 + N_PRIVATE_RULES] = {{CKA_KEY_TYPE, &kt, sizeof(kt)}};
	CK_RV rv;

	*err = 0;
	for (size_t i = 0; i < N_PRIVATE_RULES; i++) {
		v[i] = !private_rules[i].want;
		a[1 + i] = (CK_ATTRIBUTE){private_rules[i].type, &v[i], sizeof(v[i])};
	}
	/* The whole template in one call. A token answers CKR_ATTRIBUTE_TYPE_INVALID (or
	 * _SENSITIVE) for the whole call when one attribute is missing, and any other answer may
	 * need its own message: the slow path then finds and names the culprit. */
	rv = h->f->C_GetAttributeValue(s->handle, obj, a, 1 + N_PRIVATE_RULES);
	if (rv != CKR_OK || a[0].ulValueLen != sizeof(kt))
		return check_private_each(h, s, obj, ai, record, err);
	for (size_t i = 0; i < N_PRIVATE_RULES; i++)
		if (a[1 + i].ulValueLen != sizeof(v[i]))
			return check_private_each(h, s, obj, ai, record, err);
	if (kt != ai->key_type)
		*err = type_refused(kt, record);
	for (size_t i = 0; i < N_PRIVATE_RULES && *err == 0; i++)
		if (v[i] != private_rules[i].want)
			*err = rule_refused(i, v[i], record);
	return CKR_OK;
}

/* Searches both halves of the key pair id: the first of each class and how many there are. */
static CK_RV find_pair(struct hsm *h, CK_SESSION_HANDLE s, const uint8_t id[HSM_ID_LEN],
                       CK_OBJECT_HANDLE *priv, CK_OBJECT_HANDLE *pub, CK_ULONG *n_priv,
                       CK_ULONG *n_pub)
{
	CK_RV rv = find_by_id(h, s, CKO_PRIVATE_KEY, id, priv, n_priv);

	if (rv == CKR_OK)
		rv = find_by_id(h, s, CKO_PUBLIC_KEY, id, pub, n_pub);
	return rv;
}

/* A lookup of a key pair by its CKA_ID, and its result. */
struct find {
	const uint8_t *id;
	enum jws_alg alg;
	struct hsm_key *ret;
	int err;
};

static CK_RV find_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct find *f = ctx;
	CK_OBJECT_HANDLE priv = 0, pub = 0;
	CK_ULONG n_priv = 0, n_pub = 0;
	CK_RV rv = hsm_require_login(h, s);

	f->err = 0;
	if (rv == CKR_OK)
		rv = find_pair(h, s->handle, f->id, &priv, &pub, &n_priv, &n_pub);
	if (rv != CKR_OK)
		return rv;
	if ((f->err = hsm_pair_count_check(n_priv, n_pub)) < 0)
		return CKR_OK;
	return hsm_key_accept(h, s, priv, pub, f->id, f->alg, f->ret, &f->err);
}

/* hsm_find_key() without clearing the thread's error: hsm_sign() finds a key again with it. */
static int key_find(struct hsm *h, const uint8_t id[HSM_ID_LEN], enum jws_alg alg,
                    struct hsm_key *ret)
{
	struct find f = {id, alg, ret, 0};
	int r;

	if (!hsm_alg_info(alg))
		return -EINVAL;
	r = hsm_with_session(h, "C_FindObjects", find_op, &f);
	return r < 0 ? r : f.err;
}

int hsm_find_key(struct hsm *h, const uint8_t id[HSM_ID_LEN], enum jws_alg alg, struct hsm_key *ret)
{
	hsm_error_clear();
	return key_find(h, id, alg, ret);
}

/* The curve of an EC or Edwards key object: the algorithm's own, byte for byte. RSA keys have
 * no curve (their size is checked on the public half, hsm_public_jwk()). */
static CK_RV check_curve(struct hsm *h, struct hsm_session *s, CK_OBJECT_HANDLE obj,
                         const struct alg_info *ai, const char *half, int *err)
{
	uint8_t *params = NULL;
	size_t len = 0;
	CK_RV rv;
	bool same;

	if (!ai->params)
		return CKR_OK;
	rv = hsm_get_bytes(h, s->handle, obj, CKA_EC_PARAMS, &params, &len);
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
		return hsm_called(s, "C_GetAttributeValue(CKA_EC_PARAMS)", rv);
	same = rv == CKR_OK && len == ai->params_len && memcmp(params, ai->params, len) == 0;
	free(params);
	if (!same)
		*err = hsm_fail_text(-EPERM, "the %s half is not on the algorithm's curve", half);
	return CKR_OK;
}

/* The public half must be as we make it: a private token object of the algorithm's key type.
 * Returns the token's error, or CKR_OK with *err 0 or -EPERM (recorded). */
static CK_RV check_public(struct hsm *h, struct hsm_session *s, CK_OBJECT_HANDLE obj,
                          const struct alg_info *ai, int *err)
{
	CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
	CK_BBOOL token = CK_FALSE, priv = CK_FALSE;
	CK_ATTRIBUTE a[] = {{CKA_KEY_TYPE, &kt, sizeof(kt)},
	                    {CKA_TOKEN, &token, sizeof(token)},
	                    {CKA_PRIVATE, &priv, sizeof(priv)}};
	CK_RV rv = h->f->C_GetAttributeValue(s->handle, obj, a, 3);

	*err = 0;
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
		return hsm_called(s, "C_GetAttributeValue", rv);
	if (rv != CKR_OK || kt != ai->key_type || token != CK_TRUE || priv != CK_TRUE) {
		*err = hsm_fail_text(-EPERM, "the public half is not a private token object of "
		                             "the algorithm's key type");
		return CKR_OK;
	}
	return check_curve(h, s, obj, ai, "public", err);
}

CK_RV hsm_key_accept(struct hsm *h, struct hsm_session *s, CK_OBJECT_HANDLE priv,
                     CK_OBJECT_HANDLE pub, const uint8_t id[HSM_ID_LEN], enum jws_alg alg,
                     struct hsm_key *ret, int *err)
{
	const struct alg_info *ai = hsm_alg_info(alg);
	/* The private half's curve is not compared: SoftHSM does not keep an Ed25519 private key's
	 * CKA_EC_PARAMS as generated. That it belongs to the public half is proven by a signature
	 * (custody.c, pair_matches()). */
	CK_RV rv = hsm_check_private(h, s, priv, ai, true, err);

	if (rv == CKR_OK && *err == 0)
		rv = check_public(h, s, pub, ai, err);
	if (rv != CKR_OK || *err < 0)
		return rv;
	memcpy(ret->id, id, HSM_ID_LEN);
	ret->alg = alg;
	atomic_store(&ret->priv, priv);
	ret->pub = pub;
	return CKR_OK;
}

/* A check of one half of a key pair, and its verdict. */
struct half {
	CK_OBJECT_HANDLE handle;
	bool private_key;
	const struct alg_info *ai;
	int err;
};

static CK_RV check_half_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct half *c = ctx;

	return c->private_key ? hsm_check_private(h, s, c->handle, c->ai, true, &c->err)
	                      : check_public(h, s, c->handle, c->ai, &c->err);
}

int hsm_key_check_half(struct hsm *h, unsigned long handle, bool private_key, enum jws_alg alg)
{
	struct half c = {handle, private_key, NULL, 0};
	int r;

	hsm_error_clear();
	if (!(c.ai = hsm_alg_info(alg)))
		return -EINVAL;
	r = hsm_with_session(h, "C_GetAttributeValue", check_half_op, &c);
	return r < 0 ? r : c.err;
}

static CK_RV generate_pair(struct hsm *h, CK_SESSION_HANDLE s, const struct alg_info *ai,
                           unsigned key_bits, const char *label, const uint8_t id[HSM_ID_LEN],
                           CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
	static const uint8_t f4[] = {0x01, 0x00, 0x01}; /* e = 65537 */
	CK_MECHANISM mech = {ai->gen, NULL, 0};
	CK_ULONG label_len = strlen(label), bits = key_bits;
	CK_ATTRIBUTE pub_tmpl[] = {
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},
	    /* Private too: a PIN-less session must not even see which keys we hold. */
	    {CKA_PRIVATE, (void *)&yes, sizeof(yes)},
	    {CKA_VERIFY, (void *)&yes, sizeof(yes)},
	    {CKA_ENCRYPT, (void *)&no, sizeof(no)},
	    {CKA_WRAP, (void *)&no, sizeof(no)},
	    {CKA_LABEL, (void *)label, label_len},
	    {CKA_ID, (void *)id, HSM_ID_LEN},
	    /* The key type's own parameters go last: a curve, or size and exponent. */
	    {CKA_EC_PARAMS, (void *)ai->params, ai->params_len},
	    {CKA_PUBLIC_EXPONENT, (void *)f4, sizeof(f4)},
	};
	CK_ATTRIBUTE priv_tmpl[] = {
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},     {CKA_PRIVATE, (void *)&yes, sizeof(yes)},
	    {CKA_SENSITIVE, (void *)&yes, sizeof(yes)}, {CKA_SIGN, (void *)&yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, (void *)&no, sizeof(no)}, {CKA_DECRYPT, (void *)&no, sizeof(no)},
	    {CKA_UNWRAP, (void *)&no, sizeof(no)},      {CKA_DERIVE, (void *)&no, sizeof(no)},
	    {CKA_LABEL, (void *)label, label_len},      {CKA_ID, (void *)id, HSM_ID_LEN},
	};
	CK_ULONG n_pub = sizeof(pub_tmpl) / sizeof(pub_tmpl[0]);

	if (ai->key_type == CKK_RSA) {
		pub_tmpl[n_pub - 2] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
	} else {
		n_pub--; /* no exponent */
	}
	return h->f->C_GenerateKeyPair(s, &mech, pub_tmpl, n_pub, priv_tmpl,
	                               sizeof(priv_tmpl) / sizeof(priv_tmpl[0]), pub, priv);
}

/* Every later use finds the pair by its CKA_ID: a fresh pair must be found that way, as these very
 * objects, before it is recorded. SoftHSM's file store, with another process writing the token,
 * has been seen to lose a fresh object's template attributes (CKA_ID and label among them). */
static int check_findable(struct hsm *h, CK_SESSION_HANDLE s, const uint8_t id[HSM_ID_LEN],
                          CK_OBJECT_HANDLE priv, CK_OBJECT_HANDLE pub)
{
	CK_OBJECT_HANDLE p = 0, q = 0;
	CK_ULONG n_priv = 0, n_pub = 0;
	CK_RV rv = find_pair(h, s, id, &p, &q, &n_priv, &n_pub);

	if (rv != CKR_OK)
		return hsm_fail("C_FindObjects", rv, hsm_ckr_errno(rv));
	if (n_priv != 1 || n_pub != 1 || p != priv || q != pub)
		return hsm_fail_text(-EIO, "the new key pair is not found again by its CKA_ID");
	return 0;
}

/* Removes a fresh pair that failed its check, by handle only: these are the objects the token
 * just made for us. (SoftHSM's file store, with another process writing the token at the same
 * moment, can hand back a private key that reads with its default attributes only.) */
static void discard_pair(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE pub,
                         CK_OBJECT_HANDLE priv)
{
	hsm_destroy_handle(h, s, priv);
	hsm_destroy_handle(h, s, pub);
}

/* A generation of a key pair, and its result. */
struct generation {
	const struct alg_info *ai;
	unsigned key_bits;
	const char *label;
	uint8_t id[HSM_ID_LEN];
	CK_OBJECT_HANDLE pub, priv;
	int err;
};

/* Checks a fresh pair: 0, or -EAGAIN (the reason recorded) after the pair was destroyed. */
static int check_fresh(struct hsm *h, struct hsm_session *s, struct generation *g)
{
	int err = 0;
	CK_RV rv = hsm_check_private(h, s, g->priv, g->ai, true, &err);

	if (rv != CKR_OK)
		err = hsm_fail(s->call ? s->call : "C_GetAttributeValue", rv, hsm_ckr_errno(rv));
	if (err == 0)
		err = check_findable(h, s->handle, g->id, g->priv, g->pub);
	if (err == 0)
		return 0;
	discard_pair(h, s->handle, g->pub, g->priv);
	return -EAGAIN;
}

static CK_RV generate_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct generation *g = ctx;
	CK_RV rv = hsm_require_login(h, s);

	if (rv == CKR_OK)
		rv = generate_pair(h, s->handle, g->ai, g->key_bits, g->label, g->id, &g->pub,
		                   &g->priv);
	if (rv != CKR_OK)
		return rv;
	/* The pair exists: a failure from here on is not tried again, which would make another. */
	g->err = check_fresh(h, s, g);
	return CKR_OK;
}

int hsm_generate_key(struct hsm *h, enum jws_alg alg, unsigned key_bits, const char *label,
                     struct hsm_key *ret)
{
	struct generation g = {.key_bits = key_bits, .label = label};
	int r;

	hsm_error_clear();
	if (!(g.ai = hsm_alg_info(alg)))
		return -EINVAL;
	if (RAND_bytes(g.id, sizeof(g.id)) != 1)
		return hsm_fail_text(-EIO, "no randomness for a key id");
	hsm_note_write(h);
	if ((r = hsm_with_session(h, "C_GenerateKeyPair", generate_op, &g)) < 0)
		return r;
	if (g.err < 0)
		return g.err;
	memcpy(ret->id, g.id, HSM_ID_LEN);
	ret->alg = alg;
	atomic_store(&ret->priv, g.priv);
	ret->pub = g.pub;
	return 0;
}

/* ---- signing ---- */

static CK_RV sign_once(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
                       const struct hsm_sign_way *way, const uint8_t *data, size_t dlen,
                       uint8_t *sig, CK_ULONG *sig_len)
{
	CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
	CK_MECHANISM mech = {way->mech, way->pss ? &pss : NULL, way->pss ? sizeof(pss) : 0};
	CK_RV rv = h->f->C_SignInit(s, &mech, key);

	if (rv != CKR_OK)
		return rv;
	return h->f->C_Sign(s, (CK_BYTE_PTR)data, dlen, sig, sig_len);
}

/* One signature and its result. */
struct signature {
	struct hsm_key *key;
	const struct hsm_sign_way *way;
	const uint8_t *data;
	size_t dlen;
	uint8_t *sig;
	size_t sig_size;
	CK_ULONG slen;
	bool copy_retried;
};

static CK_RV sign_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct signature *g = ctx;

	for (;;) {
		CK_OBJECT_HANDLE obj = hsm_copy_handle(h, s, g->key);
		CK_RV rv;

		g->slen = g->sig_size;
		rv = sign_once(h, s->handle, obj, g->way, g->data, g->dlen, g->sig, &g->slen);
		/* A copy that went stale is made again once, from the token key. */
		if ((rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID) &&
		    obj != atomic_load(&g->key->priv) && !g->copy_retried) {
			hsm_copy_forget(s, g->key);
			g->copy_retried = true;
			continue;
		}
		return rv;
	}
}

int hsm_sign(struct hsm *h, struct hsm_key *key, const uint8_t *input, size_t len, uint8_t *sig,
             size_t sig_size, size_t *ret_len)
{
	uint8_t buf[64 + EVP_MAX_MD_SIZE];
	struct signature g = {.key = key, .sig = sig, .sig_size = sig_size};
	int r;

	hsm_error_clear();
	if (!hsm_alg_info(key->alg))
		return -EINVAL;
	if (!h->plans[key->alg].ready)
		return hsm_fail_text(-EOPNOTSUPP, "%s was not prepared", jws_alg_name(key->alg));
	g.way = h->plans[key->alg].way;
	r = hsm_sign_data(&h->plans[key->alg], input, len, buf, sizeof(buf), &g.data, &g.dlen);
	if (r < 0)
		return r;
	for (bool refound = false;; refound = true) {
		struct hsm_key fresh;

		g.copy_retried = false;
		r = hsm_with_session(h, "C_Sign", sign_op, &g);
		if (r != -ESTALE || refound)
			break;
		/* The token forgot our handle (re-inserted, reloaded): find the key again, then
		 * sign with a fresh recovery of its own. */
		if ((r = key_find(h, key->id, key->alg, &fresh)) < 0)
			return r;
		atomic_store(&key->priv, atomic_load(&fresh.priv));
	}
	if (r < 0)
		return r;
	if (jws_ecdsa_sig_len(key->alg) && g.slen != jws_ecdsa_sig_len(key->alg))
		return hsm_fail_text(-EIO, "C_Sign returned %lu bytes, not an R||S signature",
		                     (unsigned long)g.slen);
	*ret_len = g.slen;
	return 0;
}

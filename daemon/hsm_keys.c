/* Keys, records and signatures in the token: templates, attribute checks, C_Sign. */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

/* Finds the single object of class with CKA_ID id. */
static CK_RV find_by_id(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                        const uint8_t id[HSM_ID_LEN], CK_OBJECT_HANDLE *ret, CK_ULONG *ret_n)
{
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_ID, (void *)id, HSM_ID_LEN},
	};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n = 0;
	CK_RV rv;

	rv = h->f->C_FindObjectsInit(s, tmpl, 2);
	if (rv != CKR_OK)
		return rv;
	rv = h->f->C_FindObjects(s, found, 2, &n);
	h->f->C_FindObjectsFinal(s);
	if (rv == CKR_OK && n > 0)
		*ret = found[0];
	*ret_n = n;
	return rv;
}

/* The attributes SPEC §6 demands of a private key that may sign, read back from the token. */
static int check_private_attributes(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                                    const struct alg_info *ai)
{
	struct {
		CK_ATTRIBUTE_TYPE type;
		const char *name;
		CK_BBOOL want;
	} rules[] = {
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
	CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
	CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof(kt)};
	CK_RV rv;

	rv = h->f->C_GetAttributeValue(s, obj, &a, 1);
	if (rv != CKR_OK)
		return hsm_fail("C_GetAttributeValue(CKA_KEY_TYPE)", rv, hsm_ckr_errno(rv));
	if (kt != ai->key_type)
		return hsm_fail_text(-EPERM, "key type 0x%lx does not match the algorithm",
		                     (unsigned long)kt);
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		CK_BBOOL v = !rules[i].want;
		CK_ATTRIBUTE b = {rules[i].type, &v, sizeof(v)};
		rv = h->f->C_GetAttributeValue(s, obj, &b, 1);
		if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
			return hsm_fail("C_GetAttributeValue", rv, hsm_ckr_errno(rv));
		if (rv != CKR_OK || v != rules[i].want)
			return hsm_fail_text(-EPERM, "private key has %s %s; it must never be used",
			                     rules[i].name, v ? "true" : "false");
	}
	return 0;
}

static CK_RV find_pair(struct hsm *h, CK_SESSION_HANDLE s, const uint8_t id[HSM_ID_LEN],
                       CK_OBJECT_HANDLE *priv, CK_OBJECT_HANDLE *pub, int *err)
{
	CK_ULONG n1 = 0, n2 = 0;
	CK_RV rv;

	*err = 0;
	rv = find_by_id(h, s, CKO_PRIVATE_KEY, id, priv, &n1);
	if (rv == CKR_OK)
		rv = find_by_id(h, s, CKO_PUBLIC_KEY, id, pub, &n2);
	if (rv == CKR_OK && (n1 != 1 || n2 != 1))
		*err = hsm_fail_text(n1 == 0 || n2 == 0 ? -ENOENT : -EEXIST,
		                     "key pair: %lu private and %lu public objects with this id",
		                     (unsigned long)n1, (unsigned long)n2);
	return rv;
}

int hsm_find_key(struct hsm *h, const uint8_t id[HSM_ID_LEN], enum jws_alg alg, struct hsm_key *ret)
{
	CK_OBJECT_HANDLE priv = 0, pub = 0;
	struct hsm_session *s;
	struct recovery rc = {0};
	const struct alg_info *ai = hsm_alg_info(alg);
	int r, err = 0;
	CK_RV rv;

	if (!ai)
		return -EINVAL;
	do {
		if ((r = hsm_session_get(h, &s)) < 0)
			return r;
		rv = hsm_require_login(h, s);
		if (rv == CKR_OK)
			rv = find_pair(h, s->handle, id, &priv, &pub, &err);
	} while ((r = hsm_recover(h, s, rv, "C_FindObjects", &rc)) > 0);
	if (r < 0)
		return r;
	if (err < 0)
		return err;
	if ((r = check_private_attributes(h, s->handle, priv, ai)) < 0)
		return r;
	memcpy(ret->id, id, HSM_ID_LEN);
	ret->alg = alg;
	atomic_store(&ret->priv, priv);
	ret->pub = pub;
	return 0;
}

static CK_RV destroy_pair(struct hsm *h, CK_SESSION_HANDLE s, const uint8_t id[HSM_ID_LEN])
{
	CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
	CK_RV rv = CKR_OK;

	for (size_t i = 0; i < 2 && rv == CKR_OK; i++) {
		CK_OBJECT_HANDLE obj;
		CK_ULONG n = 0;
		rv = find_by_id(h, s, classes[i], id, &obj, &n);
		if (rv == CKR_OK && n > 0)
			rv = h->f->C_DestroyObject(s, obj);
		/* Another instance on the token was first: the object is gone, as wanted (SoftHSM
		 * may also fail while the object's file vanishes under it: look again). */
		if (rv == CKR_OBJECT_HANDLE_INVALID ||
		    (rv == CKR_FUNCTION_FAILED &&
		     find_by_id(h, s, classes[i], id, &obj, &n) == CKR_OK && n == 0))
			rv = CKR_OK;
	}
	return rv;
}

int hsm_destroy_key(struct hsm *h, const uint8_t id[HSM_ID_LEN])
{
	struct hsm_session *s;
	struct recovery rc = {0};
	CK_RV rv;
	int r;

	do {
		if ((r = hsm_session_get(h, &s)) < 0)
			return r;
		rv = hsm_require_login(h, s);
		if (rv == CKR_OK)
			rv = destroy_pair(h, s->handle, id);
	} while ((r = hsm_recover(h, s, rv, "C_DestroyObject", &rc)) > 0);
	return r;
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
	    {CKA_PRIVATE, (void *)&no, sizeof(no)},
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
	int err = 0;
	CK_RV rv = find_pair(h, s, id, &p, &q, &err);

	if (rv != CKR_OK)
		return hsm_fail("C_FindObjects", rv, hsm_ckr_errno(rv));
	if (err < 0 || p != priv || q != pub)
		return hsm_fail_text(-EIO, "the new key pair is not found again by its CKA_ID");
	return 0;
}

/* Removes a fresh pair that failed its check. By handle first: SoftHSM's file store, with another
 * process writing the token at the same moment, can hand back a private key that reads with its
 * default attributes only (no CKA_ID, no label), which no search by id would ever find again. */
static void discard_pair(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE pub,
                         CK_OBJECT_HANDLE priv, const uint8_t id[HSM_ID_LEN])
{
	h->f->C_DestroyObject(s, priv);
	h->f->C_DestroyObject(s, pub);
	hsm_destroy_key(h, id);
}

int hsm_generate_key(struct hsm *h, enum jws_alg alg, unsigned key_bits, const char *label,
                     struct hsm_key *ret)
{
	const struct alg_info *ai = hsm_alg_info(alg);
	CK_OBJECT_HANDLE pub = 0, priv = 0;
	uint8_t id[HSM_ID_LEN];
	struct hsm_session *s;
	struct recovery rc = {0};
	CK_RV rv;
	int r;

	if (!ai)
		return -EINVAL;
	if (RAND_bytes(id, sizeof(id)) != 1)
		return hsm_fail_text(-EIO, "no randomness for a key id");
	do {
		if ((r = hsm_session_get(h, &s)) < 0)
			return r;
		rv = hsm_require_login(h, s);
		if (rv == CKR_OK)
			rv = generate_pair(h, s->handle, ai, key_bits, label, id, &pub, &priv);
	} while ((r = hsm_recover(h, s, rv, "C_GenerateKeyPair", &rc)) > 0);
	if (r < 0)
		return r;
	hsm_rewrite_label(h, s->handle, pub, label);
	hsm_rewrite_label(h, s->handle, priv, label);
	r = check_private_attributes(h, s->handle, priv, ai);
	if (r == 0)
		r = check_findable(h, s->handle, id, priv, pub);
	if (r < 0) {
		char why[160];
		snprintf(why, sizeof(why), "%s", hsm_last_error());
		discard_pair(h, s->handle, pub, priv, id);
		hsm_fail_text(r, "%s", why);
		return r;
	}
	memcpy(ret->id, id, HSM_ID_LEN);
	ret->alg = alg;
	atomic_store(&ret->priv, priv);
	ret->pub = pub;
	return 0;
}

CK_RV hsm_get_bytes(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                    CK_ATTRIBUTE_TYPE type, uint8_t **ret, size_t *ret_len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	CK_RV rv = h->f->C_GetAttributeValue(s, obj, &a, 1);

	if (rv != CKR_OK)
		return rv;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > 1 << 20)
		return CKR_ATTRIBUTE_VALUE_INVALID;
	a.pValue = malloc(a.ulValueLen + 1);
	if (!a.pValue)
		return CKR_HOST_MEMORY;
	rv = h->f->C_GetAttributeValue(s, obj, &a, 1);
	if (rv != CKR_OK) {
		free(a.pValue);
		return rv;
	}
	((uint8_t *)a.pValue)[a.ulValueLen] = 0;
	*ret = a.pValue;
	*ret_len = a.ulValueLen;
	return CKR_OK;
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

int hsm_sign(struct hsm *h, struct hsm_key *key, const uint8_t *input, size_t len, uint8_t *sig,
             size_t sig_size, size_t *ret_len)
{
	const struct alg_info *ai = hsm_alg_info(key->alg);
	uint8_t buf[64 + EVP_MAX_MD_SIZE];
	const uint8_t *data;
	size_t dlen;
	struct hsm_session *s;
	bool refound = false;
	CK_ULONG slen;
	int r;

	if (!ai)
		return -EINVAL;
	if (!h->plans[key->alg].ready)
		return hsm_fail_text(-EOPNOTSUPP, "%s was not prepared", jws_alg_name(key->alg));
	r = hsm_sign_data(ai, h->plans[key->alg].way, input, len, buf, sizeof(buf), &data, &dlen);
	if (r < 0)
		return r;
	for (;;) {
		struct recovery rc = {0};
		CK_RV rv;
		do {
			if ((r = hsm_session_get(h, &s)) < 0)
				return r;
			slen = sig_size;
			rv = sign_once(h, s->handle, atomic_load(&key->priv),
			               h->plans[key->alg].way, data, dlen, sig, &slen);
		} while ((r = hsm_recover(h, s, rv, "C_Sign", &rc)) > 0);
		if (r != -ESTALE || refound)
			break;
		/* The token forgot our handle (re-inserted, reloaded): find the key again. */
		refound = true;
		struct hsm_key fresh;
		if ((r = hsm_find_key(h, key->id, key->alg, &fresh)) < 0)
			return r;
		atomic_store(&key->priv, atomic_load(&fresh.priv));
	}
	if (r < 0)
		return r;
	if (jws_ecdsa_sig_len(key->alg) && slen != jws_ecdsa_sig_len(key->alg))
		return hsm_fail_text(-EIO, "C_Sign returned %lu bytes, not an R||S signature",
		                     (unsigned long)slen);
	*ret_len = slen;
	return 0;
}

/* ---- listing ---- */

static bool id_listed(uint8_t (*ids)[HSM_ID_LEN], size_t n, const uint8_t *id)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(ids[i], id, HSM_ID_LEN) == 0)
			return true;
	return false;
}

/* Appends the ids of one class of key objects labelled tokensign:... to ids. */
static CK_RV list_class_ids(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                            uint8_t (**ids)[HSM_ID_LEN], size_t *n)
{
	CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}};
	CK_OBJECT_HANDLE objs[64];
	CK_ULONG got = 0;
	CK_RV rv = h->f->C_FindObjectsInit(s, tmpl, 1);

	while (rv == CKR_OK && (rv = h->f->C_FindObjects(s, objs, 64, &got)) == CKR_OK && got) {
		for (CK_ULONG i = 0; i < got; i++) {
			char label[64] = {0};
			uint8_t id[HSM_ID_LEN + 1];
			CK_ATTRIBUTE a[] = {{CKA_LABEL, label, sizeof(label) - 1},
			                    {CKA_ID, id, sizeof(id)}};
			uint8_t(*grown)[HSM_ID_LEN];

			if (h->f->C_GetAttributeValue(s, objs[i], a, 2) != CKR_OK ||
			    a[1].ulValueLen != HSM_ID_LEN ||
			    strncmp(label, "tokensign:", 10) != 0 || id_listed(*ids, *n, id))
				continue;
			grown = realloc(*ids, (*n + 1) * sizeof(**ids));
			if (!grown) {
				rv = CKR_HOST_MEMORY;
				break;
			}
			*ids = grown;
			memcpy((*ids)[(*n)++], id, HSM_ID_LEN);
		}
	}
	h->f->C_FindObjectsFinal(s);
	return rv;
}

int hsm_list_key_ids(struct hsm *h, uint8_t (**ret)[HSM_ID_LEN], size_t *ret_n)
{
	struct hsm_session *s;
	struct recovery rc = {0};
	uint8_t(*ids)[HSM_ID_LEN] = NULL;
	size_t n = 0;
	CK_RV rv;
	int r;

	do {
		if ((r = hsm_session_get(h, &s)) < 0)
			return r;
		free(ids);
		ids = NULL;
		n = 0;
		rv = hsm_require_login(h, s);
		if (rv == CKR_OK)
			rv = list_class_ids(h, s->handle, CKO_PRIVATE_KEY, &ids, &n);
		if (rv == CKR_OK)
			rv = list_class_ids(h, s->handle, CKO_PUBLIC_KEY, &ids, &n);
	} while ((r = hsm_recover(h, s, rv, "listing key objects", &rc)) > 0);
	if (r < 0) {
		free(ids);
		return r;
	}
	*ret = ids;
	*ret_n = n;
	return 0;
}

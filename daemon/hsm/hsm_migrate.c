/* The one-time migration of key pairs made before public-key halves were private objects. */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#define OUR_LABEL "tokensign:"

/* Whether the private key obj has every attribute we give ours, for some algorithm of its type:
 * a key planted with a weaker template gets nothing from us. Only a question: a key that fails
 * (or that the token cannot read) records no error, it is simply not ours. */
static bool private_key_ours(struct hsm *h, struct hsm_session *s, CK_OBJECT_HANDLE obj)
{
	for (int alg = 0; alg < _JWS_ALG_MAX; alg++) {
		const struct alg_info *ai = hsm_alg_info((enum jws_alg)alg);
		int err = 0;
		if (ai && hsm_check_private(h, s, obj, ai, false, &err) == CKR_OK && err == 0)
			return true;
	}
	return false;
}

/* Whether e, a public public-key object labelled ours, is the public half of exactly one private
 * key of ours (same id, same label) that has no private public half yet, and the only public
 * object doing so: then it is the half an earlier release made, and it may be migrated. */
static bool legacy_half(struct hsm *h, struct hsm_session *s, const struct hsm_key_index *ix,
                        const struct hsm_key_object *e)
{
	const struct hsm_key_object *priv = NULL;
	size_t n_priv = 0, n_pub = 0;

	if (e->private_key || e->private_obj || !e->has_id ||
	    strncmp(e->label, OUR_LABEL, strlen(OUR_LABEL)) != 0)
		return false;
	for (size_t i = hsm_key_index_first(ix, e->id); i < hsm_key_index_size(ix); i++) {
		const struct hsm_key_object *o = hsm_key_index_get(ix, i);
		if (memcmp(o->id, e->id, HSM_ID_LEN) != 0)
			break;
		if (o->private_key && o->private_obj && strcmp(o->label, e->label) == 0)
			n_priv++, priv = o;
		else if (!o->private_key)
			n_pub++; /* e itself, a private half already made, or a stranger */
	}
	return n_priv == 1 && n_pub == 1 && private_key_ours(h, s, priv->handle);
}

/* The migration of one object of the index, and its result. */
struct migration {
	const struct hsm_key_index *ix;
	const struct hsm_key_object *e;
	bool migrated;
	int err;
};

/* Copies the public object as a private one, then destroys the original. A crash in between
 * leaves both: the private copy is used and the public original stays as a foreign object. Only
 * a failed copy is the wrapper's to recover from: once the copy exists, trying again would make
 * a second one, so a later failure is recorded here. */
static CK_RV migrate_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct migration *m = ctx;
	CK_BBOOL yes = CK_TRUE, priv = CK_FALSE;
	CK_ATTRIBUTE tmpl = {CKA_PRIVATE, &yes, sizeof(yes)};
	CK_ATTRIBUTE check = {CKA_PRIVATE, &priv, sizeof(priv)};
	CK_OBJECT_HANDLE copy = 0;
	CK_RV rv;

	m->migrated = false;
	m->err = 0;
	if (!legacy_half(h, s, m->ix, m->e))
		return CKR_OK;
	hsm_note_write(h);
	rv = h->f->C_CopyObject(s->handle, m->e->handle, &tmpl, 1, &copy);
	if (rv != CKR_OK)
		return rv;
	rv = h->f->C_GetAttributeValue(s->handle, copy, &check, 1);
	if (rv == CKR_OK && priv != CK_TRUE) {
		h->f->C_DestroyObject(s->handle, copy);
		m->err = hsm_fail_text(-EIO, "migrating a public-key half: the token's copy of it "
		                             "is not private");
		return CKR_OK;
	}
	if (rv != CKR_OK) {
		m->err = hsm_fail("migrating a public-key half (C_GetAttributeValue)", rv,
		                  hsm_ckr_errno(rv));
		return CKR_OK;
	}
	rv = h->f->C_DestroyObject(s->handle, m->e->handle);
	if (rv != CKR_OK)
		m->err = hsm_fail("migrating a public-key half (C_DestroyObject)", rv,
		                  hsm_ckr_errno(rv));
	m->migrated = m->err == 0;
	return CKR_OK;
}

int hsm_migrate_public_halves(struct hsm *h, size_t *ret_migrated)
{
	struct migration m = {0};
	struct hsm_key_index *ix;
	size_t n = 0;
	int r;

	hsm_error_clear();
	if ((r = hsm_key_index_read(h, &ix)) < 0)
		return r;
	m.ix = ix;
	for (size_t i = 0; i < hsm_key_index_size(m.ix) && r == 0; i++) {
		m.e = hsm_key_index_get(m.ix, i);
		r = hsm_with_session(h, "migrating a public-key half (C_CopyObject)", migrate_op,
		                     &m);
		if (r == 0)
			r = m.err;
		if (r == 0 && m.migrated)
			n++;
	}
	hsm_key_index_free(ix);
	*ret_migrated = n;
	return r;
}

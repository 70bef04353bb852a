/* Session copies of token keys (docs/design.md, "Session copies"): each session makes, uses and
 * destroys its own, so no thread touches a handle another may have made stale. */
#include "hsm.h"
#include "hsm_internal.h"
#include "log.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const CK_BBOOL no = CK_FALSE;

/* Destroys the copies of session s (its own objects: no other thread holds their handles), then
 * forgets them. */
static void copies_destroy(struct hsm *h, struct hsm_session *s)
{
	for (size_t i = 0; i < s->n_copies; i++)
		if (s->copies[i].handle)
			h->f->C_DestroyObject(s->handle, s->copies[i].handle);
	hsm_session_forget_copies(s);
}

/* At most this many copies per session; keys beyond sign with their token object. */
#define MAX_COPIES 256

/* Copies the private key into session s: a session object (CKA_TOKEN false) that keeps every
 * other attribute (sensitive, never extractable, sign only). Its CKA_ID and CKA_LABEL differ
 * from the token key's, so that a search for the token key (by id, or by label) never finds a
 * copy: session objects are visible to every session of the process. */
static CK_RV copy_key(struct hsm *h, struct hsm_session *s, const struct hsm_key *key,
                      CK_OBJECT_HANDLE *ret)
{
	static const char label[] = "tokensign-session-copy";
	uint8_t id[1 + HSM_ID_LEN] = {'c'};
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_TOKEN, (void *)&no, sizeof(no)},
	    {CKA_ID, id, sizeof(id)},
	    {CKA_LABEL, (void *)label, sizeof(label) - 1},
	};

	memcpy(id + 1, key->id, HSM_ID_LEN);
	return h->f->C_CopyObject(s->handle, atomic_load(&key->priv), tmpl, 3, ret);
}

/* What a copy must still be before it signs: a conformant token cannot weaken these in a copy
 * (CKA_SENSITIVE only turns on, CKA_EXTRACTABLE only off), but the copy is checked all the same,
 * once, as the token key was. */
static bool copy_safe(struct hsm *h, struct hsm_session *s, CK_OBJECT_HANDLE copy)
{
	CK_BBOOL token = CK_TRUE, priv = CK_FALSE, sensitive = CK_FALSE, extractable = CK_TRUE,
	         sign = CK_FALSE;
	CK_ATTRIBUTE a[] = {
	    {CKA_TOKEN, &token, sizeof(token)},
	    {CKA_PRIVATE, &priv, sizeof(priv)},
	    {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
	    {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
	    {CKA_SIGN, &sign, sizeof(sign)},
	};

	return h->f->C_GetAttributeValue(s->handle, copy, a, 5) == CKR_OK && !token && priv &&
	       sensitive && !extractable && sign;
}

/* The token's answer means "never for this key": it will sign as a token object. Anything else
 * (a stale handle after a logout, a device error) is for the signature itself to meet and
 * recover from; the copy is tried again next time. */
static bool copy_refused(CK_RV rv)
{
	return rv == CKR_ACTION_PROHIBITED || rv == CKR_FUNCTION_NOT_SUPPORTED ||
	       rv == CKR_ATTRIBUTE_READ_ONLY || rv == CKR_TEMPLATE_INCONSISTENT ||
	       rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_VALUE_INVALID;
}

CK_OBJECT_HANDLE hsm_copy_handle(struct hsm *h, struct hsm_session *s, const struct hsm_key *key)
{
	unsigned long lost = atomic_load(&h->copies_lost), gen = atomic_load(&h->copy_gen);
	CK_OBJECT_HANDLE copy = 0;
	struct hsm_copy *grown;
	CK_RV rv;

	if (!h->session_copies)
		return atomic_load(&key->priv);
	if (s->copies_lost != lost) {
		hsm_session_forget_copies(s);
		s->copies_lost = lost;
	}
	if (s->copy_gen != gen) {
		copies_destroy(h, s);
		s->copy_gen = gen;
	}
	for (size_t i = 0; i < s->n_copies; i++)
		if (memcmp(s->copies[i].id, key->id, HSM_ID_LEN) == 0)
			return s->copies[i].handle ? s->copies[i].handle : atomic_load(&key->priv);
	if (s->n_copies == MAX_COPIES)
		return atomic_load(&key->priv);
	rv = copy_key(h, s, key, &copy);
	if (rv != CKR_OK && !copy_refused(rv))
		return atomic_load(&key->priv);
	if (rv == CKR_OK && !copy_safe(h, s, copy)) {
		h->f->C_DestroyObject(s->handle, copy);
		copy = 0;
		log_warning("the token's session copy of a key is not private, sensitive and "
		            "unextractable; that key signs as a token object");
	}
	if (rv != CKR_OK)
		log_warning("the token does not copy a key into a session (%s, 0x%lx); that key "
		            "signs as a token object",
		            hsm_ckr_name(rv), (unsigned long)rv);
	grown = realloc(s->copies, (s->n_copies + 1) * sizeof(*grown));
	if (!grown) {
		if (copy)
			h->f->C_DestroyObject(s->handle, copy);
		return atomic_load(&key->priv);
	}
	s->copies = grown;
	memcpy(grown[s->n_copies].id, key->id, HSM_ID_LEN);
	grown[s->n_copies++].handle = copy;
	return copy ? copy : atomic_load(&key->priv);
}

void hsm_copy_forget(struct hsm_session *s, const struct hsm_key *key)
{
	for (size_t i = 0; i < s->n_copies; i++)
		if (memcmp(s->copies[i].id, key->id, HSM_ID_LEN) == 0) {
			s->copies[i] = s->copies[--s->n_copies];
			return;
		}
}

/* Every key object of the token read in one pass, then looked up in memory: what counts as one of
 * our key pairs (docs/design.md, "Custody: what is ours"). */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Every private and public key object of the token, whatever its label or id: a foreign object
 * with one of our ids must be seen to be reported, and a private one to make the key ambiguous. */
struct hsm_key_index {
	struct hsm_key_object *e; /* sorted by id (id-less objects first), then handle */
	size_t n;
};

void hsm_key_index_free(struct hsm_key_index *ix)
{
	if (!ix)
		return;
	free(ix->e);
	free(ix);
}

size_t hsm_key_index_size(const struct hsm_key_index *ix)
{
	return ix->n;
}

const struct hsm_key_object *hsm_key_index_get(const struct hsm_key_index *ix, size_t i)
{
	return &ix->e[i];
}

/* An attribute the object does not have, or cannot show in our buffer. */
static bool unreadable(CK_RV rv)
{
	return rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
	       rv == CKR_BUFFER_TOO_SMALL;
}

/* Reads one attribute into buf; *ret_len is 0 when the object lacks it or it does not fit. */
static CK_RV attr_read(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                       CK_ATTRIBUTE_TYPE type, void *buf, size_t size, size_t *ret_len)
{
	CK_ATTRIBUTE a = {type, buf, size};
	CK_RV rv = h->f->C_GetAttributeValue(s, obj, &a, 1);

	*ret_len = rv == CKR_OK && a.ulValueLen <= size ? a.ulValueLen : 0;
	return unreadable(rv) ? CKR_OK : rv;
}

/* Reads obj's CKA_PRIVATE, CKA_ID and CKA_LABEL into e; *ret_gone: destroyed since the search.
 * One call for the three; an object that lacks one (or has a long label) is read one by one. */
static CK_RV entry_read(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                        struct hsm_key_object *e, bool *ret_gone)
{
	CK_BBOOL priv = CK_FALSE;
	uint8_t id[HSM_ID_LEN + 1];
	CK_ATTRIBUTE a[] = {{CKA_PRIVATE, &priv, sizeof(priv)},
	                    {CKA_ID, id, sizeof(id)},
	                    {CKA_LABEL, e->label, sizeof(e->label) - 1}};
	size_t plen = 0, idlen = 0, llen = 0;
	CK_RV rv;

	memset(e, 0, sizeof(*e));
	rv = h->f->C_GetAttributeValue(s, obj, a, 3);
	e->handle = obj;
	*ret_gone = rv == CKR_OBJECT_HANDLE_INVALID;
	if (*ret_gone)
		return CKR_OK;
	if (rv == CKR_OK) {
		plen = a[0].ulValueLen, idlen = a[1].ulValueLen, llen = a[2].ulValueLen;
	} else if (unreadable(rv)) {
		rv = attr_read(h, s, obj, CKA_PRIVATE, &priv, sizeof(priv), &plen);
		if (rv == CKR_OK)
			rv = attr_read(h, s, obj, CKA_ID, id, sizeof(id), &idlen);
		if (rv == CKR_OK)
			rv = attr_read(h, s, obj, CKA_LABEL, e->label, sizeof(e->label) - 1, &llen);
	}
	if (rv == CKR_OBJECT_HANDLE_INVALID) {
		*ret_gone = true;
		return CKR_OK;
	}
	if (rv != CKR_OK)
		return rv;
	/* A missing CKA_PRIVATE reads as public: it is never ours. */
	e->private_obj = plen == sizeof(priv) && priv == CK_TRUE;
	e->has_id = idlen == HSM_ID_LEN;
	if (e->has_id)
		memcpy(e->id, id, HSM_ID_LEN);
	e->label[llen < sizeof(e->label) ? llen : 0] = '\0';
	return CKR_OK;
}

static CK_RV index_class(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                         struct hsm_key_index *ix)
{
	CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}};
	CK_OBJECT_HANDLE *objs = NULL;
	struct hsm_key_object *grown;
	CK_ULONG n = 0;
	CK_RV rv = hsm_find_all(h, s, tmpl, 1, &objs, &n);

	if (rv != CKR_OK)
		return rv;
	grown = realloc(ix->e, (ix->n + n + 1) * sizeof(*grown));
	if (!grown) {
		free(objs);
		return CKR_HOST_MEMORY;
	}
	ix->e = grown;
	for (CK_ULONG i = 0; i < n && rv == CKR_OK; i++) {
		struct hsm_key_object *e = &ix->e[ix->n];
		bool gone = false;
		rv = entry_read(h, s, objs[i], e, &gone);
		e->private_key = cls == CKO_PRIVATE_KEY;
		if (rv == CKR_OK && !gone)
			ix->n++;
	}
	free(objs);
	return rv;
}

static int entry_order(const void *a, const void *b)
{
	const struct hsm_key_object *x = a, *y = b;
	int c = (int)x->has_id - (int)y->has_id;

	if (c == 0 && x->has_id)
		c = memcmp(x->id, y->id, HSM_ID_LEN);
	if (c)
		return c;
	return x->handle < y->handle ? -1 : x->handle > y->handle;
}

int hsm_key_index_read(struct hsm *h, struct hsm_key_index **ret)
{
	struct hsm_key_index *ix = calloc(1, sizeof(*ix));
	struct hsm_session *s;
	struct recovery rc = {0};
	CK_RV rv;
	int r;

	if (!ix)
		return -ENOMEM;
	do {
		if ((r = hsm_session_get(h, &s)) < 0)
			break;
		ix->n = 0;
		/* A session that is not logged in sees no private keys: that is not "no keys". */
		rv = hsm_require_login(h, s);
		if (rv == CKR_OK)
			rv = index_class(h, s->handle, CKO_PRIVATE_KEY, ix);
		if (rv == CKR_OK)
			rv = index_class(h, s->handle, CKO_PUBLIC_KEY, ix);
	} while ((r = hsm_recover(h, s, rv, "listing key objects", &rc)) > 0);
	if (r < 0) {
		hsm_key_index_free(ix);
		return r;
	}
	if (ix->n > 0)
		qsort(ix->e, ix->n, sizeof(*ix->e), entry_order);
	*ret = ix;
	return 0;
}

size_t hsm_key_index_first(const struct hsm_key_index *ix, const uint8_t id[HSM_ID_LEN])
{
	size_t lo = 0, hi = ix->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (!ix->e[mid].has_id || memcmp(ix->e[mid].id, id, HSM_ID_LEN) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int hsm_key_index_find(struct hsm *h, const struct hsm_key_index *ix, const uint8_t id[HSM_ID_LEN],
                       const char *label, enum jws_alg alg, struct hsm_key *ret)
{
	const struct hsm_key_object *priv = NULL, *pub = NULL;
	unsigned long n_priv = 0, n_pub = 0;
	struct hsm_session *s;
	int r;

	if (!hsm_alg_info(alg))
		return -EINVAL;
	/* Public objects are never ours, and never stand in the way of ours: anyone may make
	 * them without the PIN. Private objects need the PIN: two claiming one id are a conflict
	 * we cannot settle, so the key is not used. */
	for (size_t i = hsm_key_index_first(ix, id);
	     i < ix->n && memcmp(ix->e[i].id, id, HSM_ID_LEN) == 0; i++) {
		if (!ix->e[i].private_obj)
			continue;
		if (ix->e[i].private_key && n_priv++ == 0)
			priv = &ix->e[i];
		else if (!ix->e[i].private_key && n_pub++ == 0)
			pub = &ix->e[i];
	}
	if ((r = hsm_pair_count_check(n_priv, n_pub)) < 0)
		return r;
	if (strcmp(priv->label, label) != 0 || strcmp(pub->label, label) != 0)
		return hsm_fail_text(-EPERM, "key objects labelled '%s' and '%s', not '%s'",
		                     priv->label, pub->label, label);
	if ((r = hsm_session_get(h, &s)) < 0)
		return r;
	return hsm_key_accept(h, s, priv->handle, pub->handle, id, alg, ret);
}

/* Every key object of the token read in one pass, then looked up in memory: what counts as one of
 * our key pairs (docs/design.md, "Custody: what is ours"). */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

static CK_RV index_read_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct hsm_key_index *ix = ctx;
	/* A session that is not logged in sees no private keys: that is not "no keys". */
	CK_RV rv = hsm_require_login(h, s);

	ix->n = 0;
	if (rv == CKR_OK)
		rv = index_class(h, s->handle, CKO_PRIVATE_KEY, ix);
	if (rv == CKR_OK)
		rv = index_class(h, s->handle, CKO_PUBLIC_KEY, ix);
	return rv;
}

int hsm_key_index_read(struct hsm *h, struct hsm_key_index **ret)
{
	struct hsm_key_index *ix;
	int r;

	hsm_error_clear();
	if (!(ix = calloc(1, sizeof(*ix))))
		return -ENOMEM;
	if ((r = hsm_with_session(h, "listing key objects", index_read_op, ix)) < 0) {
		hsm_key_index_free(ix);
		return r;
	}
	hsm_key_index_sort(ix);
	*ret = ix;
	return 0;
}

/* A pair taken from the index, to be checked as a lookup by CKA_ID checks it. */
struct index_pair {
	const struct hsm_key_object *priv, *pub;
	const uint8_t *id;
	enum jws_alg alg;
	struct hsm_key *ret;
	int err;
};

static CK_RV index_pair_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct index_pair *p = ctx;

	return hsm_key_accept(h, s, p->priv->handle, p->pub->handle, p->id, p->alg, p->ret,
	                      &p->err);
}

int hsm_key_index_find(struct hsm *h, const struct hsm_key_index *ix, const uint8_t id[HSM_ID_LEN],
                       const char *label, enum jws_alg alg, struct hsm_key *ret)
{
	struct index_pair p = {.id = id, .alg = alg, .ret = ret};
	int r;

	hsm_error_clear();
	if (!hsm_alg_info(alg))
		return -EINVAL;
	if ((r = hsm_key_index_pair(ix, id, label, &p.priv, &p.pub)) < 0)
		return r;
	r = hsm_with_session(h, "C_GetAttributeValue", index_pair_op, &p);
	return r < 0 ? r : p.err;
}

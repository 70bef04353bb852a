/* Key pairs found in one pass: every key object's CKA_ID read once, then looked up in memory. */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define OUR_LABEL "tokensign:"

struct index_entry {
	uint8_t id[HSM_ID_LEN];
	bool priv; /* CKO_PRIVATE_KEY, else CKO_PUBLIC_KEY */
	bool ours; /* labelled tokensign:... */
	CK_OBJECT_HANDLE handle;
};

/* Every private and public key object of the token that has a HSM_ID_LEN-byte CKA_ID, whatever
 * its label: a foreign object with one of our ids is a duplicate, as for a search by id. */
struct hsm_key_index {
	struct index_entry *e; /* sorted by id */
	size_t n;
};

void hsm_key_index_free(struct hsm_key_index *ix)
{
	if (!ix)
		return;
	free(ix->e);
	free(ix);
}

/* An object whose CKA_ID cannot be read as HSM_ID_LEN bytes matches no key id: skip it. */
static bool unreadable(CK_RV rv)
{
	return rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
	       rv == CKR_BUFFER_TOO_SMALL || rv == CKR_OBJECT_HANDLE_INVALID;
}

/* Reads obj's CKA_ID (and whether it is labelled ours) into e. *ret_skip: not a key of ours to
 * count (no such id, or destroyed since the search). */
static CK_RV entry_read(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                        struct index_entry *e, bool *ret_skip)
{
	char label[64] = {0};
	uint8_t id[HSM_ID_LEN + 1];
	CK_ATTRIBUTE a[] = {{CKA_ID, id, sizeof(id)}, {CKA_LABEL, label, sizeof(label) - 1}};
	CK_RV rv = h->f->C_GetAttributeValue(s, obj, a, 2);

	/* A missing or long label fails the whole call: the id alone still counts. */
	if (unreadable(rv)) {
		label[0] = '\0';
		a[0].ulValueLen = sizeof(id);
		rv = h->f->C_GetAttributeValue(s, obj, a, 1);
	}
	*ret_skip = unreadable(rv) || (rv == CKR_OK && a[0].ulValueLen != HSM_ID_LEN);
	if (rv != CKR_OK)
		return *ret_skip ? CKR_OK : rv;
	memcpy(e->id, id, HSM_ID_LEN);
	e->handle = obj;
	e->ours = strncmp(label, OUR_LABEL, strlen(OUR_LABEL)) == 0;
	return CKR_OK;
}

static CK_RV index_class(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                         struct hsm_key_index *ix)
{
	CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}};
	CK_OBJECT_HANDLE *objs = NULL;
	struct index_entry *grown;
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
		struct index_entry *e = &ix->e[ix->n];
		bool skip = false;
		rv = entry_read(h, s, objs[i], e, &skip);
		e->priv = cls == CKO_PRIVATE_KEY;
		if (rv == CKR_OK && !skip)
			ix->n++;
	}
	free(objs);
	return rv;
}

static int entry_order(const void *a, const void *b)
{
	const struct index_entry *x = a, *y = b;
	int c = memcmp(x->id, y->id, HSM_ID_LEN);

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

/* The first entry with id, or the end of the index. */
static size_t entry_first(const struct hsm_key_index *ix, const uint8_t id[HSM_ID_LEN])
{
	size_t lo = 0, hi = ix->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (memcmp(ix->e[mid].id, id, HSM_ID_LEN) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int hsm_key_index_find(struct hsm *h, const struct hsm_key_index *ix, const uint8_t id[HSM_ID_LEN],
                       enum jws_alg alg, struct hsm_key *ret)
{
	const struct alg_info *ai = hsm_alg_info(alg);
	CK_OBJECT_HANDLE priv = 0, pub = 0;
	unsigned long n1 = 0, n2 = 0;
	struct hsm_session *s;
	int r;

	if (!ai)
		return -EINVAL;
	for (size_t i = entry_first(ix, id); i < ix->n && memcmp(ix->e[i].id, id, HSM_ID_LEN) == 0;
	     i++) {
		if (ix->e[i].priv && n1++ == 0)
			priv = ix->e[i].handle;
		else if (!ix->e[i].priv && n2++ == 0)
			pub = ix->e[i].handle;
	}
	if ((r = hsm_pair_count_check(n1, n2)) < 0)
		return r;
	if ((r = hsm_session_get(h, &s)) < 0)
		return r;
	return hsm_key_accept(h, s, priv, pub, id, alg, ret);
}

int hsm_list_key_ids(struct hsm *h, uint8_t (**ret)[HSM_ID_LEN], size_t *ret_n)
{
	struct hsm_key_index *ix;
	uint8_t(*ids)[HSM_ID_LEN];
	size_t n = 0;
	int r = hsm_key_index_read(h, &ix);

	if (r < 0)
		return r;
	ids = calloc(ix->n ? ix->n : 1, sizeof(*ids));
	if (!ids) {
		hsm_key_index_free(ix);
		return -ENOMEM;
	}
	/* Sorted by id: each id once, if any of its objects is labelled ours. */
	for (size_t i = 0; i < ix->n; i++) {
		if (!ix->e[i].ours || (n > 0 && memcmp(ids[n - 1], ix->e[i].id, HSM_ID_LEN) == 0))
			continue;
		memcpy(ids[n++], ix->e[i].id, HSM_ID_LEN);
	}
	hsm_key_index_free(ix);
	*ret = ids;
	*ret_n = n;
	return 0;
}

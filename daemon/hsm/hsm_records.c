/* Record objects: where tokensign keeps what it knows about each key (docs/design.md). */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const CK_BBOOL yes = CK_TRUE;

static CK_RV find_records(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE **ret,
                          CK_ULONG *ret_n)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_APPLICATION, (void *)HSM_APPLICATION, strlen(HSM_APPLICATION)},
	};

	return hsm_find_all(h, s, tmpl, 2, ret, ret_n);
}

/* An attribute this object lacks, hides or holds too large for us: the object is odd, not the
 * token unreadable. */
static bool object_odd(CK_RV rv)
{
	return rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
	       rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_BUFFER_TOO_SMALL;
}

/* Reads one record object. Public ones are never ours (anyone may make them without the PIN):
 * only their label is read, to name them in the log. An object with an attribute we cannot read
 * is kept with what could be read (r->odd), so that no planted object makes the whole read fail. */
static CK_RV record_read(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                         struct hsm_record *r)
{
	CK_BBOOL priv = CK_FALSE;
	CK_ATTRIBUTE a = {CKA_PRIVATE, &priv, sizeof(priv)};
	size_t llen;
	CK_RV rv = h->f->C_GetAttributeValue(s, obj, &a, 1);

	r->handle = obj;
	if (rv != CKR_OK && !object_odd(rv))
		return rv;
	r->private_obj = rv == CKR_OK && priv == CK_TRUE;
	rv = hsm_get_bytes(h, s, obj, CKA_LABEL, (uint8_t **)&r->label, &llen);
	if (rv == CKR_OK && r->private_obj)
		rv = hsm_get_bytes(h, s, obj, CKA_VALUE, (uint8_t **)&r->value, &r->len);
	if (object_odd(rv)) {
		r->odd = true;
		rv = CKR_OK;
	}
	if (rv == CKR_OK && !r->label)
		r->label = strdup("");
	if (rv == CKR_OK && !r->value)
		r->value = strdup("");
	return rv == CKR_OK && (!r->label || !r->value) ? CKR_HOST_MEMORY : rv;
}

/* One search and one read of every record found; *vanished counts the handles destroyed by
 * another process in between. */
static CK_RV read_records_once(struct hsm *h, CK_SESSION_HANDLE s, struct hsm_record **ret,
                               size_t *ret_n, unsigned *vanished)
{
	CK_OBJECT_HANDLE *handles = NULL;
	struct hsm_record *recs;
	CK_ULONG n = 0, kept = 0;
	CK_RV rv = find_records(h, s, &handles, &n);

	if (rv != CKR_OK)
		return rv;
	recs = calloc(n ? n : 1, sizeof(*recs));
	if (!recs) {
		free(handles);
		return CKR_HOST_MEMORY;
	}
	for (CK_ULONG i = 0; i < n && rv == CKR_OK; i++) {
		struct hsm_record *r = &recs[kept];
		rv = record_read(h, s, handles[i], r);
		/* Destroyed by another instance since the search: not a record any more. */
		if (rv == CKR_OBJECT_HANDLE_INVALID) {
			free(r->label);
			free(r->value);
			memset(r, 0, sizeof(*r));
			(*vanished)++;
			rv = CKR_OK;
			continue;
		}
		kept++;
	}
	free(handles);
	if (rv != CKR_OK) {
		hsm_records_free(recs, n);
		return rv;
	}
	*ret = recs;
	*ret_n = kept;
	return CKR_OK;
}

/* Every record, read after one search. A record is revised by writing the new revision and
 * then destroying the old (docs/design.md): a search made before another instance's write,
 * read after its destroy, misses the record altogether, and the key would look unrecorded to
 * this reading (out of the JWKS, not signing) until the next. So when a handle vanished between
 * the search and the read, the search is made again: the new revision is there by then. At most
 * READ_PASSES readings; the last one counts whatever it found. */
#define READ_PASSES 3

static CK_RV read_records(struct hsm *h, CK_SESSION_HANDLE s, struct hsm_record **ret,
                          size_t *ret_n)
{
	for (unsigned pass = 1;; pass++) {
		unsigned vanished = 0;
		CK_RV rv = read_records_once(h, s, ret, ret_n, &vanished);
		if (rv != CKR_OK || vanished == 0 || pass == READ_PASSES)
			return rv;
		hsm_records_free(*ret, *ret_n);
		*ret = NULL;
		*ret_n = 0;
	}
}

/* A read of every record, and its result. */
struct records_read {
	struct hsm_record **ret;
	size_t *ret_n;
};

static CK_RV list_records_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct records_read *l = ctx;
	CK_RV rv = hsm_require_login(h, s);

	if (rv != CKR_OK)
		return rv;
	return read_records(h, s->handle, l->ret, l->ret_n);
}

int hsm_list_records(struct hsm *h, struct hsm_record **ret, size_t *ret_n)
{
	struct records_read l = {ret, ret_n};

	hsm_error_clear();
	return hsm_with_session(h, "reading records", list_records_op, &l);
}

/* A new record object. */
struct record_store {
	CK_ATTRIBUTE *tmpl;
	CK_ULONG n_tmpl;
	CK_OBJECT_HANDLE obj;
};

static CK_RV store_record_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct record_store *c = ctx;
	CK_RV rv = hsm_require_login(h, s);

	if (rv != CKR_OK)
		return rv;
	return h->f->C_CreateObject(s->handle, c->tmpl, c->n_tmpl, &c->obj);
}

int hsm_store_record(struct hsm *h, const char *label, const char *value, size_t len,
                     unsigned long *ret_handle)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},
	    {CKA_PRIVATE, (void *)&yes, sizeof(yes)},
	    {CKA_APPLICATION, (void *)HSM_APPLICATION, strlen(HSM_APPLICATION)},
	    {CKA_LABEL, (void *)label, strlen(label)},
	    {CKA_VALUE, (void *)value, len},
	};
	struct record_store c = {tmpl, sizeof(tmpl) / sizeof(tmpl[0]), 0};
	int r;

	hsm_error_clear();
	hsm_note_write(h);
	r = hsm_with_session(h, "C_CreateObject", store_record_op, &c);
	if (r == 0 && ret_handle)
		*ret_handle = c.obj;
	return r;
}

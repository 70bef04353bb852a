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

void hsm_records_free(struct hsm_record *records, size_t n)
{
	for (size_t i = 0; records && i < n; i++) {
		free(records[i].label);
		free(records[i].value);
	}
	free(records);
}

static CK_RV read_records(struct hsm *h, CK_SESSION_HANDLE s, struct hsm_record **ret,
                          size_t *ret_n)
{
	CK_OBJECT_HANDLE *handles = NULL;
	struct hsm_record *recs;
	CK_ULONG n = 0;
	CK_RV rv = find_records(h, s, &handles, &n);

	if (rv != CKR_OK)
		return rv;
	recs = calloc(n ? n : 1, sizeof(*recs));
	if (!recs) {
		free(handles);
		return CKR_HOST_MEMORY;
	}
	CK_ULONG kept = 0;
	for (CK_ULONG i = 0; i < n && rv == CKR_OK; i++) {
		struct hsm_record *r = &recs[kept];
		size_t llen;
		r->handle = handles[i];
		rv = hsm_get_bytes(h, s, handles[i], CKA_LABEL, (uint8_t **)&r->label, &llen);
		if (rv == CKR_OK)
			rv = hsm_get_bytes(h, s, handles[i], CKA_VALUE, (uint8_t **)&r->value,
			                   &r->len);
		/* Destroyed by another instance since the search: not a record any more. */
		if (rv == CKR_OBJECT_HANDLE_INVALID) {
			free(r->label);
			free(r->value);
			memset(r, 0, sizeof(*r));
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

int hsm_list_records(struct hsm *h, struct hsm_record **ret, size_t *ret_n)
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
			rv = read_records(h, s->handle, ret, ret_n);
	} while ((r = hsm_recover(h, s, rv, "reading records", &rc)) > 0);
	return r;
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
	CK_OBJECT_HANDLE obj;
	struct hsm_session *s;
	struct recovery rc = {0};
	CK_RV rv;
	int r;

	hsm_note_write(h);
	do {
		if ((r = hsm_session_get(h, &s)) < 0)
			return r;
		rv = hsm_require_login(h, s);
		if (rv == CKR_OK)
			rv = h->f->C_CreateObject(s->handle, tmpl, sizeof(tmpl) / sizeof(tmpl[0]),
			                          &obj);
	} while ((r = hsm_recover(h, s, rv, "C_CreateObject", &rc)) > 0);
	if (r == 0 && ret_handle)
		*ret_handle = obj;
	return r;
}

static bool object_gone(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj)
{
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};

	return h->f->C_GetAttributeValue(s, obj, &a, 1) == CKR_OBJECT_HANDLE_INVALID;
}

int hsm_destroy_object(struct hsm *h, unsigned long handle)
{
	struct hsm_session *s;
	struct recovery rc = {0};
	CK_RV rv;
	int r;

	hsm_note_write(h);
	do {
		if ((r = hsm_session_get(h, &s)) < 0)
			return r;
		rv = hsm_require_login(h, s);
		if (rv == CKR_OK)
			rv = h->f->C_DestroyObject(s->handle, handle);
		/* Another instance was first: SoftHSM says the handle is invalid, or fails while
		 * the object's file vanishes under it. Gone is what we wanted. */
		if (rv != CKR_OK && rv != CKR_SESSION_HANDLE_INVALID && rv != CKR_SESSION_CLOSED &&
		    rv != CKR_USER_NOT_LOGGED_IN && object_gone(h, s->handle, handle))
			rv = CKR_OK;

	} while ((r = hsm_recover(h, s, rv, "C_DestroyObject", &rc)) > 0);
	return r;
}

/* Plain object primitives every layer above uses: read a variable-length attribute, find every
 * object of a template, destroy a handle. They answer CK_RV and record nothing: the caller
 * decides what a failure means. */
#include "hsm.h"
#include "hsm_internal.h"

#include <stdlib.h>
#include <string.h>

CK_RV hsm_get_bytes(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                    CK_ATTRIBUTE_TYPE type, uint8_t **ret, size_t *ret_len)
{
	uint8_t small[512], *buf;
	CK_ATTRIBUTE a = {type, small, sizeof(small)};
	CK_RV rv = h->f->C_GetAttributeValue(s, obj, &a, 1);

	/* Most values (records, EC points) fit the small buffer: one call instead of two. */
	if (rv == CKR_BUFFER_TOO_SMALL) {
		a = (CK_ATTRIBUTE){type, NULL, 0};
		rv = h->f->C_GetAttributeValue(s, obj, &a, 1);
	}
	if (rv != CKR_OK)
		return rv;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > 1 << 20 ||
	    (a.pValue == small && a.ulValueLen > sizeof(small)))
		return CKR_ATTRIBUTE_VALUE_INVALID;
	buf = malloc(a.ulValueLen + 1);
	if (!buf)
		return CKR_HOST_MEMORY;
	if (a.pValue == small) {
		memcpy(buf, small, a.ulValueLen);
	} else {
		a.pValue = buf;
		rv = h->f->C_GetAttributeValue(s, obj, &a, 1);
		if (rv != CKR_OK) {
			free(buf);
			return rv;
		}
	}
	buf[a.ulValueLen] = 0;
	*ret = buf;
	*ret_len = a.ulValueLen;
	return CKR_OK;
}

CK_RV hsm_find_all(struct hsm *h, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n_tmpl,
                   CK_OBJECT_HANDLE **ret, CK_ULONG *ret_n)
{
	CK_OBJECT_HANDLE *all = NULL;
	CK_ULONG n = 0, got = 0;
	CK_RV rv;

	rv = h->f->C_FindObjectsInit(s, tmpl, n_tmpl);
	if (rv != CKR_OK)
		return rv;
	do {
		CK_OBJECT_HANDLE *grown = realloc(all, (n + 256) * sizeof(*all));
		if (!grown) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		all = grown;
		rv = h->f->C_FindObjects(s, all + n, 256, &got);
		n += got;
	} while (rv == CKR_OK && got == 256);
	h->f->C_FindObjectsFinal(s);
	if (rv != CKR_OK) {
		free(all);
		return rv;
	}
	*ret = all;
	*ret_n = n;
	return CKR_OK;
}

/* Another instance on the token destroyed it first, or SoftHSM failed while the object's file
 * vanished under it: either way it is gone, as wanted. */
CK_RV hsm_destroy_handle(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj)
{
	CK_OBJECT_CLASS c;
	CK_ATTRIBUTE a = {CKA_CLASS, &c, sizeof(c)};
	CK_RV rv = h->f->C_DestroyObject(s, obj);

	if (rv == CKR_OBJECT_HANDLE_INVALID ||
	    (rv == CKR_FUNCTION_FAILED &&
	     h->f->C_GetAttributeValue(s, obj, &a, 1) == CKR_OBJECT_HANDLE_INVALID))
		return CKR_OK;
	return rv;
}

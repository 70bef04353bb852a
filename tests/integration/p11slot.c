#include "p11slot.h"

#include <stdbool.h>
#include <string.h>

static bool label_matches(const CK_UTF8CHAR field[32], const char *label)
{
	size_t n = strlen(label);

	if (n > 32)
		return false;
	if (memcmp(field, label, n) != 0)
		return false;
	for (size_t i = n; i < 32; i++)
		if (field[i] != ' ')
			return false;
	return true;
}

CK_RV p11_slot_by_label(CK_FUNCTION_LIST *f, const char *label, CK_SLOT_ID *ret)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	CK_RV rv = f->C_GetSlotList(CK_TRUE, slots, &n);

	if (rv != CKR_OK)
		return rv;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && label_matches(ti.label, label)) {
			*ret = slots[i];
			return CKR_OK;
		}
	}
	return CKR_TOKEN_NOT_PRESENT;
}

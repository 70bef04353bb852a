/* The token lookup shared by the integration-test tools p11probe and p11coherence. */
#pragma once
#include <p11-kit/pkcs11.h>

/* The slot of the first present token whose CKA label is label (the field is space-padded).
 * Returns CKR_OK, C_GetSlotList's error, or CKR_TOKEN_NOT_PRESENT when no token has it. */
CK_RV p11_slot_by_label(CK_FUNCTION_LIST *f, const char *label, CK_SLOT_ID *ret);

/* keyrotate purge: the keys of an issuer that is no longer configured. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "keyring.h"

struct purge_result {
	char (*kids)[JWK_KID_LEN + 1]; /* destroyed */
	size_t n;
	size_t kept; /* orphans whose objects are not provably ours: left in the token */
};

/* keyrotate purge: destroys the keys of an issuer that is no longer configured (its record
 * re-read and compared, its pair proven ours, by handle). -EBUSY: the issuer is configured;
 * -ENOENT: the token has no orphaned key of that name. Free ret with purge_result_clear(). */
int rotation_purge(struct keyring *kr, const char *issuer, int64_t operator_uid,
                   struct purge_result *ret);
void purge_result_clear(struct purge_result *r);

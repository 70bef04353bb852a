/* Changes to the token that move keys through their lifecycle: generate, reschedule, destroy.
 * Every function here takes the keyring (keyring_lock()), so the scheduler and operators never
 * change the token at the same time (other instances may; see docs/design.md). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "keyring.h"

/* Reads the token, then brings every issuer to the shape docs/design.md ("The lifecycle")
 * demands: expired keys destroyed, exactly one pending key (generated when missing; at first
 * start the first key is active at once), stale records and abandoned half-made keys removed.
 * *ret_next is the next instant at which something changes. */
int rotation_maintain(struct keyring *kr, int64_t now, int64_t *ret_next);

/* hsmc_resync() under the lock, as rotation_maintain() does first: at the end of a start or a
 * reload, so that the touch after its writes is over before the daemon serves. */
void rotation_resync(struct keyring *kr);

struct rotate_result {
	char active_kid[JWK_KID_LEN + 1]; /* empty: none */
	char next_kid[JWK_KID_LEN + 1];
	int64_t switch_at;
};

/* keyrotate rotate: the pending key takes over once published for prepublish (now_flag: at
 * once), the active key retires at that moment. Never removes a key. */
int rotation_rotate(struct keyring *kr, size_t issuer, bool now_flag, int64_t operator_uid,
                    struct rotate_result *ret);

struct revoke_result {
	char revoked_kid[JWK_KID_LEN + 1];
	const char *was; /* "pending", "active", "retired" */
	char active_kid[JWK_KID_LEN + 1];
	char pending_kid[JWK_KID_LEN + 1];
};

/* keyrotate revoke: the key leaves the JWKS and the token now; an active key hands over to the
 * pending key first (or to a fresh key) so signing never stops. -ENOENT: no such key. */
int rotation_revoke(struct keyring *kr, size_t issuer, const char *kid, int64_t operator_uid,
                    struct revoke_result *ret);

/* The signing helper's own look at what it is asked to sign: only a signing input the daemon
 * would have made for this key, this issuer and this lifetime gets a signature. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "jws.h"

#define GUARD_CLOCK_SKEW  60          /* seconds iat may differ from the helper's clock */
#define GUARD_HEADER_MAX  1024        /* decoded protected header, bytes */
#define GUARD_PAYLOAD_MAX (68 * 1024) /* decoded payload: a 64 KiB request and our claims */
#define GUARD_INPUT_MAX   (96 * 1024) /* the whole signing input, bytes */
#define GUARD_WHY_SIZE    96          /* enough for every reason guard_check() writes */

struct guard_key {
	enum jws_alg alg;
	const char *kid;
	const char *iss; /* the only iss this key may sign */
	int64_t max_ttl; /* seconds: exp - iat must be in 1..max_ttl */
};

/* 0 when input (len bytes, not NUL-terminated) is a signing input for k made as the daemon makes
 * them, at time now; else -EPERM with a one-line reason (no claim values longer than needed, never
 * the whole payload) written to why. Allocation failure and an invalid k are refusals too: this
 * function fails closed. why may be NULL; it is left untouched on success, and a reason longer than
 * why_size is cut (always NUL-terminated when why_size > 0). */
int guard_check(const char *input, size_t len, const struct guard_key *k, int64_t now, char *why,
                size_t why_size);

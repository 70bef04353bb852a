/* Verification of a JWS signature with a public key: the daemon's self-check before a token
 * leaves it, and the tests' known answers. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "jws.h"

/* Verifies sig (JWS form: R||S for ECDSA) over input with pkey for alg. Returns 0 when it
 * verifies, -EBADMSG when it does not, -EINVAL/-ENOMEM when it cannot be checked. */
int jws_verify(enum jws_alg alg, EVP_PKEY *pkey, const void *input, size_t len, const uint8_t *sig,
               size_t sig_len);

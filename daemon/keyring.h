/* Each issuer's keys, rebuilt from the token alone, and the snapshot that signing reads. */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conf.h"
#include "etag.h"
#include "hsm.h"
#include "jwk.h"

struct key {
	char kid[JWK_KID_LEN + 1];
	struct hsm_key hk;
	struct jwk jwk;
	int64_t created_at, activates_at;
};

/* An immutable view of one issuer's keys; replaced whole when the keys change, so readers never
 * lock anything while they sign or serve. */
struct keyset {
	atomic_int refs;
	struct key *keys; /* ordered by activates_at, then kid: the JWKS order */
	size_t n;
	struct key *active; /* NULL: nothing may sign (fail closed) */
	char *jwks;         /* rendered {"keys":[...]} */
	size_t jwks_len;
	char etag[ETAG_SIZE];
};

struct issuer_keys {
	const struct issuer_conf *conf;
	pthread_mutex_t lock; /* guards the set pointer, not its contents */
	struct keyset *set;
};

struct keyring {
	struct hsm *hsm;
	struct issuer_keys *issuers; /* parallel to conf->issuers */
	size_t n;
};

int keyring_new(struct hsm *hsm, const struct conf *conf, struct keyring **ret);
void keyring_free(struct keyring *kr);

/* Rebuilds every issuer's view from the records and keys in the token. Keys whose record or
 * attributes do not hold up are logged and left out, never used. */
int keyring_load(struct keyring *kr, int64_t now);

/* Gives every issuer that has no usable key one, active at once (first start: nothing has been
 * signed yet, so nothing needed to be published before). */
int keyring_bootstrap(struct keyring *kr, int64_t now);

/* A reference to the issuer's current view; release it with keyset_release(). */
struct keyset *keyring_acquire(struct keyring *kr, size_t issuer_index);
void keyset_release(struct keyset *set);

/* Index of ic in the keyring; ic must come from the same configuration. */
size_t keyring_index(const struct keyring *kr, const struct issuer_conf *ic);

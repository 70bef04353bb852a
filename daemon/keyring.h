/* Each issuer's keys, rebuilt from the token alone, and the snapshot that signing reads. */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/types.h>

#include "conf.h"
#include "etag.h"
#include "hsm.h"
#include "jwk.h"
#include "schedule.h"

struct key {
	char kid[JWK_KID_LEN + 1];
	struct hsm_key hk;
	struct jwk jwk;
	/* From the key's record in the token. */
	int64_t created_at, activates_at, retires_at, max_token_ttl;
	int64_t seq;          /* the record's revision; the highest one counts */
	unsigned long record; /* handle of the record object */
	/* Derived from the record and the clock when the keyset was built. */
	struct schedule_state st;
	EVP_PKEY *evp; /* the public key for self-checks; owned by the keyset */
};

/* An immutable view of one issuer's keys; replaced whole when the keys change, so readers never
 * lock anything while they sign or serve. */
struct keyset {
	atomic_int refs;
	struct key *keys; /* schedule order (activation, then kid): the JWKS order */
	size_t n;
	struct key *active;   /* signs while now < active_until; NULL: none */
	int64_t active_until; /* handover to next, or the end of the grace period */
	struct key *next;     /* the pending key that takes over at its activates_at, or NULL */
	int64_t next_until;   /* its own scheduled retirement + prepublish */
	char *jwks;           /* rendered {"keys":[...]} */
	size_t jwks_len;
	char etag[ETAG_SIZE];
};

struct issuer_keys {
	const struct issuer_conf *conf;
	pthread_mutex_t lock; /* guards the set pointer, not its contents */
	struct keyset *set;
	/* Written only under the keyring's mutate lock; read for status. */
	char problem[192]; /* empty: none */
	int64_t retry_at;  /* when a failed generation is tried again */
	unsigned failures;
};

struct keyring {
	struct hsm *hsm;
	struct issuer_keys *issuers; /* parallel to conf->issuers */
	size_t n;
	pthread_mutex_t mutate;  /* one writer of the token at a time: scheduler or admin */
	char token_problem[192]; /* the last maintenance could not read the token; "" */
	struct orphan {
		uint8_t id[HSM_ID_LEN];
		int64_t first_seen;
	} * orphans; /* key pairs without a record, and since when */
	size_t n_orphans;
	/* Noted by the last refresh, for maintenance. */
	unsigned long *stale; /* records superseded by a higher revision of the same key */
	size_t n_stale;
	uint8_t (*recorded)[HSM_ID_LEN]; /* every key id that has a current record */
	size_t n_recorded;
	struct damaged {
		size_t issuer;
		unsigned long record;
		uint8_t id[HSM_ID_LEN];
		char kid[JWK_KID_LEN + 1];
	} * damaged; /* pending keys whose record stands but whose key pair is incomplete */
	size_t n_damaged;
	uint8_t (*suspects)[HSM_ID_LEN]; /* ids found damaged by the previous maintenance */
	size_t n_suspects;
	uint8_t (*warned)[HSM_ID_LEN]; /* keys left out for good, already said in the log */
	size_t n_warned;
};

int keyring_new(struct hsm *hsm, const struct conf *conf, struct keyring **ret);
void keyring_free(struct keyring *kr);

/* Rebuilds every issuer's view from the records and keys in the token (keys already known at the
 * same record revision are reused, not read again). Keys whose record or attributes do not hold
 * up are logged and left out, never used. The caller holds kr->mutate. */
int keyring_refresh(struct keyring *kr, int64_t now);

/* A reference to the issuer's current view; release it with keyset_release(). */
struct keyset *keyring_acquire(struct keyring *kr, size_t issuer_index);
void keyset_release(struct keyset *set);

/* The key that may sign at now, or NULL: fail closed. */
struct key *keyset_signer(struct keyset *set, int64_t now);

/* Index of ic in the keyring, or kr->n when it is not there. */
size_t keyring_index(const struct keyring *kr, const struct issuer_conf *ic);

/* The issuer's timing as the schedule arithmetic wants it. */
struct schedule_timing keyring_timing(const struct issuer_conf *ic);

/* Formats a key's record (the JSON kept in the token). Caller frees. */
char *keyring_record_format(const struct issuer_conf *ic, const struct key *k);

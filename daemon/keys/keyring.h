/* Each issuer's keys, rebuilt from the token alone, and the snapshot that signing reads. */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/types.h>

#include "conf.h"
#include "etag.h"
#include "hsmc.h"
#include "jwk.h"
#include "record.h"
#include "schedule.h"

/* The size of a problem's text, with its NUL. */
#define KEYRING_PROBLEM_SIZE 192

struct key {
	char kid[JWK_KID_LEN + 1];
	struct hsm_key hk; /* hk.alg: the key's own algorithm, from its record */
	struct jwk jwk;
	char *iss; /* the only iss this key signs, from its record; owned by the keyset */
	/* From the key's record in the token. */
	int64_t created_at, activates_at, retires_at, max_token_ttl;
	int64_t withdrawn_at;  /* a pending key set aside by an iss/algorithm change; 0: not */
	int64_t seq;           /* the record's revision; the highest one counts */
	struct hsm_record rec; /* the record as read: destroyed only while still exactly this */
	/* usable: its objects are all ours and alone (docs/design.md, "Custody"). A key that is
	 * not keeps its place in the schedule (so that no older key takes over again), but never
	 * signs and is not published: it is quarantined. */
	bool usable;
	/* In the JWKS: usable, or quarantined after it was published (the JWKS never shrinks
	 * because of a doubt, C7; the key only stops signing). */
	bool published;
	bool incomplete; /* quarantined because a half is missing (hk has the halves there are) */
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
	/* The issuer may not sign at all: a record of it cannot be read, and the key it describes
	 * may be newer than the one the others make active. "" when not. */
	char blocked[160];
};

struct issuer_keys {
	const struct issuer_conf *conf;
	pthread_mutex_t lock; /* guards the set pointer, not its contents */
	struct keyset *set;
	/* Written only under the keyring's lock; status reads them in the report. */
	char problem[KEYRING_PROBLEM_SIZE]; /* empty: none */
	int64_t retry_at;                   /* when a failed generation is tried again */
	unsigned failures;
};

/* Keys of an issuer that is no longer configured: kept, never published, destroyed only by
 * keyrotate purge (docs/design.md, "Configuration changes"). */
struct orphan_key {
	char issuer[RECORD_ISSUER_MAX + 1];
	char kid[JWK_KID_LEN + 1];
	enum jws_alg alg;
	uint8_t id[HSM_ID_LEN];
	int64_t created_at, activates_at, retires_at, max_token_ttl;
	struct hsm_record rec; /* owned */
};

/* What the last refresh learned about the token, under the keyring's mutate lock. */
struct token_view {
	size_t n_foreign;     /* objects that look like ours and are not */
	size_t n_quarantined; /* keys and records kept aside: not used, not destroyed */
	struct orphan_key *orphans;
	size_t n_orphans;
	struct hsm_record *stale; /* superseded revisions of our records (owned copies) */
	size_t n_stale;
	/* Key pairs without a record that are ours in every other way: a generation that never
	 * finished. halfmade_ok: no record failed to parse, so none can be theirs. */
	struct halfmade {
		size_t issuer;
		struct hsm_key hk;
	} * halfmade;
	size_t n_halfmade;
	bool halfmade_ok;
	struct damaged {
		size_t issuer;
		struct hsm_record rec; /* owned copy */
		struct hsm_key hk;     /* the halves that are there (handle 0: missing) */
		char kid[JWK_KID_LEN + 1];
	} * damaged; /* pending keys whose record stands but whose key pair is incomplete */
	size_t n_damaged;
};

struct keyring {
	struct hsmc *hsm;
	struct issuer_keys *issuers; /* parallel to conf->issuers */
	size_t n;
	/* One writer of the token at a time: scheduler or admin. Taken with keyring_lock(); held
	 * for seconds by an RSA key generation, so nothing that answers a probe or a status
	 * request may wait for it: those read the keysets and the report. */
	pthread_mutex_t mutate;
	char token_problem[KEYRING_PROBLEM_SIZE]; /* the last refresh could not read the token */
	atomic_bool token_lost;      /* the same, for readers that must not wait for the lock */
	pthread_mutex_t report_lock; /* guards the report pointer, not its contents */
	struct keyring_report *report;
	struct token_view view;
	struct seen {
		uint8_t id[HSM_ID_LEN];
		int64_t first_seen;
	} * halfmade_seen; /* recordless pairs, and since when */
	size_t n_halfmade_seen;
	uint8_t (*suspects)[HSM_ID_LEN]; /* ids found damaged by the previous maintenance */
	size_t n_suspects;
	unsigned long *warned; /* objects already reported in the log, by handle */
	size_t n_warned;
	/* A pair found incomplete is read again once by a new management helper before it is
	 * believed (keyring_refresh()): its ids, the last KEYRING_REREAD_MAX of them. */
	uint8_t (*reread)[HSM_ID_LEN];
	size_t n_reread;
	enum {
		REREAD_OFF,   /* believe what the token shows */
		REREAD_CHECK, /* a first pass: an incomplete pair not read again yet is a doubt */
		REREAD_WANTED /* such a pair was found: read the token again, afresh */
	} reread_state;
};

#define KEYRING_REREAD_MAX 64

/* What status and the key listing show beside the keysets, as the last writer left it: counts,
 * orphans and problems. Immutable, replaced whole each time a writer lets go of the keyring, so
 * that readers never wait for a writer. */
struct keyring_report {
	atomic_int refs;
	size_t n_foreign, n_quarantined;
	struct orphan_key *orphans; /* copies without their records (rec is empty) */
	size_t n_orphans;
	char token_problem[KEYRING_PROBLEM_SIZE]; /* "" when none */
	char (*problems)[KEYRING_PROBLEM_SIZE];   /* each issuer's, parallel to kr->issuers */
};

int keyring_new(struct hsmc *hsm, const struct conf *conf, struct keyring **ret);
void keyring_free(struct keyring *kr);

/* Takes the keyring for a change of the token (waits for the writer before, if any). */
void keyring_lock(struct keyring *kr);
/* Publishes the report of what the change left (keyring_report_acquire()), then lets go. */
void keyring_unlock(struct keyring *kr);

/* A reference to the last published report (never waits for a writer), or NULL when none could
 * be made yet; release it with keyring_report_release(). */
struct keyring_report *keyring_report_acquire(struct keyring *kr);
void keyring_report_release(struct keyring_report *rep);

/* Rebuilds every issuer's view from the records and keys in the token (keys already known are
 * reused, not read again). Objects that are not exactly ours are reported and left out, never
 * used. A read that fails, or that the token's state makes doubtful, changes nothing: the last
 * good views stay published. The caller holds the keyring (keyring_lock()). */
int keyring_refresh(struct keyring *kr, int64_t now);

/* Whether the last refresh could not read the token (the views are then the last good ones);
 * without the mutate lock, which a key generation may hold for seconds. */
bool keyring_token_lost(struct keyring *kr);

/* A reference to the issuer's current view; release it with keyset_release(). */
struct keyset *keyring_acquire(struct keyring *kr, size_t issuer_index);
void keyset_release(struct keyset *set);

/* The key that may sign at now, or NULL: fail closed. */
struct key *keyset_signer(struct keyset *set, int64_t now);

/* Index of ic in the keyring, or kr->n when it is not there. */
size_t keyring_index(const struct keyring *kr, const struct issuer_conf *ic);

/* The issuer's timing as the schedule arithmetic wants it. */
struct schedule_timing keyring_timing(const struct issuer_conf *ic);

/* Formats a key's record (the JSON kept in the token), with issuer's name. Caller frees. */
char *keyring_record_format(const char *issuer, const struct key *k);

/* Whether k may sign for ic's current configuration (its iss and algorithm are the issuer's). */
bool keyring_key_current(const struct issuer_conf *ic, const struct key *k);

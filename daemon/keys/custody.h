/* What the token holds, sorted into our keys, quarantined ones and foreign objects, and the
 * rules a key must pass before it is used or destroyed (docs/design.md, "Custody"). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "hsmc.h"
#include "keyring.h"
#include "record.h"

enum parsed_kind {
	PARSED_FOREIGN, /* public, unreadable, or a label that disagrees: never ours */
	PARSED_BROKEN, /* private, ours by label, but its value does not parse or is out of range */
	PARSED_VALID,
};

/* One record object of a refresh, judged once. */
struct parsed {
	const struct hsm_record *hr;
	struct record rec; /* PARSED_VALID only */
	enum parsed_kind kind;
	size_t pos;    /* place in the token's list: of two equal revisions the first counts */
	bool current;  /* the highest revision of its key; the others are stale or foreign */
	bool conflict; /* another private record claims the same key or kid differently */
	char why[96];  /* why it is foreign or broken, for the log */
};

/* A refresh's records and key objects, judged. */
struct sorting {
	struct parsed *p;
	size_t n;
	struct parsed **cur; /* the current valid records, sorted by issuer, then place */
	size_t n_cur;
	struct hsm_key_index *ix;
	bool *claimed; /* parallel to ix: the object is a half of one of our keys */
};

/* The label of an issuer's key pairs, "tokensign:ISSUER": part of what makes a pair ours. */
void custody_key_label(const char *issuer, char buf[RECORD_LABEL_SIZE]);

void custody_rec_clear(struct hsm_record *r);
int custody_rec_copy(struct hsm_record *dst, const struct hsm_record *src);
void token_view_clear(struct token_view *v);

/* Judges every record (foreign, broken, valid; current, stale, conflicting), and notes in kr's
 * view what maintenance needs (stale revisions, orphans, quarantine counts). Takes ownership of
 * ix. Returns 0 or -ENOMEM. */
int custody_sort(struct keyring *kr, const struct hsm_record *recs, size_t n,
                 struct hsm_key_index *ix, struct sorting *ret);
void custody_sorting_free(struct sorting *s);

/* The current valid records of issuer name: [*ret_lo, *ret_hi) in s->cur. */
void custody_issuer_range(const struct sorting *s, const char *name, size_t *ret_lo,
                          size_t *ret_hi);

/* Why issuer name may not sign at all: one of its records cannot be read and names a key the
 * others do not describe (it may be newer than the one they make active). "" when none. */
void custody_issuer_blocked(const struct sorting *s, const char *name, char *buf, size_t size);

/* Makes the key of record p, for issuer ic: reused from cur when known, else found among the
 * token's objects and checked (docs/design.md, "Custody"). Returns 0 with ret->usable telling
 * whether it may be used (false: quarantined, it keeps its place in the schedule), -EPERM when
 * the objects are not ours (foreign: left out of the schedule), or another negative errno when
 * the token could not tell (left out this time). */
int custody_key_load(struct keyring *kr, struct sorting *s, const struct issuer_conf *ic,
                     const struct parsed *p, const struct keyset *cur, struct key *ret);

/* After every issuer's keys are loaded: reports key objects that look like ours and are not,
 * and notes recordless pairs (half-made generations) and damaged pending keys for maintenance. */
void custody_note_objects(struct keyring *kr, struct sorting *s, int64_t now);

/* Logs a foreign object once per keyring (by handle) and counts it. */
void custody_report(struct keyring *kr, unsigned long handle, const char *what, const char *label,
                    const uint8_t *id, const char *why);

/* A key's record: the JSON the token keeps in a CKO_DATA object's CKA_VALUE, and its label. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jwk.h"
#include "jws.h"

#define RECORD_VERSION    2
#define RECORD_ISSUER_MAX 32   /* [a-z0-9-]{1,32}, as in the configuration */
#define RECORD_ISS_MAX    1024 /* bytes */
#define RECORD_ID_LEN     16   /* CKA_ID of the key pair; HSM_ID_LEN */
/* Timestamps are within years 2000..9999: anything else is damage, not a schedule. */
#define RECORD_TIME_MIN     946684800LL    /* 2000-01-01T00:00:00Z */
#define RECORD_TIME_MAX     253402300799LL /* 9999-12-31T23:59:59Z */
#define RECORD_SEQ_MAX      (1LL << 53)    /* exact in every JSON reader */
#define RECORD_LABEL_PREFIX "tokensign:"
/* "tokensign:ISSUER:KID" and its NUL. */
#define RECORD_LABEL_SIZE                                                                          \
	(sizeof(RECORD_LABEL_PREFIX) - 1 + RECORD_ISSUER_MAX + 1 + JWK_KID_LEN + 1)

struct record {
	char issuer[RECORD_ISSUER_MAX + 1];
	char *iss; /* owned; record_clear() frees it */
	char kid[JWK_KID_LEN + 1];
	enum jws_alg alg;
	uint8_t id[RECORD_ID_LEN];
	int64_t seq; /* revision of the key's record; the highest one counts */
	int64_t created_at, activates_at, retires_at;
	int64_t max_token_ttl; /* seconds, as configured when the key was made */
	int64_t withdrawn_at;  /* a pending key superseded before it signed; 0: not withdrawn */
};

/* Frees what r owns and leaves it empty; accepts NULL. */
void record_clear(struct record *r);

/* Checks every rule of a record's values (names, ranges, retires_at >= activates_at). Returns 0,
 * or -EINVAL with *why a short static reason for the log. */
int record_check(const struct record *r, const char **why);

/* Parses a record's value (len bytes, need not be NUL-terminated): exactly the members that
 * record_format() writes, with values that pass record_check(). Returns 0, -ENOMEM, or -EINVAL
 * with *why a short static reason for the log. *ret is untouched on failure; on success the
 * caller releases it with record_clear(). */
int record_parse(const char *value, size_t len, struct record *ret, const char **why);

/* The compact JSON of r, which record_parse() reads back to the same record. Refuses to write a
 * record it would not read back: NULL with errno EINVAL, or ENOMEM. The caller frees. */
char *record_format(const struct record *r);

/* Writes "tokensign:ISSUER:KID" into buf. Returns 0, -EINVAL for an issuer or kid of the wrong
 * shape, -ENOBUFS when size is below the label's length + 1 (buf is then untouched). */
int record_label(const char *issuer, const char *kid, char *buf, size_t size);

/* True when label is exactly the label of r's issuer and kid. */
bool record_label_matches(const char *label, const struct record *r);

/* Splits a label "tokensign:ISSUER:KID" into its issuer and kid, so that a record whose value
 * cannot be parsed can still be told apart. Returns 0 or -EINVAL (not that shape; issuer and kid
 * untouched). */
int record_label_split(const char *label, char issuer[RECORD_ISSUER_MAX + 1],
                       char kid[JWK_KID_LEN + 1]);

/* What both sides of the helper boundary call a key, a key object and a record: plain data, no
 * PKCS#11 types. The helper (daemon/hsm/) fills them from the token; the request-facing process
 * receives them over the protocol (proto.h) and never sees pkcs11.h. */
#pragma once
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jws.h"

#define HSM_ID_LEN      16
#define HSM_MAX_SIG     512
#define HSM_APPLICATION "tokensign"
#define HSM_LABEL_MAX   80 /* a key object's CKA_LABEL we can hold, NUL included */

/* A key pair in the token, found by its CKA_ID. priv and pub are object handles of the process
 * that found them (the management helper for the request-facing process): every use of a handle
 * reads the object back first, so a handle gone stale after a helper restart is refused, never
 * obeyed. The private handle is refreshed in place, hence atomic: threads share the struct. */
struct hsm_key {
	uint8_t id[HSM_ID_LEN];
	enum jws_alg alg;
	_Atomic unsigned long priv;
	unsigned long pub;
};

/* A CKO_DATA object of application HSM_APPLICATION: where tokensign keeps a key's metadata.
 * Only private ones (made after login) can be ours; of public ones only the label is read. */
struct hsm_record {
	unsigned long handle;
	char *label;
	char *value; /* NUL-terminated copy of CKA_VALUE; "" for public objects */
	size_t len;
	bool private_obj; /* CKA_PRIVATE true */
	bool odd;         /* an attribute could not be read: never ours */
};

void hsm_records_free(struct hsm_record *records, size_t n);

/* One key object as the token listed it. */
struct hsm_key_object {
	unsigned long handle;
	bool private_key; /* CKO_PRIVATE_KEY, else CKO_PUBLIC_KEY */
	bool private_obj; /* CKA_PRIVATE true: made after login */
	bool has_id;      /* CKA_ID is HSM_ID_LEN bytes */
	uint8_t id[HSM_ID_LEN];
	char label[HSM_LABEL_MAX]; /* "" when missing or longer */
};

/* Every key object of the token (private and public, whatever its label or id), read in one pass
 * (two searches and one read per object) rather than two searches per key: SoftHSM reads every
 * object file again for each search. Handles in it are valid until the token changes. */
struct hsm_key_index {
	struct hsm_key_object *e; /* sorted by hsm_key_index_sort() */
	size_t n;
};

void hsm_key_index_free(struct hsm_key_index *ix);
size_t hsm_key_index_size(const struct hsm_key_index *ix);
/* Objects are sorted: those without a HSM_ID_LEN-byte id first, then by id, then by handle. */
const struct hsm_key_object *hsm_key_index_get(const struct hsm_key_index *ix, size_t i);
/* The position of the first object with id, or hsm_key_index_size() when there is none. */
size_t hsm_key_index_first(const struct hsm_key_index *ix, const uint8_t id[HSM_ID_LEN]);
void hsm_key_index_sort(struct hsm_key_index *ix);

/* The one private-key and one public-key object of ix that carry id, both labelled label.
 * Public objects are never ours and never stand in the way of ours (anyone may make them
 * without the PIN); two private objects of one class claiming the id are a conflict we cannot
 * settle. -ENOENT: a half is missing; -EEXIST: more than one; -EPERM: another label. */
int hsm_key_index_pair(const struct hsm_key_index *ix, const uint8_t id[HSM_ID_LEN],
                       const char *label, const struct hsm_key_object **ret_priv,
                       const struct hsm_key_object **ret_pub);

/* 0 for exactly one private and one public object of a key id; -ENOENT when either is missing,
 * -EEXIST for duplicates (with the counts as the thread's error). */
int hsm_pair_count_check(unsigned long n_priv, unsigned long n_pub);

/* Human description of the calling thread's last token failure ("C_Sign: CKR_DEVICE_ERROR"):
 * in the helper, of its own calls; in the request-facing process, the text the helper answered
 * with, or why the helper could not be asked. Each operation sets it only when it fails. */
const char *hsm_last_error(void);

/* Sets the calling thread's last failure to a formatted sentence and returns err. */
int hsm_fail_text(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

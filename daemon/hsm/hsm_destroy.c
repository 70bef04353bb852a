/* Destruction by handle, as the last step of a proof: each object is read again and must still
 * be the private object it was (docs/design.md, "Custody", C5). Never a search by CKA_ID. */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Whether attribute type of obj is exactly want (want_len bytes): 0 yes, -EPERM no, 1 the
 * object is gone, or the token's error. */
static int attr_equals(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                       CK_ATTRIBUTE_TYPE type, const void *want, size_t want_len)
{
	uint8_t *got = NULL;
	size_t len = 0;
	CK_RV rv = hsm_get_bytes(h, s, obj, type, &got, &len);
	bool same = rv == CKR_OK && len == want_len && memcmp(got, want, len) == 0;

	free(got);
	if (rv == CKR_OBJECT_HANDLE_INVALID)
		return 1; /* destroyed since it was read (another instance was first) */
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
		return hsm_fail("C_GetAttributeValue", rv, hsm_ckr_errno(rv));
	return same ? 0 : -EPERM;
}

/* What a handle must still be before it is destroyed: an object of class cls, private, with
 * this CKA_ID (when id) and CKA_LABEL (when label). 1 when it is gone already (or the handle
 * names another object now: one with another id, or, for a record, which has no id to tell,
 * one of another class, a public one or one with another label), 0 when it is as expected,
 * -EPERM (something else claims our id at that handle: never destroyed) or the token's
 * error. */
static int object_is_once(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                          CK_OBJECT_CLASS cls, const uint8_t *id, const char *label)
{
	CK_OBJECT_CLASS c = (CK_OBJECT_CLASS)-1;
	CK_BBOOL priv = CK_FALSE;
	CK_ATTRIBUTE a[] = {{CKA_CLASS, &c, sizeof(c)}, {CKA_PRIVATE, &priv, sizeof(priv)}};
	CK_RV rv = h->f->C_GetAttributeValue(s, obj, a, 2);
	int r = 0;

	if (rv == CKR_OBJECT_HANDLE_INVALID)
		return 1;
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
		return hsm_fail("C_GetAttributeValue", rv, hsm_ckr_errno(rv));
	/* Another id at the handle: our object left it (another instance destroyed it, and this
	 * module gave its handle to a new object), so there is nothing of ours to destroy there. */
	if (id && (r = attr_equals(h, s, obj, CKA_ID, id, HSM_ID_LEN)) != 0)
		return r == -EPERM ? 1 : r;
	if (rv != CKR_OK || c != cls || priv != CK_TRUE)
		r = -EPERM;
	if (r == 0 && label)
		r = attr_equals(h, s, obj, CKA_LABEL, label, strlen(label));
	/* A record's handle that names another kind of object now (a key pair or a record another
	 * instance made since it destroyed ours, a public touch object): our record left it. The
	 * value check (destroy_record()) still refuses a record of ours whose value changed. */
	if (r == -EPERM && !id)
		return 1;
	return r;
}

/* object_is_once(), and for a key half that reads as ours in id but wrong in class, privacy or
 * label, a second reading 50 ms later: seen when another instance destroyed the same half at
 * that moment (two instances revoking one pending key), whose module state was then
 * half-gone. Only a half that still reads wrong is refused; one gone or with another id by
 * then is a half already gone. Nothing is destroyed on a doubtful reading. */
static int object_is(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, CK_OBJECT_CLASS cls,
                     const uint8_t *id, const char *label)
{
	int r = object_is_once(h, s, obj, cls, id, label);

	if (r == -EPERM) {
		nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL);
		r = object_is_once(h, s, obj, cls, id, label);
	}
	if (r == -EPERM)
		return hsm_fail_text(-EPERM, "object %lu is no longer the private object it was",
		                     (unsigned long)obj);
	return r;
}

/* Checks both halves, then destroys both: a half that is no longer what it was aborts the whole
 * destruction before anything is gone. */
static CK_RV destroy_pair(struct hsm *h, CK_SESSION_HANDLE s, const struct hsm_key *key,
                          const char *label, int *err)
{
	CK_OBJECT_HANDLE objs[2] = {atomic_load(&key->priv), key->pub};
	CK_OBJECT_CLASS classes[2] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
	int state[2];
	CK_RV rv = CKR_OK;

	for (size_t i = 0; i < 2; i++) {
		state[i] = object_is(h, s, objs[i], classes[i], key->id, label);
		if (state[i] < 0) {
			*err = state[i];
			return CKR_OK;
		}
	}
	for (size_t i = 0; i < 2 && rv == CKR_OK; i++)
		if (state[i] == 0)
			rv = hsm_destroy_handle(h, s, objs[i]);
	return rv;
}

/* A destruction of a key pair or a record, and its verdict. */
struct destruction {
	const struct hsm_key *key;
	const char *label;
	const struct hsm_record *rec;
	int err;
};

static CK_RV destroy_pair_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct destruction *d = ctx;
	CK_RV rv = hsm_require_login(h, s);

	d->err = 0;
	if (rv != CKR_OK)
		return rv;
	return destroy_pair(h, s->handle, d->key, d->label, &d->err);
}

int hsm_destroy_key(struct hsm *h, const struct hsm_key *key, const char *label)
{
	struct destruction d = {.key = key, .label = label};
	int r;

	hsm_error_clear();
	hsm_note_write(h);
	/* Every thread drops its copies (of this key and the others) before its next signature. */
	atomic_fetch_add(&h->copy_gen, 1);
	r = hsm_with_session(h, "C_DestroyObject", destroy_pair_op, &d);
	return r < 0 ? r : d.err;
}

/* A record is destroyed only while it is still the record that was read: private, ours, with
 * the same label and the very same value. */
static CK_RV destroy_record(struct hsm *h, CK_SESSION_HANDLE s, const struct hsm_record *rec,
                            int *err)
{
	uint8_t *value = NULL;
	size_t len = 0;
	CK_RV rv;
	int state = object_is(h, s, rec->handle, CKO_DATA, NULL, rec->label);

	if (state != 0) {
		*err = state < 0 ? state : 0;
		return CKR_OK;
	}
	rv = hsm_get_bytes(h, s, rec->handle, CKA_VALUE, &value, &len);
	if (rv == CKR_OBJECT_HANDLE_INVALID)
		return CKR_OK;
	if (rv != CKR_OK)
		return rv;
	if (len != rec->len || memcmp(value, rec->value, len) != 0)
		*err = hsm_fail_text(-EPERM, "record %lu changed since it was read",
		                     (unsigned long)rec->handle);
	free(value);
	return *err < 0 ? CKR_OK : hsm_destroy_handle(h, s, rec->handle);
}

static CK_RV destroy_record_op(struct hsm *h, struct hsm_session *s, void *ctx)
{
	struct destruction *d = ctx;
	CK_RV rv = hsm_require_login(h, s);

	d->err = 0;
	if (rv != CKR_OK)
		return rv;
	return destroy_record(h, s->handle, d->rec, &d->err);
}

int hsm_destroy_record(struct hsm *h, const struct hsm_record *rec)
{
	struct destruction d = {.rec = rec};
	int r;

	hsm_error_clear();
	hsm_note_write(h);
	r = hsm_with_session(h, "C_DestroyObject", destroy_record_op, &d);
	return r < 0 ? r : d.err;
}

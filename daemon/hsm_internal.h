/* Shared between hsm.c (module, login, sessions) and hsm_keys.c (keys, records, signing); the
 * rest of tokensign never sees this header or pkcs11.h. */
#pragma once
#include <pthread.h>
#include <stdbool.h>

#include <p11-kit/pkcs11.h>

#include "hsm.h"

struct hsm_session {
	CK_SESSION_HANDLE handle;
	struct hsm_session *next;
};

struct hsm {
	CK_FUNCTION_LIST *f;
	bool initialized;
	CK_SLOT_ID slot;
	char *pin_file;
	pthread_key_t tls;    /* this thread's struct hsm_session */
	pthread_mutex_t lock; /* sessions list, login */
	struct hsm_session *sessions;
	bool pin_refused; /* the token refused the PIN once: never try it again */
};

struct recovery {
	bool reopened, relogged;
};

/* Records "what: CKR_NAME" as the thread's last error and returns err. */
int hsm_fail(const char *what, CK_RV rv, int err);
int hsm_fail_text(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The one CKR_* -> negative errno mapping. */
int hsm_ckr_errno(CK_RV rv);

/* 0 for CKR_OK, else hsm_fail(what, rv, hsm_ckr_errno(rv)). */
int hsm_check(const char *what, CK_RV rv);

/* CKR_OK when the session is logged in; CKR_USER_NOT_LOGGED_IN when not (hsm_recover() then
 * logs in once); the session's own error otherwise. Private objects are invisible to a session
 * that is not logged in, so every lookup that must see them calls this first: an empty answer
 * from a logged-out session would look like a token without keys. */
CK_RV hsm_require_login(struct hsm *h, struct hsm_session *s);

/* The calling thread's own session, opened on first use. */
int hsm_session_get(struct hsm *h, struct hsm_session **ret);

/* After rv: 0 done, 1 try again (session reopened or logged in again), or a negative errno.
 * Each repair is tried once per operation; a PIN error is never retried. */
int hsm_recover(struct hsm *h, struct hsm_session *s, CK_RV rv, const char *what,
                struct recovery *rc);

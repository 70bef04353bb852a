/* Shared by the units of the PKCS#11 layer; the rest of tokensign never sees this header or
 * pkcs11.h. The units form a stack, each calling only those below it:
 *
 *   hsm_migrate.c                              the one-time migration of public halves
 *   hsm_index.c                                every key object in one pass; a pair from it
 *   hsm_keys.c                                 key checks, lookup by CKA_ID, generation, C_Sign
 *   hsm_destroy.c  hsm_records.c  hsm_touch.c  destruction by handle; records; the touch child
 *   hsm_copies.c  hsm_algs.c                   session copies; the algorithms, public keys
 *   hsm_objects.c                              object primitives (CK_RV, nothing recorded)
 *   hsm.c                                      module, token, login, sessions, hsm_with_session()
 *
 * Every public operation clears the thread's error first (hsm_error_clear()), and every one
 * that uses a session reaches the token only through hsm_with_session(), the one place that
 * recovers from a closed session or a lost login (hsm_open() opens the first session,
 * hsm_prepare_alg() asks the slot, the touch child loads a module of its own). An error is
 * recorded once, where it is decided: an op returns the token's CK_RV for the wrapper to recover
 * from or record, or records its own verdict and returns CKR_OK. */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>

#include "hsm.h"

/* A session copy of a token key (hsm_set_session_copies): handle 0 when the token refused to
 * copy it, and the token key signs. */
struct hsm_copy {
	uint8_t id[HSM_ID_LEN];
	CK_OBJECT_HANDLE handle;
};

/* A thread's own session (hsm_session_get), closed when the thread ends; hsm_open()'s keeps the
 * login and stays until hsm_close(). */
struct hsm_session {
	struct hsm *h;            /* for the pthread_key destructor */
	CK_SESSION_HANDLE handle; /* CK_INVALID_HANDLE while none is open */
	bool keep;                /* hsm_open()'s: closed only by hsm_close() */
	struct hsm_session *next;
	struct hsm_copy *copies; /* made in this session, used only by its thread */
	size_t n_copies;
	unsigned long copy_gen, copies_lost; /* struct hsm's, when the copies were checked */
	const char *call; /* the call whose answer an op returned, named by hsm_with_session() */
};

/* How a JWS signing input reaches C_Sign for one algorithm on this token. */
enum hsm_input {
	HSM_INPUT_RAW,         /* the signing input itself: the mechanism hashes (or EdDSA) */
	HSM_INPUT_DIGEST,      /* its digest, computed here (ECDSA, raw RSA-PSS) */
	HSM_INPUT_DIGEST_INFO, /* DigestInfo || digest (raw RSA PKCS#1 v1.5) */
};

struct hsm_sign_way {
	CK_MECHANISM_TYPE mech;
	enum hsm_input input;
	bool pss; /* takes CK_RSA_PKCS_PSS_PARAMS (SHA-256, MGF1-SHA-256, 32-byte salt) */
	const char *desc;
};

/* What PKCS#11 needs to make and use keys of one JWS algorithm. */
struct alg_info {
	CK_KEY_TYPE key_type;
	CK_MECHANISM_TYPE gen;
	const uint8_t *params; /* CKA_EC_PARAMS for EC and EdDSA keys */
	size_t params_len;
	const char *crv; /* JWK crv, NULL for RSA */
	const EVP_MD *(*digest)(void);
	struct hsm_sign_way ways[2]; /* in order of preference */
	size_t n_ways;
};

/* The way chosen for an algorithm by hsm_prepare_alg(). */
struct hsm_plan {
	bool ready;
	const struct hsm_sign_way *way;
	EVP_MD *md; /* the digest, fetched once (an implicit fetch per signature cost ~20k
	             * instructions); NULL when the mechanism hashes */
};

struct hsm {
	CK_FUNCTION_LIST *f;
	bool initialized;
	CK_SLOT_ID slot;
	int pin_fd;           /* the PIN file, opened by the daemon; never closed here */
	char *pin_name;       /* its path, for messages */
	pthread_key_t tls;    /* this thread's struct hsm_session */
	pthread_mutex_t lock; /* sessions list, login */
	struct hsm_session *sessions;
	atomic_bool pin_refused;        /* the token refused the PIN once: never try it again */
	void (*on_refused)(void *data); /* told once, by the thread whose login was refused */
	void *on_refused_data;
	bool session_copies;
	/* Moves when a key is destroyed: each session destroys its copies when it sees it move
	 * (its own objects, whose handles it alone holds), and copies again what it still needs. */
	atomic_ulong copy_gen;
	/* Moves at each new login: the logout before it destroyed every private session object,
	 * so each session forgets its copies without touching their handles (a token may give a
	 * stale handle to a new object). */
	atomic_ulong copies_lost;
	/* Sessions reopened and logins repeated by hsm_with_session() (hsm_repairs()). */
	atomic_ulong repairs;
	struct hsm_plan plans[_JWS_ALG_MAX];
	/* For hsm_resync(): how to name the token to another process, whether its store needs
	 * it (SoftHSM's file store), the calls that may have written token objects, and their
	 * count when another process last touched the token (under resync_lock). */
	char *module, *token;
	bool incoherent_store;
	atomic_ulong writes;
	pthread_mutex_t resync_lock;
	unsigned long touched;
};

/* Every function that creates or destroys a token object calls this first (hsm_resync()). */
static inline void hsm_note_write(struct hsm *h)
{
	atomic_fetch_add(&h->writes, 1);
}

/* The start of every public operation: a success must not leave an older error readable. */
static inline void hsm_error_clear(void)
{
	hsm_fail_text(0, "%s", "");
}

/* Returns rv, noting call as the one that answered it when it is an error: an op that makes
 * several kinds of call names the one that failed in hsm_with_session()'s message. */
static inline CK_RV hsm_called(struct hsm_session *s, const char *call, CK_RV rv)
{
	if (rv != CKR_OK)
		s->call = call;
	return rv;
}

/* ---- hsm.c: module, token, login, sessions, recovery ---- */

/* Loads and initialises the module (CKF_OS_LOCKING_OK), then finds the one initialised token
 * that matches token (a label or a pkcs11: URI) and sets h->slot. */
int hsm_module_load(struct hsm *h, const char *module);
int hsm_token_find(struct hsm *h, const char *token);

/* Records "what: CKR_NAME" as the thread's last error and returns err. */
int hsm_fail(const char *what, CK_RV rv, int err);

/* "CKR_DEVICE_ERROR" for a known code, else "CKR_(other)". */
const char *hsm_ckr_name(CK_RV rv);

/* The one CKR_* -> negative errno mapping. */
int hsm_ckr_errno(CK_RV rv);

/* 0 for CKR_OK, else hsm_fail(what, rv, hsm_ckr_errno(rv)). */
int hsm_check(const char *what, CK_RV rv);

/* The calling thread's own session, opened on first use. */
int hsm_session_get(struct hsm *h, struct hsm_session **ret);

/* Forgets the copies of session s without touching their handles: the session or the login
 * they lived in is gone, and a token may since have given a handle to a new object. */
void hsm_session_forget_copies(struct hsm_session *s);

/* CKR_OK when the session is logged in; CKR_USER_NOT_LOGGED_IN when not (hsm_with_session()
 * then logs in once); the session's own error otherwise. Private objects are invisible to a
 * session that is not logged in, so every lookup that must see them calls this first: an empty
 * answer from a logged-out session would look like a token without keys. */
CK_RV hsm_require_login(struct hsm *h, struct hsm_session *s);

/* An operation on the token, run in the calling thread's session: returns the token's answer.
 * A failure it has decided itself it records and keeps in ctx, returning CKR_OK. */
typedef CK_RV hsm_op(struct hsm *h, struct hsm_session *s, void *ctx);

/* Runs op(h, s, ctx) in the calling thread's session (opened on first use) and recovers from
 * its answer, each repair at most once per call: a closed or invalid session is reopened (its
 * copies forgotten) and op runs again; CKR_USER_NOT_LOGGED_IN logs in again (never after a
 * refused PIN) and op runs again. Returns 0 when op answered CKR_OK, else a negative errno with
 * "what: CKR_NAME" recorded (s->call instead of what when op named the call). op must be safe
 * to run again after a failure it returned. */
int hsm_with_session(struct hsm *h, const char *what, hsm_op *op, void *ctx);

/* ---- hsm_objects.c: object primitives (CK_RV, nothing recorded) ---- */

/* Reads a variable-length attribute into a new NUL-terminated buffer. */
CK_RV hsm_get_bytes(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                    CK_ATTRIBUTE_TYPE type, uint8_t **ret, size_t *ret_len);

/* Every object that matches tmpl, in one search; *ret is malloc'ed. */
CK_RV hsm_find_all(struct hsm *h, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n_tmpl,
                   CK_OBJECT_HANDLE **ret, CK_ULONG *ret_n);

/* Destroys obj; one that is gone already (another instance was first, or SoftHSM failed while
 * its file vanished) counts as destroyed. */
CK_RV hsm_destroy_handle(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj);

/* ---- hsm_copies.c: session copies ---- */

/* The handle to sign key with in session s, its session copy when copies are on (made at first
 * use; the token key when the token refuses to copy it). */
CK_OBJECT_HANDLE hsm_copy_handle(struct hsm *h, struct hsm_session *s, const struct hsm_key *key);

/* Forgets key's copy in s after the token said its handle is no longer valid. */
void hsm_copy_forget(struct hsm_session *s, const struct hsm_key *key);

/* ---- hsm_algs.c: the algorithms ---- */

/* The algorithm table; NULL (and the thread's error set) for an algorithm we do not know. */
const struct alg_info *hsm_alg_info(enum jws_alg alg);

/* What to hand C_Sign for input under plan: input itself, or a digest (with DigestInfo) written
 * to buf. Returns 0 or a negative errno. */
int hsm_sign_data(const struct hsm_plan *plan, const uint8_t *input, size_t len, uint8_t *buf,
                  size_t buf_size, const uint8_t **ret, size_t *ret_len);

/* ---- hsm_keys.c: keys ---- */

/* Reads the private key obj's type and the attributes docs/design.md demands of it. Returns the
 * token's error (the call named in s->call), or CKR_OK with *err 0 when the key may sign and -EPERM
 * when it must never be used, the reason recorded as the thread's error when record. */
CK_RV hsm_check_private(struct hsm *h, struct hsm_session *s, CK_OBJECT_HANDLE obj,
                        const struct alg_info *ai, bool record, int *err);

/* Checks the pair found as priv/pub (both halves, as hsm_find_key() says) and fills ret: the
 * last step of every lookup of a key, by id or through the index. Returns the token's error, or
 * CKR_OK with *err 0 or -EPERM (recorded). */
CK_RV hsm_key_accept(struct hsm *h, struct hsm_session *s, CK_OBJECT_HANDLE priv,
                     CK_OBJECT_HANDLE pub, const uint8_t id[HSM_ID_LEN], enum jws_alg alg,
                     struct hsm_key *ret, int *err);

/* 0 for exactly one private and one public object of a key id; -ENOENT when either is missing,
 * -EEXIST for duplicates (with the counts as the thread's error). In proto/key_index.c. */
int hsm_pair_count_check(unsigned long n_priv, unsigned long n_pub);

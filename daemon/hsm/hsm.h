/* The only door to the PKCS#11 token: module, login, sessions, keys, records, signatures.
 * Nothing else in tokensign includes pkcs11.h; callers see plain data and negative errnos. */
#pragma once
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hsm_types.h"
#include "jwk.h"
#include "jws.h"

struct hsm;

/* Loads the module, finds the token (label or RFC 7512 URI), opens a session and logs in with the
 * PIN read from pin_fd (from its start; wiped right after; pin_name names it in messages).
 * Returns 0 or a negative errno; hsm_last_error() says what failed. -EKEYREJECTED: the token
 * refused the PIN (wrong, locked, expired: never tried again). -ENODEV: no such token. */
int hsm_open(const char *module, const char *token, int pin_fd, const char *pin_name,
             struct hsm **ret);
void hsm_close(struct hsm *hsm);

/* fn(data) is called once, from the thread whose login the token refused (a login again after
 * the token lost ours), while that thread holds the token's lock: it must only take note
 * (e.g. kill(getpid(), SIGTERM)), not call into this module. Every later login fails with
 * -EKEYREJECTED without asking the token. Set before the first thread but the caller's
 * uses hsm. */
void hsm_on_pin_refused(struct hsm *hsm, void (*fn)(void *data), void *data);

/* The token refused the PIN (at hsm_open() or since): the daemon cannot sign until restarted
 * with a PIN the token accepts. */
bool hsm_pin_refused(struct hsm *hsm);

/* Sign with a session copy of each key (C_CopyObject with CKA_TOKEN false), made by each
 * thread in its own session at first use, instead of the token object: SoftHSM re-reads and
 * locks a token key's file on every signature. The copy keeps the key's CKA_SENSITIVE and
 * non-extractable attributes; a token that refuses to copy a key (CKA_COPYABLE false) signs with
 * the token key. Copies are dropped when a key is destroyed or the token logs in again. Set
 * before any signature ([hsm] session-copies, docs/performance.md). */
void hsm_set_session_copies(struct hsm *hsm, bool on);

/* Makes this process's module see objects other processes wrote to the token since our last
 * write, on a token whose store needs it (SoftHSM's file store; a no-op for any other token and
 * when we wrote nothing since the last call): runs `tokensignd --touch-token` and waits for it.
 * Call before reading the token. Returns 0 or a negative errno. */
int hsm_resync(struct hsm *hsm);

/* The child's half: with its own module instance and a public read/write session (no login),
 * creates and destroys one public CKO_DATA object of application "tokensign-touch", removing
 * any left by a touch that was killed. Returns 0 or a negative errno (hsm_last_error()). */
int hsm_touch_token(const char *module, const char *token);

/* Cheap liveness check: this thread's session answers and so does the token (C_GetTokenInfo). */
int hsm_probe(struct hsm *hsm);

/* How many times this process has reopened a session or logged in again to repair a call, in
 * all (tokensign_hsm_session_recoveries_total, through each answer's repairs). */
unsigned long hsm_repairs(struct hsm *hsm);

/* Checks that the token can generate keys for alg (RSA: of key_bits) and sign with them, and
 * picks the mechanism: a combined one (CKM_SHA256_RSA_PKCS) when the token has it, else the
 * raw one with the digest made here. Must succeed before keys of alg are made or used.
 * -EOPNOTSUPP: the token cannot serve alg (hsm_last_error() says what is missing). */
int hsm_prepare_alg(struct hsm *hsm, enum jws_alg alg, unsigned key_bits);

/* How alg is signed on this token, for the log ("CKM_ECDSA over a SHA-256 digest"). */
const char *hsm_alg_plan(struct hsm *hsm, enum jws_alg alg);

/* Generates a key pair for alg (RSA: key_bits, e = 65537) inside the token with the template of
 * docs/design.md ("State lives in the token") template, a fresh random CKA_ID and CKA_LABEL label,
 * then checks its attributes read back and that a search by its CKA_ID finds it. A pair that fails
 * the check is destroyed and the answer is -EAGAIN: on SoftHSM's file store another process writing
 * at that moment can spoil a fresh object, and another generation may succeed. */
int hsm_generate_key(struct hsm *hsm, enum jws_alg alg, unsigned key_bits, const char *label,
                     struct hsm_key *ret);

/* Finds both halves of the key pair id among the token's private objects (public objects are
 * never ours) and checks both: the private key sensitive, never extractable, always sensitive,
 * generated in the token, sign-only, of alg's type and curve; the public half a private token
 * object of the same type and curve. -ENOENT: not there; -EEXIST: more than one private object of
 * a class claims the id; -EPERM: attributes unsafe, the key must never be used. */
int hsm_find_key(struct hsm *hsm, const uint8_t id[HSM_ID_LEN], enum jws_alg alg,
                 struct hsm_key *ret);

int hsm_key_index_read(struct hsm *hsm, struct hsm_key_index **ret);

/* hsm_find_key() with the pair taken from ix, whose two halves must also carry CKA_LABEL label:
 * the same checks and the same errors. */
int hsm_key_index_find(struct hsm *hsm, const struct hsm_key_index *ix,
                       const uint8_t id[HSM_ID_LEN], const char *label, enum jws_alg alg,
                       struct hsm_key *ret);

/* Checks one half of a key pair as hsm_key_index_find() checks a pair: 0, or -EPERM when it is
 * not what we make for alg. */
int hsm_key_check_half(struct hsm *hsm, unsigned long handle, bool private_key, enum jws_alg alg);

/* Makes private every public public-key half that an earlier release made (label "tokensign:...",
 * the public half of exactly one private key of ours with the same label, and no private half
 * yet): C_CopyObject with CKA_PRIVATE true, then the original is destroyed. Run once after login,
 * before keys are read. *ret_migrated: how many were. */
int hsm_migrate_public_halves(struct hsm *hsm, size_t *ret_migrated);

/* Reads the public half as a JWK. */
int hsm_public_jwk(struct hsm *hsm, const struct hsm_key *key, struct jwk *ret);

/* Destroys both halves of key by their handles, after reading back that each is still a private
 * object with key->id and CKA_LABEL label; anything else aborts before anything is destroyed
 * (-EPERM, the reason as hsm_last_error()). A half already gone counts as destroyed. Never
 * searches by CKA_ID: another application's object with our id is never touched. */
int hsm_destroy_key(struct hsm *hsm, const struct hsm_key *key, const char *label);

/* Every record object; free with hsm_records_free(). */
int hsm_list_records(struct hsm *hsm, struct hsm_record **ret, size_t *ret_n);

/* Creates a private token record object; *ret_handle (may be NULL) is its handle. */
int hsm_store_record(struct hsm *hsm, const char *label, const char *value, size_t len,
                     unsigned long *ret_handle);

/* Destroys the record rec (as hsm_list_records() read it) after reading back that it is still a
 * private data object with the same label and the very same value; else -EPERM and nothing is
 * destroyed. A record already gone is not an error. */
int hsm_destroy_record(struct hsm *hsm, const struct hsm_record *rec);

/* Signs a JWS signing input with key: digest and mechanism follow key->alg; ECDSA gives R||S.
 * Uses the calling thread's own session. Recovers once each from a closed session, a lost login
 * and a stale handle. */
int hsm_sign(struct hsm *hsm, struct hsm_key *key, const uint8_t *input, size_t len, uint8_t *sig,
             size_t sig_size, size_t *ret_len);

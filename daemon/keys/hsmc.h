/* The request-facing process's side of the helper boundary (docs/design.md, "Privilege
 * separation"): each call is one round trip to a tokensign-hsm process that holds the module,
 * the PIN and the sessions. This process never loads the module and never reads the PIN.
 *
 * One management helper serves key generation, listing, records and destruction (one caller at
 * a time); one signing helper per signing worker serves signatures. A helper that dies, hangs
 * past its deadline or breaks the protocol is killed and replaced (with backoff); a signature
 * whose helper was lost is tried once more on another. Errors are negative errnos with
 * hsm_last_error() set; -ECONNABORTED: the helper was lost; -ENOTCONN: none could be started
 * (the keeper is gone or could not start one). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hsm_types.h"
#include "jwk.h"
#include "jws.h"

struct hsmc;

struct hsmc_opts {
	const char *module, *token, *pin_file;
	bool session_copies;
	bool module_network;     /* [hsm] module-network: helpers may open sockets */
	bool pin_cpus;           /* [hsm] pin-cpus: a signing worker and its helper on one CPU */
	unsigned n_sign;         /* signing helpers: one per signing worker */
	unsigned sign_timeout_s; /* a signature that takes longer kills its helper */
};

/* Opens the PIN file, starts the keeper (which alone keeps it open from then on), the
 * management helper (its login is the PIN's test) and the signing helpers. -EKEYREJECTED: the
 * token refused the PIN. */
int hsmc_open(const struct hsmc_opts *o, struct hsmc **ret);
void hsmc_close(struct hsmc *c);

/* fn(data) is called once, from the thread that learned that the token refused the PIN (at a
 * helper's login after the first); no helper is started after that. */
void hsmc_on_pin_refused(struct hsmc *c, void (*fn)(void *data), void *data);
bool hsmc_pin_refused(struct hsmc *c);

/* Helpers started again after one was lost (for status and metrics). */
unsigned long hsmc_restarts(struct hsmc *c);

/* Sessions the helpers reopened and logins they repeated to repair a call (for metrics). */
unsigned long hsmc_session_recoveries(struct hsmc *c);

/* The management helper's session and the token answer (its view of the token is what the keys
 * are read through). */
int hsmc_probe(struct hsmc *c);
/* A signing helper's session and the token answer: can a signature be made now. */
int hsmc_probe_signing(struct hsmc *c);
/* For readiness and the watchdog: hsmc_probe_signing(), then hsmc_probe() unless the
 * management helper is busy (a key generation may take seconds; a probe never waits for it). */
int hsmc_probe_ready(struct hsmc *c);

int hsmc_prepare_alg(struct hsmc *c, enum jws_alg alg, unsigned key_bits);
const char *hsmc_alg_plan(struct hsmc *c, enum jws_alg alg);
int hsmc_generate_key(struct hsmc *c, enum jws_alg alg, unsigned key_bits, const char *label,
                      struct hsm_key *ret);
int hsmc_key_index_read(struct hsmc *c, struct hsm_key_index **ret);
/* The pair of ix with id and label (hsm_key_index_pair()), its attributes checked by the
 * helper. */
int hsmc_key_index_find(struct hsmc *c, const struct hsm_key_index *ix,
                        const uint8_t id[HSM_ID_LEN], const char *label, enum jws_alg alg,
                        struct hsm_key *ret);
int hsmc_key_check_half(struct hsmc *c, unsigned long handle, bool private_key, enum jws_alg alg);
int hsmc_migrate_public_halves(struct hsmc *c, size_t *ret_migrated);
int hsmc_public_jwk(struct hsmc *c, const struct hsm_key *key, struct jwk *ret);
int hsmc_destroy_key(struct hsmc *c, const struct hsm_key *key, const char *label);
int hsmc_list_records(struct hsmc *c, struct hsm_record **ret, size_t *ret_n);
int hsmc_store_record(struct hsmc *c, const char *label, const char *value, size_t len,
                      unsigned long *ret_handle);
int hsmc_destroy_record(struct hsmc *c, const struct hsm_record *rec);
int hsmc_resync(struct hsmc *c);

/* Ends the management helper, so that the next management call starts a new one, whose module
 * instance reads every token object afresh (keyring_refresh()). Not counted as a restart. */
void hsmc_manage_renew(struct hsmc *c);

/* Signs a JWS signing input with key (found by its id) on a signing helper, which refuses one
 * that does not name the key or leaves its issuer's policy (-EPERM). */
int hsmc_sign(struct hsmc *c, const struct hsm_key *key, const char *input, size_t len,
              uint8_t *sig, size_t sig_size, size_t *ret_len);

/* One input of hsmc_sign_batch(): input and len are the caller's; result (0 or a negative
 * errno: -EPERM when the helper's guard refused it), error (the helper's text of a failure) and
 * the signature are the answer's. */
struct hsmc_batch_item {
	const char *input;
	size_t len;
	int result;
	char error[192]; /* PROTO_MAX_ERROR */
	uint8_t sig[HSM_MAX_SIG];
	size_t sig_len;
};

/* Signs n (1..PROTO_MAX_BATCH) signing inputs with key in one round trip to a signing helper,
 * which judges each as hsmc_sign() would: a refusal or failure of one is that item's result.
 * Returns 0 when the helper answered for every item, or a negative errno for the batch as a
 * whole (the key not found, the helper lost twice: the same recovery as hsmc_sign()). The whole
 * batch shares one deadline, the signing timeout. */
int hsmc_sign_batch(struct hsmc *c, const struct hsm_key *key, struct hsmc_batch_item *items,
                    size_t n);

/* Signs challenge (beginning with PROTO_PROVE_PREFIX) with key's private half, by its handles:
 * the proof that a new key's public half is its own. */
int hsmc_prove(struct hsmc *c, const struct hsm_key *key, const char *challenge, size_t len,
               uint8_t *sig, size_t sig_size, size_t *ret_len);

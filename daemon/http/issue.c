/* Token issuance: a request's body -> policy.c (claims) -> jws.c (signing input) -> a signature
 * from a signing helper, checked -> the token and its answer, with the audit record of the
 * decision. No HTTP here: the sign API turns an outcome into its reply. */
#include "issue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "clock.h"
#include "jws.h"
#include "jws_verify.h"
#include "log.h"
#include "policy.h"

int issue_refuse(const struct issuer_conf *ic, const struct audit_signature *caller,
                 unsigned status, const char *code, const char *message,
                 const struct audit_signature *seen, struct issue_outcome *ret)
{
	struct audit_signature a = seen ? *seen : (struct audit_signature){0};

	a.issuer = ic->name;
	a.reason = code;
	a.uid = caller->uid;
	a.pid = caller->pid;
	a.no_caller = caller->no_caller;
	audit_refused(&a);
	memset(ret, 0, sizeof(*ret));
	ret->status = status;
	ret->code = code;
	snprintf(ret->message, sizeof(ret->message), "%s", message);
	return 0;
}

static char *answer_format(const char *token, const struct key *k, enum jws_alg alg,
                           const struct signing_request *sr)
{
	/* token and kid are base64url, alg a fixed name: nothing here needs JSON escaping. Built
	 * with copies rather than asprintf, which cost ~10k instructions per token. */
	char tail[64];
	int tail_len = snprintf(tail, sizeof(tail), "\",\"iat\":%lld,\"exp\":%lld}",
	                        (long long)sr->iat, (long long)sr->exp);
	const char *parts[] = {"{\"token\":\"",   token, "\",\"kid\":\"", k->kid, "\",\"alg\":\"",
	                       jws_alg_name(alg), tail};
	size_t len = 0;
	char *s, *p;

	if (tail_len < 0 || (size_t)tail_len >= sizeof(tail))
		return NULL;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		len += strlen(parts[i]);
	s = p = malloc(len + 1);
	if (!s)
		return NULL;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		p = stpcpy(p, parts[i]);
	return s;
}

/* 128 random bits for a generated jti, taken from a per-thread pool refilled 64 at a time:
 * one RAND_bytes call per request cost ~20k instructions. A jti is public; the pool only
 * spares the DRBG's per-call overhead, and no bytes are ever handed out twice. */
#define JTI_POOL (POLICY_JTI_BYTES * 64)
static __thread uint8_t jti_pool[JTI_POOL];
static __thread size_t jti_pool_used = JTI_POOL;

static int jti_random(uint8_t out[POLICY_JTI_BYTES])
{
	if (jti_pool_used + POLICY_JTI_BYTES > JTI_POOL) {
		if (RAND_bytes(jti_pool, JTI_POOL) != 1)
			return -EIO;
		jti_pool_used = 0;
	}
	memcpy(out, jti_pool + jti_pool_used, POLICY_JTI_BYTES);
	memset(jti_pool + jti_pool_used, 0, POLICY_JTI_BYTES);
	jti_pool_used += POLICY_JTI_BYTES;
	return 0;
}

/* The token's signature, checked against the key's public half before anything leaves: a
 * faulty signature (the RSA-CRT fault attack leaks the key through one) is never answered. */
static int sign_checked(struct runtime *rt, const struct issuer_conf *ic, struct key *k,
                        const char *input, size_t input_len, uint8_t *sig, size_t *sig_len,
                        const char **code)
{
	int r = hsmc_sign(rt->hsm, &k->hk, input, input_len, sig, HSM_MAX_SIG, sig_len);

	*code = "hsm_unavailable";
	if (r < 0) {
		log_error("issuer %s: key %s: signing failed: %s", ic->name, k->kid,
		          hsm_last_error());
		return r;
	}
	/* An RSA signature is exactly as long as the modulus, even without the self-check. */
	if (k->jwk.kty == JWK_KTY_RSA && *sig_len != k->jwk.n_len) {
		log_error(
		    "issuer %s: key %s: the token returned %zu signature bytes for a %zu-byte "
		    "modulus; no token was issued",
		    ic->name, k->kid, *sig_len, k->jwk.n_len);
		return -EIO;
	}
	if (!ic->self_check)
		return 0;
	r = jws_verify(k->hk.alg, k->evp, input, input_len, sig, *sig_len);
	if (r < 0) {
		*code = "signature_check_failed";
		log_msg(LOG_CRIT,
		        "issuer %s: key %s: the token returned a signature that does not verify "
		        "(%s); no token was issued. A faulty HSM can leak its key this way: "
		        "investigate before trusting this token again",
		        ic->name, k->kid, r == -EBADMSG ? "bad signature" : "check failed");
	}
	return r;
}

/* What the audit record names of a request the policy accepted; k may be NULL (no key). */
static struct audit_signature audit_of(const struct issuer_conf *ic, const struct key *k,
                                       const struct signing_request *sr)
{
	return (struct audit_signature){
	    .issuer = ic->name,
	    .kid = k ? k->kid : NULL,
	    .jti = sr->jti,
	    .aud = sr->aud,
	    .exp = sr->exp,
	    .aud_cut = sr->aud_cut,
	};
}

/* The token's audit record is written before the token is answered: with [sign] audit =
 * required, a token whose record could not be written is never handed out. Takes answer. */
static int issued(struct runtime *rt, const struct issuer_conf *ic, const struct key *k,
                  const struct signing_request *sr, const struct audit_signature *caller,
                  char *answer, struct issue_outcome *ret)
{
	struct audit_signature a = audit_of(ic, k, sr);

	a.uid = caller->uid;
	a.pid = caller->pid;
	a.no_caller = caller->no_caller;
	memset(ret, 0, sizeof(*ret));
	if (audit_signed(&a) < 0 && rt->conf->audit == CONF_AUDIT_REQUIRED) {
		free(answer);
		ret->status = 503;
		ret->code = "audit_unavailable";
		snprintf(ret->message, sizeof(ret->message), "%s",
		         "the audit record could not be written, so no token was issued ([sign] "
		         "audit = required); see the daemon's log");
		return 0;
	}
	ret->status = 200;
	ret->answer = answer;
	return 0;
}

/* One attempt with the issuer's current signer: 0 and *ret_answer, or a negative errno with
 * *code set. -ENOENT: the key went away under us (revoked between our view and the token).
 * -EAGAIN: the signer now is bound to another iss than the payload's (a handover after an iss
 * change happened since the payload was made): the payload must be made again. */
static int sign_once(struct runtime *rt, const struct issuer_conf *ic,
                     const struct signing_request *sr, const char *iss, struct key **ret_key,
                     char **ret_answer, const char **code, struct keyset **ret_set)
{
	struct keyset *set = keyring_acquire(rt->keyring, keyring_index(rt->keyring, ic));
	struct key *k = keyset_signer(set, sr->iat);
	uint8_t sig[HSM_MAX_SIG];
	size_t sig_len = 0, input_len = 0;
	char *input = NULL, *token = NULL;
	int r;

	*ret_set = set;
	*ret_key = k;
	if (!k) {
		*code = "no_active_key";
		return -ENOKEY;
	}
	if (strcmp(k->iss, iss) != 0)
		return -EAGAIN;
	/* The key's own algorithm: after an algorithm change the old key signs as what it is
	 * until its successor takes over. */
	r = jws_signing_input(k->hk.alg, k->kid, sr->typ, sr->payload, sr->payload_len, &input,
	                      &input_len);
	if (r == 0)
		r = sign_checked(rt, ic, k, input, input_len, sig, &sig_len, code);
	if (r == 0 && (r = jws_compact(input, input_len, sig, sig_len, &token)) == 0 &&
	    !(*ret_answer = answer_format(token, k, k->hk.alg, sr)))
		r = -ENOMEM;
	free(input);
	free(token);
	return r;
}

static bool signer_changed(struct runtime *rt, const struct issuer_conf *ic, const struct key *was,
                           int64_t now)
{
	struct keyset *set = keyring_acquire(rt->keyring, keyring_index(rt->keyring, ic));
	struct key *k = keyset_signer(set, now);
	bool changed = k && was && strcmp(k->kid, was->kid) != 0;

	keyset_release(set);
	return changed;
}

/* The iss the issuer's signer at now is bound to (the configured one when there is none:
 * the request is then refused all the same). Caller frees. */
static char *signer_iss(struct runtime *rt, const struct issuer_conf *ic, int64_t now)
{
	struct keyset *set = keyring_acquire(rt->keyring, keyring_index(rt->keyring, ic));
	struct key *k = keyset_signer(set, now);
	char *iss = strdup(k ? k->iss : ic->iss);

	keyset_release(set);
	return iss;
}

/* Signs sr (whose payload carries iss) with the issuer's active key and fills *ret, the answer
 * or the refusal. *ret_again: nothing was decided, the payload must be made again for the
 * signer's iss (sign_once()). */
static int sign_and_answer(struct runtime *rt, const struct issuer_conf *ic,
                           const struct signing_request *sr, const char *iss,
                           const struct audit_signature *caller, struct issue_outcome *ret,
                           bool *ret_again)
{
	const char *code = "hsm_unavailable";
	struct keyset *set = NULL;
	struct key *k = NULL;
	char *answer = NULL;
	int r;

	r = sign_once(rt, ic, sr, iss, &k, &answer, &code, &set);
	/* Revoked while we signed (the token no longer has the key, or fails on it as it goes):
	 * if the view has moved on to another key since, one more try with that one. */
	if (r < 0 && r != -ENOKEY && r != -EAGAIN && strcmp(code, "signature_check_failed") != 0 &&
	    signer_changed(rt, ic, k, sr->iat)) {
		keyset_release(set);
		r = sign_once(rt, ic, sr, iss, &k, &answer, &code, &set);
	}
	*ret_again = r == -EAGAIN;
	if (r == -EAGAIN) {
		keyset_release(set);
		return 0;
	}
	struct audit_signature seen = audit_of(ic, k, sr);
	if (r == -ENOKEY) {
		log_error("issuer %s: no active key; refusing to sign", ic->name);
		r = issue_refuse(ic, caller, 503, "no_active_key",
		                 "the issuer has no key that may sign now", &seen, ret);
	} else if (r < 0) {
		r = issue_refuse(ic, caller, 503, code,
		                 "the token did not sign; see the daemon's log", &seen, ret);
	} else {
		r = issued(rt, ic, k, sr, caller, answer, ret);
		answer = NULL;
	}
	keyset_release(set);
	free(answer);
	return r;
}

int token_issue(struct runtime *rt, const struct issuer_conf *ic, const char *body, size_t len,
                const struct audit_signature *caller, struct issue_outcome *ret)
{
	struct signing_request sr = {0};
	struct policy_error perr = {0};
	uint8_t jti[POLICY_JTI_BYTES];
	int r;

	if (jti_random(jti) < 0)
		return issue_refuse(ic, caller, 503, "hsm_unavailable", "no randomness for jti",
		                    NULL, ret);
	for (int attempt = 0;; attempt++) {
		bool again = false;
		char *iss = signer_iss(rt, ic, clock_now());
		struct issuer_conf as = *ic;

		if (!iss)
			return -ENOMEM;
		/* A key signs only for the iss it was made for: after an iss change, the old key
		 * signs with its own until its successor takes over (docs/design.md). */
		as.iss = iss;
		r = policy_apply(&as, body, len, clock_now(), jti, &sr, &perr);
		if (r == -EINVAL) {
			struct audit_signature seen = {
			    .jti = perr.jti, .aud = perr.aud, .aud_cut = perr.aud_cut};
			r = issue_refuse(ic, caller, (unsigned)perr.status, perr.code, perr.message,
			                 &seen, ret);
		} else if (r < 0) {
			log_error("issuer %s: cannot build the payload: %s", ic->name,
			          strerror(-r));
			r = issue_refuse(ic, caller, 500, "internal_error",
			                 "the daemon could not build the token; see its log", NULL,
			                 ret);
		} else
			r = sign_and_answer(rt, ic, &sr, iss, caller, ret, &again);
		free(sr.payload);
		free(iss);
		memset(&sr, 0, sizeof(sr));
		if (r < 0 || !again || attempt == 1)
			return r == 0 && again
			           ? issue_refuse(ic, caller, 503, "no_active_key",
			                          "the issuer's key changed; try again", NULL, ret)
			           : r;
	}
}

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
	a.unit = caller->unit;
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

/* One request on its way through issuance: a single sign is one, a batch up to
 * POLICY_MAX_BATCH. Every request goes through the same steps: the policy (item_policy()), a
 * signing pass (sign_pass()), the decision with its audit record (item_decide()). */
struct item {
	const char *body; /* the request, len bytes */
	size_t len;
	const struct json_t *tree; /* the request parsed already, or NULL */
	uint8_t jti[POLICY_JTI_BYTES];
	struct signing_request sr; /* sr.payload: the policy accepted it, for this attempt */
	bool decided;              /* out is final and audited */
	bool pending;              /* in the signing pass under way */
	bool lost;                 /* refused because no signing helper could be reached */
	struct issue_outcome out;
	/* One signing pass: its input, the helper's answer, and what came of it. */
	char *input;
	struct hsmc_batch_item sig;
	int r;
	const char *code;
	char *answer;
};

/* The checks of a signature the token returned, before anything leaves: a faulty signature
 * (the RSA-CRT fault attack leaks the key through one) is never answered. */
static int signature_checked(const struct issuer_conf *ic, const struct key *k, struct item *it)
{
	int r;

	it->code = "hsm_unavailable";
	/* An RSA signature is exactly as long as the modulus, even without the self-check. */
	if (k->jwk.kty == JWK_KTY_RSA && it->sig.sig_len != k->jwk.n_len) {
		log_error(
		    "issuer %s: key %s: the token returned %zu signature bytes for a %zu-byte "
		    "modulus; no token was issued",
		    ic->name, k->kid, it->sig.sig_len, k->jwk.n_len);
		return -EIO;
	}
	if (!ic->self_check)
		return 0;
	r = jws_verify(k->hk.alg, k->evp, it->input, it->sig.len, it->sig.sig, it->sig.sig_len);
	if (r < 0) {
		it->code = "signature_check_failed";
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
	a.unit = caller->unit;
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

/* Forgets what a signing pass left in it (not its outcome). */
static void item_pass_clear(struct item *it)
{
	free(it->input);
	free(it->answer);
	it->input = it->answer = NULL;
	it->r = 0;
	it->code = "hsm_unavailable";
	memset(&it->sig, 0, sizeof(it->sig));
}

/* Signs the pending items' inputs: one PROTO_SIGN for a single one (the single sign's path),
 * one PROTO_SIGN_BATCH for more. A failure of the whole call is each item's. */
static void sign_inputs(struct runtime *rt, const struct key *k, struct item **todo, size_t m)
{
	struct hsmc_batch_item *v;
	int r;

	if (m == 1) {
		struct hsmc_batch_item *s = &todo[0]->sig;
		s->result =
		    hsmc_sign(rt->hsm, &k->hk, s->input, s->len, s->sig, HSM_MAX_SIG, &s->sig_len);
		if (s->result < 0)
			snprintf(s->error, sizeof(s->error), "%s", hsm_last_error());
		return;
	}
	v = calloc(m, sizeof(*v));
	r = v ? 0 : -ENOMEM;
	for (size_t i = 0; v && i < m; i++)
		v[i] = todo[i]->sig;
	if (v)
		r = hsmc_sign_batch(rt->hsm, &k->hk, v, m);
	for (size_t i = 0; i < m; i++) {
		if (r == 0) {
			todo[i]->sig = v[i];
			continue;
		}
		todo[i]->sig.result = r;
		snprintf(todo[i]->sig.error, sizeof(todo[i]->sig.error), "%s",
		         r == -ENOMEM ? "out of memory" : hsm_last_error());
	}
	free(v);
}

/* The signature of a pending item made into its token and answer, or its failure logged. */
static void item_token(const struct issuer_conf *ic, const struct key *k, struct item *it)
{
	char *token = NULL;

	if (it->sig.result < 0) {
		it->r = it->sig.result;
		log_error("issuer %s: key %s: signing failed: %s", ic->name, k->kid, it->sig.error);
		return;
	}
	it->r = signature_checked(ic, k, it);
	if (it->r == 0 &&
	    (it->r = jws_compact(it->input, it->sig.len, it->sig.sig, it->sig.sig_len, &token)) ==
	        0 &&
	    !(it->answer = answer_format(token, k, k->hk.alg, &it->sr)))
		it->r = -ENOMEM;
	free(token);
}

/* One pass with the issuer's signer at now over the pending items: 0 with each one's r, code
 * and answer; or for all of them -ENOKEY (no signer) or -EAGAIN (the signer now is bound to
 * another iss than the payloads', made for iss: a handover after an iss change happened since,
 * the payloads must be made again). *ret_set is held (the caller releases it), *ret_key in it. */
static int sign_pass(struct runtime *rt, const struct issuer_conf *ic, const char *iss, int64_t now,
                     struct item *items, size_t n, struct keyset **ret_set, struct key **ret_key)
{
	struct keyset *set = keyring_acquire(rt->keyring, keyring_index(rt->keyring, ic));
	struct key *k = keyset_signer(set, now);
	struct item *todo[POLICY_MAX_BATCH];
	size_t m = 0;

	*ret_set = set;
	*ret_key = k;
	if (!k)
		return -ENOKEY;
	if (strcmp(k->iss, iss) != 0)
		return -EAGAIN;
	for (size_t i = 0; i < n; i++) {
		struct item *it = &items[i];
		if (!it->pending)
			continue;
		item_pass_clear(it);
		/* The key's own algorithm: after an algorithm change the old key signs as what
		 * it is until its successor takes over. */
		it->r = jws_signing_input(k->hk.alg, k->kid, it->sr.typ, it->sr.payload,
		                          it->sr.payload_len, &it->input, &it->sig.len);
		it->sig.input = it->input;
		if (it->r == 0)
			todo[m++] = it;
	}
	if (m > 0)
		sign_inputs(rt, k, todo, m);
	for (size_t i = 0; i < m; i++)
		item_token(ic, k, todo[i]);
	return 0;
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

/* A pending item's outcome after its signing pass with k (r: the pass's, else its own), with
 * its audit record. */
static int item_decide(struct runtime *rt, const struct issuer_conf *ic, const struct key *k, int r,
                       const struct audit_signature *caller, struct item *it)
{
	struct audit_signature seen = audit_of(ic, k, &it->sr);

	it->pending = false;
	it->decided = true;
	if (r == 0)
		r = it->r;
	it->lost = r == -ECONNABORTED || r == -ENOTCONN;
	if (r == -ENOKEY)
		return issue_refuse(ic, caller, 503, "no_active_key",
		                    "the issuer has no key that may sign now", &seen, &it->out);
	if (r < 0)
		return issue_refuse(ic, caller, 503, it->code,
		                    "the token did not sign; see the daemon's log", &seen,
		                    &it->out);
	r = issued(rt, ic, k, &it->sr, caller, it->answer, &it->out);
	it->answer = NULL;
	return r;
}

/* Revoked while we signed (the token no longer has the key, or fails on it as it goes): an
 * item that may be signed once more with the key the view has moved on to since. */
static bool may_retry(const struct item *it)
{
	return it->pending && it->r < 0 && strcmp(it->code, "signature_check_failed") != 0;
}

/* Signs the items the policy accepted (whose payloads carry iss) with the issuer's signer at
 * now and decides each. *ret_again: those undecided must have their payloads made again for the
 * signer's iss (sign_pass()). */
static int sign_and_answer(struct runtime *rt, const struct issuer_conf *ic, const char *iss,
                           int64_t now, const struct audit_signature *caller, struct item *items,
                           size_t n, bool *ret_again)
{
	struct keyset *set = NULL;
	struct key *k = NULL;
	bool retry = false;
	int r;

	for (size_t i = 0; i < n; i++)
		items[i].pending = !items[i].decided && items[i].sr.payload;
	r = sign_pass(rt, ic, iss, now, items, n, &set, &k);
	for (size_t i = 0; r == 0 && i < n; i++)
		retry |= may_retry(&items[i]);
	if (retry && signer_changed(rt, ic, k, now)) {
		/* Those done are decided with the key that signed them; the rest once more. */
		for (size_t i = 0; i < n; i++)
			if (items[i].pending && !may_retry(&items[i]) &&
			    item_decide(rt, ic, k, 0, caller, &items[i]) < 0)
				goto out;
		keyset_release(set);
		r = sign_pass(rt, ic, iss, now, items, n, &set, &k);
	}
	*ret_again = r == -EAGAIN;
	if (r == -EAGAIN) {
		r = 0;
		goto out;
	}
	if (r == -ENOKEY)
		log_error("issuer %s: no active key; refusing to sign", ic->name);
	for (size_t i = 0; i < n; i++)
		if (items[i].pending)
			item_decide(rt, ic, k, r, caller, &items[i]);
	r = 0;
out:
	for (size_t i = 0; i < n; i++)
		item_pass_clear(&items[i]);
	keyset_release(set);
	return r;
}

/* The policy of the issuer (as, its iss the signer's) applied to an undecided item at now: its
 * payload, or its refusal decided and audited. */
static int item_policy(const struct issuer_conf *ic, const struct issuer_conf *as, int64_t now,
                       const struct audit_signature *caller, struct item *it)
{
	struct policy_error perr = {0};
	int r;

	/* A single sign's body is cut off at this size before it gets here; a batch's request
	 * is held to it here. */
	if (it->len > POLICY_MAX_BODY) {
		it->decided = true;
		return issue_refuse(ic, caller, 413, "body_too_large", "the request is over 64 KiB",
		                    NULL, &it->out);
	}
	r = it->tree ? policy_apply_item(as, it->tree, now, it->jti, &it->sr, &perr)
	             : policy_apply(as, it->body, it->len, now, it->jti, &it->sr, &perr);
	if (r == 0)
		return 0;
	it->decided = true;
	if (r == -EINVAL) {
		struct audit_signature seen = {
		    .jti = perr.jti, .aud = perr.aud, .aud_cut = perr.aud_cut};
		return issue_refuse(ic, caller, (unsigned)perr.status, perr.code, perr.message,
		                    &seen, &it->out);
	}
	log_error("issuer %s: cannot build the payload: %s", ic->name, strerror(-r));
	return issue_refuse(ic, caller, 500, "internal_error",
	                    "the daemon could not build the token; see its log", NULL, &it->out);
}

static void items_free_payloads(struct item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(items[i].sr.payload);
		memset(&items[i].sr, 0, sizeof(items[i].sr));
	}
}

/* Decides every item: a single sign is a batch of one. Returns 0, or -ENOMEM when nothing can
 * be answered (outcomes already decided keep their answers for the caller to free). */
static int issue_items(struct runtime *rt, const struct issuer_conf *ic,
                       const struct audit_signature *caller, struct item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (jti_random(items[i].jti) < 0) {
			items[i].decided = true;
			issue_refuse(ic, caller, 503, "hsm_unavailable", "no randomness for jti",
			             NULL, &items[i].out);
		}
	for (int attempt = 0;; attempt++) {
		bool again = false;
		int64_t now = clock_now();
		char *iss = signer_iss(rt, ic, now);
		struct issuer_conf as = *ic;
		int r = 0;

		if (!iss)
			return -ENOMEM;
		/* A key signs only for the iss it was made for: after an iss change, the old key
		 * signs with its own until its successor takes over (docs/design.md). One now for
		 * every item: a batch is signed by one key. */
		as.iss = iss;
		for (size_t i = 0; i < n && r == 0; i++)
			if (!items[i].decided)
				r = item_policy(ic, &as, now, caller, &items[i]);
		if (r == 0)
			r = sign_and_answer(rt, ic, iss, now, caller, items, n, &again);
		items_free_payloads(items, n);
		free(iss);
		if (r < 0 || !again)
			return r;
		if (attempt == 1)
			break;
	}
	for (size_t i = 0; i < n; i++)
		if (!items[i].decided) {
			items[i].decided = true;
			issue_refuse(ic, caller, 503, "no_active_key",
			             "the issuer's key changed; try again", NULL, &items[i].out);
		}
	return 0;
}

int token_issue(struct runtime *rt, const struct issuer_conf *ic, const char *body, size_t len,
                const struct audit_signature *caller, struct issue_outcome *ret)
{
	struct item it = {.body = body, .len = len};
	int r = issue_items(rt, ic, caller, &it, 1);

	if (r < 0) {
		free(it.out.answer);
		return r;
	}
	*ret = it.out;
	return 0;
}

int token_issue_batch(struct runtime *rt, const struct issuer_conf *ic,
                      const struct issue_request *reqs, size_t n,
                      const struct audit_signature *caller, struct issue_outcome *ret,
                      bool *ret_lost)
{
	bool lost = false, granted = false;
	struct item *items;
	int r;

	if (n == 0 || n > POLICY_MAX_BATCH)
		return -EINVAL;
	items = calloc(n, sizeof(*items));
	if (!items)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		items[i].body = reqs[i].body;
		items[i].len = reqs[i].len;
		items[i].tree = reqs[i].tree;
	}
	r = issue_items(rt, ic, caller, items, n);
	for (size_t i = 0; i < n; i++) {
		lost |= items[i].lost;
		granted |= items[i].out.status == 200;
		if (r == 0)
			ret[i] = items[i].out;
		else
			free(items[i].out.answer);
	}
	free(items);
	*ret_lost = r == 0 && lost && !granted;
	return r;
}

/* Key generation, rescheduling and destruction, in an order that a crash cannot make unsafe:
 * a record is written after its key pair and destroyed before it, and a record is revised by
 * writing the new revision before removing the old. */
#include "rotation.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "clock.h"
#include "counters.h"
#include "custody.h"
#include "log.h"

#define RETRY_MAX 60 /* seconds between attempts to generate a key, at most */

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* Writes k's record (with issuer's name) and keeps what was written, so that it can later be
 * destroyed only while it is still exactly that. */
static int record_store(struct keyring *kr, const char *issuer, struct key *k)
{
	char label[RECORD_LABEL_SIZE];
	char *rec = keyring_record_format(issuer, k);
	struct hsm_record written = {0};
	int r;

	if (!rec)
		return -ENOMEM;
	r = record_label(issuer, k->kid, label, sizeof(label));
	if (r == 0)
		r = hsmc_store_record(kr->hsm, label, rec, strlen(rec), &written.handle);
	if (r == 0) {
		written.label = label;
		written.value = rec;
		written.len = strlen(rec);
		written.private_obj = true;
		custody_rec_clear(&k->rec);
		r = custody_rec_copy(&k->rec, &written);
	}
	free(rec);
	return r;
}

/* How many pairs one key creation makes when each fails its read-back check (hsmc_generate_key()
 * -EAGAIN), 100 ms apart: seen with two SoftHSM processes generating at the same moment. */
#define GENERATE_TRIES 3

static int pair_generate(struct keyring *kr, const struct issuer_conf *ic, const char *label,
                         struct key *ret)
{
	int r;

	for (int tries = 1;; tries++) {
		r = hsmc_generate_key(kr->hsm, ic->alg, ic->key_size, label, &ret->hk);
		if (r != -EAGAIN || tries == GENERATE_TRIES)
			return r;
		log_warning("issuer %s: a new key pair failed its check and was destroyed (%s); "
		            "generating another",
		            ic->name, hsm_last_error());
		nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
	}
}

/* Makes a key in the token and commits it with its record, written last: a crash in between
 * leaves a key pair without a record, which is never used and is cleaned up later. The key is
 * bound to the issuer's current iss and algorithm for life. Frees what ret holds on failure. */
static int key_create(struct keyring *kr, const struct issuer_conf *ic, int64_t activates_at,
                      bool at_once, struct key *ret)
{
	char label[RECORD_LABEL_SIZE];
	int r;

	memset(ret, 0, sizeof(*ret));
	custody_key_label(ic->name, label);
	ret->iss = strdup(ic->iss);
	if (!ret->iss)
		return -ENOMEM;
	r = pair_generate(kr, ic, label, ret);
	if (r < 0) {
		free(ret->iss);
		return r;
	}
	r = hsmc_public_jwk(kr->hsm, &ret->hk, &ret->jwk);
	if (r == 0)
		r = jwk_thumbprint(&ret->jwk, ret->kid);
	/* Published means in this instance's JWKS: the record is written and the JWKS rebuilt
	 * within the next second. Counting prepublish from the whole second after that keeps a
	 * late key from signing a fraction of a second early. */
	/* A key active at once is recorded as made when it starts: the pass's own clock. */
	ret->created_at = at_once ? activates_at : clock_now() + 1;
	if (!at_once && activates_at < schedule_add(ret->created_at, (int64_t)ic->prepublish))
		activates_at = schedule_add(ret->created_at, (int64_t)ic->prepublish);
	ret->activates_at = activates_at;
	ret->retires_at = schedule_add(activates_at, (int64_t)ic->rotation_period);
	ret->max_token_ttl = (int64_t)ic->max_token_ttl;
	if (r == 0)
		r = record_store(kr, ic->name, ret);
	if (r < 0) {
		/* Not logged here: the caller decides (the scheduler retries and logs the issuer's
		 * problem, an operator's request answers with it), and this text is the reason. */
		char why[192];
		snprintf(why, sizeof(why), "%s", hsm_last_error());
		hsmc_destroy_key(kr->hsm, &ret->hk, label);
		free(ret->iss);
		custody_rec_clear(&ret->rec);
		return hsm_fail_text(r, "a new key could not be recorded and was destroyed: %s",
		                     why);
	}
	audit_key(AUDIT_GENERATED, ic->name, ret->kid, -1);
	free(ret->iss);
	custody_rec_clear(&ret->rec);
	return 0;
}

/* Writes a new revision of k's record (k is a copy the caller owns the record of), then removes
 * the old one. */
static int record_revise(struct keyring *kr, const char *issuer, struct key *k)
{
	struct hsm_record old = k->rec;
	int r;

	k->seq++;
	memset(&k->rec, 0, sizeof(k->rec));
	r = record_store(kr, issuer, k);
	if (r < 0) {
		log_error("issuer %s: key %s: cannot write its new schedule: %s", issuer, k->kid,
		          hsm_last_error());
	} else if (hsmc_destroy_record(kr->hsm, &old) < 0) {
		log_warning("issuer %s: key %s: old record revision left behind (%s); it is "
		            "superseded and will be removed later",
		            issuer, k->kid, hsm_last_error());
	}
	custody_rec_clear(&k->rec);
	k->rec = old; /* the caller's copy of the key still points at what it owned */
	return r;
}

/* The last step of a proof that k may go: it is ours (usable), and for an expiry it is past its
 * destroy_after by the clock of this moment, not only of the pass. Then record first (re-read and
 * compared byte for byte), so the key leaves every JWKS before its pair (re-read too) goes. */
static int key_destroy(struct keyring *kr, const struct issuer_conf *ic, const struct key *k,
                       bool expiry, const char *why)
{
	char label[RECORD_LABEL_SIZE];
	int r = 0;

	custody_key_label(ic->name, label);
	if (!k->usable)
		r = hsm_fail_text(-EPERM, "the key is quarantined");
	else if (expiry && (k->st.state != KEY_EXPIRED || k->st.destroy_after > clock_now()))
		r = hsm_fail_text(-EPERM, "it may still verify a live token");
	if (r == 0)
		r = hsmc_destroy_record(kr->hsm, &k->rec);
	if (r == 0)
		r = hsmc_destroy_key(kr->hsm, &k->hk, label);
	if (r < 0) {
		log_error("issuer %s: key %s is not destroyed: %s", ic->name, k->kid,
		          hsm_last_error());
		return r;
	}
	log_notice("issuer %s: destroyed key %s (%s)", ic->name, k->kid, why);
	audit_key(AUDIT_DESTROYED, ic->name, k->kid, -1);
	return 0;
}

static void issuer_problem(struct issuer_keys *ik, int64_t now, int r)
{
	unsigned shift = ik->failures < 6 ? ik->failures : 6;
	int64_t wait = min64((int64_t)1 << shift, RETRY_MAX);

	ik->failures++;
	metrics_add(metrics_series(&counters.key_generation_failures, ik->conf->name, NULL), 1);
	ik->retry_at = now + wait;
	snprintf(ik->problem, sizeof(ik->problem),
	         "cannot generate the next key (%s); retrying in %llds", hsm_last_error(),
	         (long long)wait);
	log_error("issuer %s: %s", ik->conf->name, ik->problem);
	(void)r;
}

/* The issuer has its pending key again (ours, or one another instance made): a past failure to
 * generate no longer stands, or /readyz and /v1/status would report it for good. */
static void issuer_settled(struct issuer_keys *ik)
{
	ik->failures = 0;
	ik->retry_at = 0;
	ik->problem[0] = '\0';
}

/* The key that takes over next: pending, usable, and made for the issuer's current iss and
 * algorithm. */
static bool good_pending(const struct issuer_conf *ic, const struct key *k)
{
	return k->st.state == KEY_PENDING && k->usable && !k->withdrawn_at &&
	       keyring_key_current(ic, k);
}

/* A pending key made for another iss or algorithm than the issuer's now must never start: it is
 * withdrawn (a record revision; it never signed, and stays published as a retired key would). */
static void withdraw_stale_pending(struct keyring *kr, size_t i, struct keyset *set, int64_t now,
                                   bool *changed)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;

	for (size_t j = 0; j < set->n; j++) {
		struct key copy = set->keys[j];
		if (copy.st.state != KEY_PENDING || copy.withdrawn_at || !copy.usable ||
		    keyring_key_current(ic, &copy))
			continue;
		copy.withdrawn_at = now;
		if (record_revise(kr, ic->name, &copy) == 0) {
			log_notice("issuer %s: pending key %s was made for iss '%s' with %s; the "
			           "configuration changed, so it is withdrawn and never signs",
			           ic->name, copy.kid, copy.iss, jws_alg_name(copy.hk.alg));
			*changed = true;
		}
	}
}

/* When the next key starts: at the active key's scheduled retirement, or after prepublish alone
 * when the active key was made for another iss or algorithm (a configuration change is a
 * rotation). At first start (no key at all) at once: nothing was signed, nobody can miss it. */
static int64_t pending_start(const struct issuer_conf *ic, const struct keyset *set, int64_t now,
                             bool *ret_at_once)
{
	struct schedule_timing t = keyring_timing(ic);
	bool empty = true;

	for (size_t j = 0; j < set->n; j++)
		if (set->keys[j].st.state != KEY_EXPIRED)
			empty = false;
	*ret_at_once = empty;
	if (empty)
		return now;
	if (set->active && !keyring_key_current(ic, set->active))
		return schedule_add(now, t.prepublish);
	return schedule_pending_start(&t, set->active ? set->active->retires_at : -1, now);
}

/* Generates the pending key when there is none. */
static int ensure_pending(struct keyring *kr, size_t i, struct keyset *set, int64_t now,
                          bool *changed)
{
	struct issuer_keys *ik = &kr->issuers[i];
	bool at_once;
	int64_t start;
	struct key k;
	int r;

	for (size_t j = 0; j < set->n; j++) {
		if (good_pending(ik->conf, &set->keys[j])) {
			issuer_settled(ik);
			return 0;
		}
	}
	if (now < ik->retry_at)
		return 0;
	start = pending_start(ik->conf, set, now, &at_once);
	r = key_create(kr, ik->conf, start, at_once, &k);
	if (r < 0) {
		issuer_problem(ik, now, r);
		return r;
	}
	issuer_settled(ik);
	*changed = true;
	return 0;
}

/* Destroys expired keys and all good pending keys but the first (two instances generated one
 * each); a pending key never signed, so nothing can depend on it. Quarantined keys are kept. */
static void prune(struct keyring *kr, size_t i, struct keyset *set, bool *changed)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;
	bool pending_seen = false;

	for (size_t j = 0; j < set->n; j++) {
		const struct key *k = &set->keys[j];
		if (k->st.state == KEY_EXPIRED && k->usable) {
			if (key_destroy(kr, ic, k, true, "every token it signed has expired") == 0)
				*changed = true;
		} else if (good_pending(ic, k)) {
			if (pending_seen &&
			    key_destroy(kr, ic, k, false,
			                "a second pending key; the first one stays") == 0)
				*changed = true;
			pending_seen = true;
		}
	}
}

static bool id_in(uint8_t (*ids)[HSM_ID_LEN], size_t n, const uint8_t *id)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(ids[i], id, HSM_ID_LEN) == 0)
			return true;
	return false;
}

/* A key pair without a record is a generation that never finished. Another instance may be
 * about to record it, so it goes only once it has been recordless for HALFMADE_AGE seconds: a
 * generation takes milliseconds (seconds for RSA-4096), never that long. Never while a record
 * cannot be parsed: the pair might be the key it describes. */
#define HALFMADE_AGE 60

static int64_t halfmade_since(const struct keyring *kr, const uint8_t *id, int64_t now)
{
	for (size_t j = 0; j < kr->n_halfmade_seen; j++)
		if (memcmp(kr->halfmade_seen[j].id, id, HSM_ID_LEN) == 0)
			return kr->halfmade_seen[j].first_seen;
	return now;
}

static void sweep_halfmade(struct keyring *kr, int64_t now)
{
	const struct token_view *v = &kr->view;
	struct seen *keep = calloc(v->n_halfmade ? v->n_halfmade : 1, sizeof(*keep));
	size_t n_keep = 0;

	for (size_t i = 0; keep && i < v->n_halfmade; i++) {
		const struct halfmade *hm = &v->halfmade[i];
		char label[RECORD_LABEL_SIZE];
		int64_t first = halfmade_since(kr, hm->hk.id, now);

		custody_key_label(kr->issuers[hm->issuer].conf->name, label);
		if (v->halfmade_ok && now - first >= HALFMADE_AGE &&
		    hsmc_destroy_key(kr->hsm, &hm->hk, label) == 0) {
			log_notice("issuer %s: destroyed a half-made key pair without a record",
			           kr->issuers[hm->issuer].conf->name);
			continue;
		}
		memcpy(keep[n_keep].id, hm->hk.id, HSM_ID_LEN);
		keep[n_keep++].first_seen = first;
	}
	free(kr->halfmade_seen);
	kr->halfmade_seen = keep;
	kr->n_halfmade_seen = keep ? n_keep : 0;
}

static void sweep_stale_records(struct keyring *kr, bool *changed)
{
	for (size_t i = 0; i < kr->view.n_stale; i++)
		if (hsmc_destroy_record(kr->hsm, &kr->view.stale[i]) == 0)
			*changed = true;
}

/* A pending key whose key pair is incomplete can never sign: it goes, record first, and
 * ensure_pending() makes another. Only when two maintenances in a row found it so: another
 * process may read a fresh object of ours while it is being written. */
static void sweep_damaged(struct keyring *kr, bool *changed)
{
	const struct token_view *v = &kr->view;
	uint8_t(*seen)[HSM_ID_LEN] = calloc(v->n_damaged ? v->n_damaged : 1, sizeof(*seen));
	size_t n_seen = 0;

	for (size_t i = 0; i < v->n_damaged; i++) {
		const struct damaged *d = &v->damaged[i];
		const char *name = kr->issuers[d->issuer].conf->name;
		char label[RECORD_LABEL_SIZE];

		if (!id_in(kr->suspects, kr->n_suspects, d->hk.id)) {
			if (seen)
				memcpy(seen[n_seen++], d->hk.id, HSM_ID_LEN);
			continue;
		}
		custody_key_label(name, label);
		if (hsmc_destroy_record(kr->hsm, &d->rec) < 0 ||
		    hsmc_destroy_key(kr->hsm, &d->hk, label) < 0) {
			log_error("issuer %s: cannot remove pending key %s, whose key pair is "
			          "incomplete: %s",
			          name, d->kid, hsm_last_error());
			continue;
		}
		log_notice("issuer %s: destroyed pending key %s (its key pair is incomplete in "
		           "the token)",
		           name, d->kid);
		audit_key(AUDIT_DESTROYED, name, d->kid, -1);
		*changed = true;
	}
	free(kr->suspects);
	kr->suspects = seen;
	kr->n_suspects = seen ? n_seen : 0;
}

/* When the issuer's keys next change (schedule_next_change()); in a second when out of memory. */
static int64_t issuer_next(const struct issuer_keys *ik, const struct keyset *set, int64_t now)
{
	struct schedule_key *sk = calloc(set->n ? set->n : 1, sizeof(*sk));
	struct schedule_state *st = calloc(set->n ? set->n : 1, sizeof(*st));
	int64_t next = now + 1;

	if (sk && st) {
		for (size_t j = 0; j < set->n; j++) {
			const struct key *k = &set->keys[j];
			sk[j] = (struct schedule_key){k->kid, k->activates_at, k->retires_at,
			                              k->max_token_ttl};
			st[j] = k->st;
		}
		next = schedule_next_change(sk, st, set->n,
		                            set->active ? set->active_until : INT64_MAX,
		                            ik->problem[0] ? ik->retry_at : INT64_MAX);
	}
	free(sk);
	free(st);
	return next;
}

static void for_each_issuer(struct keyring *kr, int64_t now, bool *changed,
                            void (*fn)(struct keyring *, size_t, struct keyset *, int64_t, bool *))
{
	for (size_t i = 0; i < kr->n; i++) {
		struct keyset *set = keyring_acquire(kr, i);
		if (set)
			fn(kr, i, set, now, changed);
		keyset_release(set);
	}
}

static void prune_one(struct keyring *kr, size_t i, struct keyset *set, int64_t now, bool *changed)
{
	(void)now;
	prune(kr, i, set, changed);
}

static void pending_one(struct keyring *kr, size_t i, struct keyset *set, int64_t now,
                        bool *changed)
{
	ensure_pending(kr, i, set, now, changed);
}

static int maintain_locked(struct keyring *kr, int64_t now, int64_t *ret_next)
{
	bool changed = false;
	int64_t next = INT64_MAX;
	int r = keyring_refresh(kr, now);

	/* The token is away: keys can be neither made nor checked; the last views stay. */
	if (r < 0)
		return r;
	for_each_issuer(kr, now, &changed, prune_one);
	for_each_issuer(kr, now, &changed, withdraw_stale_pending);
	sweep_stale_records(kr, &changed);
	sweep_damaged(kr, &changed);
	sweep_halfmade(kr, now);
	if (changed && (r = keyring_refresh(kr, now)) < 0)
		return r;
	/* Twice: at first start the first pass makes the active key, the second its successor. */
	for (int pass = 0; pass < 2; pass++) {
		changed = false;
		for_each_issuer(kr, now, &changed, pending_one);
		if (changed && (r = keyring_refresh(kr, now)) < 0)
			return r;
	}
	for (size_t i = 0; i < kr->n; i++) {
		struct keyset *set = keyring_acquire(kr, i);
		if (set)
			next = min64(next, issuer_next(&kr->issuers[i], set, now));
		keyset_release(set);
	}
	*ret_next = next;
	return 0;
}

/* A failing hsmc_resync() is logged once per episode. */
static atomic_bool resync_failing;

static void resync_locked(struct keyring *kr)
{
	int r = hsmc_resync(kr->hsm);

	if (!atomic_exchange(&resync_failing, r < 0) && r < 0)
		log_warning("another instance's changes to the token may be seen late: %s",
		            hsm_last_error());
}

int rotation_maintain(struct keyring *kr, int64_t now, int64_t *ret_next)
{
	int r;

	keyring_lock(kr);
	/* Under the lock, so that no write of ours comes between the touch and the reading. */
	resync_locked(kr);
	r = maintain_locked(kr, now, ret_next);
	keyring_unlock(kr);
	return r;
}

void rotation_resync(struct keyring *kr)
{
	keyring_lock(kr);
	resync_locked(kr);
	keyring_unlock(kr);
}

/* ---- operator actions ---- */

static struct key *find_kid(struct keyset *set, const char *kid)
{
	for (size_t j = 0; j < set->n; j++)
		if (strcmp(set->keys[j].kid, kid) == 0 && set->keys[j].st.state != KEY_EXPIRED)
			return &set->keys[j];
	return NULL;
}

static struct key *good_next(const struct issuer_conf *ic, struct keyset *set)
{
	for (size_t j = 0; j < set->n; j++)
		if (good_pending(ic, &set->keys[j]))
			return &set->keys[j];
	return NULL;
}

/* Moves k's activation to at (and its retirement one period later). */
static int reschedule(struct keyring *kr, const struct issuer_conf *ic, struct key *k, int64_t at)
{
	struct key copy = *k;

	copy.activates_at = at;
	copy.retires_at = schedule_add(at, (int64_t)ic->rotation_period);
	return record_revise(kr, ic->name, &copy);
}

/* A quarantined key's records are left as they are: its successor takes over all the same. */
static int retire_at(struct keyring *kr, const struct issuer_conf *ic, struct key *k, int64_t at)
{
	struct key copy = *k;

	if (copy.retires_at <= at || !copy.usable)
		return 0;
	copy.retires_at = at;
	return record_revise(kr, ic->name, &copy);
}

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

static int rotate_locked(struct keyring *kr, size_t i, bool now_flag, int64_t now,
                         struct rotate_result *ret)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;
	struct keyset *set = keyring_acquire(kr, i);
	struct key *p = good_next(ic, set), fresh;
	/* Equal activation times break on the kid: a switch in the second the active key started
	 * must come one second later to be a switch at all. */
	int64_t floor_at = set->active ? set->active->activates_at + 1 : now;
	int64_t at;
	int r = 0;

	if (!p) {
		at = max64(now_flag ? now : schedule_add(now, (int64_t)ic->prepublish), floor_at);
		r = key_create(kr, ic, at, now_flag, &fresh);
		at = fresh.activates_at;
		p = &fresh;
	} else {
		at = now_flag ? now : schedule_add(p->created_at, (int64_t)ic->prepublish);
		at = max64(max64(at, now), floor_at);
		if (at < p->activates_at)
			r = reschedule(kr, ic, p, at);
		else
			at = p->activates_at;
	}
	if (r == 0 && set->active)
		r = retire_at(kr, ic, set->active, at);
	if (r == 0) {
		snprintf(ret->active_kid, sizeof(ret->active_kid), "%s",
		         set->active ? set->active->kid : "");
		snprintf(ret->next_kid, sizeof(ret->next_kid), "%s", p->kid);
		ret->switch_at = at;
	}
	keyset_release(set);
	return r;
}

int rotation_rotate(struct keyring *kr, size_t i, bool now_flag, int64_t operator_uid,
                    struct rotate_result *ret)
{
	int64_t now = clock_now(), next;
	int r;

	keyring_lock(kr);
	r = keyring_refresh(kr, now);
	if (r == 0)
		r = rotate_locked(kr, i, now_flag, now, ret);
	if (r == 0) {
		audit_key(AUDIT_ROTATION_FORCED, kr->issuers[i].conf->name, ret->next_kid,
		          operator_uid);
		r = maintain_locked(kr, now, &next);
	}
	keyring_unlock(kr);
	return r;
}

/* Makes sure someone else signs before k goes: the pending key, or a fresh one, at once. */
static int hand_over(struct keyring *kr, size_t i, struct keyset *set, int64_t now)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;
	struct key *next = good_next(ic, set), fresh;

	if (next)
		return reschedule(kr, ic, next, now);
	return key_create(kr, ic, now, true, &fresh);
}

static int revoke_locked(struct keyring *kr, size_t i, const char *kid, int64_t now,
                         struct revoke_result *ret)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;
	struct keyset *set = keyring_acquire(kr, i);
	struct key *k = find_kid(set, kid);
	int r = 0;

	if (!k || !k->usable) {
		keyset_release(set);
		/* A quarantined key is never destroyed: which objects are ours is not known. */
		return k ? hsm_fail_text(-EPERM, "key %s is quarantined; it is not destroyed", kid)
		         : -ENOENT;
	}
	ret->was = k->st.state == KEY_PENDING ? "pending" : k == set->active ? "active" : "retired";
	snprintf(ret->revoked_kid, sizeof(ret->revoked_kid), "%s", k->kid);
	/* The successor takes over and the key's record goes first; the view without the key is
	 * published before its pair is destroyed, so requests move over without a failure (one
	 * that was already using the key tries again with the successor). */
	if (k == set->active)
		r = hand_over(kr, i, set, now);
	if (r == 0)
		r = hsmc_destroy_record(kr->hsm, &k->rec);
	if (r == 0)
		r = keyring_refresh(kr, now);
	if (r == 0)
		r = key_destroy(kr, ic, k, false, "revoked by an operator");
	keyset_release(set);
	return r;
}

static void current_kids(struct keyring *kr, size_t i, struct revoke_result *ret)
{
	struct keyset *set = keyring_acquire(kr, i);

	snprintf(ret->active_kid, sizeof(ret->active_kid), "%s",
	         set && set->active ? set->active->kid : "");
	snprintf(ret->pending_kid, sizeof(ret->pending_kid), "%s",
	         set && set->next ? set->next->kid : "");
	keyset_release(set);
}

int rotation_revoke(struct keyring *kr, size_t i, const char *kid, int64_t operator_uid,
                    struct revoke_result *ret)
{
	int64_t now = clock_now(), next;
	int r;

	keyring_lock(kr);
	r = keyring_refresh(kr, now);
	if (r == 0)
		r = revoke_locked(kr, i, kid, now, ret);
	if (r == 0) {
		audit_key(AUDIT_REVOKED, kr->issuers[i].conf->name, ret->revoked_kid, operator_uid);
		r = maintain_locked(kr, now, &next);
		current_kids(kr, i, ret);
	}
	keyring_unlock(kr);
	return r;
}

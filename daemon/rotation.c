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
#include "log.h"
#include "scheduler.h"

#define RETRY_MAX 60 /* seconds between attempts to generate a key, at most */

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static int record_store(struct keyring *kr, const struct issuer_conf *ic, struct key *k)
{
	char label[128];
	char *rec = keyring_record_format(ic, k);
	int r;

	if (!rec)
		return -ENOMEM;
	snprintf(label, sizeof(label), "tokensign:%s:%s", ic->name, k->kid);
	r = hsm_store_record(kr->hsm, label, rec, strlen(rec), &k->record);
	free(rec);
	return r;
}

/* How many pairs one key creation makes when each fails its read-back check (hsm_generate_key()
 * -EAGAIN), 100 ms apart: seen with two SoftHSM processes generating at the same moment. */
#define GENERATE_TRIES 3

/* Makes a key in the token and commits it with its record, written last: a crash in between
 * leaves a key pair without a record, which is never used and is cleaned up later. */
static int key_create(struct keyring *kr, const struct issuer_conf *ic, int64_t activates_at,
                      bool at_once, struct key *ret)
{
	char label[64];
	int r;

	memset(ret, 0, sizeof(*ret));
	snprintf(label, sizeof(label), "tokensign:%s", ic->name);
	for (int tries = 1;; tries++) {
		r = hsm_generate_key(kr->hsm, ic->alg, ic->key_size, label, &ret->hk);
		if (r != -EAGAIN || tries == GENERATE_TRIES)
			break;
		log_warning("issuer %s: a new key pair failed its check and was destroyed (%s); "
		            "generating another",
		            ic->name, hsm_last_error());
		nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
	}
	if (r < 0)
		return r;
	r = hsm_public_jwk(kr->hsm, &ret->hk, &ret->jwk);
	if (r == 0)
		r = jwk_thumbprint(&ret->jwk, ret->kid);
	/* Published means in this instance's JWKS: the record is written and the JWKS rebuilt
	 * within the next second. Counting prepublish from the whole second after that keeps a
	 * late key from signing a fraction of a second early. */
	/* A key active at once is recorded as made when it starts: the pass's own clock. */
	ret->created_at = at_once ? activates_at : scheduler_now() + 1;
	if (!at_once && activates_at < ret->created_at + (int64_t)ic->prepublish)
		activates_at = ret->created_at + (int64_t)ic->prepublish;
	ret->activates_at = activates_at;
	ret->retires_at = activates_at + (int64_t)ic->rotation_period;
	ret->max_token_ttl = (int64_t)ic->max_token_ttl;
	if (r == 0)
		r = record_store(kr, ic, ret);
	if (r < 0) {
		char why[192];
		snprintf(why, sizeof(why), "%s", hsm_last_error());
		hsm_destroy_key(kr->hsm, ret->hk.id);
		log_error("issuer %s: a new key could not be recorded and was destroyed: %s",
		          ic->name, why);
		return r;
	}
	audit_key(AUDIT_GENERATED, ic->name, ret->kid, -1);
	return 0;
}

/* Writes a new revision of k's record, then removes the old one. */
static int record_revise(struct keyring *kr, const struct issuer_conf *ic, struct key *k)
{
	unsigned long old = k->record;
	int r;

	k->seq++;
	r = record_store(kr, ic, k);
	if (r < 0) {
		log_error("issuer %s: key %s: cannot write its new schedule: %s", ic->name, k->kid,
		          hsm_last_error());
		return r;
	}
	if (hsm_destroy_object(kr->hsm, old) < 0)
		log_warning("issuer %s: key %s: old record revision left behind (%s); it is "
		            "superseded and will be removed later",
		            ic->name, k->kid, hsm_last_error());
	return 0;
}

/* Record first, so the key leaves every JWKS before its pair goes. */
static int key_destroy(struct keyring *kr, const struct issuer_conf *ic, const struct key *k,
                       const char *why)
{
	int r = hsm_destroy_object(kr->hsm, k->record);

	if (r == 0)
		r = hsm_destroy_key(kr->hsm, k->hk.id);
	if (r < 0) {
		log_error("issuer %s: cannot destroy key %s: %s", ic->name, k->kid,
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

/* Generates the pending key when there is none. At first start (no key at all) the key is
 * active at once: nothing was signed before, so nobody can miss it. */
static int ensure_pending(struct keyring *kr, size_t i, struct keyset *set, int64_t now,
                          bool *changed)
{
	struct issuer_keys *ik = &kr->issuers[i];
	struct schedule_timing t = keyring_timing(ik->conf);
	bool empty = true;
	int64_t start;
	struct key k;
	int r;

	for (size_t j = 0; j < set->n; j++) {
		if (set->keys[j].st.state == KEY_PENDING) {
			issuer_settled(ik);
			return 0;
		}
		if (set->keys[j].st.state != KEY_EXPIRED)
			empty = false;
	}
	if (now < ik->retry_at)
		return 0;
	start = empty ? now
	              : schedule_pending_start(&t, set->active ? set->active->retires_at : -1, now);
	r = key_create(kr, ik->conf, start, empty, &k);
	if (r < 0) {
		issuer_problem(ik, now, r);
		return r;
	}
	issuer_settled(ik);
	*changed = true;
	return 0;
}

/* Destroys expired keys and all pending keys but the first (two instances generated one each);
 * a pending key never signed, so nothing can depend on it. */
static void prune(struct keyring *kr, size_t i, struct keyset *set, bool *changed)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;
	bool pending_seen = false;

	for (size_t j = 0; j < set->n; j++) {
		const struct key *k = &set->keys[j];
		if (k->st.state == KEY_EXPIRED) {
			if (key_destroy(kr, ic, k, "every token it signed has expired") == 0)
				*changed = true;
		} else if (k->st.state == KEY_PENDING) {
			if (pending_seen &&
			    key_destroy(kr, ic, k, "a second pending key; the first one stays") ==
			        0)
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
 * about to record it, so it goes only once it has been recordless for ORPHAN_AGE seconds: a
 * generation takes milliseconds (seconds for RSA-4096), never that long. */
#define ORPHAN_AGE 60

static void sweep_orphans(struct keyring *kr, int64_t now)
{
	uint8_t(*ids)[HSM_ID_LEN] = NULL;
	struct orphan *keep;
	size_t n = 0, n_keep = 0;

	if (hsm_list_key_ids(kr->hsm, &ids, &n) < 0)
		return;
	keep = calloc(n ? n : 1, sizeof(*keep));
	for (size_t i = 0; keep && i < n; i++) {
		int64_t first = now;
		if (id_in(kr->recorded, kr->n_recorded, ids[i]))
			continue;
		for (size_t j = 0; j < kr->n_orphans; j++)
			if (memcmp(kr->orphans[j].id, ids[i], HSM_ID_LEN) == 0)
				first = kr->orphans[j].first_seen;
		if (now - first >= ORPHAN_AGE && hsm_destroy_key(kr->hsm, ids[i]) == 0) {
			log_notice("destroyed a half-made key pair without a record");
			continue;
		}
		memcpy(keep[n_keep].id, ids[i], HSM_ID_LEN);
		keep[n_keep++].first_seen = first;
	}
	free(ids);
	free(kr->orphans);
	kr->orphans = keep;
	kr->n_orphans = keep ? n_keep : 0;
}

static void sweep_stale_records(struct keyring *kr, bool *changed)
{
	for (size_t i = 0; i < kr->n_stale; i++)
		if (hsm_destroy_object(kr->hsm, kr->stale[i]) == 0)
			*changed = true;
}

/* A pending key whose key pair is incomplete can never sign: it goes, record first, and
 * ensure_pending() makes another. Only when two maintenances in a row found it so: another
 * process may read a fresh object of ours while it is being written. */
static void sweep_damaged(struct keyring *kr, bool *changed)
{
	uint8_t(*seen)[HSM_ID_LEN] = calloc(kr->n_damaged ? kr->n_damaged : 1, sizeof(*seen));
	size_t n_seen = 0;

	for (size_t i = 0; i < kr->n_damaged; i++) {
		const struct damaged *d = &kr->damaged[i];
		const char *name = kr->issuers[d->issuer].conf->name;

		if (!id_in(kr->suspects, kr->n_suspects, d->id)) {
			if (seen)
				memcpy(seen[n_seen++], d->id, HSM_ID_LEN);
			continue;
		}
		if (hsm_destroy_object(kr->hsm, d->record) < 0 ||
		    hsm_destroy_key(kr->hsm, d->id) < 0) {
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

static int64_t issuer_next(const struct issuer_keys *ik, const struct keyset *set)
{
	int64_t next = INT64_MAX;

	for (size_t j = 0; j < set->n; j++) {
		const struct key *k = &set->keys[j];
		if (k->st.state == KEY_PENDING)
			next = min64(next, k->activates_at);
		else if (k->st.state == KEY_RETIRED)
			next = min64(next, k->st.destroy_after);
	}
	if (set->active)
		next = min64(next, set->active_until);
	if (ik->problem[0])
		next = min64(next, ik->retry_at);
	return next;
}

static int maintain_locked(struct keyring *kr, int64_t now, int64_t *ret_next)
{
	bool changed = false;
	int64_t next = INT64_MAX;
	int r = keyring_refresh(kr, now);

	/* Every issuer is affected when the token is away: keys can be neither made nor checked. */
	if (r < 0) {
		snprintf(
		    kr->token_problem, sizeof(kr->token_problem),
		    "the token does not answer (%s); no key can be made or checked until it does",
		    hsm_last_error());
		return r;
	}
	kr->token_problem[0] = '\0';
	for (size_t i = 0; i < kr->n; i++) {
		struct keyset *set = keyring_acquire(kr, i);
		prune(kr, i, set, &changed);
		keyset_release(set);
	}
	sweep_stale_records(kr, &changed);
	sweep_damaged(kr, &changed);
	sweep_orphans(kr, now);
	if (changed && (r = keyring_refresh(kr, now)) < 0)
		return r;
	/* Twice: at first start the first pass makes the active key, the second its successor. */
	for (int pass = 0; pass < 2; pass++) {
		changed = false;
		for (size_t i = 0; i < kr->n; i++) {
			struct keyset *set = keyring_acquire(kr, i);
			ensure_pending(kr, i, set, now, &changed);
			keyset_release(set);
		}
		if (changed && (r = keyring_refresh(kr, now)) < 0)
			return r;
	}
	for (size_t i = 0; i < kr->n; i++) {
		struct keyset *set = keyring_acquire(kr, i);
		next = min64(next, issuer_next(&kr->issuers[i], set));
		keyset_release(set);
	}
	*ret_next = next;
	return 0;
}

/* A failing hsm_resync() is logged once per episode. */
static atomic_bool resync_failing;

static void resync_locked(struct keyring *kr)
{
	int r = hsm_resync(kr->hsm);

	if (!atomic_exchange(&resync_failing, r < 0) && r < 0)
		log_warning("another instance's changes to the token may be seen late: %s",
		            hsm_last_error());
}

int rotation_maintain(struct keyring *kr, int64_t now, int64_t *ret_next)
{
	int r;

	pthread_mutex_lock(&kr->mutate);
	/* Under the lock, so that no write of ours comes between the touch and the reading. */
	resync_locked(kr);
	r = maintain_locked(kr, now, ret_next);
	pthread_mutex_unlock(&kr->mutate);
	return r;
}

void rotation_resync(struct keyring *kr)
{
	pthread_mutex_lock(&kr->mutate);
	resync_locked(kr);
	pthread_mutex_unlock(&kr->mutate);
}

/* ---- operator actions ---- */

static struct key *find_kid(struct keyset *set, const char *kid)
{
	for (size_t j = 0; j < set->n; j++)
		if (strcmp(set->keys[j].kid, kid) == 0 && set->keys[j].st.state != KEY_EXPIRED)
			return &set->keys[j];
	return NULL;
}

/* Moves k's activation to at (and its retirement one period later). */
static int reschedule(struct keyring *kr, const struct issuer_conf *ic, struct key *k, int64_t at)
{
	struct key copy = *k;

	copy.activates_at = at;
	copy.retires_at = at + (int64_t)ic->rotation_period;
	return record_revise(kr, ic, &copy);
}

static int retire_at(struct keyring *kr, const struct issuer_conf *ic, struct key *k, int64_t at)
{
	struct key copy = *k;

	if (copy.retires_at <= at)
		return 0;
	copy.retires_at = at;
	return record_revise(kr, ic, &copy);
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
	struct key *p = set->next, fresh;
	/* Equal activation times break on the kid: a switch in the second the active key started
	 * must come one second later to be a switch at all. */
	int64_t floor_at = set->active ? set->active->activates_at + 1 : now;
	int64_t at;
	int r = 0;

	if (!p) {
		at = max64(now_flag ? now : now + (int64_t)ic->prepublish, floor_at);
		r = key_create(kr, ic, at, now_flag, &fresh);
		at = fresh.activates_at;
		p = &fresh;
	} else {
		at = now_flag ? now : p->created_at + (int64_t)ic->prepublish;
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
	int64_t now = scheduler_now(), next;
	int r;

	pthread_mutex_lock(&kr->mutate);
	r = keyring_refresh(kr, now);
	if (r == 0)
		r = rotate_locked(kr, i, now_flag, now, ret);
	if (r == 0) {
		audit_key(AUDIT_ROTATION_FORCED, kr->issuers[i].conf->name, ret->next_kid,
		          operator_uid);
		r = maintain_locked(kr, now, &next);
	}
	pthread_mutex_unlock(&kr->mutate);
	return r;
}

/* Makes sure someone else signs before k goes: the pending key, or a fresh one, at once. */
static int hand_over(struct keyring *kr, size_t i, struct keyset *set, int64_t now)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;
	struct key fresh;

	if (set->next)
		return reschedule(kr, ic, set->next, now);
	return key_create(kr, ic, now, true, &fresh);
}

static int revoke_locked(struct keyring *kr, size_t i, const char *kid, int64_t now,
                         struct revoke_result *ret)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;
	struct keyset *set = keyring_acquire(kr, i);
	struct key *k = find_kid(set, kid);
	int r = 0;

	if (!k) {
		keyset_release(set);
		return -ENOENT;
	}
	ret->was = k->st.state == KEY_PENDING ? "pending" : k == set->active ? "active" : "retired";
	snprintf(ret->revoked_kid, sizeof(ret->revoked_kid), "%s", k->kid);
	/* The successor takes over and the key's record goes first; the view without the key is
	 * published before its pair is destroyed, so requests move over without a failure (one
	 * that was already using the key tries again with the successor). */
	if (k == set->active)
		r = hand_over(kr, i, set, now);
	if (r == 0)
		r = hsm_destroy_object(kr->hsm, k->record);
	if (r == 0)
		r = keyring_refresh(kr, now);
	if (r == 0)
		r = key_destroy(kr, ic, k, "revoked by an operator");
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
	int64_t now = scheduler_now(), next;
	int r;

	pthread_mutex_lock(&kr->mutate);
	r = keyring_refresh(kr, now);
	if (r == 0)
		r = revoke_locked(kr, i, kid, now, ret);
	if (r == 0) {
		audit_key(AUDIT_REVOKED, kr->issuers[i].conf->name, ret->revoked_kid, operator_uid);
		r = maintain_locked(kr, now, &next);
		current_kids(kr, i, ret);
	}
	pthread_mutex_unlock(&kr->mutate);
	return r;
}

/* Issuers' keys: token records -> verified keys -> an immutable, pre-rendered keyset. What is
 * ours and what is foreign is decided here (docs/design.md, "Custody"). */
#include "keyring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "audit.h"
#include "jws_verify.h"
#include "custody.h"
#include "log.h"

int keyring_new(struct hsmc *hsm, const struct conf *conf, struct keyring **ret)
{
	struct keyring *kr = calloc(1, sizeof(*kr));

	if (!kr)
		return -ENOMEM;
	kr->hsm = hsm;
	kr->n = conf->n_issuers;
	kr->issuers = calloc(kr->n ? kr->n : 1, sizeof(*kr->issuers));
	if (!kr->issuers) {
		free(kr);
		return -ENOMEM;
	}
	pthread_mutex_init(&kr->mutate, NULL);
	pthread_mutex_init(&kr->report_lock, NULL);
	for (size_t i = 0; i < kr->n; i++) {
		kr->issuers[i].conf = &conf->issuers[i];
		pthread_mutex_init(&kr->issuers[i].lock, NULL);
	}
	keyring_lock(kr);
	keyring_unlock(kr); /* the first, empty report */
	*ret = kr;
	return 0;
}

static void key_free(struct key *k)
{
	EVP_PKEY_free(k->evp);
	free(k->iss);
	custody_rec_clear(&k->rec);
}

void keyset_release(struct keyset *set)
{
	if (!set || atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (size_t i = 0; i < set->n; i++)
		key_free(&set->keys[i]);
	free(set->keys);
	free(set->jwks);
	free(set);
}

void keyring_free(struct keyring *kr)
{
	if (!kr)
		return;
	for (size_t i = 0; i < kr->n; i++) {
		keyset_release(kr->issuers[i].set);
		pthread_mutex_destroy(&kr->issuers[i].lock);
	}
	pthread_mutex_destroy(&kr->mutate);
	keyring_report_release(kr->report);
	pthread_mutex_destroy(&kr->report_lock);
	token_view_clear(&kr->view);
	free(kr->halfmade_seen);
	free(kr->suspects);
	free(kr->reread);
	free(kr->warned);
	free(kr->issuers);
	free(kr);
}

size_t keyring_index(const struct keyring *kr, const struct issuer_conf *ic)
{
	for (size_t i = 0; i < kr->n; i++)
		if (kr->issuers[i].conf == ic)
			return i;
	return kr->n;
}

bool keyring_token_lost(struct keyring *kr)
{
	return atomic_load(&kr->token_lost);
}

/* ---- the report: what status reads without waiting for a writer ---- */

void keyring_report_release(struct keyring_report *rep)
{
	if (!rep || atomic_fetch_sub(&rep->refs, 1) != 1)
		return;
	free(rep->orphans);
	free(rep->problems);
	free(rep);
}

/* A copy of what the writer (the caller, under the lock) left; NULL when out of memory. */
static struct keyring_report *report_make(const struct keyring *kr)
{
	const struct token_view *v = &kr->view;
	struct keyring_report *rep = calloc(1, sizeof(*rep));

	if (!rep)
		return NULL;
	atomic_init(&rep->refs, 1);
	rep->orphans = calloc(v->n_orphans ? v->n_orphans : 1, sizeof(*rep->orphans));
	rep->problems = calloc(kr->n ? kr->n : 1, sizeof(*rep->problems));
	if (!rep->orphans || !rep->problems) {
		keyring_report_release(rep);
		return NULL;
	}
	rep->n_foreign = v->n_foreign;
	rep->n_quarantined = v->n_quarantined;
	for (size_t j = 0; j < v->n_orphans; j++) {
		rep->orphans[j] = v->orphans[j];
		memset(&rep->orphans[j].rec, 0, sizeof(rep->orphans[j].rec));
	}
	rep->n_orphans = v->n_orphans;
	memcpy(rep->token_problem, kr->token_problem, sizeof(rep->token_problem));
	for (size_t i = 0; i < kr->n; i++)
		memcpy(rep->problems[i], kr->issuers[i].problem, sizeof(rep->problems[i]));
	return rep;
}

void keyring_lock(struct keyring *kr)
{
	pthread_mutex_lock(&kr->mutate);
}

void keyring_unlock(struct keyring *kr)
{
	struct keyring_report *rep = report_make(kr), *old = NULL;

	/* Out of memory, the last report stays: status is then a little behind, never wrong
	 * about a key, which it reads from the keysets. */
	if (rep) {
		pthread_mutex_lock(&kr->report_lock);
		old = kr->report;
		kr->report = rep;
		pthread_mutex_unlock(&kr->report_lock);
	}
	keyring_report_release(old);
	pthread_mutex_unlock(&kr->mutate);
}

struct keyring_report *keyring_report_acquire(struct keyring *kr)
{
	struct keyring_report *rep;

	pthread_mutex_lock(&kr->report_lock);
	rep = kr->report;
	if (rep)
		atomic_fetch_add(&rep->refs, 1);
	pthread_mutex_unlock(&kr->report_lock);
	return rep;
}

struct keyset *keyring_acquire(struct keyring *kr, size_t i)
{
	struct keyset *set;

	pthread_mutex_lock(&kr->issuers[i].lock);
	set = kr->issuers[i].set;
	if (set)
		atomic_fetch_add(&set->refs, 1);
	pthread_mutex_unlock(&kr->issuers[i].lock);
	return set;
}

struct key *keyset_signer(struct keyset *set, int64_t now)
{
	if (!set || set->blocked[0])
		return NULL;
	/* The scheduler rebuilds the set at every transition; until it has, the set itself knows
	 * who signs on either side of the next handover, so no request fails at the boundary. A
	 * quarantined key holds its place but never signs. */
	if (set->active && now < set->active_until)
		return set->active->usable ? set->active : NULL;
	if (set->next && now >= set->next->activates_at && now < set->next_until)
		return set->next->usable ? set->next : NULL;
	return NULL;
}

struct schedule_timing keyring_timing(const struct issuer_conf *ic)
{
	return (struct schedule_timing){
	    .rotation_period = (int64_t)ic->rotation_period,
	    .prepublish = (int64_t)ic->prepublish,
	    .max_token_ttl = (int64_t)ic->max_token_ttl,
	};
}

bool keyring_key_current(const struct issuer_conf *ic, const struct key *k)
{
	return k->iss && strcmp(k->iss, ic->iss) == 0 && k->hk.alg == ic->alg;
}

/* ---- building a keyset ---- */

/* Published keys, each with its own algorithm: after an algorithm change the old keys stay in
 * the JWKS as what they are. */
static int render_jwks(struct keyset *set)
{
	json_t *keys = json_array(), *doc;

	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < set->n; i++) {
		const struct key *k = &set->keys[i];
		json_t *jwk;
		if (k->st.state == KEY_EXPIRED || !k->published)
			continue;
		jwk = jwk_to_json(&k->jwk, k->kid, k->hk.alg);
		if (!jwk || json_array_append_new(keys, jwk) < 0) {
			json_decref(keys);
			return -ENOMEM;
		}
	}
	doc = json_pack("{s:o}", "keys", keys);
	if (!doc)
		return -ENOMEM;
	set->jwks = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (!set->jwks)
		return -ENOMEM;
	set->jwks_len = strlen(set->jwks);
	return etag_of(set->jwks, set->jwks_len, set->etag);
}

static int key_order(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	struct schedule_key sx = {x->kid, x->activates_at, 0, 0},
	                    sy = {y->kid, y->activates_at, 0, 0};

	return schedule_key_order(&sx, &sy);
}

/* A withdrawn key (a pending key set aside by an iss or algorithm change) never signed: it is
 * out of the handovers, published until withdrawn_at + max-token-ttl + skew like a retired key,
 * then destroyed as one. */
static void withdrawn_state(const struct schedule_timing *t, struct key *k, int64_t now)
{
	int64_t ttl = k->max_token_ttl > t->max_token_ttl ? k->max_token_ttl : t->max_token_ttl;

	k->st.retired_at = k->withdrawn_at;
	k->st.destroy_after = schedule_add(schedule_add(k->withdrawn_at, ttl), SCHEDULE_SKEW);
	k->st.state = k->st.destroy_after <= now ? KEY_EXPIRED : KEY_RETIRED;
}

/* The pending key that takes over next: the first one in schedule order. */
static void keyset_next(const struct schedule_timing *t, struct keyset *set)
{
	for (size_t i = 0; i < set->n; i++) {
		if (set->keys[i].st.state != KEY_PENDING)
			continue;
		set->next = &set->keys[i];
		set->next_until = schedule_add(set->next->retires_at, t->prepublish);
		if (set->active && set->next->activates_at < set->active_until)
			set->active_until = set->next->activates_at;
		return;
	}
}

/* Derives states at now and fills active/next. keys must be in schedule order. */
static void keyset_derive(const struct issuer_conf *ic, struct keyset *set, int64_t now)
{
	struct schedule_timing t = keyring_timing(ic);
	struct schedule_key *sk = calloc(set->n ? set->n : 1, sizeof(*sk));
	struct schedule_state *st = calloc(set->n ? set->n : 1, sizeof(*st));
	size_t *at = calloc(set->n ? set->n : 1, sizeof(*at)), m = 0;
	int active;

	set->active = set->next = NULL;
	if (!sk || !st || !at)
		goto out; /* no active key: fail closed */
	for (size_t i = 0; i < set->n; i++) {
		struct key *k = &set->keys[i];
		if (k->withdrawn_at) {
			withdrawn_state(&t, k, now);
			continue;
		}
		at[m] = i;
		sk[m++] =
		    (struct schedule_key){k->kid, k->activates_at, k->retires_at, k->max_token_ttl};
	}
	active = schedule_derive(&t, sk, m, now, st);
	for (size_t j = 0; j < m; j++)
		set->keys[at[j]].st = st[j];
	if (active >= 0) {
		set->active = &set->keys[at[active]];
		set->active_until = schedule_add(set->active->retires_at, t.prepublish);
	}
	keyset_next(&t, set);
out:
	free(sk);
	free(st);
	free(at);
}

/* Takes ownership of keys. */
static int keyset_build(const struct issuer_conf *ic, struct key *keys, size_t n, int64_t now,
                        const char *blocked, struct keyset **ret)
{
	struct keyset *set = calloc(1, sizeof(*set));
	int r;

	if (!set) {
		for (size_t i = 0; i < n; i++)
			key_free(&keys[i]);
		free(keys);
		return -ENOMEM;
	}
	atomic_init(&set->refs, 1);
	if (n > 0)
		qsort(keys, n, sizeof(*keys), key_order);
	set->keys = keys;
	set->n = n;
	snprintf(set->blocked, sizeof(set->blocked), "%s", blocked ? blocked : "");
	/* Each set owns its public keys: copies of known keys arrive without one. */
	for (size_t i = 0; i < n; i++)
		if (keys[i].published && jwk_to_evp(&keys[i].jwk, &keys[i].evp) < 0) {
			keyset_release(set);
			return -ENOMEM;
		}
	keyset_derive(ic, set, now);
	r = render_jwks(set);
	if (r < 0) {
		keyset_release(set);
		return r;
	}
	*ret = set;
	return 0;
}

/* Swaps in the new view and writes the audit records of the handover it implies. */
static void keyring_publish(struct keyring *kr, size_t i, struct keyset *set, int64_t now)
{
	struct issuer_keys *ik = &kr->issuers[i];
	const struct key *was, *is;
	struct keyset *old;

	pthread_mutex_lock(&ik->lock);
	old = ik->set;
	ik->set = set;
	pthread_mutex_unlock(&ik->lock);
	/* Only a change seen by this keyring is an event: its first view (at start, or after a
	 * reload) reports nothing, or every restart would "activate" the current key again. */
	if (!old)
		return;
	was = keyset_signer(old, now);
	is = keyset_signer(set, now);
	if (is && (!was || strcmp(was->kid, is->kid) != 0))
		audit_key(AUDIT_ACTIVATED, ik->conf->name, is->kid, -1);
	if (was && (!is || strcmp(was->kid, is->kid) != 0))
		audit_key(AUDIT_RETIRED, ik->conf->name, was->kid, -1);
	if (was && !is)
		log_error("issuer %s: no key may sign now; signing fails closed until a usable "
		          "successor has been published for prepublish",
		          ik->conf->name);
	keyset_release(old);
}

/* ---- records: what the token remembers about each key ---- */

char *keyring_record_format(const char *issuer, const struct key *k)
{
	struct record r = {
	    .iss = k->iss,
	    .alg = k->hk.alg,
	    .seq = k->seq,
	    .created_at = k->created_at,
	    .activates_at = k->activates_at,
	    .retires_at = k->retires_at,
	    .max_token_ttl = k->max_token_ttl,
	    .withdrawn_at = k->withdrawn_at,
	};

	snprintf(r.issuer, sizeof(r.issuer), "%s", issuer);
	snprintf(r.kid, sizeof(r.kid), "%s", k->kid);
	memcpy(r.id, k->hk.id, HSM_ID_LEN);
	return record_format(&r);
}

/* ---- refresh ---- */

static int append_key(struct key **keys, size_t *n, const struct key *k)
{
	struct key *grown = realloc(*keys, (*n + 1) * sizeof(**keys));

	if (!grown)
		return -ENOMEM;
	grown[*n] = *k;
	*keys = grown;
	(*n)++;
	return 0;
}

/* A pending key whose record stands while its key pair is not all there (SoftHSM's file store,
 * with several processes writing, has lost a fresh object's CKA_ID): it can never be used, and as
 * a pending key it never signed, so maintenance may replace it. Other keys are only logged. */
static void note_damaged(struct keyring *kr, size_t i, const struct key *k, int64_t now)
{
	struct token_view *v = &kr->view;
	struct damaged *grown;

	if (k->activates_at <= now || k->withdrawn_at)
		return;
	grown = realloc(v->damaged, (v->n_damaged + 1) * sizeof(*grown));
	if (!grown)
		return;
	v->damaged = grown;
	memset(&grown[v->n_damaged], 0, sizeof(*grown));
	if (custody_rec_copy(&grown[v->n_damaged].rec, &k->rec) < 0)
		return;
	grown[v->n_damaged].issuer = i;
	grown[v->n_damaged].hk = k->hk;
	snprintf(grown[v->n_damaged].kid, sizeof(grown->kid), "%s", k->kid);
	v->n_damaged++;
}

static void keys_free(struct key *keys, size_t n)
{
	for (size_t i = 0; i < n; i++)
		key_free(&keys[i]);
	free(keys);
}

static int issuer_collect(struct keyring *kr, size_t i, struct sorting *s, int64_t now,
                          struct key **ret, size_t *ret_n)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;
	struct keyset *cur = keyring_acquire(kr, i);
	struct key *keys = NULL;
	size_t lo, hi, n = 0;
	int r = 0;

	custody_issuer_range(s, ic->name, &lo, &hi);
	for (size_t j = lo; j < hi && r != -ENOMEM; j++) {
		struct key k;
		r = custody_key_load(kr, s, ic, s->cur[j], cur, &k);
		if (r < 0)
			continue; /* foreign, or the token could not tell: said in the log */
		if (k.incomplete)
			note_damaged(kr, i, &k, now);
		r = append_key(&keys, &n, &k);
		if (r < 0)
			key_free(&k);
	}
	keyset_release(cur);
	if (r == -ENOMEM) {
		keys_free(keys, n);
		return r;
	}
	*ret = keys;
	*ret_n = n;
	return 0;
}

/* A read of the token that shows none of our records while we publish keys is not believed:
 * SoftHSM answers every search with nothing once it has lost a token (docs/design.md), and our
 * keys are never all gone in one step (a revoke always leaves an active key). */
static bool read_doubtful(struct keyring *kr, const struct hsm_record *recs, size_t n)
{
	bool published = false;

	for (size_t i = 0; i < n; i++)
		if (recs[i].private_obj)
			return false;
	for (size_t i = 0; i < kr->n && !published; i++) {
		struct keyset *set = keyring_acquire(kr, i);
		published = set && set->n > 0;
		keyset_release(set);
	}
	return published;
}

/* Reads records and key objects, and asks the token whether it still stands behind what it
 * said (SoftHSM keeps answering searches, empty, for a token it lost). */
static int token_read(struct keyring *kr, struct hsm_record **recs, size_t *n_recs,
                      struct hsm_key_index **ix)
{
	int r = hsmc_list_records(kr->hsm, recs, n_recs);

	if (r == 0)
		r = hsmc_key_index_read(kr->hsm, ix);
	if (r == 0)
		r = hsmc_probe(kr->hsm);
	if (r == 0 && read_doubtful(kr, *recs, *n_recs))
		r = hsm_fail_text(-EIO, "the token shows none of our records");
	if (r < 0) {
		char was[sizeof(kr->token_problem)];
		snprintf(was, sizeof(was), "%s", kr->token_problem);
		snprintf(kr->token_problem, sizeof(kr->token_problem),
		         "the token cannot be read (%s); the last good key sets stay published",
		         hsm_last_error());
		/* Once per episode (and when the reason changes), not at every retry. */
		if (strcmp(was, kr->token_problem) != 0)
			log_error("%s", kr->token_problem);
	}
	atomic_store(&kr->token_lost, r < 0);
	return r;
}

/* One reading of the token into new keysets, published unless the reading wants to be done
 * again (-EAGAIN: kr->reread_state, custody.c's reread_wanted()). */
static int refresh_pass(struct keyring *kr, int64_t now)
{
	struct hsm_record *recs = NULL;
	struct hsm_key_index *ix = NULL;
	struct sorting s = {0};
	struct collected {
		struct key *keys;
		size_t n;
	} *got = NULL;
	size_t n_recs = 0;
	int r = token_read(kr, &recs, &n_recs, &ix);

	if (r < 0) {
		hsm_key_index_free(ix);
		hsm_records_free(recs, n_recs);
		return r;
	}
	if (kr->token_problem[0])
		log_notice("the token can be read again");
	kr->token_problem[0] = '\0';
	r = custody_sort(kr, recs, n_recs, ix, &s);
	if (r == 0 && !(got = calloc(kr->n ? kr->n : 1, sizeof(*got))))
		r = -ENOMEM;
	for (size_t i = 0; i < kr->n && r == 0; i++)
		r = issuer_collect(kr, i, &s, now, &got[i].keys, &got[i].n);
	if (r == 0 && kr->reread_state == REREAD_WANTED)
		r = -EAGAIN;
	for (size_t i = 0; i < kr->n && r == 0; i++) {
		struct keyset *set;
		char blocked[160];

		custody_issuer_blocked(&s, kr->issuers[i].conf->name, blocked, sizeof(blocked));
		/* keyset_build() takes the keys, also when it fails. */
		r = keyset_build(kr->issuers[i].conf, got[i].keys, got[i].n, now, blocked, &set);
		got[i].keys = NULL;
		got[i].n = 0;
		if (r == 0)
			keyring_publish(kr, i, set, now);
	}
	for (size_t i = 0; got && i < kr->n; i++)
		keys_free(got[i].keys, got[i].n);
	free(got);
	if (r == -EAGAIN) {
		custody_sorting_free(&s);
		hsm_records_free(recs, n_recs);
		return r;
	}
	if (r == 0)
		custody_note_objects(kr, &s, now);
	else /* the token's own failures were logged in token_read() */
		log_error(
		    "cannot rebuild the keys' views from the token: %s; the last good ones stay "
		    "published",
		    strerror(-r));
	custody_sorting_free(&s);
	hsm_records_free(recs, n_recs);
	return r;
}

int keyring_refresh(struct keyring *kr, int64_t now)
{
	unsigned long restarts = hsmc_restarts(kr->hsm);
	int r;

	kr->reread_state = REREAD_CHECK;
	r = refresh_pass(kr, now);
	if (r < 0 && r != -EAGAIN && hsmc_restarts(kr->hsm) != restarts) {
		/* A helper that lost the token was replaced during the reading (hsmc.c,
		 * probe_or_replace()): the new one has a module instance of its own, which can
		 * read the token. Seen at a first start beside another instance's. */
		r = refresh_pass(kr, now);
	}
	if (r == -EAGAIN) {
		/* A new helper is a new module instance, which reads every object afresh. */
		log_info("a key pair looks incomplete: reading the token again with a new "
		         "management helper before believing it");
		hsmc_manage_renew(kr->hsm);
		kr->reread_state = REREAD_OFF;
		r = refresh_pass(kr, now);
	}
	kr->reread_state = REREAD_OFF;
	return r;
}

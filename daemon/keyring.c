/* Issuers' keys: token records -> verified keys -> an immutable, pre-rendered keyset. */
#include "keyring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "audit.h"
#include "log.h"

#define RECORD_VERSION 2

int keyring_new(struct hsm *hsm, const struct conf *conf, struct keyring **ret)
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
	for (size_t i = 0; i < kr->n; i++) {
		kr->issuers[i].conf = &conf->issuers[i];
		pthread_mutex_init(&kr->issuers[i].lock, NULL);
	}
	*ret = kr;
	return 0;
}

void keyset_release(struct keyset *set)
{
	if (!set || atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (size_t i = 0; i < set->n; i++)
		EVP_PKEY_free(set->keys[i].evp);
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
	free(kr->orphans);
	free(kr->stale);
	free(kr->recorded);
	free(kr->damaged);
	free(kr->suspects);
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
	if (!set)
		return NULL;
	/* The scheduler rebuilds the set at every transition; until it has, the set itself knows
	 * who signs on either side of the next handover, so no request fails at the boundary. */
	if (set->active && now < set->active_until)
		return set->active;
	if (set->next && now >= set->next->activates_at && now < set->next_until)
		return set->next;
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

/* ---- building a keyset ---- */

static int render_jwks(struct keyset *set, enum jws_alg alg)
{
	json_t *keys = json_array(), *doc;

	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < set->n; i++) {
		json_t *jwk;
		if (set->keys[i].st.state == KEY_EXPIRED)
			continue;
		jwk = jwk_to_json(&set->keys[i].jwk, set->keys[i].kid, alg);
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

/* Derives states at now and fills active/next. keys must be in schedule order. */
static void keyset_derive(const struct issuer_conf *ic, struct keyset *set, int64_t now)
{
	struct schedule_timing t = keyring_timing(ic);
	struct schedule_key *sk = calloc(set->n ? set->n : 1, sizeof(*sk));
	struct schedule_state *st = calloc(set->n ? set->n : 1, sizeof(*st));
	int active;

	set->active = set->next = NULL;
	if (!sk || !st)
		goto out; /* no active key: fail closed */
	for (size_t i = 0; i < set->n; i++)
		sk[i] = (struct schedule_key){set->keys[i].kid, set->keys[i].activates_at,
		                              set->keys[i].retires_at, set->keys[i].max_token_ttl};
	active = schedule_derive(&t, sk, set->n, now, st);
	for (size_t i = 0; i < set->n; i++)
		set->keys[i].st = st[i];
	if (active >= 0) {
		set->active = &set->keys[active];
		set->active_until = set->active->retires_at + t.prepublish;
	}
	for (size_t i = 0; i < set->n; i++) {
		if (st[i].state != KEY_PENDING)
			continue;
		set->next = &set->keys[i];
		set->next_until = set->next->retires_at + t.prepublish;
		if (set->active && set->next->activates_at < set->active_until)
			set->active_until = set->next->activates_at;
		break;
	}
out:
	free(sk);
	free(st);
}

/* Takes ownership of keys. */
static int keyset_build(const struct issuer_conf *ic, struct key *keys, size_t n, int64_t now,
                        struct keyset **ret)
{
	struct keyset *set = calloc(1, sizeof(*set));
	int r;

	if (!set) {
		free(keys);
		return -ENOMEM;
	}
	atomic_init(&set->refs, 1);
	if (n > 0)
		qsort(keys, n, sizeof(*keys), key_order);
	set->keys = keys;
	set->n = n;
	/* Each set owns its public keys: copies of known keys arrive without one. */
	for (size_t i = 0; i < n; i++)
		if (jwk_to_evp(&keys[i].jwk, &keys[i].evp) < 0) {
			keyset_release(set);
			return -ENOMEM;
		}
	keyset_derive(ic, set, now);
	r = render_jwks(set, ic->alg);
	if (r < 0) {
		keyset_release(set);
		return r;
	}
	*ret = set;
	return 0;
}

/* Swaps in the new view and writes the audit records of the handover it implies. */
static void keyring_publish(struct keyring *kr, size_t i, struct keyset *set)
{
	struct issuer_keys *ik = &kr->issuers[i];
	const char *old_kid, *new_kid;
	struct keyset *old;

	pthread_mutex_lock(&ik->lock);
	old = ik->set;
	ik->set = set;
	pthread_mutex_unlock(&ik->lock);
	/* Only a change seen by this keyring is an event: its first view (at start, or after a
	 * reload) reports nothing, or every restart would "activate" the current key again. */
	if (!old)
		return;
	old_kid = old->active ? old->active->kid : NULL;
	new_kid = set->active ? set->active->kid : NULL;
	if (new_kid && (!old_kid || strcmp(old_kid, new_kid) != 0))
		audit_key(AUDIT_ACTIVATED, ik->conf->name, new_kid, -1);
	if (old_kid && (!new_kid || strcmp(old_kid, new_kid) != 0))
		audit_key(AUDIT_RETIRED, ik->conf->name, old_kid, -1);
	if (old_kid && !new_kid)
		log_error("issuer %s: no key may sign now; signing fails closed until a successor "
		          "has been published for prepublish",
		          ik->conf->name);
	keyset_release(old);
}

/* ---- records: what the token remembers about each key ---- */

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", in[i]);
}

static int hex_decode(const char *s, uint8_t *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	return 0;
}

char *keyring_record_format(const struct issuer_conf *ic, const struct key *k)
{
	char hex[2 * HSM_ID_LEN + 1];
	json_t *obj;
	char *s;

	hex_encode(k->hk.id, HSM_ID_LEN, hex);
	obj = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "v",
	                RECORD_VERSION, "issuer", ic->name, "iss", ic->iss, "kid", k->kid, "alg",
	                jws_alg_name(ic->alg), "id", hex, "seq", (json_int_t)k->seq, "created_at",
	                (json_int_t)k->created_at, "activates_at", (json_int_t)k->activates_at,
	                "retires_at", (json_int_t)k->retires_at, "max_token_ttl",
	                (json_int_t)k->max_token_ttl);
	if (!obj)
		return NULL;
	s = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	return s;
}

struct record {
	const char *issuer, *iss, *kid, *alg, *id_hex;
	json_int_t v, seq, created_at, activates_at, retires_at, max_token_ttl;
};

static int record_parse(json_t *doc, struct record *rec)
{
	json_error_t jerr;

	memset(rec, 0, sizeof(*rec));
	if (json_unpack_ex(doc, &jerr, 0, "{s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I}",
	                   "v", &rec->v, "issuer", &rec->issuer, "iss", &rec->iss, "kid", &rec->kid,
	                   "alg", &rec->alg, "id", &rec->id_hex, "seq", &rec->seq, "created_at",
	                   &rec->created_at, "activates_at", &rec->activates_at, "retires_at",
	                   &rec->retires_at, "max_token_ttl", &rec->max_token_ttl) < 0 ||
	    rec->v != RECORD_VERSION || strlen(rec->kid) != JWK_KID_LEN || rec->seq < 0 ||
	    rec->retires_at < rec->activates_at)
		return -EINVAL;
	return 0;
}

/* True the first time this keyring sees id: a key left out for good is said once, not at
 * every rescan. */
static bool keyring_warn_once(struct keyring *kr, const uint8_t *id)
{
	uint8_t(*grown)[HSM_ID_LEN];

	for (size_t i = 0; i < kr->n_warned; i++)
		if (memcmp(kr->warned[i], id, HSM_ID_LEN) == 0)
			return false;
	grown = realloc(kr->warned, (kr->n_warned + 1) * sizeof(*grown));
	if (!grown)
		return true;
	kr->warned = grown;
	memcpy(kr->warned[kr->n_warned++], id, HSM_ID_LEN);
	return true;
}

/* Reads the token's key objects at most once per refresh, and only when a key is new to this
 * keyring: a rescan that finds every key known reads nothing per key. */
struct key_loader {
	struct hsm_key_index *ix;
	int err;       /* reading the index failed: every new key fails with it */
	char why[160]; /* ... and this is why */
};

static int loader_find(struct keyring *kr, struct key_loader *l, const uint8_t *id,
                       enum jws_alg alg, struct hsm_key *ret)
{
	if (!l->ix && l->err == 0) {
		l->err = hsm_key_index_read(kr->hsm, &l->ix);
		if (l->err < 0)
			snprintf(l->why, sizeof(l->why), "%s", hsm_last_error());
	}
	if (l->err < 0)
		return l->err;
	return hsm_key_index_find(kr->hsm, l->ix, id, alg, ret);
}

/* Loads the key a record describes, or says (in the log) why it is not usable. */
static int key_load(struct keyring *kr, struct key_loader *l, const struct issuer_conf *ic,
                    const struct record *rec, struct key *ret)
{
	uint8_t id[HSM_ID_LEN];
	enum jws_alg alg;
	int r;

	memcpy(id, ret->hk.id, HSM_ID_LEN);
	/* A key is bound to one iss for life: after an iss change it must not sign again. */
	if (strcmp(rec->iss, ic->iss) != 0 || jws_alg_from_name(rec->alg, &alg) < 0 ||
	    alg != ic->alg) {
		if (!keyring_warn_once(kr, id))
			return -EINVAL;
		log_warning(
		    "issuer %s: key %s was made for iss '%s' with %s; the configuration now "
		    "says '%s' with %s, so it is not used",
		    ic->name, rec->kid, rec->iss, rec->alg, ic->iss, jws_alg_name(ic->alg));
		return -EINVAL;
	}
	r = loader_find(kr, l, id, alg, &ret->hk);
	if (r == 0)
		r = hsm_public_jwk(kr->hsm, &ret->hk, &ret->jwk);
	if (r < 0) {
		log_error("issuer %s: key %s is not usable: %s", ic->name, rec->kid,
		          l->err < 0 ? l->why : hsm_last_error());
		return r;
	}
	if (jwk_thumbprint(&ret->jwk, ret->kid) < 0 || strcmp(ret->kid, rec->kid) != 0) {
		log_error("issuer %s: key %s: the token's public key has thumbprint %s; record and "
		          "key disagree, not used",
		          ic->name, rec->kid, ret->kid);
		return -EINVAL;
	}
	return 0;
}

/* A key already known at this revision is copied rather than read from the token again. */
static const struct key *known_key(const struct keyset *set, const uint8_t *id, int64_t seq)
{
	for (size_t i = 0; set && i < set->n; i++)
		if (memcmp(set->keys[i].hk.id, id, HSM_ID_LEN) == 0 && set->keys[i].seq == seq)
			return &set->keys[i];
	return NULL;
}

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

/* One record object of this refresh, parsed once. */
struct parsed {
	const struct hsm_record *hr;
	json_t *doc; /* NULL: malformed; else owns the strings of rec */
	struct record rec;
	size_t pos;   /* place in the token's list: of two equal revisions the first counts */
	bool current; /* the highest revision of its key; the others are stale */
};

static int record_to_key(struct keyring *kr, struct key_loader *l, const struct issuer_conf *ic,
                         const struct keyset *cur, const struct parsed *p, struct key *k)
{
	const struct key *known;
	int r = 0;

	memset(k, 0, sizeof(*k));
	if (hex_decode(p->rec.id_hex, k->hk.id, HSM_ID_LEN) < 0)
		return -EINVAL;
	known = known_key(cur, k->hk.id, p->rec.seq);
	if (known) {
		*k = *known;
		k->evp = NULL; /* owned by the old set */
	} else
		r = key_load(kr, l, ic, &p->rec, k);
	if (r < 0)
		return r;
	k->created_at = p->rec.created_at;
	k->activates_at = p->rec.activates_at;
	k->retires_at = p->rec.retires_at;
	k->max_token_ttl = p->rec.max_token_ttl;
	k->seq = p->rec.seq;
	k->record = p->hr->handle;
	return 0;
}

/* A pending key whose record stands while its key pair is not all there (SoftHSM's file store,
 * with several processes writing, has lost a fresh object's CKA_ID): it can never be used, and as
 * a pending key it never signed, so maintenance may replace it. Other keys are only logged. */
static void note_damaged(struct keyring *kr, size_t i, const struct hsm_record *hr,
                         const struct record *rec, int64_t now)
{
	struct damaged *d = &kr->damaged[kr->n_damaged];

	if (rec->activates_at <= now || hex_decode(rec->id_hex, d->id, HSM_ID_LEN) < 0)
		return;
	d->issuer = i;
	d->record = hr->handle;
	snprintf(d->kid, sizeof(d->kid), "%s", rec->kid);
	kr->n_damaged++;
}

/* by_issuer: the current records, sorted by issuer name, then by place in the token's list. */
static int issuer_collect(struct keyring *kr, size_t i, struct key_loader *l,
                          struct parsed *const *by_issuer, size_t n_cur, int64_t now,
                          struct key **ret, size_t *ret_n)
{
	const struct issuer_conf *ic = kr->issuers[i].conf;
	struct keyset *cur = keyring_acquire(kr, i);
	struct key *keys = NULL;
	size_t lo = 0, hi = n_cur, n = 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(by_issuer[mid]->rec.issuer, ic->name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t j = lo; j < n_cur && strcmp(by_issuer[j]->rec.issuer, ic->name) == 0; j++) {
		struct key k;
		int r = record_to_key(kr, l, ic, cur, by_issuer[j], &k);

		if (r == -ENOENT)
			note_damaged(kr, i, by_issuer[j]->hr, &by_issuer[j]->rec, now);
		if (r < 0)
			continue;
		if (append_key(&keys, &n, &k) < 0) {
			free(keys);
			keyset_release(cur);
			return -ENOMEM;
		}
	}
	keyset_release(cur);
	*ret = keys;
	*ret_n = n;
	return 0;
}

static void records_free(struct parsed *p, size_t n)
{
	for (size_t j = 0; p && j < n; j++)
		json_decref(p[j].doc);
	free(p);
}

static struct parsed *records_parse(const struct hsm_record *recs, size_t n)
{
	struct parsed *p = calloc(n ? n : 1, sizeof(*p));

	for (size_t j = 0; p && j < n; j++) {
		p[j].hr = &recs[j];
		p[j].pos = j;
		p[j].doc = json_loadb(recs[j].value, recs[j].len, JSON_REJECT_DUPLICATES, NULL);
		if (p[j].doc && record_parse(p[j].doc, &p[j].rec) < 0) {
			log_warning("record '%s' is malformed, ignoring it", recs[j].label);
			json_decref(p[j].doc);
			p[j].doc = NULL;
		}
	}
	return p;
}

/* Same key, highest revision first, then the first in the token's list. */
static int revision_order(const void *a, const void *b)
{
	const struct parsed *x = *(struct parsed *const *)a, *y = *(struct parsed *const *)b;
	int c = strcmp(x->rec.id_hex, y->rec.id_hex);

	if (c)
		return c;
	if (x->rec.seq != y->rec.seq)
		return x->rec.seq > y->rec.seq ? -1 : 1;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int issuer_order(const void *a, const void *b)
{
	const struct parsed *x = *(struct parsed *const *)a, *y = *(struct parsed *const *)b;
	int c = strcmp(x->rec.issuer, y->rec.issuer);

	if (c)
		return c;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Marks the current revision of each key, and returns the current records sorted by issuer
 * (in *ret, *ret_n): one sort each instead of comparing every record with every other. */
static int records_sort(struct parsed *p, size_t n, struct parsed ***ret, size_t *ret_n)
{
	struct parsed **v = calloc(n ? n : 1, sizeof(*v));
	size_t m = 0, cur = 0;

	if (!v)
		return -ENOMEM;
	for (size_t j = 0; j < n; j++)
		if (p[j].doc)
			v[m++] = &p[j];
	if (m > 0)
		qsort(v, m, sizeof(*v), revision_order);
	for (size_t j = 0; j < m; j++)
		v[j]->current = j == 0 || strcmp(v[j - 1]->rec.id_hex, v[j]->rec.id_hex) != 0;
	for (size_t j = 0; j < m; j++)
		if (v[j]->current)
			v[cur++] = v[j];
	if (cur > 0)
		qsort(v, cur, sizeof(*v), issuer_order);
	*ret = v;
	*ret_n = cur;
	return 0;
}

/* Remembers, for maintenance, which key ids have a record and which records are stale. */
static int records_note(struct keyring *kr, const struct parsed *p, size_t n)
{
	kr->n_stale = kr->n_recorded = kr->n_damaged = 0;
	free(kr->stale);
	free(kr->recorded);
	free(kr->damaged);
	kr->stale = calloc(n ? n : 1, sizeof(*kr->stale));
	kr->recorded = calloc(n ? n : 1, sizeof(*kr->recorded));
	kr->damaged = calloc(n ? n : 1, sizeof(*kr->damaged));
	if (!kr->stale || !kr->recorded || !kr->damaged)
		return -ENOMEM;
	for (size_t j = 0; j < n; j++) {
		if (!p[j].doc)
			continue;
		if (!p[j].current)
			kr->stale[kr->n_stale++] = p[j].hr->handle;
		else if (hex_decode(p[j].rec.id_hex, kr->recorded[kr->n_recorded], HSM_ID_LEN) == 0)
			kr->n_recorded++;
	}
	return 0;
}

int keyring_refresh(struct keyring *kr, int64_t now)
{
	struct hsm_record *recs = NULL;
	struct key_loader loader = {0};
	struct parsed *p, **by_issuer = NULL;
	size_t n_recs = 0, n_cur = 0;
	int r;

	r = hsm_list_records(kr->hsm, &recs, &n_recs);
	if (r < 0) {
		log_error("cannot read key records from the token: %s", hsm_last_error());
		return r;
	}
	p = records_parse(recs, n_recs);
	r = p ? records_sort(p, n_recs, &by_issuer, &n_cur) : -ENOMEM;
	if (r == 0)
		r = records_note(kr, p, n_recs);
	for (size_t i = 0; i < kr->n && r == 0; i++) {
		struct keyset *set;
		struct key *keys;
		size_t n;

		r = issuer_collect(kr, i, &loader, by_issuer, n_cur, now, &keys, &n);
		if (r == 0)
			r = keyset_build(kr->issuers[i].conf, keys, n, now, &set);
		if (r == 0)
			keyring_publish(kr, i, set);
	}
	hsm_key_index_free(loader.ix);
	free(by_issuer);
	records_free(p, n_recs);
	hsm_records_free(recs, n_recs);
	return r;
}

/* Issuers' keys: token records -> verified keys -> an immutable, pre-rendered keyset. */
#include "keyring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "log.h"

#define RECORD_VERSION 1

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

/* ---- the keyset ---- */

static int key_order(const void *a, const void *b)
{
	const struct key *x = a, *y = b;

	if (x->activates_at != y->activates_at)
		return x->activates_at < y->activates_at ? -1 : 1;
	return strcmp(x->kid, y->kid);
}

static int render_jwks(struct keyset *set, enum jws_alg alg)
{
	json_t *keys = json_array(), *doc;
	int r = -ENOMEM;

	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < set->n; i++) {
		json_t *jwk = jwk_to_json(&set->keys[i].jwk, set->keys[i].kid, alg);
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
	if (set->jwks) {
		set->jwks_len = strlen(set->jwks);
		r = etag_of(set->jwks, set->jwks_len, set->etag);
	}
	return r;
}

/* The key that signs now: the latest activation not in the future; equal times break on the
 * smaller kid, so every instance on the token picks the same key. */
static struct key *pick_active(struct key *keys, size_t n, int64_t now)
{
	struct key *best = NULL;

	for (size_t i = 0; i < n; i++) {
		if (keys[i].activates_at > now)
			continue;
		if (!best || keys[i].activates_at > best->activates_at ||
		    (keys[i].activates_at == best->activates_at &&
		     strcmp(keys[i].kid, best->kid) < 0))
			best = &keys[i];
	}
	return best;
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
	set->active = pick_active(keys, n, now);
	r = render_jwks(set, ic->alg);
	if (r < 0) {
		keyset_release(set);
		return r;
	}
	*ret = set;
	return 0;
}

static void keyring_publish(struct keyring *kr, size_t i, struct keyset *set)
{
	struct keyset *old;

	pthread_mutex_lock(&kr->issuers[i].lock);
	old = kr->issuers[i].set;
	kr->issuers[i].set = set;
	pthread_mutex_unlock(&kr->issuers[i].lock);
	keyset_release(old);
}

/* ---- records: what the token remembers about each key ---- */

struct record {
	const char *issuer, *iss, *kid, *alg, *id_hex;
	json_int_t v, created_at, activates_at;
};

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

static char *record_format(const char *issuer, const char *iss, const char *kid, enum jws_alg alg,
                           const uint8_t id[HSM_ID_LEN], int64_t created, int64_t activates)
{
	char hex[2 * HSM_ID_LEN + 1];
	json_t *obj;
	char *s;

	for (size_t i = 0; i < HSM_ID_LEN; i++)
		sprintf(hex + 2 * i, "%02x", id[i]);
	obj = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "v", RECORD_VERSION, "issuer",
	                issuer, "iss", iss, "kid", kid, "alg", jws_alg_name(alg), "id", hex,
	                "created_at", (json_int_t)created, "activates_at", (json_int_t)activates);
	if (!obj)
		return NULL;
	s = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	return s;
}

/* Turns one token record into a usable key of ic, or says (in the log) why not. */
static int key_from_record(struct keyring *kr, const struct issuer_conf *ic, json_t *doc,
                           const char *label, struct key *ret)
{
	struct record rec = {0};
	json_error_t jerr;
	enum jws_alg alg;
	int r;

	if (json_unpack_ex(doc, &jerr, 0, "{s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "v", &rec.v,
	                   "issuer", &rec.issuer, "iss", &rec.iss, "kid", &rec.kid, "alg", &rec.alg,
	                   "id", &rec.id_hex, "created_at", &rec.created_at, "activates_at",
	                   &rec.activates_at) < 0 ||
	    rec.v != RECORD_VERSION || jws_alg_from_name(rec.alg, &alg) < 0 ||
	    hex_decode(rec.id_hex, ret->hk.id, HSM_ID_LEN) < 0 || strlen(rec.kid) != JWK_KID_LEN) {
		log_warning("record '%s' is malformed, ignoring it", label);
		return -EINVAL;
	}
	/* A key is bound to one iss for life: after an iss change it must not sign again. */
	if (strcmp(rec.iss, ic->iss) != 0 || alg != ic->alg) {
		log_warning(
		    "issuer %s: key %s was made for iss '%s' with %s; the configuration now "
		    "says '%s' with %s, so it is not used",
		    ic->name, rec.kid, rec.iss, rec.alg, ic->iss, jws_alg_name(ic->alg));
		return -EINVAL;
	}
	r = hsm_find_key(kr->hsm, ret->hk.id, alg, &ret->hk);
	if (r == 0)
		r = hsm_public_jwk(kr->hsm, &ret->hk, &ret->jwk);
	if (r < 0) {
		log_error("issuer %s: key %s is not usable: %s", ic->name, rec.kid,
		          hsm_last_error());
		return r;
	}
	if (jwk_thumbprint(&ret->jwk, ret->kid) < 0 || strcmp(ret->kid, rec.kid) != 0) {
		log_error("issuer %s: key %s: the token's public key has thumbprint %s; record and "
		          "key disagree, not used",
		          ic->name, rec.kid, ret->kid);
		return -EINVAL;
	}
	ret->created_at = rec.created_at;
	ret->activates_at = rec.activates_at;
	return 0;
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

static int issuer_collect(struct keyring *kr, const struct issuer_conf *ic,
                          const struct hsm_record *recs, size_t n_recs, struct key **ret,
                          size_t *ret_n)
{
	struct key *keys = NULL;
	size_t n = 0;

	for (size_t i = 0; i < n_recs; i++) {
		json_t *doc = json_loadb(recs[i].value, recs[i].len, JSON_REJECT_DUPLICATES, NULL);
		json_t *issuer = doc ? json_object_get(doc, "issuer") : NULL;
		struct key k;
		int r = -EINVAL;

		if (json_is_string(issuer) && strcmp(json_string_value(issuer), ic->name) == 0)
			r = key_from_record(kr, ic, doc, recs[i].label, &k);
		json_decref(doc);
		if (r == 0 && append_key(&keys, &n, &k) < 0) {
			free(keys);
			return -ENOMEM;
		}
	}
	*ret = keys;
	*ret_n = n;
	return 0;
}

int keyring_load(struct keyring *kr, int64_t now)
{
	struct hsm_record *recs = NULL;
	size_t n_recs = 0;
	int r;

	r = hsm_list_records(kr->hsm, &recs, &n_recs);
	if (r < 0) {
		log_error("cannot read key records from the token: %s", hsm_last_error());
		return r;
	}
	for (size_t i = 0; i < kr->n; i++) {
		const struct issuer_conf *ic = kr->issuers[i].conf;
		struct keyset *set;
		struct key *keys;
		size_t n;

		r = issuer_collect(kr, ic, recs, n_recs, &keys, &n);
		if (r == 0)
			r = keyset_build(ic, keys, n, now, &set);
		if (r < 0)
			break;
		keyring_publish(kr, i, set);
	}
	hsm_records_free(recs, n_recs);
	return r;
}

/* Makes a key for ic in the token and commits it with its record; the record is written last,
 * so a crash in between leaves a key pair without a record, which is never used. */
static int key_create(struct keyring *kr, const struct issuer_conf *ic, int64_t now,
                      int64_t activates, struct key *ret)
{
	char label[64], rlabel[128];
	char *rec;
	int r;

	snprintf(label, sizeof(label), "tokensign:%s", ic->name);
	r = hsm_generate_key(kr->hsm, ic->alg, label, &ret->hk);
	if (r < 0) {
		log_error("issuer %s: cannot generate a key: %s", ic->name, hsm_last_error());
		return r;
	}
	r = hsm_public_jwk(kr->hsm, &ret->hk, &ret->jwk);
	if (r == 0)
		r = jwk_thumbprint(&ret->jwk, ret->kid);
	rec = r == 0
	          ? record_format(ic->name, ic->iss, ret->kid, ic->alg, ret->hk.id, now, activates)
	          : NULL;
	snprintf(rlabel, sizeof(rlabel), "tokensign:%s:%s", ic->name, ret->kid);
	if (!rec || (r = hsm_store_record(kr->hsm, rlabel, rec, strlen(rec))) < 0) {
		log_error("issuer %s: cannot record the new key: %s", ic->name, hsm_last_error());
		hsm_destroy_key(kr->hsm, ret->hk.id);
		free(rec);
		return r < 0 ? r : -ENOMEM;
	}
	free(rec);
	ret->created_at = now;
	ret->activates_at = activates;
	log_notice("issuer %s: generated key %s (%s), active from %lld", ic->name, ret->kid,
	           jws_alg_name(ic->alg), (long long)activates);
	return 0;
}

int keyring_bootstrap(struct keyring *kr, int64_t now)
{
	for (size_t i = 0; i < kr->n; i++) {
		const struct issuer_conf *ic = kr->issuers[i].conf;
		struct keyset *cur = keyring_acquire(kr, i), *set;
		bool empty = !cur || cur->n == 0;
		struct key *k;
		int r;

		keyset_release(cur);
		if (!empty)
			continue;
		k = calloc(1, sizeof(*k));
		if (!k)
			return -ENOMEM;
		r = key_create(kr, ic, now, now, k);
		if (r < 0) {
			free(k);
			return r;
		}
		r = keyset_build(ic, k, 1, now, &set);
		if (r < 0)
			return r;
		keyring_publish(kr, i, set);
	}
	return 0;
}

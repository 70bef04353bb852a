/* What is ours: records and key pairs judged one by one, so that an object anyone could plant is
 * never used, published or destroyed (docs/design.md, "Custody"). */
#include "custody.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "jws_verify.h"
#include "log.h"

void custody_key_label(const char *issuer, char buf[RECORD_LABEL_SIZE])
{
	snprintf(buf, RECORD_LABEL_SIZE, "%s%s", RECORD_LABEL_PREFIX, issuer);
}

void custody_rec_clear(struct hsm_record *r)
{
	if (!r)
		return;
	free(r->label);
	free(r->value);
	memset(r, 0, sizeof(*r));
}

int custody_rec_copy(struct hsm_record *dst, const struct hsm_record *src)
{
	*dst = *src;
	dst->label = strdup(src->label ? src->label : "");
	dst->value = malloc(src->len + 1);
	if (!dst->label || !dst->value) {
		custody_rec_clear(dst);
		return -ENOMEM;
	}
	memcpy(dst->value, src->value ? src->value : "", src->len);
	dst->value[src->len] = '\0';
	return 0;
}

void token_view_clear(struct token_view *v)
{
	for (size_t i = 0; i < v->n_orphans; i++)
		custody_rec_clear(&v->orphans[i].rec);
	for (size_t i = 0; i < v->n_stale; i++)
		custody_rec_clear(&v->stale[i]);
	for (size_t i = 0; i < v->n_damaged; i++)
		custody_rec_clear(&v->damaged[i].rec);
	free(v->orphans);
	free(v->stale);
	free(v->damaged);
	free(v->halfmade);
	memset(v, 0, sizeof(*v));
}

static void hex_of(const uint8_t *id, char out[2 * HSM_ID_LEN + 1])
{
	for (size_t i = 0; i < HSM_ID_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

/* True the first time this keyring sees handle: an object is reported once, not every rescan. */
static bool warn_once(struct keyring *kr, unsigned long handle)
{
	unsigned long *grown;

	for (size_t i = 0; i < kr->n_warned; i++)
		if (kr->warned[i] == handle)
			return false;
	grown = realloc(kr->warned, (kr->n_warned + 1) * sizeof(*grown));
	if (!grown)
		return true;
	kr->warned = grown;
	kr->warned[kr->n_warned++] = handle;
	return true;
}

void custody_report(struct keyring *kr, unsigned long handle, const char *what, const char *label,
                    const uint8_t *id, const char *why)
{
	char hex[2 * HSM_ID_LEN + 1] = "-";

	kr->view.n_foreign++;
	if (!warn_once(kr, handle))
		return;
	if (id)
		hex_of(id, hex);
	/* The label is the token's, not ours: %.64s keeps the line short; the log escapes it. */
	log_warning("foreign object in the token, not used, published or destroyed: handle %lu, "
	            "%s, label '%.64s', id %s: %s",
	            handle, what, label, hex, why);
}

/* ---- records ---- */

static void judge(const struct hsm_record *hr, struct parsed *p)
{
	char issuer[RECORD_ISSUER_MAX + 1], kid[JWK_KID_LEN + 1];
	const char *why = NULL;

	p->hr = hr;
	p->kind = PARSED_FOREIGN;
	if (!hr->private_obj) {
		snprintf(p->why, sizeof(p->why), "made without the PIN (a public object)");
		return;
	}
	if (hr->odd) {
		snprintf(p->why, sizeof(p->why), "an attribute of it cannot be read");
		return;
	}
	if (record_label_split(hr->label, issuer, kid) < 0) {
		snprintf(p->why, sizeof(p->why), "its label is not tokensign:ISSUER:KID");
		return;
	}
	if (record_parse(hr->value, hr->len, &p->rec, &why) < 0) {
		p->kind = PARSED_BROKEN;
		snprintf(p->why, sizeof(p->why), "%s", why ? why : "out of memory");
		return;
	}
	if (!record_label_matches(hr->label, &p->rec)) {
		snprintf(p->why, sizeof(p->why), "its label disagrees with its content");
		record_clear(&p->rec);
		return;
	}
	p->kind = PARSED_VALID;
}

/* Same key, highest revision first, then the longest-lived, then the first in the token's
 * list. */
static int revision_order(const void *a, const void *b)
{
	const struct parsed *x = *(struct parsed *const *)a, *y = *(struct parsed *const *)b;
	int c = memcmp(x->rec.id, y->rec.id, HSM_ID_LEN);

	if (c)
		return c;
	if (x->rec.seq != y->rec.seq)
		return x->rec.seq > y->rec.seq ? -1 : 1;
	/* Two revisions with one seq disagree (a conflict: the key is quarantined). The schedule
	 * that keeps the key longest stands, so that no conflict takes it out of the JWKS early or
	 * lets an older key take over again. */
	if (x->rec.retires_at != y->rec.retires_at)
		return x->rec.retires_at > y->rec.retires_at ? -1 : 1;
	if (x->rec.activates_at != y->rec.activates_at)
		return x->rec.activates_at > y->rec.activates_at ? -1 : 1;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Whether an older revision y describes the same key as x: only its schedule may differ. */
static bool same_key(const struct record *x, const struct record *y)
{
	return strcmp(x->issuer, y->issuer) == 0 && strcmp(x->kid, y->kid) == 0 &&
	       strcmp(x->iss, y->iss) == 0 && x->alg == y->alg && x->created_at == y->created_at;
}

static int note_stale(struct keyring *kr, const struct parsed *p)
{
	struct token_view *v = &kr->view;
	struct hsm_record *grown = realloc(v->stale, (v->n_stale + 1) * sizeof(*grown));

	if (!grown)
		return -ENOMEM;
	v->stale = grown;
	if (custody_rec_copy(&v->stale[v->n_stale], p->hr) < 0)
		return -ENOMEM;
	v->n_stale++;
	return 0;
}

/* cur is the current revision of y's key (same id). */
static int judge_revision(struct keyring *kr, struct parsed *cur, struct parsed *y)
{
	if (y->rec.seq < cur->rec.seq && same_key(&cur->rec, &y->rec))
		return note_stale(kr, y);
	if (y->rec.seq == cur->rec.seq && y->hr->len == cur->hr->len &&
	    memcmp(y->hr->value, cur->hr->value, y->hr->len) == 0) {
		y->kind = PARSED_FOREIGN;
		snprintf(y->why, sizeof(y->why), "a copy of another record");
		return 0;
	}
	/* Two private records that disagree about one key: we cannot tell which is ours. */
	cur->conflict = y->conflict = true;
	return 0;
}

static int issuer_kid_order(const void *a, const void *b)
{
	const struct parsed *x = *(struct parsed *const *)a, *y = *(struct parsed *const *)b;
	int c = strcmp(x->rec.issuer, y->rec.issuer);

	if (c == 0)
		c = strcmp(x->rec.kid, y->rec.kid);
	if (c)
		return c;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Marks the current revision of each key, notes stale ones, and marks conflicts: two revisions
 * of one id that disagree, or two ids claiming one kid. Leaves s->cur sorted by issuer and kid. */
static int sort_revisions(struct keyring *kr, struct sorting *s)
{
	struct parsed **v = calloc(s->n ? s->n : 1, sizeof(*v));
	size_t m = 0, cur = 0;
	int r = 0;

	if (!v)
		return -ENOMEM;
	for (size_t j = 0; j < s->n; j++)
		if (s->p[j].kind == PARSED_VALID)
			v[m++] = &s->p[j];
	if (m > 0)
		qsort(v, m, sizeof(*v), revision_order);
	for (size_t j = 0, head = 0; j < m && r == 0; j++) {
		if (j == 0 || memcmp(v[j]->rec.id, v[head]->rec.id, HSM_ID_LEN) != 0) {
			head = j;
			v[j]->current = true;
		} else {
			r = judge_revision(kr, v[head], v[j]);
		}
	}
	for (size_t j = 0; j < m; j++)
		if (v[j]->current)
			v[cur++] = v[j];
	if (cur > 0)
		qsort(v, cur, sizeof(*v), issuer_kid_order);
	for (size_t j = 1; j < cur; j++)
		if (strcmp(v[j]->rec.issuer, v[j - 1]->rec.issuer) == 0 &&
		    strcmp(v[j]->rec.kid, v[j - 1]->rec.kid) == 0)
			v[j]->conflict = v[j - 1]->conflict = true;
	s->cur = v;
	s->n_cur = cur;
	return r;
}

static const struct parsed *current_of(const struct sorting *s, const char *issuer, const char *kid)
{
	for (size_t j = 0; j < s->n_cur; j++)
		if (strcmp(s->cur[j]->rec.issuer, issuer) == 0 &&
		    strcmp(s->cur[j]->rec.kid, kid) == 0)
			return s->cur[j];
	return NULL;
}

/* A broken record that names a key with a valid record makes that key conflict; one that does
 * not blocks its issuer (custody_issuer_blocked). Either way it is quarantined: kept. */
static void judge_broken(struct keyring *kr, struct sorting *s)
{
	for (size_t j = 0; j < s->n; j++) {
		struct parsed *p = &s->p[j];
		char issuer[RECORD_ISSUER_MAX + 1], kid[JWK_KID_LEN + 1];
		const struct parsed *c;

		if (p->kind != PARSED_BROKEN || record_label_split(p->hr->label, issuer, kid) < 0)
			continue;
		kr->view.n_quarantined++;
		kr->view.halfmade_ok = false;
		c = current_of(s, issuer, kid);
		if (c)
			((struct parsed *)c)->conflict = true;
		if (warn_once(kr, p->hr->handle))
			log_error("record '%.80s' (handle %lu) cannot be used (%s); it is kept, "
			          "and so is its key, until an operator removes or repairs it",
			          p->hr->label, p->hr->handle, p->why);
	}
}

static bool configured(const struct keyring *kr, const char *issuer)
{
	for (size_t i = 0; i < kr->n; i++)
		if (strcmp(kr->issuers[i].conf->name, issuer) == 0)
			return true;
	return false;
}

static int note_orphan(struct keyring *kr, const struct parsed *p)
{
	struct token_view *v = &kr->view;
	struct orphan_key *grown = realloc(v->orphans, (v->n_orphans + 1) * sizeof(*grown));
	struct orphan_key *o;

	if (!grown)
		return -ENOMEM;
	v->orphans = grown;
	o = &grown[v->n_orphans];
	memset(o, 0, sizeof(*o));
	snprintf(o->issuer, sizeof(o->issuer), "%s", p->rec.issuer);
	snprintf(o->kid, sizeof(o->kid), "%s", p->rec.kid);
	o->alg = p->rec.alg;
	memcpy(o->id, p->rec.id, HSM_ID_LEN);
	o->created_at = p->rec.created_at;
	o->activates_at = p->rec.activates_at;
	o->retires_at = p->rec.retires_at;
	o->max_token_ttl = p->rec.max_token_ttl;
	if (custody_rec_copy(&o->rec, p->hr) < 0)
		return -ENOMEM;
	v->n_orphans++;
	return 0;
}

static int note_records(struct keyring *kr, struct sorting *s)
{
	int r = 0;

	for (size_t j = 0; j < s->n; j++)
		if (s->p[j].kind == PARSED_FOREIGN)
			custody_report(kr, s->p[j].hr->handle, "record", s->p[j].hr->label, NULL,
			               s->p[j].why);
	for (size_t j = 0; j < s->n_cur && r == 0; j++) {
		if (s->cur[j]->conflict)
			kr->view.n_quarantined++;
		if (!configured(kr, s->cur[j]->rec.issuer))
			r = note_orphan(kr, s->cur[j]);
	}
	return r;
}

int custody_sort(struct keyring *kr, const struct hsm_record *recs, size_t n,
                 struct hsm_key_index *ix, struct sorting *ret)
{
	struct sorting *s = ret;
	int r;

	memset(s, 0, sizeof(*s));
	s->ix = ix;
	s->n = n;
	s->p = calloc(n ? n : 1, sizeof(*s->p));
	s->claimed = calloc(hsm_key_index_size(ix) + 1, sizeof(*s->claimed));
	token_view_clear(&kr->view);
	kr->view.halfmade_ok = true;
	if (!s->p || !s->claimed)
		return -ENOMEM;
	for (size_t j = 0; j < n; j++) {
		s->p[j].pos = j;
		judge(&recs[j], &s->p[j]);
	}
	r = sort_revisions(kr, s);
	if (r == 0) {
		judge_broken(kr, s);
		r = note_records(kr, s);
	}
	return r;
}

void custody_sorting_free(struct sorting *s)
{
	for (size_t j = 0; s->p && j < s->n; j++)
		if (s->p[j].kind == PARSED_VALID)
			record_clear(&s->p[j].rec);
	free(s->p);
	free(s->cur);
	free(s->claimed);
	hsm_key_index_free(s->ix);
	memset(s, 0, sizeof(*s));
}

void custody_issuer_range(const struct sorting *s, const char *name, size_t *ret_lo, size_t *ret_hi)
{
	size_t lo = 0, hi = s->n_cur;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(s->cur[mid]->rec.issuer, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ret_lo = lo;
	for (hi = lo; hi < s->n_cur && strcmp(s->cur[hi]->rec.issuer, name) == 0; hi++)
		;
	*ret_hi = hi;
}

void custody_issuer_blocked(const struct sorting *s, const char *name, char *buf, size_t size)
{
	buf[0] = '\0';
	for (size_t j = 0; j < s->n; j++) {
		char issuer[RECORD_ISSUER_MAX + 1], kid[JWK_KID_LEN + 1];
		if (s->p[j].kind != PARSED_BROKEN ||
		    record_label_split(s->p[j].hr->label, issuer, kid) < 0 ||
		    strcmp(issuer, name) != 0 || current_of(s, issuer, kid))
			continue;
		snprintf(buf, size,
		         "record of key %s cannot be read (%s); signing stops until an operator "
		         "removes or repairs it",
		         kid, s->p[j].why);
		return;
	}
}

/* ---- keys ---- */

/* Marks the private objects with id and label as halves of one of our keys (or of one in
 * quarantine): they are accounted for, not reported as foreign. With hk (an incomplete pair),
 * writes the handles of the halves there are that pass our checks: only those may ever be
 * destroyed with the pair's record (sweep_damaged()). */
static void claim(struct keyring *kr, struct sorting *s, const uint8_t *id, const char *label,
                  struct hsm_key *hk)
{
	for (size_t i = hsm_key_index_first(s->ix, id); i < hsm_key_index_size(s->ix); i++) {
		const struct hsm_key_object *e = hsm_key_index_get(s->ix, i);
		if (memcmp(e->id, id, HSM_ID_LEN) != 0)
			break;
		if (!e->private_obj || strcmp(e->label, label) != 0)
			continue;
		if (hk && hsmc_key_check_half(kr->hsm, e->handle, e->private_key, hk->alg) < 0)
			continue; /* not ours: reported as foreign */
		s->claimed[i] = true;
		if (hk && e->private_key)
			atomic_store(&hk->priv, e->handle);
		else if (hk)
			hk->pub = e->handle;
	}
}

/* The public half must be the private key's own: a signature by one verifies with the other. */
static int pair_matches(struct keyring *kr, struct key *k)
{
	static const char probe[] = "tokensign: does the public half match the private key?";
	uint8_t sig[HSM_MAX_SIG];
	size_t len = 0;
	EVP_PKEY *pkey = NULL;
	int r = jwk_to_evp(&k->jwk, &pkey);

	if (r == 0)
		r = hsmc_prove(kr->hsm, &k->hk, probe, sizeof(probe) - 1, sig, sizeof(sig), &len);
	if (r == 0 && jws_verify(k->hk.alg, pkey, probe, sizeof(probe) - 1, sig, len) < 0)
		r = hsm_fail_text(-EPERM, "its public half does not verify its private key's "
		                          "signature");
	EVP_PKEY_free(pkey);
	return r;
}

/* Finds and checks a key new to this keyring. 0: usable; -EEXIST, -ENOENT (a half missing) and
 * -EOPNOTSUPP (the token cannot sign its algorithm): quarantined; -EPERM and -EINVAL: not ours;
 * other errors: the token could not tell. */
static int key_find(struct keyring *kr, struct sorting *s, struct key *k, const char *label)
{
	char kid[JWK_KID_LEN + 1];
	int r = hsmc_key_index_find(kr->hsm, s->ix, k->hk.id, label, k->hk.alg, &k->hk);

	if (r < 0)
		return r;
	/* A key keeps its algorithm for life: one the configuration no longer names is made
	 * ready here, to sign until its successor takes over. */
	r = hsmc_prepare_alg(kr->hsm, k->hk.alg, 0);
	if (r == 0)
		r = hsmc_public_jwk(kr->hsm, &k->hk, &k->jwk);
	if (r == 0 && (jwk_thumbprint(&k->jwk, kid) < 0 || strcmp(kid, k->kid) != 0))
		r = hsm_fail_text(-EPERM,
		                  "the token's public key has thumbprint %s: record and "
		                  "key disagree",
		                  kid);
	if (r == 0)
		r = pair_matches(kr, k);
	return r;
}

static int key_from_record(const struct parsed *p, struct key *k)
{
	memset(k, 0, sizeof(*k));
	snprintf(k->kid, sizeof(k->kid), "%s", p->rec.kid);
	memcpy(k->hk.id, p->rec.id, HSM_ID_LEN);
	k->hk.alg = p->rec.alg;
	k->created_at = p->rec.created_at;
	k->activates_at = p->rec.activates_at;
	k->retires_at = p->rec.retires_at;
	k->max_token_ttl = p->rec.max_token_ttl;
	k->withdrawn_at = p->rec.withdrawn_at;
	k->seq = p->rec.seq;
	k->iss = strdup(p->rec.iss);
	if (!k->iss || custody_rec_copy(&k->rec, p->hr) < 0) {
		free(k->iss);
		return -ENOMEM;
	}
	return 0;
}

/* A known key is not read again, but a second private object that claims its id since (only
 * someone with the PIN can make one) puts it in quarantine at once, as at a start. */
static int claimants_check(const struct sorting *s, const uint8_t *id)
{
	unsigned long n_priv = 0, n_pub = 0;

	for (size_t i = hsm_key_index_first(s->ix, id); i < hsm_key_index_size(s->ix); i++) {
		const struct hsm_key_object *e = hsm_key_index_get(s->ix, i);
		if (memcmp(e->id, id, HSM_ID_LEN) != 0)
			break;
		if (e->private_obj)
			e->private_key ? n_priv++ : n_pub++;
	}
	if (n_priv > 1 || n_pub > 1)
		return hsm_fail_text(-EEXIST,
		                     "key pair: %lu private-key and %lu public-key objects visible "
		                     "only after login carry this id",
		                     n_priv, n_pub);
	return 0;
}

/* A key already known (and published) is copied rather than read from the token again: its
 * objects cannot change under it (a key's attributes only ever get safer, and its pair is
 * destroyed only after its record). */
static const struct key *known_key(const struct keyset *set, const uint8_t *id)
{
	for (size_t i = 0; set && i < set->n; i++)
		if (memcmp(set->keys[i].hk.id, id, HSM_ID_LEN) == 0 && set->keys[i].published)
			return &set->keys[i];
	return NULL;
}

/* A pair that is not all there is ours and damaged (SoftHSM has been seen to lose a fresh
 * object's id) only if no private object with its id and label fails our checks: a private key
 * that is there but weak, next to a record, is someone else's pair and record (-EPERM). */
static int incomplete_or_foreign(struct keyring *kr, const struct sorting *s, const uint8_t *id,
                                 const char *label, enum jws_alg alg)
{
	for (size_t i = hsm_key_index_first(s->ix, id); i < hsm_key_index_size(s->ix); i++) {
		const struct hsm_key_object *e = hsm_key_index_get(s->ix, i);
		if (memcmp(e->id, id, HSM_ID_LEN) != 0)
			break;
		if (e->private_obj && strcmp(e->label, label) == 0 &&
		    hsmc_key_check_half(kr->hsm, e->handle, e->private_key, alg) < 0)
			return -EPERM;
	}
	return -ENOENT; /* the thread's error still says which half is missing */
}

/* SoftHSM's file store can show another process's fresh object without its attributes for good
 * (docs/design.md, "SoftHSM's file store is not coherent"): a pair that looks incomplete for
 * the first time makes the refresh read the token again with a new module instance, and is
 * believed only then. True when this one is such a doubt (noted in kr). */
static bool reread_wanted(struct keyring *kr, const uint8_t *id)
{
	uint8_t(*grown)[HSM_ID_LEN];

	if (kr->reread_state == REREAD_OFF)
		return false;
	for (size_t i = 0; i < kr->n_reread; i++)
		if (memcmp(kr->reread[i], id, HSM_ID_LEN) == 0)
			return false;
	if (kr->n_reread == KEYRING_REREAD_MAX) {
		memmove(kr->reread, kr->reread + 1, (KEYRING_REREAD_MAX - 1) * sizeof(*kr->reread));
		kr->n_reread--;
	}
	grown = realloc(kr->reread, (kr->n_reread + 1) * sizeof(*grown));
	if (!grown)
		return false;
	kr->reread = grown;
	memcpy(kr->reread[kr->n_reread++], id, HSM_ID_LEN);
	kr->reread_state = REREAD_WANTED;
	return true;
}

static void key_quarantined(struct keyring *kr, const struct issuer_conf *ic, struct key *k, int r)
{
	k->usable = false;
	k->incomplete = r == -ENOENT;
	kr->view.n_quarantined++;
	/* Said when believed: after the second reading, if it still shows the same. */
	if (kr->reread_state != REREAD_WANTED && warn_once(kr, k->rec.handle))
		log_error(
		    "issuer %s: key %s is kept in quarantine (it never signs, and stays in the "
		    "JWKS only if it was there): %s",
		    ic->name, k->kid, hsm_last_error());
}

int custody_key_load(struct keyring *kr, struct sorting *s, const struct issuer_conf *ic,
                     const struct parsed *p, const struct keyset *cur, struct key *ret)
{
	char label[RECORD_LABEL_SIZE];
	const struct key *known = known_key(cur, p->rec.id);
	int r = key_from_record(p, ret);

	if (r < 0)
		return r;
	custody_key_label(ic->name, label);
	ret->usable = true;
	if (known) {
		/* Published once, published until the lifecycle ends it (C7): a doubt that comes
		 * later stops its signing, not its verifying. */
		ret->hk = known->hk;
		atomic_store(&ret->hk.priv, atomic_load(&known->hk.priv));
		ret->jwk = known->jwk;
		ret->published = true;
		r = claimants_check(s, p->rec.id);
	} else {
		/* A record in conflict casts doubt on the schedule, not on the key: a pair that
		 * is ours in every way is published (it only never signs), the same at every start,
		 * so a planted record cannot take a key out of the JWKS (C7). */
		r = key_find(kr, s, ret, label);
		ret->published = r == 0;
	}
	if (r == 0 && p->conflict)
		r = hsm_fail_text(-EEXIST, "another private record claims this key or its kid");
	if (r == -ENOENT)
		r = incomplete_or_foreign(kr, s, p->rec.id, label, p->rec.alg);
	if (r == -ENOENT)
		atomic_store(&ret->hk.priv, 0), ret->hk.pub = 0;
	/* Objects of a pair that is not ours stay unclaimed: each is reported on its own. */
	if (r != -EPERM && r != -EINVAL)
		claim(kr, s, p->rec.id, label, r == -ENOENT ? &ret->hk : NULL);
	if (r == -ENOENT)
		reread_wanted(kr, p->rec.id);
	if (r == -EEXIST || r == -ENOENT || r == -EOPNOTSUPP) {
		key_quarantined(kr, ic, ret, r);
		return 0;
	}
	if (r == -EPERM || r == -EINVAL) {
		custody_report(
		    kr, atomic_load(&ret->hk.priv) ? atomic_load(&ret->hk.priv) : p->hr->handle,
		    "key pair and record", label, p->rec.id, hsm_last_error());
	} else if (r < 0) {
		log_error("issuer %s: key %s cannot be read now: %s", ic->name, p->rec.kid,
		          hsm_last_error());
	}
	if (r < 0) {
		free(ret->iss);
		custody_rec_clear(&ret->rec);
	}
	return r;
}

/* ---- key objects nobody accounts for ---- */

static bool recorded(const struct sorting *s, const uint8_t *id)
{
	for (size_t j = 0; j < s->n; j++)
		if (s->p[j].kind == PARSED_VALID && memcmp(s->p[j].rec.id, id, HSM_ID_LEN) == 0)
			return true;
	return false;
}

static size_t issuer_of_label(const struct keyring *kr, const char *label)
{
	size_t n = strlen(RECORD_LABEL_PREFIX);

	for (size_t i = 0; strncmp(label, RECORD_LABEL_PREFIX, n) == 0 && i < kr->n; i++)
		if (strcmp(label + n, kr->issuers[i].conf->name) == 0)
			return i;
	return kr->n;
}

/* The halves of id labelled for issuer that pass our checks, when there is at most one of each
 * class: 0 and *hk filled, or -EEXIST. */
static int halves_of(struct keyring *kr, const struct sorting *s, const uint8_t *id,
                     const char *label, enum jws_alg alg, struct hsm_key *hk)
{
	for (size_t i = hsm_key_index_first(s->ix, id); i < hsm_key_index_size(s->ix); i++) {
		const struct hsm_key_object *e = hsm_key_index_get(s->ix, i);
		if (memcmp(e->id, id, HSM_ID_LEN) != 0)
			break;
		if (s->claimed[i] || !e->private_obj || strcmp(e->label, label) != 0 ||
		    hsmc_key_check_half(kr->hsm, e->handle, e->private_key, alg) < 0)
			continue;
		if (e->private_key ? atomic_load(&hk->priv) != 0 : hk->pub != 0)
			return -EEXIST;
		if (e->private_key)
			atomic_store(&hk->priv, e->handle);
		else
			hk->pub = e->handle;
	}
	return 0;
}

/* Halves of ours by label and attributes that no record names: a generation that never
 * finished, or a destruction cut short between the two halves (a crash). */
static void note_halfmade(struct keyring *kr, struct sorting *s, size_t i)
{
	const struct hsm_key_object *e = hsm_key_index_get(s->ix, i);
	size_t issuer = issuer_of_label(kr, e->label);
	struct token_view *v = &kr->view;
	struct halfmade *grown;
	struct hsm_key hk = {0};

	if (!e->private_obj || !e->has_id || issuer == kr->n || recorded(s, e->id))
		return;
	memcpy(hk.id, e->id, HSM_ID_LEN);
	hk.alg = kr->issuers[issuer].conf->alg;
	if (halves_of(kr, s, e->id, e->label, hk.alg, &hk) < 0 ||
	    (atomic_load(&hk.priv) == 0 && hk.pub == 0))
		return;
	grown = realloc(v->halfmade, (v->n_halfmade + 1) * sizeof(*grown));
	if (!grown)
		return;
	v->halfmade = grown;
	grown[v->n_halfmade].issuer = issuer;
	grown[v->n_halfmade++].hk = hk;
	for (size_t j = hsm_key_index_first(s->ix, e->id); j < hsm_key_index_size(s->ix); j++) {
		unsigned long h = hsm_key_index_get(s->ix, j)->handle;
		if (h == atomic_load(&hk.priv) || h == hk.pub)
			s->claimed[j] = true;
	}
}

static bool our_id(const struct sorting *s, const struct hsm_key_object *e)
{
	return e->has_id && recorded(s, e->id);
}

/* Why a key object that looks like ours is not, as precisely as can be said; NULL when it is
 * gone. */
static const char *why_foreign(struct keyring *kr, const struct hsm_key_object *e)
{
	size_t issuer = issuer_of_label(kr, e->label);

	if (!e->private_obj)
		return "made without the PIN (a public object)";
	if (issuer < kr->n) {
		int r = hsmc_key_check_half(kr->hsm, e->handle, e->private_key,
		                            kr->issuers[issuer].conf->alg);
		if (r == -ESTALE)
			return NULL; /* destroyed since the search (another instance): nothing to
			                say */
		if (r < 0)
			return hsm_last_error();
	}
	return "not one of our key pairs (no record names it, or another object claims its id)";
}

void custody_note_objects(struct keyring *kr, struct sorting *s, int64_t now)
{
	size_t n = hsm_key_index_size(s->ix);

	(void)now;
	for (size_t i = 0; i < n; i++)
		if (!s->claimed[i])
			note_halfmade(kr, s, i);
	for (size_t i = 0; i < n; i++) {
		const struct hsm_key_object *e = hsm_key_index_get(s->ix, i);
		if (s->claimed[i] ||
		    (strncmp(e->label, RECORD_LABEL_PREFIX, strlen(RECORD_LABEL_PREFIX)) != 0 &&
		     !our_id(s, e)))
			continue;
		const char *why = why_foreign(kr, e);
		if (why)
			custody_report(kr, e->handle, e->private_key ? "private key" : "public key",
			               e->label, e->has_id ? e->id : NULL, why);
	}
}

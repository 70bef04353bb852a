/* What a helper does for each request. The request-facing process is not trusted here: a
 * signature is made only for a JWS whose header names the key and whose claims stay within the
 * facts the token's own record of that key holds (guard.c), and a record is written only for a
 * key pair in the token whose facts it does not change (docs/design.md, "Privilege
 * separation"). */
#include "serve.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "guard.h"
#include "proto.h"
#include "record.h"
#include "request.h"

/* What this helper learned of a key it signs with: from the key itself (kid, the thumbprint of
 * its public half) and from the token's records of it (iss, max_token_ttl). Facts a record may
 * never change, so the cache is never stale. */
struct known {
	struct hsm_key hk;
	char kid[JWK_KID_LEN + 1];
	char *iss;
	int64_t max_ttl;
};

#define KNOWN_MAX 64

struct server {
	struct hsm *h;
	enum serve_role role;
	struct known known[KNOWN_MAX];
	size_t n_known;
	struct proto_out out;
};

static void known_drop(struct server *sv, size_t i)
{
	free(sv->known[i].iss);
	sv->known[i] = sv->known[--sv->n_known];
}

/* One reading of record_of(). */
static int record_read_once(struct hsm *h, const uint8_t id[HSM_ID_LEN], struct record *ret)
{
	struct hsm_record *recs = NULL;
	size_t n = 0, found = 0;
	int r = hsm_list_records(h, &recs, &n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		struct record rec;
		const char *why;
		if (!recs[i].private_obj || recs[i].odd ||
		    record_parse(recs[i].value, recs[i].len, &rec, &why) < 0)
			continue;
		if (memcmp(rec.id, id, HSM_ID_LEN) != 0 ||
		    !record_label_matches(recs[i].label, &rec)) {
			record_clear(&rec);
			continue;
		}
		if (found++ == 0) {
			*ret = rec;
			continue;
		}
		if (strcmp(rec.issuer, ret->issuer) != 0 || strcmp(rec.iss, ret->iss) != 0 ||
		    strcmp(rec.kid, ret->kid) != 0 || rec.alg != ret->alg ||
		    rec.max_token_ttl != ret->max_token_ttl)
			r = hsm_fail_text(-EPERM, "records of one key disagree on its issuer, iss, "
			                          "kid, algorithm or token lifetime");
		else if (rec.seq > ret->seq) {
			record_clear(ret);
			*ret = rec;
			continue;
		}
		record_clear(&rec);
	}
	hsm_records_free(recs, n);
	if (r < 0 && found > 0)
		record_clear(ret);
	if (r == 0 && found == 0)
		r = hsm_fail_text(-ENOENT, "no record of ours describes the key");
	return r;
}

/* The records of id that are ours (private, readable, parseable), or -ENOENT. Records of one key
 * that disagree on a fact a revision may not change: -EPERM. ret gets the one with the highest
 * seq (the caller clears it). A record is revised by writing the new revision and then
 * destroying the old (docs/design.md): a reading whose search came before the write and whose
 * read of the old one came after the destroy finds none, so "none" is believed only after a
 * second reading, which finds the new revision if there is one. */
static int record_of(struct hsm *h, const uint8_t id[HSM_ID_LEN], struct record *ret)
{
	int r = record_read_once(h, id, ret);

	return r == -ENOENT ? record_read_once(h, id, ret) : r;
}

/* The key's thumbprint, from its public half in the token. */
static int key_kid(struct hsm *h, const struct hsm_key *hk, char kid[JWK_KID_LEN + 1])
{
	struct jwk jwk;
	int r = hsm_public_jwk(h, hk, &jwk);

	if (r == 0 && jwk_thumbprint(&jwk, kid) < 0)
		r = hsm_fail_text(-EIO, "cannot compute the key's thumbprint");
	return r;
}

/* Finds key id for signing and learns its facts, or returns the cached ones. */
static int known_get(struct server *sv, const uint8_t id[HSM_ID_LEN], enum jws_alg alg,
                     struct known **ret)
{
	struct known k = {0};
	struct record rec = {0};
	int r;

	for (size_t i = 0; i < sv->n_known; i++)
		if (memcmp(sv->known[i].hk.id, id, HSM_ID_LEN) == 0 && sv->known[i].hk.alg == alg) {
			*ret = &sv->known[i];
			return 0;
		}
	if ((r = hsm_prepare_alg(sv->h, alg, 0)) < 0 ||
	    (r = hsm_find_key(sv->h, id, alg, &k.hk)) < 0 ||
	    (r = key_kid(sv->h, &k.hk, k.kid)) < 0 || (r = record_of(sv->h, id, &rec)) < 0)
		return r;
	if (strcmp(rec.kid, k.kid) != 0 || rec.alg != alg)
		r = hsm_fail_text(-EPERM, "the key's record names another kid or algorithm");
	k.iss = r == 0 ? strdup(rec.iss) : NULL;
	k.max_ttl = rec.max_token_ttl;
	record_clear(&rec);
	if (r == 0 && !k.iss)
		r = -ENOMEM;
	if (r < 0)
		return r;
	if (sv->n_known == KNOWN_MAX)
		known_drop(sv, 0);
	sv->known[sv->n_known] = k;
	*ret = &sv->known[sv->n_known++];
	return 0;
}

static void do_sign(struct server *sv, const struct proto_req *rq)
{
	uint8_t sig[HSM_MAX_SIG];
	size_t slen = 0;
	struct known *k = NULL;
	char why[160];
	int r = known_get(sv, rq->key.id, rq->alg, &k);

	if (r == 0) {
		struct guard_key gk = {k->hk.alg, k->kid, k->iss, k->max_ttl};
		if (guard_check((const char *)rq->data, rq->data_len, &gk, (int64_t)time(NULL), why,
		                sizeof(why)) < 0)
			r = hsm_fail_text(-EPERM, "signature refused: %s", why);
	}
	if (r == 0)
		r = hsm_sign(sv->h, &k->hk, rq->data, rq->data_len, sig, sizeof(sig), &slen);
	if (r < 0 && r != -EPERM && k)
		known_drop(sv, (size_t)(k - sv->known)); /* found again next time */
	proto_answer(&sv->out, PROTO_SIGN, r, hsm_last_error());
	if (r == 0)
		proto_put_bytes(&sv->out, sig, slen);
}

/* One input of a batch, guarded and signed as a PROTO_SIGN alone: its result and the error
 * text or signature go into the answer, so a refusal is that input's, not the batch's. Returns
 * the result. */
static int sign_item(struct server *sv, struct known *k, const uint8_t *input, size_t len)
{
	uint8_t sig[HSM_MAX_SIG];
	size_t slen = 0;
	char why[160];
	struct guard_key gk = {k->hk.alg, k->kid, k->iss, k->max_ttl};
	int r = 0;

	if (guard_check((const char *)input, len, &gk, (int64_t)time(NULL), why, sizeof(why)) < 0)
		r = hsm_fail_text(-EPERM, "signature refused: %s", why);
	if (r == 0)
		r = hsm_sign(sv->h, &k->hk, input, len, sig, sizeof(sig), &slen);
	proto_put_u32(&sv->out, (uint32_t)r);
	proto_put_bytes(&sv->out, r < 0 ? hsm_last_error() : "",
	                r < 0 ? strnlen(hsm_last_error(), PROTO_MAX_ERROR - 1) : 0);
	if (r == 0)
		proto_put_bytes(&sv->out, sig, slen);
	return r;
}

/* A batch for one key: the key is found once (its failure is the whole answer's), then each
 * input is judged by the guard on its own. */
static void do_sign_batch(struct server *sv, const struct proto_req *rq)
{
	struct known *k = NULL;
	bool token_failed = false;
	int r = known_get(sv, rq->key.id, rq->alg, &k);

	proto_answer(&sv->out, PROTO_SIGN_BATCH, r, hsm_last_error());
	if (r < 0)
		return;
	proto_put_u32(&sv->out, rq->n_items);
	for (uint32_t i = 0; i < rq->n_items; i++) {
		r = sign_item(sv, k, rq->items[i], rq->item_len[i]);
		token_failed |= r < 0 && r != -EPERM;
	}
	if (token_failed)
		known_drop(sv, (size_t)(k - sv->known)); /* found again next time */
}

/* A proof signs only what can never pass for a JWS (PROTO_PROVE_PREFIX). */
static void do_prove(struct server *sv, struct proto_req *rq)
{
	uint8_t sig[HSM_MAX_SIG];
	size_t slen = 0;
	int r;

	if (rq->data_len < sizeof(PROTO_PROVE_PREFIX) - 1 ||
	    memcmp(rq->data, PROTO_PROVE_PREFIX, sizeof(PROTO_PROVE_PREFIX) - 1) != 0)
		r = hsm_fail_text(-EPERM, "a proof must begin with '%s'", PROTO_PROVE_PREFIX);
	else
		r = hsm_sign(sv->h, &rq->key, rq->data, rq->data_len, sig, sizeof(sig), &slen);
	proto_answer(&sv->out, PROTO_PROVE, r, hsm_last_error());
	if (r == 0)
		proto_put_bytes(&sv->out, sig, slen);
}

/* A record is written only for a key pair of ours that it describes (its kid is the pair's
 * thumbprint), and a revision never changes what earlier revisions of that key said. */
static int record_allowed(struct hsm *h, const char *label, const char *value, size_t len)
{
	struct record rec, old;
	struct hsm_key hk;
	char kid[JWK_KID_LEN + 1];
	const char *why;
	int r = record_parse(value, len, &rec, &why);

	if (r < 0)
		return hsm_fail_text(-EINVAL, "not a record: %s", why);
	if (!record_label_matches(label, &rec))
		r = hsm_fail_text(-EINVAL, "the label does not name the record's issuer and kid");
	if (r == 0 && (r = hsm_find_key(h, rec.id, rec.alg, &hk)) == 0 &&
	    (r = key_kid(h, &hk, kid)) == 0 && strcmp(kid, rec.kid) != 0)
		r = hsm_fail_text(-EPERM, "the record's kid is not its key pair's thumbprint");
	if (r == 0) {
		int o = record_of(h, rec.id, &old);
		if (o == 0) {
			if (strcmp(old.issuer, rec.issuer) != 0 || strcmp(old.iss, rec.iss) != 0 ||
			    old.alg != rec.alg || old.max_token_ttl != rec.max_token_ttl ||
			    old.seq >= rec.seq)
				r = hsm_fail_text(-EPERM,
				                  "a revision may not change a key's issuer, iss, "
				                  "algorithm or token lifetime, and must be newer");
			record_clear(&old);
		} else if (o != -ENOENT) {
			r = o;
		}
	}
	record_clear(&rec);
	return r;
}

static void do_store_record(struct server *sv, const struct proto_req *rq)
{
	unsigned long handle = 0;
	size_t len = strlen(rq->value);
	int r = record_allowed(sv->h, rq->label, rq->value, len);

	if (r == 0)
		r = hsm_store_record(sv->h, rq->label, rq->value, len, &handle);
	proto_answer(&sv->out, PROTO_STORE_RECORD, r, hsm_last_error());
	if (r == 0)
		proto_put_u64(&sv->out, handle);
}

static void do_index_read(struct server *sv)
{
	struct hsm_key_index *ix = NULL;
	int r = hsm_key_index_read(sv->h, &ix);

	if (r == 0 && ix->n > PROTO_MAX_ITEMS)
		r = hsm_fail_text(-E2BIG, "the token holds more than %u key objects",
		                  PROTO_MAX_ITEMS);
	proto_answer(&sv->out, PROTO_INDEX_READ, r, hsm_last_error());
	if (r == 0) {
		proto_put_u32(&sv->out, (uint32_t)ix->n);
		for (size_t i = 0; i < ix->n; i++)
			proto_put_object(&sv->out, &ix->e[i]);
	}
	hsm_key_index_free(ix);
}

static void do_list_records(struct server *sv)
{
	struct hsm_record *recs = NULL;
	size_t n = 0;
	int r = hsm_list_records(sv->h, &recs, &n);

	if (r == 0 && n > PROTO_MAX_ITEMS)
		r = hsm_fail_text(-E2BIG, "the token holds more than %u records", PROTO_MAX_ITEMS);
	proto_answer(&sv->out, PROTO_LIST_RECORDS, r, hsm_last_error());
	if (r == 0) {
		proto_put_u32(&sv->out, (uint32_t)n);
		for (size_t i = 0; i < n; i++) {
			/* A value we could not send whole would not be the record: flag it odd. */
			struct hsm_record rec = recs[i];
			if (rec.len > PROTO_MAX_RECORD ||
			    (rec.value && strlen(rec.value) != rec.len)) {
				rec.odd = true;
				rec.value = NULL;
				rec.len = 0;
			}
			proto_put_record(&sv->out, &rec);
		}
	}
	hsm_records_free(recs, n);
}

/* The pair the daemon picked from our index, checked here as hsm_key_index_find() checks one:
 * every attribute read again. */
static int key_accept(struct server *sv, struct proto_req *rq, struct hsm_key *ret)
{
	struct hsm_key_object pair[2] = {
	    {.handle = atomic_load(&rq->key.priv),
	     .private_key = true,
	     .private_obj = true,
	     .has_id = true},
	    {.handle = rq->key.pub, .private_obj = true, .has_id = true},
	};
	struct hsm_key_index ix = {pair, 2};

	for (size_t i = 0; i < 2; i++) {
		memcpy(pair[i].id, rq->key.id, HSM_ID_LEN);
		strcpy(pair[i].label, rq->label);
	}
	hsm_key_index_sort(&ix);
	return hsm_key_index_find(sv->h, &ix, rq->key.id, rq->label, rq->alg, ret);
}

/* Runs one decoded request and writes its answer to sv->out. */
static void dispatch(struct server *sv, struct proto_req *rq)
{
	enum proto_op op = rq->op;
	struct hsm_key k;
	struct jwk jwk;
	size_t n = 0;
	int r;

	switch (op) {
	case PROTO_SIGN:
		do_sign(sv, rq);
		return;
	case PROTO_SIGN_BATCH:
		do_sign_batch(sv, rq);
		return;
	case PROTO_PROVE:
		do_prove(sv, rq);
		return;
	case PROTO_STORE_RECORD:
		do_store_record(sv, rq);
		return;
	case PROTO_INDEX_READ:
		do_index_read(sv);
		return;
	case PROTO_LIST_RECORDS:
		do_list_records(sv);
		return;
	case PROTO_PROBE:
		r = hsm_probe(sv->h);
		break;
	case PROTO_PREPARE_ALG:
		r = hsm_prepare_alg(sv->h, rq->alg, rq->bits);
		break;
	case PROTO_GENERATE:
		r = hsm_generate_key(sv->h, rq->alg, rq->bits, rq->label, &k);
		break;
	case PROTO_KEY_ACCEPT:
		r = key_accept(sv, rq, &k);
		break;
	case PROTO_CHECK_HALF:
		r = hsm_key_check_half(sv->h, (unsigned long)rq->handle, rq->private_key, rq->alg);
		break;
	case PROTO_PUBLIC_JWK:
		r = hsm_public_jwk(sv->h, &rq->key, &jwk);
		break;
	case PROTO_DESTROY_KEY:
		r = hsm_destroy_key(sv->h, &rq->key, rq->label);
		break;
	case PROTO_DESTROY_RECORD:
		r = hsm_destroy_record(sv->h, &rq->rec);
		break;
	case PROTO_MIGRATE:
		r = hsm_migrate_public_halves(sv->h, &n);
		break;
	case PROTO_RESYNC:
		r = hsm_resync(sv->h);
		break;
	default:
		r = hsm_fail_text(-EPROTO, "op %d", (int)op); /* decode refuses these */
		break;
	}
	proto_answer(&sv->out, op, r, hsm_last_error());
	if (r < 0)
		return;
	if (op == PROTO_PREPARE_ALG)
		proto_put_str(&sv->out, hsm_alg_plan(sv->h, rq->alg));
	else if (op == PROTO_GENERATE || op == PROTO_KEY_ACCEPT)
		proto_put_key(&sv->out, &k);
	else if (op == PROTO_PUBLIC_JWK)
		proto_put_jwk(&sv->out, &jwk);
	else if (op == PROTO_MIGRATE)
		proto_put_u64(&sv->out, n);
}

static bool role_serves(enum serve_role role, enum proto_op op)
{
	bool signs = op == PROTO_SIGN || op == PROTO_SIGN_BATCH;

	if (role == SERVE_SIGN)
		return signs || op == PROTO_PROBE;
	return !signs;
}

int serve(struct hsm *h, int fd, enum serve_role role)
{
	struct server sv = {.h = h, .role = role};
	uint8_t *buf = NULL;
	const uint8_t *body = NULL;
	size_t cap = 0, len;
	int r;

	for (;;) {
		struct proto_req rq;
		unsigned long repairs;
		/* The decoder holds every op but SIGN_BATCH to PROTO_MAX_REQUEST. */
		r = proto_recv(fd, PROTO_MAX_BATCH_REQUEST, &buf, &cap, &body, &len);
		if (r == -EPIPE) {
			r = 0; /* the daemon is gone */
			break;
		}
		if (r < 0 || proto_req_decode(body, len, &rq) < 0 || !role_serves(role, rq.op)) {
			if (r == 0)
				proto_req_clear(&rq);
			r = -EPROTO;
			break;
		}
		repairs = hsm_repairs(h);
		dispatch(&sv, &rq);
		proto_answer_set_repairs(&sv.out, hsm_repairs(h) - repairs);
		proto_req_clear(&rq);
		if ((r = proto_send(fd, &sv.out)) < 0)
			break;
	}
	while (sv.n_known > 0)
		known_drop(&sv, 0);
	proto_out_free(&sv.out);
	free(buf);
	return r == -EPIPE ? 0 : r;
}

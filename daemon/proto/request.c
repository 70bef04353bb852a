/* Decoding a helper request (request.h). */
#include "request.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void get_alg(struct proto_in *in, enum jws_alg *ret)
{
	uint8_t alg = proto_get_u8(in);

	if (alg >= _JWS_ALG_MAX)
		in->bad = true;
	*ret = in->bad ? 0 : (enum jws_alg)alg;
}

/* The key id and algorithm of SIGN and SIGN_BATCH. */
static void get_sign_key(struct proto_in *in, struct proto_req *req)
{
	size_t n;
	const uint8_t *id = proto_get_bytes(in, HSM_ID_LEN, &n);

	if (id && n == HSM_ID_LEN)
		memcpy(req->key.id, id, HSM_ID_LEN);
	else
		in->bad = true;
	get_alg(in, &req->alg);
	req->key.alg = req->alg;
}

/* n inputs, 1..PROTO_MAX_BATCH, each capped as a single SIGN's. */
static void get_batch(struct proto_in *in, struct proto_req *req)
{
	uint32_t n = proto_get_u32(in);

	if (n == 0 || n > PROTO_MAX_BATCH) {
		in->bad = true;
		return;
	}
	for (uint32_t i = 0; i < n && !in->bad; i++)
		req->items[i] = proto_get_bytes(in, PROTO_MAX_INPUT, &req->item_len[i]);
	req->n_items = in->bad ? 0 : n;
}

static bool decode_fields(struct proto_in *in, struct proto_req *req)
{
	switch (req->op) {
	case PROTO_PROBE:
	case PROTO_INDEX_READ:
	case PROTO_LIST_RECORDS:
	case PROTO_MIGRATE:
	case PROTO_RESYNC:
		break;
	case PROTO_PREPARE_ALG:
		get_alg(in, &req->alg);
		req->bits = proto_get_u32(in);
		break;
	case PROTO_GENERATE:
		get_alg(in, &req->alg);
		req->bits = proto_get_u32(in);
		proto_get_str(in, req->label, sizeof(req->label));
		break;
	case PROTO_KEY_ACCEPT:
		proto_get_key(in, &req->key);
		proto_get_str(in, req->label, sizeof(req->label));
		/* Both halves' CKA_LABEL must hold it (struct hsm_key_object). */
		if (strlen(req->label) >= HSM_LABEL_MAX)
			in->bad = true;
		break;
	case PROTO_CHECK_HALF: {
		uint8_t priv;
		req->handle = proto_get_u64(in);
		priv = proto_get_u8(in);
		get_alg(in, &req->alg);
		if (priv > 1)
			in->bad = true;
		req->private_key = priv;
		break;
	}
	case PROTO_PUBLIC_JWK:
		proto_get_key(in, &req->key);
		break;
	case PROTO_DESTROY_KEY:
		proto_get_key(in, &req->key);
		proto_get_str(in, req->label, sizeof(req->label));
		break;
	case PROTO_STORE_RECORD:
		proto_get_str(in, req->label, sizeof(req->label));
		req->value = proto_get_strdup(in, PROTO_MAX_RECORD);
		break;
	case PROTO_DESTROY_RECORD:
		proto_get_record(in, &req->rec);
		break;
	case PROTO_SIGN:
		get_sign_key(in, req);
		req->data = proto_get_bytes(in, PROTO_MAX_INPUT, &req->data_len);
		break;
	case PROTO_SIGN_BATCH:
		get_sign_key(in, req);
		get_batch(in, req);
		break;
	case PROTO_PROVE:
		proto_get_key(in, &req->key);
		req->data = proto_get_bytes(in, PROTO_PROVE_MAX, &req->data_len);
		break;
	default:
		return false;
	}
	if (req->op == PROTO_KEY_ACCEPT || req->op == PROTO_PUBLIC_JWK ||
	    req->op == PROTO_DESTROY_KEY || req->op == PROTO_PROVE)
		req->alg = req->key.alg;
	return proto_done(in);
}

int proto_req_decode(const uint8_t *body, size_t len, struct proto_req *req)
{
	struct proto_in in;

	memset(req, 0, sizeof(*req));
	if (proto_open_request(&in, body, len, &req->op) < 0)
		return -EPROTO;
	if (len > PROTO_MAX_REQUEST && req->op != PROTO_SIGN_BATCH)
		return -EPROTO;
	return decode_fields(&in, req) ? 0 : -EPROTO;
}

void proto_req_clear(struct proto_req *req)
{
	free(req->value);
	free(req->rec.label);
	free(req->rec.value);
	memset(req, 0, sizeof(*req));
}

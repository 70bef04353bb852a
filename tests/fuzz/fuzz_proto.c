/* libFuzzer harness for the helper protocol (daemon/proto/): any request frame body decodes or
 * is refused with nothing leaked; any answer body is read by the daemon's decoders of lists,
 * records, key objects, keys and batch results without reading out of bounds. The first byte picks
 * the mode. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A decoded request holds only what its caps allow. */
static void check_request(const struct proto_req *rq)
{
	if (rq->op <= PROTO_READY || rq->op >= _PROTO_OP_MAX)
		abort();
	if ((unsigned)rq->alg >= _JWS_ALG_MAX || strlen(rq->label) > PROTO_MAX_LABEL)
		abort();
	if (rq->op == PROTO_SIGN && (!rq->data && rq->data_len))
		abort();
	if (rq->data_len > PROTO_MAX_INPUT)
		abort();
	if ((rq->op == PROTO_SIGN_BATCH) != (rq->n_items > 0) || rq->n_items > PROTO_MAX_BATCH)
		abort();
	for (uint32_t i = 0; i < rq->n_items; i++)
		if ((!rq->items[i] && rq->item_len[i]) || rq->item_len[i] > PROTO_MAX_INPUT)
			abort();
	if (rq->op == PROTO_STORE_RECORD && (!rq->value || strlen(rq->value) > PROTO_MAX_RECORD))
		abort();
}

/* The shapes of the answers the daemon reads (hsmc.c), after the answer header. */
static void read_answer_fields(struct proto_in *in, uint8_t kind)
{
	struct hsm_record rec;
	struct hsm_key_object obj;
	struct hsm_key key;
	struct jwk jwk;
	size_t n;
	uint32_t count;

	switch (kind % 6) {
	case 0:
		count = proto_get_u32(in);
		for (uint32_t i = 0; i < count && i < PROTO_MAX_ITEMS && !in->bad; i++) {
			proto_get_record(in, &rec);
			if (rec.value && strlen(rec.value) != rec.len)
				abort();
			free(rec.label);
			free(rec.value);
		}
		break;
	case 1:
		count = proto_get_u32(in);
		for (uint32_t i = 0; i < count && i < PROTO_MAX_ITEMS && !in->bad; i++) {
			proto_get_object(in, &obj);
			if (strlen(obj.label) >= sizeof(obj.label))
				abort();
		}
		break;
	case 2:
		proto_get_key(in, &key);
		if ((unsigned)key.alg >= _JWS_ALG_MAX)
			abort();
		break;
	case 3:
		proto_get_jwk(in, &jwk);
		if (!in->bad && (jwk.coord_len > sizeof(jwk.x) || jwk.n_len > sizeof(jwk.n) ||
		                 jwk.e_len > sizeof(jwk.e)))
			abort();
		break;
	case 4:
		if (proto_get_bytes(in, HSM_MAX_SIG, &n) && n > HSM_MAX_SIG)
			abort();
		break;
	default: /* a SIGN_BATCH answer's items, as hsmc.c reads them */
		count = proto_get_u32(in);
		for (uint32_t i = 0; i < count && i < PROTO_MAX_BATCH && !in->bad; i++) {
			char err[PROTO_MAX_ERROR];
			int32_t res = (int32_t)proto_get_u32(in);
			proto_get_str(in, err, sizeof(err));
			if (strlen(err) >= sizeof(err))
				abort();
			if (res == 0 && proto_get_bytes(in, HSM_MAX_SIG, &n) && n > HSM_MAX_SIG)
				abort();
		}
	}
	(void)proto_done(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_req rq;
	struct proto_in in;
	char error[PROTO_MAX_ERROR];
	int result;
	unsigned repairs;

	if (size < 1)
		return 0;
	if (data[0] < 128) {
		if (proto_req_decode(data + 1, size - 1, &rq) == 0)
			check_request(&rq);
		proto_req_clear(&rq);
		return 0;
	}
	for (int op = 1; op < _PROTO_OP_MAX; op++) {
		if (proto_open_answer(&in, data + 1, size - 1, (enum proto_op)op, &result, &repairs,
		                      error, sizeof(error)) < 0)
			continue;
		if (result > 0 || result < -4095 || strlen(error) >= sizeof(error))
			abort();
		read_answer_fields(&in, data[0]);
	}
	return 0;
}

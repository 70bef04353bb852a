/* A helper's request, decoded whole before anything runs: the one decoder of every op, pure
 * (no PKCS#11), so that it can be fuzzed alone (tests/fuzz/fuzz_proto.c). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

struct proto_req {
	enum proto_op op;
	enum jws_alg alg; /* PREPARE_ALG, GENERATE, CHECK_HALF, SIGN(_BATCH), and of key */
	uint32_t bits;    /* PREPARE_ALG, GENERATE */
	struct hsm_key
	    key; /* KEY_ACCEPT, PUBLIC_JWK, DESTROY_KEY, PROVE; SIGN, SIGN_BATCH: id only */
	char label[PROTO_MAX_LABEL + 1]; /* GENERATE, KEY_ACCEPT, DESTROY_KEY, STORE_RECORD */
	uint64_t handle;                 /* CHECK_HALF */
	bool private_key;                /* CHECK_HALF */
	const uint8_t *data;             /* SIGN: the input; PROVE: the challenge (in the frame) */
	size_t data_len;
	char *value;           /* STORE_RECORD; owned */
	struct hsm_record rec; /* DESTROY_RECORD; owned */
	uint32_t n_items;      /* SIGN_BATCH: 1..PROTO_MAX_BATCH inputs (in the frame) */
	const uint8_t *items[PROTO_MAX_BATCH];
	size_t item_len[PROTO_MAX_BATCH];
};

/* Decodes the request frame body (len bytes). 0, or -EPROTO when anything is off: the version,
 * the op, a field, a length over its cap, a byte left over, a frame over PROTO_MAX_REQUEST for
 * any op but SIGN_BATCH (the helper reads up to PROTO_MAX_BATCH_REQUEST). req points into body
 * (data) and owns what proto_req_clear() frees, on success and failure alike. */
int proto_req_decode(const uint8_t *body, size_t len, struct proto_req *req);
void proto_req_clear(struct proto_req *req);

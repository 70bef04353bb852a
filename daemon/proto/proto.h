/* The protocol between tokensignd and its tokensign-hsm helpers (docs/design.md, "Privilege
 * separation"): small, binary, versioned, every length capped.
 *
 * A frame is a 4-byte little-endian length, then that many bytes of body. A request's body is
 * [u8 version][u8 op][fields]; an answer's is [u8 version][u8 op][i32 result][u8 repairs][str
 * error] [fields], the fields only when result is 0; repairs: how many times the helper reopened
 * its session or logged in again while serving the request (counted by the daemon's metrics).
 * Integers are little-endian; bytes and str are a u32 length then the data (str: no NUL inside).
 * Each side drops the connection on any frame it cannot decode exactly: the helper exits, the
 * daemon kills and replaces it. No general PKCS#11 passthrough: each op is one thing the daemon
 * needs. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hsm_types.h"
#include "jwk.h"

#define PROTO_VERSION 2

#define PROTO_MAX_REQUEST (128u * 1024)      /* a signing input, a record */
#define PROTO_MAX_ANSWER  (8u * 1024 * 1024) /* the key index or records of a large token */
#define PROTO_MAX_INPUT   (96u * 1024)       /* a JWS signing input (guard.h) */
#define PROTO_MAX_RECORD  (16u * 1024)       /* a record's CKA_VALUE */
#define PROTO_MAX_LABEL   256u
#define PROTO_MAX_ERROR   192u
#define PROTO_MAX_ITEMS   20000u /* objects in one index or record list */

/* PROTO_SIGN_BATCH: at most PROTO_MAX_BATCH inputs, each at most PROTO_MAX_INPUT, in a frame of
 * at most PROTO_MAX_BATCH_REQUEST (every other request stays within PROTO_MAX_REQUEST). A batch
 * body of the sign API is at most 256 KiB (policy.h): its signing inputs, base64url of the
 * claims plus what the daemon adds, fit in this with room to spare. */
#define PROTO_MAX_BATCH         64u
#define PROTO_MAX_BATCH_REQUEST (512u * 1024)

/* File descriptors a helper is started with (fork + exec): its end of the socketpair and the
 * PIN file, opened by the daemon. */
#define PROTO_FD_SOCKET 3
#define PROTO_FD_PIN    4

enum proto_op {
	PROTO_READY = 1,      /* helper -> daemon once, unasked, after login: result */
	PROTO_PROBE,          /* -> result: the session and the token answer */
	PROTO_PREPARE_ALG,    /* u8 alg, u32 bits -> str plan */
	PROTO_GENERATE,       /* u8 alg, u32 bits, str label -> key */
	PROTO_KEY_ACCEPT,     /* key, str label -> key: the pair's attributes checked */
	PROTO_CHECK_HALF,     /* u64 handle, u8 private_key, u8 alg -> result */
	PROTO_INDEX_READ,     /* -> u32 n, n x object */
	PROTO_PUBLIC_JWK,     /* key -> jwk */
	PROTO_DESTROY_KEY,    /* key, str label -> result */
	PROTO_LIST_RECORDS,   /* -> u32 n, n x record */
	PROTO_STORE_RECORD,   /* str label, str value -> u64 handle */
	PROTO_DESTROY_RECORD, /* record -> result */
	PROTO_SIGN,           /* id, u8 alg, bytes input -> bytes sig: a JWS, guarded */
	PROTO_PROVE,          /* key, bytes challenge -> bytes sig: PROTO_PROVE_PREFIX... */
	PROTO_MIGRATE,        /* -> u64 migrated */
	PROTO_RESYNC,         /* -> result */
	PROTO_SIGN_BATCH,     /* id, u8 alg, u32 n, n x bytes input -> u32 n, n x (i32 result,
	                         str error, bytes sig when result is 0): each input guarded alone */
	_PROTO_OP_MAX,
};

/* What PROTO_PROVE signs must begin with: bytes no JWS signing input holds (it is base64url and
 * one dot), so a proof can never pass for a token. */
#define PROTO_PROVE_PREFIX "tokensign: "
#define PROTO_PROVE_MAX    256u

const char *proto_op_name(enum proto_op op);

/* A frame being written: 4 bytes kept at the front for the length. oom: an append failed (the
 * frame must not be sent). */
struct proto_out {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};

void proto_out_reset(struct proto_out *o);
void proto_out_free(struct proto_out *o);
void proto_put_u8(struct proto_out *o, uint8_t v);
void proto_put_u32(struct proto_out *o, uint32_t v);
void proto_put_u64(struct proto_out *o, uint64_t v);
void proto_put_bytes(struct proto_out *o, const void *data, size_t len);
void proto_put_str(struct proto_out *o, const char *s);
/* Composite fields. */
void proto_put_key(struct proto_out *o, const struct hsm_key *k);
void proto_put_jwk(struct proto_out *o, const struct jwk *j);
void proto_put_record(struct proto_out *o, const struct hsm_record *r);
void proto_put_object(struct proto_out *o, const struct hsm_key_object *e);

/* Starts a request or an answer. */
void proto_request(struct proto_out *o, enum proto_op op);
void proto_answer(struct proto_out *o, enum proto_op op, int result, const char *error);
/* Sets the repairs of the answer that proto_answer() began in o (at most 255 are told). */
void proto_answer_set_repairs(struct proto_out *o, unsigned long repairs);

/* A frame being read. bad: a field did not decode (every later read yields zero/NULL). */
struct proto_in {
	const uint8_t *p;
	size_t len, off;
	bool bad;
};

uint8_t proto_get_u8(struct proto_in *in);
uint32_t proto_get_u32(struct proto_in *in);
uint64_t proto_get_u64(struct proto_in *in);
/* A pointer into the frame, or NULL (bad) when longer than max. */
const uint8_t *proto_get_bytes(struct proto_in *in, size_t max, size_t *ret_len);
/* Copies a str into buf (size bytes, NUL added); bad when longer or holding a NUL. */
void proto_get_str(struct proto_in *in, char *buf, size_t size);
/* A malloc'ed copy; NULL and bad when too long, holding a NUL, or out of memory. */
char *proto_get_strdup(struct proto_in *in, size_t max);
void proto_get_key(struct proto_in *in, struct hsm_key *k);
void proto_get_jwk(struct proto_in *in, struct jwk *j);
/* Fills r with malloc'ed label and value (hsm_records_free() frees them). */
void proto_get_record(struct proto_in *in, struct hsm_record *r);
void proto_get_object(struct proto_in *in, struct hsm_key_object *e);
/* True when every byte was read and none failed. */
bool proto_done(const struct proto_in *in);

/* A request's header: version and op. -EPROTO when the version is not ours or op unknown. */
int proto_open_request(struct proto_in *in, const uint8_t *body, size_t len, enum proto_op *op);
/* An answer's header, which must answer op: *result, the helper's session repairs and the error
 * text (into error, size bytes). -EPROTO on anything else. */
int proto_open_answer(struct proto_in *in, const uint8_t *body, size_t len, enum proto_op op,
                      int *result, unsigned *repairs, char *error, size_t size);

/* Writes the frame whole (MSG_NOSIGNAL on a socket). 0, -EPIPE or another negative errno. */
int proto_send(int fd, struct proto_out *o);

/* How long each receive on fd may wait (SO_RCVTIMEO); 0: for ever. */
int proto_set_timeout(int fd, int timeout_ms);

#define PROTO_RECV_START (64u * 1024) /* the receive buffer's first size */

/* Reads one frame into *buf (grown as needed, kept for the next call): *ret_body and *ret_len
 * are its body. Usually a single recv(). -ETIMEDOUT when a receive waited longer than the
 * socket's timeout (proto_set_timeout()); -EPIPE at end of stream (also mid-frame); -EMSGSIZE
 * when the length exceeds max or is below a header's; -EPROTO when more bytes than the frame
 * arrived (only one frame may be in flight); another negative errno on a read error. */
int proto_recv(int fd, size_t max, uint8_t **buf, size_t *buf_cap, const uint8_t **ret_body,
               size_t *ret_len);

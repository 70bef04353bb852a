/* The helper protocol's encoding (proto.h): every read bounded, every failure sticky. */
#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const char *const op_names[_PROTO_OP_MAX] = {
    [PROTO_READY] = "ready",
    [PROTO_PROBE] = "probe",
    [PROTO_PREPARE_ALG] = "prepare-alg",
    [PROTO_GENERATE] = "generate",
    [PROTO_KEY_ACCEPT] = "key-accept",
    [PROTO_CHECK_HALF] = "check-half",
    [PROTO_INDEX_READ] = "index-read",
    [PROTO_PUBLIC_JWK] = "public-jwk",
    [PROTO_DESTROY_KEY] = "destroy-key",
    [PROTO_LIST_RECORDS] = "list-records",
    [PROTO_STORE_RECORD] = "store-record",
    [PROTO_DESTROY_RECORD] = "destroy-record",
    [PROTO_SIGN] = "sign",
    [PROTO_PROVE] = "prove",
    [PROTO_MIGRATE] = "migrate",
    [PROTO_RESYNC] = "resync",
    [PROTO_SIGN_BATCH] = "sign-batch",
};

const char *proto_op_name(enum proto_op op)
{
	if ((unsigned)op >= _PROTO_OP_MAX || !op_names[op])
		return "unknown";
	return op_names[op];
}

/* ---- writing ---- */

static bool reserve(struct proto_out *o, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (o->oom)
		return false;
	if (o->len + n <= o->cap)
		return true;
	if (o->len + n > PROTO_MAX_ANSWER + 4) {
		o->oom = true;
		return false;
	}
	cap = o->cap ? o->cap : 256;
	while (cap < o->len + n)
		cap *= 2;
	p = realloc(o->p, cap);
	if (!p) {
		o->oom = true;
		return false;
	}
	o->p = p;
	o->cap = cap;
	return true;
}

void proto_out_reset(struct proto_out *o)
{
	o->len = 0;
	o->oom = false;
	if (reserve(o, 4))
		o->len = 4;
}

void proto_out_free(struct proto_out *o)
{
	free(o->p);
	memset(o, 0, sizeof(*o));
}

static void put_le(struct proto_out *o, uint64_t v, size_t n)
{
	if (!reserve(o, n))
		return;
	for (size_t i = 0; i < n; i++)
		o->p[o->len++] = (uint8_t)(v >> (8 * i));
}

void proto_put_u8(struct proto_out *o, uint8_t v)
{
	put_le(o, v, 1);
}

void proto_put_u32(struct proto_out *o, uint32_t v)
{
	put_le(o, v, 4);
}

void proto_put_u64(struct proto_out *o, uint64_t v)
{
	put_le(o, v, 8);
}

void proto_put_bytes(struct proto_out *o, const void *data, size_t len)
{
	if (len > UINT32_MAX) {
		o->oom = true;
		return;
	}
	proto_put_u32(o, (uint32_t)len);
	if (len && reserve(o, len)) {
		memcpy(o->p + o->len, data, len);
		o->len += len;
	}
}

void proto_put_str(struct proto_out *o, const char *s)
{
	proto_put_bytes(o, s, s ? strlen(s) : 0);
}

void proto_put_key(struct proto_out *o, const struct hsm_key *k)
{
	proto_put_bytes(o, k->id, HSM_ID_LEN);
	proto_put_u8(o, (uint8_t)k->alg);
	proto_put_u64(o, atomic_load(&k->priv));
	proto_put_u64(o, k->pub);
}

void proto_put_jwk(struct proto_out *o, const struct jwk *j)
{
	proto_put_u8(o, (uint8_t)j->kty);
	proto_put_str(o, j->crv);
	proto_put_bytes(o, j->x, j->kty == JWK_KTY_RSA ? 0 : j->coord_len);
	proto_put_bytes(o, j->y, j->kty == JWK_KTY_EC ? j->coord_len : 0);
	proto_put_bytes(o, j->n, j->kty == JWK_KTY_RSA ? j->n_len : 0);
	proto_put_bytes(o, j->e, j->kty == JWK_KTY_RSA ? j->e_len : 0);
}

void proto_put_record(struct proto_out *o, const struct hsm_record *r)
{
	proto_put_u64(o, r->handle);
	proto_put_str(o, r->label);
	proto_put_bytes(o, r->value, r->value ? r->len : 0);
	proto_put_u8(o, (uint8_t)((r->private_obj ? 1 : 0) | (r->odd ? 2 : 0)));
}

void proto_put_object(struct proto_out *o, const struct hsm_key_object *e)
{
	proto_put_u64(o, e->handle);
	proto_put_u8(o, (uint8_t)((e->private_key ? 1 : 0) | (e->private_obj ? 2 : 0) |
	                          (e->has_id ? 4 : 0)));
	proto_put_bytes(o, e->id, e->has_id ? HSM_ID_LEN : 0);
	proto_put_str(o, e->label);
}

void proto_request(struct proto_out *o, enum proto_op op)
{
	proto_out_reset(o);
	proto_put_u8(o, PROTO_VERSION);
	proto_put_u8(o, (uint8_t)op);
}

void proto_answer(struct proto_out *o, enum proto_op op, int result, const char *error)
{
	proto_out_reset(o);
	proto_put_u8(o, PROTO_VERSION);
	proto_put_u8(o, (uint8_t)op);
	proto_put_u32(o, (uint32_t)result);
	proto_put_u8(o, 0); /* proto_answer_set_repairs() */
	if (result == 0 || !error)
		error = "";
	proto_put_bytes(o, error, strnlen(error, PROTO_MAX_ERROR - 1));
}

/* The repairs byte: after the frame's length (4), version, op and result. */
#define ANSWER_REPAIRS_AT (4 + 1 + 1 + 4)

void proto_answer_set_repairs(struct proto_out *o, unsigned long repairs)
{
	if (!o->oom && o->len > ANSWER_REPAIRS_AT)
		o->p[ANSWER_REPAIRS_AT] = (uint8_t)(repairs > 255 ? 255 : repairs);
}

/* ---- reading ---- */

static const uint8_t *take(struct proto_in *in, size_t n)
{
	const uint8_t *p;

	if (in->bad || n > in->len - in->off) {
		in->bad = true;
		return NULL;
	}
	p = in->p + in->off;
	in->off += n;
	return p;
}

static uint64_t get_le(struct proto_in *in, size_t n)
{
	const uint8_t *p = take(in, n);
	uint64_t v = 0;

	for (size_t i = 0; p && i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

uint8_t proto_get_u8(struct proto_in *in)
{
	return (uint8_t)get_le(in, 1);
}

uint32_t proto_get_u32(struct proto_in *in)
{
	return (uint32_t)get_le(in, 4);
}

uint64_t proto_get_u64(struct proto_in *in)
{
	return get_le(in, 8);
}

const uint8_t *proto_get_bytes(struct proto_in *in, size_t max, size_t *ret_len)
{
	uint32_t n = proto_get_u32(in);
	const uint8_t *p;

	*ret_len = 0;
	if (in->bad || n > max) {
		in->bad = true;
		return NULL;
	}
	p = take(in, n);
	if (p)
		*ret_len = n;
	return p;
}

void proto_get_str(struct proto_in *in, char *buf, size_t size)
{
	size_t n;
	const uint8_t *p = proto_get_bytes(in, size - 1, &n);

	buf[0] = '\0';
	if (!p)
		return;
	if (memchr(p, '\0', n)) {
		in->bad = true;
		return;
	}
	memcpy(buf, p, n);
	buf[n] = '\0';
}

char *proto_get_strdup(struct proto_in *in, size_t max)
{
	size_t n;
	const uint8_t *p = proto_get_bytes(in, max, &n);
	char *s;

	if (!p || memchr(p, '\0', n)) {
		in->bad = true;
		return NULL;
	}
	s = malloc(n + 1);
	if (!s) {
		in->bad = true;
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

void proto_get_key(struct proto_in *in, struct hsm_key *k)
{
	size_t n;
	const uint8_t *id = proto_get_bytes(in, HSM_ID_LEN, &n);
	uint8_t alg;

	memset(k->id, 0, HSM_ID_LEN);
	if (id && n == HSM_ID_LEN)
		memcpy(k->id, id, HSM_ID_LEN);
	else
		in->bad = true;
	alg = proto_get_u8(in);
	if (alg >= _JWS_ALG_MAX)
		in->bad = true;
	k->alg = in->bad ? 0 : (enum jws_alg)alg;
	atomic_store(&k->priv, (unsigned long)proto_get_u64(in));
	k->pub = (unsigned long)proto_get_u64(in);
}

/* The curve names jwk.c uses, as its static strings. */
static const char *const curves[] = {"P-256", "P-384", "Ed25519"};

static void get_into(struct proto_in *in, uint8_t *buf, size_t max, size_t *ret_len)
{
	const uint8_t *p = proto_get_bytes(in, max, ret_len);

	if (p && *ret_len)
		memcpy(buf, p, *ret_len);
}

void proto_get_jwk(struct proto_in *in, struct jwk *j)
{
	char crv[16];
	uint8_t kty = proto_get_u8(in);
	size_t ylen = 0;

	memset(j, 0, sizeof(*j));
	proto_get_str(in, crv, sizeof(crv));
	get_into(in, j->x, sizeof(j->x), &j->coord_len);
	get_into(in, j->y, sizeof(j->y), &ylen);
	get_into(in, j->n, sizeof(j->n), &j->n_len);
	get_into(in, j->e, sizeof(j->e), &j->e_len);
	if (in->bad)
		return;
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (strcmp(crv, curves[i]) == 0)
			j->crv = curves[i];
	switch (kty) {
	case JWK_KTY_EC:
		in->bad =
		    !j->crv || j->coord_len == 0 || ylen != j->coord_len || j->n_len || j->e_len;
		break;
	case JWK_KTY_OKP:
		in->bad = !j->crv || j->coord_len == 0 || ylen || j->n_len || j->e_len;
		break;
	case JWK_KTY_RSA:
		in->bad = crv[0] || j->coord_len || ylen || j->n_len == 0 || j->e_len == 0;
		break;
	default:
		in->bad = true;
	}
	j->kty = (enum jwk_kty)kty;
}

void proto_get_record(struct proto_in *in, struct hsm_record *r)
{
	uint8_t flags;

	memset(r, 0, sizeof(*r));
	r->handle = (unsigned long)proto_get_u64(in);
	r->label = proto_get_strdup(in, PROTO_MAX_LABEL);
	r->value = proto_get_strdup(in, PROTO_MAX_RECORD);
	r->len = r->value ? strlen(r->value) : 0;
	flags = proto_get_u8(in);
	if (flags & ~3u)
		in->bad = true;
	r->private_obj = flags & 1;
	r->odd = flags & 2;
}

void proto_get_object(struct proto_in *in, struct hsm_key_object *e)
{
	size_t n;
	const uint8_t *id;
	uint8_t flags;

	memset(e, 0, sizeof(*e));
	e->handle = (unsigned long)proto_get_u64(in);
	flags = proto_get_u8(in);
	if (flags & ~7u)
		in->bad = true;
	e->private_key = flags & 1;
	e->private_obj = flags & 2;
	e->has_id = flags & 4;
	id = proto_get_bytes(in, HSM_ID_LEN, &n);
	if (e->has_id && id && n == HSM_ID_LEN)
		memcpy(e->id, id, HSM_ID_LEN);
	else if (e->has_id || n != 0)
		in->bad = true;
	proto_get_str(in, e->label, sizeof(e->label));
}

bool proto_done(const struct proto_in *in)
{
	return !in->bad && in->off == in->len;
}

int proto_open_request(struct proto_in *in, const uint8_t *body, size_t len, enum proto_op *op)
{
	uint8_t v, o;

	*in = (struct proto_in){.p = body, .len = len};
	v = proto_get_u8(in);
	o = proto_get_u8(in);
	if (in->bad || v != PROTO_VERSION || o == 0 || o == PROTO_READY || o >= _PROTO_OP_MAX)
		return -EPROTO;
	*op = (enum proto_op)o;
	return 0;
}

int proto_open_answer(struct proto_in *in, const uint8_t *body, size_t len, enum proto_op op,
                      int *result, unsigned *repairs, char *error, size_t size)
{
	uint8_t v, o, rep;
	int32_t res;

	*in = (struct proto_in){.p = body, .len = len};
	v = proto_get_u8(in);
	o = proto_get_u8(in);
	res = (int32_t)proto_get_u32(in);
	rep = proto_get_u8(in);
	proto_get_str(in, error, size < PROTO_MAX_ERROR ? size : PROTO_MAX_ERROR);
	/* A result is 0 or a negative errno; the error text comes with failures only. */
	if (in->bad || v != PROTO_VERSION || o != op || res > 0 || res < -4095 ||
	    (res == 0) != (error[0] == '\0'))
		return -EPROTO;
	*result = res;
	*repairs = rep;
	return 0;
}

/* ---- frames ---- */

int proto_send(int fd, struct proto_out *o)
{
	size_t body, off = 0;

	if (o->oom || o->len < 4)
		return -ENOMEM;
	body = o->len - 4;
	for (size_t i = 0; i < 4; i++)
		o->p[i] = (uint8_t)(body >> (8 * i));
	while (off < o->len) {
		ssize_t n = send(fd, o->p + off, o->len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == ENOTSOCK)
			n = write(fd, o->p + off, o->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == ECONNRESET ? -EPIPE : -errno;
		off += (size_t)n;
	}
	return 0;
}

int proto_set_timeout(int fd, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};

	return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ? -errno : 0;
}

/* One recv into p (at most n bytes); 0 at end of stream is -EPIPE. */
static ssize_t recv_some(int fd, uint8_t *p, size_t n)
{
	for (;;) {
		ssize_t got = recv(fd, p, n, 0);
		if (got > 0)
			return got;
		if (got == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -ETIMEDOUT;
		return errno == ECONNRESET ? -EPIPE : -errno;
	}
}

int proto_recv(int fd, size_t max, uint8_t **buf, size_t *buf_cap, const uint8_t **ret_body,
               size_t *ret_len)
{
	size_t have = 0, len = 0, want = 4;

	/* Usually one recv: the peer sends a frame in one write, and nothing after it until
	 * answered. */
	if (*buf_cap < PROTO_RECV_START) {
		uint8_t *p = realloc(*buf, PROTO_RECV_START);
		if (!p)
			return -ENOMEM;
		*buf = p;
		*buf_cap = PROTO_RECV_START;
	}
	while (have < want) {
		ssize_t got = recv_some(fd, *buf + have, *buf_cap - have);
		if (got < 0)
			return (int)got;
		have += (size_t)got;
		if (want == 4 && have >= 4) {
			const uint8_t *h = *buf;
			len = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 |
			      (size_t)h[3] << 24;
			if (len > max || len < 2)
				return -EMSGSIZE;
			want = 4 + len;
			if (want > *buf_cap) {
				uint8_t *p = realloc(*buf, want);
				if (!p)
					return -ENOMEM;
				*buf = p;
				*buf_cap = want;
			}
		}
	}
	/* One frame at a time: bytes beyond it are a second frame sent unasked. */
	if (have > want)
		return -EPROTO;
	*ret_body = *buf + 4;
	*ret_len = len;
	return 0;
}

/* Key records: read strictly, because a record we misread could resurrect or destroy a key. */
#include "record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "conf_values.h"
#include "duration.h"

/* An integer member of the record: where it lives in struct record and what it may hold. */
struct int_member {
	const char *name;
	size_t offset;
	int64_t min, max;
	bool optional; /* absent in JSON, 0 in the struct */
	const char *bad_type, *bad_range;
};

#define INT_MEMBER(f, lo, hi, opt)                                                                 \
	{                                                                                          \
		.name = #f, .offset = offsetof(struct record, f), .min = lo, .max = hi,            \
		.optional = opt, .bad_type = #f " missing or not an integer",                      \
		.bad_range = #f " out of range",                                                   \
	}

/* In the order record_format() writes them, after the strings. */
static const struct int_member int_members[] = {
    INT_MEMBER(seq, 0, RECORD_SEQ_MAX, false),
    INT_MEMBER(created_at, RECORD_TIME_MIN, RECORD_TIME_MAX, false),
    INT_MEMBER(activates_at, RECORD_TIME_MIN, RECORD_TIME_MAX, false),
    INT_MEMBER(retires_at, RECORD_TIME_MIN, RECORD_TIME_MAX, false),
    /* The configuration's own limit, so that every configured max-token-ttl can be recorded. */
    INT_MEMBER(max_token_ttl, 0, (int64_t)DURATION_MAX_SECONDS, false),
    INT_MEMBER(withdrawn_at, RECORD_TIME_MIN, RECORD_TIME_MAX, true),
};

#define N_INT_MEMBERS (sizeof(int_members) / sizeof(int_members[0]))

/* The members that are not in int_members. */
static const char *const other_members[] = {"v", "issuer", "iss", "kid", "alg", "id"};

static int refuse(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return -EINVAL;
}

static int64_t *int_field(struct record *r, const struct int_member *m)
{
	return (int64_t *)((char *)r + m->offset);
}

static int64_t int_value(const struct record *r, const struct int_member *m)
{
	return *(const int64_t *)((const char *)r + m->offset);
}

static bool b64url_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

static bool kid_valid(const char *s)
{
	if (strlen(s) != JWK_KID_LEN)
		return false;
	for (size_t i = 0; i < JWK_KID_LEN; i++)
		if (!b64url_char(s[i]))
			return false;
	return true;
}

static bool iss_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	return n >= 1 && n <= RECORD_ISS_MAX && conf_text_printable(s);
}

/* A fixed array of a caller-made struct may lack its NUL: never read past it. */
static bool terminated(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * n] = '\0';
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Exactly 2n lowercase hex digits: one spelling per id, so equal ids are equal strings. */
static int hex_decode(const char *s, uint8_t *out, size_t n)
{
	uint8_t buf[RECORD_ID_LEN];

	if (n > sizeof(buf) || strlen(s) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		buf[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(out, buf, n);
	return 0;
}

void record_clear(struct record *r)
{
	if (!r)
		return;
	free(r->iss);
	memset(r, 0, sizeof(*r));
}

static int check_ints(const struct record *r, const char **why)
{
	for (size_t i = 0; i < N_INT_MEMBERS; i++) {
		const struct int_member *m = &int_members[i];
		int64_t v = int_value(r, m);

		if (m->optional && v == 0)
			continue;
		if (v < m->min || v > m->max)
			return refuse(why, m->bad_range);
	}
	if (r->retires_at < r->activates_at)
		return refuse(why, "retires_at before activates_at");
	return 0;
}

int record_check(const struct record *r, const char **why)
{
	if (!terminated(r->issuer, sizeof(r->issuer)) || !conf_issuer_name_valid(r->issuer))
		return refuse(why, "issuer invalid");
	if (!iss_valid(r->iss))
		return refuse(why, "iss invalid");
	if (!terminated(r->kid, sizeof(r->kid)) || !kid_valid(r->kid))
		return refuse(why, "kid invalid");
	if (!jws_alg_name(r->alg))
		return refuse(why, "alg unknown");
	return check_ints(r, why);
}

static bool member_known(const char *name)
{
	for (size_t i = 0; i < sizeof(other_members) / sizeof(other_members[0]); i++)
		if (strcmp(name, other_members[i]) == 0)
			return true;
	for (size_t i = 0; i < N_INT_MEMBERS; i++)
		if (strcmp(name, int_members[i].name) == 0)
			return true;
	return false;
}

static int check_members(json_t *doc, const char **why)
{
	const char *name;
	json_t *value;

	json_object_foreach (doc, name, value) {
		if (!member_known(name))
			return refuse(why, "unknown member");
	}
	return 0;
}

static int check_version(json_t *doc, const char **why)
{
	json_t *v = json_object_get(doc, "v");

	if (!json_is_integer(v))
		return refuse(why, "v missing or not an integer");
	if (json_integer_value(v) != RECORD_VERSION)
		return refuse(why, "v unsupported");
	return 0;
}

/* Copies a string member that must fit in size bytes; longer ones are refused, not cut. */
static int get_fixed(json_t *doc, const char *name, char *dst, size_t size, const char *bad_type,
                     const char *bad_value, const char **why)
{
	json_t *s = json_object_get(doc, name);

	if (!json_is_string(s))
		return refuse(why, bad_type);
	if (json_string_length(s) >= size)
		return refuse(why, bad_value);
	memcpy(dst, json_string_value(s), json_string_length(s) + 1);
	return 0;
}

/* The string members; iss is left pointing into doc (borrowed) until the record stands. */
static int get_strings(json_t *doc, struct record *r, const char **why)
{
	json_t *iss = json_object_get(doc, "iss"), *alg = json_object_get(doc, "alg");
	json_t *id = json_object_get(doc, "id");

	if (get_fixed(doc, "issuer", r->issuer, sizeof(r->issuer), "issuer missing or not a string",
	              "issuer invalid", why) < 0)
		return -EINVAL;
	if (!json_is_string(iss))
		return refuse(why, "iss missing or not a string");
	r->iss = (char *)json_string_value(iss);
	if (get_fixed(doc, "kid", r->kid, sizeof(r->kid), "kid missing or not a string",
	              "kid invalid", why) < 0)
		return -EINVAL;
	if (!json_is_string(alg))
		return refuse(why, "alg missing or not a string");
	if (jws_alg_from_name(json_string_value(alg), &r->alg) < 0)
		return refuse(why, "alg unknown");
	if (!json_is_string(id))
		return refuse(why, "id missing or not a string");
	if (hex_decode(json_string_value(id), r->id, RECORD_ID_LEN) < 0)
		return refuse(why, "id invalid");
	return 0;
}

static int get_ints(json_t *doc, struct record *r, const char **why)
{
	for (size_t i = 0; i < N_INT_MEMBERS; i++) {
		const struct int_member *m = &int_members[i];
		json_t *v = json_object_get(doc, m->name);

		if (!v && m->optional)
			continue;
		if (!json_is_integer(v))
			return refuse(why, m->bad_type);
		/* 0 stands for "absent" in the struct: a present 0 is out of range, not absent. */
		if (m->optional && json_integer_value(v) == 0)
			return refuse(why, m->bad_range);
		*int_field(r, m) = json_integer_value(v);
	}
	return 0;
}

static int parse_doc(json_t *doc, struct record *r, const char **why)
{
	if (!json_is_object(doc))
		return refuse(why, "not a JSON object");
	if (check_members(doc, why) < 0 || check_version(doc, why) < 0 ||
	    get_strings(doc, r, why) < 0 || get_ints(doc, r, why) < 0)
		return -EINVAL;
	return record_check(r, why);
}

int record_parse(const char *value, size_t len, struct record *ret, const char **why)
{
	struct record r = {0};
	json_error_t err;
	json_t *doc;
	int res;

	doc = json_loadb(value, len, JSON_REJECT_DUPLICATES, &err);
	if (!doc)
		return refuse(why, json_error_code(&err) == json_error_duplicate_key
		                       ? "duplicate member"
		                       : "not valid JSON");
	res = parse_doc(doc, &r, why);
	if (res == 0) {
		r.iss = strdup(r.iss);
		if (!r.iss) {
			res = -ENOMEM;
			if (why)
				*why = "out of memory";
		}
	}
	json_decref(doc);
	if (res == 0)
		*ret = r;
	return res;
}

static json_t *record_pack(const struct record *r)
{
	char hex[2 * RECORD_ID_LEN + 1];
	json_t *obj;

	hex_encode(r->id, RECORD_ID_LEN, hex);
	obj = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "v",
	                RECORD_VERSION, "issuer", r->issuer, "iss", r->iss, "kid", r->kid, "alg",
	                jws_alg_name(r->alg), "id", hex, "seq", (json_int_t)r->seq, "created_at",
	                (json_int_t)r->created_at, "activates_at", (json_int_t)r->activates_at,
	                "retires_at", (json_int_t)r->retires_at, "max_token_ttl",
	                (json_int_t)r->max_token_ttl);
	if (obj && r->withdrawn_at != 0 &&
	    json_object_set_new(obj, "withdrawn_at", json_integer(r->withdrawn_at)) < 0) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

char *record_format(const struct record *r)
{
	json_t *obj;
	char *s;

	/* Never write what the next refresh would quarantine. */
	if (record_check(r, NULL) < 0) {
		errno = EINVAL;
		return NULL;
	}
	obj = record_pack(r);
	s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!s)
		errno = ENOMEM;
	return s;
}

int record_label(const char *issuer, const char *kid, char *buf, size_t size)
{
	size_t n;

	if (!conf_issuer_name_valid(issuer) || !kid_valid(kid))
		return -EINVAL;
	n = strlen(RECORD_LABEL_PREFIX) + strlen(issuer) + 1 + JWK_KID_LEN;
	if (n >= size)
		return -ENOBUFS;
	snprintf(buf, size, RECORD_LABEL_PREFIX "%s:%s", issuer, kid);
	return 0;
}

bool record_label_matches(const char *label, const struct record *r)
{
	char want[RECORD_LABEL_SIZE];

	if (!label || !terminated(r->issuer, sizeof(r->issuer)) ||
	    !terminated(r->kid, sizeof(r->kid)))
		return false;
	return record_label(r->issuer, r->kid, want, sizeof(want)) == 0 && strcmp(label, want) == 0;
}

int record_label_split(const char *label, char issuer[RECORD_ISSUER_MAX + 1],
                       char kid[JWK_KID_LEN + 1])
{
	const size_t prefix = strlen(RECORD_LABEL_PREFIX);
	char name[RECORD_ISSUER_MAX + 1];
	const char *colon;
	size_t n;

	if (!label || strncmp(label, RECORD_LABEL_PREFIX, prefix) != 0)
		return -EINVAL;
	colon = strchr(label + prefix, ':');
	if (!colon || (n = (size_t)(colon - (label + prefix))) > RECORD_ISSUER_MAX)
		return -EINVAL;
	memcpy(name, label + prefix, n);
	name[n] = '\0';
	if (!conf_issuer_name_valid(name) || !kid_valid(colon + 1))
		return -EINVAL;
	memcpy(issuer, name, n + 1);
	memcpy(kid, colon + 1, JWK_KID_LEN + 1);
	return 0;
}

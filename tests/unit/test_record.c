/* Unit tests of daemon/record.c: every rule a key record must keep, and its label. */
#include <errno.h>

#include "duration.h"
#include "record.h"
#include "unit.h"

#define KID  "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
#define KID2 "AzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
#define ID   "00112233445566778899aabbccddeeff"

/* A valid record, member by member, in the order record_format() writes. */
static const char *const base[][2] = {
    {"v", "2"},
    {"issuer", "\"main\""},
    {"iss", "\"https://login.example.com/main\""},
    {"kid", "\"" KID "\""},
    {"alg", "\"ES256\""},
    {"id", "\"" ID "\""},
    {"seq", "3"},
    {"created_at", "1790000000"},
    {"activates_at", "1790086400"},
    {"retires_at", "1792678400"},
    {"max_token_ttl", "3600"},
};
#define N_BASE (sizeof(base) / sizeof(base[0]))

static const char BASE_TEXT[] =
    "{\"v\":2,\"issuer\":\"main\",\"iss\":\"https://login.example.com/main\",\"kid\":\"" KID
    "\",\"alg\":\"ES256\",\"id\":\"" ID "\",\"seq\":3,\"created_at\":1790000000,"
    "\"activates_at\":1790086400,\"retires_at\":1792678400,\"max_token_ttl\":3600}";

/* The valid record with up to two members replaced (raw JSON text), dropped (raw NULL) or, for
 * names it does not have, appended. Returns a static buffer. */
static const char *doc2(const char *n1, const char *raw1, const char *n2, const char *raw2)
{
	static char buf[8192];
	size_t len = 0;
	bool put1 = false, put2 = false;

#define PUT(name, raw)                                                                             \
	len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s\"%s\":%s", len > 1 ? "," : "",   \
	                        name, raw)
	buf[len++] = '{';
	buf[len] = '\0';
	for (size_t i = 0; i < N_BASE; i++) {
		const char *raw = base[i][1];
		if (n1 && strcmp(base[i][0], n1) == 0) {
			raw = raw1;
			put1 = true;
		} else if (n2 && strcmp(base[i][0], n2) == 0) {
			raw = raw2;
			put2 = true;
		}
		if (raw)
			PUT(base[i][0], raw);
	}
	if (n1 && !put1 && raw1)
		PUT(n1, raw1);
	if (n2 && !put2 && raw2)
		PUT(n2, raw2);
#undef PUT
	snprintf(buf + len, sizeof(buf) - len, "}");
	return buf;
}

static const char *doc(const char *name, const char *raw)
{
	return doc2(name, raw, NULL, NULL);
}

/* Parses text; on success checks that formatting gives a record that parses back the same. */
static int parse(const char *text, const char **why)
{
	struct record r, again;
	char *out;
	int res;

	*why = NULL;
	res = record_parse(text, strlen(text), &r, why);
	if (res < 0)
		return res;
	out = record_format(&r);
	CHECK(out != NULL);
	if (out && record_parse(out, strlen(out), &again, why) == 0) {
		CHECK_STR(again.iss, r.iss);
		CHECK_STR(again.issuer, r.issuer);
		CHECK_STR(again.kid, r.kid);
		CHECK_INT(again.alg, r.alg);
		CHECK_MEM(again.id, r.id, RECORD_ID_LEN);
		CHECK_INT(again.seq, r.seq);
		CHECK_INT(again.created_at, r.created_at);
		CHECK_INT(again.activates_at, r.activates_at);
		CHECK_INT(again.retires_at, r.retires_at);
		CHECK_INT(again.max_token_ttl, r.max_token_ttl);
		CHECK_INT(again.withdrawn_at, r.withdrawn_at);
		record_clear(&again);
	} else
		CHECK(!"formatted record parses back");
	free(out);
	record_clear(&r);
	return 0;
}

/* Expects a refusal with exactly this reason. */
#define REFUSED(text, reason)                                                                      \
	do {                                                                                       \
		const char *why_;                                                                  \
		CHECK_INT(parse((text), &why_), -EINVAL);                                          \
		CHECK_STR(why_, (reason));                                                         \
	} while (0)

#define ACCEPTED(text)                                                                             \
	do {                                                                                       \
		const char *why_;                                                                  \
		CHECK_INT(parse((text), &why_), 0);                                                \
		CHECK_STR(why_, NULL);                                                             \
	} while (0)

static void test_valid(void)
{
	static const uint8_t id[RECORD_ID_LEN] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
	                                          0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
	const char *why = NULL;
	struct record r;

	CHECK_STR(doc(NULL, NULL), BASE_TEXT);
	CHECK_INT(record_parse(BASE_TEXT, strlen(BASE_TEXT), &r, &why), 0);
	CHECK_STR(r.issuer, "main");
	CHECK_STR(r.iss, "https://login.example.com/main");
	CHECK_STR(r.kid, KID);
	CHECK_INT(r.alg, JWS_ES256);
	CHECK_MEM(r.id, id, RECORD_ID_LEN);
	CHECK_INT(r.seq, 3);
	CHECK_INT(r.created_at, 1790000000);
	CHECK_INT(r.activates_at, 1790086400);
	CHECK_INT(r.retires_at, 1792678400);
	CHECK_INT(r.max_token_ttl, 3600);
	CHECK_INT(r.withdrawn_at, 0);
	record_clear(&r);
	CHECK(r.iss == NULL);
	record_clear(&r); /* twice, and NULL: harmless */
	record_clear(NULL);
	/* Blanks and member order are not part of the format. */
	ACCEPTED(
	    "{ \"max_token_ttl\" : 3600, \"retires_at\":1792678400,\"activates_at\":1790086400,"
	    "\"created_at\":1790000000,\"seq\":3,\"id\":\"" ID "\",\"alg\":\"ES256\",\"kid\":\"" KID
	    "\",\"iss\":\"https://login.example.com/main\",\"issuer\":\"main\",\"v\":2 }\n");
}

/* record_format() writes the canonical text: the members in their order, compact. */
static void test_format_exact(void)
{
	struct record r;
	const char *why;
	char *s, *want;

	CHECK_INT(record_parse(BASE_TEXT, strlen(BASE_TEXT), &r, &why), 0);
	s = record_format(&r);
	CHECK_STR(s, BASE_TEXT);
	free(s);
	r.withdrawn_at = 1790090000;
	s = record_format(&r);
	want = strdup(doc("withdrawn_at", "1790090000"));
	CHECK_STR(s, want);
	free(want);
	free(s);
	record_clear(&r);
}

/* A value need not end in NUL: nothing past len is read (ASan checks), nothing in it is skipped. */
static void test_length(void)
{
	size_t n = strlen(BASE_TEXT);
	char *exact = malloc(n), *longer = malloc(n + 5);
	const char *why;
	struct record r;

	memcpy(exact, BASE_TEXT, n);
	CHECK_INT(record_parse(exact, n, &r, &why), 0);
	record_clear(&r);
	memcpy(longer, BASE_TEXT, n);
	memcpy(longer + n, "\0junk", 5);
	CHECK_INT(record_parse(longer, n + 5, &r, &why), -EINVAL);
	CHECK_STR(why, "not valid JSON");
	CHECK_INT(record_parse(longer, n - 1, &r, &why), -EINVAL);
	CHECK_STR(why, "not valid JSON");
	free(exact);
	free(longer);
}

static void test_not_a_record(void)
{
	REFUSED("", "not valid JSON");
	REFUSED("{", "not valid JSON");
	REFUSED("null", "not valid JSON"); /* top level must be an object or array */
	REFUSED("[]", "not a JSON object");
	REFUSED("{}", "v missing or not an integer");
	REFUSED("{\"v\":2}", "issuer missing or not a string");
	REFUSED("{\"v\":2} {}", "not valid JSON");
	REFUSED("{\"v\":2,\"iss\":\"\xff\"}", "not valid JSON"); /* not UTF-8 */
	REFUSED(doc("iss", "\"a\\u0000b\""), "not valid JSON");
}

static void test_version(void)
{
	REFUSED(doc("v", NULL), "v missing or not an integer");
	REFUSED(doc("v", "\"2\""), "v missing or not an integer");
	REFUSED(doc("v", "2.0"), "v missing or not an integer");
	REFUSED(doc("v", "1"), "v unsupported");
	REFUSED(doc("v", "3"), "v unsupported");
	REFUSED(doc("v", "-9223372036854775808"), "v unsupported");
}

static void test_duplicates_and_unknown(void)
{
	REFUSED(doc("v", "2,\"v\":2"), "duplicate member");
	REFUSED(doc("kid", "\"" KID "\",\"kid\":\"" KID2 "\""), "duplicate member");
	REFUSED(doc("retires_at", "1792678400,\"retires_at\":1792678400"), "duplicate member");
	REFUSED(doc("withdrawn_at", "1790090000,\"withdrawn_at\":1790090001"), "duplicate member");
	REFUSED(doc("extra", "1"), "unknown member");
	REFUSED(doc("Kid", "\"" KID "\""), "unknown member");
	REFUSED(doc("withdrawn", "1790090000"), "unknown member");
	REFUSED(doc("", "null"), "unknown member");
	REFUSED(doc("pin", "\"1234\""), "unknown member");
}

/* Each member missing, and each of the wrong type. */
static void test_types(void)
{
	static const char *const strings[] = {"issuer", "iss", "kid", "alg", "id"};
	static const char *const ints[] = {"seq", "created_at", "activates_at", "retires_at",
	                                   "max_token_ttl"};
	char want[64];

	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
		snprintf(want, sizeof(want), "%s missing or not a string", strings[i]);
		REFUSED(doc(strings[i], NULL), want);
		REFUSED(doc(strings[i], "null"), want);
		REFUSED(doc(strings[i], "7"), want);
		REFUSED(doc(strings[i], "[\"main\"]"), want);
	}
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		snprintf(want, sizeof(want), "%s missing or not an integer", ints[i]);
		REFUSED(doc(ints[i], NULL), want);
		REFUSED(doc(ints[i], "null"), want);
		REFUSED(doc(ints[i], "\"1790000000\""), want);
		REFUSED(doc(ints[i], "1790000000.0"), want);
		REFUSED(doc(ints[i], "1e9"), want);
		REFUSED(doc(ints[i], "true"), want);
		REFUSED(doc(ints[i], "{}"), want);
	}
	REFUSED(doc("withdrawn_at", "null"), "withdrawn_at missing or not an integer");
	REFUSED(doc("withdrawn_at", "\"1790090000\""), "withdrawn_at missing or not an integer");
	REFUSED(doc("withdrawn_at", "1790090000.5"), "withdrawn_at missing or not an integer");
}

static void test_issuer(void)
{
	ACCEPTED(doc("issuer", "\"a\""));
	ACCEPTED(doc("issuer", "\"a-0\""));
	ACCEPTED(doc("issuer", "\"abcdefghijklmnopqrstuvwxyz012345\"")); /* 32 */
	REFUSED(doc("issuer", "\"abcdefghijklmnopqrstuvwxyz0123456\""), "issuer invalid");
	REFUSED(doc("issuer", "\"\""), "issuer invalid");
	REFUSED(doc("issuer", "\"Main\""), "issuer invalid");
	REFUSED(doc("issuer", "\"ma_in\""), "issuer invalid");
	REFUSED(doc("issuer", "\"ma:in\""), "issuer invalid");
	REFUSED(doc("issuer", "\"main \""), "issuer invalid");
	REFUSED(doc("issuer", "\"m\\u00e4in\""), "issuer invalid");
}

static void test_kid(void)
{
	ACCEPTED(doc("kid", "\"___________________________________________\""));
	ACCEPTED(doc("kid", "\"-------------------------------------------\""));
	REFUSED(doc("kid", "\"" KID "A\""), "kid invalid"); /* 44 */
	REFUSED(doc("kid", "\"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X\""),
	        "kid invalid"); /* 42 */
	REFUSED(doc("kid", "\"\""), "kid invalid");
	REFUSED(doc("kid", "\"NzbLsXh8uDCcd+6MNwXF4W_7noWXFZAfHkxZsRGC9Xs\""), "kid invalid");
	REFUSED(doc("kid", "\"NzbLsXh8uDCcd-6MNwXF4W/7noWXFZAfHkxZsRGC9Xs\""), "kid invalid");
	REFUSED(doc("kid", "\"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X=\""), "kid invalid");
	REFUSED(doc("kid", "\"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X:\""), "kid invalid");
	REFUSED(doc("kid", "\"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X \""), "kid invalid");
}

static void test_id(void)
{
	ACCEPTED(doc("id", "\"ffffffffffffffffffffffffffffffff\""));
	ACCEPTED(doc("id", "\"00000000000000000000000000000000\""));
	REFUSED(doc("id", "\"00112233445566778899AABBCCDDEEFF\""), "id invalid");
	REFUSED(doc("id", "\"00112233445566778899aabbccddeeF\""), "id invalid");
	REFUSED(doc("id", "\"00112233445566778899aabbccddee\""), "id invalid");    /* 30 */
	REFUSED(doc("id", "\"00112233445566778899aabbccddeef\""), "id invalid");   /* 31 */
	REFUSED(doc("id", "\"00112233445566778899aabbccddeeff0\""), "id invalid"); /* 33 */
	REFUSED(doc("id", "\"00112233445566778899aabbccddeeff00\""), "id invalid");
	REFUSED(doc("id", "\"0x112233445566778899aabbccddeeff\""), "id invalid");
	REFUSED(doc("id", "\" 0112233445566778899aabbccddeeff\""), "id invalid");
	REFUSED(doc("id", "\"+0112233445566778899aabbccddeeff\""), "id invalid");
	REFUSED(doc("id", "\"0g112233445566778899aabbccddeeff\""), "id invalid");
	REFUSED(doc("id", "\"\""), "id invalid");
}

static void test_alg(void)
{
	static const char *const known[] = {"\"ES256\"", "\"ES384\"", "\"RS256\"", "\"PS256\"",
	                                    "\"EdDSA\""};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		ACCEPTED(doc("alg", known[i]));
	REFUSED(doc("alg", "\"es256\""), "alg unknown");
	REFUSED(doc("alg", "\"none\""), "alg unknown");
	REFUSED(doc("alg", "\"HS256\""), "alg unknown");
	REFUSED(doc("alg", "\"\""), "alg unknown");
	REFUSED(doc("alg", "\"ES256 \""), "alg unknown");
}

static void test_iss(void)
{
	char iss[1100], raw[1200];

	ACCEPTED(doc("iss", "\"x\""));
	ACCEPTED(doc("iss", "\"https://login.example.com/t\\u00e4st\""));
	ACCEPTED(doc("iss", "\"https:\\/\\/login.example.com\""));
	REFUSED(doc("iss", "\"\""), "iss invalid");
	REFUSED(doc("iss", "\"a\\u0001b\""), "iss invalid");
	REFUSED(doc("iss", "\"a\\tb\""), "iss invalid");
	REFUSED(doc("iss", "\"a\\nb\""), "iss invalid");
	REFUSED(doc("iss", "\"a\\u001fb\""), "iss invalid");
	REFUSED(doc("iss", "\"a\\u007fb\""), "iss invalid");
	memset(iss, 'a', sizeof(iss));
	iss[RECORD_ISS_MAX] = '\0';
	snprintf(raw, sizeof(raw), "\"%s\"", iss);
	ACCEPTED(doc("iss", raw));
	iss[RECORD_ISS_MAX] = 'a';
	iss[RECORD_ISS_MAX + 1] = '\0';
	snprintf(raw, sizeof(raw), "\"%s\"", iss);
	REFUSED(doc("iss", raw), "iss invalid");
	/* The limit is on bytes: 512 two-byte characters fit, one more byte does not. */
	raw[0] = '"';
	for (size_t i = 0; i < 512; i++)
		memcpy(raw + 1 + 2 * i, "\xc3\xa4", 2);
	memcpy(raw + 1 + 1024, "\"", 2);
	ACCEPTED(doc("iss", raw));
	memcpy(raw + 1 + 1024, "a\"", 3);
	REFUSED(doc("iss", raw), "iss invalid");
}

/* The edges of every timestamp's range, and values that would overflow arithmetic. */
static void test_timestamps(void)
{
	static const char *const names[] = {"created_at", "activates_at", "retires_at"};
	static const char *const bad[] = {
	    "946684799",           "253402300800",        "0", "-1", "-946684800",
	    "9223372036854775807", "-9223372036854775808"};
	char want[64];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(want, sizeof(want), "%s out of range", names[i]);
		for (size_t j = 0; j < sizeof(bad) / sizeof(bad[0]); j++)
			REFUSED(doc(names[i], bad[j]), want);
		REFUSED(doc(names[i], "9223372036854775808"), "not valid JSON"); /* beyond int64 */
	}
	ACCEPTED(doc("created_at", "946684800"));
	ACCEPTED(doc("created_at", "253402300799"));
	ACCEPTED(doc("activates_at", "946684800"));
	ACCEPTED(doc2("activates_at", "253402300799", "retires_at", "253402300799"));
	ACCEPTED(doc2("activates_at", "946684800", "retires_at", "946684800"));
	ACCEPTED(doc("retires_at", "253402300799"));
	/* A value out of range is reported before the order of activation and retirement. */
	REFUSED(doc2("activates_at", "253402300800", "retires_at", "253402300799"),
	        "activates_at out of range");
	REFUSED(doc2("activates_at", "946684800", "retires_at", "946684799"),
	        "retires_at out of range");
}

static void test_activation_order(void)
{
	ACCEPTED(doc("retires_at", "1790086400")); /* equal: a key that never had a period */
	REFUSED(doc("retires_at", "1790086399"), "retires_at before activates_at");
	REFUSED(doc2("activates_at", "253402300799", "retires_at", "946684800"),
	        "retires_at before activates_at");
}

static void test_ttl_and_seq(void)
{
	char raw[32];

	ACCEPTED(doc("max_token_ttl", "0"));
	snprintf(raw, sizeof(raw), "%llu", (unsigned long long)DURATION_MAX_SECONDS);
	ACCEPTED(doc("max_token_ttl", raw));
	snprintf(raw, sizeof(raw), "%llu", (unsigned long long)DURATION_MAX_SECONDS + 1);
	REFUSED(doc("max_token_ttl", raw), "max_token_ttl out of range");
	REFUSED(doc("max_token_ttl", "-1"), "max_token_ttl out of range");
	REFUSED(doc("max_token_ttl", "9223372036854775807"), "max_token_ttl out of range");
	REFUSED(doc("max_token_ttl", "-9223372036854775808"), "max_token_ttl out of range");

	ACCEPTED(doc("seq", "0"));
	ACCEPTED(doc("seq", "9007199254740992")); /* 2^53 */
	REFUSED(doc("seq", "9007199254740993"), "seq out of range");
	REFUSED(doc("seq", "-1"), "seq out of range");
	REFUSED(doc("seq", "9223372036854775807"), "seq out of range");
	REFUSED(doc("seq", "-9223372036854775808"), "seq out of range");
}

static void test_withdrawn(void)
{
	const char *text = doc("withdrawn_at", "1790090000"), *why;
	struct record r;

	CHECK_INT(record_parse(text, strlen(text), &r, &why), 0);
	CHECK_INT(r.withdrawn_at, 1790090000);
	record_clear(&r);
	ACCEPTED(doc("withdrawn_at", "946684800"));
	ACCEPTED(doc("withdrawn_at", "253402300799"));
	/* 0 means "not withdrawn" in the struct, so it cannot also be a value in the JSON. */
	REFUSED(doc("withdrawn_at", "0"), "withdrawn_at out of range");
	REFUSED(doc("withdrawn_at", "946684799"), "withdrawn_at out of range");
	REFUSED(doc("withdrawn_at", "253402300800"), "withdrawn_at out of range");
	REFUSED(doc("withdrawn_at", "-1"), "withdrawn_at out of range");
	REFUSED(doc("withdrawn_at", "9223372036854775807"), "withdrawn_at out of range");
	REFUSED(doc("withdrawn_at", "-9223372036854775808"), "withdrawn_at out of range");
}

/* A refusal leaves *ret exactly as it was and says why; *why may be NULL. */
static void test_untouched(void)
{
	const char *text = doc("seq", "-1"), *why = NULL;
	struct record r, before;

	memset(&r, 0xa5, sizeof(r));
	before = r;
	CHECK_INT(record_parse(text, strlen(text), &r, &why), -EINVAL);
	CHECK_MEM(&r, &before, sizeof(r));
	CHECK_STR(why, "seq out of range");
	CHECK_INT(record_parse(text, strlen(text), &r, NULL), -EINVAL);
	CHECK_INT(record_parse("{", 1, &r, NULL), -EINVAL);
	CHECK_MEM(&r, &before, sizeof(r));
}

static struct record valid_record(void)
{
	struct record r = {.issuer = "main",
	                   .iss = (char *)"https://login.example.com/main",
	                   .kid = KID,
	                   .alg = JWS_EDDSA,
	                   .seq = 0,
	                   .created_at = 1790000000,
	                   .activates_at = 1790086400,
	                   .retires_at = 1792678400,
	                   .max_token_ttl = 3600};
	return r;
}

/* The daemon never writes a record that the next refresh would quarantine. */
static void test_format_refuses(void)
{
	struct record r = valid_record();
	const char *why;
	char *s;

	CHECK_INT(record_check(&r, &why), 0);
	s = record_format(&r);
	CHECK(s != NULL);
	free(s);
#define FORMAT_REFUSED(field, value, reason)                                                       \
	do {                                                                                       \
		struct record bad_ = valid_record();                                               \
		bad_.field = value;                                                                \
		errno = 0;                                                                         \
		CHECK(record_format(&bad_) == NULL);                                               \
		CHECK_INT(errno, EINVAL);                                                          \
		CHECK_INT(record_check(&bad_, &why), -EINVAL);                                     \
		CHECK_STR(why, reason);                                                            \
	} while (0)
	FORMAT_REFUSED(iss, NULL, "iss invalid");
	FORMAT_REFUSED(iss, (char *)"", "iss invalid");
	FORMAT_REFUSED(iss, (char *)"a\nb", "iss invalid");
	FORMAT_REFUSED(iss, (char *)"\xff", "iss invalid");
	FORMAT_REFUSED(issuer[0], 'M', "issuer invalid");
	FORMAT_REFUSED(issuer[0], '\0', "issuer invalid");
	FORMAT_REFUSED(kid[5], '+', "kid invalid");
	FORMAT_REFUSED(kid[42], '\0', "kid invalid");
	FORMAT_REFUSED(alg, _JWS_ALG_MAX, "alg unknown");
	FORMAT_REFUSED(seq, -1, "seq out of range");
	FORMAT_REFUSED(seq, RECORD_SEQ_MAX + 1, "seq out of range");
	FORMAT_REFUSED(created_at, INT64_MAX, "created_at out of range");
	FORMAT_REFUSED(activates_at, INT64_MIN, "activates_at out of range");
	FORMAT_REFUSED(retires_at, 0, "retires_at out of range");
	FORMAT_REFUSED(retires_at, 1790086399, "retires_at before activates_at");
	FORMAT_REFUSED(max_token_ttl, -1, "max_token_ttl out of range");
	FORMAT_REFUSED(withdrawn_at, 1, "withdrawn_at out of range");
	FORMAT_REFUSED(withdrawn_at, INT64_MAX, "withdrawn_at out of range");
#undef FORMAT_REFUSED
	/* Fixed arrays without their NUL are refused, not read past. */
	memset(r.issuer, 'a', sizeof(r.issuer));
	CHECK(record_format(&r) == NULL);
	CHECK(!record_label_matches("tokensign:main:" KID, &r));
	r = valid_record();
	memset(r.kid, 'a', sizeof(r.kid));
	CHECK(record_format(&r) == NULL);
	CHECK(!record_label_matches("tokensign:main:" KID, &r));
}

static void test_label(void)
{
	char buf[RECORD_LABEL_SIZE], small[sizeof("tokensign:main:" KID)];
	struct record r = valid_record();

	CHECK_INT(RECORD_LABEL_SIZE, sizeof("tokensign:abcdefghijklmnopqrstuvwxyz012345:" KID));
	CHECK_INT(record_label("main", KID, buf, sizeof(buf)), 0);
	CHECK_STR(buf, "tokensign:main:" KID);
	CHECK_INT(record_label("main", KID, small, sizeof(small)), 0);
	CHECK_STR(small, "tokensign:main:" KID);
	memset(small, 'x', sizeof(small));
	CHECK_INT(record_label("main", KID, small, sizeof(small) - 1), -ENOBUFS);
	CHECK(small[0] == 'x'); /* untouched */
	CHECK_INT(record_label("main", KID, small, 0), -ENOBUFS);
	CHECK_INT(record_label("abcdefghijklmnopqrstuvwxyz012345", KID, buf, sizeof(buf)), 0);
	CHECK_INT(record_label("Main", KID, buf, sizeof(buf)), -EINVAL);
	CHECK_INT(record_label("", KID, buf, sizeof(buf)), -EINVAL);
	CHECK_INT(record_label("ma:in", KID, buf, sizeof(buf)), -EINVAL);
	CHECK_INT(record_label("main", "short", buf, sizeof(buf)), -EINVAL);
	CHECK_INT(record_label("main", KID ":", buf, sizeof(buf)), -EINVAL);

	CHECK(record_label_matches("tokensign:main:" KID, &r));
	CHECK(!record_label_matches("tokensign:main:" KID2, &r));
	CHECK(!record_label_matches("tokensign:other:" KID, &r));
	CHECK(!record_label_matches("tokensign:main:" KID " ", &r));
	CHECK(!record_label_matches("tokensign:main", &r));
	CHECK(!record_label_matches("Tokensign:main:" KID, &r));
	CHECK(!record_label_matches("", &r));
	CHECK(!record_label_matches(NULL, &r));
}

#define SPLIT_REFUSED(label)                                                                       \
	do {                                                                                       \
		char issuer_[RECORD_ISSUER_MAX + 1] = "untouched", kid_[JWK_KID_LEN + 1] = "same"; \
		CHECK_INT(record_label_split((label), issuer_, kid_), -EINVAL);                    \
		CHECK_STR(issuer_, "untouched");                                                   \
		CHECK_STR(kid_, "same");                                                           \
	} while (0)

static void test_label_split(void)
{
	char issuer[RECORD_ISSUER_MAX + 1], kid[JWK_KID_LEN + 1], buf[RECORD_LABEL_SIZE];

	CHECK_INT(record_label_split("tokensign:main:" KID, issuer, kid), 0);
	CHECK_STR(issuer, "main");
	CHECK_STR(kid, KID);
	CHECK_INT(
	    record_label_split("tokensign:abcdefghijklmnopqrstuvwxyz012345:" KID2, issuer, kid), 0);
	CHECK_STR(issuer, "abcdefghijklmnopqrstuvwxyz012345");
	CHECK_STR(kid, KID2);
	CHECK_INT(record_label(issuer, kid, buf, sizeof(buf)), 0);
	CHECK_STR(buf, "tokensign:abcdefghijklmnopqrstuvwxyz012345:" KID2);

	SPLIT_REFUSED(NULL);
	SPLIT_REFUSED("");
	SPLIT_REFUSED("tokensign:");
	SPLIT_REFUSED("tokensign:main"); /* a key pair's label, not a record's */
	SPLIT_REFUSED("tokensign:main:");
	SPLIT_REFUSED("tokensign::" KID);
	SPLIT_REFUSED("tokensign:abcdefghijklmnopqrstuvwxyz0123456:" KID);
	SPLIT_REFUSED("tokensign:Main:" KID);
	SPLIT_REFUSED("tokensign:main:" KID "A");
	SPLIT_REFUSED("tokensign:main:NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X");
	SPLIT_REFUSED("tokensign:main:" KID ":");
	SPLIT_REFUSED("tokensign:main:x:" KID);
	SPLIT_REFUSED("tokensign:main:NzbLsXh8uDCcd+6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
	SPLIT_REFUSED("tokensig:main:" KID);
	SPLIT_REFUSED("TOKENSIGN:main:" KID);
	SPLIT_REFUSED(" tokensign:main:" KID);
	SPLIT_REFUSED("other:main:" KID);
}

int main(void)
{
	test_valid();
	test_format_exact();
	test_length();
	test_not_a_record();
	test_version();
	test_duplicates_and_unknown();
	test_types();
	test_issuer();
	test_kid();
	test_id();
	test_alg();
	test_iss();
	test_timestamps();
	test_activation_order();
	test_ttl_and_seq();
	test_withdrawn();
	test_untouched();
	test_format_refuses();
	test_label();
	test_label_split();
	return unit_finish("record");
}

/* Unit tests of lib/json_out.c: for every value, the output must be byte for byte what
 * json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) writes, since it becomes the signed payload. */
#include <errno.h>
#include <stdint.h>

#include <jansson.h>

#include "json_out.h"
#include "unit.h"

static void check_same(const json_t *v, const char *what)
{
	char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY), *got = NULL;
	size_t len = 0;

	unit_checks++;
	if (json_out_compact(v, &got, &len) != 0 || !want || strcmp(got, want) != 0 ||
	    len != strlen(want)) {
		unit_fail(__FILE__, __LINE__, what);
		fprintf(stderr, "    want: %s\n    got:  %s\n", want ? want : "(null)",
		        got ? got : "(null)");
	}
	free(want);
	free(got);
}

static void test_fixed(void)
{
	json_t *v =
	    json_loads("{\"sub\":\"user-42\",\"aud\":[\"a\",\"b\"],\"n\":-9223372036854775808,"
	               "\"m\":9223372036854775807,\"t\":true,\"f\":false,\"z\":null,"
	               "\"e\":{},\"ea\":[],\"nest\":{\"a\":[{\"b\":[[]]}]},"
	               "\"u\":\"é€😀\",\"r1\":0.1,\"r2\":1e300,\"r3\":-0.0,\"r4\":3.0}",
	               0, NULL);
	CHECK(v != NULL);
	if (v)
		check_same(v, "a claims object of every type");
	json_decref(v);

	/* Every byte below 0x20, the quote, the backslash, DEL and the slash, in values and keys.
	 */
	char s[40];
	size_t n = 0;
	for (int c = 1; c < 0x20; c++)
		s[n++] = (char)c;
	s[n++] = '"';
	s[n++] = '\\';
	s[n++] = 0x7f;
	s[n++] = '/';
	s[n] = '\0';
	json_t *o = json_object();
	json_object_set_new(o, s, json_stringn(s, n));
	json_object_set_new(o, "nul", json_stringn("a\0b", 3));
	check_same(o, "control characters, quote, backslash, DEL, slash, NUL");
	json_decref(o);

	json_t *str = json_string("just a string");
	check_same(str, "a bare string");
	json_decref(str);
	json_t *i = json_integer(0);
	check_same(i, "a bare integer");
	json_decref(i);
}

/* A small deterministic generator of nested values. */
static uint64_t rng = 0x9e3779b97f4a7c15u;
static unsigned next(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

static json_t *random_string(void)
{
	static const char *const pieces[] = {
	    "a",    "Z",    "0", " ", "\"", "\\",           "/", "\n", "\t", "\x01",
	    "\x1f", "\x7f", "é", "€", "😀",  "api://orders", "\0"};
	char buf[128];
	size_t n = 0, count = next(12);

	for (size_t i = 0; i < count; i++) {
		size_t k = next(sizeof(pieces) / sizeof(pieces[0]));
		size_t len = k == 16 ? 1 : strlen(pieces[k]);
		memcpy(buf + n, pieces[k], len);
		n += len;
	}
	return json_stringn(buf, n);
}

static json_t *random_value(int depth)
{
	switch (depth > 4 ? 2 + next(5) : next(7)) {
	case 0: {
		json_t *o = json_object();
		for (unsigned i = 0, n = next(6); i < n; i++) {
			json_t *k = random_string();
			/* keys are C strings: cut at a NUL */
			json_object_set_new(o, json_string_value(k), random_value(depth + 1));
			json_decref(k);
		}
		return o;
	}
	case 1: {
		json_t *a = json_array();
		for (unsigned i = 0, n = next(6); i < n; i++)
			json_array_append_new(a, random_value(depth + 1));
		return a;
	}
	case 2:
		return random_string();
	case 3:
		return json_integer((json_int_t)rng * (next(2) ? 1 : -1));
	case 4:
		return json_real((double)(int64_t)rng / (double)(1 + next(1000)));
	case 5:
		return json_boolean(next(2));
	default:
		return json_null();
	}
}

static void test_random(void)
{
	for (int i = 0; i < 3000; i++) {
		json_t *v = random_value(0);
		check_same(v, "a random value");
		json_decref(v);
	}
}

static void test_depth(void)
{
	json_t *v = json_array(), *inner = v;
	char *out = NULL;
	size_t len;

	for (int i = 0; i < 70; i++) {
		json_t *a = json_array();
		json_array_append_new(inner, a);
		inner = a;
	}
	CHECK_INT(json_out_compact(v, &out, &len), -EINVAL);
	CHECK(out == NULL);
	json_decref(v);
	CHECK_INT(json_out_compact(NULL, &out, &len), -EINVAL);
}

/* json_out_int() is printf("%lld")'s digits, at the edges and in between. */
static void test_int(void)
{
	const long long v[] = {
	    0,   1,          -1,    9,         10,        -10,           99,
	    100, 1795889881, -4711, INT64_MAX, INT64_MIN, INT64_MIN + 1, INT64_MAX - 1};
	char want[32], got[JSON_OUT_INT_MAX + 1];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		snprintf(want, sizeof(want), "%lld", v[i]);
		*json_out_int(got, v[i]) = '\0';
		CHECK_STR(got, want);
	}
	for (long long x = -100000; x <= 100000; x += 7) {
		snprintf(want, sizeof(want), "%lld", x);
		*json_out_int(got, x) = '\0';
		unit_checks++;
		if (strcmp(got, want) != 0)
			unit_fail(__FILE__, __LINE__, want);
	}
}

int main(void)
{
	test_int();
	test_fixed();
	test_random();
	test_depth();
	return unit_finish("json_out");
}

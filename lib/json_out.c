/* Compact JSON output (json_out.h). Strings are escaped exactly as jansson escapes them without
 * flags: the quote, the backslash and the control characters below 0x20 (\b \f \n \r \t by
 * name, the rest as \u00XX); everything else, UTF-8 included, is copied. Integers are printed
 * as JSON_INTEGER_FORMAT ("%lld") prints them, without printf's machinery; a real is rare in
 * claims and is left to jansson's own formatting. */
#include "json_out.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

struct out {
	char *buf;
	size_t len, cap;
	int err;
};

static void reserve(struct out *o, size_t n)
{
	char *grown;
	size_t cap;

	if (o->err || o->len + n + 1 <= o->cap)
		return;
	/* A token's payload is a few hundred bytes: one allocation, rarely a second. */
	cap = o->cap ? o->cap : 1024;
	while (cap < o->len + n + 1)
		cap *= 2;
	grown = realloc(o->buf, cap);
	if (!grown) {
		o->err = -ENOMEM;
		return;
	}
	o->buf = grown;
	o->cap = cap;
}

static void put(struct out *o, const char *s, size_t n)
{
	reserve(o, n);
	if (o->err)
		return;
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

char *json_out_int(char *out, long long v)
{
	/* The magnitude as unsigned: -LLONG_MIN does not fit a long long. */
	unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
	char digits[20], *d = digits + sizeof(digits);

	do {
		*--d = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*out++ = '-';
	memcpy(out, d, (size_t)(digits + sizeof(digits) - d));
	return out + (digits + sizeof(digits) - d);
}

char *json_out_string(char *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t run = 0;

	*out++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch != '"' && ch != '\\') {
			run++;
			continue;
		}
		memcpy(out, s + i - run, run);
		out += run;
		run = 0;
		*out++ = '\\';
		switch (ch) {
		case '"':
		case '\\':
			*out++ = (char)ch;
			break;
		case '\b':
			*out++ = 'b';
			break;
		case '\f':
			*out++ = 'f';
			break;
		case '\n':
			*out++ = 'n';
			break;
		case '\r':
			*out++ = 'r';
			break;
		case '\t':
			*out++ = 't';
			break;
		default:
			memcpy(out, "u00", 3);
			out[3] = hex[ch >> 4];
			out[4] = hex[ch & 15];
			out += 5;
		}
	}
	memcpy(out, s + n - run, run);
	out += run;
	*out++ = '"';
	return out;
}

static void put_string(struct out *o, const char *s, size_t n)
{
	reserve(o, JSON_OUT_STRING_MAX(n));
	if (o->err)
		return;
	o->len = (size_t)(json_out_string(o->buf + o->len, s, n) - o->buf);
}

static void put_value(struct out *o, const json_t *v, int depth)
{
	char num[32];
	int w;

	if (o->err)
		return;
	if (depth > MAX_DEPTH) {
		o->err = -EINVAL;
		return;
	}
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *key;
		json_t *member;
		size_t i = 0;
		put(o, "{", 1);
		/* Insertion order, as json_dumps without JSON_SORT_KEYS. */
		json_object_foreach ((json_t *)v, key, member) {
			if (i++)
				put(o, ",", 1);
			put_string(o, key, strlen(key));
			put(o, ":", 1);
			put_value(o, member, depth + 1);
		}
		put(o, "}", 1);
		break;
	}
	case JSON_ARRAY:
		put(o, "[", 1);
		for (size_t i = 0; i < json_array_size(v); i++) {
			if (i)
				put(o, ",", 1);
			put_value(o, json_array_get(v, i), depth + 1);
		}
		put(o, "]", 1);
		break;
	case JSON_STRING:
		put_string(o, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		w = (int)(json_out_int(num, json_integer_value(v)) - num);
		put(o, num, (size_t)w);
		break;
	case JSON_REAL: {
		char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		json_malloc_t jmalloc;
		json_free_t jfree;
		if (!s) {
			o->err = -ENOMEM;
			return;
		}
		put(o, s, strlen(s));
		/* Made by jansson's allocator, which the daemon replaces
		 * (daemon/http/json_arena.h). */
		json_get_alloc_funcs(&jmalloc, &jfree);
		jfree(s);
		break;
	}
	case JSON_TRUE:
		put(o, "true", 4);
		break;
	case JSON_FALSE:
		put(o, "false", 5);
		break;
	case JSON_NULL:
		put(o, "null", 4);
		break;
	}
}

int json_out_compact(const json_t *v, char **ret, size_t *ret_len)
{
	struct out o = {0};

	if (!v)
		return -EINVAL;
	put_value(&o, v, 1);
	reserve(&o, 0);
	if (o.err) {
		free(o.buf);
		return o.err;
	}
	o.buf[o.len] = '\0';
	*ret = o.buf;
	*ret_len = o.len;
	return 0;
}

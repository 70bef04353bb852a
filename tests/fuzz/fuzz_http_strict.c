/* libFuzzer harness for daemon/http_strict.c: the input is a request target, a method and
 * headers, split at NUL bytes; every verdict must agree with a plain restatement of the rules. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_strict.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int hex(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* t[i] is '%': a complete escape of a byte that is not a control character. */
static bool escape_ok(const uint8_t *t, size_t i, size_t n)
{
	int v;

	if (i + 2 >= n || hex(t[i + 1]) < 0 || hex(t[i + 2]) < 0)
		return false;
	v = hex(t[i + 1]) * 16 + hex(t[i + 2]);
	return v >= 0x20 && v != 0x7f;
}

/* An accepted target is visible ASCII and every '%' starts an escape of a printable byte. */
static void check_target(const uint8_t *t, size_t n)
{
	enum http_strict_fault f = http_strict_target((const char *)t, n);

	if (f == HTTP_STRICT_OK) {
		if (n == 0)
			abort();
		for (size_t i = 0; i < n; i++) {
			if (t[i] <= 0x20 || t[i] >= 0x7f || (t[i] == '%' && !escape_ok(t, i, n)))
				abort();
			if (t[i] == '%')
				i += 2;
		}
	} else if (f != HTTP_STRICT_BAD_TARGET && f != HTTP_STRICT_ESCAPED_CONTROL)
		abort();
	if (!http_strict_reason(f)[0])
		abort();
}

/* Pieces after the first NUL: method, then name, value, name, value, ... */
static void check_request(const char *p, const char *end)
{
	struct http_strict_headers h = {0};
	unsigned cl = 0, te = 0;
	enum http_strict_fault f;
	bool ctl = false;

	if (p >= end)
		return;
	f = http_strict_method(p);
	if (f != HTTP_STRICT_OK && f != HTTP_STRICT_BAD_METHOD)
		abort();
	p += strlen(p) + 1;
	while (p < end) {
		const char *name = p, *value = p + strlen(p) + 1;
		if (value >= end)
			break;
		http_strict_header(&h, name, value);
		cl += strcasecmp(name, "content-length") == 0;
		te += strcasecmp(name, "transfer-encoding") == 0;
		for (const char *v = value; *v; v++)
			ctl = ctl || ((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f;
		p = value + strlen(value) + 1;
	}
	f = http_strict_finish(&h);
	/* what a front end could read two ways is never accepted */
	if (f == HTTP_STRICT_OK && (cl > 1 || te > 1 || (cl && te) || ctl))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	char *copy;

	check_target(data, size);
	if (!nul)
		return 0;
	/* A NUL-terminated copy, so that the last piece ends too. */
	copy = malloc(size + 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	check_request(copy + (nul - data) + 1, copy + size);
	free(copy);
	return 0;
}

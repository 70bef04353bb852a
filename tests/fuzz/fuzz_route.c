/* libFuzzer harness for lib/conf_routes.c: the normalisation of request paths on the public
 * listener (conf_route_normalize), and the discovery path of an iss (conf_iss_path). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf_routes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool unreserved(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static int hex(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static size_t count(const char *s, char c)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == c;
	return n;
}

/* Every '%' starts a complete escape: what http_strict_target lets through to the handler. */
static bool escapes_complete(const char *s)
{
	for (; *s; s++)
		if (*s == '%' && (hex((unsigned char)s[1]) < 0 || hex((unsigned char)s[2]) < 0))
			return false;
	return true;
}

/* Normalising shortens or keeps and never makes a '/' or a NUL. On a target the listener
 * accepts, it leaves no escape of an unreserved character and no lower-case hex digit in an
 * escape, and is idempotent: the canonical form the route table holds. */
static void check_normalize(const char *in)
{
	char *a = strdup(in), *b;
	size_t n;

	if (!a)
		abort();
	n = conf_route_normalize(a);
	if (n != strlen(a) || n > strlen(in) || count(a, '/') != count(in, '/'))
		abort();
	if (!escapes_complete(in)) {
		free(a);
		return;
	}
	for (size_t i = 0; i + 2 < n; i++) {
		int hi = hex((unsigned char)a[i + 1]), lo = hex((unsigned char)a[i + 2]);
		if (a[i] != '%')
			continue;
		if (hi < 0 || lo < 0 || unreserved((unsigned char)(hi * 16 + lo)) ||
		    (a[i + 1] >= 'a' && a[i + 1] <= 'f') || (a[i + 2] >= 'a' && a[i + 2] <= 'f'))
			abort();
	}
	b = strdup(a);
	if (!b || conf_route_normalize(b) != n || strcmp(a, b) != 0)
		abort();
	free(a);
	free(b);
}

/* An accepted iss: an http(s) URL whose path lies inside it, is empty or starts with '/', ends
 * without the one '/' removed, and holds no '?', '#' or blank. A refusal says why. */
static void check_iss(const char *iss)
{
	size_t off = 4242, len = 4242;
	const char *why = NULL;
	int r = conf_iss_path(iss, &off, &len, &why);

	if (r == -ENOENT) {
		if (strncmp(iss, "http://", 7) == 0 || strncmp(iss, "https://", 8) == 0)
			abort();
		if (off != 4242 || len != 4242)
			abort();
		return;
	}
	if (r == -EINVAL) {
		if (!why || !*why || off != 4242 || len != 4242)
			abort();
		return;
	}
	if (r != 0 || off + len > strlen(iss) || (len > 0 && iss[off] != '/'))
		abort();
	if (strcspn(iss + off, "?# \t\"<>\\^`{|}") != strlen(iss + off))
		abort();
	if (strlen(iss + off) - len > 1 || (strlen(iss + off) - len == 1 && iss[off + len] != '/'))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0'; /* a NUL inside cuts the text short, as in a C string */
	check_normalize(s);
	check_iss(s);
	free(s);
	return 0;
}

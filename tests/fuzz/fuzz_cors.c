/* libFuzzer harness for the CORS decisions: lib/conf_cors.c (the form of a configured origin)
 * and daemon/http/cors.c (which Origin is allowed, which request headers a preflight may
 * name). Nothing of a request is ever let through unless it equals what was configured. */
#include <stdlib.h>
#include <string.h>

#include "conf_cors.h"
#include "cors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *configured[] = {"https://app.example.com", "http://localhost:3000"};

/* An accepted origin is what a browser could send: short, printable ASCII, lowercase,
 * scheme "://" host [":" port] and nothing after. */
static void check_origin_form(const char *s)
{
	const char *host = strstr(s, "://");

	if (!host || strlen(s) > 300 || strcmp(s, "null") == 0)
		abort();
	for (const char *p = s; *p; p++)
		if (*p <= ' ' || *p >= 0x7f || (*p >= 'A' && *p <= 'Z'))
			abort();
	if (strpbrk(host + 3, "/?#@*,") || host[3] == '\0' || strstr(host + 3, "://"))
		abort();
}

/* The configured list holds s: only s itself, byte for byte, is allowed, and what comes back
 * is the configuration's copy. */
static void check_exact(char *s, size_t n)
{
	struct conf c;
	char *list[] = {s}, *other = strdup(s);

	memset(&c, 0, sizeof(c));
	c.jwks.cors_origins = list;
	c.jwks.n_cors_origins = 1;
	if (!other)
		abort();
	if (cors_allow_origin(&c, other) != s)
		abort();
	other[n - 1] ^= 0x20;
	if (cors_allow_origin(&c, other))
		abort();
	other[n - 1] = '\0';
	if (cors_allow_origin(&c, other))
		abort();
	free(other);
}

/* Any text as a request's Origin against a fixed list, and as Access-Control-Request-Headers. */
static void check_request(const char *s)
{
	struct conf c;
	const char *allow;

	memset(&c, 0, sizeof(c));
	c.jwks.cors_origins = configured;
	c.jwks.n_cors_origins = 2;
	allow = cors_allow_origin(&c, s);
	if (allow && ((allow != configured[0] && allow != configured[1]) || strcmp(allow, s) != 0))
		abort();
	if (cors_request_headers_allowed(s)) {
		/* Every item, blanks aside, is empty or one of the two names. */
		char *copy = strdup(s), *save = NULL;
		if (!copy)
			abort();
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			t += strspn(t, " \t");
			size_t len = strlen(t);
			while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t'))
				len--;
			if (len && !(len == 13 && strncasecmp(t, "if-none-match", 13) == 0) &&
			    !(len == 13 && strncasecmp(t, "cache-control", 13) == 0))
				abort();
		}
		free(copy);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	if (!conf_origin_invalid(s)) {
		check_origin_form(s);
		check_exact(s, strlen(s));
	}
	check_request(s);
	free(s);
	return 0;
}

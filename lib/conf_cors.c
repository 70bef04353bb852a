/* The form of a configured CORS origin ([jwks] cors-origins): refused at load unless a browser
 * could send it byte for byte, so that a typo is an error and never a silent mismatch. */
#include "conf_cors.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Longer than any origin a browser sends for a real host (a DNS name is at most 253). */
#define ORIGIN_MAX 300

static bool is_lower(char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 3986 scheme, lowercase only. Returns its length, 0 when there is none. */
static size_t scheme_len(const char *s, const char **why)
{
	size_t n = 0;

	if (!is_lower(s[0])) {
		*why = s[0] >= 'A' && s[0] <= 'Z'
		           ? "the scheme must be lowercase, as browsers send it"
		           : "not scheme://host[:port]";
		return 0;
	}
	while (is_lower(s[n]) || is_digit(s[n]) || s[n] == '+' || s[n] == '-' || s[n] == '.')
		n++;
	if (s[n] >= 'A' && s[n] <= 'Z') {
		*why = "the scheme must be lowercase, as browsers send it";
		return 0;
	}
	if (strncmp(s + n, "://", 3) != 0) {
		*why = "not scheme://host[:port]";
		return 0;
	}
	return n;
}

/* Why the character c ends a host early. */
static const char *host_stop_reason(char c)
{
	if (c >= 'A' && c <= 'Z')
		return "the host must be lowercase, as browsers send it";
	if (c == '/')
		return "an origin has no path, not even a trailing slash";
	if (c == '?' || c == '#')
		return "an origin has no query or fragment";
	if (c == '@')
		return "an origin has no user info";
	if (c == '*')
		return "only a lone * may stand for any origin (no wildcard hosts)";
	if ((unsigned char)c >= 0x80)
		return "non-ASCII host: write the punycode (xn--) form browsers send";
	return "the host has a character an origin cannot have";
}

/* A host: a name or IPv4 address ([a-z0-9.-]) or a bracketed IPv6 address ([0-9a-f:.]).
 * Returns its length, 0 with *why when it is empty or malformed. */
static size_t host_len(const char *s, const char **why)
{
	size_t n = 0;

	if (s[0] == '[') {
		for (n = 1;
		     is_digit(s[n]) || (s[n] >= 'a' && s[n] <= 'f') || s[n] == ':' || s[n] == '.';
		     n++)
			;
		if (s[n] != ']' || n == 1) {
			*why = s[n] >= 'A' && s[n] <= 'F'
			           ? "the host must be lowercase, as browsers send it"
			           : "malformed [IPv6] host";
			return 0;
		}
		return n + 1;
	}
	while (is_lower(s[n]) || is_digit(s[n]) || s[n] == '-' || s[n] == '.')
		n++;
	if (n == 0 || (s[n] != '\0' && s[n] != ':')) {
		*why = n == 0 && (s[0] == '\0' || s[0] == ':') ? "no host" : host_stop_reason(s[n]);
		return 0;
	}
	if (s[n - 1] == '.') {
		*why = "the host ends with a dot, which browsers do not send";
		return 0;
	}
	return n;
}

/* ":port" (1-65535, no leading zero, not the scheme's default) or nothing. */
static const char *port_invalid(const char *scheme, size_t scheme_n, const char *s)
{
	unsigned long port = 0;
	size_t n = 1;

	if (s[0] == '\0')
		return NULL;
	if (s[0] != ':')
		return host_stop_reason(s[0]);
	if (!is_digit(s[1]) || s[1] == '0')
		return "the port must be a number from 1 to 65535";
	while (is_digit(s[n]) && n <= 6)
		port = port * 10 + (unsigned long)(s[n++] - '0');
	if (s[n] != '\0')
		return is_digit(s[n]) ? "the port must be a number from 1 to 65535"
		                      : host_stop_reason(s[n]);
	if (port > 65535)
		return "the port must be a number from 1 to 65535";
	if ((scheme_n == 5 && strncmp(scheme, "https", 5) == 0 && port == 443) ||
	    (scheme_n == 4 && strncmp(scheme, "http", 4) == 0 && port == 80))
		return "browsers leave out the scheme's default port: write the origin without it";
	return NULL;
}

const char *conf_origin_invalid(const char *s)
{
	const char *why = NULL;
	size_t sn, hn;

	if (strcmp(s, "null") == 0)
		return "'null' is the origin of sandboxed and file: documents, which any page can "
		       "claim; it cannot be allowed";
	if (strlen(s) > ORIGIN_MAX)
		return "longer than any origin";
	if (!(sn = scheme_len(s, &why)))
		return why;
	if (!(hn = host_len(s + sn + 3, &why)))
		return why;
	return port_invalid(s, sn, s + sn + 3 + hn);
}

/* Parsers for single configuration values: names, modes, addresses, lists, allow items. */
#include "conf_values.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

void conf_free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

bool conf_issuer_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* RFC 6838 restricted-name characters: what a media-type-like typ may contain. */
bool conf_token_type_valid(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("!#$&^_.+-", s[i]))
			return false;
	return true;
}

int conf_url_origin_len(const char *url, size_t *ret_len)
{
	static const char host_chars[] =
	    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]";
	size_t scheme, host;

	if (strncmp(url, "https://", 8) == 0)
		scheme = 8;
	else if (strncmp(url, "http://", 7) == 0)
		scheme = 7;
	else
		return -EINVAL;
	host = strspn(url + scheme, host_chars);
	if (host == 0 || !strchr("/?#", url[scheme + host]))
		return -EINVAL;
	*ret_len = scheme + host;
	return 0;
}

bool conf_text_printable(const char *s)
{
	json_t *utf8;

	for (const char *c = s; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return false;
	/* Values end up in JSON (tokens, discovery documents): jansson refuses invalid UTF-8. */
	utf8 = json_string(s);
	json_decref(utf8);
	return utf8 != NULL;
}

int conf_parse_u32(const char *s, uint32_t *ret)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > UINT32_MAX - 1)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

int conf_parse_mode(const char *s, mode_t *ret)
{
	char *end;
	unsigned long v;

	if (!*s || strspn(s, "01234567") != strlen(s))
		return -EINVAL;
	v = strtoul(s, &end, 8);
	if (*end || v > 0777)
		return -EINVAL;
	*ret = (mode_t)v;
	return 0;
}

int conf_parse_listen(const char *s, struct listen_conf *ret)
{
	char host[64];
	const char *colon, *h = s;
	size_t hlen;
	uint32_t port;

	memset(ret, 0, sizeof(*ret));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0 || hlen >= sizeof(host) || conf_parse_u32(colon + 1, &port) < 0 ||
	    port == 0 || port > 65535)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (s[0] == '[') {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ret->addr;
		if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
			return -EINVAL;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		ret->addr_len = sizeof(*a6);
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&ret->addr;
		if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
			return -EINVAL;
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		ret->addr_len = sizeof(*a4);
	}
	return 0;
}

/* Splits a comma-separated list, trimming blanks; empty items are an error. */
int conf_split_list(const char *s, char ***ret, size_t *ret_n)
{
	char **v = NULL;
	size_t n = 0;
	const char *p = s;

	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char **nv;

		while (len > 0 && isspace((unsigned char)*p)) {
			p++;
			len--;
		}
		while (len > 0 && isspace((unsigned char)p[len - 1]))
			len--;
		if (len == 0)
			goto fail;
		nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv)
			goto fail;
		v = nv;
		v[n] = strndup(p, len);
		if (!v[n])
			goto fail;
		n++;
		if (!end)
			break;
		p = end + 1;
	}
	*ret = v;
	*ret_n = n;
	return 0;
fail:
	conf_free_strv(v, n);
	return -EINVAL;
}

int conf_parse_allow_item(const char *item, struct allow_rule *ret, const char **why)
{
	if (strcmp(item, "*") == 0) {
		ret->kind = ALLOW_ANY;
		ret->id = 0;
		return 0;
	}
	if (strncmp(item, "uid:", 4) == 0 || strncmp(item, "gid:", 4) == 0) {
		ret->kind = item[0] == 'u' ? ALLOW_UID : ALLOW_GID;
		*why = "not a number";
		return conf_parse_u32(item + 4, &ret->id);
	}
	if (strncmp(item, "user:", 5) == 0) {
		struct passwd *pw = getpwnam(item + 5);
		*why = "no such user";
		if (!pw)
			return -ENOENT;
		ret->kind = ALLOW_UID;
		ret->id = pw->pw_uid;
		return 0;
	}
	if (strncmp(item, "group:", 6) == 0) {
		struct group *gr = getgrnam(item + 6);
		*why = "no such group";
		if (!gr)
			return -ENOENT;
		ret->kind = ALLOW_GID;
		ret->id = gr->gr_gid;
		return 0;
	}
	*why = "expected user:NAME, group:NAME, uid:N, gid:N or *";
	return -EINVAL;
}

/* The public listener's route table: every path it answers, and whose document that is. */
#include "conf_routes.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "conf_values.h"

static const char jwks_suffix[] = "/.well-known/jwks.json";
static const char oidc_suffix[] = "/.well-known/openid-configuration";
static const char rfc8414_prefix[] = "/.well-known/oauth-authorization-server";

/* RFC 3986 pchar and '/', '%' checked apart: what a path may hold unescaped. */
static bool path_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("-._~!$&'()*+,;=:@/", c));
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A "." or ".." segment, its dots escaped or not ("%2E" is '.'): clients that normalise URLs
 * (WHATWG URL, browsers) remove it before they ask, so the path they request would not be the
 * iss's. */
static bool has_dot_segment(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		size_t dots = 0;
		bool other = false;
		for (; i < len && p[i] != '/'; i++) {
			if (p[i] == '.')
				dots++;
			else if (p[i] == '%' && p[i + 1] == '2' &&
			         (p[i + 2] == 'E' || p[i + 2] == 'e'))
				dots++, i += 2;
			else
				other = true;
		}
		if (!other && (dots == 1 || dots == 2))
			return true;
	}
	return false;
}

int conf_iss_path(const char *iss, size_t *ret_off, size_t *ret_len, const char **why)
{
	size_t off, len;
	const char *p;

	if (strncmp(iss, "https://", 8) != 0 && strncmp(iss, "http://", 7) != 0)
		return -ENOENT;
	if (conf_url_origin_len(iss, &off) < 0) {
		*why = "its authority is not a plain host[:port] (letters, digits, '.', '-', an "
		       "IPv6 literal; no user info)";
		return -EINVAL;
	}
	p = iss + off;
	len = strlen(p);
	if (strpbrk(p, "?#")) {
		*why = "an issuer has no query or fragment (OpenID Connect Discovery, RFC 8414)";
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '%' && hex_value(p[i + 1]) >= 0 && hex_value(p[i + 2]) >= 0)
			i += 2;
		else if (!path_char(p[i])) {
			*why = "its path holds a character that a URL must percent-encode";
			return -EINVAL;
		}
	}
	if (has_dot_segment(p, len)) {
		*why = "its path has a '.' or '..' segment, which clients remove before they ask";
		return -EINVAL;
	}
	/* OIDC Discovery §4 and RFC 8414 §3.1: a terminating '/' is removed first. */
	if (len > 0 && p[len - 1] == '/')
		len--;
	*ret_off = off;
	*ret_len = len;
	return 0;
}

size_t conf_route_normalize(char *path)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t in = 0, out = 0;

	while (path[in]) {
		int hi, lo;
		if (path[in] != '%' || (hi = hex_value(path[in + 1])) < 0 ||
		    (lo = hex_value(path[in + 2])) < 0) {
			path[out++] = path[in++];
			continue;
		}
		char c = (char)(hi * 16 + lo);
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    (c != '\0' && strchr("-._~", c))) {
			path[out++] = c;
		} else {
			path[out++] = '%';
			path[out++] = hex[hi];
			path[out++] = hex[lo];
		}
		in += 3;
	}
	path[out] = '\0';
	return out;
}

struct table {
	struct conf_route *v;
	size_t n, cap;
};

/* Takes ownership of path (NULL: out of memory). */
static int table_add(struct table *t, char *path, size_t issuer, enum conf_doc doc)
{
	if (!path)
		return -ENOMEM;
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 8;
		struct conf_route *v = realloc(t->v, cap * sizeof(*v));
		if (!v) {
			free(path);
			return -ENOMEM;
		}
		t->v = v;
		t->cap = cap;
	}
	t->v[t->n++] = (struct conf_route){.path = path, .issuer = issuer, .doc = doc};
	return 0;
}

static char *path_join(const char *a, size_t a_len, const char *b, size_t b_len)
{
	char *s = malloc(a_len + b_len + 1);

	if (s) {
		memcpy(s, a, a_len);
		memcpy(s + a_len, b, b_len);
		s[a_len + b_len] = '\0';
	}
	return s;
}

static int add_issuer(struct table *t, const struct issuer_conf *ic, size_t i)
{
	size_t off, len;
	const char *why;
	char *s = NULL;
	int r;

	if (asprintf(&s, "/%s%s", ic->name, jwks_suffix) < 0)
		s = NULL;
	if ((r = table_add(t, s, i, CONF_DOC_JWKS)) < 0)
		return r;
	if (asprintf(&s, "/%s%s", ic->name, oidc_suffix) < 0)
		s = NULL;
	if ((r = table_add(t, s, i, CONF_DOC_DISCOVERY)) < 0)
		return r;
	if (!ic->iss || conf_iss_path(ic->iss, &off, &len, &why) < 0)
		return 0;
	s = path_join(ic->iss + off, len, oidc_suffix, strlen(oidc_suffix));
	if (s)
		conf_route_normalize(s);
	if ((r = table_add(t, s, i, CONF_DOC_DISCOVERY)) < 0)
		return r;
	s = path_join(rfc8414_prefix, strlen(rfc8414_prefix), ic->iss + off, len);
	if (s)
		conf_route_normalize(s);
	return table_add(t, s, i, CONF_DOC_DISCOVERY);
}

static int route_cmp(const void *a, const void *b)
{
	const struct conf_route *x = a, *y = b;
	int c = strcmp(x->path, y->path);

	if (c)
		return c;
	if (x->issuer != y->issuer)
		return x->issuer < y->issuer ? -1 : 1;
	return (int)x->doc - (int)y->doc;
}

/* Whether the pair (a, b) is among the first n pairs, whose clash was reported already. */
static bool pair_seen(size_t (*pairs)[2], size_t n, size_t a, size_t b)
{
	for (size_t i = 0; i < n; i++)
		if (pairs[i][0] == a && pairs[i][1] == b)
			return true;
	return false;
}

/* Keeps the first entry of each run of one path; reports the other issuers in it. */
static int table_dedup(struct table *t, conf_route_clash_fn clash, void *cls)
{
	size_t(*pairs)[2] = NULL, n_pairs = 0, out = 0;
	int r = 0;

	for (size_t i = 0; i < t->n; i++) {
		struct conf_route *keep = out ? &t->v[out - 1] : NULL, *e = &t->v[i];
		if (!keep || strcmp(keep->path, e->path) != 0) {
			t->v[out++] = *e;
			continue;
		}
		if (keep->issuer != e->issuer &&
		    !pair_seen(pairs, n_pairs, keep->issuer, e->issuer)) {
			size_t(*p)[2] = realloc(pairs, (n_pairs + 1) * sizeof(*pairs));
			if (!p) {
				r = -ENOMEM;
			} else {
				pairs = p;
				pairs[n_pairs][0] = keep->issuer;
				pairs[n_pairs++][1] = e->issuer;
				clash(cls, e->path, keep->issuer, e->issuer);
				if (r == 0)
					r = -EEXIST;
			}
		}
		free(e->path);
	}
	t->n = out;
	free(pairs);
	return r;
}

int conf_routes_build(struct conf *conf, conf_route_clash_fn clash, void *cls)
{
	struct table t = {0};
	int r = 0;

	for (size_t i = 0; i < conf->n_issuers && r == 0; i++)
		r = add_issuer(&t, &conf->issuers[i], i);
	if (r == 0) {
		qsort(t.v, t.n, sizeof(*t.v), route_cmp);
		r = table_dedup(&t, clash, cls);
	}
	conf_routes_free(conf);
	conf->routes = t.v;
	conf->n_routes = t.n;
	return r;
}

void conf_routes_free(struct conf *conf)
{
	for (size_t i = 0; i < conf->n_routes; i++)
		free(conf->routes[i].path);
	free(conf->routes);
	conf->routes = NULL;
	conf->n_routes = 0;
}

static int path_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct conf_route *)elem)->path);
}

const struct conf_route *conf_route_find(const struct conf *conf, const char *path)
{
	if (conf->n_routes == 0)
		return NULL;
	return bsearch(path, conf->routes, conf->n_routes, sizeof(*conf->routes), path_cmp);
}

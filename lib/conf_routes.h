/* The public listener's route table (SPEC §5): which request path serves which issuer's JWKS or
 * discovery document, derived from the configuration once, when it is loaded. */
#pragma once
#include <stddef.h>

struct conf;

enum conf_doc {
	CONF_DOC_JWKS,      /* the issuer's JWKS */
	CONF_DOC_DISCOVERY, /* its discovery document (OIDC Discovery and RFC 8414 share one) */
};

struct conf_route {
	char *path;    /* byte for byte as the request target carries it, before any '?' */
	size_t issuer; /* index in conf->issuers */
	enum conf_doc doc;
};

/* Where an http(s) iss anchors its discovery documents: its path without one terminating '/'
 * ("" when it has none), the *ret_len bytes at iss + *ret_off. Returns 0; -ENOENT when iss is
 * not an http(s) URL (an opaque iss such as a URN: no discovery at its path); -EINVAL when it is
 * one that a relying party could not discover, and then *why says what is wrong. */
int conf_iss_path(const char *iss, size_t *ret_off, size_t *ret_len, const char **why);

/* Called for two issuers (indexes a < b) whose documents would share path. */
typedef void (*conf_route_clash_fn)(void *cls, const char *path, size_t a, size_t b);

/* Fills conf->routes from conf->issuers: /NAME/.well-known/jwks.json and
 * /NAME/.well-known/openid-configuration of every issuer, and for an iss that conf_iss_path
 * accepts, {path}/.well-known/openid-configuration and
 * /.well-known/oauth-authorization-server{path}; sorted, one entry per path (an issuer may reach
 * its own document by two routes). A path that two issuers would serve is reported once per
 * pair of issuers through clash, and the build goes on to find every such pair; it then returns
 * -EEXIST. -ENOMEM when out of memory, else 0. */
int conf_routes_build(struct conf *conf, conf_route_clash_fn clash, void *cls);
void conf_routes_free(struct conf *conf);

/* RFC 3986 §6.2.2 normalisation of path's %-escapes, in place: an escaped unreserved character
 * becomes the character ("%61" is "a"), the hex digits of any other escape become upper case
 * ("%2f" is "%2F"). Nothing else: "%2F" stays no '/', and dot segments and "//" stay. Returns
 * the new length. The listener applies it to request paths, the table to iss paths. */
size_t conf_route_normalize(char *path);

/* The route of path (NUL-terminated, normalised, compared byte for byte), or NULL. */
const struct conf_route *conf_route_find(const struct conf *conf, const char *path);

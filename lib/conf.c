/* Loading and validating the configuration file with libinih; every problem names file and line. */
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <ini.h>

#include "conf_cors.h"
#include "conf_values.h"
#include "conf_routes.h" /* h14-discovery */
#include "duration.h"

#define CONF_MAX_LINE 4096

struct seen_key {
	char *section;
	char *name;
};

struct parser {
	const char *path;
	FILE *f;
	char *buf;
	size_t cap;
	unsigned line;
	struct conf *conf;
	struct conf_errors *errs;
	char *section;         /* current section, as written */
	bool section_known;    /* false: keys below it are not reported again */
	struct seen_key *seen; /* every name set so far, to refuse repetitions */
	size_t n_seen;
	unsigned hsm_line, sign_line, jwks_line, admin_line, metrics_line;
	bool max_age_set;
};

static void conf_error(struct parser *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errs_add(struct conf_errors *errs, char *msg)
{
	char **n;

	if (!msg)
		return;
	n = realloc(errs->msgs, (errs->n + 1) * sizeof(*n));
	if (!n) {
		free(msg);
		return;
	}
	errs->msgs = n;
	errs->msgs[errs->n++] = msg;
}

static void conf_error(struct parser *p, unsigned line, const char *fmt, ...)
{
	char *reason = NULL, *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&reason, fmt, ap) < 0)
		reason = NULL;
	va_end(ap);
	if (!reason)
		return;
	if (line > 0) {
		if (asprintf(&msg, "%s:%u: %s", p->path, line, reason) < 0)
			msg = NULL;
	} else if (asprintf(&msg, "%s: %s", p->path, reason) < 0) {
		msg = NULL;
	}
	free(reason);
	errs_add(p->errs, msg);
}

void conf_errors_clear(struct conf_errors *errs)
{
	for (size_t i = 0; i < errs->n; i++)
		free(errs->msgs[i]);
	free(errs->msgs);
	errs->msgs = NULL;
	errs->n = 0;
}

static void issuer_conf_clear(struct issuer_conf *ic)
{
	free(ic->name);
	free(ic->iss);
	conf_free_strv(ic->audiences, ic->n_audiences);
	conf_free_strv(ic->token_types, ic->n_token_types);
	free(ic->allow);
}

/* h14-tls */
static void tls_conf_clear(struct tls_conf *tc)
{
	free(tc->cert);
	free(tc->key);
	free(tc->client_ca);
}

void conf_free(struct conf *conf)
{
	if (!conf)
		return;
	free(conf->hsm.module);
	free(conf->hsm.token);
	free(conf->hsm.pin_file);
	free(conf->sign.path);
	free(conf->admin.path);
	for (size_t i = 0; i < conf->jwks.n_listen; i++)
		free(conf->jwks.listen[i].text);
	free(conf->jwks.listen);
	free(conf->jwks.public_url);
	conf_free_strv(conf->jwks.cors_origins, conf->jwks.n_cors_origins);
	for (size_t i = 0; i < conf->metrics.n_listen; i++)
		free(conf->metrics.listen[i].text);
	free(conf->metrics.listen);
	/* h14-tls */
	tls_conf_clear(&conf->jwks.tls);
	tls_conf_clear(&conf->metrics.tls);
	for (size_t i = 0; i < conf->n_issuers; i++)
		issuer_conf_clear(&conf->issuers[i]);
	free(conf->issuers);
	conf_routes_free(conf); /* h14-discovery */
	free(conf);
}

const struct issuer_conf *conf_find_issuer(const struct conf *conf, const char *name, size_t len)
{
	for (size_t i = 0; i < conf->n_issuers; i++) {
		const struct issuer_conf *ic = &conf->issuers[i];
		if (strlen(ic->name) == len && memcmp(ic->name, name, len) == 0)
			return ic;
	}
	return NULL;
}

const char *issuer_typ_find(const struct issuer_conf *ic, const char *typ)
{
	for (size_t i = 0; i < ic->n_token_types; i++)
		if (strcmp(ic->token_types[i], typ) == 0)
			return ic->token_types[i];
	return NULL;
}

bool issuer_aud_allowed(const struct issuer_conf *ic, const char *aud)
{
	if (!ic->audiences)
		return true;
	for (size_t i = 0; i < ic->n_audiences; i++)
		if (strcmp(ic->audiences[i], aud) == 0)
			return true;
	return false;
}

static int parse_allow(struct parser *p, struct issuer_conf *ic, const char *value)
{
	char **items;
	size_t n;

	if (conf_split_list(value, &items, &n) < 0) {
		conf_error(p, p->line, "allow: empty item in list");
		return -EINVAL;
	}
	free(ic->allow);
	ic->n_allow = 0;
	ic->allow = calloc(n, sizeof(*ic->allow));
	for (size_t i = 0; ic->allow && i < n; i++) {
		const char *why = "";
		if (conf_parse_allow_item(items[i], &ic->allow[ic->n_allow], &why) < 0)
			conf_error(p, p->line, "allow: '%s': %s", items[i], why);
		else
			ic->n_allow++;
	}
	conf_free_strv(items, n);
	return 0;
}

/* ---- sections and keys ---- */

static bool key_seen(struct parser *p, const char *section, const char *name)
{
	struct seen_key *n;

	for (size_t i = 0; i < p->n_seen; i++)
		if (strcmp(p->seen[i].section, section) == 0 && strcmp(p->seen[i].name, name) == 0)
			return true;
	n = realloc(p->seen, (p->n_seen + 1) * sizeof(*n));
	if (!n)
		return false;
	p->seen = n;
	p->seen[p->n_seen].section = strdup(section);
	p->seen[p->n_seen].name = strdup(name);
	p->n_seen++;
	return false;
}

static int set_string(struct parser *p, char **dst, const char *name, const char *value)
{
	if (!*value || !conf_text_printable(value)) {
		conf_error(p, p->line, "%s: must be a non-empty value without control characters",
		           name);
		return -EINVAL;
	}
	free(*dst);
	*dst = strdup(value);
	return *dst ? 0 : -ENOMEM;
}

static int set_duration(struct parser *p, uint64_t *dst, const char *name, const char *value)
{
	int r = duration_parse(value, dst);

	if (r == -ERANGE)
		conf_error(p, p->line, "%s: '%s' is longer than 10 years", name, value);
	else if (r < 0)
		conf_error(p, p->line,
		           "%s: '%s' is not a duration (a positive number and a unit: s, m or min, "
		           "h, d, w; e.g. 15m, 1h30m)",
		           name, value);
	return r;
}

/* A connection cap: 1 to 1000000. */
static int set_count(struct parser *p, unsigned *dst, const char *name, const char *value)
{
	uint32_t n;

	if (conf_parse_u32(value, &n) < 0 || n < 1 || n > 1000000) {
		conf_error(p, p->line, "%s: '%s' is not a number from 1 to 1000000", name, value);
		return -EINVAL;
	}
	*dst = n;
	return 0;
}

/* A request deadline: 1 s to 1 h. */
static int set_timeout(struct parser *p, uint64_t *dst, const char *name, const char *value)
{
	uint64_t s;

	if (set_duration(p, &s, name, value) < 0)
		return -EINVAL;
	if (s < 1 || s > 3600) {
		conf_error(p, p->line, "%s: must be from 1s to 1h", name);
		return -EINVAL;
	}
	*dst = s;
	return 0;
}

static int set_socket_key(struct parser *p, struct sock_conf *sc, const char *name,
                          const char *value)
{
	if (strcmp(name, "socket") == 0) {
		if (value[0] != '/') {
			conf_error(p, p->line, "socket: '%s' must be an absolute path", value);
			return -EINVAL;
		}
		if (strlen(value) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			conf_error(p, p->line, "socket: path is too long for a Unix socket");
			return -EINVAL;
		}
		return set_string(p, &sc->path, name, value);
	}
	if (strcmp(name, "mode") == 0) {
		if (conf_parse_mode(value, &sc->mode) < 0) {
			conf_error(p, p->line, "mode: '%s' is not an octal mode like 0660", value);
			return -EINVAL;
		}
		return 0;
	}
	if (strcmp(name, "group") == 0) {
		struct group *gr = getgrnam(value);
		if (!gr) {
			conf_error(p, p->line, "group: no such group '%s'", value);
			return -EINVAL;
		}
		sc->has_group = true;
		sc->gid = gr->gr_gid;
		return 0;
	}
	if (strcmp(name, "max-connections") == 0)
		return set_count(p, &sc->max_connections, name, value);
	if (strcmp(name, "request-timeout") == 0)
		return set_timeout(p, &sc->request_timeout, name, value);
	conf_error(p, p->line, "unknown key '%s' in [%s]", name, p->section);
	return -EINVAL;
}

/* [sign] is a socket section with one key of its own. */
static int set_sign_key(struct parser *p, const char *name, const char *value)
{
	if (strcmp(name, "audit") != 0)
		return set_socket_key(p, &p->conf->sign, name, value);
	if (strcmp(value, "best-effort") == 0)
		p->conf->audit = CONF_AUDIT_BEST_EFFORT;
	else if (strcmp(value, "required") == 0)
		p->conf->audit = CONF_AUDIT_REQUIRED;
	else {
		conf_error(p, p->line, "audit: '%s' must be best-effort or required", value);
		return -EINVAL;
	}
	return 0;
}

static int set_hsm_key(struct parser *p, const char *name, const char *value)
{
	if (strcmp(name, "module") == 0)
		return set_string(p, &p->conf->hsm.module, name, value);
	if (strcmp(name, "token") == 0)
		return set_string(p, &p->conf->hsm.token, name, value);
	if (strcmp(name, "pin-file") == 0)
		return set_string(p, &p->conf->hsm.pin_file, name, value);
	if (strcmp(name, "session-copies") == 0 || strcmp(name, "module-network") == 0 ||
	    strcmp(name, "pin-cpus") == 0) {
		bool *flag = name[0] == 's'   ? &p->conf->hsm.session_copies
		             : name[0] == 'm' ? &p->conf->hsm.module_network
		                              : &p->conf->hsm.pin_cpus;
		if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0) {
			conf_error(p, p->line, "%s: '%s' must be yes or no", name, value);
			return -EINVAL;
		}
		*flag = strcmp(value, "yes") == 0;
		return 0;
	}
	conf_error(p, p->line, "unknown key '%s' in [hsm]", name);
	return -EINVAL;
}

static int add_listen(struct parser *p, struct listen_conf **list, size_t *n_list,
                      const char *value)
{
	struct listen_conf lc, *n;

	if (conf_parse_listen(value, &lc) < 0) {
		conf_error(p, p->line,
		           "listen: '%s' is not a numeric host:port or [v6]:port (port 1-65535)",
		           value);
		return -EINVAL;
	}
	n = realloc(*list, (*n_list + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	*list = n;
	lc.text = strdup(value);
	n[(*n_list)++] = lc;
	return 0;
}

/* ---- h14-tls: tls-cert, tls-key, client-ca ---- */

/* A file the daemon reads at start and at each reload: an absolute path, so that it does not
 * depend on the directory the daemon was started in. */
static int set_tls_path(struct parser *p, char **dst, const char *name, const char *value)
{
	if (value[0] != '/') {
		conf_error(p, p->line, "%s: '%s' is not an absolute path", name, value);
		return -EINVAL;
	}
	return set_string(p, dst, name, value);
}

/* 1: name is a TLS key of the section (set, or reported); 0: it is not. client-ca only where
 * client certificates make sense: the metrics, not the public JWKS. */
static int set_tls_key(struct parser *p, struct tls_conf *tc, const char *section, const char *name,
                       const char *value)
{
	if (strcmp(name, "tls-cert") == 0) {
		tc->cert_line = p->line;
		set_tls_path(p, &tc->cert, name, value);
		return 1;
	}
	if (strcmp(name, "tls-key") == 0) {
		tc->key_line = p->line;
		set_tls_path(p, &tc->key, name, value);
		return 1;
	}
	if (strcmp(name, "client-ca") == 0) {
		if (strcmp(section, "metrics") != 0)
			conf_error(p, p->line,
			           "client-ca: only [metrics] may require client certificates; the "
			           "JWKS is public");
		else
			set_tls_path(p, &tc->client_ca, name, value);
		tc->ca_line = p->line;
		return 1;
	}
	return 0;
}

/* Both or neither; client-ca only over TLS. */
static void validate_tls(struct parser *p, const struct tls_conf *tc, const char *section,
                         unsigned section_line)
{
	/* By the lines: a value reported as bad already is not reported again as missing. */
	if (tc->cert_line && !tc->key_line)
		conf_error(p, tc->cert_line,
		           "[%s]: tls-cert is set but tls-key is not: both or neither", section);
	else if (tc->key_line && !tc->cert_line)
		conf_error(p, tc->key_line,
		           "[%s]: tls-key is set but tls-cert is not: both or neither", section);
	if (tc->client_ca && !tc->cert_line && !tc->key_line)
		conf_error(p, tc->ca_line ? tc->ca_line : section_line,
		           "[%s]: client-ca needs tls-cert and tls-key (client certificates are "
		           "a TLS feature)",
		           section);
}

/* ---- end h14-tls ---- */

static int set_metrics_key(struct parser *p, const char *name, const char *value)
{
	if (strcmp(name, "listen") == 0)
		return add_listen(p, &p->conf->metrics.listen, &p->conf->metrics.n_listen, value);
	if (set_tls_key(p, &p->conf->metrics.tls, "metrics", name, value)) /* h14-tls */
		return 0;
	conf_error(p, p->line, "unknown key '%s' in [metrics]", name);
	return -EINVAL;
}

/* h14-cors: [jwks] cors-origins ("*" or a list of exact origins) and health. */
static int set_cors_origins(struct parser *p, const char *value)
{
	struct conf *c = p->conf;
	const char *why;

	c->jwks.cors_line = p->line;
	if (strcmp(value, "*") == 0) {
		c->jwks.cors_any = true;
		return 0;
	}
	if (conf_split_list(value, &c->jwks.cors_origins, &c->jwks.n_cors_origins) < 0) {
		conf_error(p, p->line, "cors-origins: empty item in list");
		return -EINVAL;
	}
	for (size_t i = 0; i < c->jwks.n_cors_origins; i++) {
		const char *o = c->jwks.cors_origins[i];
		if (strcmp(o, "*") == 0)
			why = "'*' (any origin) must stand alone";
		else if (!conf_text_printable(o))
			why = "not printable text";
		else
			why = conf_origin_invalid(o);
		for (size_t j = 0; !why && j < i; j++)
			if (strcmp(o, c->jwks.cors_origins[j]) == 0)
				why = "listed twice";
		if (why) {
			conf_error(p, p->line, "cors-origins: '%s': %s",
			           conf_text_printable(o) ? o : "?", why);
			return -EINVAL;
		}
	}
	return 0;
}

static int set_jwks_health(struct parser *p, const char *value)
{
	if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0) {
		conf_error(p, p->line, "health: '%s' must be yes or no", value);
		return -EINVAL;
	}
	p->conf->jwks.health = strcmp(value, "yes") == 0;
	return 0;
}

static int set_jwks_key(struct parser *p, const char *name, const char *value)
{
	struct conf *c = p->conf;

	if (strcmp(name, "listen") == 0)
		return add_listen(p, &c->jwks.listen, &c->jwks.n_listen, value);
	if (strcmp(name, "max-age") == 0) {
		p->max_age_set = true;
		return set_duration(p, &c->jwks.max_age, name, value);
	}
	if (strcmp(name, "public-url") == 0) {
		size_t n = strlen(value);
		const char *host = strstr(value, "://");
		if ((strncmp(value, "https://", 8) != 0 && strncmp(value, "http://", 7) != 0) ||
		    !host || host[3] == '\0' || host[3] == '/' || strpbrk(value, " \"<>\\^`{|}") ||
		    !conf_text_printable(value)) {
			conf_error(p, p->line, "public-url: '%s' is not an http(s) URL", value);
			return -EINVAL;
		}
		while (n > 0 && value[n - 1] == '/')
			n--;
		free(c->jwks.public_url);
		c->jwks.public_url = strndup(value, n);
		return c->jwks.public_url ? 0 : -ENOMEM;
	}
	if (strcmp(name, "max-connections") == 0)
		return set_count(p, &c->jwks.max_connections, name, value);
	if (strcmp(name, "request-timeout") == 0)
		return set_timeout(p, &c->jwks.request_timeout, name, value);
	if (strcmp(name, "max-connections-per-address") == 0)
		return set_count(p, &c->jwks.max_per_address, name, value);
	if (strcmp(name, "cors-origins") == 0) /* h14-cors */
		return set_cors_origins(p, value);
	if (strcmp(name, "health") == 0) /* h14-cors */
		return set_jwks_health(p, value);
	if (set_tls_key(p, &c->jwks.tls, "jwks", name, value)) /* h14-tls */
		return 0;
	conf_error(p, p->line, "unknown key '%s' in [jwks]", name);
	return -EINVAL;
}

static int set_issuer_list(struct parser *p, char ***dst, size_t *n, const char *name,
                           const char *value)
{
	conf_free_strv(*dst, *n);
	*dst = NULL;
	*n = 0;
	if (conf_split_list(value, dst, n) < 0) {
		conf_error(p, p->line, "%s: empty item in list", name);
		return -EINVAL;
	}
	for (size_t i = 0; i < *n; i++) {
		if (strcmp(name, "token-types") == 0 && !conf_token_type_valid((*dst)[i]))
			conf_error(p, p->line, "token-types: '%s' is not a valid typ", (*dst)[i]);
		else if (!conf_text_printable((*dst)[i]))
			conf_error(p, p->line, "%s: control character in '%s'", name, (*dst)[i]);
	}
	return 0;
}

static int set_issuer_key(struct parser *p, struct issuer_conf *ic, const char *name,
                          const char *value)
{
	if (strcmp(name, "iss") == 0) {
		if (strlen(value) > 512) {
			conf_error(p, p->line, "iss: longer than 512 characters");
			return -EINVAL;
		}
		return set_string(p, &ic->iss, name, value);
	}
	if (strcmp(name, "algorithm") == 0) {
		if (jws_alg_from_name(value, &ic->alg) < 0) {
			conf_error(p, p->line,
			           "algorithm: '%s' is not one of ES256 ES384 RS256 PS256 EdDSA",
			           value);
			return -EINVAL;
		}
		return 0;
	}
	if (strcmp(name, "rotation-period") == 0)
		return set_duration(p, &ic->rotation_period, name, value);
	if (strcmp(name, "prepublish") == 0)
		return set_duration(p, &ic->prepublish, name, value);
	if (strcmp(name, "token-ttl") == 0)
		return set_duration(p, &ic->token_ttl, name, value);
	if (strcmp(name, "max-token-ttl") == 0)
		return set_duration(p, &ic->max_token_ttl, name, value);
	if (strcmp(name, "key-size") == 0) {
		uint32_t bits;
		if (conf_parse_u32(value, &bits) < 0 ||
		    (bits != 2048 && bits != 3072 && bits != 4096)) {
			conf_error(p, p->line, "key-size: '%s' must be 2048, 3072 or 4096%s", value,
			           conf_parse_u32(value, &bits) == 0 && bits < 2048
			               ? " (RSA below 2048 bits is not safe)"
			               : "");
			return -EINVAL;
		}
		ic->key_size = bits;
		ic->key_size_line = p->line;
		return 0;
	}
	if (strcmp(name, "self-check") == 0) {
		if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0) {
			conf_error(p, p->line, "self-check: '%s' must be yes or no", value);
			return -EINVAL;
		}
		ic->self_check = strcmp(value, "yes") == 0;
		return 0;
	}
	if (strcmp(name, "audiences") == 0)
		return set_issuer_list(p, &ic->audiences, &ic->n_audiences, name, value);
	if (strcmp(name, "token-types") == 0)
		return set_issuer_list(p, &ic->token_types, &ic->n_token_types, name, value);
	if (strcmp(name, "allow") == 0)
		return parse_allow(p, ic, value);
	conf_error(p, p->line, "unknown key '%s' in [%s]", name, p->section);
	return -EINVAL;
}

static struct issuer_conf *issuer_by_section(struct parser *p, const char *section)
{
	if (strncmp(section, "issuer:", 7) != 0)
		return NULL;
	for (size_t i = 0; i < p->conf->n_issuers; i++)
		if (strcmp(p->conf->issuers[i].name, section + 7) == 0)
			return &p->conf->issuers[i];
	return NULL;
}

static int on_value(void *user, const char *section, const char *name, const char *value)
{
	struct parser *p = user;
	struct issuer_conf *ic;

	if (!p->section_known)
		return 1; /* the section header was reported already */
	if (strcmp(name, "listen") != 0 && key_seen(p, section, name)) {
		conf_error(p, p->line, "'%s' is set twice in [%s]", name, section);
		return 1;
	}
	if (strcmp(section, "hsm") == 0)
		set_hsm_key(p, name, value);
	else if (strcmp(section, "sign") == 0)
		set_sign_key(p, name, value);
	else if (strcmp(section, "admin") == 0)
		set_socket_key(p, &p->conf->admin, name, value);
	else if (strcmp(section, "jwks") == 0)
		set_jwks_key(p, name, value);
	else if (strcmp(section, "metrics") == 0)
		set_metrics_key(p, name, value);
	else if ((ic = issuer_by_section(p, section)))
		set_issuer_key(p, ic, name, value);
	return 1;
}

static int issuer_add(struct parser *p, const char *name)
{
	struct issuer_conf *n, *ic;

	n = realloc(p->conf->issuers, (p->conf->n_issuers + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	p->conf->issuers = n;
	ic = &n[p->conf->n_issuers];
	memset(ic, 0, sizeof(*ic));
	ic->name = strdup(name);
	if (!ic->name)
		return -ENOMEM;
	ic->line = p->line;
	ic->alg = JWS_ES256;
	ic->rotation_period = 30 * 86400;
	ic->prepublish = 86400;
	ic->token_ttl = 15 * 60;
	ic->max_token_ttl = 3600;
	ic->self_check = -1;
	p->conf->n_issuers++;
	return 0;
}

static unsigned *fixed_section_line(struct parser *p, const char *name)
{
	if (strcmp(name, "hsm") == 0)
		return &p->hsm_line;
	if (strcmp(name, "sign") == 0)
		return &p->sign_line;
	if (strcmp(name, "admin") == 0)
		return &p->admin_line;
	if (strcmp(name, "jwks") == 0)
		return &p->jwks_line;
	if (strcmp(name, "metrics") == 0)
		return &p->metrics_line;
	return NULL;
}

/* Called by the line reader for every "[...]" line, so that empty and repeated sections are
 * seen too (libinih only reports names and values). */
static void on_section(struct parser *p, const char *name)
{
	unsigned *line = fixed_section_line(p, name);

	free(p->section);
	p->section = strdup(name);
	p->section_known = false;
	if (line) {
		if (*line)
			conf_error(p, p->line, "section [%s] repeated (first at line %u)", name,
			           *line);
		else
			p->section_known = true;
		*line = p->line;
		return;
	}
	if (strncmp(name, "issuer:", 7) == 0) {
		const struct issuer_conf *ic = issuer_by_section(p, name);
		if (!conf_issuer_name_valid(name + 7))
			conf_error(p, p->line, "issuer name '%s' must match [a-z0-9-]{1,32}",
			           name + 7);
		else if (ic)
			conf_error(p, p->line, "section [%s] repeated (first at line %u)", name,
			           ic->line);
		else if (issuer_add(p, name + 7) == 0)
			p->section_known = true;
		return;
	}
	conf_error(p, p->line, "unknown section [%s]", name);
}

/* Classifies one line: section headers are noted, malformed lines reported and blanked so that
 * libinih never sees them. Returns false when the line must be hidden from libinih. */
static bool inspect_line(struct parser *p, const char *line)
{
	const char *s = line;
	size_t len;

	while (isspace((unsigned char)*s))
		s++;
	len = strlen(s);
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		len--;
	if (len == 0 || *s == ';' || *s == '#')
		return true;
	if (*s == '[') {
		const char *close = memchr(s, ']', len);
		char name[128];
		if (!close || (size_t)(close - s - 1) >= sizeof(name)) {
			conf_error(p, p->line, "malformed section header");
			return false;
		}
		memcpy(name, s + 1, (size_t)(close - s - 1));
		name[close - s - 1] = '\0';
		on_section(p, name);
		return true;
	}
	/* A colon before '=' would be a name/value separator to libinih; ours is '=' only. */
	if (!memchr(s, '=', len) || *s == '=' ||
	    (memchr(s, ':', len) && (char *)memchr(s, ':', len) < (char *)memchr(s, '=', len))) {
		conf_error(p, p->line, "expected 'name = value'");
		return false;
	}
	if (!p->section) {
		conf_error(p, p->line, "'name = value' before any section");
		return false;
	}
	return true;
}

static char *read_line(char *str, int num, void *stream)
{
	struct parser *p = stream;
	ssize_t n = getline(&p->buf, &p->cap, p->f);

	if (n < 0) {
		if (ferror(p->f))
			conf_error(p, p->line, "cannot read: %s", strerror(errno));
		return NULL;
	}
	p->line++;
	/* A UTF-8 byte order mark is not part of the first line's text. */
	if (p->line == 1 && n >= 3 && memcmp(p->buf, "\xef\xbb\xbf", 3) == 0) {
		memmove(p->buf, p->buf + 3, (size_t)n - 2);
		n -= 3;
	}
	if (n >= num || memchr(p->buf, '\0', (size_t)n)) {
		conf_error(p, p->line, n >= num ? "line longer than %d characters" : "NUL byte%.0d",
		           num - 2);
		snprintf(str, (size_t)num, "\n");
		return str;
	}
	memcpy(str, p->buf, (size_t)n + 1);
	if (!inspect_line(p, str))
		snprintf(str, (size_t)num, "\n");
	return str;
}

/* ---- cross-checks once the whole file is read ---- */

static void validate_issuer(struct parser *p, struct issuer_conf *ic)
{
	const char *n = ic->name;

	if (!ic->iss)
		conf_error(p, ic->line, "[issuer:%s]: 'iss' is required", n);
	if (ic->n_allow == 0)
		conf_error(p, ic->line,
		           "[issuer:%s]: 'allow' is required (who may sign for this issuer)", n);
	if (ic->prepublish < p->conf->jwks.max_age)
		conf_error(
		    p, ic->line,
		    "[issuer:%s]: prepublish (%llus) is shorter than [jwks] max-age (%llus): "
		    "relying parties could miss a new key",
		    n, (unsigned long long)ic->prepublish,
		    (unsigned long long)p->conf->jwks.max_age);
	if (ic->prepublish >= ic->rotation_period)
		conf_error(p, ic->line,
		           "[issuer:%s]: prepublish must be shorter than rotation-period", n);
	if (jws_alg_is_rsa(ic->alg) && ic->key_size == 0)
		ic->key_size = 2048;
	else if (!jws_alg_is_rsa(ic->alg) && ic->key_size != 0)
		conf_error(p, ic->key_size_line,
		           "[issuer:%s]: key-size applies to RS256 and PS256 only", n);
	/* Verifying is cheap for RSA, where the fault attack on RSA-CRT lives: on unless said. */
	if (ic->self_check < 0)
		ic->self_check = jws_alg_is_rsa(ic->alg);
	if (ic->token_ttl > ic->max_token_ttl)
		conf_error(p, ic->line, "[issuer:%s]: token-ttl is longer than max-token-ttl", n);
	if (ic->n_token_types == 0) {
		ic->token_types = calloc(1, sizeof(char *));
		if (ic->token_types && (ic->token_types[0] = strdup("JWT")))
			ic->n_token_types = 1;
	}
	for (size_t i = 0; i < p->conf->n_issuers && &p->conf->issuers[i] != ic; i++) {
		const struct issuer_conf *o = &p->conf->issuers[i];
		if (ic->iss && o->iss && strcmp(ic->iss, o->iss) == 0)
			conf_error(p, ic->line,
			           "[issuer:%s]: iss '%s' is also the iss of [issuer:%s]; each key "
			           "signs for exactly one issuer",
			           n, ic->iss, o->name);
	}
}

/* The same port on the same address, or on a wildcard address of the same family: with
 * SO_REUSEPORT both binds would succeed and the kernel would spread relying parties over the
 * metrics listener too. */
static bool listen_overlaps(const struct listen_conf *a, const struct listen_conf *b)
{
	if (a->addr.ss_family != b->addr.ss_family)
		return false;
	if (a->addr.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)&a->addr, *y = (const void *)&b->addr;
		return x->sin_port == y->sin_port && (x->sin_addr.s_addr == y->sin_addr.s_addr ||
		                                      x->sin_addr.s_addr == htonl(INADDR_ANY) ||
		                                      y->sin_addr.s_addr == htonl(INADDR_ANY));
	}
	const struct sockaddr_in6 *x = (const void *)&a->addr, *y = (const void *)&b->addr;
	return x->sin6_port == y->sin6_port &&
	       (IN6_ARE_ADDR_EQUAL(&x->sin6_addr, &y->sin6_addr) ||
	        IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
}

/* [metrics] listen never shares a port with [jwks] listen: the metrics are not public. */
static void validate_metrics(struct parser *p)
{
	const struct conf *c = p->conf;

	if (p->metrics_line && c->metrics.n_listen == 0)
		conf_error(p, p->metrics_line, "[metrics]: at least one 'listen' is required");
	for (size_t i = 0; i < c->metrics.n_listen; i++)
		for (size_t j = 0; j < c->jwks.n_listen; j++)
			if (listen_overlaps(&c->metrics.listen[i], &c->jwks.listen[j]))
				conf_error(p, p->metrics_line,
				           "[metrics]: listen %s is the port of [jwks] listen %s: "
				           "the metrics must have a port of their own",
				           c->metrics.listen[i].text, c->jwks.listen[j].text);
}

/* ---- h14-discovery: the public listener's paths (SPEC §5, docs/relying-parties.md) ---- */

static void on_route_clash(void *cls, const char *path, size_t a, size_t b)
{
	struct parser *p = cls;
	const struct issuer_conf *x = &p->conf->issuers[a], *y = &p->conf->issuers[b];

	/* The same iss twice is reported by validate_issuer already. */
	if (x->iss && y->iss && strcmp(x->iss, y->iss) == 0)
		return;
	conf_error(p, y->line,
	           "[issuer:%s] (iss '%s') and [issuer:%s] (iss '%s') would both be served at %s: "
	           "the JWKS listener tells issuers apart by path alone, never by Host, so give "
	           "each issuer an iss with a path of its own (and none that is another issuer's "
	           "/NAME)",
	           y->name, y->iss ? y->iss : "", x->name, x->iss ? x->iss : "", path);
}

/* An http(s) iss is where relying parties look for the discovery document (OIDC Discovery,
 * RFC 8414): it must be a URL they can ask for, and no two issuers may share its path. */
static void validate_routes(struct parser *p)
{
	struct conf *c = p->conf;
	const char *why;
	size_t off, len;

	for (size_t i = 0; i < c->n_issuers; i++) {
		const struct issuer_conf *ic = &c->issuers[i];
		if (ic->iss && conf_iss_path(ic->iss, &off, &len, &why) == -EINVAL)
			conf_error(p, ic->line,
			           "[issuer:%s]: iss '%s' is an http(s) URL that relying parties "
			           "cannot discover: %s",
			           ic->name, ic->iss, why);
	}
	if (conf_routes_build(c, on_route_clash, p) == -ENOMEM)
		conf_error(p, 0, "out of memory building the JWKS listener's paths");
}

static void validate(struct parser *p)
{
	struct conf *c = p->conf;

	if (!c->hsm.module)
		conf_error(p, p->hsm_line, "[hsm]: 'module' is required");
	if (!c->hsm.token)
		conf_error(p, p->hsm_line, "[hsm]: 'token' is required");
	if (!c->hsm.pin_file) {
		const char *dir = getenv("CREDENTIALS_DIRECTORY");
		if (dir && *dir) {
			if (asprintf(&c->hsm.pin_file, "%s/hsm-pin", dir) < 0)
				c->hsm.pin_file = NULL;
		} else {
			conf_error(p, p->hsm_line,
			           "[hsm]: 'pin-file' is not set and $CREDENTIALS_DIRECTORY is not "
			           "set either");
		}
	}
	if (!c->sign.path)
		conf_error(p, p->sign_line, "[sign]: 'socket' is required");
	if (p->admin_line && !c->admin.path)
		conf_error(p, p->admin_line, "[admin]: 'socket' is required");
	if (c->sign.path && c->admin.path && strcmp(c->sign.path, c->admin.path) == 0)
		conf_error(p, p->admin_line, "[admin]: socket is the same path as [sign] socket");
	if (c->jwks.n_listen == 0)
		conf_error(p, p->jwks_line, "[jwks]: at least one 'listen' is required");
	if (!p->max_age_set)
		c->jwks.max_age = 300;
	validate_metrics(p);
	/* h14-tls */
	validate_tls(p, &c->jwks.tls, "jwks", p->jwks_line);
	validate_tls(p, &c->metrics.tls, "metrics", p->metrics_line);
	if (c->n_issuers == 0)
		conf_error(p, 0, "no [issuer:NAME] section: nothing to sign for");
	for (size_t i = 0; i < c->n_issuers; i++)
		validate_issuer(p, &c->issuers[i]);
	validate_routes(p); /* h14-discovery */
}

int conf_load(const char *path, struct conf **ret, struct conf_errors *errs)
{
	struct parser p = {.path = path, .errs = errs};
	size_t before = errs->n;
	int r;

	p.f = fopen(path, "re");
	if (!p.f) {
		r = -errno;
		conf_error(&p, 0, "cannot open: %s", strerror(-r));
		return r;
	}
	struct stat st;
	if (fstat(fileno(p.f), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(p.f);
		conf_error(&p, 0, "cannot read: %s", strerror(EISDIR));
		return -EISDIR;
	}
	p.conf = calloc(1, sizeof(*p.conf));
	if (!p.conf) {
		fclose(p.f);
		return -ENOMEM;
	}
	p.conf->sign.mode = 0660;
	p.conf->admin.mode = 0660;
	/* docs/design.md, "Privilege separation": a worker and its helper on one CPU. */
	p.conf->hsm.pin_cpus = true;
	/* As long as the idle timeouts: a keep-alive client sees no change. */
	p.conf->sign.request_timeout = 60;
	p.conf->admin.request_timeout = 60;
	p.conf->jwks.request_timeout = 30;
	/* libinih's knobs are process globals; we are its only user. */
	ini_allow_multiline = false;
	ini_stop_on_first_error = false;
	ini_use_stack = false;
	ini_max_line = CONF_MAX_LINE;
	ini_initial_alloc = CONF_MAX_LINE;
	r = ini_parse_stream(read_line, &p, on_value, &p);
	if (r > 0 && errs->n == before)
		conf_error(&p, (unsigned)r, "syntax error");
	else if (r < 0)
		conf_error(&p, 0, "cannot parse: %s", r == -2 ? "out of memory" : "read error");
	validate(&p);
	fclose(p.f);
	free(p.buf);
	free(p.section);
	for (size_t i = 0; i < p.n_seen; i++) {
		free(p.seen[i].section);
		free(p.seen[i].name);
	}
	free(p.seen);
	if (errs->n != before) {
		conf_free(p.conf);
		return -EINVAL;
	}
	*ret = p.conf;
	return 0;
}

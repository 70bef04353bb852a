/* Unit tests of lib/conf.c (tokensignd.conf(5)): typed values and defaults of a valid file, then
 * one case per configuration error, each named by file, line and reason. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <unistd.h>

#include "conf.h"
#include "conf_routes.h" /* h14-discovery */
#include "unit.h"

/* A minimal valid file. Cases replace one of its lines; the L_ names are its line numbers. */
static const char *const base[] = {
    "[hsm]",                                    /* 1 */
    "module = /usr/lib/softhsm/libsofthsm2.so", /* 2 */
    "token = tokensign",                        /* 3 */
    "pin-file = /etc/tokensign/hsm-pin",        /* 4 */
    "",                                         /* 5 */
    "[sign]",                                   /* 6 */
    "socket = /run/tokensignd/sign.sock",       /* 7 */
    "",                                         /* 8 */
    "[admin]",                                  /* 9 */
    "socket = /run/tokensignd/admin.sock",      /* 10 */
    "",                                         /* 11 */
    "[jwks]",                                   /* 12 */
    "listen = 127.0.0.1:8080",                  /* 13 */
    "",                                         /* 14 */
    "[issuer:main]",                            /* 15 */
    "iss = https://login.example.com/main",     /* 16 */
    "allow = *",                                /* 17 */
};
enum {
	L_HSM = 1,
	L_MODULE = 2,
	L_TOKEN = 3,
	L_PIN = 4,
	L_HSM_FREE = 5,
	L_SIGN = 6,
	L_SIGN_SOCKET = 7,
	L_SIGN_FREE = 8,
	L_ADMIN = 9,
	L_ADMIN_SOCKET = 10,
	L_ADMIN_FREE = 11,
	L_JWKS = 12,
	L_LISTEN = 13,
	L_JWKS_FREE = 14,
	L_ISSUER = 15,
	L_ISS = 16,
	L_ALLOW = 17,
	L_END = 18, /* a line appended at the end, inside [issuer:main] */
	N_BASE = 17,
};

static char path[64];

static void write_file(const char *text, size_t len)
{
	int fd;

	strcpy(path, "/tmp/tokensign-test-conf-XXXXXX");
	fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		abort();
	CHECK_INT(write(fd, text, len), (long long)len);
	close(fd);
}

/* The base file with line `line` replaced by `text` (which may hold several lines), or with
 * `text` appended when line is L_END. Returns a malloc'd string. */
static char *base_with(unsigned line, const char *text)
{
	size_t cap = 8192 + (text ? strlen(text) : 0), len = 0;
	char *s = malloc(cap);

	if (!s)
		abort();
	for (unsigned i = 1; i <= N_BASE; i++)
		len += (size_t)snprintf(s + len, cap - len, "%s\n", i == line ? text : base[i - 1]);
	if (line == L_END)
		len += (size_t)snprintf(s + len, cap - len, "%s\n", text);
	return s;
}

static void dump_errors(const struct conf_errors *e)
{
	for (size_t i = 0; i < e->n; i++)
		fprintf(stderr, "    error[%zu]: %s\n", i, e->msgs[i]);
}

/* True when some message is "PATH:LINE: ..." (or "PATH: ..." for line 0) containing word. */
static bool has_error(const struct conf_errors *e, unsigned line, const char *word)
{
	char prefix[128];

	if (line)
		snprintf(prefix, sizeof(prefix), "%s:%u: ", path, line);
	else
		snprintf(prefix, sizeof(prefix), "%s: ", path);
	for (size_t i = 0; i < e->n; i++)
		if (strncmp(e->msgs[i], prefix, strlen(prefix)) == 0 &&
		    strcasestr(e->msgs[i] + strlen(prefix), word))
			return true;
	return false;
}

/* Loads text and expects failure with exactly n_errors messages, one of them at line with word. */
static void expect_errors_at(const char *caller, int caller_line, const char *text, size_t len,
                             unsigned line, const char *word, size_t n_errors)
{
	struct conf *c = (struct conf *)&path; /* a sentinel: must stay untouched */
	struct conf_errors e = {0};
	int r;
	unsigned before = unit_failures;

	write_file(text, len);
	r = conf_load(path, &c, &e);
	CHECK_INT(r, -EINVAL);
	CHECK(c == (struct conf *)&path);
	CHECK(has_error(&e, line, word));
	CHECK_INT(e.n, n_errors);
	if (unit_failures != before) {
		fprintf(stderr, "    ^ case at %s:%d (expected line %u, \"%s\")\n", caller,
		        caller_line, line, word);
		dump_errors(&e);
	}
	if (r == 0 && c != (struct conf *)&path)
		conf_free(c);
	conf_errors_clear(&e);
	unlink(path);
}

#define EXPECT_TEXT(text, line, word, n)                                                           \
	expect_errors_at(__FILE__, __LINE__, (text), strlen(text), (line), (word), (n))

/* Replaces base line `at` with `text` and expects the error at `line`. */
#define EXPECT(at, text, line, word, n)                                                            \
	do {                                                                                       \
		char *unit_s_ = base_with((at), (text));                                           \
		EXPECT_TEXT(unit_s_, (line), (word), (n));                                         \
		free(unit_s_);                                                                     \
	} while (0)

/* Loads text, expecting success. The caller conf_free()s. */
static struct conf *load_ok(const char *text)
{
	struct conf *c = NULL;
	struct conf_errors e = {0};
	int r;

	write_file(text, strlen(text));
	r = conf_load(path, &c, &e);
	CHECK_INT(r, 0);
	CHECK_INT(e.n, 0);
	if (r != 0 || e.n) {
		dump_errors(&e);
		fprintf(stderr, "    file:\n%s\n", text);
	}
	conf_errors_clear(&e);
	unlink(path);
	return r == 0 ? c : NULL;
}

static void check_v4(const struct listen_conf *l, const char *text, const char *ip, uint16_t port)
{
	const struct sockaddr_in *a = (const struct sockaddr_in *)&l->addr;
	char buf[INET_ADDRSTRLEN] = "";

	CHECK_STR(l->text, text);
	CHECK_INT(a->sin_family, AF_INET);
	CHECK_INT(l->addr_len, sizeof(struct sockaddr_in));
	CHECK_INT(ntohs(a->sin_port), port);
	inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
	CHECK_STR(buf, ip);
}

static void check_v6(const struct listen_conf *l, const char *text, const char *ip, uint16_t port)
{
	const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&l->addr;
	char buf[INET6_ADDRSTRLEN] = "";

	CHECK_STR(l->text, text);
	CHECK_INT(a->sin6_family, AF_INET6);
	CHECK_INT(l->addr_len, sizeof(struct sockaddr_in6));
	CHECK_INT(ntohs(a->sin6_port), port);
	inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
	CHECK_STR(buf, ip);
}

static const char full[] = "; tokensignd configuration used by the unit tests\n" /* 1 */
                           "# a comment of the other kind\n"                     /* 2 */
                           "[hsm]\n"                                             /* 3 */
                           "module   = /usr/lib/softhsm/libsofthsm2.so   ; PKCS#11 module path\n"
                           "token    = pkcs11:token=tokensign\n"
                           "pin-file = /etc/tokensign/hsm-pin\n"
                           "\n"
                           "[sign]\n" /* 8 */
                           "socket = /run/tokensignd/sign.sock\n"
                           "group  = root\n"
                           "\n"
                           "[admin]\n" /* 12 */
                           "socket = /run/tokensignd/admin.sock\n"
                           "mode   = 0600\n"
                           "group  = root\n"
                           "\n"
                           "[jwks]\n" /* 17 */
                           "listen     = 127.0.0.1:8080\n"
                           "listen     = [::1]:8443\n"
                           "public-url = https://keys.example.com/\n"
                           "\n"
                           "[issuer:main]\n" /* 22 */
                           "iss   = https://login.example.com/main\n"
                           "allow = user:root, group:root, uid:1234, gid:5678, *\n"
                           "\n"
                           "[issuer:svc-2]\n" /* 26 */
                           "iss             = https://login.example.com/svc\n"
                           "algorithm       = ES256\n"
                           "rotation-period = 7d\n"
                           "prepublish      = 2h\n"
                           "token-ttl       = 5min\n"
                           "max-token-ttl   = 30m\n"
                           "audiences       = api://orders, api://billing\n"
                           "token-types     = at+jwt,JWT\n"
                           "allow           = uid:1234 ; who may sign\n";

static void test_full(void)
{
	struct conf *c;
	const struct issuer_conf *m, *s;

	unsetenv("CREDENTIALS_DIRECTORY");
	c = load_ok(full);
	if (!c)
		return;
	CHECK_STR(c->hsm.module, "/usr/lib/softhsm/libsofthsm2.so");
	CHECK_STR(c->hsm.token, "pkcs11:token=tokensign");
	CHECK_STR(c->hsm.pin_file, "/etc/tokensign/hsm-pin");

	CHECK_STR(c->sign.path, "/run/tokensignd/sign.sock");
	CHECK_INT(c->sign.mode, 0660); /* default */
	CHECK(c->sign.has_group);
	CHECK_INT(c->sign.gid, 0);
	CHECK_STR(c->admin.path, "/run/tokensignd/admin.sock");
	CHECK_INT(c->admin.mode, 0600);
	CHECK(c->admin.has_group);
	CHECK_INT(c->admin.gid, 0);

	CHECK_INT(c->jwks.n_listen, 2);
	if (c->jwks.n_listen == 2) {
		check_v4(&c->jwks.listen[0], "127.0.0.1:8080", "127.0.0.1", 8080);
		check_v6(&c->jwks.listen[1], "[::1]:8443", "::1", 8443);
	}
	CHECK_U64(c->jwks.max_age, 300); /* default */
	CHECK_STR(c->jwks.public_url, "https://keys.example.com");

	CHECK_INT(c->n_issuers, 2);
	if (c->n_issuers != 2)
		goto out;
	m = &c->issuers[0];
	CHECK_STR(m->name, "main");
	CHECK_INT(m->line, 22);
	CHECK_STR(m->iss, "https://login.example.com/main");
	CHECK_INT(m->alg, JWS_ES256);
	CHECK_U64(m->rotation_period, 30 * 86400);
	CHECK_U64(m->prepublish, 86400);
	CHECK_U64(m->token_ttl, 15 * 60);
	CHECK_U64(m->max_token_ttl, 3600);
	CHECK(m->audiences == NULL);
	CHECK_INT(m->n_audiences, 0);
	CHECK_INT(m->n_token_types, 1);
	if (m->n_token_types == 1)
		CHECK_STR(m->token_types[0], "JWT");
	CHECK_INT(m->n_allow, 5);
	if (m->n_allow == 5) {
		CHECK_INT(m->allow[0].kind, ALLOW_UID);
		CHECK_INT(m->allow[0].id, 0);
		CHECK_INT(m->allow[1].kind, ALLOW_GID);
		CHECK_INT(m->allow[1].id, 0);
		CHECK_INT(m->allow[2].kind, ALLOW_UID);
		CHECK_INT(m->allow[2].id, 1234);
		CHECK_INT(m->allow[3].kind, ALLOW_GID);
		CHECK_INT(m->allow[3].id, 5678);
		CHECK_INT(m->allow[4].kind, ALLOW_ANY);
	}

	s = &c->issuers[1];
	CHECK_STR(s->name, "svc-2");
	CHECK_INT(s->line, 26);
	CHECK_STR(s->iss, "https://login.example.com/svc");
	CHECK_INT(s->alg, JWS_ES256);
	CHECK_U64(s->rotation_period, 7 * 86400);
	CHECK_U64(s->prepublish, 7200);
	CHECK_U64(s->token_ttl, 300);
	CHECK_U64(s->max_token_ttl, 1800);
	CHECK_INT(s->n_audiences, 2);
	if (s->n_audiences == 2) {
		CHECK_STR(s->audiences[0], "api://orders");
		CHECK_STR(s->audiences[1], "api://billing");
	}
	CHECK_INT(s->n_token_types, 2);
	if (s->n_token_types == 2) {
		CHECK_STR(s->token_types[0], "at+jwt");
		CHECK_STR(s->token_types[1], "JWT");
	}
	CHECK_INT(s->n_allow, 1);
	if (s->n_allow == 1) {
		CHECK_INT(s->allow[0].kind, ALLOW_UID);
		CHECK_INT(s->allow[0].id, 1234);
	}

	/* Lookups. */
	CHECK(conf_find_issuer(c, "main", 4) == m);
	CHECK(conf_find_issuer(c, "svc-2", 5) == s);
	CHECK(conf_find_issuer(c, "svc-2/sign", 5) == s); /* name is len bytes, not NUL-ended */
	CHECK(conf_find_issuer(c, "mainx", 4) == m);
	CHECK(conf_find_issuer(c, "mai", 3) == NULL);
	CHECK(conf_find_issuer(c, "mainx", 5) == NULL);
	CHECK(conf_find_issuer(c, "MAIN", 4) == NULL);
	CHECK(conf_find_issuer(c, "", 0) == NULL);

	/* The issuer's own copy, which a signing request keeps (policy.c). */
	CHECK(issuer_typ_find(m, "JWT") == m->token_types[0]);
	CHECK(issuer_typ_find(m, "at+jwt") == NULL);
	CHECK(issuer_typ_find(m, "jwt") == NULL);
	CHECK(issuer_typ_find(s, "at+jwt") == s->token_types[0]);
	CHECK(issuer_typ_find(s, "JWT") == s->token_types[1]);
	CHECK(issuer_typ_find(s, "AT+JWT") == NULL);
	CHECK(issuer_typ_find(s, "") == NULL);

	CHECK(issuer_aud_allowed(m, "anything"));
	CHECK(issuer_aud_allowed(s, "api://orders"));
	CHECK(issuer_aud_allowed(s, "api://billing"));
	CHECK(!issuer_aud_allowed(s, "api://order"));
	CHECK(!issuer_aud_allowed(s, "api://orders "));
	CHECK(!issuer_aud_allowed(s, "API://ORDERS"));
	CHECK(!issuer_aud_allowed(s, ""));
out:
	conf_free(c);
}

static void test_connection_caps(void)
{
	char *text = base_with(L_SIGN_FREE, "max-connections = 300");
	struct conf *c = load_ok(text);

	if (c) {
		CHECK_INT(c->sign.max_connections, 300);
		CHECK_INT(c->admin.max_connections, 0); /* derived */
		CHECK_INT(c->jwks.max_connections, 0);
		CHECK_INT(c->jwks.max_per_address, 0);  /* the default */
		CHECK_U64(c->sign.request_timeout, 60); /* defaults */
		CHECK_U64(c->admin.request_timeout, 60);
		CHECK_U64(c->jwks.request_timeout, 30);
	}
	conf_free(c);
	free(text);
	text = base_with(L_JWKS_FREE, "max-connections = 2000\nmax-connections-per-address = 8\n"
	                              "request-timeout = 5s");
	c = load_ok(text);
	if (c) {
		CHECK_INT(c->jwks.max_connections, 2000);
		CHECK_INT(c->jwks.max_per_address, 8);
		CHECK_U64(c->jwks.request_timeout, 5);
	}
	conf_free(c);
	free(text);
}

/* A commented configuration in the shape of tokensignd.conf(5), EXAMPLE, and
 * config/tokensignd.conf (a comment after each value), using names that exist on any system. */
static void test_spec_example(void)
{
	static const char spec[] =
	    "[hsm]\n"
	    "module   = /usr/lib/softhsm/libsofthsm2.so   ; PKCS#11 module path\n"
	    "token    = tokensign                          ; token label, or an RFC 7512 URI "
	    "\"pkcs11:token=...\"\n"
	    "pin-file = /run/credentials/tokensignd.service/hsm-pin  ; default: "
	    "$CREDENTIALS_DIRECTORY/hsm-pin\n"
	    "\n"
	    "[sign]\n"
	    "socket = /run/tokensignd/sign.sock           ; HTTP/1.1 over this Unix socket\n"
	    "mode   = 0660\n"
	    "group  = root                   ; optional: group owner of the socket file\n"
	    "\n"
	    "[admin]\n"
	    "socket = /run/tokensignd/admin.sock          ; keyrotate talks here\n"
	    "mode   = 0660\n"
	    "group  = root                     ; callers: uid 0, the daemon's own uid, members of "
	    "this group\n"
	    "\n"
	    "[jwks]\n"
	    "listen     = 127.0.0.1:8080                  ; host:port, [v6]:port; may be given "
	    "more than once\n"
	    "max-age    = 5m                              ; Cache-Control max-age of JWKS "
	    "responses\n"
	    "public-url = https://keys.example.com        ; optional base of jwks_uri; default: "
	    "from the request's Host\n"
	    "cors-origins = https://app.example.com       ; optional: list, or *; default: no "
	    "CORS headers\n"
	    "health     = no                              ; yes: also serve /healthz and /readyz "
	    "here (for load balancers)\n"
	    "\n"
	    "[issuer:main]                                ; one section per issuer; NAME is "
	    "[a-z0-9-]{1,32}\n"
	    "iss             = https://login.example.com/main  ; the only iss this issuer's keys "
	    "sign\n"
	    "algorithm       = ES256                      ; ES256 ES384 RS256 PS256 EdDSA\n"
	    "rotation-period = 30d                        ; how long a key is the active key\n"
	    "prepublish      = 1d                         ; how long a key is in the JWKS before "
	    "it signs; must be >= jwks max-age\n"
	    "token-ttl       = 15m                        ; exp when the caller gives none\n"
	    "max-token-ttl   = 1h                         ; exp beyond now+this is refused\n"
	    "audiences       = api://orders, api://billing ; optional allow-list for aud\n"
	    "token-types     = JWT, at+jwt                ; allowed typ values; first is the "
	    "default (default: JWT)\n"
	    "allow           = user:root, group:root ; who may sign for this issuer: user:, "
	    "group:, uid:, gid:, or * \n";
	struct conf *c = load_ok(spec);

	if (!c)
		return;
	CHECK_STR(c->hsm.token, "tokensign");
	CHECK_STR(c->hsm.pin_file, "/run/credentials/tokensignd.service/hsm-pin");
	CHECK_INT(c->sign.mode, 0660);
	CHECK_U64(c->jwks.max_age, 300);
	CHECK_STR(c->jwks.public_url, "https://keys.example.com");
	CHECK_INT(c->jwks.n_cors_origins, 1);
	if (c->jwks.n_cors_origins == 1)
		CHECK_STR(c->jwks.cors_origins[0], "https://app.example.com");
	CHECK(!c->jwks.health);
	CHECK_INT(c->n_issuers, 1);
	if (c->n_issuers == 1) {
		CHECK_STR(c->issuers[0].iss, "https://login.example.com/main");
		CHECK_INT(c->issuers[0].n_audiences, 2);
		CHECK_INT(c->issuers[0].n_token_types, 2);
		CHECK_INT(c->issuers[0].n_allow, 2);
		if (c->issuers[0].n_audiences == 2)
			CHECK_STR(c->issuers[0].audiences[1], "api://billing");
		if (c->issuers[0].n_token_types == 2)
			CHECK_STR(c->issuers[0].token_types[1], "at+jwt");
	}
	conf_free(c);
}

static void test_credentials_directory(void)
{
	char *text = base_with(L_PIN, "");
	struct conf *c;

	unsetenv("CREDENTIALS_DIRECTORY");
	EXPECT_TEXT(text, L_HSM, "CREDENTIALS_DIRECTORY", 1);
	setenv("CREDENTIALS_DIRECTORY", "", 1);
	EXPECT_TEXT(text, L_HSM, "pin-file", 1);
	setenv("CREDENTIALS_DIRECTORY", "/run/credentials/tokensignd.service", 1);
	c = load_ok(text);
	if (c)
		CHECK_STR(c->hsm.pin_file, "/run/credentials/tokensignd.service/hsm-pin");
	conf_free(c);
	/* An explicit pin-file wins over the credentials directory. */
	free(text);
	text = base_with(L_HSM_FREE, "");
	c = load_ok(text);
	if (c)
		CHECK_STR(c->hsm.pin_file, "/etc/tokensign/hsm-pin");
	conf_free(c);
	unsetenv("CREDENTIALS_DIRECTORY");
	free(text);
}

static void test_long_lines(void)
{
	char *line = malloc(6000), *text;
	struct conf *c;

	if (!line)
		abort();
	/* 5000 characters: refused with the line's number. */
	strcpy(line, "module = /");
	memset(line + 10, 'a', 4990);
	line[5000] = '\0';
	EXPECT(L_MODULE, line, L_MODULE, "long", 2); /* + module is required */
	/* The same under an unknown key: the length is what is reported. */
	memcpy(line, "zzzzzz", 6);
	EXPECT(L_HSM_FREE, line, L_HSM_FREE, "long", 1);

	/* Long but legal lines load: an iss of 512 characters (the documented maximum). */
	strcpy(line, "iss = https://login.example.com/");
	memset(line + strlen(line), 'a', 512 - strlen("https://login.example.com/"));
	line[6 + 512] = '\0';
	text = base_with(L_ISS, line);
	c = load_ok(text);
	if (c && c->n_issuers == 1)
		CHECK_INT(strlen(c->issuers[0].iss), 512);
	conf_free(c);
	free(text);
	/* 513 characters: refused because of the iss limit, not the line length. */
	strcpy(line, "iss = https://login.example.com/");
	memset(line + strlen(line), 'a', 513 - strlen("https://login.example.com/"));
	line[6 + 513] = '\0';
	EXPECT(L_ISS, line, L_ISS, "512", 2); /* and then 'iss' is required */

	/* An audiences list of about 3000 characters. */
	strcpy(line, "audiences = ");
	for (int i = 0; i < 150; i++)
		sprintf(line + strlen(line), "%sapi://aud-%04d", i ? ", " : "", i);
	text = base_with(L_END, line);
	c = load_ok(text);
	if (c && c->n_issuers == 1) {
		CHECK_INT(c->issuers[0].n_audiences, 150);
		if (c->issuers[0].n_audiences == 150)
			CHECK_STR(c->issuers[0].audiences[149], "api://aud-0149");
	}
	conf_free(c);
	free(text);
	free(line);
}

static void test_errors_sections(void)
{
	EXPECT(L_JWKS_FREE, "[bogus]", L_JWKS_FREE, "unknown section", 1);
	/* Keys under an unknown section are not reported again. */
	EXPECT(L_JWKS_FREE, "[bogus]\nfoo = 1\nbar = 2", L_JWKS_FREE, "unknown section", 1);
	EXPECT(L_JWKS_FREE, "[issuer]", L_JWKS_FREE, "section", 1);
	EXPECT(L_JWKS_FREE, "[HSM]", L_JWKS_FREE, "unknown section", 1);
	EXPECT(L_JWKS_FREE, "[sign]", L_JWKS_FREE, "repeated", 1);
	EXPECT(L_END, "[issuer:main]", L_END, "repeated", 1);
	EXPECT(L_JWKS_FREE, "[hsm", L_JWKS_FREE, "section", 1);

	EXPECT(L_ISSUER, "[issuer:Main]", L_ISSUER, "issuer name", 2); /* + no issuer */
	EXPECT(L_ISSUER, "[issuer:]", L_ISSUER, "issuer name", 2);
	EXPECT(L_ISSUER, "[issuer:a_b]", L_ISSUER, "issuer name", 2);
	EXPECT(L_ISSUER, "[issuer:a.b]", L_ISSUER, "issuer name", 2);
	EXPECT(L_ISSUER, "[issuer:abcdefghijklmnopqrstuvwxyz0123456]", L_ISSUER, "issuer name", 2);
	{
		/* 32 characters is the longest legal name. */
		struct conf *c;
		char *t = base_with(L_ISSUER, "[issuer:abcdefghijklmnopqrstuvwxyz-01234]");
		c = load_ok(t);
		if (c && c->n_issuers == 1)
			CHECK_STR(c->issuers[0].name, "abcdefghijklmnopqrstuvwxyz-01234");
		conf_free(c);
		free(t);
	}

	{
		/* No issuer at all: the three issuer lines blank. */
		char *t = base_with(L_ISSUER, "");
		char *p = strstr(t, "iss = ");
		memset(p, ' ', strlen("iss = https://login.example.com/main"));
		p = strstr(t, "allow = *");
		memset(p, ' ', strlen("allow = *"));
		EXPECT_TEXT(t, 0, "no [issuer", 1);
		free(t);
	}
}

static void test_errors_keys(void)
{
	/* Unknown key in each kind of section. */
	EXPECT(L_HSM_FREE, "slot = 1", L_HSM_FREE, "unknown key", 1);
	EXPECT(L_HSM_FREE, "session-copies = on", L_HSM_FREE, "session-copies", 1);
	{
		char *t = base_with(L_HSM_FREE, "session-copies = yes");
		struct conf *c = load_ok(t);
		CHECK(c && c->hsm.session_copies);
		conf_free(c);
		free(t);
		t = base_with(L_HSM_FREE, "");
		c = load_ok(t);
		CHECK(c && !c->hsm.session_copies);
		conf_free(c);
		free(t);
	}
	EXPECT(L_SIGN_FREE, "owner = root", L_SIGN_FREE, "unknown key", 1);
	/* [sign] audit: best-effort (default) or required; only in [sign]. */
	EXPECT(L_SIGN_FREE, "audit = yes", L_SIGN_FREE, "best-effort or required", 1);
	EXPECT(L_SIGN_FREE, "audit = Required", L_SIGN_FREE, "best-effort or required", 1);
	EXPECT(L_ADMIN_FREE, "audit = required", L_ADMIN_FREE, "unknown key", 1);
	{
		char *t = base_with(L_SIGN_FREE, "audit = required");
		struct conf *c = load_ok(t);
		CHECK(c && c->audit == CONF_AUDIT_REQUIRED);
		conf_free(c);
		free(t);
		t = base_with(L_SIGN_FREE, "audit = best-effort");
		c = load_ok(t);
		CHECK(c && c->audit == CONF_AUDIT_BEST_EFFORT);
		conf_free(c);
		free(t);
		t = base_with(L_SIGN_FREE, "");
		c = load_ok(t);
		CHECK(c && c->audit == CONF_AUDIT_BEST_EFFORT);
		conf_free(c);
		free(t);
	}
	EXPECT(L_ADMIN_FREE, "listen = 127.0.0.1:1", L_ADMIN_FREE, "unknown key", 1);
	EXPECT(L_JWKS_FREE, "max_age = 5m", L_JWKS_FREE, "unknown key", 1);
	EXPECT(L_END, "alg = ES256", L_END, "unknown key", 1);
	EXPECT(L_END, "Iss = https://x", L_END, "unknown key", 1);

	/* A key set twice, in a fixed section and in an issuer. */
	EXPECT(L_TOKEN, "token = a\ntoken = b", L_TOKEN + 1, "twice", 1);
	EXPECT(L_END, "iss = https://login.example.com/other", L_END, "twice", 1);
	EXPECT(L_SIGN_FREE, "mode = 0600\nmode = 0660", L_SIGN_FREE + 1, "twice", 1);
	/* ...but the same key in two issuers is fine, and listen may repeat (test_full). */

	/* Lines that are not name = value. */
	EXPECT(L_HSM_FREE, "module /usr/lib/x.so", L_HSM_FREE, "name = value", 1);
	EXPECT(L_HSM_FREE, "slot: 1", L_HSM_FREE, "name = value", 1);
	EXPECT(L_HSM_FREE, "= 1", L_HSM_FREE, "name = value", 1);
	/* A value before any section: + module, token, pin-file, sign, listen, issuer. */
	EXPECT_TEXT("token = x\n[hsm]\n", 1, "before any section", 7);
}

static void test_errors_values(void)
{
	/* Durations. */
	EXPECT(L_END, "token-ttl = 15", L_END, "duration", 1);
	EXPECT(L_END, "rotation-period = 1.5d", L_END, "duration", 1);
	EXPECT(L_END, "prepublish = 0s", L_END, "duration", 1);
	EXPECT(L_JWKS_FREE, "max-age = 5 m", L_JWKS_FREE, "duration", 1);
	EXPECT(L_END, "rotation-period = 3661d", L_END, "10 years", 1);
	EXPECT(L_END, "max-token-ttl = 99999999999999999999s", L_END, "10 years", 1);

	/* Socket sections. */
	EXPECT(L_SIGN_FREE, "mode = 0999", L_SIGN_FREE, "mode", 1);
	EXPECT(L_SIGN_FREE, "mode = 01777", L_SIGN_FREE, "mode", 1);
	EXPECT(L_SIGN_FREE, "mode = rw-rw----", L_SIGN_FREE, "mode", 1);
	EXPECT(L_ADMIN_FREE, "mode =", L_ADMIN_FREE, "mode", 1);
	EXPECT(L_SIGN_FREE, "group = no-such-group-tokensign", L_SIGN_FREE, "no such group", 1);
	EXPECT(L_ADMIN_FREE, "group = no-such-group-tokensign", L_ADMIN_FREE, "no such group", 1);
	EXPECT(L_SIGN_SOCKET, "socket = run/sign.sock", L_SIGN_SOCKET, "absolute", 2);
	EXPECT(L_ADMIN_SOCKET, "socket = ./admin.sock", L_ADMIN_SOCKET, "absolute", 2);
	EXPECT(L_ADMIN_SOCKET, "socket = /run/tokensignd/sign.sock", L_ADMIN, "same", 1);
	EXPECT(L_SIGN_FREE, "max-connections = 0", L_SIGN_FREE, "max-connections", 1);
	EXPECT(L_SIGN_FREE, "request-timeout = 2h", L_SIGN_FREE, "request-timeout", 1);
	EXPECT(L_JWKS_FREE, "request-timeout = 30", L_JWKS_FREE, "duration", 1);
	EXPECT(L_ADMIN_FREE, "max-connections = many", L_ADMIN_FREE, "max-connections", 1);
	EXPECT(L_JWKS_FREE, "max-connections = 1000001", L_JWKS_FREE, "max-connections", 1);
	EXPECT(L_JWKS_FREE, "max-connections-per-address = -1", L_JWKS_FREE,
	       "max-connections-per-address", 1);

	/* listen: each also leaves [jwks] without a listen. */
	EXPECT(L_LISTEN, "listen = 127.0.0.1", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = 127.0.0.1:", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = 127.0.0.1:0", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = 127.0.0.1:70000", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = 127.0.0.1:65536", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = 127.0.0.1:-80", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = localhost:8080", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = keys.example.com:443", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = :8080", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = ::1:8080", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = [::1]", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = [::1]8080", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = [127.0.0.1]:8080", L_LISTEN, "listen", 2);
	EXPECT(L_LISTEN, "listen = 256.0.0.1:8080", L_LISTEN, "listen", 2);
	{
		/* Port 65535 and a second listen are fine. */
		char *t = base_with(L_JWKS_FREE, "listen = [::]:65535");
		struct conf *c = load_ok(t);
		if (c) {
			CHECK_INT(c->jwks.n_listen, 2);
			if (c->jwks.n_listen == 2)
				check_v6(&c->jwks.listen[1], "[::]:65535", "::", 65535);
		}
		conf_free(c);
		free(t);
	}

	EXPECT(L_JWKS_FREE, "public-url = ftp://keys.example.com", L_JWKS_FREE, "public-url", 1);
	EXPECT(L_JWKS_FREE, "public-url = keys.example.com", L_JWKS_FREE, "public-url", 1);
	EXPECT(L_JWKS_FREE, "public-url = https://keys.example.com/a b", L_JWKS_FREE, "public-url",
	       1);
	EXPECT(L_JWKS_FREE, "public-url = https://", L_JWKS_FREE, "public-url", 1); /* no host */
	EXPECT(L_JWKS_FREE, "public-url = https:///", L_JWKS_FREE, "public-url", 1);

	/* Issuer values. */
	EXPECT(L_END, "algorithm = HS256", L_END, "HS256", 1);
	EXPECT(L_END, "algorithm = es256", L_END, "algorithm", 1);
	EXPECT(L_END, "algorithm = none", L_END, "algorithm", 1);
	{
		/* Every JOSE algorithm of tokensignd.conf(5) (algorithm); RSA gets 2048 bits and
		 * the self-check by default. */
		static const struct {
			const char *name;
			enum jws_alg alg;
			unsigned bits;
			int check;
		} algs[] = {{"ES256", JWS_ES256, 0, 0},
		            {"ES384", JWS_ES384, 0, 0},
		            {"RS256", JWS_RS256, 2048, 1},
		            {"PS256", JWS_PS256, 2048, 1},
		            {"EdDSA", JWS_EDDSA, 0, 0}};
		for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
			char line[64], *t;
			struct conf *c;
			snprintf(line, sizeof(line), "algorithm = %s", algs[i].name);
			t = base_with(L_END, line);
			c = load_ok(t);
			if (c) {
				const struct issuer_conf *ic = conf_find_issuer(c, "main", 4);
				CHECK(ic != NULL);
				if (ic) {
					CHECK_INT(ic->alg, algs[i].alg);
					CHECK_INT(ic->key_size, algs[i].bits);
					CHECK_INT(ic->self_check, algs[i].check);
				}
				conf_free(c);
			}
			free(t);
		}
	}
	{
		struct conf *c;
		char *t = base_with(L_END, "algorithm = PS256\nkey-size = 4096\nself-check = no");
		c = load_ok(t);
		if (c) {
			const struct issuer_conf *ic = conf_find_issuer(c, "main", 4);
			CHECK(ic && ic->key_size == 4096 && ic->self_check == 0);
			conf_free(c);
		}
		free(t);
		t = base_with(L_END, "algorithm = EdDSA\nself-check = yes");
		c = load_ok(t);
		if (c) {
			const struct issuer_conf *ic = conf_find_issuer(c, "main", 4);
			CHECK(ic && ic->key_size == 0 && ic->self_check == 1);
			conf_free(c);
		}
		free(t);
	}
	/* RSA below 2048 bits, odd sizes, sizes for curves, bad self-check values. */
	EXPECT(L_END, "algorithm = RS256\nkey-size = 1024", L_END + 1, "below 2048", 1);
	EXPECT(L_END, "algorithm = RS256\nkey-size = 2047", L_END + 1, "below 2048", 1);
	EXPECT(L_END, "algorithm = RS256\nkey-size = 2500", L_END + 1, "key-size", 1);
	EXPECT(L_END, "algorithm = RS256\nkey-size = big", L_END + 1, "key-size", 1);
	EXPECT(L_END, "algorithm = ES256\nkey-size = 2048", L_END + 1, "RS256 and PS256 only", 1);
	EXPECT(L_END, "key-size = 3072", L_END, "RS256 and PS256 only", 1);
	EXPECT(L_END, "self-check = maybe", L_END, "self-check", 1);
	EXPECT(L_END, "audiences = api://a, , api://b", L_END, "empty item", 1);
	EXPECT(L_END, "audiences = api://a,", L_END, "empty item", 1);
	EXPECT(L_END, "token-types = JWT,,at+jwt", L_END, "empty item", 1);
	EXPECT(L_ALLOW, "allow = *,", L_ALLOW, "empty item", 2); /* + allow is required */
	EXPECT(L_END, "token-types = JWT, not valid", L_END, "token-types", 1);
	EXPECT(L_END, "token-types = JWT, a\"b", L_END, "token-types", 1);

	/* iss goes into every token and into the discovery document: it must be valid UTF-8. */
	EXPECT(L_ISS, "iss = https://login.example.com/\xff", L_ISS, "iss", 2); /* + required */
	EXPECT(L_ISS, "iss = https://login.example.com/\xc3", L_ISS, "iss", 2);
	EXPECT(L_ISS, "iss = https://login.example.com/\ta", L_ISS, "iss", 2);

	/* allow. */
	EXPECT(L_ALLOW, "allow = *, user:no-such-user-tokensign", L_ALLOW, "no such user", 1);
	EXPECT(L_ALLOW, "allow = user:no-such-user-tokensign", L_ALLOW, "no such user", 2);
	EXPECT(L_ALLOW, "allow = *, group:no-such-group-tokensign", L_ALLOW, "no such group", 1);
	EXPECT(L_ALLOW, "allow = *, bob", L_ALLOW, "allow", 1);
	EXPECT(L_ALLOW, "allow = *, uid:abc", L_ALLOW, "allow", 1);
	EXPECT(L_ALLOW, "allow = *, uid:", L_ALLOW, "allow", 1);
	EXPECT(L_ALLOW, "allow = *, gid:-1", L_ALLOW, "allow", 1);
	EXPECT(L_ALLOW, "allow = *, uid:4294967295", L_ALLOW, "allow", 1); /* (uid_t)-1 */
	EXPECT(L_ALLOW, "allow = *, uid:99999999999", L_ALLOW, "allow", 1);
	EXPECT(L_ALLOW, "allow = *, user:", L_ALLOW, "allow", 1);
	EXPECT(L_ALLOW, "allow = *, USER:root", L_ALLOW, "allow", 1);
}

static void test_errors_missing(void)
{
	EXPECT(L_ALLOW, "", L_ISSUER, "allow", 1);
	EXPECT(L_ISS, "", L_ISSUER, "iss", 1);
	EXPECT(L_MODULE, "", L_HSM, "module", 1);
	EXPECT(L_TOKEN, "", L_HSM, "token", 1);
	EXPECT(L_SIGN_SOCKET, "", L_SIGN, "socket", 1);
	EXPECT(L_LISTEN, "", L_JWKS, "listen", 1);
	EXPECT(L_ADMIN_SOCKET, "", L_ADMIN, "socket", 1);
	{
		/* No [sign] section at all: no line to point at. */
		char *t = base_with(L_SIGN, "");
		char *p = strstr(t, "socket = /run/tokensignd/sign.sock");
		memset(p, ' ', strlen("socket = /run/tokensignd/sign.sock"));
		EXPECT_TEXT(t, 0, "[sign]", 1);
		free(t);
	}
}

static void test_errors_cross(void)
{
	/* prepublish against [jwks] max-age: the default max-age is 5m, and an explicit one. */
	EXPECT(L_END, "prepublish = 4m", L_ISSUER, "max-age", 1);
	EXPECT(L_JWKS_FREE, "max-age = 2d", L_ISSUER, "prepublish", 1);
	{
		char *t = base_with(L_END, "prepublish = 5m");
		struct conf *c = load_ok(t); /* equal is enough */
		conf_free(c);
		free(t);
	}
	/* prepublish must be shorter than rotation-period. */
	EXPECT(L_END, "rotation-period = 1d", L_ISSUER, "rotation-period", 1);
	EXPECT(L_END, "rotation-period = 1d\nprepublish = 2d", L_ISSUER, "rotation-period", 1);
	/* token-ttl within max-token-ttl. */
	EXPECT(L_END, "token-ttl = 2h", L_ISSUER, "token-ttl", 1);
	EXPECT(L_END, "max-token-ttl = 10m", L_ISSUER, "max-token-ttl", 1);
	/* Two issuers with the same iss: reported at the second. */
	EXPECT(L_END, "\n[issuer:other]\niss = https://login.example.com/main\nallow = *",
	       L_END + 1, "iss", 1);
	{
		/* A different iss is fine. */
		char *t = base_with(L_END, "\n[issuer:other]\niss = https://login.example.com/o\n"
		                           "allow = *");
		struct conf *c = load_ok(t);
		if (c)
			CHECK_INT(c->n_issuers, 2);
		conf_free(c);
		free(t);
	}
}

static void test_errors_all_reported(void)
{
	static const char text[] = "[hsm]\n"                                    /* 1 */
	                           "module = /usr/lib/softhsm/libsofthsm2.so\n" /* 2 */
	                           "slot = 3\n"                                 /* 3: unknown key */
	                           "[sign]\n"                                   /* 4 */
	                           "socket = /run/s.sock\n"                     /* 5 */
	                           "mode = 0800\n"                              /* 6: bad mode */
	                           "[jwks]\n"                                   /* 7 */
	                           "listen = 127.0.0.1:8080\n"                  /* 8 */
	                           "listen = host:1\n"                          /* 9: bad listen */
	                           "[issuer:main]\n"                            /* 10: no allow */
	                           "iss = https://a\n"                          /* 11 */
	                           "token-ttl = forever\n" /* 12: bad duration */
	                           "[wat]\n";              /* 13: unknown section */
	struct conf_errors e = {0};
	struct conf *c = NULL;

	unsetenv("CREDENTIALS_DIRECTORY");
	write_file(text, strlen(text));
	CHECK_INT(conf_load(path, &c, &e), -EINVAL);
	CHECK(c == NULL);
	CHECK(has_error(&e, 1, "token"));
	CHECK(has_error(&e, 1, "pin-file"));
	CHECK(has_error(&e, 3, "unknown key"));
	CHECK(has_error(&e, 6, "mode"));
	CHECK(has_error(&e, 9, "listen"));
	CHECK(has_error(&e, 10, "allow"));
	CHECK(has_error(&e, 12, "duration"));
	CHECK(has_error(&e, 13, "unknown section"));
	CHECK_INT(e.n, 8);
	if (e.n != 8)
		dump_errors(&e);
	/* A second load appends to errs; it does not drop what was there. */
	CHECK_INT(conf_load(path, &c, &e), -EINVAL);
	CHECK_INT(e.n, 16);
	conf_errors_clear(&e);
	CHECK_INT(e.n, 0);
	CHECK(e.msgs == NULL);
	unlink(path);
}

static void test_nul_and_missing_file(void)
{
	struct conf_errors e = {0};
	struct conf *c = (struct conf *)&path;
	char *t = base_with(L_HSM_FREE, "slot = a?b");
	size_t len = strlen(t);

	/* A NUL byte in a line. */
	*strchr(t, '?') = '\0';
	expect_errors_at(__FILE__, __LINE__, t, len, L_HSM_FREE, "NUL", 1);
	free(t);

	CHECK_INT(conf_load("/nonexistent/tokensign/tokensignd.conf", &c, &e), -ENOENT);
	CHECK(c == (struct conf *)&path);
	CHECK_INT(e.n, 1);
	if (e.n == 1) {
		CHECK(strncmp(e.msgs[0], "/nonexistent/tokensign/tokensignd.conf: ", 40) == 0);
		CHECK(strstr(e.msgs[0], "No such file") != NULL);
	}
	conf_errors_clear(&e);

	/* A directory opens but cannot be read: say so, rather than list every missing key. */
	c = (struct conf *)&path;
	CHECK(conf_load("/", &c, &e) < 0);
	CHECK(c == (struct conf *)&path);
	CHECK_INT(e.n, 1);
	if (e.n >= 1)
		CHECK(strcasestr(e.msgs[0], "directory") != NULL);
	if (e.n != 1)
		dump_errors(&e);
	conf_errors_clear(&e);

	/* An empty file names every required part. */
	EXPECT_TEXT("", 0, "module", 6);
}

/* h14-cors: [jwks] cors-origins and health. Each refusal names the line and the origin. */
static struct conf *load_jwks_line(const char *line)
{
	char *t = base_with(L_JWKS_FREE, line);
	struct conf *c = load_ok(t);

	free(t);
	return c;
}

static void test_cors_origins(void)
{
	struct conf *c =
	    load_jwks_line("cors-origins = https://app.example.com, "
	                   "http://localhost:3000,https://[::1]:8443, http://10.0.0.1");
	if (c) {
		CHECK(!c->jwks.cors_any);
		CHECK_INT(c->jwks.n_cors_origins, 4);
		if (c->jwks.n_cors_origins == 4) {
			CHECK_STR(c->jwks.cors_origins[0], "https://app.example.com");
			CHECK_STR(c->jwks.cors_origins[1], "http://localhost:3000");
			CHECK_STR(c->jwks.cors_origins[2], "https://[::1]:8443");
			CHECK_STR(c->jwks.cors_origins[3], "http://10.0.0.1");
		}
		CHECK(!c->jwks.health); /* default */
	}
	conf_free(c);
	c = load_jwks_line("cors-origins = *");
	CHECK(c && c->jwks.cors_any && c->jwks.n_cors_origins == 0);
	conf_free(c);
	/* Absent: off. Other schemes (an extension's page) are origins too. */
	c = load_jwks_line("");
	CHECK(c && !c->jwks.cors_any && c->jwks.n_cors_origins == 0);
	conf_free(c);
	c = load_jwks_line("cors-origins = chrome-extension://abcdefghijklmnop");
	CHECK(c && c->jwks.n_cors_origins == 1);
	conf_free(c);

	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com/", L_JWKS_FREE,
	       "'https://app.example.com/': an origin has no path, not even a trailing slash", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com/login", L_JWKS_FREE, "no path",
	       1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com:8443/", L_JWKS_FREE, "no path",
	       1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com?x=1", L_JWKS_FREE, "no query",
	       1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://App.example.com", L_JWKS_FREE,
	       "host must be lowercase", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = HTTPS://app.example.com", L_JWKS_FREE,
	       "scheme must be lowercase", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = hTTps://app.example.com", L_JWKS_FREE,
	       "scheme must be lowercase", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://[::ABCD]:8443", L_JWKS_FREE,
	       "host must be lowercase", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://a.example.com, https://a.example.com",
	       L_JWKS_FREE, "'https://a.example.com': listed twice", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://a.example.com, *", L_JWKS_FREE, "stand alone",
	       1);
	EXPECT(L_JWKS_FREE, "cors-origins = *, *", L_JWKS_FREE, "stand alone", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://*.example.com", L_JWKS_FREE, "wildcard", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = null", L_JWKS_FREE, "'null'", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = app.example.com", L_JWKS_FREE,
	       "not scheme://host[:port]", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https:/app.example.com", L_JWKS_FREE,
	       "not scheme://host[:port]", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://", L_JWKS_FREE, "no host", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://:8443", L_JWKS_FREE, "no host", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://user@app.example.com", L_JWKS_FREE,
	       "no user info", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com:443", L_JWKS_FREE,
	       "default port", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = http://app.example.com:80", L_JWKS_FREE, "default port",
	       1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com:0", L_JWKS_FREE, "port", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com:08443", L_JWKS_FREE, "port", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com:65536", L_JWKS_FREE, "port", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com:99999999999", L_JWKS_FREE,
	       "port", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com:", L_JWKS_FREE, "port", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com.", L_JWKS_FREE, "dot", 1);
	EXPECT(L_JWKS_FREE,
	       "cors-origins = https://b\xc3\xbc"
	       "cher.example",
	       L_JWKS_FREE, "punycode", 1);
	EXPECT(L_JWKS_FREE,
	       "cors-origins = https://b\xfc"
	       "cher.example",
	       L_JWKS_FREE, "'?': not printable", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://[]", L_JWKS_FREE, "IPv6", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://[::1", L_JWKS_FREE, "IPv6", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app.example.com,", L_JWKS_FREE, "empty item",
	       1);
	EXPECT(L_JWKS_FREE, "cors-origins =", L_JWKS_FREE, "empty item", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://app example.com", L_JWKS_FREE, "character", 1);
	EXPECT(L_JWKS_FREE, "cors-origins = https://a.example.com\ncors-origins = *",
	       L_JWKS_FREE + 1, "set twice", 1);
	{
		/* Far longer than any host: refused, not truncated. */
		char line[700] = "cors-origins = https://";
		memset(line + strlen(line), 'a', 600);
		line[sizeof(line) - 1] = '\0';
		EXPECT(L_JWKS_FREE, line, L_JWKS_FREE, "longer than any origin", 1);
	}
}

static void test_jwks_health(void)
{
	struct conf *c = load_jwks_line("health = yes");

	CHECK(c && c->jwks.health);
	conf_free(c);
	c = load_jwks_line("health = no");
	CHECK(c && !c->jwks.health);
	conf_free(c);
	EXPECT(L_JWKS_FREE, "health = on", L_JWKS_FREE, "health: 'on' must be yes or no", 1);
	EXPECT(L_JWKS_FREE, "health = YES", L_JWKS_FREE, "must be yes or no", 1);
	EXPECT(L_JWKS_FREE, "health =", L_JWKS_FREE, "must be yes or no", 1);
}

static void test_free_null(void)
{
	struct conf_errors e = {0};

	conf_free(NULL);
	conf_errors_clear(&e);
	CHECK(e.n == 0);
}

/* h14-tls: tls-cert and tls-key both or neither; client-ca only in [metrics], only with TLS.
 * The files themselves are the daemon's to read (daemon/http/tls.c): not opened here. */
static void test_tls(void)
{
	/* Accepted: both in [jwks]; all three in [metrics]. */
	{
		char *t = base_with(L_JWKS_FREE, "tls-cert = /etc/tokensign/jwks.crt\n"
		                                 "tls-key = /etc/tokensign/jwks.key\n"
		                                 "[metrics]\nlisten = 127.0.0.1:9464\n"
		                                 "tls-cert = /etc/tokensign/m.crt\n"
		                                 "tls-key = /etc/tokensign/m.key\n"
		                                 "client-ca = /etc/tokensign/ca.pem\n");
		struct conf *c = load_ok(t);
		CHECK(c != NULL);
		if (c) {
			CHECK_STR(c->jwks.tls.cert, "/etc/tokensign/jwks.crt");
			CHECK_STR(c->jwks.tls.key, "/etc/tokensign/jwks.key");
			CHECK(c->jwks.tls.client_ca == NULL);
			CHECK_STR(c->metrics.tls.cert, "/etc/tokensign/m.crt");
			CHECK_STR(c->metrics.tls.key, "/etc/tokensign/m.key");
			CHECK_STR(c->metrics.tls.client_ca, "/etc/tokensign/ca.pem");
		}
		conf_free(c);
		free(t);
	}
	/* Neither: plain HTTP. */
	{
		char *t = base_with(L_END, "");
		struct conf *c = load_ok(t);
		CHECK(c && !c->jwks.tls.cert && !c->jwks.tls.key && !c->metrics.tls.cert);
		conf_free(c);
		free(t);
	}
	/* One without the other: at the line of the one given. */
	EXPECT(L_JWKS_FREE, "tls-cert = /etc/tokensign/jwks.crt", L_JWKS_FREE, "tls-key is not", 1);
	EXPECT(L_JWKS_FREE, "tls-key = /etc/tokensign/jwks.key", L_JWKS_FREE, "tls-cert is not", 1);
	EXPECT(L_JWKS_FREE, "[metrics]\nlisten = 127.0.0.1:9464\ntls-key = /etc/tokensign/m.key",
	       L_JWKS_FREE + 2, "both or neither", 1);
	/* client-ca: never in [jwks], and only with TLS in [metrics]. */
	EXPECT(L_JWKS_FREE, "client-ca = /etc/tokensign/ca.pem", L_JWKS_FREE, "only [metrics]", 1);
	EXPECT(L_JWKS_FREE, "[metrics]\nlisten = 127.0.0.1:9464\nclient-ca = /etc/ca.pem",
	       L_JWKS_FREE + 2, "needs tls-cert", 1);
	/* Relative paths, empty values and repetitions. */
	EXPECT(L_JWKS_FREE, "tls-cert = jwks.crt\ntls-key = /etc/tokensign/jwks.key", L_JWKS_FREE,
	       "absolute", 1);
	EXPECT(L_JWKS_FREE, "tls-cert =\ntls-key = /etc/tokensign/jwks.key", L_JWKS_FREE,
	       "absolute", 1);
	EXPECT(L_JWKS_FREE, "tls-cert = /a.crt\ntls-key = /a.key\ntls-cert = /b.crt",
	       L_JWKS_FREE + 2, "twice", 1);
}

/* ---- h14-discovery: the JWKS listener's paths (lib/conf_routes.c) ---- */

static void check_iss_path(const char *iss, int want_r, const char *want_path)
{
	size_t off = 0, len = 0;
	const char *why = NULL;
	int r = conf_iss_path(iss, &off, &len, &why);

	CHECK_INT(r, want_r);
	if (r == 0 && want_path) {
		char got[128];
		snprintf(got, sizeof(got), "%.*s", (int)len, iss + off);
		CHECK_STR(got, want_path);
	}
	if (r == -EINVAL)
		CHECK(why && *why);
	if (r != want_r)
		fprintf(stderr, "    ^ iss '%s'\n", iss);
}

static void test_iss_path(void)
{
	check_iss_path("https://login.example.com/realms/main", 0, "/realms/main");
	check_iss_path("https://login.example.com", 0, "");
	check_iss_path("https://login.example.com/", 0, "");
	check_iss_path("https://login.example.com/t/", 0, "/t"); /* one terminating '/' goes */
	check_iss_path("https://login.example.com/t//", 0, "/t/");
	check_iss_path("http://127.0.0.1:8080/x", 0, "/x");
	check_iss_path("https://[::1]:8443/a", 0, "/a");
	check_iss_path("https://h/a%2Fb", 0, "/a%2Fb"); /* kept as written: matched as sent */
	check_iss_path("https://h/..a/b.", 0, "/..a/b.");
	check_iss_path("https://h/a-b_c~d!$&'()*+,;=:@e", 0, "/a-b_c~d!$&'()*+,;=:@e");
	/* Not URLs: no discovery at their path, and no error. */
	check_iss_path("urn:example:issuer", -ENOENT, NULL);
	check_iss_path("tokensign", -ENOENT, NULL);
	check_iss_path("ftp://h/x", -ENOENT, NULL);
	/* URLs no relying party could discover. */
	check_iss_path("https://h/x?y=1", -EINVAL, NULL);
	check_iss_path("https://h/x#f", -EINVAL, NULL);
	check_iss_path("https://h?x", -EINVAL, NULL);
	check_iss_path("https://user@h/x", -EINVAL, NULL);
	check_iss_path("https:///x", -EINVAL, NULL);
	check_iss_path("https://h/a b", -EINVAL, NULL);
	check_iss_path("https://h/\xc3\xa9", -EINVAL, NULL);
	check_iss_path("https://h/a\"b", -EINVAL, NULL);
	check_iss_path("https://h/a%2", -EINVAL, NULL);
	check_iss_path("https://h/a%zz", -EINVAL, NULL);
	check_iss_path("https://h/a/../b", -EINVAL, NULL);
	check_iss_path("https://h/a/./b", -EINVAL, NULL);
	check_iss_path("https://h/a/..", -EINVAL, NULL);
	check_iss_path("https://h/.", -EINVAL, NULL);
	check_iss_path("https://h/./", -EINVAL, NULL);
	check_iss_path("https://h/a/%2E%2e/b", -EINVAL, NULL);
	check_iss_path("https://h/a/.%2E", -EINVAL, NULL);
	check_iss_path("https://h/%2E", -EINVAL, NULL);
	check_iss_path("https://h/a/%2E%2E%2E/b", 0, "/a/%2E%2E%2E/b");
}

static void check_normalize(const char *in, const char *want)
{
	char buf[128];

	snprintf(buf, sizeof(buf), "%s", in);
	CHECK_INT(conf_route_normalize(buf), strlen(want));
	CHECK_STR(buf, want);
}

static void test_route_normalize(void)
{
	check_normalize("/realms/main", "/realms/main");
	check_normalize("/m%61in", "/main");
	check_normalize("%41%5a%30%39%2D%2e%5F%7e", "AZ09-._~"); /* unreserved: decoded */
	check_normalize("/a%2fb", "/a%2Fb");                     /* reserved: kept, upper case */
	check_normalize("/a%2Fb", "/a%2Fb");
	check_normalize("/%e2%82%ac", "/%E2%82%AC");
	check_normalize("/a%00b", "/a%00b"); /* never a NUL */
	check_normalize("/a%2", "/a%2");     /* broken escapes stay as sent */
	check_normalize("/a%zz%", "/a%zz%");
	check_normalize("/%2E%2E/x", "/../x"); /* dots are unreserved; no segment is removed */
	check_normalize("", "");
}

static void check_route(const struct conf *c, const char *route, const char *issuer,
                        enum conf_doc doc)
{
	const struct conf_route *r = conf_route_find(c, route);

	CHECK(r != NULL);
	if (!r) {
		fprintf(stderr, "    ^ no route for %s\n", route);
		return;
	}
	CHECK_STR(c->issuers[r->issuer].name, issuer);
	CHECK_INT(r->doc, doc);
}

static void test_routes(void)
{
	char *t = base_with(L_ISS, "iss = https://login.example.com/realms/main");
	struct conf *c = load_ok(t);

	free(t);
	if (!c)
		return;
	CHECK_INT(c->n_routes, 4);
	for (size_t i = 1; i < c->n_routes; i++)
		CHECK(strcmp(c->routes[i - 1].path, c->routes[i].path) < 0);
	check_route(c, "/main/.well-known/jwks.json", "main", CONF_DOC_JWKS);
	check_route(c, "/main/.well-known/openid-configuration", "main", CONF_DOC_DISCOVERY);
	check_route(c, "/realms/main/.well-known/openid-configuration", "main", CONF_DOC_DISCOVERY);
	check_route(c, "/.well-known/oauth-authorization-server/realms/main", "main",
	            CONF_DOC_DISCOVERY);
	static const char *const misses[] = {
	    "",
	    "/",
	    "/realms/main",
	    "/realms/main/",
	    "/realms/main/.well-known/openid-configuration/",
	    "//realms/main/.well-known/openid-configuration",
	    "/realms/main/../main/.well-known/openid-configuration",
	    "/realms%2Fmain/.well-known/openid-configuration",
	    "/realms/.well-known/openid-configuration",
	    "/.well-known/openid-configuration",
	    "/.well-known/oauth-authorization-server",
	    "/.well-known/oauth-authorization-server/realms/main/",
	    "/.well-known/oauth-authorization-server/realms",
	    "/.well-known/oauth-authorization-server/realms/main/.well-known/openid-configuration",
	    "/realms/main/.well-known/jwks.json",
	    "/REALMS/main/.well-known/openid-configuration",
	};
	for (size_t i = 0; i < sizeof(misses) / sizeof(*misses); i++) {
		CHECK(conf_route_find(c, misses[i]) == NULL);
		if (conf_route_find(c, misses[i]))
			fprintf(stderr, "    ^ a route for %s\n", misses[i]);
	}
	conf_free(c);

	/* The iss path /main is the issuer's own /NAME: one route, not a clash. */
	t = base_with(L_END, "\n[issuer:root]\niss = https://keys.example.com/\nallow = *");
	c = load_ok(t);
	free(t);
	if (!c)
		return;
	CHECK_INT(c->n_routes, 7);
	check_route(c, "/main/.well-known/openid-configuration", "main", CONF_DOC_DISCOVERY);
	check_route(c, "/.well-known/oauth-authorization-server/main", "main", CONF_DOC_DISCOVERY);
	check_route(c, "/.well-known/openid-configuration", "root", CONF_DOC_DISCOVERY);
	check_route(c, "/.well-known/oauth-authorization-server", "root", CONF_DOC_DISCOVERY);
	check_route(c, "/root/.well-known/jwks.json", "root", CONF_DOC_JWKS);
	conf_free(c);

	/* Escapes in an iss path are normalised as request paths are. */
	t = base_with(L_ISS, "iss = https://login.example.com/m%61in/a%2fb");
	c = load_ok(t);
	free(t);
	if (c) {
		check_route(c, "/main/a%2Fb/.well-known/openid-configuration", "main",
		            CONF_DOC_DISCOVERY);
		check_route(c, "/.well-known/oauth-authorization-server/main/a%2Fb", "main",
		            CONF_DOC_DISCOVERY);
	}
	conf_free(c);

	/* An opaque iss has its /NAME routes only. */
	t = base_with(L_ISS, "iss = urn:example:main");
	c = load_ok(t);
	free(t);
	if (c)
		CHECK_INT(c->n_routes, 2);
	conf_free(c);
}

/* Loads text and expects exactly one error, at line, naming both issuers and path. */
static void expect_clash_at(int caller_line, const char *text, unsigned line, const char *a,
                            const char *b, const char *route)
{
	struct conf *c = NULL;
	struct conf_errors e = {0};
	unsigned before = unit_failures;

	write_file(text, strlen(text));
	CHECK_INT(conf_load(path, &c, &e), -EINVAL);
	CHECK_INT(e.n, 1);
	CHECK(has_error(&e, line, a));
	CHECK(has_error(&e, line, b));
	CHECK(has_error(&e, line, route));
	CHECK(has_error(&e, line, "Host"));
	if (unit_failures != before) {
		fprintf(stderr, "    ^ case at line %d\n", caller_line);
		dump_errors(&e);
	}
	conf_errors_clear(&e);
	unlink(path);
}

#define EXPECT_CLASH(at, text, line, a, b, route)                                                  \
	do {                                                                                       \
		char *unit_s_ = base_with((at), (text));                                           \
		expect_clash_at(__LINE__, unit_s_, (line), (a), (b), (route));                     \
		free(unit_s_);                                                                     \
	} while (0)

static void test_route_clashes(void)
{
	/* The same path on two hosts: the listener never reads Host, so it cannot tell them
	 * apart. Reported once for the pair, at the second issuer. */
	EXPECT_CLASH(L_END, "\n[issuer:other]\niss = https://other.example.com/main\nallow = *",
	             L_END + 1, "[issuer:main]", "[issuer:other]",
	             "/.well-known/oauth-authorization-server/main");
	/* A terminating '/' does not make another path. */
	EXPECT_CLASH(L_END, "\n[issuer:other]\niss = https://login.example.com/main/\nallow = *",
	             L_END + 1, "https://login.example.com/main/",
	             "https://login.example.com/main'", "/main");
	/* Two issuers without a path. */
	{
		char *t = base_with(L_ISS, "iss = https://a.example.com");
		char *u = NULL;
		if (asprintf(&u, "%s\n[issuer:b]\niss = https://b.example.com/\nallow = *\n", t) <
		    0)
			abort();
		expect_clash_at(__LINE__, u, L_END + 1, "[issuer:main]", "[issuer:b]",
		                "/.well-known/oauth-authorization-server");
		free(t);
		free(u);
	}
	/* An iss path that is another issuer's /NAME. */
	{
		char *t = base_with(L_ISS, "iss = https://login.example.com/other");
		char *u = NULL;
		if (asprintf(&u, "%s\n[issuer:other]\niss = https://x.example.com/y\nallow = *\n",
		             t) < 0)
			abort();
		expect_clash_at(__LINE__, u, L_END + 1, "[issuer:main]", "[issuer:other]",
		                "/other/.well-known/openid-configuration");
		free(t);
		free(u);
	}
	/* The same iss twice stays one error (validate_issuer's). */
	EXPECT(L_END, "\n[issuer:other]\niss = https://login.example.com/main\nallow = *",
	       L_END + 1, "also the iss", 1);
	/* Three issuers on one path: each pair with the first. */
	EXPECT(L_END,
	       "\n[issuer:b]\niss = https://b.example.com/main\nallow = *\n"
	       "[issuer:c]\niss = https://c.example.com/main\nallow = *",
	       L_END + 1, "[issuer:b]", 2);
	/* http(s) iss that no relying party could discover. */
	EXPECT(L_ISS, "iss = https://login.example.com/main?tenant=1", L_ISSUER, "query", 1);
	EXPECT(L_ISS, "iss = https://login.example.com/main#x", L_ISSUER, "fragment", 1);
	EXPECT(L_ISS, "iss = https://me@login.example.com/main", L_ISSUER, "user info", 1);
	EXPECT(L_ISS, "iss = https://login.example.com/ma in", L_ISSUER, "percent-encode", 1);
	EXPECT(L_ISS, "iss = https://login.example.com/a/../main", L_ISSUER, "'..'", 1);
}

int main(void)
{
	unsetenv("CREDENTIALS_DIRECTORY");
	test_full();
	test_spec_example();
	test_connection_caps();
	test_credentials_directory();
	test_long_lines();
	test_errors_sections();
	test_errors_keys();
	test_errors_values();
	test_errors_missing();
	test_errors_cross();
	test_errors_all_reported();
	test_nul_and_missing_file();
	test_cors_origins();
	test_jwks_health();
	test_free_null();
	test_tls();             /* h14-tls */
	test_iss_path();        /* h14-discovery */
	test_route_normalize(); /* h14-discovery */
	test_routes();          /* h14-discovery */
	test_route_clashes();   /* h14-discovery */
	return unit_finish("conf");
}

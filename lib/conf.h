/* The configuration file (tokensignd.conf(5)): INI -> typed, validated configuration. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "jws.h"

enum allow_kind {
	ALLOW_ANY, /* "*" */
	ALLOW_UID, /* "user:NAME" (resolved when loaded) or "uid:N" */
	ALLOW_GID, /* "group:NAME" (resolved when loaded) or "gid:N" */
};

struct allow_rule {
	enum allow_kind kind;
	uint32_t id;
};

struct issuer_conf {
	char *name; /* [a-z0-9-]{1,32}, from the section name */
	char *iss;
	enum jws_alg alg;
	unsigned key_size;      /* RSA modulus bits (2048, 3072, 4096); 0 for other algorithms */
	unsigned key_size_line; /* where key-size was set, for messages */
	int self_check;         /* verify each signature before it leaves: 1 yes, 0 no */
	uint64_t rotation_period, prepublish, token_ttl, max_token_ttl; /* seconds */
	char **audiences;                                               /* NULL: any aud */
	size_t n_audiences;
	char **token_types; /* first is the default typ */
	size_t n_token_types;
	struct allow_rule *allow;
	size_t n_allow;
	unsigned line; /* of the section header */
};

struct sock_conf {
	char *path; /* NULL when the section is absent */
	mode_t mode;
	bool has_group;
	gid_t gid;
	unsigned max_connections; /* 0: derived from RLIMIT_NOFILE */
	uint64_t request_timeout; /* seconds a request may take, headers and body */
};

struct listen_conf {
	char *text; /* as written, for messages */
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

/* h14-tls: tls-cert, tls-key (and client-ca in [metrics]) of a TCP listener section; all NULL:
 * plain HTTP. Only the combination is checked here; the daemon reads the files (daemon/http/tls.h),
 * at start and at every reload. */
struct tls_conf {
	char *cert;      /* PEM: the certificate, then its chain */
	char *key;       /* PEM: its private key */
	char *client_ca; /* PEM: client certificates must chain to one of these; NULL: none asked */
	unsigned cert_line, key_line, ca_line; /* where each was given (even badly); 0: not */
};

struct conf {
	struct {
		char *module;
		char *token;
		char *pin_file;
		bool session_copies; /* sign with session copies of the keys (daemon/hsm/hsm.h) */
		bool module_network; /* the helpers may open sockets (a network HSM's module) */
		bool pin_cpus;       /* each signing worker and its helper on one CPU */
	} hsm;
	struct sock_conf sign, admin;
	/* [sign] audit: best-effort signs even when a token's audit record cannot be written;
	 * required answers 503 audit_unavailable instead of the token. */
	enum conf_audit { CONF_AUDIT_BEST_EFFORT, CONF_AUDIT_REQUIRED } audit;
	struct {
		struct listen_conf *listen;
		size_t n_listen;
		uint64_t max_age;
		char *public_url; /* without a trailing slash; NULL: from each issuer's iss */
		unsigned max_connections; /* per listener; 0: derived from RLIMIT_NOFILE */
		unsigned max_per_address; /* per listener and client address; 0: the default */
		uint64_t request_timeout; /* seconds */
		/* h14-cors: cors-origins (daemon/http/cors.h) and health on the public listener.
		 * CORS is off when cors_any is false and n_cors_origins is 0. */
		bool cors_any;       /* cors-origins = * */
		char **cors_origins; /* exact origins, "scheme://host[:port]", each once */
		size_t n_cors_origins;
		unsigned cors_line;  /* where cors-origins was set, for messages */
		bool health;         /* also GET /healthz and /readyz (daemon/http/health_http.h) */
		struct tls_conf tls; /* h14-tls */
	} jwks;
	/* [metrics] listen: Prometheus metrics (docs/operations.md, "Monitoring"); none: off. */
	struct {
		struct listen_conf *listen;
		size_t n_listen;
		struct tls_conf tls; /* h14-tls */
	} metrics;
	struct issuer_conf *issuers; /* in file order */
	size_t n_issuers;
	/* h14-discovery: the public listener's paths (conf_routes.h), sorted; built at load. */
	struct conf_route *routes;
	size_t n_routes;
};

/* Every problem found, each "FILE:LINE: reason" (or "FILE: reason" when no line applies). */
struct conf_errors {
	char **msgs;
	size_t n;
};

/* Loads and validates path. On success returns 0 and *ret; otherwise returns -EINVAL (or the
 * negative errno of opening the file) with every problem in errs and *ret untouched. */
int conf_load(const char *path, struct conf **ret, struct conf_errors *errs);

void conf_free(struct conf *conf);
void conf_errors_clear(struct conf_errors *errs);

/* The issuer called name (len bytes, not NUL-terminated), or NULL. */
const struct issuer_conf *conf_find_issuer(const struct conf *conf, const char *name, size_t len);

/* The issuer's own copy of typ when it is one of its token-types (exactly, case and all), else
 * NULL. The copy lives as long as the configuration: a signing request keeps it. */
const char *issuer_typ_find(const struct issuer_conf *ic, const char *typ);

/* True when aud is in the issuer's audiences (always true without an allow-list). */
bool issuer_aud_allowed(const struct issuer_conf *ic, const char *aud);

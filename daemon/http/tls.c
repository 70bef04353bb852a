/* HTTPS for the TCP listeners: credentials loaded with GnuTLS, swapped on reload, pinned per
 * connection, handed to each handshake by libmicrohttpd's certificate callback. */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "log.h"

/* Certificates in a chain we serve or accept; PEM files larger than this are not certificates. */
#define TLS_MAX_CHAIN 16
#define TLS_MAX_FILE  (1024 * 1024)

/* One generation of a listener's credentials: immutable once made, freed with its last
 * reference. The server holds one; so does every connection that started while it was
 * current, from its start to its close, because GnuTLS uses the certificate and key that the
 * callback hands out for the whole handshake (and keeps pointers to them in the session). */
struct tls_creds {
	atomic_int refs;
	gnutls_pcert_st certs[TLS_MAX_CHAIN];
	unsigned n_certs;
	gnutls_privkey_t key;
	gnutls_x509_trust_list_t ca; /* NULL: no client certificate is asked for */
};

struct tls_server {
	pthread_mutex_t lock; /* guards cur, not what it points to */
	struct tls_creds *cur;
	struct http_guards *guards;
	bool hsts;
	char section[16];
};

static void creds_free(struct tls_creds *cr)
{
	for (unsigned i = 0; i < cr->n_certs; i++)
		gnutls_pcert_deinit(&cr->certs[i]);
	if (cr->key)
		gnutls_privkey_deinit(cr->key);
	if (cr->ca)
		gnutls_x509_trust_list_deinit(cr->ca, 1);
	free(cr);
}

static void creds_release(struct tls_creds *cr)
{
	if (cr && atomic_fetch_sub(&cr->refs, 1) == 1)
		creds_free(cr);
}

static struct tls_creds *creds_acquire(struct tls_server *ts)
{
	struct tls_creds *cr;

	pthread_mutex_lock(&ts->lock);
	cr = ts->cur;
	if (cr)
		atomic_fetch_add(&cr->refs, 1);
	pthread_mutex_unlock(&ts->lock);
	return cr;
}

/* ---- reading the files ---- */

/* What a failed load says: "CONFIG:LINE: [SECTION] KEY FILE: reason". */
struct tls_where {
	const char *config_path, *section;
	const struct tls_conf *tc;
};

static void load_error(const struct tls_where *w, unsigned line, const char *key, const char *file,
                       const char *reason)
{
	log_error("%s:%u: [%s] %s %s: %s", w->config_path, line, w->section, key, file, reason);
}

/* The whole file into out (the caller frees it, wiping it first when it holds a key). */
static int read_file(const char *path, gnutls_datum_t *out)
{
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY), r = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		r = -errno;
	else if (!S_ISREG(st.st_mode))
		r = -EINVAL;
	else if (st.st_size > TLS_MAX_FILE)
		r = -EFBIG;
	out->data = r == 0 ? malloc((size_t)st.st_size + 1) : NULL;
	if (r == 0 && !out->data)
		r = -ENOMEM;
	while (r == 0 && got < (size_t)st.st_size) {
		n = read(fd, out->data + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			r = n < 0 ? -errno : -EIO;
		else
			got += (size_t)n;
	}
	close(fd);
	if (r < 0) {
		free(out->data);
		out->data = NULL;
		return r;
	}
	out->data[got] = '\0';
	out->size = (unsigned)got;
	return 0;
}

static const char *read_error(int r)
{
	if (r == -EINVAL)
		return "not a regular file";
	if (r == -EFBIG)
		return "larger than 1 MiB: not a PEM file";
	return strerror(-r);
}

static int load_certs(const struct tls_where *w, struct tls_creds *cr)
{
	gnutls_datum_t pem = {0};
	int r = read_file(w->tc->cert, &pem);

	if (r < 0) {
		load_error(w, w->tc->cert_line, "tls-cert", w->tc->cert, read_error(r));
		return r;
	}
	cr->n_certs = TLS_MAX_CHAIN;
	/* The server's certificate first, then each one's issuer: what clients expect. */
	r = gnutls_pcert_list_import_x509_raw(cr->certs, &cr->n_certs, &pem, GNUTLS_X509_FMT_PEM,
	                                      GNUTLS_X509_CRT_LIST_FAIL_IF_UNSORTED |
	                                          GNUTLS_X509_CRT_LIST_IMPORT_FAIL_IF_EXCEED);
	free(pem.data);
	if (r < 0 || cr->n_certs == 0) {
		cr->n_certs = 0;
		load_error(w, w->tc->cert_line, "tls-cert", w->tc->cert,
		           r == GNUTLS_E_CERTIFICATE_LIST_UNSORTED
		               ? "the chain is out of order (the server's certificate first, then "
		                 "each one's issuer)"
		           : r < 0 ? gnutls_strerror(r)
		                   : "no certificate in the file");
		return -EINVAL;
	}
	return 0;
}

/* The key's public half against the certificate's: a wrong key would only show at the first
 * handshake, as an error every client sees. */
static bool key_matches(const gnutls_pcert_st *cert, gnutls_privkey_t key)
{
	unsigned char a[64], b[64];
	size_t na = sizeof(a), nb = sizeof(b);
	gnutls_pubkey_t pub = NULL;
	bool same = false;

	if (gnutls_pubkey_init(&pub) == 0 && gnutls_pubkey_import_privkey(pub, key, 0, 0) == 0 &&
	    gnutls_pubkey_get_key_id(cert->pubkey, GNUTLS_KEYID_USE_SHA256, a, &na) == 0 &&
	    gnutls_pubkey_get_key_id(pub, GNUTLS_KEYID_USE_SHA256, b, &nb) == 0)
		same = na == nb && memcmp(a, b, na) == 0;
	gnutls_pubkey_deinit(pub);
	return same;
}

static int load_key(const struct tls_where *w, struct tls_creds *cr)
{
	gnutls_datum_t pem = {0};
	int r = read_file(w->tc->key, &pem);

	if (r < 0) {
		load_error(w, w->tc->key_line, "tls-key", w->tc->key, read_error(r));
		return r;
	}
	r = gnutls_privkey_init(&cr->key);
	if (r == 0)
		r = gnutls_privkey_import_x509_raw(cr->key, &pem, GNUTLS_X509_FMT_PEM, NULL, 0);
	/* The key's bytes leave our memory now; GnuTLS holds its own copy. */
	explicit_bzero(pem.data, pem.size);
	free(pem.data);
	if (r < 0) {
		/* gnutls_strerror() names the failure, never the key's content. */
		load_error(w, w->tc->key_line, "tls-key", w->tc->key,
		           r == GNUTLS_E_DECRYPTION_FAILED
		               ? "an encrypted key: give it unencrypted (mode 0600)"
		               : gnutls_strerror(r));
		return -EINVAL;
	}
	if (!key_matches(&cr->certs[0], cr->key)) {
		load_error(w, w->tc->key_line, "tls-key", w->tc->key,
		           "does not match the certificate in tls-cert");
		return -EINVAL;
	}
	return 0;
}

static int load_ca(const struct tls_where *w, struct tls_creds *cr)
{
	gnutls_datum_t pem = {0};
	int r = read_file(w->tc->client_ca, &pem);

	if (r < 0) {
		load_error(w, w->tc->ca_line, "client-ca", w->tc->client_ca, read_error(r));
		return r;
	}
	r = gnutls_x509_trust_list_init(&cr->ca, 0);
	if (r == 0)
		r = gnutls_x509_trust_list_add_trust_mem(cr->ca, &pem, NULL, GNUTLS_X509_FMT_PEM, 0,
		                                         0);
	free(pem.data);
	if (r <= 0) {
		load_error(w, w->tc->ca_line, "client-ca", w->tc->client_ca,
		           r < 0 ? gnutls_strerror(r) : "no certificate in the file");
		return -EINVAL;
	}
	return 0;
}

static int creds_load(const struct tls_where *w, struct tls_creds **ret)
{
	struct tls_creds *cr = calloc(1, sizeof(*cr));
	int r;

	if (!cr) {
		log_error("[%s] TLS: out of memory", w->section);
		return -ENOMEM;
	}
	atomic_init(&cr->refs, 1);
	r = load_certs(w, cr);
	if (r == 0)
		r = load_key(w, cr);
	if (r == 0 && w->tc->client_ca)
		r = load_ca(w, cr);
	if (r < 0) {
		creds_free(cr);
		return r;
	}
	*ret = cr;
	return 0;
}

/* ---- the handshake ---- */

/* The credentials the connection of session pinned when it started. libmicrohttpd keeps its
 * connection as the session's pointer. */
static struct tls_creds *creds_of(gnutls_session_t s)
{
	struct MHD_Connection *c = gnutls_session_get_ptr(s);
	const struct http_peer *conn = c ? http_peer_of(c) : NULL;

	return conn ? conn->tls : NULL;
}

/* gnutls_certificate_retrieve_function2: the pinned certificate chain and key. GnuTLS does
 * not free what it is handed here; the connection's reference keeps it alive. */
static int retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca, int n_req,
                    const gnutls_pk_algorithm_t *algos, int n_algos, gnutls_pcert_st **pcert,
                    unsigned int *n_pcert, gnutls_privkey_t *key)
{
	struct tls_creds *cr = creds_of(s);

	(void)req_ca;
	(void)n_req;
	(void)algos;
	(void)n_algos;
	if (!cr)
		return -1; /* no memory for the connection's state: no handshake */
	*pcert = cr->certs;
	*n_pcert = cr->n_certs;
	*key = cr->key;
	return 0;
}

/* Runs in the handshake, once the client's certificate is in: non-zero fails the handshake,
 * so that a client without a certificate from client-ca never gets to send a request. */
static int verify_client(gnutls_session_t s)
{
	struct tls_creds *cr = creds_of(s);
	gnutls_x509_crt_t chain[TLS_MAX_CHAIN];
	gnutls_typed_vdata_st purpose = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
	                                 .data = (void *)GNUTLS_KP_TLS_WWW_CLIENT};
	const gnutls_datum_t *raw;
	unsigned n = 0, imported = 0, status = 1;

	if (!cr || !cr->ca)
		return -1;
	raw = gnutls_certificate_get_peers(s, &n);
	if (!raw || n == 0 || n > TLS_MAX_CHAIN)
		return -1;
	for (; imported < n; imported++) {
		if (gnutls_x509_crt_init(&chain[imported]) < 0)
			break;
		if (gnutls_x509_crt_import(chain[imported], &raw[imported], GNUTLS_X509_FMT_DER) <
		    0) {
			gnutls_x509_crt_deinit(chain[imported]);
			break;
		}
	}
	if (imported == n &&
	    gnutls_x509_trust_list_verify_crt2(cr->ca, chain, n, &purpose, 1, 0, &status, NULL) < 0)
		status = 1;
	for (unsigned i = 0; i < imported; i++)
		gnutls_x509_crt_deinit(chain[i]);
	return imported == n && status == 0 ? 0 : -1;
}

/* With client-ca: the client must send a certificate, checked by verify_client. */
static bool require_client_cert(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	gnutls_session_t s = ci ? ci->tls_session : NULL;

	if (!s)
		return false;
	gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
	gnutls_session_set_verify_function(s, verify_client);
	return true;
}

/* MHD_OPTION_NOTIFY_CONNECTION: http_on_tcp_connection's work, and the credentials pinned.
 * libmicrohttpd calls it after it made the session (started) and after it freed it (closed),
 * so the last reference of old credentials goes only when no handshake can use them. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
	struct tls_server *ts = cls;
	struct http_peer *conn;

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		conn = *socket_ctx;
		if (conn) {
			creds_release(conn->tls);
			conn->tls = NULL;
		}
		http_on_tcp_connection(ts->guards, c, socket_ctx, code);
		return;
	}
	http_on_tcp_connection(ts->guards, c, socket_ctx, code);
	conn = *socket_ctx;
	if (!conn)
		return; /* retrieve() finds no credentials: the handshake fails */
	conn->hsts = ts->hsts;
	conn->tls = creds_acquire(ts);
	/* Unable to ask for a client certificate: no credentials, so no handshake either. */
	if (conn->tls && conn->tls->ca && !require_client_cert(c)) {
		creds_release(conn->tls);
		conn->tls = NULL;
	}
}

/* ---- the server ---- */

int tls_server_new(const struct tls_conf *tc, const char *section, const char *config_path,
                   struct http_guards *guards, bool hsts, struct tls_server **ret)
{
	struct tls_where w = {config_path, section, tc};
	struct tls_server *ts;
	int r;

	*ret = NULL;
	if (!tls_conf_on(tc))
		return 0;
	ts = calloc(1, sizeof(*ts));
	if (!ts)
		return -ENOMEM;
	r = creds_load(&w, &ts->cur);
	if (r < 0) {
		free(ts);
		return r;
	}
	pthread_mutex_init(&ts->lock, NULL);
	ts->guards = guards;
	ts->hsts = hsts;
	snprintf(ts->section, sizeof(ts->section), "%s", section);
	*ret = ts;
	return 0;
}

int tls_server_reload(struct tls_server *ts, const struct tls_conf *tc, const char *config_path)
{
	struct tls_where w = {config_path, ts->section, tc};
	struct tls_creds *fresh = NULL, *old;
	int r = creds_load(&w, &fresh);

	if (r < 0) {
		log_error("reload: [%s] keeps serving its current TLS certificate and key: the new "
		          "ones cannot be used (above)",
		          ts->section);
		return r;
	}
	pthread_mutex_lock(&ts->lock);
	old = ts->cur;
	ts->cur = fresh;
	pthread_mutex_unlock(&ts->lock);
	/* Connections that started with the old ones keep them until they close. */
	creds_release(old);
	log_notice("reload: [%s] TLS certificate and key read again%s", ts->section,
	           tc->client_ca ? ", and client-ca" : "");
	return 0;
}

void tls_server_free(struct tls_server *ts)
{
	if (!ts)
		return;
	creds_release(ts->cur);
	pthread_mutex_destroy(&ts->lock);
	free(ts);
}

unsigned tls_server_flags(const struct tls_server *ts)
{
	return ts ? MHD_USE_TLS : 0;
}

void tls_server_options(struct tls_server *ts, struct http_guards *guards,
                        struct MHD_OptionItem *opts)
{
	size_t i = 0;

	if (ts) {
		opts[i++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION,
		                                    (intptr_t)on_connection, ts};
		opts[i++] =
		    (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES};
		opts[i++] =
		    (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)retrieve};
	} else {
		opts[i++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION,
		                                    (intptr_t)http_on_tcp_connection, guards};
	}
	opts[i] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
}

int tls_check(const struct conf *conf, const char *config_path)
{
	const struct {
		const struct tls_conf *tc;
		const char *section;
	} sets[] = {{&conf->jwks.tls, "jwks"}, {&conf->metrics.tls, "metrics"}};
	int r = 0;

	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		struct tls_where w = {config_path, sets[i].section, sets[i].tc};
		struct tls_creds *cr = NULL;
		if (!tls_conf_on(sets[i].tc))
			continue;
		if (creds_load(&w, &cr) < 0)
			r = -EINVAL;
		else
			creds_release(cr);
	}
	return r;
}

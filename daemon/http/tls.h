/* HTTPS for the TCP listeners (the JWKS, the metrics): GnuTLS credentials read from a section's
 * tls-cert, tls-key and client-ca, swapped whole on reload, and pinned by each connection from
 * its start to its close (docs/operations.md, "TLS"). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include <microhttpd.h>

#include "conf.h"
#include "http.h"

struct tls_server;

/* TLS 1.2 and 1.3 only; AEAD ciphers with forward secrecy; the server's order wins. */
#define TLS_PRIORITIES                                                                             \
	"SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:"     \
	"+CHACHA20-POLY1305:-RSA:%SERVER_PRECEDENCE"

/* The options a listener's MHD_start_daemon() passes with MHD_OPTION_ARRAY: how it learns of
 * connections, and with ts its TLS. Room for TLS_MHD_OPTIONS items. */
#define TLS_MHD_OPTIONS 4

/* Reads tc's files for the listeners of section ("jwks", "metrics"), whose connections guards
 * watches; logs what is wrong with them (config_path, the line, the file; never key material).
 * hsts: every answer carries Strict-Transport-Security. tc without tls-cert: *ret is NULL and
 * the listeners speak plain HTTP. */
int tls_server_new(const struct tls_conf *tc, const char *section, const char *config_path,
                   struct http_guards *guards, bool hsts, struct tls_server **ret);

/* Reads tc's files again: connections that start from now on get them. When they cannot be
 * used, says why and keeps the credentials in use (returns the negative errno). */
int tls_server_reload(struct tls_server *ts, const struct tls_conf *tc, const char *config_path);

/* Once every daemon that used ts has stopped (no connection holds its credentials any more).
 * Accepts NULL. */
void tls_server_free(struct tls_server *ts);

/* For --check-config: reads every TLS file of conf as a start would, says what is wrong with
 * each (-EINVAL), and keeps nothing. */
int tls_check(const struct conf *conf, const char *config_path);

/* MHD_USE_TLS with ts, else 0. */
unsigned tls_server_flags(const struct tls_server *ts);

/* Fills opts (TLS_MHD_OPTIONS items, the last MHD_OPTION_END): the connection notifier
 * (http_on_tcp_connection with guards, wrapped with ts), and with ts the priorities and the
 * certificate callback. */
void tls_server_options(struct tls_server *ts, struct http_guards *guards,
                        struct MHD_OptionItem *opts);

/* Whether tc asks for TLS: a reload from plain to TLS (or back) needs new listeners. */
static inline bool tls_conf_on(const struct tls_conf *tc)
{
	return tc->cert != NULL;
}

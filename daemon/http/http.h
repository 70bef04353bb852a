/* Small helpers shared by the two HTTP front ends (sign socket, public JWKS). */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <microhttpd.h>

#include "audit.h"
#include "conf.h"
#include "counters.h"
#include "http_deadline.h"
#include "http_linger.h"
#include "peer.h"

struct tls_creds;

/* Queues a JSON body (copied) with status. */
/* Seconds in the Retry-After header of every 503 answer. */
#define HTTP_RETRY_AFTER "1"

enum MHD_Result http_reply_json(struct MHD_Connection *c, unsigned status, const char *body);

/* h15-cost: the same with a body from malloc(), which it takes (libmicrohttpd frees it): no
 * copy. */
enum MHD_Result http_reply_json_take(struct MHD_Connection *c, unsigned status, char *body);

/* h14-tls: MHD_queue_response() with the headers every answer of the connection carries
 * (Strict-Transport-Security on the JWKS over HTTPS). */
enum MHD_Result http_queue_response(struct MHD_Connection *c, unsigned status,
                                    struct MHD_Response *resp);

/* Queues {"error": code, "message": message}. */
enum MHD_Result http_reply_error(struct MHD_Connection *c, unsigned status, const char *code,
                                 const char *message);

/* Queues a 405 with an Allow header. */
enum MHD_Result http_reply_method(struct MHD_Connection *c, const char *allow);

/* The answers of the three above, made but not queued, for a front end that adds headers of its
 * own (CORS on the JWKS listener); the caller queues and destroys them. NULL: out of memory. */
struct MHD_Response *http_json_response(unsigned status, const char *body);
struct MHD_Response *http_error_response(unsigned status, const char *code, const char *message);
struct MHD_Response *http_method_response(const char *allow);

/* Logs libmicrohttpd's own messages on the public (JWKS) listeners through our log,
 * rate-limited (log_limit.h). */
void http_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Creates, binds and listens on the Unix socket of sc, with its mode and group; a stale socket
 * file is replaced, any other file is not. */
int http_unix_listen(const struct sock_conf *sc, int *ret_fd);

/* One libmicrohttpd daemon (one thread) of a Unix-socket server, and how many connections it
 * holds: the acceptor hands each new connection to the worker with the fewest. */
struct http_worker {
	struct MHD_Daemon *mhd;
	atomic_int open;
	char name[16];              /* thread name, "sign-worker": for top -H and the benchmark */
	atomic_bool named;          /* the thread carries it */
	struct http_linger *linger; /* the server's */
	struct http_deadline *deadline;   /* the server's */
	struct metric_series *open_gauge; /* tokensign_connections_open{listener=what} */
};

/* An HTTP server on a Unix socket: passed by systemd, or made here from a [sign]/[admin]
 * section (then its path is removed when the server closes). One acceptor thread accepts and
 * spreads connections over the workers, so that keep-alive clients which connect at once do
 * not all land on the worker that happened to wake first. */
struct http_unix_server {
	struct http_worker *workers;
	unsigned n_workers;
	int fd;
	int stop_fd; /* eventfd: wakes the acceptor to stop */
	pthread_t acceptor;
	bool accepting;      /* the acceptor thread runs */
	bool accept_failing; /* the acceptor's last accept failed (said once) */
	unsigned max_connections;
	bool at_cap;      /* the acceptor is refusing connections at max_connections (said once) */
	const char *what; /* "sign", "admin": for messages (a string literal) */
	char *path;       /* NULL for a passed socket: its unit owns the path */
	struct http_linger linger;
	struct http_deadline deadline;
};

/* Serves handler on fd when fd >= 0, else on a new socket made from sc, with threads workers
 * (at least 1), holding at most max_connections connections: beyond, a new one is accepted and
 * closed at once. Peer credentials are read per connection (http_peer_of). what names it in
 * messages. Each connection may use HTTP_CONNECTION_MEMORY bytes for its request line, headers
 * and the answer's headers; bodies are collected outside (struct http_body). */
#define HTTP_CONNECTION_MEMORY (8 * 1024)
int http_unix_serve(struct http_unix_server *srv, const struct sock_conf *sc, int fd,
                    unsigned threads, unsigned max_connections, MHD_AccessHandlerCallback handler,
                    MHD_RequestCompletedCallback completed, void *cls, const char *what);
void http_unix_close(struct http_unix_server *srv);

/* The caller of a Unix-socket connection, read once when it connects (SO_PEERCRED is fixed at
 * connect() anyway). Install http_on_connection as MHD_OPTION_NOTIFY_CONNECTION. */
struct http_peer {
	int err; /* negative errno: credentials unreadable, the caller is refused */
	struct peer peer;
	struct audit_unit unit; /* the caller's systemd unit, looked up once, by the audit */
	/* Where the current request's target was received, in libmicrohttpd's read buffer, and
	 * what http_on_target found wrong with it (libmicrohttpd decodes it in place later). */
	const char *target;
	size_t target_len;
	int target_fault;        /* enum http_strict_fault */
	bool linger;             /* refused before its body was read: close in stages */
	struct http_clock clock; /* the whole-request deadline's */
	/* h14-tls: the credentials the connection's handshake uses (tls.c owns the reference),
	 * and whether its answers carry Strict-Transport-Security. */
	struct tls_creds *tls;
	bool hsts;
};
void http_on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                        enum MHD_ConnectionNotificationCode code);
/* The same for a TCP listener: no credentials (err is -ENOTSUP), only the target; cls is the
 * listener's struct http_guards. */
struct http_guards {
	struct http_linger *linger;
	struct http_deadline *deadline;
	struct metric_series *open_gauge; /* tokensign_connections_open of the listener */
};

/* A set of TCP listeners (the JWKS, the metrics): one libmicrohttpd daemon per socket, and the
 * guard threads they share. */
struct http_tcp_set {
	size_t n; /* listeners set up so far */
	struct MHD_Daemon **mhd;
	int *fds; /* -1: none (yet) */
	struct http_linger linger;
	struct http_deadline deadline;
	struct http_guards guards; /* both, for http_on_tcp_connection */
};

/* Starts the guard threads of a set of total listeners (request_timeout: seconds a request may
 * take) and makes room for them; what names the set in the log. On failure, stop it. */
int http_tcp_set_init(struct http_tcp_set *set, size_t total, uint64_t request_timeout,
                      struct metric_series *open_gauge, const char *what);
/* Stops every daemon (which closes its socket), closes the sockets that have none, stops the
 * guards and frees the arrays. */
void http_tcp_set_stop(struct http_tcp_set *set);
void http_on_tcp_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                            enum MHD_ConnectionNotificationCode code);
const struct http_peer *http_peer_of(struct MHD_Connection *c);

/* Install as MHD_OPTION_URI_LOG_CALLBACK, with one of the two above: notes the raw target.
 * Returns NULL, so the access handler's first call still sees *req_cls == NULL. */
void *http_on_target(void *cls, const char *uri, struct MHD_Connection *c);

/* For the first call of an access handler, when every header is in: when the method, the raw
 * target or a header breaks http_strict.h's rules, queues a 400 and returns true with *ret
 * the handler's answer. libmicrohttpd closes the connection after it. */
bool http_refuse_malformed(struct MHD_Connection *c, const char *method, const char *version,
                           enum MHD_Result *ret);

/* Call from MHD_OPTION_NOTIFY_COMPLETED: the connection's next request gets the whole
 * request-timeout. */
void http_request_done(struct MHD_Connection *c);

/* The answer queued now is sent before the request's body was read: when libmicrohttpd closes
 * the connection after it, hand it to the server's http_linger instead of closing it. */
void http_close_gently(struct MHD_Connection *c);

/* For the access handler's body calls, which libmicrohttpd 0.9.75 does not let answer: sends a
 * 413 {"error":"body_too_large","message":message} on the socket itself and returns MHD_NO,
 * so that libmicrohttpd closes the connection (in stages, as http_close_gently). */
enum MHD_Result http_refuse_upload(struct MHD_Connection *c, const char *message);

/* MHD_OPTION_STRICT_FOR_CLIENT: 1 is the strictest 0.9.75 knows (Host required, no spaces in
 * the target); http_refuse_malformed does the rest. */
#define HTTP_STRICTNESS 1

/* A request body collected across calls of the access handler, capped at max bytes. */
struct http_body {
	char *data; /* NUL-terminated */
	size_t len;
	bool too_large;
};
void http_body_append(struct http_body *b, const char *data, size_t n, size_t max);
void http_body_free(struct http_body *b);

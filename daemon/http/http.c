/* JSON answers and libmicrohttpd log routing for both HTTP front ends. */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "http_strict.h"
#include "log.h"
#include "log_limit.h"
#include "sockfile.h"

/* body copied (MUST_COPY) or taken (MUST_FREE: libmicrohttpd frees it, even when the
 * response cannot be made). */
static struct MHD_Response *json_response(unsigned status, const char *body,
                                          enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(strlen(body), (void *)body, mode);

	if (!resp) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free((void *)body);
		return NULL;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	/* Every 503 says when to come back (RFC 9110, 10.2.3): a lost helper is replaced, a late
	 * key made, a token that hiccuped retried within about a second. */
	if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, HTTP_RETRY_AFTER);
	return resp;
}

struct MHD_Response *http_json_response(unsigned status, const char *body)
{
	return json_response(status, body, MHD_RESPMEM_MUST_COPY);
}

/* h14-tls: HSTS (RFC 6797) only over HTTPS, where a browser takes it: once a site was reached
 * over TLS, later plain-HTTP links to it are upgraded for a year. */
enum MHD_Result http_queue_response(struct MHD_Connection *c, unsigned status,
                                    struct MHD_Response *resp)
{
	const struct http_peer *conn = http_peer_of(c);

	if (conn && conn->hsts)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_STRICT_TRANSPORT_SECURITY,
		                        "max-age=31536000");
	return MHD_queue_response(c, status, resp);
}

/* Queues resp with status and drops our reference to it; NULL (out of memory): MHD_NO. */
static enum MHD_Result queue_owned(struct MHD_Connection *c, unsigned status,
                                   struct MHD_Response *resp)
{
	enum MHD_Result r;

	if (!resp)
		return MHD_NO;
	r = http_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return r;
}

enum MHD_Result http_reply_json(struct MHD_Connection *c, unsigned status, const char *body)
{
	return queue_owned(c, status, http_json_response(status, body));
}

/* h15-cost: the answers the sign path builds are handed over, not copied once more. */
enum MHD_Result http_reply_json_take(struct MHD_Connection *c, unsigned status, char *body)
{
	return queue_owned(c, status, json_response(status, body, MHD_RESPMEM_MUST_FREE));
}

struct MHD_Response *http_error_response(unsigned status, const char *code, const char *message)
{
	json_t *obj = json_pack("{s:s, s:s}", "error", code, "message", message);
	char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	struct MHD_Response *resp;

	json_decref(obj);
	if (!body)
		return NULL;
	resp = http_json_response(status, body);
	free(body);
	return resp;
}

enum MHD_Result http_reply_error(struct MHD_Connection *c, unsigned status, const char *code,
                                 const char *message)
{
	return queue_owned(c, status, http_error_response(status, code, message));
}

struct MHD_Response *http_method_response(const char *allow)
{
	char msg[64];
	json_t *obj;
	char *body;
	struct MHD_Response *resp;

	snprintf(msg, sizeof(msg), "allowed: %s", allow);
	obj = json_pack("{s:s, s:s}", "error", "method_not_allowed", "message", msg);
	body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!body)
		return NULL;
	resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return NULL;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	return resp;
}

enum MHD_Result http_reply_method(struct MHD_Connection *c, const char *allow)
{
	return queue_owned(c, MHD_HTTP_METHOD_NOT_ALLOWED, http_method_response(allow));
}

/* libmicrohttpd 0.9.75 cannot be told that a connection given to MHD_add_connection() is a
 * Unix socket: before each answer it tries TCP_NODELAY and TCP_CORK, which fail with
 * EOPNOTSUPP (an errno it does not take as "not TCP"), and says so three times per request.
 * Nothing is wrong (a Unix socket has no Nagle delay to push through), so those lines are
 * dropped here, before any formatting. */
static bool tcp_option_noise(const char *fmt)
{
	return strncmp(fmt, "Setting %s option to %s state failed", 36) == 0 ||
	       strncmp(fmt, "Failed to push the data from buffers to the network", 51) == 0;
}

/* Whoever can connect can make libmicrohttpd log (a request cut off, headers too large): the
 * lines are rate-limited per kind of listener, decided before anything is formatted. */
static void http_log_line(enum log_kind kind, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void http_log_line(enum log_kind kind, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	if (!log_admit(kind))
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	log_warning("http: %s", line);
}

void http_log(void *cls, const char *fmt, va_list ap)
{
	http_log_line(LOG_KIND_PUBLIC_HTTP, fmt, ap);
}

/* What libmicrohttpd says of every access handler that returns MHD_NO. On the Unix sockets
 * that is http_refuse_upload (a 413 already sent, no error of ours) or out of memory. */
static bool refusal_noise(const char *fmt)
{
	return strncmp(fmt, "Application reported internal error", 35) == 0;
}

static void http_log_unix(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void http_log_unix(void *cls, const char *fmt, va_list ap)
{
	if (!tcp_option_noise(fmt) && !refusal_noise(fmt))
		http_log_line(LOG_KIND_LOCAL_HTTP, fmt, ap);
}

/* libmicrohttpd has sent the answer and shut down writing, and closes the socket right after
 * this: a duplicate keeps the connection open for the drain. */
static void linger_if_refused(struct MHD_Connection *c, const struct http_peer *conn,
                              struct http_linger *l)
{
	const union MHD_ConnectionInfo *ci;

	if (!conn || !conn->linger || !l)
		return;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci)
		http_linger_add(l, fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 0));
}

void http_on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                        enum MHD_ConnectionNotificationCode code)
{
	struct http_worker *w = cls;
	struct http_peer *conn;

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (w) {
			atomic_fetch_sub(&w->open, 1);
			counters_gauge_add(w->open_gauge, -1);
		}
		linger_if_refused(c, *socket_ctx, w ? w->linger : NULL);
		if (*socket_ctx && w)
			http_deadline_untrack(w->deadline,
			                      &((struct http_peer *)*socket_ctx)->clock);
		if (*socket_ctx) {
			peer_clear(&((struct http_peer *)*socket_ctx)->peer);
			audit_unit_clear(&((struct http_peer *)*socket_ctx)->unit);
		}
		free(*socket_ctx);
		*socket_ctx = NULL;
		return;
	}
	/* libmicrohttpd names its threads alike; the first connection names the worker after
	 * its server. */
	if (w && !atomic_exchange(&w->named, true))
		pthread_setname_np(pthread_self(), w->name);
	if (w)
		counters_gauge_add(w->open_gauge, 1);
	conn = calloc(1, sizeof(*conn));
	if (!conn)
		return;
	int fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD)->connect_fd;
	conn->err = peer_from_fd(fd, &conn->peer);
	if (w)
		http_deadline_track(w->deadline, &conn->clock, fd);
	*socket_ctx = conn;
}

void http_on_tcp_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                            enum MHD_ConnectionNotificationCode code)
{
	struct http_guards *g = cls;
	struct http_peer *conn;

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		counters_gauge_add(g->open_gauge, -1);
		linger_if_refused(c, *socket_ctx, g->linger);
		if (*socket_ctx)
			http_deadline_untrack(g->deadline,
			                      &((struct http_peer *)*socket_ctx)->clock);
		free(*socket_ctx);
		*socket_ctx = NULL;
		return;
	}
	counters_gauge_add(g->open_gauge, 1);
	conn = calloc(1, sizeof(*conn));
	if (conn) {
		conn->err = -ENOTSUP;
		http_deadline_track(
		    g->deadline, &conn->clock,
		    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD)->connect_fd);
	}
	*socket_ctx = conn;
}

void *http_on_target(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct http_peer *conn = (struct http_peer *)http_peer_of(c);

	if (conn) {
		conn->target = uri;
		conn->target_len = strlen(uri);
		conn->target_fault = http_strict_target(uri, conn->target_len);
	}
	return NULL;
}

/* libmicrohttpd 0.9.75 splits the request line in place and gives the raw target to
 * http_on_target; the version follows right after that target's terminating NUL. When it
 * does not, the target held a NUL byte, which would cut it short unseen. */
static enum http_strict_fault target_fault(const struct http_peer *conn, const char *version)
{
	if (!conn || !conn->target)
		return HTTP_STRICT_BAD_TARGET;
	if (version != conn->target + conn->target_len + 1)
		return HTTP_STRICT_BAD_TARGET;
	return (enum http_strict_fault)conn->target_fault;
}

static enum MHD_Result check_header(void *cls, enum MHD_ValueKind kind, const char *name,
                                    const char *value)
{
	http_strict_header(cls, name, value);
	return MHD_YES;
}

bool http_refuse_malformed(struct MHD_Connection *c, const char *method, const char *version,
                           enum MHD_Result *ret)
{
	struct http_strict_headers h = {0};
	enum http_strict_fault f = http_strict_method(method);

	if (f == HTTP_STRICT_OK)
		f = target_fault(http_peer_of(c), version);
	if (f == HTTP_STRICT_OK) {
		MHD_get_connection_values(c, MHD_HEADER_KIND, check_header, &h);
		f = http_strict_finish(&h);
	}
	if (f == HTTP_STRICT_OK)
		return false;
	/* Not logged: anyone who can connect could fill the log this way. */
	http_close_gently(c);
	*ret = http_reply_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", http_strict_reason(f));
	return true;
}

void http_request_done(struct MHD_Connection *c)
{
	struct http_peer *conn = (struct http_peer *)http_peer_of(c);

	if (conn)
		http_deadline_restart(&conn->clock);
}

void http_close_gently(struct MHD_Connection *c)
{
	struct http_peer *conn = (struct http_peer *)http_peer_of(c);

	if (conn)
		conn->linger = true;
}

enum MHD_Result http_refuse_upload(struct MHD_Connection *c, const char *message)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	json_t *obj = json_pack("{s:s, s:s}", "error", "body_too_large", "message", message);
	char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	char *answer = NULL;
	int n = body ? asprintf(&answer,
	                        "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n"
	                        "Content-Type: application/json\r\nCache-Control: no-store\r\n"
	                        "Content-Length: %zu\r\n\r\n%s",
	                        strlen(body), body)
	             : -1;

	/* Nothing of this request's answer was sent yet, so the socket's buffer has room for
	 * these few hundred bytes; a client that does not read gets less, and a reset. */
	if (ci && n > 0 && send(ci->connect_fd, answer, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
		http_close_gently(c);
	json_decref(obj);
	free(body);
	free(answer);
	return MHD_NO;
}

const struct http_peer *http_peer_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

int http_unix_listen(const struct sock_conf *sc, int *ret)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	strncpy(sa.sun_path, sc->path, sizeof(sa.sun_path) - 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A stale socket file from a crash would make bind fail; only ever remove a socket. */
	struct stat st;
	if (lstat(sc->path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(sc->path);
	/* Linux makes the file with the socket's own mode less the umask: owner-only until
	 * sockfile_set_attrs() gives it the configured mode and group, on the file itself. */
	if (fchmod(fd, 0600) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	r = sockfile_set_attrs(sc->path, sc->mode, sc->has_group, sc->gid);
	if (r == 0 && listen(fd, 128) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		return r;
	}
	*ret = fd;
	return 0;
}

void http_body_append(struct http_body *b, const char *data, size_t n, size_t max)
{
	char *grown;

	if (b->too_large || b->len + n > max) {
		b->too_large = true;
		return;
	}
	grown = realloc(b->data, b->len + n + 1);
	if (!grown) {
		b->too_large = true;
		return;
	}
	memcpy(grown + b->len, data, n);
	grown[b->len + n] = '\0';
	b->data = grown;
	b->len += n;
}

void http_body_free(struct http_body *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

/* How long the acceptor pauses when the process is out of file descriptors: the pending
 * connection stays queued and would otherwise wake it at once, over and over. */
#define ACCEPT_PAUSE_MS 100

static struct http_worker *least_loaded(struct http_unix_server *srv)
{
	struct http_worker *best = &srv->workers[0];

	for (unsigned i = 1; i < srv->n_workers; i++)
		if (atomic_load(&srv->workers[i].open) < atomic_load(&best->open))
			best = &srv->workers[i];
	return best;
}

/* Whether the server holds max_connections already; says so once per episode. */
static bool at_cap(struct http_unix_server *srv)
{
	unsigned open = 0;

	for (unsigned i = 0; i < srv->n_workers; i++)
		open += (unsigned)atomic_load(&srv->workers[i].open);
	if (open >= srv->max_connections && !srv->at_cap)
		log_warning("%s socket: %u connections open, its cap: refusing new ones until "
		            "some close",
		            srv->what, open);
	else if (open < srv->max_connections && srv->at_cap)
		log_notice("%s socket: below its cap of %u connections again", srv->what,
		           srv->max_connections);
	srv->at_cap = open >= srv->max_connections;
	return srv->at_cap;
}

/* Accepts until the queue is empty. Returns false when accept failed for want of resources. */
static bool accept_all(struct http_unix_server *srv)
{
	for (;;) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		socklen_t len = sizeof(sa);
		struct http_worker *w;
		int cfd =
		    accept4(srv->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return true;
			/* Out of descriptors, say: once, not at every retry. */
			if (!srv->accept_failing)
				log_warning("http: accept: %s (retrying)", strerror(errno));
			srv->accept_failing = true;
			return false;
		}
		if (srv->accept_failing)
			log_notice("http: accepting connections again");
		srv->accept_failing = false;
		if (at_cap(srv)) {
			metrics_add(metrics_series(&counters.connections_refused, srv->what, NULL),
			            1);
			close(
			    cfd); /* cheaper than a queue that fills: the client sees EOF at once */
			continue;
		}
		w = least_loaded(srv);
		atomic_fetch_add(&w->open, 1);
		/* libmicrohttpd closes the socket when it cannot take it. */
		if (MHD_add_connection(w->mhd, cfd, (struct sockaddr *)&sa, len) != MHD_YES)
			atomic_fetch_sub(&w->open, 1);
	}
}

static void *acceptor(void *arg)
{
	struct http_unix_server *srv = arg;
	struct pollfd pfd[2] = {{.fd = srv->fd, .events = POLLIN},
	                        {.fd = srv->stop_fd, .events = POLLIN}};

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("http: poll: %s", strerror(errno));
			return NULL;
		}
		if (pfd[1].revents)
			return NULL;
		if (pfd[0].revents && !accept_all(srv))
			poll(&pfd[1], 1, ACCEPT_PAUSE_MS);
	}
}

static struct MHD_Daemon *worker_start(struct http_worker *w, unsigned max_connections,
                                       MHD_AccessHandlerCallback handler,
                                       MHD_RequestCompletedCallback completed, void *cls)
{
	/* The acceptor hands connections over with MHD_add_connection(), so the worker has no
	 * listen socket of its own and needs its inter-thread channel to hear of them. */
	return MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
	        MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG,
	    0, NULL, NULL, handler, cls, MHD_OPTION_EXTERNAL_LOGGER, http_log_unix, cls,
	    MHD_OPTION_NOTIFY_CONNECTION, http_on_connection, w, MHD_OPTION_NOTIFY_COMPLETED,
	    completed, cls, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
	    MHD_OPTION_STRICT_FOR_CLIENT, (int)HTTP_STRICTNESS, MHD_OPTION_URI_LOG_CALLBACK,
	    http_on_target, NULL, MHD_OPTION_CONNECTION_LIMIT, max_connections, MHD_OPTION_END);
}

int http_unix_serve(struct http_unix_server *srv, const struct sock_conf *sc, int fd,
                    unsigned threads, unsigned max_connections, MHD_AccessHandlerCallback handler,
                    MHD_RequestCompletedCallback completed, void *cls, const char *what)
{
	int r = 0;

	*srv = (struct http_unix_server){
	    .fd = fd, .stop_fd = -1, .max_connections = max_connections, .what = what};
	if (fd < 0) {
		r = http_unix_listen(sc, &srv->fd);
		if (r < 0) {
			log_error("cannot listen on %s: %s", sc->path, sockfile_strerror(r));
			return r;
		}
		srv->path = strdup(sc->path);
	}
	/* The acceptor drains the queue until EAGAIN; systemd passes sockets blocking. */
	int fl = fcntl(srv->fd, F_GETFL);
	if (fl < 0 || fcntl(srv->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		r = -errno;
		log_error("cannot use the %s socket: %s", what, strerror(-r));
		http_unix_close(srv);
		return r;
	}
	r = http_linger_start(&srv->linger);
	if (r == 0)
		r = http_deadline_start(&srv->deadline, sc->request_timeout);
	if (r < 0) {
		log_error("cannot start the %s socket's guard threads: %s", what, strerror(-r));
		http_unix_close(srv);
		return r;
	}
	srv->n_workers = threads ? threads : 1;
	srv->workers = calloc(srv->n_workers, sizeof(*srv->workers));
	srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!srv->workers || srv->stop_fd < 0) {
		r = srv->workers ? -errno : -ENOMEM;
		log_error("cannot start the HTTP server on the %s socket: %s", what, strerror(-r));
		http_unix_close(srv);
		return r;
	}
	for (unsigned i = 0; i < srv->n_workers; i++) {
		snprintf(srv->workers[i].name, sizeof(srv->workers[i].name), "%.8s-worker", what);
		srv->workers[i].linger = &srv->linger;
		srv->workers[i].deadline = &srv->deadline;
		srv->workers[i].open_gauge = metrics_series(&counters.connections_open, what, NULL);
		srv->workers[i].mhd =
		    worker_start(&srv->workers[i], max_connections, handler, completed, cls);
		if (!srv->workers[i].mhd) {
			log_error("cannot start the HTTP server on the %s socket", what);
			http_unix_close(srv);
			return -EIO;
		}
	}
	r = pthread_create(&srv->acceptor, NULL, acceptor, srv);
	if (r != 0) {
		log_error("cannot start the %s socket's acceptor: %s", what, strerror(r));
		http_unix_close(srv);
		return -r;
	}
	srv->accepting = true;
	char name[16];
	snprintf(name, sizeof(name), "%.8s-accept", what);
	pthread_setname_np(srv->acceptor, name);
	return 0;
}

void http_unix_close(struct http_unix_server *srv)
{
	if (srv->accepting) {
		uint64_t one = 1;
		if (write(srv->stop_fd, &one, sizeof(one)) != sizeof(one))
			log_error("http: cannot stop the acceptor: %s", strerror(errno));
		else
			pthread_join(srv->acceptor, NULL);
		srv->accepting = false;
	}
	for (unsigned i = 0; srv->workers && i < srv->n_workers; i++)
		if (srv->workers[i].mhd)
			MHD_stop_daemon(srv->workers[i].mhd);
	free(srv->workers);
	/* After the workers: their last closes may still hand connections over. */
	http_linger_stop(&srv->linger);
	http_deadline_stop(&srv->deadline);
	if (srv->fd >= 0)
		close(srv->fd);
	if (srv->stop_fd >= 0)
		close(srv->stop_fd);
	if (srv->path)
		unlink(srv->path);
	free(srv->path);
	*srv = (struct http_unix_server){.fd = -1, .stop_fd = -1};
}

int http_tcp_set_init(struct http_tcp_set *set, size_t total, uint64_t request_timeout,
                      struct metric_series *open_gauge, const char *what)
{
	int r;

	set->guards = (struct http_guards){&set->linger, &set->deadline, open_gauge};
	r = http_linger_start(&set->linger);
	if (r == 0)
		r = http_deadline_start(&set->deadline, request_timeout);
	if (r < 0) {
		log_error("cannot start the %s guard threads: %s", what, strerror(-r));
		return r;
	}
	set->mhd = calloc(total, sizeof(*set->mhd));
	set->fds = calloc(total, sizeof(*set->fds));
	return set->mhd && set->fds ? 0 : -ENOMEM;
}

void http_tcp_set_stop(struct http_tcp_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		/* libmicrohttpd closes the listen socket it was given. */
		if (set->mhd && set->mhd[i])
			MHD_stop_daemon(set->mhd[i]);
		else if (set->fds && set->fds[i] >= 0)
			close(set->fds[i]);
	}
	http_linger_stop(&set->linger);
	http_deadline_stop(&set->deadline);
	free(set->mhd);
	free(set->fds);
	set->mhd = NULL;
	set->fds = NULL;
	set->n = 0;
}

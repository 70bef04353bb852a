/* JSON answers and libmicrohttpd log routing for both HTTP front ends. */
#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"

enum MHD_Result http_reply_json(struct MHD_Connection *c, unsigned status, const char *body)
{
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result r;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	r = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return r;
}

enum MHD_Result http_reply_error(struct MHD_Connection *c, unsigned status, const char *code,
                                 const char *message)
{
	json_t *obj = json_pack("{s:s, s:s}", "error", code, "message", message);
	char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	enum MHD_Result r;

	json_decref(obj);
	if (!body)
		return MHD_NO;
	r = http_reply_json(c, status, body);
	free(body);
	return r;
}

enum MHD_Result http_reply_method(struct MHD_Connection *c, const char *allow)
{
	char msg[64];
	json_t *obj;
	char *body;
	struct MHD_Response *resp;
	enum MHD_Result r;

	snprintf(msg, sizeof(msg), "allowed: %s", allow);
	obj = json_pack("{s:s, s:s}", "error", "method_not_allowed", "message", msg);
	body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!body)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	r = MHD_queue_response(c, MHD_HTTP_METHOD_NOT_ALLOWED, resp);
	MHD_destroy_response(resp);
	return r;
}

void http_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	log_warning("http: %s", line);
}

void http_on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                        enum MHD_ConnectionNotificationCode code)
{
	struct http_peer *conn;

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (*socket_ctx)
			peer_clear(&((struct http_peer *)*socket_ctx)->peer);
		free(*socket_ctx);
		*socket_ctx = NULL;
		return;
	}
	conn = calloc(1, sizeof(*conn));
	if (!conn)
		return;
	conn->err = peer_from_fd(
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD)->connect_fd, &conn->peer);
	*socket_ctx = conn;
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
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(sc->path, sc->mode) < 0 ||
	    (sc->has_group && chown(sc->path, (uid_t)-1, sc->gid) < 0) || listen(fd, 128) < 0) {
		r = -errno;
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

int http_unix_serve(struct http_unix_server *srv, const struct sock_conf *sc, int fd,
                    unsigned threads, MHD_AccessHandlerCallback handler,
                    MHD_RequestCompletedCallback completed, void *cls, const char *what)
{
	int r = 0;

	srv->mhd = NULL;
	srv->fd = fd;
	srv->path = NULL;
	if (fd < 0) {
		r = http_unix_listen(sc, &srv->fd);
		if (r < 0) {
			log_error("cannot listen on %s: %s", sc->path, strerror(-r));
			return r;
		}
		srv->path = strdup(sc->path);
	}
	/* A pool only when asked for: libmicrohttpd warns about a pool of one. */
	struct MHD_OptionItem pool[] = {
	    {threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, threads, NULL},
	    {MHD_OPTION_END, 0, NULL},
	};
	srv->mhd = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
	    handler, cls, MHD_OPTION_EXTERNAL_LOGGER, http_log, cls, MHD_OPTION_LISTEN_SOCKET,
	    srv->fd, MHD_OPTION_NOTIFY_CONNECTION, http_on_connection, cls,
	    MHD_OPTION_NOTIFY_COMPLETED, completed, cls, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)60, MHD_OPTION_ARRAY, pool, MHD_OPTION_END);
	if (!srv->mhd) {
		log_error("cannot start the HTTP server on the %s socket", what);
		http_unix_close(srv);
		return -EIO;
	}
	return 0;
}

void http_unix_close(struct http_unix_server *srv)
{
	/* libmicrohttpd closes the listen socket it was given. */
	if (srv->mhd)
		MHD_stop_daemon(srv->mhd);
	else if (srv->fd >= 0)
		close(srv->fd);
	if (srv->path)
		unlink(srv->path);
	free(srv->path);
	srv->mhd = NULL;
	srv->fd = -1;
	srv->path = NULL;
}

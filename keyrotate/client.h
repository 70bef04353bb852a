/* The admin socket: where it is, and one HTTP/1.1 + JSON request on it (docs/admin-api.md). */
#pragma once
#include <stdbool.h>

#include <jansson.h>

#define DEFAULT_CONFIG "/etc/tokensign/tokensignd.conf"
#define DEFAULT_SOCKET "/run/tokensignd/admin.sock"

/* The [admin] socket of the configuration file path; only that key is read, so a file that the
 * daemon would refuse for other reasons still tells us where its admin socket is. Returns 0 and
 * *ret (free() it), the negative errno of opening the file, or -ENODATA when it names no admin
 * socket. Prints nothing. */
int client_socket_from_config(const char *path, char **ret);

/* One request on the admin socket; path must already be escaped (client_escape), body is sent
 * as JSON when not NULL, about (may be NULL) names what the request is about in messages, e.g.
 * the issuer. On a 2xx answer returns 0 and *ret, the answer's JSON value
 * (json_decref() it). Otherwise says why on stderr and returns a negative errno: what connect()
 * failed with (see client_unreachable()), -EREMOTEIO when the daemon answered with an error,
 * -EBADMSG for an answer that is not JSON, -ETIMEDOUT, -EIO for anything else. */
int client_call(const char *socket, const char *method, const char *path, const json_t *body,
                const char *about, json_t **ret);

/* As client_call(), but an answer with an error status is the caller's to explain: returns 0,
 * *ret_status and *ret, the answer's JSON value (for an error status NULL when it is not
 * JSON; json_decref() it), having said nothing about it. */
int client_call_status(const char *socket, const char *method, const char *path, const json_t *body,
                       long *ret_status, json_t **ret);

/* Says on stderr what the daemon answered with error status (its "message" when body has
 * one); about as for client_call(). Returns -EREMOTEIO. */
int client_refusal(long status, const json_t *body, const char *about);

/* True when r, from client_call(), means the daemon could not be reached at all. */
bool client_unreachable(int r);

/* s escaped for use as one path segment or query value, or NULL when out of memory; free() it. */
char *client_escape(const char *s);

/* Writes "/v1/issuers/ISSUER/VERB" (issuer escaped) into path. Returns 0, -ENOMEM, or
 * -ENAMETOOLONG (said on stderr). */
int client_issuer_path(char *path, size_t size, const char *issuer, const char *verb);

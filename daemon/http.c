/* JSON answers and libmicrohttpd log routing for both HTTP front ends. */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

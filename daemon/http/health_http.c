/* The health probes over HTTP, shared by the sign socket and the public JWKS listener, so that
 * both answer the same bodies and statuses. */
#include "health_http.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "health.h"
#include "http.h"

bool health_http_path(const char *url)
{
	return strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0;
}

enum MHD_Result health_http_reply(struct daemon *d, struct MHD_Connection *c, const char *url,
                                  const char *method)
{
	const char *why = NULL;

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return http_reply_method(c, "GET, HEAD");
	if (strcmp(url, "/healthz") == 0)
		return http_reply_json(c, MHD_HTTP_OK, "{\"status\":\"ok\"}");
	if (health_ready(d, &why))
		return http_reply_json(c, MHD_HTTP_OK, "{\"status\":\"ready\"}");
	json_t *obj = json_pack("{s:s, s:s}", "status", "not_ready", "reason", why);
	char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	enum MHD_Result r = body ? http_reply_json(c, MHD_HTTP_SERVICE_UNAVAILABLE, body) : MHD_NO;
	json_decref(obj);
	free(body);
	return r;
}

/* Small helpers shared by the two HTTP front ends (sign socket, public JWKS). */
#pragma once
#include <microhttpd.h>

/* Queues a JSON body (copied) with status. */
enum MHD_Result http_reply_json(struct MHD_Connection *c, unsigned status, const char *body);

/* Queues {"error": code, "message": message}. */
enum MHD_Result http_reply_error(struct MHD_Connection *c, unsigned status, const char *code,
                                 const char *message);

/* Queues a 405 with an Allow header. */
enum MHD_Result http_reply_method(struct MHD_Connection *c, const char *allow);

/* Logs libmicrohttpd's own messages through our log. */
void http_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Request-line and header rules that libmicrohttpd 0.9.75 does not enforce (smuggling shapes). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

/* What a request broke, for the 400's message; HTTP_STRICT_OK when nothing. */
enum http_strict_fault {
	HTTP_STRICT_OK = 0,
	HTTP_STRICT_BAD_METHOD,        /* not an RFC 9110 token */
	HTTP_STRICT_BAD_TARGET,        /* a byte outside visible ASCII, or a malformed %-escape */
	HTTP_STRICT_ESCAPED_CONTROL,   /* %00..%1F or %7F */
	HTTP_STRICT_BAD_HEADER_NAME,   /* not a token */
	HTTP_STRICT_BAD_HEADER_VALUE,  /* a control byte other than HTAB (a bare CR, say) */
	HTTP_STRICT_REPEATED_LENGTH,   /* Content-Length more than once */
	HTTP_STRICT_BAD_LENGTH,        /* Content-Length not 1*DIGIT */
	HTTP_STRICT_BAD_CODING,        /* Transfer-Encoding repeated or other than "chunked" */
	HTTP_STRICT_LENGTH_AND_CODING, /* both Content-Length and Transfer-Encoding */
	HTTP_STRICT_REPEATED_HOST,
};

/* The headers seen so far of one request. Zero-initialise, feed every header, then finish. */
struct http_strict_headers {
	unsigned content_length;
	unsigned transfer_encoding;
	unsigned host;
	enum http_strict_fault fault; /* the first one found */
};

enum http_strict_fault http_strict_method(const char *method);

/* target: the request target exactly as received, len bytes (it may hold a NUL). */
enum http_strict_fault http_strict_target(const char *target, size_t len);

void http_strict_header(struct http_strict_headers *h, const char *name, const char *value);
enum http_strict_fault http_strict_finish(const struct http_strict_headers *h);

/* A short English sentence for the 400's "message". */
const char *http_strict_reason(enum http_strict_fault f);

/* Request-line and header rules that libmicrohttpd 0.9.75 does not enforce (smuggling shapes).
 * Pure functions over what libmicrohttpd hands the daemon; http.c applies them. */
#include "http_strict.h"

#include <string.h>
#include <strings.h>

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static bool is_token(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (!is_tchar((unsigned char)*s))
			return false;
	return true;
}

static int hex_value(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

enum http_strict_fault http_strict_method(const char *method)
{
	return is_token(method) ? HTTP_STRICT_OK : HTTP_STRICT_BAD_METHOD;
}

/* Only visible ASCII, and every %-escape complete: a decoded NUL or control byte would reach
 * routing and logs as something the raw text does not show. */
enum http_strict_fault http_strict_target(const char *target, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)target[i];
		int hi, lo;

		if (ch <= 0x20 || ch >= 0x7f)
			return HTTP_STRICT_BAD_TARGET;
		if (ch != '%')
			continue;
		if (len - i < 3 || (hi = hex_value((unsigned char)target[i + 1])) < 0 ||
		    (lo = hex_value((unsigned char)target[i + 2])) < 0)
			return HTTP_STRICT_BAD_TARGET;
		if (hi * 16 + lo < 0x20 || hi * 16 + lo == 0x7f)
			return HTTP_STRICT_ESCAPED_CONTROL;
		i += 2;
	}
	return len > 0 ? HTTP_STRICT_OK : HTTP_STRICT_BAD_TARGET;
}

/* field-value: HTAB, SP, VCHAR and obs-text (RFC 9110 §5.5). libmicrohttpd 0.9.75 ends a line
 * only at LF, so a bare CR arrives inside a value, with whatever it was meant to hide. */
static bool value_ok(const char *v)
{
	for (; *v; v++) {
		unsigned char ch = (unsigned char)*v;
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return false;
	}
	return true;
}

static bool digits(const char *v)
{
	return *v && strspn(v, "0123456789") == strlen(v);
}

static void fault(struct http_strict_headers *h, enum http_strict_fault f)
{
	if (h->fault == HTTP_STRICT_OK)
		h->fault = f;
}

void http_strict_header(struct http_strict_headers *h, const char *name, const char *value)
{
	if (!is_token(name))
		fault(h, HTTP_STRICT_BAD_HEADER_NAME);
	if (!value || !value_ok(value))
		fault(h, HTTP_STRICT_BAD_HEADER_VALUE);
	if (!name || !value)
		return;
	if (strcasecmp(name, "Content-Length") == 0) {
		/* Even two equal values: a front end may have taken either. */
		if (h->content_length++ > 0)
			fault(h, HTTP_STRICT_REPEATED_LENGTH);
		if (!digits(value))
			fault(h, HTTP_STRICT_BAD_LENGTH);
	} else if (strcasecmp(name, "Transfer-Encoding") == 0) {
		if (h->transfer_encoding++ > 0 || strcasecmp(value, "chunked") != 0)
			fault(h, HTTP_STRICT_BAD_CODING);
	} else if (strcasecmp(name, "Host") == 0 && h->host++ > 0)
		fault(h, HTTP_STRICT_REPEATED_HOST);
}

enum http_strict_fault http_strict_finish(const struct http_strict_headers *h)
{
	if (h->fault != HTTP_STRICT_OK)
		return h->fault;
	if (h->content_length && h->transfer_encoding)
		return HTTP_STRICT_LENGTH_AND_CODING;
	return HTTP_STRICT_OK;
}

const char *http_strict_reason(enum http_strict_fault f)
{
	switch (f) {
	case HTTP_STRICT_OK:
		return "no fault";
	case HTTP_STRICT_BAD_METHOD:
		return "the method is not a token";
	case HTTP_STRICT_BAD_TARGET:
		return "the request target holds a byte outside visible ASCII or a broken %-escape";
	case HTTP_STRICT_ESCAPED_CONTROL:
		return "the request target encodes a NUL or control character";
	case HTTP_STRICT_BAD_HEADER_NAME:
		return "a header name is not a token";
	case HTTP_STRICT_BAD_HEADER_VALUE:
		return "a header value holds a control character (a bare CR, say)";
	case HTTP_STRICT_REPEATED_LENGTH:
		return "Content-Length is given more than once";
	case HTTP_STRICT_BAD_LENGTH:
		return "Content-Length is not a decimal number";
	case HTTP_STRICT_BAD_CODING:
		return "Transfer-Encoding must be exactly one \"chunked\"";
	case HTTP_STRICT_LENGTH_AND_CODING:
		return "Content-Length and Transfer-Encoding together";
	case HTTP_STRICT_REPEATED_HOST:
		return "Host is given more than once";
	}
	return "malformed request";
}

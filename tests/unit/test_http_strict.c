/* Unit tests of daemon/http_strict.c: the request-line and header rules, shape by shape. */
#include "http_strict.h"
#include "unit.h"

#include <stdarg.h>

#define T(s) http_strict_target((s), sizeof(s) - 1)

static void test_target(void)
{
	CHECK_INT(T("/v1/issuers/main/sign"), HTTP_STRICT_OK);
	CHECK_INT(T("/a?b=c&d=%41%7e%2F"), HTTP_STRICT_OK);
	CHECK_INT(T("/a%20b"), HTTP_STRICT_OK);
	CHECK_INT(T(""), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/a\0b"), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/a b"), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/a\tb"), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/a\x01"), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/a\x7f"), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/\xc3\xa9"), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/a%00"), HTTP_STRICT_ESCAPED_CONTROL);
	CHECK_INT(T("/a%0d%0a"), HTTP_STRICT_ESCAPED_CONTROL);
	CHECK_INT(T("/a%1F"), HTTP_STRICT_ESCAPED_CONTROL);
	CHECK_INT(T("/a%7f"), HTTP_STRICT_ESCAPED_CONTROL);
	CHECK_INT(T("/a%"), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/a%4"), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/a%g0"), HTTP_STRICT_BAD_TARGET);
	CHECK_INT(T("/a%%41"), HTTP_STRICT_BAD_TARGET);
}

static void test_method(void)
{
	CHECK_INT(http_strict_method("GET"), HTTP_STRICT_OK);
	CHECK_INT(http_strict_method("M-SEARCH"), HTTP_STRICT_OK);
	CHECK_INT(http_strict_method(""), HTTP_STRICT_BAD_METHOD);
	CHECK_INT(http_strict_method("P(ST"), HTTP_STRICT_BAD_METHOD);
	CHECK_INT(http_strict_method("GE\x01T"), HTTP_STRICT_BAD_METHOD);
	CHECK_INT(http_strict_method(NULL), HTTP_STRICT_BAD_METHOD);
}

/* The headers given as name, value, ..., NULL. */
static enum http_strict_fault headers(const char *first, ...)
{
	struct http_strict_headers h = {0};
	va_list ap;

	va_start(ap, first);
	for (const char *name = first; name; name = va_arg(ap, const char *))
		http_strict_header(&h, name, va_arg(ap, const char *));
	va_end(ap);
	return http_strict_finish(&h);
}

static void test_headers(void)
{
	CHECK_INT(headers("Host", "x", "Content-Length", "12", NULL), HTTP_STRICT_OK);
	CHECK_INT(headers("Host", "x", "Transfer-Encoding", "Chunked", NULL), HTTP_STRICT_OK);
	CHECK_INT(headers("X-A", "a\tb \xc3\xa9", NULL), HTTP_STRICT_OK);
	CHECK_INT(headers("content-length", "1", "Content-Length", "2", NULL),
	          HTTP_STRICT_REPEATED_LENGTH);
	CHECK_INT(headers("Content-Length", "1", "Content-Length", "1", NULL),
	          HTTP_STRICT_REPEATED_LENGTH);
	CHECK_INT(headers("Content-Length", "+1", NULL), HTTP_STRICT_BAD_LENGTH);
	CHECK_INT(headers("Content-Length", "1, 1", NULL), HTTP_STRICT_BAD_LENGTH);
	CHECK_INT(headers("Content-Length", "", NULL), HTTP_STRICT_BAD_LENGTH);
	CHECK_INT(headers("Content-Length", "3", "Transfer-Encoding", "chunked", NULL),
	          HTTP_STRICT_LENGTH_AND_CODING);
	CHECK_INT(headers("Transfer-Encoding", "chunked", "Content-Length", "3", NULL),
	          HTTP_STRICT_LENGTH_AND_CODING);
	CHECK_INT(headers("Transfer-Encoding", "gzip, chunked", NULL), HTTP_STRICT_BAD_CODING);
	CHECK_INT(headers("Transfer-Encoding", "chunked", "Transfer-Encoding", "chunked", NULL),
	          HTTP_STRICT_BAD_CODING);
	CHECK_INT(headers("X-A", "a\rTransfer-Encoding: chunked", NULL),
	          HTTP_STRICT_BAD_HEADER_VALUE);
	CHECK_INT(headers("X-A", "a\x01", NULL), HTTP_STRICT_BAD_HEADER_VALUE);
	CHECK_INT(headers("X-A", "a\x7f", NULL), HTTP_STRICT_BAD_HEADER_VALUE);
	CHECK_INT(headers("X-A", "a\nb", NULL), HTTP_STRICT_BAD_HEADER_VALUE);
	CHECK_INT(headers("X A", "a", NULL), HTTP_STRICT_BAD_HEADER_NAME);
	CHECK_INT(headers("", "a", NULL), HTTP_STRICT_BAD_HEADER_NAME);
	CHECK_INT(headers("Host", "a", "host", "b", NULL), HTTP_STRICT_REPEATED_HOST);
	/* the first fault found is the one reported */
	CHECK_INT(headers("X-A", "\x01", "Content-Length", "1", "Content-Length", "1", NULL),
	          HTTP_STRICT_BAD_HEADER_VALUE);
}

static void test_reasons(void)
{
	for (int f = HTTP_STRICT_OK; f <= HTTP_STRICT_REPEATED_HOST; f++) {
		const char *r = http_strict_reason((enum http_strict_fault)f);
		CHECK(r && *r);
	}
}

int main(void)
{
	test_target();
	test_method();
	test_headers();
	test_reasons();
	return unit_finish("http_strict");
}

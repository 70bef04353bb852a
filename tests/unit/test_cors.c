/* Unit tests of daemon/http/cors.c: which Origin is allowed (only one equal byte for byte to a
 * configured origin, and then our copy is what goes out), which preflights pass. */
#include <string.h>

#include "cors.h"
#include "unit.h"

static char *origins[] = {"https://app.example.com", "http://localhost:3000"};

static struct conf list_conf(void)
{
	struct conf c;

	memset(&c, 0, sizeof(c));
	c.jwks.cors_origins = origins;
	c.jwks.n_cors_origins = 2;
	return c;
}

static void test_allow_origin(void)
{
	struct conf c = list_conf(), any, off;
	static const char *const refused[] = {
	    "https://app.example.com/",
	    "https://app.example.co",
	    "https://app.example.com.evil.example",
	    "https://evil.example/https://app.example.com",
	    "HTTPS://APP.EXAMPLE.COM",
	    "https://app.example.com:443",
	    "http://app.example.com",
	    " https://app.example.com",
	    "https://app.example.com ",
	    "https://app.example.com\r\nSet-Cookie: a=b",
	    "https://app.example.com, https://evil.example",
	    "null",
	    "*",
	    "",
	    "http://localhost:30000",
	};
	char longer[9000];

	memset(&any, 0, sizeof(any));
	any.jwks.cors_any = true;
	memset(&off, 0, sizeof(off));

	/* Equal: our own copy goes out, not the request's bytes. */
	const char *req = strdup("https://app.example.com");
	CHECK(cors_allow_origin(&c, req) == origins[0]);
	free((void *)req);
	CHECK(cors_allow_origin(&c, "http://localhost:3000") == origins[1]);
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		CHECK_STR(cors_allow_origin(&c, refused[i]), NULL);
	memset(longer, 'a', sizeof(longer) - 1);
	memcpy(longer, "https://app.example.com", 23);
	longer[sizeof(longer) - 1] = '\0';
	CHECK_STR(cors_allow_origin(&c, longer), NULL);
	CHECK_STR(cors_allow_origin(&c, NULL), NULL);

	/* "*": the same for everyone, even without Origin; never an echo. */
	CHECK_STR(cors_allow_origin(&any, "https://evil.example"), "*");
	CHECK_STR(cors_allow_origin(&any, "null"), "*");
	CHECK_STR(cors_allow_origin(&any, NULL), "*");

	CHECK(cors_enabled(&c) && cors_enabled(&any) && !cors_enabled(&off));
	CHECK_STR(cors_allow_origin(&off, "https://app.example.com"), NULL);
}

static void test_request_headers(void)
{
	CHECK(cors_request_headers_allowed(NULL));
	CHECK(cors_request_headers_allowed(""));
	CHECK(cors_request_headers_allowed("if-none-match"));
	CHECK(cors_request_headers_allowed("cache-control,if-none-match"));
	CHECK(cors_request_headers_allowed(" If-None-Match , Cache-Control "));
	CHECK(cors_request_headers_allowed("if-none-match,,"));
	CHECK(!cors_request_headers_allowed("authorization"));
	CHECK(!cors_request_headers_allowed("if-none-match,authorization"));
	CHECK(!cors_request_headers_allowed("if-none-matc"));
	CHECK(!cors_request_headers_allowed("if-none-match-x"));
	CHECK(!cors_request_headers_allowed("if-none-match x"));
	CHECK(!cors_request_headers_allowed("x-requested-with"));
	CHECK(!cors_request_headers_allowed("content-type"));
}

static enum cors_preflight check(const struct conf *c, const char *origin, const char *method,
                                 const char *headers)
{
	struct cors_request rq = {.origin = origin,
	                          .method = method,
	                          .headers = headers,
	                          .n_origin = origin ? 1 : 0,
	                          .n_method = method ? 1 : 0,
	                          .n_headers = headers ? 1 : 0};
	return cors_preflight_check(c, &rq);
}

static void test_preflight(void)
{
	struct conf c = list_conf(), any, off;
	struct cors_request twice = {
	    .origin = "https://app.example.com", .method = "GET", .n_origin = 2, .n_method = 1};
	const char *app = "https://app.example.com";

	memset(&any, 0, sizeof(any));
	any.jwks.cors_any = true;
	memset(&off, 0, sizeof(off));

	CHECK_INT(check(&c, app, "GET", NULL), CORS_PREFLIGHT_OK);
	CHECK_INT(check(&c, app, "HEAD", "if-none-match"), CORS_PREFLIGHT_OK);
	CHECK_INT(check(&any, "https://anyone.example", "GET", "cache-control"), CORS_PREFLIGHT_OK);
	/* Not a preflight: CORS off, no Access-Control-Request-Method, no Origin. */
	CHECK_INT(check(&off, app, "GET", NULL), CORS_NOT_PREFLIGHT);
	CHECK_INT(check(&c, app, NULL, NULL), CORS_NOT_PREFLIGHT);
	CHECK_INT(check(&c, NULL, "GET", NULL), CORS_NOT_PREFLIGHT);
	/* Refused. */
	CHECK_INT(check(&c, "https://evil.example", "GET", NULL), CORS_REFUSED_ORIGIN);
	CHECK_INT(check(&c, "null", "GET", NULL), CORS_REFUSED_ORIGIN);
	CHECK_INT(cors_preflight_check(&c, &twice), CORS_REFUSED_ORIGIN);
	twice.n_origin = 1;
	twice.n_method = 2;
	CHECK_INT(cors_preflight_check(&c, &twice), CORS_REFUSED_METHOD);
	for (const char *const *m =
	         (const char *const[]){"POST", "DELETE", "PUT", "OPTIONS", "get", "GET ", "", NULL};
	     *m; m++)
		CHECK_INT(check(&c, app, *m, NULL), CORS_REFUSED_METHOD);
	CHECK_INT(check(&any, app, "POST", NULL), CORS_REFUSED_METHOD);
	CHECK_INT(check(&c, app, "GET", "authorization"), CORS_REFUSED_HEADERS);
	CHECK_INT(check(&any, app, "GET", "x-api-key, if-none-match"), CORS_REFUSED_HEADERS);
}

int main(void)
{
	test_allow_origin();
	test_request_headers();
	test_preflight();
	return unit_finish("cors");
}

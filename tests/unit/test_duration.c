/* Unit tests of lib/duration.c: the units of tokensignd.conf(5) (SYNTAX), strict rejection, the
 * 10-year cap, format. */
#include <errno.h>

#include "duration.h"
#include "unit.h"

#define UNTOUCHED 0xdeadbeefULL

static void check_ok(const char *s, uint64_t expected)
{
	uint64_t v = UNTOUCHED;
	int r = duration_parse(s, &v);

	if (r != 0 || v != expected)
		fprintf(stderr, "    input: \"%s\"\n", s);
	CHECK_INT(r, 0);
	CHECK_U64(v, expected);
}

static void check_fails(const char *s, int expected)
{
	uint64_t v = UNTOUCHED;
	int r = duration_parse(s, &v);

	if (r != expected)
		fprintf(stderr, "    input: \"%s\"\n", s);
	CHECK_INT(r, expected);
	CHECK_U64(v, UNTOUCHED);
}

static void test_parse(void)
{
	check_ok("90s", 90);
	check_ok("1s", 1);
	check_ok("15m", 15 * 60);
	check_ok("5min", 5 * 60);
	check_ok("1h", 3600);
	check_ok("30d", 30 * 86400);
	check_ok("2w", 14 * 86400);
	check_ok("1h30m", 5400);
	check_ok("1d12h", 129600);
	check_ok("1w1d1h1m1s", 7 * 86400 + 86400 + 3600 + 60 + 1);
	check_ok("2min30s", 150);
}

static void test_rejects(void)
{
	static const char *const bad[] = {
	    "",    "10",   "m",   "10x",   "-5m",    "0s",   " 5m",        "5 m", "1.5h",
	    "5m ", "+5m",  "5M",  "5S",    "1hm",    "h1",   "5ms",        "5mi", "5mins",
	    "1y",  "0m0s", "5m-", "0x10s", "1h 30m", "\t5m", "5\xc2\xb5s",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check_fails(bad[i], -EINVAL);
	{
		uint64_t v = UNTOUCHED;
		CHECK_INT(duration_parse(NULL, &v), -EINVAL);
		CHECK_U64(v, UNTOUCHED);
	}
}

static void test_range(void)
{
	CHECK_U64(DURATION_MAX_SECONDS, 316224000ULL);
	check_ok("316224000s", DURATION_MAX_SECONDS);
	check_ok("3660d", DURATION_MAX_SECONDS);
	check_fails("316224001s", -ERANGE);
	check_fails("3661d", -ERANGE);
	check_fails("523w", -ERANGE);
	check_fails("3660d1s", -ERANGE);                   /* the sum counts, not each term */
	check_fails("100000000000000000000000s", -ERANGE); /* would overflow uint64 */
	check_fails("18446744073709551617s", -ERANGE);
	check_fails("999999999999w", -ERANGE);
}

static void check_format(uint64_t seconds, const char *expected)
{
	char buf[64];

	memset(buf, 'X', sizeof(buf));
	duration_format(seconds, buf, sizeof(buf));
	CHECK_STR(buf, expected);
}

static void test_format(void)
{
	char buf[8];

	check_format(0, "0s");
	check_format(45, "45s");
	check_format(60, "1m");
	check_format(90, "1m30s");
	check_format(3600, "1h");
	check_format(3661, "1h1m1s");
	check_format(93600, "1d2h");
	check_format(86400, "1d");
	check_format(7 * 86400, "1w");
	check_format(30 * 86400, "4w2d");
	check_format(DURATION_MAX_SECONDS, "522w6d");

	/* Every formatted value parses back to itself. */
	for (uint64_t s = 1; s < 200000; s += 997) {
		char f[64];
		uint64_t back = 0;
		duration_format(s, f, sizeof(f));
		CHECK_INT(duration_parse(f, &back), 0);
		CHECK_U64(back, s);
	}

	/* A short buffer is never overrun and stays NUL-terminated. */
	memset(buf, 'X', sizeof(buf));
	duration_format(93600, buf, 4);
	CHECK(memchr(buf, '\0', 4) != NULL);
	CHECK(buf[4] == 'X');
	CHECK(strncmp(buf, "1d2h", strlen(buf)) == 0);
	memset(buf, 'X', sizeof(buf));
	duration_format(3661, buf, 1);
	CHECK_INT(buf[0], '\0');
	CHECK(buf[1] == 'X');
	duration_format(3661, buf, 0);
	CHECK(buf[1] == 'X');
}

int main(void)
{
	test_parse();
	test_rejects();
	test_range();
	test_format();
	return unit_finish("duration");
}

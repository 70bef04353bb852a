/* Unit tests of daemon/ratelimit.c: the burst, the sustained rate, and the suppressed count. */
#include "ratelimit.h"
#include "unit.h"

#define S  1000000000ull
#define MS 1000000ull

/* How many of n lines, offered at equal steps over span_ns from t0, pass. */
static unsigned offered(struct ratelimit *rl, uint64_t t0, uint64_t span_ns, unsigned n)
{
	unsigned passed = 0;

	for (unsigned i = 0; i < n; i++)
		passed += ratelimit_take(rl, t0 + span_ns * i / n);
	return passed;
}

static void test_burst_then_rate(void)
{
	struct ratelimit rl = {0};
	uint64_t span = 0;

	/* 10,000 lines in the same instant: the burst passes, nothing more. */
	CHECK_INT(offered(&rl, 1, 0, 10000), RATELIMIT_BURST);
	CHECK_U64(rl.suppressed, 10000 - RATELIMIT_BURST);
	/* A flood for 60 s: the rate, within one line. */
	unsigned n = offered(&rl, 1 + 1 * MS, 60 * S, 600000);
	CHECK(n >= 60 * RATELIMIT_RATE - 1 && n <= 60 * RATELIMIT_RATE + 1);
	/* Reported at most once per period, the count reset. */
	CHECK(ratelimit_due(&rl, 61 * S, &span) > 0);
	CHECK(span >= RATELIMIT_REPORT_S * S);
	CHECK_U64(ratelimit_due(&rl, 61 * S, &span), 0);
	CHECK_U64(rl.suppressed, 0);
}

static void test_quiet_refills(void)
{
	struct ratelimit rl = {0};
	uint64_t span = 0;

	CHECK_INT(offered(&rl, 1, 0, 1000), RATELIMIT_BURST);
	/* Not yet due: the first suppression was less than a period ago. */
	CHECK_U64(ratelimit_due(&rl, 1 + (RATELIMIT_REPORT_S - 1) * S, &span), 0);
	CHECK_U64(ratelimit_due(&rl, 1 + RATELIMIT_REPORT_S * S, &span), 1000 - RATELIMIT_BURST);
	/* After a quiet spell as long as the burst takes to refill, a whole burst again. */
	uint64_t t = 1 + (RATELIMIT_BURST / RATELIMIT_RATE + 1) * S;
	CHECK_INT(offered(&rl, t, 0, 1000), RATELIMIT_BURST);
	/* A clock that steps back (threads) never adds credit. */
	CHECK(!ratelimit_take(&rl, t - S));
}

static void test_slow_lines_all_pass(void)
{
	struct ratelimit rl = {0};

	/* Below the rate nothing is ever held back. */
	CHECK_INT(offered(&rl, 1, 100 * S, 100 * RATELIMIT_RATE / 2), 100 * RATELIMIT_RATE / 2);
	CHECK_U64(rl.suppressed, 0);
}

int main(void)
{
	test_burst_then_rate();
	test_quiet_refills();
	test_slow_lines_all_pass();
	return unit_finish("ratelimit");
}

/* Unit tests of daemon/budget.c: connection caps from RLIMIT_NOFILE. */
#include <errno.h>

#include "budget.h"
#include "unit.h"

static void test_derived(void)
{
	struct budget want = {0}, b;

	/* 1024 - 256 - 48 = 720: admin 16, sign 234, two JWKS listeners 235 each */
	CHECK_INT(budget_plan(1024, 48, 2, &want, &b), 0);
	CHECK_INT(b.admin, 16);
	CHECK_INT(b.sign, 234);
	CHECK_INT(b.jwks, 235);
	CHECK_INT(b.jwks_per_address, BUDGET_PER_ADDRESS);
	CHECK(b.sign + b.admin + 2 * b.jwks + 256 + 48 <= 1024);
	/* a big limit: still everything inside it */
	CHECK_INT(budget_plan(65536, 48, 1, &want, &b), 0);
	CHECK(b.sign + b.admin + b.jwks + 256 + 48 <= 65536);
	CHECK(b.jwks > 40000);
}

static void test_configured(void)
{
	struct budget want = {.sign = 100, .jwks_per_address = 4}, b;

	CHECK_INT(budget_plan(1024, 48, 1, &want, &b), 0);
	CHECK_INT(b.sign, 100);
	CHECK_INT(b.admin, 16);
	CHECK_INT(b.jwks, 720 - 100 - 16);
	CHECK_INT(b.jwks_per_address, 4);
	want = (struct budget){.sign = 500, .jwks = 300};
	CHECK_INT(budget_plan(1024, 48, 1, &want, &b), -ENOSPC);
	want = (struct budget){.jwks = 10, .jwks_per_address = 50};
	CHECK_INT(budget_plan(1024, 48, 1, &want, &b), 0);
	CHECK_INT(b.jwks_per_address, 10); /* never above the listener's cap */
	CHECK_INT(b.jwks, 10);
	CHECK_INT(b.sign, 720 - 16 - 10);
}

static void test_too_small(void)
{
	struct budget want = {0}, b = {.sign = 7};

	CHECK_INT(budget_plan(256, 0, 1, &want, &b), -ENOSPC);
	CHECK_INT(b.sign, 7); /* untouched on failure */
	CHECK_INT(budget_plan(300, 48, 1, &want, &b), -ENOSPC);
	CHECK_INT(budget_plan(320, 48, 1, &want, &b), 0);
	CHECK(b.sign >= 1 && b.admin >= 1 && b.jwks >= 1);
}

int main(void)
{
	test_derived();
	test_configured();
	test_too_small();
	return unit_finish("budget");
}

/* The descriptor budget: how many connections each listener may hold, from RLIMIT_NOFILE.
 * Every idle connection costs a descriptor; with none left, the token's module cannot open
 * its files and signing fails until restart. Capping each listener below the limit keeps a
 * reserve that no client can take. */
#include "budget.h"

#include <errno.h>
#include <sys/resource.h>

static unsigned min_u(unsigned long a, unsigned long b)
{
	return (unsigned)(a < b ? a : b);
}

/* Shares left between the caps not configured; returns what stays unshared. */
static unsigned long share(unsigned long left, size_t n_jwks, struct budget *b)
{
	if (b->admin == 0) {
		b->admin = min_u(BUDGET_ADMIN, left / 8);
		left -= b->admin;
	}
	if (b->sign == 0 && b->jwks == 0) {
		b->sign = (unsigned)(left / 3);
		left -= b->sign;
	} else if (b->sign == 0) {
		b->sign = min_u(left, ~0u);
		left -= b->sign;
	}
	if (b->jwks == 0 && n_jwks > 0) {
		b->jwks = min_u(left / n_jwks, ~0u);
		left -= (unsigned long)b->jwks * n_jwks;
	}
	return left;
}

int budget_plan(unsigned long nofile, unsigned linger_fds, size_t n_jwks, const struct budget *want,
                struct budget *ret)
{
	struct budget b = *want;
	unsigned long fixed = BUDGET_RESERVE + (unsigned long)linger_fds, left, asked;

	if (nofile <= fixed)
		return -ENOSPC;
	left = nofile - fixed;
	asked = (unsigned long)b.sign + b.admin + (unsigned long)b.jwks * n_jwks;
	if (asked > left)
		return -ENOSPC;
	share(left - asked, n_jwks, &b);
	if (b.sign == 0 || b.admin == 0 || (n_jwks > 0 && b.jwks == 0))
		return -ENOSPC;
	if (b.jwks_per_address == 0)
		b.jwks_per_address = BUDGET_PER_ADDRESS;
	if (b.jwks_per_address > b.jwks)
		b.jwks_per_address = b.jwks;
	*ret = b;
	return 0;
}

unsigned long budget_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	/* epoll everywhere, no select(): descriptors above 1024 are fine. The unit's seccomp
	 * filter may refuse this; then LimitNOFILE= has set both already. */
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit raised = {rl.rlim_max, rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
			rl.rlim_cur = rl.rlim_max;
	}
	return rl.rlim_cur == RLIM_INFINITY ? 1UL << 20 : (unsigned long)rl.rlim_cur;
}

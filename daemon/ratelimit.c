/* The token bucket of ratelimit.h, in integer nanoseconds of credit. */
#include "ratelimit.h"

#define NS_PER_S  1000000000ull
#define LINE_COST (NS_PER_S / RATELIMIT_RATE)
#define FULL      (LINE_COST * RATELIMIT_BURST)

bool ratelimit_take(struct ratelimit *rl, uint64_t now_ns)
{
	if (rl->last_ns == 0)
		rl->credit_ns = FULL;
	else if (now_ns > rl->last_ns)
		rl->credit_ns += now_ns - rl->last_ns;
	if (rl->credit_ns > FULL)
		rl->credit_ns = FULL;
	/* Threads may pass times slightly out of order: the clock never runs back here. */
	if (now_ns > rl->last_ns)
		rl->last_ns = now_ns;
	if (rl->credit_ns >= LINE_COST) {
		rl->credit_ns -= LINE_COST;
		return true;
	}
	if (rl->suppressed++ == 0)
		rl->since_ns = now_ns;
	return false;
}

uint64_t ratelimit_due(struct ratelimit *rl, uint64_t now_ns, uint64_t *ret_span_ns)
{
	uint64_t n = rl->suppressed;

	if (n == 0 || now_ns < rl->since_ns + RATELIMIT_REPORT_S * NS_PER_S)
		return 0;
	*ret_span_ns = now_ns - rl->since_ns;
	rl->suppressed = 0;
	return n;
}

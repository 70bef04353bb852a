/* A token bucket for log lines, and the count of lines it held back (pure logic: time is an
 * argument). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* Lines a second on average, lines at once after a quiet spell, and how often the count of
 * held-back lines is reported while a flood lasts (docs/operations.md, "Log rate limits"). */
#define RATELIMIT_RATE     20
#define RATELIMIT_BURST    100
#define RATELIMIT_REPORT_S 10

struct ratelimit {
	uint64_t credit_ns;  /* time credit: a line costs 1 s / RATELIMIT_RATE of it */
	uint64_t last_ns;    /* when the credit was last brought up to date; 0: never (full) */
	uint64_t suppressed; /* lines held back since the last report */
	uint64_t since_ns;   /* when the first of them was held back */
};

/* True when a line may be written at now_ns (a monotonic clock, > 0); false counts it as
 * suppressed. */
bool ratelimit_take(struct ratelimit *rl, uint64_t now_ns);

/* The number of suppressed lines to report at now_ns, at most once per RATELIMIT_REPORT_S
 * (0: nothing to report yet); *ret_span_ns is the time they span. Resets the count. */
uint64_t ratelimit_due(struct ratelimit *rl, uint64_t now_ns, uint64_t *ret_span_ns);

/* The key lifecycle of docs/design.md ("The lifecycle") as pure arithmetic on times: states,
 * handovers, next instants. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* Clock skew allowed to relying parties after a token's exp, before its key may go. */
#define SCHEDULE_SKEW 60

enum key_state {
	KEY_PENDING, /* in the JWKS, not signing yet */
	KEY_ACTIVE,  /* the key that signs */
	KEY_RETIRED, /* in the JWKS, never signs again */
	KEY_EXPIRED, /* past destroy_after: to be destroyed */
};

struct schedule_timing {
	int64_t rotation_period, prepublish, max_token_ttl;
};

/* What a key's record fixes. Arrays of these are sorted by activates_at, then kid. */
struct schedule_key {
	const char *kid;
	int64_t activates_at;
	int64_t retires_at;    /* scheduled end of its active period */
	int64_t max_token_ttl; /* as configured when it was made */
};

/* What follows from the records and the clock. */
struct schedule_state {
	enum key_state state;
	int64_t retired_at;    /* when it stops (stopped) signing */
	int64_t destroy_after; /* retired_at + max-token-ttl + SCHEDULE_SKEW */
};

/* Derives every key's state at now; returns the index of the active key or -1 (fail closed).
 * The active key is the latest activation not after now (equal times: the smaller kid, which
 * every instance agrees on), as long as now is before its scheduled retirement + prepublish. */
int schedule_derive(const struct schedule_timing *t, const struct schedule_key *keys, size_t n,
                    int64_t now, struct schedule_state *out);

/* The next instant at which an issuer's keys change by themselves, when the scheduler wakes: a
 * pending key starts, a retired key may be destroyed, the active key's time is up (active_until,
 * which a pending key's start cuts short; INT64_MAX without an active key), a failed generation
 * is retried (retry_at; INT64_MAX when none failed). keys and st: every key, withdrawn ones too,
 * with its derived state. INT64_MAX: never. */
int64_t schedule_next_change(const struct schedule_key *keys, const struct schedule_state *st,
                             size_t n, int64_t active_until, int64_t retry_at);

/* When a pending key made now should start signing: at the active key's scheduled retirement,
 * but never before it has been published for prepublish. active_retires_at < 0: no active key. */
int64_t schedule_pending_start(const struct schedule_timing *t, int64_t active_retires_at,
                               int64_t now);

/* a + b, saturated at INT64_MIN or INT64_MAX instead of overflowing: records and the clock may
 * hold any int64, and an instant past the end of time is simply "never". */
int64_t schedule_add(int64_t a, int64_t b);

/* Sorts keys into schedule order (activates_at, then kid); a qsort comparator. */
int schedule_key_order(const void *a, const void *b);

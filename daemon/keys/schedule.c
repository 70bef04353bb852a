/* Lifecycle arithmetic: which key signs when, and when each key may be destroyed. */
#include "schedule.h"

#include <string.h>

int schedule_key_order(const void *a, const void *b)
{
	const struct schedule_key *x = a, *y = b;

	if (x->activates_at != y->activates_at)
		return x->activates_at < y->activates_at ? -1 : 1;
	return strcmp(x->kid, y->kid);
}

int64_t schedule_add(int64_t a, int64_t b)
{
	int64_t sum;

	if (!__builtin_add_overflow(a, b, &sum))
		return sum;
	return b > 0 ? INT64_MAX : INT64_MIN;
}

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* The index of the latest-starting key not after now; among equal starts the first in order,
 * which is the smaller kid. */
static int latest_started(const struct schedule_key *keys, size_t n, int64_t now)
{
	int best = -1;

	for (size_t i = 0; i < n; i++)
		if (keys[i].activates_at <= now &&
		    (best < 0 || keys[i].activates_at > keys[best].activates_at))
			best = (int)i;
	return best;
}

/* When key i stopped signing, given that it is not the current candidate. */
static int64_t stopped_at(const struct schedule_timing *t, const struct schedule_key *keys,
                          size_t n, size_t i)
{
	int64_t end = schedule_add(keys[i].retires_at, t->prepublish);

	/* A loser of an equal-start tie never signed. */
	if (i > 0 && keys[i - 1].activates_at == keys[i].activates_at)
		return keys[i].activates_at;
	for (size_t j = i + 1; j < n; j++)
		if (keys[j].activates_at > keys[i].activates_at)
			return min64(end, keys[j].activates_at);
	return end;
}

int schedule_derive(const struct schedule_timing *t, const struct schedule_key *keys, size_t n,
                    int64_t now, struct schedule_state *out)
{
	int cand = latest_started(keys, n, now), active = -1;

	for (size_t i = 0; i < n; i++) {
		struct schedule_state *s = &out[i];
		int64_t ttl = max64(keys[i].max_token_ttl, t->max_token_ttl);

		if (keys[i].activates_at > now) {
			s->state = KEY_PENDING;
			s->retired_at = keys[i].retires_at;
		} else if ((int)i == cand &&
		           now < schedule_add(keys[i].retires_at, t->prepublish)) {
			s->state = KEY_ACTIVE;
			s->retired_at = keys[i].retires_at;
			active = (int)i;
		} else {
			s->state = KEY_RETIRED;
			s->retired_at = (int)i == cand
			                    ? schedule_add(keys[i].retires_at, t->prepublish)
			                    : stopped_at(t, keys, n, i);
		}
		s->destroy_after = schedule_add(schedule_add(s->retired_at, ttl), SCHEDULE_SKEW);
		if (s->state == KEY_RETIRED && s->destroy_after <= now)
			s->state = KEY_EXPIRED;
	}
	return active;
}

int64_t schedule_next_change(const struct schedule_key *keys, const struct schedule_state *st,
                             size_t n, int64_t active_until, int64_t retry_at)
{
	int64_t next = min64(active_until, retry_at);

	for (size_t i = 0; i < n; i++) {
		if (st[i].state == KEY_PENDING)
			next = min64(next, keys[i].activates_at);
		else if (st[i].state == KEY_RETIRED)
			next = min64(next, st[i].destroy_after);
	}
	return next;
}

int64_t schedule_pending_start(const struct schedule_timing *t, int64_t active_retires_at,
                               int64_t now)
{
	return max64(schedule_add(now, t->prepublish), active_retires_at);
}

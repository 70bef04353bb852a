/* Unit tests of daemon/keys/schedule.c: the lifecycle arithmetic of docs/design.md ("The
 * lifecycle"). */
#include <stdbool.h>

#include "schedule.h"
#include "unit.h"

/* rotation-period 100, prepublish 10, max-token-ttl 5: retired keys live 5 + 60 after they stop. */
static const struct schedule_timing T = {100, 10, 5};

static int derive(struct schedule_key *k, size_t n, int64_t now, struct schedule_state *st)
{
	return schedule_derive(&T, k, n, now, st);
}

/* The first key alone: active during its period and the grace, then nothing signs. */
static void test_single_key(void)
{
	struct schedule_key k[] = {{"a", 1000, 1100, 5}};
	struct schedule_state st[1];

	CHECK_INT(derive(k, 1, 999, st), -1);
	CHECK_INT(st[0].state, KEY_PENDING);
	CHECK_INT(derive(k, 1, 1000, st), 0);
	CHECK_INT(st[0].state, KEY_ACTIVE);
	CHECK_INT(st[0].retired_at, 1100);
	CHECK_INT(st[0].destroy_after, 1100 + 5 + SCHEDULE_SKEW);
	/* Past its period with no successor: the grace of prepublish, and not one second more. */
	CHECK_INT(derive(k, 1, 1109, st), 0);
	CHECK_INT(derive(k, 1, 1110, st), -1);
	CHECK_INT(st[0].state, KEY_RETIRED);
	CHECK_INT(st[0].retired_at, 1110);
	CHECK_INT(st[0].destroy_after, 1110 + 5 + SCHEDULE_SKEW);
	CHECK_INT(derive(k, 1, 1110 + 5 + SCHEDULE_SKEW, st), -1);
	CHECK_INT(st[0].state, KEY_EXPIRED);
}

/* A successor on time takes over exactly at its activation; the predecessor retires then. */
static void test_handover(void)
{
	struct schedule_key k[] = {{"a", 1000, 1100, 5}, {"b", 1100, 1200, 5}};
	struct schedule_state st[2];

	CHECK_INT(derive(k, 2, 1099, st), 0);
	CHECK_INT(st[1].state, KEY_PENDING);
	CHECK_INT(derive(k, 2, 1100, st), 1);
	CHECK_INT(st[0].state, KEY_RETIRED);
	CHECK_INT(st[0].retired_at, 1100);
	CHECK_INT(st[0].destroy_after, 1100 + 5 + SCHEDULE_SKEW);
	CHECK_INT(st[1].state, KEY_ACTIVE);
}

/* A late successor (made after a failure) ends the grace early; one later than the grace leaves
 * a gap in which nothing signs. */
static void test_late_successor(void)
{
	struct schedule_key k[] = {{"a", 1000, 1100, 5}, {"b", 1105, 1205, 5}};
	struct schedule_key gap[] = {{"a", 1000, 1100, 5}, {"b", 1120, 1220, 5}};
	struct schedule_state st[2];

	CHECK_INT(derive(k, 2, 1104, st), 0);
	CHECK_INT(derive(k, 2, 1105, st), 1);
	CHECK_INT(st[0].retired_at, 1105);
	CHECK_INT(derive(gap, 2, 1112, st), -1);
	CHECK_INT(st[0].state, KEY_RETIRED);
	CHECK_INT(st[0].retired_at, 1110);
	CHECK_INT(st[1].state, KEY_PENDING);
	CHECK_INT(derive(gap, 2, 1120, st), 1);
}

/* Equal activation times: the smaller kid signs, on every instance; the other never did. */
static void test_tie(void)
{
	struct schedule_key k[] = {
	    {"a", 1000, 1100, 5}, {"b", 1200, 1300, 5}, {"c", 1200, 1300, 5}};
	struct schedule_state st[3];

	CHECK_INT(derive(k, 3, 1200, st), 1);
	CHECK_INT(st[2].state, KEY_RETIRED);
	CHECK_INT(st[2].retired_at, 1200);
	CHECK_INT(st[0].retired_at, 1110); /* a's grace ended before b and c started */
}

/* A retired key's destruction uses the longer of the recorded and configured token lifetimes. */
static void test_ttl_kept_from_record(void)
{
	struct schedule_key k[] = {{"a", 1000, 1100, 3600}, {"b", 1100, 1200, 5}};
	struct schedule_state st[2];

	derive(k, 2, 1150, st);
	CHECK_INT(st[0].destroy_after, 1100 + 3600 + SCHEDULE_SKEW);
	CHECK_INT(st[1].destroy_after, 1200 + 5 + SCHEDULE_SKEW);
}

/* The scheduler's next instant as rotation.c asks for it: active_until as the keyset has it (the
 * active key's period and grace, cut short by the first pending key's start). */
static int64_t next_change(const struct schedule_timing *t, const struct schedule_key *k, size_t n,
                           const struct schedule_state *st, int64_t retry_at)
{
	int64_t active_until = INT64_MAX;
	bool active = false;

	for (size_t i = 0; i < n; i++)
		if (st[i].state == KEY_ACTIVE) {
			active_until = schedule_add(k[i].retires_at, t->prepublish);
			active = true;
		}
	for (size_t i = 0; active && i < n; i++)
		if (st[i].state == KEY_PENDING) {
			if (k[i].activates_at < active_until)
				active_until = k[i].activates_at;
			break;
		}
	return schedule_next_change(k, st, n, active_until, retry_at);
}

static void test_next_change(void)
{
	struct schedule_key k[] = {{"a", 1000, 1100, 5}, {"b", 1100, 1200, 5}};
	struct schedule_state st[2];

	/* The pending key's start. */
	derive(k, 2, 1050, st);
	CHECK_INT(next_change(&T, k, 2, st, INT64_MAX), 1100);
	CHECK_INT(schedule_next_change(k, st, 2, INT64_MAX, INT64_MAX), 1100);
	/* The retired key's destruction, before the active key's time is up. */
	derive(k, 2, 1100, st);
	CHECK_INT(next_change(&T, k, 2, st, INT64_MAX), 1100 + 5 + SCHEDULE_SKEW);
	/* a alone, past its period: its grace ends next. */
	derive(k, 1, 1100, st);
	CHECK_INT(next_change(&T, k, 1, st, INT64_MAX), 1110);
	CHECK_INT(schedule_next_change(k, st, 1, 1110, INT64_MAX), 1110);
	/* The active key's own destroy_after is no reason to wake: its time ends first. */
	CHECK(schedule_next_change(k, st, 1, INT64_MAX, INT64_MAX) == INT64_MAX);
	/* A failed generation's retry comes first when it is sooner, and only then. */
	CHECK_INT(schedule_next_change(k, st, 1, 1110, 1103), 1103);
	CHECK_INT(schedule_next_change(k, st, 1, 1110, 1200), 1110);
	CHECK(schedule_next_change(k, st, 0, INT64_MAX, INT64_MAX) == INT64_MAX);
	CHECK_INT(schedule_next_change(k, st, 0, INT64_MAX, 1103), 1103);
	/* Expired keys are gone already: nothing to wait for. */
	derive(k, 2, 5000, st);
	CHECK_INT(st[0].state, KEY_EXPIRED);
	CHECK_INT(st[1].state, KEY_EXPIRED);
	CHECK(next_change(&T, k, 2, st, INT64_MAX) == INT64_MAX);
}

/* A withdrawn key (a pending key set aside by a configuration change) is retired outside the
 * handovers: its destruction is a wake-up too, and it never starts. */
static void test_next_change_withdrawn(void)
{
	struct schedule_key k[] = {{"a", 1000, 1100, 5}, {"w", 1100, 1200, 5}};
	struct schedule_state st[2] = {{KEY_ACTIVE, 1100, 1165}, {KEY_RETIRED, 1050, 1115}};

	CHECK_INT(schedule_next_change(k, st, 2, 1110, INT64_MAX), 1110);
	CHECK_INT(schedule_next_change(k, st, 2, INT64_MAX, INT64_MAX), 1115);
}

static void test_pending_start(void)
{
	/* Made when its predecessor activates: starts when the predecessor's period ends. */
	CHECK_INT(schedule_pending_start(&T, 1100, 1000), 1100);
	/* Made late: never before it has been published for prepublish. */
	CHECK_INT(schedule_pending_start(&T, 1100, 1095), 1105);
	CHECK_INT(schedule_pending_start(&T, -1, 1095), 1105);
}

static void test_order(void)
{
	struct schedule_key a = {"b", 5, 0, 0}, b = {"a", 6, 0, 0}, c = {"a", 5, 0, 0};

	CHECK(schedule_key_order(&a, &b) < 0);
	CHECK(schedule_key_order(&b, &a) > 0);
	CHECK(schedule_key_order(&c, &a) < 0);
	CHECK(schedule_key_order(&a, &a) == 0);
}

static void test_add(void)
{
	CHECK_INT(schedule_add(1000, 10), 1010);
	CHECK_INT(schedule_add(1000, -10), 990);
	CHECK_INT(schedule_add(0, 0), 0);
	CHECK(schedule_add(INT64_MAX, 1) == INT64_MAX);
	CHECK(schedule_add(INT64_MAX, INT64_MAX) == INT64_MAX);
	CHECK(schedule_add(INT64_MAX - 1, 1) == INT64_MAX);
	CHECK(schedule_add(INT64_MIN, -1) == INT64_MIN);
	CHECK(schedule_add(INT64_MIN, INT64_MIN) == INT64_MIN);
	CHECK(schedule_add(INT64_MIN + 1, -1) == INT64_MIN);
	CHECK_INT(schedule_add(INT64_MAX, INT64_MIN), -1);
	CHECK(schedule_add(INT64_MAX, -1) == INT64_MAX - 1);
	CHECK(schedule_add(INT64_MIN, 1) == INT64_MIN + 1);
}

/* Records with times at the ends of int64 (damaged, or written by someone else) give saturated
 * answers, never signed overflow: a retirement past the end of time is "never". */
static void test_extreme_retirement(void)
{
	struct schedule_key k[] = {{"a", 1000, INT64_MAX, 5}};
	struct schedule_key late[] = {{"a", 1000, INT64_MAX - 20, 5}};
	struct schedule_state st[1];

	CHECK_INT(derive(k, 1, 1000, st), 0);
	CHECK(st[0].retired_at == INT64_MAX);
	CHECK(st[0].destroy_after == INT64_MAX);
	CHECK(next_change(&T, k, 1, st, INT64_MAX) == INT64_MAX);
	CHECK_INT(derive(k, 1, INT64_MAX - 1, st), 0);
	CHECK(next_change(&T, k, 1, st, INT64_MAX) == INT64_MAX);
	/* Retired near the end of time: its destruction is saturated to "never". */
	CHECK_INT(derive(late, 1, INT64_MAX - 11, st), 0);
	CHECK(next_change(&T, late, 1, st, INT64_MAX) == INT64_MAX - 10);
	CHECK_INT(derive(late, 1, INT64_MAX - 5, st), -1);
	CHECK_INT(st[0].state, KEY_RETIRED);
	CHECK(st[0].retired_at == INT64_MAX - 10);
	CHECK(st[0].destroy_after == INT64_MAX);
	CHECK(next_change(&T, late, 1, st, INT64_MAX) == INT64_MAX);
	/* The last instant itself: nothing signs. */
	CHECK_INT(derive(k, 1, INT64_MAX, st), -1);
}

static void test_extreme_activation(void)
{
	struct schedule_key k[] = {{"a", 1000, 1100, 5}, {"b", INT64_MAX, INT64_MAX, 5}};
	struct schedule_key neg[] = {{"a", INT64_MIN, INT64_MIN, 5},
	                             {"b", INT64_MIN, INT64_MIN, 5}};
	struct schedule_state st[2];

	/* A successor that never starts: the predecessor keeps only its grace. */
	CHECK_INT(derive(k, 2, 1050, st), 0);
	CHECK_INT(st[1].state, KEY_PENDING);
	CHECK(st[1].retired_at == INT64_MAX);
	CHECK(st[1].destroy_after == INT64_MAX);
	CHECK_INT(next_change(&T, k, 2, st, INT64_MAX), 1110);
	CHECK_INT(derive(k, 2, 1110, st), -1);
	CHECK_INT(st[0].retired_at, 1110);
	CHECK_INT(st[1].state, KEY_PENDING);
	CHECK_INT(next_change(&T, k, 2, st, INT64_MAX), 1110 + 5 + SCHEDULE_SKEW);
	CHECK_INT(derive(k, 2, INT64_MAX - 1, st), -1);
	CHECK_INT(st[0].state, KEY_EXPIRED);
	CHECK_INT(st[1].state, KEY_PENDING);
	CHECK(next_change(&T, k, 2, st, INT64_MAX) == INT64_MAX);
	CHECK_INT(derive(k, 2, INT64_MAX, st), -1); /* no time left to sign in */

	/* Everything at INT64_MIN: long over, destroyable; the tie's loser never signed. */
	CHECK_INT(derive(neg, 2, 0, st), -1);
	CHECK_INT(st[0].state, KEY_EXPIRED);
	CHECK(st[0].retired_at == INT64_MIN + 10);
	CHECK(st[0].destroy_after == INT64_MIN + 10 + 5 + SCHEDULE_SKEW);
	CHECK_INT(st[1].state, KEY_EXPIRED);
	CHECK(st[1].retired_at == INT64_MIN);
	CHECK(next_change(&T, neg, 2, st, INT64_MAX) == INT64_MAX);
	CHECK_INT(derive(neg, 2, INT64_MIN, st), 0);
	CHECK_INT(st[1].state, KEY_RETIRED);
	CHECK(next_change(&T, neg, 2, st, INT64_MAX) == INT64_MIN + 10);
}

/* Negative times before the epoch are arithmetic like any other. */
static void test_negative_times(void)
{
	struct schedule_key k[] = {{"a", -1000, -900, 5}, {"b", -900, -800, 5}};
	struct schedule_state st[2];

	CHECK_INT(derive(k, 2, -950, st), 0);
	CHECK_INT(next_change(&T, k, 2, st, INT64_MAX), -900);
	CHECK_INT(derive(k, 2, -900, st), 1);
	CHECK_INT(st[0].retired_at, -900);
	CHECK_INT(st[0].destroy_after, -900 + 5 + SCHEDULE_SKEW);
	CHECK_INT(derive(k, 2, 0, st), -1);
	CHECK_INT(st[0].state, KEY_EXPIRED);
	CHECK_INT(st[1].state, KEY_EXPIRED);
	CHECK_INT(st[1].retired_at, -790);
}

/* A recorded token lifetime at INT64_MAX keeps the key forever; INT64_MIN yields to the
 * configured one. */
static void test_extreme_ttl(void)
{
	struct schedule_key k[] = {{"a", 1000, 1100, INT64_MAX}, {"b", 1100, INT64_MAX, INT64_MIN}};
	struct schedule_state st[2];

	CHECK_INT(derive(k, 2, INT64_MAX - 1, st), 1);
	CHECK_INT(st[0].state, KEY_RETIRED);
	CHECK_INT(st[0].retired_at, 1100);
	CHECK(st[0].destroy_after == INT64_MAX);
	CHECK(st[1].destroy_after == INT64_MAX);
	CHECK(next_change(&T, k, 2, st, INT64_MAX) == INT64_MAX);
}

/* Timing at the ends of int64 as well: the handover never wraps into the past. */
static void test_extreme_timing(void)
{
	static const struct schedule_timing big = {INT64_MAX, INT64_MAX, INT64_MAX};
	struct schedule_key k[] = {{"a", 1000, 1100, 5}};
	struct schedule_state st[1];

	CHECK_INT(schedule_derive(&big, k, 1, 1000000, st), 0);
	CHECK(st[0].retired_at == 1100);
	CHECK(st[0].destroy_after == INT64_MAX);
	CHECK(next_change(&big, k, 1, st, INT64_MAX) == INT64_MAX);
	CHECK(schedule_pending_start(&big, -1, 1000) == INT64_MAX);
	CHECK(schedule_pending_start(&T, INT64_MAX, 1000) == INT64_MAX);
	CHECK(schedule_pending_start(&T, -1, INT64_MAX - 5) == INT64_MAX);
	CHECK_INT(schedule_pending_start(&T, -1, INT64_MIN), -1);
	CHECK(schedule_pending_start(&T, INT64_MIN, INT64_MIN) == INT64_MIN + 10);
}

int main(void)
{
	test_single_key();
	test_handover();
	test_late_successor();
	test_tie();
	test_ttl_kept_from_record();
	test_next_change();
	test_next_change_withdrawn();
	test_pending_start();
	test_order();
	test_add();
	test_extreme_retirement();
	test_extreme_activation();
	test_negative_times();
	test_extreme_ttl();
	test_extreme_timing();
	return unit_finish("schedule");
}

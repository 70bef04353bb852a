/* A timer thread, not a polling loop: it wakes at the next transition instant. */
#include "scheduler.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"
#include "rotation.h"

struct scheduler {
	struct keyring *kr;
	int64_t rescan;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* on CLOCK_MONOTONIC: wall-clock jumps do not stretch a sleep */
	bool stop, poked;
};

int64_t scheduler_rescan_interval(const struct conf *conf)
{
	int64_t r = 30;

	for (size_t i = 0; i < conf->n_issuers; i++)
		if ((int64_t)conf->issuers[i].prepublish / 2 < r)
			r = (int64_t)conf->issuers[i].prepublish / 2;
	return r < 1 ? 1 : r;
}

static int64_t now_ms(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps until the wall-clock second `until` has begun, or a poke or stop. */
static void sleep_until(struct scheduler *s, int64_t until)
{
	int64_t wait_ms = until * 1000 - now_ms(CLOCK_REALTIME) + 5;
	int64_t deadline = now_ms(CLOCK_MONOTONIC) + (wait_ms > 0 ? wait_ms : 0);
	struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};

	pthread_mutex_lock(&s->lock);
	while (!s->stop && !s->poked)
		if (pthread_cond_timedwait(&s->cond, &s->lock, &ts) == ETIMEDOUT)
			break;
	s->poked = false;
	pthread_mutex_unlock(&s->lock);
}

static bool stopping(struct scheduler *s)
{
	bool stop;

	pthread_mutex_lock(&s->lock);
	stop = s->stop;
	pthread_mutex_unlock(&s->lock);
	return stop;
}

static void *run(void *arg)
{
	struct scheduler *s = arg;
	unsigned failures = 0;

	while (!stopping(s)) {
		int64_t now = clock_now(), next = INT64_MAX;
		int r = rotation_maintain(s->kr, now, &next);

		if (r < 0) {
			/* The token is unreachable: signing goes on with the keys we know, within
			 * their schedule; try again soon, less often while it stays away. */
			failures++;
			next = now + (failures < 5 ? (int64_t)failures : 5);
		} else {
			failures = 0;
		}
		if (next > now + s->rescan)
			next = now + s->rescan;
		/* Not logged here: the keyring logged the failure, once per episode, and a line
		 * at every retry would repeat it every few seconds while the token is away. */
		sleep_until(s, next);
	}
	return NULL;
}

int scheduler_start(struct keyring *kr, int64_t rescan, struct scheduler **ret)
{
	struct scheduler *s = calloc(1, sizeof(*s));
	pthread_condattr_t attr;
	int r;

	if (!s)
		return -ENOMEM;
	s->kr = kr;
	s->rescan = rescan;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &attr);
	pthread_condattr_destroy(&attr);
	r = -pthread_create(&s->thread, NULL, run, s);
	if (r < 0) {
		pthread_cond_destroy(&s->cond);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return r;
	}
	pthread_setname_np(s->thread, "scheduler");
	*ret = s;
	return 0;
}

void scheduler_poke(struct scheduler *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->poked = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

void scheduler_stop(struct scheduler *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

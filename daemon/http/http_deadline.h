/* The whole-request deadline: a connection that trickles its request in is cut off. */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* What the deadline keeps of a connection; embedded in its socket context. */
struct http_clock {
	struct http_clock *prev, *next;
	int fd;
	atomic_llong started_ms; /* CLOCK_MONOTONIC: connected, or the last request completed */
	bool cut;
};

/* One thread per server that checks every connection's clock each second. */
struct http_deadline {
	pthread_mutex_t lock;
	pthread_t thread;
	bool ready, running;
	int stop_fd;
	int64_t timeout_ms;
	struct http_clock *head;
};

int http_deadline_start(struct http_deadline *dl, uint64_t seconds);
/* From the connection's start to its close: while tracked, fd stays open. */
void http_deadline_track(struct http_deadline *dl, struct http_clock *clock, int fd);
void http_deadline_untrack(struct http_deadline *dl, struct http_clock *clock);
/* A request completed: the next one has the whole timeout again. */
void http_deadline_restart(struct http_clock *clock);
/* May be called on a zero-initialised one. */
void http_deadline_stop(struct http_deadline *dl);

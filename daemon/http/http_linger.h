/* Closing in stages: a client refused while it still sends its body gets the answer, not a
 * reset. */
#pragma once
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How many refused connections one server drains at once, for how long and how much of each:
 * beyond these a connection is closed at once (and its client may see a reset). */
#define HTTP_LINGER_SLOTS 16
#define HTTP_LINGER_MS    1000
#define HTTP_LINGER_BYTES (1024 * 1024)

struct http_linger_slot {
	int fd; /* -1: free */
	size_t drained;
	int64_t deadline_ms; /* CLOCK_MONOTONIC */
};

/* One drain thread. http_linger_stop() may be called on a zero-initialised one. */
struct http_linger {
	pthread_mutex_t lock;
	pthread_t thread;
	bool ready;   /* started: the lock and descriptors are set up */
	bool running; /* the thread runs; else http_linger_add() just closes */
	int epfd;
	int stop_fd;
	int wake_fd; /* eventfd: a slot was added, recompute the deadline */
	struct http_linger_slot slots[HTTP_LINGER_SLOTS];
};

int http_linger_start(struct http_linger *l);
/* Takes fd, whose answer is sent and whose writing side is shut down: reads and discards what
 * the client still sends until it closes, HTTP_LINGER_MS pass or HTTP_LINGER_BYTES came,
 * then closes fd. */
void http_linger_add(struct http_linger *l, int fd);
void http_linger_stop(struct http_linger *l);

/* The whole-request deadline. libmicrohttpd 0.9.75 only times out connections that stay
 * silent; one byte every few seconds holds a connection, and its descriptor, forever. Each
 * connection's clock starts when it connects and again when a request completes; a request
 * still unfinished when the timeout passes has its socket shut down, which libmicrohttpd sees
 * as the client leaving and closes. Idle keep-alive time counts too: such a connection simply
 * closes, as at the idle timeout. */
#include "http_deadline.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define TICK_MS 1000

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cut_late(struct http_deadline *dl)
{
	int64_t now = now_ms();

	pthread_mutex_lock(&dl->lock);
	for (struct http_clock *c = dl->head; c; c = c->next) {
		if (c->cut || now - atomic_load(&c->started_ms) < dl->timeout_ms)
			continue;
		/* The descriptor is libmicrohttpd's, open until untracked (under this lock). */
		shutdown(c->fd, SHUT_RDWR);
		c->cut = true;
	}
	pthread_mutex_unlock(&dl->lock);
}

static void *tick(void *arg)
{
	struct http_deadline *dl = arg;
	struct pollfd pfd = {.fd = dl->stop_fd, .events = POLLIN};

	for (;;) {
		int n = poll(&pfd, 1, TICK_MS);
		if (n < 0 && errno != EINTR) {
			log_error("http: deadline: poll: %s", strerror(errno));
			return NULL;
		}
		if (n > 0)
			return NULL;
		cut_late(dl);
	}
}

int http_deadline_start(struct http_deadline *dl, uint64_t seconds)
{
	int r;

	*dl = (struct http_deadline){.ready = true, .timeout_ms = (int64_t)seconds * 1000};
	pthread_mutex_init(&dl->lock, NULL);
	dl->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (dl->stop_fd < 0) {
		r = -errno;
		http_deadline_stop(dl);
		return r;
	}
	r = pthread_create(&dl->thread, NULL, tick, dl);
	if (r != 0) {
		http_deadline_stop(dl);
		return -r;
	}
	dl->running = true;
	pthread_setname_np(dl->thread, "http-deadline");
	return 0;
}

void http_deadline_track(struct http_deadline *dl, struct http_clock *clock, int fd)
{
	clock->fd = fd;
	clock->cut = false;
	atomic_store(&clock->started_ms, now_ms());
	pthread_mutex_lock(&dl->lock);
	clock->prev = NULL;
	clock->next = dl->head;
	if (dl->head)
		dl->head->prev = clock;
	dl->head = clock;
	pthread_mutex_unlock(&dl->lock);
}

void http_deadline_untrack(struct http_deadline *dl, struct http_clock *clock)
{
	pthread_mutex_lock(&dl->lock);
	if (clock->prev)
		clock->prev->next = clock->next;
	else if (dl->head == clock)
		dl->head = clock->next;
	if (clock->next)
		clock->next->prev = clock->prev;
	clock->prev = clock->next = NULL;
	pthread_mutex_unlock(&dl->lock);
}

void http_deadline_restart(struct http_clock *clock)
{
	atomic_store(&clock->started_ms, now_ms());
}

void http_deadline_stop(struct http_deadline *dl)
{
	uint64_t one = 1;

	if (!dl->ready)
		return;
	if (dl->running && write(dl->stop_fd, &one, sizeof(one)) == sizeof(one))
		pthread_join(dl->thread, NULL);
	if (dl->stop_fd >= 0)
		close(dl->stop_fd);
	pthread_mutex_destroy(&dl->lock);
	*dl = (struct http_deadline){0};
}

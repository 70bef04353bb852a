/* Closing in stages: a client refused while it still sends its body gets the answer, not a
 * reset. Closing a socket with unread data makes the kernel reset the connection, and a
 * client that is still writing then fails before it reads the answer already sent (curl exit
 * 55). libmicrohttpd has sent the answer and shut down writing when it reports the
 * connection closed; this thread keeps a duplicate of the socket and reads until the client
 * is done, briefly. */
#include "http_linger.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define STOP_KEY HTTP_LINGER_SLOTS
#define WAKE_KEY (HTTP_LINGER_SLOTS + 1)

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void slot_close(struct http_linger *l, struct http_linger_slot *s)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, s->fd, NULL);
	close(s->fd);
	s->fd = -1;
}

/* Reads what is there; closes at the client's end, an error, or the byte budget. */
static void slot_drain(struct http_linger *l, struct http_linger_slot *s)
{
	char buf[16384];

	for (;;) {
		ssize_t n = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0 || (s->drained += (size_t)n) > HTTP_LINGER_BYTES) {
			slot_close(l, s);
			return;
		}
	}
}

/* Closes the slots past their deadline; returns the wait until the next one, or -1. */
static int expire(struct http_linger *l)
{
	int64_t now = now_ms(), next = -1;

	for (size_t i = 0; i < HTTP_LINGER_SLOTS; i++) {
		struct http_linger_slot *s = &l->slots[i];
		if (s->fd < 0)
			continue;
		if (s->deadline_ms <= now)
			slot_close(l, s);
		else if (next < 0 || s->deadline_ms - now < next)
			next = s->deadline_ms - now;
	}
	return (int)next;
}

static void *drain_loop(void *arg)
{
	struct http_linger *l = arg;
	struct epoll_event ev[16];
	int timeout = -1;

	for (;;) {
		int n = epoll_wait(l->epfd, ev, 16, timeout);
		if (n < 0 && errno != EINTR) {
			log_error("http: linger: epoll_wait: %s", strerror(errno));
			return NULL;
		}
		pthread_mutex_lock(&l->lock);
		for (int i = 0; i < n; i++) {
			uint64_t count;
			if (ev[i].data.u32 == STOP_KEY) {
				pthread_mutex_unlock(&l->lock);
				return NULL;
			}
			if (ev[i].data.u32 == WAKE_KEY) {
				if (read(l->wake_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
					log_error("http: linger: %s", strerror(errno));
				continue;
			}
			if (l->slots[ev[i].data.u32].fd >= 0)
				slot_drain(l, &l->slots[ev[i].data.u32]);
		}
		timeout = expire(l);
		pthread_mutex_unlock(&l->lock);
	}
}

static int watch(struct http_linger *l, int *fd, uint32_t key)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = key};

	*fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (*fd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, *fd, &ev) < 0)
		return -errno;
	return 0;
}

int http_linger_start(struct http_linger *l)
{
	int r;

	*l = (struct http_linger){.epfd = -1, .stop_fd = -1, .wake_fd = -1, .ready = true};
	for (size_t i = 0; i < HTTP_LINGER_SLOTS; i++)
		l->slots[i].fd = -1;
	pthread_mutex_init(&l->lock, NULL);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0 || (r = watch(l, &l->stop_fd, STOP_KEY)) < 0 ||
	    (r = watch(l, &l->wake_fd, WAKE_KEY)) < 0) {
		r = -errno;
		http_linger_stop(l);
		return r;
	}
	r = pthread_create(&l->thread, NULL, drain_loop, l);
	if (r != 0) {
		http_linger_stop(l);
		return -r;
	}
	l->running = true;
	pthread_setname_np(l->thread, "http-linger");
	return 0;
}

/* Wakes the drain thread, so that it waits for the new slot's deadline too. */
static void wake(struct http_linger *l)
{
	uint64_t one = 1;

	if (write(l->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_error("http: linger: cannot wake the drain thread: %s", strerror(errno));
}

void http_linger_add(struct http_linger *l, int fd)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
	bool taken = false;

	if (fd < 0)
		return;
	pthread_mutex_lock(&l->lock);
	for (uint32_t i = 0; l->running && !taken && i < HTTP_LINGER_SLOTS; i++) {
		struct http_linger_slot *s = &l->slots[i];
		if (s->fd >= 0)
			continue;
		ev.data.u32 = i;
		*s = (struct http_linger_slot){.fd = fd, .deadline_ms = now_ms() + HTTP_LINGER_MS};
		taken = epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
		if (!taken)
			s->fd = -1;
	}
	pthread_mutex_unlock(&l->lock);
	if (!taken)
		close(fd);
	else
		wake(l);
}

void http_linger_stop(struct http_linger *l)
{
	uint64_t one = 1;

	if (!l->ready)
		return;
	if (l->running && write(l->stop_fd, &one, sizeof(one)) == sizeof(one))
		pthread_join(l->thread, NULL);
	l->running = false;
	for (size_t i = 0; i < HTTP_LINGER_SLOTS; i++)
		if (l->slots[i].fd >= 0)
			close(l->slots[i].fd);
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->stop_fd >= 0)
		close(l->stop_fd);
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	pthread_mutex_destroy(&l->lock);
	*l = (struct http_linger){.epfd = -1, .stop_fd = -1, .wake_fd = -1};
}

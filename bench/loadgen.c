/* Load generator for tokensignd: keep-alive HTTP/1.1 connections driven by epoll, latency kept. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "claims.h"

#define RBUF_SIZE  (64 * 1024)
#define MAX_STATUS 600
#define NS         1000000000ull
#define MAX_ITEMS  64 /* docs/api.md: sign-batch takes 1..64 items */

enum mode {
	MODE_SIGN,
	MODE_JWKS,
	MODE_GET,
	MODE_IDLE,
	MODE_BATCH,
};

static const char *const mode_names[] = {"sign", "jwks", "get", "idle", "batch"};

struct options {
	enum mode mode;
	const char *unix_path; /* sign, get and idle */
	const char *tcp;       /* jwks and get: HOST:PORT */
	const char *issuer;
	const char *path; /* get */
	const char *body_file;
	const char *timeline; /* --timeline FILE */
	unsigned conns, threads;
	unsigned items; /* batch: items per sign-batch request */
	double seconds, rate, drain;
	unsigned long requests;
	bool if_none_match;
	bool bare; /* idle: connect only, never send a request */
};

struct conn {
	int fd;
	bool busy;
	uint64_t start_ns; /* when the request was (or, at a fixed rate, should have been) sent */
	char *req;         /* this connection's copy of the request, "sub" rewritten per request */
	size_t sent;
	size_t rlen;
	char rbuf[RBUF_SIZE];
};

struct thread {
	pthread_t tid;
	unsigned index;
	int ep;
	struct conn *conns;
	unsigned n_conns;
	/* Fixed rate: the connections free for the next due request, a FIFO ring, so that the
	 * load goes round all connections (and all the server threads they landed on) instead of
	 * staying on the few most recently freed. */
	unsigned *idle;
	unsigned idle_head, n_idle;
	unsigned in_flight;
	uint64_t seq;
	uint64_t *lat;
	uint64_t *done; /* --timeline: when each answer arrived, ns after t0 */
	size_t n_lat, cap_lat;
	unsigned long status[MAX_STATUS];
	char *sample[MAX_STATUS]; /* the first body seen of each unexpected status */
	unsigned long conn_errors, reconnects, timeouts, backlog;
	unsigned long items_ok, items_bad; /* batch: tokens in 200 answers, and items without */
	char *batch_sample;                /* the first 200 with fewer tokens than items */
	int fatal;
};

static struct {
	struct options o;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	int family;
	char *req; /* the request template */
	size_t req_len;
	size_t sub_off[MAX_ITEMS]; /* offsets of the "sub" digits in req, 0: nothing to rewrite */
	unsigned n_subs;
	unsigned expected;
	pthread_barrier_t start;
	uint64_t t0, deadline;
	atomic_ulong issued;
} g;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("loadgen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *out)
{
	fputs("usage: loadgen sign --unix SOCKET --issuer NAME [options]\n"
	      "       loadgen jwks --tcp HOST:PORT --issuer NAME [--if-none-match] [options]\n"
	      "       loadgen get --unix SOCKET | --tcp HOST:PORT --path /healthz [options]\n"
	      "       loadgen idle --unix SOCKET --connections N [--seconds S] [--bare]\n"
	      "       loadgen batch --unix SOCKET --issuer NAME [--items 16] [options]\n"
	      "options:\n"
	      "  --connections N   keep-alive connections (default 16)\n"
	      "  --threads N       client threads, each with its own epoll (default 1)\n"
	      "  --seconds S       run for S seconds (default 5)\n"
	      "  --requests N      or stop after N requests\n"
	      "  --rate R          open loop at R requests/s (latency counted from the time each\n"
	      "                    request was due, so a stalled server is not hidden)\n"
	      "  --body FILE       sign: this request body instead of the built-in claims\n"
	      "  --items N         batch: items per POST .../sign-batch (1..64, default 16);\n"
	      "                    each 200 must carry N tokens\n"
	      "  --if-none-match   jwks: fetch the ETag once, then ask with If-None-Match (304)\n"
	      "  --timeline FILE   write one line per answer: ms after the start it arrived, its\n"
	      "                    latency in us (finds when the slow answers came)\n"
	      "  --bare            idle: only connect; by default each connection is used once\n"
	      "                    (GET /healthz), as a keep-alive client leaves it\n"
	      "The last line of output is one JSON object.\n",
	      out);
}

static void parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
	    {"unix", required_argument, NULL, 'u'},
	    {"tcp", required_argument, NULL, 'T'},
	    {"issuer", required_argument, NULL, 'i'},
	    {"connections", required_argument, NULL, 'c'},
	    {"threads", required_argument, NULL, 'j'},
	    {"seconds", required_argument, NULL, 's'},
	    {"requests", required_argument, NULL, 'n'},
	    {"rate", required_argument, NULL, 'r'},
	    {"body", required_argument, NULL, 'b'},
	    {"if-none-match", no_argument, NULL, 'I'},
	    {"drain", required_argument, NULL, 'd'},
	    {"bare", no_argument, NULL, 'B'},
	    {"path", required_argument, NULL, 'P'},
	    {"items", required_argument, NULL, 'N'},
	    {"timeline", required_argument, NULL, 'L'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	*o = (struct options){.conns = 16, .threads = 1, .seconds = 5, .drain = 5, .items = 16};
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		exit(argc < 2 ? 2 : 0);
	}
	if (strcmp(argv[1], "sign") == 0)
		o->mode = MODE_SIGN;
	else if (strcmp(argv[1], "jwks") == 0)
		o->mode = MODE_JWKS;
	else if (strcmp(argv[1], "get") == 0)
		o->mode = MODE_GET;
	else if (strcmp(argv[1], "idle") == 0)
		o->mode = MODE_IDLE;
	else if (strcmp(argv[1], "batch") == 0)
		o->mode = MODE_BATCH;
	else
		die("unknown mode '%s' (sign, batch, jwks, get or idle)", argv[1]);
	optind = 2;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'u':
			o->unix_path = optarg;
			break;
		case 'T':
			o->tcp = optarg;
			break;
		case 'i':
			o->issuer = optarg;
			break;
		case 'c':
			o->conns = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'j':
			o->threads = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			o->seconds = strtod(optarg, NULL);
			break;
		case 'n':
			o->requests = strtoul(optarg, NULL, 10);
			break;
		case 'r':
			o->rate = strtod(optarg, NULL);
			break;
		case 'b':
			o->body_file = optarg;
			break;
		case 'I':
			o->if_none_match = true;
			break;
		case 'd':
			o->drain = strtod(optarg, NULL);
			break;
		case 'B':
			o->bare = true;
			break;
		case 'P':
			o->path = optarg;
			break;
		case 'N':
			o->items = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'L':
			o->timeline = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (o->conns < 1 || o->threads < 1 || o->threads > o->conns || o->rate < 0 ||
	    (o->seconds <= 0 && o->requests == 0))
		die("bad --connections, --threads, --rate, --seconds or --requests");
	if (o->items < 1 || o->items > MAX_ITEMS)
		die("--items wants 1..%d", MAX_ITEMS);
	if (o->mode == MODE_GET ? !o->tcp == !o->unix_path
	                        : (o->mode == MODE_JWKS) != (o->tcp != NULL) ||
	                              (o->mode != MODE_JWKS && !o->unix_path))
		die("sign, batch and idle need --unix, jwks needs --tcp, get one of them");
	if ((o->mode == MODE_SIGN || o->mode == MODE_BATCH || o->mode == MODE_JWKS) && !o->issuer)
		die("--issuer is required");
	if (o->mode == MODE_GET && (!o->path || o->path[0] != '/'))
		die("get needs --path /...");
}

static void resolve(void)
{
	if (g.o.unix_path) {
		struct sockaddr_un *sa = (struct sockaddr_un *)&g.addr;
		if (strlen(g.o.unix_path) >= sizeof(sa->sun_path))
			die("socket path too long: %s", g.o.unix_path);
		sa->sun_family = AF_UNIX;
		strcpy(sa->sun_path, g.o.unix_path);
		g.addr_len = sizeof(*sa);
		g.family = AF_UNIX;
		return;
	}
	char host[256];
	const char *colon = strrchr(g.o.tcp, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
	size_t hl = colon ? (size_t)(colon - g.o.tcp) : 0;

	if (!colon || hl == 0 || hl >= sizeof(host))
		die("--tcp wants HOST:PORT, not %s", g.o.tcp);
	memcpy(host, g.o.tcp, hl);
	host[hl] = 0;
	if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = 0;
	}
	int r = getaddrinfo(host, colon + 1, &hints, &ai);
	if (r != 0)
		die("cannot resolve %s: %s", g.o.tcp, gai_strerror(r));
	memcpy(&g.addr, ai->ai_addr, ai->ai_addrlen);
	g.addr_len = ai->ai_addrlen;
	g.family = ai->ai_family;
	freeaddrinfo(ai);
}

/* A blocking connect, then non-blocking for epoll: connecting is not what we measure. */
static int connect_one(bool nonblock)
{
	int fd = socket(g.family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&g.addr, g.addr_len) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	if (g.family != AF_UNIX) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
	}
	if (nonblock)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* Parsed head of one HTTP answer. */
struct answer {
	unsigned status;
	size_t head_len, body_len;
	bool close;
	const char *etag;
	size_t etag_len;
};

/* 1: a whole answer is in buf; 0: need more bytes; -1: not an answer we can read. */
static int parse_answer(const char *buf, size_t len, struct answer *a)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4), *p, *eol;
	bool have_length = false;

	*a = (struct answer){0};
	if (!end)
		return len >= RBUF_SIZE ? -1 : 0;
	if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
		return -1;
	a->status = (unsigned)strtoul(buf + 9, NULL, 10);
	if (a->status < 100 || a->status >= MAX_STATUS)
		return -1;
	a->head_len = (size_t)(end - buf) + 4;
	for (p = (const char *)memchr(buf, '\n', len) + 1; p < end; p = eol + 2) {
		eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
		size_t n = (size_t)(eol - p);
		if (n > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
			a->body_len = strtoul(p + 15, NULL, 10);
			have_length = true;
		} else if (n > 11 && strncasecmp(p, "Connection:", 11) == 0) {
			a->close = memmem(p, n, "close", 5) != NULL;
		} else if (n > 18 && strncasecmp(p, "Transfer-Encoding:", 18) == 0) {
			/* libmicrohttpd sends our buffers with a length: chunks mean a bug. */
			return -1;
		} else if (n > 5 && strncasecmp(p, "ETag:", 5) == 0) {
			a->etag = p + 5;
			while (*a->etag == ' ')
				a->etag++;
			a->etag_len = (size_t)(eol - a->etag);
		}
	}
	if (!have_length && a->status != 304 && a->status != 204 && a->status >= 200)
		return -1;
	return len >= a->head_len + a->body_len ? 1
	                                        : (a->head_len + a->body_len > RBUF_SIZE ? -1 : 0);
}

static void build_request(const char *etag, size_t etag_len)
{
	char *body = NULL;
	size_t body_len = 0;
	FILE *m = open_memstream(&g.req, &g.req_len);

	if (!m)
		die("out of memory");
	if (g.o.mode == MODE_SIGN) {
		if (g.o.body_file) {
			FILE *f = fopen(g.o.body_file, "r");
			if (!f)
				die("cannot open %s: %s", g.o.body_file, strerror(errno));
			body = malloc(1 << 16);
			body_len = body ? fread(body, 1, 1 << 16, f) : 0;
			fclose(f);
		} else if (asprintf(&body, "{\"claims\":%s,\"typ\":\"%s\"}", BENCH_CLAIMS,
		                    BENCH_TYP) > 0) {
			body_len = strlen(body);
		}
		if (!body)
			die("out of memory");
		fprintf(m,
		        "POST /v1/issuers/%s/sign HTTP/1.1\r\nHost: localhost\r\n"
		        "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
		        g.o.issuer, body_len);
		fwrite(body, 1, body_len, m);
		free(body);
	} else if (g.o.mode == MODE_BATCH) {
		/* N copies of the single sign's body; each item's sub is rewritten per request. */
		static const char item[] =
		    "{\"claims\":" BENCH_CLAIMS ",\"typ\":\"" BENCH_TYP "\"}";
		body_len =
		    strlen("{\"requests\":[]}") + g.o.items * (sizeof(item) - 1) + g.o.items - 1;
		fprintf(m,
		        "POST /v1/issuers/%s/sign-batch HTTP/1.1\r\nHost: localhost\r\n"
		        "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n"
		        "{\"requests\":[",
		        g.o.issuer, body_len);
		for (unsigned i = 0; i < g.o.items; i++)
			fprintf(m, "%s%s", i ? "," : "", item);
		fputs("]}", m);
	} else if (g.o.mode == MODE_GET) {
		fprintf(m, "GET %s HTTP/1.1\r\nHost: %s\r\n", g.o.path,
		        g.o.tcp ? g.o.tcp : "localhost");
		if (etag)
			fprintf(m, "If-None-Match: %.*s\r\n", (int)etag_len, etag);
		fputs("\r\n", m);
	} else {
		fprintf(m, "GET /%s/.well-known/jwks.json HTTP/1.1\r\nHost: %s\r\n", g.o.issuer,
		        g.o.tcp);
		if (etag)
			fprintf(m, "If-None-Match: %.*s\r\n", (int)etag_len, etag);
		fputs("\r\n", m);
	}
	if (fclose(m) != 0)
		die("out of memory");
	if ((g.o.mode == MODE_SIGN && !g.o.body_file) || g.o.mode == MODE_BATCH) {
		const char *p = g.req, *end = g.req + g.req_len, *sub;
		size_t plen = strlen(BENCH_SUB_PREFIX) + 1;
		g.n_subs = 0;
		while (g.n_subs < MAX_ITEMS &&
		       (sub = memmem(p, (size_t)(end - p), "\"" BENCH_SUB_PREFIX, plen))) {
			g.sub_off[g.n_subs++] = (size_t)(sub - g.req) + plen;
			p = sub + plen;
		}
	}
}

/* One blocking request on a fresh connection: for the ETag before a 304 run. */
static void fetch_etag(void)
{
	char buf[RBUF_SIZE];
	struct answer a;
	size_t len = 0;
	int fd = connect_one(false);

	if (fd < 0)
		die("cannot connect: %s", strerror(-fd));
	if (write(fd, g.req, g.req_len) != (ssize_t)g.req_len)
		die("cannot send the ETag request");
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n <= 0)
			die("no answer to the ETag request");
		len += (size_t)n;
		int r = parse_answer(buf, len, &a);
		if (r < 0)
			die("unreadable answer to the ETag request");
		if (r > 0)
			break;
	}
	close(fd);
	if (a.status != 200 || !a.etag)
		die("GET of the JWKS gave %u%s", a.status, a.etag ? "" : " without an ETag");
	free(g.req);
	build_request(a.etag, a.etag_len);
}

static void conn_watch(struct thread *t, struct conn *c, int op, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};

	if (epoll_ctl(t->ep, op, c->fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
}

static void conn_open(struct thread *t, struct conn *c)
{
	c->fd = connect_one(true);
	if (c->fd < 0)
		die("cannot connect: %s", strerror(-c->fd));
	c->rlen = 0;
	c->busy = false;
	conn_watch(t, c, EPOLL_CTL_ADD, EPOLLIN);
}

static bool may_issue(void)
{
	if (g.o.requests)
		return atomic_fetch_add(&g.issued, 1) < g.o.requests;
	return now_ns() < g.deadline;
}

static void request_fail(struct thread *t, struct conn *c);

static void request_send(struct thread *t, struct conn *c, uint64_t start)
{
	/* A different sub per token: no cache anywhere may answer for the token. */
	for (unsigned k = 0; k < g.n_subs; k++) {
		uint64_t v = (t->index * 10000000ull + t->seq++) % 100000000ull;
		for (int i = BENCH_SUB_DIGITS - 1; i >= 0; i--, v /= 10)
			c->req[g.sub_off[k] + (size_t)i] = (char)('0' + v % 10);
	}
	c->busy = true;
	c->start_ns = start;
	c->sent = 0;
	t->in_flight++;
	ssize_t n = send(c->fd, c->req, g.req_len, MSG_NOSIGNAL);
	if (n < 0 && errno != EAGAIN) {
		request_fail(t, c);
		return;
	}
	c->sent = n < 0 ? 0 : (size_t)n;
	if (c->sent < g.req_len)
		conn_watch(t, c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
}

/* The connection is idle: closed loop sends the next request at once, fixed rate parks it. */
static void conn_next(struct thread *t, struct conn *c)
{
	if (g.o.rate > 0)
		t->idle[(t->idle_head + t->n_idle++) % t->n_conns] = (unsigned)(c - t->conns);
	else if (may_issue())
		request_send(t, c, now_ns());
}

static void conn_reopen(struct thread *t, struct conn *c)
{
	epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	conn_open(t, c);
	t->reconnects++;
}

static void record(struct thread *t, unsigned status, uint64_t lat, const char *body, size_t len)
{
	if (t->n_lat == t->cap_lat) {
		t->cap_lat = t->cap_lat ? t->cap_lat * 2 : 65536;
		t->lat = realloc(t->lat, t->cap_lat * sizeof(*t->lat));
		if (!t->lat)
			die("out of memory");
		if (g.o.timeline) {
			t->done = realloc(t->done, t->cap_lat * sizeof(*t->done));
			if (!t->done)
				die("out of memory");
		}
	}
	if (g.o.timeline)
		t->done[t->n_lat] = now_ns() - g.t0;
	t->lat[t->n_lat++] = lat;
	t->status[status]++;
	if (g.o.mode == MODE_BATCH && status == g.expected) {
		/* Each result is a token or an error object: count the tokens. */
		unsigned long n = 0;
		for (const char *p = body, *end = body + len;
		     (p = memmem(p, (size_t)(end - p), "\"token\":\"", 9)); p += 9)
			n++;
		t->items_ok += n;
		t->items_bad += g.o.items - (n < g.o.items ? n : g.o.items);
		if (n < g.o.items && !t->batch_sample)
			t->batch_sample = strndup(body, len > 300 ? 300 : len);
	}
	if (status != g.expected && !t->sample[status] && body)
		t->sample[status] = strndup(body, len > 300 ? 300 : len);
}

/* The connection broke under a request: status 0 in the counts, and a new connection. */
static void request_fail(struct thread *t, struct conn *c)
{
	if (c->busy) {
		c->busy = false;
		t->in_flight--;
		record(t, 0, now_ns() - c->start_ns, NULL, 0);
	}
	t->conn_errors++;
	conn_reopen(t, c);
	conn_next(t, c);
}

static void on_event(struct thread *t, struct conn *c, uint32_t events)
{
	if ((events & EPOLLOUT) && c->busy && c->sent < g.req_len) {
		ssize_t n = send(c->fd, c->req + c->sent, g.req_len - c->sent, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN) {
			request_fail(t, c);
			return;
		}
		c->sent += n < 0 ? 0 : (size_t)n;
		if (c->sent == g.req_len)
			conn_watch(t, c, EPOLL_CTL_MOD, EPOLLIN);
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	ssize_t n = read(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) {
		request_fail(t, c);
		return;
	}
	c->rlen += (size_t)n;
	for (;;) {
		struct answer a;
		int r = parse_answer(c->rbuf, c->rlen, &a);
		if (r == 0)
			return;
		if (r < 0 || !c->busy) {
			fprintf(stderr, "loadgen: unreadable or unasked-for answer: %.80s\n",
			        c->rbuf);
			request_fail(t, c);
			return;
		}
		size_t used = a.head_len + a.body_len;
		c->busy = false;
		t->in_flight--;
		record(t, a.status, now_ns() - c->start_ns, c->rbuf + a.head_len, a.body_len);
		memmove(c->rbuf, c->rbuf + used, c->rlen - used);
		c->rlen -= used;
		if (a.close) {
			conn_reopen(t, c);
			conn_next(t, c);
			return;
		}
		conn_next(t, c);
		if (!c->rlen)
			return;
	}
}

static void *thread_main(void *arg)
{
	struct thread *t = arg;
	struct epoll_event evs[64];
	uint64_t interval = 0, due_k = 0, sent_k = 0, drain_until = 0;
	bool stopping = false;

	t->ep = epoll_create1(EPOLL_CLOEXEC);
	if (t->ep < 0)
		die("epoll_create1: %s", strerror(errno));
	for (unsigned i = 0; i < t->n_conns; i++) {
		t->conns[i].req = malloc(g.req_len);
		if (!t->conns[i].req)
			die("out of memory");
		memcpy(t->conns[i].req, g.req, g.req_len);
		conn_open(t, &t->conns[i]);
	}
	pthread_barrier_wait(&g.start);
	if (g.o.rate > 0) {
		interval = (uint64_t)((double)NS * g.o.threads / g.o.rate);
		for (unsigned i = 0; i < t->n_conns; i++)
			t->idle[(t->idle_head + t->n_idle++) % t->n_conns] = i;
	} else {
		for (unsigned i = 0; i < t->n_conns; i++)
			conn_next(t, &t->conns[i]);
	}
	for (;;) {
		uint64_t now = now_ns(), wake = now + NS / 10;

		if (!stopping && g.o.rate > 0) {
			/* Each due request goes to a free connection; the ones that find none
			 * wait, and their wait counts in their latency. */
			while (g.t0 + due_k * interval <= now &&
			       (g.o.requests || g.t0 + due_k * interval < g.deadline))
				due_k++;
			while (sent_k < due_k && t->n_idle > 0) {
				if (!may_issue()) {
					stopping = true;
					break;
				}
				struct conn *c = &t->conns[t->idle[t->idle_head]];
				t->idle_head = (t->idle_head + 1) % t->n_conns;
				t->n_idle--;
				request_send(t, c, g.t0 + sent_k * interval);
				sent_k++;
			}
			wake = g.t0 + due_k * interval;
		}
		if (!stopping &&
		    (g.o.requests ? atomic_load(&g.issued) >= g.o.requests : now >= g.deadline)) {
			stopping = true;
		}
		if (stopping && !drain_until)
			drain_until = now + (uint64_t)(g.o.drain * (double)NS);
		if (stopping && t->in_flight == 0)
			break;
		if (stopping && now >= drain_until) {
			t->timeouts += t->in_flight;
			break;
		}
		if (!g.o.requests && !stopping && wake > g.deadline)
			wake = g.deadline;
		if (stopping && wake > drain_until)
			wake = drain_until;
		struct timespec ts = {0, 0};
		if (wake > now)
			ts = (struct timespec){(time_t)((wake - now) / NS),
			                       (long)((wake - now) % NS)};
		int n = epoll_pwait2(t->ep, evs, 64, &ts, NULL);
		if (n < 0 && errno != EINTR)
			die("epoll_pwait2: %s", strerror(errno));
		for (int i = 0; i < n; i++)
			on_event(t, evs[i].data.ptr, evs[i].events);
	}
	/* With --requests, what fell due after the budget was spent was never part of the run. */
	if (g.o.rate > 0 && due_k > sent_k && !g.o.requests)
		t->backlog = due_k - sent_k;
	for (unsigned i = 0; i < t->n_conns; i++) {
		close(t->conns[i].fd);
		free(t->conns[i].req);
	}
	close(t->ep);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values, in milliseconds. */
static double pct_ms(const uint64_t *v, size_t n, double q)
{
	size_t rank = (size_t)(q * (double)n + 0.999999);

	if (n == 0)
		return 0;
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)v[rank - 1] / 1e6;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Opens N connections, makes each serve one GET /healthz (unless --bare) so the server holds
 * them as it holds a keep-alive client's, says so on stdout, and keeps them open for --seconds:
 * the caller samples the server meanwhile. */
static int run_idle(void)
{
	static const char req[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
	int *fds = calloc(g.o.conns, sizeof(*fds));
	char buf[4096];
	unsigned open_n = 0;

	if (!fds)
		die("out of memory");
	for (unsigned i = 0; i < g.o.conns; i++) {
		struct answer a;
		size_t len = 0;
		int fd = connect_one(false), r = 0;
		if (fd < 0) {
			fprintf(stderr, "loadgen: connection %u: %s\n", i, strerror(-fd));
			break;
		}
		fds[open_n++] = fd;
		if (g.o.bare)
			continue;
		if (write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1))
			break;
		while (r == 0) {
			ssize_t n = read(fd, buf + len, sizeof(buf) - len);
			if (n <= 0)
				break;
			len += (size_t)n;
			r = parse_answer(buf, len, &a);
		}
		if (r <= 0 || a.status != 200) {
			fprintf(stderr, "loadgen: connection %u: no 200 for /healthz\n", i);
			break;
		}
	}
	if (g.o.bare) {
		/* connect() returns once the kernel queued the connection; give the server a
		 * moment to accept the last ones. */
		struct timespec settle = {0, 300 * 1000 * 1000};
		nanosleep(&settle, NULL);
	}
	printf("idle: %u connections open\n", open_n);
	fflush(stdout);
	struct timespec ts = {(time_t)g.o.seconds,
	                      (long)((g.o.seconds - (double)(time_t)g.o.seconds) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	for (unsigned i = 0; i < open_n; i++)
		close(fds[i]);
	free(fds);
	printf("{\"mode\":\"idle\",\"connections\":%u,\"open\":%u}\n", g.o.conns, open_n);
	return open_n == g.o.conns ? 0 : 1;
}

/* --timeline: per answer, when it arrived and how long it took, in the order each thread saw. */
static void write_timeline(const struct thread *threads)
{
	FILE *f = fopen(g.o.timeline, "w");
	if (!f)
		die("cannot write %s: %s", g.o.timeline, strerror(errno));
	for (unsigned i = 0; i < g.o.threads; i++)
		for (size_t k = 0; k < threads[i].n_lat; k++)
			fprintf(f, "%.3f %.1f\n", (double)threads[i].done[k] / 1e6,
			        (double)threads[i].lat[k] / 1e3);
	if (fclose(f) != 0)
		die("cannot write %s: %s", g.o.timeline, strerror(errno));
}

int main(int argc, char **argv)
{
	struct thread *threads;
	unsigned long status[MAX_STATUS] = {0};
	unsigned long conn_errors = 0, reconnects = 0, timeouts = 0, backlog = 0;
	unsigned long items_ok = 0, items_bad = 0;
	const char *sample[MAX_STATUS] = {0}, *batch_sample = NULL;
	uint64_t *lat;
	size_t n_lat = 0;
	double c0, t_end;

	parse_options(argc, argv, &g.o);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	resolve();
	if (g.o.mode == MODE_IDLE)
		return run_idle();
	build_request(NULL, 0);
	g.expected = 200;
	if (g.o.mode != MODE_SIGN && g.o.if_none_match) {
		fetch_etag();
		g.expected = 304;
	}

	c0 = cpu_s();
	threads = calloc(g.o.threads, sizeof(*threads));
	if (!threads)
		die("out of memory");
	pthread_barrier_init(&g.start, NULL, g.o.threads + 1);
	for (unsigned i = 0, first = 0; i < g.o.threads; i++) {
		struct thread *t = &threads[i];
		unsigned last = (unsigned)((uint64_t)g.o.conns * (i + 1) / g.o.threads);
		t->index = i;
		t->n_conns = last - first;
		t->conns = calloc(t->n_conns, sizeof(*t->conns));
		t->idle = calloc(t->n_conns, sizeof(*t->idle));
		if (!t->conns || !t->idle)
			die("out of memory");
		first = last;
	}
	/* Every connection is open before the clock starts: t0 and the deadline are set while
	 * the threads wait at the barrier. */
	for (unsigned i = 0; i < g.o.threads; i++)
		if (pthread_create(&threads[i].tid, NULL, thread_main, &threads[i]) != 0)
			die("pthread_create failed");
	g.t0 = now_ns();
	g.deadline = g.t0 + (uint64_t)(g.o.seconds * (double)NS);
	pthread_barrier_wait(&g.start);
	for (unsigned i = 0; i < g.o.threads; i++)
		pthread_join(threads[i].tid, NULL);
	t_end = (double)(now_ns() - g.t0) / 1e9;

	for (unsigned i = 0; i < g.o.threads; i++)
		n_lat += threads[i].n_lat;
	lat = malloc((n_lat ? n_lat : 1) * sizeof(*lat));
	if (!lat)
		die("out of memory");
	n_lat = 0;
	for (unsigned i = 0; i < g.o.threads; i++) {
		struct thread *t = &threads[i];
		memcpy(lat + n_lat, t->lat, t->n_lat * sizeof(*lat));
		n_lat += t->n_lat;
		for (unsigned s = 0; s < MAX_STATUS; s++) {
			status[s] += t->status[s];
			if (!sample[s])
				sample[s] = t->sample[s];
		}
		items_ok += t->items_ok;
		items_bad += t->items_bad;
		if (!batch_sample)
			batch_sample = t->batch_sample;
		conn_errors += t->conn_errors;
		reconnects += t->reconnects;
		timeouts += t->timeouts;
		backlog += t->backlog;
	}
	if (g.o.timeline)
		write_timeline(threads);
	qsort(lat, n_lat, sizeof(*lat), cmp_u64);
	double sum = 0;
	for (size_t i = 0; i < n_lat; i++)
		sum += (double)lat[i];
	double cpu = cpu_s() - c0, rps = (double)n_lat / t_end;
	unsigned long ok = status[g.expected], bad = (unsigned long)n_lat - ok;

	printf("loadgen: %s %s%s, %u connections, %u thread%s, ", mode_names[g.o.mode],
	       g.o.unix_path ? "unix:" : "tcp:", g.o.unix_path ? g.o.unix_path : g.o.tcp, g.o.conns,
	       g.o.threads, g.o.threads > 1 ? "s" : "");
	if (g.o.rate > 0)
		printf("fixed rate %.0f/s", g.o.rate);
	else
		printf("closed loop");
	printf("%s\n", g.o.if_none_match ? ", If-None-Match" : "");
	printf("  requests %zu in %.3f s = %.1f req/s (%lu x %u)\n", n_lat, t_end, rps, ok,
	       g.expected);
	printf("  latency  p50 %.3f ms  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f\n",
	       pct_ms(lat, n_lat, 0.50), pct_ms(lat, n_lat, 0.90), pct_ms(lat, n_lat, 0.99),
	       pct_ms(lat, n_lat, 0.999), n_lat ? (double)lat[n_lat - 1] / 1e6 : 0,
	       n_lat ? sum / (double)n_lat / 1e6 : 0);
	for (unsigned s = 0; s < MAX_STATUS; s++) {
		if (!status[s] || s == g.expected)
			continue;
		if (s == 0)
			printf("  not %u: %lu broke with the connection\n", g.expected, status[s]);
		else
			printf("  not %u: %lu x %u, first body: %s\n", g.expected, status[s], s,
			       sample[s] ? sample[s] : "");
	}
	if (g.o.mode == MODE_BATCH)
		printf("  batch    %u items per request: %lu tokens = %.1f tokens/s, %lu items "
		       "without a token%s%s\n",
		       g.o.items, items_ok, (double)items_ok / t_end, items_bad,
		       batch_sample ? ", first such answer: " : "",
		       batch_sample ? batch_sample : "");
	if (conn_errors || reconnects || timeouts || backlog)
		printf("  connection errors %lu, reconnects %lu, unanswered at the end %lu, "
		       "due but never sent (rate too high) %lu\n",
		       conn_errors, reconnects, timeouts, backlog);
	printf("  client   %.2f us CPU per request\n", n_lat ? cpu / (double)n_lat * 1e6 : 0);

	printf("{\"mode\":\"%s%s\",\"connections\":%u,\"threads\":%u,\"rate\":%.1f,"
	       "\"seconds\":%.4f,\"requests\":%zu,\"ok\":%lu,\"bad\":%lu,\"rps\":%.1f,"
	       "\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f,"
	       "\"mean_ms\":%.4f,\"status\":{",
	       mode_names[g.o.mode], g.o.if_none_match ? "-304" : "", g.o.conns, g.o.threads,
	       g.o.rate, t_end, n_lat, ok, bad, rps, pct_ms(lat, n_lat, 0.50),
	       pct_ms(lat, n_lat, 0.90), pct_ms(lat, n_lat, 0.99), pct_ms(lat, n_lat, 0.999),
	       n_lat ? (double)lat[n_lat - 1] / 1e6 : 0, n_lat ? sum / (double)n_lat / 1e6 : 0);
	for (unsigned s = 0, first = 1; s < MAX_STATUS; s++) {
		if (status[s]) {
			printf("%s\"%u\":%lu", first ? "" : ",", s, status[s]);
			first = 0;
		}
	}
	printf("},\"conn_errors\":%lu,\"timeouts\":%lu,\"backlog\":%lu,"
	       "\"client_cpu_us_per_req\":%.2f,\"items\":%u,\"items_ok\":%lu,"
	       "\"items_bad\":%lu}\n",
	       conn_errors, timeouts, backlog, n_lat ? cpu / (double)n_lat * 1e6 : 0,
	       g.o.mode == MODE_BATCH ? g.o.items : 1, g.o.mode == MODE_BATCH ? items_ok : ok,
	       items_bad);
	for (unsigned i = 0; i < g.o.threads; i++) {
		for (unsigned s = 0; s < MAX_STATUS; s++)
			free(threads[i].sample[s]);
		free(threads[i].lat);
		free(threads[i].batch_sample);
		free(threads[i].conns);
		free(threads[i].idle);
	}
	free(threads);
	free(lat);
	free(g.req);
	return bad || items_bad || conn_errors || timeouts ? 1 : 0;
}

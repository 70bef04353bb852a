/* Stand-in for systemd-journald in bench/run: receives what the daemon sends and counts it. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* The MESSAGE_IDs of daemon/audit.c: a token signed, a request refused. */
#define SIGNED_ID  "4b9e2d7c1f0a4e6b8c3d5a7f9e1b2c4d"
#define REFUSED_ID "9c3a5e7b2d4f4a6c8e1b3d5f7a9c2e4b"

#define MAX_STREAMS 8
#define MAX_SENDERS 16
#define BATCH       64
#define DGRAM_MAX   (16 * 1024)
#define UNIT_MAX    256

/* What one sending process (by the pid the kernel vouches for) sent. */
struct sender {
	pid_t pid;
	unsigned long datagrams, signed_, refused, other, bytes, memfds, truncated, no_unit;
	char unit[UNIT_MAX];
};

struct stream {
	int fd;
	FILE *log; /* where the daemon's stderr lines go, as the harness's log file */
	unsigned long bytes, lines, prefixed;
	bool at_line_start, closed;
};

static struct {
	int dgram;
	struct stream streams[MAX_STREAMS];
	unsigned n_streams;
	struct sender senders[MAX_SENDERS];
	unsigned n_senders;
	unsigned long no_creds, overflow;
} g;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("journalsink: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static struct sender *sender_of(pid_t pid)
{
	for (unsigned i = 0; i < g.n_senders; i++)
		if (g.senders[i].pid == pid)
			return &g.senders[i];
	if (g.n_senders == MAX_SENDERS) {
		g.overflow++;
		return NULL;
	}
	g.senders[g.n_senders] = (struct sender){.pid = pid};
	return &g.senders[g.n_senders++];
}

/* A field KEY=value of the native protocol, at the start of the record or of a line. */
static const char *field(const char *rec, size_t len, const char *key, size_t *vlen)
{
	size_t klen = strlen(key);
	const char *p = rec, *end = rec + len;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			eol = end;
		if ((size_t)(eol - p) > klen && memcmp(p, key, klen) == 0 && p[klen] == '=') {
			*vlen = (size_t)(eol - p) - klen - 1;
			return p + klen + 1;
		}
		p = eol + 1;
	}
	return NULL;
}

static void count_record(struct sender *s, const char *rec, size_t len)
{
	size_t n = 0;
	const char *id = field(rec, len, "MESSAGE_ID", &n);
	const char *unit;

	s->datagrams++;
	s->bytes += len;
	if (id && n == 32 && memcmp(id, SIGNED_ID, 32) == 0)
		s->signed_++;
	else if (id && n == 32 && memcmp(id, REFUSED_ID, 32) == 0)
		s->refused++;
	else
		s->other++;
	unit = field(rec, len, "TOKENSIGN_CALLER_UNIT", &n);
	if (!unit)
		return;
	if (n == 0) {
		s->no_unit++;
		return;
	}
	if (n >= UNIT_MAX)
		n = UNIT_MAX - 1;
	memcpy(s->unit, unit, n);
	s->unit[n] = 0;
}

/* A record too large for a datagram comes as a sealed memfd (sd_journal_sendv's fallback). */
static void count_memfd(struct sender *s, int fd)
{
	struct stat st;
	char *buf;

	if (fstat(fd, &st) == 0 && st.st_size > 0 && (buf = malloc((size_t)st.st_size))) {
		ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
		if (n > 0 && s) {
			s->memfds++;
			count_record(s, buf, (size_t)n);
		}
		free(buf);
	}
	close(fd);
}

/* Everything queued on the datagram socket now; false when nothing was. */
static bool drain_dgrams(int flags)
{
	static char bufs[BATCH][DGRAM_MAX];
	static char ctl[BATCH][CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 8)];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	int n;

	for (int i = 0; i < BATCH; i++) {
		iov[i] = (struct iovec){bufs[i], DGRAM_MAX};
		msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i],
		                                       .msg_iovlen = 1,
		                                       .msg_control = ctl[i],
		                                       .msg_controllen = sizeof(ctl[i])}};
	}
	n = recvmmsg(g.dgram, msgs, BATCH, flags | MSG_CMSG_CLOEXEC, NULL);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return false;
		die("recvmmsg: %s", strerror(errno));
	}
	for (int i = 0; i < n; i++) {
		struct msghdr *m = &msgs[i].msg_hdr;
		struct sender *s = NULL;
		int fds[8], n_fds = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
			if (c->cmsg_level != SOL_SOCKET)
				continue;
			if (c->cmsg_type == SCM_CREDENTIALS) {
				struct ucred u;
				memcpy(&u, CMSG_DATA(c), sizeof(u));
				s = sender_of(u.pid);
			} else if (c->cmsg_type == SCM_RIGHTS) {
				n_fds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
				if (n_fds > 8)
					n_fds = 8;
				memcpy(fds, CMSG_DATA(c), sizeof(int) * (size_t)n_fds);
			}
		}
		if (!s)
			g.no_creds++;
		for (int f = 0; f < n_fds; f++)
			count_memfd(s, fds[f]);
		if (!s || msgs[i].msg_len == 0)
			continue;
		if (m->msg_flags & MSG_TRUNC)
			s->truncated++;
		count_record(s, bufs[i], msgs[i].msg_len);
	}
	return n > 0;
}

/* The daemon's stderr: copied to its log file; lines with a "<N>" priority prefix counted (the
 * journal's stream protocol, which log.c writes in journal mode). */
static void read_stream(struct stream *st)
{
	char buf[8192];
	ssize_t n = read(st->fd, buf, sizeof(buf));

	if (n <= 0) {
		if (n < 0 && errno == EAGAIN)
			return;
		st->closed = true;
		return;
	}
	st->bytes += (size_t)n;
	fwrite(buf, 1, (size_t)n, st->log);
	fflush(st->log);
	for (ssize_t i = 0; i < n; i++) {
		if (st->at_line_start) {
			st->lines++;
			if (buf[i] == '<')
				st->prefixed++;
		}
		st->at_line_start = buf[i] == '\n';
	}
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void print_stats(void)
{
	while (drain_dgrams(MSG_DONTWAIT))
		;
	printf("{\"cpu_s\":%.4f,\"no_creds\":%lu,\"senders_overflow\":%lu,\"senders\":{", cpu_s(),
	       g.no_creds, g.overflow);
	for (unsigned i = 0; i < g.n_senders; i++) {
		struct sender *s = &g.senders[i];
		printf("%s\"%d\":{\"datagrams\":%lu,\"signed\":%lu,\"refused\":%lu,\"other\":%lu,"
		       "\"bytes\":%lu,\"memfds\":%lu,\"truncated\":%lu,\"no_unit\":%lu,\"unit\":",
		       i ? "," : "", (int)s->pid, s->datagrams, s->signed_, s->refused, s->other,
		       s->bytes, s->memfds, s->truncated, s->no_unit);
		json_string(s->unit);
		putchar('}');
	}
	printf("},\"streams\":[");
	for (unsigned i = 0; i < g.n_streams; i++)
		printf("%s{\"bytes\":%lu,\"lines\":%lu,\"prefixed\":%lu}", i ? "," : "",
		       g.streams[i].bytes, g.streams[i].lines, g.streams[i].prefixed);
	printf("]}\n");
	fflush(stdout);
}

static void usage(FILE *out)
{
	fputs(
	    "usage: journalsink --dgram-fd FD [--stream-fd FD:LOGFILE]...\n"
	    "Receives journal datagrams on FD (a bound AF_UNIX datagram socket with SO_PASSCRED)\n"
	    "and reads each stream FD (a daemon's stderr), appending it to LOGFILE. Each line\n"
	    "'stats' on stdin is answered with one JSON line of counts per sending pid and this\n"
	    "process's own CPU; end of stdin ends it.\n",
	    out);
}

static void add_stream(const char *arg)
{
	char *colon = strchr(arg, ':');
	struct stream *st;

	if (!colon || g.n_streams == MAX_STREAMS)
		die("bad --stream-fd %s (FD:LOGFILE, at most %d)", arg, MAX_STREAMS);
	st = &g.streams[g.n_streams++];
	*st = (struct stream){.fd = atoi(arg), .at_line_start = true};
	st->log = fopen(colon + 1, "a");
	if (!st->log)
		die("cannot open %s: %s", colon + 1, strerror(errno));
	fcntl(st->fd, F_SETFL, fcntl(st->fd, F_GETFL) | O_NONBLOCK);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dgram-fd", required_argument, NULL, 'd'},
	    {"stream-fd", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char line[64];
	int c;

	g.dgram = -1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			g.dgram = atoi(optarg);
			break;
		case 's':
			add_stream(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (g.dgram < 0) {
		usage(stderr);
		return 2;
	}
	printf("journalsink: ready\n");
	fflush(stdout);
	for (;;) {
		struct pollfd p[2 + MAX_STREAMS];
		unsigned n = 0;
		p[n++] = (struct pollfd){.fd = g.dgram, .events = POLLIN};
		p[n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
		for (unsigned i = 0; i < g.n_streams; i++)
			p[n++] = (struct pollfd){.fd = g.streams[i].closed ? -1 : g.streams[i].fd,
			                         .events = POLLIN};
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll: %s", strerror(errno));
		}
		if (p[0].revents)
			drain_dgrams(MSG_DONTWAIT);
		for (unsigned i = 0; i < g.n_streams; i++)
			if (p[2 + i].revents)
				read_stream(&g.streams[i]);
		if (p[1].revents) {
			if (!fgets(line, sizeof(line), stdin))
				break;
			if (strncmp(line, "stats", 5) == 0)
				print_stats();
		}
	}
	/* The last of the daemon's lines (it may log while stopping after our stdin closed). */
	for (unsigned i = 0; i < g.n_streams; i++) {
		while (!g.streams[i].closed) {
			struct pollfd p = {.fd = g.streams[i].fd, .events = POLLIN};
			if (poll(&p, 1, 200) <= 0)
				break;
			read_stream(&g.streams[i]);
		}
		fclose(g.streams[i].log);
	}
	return 0;
}

/* The floors under our own cost per signature (issue 15): what each part the design requires
 * costs on this machine by itself, with nothing of ours around it.
 *
 *   parse_body    jansson parsing a sign request's body (bench/claims.h's claims and typ) with
 *                 the daemon's flags, into a bump arena as the daemon's per-thread arena does
 *   parse_item    the same for one item of a 16-item sign-batch body (the body / 16)
 *   parse_guard   what the signing helper's guard cannot do without: base64url-decode the JWS
 *                 header and payload and parse both with jansson (JSON_REJECT_DUPLICATES)
 *   encode        base64url of the payload and of a 64-byte signature (the front's JWS)
 *   round_trip    one request (the size of a sign frame) and its answer between two processes
 *                 on a SOCK_STREAM socketpair, both blocking in read(): the helper round trip
 *                 with nothing in it, CPU of both sides; once with the two on any CPU, once with
 *                 both on one CPU (what [hsm] pin-cpus = yes does). Alone, the other CPUs idle,
 *                 each wake-up may have to wake an idle CPU; so the same again with as many
 *                 pairs at once as this process may use CPUs (the daemon's signing workers and
 *                 their helpers: one per CPU), unpinned, and pinned pair k to the k-th CPU;
 *                 for the lone pair, alone and on one CPU, also the 99th percentile of one
 *                 exchange's wall-clock time
 *   journal_send  one datagram of a journal record's size sent on a Unix datagram socket that
 *                 another process drains: the sender's CPU (the receiver is journald's)
 *
 * CPU time comes from clock_gettime(CLOCK_PROCESS_CPUTIME_ID) of each process taking part. The
 * output is one JSON line of microseconds per operation. bench/run runs it and adds the HTTP
 * exchange it measures on the daemon itself (GET /healthz) to make the floor per signature. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "b64url.h"
#include "claims.h"

#define BODY        "{\"claims\":" BENCH_CLAIMS ",\"typ\":\"" BENCH_TYP "\"}"
#define HEADER      "{\"alg\":\"ES256\",\"kid\":\"" BENCH_KID "\",\"typ\":\"" BENCH_TYP "\"}"
#define BATCH_ITEMS 16
#define FRAME_OUT   640 /* a sign frame: signing input of the bench's claims and the key's id */
#define FRAME_IN    80  /* its answer: a 64-byte ES256 signature and the frame's header */
#define RECORD      590 /* a journal record of the bench's tokens (bench/run counts 590-592) */

static void die(const char *what)
{
	fprintf(stderr, "floors: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double cpu_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
		die("clock_gettime");
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* ---- a bump arena for jansson, reset after each tree, like daemon/http/json_arena.c ---- */

static _Alignas(16) unsigned char arena[256 * 1024];
static size_t arena_used;
static int arena_on;

static void *bump_malloc(size_t n)
{
	size_t need = (n + 15) & ~(size_t)15;

	if (!arena_on || need > sizeof(arena) - arena_used)
		return malloc(n);
	arena_used += need;
	return arena + arena_used - need;
}

static void bump_free(void *p)
{
	if ((unsigned char *)p < arena || (unsigned char *)p >= arena + sizeof(arena))
		free(p);
}

static void parse_or_die(const char *text, size_t len, size_t flags)
{
	json_error_t err;
	json_t *v = json_loadb(text, len, flags, &err);

	if (!v) {
		fprintf(stderr, "floors: the bench's own JSON does not parse: %s\n", err.text);
		exit(1);
	}
	json_decref(v);
}

static double parse_us(const char *text, size_t len, size_t flags, long n, int use_arena)
{
	double t0;

	arena_on = use_arena;
	t0 = cpu_us();
	for (long i = 0; i < n; i++) {
		arena_used = 0;
		parse_or_die(text, len, flags);
	}
	arena_on = 0;
	return (cpu_us() - t0) / (double)n;
}

static char *batch_body(size_t *len)
{
	size_t item = strlen("{\"claims\":" BENCH_CLAIMS ",\"typ\":\"" BENCH_TYP "\"}");
	size_t size = 16 + BATCH_ITEMS * (item + 1);
	char *b = malloc(size), *p = b;

	if (!b)
		die("malloc");
	p += sprintf(p, "{\"requests\":[");
	for (int i = 0; i < BATCH_ITEMS; i++)
		p += sprintf(p, "%s%s", i ? "," : "", BODY);
	p += sprintf(p, "]}");
	*len = (size_t)(p - b);
	return b;
}

/* The payload the daemon signs for the bench's claims: iss, iat, exp, jti added to theirs. */
static char payload[1024];

static void make_payload(void)
{
	snprintf(payload, sizeof(payload), "{%s,%s", BENCH_ADDED_CLAIMS, BENCH_CLAIMS + 1);
}

static double guard_us(long n)
{
	char h64[256], p64[1024];
	uint8_t buf[1024];
	size_t got;
	double t0;

	b64url_encode((const uint8_t *)HEADER, strlen(HEADER), h64);
	b64url_encode((const uint8_t *)payload, strlen(payload), p64);
	t0 = cpu_us();
	for (long i = 0; i < n; i++) {
		if (b64url_decode(h64, strlen(h64), buf, sizeof(buf), &got) < 0)
			die("b64url_decode");
		parse_or_die((const char *)buf, got, JSON_REJECT_DUPLICATES);
		if (b64url_decode(p64, strlen(p64), buf, sizeof(buf), &got) < 0)
			die("b64url_decode");
		parse_or_die((const char *)buf, got, JSON_REJECT_DUPLICATES);
	}
	return (cpu_us() - t0) / (double)n;
}

static double encode_us(long n)
{
	static const uint8_t sig[64] = {1};
	char out[1024];
	size_t plen = strlen(payload);
	double t0 = cpu_us();

	for (long i = 0; i < n; i++) {
		b64url_encode((const uint8_t *)payload, plen, out);
		b64url_encode(sig, sizeof(sig), out);
	}
	return (cpu_us() - t0) / (double)n;
}

/* ---- two processes ---- */

static void full_io(int fd, void *buf, size_t n, int writing)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = writing ? write(fd, (char *)buf + done, n - done)
		                    : read(fd, (char *)buf + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die(writing ? "write" : "read");
		done += (size_t)r;
	}
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die("sched_setaffinity");
}

static double wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* One exchange to warm up, then n timed: a frame of FRAME_OUT bytes from the client to the
 * serving side, and one of FRAME_IN bytes back. Returns the CPU microseconds of the n; with
 * lat (the client's side), each exchange's wall-clock microseconds go there. */
static double exchanges(int fd, long n, int serving, double *lat)
{
	char out[FRAME_OUT] = {0}, in[FRAME_IN] = {0};
	double t0 = 0, w = 0;

	for (long i = -1; i < n; i++) {
		if (i == 0)
			t0 = cpu_us();
		if (lat)
			w = wall_us();
		full_io(fd, out, sizeof(out), !serving);
		full_io(fd, in, sizeof(in), serving);
		if (lat && i >= 0)
			lat[i] = wall_us() - w;
	}
	return cpu_us() - t0;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The p-th percentile (0 < p < 100) of n values, sorted in place. */
static double percentile(double *v, long n, double p)
{
	long i = (long)((double)n * p / 100.0);

	qsort(v, (size_t)n, sizeof(*v), by_value);
	return v[i < n ? i : n - 1];
}

/* A socketpair of type and a child: the child keeps sv[1], the parent sv[0]. */
static pid_t fork_pair(int type, int sv[2])
{
	pid_t pid;

	if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	pid = fork();
	if (pid < 0)
		die("fork");
	close(sv[pid == 0 ? 0 : 1]);
	return pid;
}

/* Both sides' CPU per exchange of FRAME_OUT bytes and FRAME_IN back; cpu < 0: not pinned.
 * With p99, the 99th percentile of an exchange's wall-clock time goes there. */
static double round_trip_us(long n, int cpu, double *p99)
{
	double *lat = p99 ? calloc((size_t)n, sizeof(*lat)) : NULL;
	int sv[2];
	double mine, child_us;
	cpu_set_t old;
	pid_t pid;

	pid = fork_pair(SOCK_STREAM, sv);
	if (pid == 0) {
		double used;

		pin(cpu);
		used = exchanges(sv[1], n, 1, NULL);
		full_io(sv[1], &used, sizeof(used), 1);
		_exit(0);
	}
	if (cpu >= 0 && sched_getaffinity(0, sizeof(old), &old) < 0)
		die("sched_getaffinity");
	pin(cpu);
	if (p99 && !lat)
		die("calloc");
	mine = exchanges(sv[0], n, 0, lat);
	if (p99)
		*p99 = percentile(lat, n, 99.0);
	free(lat);
	if (cpu >= 0 && sched_setaffinity(0, sizeof(old), &old) < 0)
		die("sched_setaffinity");
	full_io(sv[0], &child_us, sizeof(child_us), 0);
	close(sv[0]);
	waitpid(pid, NULL, 0);
	return (mine + child_us) / (double)n;
}

/* round_trip_us() in `pairs` processes at once, pair k on the k-th allowed CPU when pinned:
 * the mean of their CPU per exchange. */
static double parallel_round_trip_us(long n, int pairs, int pinned)
{
	cpu_set_t allowed;
	int cpus[CPU_SETSIZE], n_cpus = 0, fds[2];
	double sum = 0;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		die("sched_getaffinity");
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &allowed))
			cpus[n_cpus++] = c;
	if (pipe(fds) < 0)
		die("pipe");
	for (int k = 0; k < pairs; k++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			double us;
			close(fds[0]);
			us = round_trip_us(n, pinned ? cpus[k % n_cpus] : -1, NULL);
			full_io(fds[1], &us, sizeof(us), 1);
			_exit(0);
		}
	}
	close(fds[1]);
	for (int k = 0; k < pairs; k++) {
		double us;
		full_io(fds[0], &us, sizeof(us), 0);
		sum += us;
	}
	close(fds[0]);
	while (wait(NULL) > 0)
		;
	return sum / pairs;
}

/* The sender's CPU per datagram of RECORD bytes, a child draining them as journald would. */
static double journal_send_us(long n)
{
	int sv[2];
	char rec[RECORD];
	double t0;
	pid_t pid;

	memset(rec, 'x', sizeof(rec));
	pid = fork_pair(SOCK_DGRAM, sv);
	if (pid == 0) {
		char buf[RECORD + 1];
		for (long i = 0; i < n + 1; i++)
			if (recv(sv[1], buf, sizeof(buf), 0) < 0)
				_exit(1);
		_exit(0);
	}
	t0 = cpu_us();
	for (long i = 0; i < n; i++)
		if (send(sv[0], rec, sizeof(rec), MSG_NOSIGNAL) != (ssize_t)sizeof(rec))
			die("send");
	t0 = cpu_us() - t0;
	if (send(sv[0], rec, 1, MSG_NOSIGNAL) < 0)
		die("send");
	close(sv[0]);
	waitpid(pid, NULL, 0);
	return t0 / (double)n;
}

int main(int argc, char **argv)
{
	long n = 20000;
	size_t blen;
	char *batch;
	double body, item, body_malloc, guard, enc, rt_any, rt_one = -1, rt_par, rt_par_pinned,
	                                                    jsend;
	double rt_any_p99 = -1, rt_one_p99 = -1;
	cpu_set_t allowed;
	int n_cpus = 1;

	if (argc > 2 || (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
	                               strcmp(argv[1], "--help") == 0 || atol(argv[1]) < 100))) {
		fputs("usage: floors [ITERATIONS]   (at least 100; default 20000)\n"
		      "Prints one JSON line: CPU microseconds per operation of each part the "
		      "signing\n"
		      "path cannot do without (see the comment at the top of bench/floors.c).\n",
		      argc == 2 && argv[1][0] == '-' && argv[1][1] == 'h' ? stdout : stderr);
		return argc == 2 && argv[1][0] == '-' && argv[1][1] == 'h' ? 0 : 2;
	}
	if (argc == 2)
		n = atol(argv[1]);
	signal(SIGPIPE, SIG_IGN);
	json_set_alloc_funcs(bump_malloc, bump_free);
	batch = batch_body(&blen);
	make_payload();

	/* warm up caches and the allocator once, then measure */
	parse_us(BODY, strlen(BODY), JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, n / 10 + 1, 1);
	body = parse_us(BODY, strlen(BODY), JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, n, 1);
	body_malloc = parse_us(BODY, strlen(BODY), JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, n, 0);
	item = parse_us(batch, blen, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, n / BATCH_ITEMS + 1,
	                1) /
	       BATCH_ITEMS;
	guard = guard_us(n);
	enc = encode_us(n);
	rt_any = round_trip_us(n, -1, &rt_any_p99);
	if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_COUNT(&allowed) > 0) {
		n_cpus = CPU_COUNT(&allowed);
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &allowed)) {
				rt_one = round_trip_us(n, c, &rt_one_p99);
				break;
			}
	}
	rt_par = parallel_round_trip_us(n, n_cpus, 0);
	rt_par_pinned = parallel_round_trip_us(n, n_cpus, 1);
	jsend = journal_send_us(n);
	printf("{\"iterations\":%ld,\"body_bytes\":%zu,\"parse_body_us\":%.2f,"
	       "\"parse_body_malloc_us\":%.2f,\"parse_item_us\":%.2f,\"parse_guard_us\":%.2f,"
	       "\"encode_us\":%.2f,\"round_trip_us\":%.2f,\"round_trip_one_cpu_us\":%.2f,"
	       "\"round_trip_p99_wall_us\":%.1f,\"round_trip_one_cpu_p99_wall_us\":%.1f,"
	       "\"round_trip_pairs\":%d,\"round_trip_parallel_us\":%.2f,"
	       "\"round_trip_parallel_pinned_us\":%.2f,\"journal_send_us\":%.2f}\n",
	       n, strlen(BODY), body, body_malloc, item, guard, enc, rt_any, rt_one, rt_any_p99,
	       rt_one_p99, n_cpus, rt_par, rt_par_pinned, jsend);
	free(batch);
	return 0;
}

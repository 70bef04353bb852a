/* The helper pool and the client half of every protocol operation (hsmc.h). */
#include "hsmc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "counters.h"
#include "log.h"
#include "pinfile.h"
#include "proto.h"

#ifndef TOKENSIGN_HELPER
#define TOKENSIGN_HELPER "/usr/lib/tokensign/tokensign-hsm"
#endif

#define READY_TIMEOUT_MS  30000  /* a login on a slow HSM */
#define MANAGE_TIMEOUT_MS 300000 /* an RSA key generation on a slow HSM */
#define PROBE_TIMEOUT_MS  5000
#define BACKOFF_MIN_MS    100
#define BACKOFF_MAX_MS    1000  /* signing resumes within a second of a helper's loss */
#define LIVED_LONG_MS     10000 /* a helper that died after this long is replaced at once */

extern char **environ;

struct slot {
	pthread_mutex_t lock;
	bool manage;
	int fd; /* -1: not running */
	pid_t pid;
	int64_t started_ms, retry_at_ms;
	unsigned backoff_ms;
	int timeout_ms; /* the socket's receive timeout now; -1: not set */
	struct proto_out out;
	uint8_t *rx;
	size_t rx_cap, rx_len;
	const uint8_t *body; /* the last answer's, in rx */
};

/* Each receive on s waits at most timeout_ms: one setsockopt when it changes, none per call. */
static int slot_timeout(struct slot *s, int timeout_ms)
{
	int r = 0;

	if (s->timeout_ms != timeout_ms && (r = proto_set_timeout(s->fd, timeout_ms)) == 0)
		s->timeout_ms = timeout_ms;
	return r;
}

struct hsmc {
	struct slot manage;
	struct slot *sign;
	unsigned n_sign;
	int sign_timeout_ms;
	pthread_mutex_t keeper_lock;
	int keeper_fd;
	pid_t keeper_pid;
	atomic_bool keeper_lost;
	atomic_bool refused;
	void (*on_refused)(void *data);
	void *on_refused_data;
	atomic_ulong restarts;
	atomic_ulong repairs; /* the helpers' session repairs, as their answers tell them */
	atomic_uint next_pick;
	int cpus[CPU_SETSIZE]; /* those this process may run on, in order */
	unsigned n_cpus;
	pthread_mutex_t plan_lock;
	char *plans[_JWS_ALG_MAX];
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The helper next to our own executable (a build tree), else the installed one. */
static void helper_path(char *buf, size_t size)
{
	ssize_t n = readlink("/proc/self/exe", buf, size - sizeof("tokensign-hsm"));
	char *slash;

	if (n > 0) {
		buf[n] = '\0';
		slash = strrchr(buf, '/');
		if (slash) {
			strcpy(slash + 1, "tokensign-hsm");
			if (access(buf, X_OK) == 0)
				return;
		}
	}
	snprintf(buf, size, "%s", TOKENSIGN_HELPER);
}

/* Moves fd to a number above the helper's fixed ones, close-on-exec. */
static int fd_high(int fd)
{
	int high = fcntl(fd, F_DUPFD_CLOEXEC, 10);

	close(fd);
	return high;
}

static int keeper_start(struct hsmc *c, const struct hsmc_opts *o, int pin_fd)
{
	char path[PATH_MAX];
	char *argv[10];
	size_t n = 0;
	int sv[2], r;
	posix_spawn_file_actions_t fa;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return hsm_fail_text(-errno, "socketpair: %s", strerror(errno));
	sv[0] = fd_high(sv[0]);
	sv[1] = fd_high(sv[1]);
	if (sv[0] < 0 || sv[1] < 0) {
		close(sv[0]);
		close(sv[1]);
		return hsm_fail_text(-EMFILE, "no descriptor for the helper socket");
	}
	helper_path(path, sizeof(path));
	argv[n++] = "tokensign-hsm";
	argv[n++] = "--keeper";
	argv[n++] = (char *)o->module;
	argv[n++] = (char *)o->token;
	argv[n++] = (char *)o->pin_file;
	if (o->session_copies)
		argv[n++] = "--session-copies";
	if (o->module_network)
		argv[n++] = "--module-network";
	argv[n] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, sv[1], PROTO_FD_SOCKET);
	posix_spawn_file_actions_adddup2(&fa, pin_fd, PROTO_FD_PIN);
	posix_spawn_file_actions_addclosefrom_np(&fa, PROTO_FD_PIN + 1);
	r = -posix_spawn(&c->keeper_pid, path, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(sv[1]);
	if (r < 0) {
		close(sv[0]);
		return hsm_fail_text(r, "cannot start %s: %s", path, strerror(-r));
	}
	c->keeper_fd = sv[0];
	return 0;
}

/* The keeper is gone: no helper can ever be started again, and only a restart of the whole
 * service gets the PIN back. */
static int keeper_lost(struct hsmc *c, const char *why)
{
	if (!atomic_exchange(&c->keeper_lost, true)) {
		log_error("the helper keeper (pid %d) %s; no token helper can be started again: "
		          "shutting down",
		          (int)c->keeper_pid, why);
		kill(getpid(), SIGTERM);
	}
	return hsm_fail_text(-ENOTCONN, "the helper keeper is gone");
}

/* Asks the keeper for a helper; *ret_fd is its socket. */
static int keeper_spawn(struct hsmc *c, bool manage, int *ret_fd, pid_t *ret_pid)
{
	char req = manage ? 'M' : 'S';
	char cbuf[CMSG_SPACE(sizeof(int))];
	int32_t pid = -1;
	struct iovec iov = {&pid, sizeof(pid)};
	struct msghdr msg = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct pollfd pfd;
	struct cmsghdr *cm;
	ssize_t got;
	int fd = -1, r;

	if (atomic_load(&c->keeper_lost))
		return hsm_fail_text(-ENOTCONN, "the helper keeper is gone");
	pthread_mutex_lock(&c->keeper_lock);
	if (send(c->keeper_fd, &req, 1, MSG_NOSIGNAL) != 1) {
		pthread_mutex_unlock(&c->keeper_lock);
		return keeper_lost(c, "does not take requests");
	}
	pfd = (struct pollfd){.fd = c->keeper_fd, .events = POLLIN};
	do
		r = poll(&pfd, 1, READY_TIMEOUT_MS);
	while (r < 0 && errno == EINTR);
	got = r == 1 ? recvmsg(c->keeper_fd, &msg, MSG_CMSG_CLOEXEC) : -1;
	pthread_mutex_unlock(&c->keeper_lock);
	if (got <= 0)
		return keeper_lost(c, r == 0 ? "did not answer" : "hung up");
	cm = CMSG_FIRSTHDR(&msg);
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
	    cm->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	if (got != sizeof(pid) || pid <= 0 || fd < 0) {
		if (fd >= 0)
			close(fd);
		return hsm_fail_text(-ENOTCONN, "the helper keeper could not start a helper");
	}
	*ret_fd = fd;
	*ret_pid = (pid_t)pid;
	return 0;
}

static void refused(struct hsmc *c)
{
	if (!atomic_exchange(&c->refused, true) && c->on_refused)
		c->on_refused(c->on_refused_data);
}

/* When s's next helper may start: at once after one that lived long, else after a backoff
 * that doubles from BACKOFF_MIN_MS to BACKOFF_MAX_MS while helpers die young. */
static void backoff(struct slot *s, int64_t now, bool lived_long)
{
	if (lived_long)
		s->backoff_ms = 0;
	else
		s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (s->backoff_ms > BACKOFF_MAX_MS)
		s->backoff_ms = BACKOFF_MAX_MS;
	s->retry_at_ms = now + s->backoff_ms;
}

/* Replaces a helper that was lost: killed when it might still run (it did not answer in time or
 * spoke outside the protocol), then started again after a backoff that grows while helpers die
 * young. */
static void slot_drop(struct hsmc *c, struct slot *s, bool kill_it, const char *why)
{
	int64_t now = now_ms();

	if (s->fd < 0)
		return;
	log_warning("token helper %d (%s) %s; starting another", (int)s->pid,
	            s->manage ? "management" : "signing", why);
	if (kill_it)
		kill(s->pid, SIGKILL);
	close(s->fd);
	s->fd = -1;
	backoff(s, now, now - s->started_ms >= LIVED_LONG_MS);
	atomic_fetch_add(&c->restarts, 1);
}

/* The CPU of signing slot k: the k-th of those this process may run on. */
static int slot_cpu(const struct hsmc *c, unsigned k)
{
	return c->n_cpus ? c->cpus[k % c->n_cpus] : -1;
}

static void pin(pid_t pid, int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	/* Best effort: a CPU set narrowed under us, or a system call filter that refuses the
	 * call (a unit without SystemCallFilter=sched_setaffinity), leaves the scheduler to
	 * decide; said once, since it costs CPU and latency but no signature. */
	if (sched_setaffinity(pid, sizeof(set), &set) < 0) {
		static atomic_bool said;
		int e = errno;
		if (!atomic_exchange(&said, true))
			log_warning(
			    "hsm: pin-cpus: cannot pin %s to CPU %d: %s; signing workers and "
			    "helpers run wherever the scheduler puts them, at a cost in CPU and "
			    "latency (allow sched_setaffinity, or set [hsm] pin-cpus = no; "
			    "docs/performance.md)",
			    pid ? "a signing helper" : "a signing worker", cpu, strerror(e));
	}
}

/* Starts s's helper and waits for its login. */
static int slot_start(struct hsmc *c, struct slot *s)
{
	struct proto_in in;
	char err[PROTO_MAX_ERROR];
	unsigned repairs = 0;
	int result = 0, r;
	int64_t now = now_ms();

	if (atomic_load(&c->refused))
		return hsm_fail_text(-EKEYREJECTED, "the token refused the PIN; no helper is "
		                                    "started until the daemon restarts");
	/* The backoff is short: the caller waits it out rather than fail a request for it. */
	if (now < s->retry_at_ms) {
		int64_t wait = s->retry_at_ms - now;
		nanosleep(
		    &(struct timespec){.tv_sec = wait / 1000, .tv_nsec = wait % 1000 * 1000000},
		    NULL);
		now = now_ms();
	}
	r = keeper_spawn(c, s->manage, &s->fd, &s->pid);
	if (r < 0) {
		s->retry_at_ms = now + BACKOFF_MIN_MS;
		return r;
	}
	/* A signing helper shares its CPU with the worker that prefers it: the hand-over between
	 * them stays on one CPU, warm, and without a cross-CPU wake-up. */
	if (!s->manage)
		pin(s->pid, slot_cpu(c, (unsigned)(s - c->sign)));
	s->fd = fd_high(s->fd);
	s->started_ms = now;
	s->timeout_ms = -1;
	r = slot_timeout(s, READY_TIMEOUT_MS);
	if (r == 0)
		r = proto_recv(s->fd, PROTO_MAX_ANSWER, &s->rx, &s->rx_cap, &s->body, &s->rx_len);
	if (r == 0)
		r = proto_open_answer(&in, s->body, s->rx_len, PROTO_READY, &result, &repairs, err,
		                      sizeof(err));
	if (r < 0 || !proto_done(&in)) {
		slot_drop(c, s, true, "did not report its login");
		return hsm_fail_text(-ECONNABORTED, "a token helper did not start");
	}
	if (result < 0) {
		hsm_fail_text(result, "%s", err);
		close(s->fd);
		s->fd = -1;
		backoff(s, now_ms(), false);
		if (result == -EKEYREJECTED)
			refused(c);
		return result;
	}
	return 0;
}

/* Sends the request in s->out and reads the answer to op into in. Returns the helper's result
 * (its text as this thread's error), or -ECONNABORTED when the helper was lost. */
static int call_once(struct hsmc *c, struct slot *s, enum proto_op op, int timeout_ms,
                     struct proto_in *in)
{
	char err[PROTO_MAX_ERROR];
	unsigned repairs = 0;
	int result = 0, r;

	if (s->out.oom)
		return -ENOMEM;
	if (s->fd < 0 && (r = slot_start(c, s)) < 0)
		return r;
	r = proto_send(s->fd, &s->out);
	if (r < 0) {
		slot_drop(c, s, false, "hung up");
		return hsm_fail_text(-ECONNABORTED, "the token helper was lost (%s)",
		                     proto_op_name(op));
	}
	r = slot_timeout(s, timeout_ms);
	if (r == 0)
		r = proto_recv(s->fd, PROTO_MAX_ANSWER, &s->rx, &s->rx_cap, &s->body, &s->rx_len);
	if (r == 0)
		r = proto_open_answer(in, s->body, s->rx_len, op, &result, &repairs, err,
		                      sizeof(err));
	if (r < 0) {
		slot_drop(c, s, r != -EPIPE,
		          r == -ETIMEDOUT ? "did not answer in time"
		          : r == -EPIPE   ? "died"
		                          : "answered outside the protocol");
		return hsm_fail_text(-ECONNABORTED, "the token helper was lost (%s)",
		                     proto_op_name(op));
	}
	/* A repair helped or not: either way the session was repaired. */
	atomic_fetch_add(&c->repairs, repairs);
	if (result < 0) {
		hsm_fail_text(result, "%s", err);
		if (result == -EKEYREJECTED)
			refused(c);
		return result;
	}
	return 0;
}

/* call_once, counted (tokensign_hsm_operations_total, tokensign_hsm_errors_total). */
static int call(struct hsmc *c, struct slot *s, enum proto_op op, int timeout_ms,
                struct proto_in *in)
{
	int r = call_once(c, s, op, timeout_ms, in);

	counters_hsm_call(proto_op_name(op), r, r < 0 ? hsm_last_error() : NULL);
	return r;
}

/* After a successful call: the answer's fields decoded exactly, else the helper is lost. */
static int answer_end(struct hsmc *c, struct slot *s, struct proto_in *in)
{
	if (proto_done(in))
		return 0;
	slot_drop(c, s, true, "answered outside the protocol");
	return hsm_fail_text(-ECONNABORTED, "the token helper was lost (a bad answer)");
}

static void slot_init(struct slot *s, bool manage)
{
	pthread_mutex_init(&s->lock, NULL);
	s->manage = manage;
	s->fd = -1;
}

static void slot_free(struct slot *s)
{
	if (s->fd >= 0)
		close(s->fd);
	proto_out_free(&s->out);
	free(s->rx);
	pthread_mutex_destroy(&s->lock);
}

int hsmc_open(const struct hsmc_opts *o, struct hsmc **ret)
{
	struct hsmc *c = calloc(1, sizeof(*c));
	int pin_fd, r;

	if (!c)
		return -ENOMEM;
	c->keeper_fd = -1;
	c->n_sign = o->n_sign ? o->n_sign : 1;
	if (o->pin_cpus) {
		cpu_set_t set;
		if (sched_getaffinity(0, sizeof(set), &set) == 0)
			for (int i = 0; i < CPU_SETSIZE; i++)
				if (CPU_ISSET(i, &set))
					c->cpus[c->n_cpus++] = i;
	}
	c->sign_timeout_ms = (int)(o->sign_timeout_s ? o->sign_timeout_s : 10) * 1000;
	pthread_mutex_init(&c->keeper_lock, NULL);
	pthread_mutex_init(&c->plan_lock, NULL);
	slot_init(&c->manage, true);
	c->sign = calloc(c->n_sign, sizeof(*c->sign));
	if (!c->sign) {
		hsmc_close(c);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < c->n_sign; i++)
		slot_init(&c->sign[i], false);
	pin_fd = pinfile_open(o->pin_file);
	if (pin_fd >= 0)
		pin_fd = fd_high(pin_fd); /* not where the keeper's descriptors go */
	if (pin_fd < 0) {
		hsmc_close(c);
		return hsm_fail_text(pin_fd, "the pin-file cannot be used");
	}
	r = keeper_start(c, o, pin_fd);
	/* From here on only the keeper holds the PIN file. */
	close(pin_fd);
	if (r == 0)
		r = slot_start(c, &c->manage);
	for (unsigned i = 0; r == 0 && i < c->n_sign; i++)
		r = slot_start(c, &c->sign[i]);
	if (r < 0) {
		char why[192];
		snprintf(why, sizeof(why), "%s", hsm_last_error());
		hsmc_close(c);
		return hsm_fail_text(r, "%s", why);
	}
	*ret = c;
	return 0;
}

void hsmc_close(struct hsmc *c)
{
	if (!c)
		return;
	/* Helpers exit when their socket closes; the keeper when its own does. */
	slot_free(&c->manage);
	for (unsigned i = 0; c->sign && i < c->n_sign; i++)
		slot_free(&c->sign[i]);
	free(c->sign);
	if (c->keeper_fd >= 0)
		close(c->keeper_fd);
	if (c->keeper_pid > 0)
		while (waitpid(c->keeper_pid, NULL, 0) < 0 && errno == EINTR)
			;
	for (size_t i = 0; i < _JWS_ALG_MAX; i++)
		free(c->plans[i]);
	pthread_mutex_destroy(&c->keeper_lock);
	pthread_mutex_destroy(&c->plan_lock);
	free(c);
}

void hsmc_on_pin_refused(struct hsmc *c, void (*fn)(void *data), void *data)
{
	c->on_refused_data = data;
	c->on_refused = fn;
}

bool hsmc_pin_refused(struct hsmc *c)
{
	return atomic_load(&c->refused);
}

unsigned long hsmc_restarts(struct hsmc *c)
{
	return atomic_load(&c->restarts);
}

unsigned long hsmc_session_recoveries(struct hsmc *c)
{
	return atomic_load(&c->repairs);
}

/* ---- management operations: one at a time, on the management helper ---- */

static struct slot *manage_begin(struct hsmc *c, enum proto_op op)
{
	pthread_mutex_lock(&c->manage.lock);
	proto_request(&c->manage.out, op);
	return &c->manage;
}

static void manage_end(struct hsmc *c)
{
	pthread_mutex_unlock(&c->manage.lock);
}

/* A request with no fields and an answer with none. */
static int manage_simple(struct hsmc *c, enum proto_op op, int timeout_ms)
{
	struct slot *s = manage_begin(c, op);
	struct proto_in in;
	int r = call(c, s, op, timeout_ms, &in);

	if (r == 0)
		r = answer_end(c, s, &in);
	manage_end(c);
	return r;
}

/* A module instance that lost the token (SoftHSM, after failing to re-read its files while
 * another process wrote them, answers CKR_GENERAL_ERROR for good: docs/design.md, "A failed
 * re-read loses the token for the process") is not asked again: the helper is replaced, and
 * the new one reads the token afresh. */
static int probe_or_replace(struct hsmc *c, struct slot *s)
{
	struct proto_in in;
	int r;

	proto_request(&s->out, PROTO_PROBE);
	r = call(c, s, PROTO_PROBE, PROBE_TIMEOUT_MS, &in);
	if (r == 0)
		r = answer_end(c, s, &in);
	/* -EIO: CKR_GENERAL_ERROR and the like. A token that is not present (-ENODEV) may come
	 * back, and the helper's own session recovery serves it then. */
	if (r == -EIO && s->fd >= 0) {
		char why[PROTO_MAX_ERROR + 32];
		snprintf(why, sizeof(why), "lost the token (%s)", hsm_last_error());
		slot_drop(c, s, true, why);
	}
	return r;
}

int hsmc_probe(struct hsmc *c)
{
	int r;

	pthread_mutex_lock(&c->manage.lock);
	r = probe_or_replace(c, &c->manage);
	pthread_mutex_unlock(&c->manage.lock);
	return r;
}

int hsmc_probe_ready(struct hsmc *c)
{
	int r = hsmc_probe_signing(c);

	/* A busy management helper is alive: a probe must not wait behind a key generation. */
	if (r < 0 || pthread_mutex_trylock(&c->manage.lock) != 0)
		return r;
	r = probe_or_replace(c, &c->manage);
	pthread_mutex_unlock(&c->manage.lock);
	return r;
}

void hsmc_manage_renew(struct hsmc *c)
{
	struct slot *s = &c->manage;

	pthread_mutex_lock(&s->lock);
	if (s->fd >= 0) {
		/* Idle (its lock is ours): it reads the end of the stream, finalizes the module and
		 * exits; the next call starts another, at once. */
		close(s->fd);
		s->fd = -1;
		s->retry_at_ms = 0;
	}
	pthread_mutex_unlock(&s->lock);
}

int hsmc_resync(struct hsmc *c)
{
	return manage_simple(c, PROTO_RESYNC, MANAGE_TIMEOUT_MS);
}

int hsmc_prepare_alg(struct hsmc *c, enum jws_alg alg, unsigned key_bits)
{
	struct slot *s = manage_begin(c, PROTO_PREPARE_ALG);
	struct proto_in in;
	char *plan;
	int r;

	proto_put_u8(&s->out, (uint8_t)alg);
	proto_put_u32(&s->out, key_bits);
	r = call(c, s, PROTO_PREPARE_ALG, MANAGE_TIMEOUT_MS, &in);
	if (r == 0) {
		plan = proto_get_strdup(&in, PROTO_MAX_ERROR);
		r = answer_end(c, s, &in);
		pthread_mutex_lock(&c->plan_lock);
		if (r == 0 && (unsigned)alg < _JWS_ALG_MAX && plan) {
			free(c->plans[alg]);
			c->plans[alg] = plan;
			plan = NULL;
		}
		pthread_mutex_unlock(&c->plan_lock);
		free(plan);
	}
	manage_end(c);
	return r;
}

/* Set once per algorithm before the daemon serves (runtime_new()), then only read. */
const char *hsmc_alg_plan(struct hsmc *c, enum jws_alg alg)
{
	const char *plan;

	pthread_mutex_lock(&c->plan_lock);
	plan = (unsigned)alg < _JWS_ALG_MAX && c->plans[alg] ? c->plans[alg] : "not prepared";
	pthread_mutex_unlock(&c->plan_lock);
	return plan;
}

static int key_answer(struct hsmc *c, struct slot *s, struct proto_in *in, struct hsm_key *ret)
{
	struct hsm_key k;

	proto_get_key(in, &k);
	if (answer_end(c, s, in) < 0)
		return -ECONNABORTED;
	memcpy(ret->id, k.id, HSM_ID_LEN);
	ret->alg = k.alg;
	atomic_store(&ret->priv, atomic_load(&k.priv));
	ret->pub = k.pub;
	return 0;
}

int hsmc_generate_key(struct hsmc *c, enum jws_alg alg, unsigned key_bits, const char *label,
                      struct hsm_key *ret)
{
	struct slot *s = manage_begin(c, PROTO_GENERATE);
	struct proto_in in;
	int r;

	proto_put_u8(&s->out, (uint8_t)alg);
	proto_put_u32(&s->out, key_bits);
	proto_put_str(&s->out, label);
	r = call(c, s, PROTO_GENERATE, MANAGE_TIMEOUT_MS, &in);
	if (r == 0)
		r = key_answer(c, s, &in, ret);
	manage_end(c);
	return r;
}

int hsmc_key_index_read(struct hsmc *c, struct hsm_key_index **ret)
{
	struct slot *s = manage_begin(c, PROTO_INDEX_READ);
	struct hsm_key_index *ix = NULL;
	struct proto_in in;
	uint32_t n;
	int r = call(c, s, PROTO_INDEX_READ, MANAGE_TIMEOUT_MS, &in);

	if (r == 0) {
		n = proto_get_u32(&in);
		ix = calloc(1, sizeof(*ix));
		if (!ix || n > PROTO_MAX_ITEMS || (n && !(ix->e = calloc(n, sizeof(*ix->e))))) {
			r = n > PROTO_MAX_ITEMS ? answer_end(c, s, &(struct proto_in){.bad = true})
			                        : -ENOMEM;
		} else {
			for (uint32_t i = 0; i < n && !in.bad; i++)
				proto_get_object(&in, &ix->e[ix->n++]);
			r = answer_end(c, s, &in);
		}
	}
	manage_end(c);
	if (r < 0) {
		hsm_key_index_free(ix);
		return r;
	}
	/* The helper sorted it; sorting again costs little and the lookups depend on it. */
	hsm_key_index_sort(ix);
	*ret = ix;
	return 0;
}

int hsmc_key_index_find(struct hsmc *c, const struct hsm_key_index *ix,
                        const uint8_t id[HSM_ID_LEN], const char *label, enum jws_alg alg,
                        struct hsm_key *ret)
{
	const struct hsm_key_object *priv, *pub;
	struct hsm_key want = {.alg = alg};
	struct slot *s;
	struct proto_in in;
	int r = hsm_key_index_pair(ix, id, label, &priv, &pub);

	if (r < 0)
		return r;
	memcpy(want.id, id, HSM_ID_LEN);
	atomic_store(&want.priv, priv->handle);
	want.pub = pub->handle;
	s = manage_begin(c, PROTO_KEY_ACCEPT);
	proto_put_key(&s->out, &want);
	proto_put_str(&s->out, label);
	r = call(c, s, PROTO_KEY_ACCEPT, MANAGE_TIMEOUT_MS, &in);
	if (r == 0)
		r = key_answer(c, s, &in, ret);
	manage_end(c);
	return r;
}

int hsmc_key_check_half(struct hsmc *c, unsigned long handle, bool private_key, enum jws_alg alg)
{
	struct slot *s = manage_begin(c, PROTO_CHECK_HALF);
	struct proto_in in;
	int r;

	proto_put_u64(&s->out, handle);
	proto_put_u8(&s->out, private_key ? 1 : 0);
	proto_put_u8(&s->out, (uint8_t)alg);
	r = call(c, s, PROTO_CHECK_HALF, MANAGE_TIMEOUT_MS, &in);
	if (r == 0)
		r = answer_end(c, s, &in);
	manage_end(c);
	return r;
}

int hsmc_migrate_public_halves(struct hsmc *c, size_t *ret_migrated)
{
	struct slot *s = manage_begin(c, PROTO_MIGRATE);
	struct proto_in in;
	int r = call(c, s, PROTO_MIGRATE, MANAGE_TIMEOUT_MS, &in);

	if (r == 0) {
		*ret_migrated = (size_t)proto_get_u64(&in);
		r = answer_end(c, s, &in);
	}
	manage_end(c);
	return r;
}

int hsmc_public_jwk(struct hsmc *c, const struct hsm_key *key, struct jwk *ret)
{
	struct slot *s = manage_begin(c, PROTO_PUBLIC_JWK);
	struct proto_in in;
	int r;

	proto_put_key(&s->out, key);
	r = call(c, s, PROTO_PUBLIC_JWK, MANAGE_TIMEOUT_MS, &in);
	if (r == 0) {
		proto_get_jwk(&in, ret);
		r = answer_end(c, s, &in);
	}
	manage_end(c);
	return r;
}

int hsmc_destroy_key(struct hsmc *c, const struct hsm_key *key, const char *label)
{
	struct slot *s = manage_begin(c, PROTO_DESTROY_KEY);
	struct proto_in in;
	int r;

	proto_put_key(&s->out, key);
	proto_put_str(&s->out, label);
	r = call(c, s, PROTO_DESTROY_KEY, MANAGE_TIMEOUT_MS, &in);
	if (r == 0)
		r = answer_end(c, s, &in);
	manage_end(c);
	return r;
}

int hsmc_list_records(struct hsmc *c, struct hsm_record **ret, size_t *ret_n)
{
	struct slot *s = manage_begin(c, PROTO_LIST_RECORDS);
	struct hsm_record *recs = NULL;
	struct proto_in in;
	uint32_t n = 0, got = 0;
	int r = call(c, s, PROTO_LIST_RECORDS, MANAGE_TIMEOUT_MS, &in);

	if (r == 0) {
		n = proto_get_u32(&in);
		if (n > PROTO_MAX_ITEMS)
			in.bad = true;
		else if (n && !(recs = calloc(n, sizeof(*recs))))
			r = -ENOMEM;
		for (; r == 0 && got < n && !in.bad; got++) {
			proto_get_record(&in, &recs[got]);
			/* Public records carry no value; ours always do. */
			if (!recs[got].value && !recs[got].odd)
				in.bad = !(recs[got].value = strdup(""));
		}
		if (r == 0)
			r = answer_end(c, s, &in);
	}
	manage_end(c);
	if (r < 0) {
		hsm_records_free(recs, got);
		return r;
	}
	*ret = recs;
	*ret_n = n;
	return 0;
}

int hsmc_store_record(struct hsmc *c, const char *label, const char *value, size_t len,
                      unsigned long *ret_handle)
{
	struct slot *s;
	struct proto_in in;
	int r;

	if (len != strlen(value) || len > PROTO_MAX_RECORD)
		return hsm_fail_text(-EINVAL, "a record of %zu bytes cannot be stored", len);
	s = manage_begin(c, PROTO_STORE_RECORD);
	proto_put_str(&s->out, label);
	proto_put_str(&s->out, value);
	r = call(c, s, PROTO_STORE_RECORD, MANAGE_TIMEOUT_MS, &in);
	if (r == 0) {
		uint64_t h = proto_get_u64(&in);
		r = answer_end(c, s, &in);
		if (r == 0 && ret_handle)
			*ret_handle = (unsigned long)h;
	}
	manage_end(c);
	return r;
}

int hsmc_destroy_record(struct hsmc *c, const struct hsm_record *rec)
{
	struct slot *s = manage_begin(c, PROTO_DESTROY_RECORD);
	struct proto_in in;
	int r;

	proto_put_record(&s->out, rec);
	r = call(c, s, PROTO_DESTROY_RECORD, MANAGE_TIMEOUT_MS, &in);
	if (r == 0)
		r = answer_end(c, s, &in);
	manage_end(c);
	return r;
}

static int sig_answer(struct hsmc *c, struct slot *s, struct proto_in *in, uint8_t *sig,
                      size_t sig_size, size_t *ret_len)
{
	size_t len;
	const uint8_t *p = proto_get_bytes(in, sig_size, &len);

	if (answer_end(c, s, in) < 0 || !p || len == 0) {
		if (s->fd >= 0)
			slot_drop(c, s, true, "answered without a signature");
		return hsm_fail_text(-ECONNABORTED, "the token helper answered no signature");
	}
	memcpy(sig, p, len);
	*ret_len = len;
	return 0;
}

int hsmc_prove(struct hsmc *c, const struct hsm_key *key, const char *challenge, size_t len,
               uint8_t *sig, size_t sig_size, size_t *ret_len)
{
	struct slot *s = manage_begin(c, PROTO_PROVE);
	struct proto_in in;
	int r;

	proto_put_key(&s->out, key);
	proto_put_bytes(&s->out, challenge, len);
	r = call(c, s, PROTO_PROVE, MANAGE_TIMEOUT_MS, &in);
	if (r == 0)
		r = sig_answer(c, s, &in, sig, sig_size, ret_len);
	manage_end(c);
	return r;
}

/* ---- signing helpers: one per signing worker ---- */

/* Not running and not to be started yet (read under s->lock). */
static bool slot_waiting(const struct slot *s)
{
	return s->fd < 0 && now_ms() < s->retry_at_ms;
}

/* Which slot the calling signing thread prefers: one per thread, in the order threads first
 * sign, and the thread runs on its slot's CPU from then on (docs/design.md, "Privilege
 * separation"). Threads that only probe take no slot of their own (UINT_MAX). */
static __thread unsigned my_slot = UINT_MAX;

static unsigned signing_thread_slot(struct hsmc *c)
{
	if (my_slot == UINT_MAX) {
		my_slot = atomic_fetch_add(&c->next_pick, 1) % c->n_sign;
		pin(0, slot_cpu(c, my_slot));
	}
	return my_slot;
}

/* The calling thread's own helper when it is free, else any free one that runs or may be
 * started, else its own after the one ahead; on a retry, another than the one just lost. The
 * slot comes back locked. */
static struct slot *sign_slot(struct hsmc *c, const struct slot *avoid)
{
	unsigned mine = my_slot == UINT_MAX ? 0 : my_slot;
	struct slot *s;

	for (unsigned i = 0; i < c->n_sign; i++) {
		s = &c->sign[(mine + i) % c->n_sign];
		if (s == avoid || pthread_mutex_trylock(&s->lock) != 0)
			continue;
		if (!slot_waiting(s))
			return s;
		pthread_mutex_unlock(&s->lock);
	}
	s = &c->sign[mine % c->n_sign];
	if (s == avoid && c->n_sign > 1)
		s = &c->sign[(mine + 1) % c->n_sign];
	pthread_mutex_lock(&s->lock);
	return s;
}

int hsmc_sign(struct hsmc *c, const struct hsm_key *key, const char *input, size_t len,
              uint8_t *sig, size_t sig_size, size_t *ret_len)
{
	struct slot *lost = NULL;
	int r = 0;

	if (len > PROTO_MAX_INPUT)
		return hsm_fail_text(-E2BIG, "a signing input of %zu bytes", len);
	signing_thread_slot(c);
	/* A helper lost under this request: the signature is asked once more of another. */
	for (int attempt = 0; attempt < 2; attempt++) {
		struct slot *s = sign_slot(c, lost);
		struct proto_in in;
		proto_request(&s->out, PROTO_SIGN);
		proto_put_bytes(&s->out, key->id, HSM_ID_LEN);
		proto_put_u8(&s->out, (uint8_t)key->alg);
		proto_put_bytes(&s->out, input, len);
		r = call(c, s, PROTO_SIGN, c->sign_timeout_ms, &in);
		if (r == 0)
			r = sig_answer(c, s, &in, sig, sig_size, ret_len);
		pthread_mutex_unlock(&s->lock);
		/* Lost under this request, or not running: another helper may serve it. */
		if (r != -ECONNABORTED && r != -ENOTCONN)
			break;
		lost = s;
	}
	return r;
}

_Static_assert(sizeof(((struct hsmc_batch_item *)0)->error) == PROTO_MAX_ERROR,
               "an item's error holds the helper's text");

/* One item of a SIGN_BATCH answer: i32 result, str error (only with a failure), bytes sig (only
 * with success). false when it breaks that shape. */
static bool batch_item_answer(struct proto_in *in, struct hsmc_batch_item *it)
{
	const uint8_t *p;
	int32_t res = (int32_t)proto_get_u32(in);

	proto_get_str(in, it->error, sizeof(it->error));
	if (in->bad || res > 0 || res < -4095 || (res == 0) != (it->error[0] == '\0'))
		return false;
	it->result = res;
	it->sig_len = 0;
	if (res < 0)
		return true;
	p = proto_get_bytes(in, sizeof(it->sig), &it->sig_len);
	if (!p || it->sig_len == 0)
		return false;
	memcpy(it->sig, p, it->sig_len);
	return true;
}

/* The per-item answers of a batch of n; the helper is lost when they do not decode exactly. */
static int batch_answer(struct hsmc *c, struct slot *s, struct proto_in *in,
                        struct hsmc_batch_item *items, size_t n)
{
	bool ok = proto_get_u32(in) == n && !in->bad;

	for (size_t i = 0; ok && i < n; i++)
		ok = batch_item_answer(in, &items[i]);
	if (ok && answer_end(c, s, in) == 0) {
		/* Each input that failed is an error of the op, as a failed SIGN is one. */
		for (size_t i = 0; i < n; i++)
			if (items[i].result < 0) {
				char ckr[64];
				const char *name =
				    counters_ckr(items[i].result, items[i].error, ckr, sizeof(ckr));
				metrics_add(metrics_series(&counters.hsm_errors,
				                           proto_op_name(PROTO_SIGN_BATCH), name),
				            1);
			}
		return 0;
	}
	if (s->fd >= 0)
		slot_drop(c, s, true, "answered a batch outside the protocol");
	return hsm_fail_text(-ECONNABORTED, "the token helper answered a batch outside the "
	                                    "protocol");
}

int hsmc_sign_batch(struct hsmc *c, const struct hsm_key *key, struct hsmc_batch_item *items,
                    size_t n)
{
	struct slot *lost = NULL;
	size_t total = 0;
	int r = 0;

	if (n == 0 || n > PROTO_MAX_BATCH)
		return hsm_fail_text(-E2BIG, "a batch of %zu signing inputs", n);
	for (size_t i = 0; i < n; i++) {
		if (items[i].len > PROTO_MAX_INPUT)
			return hsm_fail_text(-E2BIG, "a signing input of %zu bytes", items[i].len);
		total += items[i].len + 4;
	}
	if (total + 64 > PROTO_MAX_BATCH_REQUEST)
		return hsm_fail_text(-E2BIG, "a batch of %zu bytes of signing input", total);
	signing_thread_slot(c);
	/* As hsmc_sign(): a helper lost under the batch, the whole batch once more on another. A
	 * signature has no effect of its own (nothing is answered or audited before the helper's
	 * answer is in whole), so signing an input twice is safe. */
	for (int attempt = 0; attempt < 2; attempt++) {
		struct slot *s = sign_slot(c, lost);
		struct proto_in in;
		proto_request(&s->out, PROTO_SIGN_BATCH);
		proto_put_bytes(&s->out, key->id, HSM_ID_LEN);
		proto_put_u8(&s->out, (uint8_t)key->alg);
		proto_put_u32(&s->out, (uint32_t)n);
		for (size_t i = 0; i < n; i++)
			proto_put_bytes(&s->out, items[i].input, items[i].len);
		r = call(c, s, PROTO_SIGN_BATCH, c->sign_timeout_ms, &in);
		if (r == 0)
			r = batch_answer(c, s, &in, items, n);
		pthread_mutex_unlock(&s->lock);
		if (r != -ECONNABORTED && r != -ENOTCONN)
			break;
		lost = s;
	}
	return r;
}

int hsmc_probe_signing(struct hsmc *c)
{
	struct slot *s = sign_slot(c, NULL);
	int r = probe_or_replace(c, s);

	pthread_mutex_unlock(&s->lock);
	return r;
}

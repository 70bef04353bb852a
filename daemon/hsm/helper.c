/* tokensign-hsm: the only program of tokensign that loads the PKCS#11 module and reads the PIN
 * (docs/design.md, "Privilege separation"). tokensignd starts it; nobody else should.
 *
 *   tokensign-hsm --keeper MODULE TOKEN PIN-NAME [OPTIONS]
 *       fd 3: a SOCK_SEQPACKET socket to tokensignd; fd 4: the PIN file. Starts a helper for each
 *       request ("S": signing, "M": management) and sends its socket and pid back. Never loads
 *       the module: it only keeps the PIN file open, so that helpers can be restarted after the
 *       daemon has given up every way to the PIN.
 *   tokensign-hsm --serve MODULE TOKEN PIN-NAME [--manage] [OPTIONS]
 *       fd 3: a stream socket to tokensignd; fd 4: the PIN file. Logs in, sends PROTO_READY and
 *       answers requests (serve.c) until the daemon hangs up.
 *   tokensign-hsm --touch-token MODULE TOKEN
 *       Makes SoftHSM's other processes re-read the token (hsm_resync()); no login.
 * OPTIONS: --session-copies, --module-network. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "confine.h"
#include "hsm.h"
#include "proto.h"
#include "serve.h"

#define TOUCH_TIMEOUT 20 /* seconds */

struct args {
	const char *mode, *module, *token, *pin_name;
	bool manage, session_copies, network;
};

static void usage(void)
{
	fprintf(stderr, "tokensign-hsm is started by tokensignd(8), not by hand.\n");
}

static int parse(int argc, char **argv, struct args *a)
{
	int i = 1;

	if (argc < 4)
		return -1;
	a->mode = argv[i++];
	a->module = argv[i++];
	a->token = argv[i++];
	if (strcmp(a->mode, "--touch-token") == 0)
		return i == argc ? 0 : -1;
	if (i == argc)
		return -1;
	a->pin_name = argv[i++];
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--manage") == 0)
			a->manage = true;
		else if (strcmp(argv[i], "--session-copies") == 0)
			a->session_copies = true;
		else if (strcmp(argv[i], "--module-network") == 0)
			a->network = true;
		else
			return -1;
	}
	return 0;
}

static void confine_or_die(bool network, bool exec)
{
	struct confine_opts o = {.network = network, .exec = exec};
	char why[160];

	if (confine_helper(&o, why, sizeof(why)) < 0) {
		fprintf(stderr, "tokensign-hsm: cannot confine itself: %s\n", why);
		exit(EX_OSERR);
	}
}

/* ---- keeper ---- */

/* Starts one helper with argv and sends the daemon its socket and pid. */
static int spawn(int ctl, char **argv)
{
	int sv[2];
	pid_t pid;
	char cbuf[CMSG_SPACE(sizeof(int))] = {0};
	int32_t pid32;
	struct iovec iov = {&pid32, sizeof(pid32)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *cm;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int r = -errno;
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	if (pid == 0) {
		/* dup2 clears close-on-exec on the copies; PROTO_FD_PIN is ours already. */
		if (dup2(sv[1], PROTO_FD_SOCKET) < 0)
			_exit(EX_OSERR);
		signal(SIGCHLD, SIG_DFL);
		closefrom(PROTO_FD_PIN + 1);
		execv("/proc/self/exe", argv);
		_exit(EX_OSERR);
	}
	close(sv[1]);
	pid32 = (int32_t)pid;
	msg.msg_control = cbuf;
	msg.msg_controllen = sizeof(cbuf);
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &sv[0], sizeof(int));
	if (sendmsg(ctl, &msg, MSG_NOSIGNAL) < 0) {
		int r = -errno;
		close(sv[0]);
		kill(pid, SIGKILL);
		return r;
	}
	close(sv[0]);
	return 0;
}

static int keeper(const struct args *a)
{
	char *argv[10];
	size_t n = 0, role_at;

	/* Helpers are reaped by the kernel: the daemon learns of a death from its socket. */
	signal(SIGCHLD, SIG_IGN);
	argv[n++] = "tokensign-hsm";
	argv[n++] = "--serve";
	argv[n++] = (char *)a->module;
	argv[n++] = (char *)a->token;
	argv[n++] = (char *)a->pin_name;
	if (a->session_copies)
		argv[n++] = "--session-copies";
	if (a->network)
		argv[n++] = "--module-network";
	role_at = n;
	argv[n++] = NULL;
	argv[n] = NULL;
	confine_or_die(false, true);
	for (;;) {
		char req;
		ssize_t got = recv(PROTO_FD_SOCKET, &req, 1, 0);
		if (got == 0)
			return 0; /* the daemon is gone */
		if (got < 0 && errno == EINTR)
			continue;
		if (got != 1 || (req != 'S' && req != 'M')) {
			fprintf(stderr, "tokensign-hsm --keeper: unexpected request; exiting\n");
			return EX_PROTOCOL;
		}
		argv[role_at] = req == 'M' ? "--manage" : NULL;
		int r = spawn(PROTO_FD_SOCKET, argv);
		if (r < 0) {
			/* The answer carries no socket and pid -1: the daemon fails that start. */
			fprintf(stderr, "tokensign-hsm --keeper: cannot start a helper: %s\n",
			        strerror(-r));
			int32_t none = -1;
			if (send(PROTO_FD_SOCKET, &none, sizeof(none), MSG_NOSIGNAL) < 0)
				return EX_OSERR;
		}
	}
}

/* ---- helper ---- */

static int helper(const struct args *a)
{
	struct hsm *h = NULL;
	struct proto_out out = {0};
	int r = hsm_open(a->module, a->token, PROTO_FD_PIN, a->pin_name, &h);

	if (r == 0)
		hsm_set_session_copies(h, a->session_copies);
	/* The management helper starts the touch child (hsm_resync()); signing helpers start
	 * nothing. */
	if (r == 0)
		confine_or_die(a->network, a->manage);
	proto_answer(&out, PROTO_READY, r, hsm_last_error());
	if (proto_send(PROTO_FD_SOCKET, &out) < 0 || r < 0) {
		proto_out_free(&out);
		hsm_close(h);
		return r == -EKEYREJECTED ? EX_NOPERM : r < 0 ? EX_UNAVAILABLE : 0;
	}
	proto_out_free(&out);
	r = serve(h, PROTO_FD_SOCKET, a->manage ? SERVE_MANAGE : SERVE_SIGN);
	if (r < 0)
		fprintf(stderr, "tokensign-hsm: a request did not follow the protocol; exiting\n");
	hsm_close(h);
	return r < 0 ? EX_PROTOCOL : 0;
}

/* The keeper dies with the daemon and a helper with the keeper: no helper outlives the process
 * it serves, and none finishes a write to the token after the daemon was killed. */
static void die_with_parent(void)
{
	pid_t parent = getppid();

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent || parent == 1)
		_exit(EX_OSERR);
}

int main(int argc, char **argv)
{
	struct args a = {0};

	/* SoftHSM keeps key material in our memory: no core file, no ptrace by our own uid. */
	prctl(PR_SET_DUMPABLE, 0);
	if (parse(argc, argv, &a) < 0) {
		usage();
		return EX_USAGE;
	}
	if (strcmp(a.mode, "--touch-token") == 0) {
		alarm(TOUCH_TIMEOUT);
		if (hsm_touch_token(a.module, a.token) == 0)
			return 0;
		fprintf(stderr, "tokensign-hsm --touch-token: %s\n", hsm_last_error());
		return 1;
	}
	die_with_parent();
	if (strcmp(a.mode, "--keeper") == 0)
		return keeper(&a);
	if (strcmp(a.mode, "--serve") == 0)
		return helper(&a);
	usage();
	return EX_USAGE;
}

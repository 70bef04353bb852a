/* The system call filters of confine.c: every case runs in a forked child, since a filter cannot
 * be undone. A child leaves through exit(), so that in a sanitizer build LeakSanitizer's check
 * at exit runs inside the confined process and must still work there. */
#include "confine.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Checks inside a child count here; the exit status carries the count to the parent. */
static unsigned child_failures;
#define EXPECT(expr)                                                                               \
	do {                                                                                       \
		if (!(expr)) {                                                                     \
			child_failures++;                                                          \
			fprintf(stderr, "%s:%d: FAILED in child: %s (errno is %d: %s)\n",          \
			        __FILE__, __LINE__, #expr, errno, strerror(errno));                \
		}                                                                                  \
	} while (0)

static char *const true_argv[] = {"/bin/true", NULL};
/* What a denied execve() tries: should the filter let it through, the process becomes
 * /bin/false and its exit status 1 fails the case. */
static char *const false_argv[] = {"/bin/false", NULL};

/* 0 when socket(domain) works, else its errno. */
static int socket_errno(int domain, int type)
{
	int fd = socket(domain, type | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

static int socketpair_errno(int domain)
{
	int fds[2];

	if (socketpair(domain, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
		return errno;
	close(fds[0]);
	close(fds[1]);
	return 0;
}

/* The filter mode the kernel reports for this process: 2 is a seccomp filter. */
static int seccomp_mode(void)
{
	char line[256];
	int mode = -1;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Seccomp: %d", &mode) == 1)
			break;
	fclose(f);
	return mode;
}

static bool fails_with(long rv, int err)
{
	return rv == -1 && errno == err;
}

static void *thread_runs(void *arg)
{
	*(int *)arg = 1;
	return NULL;
}

static bool thread_works(void)
{
	pthread_t t;
	int ran = 0;

	if (pthread_create(&t, NULL, thread_runs, &ran) != 0)
		return false;
	pthread_join(t, NULL);
	return ran == 1;
}

/* 0 when fork() + execve(/bin/true) in the child ran /bin/true to a clean exit. */
static int fork_exec_true(void)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return errno;
	if (pid == 0) {
		execve(true_argv[0], true_argv, environ);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* clone() with a new user namespace, as a process: EPERM from the filter, else a child. */
static bool clone_namespace_denied(void)
{
	long rv = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);

	if (rv == 0)
		_exit(0);
	if (rv > 0)
		waitpid((pid_t)rv, NULL, 0);
	return fails_with(rv, EPERM);
}

static bool helper_ok(const struct confine_opts *o)
{
	char why[256] = "";
	int r = confine_helper(o, why, sizeof(why));

	if (r < 0)
		fprintf(stderr, "confine_helper: %d: %s\n", r, why);
	return r == 0;
}

static bool front_ok(void)
{
	char why[256] = "";
	int r = confine_front(why, sizeof(why));

	if (r < 0)
		fprintf(stderr, "confine_front: %d: %s\n", r, why);
	return r == 0;
}

static int helper_default(void)
{
	struct confine_opts o = {0};
	char *const envp[] = {NULL};

	if (!helper_ok(&o))
		return 100;
	EXPECT(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
	EXPECT(seccomp_mode() == 2);
	/* The attacks first: the network, in every spelling. */
	EXPECT(socket_errno(AF_INET, SOCK_STREAM) == EPERM);
	EXPECT(socket_errno(AF_INET, SOCK_DGRAM) == EPERM);
	EXPECT(socket_errno(AF_INET6, SOCK_STREAM) == EPERM);
	EXPECT(socket_errno(AF_NETLINK, SOCK_RAW) == EPERM);
	EXPECT(socket_errno(AF_PACKET, SOCK_RAW) == EPERM);
	EXPECT(socket_errno(AF_UNSPEC, SOCK_STREAM) == EPERM);
	EXPECT(fails_with(syscall(SYS_socket, (1UL << 32) | AF_INET, SOCK_STREAM, 0), EPERM));
	EXPECT(socketpair_errno(AF_INET) == EPERM);
	EXPECT(execve(false_argv[0], false_argv, envp) == -1 && errno == EPERM);
	EXPECT(
	    fails_with(syscall(SYS_execveat, AT_FDCWD, false_argv[0], false_argv, envp, 0), EPERM));
	EXPECT(fork() == -1 && errno == EPERM);
	EXPECT(fails_with(syscall(SYS_fork), EPERM));
	/* Unfiltered, clone3 with size 0 is EINVAL: ENOSYS is the filter. */
	EXPECT(fails_with(syscall(SYS_clone3, NULL, 0), ENOSYS));
	EXPECT(fails_with(syscall(SYS_io_uring_setup, 1, NULL), EPERM));
	/* What the helper needs keeps working. */
	EXPECT(socket_errno(AF_UNIX, SOCK_STREAM) == 0);
	EXPECT(socket_errno(AF_UNIX, SOCK_DGRAM) == 0);
	EXPECT(socketpair_errno(AF_UNIX) == 0);
	EXPECT(thread_works());
	EXPECT(syscall(SYS_personality, 0xffffffffUL) >= 0);
	return (int)child_failures;
}

static int helper_network(void)
{
	struct confine_opts o = {.network = true};
	char *const envp[] = {NULL};

	if (!helper_ok(&o))
		return 100;
	EXPECT(socket_errno(AF_INET, SOCK_STREAM) == 0);
	EXPECT(socket_errno(AF_UNIX, SOCK_STREAM) == 0);
	EXPECT(socket_errno(AF_INET6, SOCK_STREAM) != EPERM);
	EXPECT(execve(false_argv[0], false_argv, envp) == -1 && errno == EPERM);
	EXPECT(fork() == -1 && errno == EPERM);
	return (int)child_failures;
}

static int helper_exec(void)
{
	struct confine_opts o = {.exec = true};
	pid_t pid;
	int status = -1;

	if (!helper_ok(&o))
		return 100;
	EXPECT(fork_exec_true() == 0);
	/* posix_spawn tries clone3 first: its ENOSYS must fall back to clone(). */
	EXPECT(posix_spawn(&pid, true_argv[0], NULL, NULL, true_argv, environ) == 0 &&
	       waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	EXPECT(socket_errno(AF_INET, SOCK_STREAM) == EPERM);
	EXPECT(clone_namespace_denied());
	return (int)child_failures;
}

/* A thread started before confine_front() must be under the filter too (TSYNC). */
struct early {
	int go[2];
	int exec_errno, socket_errno;
};

static void *early_thread(void *arg)
{
	struct early *e = arg;
	char *const envp[] = {NULL};
	char c;

	if (read(e->go[0], &c, 1) != 1)
		return NULL;
	e->exec_errno = execve(false_argv[0], false_argv, envp) == -1 ? errno : 0;
	e->socket_errno = socket_errno(AF_NETLINK, SOCK_RAW);
	return NULL;
}

static int front(void)
{
	struct early e = {.exec_errno = -1, .socket_errno = -1};
	char *const envp[] = {NULL};
	pthread_t t;

	if (pipe(e.go) < 0 || pthread_create(&t, NULL, early_thread, &e) != 0)
		return 101;
	if (!front_ok())
		return 100;
	EXPECT(write(e.go[1], "x", 1) == 1);
	EXPECT(pthread_join(t, NULL) == 0);
	EXPECT(e.exec_errno == EPERM);
	EXPECT(e.socket_errno == EPERM);
	EXPECT(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
	EXPECT(execve(false_argv[0], false_argv, envp) == -1 && errno == EPERM);
	EXPECT(fork() == -1 && errno == EPERM);
	EXPECT(socket_errno(AF_NETLINK, SOCK_RAW) == EPERM);
	EXPECT(socket_errno(AF_PACKET, SOCK_RAW) == EPERM);
	EXPECT(fails_with(syscall(SYS_socket, (1UL << 32) | AF_INET, SOCK_STREAM, 0), EPERM));
	/* What the front needs keeps working: listeners of every family, threads. */
	EXPECT(socket_errno(AF_UNIX, SOCK_STREAM) == 0);
	EXPECT(socket_errno(AF_INET, SOCK_STREAM) == 0);
	EXPECT(socket_errno(AF_INET6, SOCK_STREAM) != EPERM);
	EXPECT(thread_works());
	return (int)child_failures;
}

/* The killed calls: each must take the whole process down with SIGSYS, other threads too. */
#if !CONFINE_FOR_SANITIZERS
static void *sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static int front_ptrace(void)
{
	pthread_t t;

	if (pthread_create(&t, NULL, sleeper, NULL) != 0 || !front_ok())
		return 100;
	syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
	return 99;
}
#endif

static int helper_process_vm_readv(void)
{
	struct confine_opts o = {0};
	char a[8] = "", b[8];
	struct iovec local = {b, sizeof(b)}, remote = {a, sizeof(a)};

	if (!helper_ok(&o))
		return 100;
	syscall(SYS_process_vm_readv, getppid(), &local, 1, &remote, 1, 0);
	return 99;
}

static int helper_unshare(void)
{
	struct confine_opts o = {.exec = true, .network = true};

	if (!helper_ok(&o))
		return 100;
	syscall(SYS_unshare, CLONE_NEWUSER);
	return 99;
}

static int front_personality(void)
{
	if (!front_ok())
		return 100;
	syscall(SYS_personality, 0x0008UL /* PER_LINUX32 */);
	return 99;
}

#if defined(__x86_64__)
/* getpid through the i386 ABI (int 0x80): another architecture to the filter. */
static long i386_getpid(void)
{
	long ret;

	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory", "r8", "r9", "r10", "r11");
	return ret;
}

static int i386_abi(void)
{
	return i386_getpid() == getpid() ? 0 : 98;
}

static int helper_i386_abi(void)
{
	struct confine_opts o = {.exec = true, .network = true};

	if (!helper_ok(&o))
		return 100;
	i386_getpid();
	return 99;
}

/* socket() through the x32 ABI: ENOSYS where x32 is off, else it must not get a socket. */
static int helper_x32_socket(void)
{
	struct confine_opts o = {0};
	long fd;

	if (!helper_ok(&o))
		return 100;
	fd = syscall(0x40000000L | SYS_socket, AF_INET, SOCK_STREAM, 0);
	return fd >= 0 ? 99 : 0;
}
#endif

/* Runs fn in a child and returns its wait status. */
static int in_child(int (*fn)(void))
{
	int status = -1;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct rlimit no_core = {0, 0};
		setrlimit(RLIMIT_CORE, &no_core); /* the killed cases would dump core */
		exit(fn());
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

static void expect_clean_exit(const char *name, int (*fn)(void))
{
	int status = in_child(fn);

	fprintf(stderr, "%s: status 0x%x\n", name, (unsigned)status);
	CHECK(WIFEXITED(status));
	CHECK_INT(WEXITSTATUS(status), 0);
}

static void expect_sigsys(const char *name, int (*fn)(void))
{
	int status = in_child(fn);

	fprintf(stderr, "%s: status 0x%x\n", name, (unsigned)status);
	CHECK(WIFSIGNALED(status));
	CHECK_INT(WTERMSIG(status), SIGSYS);
}

int main(void)
{
	expect_clean_exit("helper", helper_default);
	expect_clean_exit("helper, network", helper_network);
	expect_clean_exit("helper, exec", helper_exec);
	expect_clean_exit("front", front);
#if CONFINE_FOR_SANITIZERS
	fprintf(stderr, "front, ptrace: skipped, left to LeakSanitizer in a sanitizer build\n");
#else
	expect_sigsys("front, ptrace", front_ptrace);
#endif
	expect_sigsys("helper, process_vm_readv", helper_process_vm_readv);
	expect_sigsys("helper with exec and network, unshare", helper_unshare);
	expect_sigsys("front, personality", front_personality);
#if defined(__x86_64__)
	if (in_child(i386_abi) == 0)
		expect_sigsys("helper, i386 ABI", helper_i386_abi);
	else
		fprintf(stderr, "helper, i386 ABI: skipped, no i386 emulation in this kernel\n");
	{
		int status = in_child(helper_x32_socket);
		fprintf(stderr, "helper, x32 socket: status 0x%x\n", (unsigned)status);
		CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
		      (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS));
	}
#endif
	return unit_finish("test_confine");
}

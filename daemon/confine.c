/* System call filters (seccomp, libseccomp) for the PKCS#11 helper and the request-facing front.
 *
 * Why a deny list. An allow list is the stronger filter when a program's system calls are
 * known, and the helper's are not: it runs a vendor's PKCS#11 module, often closed source, whose
 * calls differ by vendor and version (threads, timers, ioctl() on its device, shared memory,
 * its own log files, a network client). A call missing from an allow list fails at the first
 * signature in production, or in a retry path taken once a year. The front's own calls are
 * known, but those of glibc, libmicrohttpd, OpenSSL and libsystemd change with point releases.
 * So both filters allow by default and deny what neither a signer nor its module has any reason
 * to do: reaching into other processes, the kernel or the machine is killed (a module that tries
 * is hostile or beyond use, and a dead helper is restarted and logged); what a process's role
 * rules out (starting programs, the network for a local token) fails with EPERM, so that the
 * caller gets a clean error to log. The systemd unit adds its own allow list on top
 * (SystemCallFilter=@system-service). docs/confinement.md lists both sides. */
#include "confine.h"

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>

/* Reaching into other processes, loading kernel code, changing the machine (mounts, swap,
 * clock, reboot) or the kernel's shared state (keyrings, namespaces), and the usual kernel
 * exploitation primitives (userfaultfd, bpf, perf_event_open). ptrace is left to
 * LeakSanitizer in sanitizer builds (confine.h). A name this architecture lacks is skipped. */
static const char *const kill_calls[] = {
#if !CONFINE_FOR_SANITIZERS
    "ptrace",
#endif
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "bpf",
    "perf_event_open",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "mount_setattr",
    "swapon",
    "swapoff",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "unshare",
    "setns",
    "open_by_handle_at",
    "iopl",
    "ioperm",
    "acct",
    "settimeofday",
    "stime",
    "clock_settime",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
};

/* Denied with EPERM rather than killed: harmless to ask for, or queried by ordinary libraries
 * (glibc's ntp_gettime() reads through adjtimex/clock_adjtime), but nothing a signer needs.
 * io_uring: its operations bypass this filter altogether. */
static const char *const eperm_calls[] = {
    "adjtimex",
    "clock_adjtime",
    "kcmp",
    "name_to_handle_at",
    "quotactl",
    "quotactl_fd",
    "vhangup",
    "syslog",
    "sethostname",
    "setdomainname",
    "chroot",
    "ustat",
    "sysfs",
    "_sysctl",
    "modify_ldt",
    "fanotify_init",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "migrate_pages",
    "move_pages",
    "process_madvise",
    "process_mrelease",
    "vm86",
    "vm86old",
};

/* clone() flags that make a new namespace (CLONE_NEWTIME only exists for clone3/unshare). */
static const uint64_t namespace_flags[] = {
    CLONE_NEWNS,   CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
    CLONE_NEWUSER, CLONE_NEWPID,    CLONE_NEWNET,
};

/* A clone() without any of these is a new process, not a thread. LeakSanitizer's tracer is
 * clone(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED); glibc's fork() never sets
 * CLONE_UNTRACED. */
#if CONFINE_FOR_SANITIZERS
#define THREAD_LIKE_FLAGS (CLONE_THREAD | CLONE_UNTRACED)
#else
#define THREAD_LIKE_FLAGS CLONE_THREAD
#endif

__attribute__((format(printf, 4, 5))) static int fail(int r, char *why, size_t why_size,
                                                      const char *fmt, ...)
{
	va_list ap;

	if (why && why_size > 0) {
		va_start(ap, fmt);
		vsnprintf(why, why_size, fmt, ap);
		va_end(ap);
	}
	return r;
}

/* Adds one rule for a system call of the native architecture. A call the architecture lacks
 * (iopl off x86, fork on arm64) cannot be made, so it needs no rule, unless the filter relies
 * on it (required). Exact rules only: libseccomp may not rewrite a rule it cannot express. */
static int deny(scmp_filter_ctx ctx, uint32_t action, const char *name, bool required,
                unsigned n_cmp, const struct scmp_arg_cmp *cmp, char *why, size_t why_size)
{
	int nr = seccomp_syscall_resolve_name(name);
	int r;

	if (nr < 0)
		return required ? fail(-EOPNOTSUPP, why, why_size,
		                       "system call filter: no %s() on this architecture", name)
		                : 0;
	r = seccomp_rule_add_exact_array(ctx, action, nr, n_cmp, cmp);
	if (r < 0)
		return fail(r, why, why_size, "system call filter: rule for %s(): %s", name,
		            strerror(-r));
	return 0;
}

static int deny_list(scmp_filter_ctx ctx, uint32_t action, const char *const *names, size_t n,
                     char *why, size_t why_size)
{
	for (size_t i = 0; i < n; i++) {
		int r = deny(ctx, action, names[i], false, 0, NULL, why, why_size);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Argument 0 compared with v: SCMP_A0_64() without its missing initializer (clang warns). */
static struct scmp_arg_cmp arg0(enum scmp_compare op, uint64_t v)
{
	return (struct scmp_arg_cmp){.arg = 0, .op = op, .datum_a = v, .datum_b = 0};
}

/* personality(0xffffffff) only reads the persona (sanitizers and some libcs ask); a change
 * would switch off address space randomisation or change the ABI. */
static int deny_personality(scmp_filter_ctx ctx, char *why, size_t why_size)
{
	struct scmp_arg_cmp below = arg0(SCMP_CMP_LT, 0xffffffffu);
	struct scmp_arg_cmp above = arg0(SCMP_CMP_GT, 0xffffffffu);
	int r;

	r = deny(ctx, SCMP_ACT_KILL_PROCESS, "personality", false, 1, &below, why, why_size);
	if (r == 0)
		r = deny(ctx, SCMP_ACT_KILL_PROCESS, "personality", false, 1, &above, why,
		         why_size);
	return r;
}

/* clone3() takes its flags in memory, where a filter cannot look: ENOSYS makes glibc (2.34 and
 * later: pthread_create, posix_spawn) fall back to clone(), whose flags are filtered here. */
static int deny_namespaces(scmp_filter_ctx ctx, char *why, size_t why_size)
{
	int r = deny(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", false, 0, NULL, why, why_size);

	for (size_t i = 0; r == 0 && i < sizeof(namespace_flags) / sizeof(namespace_flags[0]);
	     i++) {
		struct scmp_arg_cmp c =
		    SCMP_A0_64(SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]);
		r = deny(ctx, SCMP_ACT_ERRNO(EPERM), "clone", true, 1, &c, why, why_size);
	}
	return r;
}

static int deny_common(scmp_filter_ctx ctx, char *why, size_t why_size)
{
	int r = deny_list(ctx, SCMP_ACT_KILL_PROCESS, kill_calls,
	                  sizeof(kill_calls) / sizeof(kill_calls[0]), why, why_size);

	if (r == 0)
		r = deny_list(ctx, SCMP_ACT_ERRNO(EPERM), eperm_calls,
		              sizeof(eperm_calls) / sizeof(eperm_calls[0]), why, why_size);
	if (r == 0)
		r = deny_personality(ctx, why, why_size);
	if (r == 0)
		r = deny_namespaces(ctx, why, why_size);
	return r;
}

/* No new programs and no new processes; threads stay allowed. */
static int deny_spawning(scmp_filter_ctx ctx, char *why, size_t why_size)
{
	struct scmp_arg_cmp process = SCMP_A0_64(SCMP_CMP_MASKED_EQ, THREAD_LIKE_FLAGS, 0);
	int r;

	r = deny(ctx, SCMP_ACT_ERRNO(EPERM), "execve", true, 0, NULL, why, why_size);
	if (r == 0)
		r = deny(ctx, SCMP_ACT_ERRNO(EPERM), "execveat", true, 0, NULL, why, why_size);
	if (r == 0)
		r = deny(ctx, SCMP_ACT_ERRNO(EPERM), "fork", false, 0, NULL, why, why_size);
	if (r == 0)
		r = deny(ctx, SCMP_ACT_ERRNO(EPERM), "vfork", false, 0, NULL, why, why_size);
	if (r == 0)
		r = deny(ctx, SCMP_ACT_ERRNO(EPERM), "clone", true, 1, &process, why, why_size);
	return r;
}

/* EPERM for socket() and socketpair() of any domain not in allowed (ascending). One comparison
 * per rule is all libseccomp takes, so the gaps are rules of their own: equal to each value
 * below the last allowed one, or above it. A value with high bits set is above it, and denied. */
static int deny_domains(scmp_filter_ctx ctx, const int *allowed, size_t n, char *why,
                        size_t why_size)
{
	static const char *const calls[] = {"socket", "socketpair"};

	for (size_t c = 0; c < 2; c++) {
		struct scmp_arg_cmp above = arg0(SCMP_CMP_GT, (uint64_t)allowed[n - 1]);
		int d = 0, r;

		for (size_t i = 0; i < n; d = allowed[i++] + 1) {
			for (; d < allowed[i]; d++) {
				struct scmp_arg_cmp eq = arg0(SCMP_CMP_EQ, (uint64_t)d);
				r = deny(ctx, SCMP_ACT_ERRNO(EPERM), calls[c], true, 1, &eq, why,
				         why_size);
				if (r < 0)
					return r;
			}
		}
		r = deny(ctx, SCMP_ACT_ERRNO(EPERM), calls[c], true, 1, &above, why, why_size);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The argument rules hold where socket() is a system call of its own (not multiplexed through
 * socketcall(), whose arguments sit in memory, as on i386) and clone()'s flags are its first
 * argument (not so on s390). x86_64 is tested; arm64 has the same shape. Calls of another ABI
 * (i386's int 0x80 or x32 on x86_64) do not match the native architecture and are killed. */
static int start(scmp_filter_ctx *ret, char *why, size_t why_size)
{
	uint32_t arch = seccomp_arch_native();
	scmp_filter_ctx ctx;
	int r;

	if (arch != SCMP_ARCH_X86_64 && arch != SCMP_ARCH_AARCH64)
		return fail(-EOPNOTSUPP, why, why_size,
		            "system call filter: not built for this architecture (audit arch "
		            "0x%08x); only x86_64 and arm64",
		            arch);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fail(-errno, why, why_size, "prctl(PR_SET_NO_NEW_PRIVS): %s",
		            strerror(errno));
	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return fail(-ENOMEM, why, why_size, "system call filter: seccomp_init failed");
	r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (r == 0)
		/* The kernel's errno from seccomp_load(), not libseccomp's -ECANCELED. */
		r = seccomp_attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1);
	if (r < 0) {
		seccomp_release(ctx);
		return fail(r, why, why_size, "system call filter: attributes: %s", strerror(-r));
	}
	*ret = ctx;
	return 0;
}

static int load(scmp_filter_ctx ctx, const char *which, char *why, size_t why_size)
{
	int r = seccomp_load(ctx);

	if (r < 0)
		return fail(r, why, why_size, "loading the %s's system call filter: %s", which,
		            strerror(-r));
	return 0;
}

int confine_helper(const struct confine_opts *o, char *why, size_t why_size)
{
	/* SoftHSM needs no socket; AF_UNIX stays for the journal, nscd and p11-kit-client. */
	static const int local_only[] = {AF_UNIX};
	scmp_filter_ctx ctx;
	int r = start(&ctx, why, why_size);

	if (r < 0)
		return r;
	r = deny_common(ctx, why, why_size);
	if (r == 0 && !o->exec)
		r = deny_spawning(ctx, why, why_size);
	if (r == 0 && !o->network)
		r = deny_domains(ctx, local_only, sizeof(local_only) / sizeof(local_only[0]), why,
		                 why_size);
	if (r == 0)
		r = load(ctx, "helper", why, why_size);
	seccomp_release(ctx);
	return r;
}

int confine_front(char *why, size_t why_size)
{
	/* The listeners (a reload binds them again), the journal, sd_notify. */
	static const int families[] = {AF_UNIX, AF_INET, AF_INET6};
	scmp_filter_ctx ctx;
	int r = start(&ctx, why, why_size);

	if (r < 0)
		return r;
	/* Every thread, libmicrohttpd's included: a filter on the calling thread alone would
	 * leave the others free. */
	r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (r < 0)
		r = fail(r, why, why_size, "system call filter: thread sync: %s", strerror(-r));
	if (r == 0)
		r = deny_common(ctx, why, why_size);
	if (r == 0)
		r = deny_spawning(ctx, why, why_size);
	if (r == 0)
		r = deny_domains(ctx, families, sizeof(families) / sizeof(families[0]), why,
		                 why_size);
	if (r == 0)
		r = load(ctx, "front", why, why_size);
	seccomp_release(ctx);
	return r;
}

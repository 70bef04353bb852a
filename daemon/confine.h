/* System call filters (seccomp) for tokensign's processes: the PKCS#11 helper and the front. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

/* Built with AddressSanitizer or LeakSanitizer: LeakSanitizer's leak check at exit stops the
 * process's threads from a tracer it makes with clone(CLONE_UNTRACED, no CLONE_THREAD) and
 * ptrace(), so the filters leave exactly those to it (docs/confinement.md). Never in a release
 * build. */
#if defined(__SANITIZE_ADDRESS__)
#define CONFINE_FOR_SANITIZERS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define CONFINE_FOR_SANITIZERS 1
#endif
#endif
#ifndef CONFINE_FOR_SANITIZERS
#define CONFINE_FOR_SANITIZERS 0
#endif

struct confine_opts {
	bool network; /* allow socket() of every domain, not only AF_UNIX: [hsm] module-network */
	bool exec;    /* allow execve/execveat and fork (clone without CLONE_THREAD, fork, vfork):
	                 the keeper and the management helper */
};

/* Sets PR_SET_NO_NEW_PRIVS, then loads the helper's filter into the calling thread (call it
 * before the helper makes any thread; children inherit it). Returns 0 or a negative errno; on
 * failure why says what failed (-EOPNOTSUPP: no filter for this architecture). */
int confine_helper(const struct confine_opts *o, char *why, size_t why_size);

/* Sets PR_SET_NO_NEW_PRIVS, then loads the request-facing process's filter into all its
 * threads (SECCOMP_FILTER_FLAG_TSYNC), once start-up is over. Returns 0 or a negative errno;
 * on failure why says what failed. */
int confine_front(char *why, size_t why_size);

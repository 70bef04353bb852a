/* The descriptor budget: how many connections each listener may hold, from RLIMIT_NOFILE. */
#pragma once
#include <stddef.h>

/* Descriptors never handed to connections: the token's module and its files, the threads'
 * own epoll, event and listen descriptors, the log and the configuration. */
#define BUDGET_RESERVE 256
/* Per JWKS listener and client address, unless configured. */
#define BUDGET_PER_ADDRESS 32
/* The admin socket, unless configured: one operator at a time, with room to spare. */
#define BUDGET_ADMIN 16

/* Connection caps; in a request, 0 means "derive it". */
struct budget {
	unsigned sign;
	unsigned admin;
	unsigned jwks;             /* per listener */
	unsigned jwks_per_address; /* per listener and client address */
};

/* From nofile descriptors, less BUDGET_RESERVE and the drain threads' lingering slots
 * (linger_fds): the configured caps in want first; of what is left, the admin socket gets up
 * to BUDGET_ADMIN, the sign socket a third and the n_jwks JWKS listeners the rest, shared
 * evenly. -ENOSPC when the configured caps do not fit or a listener would get none. */
int budget_plan(unsigned long nofile, unsigned linger_fds, size_t n_jwks, const struct budget *want,
                struct budget *ret);

/* Raises the soft RLIMIT_NOFILE to the hard one where allowed, and returns the soft one. */
unsigned long budget_nofile(void);

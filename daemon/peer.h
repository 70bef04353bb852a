/* Who is on the other end of a Unix socket (SO_PEERCRED, SO_PEERGROUPS) and whether they may sign.
 */
#pragma once
#include <stdbool.h>
#include <sys/types.h>

#include "conf.h"

#define PEER_MAX_GROUPS 256

struct peer {
	pid_t pid;
	uid_t uid;
	gid_t gid; /* primary */
	gid_t groups[PEER_MAX_GROUPS];
	int n_groups; /* supplementary; may include the primary again */
};

/* Reads the credentials of the process connected to fd. Returns 0 or a negative errno. */
int peer_from_fd(int fd, struct peer *ret);

/* True when any rule admits the peer: "*", its uid, or its primary or a supplementary gid. */
bool peer_allowed(const struct peer *peer, const struct allow_rule *rules, size_t n);

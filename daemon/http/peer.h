/* Who is on the other end of a Unix socket (SO_PEERCRED, SO_PEERGROUPS) and whether they may sign.
 */
#pragma once
#include <stdbool.h>
#include <sys/types.h>

#include "conf.h"

#define PEER_MAX_GROUPS 256 /* held inline; a caller in more groups spills into more[] */

struct peer {
	pid_t pid;
	uid_t uid;
	gid_t gid; /* primary */
	gid_t groups[PEER_MAX_GROUPS];
	int n_groups; /* supplementary; may include the primary again */
	gid_t *more;  /* supplementary groups beyond the first PEER_MAX_GROUPS, or NULL */
	int n_more;
};

/* Reads the credentials of the process connected to fd. Returns 0 or a negative errno. Release
 * with peer_clear(). */
int peer_from_fd(int fd, struct peer *ret);
void peer_clear(struct peer *peer);

/* True when any rule admits the peer: "*", its uid, or its primary or a supplementary gid. */
bool peer_allowed(const struct peer *peer, const struct allow_rule *rules, size_t n);

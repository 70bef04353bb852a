/* Caller identity from the kernel: SO_PEERCRED and SO_PEERGROUPS, never from the request. */
#include "peer.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

int peer_from_fd(int fd, struct peer *ret)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	gid_t groups[PEER_MAX_GROUPS];
	socklen_t glen = sizeof(groups);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	/* More groups than we hold fails the call (ERANGE): refuse rather than guess. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) < 0)
		return -errno;
	ret->pid = cred.pid;
	ret->uid = cred.uid;
	ret->gid = cred.gid;
	ret->n_groups = (int)(glen / sizeof(gid_t));
	memcpy(ret->groups, groups, glen);
	return 0;
}

bool peer_allowed(const struct peer *peer, const struct allow_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		switch (rules[i].kind) {
		case ALLOW_ANY:
			return true;
		case ALLOW_UID:
			if (peer->uid == rules[i].id)
				return true;
			break;
		case ALLOW_GID:
			if (peer->gid == rules[i].id)
				return true;
			for (int g = 0; g < peer->n_groups; g++)
				if (peer->groups[g] == rules[i].id)
					return true;
			break;
		}
	}
	return false;
}

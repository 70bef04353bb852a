/* Caller identity from the kernel: SO_PEERCRED and SO_PEERGROUPS, never from the request. */
#include "peer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* All supplementary groups, however many: the kernel says how much room it needs. */
static int read_groups(int fd, struct peer *ret)
{
	socklen_t glen = sizeof(ret->groups);
	gid_t *all;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, ret->groups, &glen) == 0) {
		ret->n_groups = (int)(glen / sizeof(gid_t));
		return 0;
	}
	if (errno != ERANGE)
		return -errno;
	all = malloc(glen);
	if (!all)
		return -ENOMEM;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, all, &glen) < 0) {
		int r = -errno;
		free(all);
		return r;
	}
	ret->n_groups = PEER_MAX_GROUPS;
	memcpy(ret->groups, all, sizeof(ret->groups));
	ret->n_more = (int)(glen / sizeof(gid_t)) - PEER_MAX_GROUPS;
	ret->more = malloc((size_t)ret->n_more * sizeof(gid_t));
	if (ret->more)
		memcpy(ret->more, all + PEER_MAX_GROUPS, (size_t)ret->n_more * sizeof(gid_t));
	free(all);
	return ret->more ? 0 : -ENOMEM;
}

int peer_from_fd(int fd, struct peer *ret)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int r;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	ret->more = NULL;
	ret->n_more = 0;
	r = read_groups(fd, ret);
	if (r < 0)
		return r;
	ret->pid = cred.pid;
	ret->uid = cred.uid;
	ret->gid = cred.gid;
	return 0;
}

void peer_clear(struct peer *peer)
{
	free(peer->more);
	peer->more = NULL;
	peer->n_more = 0;
}

static bool gid_listed(const gid_t *list, int n, gid_t gid)
{
	for (int i = 0; i < n; i++)
		if (list[i] == gid)
			return true;
	return false;
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
			if (peer->gid == rules[i].id ||
			    gid_listed(peer->groups, peer->n_groups, rules[i].id) ||
			    gid_listed(peer->more, peer->n_more, rules[i].id))
				return true;
			break;
		}
	}
	return false;
}

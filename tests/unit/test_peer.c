/* Unit tests of daemon/peer.c: which callers an issuer's allow rules admit. */
#include <sys/socket.h>
#include <unistd.h>

#include "peer.h"
#include "unit.h"

static struct peer make_peer(uid_t uid, gid_t gid, const gid_t *groups, int n)
{
	struct peer p;

	memset(&p, 0, sizeof(p));
	p.pid = 4242;
	p.uid = uid;
	p.gid = gid;
	for (int i = 0; i < n; i++)
		p.groups[i] = groups[i];
	p.n_groups = n;
	return p;
}

static void test_any(void)
{
	static const struct allow_rule any[] = {{ALLOW_ANY, 0}};
	static const struct allow_rule uid_then_any[] = {{ALLOW_UID, 7}, {ALLOW_ANY, 0}};
	struct peer p = make_peer(1000, 1000, NULL, 0);

	CHECK(peer_allowed(&p, any, 1));
	CHECK(peer_allowed(&p, uid_then_any, 2));
	p = make_peer(0, 0, NULL, 0);
	CHECK(peer_allowed(&p, any, 1));
	p = make_peer(65534, 65534, NULL, 0);
	CHECK(peer_allowed(&p, any, 1));
}

static void test_uid(void)
{
	static const struct allow_rule r[] = {{ALLOW_UID, 1000}};
	struct peer p;

	p = make_peer(1000, 5, NULL, 0);
	CHECK(peer_allowed(&p, r, 1));
	p = make_peer(1001, 5, NULL, 0);
	CHECK(!peer_allowed(&p, r, 1));
	/* A uid rule never matches a group of the same number, nor root by being root. */
	p = make_peer(5, 1000, (const gid_t[]){1000}, 1);
	CHECK(!peer_allowed(&p, r, 1));
	p = make_peer(0, 0, NULL, 0);
	CHECK(!peer_allowed(&p, r, 1));
}

static void test_gid(void)
{
	static const struct allow_rule r[] = {{ALLOW_GID, 50}};
	static const gid_t sup[] = {10, 20, 50};
	static const gid_t others[] = {10, 20, 30};
	struct peer p;

	/* Primary group. */
	p = make_peer(1000, 50, NULL, 0);
	CHECK(peer_allowed(&p, r, 1));
	/* Supplementary group, first, middle and last position. */
	p = make_peer(1000, 1000, sup, 3);
	CHECK(peer_allowed(&p, r, 1));
	p = make_peer(1000, 1000, (const gid_t[]){50, 10}, 2);
	CHECK(peer_allowed(&p, r, 1));
	/* No match. */
	p = make_peer(1000, 1000, others, 3);
	CHECK(!peer_allowed(&p, r, 1));
	/* A gid rule never matches a uid of the same number. */
	p = make_peer(50, 1000, others, 3);
	CHECK(!peer_allowed(&p, r, 1));
	/* Only the first n_groups entries count. */
	p = make_peer(1000, 1000, sup, 2);
	p.groups[2] = 50;
	CHECK(!peer_allowed(&p, r, 1));
	/* The last of PEER_MAX_GROUPS. */
	p = make_peer(1000, 1000, NULL, 0);
	for (int i = 0; i < PEER_MAX_GROUPS; i++)
		p.groups[i] = (gid_t)(100000 + i);
	p.n_groups = PEER_MAX_GROUPS;
	p.groups[PEER_MAX_GROUPS - 1] = 50;
	CHECK(peer_allowed(&p, r, 1));
	p.groups[PEER_MAX_GROUPS - 1] = 51;
	CHECK(!peer_allowed(&p, r, 1));
}

static void test_lists(void)
{
	static const struct allow_rule r[] = {
	    {ALLOW_UID, 1}, {ALLOW_GID, 2}, {ALLOW_UID, 3}, {ALLOW_ANY, 0}};
	struct peer p;

	/* Empty rules admit nobody, root included. */
	p = make_peer(0, 0, (const gid_t[]){0}, 1);
	CHECK(!peer_allowed(&p, NULL, 0));
	CHECK(!peer_allowed(&p, r, 0));
	/* Any rule of the list may admit. */
	p = make_peer(3, 9, NULL, 0);
	CHECK(peer_allowed(&p, r, 3));
	p = make_peer(9, 9, (const gid_t[]){2}, 1);
	CHECK(peer_allowed(&p, r, 3));
	/* Only the first n rules count: "*" is the fourth. */
	p = make_peer(9, 9, (const gid_t[]){8}, 1);
	CHECK(!peer_allowed(&p, r, 3));
	CHECK(peer_allowed(&p, r, 4));
	p = make_peer(3, 9, NULL, 0);
	CHECK(!peer_allowed(&p, r, 2));
}

/* The kernel's view of the other end of a socketpair is this very process. */
static void test_from_fd(void)
{
	int sv[2];
	struct peer p;
	gid_t groups[PEER_MAX_GROUPS];
	int n = getgroups(PEER_MAX_GROUPS, groups);

	CHECK(n >= 0);
	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	memset(&p, 0xee, sizeof(p));
	CHECK_INT(peer_from_fd(sv[0], &p), 0);
	CHECK_INT(p.pid, getpid());
	CHECK_INT(p.uid, geteuid());
	CHECK_INT(p.gid, getegid());
	CHECK_INT(p.n_groups, n);
	for (int i = 0; i < n && i < p.n_groups; i++) {
		bool found = false;
		for (int j = 0; j < n; j++)
			found = found || p.groups[i] == groups[j];
		CHECK(found);
	}
	close(sv[0]);
	close(sv[1]);
	/* Not a socket. */
	CHECK(peer_from_fd(-1, &p) < 0);
}

int main(void)
{
	test_from_fd();
	test_any();
	test_uid();
	test_gid();
	test_lists();
	return unit_finish("peer");
}

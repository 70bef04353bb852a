/* Mode and group of the socket files the daemon binds, set on the file itself and never on what
 * a link planted at its path points to (chmod(2) and chown(2) follow links). */
#include "sockfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Opens path itself, not what it links to, and checks that it is a socket of ours. */
static int open_own_socket(const char *path)
{
	struct stat st;
	int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (S_ISLNK(st.st_mode))
		r = -ELOOP;
	else if (!S_ISSOCK(st.st_mode))
		r = -ENOTSOCK;
	else if (st.st_uid != geteuid())
		r = -EACCES;
	else
		return fd;
	close(fd);
	return r;
}

int sockfile_set_attrs(const char *path, mode_t mode, bool has_group, gid_t gid)
{
	char proc[32];
	int fd = open_own_socket(path);
	int r = 0;

	if (fd < 0)
		return fd;
	/* An O_PATH descriptor allows fchownat(AT_EMPTY_PATH) but not fchmod(): the mode goes
	 * through /proc/self/fd, which names the very file we opened and checked. */
	if (has_group && fchownat(fd, "", (uid_t)-1, gid, AT_EMPTY_PATH) < 0)
		r = -errno;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (r == 0 && chmod(proc, mode) < 0)
		r = -errno;
	close(fd);
	return r;
}

const char *sockfile_strerror(int err)
{
	switch (err) {
	case -ELOOP:
		return "it is a symbolic link, not our socket; left as it is";
	case -ENOTSOCK:
		return "it is not a socket; left as it is";
	case -EACCES:
		return "it is a socket of another user, not ours; left as it is";
	case -EPERM:
		/* Only chown(2) gives EPERM here: not a member of the group, or a system call
		 * filter without it (tokensignd.service, which expects its socket units). */
		return "not permitted to give it its group (chown(2): the daemon must be a member "
		       "of the group, and a system call filter must allow it; under "
		       "tokensignd.service, use the socket units or "
		       "own-sockets-drop-in.conf.example)";
	default:
		return strerror(-err);
	}
}

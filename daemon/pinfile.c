/* Opening the PIN file without following links or blocking on a planted FIFO. */
#include "pinfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/landlock.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

static int fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(int err, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("cannot use the token: %s", msg);
	return err;
}

static const char *file_type(mode_t mode)
{
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return "a device";
	return "a special file";
}

/* Opens the PIN file, which must be a regular file that only its owner can access. O_NONBLOCK:
 * a FIFO planted at the path must not block the start until someone writes to it; O_NOFOLLOW:
 * nor may a symbolic link lead elsewhere. */
int pinfile_open(const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);

	if (fd < 0 && errno == ELOOP)
		return fail(-ELOOP, "pin-file %s is a symbolic link; name the file itself", path);
	if (fd < 0)
		return fail(-errno, "cannot open pin-file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		int r = -errno;
		close(fd);
		return fail(r, "cannot stat pin-file %s: %s", path, strerror(-r));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fail(-EINVAL, "pin-file %s is %s, not a regular file", path,
		            file_type(st.st_mode));
	}
	if (st.st_mode & 0077) {
		close(fd);
		return fail(-EPERM,
		            "pin-file %s is accessible by group or others (mode %04o); "
		            "chmod 0600 it",
		            path, (unsigned)(st.st_mode & 07777));
	}
	return fd;
}

/* ---- hiding the PIN file from this process (Landlock) ---- */

static int ll_create(const struct landlock_ruleset_attr *attr, size_t size, uint32_t flags)
{
	return (int)syscall(SYS_landlock_create_ruleset, attr, size, flags);
}

static int ll_add(int ruleset, int parent_fd, uint64_t access)
{
	struct landlock_path_beneath_attr pb = {.allowed_access = access, .parent_fd = parent_fd};

	return (int)syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
}

/* The PIN file's directories, from "/" down, and the file itself, by device and inode. */
struct pin_chain {
	dev_t dev[64];
	ino_t ino[64];
	size_t n; /* the last is the PIN file */
};

static bool on_chain(const struct pin_chain *c, const struct stat *st)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->dev[i] == st->st_dev && c->ino[i] == st->st_ino)
			return true;
	return false;
}

/* Allows reading beneath every entry of dir but next (the PIN's path goes on through it) and
 * anything that leads back onto the PIN's path (a link to the PIN file or one of its
 * directories). */
static int allow_siblings(int ruleset, const char *dir, const char *next,
                          const struct pin_chain *chain)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int r = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d)) && r == 0) {
		struct stat st;
		int fd;
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
		    strcmp(e->d_name, next) == 0)
			continue;
		fd = openat(dirfd(d), e->d_name, O_PATH | O_CLOEXEC);
		if (fd < 0)
			continue; /* gone, or a dangling link: nothing to read */
		if (fstat(fd, &st) == 0 && !on_chain(chain, &st) &&
		    (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) &&
		    ll_add(ruleset, fd, LANDLOCK_ACCESS_FS_READ_FILE) < 0)
			r = -errno;
		close(fd);
	}
	closedir(d);
	return r;
}

int pinfile_hide(const char *path, char *why, size_t why_size)
{
	struct landlock_ruleset_attr attr = {.handled_access_fs = LANDLOCK_ACCESS_FS_READ_FILE};
	struct pin_chain chain = {0};
	char *real = realpath(path, NULL), *p, *dir;
	int ruleset, r = 0;

	if (ll_create(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) < 0) {
		snprintf(why, why_size, "the kernel has no Landlock (%s)", strerror(errno));
		free(real);
		return 0;
	}
	if (!real) {
		snprintf(why, why_size, "cannot resolve %s: %s", path, strerror(errno));
		return -errno;
	}
	/* Every directory on the way and the file, so that no link elsewhere reopens them. */
	for (size_t i = 0, len = strlen(real); i <= len && chain.n < 64; i++) {
		struct stat st;
		char *prefix;
		if (i != len && !(real[i] == '/' && i == 0) && real[i] != '/')
			continue;
		prefix = strndup(real, i == 0 ? 1 : i);
		if (prefix && stat(prefix, &st) == 0) {
			chain.dev[chain.n] = st.st_dev;
			chain.ino[chain.n++] = st.st_ino;
		}
		free(prefix);
	}
	ruleset = ll_create(&attr, sizeof(attr), 0);
	if (ruleset < 0) {
		snprintf(why, why_size, "landlock_create_ruleset: %s", strerror(errno));
		free(real);
		return -errno;
	}
	/* Down the PIN's path: at each directory, everything but the next step is readable. */
	dir = strdup("/");
	for (p = real + 1; r == 0 && dir && *p;) {
		char *slash = strchr(p, '/'), *next;
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		next = strndup(p, len);
		if (!next) {
			r = -ENOMEM;
			break;
		}
		r = allow_siblings(ruleset, dir, next, &chain);
		if (r == 0 && slash) {
			char *deeper = NULL;
			if (asprintf(&deeper, "%s%s/", dir, next) < 0)
				r = -ENOMEM;
			free(dir);
			dir = deeper;
		}
		free(next);
		if (!slash)
			break;
		p = slash + 1;
	}
	if (r == 0 && !dir)
		r = -ENOMEM;
	if (r == 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		r = -errno;
	if (r == 0 && syscall(SYS_landlock_restrict_self, ruleset, 0) < 0)
		r = -errno;
	if (r < 0)
		snprintf(why, why_size, "cannot hide %s: %s", real, strerror(-r));
	close(ruleset);
	free(dir);
	free(real);
	return r < 0 ? r : 1;
}

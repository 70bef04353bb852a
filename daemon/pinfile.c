/* Opening the PIN file without following links or blocking on a planted FIFO. */
#include "pinfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

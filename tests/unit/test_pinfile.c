/* Unit tests of daemon/pinfile.c's pinfile_hide(): in a forked child (Landlock cannot be undone),
 * the PIN file cannot be opened, neither by its path nor through a link, while its siblings,
 * other directories and /proc can. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pinfile.h"
#include "unit.h"

/* pinfile.c logs through log.c; the test needs no log. */
void log_msg(int priority, const char *fmt, ...);
void log_msg(int priority, const char *fmt, ...)
{
	(void)priority;
	(void)fmt;
}

static bool can_read(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
	chmod(path, mode);
}

int main(void)
{
	char dir[] = "/tmp/test_pinfile.XXXXXX", creds[64], pin[96], sibling[96], link[96];
	char outside[96], why[256];
	int status = 0, r;
	pid_t pid;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(creds, sizeof(creds), "%s/creds", dir);
	snprintf(pin, sizeof(pin), "%s/hsm-pin", creds);
	snprintf(sibling, sizeof(sibling), "%s/other", creds);
	snprintf(link, sizeof(link), "%s/link-to-pin", dir);
	snprintf(outside, sizeof(outside), "%s/conf", dir);
	CHECK(mkdir(creds, 0700) == 0);
	write_file(pin, "1234\n", 0600);
	write_file(sibling, "x\n", 0600);
	write_file(outside, "y\n", 0600);
	CHECK(symlink(pin, link) == 0);

	pid = fork();
	if (pid == 0) {
		r = pinfile_hide(pin, why, sizeof(why));
		if (r == 0) /* no Landlock in this kernel: nothing to test */
			_exit(77);
		if (r < 0)
			_exit(10);
		if (can_read(pin))
			_exit(11);
		if (can_read(link))
			_exit(12);
		if (!can_read(sibling) || !can_read(outside) || !can_read("/proc/self/status") ||
		    !can_read("/etc/passwd"))
			_exit(13);
		_exit(0);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		fprintf(stderr, "pinfile: the kernel has no Landlock; skipped\n");
		return 77;
	}
	CHECK_INT(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0);
	/* This process, not confined, still reads it: the denial was the child's alone. */
	CHECK(can_read(pin));

	unlink(link);
	unlink(pin);
	unlink(sibling);
	unlink(outside);
	rmdir(creds);
	rmdir(dir);
	return unit_finish("pinfile");
}

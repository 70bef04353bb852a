/* The daemon's log sink: one line per event, never a secret (callers pass no PIN, key or token). */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const names[] = {"emerg",   "alert",  "crit", "error",
                                    "warning", "notice", "info", "debug"};

/* systemd sets JOURNAL_STREAM to the device and inode of the stream it connected to stderr. The
 * variable is inherited by children whose stderr went elsewhere, and anyone who starts us can
 * set it: only when it names our stderr do the lines go to the journal, which reads the
 * priority prefix, and the audit records straight to journald. */
static bool journal_stream_is_stderr(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int end = 0;

	if (!v || sscanf(v, "%llu:%llu%n", &dev, &ino, &end) != 2 || v[end] != '\0')
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

bool log_to_journal(void)
{
	/* -1: not decided yet. Decided once: stderr does not change under us. */
	static atomic_int journal = -1;
	int j = atomic_load(&journal);

	if (j < 0) {
		j = journal_stream_is_stderr();
		atomic_store(&journal, j);
	}
	return j;
}

/* Whether stderr is a regular file, decided once. There the kernel keeps each write(2) whole
 * against every other one to the file (it holds the file's lock across the write), so writers
 * need no lock of ours; a pipe does so only up to PIPE_BUF bytes, a socket or a terminal not at
 * all. */
static bool stderr_is_file(void)
{
	static atomic_int file = -1;
	int f = atomic_load(&file);
	struct stat st;

	if (f < 0) {
		f = fstat(STDERR_FILENO, &st) == 0 && S_ISREG(st.st_mode);
		atomic_store(&file, f);
	}
	return f;
}

/* Taken by every writer of stderr that is not a regular file, for the write(2) calls of one
 * line only (never while formatting): what stdio's lock did, held for less. */
static pthread_mutex_t stderr_lock = PTHREAD_MUTEX_INITIALIZER;

int log_write(const char *buf, size_t len)
{
	bool lock = !stderr_is_file();
	int r = 0;

	if (lock)
		pthread_mutex_lock(&stderr_lock);
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		buf += n;
		len -= (size_t)n;
	}
	if (lock)
		pthread_mutex_unlock(&stderr_lock);
	return r;
}

void log_msg(int priority, const char *fmt, ...)
{
	/* The prefix, up to 1023 bytes of message (as ever), the newline. */
	char line[32 + 1024];
	size_t n;
	va_list ap;
	int m;

	priority &= 7;
	if (log_to_journal())
		n = (size_t)snprintf(line, 32, "<%d>", priority);
	else
		n = (size_t)snprintf(line, 32, "tokensignd: %s: ", names[priority]);
	va_start(ap, fmt);
	m = vsnprintf(line + n, 1024, fmt, ap);
	va_end(ap);
	n += m < 0 ? 0 : m > 1023 ? 1023 : (size_t)m;
	line[n++] = '\n';
	/* One write(2) per line (log_write): lines and audit records never interleave. A line
	 * that cannot be written has nowhere else to go. */
	(void)log_write(line, n);
}

/* The daemon's log sink: one line per event, never a secret (callers pass no PIN, key or token). */
#include "log.h"

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

void log_msg(int priority, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	priority &= 7;
	/* One fprintf per line: stdio locks the stream, so lines from threads never interleave. */
	if (log_to_journal())
		fprintf(stderr, "<%d>%s\n", priority, line);
	else
		fprintf(stderr, "tokensignd: %s: %s\n", names[priority], line);
}

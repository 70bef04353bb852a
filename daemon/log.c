/* The daemon's log sink: one line per event, never a secret (callers pass no PIN, key or token). */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const names[] = {"emerg",   "alert",  "crit", "error",
                                    "warning", "notice", "info", "debug"};

void log_msg(int priority, const char *fmt, ...)
{
	static int journal = -1;
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (journal < 0)
		journal = getenv("JOURNAL_STREAM") != NULL;
	priority &= 7;
	/* One fprintf per line: stdio locks the stream, so lines from threads never interleave. */
	if (journal)
		fprintf(stderr, "<%d>%s\n", priority, line);
	else
		fprintf(stderr, "tokensignd: %s: %s\n", names[priority], line);
}

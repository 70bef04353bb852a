/* Rate limits for the log lines that clients can cause: a flood of them must neither fill the
 * journal nor push the audit records out of it. Audit records never pass through here. */
#pragma once
#include <stdbool.h>

#include "log.h"

enum log_kind {
	LOG_KIND_PUBLIC_HTTP,    /* libmicrohttpd on the JWKS listeners: anyone who can connect */
	LOG_KIND_LOCAL_HTTP,     /* libmicrohttpd on the sign and admin sockets */
	LOG_KIND_REFUSED_CALLER, /* callers refused on the sign and admin sockets */
	LOG_KIND_N,
};

/* True when a line of kind may be written now; false counts it, and "N messages suppressed"
 * is logged for the kind at most every RATELIMIT_REPORT_S while lines are held back. Decide
 * before formatting: a flood then costs no formatting. Thread-safe. */
bool log_admit(enum log_kind kind);

/* Reports the suppressed counts that are due (the main loop calls it periodically, so that the
 * count of the end of a flood is not held until the next line of its kind). */
void log_limit_flush(void);

#define log_limited(kind, priority, ...)                                                           \
	do {                                                                                       \
		if (log_admit(kind))                                                               \
			log_msg(priority, __VA_ARGS__);                                            \
	} while (0)

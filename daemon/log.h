/* Log lines to stderr; to the journal (JOURNAL_STREAM naming stderr) with sd-daemon priority
 * prefixes. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

/* Whether stderr is systemd's journal stream (JOURNAL_STREAM names stderr's device and inode):
 * then log lines carry sd-daemon priority prefixes and audit records go to journald. */
bool log_to_journal(void);

/* Writes len bytes to stderr in one write(2) (looping on a short count or EINTR), never
 * interleaved with another thread's line or audit record, and never through stdio. Returns 0
 * or a negative errno (EPIPE, EAGAIN, ENOSPC, ...). */
int log_write(const char *buf, size_t len);

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_INFO, __VA_ARGS__)

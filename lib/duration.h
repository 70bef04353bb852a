/* Durations in the configuration: "90s", "15m", "5min", "1h", "30d", "2w", or sums like "1h30m". */
#pragma once
#include <stdint.h>

/* Largest accepted duration: 10 years, far beyond any sane key period. */
#define DURATION_MAX_SECONDS (10ULL * 366 * 86400)

/* Parses s into seconds. Returns 0, -EINVAL for a malformed value (empty, no unit, unknown unit,
 * zero), -ERANGE above DURATION_MAX_SECONDS. *ret is untouched on failure. */
int duration_parse(const char *s, uint64_t *ret);

/* Writes a compact human form ("1d2h", "45s") of seconds into buf. */
void duration_format(uint64_t seconds, char *buf, unsigned size);

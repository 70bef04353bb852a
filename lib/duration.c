/* Parsing and formatting of configuration durations. */
#include "duration.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct unit {
	const char *name;
	uint64_t seconds;
};

/* "min" before "m" would not matter for exact matching, but keep the longest names first. */
static const struct unit units[] = {
    {"min", 60}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}, {"w", 7 * 86400},
};

static int unit_lookup(const char *name, size_t len, uint64_t *ret)
{
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strlen(units[i].name) == len && memcmp(units[i].name, name, len) == 0) {
			*ret = units[i].seconds;
			return 0;
		}
	}
	return -EINVAL;
}

int duration_parse(const char *s, uint64_t *ret)
{
	uint64_t total = 0;
	const char *p = s;

	if (!s || !*s)
		return -EINVAL;
	while (*p) {
		uint64_t n = 0, mult;
		const char *u;

		if (*p < '0' || *p > '9')
			return -EINVAL;
		while (*p >= '0' && *p <= '9') {
			n = n * 10 + (uint64_t)(*p - '0');
			if (n > DURATION_MAX_SECONDS)
				return -ERANGE;
			p++;
		}
		u = p;
		while ((*p >= 'a' && *p <= 'z'))
			p++;
		if (p == u || unit_lookup(u, (size_t)(p - u), &mult) < 0)
			return -EINVAL;
		if (n > DURATION_MAX_SECONDS / mult)
			return -ERANGE;
		total += n * mult;
		if (total > DURATION_MAX_SECONDS)
			return -ERANGE;
	}
	if (total == 0)
		return -EINVAL;
	*ret = total;
	return 0;
}

void duration_format(uint64_t seconds, char *buf, unsigned size)
{
	static const struct unit order[] = {
	    {"w", 7 * 86400}, {"d", 86400}, {"h", 3600}, {"m", 60}, {"s", 1}};
	size_t used = 0;

	if (size == 0)
		return;
	buf[0] = '\0';
	if (seconds == 0) {
		snprintf(buf, size, "0s");
		return;
	}
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]) && used < size; i++) {
		uint64_t n = seconds / order[i].seconds;
		if (n == 0)
			continue;
		seconds %= order[i].seconds;
		int w = snprintf(buf + used, size - used, "%llu%s", (unsigned long long)n,
		                 order[i].name);
		if (w < 0)
			return;
		used += (size_t)w;
	}
}

/* A tiny assertion helper for the unit tests: report file:line and the failed expression, count
 * failures, exit 1 if any. No framework, no fixtures: each test is a plain function. */
#pragma once
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned unit_checks, unit_failures;

static inline void unit_fail(const char *file, int line, const char *what)
{
	unit_failures++;
	fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what);
}

#define CHECK(expr)                                                                                \
	do {                                                                                       \
		unit_checks++;                                                                     \
		if (!(expr))                                                                       \
			unit_fail(__FILE__, __LINE__, #expr);                                      \
	} while (0)

/* Integers of any signedness up to 64 bits, printed on failure. */
#define CHECK_INT(a, b)                                                                            \
	do {                                                                                       \
		long long unit_a_ = (long long)(a), unit_b_ = (long long)(b);                      \
		unit_checks++;                                                                     \
		if (unit_a_ != unit_b_) {                                                          \
			unit_fail(__FILE__, __LINE__, #a " == " #b);                               \
			fprintf(stderr, "    left:  %lld\n    right: %lld\n", unit_a_, unit_b_);   \
		}                                                                                  \
	} while (0)

#define CHECK_U64(a, b)                                                                            \
	do {                                                                                       \
		uint64_t unit_a_ = (uint64_t)(a), unit_b_ = (uint64_t)(b);                         \
		unit_checks++;                                                                     \
		if (unit_a_ != unit_b_) {                                                          \
			unit_fail(__FILE__, __LINE__, #a " == " #b);                               \
			fprintf(stderr, "    left:  %" PRIu64 "\n    right: %" PRIu64 "\n",        \
			        unit_a_, unit_b_);                                                 \
		}                                                                                  \
	} while (0)

/* Strings; NULL equals only NULL. */
#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *unit_a_ = (a), *unit_b_ = (b);                                         \
		unit_checks++;                                                                     \
		if (!unit_a_ || !unit_b_ ? unit_a_ != unit_b_ : strcmp(unit_a_, unit_b_) != 0) {   \
			unit_fail(__FILE__, __LINE__, #a " == " #b);                               \
			fprintf(stderr, "    left:  \"%s\"\n    right: \"%s\"\n",                  \
			        unit_a_ ? unit_a_ : "(null)", unit_b_ ? unit_b_ : "(null)");       \
		}                                                                                  \
	} while (0)

#define CHECK_MEM(a, b, n)                                                                         \
	do {                                                                                       \
		unit_checks++;                                                                     \
		if (memcmp((a), (b), (n)) != 0)                                                    \
			unit_fail(__FILE__, __LINE__, "memcmp(" #a ", " #b ", " #n ") == 0");      \
	} while (0)

/* Prints the summary and returns the process exit status: 0 only when every check passed. */
static inline int unit_finish(const char *name)
{
	fprintf(stderr, "%s: %u checks, %u failed\n", name, unit_checks, unit_failures);
	return unit_failures ? EXIT_FAILURE : EXIT_SUCCESS;
}

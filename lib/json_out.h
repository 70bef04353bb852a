/* Compact JSON text of a jansson value, byte for byte what json_dumps(v, JSON_COMPACT |
 * JSON_ENCODE_ANY) writes, without its per-token callbacks: the payload of every signed token
 * goes through here (docs/performance.md). */
#pragma once
#include <stddef.h>

#include <jansson.h>

/* Writes v's compact JSON into a new NUL-terminated buffer (*ret, free() it) of *ret_len bytes.
 * Returns 0, -ENOMEM, or -EINVAL for a value nested deeper than 64 levels. */
int json_out_compact(const json_t *v, char **ret, size_t *ret_len);

/* Writes s (n bytes) as a JSON string, quotes included, escaped as above, at out, which has room
 * for JSON_OUT_STRING_MAX(n) bytes (every byte as \u00XX); returns the end of what it wrote
 * (not NUL-terminated). */
#define JSON_OUT_STRING_MAX(n) (6 * (n) + 2)
char *json_out_string(char *out, const char *s, size_t n);

/* Writes v in decimal as printf("%lld") does at out, which has room for JSON_OUT_INT_MAX
 * bytes; returns the end (not NUL-terminated). */
#define JSON_OUT_INT_MAX 20
char *json_out_int(char *out, long long v);

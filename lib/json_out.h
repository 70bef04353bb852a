/* Compact JSON text of a jansson value, byte for byte what json_dumps(v, JSON_COMPACT |
 * JSON_ENCODE_ANY) writes, without its per-token callbacks: the payload of every signed token
 * goes through here (docs/performance.md). */
#pragma once
#include <stddef.h>

#include <jansson.h>

/* Writes v's compact JSON into a new NUL-terminated buffer (*ret, free() it) of *ret_len bytes.
 * Returns 0, -ENOMEM, or -EINVAL for a value nested deeper than 64 levels. */
int json_out_compact(const json_t *v, char **ret, size_t *ret_len);

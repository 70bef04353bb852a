/* Parsers for single configuration values, shared by the loader and its unit tests. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf.h"

void conf_free_strv(char **v, size_t n);

/* [a-z0-9-]{1,32} */
bool conf_issuer_name_valid(const char *s);

/* RFC 6838 restricted-name characters, 1 to 64 of them. */
bool conf_token_type_valid(const char *s);

/* Valid UTF-8 without control characters. */
bool conf_text_printable(const char *s);

/* The length of url's "scheme://host[:port]" when url is an http(s) URL whose authority is a
 * plain host (letters, digits, '.', '-', ':', '[', ']': no user info); else -EINVAL. */
int conf_url_origin_len(const char *url, size_t *ret_len);

/* Decimal, no sign, no blanks. */
int conf_parse_u32(const char *s, uint32_t *ret);

/* Octal, at most 0777. */
int conf_parse_mode(const char *s, mode_t *ret);

/* Numeric "a.b.c.d:port" or "[v6]:port". */
int conf_parse_listen(const char *s, struct listen_conf *ret);

/* Comma-separated, blanks trimmed; an empty item is an error. The caller frees with
 * conf_free_strv(). */
int conf_split_list(const char *s, char ***ret, size_t *ret_n);

/* One allow item: "*", uid:N, gid:N, user:NAME, group:NAME (names resolved now). On failure
 * *why says what was wrong. */
int conf_parse_allow_item(const char *item, struct allow_rule *ret, const char **why);

/* keyrotate's shared declarations: options, subcommands, exit codes, human-readable output. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* keyrotate(8), EXIT STATUS: what a script can rely on. */
enum {
	EXIT_DONE = 0,
	EXIT_FAILED = 1, /* refused or failed; the reason is on stderr */
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3, /* no socket, connection refused, or no permission to connect */
};

/* keyrotate status exits with the monitoring-plugin convention instead (keyrotate(8), EXIT
 * STATUS): the daemon's level, or LEVEL_UNKNOWN when there is none to tell (daemon unreachable,
 * usage error, ...). */
enum level {
	LEVEL_OK = 0,
	LEVEL_WARNING = 1,
	LEVEL_CRITICAL = 2,
	LEVEL_UNKNOWN = 3,
};

/* The options a subcommand accepts, as a mask in its table entry. */
enum {
	OPT_JSON = 1 << 0,
	OPT_YES = 1 << 1,
	OPT_NOW = 1 << 2,
};

struct opts {
	const char *socket; /* the admin socket, resolved before a subcommand runs */
	bool json, yes, now;
};

/* Each subcommand gets its own arguments (after the command name, options removed) and returns
 * 0 or a negative errno, having said why on stderr; show_status() returns a LEVEL_* below
 * LEVEL_UNKNOWN instead of 0. */
int list_keys(int argc, char **argv, const struct opts *o);
int show_status(int argc, char **argv, const struct opts *o);
int rotate_issuer(int argc, char **argv, const struct opts *o);
int revoke_key(int argc, char **argv, const struct opts *o);
int purge_issuer(int argc, char **argv, const struct opts *o);

extern const char list_help[], status_help[], rotate_help[], revoke_help[], purge_help[];

/* The keys of issuer (NULL: of every issuer) as `list --json` prints them: a JSON array of
 * objects with exactly the members keyrotate(8) names under list, and "orphan": true for a key
 * of an issuer that is no longer configured. Returns 0 and *ret, or a negative errno having said
 * why. */
int keys_fetch(const struct opts *o, const char *issuer, json_t **ret);

/* The first key in keys whose string member equals value, or NULL. */
const json_t *keys_find(const json_t *keys, const char *member, const char *value);

/* Asks "Proceed? [y/N]" on the terminal. Returns 0 to go on (--yes, or the operator said yes),
 * -ECANCELED otherwise; without a terminal and without --yes it refuses and says so. */
int confirm(const struct opts *o);

/* Human forms of NumericDate t: local time "%Y-%m-%d %H:%M:%S" ("-" when t is not a number),
 * and the time from now until t ("29d 23h", "5m 3s", "now"). */
#define TIME_TEXT_MAX 32
void time_text(const json_t *t, char buf[TIME_TEXT_MAX]);
void span_text(int64_t from, int64_t to, char buf[TIME_TEXT_MAX]);

/* Prints v as JSON on stdout, followed by a newline. */
int json_print(const json_t *v);

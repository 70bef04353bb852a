/* keyrotate status: the daemon's health as a monitoring plugin reports it (level, exit code). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "keyrotate.h"

const char status_help[] =
    "The daemon's health. The first line is the level, for monitoring systems: \"status: OK\",\n"
    "\"status: WARNING\" or \"status: CRITICAL\" (\"status: UNKNOWN\" when there is no answer).\n"
    "Then whether the token answers, and for each issuer the key that signs now, when the next\n"
    "rotation makes the pending key active, and any problem the daemon reports (an issuer that\n"
    "cannot sign, a key it could not generate); then one line for each degraded state: objects\n"
    "in the token that are not tokensign's own (foreign), keys set aside because their objects\n"
    "disagree or cannot be read (quarantined), keys of issuers no longer configured (orphans).\n"
    "\n"
    "Critical: an issuer cannot sign, or the token does not answer. Warning: any other problem\n"
    "of an issuer, foreign or quarantined objects, orphans. A daemon that reports no level is\n"
    "judged by these rules here.\n"
    "\n"
    "Exit status (the monitoring-plugin convention): 0 ok, 1 warning, 2 critical, 3 unknown\n"
    "(daemon unreachable or refusing, usage error), also with --json.\n"
    "\n"
    "With --json: the daemon's status object as it sent it: {\"token\": \"ok\"|\"unreachable\",\n"
    "\"level\", \"foreign\", \"quarantined\", \"orphans\": [{\"issuer\", \"keys\"}], \"issuers\":\n"
    "[{\"issuer\", \"active_kid\", \"pending_kid\", \"signing\", \"next_rotation\", \"level\",\n"
    "\"problem\"}]}.\n";

static const char *const level_words[] = {
    [LEVEL_OK] = "ok", [LEVEL_WARNING] = "warning", [LEVEL_CRITICAL] = "critical"};
static const char *const level_heads[] = {[LEVEL_OK] = "OK",
                                          [LEVEL_WARNING] = "WARNING",
                                          [LEVEL_CRITICAL] = "CRITICAL",
                                          [LEVEL_UNKNOWN] = "UNKNOWN"};

/* LEVEL_* of the daemon's word for it, or -1. */
static int level_parse(const json_t *v)
{
	const char *s = json_string_value(v);

	for (int l = LEVEL_OK; s && l < LEVEL_UNKNOWN; l++)
		if (strcmp(s, level_words[l]) == 0)
			return l;
	return -1;
}

static int worst(int a, int b)
{
	return a > b ? a : b;
}

static json_int_t count_of(const json_t *status, const char *member)
{
	const json_t *v = json_object_get(status, member);
	return json_is_integer(v) ? json_integer_value(v) : 0;
}

static int issuer_level(const json_t *is)
{
	int level = level_parse(json_object_get(is, "level"));

	if (json_is_false(json_object_get(is, "signing")))
		level = worst(level, LEVEL_CRITICAL);
	if (json_is_string(json_object_get(is, "problem")))
		level = worst(level, LEVEL_WARNING);
	return worst(level, LEVEL_OK);
}

/* The level of a daemon that does not say it (older than the custody changes), as
 * docs/admin-api.md ("GET /v1/status") derives it. */
static int level_derive(const json_t *status)
{
	const json_t *orphans = json_object_get(status, "orphans"), *is;
	const char *token = json_string_value(json_object_get(status, "token"));
	int level = LEVEL_OK;
	size_t i;

	if (strcmp(token, "ok") != 0)
		level = LEVEL_CRITICAL;
	if (count_of(status, "foreign") > 0 || count_of(status, "quarantined") > 0 ||
	    json_array_size(orphans) > 0)
		level = worst(level, LEVEL_WARNING);
	json_array_foreach (json_object_get(status, "issuers"), i, is) {
		level = worst(level, issuer_level(is));
	}
	return level;
}

/* LEVEL_* below LEVEL_UNKNOWN, or -EBADMSG having said why there is none. */
static int level_of(const json_t *status)
{
	const json_t *token = json_object_get(status, "token"),
	             *v = json_object_get(status, "level");
	int level;

	if (!json_is_string(token) || !json_is_array(json_object_get(status, "issuers"))) {
		fprintf(stderr, "keyrotate: the daemon's status lacks \"token\" or \"issuers\"\n");
		return -EBADMSG;
	}
	if (!v)
		return level_derive(status);
	if ((level = level_parse(v)) < 0) {
		fprintf(stderr,
		        "keyrotate: the daemon's status has a level this keyrotate does not "
		        "know\n");
		return -EBADMSG;
	}
	return level;
}

static int name_width(const json_t *issuers)
{
	const json_t *is;
	size_t i;
	int w = 0;

	json_array_foreach (issuers, i, is) {
		const char *name = json_string_value(json_object_get(is, "issuer"));
		if (name && (int)strlen(name) > w)
			w = (int)strlen(name);
	}
	return w;
}

static void next_text(const json_t *next, char *buf, size_t size)
{
	char when[TIME_TEXT_MAX], span[TIME_TEXT_MAX];

	if (!json_is_number(next)) {
		snprintf(buf, size, "no next rotation (no pending key)");
		return;
	}
	time_text(next, when);
	span_text((int64_t)time(NULL), (int64_t)json_number_value(next), span);
	if (strcmp(span, "now") == 0)
		snprintf(buf, size, "next rotation due now (%s)", when);
	else
		snprintf(buf, size, "next rotation in %s (%s)", span, when);
}

/* What the human form shows of an issuer; the json_t members may be null. */
struct issuer_row {
	const char *name;
	json_t *active, *next, *problem;
	int signing;
};

static int issuer_unpack(json_t *is, struct issuer_row *row)
{
	if (json_unpack(is, "{s:s, s:o, s:b, s:o, s:o}", "issuer", &row->name, "active_kid",
	                &row->active, "signing", &row->signing, "next_rotation", &row->next,
	                "problem", &row->problem) < 0) {
		fprintf(stderr, "keyrotate: an issuer in the daemon's status lacks a member\n");
		return -EBADMSG;
	}
	return 0;
}

static void issuer_print(const struct issuer_row *row, int width)
{
	char text[128];

	next_text(row->next, text, sizeof(text));
	printf("%-*s  active %s  %s%s\n", width, row->name,
	       json_is_string(row->active) ? json_string_value(row->active) : "(none)", text,
	       row->signing ? "" : "  NOT SIGNING");
	if (json_is_string(row->problem))
		printf("%-*s  problem: %s\n", width, "", json_string_value(row->problem));
}

static const char *plural(json_int_t n)
{
	return n == 1 ? "" : "s";
}

/* One line for each degraded state of the token as a whole. */
static void degraded_print(const json_t *status)
{
	json_int_t foreign = count_of(status, "foreign"),
	           quarantined = count_of(status, "quarantined");
	const json_t *orphan;
	size_t i;

	if (foreign > 0)
		printf("foreign: %lld object%s in the token not exactly tokensign's: never used, "
		       "never destroyed (the daemon's log names each)\n",
		       (long long)foreign, plural(foreign));
	if (quarantined > 0)
		printf("quarantined: %lld set aside (a key claimed twice, a record that cannot be "
		       "read): kept, never used, never destroyed (the daemon's log names each)\n",
		       (long long)quarantined);
	json_array_foreach (json_object_get(status, "orphans"), i, orphan) {
		const char *name = json_string_value(json_object_get(orphan, "issuer"));
		json_int_t keys = count_of(orphan, "keys");

		printf("orphans: %s, %lld key%s of an issuer no longer configured: kept until "
		       "'keyrotate purge %s'\n",
		       name ? name : "?", (long long)keys, plural(keys), name ? name : "ISSUER");
	}
}

static int status_print(json_t *status, int level)
{
	json_t *issuers = json_object_get(status, "issuers"), *is;
	struct issuer_row row;
	size_t i;
	int width, r;

	/* All checked first: a status cut short after its first line would mislead. */
	json_array_foreach (issuers, i, is) {
		if ((r = issuer_unpack(is, &row)) < 0)
			return r;
	}
	printf("status: %s\n", level_heads[level]);
	printf("token: %s\n", json_string_value(json_object_get(status, "token")));
	width = name_width(issuers);
	json_array_foreach (issuers, i, is) {
		issuer_unpack(is, &row);
		issuer_print(&row, width);
	}
	degraded_print(status);
	return 0;
}

int show_status(int argc, char **argv, const struct opts *o)
{
	json_t *status = NULL;
	int level, r;

	r = client_call(o->socket, "GET", "/v1/status", NULL, NULL, &status);
	if (r < 0)
		goto out;
	/* --json shows what the daemon sent even when keyrotate cannot tell a level from it. */
	level = level_of(status);
	if (o->json)
		r = json_print(status);
	else if (level >= 0)
		r = status_print(status, level);
	if (r == 0)
		r = level;
out:
	/* A monitoring system shows stdout, not stderr. */
	if (r < 0 && !o->json)
		printf("status: %s\n", level_heads[LEVEL_UNKNOWN]);
	json_decref(status);
	return r;
}

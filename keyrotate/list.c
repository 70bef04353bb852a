/* keyrotate list: every key of every issuer (or of one), as a table or as a JSON array. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "keyrotate.h"

const char list_help[] =
    "Every key of every configured issuer, or of ISSUER only, in the daemon's order: by issuer,\n"
    "then by the time the key signs first. STATE is pending (in the JWKS, not signing yet),\n"
    "active (the key that signs) or retired (in the JWKS until DESTROY-AFTER, never signs\n"
    "again). Times are local. An issuer that is not configured is an error (exit 1).\n"
    "\n"
    "Keys of an issuer that is no longer configured are orphans, shown with \"(orphan)\" after\n"
    "their state (as their records say): kept in the token, never published, never used and\n"
    "never destroyed until 'keyrotate purge ISSUER'.\n"
    "\n"
    "With --json: a JSON array of objects with the members issuer, kid, alg, state,\n"
    "created_at, activates_at, retires_at and destroy_after (NumericDate seconds, UTC), and\n"
    "\"orphan\": true for an orphan.\n";

/* keyrotate(8), list: the members, in the order the table and --json show them; the first
 * N_TEXT are strings. */
static const char *const members[] = {"issuer",     "kid",          "alg",        "state",
                                      "created_at", "activates_at", "retires_at", "destroy_after"};
static const char *const heads[] = {"ISSUER",  "KID",       "ALG",     "STATE",
                                    "CREATED", "ACTIVATES", "RETIRES", "DESTROY-AFTER"};
#define N_MEMBERS (sizeof(members) / sizeof(members[0]))
#define N_TEXT    4
#define STATE     3

/* A copy of key with exactly our members, so --json keeps its contract whatever the daemon
 * adds later; NULL when a member is missing or of the wrong type. "orphan" is kept only when
 * true, so the rows of configured issuers look as they always did. */
static json_t *key_pick(const json_t *key)
{
	json_t *out = json_object();

	for (size_t i = 0; out && i < N_MEMBERS; i++) {
		json_t *v = json_object_get(key, members[i]);
		bool ok = i < N_TEXT ? json_is_string(v) : json_is_integer(v) || json_is_null(v);

		if (!ok || json_object_set(out, members[i], v) < 0) {
			json_decref(out);
			out = NULL;
		}
	}
	if (out && json_is_true(json_object_get(key, "orphan")) &&
	    json_object_set(out, "orphan", json_true()) < 0) {
		json_decref(out);
		out = NULL;
	}
	return out;
}

static int keys_pick(const json_t *answer, json_t **ret)
{
	const json_t *keys = json_object_get(answer, "keys");
	json_t *out, *key;
	size_t i;

	if (!json_is_array(keys) || !(out = json_array())) {
		fprintf(stderr, "keyrotate: the daemon's answer has no \"keys\" array\n");
		return -EBADMSG;
	}
	json_array_foreach (keys, i, key) {
		if (json_array_append_new(out, key_pick(key)) < 0) {
			fprintf(stderr,
			        "keyrotate: key %zu of the daemon's answer lacks a member\n", i);
			json_decref(out);
			return -EBADMSG;
		}
	}
	*ret = out;
	return 0;
}

int keys_fetch(const struct opts *o, const char *issuer, json_t **ret)
{
	char path[256], *name = NULL;
	json_t *answer = NULL;
	int r;

	if (issuer && !(name = client_escape(issuer)))
		return -ENOMEM;
	if ((size_t)snprintf(path, sizeof(path), "/v1/keys%s%s", name ? "?issuer=" : "",
	                     name ? name : "") >= sizeof(path)) {
		fprintf(stderr, "keyrotate: issuer name too long\n");
		free(name);
		return -ENAMETOOLONG;
	}
	free(name);
	r = client_call(o->socket, "GET", path, NULL, issuer, &answer);
	if (r == 0)
		r = keys_pick(answer, ret);
	json_decref(answer);
	return r;
}

const json_t *keys_find(const json_t *keys, const char *member, const char *value)
{
	const json_t *key;
	size_t i;

	json_array_foreach (keys, i, key) {
		const char *s = json_string_value(json_object_get(key, member));
		if (s && strcmp(s, value) == 0)
			return key;
	}
	return NULL;
}

static void row_print(const char *const cells[N_MEMBERS], const int widths[N_MEMBERS])
{
	for (size_t i = 0; i + 1 < N_MEMBERS; i++)
		printf("%-*s  ", widths[i], cells[i]);
	printf("%s\n", cells[N_MEMBERS - 1]);
}

/* Fills cells from key; times and an orphan's state go into the caller's buffers. */
static void row_cells(const json_t *key, const char *cells[N_MEMBERS],
                      char texts[N_MEMBERS][TIME_TEXT_MAX])
{
	for (size_t i = 0; i < N_MEMBERS; i++) {
		const json_t *v = json_object_get(key, members[i]);
		if (i < N_TEXT) {
			cells[i] = json_string_value(v);
		} else {
			time_text(v, texts[i]);
			cells[i] = texts[i];
		}
	}
	/* Its dates are its records'; it stays past DESTROY-AFTER, until 'keyrotate purge'. */
	if (json_is_true(json_object_get(key, "orphan"))) {
		snprintf(texts[STATE], TIME_TEXT_MAX, "%s (orphan)", cells[STATE]);
		cells[STATE] = texts[STATE];
	}
}

static void table_print(const json_t *keys)
{
	char texts[N_MEMBERS][TIME_TEXT_MAX];
	const char *cells[N_MEMBERS];
	int widths[N_MEMBERS];
	const json_t *key;
	size_t i;

	for (i = 0; i < N_MEMBERS; i++)
		widths[i] = (int)strlen(heads[i]);
	json_array_foreach (keys, i, key) {
		row_cells(key, cells, texts);
		for (size_t c = 0; c < N_MEMBERS; c++)
			if ((int)strlen(cells[c]) > widths[c])
				widths[c] = (int)strlen(cells[c]);
	}
	row_print(heads, widths);
	json_array_foreach (keys, i, key) {
		row_cells(key, cells, texts);
		row_print(cells, widths);
	}
}

int list_keys(int argc, char **argv, const struct opts *o)
{
	json_t *keys = NULL;
	int r;

	if ((r = keys_fetch(o, argc > 0 ? argv[0] : NULL, &keys)) < 0)
		return r;
	if (o->json)
		r = json_print(keys);
	else
		table_print(keys);
	json_decref(keys);
	return r;
}

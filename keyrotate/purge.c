/* keyrotate purge: destroy the keys of an issuer that is no longer configured (its orphans). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "keyrotate.h"

const char purge_help[] =
    "Destroys in the token the keys of ISSUER, an issuer that is no longer in the daemon's\n"
    "configuration. Such keys are orphans: kept in the token, never published, never used,\n"
    "and destroyed by nothing else. This cannot be undone. 'keyrotate list' shows orphans,\n"
    "'keyrotate status' counts them. An issuer that is still configured is refused (exit 1):\n"
    "its keys leave through their lifecycle, or 'keyrotate revoke'.\n"
    "\n"
    "Asks for confirmation on the terminal unless --yes; without a terminal and without\n"
    "--yes it refuses (exit 1).\n"
    "\n"
    "With --json: the daemon's answer, {\"issuer\", \"destroyed\": [KID, ...]}.\n";

static int configured_refuse(const char *issuer)
{
	fprintf(stderr,
	        "keyrotate: issuer %s is configured: purge is only for the keys of an issuer "
	        "removed from the configuration; nothing changed\n",
	        issuer);
	return -EBUSY;
}

static int nothing_refuse(const char *issuer)
{
	fprintf(stderr, "keyrotate: no orphaned keys of issuer %s in the token; nothing changed\n",
	        issuer);
	return -ENOKEY;
}

/* Says which keys go, after making sure from the key list that there are some to purge. */
static int purge_warn(const struct opts *o, const char *issuer)
{
	const json_t *key;
	json_t *keys = NULL;
	size_t i, orphans = 0, configured = 0;
	int r;

	if ((r = keys_fetch(o, NULL, &keys)) < 0)
		return r;
	json_array_foreach (keys, i, key) {
		if (strcmp(json_string_value(json_object_get(key, "issuer")), issuer) != 0)
			continue;
		if (json_is_true(json_object_get(key, "orphan")))
			orphans++;
		else
			configured++;
	}
	if (configured > 0 || orphans == 0) {
		json_decref(keys);
		return configured > 0 ? configured_refuse(issuer) : nothing_refuse(issuer);
	}
	fprintf(stderr,
	        "keyrotate: purge %s, which is no longer configured: its %zu orphaned key%s %s "
	        "destroyed in the token now. This cannot be undone.\n",
	        issuer, orphans, orphans == 1 ? "" : "s", orphans == 1 ? "is" : "are");
	json_array_foreach (keys, i, key) {
		if (strcmp(json_string_value(json_object_get(key, "issuer")), issuer) == 0)
			fprintf(stderr, "  %s  %s (%s)\n",
			        json_string_value(json_object_get(key, "kid")),
			        json_string_value(json_object_get(key, "alg")),
			        json_string_value(json_object_get(key, "state")));
	}
	json_decref(keys);
	return 0;
}

static int outcome_print(json_t *answer)
{
	const json_t *kid;
	json_t *destroyed;
	const char *issuer;
	size_t i;

	if (json_unpack(answer, "{s:s, s:o}", "issuer", &issuer, "destroyed", &destroyed) < 0 ||
	    !json_is_array(destroyed)) {
		fprintf(stderr, "keyrotate: the daemon's answer lacks issuer or destroyed\n");
		return -EBADMSG;
	}
	if (json_array_size(destroyed) == 0)
		printf("%s: nothing destroyed\n", issuer);
	json_array_foreach (destroyed, i, kid) {
		printf("%s: destroyed %s\n", issuer,
		       json_is_string(kid) ? json_string_value(kid) : "(a key without a kid)");
	}
	return 0;
}

/* The daemon's answer: printed when it purged, its refusals said in purge's own terms. */
static int answer_handle(const struct opts *o, const char *issuer, long status, json_t *answer)
{
	const char *code = json_string_value(json_object_get(answer, "error"));

	if (status >= 200 && status <= 299)
		return o->json ? json_print(answer) : outcome_print(answer);
	if (status == 404 && code && strcmp(code, "unknown_issuer") == 0)
		return nothing_refuse(issuer);
	if (status == 409 && code && strcmp(code, "issuer_configured") == 0)
		return configured_refuse(issuer);
	return client_refusal(status, answer, issuer);
}

int purge_issuer(int argc, char **argv, const struct opts *o)
{
	json_t *body = NULL, *answer = NULL;
	char path[256];
	long status = 0;
	int r;

	if ((r = purge_warn(o, argv[0])) < 0 || (r = confirm(o)) < 0)
		return r;
	if ((r = client_issuer_path(path, sizeof(path), argv[0], "purge")) < 0)
		return r;
	if (!(body = json_object()))
		return -ENOMEM;
	r = client_call_status(o->socket, "POST", path, body, &status, &answer);
	if (r == 0)
		r = answer_handle(o, argv[0], status, answer);
	json_decref(answer);
	json_decref(body);
	return r;
}

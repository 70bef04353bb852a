/* keyrotate rotate: start a rotation of one issuer, on schedule or (--now) at once. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "keyrotate.h"

const char rotate_help[] =
    "Starts a rotation of ISSUER's keys: the pending key becomes active as soon as it has been\n"
    "in the JWKS for the issuer's prepublish time (at once if it already has), the active key\n"
    "retires at that same moment, and a new pending key is generated. Prints when the switch\n"
    "happens. Safe at any time: it never removes a key that may still verify tokens.\n"
    "\n"
    "--now switches at once even when the pending key is younger than prepublish: relying\n"
    "parties that have not fetched the JWKS since it appeared reject new tokens until they do.\n"
    "It warns, and asks for confirmation on the terminal unless --yes; without a terminal and\n"
    "without --yes it refuses (exit 1).\n"
    "\n"
    "With --json: the daemon's answer, {\"issuer\", \"active_kid\", \"next_kid\", "
    "\"switch_at\"}.\n";

/* Says what --now risks, naming the key and how long relying parties have had to see it. */
static int now_warn(const struct opts *o, const char *issuer)
{
	char when[TIME_TEXT_MAX], age[TIME_TEXT_MAX];
	const json_t *pending, *created;
	json_t *keys = NULL;
	int r;

	if ((r = keys_fetch(o, issuer, &keys)) < 0)
		return r;
	pending = keys_find(keys, "state", "pending");
	if (pending) {
		created = json_object_get(pending, "created_at");
		time_text(created, when);
		span_text((int64_t)json_number_value(created), (int64_t)time(NULL), age);
		fprintf(stderr,
		        "keyrotate: rotate --now: %s's pending key %s signs at once.\n"
		        "It has been in the JWKS since %s (for %s): relying parties that have not "
		        "fetched the JWKS since then will reject new tokens until they do.\n",
		        issuer, json_string_value(json_object_get(pending, "kid")), when,
		        strcmp(age, "now") == 0 ? "under a second" : age);
	} else {
		fprintf(
		    stderr,
		    "keyrotate: rotate --now: %s has no pending key; a new one is generated and "
		    "signs at once.\n"
		    "No relying party has it yet: all of them will reject new tokens until they "
		    "fetch the JWKS again.\n",
		    issuer);
	}
	json_decref(keys);
	return 0;
}

static const char *kid_text(const json_t *kid)
{
	return json_is_string(kid) ? json_string_value(kid) : "(none)";
}

static int switch_print(json_t *answer)
{
	char when[TIME_TEXT_MAX], span[TIME_TEXT_MAX];
	json_t *active, *next, *at;
	const char *issuer;

	if (json_unpack(answer, "{s:s, s:o, s:o, s:o}", "issuer", &issuer, "active_kid", &active,
	                "next_kid", &next, "switch_at", &at) < 0 ||
	    !json_is_number(at)) {
		fprintf(stderr, "keyrotate: the daemon's answer lacks issuer, active_kid, next_kid "
		                "or switch_at\n");
		return -EBADMSG;
	}
	time_text(at, when);
	span_text((int64_t)time(NULL), (int64_t)json_number_value(at), span);
	printf("%s: %s -> %s at %s (%s%s)\n", issuer, kid_text(active), kid_text(next), when,
	       span[0] >= '0' && span[0] <= '9' ? "in " : "", span);
	return 0;
}

int rotate_issuer(int argc, char **argv, const struct opts *o)
{
	json_t *body = NULL, *answer = NULL;
	char path[256];
	int r;

	if (o->now && ((r = now_warn(o, argv[0])) < 0 || (r = confirm(o)) < 0))
		return r;
	if ((r = client_issuer_path(path, sizeof(path), argv[0], "rotate")) < 0)
		return r;
	body = o->now ? json_pack("{s:b}", "now", 1) : json_object();
	if (!body)
		return -ENOMEM;
	r = client_call(o->socket, "POST", path, body, argv[0], &answer);
	if (r == 0)
		r = o->json ? json_print(answer) : switch_print(answer);
	json_decref(answer);
	json_decref(body);
	return r;
}

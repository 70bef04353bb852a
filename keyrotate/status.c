/* keyrotate status: does the token answer; per issuer, the active key and the next rotation. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "keyrotate.h"

const char status_help[] =
    "The daemon's health: whether the token answers, and for each issuer the key that signs\n"
    "now, when the next rotation makes the pending key active, and any problem the daemon\n"
    "reports (an issuer that cannot sign, a key it could not generate).\n"
    "\n"
    "With --json: the daemon's status object as it sent it: {\"token\": \"ok\"|\"unreachable\",\n"
    "\"issuers\": [{\"issuer\", \"active_kid\", \"pending_kid\", \"signing\", \"next_rotation\",\n"
    "\"problem\"}]}.\n";

static int name_width(const json_t *issuers)
{
	const json_t *is;
	size_t i;
	int w = 0;

	json_array_foreach(issuers, i, is)
	{
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

static int issuer_print(json_t *is, int width)
{
	json_t *active = NULL, *next = NULL, *problem = NULL;
	const char *name;
	char text[128];
	int signing = 0;

	/* active_kid, next_rotation and problem may be null: fetched as values, read below. */
	if (json_unpack(is, "{s:s, s:o, s:b, s:o, s:o}", "issuer", &name, "active_kid", &active,
	                "signing", &signing, "next_rotation", &next, "problem", &problem) < 0) {
		fprintf(stderr, "keyrotate: an issuer in the daemon's status lacks a member\n");
		return -EBADMSG;
	}
	next_text(next, text, sizeof(text));
	printf("%-*s  active %s  %s%s\n", width, name,
	       json_is_string(active) ? json_string_value(active) : "(none)", text,
	       signing ? "" : "  NOT SIGNING");
	if (json_is_string(problem))
		printf("%-*s  problem: %s\n", width, "", json_string_value(problem));
	return 0;
}

static int status_print(json_t *status)
{
	json_t *issuers, *is;
	const char *token;
	size_t i;
	int width, r;

	if (json_unpack(status, "{s:s, s:o}", "token", &token, "issuers", &issuers) < 0 ||
	    !json_is_array(issuers)) {
		fprintf(stderr, "keyrotate: the daemon's status lacks \"token\" or \"issuers\"\n");
		return -EBADMSG;
	}
	printf("token: %s\n", token);
	width = name_width(issuers);
	json_array_foreach(issuers, i, is)
	{
		if ((r = issuer_print(is, width)) < 0)
			return r;
	}
	return 0;
}

int show_status(int argc, char **argv, const struct opts *o)
{
	json_t *status = NULL;
	int r;

	if ((r = client_call(o->socket, "GET", "/v1/status", NULL, NULL, &status)) < 0)
		return r;
	r = o->json ? json_print(status) : status_print(status);
	json_decref(status);
	return r;
}

/* keyrotate revoke: the emergency removal of one key, after the operator has said yes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "keyrotate.h"

const char revoke_help[] =
    "Emergency removal of the key KID of ISSUER: it leaves the JWKS at once and is destroyed\n"
    "in the token, so tokens it signed stop verifying wherever the JWKS is refreshed. This\n"
    "cannot be undone. If KID is the active key, the pending key becomes active first (a fresh\n"
    "key when there is none), so signing never stops; relying parties that have not yet\n"
    "fetched the new JWKS reject new tokens until they do. A new pending key is then made.\n"
    "\n"
    "Asks for confirmation on the terminal unless --yes; without a terminal and without\n"
    "--yes it refuses (exit 1). A KID that starts with '-' goes after '--':\n"
    "    keyrotate revoke ISSUER -- -KID\n"
    "\n"
    "With --json: the daemon's answer, {\"issuer\", \"revoked_kid\", \"was\", \"active_kid\",\n"
    "\"pending_kid\"}.\n";

/* Says plainly what happens to KID and, for the active key, to relying parties. */
static int revoke_warn(const struct opts *o, const char *issuer, const char *kid)
{
	const json_t *key, *pending;
	json_t *keys = NULL;
	const char *state;
	int r;

	if ((r = keys_fetch(o, issuer, &keys)) < 0)
		return r;
	if (!(key = keys_find(keys, "kid", kid))) {
		fprintf(stderr, "keyrotate: %s has no key %s (see 'keyrotate list %s')\n", issuer,
		        kid, issuer);
		json_decref(keys);
		return -ENOKEY;
	}
	state = json_string_value(json_object_get(key, "state"));
	fprintf(stderr,
	        "keyrotate: revoke %s's %s key %s.\n"
	        "It leaves the JWKS and is destroyed in the token now: tokens it signed stop "
	        "verifying. This cannot be undone.\n",
	        issuer, state, kid);
	pending = keys_find(keys, "state", "pending");
	if (strcmp(state, "active") == 0 && pending)
		fprintf(
		    stderr,
		    "The pending key %s becomes active at once: relying parties that have not yet "
		    "fetched the new JWKS will reject new tokens until they do.\n",
		    json_string_value(json_object_get(pending, "kid")));
	else if (strcmp(state, "active") == 0)
		fprintf(stderr,
		        "There is no pending key: a new key is generated and signs at once. No "
		        "relying party has it yet: all will reject new tokens until they fetch "
		        "the new JWKS.\n");
	json_decref(keys);
	return 0;
}

static const char *kid_text(const json_t *kid)
{
	return json_is_string(kid) ? json_string_value(kid) : "(none)";
}

static int outcome_print(json_t *answer)
{
	json_t *active, *pending;
	const char *issuer, *revoked, *was;

	if (json_unpack(answer, "{s:s, s:s, s:s, s:o, s:o}", "issuer", &issuer, "revoked_kid",
	                &revoked, "was", &was, "active_kid", &active, "pending_kid",
	                &pending) < 0) {
		fprintf(stderr, "keyrotate: the daemon's answer lacks issuer, revoked_kid, was, "
		                "active_kid or pending_kid\n");
		return -EBADMSG;
	}
	printf("%s: revoked %s (was %s)\n", issuer, revoked, was);
	printf("%s: active %s, pending %s\n", issuer, kid_text(active), kid_text(pending));
	return 0;
}

static int path_build(char *buf, size_t size, const char *issuer, const char *kid)
{
	char *i = client_escape(issuer), *k = client_escape(kid);
	int r = -ENOMEM;

	if (i && k) {
		r = snprintf(buf, size, "/v1/issuers/%s/keys/%s/revoke", i, k);
		r = r < 0 || (size_t)r >= size ? -ENAMETOOLONG : 0;
		if (r < 0)
			fprintf(stderr, "keyrotate: issuer or key id too long\n");
	}
	free(i);
	free(k);
	return r;
}

int revoke_key(int argc, char **argv, const struct opts *o)
{
	json_t *body = NULL, *answer = NULL;
	char path[512];
	int r;

	if ((r = revoke_warn(o, argv[0], argv[1])) < 0 || (r = confirm(o)) < 0)
		return r;
	if ((r = path_build(path, sizeof(path), argv[0], argv[1])) < 0)
		return r;
	if (!(body = json_object()))
		return -ENOMEM;
	r = client_call(o->socket, "POST", path, body, argv[0], &answer);
	if (r == 0)
		r = o->json ? json_print(answer) : outcome_print(answer);
	json_decref(answer);
	json_decref(body);
	return r;
}

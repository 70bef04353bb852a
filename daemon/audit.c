/* Lifecycle audit records with a stable MESSAGE_ID, so journalctl can select them. */
#include "audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <systemd/sd-journal.h>
#include <systemd/sd-login.h>

#include "json_out.h"
#include "log.h"

/* journalctl MESSAGE_ID=6d1f0c1e5a3b4c2f9e8d7a6b5c4d3e2f: key lifecycle events */
#define AUDIT_MESSAGE_ID "6d1f0c1e5a3b4c2f9e8d7a6b5c4d3e2f"
/* journalctl MESSAGE_ID=4b9e2d7c1f0a4e6b8c3d5a7f9e1b2c4d: tokens issued */
#define SIGNED_MESSAGE_ID "4b9e2d7c1f0a4e6b8c3d5a7f9e1b2c4d"

static const char *const event_names[] = {
    [AUDIT_GENERATED] = "generated", [AUDIT_ACTIVATED] = "activated",
    [AUDIT_RETIRED] = "retired",     [AUDIT_DESTROYED] = "destroyed",
    [AUDIT_REVOKED] = "revoked",     [AUDIT_ROTATION_FORCED] = "rotation-forced",
};

/* Outside the journal: one JSON object per line on stderr, machine-readable. Takes obj. */
static void json_line(json_t *obj)
{
	char *line = obj ? json_dumps(obj, JSON_COMPACT) : NULL;

	if (line)
		fprintf(stderr, "%s\n", line);
	free(line);
	json_decref(obj);
}

void audit_key(enum audit_event event, const char *issuer, const char *kid, int64_t operator_uid)
{
	const char *name = event_names[event];
	char who[32] = "schedule";

	if (operator_uid >= 0)
		snprintf(who, sizeof(who), "uid %lld", (long long)operator_uid);
	if (log_to_journal()) {
		sd_journal_send("MESSAGE=issuer %s: key %s %s (%s)", issuer, kid, name, who,
		                "MESSAGE_ID=" AUDIT_MESSAGE_ID, "PRIORITY=%d", LOG_NOTICE,
		                "TOKENSIGN_EVENT=%s", name, "TOKENSIGN_ISSUER=%s", issuer,
		                "TOKENSIGN_KID=%s", kid, "TOKENSIGN_OPERATOR_UID=%lld",
		                (long long)operator_uid, NULL);
		return;
	}
	json_line(json_pack("{s:s, s:s, s:s, s:I}", "event", name, "issuer", issuer, "kid", kid,
	                    "operator_uid", (json_int_t)operator_uid));
}

/* The record of one token outside the journal, written without building a JSON tree: this
 * runs once per signature (bench/audit_cost.c measures it). */
static char *put(char *p, const char *s)
{
	return json_out_string(p, s, strlen(s));
}

static void signed_line(const struct audit_signature *a)
{
	size_t strings = strlen(a->issuer) + strlen(a->kid) + strlen(a->jti) + strlen(a->aud);
	size_t size = 160 + JSON_OUT_STRING_MAX(strings);
	char stack[2048], *buf = size <= sizeof(stack) ? stack : malloc(size), *p = buf;

	if (!buf)
		return;
	p = stpcpy(p, "{\"event\":\"signed\",\"issuer\":");
	p = put(p, a->issuer);
	p = stpcpy(p, ",\"kid\":");
	p = put(p, a->kid);
	p = stpcpy(p, ",\"jti\":");
	p = put(p, a->jti);
	p = stpcpy(p, ",\"aud\":");
	/* The policy's compact JSON of aud goes in as it is, unless it was cut. */
	p = a->aud_cut || !*a->aud ? put(p, a->aud) : stpcpy(p, a->aud);
	p += sprintf(p, ",\"exp\":%lld,\"uid\":%u,\"pid\":%d}\n", (long long)a->exp,
	             (unsigned)a->uid, (int)a->pid);
	fwrite(buf, 1, (size_t)(p - buf), stderr);
	if (buf != stack)
		free(buf);
}

void audit_signed(const struct audit_signature *a)
{
	char *unit = NULL;

	if (log_to_journal()) {
		/* The caller's unit answers "which service asked", better than a pid. */
		if (sd_pid_get_unit(a->pid, &unit) < 0)
			unit = NULL;
		sd_journal_send(
		    "MESSAGE=issuer %s: signed jti %s with key %s for uid %u", a->issuer, a->jti,
		    a->kid, (unsigned)a->uid, "MESSAGE_ID=" SIGNED_MESSAGE_ID, "PRIORITY=%d",
		    LOG_INFO, "TOKENSIGN_EVENT=signed", "TOKENSIGN_ISSUER=%s", a->issuer,
		    "TOKENSIGN_KID=%s", a->kid, "TOKENSIGN_JTI=%s", a->jti, "TOKENSIGN_AUD=%s",
		    a->aud, "TOKENSIGN_EXP=%lld", (long long)a->exp, "TOKENSIGN_CALLER_UID=%u",
		    (unsigned)a->uid, "TOKENSIGN_CALLER_PID=%d", (int)a->pid,
		    "TOKENSIGN_CALLER_UNIT=%s", unit ? unit : "", NULL);
		free(unit);
		return;
	}
	signed_line(a);
}

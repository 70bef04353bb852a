/* Lifecycle audit records with a stable MESSAGE_ID, so journalctl can select them. */
#include "audit.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <jansson.h>
#include <systemd/sd-journal.h>
#include <systemd/sd-login.h>

#include "counters.h"
#include "json_out.h"
#include "log.h"

/* journalctl MESSAGE_ID=6d1f0c1e5a3b4c2f9e8d7a6b5c4d3e2f: key lifecycle events */
#define AUDIT_MESSAGE_ID "6d1f0c1e5a3b4c2f9e8d7a6b5c4d3e2f"
/* journalctl MESSAGE_ID=4b9e2d7c1f0a4e6b8c3d5a7f9e1b2c4d: tokens issued */
#define SIGNED_MESSAGE_ID "4b9e2d7c1f0a4e6b8c3d5a7f9e1b2c4d"
/* journalctl MESSAGE_ID=9c3a5e7b2d4f4a6c8e1b3d5f7a9c2e4b: signing requests refused. A separate id,
 * so that "who obtained a token" (the id above) never lists a refusal. */
#define REFUSED_MESSAGE_ID "9c3a5e7b2d4f4a6c8e1b3d5f7a9c2e4b"

static const char *const event_names[] = {
    [AUDIT_GENERATED] = "generated", [AUDIT_ACTIVATED] = "activated",
    [AUDIT_RETIRED] = "retired",     [AUDIT_DESTROYED] = "destroyed",
    [AUDIT_REVOKED] = "revoked",     [AUDIT_ROTATION_FORCED] = "rotation-forced",
};

/* Outside the journal: one JSON object per line on stderr, machine-readable. Takes obj. */
static void json_line(json_t *obj)
{
	char *line = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	size_t len = line ? strlen(line) : 0;
	char *nl = line ? realloc(line, len + 2) : NULL;

	if (nl) {
		line = nl;
		memcpy(line + len, "\n", 2);
		(void)log_write(line, len + 1);
	}
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

/* Set while records cannot be written: the failure is logged once, not once per request. The
 * sink is process-wide (stderr or the journal socket), and so is this. */
static atomic_bool failing;

static int note_result(int r)
{
	metrics_add(
	    metrics_series(r < 0 ? &counters.audit_dropped : &counters.audit_records, NULL, NULL),
	    1);
	if (r < 0 && !atomic_exchange(&failing, true))
		log_error(
		    "audit: cannot write an audit record: %s (logged once until one is written)",
		    strerror(-r));
	else if (r == 0 && atomic_load(&failing) && atomic_exchange(&failing, false))
		log_notice("audit: audit records are written again");
	return r;
}

/* The record outside the journal, written without building a JSON tree: this runs once per
 * signature (bench/audit_cost.c measures it). */
static char *put(char *p, const char *s)
{
	return json_out_string(p, s, strlen(s));
}

static bool known(const char *s)
{
	return s && *s;
}

static size_t line_size(const struct audit_signature *a)
{
	size_t strings = strlen(a->issuer);

	if (known(a->kid))
		strings += strlen(a->kid);
	if (known(a->jti))
		strings += strlen(a->jti);
	if (known(a->aud))
		strings += strlen(a->aud);
	if (a->reason)
		strings += strlen(a->reason);
	return 200 + JSON_OUT_STRING_MAX(strings);
}

/* The members in the order of the first release's "signed" line, then result and reason. */
static char *line_format(char *p, const struct audit_signature *a)
{
	p = stpcpy(p, a->reason ? "{\"event\":\"refused\",\"issuer\":"
	                        : "{\"event\":\"signed\",\"issuer\":");
	p = put(p, a->issuer);
	if (known(a->kid))
		p = put(stpcpy(p, ",\"kid\":"), a->kid);
	if (known(a->jti))
		p = put(stpcpy(p, ",\"jti\":"), a->jti);
	if (known(a->aud)) {
		p = stpcpy(p, ",\"aud\":");
		/* The policy's compact JSON of aud goes in as it is, unless it was cut. */
		p = a->aud_cut ? put(p, a->aud) : stpcpy(p, a->aud);
	}
	/* Numbers without printf's machinery, the same digits. */
	if (a->exp)
		p = json_out_int(stpcpy(p, ",\"exp\":"), (long long)a->exp);
	if (!a->no_caller) {
		p = json_out_int(stpcpy(p, ",\"uid\":"), (long long)a->uid);
		p = json_out_int(stpcpy(p, ",\"pid\":"), (long long)a->pid);
	}
	if (!a->reason)
		return stpcpy(p, ",\"result\":\"granted\"}\n");
	p = put(stpcpy(p, ",\"result\":\"refused\",\"reason\":"), a->reason);
	return stpcpy(p, "}\n");
}

static int json_record(const struct audit_signature *a)
{
	size_t size = line_size(a), len;
	char stack[2048], *buf = size <= sizeof(stack) ? stack : malloc(size);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	len = (size_t)(line_format(buf, a) - buf);
	/* The whole record in one write(2), so that the record is on stderr before the token
	 * is answered ([sign] audit = required), and whole. */
	r = log_write(buf, len);
	if (buf != stack)
		free(buf);
	return r;
}

/* The fields of one journal record, formatted into one buffer and sent with one
 * sd_journal_sendv(): no allocation unless a field does not fit in what is left of buf.
 * sd_journal_send() would vasprintf() each field. */
struct fields {
	struct iovec iov[16];
	bool heap[16]; /* iov[i] was allocated */
	size_t n, used;
	int err;
	char buf[4096];
};

/* Not = {0}: that would clear buf, 4 KiB, per record. */
static void fields_init(struct fields *f)
{
	f->n = f->used = 0;
	f->err = 0;
	memset(f->heap, 0, sizeof(f->heap));
}

static void field(struct fields *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void field(struct fields *f, const char *fmt, ...)
{
	size_t room = sizeof(f->buf) - f->used;
	char *s = f->buf + f->used;
	va_list ap;
	int n;

	if (f->err || f->n == sizeof(f->iov) / sizeof(f->iov[0]))
		return;
	va_start(ap, fmt);
	n = vsnprintf(s, room, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n >= room) {
		va_start(ap, fmt);
		n = vasprintf(&s, fmt, ap);
		va_end(ap);
		f->heap[f->n] = n >= 0;
	} else if (n >= 0)
		f->used += (size_t)n + 1;
	if (n < 0) {
		f->err = -ENOMEM;
		return;
	}
	f->iov[f->n++] = (struct iovec){.iov_base = s, .iov_len = (size_t)n};
}

/* name (with its '=') and value copied as they are: most fields need no printf. */
static void field_text(struct fields *f, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = value ? strlen(value) : 0;
	char *s = f->buf + f->used;

	if (f->err || f->n == sizeof(f->iov) / sizeof(f->iov[0]))
		return;
	/* NULL as printf has always written it; too long for what is left: allocated */
	if (!value || nl + vl + 1 > sizeof(f->buf) - f->used) {
		field(f, "%s%s", name, value);
		return;
	}
	memcpy(s, name, nl);
	memcpy(s + nl, value, vl);
	s[nl + vl] = '\0';
	f->used += nl + vl + 1;
	f->iov[f->n++] = (struct iovec){.iov_base = s, .iov_len = nl + vl};
}

static void field_int(struct fields *f, const char *name, long long value)
{
	char digits[24], *d = digits + sizeof(digits);
	unsigned long long u =
	    value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;

	*--d = '\0';
	do
		*--d = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (value < 0)
		*--d = '-';
	field_text(f, name, d);
}

static int fields_send(struct fields *f)
{
	int r = f->err ? f->err : sd_journal_sendv(f->iov, (int)f->n);

	for (size_t i = 0; i < f->n; i++)
		if (f->heap[i])
			free(f->iov[i].iov_base);
	return r;
}

/* The fields every record has after its MESSAGE, and the caller's at its end. */
static void fields_event(struct fields *f, const char *message_id, int priority, const char *event,
                         const char *result)
{
	field_text(f, "MESSAGE_ID=", message_id);
	field_int(f, "PRIORITY=", priority);
	field_text(f, "TOKENSIGN_EVENT=", event);
	field_text(f, "TOKENSIGN_RESULT=", result);
}

static void fields_caller(struct fields *f, const struct audit_signature *a, const char *unit)
{
	field_int(f, "TOKENSIGN_CALLER_UID=", (long long)a->uid);
	field_int(f, "TOKENSIGN_CALLER_PID=", (long long)a->pid);
	field_text(f, "TOKENSIGN_CALLER_UNIT=", unit ? unit : "");
}

static int journal_signed(const struct audit_signature *a, const char *unit)
{
	struct fields f;

	fields_init(&f);
	field(&f, "MESSAGE=issuer %s: signed jti %s with key %s for uid %u", a->issuer, a->jti,
	      a->kid, (unsigned)a->uid);
	fields_event(&f, SIGNED_MESSAGE_ID, LOG_INFO, "signed", "granted");
	field_text(&f, "TOKENSIGN_ISSUER=", a->issuer);
	field_text(&f, "TOKENSIGN_KID=", a->kid);
	field_text(&f, "TOKENSIGN_JTI=", a->jti);
	field_text(&f, "TOKENSIGN_AUD=", a->aud);
	field_int(&f, "TOKENSIGN_EXP=", (long long)a->exp);
	fields_caller(&f, a, unit);
	return fields_send(&f);
}

static int journal_refused(const struct audit_signature *a, const char *unit)
{
	struct fields f;

	fields_init(&f);
	if (a->no_caller)
		field(&f,
		      "MESSAGE=issuer %s: refused a caller whose credentials are unreadable: %s",
		      a->issuer, a->reason);
	else
		field(&f, "MESSAGE=issuer %s: refused uid %u pid %d: %s", a->issuer,
		      (unsigned)a->uid, (int)a->pid, a->reason);
	fields_event(&f, REFUSED_MESSAGE_ID, LOG_NOTICE, "refused", "refused");
	field_text(&f, "TOKENSIGN_REASON=", a->reason);
	field_text(&f, "TOKENSIGN_ISSUER=", a->issuer);
	if (known(a->kid))
		field_text(&f, "TOKENSIGN_KID=", a->kid);
	if (known(a->jti))
		field_text(&f, "TOKENSIGN_JTI=", a->jti);
	if (known(a->aud))
		field_text(&f, "TOKENSIGN_AUD=", a->aud);
	if (a->exp)
		field_int(&f, "TOKENSIGN_EXP=", (long long)a->exp);
	if (!a->no_caller)
		fields_caller(&f, a, unit);
	return fields_send(&f);
}

void audit_unit_clear(struct audit_unit *u)
{
	if (!u)
		return;
	free(u->name);
	*u = (struct audit_unit){0};
}

/* The caller's unit answers "which service asked", better than a pid: from the connection's
 * cache, else looked up into *own (the caller frees it). NULL when there is none. */
static const char *caller_unit(const struct audit_signature *a, char **own)
{
	struct audit_unit *u = a->unit;

	*own = NULL;
	if (a->no_caller)
		return NULL;
	if (!u) {
		if (sd_pid_get_unit(a->pid, own) < 0)
			*own = NULL;
		return *own;
	}
	if (!u->looked_up && sd_pid_get_unit(a->pid, &u->name) < 0)
		u->name = NULL;
	u->looked_up = true;
	return u->name;
}

static int record(const struct audit_signature *a)
{
	const char *unit;
	char *own;
	int r;

	if (!log_to_journal())
		return note_result(json_record(a));
	unit = caller_unit(a, &own);
	r = a->reason ? journal_refused(a, unit) : journal_signed(a, unit);
	free(own);
	return note_result(r);
}

int audit_signed(const struct audit_signature *a)
{
	struct audit_signature granted = *a;

	granted.reason = NULL;
	return record(&granted);
}

int audit_refused(const struct audit_signature *a)
{
	struct audit_signature refused = *a;

	if (!refused.reason)
		refused.reason = "refused";
	return record(&refused);
}

/* p11shim: a fault-injecting PKCS#11 module for the integration tests. It wraps a real module
 * (SoftHSMv2) and makes chosen calls fail the way a real HSM can but SoftHSM never does on its
 * own: dropped sessions, lost logins, stale handles, device errors, full tokens.
 *
 * Environment:
 *   P11SHIM_MODULE  path of the real module (required)
 *   P11SHIM_FAULTS  fault file (optional; a missing file means no faults). Re-read on every
 *                   intercepted call, so a test can change it while the process runs.
 *   P11SHIM_LOG     call log (optional): one line "FUNCTION RV_NAME" per intercepted call.
 *
 * Fault file, one fault per line ('#' comments and blank lines ignored):
 *   FUNCTION[:MECHANISM] ACTION COUNT
 * FUNCTION is a Cryptoki name (C_Sign). MECHANISM (0x1057, 4183 or CKM_EDDSA) limits the line to
 * calls about that mechanism: C_GetMechanismInfo, C_GetMechanismList, C_SignInit,
 * C_GenerateKeyPair; for C_GetAttributeValue the number is how many attributes the call asks
 * for at once. ACTION is a CKR_* name, returned instead of calling the real function; or
 * LOGOUT (log the token out for real, then return CKR_USER_NOT_LOGGED_IN); or CORRUPT (call the
 * real function, then flip one bit of its output); or HIDE (the token seems not to have the
 * mechanism: C_GetMechanismList leaves it out, C_GetMechanismInfo answers
 * CKR_MECHANISM_INVALID); or SLEEP=MS (wait MS milliseconds, at most 60000, then make the real
 * call: a slow token). COUNT is how many calls to hit, or '*' for all of them; a finite count
 * is decremented and the file rewritten atomically (temp file + rename), under an flock() of
 * FAULTS.lock, so that processes sharing the file share its counts exactly. The first line of
 * FUNCTION with a count left wins. See README.md. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define EXPORT __attribute__((visibility("default")))

#define FAULTS_MAX (64 * 1024)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST shim;
static void *real_dl;

/* ---- CKR names ---- */

#define RV(x)                                                                                      \
	{                                                                                          \
		x, #x                                                                              \
	}

static const struct {
	CK_RV rv;
	const char *name;
} rv_names[] = {
    RV(CKR_OK),
    RV(CKR_CANCEL),
    RV(CKR_HOST_MEMORY),
    RV(CKR_SLOT_ID_INVALID),
    RV(CKR_GENERAL_ERROR),
    RV(CKR_FUNCTION_FAILED),
    RV(CKR_ARGUMENTS_BAD),
    RV(CKR_NO_EVENT),
    RV(CKR_NEED_TO_CREATE_THREADS),
    RV(CKR_CANT_LOCK),
    RV(CKR_ATTRIBUTE_READ_ONLY),
    RV(CKR_ATTRIBUTE_SENSITIVE),
    RV(CKR_ATTRIBUTE_TYPE_INVALID),
    RV(CKR_ATTRIBUTE_VALUE_INVALID),
    RV(CKR_DATA_INVALID),
    RV(CKR_DATA_LEN_RANGE),
    RV(CKR_DEVICE_ERROR),
    RV(CKR_DEVICE_MEMORY),
    RV(CKR_DEVICE_REMOVED),
    RV(CKR_FUNCTION_CANCELED),
    RV(CKR_FUNCTION_NOT_PARALLEL),
    RV(CKR_FUNCTION_NOT_SUPPORTED),
    RV(CKR_KEY_HANDLE_INVALID),
    RV(CKR_ACTION_PROHIBITED),
    RV(CKR_KEY_SIZE_RANGE),
    RV(CKR_KEY_TYPE_INCONSISTENT),
    RV(CKR_KEY_FUNCTION_NOT_PERMITTED),
    RV(CKR_MECHANISM_INVALID),
    RV(CKR_MECHANISM_PARAM_INVALID),
    RV(CKR_OBJECT_HANDLE_INVALID),
    RV(CKR_OPERATION_ACTIVE),
    RV(CKR_OPERATION_NOT_INITIALIZED),
    RV(CKR_PIN_INCORRECT),
    RV(CKR_PIN_INVALID),
    RV(CKR_PIN_LEN_RANGE),
    RV(CKR_PIN_EXPIRED),
    RV(CKR_PIN_LOCKED),
    RV(CKR_SESSION_CLOSED),
    RV(CKR_SESSION_COUNT),
    RV(CKR_SESSION_HANDLE_INVALID),
    RV(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    RV(CKR_SESSION_READ_ONLY),
    RV(CKR_SESSION_EXISTS),
    RV(CKR_SIGNATURE_INVALID),
    RV(CKR_SIGNATURE_LEN_RANGE),
    RV(CKR_TEMPLATE_INCOMPLETE),
    RV(CKR_TEMPLATE_INCONSISTENT),
    RV(CKR_TOKEN_NOT_PRESENT),
    RV(CKR_TOKEN_NOT_RECOGNIZED),
    RV(CKR_TOKEN_WRITE_PROTECTED),
    RV(CKR_USER_ALREADY_LOGGED_IN),
    RV(CKR_USER_NOT_LOGGED_IN),
    RV(CKR_USER_PIN_NOT_INITIALIZED),
    RV(CKR_USER_TYPE_INVALID),
    RV(CKR_RANDOM_NO_RNG),
    RV(CKR_BUFFER_TOO_SMALL),
    RV(CKR_CRYPTOKI_NOT_INITIALIZED),
    RV(CKR_CRYPTOKI_ALREADY_INITIALIZED),
};

/* Thread-safe: unknown codes are formatted into the caller's buffer. */
static const char *rv_name(CK_RV rv, char *buf, size_t size)
{
	for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
		if (rv_names[i].rv == rv)
			return rv_names[i].name;
	snprintf(buf, size, "0x%08lx", (unsigned long)rv);
	return buf;
}

static bool rv_parse(const char *s, size_t len, CK_RV *ret)
{
	for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
		if (strlen(rv_names[i].name) == len && memcmp(rv_names[i].name, s, len) == 0) {
			*ret = rv_names[i].rv;
			return true;
		}
	return false;
}

/* ---- mechanism names (for FUNCTION:MECHANISM in the fault file) ---- */

#define MECH(x)                                                                                    \
	{                                                                                          \
		x, #x                                                                              \
	}

static const struct {
	CK_MECHANISM_TYPE mech;
	const char *name;
} mech_names[] = {
    MECH(CKM_RSA_PKCS_KEY_PAIR_GEN),
    MECH(CKM_RSA_PKCS),
    MECH(CKM_RSA_PKCS_PSS),
    MECH(CKM_SHA256_RSA_PKCS),
    MECH(CKM_SHA384_RSA_PKCS),
    MECH(CKM_SHA512_RSA_PKCS),
    MECH(CKM_SHA256_RSA_PKCS_PSS),
    MECH(CKM_SHA384_RSA_PKCS_PSS),
    MECH(CKM_SHA512_RSA_PKCS_PSS),
    MECH(CKM_SHA256),
    MECH(CKM_SHA384),
    MECH(CKM_EC_KEY_PAIR_GEN),
    MECH(CKM_ECDSA),
    MECH(CKM_ECDSA_SHA256),
    MECH(CKM_ECDSA_SHA384),
    MECH(CKM_EC_EDWARDS_KEY_PAIR_GEN),
    MECH(CKM_EDDSA),
};

/* A CKM_* name from the table, or a number (0x hex or decimal). */
static bool mech_parse(const char *s, size_t len, CK_MECHANISM_TYPE *ret)
{
	unsigned long v = 0;
	size_t i = 0;
	int base = 10;

	for (size_t k = 0; k < sizeof(mech_names) / sizeof(mech_names[0]); k++)
		if (strlen(mech_names[k].name) == len && memcmp(mech_names[k].name, s, len) == 0) {
			*ret = mech_names[k].mech;
			return true;
		}
	if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		i = 2;
	}
	if (i == len || len - i > 16)
		return false;
	for (; i < len; i++) {
		int d;
		if (s[i] >= '0' && s[i] <= '9')
			d = s[i] - '0';
		else if (base == 16 && s[i] >= 'a' && s[i] <= 'f')
			d = s[i] - 'a' + 10;
		else if (base == 16 && s[i] >= 'A' && s[i] <= 'F')
			d = s[i] - 'A' + 10;
		else
			return false;
		v = v * (unsigned long)base + (unsigned long)d;
	}
	*ret = v;
	return true;
}

/* ---- diagnostics and the call log ---- */

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, "p11shim: ", 9) < 0 || write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

/* One write(2) per line on an O_APPEND descriptor: lines from threads and processes never
 * interleave. Opened per call, so a test may truncate or remove the file at any time. */
static void log_call(const char *fn, CK_RV rv)
{
	const char *path = getenv("P11SHIM_LOG");
	char line[160], buf[32];
	int fd, n;

	if (!path || !*path)
		return;
	n = snprintf(line, sizeof(line), "%s %s\n", fn, rv_name(rv, buf, sizeof(buf)));
	if (n <= 0 || (size_t)n >= sizeof(line))
		return;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t)n) != n)
		warn("short write to %s", path);
	close(fd);
}

/* ---- the fault file ---- */

enum action { ACT_NONE, ACT_RV, ACT_LOGOUT, ACT_CORRUPT, ACT_HIDE, ACT_SLEEP, ACT_EMPTY };

/* SLEEP=MS: at most a minute, so that a mistyped line cannot hang a test for good. */
#define SLEEP_MAX_MS 60000L

/* Which lines a call can match: FUNCTION alone, FUNCTION:MECHANISM of the call's mechanism. */
enum match {
	MATCH_PLAIN,     /* the call has no mechanism: unqualified lines only */
	MATCH_MECH,      /* unqualified lines, and lines qualified with this mechanism */
	MATCH_MECH_ONLY, /* only lines qualified with this mechanism */
};

/* How fault_take() looks for the call's line. */
struct call {
	const char *fn;
	enum match match;
	CK_MECHANISM_TYPE mech;
	bool can_corrupt; /* the call has an output that CORRUPT could flip */
	bool can_hide;    /* HIDE means something for this call */
	bool peek;        /* find the line but do not use up a count */
};

struct fault {
	enum action action;
	CK_RV rv;
	long sleep_ms; /* ACT_SLEEP */
};

static char *slurp(const char *path, size_t *ret_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf;
	size_t len = 0;

	if (fd < 0) {
		if (errno != ENOENT)
			warn("cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(FAULTS_MAX + 1);
	if (!buf) {
		close(fd);
		return NULL;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, FAULTS_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == FAULTS_MAX)
			break;
	}
	close(fd);
	buf[len] = 0;
	*ret_len = len;
	return buf;
}

/* Writes text to path atomically: a reader sees the old file or the new one, never a part. */
static void rewrite(const char *path, const char *text, size_t len)
{
	char tmp[4096];
	int fd;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.p11shim-%ld.tmp", path, (long)getpid()) >=
	    sizeof(tmp)) {
		warn("fault file path too long");
		return;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		warn("cannot write %s: %s", tmp, strerror(errno));
		return;
	}
	if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0) {
		warn("cannot write %s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		warn("cannot rename %s to %s: %s", tmp, path, strerror(errno));
		unlink(tmp);
	}
}

/* The lock that makes a count exact between processes as the mutex does between threads: the
 * daemon's helpers (one process each) and its --touch-token children load this module with the
 * same fault file, and two of them reading a count before either rewrote it would both use the
 * same fault. An flock() on a file beside the fault file, not on the fault file itself, which
 * each rewrite replaces. harness.write_faults() takes it too. -1: no lock (said on stderr). */
static int lock_faults(const char *path)
{
	static bool warned; /* under the mutex: said once per process, not on every call */
	char lockpath[4096];
	int fd;

	if ((size_t)snprintf(lockpath, sizeof(lockpath), "%s.lock", path) >= sizeof(lockpath)) {
		warn("fault file path too long");
		return -1;
	}
	fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	while (fd >= 0 && flock(fd, LOCK_EX) < 0)
		if (errno != EINTR) {
			int e = errno;
			close(fd);
			fd = -1;
			errno = e;
		}
	if (fd < 0 && !warned) {
		warned = true;
		warn("cannot lock %s: %s; counts are not shared exactly between processes",
		     lockpath, strerror(errno));
	}
	return fd;
}

static void unlock_faults(int fd)
{
	if (fd >= 0)
		close(fd); /* releases the flock() */
}

static size_t word(const char *p, const char *end, const char **ret)
{
	const char *s;

	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++;
	s = p;
	while (p < end && *p != ' ' && *p != '\t' && *p != '\r' && *p != '#')
		p++;
	*ret = s;
	return (size_t)(p - s);
}

/* The MS of "SLEEP=MS": 0 to SLEEP_MAX_MS, or -1. */
static long sleep_parse(const char *w, size_t len)
{
	long ms = 0;

	for (size_t i = 0; i < len; i++) {
		if (w[i] < '0' || w[i] > '9')
			return -1;
		ms = ms * 10 + (w[i] - '0');
		if (ms > SLEEP_MAX_MS)
			return -1;
	}
	return ms;
}

/* One reading of the fault file for this call. A CORRUPT line is skipped, not consumed, for a
 * call that has no output to flip (a length query); so is a HIDE line for a call it means nothing
 * to. With rewrite, a finite count that applies is used up (unless c->peek); without, such a
 * line only sets *ret_rewrite, and the caller reads again under the lock: a file that is only
 * read needs no lock (a rename replaces it whole), so calls that meet no finite count cost what
 * they did before the lock. Malformed lines are reported by the reading without rewrite. */
static struct fault fault_scan(const struct call *c, const char *path, bool rewrite_counts,
                               bool *ret_rewrite)
{
	struct fault f = {ACT_NONE, CKR_OK, 0};
	char *text, *p, *end;
	size_t len = 0, fnlen = strlen(c->fn);
	int lineno = 0;
	bool quiet = rewrite_counts;

	text = slurp(path, &len);
	if (!text)
		return f;
	for (p = text, end = text + len; p < end && f.action == ACT_NONE;) {
		char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *w1, *w2, *w3, *w4, *q, *colon;
		size_t l1, l2, l3, l4, name_len;
		struct fault cand = {ACT_NONE, CKR_OK, 0};
		long count = -1;
		bool forever = false;

		if (!eol)
			eol = end;
		lineno++;
		l1 = word(p, eol, &w1);
		l2 = word(w1 + l1, eol, &w2);
		l3 = word(w2 + l2, eol, &w3);
		l4 = word(w3 + l3, eol, &w4);
		colon = l1 ? memchr(w1, ':', l1) : NULL;
		name_len = colon ? (size_t)(colon - w1) : l1;
		if (l1 == 0 || name_len != fnlen || memcmp(w1, c->fn, fnlen) != 0)
			goto next;
		if (colon) {
			CK_MECHANISM_TYPE m;
			if (!mech_parse(colon + 1, l1 - name_len - 1, &m)) {
				if (!quiet)
					warn("%s:%d: unknown mechanism '%.*s'", path, lineno,
					     (int)(l1 - name_len - 1), colon + 1);
				goto next;
			}
			if (c->match == MATCH_PLAIN || m != c->mech)
				goto next;
		} else if (c->match == MATCH_MECH_ONLY) {
			goto next;
		}
		if (l2 == 0 || l3 == 0 || l4 != 0) {
			if (!quiet)
				warn("%s:%d: want 'FUNCTION[:MECHANISM] ACTION COUNT'", path,
				     lineno);
			goto next;
		}
		if (l2 == 6 && memcmp(w2, "LOGOUT", 6) == 0)
			cand.action = ACT_LOGOUT;
		else if (l2 == 7 && memcmp(w2, "CORRUPT", 7) == 0)
			cand.action = ACT_CORRUPT;
		else if (l2 == 4 && memcmp(w2, "HIDE", 4) == 0)
			cand.action = ACT_HIDE;
		else if (l2 == 5 && memcmp(w2, "EMPTY", 5) == 0)
			cand.action = ACT_EMPTY;
		else if (l2 > 6 && memcmp(w2, "SLEEP=", 6) == 0 &&
		         (cand.sleep_ms = sleep_parse(w2 + 6, l2 - 6)) >= 0)
			cand.action = ACT_SLEEP;
		else if (rv_parse(w2, l2, &cand.rv))
			cand.action = ACT_RV;
		else {
			if (!quiet)
				warn("%s:%d: unknown action '%.*s'", path, lineno, (int)l2, w2);
			goto next;
		}
		if (l3 == 1 && *w3 == '*')
			forever = true;
		else {
			count = 0;
			for (q = w3; q < w3 + l3; q++) {
				if (*q < '0' || *q > '9' || count > 1000000000L) {
					count = -1;
					break;
				}
				count = count * 10 + (*q - '0');
			}
			if (count < 0) {
				if (!quiet)
					warn("%s:%d: bad count '%.*s'", path, lineno, (int)l3, w3);
				goto next;
			}
		}
		if ((!forever && count == 0) || (cand.action == ACT_CORRUPT && !c->can_corrupt))
			goto next;
		if (cand.action == ACT_EMPTY && strcmp(c->fn, "C_FindObjectsInit") != 0) {
			if (!quiet)
				warn("%s:%d: EMPTY applies to C_FindObjectsInit only", path,
				     lineno);
			goto next;
		}
		if (cand.action == ACT_HIDE && !c->can_hide) {
			if (!quiet)
				warn("%s:%d: HIDE applies to C_GetMechanismList and "
				     "C_GetMechanismInfo only",
				     path, lineno);
			goto next;
		}
		f = cand;
		if (!forever && !c->peek && !rewrite_counts) {
			*ret_rewrite = true;
		} else if (!forever && !c->peek) {
			/* The same line with one count less; everything else byte for byte. */
			size_t head = (size_t)(w3 - text), tail = (size_t)(end - (w3 + l3));
			char num[24];
			int nl = snprintf(num, sizeof(num), "%ld", count - 1);
			char *out = malloc(head + (size_t)nl + tail + 1);
			if (out) {
				memcpy(out, text, head);
				memcpy(out + head, num, (size_t)nl);
				memcpy(out + head + (size_t)nl, w3 + l3, tail);
				rewrite(path, out, head + (size_t)nl + tail);
				free(out);
			}
		}
	next:
		p = eol + 1;
	}
	free(text);
	return f;
}

/* The fault for this call, consuming one count (unless c->peek). */
static struct fault fault_take_call(const struct call *c)
{
	struct fault f = {ACT_NONE, CKR_OK, 0};
	const char *path = getenv("P11SHIM_FAULTS");
	bool rewrite = false;

	if (!path || !*path)
		return f;
	pthread_mutex_lock(&lock);
	f = fault_scan(c, path, false, &rewrite);
	if (rewrite) {
		/* Read again under the lock: another process may have used the count meanwhile. */
		int lock_fd = lock_faults(path);
		f = fault_scan(c, path, true, &rewrite);
		unlock_faults(lock_fd);
	}
	pthread_mutex_unlock(&lock);
	return f;
}

/* The fault for a call without a mechanism argument. */
static struct fault fault_take(const char *fn, bool can_corrupt)
{
	struct call c = {fn, MATCH_PLAIN, 0, can_corrupt, false, false};

	return fault_take_call(&c);
}

/* The fault for a call about mechanism mech (NULL: none given, unqualified lines only). */
static struct fault fault_take_mech(const char *fn, const CK_MECHANISM *mech)
{
	struct call c = {
	    fn, mech ? MATCH_MECH : MATCH_PLAIN, mech ? mech->mechanism : 0, false, false, false};

	return fault_take_call(&c);
}

/* The fault for a C_GetAttributeValue of n attributes: for this call a line's qualifier is the
 * number of attributes asked for at once ("C_GetAttributeValue:5 CORRUPT 1"). */
static struct fault fault_take_attrs(const char *fn, CK_ULONG n, bool can_corrupt)
{
	struct call c = {fn, MATCH_MECH, n, can_corrupt, false, false};

	return fault_take_call(&c);
}

/* ---- what an injected fault does besides returning its code ---- */

static bool session_gone(CK_RV rv)
{
	return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED;
}

/* Makes the fault real where a real token would: a session it calls invalid is really closed, so
 * a caller that keeps using the handle keeps failing. */
static void inject_session_effects(CK_SESSION_HANDLE s, CK_RV rv)
{
	if (session_gone(rv))
		real->C_CloseSession(s);
}

/* A C_Sign that returns an error ends the signing operation (PKCS#11 v2.40 §5.12): do that in the
 * real module too, or its next C_SignInit answers CKR_OPERATION_ACTIVE. */
static void end_sign_operation(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG len)
{
	CK_BYTE scratch[4096];
	CK_ULONG n = sizeof(scratch);

	real->C_Sign(s, data, len, scratch, &n);
	memset(scratch, 0, sizeof(scratch));
}

static void flip_bit(CK_BYTE_PTR p, CK_ULONG len)
{
	if (p && len > 0 && len != CK_UNAVAILABLE_INFORMATION)
		p[len / 2] ^= 0x01;
}

/* ---- wrappers ---- */

/* For a function with a session argument: applies the fault before the real call. Returns true
 * when the real call must be skipped and *rv returned. */
static bool pre(const struct fault *f, CK_SESSION_HANDLE s, bool has_session, CK_RV *rv)
{
	switch (f->action) {
	case ACT_RV:
		if (has_session)
			inject_session_effects(s, f->rv);
		*rv = f->rv;
		return true;
	case ACT_LOGOUT:
		if (has_session)
			real->C_Logout(s);
		*rv = CKR_USER_NOT_LOGGED_IN;
		return true;
	case ACT_HIDE: /* C_GetMechanismInfo; C_GetMechanismList handles HIDE itself */
		*rv = CKR_MECHANISM_INVALID;
		return true;
	case ACT_SLEEP: /* a slow token: the call is made, late (outside the fault file's lock) */
		nanosleep(&(struct timespec){.tv_sec = f->sleep_ms / 1000,
		                             .tv_nsec = f->sleep_ms % 1000 * 1000000L},
		          NULL);
		break;
	case ACT_CORRUPT:
	case ACT_EMPTY: /* C_FindObjectsInit, after the real call */
	case ACT_NONE:
		break;
	}
	return false;
}

static CK_RV shim_C_Initialize(void *args)
{
	struct fault f = fault_take("C_Initialize", false);
	CK_RV rv;

	if (!pre(&f, 0, false, &rv))
		rv = real->C_Initialize(args);
	log_call("C_Initialize", rv);
	return rv;
}

static CK_RV shim_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
	struct fault f = fault_take("C_GetSlotList", false);
	CK_RV rv;

	if (!pre(&f, 0, false, &rv))
		rv = real->C_GetSlotList(present, list, count);
	log_call("C_GetSlotList", rv);
	return rv;
}

static CK_RV shim_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
	struct fault f = fault_take("C_GetTokenInfo", false);
	CK_RV rv;

	if (!pre(&f, 0, false, &rv))
		rv = real->C_GetTokenInfo(slot, info);
	log_call("C_GetTokenInfo", rv);
	return rv;
}

static CK_RV shim_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                                CK_SESSION_HANDLE_PTR ret)
{
	struct fault f = fault_take("C_OpenSession", false);
	CK_RV rv;

	if (!pre(&f, 0, false, &rv))
		rv = real->C_OpenSession(slot, flags, app, notify, ret);
	log_call("C_OpenSession", rv);
	return rv;
}

static CK_RV shim_C_CloseSession(CK_SESSION_HANDLE s)
{
	struct fault f = fault_take("C_CloseSession", false);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_CloseSession(s);
	log_call("C_CloseSession", rv);
	return rv;
}

static CK_RV shim_C_GetSessionInfo(CK_SESSION_HANDLE s, CK_SESSION_INFO_PTR info)
{
	struct fault f = fault_take("C_GetSessionInfo", false);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_GetSessionInfo(s, info);
	log_call("C_GetSessionInfo", rv);
	return rv;
}

static CK_RV shim_C_Login(CK_SESSION_HANDLE s, CK_USER_TYPE type, CK_UTF8CHAR_PTR pin,
                          CK_ULONG pin_len)
{
	struct fault f = fault_take("C_Login", false);
	CK_RV rv;

	/* The PIN is passed on untouched and never copied, logged or kept. */
	if (!pre(&f, s, true, &rv))
		rv = real->C_Login(s, type, pin, pin_len);
	log_call("C_Login", rv);
	return rv;
}

static CK_RV shim_C_Logout(CK_SESSION_HANDLE s)
{
	struct fault f = fault_take("C_Logout", false);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_Logout(s);
	log_call("C_Logout", rv);
	return rv;
}

static CK_RV shim_C_CreateObject(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n,
                                 CK_OBJECT_HANDLE_PTR ret)
{
	struct fault f = fault_take("C_CreateObject", false);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_CreateObject(s, tmpl, n, ret);
	log_call("C_CreateObject", rv);
	return rv;
}

static CK_RV shim_C_CopyObject(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tmpl,
                               CK_ULONG n, CK_OBJECT_HANDLE_PTR ret)
{
	struct fault f = fault_take("C_CopyObject", false);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_CopyObject(s, obj, tmpl, n, ret);
	log_call("C_CopyObject", rv);
	return rv;
}

static CK_RV shim_C_DestroyObject(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj)
{
	struct fault f = fault_take("C_DestroyObject", false);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_DestroyObject(s, obj);
	log_call("C_DestroyObject", rv);
	return rv;
}

static CK_RV shim_C_GetAttributeValue(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                                      CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	bool has_output = false;
	struct fault f;
	CK_RV rv;

	for (CK_ULONG i = 0; tmpl && i < n; i++)
		has_output |= tmpl[i].pValue != NULL;
	f = fault_take_attrs("C_GetAttributeValue", n, has_output);
	if (!pre(&f, s, true, &rv)) {
		rv = real->C_GetAttributeValue(s, obj, tmpl, n);
		if (f.action == ACT_CORRUPT && rv == CKR_OK)
			for (CK_ULONG i = 0; i < n; i++)
				if (tmpl[i].pValue && tmpl[i].ulValueLen > 0 &&
				    tmpl[i].ulValueLen != CK_UNAVAILABLE_INFORMATION) {
					flip_bit(tmpl[i].pValue, tmpl[i].ulValueLen);
					break;
				}
	}
	log_call("C_GetAttributeValue", rv);
	return rv;
}

/* Sessions whose current search EMPTY made find nothing (until C_FindObjectsFinal). */
static CK_SESSION_HANDLE empty_searches[64];
static pthread_mutex_t empty_lock = PTHREAD_MUTEX_INITIALIZER;

static bool empty_search(CK_SESSION_HANDLE s, int set)
{
	bool found = false;

	pthread_mutex_lock(&empty_lock);
	for (size_t i = 0; i < 64 && !found; i++)
		if (empty_searches[i] == s && s != CK_INVALID_HANDLE) {
			found = true;
			if (set == 0)
				empty_searches[i] = CK_INVALID_HANDLE;
		}
	for (size_t i = 0; i < 64 && set == 1 && !found; i++)
		if (empty_searches[i] == CK_INVALID_HANDLE) {
			empty_searches[i] = s;
			found = true;
		}
	pthread_mutex_unlock(&empty_lock);
	return found;
}

/* The CKA_CLASS a search template asks for: its qualifier ("C_FindObjectsInit:3" is a search
 * for private keys); -1 (matches no qualified line) when it names none. */
static CK_ULONG template_class(CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	for (CK_ULONG i = 0; tmpl && i < n; i++)
		if (tmpl[i].type == CKA_CLASS && tmpl[i].pValue &&
		    tmpl[i].ulValueLen == sizeof(CK_OBJECT_CLASS))
			return *(CK_OBJECT_CLASS *)tmpl[i].pValue;
	return (CK_ULONG)-1;
}

static CK_RV shim_C_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	struct call c = {
	    "C_FindObjectsInit", MATCH_MECH, template_class(tmpl, n), false, false, false};
	struct fault f = fault_take_call(&c);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_FindObjectsInit(s, tmpl, n);
	/* EMPTY: the search runs, but finds nothing, as a process whose view of the token lost
	 * the objects would (docs/design.md, "SoftHSM's file store is not coherent"). */
	if (rv == CKR_OK && f.action == ACT_EMPTY)
		empty_search(s, 1);
	log_call("C_FindObjectsInit", rv);
	return rv;
}

static CK_RV shim_C_FindObjects(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR ret, CK_ULONG max,
                                CK_ULONG_PTR ret_n)
{
	struct fault f = fault_take("C_FindObjects", false);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_FindObjects(s, ret, max, ret_n);
	if (rv == CKR_OK && ret_n && empty_search(s, -1))
		*ret_n = 0;
	log_call("C_FindObjects", rv);
	return rv;
}

static CK_RV shim_C_FindObjectsFinal(CK_SESSION_HANDLE s)
{
	struct fault f = fault_take("C_FindObjectsFinal", false);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_FindObjectsFinal(s);
	empty_search(s, 0);
	log_call("C_FindObjectsFinal", rv);
	return rv;
}

static CK_RV shim_C_SignInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	struct fault f = fault_take_mech("C_SignInit", mech);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv = real->C_SignInit(s, mech, key);
	log_call("C_SignInit", rv);
	return rv;
}

static CK_RV shim_C_Sign(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
                         CK_ULONG_PTR sig_len)
{
	struct fault f = fault_take("C_Sign", sig != NULL);
	CK_RV rv;

	/* An error ends the operation in the token, as it would in a real one; a dead session
	 * takes its operation with it. */
	if ((f.action == ACT_RV && !session_gone(f.rv)) || f.action == ACT_LOGOUT)
		end_sign_operation(s, data, len);
	if (!pre(&f, s, true, &rv)) {
		rv = real->C_Sign(s, data, len, sig, sig_len);
		if (f.action == ACT_CORRUPT && rv == CKR_OK && sig_len)
			flip_bit(sig, *sig_len);
	}
	log_call("C_Sign", rv);
	return rv;
}

static CK_RV shim_C_GenerateKeyPair(CK_SESSION_HANDLE s, CK_MECHANISM_PTR mech,
                                    CK_ATTRIBUTE_PTR pub_tmpl, CK_ULONG pub_n,
                                    CK_ATTRIBUTE_PTR priv_tmpl, CK_ULONG priv_n,
                                    CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv)
{
	struct fault f = fault_take_mech("C_GenerateKeyPair", mech);
	CK_RV rv;

	if (!pre(&f, s, true, &rv))
		rv =
		    real->C_GenerateKeyPair(s, mech, pub_tmpl, pub_n, priv_tmpl, priv_n, pub, priv);
	log_call("C_GenerateKeyPair", rv);
	return rv;
}

static CK_RV shim_C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type,
                                     CK_MECHANISM_INFO_PTR info)
{
	struct call c = {"C_GetMechanismInfo", MATCH_MECH, type, false, true, false};
	struct fault f = fault_take_call(&c);
	CK_RV rv;

	if (!pre(&f, 0, false, &rv))
		rv = real->C_GetMechanismInfo(slot, type, info);
	log_call("C_GetMechanismInfo", rv);
	return rv;
}

/* The real list less the mechanisms a HIDE line names. A length query (list NULL) peeks at the
 * HIDE lines without using them up, so that it and the call that follows agree. */
static CK_RV mechanism_list(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
	CK_MECHANISM_TYPE_PTR all = NULL;
	CK_ULONG n = 0, kept = 0;
	CK_RV rv;

	if (!count)
		return CKR_ARGUMENTS_BAD;
	rv = real->C_GetMechanismList(slot, NULL, &n);
	if (rv != CKR_OK)
		return rv;
	all = calloc(n ? n : 1, sizeof(*all));
	if (!all)
		return CKR_HOST_MEMORY;
	rv = real->C_GetMechanismList(slot, all, &n);
	if (rv != CKR_OK) {
		free(all);
		return rv;
	}
	for (CK_ULONG i = 0; i < n; i++) {
		struct call c = {"C_GetMechanismList", MATCH_MECH_ONLY, all[i], false, true, !list};
		if (fault_take_call(&c).action != ACT_HIDE)
			all[kept++] = all[i];
	}
	if (list && *count < kept)
		rv = CKR_BUFFER_TOO_SMALL;
	else if (list)
		memcpy(list, all, kept * sizeof(*all));
	*count = kept;
	free(all);
	return rv;
}

static CK_RV shim_C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list,
                                     CK_ULONG_PTR count)
{
	struct call c = {"C_GetMechanismList", MATCH_PLAIN, 0, false, true, false};
	struct fault f = fault_take_call(&c);
	CK_RV rv;

	if (f.action == ACT_HIDE) { /* an unqualified HIDE: no mechanism at all */
		rv = count ? CKR_OK : CKR_ARGUMENTS_BAD;
		if (count)
			*count = 0;
	} else if (!pre(&f, 0, false, &rv)) {
		rv = mechanism_list(slot, list, count);
	}
	log_call("C_GetMechanismList", rv);
	return rv;
}

/* ---- the one export ---- */

static CK_RV load_real(void)
{
	const char *path = getenv("P11SHIM_MODULE");
	CK_C_GetFunctionList get;
	CK_RV rv;

	if (!path || !*path) {
		warn("P11SHIM_MODULE is not set: which module should I wrap?");
		return CKR_GENERAL_ERROR;
	}
	real_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!real_dl) {
		warn("cannot load %s: %s", path, dlerror());
		return CKR_GENERAL_ERROR;
	}
	*(void **)&get = dlsym(real_dl, "C_GetFunctionList");
	if (!get) {
		warn("%s has no C_GetFunctionList", path);
		dlclose(real_dl);
		real_dl = NULL;
		return CKR_GENERAL_ERROR;
	}
	rv = get(&real);
	if (rv != CKR_OK || !real) {
		warn("C_GetFunctionList of %s failed", path);
		dlclose(real_dl);
		real_dl = NULL;
		real = NULL;
		return rv != CKR_OK ? rv : CKR_GENERAL_ERROR;
	}
	shim = *real;
	shim.C_GetFunctionList = C_GetFunctionList;
	shim.C_Initialize = shim_C_Initialize;
	shim.C_GetSlotList = shim_C_GetSlotList;
	shim.C_GetTokenInfo = shim_C_GetTokenInfo;
	shim.C_GetMechanismList = shim_C_GetMechanismList;
	shim.C_GetMechanismInfo = shim_C_GetMechanismInfo;
	shim.C_OpenSession = shim_C_OpenSession;
	shim.C_CloseSession = shim_C_CloseSession;
	shim.C_GetSessionInfo = shim_C_GetSessionInfo;
	shim.C_Login = shim_C_Login;
	shim.C_Logout = shim_C_Logout;
	shim.C_CreateObject = shim_C_CreateObject;
	shim.C_CopyObject = shim_C_CopyObject;
	shim.C_DestroyObject = shim_C_DestroyObject;
	shim.C_GetAttributeValue = shim_C_GetAttributeValue;
	shim.C_FindObjectsInit = shim_C_FindObjectsInit;
	shim.C_FindObjects = shim_C_FindObjects;
	shim.C_FindObjectsFinal = shim_C_FindObjectsFinal;
	shim.C_SignInit = shim_C_SignInit;
	shim.C_Sign = shim_C_Sign;
	shim.C_GenerateKeyPair = shim_C_GenerateKeyPair;
	return CKR_OK;
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ret)
{
	CK_RV rv = CKR_OK;

	if (!ret)
		return CKR_ARGUMENTS_BAD;
	pthread_mutex_lock(&lock);
	if (!real)
		rv = load_real();
	pthread_mutex_unlock(&lock);
	if (rv == CKR_OK)
		*ret = &shim;
	return rv;
}

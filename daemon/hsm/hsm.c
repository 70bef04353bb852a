/* PKCS#11 module, token, login and per-thread sessions, the one recovery wrapper
 * (hsm_with_session()) and the one CKR -> errno mapping: the bottom of the stack of
 * hsm_internal.h, calling none of the units above it. */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#define PIN_MAX 256

#define CKR_ENTRY(x)                                                                               \
	{                                                                                          \
		x, #x                                                                              \
	}

static const struct {
	CK_RV rv;
	const char *name;
} ckr_names[] = {
    CKR_ENTRY(CKR_OK),
    CKR_ENTRY(CKR_HOST_MEMORY),
    CKR_ENTRY(CKR_SLOT_ID_INVALID),
    CKR_ENTRY(CKR_GENERAL_ERROR),
    CKR_ENTRY(CKR_FUNCTION_FAILED),
    CKR_ENTRY(CKR_ARGUMENTS_BAD),
    CKR_ENTRY(CKR_ATTRIBUTE_SENSITIVE),
    CKR_ENTRY(CKR_ATTRIBUTE_TYPE_INVALID),
    CKR_ENTRY(CKR_ATTRIBUTE_VALUE_INVALID),
    CKR_ENTRY(CKR_DEVICE_ERROR),
    CKR_ENTRY(CKR_DEVICE_MEMORY),
    CKR_ENTRY(CKR_DEVICE_REMOVED),
    CKR_ENTRY(CKR_KEY_HANDLE_INVALID),
    CKR_ENTRY(CKR_ACTION_PROHIBITED),
    CKR_ENTRY(CKR_KEY_TYPE_INCONSISTENT),
    CKR_ENTRY(CKR_MECHANISM_INVALID),
    CKR_ENTRY(CKR_OBJECT_HANDLE_INVALID),
    CKR_ENTRY(CKR_OPERATION_ACTIVE),
    CKR_ENTRY(CKR_PIN_INCORRECT),
    CKR_ENTRY(CKR_PIN_INVALID),
    CKR_ENTRY(CKR_PIN_LEN_RANGE),
    CKR_ENTRY(CKR_PIN_EXPIRED),
    CKR_ENTRY(CKR_PIN_LOCKED),
    CKR_ENTRY(CKR_SESSION_CLOSED),
    CKR_ENTRY(CKR_SESSION_COUNT),
    CKR_ENTRY(CKR_SESSION_HANDLE_INVALID),
    CKR_ENTRY(CKR_TEMPLATE_INCOMPLETE),
    CKR_ENTRY(CKR_TEMPLATE_INCONSISTENT),
    CKR_ENTRY(CKR_TOKEN_NOT_PRESENT),
    CKR_ENTRY(CKR_TOKEN_NOT_RECOGNIZED),
    CKR_ENTRY(CKR_TOKEN_WRITE_PROTECTED),
    CKR_ENTRY(CKR_USER_ALREADY_LOGGED_IN),
    CKR_ENTRY(CKR_USER_NOT_LOGGED_IN),
    CKR_ENTRY(CKR_USER_PIN_NOT_INITIALIZED),
    CKR_ENTRY(CKR_BUFFER_TOO_SMALL),
    CKR_ENTRY(CKR_CRYPTOKI_NOT_INITIALIZED),
    CKR_ENTRY(CKR_CRYPTOKI_ALREADY_INITIALIZED),
};

const char *hsm_ckr_name(CK_RV rv)
{
	for (size_t i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++)
		if (ckr_names[i].rv == rv)
			return ckr_names[i].name;
	return "CKR_(other)";
}

int hsm_fail(const char *what, CK_RV rv, int err)
{
	return hsm_fail_text(err, "%s: %s (0x%lx)", what, hsm_ckr_name(rv), (unsigned long)rv);
}

/* One mapping from CKR_* to errno, so callers can decide without knowing PKCS#11. */
int hsm_ckr_errno(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
		return 0;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_EXPIRED:
	case CKR_PIN_LOCKED:
	case CKR_USER_PIN_NOT_INITIALIZED:
		return -EKEYREJECTED;
	case CKR_USER_NOT_LOGGED_IN:
		return -EPERM;
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_DEVICE_REMOVED:
	case CKR_SLOT_ID_INVALID:
		return -ENODEV;
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
		return -EPIPE;
	case CKR_KEY_HANDLE_INVALID:
	case CKR_OBJECT_HANDLE_INVALID:
		return -ESTALE;
	case CKR_HOST_MEMORY:
		return -ENOMEM;
	case CKR_DEVICE_MEMORY:
		return -ENOSPC;
	case CKR_MECHANISM_INVALID:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

int hsm_check(const char *what, CK_RV rv)
{
	return rv == CKR_OK ? 0 : hsm_fail(what, rv, hsm_ckr_errno(rv));
}

/* ---- PIN and login ---- */

/* Reads the PIN from the file the daemon opened for us (PROTO_FD_PIN) into buf, from its start
 * every time; strips one trailing newline. The daemon checked the path (pinfile.c); the
 * descriptor is checked again here, since it is what we read. The caller wipes buf. */
static int pin_read(struct hsm *h, char *buf, size_t size, size_t *ret_len)
{
	struct stat st;
	ssize_t n;

	if (fstat(h->pin_fd, &st) < 0)
		return hsm_fail_text(-errno, "cannot stat pin-file %s: %s", h->pin_name,
		                     strerror(errno));
	if (!S_ISREG(st.st_mode) || (st.st_mode & 0077))
		return hsm_fail_text(-EPERM,
		                     "pin-file %s is not a regular file that only its owner can "
		                     "access",
		                     h->pin_name);
	n = pread(h->pin_fd, buf, size - 1, 0);
	if (n < 0)
		return hsm_fail_text(-errno, "cannot read pin-file %s: %s", h->pin_name,
		                     strerror(errno));
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n == 0 || (size_t)n >= size - 1)
		return hsm_fail_text(-EINVAL, "pin-file %s is empty or longer than %zu bytes",
		                     h->pin_name, size - 2);
	*ret_len = (size_t)n;
	return 0;
}

/* How long before a C_Login answered CKR_USER_PIN_NOT_INITIALIZED is asked again. */
#define LOGIN_AGAIN_MS 200

/* The one C_Login with the PIN of the file. A refusal (wrong, locked, expired PIN) is final:
 * a token locks the PIN after a few wrong tries, so no path of this process tries it again,
 * and the daemon is told (hsm_on_pin_refused()) so that it exits rather than be restarted
 * into another try. */
static int login(struct hsm *h, CK_SESSION_HANDLE s)
{
	char pin[PIN_MAX];
	size_t len = 0;
	CK_RV rv;
	int r;

	if (atomic_load(&h->pin_refused))
		return hsm_fail_text(-EKEYREJECTED,
		                     "the token refused the PIN before; not trying it again "
		                     "until the daemon restarts");
	r = pin_read(h, pin, sizeof(pin), &len);
	if (r == 0) {
		rv = h->f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, len);
		/* Not a refusal of this PIN: the token did not check it. SoftHSM answers so while
		 * another process rewrites the token's file (two instances making their first keys
		 * at once read it half-written), so it is asked once more, a moment later; a token
		 * really without a user PIN says so again. No try is counted against the PIN. */
		if (rv == CKR_USER_PIN_NOT_INITIALIZED) {
			nanosleep(&(struct timespec){.tv_nsec = LOGIN_AGAIN_MS * 1000000L}, NULL);
			rv = h->f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, len);
		}
		r = rv == CKR_USER_ALREADY_LOGGED_IN ? 0 : hsm_check("C_Login", rv);
	}
	explicit_bzero(pin, sizeof(pin));
	if (r == -EKEYREJECTED && !atomic_exchange(&h->pin_refused, true) && h->on_refused)
		h->on_refused(h->on_refused_data);
	return r;
}

void hsm_on_pin_refused(struct hsm *h, void (*fn)(void *data), void *data)
{
	h->on_refused_data = data;
	h->on_refused = fn;
}

bool hsm_pin_refused(struct hsm *h)
{
	return atomic_load(&h->pin_refused);
}

/* ---- sessions: one per thread, never shared ---- */

static int session_open(struct hsm *h, CK_SESSION_HANDLE *ret)
{
	return hsm_check(
	    "C_OpenSession",
	    h->f->C_OpenSession(h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, ret));
}

void hsm_session_forget_copies(struct hsm_session *s)
{
	free(s->copies);
	s->copies = NULL;
	s->n_copies = 0;
}

/* Closes s and frees it; its session objects (key copies) go with the session. */
static void session_free(struct hsm *h, struct hsm_session *s)
{
	if (h->f && s->handle != CK_INVALID_HANDLE)
		h->f->C_CloseSession(s->handle);
	free(s->copies);
	free(s);
}

/* The pthread_key destructor: the thread that owned s is ending, so nothing else can be using
 * s. Every reload ends a scheduler thread; without this, each left its session open. The login
 * session stays: login state lasts only while some session is open. */
static void session_end(void *arg)
{
	struct hsm_session *s = arg, **p;
	struct hsm *h = s->h;

	if (s->keep)
		return;
	pthread_mutex_lock(&h->lock);
	for (p = &h->sessions; *p && *p != s; p = &(*p)->next)
		;
	if (*p)
		*p = s->next;
	pthread_mutex_unlock(&h->lock);
	session_free(h, s);
}

int hsm_session_get(struct hsm *h, struct hsm_session **ret)
{
	struct hsm_session *s = pthread_getspecific(h->tls);
	int r;

	if (s) {
		*ret = s;
		return 0;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->h = h;
	s->handle = CK_INVALID_HANDLE;
	r = session_open(h, &s->handle);
	if (r < 0) {
		free(s);
		return r;
	}
	pthread_mutex_lock(&h->lock);
	s->next = h->sessions;
	h->sessions = s;
	pthread_mutex_unlock(&h->lock);
	pthread_setspecific(h->tls, s);
	*ret = s;
	return 0;
}

/* What hsm_with_session() has repaired so far in one call: each repair is tried once. */
struct recovery {
	bool reopened, relogged;
	const char *first_what; /* the first failure repaired, and its code */
	CK_RV first_rv;
};

/* After rv: 0 done, 1 try again (session reopened or logged in again), or a negative errno
 * with the failure recorded. A PIN error is never retried. */
static int recover(struct hsm *h, struct hsm_session *s, CK_RV rv, const char *what,
                   struct recovery *rc)
{
	if (rv == CKR_OK)
		return 0;
	if (!rc->first_what &&
	    (((rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) && !rc->reopened) ||
	     (rv == CKR_USER_NOT_LOGGED_IN && !rc->relogged))) {
		/* What was repaired: named too if the repair does not help. */
		rc->first_what = what;
		rc->first_rv = rv;
	}
	if ((rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) && !rc->reopened) {
		rc->reopened = true;
		atomic_fetch_add_explicit(&h->repairs, 1, memory_order_relaxed);
		/* The session's objects, its key copies among them, went with it. */
		hsm_session_forget_copies(s);
		h->f->C_CloseSession(s->handle);
		/* Until a new one opens: the thread's end must not close a handle the token may
		 * since have given to another thread's session. */
		s->handle = CK_INVALID_HANDLE;
		return session_open(h, &s->handle) < 0 ? -EPIPE : 1;
	}
	if (rv == CKR_USER_NOT_LOGGED_IN && !rc->relogged) {
		int r;
		rc->relogged = true;
		atomic_fetch_add_explicit(&h->repairs, 1, memory_order_relaxed);
		pthread_mutex_lock(&h->lock);
		/* The logout destroyed every private session object: all key copies are gone. */
		atomic_fetch_add(&h->copies_lost, 1);
		r = login(h, s->handle);
		pthread_mutex_unlock(&h->lock);
		return r < 0 ? r : 1;
	}
	if (rc->first_what)
		/* A failure after a repair is often its consequence (a new session is not logged
		 * in, a key handle went stale with the old one): both are named. */
		return hsm_fail_text(hsm_ckr_errno(rv), "%s: %s (0x%lx), after %s: %s was repaired",
		                     what, hsm_ckr_name(rv), (unsigned long)rv, rc->first_what,
		                     hsm_ckr_name(rc->first_rv));
	return hsm_fail(what, rv, hsm_ckr_errno(rv));
}

int hsm_with_session(struct hsm *h, const char *what, hsm_op *op, void *ctx)
{
	struct recovery rc = {0};
	struct hsm_session *s;
	CK_RV rv;
	int r;

	do {
		if ((r = hsm_session_get(h, &s)) < 0)
			return r;
		s->call = NULL;
		rv = op(h, s, ctx);
	} while ((r = recover(h, s, rv, s->call ? s->call : what, &rc)) > 0);
	return r;
}

unsigned long hsm_repairs(struct hsm *h)
{
	return atomic_load_explicit(&h->repairs, memory_order_relaxed);
}

CK_RV hsm_require_login(struct hsm *h, struct hsm_session *s)
{
	CK_SESSION_INFO info;
	CK_RV rv = h->f->C_GetSessionInfo(s->handle, &info);

	if (rv != CKR_OK)
		return rv;
	if (info.state != CKS_RW_USER_FUNCTIONS && info.state != CKS_RO_USER_FUNCTIONS)
		return CKR_USER_NOT_LOGGED_IN;
	return CKR_OK;
}

void hsm_set_session_copies(struct hsm *h, bool on)
{
	h->session_copies = on;
}

/* ---- module and token ---- */

static bool token_matches(const char *want, const CK_TOKEN_INFO *info)
{
	size_t n = sizeof(info->label);
	int match = 0;

	if (strncmp(want, "pkcs11:", 7) == 0) {
		P11KitUri *uri = p11_kit_uri_new();
		if (uri && p11_kit_uri_parse(want, P11_KIT_URI_FOR_TOKEN, uri) == P11_KIT_URI_OK)
			match = p11_kit_uri_match_token_info(uri, info);
		p11_kit_uri_free(uri);
		return match;
	}
	while (n > 0 && info->label[n - 1] == ' ')
		n--;
	return strlen(want) == n && memcmp(want, info->label, n) == 0;
}

int hsm_token_find(struct hsm *h, const char *want)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	int found = 0;
	int r;

	r = hsm_check("C_GetSlotList", h->f->C_GetSlotList(CK_TRUE, slots, &n));
	if (r < 0)
		return r;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO info;
		if (h->f->C_GetTokenInfo(slots[i], &info) != CKR_OK ||
		    !(info.flags & CKF_TOKEN_INITIALIZED) || !token_matches(want, &info))
			continue;
		h->slot = slots[i];
		h->incoherent_store = memcmp(info.manufacturerID, "SoftHSM", 7) == 0;
		found++;
	}
	if (found == 0)
		return hsm_fail_text(-ENODEV, "no initialized token matches '%s'", want);
	if (found > 1)
		return hsm_fail_text(
		    -EEXIST, "%d tokens match '%s'; use a pkcs11: URI that names one", found, want);
	return 0;
}

int hsm_module_load(struct hsm *h, const char *module)
{
	CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
	CK_RV rv;

	h->f = p11_kit_module_load(module, P11_KIT_MODULE_UNMANAGED);
	if (!h->f)
		return hsm_fail_text(-ENOENT, "cannot load PKCS#11 module %s: %s", module,
		                     p11_kit_message() ? p11_kit_message() : "unknown error");
	rv = h->f->C_Initialize(&args);
	if (rv != CKR_OK)
		return hsm_fail("C_Initialize", rv, -EIO);
	h->initialized = true;
	return 0;
}

/* Tries of hsm_open() to find the token. */
#define OPEN_TRIES 3

static void module_unload(struct hsm *h)
{
	if (h->initialized)
		h->f->C_Finalize(NULL);
	if (h->f)
		p11_kit_module_release(h->f);
	h->initialized = false;
	h->f = NULL;
}

int hsm_open(const char *module, const char *token, int pin_fd, const char *pin_name,
             struct hsm **ret)
{
	struct hsm *h = calloc(1, sizeof(*h));
	struct hsm_session *s;
	int r;

	hsm_error_clear();
	if (!h)
		return -ENOMEM;
	if (pthread_key_create(&h->tls, session_end) != 0) {
		free(h);
		return -ENOMEM;
	}
	pthread_mutex_init(&h->lock, NULL);
	pthread_mutex_init(&h->resync_lock, NULL);
	h->pin_fd = pin_fd;
	h->pin_name = strdup(pin_name);
	h->module = strdup(module);
	h->token = strdup(token);
	if (!h->pin_name || !h->module || !h->token) {
		r = -ENOMEM;
		goto fail;
	}
	for (int tries = 1;; tries++) {
		if ((r = hsm_module_load(h, module)) == 0)
			r = hsm_token_find(h, token);
		if (r != -ENODEV || tries == OPEN_TRIES)
			break;
		/* SoftHSM reads the token while another process rewrites its files (another
		 * instance starting at the same instant) and may see no token at all: loading
		 * the module again reads it again. */
		module_unload(h);
		nanosleep(&(struct timespec){.tv_nsec = 200 * 1000 * 1000}, NULL);
	}
	if (r < 0 || (r = hsm_session_get(h, &s)) < 0)
		goto fail;
	/* This session stays open for the daemon's life: the login lasts while any session does. */
	s->keep = true;
	if ((r = login(h, s->handle)) < 0)
		goto fail;
	*ret = h;
	return 0;
fail:
	hsm_close(h);
	return r;
}

/* No other thread may be using h, or ending after having used it: every thread that used it
 * but the caller must have been joined (a destructor that has begun cannot be waited for).
 * Threads still alive that no longer use h are fine: the key goes first, so that their end
 * runs no destructor on what is freed here. */
void hsm_close(struct hsm *h)
{
	if (!h)
		return;
	pthread_key_delete(h->tls);
	while (h->sessions) {
		struct hsm_session *s = h->sessions;
		h->sessions = s->next;
		session_free(h, s);
	}
	for (size_t i = 0; i < _JWS_ALG_MAX; i++)
		EVP_MD_free(h->plans[i].md);
	module_unload(h);
	pthread_mutex_destroy(&h->lock);
	pthread_mutex_destroy(&h->resync_lock);
	free(h->pin_name);
	free(h->module);
	free(h->token);
	free(h);
}

/* The session answers, logged in, and so does the token itself, not only our session: SoftHSM
 * keeps sessions of a token it can no longer read (docs/design.md, "A failed re-read loses the
 * token for the process"). */
static CK_RV probe(struct hsm *h, struct hsm_session *s, void *ctx)
{
	CK_TOKEN_INFO info;
	CK_RV rv = hsm_require_login(h, s);

	(void)ctx;
	if (rv != CKR_OK)
		return rv;
	return hsm_called(s, "C_GetTokenInfo", h->f->C_GetTokenInfo(h->slot, &info));
}

int hsm_probe(struct hsm *h)
{
	hsm_error_clear();
	return hsm_with_session(h, "C_GetSessionInfo", probe, NULL);
}

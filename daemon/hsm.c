/* PKCS#11 through the module's own function list: every C_* call of tokensign lives here. */
#include "hsm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#define PIN_MAX 256

struct hsm_session {
	CK_SESSION_HANDLE handle;
	struct hsm_session *next;
};

struct hsm {
	CK_FUNCTION_LIST *f;
	bool initialized;
	CK_SLOT_ID slot;
	char *pin_file;
	pthread_key_t tls;    /* this thread's struct hsm_session */
	pthread_mutex_t lock; /* sessions list, login */
	struct hsm_session *sessions;
};

/* What an operation was doing when it failed, for the one log line the caller writes. */
static __thread char last_error[160];

const char *hsm_last_error(void)
{
	return last_error[0] ? last_error : "no PKCS#11 error";
}

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

static const char *ckr_name(CK_RV rv)
{
	for (size_t i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++)
		if (ckr_names[i].rv == rv)
			return ckr_names[i].name;
	return "CKR_(other)";
}

static int fail(const char *what, CK_RV rv, int err)
{
	snprintf(last_error, sizeof(last_error), "%s: %s (0x%lx)", what, ckr_name(rv),
	         (unsigned long)rv);
	return err;
}

static int fail_text(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail_text(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return err;
}

/* One mapping from CKR_* to errno, so callers can decide without knowing PKCS#11. */
static int ckr_errno(CK_RV rv)
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
		return -EACCES;
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

static int check(const char *what, CK_RV rv)
{
	return rv == CKR_OK ? 0 : fail(what, rv, ckr_errno(rv));
}

/* ---- PIN and login ---- */

/* Reads the PIN into buf; strips one trailing newline. The caller wipes buf. */
static int pin_read(const char *path, char *buf, size_t size, size_t *ret_len)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return fail_text(-errno, "cannot open pin-file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return fail_text(-EINVAL, "pin-file %s is not a regular file", path);
	}
	if (st.st_mode & 0077) {
		close(fd);
		return fail_text(-EPERM,
		                 "pin-file %s is accessible by group or others (mode %04o); "
		                 "chmod 0600 it",
		                 path, (unsigned)(st.st_mode & 07777));
	}
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return fail_text(-errno, "cannot read pin-file %s", path);
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n == 0 || (size_t)n >= size - 1)
		return fail_text(-EINVAL, "pin-file %s is empty or longer than %zu bytes", path,
		                 size - 2);
	*ret_len = (size_t)n;
	return 0;
}

static int login(struct hsm *h, CK_SESSION_HANDLE s)
{
	char pin[PIN_MAX];
	size_t len = 0;
	CK_RV rv;
	int r;

	r = pin_read(h->pin_file, pin, sizeof(pin), &len);
	if (r == 0) {
		rv = h->f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, len);
		r = rv == CKR_USER_ALREADY_LOGGED_IN ? 0 : check("C_Login", rv);
	}
	explicit_bzero(pin, sizeof(pin));
	return r;
}

/* ---- sessions: one per thread, never shared ---- */

static int session_open(struct hsm *h, CK_SESSION_HANDLE *ret)
{
	return check(
	    "C_OpenSession",
	    h->f->C_OpenSession(h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, ret));
}

static int session_get(struct hsm *h, struct hsm_session **ret)
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

struct recovery {
	bool reopened, relogged;
};

/* Decides what to do after rv: 0 done, 1 try again (after repairing the session or the login),
 * or a negative errno. Each repair is attempted once per operation; a PIN error never retries. */
static int recover(struct hsm *h, struct hsm_session *s, CK_RV rv, const char *what,
                   struct recovery *rc)
{
	if (rv == CKR_OK)
		return 0;
	if ((rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) && !rc->reopened) {
		rc->reopened = true;
		h->f->C_CloseSession(s->handle);
		return session_open(h, &s->handle) < 0 ? -EPIPE : 1;
	}
	if (rv == CKR_USER_NOT_LOGGED_IN && !rc->relogged) {
		int r;
		rc->relogged = true;
		pthread_mutex_lock(&h->lock);
		r = login(h, s->handle);
		pthread_mutex_unlock(&h->lock);
		return r < 0 ? r : 1;
	}
	return fail(what, rv, ckr_errno(rv));
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

static int token_find(struct hsm *h, const char *want)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	int found = 0;
	int r;

	r = check("C_GetSlotList", h->f->C_GetSlotList(CK_TRUE, slots, &n));
	if (r < 0)
		return r;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO info;
		if (h->f->C_GetTokenInfo(slots[i], &info) != CKR_OK ||
		    !(info.flags & CKF_TOKEN_INITIALIZED) || !token_matches(want, &info))
			continue;
		h->slot = slots[i];
		found++;
	}
	if (found == 0)
		return fail_text(-ENODEV, "no initialized token matches '%s'", want);
	if (found > 1)
		return fail_text(-EEXIST, "%d tokens match '%s'; use a pkcs11: URI that names one",
		                 found, want);
	return 0;
}

static int module_load(struct hsm *h, const char *module)
{
	CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
	CK_RV rv;

	h->f = p11_kit_module_load(module, P11_KIT_MODULE_UNMANAGED);
	if (!h->f)
		return fail_text(-ENOENT, "cannot load PKCS#11 module %s: %s", module,
		                 p11_kit_message() ? p11_kit_message() : "unknown error");
	rv = h->f->C_Initialize(&args);
	if (rv != CKR_OK)
		return fail("C_Initialize", rv, -EIO);
	h->initialized = true;
	return 0;
}

int hsm_open(const char *module, const char *token, const char *pin_file, struct hsm **ret)
{
	struct hsm *h = calloc(1, sizeof(*h));
	struct hsm_session *s;
	int r;

	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->lock, NULL);
	if (pthread_key_create(&h->tls, NULL) != 0) {
		free(h);
		return -ENOMEM;
	}
	h->pin_file = strdup(pin_file);
	if (!h->pin_file) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = module_load(h, module)) < 0 || (r = token_find(h, token)) < 0 ||
	    (r = session_get(h, &s)) < 0)
		goto fail;
	/* This session stays open for the daemon's life: the login lasts while any session does. */
	if ((r = login(h, s->handle)) < 0)
		goto fail;
	*ret = h;
	return 0;
fail:
	hsm_close(h);
	return r;
}

void hsm_close(struct hsm *h)
{
	if (!h)
		return;
	while (h->sessions) {
		struct hsm_session *s = h->sessions;
		h->sessions = s->next;
		if (h->f)
			h->f->C_CloseSession(s->handle);
		free(s);
	}
	if (h->initialized)
		h->f->C_Finalize(NULL);
	if (h->f)
		p11_kit_module_release(h->f);
	pthread_key_delete(h->tls);
	pthread_mutex_destroy(&h->lock);
	free(h->pin_file);
	free(h);
}

int hsm_probe(struct hsm *h)
{
	struct hsm_session *s;
	CK_SESSION_INFO info;
	struct recovery rc = {0};
	CK_RV rv;
	int r;

	do {
		if ((r = session_get(h, &s)) < 0)
			return r;
		rv = h->f->C_GetSessionInfo(s->handle, &info);
		if (rv == CKR_OK && info.state != CKS_RW_USER_FUNCTIONS &&
		    info.state != CKS_RO_USER_FUNCTIONS)
			rv = CKR_USER_NOT_LOGGED_IN;
	} while ((r = recover(h, s, rv, "C_GetSessionInfo", &rc)) > 0);
	return r;
}

/* ---- objects ---- */

static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

/* DER of the named curves' OIDs, as CKA_EC_PARAMS wants them. */
static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

struct alg_info {
	CK_KEY_TYPE key_type;
	CK_MECHANISM_TYPE gen, sign;
	const uint8_t *params;
	size_t params_len;
	const char *crv;
	const EVP_MD *(*digest)(void);
};

static int alg_lookup(enum jws_alg alg, struct alg_info *ret)
{
	switch (alg) {
	case JWS_ES256:
		*ret = (struct alg_info){CKK_EC,    CKM_EC_KEY_PAIR_GEN, CKM_ECDSA,
		                         oid_p256,  sizeof(oid_p256),    "P-256",
		                         EVP_sha256};
		return 0;
	default:
		return fail_text(-EOPNOTSUPP, "algorithm %s is not supported yet",
		                 jws_alg_name(alg) ? jws_alg_name(alg) : "?");
	}
}

/* Finds the single object of class with CKA_ID id. */
static CK_RV find_by_id(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                        const uint8_t id[HSM_ID_LEN], CK_OBJECT_HANDLE *ret, CK_ULONG *ret_n)
{
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_ID, (void *)id, HSM_ID_LEN},
	};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n = 0;
	CK_RV rv;

	rv = h->f->C_FindObjectsInit(s, tmpl, 2);
	if (rv != CKR_OK)
		return rv;
	rv = h->f->C_FindObjects(s, found, 2, &n);
	h->f->C_FindObjectsFinal(s);
	if (rv == CKR_OK && n > 0)
		*ret = found[0];
	*ret_n = n;
	return rv;
}

/* The attributes SPEC §6 demands of a private key that may sign, read back from the token. */
static int check_private_attributes(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                                    const struct alg_info *ai)
{
	struct {
		CK_ATTRIBUTE_TYPE type;
		const char *name;
		CK_BBOOL want;
	} rules[] = {
	    {CKA_TOKEN, "CKA_TOKEN", CK_TRUE},
	    {CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE},
	    {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE},
	    {CKA_SIGN, "CKA_SIGN", CK_TRUE},
	    {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE},
	    {CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", CK_TRUE},
	    {CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", CK_TRUE},
	    {CKA_LOCAL, "CKA_LOCAL", CK_TRUE},
	    {CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE},
	    {CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE},
	    {CKA_DERIVE, "CKA_DERIVE", CK_FALSE},
	};
	CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
	CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof(kt)};
	CK_RV rv;

	rv = h->f->C_GetAttributeValue(s, obj, &a, 1);
	if (rv != CKR_OK)
		return fail("C_GetAttributeValue(CKA_KEY_TYPE)", rv, ckr_errno(rv));
	if (kt != ai->key_type)
		return fail_text(-EPERM, "key type 0x%lx does not match the algorithm",
		                 (unsigned long)kt);
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		CK_BBOOL v = !rules[i].want;
		CK_ATTRIBUTE b = {rules[i].type, &v, sizeof(v)};
		rv = h->f->C_GetAttributeValue(s, obj, &b, 1);
		if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
			return fail("C_GetAttributeValue", rv, ckr_errno(rv));
		if (rv != CKR_OK || v != rules[i].want)
			return fail_text(-EPERM, "private key has %s %s; it must never be used",
			                 rules[i].name, v ? "true" : "false");
	}
	return 0;
}

static CK_RV find_pair(struct hsm *h, CK_SESSION_HANDLE s, const uint8_t id[HSM_ID_LEN],
                       CK_OBJECT_HANDLE *priv, CK_OBJECT_HANDLE *pub, int *err)
{
	CK_ULONG n1 = 0, n2 = 0;
	CK_RV rv;

	*err = 0;
	rv = find_by_id(h, s, CKO_PRIVATE_KEY, id, priv, &n1);
	if (rv == CKR_OK)
		rv = find_by_id(h, s, CKO_PUBLIC_KEY, id, pub, &n2);
	if (rv == CKR_OK && (n1 != 1 || n2 != 1))
		*err = fail_text(n1 == 0 || n2 == 0 ? -ENOENT : -EEXIST,
		                 "key pair: %lu private and %lu public objects with this id",
		                 (unsigned long)n1, (unsigned long)n2);
	return rv;
}

int hsm_find_key(struct hsm *h, const uint8_t id[HSM_ID_LEN], enum jws_alg alg, struct hsm_key *ret)
{
	CK_OBJECT_HANDLE priv = 0, pub = 0;
	struct hsm_session *s;
	struct recovery rc = {0};
	struct alg_info ai;
	int r, err;
	CK_RV rv;

	if ((r = alg_lookup(alg, &ai)) < 0)
		return r;
	do {
		if ((r = session_get(h, &s)) < 0)
			return r;
		rv = find_pair(h, s->handle, id, &priv, &pub, &err);
	} while ((r = recover(h, s, rv, "C_FindObjects", &rc)) > 0);
	if (r < 0)
		return r;
	if (err < 0)
		return err;
	if ((r = check_private_attributes(h, s->handle, priv, &ai)) < 0)
		return r;
	memcpy(ret->id, id, HSM_ID_LEN);
	ret->alg = alg;
	atomic_store(&ret->priv, priv);
	ret->pub = pub;
	return 0;
}

int hsm_destroy_key(struct hsm *h, const uint8_t id[HSM_ID_LEN])
{
	CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
	struct hsm_session *s;
	int r;

	if ((r = session_get(h, &s)) < 0)
		return r;
	for (size_t i = 0; i < 2; i++) {
		CK_OBJECT_HANDLE obj;
		CK_ULONG n = 0;
		CK_RV rv = find_by_id(h, s->handle, classes[i], id, &obj, &n);
		if (rv == CKR_OK && n > 0)
			rv = h->f->C_DestroyObject(s->handle, obj);
		if ((r = check("C_DestroyObject", rv)) < 0)
			return r;
	}
	return 0;
}

static CK_RV generate_pair(struct hsm *h, CK_SESSION_HANDLE s, const struct alg_info *ai,
                           const char *label, const uint8_t id[HSM_ID_LEN], CK_OBJECT_HANDLE *pub,
                           CK_OBJECT_HANDLE *priv)
{
	CK_MECHANISM mech = {ai->gen, NULL, 0};
	CK_ULONG label_len = strlen(label);
	CK_ATTRIBUTE pub_tmpl[] = {
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},
	    {CKA_PRIVATE, (void *)&no, sizeof(no)},
	    {CKA_VERIFY, (void *)&yes, sizeof(yes)},
	    {CKA_ENCRYPT, (void *)&no, sizeof(no)},
	    {CKA_WRAP, (void *)&no, sizeof(no)},
	    {CKA_LABEL, (void *)label, label_len},
	    {CKA_ID, (void *)id, HSM_ID_LEN},
	    {CKA_EC_PARAMS, (void *)ai->params, ai->params_len},
	};
	CK_ATTRIBUTE priv_tmpl[] = {
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},     {CKA_PRIVATE, (void *)&yes, sizeof(yes)},
	    {CKA_SENSITIVE, (void *)&yes, sizeof(yes)}, {CKA_SIGN, (void *)&yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, (void *)&no, sizeof(no)}, {CKA_DECRYPT, (void *)&no, sizeof(no)},
	    {CKA_UNWRAP, (void *)&no, sizeof(no)},      {CKA_DERIVE, (void *)&no, sizeof(no)},
	    {CKA_LABEL, (void *)label, label_len},      {CKA_ID, (void *)id, HSM_ID_LEN},
	};

	return h->f->C_GenerateKeyPair(s, &mech, pub_tmpl, sizeof(pub_tmpl) / sizeof(pub_tmpl[0]),
	                               priv_tmpl, sizeof(priv_tmpl) / sizeof(priv_tmpl[0]), pub,
	                               priv);
}

int hsm_generate_key(struct hsm *h, enum jws_alg alg, const char *label, struct hsm_key *ret)
{
	CK_OBJECT_HANDLE pub = 0, priv = 0;
	uint8_t id[HSM_ID_LEN];
	struct hsm_session *s;
	struct recovery rc = {0};
	struct alg_info ai;
	CK_RV rv;
	int r;

	if ((r = alg_lookup(alg, &ai)) < 0)
		return r;
	if (RAND_bytes(id, sizeof(id)) != 1)
		return fail_text(-EIO, "no randomness for a key id");
	do {
		if ((r = session_get(h, &s)) < 0)
			return r;
		rv = generate_pair(h, s->handle, &ai, label, id, &pub, &priv);
	} while ((r = recover(h, s, rv, "C_GenerateKeyPair", &rc)) > 0);
	if (r < 0)
		return r;
	r = check_private_attributes(h, s->handle, priv, &ai);
	if (r < 0) {
		char why[sizeof(last_error)];
		memcpy(why, last_error, sizeof(why));
		hsm_destroy_key(h, id);
		memcpy(last_error, why, sizeof(why));
		return r;
	}
	memcpy(ret->id, id, HSM_ID_LEN);
	ret->alg = alg;
	atomic_store(&ret->priv, priv);
	ret->pub = pub;
	return 0;
}

/* Reads a variable-length attribute into a new buffer. */
static CK_RV get_bytes(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                       CK_ATTRIBUTE_TYPE type, uint8_t **ret, size_t *ret_len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	CK_RV rv = h->f->C_GetAttributeValue(s, obj, &a, 1);

	if (rv != CKR_OK)
		return rv;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > 1 << 20)
		return CKR_ATTRIBUTE_VALUE_INVALID;
	a.pValue = malloc(a.ulValueLen + 1);
	if (!a.pValue)
		return CKR_HOST_MEMORY;
	rv = h->f->C_GetAttributeValue(s, obj, &a, 1);
	if (rv != CKR_OK) {
		free(a.pValue);
		return rv;
	}
	((uint8_t *)a.pValue)[a.ulValueLen] = 0;
	*ret = a.pValue;
	*ret_len = a.ulValueLen;
	return CKR_OK;
}

int hsm_public_jwk(struct hsm *h, const struct hsm_key *key, struct jwk *ret)
{
	struct hsm_session *s;
	struct recovery rc = {0};
	struct alg_info ai;
	uint8_t *point = NULL;
	size_t len = 0;
	CK_RV rv;
	int r;

	if ((r = alg_lookup(key->alg, &ai)) < 0)
		return r;
	do {
		if ((r = session_get(h, &s)) < 0)
			return r;
		rv = get_bytes(h, s->handle, key->pub, CKA_EC_POINT, &point, &len);
	} while ((r = recover(h, s, rv, "C_GetAttributeValue(CKA_EC_POINT)", &rc)) > 0);
	if (r < 0)
		return r;
	r = jwk_from_ec_point(ai.crv, point, len, ret);
	free(point);
	if (r < 0)
		return fail_text(r, "the token's public key is not a valid %s point", ai.crv);
	return 0;
}

/* ---- records ---- */

static CK_RV find_records(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE **ret,
                          CK_ULONG *ret_n)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_APPLICATION, (void *)HSM_APPLICATION, strlen(HSM_APPLICATION)},
	};
	CK_OBJECT_HANDLE *all = NULL;
	CK_ULONG n = 0, got = 0;
	CK_RV rv;

	rv = h->f->C_FindObjectsInit(s, tmpl, 2);
	if (rv != CKR_OK)
		return rv;
	do {
		CK_OBJECT_HANDLE *grown = realloc(all, (n + 64) * sizeof(*all));
		if (!grown) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		all = grown;
		rv = h->f->C_FindObjects(s, all + n, 64, &got);
		n += got;
	} while (rv == CKR_OK && got == 64);
	h->f->C_FindObjectsFinal(s);
	if (rv != CKR_OK) {
		free(all);
		return rv;
	}
	*ret = all;
	*ret_n = n;
	return CKR_OK;
}

void hsm_records_free(struct hsm_record *records, size_t n)
{
	for (size_t i = 0; records && i < n; i++) {
		free(records[i].label);
		free(records[i].value);
	}
	free(records);
}

static CK_RV read_records(struct hsm *h, CK_SESSION_HANDLE s, struct hsm_record **ret,
                          size_t *ret_n)
{
	CK_OBJECT_HANDLE *handles = NULL;
	struct hsm_record *recs;
	CK_ULONG n = 0;
	CK_RV rv = find_records(h, s, &handles, &n);

	if (rv != CKR_OK)
		return rv;
	recs = calloc(n ? n : 1, sizeof(*recs));
	if (!recs) {
		free(handles);
		return CKR_HOST_MEMORY;
	}
	for (CK_ULONG i = 0; i < n && rv == CKR_OK; i++) {
		size_t llen;
		recs[i].handle = handles[i];
		rv = get_bytes(h, s, handles[i], CKA_LABEL, (uint8_t **)&recs[i].label, &llen);
		if (rv == CKR_OK)
			rv = get_bytes(h, s, handles[i], CKA_VALUE, (uint8_t **)&recs[i].value,
			               &recs[i].len);
	}
	free(handles);
	if (rv != CKR_OK) {
		hsm_records_free(recs, n);
		return rv;
	}
	*ret = recs;
	*ret_n = n;
	return CKR_OK;
}

int hsm_list_records(struct hsm *h, struct hsm_record **ret, size_t *ret_n)
{
	struct hsm_session *s;
	struct recovery rc = {0};
	CK_RV rv;
	int r;

	do {
		if ((r = session_get(h, &s)) < 0)
			return r;
		rv = read_records(h, s->handle, ret, ret_n);
	} while ((r = recover(h, s, rv, "reading records", &rc)) > 0);
	return r;
}

int hsm_store_record(struct hsm *h, const char *label, const char *value, size_t len)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},
	    {CKA_PRIVATE, (void *)&yes, sizeof(yes)},
	    {CKA_APPLICATION, (void *)HSM_APPLICATION, strlen(HSM_APPLICATION)},
	    {CKA_LABEL, (void *)label, strlen(label)},
	    {CKA_VALUE, (void *)value, len},
	};
	CK_OBJECT_HANDLE obj;
	struct hsm_session *s;
	struct recovery rc = {0};
	CK_RV rv;
	int r;

	do {
		if ((r = session_get(h, &s)) < 0)
			return r;
		rv = h->f->C_CreateObject(s->handle, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &obj);
	} while ((r = recover(h, s, rv, "C_CreateObject", &rc)) > 0);
	return r;
}

/* ---- signing ---- */

static CK_RV sign_once(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
                       const struct alg_info *ai, const uint8_t *digest, size_t dlen, uint8_t *sig,
                       CK_ULONG *sig_len)
{
	CK_MECHANISM mech = {ai->sign, NULL, 0};
	CK_RV rv = h->f->C_SignInit(s, &mech, key);

	if (rv != CKR_OK)
		return rv;
	return h->f->C_Sign(s, (CK_BYTE_PTR)digest, dlen, sig, sig_len);
}

int hsm_sign(struct hsm *h, struct hsm_key *key, const uint8_t *input, size_t len, uint8_t *sig,
             size_t sig_size, size_t *ret_len)
{
	uint8_t digest[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	struct hsm_session *s;
	struct alg_info ai;
	bool refound = false;
	CK_ULONG slen;
	int r;

	if ((r = alg_lookup(key->alg, &ai)) < 0)
		return r;
	if (EVP_Digest(input, len, digest, &dlen, ai.digest(), NULL) != 1)
		return fail_text(-EIO, "digest failed");
	for (;;) {
		struct recovery rc = {0};
		CK_RV rv;
		do {
			if ((r = session_get(h, &s)) < 0)
				return r;
			slen = sig_size;
			rv = sign_once(h, s->handle, atomic_load(&key->priv), &ai, digest, dlen,
			               sig, &slen);
		} while ((r = recover(h, s, rv, "C_Sign", &rc)) > 0);
		if (r != -ESTALE || refound)
			break;
		/* The token forgot our handle (re-inserted, reloaded): find the key again. */
		refound = true;
		struct hsm_key fresh;
		if ((r = hsm_find_key(h, key->id, key->alg, &fresh)) < 0)
			return r;
		atomic_store(&key->priv, atomic_load(&fresh.priv));
	}
	if (r < 0)
		return r;
	if (jws_ecdsa_sig_len(key->alg) && slen != jws_ecdsa_sig_len(key->alg))
		return fail_text(-EIO, "C_Sign returned %lu bytes, not an R||S signature",
		                 (unsigned long)slen);
	*ret_len = slen;
	return 0;
}

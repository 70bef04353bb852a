/* p11probe: an integration-test tool that logs in to a PKCS#11 token and prints every object it
 * holds as one JSON object per line, so that the tests can check how tokensignd stored its keys.
 *
 * Usage: p11probe MODULE TOKEN_LABEL PIN_FILE
 *
 * Private keys: class, label, id (hex), key_type, the storage and usage booleans, and value_rv,
 * the CKR name that C_GetAttributeValue(CKA_VALUE) returned (a sensitive key answers
 * CKR_ATTRIBUTE_SENSITIVE). Public keys: label, id, key_type, ec_params and ec_point (hex),
 * and the booleans token, private, local and verify.
 * Data objects: application, label and value (as a string). Other objects: class only.
 * Exit status: 0 on success, 1 on any PKCS#11 or usage error (message on stderr). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "p11slot.h"

static CK_FUNCTION_LIST *p11;

static const char *rv_name(CK_RV rv)
{
	static char buf[32];

	switch (rv) {
	case CKR_OK:
		return "CKR_OK";
	case CKR_ATTRIBUTE_SENSITIVE:
		return "CKR_ATTRIBUTE_SENSITIVE";
	case CKR_ATTRIBUTE_TYPE_INVALID:
		return "CKR_ATTRIBUTE_TYPE_INVALID";
	case CKR_BUFFER_TOO_SMALL:
		return "CKR_BUFFER_TOO_SMALL";
	case CKR_PIN_INCORRECT:
		return "CKR_PIN_INCORRECT";
	case CKR_USER_NOT_LOGGED_IN:
		return "CKR_USER_NOT_LOGGED_IN";
	case CKR_GENERAL_ERROR:
		return "CKR_GENERAL_ERROR";
	case CKR_FUNCTION_FAILED:
		return "CKR_FUNCTION_FAILED";
	case CKR_ARGUMENTS_BAD:
		return "CKR_ARGUMENTS_BAD";
	case CKR_OBJECT_HANDLE_INVALID:
		return "CKR_OBJECT_HANDLE_INVALID";
	case CKR_TOKEN_NOT_PRESENT:
		return "CKR_TOKEN_NOT_PRESENT";
	case CKR_DEVICE_ERROR:
		return "CKR_DEVICE_ERROR";
	default:
		snprintf(buf, sizeof(buf), "0x%08lx", (unsigned long)rv);
		return buf;
	}
}

static void die(const char *what, CK_RV rv)
{
	fprintf(stderr, "p11probe: %s: %s\n", what, rv_name(rv));
	exit(1);
}

/* Prints s (n bytes) as a JSON string; bytes that are not printable ASCII are \u00XX escaped so
 * the output is always valid JSON whatever the token holds. */
static void put_json_string(const unsigned char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void put_hex(const unsigned char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++)
		printf("%02x", s[i]);
	putchar('"');
}

/* Reads a variable-length attribute. Returns a malloc'd buffer (NUL-terminated for
 * convenience) or NULL when the attribute is absent or unreadable. */
static unsigned char *get_attr(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                               size_t *ret_len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	unsigned char *buf;

	if (p11->C_GetAttributeValue(s, o, &a, 1) != CKR_OK ||
	    a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return NULL;
	buf = malloc(a.ulValueLen + 1);
	if (!buf)
		die("out of memory", CKR_HOST_MEMORY);
	a.pValue = buf;
	if (p11->C_GetAttributeValue(s, o, &a, 1) != CKR_OK) {
		free(buf);
		return NULL;
	}
	buf[a.ulValueLen] = '\0';
	*ret_len = a.ulValueLen;
	return buf;
}

static void put_attr_string(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, const char *name,
                            CK_ATTRIBUTE_TYPE type)
{
	size_t n = 0;
	unsigned char *v = get_attr(s, o, type, &n);

	printf(",\"%s\":", name);
	if (v)
		put_json_string(v, n);
	else
		fputs("null", stdout);
	free(v);
}

static void put_attr_hex(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, const char *name,
                         CK_ATTRIBUTE_TYPE type)
{
	size_t n = 0;
	unsigned char *v = get_attr(s, o, type, &n);

	printf(",\"%s\":", name);
	if (v)
		put_hex(v, n);
	else
		fputs("null", stdout);
	free(v);
}

static void put_attr_bool(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, const char *name,
                          CK_ATTRIBUTE_TYPE type)
{
	CK_BBOOL b = CK_FALSE;
	CK_ATTRIBUTE a = {type, &b, sizeof(b)};

	printf(",\"%s\":", name);
	if (p11->C_GetAttributeValue(s, o, &a, 1) == CKR_OK && a.ulValueLen == sizeof(b))
		fputs(b ? "true" : "false", stdout);
	else
		fputs("null", stdout);
}

static void put_attr_ulong(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, const char *name,
                           CK_ATTRIBUTE_TYPE type)
{
	CK_ULONG v = 0;
	CK_ATTRIBUTE a = {type, &v, sizeof(v)};

	printf(",\"%s\":", name);
	if (p11->C_GetAttributeValue(s, o, &a, 1) == CKR_OK && a.ulValueLen == sizeof(v))
		printf("%lu", (unsigned long)v);
	else
		fputs("null", stdout);
}

static void probe_object(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o)
{
	CK_OBJECT_CLASS cls = (CK_OBJECT_CLASS)-1;
	CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};
	CK_RV rv;

	rv = p11->C_GetAttributeValue(s, o, &a, 1);
	/* The daemon may destroy an object between our listing and this read: it is gone. */
	if (rv == CKR_OBJECT_HANDLE_INVALID)
		return;
	if (rv != CKR_OK)
		die("C_GetAttributeValue(CKA_CLASS)", rv);

	switch (cls) {
	case CKO_PRIVATE_KEY: {
		CK_ATTRIBUTE v = {CKA_VALUE, NULL, 0};
		fputs("{\"class\":\"private_key\"", stdout);
		put_attr_string(s, o, "label", CKA_LABEL);
		put_attr_hex(s, o, "id", CKA_ID);
		put_attr_ulong(s, o, "key_type", CKA_KEY_TYPE);
		put_attr_bool(s, o, "token", CKA_TOKEN);
		put_attr_bool(s, o, "private", CKA_PRIVATE);
		put_attr_bool(s, o, "sensitive", CKA_SENSITIVE);
		put_attr_bool(s, o, "extractable", CKA_EXTRACTABLE);
		put_attr_bool(s, o, "never_extractable", CKA_NEVER_EXTRACTABLE);
		put_attr_bool(s, o, "always_sensitive", CKA_ALWAYS_SENSITIVE);
		put_attr_bool(s, o, "local", CKA_LOCAL);
		put_attr_bool(s, o, "sign", CKA_SIGN);
		put_attr_bool(s, o, "decrypt", CKA_DECRYPT);
		put_attr_bool(s, o, "unwrap", CKA_UNWRAP);
		put_attr_bool(s, o, "derive", CKA_DERIVE);
		rv = p11->C_GetAttributeValue(s, o, &v, 1);
		printf(",\"value_rv\":\"%s\"}\n", rv_name(rv));
		break;
	}
	case CKO_PUBLIC_KEY:
		fputs("{\"class\":\"public_key\"", stdout);
		put_attr_string(s, o, "label", CKA_LABEL);
		put_attr_hex(s, o, "id", CKA_ID);
		put_attr_ulong(s, o, "key_type", CKA_KEY_TYPE);
		put_attr_hex(s, o, "ec_params", CKA_EC_PARAMS);
		put_attr_hex(s, o, "ec_point", CKA_EC_POINT);
		put_attr_bool(s, o, "token", CKA_TOKEN);
		put_attr_bool(s, o, "private", CKA_PRIVATE);
		put_attr_bool(s, o, "local", CKA_LOCAL);
		put_attr_bool(s, o, "verify", CKA_VERIFY);
		puts("}");
		break;
	case CKO_DATA:
		fputs("{\"class\":\"data\"", stdout);
		put_attr_string(s, o, "application", CKA_APPLICATION);
		put_attr_string(s, o, "label", CKA_LABEL);
		put_attr_string(s, o, "value", CKA_VALUE);
		put_attr_bool(s, o, "token", CKA_TOKEN);
		put_attr_bool(s, o, "private", CKA_PRIVATE);
		puts("}");
		break;
	default:
		printf("{\"class\":%lu", (unsigned long)cls);
		put_attr_string(s, o, "label", CKA_LABEL);
		puts("}");
		break;
	}
}

static char *read_pin(const char *path)
{
	FILE *f = fopen(path, "re");
	char buf[512];
	size_t n;

	if (!f) {
		perror(path);
		exit(1);
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	return strdup(buf);
}

int main(int argc, char **argv)
{
	CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
	CK_SLOT_ID slot = 0;
	CK_ULONG n_found;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE batch[64], *all = NULL;
	size_t n_all = 0;
	char *pin;
	CK_RV rv;

	if (argc != 4) {
		fprintf(stderr, "usage: %s MODULE TOKEN_LABEL PIN_FILE\n", argv[0]);
		return 2;
	}
	p11 = p11_kit_module_load(argv[1], P11_KIT_MODULE_UNMANAGED);
	if (!p11) {
		fprintf(stderr, "p11probe: cannot load %s: %s\n", argv[1], p11_kit_message());
		return 1;
	}
	rv = p11->C_Initialize(&init);
	if (rv != CKR_OK)
		die("C_Initialize", rv);
	rv = p11_slot_by_label(p11, argv[2], &slot);
	if (rv == CKR_TOKEN_NOT_PRESENT) {
		fprintf(stderr, "p11probe: no token labelled '%s'\n", argv[2]);
		return 1;
	}
	if (rv != CKR_OK)
		die("C_GetSlotList", rv);
	rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK)
		die("C_OpenSession", rv);
	pin = read_pin(argv[3]);
	rv = p11->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		die("C_Login", rv);
	free(pin);

	/* Collect every handle first, then read attributes outside the find operation. */
	rv = p11->C_FindObjectsInit(s, NULL, 0);
	if (rv != CKR_OK)
		die("C_FindObjectsInit", rv);
	for (;;) {
		CK_OBJECT_HANDLE *grown;
		rv = p11->C_FindObjects(s, batch, 64, &n_found);
		if (rv != CKR_OK)
			die("C_FindObjects", rv);
		if (n_found == 0)
			break;
		grown = realloc(all, (n_all + n_found) * sizeof(*all));
		if (!grown)
			die("out of memory", CKR_HOST_MEMORY);
		all = grown;
		memcpy(all + n_all, batch, n_found * sizeof(*all));
		n_all += n_found;
	}
	rv = p11->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		die("C_FindObjectsFinal", rv);
	for (size_t i = 0; i < n_all; i++)
		probe_object(s, all[i]);
	free(all);
	p11->C_Logout(s);
	p11->C_CloseSession(s);
	p11->C_Finalize(NULL);
	p11_kit_module_release(p11);
	if (fflush(stdout) != 0)
		return 1;
	return 0;
}

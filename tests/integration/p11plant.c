/* p11plant: an integration-test tool that plants objects in a PKCS#11 token the way an attacker
 * (any process that can open the token, without the PIN) or a careless operator (logged in)
 * would, so that test_custody.py can check what tokensignd makes of them.
 *
 * Usage: p11plant MODULE TOKEN_LABEL [--login PIN_FILE] COMMAND ARGS...
 *
 * Without --login the session is a public read/write session (no C_Login): it can make and see
 * public objects only. With --login the PIN is read from PIN_FILE (never from argv).
 *
 *   data --label L --application A --value-file F [--private]
 *       a CKO_DATA token object with CKA_VALUE the bytes of F          -> {"handle":N}
 *   ec-pair --label L --id HEX [--private-pub] [--extractable] [--no-sensitive]
 *       a P-256 key pair made in the token (C_GenerateKeyPair) with the templates of tokensignd
 *       before issue 11 (so, with its label and records, exactly a key of that release): the
 *       private half CKA_PRIVATE (this needs --login), sensitive, not extractable, sign only;
 *       the public half public unless --private-pub, verify only. --extractable and
 *       --no-sensitive spoil the private half.                 -> {"public":N,"private":N}
 *   ec-pub --label L --id HEX [--private] (--copy-of-id HEX2 | --point DER_HEX)
 *       a P-256 CKO_PUBLIC_KEY (C_CreateObject) with the CKA_EC_POINT of the public key whose
 *       CKA_ID is HEX2 (one this session can see), or the given DER CKA_EC_POINT
 *                                                                -> {"handle":N}
 *   count-id HEX
 *       how many objects this session sees with CKA_ID HEX, per class
 *                                  -> {"private_key":N,"public_key":N,"data":N,"other":N}
 *
 * Handles are this process's: they only say that an object was made.
 * Exit status: 0 on success, 1 on any PKCS#11 error, 2 on a usage error (message on stderr). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "p11slot.h"

#define MAX_VALUE 8192
#define MAX_FOUND 256

/* DER of the OID prime256v1 (1.2.840.10045.3.1.7): the only curve this tool makes. */
static const unsigned char p256_params[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                            0xce, 0x3d, 0x03, 0x01, 0x07};
static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

static CK_FUNCTION_LIST *p11;
static CK_SESSION_HANDLE session;

/* The options of every command; each command reads the ones it documents. */
struct opts {
	const char *arg; /* the one positional argument (count-id's HEX) */
	const char *label, *application, *value_file, *id, *copy_of_id, *point;
	bool private_obj, private_pub, extractable, no_sensitive;
};

struct bytes {
	unsigned char b[MAX_VALUE];
	CK_ULONG n;
};

/* The names of the answers a test is likely to meet; others are printed in hex. */
static const struct {
	CK_RV rv;
	const char *name;
} rv_names[] = {
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
    {CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY"},
    {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"},
    {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"},
    {CKR_ATTRIBUTE_READ_ONLY, "CKR_ATTRIBUTE_READ_ONLY"},
    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
};

static _Noreturn void die(const char *what, CK_RV rv)
{
	for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
		if (rv_names[i].rv == rv) {
			fprintf(stderr, "p11plant: %s: %s\n", what, rv_names[i].name);
			exit(1);
		}
	fprintf(stderr, "p11plant: %s: CKR 0x%08lx\n", what, (unsigned long)rv);
	exit(1);
}

static _Noreturn void usage_error(const char *msg)
{
	fprintf(stderr,
	        "p11plant: %s\nusage: p11plant MODULE TOKEN_LABEL [--login PIN_FILE] COMMAND "
	        "ARGS...\n  (see the comment at the top of p11plant.c)\n",
	        msg);
	exit(2);
}

static void check(const char *what, CK_RV rv)
{
	if (rv != CKR_OK)
		die(what, rv);
}

static void hex_decode(const char *hex, struct bytes *out)
{
	size_t n = strlen(hex);

	if (n == 0 || n % 2 || n / 2 > sizeof(out->b))
		usage_error("a hex value must be a non-empty even number of hex digits");
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			usage_error("not a hex value");
		out->b[i] = (unsigned char)v;
	}
	out->n = n / 2;
}

static void read_file(const char *path, struct bytes *out)
{
	FILE *f = fopen(path, "rbe");

	if (!f) {
		perror(path);
		exit(1);
	}
	out->n = fread(out->b, 1, sizeof(out->b), f);
	if (ferror(f) || !feof(f)) {
		fprintf(stderr, "p11plant: %s: unreadable or over %d bytes\n", path, MAX_VALUE);
		exit(1);
	}
	fclose(f);
}

/* Logs in with the PIN of path (one trailing newline dropped), then wipes it. */
static void login(const char *path)
{
	struct bytes pin;
	CK_RV rv;

	read_file(path, &pin);
	if (pin.n > 0 && pin.b[pin.n - 1] == '\n')
		pin.n--;
	rv = p11->C_Login(session, CKU_USER, pin.b, pin.n);
	explicit_bzero(pin.b, sizeof(pin.b));
	if (rv != CKR_USER_ALREADY_LOGGED_IN)
		check("C_Login", rv);
}

static void open_token(const char *module, const char *label)
{
	CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
	CK_SLOT_ID slot;
	CK_RV rv;

	p11 = p11_kit_module_load(module, P11_KIT_MODULE_UNMANAGED);
	if (!p11) {
		fprintf(stderr, "p11plant: cannot load %s: %s\n", module, p11_kit_message());
		exit(1);
	}
	check("C_Initialize", p11->C_Initialize(&init));
	rv = p11_slot_by_label(p11, label, &slot);
	if (rv == CKR_TOKEN_NOT_PRESENT) {
		fprintf(stderr, "p11plant: no token labelled '%s'\n", label);
		exit(1);
	}
	check("C_GetSlotList", rv);
	check("C_OpenSession",
	      p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &session));
}

/* The objects of class cls (or of any class when cls is NULL) with CKA_ID id. */
static CK_ULONG find_by_id(const struct bytes *id, const CK_OBJECT_CLASS *cls,
                           CK_OBJECT_HANDLE found[MAX_FOUND])
{
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_ID, (void *)id->b, id->n},
	    {CKA_CLASS, (void *)cls, sizeof(*cls)},
	};
	CK_ULONG n = 0;

	check("C_FindObjectsInit", p11->C_FindObjectsInit(session, tmpl, cls ? 2 : 1));
	check("C_FindObjects", p11->C_FindObjects(session, found, MAX_FOUND, &n));
	check("C_FindObjectsFinal", p11->C_FindObjectsFinal(session));
	return n;
}

static void require(const char *value, const char *option)
{
	if (!value) {
		char msg[64];
		snprintf(msg, sizeof(msg), "%s is required", option);
		usage_error(msg);
	}
}

static void cmd_data(const struct opts *o)
{
	static struct bytes value;
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_OBJECT_HANDLE obj;

	require(o->label, "--label");
	require(o->application, "--application");
	require(o->value_file, "--value-file");
	read_file(o->value_file, &value);
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},
	    {CKA_PRIVATE, (void *)(o->private_obj ? &yes : &no), sizeof(CK_BBOOL)},
	    {CKA_APPLICATION, (void *)o->application, strlen(o->application)},
	    {CKA_LABEL, (void *)o->label, strlen(o->label)},
	    {CKA_VALUE, value.b, value.n},
	};
	check("C_CreateObject",
	      p11->C_CreateObject(session, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &obj));
	printf("{\"handle\":%lu}\n", (unsigned long)obj);
}

static void cmd_ec_pair(const struct opts *o)
{
	CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	struct bytes id;
	CK_OBJECT_HANDLE pub, priv;

	require(o->label, "--label");
	require(o->id, "--id");
	hex_decode(o->id, &id);
	CK_ATTRIBUTE pub_tmpl[] = {
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},
	    {CKA_PRIVATE, (void *)(o->private_pub ? &yes : &no), sizeof(CK_BBOOL)},
	    {CKA_VERIFY, (void *)&yes, sizeof(yes)},
	    {CKA_ENCRYPT, (void *)&no, sizeof(no)},
	    {CKA_WRAP, (void *)&no, sizeof(no)},
	    {CKA_LABEL, (void *)o->label, strlen(o->label)},
	    {CKA_ID, id.b, id.n},
	    {CKA_EC_PARAMS, (void *)p256_params, sizeof(p256_params)},
	};
	CK_ATTRIBUTE priv_tmpl[] = {
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},
	    {CKA_PRIVATE, (void *)&yes, sizeof(yes)},
	    {CKA_SENSITIVE, (void *)(o->no_sensitive ? &no : &yes), sizeof(CK_BBOOL)},
	    {CKA_EXTRACTABLE, (void *)(o->extractable ? &yes : &no), sizeof(CK_BBOOL)},
	    {CKA_SIGN, (void *)&yes, sizeof(yes)},
	    {CKA_DECRYPT, (void *)&no, sizeof(no)},
	    {CKA_UNWRAP, (void *)&no, sizeof(no)},
	    {CKA_DERIVE, (void *)&no, sizeof(no)},
	    {CKA_LABEL, (void *)o->label, strlen(o->label)},
	    {CKA_ID, id.b, id.n},
	};
	check("C_GenerateKeyPair",
	      p11->C_GenerateKeyPair(session, &mech, pub_tmpl,
	                             sizeof(pub_tmpl) / sizeof(pub_tmpl[0]), priv_tmpl,
	                             sizeof(priv_tmpl) / sizeof(priv_tmpl[0]), &pub, &priv));
	printf("{\"public\":%lu,\"private\":%lu}\n", (unsigned long)pub, (unsigned long)priv);
}

/* The CKA_EC_POINT of the first public key with CKA_ID hex that this session sees. */
static void ec_point_of(const char *hex, struct bytes *ret)
{
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_OBJECT_HANDLE found[MAX_FOUND];
	struct bytes id;
	CK_ATTRIBUTE a = {CKA_EC_POINT, ret->b, sizeof(ret->b)};

	hex_decode(hex, &id);
	if (find_by_id(&id, &cls, found) == 0) {
		fprintf(stderr, "p11plant: no public key with CKA_ID %s in this session\n", hex);
		exit(1);
	}
	check("C_GetAttributeValue(CKA_EC_POINT)",
	      p11->C_GetAttributeValue(session, found[0], &a, 1));
	ret->n = a.ulValueLen;
}

static void cmd_ec_pub(const struct opts *o)
{
	static struct bytes point;
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_KEY_TYPE kt = CKK_EC;
	struct bytes id;
	CK_OBJECT_HANDLE obj;

	require(o->label, "--label");
	require(o->id, "--id");
	if (!o->copy_of_id == !o->point)
		usage_error("ec-pub needs exactly one of --copy-of-id and --point");
	hex_decode(o->id, &id);
	if (o->copy_of_id)
		ec_point_of(o->copy_of_id, &point);
	else
		hex_decode(o->point, &point);
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},
	    {CKA_PRIVATE, (void *)(o->private_obj ? &yes : &no), sizeof(CK_BBOOL)},
	    {CKA_VERIFY, (void *)&yes, sizeof(yes)},
	    {CKA_LABEL, (void *)o->label, strlen(o->label)},
	    {CKA_ID, id.b, id.n},
	    {CKA_EC_PARAMS, (void *)p256_params, sizeof(p256_params)},
	    {CKA_EC_POINT, point.b, point.n},
	};
	check("C_CreateObject",
	      p11->C_CreateObject(session, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &obj));
	printf("{\"handle\":%lu}\n", (unsigned long)obj);
}

static void cmd_count_id(const struct opts *o)
{
	CK_OBJECT_HANDLE found[MAX_FOUND];
	struct bytes id;
	unsigned long priv = 0, pub = 0, data = 0, other = 0;
	CK_ULONG n;

	require(o->arg, "HEX");
	hex_decode(o->arg, &id);
	n = find_by_id(&id, NULL, found);
	for (CK_ULONG i = 0; i < n; i++) {
		CK_OBJECT_CLASS cls = (CK_OBJECT_CLASS)-1;
		CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};
		check("C_GetAttributeValue(CKA_CLASS)",
		      p11->C_GetAttributeValue(session, found[i], &a, 1));
		if (cls == CKO_PRIVATE_KEY)
			priv++;
		else if (cls == CKO_PUBLIC_KEY)
			pub++;
		else if (cls == CKO_DATA)
			data++;
		else
			other++;
	}
	printf("{\"private_key\":%lu,\"public_key\":%lu,\"data\":%lu,\"other\":%lu}\n", priv, pub,
	       data, other);
}

/* Options from argv[i..]: every option but the flags takes the next argument. */
static void parse_opts(int argc, char **argv, int i, struct opts *o)
{
	struct {
		const char *name;
		const char **value;
		bool *flag;
	} table[] = {
	    {"--label", &o->label, NULL},
	    {"--application", &o->application, NULL},
	    {"--value-file", &o->value_file, NULL},
	    {"--id", &o->id, NULL},
	    {"--copy-of-id", &o->copy_of_id, NULL},
	    {"--point", &o->point, NULL},
	    {"--private", NULL, &o->private_obj},
	    {"--private-pub", NULL, &o->private_pub},
	    {"--extractable", NULL, &o->extractable},
	    {"--no-sensitive", NULL, &o->no_sensitive},
	};

	memset(o, 0, sizeof(*o));
	for (; i < argc; i++) {
		size_t j;
		for (j = 0; j < sizeof(table) / sizeof(table[0]); j++)
			if (strcmp(argv[i], table[j].name) == 0)
				break;
		if (j == sizeof(table) / sizeof(table[0])) {
			if (argv[i][0] == '-' || o->arg)
				usage_error("unknown option or extra argument");
			o->arg = argv[i];
			continue;
		}
		if (table[j].flag) {
			*table[j].flag = true;
			continue;
		}
		if (i + 1 >= argc)
			usage_error("an option lacks its value");
		*table[j].value = argv[++i];
	}
}

static const struct command {
	const char *name;
	void (*run)(const struct opts *o);
} commands[] = {
    {"data", cmd_data},
    {"ec-pair", cmd_ec_pair},
    {"ec-pub", cmd_ec_pub},
    {"count-id", cmd_count_id},
};

int main(int argc, char **argv)
{
	const struct command *cmd = NULL;
	const char *pin_file = NULL;
	struct opts o;
	int i = 3;

	if (argc > 5 && strcmp(argv[3], "--login") == 0) {
		pin_file = argv[4];
		i = 5;
	}
	if (i >= argc)
		usage_error("no command");
	for (size_t j = 0; j < sizeof(commands) / sizeof(commands[0]); j++)
		if (strcmp(argv[i], commands[j].name) == 0)
			cmd = &commands[j];
	if (!cmd)
		usage_error("unknown command");
	parse_opts(argc, argv, i + 1, &o);
	open_token(argv[1], argv[2]);
	if (pin_file)
		login(pin_file);
	cmd->run(&o);
	if (pin_file)
		p11->C_Logout(session);
	p11->C_CloseSession(session);
	p11->C_Finalize(NULL);
	p11_kit_module_release(p11);
	return fflush(stdout) == 0 ? 0 : 1;
}

/* p11coherence: shows what `tokensign-hsm --touch-token` is for (docs/design.md, "Several
 * instances on one token"), on a real token.
 *
 * Usage: p11coherence MODULE TOKEN_LABEL TOUCH_PROGRAM
 *        p11coherence --create MODULE TOKEN_LABEL NAME [APPLICATION]
 *
 * --create adds one public data object labelled NAME, of CKA_APPLICATION APPLICATION (default
 * p11coherence): the other process of the run, or a test's planted object.
 *
 * With its own module instance and a public read/write session (no login), it reads the token's
 * objects, lets another process (itself, --create) add a public data object, then adds one of its
 * own, and counts the other process's object: SoftHSM's file store does not show it, because our
 * write moved the token's change counter past the other's and we took that value as seen. Then
 * it runs TOUCH_PROGRAM --touch-token (tokensign-hsm) and counts again. Prints one JSON object:
 * {"seen_after_own_write": N, "seen_after_touch": N}, and removes the objects it made.
 * Exit status: 0 when it ran (whatever it saw), 1 on any PKCS#11 or usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "p11slot.h"

#define APPLICATION "p11coherence"

static CK_FUNCTION_LIST *p11;
static CK_SESSION_HANDLE session;

static void die(const char *what, CK_RV rv)
{
	fprintf(stderr, "p11coherence: %s: 0x%08lx\n", what, (unsigned long)rv);
	exit(1);
}

static void open_token(const char *module, const char *label)
{
	CK_SLOT_ID slot;
	CK_RV rv;

	p11 = p11_kit_module_load(module, P11_KIT_MODULE_UNMANAGED);
	if (!p11) {
		fprintf(stderr, "p11coherence: cannot load %s\n", module);
		exit(1);
	}
	if ((rv = p11->C_Initialize(NULL)) != CKR_OK)
		die("C_Initialize", rv);
	rv = p11_slot_by_label(p11, label, &slot);
	if (rv == CKR_TOKEN_NOT_PRESENT) {
		fprintf(stderr, "p11coherence: no token labelled '%s'\n", label);
		exit(1);
	}
	if (rv != CKR_OK)
		die("C_GetSlotList", rv);
	rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &session);
	if (rv != CKR_OK)
		die("C_OpenSession", rv);
}

static void close_token(void)
{
	p11->C_CloseSession(session);
	p11->C_Finalize(NULL);
}

/* Our public data objects labelled name (every one of ours when name is NULL). */
static CK_ULONG find(const char *name, CK_OBJECT_HANDLE *objs, CK_ULONG max)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_APPLICATION, APPLICATION, strlen(APPLICATION)},
	    {CKA_LABEL, (void *)name, name ? strlen(name) : 0},
	};
	CK_ULONG n = 0;
	CK_RV rv;

	if ((rv = p11->C_FindObjectsInit(session, tmpl, name ? 3 : 2)) != CKR_OK)
		die("C_FindObjectsInit", rv);
	if ((rv = p11->C_FindObjects(session, objs, max, &n)) != CKR_OK)
		die("C_FindObjects", rv);
	p11->C_FindObjectsFinal(session);
	return n;
}

static void create(const char *name, const char *application)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_PRIVATE, &no, sizeof(no)},
	    {CKA_APPLICATION, (void *)application, strlen(application)},
	    {CKA_LABEL, (void *)name, strlen(name)},
	};
	CK_OBJECT_HANDLE obj;
	CK_RV rv;

	if ((rv = p11->C_CreateObject(session, tmpl, 5, &obj)) != CKR_OK)
		die("C_CreateObject", rv);
}

static void run_and_wait(char *const argv[])
{
	int status;
	pid_t pid = fork();

	if (pid < 0) {
		perror("p11coherence: fork");
		exit(1);
	}
	if (pid == 0) {
		execv(argv[0], argv);
		perror("p11coherence: exec");
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "p11coherence: %s %s failed\n", argv[0], argv[1]);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	CK_OBJECT_HANDLE objs[64];
	CK_ULONG n, after_write, after_touch;

	if ((argc == 5 || argc == 6) && strcmp(argv[1], "--create") == 0) {
		open_token(argv[2], argv[3]);
		create(argv[4], argc == 6 ? argv[5] : APPLICATION);
		close_token();
		return 0;
	}
	if (argc != 4) {
		fprintf(stderr, "usage: p11coherence MODULE TOKEN_LABEL TOKENSIGND\n");
		return 1;
	}
	open_token(argv[1], argv[2]);
	n = find(NULL, objs, 64); /* reads the directory now; clears a previous run's objects */
	for (CK_ULONG i = 0; i < n; i++)
		p11->C_DestroyObject(session, objs[i]);
	find(NULL, objs, 64);

	char *other[] = {"/proc/self/exe", "--create", argv[1], argv[2], "other", NULL};
	run_and_wait(other);
	create("mine", APPLICATION);
	after_write = find("other", objs, 64);

	char *touch[] = {argv[3], "--touch-token", argv[1], argv[2], NULL};
	run_and_wait(touch);
	after_touch = find("other", objs, 64);

	n = find(NULL, objs, 64);
	for (CK_ULONG i = 0; i < n; i++)
		p11->C_DestroyObject(session, objs[i]);
	close_token();
	printf("{\"seen_after_own_write\": %lu, \"seen_after_touch\": %lu}\n", after_write,
	       after_touch);
	return 0;
}

/* Making SoftHSM see what other processes wrote to the token (docs/design.md, "Several instances
 * on one token").
 *
 * SoftHSM's file store re-reads a token's directory only when the token's change counter (its
 * `generation` file) differs from the value this process last saw. A process that creates or
 * destroys an object raises the counter and takes the new value as seen without re-reading the
 * directory: when another process wrote just before, its objects stay invisible here until some
 * other process writes again. So after we wrote, a short-lived child process (this binary,
 * `--touch-token`) creates and destroys one public data object: the counter moves under us, and
 * our next search re-reads the directory. */
#include "hsm.h"
#include "hsm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>

#define TOUCH_APPLICATION "tokensign-touch"

extern char **environ;

static int touch(struct hsm *h, CK_SESSION_HANDLE s)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_TOKEN, (void *)&yes, sizeof(yes)},
	    {CKA_APPLICATION, (void *)TOUCH_APPLICATION, strlen(TOUCH_APPLICATION)},
	    {CKA_PRIVATE, (void *)&no, sizeof(no)},
	    {CKA_LABEL, (void *)TOUCH_APPLICATION, strlen(TOUCH_APPLICATION)},
	};
	CK_OBJECT_HANDLE *left = NULL, obj;
	CK_ULONG n_left = 0;
	int r;

	/* Objects of a touch killed half-way, ours or another instance's: a racing touch may
	 * destroy ours first, which is as good. */
	if (hsm_find_all(h, s, tmpl, 3, &left, &n_left) == CKR_OK)
		for (CK_ULONG i = 0; i < n_left; i++)
			h->f->C_DestroyObject(s, left[i]);
	free(left);
	r = hsm_check("C_CreateObject", h->f->C_CreateObject(s, tmpl, 5, &obj));
	if (r == 0) {
		CK_RV rv = h->f->C_DestroyObject(s, obj);
		if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID)
			r = hsm_check("C_DestroyObject", rv);
	}
	return r;
}

int hsm_touch_token(const char *module, const char *token)
{
	struct hsm h = {0};
	CK_SESSION_HANDLE s;
	int r;

	hsm_error_clear();
	/* A public object in a read/write session: no login, no PIN in this process. */
	if ((r = hsm_module_load(&h, module)) == 0 && (r = hsm_token_find(&h, token)) == 0 &&
	    (r = hsm_check("C_OpenSession",
	                   h.f->C_OpenSession(h.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
	                                      NULL, &s))) == 0) {
		r = touch(&h, s);
		h.f->C_CloseSession(s);
	}
	if (h.initialized)
		h.f->C_Finalize(NULL);
	if (h.f)
		p11_kit_module_release(h.f);
	return r;
}

/* Runs the touch child and waits for it; 0 when it exited 0. */
static int touch_child(struct hsm *h)
{
	char *argv[] = {"tokensign-hsm", "--touch-token", h->module, h->token, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	pid_t pid;
	int status, r;

	/* The child starts with no blocked signals and SIGPIPE at its default, gets /dev/null as
	 * stdin, keeps stdout and stderr (its errors reach our log) and none of our sockets. */
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	r = -posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r < 0)
		return hsm_fail_text(r, "cannot start tokensign-hsm --touch-token: %s",
		                     strerror(-r));
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return hsm_fail_text(-errno, "waiting for tokensign-hsm --touch-token: %s",
			                     strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return hsm_fail_text(-EIO, "tokensign-hsm --touch-token %s %d",
		                     WIFEXITED(status) ? "exited with status"
		                                       : "was killed by signal",
		                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	return 0;
}

int hsm_resync(struct hsm *h)
{
	unsigned long writes = atomic_load(&h->writes);
	int r = 0;

	hsm_error_clear();
	if (!h->incoherent_store)
		return 0;
	pthread_mutex_lock(&h->resync_lock);
	if (writes != h->touched && (r = touch_child(h)) == 0)
		h->touched = writes;
	pthread_mutex_unlock(&h->resync_lock);
	return r;
}

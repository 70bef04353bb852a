/* libFuzzer harness for lib/conf.c: any file content loads or is refused with reasons, never
 * crashes or leaks, and what loads keeps the invariants of tokensignd.conf(5). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "conf_cors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* One memfd for the whole run, rewritten for each input: no files left behind. */
	fd = memfd_create("tokensign-fuzz-conf", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	/* With a credentials directory, a file without pin-file can load, so the success path
	 * is reachable from more inputs. */
	setenv("CREDENTIALS_DIRECTORY", "/run/credentials/tokensignd.service", 1);
	return 0;
}

static void check_loaded(const struct conf *c)
{
	if (!c->hsm.module || !c->hsm.token || !c->hsm.pin_file || !c->sign.path ||
	    c->jwks.n_listen == 0 || c->n_issuers == 0)
		abort();
	if (c->sign.path[0] != '/' || c->sign.mode > 0777 || c->admin.mode > 0777)
		abort();
	/* h14-cors: a list of well-formed, distinct origins, or *, never both. */
	if (c->jwks.cors_any && c->jwks.n_cors_origins)
		abort();
	for (size_t i = 0; i < c->jwks.n_cors_origins; i++) {
		if (conf_origin_invalid(c->jwks.cors_origins[i]))
			abort();
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->jwks.cors_origins[i], c->jwks.cors_origins[j]) == 0)
				abort();
	}
	for (size_t i = 0; i < c->n_issuers; i++) {
		const struct issuer_conf *ic = &c->issuers[i];
		if (!ic->name || !ic->iss || ic->n_allow == 0 || ic->n_token_types == 0)
			abort();
		if (ic->prepublish < c->jwks.max_age || ic->prepublish >= ic->rotation_period ||
		    ic->token_ttl > ic->max_token_ttl || ic->alg != JWS_ES256)
			abort();
		if (conf_find_issuer(c, ic->name, strlen(ic->name)) != ic)
			abort();
		if (issuer_typ_find(ic, ic->token_types[0]) != ic->token_types[0])
			abort();
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->issuers[j].iss, ic->iss) == 0)
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf *c = NULL;
	struct conf_errors errs = {0};
	int r;

	if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	r = conf_load(path, &c, &errs);
	if (r == 0) {
		if (!c || errs.n != 0)
			abort();
		check_loaded(c);
	} else {
		if (c || errs.n == 0 || r != -EINVAL)
			abort();
		for (size_t i = 0; i < errs.n; i++)
			if (strncmp(errs.msgs[i], path, strlen(path)) != 0 ||
			    errs.msgs[i][strlen(path)] != ':')
				abort();
	}
	conf_free(c);
	conf_errors_clear(&errs);
	return 0;
}

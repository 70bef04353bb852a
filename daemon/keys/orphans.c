/* Keys of issuers that are no longer configured: kept and reported until an operator purges
 * them (docs/design.md, "Custody", C4). */
#include "orphans.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "clock.h"
#include "custody.h"
#include "log.h"

static int purge_add(struct purge_result *ret, const char *kid)
{
	char(*grown)[JWK_KID_LEN + 1] = realloc(ret->kids, (ret->n + 1) * sizeof(*grown));

	if (!grown)
		return -ENOMEM;
	ret->kids = grown;
	snprintf(grown[ret->n++], JWK_KID_LEN + 1, "%s", kid);
	return 0;
}

/* One orphan: its record (re-read, byte for byte) and its pair (ours in every way, by handle).
 * A pair that is not provably ours is left with its record, and counted as kept. */
static int purge_one(struct keyring *kr, const struct hsm_key_index *ix, const struct orphan_key *o,
                     int64_t operator_uid, struct purge_result *ret)
{
	char label[RECORD_LABEL_SIZE];
	struct hsm_key hk = {0};
	int r;

	custody_key_label(o->issuer, label);
	r = hsmc_key_index_find(kr->hsm, ix, o->id, label, o->alg, &hk);
	if (r < 0 && r != -ENOENT) {
		log_warning("purge %s: key %s is kept: %s", o->issuer, o->kid, hsm_last_error());
		ret->kept++;
		return 0;
	}
	r = hsmc_destroy_record(kr->hsm, &o->rec);
	if (r == 0 && hk.pub)
		r = hsmc_destroy_key(kr->hsm, &hk, label);
	if (r < 0)
		return r;
	log_notice("purge %s: destroyed orphaned key %s", o->issuer, o->kid);
	audit_key(AUDIT_DESTROYED, o->issuer, o->kid, operator_uid);
	return purge_add(ret, o->kid);
}

static int purge_locked(struct keyring *kr, const char *issuer, int64_t operator_uid,
                        struct purge_result *ret)
{
	struct hsm_key_index *ix = NULL;
	size_t found = 0;
	int r = hsmc_key_index_read(kr->hsm, &ix);

	for (size_t j = 0; r == 0 && j < kr->view.n_orphans; j++) {
		const struct orphan_key *o = &kr->view.orphans[j];
		if (strcmp(o->issuer, issuer) != 0)
			continue;
		found++;
		r = purge_one(kr, ix, o, operator_uid, ret);
	}
	hsm_key_index_free(ix);
	return r == 0 && found == 0 ? -ENOENT : r;
}

int rotation_purge(struct keyring *kr, const char *issuer, int64_t operator_uid,
                   struct purge_result *ret)
{
	int64_t now = clock_now();
	int r = 0;

	memset(ret, 0, sizeof(*ret));
	for (size_t i = 0; i < kr->n; i++)
		if (strcmp(kr->issuers[i].conf->name, issuer) == 0)
			return -EBUSY;
	keyring_lock(kr);
	r = keyring_refresh(kr, now);
	if (r == 0)
		r = purge_locked(kr, issuer, operator_uid, ret);
	if (r == 0)
		r = keyring_refresh(kr, now);
	keyring_unlock(kr);
	return r;
}

void purge_result_clear(struct purge_result *r)
{
	free(r->kids);
	memset(r, 0, sizeof(*r));
}

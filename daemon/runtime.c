/* Runtimes: a configuration and the keys it implies, reference-counted for reloads. */
#include "runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "rotation.h"
#include "clock.h"
#include "scheduler.h"

struct runtime *runtime_acquire(struct daemon *d)
{
	struct runtime *rt;

	pthread_mutex_lock(&d->rt_lock);
	rt = d->rt;
	atomic_fetch_add(&rt->refs, 1);
	pthread_mutex_unlock(&d->rt_lock);
	return rt;
}

void daemon_poke_scheduler(struct daemon *d)
{
	pthread_mutex_lock(&d->rt_lock);
	scheduler_poke(d->scheduler);
	pthread_mutex_unlock(&d->rt_lock);
}

void runtime_release(struct runtime *rt)
{
	if (!rt || atomic_fetch_sub(&rt->refs, 1) != 1)
		return;
	keyring_free(rt->keyring);
	conf_free(rt->conf);
	free(rt->series);
	free(rt);
}

/* Every issuer's algorithm must be one the token can generate and sign: refuse it now rather
 * than fail at the first rotation. */
static int algorithms_prepare(struct hsmc *hsm, const struct conf *conf)
{
	for (size_t i = 0; i < conf->n_issuers; i++) {
		const struct issuer_conf *ic = &conf->issuers[i];
		char bits[40] = "";
		int r = hsmc_prepare_alg(hsm, ic->alg, ic->key_size);

		if (r < 0) {
			log_error("issuer %s: %s cannot be served by this token: %s", ic->name,
			          jws_alg_name(ic->alg), hsm_last_error());
			return r;
		}
		/* Existing keys keep their size until they rotate out. */
		if (ic->key_size)
			snprintf(bits, sizeof(bits), " (new keys %u bits)", ic->key_size);
		log_info("issuer %s: %s%s via %s, self-check %s", ic->name, jws_alg_name(ic->alg),
		         bits, hsmc_alg_plan(hsm, ic->alg), ic->self_check ? "on" : "off");
	}
	return 0;
}

/* Loads the token's view and makes the first keys where there are none. An issuer left with no
 * key at all is an error; later trouble is the scheduler's. */
static int keys_load(struct runtime *rt)
{
	int64_t now = clock_now(), next;
	int r;

	sd_notify(0, "STATUS=Loading keys from the token");
	r = keyring_new(rt->hsm, rt->conf, &rt->keyring);
	if (r == 0)
		r = rotation_maintain(rt->keyring, now, &next);
	for (size_t i = 0; r == 0 && i < rt->keyring->n; i++) {
		struct issuer_keys *ik = &rt->keyring->issuers[i];
		struct keyset *set = keyring_acquire(rt->keyring, i);
		/* Why none could be made was logged as the issuer's problem (rotation.c). */
		if (set && set->n == 0 && ik->problem[0]) {
			log_error("issuer %s has no key and none could be made (above): it cannot "
			          "be served",
			          ik->conf->name);
			r = -EIO;
		}
		keyset_release(set);
	}
	if (r == 0)
		rotation_resync(rt->keyring);
	return r;
}

int runtime_new(struct hsmc *hsm, struct conf *conf, struct runtime **ret)
{
	struct runtime *rt = calloc(1, sizeof(*rt));
	int r;

	if (!rt) {
		conf_free(conf);
		return -ENOMEM;
	}
	atomic_init(&rt->refs, 1);
	rt->conf = conf;
	rt->hsm = hsm;
	snprintf(rt->cache_control, sizeof(rt->cache_control), "public, max-age=%llu",
	         (unsigned long long)conf->jwks.max_age);
	/* Without it, signing counts all the same, by lookup (sign_api.c). */
	rt->series = calloc(conf->n_issuers, sizeof(*rt->series));
	for (size_t i = 0; rt->series && i < conf->n_issuers; i++)
		counters_issuer_series(conf->issuers[i].name, &rt->series[i]);
	r = algorithms_prepare(hsm, conf);
	if (r == 0)
		r = keys_load(rt);
	if (r < 0) {
		runtime_release(rt);
		return r;
	}
	*ret = rt;
	return 0;
}

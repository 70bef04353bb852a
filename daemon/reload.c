/* SIGHUP: a new runtime is built beside the running one and swapped in only when complete; the
 * scheduler pauses meanwhile, so that only one keyring at a time writes to the token. */
#include "reload.h"

#include <errno.h>
#include <string.h>

#include "jwks_http.h"
#include "metrics_http.h"
#include "tls.h"
#include "admin_api.h"
#include "log.h"
#include "runtime.h"
#include "scheduler.h"
#include "sign_api.h"
#include "sockfile.h"

int daemon_config_load(const char *path, struct conf **ret)
{
	struct conf_errors errs = {0};
	int r = conf_load(path, ret, &errs);

	for (size_t i = 0; i < errs.n; i++)
		log_error("%s", errs.msgs[i]);
	conf_errors_clear(&errs);
	return r;
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The token is opened once: another module, token or PIN file needs a restart. */
static bool hsm_changed(const struct conf *a, const struct conf *b)
{
	return !same_str(a->hsm.module, b->hsm.module) || !same_str(a->hsm.token, b->hsm.token) ||
	       !same_str(a->hsm.pin_file, b->hsm.pin_file) ||
	       a->hsm.session_copies != b->hsm.session_copies ||
	       a->hsm.module_network != b->hsm.module_network || a->hsm.pin_cpus != b->hsm.pin_cpus;
}

static bool listens_differ(const struct listen_conf *a, size_t na, const struct listen_conf *b,
                           size_t nb)
{
	if (na != nb)
		return true;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i].text, b[i].text) != 0)
			return true;
	return false;
}

static bool listen_changed(const struct conf *a, const struct conf *b)
{
	return listens_differ(a->jwks.listen, a->jwks.n_listen, b->jwks.listen, b->jwks.n_listen);
}

/* Mode and group of a socket we made: applied to the existing file, no connection is lost.
 * Whatever else is now at its path (a link to some file) is left alone. */
static void socket_attrs(const struct sock_conf *sc)
{
	int r;

	if (!sc->path)
		return;
	r = sockfile_set_attrs(sc->path, sc->mode, sc->has_group, sc->gid);
	if (r < 0)
		log_error("reload: cannot set mode or group of %s: %s", sc->path,
		          sockfile_strerror(r));
}

/* h14-tls: HTTPS on or off is fixed when a listener starts: switching needs new listeners. */
static bool jwks_tls_toggled(struct daemon *d, const struct conf *now)
{
	return tls_conf_on(&now->jwks.tls) != jwks_http_tls_on(d->jwks);
}

/* h14-tls: new TLS certificates, keys and client-ca for the listeners that stay: connections
 * that start from now on use them, open ones keep theirs. Unusable files keep the old ones
 * (tls.c says why). */
static void tls_apply(struct daemon *d, const struct conf *now)
{
	if (!jwks_tls_toggled(d, now))
		jwks_http_reload_tls(d->jwks, now, d->config_path);
	else if (d->act.n_jwks > 0)
		log_warning("reload: [jwks] tls-cert was %s; the sockets systemd passed keep "
		            "speaking %s until the service is restarted",
		            tls_conf_on(&now->jwks.tls) ? "added" : "removed",
		            jwks_http_tls_on(d->jwks) ? "HTTPS" : "plain HTTP");
	if (!d->metrics)
		return;
	if (tls_conf_on(&now->metrics.tls) == metrics_http_tls_on(d->metrics))
		metrics_http_reload_tls(d->metrics, now, d->config_path);
	else
		log_warning("reload: [metrics] tls-cert was %s; the metrics keep speaking %s until "
		            "the service is restarted",
		            tls_conf_on(&now->metrics.tls) ? "added" : "removed",
		            metrics_http_tls_on(d->metrics) ? "HTTPS" : "plain HTTP");
}

/* Sockets systemd passed stay as they are: the units own them. */
static void sockets_apply(struct daemon *d, const struct conf *old, const struct conf *now)
{
	if (d->act.sign < 0) {
		if (!same_str(old->sign.path, now->sign.path)) {
			struct sign_api *fresh = NULL;
			if (sign_api_start(d, -1, &fresh) == 0) {
				sign_api_stop(d->sign);
				d->sign = fresh;
			}
		} else {
			socket_attrs(&now->sign);
		}
	}
	if (d->act.admin < 0) {
		if (!same_str(old->admin.path, now->admin.path)) {
			struct admin_api *fresh = NULL;
			admin_api_stop(d->admin);
			d->admin = NULL;
			if (admin_api_start(d, -1, &fresh) == 0)
				d->admin = fresh;
		} else {
			socket_attrs(&now->admin);
		}
	} else if (!d->admin && now->admin.path) {
		log_notice("reload: [admin] is configured now, but the passed admin socket was "
		           "closed at start; restart the service to serve it");
	}
	/* The metrics listeners are bound once, at start (docs/operations.md, "Reload"). */
	if (listens_differ(old->metrics.listen, old->metrics.n_listen, now->metrics.listen,
	                   now->metrics.n_listen))
		log_warning("reload: [metrics] listen changed; the metrics stay where they were "
		            "until the service is restarted");
	tls_apply(d, now);
	/* New listeners first (SO_REUSEPORT lets them share a port with the old ones); if one
	 * cannot be bound, the old ones stay. Clients of the old ones reconnect. */
	if (d->act.n_jwks == 0 && (listen_changed(old, now) || jwks_tls_toggled(d, now))) {
		struct jwks_http *fresh = NULL;
		if (jwks_http_start(d, NULL, 0, &fresh) < 0) {
			log_error(
			    "reload: the new [jwks] listeners cannot be started (above); the JWKS "
			    "stays on the old ones until a reload with settings that work");
		} else {
			jwks_http_stop(d->jwks);
			d->jwks = fresh;
		}
	}
}

/* Takes the scheduler out of d (a poke meanwhile finds none) and stops it: once this returns,
 * no maintenance pass of the running keyring is writing to the token. */
static void scheduler_halt(struct daemon *d)
{
	struct scheduler *sched;

	pthread_mutex_lock(&d->rt_lock);
	sched = d->scheduler;
	d->scheduler = NULL;
	pthread_mutex_unlock(&d->rt_lock);
	scheduler_stop(sched);
}

/* A scheduler for rt's keyring; NULL (logged) when it cannot start. */
static struct scheduler *scheduler_for(const struct runtime *rt, const char *which)
{
	struct scheduler *sched = NULL;
	int r = scheduler_start(rt->keyring, scheduler_rescan_interval(rt->conf), &sched);

	if (r < 0)
		log_error("reload: the scheduler of the %s configuration did not start (%s); keys "
		          "will not rotate until a reload or restart",
		          which, strerror(-r));
	return sched;
}

void daemon_reload(struct daemon *d)
{
	struct runtime *rt = NULL, *old;
	struct scheduler *sched;
	struct conf *conf = NULL;

	log_notice("reload: reading %s", d->config_path);
	if (daemon_config_load(d->config_path, &conf) < 0) {
		log_error("reload: %s has the problems above; the running configuration stays",
		          d->config_path);
		return;
	}
	if (hsm_changed(d->rt->conf, conf)) {
		log_error("reload: [hsm] changed; restart the daemon to use another module, token, "
		          "PIN file or session-copies. The running configuration stays");
		conf_free(conf);
		return;
	}
	/* runtime_new() maintains a new keyring (it may make or destroy keys) under that
	 * keyring's lock: the running scheduler, under the old one's, must not write meanwhile. */
	scheduler_halt(d);
	if (runtime_new(d->hsm, conf, &rt) < 0) {
		log_error("reload: the new configuration cannot be served (above); the running "
		          "configuration stays");
		sched = scheduler_for(d->rt, "running");
		pthread_mutex_lock(&d->rt_lock);
		d->scheduler = sched;
		pthread_mutex_unlock(&d->rt_lock);
		return;
	}
	sched = scheduler_for(rt, "new");
	pthread_mutex_lock(&d->rt_lock);
	old = d->rt;
	d->rt = rt;
	d->scheduler = sched;
	pthread_mutex_unlock(&d->rt_lock);
	sockets_apply(d, old->conf, rt->conf);
	log_notice("reload: done, %zu issuer(s)", rt->conf->n_issuers);
	runtime_release(old);
}

/* HTTP on the admin socket: who may call, then list, status, rotate, revoke and purge. */
#include "admin_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "log_limit.h"
#include "orphans.h"
#include "rotation.h"

#define ADMIN_MAX_BODY  4096
#define ADMIN_TOO_LARGE "the body is over 4 KiB"

struct admin_api {
	struct daemon *d;
	struct http_unix_server srv;
};

struct request {
	struct http_body body;
};

static const char *const state_names[] = {
    [KEY_PENDING] = "pending",
    [KEY_ACTIVE] = "active",
    [KEY_RETIRED] = "retired",
    [KEY_EXPIRED] = "expired",
};

/* uid 0, the daemon's own uid, or a member of [admin] group. */
static bool caller_is_admin(const struct runtime *rt, const struct http_peer *hp)
{
	const struct sock_conf *sc = &rt->conf->admin;

	if (!hp || hp->err < 0)
		return false;
	if (hp->peer.uid == 0 || hp->peer.uid == geteuid())
		return true;
	if (!sc->has_group)
		return false;
	struct allow_rule rule = {ALLOW_GID, sc->gid};
	return peer_allowed(&hp->peer, &rule, 1);
}

static enum MHD_Result reply_obj(struct MHD_Connection *c, unsigned status, json_t *obj)
{
	char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	enum MHD_Result r = body ? http_reply_json(c, status, body) : MHD_NO;

	json_decref(obj);
	free(body);
	return r;
}

static json_t *json_kid(const char *kid)
{
	return kid && *kid ? json_string(kid) : json_null();
}

static json_t *key_row(const char *issuer, const char *kid, enum jws_alg alg, const char *state,
                       int64_t created_at, int64_t activates_at, int64_t retires_at,
                       int64_t destroy_after)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "issuer", issuer, "kid", kid,
	                 "alg", jws_alg_name(alg), "state", state, "created_at",
	                 (json_int_t)created_at, "activates_at", (json_int_t)activates_at,
	                 "retires_at", (json_int_t)retires_at, "destroy_after",
	                 (json_int_t)destroy_after);
}

static int list_issuer(struct runtime *rt, size_t i, int64_t now, json_t *out)
{
	const struct issuer_conf *ic = rt->keyring->issuers[i].conf;
	struct keyset *set = keyring_acquire(rt->keyring, i);

	for (size_t j = 0; set && j < set->n; j++) {
		const struct key *k = &set->keys[j];
		enum key_state st = k->st.state;
		json_t *row;
		/* The set may predate a handover the scheduler has not applied yet. */
		if (k == keyset_signer(set, now))
			st = KEY_ACTIVE;
		else if (st == KEY_ACTIVE || (st == KEY_PENDING && k->activates_at <= now))
			st = KEY_RETIRED;
		if (st == KEY_EXPIRED)
			continue;
		row = key_row(ic->name, k->kid, k->hk.alg, state_names[st], k->created_at,
		              k->activates_at, k->st.retired_at, k->st.destroy_after);
		if (row && !k->usable)
			json_object_set_new(row, "quarantined", json_true());
		if (row && k->withdrawn_at)
			json_object_set_new(row, "withdrawn_at", json_integer(k->withdrawn_at));
		json_array_append_new(out, row);
	}
	keyset_release(set);
	return 0;
}

/* Keys of issuers no longer configured: kept until keyrotate purge. Their state is what their
 * own records say (no prepublish grace is known for them any more). */
static void list_orphans(const struct keyring_report *rep, const char *only, json_t *out)
{
	for (size_t j = 0; rep && j < rep->n_orphans; j++) {
		const struct orphan_key *o = &rep->orphans[j];
		int64_t destroy =
		    schedule_add(schedule_add(o->retires_at, o->max_token_ttl), SCHEDULE_SKEW);
		json_t *row;
		if (only && strcmp(only, o->issuer) != 0)
			continue;
		row = key_row(o->issuer, o->kid, o->alg, "retired", o->created_at, o->activates_at,
		              o->retires_at, destroy);
		if (row)
			json_object_set_new(row, "orphan", json_true());
		json_array_append_new(out, row);
	}
}

static bool orphaned(const struct keyring_report *rep, const char *issuer)
{
	for (size_t j = 0; rep && j < rep->n_orphans; j++)
		if (strcmp(rep->orphans[j].issuer, issuer) == 0)
			return true;
	return false;
}

/* From the keysets and the keyring's report: never waits for a key generation. */
static enum MHD_Result reply_keys(struct runtime *rt, struct MHD_Connection *c)
{
	const char *only = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "issuer");
	const struct issuer_conf *ic = only ? conf_find_issuer(rt->conf, only, strlen(only)) : NULL;
	struct keyring_report *rep = keyring_report_acquire(rt->keyring);
	int64_t now = clock_now();
	json_t *keys;

	if (only && !ic && !orphaned(rep, only)) {
		keyring_report_release(rep);
		return http_reply_error(c, MHD_HTTP_NOT_FOUND, "unknown_issuer", "no such issuer");
	}
	keys = json_array();
	for (size_t i = 0; keys && i < rt->keyring->n; i++)
		if (!only || rt->keyring->issuers[i].conf == ic)
			list_issuer(rt, i, now, keys);
	if (keys)
		list_orphans(rep, only, keys);
	keyring_report_release(rep);
	return reply_obj(c, MHD_HTTP_OK, json_pack("{s:o}", "keys", keys));
}

enum level { LEVEL_OK, LEVEL_WARNING, LEVEL_CRITICAL };
static const char *const level_names[] = {"ok", "warning", "critical"};

static enum level worse(enum level a, enum level b)
{
	return a > b ? a : b;
}

/* Per issuer: critical when it cannot sign now; warning when it can but something needs an
 * operator (no next key while one is due, a failed generation, a quarantined key). */
static json_t *issuer_status(struct runtime *rt, const struct keyring_report *rep, size_t i,
                             int64_t now, bool token_ok, enum level *level)
{
	struct issuer_keys *ik = &rt->keyring->issuers[i];
	struct keyset *set = keyring_acquire(rt->keyring, i);
	struct key *signer = keyset_signer(set, now);
	/* The set may be older than a handover (a token away cannot be re-read): a key that has
	 * started is no longer pending, whatever the set says. */
	struct key *next = set && set->next && set->next != signer && set->next->activates_at > now
	                       ? set->next
	                       : NULL;
	bool quarantined = false;
	enum level l = LEVEL_OK;
	const char *problem;
	json_t *o;

	for (size_t j = 0; set && j < set->n; j++)
		quarantined = quarantined || !set->keys[j].usable;
	/* The token problem is the last refresh's; a token answering now has none. */
	problem = set && set->blocked[0] ? set->blocked
	          : rep->problems[i][0]  ? rep->problems[i]
	          : token_ok             ? ""
	                                 : rep->token_problem;
	if (!signer || !token_ok)
		l = LEVEL_CRITICAL;
	else if (problem[0] || !next || quarantined)
		l = LEVEL_WARNING;
	*level = worse(*level, l);
	o = json_pack("{s:s, s:o, s:o, s:b, s:o, s:s, s:o}", "issuer", ik->conf->name, "active_kid",
	              json_kid(signer ? signer->kid : NULL), "pending_kid",
	              json_kid(next ? next->kid : NULL), "signing", signer != NULL && token_ok,
	              "next_rotation", next ? json_integer(next->activates_at) : json_null(),
	              "level", level_names[l], "problem",
	              problem[0] ? json_string(problem) : json_null());
	keyset_release(set);
	return o;
}

/* Issuers no longer configured whose keys are still in the token, with how many each. */
static json_t *orphans_status(const struct keyring_report *v)
{
	json_t *out = json_array();

	for (size_t j = 0; out && j < v->n_orphans; j++) {
		size_t n = 1;
		bool seen = false;
		for (size_t k = 0; k < j && !seen; k++)
			seen = strcmp(v->orphans[k].issuer, v->orphans[j].issuer) == 0;
		if (seen)
			continue;
		for (size_t k = j + 1; k < v->n_orphans; k++)
			n += strcmp(v->orphans[k].issuer, v->orphans[j].issuer) == 0;
		json_array_append_new(out, json_pack("{s:s, s:I}", "issuer", v->orphans[j].issuer,
		                                     "keys", (json_int_t)n));
	}
	return out;
}

/* From the keysets, the keyring's report and a probe that skips a busy management helper:
 * never waits for a key generation, which holds the keyring for seconds. */
static enum MHD_Result reply_status(struct runtime *rt, struct MHD_Connection *c)
{
	int64_t now = clock_now();
	bool token_ok = hsmc_probe_ready(rt->hsm) == 0, stale = keyring_token_lost(rt->keyring);
	struct keyring_report *rep = keyring_report_acquire(rt->keyring);
	enum level level = token_ok ? LEVEL_OK : LEVEL_CRITICAL;
	json_t *issuers = json_array(), *obj;

	if (!rep) {
		json_decref(issuers);
		return http_reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		                        "the keys are not loaded yet");
	}
	for (size_t i = 0; issuers && i < rt->keyring->n; i++)
		json_array_append_new(issuers, issuer_status(rt, rep, i, now, token_ok, &level));
	if (rep->n_foreign || rep->n_quarantined || rep->n_orphans)
		level = worse(level, LEVEL_WARNING);
	if (stale)
		level = worse(level, LEVEL_WARNING);
	obj = json_pack("{s:s, s:b, s:s, s:I, s:I, s:o, s:o}", "token",
	                token_ok ? "ok" : "unreachable", "keys_stale", stale, "level",
	                level_names[level], "foreign", (json_int_t)rep->n_foreign, "quarantined",
	                (json_int_t)rep->n_quarantined, "orphans", orphans_status(rep), "issuers",
	                issuers);
	keyring_report_release(rep);
	return reply_obj(c, MHD_HTTP_OK, obj);
}

static int64_t caller_uid(struct MHD_Connection *c)
{
	const struct http_peer *hp = http_peer_of(c);
	return hp ? (int64_t)hp->peer.uid : -1;
}

static enum MHD_Result reply_rotate(struct daemon *d, struct runtime *rt, struct MHD_Connection *c,
                                    size_t i, json_t *body)
{
	struct rotate_result res = {0};
	json_t *now = json_object_get(body, "now");
	int r;

	if (now && !json_is_boolean(now))
		return http_reply_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request",
		                        "'now' must be true or false");
	r = rotation_rotate(rt->keyring, i, json_is_true(now), caller_uid(c), &res);
	if (r < 0)
		return http_reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "hsm_unavailable",
		                        hsm_last_error());
	daemon_poke_scheduler(d);
	return reply_obj(c, MHD_HTTP_OK,
	                 json_pack("{s:s, s:o, s:s, s:I}", "issuer",
	                           rt->keyring->issuers[i].conf->name, "active_kid",
	                           json_kid(res.active_kid), "next_kid", res.next_kid, "switch_at",
	                           (json_int_t)res.switch_at));
}

static enum MHD_Result reply_revoke(struct daemon *d, struct runtime *rt, struct MHD_Connection *c,
                                    size_t i, const char *kid)
{
	struct revoke_result res = {0};
	int r = rotation_revoke(rt->keyring, i, kid, caller_uid(c), &res);

	if (r == -ENOENT)
		return http_reply_error(c, MHD_HTTP_NOT_FOUND, "unknown_kid",
		                        "the issuer has no such key");
	if (r == -EPERM)
		return http_reply_error(c, MHD_HTTP_CONFLICT, "key_quarantined", hsm_last_error());
	if (r < 0)
		return http_reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "hsm_unavailable",
		                        hsm_last_error());
	daemon_poke_scheduler(d);
	return reply_obj(
	    c, MHD_HTTP_OK,
	    json_pack("{s:s, s:s, s:s, s:o, s:o}", "issuer", rt->keyring->issuers[i].conf->name,
	              "revoked_kid", res.revoked_kid, "was", res.was, "active_kid",
	              json_kid(res.active_kid), "pending_kid", json_kid(res.pending_kid)));
}

/* POST /v1/issuers/NAME/purge: only for an issuer that is no longer configured. */
static enum MHD_Result on_purge(struct admin_api *api, struct runtime *rt, struct MHD_Connection *c,
                                const char *url, struct request *rq)
{
	const char *p = url + strlen("/v1/issuers/");
	char *name = strndup(p, (size_t)(strchr(p, '/') - p));
	struct purge_result res = {0};
	json_t *kids = json_array();
	enum MHD_Result ret;
	int r;

	(void)rq;
	if (!name || !kids) {
		free(name);
		json_decref(kids);
		return MHD_NO;
	}
	r = rotation_purge(rt->keyring, name, caller_uid(c), &res);
	if (r == -EBUSY)
		ret =
		    http_reply_error(c, MHD_HTTP_CONFLICT, "issuer_configured",
		                     "the issuer is configured; purge is only for issuers removed "
		                     "from the configuration");
	else if (r == -ENOENT)
		ret = http_reply_error(c, MHD_HTTP_NOT_FOUND, "unknown_issuer",
		                       "the token holds no orphaned key of that issuer");
	else if (r < 0)
		ret = http_reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "hsm_unavailable",
		                       hsm_last_error());
	else {
		for (size_t i = 0; i < res.n; i++)
			json_array_append_new(kids, json_string(res.kids[i]));
		ret = reply_obj(c, MHD_HTTP_OK,
		                json_pack("{s:s, s:O, s:I}", "issuer", name, "destroyed", kids,
		                          "kept", (json_int_t)res.kept));
		daemon_poke_scheduler(api->d);
	}
	json_decref(kids);
	purge_result_clear(&res);
	free(name);
	return ret;
}

/* POST /v1/issuers/NAME/rotate and /v1/issuers/NAME/keys/KID/revoke, body complete. */
static enum MHD_Result on_post(struct admin_api *api, struct runtime *rt, struct MHD_Connection *c,
                               const char *url, struct request *rq)
{
	const char *p = url + strlen("/v1/issuers/"), *slash = strchr(p, '/');
	const struct issuer_conf *ic;
	enum MHD_Result ret;
	json_t *body;
	size_t i;

	if (rq->body.too_large)
		return http_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
		                        "the body is over 4 KiB");
	body = json_loadb(rq->body.data ? rq->body.data : "{}", rq->body.len ? rq->body.len : 2,
	                  JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(body)) {
		json_decref(body);
		return http_reply_error(c, MHD_HTTP_BAD_REQUEST, "invalid_json",
		                        "the body must be a JSON object");
	}
	ic = conf_find_issuer(rt->conf, p, (size_t)(slash - p));
	i = keyring_index(rt->keyring, ic);
	if (strcmp(slash, "/rotate") == 0)
		ret = reply_rotate(api->d, rt, c, i, body);
	else {
		/* ".../keys/KID/revoke": route_of() made sure of the shape. */
		const char *kid = slash + strlen("/keys/");
		char *k = strndup(kid, strlen(kid) - strlen("/revoke"));
		ret = k ? reply_revoke(api->d, rt, c, i, k) : MHD_NO;
		free(k);
	}
	json_decref(body);
	return ret;
}

enum route { ROUTE_NONE, ROUTE_KEYS, ROUTE_STATUS, ROUTE_ROTATE, ROUTE_REVOKE, ROUTE_PURGE };

/* Recognises the paths; for issuer paths also checks the issuer exists (*known). */
static enum route route_of(const struct conf *conf, const char *url, bool *known)
{
	const char *p, *slash;

	*known = true;
	if (strcmp(url, "/v1/keys") == 0)
		return ROUTE_KEYS;
	if (strcmp(url, "/v1/status") == 0)
		return ROUTE_STATUS;
	if (strncmp(url, "/v1/issuers/", 12) != 0)
		return ROUTE_NONE;
	p = url + 12;
	slash = strchr(p, '/');
	if (!slash || slash == p)
		return ROUTE_NONE;
	*known = conf_find_issuer(conf, p, (size_t)(slash - p)) != NULL;
	if (strcmp(slash, "/rotate") == 0)
		return ROUTE_ROTATE;
	if (strcmp(slash, "/purge") == 0)
		return ROUTE_PURGE;
	if (strncmp(slash, "/keys/", 6) == 0 && strlen(slash) > 6 + strlen("/revoke") &&
	    strcmp(slash + strlen(slash) - 7, "/revoke") == 0)
		return ROUTE_REVOKE;
	return ROUTE_NONE;
}

/* Decides once the whole request is in (bodies here are tiny): libmicrohttpd answers only
 * then without dropping the connection, and the rules below need no early exit. */
static enum MHD_Result decide(struct admin_api *api, struct runtime *rt, struct MHD_Connection *c,
                              const char *url, const char *method, struct request *rq)
{
	bool known, get = strcmp(method, MHD_HTTP_METHOD_GET) == 0,
	            post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	enum route route = route_of(rt->conf, url, &known);
	const struct http_peer *hp = http_peer_of(c);

	if (!caller_is_admin(rt, hp)) {
		log_limited(LOG_KIND_REFUSED_CALLER, LOG_WARNING, "admin: refused caller uid %d",
		            hp ? (int)hp->peer.uid : -1);
		return http_reply_error(c, MHD_HTTP_FORBIDDEN, "forbidden",
		                        "only root, the daemon's user and [admin] group may use "
		                        "this socket");
	}
	if (route == ROUTE_NONE)
		return http_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path");
	/* Each verb has exactly one method: a PUT or DELETE never rotates or revokes. */
	if ((route == ROUTE_KEYS || route == ROUTE_STATUS) ? !get : !post)
		return http_reply_method(c, route == ROUTE_KEYS || route == ROUTE_STATUS ? "GET"
		                                                                         : "POST");
	if (route == ROUTE_PURGE)
		return on_purge(api, rt, c, url, rq);
	if (!known)
		return http_reply_error(c, MHD_HTTP_NOT_FOUND, "unknown_issuer", "no such issuer");
	if (route == ROUTE_KEYS)
		return reply_keys(rt, c);
	if (route == ROUTE_STATUS && keyring_token_lost(rt->keyring))
		daemon_poke_scheduler(api->d); /* re-read now if it answers again */
	if (route == ROUTE_STATUS)
		return reply_status(rt, c);
	return on_post(api, rt, c, url, rq);
}

/* A Content-Length over the limit is refused before a byte of the body is read. */
static bool over_limit(struct MHD_Connection *c)
{
	const char *cl =
	    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

	return cl && strtoull(cl, NULL, 10) > ADMIN_MAX_BODY;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
	struct admin_api *api = cls;
	struct request *rq = *req_cls;
	struct runtime *rt;
	enum MHD_Result r;

	if (!rq) {
		if (http_refuse_malformed(c, method, version, &r))
			return r;
		if (over_limit(c)) {
			http_close_gently(c);
			return http_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
			                        ADMIN_TOO_LARGE);
		}
		rq = calloc(1, sizeof(*rq));
		*req_cls = rq;
		return rq ? MHD_YES : MHD_NO;
	}
	if (*upload_size) {
		http_body_append(&rq->body, upload, *upload_size, ADMIN_MAX_BODY);
		*upload_size = 0;
		if (rq->body.too_large)
			return http_refuse_upload(c, ADMIN_TOO_LARGE);
		return MHD_YES;
	}
	rt = runtime_acquire(api->d);
	r = decide(api, rt, c, url, method, rq);
	runtime_release(rt);
	return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct request *rq = *req_cls;

	http_request_done(c);
	if (!rq)
		return;
	http_body_free(&rq->body);
	free(rq);
	*req_cls = NULL;
}

int admin_api_start(struct daemon *d, int fd, struct admin_api **ret)
{
	struct admin_api *api;
	int r;

	*ret = NULL;
	/* The admin API rotates and revokes keys: only the configuration turns it on, not a
	 * socket some unit passes. */
	if (!d->rt->conf->admin.path && fd >= 0) {
		log_warning(
		    "socket activation passed an admin socket, but the configuration has no "
		    "[admin] section: closed it; keyrotate cannot reach this daemon");
		close(fd);
		return 0;
	}
	if (!d->rt->conf->admin.path) {
		log_notice("no [admin] socket configured: keyrotate cannot reach this daemon");
		return 0;
	}
	api = calloc(1, sizeof(*api));
	if (!api)
		return -ENOMEM;
	api->d = d;
	r = http_unix_serve(&api->srv, &d->rt->conf->admin, fd, 1, d->budget.admin, on_request,
	                    on_completed, api, "admin");
	if (r < 0) {
		free(api);
		return r;
	}
	*ret = api;
	return 0;
}

void admin_api_stop(struct admin_api *api)
{
	if (!api)
		return;
	http_unix_close(&api->srv);
	free(api);
}

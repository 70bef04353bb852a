/* The daemon's one context: the token, the current runtime (configuration and keys, swapped
 * whole on reload), and the front ends. */
#pragma once
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "activation.h"
#include "budget.h"
#include "conf.h"
#include "counters.h"
#include "hsmc.h"
#include "keyring.h"

struct sign_api;
struct jwks_http;
struct admin_api;
struct metrics_http;
struct scheduler;

/* One configuration and the keys it implies. Requests hold a reference from their first to
 * their last byte, so a reload never pulls an issuer from under a request in flight. */
struct runtime {
	atomic_int refs;
	struct conf *conf;
	struct keyring *keyring;
	struct hsmc *hsm;             /* the daemon's; the same in every runtime */
	char cache_control[48];       /* "public, max-age=N" of the JWKS answers */
	struct issuer_series *series; /* parallel to conf->issuers (counters.h); NULL: no memory */
};

struct daemon {
	const char *config_path;
	struct hsmc *hsm;
	pthread_mutex_t rt_lock; /* guards the rt pointer, not its contents */
	struct runtime *rt;
	struct scheduler *scheduler;
	struct activation act; /* sockets systemd passed; the same across reloads */
	struct budget budget;  /* connection caps, set at start (budget.h) */
	struct sign_api *sign;
	struct jwks_http *jwks;
	struct admin_api *admin;
	struct metrics_http *metrics; /* NULL: no [metrics] listen */
	int64_t started_at;           /* unix seconds: tokensign_up_since_timestamp_seconds */
};

/* A reference to the current runtime; give it back with runtime_release(). */
struct runtime *runtime_acquire(struct daemon *d);
void runtime_release(struct runtime *rt);

/* Wakes the scheduler now (an operator changed the schedule); safe during a reload. */
void daemon_poke_scheduler(struct daemon *d);

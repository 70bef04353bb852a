/* The daemon's one context: configuration, token, keys and the HTTP front ends. */
#pragma once
#include <stdbool.h>

#include "conf.h"
#include "hsm.h"
#include "keyring.h"

struct sign_api;
struct jwks_http;
struct admin_api;
struct scheduler;

struct daemon {
	struct conf *conf;
	struct hsm *hsm;
	struct keyring *keyring;
	struct sign_api *sign;
	struct jwks_http *jwks;
	struct admin_api *admin;
	struct scheduler *scheduler;
};

/* Ready means the token answers and every issuer has a key that may sign now and no trouble
 * making the next one. On false, *why names the first problem (static, or an issuer name). */
bool daemon_ready(struct daemon *d, const char **why);

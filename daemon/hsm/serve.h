/* One helper's service loop: requests in, answers out, over PROTO_FD_SOCKET. */
#pragma once
#include <stdbool.h>

#include "hsm.h"

enum serve_role {
	SERVE_SIGN,   /* signs tokens (PROTO_SIGN) for one signing worker */
	SERVE_MANAGE, /* everything else the daemon asks of the token; never PROTO_SIGN */
};

/* Answers requests until the daemon closes the socket (returns 0) or sends anything that does
 * not decode exactly, or an op the role does not serve (returns -EPROTO: the helper exits). */
int serve(struct hsm *h, int fd, enum serve_role role);

/* Sockets handed over by systemd (socket activation), found by their FileDescriptorName. */
#pragma once
#include <stddef.h>

struct activation {
	int sign;  /* -1: not passed, bind [sign] socket ourselves */
	int admin; /* -1: not passed */
	int jwks[16];
	size_t n_jwks; /* 0: bind the [jwks] listen addresses ourselves */
};

/* Collects the passed sockets named sign, admin and jwks (several jwks allowed), checks each is
 * a listening stream socket of the right family, and makes it non-blocking. Any other name, or
 * a socket of the wrong kind, is an error (logged). Without socket activation, all are unset. */
int activation_collect(struct activation *ret);

/* Socket activation: the units own the sockets (paths, modes, groups); the daemon only serves. */
#include "activation.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"

static int take(int fd, const char *name, struct activation *a)
{
	bool unix_stream = sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 1) > 0;
	bool inet_stream = sd_is_socket_inet(fd, 0, SOCK_STREAM, 1, 0) > 0;
	int flags = fcntl(fd, F_GETFL);

	/* Every worker thread polls the listen socket: a blocking accept() would stall one. */
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -errno;
	if (strcmp(name, "sign") == 0 && unix_stream && a->sign < 0)
		a->sign = fd;
	else if (strcmp(name, "admin") == 0 && unix_stream && a->admin < 0)
		a->admin = fd;
	else if (strcmp(name, "jwks") == 0 && inet_stream &&
	         a->n_jwks < sizeof(a->jwks) / sizeof(a->jwks[0]))
		a->jwks[a->n_jwks++] = fd;
	else {
		log_error(
		    "socket activation: unexpected socket '%s' (fd %d): expected one listening "
		    "Unix stream socket named sign, at most one named admin, and TCP sockets "
		    "named jwks",
		    name, fd);
		return -EINVAL;
	}
	return 0;
}

int activation_collect(struct activation *ret)
{
	struct activation a = {.sign = -1, .admin = -1};
	char **names = NULL;
	int n, r = 0;

	n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		log_error("socket activation: %s", strerror(-n));
		return n;
	}
	for (int i = 0; i < n && r == 0; i++)
		r = take(SD_LISTEN_FDS_START + i, names && names[i] ? names[i] : "unknown", &a);
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	if (r < 0)
		return r;
	if (n > 0)
		log_notice("socket activation: sign %s, admin %s, %zu jwks socket(s)",
		           a.sign >= 0 ? "passed" : "bound here",
		           a.admin >= 0 ? "passed" : "bound here", a.n_jwks);
	*ret = a;
	return 0;
}

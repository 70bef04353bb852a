/* The file of a Unix socket the daemon bound itself: its mode and group, set without following
 * a link that someone may have put at its path. */
#pragma once
#include <stdbool.h>
#include <sys/types.h>

/* Gives the socket file at path the mode and (when has_group) the group gid. Only a socket that
 * this process's user owns is changed; the path's last component is never followed.
 * -ELOOP: path is a symbolic link; -ENOTSOCK: it is another kind of file; -EACCES: a socket of
 * another user; other negative errnos from the system. Nothing is changed on failure but,
 * possibly, the group (when chmod fails after it). */
int sockfile_set_attrs(const char *path, mode_t mode, bool has_group, gid_t gid);

/* A short reason for the errors of sockfile_set_attrs(), for the caller's log line. */
const char *sockfile_strerror(int err);

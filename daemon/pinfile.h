/* The PIN file, opened once by the daemon at start and handed to the helpers (PROTO_FD_PIN):
 * the request-facing process never reads it. */
#pragma once

/* Opens path for reading. It must be a regular file (not a link, FIFO or directory) that only
 * its owner can access. Returns the descriptor (close-on-exec) or a negative errno, with the
 * reason logged. */
int pinfile_open(const char *path);

/* The PIN file, opened once by the daemon at start and handed to the helpers (PROTO_FD_PIN):
 * the request-facing process never reads it. */
#pragma once
#include <stddef.h>

/* Opens path for reading. It must be a regular file (not a link, FIFO or directory) that only
 * its owner can access. Returns the descriptor (close-on-exec) or a negative errno, with the
 * reason logged. */
int pinfile_open(const char *path);

/* Makes the PIN file unreadable for this process and the threads it starts from now on
 * (Landlock, LANDLOCK_ACCESS_FS_READ_FILE): every other file stays readable, as it exists now or
 * appears later anywhere but on the PIN file's own path. Call before the first thread starts
 * (Landlock binds the calling thread and what it starts). Returns 1 when done, 0 when the kernel
 * has no Landlock (nothing changed: why says so), or a negative errno (why says what failed).
 * A file that replaces a sibling of the PIN file after this call (an editor writing the
 * configuration by rename into the PIN file's directory) is unreadable too. */
int pinfile_hide(const char *path, char *why, size_t why_size);

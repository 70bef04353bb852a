/* Strong entity tags for the rendered JWKS and the If-None-Match rule of RFC 9110 §13.1.2. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#define ETAG_SIZE 48 /* '"' + 43 base64url characters + '"' + NUL */

/* The strong ETag of body: a quoted base64url SHA-256, identical on every instance. */
int etag_of(const char *body, size_t len, char etag[ETAG_SIZE]);

/* True when an If-None-Match header value matches etag: "*", or any listed tag, compared weakly
 * (a W/ prefix is ignored), as RFC 9110 requires for If-None-Match. */
bool etag_none_match(const char *header, const char *etag);

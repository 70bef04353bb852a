/* Entity tags of rendered bodies and If-None-Match matching. */
#include "etag.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "b64url.h"

int etag_of(const char *body, size_t len, char etag[ETAG_SIZE])
{
	unsigned char digest[32];

	if (EVP_Digest(body, len, digest, NULL, EVP_sha256(), NULL) != 1)
		return -EIO;
	etag[0] = '"';
	b64url_encode(digest, sizeof(digest), etag + 1);
	strcat(etag, "\"");
	return 0;
}

bool etag_none_match(const char *header, const char *etag)
{
	size_t elen = strlen(etag);
	const char *p = header;

	while (*p) {
		const char *start;
		size_t n;

		p += strspn(p, " \t,");
		if (!*p)
			break;
		if (*p == '*')
			return true;
		if (p[0] == 'W' && p[1] == '/')
			p += 2;
		start = p;
		if (*p == '"') {
			const char *close = strchr(p + 1, '"');
			if (!close)
				return false;
			p = close + 1;
		} else {
			p += strcspn(p, " \t,");
		}
		n = (size_t)(p - start);
		if (n == elen && memcmp(start, etag, n) == 0)
			return true;
		p += strcspn(p, ",");
	}
	return false;
}

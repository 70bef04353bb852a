/* base64url without padding (RFC 7515 §2), the only encoding JOSE uses. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* Characters needed for n input bytes, without the terminating NUL. */
size_t b64url_encoded_len(size_t n);

/* Encodes n bytes into out, which holds b64url_encoded_len(n) + 1 bytes; NUL-terminates. */
void b64url_encode(const uint8_t *in, size_t n, char *out);

/* Decodes len characters. Returns 0, or -EINVAL for a character outside the alphabet, padding or
 * an impossible length, -ENOBUFS when out_size is too small. *ret_len is untouched on failure. */
int b64url_decode(const char *in, size_t len, uint8_t *out, size_t out_size, size_t *ret_len);

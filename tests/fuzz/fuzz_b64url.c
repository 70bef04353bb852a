/* libFuzzer harness for lib/b64url.c: strict decoding and the encode/decode round trip. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "b64url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Buffers of exactly the documented size, so the sanitizer sees any write past them. */
static char *encode_exact(const uint8_t *in, size_t n)
{
	char *out = malloc(b64url_encoded_len(n) + 1);

	if (!out)
		abort();
	b64url_encode(in, n, out);
	if (strlen(out) != b64url_encoded_len(n))
		abort();
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	size_t cap = size / 4 * 3 + 2, got = (size_t)-1;
	uint8_t *dec = malloc(cap ? cap : 1);
	char *enc;
	int r;

	if (!dec)
		abort();
	/* 1. Decoding arbitrary text: either refused, or canonical: re-encoding gives the input
	 * back (the decoder refuses padding, other alphabets and non-zero trailing bits). */
	r = b64url_decode(text, size, dec, cap, &got);
	if (r == 0) {
		if (got > cap)
			abort();
		enc = encode_exact(dec, got);
		if (strlen(enc) != size || memcmp(enc, text, size) != 0)
			abort();
		free(enc);
		/* One byte less room is refused, never overrun. */
		if (got > 0) {
			uint8_t *small = malloc(got - 1 ? got - 1 : 1);
			size_t g2 = 4242;
			if (!small)
				abort();
			if (b64url_decode(text, size, small, got - 1, &g2) != -ENOBUFS ||
			    g2 != 4242)
				abort();
			free(small);
		}
	} else if (r != -EINVAL || got != (size_t)-1) {
		abort();
	}
	free(dec);

	/* 2. Encoding arbitrary bytes, then decoding, gives the bytes back. */
	enc = encode_exact(data, size);
	dec = malloc(size ? size : 1);
	if (!dec)
		abort();
	got = (size_t)-1;
	if (b64url_decode(enc, strlen(enc), dec, size, &got) != 0 || got != size ||
	    memcmp(dec, data, size) != 0)
		abort();
	free(dec);
	free(enc);
	return 0;
}

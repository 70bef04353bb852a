/* base64url encoding and decoding on top of OpenSSL's base64 block codec. */
#include "b64url.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

size_t b64url_encoded_len(size_t n)
{
	return (n / 3) * 4 + ((n % 3) ? (n % 3) + 1 : 0);
}

void b64url_encode(const uint8_t *in, size_t n, char *out)
{
	size_t whole = n - n % 3, done = 0, o = 0;
	char tail[5];

	/* Whole 3-byte groups straight into out (EVP_EncodeBlock takes an int, hence chunks); the
	 * last one or two bytes go through a small buffer because their padded form ("xx==") is
	 * longer than what the caller allocated for the unpadded one. */
	while (done < whole) {
		size_t chunk = whole - done > 3 * 4096 ? 3 * 4096 : whole - done;
		o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, in + done, (int)chunk);
		done += chunk;
	}
	if (n > whole) {
		EVP_EncodeBlock((unsigned char *)tail, in + whole, (int)(n - whole));
		memcpy(out + o, tail, n - whole + 1);
		o += n - whole + 1;
	}
	out[o] = '\0';
	for (size_t i = 0; i < o; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
}

static int b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int b64url_decode(const char *in, size_t len, uint8_t *out, size_t out_size, size_t *ret_len)
{
	size_t need, o = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (len % 4 == 1)
		return -EINVAL;
	need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
	if (need > out_size)
		return -ENOBUFS;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value(in[i]);
		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* Leftover bits must be zero, or two encodings would decode to the same bytes. */
	if (acc != 0)
		return -EINVAL;
	*ret_len = o;
	return 0;
}

/* Unit tests of lib/b64url.c: RFC 4648 vectors, the URL alphabet, strict decoding, buffer sizes. */
#include <errno.h>

#include <openssl/evp.h>

#include "b64url.h"
#include "unit.h"

#define CANARY 0xa5

/* Encodes into a buffer of exactly b64url_encoded_len(n) + 1 bytes followed by canaries, so a
 * write past the documented size is caught without a sanitizer. Returns true when none was hit. */
static int encode_checked(const uint8_t *in, size_t n, char *out, size_t out_size)
{
	size_t need = b64url_encoded_len(n) + 1;

	if (need + 8 > out_size)
		return 0;
	memset(out, CANARY, out_size);
	b64url_encode(in, n, out);
	for (size_t i = need; i < need + 8; i++) {
		if ((uint8_t)out[i] != CANARY) {
			fprintf(stderr,
			        "    b64url_encode(n=%zu) wrote byte %zu of a %zu-byte buffer\n", n,
			        i, need);
			return 0;
		}
	}
	return 1;
}

static void test_rfc4648_vectors(void)
{
	static const struct {
		const char *in, *out;
	} v[] = {
	    {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
	    {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
	};
	char buf[64];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t n = strlen(v[i].in), got = 999;
		uint8_t dec[16];

		CHECK_INT(b64url_encoded_len(n), strlen(v[i].out));
		CHECK(encode_checked((const uint8_t *)v[i].in, n, buf, sizeof(buf)));
		CHECK_STR(buf, v[i].out);
		CHECK_INT(b64url_decode(v[i].out, strlen(v[i].out), dec, sizeof(dec), &got), 0);
		CHECK_INT(got, n);
		CHECK_MEM(dec, v[i].in, n);
	}
}

static void test_url_alphabet(void)
{
	static const uint8_t fbff[] = {0xfb, 0xff};
	static const uint8_t fbef[] = {0xfb, 0xef, 0xbe}; /* "++++" in standard base64 */
	static const uint8_t ffff[] = {0xff, 0xff, 0xff}; /* "////" */
	uint8_t dec[8];
	size_t got = 0;
	char buf[32];

	CHECK(encode_checked(fbff, sizeof(fbff), buf, sizeof(buf)));
	CHECK_STR(buf, "-_8");
	CHECK(encode_checked(fbef, sizeof(fbef), buf, sizeof(buf)));
	CHECK_STR(buf, "----");
	CHECK(encode_checked(ffff, sizeof(ffff), buf, sizeof(buf)));
	CHECK_STR(buf, "____");
	CHECK_INT(b64url_decode("-_8", 3, dec, sizeof(dec), &got), 0);
	CHECK_INT(got, 2);
	CHECK_MEM(dec, fbff, 2);
	CHECK_INT(b64url_decode("____", 4, dec, sizeof(dec), &got), 0);
	CHECK_INT(got, 3);
	CHECK_MEM(dec, ffff, 3);
}

/* An encoder written independently of the library: OpenSSL's block encoder, then the URL
 * alphabet and no padding. */
static void reference_encode(const uint8_t *in, size_t n, char *out)
{
	int w = EVP_EncodeBlock((unsigned char *)out, in, (int)n);

	while (w > 0 && out[w - 1] == '=')
		w--;
	out[w] = '\0';
	for (int i = 0; i < w; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

static uint32_t rng_state = 0x12345678;

static uint32_t rng(void)
{
	/* xorshift32: fixed seed, so every run tests the same inputs. */
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

static void test_round_trip(void)
{
	uint8_t in[300], dec[300];
	char enc[420], ref[420];

	size_t overruns = 0;

	for (size_t len = 0; len <= 300; len++) {
		size_t got = 9999;
		for (size_t i = 0; i < len; i++)
			in[i] = (uint8_t)rng();
		if (!encode_checked(in, len, enc, sizeof(enc)))
			overruns++;
		reference_encode(in, len, ref);
		CHECK_STR(enc, ref);
		CHECK_INT(strlen(enc), b64url_encoded_len(len));
		CHECK_INT(b64url_decode(enc, strlen(enc), dec, len, &got), 0);
		CHECK_INT(got, len);
		CHECK_MEM(dec, in, len);
	}
	CHECK_INT(overruns, 0); /* lengths whose encoding wrote past b64url_encoded_len(n) + 1 */
}

/* Encoding a large input goes through the library's chunking; compare with the reference. */
static void test_large(void)
{
	size_t n = 3 * 4096 * 2 + 1;
	uint8_t *in = malloc(n), *dec = malloc(n);
	char *enc = malloc(b64url_encoded_len(n) + 16), *ref = malloc(n * 2);
	size_t got = 0;

	if (!in || !dec || !enc || !ref) {
		CHECK(!"out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		in[i] = (uint8_t)rng();
	CHECK(encode_checked(in, n, enc, b64url_encoded_len(n) + 16));
	reference_encode(in, n, ref);
	CHECK_STR(enc, ref);
	CHECK_INT(b64url_decode(enc, strlen(enc), dec, n, &got), 0);
	CHECK_INT(got, n);
	CHECK_MEM(dec, in, n);
out:
	free(in);
	free(dec);
	free(enc);
	free(ref);
}

static void check_rejects(const char *in, int expected)
{
	uint8_t out[64];
	size_t got = 4242;
	int r = b64url_decode(in, strlen(in), out, sizeof(out), &got);

	if (r != expected)
		fprintf(stderr, "    input: \"%s\"\n", in);
	CHECK_INT(r, expected);
	CHECK_INT(got, 4242); /* untouched on failure */
}

static void test_decode_rejects(void)
{
	check_rejects("Zg==", -EINVAL); /* padding */
	check_rejects("Zm8=", -EINVAL); /* padding */
	check_rejects("Zg=", -EINVAL);
	check_rejects("++++", -EINVAL); /* standard alphabet */
	check_rejects("////", -EINVAL);
	check_rejects("Zm9v+w", -EINVAL);
	check_rejects("Zm9v/w", -EINVAL);
	check_rejects("Z", -EINVAL); /* length % 4 == 1 */
	check_rejects("Zm9vY", -EINVAL);
	check_rejects("Zh", -EINVAL);   /* "f" is Zg: Zh has non-zero trailing bits */
	check_rejects("Zm9", -EINVAL);  /* "fo" is Zm8 */
	check_rejects("-_9", -EINVAL);  /* 0xfb 0xff is -_8 */
	check_rejects("Zm 9", -EINVAL); /* whitespace */
	check_rejects("Zm9v\n", -EINVAL);
	check_rejects("Zm9v.", -EINVAL);
	check_rejects("\xc3\xa9\xc3\xa9", -EINVAL);

	/* An embedded NUL within len is a character outside the alphabet. */
	{
		uint8_t out[8];
		size_t got = 4242;
		CHECK_INT(b64url_decode("Zm\0v", 4, out, sizeof(out), &got), -EINVAL);
		CHECK_INT(got, 4242);
	}
}

static void test_decode_buffer_size(void)
{
	uint8_t out[8];
	size_t got = 4242;

	memset(out, CANARY, sizeof(out));
	CHECK_INT(b64url_decode("Zm9vYmFy", 8, out, 5, &got), -ENOBUFS);
	CHECK_INT(got, 4242);
	CHECK_INT(out[5], CANARY);
	CHECK_INT(b64url_decode("Zm9vYg", 6, out, 3, &got), -ENOBUFS);
	CHECK_INT(b64url_decode("Zg", 2, out, 0, &got), -ENOBUFS);
	CHECK_INT(got, 4242);
	/* Exactly large enough is enough, and nothing past it is written. */
	memset(out, CANARY, sizeof(out));
	CHECK_INT(b64url_decode("Zm9vYg", 6, out, 4, &got), 0);
	CHECK_INT(got, 4);
	CHECK_MEM(out, "foob", 4);
	CHECK_INT(out[4], CANARY);
	/* The empty string decodes to nothing, into no buffer at all. */
	got = 4242;
	CHECK_INT(b64url_decode("", 0, out, 0, &got), 0);
	CHECK_INT(got, 0);
	/* Only len characters are read. */
	CHECK_INT(b64url_decode("Zm9vYmFy", 4, out, sizeof(out), &got), 0);
	CHECK_INT(got, 3);
	CHECK_MEM(out, "foo", 3);
}

static void test_encoded_len(void)
{
	CHECK_INT(b64url_encoded_len(0), 0);
	CHECK_INT(b64url_encoded_len(1), 2);
	CHECK_INT(b64url_encoded_len(2), 3);
	CHECK_INT(b64url_encoded_len(3), 4);
	CHECK_INT(b64url_encoded_len(16), 22); /* jti */
	CHECK_INT(b64url_encoded_len(32), 43); /* kid */
	CHECK_INT(b64url_encoded_len(64), 86); /* ES256 signature */
}

int main(void)
{
	test_rfc4648_vectors();
	test_url_alphabet();
	test_round_trip();
	test_large();
	test_decode_rejects();
	test_decode_buffer_size();
	test_encoded_len();
	return unit_finish("b64url");
}

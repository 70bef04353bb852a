/* The claims both bench tools sign, so the raw baseline and the daemon sign inputs of one size. */
#pragma once

/* An access token as an identity service would ask for one: about 300 bytes of claims. The
 * digits of "sub" are rewritten per request by loadgen (BENCH_SUB_DIGITS wide) so that no two
 * requests are the same. */
#define BENCH_SUB_PREFIX "user-"
#define BENCH_SUB_DIGITS 8
#define BENCH_AUD        "api://orders"
#define BENCH_TYP        "at+jwt"
#define BENCH_CLAIMS                                                                               \
	"{\"sub\":\"" BENCH_SUB_PREFIX "00000042\",\"aud\":\"" BENCH_AUD "\","                     \
	"\"scope\":\"orders:read orders:write profile\",\"client_id\":\"web-frontend\","           \
	"\"azp\":\"web-frontend\",\"sid\":\"8f14e45f-ceea-467f-a0e6-7b4b2a6f1c3d\","               \
	"\"auth_time\":1790000000,\"amr\":[\"pwd\",\"otp\"],\"roles\":[\"customer\","              \
	"\"beta-tester\"],\"tenant\":\"acme-eu-1\"}"

/* What the daemon adds to the claims (iss, iat, exp, jti), for rawsign's payload. */
#define BENCH_ADDED_CLAIMS                                                                         \
	"\"iss\":\"https://login.example.test/bench\",\"iat\":1790000000,\"exp\":1790000900,"      \
	"\"jti\":\"Zm9vYmFyYmF6cXV1eHF1dXg\""

/* A kid as long as an RFC 7638 thumbprint (43 base64url characters). */
#define BENCH_KID "0nX6a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t"

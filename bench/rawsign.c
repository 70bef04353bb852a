/* The floor: C_SignInit+C_Sign on the daemon's own token and key, N threads, no daemon. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "claims.h"
#include "jws.h"

/* How the signing input reaches C_Sign: the same choices as daemon/hsm_algs.c, so that the
 * floor is the token's cost of exactly what the daemon asks of it. */
enum input_kind {
	INPUT_RAW,
	INPUT_DIGEST,
	INPUT_DIGEST_INFO,
};

struct way {
	CK_MECHANISM_TYPE mech;
	enum input_kind input;
	bool pss;
	const char *desc;
};

struct alg {
	const char *name;
	enum jws_alg jws;
	CK_KEY_TYPE key_type;
	const EVP_MD *(*md)(void);
	struct way ways[2];
	size_t n_ways;
};

static const struct alg algs[] = {
    {"ES256",
     JWS_ES256,
     CKK_EC,
     EVP_sha256,
     {{CKM_ECDSA, INPUT_DIGEST, false, "CKM_ECDSA over a SHA-256 digest"}},
     1},
    {"ES384",
     JWS_ES384,
     CKK_EC,
     EVP_sha384,
     {{CKM_ECDSA, INPUT_DIGEST, false, "CKM_ECDSA over a SHA-384 digest"}},
     1},
    {"RS256",
     JWS_RS256,
     CKK_RSA,
     EVP_sha256,
     {{CKM_SHA256_RSA_PKCS, INPUT_RAW, false, "CKM_SHA256_RSA_PKCS"},
      {CKM_RSA_PKCS, INPUT_DIGEST_INFO, false, "CKM_RSA_PKCS over a SHA-256 DigestInfo"}},
     2},
    {"PS256",
     JWS_PS256,
     CKK_RSA,
     EVP_sha256,
     {{CKM_SHA256_RSA_PKCS_PSS, INPUT_RAW, true, "CKM_SHA256_RSA_PKCS_PSS"},
      {CKM_RSA_PKCS_PSS, INPUT_DIGEST, true, "CKM_RSA_PKCS_PSS over a SHA-256 digest"}},
     2},
    {"EdDSA", JWS_EDDSA, CKK_EC_EDWARDS, NULL, {{CKM_EDDSA, INPUT_RAW, false, "CKM_EDDSA"}}, 1},
};

static const uint8_t digest_info_sha256[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                             0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                             0x01, 0x05, 0x00, 0x04, 0x20};

struct options {
	const char *module, *token, *pin_file, *label;
	const struct alg *alg;
	unsigned threads;
	double seconds;
	unsigned long count;
	unsigned warmup;
	bool session_copy;
};

static struct {
	struct options o;
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slot;
	CK_OBJECT_HANDLE key;
	const struct way *way;
	char *input;
	size_t input_len;
	pthread_barrier_t start;
	atomic_bool stop;
	atomic_ulong issued;
	atomic_int failed;
} g;

struct worker {
	pthread_t tid;
	unsigned index;
	unsigned long signs;
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("rawsign: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void check(const char *what, CK_RV rv)
{
	if (rv != CKR_OK)
		die("%s failed: 0x%lx", what, (unsigned long)rv);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User and system CPU of the whole process so far, in seconds. */
static void cpu_s(double *user, double *sys)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	*user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
	*sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void usage(FILE *out)
{
	fputs(
	    "usage: rawsign --module SO --token LABEL --pin-file FILE --label CKA_LABEL\n"
	    "               [--alg ES256|ES384|RS256|PS256|EdDSA] [--threads 2]\n"
	    "               [--seconds 5 | --count N] [--warmup 20] [--session-copy]\n"
	    "Signs a JWS signing input with C_SignInit+C_Sign on the first private key labelled\n"
	    "CKA_LABEL (the daemon's keys are labelled tokensign:ISSUER), one session per thread.\n"
	    "--session-copy signs with a C_CopyObject(CKA_TOKEN=false) copy of the key made in\n"
	    "each thread's session. SOFTHSM2_CONF must name the token's configuration. The last\n"
	    "line of output is one JSON object.\n",
	    out);
}

static void parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
	    {"module", required_argument, NULL, 'm'},   {"token", required_argument, NULL, 't'},
	    {"pin-file", required_argument, NULL, 'p'}, {"label", required_argument, NULL, 'l'},
	    {"alg", required_argument, NULL, 'a'},      {"threads", required_argument, NULL, 'j'},
	    {"seconds", required_argument, NULL, 's'},  {"count", required_argument, NULL, 'n'},
	    {"warmup", required_argument, NULL, 'w'},   {"session-copy", no_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
	};
	const char *alg = "ES256";
	int c;

	*o = (struct options){.threads = 2, .seconds = 5, .warmup = 20};
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			o->module = optarg;
			break;
		case 't':
			o->token = optarg;
			break;
		case 'p':
			o->pin_file = optarg;
			break;
		case 'l':
			o->label = optarg;
			break;
		case 'a':
			alg = optarg;
			break;
		case 'j':
			o->threads = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			o->seconds = strtod(optarg, NULL);
			break;
		case 'n':
			o->count = strtoul(optarg, NULL, 10);
			break;
		case 'w':
			o->warmup = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'c':
			o->session_copy = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		if (strcmp(algs[i].name, alg) == 0)
			o->alg = &algs[i];
	if (!o->alg)
		die("unknown --alg %s", alg);
	if (!o->module || !o->token || !o->pin_file || !o->label || o->threads < 1 ||
	    o->threads > 256 || (o->seconds <= 0 && o->count == 0)) {
		usage(stderr);
		exit(2);
	}
}

static void find_slot(void)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	size_t want = strlen(g.o.token);
	int found = 0;

	check("C_GetSlotList", g.f->C_GetSlotList(CK_TRUE, slots, &n));
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO info;
		size_t len = sizeof(info.label);
		if (g.f->C_GetTokenInfo(slots[i], &info) != CKR_OK)
			continue;
		while (len > 0 && info.label[len - 1] == ' ')
			len--;
		if (len == want && memcmp(info.label, g.o.token, len) == 0) {
			g.slot = slots[i];
			found++;
		}
	}
	if (found != 1)
		die("%d tokens labelled '%s'", found, g.o.token);
}

static void login(CK_SESSION_HANDLE s)
{
	char pin[256];
	FILE *fp = fopen(g.o.pin_file, "r");
	size_t n;
	CK_RV rv;

	if (!fp)
		die("cannot open %s: %s", g.o.pin_file, strerror(errno));
	n = fread(pin, 1, sizeof(pin) - 1, fp);
	fclose(fp);
	while (n > 0 && (pin[n - 1] == '\n' || pin[n - 1] == '\r'))
		n--;
	rv = g.f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, n);
	explicit_bzero(pin, sizeof(pin));
	if (rv != CKR_USER_ALREADY_LOGGED_IN)
		check("C_Login", rv);
}

static void find_key(CK_SESSION_HANDLE s)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_LABEL, (void *)g.o.label, strlen(g.o.label)},
	};
	CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
	CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof(kt)};
	CK_ULONG n = 0;

	check("C_FindObjectsInit", g.f->C_FindObjectsInit(s, tmpl, 2));
	check("C_FindObjects", g.f->C_FindObjects(s, &g.key, 1, &n));
	g.f->C_FindObjectsFinal(s);
	if (n == 0)
		die("no private key labelled '%s' on token '%s'", g.o.label, g.o.token);
	check("C_GetAttributeValue(CKA_KEY_TYPE)", g.f->C_GetAttributeValue(s, g.key, &a, 1));
	if (kt != g.o.alg->key_type)
		die("the key labelled '%s' is not a %s key", g.o.label, g.o.alg->name);
}

static void pick_way(void)
{
	for (size_t i = 0; i < g.o.alg->n_ways; i++) {
		CK_MECHANISM_INFO mi;
		if (g.f->C_GetMechanismInfo(g.slot, g.o.alg->ways[i].mech, &mi) == CKR_OK &&
		    (mi.flags & CKF_SIGN)) {
			g.way = &g.o.alg->ways[i];
			return;
		}
	}
	die("the token has no mechanism to sign %s with", g.o.alg->name);
}

/* The payload the daemon would sign for loadgen's claims: claims + iss, iat, exp, jti. */
static void build_input(void)
{
	static const char claims[] = BENCH_CLAIMS;
	char payload[1024];
	int n = snprintf(payload, sizeof(payload), "{%s,%s", BENCH_ADDED_CLAIMS, claims + 1);

	if (n < 0 || (size_t)n >= sizeof(payload))
		die("payload too long");
	if (jws_signing_input(g.o.alg->jws, BENCH_KID, BENCH_TYP, payload, (size_t)n, &g.input,
	                      &g.input_len) < 0)
		die("cannot build the signing input");
}

/* One signature as the daemon makes it: the digest (when the mechanism wants one) is made
 * here, then C_SignInit+C_Sign. */
static CK_RV sign_one(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key)
{
	CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
	CK_MECHANISM mech = {g.way->mech, g.way->pss ? &pss : NULL, g.way->pss ? sizeof(pss) : 0};
	uint8_t buf[sizeof(digest_info_sha256) + EVP_MAX_MD_SIZE], sig[1024];
	CK_ULONG sig_len = sizeof(sig);
	const uint8_t *data = (const uint8_t *)g.input;
	size_t len = g.input_len, pre = 0;
	unsigned dlen = 0;
	CK_RV rv;

	if (g.way->input != INPUT_RAW) {
		if (g.way->input == INPUT_DIGEST_INFO) {
			pre = sizeof(digest_info_sha256);
			memcpy(buf, digest_info_sha256, pre);
		}
		if (EVP_Digest(g.input, g.input_len, buf + pre, &dlen, g.o.alg->md(), NULL) != 1)
			return CKR_FUNCTION_FAILED;
		data = buf;
		len = pre + dlen;
	}
	rv = g.f->C_SignInit(s, &mech, key);
	if (rv != CKR_OK)
		return rv;
	return g.f->C_Sign(s, (CK_BYTE_PTR)data, len, sig, &sig_len);
}

static const char *bool_attr(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type)
{
	CK_BBOOL v = CK_FALSE;
	CK_ATTRIBUTE a = {type, &v, sizeof(v)};

	if (g.f->C_GetAttributeValue(s, obj, &a, 1) != CKR_OK)
		return "n/a";
	return v ? "true" : "false";
}

/* The security-relevant attributes of the session copy, to show it stays inside the token
 * boundary exactly like the original (sensitive, never extractable). */
static void describe_copy(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE copy)
{
	fprintf(stderr,
	        "rawsign: session copy: original CKA_COPYABLE=%s; copy CKA_TOKEN=%s CKA_PRIVATE=%s "
	        "CKA_SENSITIVE=%s CKA_EXTRACTABLE=%s CKA_ALWAYS_SENSITIVE=%s "
	        "CKA_NEVER_EXTRACTABLE=%s CKA_LOCAL=%s\n",
	        bool_attr(s, g.key, CKA_COPYABLE), bool_attr(s, copy, CKA_TOKEN),
	        bool_attr(s, copy, CKA_PRIVATE), bool_attr(s, copy, CKA_SENSITIVE),
	        bool_attr(s, copy, CKA_EXTRACTABLE), bool_attr(s, copy, CKA_ALWAYS_SENSITIVE),
	        bool_attr(s, copy, CKA_NEVER_EXTRACTABLE), bool_attr(s, copy, CKA_LOCAL));
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key = g.key;
	CK_RV rv;

	check("C_OpenSession",
	      g.f->C_OpenSession(g.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s));
	if (g.o.session_copy) {
		CK_BBOOL no = CK_FALSE;
		CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &no, sizeof(no)}};
		rv = g.f->C_CopyObject(s, g.key, tmpl, 1, &key);
		if (rv == CKR_ACTION_PROHIBITED)
			die("C_CopyObject: CKR_ACTION_PROHIBITED (the key has CKA_COPYABLE false)");
		check("C_CopyObject", rv);
		if (w->index == 0)
			describe_copy(s, key);
	}
	/* The first signatures pay for lazy set-up in the module (key loading, caches). */
	for (unsigned i = 0; i < g.o.warmup; i++)
		check("C_Sign (warm-up)", sign_one(s, key));
	pthread_barrier_wait(&g.start);
	for (;;) {
		if (g.o.count ? atomic_fetch_add(&g.issued, 1) >= g.o.count : atomic_load(&g.stop))
			break;
		rv = sign_one(s, key);
		if (rv != CKR_OK) {
			fprintf(stderr, "rawsign: C_Sign failed: 0x%lx\n", (unsigned long)rv);
			atomic_store(&g.failed, 1);
			atomic_store(&g.stop, true);
			break;
		}
		w->signs++;
	}
	/* Closing the session destroys the session copy with it. */
	g.f->C_CloseSession(s);
	return NULL;
}

int main(int argc, char **argv)
{
	CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
	CK_SESSION_HANDLE s;
	struct worker *workers;
	unsigned long total = 0;
	double t0, t1, u0, u1, s0, s1;

	parse_options(argc, argv, &g.o);
	g.f = p11_kit_module_load(g.o.module, P11_KIT_MODULE_UNMANAGED);
	if (!g.f)
		die("cannot load %s: %s", g.o.module, p11_kit_message());
	check("C_Initialize", g.f->C_Initialize(&init));
	find_slot();
	/* This session holds the login for the whole run, as the daemon's first session does. */
	check("C_OpenSession",
	      g.f->C_OpenSession(g.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s));
	login(s);
	find_key(s);
	pick_way();
	build_input();

	workers = calloc(g.o.threads, sizeof(*workers));
	if (!workers)
		die("out of memory");
	pthread_barrier_init(&g.start, NULL, g.o.threads + 1);
	for (unsigned i = 0; i < g.o.threads; i++) {
		workers[i].index = i;
		if (pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]) != 0)
			die("pthread_create failed");
	}
	pthread_barrier_wait(&g.start);
	t0 = now_s();
	cpu_s(&u0, &s0);
	if (!g.o.count) {
		struct timespec ts = {(time_t)g.o.seconds,
		                      (long)((g.o.seconds - (double)(time_t)g.o.seconds) * 1e9)};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		atomic_store(&g.stop, true);
	}
	for (unsigned i = 0; i < g.o.threads; i++) {
		pthread_join(workers[i].tid, NULL);
		total += workers[i].signs;
	}
	/* Before the session close below, which is not part of the measurement. */
	cpu_s(&u1, &s1);
	t1 = now_s();
	g.f->C_CloseSession(s);
	g.f->C_Finalize(NULL);
	p11_kit_module_release(g.f);
	if (atomic_load(&g.failed) || total == 0)
		die("no clean run (%lu signatures)", total);

	double secs = t1 - t0, cpu = u1 - u0 + s1 - s0;
	printf("rawsign: %s via %s, %s key, %u threads x 1 session: %lu signatures in %.2f s\n",
	       g.o.alg->name, g.way->desc, g.o.session_copy ? "session-copy" : "token", g.o.threads,
	       total, secs);
	printf("rawsign: %.0f signs/s, %.1f us CPU per signature, %.2f CPUs busy\n",
	       (double)total / secs, cpu / (double)total * 1e6, cpu / secs);
	printf("{\"tool\":\"rawsign\",\"alg\":\"%s\",\"mechanism\":\"%s\",\"key\":\"%s\","
	       "\"threads\":%u,\"signs\":%lu,\"seconds\":%.4f,\"signs_per_s\":%.1f,"
	       "\"cpu_us_per_sign\":%.2f,\"user_us_per_sign\":%.2f,\"sys_us_per_sign\":%.2f,"
	       "\"cpus_busy\":%.3f,\"input_bytes\":%zu}\n",
	       g.o.alg->name, g.way->desc, g.o.session_copy ? "session-copy" : "token", g.o.threads,
	       total, secs, (double)total / secs, cpu / (double)total * 1e6,
	       (u1 - u0) / (double)total * 1e6, (s1 - s0) / (double)total * 1e6, cpu / secs,
	       g.input_len);
	free(g.input);
	free(workers);
	return 0;
}

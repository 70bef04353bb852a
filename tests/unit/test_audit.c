/* Unit tests of daemon/audit.c outside the journal: the JSON line written for each token must
 * parse, and name exactly what was signed, whatever bytes the caller put in jti and aud. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "policy.h"
#include "unit.h"

/* The line audit_signed() (or with refused, audit_refused()) writes to stderr, parsed. */
static json_t *record_of(const struct audit_signature *a, bool refused)
{
	FILE *tmp = tmpfile();
	int saved = dup(2);
	char line[8192];
	json_t *doc = NULL;
	size_t n;

	if (!tmp || saved < 0)
		return NULL;
	fflush(stderr);
	dup2(fileno(tmp), 2);
	CHECK_INT(refused ? audit_refused(a) : audit_signed(a), 0);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	n = fread(line, 1, sizeof(line) - 1, tmp);
	line[n] = '\0';
	fclose(tmp);
	/* one line, ending in a newline */
	if (n > 0 && line[n - 1] == '\n' && !memchr(line, '\n', n - 1))
		doc = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
	return doc;
}

static json_t *signed_record(const struct audit_signature *a)
{
	return record_of(a, false);
}

static const char *str(json_t *doc, const char *key)
{
	return json_string_value(json_object_get(doc, key));
}

static void test_plain(void)
{
	struct audit_signature a = {.issuer = "main",
	                            .kid = "nFkmW2rAvUYUQo1-18edS_gLRJFw4eurkn2G8kC-oHA",
	                            .jti = "gyNYht1LhVG776IkoktAvA",
	                            .aud = "\"api://orders\"",
	                            .exp = 1795889881,
	                            .uid = 1000,
	                            .pid = 22391};
	json_t *doc = signed_record(&a);

	CHECK(doc != NULL);
	CHECK_INT(json_object_size(doc), 9);
	CHECK(strcmp(str(doc, "event"), "signed") == 0);
	CHECK(strcmp(str(doc, "result"), "granted") == 0);
	CHECK(strcmp(str(doc, "issuer"), "main") == 0);
	CHECK(strcmp(str(doc, "kid"), a.kid) == 0);
	CHECK(strcmp(str(doc, "jti"), a.jti) == 0);
	CHECK(strcmp(str(doc, "aud"), "api://orders") == 0);
	CHECK_INT(json_integer_value(json_object_get(doc, "exp")), 1795889881);
	CHECK_INT(json_integer_value(json_object_get(doc, "uid")), 1000);
	CHECK_INT(json_integer_value(json_object_get(doc, "pid")), 22391);
	json_decref(doc);
}

static void test_hostile_strings(void)
{
	/* Every byte a JSON string must escape, and UTF-8 that must pass unchanged. */
	const char *jti = "a\"b\\c\n\t\r\b\f\x01\x1f/é€😀";
	struct audit_signature a = {.issuer = "is\"suer",
	                            .kid = "k",
	                            .jti = jti,
	                            .aud = "[\"a\\\"\",\"b\\n\"]",
	                            .exp = -1,
	                            .uid = 4294967295u,
	                            .pid = -1};
	json_t *doc = signed_record(&a);

	CHECK(doc != NULL);
	CHECK(strcmp(str(doc, "jti"), jti) == 0);
	CHECK(strcmp(str(doc, "issuer"), "is\"suer") == 0);
	json_t *aud = json_object_get(doc, "aud");
	CHECK(json_is_array(aud) && json_array_size(aud) == 2);
	CHECK(strcmp(json_string_value(json_array_get(aud, 0)), "a\"") == 0);
	CHECK(strcmp(json_string_value(json_array_get(aud, 1)), "b\n") == 0);
	CHECK_INT(json_integer_value(json_object_get(doc, "exp")), -1);
	CHECK_INT(json_integer_value(json_object_get(doc, "uid")), 4294967295u);
	json_decref(doc);
}

static void test_cut_aud(void)
{
	/* The policy keeps 255 bytes of aud's JSON: a cut piece goes in as a string. */
	struct audit_signature a = {.issuer = "main",
	                            .kid = "k",
	                            .jti = "j",
	                            .aud = "[\"api://a\",\"api://b",
	                            .aud_cut = true};
	json_t *doc = signed_record(&a);

	CHECK(doc != NULL);
	CHECK(strcmp(str(doc, "aud"), "[\"api://a\",\"api://b") == 0);
	json_decref(doc);
}

static void test_refused(void)
{
	/* A refusal names what was known: here the caller and the policy's view of jti and aud. */
	struct audit_signature a = {.issuer = "main",
	                            .jti = "caller-jti",
	                            .aud = "[\"api://nope\"]",
	                            .uid = 1000,
	                            .pid = 7,
	                            .reason = "aud_not_allowed"};
	json_t *doc = record_of(&a, true);

	CHECK(doc != NULL);
	CHECK_INT(json_object_size(doc), 8);
	CHECK(strcmp(str(doc, "event"), "refused") == 0);
	CHECK(strcmp(str(doc, "result"), "refused") == 0);
	CHECK(strcmp(str(doc, "reason"), "aud_not_allowed") == 0);
	CHECK(strcmp(str(doc, "jti"), "caller-jti") == 0);
	CHECK(json_is_array(json_object_get(doc, "aud")));
	CHECK(!json_object_get(doc, "kid") && !json_object_get(doc, "exp"));
	CHECK_INT(json_integer_value(json_object_get(doc, "uid")), 1000);
	json_decref(doc);

	/* Refused before anything but the issuer was known, credentials unreadable. */
	struct audit_signature b = {.issuer = "main", .no_caller = true, .reason = "forbidden"};
	doc = record_of(&b, true);
	CHECK(doc != NULL);
	CHECK_INT(json_object_size(doc), 4);
	CHECK(!json_object_get(doc, "uid") && !json_object_get(doc, "pid"));
	json_decref(doc);

	/* A failed write is reported to the caller ([sign] audit = required relies on it). */
	int fds[2], saved = dup(2);
	CHECK(pipe(fds) == 0);
	close(fds[0]);
	fflush(stderr);
	dup2(fds[1], 2);
	int r = audit_signed(
	    &(struct audit_signature){.issuer = "m", .kid = "k", .jti = "j", .aud = "\"a\""});
	int r2 = audit_refused(&b);
	dup2(saved, 2);
	close(saved);
	close(fds[1]);
	CHECK_INT(r, -EPIPE);
	CHECK_INT(r2, -EPIPE);
}

static void test_long_strings(void)
{
	/* Longer than the line's stack buffer once escaped. */
	char jti[4 * 128 + 1];
	memset(jti, '\x01', sizeof(jti) - 1);
	jti[sizeof(jti) - 1] = '\0';
	struct audit_signature a = {.issuer = "main", .kid = "k", .jti = jti, .aud = "\"x\""};
	json_t *doc = signed_record(&a);

	CHECK(doc != NULL);
	CHECK(doc && strcmp(str(doc, "jti"), jti) == 0);
	json_decref(doc);
}

/* True when s is well-formed UTF-8 (RFC 3629: shortest forms, no surrogates, <= U+10FFFF). */
static bool utf8_valid(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s, n = c < 0x80                ? 0
		                     : c >= 0xc2 && c < 0xe0 ? 1
		                     : c >= 0xe0 && c < 0xf0 ? 2
		                     : c >= 0xf0 && c < 0xf5 ? 3
		                                             : 9;
		uint32_t cp = n == 0 ? c : c & (0x3f >> n);

		if (n == 9)
			return false;
		for (unsigned i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i] & 0x3f);
		}
		if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return false;
		s += n + 1;
	}
	return true;
}

/* An aud whose compact JSON is longer than the 255 bytes the policy keeps for the record, with
 * a character of every width (2, 3, 4 bytes) placed across the cut at every offset: what the
 * policy keeps is valid UTF-8, and the record holding it is valid JSON (jansson rejects
 * invalid UTF-8). As a string and inside an array. */
static void test_cut_aud_utf8(void)
{
	static const char *const wide[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
	static char *types[] = {"JWT"};
	const struct issuer_conf ic = {.name = "main",
	                               .iss = "https://login.example.com/main",
	                               .token_ttl = 900,
	                               .max_token_ttl = 3600,
	                               .token_types = types,
	                               .n_token_types = 1};
	static const uint8_t jti[POLICY_JTI_BYTES] = {0};

	for (size_t w = 0; w < 3; w++) {
		for (size_t pad = 240; pad <= 256; pad++) {
			for (int array = 0; array < 2; array++) {
				char body[1024], a[300];
				struct signing_request sr = {0};
				struct policy_error err = {0};

				memset(a, 'a', pad);
				a[pad] = '\0';
				snprintf(body, sizeof(body),
				         "{\"claims\":{\"aud\":%s\"%s%s%s%s%s%s%s%s%s\"%s}}",
				         array ? "[\"x\"," : "", a, wide[w], wide[w], wide[w],
				         wide[w], wide[w], wide[w], wide[w], wide[w],
				         array ? "]" : "");
				CHECK(policy_apply(&ic, body, strlen(body), 1790000000, jti, &sr,
				                   &err) == 0);
				CHECK(sr.aud_cut);
				CHECK(utf8_valid((const unsigned char *)sr.aud));
				struct audit_signature rec = {.issuer = "main",
				                              .kid = "k",
				                              .jti = sr.jti,
				                              .aud = sr.aud,
				                              .aud_cut = sr.aud_cut};
				json_t *doc = signed_record(&rec);
				CHECK(doc != NULL);
				CHECK(doc && str(doc, "aud") &&
				      strcmp(str(doc, "aud"), sr.aud) == 0);
				json_decref(doc);
				free(sr.payload);
			}
		}
	}
}

int main(void)
{
	unsetenv("JOURNAL_STREAM");
	signal(SIGPIPE, SIG_IGN); /* as the daemon */
	test_plain();
	test_hostile_strings();
	test_cut_aud();
	test_long_strings();
	test_cut_aud_utf8();
	test_refused();
	return unit_finish("audit");
}

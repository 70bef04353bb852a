/* Unit tests of daemon/audit.c outside the journal: the JSON line written for each token must
 * parse, and name exactly what was signed, whatever bytes the caller put in jti and aud. */
#include <fcntl.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "unit.h"

/* The line audit_signed() writes to stderr, parsed. */
static json_t *signed_record(const struct audit_signature *a)
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
	audit_signed(a);
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
	CHECK_INT(json_object_size(doc), 8);
	CHECK(strcmp(str(doc, "event"), "signed") == 0);
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

int main(void)
{
	unsetenv("JOURNAL_STREAM");
	test_plain();
	test_hostile_strings();
	test_cut_aud();
	test_long_strings();
	return unit_finish("audit");
}

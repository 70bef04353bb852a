/* libFuzzer harness for daemon/record.c: any token object value is a record that round-trips
 * exactly, or a refusal with a reason and *ret untouched; any label splits back to itself. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LABEL_MAX 256 /* CKA_LABEL values longer than this are nothing we wrote */

static void check_why(const char *why)
{
	size_t n;

	if (!why)
		abort();
	n = strlen(why);
	if (n == 0 || n > 64)
		abort();
	for (size_t i = 0; i < n; i++)
		if (why[i] < 0x20 || why[i] > 0x7e)
			abort();
}

static bool same_record(const struct record *a, const struct record *b)
{
	return strcmp(a->issuer, b->issuer) == 0 && strcmp(a->iss, b->iss) == 0 &&
	       strcmp(a->kid, b->kid) == 0 && a->alg == b->alg &&
	       memcmp(a->id, b->id, sizeof(a->id)) == 0 && a->seq == b->seq &&
	       a->created_at == b->created_at && a->activates_at == b->activates_at &&
	       a->retires_at == b->retires_at && a->max_token_ttl == b->max_token_ttl &&
	       a->withdrawn_at == b->withdrawn_at;
}

/* What parses is valid, formats, parses back the same, and formatting is a fixed point. */
static void check_accepted(const struct record *r)
{
	char label[RECORD_LABEL_SIZE], issuer[RECORD_ISSUER_MAX + 1], kid[JWK_KID_LEN + 1];
	struct record again;
	const char *why = NULL;
	char *s, *s2;
	int res;

	if (record_check(r, &why) < 0 || r->retires_at < r->activates_at)
		abort();
	s = record_format(r);
	if (!s)
		return; /* ENOMEM */
	res = record_parse(s, strlen(s), &again, &why);
	if (res == 0) {
		if (!same_record(r, &again))
			abort();
		s2 = record_format(&again);
		if (s2 && strcmp(s, s2) != 0)
			abort();
		free(s2);
		record_clear(&again);
	} else if (res != -ENOMEM) {
		abort();
	}
	free(s);
	if (record_label(r->issuer, r->kid, label, sizeof(label)) < 0 ||
	    !record_label_matches(label, r) || record_label_split(label, issuer, kid) < 0 ||
	    strcmp(issuer, r->issuer) != 0 || strcmp(kid, r->kid) != 0)
		abort();
}

static void fuzz_value(const uint8_t *data, size_t size)
{
	struct record r, before;
	const char *why = NULL;
	int res;

	memset(&r, 0x5a, sizeof(r));
	before = r;
	res = record_parse((const char *)data, size, &r, &why);
	if (res == 0) {
		check_accepted(&r);
		record_clear(&r);
	} else if (res == -EINVAL) {
		check_why(why);
		if (memcmp(&r, &before, sizeof(r)) != 0)
			abort();
	} else if (res != -ENOMEM) {
		abort();
	}
}

/* A label that splits is exactly the label of its parts. */
static void fuzz_label(const uint8_t *data, size_t size)
{
	char label[LABEL_MAX + 1], again[RECORD_LABEL_SIZE];
	char issuer[RECORD_ISSUER_MAX + 1], kid[JWK_KID_LEN + 1];

	if (size > LABEL_MAX)
		return;
	memcpy(label, data, size);
	label[size] = '\0';
	memset(issuer, 'i', sizeof(issuer));
	memset(kid, 'k', sizeof(kid));
	if (record_label_split(label, issuer, kid) < 0) {
		for (size_t i = 0; i < sizeof(issuer); i++)
			if (issuer[i] != 'i')
				abort();
		for (size_t i = 0; i < sizeof(kid); i++)
			if (kid[i] != 'k')
				abort();
		return;
	}
	if (record_label(issuer, kid, again, sizeof(again)) < 0 || strcmp(again, label) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_value(data, size);
	fuzz_label(data, size);
	return 0;
}

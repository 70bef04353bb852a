/* The key index and record lists as plain data, and the thread's failure text: the same on both
 * sides of the helper boundary (hsm_types.h). */
#include "hsm_types.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What an operation was doing when it failed, for the one log line the caller writes. */
static __thread char last_error[192];

const char *hsm_last_error(void)
{
	return last_error[0] ? last_error : "no token error";
}

int hsm_fail_text(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return err;
}

void hsm_records_free(struct hsm_record *records, size_t n)
{
	for (size_t i = 0; records && i < n; i++) {
		free(records[i].label);
		free(records[i].value);
	}
	free(records);
}

void hsm_key_index_free(struct hsm_key_index *ix)
{
	if (!ix)
		return;
	free(ix->e);
	free(ix);
}

size_t hsm_key_index_size(const struct hsm_key_index *ix)
{
	return ix->n;
}

const struct hsm_key_object *hsm_key_index_get(const struct hsm_key_index *ix, size_t i)
{
	return &ix->e[i];
}

static int entry_order(const void *a, const void *b)
{
	const struct hsm_key_object *x = a, *y = b;
	int c = (int)x->has_id - (int)y->has_id;

	if (c == 0 && x->has_id)
		c = memcmp(x->id, y->id, HSM_ID_LEN);
	if (c)
		return c;
	return x->handle < y->handle ? -1 : x->handle > y->handle;
}

void hsm_key_index_sort(struct hsm_key_index *ix)
{
	if (ix->n > 0)
		qsort(ix->e, ix->n, sizeof(*ix->e), entry_order);
}

size_t hsm_key_index_first(const struct hsm_key_index *ix, const uint8_t id[HSM_ID_LEN])
{
	size_t lo = 0, hi = ix->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (!ix->e[mid].has_id || memcmp(ix->e[mid].id, id, HSM_ID_LEN) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int hsm_pair_count_check(unsigned long n_priv, unsigned long n_pub)
{
	if (n_priv == 1 && n_pub == 1)
		return 0;
	return hsm_fail_text(n_priv == 0 || n_pub == 0 ? -ENOENT : -EEXIST,
	                     "key pair: %lu private-key and %lu public-key objects visible only "
	                     "after login carry this id",
	                     n_priv, n_pub);
}

int hsm_key_index_pair(const struct hsm_key_index *ix, const uint8_t id[HSM_ID_LEN],
                       const char *label, const struct hsm_key_object **ret_priv,
                       const struct hsm_key_object **ret_pub)
{
	const struct hsm_key_object *priv = NULL, *pub = NULL;
	unsigned long n_priv = 0, n_pub = 0;
	int r;

	for (size_t i = hsm_key_index_first(ix, id);
	     i < ix->n && ix->e[i].has_id && memcmp(ix->e[i].id, id, HSM_ID_LEN) == 0; i++) {
		if (!ix->e[i].private_obj)
			continue;
		if (ix->e[i].private_key && n_priv++ == 0)
			priv = &ix->e[i];
		else if (!ix->e[i].private_key && n_pub++ == 0)
			pub = &ix->e[i];
	}
	if ((r = hsm_pair_count_check(n_priv, n_pub)) < 0)
		return r;
	if (strcmp(priv->label, label) != 0 || strcmp(pub->label, label) != 0)
		return hsm_fail_text(-EPERM, "key objects labelled '%s' and '%s', not '%s'",
		                     priv->label, pub->label, label);
	*ret_priv = priv;
	*ret_pub = pub;
	return 0;
}

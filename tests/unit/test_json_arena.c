/* Unit tests of daemon/http/json_arena.c: jansson's allocations in a scope come from the
 * thread's arena and are given back with it; outside a scope, past the arena's end and on other
 * threads, malloc() as ever. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "json_arena.h"
#include "unit.h"

static const char doc[] = "{\"claims\":{\"sub\":\"user-42\",\"aud\":[\"a\",\"b\"],\"f\":1.5}}";

/* A tree left alive in the arena is reused by the next scope: the same address. malloc()
 * never hands out a live block twice. */
static void test_scope_reuses_the_arena(void)
{
	json_t *a, *b;
	bool began = json_arena_begin();

	CHECK(began);
	CHECK(!json_arena_begin()); /* held already: no nesting */
	a = json_loads(doc, 0, NULL);
	CHECK(a != NULL);
	json_arena_end(began);
	began = json_arena_begin();
	b = json_loads(doc, 0, NULL);
	CHECK(a == b);
	CHECK_STR(json_string_value(json_object_get(json_object_get(b, "claims"), "sub")),
	          "user-42");
	json_decref(b); /* a no-op for the arena's blocks */
	json_arena_end(began);
}

/* Past the arena's size, malloc(): a big tree is whole, and freed block by block. */
static void test_overflow(void)
{
	bool began = json_arena_begin();
	json_t *arr = json_array(), *t;
	char *s;

	for (int i = 0; i < 5000; i++)
		json_array_append_new(arr, json_sprintf("item %d of a tree past the arena", i));
	CHECK_INT(json_array_size(arr), 5000);
	CHECK_STR(json_string_value(json_array_get(arr, 4999)),
	          "item 4999 of a tree past the arena");
	/* Freed before the scope ends, as every tree made in it must be (its first blocks are the
	 * arena's: a sanitizer build reports a use after the end). */
	json_decref(arr);
	json_arena_end(began);
	/* Outside a scope jansson's text is malloc()'s, for free(). */
	t = json_string("item 0 of a tree past the arena");
	s = json_dumps(t, JSON_ENCODE_ANY);
	CHECK_STR(s, "\"item 0 of a tree past the arena\"");
	free(s);
	json_decref(t);
}

static void *other_thread(void *arg)
{
	json_t **ret = arg;
	bool began = json_arena_begin();

	CHECK(began); /* its own arena, while the main thread holds its one */
	*ret = json_loads(doc, 0, NULL);
	json_decref(*ret);
	json_arena_end(began);
	return NULL;
}

static void test_threads_have_their_own(void)
{
	bool began = json_arena_begin();
	json_t *mine = json_loads(doc, 0, NULL), *theirs = NULL;
	pthread_t t;

	CHECK(began);
	CHECK(pthread_create(&t, NULL, other_thread, &theirs) == 0);
	pthread_join(t, NULL);
	CHECK(theirs != NULL && theirs != mine);
	CHECK_STR(json_string_value(json_object_get(json_object_get(mine, "claims"), "sub")),
	          "user-42");
	json_decref(mine);
	json_arena_end(began);
}

#if defined(__SANITIZE_ADDRESS__)
/* Under AddressSanitizer the arena poisons what it took back: a value read after the scope
 * ends is reported (use-after-poison) and the process dies, as with malloc()'s freed memory. */
static void test_use_after_scope_is_caught(void)
{
	pid_t pid = fork();
	int status = 0;

	CHECK(pid >= 0);
	if (pid == 0) {
		bool began = json_arena_begin();
		json_t *t = json_loads(doc, 0, NULL);
		const char *sub;

		if (!began || !t)
			_exit(3);
		sub = json_string_value(json_object_get(json_object_get(t, "claims"), "sub"));
		json_decref(t);
		json_arena_end(began);
		/* stderr closed: the report is expected, not a failure of this test */
		close(2);
		_exit(sub[0] == 'u' ? 0 : 4); /* the read the sanitizer must stop */
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(!(WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 4)));
}
#else
static void test_use_after_scope_is_caught(void)
{
}
#endif

int main(void)
{
	bool began = json_arena_begin();

	CHECK(!began); /* not installed: nothing changes */
	json_arena_end(began);
	json_arena_install();
	began = json_arena_begin();
	json_arena_end(began);
	CHECK(began);
	test_scope_reuses_the_arena();
	test_overflow();
	test_threads_have_their_own();
	test_use_after_scope_is_caught();
	printf("json_arena: %u checks, %u failed\n", unit_checks, unit_failures);
	return unit_failures ? 1 : 0;
}

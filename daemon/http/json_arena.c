/* A per-thread arena for jansson's allocations while one request body is parsed and judged:
 * jansson makes about 70 allocations for a 300-byte sign request (a node, a hash table and a
 * key per member, a string per value, its lexer's buffers), each a malloc() and a free(). Here
 * they are cut from a buffer of the thread's own and all given back at once. */
#include "json_arena.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

/* Under AddressSanitizer the arena stays on, and tells it which bytes are handed out: all of it
 * is poisoned outside a scope and between allocations, so a value used after
 * json_arena_end() (the next request reuses the bytes), read past its end, or freed with
 * free() (another thread's, or a json_dumps() result) is reported as for malloc's memory. */
#if defined(__SANITIZE_ADDRESS__)
#define JSON_ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JSON_ARENA_ASAN 1
#endif
#endif
#ifdef JSON_ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define arena_poison(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define arena_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define arena_poison(p, n)   ((void)(p), (void)(n))
#define arena_unpoison(p, n) ((void)(p), (void)(n))
#endif
/* MemorySanitizer does not know the arena: jansson's memory stays malloc's there. */
#if defined(__has_feature)
#if __has_feature(memory_sanitizer)
#define JSON_ARENA_OFF 1
#endif
#endif
#ifndef JSON_ARENA_OFF
#define JSON_ARENA_OFF 0
#endif

/* Room for the tree of a typical sign request many times over; a bigger one overflows into
 * malloc(). Made at a thread's first scope, so that only the threads that judge request bodies
 * (the sign workers) have one, and freed when the thread ends. */
#define ARENA_SIZE  (32 * 1024)
#define ARENA_ALIGN 16

static __thread unsigned char *arena;
static __thread size_t arena_used;
static __thread bool arena_on;
static atomic_bool installed;
static pthread_key_t arena_key;

static void *arena_malloc(size_t size)
{
	size_t n = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);

	if (arena_on && n >= size && n <= ARENA_SIZE - arena_used) {
		void *p = arena + arena_used;
		arena_used += n;
		/* The rounding stays poisoned: a read past size is caught. */
		arena_unpoison(p, size);
		return p;
	}
	return malloc(size);
}

/* A pointer into this thread's arena is given back with the whole arena; any other came from
 * malloc(), on this thread or another. */
static void arena_free(void *p)
{
	uintptr_t a = (uintptr_t)arena, q = (uintptr_t)p;

	if (arena && q >= a && q < a + ARENA_SIZE)
		return;
	free(p);
}

void json_arena_install(void)
{
	if (JSON_ARENA_OFF || pthread_key_create(&arena_key, free) != 0)
		return;
	json_set_alloc_funcs(arena_malloc, arena_free);
	atomic_store(&installed, true);
}

bool json_arena_begin(void)
{
	if (arena_on || !atomic_load_explicit(&installed, memory_order_relaxed))
		return false;
	if (!arena) {
		arena = aligned_alloc(ARENA_ALIGN, ARENA_SIZE);
		if (!arena)
			return false;
		/* Freed with the thread (the key's destructor). */
		pthread_setspecific(arena_key, arena);
	}
	arena_used = 0;
	arena_on = true;
	arena_poison(arena, ARENA_SIZE);
	return true;
}

void json_arena_end(bool began)
{
	if (!began)
		return;
	arena_on = false;
	arena_used = 0;
	arena_poison(arena, ARENA_SIZE);
}

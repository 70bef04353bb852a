/* A per-thread arena for jansson's allocations while one request body is parsed and judged. */
#pragma once
#include <stdbool.h>

/* Makes jansson allocate through the arena's functions (json_set_alloc_funcs()). Call once,
 * before any other thread uses jansson; without it json_arena_begin() does nothing (the unit
 * tests and fuzz harnesses). Under AddressSanitizer the arena poisons what it has not handed
 * out, so misuse is reported as for malloc's memory (json_arena.c). */
void json_arena_install(void);

/* From here to json_arena_end(), this thread's jansson allocations are cut from its arena
 * (beyond its size they come from malloc() as ever) and freeing them is a no-op. Every jansson
 * value made meanwhile must be freed before json_arena_end() and never reach another thread.
 * Returns whether the arena was taken (false: not installed, or this thread holds it
 * already); pass that to json_arena_end(). */
bool json_arena_begin(void);
void json_arena_end(bool began);

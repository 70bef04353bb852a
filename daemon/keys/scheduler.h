/* The thread that moves keys through their lifecycle: it sleeps until the next transition (or
 * the rescan interval), then maintains the keyring. */
#pragma once
#include <stdint.h>

#include "keyring.h"

struct scheduler;

/* rescan: the longest sleep, so that changes made by other instances on the same token are
 * seen within it. */
int scheduler_start(struct keyring *kr, int64_t rescan, struct scheduler **ret);

/* Wakes the thread now (after an operator changed the schedule). */
void scheduler_poke(struct scheduler *s);

void scheduler_stop(struct scheduler *s);

/* The rescan interval for a configuration: half the shortest prepublish, within 1 to 30 s. */
int64_t scheduler_rescan_interval(const struct conf *conf);

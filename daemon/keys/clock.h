/* The daemon's one wall clock: every "now" of the schedule, the signing path and status. */
#pragma once
#include <stdint.h>

/* The current wall-clock second, read from the precise clock. time() reads the kernel's coarse
 * clock, which a few milliseconds into a second may still say the one before: a scheduler woken
 * for second S would then see S - 1, and an operator's "now" could land a second in the past. */
int64_t clock_now(void);

/* The wall clock, in one place, so that no unit depends on the scheduler to read the time. */
#include "clock.h"

#include <time.h>

int64_t clock_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

/* SPDX-License-Identifier: ISC */
/*
 * Clocks and the one conversion to libevent's struct timeval.  Durations
 * are int64_t milliseconds everywhere (the configuration's unit); deadlines
 * on the wire are wall-clock ms (proto/PROTOCOL.md), everything the daemon
 * times itself is monotonic.
 */
#ifndef TG_TIMEUTIL_H
#define TG_TIMEUTIL_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

/* ms (>= 0) as a struct timeval for evtimer_add(). */
static inline struct timeval
tv_ms(int64_t ms)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000 * 1000);
	return tv;
}

/* Monotonic ms: what the daemon times itself (back-off, flood control). */
static inline int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic µs: latencies for the histograms. */
static inline uint64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Wall-clock ms (CLOCK_REALTIME): the unit of deadlines on the wire. */
static inline int64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif

/* SPDX-License-Identifier: ISC */
/*
 * Running a test's event loop until something happened, for unit tests of
 * modules that live on libevent (the pool, the API client, dead letters).
 * Conditions are waited for, never slept for; the bound is generous, so a
 * loaded machine or a sanitizer build only makes a test slower.
 */
#ifndef TG_TESTLOOP_H
#define TG_TESTLOOP_H

#include <stdint.h>

#include <check.h>
#include <event2/event.h>

#include "timeutil.h"

#define TESTLOOP_TICK_MS	10
/*
 * libevent times with CLOCK_MONOTONIC_COARSE (a few ms of resolution), so
 * a timer of N ms may fire up to that much early by a precise clock: a
 * lower bound on a delay allows for it.
 */
#define TESTLOOP_SLACK_MS	10

static inline void
testloop_tick(evutil_socket_t fd, short ev, void *arg)
{
	event_base_loopbreak(arg);
}

/*
 * Run base until cond(arg) holds or timeout_ms pass; returns whether it
 * holds.  what names the condition in the failure message of
 * TESTLOOP_UNTIL.
 */
static inline int
testloop_run(struct event_base *base, int (*cond)(void *), void *arg,
    int64_t timeout_ms)
{
	struct timeval	 tick = tv_ms(TESTLOOP_TICK_MS);
	struct event	*ev = event_new(base, -1, EV_PERSIST, testloop_tick,
			    base);
	int64_t		 end = mono_ms() + timeout_ms;
	int		 ok;

	event_add(ev, &tick);
	while (!(ok = cond(arg)) && mono_ms() < end)
		event_base_loop(base, 0);
	event_free(ev);
	return ok;
}

/* Run the loop for ms, whatever happens (to see that something does not). */
static inline int
testloop_never(void *arg)
{
	(void)arg;
	return 0;
}

static inline void
testloop_for(struct event_base *base, int64_t ms)
{
	testloop_run(base, testloop_never, NULL, ms);
}

#define TESTLOOP_UNTIL(base, cond, arg, ms, what)			\
	ck_assert_msg(testloop_run((base), (cond), (arg), (ms)),	\
	    "timed out after %d ms waiting for %s", (int)(ms), (what))

#endif

/*
 * The journal on the event loop (durable.h).
 */
#include "config.h"

#include <stdlib.h>

#include <event2/event.h>

#include "durable.h"
#include "journal.h"
#include "log.h"
#include "poller.h"
#include "timeutil.h"
#include "xmalloc.h"

#define DURABLE_RETRY_MIN_MS	100
#define DURABLE_RETRY_MAX_MS	30000

struct durable {
	struct journal	*journal;
	void		(*ready)(void *);
	void		(*flushed)(void *);
	void		*arg;
	struct event	*ev_flush;	/* done marks, once per loop pass */
	struct event	*ev_synced;	/* the journal's sync thread */
	struct event	*ev_resync;	/* retry after a failed sync */
	int		 fails;		/* syncs failed in a row */
};

static void
durable_ok(struct durable *du)
{
	if (du->fails > 0)
		log_notice("journal: durable again after %d failed attempt(s)",
		    du->fails);
	du->fails = 0;
	du->ready(du->arg);
}

/* Nothing new is fetched until the fetched updates are safe: retry. */
static void
durable_failed(struct durable *du)
{
	struct timeval tv;
	int64_t ms;

	du->fails++;
	ms = poller_backoff_ms(du->fails, DURABLE_RETRY_MIN_MS,
	    DURABLE_RETRY_MAX_MS, (double)random() / ((double)RAND_MAX + 1.0));
	log_errx("journal: the last batch is not durable; not fetching, "
	    "retrying in %lld ms", (long long)ms);
	tv = tv_ms(ms);
	evtimer_add(du->ev_resync, &tv);
}

/* A sync of the fetched batch returned rc. */
static void
durable_verdict(struct durable *du, int rc)
{
	if (rc == 0)
		durable_ok(du);
	else
		durable_failed(du);
}

/* The sync thread finished the batch's fdatasync. */
static void
durable_synced(evutil_socket_t fd, short what, void *arg)
{
	struct durable *du = arg;

	durable_verdict(du, journal_sync_finish(du->journal));
}

/* The retry after a failed sync: on the loop this time. */
static void
durable_resync(evutil_socket_t fd, short what, void *arg)
{
	struct durable *du = arg;

	durable_verdict(du, journal_make_durable(du->journal));
}

static void
durable_flush(evutil_socket_t fd, short what, void *arg)
{
	struct durable *du = arg;

	journal_flush(du->journal);
	du->flushed(du->arg);
}

/*
 * Done marks wait in the journal until the end of the event-loop pass:
 * one write() for every done frame read in the pass.  The event is made
 * active, so it runs after the callbacks already due in this pass and
 * before the loop waits again.  Calls attached to those updates leave
 * after their marks: their requests start on this pass at the earliest,
 * and go out when curl runs on a later one.  It runs even when nothing
 * waits (mode off, or the marks rode along with a batch): the calls whose
 * answers were recorded need their request slots back.
 */
void
durable_dirty(struct durable *du)
{
	if (!event_pending(du->ev_flush, EV_TIMEOUT, NULL))
		event_active(du->ev_flush, EV_TIMEOUT, 0);
}

void
durable_flush_now(struct durable *du)
{
	if (journal_dirty(du->journal))
		journal_flush(du->journal);
}

struct durable *
durable_new(struct event_base *base, struct journal *j,
    void (*ready)(void *), void (*flushed)(void *), void *arg)
{
	struct durable *du = xcalloc(1, sizeof(*du));

	du->journal = j;
	du->ready = ready;
	du->flushed = flushed;
	du->arg = arg;
	du->ev_flush = event_new(base, -1, 0, durable_flush, du);
	du->ev_resync = evtimer_new(base, durable_resync, du);
	if (du->ev_flush == NULL || du->ev_resync == NULL)
		fatalx(EXIT_NOMEM, "%s: event_new", __func__);
	if (journal_sync_fd(j) != -1) {
		du->ev_synced = event_new(base, journal_sync_fd(j),
		    EV_READ | EV_PERSIST, durable_synced, du);
		if (du->ev_synced == NULL)
			fatalx(EXIT_NOMEM, "%s: event_new", __func__);
		event_add(du->ev_synced, NULL);
	}
	return du;
}

void
durable_free(struct durable *du)
{
	if (du == NULL)
		return;
	if (du->ev_synced != NULL)
		event_free(du->ev_synced);
	event_free(du->ev_resync);
	event_free(du->ev_flush);
	free(du);
}

/*
 * The outbox: calls attached to done are owed from the moment their update
 * is done, like the update was before.  They are journaled in the record of
 * the done mark (journal_done_calls), handed to the API client once that
 * record is written, and marked answered in the journal once Telegram has
 * answered them.  On start, the calls the journal still owes are queued
 * before any other call, in the order they were issued.
 *
 * Every owed call holds its request slot until its answer is recorded
 * (API_HOLD): at most api_max_inflight calls are ever sent and not
 * recorded, which bounds what a kill can make go out twice.
 * proto/JOURNAL.md states the guarantee.
 */
#ifndef TG_OUTBOX_H
#define TG_OUTBOX_H

#include <stddef.h>

#include <jansson.h>

struct api;
struct durable;
struct evbuffer;
struct job;
struct journal;
struct outbox;

/* api, journal and durable are borrowed; free the outbox after the api. */
struct outbox	*outbox_new(struct api *, struct journal *, struct durable *);
void		 outbox_free(struct outbox *);
/*
 * job is done; calls (borrowed, may be NULL or empty) were attached to its
 * done.  Marks the update done in the journal, with its calls.
 */
void		 outbox_done(struct outbox *, const struct job *, json_t *calls);
/*
 * The done marks were written (durable.h): hand the calls journaled since
 * to the API client, and free the slots of the answers recorded.
 */
void		 outbox_flushed(struct outbox *);
/* Queue the calls the journal found owed at open: returns their number. */
size_t		 outbox_replay(struct outbox *);
/* Calls owed: queued, held by flood control, in flight. */
size_t		 outbox_owed(const struct outbox *);
/* For status: {"owed":N, "oldest_age":S, "replayed":N, ...}. */
json_t		*outbox_status(const struct outbox *);
/* For /metrics: the tgrunner_outbox_* families. */
void		 outbox_metrics(const struct outbox *, struct evbuffer *);

#endif

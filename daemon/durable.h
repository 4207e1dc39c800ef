/*
 * The journal on the event loop.  journal.c does the file work and knows
 * no loop; this drives it: done marks wait until the end of a loop pass
 * and go out in one write, the sync thread's verdict on a fetched batch is
 * read from the loop, and a batch that is not durable is synced again with
 * back-off.  Nothing new is fetched meanwhile: the caller confirms fetched
 * updates to Telegram only when told they are durable.
 */
#ifndef TG_DURABLE_H
#define TG_DURABLE_H

struct durable;
struct event_base;
struct journal;

/*
 * ready(arg) runs each time the fetched updates became durable; flushed(arg)
 * after each end-of-pass write of the done marks (written, or failed and
 * logged): the answers of held calls are recorded then.
 */
struct durable	*durable_new(struct event_base *, struct journal *,
		    void (*ready)(void *arg), void (*flushed)(void *arg),
		    void *arg);
void		 durable_free(struct durable *);
/* Done marks were added: write them at the end of this loop pass. */
void		 durable_dirty(struct durable *);
/*
 * Write the done marks waiting now (synced in mode always), not at the end
 * of the pass: a getUpdates is about to leave.
 */
void		 durable_flush_now(struct durable *);

#endif

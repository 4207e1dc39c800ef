/*
 * The journal: every fetched update is made durable here before the offset
 * that confirms it is sent to Telegram, and marked done when a worker has
 * finished it.  The calls attached to a done update are written in the
 * same record as its done mark and stay owed (the outbox) until Telegram
 * has answered them.  On start the unfinished updates and the owed calls
 * are replayed.  The on-disk format is specified in proto/JOURNAL.md.
 */
#ifndef TG_JOURNAL_H
#define TG_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "conf.h"
#include "rcstr.h"

struct evbuffer;
struct journal;

struct jupdate {
	int64_t		 id;		/* update_id */
	const char	*json;		/* compact JSON of the Update object */
	size_t		 len;
};

/* The largest Update a record holds (bytes of JSON). */
#define JOURNAL_UPDATE_MAX	(16u * 1024 * 1024 - 9)

/* A call attached to a done update, as journal_done_calls() takes it. */
struct jcall_in {
	const char	*key;		/* session key it is ordered by, or NULL */
	const char	*method;	/* [A-Za-z0-9_]{1,64} */
	json_t		*params;	/* borrowed; NULL: {} */
};

/* An owed call, as journal_calls_replay() shows it (all borrowed). */
struct jcall_out {
	uint64_t	 seq;		/* issue order, unique in the journal */
	int64_t		 update_id;
	const char	*key;		/* NULL: unordered */
	const char	*method;
	const char	*params;	/* compact JSON object */
	size_t		 len;
};

/*
 * Open (create) the journal in dir (created mode 0700 if missing).  A dir
 * owned by another user, or writable by group or others, is refused.  mode
 * FSYNC_OFF keeps nothing on disk: a purely in-memory journal with the same
 * interface.  Mode FSYNC_BATCH starts a thread that runs fdatasync for
 * journal_append_async().  Returns NULL with a message in err on failure.
 * A damaged file is read around its damage (logged; the file is kept as
 * journal.damaged.<time>), a file of an older format is rewritten in the
 * current one.  journal_close() writes the waiting done marks, waits for a
 * sync in flight and ends the thread.
 */
struct journal	*journal_open(const char *dir, enum fsync_mode mode,
		    char *err, size_t errlen);
void		 journal_close(struct journal *);

/*
 * Visit the unfinished updates found at open, in update_id order.  attempt
 * is the number of times the update may have been started already plus one
 * (>= 2 for every replayed update: it was fetched by an earlier run).  The
 * journal records that they were replayed, so a crash loop is counted.
 */
int		 journal_replay(struct journal *,
		    void (*cb)(void *arg, int64_t id, const char *json, size_t len,
		    int attempt), void *arg);

/*
 * Drop from u[0..*n) the updates already journaled (Telegram resending a
 * batch that was stored but not yet confirmed), compacting the array in
 * place.  An id <= the highest journaled id is a duplicate unless the
 * journal has been idle long enough (6 days) for Telegram to have restarted
 * its id sequence.  now is wall-clock time.
 */
void		 journal_filter(struct journal *, struct jupdate *u, size_t *n,
		    time_t now);

/*
 * Append a batch and make it durable per the fsync mode (always/batch: one
 * fsync before returning).  Returns 0 when the batch is safe, -1 with errno
 * and a logged message otherwise (disk full, read-only): the caller must not
 * confirm the batch to Telegram then.
 */
int		 journal_append(struct journal *, const struct jupdate *u,
		    size_t n, time_t now);

/*
 * The same, without waiting for the disk in mode batch: the batch is
 * written (it survives the process being killed) and accepted, and 1 is
 * returned while fdatasync runs on the sync thread.  The caller may hand
 * the updates out at once but must not confirm them to Telegram until
 * journal_sync_finish() returned 0: when journal_sync_fd() is readable.
 * Other modes, or no thread: as journal_append() (0 or -1).
 */
int		 journal_append_async(struct journal *, const struct jupdate *u,
		    size_t n, time_t now);
/* Readable when a sync finished; -1 if there is no sync thread. */
int		 journal_sync_fd(const struct journal *);
/*
 * Collect the finished sync: 0 when the batch is durable.  A failed
 * fdatasync (logged) is answered by rewriting the journal from memory;
 * -1 if that failed too: retry with journal_make_durable() later.
 */
int		 journal_sync_finish(struct journal *);
/* Rewrite the journal from memory and sync it: 0 when it is durable. */
int		 journal_make_durable(struct journal *);

/*
 * Mark an update finished (done, or dead-lettered).  The mark waits in
 * memory for journal_flush() (or the next append): one write for all the
 * marks of an event-loop pass, instead of one per update.  Until then a
 * killed daemon runs the update again (at-least-once).
 */
int		 journal_done(struct journal *, int64_t id);
/*
 * Mark update id done and owe its calls, in one record: a crash never
 * separates the two.  calls[i] gets the sequence number *first + i (issue
 * order).  The record waits for journal_flush() like a done mark; calls
 * must not reach the network before it is written.  n == 0 is
 * journal_done().  Method names must be valid (the caller checks).
 */
void		 journal_done_calls(struct journal *, int64_t id,
		    const struct jcall_in *calls, size_t n, time_t now,
		    uint64_t *first);
/*
 * Telegram answered call seq (ok, or an error that is final): it is owed
 * no more.  The mark waits for journal_flush() like a done mark.
 */
void		 journal_call_done(struct journal *, uint64_t seq);
/*
 * Visit the calls found owed at open, in issue order (once: a second call
 * visits nothing).  Returns their number.
 */
size_t		 journal_calls_replay(struct journal *,
		    void (*cb)(void *arg, const struct jcall_out *), void *arg);
/* Calls owed (not answered yet), and when the oldest became owed (0: none). */
size_t		 journal_calls_owed(const struct journal *);
int64_t		 journal_calls_oldest(const struct journal *);
/*
 * Write the waiting done marks (synced in mode always).  -1 if they could
 * not be written: the journal is rewritten from memory as soon as writing
 * works again.
 */
int		 journal_flush(struct journal *);
/* Are done marks waiting for journal_flush()? */
int		 journal_dirty(const struct journal *);
/*
 * The JSON of an unfinished update, shared: take a reference to keep it
 * past journal_done().  NULL if id is not unfinished.
 */
struct rcstr	*journal_text(const struct journal *, int64_t id);

/* The offset for the next getUpdates: highest journaled id + 1, 0 if none. */
int64_t		 journal_next_offset(const struct journal *);
size_t		 journal_pending(const struct journal *);	/* unfinished updates */
/* Bytes of records; the file also holds up to 1 MiB of zeros written ahead. */
uint64_t	 journal_bytes(const struct journal *);
uint64_t	 journal_compactions(const struct journal *);
/* Does the journal live in a file (every mode but FSYNC_OFF)? */
int		 journal_on_disk(const struct journal *);
/* For status: {"pending":N, "bytes":N, "compactions":N, "fsync":bool}. */
json_t		*journal_status(const struct journal *);
/* For /metrics: the tgrunner_journal_* families. */
void		 journal_metrics(const struct journal *, struct evbuffer *);

#endif

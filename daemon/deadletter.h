/*
 * The dead-letter store: updates the daemon gave up on, kept in
 * <state_dir>/dead-letters.jsonl, one JSON object per line:
 *
 *	{"update_id":N,"attempts":N,"reason":"...","t":UNIX,"update":{...}}
 *
 * The file is the record an operator acts on, so an update is marked done
 * in the journal only once its dead letter is on disk (written and
 * fsynced).  A write that fails (a full disk, a read-only file system) is
 * tried again with back-off; meanwhile the update stays unfinished in the
 * journal, which replays it after a restart if it never gets written.
 */
#ifndef TG_DEADLETTER_H
#define TG_DEADLETTER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct deadletter;
struct rcstr;

#define DEADLETTER_FILE		"dead-letters.jsonl"
#define DEADLETTER_PENDING_MAX	1024	/* unwritten letters kept for retry */

/* A dead letter reached the disk after a failed write: mark it done now. */
typedef void (*deadletter_written_fn)(void *arg, int64_t id);
/*
 * A dead letter chosen for another try: journal json[0..len) again and
 * queue it.  0 if taken (its line leaves the file), -1 to keep it.
 */
typedef int (*deadletter_requeue_fn)(void *arg, int64_t id, const char *json,
    size_t len);

/* state_dir is copied.  written runs from the loop, never from a call here. */
struct deadletter *deadletter_new(struct event_base *, const char *state_dir,
		    deadletter_written_fn written, void *arg);
/* Letters still unwritten are dropped: their updates stay in the journal. */
void		 deadletter_free(struct deadletter *);

/*
 * Append one dead letter and fsync it.  0 once it is on disk, -1 if not
 * (logged, errno set).  Nothing is kept on failure: see deadletter_add().
 */
int		 deadletter_write(struct deadletter *, int64_t id, int attempts,
		    const char *reason, const struct rcstr *text);
/*
 * Give up on update id.  text (the update's JSON) gains a reference while
 * the letter waits.  Returns
 *   0  written: the caller marks the update done now;
 *   1  not written yet: kept and retried with back-off, behind any letters
 *      already waiting; written(arg, id) says when it is on disk;
 *  -1  not written and not kept (DEADLETTER_PENDING_MAX letters wait):
 *      the update stays unfinished in the journal until the next start.
 */
int		 deadletter_add(struct deadletter *, int64_t id, int attempts,
		    const char *reason, struct rcstr *text);
/* Letters waiting for a retry of their write. */
size_t		 deadletter_pending(const struct deadletter *);

/* For `dead-letters`: {"ok":true,"dead_letters":[...]} without the updates. */
json_t		*deadletter_list(struct deadletter *);
/*
 * For `dead-letters retry ID|all`: offer the letter of update *id (every
 * letter when id is NULL) to requeue; the file is rewritten (temporary
 * file, rename) without those taken.  Returns {"ok":true,"requeued":N},
 * or {"ok":false,"error":...,"requeued":N} when *id is not among the dead
 * letters, or when a letter could not be requeued (it stays in the file).
 */
json_t		*deadletter_retry(struct deadletter *, const int64_t *id,
		    deadletter_requeue_fn requeue, void *arg);

#endif

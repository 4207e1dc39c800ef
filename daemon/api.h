/*
 * Bot API calls on behalf of workers, so that workers never need the token
 * or an HTTP client.  Calls that carry the same session key run one at a
 * time in the order issued (a chat's replies never overtake each other);
 * other keys' calls run in parallel, up to api_max_inflight in flight.
 * Messages are paced centrally (flood control, flood.h): a global limit
 * and one per chat; a 429 pauses its chat (or everything) for
 * retry_after and the call is retried up to max_call_retries times.
 */
#ifndef TG_API_H
#define TG_API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct evbuffer;
struct http;
struct conf;
struct api;

struct api_result {
	int		 ok;
	json_t		*result;	/* ok: the "result" member (borrowed) */
	int		 error_code;	/* !ok: Telegram's, or 5xx/599 of ours */
	const char	*description;
	json_t		*parameters;	/* !ok: Telegram's "parameters" (borrowed) */
	int		 retry_after;
};

/* Called exactly once per accepted call, never from inside api_call(). */
typedef void (*api_cb)(void *arg, const struct api_result *);

struct api	*api_new(struct event_base *, struct http *, const struct conf *,
		    const char *token);
/* Drops queued calls without calling their callbacks. */
void		 api_free(struct api *);
/*
 * Queue method(params) behind the calls already queued for key (NULL: no
 * ordering).  params is borrowed (serialised at once).  Returns 0, or -1
 * when the queue is full (api_max_queued) or the method name is invalid
 * (cb not called).  The limits of the struct conf given to api_new are
 * read at each use, so a reload that swaps them in applies at once.
 */
int		 api_call(struct api *, const char *key, const char *method,
		    json_t *params, int flags, api_cb cb, void *arg);
#define API_NOLIMIT	0x1	/* past api_max_queued too: a reply already owed */

/* Who made a call: a worker (its id, > 0) and the update it is for (0: none). */
struct api_from {
	int		 worker;
	int64_t		 update;
};
/*
 * api_call() for a worker's call (from may be NULL: nobody's).  It counts
 * towards the bounds of its key and of from->worker: check api_bounded()
 * first unless the call is owed (API_NOLIMIT).
 */
int		 api_call_from(struct api *, const struct api_from *,
		    const char *key, const char *method, json_t *params,
		    int flags, api_cb cb, void *arg);
/*
 * Is a new call for key (NULL: none) from worker (0: none) beyond a bound?
 * 0, or API_BOUND_KEY / API_BOUND_WORKER: the key or the worker has
 * max_calls_per_key / max_calls_per_worker calls queued (and not yet
 * drained to half of that).  Each answer but 0 is counted as a refusal.
 */
#define API_BOUND_KEY		1
#define API_BOUND_WORKER	2
#define API_BOUND_RETRY_AFTER	5	/* seconds, in the 429 the caller gives */
int		 api_bounded(struct api *, const char *key, int worker);
/* Is key past its bound (its updates are to wait)? */
int		 api_key_over(const struct api *, const char *key);
/*
 * cb(arg, key, 0, over) when key goes past its bound (over 1) or is back
 * under half of it (over 0); cb(arg, NULL, worker, over) the same for a
 * worker.  Called from inside api functions, after their bookkeeping: cb
 * must not call api_call() or api_drop_orphans().
 */
void		 api_on_bound(struct api *, void (*cb)(void *arg,
		    const char *key, int worker, int over), void *arg);
/*
 * Calls queued that count towards the daemon's global pause: all but
 * those of workers that are past their bound (held back on their own).
 */
size_t		 api_gated(const struct api *);
/* The worker is gone: its calls that did not go out may be dropped. */
void		 api_worker_gone(struct api *, int worker);
/*
 * update runs again after its worker died: drop the calls that worker made
 * for it that have not gone out (not the owed ones, API_NOLIMIT), so that
 * the retry does not make them twice.  Their callbacks get a 409 result
 * now.  Returns how many were dropped.
 */
size_t		 api_drop_orphans(struct api *, int64_t update);
/*
 * Its request slot stays taken after the answer, until api_settle(): the
 * caller records the answer (in the journal) before another request may
 * start, so that at most api_max_inflight calls are ever sent and not
 * recorded as answered.
 */
#define API_HOLD	0x2
/* The answers given to API_HOLD calls are recorded: free their slots. */
void		 api_settle(struct api *);
/*
 * Start no more requests (shutting down): queued calls stay queued, calls
 * in flight finish.
 */
void		 api_stop(struct api *);
/* A Bot API method name: 1 to 64 of [A-Za-z0-9_]. */
int		 api_method_valid(const char *);
/*
 * cb(arg) runs each time a call has finished and left the queue (from the
 * loop): the daemon's back-pressure resumes there.
 */
void		 api_on_release(struct api *, void (*cb)(void *), void *arg);
/*
 * After the struct conf given to api_new changed (reload): waiting calls
 * are timed again with the new rates, and more may start at once.
 */
void		 api_reconfigure(struct api *);
/* Calls accepted and not finished: queued, waiting, in flight. */
size_t		 api_queued(const struct api *);
size_t		 api_inflight(const struct api *);
/* Calls held back by flood control: waiting for tokens or a 429 pause. */
size_t		 api_waiting(const struct api *);

struct api_stats {
	uint64_t	calls, ok, errors, retries, rejected;
	uint64_t	throttled;	/* calls that had to wait (once each) */
	uint64_t	throttled_ms;	/* their waits, added as each one ends */
	uint64_t	got_429;	/* 429 answers received */
	uint64_t	bounded_key;	/* refused: key over max_calls_per_key */
	uint64_t	bounded_worker;	/* refused: worker over its bound */
	uint64_t	orphans;	/* dropped: their worker died */
};
const struct api_stats *api_stats(const struct api *);

/* For status: {"queued":N, "inflight":N, "calls":N, ...}. */
json_t		*api_status(const struct api *);
/* For /metrics: the tgrunner_api_* families. */
void		 api_metrics(const struct api *, struct evbuffer *);

#endif

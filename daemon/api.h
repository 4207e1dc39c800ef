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
};
const struct api_stats *api_stats(const struct api *);

/* For status: {"queued":N, "inflight":N, "calls":N, ...}. */
json_t		*api_status(const struct api *);
/* For /metrics: the tgrunner_api_* families. */
void		 api_metrics(const struct api *, struct evbuffer *);

#endif

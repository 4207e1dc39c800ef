/*
 * The poller: exactly one getUpdates in flight, long polling, back-pressure,
 * error classes with back-off.  It owns no updates: each parsed batch is
 * handed to ops->batch, which must make it durable (journal) before
 * returning 0; only then does the next getUpdates confirm it.
 */
#ifndef TG_POLLER_H
#define TG_POLLER_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct event_base;
struct evbuffer;
struct http;
struct conf;

/* Exit status when Telegram rejects the token (401/404): no retry loop. */
#define EXIT_BADTOKEN	77

enum poll_state {
	POLL_IDLE,		/* not started */
	POLL_STARTING,		/* getMe / deleteWebhook */
	POLL_POLLING,		/* a getUpdates is in flight */
	POLL_FULL,		/* backlog has no room: waiting for poller_kick() */
	POLL_PAUSED,		/* poller_pause(): draining / shutting down */
	POLL_BACKOFF,		/* waiting after an error */
	POLL_STOPPED,		/* fatal: bad token */
	POLL_SYNCING		/* the last batch is not durable yet */
};

struct poller_ops {
	/* How many more updates the backlog can take now (0 = full). */
	size_t	(*room)(void *arg);
	/*
	 * May be NULL.  Called just before a getUpdates request is built: what
	 * must be on disk before Telegram hears from the bot again is written.
	 */
	void	(*before_poll)(void *arg);
	/*
	 * A non-empty batch, as parsed from a successful getUpdates: ids[i]
	 * and the JSON text of each Update object (jsons[i], lens[i] bytes,
	 * not NUL-terminated: the bytes Telegram sent, or a compact encoding
	 * if they held a line break), borrowed for the call, in the
	 * order received.  Return 0 once durable, -1 if it could not be
	 * stored (the poller backs off and fetches the same batch again),
	 * 1 if it is accepted but not durable yet: the getUpdates that would
	 * confirm it waits for poller_durable().
	 */
	int	(*batch)(void *arg, const int64_t *ids,
		    const char *const *jsons, const size_t *lens, size_t n);
	/* getMe succeeded (bot is the User object); polling starts next. */
	void	(*ready)(void *arg, json_t *bot);
	/* Unrecoverable (bad token): status is the exit status to use. */
	void	(*fatal)(void *arg, int status, const char *why);
};

struct poller	*poller_new(struct event_base *, struct http *,
		    const struct conf *, const char *token,
		    const struct poller_ops *, void *arg);
void		 poller_free(struct poller *);
/* getMe, optional deleteWebhook, then poll from offset. */
void		 poller_start(struct poller *, int64_t offset);
/* The batch ops->batch accepted with 1 is durable now: poll on. */
void		 poller_durable(struct poller *);
/* Room may have appeared: leave POLL_FULL. */
void		 poller_kick(struct poller *);
/* Stop fetching (cancels a poll in flight; nothing is confirmed by it). */
void		 poller_pause(struct poller *);
void		 poller_resume(struct poller *);
enum poll_state	 poller_state(const struct poller *);
const char	*poller_state_str(enum poll_state);
/* Wall-clock time of the last successful getUpdates, 0 if none. */
int64_t		 poller_last_ok(const struct poller *);
int64_t		 poller_offset(const struct poller *);
/* Counters for status/metrics. */
struct poller_stats {
	uint64_t	polls, updates, errors, err_http5xx, err_429, err_409,
			err_transport, err_malformed;
	uint64_t	misordered;	/* ids not above their predecessor */
};
const struct poller_stats *poller_stats(const struct poller *);
/* For /metrics: the tgrunner_poll* families. */
void		 poller_metrics(const struct poller *, struct evbuffer *);

/*
 * Delay before retry number attempt (1 = first failure): the cap is min
 * doubled attempt-1 times, at most max; "equal jitter" picks from
 * [cap/2, cap] with rand01 in [0,1), never below min.  Pure, for tests.
 */
int64_t		 poller_backoff_ms(int attempt, int64_t min, int64_t max,
		    double rand01);

/*
 * Parse a getUpdates response body (untrusted).  On {"ok":true,"result":[..]}
 * returns 0 and fills *out with a new reference to the result array whose
 * elements all are objects with an integer update_id (elements that are not
 * are dropped and counted in *bad).  On an error body returns 1 with
 * *error_code, *retry_after (0 if absent) and description copied into desc.
 * On anything else (not JSON, truncated, wrong shape) returns -1 with a
 * reason in desc.
 */
int		 poller_parse(const char *body, size_t len, json_t **out,
		    size_t *bad, int *error_code, int *retry_after,
		    char *desc, size_t desclen);

/* Where one element of the result array lies in a getUpdates body. */
struct poller_slice {
	size_t	off;
	size_t	len;
};

/*
 * Locate the elements of the "result" array of a body poller_parse()
 * accepted, so that each update is kept as the bytes Telegram sent.  Fills
 * at most max slices and returns their number, or -1 (no result array,
 * more than max).  A count different from the parsed array's means the
 * slices are not to be trusted: encode each update from the tree then.
 */
int		 poller_slices(const char *body, size_t len,
		    struct poller_slice *out, size_t max);

#endif

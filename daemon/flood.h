/*
 * Flood control arithmetic for Bot API calls: the rate syntax of
 * tgrunner.conf(5), the two ways a rate is kept, and which calls are
 * messages to which chat.  No clock, no event loop: api.c owns the
 * limiters, the queues and the timer.
 *
 * A rate "n per period" is kept exactly by default: at most n messages in
 * any window of the period (a sliding window, which remembers the send
 * times of the last period).  With "burst b" it is a token bucket instead:
 * b saved up, refilled continuously, so that a window of w holds at most
 * b + n * w / period.  Telegram's limits are of the first kind.
 */
#ifndef TG_FLOOD_H
#define TG_FLOOD_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define FLOOD_N_MAX		1000000
/* A sliding window remembers up to n sends; beyond this n, paced evenly. */
#define FLOOD_WINDOW_MAX	1000
#define FLOOD_PER_MAX		(24LL * 3600 * 1000)	/* ms: one day */
#define FLOOD_BURST_MAX		1000000
#define FLOOD_COST_MAX		100	/* copyMessages: up to 100 ids */
#define FLOOD_SCOPE_MAX		48	/* bytes of a scope name, with NUL */

/*
 * n messages every per_ms milliseconds.  burst 0: at most n in any window
 * of per_ms (n above FLOOD_WINDOW_MAX: a bucket whose burst is a
 * millisecond's worth, at least 1); else a token bucket with at most burst
 * saved up.
 */
struct flood_rate {
	int64_t		n;
	int64_t		per_ms;
	int64_t		burst;
};

/* Messages sent at one millisecond. */
struct flood_sent {
	int64_t		t;
	int64_t		n;
};

/*
 * The state of one limiter, a sliding window or a token bucket, whichever
 * its rate asks for (a reload may switch it).  Bucket tokens are kept
 * multiplied by the period (credit = tokens * per_ms), so that a refill of
 * n per per_ms adds exactly n per millisecond: integer math, no drift, and
 * waits that are exact to the millisecond.  A zeroed struct is a new,
 * full limiter; flood_clear() frees what a window holds.
 */
struct flood_bucket {
	int64_t		 credit;
	int64_t		 per_ms;	/* the period credit is scaled by; 0: new */
	int64_t		 t;		/* ms of the last refill */
	int		 window;	/* a sliding window, not a bucket */
	struct flood_sent *log;		/* window: sends of the last period */
	uint32_t	 cap, head, len;	/* a ring, oldest at head */
	int64_t		 used;		/* messages in log */
};

enum flood_scope {
	FLOOD_SCOPE_NONE,	/* no chat_id: only the global bucket */
	FLOOD_SCOPE_PRIVATE,	/* chat_id > 0 */
	FLOOD_SCOPE_GROUP	/* chat_id < 0, or "@channelusername" */
};

/*
 * "30/s", "20/m", "1/s burst 3", "5/10s", "100/h burst 10": n per period
 * (ms, s, m or h, with an optional count); without burst, burst is 0 (a
 * sliding window).  Returns 0, or -1 (r untouched).
 */
int		 flood_rate_parse(const char *, struct flood_rate *r);
/* The same syntax back, e.g. "1/s burst 3"; parses to the same rate. */
void		 flood_rate_format(const struct flood_rate *, char *, size_t);

/*
 * Brings b up to now (a new limiter is full: nothing sent); adapts to a
 * changed rate, keeping what was sent.
 */
void		 flood_refill(struct flood_bucket *b, const struct flood_rate *,
		    int64_t now);
/*
 * Milliseconds until cost messages may go (0: now).  A cost above the
 * burst (a window's n) counts as that, so that every call can go some day.
 */
int64_t		 flood_wait_ms(struct flood_bucket *, const struct flood_rate *,
		    int64_t cost, int64_t now);
/* Sends cost messages if they may go: 0, else -1 and b only refilled. */
int		 flood_take(struct flood_bucket *, const struct flood_rate *,
		    int64_t cost, int64_t now);
/* As if the limit was just reached (after a 429: start again from nothing). */
void		 flood_drain(struct flood_bucket *, const struct flood_rate *,
		    int64_t now);
/* 1 when b is full at now: it is then the same as a new limiter. */
int		 flood_full(struct flood_bucket *, const struct flood_rate *,
		    int64_t now);
/* Free what b holds; it is a new limiter again. */
void		 flood_clear(struct flood_bucket *);

/*
 * Messages that method(params) sends: 0 for calls that send none (not
 * throttled by the buckets), the number of items for sendMediaGroup,
 * copyMessages and forwardMessages, else 1.  Method names are
 * case-insensitive, as in the Bot API.
 */
int64_t		 flood_cost(const char *method, const json_t *params);
/*
 * The chat that params.chat_id names: its kind, and in name (at least
 * FLOOD_SCOPE_MAX bytes) a key such as "p:42", "g:-1001234" or "g:@chan".
 */
enum flood_scope flood_scope(const json_t *params, char *name, size_t);
const char	*flood_scope_str(enum flood_scope);

#endif

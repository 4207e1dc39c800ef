/*
 * Flood control arithmetic for Bot API calls: token buckets, the rate
 * syntax of tgrunner.conf(5), and which calls are messages to which chat.
 * Pure functions (no clock, no event loop, no allocation): api.c owns the
 * buckets, the queues and the timer.
 */
#ifndef TG_FLOOD_H
#define TG_FLOOD_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define FLOOD_N_MAX		1000000
#define FLOOD_PER_MAX		(24LL * 3600 * 1000)	/* ms: one day */
#define FLOOD_BURST_MAX		1000000
#define FLOOD_COST_MAX		100	/* copyMessages: up to 100 ids */
#define FLOOD_SCOPE_MAX		48	/* bytes of a scope name, with NUL */

/* n tokens every per_ms milliseconds; at most burst saved up. */
struct flood_rate {
	int64_t		n;
	int64_t		per_ms;
	int64_t		burst;
};

/*
 * Tokens are kept multiplied by the period (credit = tokens * per_ms), so
 * that a refill of n per per_ms adds exactly n per millisecond: integer
 * math, no drift, and waits that are exact to the millisecond.
 */
struct flood_bucket {
	int64_t		credit;
	int64_t		per_ms;	/* the period credit is scaled by; 0: new */
	int64_t		t;	/* ms of the last refill */
};

enum flood_scope {
	FLOOD_SCOPE_NONE,	/* no chat_id: only the global bucket */
	FLOOD_SCOPE_PRIVATE,	/* chat_id > 0 */
	FLOOD_SCOPE_GROUP	/* chat_id < 0, or "@channelusername" */
};

/*
 * "30/s", "20/m", "1/s burst 3", "5/10s", "100/h burst 10": n per period
 * (ms, s, m or h, with an optional count), burst defaults to n.
 * Returns 0, or -1 (r untouched).
 */
int		 flood_rate_parse(const char *, struct flood_rate *r);
/* The same syntax back, e.g. "1/s burst 3"; parses to the same rate. */
void		 flood_rate_format(const struct flood_rate *, char *, size_t);

/* Brings b up to now (a new bucket is full); adapts to a changed rate. */
void		 flood_refill(struct flood_bucket *b, const struct flood_rate *,
		    int64_t now);
/*
 * Milliseconds until cost tokens are there (0: now).  A cost above burst
 * counts as burst, so that every call can go some day.
 */
int64_t		 flood_wait_ms(const struct flood_bucket *,
		    const struct flood_rate *, int64_t cost, int64_t now);
/* Takes cost tokens if they are there: 0, else -1 and b only refilled. */
int		 flood_take(struct flood_bucket *, const struct flood_rate *,
		    int64_t cost, int64_t now);
/* Empties b (after a 429: start again from nothing). */
void		 flood_drain(struct flood_bucket *, const struct flood_rate *,
		    int64_t now);
/* 1 when b is full at now: it is then the same as a new bucket. */
int		 flood_full(const struct flood_bucket *,
		    const struct flood_rate *, int64_t now);

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

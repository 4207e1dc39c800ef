/*
 * Flood control arithmetic (see flood.h).  Telegram's limits, as its FAQ
 * states them: about 30 messages a second for the whole bot, about one a
 * second in a private chat (short bursts tolerated), 20 a minute in a
 * group.  A bot that goes over them collects 429s with long pauses, so by
 * default they are kept over every window, not on average.
 */
#include "config.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "flood.h"
#include "parse.h"
#include "xmalloc.h"

#define FLOOD_MS	1LL
#define FLOOD_S		1000LL
#define FLOOD_M		(60 * FLOOD_S)
#define FLOOD_H		(60 * FLOOD_M)

/* Methods that send messages; the rest (edits included) are not counted. */
static const char *const flood_methods[] = {
	"sendMessage", "sendPhoto", "sendAudio", "sendDocument", "sendVideo",
	"sendAnimation", "sendVoice", "sendVideoNote", "sendPaidMedia",
	"sendMediaGroup", "sendLocation", "sendVenue", "sendContact",
	"sendPoll", "sendChecklist", "sendDice", "sendSticker", "sendInvoice",
	"sendGame", "copyMessage", "copyMessages", "forwardMessage",
	"forwardMessages", NULL
};

static const char *
flood_blanks(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

/* "s", "10s", "500ms", "m", "h". */
static int
flood_period(const char **sp, int64_t *out)
{
	const char	*s = *sp;
	int64_t		 count = 1, unit;

	if (isdigit((unsigned char)*s) &&
	    (parse_uint(&s, FLOOD_PER_MAX, &count) == -1 || count == 0))
		return -1;
	if ((unit = parse_unit_ms(&s)) == 0 || count > FLOOD_PER_MAX / unit)
		return -1;
	*sp = s;
	*out = count * unit;
	return 0;
}

int
flood_rate_parse(const char *s, struct flood_rate *r)
{
	struct flood_rate v;

	s = flood_blanks(s);
	if (parse_uint(&s, FLOOD_N_MAX, &v.n) == -1 || v.n == 0)
		return -1;
	s = flood_blanks(s);
	if (*s++ != '/')
		return -1;
	s = flood_blanks(s);
	if (flood_period(&s, &v.per_ms) == -1)
		return -1;
	v.burst = 0;
	s = flood_blanks(s);
	if (strncasecmp(s, "burst", 5) == 0 && (s[5] == ' ' || s[5] == '\t')) {
		s = flood_blanks(s + 5);
		if (parse_uint(&s, FLOOD_BURST_MAX, &v.burst) == -1 ||
		    v.burst == 0)
			return -1;
		s = flood_blanks(s);
	}
	if (*s != '\0')
		return -1;
	*r = v;
	return 0;
}

void
flood_rate_format(const struct flood_rate *r, char *buf, size_t bufsz)
{
	static const struct {
		int64_t		 ms;
		const char	*name;
	} units[] = { { FLOOD_H, "h" }, { FLOOD_M, "m" }, { FLOOD_S, "s" },
	    { FLOOD_MS, "ms" } };
	char	 period[32], burst[40] = "";
	size_t	 i;

	for (i = 0; r->per_ms % units[i].ms != 0; i++)
		;
	if (r->per_ms == units[i].ms)
		snprintf(period, sizeof(period), "%s", units[i].name);
	else
		snprintf(period, sizeof(period), "%" PRId64 "%s",
		    r->per_ms / units[i].ms, units[i].name);
	if (r->burst > 0)
		snprintf(burst, sizeof(burst), " burst %" PRId64, r->burst);
	snprintf(buf, bufsz, "%" PRId64 "/%s%s", r->n, period, burst);
}

/* Kept as a sliding window (else a token bucket)? */
static int
flood_is_window(const struct flood_rate *r)
{
	return r->burst == 0 && r->n <= FLOOD_WINDOW_MAX;
}

/*
 * A bucket's burst.  A rate without one that is too large for a window is
 * paced evenly: a millisecond's worth at once (at least 1).
 */
static int64_t
flood_burst(const struct flood_rate *r)
{
	if (r->burst > 0)
		return r->burst;
	return r->n / r->per_ms > 1 ? r->n / r->per_ms : 1;
}

/* Messages a call of cost takes: at most what the limit lets through at once. */
static int64_t
flood_need(const struct flood_rate *r, int64_t cost)
{
	int64_t max = flood_is_window(r) ? r->n : flood_burst(r);

	return cost < max ? cost : max;
}

/* --- sliding window: the sends of the last period, oldest first ---------- */

static struct flood_sent *
fw_at(const struct flood_bucket *b, uint32_t i)
{
	return &b->log[(b->head + i) % b->cap];
}

/* Forget the sends that left the window (t + per <= now). */
static void
fw_expire(struct flood_bucket *b, const struct flood_rate *r, int64_t now)
{
	struct flood_sent *e;

	while (b->len > 0 && (e = fw_at(b, 0))->t <= now - r->per_ms) {
		b->used -= e->n;
		b->head = (b->head + 1) % b->cap;
		b->len--;
	}
}

/*
 * Room for n entries (a new or changed rate).  Entries that no longer fit
 * are merged into the oldest kept one, at its later time: they count for
 * longer, never shorter.
 */
static void
fw_resize(struct flood_bucket *b, uint32_t n)
{
	struct flood_sent *log = xcalloc(n, sizeof(*log));
	uint32_t i, skip = b->len > n ? b->len - n : 0;
	int64_t merged = 0;

	for (i = 0; i < skip; i++)
		merged += fw_at(b, i)->n;
	for (i = skip; i < b->len; i++)
		log[i - skip] = *fw_at(b, i);
	if (skip > 0)
		log[0].n += merged;
	free(b->log);
	b->log = log;
	b->cap = n;
	b->head = 0;
	b->len -= skip;
}

static void
fw_push(struct flood_bucket *b, int64_t t, int64_t n)
{
	struct flood_sent *last = b->len > 0 ? fw_at(b, b->len - 1) : NULL;

	if (last != NULL && last->t >= t)
		last->n += n;	/* the same ms (or a clock that went back) */
	else {
		/* used + n <= cap and every entry holds >= 1: there is room */
		b->len++;
		last = fw_at(b, b->len - 1);
		last->t = t;
		last->n = n;
	}
	b->used += n;
}

/* ms until need more fit in the window as it is at now (0: now). */
static int64_t
fw_wait(const struct flood_bucket *b, const struct flood_rate *r,
    int64_t need, int64_t now)
{
	int64_t live = b->used, seen = 0, excess;
	uint32_t i = 0;

	/* the sends that left the window by now do not count */
	while (i < b->len && fw_at(b, i)->t <= now - r->per_ms)
		live -= fw_at(b, i++)->n;
	if ((excess = live + need - r->n) <= 0)
		return 0;
	/* the oldest sends leave first: wait for the one that makes room */
	for (; i < b->len; i++) {
		seen += fw_at(b, i)->n;
		if (seen >= excess)
			break;
	}
	return fw_at(b, i)->t + r->per_ms - now;
}

/* --- token bucket -------------------------------------------------------- */

static void
fb_refill(struct flood_bucket *b, const struct flood_rate *r, int64_t now)
{
	int64_t cap = flood_burst(r) * r->per_ms, dt;

	if (b->per_ms != r->per_ms) {
		/* a reload changed the period: keep the tokens */
		b->credit = (int64_t)((long double)b->credit * r->per_ms /
		    b->per_ms);
		b->per_ms = r->per_ms;
	}
	if (now > b->t) {
		dt = now - b->t;
		if (dt >= cap / r->n + 1)
			b->credit = cap;	/* and no overflow */
		else
			b->credit += dt * r->n;
		b->t = now;
	}
	if (b->credit > cap)
		b->credit = cap;
}

/* --- either ---------------------------------------------------------------- */

/*
 * A reload that turns a bucket into a window or back keeps what was sent:
 * the bucket's missing tokens become sends at now, a window's sends become
 * missing tokens.
 */
static void
flood_convert(struct flood_bucket *b, const struct flood_rate *r, int64_t now)
{
	int64_t sent;

	if (flood_is_window(r)) {
		/* what the tokens left would still let go: the rest was sent */
		sent = r->n - b->credit / b->per_ms;
		b->window = 1;
		fw_resize(b, (uint32_t)r->n);
		if (sent > 0)
			fw_push(b, now, sent < r->n ? sent : r->n);
		return;
	}
	sent = b->used;
	flood_clear(b);
	b->per_ms = r->per_ms;
	b->t = now;
	b->credit = sent < flood_burst(r) ? (flood_burst(r) - sent) *
	    r->per_ms : 0;
}

/* A new limiter, or one whose rate changed (a reload): fit it to r. */
static void
flood_adapt(struct flood_bucket *b, const struct flood_rate *r, int64_t now)
{
	if (b->per_ms == 0) {
		/* new: full */
		b->window = flood_is_window(r);
		b->per_ms = r->per_ms;
		b->t = now;
		b->credit = flood_burst(r) * r->per_ms;
		if (b->window)
			fw_resize(b, (uint32_t)r->n);
		return;
	}
	if (b->window != flood_is_window(r)) {
		if (!b->window)
			fb_refill(b, r, now);
		flood_convert(b, r, now);
	}
	if (b->window) {
		b->per_ms = r->per_ms;
		if (b->cap != (uint32_t)r->n)
			fw_resize(b, (uint32_t)r->n);
	}
}

void
flood_refill(struct flood_bucket *b, const struct flood_rate *r, int64_t now)
{
	flood_adapt(b, r, now);
	if (b->window)
		fw_expire(b, r, now);
	else
		fb_refill(b, r, now);
}

/* Sends nothing: asking about a later time moves nothing forward. */
int64_t
flood_wait_ms(struct flood_bucket *b, const struct flood_rate *r,
    int64_t cost, int64_t now)
{
	int64_t need = flood_need(r, cost);
	struct flood_bucket v;

	flood_adapt(b, r, now);
	if (b->window)
		return fw_wait(b, r, need, now);
	v = *b;
	fb_refill(&v, r, now);
	need *= r->per_ms;
	if (v.credit >= need)
		return 0;
	return (need - v.credit + r->n - 1) / r->n;
}

int
flood_take(struct flood_bucket *b, const struct flood_rate *r, int64_t cost,
    int64_t now)
{
	int64_t need = flood_need(r, cost);

	if (flood_wait_ms(b, r, cost, now) > 0)
		return -1;
	flood_refill(b, r, now);
	if (need <= 0)
		return 0;
	if (b->window)
		fw_push(b, now, need);
	else
		b->credit -= need * r->per_ms;
	return 0;
}

void
flood_drain(struct flood_bucket *b, const struct flood_rate *r, int64_t now)
{
	flood_refill(b, r, now);
	if (!b->window) {
		b->credit = 0;
		return;
	}
	b->len = 0;
	b->used = 0;
	fw_push(b, now, r->n);
}

int
flood_full(struct flood_bucket *b, const struct flood_rate *r, int64_t now)
{
	struct flood_bucket v;

	flood_adapt(b, r, now);
	if (b->window)
		return fw_wait(b, r, r->n, now) == 0;
	v = *b;
	fb_refill(&v, r, now);
	return v.credit >= flood_burst(r) * r->per_ms;
}

void
flood_clear(struct flood_bucket *b)
{
	free(b->log);
	memset(b, 0, sizeof(*b));
}

/* Items of an array member, also when a client sent it as JSON text. */
static int64_t
flood_items(const json_t *params, const char *member)
{
	const json_t	*v = json_object_get(params, member);
	json_t		*parsed;
	int64_t		 n;

	if (json_is_string(v)) {
		parsed = json_loads(json_string_value(v), 0, NULL);
		n = json_is_array(parsed) ?
		    (int64_t)json_array_size(parsed) : 1;
		json_decref(parsed);
	} else
		n = json_is_array(v) ? (int64_t)json_array_size(v) : 1;
	if (n < 1)
		return 1;
	return n > FLOOD_COST_MAX ? FLOOD_COST_MAX : n;
}

int64_t
flood_cost(const char *method, const json_t *params)
{
	size_t i;

	for (i = 0; flood_methods[i] != NULL; i++)
		if (strcasecmp(method, flood_methods[i]) == 0)
			break;
	if (flood_methods[i] == NULL)
		return 0;
	if (strcasecmp(method, "sendMediaGroup") == 0)
		return flood_items(params, "media");
	if (strcasecmp(method, "copyMessages") == 0 ||
	    strcasecmp(method, "forwardMessages") == 0)
		return flood_items(params, "message_ids");
	return 1;
}

/* "-100123" as Telegram accepts it in a string chat_id. */
static int
flood_int_text(const char *s, int64_t *out)
{
	int64_t	 v;
	int	 neg = *s == '-';

	if (neg)
		s++;
	if (parse_uint(&s, INT64_MAX, &v) == -1 || *s != '\0')
		return -1;
	*out = neg ? -v : v;
	return 0;
}

static enum flood_scope
flood_scope_id(int64_t id, char *name, size_t namesz)
{
	if (id == 0)
		return FLOOD_SCOPE_NONE;
	snprintf(name, namesz, "%c:%" PRId64, id > 0 ? 'p' : 'g', id);
	return id > 0 ? FLOOD_SCOPE_PRIVATE : FLOOD_SCOPE_GROUP;
}

/* "@name": a public channel or supergroup; usernames ignore case. */
static enum flood_scope
flood_scope_username(const char *s, char *name, size_t namesz)
{
	size_t i, n = strlen(s);

	if (n < 2 || n + 3 > namesz || n > 33)
		return FLOOD_SCOPE_NONE;
	for (i = 1; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return FLOOD_SCOPE_NONE;
	name[0] = 'g';
	name[1] = ':';
	for (i = 0; i <= n; i++)
		name[2 + i] = (char)tolower((unsigned char)s[i]);
	return FLOOD_SCOPE_GROUP;
}

enum flood_scope
flood_scope(const json_t *params, char *name, size_t namesz)
{
	const json_t	*v = json_object_get(params, "chat_id");
	const char	*s;
	int64_t		 id;

	name[0] = '\0';
	if (json_is_integer(v))
		return flood_scope_id(json_integer_value(v), name, namesz);
	if (!json_is_string(v))
		return FLOOD_SCOPE_NONE;
	s = json_string_value(v);
	if (flood_int_text(s, &id) == 0)
		return flood_scope_id(id, name, namesz);
	if (s[0] == '@')
		return flood_scope_username(s, name, namesz);
	return FLOOD_SCOPE_NONE;
}

const char *
flood_scope_str(enum flood_scope k)
{
	switch (k) {
	case FLOOD_SCOPE_NONE:		return "none";
	case FLOOD_SCOPE_PRIVATE:	return "private";
	case FLOOD_SCOPE_GROUP:		return "group";
	}
	return "?";
}

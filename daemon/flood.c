/*
 * Flood control arithmetic (see flood.h).  Telegram's limits, as its FAQ
 * states them: about 30 messages a second for the whole bot, about one a
 * second in a private chat (short bursts tolerated), 20 a minute in a group.
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
	v.burst = v.n;
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
	if (r->burst != r->n)
		snprintf(burst, sizeof(burst), " burst %" PRId64, r->burst);
	snprintf(buf, bufsz, "%" PRId64 "/%s%s", r->n, period, burst);
}

void
flood_refill(struct flood_bucket *b, const struct flood_rate *r, int64_t now)
{
	int64_t cap = r->burst * r->per_ms, dt;

	if (b->per_ms == 0) {
		b->credit = cap;
		b->per_ms = r->per_ms;
		b->t = now;
		return;
	}
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

static int64_t
flood_need(const struct flood_rate *r, int64_t cost)
{
	return (cost < r->burst ? cost : r->burst) * r->per_ms;
}

int64_t
flood_wait_ms(const struct flood_bucket *b, const struct flood_rate *r,
    int64_t cost, int64_t now)
{
	struct flood_bucket	 v = *b;
	int64_t			 need = flood_need(r, cost);

	flood_refill(&v, r, now);
	if (v.credit >= need)
		return 0;
	return (need - v.credit + r->n - 1) / r->n;
}

int
flood_take(struct flood_bucket *b, const struct flood_rate *r, int64_t cost,
    int64_t now)
{
	int64_t need = flood_need(r, cost);

	flood_refill(b, r, now);
	if (b->credit < need)
		return -1;
	b->credit -= need;
	return 0;
}

void
flood_drain(struct flood_bucket *b, const struct flood_rate *r, int64_t now)
{
	flood_refill(b, r, now);
	b->credit = 0;
}

int
flood_full(const struct flood_bucket *b, const struct flood_rate *r,
    int64_t now)
{
	struct flood_bucket v = *b;

	flood_refill(&v, r, now);
	return v.credit >= r->burst * r->per_ms;
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

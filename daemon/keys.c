/*
 * Session keys of Telegram updates.
 *
 * One table row per Update member name says where the chat, the acting
 * user, the topic and the business connection of that update live.
 * Everything in an update comes from a remote server, so every member is
 * type-checked and every id must be a JSON integer; anything else simply
 * contributes no key.  The update is read as text (jscan.c), not parsed
 * into a tree: this runs for every update.
 *
 * Key forms:
 *   chat:<id>                    a plain chat
 *   bchat:<connection>:<id>      a chat of a business account (never the
 *                                same as the bot's own chat with that id)
 *   bconn:<connection>           a business_connection update
 *   user:<id>                    the acting user
 *   <chat key>/user:<id>         chat_user
 *   <chat key>/topic:<thread>    chat_topic, for messages in a forum topic
 *
 * When an update is made by a chat rather than a user (a message sent on
 * behalf of a chat, whose "from" is then a placeholder user shared by every
 * such message; an anonymous reaction's actor_chat; a poll answer's
 * voter_chat), that chat stands for the user: the "user" kind yields
 * "chat:<id>" and chat_user yields "<chat key>/chat:<id>".
 */
#include "config.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jscan.h"
#include "keys.h"

#define KEYS_BCID_MAX	48	/* connection id in a key, after escaping */
#define KEYS_SCAN_MAX	8	/* members looked at for an unknown type */
#define KEYS_NAME_MAX	64	/* bytes of a member name that may be a type */
#define KEYS_PART_MAX	96	/* one part of a key: "bchat:<conn>:<id>" */

/* Row flags. */
#define KF_BIZ		0x01	/* business update: connection id required */
#define KF_BCONN	0x02	/* business_connection: chat is the connection */
#define KF_OPTIN	0x04	/* not in Telegram's default allowed_updates */

struct keys_row {
	const char	*type;	/* Update member name */
	int		 flags;
	const char	*chat;	/* path to the chat id */
	const char	*user;	/* path to the acting user's id */
	const char	*actor;	/* path to a chat acting instead of a user */
	const char	*msg;	/* path to the Message ("" = the payload) */
	const char	*bcid;	/* path to business_connection_id */
};

#define KEYS_MSG(type, flags) \
	{ type, flags, "chat.id", "from.id", "sender_chat.id", "", \
	    "business_connection_id" }

/*
 * Paths are relative to the payload object.  A Message's own
 * business_connection_id is honoured for every row that carries one (the
 * Bot API says such a message belongs to the business account's chat);
 * for KF_BIZ rows it is mandatory.
 */
static const struct keys_row keys_table[] = {
	KEYS_MSG("message", 0),
	KEYS_MSG("edited_message", 0),
	KEYS_MSG("channel_post", 0),
	KEYS_MSG("edited_channel_post", 0),
	{ "business_connection", KF_BCONN, NULL, "user.id", NULL, NULL, "id" },
	KEYS_MSG("business_message", KF_BIZ),
	KEYS_MSG("edited_business_message", KF_BIZ),
	{ "deleted_business_messages", KF_BIZ, "chat.id", NULL, NULL, NULL,
	    "business_connection_id" },
	{ "message_reaction", KF_OPTIN, "chat.id", "user.id", "actor_chat.id",
	    NULL, NULL },
	{ "message_reaction_count", KF_OPTIN, "chat.id", NULL, NULL, NULL,
	    NULL },
	{ "inline_query", 0, NULL, "from.id", NULL, NULL, NULL },
	{ "chosen_inline_result", 0, NULL, "from.id", NULL, NULL, NULL },
	/* Without "message" (an inline message) there is no chat. */
	{ "callback_query", 0, "message.chat.id", "from.id", NULL, "message",
	    "message.business_connection_id" },
	{ "shipping_query", 0, NULL, "from.id", NULL, NULL, NULL },
	{ "pre_checkout_query", 0, NULL, "from.id", NULL, NULL, NULL },
	{ "purchased_paid_media", 0, NULL, "from.id", NULL, NULL, NULL },
	{ "poll", 0, NULL, NULL, NULL, NULL, NULL },
	{ "poll_answer", 0, NULL, "user.id", "voter_chat.id", NULL, NULL },
	{ "my_chat_member", 0, "chat.id", "from.id", NULL, NULL, NULL },
	{ "chat_member", KF_OPTIN, "chat.id", "from.id", NULL, NULL, NULL },
	{ "chat_join_request", 0, "chat.id", "from.id", NULL, NULL, NULL },
	{ "chat_boost", 0, "chat.id", "boost.source.user.id", NULL, NULL,
	    NULL },
	{ "removed_chat_boost", 0, "chat.id", "source.user.id", NULL, NULL,
	    NULL },
	/* a bot created or changed through this bot: its creator */
	{ "managed_bot", 0, NULL, "user.id", NULL, NULL, NULL },
	/* a message to the bot in guest mode, in a chat it is not part of */
	KEYS_MSG("guest_message", 0),
};

/*
 * Types the table does not know: keyed like their closest kind, from
 * their own members.  Which row depends on what the payload holds.
 */
static const struct keys_row keys_fallback[] = {
	/* a Message: it has a chat */
	{ NULL, 0, "chat.id", "from.id", "sender_chat.id", "",
	    "business_connection_id" },
	{ NULL, 0, "chat.id", "user.id", "sender_chat.id", "",
	    "business_connection_id" },
	/* about a message, as callback_query */
	{ NULL, 0, "message.chat.id", "from.id", NULL, "message",
	    "message.business_connection_id" },
	{ NULL, 0, "message.chat.id", "user.id", NULL, "message",
	    "message.business_connection_id" },
	/* about a user only */
	{ NULL, 0, NULL, "from.id", NULL, NULL, NULL },
	{ NULL, 0, NULL, "user.id", NULL, NULL, NULL },
};

static const char *keys_kind_names[KEY_KIND_MAX] = {
	[KEY_CHAT] = "chat",
	[KEY_USER] = "user",
	[KEY_CHAT_USER] = "chat_user",
	[KEY_CHAT_TOPIC] = "chat_topic",
};

/* What one update is about, each part already formatted ("" = none). */
struct keys_parts {
	char	chat[KEYS_PART_MAX];
	char	actor[KEYS_PART_MAX];
	char	topic[KEYS_PART_MAX];
};

int
keys_kind_parse(const char *name, enum key_kind *out)
{
	int i;

	for (i = 0; i < KEY_KIND_MAX; i++) {
		if (strcmp(name, keys_kind_names[i]) == 0) {
			*out = (enum key_kind)i;
			return 0;
		}
	}
	return -1;
}

/* A static string; "unknown" for a value out of range. */
const char *
keys_kind_name(enum key_kind kind)
{
	if ((int)kind < 0 || kind >= KEY_KIND_MAX)
		return "unknown";
	return keys_kind_names[kind];
}

/*
 * The payload and the members its row's paths start with, found in one
 * pass: a message is scanned once, not once per path.
 */
#define KEYS_WANT_MAX	8

struct keys_ctx {
	const struct keys_row	*row;
	struct jspan		 payload;
	const char		*names[KEYS_WANT_MAX];
	char			 buf[KEYS_WANT_MAX][32];
	struct jspan		 spans[KEYS_WANT_MAX];
	uint32_t		 found;
	int			 n;
};

/* The index of the first component of path among the wanted, or -1. */
static int
keys_slot(const struct keys_ctx *c, const char *path, size_t *len)
{
	int i;

	*len = strcspn(path, ".");
	for (i = 0; i < c->n; i++)
		if (strlen(c->names[i]) == *len &&
		    strncmp(c->names[i], path, *len) == 0)
			return i;
	return -1;
}

static void
keys_want(struct keys_ctx *c, const char *path)
{
	size_t len;

	if (path == NULL || *path == '\0' || keys_slot(c, path, &len) != -1 ||
	    c->n == KEYS_WANT_MAX || len >= sizeof(c->buf[0]))
		return;
	memcpy(c->buf[c->n], path, len);
	c->buf[c->n][len] = '\0';
	c->names[c->n] = c->buf[c->n];
	c->n++;
}

static int
keys_get(const struct keys_ctx *c, const char *path, struct jspan *out)
{
	size_t len;
	int i;

	if (path == NULL)
		return -1;
	if (*path == '\0') {
		*out = c->payload;
		return 0;
	}
	if ((i = keys_slot(c, path, &len)) == -1)
		return jscan_path(c->payload, path, out);
	if (!(c->found & 1u << i))
		return -1;
	return jscan_path(c->spans[i], path[len] == '.' ? path + len + 1 : "",
	    out);
}

static int
keys_get_int(const struct keys_ctx *c, const char *path, int64_t *out)
{
	struct jspan v;

	if (keys_get(c, path, &v) == -1 || jscan_kind(v) != 'n')
		return -1;
	return jscan_int(v, out);
}

/*
 * The row of the first table type the update has as an object member.
 * One pass over the update's members; for a repeated member the last one
 * counts, as with any JSON object lookup.
 */
static const struct keys_row *
keys_row_find(struct jspan update, struct jspan *payload)
{
	enum { NROWS = sizeof(keys_table) / sizeof(keys_table[0]) };
	static const char *names[NROWS];	/* the table's type column */
	struct jspan last[NROWS];
	uint32_t seen;
	size_t i;

	_Static_assert(NROWS <= 32, "jscan_pick takes 32 names at most");
	if (names[0] == NULL)
		for (i = 0; i < NROWS; i++)
			names[i] = keys_table[i].type;
	seen = jscan_pick(update, names, NROWS, last);
	for (i = 0; i < NROWS; i++) {
		if ((seen & (uint32_t)1 << i) && jscan_kind(last[i]) == '{') {
			*payload = last[i];
			return &keys_table[i];
		}
	}
	return NULL;
}

/*
 * The payload of an update whose type the table does not know: among the
 * first KEYS_SCAN_MAX member names (shorter than KEYS_NAME_MAX bytes),
 * the first other than update_id whose value is an object.  A repeated
 * member counts where it first appears, with its last value, as in any
 * JSON object lookup.  Its decoded name goes to name (KEYS_NAME_MAX).
 */
static int
keys_payload_any(struct jspan update, struct jspan *payload, char *name)
{
	char seen[KEYS_SCAN_MAX][KEYS_NAME_MAX];
	struct jspan n, v;
	const char *it = NULL;
	size_t len;
	int i, nseen = 0;

	while (nseen < KEYS_SCAN_MAX &&
	    jscan_next_member(update, &it, &n, &v)) {
		if (jscan_string(n, name, KEYS_NAME_MAX, &len) == -1 ||
		    strlen(name) != len)
			continue;
		for (i = 0; i < nseen; i++)
			if (strcmp(seen[i], name) == 0)
				break;
		if (i < nseen)
			continue;
		memcpy(seen[nseen++], name, len + 1);
		if (strcmp(name, "update_id") != 0 &&
		    jscan_member(update, name, payload) == 0 &&
		    jscan_kind(*payload) == '{')
			return 0;
	}
	name[0] = '\0';
	return -1;
}

static int
keys_has_object(struct jspan v, const char *name)
{
	struct jspan m;

	return jscan_member(v, name, &m) == 0 && jscan_kind(m) == '{';
}

/* The fallback row for an unknown type's payload. */
static const struct keys_row *
keys_row_fallback(struct jspan payload)
{
	int by_user = !keys_has_object(payload, "from");

	if (keys_has_object(payload, "chat"))
		return &keys_fallback[0 + by_user];
	if (keys_has_object(payload, "message"))
		return &keys_fallback[2 + by_user];
	return &keys_fallback[4 + by_user];
}

void
keys_type_name(const char *json, size_t len, char *buf, size_t size)
{
	char name[KEYS_NAME_MAX];
	struct jspan payload;
	size_t i;

	if (size == 0)
		return;
	buf[0] = '\0';
	if (keys_payload_any(jscan_span(json, len), &payload, name) == -1)
		return;
	for (i = 0; name[i] != '\0' && i + 1 < size; i++)
		buf[i] = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' &&
		    name[i] <= '9') || name[i] == '_' ? name[i] : '?';
	buf[i] = '\0';
}

const char *
keys_update_type_at(size_t i, int *by_default)
{
	if (i >= sizeof(keys_table) / sizeof(keys_table[0]))
		return NULL;
	if (by_default != NULL)
		*by_default = !(keys_table[i].flags & KF_OPTIN);
	return keys_table[i].type;
}

/* A static string from the table: unknown types give NULL, never peer bytes. */
const char *
keys_update_type_text(const char *json, size_t len)
{
	const struct keys_row	*row;
	struct jspan		 payload;

	row = keys_row_find(jscan_span(json, len), &payload);
	return row != NULL ? row->type : NULL;
}

const char *
keys_update_type(const json_t *update)
{
	const char	*type;
	char		*text;

	if (update == NULL || (text = json_dumps(update, JSON_COMPACT)) == NULL)
		return NULL;
	type = keys_update_type_text(text, strlen(text));
	free(text);
	return type;
}

static uint32_t
keys_fnv1a(const char *s, size_t len)
{
	uint32_t	h = 2166136261u;
	size_t		i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

/*
 * The connection id is an opaque string from the server: keep
 * [A-Za-z0-9_-], escape every other byte as %XX (so ':' and '/' cannot
 * forge key structure), and past KEYS_BCID_MAX replace the tail by a hash
 * of the whole id so that long ids stay distinct yet bounded.
 */
static int
keys_bcid(const struct jspan *v, char *buf, size_t size)
{
	static const char	 hex[] = "0123456789ABCDEF";
	char			 sbuf[256], *s;
	size_t			 len, i, o = 0;
	unsigned char		 c;
	char			 esc[KEYS_BCID_MAX * 3 + 4];
	int			 rc = -1;

	if (v == NULL || (s = jscan_decode(*v, sbuf, sizeof(sbuf),
	    &len)) == NULL)
		return -1;
	if (len == 0)
		goto out;
	for (i = 0; i < len && o + 3 < sizeof(esc); i++) {
		c = (unsigned char)s[i];
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-')
			esc[o++] = (char)c;
		else {
			esc[o++] = '%';
			esc[o++] = hex[c >> 4];
			esc[o++] = hex[c & 0xf];
		}
	}
	if (i == len && o <= KEYS_BCID_MAX) {
		esc[o] = '\0';
		o = (size_t)snprintf(buf, size, "%s", esc);
	} else
		o = (size_t)snprintf(buf, size, "%.*s~%08" PRIx32,
		    KEYS_BCID_MAX - 9, esc, keys_fnv1a(s, len));
	rc = o < size ? 0 : -1;
out:
	if (s != sbuf)
		free(s);
	return rc;
}

/*
 * prefix and a decimal id into buf (KEYS_PART_MAX): the common keys,
 * without snprintf, which cost as much as everything else here.
 */
static void
keys_put_id(char *buf, const char *prefix, int64_t id)
{
	char digits[24], *d = digits + sizeof(digits);
	uint64_t v = id < 0 ? -(uint64_t)id : (uint64_t)id;
	size_t n = strlen(prefix);

	do
		*--d = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	if (id < 0)
		*--d = '-';
	memcpy(buf, prefix, n);
	memcpy(buf + n, d, (size_t)(digits + sizeof(digits) - d));
	buf[n + (size_t)(digits + sizeof(digits) - d)] = '\0';
}

/* The chat part: "chat:<id>", "bchat:<conn>:<id>" or "bconn:<conn>". */
static void
keys_chat_part(const struct keys_ctx *c, struct keys_parts *kp)
{
	const struct keys_row *row = c->row;
	struct jspan	v;
	char		bcid[KEYS_BCID_MAX + 1];
	int64_t		id;
	int		have_bcid;

	have_bcid = keys_get(c, row->bcid, &v) == 0 &&
	    keys_bcid(&v, bcid, sizeof(bcid)) == 0;
	if (row->flags & KF_BCONN) {
		if (have_bcid)
			snprintf(kp->chat, sizeof(kp->chat), "bconn:%s", bcid);
		return;
	}
	if (keys_get_int(c, row->chat, &id) == -1)
		return;
	if (have_bcid)
		snprintf(kp->chat, sizeof(kp->chat), "bchat:%s:%" PRId64,
		    bcid, id);
	else if (!(row->flags & KF_BIZ))
		keys_put_id(kp->chat, "chat:", id);
}

/* The actor: a chat acting on its own behalf wins over "from". */
static void
keys_actor_part(const struct keys_ctx *c, struct keys_parts *kp)
{
	int64_t id;

	if (keys_get_int(c, c->row->actor, &id) == 0)
		keys_put_id(kp->actor, "chat:", id);
	else if (keys_get_int(c, c->row->user, &id) == 0)
		keys_put_id(kp->actor, "user:", id);
}

/* A forum topic only counts when the message says it is in one. */
static void
keys_topic_part(const struct keys_ctx *c, struct keys_parts *kp)
{
	struct jspan	msg, flag, v;
	int64_t		thread;
	int		own;

	if (keys_get(c, c->row->msg, &msg) == -1 || jscan_kind(msg) != '{')
		return;
	/* the payload's own members were picked already */
	own = c->row->msg[0] == '\0';
	if ((own ? keys_get(c, "is_topic_message", &flag) :
	    jscan_member(msg, "is_topic_message", &flag)) == -1 ||
	    jscan_kind(flag) != 't')
		return;
	if ((own ? keys_get(c, "message_thread_id", &v) :
	    jscan_member(msg, "message_thread_id", &v)) == 0 &&
	    jscan_kind(v) == 'n' && jscan_int(v, &thread) == 0)
		keys_put_id(kp->topic, "topic:", thread);
}

/* a, then "/" and b unless b is NULL, into buf: 0, or -1 if empty or too long */
static int
keys_join(char *buf, size_t size, const char *a, const char *b)
{
	size_t la = strlen(a), lb = b != NULL ? strlen(b) : 0;
	size_t n = la + (b != NULL ? 1 + lb : 0);

	if (n == 0 || n >= size)
		return -1;
	memcpy(buf, a, la);
	if (b != NULL) {
		buf[la] = '/';
		memcpy(buf + la + 1, b, lb);
	}
	buf[n] = '\0';
	return 0;
}

static int
keys_format(const struct keys_parts *kp, int kind, char *buf, size_t size)
{
	switch (kind) {
	case KEY_CHAT:
		return keys_join(buf, size, kp->chat, NULL);
	case KEY_USER:
		return keys_join(buf, size, kp->actor, NULL);
	case KEY_CHAT_USER:
		if (kp->chat[0] == '\0' || kp->actor[0] == '\0')
			return -1;
		return keys_join(buf, size, kp->chat, kp->actor);
	case KEY_CHAT_TOPIC:
		if (kp->chat[0] != '\0' && kp->topic[0] != '\0')
			return keys_join(buf, size, kp->chat, kp->topic);
		return keys_join(buf, size, kp->chat, NULL);
	default:
		return -1;
	}
}

static void
keys_add(struct keyset *out, const char *key)
{
	int i;

	if (out->n >= KEYS_MAX)
		return;
	for (i = 0; i < out->n; i++)
		if (strcmp(out->k[i], key) == 0)
			return;
	memcpy(out->k[out->n++], key, strlen(key) + 1);
}

void
keys_derive_text(const char *json, size_t len, const enum key_kind *kinds,
    int nkinds, struct keyset *out)
{
	struct keys_ctx		 c;
	struct keys_parts	 kp;
	char			 key[KEY_STRLEN], name[KEYS_NAME_MAX];
	int			 i;

	out->n = 0;
	out->unknown = 0;
	c.n = 0;
	if ((c.row = keys_row_find(jscan_span(json, len), &c.payload)) ==
	    NULL) {
		if (keys_payload_any(jscan_span(json, len), &c.payload,
		    name) == -1)
			return;
		out->unknown = 1;
		c.row = keys_row_fallback(c.payload);
	}
	if (nkinds <= 0)
		return;
	keys_want(&c, c.row->chat);
	keys_want(&c, c.row->user);
	keys_want(&c, c.row->actor);
	keys_want(&c, c.row->bcid);
	keys_want(&c, c.row->msg);
	if (c.row->msg != NULL && c.row->msg[0] == '\0') {
		keys_want(&c, "is_topic_message");
		keys_want(&c, "message_thread_id");
	}
	c.found = jscan_pick(c.payload, c.names, c.n, c.spans);
	memset(&kp, 0, sizeof(kp));
	keys_chat_part(&c, &kp);
	keys_actor_part(&c, &kp);
	keys_topic_part(&c, &kp);
	for (i = 0; i < nkinds; i++)
		if (keys_format(&kp, kinds[i], key, sizeof(key)) == 0)
			keys_add(out, key);
}

void
keys_derive(const json_t *update, const enum key_kind *kinds, int nkinds,
    struct keyset *out)
{
	char *text;

	out->n = 0;
	if (update == NULL || (text = json_dumps(update, JSON_COMPACT)) == NULL)
		return;
	keys_derive_text(text, strlen(text), kinds, nkinds, out);
	free(text);
}

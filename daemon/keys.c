/*
 * Session keys of Telegram updates.
 *
 * One table row per Update member name says where the chat, the acting
 * user, the topic and the business connection of that update live.
 * Everything in an update comes from a remote server, so every member is
 * type-checked and every id must be a JSON integer; anything else simply
 * contributes no key.
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
#include <string.h>

#include <jansson.h>

#include "keys.h"

#define KEYS_BCID_MAX	48	/* connection id in a key, after escaping */
#define KEYS_PART_MAX	96	/* one part of a key: "bchat:<conn>:<id>" */

/* Row flags. */
#define KF_BIZ		0x01	/* business update: connection id required */
#define KF_BCONN	0x02	/* business_connection: chat is the connection */

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
	{ "message_reaction", 0, "chat.id", "user.id", "actor_chat.id",
	    NULL, NULL },
	{ "message_reaction_count", 0, "chat.id", NULL, NULL, NULL, NULL },
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
	{ "chat_member", 0, "chat.id", "from.id", NULL, NULL, NULL },
	{ "chat_join_request", 0, "chat.id", "from.id", NULL, NULL, NULL },
	{ "chat_boost", 0, "chat.id", "boost.source.user.id", NULL, NULL,
	    NULL },
	{ "removed_chat_boost", 0, "chat.id", "source.user.id", NULL, NULL,
	    NULL },
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

/* Follow a dotted path of object members; NULL if any step is missing. */
static const json_t *
keys_path(const json_t *obj, const char *path)
{
	const char	*dot;
	size_t		 len;

	if (path == NULL)
		return NULL;
	while (*path != '\0') {
		if (!json_is_object(obj))
			return NULL;
		dot = strchr(path, '.');
		len = dot != NULL ? (size_t)(dot - path) : strlen(path);
		obj = json_object_getn(obj, path, len);
		if (obj == NULL)
			return NULL;
		path += len;
		if (*path == '.')
			path++;
	}
	return obj;
}

static int
keys_path_int(const json_t *obj, const char *path, int64_t *out)
{
	const json_t *v;

	v = keys_path(obj, path);
	if (v == NULL || !json_is_integer(v))
		return -1;
	*out = (int64_t)json_integer_value(v);
	return 0;
}

static const struct keys_row *
keys_row_find(const json_t *update, const json_t **payload)
{
	const json_t	*v;
	size_t		 i;

	if (!json_is_object(update))
		return NULL;
	for (i = 0; i < sizeof(keys_table) / sizeof(keys_table[0]); i++) {
		v = json_object_get(update, keys_table[i].type);
		if (v != NULL && json_is_object(v)) {
			*payload = v;
			return &keys_table[i];
		}
	}
	return NULL;
}

/* A static string from the table: unknown types give NULL, never peer bytes. */
const char *
keys_update_type(const json_t *update)
{
	const struct keys_row	*row;
	const json_t		*payload;

	row = keys_row_find(update, &payload);
	return row != NULL ? row->type : NULL;
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
keys_bcid(const json_t *v, char *buf, size_t size)
{
	static const char	 hex[] = "0123456789ABCDEF";
	const char		*s;
	size_t			 len, i, o = 0;
	unsigned char		 c;
	char			 esc[KEYS_BCID_MAX * 3 + 4];

	if (v == NULL || !json_is_string(v) || json_string_length(v) == 0)
		return -1;
	s = json_string_value(v);
	len = json_string_length(v);
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
	return o < size ? 0 : -1;
}

/* The chat part: "chat:<id>", "bchat:<conn>:<id>" or "bconn:<conn>". */
static void
keys_chat_part(const struct keys_row *row, const json_t *p,
    struct keys_parts *kp)
{
	char	bcid[KEYS_BCID_MAX + 1];
	int64_t	id;
	int	have_bcid;

	have_bcid = keys_bcid(keys_path(p, row->bcid), bcid, sizeof(bcid))
	    == 0;
	if (row->flags & KF_BCONN) {
		if (have_bcid)
			snprintf(kp->chat, sizeof(kp->chat), "bconn:%s", bcid);
		return;
	}
	if (keys_path_int(p, row->chat, &id) == -1)
		return;
	if (have_bcid)
		snprintf(kp->chat, sizeof(kp->chat), "bchat:%s:%" PRId64,
		    bcid, id);
	else if (!(row->flags & KF_BIZ))
		snprintf(kp->chat, sizeof(kp->chat), "chat:%" PRId64, id);
}

/* The actor: a chat acting on its own behalf wins over "from". */
static void
keys_actor_part(const struct keys_row *row, const json_t *p,
    struct keys_parts *kp)
{
	int64_t id;

	if (keys_path_int(p, row->actor, &id) == 0)
		snprintf(kp->actor, sizeof(kp->actor), "chat:%" PRId64, id);
	else if (keys_path_int(p, row->user, &id) == 0)
		snprintf(kp->actor, sizeof(kp->actor), "user:%" PRId64, id);
}

/* A forum topic only counts when the message says it is in one. */
static void
keys_topic_part(const struct keys_row *row, const json_t *p,
    struct keys_parts *kp)
{
	const json_t	*msg;
	int64_t		 thread;

	if ((msg = keys_path(p, row->msg)) == NULL || !json_is_object(msg))
		return;
	if (!json_is_true(json_object_get(msg, "is_topic_message")))
		return;
	if (keys_path_int(msg, "message_thread_id", &thread) == 0)
		snprintf(kp->topic, sizeof(kp->topic), "topic:%" PRId64,
		    thread);
}

static int
keys_format(const struct keys_parts *kp, int kind, char *buf, size_t size)
{
	int n;

	switch (kind) {
	case KEY_CHAT:
		n = snprintf(buf, size, "%s", kp->chat);
		break;
	case KEY_USER:
		n = snprintf(buf, size, "%s", kp->actor);
		break;
	case KEY_CHAT_USER:
		if (kp->chat[0] == '\0' || kp->actor[0] == '\0')
			return -1;
		n = snprintf(buf, size, "%s/%s", kp->chat, kp->actor);
		break;
	case KEY_CHAT_TOPIC:
		if (kp->chat[0] != '\0' && kp->topic[0] != '\0')
			n = snprintf(buf, size, "%s/%s", kp->chat, kp->topic);
		else
			n = snprintf(buf, size, "%s", kp->chat);
		break;
	default:
		return -1;
	}
	if (n <= 0 || (size_t)n >= size)
		return -1;
	return 0;
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
keys_derive(const json_t *update, const enum key_kind *kinds, int nkinds,
    struct keyset *out)
{
	const struct keys_row	*row;
	const json_t		*payload = NULL;
	struct keys_parts	 kp;
	char			 key[KEY_STRLEN];
	int			 i;

	out->n = 0;
	if (nkinds <= 0 || (row = keys_row_find(update, &payload)) == NULL)
		return;
	memset(&kp, 0, sizeof(kp));
	keys_chat_part(row, payload, &kp);
	keys_actor_part(row, payload, &kp);
	keys_topic_part(row, payload, &kp);
	for (i = 0; i < nkinds; i++)
		if (keys_format(&kp, kinds[i], key, sizeof(key)) == 0)
			keys_add(out, key);
}

/*
 * An independent reference for session keys, for the fuzz targets and
 * check_keys to hold keys_derive_text() against: the derivation as it was
 * before keys.c read updates as text, walking jansson's tree, with a table
 * of its own.  Test code only: when the key rules change on purpose, this
 * changes with them, in the same commit, and the two must still agree on
 * every input a fuzzer can find.
 */
#include "config.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "keys.h"
#include "keys_ref.h"

#define REF_BCID_MAX	48	/* connection id in a key, after escaping */
#define REF_PART_MAX	96	/* one part of a key: "bchat:<conn>:<id>" */

/* Row flags. */
#define RF_BIZ		0x01	/* business update: connection id required */
#define RF_BCONN	0x02	/* business_connection: chat is the connection */

struct ref_row {
	const char	*type;	/* Update member name */
	int		 flags;
	const char	*chat;	/* path to the chat id */
	const char	*user;	/* path to the acting user's id */
	const char	*actor;	/* path to a chat acting instead of a user */
	const char	*msg;	/* path to the Message ("" = the payload) */
	const char	*bcid;	/* path to business_connection_id */
};

#define REF_MSG(type, flags) \
	{ type, flags, "chat.id", "from.id", "sender_chat.id", "", \
	    "business_connection_id" }

/*
 * Paths are relative to the payload object.  A Message's own
 * business_connection_id is honoured for every row that carries one (the
 * Bot API says such a message belongs to the business account's chat);
 * for RF_BIZ rows it is mandatory.
 */
static const struct ref_row ref_table[] = {
	REF_MSG("message", 0),
	REF_MSG("edited_message", 0),
	REF_MSG("channel_post", 0),
	REF_MSG("edited_channel_post", 0),
	{ "business_connection", RF_BCONN, NULL, "user.id", NULL, NULL, "id" },
	REF_MSG("business_message", RF_BIZ),
	REF_MSG("edited_business_message", RF_BIZ),
	{ "deleted_business_messages", RF_BIZ, "chat.id", NULL, NULL, NULL,
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
	{ "managed_bot", 0, NULL, "user.id", NULL, NULL, NULL },
	REF_MSG("guest_message", 0),
};


/* What one update is about, each part already formatted ("" = none). */
struct ref_parts {
	char	chat[REF_PART_MAX];
	char	actor[REF_PART_MAX];
	char	topic[REF_PART_MAX];
};

/* Follow a dotted path of object members; NULL if any step is missing. */
static const json_t *
ref_path(const json_t *obj, const char *path)
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
ref_path_int(const json_t *obj, const char *path, int64_t *out)
{
	const json_t *v;

	v = ref_path(obj, path);
	if (v == NULL || !json_is_integer(v))
		return -1;
	*out = (int64_t)json_integer_value(v);
	return 0;
}

static const struct ref_row *
ref_row_find(const json_t *update, const json_t **payload)
{
	const json_t	*v;
	size_t		 i;

	if (!json_is_object(update))
		return NULL;
	for (i = 0; i < sizeof(ref_table) / sizeof(ref_table[0]); i++) {
		v = json_object_get(update, ref_table[i].type);
		if (v != NULL && json_is_object(v)) {
			*payload = v;
			return &ref_table[i];
		}
	}
	return NULL;
}

/*
 * An update of a type the table does not know: its payload is the first
 * of its first 8 members (by name shorter than 64 bytes) that is an
 * object, update_id aside.
 */
static const json_t *
ref_unknown_payload(const json_t *update)
{
	const char	*k;
	json_t		*v;
	int		 seen = 0;

	if (!json_is_object(update))
		return NULL;
	json_object_foreach((json_t *)update, k, v) {
		if (strlen(k) >= 64)
			continue;
		if (seen++ == 8)
			break;
		if (strcmp(k, "update_id") != 0 && json_is_object(v))
			return v;
	}
	return NULL;
}

/* Its row: a message if it has a chat, about one if it has a message. */
static void
ref_unknown_row(const json_t *p, struct ref_row *row)
{
	memset(row, 0, sizeof(*row));
	row->user = json_is_object(json_object_get(p, "from")) ? "from.id" :
	    "user.id";
	if (json_is_object(json_object_get(p, "chat"))) {
		row->chat = "chat.id";
		row->actor = "sender_chat.id";
		row->msg = "";
		row->bcid = "business_connection_id";
	} else if (json_is_object(json_object_get(p, "message"))) {
		row->chat = "message.chat.id";
		row->msg = "message";
		row->bcid = "message.business_connection_id";
	}
}

/* A static string from the table: unknown types give NULL, never peer bytes. */
const char *
keys_ref_update_type(const json_t *update)
{
	const struct ref_row	*row;
	const json_t		*payload;

	row = ref_row_find(update, &payload);
	return row != NULL ? row->type : NULL;
}

static uint32_t
ref_fnv1a(const char *s, size_t len)
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
 * forge key structure), and past REF_BCID_MAX replace the tail by a hash
 * of the whole id so that long ids stay distinct yet bounded.
 */
static int
ref_bcid(const json_t *v, char *buf, size_t size)
{
	static const char	 hex[] = "0123456789ABCDEF";
	const char		*s;
	size_t			 len, i, o = 0;
	unsigned char		 c;
	char			 esc[REF_BCID_MAX * 3 + 4];

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
	if (i == len && o <= REF_BCID_MAX) {
		esc[o] = '\0';
		o = (size_t)snprintf(buf, size, "%s", esc);
	} else
		o = (size_t)snprintf(buf, size, "%.*s~%08" PRIx32,
		    REF_BCID_MAX - 9, esc, ref_fnv1a(s, len));
	return o < size ? 0 : -1;
}

/* The chat part: "chat:<id>", "bchat:<conn>:<id>" or "bconn:<conn>". */
static void
ref_chat_part(const struct ref_row *row, const json_t *p,
    struct ref_parts *kp)
{
	char	bcid[REF_BCID_MAX + 1];
	int64_t	id;
	int	have_bcid;

	have_bcid = ref_bcid(ref_path(p, row->bcid), bcid, sizeof(bcid))
	    == 0;
	if (row->flags & RF_BCONN) {
		if (have_bcid)
			snprintf(kp->chat, sizeof(kp->chat), "bconn:%s", bcid);
		return;
	}
	if (ref_path_int(p, row->chat, &id) == -1)
		return;
	if (have_bcid)
		snprintf(kp->chat, sizeof(kp->chat), "bchat:%s:%" PRId64,
		    bcid, id);
	else if (!(row->flags & RF_BIZ))
		snprintf(kp->chat, sizeof(kp->chat), "chat:%" PRId64, id);
}

/* The actor: a chat acting on its own behalf wins over "from". */
static void
ref_actor_part(const struct ref_row *row, const json_t *p,
    struct ref_parts *kp)
{
	int64_t id;

	if (ref_path_int(p, row->actor, &id) == 0)
		snprintf(kp->actor, sizeof(kp->actor), "chat:%" PRId64, id);
	else if (ref_path_int(p, row->user, &id) == 0)
		snprintf(kp->actor, sizeof(kp->actor), "user:%" PRId64, id);
}

/* A forum topic only counts when the message says it is in one. */
static void
ref_topic_part(const struct ref_row *row, const json_t *p,
    struct ref_parts *kp)
{
	const json_t	*msg;
	int64_t		 thread;

	if ((msg = ref_path(p, row->msg)) == NULL || !json_is_object(msg))
		return;
	if (!json_is_true(json_object_get(msg, "is_topic_message")))
		return;
	if (ref_path_int(msg, "message_thread_id", &thread) == 0)
		snprintf(kp->topic, sizeof(kp->topic), "topic:%" PRId64,
		    thread);
}

static int
ref_format(const struct ref_parts *kp, int kind, char *buf, size_t size)
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
ref_add(struct keyset *out, const char *key)
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
keys_ref_derive(const json_t *update, const enum key_kind *kinds, int nkinds,
    struct keyset *out)
{
	const struct ref_row	*row;
	const json_t		*payload = NULL;
	struct ref_row		 unknown;
	struct ref_parts	 kp;
	char			 key[KEY_STRLEN];
	int			 i;

	out->n = 0;
	out->unknown = 0;
	if ((row = ref_row_find(update, &payload)) == NULL) {
		if ((payload = ref_unknown_payload(update)) == NULL)
			return;
		ref_unknown_row(payload, &unknown);
		row = &unknown;
		out->unknown = 1;
	}
	if (nkinds <= 0)
		return;
	memset(&kp, 0, sizeof(kp));
	ref_chat_part(row, payload, &kp);
	ref_actor_part(row, payload, &kp);
	ref_topic_part(row, payload, &kp);
	for (i = 0; i < nkinds; i++)
		if (ref_format(&kp, kinds[i], key, sizeof(key)) == 0)
			ref_add(out, key);
}

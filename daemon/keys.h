/*
 * Session keys: which updates must never run at the same time.  A key is a
 * short string ("chat:-100123", "user:42", "chat:5/user:42",
 * "chat:-100123/topic:7", "bchat:<connection>:5" ...); updates sharing any
 * key are serialised.  Pure functions, no I/O.
 */
#ifndef TG_KEYS_H
#define TG_KEYS_H

#include <jansson.h>

enum key_kind {
	KEY_CHAT,		/* the chat the update belongs to (default) */
	KEY_USER,		/* the user who caused it */
	KEY_CHAT_USER,		/* one user inside one chat */
	KEY_CHAT_TOPIC,		/* one forum topic (or the chat when no topic) */
	KEY_KIND_MAX
};

#define KEYS_MAX	4	/* at most this many keys per update */
#define KEY_STRLEN	128	/* including NUL */

struct keyset {
	int	n;
	int	unknown;	/* a type keys.c does not know: keys by fallback */
	char	k[KEYS_MAX][KEY_STRLEN];
};

/* "chat" -> KEY_CHAT ...; returns -1 for an unknown name. */
int		 keys_kind_parse(const char *name, enum key_kind *out);
const char	*keys_kind_name(enum key_kind);

/*
 * Derive the keys of one Telegram Update object for the configured kinds
 * (nkinds == 0: no keys at all).  Never fails: a kind that does not apply
 * to this update contributes no key.  An update type the table does not
 * know (a newer Bot API) is keyed by a fallback, and out->unknown is set:
 * the chat from its payload's chat.id, or from message.chat.id; the user
 * from its from.id, or user.id; as a message would be, so that a new
 * message-like type never runs beside the same chat's messages.
 * Duplicate strings are folded.
 */
void		 keys_derive(const json_t *update, const enum key_kind *kinds,
		    int nkinds, struct keyset *out);
/* The same from the update's JSON text (any bytes are safe). */
void		 keys_derive_text(const char *json, size_t len,
		    const enum key_kind *kinds, int nkinds, struct keyset *out);

/*
 * The update types of the Bot API (the members of an Update), one table
 * for key derivation, the check of allowed_updates and the default set
 * asked for: type i, or NULL past the end.  *by_default (may be NULL)
 * says whether Telegram sends it when allowed_updates is empty.
 */
const char	*keys_update_type_at(size_t i, int *by_default);

/* The name of the update's payload member ("message", ...), or NULL. */
const char	*keys_update_type(const json_t *update);
const char	*keys_update_type_text(const char *json, size_t len);
/*
 * The name of an update's payload member whatever it is, for the log:
 * at most size - 1 bytes of [a-z0-9_], anything else as '?'.  "" if the
 * update has no payload object.
 */
void		 keys_type_name(const char *json, size_t len, char *buf,
		    size_t size);

#endif

/*
 * tgrunner-fakeapi: a fake Telegram Bot API server on loopback.
 *
 * It emulates the part of the Bot API a long-polling bot sees (getUpdates
 * with offsets, long polls, allowed_updates, webhooks, sendMessage) and adds
 * a control interface under /_ctl/ to inject or generate updates, inject
 * faults and read back what the bot did.  Scenario tests and benchmarks run
 * the daemon against it; worker authors use it to try their bots offline.
 *
 * Bot API requests may be JSON, urlencoded or multipart/form-data (file
 * uploads); a multipart call is recorded with its text fields as params
 * and, per file part, its filename, content type, size and SHA-256.
 *
 * Updates are serialised once, when injected, and kept in a deque in id
 * order, so a getUpdates answer is a few memcpy's whatever the backlog.
 * Everything runs on one libevent loop; nothing a client sends can crash it.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <uthash.h>
#include <utlist.h>

#define FA_DEFAULT_TOKEN	"123456:TEST-TOKEN"
#define FA_DEFAULT_PORT		8081
#define FA_MAX_BODY		(64 * 1024 * 1024)
#define FA_MAX_HEADERS		(64 * 1024)
#define FA_MAX_QUEUE		10000000	/* pending updates */
#define FA_MAX_CALLS		1000000		/* recorded calls kept */
#define FA_MAX_CHATS		1000000		/* per generate */
#define FA_MAX_TYPES		128		/* distinct update types */
#define FA_MAX_EPOCHS		64		/* remembered id sequences */
#define FA_MAX_POLL_TIMEOUT	50
#define FA_MAX_DELAY_MS		600000
#define FA_GEN_BUF		512
#define FA_MAX_FILES		1000		/* registered with /_ctl/file */
#define FA_MAX_FILE_SIZE	(64 * 1024 * 1024)
#define FA_FILE_CHUNK		(64 * 1024)	/* chunked answers */

enum fa_fault_kind {
	FAULT_5XX, FAULT_429, FAULT_SLOW, FAULT_TRUNCATED, FAULT_MALFORMED,
	FAULT_RESET, FAULT_409, FAULT_401, FAULT_LATE, FAULT_DISORDER
};

static const char *fa_fault_names[] = {
	"5xx", "429", "slow", "truncated", "malformed", "reset", "409", "401",
	"late", "disorder"
};

struct fa_fault {
	struct fa_fault		*next;
	char			 method[64];	/* "*" matches all */
	enum fa_fault_kind	 kind;
	long long		 count;		/* -1: until cleared */
	long long		 every;
	long long		 matched;
	int			 status;
	long long		 retry_after;
	long long		 delay_ms;
};

/* A deque of fixed-size elements: push at the back, pop at the front. */
struct fa_deque {
	char	*v;
	size_t	 esz;
	size_t	 head;
	size_t	 len;
	size_t	 cap;
};

struct fa_update {
	int64_t		 id;
	double		 release_at;
	char		*json;
	size_t		 len;
	uint32_t	 epoch;
	uint16_t	 type;
	uint8_t		 dropped;
};

struct fa_callrec {
	uint64_t	 seq;
	char		*method;
	char		*json;
	size_t		 len;
};

/* A file getFile knows and /file/bot<token>/<path> serves. */
struct fa_file {
	struct fa_file	*next;
	char		*file_id;
	char		*path;
	unsigned char	*data;
	size_t		 len;
	int		 chunked;	/* served without Content-Length */
	char		 sha256[65];
};

struct fa_released {
	int64_t		 id;
	double		 t;
};

/* One id sequence: Telegram restarts ids after a week without updates. */
struct fa_epoch {
	uint32_t	 no;
	int64_t		 start;
	int64_t		 next;
};

struct fa_chat {
	int64_t		 id;
	long long	 seq;		/* generated messages */
	long long	 msg_id;	/* messages in either direction */
	UT_hash_handle	 hh;
};

struct fa_count {
	char		*method;
	unsigned long	 n;
	UT_hash_handle	 hh;
};

enum fa_pend_kind { PEND_POLL, PEND_SLOW, PEND_RESET, PEND_LATE };

/* A request answered later: a held long poll or a fault that waits. */
struct fa_pending {
	struct fa_pending		*next;
	enum fa_pend_kind		 kind;
	struct evhttp_request		*req;
	struct evhttp_connection	*evcon;
	struct event			*ev;
	int				 limit;
	struct evbuffer			*body;	/* PEND_LATE: the answer */
	int				 status;
};

/* The state of one Bot API request while it is being handled. */
struct fa_call {
	struct evhttp_request	*req;
	char			 method[64];
	json_t			*params;
	json_t			*files;	/* multipart: file parts, else NULL */
	int			 dry;	/* body will be mangled: change no state */
	int			 status;
	struct evbuffer		*out;
	const char		*fault;	/* executed with this fault */
};

static struct {
	struct event_base	*base;
	struct evhttp		*http;
	const char		*token;
	int			 verbose;
	uint64_t		 seed;

	struct fa_deque		 queue;		/* struct fa_update */
	size_t			 nrel;		/* released prefix of queue */
	size_t			 ndropped;	/* dropped within that prefix */
	struct event		*release_ev;
	int64_t			 next_id;
	struct fa_epoch		 epochs[FA_MAX_EPOCHS];
	size_t			 nepochs;
	uint32_t		 epoch_no;
	int64_t			 confirmed_offset;
	uint32_t		 confirmed_epoch;

	char			*types[FA_MAX_TYPES];
	uint8_t			 allowed[FA_MAX_TYPES];
	size_t			 ntypes;
	json_t			*allowed_updates;

	struct fa_deque		 calls;		/* struct fa_callrec */
	uint64_t		 call_seq;
	struct fa_deque		 released;	/* struct fa_released */
	struct fa_count		*counts;
	struct fa_chat		*chats;
	struct fa_fault		*faults;
	struct fa_pending	*pending;
	struct fa_pending	*held;
	char			*webhook;
	struct fa_file		*files;
	size_t			 nfiles;

	unsigned long long	 served;
	unsigned long long	 polls;
	unsigned long long	 unauthorized;	/* requests with a wrong token */
	unsigned long long	 file_requests;	/* GET /file/bot<token>/... */
} fa;

static const char *fa_methods[] = {
	"getMe", "logOut", "close", "getUpdates", "setWebhook", "deleteWebhook",
	"getWebhookInfo", "sendMessage", "forwardMessage", "forwardMessages",
	"copyMessage", "copyMessages", "sendPhoto", "sendAudio", "sendDocument",
	"sendVideo", "sendAnimation", "sendVoice", "sendVideoNote",
	"sendMediaGroup", "sendLocation", "sendVenue", "sendContact", "sendPoll",
	"sendDice", "sendChatAction", "setMessageReaction",
	"getUserProfilePhotos", "getFile", "banChatMember", "unbanChatMember",
	"restrictChatMember", "promoteChatMember", "getChat", "getChatMember",
	"getChatAdministrators", "getChatMemberCount", "leaveChat",
	"answerCallbackQuery", "answerInlineQuery", "editMessageText",
	"editMessageCaption", "editMessageMedia", "editMessageReplyMarkup",
	"stopPoll", "deleteMessage", "deleteMessages", "setMyCommands",
	"getMyCommands", "deleteMyCommands", "sendSticker", "sendInvoice",
	"answerShippingQuery", "answerPreCheckoutQuery", "pinChatMessage",
	"unpinChatMessage", "approveChatJoinRequest", "declineChatJoinRequest",
	NULL
};

/* Types Telegram leaves out unless allowed_updates names them. */
static const char *fa_optin_types[] = {
	"chat_member", "message_reaction", "message_reaction_count", NULL
};

static void	fa_bot_dispatch(struct evhttp_request *, const char *);
static void	fa_poll_answer(struct fa_pending *);

/* --- utilities ------------------------------------------------------------- */

static void
fa_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("tgrunner-fakeapi: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Out of memory in a test tool: there is nothing sensible left to do. */
static void *
fa_xrealloc(void *p, size_t n)
{
	if ((p = realloc(p, n ? n : 1)) == NULL) {
		fa_log("out of memory (%zu bytes)", n);
		exit(1);
	}
	return p;
}

static char *
fa_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(fa_xrealloc(NULL, n), s, n);
}

static double
fa_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct timeval
fa_tv(double secs)
{
	struct timeval tv;

	if (secs < 0)
		secs = 0;
	tv.tv_sec = (time_t)secs;
	tv.tv_usec = (suseconds_t)((secs - tv.tv_sec) * 1e6);
	return tv;
}

/* splitmix64: tiny, seedable, good enough for test traffic. */
static uint64_t
fa_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void
fa_dq_init(struct fa_deque *d, size_t esz)
{
	memset(d, 0, sizeof(*d));
	d->esz = esz;
}

static void *
fa_dq_at(struct fa_deque *d, size_t i)
{
	return d->v + (d->head + i) * d->esz;
}

static void *
fa_dq_push(struct fa_deque *d)
{
	void *p;

	if (d->head + d->len == d->cap) {
		if (d->head > 0 && d->len <= d->cap / 2) {
			memmove(d->v, fa_dq_at(d, 0), d->len * d->esz);
			d->head = 0;
		} else {
			d->cap = d->cap ? d->cap * 2 : 64;
			d->v = fa_xrealloc(d->v, d->cap * d->esz);
		}
	}
	p = fa_dq_at(d, d->len++);
	memset(p, 0, d->esz);
	return p;
}

static void
fa_dq_pop(struct fa_deque *d)
{
	d->head++;
	if (--d->len == 0)
		d->head = 0;
}

static void
fa_dq_free(struct fa_deque *d)
{
	free(d->v);
	fa_dq_init(d, d->esz);
}

/* A JSON string literal of s, escaped by jansson. */
static void
fa_add_jstr(struct evbuffer *b, const char *s)
{
	json_t *j = json_string(s);
	char *t;

	if (j == NULL || (t = json_dumps(j, JSON_ENCODE_ANY)) == NULL) {
		evbuffer_add(b, "\"\"", 2);
		json_decref(j);
		return;
	}
	evbuffer_add(b, t, strlen(t));
	free(t);
	json_decref(j);
}

/* --- replies ------------------------------------------------------------- */

static void
fa_send(struct evhttp_request *req, int status, const char *ctype,
    struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", ctype);
	if (fa.verbose)
		fa_log("%s -> %d", evhttp_request_get_uri(req), status);
	evhttp_send_reply(req, status, NULL, body);
}

static void
fa_send_json(struct evhttp_request *req, int status, struct evbuffer *body)
{
	fa_send(req, status, "application/json", body);
}

/* Telegram's error shape; retry_after < 0 means no parameters. */
static void
fa_error_body(struct evbuffer *b, int code, const char *desc,
    long long retry_after)
{
	evbuffer_add_printf(b, "{\"ok\":false,\"error_code\":%d,"
	    "\"description\":", code);
	fa_add_jstr(b, desc);
	if (retry_after >= 0)
		evbuffer_add_printf(b, ",\"parameters\":{\"retry_after\":%lld}",
		    retry_after);
	evbuffer_add(b, "}", 1);
}

static void
fa_send_error(struct evhttp_request *req, int code, const char *desc)
{
	struct evbuffer *b = evbuffer_new();

	fa_error_body(b, code, desc, -1);
	fa_send_json(req, code, b);
	evbuffer_free(b);
}

static void
fa_send_text(struct evhttp_request *req, int status, const char *json)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add(b, json, strlen(json));
	fa_send_json(req, status, b);
	evbuffer_free(b);
}

static const char fa_conflict_poll[] = "Conflict: terminated by other "
    "getUpdates request; make sure that only one bot instance is running";
static const char fa_conflict_hook[] = "Conflict: can't use getUpdates "
    "method while webhook is active; use deleteWebhook to delete the "
    "webhook first";

/* --- pending requests -------------------------------------------------- */

static void
fa_pending_free(struct fa_pending *p)
{
	LL_DELETE(fa.pending, p);
	if (fa.held == p)
		fa.held = NULL;
	event_free(p->ev);
	if (p->body != NULL)
		evbuffer_free(p->body);
	free(p);
}

/*
 * A client went away while its request waited.  libevent detaches such a
 * request (evcon NULL) and leaves it to us: answering it frees it.  A request
 * still attached is freed by libevent right after this callback.
 */
static void
fa_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct fa_pending *p, *tmp;

	LL_FOREACH_SAFE(fa.pending, p, tmp) {
		if (p->evcon != evcon)
			continue;
		if (evhttp_request_get_connection(p->req) == NULL)
			evhttp_send_reply(p->req, 500, NULL, NULL);
		fa_pending_free(p);
	}
}

static struct fa_pending *
fa_pending_new(struct evhttp_request *req, enum fa_pend_kind kind,
    event_callback_fn cb)
{
	struct fa_pending *p = fa_xrealloc(NULL, sizeof(*p));

	memset(p, 0, sizeof(*p));
	p->kind = kind;
	p->req = req;
	p->evcon = evhttp_request_get_connection(req);
	p->ev = evtimer_new(fa.base, cb, p);
	if (p->evcon != NULL)
		evhttp_connection_set_closecb(p->evcon, fa_conn_closed, NULL);
	LL_APPEND(fa.pending, p);
	return p;
}

/* --- update types and allowed_updates ------------------------------------ */

static int
fa_type_default_allowed(const char *name)
{
	size_t i;

	for (i = 0; fa_optin_types[i] != NULL; i++)
		if (strcmp(name, fa_optin_types[i]) == 0)
			return 0;
	return 1;
}

static int
fa_type_allowed_by(const char *name)
{
	size_t i;
	json_t *v;

	if (fa.allowed_updates == NULL || json_array_size(fa.allowed_updates) == 0)
		return fa_type_default_allowed(name);
	json_array_foreach(fa.allowed_updates, i, v)
		if (json_is_string(v) && strcmp(json_string_value(v), name) == 0)
			return 1;
	return 0;
}

/* Index 0 is the catch-all for updates without a type or past the table. */
static uint16_t
fa_type_intern(const char *name)
{
	size_t i;

	if (fa.ntypes == 0) {
		fa.types[0] = fa_xstrdup("");
		fa.allowed[0] = 1;
		fa.ntypes = 1;
	}
	for (i = 1; i < fa.ntypes; i++)
		if (strcmp(fa.types[i], name) == 0)
			return i;
	if (fa.ntypes == FA_MAX_TYPES || *name == '\0')
		return 0;
	fa.types[fa.ntypes] = fa_xstrdup(name);
	fa.allowed[fa.ntypes] = fa_type_allowed_by(name);
	return fa.ntypes++;
}

/* list NULL: back to Telegram's default. */
static void
fa_allowed_set(json_t *list)
{
	size_t i;

	if (list != NULL && !json_is_array(list))
		return;
	json_decref(fa.allowed_updates);
	fa.allowed_updates = json_incref(list);
	for (i = 1; i < fa.ntypes; i++)
		fa.allowed[i] = fa_type_allowed_by(fa.types[i]);
}

/* --- the update queue ------------------------------------------------------ */

static struct fa_update *
fa_q_at(size_t i)
{
	return fa_dq_at(&fa.queue, i);
}

static void
fa_q_pop(void)
{
	struct fa_update *u = fa_q_at(0);

	if (u->dropped)
		fa.ndropped--;
	free(u->json);
	fa_dq_pop(&fa.queue);
	fa.nrel--;
}

static void
fa_q_clear(void)
{
	size_t i;

	for (i = 0; i < fa.queue.len; i++)
		free(fa_q_at(i)->json);
	fa_dq_free(&fa.queue);
	fa.nrel = fa.ndropped = 0;
	evtimer_del(fa.release_ev);
}

static void
fa_epoch_start(int64_t first)
{
	if (fa.nepochs == FA_MAX_EPOCHS) {
		memmove(fa.epochs, fa.epochs + 1,
		    (FA_MAX_EPOCHS - 1) * sizeof(fa.epochs[0]));
		fa.nepochs--;
	}
	fa.epochs[fa.nepochs].no = ++fa.epoch_no;
	fa.epochs[fa.nepochs].start = first;
	fa.epochs[fa.nepochs].next = first;
	fa.nepochs++;
	fa.next_id = first;
}

static struct fa_update *
fa_q_push(const char *type, double release_at)
{
	struct fa_update *u = fa_dq_push(&fa.queue);

	u->id = fa.next_id++;
	fa.epochs[fa.nepochs - 1].next = fa.next_id;
	u->epoch = fa.epoch_no;
	u->type = fa_type_intern(type);
	u->release_at = release_at;
	return u;
}

/*
 * The id sequence an offset belongs to, newest first; 0 if none: such an
 * offset (from before a restart of ids, or garbage) confirms nothing, as
 * Telegram's queue ignores offsets far from its ids.
 */
static uint32_t
fa_offset_epoch(int64_t offset)
{
	size_t i;

	for (i = fa.nepochs; i-- > 0; )
		if (offset >= fa.epochs[i].start && offset <= fa.epochs[i].next)
			return fa.epochs[i].no;
	return 0;
}

static void
fa_confirm(int64_t offset)
{
	uint32_t ep;
	struct fa_update *u;

	if (offset <= 0 || (ep = fa_offset_epoch(offset)) == 0)
		return;
	while (fa.nrel > 0) {
		u = fa_q_at(0);
		if (u->epoch > ep || (u->epoch == ep && u->id >= offset))
			break;
		fa_q_pop();
	}
	if (ep > fa.confirmed_epoch || offset > fa.confirmed_offset) {
		fa.confirmed_offset = offset;
		fa.confirmed_epoch = ep;
	}
}

static int
fa_q_usable(struct fa_update *u)
{
	return !u->dropped && fa.allowed[u->type];
}

/* Negative offset -n: keep the last n usable updates, forget the rest. */
static void
fa_confirm_tail(int64_t n)
{
	size_t i = fa.nrel, keep = 0;

	while (i > 0 && (int64_t)keep < n)
		if (fa_q_usable(fa_q_at(--i)))
			keep++;
	while (i-- > 0)		/* i: the first update kept */
		fa_q_pop();
}

/* Telegram drops updates of types the bot did not ask for. */
static void
fa_q_skip_head(void)
{
	while (fa.nrel > 0 && !fa_q_usable(fa_q_at(0)))
		fa_q_pop();
}

/* The result array of a getUpdates; dry: leave the queue as it is. */
static size_t
fa_q_serve(struct evbuffer *b, int limit, int dry)
{
	size_t i, n = 0;
	struct fa_update *u;

	evbuffer_add(b, "{\"ok\":true,\"result\":[", 21);
	for (i = 0; i < fa.nrel && n < (size_t)limit; i++) {
		u = fa_q_at(i);
		if (u->dropped)
			continue;
		if (!fa.allowed[u->type]) {
			if (!dry) {
				u->dropped = 1;
				fa.ndropped++;
			}
			continue;
		}
		if (n++ > 0)
			evbuffer_add(b, ",", 1);
		evbuffer_add(b, u->json, u->len);
	}
	evbuffer_add(b, "]}", 2);
	if (!dry)
		fa.served += n;
	return n;
}

static void
fa_poll_wake(void)
{
	if (fa.held == NULL)
		return;
	fa_q_skip_head();
	if (fa.nrel > 0)
		fa_poll_answer(fa.held);
}

static void
fa_release_schedule(double now)
{
	if (fa.nrel < fa.queue.len) {
		struct timeval tv = fa_tv(fa_q_at(fa.nrel)->release_at - now);

		evtimer_add(fa.release_ev, &tv);
	}
}

/* Release, in queue order, every update whose time has come. */
static void
fa_release_due(void)
{
	double now = fa_now();
	struct fa_update *u;
	struct fa_released *r;
	size_t before = fa.nrel;

	while (fa.nrel < fa.queue.len) {
		u = fa_q_at(fa.nrel);
		if (u->release_at > now)
			break;
		r = fa_dq_push(&fa.released);
		r->id = u->id;
		r->t = now;
		fa.nrel++;
	}
	fa_release_schedule(now);
	if (fa.nrel > before)
		fa_poll_wake();
}

static void
fa_release_cb(evutil_socket_t fd, short what, void *arg)
{
	fa_release_due();
}

/* --- calls and counters ---------------------------------------------------- */

static void
fa_count_call(const char *method)
{
	struct fa_count *c;

	HASH_FIND_STR(fa.counts, method, c);
	if (c == NULL) {
		c = fa_xrealloc(NULL, sizeof(*c));
		memset(c, 0, sizeof(*c));
		c->method = fa_xstrdup(method);
		HASH_ADD_KEYPTR(hh, fa.counts, c->method, strlen(c->method), c);
	}
	c->n++;
	if (strcmp(method, "getUpdates") == 0)
		fa.polls++;
}

/* A request header worth recording, as ,"name":"value". */
static void
fa_record_header(struct evbuffer *b, struct evhttp_request *req,
    const char *header, const char *name)
{
	const char *v = evhttp_find_header(evhttp_request_get_input_headers(req),
	    header);

	if (v == NULL)
		return;
	evbuffer_add_printf(b, ",\"%s\":", name);
	fa_add_jstr(b, v);
}

static void
fa_record_call(struct evhttp_request *req, const char *method, json_t *params,
    json_t *files, const char *fault)
{
	struct fa_callrec *c;
	struct evbuffer *b = evbuffer_new();
	char *p = json_dumps(params, JSON_COMPACT);

	if (fa.calls.len == FA_MAX_CALLS) {
		c = fa_dq_at(&fa.calls, 0);
		free(c->method);
		free(c->json);
		fa_dq_pop(&fa.calls);
	}
	c = fa_dq_push(&fa.calls);
	c->seq = ++fa.call_seq;
	c->method = fa_xstrdup(method);
	evbuffer_add_printf(b, "{\"seq\":%" PRIu64 ",\"method\":", c->seq);
	fa_add_jstr(b, method);
	evbuffer_add_printf(b, ",\"params\":%s,\"t\":%.6f", p ? p : "{}",
	    fa_now());
	if (files != NULL) {
		free(p);
		p = json_dumps(files, JSON_COMPACT);
		evbuffer_add_printf(b, ",\"multipart\":true,\"files\":%s",
		    p ? p : "{}");
	}
	if (fault != NULL)
		evbuffer_add_printf(b, ",\"fault\":\"%s\"", fault);
	fa_record_header(b, req, "X-Tgrunner-Update", "update_header");
	fa_record_header(b, req, "User-Agent", "user_agent");
	evbuffer_add(b, "}", 1);
	c->len = evbuffer_get_length(b);
	c->json = fa_xrealloc(NULL, c->len);
	evbuffer_remove(b, c->json, c->len);
	evbuffer_free(b);
	free(p);
}

static void
fa_calls_clear(void)
{
	struct fa_callrec *c;
	struct fa_count *n, *tmp;

	while (fa.calls.len > 0) {
		c = fa_dq_at(&fa.calls, 0);
		free(c->method);
		free(c->json);
		fa_dq_pop(&fa.calls);
	}
	fa_dq_free(&fa.calls);
	HASH_ITER(hh, fa.counts, n, tmp) {
		HASH_DEL(fa.counts, n);
		free(n->method);
		free(n);
	}
}

static struct fa_chat *
fa_chat_get(int64_t id)
{
	struct fa_chat *c;

	HASH_FIND(hh, fa.chats, &id, sizeof(id), c);
	if (c == NULL) {
		c = fa_xrealloc(NULL, sizeof(*c));
		memset(c, 0, sizeof(*c));
		c->id = id;
		HASH_ADD(hh, fa.chats, id, sizeof(c->id), c);
	}
	return c;
}

static void
fa_chats_clear(void)
{
	struct fa_chat *c, *tmp;

	HASH_ITER(hh, fa.chats, c, tmp) {
		HASH_DEL(fa.chats, c);
		free(c);
	}
}

static void
fa_faults_clear(void)
{
	struct fa_fault *f, *tmp;

	LL_FOREACH_SAFE(fa.faults, f, tmp) {
		LL_DELETE(fa.faults, f);
		free(f);
	}
}

/* --- parameters ----------------------------------------------------------- */

/* Form values are decoded like Telegram does: JSON-looking text is JSON. */
static json_t *
fa_form_value(const char *v)
{
	json_t *j = NULL;

	if (*v == '[' || *v == '{')
		j = json_loads(v, 0, NULL);
	else if (*v == '-' || isdigit((unsigned char)*v)) {
		j = json_loads(v, JSON_DECODE_ANY, NULL);
		if (j != NULL && !json_is_number(j)) {
			json_decref(j);
			j = NULL;
		}
	} else if (strcmp(v, "true") == 0)
		j = json_true();
	else if (strcmp(v, "false") == 0)
		j = json_false();
	return j != NULL ? j : json_string(v);
}

static int
fa_parse_form(const char *s, json_t *params)
{
	struct evkeyvalq kv;
	struct evkeyval *e;
	json_t *v;
	int rc = 0;

	/* No <sys/queue.h> on glibc: walk libevent's TAILQ by hand. */
	kv.tqh_first = NULL;
	kv.tqh_last = &kv.tqh_first;
	if (*s != '\0' && evhttp_parse_query_str(s, &kv) == -1)
		return -1;
	for (e = kv.tqh_first; e != NULL; e = e->next.tqe_next) {
		if ((v = fa_form_value(e->value)) == NULL) {
			rc = -1;	/* not UTF-8 */
			break;
		}
		json_object_set_new(params, e->key, v);
	}
	evhttp_clear_headers(&kv);
	return rc;
}

static const char *
fa_ctype(struct evhttp_request *req)
{
	return evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Content-Type");
}

static int
fa_body_is_json(struct evhttp_request *req, const char *body)
{
	const char *ct = fa_ctype(req);

	if (ct == NULL)
		return *body == '{';
	return strncasecmp(ct, "application/json", 16) == 0;
}

/* --- SHA-256 (FIPS 180-4), to report what a file part held ------------ */

struct fa_sha256 {
	uint32_t	h[8];
	uint8_t		buf[64];
	size_t		n;
	uint64_t	bytes;
};

static const uint32_t fa_sha_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
	0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
	0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
	0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

#define FA_ROR(x, n)	(((x) >> (n)) | ((x) << (32 - (n))))

static void
fa_sha256_block(struct fa_sha256 *s, const uint8_t *p)
{
	uint32_t w[64], v[8], t1, t2;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		    (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++)
		w[i] = w[i - 16] + w[i - 7] + (FA_ROR(w[i - 15], 7) ^
		    FA_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) +
		    (FA_ROR(w[i - 2], 17) ^ FA_ROR(w[i - 2], 19) ^
		    (w[i - 2] >> 10));
	memcpy(v, s->h, sizeof(v));
	for (i = 0; i < 64; i++) {
		t1 = v[7] + (FA_ROR(v[4], 6) ^ FA_ROR(v[4], 11) ^
		    FA_ROR(v[4], 25)) + ((v[4] & v[5]) ^ (~v[4] & v[6])) +
		    fa_sha_k[i] + w[i];
		t2 = (FA_ROR(v[0], 2) ^ FA_ROR(v[0], 13) ^ FA_ROR(v[0], 22)) +
		    ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
		memmove(v + 1, v, 7 * sizeof(v[0]));
		v[4] += t1;
		v[0] = t1 + t2;
	}
	for (i = 0; i < 8; i++)
		s->h[i] += v[i];
}

static void
fa_sha256_update(struct fa_sha256 *s, const uint8_t *p, size_t len)
{
	size_t n;

	s->bytes += len;
	while (len > 0) {
		n = 64 - s->n < len ? 64 - s->n : len;
		memcpy(s->buf + s->n, p, n);
		s->n += n;
		p += n;
		len -= n;
		if (s->n == 64) {
			fa_sha256_block(s, s->buf);
			s->n = 0;
		}
	}
}

static void
fa_sha256_hex(const uint8_t *p, size_t len, char out[65])
{
	static const uint32_t init[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372,
	    0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	struct fa_sha256 s;
	uint8_t pad[72] = { 0x80 };
	uint64_t bits;
	size_t npad;
	int i;

	memset(&s, 0, sizeof(s));
	memcpy(s.h, init, sizeof(init));
	fa_sha256_update(&s, p, len);
	bits = s.bytes * 8;
	npad = (s.n < 56 ? 56 : 120) - s.n;
	for (i = 0; i < 8; i++)
		pad[npad + i] = (uint8_t)(bits >> (56 - 8 * i));
	fa_sha256_update(&s, pad, npad + 8);
	for (i = 0; i < 8; i++)
		snprintf(out + 8 * i, 9, "%08x", s.h[i]);
}

/* --- multipart/form-data ------------------------------------------------- */

/* The value of param (e.g. name, filename) in a header line, unquoted. */
static int
fa_hdr_param(const char *line, const char *param, char *out, size_t outsz)
{
	const char *p = line;
	size_t plen = strlen(param), n;

	while ((p = strchr(p, ';')) != NULL) {
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncasecmp(p, param, plen) != 0 || p[plen] != '=')
			continue;
		p += plen + 1;
		n = 0;
		if (*p == '"') {
			for (p++; *p != '\0' && *p != '"'; p++) {
				if (*p == '\\' && p[1] != '\0')
					p++;
				if (n + 1 < outsz)
					out[n++] = *p;
			}
		} else
			for (; *p != '\0' && *p != ';' && *p != ' '; p++)
				if (n + 1 < outsz)
					out[n++] = *p;
		out[n] = '\0';
		return 0;
	}
	return -1;
}

struct fa_part {
	char		 name[256];
	char		 filename[256];
	char		 ctype[256];
	int		 is_file;
	const char	*data;
	size_t		 len;
};

/* The headers of one part, [p, end). */
static int
fa_part_headers(const char *p, const char *end, struct fa_part *pt)
{
	char line[1024];
	const char *eol;
	size_t n;
	int named = 0;

	while (p < end) {
		eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (eol == NULL)
			eol = end;
		n = (size_t)(eol - p) < sizeof(line) - 1 ? (size_t)(eol - p) :
		    sizeof(line) - 1;
		memcpy(line, p, n);
		line[n] = '\0';
		if (strncasecmp(line, "Content-Disposition:", 20) == 0) {
			if (strstr(line, "form-data") == NULL ||
			    fa_hdr_param(line, "name", pt->name,
			    sizeof(pt->name)) == -1)
				return -1;
			named = 1;
			pt->is_file = fa_hdr_param(line, "filename",
			    pt->filename, sizeof(pt->filename)) == 0;
		} else if (strncasecmp(line, "Content-Type:", 13) == 0) {
			for (p = line + 13; *p == ' '; p++)
				;
			snprintf(pt->ctype, sizeof(pt->ctype), "%.255s", p);
		}
		p = eol + 2;
	}
	return named ? 0 : -1;
}

static int
fa_part_record(struct fa_part *pt, json_t *params, json_t *files)
{
	char hex[65], *text;
	json_t *v;

	if (pt->is_file) {
		fa_sha256_hex((const uint8_t *)pt->data, pt->len, hex);
		v = json_pack("{s:s,s:s,s:I,s:s}", "filename", pt->filename,
		    "content_type", pt->ctype, "size", (json_int_t)pt->len,
		    "sha256", hex);
		if (v == NULL)
			return -1;
		json_object_set_new(files, pt->name, v);
		return 0;
	}
	if (memchr(pt->data, '\0', pt->len) != NULL)
		return -1;
	text = fa_xrealloc(NULL, pt->len + 1);
	memcpy(text, pt->data, pt->len);
	text[pt->len] = '\0';
	v = fa_form_value(text);
	free(text);
	if (v == NULL)
		return -1;	/* not UTF-8 */
	json_object_set_new(params, pt->name, v);
	return 0;
}

/* Text fields into params, file parts into files; -1 if malformed. */
static int
fa_parse_multipart(const char *ct, const char *body, size_t len,
    json_t *params, json_t *files)
{
	char bnd[80], delim[84];
	const char *p, *end = body + len, *hend, *next;
	struct fa_part pt;
	size_t dlen;

	if (fa_hdr_param(ct, "boundary", bnd, sizeof(bnd)) == -1 ||
	    *bnd == '\0' || strlen(bnd) > 70)
		return -1;
	dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", bnd);
	/* the first delimiter may open the body without its CRLF */
	if (len >= dlen - 2 && memcmp(body, delim + 2, dlen - 2) == 0)
		p = body + dlen - 2;
	else if ((p = memmem(body, len, delim, dlen)) != NULL)
		p += dlen;
	else
		return -1;
	for (;;) {
		if (end - p >= 2 && p[0] == '-' && p[1] == '-')
			return 0;
		if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
			return -1;
		p += 2;
		if ((hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4)) ==
		    NULL)
			return -1;
		memset(&pt, 0, sizeof(pt));
		if (fa_part_headers(p, hend, &pt) == -1)
			return -1;
		pt.data = hend + 4;
		if ((next = memmem(pt.data, (size_t)(end - pt.data), delim,
		    dlen)) == NULL)
			return -1;
		pt.len = (size_t)(next - pt.data);
		if (fa_part_record(&pt, params, files) == -1)
			return -1;
		p = next + dlen;
	}
}

/* The request body as a NUL-terminated string (owned by the request). */
static const char *
fa_body(struct evhttp_request *req, size_t *lenp)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	unsigned char *p;

	/* A trailing NUL makes it a C string; it is never sent anywhere. */
	if (len == 0 || (p = evbuffer_pullup(in, -1))[len - 1] != '\0') {
		evbuffer_add(in, "", 1);
		p = evbuffer_pullup(in, -1);
	} else
		len--;
	*lenp = len;
	return (const char *)p;
}

/*
 * All parameters of a Bot API request: query string, then the body
 * (form, multipart or JSON), later ones winning.  Returns NULL with *err
 * set.  *files: the file parts of a multipart body, else NULL.
 */
static json_t *
fa_params(struct evhttp_request *req, const char **err, json_t **files)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
	json_t *params = json_object(), *body;
	const char *s;
	size_t len;

	*err = "Bad Request: can't parse query string";
	if (q != NULL && fa_parse_form(q, params) == -1)
		goto fail;
	*files = NULL;
	s = fa_body(req, &len);
	if (len == 0)
		return params;
	if (fa_ctype(req) != NULL &&
	    strncasecmp(fa_ctype(req), "multipart/form-data", 19) == 0) {
		*err = "Bad Request: can't parse multipart/form-data";
		*files = json_object();
		if (fa_parse_multipart(fa_ctype(req), s, len, params,
		    *files) == -1) {
			json_decref(*files);
			*files = NULL;
			goto fail;
		}
		return params;
	}
	if (fa_body_is_json(req, s)) {
		*err = "Bad Request: can't parse JSON object";
		body = json_loadb(s, len, 0, NULL);
		if (!json_is_object(body)) {
			json_decref(body);
			goto fail;
		}
		json_object_update(params, body);
		json_decref(body);
		return params;
	}
	*err = "Bad Request: can't parse parameters";
	if (strlen(s) != len || fa_parse_form(s, params) == -1)
		goto fail;
	return params;
fail:
	json_decref(params);
	return NULL;
}

/* An integer parameter given as number or numeric string. */
static long long
fa_param_int(json_t *params, const char *name, long long def)
{
	json_t *v = json_object_get(params, name);
	const char *s;
	char *end;
	long long n;

	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v) && fabs(json_real_value(v)) < 9e18)
		return (long long)json_real_value(v);
	if (!json_is_string(v))
		return def;
	s = json_string_value(v);
	errno = 0;
	n = strtoll(s, &end, 10);
	if (end == s || *end != '\0' || errno != 0)
		return def;
	return n;
}

static double
fa_param_num(json_t *params, const char *name, double def)
{
	json_t *v = json_object_get(params, name);

	return json_is_number(v) ? json_number_value(v) : def;
}

static const char *
fa_param_str(json_t *params, const char *name, const char *def)
{
	json_t *v = json_object_get(params, name);

	return json_is_string(v) ? json_string_value(v) : def;
}

static int
fa_param_bool(json_t *params, const char *name)
{
	json_t *v = json_object_get(params, name);

	if (json_is_string(v))
		return strcmp(json_string_value(v), "true") == 0;
	return json_is_true(v) || (json_is_integer(v) && json_integer_value(v));
}

static long long
fa_clamp(long long v, long long lo, long long hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* --- Bot API methods ------------------------------------------------------- */

static void
fa_call_error(struct fa_call *c, int code, const char *desc)
{
	c->status = code;
	fa_error_body(c->out, code, desc, -1);
}

static void
fa_bot_user(struct evbuffer *b)
{
	evbuffer_add_printf(b, "{\"id\":%lld,\"is_bot\":true,"
	    "\"first_name\":\"Fake Bot\",\"username\":\"fake_bot\"",
	    strtoll(fa.token, NULL, 10));
}

static void
fa_m_getme(struct fa_call *c)
{
	evbuffer_add(c->out, "{\"ok\":true,\"result\":", 20);
	fa_bot_user(c->out);
	evbuffer_add_printf(c->out, ",\"can_join_groups\":true,"
	    "\"can_read_all_group_messages\":false,"
	    "\"supports_inline_queries\":false}}");
}

static void
fa_poll_answer(struct fa_pending *p)
{
	struct evbuffer *b = evbuffer_new();

	fa_q_serve(b, p->limit, 0);
	fa_send_json(p->req, 200, b);
	evbuffer_free(b);
	fa_pending_free(p);
}

static void
fa_poll_timeout(evutil_socket_t fd, short what, void *arg)
{
	fa_poll_answer(arg);
}

/* The held long poll loses to a newer one or to a webhook. */
static void
fa_poll_conflict(const char *desc)
{
	struct fa_pending *p = fa.held;

	if (p == NULL)
		return;
	fa_send_error(p->req, 409, desc);
	fa_pending_free(p);
}

/* Given as a JSON array, or as a string holding one (as in a form). */
static void
fa_m_allowed(json_t *params)
{
	json_t *v = json_object_get(params, "allowed_updates"), *parsed;

	if (json_is_array(v))
		fa_allowed_set(v);
	else if (json_is_string(v)) {
		parsed = json_loads(json_string_value(v), 0, NULL);
		if (json_is_array(parsed))
			fa_allowed_set(parsed);
		json_decref(parsed);
	}
}

static void
fa_m_getupdates(struct fa_call *c)
{
	long long offset = fa_param_int(c->params, "offset", 0);
	long long limit = fa_param_int(c->params, "limit", 100);
	long long timeout = fa_param_int(c->params, "timeout", 0);
	struct fa_pending *p;
	struct timeval tv;

	if (fa.webhook != NULL) {
		fa_call_error(c, 409, fa_conflict_hook);
		return;
	}
	limit = fa_clamp(limit, 1, 100);
	timeout = fa_clamp(timeout, 0, FA_MAX_POLL_TIMEOUT);
	if (c->dry) {
		fa_q_serve(c->out, limit, 1);
		return;
	}
	fa_poll_conflict(fa_conflict_poll);
	fa_m_allowed(c->params);
	if (offset < 0)
		fa_confirm_tail(-offset);
	else
		fa_confirm(offset);
	fa_q_skip_head();
	if (fa.nrel > 0 || timeout == 0) {
		fa_q_serve(c->out, limit, 0);
		return;
	}
	p = fa_pending_new(c->req, PEND_POLL, fa_poll_timeout);
	p->limit = limit;
	fa.held = p;
	tv = fa_tv(timeout);
	evtimer_add(p->ev, &tv);
	c->status = 0;		/* answered later */
}

static void
fa_set_webhook(const char *url)
{
	free(fa.webhook);
	fa.webhook = (url != NULL && *url != '\0') ? fa_xstrdup(url) : NULL;
	if (fa.webhook != NULL)
		fa_poll_conflict(fa_conflict_hook);
}

static void
fa_m_setwebhook(struct fa_call *c)
{
	if (fa_param_bool(c->params, "drop_pending_updates"))
		fa_q_clear();
	fa_set_webhook(fa_param_str(c->params, "url", ""));
	evbuffer_add_printf(c->out, "{\"ok\":true,\"result\":true,"
	    "\"description\":\"Webhook was %s\"}", fa.webhook ? "set" :
	    "deleted");
}

static void
fa_m_deletewebhook(struct fa_call *c)
{
	if (fa_param_bool(c->params, "drop_pending_updates"))
		fa_q_clear();
	fa_set_webhook(NULL);
	evbuffer_add_printf(c->out, "{\"ok\":true,\"result\":true,"
	    "\"description\":\"Webhook was deleted\"}");
}

static void
fa_m_getwebhookinfo(struct fa_call *c)
{
	evbuffer_add_printf(c->out, "{\"ok\":true,\"result\":{\"url\":");
	fa_add_jstr(c->out, fa.webhook ? fa.webhook : "");
	evbuffer_add_printf(c->out, ",\"has_custom_certificate\":false,"
	    "\"pending_update_count\":%zu}}", fa.nrel - fa.ndropped);
}

/* chat_id as an integer; 0 if missing, -1 if it names no chat we know. */
static int
fa_chat_id(json_t *params, int64_t *id)
{
	json_t *v = json_object_get(params, "chat_id");
	long long n;

	if (v == NULL || (json_is_string(v) && *json_string_value(v) == '\0'))
		return 0;
	n = fa_param_int(params, "chat_id", 0);
	if (n == 0)
		return -1;
	*id = n;
	return 1;
}

static void
fa_m_sendmessage(struct fa_call *c)
{
	const char *text = fa_param_str(c->params, "text", "");
	int64_t chat_id;
	int rc = fa_chat_id(c->params, &chat_id);
	json_t *msg;
	char *s;

	if (rc == 0) {
		fa_call_error(c, 400, "Bad Request: chat_id is empty");
		return;
	}
	if (rc < 0) {
		fa_call_error(c, 400, "Bad Request: chat not found");
		return;
	}
	if (*text == '\0') {
		fa_call_error(c, 400, "Bad Request: message text is empty");
		return;
	}
	msg = json_pack("{s:I,s:{s:I,s:b,s:s,s:s},s:{s:I,s:s},s:I,s:s}",
	    "message_id", (json_int_t)++fa_chat_get(chat_id)->msg_id,
	    "from", "id", (json_int_t)strtoll(fa.token, NULL, 10), "is_bot", 1,
	    "first_name", "Fake Bot", "username", "fake_bot",
	    "chat", "id", (json_int_t)chat_id, "type",
	    chat_id > 0 ? "private" : "supergroup",
	    "date", (json_int_t)time(NULL), "text", text);
	s = json_dumps(msg, JSON_COMPACT);
	evbuffer_add_printf(c->out, "{\"ok\":true,\"result\":%s}", s);
	free(s);
	json_decref(msg);
}

static struct fa_file *
fa_file_by_id(const char *id)
{
	struct fa_file *f;

	LL_FOREACH(fa.files, f)
		if (strcmp(f->file_id, id) == 0)
			return f;
	return NULL;
}

static struct fa_file *
fa_file_by_path(const char *path)
{
	struct fa_file *f;

	LL_FOREACH(fa.files, f)
		if (strcmp(f->path, path) == 0)
			return f;
	return NULL;
}

/* A File object; its file_unique_id is "u" and the file_id. */
static void
fa_file_json(struct evbuffer *b, const struct fa_file *f)
{
	char uid[300];

	evbuffer_add_printf(b, "{\"file_id\":");
	fa_add_jstr(b, f->file_id);
	snprintf(uid, sizeof(uid), "u%s", f->file_id);
	evbuffer_add_printf(b, ",\"file_unique_id\":");
	fa_add_jstr(b, uid);
	evbuffer_add_printf(b, ",\"file_size\":%zu,\"file_path\":", f->len);
	fa_add_jstr(b, f->path);
	evbuffer_add(b, "}", 1);
}

static void
fa_m_getfile(struct fa_call *c)
{
	const char *id = fa_param_str(c->params, "file_id", "");
	struct fa_file *f;

	if (*id == '\0') {
		fa_call_error(c, 400, "Bad Request: file_id is empty");
		return;
	}
	if ((f = fa_file_by_id(id)) == NULL) {
		fa_call_error(c, 400, "Bad Request: invalid file_id");
		return;
	}
	evbuffer_add(c->out, "{\"ok\":true,\"result\":", 20);
	fa_file_json(c->out, f);
	evbuffer_add(c->out, "}", 1);
}

static void
fa_m_other(struct fa_call *c)
{
	evbuffer_add_printf(c->out, "{\"ok\":true,\"result\":true}");
}

static const struct {
	const char	*name;
	void		(*fn)(struct fa_call *);
} fa_handlers[] = {
	{ "getMe",		fa_m_getme },
	{ "getUpdates",		fa_m_getupdates },
	{ "setWebhook",		fa_m_setwebhook },
	{ "deleteWebhook",	fa_m_deletewebhook },
	{ "getWebhookInfo",	fa_m_getwebhookinfo },
	{ "sendMessage",	fa_m_sendmessage },
	{ "getFile",		fa_m_getfile },
};

static void
fa_method_run(struct fa_call *c)
{
	size_t i;

	for (i = 0; i < sizeof(fa_handlers) / sizeof(fa_handlers[0]); i++)
		if (strcmp(c->method, fa_handlers[i].name) == 0) {
			fa_handlers[i].fn(c);
			return;
		}
	fa_m_other(c);
}

/* --- faults --------------------------------------------------------------- */

static int
fa_fault_matches(struct fa_fault *f, const char *method)
{
	return strcmp(f->method, "*") == 0 || strcasecmp(f->method, method) == 0;
}

/* The fault for this request, if any; only the first matching one counts. */
static struct fa_fault *
fa_fault_take(const char *method, struct fa_fault *copy)
{
	struct fa_fault *f;

	LL_FOREACH(fa.faults, f)
		if (fa_fault_matches(f, method))
			break;
	if (f == NULL)
		return NULL;
	if (++f->matched % f->every != 0)
		return NULL;
	*copy = *f;
	if (f->count > 0 && --f->count == 0) {
		LL_DELETE(fa.faults, f);
		free(f);
	}
	return copy;
}

static void
fa_fault_5xx(struct evhttp_request *req, int status)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add_printf(b, "<html>\r\n<head><title>%d Bad Gateway</title>"
	    "</head>\r\n<body>\r\n<center><h1>%d Bad Gateway</h1></center>\r\n"
	    "<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n",
	    status, status);
	fa_send(req, status, "text/html", b);
	evbuffer_free(b);
}

static void
fa_fault_429(struct evhttp_request *req, long long retry_after)
{
	struct evbuffer *b = evbuffer_new();
	char desc[96];

	snprintf(desc, sizeof(desc), "Too Many Requests: retry after %lld",
	    retry_after);
	fa_error_body(b, 429, desc, retry_after);
	fa_send_json(req, 429, b);
	evbuffer_free(b);
}

static void
fa_slow_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fa_pending *p = arg;
	struct evhttp_request *req = p->req;

	fa_pending_free(p);
	fa_bot_dispatch(req, "slow");
}

/* The answer of a call that ran when it came ("late"), sent now. */
static void
fa_late_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fa_pending *p = arg;

	fa_send_json(p->req, p->status, p->body);
	fa_pending_free(p);
}

/* Close the connection without an answer, with an RST when we can. */
static void
fa_reset_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fa_pending *p = arg;
	struct evhttp_request *req = p->req;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct linger lg = { 1, 0 };
	evutil_socket_t s;

	fa_pending_free(p);
	if (evcon == NULL) {
		evhttp_send_reply(req, 500, NULL, NULL);	/* frees it */
		return;
	}
	s = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (s >= 0)
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	evhttp_connection_free(evcon);
}

/* Returns 1 if the fault answered the request (or will). */
static int
fa_fault_apply(struct evhttp_request *req, struct fa_fault *f)
{
	struct fa_pending *p;
	struct timeval tv;

	switch (f->kind) {
	case FAULT_5XX:
		fa_fault_5xx(req, f->status);
		return 1;
	case FAULT_429:
		fa_fault_429(req, f->retry_after);
		return 1;
	case FAULT_409:
		fa_send_error(req, 409, fa_conflict_hook);
		return 1;
	case FAULT_401:
		fa_send_error(req, 401, "Unauthorized");
		return 1;
	case FAULT_LATE:
		return 0;	/* the method runs now, fa_call_finish waits */
	case FAULT_SLOW:
	case FAULT_RESET:
		p = fa_pending_new(req, f->kind == FAULT_SLOW ? PEND_SLOW :
		    PEND_RESET, f->kind == FAULT_SLOW ? fa_slow_cb :
		    fa_reset_cb);
		tv = fa_tv(f->kind == FAULT_SLOW ? f->delay_ms / 1000.0 : 0);
		evtimer_add(p->ev, &tv);
		return 1;
	default:
		return 0;	/* body faults: the method runs */
	}
}

/* --- Bot API dispatch ------------------------------------------------------ */

static void
fa_canon_method(const char *s, size_t n, char *out, size_t outsz)
{
	size_t i;

	if (n >= outsz)
		n = outsz - 1;
	memcpy(out, s, n);
	out[n] = '\0';
	for (i = 0; fa_methods[i] != NULL; i++)
		if (strcasecmp(out, fa_methods[i]) == 0) {
			strcpy(out, fa_methods[i]);
			return;
		}
}

/* Splits /bot<token>/<method>; returns the HTTP status to fail with, or 0. */
static int
fa_bot_path(struct evhttp_request *req, char *method, size_t msz)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *tok, *slash;
	size_t toklen;

	if (path == NULL || strncmp(path, "/bot", 4) != 0)
		return 404;
	tok = path + 4;
	if ((slash = strchr(tok, '/')) == NULL || slash[1] == '\0' ||
	    strchr(slash + 1, '/') != NULL)
		return 404;
	toklen = slash - tok;
	if (toklen != strlen(fa.token) || memcmp(tok, fa.token, toklen) != 0) {
		fa.unauthorized++;
		return 401;
	}
	fa_canon_method(slash + 1, strlen(slash + 1), method, msz);
	return 0;
}

/*
 * A broken server's answer: the result array backwards, its first update
 * sent twice.  Returns a new buffer, or NULL if the body is not a result.
 */
static struct evbuffer *
fa_disorder(struct evbuffer *in)
{
	size_t len = evbuffer_get_length(in);
	json_t *root, *res, *out;
	struct evbuffer *b;
	char *text;
	size_t i, n;

	root = json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, NULL);
	res = json_object_get(root, "result");
	if (!json_is_array(res)) {
		json_decref(root);
		return NULL;
	}
	out = json_array();
	n = json_array_size(res);
	for (i = n; i-- > 0;)
		json_array_append(out, json_array_get(res, i));
	if (n > 0)
		json_array_append(out, json_array_get(res, n - 1));
	json_object_set_new(root, "result", out);
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	b = evbuffer_new();
	evbuffer_add(b, text, strlen(text));
	free(text);
	return b;
}

static void
fa_call_finish(struct fa_call *c, struct fa_fault *f)
{
	struct evbuffer *b = c->out;
	size_t len = evbuffer_get_length(b);
	static const char garbage[] = "{\"ok\":tru<html>Bad Gateway</html>";

	struct fa_pending *p;
	struct timeval tv;

	if (c->status == 0)
		return;		/* held */
	if (f != NULL && f->kind == FAULT_LATE) {
		/* done already; the answer waits (lost if the client goes) */
		p = fa_pending_new(c->req, PEND_LATE, fa_late_cb);
		p->body = evbuffer_new();
		evbuffer_add_buffer(p->body, c->out);
		p->status = c->status;
		tv = fa_tv(f->delay_ms / 1000.0);
		evtimer_add(p->ev, &tv);
		return;
	}
	if (f != NULL && f->kind == FAULT_TRUNCATED) {
		b = evbuffer_new();
		evbuffer_remove_buffer(c->out, b, len / 2);
		c->status = 200;
	} else if (f != NULL && f->kind == FAULT_MALFORMED) {
		b = evbuffer_new();
		evbuffer_add(b, garbage, sizeof(garbage) - 1);
		c->status = 200;
	} else if (f != NULL && f->kind == FAULT_DISORDER &&
	    (b = fa_disorder(c->out)) == NULL)
		b = c->out;
	fa_send_json(c->req, c->status, b);
	if (b != c->out)
		evbuffer_free(b);
}

/* Method and parameters of a request; -1 if it was answered with an error. */
static int
fa_call_init(struct fa_call *c, struct evhttp_request *req)
{
	const char *err;
	int rc;

	memset(c, 0, sizeof(*c));
	c->req = req;
	if ((rc = fa_bot_path(req, c->method, sizeof(c->method))) != 0) {
		fa_send_error(req, rc, rc == 401 ? "Unauthorized" : "Not Found");
		return -1;
	}
	if ((c->params = fa_params(req, &err, &c->files)) == NULL) {
		fa_send_error(req, 400, err);
		return -1;
	}
	return 0;
}

/*
 * One Bot API request.  prior: the fault this request already met (a slow
 * answer coming due); it now runs normally.
 */
static void
fa_bot_dispatch(struct evhttp_request *req, const char *prior)
{
	struct fa_call c;
	struct fa_fault fbuf, *f = NULL;

	if (fa_call_init(&c, req) == -1)
		return;
	if (prior == NULL) {
		fa_count_call(c.method);
		f = fa_fault_take(c.method, &fbuf);
		if (f != NULL && fa_fault_apply(req, f)) {
			json_decref(c.params);
			json_decref(c.files);
			return;
		}
	}
	/* a late answer is a normal call, answered later */
	if (f != NULL && f->kind == FAULT_LATE) {
		c.dry = 0;
		c.fault = prior;
	} else {
		c.dry = f != NULL;
		c.fault = f ? fa_fault_names[f->kind] : prior;
	}
	c.status = 200;
	c.out = evbuffer_new();
	if (strcmp(c.method, "getUpdates") != 0)
		fa_record_call(req, c.method, c.params, c.files, c.fault);
	fa_method_run(&c);
	fa_call_finish(&c, f);
	evbuffer_free(c.out);
	json_decref(c.params);
	json_decref(c.files);
}

/* --- files ---------------------------------------------------------------- */

static void
fa_file_free(struct fa_file *f)
{
	free(f->file_id);
	free(f->path);
	free(f->data);
	free(f);
}

static void
fa_files_clear(void)
{
	struct fa_file *f, *tmp;

	LL_FOREACH_SAFE(fa.files, f, tmp) {
		LL_DELETE(fa.files, f);
		fa_file_free(f);
	}
	fa.nfiles = 0;
}

/* Chunked, FA_FILE_CHUNK at a time, as a server without Content-Length. */
static void
fa_file_send_chunked(struct evhttp_request *req, const struct fa_file *f)
{
	struct evbuffer *b = evbuffer_new();
	size_t off, n;

	evhttp_send_reply_start(req, 200, "OK");
	for (off = 0; off < f->len; off += n) {
		n = f->len - off < FA_FILE_CHUNK ? f->len - off : FA_FILE_CHUNK;
		evbuffer_add(b, f->data + off, n);
		evhttp_send_reply_chunk(req, b);
	}
	evhttp_send_reply_end(req);
	evbuffer_free(b);
}

/* GET /file/bot<token>/<file_path>, as Telegram's file server answers it. */
static void
fa_file_dispatch(struct evhttp_request *req, const char *path)
{
	const char *tok = path + 9, *slash = strchr(tok, '/');
	struct evbuffer *b;
	struct fa_file *f;
	char *fp;

	fa.file_requests++;
	if (slash == NULL || (size_t)(slash - tok) != strlen(fa.token) ||
	    memcmp(tok, fa.token, slash - tok) != 0) {
		fa.unauthorized++;
		fa_send_error(req, 401, "Unauthorized");
		return;
	}
	fp = evhttp_uridecode(slash + 1, 0, NULL);
	f = fp != NULL ? fa_file_by_path(fp) : NULL;
	free(fp);
	if (f == NULL) {
		fa_send_error(req, 404, "Not Found");
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "application/octet-stream");
	if (f->chunked) {
		fa_file_send_chunked(req, f);
		return;
	}
	b = evbuffer_new();
	evbuffer_add_reference(b, f->data, f->len, NULL, NULL);
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

/* size bytes of splitmix64 output from seed: the same file every time. */
static unsigned char *
fa_file_generate(size_t size, uint64_t seed)
{
	unsigned char *p = fa_xrealloc(NULL, size);
	uint64_t s = seed, v = 0;
	size_t i;

	for (i = 0; i < size; i++) {
		if (i % 8 == 0)
			v = fa_rand(&s);
		p[i] = (unsigned char)(v >> (8 * (i % 8)));
	}
	return p;
}

static const char *
fa_file_parse(json_t *j, struct fa_file *f)
{
	const char *id = fa_param_str(j, "file_id", "");
	const char *content = fa_param_str(j, "content", NULL);
	const char *path = fa_param_str(j, "file_path", NULL);
	long long size = fa_param_int(j, "size", -1);
	char buf[64];

	if (*id == '\0' || strlen(id) > 255)
		return "file_id must be 1 to 255 bytes";
	if (fa_file_by_id(id) != NULL)
		return "file_id is registered already";
	if (fa.nfiles >= FA_MAX_FILES)
		return "too many files";
	if ((content == NULL) == (size < 0))
		return "give content or size";
	if (size > FA_MAX_FILE_SIZE)
		return "size must be at most 64M";
	if (path == NULL) {
		snprintf(buf, sizeof(buf), "documents/file_%zu.bin", fa.nfiles);
		path = buf;
	}
	if (*path == '\0' || fa_file_by_path(path) != NULL)
		return "file_path is empty or registered already";
	f->file_id = fa_xstrdup(id);
	f->path = fa_xstrdup(path);
	f->chunked = fa_param_bool(j, "chunked");
	if (content != NULL) {
		f->len = strlen(content);
		f->data = (unsigned char *)fa_xstrdup(content);
	} else {
		f->len = (size_t)size;
		f->data = fa_file_generate(f->len,
		    (uint64_t)fa_param_int(j, "seed", 1));
	}
	fa_sha256_hex(f->data, f->len, f->sha256);
	return NULL;
}

static json_t	*fa_ctl_body(struct evhttp_request *, int);

static void
fa_ctl_file(struct evhttp_request *req)
{
	struct fa_file *f;
	struct evbuffer *b;
	const char *err;
	char desc[128];
	json_t *j;

	if ((j = fa_ctl_body(req, 1)) == NULL)
		return;
	f = fa_xrealloc(NULL, sizeof(*f));
	memset(f, 0, sizeof(*f));
	err = json_is_object(j) ? fa_file_parse(j, f) : "expected an object";
	json_decref(j);
	if (err != NULL) {
		fa_file_free(f);
		snprintf(desc, sizeof(desc), "Bad Request: %s", err);
		fa_send_error(req, 400, desc);
		return;
	}
	LL_APPEND(fa.files, f);
	fa.nfiles++;
	b = evbuffer_new();
	evbuffer_add_printf(b, "{\"ok\":true,\"file\":");
	fa_file_json(b, f);
	evbuffer_add_printf(b, ",\"sha256\":\"%s\"}", f->sha256);
	fa_send_json(req, 200, b);
	evbuffer_free(b);
}

/* --- control interface -------------------------------------------------- */

/* The JSON body of a control request; NULL (and answered 400) if bad. */
static json_t *
fa_ctl_body(struct evhttp_request *req, int required)
{
	size_t len;
	const char *s = fa_body(req, &len);
	json_t *j;

	if (len == 0 && !required)
		return json_object();
	if ((j = json_loadb(s, len, JSON_DECODE_ANY, NULL)) == NULL) {
		fa_send_error(req, 400, "Bad Request: can't parse JSON body");
		return NULL;
	}
	return j;
}

static void
fa_ctl_ids(struct evhttp_request *req, int64_t first, int64_t last)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add_printf(b, "{\"ok\":true,\"first_id\":%" PRId64
	    ",\"last_id\":%" PRId64 "}", first, last);
	fa_send_json(req, 200, b);
	evbuffer_free(b);
}

/* The type of an update: its first member other than update_id. */
static const char *
fa_update_type(json_t *u)
{
	const char *k;
	json_t *v;

	json_object_foreach(u, k, v)
		if (strcmp(k, "update_id") != 0)
			return k;
	return "";
}

static void
fa_inject_one(json_t *in, double now)
{
	json_t *out = json_object();
	const char *k;
	json_t *v;
	struct fa_update *u = fa_q_push(fa_update_type(in), now);

	json_object_set_new(out, "update_id", json_integer(u->id));
	json_object_foreach(in, k, v)
		if (strcmp(k, "update_id") != 0)
			json_object_set(out, k, v);
	u->json = json_dumps(out, JSON_COMPACT);
	if (u->json == NULL)
		u->json = fa_xstrdup("{}");
	u->len = strlen(u->json);
	json_decref(out);
}

static void
fa_ctl_updates(struct evhttp_request *req)
{
	json_t *body, *arr, *v;
	size_t i, n;
	int64_t first = fa.next_id;
	double now = fa_now();

	if ((body = fa_ctl_body(req, 1)) == NULL)
		return;
	arr = json_is_array(body) ? json_incref(body) : json_pack("[O]", body);
	n = json_array_size(arr);
	json_array_foreach(arr, i, v)
		if (!json_is_object(v))
			break;
	if (i < n || n == 0 || fa.queue.len + n > FA_MAX_QUEUE) {
		fa_send_error(req, 400, n == 0 || i < n ? "Bad Request: "
		    "expected an Update object or an array of them" :
		    "Bad Request: update queue is full");
	} else {
		json_array_foreach(arr, i, v)
			fa_inject_one(v, now);
		fa_release_due();
		fa_ctl_ids(req, first, fa.next_id - 1);
	}
	json_decref(arr);
	json_decref(body);
}

struct fa_gen {
	long long	 count;
	long long	 chats;
	long long	 start_chat;
	int		 hot;
	double		 hot_share;
	double		 rate;
	uint64_t	 rng;
	const char	*type;
};

static const char *
fa_gen_parse(json_t *j, struct fa_gen *g)
{
	const char *dist = fa_param_str(j, "dist", "uniform");

	g->count = fa_param_int(j, "count", 0);
	g->chats = fa_param_int(j, "chats", 1);
	g->start_chat = fa_param_int(j, "start_chat", 1000);
	g->hot_share = fa_param_num(j, "hot_share", 0.5);
	g->rate = fa_param_num(j, "rate", 0);
	g->rng = (uint64_t)fa_param_int(j, "seed", (long long)fa.seed);
	g->type = fa_param_str(j, "type", "message");
	g->hot = strcmp(dist, "hot") == 0;
	if (g->count < 1 || g->count > FA_MAX_QUEUE)
		return "count must be 1..10000000";
	if (fa.queue.len + g->count > FA_MAX_QUEUE)
		return "update queue is full";
	if (g->chats < 1 || g->chats > FA_MAX_CHATS)
		return "chats must be 1..1000000";
	if ((g->start_chat <= 0 && g->start_chat + g->chats > 0) ||
	    llabs(g->start_chat) > (1LL << 52))
		return "chat ids must not include 0";
	if (!g->hot && strcmp(dist, "uniform") != 0)
		return "dist must be uniform or hot";
	if (!(g->hot_share >= 0 && g->hot_share <= 1))
		return "hot_share must be 0..1";
	if (!(g->rate >= 0 && g->rate < 1e9))
		return "rate must be >= 0";
	if (strcmp(g->type, "message") != 0 &&
	    strcmp(g->type, "edited_message") != 0)
		return "type must be message or edited_message";
	return NULL;
}

static int64_t
fa_gen_chat(struct fa_gen *g, long long i)
{
	long long others = g->chats - 1;

	if (g->hot) {
		/* Exactly hot_share of all updates, spread evenly. */
		if (others == 0 || (long long)floor((i + 1) * g->hot_share) >
		    (long long)floor(i * g->hot_share))
			return g->start_chat;
		return g->start_chat + 1 + fa_rand(&g->rng) % others;
	}
	return g->start_chat + fa_rand(&g->rng) % g->chats;
}

static void
fa_gen_one(struct fa_gen *g, int64_t chat_id, double at)
{
	struct fa_chat *ch = fa_chat_get(chat_id);
	struct fa_update *u = fa_q_push(g->type, at);
	int64_t user = chat_id > 0 ? chat_id : -chat_id;
	char buf[FA_GEN_BUF], chat[128];
	int n;

	if (chat_id > 0)
		snprintf(chat, sizeof(chat), "{\"id\":%" PRId64 ",\"first_name\":"
		    "\"User %" PRId64 "\",\"type\":\"private\"}", chat_id, user);
	else
		snprintf(chat, sizeof(chat), "{\"id\":%" PRId64 ",\"title\":"
		    "\"Group %" PRId64 "\",\"type\":\"supergroup\"}", chat_id,
		    user);
	n = snprintf(buf, sizeof(buf), "{\"update_id\":%" PRId64 ",\"%s\":"
	    "{\"message_id\":%lld,\"from\":{\"id\":%" PRId64 ",\"is_bot\":false,"
	    "\"first_name\":\"User %" PRId64 "\"},\"chat\":%s,\"date\":%lld,%s"
	    "\"text\":\"seq %lld\"}}", u->id, g->type, ++ch->msg_id, user, user,
	    chat, (long long)at, strcmp(g->type, "edited_message") == 0 ?
	    "\"edit_date\":0," : "", ++ch->seq);
	u->len = (size_t)n;
	u->json = memcpy(fa_xrealloc(NULL, u->len + 1), buf, u->len + 1);
}

static void
fa_ctl_generate(struct evhttp_request *req)
{
	json_t *j;
	struct fa_gen g;
	const char *err;
	char desc[128];
	long long i;
	int64_t first = fa.next_id;
	double now = fa_now();

	if ((j = fa_ctl_body(req, 1)) == NULL)
		return;
	if ((err = fa_gen_parse(j, &g)) != NULL) {
		snprintf(desc, sizeof(desc), "Bad Request: %s", err);
		fa_send_error(req, 400, desc);
		json_decref(j);
		return;
	}
	for (i = 0; i < g.count; i++)
		fa_gen_one(&g, fa_gen_chat(&g, i),
		    g.rate > 0 ? now + i / g.rate : now);
	json_decref(j);
	fa_release_due();
	fa_ctl_ids(req, first, fa.next_id - 1);
}

static void
fa_ctl_stats(struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();
	struct fa_count *c;

	evbuffer_add_printf(b, "{\"ok\":true,\"next_update_id\":%" PRId64
	    ",\"confirmed_offset\":%" PRId64 ",\"available\":%zu,"
	    "\"unreleased\":%zu,\"served\":%llu,\"polls\":%llu,\"calls\":{",
	    fa.next_id, fa.confirmed_offset, fa.nrel - fa.ndropped,
	    fa.queue.len - fa.nrel, fa.served, fa.polls);
	for (c = fa.counts; c != NULL; c = c->hh.next) {
		if (c != fa.counts)
			evbuffer_add(b, ",", 1);
		fa_add_jstr(b, c->method);
		evbuffer_add_printf(b, ":%lu", c->n);
	}
	evbuffer_add_printf(b, "},\"unauthorized\":%llu,\"file_requests\":%llu"
	    ",\"held\":%d,\"webhook\":", fa.unauthorized, fa.file_requests,
	    fa.held != NULL);
	fa_add_jstr(b, fa.webhook ? fa.webhook : "");
	evbuffer_add(b, "}", 1);
	fa_send_json(req, 200, b);
	evbuffer_free(b);
}

static void
fa_ctl_calls(struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();
	json_t *q = json_object();
	const char *method, *qs;
	long long since;
	struct fa_callrec *c;
	size_t i;
	int n = 0;

	qs = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	if (qs != NULL)
		fa_parse_form(qs, q);
	method = fa_param_str(q, "method", NULL);
	since = fa_param_int(q, "since", 0);
	evbuffer_add(b, "{\"ok\":true,\"calls\":[", 20);
	for (i = 0; i < fa.calls.len; i++) {
		c = fa_dq_at(&fa.calls, i);
		if ((long long)c->seq <= since ||
		    (method && strcasecmp(method, c->method) != 0))
			continue;
		if (n++ > 0)
			evbuffer_add(b, ",", 1);
		evbuffer_add(b, c->json, c->len);
	}
	evbuffer_add(b, "]}", 2);
	fa_send_json(req, 200, b);
	evbuffer_free(b);
	json_decref(q);
}

static void
fa_ctl_released(struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();
	struct fa_released *r;
	size_t i;

	evbuffer_add(b, "{\"ok\":true,\"released\":[", 23);
	for (i = 0; i < fa.released.len; i++) {
		r = fa_dq_at(&fa.released, i);
		evbuffer_add_printf(b, "%s[%" PRId64 ",%.6f]", i ? "," : "",
		    r->id, r->t);
	}
	evbuffer_add(b, "]}", 2);
	fa_send_json(req, 200, b);
	evbuffer_free(b);
}

static const char *
fa_fault_parse(json_t *j, struct fa_fault *f)
{
	const char *kind = fa_param_str(j, "kind", "");
	const char *method = fa_param_str(j, "method", "getUpdates");
	size_t i;

	memset(f, 0, sizeof(*f));
	for (i = 0; i < sizeof(fa_fault_names) / sizeof(fa_fault_names[0]); i++)
		if (strcmp(kind, fa_fault_names[i]) == 0)
			break;
	if (i == sizeof(fa_fault_names) / sizeof(fa_fault_names[0]))
		return "kind must be 5xx, 429, slow, late, truncated, "
		    "malformed, disorder, reset, 409 or 401";
	f->kind = i;
	if (*method == '\0' || strlen(method) >= sizeof(f->method))
		return "bad method";
	strcpy(f->method, method);
	f->count = fa_param_int(j, "count", 1);
	f->every = fa_param_int(j, "every", 1);
	f->status = fa_param_int(j, "status", 502);
	f->retry_after = fa_param_int(j, "retry_after", 1);
	f->delay_ms = fa_param_int(j, "delay_ms", 2000);
	if (f->count < 1 && f->count != -1)
		return "count must be >= 1 or -1";
	if (f->every < 1)
		return "every must be >= 1";
	if (f->status < 400 || f->status > 599)
		return "status must be 400..599";
	if (f->retry_after < 0 || f->retry_after > 86400)
		return "retry_after must be 0..86400";
	if (f->delay_ms < 0 || f->delay_ms > FA_MAX_DELAY_MS)
		return "delay_ms must be 0..600000";
	return NULL;
}

static void
fa_ctl_fault(struct evhttp_request *req)
{
	json_t *j;
	struct fa_fault f, *nf;
	const char *err;
	char desc[128];

	if ((j = fa_ctl_body(req, 1)) == NULL)
		return;
	err = json_is_object(j) ? fa_fault_parse(j, &f) : "expected an object";
	json_decref(j);
	if (err != NULL) {
		snprintf(desc, sizeof(desc), "Bad Request: %s", err);
		fa_send_error(req, 400, desc);
		return;
	}
	nf = memcpy(fa_xrealloc(NULL, sizeof(f)), &f, sizeof(f));
	LL_APPEND(fa.faults, nf);
	fa_send_text(req, 200, "{\"ok\":true}");
}

static void
fa_ctl_restart_ids(struct evhttp_request *req)
{
	json_t *j;
	long long first;

	if ((j = fa_ctl_body(req, 1)) == NULL)
		return;
	first = fa_param_int(j, "first_id", -1);
	json_decref(j);
	if (first < 1 || first > (1LL << 52)) {
		fa_send_error(req, 400, "Bad Request: first_id must be >= 1");
		return;
	}
	fa_epoch_start(first);
	fa_send_text(req, 200, "{\"ok\":true}");
}

static void
fa_ctl_reset(struct evhttp_request *req)
{
	fa_q_clear();
	fa_calls_clear();
	fa_chats_clear();
	fa_faults_clear();
	fa_dq_free(&fa.released);
	free(fa.webhook);
	fa.webhook = NULL;
	fa_files_clear();
	fa.served = fa.polls = fa.unauthorized = fa.file_requests = 0;
	fa.confirmed_offset = 0;
	fa_allowed_set(NULL);
	fa_send_text(req, 200, "{\"ok\":true}");
}

static const struct {
	const char	*path;
	void		(*fn)(struct evhttp_request *);
} fa_ctl_table[] = {
	{ "/_ctl/updates",	fa_ctl_updates },
	{ "/_ctl/generate",	fa_ctl_generate },
	{ "/_ctl/stats",	fa_ctl_stats },
	{ "/_ctl/calls",	fa_ctl_calls },
	{ "/_ctl/released",	fa_ctl_released },
	{ "/_ctl/fault",	fa_ctl_fault },
	{ "/_ctl/fault/clear",	NULL },
	{ "/_ctl/restart_ids",	fa_ctl_restart_ids },
	{ "/_ctl/reset",	fa_ctl_reset },
	{ "/_ctl/file",		fa_ctl_file },
};

static void
fa_ctl_dispatch(struct evhttp_request *req, const char *path)
{
	size_t i;

	for (i = 0; i < sizeof(fa_ctl_table) / sizeof(fa_ctl_table[0]); i++) {
		if (strcmp(path, fa_ctl_table[i].path) != 0)
			continue;
		if (fa_ctl_table[i].fn != NULL)
			fa_ctl_table[i].fn(req);
		else {
			fa_faults_clear();
			fa_send_text(req, 200, "{\"ok\":true}");
		}
		return;
	}
	fa_send_error(req, 404, "Not Found");
}

/*
 * Keep-alive clients would otherwise wait for a delayed ACK before the
 * tail of every answer (Nagle): 40 ms per getUpdates.
 */
static void
fa_nodelay(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	evutil_socket_t s;
	int on = 1;

	if (evcon == NULL)
		return;
	s = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (s >= 0)
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

static void
fa_request(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

	fa_nodelay(req);
	if (path != NULL && strncmp(path, "/_ctl/", 6) == 0)
		fa_ctl_dispatch(req, path);
	else if (path != NULL && strncmp(path, "/file/bot", 9) == 0)
		fa_file_dispatch(req, path);
	else
		fa_bot_dispatch(req, NULL);
}

/* --- start-up ------------------------------------------------------------- */

static const char fa_usage_text[] =
    "usage: tgrunner-fakeapi [-hvV] [-l 127.0.0.1:PORT] [-t TOKEN] "
    "[-p PORTFILE] [-s SEED]\n"
    "                        [-f FIRST_UPDATE_ID]\n"
    "  -l ADDR   listen address (default 127.0.0.1:8081; port 0: any free)\n"
    "  -t TOKEN  bot token accepted (default " FA_DEFAULT_TOKEN ")\n"
    "  -p FILE   write the port there once listening\n"
    "  -s SEED   default seed of /_ctl/generate (default 1)\n"
    "  -f ID     first update_id (default 1000)\n"
    "  -v        log every request to stderr\n"
    "  -h, --help     print this help and exit\n"
    "  -V, --version  print the version and exit\n";

/* A usage error: sysexits' EX_USAGE, help on stderr. */
static void
fa_usage(void)
{
	fputs(fa_usage_text, stderr);
	exit(64);
}

static int
fa_write_portfile(const char *path, int port)
{
	char tmp[4096];
	FILE *fp;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >=
	    (int)sizeof(tmp))
		return -1;
	if ((fp = fopen(tmp, "w")) == NULL)
		return -1;
	fprintf(fp, "%d\n", port);
	if (fclose(fp) != 0 || rename(tmp, path) == -1) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int
fa_listen(const char *addr, const char *portfile)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	long port = FA_DEFAULT_PORT;
	struct evhttp_bound_socket *bs;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	snprintf(host, sizeof(host), "%s", colon || !isdigit((unsigned char)*addr) ?
	    addr : "127.0.0.1");
	if (colon == NULL && isdigit((unsigned char)*addr))
		port = strtol(addr, NULL, 10);	/* -l PORT */
	else if (colon != NULL) {
		host[colon - addr] = '\0';
		port = strtol(colon + 1, NULL, 10);
	}
	if (port < 0 || port > 65535 || *host == '\0')
		return -1;
	if ((bs = evhttp_bind_socket_with_handle(fa.http, host, port)) == NULL)
		return -1;
	if (getsockname(evhttp_bound_socket_get_fd(bs),
	    (struct sockaddr *)&ss, &sl) == -1)
		return -1;
	port = ntohs(ss.ss_family == AF_INET6 ?
	    ((struct sockaddr_in6 *)&ss)->sin6_port :
	    ((struct sockaddr_in *)&ss)->sin_port);
	/* The port file first: whoever read the banner may read it at once. */
	if (portfile != NULL && fa_write_portfile(portfile, port) == -1) {
		fa_log("cannot write %s: %s", portfile, strerror(errno));
		return -1;
	}
	printf("tgrunner-fakeapi listening on http://%s:%ld\n", host, port);
	fflush(stdout);
	return 0;
}

static void
fa_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopexit(fa.base, NULL);
}

static void
fa_shutdown(void)
{
	struct fa_pending *p;

	while ((p = fa.pending) != NULL) {
		if (evhttp_request_get_connection(p->req) == NULL)
			evhttp_send_reply(p->req, 500, NULL, NULL);
		fa_pending_free(p);
	}
	evhttp_free(fa.http);
	fa_q_clear();
	event_free(fa.release_ev);
	fa_calls_clear();
	fa_chats_clear();
	fa_faults_clear();
	fa_files_clear();
	fa_dq_free(&fa.released);
	while (fa.ntypes > 0)
		free(fa.types[--fa.ntypes]);
	json_decref(fa.allowed_updates);
	free(fa.webhook);
}

static void
fa_options(int argc, char *argv[], const char **listen_addr,
    const char **portfile, long long *first)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "hl:t:p:s:f:vV", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'h': fputs(fa_usage_text, stdout); exit(0);
		case 'V':
			printf("tgrunner-fakeapi %s\n", PACKAGE_VERSION);
			exit(0);
		case 'l': *listen_addr = optarg; break;
		case 't': fa.token = optarg; break;
		case 'p': *portfile = optarg; break;
		case 's': fa.seed = strtoull(optarg, NULL, 10); break;
		case 'f': *first = strtoll(optarg, NULL, 10); break;
		case 'v': fa.verbose = 1; break;
		default: fa_usage();
		}
	}
	if (optind != argc || *first < 1 || *first > (1LL << 52) ||
	    *fa.token == '\0' || strchr(fa.token, '/') != NULL)
		fa_usage();
}

static int
fa_setup(const char *listen_addr, const char *portfile, long long first)
{
	signal(SIGPIPE, SIG_IGN);
	fa_dq_init(&fa.queue, sizeof(struct fa_update));
	fa_dq_init(&fa.calls, sizeof(struct fa_callrec));
	fa_dq_init(&fa.released, sizeof(struct fa_released));
	fa_type_intern("");
	fa_epoch_start(first);
	if ((fa.base = event_base_new()) == NULL ||
	    (fa.http = evhttp_new(fa.base)) == NULL) {
		fa_log("cannot set up libevent");
		return -1;
	}
	fa.release_ev = evtimer_new(fa.base, fa_release_cb, NULL);
	evhttp_set_max_body_size(fa.http, FA_MAX_BODY);
	evhttp_set_max_headers_size(fa.http, FA_MAX_HEADERS);
	/* Idle keep-alive connections only: a held poll reads nothing. */
	evhttp_set_timeout(fa.http, 600);
	evhttp_set_allowed_methods(fa.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD);
	evhttp_set_gencb(fa.http, fa_request, NULL);
	if (fa_listen(listen_addr, portfile) == -1) {
		fa_log("cannot listen on %s", listen_addr);
		return -1;
	}
	return 0;
}

int
main(int argc, char *argv[])
{
	const char *listen_addr = "127.0.0.1:8081", *portfile = NULL;
	long long first = 1000;
	struct event *sigterm, *sigint;

	fa.token = FA_DEFAULT_TOKEN;
	fa.seed = 1;
	fa_options(argc, argv, &listen_addr, &portfile, &first);
	if (fa_setup(listen_addr, portfile, first) == -1)
		return 1;
	sigterm = evsignal_new(fa.base, SIGTERM, fa_signal_cb, NULL);
	sigint = evsignal_new(fa.base, SIGINT, fa_signal_cb, NULL);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	event_base_dispatch(fa.base);
	event_free(sigterm);
	event_free(sigint);
	fa_shutdown();
	event_base_free(fa.base);
	return 0;
}

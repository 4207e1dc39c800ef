/* SPDX-License-Identifier: ISC */
/*
 * The Bot API endpoint for workers: libevent's evhttp on loopback in
 * front of api_call() and a streaming GET of files.
 *
 * Connections are counted from the moment they are accepted: evhttp asks
 * us for each new connection's bufferevent (evhttp_set_bevcb), we keep a
 * reference to it, and once evhttp has built the connection around it we
 * find the connection (the bufferevent's callback argument) and set its
 * close callback.  At worker_api_max_connections the listener stops
 * accepting (the kernel's backlog holds the rest) until one closes.
 *
 * A request is one of:
 *   - a call: parameters from the query string and the body (JSON,
 *     urlencoded or multipart; file parts become {"@data": base64} file
 *     objects, which api.c sends through upload.c like a call frame's),
 *     then, past the policy hook and the fair-queue bounds (api_bounded:
 *     429 with retry_after, as for a call frame), api_call_from() with the
 *     session key and update the daemon's held() hook names;
 *     the answer is Telegram's, re-serialised;
 *   - a download: the file streamed from <api_url>/file/bot<token>/...
 *     with the transfer paused while the client is slow, or read from
 *     local_files_dir and sent with sendfile.
 * evhttp answers one request at a time per connection, so a connection
 * has at most one request of ours (conn->req).  When a client goes away
 * its call still runs (api.c cannot take it back) and the answer is
 * dropped; its download is cancelled.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>
#include <uthash.h>

#include "api.h"
#include "conf.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "multipart.h"
#include "proto.h"
#include "unixsock.h"
#include "upload.h"
#include "workerapi.h"
#include "xmalloc.h"

#define WA_HEADERS_MAX	(64 * 1024)	/* request line and headers */
#define WA_FORM_SLACK	(64 * 1024)	/* multipart framing around files */
#define WA_OUT_HIGH	(256 * 1024)	/* bytes queued to a slow downloader */
#define WA_DL_TIMEOUT_MS (10L * 60 * 1000)
#define WA_PATH_MAX	1024		/* a file_path, decoded */
#define WA_ATTACH_DEPTH	32
#define WA_METHOD_MAX	64

enum wa_kind { WA_CALL, WA_DOWNLOAD };
enum wa_dl_fail { DL_OK, DL_TOO_BIG, DL_CLIENT };

struct wa_worker {
	int			 id;
	char			 cred[WORKERAPI_CRED_MAX];
	size_t			 credlen;
	size_t			 nconns;
	int			 capped;	/* max_per_worker logged */
	UT_hash_handle		 hh;
};

struct wa_req;

struct wa_conn {
	struct workerapi		*wa;
	struct bufferevent		*bev;		/* a reference of ours */
	struct evhttp_connection	*evcon;		/* NULL: not adopted */
	int				 worker_id;	/* -1: none yet */
	int				 closing;	/* after this answer */
	struct wa_req			*req;
	TAILQ_ENTRY(wa_conn)		 entry;		/* wa->pending */
	UT_hash_handle			 hh;		/* wa->byevcon */
};

struct wa_req {
	struct workerapi	*wa;
	enum wa_kind		 kind;
	struct evhttp_request	*req;		/* NULL: the client is gone */
	struct wa_conn		*conn;		/* NULL: gone, or untracked */
	int			 worker_id;
	char			 method[WA_METHOD_MAX + 1];
	/* downloads */
	struct http_req		*hreq;
	int64_t			 max, sent;
	int			 started, paused;
	enum wa_dl_fail		 failed;
	TAILQ_ENTRY(wa_req)	 entry;		/* wa->reqs */
};

struct workerapi {
	struct event_base		*base;
	struct api			*api;
	struct http			*http;
	const struct conf		*conf;
	const char			*token;
	const struct workerapi_ops	*ops;
	void				*arg;
	struct evhttp			*evh;
	struct evhttp_bound_socket	*bound;
	char				 root[WORKERAPI_ROOT_MAX];
	char				*unix_path;
	struct wa_worker		*workers;
	struct wa_conn			*byevcon;
	TAILQ_HEAD(, wa_conn)		 pending;
	TAILQ_HEAD(, wa_req)		 reqs;
	struct event			*adopt_ev;
	size_t				 nconns;
	int				 full;		/* accepting paused */
	int64_t				 body_max;	/* applied to evhttp */
	int64_t				 timeout_ms;
	struct workerapi_stats		 stats;
};

static const struct http_stream_cb wa_dl_cb;

static void	wa_apply_conf(struct workerapi *);

/* --- answers ---------------------------------------------------------------- */

/* A token in an answer (never expected) is masked, not sent. */
static void
wa_mask_token(struct workerapi *wa, char *s, size_t len)
{
	size_t	 tlen = strlen(wa->token);
	char	*p = s;

	if (tlen == 0)
		return;
	while ((p = memmem(p, len - (size_t)(p - s), wa->token, tlen)) !=
	    NULL) {
		memset(p, '*', tlen);
		log_warnx("worker API: an answer held the bot token; masked");
	}
}

static void
wa_send(struct workerapi *wa, struct evhttp_request *req, int status,
    const char *body, size_t len, int close)
{
	struct evkeyvalq	*h = evhttp_request_get_output_headers(req);
	struct evbuffer		*b;

	if ((b = evbuffer_new()) == NULL)
		fatalx(EXIT_NOMEM, "%s: evbuffer_new", __func__);
	wa->stats.requests++;
	evhttp_add_header(h, "Content-Type", "application/json");
	if (close)
		evhttp_add_header(h, "Connection", "close");
	evbuffer_add(b, body, len);
	evhttp_send_reply(req, status, NULL, b);
	evbuffer_free(b);
}

static const char wa_oom[] = "{\"ok\":false,\"error_code\":500,"
    "\"description\":\"Internal Server Error\"}";

/* Telegram's error shape: {"ok":false,"error_code":N,"description":...}. */
static void
wa_error(struct workerapi *wa, struct evhttp_request *req, int code,
    const char *desc, int retry_after, int close)
{
	json_t	*o;
	char	*s;

	o = json_pack("{s:b,s:i,s:s}", "ok", 0, "error_code", code,
	    "description", desc);
	if (o != NULL && retry_after > 0)
		json_object_set_new(o, "parameters", json_pack("{s:i}",
		    "retry_after", retry_after));
	s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	if (s != NULL)
		wa_send(wa, req, code, s, strlen(s), close);
	else
		wa_send(wa, req, 500, wa_oom, sizeof(wa_oom) - 1, 1);
	free(s);
	json_decref(o);
	if (code == 401)
		wa->stats.unauthorized++;
	else if (code < 500)
		wa->stats.refused++;
}

/* HTTP status of an api.c error code: 599 (no HTTP answer) is a 502. */
static int
wa_status(int code)
{
	if (code == 599)
		return 502;
	return code >= 400 && code <= 599 ? code : 500;
}

/* --- connections -------------------------------------------------------------- */

static struct wa_worker *
wa_worker_find(struct workerapi *wa, int id)
{
	struct wa_worker *w;

	HASH_FIND_INT(wa->workers, &id, w);
	return w;
}

static struct evconnlistener *
wa_listener(struct workerapi *wa)
{
	return wa->bound != NULL ? evhttp_bound_socket_get_listener(wa->bound) :
	    NULL;
}

/*
 * Accept while there are fewer connections than worker_api_max_connections
 * (it may have changed with a reload), stop at it.
 */
static void
wa_accepting(struct workerapi *wa)
{
	size_t max = (size_t)wa->conf->worker_api_max_connections;

	if (wa_listener(wa) == NULL)
		return;
	if (wa->full && wa->nconns < max) {
		wa->full = 0;
		evconnlistener_enable(wa_listener(wa));
		log_notice("worker API: %zu connections, accepting again",
		    wa->nconns);
	} else if (!wa->full && wa->nconns >= max) {
		wa->full = 1;
		wa->stats.conn_limited++;
		evconnlistener_disable(wa_listener(wa));
		log_warnx("worker API: %zu connections, the most "
		    "worker_api_max_connections allows; new ones wait",
		    wa->nconns);
	}
}

/* The connection is gone (or never became one): forget it. */
static void
wa_conn_gone(struct wa_conn *conn)
{
	struct workerapi	*wa = conn->wa;
	struct wa_worker	*w;

	if (conn->evcon != NULL)
		HASH_DEL(wa->byevcon, conn);
	if (conn->worker_id != -1 &&
	    (w = wa_worker_find(wa, conn->worker_id)) != NULL) {
		w->nconns--;
		if (w->nconns < (size_t)wa->conf->worker_api_max_per_worker)
			w->capped = 0;
	}
	bufferevent_decref(conn->bev);
	free(conn);
	wa->nconns--;
	wa_accepting(wa);
}

static void	wa_req_free(struct wa_req *);

/*
 * evhttp closes the connection.  A request of ours that evhttp detached
 * from it (a timeout, an error) is ours to free, by answering it; one
 * still attached is freed by evhttp after this callback.
 */
static void
wa_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct wa_conn	*conn = arg;
	struct wa_req	*r = conn->req;

	if (r != NULL) {
		r->conn = NULL;
		conn->req = NULL;
		if (r->req != NULL &&
		    evhttp_request_get_connection(r->req) == NULL)
			evhttp_send_reply(r->req, 500, NULL, NULL);
		r->req = NULL;
		if (r->kind == WA_DOWNLOAD)
			wa_req_free(r);		/* cancels the transfer */
		/* a call finishes in api.c and is dropped then */
	}
	wa_conn_gone(conn);
}

/* evhttp has built the connection around conn->bev: find it. */
static void
wa_adopt(struct wa_conn *conn)
{
	struct workerapi	*wa = conn->wa;
	bufferevent_event_cb	 eventcb = NULL;
	void			*cbarg = NULL;

	TAILQ_REMOVE(&wa->pending, conn, entry);
	bufferevent_getcb(conn->bev, NULL, NULL, &eventcb, &cbarg);
	if (eventcb == NULL || cbarg == NULL) {
		/* evhttp freed it already: our reference is the last */
		wa_conn_gone(conn);
		return;
	}
	conn->evcon = cbarg;
	evhttp_connection_set_closecb(conn->evcon, wa_conn_closed, conn);
	HASH_ADD_PTR(wa->byevcon, evcon, conn);
}

static void
wa_adopt_cb(evutil_socket_t fd, short what, void *arg)
{
	struct workerapi	*wa = arg;
	struct wa_conn		*conn;

	while ((conn = TAILQ_FIRST(&wa->pending)) != NULL)
		wa_adopt(conn);
}

/* evhttp accepted a connection and wants its bufferevent. */
static struct bufferevent *
wa_bevcb(struct event_base *base, void *arg)
{
	struct workerapi	*wa = arg;
	struct wa_conn		*conn;
	struct bufferevent	*bev;

	/* evhttp copies its limits into the connection after this */
	wa_apply_conf(wa);
	/* no BEV_OPT_CLOSE_ON_FREE: evhttp closes the socket itself */
	if ((bev = bufferevent_socket_new(base, -1, 0)) == NULL)
		fatalx(EXIT_NOMEM, "%s: bufferevent_socket_new", __func__);
	conn = xcalloc(1, sizeof(*conn));
	conn->wa = wa;
	conn->bev = bev;
	conn->worker_id = -1;
	bufferevent_incref(bev);
	TAILQ_INSERT_TAIL(&wa->pending, conn, entry);
	event_active(wa->adopt_ev, 0, 0);
	wa->nconns++;
	wa_accepting(wa);
	return bev;
}

/* Our record of req's connection (adopted now if need be), or NULL. */
static struct wa_conn *
wa_conn_of(struct workerapi *wa, struct evhttp_request *req)
{
	struct evhttp_connection	*evcon;
	struct bufferevent		*bev;
	struct wa_conn			*conn;

	if ((evcon = evhttp_request_get_connection(req)) == NULL)
		return NULL;
	HASH_FIND_PTR(wa->byevcon, &evcon, conn);
	if (conn != NULL)
		return conn;
	bev = evhttp_connection_get_bufferevent(evcon);
	TAILQ_FOREACH(conn, &wa->pending, entry)
		if (conn->bev == bev) {
			wa_adopt(conn);
			return conn->evcon == evcon ? conn : NULL;
		}
	return NULL;
}

/*
 * The connection serves worker_id from now on; -1 when that worker holds
 * worker_api_max_per_worker connections already.
 */
static int
wa_conn_attach(struct workerapi *wa, struct wa_conn *conn, int worker_id)
{
	struct wa_worker *w, *old;

	if (conn == NULL || conn->worker_id == worker_id)
		return 0;
	if ((w = wa_worker_find(wa, worker_id)) == NULL)
		return -1;
	if (w->nconns >= (size_t)wa->conf->worker_api_max_per_worker) {
		wa->stats.conn_limited++;
		if (!w->capped)
			log_warnx("worker=%d: %zu connections to the worker "
			    "API, the most worker_api_max_per_worker allows; "
			    "more are refused", worker_id, w->nconns);
		w->capped = 1;
		return -1;
	}
	if (conn->worker_id != -1 &&
	    (old = wa_worker_find(wa, conn->worker_id)) != NULL)
		old->nconns--;
	conn->worker_id = worker_id;
	w->nconns++;
	return 0;
}

/* --- credentials ---------------------------------------------------------- */

static int
wa_ct_equal(const char *a, const char *b, size_t n)
{
	volatile unsigned char d = 0;
	size_t i;

	for (i = 0; i < n; i++)
		d |= (unsigned char)a[i] ^ (unsigned char)b[i];
	return d == 0;
}

/*
 * The worker whose credential c (n bytes) is: "<digits>:w<id>-<hex>".  The
 * id only finds the record; the whole credential is compared in constant
 * time.  -1 if it is nobody's.
 */
static int
wa_auth(struct workerapi *wa, const char *c, size_t n)
{
	const char		*p, *end = c + n;
	struct wa_worker	*w;
	long			 id = 0;

	if ((p = memchr(c, ':', n)) == NULL || end - p < 3 || p[1] != 'w')
		return -1;
	for (p += 2; p < end && isdigit((unsigned char)*p) && id <= INT32_MAX;
	    p++)
		id = id * 10 + (*p - '0');
	if (p == end || *p != '-' || id > INT32_MAX)
		return -1;
	if ((w = wa_worker_find(wa, (int)id)) == NULL || w->credlen != n ||
	    !wa_ct_equal(c, w->cred, n))
		return -1;
	return w->id;
}

int
workerapi_credential(struct workerapi *wa, int worker_id, int64_t bot_id,
    char *out, size_t outsz)
{
	static const char	 hex[] = "0123456789abcdef";
	unsigned char		 rnd[WORKERAPI_SECRET_BYTES];
	char			 secret[2 * WORKERAPI_SECRET_BYTES + 1];
	struct wa_worker	*w;
	size_t			 i;
	ssize_t			 got;
	int			 n;

	if (worker_id < 0 || bot_id <= 0 || outsz < WORKERAPI_CRED_MAX)
		return -1;
	if ((got = getrandom(rnd, sizeof(rnd), 0)) != (ssize_t)sizeof(rnd)) {
		if (got == -1)
			log_warn("worker API: getrandom");
		else
			log_warnx("worker API: getrandom: %zd bytes, not %zu",
			    got, sizeof(rnd));
		return -1;
	}
	for (i = 0; i < sizeof(rnd); i++) {
		secret[2 * i] = hex[rnd[i] >> 4];
		secret[2 * i + 1] = hex[rnd[i] & 0xf];
	}
	secret[2 * i] = '\0';
	explicit_bzero(rnd, sizeof(rnd));
	if ((w = wa_worker_find(wa, worker_id)) == NULL) {
		w = xcalloc(1, sizeof(*w));
		w->id = worker_id;
		HASH_ADD_INT(wa->workers, id, w);
	}
	n = snprintf(w->cred, sizeof(w->cred), "%" PRId64 ":w%d-%s", bot_id,
	    worker_id, secret);
	explicit_bzero(secret, sizeof(secret));
	w->credlen = (size_t)n;
	memcpy(out, w->cred, w->credlen + 1);
	return 0;
}

void
workerapi_revoke(struct workerapi *wa, int worker_id)
{
	struct wa_worker	*w;
	struct wa_conn		*conn, *tmp;

	if ((w = wa_worker_find(wa, worker_id)) != NULL) {
		HASH_DEL(wa->workers, w);
		explicit_bzero(w->cred, sizeof(w->cred));
		free(w);
	}
	HASH_ITER(hh, wa->byevcon, conn, tmp) {
		if (conn->worker_id != worker_id)
			continue;
		conn->worker_id = -1;	/* its record is gone */
		if (conn->req == NULL)
			evhttp_connection_free(conn->evcon);	/* closecb */
		else
			conn->closing = 1;
	}
}

/* --- requests ------------------------------------------------------------- */

static struct wa_req *
wa_req_new(struct workerapi *wa, enum wa_kind kind,
    struct evhttp_request *req, struct wa_conn *conn, int worker_id)
{
	struct wa_req *r;

	r = xcalloc(1, sizeof(*r));
	r->wa = wa;
	r->kind = kind;
	r->req = req;
	r->conn = conn;
	r->worker_id = worker_id;
	if (conn != NULL)
		conn->req = r;
	TAILQ_INSERT_TAIL(&wa->reqs, r, entry);
	return r;
}

/* Not the request: it is answered (or freed with its connection) already. */
static void
wa_req_free(struct wa_req *r)
{
	if (r->hreq != NULL)
		http_cancel(r->hreq);
	if (r->conn != NULL)
		r->conn->req = NULL;
	TAILQ_REMOVE(&r->wa->reqs, r, entry);
	free(r);
}

static int
wa_closing(const struct wa_req *r)
{
	return r->conn != NULL && r->conn->closing;
}

/* --- parameters ----------------------------------------------------------- */

/* Why the parameters were refused: an HTTP status and Telegram's text. */
struct wa_bad {
	int	code;
	char	desc[WORKERAPI_DESC_MAX];
};

static int
wa_bad(struct wa_bad *bad, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
wa_bad(struct wa_bad *bad, int code, const char *fmt, ...)
{
	va_list ap;

	bad->code = code;
	va_start(ap, fmt);
	vsnprintf(bad->desc, sizeof(bad->desc), fmt, ap);
	va_end(ap);
	return -1;
}

/* A value as Telegram keeps it: a string (it parses them per parameter). */
static int
wa_set_text(json_t *params, const char *name, const char *v, size_t len,
    struct wa_bad *bad)
{
	json_t *j;

	if ((j = json_stringn(v, len)) == NULL)
		return wa_bad(bad, 400, "Bad Request: parameter \"%.64s\" is "
		    "not valid UTF-8", name);
	if (json_object_set_new(params, name, j) == -1)
		return wa_bad(bad, 400, "Bad Request: a parameter name is not "
		    "valid UTF-8");
	return 0;
}

/* "a=1&b=%20" (a query string or an urlencoded body, NUL-terminated). */
static int
wa_form(json_t *params, const char *s, struct wa_bad *bad)
{
	struct evkeyvalq	 kv;
	struct evkeyval		*e;
	int			 rc = 0;

	TAILQ_INIT(&kv);
	if (*s == '\0')
		return 0;
	if (evhttp_parse_query_str(s, &kv) == -1)
		return wa_bad(bad, 400, "Bad Request: can't parse parameters");
	TAILQ_FOREACH(e, &kv, next)
		if ((rc = wa_set_text(params, e->key, e->value,
		    strlen(e->value), bad)) == -1)
			break;
	evhttp_clear_headers(&kv);
	return rc;
}

static char *
wa_b64(const char *p, size_t len)
{
	static const char	 tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char	*s = (const unsigned char *)p;
	char			*out, *o;
	size_t			 i;
	uint32_t		 v;

	out = xmalloc((len + 2) / 3 * 4 + 1);
	for (i = 0, o = out; i + 2 < len; i += 3, o += 4) {
		v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		o[0] = tab[v >> 18];
		o[1] = tab[(v >> 12) & 63];
		o[2] = tab[(v >> 6) & 63];
		o[3] = tab[v & 63];
	}
	if (i < len) {
		v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] <<
		    8 : 0);
		o[0] = tab[v >> 18];
		o[1] = tab[(v >> 12) & 63];
		o[2] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		o[3] = '=';
		o += 4;
	}
	*o = '\0';
	return out;
}

/* upload.c puts file names in headers: no controls, quotes or backslashes. */
static void
wa_clean_label(const char *in, char *out, size_t outsz)
{
	size_t n;

	for (n = 0; in[n] != '\0' && n + 1 < outsz; n++)
		out[n] = ((unsigned char)in[n] < 0x20 || in[n] == 0x7f ||
		    in[n] == '"' || in[n] == '\\') ? '_' : in[n];
	/* cut short: never in the middle of a UTF-8 sequence */
	if (in[n] != '\0')
		while (n > 0 && ((unsigned char)in[n] & 0xc0) == 0x80)
			n--;
	out[n] = '\0';
}

/* A multipart file part as upload.c's {"@data", "filename", ...}. */
static json_t *
wa_file_object(const struct multipart_part *pt)
{
	char	 name[256], ctype[128];
	char	*b64;
	json_t	*o;

	b64 = wa_b64(pt->data, pt->len);
	o = json_object();
	if (o == NULL || json_object_set_new(o, "@data", json_string(b64)) ==
	    -1) {
		free(b64);
		json_decref(o);
		return NULL;
	}
	free(b64);
	wa_clean_label(pt->filename, name, sizeof(name));
	if (*name != '\0')
		json_object_set_new(o, "filename", json_string(name));
	if (pt->ctype != NULL && strlen(pt->ctype) < sizeof(ctype) &&
	    strpbrk(pt->ctype, "\"\\") == NULL)
		json_object_set_new(o, "content_type", json_string(pt->ctype));
	return o;
}

/* The file part "attach://name" refers to, or NULL. */
static const struct multipart_part *
wa_attached(const struct multipart *m, const char *s)
{
	size_t i;

	if (strncmp(s, "attach://", 9) != 0)
		return NULL;
	for (i = 0; i < m->n; i++)
		if (m->parts[i].filename != NULL &&
		    strcmp(m->parts[i].name, s + 9) == 0)
			return &m->parts[i];
	return NULL;
}

/*
 * Every "attach://name" string inside j that names a file part becomes
 * that file as a file object (upload.c attaches it again when it sends
 * the call).  used[i] counts the references to part i.
 */
static int
wa_substitute(const struct multipart *m, json_t *j, int *used, int depth)
{
	const struct multipart_part	*pt;
	const char			*k;
	json_t				*v, *f;
	size_t				 i;
	void				*tmp;

	if (depth > WA_ATTACH_DEPTH)
		return 0;
	if (json_is_array(j)) {
		json_array_foreach(j, i, v) {
			if (json_is_string(v) && (pt = wa_attached(m,
			    json_string_value(v))) != NULL) {
				if ((f = wa_file_object(pt)) == NULL ||
				    json_array_set_new(j, i, f) == -1)
					return -1;
				used[pt - m->parts]++;
			} else if (wa_substitute(m, v, used, depth + 1) == -1)
				return -1;
		}
	} else if (json_is_object(j)) {
		json_object_foreach_safe(j, tmp, k, v) {
			if (json_is_string(v) && (pt = wa_attached(m,
			    json_string_value(v))) != NULL) {
				if ((f = wa_file_object(pt)) == NULL ||
				    json_object_set_new(j, k, f) == -1)
					return -1;
				used[pt - m->parts]++;
			} else if (wa_substitute(m, v, used, depth + 1) == -1)
				return -1;
		}
	}
	return 0;
}

/* One text part: a string, or JSON when it refers to files. */
static int
wa_text_part(json_t *params, const struct multipart *m,
    const struct multipart_part *pt, int *used, struct wa_bad *bad)
{
	const struct multipart_part	*file;
	json_t				*j;
	int				 rc;

	if (memchr(pt->data, '\0', pt->len) != NULL)
		return wa_bad(bad, 400, "Bad Request: parameter \"%.64s\" "
		    "holds a NUL byte", pt->name);
	if (wa_set_text(params, pt->name, pt->data, pt->len, bad) == -1)
		return -1;
	j = json_object_get(params, pt->name);
	if ((file = wa_attached(m, json_string_value(j))) != NULL) {
		used[file - m->parts]++;
		if ((j = wa_file_object(file)) == NULL ||
		    json_object_set_new(params, pt->name, j) == -1)
			return wa_bad(bad, 500, "Internal Server Error");
		return 0;
	}
	if (pt->len == 0 || (pt->data[0] != '[' && pt->data[0] != '{') ||
	    memmem(pt->data, pt->len, "attach://", 9) == NULL ||
	    (j = json_loadb(pt->data, pt->len, 0, NULL)) == NULL)
		return 0;
	rc = wa_substitute(m, j, used, 0);
	if (rc == 0)
		rc = json_object_set_new(params, pt->name, j);
	else
		json_decref(j);
	return rc == 0 ? 0 : wa_bad(bad, 500, "Internal Server Error");
}

/* Sizes first: nothing is decoded for a body that is refused anyway. */
static int
wa_multipart_sizes(struct workerapi *wa, const struct multipart *m,
    struct wa_bad *bad)
{
	size_t i, text = 0;

	for (i = 0; i < m->n; i++) {
		if (m->parts[i].filename == NULL) {
			text += m->parts[i].len;
			continue;
		}
		if ((int64_t)m->parts[i].len > wa->conf->upload_max_size)
			return wa_bad(bad, 413, "Request Entity Too Large: "
			    "file \"%.64s\" has %zu bytes, more than "
			    "upload_max_size", m->parts[i].name,
			    m->parts[i].len);
	}
	if (text >= PROTO_MAX_FRAME)
		return wa_bad(bad, 413, "Request Entity Too Large: %zu bytes "
		    "of parameters", text);
	return 0;
}

static int
wa_multipart(struct workerapi *wa, json_t *params, const char *ctype,
    const char *body, size_t len, struct wa_bad *bad)
{
	char			 boundary[MULTIPART_BOUNDARY_MAX + 1];
	char			 err[MULTIPART_ERR_MAX];
	struct multipart	*m;
	int			*used = NULL, rc = -1;
	size_t			 i;
	json_t			*f;

	if (multipart_boundary(ctype, boundary, sizeof(boundary)) == -1)
		return wa_bad(bad, 400, "Bad Request: multipart/form-data "
		    "without a valid boundary");
	if ((m = multipart_parse(body, len, boundary, err, sizeof(err))) ==
	    NULL)
		return wa_bad(bad, 400, "Bad Request: can't parse "
		    "multipart/form-data: %s", err);
	if (wa_multipart_sizes(wa, m, bad) == -1)
		goto out;
	used = xcalloc(m->n, sizeof(*used));
	for (i = 0; i < m->n; i++)
		if (m->parts[i].filename == NULL &&
		    wa_text_part(params, m, &m->parts[i], used, bad) == -1)
			goto out;
	/* files no field refers to are parameters of their own */
	for (i = 0; i < m->n; i++) {
		if (m->parts[i].filename == NULL || used[i] > 0)
			continue;
		if ((f = wa_file_object(&m->parts[i])) == NULL ||
		    json_object_set_new(params, m->parts[i].name, f) == -1) {
			wa_bad(bad, 500, "Internal Server Error");
			goto out;
		}
	}
	rc = 0;
out:
	free(used);
	multipart_free(m);
	return rc;
}

static int
wa_ctype_is(const char *ctype, const char *want)
{
	size_t n = strlen(want);

	return strncasecmp(ctype, want, n) == 0 && (ctype[n] == '\0' ||
	    ctype[n] == ';' || ctype[n] == ' ');
}

/* The body's parameters, by its Content-Type. */
static int
wa_body(struct workerapi *wa, struct evhttp_request *req, json_t *params,
    struct wa_bad *bad)
{
	struct evbuffer	*in = evhttp_request_get_input_buffer(req);
	const char	*ctype, *s;
	size_t		 len = evbuffer_get_length(in);
	json_t		*j;

	if (len == 0)
		return 0;
	ctype = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Content-Type");
	if (ctype != NULL && wa_ctype_is(ctype, "multipart/form-data"))
		return wa_multipart(wa, params, ctype,
		    (const char *)evbuffer_pullup(in, -1), len, bad);
	if (len >= PROTO_MAX_FRAME)
		return wa_bad(bad, 413, "Request Entity Too Large");
	/* one byte more for the NUL of the urlencoded case */
	evbuffer_add(in, "", 1);
	s = (const char *)evbuffer_pullup(in, -1);
	if (ctype != NULL ? wa_ctype_is(ctype, "application/json") : *s == '{') {
		j = json_loadb(s, len, 0, NULL);
		if (!json_is_object(j)) {
			json_decref(j);
			return wa_bad(bad, 400, "Bad Request: can't parse JSON "
			    "object");
		}
		json_object_update(params, j);
		json_decref(j);
		return 0;
	}
	if (ctype != NULL && !wa_ctype_is(ctype,
	    "application/x-www-form-urlencoded"))
		return wa_bad(bad, 400, "Bad Request: unsupported Content-Type");
	if (strlen(s) != len)
		return wa_bad(bad, 400, "Bad Request: can't parse parameters");
	return wa_form(params, s, bad);
}

/* Query string, then the body: later ones win, as at Telegram. */
static json_t *
wa_params(struct workerapi *wa, struct evhttp_request *req,
    struct wa_bad *bad)
{
	const struct evhttp_uri	*uri = evhttp_request_get_evhttp_uri(req);
	const char		*q = uri != NULL ? evhttp_uri_get_query(uri) :
				    NULL;
	json_t			*params;

	if ((params = json_object()) == NULL) {
		wa_bad(bad, 500, "Internal Server Error");
		return NULL;
	}
	if ((q != NULL && wa_form(params, q, bad) == -1) ||
	    wa_body(wa, req, params, bad) == -1) {
		json_decref(params);
		return NULL;
	}
	return params;
}

/* --- calls ---------------------------------------------------------------- */

static int
wa_method_ok(const char *m)
{
	size_t n;

	for (n = 0; m[n] != '\0'; n++)
		if (!isalnum((unsigned char)m[n]) && m[n] != '_')
			return 0;
	return n > 0 && n <= WA_METHOD_MAX;
}

/*
 * The X-Tgrunner-Update header: 0 with *id (-1: no header; 0: no update,
 * as in call frames), or -1 if it is not an update id.
 */
static int
wa_update_header(struct evhttp_request *req, int64_t *id)
{
	const char	*v;
	char		*end;
	long long	 n;

	*id = -1;
	v = evhttp_find_header(evhttp_request_get_input_headers(req),
	    WORKERAPI_HDR_UPDATE);
	if (v == NULL)
		return 0;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (!isdigit((unsigned char)*v) || *end != '\0' || errno != 0 || n < 0)
		return -1;
	*id = n;
	return 0;
}

/* {"ok":true,"result":...} or Telegram's error, as api.c got it. */
static json_t *
wa_answer(struct wa_req *r, const struct api_result *res)
{
	const struct conf	*conf = r->wa->conf;
	json_t			*o, *result;
	int			 code;

	if (res->ok) {
		/* api.c's result is borrowed: copied only to be changed */
		if (res->result == NULL)
			result = json_true();
		else if (conf->local_files_dir != NULL &&
		    strcasecmp(r->method, "getFile") == 0) {
			result = json_deep_copy(res->result);
			(void)workerapi_fix_file_path(conf->local_files_dir,
			    r->wa->token, result);
		} else
			result = json_incref(res->result);
		o = json_pack("{s:b,s:o}", "ok", 1, "result", result);
	} else {
		code = wa_status(res->error_code);
		o = json_pack("{s:b,s:i,s:s}", "ok", 0, "error_code", code,
		    "description", res->description != NULL ?
		    res->description : "");
		if (o != NULL && res->parameters != NULL)
			json_object_set(o, "parameters", res->parameters);
	}
	if (o != NULL && res->ok && res->description != NULL)
		json_object_set_new(o, "description",
		    json_string(res->description));
	return o;
}

static void
wa_call_done(void *arg, const struct api_result *res)
{
	struct wa_req	*r = arg;
	json_t		*o;
	char		*s;

	if (r->req != NULL) {
		o = wa_answer(r, res);
		s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
		if (s != NULL) {
			wa_mask_token(r->wa, s, strlen(s));
			wa_send(r->wa, r->req, res->ok ? 200 :
			    wa_status(res->error_code), s, strlen(s),
			    wa_closing(r));
		} else
			wa_error(r->wa, r->req, 500, "Internal Server Error", 0,
			    1);
		free(s);
		json_decref(o);
		r->req = NULL;
	}
	wa_req_free(r);
}

/*
 * The call's parameters, after the held() and policy hooks (*held: what
 * held() said, 0 for no update; from: who calls, for which update); NULL
 * when the request was answered (refused) here.
 */
static json_t *
wa_call_params(struct workerapi *wa, struct evhttp_request *req,
    struct api_from *from, const char *method, const char **key, int *held)
{
	int		 worker_id = from->worker, bound;
	struct wa_bad	 bad;
	json_t		*params;
	int64_t		 update;

	if (wa_update_header(req, &update) == -1) {
		wa_error(wa, req, 400, "Bad Request: bad " WORKERAPI_HDR_UPDATE
		    " header (an update id expected)", 0, 0);
		return NULL;
	}
	if ((params = wa_params(wa, req, &bad)) == NULL) {
		log_info("worker=%d: %s refused: %s", worker_id, method,
		    bad.desc);
		wa_error(wa, req, bad.code, bad.desc, 0, bad.code == 413);
		return NULL;
	}
	*key = NULL;
	if (wa->ops->held != NULL &&
	    (*held = wa->ops->held(wa->arg, worker_id, update, key,
	    &from->update)) == -1) {
		/* its key's order cannot be kept: refused, as a call frame is */
		snprintf(bad.desc, sizeof(bad.desc), "Bad Request: tgrunner: "
		    "update %" PRId64 " is not held by this worker", update);
		wa_error(wa, req, 400, bad.desc, 0, 0);
		json_decref(params);
		return NULL;
	}
	if (wa->ops->policy != NULL && wa->ops->policy(wa->arg, worker_id,
	    method, params, &bad.code, bad.desc, sizeof(bad.desc)) == -1) {
		wa_error(wa, req, bad.code, bad.desc, 0, 0);
		json_decref(params);
		return NULL;
	}
	/* the fair-queue bounds of its key and worker, as for a call frame */
	if ((bound = api_bounded(wa->api, *key, worker_id)) != 0) {
		snprintf(bad.desc, sizeof(bad.desc), "Too Many Requests: retry "
		    "after %d (tgrunner: %s)", API_BOUND_RETRY_AFTER,
		    bound == API_BOUND_KEY ? "too many calls queued for this "
		    "chat, max_calls_per_key" : "too many calls queued by this "
		    "worker, max_calls_per_worker");
		log_debug("worker=%d key=%s: call refused: %s", worker_id,
		    *key != NULL ? *key : "-", bad.desc);
		wa_error(wa, req, 429, bad.desc, API_BOUND_RETRY_AFTER, 0);
		json_decref(params);
		return NULL;
	}
	return params;
}

static void
wa_call(struct workerapi *wa, struct evhttp_request *req,
    struct wa_conn *conn, int worker_id, const char *method)
{
	struct api_from	 from = { .worker = worker_id };
	struct wa_req	*r;
	const char	*key;
	json_t		*params;
	int		 held = 0;

	if (!wa_method_ok(method)) {
		wa_error(wa, req, 404, "Not Found", 0, 0);
		return;
	}
	if ((params = wa_call_params(wa, req, &from, method, &key,
	    &held)) == NULL)
		return;
	if (held != 1)
		from.update = 0;
	r = wa_req_new(wa, WA_CALL, req, conn, worker_id);
	snprintf(r->method, sizeof(r->method), "%s", method);
	/* like a call frame's (not owed): dropped if its worker dies first */
	if (api_call_from(wa->api, &from, key, method, params, 0, wa_call_done,
	    r) == -1) {
		wa_req_free(r);
		wa_error(wa, req, 429, "Too Many Requests: retry after 1", 1,
		    0);
	} else {
		wa->stats.calls++;
		if (held == 0)
			wa->stats.calls_no_update++;
	}
	json_decref(params);
}

/* --- downloads ------------------------------------------------------------ */

/* A file_path: not empty, no control character, no ".." component. */
static int
wa_path_ok(const char *p, size_t n)
{
	const char	*c;
	size_t		 i, len;

	if (n == 0 || n > WA_PATH_MAX || strlen(p) != n)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return 0;
	for (c = p; *c != '\0'; c += len + (c[len] == '/')) {
		len = strcspn(c, "/");
		if (len == 2 && c[0] == '.' && c[1] == '.')
			return 0;
	}
	return 1;
}

static void
wa_dl_drained(struct evhttp_connection *evcon, void *arg)
{
	struct wa_req *r = arg;

	if (r->paused && r->hreq != NULL) {
		r->paused = 0;
		http_resume(r->hreq);
	}
}

static int
wa_dl_head(void *arg, long status, int64_t length, const char *ctype)
{
	struct wa_req		*r = arg;
	struct evkeyvalq	*h;
	char			 num[32];

	if (r->req == NULL)
		return -1;
	if (status == 200 && length > r->max) {
		r->failed = DL_TOO_BIG;
		return -1;
	}
	h = evhttp_request_get_output_headers(r->req);
	if (evhttp_add_header(h, "Content-Type", ctype != NULL ? ctype :
	    "application/octet-stream") == -1)
		evhttp_add_header(h, "Content-Type", "application/octet-stream");
	if (length >= 0) {
		snprintf(num, sizeof(num), "%" PRId64, length);
		evhttp_add_header(h, "Content-Length", num);
	}
	if (wa_closing(r))
		evhttp_add_header(h, "Connection", "close");
	evhttp_send_reply_start(r->req, (int)status, NULL);
	r->started = 1;
	return 0;
}

static int
wa_dl_data(void *arg, const char *p, size_t len)
{
	struct wa_req			*r = arg;
	struct evhttp_connection	*evcon;
	struct evbuffer			*b;

	if (r->req == NULL ||
	    (evcon = evhttp_request_get_connection(r->req)) == NULL) {
		r->failed = DL_CLIENT;
		return -1;
	}
	if ((int64_t)len > r->max - r->sent) {
		r->failed = DL_TOO_BIG;
		return -1;
	}
	if (evbuffer_get_length(bufferevent_get_output(
	    evhttp_connection_get_bufferevent(evcon))) > WA_OUT_HIGH) {
		if (!r->paused)
			r->wa->stats.download_pauses++;
		r->paused = 1;	/* wa_dl_drained resumes */
		return 1;
	}
	if ((b = evbuffer_new()) == NULL)
		fatalx(EXIT_NOMEM, "%s: evbuffer_new", __func__);
	if (evbuffer_add(b, p, len) == -1) {
		evbuffer_free(b);
		return -1;
	}
	evhttp_send_reply_chunk_with_cb(r->req, b, wa_dl_drained, r);
	evbuffer_free(b);
	r->sent += (int64_t)len;
	return 0;
}

/* A body already begun cannot say it failed: cut the connection. */
static void
wa_dl_cut(struct wa_req *r)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);

	if (r->conn != NULL)
		r->conn->req = NULL;
	r->conn = NULL;
	r->req = NULL;		/* evhttp frees it with the connection */
	if (evcon != NULL)
		evhttp_connection_free(evcon);
}

static void
wa_dl_failed(struct wa_req *r, const struct http_response *resp)
{
	struct workerapi *wa = r->wa;

	if (r->failed == DL_TOO_BIG)
		log_info("worker=%d: download refused: more than "
		    "download_max_size (%" PRId64 " bytes)", r->worker_id,
		    r->max);
	else
		log_info("worker=%d: download failed: %s", r->worker_id,
		    resp->error[0] != '\0' ? resp->error : "no answer");
	if (r->started)
		wa_dl_cut(r);
	else if (r->failed == DL_TOO_BIG)
		wa_error(wa, r->req, 400, "Bad Request: file is too big", 0,
		    wa_closing(r));
	else
		wa_error(wa, r->req, 502, "Bad Gateway: the file could not be "
		    "fetched", 0, wa_closing(r));
}

static void
wa_dl_done(void *arg, const struct http_response *resp)
{
	struct wa_req		*r = arg;
	struct evhttp_request	*req;

	r->hreq = NULL;
	if (r->req == NULL) {
		wa_req_free(r);		/* the client went away */
		return;
	}
	if (resp->curl_code != 0 || r->failed != DL_OK || !r->started)
		wa_dl_failed(r, resp);
	else {
		r->wa->stats.requests++;
		r->wa->stats.downloads++;
		r->wa->stats.download_bytes += (uint64_t)r->sent;
		req = r->req;
		/*
		 * With the whole body written out already, evhttp finishes
		 * the request at once, frees it, and frees a connection the
		 * client asked to close, in wa_conn_closed(): neither may
		 * lead back to r, which is freed here.
		 */
		if (r->conn != NULL)
			r->conn->req = NULL;
		r->conn = NULL;
		r->req = NULL;
		evhttp_send_reply_end(req);
	}
	wa_req_free(r);
}

static const struct http_stream_cb wa_dl_cb = {
	wa_dl_head, wa_dl_data, wa_dl_done
};

/* Bytes of a URL path: unreserved characters and '/' as they are. */
static void
wa_url_path(struct evbuffer *b, const char *p)
{
	for (; *p != '\0'; p++)
		if (isalnum((unsigned char)*p) || strchr("-._~/", *p) != NULL)
			evbuffer_add(b, p, 1);
		else
			evbuffer_add_printf(b, "%%%02X", (unsigned char)*p);
}

static void
wa_dl_remote(struct workerapi *wa, struct evhttp_request *req,
    struct wa_conn *conn, int worker_id, const char *path)
{
	struct evbuffer	*url;
	struct wa_req	*r;
	const char	*root = wa->conf->api_url;
	size_t		 n = strlen(root);

	while (n > 0 && root[n - 1] == '/')
		n--;
	if ((url = evbuffer_new()) == NULL)
		fatalx(EXIT_NOMEM, "%s: evbuffer_new", __func__);
	r = wa_req_new(wa, WA_DOWNLOAD, req, conn, worker_id);
	r->max = wa->conf->download_max_size;
	evbuffer_add_printf(url, "%.*s/file/bot%s/", (int)n, root, wa->token);
	wa_url_path(url, path);
	evbuffer_add(url, "", 1);
	r->hreq = http_get_stream(wa->http, (const char *)evbuffer_pullup(url,
	    -1), WA_DL_TIMEOUT_MS, &wa_dl_cb, r);
	explicit_bzero(evbuffer_pullup(url, -1), evbuffer_get_length(url));
	evbuffer_free(url);
	if (r->hreq == NULL) {
		wa_req_free(r);
		wa_error(wa, req, 502, "Bad Gateway: the file could not be "
		    "fetched", 0, 0);
	}
}

/*
 * local_files_dir/<token>/path, opened as upload.c opens files: beneath
 * the directory, no symbolic link, a regular file.  -1 with *code (404,
 * 400) when there is nothing to send.
 */
static int
wa_local_open(struct workerapi *wa, const char *path, int64_t *size,
    int *code)
{
	char	 dir[PATH_MAX], why[UPLOAD_ERR_MAX];
	size_t	 n;
	int	 dirfd, fd;

	*code = 404;
	n = (size_t)snprintf(dir, sizeof(dir), "%s/%s", wa->conf->local_files_dir,
	    wa->token);
	if (n >= sizeof(dir))
		return -1;
	/* the server's absolute form, as getFile answered it */
	if (*path == '/') {
		if (strncmp(path, dir, n) != 0 || path[n] != '/')
			return -1;
		path += n + 1;
	}
	if ((dirfd = upload_dir_open(dir)) == -1) {
		log_warn("local_files_dir %s", wa->conf->local_files_dir);
		return -1;
	}
	fd = upload_open(dirfd, path, INT64_MAX, size, why, sizeof(why));
	close(dirfd);
	if (fd == -1) {
		log_debug("download of a local file refused: %s", why);
		return -1;
	}
	if (*size > wa->conf->download_max_size) {
		close(fd);
		*code = 400;
		return -1;
	}
	return fd;
}

static void
wa_dl_local(struct workerapi *wa, struct evhttp_request *req,
    const char *path)
{
	struct evkeyvalq	*h = evhttp_request_get_output_headers(req);
	struct evbuffer		*b;
	int64_t			 size;
	int			 fd, code;

	if ((fd = wa_local_open(wa, path, &size, &code)) == -1) {
		wa_error(wa, req, code, code == 404 ? "Not Found" :
		    "Bad Request: file is too big", 0, 0);
		return;
	}
	if ((b = evbuffer_new()) == NULL)
		fatalx(EXIT_NOMEM, "%s: evbuffer_new", __func__);
	if (size > 0 && evbuffer_add_file(b, fd, 0, (ev_off_t)size) == -1) {
		/* evbuffer_add_file closes fd even when it fails */
		evbuffer_free(b);
		wa_error(wa, req, 500, "Internal Server Error", 0, 1);
		return;
	}
	if (size == 0)
		close(fd);
	evhttp_add_header(h, "Content-Type", "application/octet-stream");
	wa->stats.requests++;
	wa->stats.downloads++;
	wa->stats.download_bytes += (uint64_t)size;
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void
wa_download(struct workerapi *wa, struct evhttp_request *req,
    struct wa_conn *conn, int worker_id, const char *raw)
{
	char	*path;
	size_t	 n = 0;

	if ((path = evhttp_uridecode(raw, 0, &n)) == NULL ||
	    !wa_path_ok(path, n)) {
		free(path);
		wa_error(wa, req, 404, "Not Found", 0, 0);
		return;
	}
	if (wa->conf->local_files_dir != NULL)
		wa_dl_local(wa, req, path);
	else
		wa_dl_remote(wa, req, conn, worker_id, path);
	free(path);
}

/* --- dispatch ------------------------------------------------------------- */

/* Settings evhttp copies into each new connection, after a reload too. */
static void
wa_apply_conf(struct workerapi *wa)
{
	const struct conf	*c = wa->conf;
	int64_t			 body = PROTO_MAX_FRAME + c->upload_max_size +
				    WA_FORM_SLACK;

	if (body != wa->body_max) {
		evhttp_set_max_body_size(wa->evh, (ev_ssize_t)body);
		wa->body_max = body;
	}
	if (c->worker_api_timeout != wa->timeout_ms) {
		evhttp_set_timeout(wa->evh, (int)((c->worker_api_timeout +
		    999) / 1000));
		wa->timeout_ms = c->worker_api_timeout;
	}
}

/*
 * "/bot<credential>/<rest>": the worker, with *rest after the slash; -1
 * answered 401 or 429.
 */
static int
wa_who(struct workerapi *wa, struct evhttp_request *req,
    struct wa_conn *conn, const char *cred, const char **rest)
{
	const char	*slash = strchr(cred, '/');
	int		 id;

	if (slash == NULL) {
		wa_error(wa, req, 404, "Not Found", 0, 0);
		return -1;
	}
	if ((id = wa_auth(wa, cred, (size_t)(slash - cred))) == -1) {
		log_debug("worker API: a request with an unknown credential");
		wa_error(wa, req, 401, "Unauthorized", 0, 0);
		return -1;
	}
	if (wa_conn_attach(wa, conn, id) == -1) {
		wa_error(wa, req, 429, "Too Many Requests: retry after 1", 1, 1);
		return -1;
	}
	*rest = slash + 1;
	return id;
}

static void
wa_request(struct evhttp_request *req, void *arg)
{
	struct workerapi		*wa = arg;
	const struct evhttp_uri		*uri = evhttp_request_get_evhttp_uri(req);
	const char			*path = uri != NULL ?
					    evhttp_uri_get_path(uri) : NULL;
	const char			*rest;
	struct wa_conn			*conn;
	int				 id;

	wa_apply_conf(wa);
	conn = wa_conn_of(wa, req);
	if (path != NULL && strncmp(path, "/bot", 4) == 0) {
		if ((id = wa_who(wa, req, conn, path + 4, &rest)) != -1)
			wa_call(wa, req, conn, id, rest);
	} else if (path != NULL && strncmp(path, "/file/bot", 9) == 0) {
		if ((id = wa_who(wa, req, conn, path + 9, &rest)) != -1)
			wa_download(wa, req, conn, id, rest);
	} else
		wa_error(wa, req, 404, "Not Found", 0, 0);
}

/* --- the server --------------------------------------------------------- */

struct workerapi *
workerapi_new(struct event_base *base, struct api *api, struct http *http,
    const struct conf *conf, const char *token,
    const struct workerapi_ops *ops, void *arg)
{
	struct workerapi *wa;

	wa = xcalloc(1, sizeof(*wa));
	wa->base = base;
	wa->api = api;
	wa->http = http;
	wa->conf = conf;
	wa->token = token;
	wa->ops = ops;
	wa->arg = arg;
	TAILQ_INIT(&wa->pending);
	TAILQ_INIT(&wa->reqs);
	if ((wa->evh = evhttp_new(base)) == NULL ||
	    (wa->adopt_ev = event_new(base, -1, 0, wa_adopt_cb, wa)) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	evhttp_set_bevcb(wa->evh, wa_bevcb, wa);
	evhttp_set_gencb(wa->evh, wa_request, wa);
	evhttp_set_allowed_methods(wa->evh, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_max_headers_size(wa->evh, WA_HEADERS_MAX);
	/* a 413 reaches the client before the connection closes */
	evhttp_set_flags(wa->evh, EVHTTP_SERVER_LINGERING_CLOSE);
	evhttp_set_default_content_type(wa->evh, "application/json");
	wa_apply_conf(wa);
	return wa;
}

void
workerapi_free(struct workerapi *wa)
{
	struct wa_req	*r;
	struct wa_conn	*conn;

	if (wa == NULL)
		return;
	/* calls in api.c: the caller frees the api before the loop runs */
	while ((r = TAILQ_FIRST(&wa->reqs)) != NULL) {
		r->req = NULL;
		wa_req_free(r);
	}
	/* evhttp frees the listener before the connections (closecb) */
	wa->bound = NULL;
	if (wa->evh != NULL)
		evhttp_free(wa->evh);
	while ((conn = TAILQ_FIRST(&wa->pending)) != NULL) {
		TAILQ_REMOVE(&wa->pending, conn, entry);
		wa_conn_gone(conn);
	}
	if (wa->adopt_ev != NULL)
		event_free(wa->adopt_ev);
	while (wa->workers != NULL)
		workerapi_revoke(wa, wa->workers->id);
	if (wa->unix_path != NULL) {
		unlink(wa->unix_path);
		free(wa->unix_path);
	}
	free(wa);
}

/* The workers' group may connect to the Unix socket (mode 0660). */
static void
wa_unix_group(struct workerapi *wa, const char *path)
{
	const struct conf	*c = wa->conf;
	struct group		*gr;
	struct passwd		*pw;
	gid_t			 gid;

	if (geteuid() != 0)
		return;
	if (c->worker_group != NULL && (gr = getgrnam(c->worker_group)) != NULL)
		gid = gr->gr_gid;
	else if (c->worker_user != NULL &&
	    (pw = getpwnam(c->worker_user)) != NULL)
		gid = pw->pw_gid;
	else
		return;
	if (chown(path, (uid_t)-1, gid) == -1)
		log_warn("worker_api_listen %s: chown", path);
}

static int
wa_listen_unix(struct workerapi *wa, const char *path)
{
	int fd;

	wa->unix_path = xstrdup(path);
	if ((fd = unixsock_listen(path, 0660)) == -1) {
		free(wa->unix_path);
		wa->unix_path = NULL;
		return -1;
	}
	wa_unix_group(wa, path);
	if ((wa->bound = evhttp_accept_socket_with_handle(wa->evh, fd)) ==
	    NULL) {
		log_errx("worker_api_listen unix:%s: cannot listen", path);
		close(fd);
		return -1;	/* workerapi_free unlinks it */
	}
	snprintf(wa->root, sizeof(wa->root), "unix:%s", path);
	return 0;
}

/* "127.0.0.1:0", "[::1]:8443", "localhost:0". */
static int
wa_listen_tcp(struct workerapi *wa, const char *spec)
{
	char			 host[256], addr[INET6_ADDRSTRLEN];
	const char		*colon = strrchr(spec, ':');
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);
	unsigned long		 port;
	size_t			 n;

	if (colon == NULL || (n = (size_t)(colon - spec)) >= sizeof(host))
		return -1;
	if (spec[0] == '[' && n >= 2 && spec[n - 1] == ']') {
		memcpy(host, spec + 1, n - 2);
		host[n - 2] = '\0';
	} else {
		memcpy(host, spec, n);
		host[n] = '\0';
	}
	port = strtoul(colon + 1, NULL, 10);
	if (port > 65535) {
		log_errx("worker_api_listen %s: no such port", spec);
		return -1;
	}
	/* a failed socket, bind or listen sets errno; getaddrinfo does not */
	errno = 0;
	if ((wa->bound = evhttp_bind_socket_with_handle(wa->evh, host,
	    (ev_uint16_t)port)) == NULL ||
	    getsockname(evhttp_bound_socket_get_fd(wa->bound),
	    (struct sockaddr *)&ss, &sl) == -1) {
		if (errno != 0)
			log_err("worker_api_listen %s: cannot listen", spec);
		else
			log_errx("worker_api_listen %s: cannot listen (no such "
			    "address)", spec);
		return -1;
	}
	if (ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
		    addr, sizeof(addr));
		snprintf(wa->root, sizeof(wa->root), "http://[%s]:%u", addr,
		    ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
	} else {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr,
		    addr, sizeof(addr));
		snprintf(wa->root, sizeof(wa->root), "http://%s:%u", addr,
		    ntohs(((struct sockaddr_in *)&ss)->sin_port));
	}
	return 0;
}

int
workerapi_listen(struct workerapi *wa, const char *spec)
{
	int rc;

	if (wa->bound != NULL) {
		log_errx("worker_api_listen %s: already listening on %s", spec,
		    wa->root);
		return -1;
	}
	rc = strncmp(spec, "unix:", 5) == 0 ? wa_listen_unix(wa, spec + 5) :
	    wa_listen_tcp(wa, spec);
	if (rc == 0)
		log_info("worker API on %s", wa->root);
	return rc;
}

void
workerapi_reconfigure(struct workerapi *wa)
{
	wa_apply_conf(wa);
	wa_accepting(wa);
}

const char *
workerapi_root(const struct workerapi *wa)
{
	return wa->root;
}

size_t
workerapi_connections(const struct workerapi *wa)
{
	return wa->nconns;
}

const struct workerapi_stats *
workerapi_stats(const struct workerapi *wa)
{
	return &wa->stats;
}

json_t *
workerapi_status(const struct workerapi *wa)
{
	const struct workerapi_stats *st = &wa->stats;

	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
	    "root", wa->root, "connections", (json_int_t)wa->nconns,
	    "requests", (json_int_t)st->requests,
	    "calls", (json_int_t)st->calls,
	    "calls_no_update", (json_int_t)st->calls_no_update,
	    "downloads", (json_int_t)st->downloads,
	    "download_bytes", (json_int_t)st->download_bytes,
	    "unauthorized", (json_int_t)st->unauthorized,
	    "refused", (json_int_t)st->refused);
}

void
workerapi_metrics(const struct workerapi *wa, struct evbuffer *out)
{
	const struct workerapi_stats *st = &wa->stats;

	metrics_gauge(out, "tgrunner_worker_api_connections",
	    "Connections to the workers' Bot API endpoint.", wa->nconns);
	metrics_counter(out, "tgrunner_worker_api_requests_total",
	    "Requests the endpoint answered, whatever the answer.",
	    st->requests);
	metrics_counter(out, "tgrunner_worker_api_calls_total",
	    "Bot API calls made through the endpoint.", st->calls);
	metrics_counter(out, "tgrunner_worker_api_calls_no_update_total",
	    "Of those, calls that belonged to no update, so in no key's "
	    "order (" WORKERAPI_HDR_UPDATE " 0, or no header while the "
	    "worker held none or several).", st->calls_no_update);
	metrics_counter(out, "tgrunner_worker_api_downloads_total",
	    "Files sent in full through the endpoint.", st->downloads);
	metrics_counter(out, "tgrunner_worker_api_download_bytes_total",
	    "Bytes of the files sent in full.", st->download_bytes);
	metrics_counter(out, "tgrunner_worker_api_unauthorized_total",
	    "Requests with a credential that is no living worker's (401).",
	    st->unauthorized);
	metrics_counter(out, "tgrunner_worker_api_refused_total",
	    "Requests the endpoint refused itself (4xx other than 401).",
	    st->refused);
	metrics_counter(out, "tgrunner_worker_api_connection_limited_total",
	    "Times a connection bound bit.", st->conn_limited);
}

int
workerapi_fix_file_path(const char *local_files_dir, const char *token,
    json_t *result)
{
	json_t		*fp = json_object_get(result, "file_path");
	const char	*s = json_string_value(fp), *rest;
	size_t		 dn = strlen(local_files_dir), tn = strlen(token);

	while (dn > 1 && local_files_dir[dn - 1] == '/')
		dn--;
	if (s == NULL || strncmp(s, local_files_dir, dn) != 0 ||
	    s[dn] != '/' || strncmp(s + dn + 1, token, tn) != 0 ||
	    s[dn + 1 + tn] != '/')
		return 0;
	rest = s + dn + 1 + tn + 1;
	return json_object_set_new(result, "file_path", json_string(rest)) ==
	    0 ? 1 : 0;
}

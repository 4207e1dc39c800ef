/*
 * The poller: getMe, optional deleteWebhook, then exactly one getUpdates in
 * flight at a time.  Every reply is classified once (poller_classify); a
 * success moves on, a failure goes through poller_fail(), which decides the
 * wait and logs once per change of failure class, not once per retry.
 * Every state change goes through poller_set_state().
 *
 * Back-off is "equal jitter" (half the cap fixed, half random), floored at
 * backoff_min, so that no failure path ever retries sooner than that.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "conf.h"
#include "http.h"
#include "jscan.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "poller.h"
#include "timeutil.h"
#include "token.h"
#include "xmalloc.h"

#define POLLER_LIMIT_MAX	100	/* Telegram's own cap on limit */
#define POLLER_ELEMS_MAX	1000	/* more than this is not a real reply */
#define POLLER_RETRY_AFTER_MAX	3600	/* s: cap on a 429's retry_after */
#define POLLER_HTTP_SLACK	15000	/* ms added to the long-poll timeout */
#define POLLER_CALL_TIMEOUT	30000	/* ms for getMe / deleteWebhook */
#define POLLER_SNIPPET		100	/* bytes of a bad body that are logged */

enum poller_phase { PHASE_GETME, PHASE_WEBHOOK, PHASE_POLL };

enum poller_err {
	PERR_NONE,
	PERR_TRANSPORT,		/* timeout, reset, refused, oversized body */
	PERR_HTTP5XX,
	PERR_429,
	PERR_409,
	PERR_MALFORMED,		/* not JSON, truncated, wrong shape */
	PERR_API,		/* any other ok:false */
	PERR_STORE,		/* ops->batch could not make it durable */
	PERR_BADTOKEN		/* 401 / 404 */
};

struct poller_reply {
	enum poller_err	 err;
	json_t		*result;	/* owned; getUpdates: NULL if fast */
	size_t		 n;		/* getUpdates: updates */
	int64_t		*ids;		/* owned; NULL: read from result */
	const char	*body;		/* the response's, while it lives */
	struct poller_slice *slices;	/* owned; NULL: encode each update */
	size_t		 bad;		/* dropped elements */
	int		 retry_after;
	char		 desc[256];	/* Telegram's description */
	char		 detail[1024];	/* for the log */
};

struct poller {
	struct event_base	*base;
	struct http		*http;
	const struct conf	*conf;
	const struct poller_ops	*ops;
	void			*arg;
	char			*url;		/* <api_url>/bot<token>/ */
	char			*allowed;	/* compact JSON array */
	enum poll_state		 state;
	enum poller_phase	 phase;
	int			 started;
	int			 unsynced;	/* offset must not be sent yet */
	int64_t			 offset;
	struct http_req		*req;
	struct event		*timer;
	int64_t			 sent;		/* when req was sent, mono ms */
	/* failure bookkeeping: logging once per class, back-off */
	enum poller_err		 fail_err;
	int			 fails;
	int64_t			 fail_since;	/* mono ms */
	int64_t			 last_ok;
	uint64_t		 rnd;
	int			 busy;		/* inside an ops callback */
	int			 dying;
	struct poller_stats	 stats;
};

static void	poller_issue(struct poller *);

const char *
poller_state_str(enum poll_state s)
{
	switch (s) {
	case POLL_IDLE:		return "idle";
	case POLL_STARTING:	return "starting";
	case POLL_POLLING:	return "polling";
	case POLL_FULL:		return "full";
	case POLL_PAUSED:	return "paused";
	case POLL_BACKOFF:	return "backoff";
	case POLL_STOPPED:	return "stopped";
	case POLL_SYNCING:	return "syncing";
	}
	return "unknown";
}

static const char *
poller_err_str(enum poller_err e)
{
	switch (e) {
	case PERR_NONE:		return "none";
	case PERR_TRANSPORT:	return "transport";
	case PERR_HTTP5XX:	return "http5xx";
	case PERR_429:		return "flood";
	case PERR_409:		return "conflict";
	case PERR_MALFORMED:	return "malformed";
	case PERR_API:		return "api";
	case PERR_STORE:	return "store";
	case PERR_BADTOKEN:	return "badtoken";
	}
	return "unknown";
}

static const char *
poller_phase_method(enum poller_phase ph)
{
	switch (ph) {
	case PHASE_GETME:	return "getMe";
	case PHASE_WEBHOOK:	return "deleteWebhook";
	case PHASE_POLL:	break;
	}
	return "getUpdates";
}

/* The one place where the state changes. */
static void
poller_set_state(struct poller *p, enum poll_state s)
{
	if (p->state == s)
		return;
	log_msg(s == POLL_PAUSED || s == POLL_STOPPED ? LOG_LVL_INFO :
	    LOG_LVL_DEBUG, "poller: %s -> %s", poller_state_str(p->state),
	    poller_state_str(s));
	p->state = s;
}

int64_t
poller_backoff_ms(int attempt, int64_t min, int64_t max, double rand01)
{
	int64_t cap, d;
	int i;

	if (min < 1)
		min = 1;
	if (max < min)
		max = min;
	if (rand01 < 0 || rand01 >= 1)
		rand01 = 0;
	cap = min;
	for (i = 1; i < attempt && cap < max; i++)
		cap = cap > max / 2 ? max : cap * 2;
	if (cap > max)
		cap = max;
	d = cap / 2 + (int64_t)(rand01 * (double)(cap - cap / 2));
	return d < min ? min : d;
}

static double
poller_rand01(struct poller *p)
{
	/* xorshift64: jitter needs spread, not secrecy */
	p->rnd ^= p->rnd << 13;
	p->rnd ^= p->rnd >> 7;
	p->rnd ^= p->rnd << 17;
	return (double)(p->rnd >> 11) / 9007199254740992.0;
}

/* Copy up to POLLER_SNIPPET bytes of an untrusted body, escaped. */
static void
poller_snippet(const char *body, size_t len, char *out, size_t outlen)
{
	size_t i, o = 0;
	unsigned char c;

	for (i = 0; i < len && i < POLLER_SNIPPET && o + 5 < outlen; i++) {
		c = (unsigned char)body[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	out[o] = '\0';
	if (i < len && o + 4 < outlen)
		strcat(out, "...");
}

/* --- parsing ------------------------------------------------------------ */

static int
poller_parse_error(json_t *root, int *error_code, int *retry_after,
    char *desc, size_t desclen)
{
	json_t *code, *d, *params, *ra;

	code = json_object_get(root, "error_code");
	if (!json_is_integer(code)) {
		snprintf(desc, desclen, "ok:false without an integer error_code");
		return -1;
	}
	*error_code = (int)json_integer_value(code);
	if (json_integer_value(code) < 0 || json_integer_value(code) > 999)
		*error_code = 0;
	d = json_object_get(root, "description");
	snprintf(desc, desclen, "%s", json_is_string(d) ?
	    json_string_value(d) : "");
	params = json_object_get(root, "parameters");
	ra = json_object_get(params, "retry_after");
	if (json_is_integer(ra) && json_integer_value(ra) > 0)
		*retry_after = json_integer_value(ra) > INT32_MAX ? INT32_MAX :
		    (int)json_integer_value(ra);
	return 1;
}

/* The envelope of every Bot API reply; result is borrowed from *rootp. */
static int
poller_parse_reply(const char *body, size_t len, json_t **rootp,
    json_t **result, int *error_code, int *retry_after, char *desc,
    size_t desclen)
{
	json_error_t jerr;
	json_t *root, *ok;

	*rootp = NULL;
	*result = NULL;
	*error_code = 0;
	*retry_after = 0;
	if (desclen > 0)
		desc[0] = '\0';
	if ((root = json_loadb(body, len, 0, &jerr)) == NULL) {
		snprintf(desc, desclen, "not JSON: %s at offset %d", jerr.text,
		    jerr.position);
		return -1;
	}
	*rootp = root;
	ok = json_object_get(root, "ok");
	if (!json_is_object(root) || !json_is_boolean(ok)) {
		snprintf(desc, desclen, "not a Bot API reply (no boolean ok)");
		return -1;
	}
	if (json_is_false(ok))
		return poller_parse_error(root, error_code, retry_after, desc,
		    desclen);
	if ((*result = json_object_get(root, "result")) == NULL) {
		snprintf(desc, desclen, "ok:true without result");
		return -1;
	}
	return 0;
}

static int
poller_update_ok(const json_t *u)
{
	json_t *id = json_object_get(u, "update_id");

	/* id + 1 becomes the offset: it must not overflow */
	return json_is_object(u) && json_is_integer(id) &&
	    json_integer_value(id) >= 0 && json_integer_value(id) < INT64_MAX;
}

int
poller_parse(const char *body, size_t len, json_t **out, size_t *bad,
    int *error_code, int *retry_after, char *desc, size_t desclen)
{
	json_t *root, *result, *arr, *u;
	size_t i;
	int rc;

	*out = NULL;
	*bad = 0;
	rc = poller_parse_reply(body, len, &root, &result, error_code,
	    retry_after, desc, desclen);
	if (rc != 0)
		goto done;
	rc = -1;
	if (!json_is_array(result)) {
		snprintf(desc, desclen, "result is not an array");
		goto done;
	}
	if (json_array_size(result) > POLLER_ELEMS_MAX) {
		snprintf(desc, desclen, "result has %zu elements (max %d)",
		    json_array_size(result), POLLER_ELEMS_MAX);
		goto done;
	}
	if ((arr = json_array()) == NULL) {
		snprintf(desc, desclen, "out of memory");
		goto done;
	}
	json_array_foreach(result, i, u) {
		if (poller_update_ok(u))
			json_array_append(arr, u);
		else
			(*bad)++;
	}
	*out = arr;
	rc = 0;
done:
	json_decref(root);
	return rc;
}

/* --- raw element slices ------------------------------------------------------ */

/*
 * Each update is kept and handed to workers as the exact bytes Telegram
 * sent, sliced out of the body (jscan.h): no second encoding, and numbers
 * keep their spelling.  Used after jansson accepted a body the fast path
 * would not take; the caller checks the count against jansson's.
 */
int
poller_slices(const char *body, size_t len, struct poller_slice *out,
    size_t max)
{
	struct jspan arr, u;
	const char *it = NULL;
	size_t n = 0;

	if (jscan_member(jscan_span(body, len), "result", &arr) == -1 ||
	    jscan_kind(arr) != '[')
		return -1;
	while (jscan_next(arr, &it, &u)) {
		if (n == max)
			return -1;
		out[n].off = (size_t)(u.p - body);
		out[n].len = (size_t)(u.e - u.p);
		n++;
	}
	return (int)n;
}

/* --- classification of replies ------------------------------------------ */

static void
poller_classify_error(struct poller_reply *rp, long status, int code)
{
	if (code == 0)
		code = (int)status;
	snprintf(rp->detail, sizeof(rp->detail), "status=%ld error_code=%d "
	    "description=\"%s\"", status, code, rp->desc);
	if (code == 401 || code == 404)
		rp->err = PERR_BADTOKEN;
	else if (code == 409)
		rp->err = PERR_409;
	else if (code == 429)
		rp->err = PERR_429;
	else if (code >= 500)
		rp->err = PERR_HTTP5XX;
	else
		rp->err = PERR_API;
}

static void
poller_classify_bad(struct poller_reply *rp, const struct http_response *r)
{
	char snip[POLLER_SNIPPET * 4 + 8];

	poller_snippet(r->body, r->len, snip, sizeof(snip));
	rp->err = r->status >= 500 ? PERR_HTTP5XX : PERR_MALFORMED;
	snprintf(rp->detail, sizeof(rp->detail), "status=%ld %s, body=\"%s\"",
	    r->status, rp->desc, snip);
}

/* Frames are lines: an update sliced with a line break is re-encoded. */
static int
poller_slice_ok(const char *body, const struct poller_slice *s)
{
	return memchr(body + s->off, '\n', s->len) == NULL &&
	    memchr(body + s->off, '\r', s->len) == NULL;
}

/*
 * The fast path for the common reply, {"ok":true,"result":[updates]}: a
 * checked body read without building a tree (jscan.h).  0 with rp->ids
 * and rp->slices set; -1 for anything else, which jansson then parses
 * (and explains).
 */
static int
poller_parse_fast(const struct http_response *r, struct poller_reply *rp)
{
	struct jspan root, v, u, id;
	const char *it = NULL;
	size_t n = 0, cap = 0;
	int64_t x;

	if (r->status != 200 || !jscan_check(r->body, r->len))
		return -1;
	root = jscan_span(r->body, r->len);
	if (jscan_member(root, "ok", &v) == -1 || jscan_kind(v) != 't' ||
	    jscan_member(root, "result", &v) == -1 || jscan_kind(v) != '[')
		return -1;
	while (jscan_next(v, &it, &u)) {
		if (n == POLLER_ELEMS_MAX)
			goto slow;
		if (n == cap) {
			cap = cap ? cap * 2 : POLLER_LIMIT_MAX;
			rp->ids = xreallocarray(rp->ids, cap, sizeof(*rp->ids));
			rp->slices = xreallocarray(rp->slices, cap,
			    sizeof(*rp->slices));
		}
		/* as poller_update_ok(): id + 1 becomes the offset */
		if (jscan_member(u, "update_id", &id) == -1 ||
		    jscan_kind(id) != 'n' || jscan_int(id, &x) == -1 ||
		    x < 0 || x == INT64_MAX)
			goto slow;
		rp->ids[n] = x;
		rp->slices[n].off = (size_t)(u.p - r->body);
		rp->slices[n].len = (size_t)(u.e - u.p);
		/* no tree to re-encode from: jansson's path does that */
		if (!poller_slice_ok(r->body, &rp->slices[n]))
			goto slow;
		n++;
	}
	rp->n = n;
	rp->body = r->body;
	return 0;
slow:
	free(rp->ids);
	free(rp->slices);
	rp->ids = NULL;
	rp->slices = NULL;
	return -1;
}

/*
 * Slices of the updates in the body, when they match the parsed ones; a
 * slice with a line break is dropped (-1 length): that update is encoded
 * from the tree.
 */
static void
poller_slice_reply(struct poller_reply *rp, const struct http_response *r)
{
	size_t i, n = json_array_size(rp->result);

	rp->n = n;
	/* dropped elements would shift the match: encode them all then */
	if (n == 0 || rp->bad > 0)
		return;
	rp->slices = xcalloc(n, sizeof(*rp->slices));
	if (poller_slices(r->body, r->len, rp->slices, n) != (int)n) {
		free(rp->slices);
		rp->slices = NULL;
		return;
	}
	for (i = 0; i < n; i++)
		if (!poller_slice_ok(r->body, &rp->slices[i]))
			rp->slices[i].len = SIZE_MAX;
	rp->body = r->body;
}

/* Sort a reply into success (PERR_NONE, rp->result set) or a class. */

static void
poller_classify(enum poller_phase ph, const struct http_response *r,
    struct poller_reply *rp)
{
	json_t *root = NULL, *res = NULL;
	int rc, code = 0;

	memset(rp, 0, sizeof(*rp));
	if (r->curl_code != 0) {
		rp->err = PERR_TRANSPORT;
		snprintf(rp->detail, sizeof(rp->detail), "curl=%d %s",
		    r->curl_code, r->error);
		return;
	}
	if (ph == PHASE_POLL && poller_parse_fast(r, rp) == 0)
		return;
	if (ph == PHASE_POLL)
		rc = poller_parse(r->body, r->len, &rp->result, &rp->bad, &code,
		    &rp->retry_after, rp->desc, sizeof(rp->desc));
	else {
		rc = poller_parse_reply(r->body, r->len, &root, &res, &code,
		    &rp->retry_after, rp->desc, sizeof(rp->desc));
		if (rc == 0 && ph == PHASE_GETME && !json_is_object(res)) {
			snprintf(rp->desc, sizeof(rp->desc),
			    "getMe result is not an object");
			rc = -1;
		}
		if (rc == 0)
			rp->result = json_incref(res);
		json_decref(root);
	}
	if (rc == 1)
		poller_classify_error(rp, r->status, code);
	else if (rc == -1 && (r->status == 401 || r->status == 404))
		poller_classify_error(rp, r->status, 0);
	else if (rc == -1)
		poller_classify_bad(rp, r);
	else if (r->status != 200) {
		snprintf(rp->desc, sizeof(rp->desc), "ok:true with HTTP %ld",
		    r->status);
		poller_classify_bad(rp, r);
	} else if (rp->bad > 0 && json_array_size(rp->result) == 0) {
		/* nothing to confirm them with: fetching again would spin */
		snprintf(rp->desc, sizeof(rp->desc), "%zu updates without a "
		    "valid update_id and nothing else", rp->bad);
		poller_classify_bad(rp, r);
	}
	if (rp->err != PERR_NONE) {
		json_decref(rp->result);
		rp->result = NULL;
	} else if (ph == PHASE_POLL)
		poller_slice_reply(rp, r);
}

/* --- failures and back-off ----------------------------------------------- */

static void
poller_count(struct poller *p, enum poller_err e)
{
	p->stats.errors++;
	switch (e) {
	case PERR_TRANSPORT:	p->stats.err_transport++; break;
	case PERR_HTTP5XX:	p->stats.err_http5xx++; break;
	case PERR_429:		p->stats.err_429++; break;
	case PERR_409:		p->stats.err_409++; break;
	case PERR_MALFORMED:	p->stats.err_malformed++; break;
	default:		break;
	}
}

static const char *
poller_conflict_hint(const char *desc)
{
	if (strstr(desc, "webhook is active") != NULL)
		return "a webhook is set: run with delete_webhook = yes or "
		    "call deleteWebhook";
	if (strstr(desc, "terminated by other getUpdates") != NULL)
		return "another instance is polling with this token";
	return "conflict";
}

static void
poller_log_failure(struct poller *p, const struct poller_reply *rp)
{
	const char *m = poller_phase_method(p->phase);

	if (rp->err == p->fail_err) {
		log_debug("%s failed again (%d): %s: %s", m, p->fails,
		    poller_err_str(rp->err), rp->detail);
		return;
	}
	if (rp->err == PERR_409)
		log_warnx("%s: %s (%s)", m, poller_conflict_hint(rp->desc),
		    rp->detail);
	else if (rp->err == PERR_STORE)
		log_warnx("%s: could not store the batch; fetching it again", m);
	else
		log_warnx("%s failed: %s: %s", m, poller_err_str(rp->err),
		    rp->detail);
}

static void
poller_schedule(struct poller *p, int64_t ms)
{
	struct timeval tv;

	tv = tv_ms(ms);
	poller_set_state(p, POLL_BACKOFF);
	evtimer_add(p->timer, &tv);
}

static void
poller_fatal(struct poller *p, const struct poller_reply *rp)
{
	char why[256];

	snprintf(why, sizeof(why), "Telegram rejected the bot token (%s)",
	    strstr(rp->detail, "error_code=404") != NULL ?
	    "404 Not Found" : "401 Unauthorized");
	poller_set_state(p, POLL_STOPPED);
	log_errx("%s: %s", poller_phase_method(p->phase), why);
	p->ops->fatal(p->arg, EXIT_BADTOKEN, why);
}

static void
poller_fail(struct poller *p, const struct poller_reply *rp)
{
	int64_t ms;

	poller_count(p, rp->err);
	if (rp->err == PERR_BADTOKEN) {
		poller_fatal(p, rp);
		return;
	}
	if (p->fails == 0)
		p->fail_since = mono_ms();
	p->fails++;
	poller_log_failure(p, rp);
	p->fail_err = rp->err;
	if (rp->err == PERR_429 && rp->retry_after > 0)
		ms = (int64_t)(rp->retry_after > POLLER_RETRY_AFTER_MAX ?
		    POLLER_RETRY_AFTER_MAX : rp->retry_after) * 1000;
	else
		ms = poller_backoff_ms(p->fails, p->conf->backoff_min,
		    p->conf->backoff_max, poller_rand01(p));
	if (ms < p->conf->backoff_min)
		ms = p->conf->backoff_min;
	poller_schedule(p, ms);
}

static void
poller_succeeded(struct poller *p)
{
	if (p->fails > 0)
		log_notice("%s recovered after %d failure%s in %.1f s",
		    poller_phase_method(p->phase), p->fails,
		    p->fails == 1 ? "" : "s",
		    (double)(mono_ms() - p->fail_since) / 1000.0);
	p->fails = 0;
	p->fail_err = PERR_NONE;
}

/* --- requests ------------------------------------------------------------ */

static void	poller_on_reply(void *, const struct http_response *);

static int
poller_post(struct poller *p, const char *method, const char *body,
    long timeout_ms)
{
	char url[2048];

	snprintf(url, sizeof(url), "%s%s", p->url, method);
	p->sent = mono_ms();
	p->req = http_post(p->http, url, "application/json", body,
	    strlen(body), timeout_ms, poller_on_reply, p);
	explicit_bzero(url, sizeof(url));	/* curl has its copy */
	return p->req == NULL ? -1 : 0;
}

static void
poller_local_failure(struct poller *p, const char *what)
{
	struct poller_reply rp;

	memset(&rp, 0, sizeof(rp));
	rp.err = PERR_TRANSPORT;
	snprintf(rp.detail, sizeof(rp.detail), "%s", what);
	poller_fail(p, &rp);
}

static void
poller_poll(struct poller *p)
{
	char body[4096];
	size_t room;
	int n;

	room = p->ops->room(p->arg);
	if (p->dying || p->state == POLL_PAUSED || p->state == POLL_STOPPED)
		return;
	/* this getUpdates would confirm a batch that is not durable yet */
	if (p->unsynced) {
		poller_set_state(p, POLL_SYNCING);
		return;
	}
	if (room == 0) {
		poller_set_state(p, POLL_FULL);
		return;
	}
	if (p->ops->before_poll != NULL)
		p->ops->before_poll(p->arg);
	n = snprintf(body, sizeof(body), "{\"offset\":%" PRId64 ",\"limit\":%zu,"
	    "\"timeout\":%" PRId64 ",\"allowed_updates\":%s}", p->offset,
	    room < POLLER_LIMIT_MAX ? room : POLLER_LIMIT_MAX,
	    p->conf->poll_timeout / 1000, p->allowed);
	if (n < 0 || (size_t)n >= sizeof(body)) {
		poller_local_failure(p, "request body too long");
		return;
	}
	p->stats.polls++;
	if (poller_post(p, "getUpdates", body,
	    (long)(p->conf->poll_timeout + POLLER_HTTP_SLACK)) == -1) {
		poller_local_failure(p, "cannot start the request");
		return;
	}
	poller_set_state(p, POLL_POLLING);
}

/* Send whatever the current phase needs. */
static void
poller_issue(struct poller *p)
{
	char body[64];

	switch (p->phase) {
	case PHASE_GETME:
		snprintf(body, sizeof(body), "{}");
		break;
	case PHASE_WEBHOOK:
		snprintf(body, sizeof(body), "{\"drop_pending_updates\":%s}",
		    p->conf->drop_pending_updates ? "true" : "false");
		break;
	case PHASE_POLL:
		poller_poll(p);
		return;
	}
	if (poller_post(p, poller_phase_method(p->phase), body,
	    POLLER_CALL_TIMEOUT) == -1) {
		poller_local_failure(p, "cannot start the request");
		return;
	}
	poller_set_state(p, POLL_STARTING);
}

static void
poller_timer_event(evutil_socket_t fd, short what, void *arg)
{
	struct poller *p = arg;

	if (p->state != POLL_BACKOFF)
		return;
	p->busy++;
	poller_issue(p);
	p->busy--;
	if (p->dying && p->busy == 0)
		poller_free(p);
}

/*
 * The text of update i: its usable slice of the body, else a compact
 * encoding (*owned then).
 */
static const char *
poller_update_text(const struct poller_reply *rp, size_t i, json_t *u,
    size_t *len, char **owned)
{
	*owned = NULL;
	if (rp->slices != NULL && rp->slices[i].len != SIZE_MAX) {
		*len = rp->slices[i].len;
		return rp->body + rp->slices[i].off;
	}
	if ((*owned = json_dumps(u, JSON_COMPACT)) == NULL)
		fatalx(EXIT_NOMEM, "%s: json_dumps", __func__);
	*len = strlen(*owned);
	return *owned;
}

/*
 * Telegram sends a batch in increasing id order.  Ids that repeat or go
 * back mean a second poller or a broken API: said, with the ids, and
 * counted; the journal puts them in order and keeps a repeated id once.
 */
static void
poller_check_order(struct poller *p, const int64_t *ids, size_t n)
{
	char list[256];
	size_t i, len = 0, bad = 0;
	int w;

	list[0] = '\0';
	for (i = 1; i < n; i++) {
		if (ids[i] > ids[i - 1])
			continue;
		bad++;
		if (len < sizeof(list)) {
			w = snprintf(list + len, sizeof(list) - len, "%s%" PRId64
			    " after %" PRId64, len > 0 ? ", " : "", ids[i],
			    ids[i - 1]);
			len += w > 0 ? (size_t)w : 0;
		}
	}
	if (bad == 0)
		return;
	p->stats.misordered += bad;
	log_warnx("getUpdates: %zu update id(s) of %zu repeat or go back "
	    "within one batch (%s%s): a second poller, or a broken Bot API; "
	    "they are put in order, an id is kept once", bad, n, list,
	    len >= sizeof(list) ? " ..." : "");
}

/* Hand a batch over: as ops->batch (0 durable, 1 accepted, -1 failed). */
static int
poller_deliver(struct poller *p, const struct poller_reply *rp)
{
	size_t i, n = rp->n;
	int64_t *ids, next = 0;
	const char **jsons;
	char **owned;
	size_t *lens;
	json_t *u;
	int rc = -1;

	ids = xcalloc(n, sizeof(*ids));
	jsons = xcalloc(n, sizeof(*jsons));
	owned = xcalloc(n, sizeof(*owned));
	lens = xcalloc(n, sizeof(*lens));
	for (i = 0; i < n; i++) {
		u = rp->result != NULL ? json_array_get(rp->result, i) : NULL;
		ids[i] = rp->ids != NULL ? rp->ids[i] :
		    json_integer_value(json_object_get(u, "update_id"));
		jsons[i] = poller_update_text(rp, i, u, &lens[i], &owned[i]);
		/* Telegram: offset = highest id received + 1 */
		if (i == 0 || ids[i] + 1 > next)
			next = ids[i] + 1;
	}
	poller_check_order(p, ids, n);
	if ((rc = p->ops->batch(p->arg, ids, jsons, lens, n)) >= 0) {
		p->offset = next;
		p->stats.updates += n;
		if (rc == 1)
			p->unsynced = 1;
	}
	for (i = 0; i < n; i++)
		free(owned[i]);
	free(ids);
	free(jsons);
	free(owned);
	free(lens);
	return rc;
}

static void
poller_got_updates(struct poller *p, struct poller_reply *rp)
{
	size_t n = rp->n;

	p->last_ok = (int64_t)time(NULL);
	if (rp->bad > 0)
		log_warnx("getUpdates: dropped %zu elements without a valid "
		    "update_id", rp->bad);
	if (n > 0 && poller_deliver(p, rp) == -1) {
		if (p->dying || p->state != POLL_POLLING)
			return;
		rp->err = PERR_STORE;
		poller_fail(p, rp);
		return;
	}
	if (p->dying || p->state != POLL_POLLING)
		return;
	poller_succeeded(p);
	/* an empty answer faster than backoff_min (timeout 0, odd server) */
	if (n == 0 && mono_ms() - p->sent < p->conf->backoff_min) {
		poller_schedule(p, p->conf->backoff_min);
		return;
	}
	poller_poll(p);
}

static void
poller_got_call(struct poller *p, struct poller_reply *rp)
{
	if (p->phase == PHASE_GETME) {
		p->ops->ready(p->arg, rp->result);
		if (p->dying || p->state != POLL_STARTING)
			return;
		p->phase = p->conf->delete_webhook ? PHASE_WEBHOOK : PHASE_POLL;
	} else {
		p->phase = PHASE_POLL;
	}
	poller_succeeded(p);
	if (p->phase == PHASE_POLL)
		log_info("poller: polling getUpdates from offset %" PRId64,
		    p->offset);
	poller_issue(p);
}

static void
poller_on_reply(void *arg, const struct http_response *r)
{
	struct poller *p = arg;
	struct poller_reply rp;

	p->req = NULL;
	poller_classify(p->phase, r, &rp);
	p->busy++;
	if (rp.err != PERR_NONE)
		poller_fail(p, &rp);
	else if (p->phase == PHASE_POLL)
		poller_got_updates(p, &rp);
	else
		poller_got_call(p, &rp);
	json_decref(rp.result);
	free(rp.ids);
	free(rp.slices);
	p->busy--;
	if (p->dying && p->busy == 0)
		poller_free(p);
}

/* --- public -------------------------------------------------------------- */

/*
 * allowed_updates as sent with every getUpdates: compact JSON text.  Not
 * set: [], which asks Telegram for its default set, types newer than this
 * tgrunnerd included (keys.c keys those by a fallback).  Always sent,
 * since Telegram otherwise keeps what the last caller asked for.
 */
static char *
poller_allowed_text(const struct conf *c)
{
	json_t *a = NULL;
	char *s;

	if (c->allowed_updates != NULL &&
	    !json_is_array(a = json_loads(c->allowed_updates, 0, NULL))) {
		log_warnx("%s: allowed_updates is not a JSON array; using "
		    "Telegram's default set", __func__);
		json_decref(a);
		a = NULL;
	}
	if (a == NULL)
		a = json_array();
	if ((s = json_dumps(a, JSON_COMPACT)) == NULL)
		fatalx(EXIT_NOMEM, "%s: json_dumps", __func__);
	json_decref(a);
	return s;
}

/*
 * A new poller on base, using http (not owned) and conf (not copied: it
 * must outlive the poller).  The caller frees it with poller_free().
 * ops->batch gets strings the poller owns and frees after it returns;
 * ops->ready gets a borrowed User object.
 */
struct poller *
poller_new(struct event_base *base, struct http *http, const struct conf *conf,
    const char *token, const struct poller_ops *ops, void *arg)
{
	struct poller *p;
	struct timespec ts;

	p = xcalloc(1, sizeof(*p));
	p->base = base;
	p->http = http;
	p->conf = conf;
	p->ops = ops;
	p->arg = arg;
	p->state = POLL_IDLE;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	p->rnd = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
	    ((uint64_t)getpid() << 40) ^ 0x9e3779b97f4a7c15ULL;
	p->url = token_url(conf->api_url, token);
	p->allowed = poller_allowed_text(conf);
	p->timer = evtimer_new(base, poller_timer_event, p);
	if (p->allowed == NULL || p->timer == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	return p;
}

void
poller_free(struct poller *p)
{
	if (p == NULL)
		return;
	if (p->req != NULL) {
		http_cancel(p->req);
		p->req = NULL;
	}
	if (p->timer != NULL)
		evtimer_del(p->timer);
	if (p->busy > 0) {
		/* called from one of our ops: free when it returns */
		p->dying = 1;
		return;
	}
	if (p->timer != NULL)
		event_free(p->timer);
	token_free(p->url);
	free(p->allowed);
	free(p);
}

static void
poller_stop_io(struct poller *p)
{
	if (p->req != NULL) {
		http_cancel(p->req);
		p->req = NULL;
	}
	evtimer_del(p->timer);
}

void
poller_start(struct poller *p, int64_t offset)
{
	poller_stop_io(p);
	p->offset = offset;
	p->phase = PHASE_GETME;
	p->started = 1;
	p->fails = 0;
	p->fail_err = PERR_NONE;
	poller_set_state(p, POLL_STARTING);
	poller_issue(p);
}

void
poller_durable(struct poller *p)
{
	p->unsynced = 0;
	if (p->state == POLL_SYNCING)
		poller_poll(p);
}

void
poller_kick(struct poller *p)
{
	if (p->state == POLL_FULL)
		poller_poll(p);
}

void
poller_pause(struct poller *p)
{
	if (p->state == POLL_STOPPED || p->state == POLL_PAUSED)
		return;
	poller_stop_io(p);
	poller_set_state(p, POLL_PAUSED);
}

void
poller_resume(struct poller *p)
{
	if (p->state != POLL_PAUSED)
		return;
	if (!p->started) {
		poller_set_state(p, POLL_IDLE);
		return;
	}
	/* keep honouring the back-off of a failure streak */
	if (p->fails > 0) {
		poller_schedule(p, poller_backoff_ms(p->fails,
		    p->conf->backoff_min, p->conf->backoff_max,
		    poller_rand01(p)));
		return;
	}
	poller_set_state(p, p->phase == PHASE_POLL ? POLL_POLLING :
	    POLL_STARTING);
	poller_issue(p);
}

enum poll_state
poller_state(const struct poller *p)
{
	return p->state;
}

int64_t
poller_last_ok(const struct poller *p)
{
	return p->last_ok;
}

int64_t
poller_offset(const struct poller *p)
{
	return p->offset;
}

const struct poller_stats *
poller_stats(const struct poller *p)
{
	return &p->stats;
}

void
poller_metrics(const struct poller *p, struct evbuffer *out)
{
	const struct poller_stats *pl = &p->stats;

	metrics_counter(out, "tgrunner_polls_total", "getUpdates requests.",
	    pl->polls);
	evbuffer_add_printf(out, "# HELP tgrunner_poll_errors_total getUpdates "
	    "failures by class.\n# TYPE tgrunner_poll_errors_total counter\n"
	    "tgrunner_poll_errors_total{class=\"5xx\"} %llu\n"
	    "tgrunner_poll_errors_total{class=\"429\"} %llu\n"
	    "tgrunner_poll_errors_total{class=\"409\"} %llu\n"
	    "tgrunner_poll_errors_total{class=\"transport\"} %llu\n"
	    "tgrunner_poll_errors_total{class=\"malformed\"} %llu\n",
	    (unsigned long long)pl->err_http5xx, (unsigned long long)pl->err_429,
	    (unsigned long long)pl->err_409,
	    (unsigned long long)pl->err_transport,
	    (unsigned long long)pl->err_malformed);
	metrics_gauge(out, "tgrunner_last_poll_success_timestamp_seconds",
	    "Time of the last successful getUpdates.", p->last_ok);
	metrics_counter(out, "tgrunner_updates_misordered_total", "Update ids "
	    "that repeated or went back within a getUpdates batch.",
	    pl->misordered);
}

/*
 * Bot API calls for workers.  Each session key has a FIFO of calls of which
 * only the head is ever past AC_QUEUED; the heads of all keys (and unkeyed
 * calls) wait in one runnable FIFO for one of api_max_inflight request
 * slots.  Just before a call takes a slot, flood control admits it or parks
 * it on a scope: its chat (from params.chat_id), or the global scope.
 *
 *   - A 429 pause of the global scope or of the call's chat holds every
 *     call, messages or not.
 *   - A message (flood_cost() > 0) needs room in its chat's limiter and
 *     in the global one (a sliding window or a token bucket, flood.h), and
 *     never overtakes messages already waiting on either: each scope is a
 *     FIFO.
 *
 * A parked call holds no slot, and since it is still the head of its key
 * nothing of that key overtakes it, while other keys go on.  Scopes with
 * parked calls sit in a min-heap by the time their first call may go, and
 * one timer is set for the top.  A woken message is "held": its scope wakes
 * no other message until that one has taken its tokens or parked again, so
 * tokens are counted once, when the request starts.
 *
 * A 429 parks the call first in line on its scope, pauses the scope for
 * retry_after seconds and empties its bucket; the call is retried after the
 * pause, up to max_call_retries times.
 *
 * Fair queues: calls are counted per session key and per worker (the
 * worker that made them, struct api_from).  A key or worker that reaches
 * its bound (conf_calls_per_key/worker) is "over" until its count falls to
 * half the bound: api_bounded() tells the caller to refuse its new calls,
 * and api_on_bound's callback to hold back its updates.  The calls of
 * workers that are over do not count towards api_gated(), the number the
 * daemon pauses every chat on, so that one worker cannot pause them all.
 *
 * A call whose params hold file objects (upload.h) goes out as
 * multipart/form-data; its files are opened (or decoded) once, when the call
 * is accepted, and every try streams them again from the same fds.  A call
 * whose files are refused never reaches Telegram: the worker gets a 400
 * "tgrunner: ..." result from the loop at once.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <uthash.h>

#include "api.h"
#include "conf.h"
#include "flood.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "tailq.h"
#include "timeutil.h"
#include "token.h"
#include "upload.h"
#include "xmalloc.h"

#define API_HTTP_TIMEOUT_MS	60000
#define API_RETRY_AFTER_MAX	3600
#define API_SWEEP_MS		10000	/* forget idle scopes this often */
#define API_HEAP_INIT		16
#define API_NOT_IN_HEAP		SIZE_MAX
#define API_UPLOAD_BPMS		256	/* bytes/ms an upload gets in its timeout */

struct akey;
struct ascope;
struct aworker;

/*
 * Finished calls by method and outcome, for metrics.  The first
 * API_METHODS_MAX method names get a row each; the rest share "other".
 */
#define API_METHODS_MAX	32
enum api_outcome { API_OK, API_ERR_4XX, API_ERR_429, API_ERR_5XX,
	API_ERR_NET, API_OUTCOMES };
struct api_method_stat {
	char		method[65];
	uint64_t	n[API_OUTCOMES];
};

enum acall_state {
	AC_QUEUED,	/* behind the head of its key */
	AC_RUNNABLE,	/* on api->runnable, for a request slot */
	AC_PARKED,	/* on a scope's queue: a pause or tokens */
	AC_BACKOFF,	/* on api->backoff, its retry timer set */
	AC_INFLIGHT	/* its HTTP request runs */
};

TAILQ_HEAD(acallq, acall);

struct acall {
	struct api		*api;
	struct akey		*key;		/* NULL: unordered */
	struct aworker		*worker;	/* who made it; NULL: nobody */
	int64_t			 update;	/* the update it is for; 0: none */
	int			 nolimit;	/* API_NOLIMIT: owed, never dropped */
	struct ascope		*scope;		/* chat of params.chat_id or NULL */
	enum acall_state	 state;
	char			 method[65];
	char			*body;
	size_t			 len;
	struct upload		*upload;	/* NULL: the body is JSON */
	api_cb			 cb;
	void			*arg;
	int			 tries;
	int			 flags;		/* API_HOLD ... */
	int			 sent;		/* a request went out: may be done */
	int			 failed;	/* could not start: report */
	int			 fail_code;	/* with fail_desc: refused */
	char			*fail_desc;
	int64_t			 cost;		/* messages; 0: no tokens needed */
	struct ascope		*park;		/* AC_PARKED: on this scope */
	struct acallq		*parkq;		/* AC_PARKED: in this queue of it */
	struct ascope		*first;		/* first in line on this scope */
	struct ascope		*hold;		/* this scope's messages wait */
	int64_t			 parked_at;
	int			 throttled;	/* counted in stats */
	struct http_req		*req;
	struct event		*retry;
	TAILQ_ENTRY(acall)	 kentry;	/* key->calls */
	TAILQ_ENTRY(acall)	 rentry;	/* runnable, backoff, a scope queue */
	TAILQ_ENTRY(acall)	 aentry;	/* api->all */
};

struct akey {
	char			*name;
	TAILQ_HEAD(, acall)	 calls;		/* head is past AC_QUEUED */
	size_t			 n;		/* calls, for its bound */
	int			 over;		/* past max_calls_per_key */
	UT_hash_handle		 hh;
};

/* A worker with calls queued; forgotten when it has none. */
struct aworker {
	int			 id;
	size_t			 n;
	int			 over;		/* past max_calls_per_worker */
	int			 dead;		/* api_worker_gone() */
	UT_hash_handle		 hh;
};

struct ascope {
	char			*name;		/* "p:42", "g:@chan"; "" global */
	enum flood_scope	 kind;		/* NONE: the global scope */
	size_t			 refs;		/* calls whose scope this is */
	struct flood_bucket	 bucket;
	int64_t			 paused_until;	/* ms, after a 429 */
	struct acallq		 msgq;		/* messages: pause or tokens */
	struct acallq		 otherq;	/* other calls: the pause */
	struct acall		*held;		/* msgq's woken head */
	int64_t			 ready_at;	/* ms; the heap's order */
	size_t			 heapidx;
	UT_hash_handle		 hh;
};

struct api {
	struct event_base	*base;
	struct http		*http;
	const struct conf	*conf;
	char			*prefix;	/* api_url/bot<token>/ */
	struct akey		*keys;
	struct ascope		*scopes;	/* chats, by name */
	size_t			 nscopes;
	struct ascope		 global;
	struct ascope		**heap;		/* scopes with parked calls */
	size_t			 nheap;
	size_t			 heapcap;	/* > nscopes: inserts never fail */
	struct event		*timer;		/* the heap's top is due */
	struct acallq		 all;
	struct acallq		 runnable;
	struct acallq		 backoff;	/* in a retry pause */
	size_t			 queued;
	size_t			 over_calls;	/* of workers that are over */
	size_t			 keys_over, workers_over;
	struct aworker		*workers;
	void			(*bound_cb)(void *, const char *, int, int);
	void			*bound_arg;
	size_t			 inflight;
	size_t			 held;		/* answered, slot kept: API_HOLD */
	int			 stopped;	/* api_stop() */
	size_t			 waiting;	/* AC_PARKED */
	int64_t			 last_sweep;
	struct api_stats	 stats;
	void			(*release_cb)(void *);
	void			*release_arg;
	struct api_method_stat	 by_method[API_METHODS_MAX + 1];	/* + "other" */
	size_t			 nmethods;
	int			 updir;		/* upload_dir's fd, or -1 */
	char			*updir_path;	/* what updir is, or NULL */
	int			 updir_errno;	/* last failure to open it, logged */
};

static void	api_pump(struct api *);

int
api_method_valid(const char *m)
{
	size_t n = 0;

	for (; m[n] != '\0'; n++)
		if (!isalnum((unsigned char)m[n]) && m[n] != '_')
			return 0;
	return n > 0 && n <= 64;
}

/* Calls that change nothing may be repeated after a network error. */
static int
method_idempotent(const char *m)
{
	return strncmp(m, "get", 3) == 0;
}

static const char *
scope_name(const struct api *a, const struct ascope *s)
{
	return s == &a->global ? "the bot" : s->name;
}

static const struct flood_rate *
scope_rate(const struct api *a, const struct ascope *s)
{
	switch (s->kind) {
	case FLOOD_SCOPE_PRIVATE:
		return &a->conf->flood_chat_rate;
	case FLOOD_SCOPE_GROUP:
		return &a->conf->flood_group_rate;
	case FLOOD_SCOPE_NONE:
		break;
	}
	return &a->conf->flood_global_rate;
}

static void
scope_init(struct ascope *s, enum flood_scope kind)
{
	s->kind = kind;
	s->heapidx = API_NOT_IN_HEAP;
	TAILQ_INIT(&s->msgq);
	TAILQ_INIT(&s->otherq);
}

/* --- the heap of scopes, by ready_at ------------------------------------ */

static void
heap_swap(struct api *a, size_t i, size_t j)
{
	struct ascope *t = a->heap[i];

	a->heap[i] = a->heap[j];
	a->heap[j] = t;
	a->heap[i]->heapidx = i;
	a->heap[j]->heapidx = j;
}

static void
heap_up(struct api *a, size_t i)
{
	while (i > 0 && a->heap[i]->ready_at < a->heap[(i - 1) / 2]->ready_at) {
		heap_swap(a, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void
heap_down(struct api *a, size_t i)
{
	size_t l, m;

	for (;;) {
		m = i;
		l = 2 * i + 1;
		if (l < a->nheap && a->heap[l]->ready_at < a->heap[m]->ready_at)
			m = l;
		if (l + 1 < a->nheap &&
		    a->heap[l + 1]->ready_at < a->heap[m]->ready_at)
			m = l + 1;
		if (m == i)
			return;
		heap_swap(a, i, m);
		i = m;
	}
}

static void
heap_remove(struct api *a, struct ascope *s)
{
	size_t i = s->heapidx;

	s->heapidx = API_NOT_IN_HEAP;
	if (i != --a->nheap) {
		a->heap[i] = a->heap[a->nheap];
		a->heap[i]->heapidx = i;
		heap_up(a, i);
		heap_down(a, a->heap[i]->heapidx);
	}
}

/* ms of the first message of msgq may go; INT64_MAX: none or held. */
static int64_t
scope_msg_ready(const struct api *a, struct ascope *s, int64_t now)
{
	struct acall	*c = TAILQ_FIRST(&s->msgq);
	int64_t		 t = s->paused_until, w;

	if (c == NULL || s->held != NULL)
		return INT64_MAX;
	if (a->conf->flood_control) {
		w = now + flood_wait_ms(&s->bucket, scope_rate(a, s), c->cost,
		    now);
		if (w > t)
			t = w;
	}
	return t;
}

/* ms s has a call to wake; INT64_MAX: none. */
static int64_t
scope_ready(const struct api *a, struct ascope *s, int64_t now)
{
	int64_t t = scope_msg_ready(a, s, now);

	if (!TAILQ_EMPTY(&s->otherq) && s->paused_until < t)
		t = s->paused_until;
	return t;
}

/* After any change to s: its place in the heap, or out of it. */
static void
scope_update(struct api *a, struct ascope *s, int64_t now)
{
	int64_t t = scope_ready(a, s, now);

	s->ready_at = t;
	if (t == INT64_MAX) {
		if (s->heapidx != API_NOT_IN_HEAP)
			heap_remove(a, s);
		return;
	}
	if (s->heapidx == API_NOT_IN_HEAP) {
		s->heapidx = a->nheap;
		a->heap[a->nheap++] = s;
	}
	heap_up(a, s->heapidx);
	heap_down(a, s->heapidx);
}

/* The scope of a chat; the heap grows first, so it always has room. */
static struct ascope *
scope_get(struct api *a, enum flood_scope kind, const char *name)
{
	struct ascope	*s, **h;
	size_t		 cap;

	HASH_FIND_STR(a->scopes, name, s);
	if (s != NULL)
		return s;
	if (a->nscopes + 2 > a->heapcap) {
		cap = a->heapcap * 2;
		h = xreallocarray(a->heap, cap, sizeof(*h));
		a->heap = h;
		a->heapcap = cap;
	}
	s = xcalloc(1, sizeof(*s));
	s->name = xstrdup(name);
	scope_init(s, kind);
	HASH_ADD_KEYPTR(hh, a->scopes, s->name, strlen(s->name), s);
	a->nscopes++;
	return s;
}

static void
scope_free(struct api *a, struct ascope *s)
{
	HASH_DEL(a->scopes, s);
	a->nscopes--;
	flood_clear(&s->bucket);
	free(s->name);
	free(s);
}

/* A scope no call uses, unpaused and full is as good as a new one. */
static void
api_sweep(struct api *a, int64_t now)
{
	struct ascope *s, *t;

	if (now - a->last_sweep < API_SWEEP_MS)
		return;
	a->last_sweep = now;
	HASH_ITER(hh, a->scopes, s, t)
		if (s->refs == 0 && s->paused_until <= now &&
		    flood_full(&s->bucket, scope_rate(a, s), now))
			scope_free(a, s);
}

/* --- flood control -------------------------------------------------------- */

/* c was woken from s's messages: s may wake the next one. */
static void
api_unhold(struct api *a, struct acall *c, int64_t now)
{
	struct ascope *s = c->hold;

	if (s == NULL)
		return;
	s->held = NULL;
	c->hold = NULL;
	scope_update(a, s, now);
}

/* Must message c wait on s: older messages waiting there, or no tokens? */
static int
api_must_wait(struct api *a, struct acall *c, struct ascope *s, int64_t now)
{
	if (c->first != s && (!TAILQ_EMPTY(&s->msgq) ||
	    (s->held != NULL && s->held != c)))
		return 1;
	return flood_wait_ms(&s->bucket, scope_rate(a, s), c->cost, now) > 0;
}

/* NULL: c may start now (its tokens are taken); else the scope to wait on. */
static struct ascope *
api_admit(struct api *a, struct acall *c, int64_t now)
{
	struct ascope *g = &a->global, *s = c->scope;

	if (g->paused_until > now)
		return g;
	if (s != NULL && s->paused_until > now)
		return s;
	if (!a->conf->flood_control || c->cost == 0)
		return NULL;
	if (s != NULL && api_must_wait(a, c, s, now))
		return s;
	if (api_must_wait(a, c, g, now))
		return g;
	if (s != NULL) {
		flood_take(&s->bucket, scope_rate(a, s), c->cost, now);
		scope_update(a, s, now);
	}
	flood_take(&g->bucket, scope_rate(a, g), c->cost, now);
	scope_update(a, g, now);
	return NULL;
}

static void
api_park(struct api *a, struct acall *c, struct ascope *s, int64_t now)
{
	struct acallq *q = a->conf->flood_control && c->cost > 0 ?
	    &s->msgq : &s->otherq;

	api_unhold(a, c, now);
	c->state = AC_PARKED;
	c->park = s;
	c->parkq = q;
	c->parked_at = now;
	if (c->first == s)
		TAILQ_INSERT_HEAD(q, c, rentry);
	else
		TAILQ_INSERT_TAIL(q, c, rentry);
	a->waiting++;
	if (!c->throttled) {
		c->throttled = 1;
		a->stats.throttled++;
	}
	log_debug("method=%s: waits for %s", c->method, scope_name(a, s));
	scope_update(a, s, now);
}

static void
api_unpark(struct api *a, struct acall *c, struct acallq *q,
    struct acallq *to, int64_t now)
{
	struct ascope *s = c->park;

	TAILQ_REMOVE(q, c, rentry);
	c->park = NULL;
	c->parkq = NULL;
	c->first = s;
	c->state = AC_RUNNABLE;
	a->waiting--;
	a->stats.throttled_ms += (uint64_t)(now - c->parked_at);
	TAILQ_INSERT_TAIL(to, c, rentry);
}

/* s is due: its pause is over, or its first message has tokens. */
static void
api_wake_scope(struct api *a, struct ascope *s, int64_t now,
    struct acallq *to)
{
	struct acall *c;

	if (s->paused_until <= now)
		while ((c = TAILQ_FIRST(&s->otherq)) != NULL)
			api_unpark(a, c, &s->otherq, to, now);
	if (scope_msg_ready(a, s, now) <= now) {
		c = TAILQ_FIRST(&s->msgq);
		api_unpark(a, c, &s->msgq, to, now);
		s->held = c;
		c->hold = s;
	}
	scope_update(a, s, now);
}

/* Due calls go first in the runnable queue: they were there before. */
static void
api_wake(struct api *a, int64_t now)
{
	struct acallq woke = TAILQ_HEAD_INITIALIZER(woke);

	while (a->nheap > 0 && a->heap[0]->ready_at <= now)
		api_wake_scope(a, a->heap[0], now, &woke);
	TAILQ_CONCAT(&woke, &a->runnable, rentry);
	TAILQ_CONCAT(&a->runnable, &woke, rentry);
}

static void
api_arm(struct api *a, int64_t now)
{
	struct timeval	tv;
	int64_t		ms;

	if (a->nheap == 0) {
		evtimer_del(a->timer);
		return;
	}
	ms = a->heap[0]->ready_at - now;
	if (ms < 0)
		ms = 0;
	tv = tv_ms(ms);
	evtimer_add(a->timer, &tv);
}

static void
api_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	api_pump(arg);
}

/* --- upload_dir ------------------------------------------------------------ */

static void
api_updir_close(struct api *a)
{
	if (a->updir != -1)
		close(a->updir);
	a->updir = -1;
	free(a->updir_path);
	a->updir_path = NULL;
}

/* (Re)open upload_dir; a failure is logged once until it changes. */
static void
api_updir_open(struct api *a)
{
	const char	*path = a->conf->upload_dir;
	int		 err;

	api_updir_close(a);
	if (path == NULL) {
		a->updir_errno = 0;
		return;
	}
	if ((a->updir = upload_dir_open(path)) == -1) {
		err = errno;
		if (err != a->updir_errno)
			log_warn("upload_dir %s: file references are refused "
			    "until it can be opened", path);
		a->updir_errno = err;
		return;
	}
	if (a->updir_errno != 0)
		log_notice("upload_dir %s: open", path);
	a->updir_errno = 0;
	a->updir_path = xstrdup(path);
}

/* upload_dir's fd for a new call, or -1 if none is set or it cannot open. */
static int
api_updir(struct api *a)
{
	const char *path = a->conf->upload_dir;

	if (path == NULL) {
		if (a->updir != -1)
			api_updir_close(a);
		return -1;
	}
	if (a->updir == -1 || strcmp(path, a->updir_path) != 0)
		api_updir_open(a);
	return a->updir;
}

/* --- calls ---------------------------------------------------------------- */

struct api *
api_new(struct event_base *base, struct http *http, const struct conf *conf,
    const char *token)
{
	struct api *a;

	a = xcalloc(1, sizeof(*a));
	a->base = base;
	a->http = http;
	a->conf = conf;
	TAILQ_INIT(&a->all);
	TAILQ_INIT(&a->runnable);
	TAILQ_INIT(&a->backoff);
	scope_init(&a->global, FLOOD_SCOPE_NONE);
	a->global.name = (char *)"";
	a->heapcap = API_HEAP_INIT;
	a->updir = -1;
	a->heap = xcalloc(a->heapcap, sizeof(*a->heap));
	if ((a->timer = evtimer_new(base, api_timer_cb, a)) == NULL)
		fatalx(EXIT_NOMEM, "%s: evtimer_new", __func__);
	a->prefix = token_url(conf->api_url, token);
	api_updir_open(a);
	return a;
}

static void
acall_free(struct acall *c)
{
	if (c->req != NULL)
		http_cancel(c->req);
	if (c->retry != NULL)
		event_free(c->retry);
	/* after the request: it reads the files until it is gone */
	upload_free(c->upload);
	free(c->fail_desc);
	free(c->body);
	free(c);
}

void
api_free(struct api *a)
{
	struct akey *k, *tk;
	struct ascope *s, *ts;
	struct aworker *w, *tw;
	struct acall *c;

	if (a == NULL)
		return;
	while ((c = TAILQ_FIRST(&a->all)) != NULL) {
		TAILQ_REMOVE(&a->all, c, aentry);
		acall_free(c);
	}
	HASH_ITER(hh, a->keys, k, tk) {
		HASH_DEL(a->keys, k);
		free(k->name);
		free(k);
	}
	HASH_ITER(hh, a->scopes, s, ts)
		scope_free(a, s);
	HASH_ITER(hh, a->workers, w, tw) {
		HASH_DEL(a->workers, w);
		free(w);
	}
	flood_clear(&a->global.bucket);
	event_free(a->timer);
	free(a->heap);
	token_free(a->prefix);
	api_updir_close(a);
	free(a);
}

/* --- fair queues ----------------------------------------------------------- */

static void
api_bound_notify(struct api *a, const char *key, int worker, int over)
{
	if (a->bound_cb != NULL)
		a->bound_cb(a->bound_arg, key, worker, over);
}

/* One call more (or less) for k: past its bound, or back under half of it. */
static void
api_key_count(struct api *a, struct akey *k, int more)
{
	size_t bound = (size_t)conf_calls_per_key(a->conf);

	if (more)
		k->n++;
	else
		k->n--;
	if (!k->over && k->n >= bound) {
		k->over = 1;
		a->keys_over++;
		log_warnx("key=%s: %zu calls queued, the most max_calls_per_key "
		    "allows: its call frames are answered 429 and its next "
		    "updates wait until half of them are done", k->name, k->n);
		api_bound_notify(a, k->name, 0, 1);
	} else if (k->over && k->n <= bound / 2) {
		k->over = 0;
		a->keys_over--;
		log_notice("key=%s: %zu calls queued: its updates run again",
		    k->name, k->n);
		api_bound_notify(a, k->name, 0, 0);
	}
}

static struct aworker *
api_worker_get(struct api *a, int id)
{
	struct aworker *w;

	HASH_FIND_INT(a->workers, &id, w);
	if (w == NULL) {
		w = xcalloc(1, sizeof(*w));
		w->id = id;
		HASH_ADD_INT(a->workers, id, w);
	}
	return w;
}

/* The same for a worker, which is forgotten once it has no call queued. */
static void
api_worker_count(struct api *a, struct aworker *w, int more)
{
	size_t bound = (size_t)conf_calls_per_worker(a->conf);

	if (more)
		w->n++;
	else
		w->n--;
	if (w->over)
		a->over_calls += more ? 1 : -1;
	if (!w->over && w->n >= bound) {
		w->over = 1;
		a->workers_over++;
		a->over_calls += w->n;
		log_warnx("worker=%d: %zu calls queued, the most "
		    "max_calls_per_worker allows: its call frames are answered "
		    "429 and it gets no new update until half of them are done",
		    w->id, w->n);
		api_bound_notify(a, NULL, w->id, 1);
	} else if (w->over && w->n <= bound / 2) {
		w->over = 0;
		a->workers_over--;
		a->over_calls -= w->n;
		log_notice("worker=%d: %zu calls queued: it takes updates again",
		    w->id, w->n);
		api_bound_notify(a, NULL, w->id, 0);
	}
	if (w->n == 0) {
		HASH_DEL(a->workers, w);
		free(w);
	}
}

/* c is accepted (more) or finished: the counts behind the bounds. */
static void
api_account(struct api *a, struct acall *c, int more)
{
	if (more)
		a->queued++;
	else
		a->queued--;
	if (c->key != NULL)
		api_key_count(a, c->key, more);
	if (c->worker != NULL) {
		api_worker_count(a, c->worker, more);
		if (!more)
			c->worker = NULL;	/* may be freed now */
	}
}

/* The call is finished: its key's next call becomes runnable. */
static void
api_release(struct api *a, struct acall *c)
{
	struct akey *k = c->key;
	struct acall *next;
	int head = 0;

	if (k != NULL) {
		head = TAILQ_FIRST(&k->calls) == c;
		TAILQ_REMOVE(&k->calls, c, kentry);
		/* only the head is ever past AC_QUEUED (api_drop_orphans) */
		if (head && (next = TAILQ_FIRST(&k->calls)) != NULL) {
			next->state = AC_RUNNABLE;
			TAILQ_INSERT_TAIL(&a->runnable, next, rentry);
		}
	}
	if (c->scope != NULL)
		c->scope->refs--;
	TAILQ_REMOVE(&a->all, c, aentry);
	c->req = NULL;
	api_account(a, c, 0);
	if (k != NULL && TAILQ_EMPTY(&k->calls)) {
		HASH_DEL(a->keys, k);
		free(k->name);
		free(k);
	}
	acall_free(c);
}

static enum api_outcome
api_outcome(const struct api_result *r)
{
	if (r->ok)
		return API_OK;
	if (r->error_code == 429)
		return API_ERR_429;
	if (r->error_code == 599)	/* ours: no HTTP answer */
		return API_ERR_NET;
	return r->error_code >= 500 ? API_ERR_5XX : API_ERR_4XX;
}

/* Method names come from workers: a bounded table, the rest "other". */
static void
api_count(struct api *a, const char *method, enum api_outcome o)
{
	size_t i;

	for (i = 0; i < a->nmethods; i++)
		if (strcmp(a->by_method[i].method, method) == 0)
			break;
	if (i == a->nmethods) {
		if (a->nmethods < API_METHODS_MAX)
			snprintf(a->by_method[a->nmethods++].method,
			    sizeof(a->by_method[0].method), "%s", method);
		else {
			i = API_METHODS_MAX;
			snprintf(a->by_method[i].method,
			    sizeof(a->by_method[i].method), "other");
		}
	}
	a->by_method[i].n[o]++;
}

static const char *
api_outcome_name(enum api_outcome o)
{
	static const char *const names[API_OUTCOMES] = {
		"ok", "4xx", "429", "5xx", "network"
	};

	return o < API_OUTCOMES ? names[o] : "?";
}

static void
api_deliver(struct api *a, struct acall *c, const struct api_result *r)
{
	if (r->ok)
		a->stats.ok++;
	else
		a->stats.errors++;
	/* its slot waits until the caller has recorded this answer */
	if ((c->flags & API_HOLD) && c->sent)
		a->held++;
	api_count(a, c->method, api_outcome(r));
	c->cb(c->arg, r);
	api_release(a, c);
	api_pump(a);
	if (a->release_cb != NULL)
		a->release_cb(a->release_arg);
}

static void
api_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct acall *c = arg;
	struct api *a = c->api;

	TAILQ_REMOVE(&a->backoff, c, rentry);
	if (c->failed) {
		struct api_result r = { .ok = 0, .error_code = 599,
		    .description = "cannot start the HTTP request" };

		if (c->fail_desc != NULL) {
			r.error_code = c->fail_code;
			r.description = c->fail_desc;
		}
		api_deliver(a, c, &r);
		return;
	}
	/* the head of its key again: ahead of everything else */
	c->state = AC_RUNNABLE;
	TAILQ_INSERT_HEAD(&a->runnable, c, rentry);
	api_pump(a);
}

static void
api_schedule_retry(struct api *a, struct acall *c, int64_t ms)
{
	struct timeval tv = tv_ms(ms);

	a->stats.retries++;
	if (c->retry == NULL)
		c->retry = evtimer_new(a->base, api_retry_cb, c);
	c->state = AC_BACKOFF;
	TAILQ_INSERT_TAIL(&a->backoff, c, rentry);
	evtimer_add(c->retry, &tv);
}

/*
 * 429: the call's chat (or the whole bot) waits retry_after, whether or not
 * the call is tried again, and starts again from an empty bucket.
 */
static struct ascope *
api_pause(struct api *a, struct acall *c, int retry_after, int64_t now)
{
	struct ascope	*s = c->scope != NULL ? c->scope : &a->global;
	int64_t		 until;

	a->stats.got_429++;
	if (retry_after < 1 || retry_after > API_RETRY_AFTER_MAX)
		retry_after = 1;
	until = now + (int64_t)retry_after * 1000;
	if (until > s->paused_until)
		s->paused_until = until;
	flood_drain(&s->bucket, scope_rate(a, s), now);
	log_info("method=%s: 429 (try %d), pausing calls to %s for %d s",
	    c->method, c->tries, scope_name(a, s), retry_after);
	scope_update(a, s, now);
	return s;
}

static void
api_log_migrated(const struct acall *c, const json_t *params)
{
	json_t *to = json_object_get(params, "migrate_to_chat_id");

	if (json_is_integer(to))
		log_notice("method=%s chat=%s migrate_to_chat_id=%lld: the chat "
		    "became a supergroup; the worker gets the error and must "
		    "use the new id",
		    c->method, c->scope != NULL ? c->scope->name + 2 : "?",
		    (long long)json_integer_value(to));
}

/* Telegram answered: the result, or a retry. */
static void
api_answer(struct api *a, struct acall *c, json_t *root)
{
	struct api_result r = { .ok = 0 };
	struct ascope *s;
	json_t *params;
	int64_t now;

	r.ok = json_is_true(json_object_get(root, "ok"));
	r.result = json_object_get(root, "result");
	r.error_code = (int)json_integer_value(json_object_get(root,
	    "error_code"));
	r.description = json_string_value(json_object_get(root,
	    "description"));
	params = json_object_get(root, "parameters");
	r.parameters = json_is_object(params) ? params : NULL;
	r.retry_after = (int)json_integer_value(json_object_get(params,
	    "retry_after"));
	if (!r.ok && r.error_code == 429) {
		now = mono_ms();
		s = api_pause(a, c, r.retry_after, now);
		if (c->tries <= a->conf->max_call_retries) {
			/* first in line again, after the pause */
			a->stats.retries++;
			c->first = s;
			api_park(a, c, s, now);
			api_pump(a);
			return;
		}
	}
	if (!r.ok)
		api_log_migrated(c, r.parameters);
	api_deliver(a, c, &r);
}

static void
api_done(void *arg, const struct http_response *resp)
{
	struct acall *c = arg;
	struct api *a = c->api;
	struct api_result r = { .ok = 0 };
	json_t *root;

	c->req = NULL;
	c->sent = 1;
	a->inflight--;
	root = resp->status > 0 ? json_loadb(resp->body, resp->len, 0, NULL) : NULL;
	if (json_is_object(root) && json_is_boolean(json_object_get(root, "ok"))) {
		api_answer(a, c, root);
		json_decref(root);
		return;
	}
	json_decref(root);
	/* transport error, HTML error page, truncated body */
	r.error_code = resp->status >= 500 ? (int)resp->status : 599;
	r.description = resp->curl_code != 0 ? resp->error :
	    "Bad Gateway: the Bot API answered something that is not JSON";
	if (method_idempotent(c->method) &&
	    c->tries <= a->conf->max_call_retries) {
		api_schedule_retry(a, c, 500LL << (c->tries < 10 ? c->tries : 10));
		api_pump(a);
		return;
	}
	api_deliver(a, c, &r);
}

static struct http_req *
api_post(struct api *a, struct acall *c, const char *url)
{
	const struct http_part	*parts;
	size_t			 n;

	if (c->upload == NULL)
		return http_post(a->http, url, "application/json", c->body,
		    c->len, API_HTTP_TIMEOUT_MS, api_done, c);
	parts = upload_parts(c->upload, &n);
	return http_post_form(a->http, url, parts, n, API_HTTP_TIMEOUT_MS +
	    upload_size(c->upload) / API_UPLOAD_BPMS, api_done, c);
}

static void
api_start(struct api *a, struct acall *c, int64_t now)
{
	char url[1024];

	api_unhold(a, c, now);
	c->first = NULL;
	snprintf(url, sizeof(url), "%s%s", a->prefix, c->method);
	c->tries++;
	c->req = api_post(a, c, url);
	explicit_bzero(url, sizeof(url));	/* curl has its copy */
	if (c->req == NULL) {
		/* reported from the loop, never from inside api_call() */
		c->failed = c->tries > a->conf->max_call_retries;
		api_schedule_retry(a, c, c->failed ? 0 : 100);
		return;
	}
	c->state = AC_INFLIGHT;
	a->inflight++;
}

static void
api_pump(struct api *a)
{
	struct ascope	*s;
	struct acall	*c;
	int64_t		 now = mono_ms();

	for (;;) {
		api_wake(a, now);
		if (a->stopped || a->inflight + a->held >=
		    (size_t)a->conf->api_max_inflight ||
		    (c = TAILQ_FIRST(&a->runnable)) == NULL)
			break;
		TAILQ_REMOVE(&a->runnable, c, rentry);
		if ((s = api_admit(a, c, now)) != NULL)
			api_park(a, c, s, now);
		else
			api_start(a, c, now);
	}
	api_arm(a, now);
}

/* Behind the calls of the same key; the scope of its chat_id. */
static void
api_enqueue(struct api *a, struct acall *c, const char *key, json_t *params)
{
	char		 name[FLOOD_SCOPE_MAX];
	enum flood_scope kind;
	struct akey	*k = NULL;

	kind = flood_scope(params, name, sizeof(name));
	if (kind != FLOOD_SCOPE_NONE)
		c->scope = scope_get(a, kind, name);
	if (key != NULL) {
		HASH_FIND_STR(a->keys, key, k);
		if (k == NULL) {
			k = xcalloc(1, sizeof(*k));
			k->name = xstrdup(key);
			TAILQ_INIT(&k->calls);
			HASH_ADD_KEYPTR(hh, a->keys, k->name, strlen(k->name), k);
		}
		c->key = k;
		TAILQ_INSERT_TAIL(&k->calls, c, kentry);
	}
	if (c->scope != NULL)
		c->scope->refs++;
	TAILQ_INSERT_TAIL(&a->all, c, aentry);
	if (k == NULL || TAILQ_FIRST(&k->calls) == c) {
		c->state = AC_RUNNABLE;
		TAILQ_INSERT_TAIL(&a->runnable, c, rentry);
	} else
		c->state = AC_QUEUED;
}

void
api_on_release(struct api *a, void (*cb)(void *), void *arg)
{
	a->release_cb = cb;
	a->release_arg = arg;
}

/*
 * A call the daemon refuses itself (its files): delivered from the loop at
 * once, outside its key's order since it never reaches Telegram.
 */
static void
api_refuse(struct api *a, struct acall *c, int code, const char *desc)
{
	struct timeval tv = { 0, 0 };

	c->fail_desc = xstrdup(desc);
	if ((c->retry = evtimer_new(a->base, api_retry_cb, c)) == NULL)
		fatalx(EXIT_NOMEM, "%s: evtimer_new", __func__);
	c->fail_code = code;
	c->failed = 1;
	c->state = AC_BACKOFF;
	TAILQ_INSERT_TAIL(&a->all, c, aentry);
	TAILQ_INSERT_TAIL(&a->backoff, c, rentry);
	evtimer_add(c->retry, &tv);
	api_account(a, c, 1);
	a->stats.calls++;
}

/* Files in params: 0 (c->upload set if there are any), or -1 with err. */
static int
api_upload(struct api *a, struct acall *c, json_t *params, char *err,
    size_t errsz)
{
	if (params == NULL || !upload_wanted(c->body))
		return 0;
	if (upload_prepare(params, api_updir(a), a->conf->upload_max_size,
	    &c->upload, err, errsz) == -1) {
		log_info("method=%s: refused: %s", c->method, err);
		return -1;
	}
	if (c->upload != NULL) {
		/* the parts are the body now */
		free(c->body);
		c->body = NULL;
	}
	return 0;
}

int
api_call_from(struct api *a, const struct api_from *from, const char *key,
    const char *method, json_t *params, int flags, api_cb cb, void *arg)
{
	struct acall *c;
	char err[UPLOAD_ERR_MAX];

	if (!api_method_valid(method) || (!(flags & API_NOLIMIT) &&
	    a->queued >= (size_t)a->conf->api_max_queued)) {
		a->stats.rejected++;
		return -1;
	}
	c = xcalloc(1, sizeof(*c));
	c->api = a;
	snprintf(c->method, sizeof(c->method), "%s", method);
	c->body = params != NULL ? json_dumps(params, JSON_COMPACT) :
	    xstrdup("{}");
	if (c->body == NULL)
		fatalx(EXIT_NOMEM, "%s: json_dumps", __func__);
	c->cost = flood_cost(method, params);
	c->flags = flags;
	c->cb = cb;
	c->arg = arg;
	c->len = strlen(c->body);
	c->nolimit = (flags & API_NOLIMIT) != 0;
	if (from != NULL && from->worker > 0) {
		c->worker = api_worker_get(a, from->worker);
		c->update = from->update;
	}
	if (api_upload(a, c, params, err, sizeof(err)) == -1) {
		api_refuse(a, c, 400, err);
		return 0;
	}
	api_enqueue(a, c, key, params);
	api_account(a, c, 1);
	a->stats.calls++;
	api_sweep(a, mono_ms());
	api_pump(a);
	return 0;
}

int
api_call(struct api *a, const char *key, const char *method, json_t *params,
    int flags, api_cb cb, void *arg)
{
	return api_call_from(a, NULL, key, method, params, flags, cb, arg);
}

int
api_bounded(struct api *a, const char *key, int worker)
{
	struct akey	*k = NULL;
	struct aworker	*w = NULL;

	if (key != NULL)
		HASH_FIND_STR(a->keys, key, k);
	if (k != NULL && k->over) {
		a->stats.bounded_key++;
		return API_BOUND_KEY;
	}
	if (worker > 0)
		HASH_FIND_INT(a->workers, &worker, w);
	if (w != NULL && w->over) {
		a->stats.bounded_worker++;
		return API_BOUND_WORKER;
	}
	return 0;
}

int
api_key_over(const struct api *a, const char *key)
{
	struct akey *k = NULL;

	if (key != NULL)
		HASH_FIND_STR(a->keys, key, k);
	return k != NULL && k->over;
}

void
api_on_bound(struct api *a, void (*cb)(void *, const char *, int, int),
    void *arg)
{
	a->bound_cb = cb;
	a->bound_arg = arg;
}

size_t
api_gated(const struct api *a)
{
	return a->queued - a->over_calls;
}

void
api_worker_gone(struct api *a, int worker)
{
	struct aworker *w;

	HASH_FIND_INT(a->workers, &worker, w);
	if (w != NULL)
		w->dead = 1;
}

/* Take c out of whatever queue it waits in (it is not in flight). */
static void
api_unqueue(struct api *a, struct acall *c, int64_t now)
{
	struct ascope *s;

	api_unhold(a, c, now);
	switch (c->state) {
	case AC_RUNNABLE:
		TAILQ_REMOVE(&a->runnable, c, rentry);
		break;
	case AC_PARKED:
		s = c->park;
		TAILQ_REMOVE(c->parkq, c, rentry);
		c->park = NULL;
		c->parkq = NULL;
		a->waiting--;
		a->stats.throttled_ms += (uint64_t)(now - c->parked_at);
		scope_update(a, s, now);
		break;
	case AC_BACKOFF:
		TAILQ_REMOVE(&a->backoff, c, rentry);
		evtimer_del(c->retry);
		break;
	case AC_QUEUED:
	case AC_INFLIGHT:
		break;
	}
}

size_t
api_drop_orphans(struct api *a, int64_t update)
{
	struct api_result r = { .ok = 0, .error_code = 409 };
	struct acall *c, *tc;
	char desc[160];
	int64_t now = mono_ms();
	size_t n = 0;

	snprintf(desc, sizeof(desc), "tgrunner: not made: the worker that made "
	    "it died, and update %lld runs again", (long long)update);
	r.description = desc;
	TAILQ_FOREACH_SAFE(c, &a->all, aentry, tc) {
		if (c->update != update || c->worker == NULL ||
		    !c->worker->dead || c->nolimit ||
		    c->state == AC_INFLIGHT)
			continue;
		api_unqueue(a, c, now);
		log_info("update=%lld method=%s: call dropped: its worker died "
		    "before it went out, and the update runs again",
		    (long long)update, c->method);
		c->cb(c->arg, &r);
		api_release(a, c);
		a->stats.orphans++;
		n++;
	}
	if (n > 0)
		api_pump(a);
	return n;
}

void
api_settle(struct api *a)
{
	if (a->held == 0)
		return;
	a->held = 0;
	api_pump(a);
}

void
api_stop(struct api *a)
{
	a->stopped = 1;
}

void
api_reconfigure(struct api *a)
{
	int64_t	now = mono_ms();
	size_t	i;

	/* new calls use the upload_dir of the new configuration */
	api_updir_open(a);
	/* rates only move ready times; a scope in the heap keeps a call */
	for (i = 0; i < a->nheap; i++)
		a->heap[i]->ready_at = scope_ready(a, a->heap[i], now);
	for (i = a->nheap / 2; i-- > 0;)
		heap_down(a, i);
	api_pump(a);
}

size_t
api_queued(const struct api *a)
{
	return a->queued;
}

size_t
api_inflight(const struct api *a)
{
	return a->inflight;
}

size_t
api_waiting(const struct api *a)
{
	return a->waiting;
}

const struct api_stats *
api_stats(const struct api *a)
{
	return &a->stats;
}

json_t *
api_status(const struct api *a)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
	    "s:I, s:I, s:I, s:I}",
	    "queued", (json_int_t)a->queued,
	    "keys_over", (json_int_t)a->keys_over,
	    "workers_over", (json_int_t)a->workers_over,
	    "refused_key", (json_int_t)a->stats.bounded_key,
	    "refused_worker", (json_int_t)a->stats.bounded_worker,
	    "orphans_dropped", (json_int_t)a->stats.orphans,
	    "inflight", (json_int_t)a->inflight,
	    "calls", (json_int_t)a->stats.calls,
	    "errors", (json_int_t)a->stats.errors,
	    "retries", (json_int_t)a->stats.retries,
	    "waiting", (json_int_t)a->waiting,
	    "throttled", (json_int_t)a->stats.throttled,
	    "throttled_ms", (json_int_t)a->stats.throttled_ms,
	    "got_429", (json_int_t)a->stats.got_429);
}

/* method names are [A-Za-z0-9_] (method_valid): safe as label values */
static void
api_method_rows(const struct api_method_stat *m, struct evbuffer *out)
{
	int o;

	for (o = 0; o < API_OUTCOMES; o++)
		if (m->n[o] > 0)
			evbuffer_add_printf(out, "tgrunner_api_calls_by_method_"
			    "total{method=\"%s\",outcome=\"%s\"} %llu\n",
			    m->method, api_outcome_name((enum api_outcome)o),
			    (unsigned long long)m->n[o]);
}

static void
api_method_metrics(const struct api *a, struct evbuffer *out)
{
	int	other = a->by_method[API_METHODS_MAX].method[0] != '\0';
	size_t	i;

	/* a family without samples is not valid exposition */
	if (a->nmethods == 0 && !other)
		return;
	evbuffer_add_printf(out, "# HELP tgrunner_api_calls_by_method_total "
	    "Finished Bot API calls by method and outcome.\n# TYPE "
	    "tgrunner_api_calls_by_method_total counter\n");
	for (i = 0; i < a->nmethods; i++)
		api_method_rows(&a->by_method[i], out);
	if (other)
		api_method_rows(&a->by_method[API_METHODS_MAX], out);
}

void
api_metrics(const struct api *a, struct evbuffer *out)
{
	const struct api_stats *as = &a->stats;

	metrics_counter(out, "tgrunner_api_calls_total",
	    "Bot API calls made for workers.", as->calls);
	metrics_counter(out, "tgrunner_api_errors_total",
	    "Bot API calls that ended in an error.", as->errors);
	metrics_counter(out, "tgrunner_api_retries_total",
	    "Bot API call retries (429, transient errors).", as->retries);
	metrics_gauge(out, "tgrunner_api_queued",
	    "Bot API calls queued or in flight.", a->queued);
	metrics_gauge(out, "tgrunner_api_waiting", "Bot API calls held by "
	    "flood control (tokens or a 429 pause).", a->waiting);
	metrics_counter(out, "tgrunner_api_throttled_total",
	    "Bot API calls that flood control held back.", as->throttled);
	metrics_counter(out, "tgrunner_api_throttled_seconds_total",
	    "Time calls spent held back by flood control.",
	    (double)as->throttled_ms / 1000.0);
	metrics_counter(out, "tgrunner_api_429_total",
	    "429 answers to workers' Bot API calls.", as->got_429);
	metrics_gauge(out, "tgrunner_api_keys_over", "Session keys past "
	    "max_calls_per_key: their updates wait.", a->keys_over);
	metrics_gauge(out, "tgrunner_api_workers_over", "Workers past "
	    "max_calls_per_worker: they get no new update.", a->workers_over);
	metrics_counter(out, "tgrunner_api_bounded_key_total", "Call frames "
	    "answered 429 because their key was past max_calls_per_key.",
	    as->bounded_key);
	metrics_counter(out, "tgrunner_api_bounded_worker_total", "Call frames "
	    "answered 429 because their worker was past max_calls_per_worker.",
	    as->bounded_worker);
	metrics_counter(out, "tgrunner_api_orphans_dropped_total", "Calls "
	    "dropped before they went out: their worker died and their update "
	    "runs again.", as->orphans);
	api_method_metrics(a, out);
}

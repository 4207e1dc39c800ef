/* SPDX-License-Identifier: ISC */
/*
 * HTTP client on the daemon's event loop.  One curl multi handle keeps the
 * connections alive; curl tells us which sockets to watch (socket callback)
 * and when to call it back (timer callback), and we feed readiness back with
 * curl_multi_socket_action().  Completed transfers are collected from
 * curl_multi_info_read() and their callbacks run from the event loop, never
 * from inside a curl callback or from http_post(), so a callback may freely
 * start, cancel or free anything, including the http object itself.
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/types.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "http.h"
#include "log.h"
#include "timeutil.h"
#include "xmalloc.h"

/* A hostile server must not be able to make us buffer more than this. */
#define HTTP_BODY_MAX	(64UL * 1024 * 1024)
#define HTTP_ERR_MAX	(CURL_ERROR_SIZE + 64)

enum http_req_state {
	REQ_RUNNING,		/* attached to the multi handle */
	REQ_DONE,		/* finished, callback pending */
	REQ_CALLING		/* its callback is running */
};

/* Where a file part's bytes come from, for one request. */
struct http_src {
	struct http_req	*req;
	const char	*data;		/* NULL: pread from fd */
	int		 fd;
	curl_off_t	 size;
	curl_off_t	 off;
};

struct http_req {
	TAILQ_ENTRY(http_req)	 entry;
	struct http		*http;
	enum http_req_state	 state;
	CURL			*easy;
	struct curl_slist	*headers;
	curl_mime		*mime;
	struct http_src		*srcs;
	int			 src_failed;	/* a file part could not be read */
	char			*buf;
	size_t			 len, cap;
	int			 too_big;
	long			 status;
	CURLcode		 code;
	char			 curl_err[CURL_ERROR_SIZE];
	char			 err[HTTP_ERR_MAX];
	http_cb			 cb;
	void			*arg;
	/* streamed GET only */
	const struct http_stream_cb *stream;
	int			 head_done;
	int			 aborted;	/* head or data said stop */
};

struct http_sock {
	LIST_ENTRY(http_sock)	 entry;
	curl_socket_t		 fd;
	struct event		*ev;
};

TAILQ_HEAD(http_reqq, http_req);

struct http {
	struct event_base	*base;
	CURLM			*multi;
	struct event		*timer;		/* curl's timeout */
	struct http_reqq	 running;
	struct http_reqq	 done;
	LIST_HEAD(, http_sock)	 socks;
	size_t			 nreqs;
	int			 dispatching;
	int			 dying;		/* http_free() from a callback */
};

static int	http_global_done;

static void	http_dispatch(struct http *);

static void
http_req_free(struct http_req *r)
{
	if (r->easy != NULL)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	curl_mime_free(r->mime);
	free(r->srcs);
	free(r->buf);
	free(r);
}

/* Collect finished transfers and run their callbacks (from the loop). */
static void
http_check_done(struct http *h)
{
	struct http_req *r;
	CURLMsg *msg;
	int left;
	void *priv;

	while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		priv = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
		if ((r = priv) == NULL)
			continue;
		r->code = msg->data.result;
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
		curl_multi_remove_handle(h->multi, r->easy);
		TAILQ_REMOVE(&h->running, r, entry);
		r->state = REQ_DONE;
		TAILQ_INSERT_TAIL(&h->done, r, entry);
	}
	if (!TAILQ_EMPTY(&h->done))
		http_dispatch(h);
}

static void
http_action(struct http *h, curl_socket_t fd, int flags)
{
	CURLMcode mc;
	int still;

	mc = curl_multi_socket_action(h->multi, fd, flags, &still);
	if (mc != CURLM_OK)
		log_warnx("%s: %s", __func__, curl_multi_strerror(mc));
	if (still == 0)
		evtimer_del(h->timer);
	/* last: a callback may free h */
	http_check_done(h);
}

static void
http_sock_event(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;
	int flags = 0;

	if (what & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	http_action(h, fd, flags);
}

static void
http_timer_event(evutil_socket_t fd, short what, void *arg)
{
	http_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

static void
http_sock_free(struct http_sock *s)
{
	LIST_REMOVE(s, entry);
	event_free(s->ev);
	free(s);
}

static int
http_sock_update(struct http *h, struct http_sock *s, curl_socket_t fd, int what)
{
	short events = EV_PERSIST;

	if (what & CURL_POLL_IN)
		events |= EV_READ;
	if (what & CURL_POLL_OUT)
		events |= EV_WRITE;
	if (s->ev != NULL) {
		event_del(s->ev);
		event_free(s->ev);
	}
	s->ev = event_new(h->base, fd, events, http_sock_event, h);
	if (s->ev == NULL || event_add(s->ev, NULL) == -1) {
		log_warnx("%s: cannot watch socket %d", __func__, (int)fd);
		return -1;
	}
	return 0;
}

/* CURLMOPT_SOCKETFUNCTION: curl says what to wait for on a socket. */
static int
http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *harg, void *sarg)
{
	struct http *h = harg;
	struct http_sock *s = sarg;

	if (what == CURL_POLL_REMOVE) {
		if (s != NULL)
			http_sock_free(s);
		curl_multi_assign(h->multi, fd, NULL);
		return 0;
	}
	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		s->fd = fd;
		LIST_INSERT_HEAD(&h->socks, s, entry);
		curl_multi_assign(h->multi, fd, s);
	}
	return http_sock_update(h, s, fd, what);
}

/* CURLMOPT_TIMERFUNCTION: one timer for the whole multi handle. */
static int
http_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct http *h = arg;
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(h->timer);
		return 0;
	}
	/* 0 means "as soon as possible": still via the loop, never nested */
	tv = tv_ms(timeout_ms);
	return evtimer_add(h->timer, &tv);
}

static size_t
http_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct http_req *r = arg;
	size_t n = size * nmemb, ncap;

	if (n > HTTP_BODY_MAX - r->len) {
		r->too_big = 1;
		return 0;	/* aborts the transfer with CURLE_WRITE_ERROR */
	}
	if (r->len + n + 1 > r->cap) {
		ncap = r->cap ? r->cap : 4096;
		while (ncap < r->len + n + 1)
			ncap *= 2;
		r->buf = xreallocarray(r->buf, ncap, 1);
		r->cap = ncap;
	}
	memcpy(r->buf + r->len, data, n);
	r->len += n;
	r->buf[r->len] = '\0';
	return n;
}

/* The status line and headers are in: tell the stream's receiver once. */
static int
http_stream_head(struct http_req *r)
{
	long		 status = 0;
	curl_off_t	 length = -1;
	char		*ctype = NULL;

	r->head_done = 1;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
	curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ctype);
	if (r->stream->head(r->arg, status, (int64_t)length, ctype) == -1) {
		r->aborted = 1;
		return -1;
	}
	return 0;
}

/* CURLOPT_WRITEFUNCTION of a stream: straight to its receiver. */
static size_t
http_stream_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct http_req *r = arg;
	size_t n = size * nmemb;

	if (r->aborted || (!r->head_done && http_stream_head(r) == -1))
		return 0;	/* CURLE_WRITE_ERROR */
	switch (r->stream->data(r->arg, data, n)) {
	case 0:
		return n;
	case 1:
		/* curl hands the same bytes over again after http_resume */
		return CURL_WRITEFUNC_PAUSE;
	default:
		r->aborted = 1;
		return 0;
	}
}

static void
http_req_error(struct http_req *r)
{
	const char *why;

	if (r->code == CURLE_OK) {
		r->err[0] = '\0';
		return;
	}
	if (r->too_big)
		why = "response body too large";
	else if (r->aborted)
		why = "stopped by the receiver";
	else if (r->src_failed)
		why = "a file to upload shrank or could not be read";
	else if (r->curl_err[0] != '\0')
		why = r->curl_err;
	else
		why = curl_easy_strerror(r->code);
	snprintf(r->err, sizeof(r->err), "%s", why);
	/* curl's text may quote the URL, and the URL holds the token */
	log_redact(r->err, sizeof(r->err));
}

static void
http_req_complete(struct http_req *r)
{
	struct http_response resp;

	http_req_error(r);
	/* a stream with no body: its head was never seen by the write callback */
	if (r->stream != NULL && !r->head_done && r->status > 0 &&
	    r->code == CURLE_OK)
		(void)http_stream_head(r);
	memset(&resp, 0, sizeof(resp));
	resp.status = r->status;
	resp.body = r->buf != NULL ? r->buf : "";
	resp.len = r->len;
	resp.curl_code = r->code;
	resp.error = r->err;
	r->cb(r->arg, &resp);
}

static void
http_destroy(struct http *h)
{
	struct http_req *r;
	struct http_sock *s;

	while ((r = TAILQ_FIRST(&h->running)) != NULL) {
		TAILQ_REMOVE(&h->running, r, entry);
		curl_multi_remove_handle(h->multi, r->easy);
		http_req_free(r);
	}
	while ((r = TAILQ_FIRST(&h->done)) != NULL) {
		TAILQ_REMOVE(&h->done, r, entry);
		http_req_free(r);
	}
	curl_multi_cleanup(h->multi);
	/* sockets curl did not report as removed */
	while ((s = LIST_FIRST(&h->socks)) != NULL)
		http_sock_free(s);
	event_free(h->timer);
	free(h);
}

/* Run the callbacks of completed requests; the http may die inside one. */
static void
http_dispatch(struct http *h)
{
	struct http_req *r;

	if (h->dispatching) {
		/* the running loop below picks them up */
		return;
	}
	h->dispatching = 1;
	while (!h->dying && (r = TAILQ_FIRST(&h->done)) != NULL) {
		TAILQ_REMOVE(&h->done, r, entry);
		r->state = REQ_CALLING;
		http_req_complete(r);
		h->nreqs--;
		http_req_free(r);
	}
	h->dispatching = 0;
	if (h->dying)
		http_destroy(h);
}

/*
 * Returns a new http client on base (the caller frees it with http_free),
 * or NULL.  max_connections bounds connections per host and in total.
 */
struct http *
http_new(struct event_base *base, long max_connections)
{
	struct http *h;

	if (!http_global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			log_warnx("%s: curl_global_init failed", __func__);
			return NULL;
		}
		http_global_done = 1;
	}
	h = xcalloc(1, sizeof(*h));
	h->base = base;
	TAILQ_INIT(&h->running);
	TAILQ_INIT(&h->done);
	LIST_INIT(&h->socks);
	h->timer = evtimer_new(base, http_timer_event, h);
	h->multi = curl_multi_init();
	if (h->timer == NULL || h->multi == NULL) {
		log_warnx("%s: cannot set up curl multi", __func__);
		if (h->multi != NULL)
			curl_multi_cleanup(h->multi);
		if (h->timer != NULL)
			event_free(h->timer);
		free(h);
		return NULL;
	}
	if (max_connections < 1)
		max_connections = 1;
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_connections);
	curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_connections);
	curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, max_connections);
	return h;
}

void
http_free(struct http *h)
{
	struct http_req *r;

	if (h == NULL)
		return;
	if (h->dispatching) {
		/* inside one of our callbacks: finish it, then destroy */
		while ((r = TAILQ_FIRST(&h->done)) != NULL) {
			TAILQ_REMOVE(&h->done, r, entry);
			h->nreqs--;
			http_req_free(r);
		}
		h->dying = 1;
		return;
	}
	http_destroy(h);
}

/* Options of every request; ctype NULL: curl's (multipart/form-data). */
static int
http_req_setup(struct http_req *r, const char *url, const char *ctype,
    long timeout_ms)
{
	char hdr[256];
	CURL *e = r->easy;
	int rc = 0;

	if (ctype != NULL) {
		snprintf(hdr, sizeof(hdr), "Content-Type: %s", ctype);
		if ((r->headers = curl_slist_append(NULL, hdr)) == NULL)
			return -1;
	}
	/* no "Expect: 100-continue" round trip for larger bodies */
	if ((r->headers = curl_slist_append(r->headers, "Expect:")) == NULL)
		return -1;
	rc |= curl_easy_setopt(e, CURLOPT_URL, url);
	rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_err);
	rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
	rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	(void)curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	return rc == 0 ? 0 : -1;
}

/* CURLOPT_READFUNCTION of a file part: bytes from memory or the fd. */
static size_t
http_src_read(char *buf, size_t size, size_t nitems, void *arg)
{
	struct http_src *s = arg;
	size_t n = size * nitems;
	ssize_t got;

	if ((curl_off_t)n > s->size - s->off)
		n = (size_t)(s->size - s->off);
	if (n == 0)
		return 0;
	if (s->data != NULL)
		memcpy(buf, s->data + s->off, n);
	else {
		do
			got = pread(s->fd, buf, n, (off_t)s->off);
		while (got == -1 && errno == EINTR);
		if (got <= 0) {
			/* shorter than when it was opened: the part would lie */
			s->req->src_failed = 1;
			return CURL_READFUNC_ABORT;
		}
		n = (size_t)got;
	}
	s->off += (curl_off_t)n;
	return n;
}

/* curl rewinds a part when it sends the request again (a dead keep-alive). */
static int
http_src_seek(void *arg, curl_off_t off, int origin)
{
	struct http_src *s = arg;

	if (origin != SEEK_SET || off < 0 || off > s->size)
		return CURL_SEEKFUNC_CANTSEEK;
	s->off = off;
	return CURL_SEEKFUNC_OK;
}

static int
http_part_add(struct http_req *r, const struct http_part *p,
    struct http_src *s)
{
	curl_mimepart *m;

	if ((m = curl_mime_addpart(r->mime)) == NULL ||
	    curl_mime_name(m, p->name) != CURLE_OK)
		return -1;
	if (p->filename == NULL)
		return curl_mime_data(m, p->data, p->len) == CURLE_OK ? 0 : -1;
	s->req = r;
	s->data = p->data;
	s->fd = p->fd;
	s->size = (curl_off_t)p->len;
	if (curl_mime_data_cb(m, s->size, http_src_read, http_src_seek, NULL,
	    s) != CURLE_OK || curl_mime_filename(m, p->filename) != CURLE_OK)
		return -1;
	if (p->ctype != NULL && curl_mime_type(m, p->ctype) != CURLE_OK)
		return -1;
	return 0;
}

static int
http_req_form(struct http_req *r, const struct http_part *parts,
    size_t nparts)
{
	size_t i;

	if ((r->mime = curl_mime_init(r->easy)) == NULL)
		return -1;
	r->srcs = xcalloc(nparts + 1, sizeof(*r->srcs));
	for (i = 0; i < nparts; i++)
		if (http_part_add(r, &parts[i], &r->srcs[i]) == -1)
			return -1;
	return curl_easy_setopt(r->easy, CURLOPT_MIMEPOST, r->mime) ==
	    CURLE_OK ? 0 : -1;
}

static struct http_req *
http_req_new(struct http *h, http_cb cb, void *arg)
{
	struct http_req *r;

	if (h->dying)
		return NULL;
	r = xcalloc(1, sizeof(*r));
	r->http = h;
	r->cb = cb;
	r->arg = arg;
	if ((r->easy = curl_easy_init()) == NULL) {
		log_warnx("%s: curl_easy_init failed", __func__);
		free(r);
		return NULL;
	}
	return r;
}

static struct http_req *
http_req_start(struct http *h, struct http_req *r)
{
	/* adding fires the timer callback, which defers to the loop */
	if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
		log_warnx("%s: curl_multi_add_handle failed", __func__);
		http_req_free(r);
		return NULL;
	}
	r->state = REQ_RUNNING;
	TAILQ_INSERT_TAIL(&h->running, r, entry);
	h->nreqs++;
	return r;
}

/*
 * Start a POST.  The body is copied.  The returned handle belongs to the
 * http object; it stays valid until cb has run or http_cancel() is called.
 */
struct http_req *
http_post(struct http *h, const char *url, const char *ctype,
    const char *body, size_t len, long timeout_ms, http_cb cb, void *arg)
{
	struct http_req *r;

	if ((r = http_req_new(h, cb, arg)) == NULL)
		return NULL;
	if (http_req_setup(r, url, ctype, timeout_ms) == -1 ||
	    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE,
	    (curl_off_t)len) != CURLE_OK ||
	    curl_easy_setopt(r->easy, CURLOPT_COPYPOSTFIELDS,
	    body != NULL ? body : "") != CURLE_OK) {
		log_warnx("%s: cannot set up request", __func__);
		http_req_free(r);
		return NULL;
	}
	return http_req_start(h, r);
}

/* As http_post, with a multipart/form-data body built from parts. */
struct http_req *
http_post_form(struct http *h, const char *url, const struct http_part *parts,
    size_t nparts, long timeout_ms, http_cb cb, void *arg)
{
	struct http_req *r;

	if ((r = http_req_new(h, cb, arg)) == NULL)
		return NULL;
	if (http_req_setup(r, url, NULL, timeout_ms) == -1 ||
	    http_req_form(r, parts, nparts) == -1) {
		log_warnx("%s: cannot set up request", __func__);
		http_req_free(r);
		return NULL;
	}
	return http_req_start(h, r);
}

/*
 * Start a streamed GET.  The returned handle belongs to the http object, as
 * for http_post.
 */
struct http_req *
http_get_stream(struct http *h, const char *url, long timeout_ms,
    const struct http_stream_cb *cb, void *arg)
{
	struct http_req *r;
	CURL *e;
	int rc = 0;

	if ((r = http_req_new(h, cb->done, arg)) == NULL)
		return NULL;
	r->stream = cb;
	e = r->easy;
	if (http_req_setup(r, url, NULL, timeout_ms) == -1) {
		log_warnx("%s: cannot set up request", __func__);
		http_req_free(r);
		return NULL;
	}
	rc |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	/* the bytes as the server has them: Content-Length stays true */
	rc |= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_stream_write);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	if (rc != 0) {
		log_warnx("%s: cannot set up request", __func__);
		http_req_free(r);
		return NULL;
	}
	return http_req_start(h, r);
}

void
http_resume(struct http_req *r)
{
	struct timeval now = { 0, 0 };

	if (r->state != REQ_RUNNING)
		return;
	/* may call the write callback at once with what curl held back */
	curl_easy_pause(r->easy, CURLPAUSE_CONT);
	/* and let the loop drive the transfer on, never from in here */
	evtimer_add(r->http->timer, &now);
}

void
http_cancel(struct http_req *r)
{
	struct http *h;

	if (r == NULL)
		return;
	h = r->http;
	switch (r->state) {
	case REQ_RUNNING:
		TAILQ_REMOVE(&h->running, r, entry);
		curl_multi_remove_handle(h->multi, r->easy);
		break;
	case REQ_DONE:
		TAILQ_REMOVE(&h->done, r, entry);
		break;
	case REQ_CALLING:
		return;		/* freed when its callback returns */
	}
	h->nreqs--;
	http_req_free(r);
}

size_t
http_running(const struct http *h)
{
	return h->nreqs;
}

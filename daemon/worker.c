/* SPDX-License-Identifier: ISC */
/*
 * One worker's connection (worker.h): its protocol state machine (hello
 * and welcome, frames allowed per state, shutdown once idle, protocol
 * errors) and the framing of newline-delimited frames over a stream socket
 * that the socket types share.  What a done, fail or call means is the
 * pool's (pool.c); how the peer is reached and made to go is the
 * connection type's (struct worker_ops).
 */
#include "config.h"

#include <sys/socket.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>

#include "conf.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "timeutil.h"
#include "worker.h"
#include "xmalloc.h"

#define WORKER_COMPLAINTS_MAX	10	/* warnings logged per connection */

const char *
worker_state_str(enum worker_state s)
{
	switch (s) {
	case W_STARTING:	return "starting";
	case W_READY:		return "ready";
	case W_DRAINING:	return "draining";
	case W_KILLING:		return "killing";
	case W_DEAD:		return "dead";
	}
	return "?";
}

int
worker_free_slots(const struct worker *w)
{
	return w->state == W_READY && !w->throttled ? w->slots - w->busy : 0;
}

void
worker_set_state(struct worker *w, enum worker_state s)
{
	int before = worker_free_slots(w);

	log_debug("worker=%d pid=%d: %s -> %s", w->id, (int)w->pid,
	    worker_state_str(w->state), worker_state_str(s));
	w->state = s;
	pool_slots_changed(w, before);
}

void
worker_close(struct worker *w, int sig)
{
	w->ops->close(w, sig);
}

void
worker_terminate(struct worker *w, int sig)
{
	w->ops->terminate(w, sig);
}

int
worker_send_frame(struct worker *w, const struct frame *f)
{
	char *line;
	size_t len;
	int rv;

	if ((line = proto_encode(f, &len)) == NULL) {
		log_warnx("worker=%d: cannot encode %s frame", w->id,
		    proto_type_name(f->type));
		return -1;
	}
	rv = w->ops->send(w, line, len);
	free(line);
	return rv;
}

/*
 * No more updates for w; it is told to shut down once it holds none, so
 * that a worker never has to finish work and exit at the same time.  A
 * worker drained for a reason of its own (recycled, replaced) gets its
 * whole shutdown_timeout from the shutdown on, however long its last
 * updates took.
 */
void
worker_drain(struct worker *w, int64_t deadline)
{
	struct frame f = { .type = FRAME_SHUTDOWN };

	if (w->state != W_DRAINING)
		worker_set_state(w, W_DRAINING);
	w->retired = 1;
	w->shutdown_at = deadline;
	if (w->busy > 0 || w->shutdown_sent)
		return;
	if (deadline == 0)
		w->shutdown_at = wall_ms() + pool_conf(w->pool)->shutdown_timeout;
	f.u.shutdown.deadline = w->shutdown_at;
	worker_send_frame(w, &f);
	w->shutdown_sent = 1;
}

/* Before hello, a broken frame is a refused hello (PROTOCOL.md section 5). */
void
worker_protocol_error(struct worker *w, const char *why)
{
	pool_counters(w->pool)->protocol_errors++;
	snprintf(w->cut, sizeof(w->cut), "%s: %s", w->state == W_STARTING ?
	    "hello refused" : "protocol error", why);
	log_warnx("worker=%d pid=%d: %s; disconnecting", w->id, (int)w->pid,
	    w->cut);
	/* what it says can no longer be trusted: no grace */
	worker_close(w, SIGKILL);
}

/* --- the frames a worker sends -------------------------------------------- */

static void
handle_hello(struct worker *w, struct frame *f)
{
	struct frame out = { .type = FRAME_WELCOME };

	if (w->hello) {
		worker_protocol_error(w, "second hello");
		return;
	}
	/*
	 * Read only once it was told to go or found gone (its last frames,
	 * read after its death): no welcome, and no work for it.
	 */
	if (w->state != W_STARTING) {
		log_debug("worker=%d pid=%d: hello after it was told to go; "
		    "not welcomed", w->id, (int)w->pid);
		return;
	}
	if (f->u.hello.protocol != PROTO_VERSION) {
		snprintf(w->cut, sizeof(w->cut), "hello refused: it speaks "
		    "protocol %d, this daemon %d", f->u.hello.protocol,
		    PROTO_VERSION);
		log_warnx("worker=%d pid=%d: %s", w->id, (int)w->pid, w->cut);
		worker_close(w, SIGTERM);
		return;
	}
	out.u.welcome.protocol = PROTO_VERSION;
	out.u.welcome.worker_id = w->id;
	out.u.welcome.bot = pool_bot(w->pool);
	out.u.welcome.max_frame = PROTO_MAX_FRAME;
	pool_worker_api(w);
	if (w->api_root != NULL) {
		out.u.welcome.api_root = w->api_root;
		out.u.welcome.api_token = w->api_token;
	}
	if (worker_send_frame(w, &out) == -1) {
		worker_close(w, SIGTERM);
		return;
	}
	evtimer_del(w->hello_timer);
	w->hello = 1;
	w->slots = f->u.hello.slots;
	worker_set_state(w, W_READY);
	log_info("worker=%d pid=%d: hello slots=%d%s%s", w->id, (int)w->pid,
	    w->slots, f->u.hello.name ? " name=" : "",
	    f->u.hello.name ? f->u.hello.name : "");
	pool_worker_ready(w);
}

/*
 * A frame (or an endpoint request) the protocol tolerates but does not
 * obey (PROTOCOL.md section 5): warn, the first few times per worker only,
 * so that a worker stuck in a loop cannot flood the log.
 */
void
worker_complain(struct worker *w, const char *what, int64_t id,
    const char *outcome)
{
	if (w->complaints > WORKER_COMPLAINTS_MAX)
		return;
	if (++w->complaints > WORKER_COMPLAINTS_MAX) {
		log_warnx("worker=%d pid=%d: more frames for updates it does "
		    "not hold; not logging them any more", w->id, (int)w->pid);
		return;
	}
	log_warnx("worker=%d pid=%d: %s for update=%lld, which is not held by "
	    "this worker (answered already, or never sent to it); %s", w->id,
	    (int)w->pid, what, (long long)id, outcome);
}

/*
 * A call for an update w does not hold: its key's order cannot be kept, so
 * it is not made; the worker hears why (and uses id 0 next time).
 */
static void
worker_refuse_call(struct worker *w, const struct frame *f)
{
	struct frame out = { .type = FRAME_RESULT };
	char desc[160];

	worker_complain(w, "call", f->u.call.id, "answered with an error");
	snprintf(desc, sizeof(desc), "tgrunner: update %lld is not held by "
	    "this worker", (long long)f->u.call.id);
	out.u.result.ref = f->u.call.ref;
	out.u.result.ok = 0;
	out.u.result.error_code = 400;
	out.u.result.description = desc;
	worker_send_frame(w, &out);
}

/* The first answer counts: a late or stray one changes nothing. */
static void
handle_done(struct worker *w, struct frame *f)
{
	if (pool_run_done(w, f->u.done.id, f->u.done.calls) == -1)
		worker_complain(w, "done", f->u.done.id, "ignored");
}

static void
handle_fail(struct worker *w, struct frame *f)
{
	char why[256];

	snprintf(why, sizeof(why), "worker failed it: %s",
	    f->u.fail.error ? f->u.fail.error : "(no reason)");
	if (pool_run_failed(w, f->u.fail.id, why, f->u.fail.retry) == -1)
		worker_complain(w, "fail", f->u.fail.id, "ignored");
}

static void
handle_call(struct worker *w, struct frame *f)
{
	if (pool_run_call(w, f->u.call.id, f->u.call.ref, f->u.call.method,
	    f->u.call.params) == -1)
		worker_refuse_call(w, f);
}

/* One switch per receiver; every case a named handler. */
void
worker_input(struct worker *w, struct frame *f)
{
	char err[64];

	log_debug("worker=%d pid=%d: <- %s", w->id, (int)w->pid,
	    proto_type_name(f->type));
	if (w->state == W_STARTING && f->type != FRAME_HELLO) {
		snprintf(err, sizeof(err), "a %s frame came first",
		    proto_type_name(f->type));
		worker_protocol_error(w, err);
		return;
	}
	switch (f->type) {
	case FRAME_HELLO:
		handle_hello(w, f);
		break;
	case FRAME_DONE:
		handle_done(w, f);
		break;
	case FRAME_FAIL:
		handle_fail(w, f);
		break;
	case FRAME_CALL:
		handle_call(w, f);
		break;
	default:
		worker_protocol_error(w, "unexpected frame type");
		break;
	}
}

/*
 * The peer closed its end.  A drained worker that holds nothing is leaving
 * as asked: it gets kill_grace to exit.  Otherwise it is told to go.
 */
void
worker_closed(struct worker *w)
{
	if (w->state == W_DRAINING && TAILQ_EMPTY(&w->runs))
		worker_close(w, 0);
	else
		worker_close(w, SIGTERM);
}

/* --- frames over a stream socket ------------------------------------------ */

static void
wsock_read(struct bufferevent *bev, void *arg)
{
	struct wsock *s = arg;
	struct worker *w = s->w;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr eol;
	struct frame f;
	char err[256];
	size_t eol_len;
	char *line;

	/* s->bev goes NULL when a handler closes the connection */
	while (s->bev != NULL) {
		eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		if (eol.pos == -1) {
			if (evbuffer_get_length(in) >= PROTO_MAX_FRAME)
				worker_protocol_error(w, "frame too long");
			return;
		}
		if ((size_t)eol.pos + 1 > PROTO_MAX_FRAME) {
			worker_protocol_error(w, "frame too long");
			return;
		}
		line = (char *)evbuffer_pullup(in, eol.pos + 1);
		if (proto_decode(line, (size_t)eol.pos, PROTO_W2D, &f, err,
		    sizeof(err)) == -1) {
			worker_protocol_error(w, err);
			return;
		}
		evbuffer_drain(in, (size_t)eol.pos + 1);
		worker_input(w, &f);
		frame_clear(&f);
	}
}

static void
wsock_event(struct bufferevent *bev, short what, void *arg)
{
	struct wsock *s = arg;
	struct worker *w = s->w;

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	log_debug("worker=%d pid=%d: connection %s%s (%zu bytes unread)",
	    w->id, (int)w->pid, what & BEV_EVENT_EOF ? "closed" : "error",
	    what & BEV_EVENT_WRITING ? " while writing" : "",
	    evbuffer_get_length(bufferevent_get_input(bev)));
	/*
	 * A write to a peer that is gone can fail before the read event with
	 * its last frames (a done) is handled: read them first.
	 */
	wsock_drain(s);
	worker_closed(w);
}

void
wsock_open(struct wsock *s, struct worker *w, int fd)
{
	s->w = w;
	s->bev = bufferevent_socket_new(pool_base(w->pool), fd,
	    BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL)
		fatalx(EXIT_NOMEM, "%s: bufferevent_socket_new", __func__);
	bufferevent_setcb(s->bev, wsock_read, NULL, wsock_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

int
wsock_send(struct wsock *s, const char *line, size_t len)
{
	ssize_t n = 0;

	if (s->bev == NULL)
		return -1;
	/*
	 * Nothing queued before it: write the frame now.  Through the
	 * bufferevent it would wait for EPOLLOUT, costing a loop pass and two
	 * epoll_ctl calls per frame to a worker with one slot.  What the
	 * socket does not take (or an error, which the bufferevent then
	 * meets and reports) goes the usual way, behind nothing.
	 */
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 &&
	    (n = send(bufferevent_getfd(s->bev), line, len,
	    MSG_DONTWAIT | MSG_NOSIGNAL)) < 0)
		n = 0;
	if ((size_t)n == len)
		return 0;
	if (bufferevent_write(s->bev, line + n, len - (size_t)n) == -1) {
		log_warnx("worker=%d pid=%d: cannot queue frame", s->w->id,
		    (int)s->w->pid);
		return -1;
	}
	return 0;
}

/*
 * The peer is gone, but what it wrote before it went may still sit in the
 * socket (a done raced with SIGCHLD, or with a failed write to it): read
 * and handle it, or updates it finished would run again.  It takes no new
 * work meanwhile (a done frees a slot; a hello would offer some).
 *
 * A socket bufferevent freezes the end of its input buffer, and unfreezes
 * it only around its own reads: evbuffer_read() fails on it unless it is
 * unfrozen the same way.
 */
void
wsock_drain(struct wsock *s)
{
	struct worker *w = s->w;
	struct evbuffer *in;
	evutil_socket_t fd;

	if (s->bev == NULL)
		return;
	if (w->state == W_STARTING || w->state == W_READY)
		worker_set_state(w, W_KILLING);
	in = bufferevent_get_input(s->bev);
	fd = bufferevent_getfd(s->bev);
	evbuffer_unfreeze(in, 0);
	while (evbuffer_get_length(in) <= PROTO_MAX_FRAME &&
	    evbuffer_read(in, fd, 65536) > 0)
		;
	evbuffer_freeze(in, 0);
	wsock_read(s->bev, s);
}

void
wsock_close(struct wsock *s)
{
	if (s->bev != NULL) {
		bufferevent_free(s->bev);
		s->bev = NULL;
		pool_worker_unreachable(s->w);
	}
}

/*
 * tgrunner-relay: runs on a worker host and offers its workers' slots to
 * one tgrunnerd over NATS.  It starts and supervises local workers exactly
 * as tgrunnerd does (the same pool: workers, worker_command, max_requests,
 * hello_timeout, listen; the same protocol on fd 3), joins the daemon as
 * one remote worker whose slots are theirs, and carries frames both ways:
 * updates, cancels and call results in, done, fail and calls out.  It
 * holds no token and no journal: the daemon decides what runs where, and
 * what happens when this relay is lost.  See tgrunner-relay(8) and
 * proto/NATS.md.
 *
 * A session with the daemon has an epoch.  Every update belongs to the
 * session it came in; once that session is over (the daemon said so, or
 * has been silent for relay_timeout while we could talk), its updates
 * still running here are cancelled and their answers dropped: the daemon
 * has given them to someone else.
 */
#include "config.h"

#include <sys/queue.h>

#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <systemd/sd-daemon.h>
#include <uthash.h>

#include "conf.h"
#include "jscan.h"
#include "keys.h"
#include "listener.h"
#include "log.h"
#include "natsbus.h"
#include "pool.h"
#include "proto.h"
#include "router.h"
#include "tailq.h"
#include "timeutil.h"
#include "xmalloc.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONF		SYSCONFDIR "/tgrunner-relay.conf"
#define RELAY_SUBJECT_MAX	256
#define RELAY_HELLO_EVERY	1000	/* ms between hellos without a session */
#define RELAY_REFUSED_WAIT	10000	/* ms after a refused hello */
#define RELAY_MAX_CALLS		4096	/* calls of our workers in flight */
#define RELAY_WINDOW		(PROTO_MAX_SLOTS * 64)	/* frames in flight */
#define RELAY_NORESP_GONE	3	/* beats the daemon did not hear */

/* An update held here, with the session it came in. */
struct rjob {
	struct job		*job;
	uint64_t		 epoch;
	int			 running;	/* in a worker */
	int			 waiting;	/* an older one of its id runs */
	TAILQ_ENTRY(rjob)	 entry;		/* relay->jobs */
	UT_hash_handle		 hh;		/* relay->current by id */
};

/* A call of one of our workers, waiting for the daemon's result. */
struct rcall {
	int64_t			 ref;		/* ours, on the wire */
	int			 worker_id;
	json_t			*oref;		/* the worker's */
	uint64_t		 epoch;
	UT_hash_handle		 hh;
};

struct relay {
	struct event_base	*base;
	struct conf		 conf;
	struct pool		*pool;
	struct router		*router;
	struct listener		*listener;
	struct natsbus		*nb;
	char			 name[65];
	int64_t			 instance;
	char			 s_hello[RELAY_SUBJECT_MAX];
	char			 s_frame[RELAY_SUBJECT_MAX];
	char			 s_beat[RELAY_SUBJECT_MAX];
	char			 s_welcome[RELAY_SUBJECT_MAX];
	char			 s_probe[RELAY_SUBJECT_MAX];
	char			 s_in[RELAY_SUBJECT_MAX];

	/* the session: epoch 0 while there is none */
	uint64_t		 epoch;
	struct nlink		 link;
	int			 worker_id;	/* ours at the daemon */
	int64_t			 heard;		/* mono ms */
	int64_t			 beat_ms;
	int64_t			 beat_at;	/* mono ms, last beat sent */
	int64_t			 timeout;
	int64_t			 hello_at;
	int64_t			 hello_wait;
	int			 noresp;
	int			 slots_told;
	int			 bye_owed;	/* the daemon said shutdown */
	size_t			 running;	/* the session's, in workers */

	TAILQ_HEAD(, rjob)	 jobs;		/* every job here */
	struct rjob		*current;	/* the session's, by id */
	size_t			 njobs;
	struct rcall		*calls;
	size_t			 ncalls;
	int64_t			 next_ref;
	json_t			*bot;
	int			 stopping;
	int			 deadline_passed;
	struct event		*tick;
	struct event		*announce;	/* slots, once per loop pass */
	struct event		*ev_sig[5];
	struct event		*ev_shutdown;
	uint64_t		 sessions, stale_dropped, done, failed;
};

static void	relay_dispatch(struct relay *);
static void	relay_end_session(struct relay *, const char *why);

static const char usage_text[] =
    "usage: tgrunner-relay [-dhnvV] [-c file]\n"
    "  -c, --config FILE  configuration file (default " DEFAULT_CONF ")\n"
    "  -n, --check        check the configuration and exit\n"
    "  -v, --verbose      with -n: print the effective configuration\n"
    "  -d, --debug        log at debug level\n"
    "  -h, --help         print this help and exit\n"
    "  -V, --version      print the version and exit\n";

/* A usage error: sysexits' EX_USAGE, help on stderr. */
static __attribute__((noreturn)) void
usage(void)
{
	fputs(usage_text, stderr);
	exit(64);
}

/* --- to the daemon --------------------------------------------------------- */

static void
relay_send_frame(struct relay *r, const struct frame *f)
{
	char *line;
	size_t len;

	if (r->epoch == 0)
		return;
	if ((line = proto_encode(f, &len)) == NULL) {
		log_warnx("cannot encode a %s frame", proto_type_name(f->type));
		return;
	}
	if (nlink_send(&r->link, line, len - 1) == -1)
		relay_end_session(r, "too many frames not acknowledged");
	free(line);
}

static void
relay_send_json(struct relay *r, json_t *o)
{
	char *text;

	if ((text = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	json_decref(o);
	if (r->epoch != 0 && nlink_send(&r->link, text, strlen(text)) == -1)
		relay_end_session(r, "too many frames not acknowledged");
	free(text);
}

/* What the daemon may give us now: our free slots and what runs for it. */
static int
relay_slots(const struct relay *r)
{
	size_t n = pool_free_slots(r->pool) + r->running;

	if (r->stopping || r->bye_owed)
		return 0;
	return n > INT_MAX ? INT_MAX : (int)n;
}

static void
relay_announce_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct relay *r = arg;
	int n;

	if (r->epoch == 0 || (n = relay_slots(r)) == r->slots_told)
		return;
	r->slots_told = n;
	log_debug("offering %d slot(s)", n);
	relay_send_json(r, json_pack("{s:s, s:i}", "type", "slots", "slots",
	    n));
}

/* Slots may have changed: say so once this loop pass is over. */
static void
relay_announce(struct relay *r)
{
	if (r->epoch != 0)
		event_active(r->announce, 0, 0);
}

static void
relay_hello(struct relay *r)
{
	char *text;
	json_t *o;

	r->hello_at = mono_ms();
	o = json_pack("{s:s, s:i, s:i, s:s, s:I, s:I, s:i}", "type", "hello",
	    "protocol", PROTO_VERSION, "slots", (int)pool_free_slots(r->pool),
	    "name", r->name, "instance", (json_int_t)r->instance,
	    "kill_grace", (json_int_t)r->conf.kill_grace, "pid", (int)getpid());
	if (o == NULL || (text = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	json_decref(o);
	log_debug("hello to %s", r->s_hello);
	(void)natsbus_publish(r->nb, r->s_hello, r->s_welcome, NULL, text,
	    strlen(text));
	free(text);
}

/* --- jobs --------------------------------------------------------------------- */

static void
relay_job_free(struct relay *r, struct rjob *rj)
{
	TAILQ_REMOVE(&r->jobs, rj, entry);
	r->njobs--;
	if (rj->epoch == r->epoch && r->epoch != 0)
		HASH_DEL(r->current, rj);
	job_free(rj->job);
	free(rj);
}

/* Another job of this id is here (an ended session's, still running). */
static int
relay_id_busy(struct relay *r, const struct rjob *self)
{
	struct rjob *rj;

	TAILQ_FOREACH(rj, &r->jobs, entry)
		if (rj != self && rj->job->id == self->job->id && !rj->waiting)
			return 1;
	return 0;
}

/* A job left: one of its id that waited for it may go to the router. */
static void
relay_release_waiting(struct relay *r, int64_t id)
{
	struct keyset ks = { .n = 0 };
	struct rjob *rj;

	TAILQ_FOREACH(rj, &r->jobs, entry)
		if (rj->waiting && rj->job->id == id && !relay_id_busy(r, rj)) {
			rj->waiting = 0;
			router_add(r->router, rj->job, &ks);
			return;
		}
}

/* The job is over here: its keys free, its successor (if any) started. */
static void
relay_job_end(struct relay *r, struct job *job, struct worker *w)
{
	struct rjob *rj = job->user;
	struct job *next;
	int64_t id = job->id;

	if (rj->running && rj->epoch == r->epoch && r->running > 0)
		r->running--;
	rj->running = 0;
	next = router_finish(r->router, job);
	relay_job_free(r, rj);
	if (next != NULL) {
		if (pool_dispatch(r->pool, next, w) == 0) {
			((struct rjob *)next->user)->running = 1;
			if (((struct rjob *)next->user)->epoch == r->epoch)
				r->running++;
		} else
			router_retry(r->router, next);
	}
	relay_release_waiting(r, id);
	relay_dispatch(r);
	relay_announce(r);
}

static void
relay_dispatch(struct relay *r)
{
	struct job *job;
	struct rjob *rj;

	while (pool_free_slots(r->pool) > 0 &&
	    (job = router_next(r->router)) != NULL) {
		if (pool_dispatch(r->pool, job, NULL) == -1) {
			router_retry(r->router, job);
			break;
		}
		rj = job->user;
		rj->running = 1;
		if (rj->epoch == r->epoch)
			r->running++;
	}
}

static void
relay_job_done(void *arg, struct job *job, struct worker *w, json_t *calls)
{
	struct relay *r = arg;
	struct rjob *rj = job->user;
	struct frame f = { .type = FRAME_DONE };

	if (rj->epoch == r->epoch && r->epoch != 0) {
		r->done++;
		f.u.done.id = job->id;
		f.u.done.calls = calls;
		relay_send_frame(r, &f);
	} else {
		r->stale_dropped++;
		log_info("update=%lld done, but its session (epoch %" PRIu64
		    ") is over: not reported", (long long)job->id, rj->epoch);
	}
	relay_job_end(r, job, w);
}

static void
relay_job_failed(void *arg, struct job *job, const char *why, int retry)
{
	struct relay *r = arg;
	struct rjob *rj = job->user;
	struct frame f = { .type = FRAME_FAIL };

	if (rj->epoch == r->epoch && r->epoch != 0) {
		r->failed++;
		f.u.fail.id = job->id;
		f.u.fail.error = why;
		f.u.fail.retry = retry;
		relay_send_frame(r, &f);
	} else
		r->stale_dropped++;
	relay_job_end(r, job, NULL);
}

static void
relay_capacity(void *arg)
{
	struct relay *r = arg;

	relay_dispatch(r);
	relay_announce(r);
}

/* A call answered here, without the daemon. */
static void
relay_refuse_call(struct relay *r, int worker_id, json_t *ref, int code,
    const char *why)
{
	pool_result(r->pool, worker_id, ref, 0, NULL, code, why, NULL, 0);
}

static void
relay_call(void *arg, int worker_id, json_t *ref, struct job *job,
    const char *method, json_t *params)
{
	struct relay *r = arg;
	struct rjob *rj = job != NULL ? job->user : NULL;
	struct frame f = { .type = FRAME_CALL };
	struct rcall *c;
	json_t *wref;

	if (r->epoch == 0 || (rj != NULL && rj->epoch != r->epoch)) {
		relay_refuse_call(r, worker_id, ref, 503, "tgrunner-relay: no "
		    "session with the daemon for this update");
		return;
	}
	if (r->ncalls >= RELAY_MAX_CALLS) {
		log_warnx("%d calls in flight, the bound: refusing one",
		    RELAY_MAX_CALLS);
		relay_refuse_call(r, worker_id, ref, 429, "tgrunner-relay: "
		    "too many calls in flight");
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->ref = ++r->next_ref;
	c->worker_id = worker_id;
	c->oref = json_incref(ref);
	c->epoch = r->epoch;
	HASH_ADD(hh, r->calls, ref, sizeof(c->ref), c);
	r->ncalls++;
	wref = json_integer((json_int_t)c->ref);
	f.u.call.id = job != NULL ? job->id : 0;
	f.u.call.ref = wref;
	f.u.call.method = method;
	f.u.call.params = params;
	relay_send_frame(r, &f);
	json_decref(wref);
}

static const struct pool_ops relay_pool_ops = {
	.done = relay_job_done,
	.failed = relay_job_failed,
	.capacity = relay_capacity,
	.call = relay_call,
};

/* --- frames from the daemon ------------------------------------------------ */

static int
relay_keys(json_t *keys, struct keyset *ks)
{
	size_t i, n;
	json_t *k;

	ks->n = 0;
	json_array_foreach(keys, i, k) {
		n = strlen(json_string_value(k));
		if (ks->n == KEYS_MAX || n >= KEY_STRLEN)
			return -1;
		memcpy(ks->k[ks->n++], json_string_value(k), n + 1);
	}
	return 0;
}

static void
relay_update(struct relay *r, struct frame *f, const char *line, size_t len)
{
	struct keyset ks;
	struct jspan frame, upd;
	struct rjob *rj;
	int64_t id = f->u.update.id;

	HASH_FIND(hh, r->current, &id, sizeof(id), rj);
	if (rj != NULL) {
		log_warnx("update=%lld sent twice in one session; ignored",
		    (long long)id);
		return;
	}
	/* the update's own bytes, as the daemon passed them on */
	frame = jscan_span(line, len);
	if (relay_keys(f->u.update.keys, &ks) == -1 ||
	    jscan_member(frame, "update", &upd) == -1) {
		relay_end_session(r, "a malformed update frame");
		return;
	}
	rj = xcalloc(1, sizeof(*rj));
	rj->job = job_new(id, upd.p, (size_t)(upd.e - upd.p));
	rj->job->attempt = f->u.update.attempt;
	rj->job->deadline = f->u.update.deadline;
	rj->job->user = rj;
	rj->epoch = r->epoch;
	TAILQ_INSERT_TAIL(&r->jobs, rj, entry);
	r->njobs++;
	HASH_ADD(hh, r->current, job->id, sizeof(int64_t), rj);
	/*
	 * With keys, the router keeps it behind an ended session's run of the
	 * same update; without, it waits here so that two runs of one id
	 * never meet in the pool.
	 */
	if (ks.n == 0 && relay_id_busy(r, rj)) {
		rj->waiting = 1;
		log_info("update=%lld waits for its run of an ended session",
		    (long long)id);
		return;
	}
	router_add(r->router, rj->job, &ks);
	relay_dispatch(r);
	relay_announce(r);
}

static void
relay_result(struct relay *r, struct frame *f)
{
	struct rcall *c;
	int64_t ref;

	if (!json_is_integer(f->u.result.ref))
		return;
	ref = json_integer_value(f->u.result.ref);
	HASH_FIND(hh, r->calls, &ref, sizeof(ref), c);
	if (c == NULL)
		return;
	HASH_DEL(r->calls, c);
	r->ncalls--;
	pool_result(r->pool, c->worker_id, c->oref, f->u.result.ok,
	    f->u.result.result, f->u.result.error_code,
	    f->u.result.description, f->u.result.parameters,
	    f->u.result.retry_after);
	json_decref(c->oref);
	free(c);
}

static void
relay_maybe_bye(struct relay *r)
{
	struct rjob *rj;

	if (!r->bye_owed || r->epoch == 0)
		return;
	TAILQ_FOREACH(rj, &r->jobs, entry)
		if (rj->epoch == r->epoch)
			return;
	relay_send_json(r, json_pack("{s:s}", "type", "bye"));
	log_notice("the daemon is stopping: left the session (epoch %" PRIu64
	    ")", r->epoch);
	nlink_beat(&r->link);
	relay_end_session(r, NULL);
}

static void
relay_welcome(struct relay *r, struct frame *f)
{
	json_t *v;

	json_decref(r->bot);
	r->bot = json_incref(f->u.welcome.bot);
	r->worker_id = f->u.welcome.worker_id;
	v = json_object_get(f->root, "heartbeat");
	r->beat_ms = json_is_integer(v) && json_integer_value(v) >= 100 &&
	    json_integer_value(v) <= 60000 ? json_integer_value(v) : 1000;
	v = json_object_get(f->root, "relay_timeout");
	r->timeout = json_is_integer(v) && json_integer_value(v) >= 1000 &&
	    json_integer_value(v) <= 600000 ? json_integer_value(v) :
	    r->conf.relay_timeout;
	log_notice("joined the daemon: epoch=%" PRIu64 " worker=%d "
	    "heartbeat=%lldms", r->epoch, r->worker_id,
	    (long long)r->beat_ms);
	pool_start(r->pool, r->bot);
	r->slots_told = -1;
	relay_announce(r);
}

static void
relay_frame(void *arg, const char *line, size_t len)
{
	struct relay *r = arg;
	struct rjob *rj;
	struct frame f;
	char err[256];

	if (proto_decode(line, len, PROTO_D2W, &f, err, sizeof(err)) == -1) {
		log_warnx("the daemon sent a bad frame: %s", err);
		relay_end_session(r, "a bad frame from the daemon");
		return;
	}
	switch (f.type) {
	case FRAME_WELCOME:
		relay_welcome(r, &f);
		break;
	case FRAME_UPDATE:
		relay_update(r, &f, line, len);
		break;
	case FRAME_RESULT:
		relay_result(r, &f);
		break;
	case FRAME_CANCEL:
		HASH_FIND(hh, r->current, &f.u.cancel.id, sizeof(int64_t), rj);
		if (rj != NULL)
			pool_cancel(r->pool, rj->job, f.u.cancel.reason ?
			    f.u.cancel.reason : "cancelled by the daemon");
		break;
	case FRAME_SHUTDOWN:
		r->bye_owed = 1;
		relay_announce(r);
		relay_maybe_bye(r);
		break;
	default:
		break;
	}
	frame_clear(&f);
}

static void
relay_link_error(void *arg, const char *why)
{
	relay_end_session(arg, why);
}

/* --- the session -------------------------------------------------------------- */

/*
 * The session is over (why NULL: we said bye).  Its updates are the
 * daemon's to give elsewhere: those still running here are cancelled, and
 * whatever they answer is dropped; its calls get an error.
 */
static void
relay_end_session(struct relay *r, const char *why)
{
	struct rcall *c, *tc;
	struct rjob *rj, *tj;
	uint64_t old = r->epoch;
	size_t n = 0;

	if (old == 0)
		return;
	if (why != NULL)
		log_warnx("session epoch=%" PRIu64 " is over: %s", old, why);
	HASH_CLEAR(hh, r->current);
	r->epoch = 0;
	r->running = 0;
	r->bye_owed = 0;
	nlink_clear(&r->link);
	HASH_ITER(hh, r->calls, c, tc) {
		HASH_DEL(r->calls, c);
		r->ncalls--;
		relay_refuse_call(r, c->worker_id, c->oref, 503,
		    "tgrunner-relay: the session with the daemon is over");
		json_decref(c->oref);
		free(c);
	}
	TAILQ_FOREACH_SAFE(rj, &r->jobs, entry, tj) {
		if (rj->epoch != old)
			continue;
		n++;
		if (rj->running)
			pool_cancel(r->pool, rj->job, "its relay session is "
			    "over");
	}
	if (n > 0)
		log_warnx("%zu update(s) of that session still here: their "
		    "answers will be dropped", n);
	r->hello_wait = RELAY_HELLO_EVERY;
	r->hello_at = 0;
}

static void
relay_begin_session(struct relay *r, const struct nbhdr *h)
{
	if (r->epoch != 0)
		relay_end_session(r, "the daemon started a new one");
	r->epoch = h->epoch;
	r->sessions++;
	r->heard = mono_ms();
	r->noresp = 0;
	r->bye_owed = 0;
	r->running = 0;
	r->slots_told = -1;
	r->beat_ms = 1000;
	r->timeout = r->conf.relay_timeout;
	nlink_init(&r->link, r->nb, r->base, r->s_frame, r->s_beat, h->epoch,
	    RELAY_WINDOW);
	nlink_reply(&r->link, NULL, r->s_probe);
	r->link.instance = r->instance;
	r->link.frame = relay_frame;
	r->link.error = relay_link_error;
	r->link.arg = r;
}

/* A message on the gone subject: {"type":"gone"} or "refused". */
static int
relay_notice(struct relay *r, natsMsg *m, const struct nbhdr *h)
{
	json_t *o, *t, *why;
	const char *type;
	int rv = 0;

	if (natsMsg_GetDataLength(m) == 0)
		return 0;
	if ((o = json_loadb(natsMsg_GetData(m),
	    (size_t)natsMsg_GetDataLength(m), 0, NULL)) == NULL)
		return 1;
	t = json_object_get(o, "type");
	why = json_object_get(o, "reason");
	type = json_is_string(t) ? json_string_value(t) : "";
	if (strcmp(type, "gone") == 0 && h->epoch == r->epoch &&
	    r->epoch != 0) {
		char text[200];

		snprintf(text, sizeof(text), "the daemon says: %s",
		    json_is_string(why) ? json_string_value(why) : "gone");
		relay_end_session(r, text);
	} else if (strcmp(type, "refused") == 0) {
		log_warnx("the daemon refused us: %s; trying again in %d s",
		    json_is_string(why) ? json_string_value(why) : "?",
		    RELAY_REFUSED_WAIT / 1000);
		r->hello_wait = RELAY_REFUSED_WAIT;
	}
	rv = 1;
	json_decref(o);
	return rv;
}

static void
relay_msg(void *arg, natsMsg *m)
{
	struct relay *r = arg;
	const char *subj = natsMsg_GetSubject(m), *kind;
	struct nbhdr h;

	if (strncmp(subj, r->s_in, strlen(r->s_in)) != 0)
		return;
	kind = subj + strlen(r->s_in);
	if (strcmp(kind, "nobody") == 0) {
		if (natsMsg_IsNoResponders(m))
			r->noresp++;
		return;
	}
	if (natsbus_headers(m, &h) == -1)
		return;
	if (strcmp(kind, "welcome") == 0 && h.epoch == 0) {
		relay_notice(r, m, &h);		/* refused */
		return;
	}
	if (strcmp(kind, "beat") == 0 && relay_notice(r, m, &h))
		return;
	if (strcmp(kind, "welcome") == 0 && h.seq == 1 &&
	    h.instance == r->instance && h.epoch > r->epoch &&
	    !r->stopping)
		relay_begin_session(r, &h);
	if (h.epoch != r->epoch || r->epoch == 0)
		return;		/* a session that is over */
	r->heard = mono_ms();
	r->noresp = 0;
	if (strcmp(kind, "beat") == 0)
		nlink_control(&r->link, &h);
	else if (h.seq > 0)
		nlink_input(&r->link, natsMsg_GetData(m),
		    (size_t)natsMsg_GetDataLength(m), &h);
}

static void
relay_link_state(void *arg, int up)
{
	struct relay *r = arg;

	if (!up)
		return;
	r->hello_at = 0;
	if (r->epoch != 0) {
		/* the silence was ours: the daemon gets relay_timeout anew */
		r->heard = mono_ms();
		r->noresp = 0;
		nlink_resend(&r->link, "reconnected");
		nlink_beat(&r->link);
	}
}

static const struct natsbus_ops relay_nb_ops = {
	.msg = relay_msg,
	.link = relay_link_state,
};

static void
relay_maybe_exit(struct relay *r)
{
	if (r->stopping && pool_alive(r->pool) == 0 &&
	    (r->epoch == 0 || r->link.nunacked == 0 || r->deadline_passed))
		event_base_loopexit(r->base, NULL);
}

static void
relay_tick(evutil_socket_t fd, short ev, void *arg)
{
	struct relay *r = arg;
	int64_t now = mono_ms();

	relay_maybe_exit(r);
	if (!natsbus_up(r->nb))
		return;
	if (r->epoch == 0) {
		if (!r->stopping && now - r->hello_at >= r->hello_wait)
			relay_hello(r);
		return;
	}
	if (now - r->heard >= r->timeout) {
		relay_end_session(r, "the daemon has been silent for "
		    "relay_timeout");
		return;
	}
	if (r->noresp >= RELAY_NORESP_GONE) {
		relay_end_session(r, "the daemon is not listening (gone)");
		return;
	}
	nlink_tick(&r->link, 2 * r->beat_ms);
	if (now - r->beat_at >= r->beat_ms) {
		r->beat_at = now;
		nlink_beat(&r->link);
	}
}

/* --- lifecycle ---------------------------------------------------------------- */

static void
relay_shutdown_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct relay *r = arg;

	log_warnx("shutdown_timeout passed; killing workers");
	r->deadline_passed = 1;
	pool_kill(r->pool);
	relay_maybe_exit(r);
}

static void
relay_stop(struct relay *r, const char *why)
{
	struct timeval tv = tv_ms(r->conf.shutdown_timeout);

	if (r->stopping) {
		log_warnx("%s again: killing workers now", why);
		r->deadline_passed = 1;
		pool_kill(r->pool);
		relay_maybe_exit(r);
		return;
	}
	log_notice("stopping (%s): %zu update(s) here", why, r->njobs);
	sd_notify(0, "STOPPING=1");
	r->stopping = 1;
	/* what the daemon gave us is answered first: it gets no more */
	if (r->epoch != 0) {
		relay_announce_cb(-1, 0, r);
		r->bye_owed = 1;
		relay_maybe_bye(r);
	}
	pool_shutdown(r->pool, wall_ms() + r->conf.shutdown_timeout);
	evtimer_add(r->ev_shutdown, &tv);
	relay_maybe_exit(r);
}

static void
relay_reload(struct relay *r)
{
	char applied[1024], restart[1024], unused[512];
	struct conf_error err;
	struct conf nc;
	int replace;

	if (conf_load(r->conf.path, &nc, &err) == -1) {
		log_errx("reload: %s:%d: %s; keeping the running configuration",
		    err.file, err.line, err.msg);
		return;
	}
	if (conf_unused(&nc, CONF_RELAY, unused, sizeof(unused)) > 0)
		log_warnx("reload: %s: set but read by tgrunnerd only (ignored "
		    "here): %s", r->conf.path, unused);
	replace = strcmp(nc.worker_command ? nc.worker_command : "",
	    r->conf.worker_command ? r->conf.worker_command : "") != 0;
	conf_reload(&r->conf, &nc, applied, sizeof(applied), restart,
	    sizeof(restart));
	conf_clear(&nc);
	log_set_level(r->conf.log_level);
	if (restart[0] != '\0')
		log_warnx("reload: %s changed but take%s effect only at the "
		    "next start", restart, strchr(restart, ',') ? "" : "s");
	pool_reconfigure(r->pool, &r->conf, replace);
	log_notice("reloaded %s: changed=%s", r->conf.path,
	    applied[0] != '\0' ? applied : "none");
	relay_announce(r);
}

static void
relay_signal(evutil_socket_t sig, short ev, void *arg)
{
	struct relay *r = arg;

	switch (sig) {
	case SIGTERM:
	case SIGINT:
		relay_stop(r, sig == SIGTERM ? "SIGTERM" : "SIGINT");
		break;
	case SIGHUP:
		if (!r->stopping)
			relay_reload(r);
		break;
	case SIGCHLD:
		pool_reap(r->pool);
		relay_maybe_bye(r);
		relay_maybe_exit(r);
		break;
	}
}

static void
relay_open(struct relay *r)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD };
	const char *subjects[2] = { NULL, NULL };
	char sub[RELAY_SUBJECT_MAX], host[HOST_NAME_MAX + 1];
	const char *p = r->conf.nats_subject;
	struct timeval tv = tv_ms(200);
	size_t i;

	if (r->conf.relay_name != NULL)
		snprintf(r->name, sizeof(r->name), "%s", r->conf.relay_name);
	else {
		if (gethostname(host, sizeof(host)) == -1)
			fatal(EXIT_CONFIG, "gethostname");
		host[strcspn(host, ".")] = '\0';
		for (i = 0; host[i] != '\0'; i++)
			if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"
			    "RSTUVWXYZ0123456789_-", host[i]))
				host[i] = '_';
		snprintf(r->name, sizeof(r->name), "%.64s", host);
	}
	snprintf(r->s_hello, sizeof(r->s_hello), "%s.relay.%s.hello", p,
	    r->name);
	snprintf(r->s_frame, sizeof(r->s_frame), "%s.relay.%s.frame", p,
	    r->name);
	snprintf(r->s_beat, sizeof(r->s_beat), "%s.relay.%s.beat", p, r->name);
	snprintf(r->s_welcome, sizeof(r->s_welcome), "%s.daemon.%s.welcome",
	    p, r->name);
	snprintf(r->s_probe, sizeof(r->s_probe), "%s.daemon.%s.nobody", p,
	    r->name);
	snprintf(r->s_in, sizeof(r->s_in), "%s.daemon.%s.", p, r->name);
	snprintf(sub, sizeof(sub), "%s.daemon.%s.>", p, r->name);
	subjects[0] = sub;
	/* a random instance: our hellos' answers are ours */
	r->instance = ((int64_t)random() << 31 | random()) & INT64_MAX;
	if (r->instance == 0)
		r->instance = 1;
	r->hello_wait = RELAY_HELLO_EVERY;
	r->slots_told = -1;
	TAILQ_INIT(&r->jobs);

	natsbus_init();
	if ((r->base = event_base_new()) == NULL)
		fatalx(EXIT_NOMEM, "cannot create the event loop");
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		r->ev_sig[i] = evsignal_new(r->base, sigs[i], relay_signal, r);
		evsignal_add(r->ev_sig[i], NULL);
	}
	r->ev_shutdown = evtimer_new(r->base, relay_shutdown_timeout, r);
	r->announce = event_new(r->base, -1, 0, relay_announce_cb, r);
	r->router = router_new();
	r->pool = pool_new(r->base, &r->conf, &relay_pool_ops, r);
	if (r->conf.listen != NULL &&
	    (r->listener = listener_new(r->pool, r->conf.listen)) == NULL)
		fatalx(EXIT_CONFIG, "cannot listen for workers on %s",
		    r->conf.listen);
	if ((r->nb = natsbus_new(r->base, &r->conf, r->name, subjects,
	    &relay_nb_ops, r)) == NULL)
		fatalx(EXIT_CONFIG, "cannot use NATS at %s", r->conf.nats_url);
	r->tick = event_new(r->base, -1, EV_PERSIST, relay_tick, r);
	event_add(r->tick, &tv);
	log_notice("relay %s: offering workers=%lld to %s.relay.%s on %s",
	    r->name, (long long)r->conf.workers, p, r->name,
	    r->conf.nats_url);
	sd_notify(0, "READY=1\nSTATUS=waiting for the daemon");
}

static void
relay_close(struct relay *r)
{
	struct rjob *rj;
	struct rcall *c, *tc;
	size_t i;

	listener_free(r->listener);
	pool_free(r->pool);
	if (r->epoch != 0) {
		HASH_CLEAR(hh, r->current);
		nlink_clear(&r->link);
	}
	natsbus_free(r->nb);
	while ((rj = TAILQ_FIRST(&r->jobs)) != NULL) {
		TAILQ_REMOVE(&r->jobs, rj, entry);
		if (rj->waiting)	/* the router has the others */
			job_free(rj->job);
		free(rj);
	}
	router_free(r->router);
	HASH_ITER(hh, r->calls, c, tc) {
		HASH_DEL(r->calls, c);
		json_decref(c->oref);
		free(c);
	}
	for (i = 0; i < sizeof(r->ev_sig) / sizeof(r->ev_sig[0]); i++)
		if (r->ev_sig[i] != NULL)
			event_free(r->ev_sig[i]);
	event_free(r->ev_shutdown);
	event_free(r->announce);
	event_free(r->tick);
	event_base_free(r->base);
	json_decref(r->bot);
	conf_clear(&r->conf);
}

/*
 * The file is the daemon's format with the daemon's checks; what only the
 * relay needs is checked here.  Options only the daemon reads are named
 * once (a copy of tgrunner.conf is a likely start), not refused: they are
 * harmless, and the same file may serve both on one host.
 */
static void
relay_load_conf(const char *path, struct conf *c, int check)
{
	struct conf_error err;
	char unused[512];

	if (conf_load(path, c, &err) == -1) {
		if (err.line > 0)
			fprintf(stderr, "%s:%d: %s\n", err.file, err.line,
			    err.msg);
		else
			fprintf(stderr, "%s: %s\n", err.file, err.msg);
		exit(EXIT_CONFIG);
	}
	if (c->nats_url == NULL) {
		fprintf(stderr, "%s: nats_url is required: the relay reaches "
		    "the daemon through NATS\n", path);
		exit(EXIT_CONFIG);
	}
	if (c->workers == 0 && c->listen == NULL) {
		fprintf(stderr, "%s: workers = 0 needs listen, or the relay has "
		    "nothing to offer\n", path);
		exit(EXIT_CONFIG);
	}
	if (conf_unused(c, CONF_RELAY, unused, sizeof(unused)) == 0)
		return;
	if (check)
		fprintf(stderr, "%s: warning: set but read by tgrunnerd only "
		    "(ignored here): %s\n", path, unused);
	else
		log_warnx("%s: set but read by tgrunnerd only (ignored here): "
		    "%s", path, unused);
}

int
main(int argc, char *argv[])
{
	static struct relay r;
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'n' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *path = DEFAULT_CONF;
	int ch, check = 0, debug = 0, verbose = 0;

	while ((ch = getopt_long(argc, argv, "c:dhnvV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 'd': debug = 1; break;
		case 'h': fputs(usage_text, stdout); return 0;
		case 'n': check = 1; break;
		case 'v': verbose = 1; break;
		case 'V': printf("tgrunner-relay %s\n", PACKAGE_VERSION);
			return 0;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (check) {
		relay_load_conf(path, &r.conf, 1);
		if (verbose)
			conf_print(&r.conf, stdout);
		printf("%s: configuration OK\n", path);
		return 0;
	}
	log_init("tgrunner-relay", LOG_LVL_INFO);
	relay_load_conf(path, &r.conf, 0);
	log_set_level(debug ? LOG_LVL_DEBUG : r.conf.log_level);
	srandom((unsigned)(getpid() ^ time(NULL) ^ (unsigned)mono_us()));
	relay_open(&r);
	event_base_dispatch(r.base);
	log_notice("stopped: sessions=%llu done=%llu failed=%llu stale "
	    "answers dropped=%llu", (unsigned long long)r.sessions,
	    (unsigned long long)r.done, (unsigned long long)r.failed,
	    (unsigned long long)r.stale_dropped);
	relay_close(&r);
	return 0;
}

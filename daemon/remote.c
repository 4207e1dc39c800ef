/*
 * Remote slots (remote.h): relay sessions as a connection type of the
 * pool, over NATS.  Subjects, with P the nats_subject prefix and R a
 * relay's name (proto/NATS.md):
 *
 *   P.relay.R.hello    relay -> daemon   hello, reply P.daemon.R.welcome
 *   P.relay.R.frame    relay -> daemon   done, fail, call, slots, bye
 *   P.relay.R.beat     relay -> daemon   heartbeat, acknowledgements
 *   P.daemon.R.frame   daemon -> relay   update, result, cancel, shutdown
 *   P.daemon.R.beat    daemon -> relay   heartbeat, acknowledgements, gone
 *
 * The name in the subject is the relay's identity: NATS permissions let a
 * relay publish under its own name only.
 */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <uthash.h>

#include "conf.h"
#include "log.h"
#include "metrics.h"
#include "natsbus.h"
#include "pool.h"
#include "proto.h"
#include "remote.h"
#include "timeutil.h"
#include "worker.h"
#include "xmalloc.h"

#define REMOTE_SUBJECT_MAX	320
#define REMOTE_NAME_MAX		64
#define REMOTE_WINDOW_EXTRA	4096	/* frames besides updates in flight */
#define REMOTE_NORESP_LOST	3	/* beats in a row nobody listened to */
#define REMOTE_STALE_LOG	10	/* stale messages logged per relay name */

struct rsession {
	struct remote		*rm;
	struct worker		*w;
	char			 name[REMOTE_NAME_MAX + 1];
	int64_t			 instance;	/* the relay process */
	uint64_t		 epoch;
	struct nlink		 link;
	int64_t			 heard;		/* mono ms, last message */
	int			 noresp;	/* beats nobody received */
	int			 ended;		/* off the table, going */
	int			 welcomed;
	int64_t			 kill_grace;	/* the relay's */
	struct event		*gone;		/* pool_worker_gone, from the loop */
	char			 why[160];
	UT_hash_handle		 hh;		/* rm->sessions by name */
};

struct remote {
	struct event_base	*base;
	struct pool		*pool;
	const struct conf	*conf;
	struct natsbus		*nb;
	struct rsession		*sessions;
	size_t			 nsessions;
	uint64_t		 epoch_base;
	uint64_t		 nepochs;
	struct event		*tick;
	int64_t			 beat_ms;
	int64_t			 up_since;	/* mono ms; 0 while down */
	char			 prefix[160];
	uint64_t		 hellos, refused, lost, stale, protocol;
	int			 stale_logged;
};

static void	remote_end(struct rsession *, const char *why);

/* --- subjects ---------------------------------------------------------------- */

static void
remote_subject(const struct remote *rm, char *buf, size_t size,
    const char *who, const char *name, const char *kind)
{
	snprintf(buf, size, "%s.%s.%s.%s", rm->prefix, who, name, kind);
}

/* "P.relay.R.kind": R and kind, or -1. */
static int
remote_parse_subject(const struct remote *rm, const char *subj, char *name,
    const char **kind)
{
	size_t plen = strlen(rm->prefix);
	const char *s, *dot;

	if (strncmp(subj, rm->prefix, plen) != 0 ||
	    strncmp(subj + plen, ".relay.", 7) != 0)
		return -1;
	s = subj + plen + 7;
	if ((dot = strchr(s, '.')) == NULL || dot == s ||
	    (size_t)(dot - s) > REMOTE_NAME_MAX)
		return -1;
	memcpy(name, s, (size_t)(dot - s));
	name[dot - s] = '\0';
	*kind = dot + 1;
	return 0;
}

/* Tell a relay that its session epoch is over (or never was). */
static void
remote_say_gone(struct remote *rm, const char *name, uint64_t epoch,
    const char *why)
{
	char subj[REMOTE_SUBJECT_MAX], *body;
	struct nbhdr h = { .epoch = epoch };
	json_t *o;

	remote_subject(rm, subj, sizeof(subj), "daemon", name, "beat");
	o = json_pack("{s:s, s:s}", "type", "gone", "reason", why);
	if (o == NULL || (body = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	(void)natsbus_publish(rm->nb, subj, NULL, &h, body, strlen(body));
	free(body);
	json_decref(o);
}

/* --- the connection type ------------------------------------------------------ */

/*
 * The welcome gets what a relay needs besides the protocol's members.  It
 * loses the Bot API endpoint's api_root and api_token: that endpoint
 * listens on the daemon's loopback, out of a worker host's reach, so the
 * relay's workers are never told of it (proto/NATS.md).
 */
static char *
remote_welcome(struct rsession *s, const char *line, size_t len, size_t *out)
{
	json_t *o;
	char *text;

	if ((o = json_loadb(line, len, 0, NULL)) == NULL)
		return NULL;
	json_object_del(o, "api_root");
	json_object_del(o, "api_token");
	json_object_set_new(o, "epoch", json_integer((json_int_t)s->epoch));
	json_object_set_new(o, "heartbeat", json_integer(s->rm->beat_ms));
	json_object_set_new(o, "relay_timeout",
	    json_integer(s->rm->conf->relay_timeout));
	json_object_set_new(o, "max_slots",
	    json_integer(s->rm->conf->relay_max_slots));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (text == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	*out = strlen(text);
	return text;
}

static int
remote_send(struct worker *w, const char *line, size_t len)
{
	struct rsession *s = w->conn;
	char *welcome;
	size_t n;
	int rv;

	if (s->ended || len == 0)
		return -1;
	if (!s->welcomed) {
		s->welcomed = 1;
		if ((welcome = remote_welcome(s, line, len - 1, &n)) == NULL)
			return -1;
		rv = nlink_send(&s->link, welcome, n);
		free(welcome);
		return rv;
	}
	if (nlink_send(&s->link, line, len - 1) == -1) {
		log_warnx("relay %s: %zu frames in flight, the bound; it is not "
		    "keeping up", s->name, s->link.nunacked);
		return -1;
	}
	return 0;
}

/*
 * Whatever the signal, a relay can only be let go: its session ends, it
 * is told, and its updates are given back from the loop.
 */
static void
remote_close(struct worker *w, int sig)
{
	struct rsession *s = w->conn;

	remote_end(s, sig == 0 ? "it left" : s->why[0] != '\0' ? s->why :
	    "the daemon let it go");
}

static int
remote_alive(const struct worker *w)
{
	return w->state != W_DEAD;
}

static void
remote_describe(const struct worker *w, json_t *o)
{
	const struct rsession *s = w->conn;

	json_object_set_new(o, "external", json_true());
	json_object_set_new(o, "relay", json_string(s->name));
	json_object_set_new(o, "epoch", json_integer((json_int_t)s->epoch));
	json_object_set_new(o, "unacked",
	    json_integer((json_int_t)s->link.nunacked));
	json_object_set_new(o, "resends",
	    json_integer((json_int_t)s->link.resends));
}

static void
remote_free_conn(struct worker *w)
{
	struct rsession *s = w->conn;

	if (!s->ended) {
		HASH_DEL(s->rm->sessions, s);
		s->rm->nsessions--;
	}
	nlink_clear(&s->link);
	event_free(s->gone);
	free(s);
}

static const struct worker_ops remote_ops = {
	.kind = "remote",
	.send = remote_send,
	.close = remote_close,
	.terminate = remote_close,
	.alive = remote_alive,
	.describe = remote_describe,
	.free = remote_free_conn,
};

static void
remote_gone(evutil_socket_t fd, short ev, void *arg)
{
	struct rsession *s = arg;
	struct pool *p = s->rm->pool;
	char why[256];

	snprintf(why, sizeof(why), "relay %s lost: %s", s->name, s->why);
	pool_worker_gone(s->w, why, 0);
	pool_capacity(p);
}

/* The session is over: off the table, told, its worker gone from the loop. */
static void
remote_end(struct rsession *s, const char *why)
{
	struct remote *rm = s->rm;

	if (s->ended)
		return;
	s->ended = 1;
	if (s->why != why)
		snprintf(s->why, sizeof(s->why), "%s", why);
	HASH_DEL(rm->sessions, s);
	rm->nsessions--;
	log_msg(s->w->busy == 0 && strcmp(s->why, "it left") == 0 ?
	    LOG_LVL_INFO : LOG_LVL_WARN, "relay %s epoch=%" PRIu64 ": session "
	    "ended: %s (%d update(s) it held run again elsewhere)", s->name,
	    s->epoch, s->why, s->w->busy);
	remote_say_gone(rm, s->name, s->epoch, s->why);
	worker_set_state(s->w, W_DEAD);
	/* nothing reaches it any more: no cancel, no deadline of ours */
	pool_worker_unreachable(s->w);
	event_active(s->gone, 0, 0);
}

static void
remote_lost(struct rsession *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
remote_lost(struct rsession *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
	s->rm->lost++;
	remote_end(s, s->why);
}

/* --- frames from a relay --------------------------------------------------- */

static void
remote_slots(struct rsession *s, json_t *o)
{
	json_t *v = json_object_get(o, "slots");
	struct worker *w = s->w;
	json_int_t n;
	int before;

	if (!json_is_integer(v) || (n = json_integer_value(v)) < 0 ||
	    n > 1000000) {
		worker_protocol_error(w, "slots: not an integer 0..1000000");
		return;
	}
	if (n > s->rm->conf->relay_max_slots) {
		log_warnx("relay %s offers %lld slots; using relay_max_slots = "
		    "%lld", s->name, (long long)n,
		    (long long)s->rm->conf->relay_max_slots);
		n = s->rm->conf->relay_max_slots;
	}
	if (w->state != W_READY) {
		w->slots = (int)n;
		return;
	}
	before = worker_free_slots(w);
	log_debug("relay %s: %lld slot(s)", s->name, (long long)n);
	w->slots = (int)n;
	pool_slots_changed(w, before);
	if (worker_free_slots(w) > before)
		pool_capacity(s->rm->pool);
}

/* A relay's own frames: slots and bye.  1 if it was one. */
static int
remote_relay_frame(struct rsession *s, const char *line, size_t len)
{
	json_t *o, *t;
	int rv = 0;

	/* cheap: the protocol's frames never start so */
	if (len < 10 || (strncmp(line, "{\"type\":\"slots\"", 15) != 0 &&
	    strncmp(line, "{\"type\":\"bye\"", 13) != 0))
		return 0;
	if ((o = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL)) == NULL)
		return 0;
	t = json_object_get(o, "type");
	if (json_is_string(t) && strcmp(json_string_value(t), "slots") == 0) {
		remote_slots(s, o);
		rv = 1;
	} else if (json_is_string(t) &&
	    strcmp(json_string_value(t), "bye") == 0) {
		log_info("relay %s: bye", s->name);
		worker_closed(s->w);
		rv = 1;
	}
	json_decref(o);
	return rv;
}

static void
remote_frame(void *arg, const char *line, size_t len)
{
	struct rsession *s = arg;
	struct frame f;
	char err[256];

	if (s->ended || remote_relay_frame(s, line, len))
		return;
	if (proto_decode(line, len, PROTO_W2D, &f, err, sizeof(err)) == -1) {
		s->rm->protocol++;
		worker_protocol_error(s->w, err);
		return;
	}
	if (f.type == FRAME_HELLO)
		worker_protocol_error(s->w, "hello inside a session");
	else
		worker_input(s->w, &f);
	frame_clear(&f);
}

static void
remote_link_error(void *arg, const char *why)
{
	struct rsession *s = arg;

	worker_protocol_error(s->w, why);
}

/* --- hello ------------------------------------------------------------------ */

static void
remote_refuse(struct remote *rm, const char *name, const char *reply,
    const char *why)
{
	char *body;
	json_t *o;

	rm->refused++;
	log_warnx("relay %s: refused: %s", name, why);
	if (reply == NULL)
		return;
	o = json_pack("{s:s, s:s}", "type", "refused", "reason", why);
	if (o == NULL || (body = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	(void)natsbus_publish(rm->nb, reply, NULL, NULL, body, strlen(body));
	free(body);
	json_decref(o);
}

/* {"type":"hello","protocol":1,"slots":N,"instance":I,"kill_grace":ms,...} */
static int
remote_parse_hello(json_t *o, struct frame *f, int64_t *instance,
    int64_t *grace, int *pid, char *err, size_t errlen)
{
	json_int_t protocol, slots, inst, kg = 5000, p = 0;

	if (json_unpack(o, "{s:I, s:I, s:I, s?:I, s?:I}", "protocol",
	    &protocol, "slots", &slots, "instance", &inst, "kill_grace", &kg,
	    "pid", &p) == -1 || protocol < 1 || protocol > 1000 ||
	    slots < 0 || slots > 1000000 || inst <= 0 || kg < 0 ||
	    kg > 3600000 || p < 0 || p > INT32_MAX) {
		snprintf(err, errlen, "a malformed hello");
		return -1;
	}
	memset(f, 0, sizeof(*f));
	f->type = FRAME_HELLO;
	f->u.hello.protocol = (int)protocol;
	f->u.hello.slots = (int)slots;
	*instance = inst;
	*grace = kg;
	*pid = (int)p;
	return 0;
}

static void
remote_hello(struct remote *rm, const char *name, natsMsg *m)
{
	char subj[REMOTE_SUBJECT_MAX], beat[REMOTE_SUBJECT_MAX];
	char probe[REMOTE_SUBJECT_MAX], err[160];
	const char *reply = natsMsg_GetReply(m);
	struct rsession *s, *old;
	struct frame f;
	int64_t instance, grace;
	json_t *o;
	int pid;

	rm->hellos++;
	remote_subject(rm, subj, sizeof(subj), "daemon", name, "welcome");
	/* answers go to the relay's own subjects only */
	if (reply != NULL && strcmp(reply, subj) != 0)
		reply = NULL;
	o = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
	    JSON_REJECT_DUPLICATES, NULL);
	if (o == NULL || remote_parse_hello(o, &f, &instance, &grace, &pid,
	    err, sizeof(err)) == -1) {
		json_decref(o);
		remote_refuse(rm, name, reply, "a malformed hello");
		return;
	}
	json_decref(o);
	if (f.u.hello.protocol != PROTO_VERSION) {
		snprintf(err, sizeof(err), "it speaks protocol %d, this daemon "
		    "%d", f.u.hello.protocol, PROTO_VERSION);
		remote_refuse(rm, name, reply, err);
		return;
	}
	HASH_FIND_STR(rm->sessions, name, old);
	if (old != NULL)
		remote_lost(old, "it said hello again (restarted, or lost "
		    "its session)");
	if (rm->nsessions >= (size_t)rm->conf->relay_max) {
		snprintf(err, sizeof(err), "%zu relays joined already "
		    "(relay_max)", rm->nsessions);
		remote_refuse(rm, name, reply, err);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	if ((s->w = pool_worker_new(rm->pool, &remote_ops, s, pid)) == NULL) {
		free(s);
		remote_refuse(rm, name, reply, "the daemon is stopping");
		return;
	}
	s->rm = rm;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->instance = instance;
	s->kill_grace = grace;
	s->epoch = rm->epoch_base + ++rm->nepochs;
	s->heard = mono_ms();
	if ((s->gone = event_new(rm->base, -1, 0, remote_gone, s)) == NULL)
		fatalx(EXIT_NOMEM, "%s: event_new", __func__);
	remote_subject(rm, subj, sizeof(subj), "daemon", name, "frame");
	remote_subject(rm, beat, sizeof(beat), "daemon", name, "beat");
	remote_subject(rm, probe, sizeof(probe), "relay", name, "nobody");
	nlink_init(&s->link, rm->nb, rm->base, subj, beat, s->epoch,
	    (size_t)rm->conf->relay_max_slots * 2 + REMOTE_WINDOW_EXTRA);
	remote_subject(rm, subj, sizeof(subj), "daemon", name, "welcome");
	nlink_reply(&s->link, subj, probe);
	s->link.instance = instance;
	s->link.frame = remote_frame;
	s->link.error = remote_link_error;
	s->link.arg = s;
	HASH_ADD_STR(rm->sessions, name, s);
	rm->nsessions++;
	/*
	 * Past a cancel, the relay gets its own kill_grace twice (SIGTERM,
	 * then SIGKILL of the worker) and a relay_timeout to report it.
	 */
	s->w->grace = rm->conf->kill_grace + 2 * grace +
	    rm->conf->relay_timeout;
	if (f.u.hello.slots > rm->conf->relay_max_slots)
		f.u.hello.slots = (int)rm->conf->relay_max_slots;
	f.u.hello.name = s->name;
	log_info("relay %s pid=%d: hello, epoch=%" PRIu64 " worker=%d",
	    name, pid, s->epoch, s->w->id);
	worker_input(s->w, &f);
}

/* --- messages ------------------------------------------------------------------ */

static void
remote_stale(struct remote *rm, const char *name, const struct nbhdr *h,
    const char *kind)
{
	rm->stale++;
	if (rm->stale_logged < REMOTE_STALE_LOG) {
		rm->stale_logged++;
		log_warnx("relay %s: ignored a %s of epoch %" PRIu64 ", a "
		    "session that is over%s", name, kind, h->epoch,
		    rm->stale_logged == REMOTE_STALE_LOG ?
		    " (not logging more of these)" : "");
	}
	remote_say_gone(rm, name, h->epoch, "that session is over");
}

static void
remote_msg(void *arg, natsMsg *m)
{
	struct remote *rm = arg;
	char name[REMOTE_NAME_MAX + 1];
	struct rsession *s;
	const char *kind;
	struct nbhdr h;

	if (remote_parse_subject(rm, natsMsg_GetSubject(m), name, &kind) == -1)
		return;
	HASH_FIND_STR(rm->sessions, name, s);
	if (strcmp(kind, "nobody") == 0) {
		/* our beat to it found no subscriber: its connection is gone */
		if (s != NULL && natsMsg_IsNoResponders(m))
			s->noresp++;
		return;
	}
	if (strcmp(kind, "hello") == 0) {
		remote_hello(rm, name, m);
		return;
	}
	if (natsbus_headers(m, &h) == -1 || h.epoch == 0)
		return;
	if (s == NULL || s->epoch != h.epoch) {
		remote_stale(rm, name, &h, strcmp(kind, "frame") == 0 ?
		    "frame" : "beat");
		return;
	}
	s->heard = mono_ms();
	s->noresp = 0;
	if (strcmp(kind, "frame") == 0 && h.seq > 0)
		nlink_input(&s->link, natsMsg_GetData(m),
		    (size_t)natsMsg_GetDataLength(m), &h);
	else if (strcmp(kind, "beat") == 0)
		nlink_control(&s->link, &h);
}

static void
remote_link_state(void *arg, int up)
{
	struct remote *rm = arg;
	struct rsession *s, *ts;
	int64_t now = mono_ms();

	rm->up_since = up ? now : 0;
	if (!up)
		return;
	/* everyone gets relay_timeout anew: the silence was ours */
	HASH_ITER(hh, rm->sessions, s, ts) {
		s->heard = now;
		s->noresp = 0;
		nlink_resend(&s->link, "reconnected");
		nlink_beat(&s->link);
	}
}

static const struct natsbus_ops remote_nb_ops = {
	.msg = remote_msg,
	.link = remote_link_state,
};

/* Heartbeats; relays silent or disconnected are lost; stalled links resent. */
static void
remote_tick(evutil_socket_t fd, short ev, void *arg)
{
	struct remote *rm = arg;
	struct rsession *s, *ts;
	int64_t now = mono_ms();

	if (rm->up_since == 0)
		return;		/* nobody can be heard: nobody is lost */
	HASH_ITER(hh, rm->sessions, s, ts) {
		if (now - s->heard >= rm->conf->relay_timeout) {
			remote_lost(s, "silent for %lld ms (relay_timeout)",
			    (long long)(now - s->heard));
			continue;
		}
		if (s->noresp >= REMOTE_NORESP_LOST &&
		    now - rm->up_since >= rm->conf->relay_timeout / 2) {
			remote_lost(s, "its NATS connection is closed (%d "
			    "heartbeats found no subscriber)", s->noresp);
			continue;
		}
		nlink_tick(&s->link, 2 * rm->beat_ms);
		nlink_beat(&s->link);
	}
}

/* --- public interface ------------------------------------------------------------ */

struct remote *
remote_new(struct event_base *base, struct pool *p, const struct conf *c)
{
	char sub[REMOTE_SUBJECT_MAX];
	const char *subjects[2] = { sub, NULL };
	struct remote *rm;
	struct timeval tv;

	rm = xcalloc(1, sizeof(*rm));
	rm->base = base;
	rm->pool = p;
	rm->conf = c;
	snprintf(rm->prefix, sizeof(rm->prefix), "%s", c->nats_subject);
	snprintf(sub, sizeof(sub), "%s.relay.*.*", rm->prefix);
	/* epochs of a later run of the daemon are larger */
	rm->epoch_base = (uint64_t)wall_ms() << 16;
	rm->beat_ms = c->relay_timeout / 10;
	if ((rm->nb = natsbus_new(base, c, "tgrunnerd", subjects,
	    &remote_nb_ops, rm)) == NULL) {
		free(rm);
		return NULL;
	}
	tv = tv_ms(rm->beat_ms);
	if ((rm->tick = event_new(base, -1, EV_PERSIST, remote_tick,
	    rm)) == NULL)
		fatalx(EXIT_NOMEM, "%s: event_new", __func__);
	event_add(rm->tick, &tv);
	log_info("nats: taking relays on %s.relay.*", rm->prefix);
	return rm;
}

void
remote_free(struct remote *rm)
{
	struct rsession *s, *ts;

	if (rm == NULL)
		return;
	HASH_ITER(hh, rm->sessions, s, ts) {
		remote_say_gone(rm, s->name, s->epoch, "the daemon stopped");
		HASH_DEL(rm->sessions, s);
		s->ended = 1;
	}
	event_free(rm->tick);
	natsbus_free(rm->nb);
	free(rm);
}

json_t *
remote_status(const struct remote *rm)
{
	if (rm == NULL)
		return json_null();
	return json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
	    "connected", rm->up_since != 0,
	    "relays", (json_int_t)rm->nsessions,
	    "hellos", (json_int_t)rm->hellos,
	    "refused", (json_int_t)rm->refused,
	    "lost", (json_int_t)rm->lost,
	    "stale_ignored", (json_int_t)rm->stale,
	    "protocol_errors", (json_int_t)rm->protocol,
	    "dropped", (json_int_t)natsbus_dropped(rm->nb));
}

void
remote_metrics(const struct remote *rm, struct evbuffer *out)
{
	if (rm == NULL)
		return;
	metrics_gauge(out, "tgrunner_nats_connected",
	    "1 while connected to a NATS server.", rm->up_since != 0);
	metrics_gauge(out, "tgrunner_relays", "Relays joined.", rm->nsessions);
	metrics_counter(out, "tgrunner_relay_lost_total",
	    "Relay sessions lost (silent or disconnected).", rm->lost);
	metrics_counter(out, "tgrunner_relay_refused_total",
	    "Relay hellos refused.", rm->refused);
	metrics_counter(out, "tgrunner_relay_stale_total",
	    "Messages of ended relay sessions, ignored.", rm->stale);
	metrics_counter(out, "tgrunner_nats_dropped_total",
	    "NATS messages dropped on arrival (sent again).",
	    natsbus_dropped(rm->nb));
}

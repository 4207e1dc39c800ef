/* SPDX-License-Identifier: ISC */
/*
 * The worker pool on a real event loop.  Most workers here are of a
 * connection type of the test's own (struct worker_ops, as a relay's
 * remote workers will be): its frames are handed to worker_input() and
 * what the pool sends is decoded back, so every step is under the test's
 * control.  That the pool runs them proves a new connection type needs no
 * change to it.  Then real children, spawned and reaped.
 *
 * What is held: dispatch and free slots, affinity, what done/fail/call
 * mean (and that one for an update not held is tolerated: ignored, or a
 * call answered with an error, PROTOCOL.md sections 3.5 and 3.6),
 * protocol errors and why a worker was cut off, deadlines (cancel, then
 * terminate; none for a worker cut off), that a job is given back only
 * once its worker is gone, draining and recycling.  And restarts of the
 * children one at a time: a replacement up before an old one goes, the
 * updates an old one holds finished there, a replacement that does not
 * come up stops it with the old ones running on, a worker that ignores
 * its shutdown made to go at the deadline.  With children, the
 * orders of events a loaded machine produces now and then are forced:
 * a done still in the socket of a worker whose death (or a failed write
 * to it) is seen first is honoured (#19).
 */
#include "config.h"

#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <event2/event.h>
#include <jansson.h>

#include "conf.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "router.h"
#include "testloop.h"
#include "worker.h"

#define MAXF	8
#define MAXJ	64

/* --- a connection type of the test's own ----------------------------------- */

struct fake {
	struct worker	*w;
	json_t		*sent;		/* frames the pool sent, decoded */
	int		 closes, close_sig;
	int		 terms, term_sig;
	int		 alive;
	int		 freed;
};

static int
fake_send(struct worker *w, const char *line, size_t len)
{
	struct fake *f = w->conn;
	struct frame fr;
	json_t *o;

	ck_assert(len > 0 && line[len - 1] == '\n');
	/* never a frame a worker would have to refuse */
	ck_assert_int_eq(proto_decode(line, len - 1, PROTO_D2W, &fr, NULL, 0),
	    0);
	frame_clear(&fr);
	ck_assert_ptr_nonnull(o = json_loadb(line, len - 1, 0, NULL));
	json_array_append_new(f->sent, o);
	return 0;
}

/* As a socket type does: nothing can be sent to it any more. */
static void
fake_close(struct worker *w, int sig)
{
	struct fake *f = w->conn;

	f->closes++;
	f->close_sig = sig;
	pool_worker_unreachable(w);
}

static void
fake_terminate(struct worker *w, int sig)
{
	struct fake *f = w->conn;

	f->terms++;
	f->term_sig = sig;
}

static int
fake_alive(const struct worker *w)
{
	const struct fake *f = w->conn;

	return f->alive;
}

static void
fake_describe(const struct worker *w, json_t *o)
{
	json_object_set_new(o, "kind", json_string("fake"));
}

static void
fake_free(struct worker *w)
{
	struct fake *f = w->conn;

	f->freed = 1;
	f->w = NULL;
}

static const struct worker_ops fake_ops = {
	.kind = "fake",
	.send = fake_send,
	.close = fake_close,
	.terminate = fake_terminate,
	.alive = fake_alive,
	.describe = fake_describe,
	.free = fake_free,
};

/* The same type for a process on this host: it gets the Bot API endpoint. */
static const struct worker_ops local_ops = {
	.kind = "fake",
	.api_local = 1,
	.send = fake_send,
	.close = fake_close,
	.terminate = fake_terminate,
	.alive = fake_alive,
	.describe = fake_describe,
	.free = fake_free,
};

/* --- what the pool reports ------------------------------------------------- */

struct ev {
	char		 what;		/* 'd' done, 'f' failed, 'c' call */
	int64_t		 id;
	struct worker	*w;
	int		 retry;
	int		 worker_id;
	char		 text[128];
};

static struct event_base	*base;
static struct conf		 conf;
static struct pool		*pool;
static struct fake		 fakes[MAXF];
static struct ev		 evs[256];
static int			 nevs, ncapacity;
static struct job		*jobs[MAXJ];
static int			 grants, revokes, revoked_id, no_endpoint;
static json_t			*description;	/* the_worker()'s */

static void
on_done(void *arg, struct job *job, struct worker *w, json_t *calls)
{
	struct ev *e = &evs[nevs++];

	e->what = 'd';
	e->id = job->id;
	e->w = w;
	e->worker_id = w->id;
	snprintf(e->text, sizeof(e->text), "%s", calls ? "calls" : "");
}

static void
on_failed(void *arg, struct job *job, const char *why, int retry)
{
	struct ev *e = &evs[nevs++];

	e->what = 'f';
	e->id = job->id;
	e->retry = retry;
	snprintf(e->text, sizeof(e->text), "%s", why);
}

static void
on_capacity(void *arg)
{
	ncapacity++;
}

static void
on_call(void *arg, int worker_id, json_t *ref, struct job *job,
    const char *method, json_t *params)
{
	struct ev *e = &evs[nevs++];

	e->what = 'c';
	e->id = job != NULL ? job->id : 0;
	e->worker_id = worker_id;
	snprintf(e->text, sizeof(e->text), "%s", method);
}

#define API_ROOT	"http://127.0.0.1:9"

/* The daemon's endpoint: "cred-<worker id>" for every worker, unless none. */
static const char *
on_api_grant(void *arg, int worker_id, char *cred, size_t credsz)
{
	grants++;
	if (no_endpoint)
		return NULL;
	snprintf(cred, credsz, "cred-%d", worker_id);
	return API_ROOT;
}

static void
on_api_revoke(void *arg, int worker_id)
{
	revokes++;
	revoked_id = worker_id;
}

static const struct pool_ops ops = {
	.done = on_done,
	.failed = on_failed,
	.capacity = on_capacity,
	.call = on_call,
	.api_grant = on_api_grant,
	.api_revoke = on_api_revoke,
};

static void
setup(void)
{
	json_t *bot = json_pack("{s:i, s:s}", "id", 1, "username", "testbot");

	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	conf_defaults(&conf);
	conf.workers = 0;
	conf.update_timeout = 60000;
	conf.kill_grace = 100;
	conf.hello_timeout = 5000;
	memset(fakes, 0, sizeof(fakes));
	memset(jobs, 0, sizeof(jobs));
	nevs = ncapacity = 0;
	grants = revokes = revoked_id = no_endpoint = 0;
	pool = pool_new(base, &conf, &ops, NULL);
	pool_start(pool, bot);
	json_decref(bot);
}

static void
teardown(void)
{
	int i;

	pool_free(pool);
	for (i = 0; i < MAXF; i++)
		json_decref(fakes[i].sent);
	for (i = 0; i < MAXJ; i++)
		job_free(jobs[i]);
	json_decref(description);
	description = NULL;
	event_base_free(base);
	conf_clear(&conf);
}

/* A frame from the peer, as its JSON text. */
static void
input(struct worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
input(struct worker *w, const char *fmt, ...)
{
	char line[1024], err[256];
	struct frame f;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	ck_assert_msg(proto_decode(line, (size_t)n, PROTO_W2D, &f, err,
	    sizeof(err)) == 0, "%s: %s", line, err);
	worker_input(w, &f);
	frame_clear(&f);
}

/* Fake worker i of a type, connected (not yet said hello). */
static struct fake *
connect_type(int i, const struct worker_ops *type)
{
	struct fake *f = &fakes[i];

	f->sent = json_array();
	f->alive = 1;
	f->w = pool_worker_new(pool, type, f, 1000 + i);
	ck_assert_ptr_nonnull(f->w);
	return f;
}

static struct fake *
connect_fake(int i)
{
	return connect_type(i, &fake_ops);
}

static struct fake *
ready_fake(int i, int slots)
{
	struct fake *f = connect_fake(i);

	input(f->w, "{\"type\":\"hello\",\"protocol\":%d,\"slots\":%d}",
	    PROTO_VERSION, slots);
	ck_assert_int_eq(f->w->state, W_READY);
	return f;
}

static struct job *
job(int64_t id)
{
	char json[128];
	int n;

	n = snprintf(json, sizeof(json), "{\"update_id\":%lld,\"message\":"
	    "{\"text\":\"u%lld\"}}", (long long)id, (long long)id);
	ck_assert_int_lt(id, MAXJ);
	jobs[id] = job_new(id, json, (size_t)n);
	return jobs[id];
}

/* The n-th frame sent to f (negative: from the end). */
static json_t *
sent(struct fake *f, int n)
{
	size_t len = json_array_size(f->sent);

	return json_array_get(f->sent, n < 0 ? len + n : (size_t)n);
}

static const char *
sent_type(struct fake *f, int n)
{
	return json_string_value(json_object_get(sent(f, n), "type"));
}

/* The ids of the update frames f was sent, in order, as "1,2,3". */
static const char *
updates_of(struct fake *f)
{
	static char buf[256];
	json_t *o;
	size_t i, n = 0;

	buf[0] = '\0';
	json_array_foreach(f->sent, i, o)
		if (strcmp(json_string_value(json_object_get(o, "type")),
		    "update") == 0)
			n += snprintf(buf + n, sizeof(buf) - n, "%s%lld",
			    n > 0 ? "," : "", (long long)json_integer_value(
			    json_object_get(o, "id")));
	return buf;
}

static int
count_evs(char what)
{
	int i, n = 0;

	for (i = 0; i < nevs; i++)
		n += evs[i].what == what;
	return n;
}

/* The pool has not described a worker yet: its id and its kind say which. */
static int
described(int id)
{
	json_t *a = pool_describe(pool), *o;
	size_t i;
	int found = 0;

	json_array_foreach(a, i, o)
		if (json_integer_value(json_object_get(o, "id")) == id) {
			ck_assert_str_eq(json_string_value(json_object_get(o,
			    "kind")), "fake");
			found = 1;
		}
	json_decref(a);
	return found;
}

/* --- tests --------------------------------------------------------------- */

START_TEST(test_hello_and_dispatch)
{
	struct fake *a, *b;
	json_t *u;

	a = connect_fake(0);
	ck_assert_uint_eq(pool_free_slots(pool), 0);
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), -1);
	input(a->w, "{\"type\":\"hello\",\"protocol\":%d,\"slots\":1}",
	    PROTO_VERSION);
	ck_assert_str_eq(sent_type(a, 0), "welcome");
	ck_assert_int_eq(json_integer_value(json_object_get(sent(a, 0),
	    "worker_id")), a->w->id);
	ck_assert_int_eq(ncapacity, 1);
	b = ready_fake(1, 2);
	ck_assert_int_eq(ncapacity, 2);
	ck_assert_uint_eq(pool_free_slots(pool), 3);

	ck_assert_int_eq(pool_dispatch(pool, jobs[1], NULL), 0);
	ck_assert_int_eq(pool_dispatch(pool, job(2), NULL), 0);
	ck_assert_int_eq(pool_dispatch(pool, job(3), NULL), 0);
	ck_assert_int_eq(pool_dispatch(pool, job(4), NULL), -1);
	ck_assert_uint_eq(pool_free_slots(pool), 0);
	ck_assert_uint_eq(pool_running(pool), 3);
	ck_assert_str_eq(updates_of(a), "1");
	ck_assert_str_eq(updates_of(b), "2,3");
	/* the update frame: the job as the protocol says */
	u = sent(a, -1);
	ck_assert_int_eq(json_integer_value(json_object_get(u, "attempt")), 1);
	ck_assert_int_gt(json_integer_value(json_object_get(u, "deadline")),
	    wall_ms());
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
	    json_object_get(u, "update"), "message"), "text")), "u1");
	ck_assert_ptr_nonnull(jobs[1]->owner);
	ck_assert(described(a->w->id) && described(b->w->id));
}
END_TEST

START_TEST(test_round_robin)
{
	struct fake *a, *b;
	int i;

	a = ready_fake(0, 4);
	b = ready_fake(1, 4);
	/* one-slot-at-a-time fairness: the workers take turns */
	for (i = 1; i <= 4; i++)
		ck_assert_int_eq(pool_dispatch(pool, job(i), NULL), 0);
	ck_assert_str_eq(updates_of(a), "1,3");
	ck_assert_str_eq(updates_of(b), "2,4");
}
END_TEST

START_TEST(test_affinity)
{
	struct fake *a, *b;

	a = ready_fake(0, 2);
	b = ready_fake(1, 2);
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	ck_assert_str_eq(updates_of(a), "1");
	/* b is first in line now; a key busy on a stays on a */
	ck_assert_int_eq(pool_dispatch(pool, job(2), a->w), 0);
	ck_assert_str_eq(updates_of(a), "1,2");
	ck_assert_str_eq(updates_of(b), "");
	/* a is full: the preference gives way */
	ck_assert_int_eq(pool_dispatch(pool, job(3), a->w), 0);
	ck_assert_str_eq(updates_of(b), "3");
	/* the done says where its successor should go */
	input(a->w, "{\"type\":\"done\",\"id\":1}");
	ck_assert_int_eq(nevs, 1);
	ck_assert_int_eq(evs[0].what, 'd');
	ck_assert_ptr_eq(evs[0].w, a->w);
}
END_TEST

START_TEST(test_done_frees_slot)
{
	struct fake *a, *b;

	a = ready_fake(0, 1);
	b = ready_fake(1, 1);
	ck_assert_int_eq(pool_dispatch(pool, job(1), a->w), 0);
	ck_assert_uint_eq(pool_free_slots(pool), 1);
	input(a->w, "{\"type\":\"done\",\"id\":1,\"calls\":[{\"method\":"
	    "\"sendMessage\",\"params\":{\"chat_id\":1}}]}");
	ck_assert_int_eq(nevs, 1);
	ck_assert_int_eq(evs[0].what, 'd');
	ck_assert_int_eq(evs[0].id, 1);
	ck_assert_str_eq(evs[0].text, "calls");
	ck_assert_ptr_null(jobs[1]->owner);
	ck_assert_uint_eq(pool_free_slots(pool), 2);
	ck_assert_uint_eq(pool_running(pool), 0);

	/* another worker's update, or one already done: ignored */
	ck_assert_int_eq(pool_dispatch(pool, job(2), a->w), 0);
	input(b->w, "{\"type\":\"done\",\"id\":2}");
	ck_assert_int_eq(b->closes, 0);
	ck_assert_ptr_nonnull(jobs[2]->owner);
	input(a->w, "{\"type\":\"done\",\"id\":1}");
	ck_assert_int_eq(a->closes, 0);
	ck_assert_int_eq(pool_stats(pool)->protocol_errors, 0);
	ck_assert_int_eq(nevs, 1);
	ck_assert_uint_eq(pool_running(pool), 1);
	/* the update held is still the worker's to answer */
	input(a->w, "{\"type\":\"done\",\"id\":2}");
	ck_assert_int_eq(nevs, 2);
	ck_assert_int_eq(evs[1].id, 2);
}
END_TEST

START_TEST(test_protocol_state)
{
	struct fake *a = connect_fake(0), *b;

	/* before hello, any other frame is a refused hello */
	input(a->w, "{\"type\":\"done\",\"id\":1}");
	ck_assert_int_eq(a->closes, 1);
	ck_assert_int_eq(a->close_sig, SIGKILL);
	ck_assert_str_eq(a->w->cut, "hello refused: a done frame came first");
	b = ready_fake(1, 1);
	ck_assert_str_eq(b->w->cut, "");
	input(b->w, "{\"type\":\"hello\",\"protocol\":%d,\"slots\":1}",
	    PROTO_VERSION);
	ck_assert_int_eq(b->closes, 1);
	ck_assert_str_eq(b->w->cut, "protocol error: second hello");
	ck_assert_int_eq(pool_stats(pool)->protocol_errors, 2);
	/* another protocol version is not an error: it is told to go */
	a = connect_fake(2);
	input(a->w, "{\"type\":\"hello\",\"protocol\":%d,\"slots\":1}",
	    PROTO_VERSION + 1);
	ck_assert_int_eq(a->closes, 1);
	ck_assert_int_eq(a->close_sig, SIGTERM);
	ck_assert_int_eq(a->w->state, W_STARTING);
	ck_assert_ptr_nonnull(strstr(a->w->cut, "hello refused: it speaks "
	    "protocol"));
	ck_assert_int_eq(pool_stats(pool)->protocol_errors, 2);
}
END_TEST

START_TEST(test_given_back_only_when_gone)
{
	struct fake *a;

	a = ready_fake(0, 2);
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	ck_assert_int_eq(pool_dispatch(pool, job(2), NULL), 0);
	/* cut off, but the process may still be working on both */
	worker_protocol_error(a->w, "test");
	ck_assert_int_eq(a->closes, 1);
	ck_assert_int_eq(count_evs('f'), 0);
	ck_assert_uint_eq(pool_running(pool), 2);
	/* gone: now they may run elsewhere */
	pool_worker_gone(a->w, "peer lost", WORKER_CRASHED);
	ck_assert(a->freed);
	ck_assert_int_eq(count_evs('f'), 2);
	ck_assert_int_eq(evs[0].id, 1);
	ck_assert_int_eq(evs[1].id, 2);
	ck_assert_str_eq(evs[0].text, "peer lost");
	ck_assert_int_eq(evs[0].retry, 1);
	ck_assert_uint_eq(pool_running(pool), 0);
	ck_assert_uint_eq(pool_free_slots(pool), 0);
	ck_assert_int_eq(pool_stats(pool)->crashed, 1);
	ck_assert_int_eq(pool_stats(pool)->exited, 1);
	ck_assert(!described(1));
}
END_TEST

START_TEST(test_fail_frame)
{
	struct fake *a = ready_fake(0, 2);

	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	ck_assert_int_eq(pool_dispatch(pool, job(2), NULL), 0);
	input(a->w, "{\"type\":\"fail\",\"id\":1,\"error\":\"boom\","
	    "\"retry\":false}");
	input(a->w, "{\"type\":\"fail\",\"id\":2,\"error\":\"later\","
	    "\"retry\":true}");
	ck_assert_int_eq(nevs, 2);
	ck_assert_int_eq(evs[0].what, 'f');
	ck_assert_str_eq(evs[0].text, "worker failed it: boom");
	ck_assert_int_eq(evs[0].retry, 0);
	ck_assert_int_eq(evs[1].retry, 1);
	ck_assert_uint_eq(pool_free_slots(pool), 2);
	/* answered already: the first answer counts, this one is ignored */
	input(a->w, "{\"type\":\"fail\",\"id\":2,\"error\":\"again\"}");
	ck_assert_int_eq(a->closes, 0);
	ck_assert_int_eq(nevs, 2);
	ck_assert_int_eq(a->w->complaints, 1);
}
END_TEST

static struct fake *wanted;

static int
sent_cancel(void *arg)
{
	return json_array_size(wanted->sent) > 0 &&
	    strcmp(sent_type(wanted, -1), "cancel") == 0;
}

static int
was_terminated(void *arg)
{
	return wanted->terms > 0;
}

START_TEST(test_deadline)
{
	struct fake *a;
	int64_t t0, t1, t2;

	conf.update_timeout = 150;
	conf.kill_grace = 150;
	a = ready_fake(0, 1);
	wanted = a;
	t0 = mono_ms();
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	TESTLOOP_UNTIL(base, sent_cancel, NULL, 10000, "cancel");
	t1 = mono_ms();
	ck_assert_int_ge(t1 - t0, 150 - TESTLOOP_SLACK_MS);
	ck_assert_int_eq(json_integer_value(json_object_get(sent(a, -1),
	    "id")), 1);
	ck_assert_int_eq(pool_stats(pool)->timeouts, 1);
	TESTLOOP_UNTIL(base, was_terminated, NULL, 10000, "terminate");
	t2 = mono_ms();
	/*
	 * kill_grace runs from the cancel, which t1 may have seen late on a
	 * loaded machine: measure both from t0, which precedes them.
	 */
	ck_assert_int_ge(t2 - t0, 150 + 150 - TESTLOOP_SLACK_MS);
	ck_assert_int_eq(a->term_sig, SIGTERM);
	/* told to go, not gone: the update is still its own */
	ck_assert_int_eq(count_evs('f'), 0);
	pool_worker_gone(a->w, "worker exited on signal 15", WORKER_CRASHED);
	ck_assert_int_eq(count_evs('f'), 1);
	ck_assert_str_eq(evs[0].text, "timed out");
}
END_TEST

/*
 * A relay's pool: the deadline comes with the job (the frame carries it,
 * the timer follows it), a cancel comes early from the daemon, once, and
 * the worker's own grace (w->grace) decides when it is made to go.
 */
START_TEST(test_given_deadline_and_cancel)
{
	struct fake *a;
	struct job *j;
	int64_t t0, t1, dl;

	conf.update_timeout = 60000;
	conf.kill_grace = 60000;
	a = ready_fake(0, 2);
	a->w->grace = 150;
	wanted = a;
	j = job(1);
	dl = wall_ms() + 3600000;
	j->deadline = dl;
	ck_assert_int_eq(pool_dispatch(pool, j, NULL), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(sent(a, -1),
	    "deadline")), dl);
	t0 = mono_ms();
	pool_cancel(pool, j, "cancelled by the daemon");
	ck_assert_str_eq(json_string_value(json_object_get(sent(a, -1),
	    "type")), "cancel");
	ck_assert_str_eq(json_string_value(json_object_get(sent(a, -1),
	    "reason")), "cancelled by the daemon");
	/* a second cancel sends nothing */
	pool_cancel(pool, j, "again");
	ck_assert_str_eq(json_string_value(json_object_get(sent(a, -1),
	    "reason")), "cancelled by the daemon");
	TESTLOOP_UNTIL(base, was_terminated, NULL, 10000, "terminate");
	t1 = mono_ms();
	ck_assert_int_ge(t1 - t0, 150 - TESTLOOP_SLACK_MS);
	ck_assert_int_lt(t1 - t0, 30000);

	/* a deadline already past: cancelled at once, not after 60 s */
	j = job(2);
	j->deadline = wall_ms() - 1;
	a = ready_fake(1, 1);
	wanted = a;
	ck_assert_int_eq(pool_dispatch(pool, j, a->w), 0);
	TESTLOOP_UNTIL(base, sent_cancel, NULL, 10000, "cancel");
}
END_TEST

START_TEST(test_late_done_counts)
{
	struct fake *a;

	conf.update_timeout = 100;
	conf.kill_grace = 60000;
	a = ready_fake(0, 1);
	wanted = a;
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	TESTLOOP_UNTIL(base, sent_cancel, NULL, 10000, "cancel");
	input(a->w, "{\"type\":\"done\",\"id\":1}");
	ck_assert_int_eq(nevs, 1);
	ck_assert_int_eq(evs[0].what, 'd');
	ck_assert_int_eq(a->closes + a->terms, 0);
}
END_TEST

/* A worker stuck sending stray answers is tolerated, and logged boundedly. */
START_TEST(test_stray_answers_bounded)
{
	struct fake *a = ready_fake(0, 1);
	int i;

	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	for (i = 0; i < 50; i++)
		input(a->w, "{\"type\":\"done\",\"id\":%d}", 100 + i);
	ck_assert_int_eq(a->closes, 0);
	/* the complaint after the last one logged says that it was the last */
	ck_assert_int_eq(a->w->complaints, 11);
	ck_assert_int_eq(nevs, 0);
	input(a->w, "{\"type\":\"done\",\"id\":1}");
	ck_assert_int_eq(nevs, 1);
	ck_assert_int_eq(pool_stats(pool)->protocol_errors, 0);
}
END_TEST

/*
 * A worker cut off cannot be told to cancel: its deadlines stop, and its
 * updates come back when it is gone, as what it died of, not as timeouts.
 */
START_TEST(test_cut_off_no_deadline)
{
	struct fake *a;

	conf.update_timeout = 50;
	conf.kill_grace = 50;
	a = ready_fake(0, 2);
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	ck_assert_int_eq(pool_dispatch(pool, job(2), NULL), 0);
	worker_closed(a->w);
	ck_assert_int_eq(a->closes, 1);
	testloop_for(base, 300);
	ck_assert_str_eq(sent_type(a, -1), "update");
	ck_assert_int_eq(a->terms, 0);
	ck_assert_int_eq(pool_stats(pool)->timeouts, 0);
	ck_assert_int_eq(count_evs('f'), 0);
	pool_worker_gone(a->w, "worker exited on signal 15", WORKER_CRASHED);
	ck_assert_int_eq(count_evs('f'), 2);
	ck_assert_str_eq(evs[0].text, "worker exited on signal 15");
	ck_assert_str_eq(evs[1].text, "worker exited on signal 15");
}
END_TEST

START_TEST(test_call_frames)
{
	struct fake *a = ready_fake(0, 1), *b = ready_fake(1, 1);
	json_t *ref = json_string("r1"), *res = json_pack("{s:i}", "x", 5);
	json_t *r;

	ck_assert_int_eq(pool_dispatch(pool, job(1), a->w), 0);
	input(a->w, "{\"type\":\"call\",\"id\":1,\"ref\":\"r1\",\"method\":"
	    "\"sendMessage\",\"params\":{\"chat_id\":1}}");
	input(a->w, "{\"type\":\"call\",\"id\":0,\"ref\":2,\"method\":"
	    "\"getMe\"}");
	ck_assert_int_eq(nevs, 2);
	ck_assert_int_eq(evs[0].what, 'c');
	ck_assert_int_eq(evs[0].id, 1);
	ck_assert_int_eq(evs[0].worker_id, a->w->id);
	ck_assert_str_eq(evs[0].text, "sendMessage");
	ck_assert_int_eq(evs[1].id, 0);
	/* a call for someone else's update: not made, answered with why */
	input(b->w, "{\"type\":\"call\",\"id\":1,\"ref\":3,\"method\":"
	    "\"getMe\"}");
	ck_assert_int_eq(b->closes, 0);
	ck_assert_int_eq(nevs, 2);
	r = sent(b, -1);
	ck_assert_str_eq(json_string_value(json_object_get(r, "type")),
	    "result");
	ck_assert_int_eq(json_integer_value(json_object_get(r, "ref")), 3);
	ck_assert(json_is_false(json_object_get(r, "ok")));
	ck_assert_int_eq(json_integer_value(json_object_get(r, "error_code")),
	    400);
	ck_assert_str_eq(json_string_value(json_object_get(r, "description")),
	    "tgrunner: update 1 is not held by this worker");

	pool_result(pool, a->w->id, ref, 1, res, 0, NULL, NULL, 0);
	r = sent(a, -1);
	ck_assert_str_eq(json_string_value(json_object_get(r, "type")),
	    "result");
	ck_assert_str_eq(json_string_value(json_object_get(r, "ref")), "r1");
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(r,
	    "result"), "x")), 5);
	/* a worker that is gone gets nothing, and nothing breaks */
	pool_result(pool, 999, ref, 0, NULL, 400, "bad", NULL, 0);
	json_decref(ref);
	json_decref(res);
}
END_TEST

/* A job with session key "chat:<chat>", running in the router r. */
static struct job *
keyed_job(struct router *r, int64_t id, int chat)
{
	struct keyset ks = { .n = 1 };
	struct job *j = job(id);

	snprintf(ks.k[0], sizeof(ks.k[0]), "chat:%d", chat);
	router_add(r, j, &ks);
	ck_assert_ptr_eq(router_next(r), j);
	jobs[id] = NULL;	/* the router's now */
	return j;
}

/* Which update an endpoint call belongs to (workerapi.h, PROTOCOL.md). */
START_TEST(test_held)
{
	struct router *r = router_new();
	struct fake *a = ready_fake(0, 3), *b = ready_fake(1, 1);
	struct job *j1, *j2;
	const char *key = "x";

	/* nothing held: no update, whatever the header says but an id */
	ck_assert_int_eq(pool_held(pool, a->w->id, -1, &key, NULL), 0);
	ck_assert_ptr_null(key);
	ck_assert_int_eq(pool_held(pool, a->w->id, 0, &key, NULL), 0);
	ck_assert_int_eq(pool_held(pool, 999, -1, &key, NULL), 0);
	j1 = keyed_job(r, 1, 5);
	ck_assert_int_eq(pool_dispatch(pool, j1, a->w), 0);
	/* one held: no header means that one; 0 still means none */
	ck_assert_int_eq(pool_held(pool, a->w->id, -1, &key, NULL), 1);
	ck_assert_str_eq(key, "chat:5");
	ck_assert_int_eq(pool_held(pool, a->w->id, 1, &key, NULL), 1);
	ck_assert_str_eq(key, "chat:5");
	ck_assert_int_eq(pool_held(pool, a->w->id, 0, &key, NULL), 0);
	ck_assert_ptr_null(key);
	/* two held: the header picks, no header is none */
	j2 = keyed_job(r, 2, 6);
	ck_assert_int_eq(pool_dispatch(pool, j2, a->w), 0);
	ck_assert_int_eq(pool_held(pool, a->w->id, -1, &key, NULL), 0);
	ck_assert_int_eq(pool_held(pool, a->w->id, 2, &key, NULL), 1);
	ck_assert_str_eq(key, "chat:6");
	/* a keyless update: held, no key */
	ck_assert_int_eq(pool_dispatch(pool, job(3), a->w), 0);
	ck_assert_int_eq(pool_held(pool, a->w->id, 3, &key, NULL), 1);
	ck_assert_ptr_null(key);
	/* someone else's update, or one answered already: refused */
	ck_assert_int_eq(pool_held(pool, b->w->id, 1, &key, NULL), -1);
	ck_assert_ptr_null(key);
	ck_assert_int_eq(b->w->complaints, 1);
	input(a->w, "{\"type\":\"done\",\"id\":1}");
	ck_assert_int_eq(pool_held(pool, a->w->id, 1, &key, NULL), -1);
	ck_assert_int_eq(pool_held(pool, a->w->id, 44, &key, NULL), -1);
	ck_assert_int_eq(a->w->complaints, 2);
	ck_assert_int_eq(b->closes + a->closes, 0);
	input(a->w, "{\"type\":\"done\",\"id\":2}");
	router_finish(r, j1);
	router_finish(r, j2);
	job_free(j1);
	job_free(j2);
	router_free(r);
}
END_TEST

/* The welcome of a worker on this host carries the endpoint; freed, revoked. */
START_TEST(test_api_credentials)
{
	struct fake *a, *b;
	json_t *wel;
	int id;

	a = connect_type(0, &local_ops);
	ck_assert_int_eq(grants, 0);		/* at hello, not before */
	input(a->w, "{\"type\":\"hello\",\"protocol\":%d,\"slots\":1}",
	    PROTO_VERSION);
	wel = sent(a, 0);
	ck_assert_str_eq(json_string_value(json_object_get(wel, "type")),
	    "welcome");
	ck_assert_str_eq(json_string_value(json_object_get(wel, "api_root")),
	    API_ROOT);
	id = a->w->id;
	ck_assert_str_eq(json_string_value(json_object_get(wel, "api_token")),
	    a->w->api_token);
	ck_assert_int_eq(atoi(a->w->api_token + 5), id);
	ck_assert_int_eq(grants, 1);
	/* a process elsewhere (a relay's) is not given it */
	b = ready_fake(1, 1);
	ck_assert_ptr_null(json_object_get(sent(b, 0), "api_root"));
	ck_assert_ptr_null(json_object_get(sent(b, 0), "api_token"));
	ck_assert_int_eq(grants, 1);
	/* the credential lives as long as the worker */
	pool_worker_gone(b->w, "gone", 0);
	ck_assert_int_eq(revokes, 0);
	worker_closed(a->w);
	ck_assert_int_eq(revokes, 0);
	pool_worker_gone(a->w, "gone", 0);
	ck_assert_int_eq(revokes, 1);
	ck_assert_int_eq(revoked_id, id);
	/* no endpoint: a welcome without either member */
	no_endpoint = 1;
	a = connect_type(2, &local_ops);
	input(a->w, "{\"type\":\"hello\",\"protocol\":%d,\"slots\":1}",
	    PROTO_VERSION);
	ck_assert_ptr_null(json_object_get(sent(a, 0), "api_root"));
	ck_assert_ptr_null(json_object_get(sent(a, 0), "api_token"));
	ck_assert_int_eq(grants, 2);
	pool_worker_gone(a->w, "gone", 0);
	ck_assert_int_eq(revokes, 1);
}
END_TEST

START_TEST(test_shutdown_when_idle)
{
	struct fake *a = ready_fake(0, 1), *b = ready_fake(1, 1);

	ck_assert_int_eq(pool_dispatch(pool, job(1), a->w), 0);
	pool_shutdown(pool, wall_ms() + 5000);
	ck_assert_uint_eq(pool_free_slots(pool), 0);
	ck_assert_int_eq(pool_dispatch(pool, job(2), NULL), -1);
	/* the idle one is told at once, the busy one once it is idle */
	ck_assert_str_eq(sent_type(b, -1), "shutdown");
	ck_assert_str_eq(sent_type(a, -1), "update");
	input(a->w, "{\"type\":\"done\",\"id\":1}");
	ck_assert_str_eq(sent_type(a, -1), "shutdown");
	ck_assert_int_eq(a->w->state, W_DRAINING);
	/* nobody joins a pool that is stopping */
	ck_assert_ptr_null(pool_worker_new(pool, &fake_ops, &fakes[5], 1));
}
END_TEST

START_TEST(test_recycle)
{
	struct fake *a = ready_fake(0, 1);

	a->w->limit = 2;
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	input(a->w, "{\"type\":\"done\",\"id\":1}");
	ck_assert_int_eq(a->w->state, W_READY);
	ck_assert_int_eq(pool_dispatch(pool, job(2), NULL), 0);
	input(a->w, "{\"type\":\"done\",\"id\":2}");
	ck_assert_int_eq(a->w->state, W_DRAINING);
	ck_assert_str_eq(sent_type(a, -1), "shutdown");
	ck_assert_int_eq(pool_stats(pool)->recycled, 1);
	ck_assert_uint_eq(pool_free_slots(pool), 0);
}
END_TEST

START_TEST(test_kill_and_alive)
{
	struct fake *a = ready_fake(0, 1), *b = ready_fake(1, 1);

	ck_assert_uint_eq(pool_alive(pool), 2);
	b->alive = 0;
	ck_assert_uint_eq(pool_alive(pool), 1);
	pool_kill(pool);
	ck_assert_int_eq(a->terms, 1);
	ck_assert_int_eq(a->term_sig, SIGKILL);
	ck_assert_int_eq(b->terms, 0);
}
END_TEST

/* --- real children ---------------------------------------------------------- */

static void
on_sigchld(evutil_socket_t sig, short ev, void *arg)
{
	pool_reap(pool);
}

static int
have_capacity(void *arg)
{
	return pool_free_slots(pool) > 0;
}

static int
have_failed(void *arg)
{
	return count_evs('f') > 0;
}

static int
have_problem(void *arg)
{
	return pool_problem(pool) != NULL;
}

/*
 * A worker in sh: hello on fd 3, read the welcome and one update, then
 * exit 3 without answering.
 */
#define SH_WORKER "printf '{\"type\":\"hello\",\"protocol\":1,\"slots\":1}\\n' " \
	">&3; read -r l <&3; read -r l <&3; exit 3"

static struct event *sigchld;

/* `workers = n` of cmd, reaped on SIGCHLD. */
static void
children_start_n(const char *cmd, int n)
{
	sigchld = evsignal_new(base, SIGCHLD, on_sigchld, NULL);
	evsignal_add(sigchld, NULL);
	conf.workers = n;
	conf.worker_command = strdup(cmd);
	pool_reconfigure(pool, &conf, 0);
}

static void
children_start(const char *cmd)
{
	children_start_n(cmd, 1);
}

/* The pool kills its children before nothing reaps them any more. */
static void
children_stop(void)
{
	pool_free(pool);
	pool = NULL;
	event_free(sigchld);
}

/*
 * Children of cmd until the pool has a problem with them: that it says
 * want, then how many times in a row (more children may have died by the
 * time the test looks).
 */
static void
children_problem(const char *cmd, const char *want)
{
	const char *p;

	children_start(cmd);
	TESTLOOP_UNTIL(base, have_problem, NULL, 20000, "a problem");
	p = pool_problem(pool);
	ck_assert_msg(strncmp(p, want, strlen(want)) == 0 &&
	    strstr(p + strlen(want), " times in a row)") != NULL,
	    "problem \"%s\", not \"%s...\"", p, want);
}

/*
 * A plain command line that begins with exec itself runs as written: the
 * daemon's own exec in front would make the shell look for a program named
 * exec, and the child would exit 127 before its hello.
 */
START_TEST(test_child_exec_line)
{
	char path[] = "/tmp/check_pool.XXXXXX", cmd[64];
	const char *sh = SH_WORKER "\n";
	int fd;

	ck_assert_int_ge(fd = mkstemp(path), 0);
	ck_assert_int_eq(write(fd, sh, strlen(sh)), (ssize_t)strlen(sh));
	close(fd);
	snprintf(cmd, sizeof(cmd), "  exec /bin/sh %s", path);
	children_start(cmd);
	TESTLOOP_UNTIL(base, have_capacity, NULL, 20000, "the child's hello");
	ck_assert_int_eq(pool_stats(pool)->spawned, 1);
	unlink(path);
	children_stop();
}
END_TEST

START_TEST(test_child_dies_with_update)
{
	json_t *a;

	children_start(SH_WORKER);
	TESTLOOP_UNTIL(base, have_capacity, NULL, 20000, "the child's hello");
	ck_assert_int_eq(pool_stats(pool)->spawned, 1);
	a = pool_describe(pool);
	ck_assert_int_gt(json_integer_value(json_object_get(json_array_get(a,
	    0), "pid")), 0);
	ck_assert(json_is_false(json_object_get(json_array_get(a, 0),
	    "external")));
	json_decref(a);
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	TESTLOOP_UNTIL(base, have_failed, NULL, 20000, "the update back");
	ck_assert_int_eq(evs[0].id, 1);
	ck_assert_str_eq(evs[0].text, "worker exited with status 3");
	ck_assert_int_eq(evs[0].retry, 1);
	ck_assert_int_eq(pool_stats(pool)->crashed, 1);
	/* and a new one takes its place */
	TESTLOOP_UNTIL(base, have_capacity, NULL, 20000, "a new child");
	ck_assert_int_eq(pool_stats(pool)->spawned, 2);
	ck_assert_ptr_null(pool_problem(pool));
	children_stop();
}
END_TEST

START_TEST(test_child_dies_before_hello)
{
	children_problem("false", "workers exit before hello (worker exited "
	    "with status 1, ");
	ck_assert_uint_eq(pool_free_slots(pool), 0);
	children_stop();
}
END_TEST

/* Children cut off before hello: the problem says why, not just "exit". */
START_TEST(test_child_hello_refused)
{
	children_problem("printf '{\"type\":\"hello\",\"protocol\":1,"
	    "\"slots\":0}\\n' >&3; sleep 30", "workers' hello refused: "
	    "\"slots\" out of range (");
	ck_assert_int_ge(pool_stats(pool)->protocol_errors, 1);
	children_stop();
}
END_TEST

START_TEST(test_child_hello_missing)
{
	conf.hello_timeout = 100;
	children_problem("sleep 30", "workers' hello missing: none within "
	    "100 ms (");
	children_stop();
}
END_TEST

/*
 * A spawned child has its credential in its environment from the start,
 * the same as in its welcome; what the daemon's own environment has under
 * those names never reaches it.  The worker exits 7 if all is as it should
 * be, 8 if not, once it has its update (which comes back failed with that).
 */
#define SH_ENV_WORKER "printf '{\"type\":\"hello\",\"protocol\":1," \
	"\"slots\":1}\\n' >&3; read -r l <&3; read -r u <&3; " \
	"case \"$l\" in *\"\\\"api_token\\\":\\\"$TGRUNNER_API_TOKEN\\\"\"*) ;; " \
	"*) exit 8;; esac; "

START_TEST(test_child_endpoint_env)
{
	setenv("TGRUNNER_API_ROOT", "http://daemon-env", 1);
	setenv("TGRUNNER_API_TOKEN", "daemon-env", 1);
	children_start(SH_ENV_WORKER "test \"$TGRUNNER_API_ROOT\" = " API_ROOT
	    " && test \"$TGRUNNER_API_TOKEN\" = cred-$TGRUNNER_WORKER_ID && "
	    "exit 7; exit 8");
	TESTLOOP_UNTIL(base, have_capacity, NULL, 20000, "the child's hello");
	ck_assert_int_eq(grants, 1);
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	TESTLOOP_UNTIL(base, have_failed, NULL, 20000, "the update back");
	ck_assert_str_eq(evs[0].text, "worker exited with status 7");
	ck_assert_int_eq(revokes, 1);
	ck_assert_int_eq(revoked_id, 1);
	/* no endpoint: neither variable, inherited or not */
	no_endpoint = 1;
	nevs = 0;
	conf.worker_command[0] = '\0';
	free(conf.worker_command);
	conf.worker_command = strdup("printf '{\"type\":\"hello\","
	    "\"protocol\":1,\"slots\":1}\\n' >&3; read -r l <&3; "
	    "read -r u <&3; test -z \"${TGRUNNER_API_ROOT+x}"
	    "${TGRUNNER_API_TOKEN+x}\" && exit 7; exit 8");
	pool_reconfigure(pool, &conf, 1);
	TESTLOOP_UNTIL(base, have_capacity, NULL, 20000, "the new child");
	ck_assert_int_eq(pool_dispatch(pool, job(2), NULL), 0);
	TESTLOOP_UNTIL(base, have_failed, NULL, 20000, "the update back");
	ck_assert_str_eq(evs[0].text, "worker exited with status 7");
	unsetenv("TGRUNNER_API_ROOT");
	unsetenv("TGRUNNER_API_TOKEN");
	children_stop();
}
END_TEST

/* --- restarts, one at a time ------------------------------------------------ */

/*
 * A worker in sh that answers each update done after 1 s and exits 0 on
 * shutdown (the update frame begins {"type":"update","id":N,...}).
 */
#define SH_GOOD "printf '{\"type\":\"hello\",\"protocol\":1,\"slots\":1}\\n' " \
	">&3; while read -r l <&3; do case \"$l\" in *'\"shutdown\"'*) " \
	"exit 0;; *'\"update\"'*) sleep 1; i=${l#*'\"id\":'}; i=${i%%,*}; " \
	"printf '{\"type\":\"done\",\"id\":%s}\\n' \"$i\" >&3;; esac; done"
/* One that never leaves by itself: shutdown is ignored. */
#define SH_STUBBORN "printf '{\"type\":\"hello\",\"protocol\":1," \
	"\"slots\":1}\\n' >&3; while read -r l <&3; do :; done"

/* What was seen while a restart ran, sampled between loop passes. */
static struct {
	int	max_workers;	/* in the pool, any state */
	int	min_ready;
	int	draining_busy;	/* most an old worker held when it drained */
} seen;

static json_t *
worker_ids(void)
{
	json_t *a = pool_describe(pool), *ids = json_array(), *o;
	size_t i;

	json_array_foreach(a, i, o)
		json_array_append(ids, json_object_get(o, "id"));
	json_decref(a);
	return ids;
}

static int
count_state(const char *state)
{
	json_t *a = pool_describe(pool), *o;
	size_t i;
	int n = 0;

	json_array_foreach(a, i, o)
		n += strcmp(json_string_value(json_object_get(o, "state")),
		    state) == 0;
	json_decref(a);
	return n;
}

static int
restart_over(void *arg)
{
	json_t *r = pool_restart_status(pool), *a = pool_describe(pool);
	int over, ready = count_state("ready"), busy;

	if ((int)json_array_size(a) > seen.max_workers)
		seen.max_workers = (int)json_array_size(a);
	if (ready < seen.min_ready)
		seen.min_ready = ready;
	busy = (int)json_integer_value(json_object_get(r, "draining_busy"));
	if (busy > seen.draining_busy)
		seen.draining_busy = busy;
	over = strcmp(json_string_value(json_object_get(r, "state")),
	    "running") != 0;
	json_decref(a);
	json_decref(r);
	return over;
}

static int
all_ready(void *arg)
{
	return count_state("ready") == conf.workers &&
	    (int)pool_alive(pool) == conf.workers;
}

/* pool_restart and its end; the restart's status, for the test to free. */
static json_t *
restart_and_wait(int want)
{
	seen.max_workers = 0;
	seen.min_ready = 1 << 30;
	seen.draining_busy = 0;
	ck_assert_int_eq(pool_restart(pool), want);
	TESTLOOP_UNTIL(base, restart_over, NULL, 30000, "the restart's end");
	return pool_restart_status(pool);
}

static int
has_id(json_t *ids, json_int_t id)
{
	json_t *v;
	size_t i;

	json_array_foreach(ids, i, v)
		if (json_integer_value(v) == id)
			return 1;
	return 0;
}

START_TEST(test_restart_one_at_a_time)
{
	json_t *old, *now, *r, *a;
	size_t i;

	ck_assert(json_is_null(r = pool_restart_status(pool)));
	json_decref(r);
	children_start_n(SH_GOOD, 2);
	TESTLOOP_UNTIL(base, all_ready, NULL, 20000, "2 children ready");
	old = worker_ids();
	/* both busy: the old one that drains first still holds its update */
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	ck_assert_int_eq(pool_dispatch(pool, job(2), NULL), 0);
	r = restart_and_wait(2);
	ck_assert_str_eq(json_string_value(json_object_get(r, "state")),
	    "done");
	ck_assert_int_eq(json_integer_value(json_object_get(r, "replaced")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(r, "total")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(r, "external")), 0);
	json_decref(r);
	/* never fewer ready than before, never more than one extra */
	ck_assert_int_ge(seen.min_ready, 2);
	ck_assert_int_le(seen.max_workers, 3);
	ck_assert_int_eq(seen.draining_busy, 1);
	/* the updates finished where they ran, not given back */
	ck_assert_int_eq(count_evs('f'), 0);
	ck_assert_int_eq(count_evs('d'), 2);
	for (i = 0; i < 2; i++)
		ck_assert(has_id(old, evs[i].worker_id));
	/* two new workers, of the new generation, and ready */
	now = worker_ids();
	ck_assert_uint_eq(json_array_size(now), 2);
	for (i = 0; i < 2; i++)
		ck_assert(!has_id(old, json_integer_value(json_array_get(now,
		    i))));
	a = pool_describe(pool);
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(json_integer_value(json_object_get(
		    json_array_get(a, i), "generation")), 1);
	json_decref(a);
	ck_assert_int_eq(count_state("ready"), 2);
	ck_assert_int_eq(pool_stats(pool)->crashed, 0);
	json_decref(old);
	json_decref(now);
	children_stop();
}
END_TEST

/* The script on disk broke: the first replacement dies, the rest stay. */
START_TEST(test_restart_stops_on_failed_start)
{
	json_t *old, *now, *r;
	const char *why;

	children_start_n(SH_GOOD, 2);
	TESTLOOP_UNTIL(base, all_ready, NULL, 20000, "2 children ready");
	old = worker_ids();
	free(conf.worker_command);
	conf.worker_command = strdup("false");
	r = restart_and_wait(2);
	ck_assert_str_eq(json_string_value(json_object_get(r, "state")),
	    "stopped");
	ck_assert_int_eq(json_integer_value(json_object_get(r, "replaced")), 0);
	why = json_string_value(json_object_get(r, "why"));
	ck_assert_msg(strcmp(why, "new worker=3 did not come up: worker "
	    "exited with status 1") == 0, "why: %s", why);
	json_decref(r);
	ck_assert_ptr_nonnull(pool_problem(pool));
	/* the old ones run on; nothing started again behind the restart */
	testloop_for(base, 300);
	now = worker_ids();
	ck_assert(json_equal(old, now));
	ck_assert_int_eq(count_state("ready"), 2);
	ck_assert_int_eq(pool_stats(pool)->spawned, 3);
	json_decref(now);
	/* fixed: a second restart goes through */
	free(conf.worker_command);
	conf.worker_command = strdup(SH_GOOD);
	r = restart_and_wait(2);
	ck_assert_str_eq(json_string_value(json_object_get(r, "state")),
	    "done");
	json_decref(r);
	ck_assert_ptr_null(pool_problem(pool));
	now = worker_ids();
	ck_assert(!has_id(old, json_integer_value(json_array_get(now, 0))));
	ck_assert(!has_id(old, json_integer_value(json_array_get(now, 1))));
	json_decref(old);
	json_decref(now);
	children_stop();
}
END_TEST

/* A worker that ignores shutdown is made to go at its deadline. */
START_TEST(test_restart_shutdown_ignored)
{
	json_t *r;

	conf.shutdown_timeout = 300;
	children_start_n(SH_STUBBORN, 1);
	TESTLOOP_UNTIL(base, all_ready, NULL, 20000, "a child ready");
	r = restart_and_wait(1);
	ck_assert_str_eq(json_string_value(json_object_get(r, "state")),
	    "done");
	json_decref(r);
	ck_assert_int_eq(count_state("ready"), 1);
	ck_assert_uint_eq(pool_alive(pool), 1);
	children_stop();
}
END_TEST

/* --- real children, the order of events forced ----------------------------- */

/*
 * Nothing reaps on SIGCHLD here: the test waits for a child's death
 * without running the loop, then runs the loop or calls pool_reap() as it
 * chooses, so that what the pool learns first is the test's choice.
 */

#define SH_HELLO "printf '{\"type\":\"hello\",\"protocol\":1,\"slots\":1}\\n' >&3; "
/* hello, then read the welcome and one update */
#define SH_TAKE_ONE SH_HELLO "read -r l <&3; read -r l <&3; "
/* done for update 1 and death by SIGKILL: the done is all in the socket */
#define SH_DONE_AND_DIE SH_TAKE_ONE \
	"printf '{\"type\":\"done\",\"id\":1}\\n' >&3; kill -9 $$"

/* `workers = 1` of cmd, reaped only when the test says. */
static void
children_by_hand(const char *cmd)
{
	conf.workers = 1;
	conf.worker_command = strdup(cmd);
	pool_reconfigure(pool, &conf, 0);
}

/* The one worker's member, from the pool's description (borrowed). */
static json_t *
the_worker(const char *member)
{
	json_decref(description);
	description = pool_describe(pool);
	ck_assert_int_eq(json_array_size(description), 1);
	return json_object_get(json_array_get(description, 0), member);
}

static pid_t
child_pid(void)
{
	pid_t pid = (pid_t)json_integer_value(the_worker("pid"));

	ck_assert_int_gt(pid, 0);
	return pid;
}

static int
is_killing(void *arg)
{
	return strcmp(json_string_value(the_worker("state")), "killing") == 0;
}

/* Wait until pid is dead, not reaped, without running the loop. */
static void
wait_dead(pid_t pid, int code, int status)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	while (waitid(P_PID, pid, &si, WEXITED | WNOWAIT) == -1)
		ck_assert_int_eq(errno, EINTR);
	ck_assert_int_eq(si.si_code, code);
	ck_assert_int_eq(si.si_status, status);
}

/* The worker took update 1, sent its done and died: the done counts. */
static void
assert_done_honoured(void)
{
	ck_assert_msg(count_evs('d') == 1 && count_evs('f') == 0, "done %d, "
	    "failed %d (%s): a done in the socket of a dead worker was lost",
	    count_evs('d'), count_evs('f'), nevs > 0 ? evs[0].text : "");
	ck_assert_int_eq(evs[0].id, 1);
}

/* SIGCHLD is handled before the read event with the done. */
START_TEST(test_child_done_then_reaped)
{
	pid_t pid;

	children_by_hand(SH_DONE_AND_DIE);
	TESTLOOP_UNTIL(base, have_capacity, NULL, 20000, "the child's hello");
	pid = child_pid();
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	wait_dead(pid, CLD_KILLED, SIGKILL);
	pool_reap(pool);
	assert_done_honoured();
}
END_TEST

/*
 * Something is written to the dead worker first (the result of a call it
 * made): the write fails, and the write error comes before the read event
 * with its done.
 */
START_TEST(test_child_done_then_write_error)
{
	json_t *ref = json_integer(7);
	pid_t pid;
	int i, id;

	children_by_hand(SH_DONE_AND_DIE);
	TESTLOOP_UNTIL(base, have_capacity, NULL, 20000, "the child's hello");
	pid = child_pid();
	id = (int)json_integer_value(the_worker("id"));
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	wait_dead(pid, CLD_KILLED, SIGKILL);
	pool_result(pool, id, ref, 1, NULL, 0, NULL, NULL, 0);
	json_decref(ref);
	/* the write error, and whatever else the loop has for it now */
	for (i = 0; i < 5; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_msg(is_killing(NULL), "the failed write was not seen");
	pool_reap(pool);
	assert_done_honoured();
}
END_TEST

static pid_t	 watched;

static int
watched_dead(void *arg)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	return waitid(P_PID, watched, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	    si.si_pid == watched;
}

/*
 * A live worker that closes its socket holding an update is told to go
 * (SIGTERM), though reading what it left took it out of service already.
 */
START_TEST(test_child_closes_socket)
{
	children_by_hand(SH_TAKE_ONE "exec 3<&-; sleep 30");
	TESTLOOP_UNTIL(base, have_capacity, NULL, 20000, "the child's hello");
	watched = child_pid();
	ck_assert_int_eq(pool_dispatch(pool, job(1), NULL), 0);
	TESTLOOP_UNTIL(base, watched_dead, NULL, 20000, "the worker that "
	    "closed its socket told to go");
	wait_dead(watched, CLD_KILLED, SIGTERM);
	pool_reap(pool);
	ck_assert_int_eq(count_evs('f'), 1);
	ck_assert_str_eq(evs[0].text, "worker exited on signal 15");
}
END_TEST

/*
 * A SIGKILL from elsewhere before hello says nothing about worker_command,
 * even when the pool saw the connection close first and sent the corpse a
 * SIGTERM: not a step towards giving up on spawning.  (One that exits by
 * itself before hello is: test_child_dies_before_hello.)
 */
START_TEST(test_child_foreign_sigkill_before_hello)
{
	pid_t pid;

	children_by_hand("sleep 30");
	pid = child_pid();
	kill(pid, SIGKILL);
	wait_dead(pid, CLD_KILLED, SIGKILL);
	TESTLOOP_UNTIL(base, is_killing, NULL, 20000, "the closed connection");
	pool_reap(pool);
	ck_assert_msg(pool_problem(pool) == NULL, "counted as a failed start: "
	    "%s", pool_problem(pool));
}
END_TEST

/*
 * A hello read only once the worker is dead gets no welcome, and its
 * slots are never offered: nothing may be sent to a worker known gone.
 */
START_TEST(test_child_hello_then_reaped)
{
	pid_t pid;

	children_by_hand(SH_HELLO "kill -9 $$");
	pid = child_pid();
	wait_dead(pid, CLD_KILLED, SIGKILL);
	pool_reap(pool);
	ck_assert_int_eq(ncapacity, 0);
	ck_assert_int_eq(pool_stats(pool)->protocol_errors, 0);
	ck_assert_int_eq(pool_stats(pool)->exited, 1);
	ck_assert_ptr_null(pool_problem(pool));
}
END_TEST

/* What a worker wrote to stdout just before it died is logged. */
START_TEST(test_child_last_words)
{
	char path[] = "/tmp/check_pool.XXXXXX", buf[8192];
	int fd, saved;
	ssize_t n;
	pid_t pid;

	children_by_hand("echo 'my last words'; kill -9 $$");
	pid = child_pid();
	wait_dead(pid, CLD_KILLED, SIGKILL);
	/* the log, at info level, into a file */
	ck_assert_int_ge(fd = mkstemp(path), 0);
	unlink(path);
	ck_assert_int_ge(saved = dup(2), 0);
	ck_assert_int_eq(dup2(fd, 2), 2);
	log_set_level(LOG_LVL_INFO);
	pool_reap(pool);
	log_set_level(LOG_LVL_WARN);
	ck_assert_int_eq(dup2(saved, 2), 2);
	close(saved);
	ck_assert_int_ge(n = pread(fd, buf, sizeof(buf) - 1, 0), 0);
	close(fd);
	buf[n] = '\0';
	ck_assert_msg(strstr(buf, "my last words") != NULL, "not in the log:\n"
	    "%s", buf);
}
END_TEST

static Suite *
pool_suite(void)
{
	Suite	*s = suite_create("pool");
	TCase	*tc = tcase_create("fake");
	TCase	*ch = tcase_create("children");
	TCase	*hand = tcase_create("children reaped by hand");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_hello_and_dispatch);
	tcase_add_test(tc, test_round_robin);
	tcase_add_test(tc, test_affinity);
	tcase_add_test(tc, test_done_frees_slot);
	tcase_add_test(tc, test_protocol_state);
	tcase_add_test(tc, test_given_back_only_when_gone);
	tcase_add_test(tc, test_fail_frame);
	tcase_add_test(tc, test_deadline);
	tcase_add_test(tc, test_given_deadline_and_cancel);
	tcase_add_test(tc, test_late_done_counts);
	tcase_add_test(tc, test_stray_answers_bounded);
	tcase_add_test(tc, test_cut_off_no_deadline);
	tcase_add_test(tc, test_call_frames);
	tcase_add_test(tc, test_held);
	tcase_add_test(tc, test_api_credentials);
	tcase_add_test(tc, test_shutdown_when_idle);
	tcase_add_test(tc, test_recycle);
	tcase_add_test(tc, test_kill_and_alive);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(ch, setup, teardown);
	tcase_add_test(ch, test_child_dies_with_update);
	tcase_add_test(ch, test_child_dies_before_hello);
	tcase_add_test(ch, test_child_hello_refused);
	tcase_add_test(ch, test_child_hello_missing);
	tcase_add_test(ch, test_child_endpoint_env);
	tcase_add_test(ch, test_child_exec_line);
	tcase_add_test(ch, test_restart_one_at_a_time);
	tcase_add_test(ch, test_restart_stops_on_failed_start);
	tcase_add_test(ch, test_restart_shutdown_ignored);
	suite_add_tcase(s, ch);
	tcase_add_checked_fixture(hand, setup, teardown);
	tcase_add_test(hand, test_child_done_then_reaped);
	tcase_add_test(hand, test_child_done_then_write_error);
	tcase_add_test(hand, test_child_closes_socket);
	tcase_add_test(hand, test_child_foreign_sigkill_before_hello);
	tcase_add_test(hand, test_child_hello_then_reaped);
	tcase_add_test(hand, test_child_last_words);
	suite_add_tcase(s, hand);
	return s;
}

#define TEST_SUITE	pool_suite
#include "testmain.h"

/* SPDX-License-Identifier: ISC */
/*
 * The worker pool (pool.h): the workers and their free slots, the jobs
 * running in them (runs, with their deadlines), dispatch with affinity,
 * what done/fail/call mean, supervision of the children it starts
 * (how many, back-off when they die before hello, recycling, reaping),
 * and restarts of those children one at a time (restart-workers).
 *
 * Workers reach the pool through their connection type (worker.h); the
 * pool never asks which type a worker is.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <uthash.h>

#include "child.h"
#include "conf.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "proto.h"
#include "router.h"
#include "tailq.h"
#include "timeutil.h"
#include "worker.h"
#include "xmalloc.h"

#define SPAWN_BACKOFF_MIN_MS	100
/* An update frame's head (id, keys, attempt, deadline) is smaller than this. */
#define POOL_FRAME_HEAD_MAX	8192
#define SPAWN_BACKOFF_MAX_MS	30000
#define SPAWN_GIVE_UP		8	/* consecutive deaths before hello */

/*
 * A restart of the workers the pool started (pool_restart): each worker
 * of an older generation is replaced in turn.  One step: a replacement is
 * started; once welcomed, one old worker drains; the next step begins when
 * that one has left.  So the pool never has fewer ready workers than
 * before, and at most one more process.
 */
enum restart_state {
	RESTART_NONE,			/* never asked for */
	RESTART_RUNNING,
	RESTART_DONE,
	RESTART_STOPPED			/* a replacement did not come up, ... */
};

struct restart {
	enum restart_state	 state;
	unsigned		 gen;		/* older workers are replaced */
	int			 seq;		/* restarts asked for */
	int			 total;		/* to replace, when it (re)started */
	int			 replaced;	/* when it ended */
	int			 external;	/* not the pool's to restart */
	int			 new_id;	/* the replacement, until welcomed */
	int			 old_id;	/* the worker it replaces, until gone */
	int64_t			 started, ended;	/* wall ms */
	char			 why[384];	/* how it ended, if not done */
	struct event		*timer;		/* the next step, from the loop */
};

static const char *const restart_state_names[] = {
	[RESTART_NONE] = "none",
	[RESTART_RUNNING] = "running",
	[RESTART_DONE] = "done",
	[RESTART_STOPPED] = "stopped",
};

/* A job while it is in a worker. */
struct run {
	struct job		*job;
	struct worker		*w;
	struct event		*timer;		/* deadline, then kill grace */
	int			 cancelled;
	UT_hash_handle		 hh;		/* pool->runs by job id */
	TAILQ_ENTRY(run)	 entry;		/* w->runs */
};

struct pool {
	struct event_base	*base;
	const struct conf	*conf;
	const struct pool_ops	*ops;
	void			*arg;
	json_t			*bot;
	TAILQ_HEAD(, worker)	 workers;
	TAILQ_HEAD(, worker)	 avail;		/* READY with a free slot */
	struct run		*runs;		/* by job id */
	struct event		*spawn_timer;
	int			 next_id;
	int			 early_deaths;	/* consecutive, before hello */
	int			 stopping;
	int			 started;
	char			 problem[256];
	size_t			 nrunning;
	size_t			 nfree;
	struct pool_stats	 stats;
	struct restart		 rs;
};

static void	pool_maintain(struct pool *);
static void	restart_welcomed(struct pool *, struct worker *);
static void	restart_left(struct pool *, struct worker *, const char *why);

/* --- for connection types and the protocol -------------------------------- */

struct event_base *
pool_base(const struct pool *p)
{
	return p->base;
}

const struct conf *
pool_conf(const struct pool *p)
{
	return p->conf;
}

json_t *
pool_bot(const struct pool *p)
{
	return p->bot;
}

struct pool_stats *
pool_counters(struct pool *p)
{
	return &p->stats;
}

int
pool_accepting(const struct pool *p)
{
	return !p->stopping;
}

void
pool_capacity(struct pool *p)
{
	p->ops->capacity(p->arg);
}

/* Told to shut down, and still there at the deadline: made to go. */
static void
worker_exit_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	if (w->state != W_DRAINING)
		return;
	snprintf(w->cut, sizeof(w->cut), "still there %lld ms after shutdown",
	    (long long)w->pool->conf->shutdown_timeout);
	log_warnx("worker=%d pid=%d: %s; %s", w->id, (int)w->pid, w->cut,
	    w->spawned ? "terminating the worker" : "disconnecting");
	worker_terminate(w, SIGTERM);
}

/*
 * Drain w (worker_drain); once it has been sent shutdown it has until the
 * deadline to go.  When the whole pool stops, its user keeps that time.
 */
static void
pool_drain(struct worker *w, int64_t deadline)
{
	struct timeval tv;
	int64_t left;

	worker_drain(w, deadline);
	if (!w->shutdown_sent || w->pool->stopping ||
	    evtimer_pending(w->exit_timer, NULL))
		return;
	left = w->shutdown_at - wall_ms();
	tv = tv_ms(left > 0 ? left : 0);
	evtimer_add(w->exit_timer, &tv);
}

/* No more work for w: drained, or closed if it has not said hello yet. */
static void
pool_retire(struct worker *w, int64_t deadline)
{
	if (w->state == W_STARTING) {
		w->retired = 1;
		worker_close(w, SIGTERM);
	} else if (w->state == W_READY)
		pool_drain(w, deadline);
}

static void
worker_hello_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	snprintf(w->cut, sizeof(w->cut), "hello missing: none within %lld ms",
	    (long long)w->pool->conf->hello_timeout);
	log_warnx("worker=%d pid=%d: %s", w->id, (int)w->pid, w->cut);
	worker_close(w, SIGTERM);
}

struct worker *
pool_worker_new(struct pool *p, const struct worker_ops *ops, void *conn,
    pid_t pid)
{
	struct timeval	 tv = tv_ms(p->conf->hello_timeout);
	struct worker	*w;

	if (p->stopping)
		return NULL;
	w = xcalloc(1, sizeof(*w));
	w->pool = p;
	w->ops = ops;
	w->conn = conn;
	w->id = ++p->next_id;
	w->pid = pid;
	w->state = W_STARTING;
	w->started = time(NULL);
	w->gen = p->rs.gen;
	TAILQ_INIT(&w->runs);
	if ((w->hello_timer = evtimer_new(p->base, worker_hello_timeout,
	    w)) == NULL ||
	    (w->exit_timer = evtimer_new(p->base, worker_exit_timeout,
	    w)) == NULL)
		fatalx(EXIT_NOMEM, "%s: evtimer_new", __func__);
	evtimer_add(w->hello_timer, &tv);
	TAILQ_INSERT_TAIL(&p->workers, w, entry);
	return w;
}

void
pool_worker_api(struct worker *w)
{
	struct pool *p = w->pool;

	if (w->api_root != NULL || !w->ops->api_local ||
	    p->ops->api_grant == NULL)
		return;
	w->api_root = p->ops->api_grant(p->arg, w->id, w->api_token,
	    sizeof(w->api_token));
	if (w->api_root == NULL)
		w->api_token[0] = '\0';
}

static void
pool_worker_free(struct worker *w)
{
	struct pool *p = w->pool;

	/* its calls through the endpoint end with it */
	if (w->api_root != NULL && p->ops->api_revoke != NULL)
		p->ops->api_revoke(p->arg, w->id);
	explicit_bzero(w->api_token, sizeof(w->api_token));
	TAILQ_REMOVE(&p->workers, w, entry);
	if (w->avail)
		TAILQ_REMOVE(&p->avail, w, aentry);
	w->ops->free(w);
	event_free(w->hello_timer);
	event_free(w->exit_timer);
	free(w);
}

/* --- free-slot bookkeeping ------------------------------------------------ */

/* Put w on or off the avail list to match its free slots. */
static void
worker_update_avail(struct worker *w)
{
	struct pool *p = w->pool;
	int want = worker_free_slots(w) > 0;

	if (want && !w->avail) {
		TAILQ_INSERT_TAIL(&p->avail, w, aentry);
		w->avail = 1;
	} else if (!want && w->avail) {
		TAILQ_REMOVE(&p->avail, w, aentry);
		w->avail = 0;
	}
}

void
pool_slots_changed(struct worker *w, int before)
{
	w->pool->nfree += (size_t)(worker_free_slots(w) - before);
	worker_update_avail(w);
}

/* --- jobs in workers ------------------------------------------------------ */

static void	run_timeout(evutil_socket_t, short, void *);

static void
run_free(struct run *r)
{
	struct pool *p = r->w->pool;

	HASH_DEL(p->runs, r);
	TAILQ_REMOVE(&r->w->runs, r, entry);
	event_free(r->timer);
	r->job->owner = NULL;
	p->nrunning--;
	free(r);
}

/* The job left the worker (answered or given back): free its slot. */
static struct job *
run_end(struct run *r)
{
	struct worker *w = r->w;
	struct job *job = r->job;
	int before = worker_free_slots(w);

	run_free(r);
	w->busy--;
	pool_slots_changed(w, before);
	if (w->state == W_DRAINING && w->busy == 0)
		pool_drain(w, w->shutdown_at);
	return job;
}

static int
pool_run_start(struct worker *w, struct job *job)
{
	struct pool *p = w->pool;
	const char *keys[KEYS_MAX];
	struct timeval tv;
	struct run *r;
	int64_t now = wall_ms(), deadline, ms;
	char *line;
	size_t len;
	int i;

	/* a deadline set by whoever gave us the job (a relay's daemon) holds */
	deadline = job->deadline > 0 ? job->deadline :
	    now + p->conf->update_timeout;
	ms = deadline > now ? deadline - now : 0;
	for (i = 0; i < job->nkeys; i++)
		keys[i] = job_key(job, i);
	line = proto_encode_update(job->id, keys, job->nkeys, job->attempt,
	    deadline, job->text->s, job->text->len, &len);
	if (line == NULL)	/* proto/ returns NULL when memory runs out */
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	if (len > PROTO_MAX_FRAME) {
		/* pool_update_fits() was checked before it was queued */
		free(line);
		return -1;
	}
	r = xcalloc(1, sizeof(*r));
	r->job = job;
	r->w = w;
	r->timer = evtimer_new(p->base, run_timeout, r);
	if (w->ops->send(w, line, len) == -1) {
		event_free(r->timer);
		free(r);
		free(line);
		return -1;
	}
	free(line);
	tv = tv_ms(ms);
	evtimer_add(r->timer, &tv);
	job->owner = r;
	HASH_ADD(hh, p->runs, job->id, sizeof(job->id), r);
	TAILQ_INSERT_TAIL(&w->runs, r, entry);
	p->nrunning++;
	p->nfree--;
	w->busy++;
	worker_update_avail(w);
	return 0;
}

/* The worker is told to stop the job; past its grace it is made to go. */
static void
run_cancel(struct run *r, const char *reason)
{
	struct worker *w = r->w;
	struct timeval tv = tv_ms(w->grace > 0 ? w->grace :
	    w->pool->conf->kill_grace);
	struct frame f = { .type = FRAME_CANCEL };

	r->cancelled = 1;
	f.u.cancel.id = r->job->id;
	f.u.cancel.reason = reason;
	worker_send_frame(w, &f);
	evtimer_del(r->timer);
	evtimer_add(r->timer, &tv);
}

/* Past the deadline: cancel; past its grace more, the worker goes. */
static void
run_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct run *r = arg;
	struct worker *w = r->w;

	if (!r->cancelled) {
		w->pool->stats.timeouts++;
		log_warnx("worker=%d pid=%d: update=%lld attempt=%d timed out; "
		    "cancel", w->id, (int)w->pid, (long long)r->job->id,
		    r->job->attempt);
		run_cancel(r, "timeout");
		return;
	}
	snprintf(w->cut, sizeof(w->cut), "update=%lld not answered %lld ms "
	    "after cancel", (long long)r->job->id, (long long)(w->grace > 0 ?
	    w->grace : w->pool->conf->kill_grace));
	log_warnx("worker=%d pid=%d: %s; %s", w->id, (int)w->pid, w->cut,
	    w->spawned ? "terminating the worker" : "disconnecting");
	worker_terminate(w, SIGTERM);
}

void
pool_cancel(struct pool *p, struct job *job, const char *reason)
{
	struct run *r = job->owner;

	if (r == NULL || r->cancelled || r->w->state == W_DEAD)
		return;
	log_info("worker=%d pid=%d: update=%lld attempt=%d: %s; cancel",
	    r->w->id, (int)r->w->pid, (long long)job->id, job->attempt,
	    reason);
	run_cancel(r, reason);
}

void
pool_worker_unreachable(struct worker *w)
{
	struct run *r;

	TAILQ_FOREACH(r, &w->runs, entry)
		evtimer_del(r->timer);
}

/* The worker of that id (even W_DEAD), or NULL. */
static struct worker *
pool_worker_find(const struct pool *p, int id)
{
	struct worker *w;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (w->id == id)
			return w;
	return NULL;
}

/* The run of update id held by w, or NULL. */
static struct run *
pool_run_find(struct worker *w, int64_t id)
{
	struct run *r;

	HASH_FIND(hh, w->pool->runs, &id, sizeof(id), r);
	return r != NULL && r->w == w ? r : NULL;
}

static void
worker_maybe_recycle(struct worker *w)
{
	if (w->limit == 0 || w->served < w->limit || w->state != W_READY)
		return;
	log_info("worker=%d pid=%d: served %llu updates; recycling", w->id,
	    (int)w->pid, (unsigned long long)w->served);
	w->pool->stats.recycled++;
	pool_drain(w, 0);
	pool_maintain(w->pool);
}

/* --- what frames mean ----------------------------------------------------- */

void
pool_worker_ready(struct worker *w)
{
	struct pool *p = w->pool;

	p->early_deaths = 0;
	p->problem[0] = '\0';
	if (w->id == p->rs.new_id)
		restart_welcomed(p, w);
	p->ops->capacity(p->arg);
}

/* w answered update id (done or fail): the job, or NULL if w does not hold it. */
static struct job *
pool_run_answered(struct worker *w, int64_t id)
{
	struct run *r;
	struct job *job;

	if ((r = pool_run_find(w, id)) == NULL)
		return NULL;
	job = run_end(r);
	w->served++;
	worker_maybe_recycle(w);
	return job;
}

int
pool_run_done(struct worker *w, int64_t id, json_t *calls)
{
	struct job *job;

	if ((job = pool_run_answered(w, id)) == NULL)
		return -1;
	w->pool->ops->done(w->pool->arg, job, w, calls);
	return 0;
}

int
pool_run_failed(struct worker *w, int64_t id, const char *why, int retry)
{
	struct job *job;

	if ((job = pool_run_answered(w, id)) == NULL)
		return -1;
	w->pool->ops->failed(w->pool->arg, job, why, retry);
	return 0;
}

int
pool_run_call(struct worker *w, int64_t id, json_t *ref, const char *method,
    json_t *params)
{
	struct pool *p = w->pool;
	struct run *r = NULL;

	if (id != 0 && (r = pool_run_find(w, id)) == NULL)
		return -1;
	p->ops->call(p->arg, w->id, ref, r ? r->job : NULL, method, params);
	return 0;
}

int
pool_held(struct pool *p, int worker_id, int64_t update_id, const char **key,
    int64_t *update)
{
	struct worker *w;
	struct run *r = NULL;

	*key = NULL;
	if ((w = pool_worker_find(p, worker_id)) == NULL || update_id == 0)
		return 0;
	if (update_id > 0 && (r = pool_run_find(w, update_id)) == NULL) {
		worker_complain(w, "a Bot API endpoint call", update_id,
		    "answered 400");
		return -1;
	}
	if (r == NULL) {
		/* no header: the one update it holds, if just one */
		if ((r = TAILQ_FIRST(&w->runs)) == NULL ||
		    TAILQ_NEXT(r, entry) != NULL)
			return 0;
	}
	*key = r->job->nkeys > 0 ? job_key(r->job, 0) : NULL;
	if (update != NULL)
		*update = r->job->id;
	return 1;
}

/* --- the end of a worker -------------------------------------------------- */

void
pool_worker_gone(struct worker *w, const char *why, int how)
{
	struct pool *p = w->pool;
	struct run *r;
	struct job *job;
	int timed_out;

	if (w->state != W_DEAD)
		worker_set_state(w, W_DEAD);
	if (p->ops->gone != NULL)
		p->ops->gone(p->arg, w->id);
	restart_left(p, w, why);
	if (!(how & WORKER_UNSTARTED))
		p->stats.exited++;
	if (how & WORKER_CRASHED)
		p->stats.crashed++;
	if ((how & WORKER_EARLY) && !p->stopping) {
		p->early_deaths++;
		/* cut off for a reason of ours: that reason is the problem */
		if (w->cut[0] != '\0')
			snprintf(p->problem, sizeof(p->problem), "workers' %s "
			    "(%d times in a row)", w->cut, p->early_deaths);
		else
			snprintf(p->problem, sizeof(p->problem), "workers exit "
			    "before hello (%s, %d times in a row)", why,
			    p->early_deaths);
	}
	while ((r = TAILQ_FIRST(&w->runs)) != NULL) {
		timed_out = r->cancelled;
		job = run_end(r);
		p->ops->failed(p->arg, job, timed_out ? "timed out" : why, 1);
	}
	pool_worker_free(w);
}

/* --- supervision ---------------------------------------------------------- */

void
pool_reap(struct pool *p)
{
	struct worker *w;
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		TAILQ_FOREACH(w, &p->workers, entry)
			if (w->spawned && w->pid == pid)
				break;
		if (w != NULL)
			child_exited(w, status);
	}
	if (pid == -1 && errno != ECHILD)
		log_warn("%s: waitpid", __func__);
	pool_maintain(p);
	if (p->nfree > 0)
		p->ops->capacity(p->arg);
}

static void
spawn_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct pool *p = arg;

	pool_maintain(p);
}

/* A child starting or running (not retired): it counts for `workers`. */
static int
worker_active(const struct worker *w)
{
	return w->spawned && (w->state == W_STARTING || w->state == W_READY);
}

/*
 * Children starting or running: what `workers` counts.  A restart's
 * replacement is not counted until it is welcomed: it is one more.
 */
static size_t
pool_active(const struct pool *p)
{
	const struct worker *w;
	size_t n = 0;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (worker_active(w) && w->id != p->rs.new_id)
			n++;
	return n;
}

static uint64_t
pool_request_limit(const struct conf *c)
{
	uint64_t n = (uint64_t)c->max_requests;

	/* up to 10% jitter so a pool started together is not recycled together */
	if (n == 0)
		return 0;
	return n + (uint64_t)random() % (n / 10 + 1);
}

static struct worker *
pool_spawn(struct pool *p)
{
	struct worker *w;

	if ((w = child_spawn(p)) == NULL)
		return NULL;
	w->spawned = 1;
	w->limit = pool_request_limit(p->conf);
	p->stats.spawned++;
	return w;
}

/* Keep `workers` live processes, backing off while they die before hello. */
static void
pool_maintain(struct pool *p)
{
	struct timeval tv;
	int64_t delay;

	if (p->stopping || !p->started || evtimer_pending(p->spawn_timer, NULL))
		return;
	if (p->early_deaths >= SPAWN_GIVE_UP) {
		if (p->early_deaths == SPAWN_GIVE_UP) {
			log_errx("%s; not starting workers any more: fix "
			    "worker_command and reload (SIGHUP)", p->problem);
			p->early_deaths++;
		}
		return;
	}
	if (p->early_deaths > 0) {
		delay = SPAWN_BACKOFF_MIN_MS << (p->early_deaths - 1);
		if (delay > SPAWN_BACKOFF_MAX_MS)
			delay = SPAWN_BACKOFF_MAX_MS;
		if (pool_active(p) >= (size_t)p->conf->workers)
			return;		/* a restart's replacement died */
		if (p->early_deaths == 1)
			log_warnx("%s; respawning with back-off", p->problem);
		/* one spawn per back-off period while failing */
		if (pool_spawn(p) != NULL) {
			tv = tv_ms(delay);
			evtimer_add(p->spawn_timer, &tv);
		}
		return;
	}
	while (pool_active(p) < (size_t)p->conf->workers)
		if (pool_spawn(p) == NULL) {
			tv = tv_ms(SPAWN_BACKOFF_MAX_MS / 10);
			evtimer_add(p->spawn_timer, &tv);
			break;
		}
}

/* --- restarts, one worker at a time --------------------------------------- */

/* A child of an older generation, still serving: the restart replaces it. */
static int
worker_is_old(const struct pool *p, const struct worker *w)
{
	return worker_active(w) && w->gen != p->rs.gen;
}

static int
restart_remaining(const struct pool *p)
{
	const struct worker *w;
	int n = 0;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (worker_is_old(p, w))
			n++;
	return n;
}

static int
restart_replaced(const struct pool *p)
{
	int n = p->rs.total - restart_remaining(p);

	return n > 0 ? n : 0;
}

/* The next step runs from the loop, never inside a worker's callback. */
static void
restart_kick(struct pool *p)
{
	struct timeval tv = { 0, 0 };

	if (p->rs.state == RESTART_RUNNING)
		evtimer_add(p->rs.timer, &tv);
}

static void
restart_end(struct pool *p, enum restart_state s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
restart_end(struct pool *p, enum restart_state s, const char *fmt, ...)
{
	struct restart *rs = &p->rs;
	va_list ap;

	rs->replaced = restart_replaced(p);
	rs->state = s;
	rs->ended = wall_ms();
	rs->new_id = rs->old_id = 0;
	rs->why[0] = '\0';
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(rs->why, sizeof(rs->why), fmt, ap);
		va_end(ap);
	}
	evtimer_del(rs->timer);
}

/* The old worker that goes next: the one with the least to finish. */
static struct worker *
restart_victim(const struct pool *p, const struct worker *except)
{
	struct worker *w, *best = NULL;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (w != except && worker_is_old(p, w) && (best == NULL ||
		    (w->state == W_STARTING) > (best->state == W_STARTING) ||
		    (w->state == best->state && w->busy < best->busy)))
			best = w;
	return best;
}

/* One step: all replaced, or a replacement starts. */
static void
restart_step(evutil_socket_t fd, short ev, void *arg)
{
	struct pool *p = arg;
	struct restart *rs = &p->rs;
	struct worker *w;

	if (rs->state != RESTART_RUNNING || rs->new_id != 0)
		return;		/* its hello or its death comes next */
	if (rs->old_id != 0 && pool_worker_find(p, rs->old_id) != NULL)
		return;		/* the one replaced has not left yet */
	rs->old_id = 0;
	if (restart_remaining(p) == 0) {
		restart_end(p, RESTART_DONE, NULL);
		log_notice("restart-workers: done, %d worker(s) replaced in "
		    "%.1fs", rs->replaced,
		    (double)(rs->ended - rs->started) / 1000.0);
		return;
	}
	if ((w = pool_spawn(p)) == NULL) {
		restart_end(p, RESTART_STOPPED, "a new worker cannot be "
		    "started (the log says why)");
		log_errx("restart-workers: stopped after %d of %d: %s; the "
		    "old workers keep running", rs->replaced, rs->total,
		    rs->why);
		return;
	}
	rs->new_id = w->id;
}

/*
 * The replacement is up: one old worker drains (it finishes what it
 * holds, then is told to shut down).  Had an old one left meanwhile, the
 * replacement took its place and none has to go.
 */
static void
restart_welcomed(struct pool *p, struct worker *w)
{
	struct restart *rs = &p->rs;
	struct worker *old;

	rs->new_id = 0;
	if (pool_active(p) > (size_t)p->conf->workers) {
		/* none old left (a reload drained them): it is one too many */
		if ((old = restart_victim(p, w)) == NULL)
			old = w;
		rs->old_id = old->id;
		pool_retire(old, 0);
		log_info("restart-workers: worker=%d pid=%d is up; worker=%d "
		    "pid=%d finishes its %d update(s) and exits (%d/%d "
		    "replaced)", w->id, (int)w->pid, old->id, (int)old->pid,
		    old->busy, restart_replaced(p), rs->total);
	} else
		log_info("restart-workers: worker=%d pid=%d is up (%d/%d "
		    "replaced)", w->id, (int)w->pid, restart_replaced(p),
		    rs->total);
	restart_kick(p);
}

/*
 * w is gone.  The replacement, before its welcome: it did not come up,
 * and the restart stops there, the old workers running on.
 */
static void
restart_left(struct pool *p, struct worker *w, const char *why)
{
	struct restart *rs = &p->rs;

	if (rs->state != RESTART_RUNNING)
		return;
	if (w->id != rs->new_id) {
		if (w->id == rs->old_id)
			restart_kick(p);
		return;
	}
	restart_end(p, RESTART_STOPPED, "new worker=%d did not come up: %s",
	    w->id, why);
	log_errx("restart-workers: stopped after %d of %d: %s; the %d old "
	    "worker(s) keep running (fix worker_command, then restart-workers "
	    "again)", rs->replaced, rs->total, rs->why, restart_remaining(p));
}

int
pool_restart(struct pool *p)
{
	struct restart *rs = &p->rs;
	const struct worker *w;
	int again = rs->state == RESTART_RUNNING;

	rs->gen++;
	rs->seq++;
	rs->state = RESTART_RUNNING;
	rs->started = wall_ms();
	rs->ended = 0;
	rs->why[0] = '\0';
	rs->total = restart_remaining(p);
	rs->external = 0;
	TAILQ_FOREACH(w, &p->workers, entry)
		if (!w->spawned && w->state != W_DEAD)
			rs->external++;
	/* a command that failed may be fixed now: try it at once */
	p->early_deaths = 0;
	p->problem[0] = '\0';
	log_notice("restart-workers: replacing %d worker(s) one at a time%s",
	    rs->total, again ? " (the restart in progress starts over: "
	    "every worker running now is replaced)" : "");
	if (rs->external > 0)
		log_notice("restart-workers: %d external worker(s) are not "
		    "restarted: the daemon did not start them", rs->external);
	evtimer_del(p->spawn_timer);
	pool_maintain(p);
	restart_kick(p);
	return rs->total;
}

json_t *
pool_restart_status(const struct pool *p)
{
	const struct restart *rs = &p->rs;
	const struct worker *w;
	json_t *o;

	if (rs->state == RESTART_NONE)
		return json_null();
	o = json_pack("{s:s, s:i, s:i, s:i, s:i, s:I}",
	    "state", restart_state_names[rs->state], "seq", rs->seq,
	    "replaced", rs->state == RESTART_RUNNING ? restart_replaced(p) :
	    rs->replaced, "total", rs->total, "external", rs->external,
	    "started", (json_int_t)(rs->started / 1000));
	if (rs->ended != 0)
		json_object_set_new(o, "ended", json_integer(rs->ended / 1000));
	if (rs->why[0] != '\0')
		json_object_set_new(o, "why", json_string(rs->why));
	if (rs->new_id != 0)
		json_object_set_new(o, "starting", json_integer(rs->new_id));
	if (rs->old_id != 0 && (w = pool_worker_find(p, rs->old_id)) != NULL) {
		json_object_set_new(o, "draining", json_integer(w->id));
		json_object_set_new(o, "draining_busy", json_integer(w->busy));
	}
	return o;
}

/* --- public interface ----------------------------------------------------- */

struct pool *
pool_new(struct event_base *base, const struct conf *conf,
    const struct pool_ops *ops, void *arg)
{
	struct pool *p;

	p = xcalloc(1, sizeof(*p));
	p->base = base;
	p->conf = conf;
	p->ops = ops;
	p->arg = arg;
	TAILQ_INIT(&p->workers);
	TAILQ_INIT(&p->avail);
	if ((p->spawn_timer = evtimer_new(base, spawn_timer_cb, p)) == NULL ||
	    (p->rs.timer = evtimer_new(base, restart_step, p)) == NULL)
		fatalx(EXIT_NOMEM, "%s: evtimer_new", __func__);
	return p;
}

void
pool_free(struct pool *p)
{
	struct worker *w;
	struct run *r;

	if (p == NULL)
		return;
	while ((w = TAILQ_FIRST(&p->workers)) != NULL) {
		while ((r = TAILQ_FIRST(&w->runs)) != NULL)
			run_free(r);
		pool_worker_free(w);
	}
	event_free(p->spawn_timer);
	event_free(p->rs.timer);
	json_decref(p->bot);
	free(p);
}

void
pool_start(struct pool *p, json_t *bot)
{
	json_decref(p->bot);
	p->bot = json_incref(bot);
	p->started = 1;
	pool_maintain(p);
}

void
pool_reconfigure(struct pool *p, const struct conf *conf, int replace)
{
	struct worker *w, *tw;
	size_t keep = 0;
	int pass;

	p->conf = conf;
	p->early_deaths = 0;
	p->problem[0] = '\0';
	evtimer_del(p->spawn_timer);
	if (replace && p->rs.state == RESTART_RUNNING) {
		restart_end(p, RESTART_DONE, "a reload with a new worker_command "
		    "replaced every worker");
		log_notice("restart-workers: %s", p->rs.why);
	}
	/*
	 * Drain the surplus (or all, for a new command); new ones replace
	 * them.  The newest generation is kept first, so that a restart in
	 * progress keeps what it has done; its replacement is one more.
	 */
	for (pass = 0; pass < 2; pass++)
		TAILQ_FOREACH_SAFE(w, &p->workers, entry, tw) {
			if (!worker_active(w) || w->id == p->rs.new_id ||
			    (w->gen == p->rs.gen) != (pass == 0))
				continue;
			if (!replace && keep < (size_t)conf->workers) {
				keep++;
				continue;
			}
			pool_retire(w, 0);
		}
	pool_maintain(p);
	restart_kick(p);
}

int
pool_update_fits(const char *json, size_t len, const struct keyset *ks)
{
	const char *keys[KEYS_MAX];
	char *line;
	size_t n;
	int i;

	if (len + POOL_FRAME_HEAD_MAX <= PROTO_MAX_FRAME)
		return 1;
	if (len >= PROTO_MAX_FRAME)
		return 0;
	/* close to the limit: the frame itself, with the widest numbers */
	for (i = 0; i < ks->n; i++)
		keys[i] = ks->k[i];
	line = proto_encode_update(INT64_MAX, keys, ks->n, INT_MAX,
	    INT64_MAX, json, len, &n);
	free(line);
	return line != NULL;
}

int
pool_dispatch(struct pool *p, struct job *job, struct worker *w)
{
	if (w == NULL || worker_free_slots(w) == 0)
		w = TAILQ_FIRST(&p->avail);
	if (w == NULL || p->stopping)
		return -1;
	if (pool_run_start(w, job) == -1) {
		worker_close(w, SIGTERM);
		return -1;
	}
	/* round robin among workers with room keeps one-slot workers even */
	if (w->avail && TAILQ_NEXT(w, aentry) != NULL) {
		TAILQ_REMOVE(&p->avail, w, aentry);
		TAILQ_INSERT_TAIL(&p->avail, w, aentry);
	}
	return 0;
}

size_t
pool_free_slots(const struct pool *p)
{
	return p->stopping ? 0 : p->nfree;
}

void
pool_worker_throttle(struct pool *p, int worker_id, int on)
{
	struct worker *w;
	int before;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (w->id == worker_id)
			break;
	if (w == NULL || w->throttled == on)
		return;
	before = worker_free_slots(w);
	w->throttled = on;
	pool_slots_changed(w, before);
	if (!on && worker_free_slots(w) > 0)
		p->ops->capacity(p->arg);
}

size_t
pool_running(const struct pool *p)
{
	return p->nrunning;
}

void
pool_result(struct pool *p, int worker_id, json_t *ref, int ok,
    json_t *result, int error_code, const char *description,
    json_t *parameters, int retry_after)
{
	struct frame f = { .type = FRAME_RESULT };
	struct worker *w = pool_worker_find(p, worker_id);

	if (w == NULL || w->state == W_DEAD)
		return;
	f.u.result.ref = ref;
	f.u.result.ok = ok;
	f.u.result.result = result;
	f.u.result.error_code = error_code;
	f.u.result.description = description;
	f.u.result.parameters = parameters;
	f.u.result.retry_after = retry_after;
	worker_send_frame(w, &f);
}

void
pool_shutdown(struct pool *p, int64_t deadline_ms)
{
	struct worker *w, *tw;

	p->stopping = 1;
	evtimer_del(p->spawn_timer);
	if (p->rs.state == RESTART_RUNNING) {
		restart_end(p, RESTART_STOPPED, "the daemon is stopping");
		log_notice("restart-workers: stopped after %d of %d: %s",
		    p->rs.replaced, p->rs.total, p->rs.why);
	}
	TAILQ_FOREACH_SAFE(w, &p->workers, entry, tw)
		pool_retire(w, deadline_ms);
}

void
pool_kill(struct pool *p)
{
	struct worker *w;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (w->ops->alive(w))
			worker_terminate(w, SIGKILL);
}

size_t
pool_alive(const struct pool *p)
{
	const struct worker *w;
	size_t n = 0;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (w->ops->alive(w))
			n++;
	return n;
}

const struct pool_stats *
pool_stats(const struct pool *p)
{
	return &p->stats;
}

const char *
pool_problem(const struct pool *p)
{
	return p->problem[0] != '\0' ? p->problem : NULL;
}

json_t *
pool_describe(const struct pool *p)
{
	const struct worker *w;
	json_t *a = json_array(), *o;

	TAILQ_FOREACH(w, &p->workers, entry) {
		o = json_pack("{s:i, s:i, s:s, s:i, s:i, s:I, s:I, s:i, s:b}",
		    "id", w->id, "pid", (int)w->pid, "state",
		    worker_state_str(w->state), "slots", w->slots, "busy",
		    w->busy, "served", (json_int_t)w->served, "started",
		    (json_int_t)w->started, "generation", (int)w->gen,
		    "held_back", w->throttled);
		w->ops->describe(w, o);
		json_array_append_new(a, o);
	}
	return a;
}

json_t *
pool_status(const struct pool *p)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
	    "spawned", (json_int_t)p->stats.spawned,
	    "exited", (json_int_t)p->stats.exited,
	    "crashed", (json_int_t)p->stats.crashed,
	    "protocol_errors", (json_int_t)p->stats.protocol_errors,
	    "timeouts", (json_int_t)p->stats.timeouts,
	    "recycled", (json_int_t)p->stats.recycled);
}

void
pool_metrics(const struct pool *p, struct evbuffer *out)
{
	const struct pool_stats *ps = &p->stats;

	metrics_gauge(out, "tgrunner_inflight", "Updates running in workers.",
	    p->nrunning);
	metrics_gauge(out, "tgrunner_workers_alive", "Worker processes alive.",
	    pool_alive(p));
	metrics_counter(out, "tgrunner_worker_spawned_total",
	    "Worker processes started.", ps->spawned);
	metrics_counter(out, "tgrunner_worker_restarts_total",
	    "Workers that died unexpectedly.", ps->crashed);
	metrics_counter(out, "tgrunner_worker_protocol_errors_total",
	    "Workers cut off for breaking the protocol.", ps->protocol_errors);
	metrics_counter(out, "tgrunner_worker_timeouts_total",
	    "Updates that passed update_timeout.", ps->timeouts);
	metrics_counter(out, "tgrunner_worker_recycled_total",
	    "Workers recycled after max_requests.", ps->recycled);
}

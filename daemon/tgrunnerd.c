/* SPDX-License-Identifier: ISC */
/*
 * tgrunnerd: long-polls the Telegram Bot API, journals every update before
 * confirming it, and runs updates in supervised worker processes, updates
 * that share a session key one after another.  Runs in the foreground under
 * systemd (Type=notify).  See tgrunnerd(8).
 */
#include "config.h"

#include <sys/prctl.h>
#include <sys/resource.h>

#include <getopt.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <systemd/sd-daemon.h>
#include <uthash.h>

#include "api.h"
#include "calls.h"
#include "conf.h"
#include "control.h"
#include "deadletter.h"
#include "durable.h"
#include "http.h"
#include "journal.h"
#include "keys.h"
#include "log.h"
#include "listener.h"
#include "metrics.h"
#include "natsbus.h"
#include "outbox.h"
#include "policy.h"
#include "poller.h"
#include "pool.h"
#include "proto.h"
#include "remote.h"
#include "router.h"
#include "tgrunnerd.h"
#include "timeutil.h"
#include "token.h"
#include "worker.h"
#include "workerapi.h"
#include "xmalloc.h"

_Static_assert(WORKERAPI_CRED_MAX <= WORKER_API_TOKEN_MAX,
    "a worker holds its credential");

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONF	SYSCONFDIR "/tgrunner.conf"
#define STATUS_EVERY_MS	2000

/* An update set aside: its key has max_calls_per_key calls queued. */
struct tgd_held {
	char		*key;
	struct job	*job;		/* running, as the router sees it */
	UT_hash_handle	 hh;
};

static void	tgd_stop(struct tgd *, const char *why);

const char *
tgd_state_str(enum tgd_state s)
{
	switch (s) {
	case TGD_STARTING:	return "starting";
	case TGD_RUNNING:	return "running";
	case TGD_DRAINING:	return "draining";
	case TGD_STOPPING:	return "stopping";
	}
	return "?";
}

static const char usage_text[] =
    "usage: tgrunnerd [-dhnvV] [-c file]\n"
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

/* --- jobs ------------------------------------------------------------------ */

/* Give up on update id now: done once its dead letter is on disk. */
static void
tgd_give_up(struct tgd *d, int64_t id, int attempt, const char *why,
    struct rcstr *text)
{
	d->stats.dead++;
	/* 1: written later (tgd_dead_written); -1: the next start retries */
	if (deadletter_add(d->deadletter, id, attempt, why, text) == 0) {
		journal_done(d->journal, id);
		durable_dirty(d->durable);
	}
}

/*
 * An update type the key table does not know (a newer Bot API): said once
 * per type, with the keys the fallback gave it.
 */
static void
tgd_unknown_type(struct tgd *d, int64_t id, const struct rcstr *text,
    const struct keyset *ks)
{
	char name[TGD_TYPE_NAME];
	size_t i;

	keys_type_name(text->s, text->len, name, sizeof(name));
	for (i = 0; i < d->ntypes; i++)
		if (strcmp(d->types[i], name) == 0)
			return;
	if (d->ntypes == TGD_TYPES_MAX) {
		if (d->types_full++ == 0)
			log_warnx("update=%lld: more than %d update types this "
			    "tgrunnerd does not know; not naming the others",
			    (long long)id, TGD_TYPES_MAX);
		return;
	}
	memcpy(d->types[d->ntypes++], name, sizeof(name));
	log_warnx("update=%lld type=%s: an update type this tgrunnerd does "
	    "not know; keyed by its own chat and user members (%s); said "
	    "once per type", (long long)id, name, ks->n > 0 ? ks->k[0] :
	    "no key");
}

/* Queue the journaled update id; the job shares the journal's JSON. */
static void
tgd_enqueue(struct tgd *d, int64_t id, int attempt)
{
	struct keyset ks = { .n = 0 };
	struct rcstr *text;
	struct job *job;
	char why[128];

	/* never dropped: it was journaled just now, or replayed from there */
	if ((text = journal_text(d->journal, id)) == NULL)
		fatalx(EXIT_SOFTWARE, "%s: update=%lld is not in the journal",
		    __func__, (long long)id);
	keys_derive_text(text->s, text->len, d->conf.session_key,
	    d->conf.session_key_n, &ks);
	if (ks.unknown)
		tgd_unknown_type(d, id, text, &ks);
	/* a worker would have to refuse it, and the next one too */
	if (!pool_update_fits(text->s, text->len, &ks)) {
		snprintf(why, sizeof(why), "too large for a worker: %zu bytes "
		    "of JSON, an update frame holds at most %d", text->len,
		    PROTO_MAX_FRAME);
		tgd_give_up(d, id, attempt, why, text);
		return;
	}
	job = job_new_shared(id, text);
	job->attempt = attempt;
	job->t_fetched = mono_us();
	router_add(d->router, job, &ks);
}

static void
tgd_replay_one(void *arg, int64_t id, const char *json, size_t len, int attempt)
{
	struct tgd *d = arg;

	(void)json;
	(void)len;
	tgd_enqueue(d, id, attempt);
	d->stats.replayed++;
}

/*
 * Stopped once no worker is alive and the replies they left are sent; past
 * shutdown_timeout, once no call is in flight (the rest stay owed in the
 * journal), or kill_grace later whatever is in flight.
 */
static void
tgd_maybe_exit(struct tgd *d)
{
	if (d->state != TGD_STOPPING || pool_alive(d->pool) > 0)
		return;
	if (api_queued(d->api) == 0 || d->force_exit ||
	    (d->deadline_passed && api_inflight(d->api) == 0))
		event_base_loopexit(d->base, NULL);
}

/*
 * Replies pile up when workers finish faster than the Bot API takes calls:
 * past half the call queue no update starts and polling pauses, until
 * calls drain (tgd_api_released).  The other half stays for `call` frames.
 * The calls of a worker past max_calls_per_worker do not count: that
 * worker is held back on its own (tgd_bound), the others go on.
 */
static int
tgd_api_congested(const struct tgd *d)
{
	return api_gated(d->api) >= (size_t)d->conf.api_max_queued / 2;
}

/*
 * The job's key has max_calls_per_key calls queued: it waits, set aside,
 * until they drain (tgd_bound).  It stays at the head of its keys, so
 * nothing of theirs overtakes it; other keys go on.  1 if held.
 */
static int
tgd_hold(struct tgd *d, struct job *job)
{
	const char *key = calls_key(job);
	struct tgd_held *h;

	if (key == NULL || !api_key_over(d->api, key))
		return 0;
	HASH_FIND_STR(d->held, key, h);
	if (h != NULL)
		return 0;	/* cannot happen: the held job heads the key */
	h = xcalloc(1, sizeof(*h));
	h->key = xstrdup(key);
	h->job = job;
	HASH_ADD_KEYPTR(hh, d->held, h->key, strlen(h->key), h);
	d->nheld++;
	log_debug("update=%lld key=%s: waits for the key's calls",
	    (long long)job->id, key);
	return 1;
}

/* Start job in a worker (w preferred): 0, or -1 when no slot is free. */
static int
tgd_start(struct tgd *d, struct job *job, struct worker *w)
{
	uint64_t now = mono_us();

	if (tgd_hold(d, job))
		return 0;
	if (pool_dispatch(d->pool, job, w) == -1)
		return -1;
	d->stats.dispatched++;
	job->t_started = now;
	if (job->attempt == 1)
		hist_observe(&d->h_dispatch, (double)(now - job->t_fetched) / 1e6);
	return 0;
}

/* The job left its worker for good: release its keys, start its successor. */
static void
tgd_finish(struct tgd *d, struct job *job, struct worker *w)
{
	struct job *next;

	next = router_finish(d->router, job);
	job_free(job);
	if (next != NULL && (tgd_api_congested(d) ||
	    tgd_start(d, next, w) == -1))
		router_retry(d->router, next);
	tgd_dispatch(d);
	if (d->state == TGD_RUNNING)
		poller_kick(d->poller);
	tgd_maybe_exit(d);
}

static void
tgd_job_done(void *arg, struct job *job, struct worker *w, json_t *calls)
{
	struct tgd *d = arg;
	json_t *allowed;

	d->stats.done++;
	hist_observe(&d->h_handler, (double)(mono_us() - job->t_started) / 1e6);
	/*
	 * The done mark, with the calls it owes from now on: the policy first,
	 * so that a refused call is never owed, journaled or replayed.
	 */
	allowed = calls != NULL ? policy_filter_calls(d->policy, w->id,
	    (long long)job->id, calls) : NULL;
	outbox_done(d->outbox, job, allowed);
	json_decref(allowed);
	log_debug("update=%lld attempt=%d done", (long long)job->id,
	    job->attempt);
	tgd_finish(d, job, w);
}

static void
tgd_job_failed(void *arg, struct job *job, const char *why, int retry)
{
	struct tgd *d = arg;

	d->stats.failed++;
	if (retry && job->attempt < d->conf.max_attempts) {
		log_info("update=%lld attempt=%d: %s; retrying",
		    (long long)job->id, job->attempt, why);
		job->attempt++;
		d->stats.retried++;
		router_retry(d->router, job);
		/* what a dead worker queued for it would go out twice */
		api_drop_orphans(d->api, job->id);
		tgd_dispatch(d);
		tgd_maybe_exit(d);
		return;
	}
	/* done only once its dead letter is on disk (deadletter.h) */
	tgd_give_up(d, job->id, job->attempt, why, job->text);
	tgd_finish(d, job, NULL);
}

/* A Bot API call finished: resume what congestion held back. */
static void
tgd_api_released(void *arg)
{
	struct tgd *d = arg;

	if (tgd_api_congested(d))
		return;
	tgd_dispatch(d);
	if (d->state == TGD_RUNNING)
		poller_kick(d->poller);
	tgd_maybe_exit(d);
}

/* A slot freed or a worker left: dispatch, and see whether a stop is done. */
static void
tgd_capacity(void *arg)
{
	tgd_dispatch(arg);
	tgd_maybe_exit(arg);
}

static void
tgd_call(void *arg, int worker_id, json_t *ref, struct job *job,
    const char *method, json_t *params)
{
	struct tgd *d = arg;

	calls_frame(&d->calls, worker_id, ref, job, method, params);
}

/* A worker on this host gets the endpoint, with a credential of its own. */
static const char *
tgd_api_grant(void *arg, int worker_id, char *cred, size_t credsz)
{
	struct tgd *d = arg;
	json_int_t bot_id = json_integer_value(json_object_get(d->bot, "id"));

	if (d->workerapi == NULL || workerapi_credential(d->workerapi,
	    worker_id, (int64_t)bot_id, cred, credsz) == -1)
		return NULL;
	return workerapi_root(d->workerapi);
}

static void
tgd_api_revoke(void *arg, int worker_id)
{
	struct tgd *d = arg;

	if (d->workerapi != NULL)
		workerapi_revoke(d->workerapi, worker_id);
}

/* Before its jobs come back: its unsent calls become droppable orphans. */
static void
tgd_worker_gone(void *arg, int worker_id)
{
	struct tgd *d = arg;

	policy_forget(d->policy, worker_id);
	api_worker_gone(d->api, worker_id);
}

static const struct pool_ops tgd_pool_ops = {
	.done = tgd_job_done,
	.failed = tgd_job_failed,
	.capacity = tgd_capacity,
	.call = tgd_call,
	.api_grant = tgd_api_grant,
	.api_revoke = tgd_api_revoke,
	.gone = tgd_worker_gone,
};

/* --- the endpoint's side ---------------------------------------------------- */

static int
tgd_api_held(void *arg, int worker_id, int64_t update_id, const char **key,
    int64_t *update)
{
	struct tgd *d = arg;

	return pool_held(d->pool, worker_id, update_id, key, update);
}

static int
tgd_api_policy(void *arg, int worker_id, const char *method, json_t *params,
    int *code, char *desc, size_t descsz)
{
	struct tgd *d = arg;

	return calls_policy(&d->calls, worker_id, method, params, code, desc,
	    descsz);
}

static const struct workerapi_ops tgd_workerapi_ops = {
	.held = tgd_api_held,
	.policy = tgd_api_policy,
};

/*
 * A fair-queue bound bit or let go (api.h): a worker past it gets no new
 * update; a key back under half of it runs the update set aside for it.
 */
static void
tgd_bound(void *arg, const char *key, int worker, int over)
{
	struct tgd *d = arg;
	struct tgd_held *h = NULL;

	if (worker > 0)
		pool_worker_throttle(d->pool, worker, over);
	if (key != NULL && !over)
		HASH_FIND_STR(d->held, key, h);
	if (h != NULL) {
		HASH_DEL(d->held, h);
		d->nheld--;
		router_retry(d->router, h->job);
		free(h->key);
		free(h);
	}
	if (!over)
		tgd_dispatch(d);
}

/* Give ready jobs to free slots: O(1) per dispatched job. */
void
tgd_dispatch(struct tgd *d)
{
	struct job *job;

	if (tgd_api_congested(d))
		return;
	while (pool_free_slots(d->pool) > 0 &&
	    (job = router_next(d->router)) != NULL) {
		if (tgd_start(d, job, NULL) == -1) {
			router_retry(d->router, job);
			break;
		}
	}
}

/* A dead letter written after a failed try: its update is done now. */
static void
tgd_dead_written(void *arg, int64_t id)
{
	struct tgd *d = arg;

	journal_done(d->journal, id);
	durable_dirty(d->durable);
}

/* A dead letter goes round again: journaled anew, a first attempt. */
int
tgd_requeue(void *arg, int64_t id, const char *json, size_t len)
{
	struct tgd *d = arg;
	struct jupdate u = { .id = id, .json = json, .len = len };

	if (journal_append(d->journal, &u, 1, time(NULL)) == -1)
		return -1;
	tgd_enqueue(d, id, 1);
	return 0;
}

/* --- the poller's side ------------------------------------------------------ */

static size_t
tgd_room(void *arg)
{
	struct tgd *d = arg;
	size_t jobs = router_jobs(d->router);

	if (tgd_api_congested(d))
		return 0;
	return jobs >= (size_t)d->conf.max_pending ? 0 :
	    (size_t)d->conf.max_pending - jobs;
}

/*
 * Mode always promises that a done update's record (with its calls) is
 * synced before the next getUpdates: the end of the loop pass may come
 * after the request has left.
 */
static void
tgd_before_poll(void *arg)
{
	struct tgd *d = arg;

	durable_flush_now(d->durable);
}

/* Was the dead letter of oversized update id written already? */
static int
tgd_oversize_seen(struct tgd *d, int64_t id)
{
	size_t i;

	for (i = 0; i < TGD_OVERSIZE_RING; i++)
		if (d->oversize[i] == id && id != 0)
			return 1;
	return 0;
}

/*
 * Take the updates the journal cannot hold out of u[0..*n): each is
 * dead-lettered now, and confirmed with the batch.  -1 if a dead letter
 * could not be written: then nothing of the batch may be confirmed, and
 * Telegram sends it all again.
 */
static int
tgd_oversize(struct tgd *d, struct jupdate *u, size_t *n)
{
	struct rcstr *text;
	size_t i, k = 0;
	char why[128];
	int rc;

	for (i = 0; i < *n; i++) {
		if (u[i].len <= JOURNAL_UPDATE_MAX) {
			u[k++] = u[i];
			continue;
		}
		if (tgd_oversize_seen(d, u[i].id))
			continue;	/* the batch failed after its letter */
		snprintf(why, sizeof(why), "too large for the journal: %zu "
		    "bytes of JSON, a record holds at most %u", u[i].len,
		    JOURNAL_UPDATE_MAX);
		text = rcstr_new(u[i].json, u[i].len);
		rc = deadletter_write(d->deadletter, u[i].id, 0, why, text);
		rcstr_unref(text);
		if (rc == -1)
			return -1;
		log_errx("update=%lld: giving up: %s; written to %s",
		    (long long)u[i].id, why, DEADLETTER_FILE);
		d->stats.dead++;
		d->oversize[d->noversize++ % TGD_OVERSIZE_RING] = u[i].id;
	}
	*n = k;
	return 0;
}

static int
tgd_batch(void *arg, const int64_t *ids, const char *const *jsons,
    const size_t *lens, size_t n)
{
	struct tgd *d = arg;
	struct jupdate *u;
	size_t i, m = n;
	time_t now = time(NULL);
	int rc = 0;

	u = xcalloc(n, sizeof(*u));
	for (i = 0; i < n; i++) {
		u[i].id = ids[i];
		u[i].json = jsons[i];
		u[i].len = lens[i];
	}
	journal_filter(d->journal, u, &m, now);
	if (tgd_oversize(d, u, &m) == -1) {
		free(u);
		return -1;
	}
	if (m < n) {
		d->stats.duplicates += n - m;
		log_info("dropped %zu update(s) already journaled", n - m);
	}
	/*
	 * Durable before the next getUpdates confirms them; handed out
	 * already while fdatasync runs: the file survives a killed daemon,
	 * and after a machine crash Telegram, never told, sends them again.
	 */
	if (m > 0 && (rc = journal_append_async(d->journal, u, m, now)) == -1) {
		free(u);
		return -1;
	}
	for (i = 0; i < m; i++)
		tgd_enqueue(d, u[i].id, 1);
	d->stats.fetched += m;
	free(u);
	tgd_dispatch(d);
	return rc;
}

/* The fetched updates are on disk: the poller may confirm them. */
static void
tgd_durable(void *arg)
{
	struct tgd *d = arg;

	poller_durable(d->poller);
}

/* The done marks are written: the calls they owe may go out now. */
static void
tgd_flushed(void *arg)
{
	struct tgd *d = arg;

	outbox_flushed(d->outbox);
}

static void
tgd_ready(void *arg, json_t *bot)
{
	struct tgd *d = arg;
	json_t *name = json_object_get(bot, "username");

	json_decref(d->bot);
	d->bot = json_incref(bot);
	if (d->state == TGD_STARTING)
		d->state = TGD_RUNNING;
	/* the token works: the calls owed go first, before any worker's */
	if (!d->outbox_replayed) {
		d->outbox_replayed = 1;
		outbox_replay(d->outbox);
	}
	pool_start(d->pool, bot);
	log_notice("ready bot=@%s workers=%lld session_key=%s backlog=%zu",
	    json_is_string(name) ? json_string_value(name) : "?",
	    (long long)d->conf.workers, d->conf.session_key_n > 0 ?
	    keys_kind_name(d->conf.session_key[0]) : "none",
	    router_jobs(d->router));
	sd_notify(0, "READY=1\nSTATUS=polling");
}

static void
tgd_fatal(void *arg, int status, const char *why)
{
	struct tgd *d = arg;

	log_errx("%s", why);
	d->exit_status = status;
	tgd_stop(d, "fatal error");
}

static const struct poller_ops tgd_poller_ops = {
	.room = tgd_room,
	.before_poll = tgd_before_poll,
	.batch = tgd_batch,
	.ready = tgd_ready,
	.fatal = tgd_fatal,
};

/* --- lifecycle ---------------------------------------------------------------- */

/*
 * shutdown_timeout: workers go, no call starts any more (the owed ones
 * stay in the journal), and the calls in flight get kill_grace to answer:
 * one cut off may be sent again by the next start.
 */
static void
tgd_shutdown_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct tgd *d = arg;
	struct timeval tv = tv_ms(d->conf.kill_grace);

	if (d->deadline_passed) {
		log_warnx("%zu call(s) still in flight %lld ms after "
		    "shutdown_timeout: exiting; the next start sends them "
		    "again", api_inflight(d->api), (long long)d->conf.kill_grace);
		d->force_exit = 1;
		tgd_maybe_exit(d);
		return;
	}
	log_warnx("shutdown_timeout passed with %zu update(s) in progress and "
	    "%zu call(s) queued; killing workers and starting no more calls "
	    "(the journal keeps their updates and the calls owed)",
	    pool_running(d->pool), api_queued(d->api));
	d->deadline_passed = 1;
	api_stop(d->api);
	pool_kill(d->pool);
	evtimer_add(d->ev_shutdown, &tv);
	tgd_maybe_exit(d);
}

static void
tgd_stop(struct tgd *d, const char *why)
{
	struct timeval tv;

	if (d->state == TGD_STOPPING) {
		log_warnx("%s again: killing workers now", why);
		pool_kill(d->pool);
		tgd_maybe_exit(d);
		return;
	}
	log_notice("stopping (%s): %zu update(s) in progress, %zu queued stay "
	    "in the journal", why, pool_running(d->pool),
	    router_jobs(d->router) - pool_running(d->pool));
	sd_notify(0, "STOPPING=1");
	d->state = TGD_STOPPING;
	poller_pause(d->poller);
	pool_shutdown(d->pool, wall_ms() + d->conf.shutdown_timeout);
	tv = tv_ms(d->conf.shutdown_timeout);
	evtimer_add(d->ev_shutdown, &tv);
	tgd_maybe_exit(d);
}

/* What the file said that is no error but deserves a word (conf.h). */
static void
tgd_conf_warnings(const struct conf *c)
{
	const char *s = c->warnings;
	size_t n;

	while (s != NULL && *s != '\0') {
		n = strcspn(s, "\n");
		log_warnx("%.*s", (int)n, s);
		s += n + (s[n] == '\n');
	}
}

/* "a,b,c" (conf_reload's lists) as a JSON array of names. */
static json_t *
tgd_names(const char *list)
{
	json_t *a = json_array();
	size_t n;

	while (*list != '\0') {
		n = strcspn(list, ",");
		json_array_append_new(a, json_stringn(list, n));
		list += n + (list[n] == ',');
	}
	return a;
}

/*
 * Re-read the configuration (SIGHUP, `tgrunnerctl reload`): the options
 * the table marks reloadable take effect now; the others are named and
 * wait for a restart.  A bad file changes nothing.  The outcome, for the
 * control socket: {"ok":false, "error":"FILE:LINE: ...", "file", "line"},
 * or {"ok":true, "changed":[...], "restart_needed":[...],
 * "replacing_workers":bool}.  A new reference.
 */
json_t *
tgd_reload(struct tgd *d)
{
	char applied[1024], restart[1024], where[512];
	struct conf_error err;
	struct conf nc;
	int replace;

	sd_notify(0, "RELOADING=1");
	if (conf_load(d->conf.path, &nc, &err) == -1) {
		if (err.line > 0)
			snprintf(where, sizeof(where), "%s:%d", err.file,
			    err.line);
		else
			snprintf(where, sizeof(where), "%s", err.file);
		log_errx("reload: %s: %s; keeping the running configuration",
		    where, err.msg);
		sd_notify(0, "READY=1");
		return json_pack("{s:b, s:s+++, s:s, s:i}", "ok", 0, "error",
		    where, ": ", err.msg, "; the running configuration is kept",
		    "file", err.file, "line", err.line);
	}
	tgd_conf_warnings(&nc);
	replace = strcmp(nc.worker_command ? nc.worker_command : "",
	    d->conf.worker_command ? d->conf.worker_command : "") != 0;
	conf_reload(&d->conf, &nc, applied, sizeof(applied), restart,
	    sizeof(restart));
	conf_clear(&nc);
	log_set_level(d->conf.log_level);
	if (restart[0] != '\0')
		log_warnx("reload: %s changed but take%s effect only at the "
		    "next start", restart, strchr(restart, ',') ? "" : "s");
	pool_reconfigure(d->pool, &d->conf, replace);
	api_reconfigure(d->api);
	if (d->workerapi != NULL)
		workerapi_reconfigure(d->workerapi);
	log_notice("reloaded %s: changed=%s workers=%lld%s", d->conf.path,
	    applied[0] != '\0' ? applied : "none", (long long)d->conf.workers,
	    replace ? " (replacing workers)" : "");
	poller_kick(d->poller);
	tgd_dispatch(d);
	sd_notify(0, "READY=1");
	return json_pack("{s:b, s:o, s:o, s:b}", "ok", 1, "changed",
	    tgd_names(applied), "restart_needed", tgd_names(restart),
	    "replacing_workers", replace);
}

/*
 * SIGUSR2, `tgrunnerctl restart-workers`: replace the workers one at a
 * time (pool_restart).  Only while the pool runs: before the first
 * welcome there is nothing to replace, and a stopping daemon starts no
 * worker.
 */
json_t *
tgd_restart_workers(struct tgd *d, const char *source)
{
	int n;

	if (d->state != TGD_RUNNING && d->state != TGD_DRAINING) {
		log_warnx("restart-workers (%s): not possible while %s", source,
		    tgd_state_str(d->state));
		return json_pack("{s:b, s:s, s:s}", "ok", 0, "error",
		    "not possible in this state", "state",
		    tgd_state_str(d->state));
	}
	log_notice("restart-workers (%s)", source);
	n = pool_restart(d->pool);
	return json_pack("{s:b, s:i, s:o}", "ok", 1, "replacing", n,
	    "restart", pool_restart_status(d->pool));
}

static void
tgd_signal(evutil_socket_t sig, short ev, void *arg)
{
	struct tgd *d = arg;

	switch (sig) {
	case SIGTERM:
	case SIGINT:
		tgd_stop(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
		break;
	case SIGHUP:
		if (d->state != TGD_STOPPING)
			json_decref(tgd_reload(d));
		break;
	case SIGUSR2:
		json_decref(tgd_restart_workers(d, "SIGUSR2"));
		break;
	case SIGCHLD:
		pool_reap(d->pool);
		tgd_maybe_exit(d);
		break;
	case SIGUSR1:
		/* stderr belongs to the journal: nothing to reopen */
		break;
	}
}

static void
tgd_status(evutil_socket_t fd, short ev, void *arg)
{
	struct tgd *d = arg;
	const char *problem = pool_problem(d->pool);

	tgd_maybe_exit(d);	/* waiting for the last replies to go out */
	/* sent from the loop: a stuck loop stops the watchdog pings */
	sd_notifyf(0, "WATCHDOG=1\nSTATUS=%s: backlog=%zu running=%zu "
	    "done=%llu dead=%llu poll=%s%s%s", tgd_state_str(d->state),
	    router_jobs(d->router), pool_running(d->pool),
	    (unsigned long long)d->stats.done,
	    (unsigned long long)d->stats.dead,
	    poller_state_str(poller_state(d->poller)),
	    problem ? "; " : "", problem ? problem : "");
}

static void
tgd_events(struct tgd *d)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1,
	    SIGUSR2 };
	struct timeval tv = { STATUS_EVERY_MS / 1000, 0 };
	uint64_t wd_usec;
	size_t i;

	signal(SIGPIPE, SIG_IGN);
	/* past RLIMIT_FSIZE a journal write fails with EFBIG, like a full disk */
	signal(SIGXFSZ, SIG_IGN);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		d->ev_sig[i] = evsignal_new(d->base, sigs[i], tgd_signal, d);
		evsignal_add(d->ev_sig[i], NULL);
	}
	d->ev_shutdown = evtimer_new(d->base, tgd_shutdown_timeout, d);
	/* ping at least twice per WatchdogSec */
	if (sd_watchdog_enabled(0, &wd_usec) > 0 &&
	    wd_usec / 2 < (uint64_t)STATUS_EVERY_MS * 1000) {
		tv = tv_ms((int64_t)(wd_usec / 2 / 1000));
	}
	d->ev_status = event_new(d->base, -1, EV_PERSIST, tgd_status, d);
	event_add(d->ev_status, &tv);
}

static void
tgd_open(struct tgd *d)
{
	char err[512];

	/* libnats's threads wake the loop: its base needs locking */
	if (d->conf.nats_url != NULL)
		natsbus_init();
	if ((d->base = event_base_new()) == NULL)
		fatalx(EXIT_NOMEM, "cannot create the event loop");
	tgd_events(d);
	if (d->conf.journal_fsync == FSYNC_OFF)
		log_warnx("journal_fsync = off: updates and the replies they "
		    "owe are kept in memory only; a crash or kill loses every "
		    "update not yet done and every reply not yet sent");
	if ((d->journal = journal_open(d->conf.state_dir, d->conf.journal_fsync,
	    err, sizeof(err))) == NULL)
		fatalx(EXIT_STATE, "journal: %s", err);
	d->durable = durable_new(d->base, d->journal, tgd_durable, tgd_flushed,
	    d);
	d->deadletter = deadletter_new(d->base, d->conf.state_dir,
	    tgd_dead_written, d);
	d->policy = policy_new(&d->conf);
	if ((d->router = router_new()) == NULL ||
	    (d->http = http_new(d->base, 16)) == NULL ||
	    (d->api = api_new(d->base, d->http, &d->conf, d->token)) == NULL ||
	    (d->pool = pool_new(d->base, &d->conf, &tgd_pool_ops, d)) == NULL ||
	    (d->poller = poller_new(d->base, d->http, &d->conf, d->token,
	    &tgd_poller_ops, d)) == NULL)
		fatalx(EXIT_NOMEM, "out of memory at start");
	d->calls.api = d->api;
	d->calls.pool = d->pool;
	d->calls.conf = &d->conf;
	d->calls.token = d->token;
	d->calls.policy = d->policy;
	if (d->conf.worker_api_listen != NULL) {
		d->workerapi = workerapi_new(d->base, d->api, d->http, &d->conf,
		    d->token, &tgd_workerapi_ops, d);
		if (workerapi_listen(d->workerapi, d->conf.worker_api_listen) ==
		    -1)
			fatalx(strncmp(d->conf.worker_api_listen, "unix:", 5) ==
			    0 ? EXIT_STATE : EXIT_CONFIG, "cannot serve the Bot "
			    "API to workers on %s", d->conf.worker_api_listen);
	}
	if (d->conf.control_socket != NULL && (d->control = control_new(d->base,
	    d->conf.control_socket, 0600, tgd_commands, tgd_control_state, d)) ==
	    NULL) {
		/* the default's directory exists under the unit only */
		if (strcmp(d->conf.control_socket, CONF_CONTROL_SOCKET) != 0)
			fatalx(EXIT_STATE, "cannot open control_socket %s",
			    d->conf.control_socket);
		log_warnx("no control socket: tgrunnerctl cannot reach this "
		    "daemon (set control_socket to a usable path, or empty)");
	}
	d->outbox = outbox_new(d->api, d->journal, d->durable);
	api_on_release(d->api, tgd_api_released, d);
	api_on_bound(d->api, tgd_bound, d);
	if (d->conf.listen != NULL &&
	    (d->listener = listener_new(d->pool, d->conf.listen)) == NULL)
		fatalx(EXIT_STATE, "cannot listen for workers on %s",
		    d->conf.listen);
	if (d->conf.nats_url != NULL &&
	    (d->remote = remote_new(d->base, d->pool, &d->conf)) == NULL)
		fatalx(EXIT_CONFIG, "cannot use NATS at %s", d->conf.nats_url);
	if (d->conf.metrics_listen != NULL && (d->metrics = metrics_new(d->base,
	    d->conf.metrics_listen, tgd_metrics, d)) == NULL)
		fatalx(EXIT_CONFIG, "cannot serve metrics on %s",
		    d->conf.metrics_listen);
	journal_replay(d->journal, tgd_replay_one, d);
	if (d->stats.replayed > 0)
		log_notice("replaying %llu unfinished update(s) from the journal",
		    (unsigned long long)d->stats.replayed);
}

static void
tgd_close(struct tgd *d)
{
	struct tgd_held *h, *th;
	size_t i;

	/* their jobs are the router's, freed with it */
	HASH_ITER(hh, d->held, h, th) {
		HASH_DEL(d->held, h);
		free(h->key);
		free(h);
	}
	control_free(d->control);
	listener_free(d->listener);
	remote_free(d->remote);
	metrics_free(d->metrics);
	poller_free(d->poller);
	pool_free(d->pool);		/* revokes its workers' credentials */
	workerapi_free(d->workerapi);	/* before the api its calls are in */
	api_free(d->api);
	outbox_free(d->outbox);		/* after the api: no callback comes */
	http_free(d->http);
	router_free(d->router);
	policy_free(d->policy);
	durable_free(d->durable);
	journal_close(d->journal);
	for (i = 0; i < sizeof(d->ev_sig) / sizeof(d->ev_sig[0]); i++)
		if (d->ev_sig[i] != NULL)
			event_free(d->ev_sig[i]);
	event_free(d->ev_shutdown);
	event_free(d->ev_status);
	deadletter_free(d->deadletter);
	event_base_free(d->base);
	json_decref(d->bot);
	token_free(d->token);
	conf_clear(&d->conf);
	log_clear_secrets();
}

/*
 * Every worker, connection and journal file is a descriptor: take all the
 * hard limit allows (systemd's default soft limit is 1024), so that a
 * bound of ours bites before the kernel's.
 */
static void
tgd_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		log_warn("getrlimit RLIMIT_NOFILE");
		return;
	}
	if (rl.rlim_cur == rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
		log_warn("setrlimit RLIMIT_NOFILE to %llu",
		    (unsigned long long)rl.rlim_max);
}

static void
load_conf_or_exit(const char *path, struct conf *c)
{
	struct conf_error err;

	if (conf_load(path, c, &err) == -1) {
		if (err.line > 0)
			fprintf(stderr, "%s:%d: %s\n", err.file, err.line,
			    err.msg);
		else
			fprintf(stderr, "%s: %s\n", err.file, err.msg);
		exit(EXIT_CONFIG);
	}
}

int
main(int argc, char *argv[])
{
	static struct tgd d;
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
	char unused[512];
	int ch, check = 0, debug = 0, verbose = 0;

	while ((ch = getopt_long(argc, argv, "c:dhnvV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 'd': debug = 1; break;
		case 'h': fputs(usage_text, stdout); return 0;
		case 'n': check = 1; break;
		case 'v': verbose = 1; break;
		case 'V': printf("tgrunnerd %s\n", PACKAGE_VERSION); return 0;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	load_conf_or_exit(path, &d.conf);
	if (check) {
		if (d.conf.warnings != NULL)
			fputs(d.conf.warnings, stderr);
		if (conf_unused(&d.conf, CONF_DAEMON, unused, sizeof(unused)))
			fprintf(stderr, "%s: warning: set but read by "
			    "tgrunner-relay only: %s\n", path, unused);
		if (verbose)
			conf_print(&d.conf, stdout);
		printf("%s: configuration OK\n", path);
		return 0;
	}
	log_init("tgrunnerd", debug ? LOG_LVL_DEBUG : d.conf.log_level);
	tgd_conf_warnings(&d.conf);
	if (conf_unused(&d.conf, CONF_DAEMON, unused, sizeof(unused)))
		log_warnx("%s: set but read by tgrunner-relay only: %s", path,
		    unused);
	d.token = token_load(&d.conf);
	/*
	 * From here the memory holds the token: no core dump, and /proc/<pid>/
	 * (environ, mem, cmdline...) becomes root's and out of ptrace's reach
	 * for processes of our uid, workers included.
	 */
	if (prctl(PR_SET_DUMPABLE, 0) == -1)
		log_warn("prctl PR_SET_DUMPABLE");
	d.started = time(NULL);
	srandom((unsigned)(getpid() ^ time(NULL)));
	tgd_raise_nofile();
	tgd_open(&d);
	poller_start(d.poller, journal_next_offset(d.journal));
	event_base_dispatch(d.base);
	log_notice("stopped: done=%llu dead=%llu, %zu update(s) left in the "
	    "journal; %zu replies owed, kept in the journal",
	    (unsigned long long)d.stats.done, (unsigned long long)d.stats.dead,
	    router_jobs(d.router), outbox_owed(d.outbox));
	tgd_close(&d);
	return d.exit_status;
}

/*
 * What tgrunnerd reports: the commands of its control socket (a table for
 * control.c, as tgrunnerctl(1) documents them) and its /metrics page.
 * Each module renders its own numbers (pool_status, api_metrics, ...);
 * this file assembles them with the daemon's own counters.
 */
#include "config.h"

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "api.h"
#include "control.h"
#include "deadletter.h"
#include "journal.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "poller.h"
#include "pool.h"
#include "router.h"
#include "tgrunnerd.h"
#include "workerapi.h"

static json_t *
tgd_backlog(const struct tgd *d)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I}",
	    "queued", (json_int_t)router_jobs(d->router),
	    "ready", (json_int_t)router_ready(d->router),
	    "running", (json_int_t)router_running(d->router),
	    "keys_busy", (json_int_t)router_keys(d->router),
	    "max_pending", (json_int_t)d->conf.max_pending);
}

static json_t *
tgd_updates(const struct tgd *d)
{
	const struct tgd_stats *st = &d->stats;

	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
	    "fetched", (json_int_t)st->fetched,
	    "dispatched", (json_int_t)st->dispatched,
	    "done", (json_int_t)st->done, "failed", (json_int_t)st->failed,
	    "retried", (json_int_t)st->retried, "dead", (json_int_t)st->dead,
	    "duplicates", (json_int_t)st->duplicates,
	    "replayed", (json_int_t)st->replayed);
}

static json_t *
tgd_cmd_status(void *arg, const char *args)
{
	struct tgd *d = arg;
	json_t *st;

	st = json_pack("{s:b, s:s, s:s, s:s?, s:I, s:s, s:s, s:I, s:I, "
	    "s:o, s:o, s:o, s:o, s:o, s:o, s:s?}",
	    "ok", 1, "version", PACKAGE_VERSION,
	    "state", tgd_state_str(d->state),
	    "bot", json_string_value(json_object_get(d->bot, "username")),
	    "uptime", (json_int_t)(time(NULL) - d->started),
	    "session_key", d->conf.session_key_n > 0 ?
	    keys_kind_name(d->conf.session_key[0]) : "none",
	    "poll_state", poller_state_str(poller_state(d->poller)),
	    "last_poll_ok", (json_int_t)poller_last_ok(d->poller),
	    "offset", (json_int_t)poller_offset(d->poller),
	    "backlog", tgd_backlog(d), "journal", journal_status(d->journal),
	    "updates", tgd_updates(d), "pool", pool_status(d->pool),
	    "api", api_status(d->api), "workers", pool_describe(d->pool),
	    "problem", pool_problem(d->pool));
	if (st != NULL && d->workerapi != NULL)
		json_object_set_new(st, "worker_api",
		    workerapi_status(d->workerapi));
	return st;
}

static json_t *
tgd_cmd_workers(void *arg, const char *args)
{
	struct tgd *d = arg;

	return json_pack("{s:b, s:o}", "ok", 1, "workers",
	    pool_describe(d->pool));
}

/* drain and resume: stop or start fetching; the workers run on. */
static json_t *
tgd_fetching(struct tgd *d, int on)
{
	log_notice("control: %s", on ? "resume: fetching updates again" :
	    "drain: no more updates are fetched");
	d->state = on ? TGD_RUNNING : TGD_DRAINING;
	if (on)
		poller_resume(d->poller);
	else
		poller_pause(d->poller);
	return json_pack("{s:b, s:s}", "ok", 1, "state",
	    tgd_state_str(d->state));
}

static json_t *
tgd_cmd_drain(void *arg, const char *args)
{
	return tgd_fetching(arg, 0);
}

static json_t *
tgd_cmd_resume(void *arg, const char *args)
{
	return tgd_fetching(arg, 1);
}

/* The reload runs from the loop, like `systemctl reload` (SIGHUP). */
static json_t *
tgd_cmd_reload(void *arg, const char *args)
{
	raise(SIGHUP);
	return json_pack("{s:b}", "ok", 1);
}

static json_t *
tgd_cmd_dead_letters(void *arg, const char *args)
{
	struct tgd *d = arg;
	json_t *r;

	if (strncmp(args, "retry", 5) != 0)
		return deadletter_list(d->deadletter);
	args += 5;
	args += strspn(args, " \t");
	if (*args == '\0')
		return json_pack("{s:b, s:s}", "ok", 0, "error",
		    "dead-letters retry: give an update_id or 'all'");
	r = deadletter_retry(d->deadletter, args, tgd_requeue, d);
	tgd_dispatch(d);
	return r;
}

/* tgrunnerctl(1) documents these names and answers: never rename one. */
const struct control_cmd tgd_commands[] = {
	{ "status",		tgd_cmd_status,		CONTROL_ANY },
	{ "workers",		tgd_cmd_workers,	CONTROL_ANY },
	{ "drain",		tgd_cmd_drain,	CONTROL_STATE(TGD_RUNNING) },
	{ "resume",		tgd_cmd_resume,	CONTROL_STATE(TGD_DRAINING) },
	{ "reload",		tgd_cmd_reload,		CONTROL_ANY },
	{ "dead-letters",	tgd_cmd_dead_letters,	CONTROL_ANY },
	{ NULL,			NULL,			0 }
};

int
tgd_control_state(void *arg, const char **name)
{
	struct tgd *d = arg;

	*name = tgd_state_str(d->state);
	return (int)d->state;
}

void
tgd_metrics(void *arg, struct evbuffer *out)
{
	struct tgd *d = arg;
	const struct tgd_stats *st = &d->stats;

	metrics_counter(out, "tgrunner_updates_fetched_total",
	    "Updates fetched and journaled.", st->fetched);
	metrics_counter(out, "tgrunner_updates_done_total",
	    "Updates finished by a worker.", st->done);
	metrics_counter(out, "tgrunner_updates_failed_total",
	    "Update attempts that failed.", st->failed);
	metrics_counter(out, "tgrunner_updates_retried_total",
	    "Update attempts retried.", st->retried);
	metrics_counter(out, "tgrunner_updates_dead_total",
	    "Updates given up on (dead letters).", st->dead);
	metrics_counter(out, "tgrunner_updates_duplicate_total",
	    "Re-sent updates dropped as already journaled.", st->duplicates);
	metrics_counter(out, "tgrunner_updates_replayed_total",
	    "Unfinished updates replayed from the journal at start.",
	    st->replayed);
	metrics_gauge(out, "tgrunner_dead_letters_unwritten", "Dead letters "
	    "waiting for the disk (their updates stay in the journal).",
	    deadletter_pending(d->deadletter));
	metrics_gauge(out, "tgrunner_backlog",
	    "Updates queued, ready or running.", router_jobs(d->router));
	metrics_gauge(out, "tgrunner_keys_busy",
	    "Session keys with unfinished updates.", router_keys(d->router));
	pool_metrics(d->pool, out);
	poller_metrics(d->poller, out);
	journal_metrics(d->journal, out);
	api_metrics(d->api, out);
	if (d->workerapi != NULL)
		workerapi_metrics(d->workerapi, out);
	hist_write(&d->h_dispatch, out, "tgrunner_dispatch_latency_seconds",
	    "Time from fetch to dispatch of first attempts.");
	hist_write(&d->h_handler, out, "tgrunner_handler_duration_seconds",
	    "Time from dispatch to done.");
}

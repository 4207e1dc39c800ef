/* SPDX-License-Identifier: ISC */
/*
 * What tgrunnerd reports: the commands of its control socket (a table for
 * control.c, as tgrunnerctl(1) documents them) and its /metrics page.
 * Each module renders its own numbers (pool_status, api_metrics, ...);
 * this file assembles them with the daemon's own counters.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
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
#include "outbox.h"
#include "policy.h"
#include "poller.h"
#include "pool.h"
#include "remote.h"
#include "router.h"
#include "tgrunnerd.h"
#include "workerapi.h"

static json_t *
tgd_backlog(const struct tgd *d)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
	    "queued", (json_int_t)router_jobs(d->router),
	    "ready", (json_int_t)router_ready(d->router),
	    "running", (json_int_t)(router_running(d->router) - d->nheld),
	    "held", (json_int_t)d->nheld,
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
	/*
	 * Each module's part by name: a table, not a run of "s:o" specs to
	 * count by hand (a part missing its spec made status NULL).
	 */
	const struct {
		const char	*name;
		json_t		*part;
	} parts[] = {
		{ "backlog",	tgd_backlog(d) },
		{ "journal",	journal_status(d->journal) },
		{ "updates",	tgd_updates(d) },
		{ "pool",	pool_status(d->pool) },
		{ "api",	api_status(d->api) },
		{ "outbox",	outbox_status(d->outbox) },
		{ "workers",	pool_describe(d->pool) },
		{ "nats",	remote_status(d->remote) },
		{ "restart",	pool_restart_status(d->pool) },
		{ "worker_api",	d->workerapi != NULL ?
		    workerapi_status(d->workerapi) : NULL },
	};
	json_t *st;
	size_t i;

	st = json_pack("{s:b, s:s, s:s, s:s?, s:I, s:s, s:s, s:I, s:I, s:s?}",
	    "ok", 1, "version", PACKAGE_VERSION,
	    "state", tgd_state_str(d->state),
	    "bot", json_string_value(json_object_get(d->bot, "username")),
	    "uptime", (json_int_t)(time(NULL) - d->started),
	    "session_key", d->conf.session_key_n > 0 ?
	    keys_kind_name(d->conf.session_key[0]) : "none",
	    "poll_state", poller_state_str(poller_state(d->poller)),
	    "last_poll_ok", (json_int_t)poller_last_ok(d->poller),
	    "offset", (json_int_t)poller_offset(d->poller),
	    "problem", pool_problem(d->pool));
	/* json_object_set_new() frees the part when st is NULL */
	for (i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		if (parts[i].part != NULL &&
		    json_object_set_new(st, parts[i].name, parts[i].part) == -1) {
			json_decref(st);
			st = NULL;
		}
	return st;
}

static json_t *
tgd_cmd_workers(void *arg, const char *args)
{
	struct tgd *d = arg;

	return json_pack("{s:b, s:o}", "ok", 1, "workers",
	    pool_describe(d->pool));
}

/*
 * drain and resume: stop or start fetching; the workers run on.  Asking
 * for the state the daemon is in already is no error: it is where it was
 * asked to be ("already":true).
 */
static json_t *
tgd_fetching(struct tgd *d, int on)
{
	enum tgd_state want = on ? TGD_RUNNING : TGD_DRAINING;

	if (d->state == want)
		return json_pack("{s:b, s:s, s:b}", "ok", 1, "state",
		    tgd_state_str(d->state), "already", 1);
	log_notice("control: %s", on ? "resume: fetching updates again" :
	    "drain: no more updates are fetched");
	d->state = want;
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

/* Done before the answer, which says how it went: the error, file:line. */
static json_t *
tgd_cmd_reload(void *arg, const char *args)
{
	return tgd_reload(arg);
}

static json_t *
tgd_cmd_restart_workers(void *arg, const char *args)
{
	return tgd_restart_workers(arg, "control");
}

/* An update_id as the control socket takes it: digits, no sign, in range. */
static int
tgd_parse_id(const char *s, int64_t *id)
{
	size_t n = strspn(s, "0123456789");

	if (n == 0 || s[n] != '\0' || n > 18)
		return -1;
	*id = (int64_t)strtoll(s, NULL, 10);
	return 0;
}

static json_t *
tgd_cmd_dead_letters(void *arg, const char *args)
{
	struct tgd *d = arg;
	int64_t id;
	json_t *r;

	if (*args == '\0')
		return deadletter_list(d->deadletter);
	if (strncmp(args, "retry", 5) != 0 ||
	    (args[5] != '\0' && args[5] != ' ' && args[5] != '\t'))
		return json_pack("{s:b, s:s}", "ok", 0, "error",
		    "dead-letters: the only argument is retry");
	args += 5;
	args += strspn(args, " \t");
	if (*args == '\0')
		return json_pack("{s:b, s:s}", "ok", 0, "error",
		    "dead-letters retry: give an update_id or 'all'");
	if (strcmp(args, "all") == 0)
		r = deadletter_retry(d->deadletter, NULL, tgd_requeue, d);
	else if (tgd_parse_id(args, &id) == 0)
		r = deadletter_retry(d->deadletter, &id, tgd_requeue, d);
	else
		return json_pack("{s:b, s:s+++}", "ok", 0, "error",
		    "dead-letters retry: '", args, "' is not an update_id ",
		    "or 'all'");
	tgd_dispatch(d);
	return r;
}

#define TGD_FETCHING	(CONTROL_STATE(TGD_RUNNING) | CONTROL_STATE(TGD_DRAINING))
#define TGD_NOT_STOPPING (TGD_FETCHING | CONTROL_STATE(TGD_STARTING))

/* tgrunnerctl(1) documents these names and answers: never rename one. */
const struct control_cmd tgd_commands[] = {
	{ "status",		tgd_cmd_status,		CONTROL_ANY },
	{ "workers",		tgd_cmd_workers,	CONTROL_ANY },
	{ "drain",		tgd_cmd_drain,		TGD_FETCHING },
	{ "resume",		tgd_cmd_resume,		TGD_FETCHING },
	{ "reload",		tgd_cmd_reload,		TGD_NOT_STOPPING },
	{ "restart-workers",	tgd_cmd_restart_workers, TGD_FETCHING },
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
	metrics_gauge(out, "tgrunner_updates_held", "Updates waiting for their "
	    "key's calls (max_calls_per_key).", d->nheld);
	policy_metrics(d->policy, out);
	pool_metrics(d->pool, out);
	remote_metrics(d->remote, out);
	poller_metrics(d->poller, out);
	journal_metrics(d->journal, out);
	api_metrics(d->api, out);
	if (d->workerapi != NULL)
		workerapi_metrics(d->workerapi, out);
	outbox_metrics(d->outbox, out);
	hist_write(&d->h_dispatch, out, "tgrunner_dispatch_latency_seconds",
	    "Time from fetch to dispatch of first attempts.");
	hist_write(&d->h_handler, out, "tgrunner_handler_duration_seconds",
	    "Time from dispatch to done.");
}

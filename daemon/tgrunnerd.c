/*
 * tgrunnerd: long-polls the Telegram Bot API, journals every update before
 * confirming it, and runs updates in supervised worker processes, updates
 * that share a session key one after another.  Runs in the foreground under
 * systemd (Type=notify).  See tgrunnerd(8).
 */
#include "config.h"

#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
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

#include "api.h"
#include "conf.h"
#include "control.h"
#include "http.h"
#include "journal.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "poller.h"
#include "router.h"
#include "tgrunnerd.h"
#include "worker.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONF	SYSCONFDIR "/tgrunner.conf"
#define TOKEN_MAX	256
#define STATUS_EVERY_MS	2000

static void	tgd_dispatch(struct tgd *);
static void	tgd_stop(struct tgd *, const char *why);

static uint64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static const char *
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

/* --- the token: never in argv, never in the log ----------------------------- */

static int
token_valid(const char *t)
{
	const char *p = t;

	if (!isdigit((unsigned char)*p))
		return 0;
	while (isdigit((unsigned char)*p))
		p++;
	if (*p++ != ':' || *p == '\0')
		return 0;
	for (; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
			return 0;
	return 1;
}

/* Read the token file; on error print why (never its content) and exit 78. */
static char *
token_load(const struct conf *c)
{
	char path[4096], buf[TOKEN_MAX + 2];
	const char *creds;
	ssize_t n;
	size_t len;
	int fd;

	if (c->token_file != NULL)
		snprintf(path, sizeof(path), "%s", c->token_file);
	else if ((creds = getenv("CREDENTIALS_DIRECTORY")) != NULL)
		snprintf(path, sizeof(path), "%s/token", creds);
	else
		fatalx(EXIT_CONFIG, "%s: no bot token: set token_file, or run "
		    "under systemd with LoadCredential=token:PATH", c->path);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		fatalx(EXIT_CONFIG, "token file %s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		fatalx(EXIT_CONFIG, "token file %s: %s", path, strerror(errno));
	buf[n] = '\0';
	if (memchr(buf, '\0', (size_t)n) != NULL)
		fatalx(EXIT_CONFIG, "token file %s: does not hold a bot token "
		    "(it contains a NUL byte)", path);
	len = strlen(buf);
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		buf[--len] = '\0';
	if (len == 0 || len > TOKEN_MAX || !token_valid(buf))
		fatalx(EXIT_CONFIG, "token file %s: does not hold a bot token "
		    "(expected digits, ':', then letters, digits, '_' or '-')",
		    path);
	log_add_secret(buf);
	/* the part after ':' is the secret; redact it alone too */
	log_add_secret(strchr(buf, ':') + 1);
	return strdup(buf);
}

/* --- jobs ------------------------------------------------------------------ */

/* Queue the journaled update id; the job shares the journal's JSON. */
static void
tgd_enqueue(struct tgd *d, int64_t id, int attempt)
{
	struct keyset ks = { .n = 0 };
	struct rcstr *text;
	struct job *job;

	if ((text = journal_text(d->journal, id)) == NULL) {
		log_err("%s: update=%lld is not in the journal", __func__,
		    (long long)id);
		return;
	}
	if ((job = job_new_shared(id, text)) == NULL) {
		log_err("%s: out of memory for update=%lld", __func__,
		    (long long)id);
		return;
	}
	job->attempt = attempt;
	job->t_fetched = mono_us();
	keys_derive_text(text->s, text->len, d->conf.session_key,
	    d->conf.session_key_n, &ks);
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
 * Done marks wait in the journal until the end of the event-loop pass:
 * one write() for every done frame read in the pass.  The event is made
 * active, so it runs after the callbacks already due in this pass and
 * before the loop waits again; calls attached to those updates leave on
 * a later pass, after their marks.
 */
static void
tgd_journal_dirty(struct tgd *d)
{
	if (journal_dirty(d->journal) && !event_pending(d->ev_flush,
	    EV_TIMEOUT, NULL))
		event_active(d->ev_flush, EV_TIMEOUT, 0);
}

static void
tgd_flush(evutil_socket_t fd, short what, void *arg)
{
	struct tgd *d = arg;

	(void)fd;
	(void)what;
	journal_flush(d->journal);
}

static void
dead_letter_path(const struct tgd *d, char *buf, size_t len)
{
	snprintf(buf, len, "%s/dead-letters.jsonl", d->conf.state_dir);
}

static void
tgd_dead_letter(struct tgd *d, const struct job *job, const char *why)
{
	char path[4096];
	json_t *o, *u;
	char *line;
	FILE *fp;

	/* with journal_fsync = off nothing else created it */
	mkdir(d->conf.state_dir, 0700);
	d->stats.dead++;
	log_err("update=%lld attempts=%d: giving up: %s; written to "
	    "dead-letters.jsonl", (long long)job->id, job->attempt, why);
	u = json_loadb(job->text->s, job->text->len, 0, NULL);
	o = json_pack("{s:I, s:i, s:s, s:I, s:o*}", "update_id",
	    (json_int_t)job->id, "attempts", job->attempt, "reason", why,
	    "t", (json_int_t)time(NULL), "update", u);
	line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	dead_letter_path(d, path, sizeof(path));
	if (line == NULL || (fp = fopen(path, "ae")) == NULL) {
		log_err("%s: cannot record dead letter for update=%lld in %s: "
		    "%s", __func__, (long long)job->id, path, strerror(errno));
		free(line);
		return;
	}
	fprintf(fp, "%s\n", line);
	if (fflush(fp) != 0 || fsync(fileno(fp)) != 0)
		log_err("%s: %s: %s", __func__, path, strerror(errno));
	fclose(fp);
	free(line);
}

/* Stopped once no worker is alive and the replies they left are sent. */
static void
tgd_maybe_exit(struct tgd *d)
{
	if (d->state == TGD_STOPPING && pool_alive(d->pool) == 0 &&
	    (api_queued(d->api) == 0 || d->deadline_passed))
		event_base_loopexit(d->base, NULL);
}

/*
 * Replies pile up when workers finish faster than the Bot API takes calls:
 * past half the call queue no update starts and polling pauses, until
 * calls drain (tgd_api_released).  The other half stays for `call` frames.
 */
static int
tgd_api_congested(const struct tgd *d)
{
	return api_queued(d->api) >= (size_t)d->conf.api_max_queued / 2;
}

/* Start job in a worker (w preferred): 0, or -1 when no slot is free. */
static int
tgd_start(struct tgd *d, struct job *job, struct worker *w)
{
	uint64_t now = mono_us();

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

/* A call attached to done finished: nobody waits, only errors are worth a line. */
static void
tgd_done_call_result(void *arg, const struct api_result *r)
{
	if (!r->ok)
		log_warn("update=%lld: attached call failed: %d %s",
		    (long long)(intptr_t)arg, r->error_code,
		    r->description ? r->description : "");
}

/*
 * Calls attached to done run after the update, queued behind earlier calls
 * of the same key: the key itself is released at once (the next update of
 * the chat may start), while its replies still go out in order.
 */
static void
tgd_run_done_calls(struct tgd *d, const struct job *job, json_t *calls)
{
	const char *key = job->nkeys > 0 ? job_key(job, 0) : NULL;
	json_t *c;
	size_t i;

	json_array_foreach(calls, i, c) {
		/* owed since the update is done: never refused for room */
		if (api_call(d->api, key, json_string_value(json_object_get(c,
		    "method")), json_object_get(c, "params"), API_NOLIMIT,
		    tgd_done_call_result, (void *)(intptr_t)job->id) == -1)
			log_err("update=%lld: attached call %zu dropped: out "
			    "of memory", (long long)job->id, i);
	}
}

static void
tgd_job_done(void *arg, struct job *job, struct worker *w, json_t *calls)
{
	struct tgd *d = arg;

	d->stats.done++;
	hist_observe(&d->h_handler, (double)(mono_us() - job->t_started) / 1e6);
	journal_done(d->journal, job->id);
	tgd_journal_dirty(d);
	if (calls != NULL)
		tgd_run_done_calls(d, job, calls);
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
		tgd_dispatch(d);
		tgd_maybe_exit(d);
		return;
	}
	tgd_dead_letter(d, job, why);
	journal_done(d->journal, job->id);
	tgd_journal_dirty(d);
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

struct call_ctx {
	struct tgd	*d;
	int		 worker_id;
	json_t		*ref;
};

static void
tgd_call_result(void *arg, const struct api_result *r)
{
	struct call_ctx *cc = arg;

	pool_result(cc->d->pool, cc->worker_id, cc->ref, r->ok, r->result,
	    r->error_code, r->description ? r->description : "(no description)",
	    r->parameters, r->retry_after);
	json_decref(cc->ref);
	free(cc);
}

static void
tgd_call(void *arg, int worker_id, json_t *ref, struct job *job,
    const char *method, json_t *params)
{
	struct tgd *d = arg;
	struct call_ctx *cc;

	if ((cc = calloc(1, sizeof(*cc))) == NULL) {
		pool_result(d->pool, worker_id, ref, 0, NULL, 500,
		    "out of memory", NULL, 0);
		return;
	}
	cc->d = d;
	cc->worker_id = worker_id;
	cc->ref = json_incref(ref);
	if (api_call(d->api, job && job->nkeys > 0 ? job_key(job, 0) : NULL,
	    method, params, 0, tgd_call_result, cc) == -1) {
		pool_result(d->pool, worker_id, ref, 0, NULL, 503,
		    "call queue full", NULL, 0);
		json_decref(cc->ref);
		free(cc);
	}
}

static const struct pool_ops tgd_pool_ops = {
	.done = tgd_job_done,
	.failed = tgd_job_failed,
	.capacity = tgd_capacity,
	.call = tgd_call,
};

/* Give ready jobs to free slots: O(1) per dispatched job. */
static void
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

static int
tgd_batch(void *arg, const int64_t *ids, const char *const *jsons,
    const size_t *lens, size_t n)
{
	struct tgd *d = arg;
	struct jupdate *u;
	size_t i, m = n;
	time_t now = time(NULL);
	int rc = 0;

	if ((u = calloc(n, sizeof(*u))) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		u[i].id = ids[i];
		u[i].json = jsons[i];
		u[i].len = lens[i];
	}
	journal_filter(d->journal, u, &m, now);
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

/* The fetched updates are durable: the poller may confirm them. */
static void
tgd_durable(struct tgd *d)
{
	if (d->resync_fails > 0)
		log_notice("journal: durable again after %d failed attempt(s)",
		    d->resync_fails);
	d->resync_fails = 0;
	poller_durable(d->poller);
}

/* Nothing new is fetched until the fetched updates are safe: retry. */
static void
tgd_not_durable(struct tgd *d)
{
	struct timeval tv;
	int64_t ms;

	d->resync_fails++;
	ms = poller_backoff_ms(d->resync_fails, 100, 30000,
	    (double)random() / ((double)RAND_MAX + 1.0));
	log_err("journal: the last batch is not durable; not fetching, "
	    "retrying in %lld ms", (long long)ms);
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000 * 1000);
	evtimer_add(d->ev_resync, &tv);
}

/* The sync thread finished the batch's fdatasync. */
static void
tgd_synced(evutil_socket_t fd, short what, void *arg)
{
	struct tgd *d = arg;

	(void)fd;
	(void)what;
	if (journal_sync_finish(d->journal) == 0)
		tgd_durable(d);
	else
		tgd_not_durable(d);
}

static void
tgd_resync(evutil_socket_t fd, short what, void *arg)
{
	struct tgd *d = arg;

	(void)fd;
	(void)what;
	if (journal_make_durable(d->journal) == 0)
		tgd_durable(d);
	else
		tgd_not_durable(d);
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

	log_err("%s", why);
	d->exit_status = status;
	tgd_stop(d, "fatal error");
}

static const struct poller_ops tgd_poller_ops = {
	.room = tgd_room,
	.batch = tgd_batch,
	.ready = tgd_ready,
	.fatal = tgd_fatal,
};

/* --- the control socket ------------------------------------------------------- */

static json_t *
tgd_status_json(struct tgd *d)
{
	const struct pool_stats *ps = pool_stats(d->pool);
	const struct api_stats *as = api_stats(d->api);
	const char *problem = pool_problem(d->pool);
	json_t *bot = json_object_get(d->bot, "username");

	return json_pack("{s:b, s:s, s:s, s:s?, s:I, s:s, s:s, s:I, s:I, "
	    "s:{s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I}, "
	    "s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, "
	    "s:{s:I, s:I, s:I, s:I, s:I, s:I}, "
	    "s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, "
	    "s:o, s:s?}",
	    "ok", 1, "version", PACKAGE_VERSION, "state",
	    tgd_state_str(d->state), "bot", json_string_value(bot),
	    "uptime", (json_int_t)(time(NULL) - d->started),
	    "session_key", d->conf.session_key_n > 0 ?
	    keys_kind_name(d->conf.session_key[0]) : "none",
	    "poll_state", poller_state_str(poller_state(d->poller)),
	    "last_poll_ok", (json_int_t)poller_last_ok(d->poller),
	    "offset", (json_int_t)poller_offset(d->poller),
	    "backlog", "queued", (json_int_t)router_jobs(d->router),
	    "ready", (json_int_t)router_ready(d->router),
	    "running", (json_int_t)router_running(d->router),
	    "keys_busy", (json_int_t)router_keys(d->router),
	    "max_pending", (json_int_t)d->conf.max_pending,
	    "journal", "pending", (json_int_t)journal_pending(d->journal),
	    "bytes", (json_int_t)journal_bytes(d->journal),
	    "compactions", (json_int_t)journal_compactions(d->journal),
	    "fsync", d->conf.journal_fsync == FSYNC_OFF ? 0 : 1,
	    "updates", "fetched", (json_int_t)d->stats.fetched,
	    "dispatched", (json_int_t)d->stats.dispatched,
	    "done", (json_int_t)d->stats.done,
	    "failed", (json_int_t)d->stats.failed,
	    "retried", (json_int_t)d->stats.retried,
	    "dead", (json_int_t)d->stats.dead,
	    "duplicates", (json_int_t)d->stats.duplicates,
	    "replayed", (json_int_t)d->stats.replayed,
	    "pool", "spawned", (json_int_t)ps->spawned,
	    "exited", (json_int_t)ps->exited,
	    "crashed", (json_int_t)ps->crashed,
	    "protocol_errors", (json_int_t)ps->protocol_errors,
	    "timeouts", (json_int_t)ps->timeouts,
	    "recycled", (json_int_t)ps->recycled,
	    "api", "queued", (json_int_t)api_queued(d->api),
	    "inflight", (json_int_t)api_inflight(d->api),
	    "calls", (json_int_t)as->calls, "errors", (json_int_t)as->errors,
	    "retries", (json_int_t)as->retries,
	    "waiting", (json_int_t)api_waiting(d->api),
	    "throttled", (json_int_t)as->throttled,
	    "throttled_ms", (json_int_t)as->throttled_ms,
	    "got_429", (json_int_t)as->got_429,
	    "workers", pool_describe(d->pool), "problem", problem);
}

/* Every dead letter, as the file has them (malformed lines are skipped). */
static json_t *
tgd_dead_letters_read(struct tgd *d)
{
	char path[4096];
	json_t *all = json_array(), *o;
	char *line = NULL;
	size_t cap = 0;
	FILE *fp;

	dead_letter_path(d, path, sizeof(path));
	if ((fp = fopen(path, "re")) == NULL)
		return all;
	while (getline(&line, &cap, fp) != -1)
		if ((o = json_loads(line, 0, NULL)) != NULL &&
		    json_is_integer(json_object_get(o, "update_id")))
			json_array_append_new(all, o);
		else
			json_decref(o);
	free(line);
	fclose(fp);
	return all;
}

/* Rewrite the file with only the entries in keep (temp file + rename). */
static int
tgd_dead_letters_write(struct tgd *d, json_t *keep)
{
	char path[4096], tmp[4200];
	json_t *o;
	size_t i;
	FILE *fp;

	dead_letter_path(d, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fp = fopen(tmp, "we")) == NULL)
		return -1;
	json_array_foreach(keep, i, o) {
		json_dumpf(o, fp, JSON_COMPACT);
		fputc('\n', fp);
	}
	if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
		fclose(fp);
		unlink(tmp);
		return -1;
	}
	fclose(fp);
	return rename(tmp, path);
}

/*
 * Journal the chosen dead letters again and queue them as new first
 * attempts; the rest stay in the file.  "all" or one update_id.
 */
static json_t *
tgd_dead_letters_retry(struct tgd *d, const char *which)
{
	json_t *all = tgd_dead_letters_read(d), *keep = json_array(), *o;
	struct jupdate u;
	char *text;
	size_t i, n = 0;
	int any = strcmp(which, "all") == 0;
	long long want = any ? 0 : strtoll(which, NULL, 10);

	json_array_foreach(all, i, o) {
		u.id = json_integer_value(json_object_get(o, "update_id"));
		text = json_dumps(json_object_get(o, "update"), JSON_COMPACT);
		if ((!any && u.id != want) || text == NULL) {
			json_array_append(keep, o);
			free(text);
			continue;
		}
		u.json = text;
		u.len = strlen(text);
		if (journal_append(d->journal, &u, 1, time(NULL)) == -1) {
			json_array_append(keep, o);
			free(text);
			continue;
		}
		tgd_enqueue(d, u.id, 1);
		log_notice("update=%lld: dead letter queued again",
		    (long long)u.id);
		free(text);
		n++;
	}
	if (n > 0 && tgd_dead_letters_write(d, keep) == -1)
		log_err("dead-letters: cannot rewrite the file: %s",
		    strerror(errno));
	json_decref(all);
	json_decref(keep);
	tgd_dispatch(d);
	return json_pack("{s:b, s:I}", "ok", 1, "requeued", (json_int_t)n);
}

static json_t *
tgd_dead_letters(struct tgd *d, const char *args)
{
	json_t *all, *o;
	size_t i;

	if (strncmp(args, "retry", 5) == 0) {
		args += 5;
		args += strspn(args, " \t");
		if (*args == '\0')
			return json_pack("{s:b, s:s}", "ok", 0, "error",
			    "dead-letters retry: give an update_id or 'all'");
		return tgd_dead_letters_retry(d, args);
	}
	all = tgd_dead_letters_read(d);
	json_array_foreach(all, i, o)
		json_object_del(o, "update");	/* the list stays small */
	return json_pack("{s:b, s:o}", "ok", 1, "dead_letters", all);
}

static json_t *
tgd_control(void *arg, const char *cmd, const char *args)
{
	struct tgd *d = arg;

	if (strcmp(cmd, "status") == 0)
		return tgd_status_json(d);
	if (strcmp(cmd, "workers") == 0)
		return json_pack("{s:b, s:o}", "ok", 1, "workers",
		    pool_describe(d->pool));
	if (strcmp(cmd, "drain") == 0 && d->state == TGD_RUNNING) {
		log_notice("control: drain: no more updates are fetched");
		d->state = TGD_DRAINING;
		poller_pause(d->poller);
		return json_pack("{s:b, s:s}", "ok", 1, "state", "draining");
	}
	if (strcmp(cmd, "resume") == 0 && d->state == TGD_DRAINING) {
		log_notice("control: resume: fetching updates again");
		d->state = TGD_RUNNING;
		poller_resume(d->poller);
		return json_pack("{s:b, s:s}", "ok", 1, "state", "running");
	}
	if (strcmp(cmd, "dead-letters") == 0)
		return tgd_dead_letters(d, args);
	if (strcmp(cmd, "reload") == 0) {
		raise(SIGHUP);
		return json_pack("{s:b}", "ok", 1);
	}
	if (strcmp(cmd, "drain") == 0 || strcmp(cmd, "resume") == 0)
		return json_pack("{s:b, s:s, s:s}", "ok", 0, "error",
		    "not possible in this state", "state",
		    tgd_state_str(d->state));
	return json_pack("{s:b, s:s}", "ok", 0, "error", "unknown command "
	    "(status, workers, drain, resume, reload, dead-letters)");
}

/* --- metrics ---------------------------------------------------------------- */

static void
metric(struct evbuffer *out, const char *name, const char *type,
    const char *help, double v)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n",
	    name, help, name, type, name, v);
}

static void
api_method_metric(void *arg, const struct api_method_stat *m)
{
	struct evbuffer *out = arg;
	int o;

	/* method names are [A-Za-z0-9_] (api.c checks): safe as label values */
	for (o = 0; o < API_OUTCOMES; o++)
		if (m->n[o] > 0)
			evbuffer_add_printf(out, "tgrunner_api_calls_by_method_total"
			    "{method=\"%s\",outcome=\"%s\"} %llu\n", m->method,
			    api_outcome_name((enum api_outcome)o),
			    (unsigned long long)m->n[o]);
}

static void
tgd_metrics(void *arg, struct evbuffer *out)
{
	struct tgd *d = arg;
	const struct poller_stats *pl = poller_stats(d->poller);
	const struct pool_stats *ps = pool_stats(d->pool);
	const struct api_stats *as = api_stats(d->api);
	struct evbuffer *rows;

#define C(n, h, v)	metric(out, "tgrunner_" n, "counter", h, (double)(v))
#define G(n, h, v)	metric(out, "tgrunner_" n, "gauge", h, (double)(v))
	C("updates_fetched_total", "Updates fetched and journaled.", d->stats.fetched);
	C("updates_done_total", "Updates finished by a worker.", d->stats.done);
	C("updates_failed_total", "Update attempts that failed.", d->stats.failed);
	C("updates_retried_total", "Update attempts retried.", d->stats.retried);
	C("updates_dead_total", "Updates given up on (dead letters).", d->stats.dead);
	C("updates_duplicate_total", "Re-sent updates dropped as already journaled.", d->stats.duplicates);
	C("updates_replayed_total", "Unfinished updates replayed from the journal at start.", d->stats.replayed);
	G("backlog", "Updates queued, ready or running.", router_jobs(d->router));
	G("inflight", "Updates running in workers.", pool_running(d->pool));
	G("keys_busy", "Session keys with unfinished updates.", router_keys(d->router));
	G("workers_alive", "Worker processes alive.", pool_alive(d->pool));
	C("worker_spawned_total", "Worker processes started.", ps->spawned);
	C("worker_restarts_total", "Workers that died unexpectedly.", ps->crashed);
	C("worker_protocol_errors_total", "Workers cut off for breaking the protocol.", ps->protocol_errors);
	C("worker_timeouts_total", "Updates that passed update_timeout.", ps->timeouts);
	C("worker_recycled_total", "Workers recycled after max_requests.", ps->recycled);
	C("polls_total", "getUpdates requests.", pl->polls);
	evbuffer_add_printf(out, "# HELP tgrunner_poll_errors_total getUpdates "
	    "failures by class.\n# TYPE tgrunner_poll_errors_total counter\n"
	    "tgrunner_poll_errors_total{class=\"5xx\"} %llu\n"
	    "tgrunner_poll_errors_total{class=\"429\"} %llu\n"
	    "tgrunner_poll_errors_total{class=\"409\"} %llu\n"
	    "tgrunner_poll_errors_total{class=\"transport\"} %llu\n"
	    "tgrunner_poll_errors_total{class=\"malformed\"} %llu\n",
	    (unsigned long long)pl->err_http5xx, (unsigned long long)pl->err_429,
	    (unsigned long long)pl->err_409, (unsigned long long)pl->err_transport,
	    (unsigned long long)pl->err_malformed);
	G("last_poll_success_timestamp_seconds", "Time of the last successful getUpdates.", poller_last_ok(d->poller));
	G("journal_bytes", "Size of the journal file.", journal_bytes(d->journal));
	G("journal_pending", "Unfinished updates in the journal.", journal_pending(d->journal));
	C("api_calls_total", "Bot API calls made for workers.", as->calls);
	C("api_errors_total", "Bot API calls that ended in an error.", as->errors);
	C("api_retries_total", "Bot API call retries (429, transient errors).", as->retries);
	G("api_queued", "Bot API calls queued or in flight.", api_queued(d->api));
	G("api_waiting", "Bot API calls held by flood control (tokens or a 429 pause).", api_waiting(d->api));
	C("api_throttled_total", "Bot API calls that flood control held back.", as->throttled);
	C("api_throttled_seconds_total", "Time calls spent held back by flood control.", (double)as->throttled_ms / 1000.0);
	C("api_429_total", "429 answers to workers' Bot API calls.", as->got_429);
	if ((rows = evbuffer_new()) != NULL) {
		api_foreach_method(d->api, api_method_metric, rows);
		/* a family without samples is not valid exposition */
		if (evbuffer_get_length(rows) > 0)
			evbuffer_add_printf(out, "# HELP tgrunner_api_calls_"
			    "by_method_total Finished Bot API calls by method "
			    "and outcome.\n# TYPE tgrunner_api_calls_by_method_"
			    "total counter\n");
		evbuffer_add_buffer(out, rows);
		evbuffer_free(rows);
	}
	hist_write(&d->h_dispatch, out, "tgrunner_dispatch_latency_seconds",
	    "Time from fetch to dispatch of first attempts.");
	hist_write(&d->h_handler, out, "tgrunner_handler_duration_seconds",
	    "Time from dispatch to done.");
#undef C
#undef G
}

/* --- lifecycle ---------------------------------------------------------------- */

static void
tgd_shutdown_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct tgd *d = arg;

	log_warn("shutdown_timeout passed with %zu update(s) in progress and "
	    "%zu call(s) queued; killing workers (the journal keeps their "
	    "updates)", pool_running(d->pool), api_queued(d->api));
	d->deadline_passed = 1;
	pool_kill(d->pool);
	tgd_maybe_exit(d);
}

static void
tgd_stop(struct tgd *d, const char *why)
{
	struct timeval tv;

	if (d->state == TGD_STOPPING) {
		log_warn("%s again: killing workers now", why);
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
	tv.tv_sec = d->conf.shutdown_timeout / 1000;
	tv.tv_usec = (d->conf.shutdown_timeout % 1000) * 1000;
	evtimer_add(d->ev_shutdown, &tv);
	tgd_maybe_exit(d);
}

/* Fields that take effect without a restart; the rest need one. */
static void
tgd_reload(struct tgd *d)
{
	struct conf nc;
	struct conf_error err;
	int replace;

	sd_notify(0, "RELOADING=1");
	if (conf_load(d->conf.path, &nc, &err) == -1) {
		log_err("reload: %s:%d: %s; keeping the running configuration",
		    err.file, err.line, err.msg);
		sd_notify(0, "READY=1");
		return;
	}
	replace = strcmp(nc.worker_command ? nc.worker_command : "",
	    d->conf.worker_command ? d->conf.worker_command : "") != 0;
#define TAKE(f)	do { __typeof__(nc.f) t_ = d->conf.f; d->conf.f = nc.f; nc.f = t_; } while (0)
	TAKE(workers); TAKE(worker_command); TAKE(worker_user);
	TAKE(worker_group); TAKE(update_timeout); TAKE(kill_grace);
	TAKE(max_attempts); TAKE(max_requests); TAKE(hello_timeout);
	TAKE(max_pending); TAKE(log_level); TAKE(backoff_min);
	TAKE(backoff_max); TAKE(poll_timeout); TAKE(shutdown_timeout);
	TAKE(flood_control); TAKE(flood_global_rate); TAKE(flood_chat_rate);
	TAKE(flood_group_rate); TAKE(max_call_retries); TAKE(api_max_inflight);
	TAKE(api_max_queued);
	TAKE(upload_dir);
	TAKE(upload_max_size);
#undef TAKE
	log_set_level(d->conf.log_level);
	if (strcmp(nc.api_url, d->conf.api_url) != 0 ||
	    strcmp(nc.state_dir, d->conf.state_dir) != 0 ||
	    nc.journal_fsync != d->conf.journal_fsync ||
	    nc.session_key_n != d->conf.session_key_n ||
	    memcmp(nc.session_key, d->conf.session_key,
	    sizeof(nc.session_key)) != 0)
		log_warn("reload: api_url, state_dir, journal_fsync and "
		    "session_key changes take effect at the next start");
	conf_clear(&nc);
	pool_reconfigure(d->pool, &d->conf, replace);
	api_reconfigure(d->api);
	log_notice("reloaded %s: workers=%lld%s", d->conf.path,
	    (long long)d->conf.workers, replace ? " (replacing workers)" : "");
	poller_kick(d->poller);
	tgd_dispatch(d);
	sd_notify(0, "READY=1");
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
			tgd_reload(d);
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
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1 };
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
		tv.tv_sec = (time_t)(wd_usec / 2 / 1000000);
		tv.tv_usec = (suseconds_t)(wd_usec / 2 % 1000000);
	}
	d->ev_status = event_new(d->base, -1, EV_PERSIST, tgd_status, d);
	event_add(d->ev_status, &tv);
}

static void
tgd_open(struct tgd *d)
{
	char err[512];

	if ((d->base = event_base_new()) == NULL)
		fatalx(1, "cannot create the event loop");
	tgd_events(d);
	if (d->conf.journal_fsync == FSYNC_OFF)
		log_warn("journal_fsync = off: updates are kept in memory only; "
		    "a crash or kill loses every update not yet done");
	if ((d->journal = journal_open(d->conf.state_dir, d->conf.journal_fsync,
	    err, sizeof(err))) == NULL)
		fatalx(EXIT_STATE, "journal: %s", err);
	d->ev_flush = event_new(d->base, -1, 0, tgd_flush, d);
	d->ev_resync = evtimer_new(d->base, tgd_resync, d);
	if (journal_sync_fd(d->journal) != -1) {
		d->ev_synced = event_new(d->base, journal_sync_fd(d->journal),
		    EV_READ | EV_PERSIST, tgd_synced, d);
		event_add(d->ev_synced, NULL);
	}
	if ((d->router = router_new()) == NULL ||
	    (d->http = http_new(d->base, 16)) == NULL ||
	    (d->api = api_new(d->base, d->http, &d->conf, d->token)) == NULL ||
	    (d->pool = pool_new(d->base, &d->conf, &tgd_pool_ops, d)) == NULL ||
	    (d->poller = poller_new(d->base, d->http, &d->conf, d->token,
	    &tgd_poller_ops, d)) == NULL)
		fatalx(1, "out of memory at start");
	if (d->conf.control_socket != NULL && (d->control = control_new(d->base,
	    d->conf.control_socket, 0600, tgd_control, d)) == NULL) {
		/* the default's directory exists under the unit only */
		if (strcmp(d->conf.control_socket, CONF_CONTROL_SOCKET) != 0)
			fatalx(EXIT_STATE, "cannot open control_socket %s",
			    d->conf.control_socket);
		log_warn("no control socket: tgrunnerctl cannot reach this "
		    "daemon (set control_socket to a usable path, or empty)");
	}
	api_on_release(d->api, tgd_api_released, d);
	if (d->conf.listen != NULL && pool_listen(d->pool, d->conf.listen) == -1)
		fatalx(EXIT_STATE, "cannot listen for workers on %s",
		    d->conf.listen);
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
	size_t i;

	control_free(d->control);
	metrics_free(d->metrics);
	poller_free(d->poller);
	pool_free(d->pool);
	api_free(d->api);
	http_free(d->http);
	router_free(d->router);
	if (d->ev_synced != NULL)
		event_free(d->ev_synced);
	event_free(d->ev_resync);
	event_free(d->ev_flush);
	journal_close(d->journal);
	for (i = 0; i < sizeof(d->ev_sig) / sizeof(d->ev_sig[0]); i++)
		if (d->ev_sig[i] != NULL)
			event_free(d->ev_sig[i]);
	event_free(d->ev_shutdown);
	event_free(d->ev_status);
	event_base_free(d->base);
	json_decref(d->bot);
	free(d->token);
	conf_clear(&d->conf);
	log_clear_secrets();
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
		if (verbose)
			conf_print(&d.conf, stdout);
		printf("%s: configuration OK\n", path);
		return 0;
	}
	log_init("tgrunnerd", debug ? LOG_LVL_DEBUG : d.conf.log_level);
	d.token = token_load(&d.conf);
	d.started = time(NULL);
	srandom((unsigned)(getpid() ^ time(NULL)));
	tgd_open(&d);
	poller_start(d.poller, journal_next_offset(d.journal));
	event_base_dispatch(d.base);
	log_notice("stopped: done=%llu dead=%llu, %zu update(s) left in the "
	    "journal", (unsigned long long)d.stats.done,
	    (unsigned long long)d.stats.dead, router_jobs(d.router));
	tgd_close(&d);
	return d.exit_status;
}

/*
 * tg-test-worker: the worker the scenario tests run.  Configured only by
 * environment variables, it records what happened to every update in a
 * shared file (one O_APPEND write per line, so lines of many processes never
 * interleave and their order is the real order of events), and can be told
 * to be slow, to fail, or to break the protocol in every way the daemon must
 * survive.
 *
 *   TG_RECORD=PATH        required; lines "S|E|F|C id attempt pid keys chat
 *                         seq t_ns" (start, end, failed, cancelled)
 *   TG_SLEEP_MS=MIN[-MAX] handler duration, uniform in the range (0)
 *   TG_SLOTS=N            N > 1: non-blocking SDK interface, N handlers at once
 *   TG_REPLY=1            done carries sendMessage "echo: <text>"
 *   TG_MISBEHAVE=MODE[:P] garbage|hang|exit|midframe|oversize|baddone, with
 *                         probability P per update (1); baddone answers an
 *                         id it does not hold first, then its own update
 *   TG_FAIL=P             answer fail {retry:true} with probability P
 *   TG_SEED=N             random seed (pid ^ time)
 *   TG_ENVDUMP=PATH       write the environment to PATH.<pid> at start
 *   TG_DONE_DELAY_MS=N    sleep N ms between the E line and the done: a
 *                         worker descheduled there (and killed) never sent it
 *   TG_KILL_AFTER_DONE=P  with probability P per update, SIGKILL itself as
 *                         soon as the done is all in the socket: the done
 *                         races the daemon's SIGCHLD, and must win
 */
#include "config.h"

#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "tgrunner-worker.h"

extern char **environ;

enum tw_mis {
	MIS_NONE, MIS_GARBAGE, MIS_HANG, MIS_EXIT, MIS_MIDFRAME, MIS_OVERSIZE,
	MIS_BADDONE
};

static const char *tw_mis_names[] = {
	"none", "garbage", "hang", "exit", "midframe", "oversize", "baddone"
};

static struct {
	int		 recfd;
	int		 sleep_min, sleep_max;
	int		 slots;
	int		 reply;
	enum tw_mis	 mis;
	double		 mis_p;
	double		 fail_p;
	int		 done_delay_ms;
	double		 kill_after_done;
	uint64_t	 rng;
} tw;

/* What the record lines and the reply need from one update. */
struct tw_job {
	int		 used;
	int64_t		 id;
	int		 attempt;
	char		 keys[512];
	char		 chat[32];
	char		 seq[32];
	int		 has_chat;
	int64_t		 chat_id;
	char		*text;
	int		 fail;
	int		 hang;
	int64_t		 end_ms;	/* CLOCK_MONOTONIC */
};

static void
tw_die(const char *msg)
{
	fprintf(stderr, "tg-test-worker: %s\n", msg);
	exit(1);
}

static uint64_t
tw_rand(void)
{
	/* xorshift64*: reproducible from TG_SEED, no libc state. */
	tw.rng ^= tw.rng >> 12;
	tw.rng ^= tw.rng << 25;
	tw.rng ^= tw.rng >> 27;
	return tw.rng * 2685821657736338717ULL;
}

static double
tw_rand01(void)
{
	return (tw_rand() >> 11) * (1.0 / 9007199254740992.0);
}

static int
tw_duration(void)
{
	if (tw.sleep_max <= tw.sleep_min)
		return tw.sleep_min;
	return tw.sleep_min + (int)(tw_rand() %
	    (uint64_t)(tw.sleep_max - tw.sleep_min + 1));
}

static int64_t
tw_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
tw_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (ms > 0 && nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void
tw_record(char what, const struct tw_job *j)
{
	struct timespec ts;
	char line[1024];
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(line, sizeof(line), "%c %" PRId64 " %d %ld %s %s %s %"
	    PRId64 "\n", what, j->id, j->attempt, (long)getpid(), j->keys,
	    j->chat, j->seq, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
	if (n < 0 || (size_t)n >= sizeof(line))
		tw_die("record line too long");
	/* One write() per line: O_APPEND makes it atomic among processes. */
	if (write(tw.recfd, line, n) != n)
		tw_die("cannot write TG_RECORD");
}

/* ---- configuration ------------------------------------------------------- */

static double
tw_env_prob(const char *name, const char *s)
{
	char *end;
	double p;

	p = strtod(s, &end);
	if (end == s || *end != '\0' || p < 0 || p > 1) {
		fprintf(stderr, "tg-test-worker: %s: bad probability\n", name);
		exit(1);
	}
	return p;
}

static void
tw_conf_sleep(const char *s)
{
	char *end;

	tw.sleep_min = tw.sleep_max = (int)strtol(s, &end, 10);
	if (*end == '-')
		tw.sleep_max = (int)strtol(end + 1, &end, 10);
	if (*end != '\0' || tw.sleep_min < 0 || tw.sleep_max < tw.sleep_min)
		tw_die("TG_SLEEP_MS: expected MIN[-MAX]");
}

static void
tw_conf_misbehave(const char *s)
{
	const char *colon = strchr(s, ':');
	size_t len = colon ? (size_t)(colon - s) : strlen(s);
	size_t i;

	for (i = 1; i < sizeof(tw_mis_names) / sizeof(tw_mis_names[0]); i++)
		if (strlen(tw_mis_names[i]) == len &&
		    strncmp(tw_mis_names[i], s, len) == 0)
			tw.mis = i;
	if (tw.mis == MIS_NONE)
		tw_die("TG_MISBEHAVE: unknown mode");
	tw.mis_p = colon ? tw_env_prob("TG_MISBEHAVE", colon + 1) : 1.0;
}

static void
tw_envdump(const char *path)
{
	char name[4096];
	FILE *fp;
	char **e;

	snprintf(name, sizeof(name), "%s.%ld", path, (long)getpid());
	if ((fp = fopen(name, "w")) == NULL)
		tw_die("TG_ENVDUMP: cannot create file");
	for (e = environ; *e != NULL; e++)
		fprintf(fp, "%s\n", *e);
	if (fclose(fp) != 0)
		tw_die("TG_ENVDUMP: write error");
}

static void
tw_configure(void)
{
	const char *s;

	if ((s = getenv("TG_ENVDUMP")) != NULL && *s != '\0')
		tw_envdump(s);
	if ((s = getenv("TG_RECORD")) == NULL || *s == '\0')
		tw_die("TG_RECORD is required");
	tw.recfd = open(s, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (tw.recfd == -1)
		tw_die("cannot open TG_RECORD");
	if ((s = getenv("TG_SLEEP_MS")) != NULL && *s != '\0')
		tw_conf_sleep(s);
	tw.slots = (s = getenv("TG_SLOTS")) != NULL ? atoi(s) : 1;
	if (tw.slots < 1 || tw.slots > PROTO_MAX_SLOTS)
		tw_die("TG_SLOTS out of range");
	tw.reply = (s = getenv("TG_REPLY")) != NULL && strcmp(s, "1") == 0;
	if ((s = getenv("TG_MISBEHAVE")) != NULL && *s != '\0')
		tw_conf_misbehave(s);
	if ((s = getenv("TG_FAIL")) != NULL && *s != '\0')
		tw.fail_p = tw_env_prob("TG_FAIL", s);
	if ((s = getenv("TG_DONE_DELAY_MS")) != NULL && *s != '\0' &&
	    (tw.done_delay_ms = atoi(s)) < 0)
		tw_die("TG_DONE_DELAY_MS: expected a number of ms");
	if ((s = getenv("TG_KILL_AFTER_DONE")) != NULL && *s != '\0')
		tw.kill_after_done = tw_env_prob("TG_KILL_AFTER_DONE", s);
	if ((s = getenv("TG_SEED")) != NULL && *s != '\0')
		tw.rng = strtoull(s, NULL, 10);
	else
		tw.rng = (uint64_t)getpid() ^ (uint64_t)time(NULL);
	tw.rng = tw.rng * 0x9E3779B97F4A7C15ULL + 1;	/* never 0 */
}

/* ---- one update ------------------------------------------------------------ */

static void
tw_job_init(struct tw_job *j, int64_t id, int attempt, const json_t *keys,
    const json_t *update)
{
	const char *text;
	size_t i, n = 0;
	json_t *k;

	memset(j, 0, sizeof(*j));
	j->used = 1;
	j->id = id;
	j->attempt = attempt;
	json_array_foreach(keys, i, k)
		n += snprintf(j->keys + n, n < sizeof(j->keys) ?
		    sizeof(j->keys) - n : 0, "%s%s", i ? "," : "",
		    json_string_value(k));
	if (n == 0 || n >= sizeof(j->keys))
		strcpy(j->keys, n == 0 ? "-" : "truncated");
	j->has_chat = tgw_update_chat_id(update, &j->chat_id) == 0;
	if (j->has_chat)
		snprintf(j->chat, sizeof(j->chat), "%" PRId64, j->chat_id);
	else
		strcpy(j->chat, "-");
	text = tgw_update_text(update);
	strcpy(j->seq, "-");
	if (text != NULL && strncmp(text, "seq ", 4) == 0)
		snprintf(j->seq, sizeof(j->seq), "%lld",
		    strtoll(text + 4, NULL, 10));
	j->text = strdup(text != NULL ? text : "");
	if (j->text == NULL)
		tw_die("out of memory");
}

static void
tw_job_free(struct tw_job *j)
{
	free(j->text);
	memset(j, 0, sizeof(*j));
}

static json_t *
tw_reply_calls(const struct tw_job *j)
{
	char *text;
	json_t *calls;

	if (!tw.reply || !j->has_chat)
		return NULL;
	if (asprintf(&text, "echo: %s", j->text) == -1)
		tw_die("out of memory");
	calls = json_pack("[{s:s, s:{s:I, s:s}}]", "method", "sendMessage",
	    "params", "chat_id", (json_int_t)j->chat_id, "text", text);
	free(text);
	return calls;
}

/* ---- breaking the protocol ---------------------------------------------- */

/* Write raw bytes past the SDK; give up quietly when the daemon hangs up. */
static int
tw_raw_write(struct tgw *w, const char *buf, size_t len)
{
	struct pollfd pfd = { tgw_fd(w), POLLOUT, 0 };
	ssize_t n;

	while (tgw_flush(w) == 1)
		poll(&pfd, 1, -1);
	while (len > 0) {
		n = write(tgw_fd(w), buf, len);
		if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
			poll(&pfd, 1, -1);
			continue;
		}
		if (n == -1)
			return -1;
		buf += n;
		len -= n;
	}
	return 0;
}

/* After breaking the protocol: wait for the daemon to close us, then go. */
static void __attribute__((noreturn))
tw_await_close(struct tgw *w)
{
	struct pollfd pfd = { tgw_fd(w), POLLIN, 0 };
	char junk[4096];
	ssize_t n;

	for (;;) {
		poll(&pfd, 1, -1);
		n = read(tgw_fd(w), junk, sizeof(junk));
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
			exit(0);
	}
}

static void
tw_oversize(struct tgw *w, int64_t id)
{
	size_t len = PROTO_MAX_FRAME + 64;
	char *buf;
	int n;

	if ((buf = malloc(len + 1)) == NULL)
		tw_die("out of memory");
	n = snprintf(buf, len, "{\"type\":\"done\",\"id\":%" PRId64
	    ",\"pad\":\"", id);
	memset(buf + n, 'x', len - n - 3);
	memcpy(buf + len - 3, "\"}\n", 3);
	tw_raw_write(w, buf, len);
	free(buf);
}

/*
 * Misbehave instead of answering j.  exit and midframe end the process;
 * hang returns (the caller never answers); garbage and oversize return
 * after the daemon has closed the connection... which ends the process
 * too.  baddone is no protocol error: it returns at once, and j runs.
 */
static void
tw_misbehave(struct tgw *w, struct tw_job *j)
{
	char buf[128];
	int n;

	switch (tw.mis) {
	case MIS_HANG:
		j->hang = 1;
		return;
	case MIS_EXIT:
		_exit(3);
	case MIS_MIDFRAME:
		n = snprintf(buf, sizeof(buf), "{\"type\":\"done\",\"id\":%"
		    PRId64 "}\n", j->id);
		tw_raw_write(w, buf, n / 2);
		_exit(3);
	case MIS_GARBAGE:
		tw_raw_write(w, "this is not json\n", 17);
		break;
	case MIS_OVERSIZE:
		tw_oversize(w, j->id);
		break;
	case MIS_BADDONE:
		n = snprintf(buf, sizeof(buf), "{\"type\":\"done\",\"id\":%"
		    PRId64 "}\n", j->id + 1000000007);
		tw_raw_write(w, buf, n);
		return;
	default:
		return;
	}
	tw_await_close(w);
}

/*
 * Start an update: record it, then decide its fate.  Returns 1 if the job
 * runs (timer or handler), 0 if it hangs forever.
 */
static int
tw_start(struct tgw *w, struct tw_job *j)
{
	tw_record('S', j);
	if (tw.mis != MIS_NONE && tw_rand01() < tw.mis_p) {
		tw_misbehave(w, j);
		if (tw.mis != MIS_BADDONE)
			return 0;
	}
	j->fail = tw.fail_p > 0 && tw_rand01() < tw.fail_p;
	return 1;
}

/* ---- blocking style (TG_SLOTS=1) ----------------------------------------- */

static enum tgw_status
tw_handler(struct tgw_ctx *ctx, const json_t *update, void *arg)
{
	struct tw_job j;
	enum tgw_status st = TGW_DONE;
	int ms;

	tw_job_init(&j, tgw_ctx_id(ctx), tgw_ctx_attempt(ctx),
	    tgw_ctx_keys(ctx), update);
	if (!tw_start(tgw_ctx_conn(ctx), &j))
		for (;;)
			pause();	/* hang: ignores cancel, awaits SIGKILL */
	ms = tw_duration();
	if (ms > 0 && tgw_sleep(ctx, ms)) {
		tw_record('C', &j);
		tgw_ctx_set_error(ctx, "cancelled");
		st = TGW_RETRY;
	} else if (j.fail) {
		tw_record('F', &j);
		tgw_ctx_set_error(ctx, "injected failure");
		st = TGW_RETRY;
	} else {
		char *text;

		if (tw.reply && j.has_chat) {
			if (asprintf(&text, "echo: %s", j.text) == -1)
				tw_die("out of memory");
			tgw_reply_text(ctx, text);
			free(text);
		}
		tw_record('E', &j);
		tw_sleep_ms(tw.done_delay_ms);
	}
	tw_job_free(&j);
	return st;
}

/* ---- non-blocking style (TG_SLOTS>1) ------------------------------------- */

struct tw_loop {
	struct tw_job	*jobs;
	int		 njobs;
};

static struct tw_job *
tw_find(struct tw_loop *l, int64_t id)
{
	int i;

	for (i = 0; i < l->njobs; i++)
		if (l->jobs[i].used && l->jobs[i].id == id)
			return &l->jobs[i];
	return NULL;
}

static void
tw_ev_update(struct tgw *w, struct tw_loop *l, const struct tgw_event *ev)
{
	struct tw_job *j = NULL;
	int i;

	/* The SDK refuses more updates than slots, so one is free. */
	for (i = 0; i < l->njobs && j == NULL; i++)
		if (!l->jobs[i].used)
			j = &l->jobs[i];
	if (j == NULL)
		tw_die("more updates than slots");
	tw_job_init(j, ev->id, ev->attempt, ev->keys, ev->update);
	if (tw_start(w, j))
		j->end_ms = tw_mono_ms() + tw_duration();
}

static void
tw_ev_cancel(struct tgw *w, struct tw_loop *l, const struct tgw_event *ev)
{
	struct tw_job *j = tw_find(l, ev->id);

	if (j == NULL || j->hang)
		return;
	tw_record('C', j);
	if (tgw_fail(w, j->id, "cancelled", 1) == -1)
		exit(1);
	tw_job_free(j);
}

static void
tw_event(struct tgw *w, const struct tgw_event *ev, void *arg)
{
	struct tw_loop *l = arg;

	switch (ev->type) {
	case TGW_EV_UPDATE:
		tw_ev_update(w, l, ev);
		break;
	case TGW_EV_CANCEL:
		tw_ev_cancel(w, l, ev);
		break;
	default:
		break;		/* shutdown: tgw_shutting_down(); no calls */
	}
}

/* The done is out: all of it in the daemon's socket.  Die now. */
static void __attribute__((noreturn))
tw_kill_self(struct tgw *w)
{
	struct pollfd pfd = { tgw_fd(w), POLLOUT, 0 };
	int r;

	while ((r = tgw_flush(w)) == 1)
		poll(&pfd, 1, -1);
	if (r == -1)
		exit(1);
	raise(SIGKILL);
	abort();
}

static void
tw_finish(struct tgw *w, struct tw_job *j)
{
	int r, die = 0;

	if (j->fail) {
		tw_record('F', j);
		r = tgw_fail(w, j->id, "injected failure", 1);
	} else {
		tw_record('E', j);
		tw_sleep_ms(tw.done_delay_ms);
		die = tw.kill_after_done > 0 && tw_rand01() < tw.kill_after_done;
		r = tgw_done(w, j->id, tw_reply_calls(j));
	}
	if (r == -1)
		exit(1);
	tw_job_free(j);
	if (die)
		tw_kill_self(w);
}

/* Finish due jobs; returns the poll timeout until the next one. */
static int
tw_timers(struct tgw *w, struct tw_loop *l)
{
	int64_t now = tw_mono_ms(), next = -1;
	int i;

	for (i = 0; i < l->njobs; i++) {
		struct tw_job *j = &l->jobs[i];

		if (!j->used || j->hang)
			continue;
		if (j->end_ms <= now)
			tw_finish(w, j);
		else if (next == -1 || j->end_ms - now < next)
			next = j->end_ms - now;
	}
	return (int)next;
}

static int
tw_run_loop(void)
{
	struct tgw_config cfg = { .slots = tw.slots, .name = "tg-test-worker" };
	struct pollfd pfd;
	struct tw_loop l;
	struct tgw *w;
	int r, timeout;

	if ((w = tgw_open(&cfg)) == NULL)
		return 1;
	l.njobs = tw.slots;
	if ((l.jobs = calloc(l.njobs, sizeof(*l.jobs))) == NULL)
		tw_die("out of memory");
	for (;;) {
		timeout = tw_timers(w, &l);
		if (tgw_shutting_down(w) && tgw_busy(w) == 0 &&
		    !tgw_want_write(w))
			break;
		pfd.fd = tgw_fd(w);
		pfd.events = POLLIN | (tgw_want_write(w) ? POLLOUT : 0);
		if (poll(&pfd, 1, timeout) == -1 && errno != EINTR)
			tw_die("poll");
		if ((pfd.revents & POLLOUT) && tgw_flush(w) == -1)
			return 1;
		if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) &&
		    (r = tgw_process(w, tw_event, &l)) != 0)
			return r == 1 ? 0 : 1;
	}
	tgw_close(w);
	free(l.jobs);
	return 0;
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	tw_configure();
	/* only the loop gets control back once a done is written */
	if (tw.slots > 1 || tw.kill_after_done > 0)
		return tw_run_loop();
	return tgw_run(&(struct tgw_config){ .slots = 1,
	    .name = "tg-test-worker" }, tw_handler, NULL) == 0 ? 0 : 1;
}

/*
 * The worker pool: prefork worker processes, each connected by a socketpair
 * (fd 3 in the child), speaking the newline-delimited JSON protocol of
 * proto/.  This file owns process lifecycles (spawn, hello, recycle,
 * timeouts, kill, reap, respawn with back-off) and the per-connection
 * framing; what a finished job means is decided by the caller (pool_ops).
 *
 * A job that was in a worker is reported failed only once that process is
 * known dead (reaped) or has answered: re-dispatching earlier could run two
 * updates of one key at the same time.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <uthash.h>

#include "conf.h"
#include "control.h"
#include "log.h"
#include "proto.h"
#include "router.h"
#include "worker.h"

#ifndef TAILQ_FOREACH_SAFE	/* glibc's sys/queue.h lacks it */
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = TAILQ_FIRST(head);					\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif

#define SPAWN_BACKOFF_MIN_MS	100
#define SPAWN_BACKOFF_MAX_MS	30000
#define SPAWN_GIVE_UP		8	/* consecutive deaths before hello */
#define OUTPUT_LINE_MAX		4096
#define WORKER_COMPLAINTS_MAX	10	/* warnings logged per connection */

extern char **environ;

enum worker_state {
	W_STARTING,		/* spawned, waiting for hello */
	W_READY,		/* taking updates */
	W_DRAINING,		/* shutdown sent: finishing, no new updates */
	W_KILLING,		/* SIGTERM/SIGKILL sent, waiting for exit */
	W_DEAD			/* reaped, about to be freed */
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

struct worker {
	struct pool		*pool;
	int			 id;
	pid_t			 pid;		/* 0 once reaped */
	enum worker_state	 state;
	struct bufferevent	*bev;		/* protocol socket, NULL once closed */
	struct bufferevent	*out;		/* child's stdout+stderr */
	struct event		*timer;		/* hello timeout / kill grace */
	int			 slots;
	int			 busy;
	int			 avail;		/* on pool->avail */
	uint64_t		 served;
	uint64_t		 limit;		/* recycle after this many, 0 = never */
	time_t			 started;
	int			 hello;		/* said hello: not an early death */
	int64_t			 shutdown_at;	/* draining: deadline for shutdown */
	int			 shutdown_sent;
	int			 retired;	/* the daemon asked it to go */
	int			 signalled;	/* the daemon sent it a signal */
	int			 external;	/* joined through `listen`: not our child */
	int			 complaints;	/* frames tolerated, not obeyed */
	char			 cut[192];	/* why the daemon cut it off */
	struct event		*gone;		/* external: freed from the loop */
	TAILQ_HEAD(, run)	 runs;
	TAILQ_ENTRY(worker)	 entry;		/* pool->workers */
	TAILQ_ENTRY(worker)	 aentry;	/* pool->avail */
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
	struct evconnlistener	*listener;	/* `listen`, external workers */
	char			*listen_path;
	const struct timeval	*common_timeout;
	int			 next_id;
	int			 early_deaths;	/* consecutive, before hello */
	int			 stopping;
	int			 started;
	char			 problem[256];
	size_t			 nrunning;
	size_t			 nfree;
	struct pool_stats	 stats;
};

static void	worker_read(struct bufferevent *, void *);
static void	worker_event(struct bufferevent *, short, void *);
static void	worker_close(struct worker *, int sig);
static void	pool_maintain(struct pool *);

static const char *
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

/* Wall-clock ms: the unit of every deadline on the wire. */
int64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval
ms_tv(int64_t ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	return tv;
}

/* --- free-slot bookkeeping ------------------------------------------------ */

static int
worker_free_slots(const struct worker *w)
{
	return w->state == W_READY ? w->slots - w->busy : 0;
}

/* Put w on or off the avail list to match its state; keep pool->nfree. */
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

static void
worker_set_state(struct worker *w, enum worker_state s)
{
	struct pool *p = w->pool;

	p->nfree -= (size_t)worker_free_slots(w);
	log_debug("worker=%d pid=%d: %s -> %s", w->id, (int)w->pid,
	    worker_state_str(w->state), worker_state_str(s));
	w->state = s;
	p->nfree += (size_t)worker_free_slots(w);
	worker_update_avail(w);
}

/* --- output to the peer --------------------------------------------------- */

static int
worker_send(struct worker *w, const char *line, size_t len)
{
	ssize_t n = 0;

	if (w->bev == NULL)
		return -1;
	/*
	 * Nothing queued before it: write the frame now.  Through the
	 * bufferevent it would wait for EPOLLOUT, costing a loop pass and two
	 * epoll_ctl calls per frame to a worker with one slot.  What the
	 * socket does not take (or an error, which the bufferevent then
	 * meets and reports) goes the usual way, behind nothing.
	 */
	if (evbuffer_get_length(bufferevent_get_output(w->bev)) == 0 &&
	    (n = send(bufferevent_getfd(w->bev), line, len,
	    MSG_DONTWAIT | MSG_NOSIGNAL)) < 0)
		n = 0;
	if ((size_t)n == len)
		return 0;
	if (bufferevent_write(w->bev, line + n, len - (size_t)n) == -1) {
		log_warn("worker=%d pid=%d: cannot queue frame", w->id,
		    (int)w->pid);
		return -1;
	}
	return 0;
}

static int
worker_send_frame(struct worker *w, const struct frame *f)
{
	char *line;
	size_t len;
	int rv;

	if ((line = proto_encode(f, &len)) == NULL) {
		log_warn("worker=%d: cannot encode %s frame", w->id,
		    proto_type_name(f->type));
		return -1;
	}
	rv = worker_send(w, line, len);
	free(line);
	return rv;
}

/*
 * No more updates for w; it is told to shut down once it holds none, so
 * that a worker never has to finish work and exit at the same time.
 */
static void
worker_drain(struct worker *w, int64_t deadline)
{
	struct frame f = { .type = FRAME_SHUTDOWN };

	if (w->state != W_DRAINING)
		worker_set_state(w, W_DRAINING);
	w->retired = 1;
	w->shutdown_at = deadline;
	if (w->busy > 0 || w->shutdown_sent)
		return;
	f.u.shutdown.deadline = deadline;
	worker_send_frame(w, &f);
	w->shutdown_sent = 1;
}

/* --- spawning ------------------------------------------------------------- */

static int
env_is_private(const char *kv)
{
	static const char *const drop[] = {
		"TGRUNNER_TOKEN=", "CREDENTIALS_DIRECTORY=", "NOTIFY_SOCKET=",
		"WATCHDOG_PID=", "WATCHDOG_USEC=", "LISTEN_FDS=", "LISTEN_PID=",
		"LISTEN_FDNAMES=", "TGRUNNER_FD=", "TGRUNNER_WORKER_ID=",
	};
	size_t i;

	for (i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		if (strncmp(kv, drop[i], strlen(drop[i])) == 0)
			return 1;
	return 0;
}

/* The child's environment: ours without secrets, plus the protocol's. */
static char **
worker_env(const struct worker *w)
{
	size_t n = 0, i, j = 0;
	char **env;

	while (environ[n] != NULL)
		n++;
	if ((env = calloc(n + 3, sizeof(*env))) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		if (!env_is_private(environ[i]))
			env[j++] = environ[i];
	env[j++] = "TGRUNNER_FD=3";
	if (asprintf(&env[j], "TGRUNNER_WORKER_ID=%d", w->id) == -1) {
		free(env);
		return NULL;
	}
	return env;
}

/* Only the last entry (TGRUNNER_WORKER_ID) is ours; the rest is environ's. */
static void
env_free(char **env)
{
	size_t n = 0;

	while (env[n] != NULL)
		n++;
	if (n > 0)
		free(env[n - 1]);
	free(env);
}

static int
child_drop_privileges(const struct conf *c)
{
	struct passwd *pw = NULL;
	struct group *gr = NULL;
	gid_t gid;

	if (getuid() != 0 || (c->worker_user == NULL && c->worker_group == NULL))
		return 0;
	if (c->worker_user != NULL && (pw = getpwnam(c->worker_user)) == NULL)
		return -1;
	if (c->worker_group != NULL && (gr = getgrnam(c->worker_group)) == NULL)
		return -1;
	gid = gr != NULL ? gr->gr_gid : pw != NULL ? pw->pw_gid : getgid();
	if (pw != NULL && initgroups(pw->pw_name, gid) == -1)
		return -1;
	if (pw == NULL && setgroups(1, &gid) == -1)
		return -1;
	if (setresgid(gid, gid, gid) == -1)
		return -1;
	if (pw != NULL && setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1)
		return -1;
	return 0;
}

/*
 * The shell line for the child.  A plain "program args" is prefixed with
 * exec so that the worker is our child itself (its pid in status, signals
 * straight to it); anything with shell syntax runs as written.
 */
static char *
worker_shell_line(const char *cmd)
{
	char *line;

	if (strpbrk(cmd, ";&|<>()$`\\\"'*?[]#~=%{}!\n") != NULL)
		return strdup(cmd);
	if (asprintf(&line, "exec %s", cmd) == -1)
		return NULL;
	return line;
}

/* In the child: only async-signal-safe calls until exec. */
static void __attribute__((noreturn))
child_exec(const struct conf *c, const char *line, int sock, int out,
    char **env)
{
	static const char msg[] = "tgrunnerd: cannot drop privileges\n";
	int devnull;
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* ignored signals survive exec: give the worker the defaults */
	signal(SIGPIPE, SIG_DFL);
	signal(SIGXFSZ, SIG_DFL);
	/* a worker outliving a SIGKILLed daemon would hold an update nobody waits for */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/*
	 * Its own process group: /bin/sh may not exec the command, and
	 * signals must reach the worker, not just the shell.  It also keeps a
	 * terminal's ^C away from workers: the daemon shuts them down itself.
	 */
	setpgid(0, 0);
	if ((devnull = open("/dev/null", O_RDONLY)) == -1 ||
	    dup2(devnull, 0) == -1 || dup2(out, 1) == -1 ||
	    dup2(out, 2) == -1 || dup2(sock, 3) == -1)
		_exit(126);
	closefrom(4);
	if (child_drop_privileges(c) == -1) {
		(void)!write(2, msg, sizeof(msg) - 1);
		_exit(126);
	}
	execle("/bin/sh", "sh", "-c", line, (char *)NULL, env);
	_exit(127);
}

static void
worker_output(struct bufferevent *bev, void *arg)
{
	struct worker *w = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		log_info("worker=%d pid=%d: %.*s", w->id, (int)w->pid,
		    OUTPUT_LINE_MAX, line);
		free(line);
	}
	/* a line that never ends is logged in pieces */
	if (evbuffer_get_length(in) > OUTPUT_LINE_MAX) {
		len = evbuffer_get_length(in);
		line = (char *)evbuffer_pullup(in, -1);
		log_info("worker=%d pid=%d: %.*s", w->id, (int)w->pid,
		    (int)len, line);
		evbuffer_drain(in, len);
	}
}

static void
worker_output_event(struct bufferevent *bev, short what, void *arg)
{
	struct worker *w = arg;

	worker_output(bev, arg);
	bufferevent_free(bev);
	w->out = NULL;
}

static void
worker_hello_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	snprintf(w->cut, sizeof(w->cut), "hello missing: none within %lld ms",
	    (long long)w->pool->conf->hello_timeout);
	log_warn("worker=%d pid=%d: %s", w->id, (int)w->pid, w->cut);
	worker_close(w, SIGTERM);
}

static uint64_t
worker_request_limit(const struct conf *c)
{
	uint64_t n = (uint64_t)c->max_requests;

	/* up to 10% jitter so a pool started together is not recycled together */
	if (n == 0)
		return 0;
	return n + (uint64_t)random() % (n / 10 + 1);
}

static struct worker *
worker_spawn(struct pool *p)
{
	const struct conf *c = p->conf;
	struct worker *w;
	struct timeval tv;
	int sv[2], pv[2];
	char **env, *line;
	pid_t pid;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	w->pool = p;
	w->id = ++p->next_id;
	TAILQ_INIT(&w->runs);
	if ((line = worker_shell_line(c->worker_command)) == NULL) {
		free(w);
		return NULL;
	}
	if ((env = worker_env(w)) == NULL) {
		free(line);
		free(w);
		return NULL;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1 ||
	    pipe2(pv, O_CLOEXEC) == -1) {
		log_err("%s: socketpair/pipe: %s", __func__, strerror(errno));
		goto fail;
	}
	switch ((pid = fork())) {
	case -1:
		log_err("%s: fork: %s", __func__, strerror(errno));
		close(sv[0]); close(sv[1]); close(pv[0]); close(pv[1]);
		goto fail;
	case 0:
		child_exec(c, line, sv[1], pv[1], env);
	}
	free(line);
	setpgid(pid, pid);	/* either side may run first */
	close(sv[1]);
	close(pv[1]);
	env_free(env);
	w->pid = pid;
	w->started = time(NULL);
	w->limit = worker_request_limit(c);
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(pv[0]);
	w->bev = bufferevent_socket_new(p->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	w->out = bufferevent_socket_new(p->base, pv[0], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(w->bev, worker_read, NULL, worker_event, w);
	bufferevent_setcb(w->out, worker_output, NULL, worker_output_event, w);
	bufferevent_enable(w->bev, EV_READ | EV_WRITE);
	bufferevent_enable(w->out, EV_READ);
	w->timer = evtimer_new(p->base, worker_hello_timeout, w);
	tv = ms_tv(c->hello_timeout);
	evtimer_add(w->timer, &tv);
	TAILQ_INSERT_TAIL(&p->workers, w, entry);
	p->stats.spawned++;
	log_info("worker=%d pid=%d: started", w->id, (int)pid);
	return w;
fail:
	free(line);
	env_free(env);
	free(w);
	return NULL;
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
	struct pool *p = w->pool;
	struct job *job = r->job;
	int before = worker_free_slots(w);

	run_free(r);
	w->busy--;
	p->nfree += (size_t)(worker_free_slots(w) - before);
	worker_update_avail(w);
	if (w->state == W_DRAINING && w->busy == 0)
		worker_drain(w, w->shutdown_at);
	return job;
}

static int
worker_start_job(struct worker *w, struct job *job)
{
	struct pool *p = w->pool;
	const char *keys[KEYS_MAX];
	struct timeval tv;
	struct run *r;
	char *line;
	size_t len;
	int i;

	for (i = 0; i < job->nkeys; i++)
		keys[i] = job_key(job, i);
	line = proto_encode_update(job->id, keys, job->nkeys, job->attempt,
	    wall_ms() + p->conf->update_timeout, job->text->s, job->text->len,
	    &len);
	if (line == NULL)
		return -1;
	if (len > PROTO_MAX_FRAME) {
		/* cannot happen for a real Update; never send what a peer must reject */
		free(line);
		return -1;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		free(line);
		return -1;
	}
	r->job = job;
	r->w = w;
	r->timer = evtimer_new(p->base, run_timeout, r);
	if (worker_send(w, line, len) == -1) {
		event_free(r->timer);
		free(r);
		free(line);
		return -1;
	}
	free(line);
	tv = ms_tv(p->conf->update_timeout);
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

/* Ask the process to go away: SIGTERM now, SIGKILL after kill_grace. */
static void	worker_kill_timeout(evutil_socket_t, short, void *);

static void	worker_disconnect(struct worker *);

static void
worker_terminate(struct worker *w, int sig)
{
	struct timeval tv = ms_tv(w->pool->conf->kill_grace);

	if (w->external) {
		worker_disconnect(w);
		return;
	}
	if (w->pid <= 0)
		return;
	if (w->state != W_KILLING)
		worker_set_state(w, W_KILLING);
	w->signalled = 1;
	if (kill(-w->pid, sig) == -1)
		kill(w->pid, sig);
	if (sig != SIGKILL) {
		event_free(w->timer);
		w->timer = evtimer_new(w->pool->base, worker_kill_timeout, w);
		evtimer_add(w->timer, &tv);
	}
}

static void
worker_kill_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	log_warn("worker=%d pid=%d: still alive %lld ms after being told to "
	    "go; SIGKILL",
	    w->id, (int)w->pid, (long long)w->pool->conf->kill_grace);
	worker_terminate(w, SIGKILL);
}

static void
run_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct run *r = arg;
	struct worker *w = r->w;
	struct timeval tv = ms_tv(w->pool->conf->kill_grace);
	struct frame f = { .type = FRAME_CANCEL };

	/* cut off: its updates come back when it is gone, not as timeouts */
	if (w->bev == NULL)
		return;
	if (!r->cancelled) {
		r->cancelled = 1;
		w->pool->stats.timeouts++;
		log_warn("worker=%d pid=%d: update=%lld attempt=%d timed out; "
		    "cancel", w->id, (int)w->pid, (long long)r->job->id,
		    r->job->attempt);
		f.u.cancel.id = r->job->id;
		f.u.cancel.reason = "timeout";
		worker_send_frame(w, &f);
		evtimer_add(r->timer, &tv);
		return;
	}
	snprintf(w->cut, sizeof(w->cut), "update=%lld not answered %lld ms "
	    "after cancel", (long long)r->job->id,
	    (long long)w->pool->conf->kill_grace);
	log_warn("worker=%d pid=%d: %s; %s", w->id, (int)w->pid, w->cut,
	    w->external ? "disconnecting" : "terminating the worker");
	worker_terminate(w, SIGTERM);
}

/* --- input from the peer -------------------------------------------------- */

/* Before hello, a broken frame is a refused hello (PROTOCOL.md section 5). */
static void
worker_protocol_error(struct worker *w, const char *why)
{
	w->pool->stats.protocol_errors++;
	snprintf(w->cut, sizeof(w->cut), "%s: %s", w->state == W_STARTING ?
	    "hello refused" : "protocol error", why);
	log_warn("worker=%d pid=%d: %s; disconnecting", w->id, (int)w->pid,
	    w->cut);
	worker_close(w, SIGKILL);
}

static void
handle_hello(struct worker *w, struct frame *f)
{
	struct pool *p = w->pool;
	struct frame out = { .type = FRAME_WELCOME };

	if (w->state != W_STARTING) {
		worker_protocol_error(w, "second hello");
		return;
	}
	if (f->u.hello.protocol != PROTO_VERSION) {
		snprintf(w->cut, sizeof(w->cut), "hello refused: it speaks "
		    "protocol %d, this daemon %d", f->u.hello.protocol,
		    PROTO_VERSION);
		log_warn("worker=%d pid=%d: %s", w->id, (int)w->pid, w->cut);
		worker_close(w, SIGTERM);
		return;
	}
	out.u.welcome.protocol = PROTO_VERSION;
	out.u.welcome.worker_id = w->id;
	out.u.welcome.bot = p->bot;
	out.u.welcome.max_frame = PROTO_MAX_FRAME;
	if (worker_send_frame(w, &out) == -1) {
		worker_close(w, SIGTERM);
		return;
	}
	evtimer_del(w->timer);
	w->hello = 1;
	w->slots = f->u.hello.slots;
	p->early_deaths = 0;
	p->problem[0] = '\0';
	worker_set_state(w, W_READY);
	log_info("worker=%d pid=%d: hello slots=%d%s%s", w->id, (int)w->pid,
	    w->slots, f->u.hello.name ? " name=" : "",
	    f->u.hello.name ? f->u.hello.name : "");
	p->ops->capacity(p->arg);
}

/* The run of update id held by w, or NULL. */
static struct run *
worker_find_run(struct worker *w, int64_t id)
{
	struct run *r;

	HASH_FIND(hh, w->pool->runs, &id, sizeof(id), r);
	return r != NULL && r->w == w ? r : NULL;
}

/*
 * A frame the protocol tolerates but does not obey (PROTOCOL.md section
 * 5): warn, the first few times per connection only, so that a worker
 * stuck in a loop cannot flood the log.
 */
static void
worker_complain(struct worker *w, const char *what, int64_t id,
    const char *outcome)
{
	if (w->complaints > WORKER_COMPLAINTS_MAX)
		return;
	if (++w->complaints > WORKER_COMPLAINTS_MAX) {
		log_warn("worker=%d pid=%d: more frames for updates it does "
		    "not hold; not logging them any more", w->id, (int)w->pid);
		return;
	}
	log_warn("worker=%d pid=%d: %s for update=%lld, which is not held by "
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

static void
worker_maybe_recycle(struct worker *w)
{
	if (w->limit == 0 || w->served < w->limit || w->state != W_READY)
		return;
	log_info("worker=%d pid=%d: served %llu updates; recycling", w->id,
	    (int)w->pid, (unsigned long long)w->served);
	w->pool->stats.recycled++;
	worker_drain(w, wall_ms() + w->pool->conf->shutdown_timeout);
	pool_maintain(w->pool);
}

static void
handle_done(struct worker *w, struct frame *f)
{
	struct pool *p = w->pool;
	struct run *r;
	struct job *job;

	/* the first answer counts: a late or stray one changes nothing */
	if ((r = worker_find_run(w, f->u.done.id)) == NULL) {
		worker_complain(w, "done", f->u.done.id, "ignored");
		return;
	}
	job = run_end(r);
	w->served++;
	worker_maybe_recycle(w);
	p->ops->done(p->arg, job, w, f->u.done.calls);
}

static void
handle_fail(struct worker *w, struct frame *f)
{
	struct pool *p = w->pool;
	struct run *r;
	struct job *job;
	char why[256];

	if ((r = worker_find_run(w, f->u.fail.id)) == NULL) {
		worker_complain(w, "fail", f->u.fail.id, "ignored");
		return;
	}
	snprintf(why, sizeof(why), "worker failed it: %s",
	    f->u.fail.error ? f->u.fail.error : "(no reason)");
	job = run_end(r);
	w->served++;
	worker_maybe_recycle(w);
	p->ops->failed(p->arg, job, why, f->u.fail.retry);
}

static void
handle_call(struct worker *w, struct frame *f)
{
	struct pool *p = w->pool;
	struct run *r = NULL;

	if (f->u.call.id != 0 &&
	    (r = worker_find_run(w, f->u.call.id)) == NULL) {
		worker_refuse_call(w, f);
		return;
	}
	p->ops->call(p->arg, w->id, f->u.call.ref, r ? r->job : NULL,
	    f->u.call.method, f->u.call.params);
}

/* One switch per receiver; every case a named handler. */
static void
worker_dispatch_frame(struct worker *w, struct frame *f)
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

static void
worker_read(struct bufferevent *bev, void *arg)
{
	struct worker *w = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr eol;
	struct frame f;
	char err[256];
	size_t eol_len;
	char *line;

	/* w->bev goes NULL when a handler closes the connection */
	while (w->bev != NULL) {
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
		worker_dispatch_frame(w, &f);
		frame_clear(&f);
	}
}

static void
worker_event(struct bufferevent *bev, short what, void *arg)
{
	struct worker *w = arg;
	struct timeval tv = ms_tv(w->pool->conf->kill_grace);

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	log_debug("worker=%d pid=%d: connection %s%s (%zu bytes unread)",
	    w->id, (int)w->pid, what & BEV_EVENT_EOF ? "closed" : "error",
	    what & BEV_EVENT_WRITING ? " while writing" : "",
	    evbuffer_get_length(bufferevent_get_input(bev)));
	/* a drained worker closing its end is leaving as asked: let it exit */
	if (w->state == W_DRAINING && TAILQ_EMPTY(&w->runs) && !w->external) {
		bufferevent_free(w->bev);
		w->bev = NULL;
		event_free(w->timer);
		w->timer = evtimer_new(w->pool->base, worker_kill_timeout, w);
		evtimer_add(w->timer, &tv);
		return;
	}
	worker_close(w, SIGTERM);
}

/* No more deadlines for what w holds: it can no longer be told to cancel. */
static void
worker_stop_runs(struct worker *w)
{
	struct run *r;

	TAILQ_FOREACH(r, &w->runs, entry)
		evtimer_del(r->timer);
}

/*
 * Cut the connection.  The process is told to go (SIGTERM, SIGKILL after
 * kill_grace; at once SIGKILL for a protocol violation, whose output can no
 * longer be trusted); its jobs are given back when it is reaped.
 */
static void
worker_close(struct worker *w, int sig)
{
	if (w->external) {
		worker_disconnect(w);
		return;
	}
	if (w->bev != NULL) {
		bufferevent_free(w->bev);
		w->bev = NULL;
		worker_stop_runs(w);
	}
	if (w->state == W_DEAD || w->pid <= 0)
		return;
	if (sig == SIGKILL || w->state != W_KILLING)
		worker_terminate(w, sig);
}

/* --- death and respawn ---------------------------------------------------- */

static void
worker_give_back_jobs(struct worker *w, const char *why)
{
	struct pool *p = w->pool;
	struct run *r;
	struct job *job;
	int timed_out;

	while ((r = TAILQ_FIRST(&w->runs)) != NULL) {
		timed_out = r->cancelled;
		job = run_end(r);
		p->ops->failed(p->arg, job, timed_out ? "timed out" : why, 1);
	}
}

static void
worker_free(struct worker *w)
{
	struct pool *p = w->pool;

	TAILQ_REMOVE(&p->workers, w, entry);
	if (w->avail)
		TAILQ_REMOVE(&p->avail, w, aentry);
	if (w->bev != NULL)
		bufferevent_free(w->bev);
	if (w->out != NULL)
		bufferevent_free(w->out);
	if (w->timer != NULL)
		event_free(w->timer);
	if (w->gone != NULL)
		event_free(w->gone);
	free(w);
}

/*
 * The process is gone, but what it wrote before exiting may still sit in
 * the socket (a done raced with SIGCHLD): read and handle it, or updates
 * it finished would be run again.  No new work can reach it meanwhile.
 */
static void
worker_drain_input(struct worker *w)
{
	struct evbuffer *in;
	evutil_socket_t fd;

	if (w->bev == NULL)
		return;
	if (w->state == W_READY || w->state == W_DRAINING)
		worker_set_state(w, W_KILLING);
	in = bufferevent_get_input(w->bev);
	fd = bufferevent_getfd(w->bev);
	while (evbuffer_get_length(in) <= PROTO_MAX_FRAME &&
	    evbuffer_read(in, fd, 65536) > 0)
		;
	worker_read(w->bev, w);
}

static void
worker_exited(struct worker *w, int status)
{
	struct pool *p = w->pool;
	char why[384];
	int early = !w->hello && !w->retired;
	int draining = w->state == W_DRAINING || w->retired;

	worker_drain_input(w);

	if (WIFSIGNALED(status))
		snprintf(why, sizeof(why), "worker exited on signal %d",
		    WTERMSIG(status));
	else
		snprintf(why, sizeof(why), "worker exited with status %d",
		    WEXITSTATUS(status));
	/* killed for a reason of ours: say which */
	if (w->cut[0] != '\0')
		snprintf(why + strlen(why), sizeof(why) - strlen(why),
		    " after %s", w->cut);
	/* asked to go, and went: by exit(0), or the SIGTERM it was sent */
	if (draining && TAILQ_EMPTY(&w->runs) && ((WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0) || (w->retired && WIFSIGNALED(status) &&
	    WTERMSIG(status) == SIGTERM)))
		log_info("worker=%d pid=%d: exited", w->id, (int)w->pid);
	else {
		p->stats.crashed++;
		log_warn("worker=%d pid=%d: %s (state %s, %d update(s) in "
		    "progress)", w->id, (int)w->pid, why,
		    worker_state_str(w->state), w->busy);
	}
	p->stats.exited++;
	/*
	 * Whatever is left of its process group (the command under a shell
	 * that did not exec it) goes too, before its updates run elsewhere.
	 */
	kill(-w->pid, SIGKILL);
	/* its last words: what is still in the pipe */
	if (w->out != NULL) {
		while (evbuffer_get_length(bufferevent_get_input(w->out)) <=
		    OUTPUT_LINE_MAX && evbuffer_read(bufferevent_get_input(w->out),
		    bufferevent_getfd(w->out), OUTPUT_LINE_MAX) > 0)
			worker_output(w->out, w);
		worker_output(w->out, w);
	}
	worker_set_state(w, W_DEAD);
	w->pid = 0;
	worker_give_back_jobs(w, why);
	/*
	 * A SIGKILL from elsewhere (an operator, the OOM killer) says nothing
	 * about worker_command: only deaths it causes itself count towards
	 * giving up.
	 */
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && !w->signalled)
		early = 0;
	if (early && !p->stopping) {
		p->early_deaths++;
		if (w->cut[0] != '\0')
			snprintf(p->problem, sizeof(p->problem), "workers' %s "
			    "(%d times in a row)", w->cut, p->early_deaths);
		else
			snprintf(p->problem, sizeof(p->problem), "workers exit "
			    "before hello (%s, %d times in a row)", why,
			    p->early_deaths);
	}
	worker_free(w);
}

void
pool_reap(struct pool *p)
{
	struct worker *w;
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		TAILQ_FOREACH(w, &p->workers, entry)
			if (w->pid == pid && !w->external)
				break;
		if (w != NULL)
			worker_exited(w, status);
	}
	if (pid == -1 && errno != ECHILD)
		log_warn("%s: waitpid: %s", __func__, strerror(errno));
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

static size_t
pool_active(const struct pool *p)
{
	const struct worker *w;
	size_t n = 0;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (!w->external &&
		    (w->state == W_STARTING || w->state == W_READY))
			n++;
	return n;
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
			log_err("%s; not starting workers any more: fix "
			    "worker_command and reload (SIGHUP)", p->problem);
			p->early_deaths++;
		}
		return;
	}
	if (p->early_deaths > 0) {
		delay = SPAWN_BACKOFF_MIN_MS << (p->early_deaths - 1);
		if (delay > SPAWN_BACKOFF_MAX_MS)
			delay = SPAWN_BACKOFF_MAX_MS;
		if (p->early_deaths == 1)
			log_warn("%s; respawning with back-off", p->problem);
		/* one spawn per back-off period while failing */
		if (pool_active(p) < (size_t)p->conf->workers &&
		    worker_spawn(p) != NULL) {
			tv = ms_tv(delay);
			evtimer_add(p->spawn_timer, &tv);
		}
		return;
	}
	while (pool_active(p) < (size_t)p->conf->workers)
		if (worker_spawn(p) == NULL) {
			tv = ms_tv(SPAWN_BACKOFF_MAX_MS / 10);
			evtimer_add(p->spawn_timer, &tv);
			break;
		}
}


/* --- external workers (`listen`) ------------------------------------------ */

/*
 * An external worker is not our child: nothing can be killed or reaped.
 * Once its connection is gone it can no longer report, so its updates are
 * given back at once (from the loop, never inside its own callbacks).
 */
static void
worker_gone_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;
	struct pool *p = w->pool;

	worker_give_back_jobs(w, "external worker disconnected");
	worker_free(w);
	p->ops->capacity(p->arg);
}

static void
worker_disconnect(struct worker *w)
{
	if (w->state == W_DEAD)
		return;
	log_info("worker=%d pid=%d: external worker disconnected (%d "
	    "update(s) in progress)", w->id, (int)w->pid, w->busy);
	if (w->bev != NULL) {
		bufferevent_free(w->bev);
		w->bev = NULL;
	}
	worker_stop_runs(w);
	worker_set_state(w, W_DEAD);
	w->pool->stats.exited++;
	event_active(w->gone, 0, 0);
}

/* listen_allow: "uid:N", "gid:N" or user names, by commas or blanks. */
static int
peer_allowed(const char *allow, const struct ucred *cr)
{
	char *list, *tok, *save = NULL;
	struct passwd *pw;
	int ok = 0;

	if (cr->uid == 0 || cr->uid == geteuid())
		return 1;
	if (allow == NULL || (list = strdup(allow)) == NULL)
		return 0;
	for (tok = strtok_r(list, ", \t", &save); tok != NULL && !ok;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if (strncmp(tok, "uid:", 4) == 0)
			ok = (uid_t)strtoul(tok + 4, NULL, 10) == cr->uid;
		else if (strncmp(tok, "gid:", 4) == 0)
			ok = (gid_t)strtoul(tok + 4, NULL, 10) == cr->gid;
		else if ((pw = getpwnam(tok)) != NULL)
			ok = pw->pw_uid == cr->uid;
	}
	free(list);
	return ok;
}

static void
pool_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct pool *p = arg;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	struct timeval tv;
	struct worker *w;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == -1 ||
	    !peer_allowed(p->conf->listen_allow, &cr)) {
		log_warn("listen: refused a worker (uid %d not in listen_allow)",
		    len == sizeof(cr) ? (int)cr.uid : -1);
		close(fd);
		return;
	}
	if (p->stopping || (w = calloc(1, sizeof(*w))) == NULL) {
		close(fd);
		return;
	}
	w->pool = p;
	w->id = ++p->next_id;
	w->pid = cr.pid;
	w->external = 1;
	w->started = time(NULL);
	TAILQ_INIT(&w->runs);
	w->bev = bufferevent_socket_new(p->base, fd, BEV_OPT_CLOSE_ON_FREE);
	w->gone = event_new(p->base, -1, 0, worker_gone_cb, w);
	w->timer = evtimer_new(p->base, worker_hello_timeout, w);
	bufferevent_setcb(w->bev, worker_read, NULL, worker_event, w);
	bufferevent_enable(w->bev, EV_READ | EV_WRITE);
	tv = ms_tv(p->conf->hello_timeout);
	evtimer_add(w->timer, &tv);
	TAILQ_INSERT_TAIL(&p->workers, w, entry);
	log_info("worker=%d pid=%d uid=%d: external worker connected", w->id,
	    (int)cr.pid, (int)cr.uid);
}

int
pool_listen(struct pool *p, const char *path)
{
	int fd;

	if ((fd = control_unix_listen(path, 0660)) == -1)
		return -1;
	p->listener = evconnlistener_new(p->base, pool_accept, p,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (p->listener == NULL || (p->listen_path = strdup(path)) == NULL) {
		close(fd);
		return -1;
	}
	return 0;
}

/* --- public interface ----------------------------------------------------- */

struct pool *
pool_new(struct event_base *base, const struct conf *conf,
    const struct pool_ops *ops, void *arg)
{
	struct pool *p;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->base = base;
	p->conf = conf;
	p->ops = ops;
	p->arg = arg;
	TAILQ_INIT(&p->workers);
	TAILQ_INIT(&p->avail);
	p->spawn_timer = evtimer_new(base, spawn_timer_cb, p);
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
		if (w->pid > 0 && !w->external)
			kill(-w->pid, SIGKILL);
		worker_free(w);
	}
	event_free(p->spawn_timer);
	if (p->listener != NULL) {
		evconnlistener_free(p->listener);
		unlink(p->listen_path);
	}
	free(p->listen_path);
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
	int64_t deadline = wall_ms() + conf->shutdown_timeout;
	size_t keep = 0;

	p->conf = conf;
	p->early_deaths = 0;
	p->problem[0] = '\0';
	evtimer_del(p->spawn_timer);
	/* drain the surplus (or all, for a new command); new ones replace them */
	TAILQ_FOREACH_SAFE(w, &p->workers, entry, tw) {
		if (w->external ||
		    (w->state != W_READY && w->state != W_STARTING))
			continue;
		if (!replace && keep < (size_t)conf->workers) {
			keep++;
			continue;
		}
		if (w->state == W_STARTING) {
			w->retired = 1;
			worker_close(w, SIGTERM);
			continue;
		}
		worker_drain(w, deadline);
	}
	pool_maintain(p);
}

int
pool_dispatch(struct pool *p, struct job *job, struct worker *w)
{
	if (w == NULL || worker_free_slots(w) == 0)
		w = TAILQ_FIRST(&p->avail);
	if (w == NULL || p->stopping)
		return -1;
	if (worker_start_job(w, job) == -1) {
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
	struct worker *w;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (w->id == worker_id)
			break;
	if (w == NULL || w->bev == NULL)
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
	TAILQ_FOREACH_SAFE(w, &p->workers, entry, tw) {
		if (w->state == W_READY)
			worker_drain(w, deadline_ms);
		else if (w->state == W_STARTING) {
			w->retired = 1;
			worker_close(w, SIGTERM);
		}
	}
}

void
pool_kill(struct pool *p)
{
	struct worker *w;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (w->pid > 0 || w->external)
			worker_terminate(w, SIGKILL);
}

size_t
pool_alive(const struct pool *p)
{
	const struct worker *w;
	size_t n = 0;

	TAILQ_FOREACH(w, &p->workers, entry)
		if (w->external ? w->state != W_DEAD : w->pid > 0)
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
	json_t *a = json_array();

	TAILQ_FOREACH(w, &p->workers, entry)
		json_array_append_new(a, json_pack("{s:i, s:i, s:s, s:i, s:i, "
		    "s:I, s:I, s:b}", "id", w->id, "pid", (int)w->pid, "state",
		    worker_state_str(w->state), "slots", w->slots, "busy",
		    w->busy, "served", (json_int_t)w->served, "started",
		    (json_int_t)w->started, "external", w->external));
	return a;
}

/* SPDX-License-Identifier: ISC */
/*
 * The child side of a spawned worker (child.h): fork and exec with the
 * protocol's environment, privileges dropped and the death signal set;
 * its output logged line by line; signals to its process group with
 * kill_grace between SIGTERM and SIGKILL; and its exit, once reaped.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>

#include "child.h"
#include "conf.h"
#include "log.h"
#include "pool.h"
#include "timeutil.h"
#include "worker.h"
#include "xmalloc.h"

#define OUTPUT_LINE_MAX		4096

extern char **environ;

/* One of its output pipes. */
struct child_stream {
	struct worker		*w;
	struct bufferevent	*bev;
	struct event		*join_timer;	/* ends a stderr event */
	int			 err;		/* stderr: warning, joined */
	int			 skipping;	/* to the end of a cut line */
	size_t			 len;		/* of the pending event in buf */
	size_t			 cut;		/* bytes cut from it */
	unsigned char		 buf[OUTPUT_LINE_MAX];
};

struct child {
	struct wsock		 sock;		/* fd 3 in the child */
	struct child_stream	 out[2];	/* its stdout, its stderr */
	struct event		*kill_timer;	/* kill grace */
	int			 signalled;	/* the last signal the pool sent it */
	int64_t			 tokens;	/* output it may log now, bytes */
	int64_t			 refill_ms;
	struct event		*drop_timer;	/* reports dropped output */
	uint64_t		 dropped;	/* bytes, not reported yet */
	int64_t			 drop_since_ms;	/* last report, or the first drop */
	int64_t			 drop_last_ms;
};

/* --- the environment ------------------------------------------------------- */

static int
env_is_private(const char *kv)
{
	static const char *const drop[] = {
		"TGRUNNER_TOKEN=", "CREDENTIALS_DIRECTORY=", "NOTIFY_SOCKET=",
		"WATCHDOG_PID=", "WATCHDOG_USEC=", "LISTEN_FDS=", "LISTEN_PID=",
		"LISTEN_FDNAMES=", "TGRUNNER_FD=", "TGRUNNER_WORKER_ID=",
		/* the endpoint's, given per worker or not at all */
		"TGRUNNER_API_ROOT=", "TGRUNNER_API_TOKEN=",
	};
	size_t i;

	for (i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		if (strncmp(kv, drop[i], strlen(drop[i])) == 0)
			return 1;
	return 0;
}

/*
 * The child's environment: ours without secrets, then the protocol's (all
 * allocated, from TGRUNNER_FD on): its socket, its id, and the Bot API
 * endpoint with its credential when there is one.
 */
static char **
child_env(const struct worker *w)
{
	size_t n = 0, i, j = 0;
	char **env;

	while (environ[n] != NULL)
		n++;
	env = xcalloc(n + 5, sizeof(*env));
	for (i = 0; i < n; i++)
		if (!env_is_private(environ[i]))
			env[j++] = environ[i];
	env[j++] = xstrdup("TGRUNNER_FD=3");
	xasprintf(&env[j++], "TGRUNNER_WORKER_ID=%d", w->id);
	if (w->api_root != NULL) {
		xasprintf(&env[j++], "TGRUNNER_API_ROOT=%s", w->api_root);
		xasprintf(&env[j++], "TGRUNNER_API_TOKEN=%s", w->api_token);
	}
	return env;
}

/* Ours begin at TGRUNNER_FD (environ's was dropped); the rest is environ's. */
static void
env_free(char **env)
{
	size_t i = 0;

	while (env[i] != NULL && strncmp(env[i], "TGRUNNER_FD=", 12) != 0)
		i++;
	for (; env[i] != NULL; i++) {
		explicit_bzero(env[i], strlen(env[i]));
		free(env[i]);
	}
	free(env);
}

/* --- in the child ---------------------------------------------------------- */

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
 * straight to it); anything with shell syntax, or a line that says exec
 * itself ("exec exec prog" would look for a program named exec), runs as
 * written.
 */
static char *
child_shell_line(const char *cmd)
{
	char *line;
	size_t sp = strspn(cmd, " \t");

	if (strpbrk(cmd, ";&|<>()$`\\\"'*?[]#~=%{}!\n") != NULL ||
	    (strncmp(cmd + sp, "exec", 4) == 0 &&
	    (cmd[sp + 4] == ' ' || cmd[sp + 4] == '\t')))
		return xstrdup(cmd);
	xasprintf(&line, "exec %s", cmd);
	return line;
}

/* In the child: only async-signal-safe calls until exec. */
static void __attribute__((noreturn))
child_exec(const struct conf *c, const char *line, int sock, const int *out,
    char **env, pid_t parent)
{
	static const char msg[] = "tgrunnerd: cannot drop privileges\n";
	struct sigaction dfl;
	int devnull, sig;
	sigset_t none;

	/*
	 * Signals are blocked since before the fork (child_fork): the
	 * daemon's handlers, inherited, would run here on a signal meant for
	 * the worker and tell the daemon's loop (the socketpair is shared)
	 * that the daemon was signalled.  Defaults first, then unblocked;
	 * ignored signals survive exec, so they get the defaults too.
	 */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			(void)sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/*
	 * Its own process group: /bin/sh may not exec the command, and
	 * signals must reach the worker, not just the shell.  It also keeps a
	 * terminal's ^C away from workers: the daemon shuts them down itself.
	 */
	setpgid(0, 0);
	if ((devnull = open("/dev/null", O_RDONLY)) == -1 ||
	    dup2(devnull, 0) == -1 || dup2(out[0], 1) == -1 ||
	    dup2(out[1], 2) == -1 || dup2(sock, 3) == -1)
		_exit(126);
	closefrom(4);
	if (child_drop_privileges(c) == -1) {
		(void)!write(2, msg, sizeof(msg) - 1);
		_exit(126);
	}
	/*
	 * A worker outliving a SIGKILLed daemon would hold an update nobody
	 * waits for.  Set after the uid change, which clears it; and if the
	 * daemon died before this line, the signal will never come: go.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != parent)
		_exit(126);
	execle("/bin/sh", "sh", "-c", line, (char *)NULL, env);
	_exit(127);
}

/* --- its output ------------------------------------------------------------ */

/*
 * stdout and stderr come through separate pipes: stdout is logged at info,
 * stderr at warning.  Each logged line is "worker=N pid=P: text", with the
 * text's control bytes (< 0x20 and 0x7f) escaped as \xNN so that nothing a
 * worker writes can move a terminal's cursor or forge a log line; other
 * bytes, invalid UTF-8 included, are kept as written.  A line is cut at
 * OUTPUT_LINE_MAX bytes, and says by how much.  A traceback is one event:
 * stderr lines that follow each other within OUTPUT_JOIN_MS are joined into
 * one log line with an escaped newline (\n), up to OUTPUT_LINE_MAX bytes.
 * A token bucket bounds what a worker may log (both streams together,
 * counted as the bytes written to the log); past it, output is still read
 * but dropped, and the count of dropped bytes logged.
 */
#define OUTPUT_RATE		(64 * 1024)	/* bytes a second */
#define OUTPUT_BURST		(1024 * 1024)
#define OUTPUT_JOIN_MS		10
#define OUTPUT_LINE_COST	48		/* the prefix, the timestamp */
#define OUTPUT_DROP_QUIET_MS	1000		/* this long silent: episode over */
#define OUTPUT_DROP_REPORT_MS	10000
#define OUTPUT_LAST_WORDS	(1024 * 1024)	/* read after death, at most */

static void
child_output_refill(struct child *c)
{
	int64_t now = mono_ms();

	if (now > c->refill_ms) {
		c->tokens += (now - c->refill_ms) * OUTPUT_RATE / 1000;
		if (c->tokens > OUTPUT_BURST)
			c->tokens = OUTPUT_BURST;
		c->refill_ms = now;
	}
}

static void
child_output_report(struct worker *w)
{
	struct child *c = w->conn;

	if (c->dropped == 0)
		return;
	log_warnx("worker=%d pid=%d: dropped %llu bytes of output (rate limit "
	    "%d KiB/s)", w->id, (int)w->pid, (unsigned long long)c->dropped,
	    OUTPUT_RATE / 1024);
	c->dropped = 0;
}

static void
child_output_drop(struct worker *w, size_t len)
{
	struct child *c = w->conn;
	struct timeval tv = tv_ms(OUTPUT_DROP_QUIET_MS);
	int64_t now = mono_ms();

	if (len == 0)
		return;
	if (c->dropped == 0 && !evtimer_pending(c->drop_timer, NULL)) {
		c->drop_since_ms = now;
		evtimer_add(c->drop_timer, &tv);
	}
	c->dropped += len;
	c->drop_last_ms = now;
}

/* Once a second while dropping: report when it stopped, or every 10 s. */
static void
child_output_drop_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;
	struct child *c = w->conn;
	struct timeval tv = tv_ms(OUTPUT_DROP_QUIET_MS);
	int64_t now = mono_ms();

	if (now - c->drop_last_ms >= OUTPUT_DROP_QUIET_MS) {
		child_output_report(w);
		return;
	}
	if (now - c->drop_since_ms >= OUTPUT_DROP_REPORT_MS) {
		child_output_report(w);
		c->drop_since_ms = now;
	}
	evtimer_add(c->drop_timer, &tv);
}

/* Escape src into dst (4 * len + 1 bytes): \n for the join, \xNN else. */
static size_t
child_output_escape(char *dst, const unsigned char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (src[i] == '\n') {
			dst[n++] = '\\';
			dst[n++] = 'n';
		} else if (src[i] < 0x20 || src[i] == 0x7f) {
			dst[n++] = '\\';
			dst[n++] = 'x';
			dst[n++] = hex[src[i] >> 4];
			dst[n++] = hex[src[i] & 0xf];
		} else
			dst[n++] = (char)src[i];
	}
	dst[n] = '\0';
	return n;
}

/* Log the stream's pending event, if the bucket allows; drop it if not. */
static void
child_output_flush(struct child_stream *s)
{
	struct worker *w = s->w;
	struct child *c = w->conn;
	char text[OUTPUT_LINE_MAX * 4 + 1], cut[48] = "";
	size_t n;

	evtimer_del(s->join_timer);
	if (s->len == 0 && s->cut == 0)
		return;
	child_output_refill(c);
	n = child_output_escape(text, s->buf, s->len);
	if (s->cut > 0)
		snprintf(cut, sizeof(cut), " [cut %zu bytes]", s->cut);
	if (c->tokens <= 0)
		child_output_drop(w, s->len + s->cut);
	else {
		c->tokens -= (int64_t)(n + strlen(cut) + OUTPUT_LINE_COST);
		log_msg(s->err ? LOG_LVL_WARN : LOG_LVL_INFO,
		    "worker=%d pid=%d: %s%s", w->id, (int)w->pid, text, cut);
	}
	s->len = 0;
	s->cut = 0;
}

static void
child_output_join_timeout(evutil_socket_t fd, short ev, void *arg)
{
	child_output_flush(arg);
}

/* One whole line (without its end) of the stream. */
static void
child_output_line(struct child_stream *s, const char *line, size_t len)
{
	struct timeval tv = tv_ms(OUTPUT_JOIN_MS);
	size_t take;

	if (s->skipping) {
		/* the end of a line already cut */
		s->skipping = 0;
		s->cut += len;
		child_output_flush(s);
		return;
	}
	if (!s->err || s->len == 0 || s->len + 1 + len > OUTPUT_LINE_MAX)
		child_output_flush(s);
	else
		s->buf[s->len++] = '\n';
	take = len < OUTPUT_LINE_MAX ? len : OUTPUT_LINE_MAX;
	memcpy(s->buf + s->len, line, take);
	s->len += take;
	s->cut += len - take;
	if (!s->err || s->cut > 0)
		child_output_flush(s);
	else
		evtimer_add(s->join_timer, &tv);
}

static void
child_output(struct bufferevent *bev, void *arg)
{
	struct child_stream *s = arg;
	struct child *c = s->w->conn;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr eol;
	char *line;
	size_t len;

	child_output_refill(c);
	if (c->tokens <= 0) {
		/* over the limit: read, drop, count (cheaply: no line parsing) */
		len = evbuffer_get_length(in);
		child_output_drop(s->w, len + s->len + s->cut);
		evbuffer_drain(in, len);
		s->len = s->cut = 0;
		s->skipping = 0;
		evtimer_del(s->join_timer);
		return;
	}
	while (s->skipping && evbuffer_get_length(in) > 0) {
		eol = evbuffer_search(in, "\n", 1, NULL);
		if (eol.pos == -1) {
			s->cut += evbuffer_get_length(in);
			evbuffer_drain(in, evbuffer_get_length(in));
			return;
		}
		s->cut += eol.pos;
		evbuffer_drain(in, eol.pos + 1);
		s->skipping = 0;
		child_output_flush(s);
	}
	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		child_output_line(s, line, len);
		free(line);
	}
	/* a line that does not end: its head now, the rest counted as cut */
	if (evbuffer_get_length(in) > OUTPUT_LINE_MAX) {
		child_output_flush(s);
		len = evbuffer_get_length(in);
		evbuffer_remove(in, s->buf, OUTPUT_LINE_MAX);
		s->len = OUTPUT_LINE_MAX;
		s->cut = len - OUTPUT_LINE_MAX;
		evbuffer_drain(in, len);
		s->skipping = 1;
	}
}

/* The end of the stream: what is left of a line is one. */
static void
child_output_end(struct child_stream *s)
{
	struct evbuffer *in;
	size_t len;

	if (s->bev != NULL) {
		child_output(s->bev, s);
		in = bufferevent_get_input(s->bev);
		if ((len = evbuffer_get_length(in)) > 0) {
			child_output_line(s, (char *)evbuffer_pullup(in, -1),
			    len);
			evbuffer_drain(in, len);
		}
	}
	s->skipping = 0;
	child_output_flush(s);
}

static void
child_output_event(struct bufferevent *bev, short what, void *arg)
{
	struct child_stream *s = arg;

	child_output_end(s);
	bufferevent_free(bev);
	s->bev = NULL;
}

/*
 * Its last words: what is still in the pipes.  The bufferevent's input is
 * frozen at its end but around its own reads (as in wsock_drain()).  A
 * process that escaped its group may still hold a pipe: read a bounded
 * amount.
 */
static void
child_last_output(struct worker *w)
{
	struct child *c = w->conn;
	struct child_stream *s;
	struct evbuffer *in;
	size_t total;
	int i, n;

	for (i = 0; i < 2; i++) {
		s = &c->out[i];
		if (s->bev == NULL) {
			child_output_flush(s);
			continue;
		}
		in = bufferevent_get_input(s->bev);
		total = 0;
		evbuffer_unfreeze(in, 0);
		while (total < OUTPUT_LAST_WORDS &&
		    evbuffer_get_length(in) <= OUTPUT_LINE_MAX &&
		    (n = evbuffer_read(in, bufferevent_getfd(s->bev),
		    OUTPUT_LINE_MAX)) > 0) {
			total += n;
			child_output(s->bev, s);
		}
		evbuffer_freeze(in, 0);
		child_output_end(s);
	}
	child_output_report(w);
}

/* Read one of the child's output pipes into s. */
static void
child_output_open(struct worker *w, struct child_stream *s, int fd, int err)
{
	struct event_base *base = pool_base(w->pool);

	s->w = w;
	s->err = err;
	if ((s->join_timer = evtimer_new(base, child_output_join_timeout,
	    s)) == NULL)
		fatalx(EXIT_NOMEM, "%s: evtimer_new", __func__);
	evutil_make_socket_nonblocking(fd);
	s->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL)
		fatalx(EXIT_NOMEM, "%s: bufferevent_socket_new", __func__);
	/* a flood is read in big gulps: the fewer wakeups the better */
	bufferevent_set_max_single_read(s->bev, 65536);
	bufferevent_setcb(s->bev, child_output, NULL, child_output_event, s);
	bufferevent_enable(s->bev, EV_READ);
}

/* Whatever is pending is logged (or counted) before it goes. */
static void
child_output_flush_all(struct worker *w)
{
	struct child *c = w->conn;

	if (c->out[0].join_timer != NULL)
		child_output_flush(&c->out[0]);
	if (c->out[1].join_timer != NULL)
		child_output_flush(&c->out[1]);
	if (c->drop_timer != NULL)
		child_output_report(w);
}

static void
child_output_close(struct child_stream *s)
{
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	s->bev = NULL;
	if (s->join_timer != NULL)
		event_free(s->join_timer);
	s->join_timer = NULL;
}

/* --- the connection type --------------------------------------------------- */

static void	child_kill_timeout(evutil_socket_t, short, void *);

static void
child_arm_kill(struct worker *w)
{
	struct child *c = w->conn;
	struct timeval tv = tv_ms(pool_conf(w->pool)->kill_grace);

	evtimer_add(c->kill_timer, &tv);
}

/* Signal its process group: SIGTERM now, SIGKILL after kill_grace. */
static void
child_terminate(struct worker *w, int sig)
{
	struct child *c = w->conn;

	if (w->pid <= 0)
		return;
	if (w->state != W_KILLING)
		worker_set_state(w, W_KILLING);
	c->signalled = sig;
	if (kill(-w->pid, sig) == -1)
		kill(w->pid, sig);
	if (sig != SIGKILL)
		child_arm_kill(w);
}

static void
child_kill_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;

	log_warnx("worker=%d pid=%d: still alive %lld ms after being told to "
	    "go; SIGKILL", w->id, (int)w->pid,
	    (long long)pool_conf(w->pool)->kill_grace);
	child_terminate(w, SIGKILL);
}

/*
 * Cut the connection.  The process is told to go (sig 0: it is leaving by
 * itself and gets kill_grace; SIGTERM, SIGKILL after kill_grace; SIGKILL at
 * once for a protocol violation, whose output can no longer be trusted);
 * its jobs are given back when it is reaped.  Once signalled, only a
 * SIGKILL follows the first signal: a worker in W_KILLING may not have
 * been signalled (reading its last frames took it out of service).
 */
static void
child_close(struct worker *w, int sig)
{
	struct child *c = w->conn;

	wsock_close(&c->sock);
	if (w->state == W_DEAD || w->pid <= 0)
		return;
	if (sig == 0)
		child_arm_kill(w);
	else if (sig == SIGKILL || c->signalled == 0)
		child_terminate(w, sig);
}

static int
child_send(struct worker *w, const char *line, size_t len)
{
	struct child *c = w->conn;

	return wsock_send(&c->sock, line, len);
}

static int
child_alive(const struct worker *w)
{
	return w->pid > 0;
}

static void
child_describe(const struct worker *w, json_t *o)
{
	json_object_set_new(o, "external", json_false());
}

static void
child_free(struct worker *w)
{
	struct child *c = w->conn;

	/* the pool is going: so is whatever is left of its process group */
	if (w->pid > 0)
		kill(-w->pid, SIGKILL);
	wsock_close(&c->sock);
	child_output_flush_all(w);
	child_output_close(&c->out[0]);
	child_output_close(&c->out[1]);
	if (c->drop_timer != NULL)
		event_free(c->drop_timer);
	event_free(c->kill_timer);
	free(c);
}

static const struct worker_ops child_ops = {
	.kind = "child",
	.api_local = 1,
	.send = child_send,
	.close = child_close,
	.terminate = child_terminate,
	.alive = child_alive,
	.describe = child_describe,
	.free = child_free,
};

/* --- life and death -------------------------------------------------------- */

static pid_t
child_fork(const struct conf *conf, const struct worker *w, int *sock,
    int *out)
{
	int sv[2], pv[2], ev[2], wr[2], saved_errno;
	char **env, *line;
	sigset_t all, old;
	pid_t pid, self = getpid();

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
		log_err("%s: socketpair", __func__);
		return -1;
	}
	if (pipe2(pv, O_CLOEXEC) == -1) {
		log_err("%s: pipe", __func__);
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pipe2(ev, O_CLOEXEC) == -1) {
		log_err("%s: pipe", __func__);
		close(sv[0]);
		close(sv[1]);
		close(pv[0]);
		close(pv[1]);
		return -1;
	}
	wr[0] = pv[1];
	wr[1] = ev[1];
	line = child_shell_line(conf->worker_command);
	env = child_env(w);
	/* no handler of ours may run in the child (child_exec) */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	if ((pid = fork()) == 0)
		child_exec(conf, line, sv[1], wr, env, self);
	saved_errno = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	errno = saved_errno;
	if (pid == -1)
		log_err("%s: fork", __func__);
	free(line);
	env_free(env);
	close(sv[1]);
	close(pv[1]);
	close(ev[1]);
	if (pid == -1) {
		close(sv[0]);
		close(pv[0]);
		close(ev[0]);
		return -1;
	}
	setpgid(pid, pid);	/* either side may run first */
	*sock = sv[0];
	out[0] = pv[0];
	out[1] = ev[0];
	return pid;
}

struct worker *
child_spawn(struct pool *p)
{
	struct child *c;
	struct worker *w;
	int sock, out[2];
	pid_t pid;

	c = xcalloc(1, sizeof(*c));
	/* the id comes first: the child's environment carries it */
	if ((w = pool_worker_new(p, &child_ops, c, 0)) == NULL) {
		free(c);
		return NULL;
	}
	if ((c->kill_timer = evtimer_new(pool_base(p), child_kill_timeout,
	    w)) == NULL)
		fatalx(EXIT_NOMEM, "%s: evtimer_new", __func__);
	if ((c->drop_timer = evtimer_new(pool_base(p),
	    child_output_drop_timeout, w)) == NULL)
		fatalx(EXIT_NOMEM, "%s: evtimer_new", __func__);
	c->tokens = OUTPUT_BURST;
	c->refill_ms = mono_ms();
	/* its credential is in its environment from the start */
	pool_worker_api(w);
	if ((pid = child_fork(pool_conf(p), w, &sock, out)) == -1) {
		pool_worker_gone(w, "cannot start", WORKER_UNSTARTED);
		return NULL;
	}
	w->pid = pid;
	evutil_make_socket_nonblocking(sock);
	wsock_open(&c->sock, w, sock);
	child_output_open(w, &c->out[0], out[0], 0);
	child_output_open(w, &c->out[1], out[1], 1);
	log_info("worker=%d pid=%d: started", w->id, (int)pid);
	return w;
}

void
child_exited(struct worker *w, int status)
{
	struct child *c = w->conn;
	char why[384];
	int how = 0, early = !w->hello && !w->retired;
	int draining = w->state == W_DRAINING || w->retired;
	enum worker_state was = w->state;

	/* no new work while what it wrote before exiting is read */
	if (w->state == W_READY || w->state == W_DRAINING)
		worker_set_state(w, W_KILLING);
	wsock_drain(&c->sock);
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
		how |= WORKER_CRASHED;
		log_warnx("worker=%d pid=%d: %s (state %s, %d update(s) in "
		    "progress)", w->id, (int)w->pid, why,
		    worker_state_str(was), w->busy);
	}
	/*
	 * Whatever is left of its process group (the command under a shell
	 * that did not exec it) goes too, before its updates run elsewhere.
	 */
	kill(-w->pid, SIGKILL);
	child_last_output(w);
	w->pid = 0;
	/*
	 * A SIGKILL from elsewhere (an operator, the OOM killer) says nothing
	 * about worker_command: only deaths it causes itself count towards
	 * giving up.  Ours is a SIGKILL only if we sent one: the SIGTERM sent
	 * when the connection of a process killed so closed does not count.
	 */
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
	    c->signalled != SIGKILL)
		early = 0;
	if (early)
		how |= WORKER_EARLY;
	pool_worker_gone(w, why, how);
}

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

struct child {
	struct wsock		 sock;		/* fd 3 in the child */
	struct bufferevent	*out;		/* its stdout+stderr */
	struct event		*kill_timer;	/* kill grace */
	int			 signalled;	/* the last signal the pool sent it */
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
child_exec(const struct conf *c, const char *line, int sock, int out,
    char **env)
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

/* --- its output ------------------------------------------------------------ */

static void
child_output(struct bufferevent *bev, void *arg)
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
child_output_event(struct bufferevent *bev, short what, void *arg)
{
	struct worker *w = arg;
	struct child *c = w->conn;

	child_output(bev, arg);
	bufferevent_free(bev);
	c->out = NULL;
}

/*
 * Its last words: what is still in the pipe.  The bufferevent's input is
 * frozen at its end but around its own reads (as in wsock_drain()).
 */
static void
child_last_output(struct worker *w)
{
	struct child *c = w->conn;
	struct evbuffer *in;

	if (c->out == NULL)
		return;
	in = bufferevent_get_input(c->out);
	evbuffer_unfreeze(in, 0);
	while (evbuffer_get_length(in) <= OUTPUT_LINE_MAX &&
	    evbuffer_read(in, bufferevent_getfd(c->out), OUTPUT_LINE_MAX) > 0)
		child_output(c->out, w);
	evbuffer_freeze(in, 0);
	child_output(c->out, w);
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
	if (c->out != NULL)
		bufferevent_free(c->out);
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
	int sv[2], pv[2], saved_errno;
	char **env, *line;
	sigset_t all, old;
	pid_t pid;

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
	line = child_shell_line(conf->worker_command);
	env = child_env(w);
	/* no handler of ours may run in the child (child_exec) */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	if ((pid = fork()) == 0)
		child_exec(conf, line, sv[1], pv[1], env);
	saved_errno = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	errno = saved_errno;
	if (pid == -1)
		log_err("%s: fork", __func__);
	free(line);
	env_free(env);
	close(sv[1]);
	close(pv[1]);
	if (pid == -1) {
		close(sv[0]);
		close(pv[0]);
		return -1;
	}
	setpgid(pid, pid);	/* either side may run first */
	*sock = sv[0];
	*out = pv[0];
	return pid;
}

struct worker *
child_spawn(struct pool *p)
{
	struct child *c;
	struct worker *w;
	int sock, out;
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
	/* its credential is in its environment from the start */
	pool_worker_api(w);
	if ((pid = child_fork(pool_conf(p), w, &sock, &out)) == -1) {
		pool_worker_gone(w, "cannot start", WORKER_UNSTARTED);
		return NULL;
	}
	w->pid = pid;
	evutil_make_socket_nonblocking(sock);
	evutil_make_socket_nonblocking(out);
	wsock_open(&c->sock, w, sock);
	c->out = bufferevent_socket_new(pool_base(p), out,
	    BEV_OPT_CLOSE_ON_FREE);
	if (c->out == NULL)
		fatalx(EXIT_NOMEM, "%s: bufferevent_socket_new", __func__);
	bufferevent_setcb(c->out, child_output, NULL, child_output_event, w);
	bufferevent_enable(c->out, EV_READ);
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

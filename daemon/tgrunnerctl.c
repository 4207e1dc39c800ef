/* SPDX-License-Identifier: ISC */
/*
 * tgrunnerctl: talk to a running tgrunnerd over its control socket.
 * One command per connection; the daemon answers one JSON object, which is
 * printed as is (--json) or as a table for people.
 *
 * The socket: -s PATH; else -i NAME (the tgrunnerd@NAME instance, whose
 * RuntimeDirectory is tgrunner-NAME); else $TGRUNNER_CONTROL_SOCKET; else
 * RUNSTATEDIR/tgrunner/control.sock, the default of the daemon's
 * control_socket (both from configure).
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "conf.h"		/* CONF_CONTROL_SOCKET, the daemon's default */

#define DEFAULT_SOCKET	CONF_CONTROL_SOCKET
#define SOCKET_ENV	"TGRUNNER_CONTROL_SOCKET"
#define REPLY_MAX	(4 * 1024 * 1024)
#define TIMEOUT_DEF	10	/* seconds for connect + answer */
#define CTL_EX_USAGE	64	/* sysexits' EX_USAGE */

struct ctl {
	char		 path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char		 cmd[1024];	/* the words of the command, one line */
	int		 timeout;	/* seconds */
	int		 json;
	int		 nowait;	/* restart-workers: do not follow it */
};

#define CTL_SYNOPSIS \
    "usage: tgrunnerctl [-hjnV] [-i name | -s socket] [-t seconds] command " \
    "[argument ...]\n"
#define RESTART_POLL_MS	200	/* restart-workers: status asked this often */

static const char ctl_usage_text[] = CTL_SYNOPSIS
    "commands: status, workers, drain, resume, reload, restart-workers,\n"
    "          dead-letters, dead-letters retry ID|all\n"
    "  -i, --instance NAME  the tgrunnerd@NAME instance (socket "
    RUNSTATEDIR "/tgrunner-NAME/control.sock)\n"
    "  -j, --json           print the daemon's JSON answer\n"
    "  -n, --no-wait        restart-workers: return once it has begun\n"
    "  -s, --socket PATH    control socket (default $" SOCKET_ENV ",\n"
    "                       else " DEFAULT_SOCKET ")\n"
    "  -t, --timeout SECS   give up when the daemon has not answered "
    "(default 10)\n"
    "  -h, --help           print this help and exit\n"
    "  -V, --version        print the version and exit\n";

static __attribute__((noreturn)) void
ctl_usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "tgrunnerctl: %s\n", why);
	fputs(CTL_SYNOPSIS "(tgrunnerctl --help lists the commands and "
	    "options)\n", stderr);
	exit(CTL_EX_USAGE);
}

static __attribute__((noreturn)) void
ctl_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("tgrunnerctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static int
ctl_append(char *dst, const char *src, size_t size)
{
	size_t n = strlen(dst);

	if (n + strlen(src) + 1 > size)
		return -1;
	memcpy(dst + n, src, strlen(src) + 1);
	return 0;
}

static int64_t
ctl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * connect(2) on a Unix socket blocks while the daemon's backlog is full:
 * SO_SNDTIMEO bounds it (and the write of the command).
 */
static int
ctl_connect(const struct ctl *c)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { c->timeout, 0 };
	int fd;

	memcpy(sun.sun_path, c->path, sizeof(sun.sun_path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		ctl_fail("socket: %s", strerror(errno));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1)
		ctl_fail("setsockopt: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		if (errno == EAGAIN || errno == EINPROGRESS)
			ctl_fail("%s: tgrunnerd did not accept the connection "
			    "within %ds (stopped or overloaded?)", c->path,
			    c->timeout);
		ctl_fail("%s: %s (is tgrunnerd running with control_socket "
		    "set to this path?)", c->path, strerror(errno));
	}
	return fd;
}

/* Read the whole answer (the daemon closes after it) before the deadline. */
static size_t
ctl_read_answer(const struct ctl *c, int fd, char *buf, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t len = 0;
	ssize_t n;
	int left;

	for (;;) {
		if ((left = (int)(deadline - ctl_now_ms())) <= 0 ||
		    poll(&pfd, 1, left) == 0)
			ctl_fail("%s: no answer from tgrunnerd within %ds "
			    "(stopped or overloaded?)", c->path, c->timeout);
		if ((n = read(fd, buf + len, REPLY_MAX - 1 - len)) == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			ctl_fail("%s: read: %s", c->path, strerror(errno));
		}
		if (n == 0)
			return len;
		len += (size_t)n;
		if (len == REPLY_MAX - 1)
			ctl_fail("%s: answer larger than %d bytes", c->path,
			    REPLY_MAX);
	}
}

/* Send cmd, return the daemon's answer (an object); failures exit. */
static json_t *
ctl_request(const struct ctl *c, const char *cmd)
{
	int64_t deadline = ctl_now_ms() + (int64_t)c->timeout * 1000;
	char line[sizeof(c->cmd) + 1], *buf;
	json_error_t jerr;
	json_t *reply;
	size_t len;
	int fd;

	fd = ctl_connect(c);
	len = (size_t)snprintf(line, sizeof(line), "%s\n", cmd);
	/* MSG_NOSIGNAL: a daemon gone meanwhile is an error, not SIGPIPE */
	if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len)
		ctl_fail("%s: cannot send the command: %s", c->path,
		    errno == EAGAIN ? "timed out" : strerror(errno));
	if ((buf = malloc(REPLY_MAX)) == NULL)
		ctl_fail("out of memory");
	len = ctl_read_answer(c, fd, buf, deadline);
	close(fd);
	buf[len] = '\0';
	if (len == 0)
		ctl_fail("%s: tgrunnerd closed the connection without an "
		    "answer", c->path);
	if ((reply = json_loads(buf, 0, &jerr)) == NULL ||
	    !json_is_object(reply))
		ctl_fail("bad answer from the daemon: %s",
		    reply ? "not an object" : jerr.text);
	free(buf);
	return reply;
}

static json_int_t
ctl_int(json_t *o, const char *path)
{
	char key[64];
	const char *dot;

	while ((dot = strchr(path, '.')) != NULL) {
		snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
		o = json_object_get(o, key);
		path = dot + 1;
	}
	return json_integer_value(json_object_get(o, path));
}

/*
 * A string of the answer, fit for one table cell or line: control
 * characters (a worker's multi-line error, say) are escaped as \n, \t or
 * \xHH, so that every row stays one line.  Returns one of a few static
 * buffers: valid until the fourth call after it.
 */
static const char *
ctl_str(json_t *o, const char *key)
{
	static char bufs[4][2048];
	static int next;
	const char *s = json_string_value(json_object_get(o, key));
	char *buf = bufs[next++ % 4];
	size_t n = 0;
	unsigned char ch;

	if (s == NULL)
		return "-";
	for (; *s != '\0' && n < sizeof(bufs[0]) - 8; s++) {
		ch = (unsigned char)*s;
		if (ch == '\n')
			n += (size_t)snprintf(buf + n, 3, "\\n");
		else if (ch == '\t')
			n += (size_t)snprintf(buf + n, 3, "\\t");
		else if (ch == '\\')
			n += (size_t)snprintf(buf + n, 3, "\\\\");
		else if (ch < 0x20 || ch == 0x7f)
			n += (size_t)snprintf(buf + n, 5, "\\x%02x", ch);
		else
			buf[n++] = (char)ch;
	}
	if (*s != '\0')
		n += (size_t)snprintf(buf + n, 4, "...");
	buf[n] = '\0';
	return buf;
}

static void
ctl_print_workers(json_t *workers)
{
	json_t *w;
	size_t i;

	printf("%-6s %-8s %-9s %6s %6s %10s\n", "WORKER", "PID", "STATE",
	    "SLOTS", "BUSY", "SERVED");
	json_array_foreach(workers, i, w)
		printf("%-6lld %-8lld %-9s %6lld %6lld %10lld\n",
		    (long long)ctl_int(w, "id"), (long long)ctl_int(w, "pid"),
		    ctl_str(w, "state"), (long long)ctl_int(w, "slots"),
		    (long long)ctl_int(w, "busy"),
		    (long long)ctl_int(w, "served"));
}

static void
ctl_print_dead_letters(json_t *list)
{
	json_t *o;
	size_t i;

	printf("%-12s %-8s %-20s %s\n", "UPDATE", "ATTEMPTS", "WHEN", "REASON");
	json_array_foreach(list, i, o) {
		time_t t = (time_t)ctl_int(o, "t");
		char when[32];

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
		printf("%-12lld %-8lld %-20s %s\n",
		    (long long)ctl_int(o, "update_id"),
		    (long long)ctl_int(o, "attempts"), when,
		    ctl_str(o, "reason"));
	}
}

/* "12s ago", "never" (no successful poll yet); a clock step is not < 0. */
static const char *
ctl_ago(time_t last)
{
	static char buf[32];
	time_t now = time(NULL);

	if (last <= 0)
		return "never";
	snprintf(buf, sizeof(buf), "%llds ago",
	    (long long)(now > last ? now - last : 0));
	return buf;
}

/* "3/8 replaced", and what is under way; external workers named. */
static void
ctl_restart_progress(char *buf, size_t size, json_t *r)
{
	size_t n;

	n = (size_t)snprintf(buf, size, "%lld/%lld replaced",
	    (long long)ctl_int(r, "replaced"), (long long)ctl_int(r, "total"));
	if (n < size && json_is_integer(json_object_get(r, "starting")))
		n += (size_t)snprintf(buf + n, size - n, ", new worker %lld "
		    "starting", (long long)ctl_int(r, "starting"));
	if (n < size && json_is_integer(json_object_get(r, "draining")))
		n += (size_t)snprintf(buf + n, size - n, ", worker %lld "
		    "finishing %lld update(s)", (long long)ctl_int(r,
		    "draining"), (long long)ctl_int(r, "draining_busy"));
	if (n < size && ctl_int(r, "external") > 0)
		snprintf(buf + n, size - n, "; %lld external worker(s) not "
		    "restarted (the daemon did not start them)",
		    (long long)ctl_int(r, "external"));
}

/* The restart in progress, or how the last one ended. */
static void
ctl_print_restart(json_t *r)
{
	const char *state = ctl_str(r, "state");
	char progress[512];

	if (!json_is_object(r))
		return;
	ctl_restart_progress(progress, sizeof(progress), r);
	if (strcmp(state, "running") == 0)
		printf("restart:  restarting workers: %s\n", progress);
	else if (strcmp(state, "stopped") == 0)
		printf("restart:  STOPPED %s: %s (%s)\n",
		    ctl_ago((time_t)ctl_int(r, "ended")), ctl_str(r, "why"),
		    progress);
	else
		printf("restart:  done %s: %s%s%s\n",
		    ctl_ago((time_t)ctl_int(r, "ended")), progress,
		    json_is_string(json_object_get(r, "why")) ? "; " : "",
		    json_is_string(json_object_get(r, "why")) ?
		    ctl_str(r, "why") : "");
}

static void
ctl_print_status(json_t *s)
{
	printf("tgrunnerd %s, %s, bot @%s, up %llds\n", ctl_str(s, "version"),
	    ctl_str(s, "state"), ctl_str(s, "bot"),
	    (long long)ctl_int(s, "uptime"));
	printf("polling:  %s, offset %lld, last success %s\n",
	    ctl_str(s, "poll_state"), (long long)ctl_int(s, "offset"),
	    ctl_ago((time_t)ctl_int(s, "last_poll_ok")));
	printf("backlog:  %lld queued (max %lld), %lld ready, %lld running, "
	    "%lld keys busy\n", (long long)ctl_int(s, "backlog.queued"),
	    (long long)ctl_int(s, "backlog.max_pending"),
	    (long long)ctl_int(s, "backlog.ready"),
	    (long long)ctl_int(s, "backlog.running"),
	    (long long)ctl_int(s, "backlog.keys_busy"));
	printf("updates:  %lld fetched, %lld done, %lld retried, %lld dead, "
	    "%lld replayed, %lld duplicates dropped\n",
	    (long long)ctl_int(s, "updates.fetched"),
	    (long long)ctl_int(s, "updates.done"),
	    (long long)ctl_int(s, "updates.retried"),
	    (long long)ctl_int(s, "updates.dead"),
	    (long long)ctl_int(s, "updates.replayed"),
	    (long long)ctl_int(s, "updates.duplicates"));
	printf("journal:  %lld pending, %lld bytes\n",
	    (long long)ctl_int(s, "journal.pending"),
	    (long long)ctl_int(s, "journal.bytes"));
	printf("api:      %lld queued, %lld in flight, %lld calls, %lld "
	    "errors\n", (long long)ctl_int(s, "api.queued"),
	    (long long)ctl_int(s, "api.inflight"),
	    (long long)ctl_int(s, "api.calls"),
	    (long long)ctl_int(s, "api.errors"));
	printf("outbox:   %lld replies owed (oldest %llds), %lld replayed "
	    "after the start\n", (long long)ctl_int(s, "outbox.owed"),
	    (long long)ctl_int(s, "outbox.oldest_age"),
	    (long long)ctl_int(s, "outbox.replayed"));
	if (json_is_object(json_object_get(s, "worker_api")))
		printf("endpoint: %s, %lld connections, %lld calls (%lld in no "
		    "update), %lld downloads, %lld refused, %lld unauthorized\n",
		    ctl_str(json_object_get(s, "worker_api"), "root"),
		    (long long)ctl_int(s, "worker_api.connections"),
		    (long long)ctl_int(s, "worker_api.calls"),
		    (long long)ctl_int(s, "worker_api.calls_no_update"),
		    (long long)ctl_int(s, "worker_api.downloads"),
		    (long long)ctl_int(s, "worker_api.refused"),
		    (long long)ctl_int(s, "worker_api.unauthorized"));
	printf("pool:     %lld spawned, %lld crashed, %lld protocol errors, "
	    "%lld timeouts\n", (long long)ctl_int(s, "pool.spawned"),
	    (long long)ctl_int(s, "pool.crashed"),
	    (long long)ctl_int(s, "pool.protocol_errors"),
	    (long long)ctl_int(s, "pool.timeouts"));
	ctl_print_restart(json_object_get(s, "restart"));
	if (json_is_string(json_object_get(s, "problem")))
		printf("PROBLEM:  %s\n", ctl_str(s, "problem"));
	ctl_print_workers(json_object_get(s, "workers"));
}

/* dead-letters retry takes an update_id or "all", nothing else. */
static void
ctl_check_retry_arg(int argc, char *argv[])
{
	const char *a;

	if (argc < 2 || strcmp(argv[0], "dead-letters") != 0 ||
	    strcmp(argv[1], "retry") != 0)
		return;
	if (argc != 3)
		ctl_usage("dead-letters retry: give one update_id or 'all'");
	a = argv[2];
	if (strcmp(a, "all") == 0)
		return;
	if (*a == '\0' || strspn(a, "0123456789") != strlen(a) ||
	    strlen(a) > 18)
		ctl_usage("dead-letters retry: not an update_id or 'all'");
}

/* The daemon refused: the reason, and the status (64 for a usage error). */
static int
ctl_refused(const char *cmd, json_t *reply)
{
	const char *err = ctl_str(reply, "error");

	fprintf(stderr, "tgrunnerctl: %s: %s\n", cmd, err);
	return strncmp(err, "unknown command", 15) == 0 ? CTL_EX_USAGE : 1;
}

/* A list of option names from the answer, "a, b, c". */
static void
ctl_names(char *buf, size_t size, json_t *a)
{
	json_t *v;
	size_t i, n = 0;

	buf[0] = '\0';
	json_array_foreach(a, i, v)
		if (json_is_string(v) && n < size)
			n += (size_t)snprintf(buf + n, size - n, "%s%s",
			    i > 0 ? ", " : "", json_string_value(v));
}

/* Applied: what changed; options that need a restart are a warning. */
static void
ctl_print_reload(json_t *reply)
{
	json_t *later = json_object_get(reply, "restart_needed");
	char names[1024];

	ctl_names(names, sizeof(names), json_object_get(reply, "changed"));
	printf("reload: ok (changed: %s)%s\n", names[0] != '\0' ? names :
	    "none", json_is_true(json_object_get(reply, "replacing_workers")) ?
	    ", replacing workers" : "");
	if (json_array_size(later) > 0) {
		ctl_names(names, sizeof(names), later);
		fprintf(stderr, "tgrunnerctl: reload: warning: %s changed but "
		    "take%s effect only at the next start\n", names,
		    json_array_size(later) > 1 ? "" : "s");
	}
}

/* Print the answer for people; returns the exit status. */
static int
ctl_print(const char *cmd, json_t *reply)
{
	if (!json_is_true(json_object_get(reply, "ok")))
		return ctl_refused(cmd, reply);
	if (strcmp(cmd, "status") == 0)
		ctl_print_status(reply);
	else if (strcmp(cmd, "workers") == 0)
		ctl_print_workers(json_object_get(reply, "workers"));
	else if (strcmp(cmd, "dead-letters") == 0)
		ctl_print_dead_letters(json_object_get(reply, "dead_letters"));
	else if (strncmp(cmd, "dead-letters retry", 18) == 0)
		printf("%lld update(s) queued again\n",
		    (long long)ctl_int(reply, "requeued"));
	else if (strcmp(cmd, "reload") == 0)
		ctl_print_reload(reply);
	else if (json_is_true(json_object_get(reply, "already")))
		printf("%s: ok (already %s)\n", cmd, ctl_str(reply, "state"));
	else
		printf("%s: ok\n", cmd);
	return 0;
}

/* With --json the answer is printed as it came; the status is the same. */
static int
ctl_print_json(const char *cmd, json_t *reply)
{
	json_dumpf(reply, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
	putchar('\n');
	if (!json_is_true(json_object_get(reply, "ok")))
		return strncmp(ctl_str(reply, "error"), "unknown command",
		    15) == 0 ? CTL_EX_USAGE : 1;
	return 0;
}

static void
ctl_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/*
 * restart-workers: the first answer says it has begun; then its progress
 * (the restart member of status) is followed until it is no longer
 * running, and printed as it changes.  Its outcome is the exit status: a
 * restart that stopped (a new worker did not come up) fails.
 */
static int
ctl_restart_workers(const struct ctl *c, json_t *reply)
{
	json_t *st = NULL, *r = json_object_get(reply, "restart");
	char progress[512], last[512] = "";
	json_int_t seq = ctl_int(r, "seq");
	int status;

	if (!json_is_true(json_object_get(reply, "ok")) || c->nowait)
		return c->json ? ctl_print_json(c->cmd, reply) :
		    ctl_print(c->cmd, reply);
	for (;;) {
		ctl_restart_progress(progress, sizeof(progress), r);
		if (!c->json && strcmp(progress, last) != 0) {
			printf("restart-workers: %s\n", progress);
			fflush(stdout);
			snprintf(last, sizeof(last), "%s", progress);
		}
		if (ctl_int(r, "seq") != seq) {
			seq = ctl_int(r, "seq");
			if (!c->json)
				printf("restart-workers: another restart-"
				    "workers started it over\n");
		}
		if (strcmp(ctl_str(r, "state"), "running") != 0)
			break;
		ctl_sleep_ms(RESTART_POLL_MS);
		json_decref(st);
		st = ctl_request(c, "status");
		if (!json_is_object(r = json_object_get(st, "restart")))
			ctl_fail("restart-workers: the daemon's status has no "
			    "restart (restarted meanwhile?)");
	}
	status = strcmp(ctl_str(r, "state"), "done") == 0 ? 0 : 1;
	if (c->json) {
		json_dumpf(r, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		putchar('\n');
	} else if (status == 0)
		printf("restart-workers: done%s%s\n",
		    json_is_string(json_object_get(r, "why")) ? ": " : "",
		    json_is_string(json_object_get(r, "why")) ?
		    ctl_str(r, "why") : "");
	else
		fprintf(stderr, "tgrunnerctl: restart-workers: stopped: %s\n",
		    ctl_str(r, "why"));
	json_decref(st);
	return status;
}

static void
ctl_set_path(struct ctl *c, const char *path)
{
	if (*path == '\0' || strlen(path) >= sizeof(c->path))
		ctl_usage(*path == '\0' ? "empty socket path" :
		    "socket path too long");
	strcpy(c->path, path);
}

static void
ctl_set_instance(struct ctl *c, const char *name)
{
	char path[sizeof(c->path) + 64];

	if (*name == '\0' || strchr(name, '/') != NULL ||
	    strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		ctl_usage("-i: an instance name has no '/' (tgrunnerd@NAME)");
	snprintf(path, sizeof(path), "%s/tgrunner-%s/control.sock", RUNSTATEDIR,
	    name);
	ctl_set_path(c, path);
}

static int
ctl_timeout(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 3600)
		ctl_usage("-t: seconds between 1 and 3600");
	return (int)v;
}

static void
ctl_options(struct ctl *c, int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "instance", required_argument, NULL, 'i' },
		{ "json", no_argument, NULL, 'j' },
		{ "no-wait", no_argument, NULL, 'n' },
		{ "socket", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *path = NULL, *instance = NULL, *env;
	int ch, i;

	c->timeout = TIMEOUT_DEF;
	while ((ch = getopt_long(argc, argv, "hi:jns:t:V", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'h': fputs(ctl_usage_text, stdout); exit(0);
		case 'i': instance = optarg; break;
		case 'j': c->json = 1; break;
		case 'n': c->nowait = 1; break;
		case 's': path = optarg; break;
		case 't': c->timeout = ctl_timeout(optarg); break;
		case 'V': printf("tgrunnerctl %s\n", PACKAGE_VERSION); exit(0);
		default: ctl_usage(NULL);
		}
	}
	if (path != NULL && instance != NULL)
		ctl_usage("-i and -s exclude each other");
	if (path != NULL)
		ctl_set_path(c, path);
	else if (instance != NULL)
		ctl_set_instance(c, instance);
	else if ((env = getenv(SOCKET_ENV)) != NULL && *env != '\0')
		ctl_set_path(c, env);
	else
		ctl_set_path(c, DEFAULT_SOCKET);
	if (optind == argc)
		ctl_usage("no command given");
	ctl_check_retry_arg(argc - optind, argv + optind);
	for (i = optind; i < argc; i++)
		if (ctl_append(c->cmd, argv[i], sizeof(c->cmd)) == -1 ||
		    (i + 1 < argc && ctl_append(c->cmd, " ",
		    sizeof(c->cmd)) == -1))
			ctl_usage("command too long");
	if (strpbrk(c->cmd, "\r\n") != NULL)
		ctl_usage("a command is one line");
}

int
main(int argc, char *argv[])
{
	struct ctl c = { .timeout = TIMEOUT_DEF };
	json_t *reply;
	int status;

	/* a closed stdout or socket is an error to report, not a signal */
	signal(SIGPIPE, SIG_IGN);
	ctl_options(&c, argc, argv);
	reply = ctl_request(&c, c.cmd);
	if (strcmp(c.cmd, "restart-workers") == 0)
		status = ctl_restart_workers(&c, reply);
	else if (c.json)
		status = ctl_print_json(c.cmd, reply);
	else
		status = ctl_print(c.cmd, reply);
	json_decref(reply);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "tgrunnerctl: standard output: %s\n",
		    strerror(errno));
		return 1;
	}
	return status;
}

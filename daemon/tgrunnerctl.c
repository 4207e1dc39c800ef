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
};

#define CTL_SYNOPSIS \
    "usage: tgrunnerctl [-hjV] [-i name | -s socket] [-t seconds] command " \
    "[argument ...]\n"

static const char ctl_usage_text[] = CTL_SYNOPSIS
    "commands: status, workers, drain, resume, reload,\n"
    "          dead-letters, dead-letters retry ID|all\n"
    "  -i, --instance NAME  the tgrunnerd@NAME instance (socket "
    RUNSTATEDIR "/tgrunner-NAME/control.sock)\n"
    "  -j, --json           print the daemon's JSON answer\n"
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

static json_t *
ctl_request(const struct ctl *c)
{
	int64_t deadline = ctl_now_ms() + (int64_t)c->timeout * 1000;
	char line[sizeof(c->cmd) + 1], *buf;
	json_error_t jerr;
	json_t *reply;
	size_t len;
	int fd;

	fd = ctl_connect(c);
	len = (size_t)snprintf(line, sizeof(line), "%s\n", c->cmd);
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

/*
 * Commands that are idempotent where it is natural: asking for the state
 * the daemon is already in is not an error.  The daemon refuses them with
 * its current state, which says so.
 */
static int
ctl_already(const char *cmd, json_t *reply)
{
	const char *state = json_string_value(json_object_get(reply, "state"));

	if (state == NULL)
		return 0;
	return (strcmp(cmd, "drain") == 0 && strcmp(state, "draining") == 0) ||
	    (strcmp(cmd, "resume") == 0 && strcmp(state, "running") == 0);
}

/* A retry of one id that requeued nothing: there is no such dead letter. */
static int
ctl_retry_missed(const char *cmd, json_t *reply)
{
	const char *which;

	if (strncmp(cmd, "dead-letters retry ", 19) != 0)
		return 0;
	which = cmd + 19;
	return strcmp(which, "all") != 0 && ctl_int(reply, "requeued") == 0;
}

/* Print the answer for people; returns the exit status. */
static int
ctl_print(const char *cmd, json_t *reply)
{
	const char *err = ctl_str(reply, "error");

	if (!json_is_true(json_object_get(reply, "ok"))) {
		if (ctl_already(cmd, reply)) {
			printf("%s: ok (already %s)\n", cmd,
			    ctl_str(reply, "state"));
			return 0;
		}
		fprintf(stderr, "tgrunnerctl: %s: %s\n", cmd, err);
		return strncmp(err, "unknown command", 15) == 0 ?
		    CTL_EX_USAGE : 1;
	}
	if (ctl_retry_missed(cmd, reply)) {
		fprintf(stderr, "tgrunnerctl: %s: no dead letter with "
		    "update_id %s\n", cmd, cmd + 19);
		return 1;
	}
	if (strcmp(cmd, "status") == 0)
		ctl_print_status(reply);
	else if (strcmp(cmd, "workers") == 0)
		ctl_print_workers(json_object_get(reply, "workers"));
	else if (strcmp(cmd, "dead-letters") == 0)
		ctl_print_dead_letters(json_object_get(reply, "dead_letters"));
	else if (strncmp(cmd, "dead-letters retry", 18) == 0)
		printf("%lld update(s) queued again\n",
		    (long long)ctl_int(reply, "requeued"));
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
		return ctl_already(cmd, reply) ? 0 :
		    strncmp(ctl_str(reply, "error"), "unknown command", 15) == 0 ?
		    CTL_EX_USAGE : 1;
	return ctl_retry_missed(cmd, reply) ? 1 : 0;
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
		{ "socket", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *path = NULL, *instance = NULL, *env;
	int ch, i;

	c->timeout = TIMEOUT_DEF;
	while ((ch = getopt_long(argc, argv, "hi:js:t:V", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'h': fputs(ctl_usage_text, stdout); exit(0);
		case 'i': instance = optarg; break;
		case 'j': c->json = 1; break;
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
	reply = ctl_request(&c);
	status = c.json ? ctl_print_json(c.cmd, reply) : ctl_print(c.cmd, reply);
	json_decref(reply);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "tgrunnerctl: standard output: %s\n",
		    strerror(errno));
		return 1;
	}
	return status;
}

/*
 * tgrunnerctl: talk to a running tgrunnerd over its control socket.
 * One command per connection; the daemon answers one JSON object, which is
 * printed as is (--json) or as a table for people.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#ifndef RUNSTATEDIR
#define RUNSTATEDIR "/run"
#endif
#define DEFAULT_SOCKET	RUNSTATEDIR "/tgrunner/control.sock"
#define REPLY_MAX	(4 * 1024 * 1024)

static __attribute__((noreturn)) void
usage(void)
{
	fprintf(stderr, "usage: tgrunnerctl [-j] [-s socket] command\n"
	    "commands: status, workers, drain, resume, reload,\n"
	    "          dead-letters, dead-letters retry ID|all\n"
	    "  -j, --json    print the daemon's JSON answer\n"
	    "  -s, --socket  control socket (default " DEFAULT_SOCKET ")\n");
	exit(2);
}

static int
strlcat_(char *dst, const char *src, size_t size)
{
	size_t n = strlen(dst);

	if (n + strlen(src) + 1 > size)
		return -1;
	strcpy(dst + n, src);
	return 0;
}

static json_t *
request(const char *path, const char *cmd)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char *buf;
	size_t len = 0;
	ssize_t n;
	json_t *reply;
	json_error_t jerr;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "tgrunnerctl: %s: path too long\n", path);
		exit(1);
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		fprintf(stderr, "tgrunnerctl: %s: %s (is tgrunnerd running "
		    "with control_socket set?)\n", path, strerror(errno));
		exit(1);
	}
	if (dprintf(fd, "%s\n", cmd) < 0 || (buf = malloc(REPLY_MAX)) == NULL)
		exit(1);
	while (len < REPLY_MAX - 1 &&
	    (n = read(fd, buf + len, REPLY_MAX - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	if ((reply = json_loads(buf, 0, &jerr)) == NULL) {
		fprintf(stderr, "tgrunnerctl: bad answer from the daemon: %s\n",
		    jerr.text);
		exit(1);
	}
	free(buf);
	return reply;
}

static json_int_t
geti(json_t *o, const char *path)
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

static const char *
gets_(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "-";
}

static void
print_workers(json_t *workers)
{
	json_t *w;
	size_t i;

	printf("%-6s %-8s %-9s %6s %6s %10s\n", "WORKER", "PID", "STATE",
	    "SLOTS", "BUSY", "SERVED");
	json_array_foreach(workers, i, w)
		printf("%-6lld %-8lld %-9s %6lld %6lld %10lld\n",
		    (long long)geti(w, "id"), (long long)geti(w, "pid"),
		    gets_(w, "state"), (long long)geti(w, "slots"),
		    (long long)geti(w, "busy"), (long long)geti(w, "served"));
}

static void
print_dead_letters(json_t *list)
{
	json_t *o;
	size_t i;

	printf("%-12s %-8s %-20s %s\n", "UPDATE", "ATTEMPTS", "WHEN", "REASON");
	json_array_foreach(list, i, o) {
		time_t t = (time_t)geti(o, "t");
		char when[32];

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
		printf("%-12lld %-8lld %-20s %s\n", (long long)geti(o, "update_id"),
		    (long long)geti(o, "attempts"), when, gets_(o, "reason"));
	}
}

static void
print_status(json_t *s)
{
	time_t last = (time_t)geti(s, "last_poll_ok");

	printf("tgrunnerd %s, %s, bot @%s, up %llds\n", gets_(s, "version"),
	    gets_(s, "state"), gets_(s, "bot"), (long long)geti(s, "uptime"));
	printf("polling:  %s, offset %lld, last success %llds ago\n",
	    gets_(s, "poll_state"), (long long)geti(s, "offset"),
	    last ? (long long)(time(NULL) - last) : -1LL);
	printf("backlog:  %lld queued (max %lld), %lld ready, %lld running, "
	    "%lld keys busy\n", (long long)geti(s, "backlog.queued"),
	    (long long)geti(s, "backlog.max_pending"),
	    (long long)geti(s, "backlog.ready"),
	    (long long)geti(s, "backlog.running"),
	    (long long)geti(s, "backlog.keys_busy"));
	printf("updates:  %lld fetched, %lld done, %lld retried, %lld dead, "
	    "%lld replayed, %lld duplicates dropped\n",
	    (long long)geti(s, "updates.fetched"),
	    (long long)geti(s, "updates.done"),
	    (long long)geti(s, "updates.retried"),
	    (long long)geti(s, "updates.dead"),
	    (long long)geti(s, "updates.replayed"),
	    (long long)geti(s, "updates.duplicates"));
	printf("journal:  %lld pending, %lld bytes\n",
	    (long long)geti(s, "journal.pending"),
	    (long long)geti(s, "journal.bytes"));
	printf("api:      %lld queued, %lld in flight, %lld calls, %lld "
	    "errors\n", (long long)geti(s, "api.queued"),
	    (long long)geti(s, "api.inflight"), (long long)geti(s, "api.calls"),
	    (long long)geti(s, "api.errors"));
	printf("outbox:   %lld replies owed (oldest %llds), %lld replayed "
	    "after the start\n", (long long)geti(s, "outbox.owed"),
	    (long long)geti(s, "outbox.oldest_age"),
	    (long long)geti(s, "outbox.replayed"));
	printf("pool:     %lld spawned, %lld crashed, %lld protocol errors, "
	    "%lld timeouts\n", (long long)geti(s, "pool.spawned"),
	    (long long)geti(s, "pool.crashed"),
	    (long long)geti(s, "pool.protocol_errors"),
	    (long long)geti(s, "pool.timeouts"));
	if (json_is_string(json_object_get(s, "problem")))
		printf("PROBLEM:  %s\n", gets_(s, "problem"));
	print_workers(json_object_get(s, "workers"));
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 }
	};
	const char *path = DEFAULT_SOCKET;
	char cmd[1024] = "";
	json_t *reply;
	int ch, i, json = 0, ok;

	while ((ch = getopt_long(argc, argv, "js:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j': json = 1; break;
		case 's': path = optarg; break;
		default: usage();
		}
	}
	if (optind == argc)
		usage();
	/* the words of the command, as one line */
	for (i = optind; i < argc; i++)
		if (strlcat_(cmd, argv[i], sizeof(cmd)) == -1 ||
		    (i + 1 < argc && strlcat_(cmd, " ", sizeof(cmd)) == -1))
			usage();
	reply = request(path, cmd);
	ok = json_is_true(json_object_get(reply, "ok"));
	if (json)
		json_dumpf(reply, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
	else if (!ok)
		fprintf(stderr, "tgrunnerctl: %s: %s\n", cmd,
		    gets_(reply, "error"));
	else if (strcmp(cmd, "status") == 0)
		print_status(reply);
	else if (strcmp(cmd, "workers") == 0)
		print_workers(json_object_get(reply, "workers"));
	else if (strcmp(cmd, "dead-letters") == 0)
		print_dead_letters(json_object_get(reply, "dead_letters"));
	else if (strncmp(cmd, "dead-letters retry", 18) == 0)
		printf("%lld update(s) queued again\n",
		    (long long)geti(reply, "requeued"));
	else
		printf("%s: ok\n", cmd);
	if (json)
		putchar('\n');
	json_decref(reply);
	return ok ? 0 : 1;
}

/* SPDX-License-Identifier: ISC */
/*
 * The control socket.  One request per connection: a line in, a JSON line
 * out, close.  Peers are local but still untrusted: lines are bounded and a
 * slow client cannot hold the loop.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>

#include "control.h"
#include "log.h"
#include "unixsock.h"
#include "xmalloc.h"

#define CONTROL_IDLE_SEC	10

struct control {
	struct evconnlistener	*listener;
	char			*path;
	const struct control_cmd *cmds;
	control_state_fn	 state;
	void			*arg;
};

static void
conn_close(struct bufferevent *bev, void *arg)
{
	bufferevent_free(bev);
}

static void
conn_event(struct bufferevent *bev, short what, void *arg)
{
	bufferevent_free(bev);
}

static void
conn_reply(struct bufferevent *bev, json_t *reply)
{
	char *text;

	text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
	json_decref(reply);
	if (text == NULL) {
		bufferevent_free(bev);
		return;
	}
	bufferevent_write(bev, text, strlen(text));
	bufferevent_write(bev, "\n", 1);
	free(text);
	/* close once the answer is out */
	bufferevent_setcb(bev, NULL, conn_close, conn_event, NULL);
	bufferevent_disable(bev, EV_READ);
}

static void
conn_read(struct bufferevent *bev, void *arg)
{
	struct control *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line, *args;
	size_t len;

	if ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) == NULL) {
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX)
			conn_reply(bev, json_pack("{s:b, s:s}", "ok", 0,
			    "error", "command line too long"));
		return;
	}
	if (len > CONTROL_LINE_MAX) {
		free(line);
		conn_reply(bev, json_pack("{s:b, s:s}", "ok", 0, "error",
		    "command line too long"));
		return;
	}
	args = line + strcspn(line, " \t");
	if (*args != '\0')
		*args++ = '\0';
	args += strspn(args, " \t");
	conn_reply(bev, control_run(c->cmds, c->state, c->arg, line, args));
	free(line);
}

/* "unknown command (status, workers, ...)": the table's names. */
static json_t *
control_unknown(const struct control_cmd *cmds)
{
	char	msg[512] = "unknown command (";
	size_t	i, n;

	for (i = 0; cmds[i].name != NULL; i++) {
		n = strlen(msg);
		snprintf(msg + n, sizeof(msg) - n, "%s%s", i > 0 ? ", " : "",
		    cmds[i].name);
	}
	n = strlen(msg);
	snprintf(msg + n, sizeof(msg) - n, ")");
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

json_t *
control_run(const struct control_cmd *cmds, control_state_fn state,
    void *arg, const char *cmd, const char *args)
{
	const struct control_cmd	*c;
	const char			*name;
	int				 s;

	for (c = cmds; c->name != NULL; c++)
		if (strcmp(c->name, cmd) == 0)
			break;
	if (c->name == NULL)
		return control_unknown(cmds);
	s = state(arg, &name);
	if (c->states != CONTROL_ANY && !(c->states & CONTROL_STATE(s)))
		return json_pack("{s:b, s:s, s:s}", "ok", 0, "error",
		    "not possible in this state", "state", name);
	return c->fn(arg, args);
}

static void
control_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct control *c = arg;
	struct bufferevent *bev;
	struct timeval idle = { CONTROL_IDLE_SEC, 0 };
	uid_t uid;
	pid_t pid;

	/* only our own user or root, whatever the file mode says */
	if (!unixsock_peer_allowed(fd, NULL, &uid, &pid)) {
		log_warnx("control: connection from a foreign user refused "
		    "(uid=%d pid=%d)", (int)uid, (int)pid);
		close(fd);
		return;
	}
	bev = bufferevent_socket_new(evconnlistener_get_base(l), fd,
	    BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return;
	}
	bufferevent_setcb(bev, conn_read, NULL, conn_event, c);
	bufferevent_set_timeouts(bev, &idle, &idle);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

struct control *
control_new(struct event_base *base, const char *path, mode_t mode,
    const struct control_cmd *cmds, control_state_fn state, void *arg)
{
	struct control *c;
	int fd;

	if ((fd = unixsock_listen(path, mode)) == -1)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	c->path = xstrdup(path);
	c->cmds = cmds;
	c->state = state;
	c->arg = arg;
	c->listener = evconnlistener_new(base, control_accept, c,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (c->listener == NULL) {
		close(fd);
		control_free(c);
		return NULL;
	}
	return c;
}

void
control_free(struct control *c)
{
	if (c == NULL)
		return;
	if (c->listener != NULL)
		evconnlistener_free(c->listener);
	unlink(c->path);
	free(c->path);
	free(c);
}

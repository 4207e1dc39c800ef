/* SPDX-License-Identifier: ISC */
/*
 * External workers (listener.h): the listen socket, and the connection
 * type of a peer that joined through it.
 */
#include "config.h"

#include <sys/socket.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>

#include "conf.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "unixsock.h"
#include "worker.h"
#include "xmalloc.h"

struct listener {
	struct pool		*pool;
	struct evconnlistener	*l;
	char			*path;
};

struct peer {
	struct wsock		 sock;
	struct event		*gone;		/* reported from the loop */
};

/* --- the connection type --------------------------------------------------- */

static int
peer_send(struct worker *w, const char *line, size_t len)
{
	struct peer *c = w->conn;

	return wsock_send(&c->sock, line, len);
}

/*
 * Whatever the signal, a peer can only be disconnected.  Its updates are
 * given back from the loop, never inside its own callbacks.
 */
static void
peer_close(struct worker *w, int sig)
{
	struct peer *c = w->conn;

	if (w->state == W_DEAD)
		return;
	log_info("worker=%d pid=%d: external worker disconnected (%d "
	    "update(s) in progress)", w->id, (int)w->pid, w->busy);
	wsock_close(&c->sock);
	worker_set_state(w, W_DEAD);
	event_active(c->gone, 0, 0);
}

static void
peer_gone(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;
	struct pool *p = w->pool;

	pool_worker_gone(w, "external worker disconnected", 0);
	pool_capacity(p);
}

static int
peer_alive(const struct worker *w)
{
	return w->state != W_DEAD;
}

static void
peer_describe(const struct worker *w, json_t *o)
{
	json_object_set_new(o, "external", json_true());
}

static void
peer_free(struct worker *w)
{
	struct peer *c = w->conn;

	wsock_close(&c->sock);
	event_free(c->gone);
	free(c);
}

/* a Unix socket: the peer runs on this host */
static const struct worker_ops peer_ops = {
	.kind = "external",
	.api_local = 1,
	.send = peer_send,
	.close = peer_close,
	.terminate = peer_close,
	.alive = peer_alive,
	.describe = peer_describe,
	.free = peer_free,
};

/* --- the socket ------------------------------------------------------------ */

static void
listener_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct listener	*ls = arg;
	struct peer	*c;
	struct worker	*w;
	uid_t		 uid;
	pid_t		 pid;

	if (!unixsock_peer_allowed(fd, pool_conf(ls->pool)->listen_allow,
	    &uid, &pid)) {
		log_warnx("listen: refused a worker uid=%d pid=%d (not in "
		    "listen_allow)", (int)uid, (int)pid);
		close(fd);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	if ((w = pool_worker_new(ls->pool, &peer_ops, c, pid)) == NULL) {
		free(c);	/* shutting down */
		close(fd);
		return;
	}
	if ((c->gone = event_new(pool_base(ls->pool), -1, 0, peer_gone,
	    w)) == NULL)
		fatalx(EXIT_NOMEM, "%s: event_new", __func__);
	wsock_open(&c->sock, w, fd);
	log_info("worker=%d pid=%d uid=%d: external worker connected", w->id,
	    (int)pid, (int)uid);
}

struct listener *
listener_new(struct pool *p, const char *path)
{
	struct listener	*ls;
	int		 fd;

	if ((fd = unixsock_listen(path, 0660)) == -1)
		return NULL;
	ls = xcalloc(1, sizeof(*ls));
	ls->pool = p;
	ls->path = xstrdup(path);
	ls->l = evconnlistener_new(pool_base(p), listener_accept, ls,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (ls->l == NULL) {
		log_errx("listen %s: cannot accept on it", path);
		close(fd);
		unlink(path);
		free(ls->path);
		free(ls);
		return NULL;
	}
	return ls;
}

void
listener_free(struct listener *ls)
{
	if (ls == NULL)
		return;
	evconnlistener_free(ls->l);
	unlink(ls->path);
	free(ls->path);
	free(ls);
}

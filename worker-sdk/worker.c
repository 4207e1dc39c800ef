/* SPDX-License-Identifier: ISC */
/*
 * libtgrunner-worker: framing, handshake, slot accounting and buffering for
 * the worker side of the tgrunner protocol.  Frames are decoded by the
 * shared codec (proto/proto.c) so the SDK refuses exactly what the daemon
 * would, and never sends what the daemon would refuse.
 *
 * The socket is always non-blocking; the blocking API (tgw_run) waits in
 * poll().  Decoded frames go through one queue so that tgw_call() can wait
 * for its result while keeping cancel/shutdown frames for later.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "tgrunner-worker.h"
#include "tgw-private.h"

#define TGW_INBUF_MIN		16384
#define TGW_OUTBUF_MAX		(64 * PROTO_MAX_FRAME)	/* unsent bytes */
#define TGW_WELCOME_TIMEOUT	60000			/* ms */

struct tgw_qframe {
	TAILQ_ENTRY(tgw_qframe)	 entry;
	struct frame		 f;
};
TAILQ_HEAD(tgw_queue, tgw_qframe);

struct tgw {
	int			 fd;
	int			 blocking;	/* tgw_run(): flush before return */
	int			 slots;
	int			 worker_id;
	json_t			*bot;
	int64_t			 max_frame;

	char			*in;
	size_t			 inoff, inlen, incap;
	char			*out;
	size_t			 outoff, outlen, outcap;
	struct tgw_queue	 queue;

	int64_t			*held;		/* ids of unanswered updates */
	int			 nheld;
	int64_t			 next_ref;
	int			 handshake;	/* read no byte past welcome */
	int			 eof;		/* daemon closed its side */
	int			 broken;	/* read or protocol error */
	int			 shutdown;
	char			 err[256];
	char			*api_root;	/* the Bot API endpoint, or NULL */
	char			*api_token;
};

struct tgw_ctx {
	struct tgw		*w;
	const struct frame	*f;
	json_t			*calls;
	char			*error;
	int			 cancelled;
};

static int
tgw_vseterr(struct tgw *w, const char *fmt, va_list ap)
{
	vsnprintf(w->err, sizeof(w->err), fmt, ap);
	fprintf(stderr, "tgrunner-worker: %s\n", w->err);
	return -1;
}

static int
tgw_seterr(struct tgw *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tgw_vseterr(w, fmt, ap);
	va_end(ap);
	return -1;
}

int
tgwi_seterr(struct tgw *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tgw_vseterr(w, fmt, ap);
	va_end(ap);
	return -1;
}

static int64_t
tgw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- connection ------------------------------------------------------------ */

static int
tgw_connect_path(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "tgrunner-worker: socket path too long\n");
		return -1;
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		fprintf(stderr, "tgrunner-worker: socket: %s\n",
		    strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		fprintf(stderr, "tgrunner-worker: connect %s: %s\n", path,
		    strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int
tgw_env_fd(void)
{
	const char *s = getenv("TGRUNNER_FD");
	char *end;
	long v;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > INT_MAX) {
		fprintf(stderr, "tgrunner-worker: bad TGRUNNER_FD \"%s\"\n", s);
		return -2;
	}
	return (int)v;
}

/* The fd to talk on: see "Where the connection comes from" in the header. */
static int
tgw_resolve_fd(const struct tgw_config *cfg)
{
	const char *path;
	int fd;

	if (cfg != NULL && cfg->fd > 0)
		return cfg->fd;
	if ((fd = tgw_env_fd()) != -1)
		return fd < 0 ? -1 : fd;
	path = cfg != NULL ? cfg->socket_path : NULL;
	if (path == NULL)
		path = getenv("TGRUNNER_SOCKET");
	if (path == NULL || *path == '\0') {
		fprintf(stderr, "tgrunner-worker: no connection: neither "
		    "TGRUNNER_FD nor TGRUNNER_SOCKET is set\n");
		return -1;
	}
	return tgw_connect_path(path);
}

/* Non-blocking, and not inherited by what the handler may exec. */
static int
tgw_setup_fd(int fd)
{
	int fl;

	if ((fl = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1 ||
	    (fl = fcntl(fd, F_GETFD)) == -1 ||
	    fcntl(fd, F_SETFD, fl | FD_CLOEXEC) == -1) {
		fprintf(stderr, "tgrunner-worker: fd %d: %s\n", fd,
		    strerror(errno));
		return -1;
	}
	return 0;
}

static struct tgw *
tgw_new(int fd, int slots)
{
	struct tgw *w;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	w->fd = fd;
	w->slots = slots;
	w->max_frame = PROTO_MAX_FRAME;
	TAILQ_INIT(&w->queue);
	if ((w->held = calloc(slots, sizeof(*w->held))) == NULL) {
		free(w);
		return NULL;
	}
	return w;
}

void
tgw_close(struct tgw *w)
{
	struct tgw_qframe *q;

	if (w == NULL)
		return;
	while ((q = TAILQ_FIRST(&w->queue)) != NULL) {
		TAILQ_REMOVE(&w->queue, q, entry);
		frame_clear(&q->f);
		free(q);
	}
	if (w->fd >= 0)
		close(w->fd);
	json_decref(w->bot);
	free(w->api_root);
	if (w->api_token != NULL)
		explicit_bzero(w->api_token, strlen(w->api_token));
	free(w->api_token);
	free(w->held);
	free(w->in);
	free(w->out);
	free(w);
}

/* ---- output ---------------------------------------------------------------- */

int
tgw_flush(struct tgw *w)
{
	ssize_t n;

	while (w->outoff < w->outlen) {
		n = send(w->fd, w->out + w->outoff, w->outlen - w->outoff,
		    MSG_NOSIGNAL);
		if (n == -1 && errno == ENOTSOCK)
			n = write(w->fd, w->out + w->outoff,
			    w->outlen - w->outoff);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 1;
		if (n == -1)
			return tgw_seterr(w, "write: %s", strerror(errno));
		w->outoff += n;
	}
	w->outoff = w->outlen = 0;
	return 0;
}

/* Wait until everything is written (blocking style). */
static int
tgw_flush_all(struct tgw *w)
{
	struct pollfd pfd = { w->fd, POLLOUT, 0 };
	int r;

	while ((r = tgw_flush(w)) == 1)
		if (poll(&pfd, 1, -1) == -1 && errno != EINTR)
			return tgw_seterr(w, "poll: %s", strerror(errno));
	return r;
}

static int
tgw_append(struct tgw *w, const char *buf, size_t len)
{
	size_t cap;
	char *p;

	if (w->outoff > 0 && w->outoff == w->outlen)
		w->outoff = w->outlen = 0;
	if (w->outlen + len > TGW_OUTBUF_MAX)
		return tgw_seterr(w, "output buffer full, daemon not reading");
	if (w->outlen + len > w->outcap) {
		cap = w->outcap ? w->outcap : TGW_INBUF_MIN;
		while (cap < w->outlen + len)
			cap *= 2;
		if ((p = realloc(w->out, cap)) == NULL)
			return tgw_seterr(w, "out of memory");
		w->out = p;
		w->outcap = cap;
	}
	memcpy(w->out + w->outlen, buf, len);
	w->outlen += len;
	return 0;
}

/* Encode, queue and write as far as possible (all of it if blocking). */
static int
tgw_send(struct tgw *w, const struct frame *f)
{
	size_t len;
	char *line;
	int r;

	/* EMSGSIZE: nothing was sent, the caller may answer otherwise */
	if ((line = proto_encode(f, &len)) == NULL) {
		tgw_seterr(w, "cannot encode %s frame (invalid or larger than "
		    "%d bytes)", proto_type_name(f->type), PROTO_MAX_FRAME);
		errno = EMSGSIZE;
		return -1;
	}
	if ((int64_t)len > w->max_frame) {
		free(line);
		tgw_seterr(w, "%s frame of %zu bytes, more than the daemon's "
		    "max_frame %lld", proto_type_name(f->type), len,
		    (long long)w->max_frame);
		errno = EMSGSIZE;
		return -1;
	}
	r = tgw_append(w, line, len);
	free(line);
	if (r == -1)
		return -1;
	r = w->blocking ? tgw_flush_all(w) : tgw_flush(w);
	return r == -1 ? -1 : 0;
}

int
tgw_want_write(const struct tgw *w)
{
	return w->outoff < w->outlen;
}

/* ---- input ----------------------------------------------------------------- */

static int
tgw_held_find(const struct tgw *w, int64_t id)
{
	int i;

	for (i = 0; i < w->nheld; i++)
		if (w->held[i] == id)
			return i;
	return -1;
}

static int
tgw_held_take(struct tgw *w, int64_t id)
{
	int i;

	if ((i = tgw_held_find(w, id)) == -1)
		return tgw_seterr(w, "update %lld is not held by this worker",
		    (long long)id);
	w->held[i] = w->held[--w->nheld];
	return 0;
}

/* Bookkeeping at arrival, so both styles see the same state. */
static int
tgw_accept(struct tgw *w, const struct frame *f)
{
	switch (f->type) {
	case FRAME_UPDATE:
		if (tgw_held_find(w, f->u.update.id) != -1)
			return tgw_seterr(w, "update %lld sent twice",
			    (long long)f->u.update.id);
		if (w->nheld >= w->slots)
			return tgw_seterr(w, "daemon sent more updates than "
			    "slots (%d)", w->slots);
		w->held[w->nheld++] = f->u.update.id;
		return 0;
	case FRAME_SHUTDOWN:
		w->shutdown = 1;
		return 0;
	case FRAME_CANCEL:
	case FRAME_RESULT:
		return 0;
	case FRAME_WELCOME:
		if (w->bot == NULL)
			return 0;
		return tgw_seterr(w, "second welcome");
	default:
		return tgw_seterr(w, "unexpected %s frame",
		    proto_type_name(f->type));
	}
}

/*
 * A well-formed frame of a type this library does not know: a newer daemon
 * talking (PROTOCOL.md section 8).  Ignored once the session is up.
 */
static int
tgw_unknown_type(const char *line, size_t len)
{
	json_t *root;
	const char *type;
	int r;

	if ((root = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL)) ==
	    NULL)
		return 0;
	type = json_string_value(json_object_get(root, "type"));
	r = type != NULL && proto_type_lookup(type) == FRAME_NONE;
	json_decref(root);
	return r;
}

static int
tgw_enqueue_line(struct tgw *w, const char *line, size_t len)
{
	struct tgw_qframe *q;
	char reason[160];

	if ((q = calloc(1, sizeof(*q))) == NULL)
		return tgw_seterr(w, "out of memory");
	if (proto_decode(line, len, PROTO_D2W, &q->f, reason,
	    sizeof(reason)) == -1) {
		free(q);
		if (!w->handshake && tgw_unknown_type(line, len))
			return 0;
		return tgw_seterr(w, "bad frame from daemon: %s", reason);
	}
	if (tgw_accept(w, &q->f) == -1) {
		frame_clear(&q->f);
		free(q);
		return -1;
	}
	TAILQ_INSERT_TAIL(&w->queue, q, entry);
	return 0;
}

/* Decode every complete line in the input buffer. */
static int
tgw_split(struct tgw *w)
{
	char *start, *nl;
	size_t len;

	for (;;) {
		start = w->in + w->inoff;
		nl = memchr(start, '\n', w->inlen - w->inoff);
		if (nl == NULL)
			break;
		len = nl - start;
		w->inoff += len + 1;
		if (tgw_enqueue_line(w, start, len) == -1)
			return -1;
	}
	if (w->inlen - w->inoff >= PROTO_MAX_FRAME)
		return tgw_seterr(w, "frame from daemon longer than %d bytes",
		    PROTO_MAX_FRAME);
	return 0;
}

/* Make room for at least one more read. */
static int
tgw_inroom(struct tgw *w)
{
	size_t cap;
	char *p;

	if (w->inoff > 0) {
		memmove(w->in, w->in + w->inoff, w->inlen - w->inoff);
		w->inlen -= w->inoff;
		w->inoff = 0;
	}
	if (w->inlen < w->incap)
		return 0;
	cap = w->incap ? w->incap * 2 : TGW_INBUF_MIN;
	if (cap > PROTO_MAX_FRAME)
		cap = PROTO_MAX_FRAME;
	if ((p = realloc(w->in, cap)) == NULL)
		return tgw_seterr(w, "out of memory");
	w->in = p;
	w->incap = cap;
	return 0;
}

/*
 * During the handshake, read only up to the end of the first line: bytes
 * after it would sit in our buffer while the application waits in poll()
 * for a readable socket that never comes.
 */
static ssize_t
tgw_read_some(struct tgw *w, char *buf, size_t room)
{
	ssize_t n;
	char *nl;

	if (!w->handshake)
		return read(w->fd, buf, room);
	n = recv(w->fd, buf, room, MSG_PEEK);
	if (n == -1 && errno == ENOTSOCK)
		return read(w->fd, buf, 1);
	if (n <= 0)
		return n;
	if ((nl = memchr(buf, '\n', n)) != NULL)
		n = nl - buf + 1;
	return read(w->fd, buf, n);
}

/*
 * Read until the socket would block, queueing frames.  Returns 0, or -1
 * once the connection is broken; w->eof tells an orderly end.
 */
static int
tgw_read(struct tgw *w)
{
	ssize_t n;

	if (w->broken)
		return -1;
	while (!w->eof) {
		if (tgw_inroom(w) == -1)
			goto broken;
		if (w->handshake && !TAILQ_EMPTY(&w->queue))
			return 0;
		n = tgw_read_some(w, w->in + w->inlen, w->incap - w->inlen);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n == -1) {
			tgw_seterr(w, "read: %s", strerror(errno));
			goto broken;
		}
		if (n == 0) {
			w->eof = 1;
			if (w->inlen > w->inoff) {
				tgw_seterr(w, "daemon closed mid-frame");
				goto broken;
			}
			return 0;
		}
		w->inlen += n;
		if (tgw_split(w) == -1)
			goto broken;
	}
	return 0;
broken:
	w->broken = 1;
	return -1;
}

/* Block until input arrives (or timeout_ms, -1 = forever), then read it. */
static int
tgw_wait(struct tgw *w, int timeout_ms)
{
	struct pollfd pfd = { w->fd, POLLIN, 0 };

	if (w->eof || w->broken)
		return w->broken ? -1 : 0;
	if (poll(&pfd, 1, timeout_ms) == -1 && errno != EINTR)
		return tgw_seterr(w, "poll: %s", strerror(errno));
	return tgw_read(w);
}

static struct tgw_qframe *
tgw_pop(struct tgw *w)
{
	struct tgw_qframe *q;

	if ((q = TAILQ_FIRST(&w->queue)) != NULL)
		TAILQ_REMOVE(&w->queue, q, entry);
	return q;
}

static void
tgw_qfree(struct tgw_qframe *q)
{
	frame_clear(&q->f);
	free(q);
}

/* ---- handshake ------------------------------------------------------------- */

static int
tgw_hello(struct tgw *w, const char *name)
{
	struct frame f;

	memset(&f, 0, sizeof(f));
	f.type = FRAME_HELLO;
	f.u.hello.protocol = PROTO_VERSION;
	f.u.hello.slots = w->slots;
	f.u.hello.name = name;
	if (tgw_send(w, &f) == -1)
		return -1;
	return tgw_flush_all(w);
}

/* The Bot API endpoint: welcome's, else the environment's (spawned). */
static int
tgw_api_setup(struct tgw *w, const struct frame *f)
{
	const char *root = f->u.welcome.api_root, *token = f->u.welcome.api_token;

	if (root == NULL || token == NULL) {
		root = getenv("TGRUNNER_API_ROOT");
		token = getenv("TGRUNNER_API_TOKEN");
	}
	if (root == NULL || token == NULL || *root == '\0' || *token == '\0')
		return 0;
	if ((w->api_root = strdup(root)) == NULL ||
	    (w->api_token = strdup(token)) == NULL)
		return -1;
	return 0;
}

static int
tgw_welcome(struct tgw *w)
{
	int64_t until = tgw_now_ms() + TGW_WELCOME_TIMEOUT;
	struct tgw_qframe *q;

	while (TAILQ_EMPTY(&w->queue)) {
		if (w->eof)
			return tgw_seterr(w, "daemon closed the connection "
			    "before welcome (protocol %d unsupported?)",
			    PROTO_VERSION);
		if (tgw_now_ms() >= until)
			return tgw_seterr(w, "no welcome from the daemon");
		if (tgw_wait(w, (int)(until - tgw_now_ms())) == -1)
			return -1;
	}
	q = tgw_pop(w);
	if (q->f.type != FRAME_WELCOME || q->f.u.welcome.protocol !=
	    PROTO_VERSION) {
		tgw_qfree(q);
		return tgw_seterr(w, "expected welcome for protocol %d",
		    PROTO_VERSION);
	}
	w->worker_id = q->f.u.welcome.worker_id;
	w->bot = json_incref(q->f.u.welcome.bot);
	w->max_frame = q->f.u.welcome.max_frame;
	if (tgw_api_setup(w, &q->f) == -1) {
		tgw_qfree(q);
		return tgw_seterr(w, "out of memory");
	}
	tgw_qfree(q);
	return 0;
}

static struct tgw *
tgw_open_slots(const struct tgw_config *cfg, int slots, int blocking)
{
	struct tgw *w;
	int fd;

	if (slots < 1 || slots > PROTO_MAX_SLOTS) {
		fprintf(stderr, "tgrunner-worker: slots must be 1..%d\n",
		    PROTO_MAX_SLOTS);
		return NULL;
	}
	if ((fd = tgw_resolve_fd(cfg)) == -1 || tgw_setup_fd(fd) == -1)
		return NULL;
	if ((w = tgw_new(fd, slots)) == NULL) {
		fprintf(stderr, "tgrunner-worker: out of memory\n");
		close(fd);
		return NULL;
	}
	w->blocking = blocking;
	w->handshake = 1;
	if (tgw_hello(w, cfg ? cfg->name : NULL) == -1 ||
	    tgw_welcome(w) == -1) {
		tgw_close(w);
		return NULL;
	}
	w->handshake = 0;
	return w;
}

struct tgw *
tgw_open(const struct tgw_config *cfg)
{
	int slots = cfg != NULL && cfg->slots != 0 ? cfg->slots : 1;

	return tgw_open_slots(cfg, slots, 0);
}

/* ---- accessors --------------------------------------------------------------- */

int
tgw_fd(const struct tgw *w)
{
	return w->fd;
}

int
tgw_worker_id(const struct tgw *w)
{
	return w->worker_id;
}

const json_t *
tgw_bot(const struct tgw *w)
{
	return w->bot;
}

const char *
tgw_api_root(const struct tgw *w)
{
	return w->api_root;
}

const char *
tgw_api_token(const struct tgw *w)
{
	return w->api_token;
}

int
tgw_slots(const struct tgw *w)
{
	return w->slots;
}

int
tgw_busy(const struct tgw *w)
{
	return w->nheld;
}

int
tgw_shutting_down(const struct tgw *w)
{
	return w->shutdown;
}

const char *
tgw_error(const struct tgw *w)
{
	return w->err;
}

/* ---- answers ----------------------------------------------------------------- */

int
tgw_done(struct tgw *w, int64_t id, json_t *calls)
{
	struct frame f;
	int r;

	if (tgw_held_find(w, id) == -1) {
		json_decref(calls);
		return tgw_held_take(w, id);	/* says why */
	}
	memset(&f, 0, sizeof(f));
	f.type = FRAME_DONE;
	f.u.done.id = id;
	f.u.done.calls = calls;
	r = tgw_send(w, &f);
	json_decref(calls);
	if (r == 0)
		tgw_held_take(w, id);
	return r;
}

int
tgw_fail(struct tgw *w, int64_t id, const char *error, int retry)
{
	struct frame f;

	if (tgw_held_find(w, id) == -1)
		return tgw_held_take(w, id);	/* says why */
	memset(&f, 0, sizeof(f));
	f.type = FRAME_FAIL;
	f.u.fail.id = id;
	f.u.fail.error = error != NULL ? error : "failed";
	f.u.fail.retry = retry != 0;
	if (tgw_send(w, &f) == -1)
		return -1;
	return tgw_held_take(w, id);
}

int
tgw_send_call(struct tgw *w, int64_t id, json_t *ref, const char *method,
    json_t *params)
{
	struct frame f;
	int r;

	memset(&f, 0, sizeof(f));
	f.type = FRAME_CALL;
	f.u.call.id = id;
	f.u.call.ref = ref;
	f.u.call.method = method;
	f.u.call.params = params;
	r = tgw_send(w, &f);
	json_decref(ref);
	json_decref(params);
	return r;
}

/* ---- non-blocking style ------------------------------------------------------ */

static int
tgw_event_of(const struct frame *f, struct tgw_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	switch (f->type) {
	case FRAME_UPDATE:
		ev->type = TGW_EV_UPDATE;
		ev->id = f->u.update.id;
		ev->attempt = f->u.update.attempt;
		ev->deadline = f->u.update.deadline;
		ev->keys = f->u.update.keys;
		ev->update = f->u.update.update;
		return 0;
	case FRAME_CANCEL:
		ev->type = TGW_EV_CANCEL;
		ev->id = f->u.cancel.id;
		ev->reason = f->u.cancel.reason;
		return 0;
	case FRAME_RESULT:
		ev->type = TGW_EV_RESULT;
		ev->ref = f->u.result.ref;
		ev->ok = f->u.result.ok;
		ev->result = f->u.result.result;
		ev->error_code = f->u.result.error_code;
		ev->description = f->u.result.description;
		ev->parameters = f->u.result.parameters;
		ev->retry_after = f->u.result.retry_after;
		return 0;
	case FRAME_SHUTDOWN:
		ev->type = TGW_EV_SHUTDOWN;
		ev->deadline = f->u.shutdown.deadline;
		return 0;
	default:
		return -1;
	}
}

/*
 * A cancel for an update already answered crossed our answer on the wire:
 * it is not news to the application, drop it.
 */
static int
tgw_stale(const struct tgw *w, const struct frame *f)
{
	return f->type == FRAME_CANCEL &&
	    tgw_held_find(w, f->u.cancel.id) == -1;
}

int
tgw_process(struct tgw *w, tgw_event_fn cb, void *arg)
{
	struct tgw_qframe *q;
	struct tgw_event ev;
	int r;

	r = tgw_read(w);
	while ((q = tgw_pop(w)) != NULL) {
		if (!tgw_stale(w, &q->f) && tgw_event_of(&q->f, &ev) == 0)
			cb(w, &ev, arg);
		tgw_qfree(q);
	}
	if (r == -1)
		return -1;
	return w->eof ? 1 : 0;
}

/* ---- blocking style ---------------------------------------------------------- */

int64_t
tgw_ctx_id(const struct tgw_ctx *ctx)
{
	return ctx->f->u.update.id;
}

int
tgw_ctx_attempt(const struct tgw_ctx *ctx)
{
	return ctx->f->u.update.attempt;
}

int64_t
tgw_ctx_deadline(const struct tgw_ctx *ctx)
{
	return ctx->f->u.update.deadline;
}

const json_t *
tgw_ctx_keys(const struct tgw_ctx *ctx)
{
	return ctx->f->u.update.keys;
}

struct tgw *
tgw_ctx_conn(struct tgw_ctx *ctx)
{
	return ctx->w;
}

int
tgw_ctx_add_call(struct tgw_ctx *ctx, const char *method, json_t *params)
{
	json_t *c;

	if (ctx->calls == NULL && (ctx->calls = json_array()) == NULL) {
		json_decref(params);
		return -1;
	}
	c = params != NULL ? json_pack("{s:s, s:o}", "method", method,
	    "params", params) : json_pack("{s:s}", "method", method);
	if (c == NULL || json_array_append_new(ctx->calls, c) == -1)
		return tgw_seterr(ctx->w, "cannot attach call %s", method);
	return 0;
}

int
tgw_reply_text(struct tgw_ctx *ctx, const char *text)
{
	int64_t chat;

	if (tgw_update_chat_id(ctx->f->u.update.update, &chat) == -1)
		return tgw_seterr(ctx->w, "update %lld has no chat to reply "
		    "to", (long long)tgw_ctx_id(ctx));
	return tgw_ctx_add_call(ctx, "sendMessage",
	    json_pack("{s:I, s:s}", "chat_id", (json_int_t)chat, "text",
	    text != NULL ? text : ""));
}

void
tgw_ctx_set_error(struct tgw_ctx *ctx, const char *error)
{
	free(ctx->error);
	ctx->error = error != NULL ? strdup(error) : NULL;
}

/* Take a queued cancel of this update, if any. */
static void
tgw_ctx_scan_cancel(struct tgw_ctx *ctx)
{
	struct tgw_qframe *q, *next;

	for (q = TAILQ_FIRST(&ctx->w->queue); q != NULL; q = next) {
		next = TAILQ_NEXT(q, entry);
		if (q->f.type == FRAME_CANCEL &&
		    q->f.u.cancel.id == tgw_ctx_id(ctx)) {
			TAILQ_REMOVE(&ctx->w->queue, q, entry);
			tgw_qfree(q);
			ctx->cancelled = 1;
		}
	}
}

int
tgw_cancelled(struct tgw_ctx *ctx)
{
	if (!ctx->cancelled && tgw_read(ctx->w) == -1)
		ctx->cancelled = 1;
	if (ctx->w->eof)
		ctx->cancelled = 1;
	tgw_ctx_scan_cancel(ctx);
	return ctx->cancelled;
}

int
tgw_sleep(struct tgw_ctx *ctx, int ms)
{
	struct pollfd pfd = { ctx->w->fd, POLLIN, 0 };
	int64_t until = tgw_now_ms() + ms;
	int64_t left;

	while (!tgw_cancelled(ctx)) {
		if ((left = until - tgw_now_ms()) <= 0)
			return 0;
		if (poll(&pfd, 1, (int)left) == -1 && errno != EINTR)
			return tgw_seterr(ctx->w, "poll: %s", strerror(errno));
	}
	return 1;
}

static int
tgw_ref_eq(const json_t *a, int64_t ref)
{
	return json_is_integer(a) && json_integer_value(a) == ref;
}

/* The result of call ref, removed from the queue. */
static struct tgw_qframe *
tgw_take_result(struct tgw *w, int64_t ref)
{
	struct tgw_qframe *q;

	TAILQ_FOREACH(q, &w->queue, entry)
		if (q->f.type == FRAME_RESULT && tgw_ref_eq(q->f.u.result.ref,
		    ref)) {
			TAILQ_REMOVE(&w->queue, q, entry);
			return q;
		}
	return NULL;
}

static int
tgw_call_outcome(const struct frame *f, json_t **result)
{
	const json_t *p = f->u.result.parameters;

	if (f->u.result.ok) {
		if (result != NULL)
			*result = json_incref(f->u.result.result);
		return 0;
	}
	if (result != NULL)
		*result = json_pack("{s:i, s:s, s:O?, s:i}", "error_code",
		    f->u.result.error_code, "description",
		    f->u.result.description, "parameters", (json_t *)p,
		    "retry_after", f->u.result.retry_after);
	/* A Bot API error code is positive; keep the contract if not. */
	return f->u.result.error_code > 0 ? f->u.result.error_code : 500;
}

int
tgw_call(struct tgw_ctx *ctx, const char *method, json_t *params,
    json_t **result)
{
	struct tgw *w = ctx->w;
	struct tgw_qframe *q;
	int64_t ref = ++w->next_ref;
	int r;

	if (result != NULL)
		*result = NULL;
	if (tgw_send_call(w, tgw_ctx_id(ctx), json_integer(ref), method,
	    params) == -1)
		return -1;
	while ((q = tgw_take_result(w, ref)) == NULL) {
		if (w->eof)
			return tgw_seterr(w, "daemon closed the connection "
			    "before the result of %s", method);
		if (tgw_wait(w, -1) == -1)
			return -1;
	}
	tgw_ctx_scan_cancel(ctx);
	r = tgw_call_outcome(&q->f, result);
	tgw_qfree(q);
	return r;
}

static int
tgw_answer(struct tgw_ctx *ctx, enum tgw_status st)
{
	struct tgw *w = ctx->w;
	int64_t id = tgw_ctx_id(ctx);
	const char *error = ctx->error ? ctx->error : "handler failed";
	json_t *calls = ctx->calls;

	ctx->calls = NULL;
	if (st == TGW_DONE) {
		if (tgw_done(w, id, calls) == 0)
			return 0;
		if (w->broken || w->eof || tgw_held_find(w, id) == -1)
			return -1;
		/* The reply could not be encoded: say so instead of hanging. */
		error = "done frame could not be encoded (too large?)";
		st = TGW_FAIL;
	}
	return tgw_fail(w, id, error, st == TGW_RETRY);
}

static int
tgw_run_update(struct tgw *w, struct tgw_qframe *q, tgw_handler_fn handler,
    void *arg)
{
	struct tgw_ctx ctx;
	enum tgw_status st;
	int r;

	memset(&ctx, 0, sizeof(ctx));
	ctx.w = w;
	ctx.f = &q->f;
	st = handler(&ctx, q->f.u.update.update, arg);
	r = tgw_answer(&ctx, st);
	json_decref(ctx.calls);
	free(ctx.error);
	return r;
}

/* Next queued frame, waiting for one; NULL at the end or on error. */
static struct tgw_qframe *
tgw_next(struct tgw *w)
{
	while (TAILQ_EMPTY(&w->queue)) {
		if (w->eof || w->broken || (w->shutdown && w->nheld == 0))
			return NULL;
		if (tgw_wait(w, -1) == -1)
			return NULL;
	}
	return tgw_pop(w);
}

int
tgw_run(const struct tgw_config *cfg, tgw_handler_fn handler, void *arg)
{
	struct tgw_qframe *q;
	struct tgw *w;
	int r = 0;

	if ((w = tgw_open_slots(cfg, 1, 1)) == NULL)
		return -1;
	while (r == 0 && (q = tgw_next(w)) != NULL) {
		/* Stray cancels and results are for things already over. */
		if (q->f.type == FRAME_UPDATE)
			r = tgw_run_update(w, q, handler, arg);
		tgw_qfree(q);
	}
	if (w->broken)
		r = -1;
	tgw_close(w);
	return r;
}

/* ---- helpers on Update objects ----------------------------------------------- */

const char *
tgw_update_type(const json_t *update)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)update, key, v)
		if (strcmp(key, "update_id") != 0)
			return key;
	return NULL;
}

static const json_t *
tgw_update_body(const json_t *update)
{
	const char *type = tgw_update_type(update);

	if (type == NULL)
		return NULL;
	return json_object_get(update, type);
}

/*
 * Every chat-bearing update type has either a "chat" member (message,
 * chat_member, chat_join_request, message_reaction, chat_boost...) or a
 * "message" with one (callback_query); new types most likely will too.
 */
int
tgw_update_chat_id(const json_t *update, int64_t *chat_id)
{
	const json_t *body = tgw_update_body(update);
	const json_t *chat, *id;

	if (!json_is_object(body))
		return -1;
	chat = json_object_get(body, "chat");
	if (chat == NULL)
		chat = json_object_get(json_object_get(body, "message"),
		    "chat");
	id = json_object_get(chat, "id");
	if (!json_is_integer(id))
		return -1;
	*chat_id = json_integer_value(id);
	return 0;
}

const char *
tgw_update_text(const json_t *update)
{
	const json_t *body = tgw_update_body(update);
	const char *s;

	if (!json_is_object(body))
		return NULL;
	if ((s = json_string_value(json_object_get(body, "text"))) != NULL)
		return s;
	return json_string_value(json_object_get(body, "caption"));
}

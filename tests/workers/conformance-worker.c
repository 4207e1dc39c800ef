/* SPDX-License-Identifier: ISC */
/*
 * conformance-worker: the C SDK's worker for tgrunner-conformance
 * (tests/conformance/).  It implements the shared text commands on the
 * SDK's non-blocking interface, so it holds TG_SLOTS updates at once:
 *
 *   echo <s>     done with sendMessage {chat_id, text: <s>}
 *   call         call getMe, then done with sendMessage "me:<username>"
 *                ("error:<error_code>" if the call failed)
 *   sleep <ms>   done after ms without blocking the other slots; a cancel
 *                answers fail {"cancelled", retry: true} at once
 *   fail         fail {"asked to fail", retry: false}
 *   raise        the handler returns an error: fail {retry: true}
 *   other        done without calls
 *
 *   TG_SLOTS=N   slots announced in hello, 1..1024 (1)
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tgrunner-worker.h"

#define CW_MAX_SLOTS	1024

enum cw_kind {
	CW_FREE = 0,
	CW_SLEEP,		/* until: when to answer done */
	CW_CALL			/* waiting for the result of getMe */
};

struct cw_job {
	enum cw_kind	 kind;
	int64_t		 id;
	int64_t		 chat;
	int64_t		 until;		/* CLOCK_MONOTONIC ms */
};

struct cw {
	struct tgw	*w;
	struct cw_job	*jobs;		/* one per slot */
	int		 slots;
	int		 broken;	/* an answer could not be sent */
};

static int64_t
cw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
cw_env_slots(void)
{
	const char *s = getenv("TG_SLOTS");
	char *end;
	long v;

	if (s == NULL || *s == '\0')
		return 1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > CW_MAX_SLOTS) {
		fprintf(stderr, "conformance-worker: TG_SLOTS must be "
		    "1..%d\n", CW_MAX_SLOTS);
		exit(2);
	}
	return (int)v;
}

static struct cw_job *
cw_job_find(struct cw *c, int64_t id)
{
	int i;

	for (i = 0; i < c->slots; i++)
		if (c->jobs[i].kind != CW_FREE && c->jobs[i].id == id)
			return &c->jobs[i];
	return NULL;
}

/* A free job; the SDK never hands out more updates than slots. */
static struct cw_job *
cw_job_new(struct cw *c, enum cw_kind kind, int64_t id, int64_t chat)
{
	struct cw_job *j = NULL;
	int i;

	for (i = 0; i < c->slots && j == NULL; i++)
		if (c->jobs[i].kind == CW_FREE)
			j = &c->jobs[i];
	if (j == NULL)
		return NULL;
	j->kind = kind;
	j->id = id;
	j->chat = chat;
	j->until = 0;
	return j;
}

static void
cw_check(struct cw *c, int r, const char *what)
{
	if (r == -1) {
		fprintf(stderr, "conformance-worker: %s: %s\n", what,
		    tgw_error(c->w));
		c->broken = 1;
	}
}

/*
 * done with one sendMessage to chat; a reply that does not fit in the
 * daemon's max_frame is a fail that asks for no retry (PROTOCOL.md
 * section 5): another attempt would build the same reply.
 */
static void
cw_reply(struct cw *c, int64_t id, int64_t chat, const char *text)
{
	json_t *calls;

	calls = json_pack("[{s:s, s:{s:I, s:s}}]", "method", "sendMessage",
	    "params", "chat_id", (json_int_t)chat, "text", text);
	if (calls == NULL) {
		cw_check(c, tgw_fail(c->w, id, "cannot build the reply", 1),
		    "fail");
		return;
	}
	errno = 0;
	if (tgw_done(c->w, id, calls) == 0)
		return;
	if (errno == EMSGSIZE)
		cw_check(c, tgw_fail(c->w, id, tgw_error(c->w), 0), "fail");
	else
		cw_check(c, -1, "done");
}

static int
cw_sleep_ms(const char *arg, int64_t *ms)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < 0 ||
	    v > INT_MAX)
		return -1;
	*ms = v;
	return 0;
}

/*
 * The handler of one update.  It answers itself, or starts a job that
 * answers later; -1 is "the handler raised", which the caller turns into
 * fail {retry: true} as every SDK does for an exception.
 */
static int
cw_handle(struct cw *c, const struct tgw_event *ev)
{
	const char *text = tgw_update_text(ev->update);
	struct cw_job *j;
	int64_t chat = 0, ms;

	if (text == NULL || tgw_update_chat_id(ev->update, &chat) == -1)
		text = "";
	if (strncmp(text, "echo ", 5) == 0) {
		cw_reply(c, ev->id, chat, text + 5);
	} else if (strcmp(text, "call") == 0) {
		if ((j = cw_job_new(c, CW_CALL, ev->id, chat)) == NULL)
			return -1;
		cw_check(c, tgw_send_call(c->w, ev->id, json_integer(ev->id),
		    "getMe", json_object()), "call");
	} else if (strncmp(text, "sleep ", 6) == 0) {
		if (cw_sleep_ms(text + 6, &ms) == -1 ||
		    (j = cw_job_new(c, CW_SLEEP, ev->id, chat)) == NULL)
			return -1;
		j->until = cw_now_ms() + ms;
	} else if (strcmp(text, "fail") == 0) {
		cw_check(c, tgw_fail(c->w, ev->id, "asked to fail", 0), "fail");
	} else if (strcmp(text, "raise") == 0) {
		return -1;
	} else
		cw_check(c, tgw_done(c->w, ev->id, NULL), "done");
	return 0;
}

static void
cw_on_cancel(struct cw *c, const struct tgw_event *ev)
{
	struct cw_job *j;

	if ((j = cw_job_find(c, ev->id)) == NULL)
		return;		/* answered already */
	j->kind = CW_FREE;
	cw_check(c, tgw_fail(c->w, ev->id, "cancelled", 1), "fail");
}

static void
cw_on_result(struct cw *c, const struct tgw_event *ev)
{
	struct cw_job *j;
	const char *user;
	char text[300];

	if (!json_is_integer(ev->ref) ||
	    (j = cw_job_find(c, json_integer_value(ev->ref))) == NULL ||
	    j->kind != CW_CALL)
		return;		/* its update was cancelled meanwhile */
	j->kind = CW_FREE;
	if (ev->ok) {
		user = json_string_value(json_object_get(ev->result,
		    "username"));
		snprintf(text, sizeof(text), "me:%s", user ? user : "");
	} else
		snprintf(text, sizeof(text), "error:%d", ev->error_code);
	cw_reply(c, j->id, j->chat, text);
}

static void
cw_event(struct tgw *w, const struct tgw_event *ev, void *arg)
{
	struct cw *c = arg;

	switch (ev->type) {
	case TGW_EV_UPDATE:
		if (cw_handle(c, ev) == -1)
			cw_check(c, tgw_fail(w, ev->id, "handler returned an "
			    "error", 1), "fail");
		break;
	case TGW_EV_CANCEL:
		cw_on_cancel(c, ev);
		break;
	case TGW_EV_RESULT:
		cw_on_result(c, ev);
		break;
	case TGW_EV_SHUTDOWN:
		break;		/* the loop ends once nothing is held */
	}
}

/* Answer the sleeps that are over; returns the poll timeout to the next. */
static int
cw_timers(struct cw *c)
{
	int64_t now = cw_now_ms(), next = -1;
	struct cw_job *j;
	int i;

	for (i = 0; i < c->slots; i++) {
		j = &c->jobs[i];
		if (j->kind != CW_SLEEP)
			continue;
		if (j->until <= now) {
			j->kind = CW_FREE;
			cw_check(c, tgw_done(c->w, j->id, NULL), "done");
		} else if (next == -1 || j->until - now < next)
			next = j->until - now;
	}
	return next > INT_MAX ? INT_MAX : (int)next;
}

/* Until EOF (0), shutdown with nothing left (0) or an error (1). */
static int
cw_loop(struct cw *c)
{
	struct pollfd pfd;
	int r, timeout;

	for (;;) {
		timeout = cw_timers(c);
		if (c->broken)
			return 1;
		if (tgw_shutting_down(c->w) && tgw_busy(c->w) == 0 &&
		    !tgw_want_write(c->w))
			return 0;
		pfd.fd = tgw_fd(c->w);
		pfd.events = POLLIN | (tgw_want_write(c->w) ? POLLOUT : 0);
		if (poll(&pfd, 1, timeout) == -1) {
			if (errno == EINTR)
				continue;
			perror("conformance-worker: poll");
			return 1;
		}
		if ((pfd.revents & POLLOUT) && tgw_flush(c->w) == -1)
			return 1;
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			r = tgw_process(c->w, cw_event, c);
			if (r != 0)
				return r == 1 ? 0 : 1;	/* EOF: daemon gone */
		}
	}
}

int
main(void)
{
	struct tgw_config cfg = { .name = "c-conformance" };
	struct cw c;
	int rc;

	memset(&c, 0, sizeof(c));
	c.slots = cfg.slots = cw_env_slots();
	if ((c.jobs = calloc(c.slots, sizeof(*c.jobs))) == NULL) {
		perror("conformance-worker: calloc");
		return 1;
	}
	if ((c.w = tgw_open(&cfg)) == NULL)
		return 1;
	rc = cw_loop(&c);
	tgw_close(c.w);
	free(c.jobs);
	return rc;
}

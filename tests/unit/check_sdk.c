/* SPDX-License-Identifier: ISC */
/*
 * The worker SDK against a fake daemon on the other end of a socketpair.
 * Non-blocking tests run both sides in one process (the SDK never blocks
 * past its handshake); blocking tests fork: the child runs tgw_run() and
 * reports through its exit status, the parent plays the daemon.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "tgrunner-worker.h"

#define WELCOME	"{\"type\":\"welcome\",\"protocol\":1,\"worker_id\":7," \
		"\"bot\":{\"id\":42,\"is_bot\":true,\"first_name\":\"T\"}," \
		"\"max_frame\":1048576}\n"
#define UPDATE(id, chat, text) "{\"type\":\"update\",\"id\":" #id \
		",\"keys\":[\"chat:" #chat "\"],\"attempt\":1,\"deadline\":0," \
		"\"update\":{\"update_id\":" #id ",\"message\":{\"message_id\":1," \
		"\"chat\":{\"id\":" #chat ",\"type\":\"private\"},\"text\":\"" \
		text "\"}}}\n"

/* The fake daemon's end: a line reader with a timeout. */
struct dside {
	int	 fd;
	char	*buf;
	size_t	 len;
};

static struct dside	 d;
static int		 wfd;	/* the worker's end */

static void
setup(void)
{
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	d.fd = sv[0];
	d.buf = malloc(2 * PROTO_MAX_FRAME);
	d.len = 0;
	wfd = sv[1];
}

static void
teardown(void)
{
	if (d.fd >= 0)
		close(d.fd);
	free(d.buf);
}

static void
dsend(const char *s)
{
	size_t len = strlen(s);

	ck_assert_int_eq(write(d.fd, s, len), (ssize_t)len);
}

/* Next line from the worker (without newline, NUL-terminated), or NULL. */
static char *
dline(void)
{
	struct pollfd pfd = { d.fd, POLLIN, 0 };
	static char line[2 * PROTO_MAX_FRAME];
	char *nl;
	ssize_t n;
	size_t l;

	while ((nl = memchr(d.buf, '\n', d.len)) == NULL) {
		if (poll(&pfd, 1, 5000) != 1)
			return NULL;
		n = read(d.fd, d.buf + d.len, 2 * PROTO_MAX_FRAME - d.len);
		if (n <= 0)
			return NULL;
		d.len += n;
	}
	l = nl - d.buf;
	memcpy(line, d.buf, l);
	line[l] = '\0';
	memmove(d.buf, nl + 1, d.len - l - 1);
	d.len -= l + 1;
	return line;
}

/* Next frame from the worker, decoded as the daemon would. */
static void
dframe(struct frame *f, enum frame_type want)
{
	char err[256], *l = dline();

	ck_assert_msg(l != NULL, "no frame from the worker");
	ck_assert_msg(proto_decode(l, strlen(l), PROTO_W2D, f, err,
	    sizeof(err)) == 0, "bad frame from worker: %s: %s", err, l);
	ck_assert_msg(f->type == want, "got %s, want %s",
	    proto_type_name(f->type), proto_type_name(want));
}

static struct tgw *
open_nb(int slots)
{
	struct tgw_config cfg = { .fd = wfd, .slots = slots, .name = "t" };
	struct frame f;
	struct tgw *w;

	dsend(WELCOME);
	w = tgw_open(&cfg);
	ck_assert_ptr_nonnull(w);
	dframe(&f, FRAME_HELLO);
	ck_assert_int_eq(f.u.hello.protocol, PROTO_VERSION);
	ck_assert_int_eq(f.u.hello.slots, slots);
	ck_assert_str_eq(f.u.hello.name, "t");
	frame_clear(&f);
	return w;
}

/* Events seen by tgw_process(), kept as compact JSON text. */
struct seen {
	int	 n;
	int	 type[16];
	int64_t	 id[16];
	char	*extra[16];
};

static void
record_event(struct tgw *w, const struct tgw_event *ev, void *arg)
{
	struct seen *s = arg;

	ck_assert_int_lt(s->n, 16);
	s->type[s->n] = ev->type;
	s->id[s->n] = ev->id;
	s->extra[s->n] = NULL;
	if (ev->type == TGW_EV_UPDATE)
		s->extra[s->n] = json_dumps(ev->update, JSON_COMPACT);
	else if (ev->type == TGW_EV_RESULT)
		s->extra[s->n] = json_dumps(ev->ref, JSON_ENCODE_ANY);
	s->n++;
}

static void
seen_free(struct seen *s)
{
	int i;

	for (i = 0; i < s->n; i++)
		free(s->extra[i]);
	memset(s, 0, sizeof(*s));
}

/* Process until n events have been seen or the connection ends. */
static int
process_until(struct tgw *w, struct seen *s, int n)
{
	struct pollfd pfd = { tgw_fd(w), POLLIN, 0 };
	int r = 0;

	while (s->n < n && r == 0) {
		if (poll(&pfd, 1, 5000) != 1)
			ck_abort_msg("timeout waiting for events");
		r = tgw_process(w, record_event, s);
	}
	return r;
}

START_TEST(nb_handshake)
{
	struct tgw *w = open_nb(4);

	ck_assert_int_eq(tgw_worker_id(w), 7);
	ck_assert_int_eq(json_integer_value(json_object_get(tgw_bot(w),
	    "id")), 42);
	ck_assert_int_eq(tgw_slots(w), 4);
	ck_assert_int_eq(tgw_busy(w), 0);
	ck_assert_str_eq(tgw_error(w), "");
	ck_assert_int_eq(fcntl(tgw_fd(w), F_GETFL) & O_NONBLOCK, O_NONBLOCK);
	tgw_close(w);
}
END_TEST

START_TEST(nb_update_done_fail)
{
	struct tgw *w = open_nb(2);
	struct seen s = { 0 };
	struct frame f;

	dsend(UPDATE(11, 5, "a") UPDATE(12, 6, "b"));
	ck_assert_int_eq(process_until(w, &s, 2), 0);
	ck_assert_int_eq(s.type[0], TGW_EV_UPDATE);
	ck_assert_int_eq(s.id[0], 11);
	ck_assert_int_eq(s.id[1], 12);
	ck_assert_ptr_nonnull(strstr(s.extra[1], "\"text\":\"b\""));
	ck_assert_int_eq(tgw_busy(w), 2);

	ck_assert_int_eq(tgw_done(w, 12, json_pack("[{s:s, s:{s:i}}]",
	    "method", "sendMessage", "params", "chat_id", 6)), 0);
	ck_assert_int_eq(tgw_fail(w, 11, "boom", 1), 0);
	ck_assert_int_eq(tgw_busy(w), 0);
	ck_assert_int_eq(tgw_done(w, 11, NULL), -1);	/* not held any more */
	ck_assert_int_eq(tgw_fail(w, 99, "x", 0), -1);

	dframe(&f, FRAME_DONE);
	ck_assert_int_eq(f.u.done.id, 12);
	ck_assert_int_eq(json_array_size(f.u.done.calls), 1);
	frame_clear(&f);
	dframe(&f, FRAME_FAIL);
	ck_assert_int_eq(f.u.fail.id, 11);
	ck_assert_str_eq(f.u.fail.error, "boom");
	ck_assert_int_eq(f.u.fail.retry, 1);
	frame_clear(&f);
	seen_free(&s);
	tgw_close(w);
}
END_TEST

START_TEST(nb_cancel_result_shutdown)
{
	struct tgw *w = open_nb(2);
	struct seen s = { 0 };
	struct frame f;

	dsend(UPDATE(21, 5, "a"));
	ck_assert_int_eq(process_until(w, &s, 1), 0);
	ck_assert_int_eq(tgw_send_call(w, 21, json_string("r1"), "getMe",
	    NULL), 0);
	dframe(&f, FRAME_CALL);
	ck_assert_str_eq(json_string_value(f.u.call.ref), "r1");
	ck_assert_str_eq(f.u.call.method, "getMe");
	ck_assert_int_eq(f.u.call.id, 21);
	frame_clear(&f);
	/* The cancel of 99 is for nothing we hold: dropped, not an event. */
	dsend("{\"type\":\"cancel\",\"id\":99}\n"
	    "{\"type\":\"result\",\"ref\":\"r1\",\"ok\":true,\"result\":{}}\n"
	    "{\"type\":\"cancel\",\"id\":21,\"reason\":\"timeout\"}\n"
	    "{\"type\":\"shutdown\",\"deadline\":5}\n");
	ck_assert_int_eq(process_until(w, &s, 4), 0);
	ck_assert_int_eq(s.n, 4);
	ck_assert_int_eq(s.type[1], TGW_EV_RESULT);
	ck_assert_str_eq(s.extra[1], "\"r1\"");
	ck_assert_int_eq(s.type[2], TGW_EV_CANCEL);
	ck_assert_int_eq(s.id[2], 21);
	ck_assert_int_eq(s.type[3], TGW_EV_SHUTDOWN);
	ck_assert_int_eq(tgw_shutting_down(w), 1);
	ck_assert_int_eq(tgw_fail(w, 21, "cancelled", 1), 0);
	dframe(&f, FRAME_FAIL);
	frame_clear(&f);
	close(d.fd);
	d.fd = -1;
	ck_assert_int_eq(process_until(w, &s, 5), 1);	/* orderly end */
	seen_free(&s);
	tgw_close(w);
}
END_TEST

START_TEST(nb_more_updates_than_slots)
{
	struct tgw *w = open_nb(1);
	struct seen s = { 0 };

	dsend(UPDATE(1, 5, "a") UPDATE(2, 5, "b"));
	ck_assert_int_eq(process_until(w, &s, 3), -1);
	ck_assert_ptr_nonnull(strstr(tgw_error(w), "slots"));
	seen_free(&s);
	tgw_close(w);
}
END_TEST

static void
expect_broken(const char *input, const char *why)
{
	struct tgw *w = open_nb(1);
	struct seen s = { 0 };

	dsend(input);
	ck_assert_int_eq(process_until(w, &s, 1), -1);
	ck_assert_msg(strstr(tgw_error(w), why) != NULL, "error \"%s\"",
	    tgw_error(w));
	ck_assert_int_eq(s.n, 0);
	tgw_close(w);
}

START_TEST(nb_malformed)
{
	expect_broken("not json\n", "malformed");
}
END_TEST

START_TEST(nb_wrong_direction)
{
	expect_broken("{\"type\":\"done\",\"id\":1}\n", "direction");
}
END_TEST

START_TEST(nb_second_welcome)
{
	expect_broken(WELCOME, "welcome");
}
END_TEST

START_TEST(nb_eof_mid_frame)
{
	struct tgw *w = open_nb(1);
	struct seen s = { 0 };

	dsend("{\"type\":\"shut");
	close(d.fd);
	d.fd = -1;
	ck_assert_int_eq(process_until(w, &s, 1), -1);
	tgw_close(w);
}
END_TEST

START_TEST(nb_frame_too_long)
{
	struct tgw *w = open_nb(1);
	struct seen s = { 0 };
	char chunk[65536];
	size_t sent = 0;
	ssize_t n;
	int r = 0;

	memset(chunk, 'x', sizeof(chunk));
	fcntl(d.fd, F_SETFL, O_NONBLOCK);
	while (r == 0 && sent < 2 * PROTO_MAX_FRAME) {
		n = write(d.fd, chunk, sizeof(chunk));
		if (n > 0)
			sent += n;
		r = tgw_process(w, record_event, &s);
	}
	ck_assert_int_eq(r, -1);
	ck_assert_ptr_nonnull(strstr(tgw_error(w), "longer"));
	tgw_close(w);
}
END_TEST

START_TEST(nb_output_buffering)
{
	struct tgw *w = open_nb(1);
	struct frame f;
	char *big;
	int i, calls = 0, r;

	big = malloc(100001);
	memset(big, 'z', 100000);
	big[100000] = '\0';
	/* The daemon does not read: the SDK must buffer, never block. */
	while (!tgw_want_write(w) && calls < 1000) {
		ck_assert_int_eq(tgw_send_call(w, 0, json_integer(calls),
		    "sendMessage", json_pack("{s:s}", "text", big)), 0);
		calls++;
	}
	ck_assert(tgw_want_write(w));
	for (i = 0; i < calls; i++) {
		r = tgw_flush(w);
		ck_assert_int_ne(r, -1);
		dframe(&f, FRAME_CALL);
		ck_assert_int_eq(json_integer_value(f.u.call.ref), i);
		ck_assert_int_eq(strlen(json_string_value(json_object_get(
		    f.u.call.params, "text"))), 100000);
		frame_clear(&f);
	}
	ck_assert_int_eq(tgw_flush(w), 0);
	ck_assert(!tgw_want_write(w));
	free(big);
	tgw_close(w);
}
END_TEST

START_TEST(nb_oversize_answer)
{
	struct tgw *w = open_nb(1);
	struct seen s = { 0 };
	struct frame f;
	char *big;

	dsend(UPDATE(31, 5, "a"));
	ck_assert_int_eq(process_until(w, &s, 1), 0);
	big = malloc(PROTO_MAX_FRAME + 1);
	memset(big, 'z', PROTO_MAX_FRAME);
	big[PROTO_MAX_FRAME] = '\0';
	errno = 0;
	ck_assert_int_eq(tgw_done(w, 31, json_pack("[{s:s, s:{s:s}}]",
	    "method", "sendMessage", "params", "text", big)), -1);
	ck_assert_int_eq(errno, EMSGSIZE);
	free(big);
	ck_assert_int_eq(tgw_busy(w), 1);	/* still ours to answer */
	errno = 0;
	ck_assert_int_eq(tgw_done(w, 31, json_pack("[{s:s}]", "method",
	    "bad method")), -1);
	ck_assert_int_eq(errno, EMSGSIZE);
	ck_assert_int_eq(tgw_fail(w, 31, "too big", 0), 0);
	dframe(&f, FRAME_FAIL);
	ck_assert_int_eq(f.u.fail.id, 31);
	frame_clear(&f);
	seen_free(&s);
	tgw_close(w);
}
END_TEST

START_TEST(open_refused)
{
	struct tgw_config cfg = { .fd = wfd };

	/* A daemon that does not speak our version closes the socket. */
	close(d.fd);
	d.fd = -1;
	ck_assert_ptr_null(tgw_open(&cfg));
}
END_TEST

START_TEST(open_wrong_version)
{
	struct tgw_config cfg = { .fd = wfd };

	dsend("{\"type\":\"welcome\",\"protocol\":2,\"worker_id\":1,"
	    "\"bot\":{},\"max_frame\":100}\n");
	ck_assert_ptr_null(tgw_open(&cfg));
}
END_TEST

START_TEST(open_update_before_welcome)
{
	struct tgw_config cfg = { .fd = wfd };

	dsend(UPDATE(1, 5, "a") WELCOME);
	ck_assert_ptr_null(tgw_open(&cfg));
}
END_TEST

START_TEST(open_from_env_fd)
{
	char num[16];
	struct tgw *w;

	snprintf(num, sizeof(num), "%d", wfd);
	setenv("TGRUNNER_FD", num, 1);
	dsend(WELCOME UPDATE(3, 5, "a"));
	w = tgw_open(NULL);
	unsetenv("TGRUNNER_FD");
	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(tgw_fd(w), wfd);
	/* The update that came with the welcome is not read yet: poll sees it. */
	{
		struct pollfd pfd = { wfd, POLLIN, 0 };

		ck_assert_int_eq(poll(&pfd, 1, 1000), 1);
	}
	tgw_close(w);
}
END_TEST

/* ---- blocking style, forked ------------------------------------------------ */

static int child_failures;

#define CHILD_CHECK(c) do { if (!(c)) { fprintf(stderr, "child: %s:%d: " \
	"%s\n", __FILE__, __LINE__, #c); child_failures++; } } while (0)

static enum tgw_status
blocking_handler(struct tgw_ctx *ctx, const json_t *update, void *arg)
{
	json_t *res = NULL;
	int r;

	switch (tgw_ctx_id(ctx)) {
	case 41:
		CHILD_CHECK(tgw_ctx_attempt(ctx) == 1);
		CHILD_CHECK(strcmp(tgw_update_text(update), "hi") == 0);
		r = tgw_call(ctx, "getMe", NULL, &res);
		CHILD_CHECK(r == 0);
		CHILD_CHECK(json_integer_value(json_object_get(res, "id")) ==
		    42);
		json_decref(res);
		r = tgw_call(ctx, "sendMessage", json_pack("{s:i}", "chat_id",
		    5), &res);
		CHILD_CHECK(r == 501);
		CHILD_CHECK(json_integer_value(json_object_get(res,
		    "error_code")) == 501);
		json_decref(res);
		CHILD_CHECK(tgw_reply_text(ctx, "echo: hi") == 0);
		return TGW_DONE;
	case 42:
		/* Cancelled while sleeping: the SDK must notice.  The call
		 * tells the test we are about to sleep. */
		CHILD_CHECK(tgw_send_call(tgw_ctx_conn(ctx), 42,
		    json_string("sleeping"), "sendChatAction", NULL) == 0);
		CHILD_CHECK(tgw_sleep(ctx, 10000) == 1);
		CHILD_CHECK(tgw_cancelled(ctx) == 1);
		tgw_ctx_set_error(ctx, "cancelled");
		return TGW_RETRY;
	default:
		tgw_ctx_set_error(ctx, "unknown");
		return TGW_FAIL;
	}
}

static pid_t
fork_run(void)
{
	struct tgw_config cfg = { .fd = wfd };
	pid_t pid = fork();

	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		close(d.fd);
		if (tgw_run(&cfg, blocking_handler, NULL) != 0)
			child_failures++;
		_exit(child_failures ? 1 : 0);
	}
	close(wfd);
	return pid;
}

static int
wait_child(pid_t pid)
{
	int status;

	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

START_TEST(blocking_session)
{
	pid_t pid = fork_run();
	struct frame f;
	char buf[256];

	dframe(&f, FRAME_HELLO);
	ck_assert_int_eq(f.u.hello.slots, 1);
	frame_clear(&f);
	dsend(WELCOME UPDATE(41, 5, "hi"));
	dframe(&f, FRAME_CALL);
	ck_assert_str_eq(f.u.call.method, "getMe");
	ck_assert_int_eq(f.u.call.id, 41);
	/* Another call's stale result first: the SDK must skip it. */
	snprintf(buf, sizeof(buf), "{\"type\":\"result\",\"ref\":\"other\","
	    "\"ok\":true,\"result\":1}\n{\"type\":\"result\",\"ref\":%lld,"
	    "\"ok\":true,\"result\":{\"id\":42}}\n",
	    (long long)json_integer_value(f.u.call.ref));
	frame_clear(&f);
	dsend(buf);
	dframe(&f, FRAME_CALL);
	snprintf(buf, sizeof(buf), "{\"type\":\"result\",\"ref\":%lld,"
	    "\"ok\":false,\"error_code\":501,\"description\":\"calls are not "
	    "supported by this daemon yet\"}\n",
	    (long long)json_integer_value(f.u.call.ref));
	frame_clear(&f);
	dsend(buf);
	dframe(&f, FRAME_DONE);
	ck_assert_int_eq(f.u.done.id, 41);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
	    json_array_get(f.u.done.calls, 0), "params"), "text")), "echo: hi");
	frame_clear(&f);

	dsend(UPDATE(42, 5, "slow"));
	dframe(&f, FRAME_CALL);
	ck_assert_str_eq(json_string_value(f.u.call.ref), "sleeping");
	frame_clear(&f);
	dsend("{\"type\":\"cancel\",\"id\":42,\"reason\":\"timeout\"}\n");
	dframe(&f, FRAME_FAIL);
	ck_assert_int_eq(f.u.fail.id, 42);
	ck_assert_int_eq(f.u.fail.retry, 1);
	ck_assert_str_eq(f.u.fail.error, "cancelled");
	frame_clear(&f);

	dsend(UPDATE(43, 5, "x") "{\"type\":\"shutdown\"}\n");
	dframe(&f, FRAME_FAIL);
	ck_assert_int_eq(f.u.fail.retry, 0);
	ck_assert_str_eq(f.u.fail.error, "unknown");
	frame_clear(&f);
	ck_assert_int_eq(wait_child(pid), 0);
}
END_TEST

START_TEST(blocking_malformed)
{
	pid_t pid = fork_run();
	struct frame f;

	dframe(&f, FRAME_HELLO);
	frame_clear(&f);
	dsend(WELCOME "{\"type\":\"update\",\"id\":1}\n");
	ck_assert_int_eq(wait_child(pid), 1);	/* tgw_run returned -1 */
}
END_TEST

START_TEST(blocking_eof_is_clean)
{
	pid_t pid = fork_run();
	struct frame f;

	dframe(&f, FRAME_HELLO);
	frame_clear(&f);
	dsend(WELCOME);
	close(d.fd);
	d.fd = -1;
	ck_assert_int_eq(wait_child(pid), 0);
}
END_TEST

START_TEST(socket_path)
{
	char dir[] = "/tmp/check_sdk.XXXXXX", path[128];
	struct sockaddr_un sun;
	struct frame f;
	int ls, status;
	pid_t pid;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sock", dir);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	ls = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_eq(bind(ls, (struct sockaddr *)&sun, sizeof(sun)), 0);
	ck_assert_int_eq(listen(ls, 1), 0);
	close(wfd);
	close(d.fd);
	if ((pid = fork()) == 0) {
		setenv("TGRUNNER_SOCKET", path, 1);
		unsetenv("TGRUNNER_FD");
		_exit(tgw_run(NULL, blocking_handler, NULL) == 0 ? 0 : 1);
	}
	d.fd = accept(ls, NULL, NULL);
	ck_assert_int_ge(d.fd, 0);
	dframe(&f, FRAME_HELLO);
	frame_clear(&f);
	dsend(WELCOME "{\"type\":\"shutdown\"}\n");
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(ls);
	unlink(path);
	rmdir(dir);
}
END_TEST

/* ---- helpers ----------------------------------------------------------------- */

static json_t *
upd(const char *text)
{
	json_t *u = json_loads(text, 0, NULL);

	ck_assert_ptr_nonnull(u);
	return u;
}

START_TEST(update_helpers)
{
	int64_t chat = 0;
	json_t *u;

	u = upd("{\"update_id\":1,\"message\":{\"chat\":{\"id\":-100},"
	    "\"text\":\"hi\"}}");
	ck_assert_str_eq(tgw_update_type(u), "message");
	ck_assert_int_eq(tgw_update_chat_id(u, &chat), 0);
	ck_assert_int_eq(chat, -100);
	ck_assert_str_eq(tgw_update_text(u), "hi");
	json_decref(u);

	u = upd("{\"update_id\":1,\"callback_query\":{\"id\":\"x\","
	    "\"message\":{\"chat\":{\"id\":8}},\"data\":\"d\"}}");
	ck_assert_str_eq(tgw_update_type(u), "callback_query");
	ck_assert_int_eq(tgw_update_chat_id(u, &chat), 0);
	ck_assert_int_eq(chat, 8);
	ck_assert_ptr_null(tgw_update_text(u));
	json_decref(u);

	u = upd("{\"update_id\":1,\"channel_post\":{\"chat\":{\"id\":3},"
	    "\"caption\":\"c\"}}");
	ck_assert_str_eq(tgw_update_text(u), "c");
	json_decref(u);

	u = upd("{\"update_id\":1,\"inline_query\":{\"id\":\"q\","
	    "\"from\":{\"id\":4},\"query\":\"\"}}");
	ck_assert_int_eq(tgw_update_chat_id(u, &chat), -1);
	json_decref(u);

	u = upd("{\"update_id\":1}");
	ck_assert_ptr_null(tgw_update_type(u));
	ck_assert_int_eq(tgw_update_chat_id(u, &chat), -1);
	ck_assert_ptr_null(tgw_update_text(u));
	json_decref(u);
}
END_TEST

static Suite *
sdk_suite(void)
{
	Suite *s = suite_create("sdk");
	TCase *nb = tcase_create("nonblocking");
	TCase *bl = tcase_create("blocking");
	TCase *h = tcase_create("helpers");

	tcase_add_checked_fixture(nb, setup, teardown);
	tcase_add_test(nb, nb_handshake);
	tcase_add_test(nb, nb_update_done_fail);
	tcase_add_test(nb, nb_cancel_result_shutdown);
	tcase_add_test(nb, nb_more_updates_than_slots);
	tcase_add_test(nb, nb_malformed);
	tcase_add_test(nb, nb_wrong_direction);
	tcase_add_test(nb, nb_second_welcome);
	tcase_add_test(nb, nb_eof_mid_frame);
	tcase_add_test(nb, nb_frame_too_long);
	tcase_add_test(nb, nb_output_buffering);
	tcase_add_test(nb, nb_oversize_answer);
	tcase_add_test(nb, open_refused);
	tcase_add_test(nb, open_wrong_version);
	tcase_add_test(nb, open_update_before_welcome);
	tcase_add_test(nb, open_from_env_fd);
	suite_add_tcase(s, nb);

	tcase_add_checked_fixture(bl, setup, teardown);
	tcase_add_test(bl, blocking_session);
	tcase_add_test(bl, blocking_malformed);
	tcase_add_test(bl, blocking_eof_is_clean);
	tcase_add_test(bl, socket_path);
	suite_add_tcase(s, bl);

	tcase_add_test(h, update_helpers);
	suite_add_tcase(s, h);
	return s;
}

#define TEST_SUITE	sdk_suite
#include "testmain.h"

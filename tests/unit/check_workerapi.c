/* SPDX-License-Identifier: ISC */
/*
 * Unit tests of the Bot API endpoint for workers (daemon/workerapi.c),
 * over real loopback HTTP: the endpoint runs on this process's event loop
 * in front of a real api.c and http.c, talking to tgrunner-fakeapi (found
 * through $TG_BUILDDIR); a client thread speaks HTTP to it with libcurl or
 * raw sockets.  Assertions run in the main thread, after the client's
 * part is done.
 *
 * Covered: credentials (shape, 401 for wrong, replaced and revoked ones),
 * 404s, calls with JSON, urlencoded, multipart and query parameters,
 * Telegram's errors passed through, 400/413 refusals and the header bound,
 * the held() hook and per-key order, the policy hook, multipart uploads
 * (files checked by SHA-256 at the fake), downloads streamed from the fake
 * (sizes, chunked, download_max_size, a slow client) or read from
 * local_files_dir, the token never shown, connection caps per worker and
 * in total, idle timeouts, revocation, and a Unix socket.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

#include "api.h"
#include "conf.h"
#include "fakeproc.h"
#include "http.h"
#include "log.h"
#include "proto.h"
#include "workerapi.h"

#define TOKEN		"123456:TEST-TOKEN"
#define BOT_ID		123456
#define MAX_BODY	(32 * 1024 * 1024)

static char		 tmpdir[] = "/tmp/check_workerapi.XXXXXX";
static pid_t		 fake_pid = -1;
static char		 fake_url[64];

static struct event_base *base;
static struct http	*http;
static struct api	*api;
static struct workerapi	*wa;
static struct conf	 conf;
static char		 cred1[WORKERAPI_CRED_MAX], cred2[WORKERAPI_CRED_MAX];
static char		 root[WORKERAPI_ROOT_MAX];

/* What the daemon's hooks saw and say. */
static struct {
	int		 held_calls;
	int		 worker;
	int64_t		 update;
	const char	*key;		/* what held() answers */
	int64_t		 not_held;	/* held() answers -1 for this id */
} hooks;

static int
held_hook(void *arg, int worker_id, int64_t update_id, const char **key,
    int64_t *update)
{
	hooks.held_calls++;
	hooks.worker = worker_id;
	hooks.update = update_id;
	*key = hooks.key;
	if (update_id > 0 && update_id == hooks.not_held) {
		*key = NULL;
		return -1;
	}
	*update = update_id > 0 ? update_id : 0;
	return hooks.key != NULL;
}

static int
policy_hook(void *arg, int worker_id, const char *method, json_t *params,
    int *code, char *desc, size_t descsz)
{
	if (strcasecmp(method, "logOut") != 0)
		return 0;
	*code = 403;
	snprintf(desc, descsz, "Forbidden: tgrunner: logOut is not for "
	    "workers");
	return -1;
}

static const struct workerapi_ops ops = { held_hook, policy_hook };

/* --- the fake Bot API ------------------------------------------------------ */

static void
fake_start(void)
{
	fake_pid = fakeproc_start(tmpdir, TOKEN, fake_url, sizeof(fake_url));
	ck_assert_msg(fake_pid > 0, "tgrunner-fakeapi did not start");
}

static void
fake_stop(void)
{
	fakeproc_stop(fake_pid);
	fake_pid = -1;
}

/* --- fixture -------------------------------------------------------------- */

static void
setup(void)
{
	fake_start();
	conf_defaults(&conf);
	free(conf.api_url);
	conf.api_url = strdup(fake_url);
	conf.upload_max_size = 64 * 1024;
	conf.download_max_size = 4 * 1024 * 1024;
	conf.max_call_retries = 0;
	conf.flood_control = 0;
	memset(&hooks, 0, sizeof(hooks));
	ck_assert_ptr_nonnull(base = event_base_new());
	ck_assert_ptr_nonnull(http = http_new(base, 16));
	ck_assert_ptr_nonnull(api = api_new(base, http, &conf, TOKEN));
	ck_assert_ptr_nonnull(wa = workerapi_new(base, api, http, &conf, TOKEN,
	    &ops, NULL));
	ck_assert_int_eq(workerapi_credential(wa, 1, BOT_ID, cred1,
	    sizeof(cred1)), 0);
	ck_assert_int_eq(workerapi_credential(wa, 2, BOT_ID, cred2,
	    sizeof(cred2)), 0);
}

static void
listen_tcp(void)
{
	ck_assert_int_eq(workerapi_listen(wa, "127.0.0.1:0"), 0);
	snprintf(root, sizeof(root), "%s", workerapi_root(wa));
	ck_assert(strncmp(root, "http://127.0.0.1:", 17) == 0);
}

static void
teardown(void)
{
	/* workerapi first, then the api, without running the loop between */
	workerapi_free(wa);
	api_free(api);
	http_free(http);
	event_base_free(base);
	conf_clear(&conf);
	fake_stop();
}

/* --- the client thread ----------------------------------------------------- */

struct client {
	void	(*fn)(void *);
	void	*arg;
	int	 pipe[2];
};

static void *
client_main(void *p)
{
	struct client *c = p;

	c->fn(c->arg);
	(void)write(c->pipe[1], "x", 1);
	return NULL;
}

static void
client_done(evutil_socket_t fd, short ev, void *arg)
{
	event_base_loopbreak(base);
}

/* Run fn(arg) in a thread while this thread runs the event loop. */
static void
run_client(void (*fn)(void *), void *arg)
{
	struct client	 c = { fn, arg, { -1, -1 } };
	struct event	*ev;
	pthread_t	 t;

	ck_assert_int_eq(pipe(c.pipe), 0);
	ev = event_new(base, c.pipe[0], EV_READ, client_done, NULL);
	event_add(ev, NULL);
	ck_assert_int_eq(pthread_create(&t, NULL, client_main, &c), 0);
	event_base_dispatch(base);
	pthread_join(t, NULL);
	event_free(ev);
	close(c.pipe[0]);
	close(c.pipe[1]);
}

/* Let the loop run for ms (for closes and timers on our side). */
static void
run_loop_ms(int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* One HTTP request and what came back. */
struct rq {
	const char	*method;
	char		 url[1024];
	const char	*ctype;
	const char	*body;
	size_t		 len;
	const char	*hdr;		/* an extra header line, or NULL */
	long		 recv_speed;	/* bytes/s, 0: as fast as it comes */
	int		 path_as_is;
	/* out */
	CURLcode	 code;
	long		 status;
	char		*rbody;
	size_t		 rlen;
	char		 close_hdr;	/* "Connection: close" came back */
	struct curl_slist *hlist;
};

static size_t
rq_write(char *p, size_t size, size_t n, void *arg)
{
	struct rq *r = arg;
	size_t len = size * n;

	if (r->rlen + len > MAX_BODY)
		return 0;
	r->rbody = realloc(r->rbody, r->rlen + len + 1);
	memcpy(r->rbody + r->rlen, p, len);
	r->rlen += len;
	r->rbody[r->rlen] = '\0';
	return len;
}

static size_t
rq_header(char *p, size_t size, size_t n, void *arg)
{
	struct rq *r = arg;

	if (size * n >= 17 && strncasecmp(p, "Connection: close", 17) == 0)
		r->close_hdr = 1;
	return size * n;
}

/* The options of r on e; r->hlist is freed after the transfer. */
static void
rq_perform_setup(CURL *e, struct rq *r)
{
	struct curl_slist *h = NULL;

	free(r->rbody);
	r->rbody = NULL;
	r->rlen = 0;
	r->close_hdr = 0;
	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, rq_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, rq_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, (long)r->path_as_is);
	curl_easy_setopt(e, CURLOPT_MAX_RECV_SPEED_LARGE,
	    (curl_off_t)r->recv_speed);
	if (r->body != NULL) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)r->len);
	} else
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	if (r->ctype != NULL) {
		char line[256];

		snprintf(line, sizeof(line), "Content-Type: %s", r->ctype);
		h = curl_slist_append(h, line);
	}
	if (r->hdr != NULL)
		h = curl_slist_append(h, r->hdr);
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	r->hlist = h;
}

/* On easy e (reused: its connection is kept alive), or a fresh one. */
static void
rq_perform(CURL *e, struct rq *r)
{
	rq_perform_setup(e, r);
	r->code = curl_easy_perform(e);
	r->status = 0;
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(r->hlist);
	r->hlist = NULL;
}

struct batch {
	struct rq	*rq;
	size_t		 n;
	CURL		*keep;		/* one handle for all: keep-alive */
	const char	*unix_path;
};

static void
batch_run(void *arg)
{
	struct batch	*b = arg;
	CURL		*e;
	size_t		 i;

	for (i = 0; i < b->n; i++) {
		e = b->keep != NULL ? b->keep : curl_easy_init();
		if (b->unix_path != NULL)
			curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH,
			    b->unix_path);
		rq_perform(e, &b->rq[i]);
		if (b->keep == NULL)
			curl_easy_cleanup(e);
	}
}

static void
run_rqs(struct rq *rq, size_t n)
{
	struct batch b = { rq, n, NULL, NULL };

	run_client(batch_run, &b);
}

struct parallel {
	struct rq	**rq;
	size_t		  n;
};

/* All at once, on their own connections (curl multi). */
static void
parallel_run(void *arg)
{
	struct parallel	*p = arg;
	CURLM		*m = curl_multi_init();
	CURL		*e[8];
	CURLMsg		*msg;
	size_t		 i;
	int		 running, left;

	for (i = 0; i < p->n; i++) {
		e[i] = curl_easy_init();
		rq_perform_setup(e[i], p->rq[i]);
		curl_multi_add_handle(m, e[i]);
	}
	do {
		curl_multi_perform(m, &running);
		if (running > 0)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	} while (running > 0);
	while ((msg = curl_multi_info_read(m, &left)) != NULL)
		for (i = 0; i < p->n; i++)
			if (msg->easy_handle == e[i])
				p->rq[i]->code = msg->data.result;
	for (i = 0; i < p->n; i++) {
		curl_easy_getinfo(e[i], CURLINFO_RESPONSE_CODE,
		    &p->rq[i]->status);
		curl_multi_remove_handle(m, e[i]);
		curl_slist_free_all(p->rq[i]->hlist);
		p->rq[i]->hlist = NULL;
		curl_easy_cleanup(e[i]);
	}
	curl_multi_cleanup(m);
}

static void
run_parallel(struct rq **rq, size_t n)
{
	struct parallel p = { rq, n };

	run_client(parallel_run, &p);
}

static struct rq *
rq_new(const char *method, const char *body, const char *ctype,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static struct rq *
rq_new(const char *method, const char *body, const char *ctype,
    const char *fmt, ...)
{
	struct rq	*r = calloc(1, sizeof(*r));
	va_list		 ap;

	r->method = method;
	r->body = body;
	r->len = body != NULL ? strlen(body) : 0;
	r->ctype = ctype;
	va_start(ap, fmt);
	vsnprintf(r->url, sizeof(r->url), fmt, ap);
	va_end(ap);
	return r;
}

static void
rq_free(struct rq *r)
{
	free(r->rbody);
	free(r);
}

/* One request, run to the end; the caller frees it. */
static struct rq *
one(struct rq *r)
{
	run_rqs(r, 1);
	return r;
}

static void
body_is(const struct rq *r, long status, const char *body)
{
	ck_assert_msg(r->code == CURLE_OK, "%s: %s", r->url,
	    curl_easy_strerror(r->code));
	ck_assert_msg(r->status == status, "%s: status %ld, want %ld: %s",
	    r->url, r->status, status, r->rbody ? r->rbody : "");
	if (body != NULL)
		ck_assert_str_eq(r->rbody ? r->rbody : "", body);
}

static json_t *
rq_json(const struct rq *r)
{
	json_t *j = json_loadb(r->rbody ? r->rbody : "", r->rlen, 0, NULL);

	ck_assert_msg(j != NULL, "%s: not JSON: %s", r->url,
	    r->rbody ? r->rbody : "");
	return j;
}

/* The fake's record of calls of method (a JSON array; caller decrefs). */
static json_t *
fake_calls(const char *method)
{
	struct rq	*r = one(rq_new("GET", NULL, NULL,
			    "%s/_ctl/calls?method=%s", fake_url, method));
	json_t		*j = rq_json(r), *calls;

	calls = json_incref(json_object_get(j, "calls"));
	json_decref(j);
	rq_free(r);
	ck_assert(json_is_array(calls));
	return calls;
}

static json_t *
fake_ctl(const char *path, const char *body)
{
	struct rq	*r = one(rq_new("POST", body, "application/json",
			    "%s/_ctl/%s", fake_url, path));
	json_t		*j;

	body_is(r, 200, NULL);
	j = rq_json(r);
	rq_free(r);
	return j;
}

static const char *
param(json_t *call, const char *name)
{
	json_t *v = json_object_get(json_object_get(call, "params"), name);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* --- credentials ------------------------------------------------------------ */

START_TEST(test_credential_shape)
{
	char	 c[WORKERAPI_CRED_MAX], again[WORKERAPI_CRED_MAX];
	size_t	 i;

	ck_assert(strncmp(cred1, "123456:w1-", 10) == 0);
	ck_assert_uint_eq(strlen(cred1), 10 + 32);
	for (i = 10; cred1[i] != '\0'; i++)
		ck_assert(strchr("0123456789abcdef", cred1[i]) != NULL);
	ck_assert_str_ne(cred1 + 10, cred2 + 10);
	/* a fresh one each time, replacing the old */
	ck_assert_int_eq(workerapi_credential(wa, 1, BOT_ID, c, sizeof(c)), 0);
	ck_assert_int_eq(workerapi_credential(wa, 1, BOT_ID, again,
	    sizeof(again)), 0);
	ck_assert_str_ne(c, again);
	ck_assert_int_eq(workerapi_credential(wa, 3, 0, c, sizeof(c)), -1);
	ck_assert_int_eq(workerapi_credential(wa, 3, BOT_ID, c, 8), -1);
	workerapi_revoke(wa, 99);	/* unknown: harmless */
}
END_TEST

START_TEST(test_unauthorized)
{
	static const char want[] =
	    "{\"ok\":false,\"error_code\":401,\"description\":\"Unauthorized\"}";
	char	 bad[WORKERAPI_CRED_MAX], old[WORKERAPI_CRED_MAX];
	struct rq *rq[7];
	json_t	*calls;
	size_t	 i;

	listen_tcp();
	snprintf(old, sizeof(old), "%s", cred1);
	ck_assert_int_eq(workerapi_credential(wa, 1, BOT_ID, cred1,
	    sizeof(cred1)), 0);
	snprintf(bad, sizeof(bad), "%s", cred1);
	bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'a' ? 'b' : 'a';
	rq[0] = rq_new("GET", NULL, NULL, "%s/bot%s/getMe", root, bad);
	rq[1] = rq_new("GET", NULL, NULL, "%s/bot%s/getMe", root, old);
	rq[2] = rq_new("GET", NULL, NULL, "%s/bot%s/getMe", root, TOKEN);
	rq[3] = rq_new("GET", NULL, NULL, "%s/bot123456:w7-%s/getMe", root,
	    cred1 + 10);
	rq[4] = rq_new("GET", NULL, NULL, "%s/bot%sX/getMe", root, cred1);
	rq[5] = rq_new("GET", NULL, NULL, "%s/file/bot%s/documents/f", root,
	    bad);
	rq[6] = rq_new("GET", NULL, NULL, "%s/bot%s/getMe", root, cred1);
	for (i = 0; i < 7; i++)
		one(rq[i]);
	for (i = 0; i < 6; i++)
		body_is(rq[i], 401, want);
	body_is(rq[6], 200, NULL);
	ck_assert_uint_eq(workerapi_stats(wa)->unauthorized, 6);
	/* revoked: 401 at once */
	workerapi_revoke(wa, 1);
	one(rq[6]);
	body_is(rq[6], 401, want);
	calls = fake_calls("getMe");
	ck_assert_uint_eq(json_array_size(calls), 1);
	json_decref(calls);
	for (i = 0; i < 7; i++)
		rq_free(rq[i]);
}
END_TEST

START_TEST(test_not_found)
{
	static const char want[] =
	    "{\"ok\":false,\"error_code\":404,\"description\":\"Not Found\"}";
	static const char *const paths[] = { "/", "/foo", "/bot", "/botx",
	    "/file/", "/_ctl/calls" };
	struct rq *r;
	size_t i;

	listen_tcp();
	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		r = one(rq_new("GET", NULL, NULL, "%s%s", root, paths[i]));
		body_is(r, 404, want);
		rq_free(r);
	}
	r = one(rq_new("POST", "{}", "application/json", "%s/bot%s/send-it",
	    root, cred1));
	body_is(r, 404, want);
	rq_free(r);
	r = one(rq_new("GET", NULL, NULL, "%s/bot%s/", root, cred1));
	body_is(r, 404, want);
	rq_free(r);
}
END_TEST

/* --- calls ---------------------------------------------------------------- */

START_TEST(test_call_json)
{
	struct rq	*r;
	json_t		*j, *calls;

	listen_tcp();
	r = one(rq_new("POST", "{\"chat_id\":5,\"text\":\"h\\u00e9\"}",
	    "application/json", "%s/bot%s/sendMessage", root, cred1));
	body_is(r, 200, NULL);
	j = rq_json(r);
	ck_assert(json_is_true(json_object_get(j, "ok")));
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j,
	    "result"), "text")), "h\xc3\xa9");
	ck_assert(strstr(r->rbody, TOKEN + 7) == NULL);
	json_decref(j);
	rq_free(r);
	calls = fake_calls("sendMessage");
	ck_assert_uint_eq(json_array_size(calls), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(
	    json_array_get(calls, 0), "params"), "chat_id")), 5);
	json_decref(calls);
	ck_assert_uint_eq(workerapi_stats(wa)->calls, 1);
	ck_assert_int_eq(hooks.worker, 1);
}
END_TEST

START_TEST(test_call_query_and_form)
{
	struct rq	*rq[3];
	json_t		*calls;
	size_t		 i;

	listen_tcp();
	rq[0] = rq_new("GET", NULL, NULL, "%s/bot%s/sendMessage?chat_id=7&"
	    "text=a%%20b", root, cred1);
	rq[1] = rq_new("POST", "chat_id=8&text=x+y%26z",
	    "application/x-www-form-urlencoded", "%s/bot%s/sendMessage", root,
	    cred1);
	/* query and body together: the body wins */
	rq[2] = rq_new("POST", "{\"text\":\"body\"}", "application/json",
	    "%s/bot%s/sendMessage?chat_id=9&text=query", root, cred1);
	run_rqs(rq[0], 1);
	run_rqs(rq[1], 1);
	run_rqs(rq[2], 1);
	for (i = 0; i < 3; i++)
		body_is(rq[i], 200, NULL);
	calls = fake_calls("sendMessage");
	ck_assert_uint_eq(json_array_size(calls), 3);
	ck_assert_str_eq(param(json_array_get(calls, 0), "text"), "a b");
	ck_assert_str_eq(param(json_array_get(calls, 1), "text"), "x y&z");
	ck_assert_str_eq(param(json_array_get(calls, 2), "text"), "body");
	json_decref(calls);
	for (i = 0; i < 3; i++)
		rq_free(rq[i]);
}
END_TEST

START_TEST(test_telegram_errors_pass_through)
{
	struct rq *r;
	json_t *j;

	listen_tcp();
	r = one(rq_new("POST", "{\"text\":\"x\"}", "application/json",
	    "%s/bot%s/sendMessage", root, cred1));
	body_is(r, 400, "{\"ok\":false,\"error_code\":400,\"description\":"
	    "\"Bad Request: chat_id is empty\"}");
	rq_free(r);
	j = fake_ctl("fault", "{\"kind\":\"429\",\"method\":\"sendMessage\","
	    "\"retry_after\":3}");
	json_decref(j);
	r = one(rq_new("POST", "{\"chat_id\":1,\"text\":\"x\"}",
	    "application/json", "%s/bot%s/sendMessage", root, cred1));
	body_is(r, 429, "{\"ok\":false,\"error_code\":429,\"description\":"
	    "\"Too Many Requests: retry after 3\",\"parameters\":"
	    "{\"retry_after\":3}}");
	rq_free(r);
	/* no answer from the Bot API at all: 502 */
	j = fake_ctl("fault", "{\"kind\":\"5xx\",\"method\":\"sendMessage\","
	    "\"status\":502}");
	json_decref(j);
	r = one(rq_new("POST", "{\"chat_id\":1,\"text\":\"x\"}",
	    "application/json", "%s/bot%s/sendMessage", root, cred1));
	body_is(r, 502, NULL);
	ck_assert(strstr(r->rbody, "\"error_code\":502") != NULL);
	rq_free(r);
}
END_TEST

START_TEST(test_bad_bodies)
{
	static const struct {
		const char *ctype, *body, *want;
	} cases[] = {
		{ "application/json", "{\"chat_id\":", "can't parse JSON" },
		{ "application/json", "[1,2]", "can't parse JSON" },
		{ "text/plain", "hello", "unsupported Content-Type" },
		{ "application/x-www-form-urlencoded", "text=%ff%fe",
		    "not valid UTF-8" },
		{ "multipart/form-data", "--x\r\n", "boundary" },
		{ "multipart/form-data; boundary=x", "garbage", "can't parse "
		    "multipart" },
	};
	struct rq	*r;
	size_t		 i;

	listen_tcp();
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = one(rq_new("POST", cases[i].body, cases[i].ctype,
		    "%s/bot%s/sendMessage", root, cred1));
		body_is(r, 400, NULL);
		ck_assert_msg(strstr(r->rbody, cases[i].want) != NULL,
		    "case %zu: %s", i, r->rbody);
		ck_assert(strstr(r->rbody, "\"error_code\":400") != NULL);
		rq_free(r);
	}
	r = rq_new("POST", "{}", "application/json", "%s/bot%s/getMe", root,
	    cred1);
	r->hdr = WORKERAPI_HDR_UPDATE ": 12x";
	body_is(one(r), 400, NULL);
	ck_assert(strstr(r->rbody, WORKERAPI_HDR_UPDATE) != NULL);
	rq_free(r);
}
END_TEST

/* {"chat_id":1,"text":"aaa..."} of len bytes. */
static char *
big_json(size_t len)
{
	char *s = malloc(len + 1);

	memset(s, 'a', len);
	memcpy(s, "{\"chat_id\":1,\"text\":\"", 21);
	memcpy(s + len - 2, "\"}", 2);
	s[len] = '\0';
	return s;
}

START_TEST(test_too_large)
{
	char		*body, *mp;
	struct rq	*r;
	json_t		*calls;
	size_t		 n;

	listen_tcp();
	/* a JSON body past the frame limit */
	body = big_json(PROTO_MAX_FRAME + 10);
	r = one(rq_new("POST", body, "application/json",
	    "%s/bot%s/sendMessage", root, cred1));
	body_is(r, 413, "{\"ok\":false,\"error_code\":413,\"description\":"
	    "\"Request Entity Too Large\"}");
	rq_free(r);
	/* one that fits passes */
	free(body);
	body = big_json(PROTO_MAX_FRAME - 100);
	r = one(rq_new("POST", body, "application/json",
	    "%s/bot%s/sendMessage", root, cred1));
	body_is(r, 200, NULL);
	rq_free(r);
	free(body);
	/* a file part past upload_max_size (64k here) */
	n = (size_t)conf.upload_max_size + 1;
	mp = malloc(n + 512);
	body = mp + sprintf(mp, "--B\r\nContent-Disposition: form-data; "
	    "name=\"document\"; filename=\"f\"\r\n\r\n");
	memset(body, 'z', n);
	strcpy(body + n, "\r\n--B--\r\n");
	r = rq_new("POST", mp, "multipart/form-data; boundary=B",
	    "%s/bot%s/sendDocument", root, cred1);
	r->len = strlen(mp);
	body_is(one(r), 413, NULL);
	ck_assert(strstr(r->rbody, "upload_max_size") != NULL);
	ck_assert(r->close_hdr);
	rq_free(r);
	free(mp);
	/* past what evhttp reads at all: refused before it is read */
	n = PROTO_MAX_FRAME + (size_t)conf.upload_max_size + 128 * 1024;
	body = big_json(n);
	r = one(rq_new("POST", body, "application/json",
	    "%s/bot%s/sendMessage", root, cred1));
	ck_assert_int_eq(r->status, 413);
	rq_free(r);
	free(body);
	/* headers past their bound */
	body = malloc(80 * 1024);
	strcpy(body, "X-Pad: ");
	memset(body + 7, 'p', 80 * 1024 - 8);
	body[80 * 1024 - 1] = '\0';
	r = rq_new("GET", NULL, NULL, "%s/bot%s/getMe", root, cred1);
	r->hdr = body;
	one(r);
	ck_assert_msg(r->status == 413 || r->status == 400 ||
	    r->code != CURLE_OK, "huge headers: %ld", r->status);
	rq_free(r);
	free(body);
	calls = fake_calls("sendDocument");
	ck_assert_uint_eq(json_array_size(calls), 0);
	json_decref(calls);
}
END_TEST

START_TEST(test_held_hook_and_key_order)
{
	struct rq	*rq[2];
	json_t		*calls, *j;
	int		 round;

	listen_tcp();
	/* no header: -1; a header: its id; "0" means none */
	hooks.key = "chat:1";
	rq[0] = rq_new("POST", "{}", "application/json", "%s/bot%s/getMe",
	    root, cred2);
	one(rq[0]);
	ck_assert_int_eq(hooks.worker, 2);
	ck_assert_int_eq(hooks.update, -1);
	rq[0]->hdr = WORKERAPI_HDR_UPDATE ": 4242";
	one(rq[0]);
	ck_assert_int_eq(hooks.update, 4242);
	rq[0]->hdr = WORKERAPI_HDR_UPDATE ": 0";
	one(rq[0]);
	ck_assert_int_eq(hooks.update, 0);
	ck_assert_int_eq(hooks.held_calls, 3);
	/* an update the worker does not hold: refused, never sent */
	hooks.not_held = 4243;
	rq[0]->hdr = WORKERAPI_HDR_UPDATE ": 4243";
	one(rq[0]);
	body_is(rq[0], 400, "{\"ok\":false,\"error_code\":400,"
	    "\"description\":\"Bad Request: tgrunner: update 4243 is not "
	    "held by this worker\"}");
	ck_assert_int_eq(hooks.held_calls, 4);
	hooks.not_held = 0;
	rq_free(rq[0]);
	/*
	 * Two calls at once, the first that reaches the fake is held there
	 * 400 ms.  With one key for both (round 0) the other waits for it;
	 * unordered (round 1) it overtakes.
	 */
	for (round = 0; round < 2; round++) {
		hooks.key = round == 0 ? "chat:1" : NULL;
		j = fake_ctl("reset", "{}");
		json_decref(j);
		j = fake_ctl("fault", "{\"kind\":\"slow\",\"method\":"
		    "\"sendMessage\",\"delay_ms\":400}");
		json_decref(j);
		rq[0] = rq_new("POST", "{\"chat_id\":1,\"text\":\"a\"}",
		    "application/json", "%s/bot%s/sendMessage", root, cred1);
		rq[1] = rq_new("POST", "{\"chat_id\":1,\"text\":\"b\"}",
		    "application/json", "%s/bot%s/sendMessage", root, cred1);
		run_parallel(rq, 2);
		body_is(rq[0], 200, NULL);
		body_is(rq[1], 200, NULL);
		calls = fake_calls("sendMessage");
		ck_assert_uint_eq(json_array_size(calls), 2);
		if (round == 0)
			ck_assert_msg(json_object_get(json_array_get(calls, 0),
			    "fault") != NULL, "same key: the second overtook");
		else
			ck_assert_msg(json_object_get(json_array_get(calls, 0),
			    "fault") == NULL, "no key: the second waited");
		json_decref(calls);
		rq_free(rq[0]);
		rq_free(rq[1]);
	}
}
END_TEST

START_TEST(test_policy_hook)
{
	struct rq	*r;
	json_t		*calls;

	listen_tcp();
	r = one(rq_new("POST", "{}", "application/json", "%s/bot%s/logOut",
	    root, cred1));
	body_is(r, 403, "{\"ok\":false,\"error_code\":403,\"description\":"
	    "\"Forbidden: tgrunner: logOut is not for workers\"}");
	rq_free(r);
	calls = fake_calls("logOut");
	ck_assert_uint_eq(json_array_size(calls), 0);
	json_decref(calls);
}
END_TEST

/*
 * The fair-queue bounds apply as to call frames: with max_calls_per_key 1
 * and one call of the key held at the fake, the other is answered 429 with
 * retry_after, and never sent.
 */
START_TEST(test_key_bound)
{
	struct rq	*rq[2];
	json_t		*calls, *j;
	int		 ok, refused, i;

	listen_tcp();
	conf.max_calls_per_key = 1;
	hooks.key = "chat:9";
	j = fake_ctl("fault", "{\"kind\":\"slow\",\"method\":"
	    "\"sendMessage\",\"delay_ms\":400}");
	json_decref(j);
	for (i = 0; i < 2; i++)
		rq[i] = rq_new("POST", "{\"chat_id\":9,\"text\":\"b\"}",
		    "application/json", "%s/bot%s/sendMessage", root, cred1);
	run_parallel(rq, 2);
	ok = refused = 0;
	for (i = 0; i < 2; i++) {
		ck_assert_int_eq(rq[i]->code, CURLE_OK);
		if (rq[i]->status == 200)
			ok++;
		else {
			body_is(rq[i], 429, "{\"ok\":false,\"error_code\":429,"
			    "\"description\":\"Too Many Requests: retry after 5 "
			    "(tgrunner: too many calls queued for this chat, "
			    "max_calls_per_key)\",\"parameters\":"
			    "{\"retry_after\":5}}");
			refused++;
		}
		rq_free(rq[i]);
	}
	ck_assert_int_eq(ok, 1);
	ck_assert_int_eq(refused, 1);
	calls = fake_calls("sendMessage");
	ck_assert_uint_eq(json_array_size(calls), 1);
	json_decref(calls);
	/* back under half of the bound: the key's calls go out again */
	rq[0] = one(rq_new("POST", "{\"chat_id\":9,\"text\":\"c\"}",
	    "application/json", "%s/bot%s/sendMessage", root, cred1));
	body_is(rq[0], 200, NULL);
	rq_free(rq[0]);
}
END_TEST

/* size bytes the fake made; fetched from it with the real token. */
static struct rq *
fake_file_bytes(const char *path)
{
	struct rq *r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/%s",
	    fake_url, TOKEN, path));

	body_is(r, 200, NULL);
	return r;
}

/* Register a file at the fake; its SHA-256 (caller frees). */
static char *
fake_file(const char *id, size_t size, int chunked, const char *path)
{
	char	 body[512];
	json_t	*j;
	char	*sha;

	snprintf(body, sizeof(body), "{\"file_id\":\"%s\",\"size\":%zu,"
	    "\"seed\":7,\"chunked\":%s%s%s%s}", id, size, chunked ? "true" :
	    "false", path ? ",\"file_path\":\"" : "", path ? path : "",
	    path ? "\"" : "");
	j = fake_ctl("file", body);
	sha = strdup(json_string_value(json_object_get(j, "sha256")));
	json_decref(j);
	return sha;
}

static void
mp_add(char **p, const char *name, const char *filename, const char *ctype,
    const char *data, size_t len)
{
	*p += sprintf(*p, "--BOUND\r\nContent-Disposition: form-data; "
	    "name=\"%s\"", name);
	if (filename != NULL)
		*p += sprintf(*p, "; filename=\"%s\"", filename);
	if (ctype != NULL)
		*p += sprintf(*p, "\r\nContent-Type: %s", ctype);
	*p += sprintf(*p, "\r\n\r\n");
	memcpy(*p, data, len);
	*p += len;
	*p += sprintf(*p, "\r\n");
}

START_TEST(test_multipart_upload)
{
	static const char media_text[] = "[{\"type\":\"document\","
	    "\"media\":\"attach://one\"},{\"type\":\"document\",\"media\":"
	    "\"attach://two\",\"caption\":\"attach://nothing\"}]";
	char		*sha1, *sha2, *body, *p;
	struct rq	*f1, *f2, *r;
	json_t		*calls, *c, *files, *media;

	listen_tcp();
	sha1 = fake_file("A", 5000, 0, NULL);
	sha2 = fake_file("B", 777, 0, NULL);
	f1 = fake_file_bytes("documents/file_0.bin");
	f2 = fake_file_bytes("documents/file_1.bin");
	body = malloc(16384);
	/* sendDocument: a file part of its own */
	p = body;
	mp_add(&p, "chat_id", NULL, NULL, "42", 2);
	mp_add(&p, "caption", NULL, NULL, "r\xc3\xa9sum\xc3\xa9", 8);
	mp_add(&p, "document", "my \\\"cv\\\".bin", "application/x-cv",
	    f1->rbody, f1->rlen);
	p += sprintf(p, "--BOUND--\r\n");
	r = rq_new("POST", body, "multipart/form-data; boundary=BOUND",
	    "%s/bot%s/sendDocument", root, cred1);
	r->len = (size_t)(p - body);
	body_is(one(r), 200, NULL);
	rq_free(r);
	calls = fake_calls("sendDocument");
	ck_assert_uint_eq(json_array_size(calls), 1);
	c = json_array_get(calls, 0);
	ck_assert_str_eq(param(c, "caption"), "r\xc3\xa9sum\xc3\xa9");
	files = json_object_get(c, "files");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
	    files, "document"), "sha256")), sha1);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
	    files, "document"), "filename")), "my _cv_.bin");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
	    files, "document"), "content_type")), "application/x-cv");
	json_decref(calls);
	/* sendMediaGroup: files named by attach:// in media */
	p = body;
	mp_add(&p, "chat_id", NULL, NULL, "42", 2);
	mp_add(&p, "media", NULL, NULL, media_text, strlen(media_text));
	mp_add(&p, "one", "1.bin", NULL, f1->rbody, f1->rlen);
	mp_add(&p, "two", "2.bin", NULL, f2->rbody, f2->rlen);
	p += sprintf(p, "--BOUND--\r\n");
	r = rq_new("POST", body, "multipart/form-data; boundary=BOUND",
	    "%s/bot%s/sendMediaGroup", root, cred1);
	r->len = (size_t)(p - body);
	body_is(one(r), 200, NULL);
	rq_free(r);
	calls = fake_calls("sendMediaGroup");
	ck_assert_uint_eq(json_array_size(calls), 1);
	c = json_array_get(calls, 0);
	files = json_object_get(c, "files");
	media = json_object_get(json_object_get(c, "params"), "media");
	ck_assert_msg(json_array_size(media) == 2, "media: %s",
	    json_dumps(c, 0));
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(
	    media, 0), "media")), "attach://tgfile0");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(
	    media, 1), "media")), "attach://tgfile1");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(
	    media, 1), "caption")), "attach://nothing");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
	    files, "tgfile0"), "sha256")), sha1);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
	    files, "tgfile1"), "sha256")), sha2);
	ck_assert_ptr_null(json_object_get(files, "one"));
	json_decref(calls);
	free(body);
	free(sha1);
	free(sha2);
	rq_free(f1);
	rq_free(f2);
}
END_TEST

/* getFile through the endpoint: the file_path it answers. */
static char *
get_file_path(const char *file_id)
{
	struct rq	*r = one(rq_new("GET", NULL, NULL,
			    "%s/bot%s/getFile?file_id=%s", root, cred1, file_id));
	json_t		*j;
	char		*path;

	body_is(r, 200, NULL);
	ck_assert(strstr(r->rbody, TOKEN + 7) == NULL);
	j = rq_json(r);
	path = strdup(json_string_value(json_object_get(json_object_get(j,
	    "result"), "file_path")));
	json_decref(j);
	rq_free(r);
	return path;
}

START_TEST(test_download_streamed)
{
	static const size_t sizes[] = { 0, 1, 65536, 3 * 1024 * 1024 + 5 };
	struct rq	*direct, *r;
	json_t		*stats;
	char		 id[16], *sha, *path;
	size_t		 i;
	int		 chunked, close;

	listen_tcp();
	/*
	 * Also with "Connection: close" (Python's urllib sends it): a body
	 * written out before the fetch ends makes evhttp free the request and
	 * the connection inside evhttp_send_reply_end().
	 */
	for (close = 0; close < 2; close++)
	for (chunked = 0; chunked < 2; chunked++)
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(id, sizeof(id), "F%d%d%zu", close, chunked, i);
		sha = fake_file(id, sizes[i], chunked, NULL);
		path = get_file_path(id);
		direct = fake_file_bytes(path);
		ck_assert_uint_eq(direct->rlen, sizes[i]);
		r = rq_new("GET", NULL, NULL, "%s/file/bot%s/%s", root,
		    cred1, path);
		r->hdr = close ? "Connection: close" : NULL;
		r = one(r);
		body_is(r, 200, NULL);
		ck_assert_uint_eq(r->rlen, sizes[i]);
		ck_assert(sizes[i] == 0 || memcmp(r->rbody, direct->rbody,
		    sizes[i]) == 0);
		rq_free(r);
		rq_free(direct);
		free(path);
		free(sha);
	}
	ck_assert_uint_eq(workerapi_stats(wa)->downloads, 16);
	/* the fake's 404 comes back as it is */
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/documents/none", root,
	    cred1));
	body_is(r, 404, "{\"ok\":false,\"error_code\":404,\"description\":"
	    "\"Not Found\"}");
	rq_free(r);
	/* never a wrong token at the fake */
	r = one(rq_new("GET", NULL, NULL, "%s/_ctl/stats", fake_url));
	stats = rq_json(r);
	ck_assert_int_eq(json_integer_value(json_object_get(stats,
	    "unauthorized")), 0);
	json_decref(stats);
	rq_free(r);
}
END_TEST

START_TEST(test_download_bounds_and_slow_client)
{
	struct rq	*r;
	char		*sha, *path;

	listen_tcp();
	conf.download_max_size = 1024 * 1024;
	/* known too big from Content-Length: refused as Telegram does */
	sha = fake_file("big", 1024 * 1024 + 1, 0, NULL);
	path = get_file_path("big");
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/%s", root, cred1,
	    path));
	body_is(r, 400, "{\"ok\":false,\"error_code\":400,\"description\":"
	    "\"Bad Request: file is too big\"}");
	rq_free(r);
	free(path);
	free(sha);
	/* found too big on the way (no length): the transfer is cut */
	sha = fake_file("bigc", 1024 * 1024 + 1, 1, NULL);
	path = get_file_path("bigc");
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/%s", root, cred1,
	    path));
	ck_assert_msg(r->code != CURLE_OK, "a cut body looked complete");
	ck_assert_uint_le(r->rlen, 1024 * 1024);
	rq_free(r);
	free(path);
	free(sha);
	/* exactly the limit passes */
	sha = fake_file("fits", 1024 * 1024, 1, NULL);
	path = get_file_path("fits");
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/%s", root, cred1,
	    path));
	body_is(r, 200, NULL);
	ck_assert_uint_eq(r->rlen, 1024 * 1024);
	rq_free(r);
	/* a slow reader: the transfer waits for it, nothing piles up */
	r = rq_new("GET", NULL, NULL, "%s/file/bot%s/%s", root, cred1, path);
	r->recv_speed = 1024 * 1024;
	body_is(one(r), 200, NULL);
	ck_assert_uint_eq(r->rlen, 1024 * 1024);
	ck_assert_uint_gt(workerapi_stats(wa)->download_pauses, 0);
	rq_free(r);
	free(path);
	free(sha);
	/*
	 * The same with a length and "Connection: close": the transfer ends
	 * after the reader drained the last bytes, so evhttp finishes the
	 * request and frees the connection at once, inside the end of the
	 * reply.
	 */
	sha = fake_file("fitsl", 1024 * 1024, 0, NULL);
	path = get_file_path("fitsl");
	r = rq_new("GET", NULL, NULL, "%s/file/bot%s/%s", root, cred1, path);
	r->recv_speed = 2 * 1024 * 1024;
	r->hdr = "Connection: close";
	body_is(one(r), 200, NULL);
	ck_assert_uint_eq(r->rlen, 1024 * 1024);
	rq_free(r);
	free(path);
	free(sha);
	/* paths that are no file_path */
	r = rq_new("GET", NULL, NULL, "%s/file/bot%s/documents/../x", root,
	    cred1);
	r->path_as_is = 1;
	body_is(one(r), 404, NULL);
	rq_free(r);
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/a%%00b", root,
	    cred1));
	body_is(r, 404, NULL);
	rq_free(r);
}
END_TEST

static void
write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
}

START_TEST(test_download_local)
{
	char		 dir[512], p[1024], body[1200];
	struct rq	*r;
	json_t		*j;

	listen_tcp();
	snprintf(dir, sizeof(dir), "%s/tba.%d", tmpdir, getpid());
	mkdir(dir, 0700);
	snprintf(p, sizeof(p), "%s/%s", dir, TOKEN);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/%s/documents", dir, TOKEN);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/%s/documents/file_1.txt", dir, TOKEN);
	write_file(p, "local bytes", 11);
	snprintf(p, sizeof(p), "%s/secret", dir);
	write_file(p, "not yours", 9);
	snprintf(p, sizeof(p), "%s/%s/documents/link", dir, TOKEN);
	ck_assert_int_eq(symlink("../../secret", p), 0);
	conf.local_files_dir = strdup(dir);
	/* getFile of a local server: an absolute path, the token inside */
	snprintf(body, sizeof(body), "{\"file_id\":\"L\",\"content\":\"x\","
	    "\"file_path\":\"%s/%s/documents/file_1.txt\"}", dir, TOKEN);
	json_decref(fake_ctl("file", body));
	r = one(rq_new("GET", NULL, NULL, "%s/bot%s/getFile?file_id=L", root,
	    cred1));
	body_is(r, 200, NULL);
	ck_assert(strstr(r->rbody, TOKEN) == NULL);
	j = rq_json(r);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j,
	    "result"), "file_path")), "documents/file_1.txt");
	json_decref(j);
	rq_free(r);
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/documents/file_1.txt",
	    root, cred1));
	body_is(r, 200, "local bytes");
	rq_free(r);
	/* the absolute form, as the server wrote it */
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/%s/%s/documents/"
	    "file_1.txt", root, cred1, dir, TOKEN));
	body_is(r, 200, "local bytes");
	rq_free(r);
	/* no link, no way out, nothing outside the token's directory */
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/documents/link",
	    root, cred1));
	body_is(r, 404, NULL);
	rq_free(r);
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/%s/secret", root,
	    cred1, dir));
	body_is(r, 404, NULL);
	rq_free(r);
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/documents/none",
	    root, cred1));
	body_is(r, 404, NULL);
	rq_free(r);
	conf.download_max_size = 5;
	r = one(rq_new("GET", NULL, NULL, "%s/file/bot%s/documents/file_1.txt",
	    root, cred1));
	body_is(r, 400, NULL);
	rq_free(r);
}
END_TEST

START_TEST(test_token_never_answered)
{
	struct rq	*r;

	listen_tcp();
	/* a remote server that names the token in a file_path */
	json_decref(fake_ctl("file", "{\"file_id\":\"T\",\"content\":\"x\","
	    "\"file_path\":\"x/" TOKEN "/y\"}"));
	r = one(rq_new("GET", NULL, NULL, "%s/bot%s/getFile?file_id=T", root,
	    cred1));
	body_is(r, 200, NULL);
	ck_assert(strstr(r->rbody, TOKEN) == NULL);
	ck_assert(strstr(r->rbody, "x/*****************/y") != NULL);
	rq_free(r);
}
END_TEST

START_TEST(test_fix_file_path)
{
	json_t *f;

	f = json_pack("{s:s}", "file_path", "/var/tba/" TOKEN "/photos/a.jpg");
	ck_assert_int_eq(workerapi_fix_file_path("/var/tba/", TOKEN, f), 1);
	ck_assert_str_eq(json_string_value(json_object_get(f, "file_path")),
	    "photos/a.jpg");
	ck_assert_int_eq(workerapi_fix_file_path("/var/tba", TOKEN, f), 0);
	json_decref(f);
	f = json_pack("{s:s}", "file_path", "/var/tbax/" TOKEN "/a");
	ck_assert_int_eq(workerapi_fix_file_path("/var/tba", TOKEN, f), 0);
	json_decref(f);
	f = json_pack("{s:s}", "file_path", "/var/tba/" TOKEN "x/a");
	ck_assert_int_eq(workerapi_fix_file_path("/var/tba", TOKEN, f), 0);
	json_decref(f);
	f = json_pack("{s:i}", "file_path", 3);
	ck_assert_int_eq(workerapi_fix_file_path("/var/tba", TOKEN, f), 0);
	json_decref(f);
}
END_TEST

/* --- connections ------------------------------------------------------------ */

struct keepalive {
	CURL		*e[3];
	struct rq	*rq[3];
	size_t		 n;
};

static void
keepalive_run(void *arg)
{
	struct keepalive	*k = arg;
	size_t			 i;

	for (i = 0; i < k->n; i++) {
		if (k->e[i] == NULL)
			k->e[i] = curl_easy_init();
		rq_perform(k->e[i], k->rq[i]);
	}
}

START_TEST(test_per_worker_cap)
{
	struct keepalive	 k = { { NULL }, { NULL }, 3 };
	struct rq		*other;
	size_t			 i;

	conf.worker_api_max_per_worker = 2;
	listen_tcp();
	for (i = 0; i < 3; i++)
		k.rq[i] = rq_new("GET", NULL, NULL, "%s/bot%s/getMe", root,
		    cred1);
	run_client(keepalive_run, &k);
	body_is(k.rq[0], 200, NULL);
	body_is(k.rq[1], 200, NULL);
	body_is(k.rq[2], 429, "{\"ok\":false,\"error_code\":429,"
	    "\"description\":\"Too Many Requests: retry after 1\","
	    "\"parameters\":{\"retry_after\":1}}");
	ck_assert(k.rq[2]->close_hdr);
	ck_assert_uint_ge(workerapi_stats(wa)->conn_limited, 1);
	/* another worker is not held back */
	other = one(rq_new("GET", NULL, NULL, "%s/bot%s/getMe", root, cred2));
	body_is(other, 200, NULL);
	rq_free(other);
	/* one of the two goes: room for a new one */
	curl_easy_cleanup(k.e[0]);
	k.e[0] = NULL;
	run_loop_ms(100);
	curl_easy_cleanup(k.e[2]);
	k.e[2] = NULL;
	k.n = 1;
	run_client(keepalive_run, &k);
	body_is(k.rq[0], 200, NULL);
	for (i = 0; i < 3; i++) {
		if (k.e[i] != NULL)
			curl_easy_cleanup(k.e[i]);
		rq_free(k.rq[i]);
	}
}
END_TEST

static int
tcp_connect(const char *url)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_port = htons((uint16_t)atoi(strrchr(url, ':') + 1));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd == -1 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1)
		return -1;
	return fd;
}

/* Bytes read within ms: >0 data, 0 EOF, -2 nothing came, -1 error. */
static int
read_within(int fd, int ms, char *buf, size_t bufsz)
{
	struct pollfd	pfd = { fd, POLLIN, 0 };
	ssize_t		n;

	if (poll(&pfd, 1, ms) <= 0)
		return -2;
	n = read(fd, buf, bufsz - 1);
	if (n >= 0)
		buf[n] = '\0';
	return (int)n;
}

struct raw {
	int	fds[4];
	int	got[4];
	char	buf[4096];
	double	closed_after;
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
total_cap_run(void *arg)
{
	struct raw	*r = arg;
	char		 req[512];
	int		 i;

	snprintf(req, sizeof(req), "GET /bot%s/getMe HTTP/1.1\r\nHost: x\r\n"
	    "\r\n", cred1);
	for (i = 0; i < 4; i++)
		r->fds[i] = tcp_connect(root);
	/* three are served; the fourth waits in the backlog */
	for (i = 0; i < 4; i++)
		(void)write(r->fds[i], req, strlen(req));
	for (i = 0; i < 3; i++)
		r->got[i] = read_within(r->fds[i], 10000, r->buf,
		    sizeof(r->buf));
	r->got[3] = read_within(r->fds[3], 500, r->buf, sizeof(r->buf));
	/* one leaves: the fourth gets its answer */
	close(r->fds[0]);
	r->fds[0] = -1;
	if (r->got[3] == -2)
		r->got[3] = read_within(r->fds[3], 10000, r->buf,
		    sizeof(r->buf));
	for (i = 1; i < 4; i++)
		close(r->fds[i]);
}

START_TEST(test_total_cap)
{
	struct raw r;

	memset(&r, 0, sizeof(r));
	conf.worker_api_max_connections = 3;
	conf.worker_api_max_per_worker = 10;
	listen_tcp();
	run_client(total_cap_run, &r);
	ck_assert_int_gt(r.got[0], 0);
	ck_assert_int_gt(r.got[1], 0);
	ck_assert_int_gt(r.got[2], 0);
	ck_assert_msg(r.got[3] > 0, "the fourth connection never got an "
	    "answer (%d)", r.got[3]);
	ck_assert_msg(strncmp(r.buf, "HTTP/1.1 200", 12) == 0, "%s", r.buf);
	ck_assert_uint_ge(workerapi_stats(wa)->conn_limited, 1);
	run_loop_ms(100);
	ck_assert_uint_eq(workerapi_connections(wa), 0);
}
END_TEST

static void
idle_run(void *arg)
{
	struct raw	*r = arg;
	double		 t0 = now_s();

	r->fds[0] = tcp_connect(root);
	r->fds[1] = tcp_connect(root);
	(void)write(r->fds[1], "GET /bot", 8);	/* and never the rest */
	r->got[0] = read_within(r->fds[0], 10000, r->buf, sizeof(r->buf));
	r->got[1] = read_within(r->fds[1], 10000, r->buf, sizeof(r->buf));
	r->closed_after = now_s() - t0;
	close(r->fds[0]);
	close(r->fds[1]);
}

START_TEST(test_idle_timeout)
{
	struct raw r;

	memset(&r, 0, sizeof(r));
	conf.worker_api_timeout = 1000;
	/* a fresh endpoint: evhttp reads the timeout when set up */
	listen_tcp();
	run_client(idle_run, &r);
	ck_assert_msg(r.got[0] == 0, "an idle connection stayed (%d)",
	    r.got[0]);
	ck_assert_msg(r.got[1] == 0 || r.got[1] > 0, "a slow request "
	    "stayed (%d)", r.got[1]);
	ck_assert_msg(r.closed_after >= 0.5 && r.closed_after < 9,
	    "closed after %.1f s", r.closed_after);
	run_loop_ms(100);
	ck_assert_uint_eq(workerapi_connections(wa), 0);
}
END_TEST

START_TEST(test_revoke_closes)
{
	struct batch	 b = { NULL, 1, NULL, NULL };
	struct rq	*r;

	listen_tcp();
	r = rq_new("GET", NULL, NULL, "%s/bot%s/getMe", root, cred1);
	b.rq = r;
	b.keep = curl_easy_init();
	run_client(batch_run, &b);
	body_is(r, 200, NULL);
	ck_assert_uint_eq(workerapi_connections(wa), 1);
	/* the worker died: its idle connection goes at once */
	workerapi_revoke(wa, 1);
	ck_assert_uint_eq(workerapi_connections(wa), 0);
	run_client(batch_run, &b);
	body_is(r, 401, NULL);
	curl_easy_cleanup(b.keep);
	rq_free(r);
}
END_TEST

START_TEST(test_unix_socket)
{
	char		 path[256], spec[300];
	struct stat	 st;
	struct batch	 b = { NULL, 1, NULL, NULL };
	struct rq	*r;

	snprintf(path, sizeof(path), "%s/api.%d.sock", tmpdir, getpid());
	snprintf(spec, sizeof(spec), "unix:%s", path);
	ck_assert_int_eq(workerapi_listen(wa, spec), 0);
	ck_assert_str_eq(workerapi_root(wa), spec);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0660);
	ck_assert_int_eq(workerapi_listen(wa, "127.0.0.1:0"), -1);
	r = rq_new("POST", "{\"chat_id\":3,\"text\":\"u\"}",
	    "application/json", "http://localhost/bot%s/sendMessage", cred1);
	b.rq = r;
	b.unix_path = path;
	run_client(batch_run, &b);
	body_is(r, 200, NULL);
	rq_free(r);
	workerapi_free(wa);
	wa = NULL;
	ck_assert_int_eq(stat(path, &st), -1);
}
END_TEST

static Suite *
workerapi_suite(void)
{
	Suite	*s = suite_create("workerapi");
	TCase	*tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_credential_shape);
	tcase_add_test(tc, test_unauthorized);
	tcase_add_test(tc, test_not_found);
	tcase_add_test(tc, test_call_json);
	tcase_add_test(tc, test_call_query_and_form);
	tcase_add_test(tc, test_telegram_errors_pass_through);
	tcase_add_test(tc, test_bad_bodies);
	tcase_add_test(tc, test_too_large);
	tcase_add_test(tc, test_held_hook_and_key_order);
	tcase_add_test(tc, test_policy_hook);
	tcase_add_test(tc, test_key_bound);
	tcase_add_test(tc, test_multipart_upload);
	tcase_add_test(tc, test_download_streamed);
	tcase_add_test(tc, test_download_bounds_and_slow_client);
	tcase_add_test(tc, test_download_local);
	tcase_add_test(tc, test_token_never_answered);
	tcase_add_test(tc, test_fix_file_path);
	tcase_add_test(tc, test_per_worker_cap);
	tcase_add_test(tc, test_total_cap);
	tcase_add_test(tc, test_idle_timeout);
	tcase_add_test(tc, test_revoke_closes);
	tcase_add_test(tc, test_unix_socket);
	suite_add_tcase(s, tc);
	return s;
}

static int
workerapi_test_init(void)
{
	return fakeproc_init(tmpdir);
}

static int
workerapi_test_fini(void)
{
	return fakeproc_fini(tmpdir);
}

#define TEST_SUITE	workerapi_suite
#define TEST_INIT	workerapi_test_init
#define TEST_FINI	workerapi_test_fini
#include "testmain.h"
